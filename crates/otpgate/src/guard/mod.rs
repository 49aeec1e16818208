//! The SMS-pumping guard: holds new sends to a country, operator prefix or
//! number block whose volume surged while its conversion collapsed.
//!
//! [`judge`] decides, in memory and without a clock of its own. [`Guard`]
//! runs it on this node: it counts each send attempt, accepted send,
//! verification and delivery receipt as they happen here ([`Guard::admit`],
//! [`Guard::accepted`], [`Guard::verified`], [`Guard::receipts`]), lets a
//! number proven good for the account through a hold (a store lookup on
//! that path only), places the holds it judges in the store, where every
//! node reads them ([`Guard::refresh`], on `refresh_ms`), and raises the
//! alerts of a hold it created: `otpgate_guard_holds_total`, a log line, a signed `pumping_hold`
//! event to the account's webhook (a hold of one account) and a POST to
//! `[alerts] webhook_url`.
//!
//! Counts are per node: behind a load balancer each node sees its share of
//! the sends and of the verifications, so the ratios it judges are the same
//! as the whole's. Alerts are sent from memory with a few retries, not
//! through the webhook outbox (whose events belong to an OTP); the hold
//! itself, which is what protects the credits, is stored before any alert.

pub mod judge;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use otp_domain::webhook::sign;
use otp_store::guard::{GuardHold, HoldScope, NewHold};
use otp_store::{AccountId, Micros, SharedStore, StoreError, now_micros};

use crate::config::{AlertsConfig, GuardConfig, WebhooksConfig};
use crate::metrics::Metrics;
use crate::times::rfc3339;
use judge::{Decision, Judge, Key, Proof, Settings, Trip};

/// The event name of a hold, in webhooks and alerts.
pub const HOLD_EVENT: &str = "pumping_hold";

/// A send the guard let through: the keys it is counted under once the
/// store accepts it ([`Guard::accepted`]), made once for both (`None`: the
/// guard is off).
#[derive(Debug, Clone)]
pub struct Admitted(Option<judge::SendKeys>);

/// A send the guard refused.
#[derive(Debug, Clone)]
pub struct HeldSend {
    pub scope: HoldScope,
    /// Whole seconds (at least 1) until the hold ends, as it stands now.
    pub retry_after_seconds: u64,
}

/// A hold as the admin API and the alerts show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HoldView {
    pub id: i64,
    /// `country`, `prefix` or `block`.
    pub scope: String,
    /// The calling code (`977`), prefix (`+977984`) or block (`+9779841234`).
    pub value: String,
    /// The account whose sends are held; `null`: every account's.
    pub account_id: Option<AccountId>,
    pub reason: String,
    /// Send attempts in the window when the hold was placed.
    pub volume: i64,
    /// Share of the window's judged sends verified (or delivered).
    pub conversion: f64,
    /// The baseline it was compared with.
    pub baseline_conversion: f64,
    pub created_at: String,
    /// Sends are held until then (a burst that goes on pushes it on).
    pub until: String,
    /// Whether sends are held by it now.
    pub active: bool,
    pub released_at: Option<String>,
    pub released_by: Option<String>,
}

impl HoldView {
    pub fn new(h: &GuardHold, now: Micros, tz: &chrono_tz::Tz) -> HoldView {
        HoldView {
            id: h.id,
            scope: h.scope.as_str().to_owned(),
            value: h.value.clone(),
            account_id: h.account_id,
            reason: h.reason.clone(),
            volume: h.volume,
            conversion: h.conversion_ppm as f64 / 1e6,
            baseline_conversion: h.baseline_ppm as f64 / 1e6,
            created_at: rfc3339(h.created_at, tz),
            until: rfc3339(h.until, tz),
            active: h.is_active(now),
            released_at: h.released_at.map(|t| rfc3339(t, tz)),
            released_by: h.released_by.clone(),
        }
    }
}

/// The body of a `pumping_hold` event.
#[derive(Serialize)]
struct HoldEvent<'a> {
    event_id: String,
    event: &'static str,
    occurred_at: String,
    hold: &'a HoldView,
}

const SECOND: Micros = 1_000_000;

fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl GuardConfig {
    /// The judging's settings.
    pub fn settings(&self) -> Settings {
        let bucket = Duration::from_secs(self.bucket_seconds.max(1));
        Settings {
            bucket: micros(bucket),
            window_buckets: (self.window_seconds / self.bucket_seconds.max(1)).max(1) as i64,
            baseline: micros(Duration::from_secs(self.baseline_seconds.max(1))),
            min_volume: self.min_volume.max(1),
            surge_factor: self.surge_factor,
            collapse_ratio: self.collapse_ratio,
            prior_conversion: self.prior_conversion,
            hold: micros(Duration::from_secs(self.hold_seconds.max(1))),
            max_keys: self.max_keys,
            signal_memory: micros(Duration::from_secs(self.signal_memory_seconds)),
            pass_proven: self.pass_proven_numbers,
        }
    }
}

/// Where alerts go and how.
struct Alerts {
    /// For accounts' webhooks: public addresses only unless allowed.
    accounts: reqwest::Client,
    allow_private: bool,
    /// For the operator's URL, which the operator chose.
    operator: reqwest::Client,
    operator_url: Option<String>,
    tz: chrono_tz::Tz,
}

/// This node's guard; with `enabled = false` every call does nothing.
pub struct Guard {
    enabled: bool,
    judge: Mutex<Judge>,
    refresh: Duration,
    store: SharedStore,
    metrics: Arc<Metrics>,
    alerts: Option<Alerts>,
}

fn client(timeout: Duration, public_only: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("otpgate-guard/", env!("CARGO_PKG_VERSION")));
    if public_only {
        builder = builder.dns_resolver(Arc::new(crate::webhooks::address::PublicResolver));
    }
    Ok(builder.build()?)
}

fn across_label(key: &Key) -> &'static str {
    if key.account.is_some() {
        "account"
    } else {
        "all"
    }
}

impl crate::delivery::FinalReceipts for Guard {
    /// Counts final receipts: `(otp id, delivered)` of each (their numbers
    /// are read in the background).
    fn receipts(self: Arc<Self>, finals: Vec<(i64, bool)>) {
        if !self.enabled || finals.is_empty() {
            return;
        }
        let guard = self;
        tokio::spawn(async move {
            let ids = finals.iter().map(|f| f.0).collect();
            match guard.store.otp_destinations(ids).await {
                Ok(found) => {
                    let now = now_micros();
                    let mut judge = guard.judge();
                    for (id, account, e164) in found {
                        let delivered = finals.iter().any(|f| f.0 == id && f.1);
                        judge.receipt(account, &e164, delivered, now);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the guard could not count receipts"),
            }
        });
    }
}

impl Guard {
    pub fn new(
        config: &GuardConfig,
        alerts: &AlertsConfig,
        webhooks: &WebhooksConfig,
        tz: chrono_tz::Tz,
        store: SharedStore,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Guard>> {
        let timeout = Duration::from_millis(webhooks.timeout_ms.max(1));
        let alerts = Alerts {
            accounts: client(timeout, !webhooks.allow_private_addresses)?,
            allow_private: webhooks.allow_private_addresses,
            operator: client(timeout, false)?,
            operator_url: Some(alerts.webhook_url.clone()).filter(|u| !u.is_empty()),
            tz,
        };
        Ok(Arc::new(Guard {
            enabled: config.enabled,
            judge: Mutex::new(Judge::new(config.settings())),
            refresh: Duration::from_millis(config.refresh_ms.max(10)),
            store,
            metrics,
            alerts: Some(alerts),
        }))
    }

    /// A guard that holds nothing and counts nothing.
    pub fn off(store: SharedStore, metrics: Arc<Metrics>) -> Arc<Guard> {
        Arc::new(Guard {
            enabled: false,
            judge: Mutex::new(Judge::new(GuardConfig::default().settings())),
            refresh: Duration::from_secs(1),
            store,
            metrics,
            alerts: None,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn judge(&self) -> std::sync::MutexGuard<'_, Judge> {
        // std Mutex: never held across .await.
        self.judge.lock().expect("guard judge poisoned")
    }

    /// Counts a send attempt of `account` to `e164` and says whether it is
    /// held. A send a hold would refuse is first looked up in the store
    /// ([`judge::decide`]): a number proven good for the account passes. A
    /// hold that trips now is placed in the store in the background (it
    /// stands on this node at once).
    pub async fn admit(
        self: &Arc<Self>,
        account: AccountId,
        e164: &str,
    ) -> Result<Admitted, HeldSend> {
        if !self.enabled {
            return Ok(Admitted(None));
        }
        let now = now_micros();
        let send = judge::SendKeys::of(account, e164);
        let proven = |proof| self.proven(account, e164, proof);
        let (key, hold, tripped, extended, held) =
            match judge::decide(&self.judge, &send, now, proven).await {
                Decision::Pass => return Ok(Admitted(Some(send))),
                Decision::Passed {
                    key,
                    hold,
                    tripped,
                    extended,
                } => (key, hold, tripped, extended, false),
                Decision::Held {
                    key,
                    hold,
                    tripped,
                    extended,
                } => (key, hold, tripped, extended, true),
            };
        self.metrics.inc(
            if held {
                "otpgate_guard_held_sends_total"
            } else {
                "otpgate_guard_passed_sends_total"
            },
            &[
                ("scope", key.scope.as_str()),
                ("accounts", across_label(&key)),
            ],
        );
        if let Some(trip) = tripped {
            let guard = self.clone();
            tokio::spawn(async move { guard.place(trip, now).await });
        } else if let (true, Some(id)) = (extended, hold.id) {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.extend_hold(id, hold.until).await {
                    tracing::warn!(hold_id = id, error = %e, "extending a pumping hold failed");
                }
            });
        }
        if !held {
            return Ok(Admitted(Some(send)));
        }
        Err(HeldSend {
            scope: key.scope,
            retry_after_seconds: u64::try_from((hold.until - now + SECOND - 1) / SECOND)
                .unwrap_or(1)
                .max(1),
        })
    }

    /// Whether `e164` is proven good for `account` by `proof`; a store that
    /// cannot say leaves the send held (it could not be accepted either).
    async fn proven(&self, account: AccountId, e164: &str, proof: Proof) -> bool {
        let delivered = proof == Proof::Delivered;
        match self
            .store
            .proven_number(account, e164.to_owned(), delivered)
            .await
        {
            Ok(proven) => proven,
            Err(e) => {
                tracing::debug!(error = %e, "the guard could not tell whether a held number is proven");
                false
            }
        }
    }

    /// Stores a hold this node judged, and raises its alerts if no other
    /// node placed it first.
    async fn place(&self, trip: Trip, now: Micros) {
        let key = trip.key.clone();
        let new = NewHold {
            scope: key.scope,
            value: key.value.clone(),
            account_id: key.account,
            reason: format!(
                "{} send attempts in the window where the baseline expects {:.0}; \
                 conversion {:.1}% against {:.1}%",
                trip.volume,
                trip.expected,
                trip.conversion * 100.0,
                trip.baseline_conversion * 100.0
            ),
            volume: i64::from(trip.volume),
            conversion_ppm: (trip.conversion * 1e6).round() as i64,
            baseline_ppm: (trip.baseline_conversion * 1e6).round() as i64,
            at: now,
            until: trip.until,
        };
        let (hold, created) = match self.store.place_hold(new).await {
            Ok(placed) => placed,
            Err(e) => {
                tracing::warn!(error = %e, "storing a pumping hold failed; it stands on this node only");
                return;
            }
        };
        self.judge().placed(&key, hold.id, hold.until);
        if !created {
            return;
        }
        self.metrics.inc(
            "otpgate_guard_holds_total",
            &[
                ("scope", key.scope.as_str()),
                ("accounts", across_label(&key)),
            ],
        );
        // The value is digits and `+` of a parsed number, the account an id.
        tracing::warn!(
            hold_id = hold.id,
            scope = key.scope.as_str(),
            value = %hold.value,
            account_id = ?hold.account_id,
            volume = hold.volume,
            conversion = trip.conversion,
            baseline_conversion = trip.baseline_conversion,
            until = hold.until,
            "pumping guard: sends held"
        );
        self.alert(&hold).await;
    }

    /// Sends the `pumping_hold` event to the account's webhook (a hold of
    /// one account) and to the operator's URL, each tried three times.
    async fn alert(&self, hold: &GuardHold) {
        let Some(alerts) = &self.alerts else {
            return;
        };
        let now = now_micros();
        let view = HoldView::new(hold, now, &alerts.tz);
        let body = serde_json::to_vec(&HoldEvent {
            event_id: format!("hold_{}", hold.id),
            event: HOLD_EVENT,
            occurred_at: rfc3339(hold.created_at, &alerts.tz),
            hold: &view,
        })
        .expect("a struct of strings and numbers serializes");
        let account_hook = match hold.account_id {
            Some(account) => match self.store.webhook(account).await {
                Ok(hook) => hook,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the account's webhook for a pumping hold failed");
                    None
                }
            },
            None => None,
        };
        let account_post = async {
            let Some(hook) = account_hook else { return };
            let Some(secret) = hook.secret else { return };
            if !alerts.allow_private
                && reqwest::Url::parse(&hook.url)
                    .ok()
                    .and_then(|u| crate::webhooks::address::refuse_literal(&u).err())
                    .is_some()
            {
                return;
            }
            let request = |attempt: u32| {
                let timestamp = now_micros().div_euclid(SECOND);
                alerts
                    .accounts
                    .post(&hook.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(crate::webhooks::EVENT_HEADER, HOLD_EVENT)
                    .header(
                        crate::webhooks::EVENT_ID_HEADER,
                        format!("hold_{}", hold.id),
                    )
                    .header(crate::webhooks::ATTEMPT_HEADER, attempt.to_string())
                    .header(crate::webhooks::TIMESTAMP_HEADER, timestamp.to_string())
                    .header(
                        crate::webhooks::SIGNATURE_HEADER,
                        sign(&secret, timestamp, &body),
                    )
                    .body(body.clone())
            };
            self.post_with_retries("account", request).await;
        };
        let operator_post = async {
            let Some(url) = &alerts.operator_url else {
                return;
            };
            let request = |attempt: u32| {
                alerts
                    .operator
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(crate::webhooks::EVENT_HEADER, HOLD_EVENT)
                    .header(crate::webhooks::ATTEMPT_HEADER, attempt.to_string())
                    .body(body.clone())
            };
            self.post_with_retries("operator", request).await;
        };
        tokio::join!(account_post, operator_post);
    }

    async fn post_with_retries(
        &self,
        to: &'static str,
        request: impl Fn(u32) -> reqwest::RequestBuilder,
    ) {
        for attempt in 1..=3u32 {
            let outcome = match request(attempt).send().await {
                Ok(r) if r.status().is_success() => "delivered",
                _ => "failed",
            };
            self.metrics.inc(
                "otpgate_guard_alerts_total",
                &[("to", to), ("outcome", outcome)],
            );
            if outcome == "delivered" {
                return;
            }
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        tracing::warn!(
            to,
            "a pumping hold alert was not delivered after three attempts"
        );
    }

    /// Counts an accepted send, under the keys its admission made.
    pub fn accepted(&self, admitted: &Admitted) {
        // Only an enabled guard makes keys (`Guard::admit`).
        if let Admitted(Some(send)) = admitted {
            self.judge().accepted_keys(send, now_micros());
        }
    }

    /// Counts the verification of OTP `otp_id` of `account` (its number is
    /// read in the background).
    pub fn verified(self: &Arc<Self>, account: AccountId, otp_id: i64) {
        if !self.enabled {
            return;
        }
        let guard = self.clone();
        tokio::spawn(async move {
            match guard.store.otp_destinations(vec![otp_id]).await {
                Ok(found) => {
                    let now = now_micros();
                    let mut judge = guard.judge();
                    for (_, owner, e164) in found.iter().filter(|f| f.1 == account) {
                        judge.verified(*owner, e164, now);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "the guard could not count a verification"),
            }
        });
    }

    /// Reads the stored holds: those other nodes placed stand here too, and
    /// those an operator released are lifted.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = now_micros();
        let hold = self.judge().settings().hold;
        let stored = self.store.guard_holds(now - hold).await?;
        let mut judge = self.judge();
        judge.sync(&stored, now);
        judge.prune(now);
        Ok(())
    }

    /// Refreshes every `refresh_ms` until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if !self.enabled {
            return;
        }
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading the pumping holds failed; will retry");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.refresh) => {}
            }
        }
    }

    /// Releases an active hold (`by`: who, for the record) and lifts it on
    /// this node at once; other nodes lift it at their next refresh.
    pub async fn release(&self, id: i64, by: &str) -> Result<Option<GuardHold>, StoreError> {
        let now = now_micros();
        let released = self.store.release_hold(id, by, now).await?;
        if let Some(h) = &released {
            tracing::info!(hold_id = h.id, by, "pumping guard: hold released");
            self.judge().sync(std::slice::from_ref(h), now);
        }
        Ok(released)
    }

    /// Active holds on this node by scope and `account`/`all`, for `/metrics`.
    pub fn active_gauges(&self) -> Vec<(&'static str, &'static str, usize)> {
        let now = now_micros();
        let judge = self.judge();
        let holds = judge.active_holds(now);
        let mut out = Vec::new();
        for scope in HoldScope::ALL {
            for across in ["account", "all"] {
                let n = holds
                    .iter()
                    .filter(|(k, _)| k.scope == scope && across_label(k) == across)
                    .count();
                out.push((scope.as_str(), across, n));
            }
        }
        out
    }
}
