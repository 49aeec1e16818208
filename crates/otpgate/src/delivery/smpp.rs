//! The SMPP driver: text OTPs to an operator's SMSC over SMPP 3.4.
//!
//! A route holds `binds` connections (transceivers). Each has a supervisor task
//! that connects and binds, reconnects with exponential backoff when the
//! connection drops, and keeps the bind's state for `/readyz` and `/metrics`; a
//! refused bind (wrong password) is logged once per state change with the SMSC's
//! status, never with the password, and retried slowly instead of crash-looping.
//! While no bind is up, deliveries answer `Retry` and the messages wait in the
//! durable outbox.
//!
//! A delivery splits the rendered text with `otp_domain::segments::split` (the same
//! code that counted the segments charged, so parts sent = segments charged),
//! GSM 03.38 unpacked (data_coding 0) when every character fits and UCS-2
//! (data_coding 8) otherwise, ties long messages together as configured (UDH by
//! default) and submits each part through the bind's window. ESME_RTHROTTLED and
//! ESME_RMSGQFUL slow down and resubmit; an invalid destination or message is a
//! permanent failure (refunded); anything else is retried later.
//!
//! Receipts from every bind go to one task that applies them in batches. Each
//! receipt's id is looked up through the id forms the store keeps per part, and
//! `smpp::receipt::ids::decide` picks its part under the route's `receipt_ids`
//! habit (`auto` learns it from the first unambiguous matches). A receipt that
//! matches nothing yet (it may have overtaken the record of its own submission)
//! or more than one part is held and tried again for `receipt_hold_seconds`
//! (two minutes); then it is counted as `unmatched` and kept, with its raw id and
//! text, in the store's bounded table of unmatched receipts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use otp_domain::segments::{self, SmsEncoding};
use otp_store::{
    ClaimedJob, OtpStatus, Receipt, SharedStore, StoreError, UnmatchedReceipt, now_micros,
};
use smpp::concat::{Concatenation, build_submits};
use smpp::pdu::{CommandStatus, SubmitSm, data_coding, registered_delivery};
use smpp::receipt::MessageState;
use smpp::receipt::ids::{Decision, HabitLearner, IdFormat, IdLookup, decide};
use smpp::{Backoff, BindConfig, Client, Inbound};

use super::{DeliveryOutcome, Driver, RouteHealth};
use crate::config::Secret;
use crate::metrics::Metrics;

/// One SMPP route's settings (`[routes.smpp]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmppConfig {
    pub host: String,
    pub port: u16,
    pub system_id: String,
    pub password: Secret<String>,
    pub system_type: String,
    /// Connections (transceiver binds) to open.
    pub binds: usize,
    /// Outstanding submit_sm per bind.
    pub window: usize,
    /// Most submit_sm per second per bind; 0 = no limit.
    pub tps: u32,
    /// Sender: digits or an alphanumeric id.
    pub source_addr: String,
    /// `udh` (8-bit reference), `udh16`, `sar` or `payload` (one message_payload).
    pub concatenation: String,
    /// Ask for delivery receipts.
    pub registered_delivery: bool,
    pub response_timeout_ms: u64,
    pub enquire_link_seconds: u64,
    /// Longest wait between reconnection attempts.
    pub reconnect_max_seconds: u64,
    /// Resubmissions of one part after throttling answers before giving up for now.
    pub throttle_retries: u32,
    /// How the SMSC's receipts spell the id its submit_sm_resp gave: `auto`
    /// (learn it from the first unambiguous matches), `text` (the same text up
    /// to case, zero padding and `0x`), `decimal` (submit_sm_resp in hex, the
    /// receipt in decimal) or `hex` (submit_sm_resp in decimal, the receipt in
    /// hex). Default `auto`.
    pub receipt_ids: String,
    /// How long a receipt that matches no message (or several) is held and
    /// retried before it counts as unmatched. Default 120.
    pub receipt_hold_seconds: u64,
}

impl Default for SmppConfig {
    fn default() -> Self {
        SmppConfig {
            host: "127.0.0.1".into(),
            port: 2775,
            system_id: String::new(),
            password: Secret::new(String::new()),
            system_type: String::new(),
            binds: 1,
            window: 10,
            tps: 0,
            source_addr: "otpgate".into(),
            concatenation: "udh".into(),
            registered_delivery: true,
            response_timeout_ms: 10_000,
            enquire_link_seconds: 30,
            reconnect_max_seconds: 5,
            throttle_retries: 8,
            receipt_ids: "auto".into(),
            receipt_hold_seconds: 120,
        }
    }
}

impl SmppConfig {
    fn receipt_ids(&self) -> anyhow::Result<IdFormat> {
        IdFormat::parse(&self.receipt_ids).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown receipt_ids {:?} (auto, text, hex, decimal)",
                self.receipt_ids
            )
        })
    }

    fn concatenation(&self, reference: u16) -> anyhow::Result<Concatenation> {
        Ok(match self.concatenation.as_str() {
            "udh" => Concatenation::Udh8 {
                reference: reference as u8,
            },
            "udh16" => Concatenation::Udh16 { reference },
            "sar" => Concatenation::Sar { reference },
            "payload" => Concatenation::MessagePayload,
            other => anyhow::bail!("unknown concatenation {other:?} (udh, udh16, sar, payload)"),
        })
    }

    fn bind_config(&self) -> BindConfig {
        let mut b = BindConfig::new(self.system_id.clone(), self.password.expose().clone());
        b.system_type = self.system_type.clone();
        b.window = self.window.max(1);
        b.tps = (self.tps > 0).then_some(self.tps);
        b.response_timeout = Duration::from_millis(self.response_timeout_ms.max(1));
        b.enquire_link_interval = Duration::from_secs(self.enquire_link_seconds.max(1));
        b
    }
}

/// What a bind is doing, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BindState {
    Connecting,
    Bound,
    /// The SMSC refused the bind; the status names why.
    BindRefused(String),
    /// The connection could not be made or was lost.
    Down(String),
}

/// When each message still awaiting its receipt was accepted, by message id, for
/// the accept -> receipt latency. Bounded: the oldest entries go first.
#[derive(Default)]
struct Submitted {
    accepted_at: HashMap<String, i64>,
    order: VecDeque<String>,
}

impl Submitted {
    const MAX: usize = 200_000;

    fn insert(&mut self, id: String, accepted_at: i64) {
        if self.accepted_at.insert(id.clone(), accepted_at).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::MAX {
            if let Some(old) = self.order.pop_front() {
                self.accepted_at.remove(&old);
            }
        }
    }

    /// Takes the entry for any spelling of the id.
    fn take(&mut self, spellings: &[String]) -> Option<i64> {
        spellings.iter().find_map(|s| self.accepted_at.remove(s))
    }
}

struct BindSlot {
    // std Mutex: read or swapped, never held across an await.
    client: Mutex<Option<Client>>,
    state: Mutex<BindState>,
}

/// A route to one SMSC.
pub struct SmppDriver {
    route: String,
    config: SmppConfig,
    binds: Vec<Arc<BindSlot>>,
    next_bind: AtomicUsize,
    reference: AtomicU16,
    metrics: Arc<Metrics>,
    stop: Arc<Notify>,
    // std Mutex: a map insert or removal, never held across an await.
    submitted: Arc<Mutex<Submitted>>,
}

impl SmppDriver {
    /// Starts the route's binds and its receipt task.
    pub fn start(
        route: &str,
        config: SmppConfig,
        store: SharedStore,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<SmppDriver>> {
        config.concatenation(0)?;
        let receipt_ids = config
            .receipt_ids()
            .map_err(|e| anyhow::anyhow!("route {route}: {e}"))?;
        // SMPP 3.4 5.2.1-5.2.3: C-octet strings of at most 16, 9 and 13 octets.
        anyhow::ensure!(
            !config.system_id.is_empty() && config.system_id.len() <= 15,
            "route {route}: smpp.system_id must have 1 to 15 characters"
        );
        anyhow::ensure!(
            config.password.expose().len() <= 8,
            "route {route}: smpp.password may have at most 8 characters (SMPP 3.4)"
        );
        anyhow::ensure!(
            config.system_type.len() <= 12,
            "route {route}: smpp.system_type may have at most 12 characters"
        );
        let binds: Vec<Arc<BindSlot>> = (0..config.binds.max(1))
            .map(|_| {
                Arc::new(BindSlot {
                    client: Mutex::new(None),
                    state: Mutex::new(BindState::Connecting),
                })
            })
            .collect();
        let driver = Arc::new(SmppDriver {
            route: route.to_owned(),
            config,
            binds,
            next_bind: AtomicUsize::new(0),
            reference: AtomicU16::new(rand::random()),
            metrics,
            stop: Arc::new(Notify::new()),
            submitted: Arc::new(Mutex::new(Submitted::default())),
        });
        let (receipts_tx, receipts_rx) = mpsc::channel(8192);
        for (i, slot) in driver.binds.iter().enumerate() {
            tokio::spawn(supervise(
                driver.clone(),
                slot.clone(),
                i,
                receipts_tx.clone(),
            ));
        }
        tokio::spawn(apply_receipts(
            ReceiptTask {
                route: driver.route.clone(),
                store,
                metrics: driver.metrics.clone(),
                submitted: driver.submitted.clone(),
                learner: HabitLearner::new(receipt_ids),
                hold: Duration::from_secs(driver.config.receipt_hold_seconds),
            },
            receipts_rx,
        ));
        Ok(driver)
    }

    fn pick(&self) -> Option<Client> {
        let n = self.binds.len();
        let start = self.next_bind.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| {
            let slot = &self.binds[(start + i) % n];
            let guard = slot.client.lock().expect("bind slot poisoned");
            guard.as_ref().filter(|c| !c.is_closed()).cloned()
        })
    }

    fn count(&self, what: &str) {
        self.metrics.inc(
            "otpgate_smpp_total",
            &[("route", &self.route), ("event", what)],
        );
    }

    /// The submit_sm PDUs for one message.
    fn submits(&self, job: &ClaimedJob) -> Result<Vec<SubmitSm>, String> {
        let parts = segments::split(&job.otp.message);
        let coding = match parts.first().map(|p| p.encoding) {
            Some(SmsEncoding::Ucs2) => data_coding::UCS2,
            _ => data_coding::SMSC_DEFAULT,
        };
        let mut template = SubmitSm::new(
            &self.config.source_addr,
            &job.otp.e164,
            coding,
            Bytes::new(),
        );
        template.registered_delivery = if self.config.registered_delivery {
            registered_delivery::ALWAYS
        } else {
            registered_delivery::NONE
        };
        let bytes: Vec<Bytes> = parts.into_iter().map(|p| Bytes::from(p.bytes)).collect();
        let reference = self.reference.fetch_add(1, Ordering::Relaxed);
        let method = self
            .config
            .concatenation(reference)
            .map_err(|e| e.to_string())?;
        build_submits(&template, &bytes, method).map_err(|e| e.to_string())
    }
}

/// Statuses after which resubmitting the same message cannot succeed.
fn is_permanent(status: CommandStatus) -> bool {
    matches!(
        status,
        CommandStatus::EsmeRinvdstadr
            | CommandStatus::EsmeRinvdstton
            | CommandStatus::EsmeRinvdstnpi
            | CommandStatus::EsmeRinvmsglen
            | CommandStatus::EsmeRinvesmclass
            | CommandStatus::EsmeRinvnumdests
    )
}

#[async_trait::async_trait]
impl Driver for SmppDriver {
    fn name(&self) -> &'static str {
        "smpp"
    }

    fn capacity(&self) -> usize {
        self.binds.len() * self.config.window.max(1)
    }

    fn is_ready(&self) -> bool {
        self.pick().is_some()
    }

    fn health(&self) -> Vec<RouteHealth> {
        self.binds
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let state = slot.state.lock().expect("bind slot poisoned").clone();
                let (status, detail) = match state {
                    BindState::Connecting => ("connecting", None),
                    BindState::Bound => ("bound", None),
                    BindState::BindRefused(s) => ("bind_refused", Some(s)),
                    BindState::Down(s) => ("down", Some(s)),
                };
                let window = slot
                    .client
                    .lock()
                    .expect("bind slot poisoned")
                    .as_ref()
                    .map(|c| c.window_in_use())
                    .unwrap_or(0);
                RouteHealth {
                    route: self.route.clone(),
                    connection: format!("{}#{i}", self.config.system_id),
                    status: status.to_owned(),
                    detail,
                    in_flight: window,
                }
            })
            .collect()
    }

    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome {
        let routed = |outcome| DeliveryOutcome::Routed {
            route: self.route.clone(),
            outcome: Box::new(outcome),
        };
        let submits = match self.submits(job) {
            Ok(s) => s,
            Err(error) => return routed(DeliveryOutcome::Failed { error }),
        };
        let mut ids = Vec::with_capacity(submits.len());
        for sm in &submits {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            let mut throttled = 0;
            loop {
                let Some(client) = self.pick() else {
                    return routed(DeliveryOutcome::Retry {
                        error: format!("no SMPP bind is up on route {}", self.route),
                    });
                };
                match client.submit(sm).await {
                    Ok(resp) if resp.is_ok() => {
                        self.count("submitted");
                        self.metrics.observe(
                            "otpgate_accept_to_submit_seconds",
                            &[("route", &self.route)],
                            (now_micros() - job.otp.created_at).max(0) as f64 / 1e6,
                        );
                        self.submitted
                            .lock()
                            .expect("submitted index poisoned")
                            .insert(resp.message_id.clone(), job.otp.created_at);
                        ids.push(resp.message_id);
                        break;
                    }
                    Ok(resp) if resp.is_throttled() => {
                        self.count("throttled");
                        throttled += 1;
                        if throttled > self.config.throttle_retries {
                            return routed(DeliveryOutcome::Retry {
                                error: format!("SMSC kept answering {:?}", resp.status),
                            });
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Ok(resp) if is_permanent(resp.status) => {
                        self.count("rejected");
                        return routed(DeliveryOutcome::Failed {
                            error: format!("SMSC rejected the message: {:?}", resp.status),
                        });
                    }
                    Ok(resp) => {
                        self.count("submit_error");
                        return routed(DeliveryOutcome::Retry {
                            error: format!("SMSC answered {:?}", resp.status),
                        });
                    }
                    Err(e) => {
                        self.count("submit_error");
                        return routed(DeliveryOutcome::Retry {
                            error: format!("submit_sm failed: {e}"),
                        });
                    }
                }
            }
        }
        routed(DeliveryOutcome::SentParts { message_ids: ids })
    }

    async fn shutdown(&self) {
        self.stop.notify_waiters();
        let clients: Vec<Client> = self
            .binds
            .iter()
            .filter_map(|s| s.client.lock().expect("bind slot poisoned").take())
            .collect();
        for c in clients {
            let _ = c.unbind().await;
        }
    }
}

/// Keeps one bind up: connect, bind, forward what the SMSC sends, reconnect.
async fn supervise(
    driver: Arc<SmppDriver>,
    slot: Arc<BindSlot>,
    index: usize,
    receipts: mpsc::Sender<Incoming>,
) {
    let cfg = &driver.config;
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(cfg.reconnect_max_seconds.max(1)),
    );
    let stopping = driver.stop.notified();
    tokio::pin!(stopping);
    loop {
        let set_state = |s: BindState| {
            let mut guard = slot.state.lock().expect("bind slot poisoned");
            let changed = *guard != s;
            *guard = s;
            changed
        };
        let connect = Client::connect((cfg.host.as_str(), cfg.port), cfg.bind_config());
        let result = tokio::select! {
            r = connect => r,
            _ = &mut stopping => return,
        };
        match result {
            Ok((client, mut inbound)) => {
                backoff.reset();
                set_state(BindState::Bound);
                driver.count("bound");
                tracing::info!(route = %driver.route, bind = index, "SMPP bind is up");
                *slot.client.lock().expect("bind slot poisoned") = Some(client.clone());
                let forward = {
                    let receipts = receipts.clone();
                    let driver = driver.clone();
                    async move {
                        while let Some(msg) = inbound.recv().await {
                            match msg {
                                Inbound::Receipt { receipt, pdu } => {
                                    let text = smpp::receipt::receipt_text(&pdu);
                                    let _ = receipts.send(Incoming { receipt, text }).await;
                                }
                                _ => driver.count("mo_message"),
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = client.closed() => {}
                    _ = forward => {}
                    _ = &mut stopping => return,
                }
                *slot.client.lock().expect("bind slot poisoned") = None;
                set_state(BindState::Down("connection lost".into()));
                driver.count("disconnected");
                tracing::warn!(route = %driver.route, bind = index, "SMPP connection lost; reconnecting");
            }
            Err(smpp::Error::BindFailed { status }) => {
                let why = format!("the SMSC refused the bind: {status:?}");
                if set_state(BindState::BindRefused(why)) {
                    tracing::error!(
                        route = %driver.route,
                        bind = index,
                        system_id = %cfg.system_id,
                        status = ?status,
                        "SMPP bind refused: check system_id and password"
                    );
                }
                driver.count("bind_refused");
            }
            Err(e) => {
                if set_state(BindState::Down(e.to_string())) {
                    tracing::warn!(route = %driver.route, bind = index, error = %e, "SMPP connection failed");
                }
                driver.count("connect_failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = &mut stopping => return,
        }
    }
}

fn status_of(state: Option<MessageState>) -> Option<OtpStatus> {
    match state? {
        MessageState::Delivered => Some(OtpStatus::Delivered),
        MessageState::Undeliverable => Some(OtpStatus::Undeliverable),
        MessageState::Expired => Some(OtpStatus::Expired),
        MessageState::Rejected | MessageState::Deleted => Some(OtpStatus::Rejected),
        _ => None,
    }
}

/// A receipt as a bind received it, with its text for the unmatched table.
struct Incoming {
    receipt: smpp::receipt::Receipt,
    text: String,
}

struct Pending {
    receipt: Receipt,
    /// The id as the receipt wrote it.
    raw_id: String,
    text: String,
    first_seen: Instant,
    /// Why the last try matched nothing.
    miss: &'static str,
}

/// What the receipt task of one route owns.
struct ReceiptTask {
    route: String,
    store: SharedStore,
    metrics: Arc<Metrics>,
    submitted: Arc<Mutex<Submitted>>,
    learner: HabitLearner,
    hold: Duration,
}

impl ReceiptTask {
    /// Finds each receipt's part: looks its id up, then lets the one rule
    /// decide. Returns the receipts that matched (with the id of their part)
    /// and those that did not (with why).
    async fn resolve(
        &mut self,
        batch: Vec<Pending>,
    ) -> Result<(Vec<Pending>, Vec<Pending>), (StoreError, Vec<Pending>)> {
        let (mut lookups, mut looked_up, mut unmatched) = (Vec::new(), Vec::new(), Vec::new());
        for mut p in batch {
            match IdLookup::of(&p.raw_id) {
                Some(l) => {
                    lookups.push(l);
                    looked_up.push(p);
                }
                None => {
                    p.miss = "too_long";
                    unmatched.push(p);
                }
            }
        }
        let candidates = match self.store.receipt_candidates(&self.route, lookups).await {
            Ok(c) => c,
            Err(e) => {
                looked_up.extend(unmatched);
                return Err((e, looked_up));
            }
        };
        let mut matched = Vec::new();
        for (mut p, found) in looked_up.into_iter().zip(candidates) {
            match decide(&p.raw_id, &found, self.learner.habit()) {
                Decision::Matched { index, evidence } => {
                    if let Some(habit) = evidence.and_then(|e| self.learner.observe(e)) {
                        tracing::info!(route = %self.route, habit = %habit, "learned how this SMSC spells receipt ids");
                    }
                    p.receipt.message_ids = vec![found[index].clone()];
                    matched.push(p);
                }
                Decision::Ambiguous => {
                    p.miss = "ambiguous";
                    unmatched.push(p);
                }
                Decision::NoMatch => {
                    p.miss = "no_match";
                    unmatched.push(p);
                }
            }
        }
        Ok((matched, unmatched))
    }

    /// Counts and keeps receipts that will not match.
    async fn give_up(&self, lost: Vec<Pending>) {
        if lost.is_empty() {
            return;
        }
        for _ in &lost {
            self.metrics.inc(
                "otpgate_smpp_receipts_total",
                &[("route", &self.route), ("state", "unmatched")],
            );
        }
        tracing::warn!(route = %self.route, receipts = lost.len(), "delivery receipts matched no message; see GET /admin/v1/receipts/unmatched");
        let now = now_micros();
        let rows = lost
            .into_iter()
            .map(|p| UnmatchedReceipt {
                route: self.route.clone(),
                message_id: p.raw_id,
                state: p.receipt.state,
                reason: p.miss.to_owned(),
                text: p.text,
                received_at: p.receipt.at,
            })
            .collect();
        if let Err(e) = self.store.record_unmatched_receipts(rows, now).await {
            tracing::warn!(route = %self.route, error = %e, "keeping unmatched receipts failed");
        }
    }
}

/// Applies receipts in batches; holds unmatched ones and retries them.
async fn apply_receipts(mut task: ReceiptTask, mut rx: mpsc::Receiver<Incoming>) {
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        let mut batch: Vec<Pending> = Vec::new();
        let first = tokio::select! {
            r = rx.recv(), if open => r,
            _ = tokio::time::sleep(Duration::from_millis(500)), if !waiting.is_empty() => None,
        };
        match first {
            Some(r) => batch.push(convert(&task.route, r)),
            None if open && waiting.is_empty() => {
                open = false;
                continue;
            }
            None => {}
        }
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(r) => batch.push(convert(&task.route, r)),
                Err(_) => break,
            }
        }
        // Held receipts get another try on every pass.
        batch.extend(waiting.drain(..));
        let (matched, unmatched) = match task.resolve(batch).await {
            Ok(split) => split,
            Err((e, batch)) => {
                tracing::warn!(error = %e, "looking up delivery receipts failed; will retry");
                waiting.extend(batch);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut lost = Vec::new();
        let mut hold = |p: Pending, lost: &mut Vec<Pending>| {
            if p.miss == "too_long" || p.first_seen.elapsed() >= task.hold {
                lost.push(p);
            } else {
                waiting.push_back(p);
            }
        };
        for p in unmatched {
            hold(p, &mut lost);
        }
        let receipts: Vec<Receipt> = matched.iter().map(|p| p.receipt.clone()).collect();
        match task.store.record_receipts(receipts).await {
            Ok(applied) => {
                let now = now_micros();
                for (mut p, m) in matched.into_iter().zip(applied) {
                    if m.is_none() {
                        // The part's row went between lookup and update.
                        p.miss = "no_match";
                        hold(p, &mut lost);
                        continue;
                    }
                    task.metrics.inc(
                        "otpgate_smpp_receipts_total",
                        &[("route", &task.route), ("state", &p.receipt.state)],
                    );
                    let accepted = task
                        .submitted
                        .lock()
                        .expect("submitted index poisoned")
                        .take(&p.receipt.message_ids);
                    if let Some(at) = accepted {
                        task.metrics.observe(
                            "otpgate_accept_to_receipt_seconds",
                            &[("route", &task.route)],
                            (now - at).max(0) as f64 / 1e6,
                        );
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording delivery receipts failed; will retry");
                waiting.extend(matched);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        task.give_up(lost).await;
    }
}

fn convert(route: &str, incoming: Incoming) -> Pending {
    let r = incoming.receipt;
    let id = r.message_id.clone().unwrap_or_default();
    let state = r
        .state
        .map(|s| s.as_stat().to_owned())
        // A state word this crate does not know comes from the SMSC: keep it
        // out of metric labels, as a bounded word.
        .unwrap_or_else(|| "UNKNOWN".into());
    Pending {
        receipt: Receipt {
            route: route.to_owned(),
            message_ids: Vec::new(),
            status: status_of(r.state),
            state,
            error_code: r.error_code().map(|c| c.to_string()),
            at: now_micros(),
        },
        raw_id: id.trim().to_owned(),
        text: incoming.text,
        first_seen: Instant::now(),
        miss: "no_match",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_ids_takes_the_four_words_and_refuses_others() {
        for (word, format) in [
            ("auto", IdFormat::Auto),
            ("text", IdFormat::Fixed(smpp::receipt::ids::Habit::Text)),
            ("hex", IdFormat::Fixed(smpp::receipt::ids::Habit::Hex)),
            (
                "decimal",
                IdFormat::Fixed(smpp::receipt::ids::Habit::Decimal),
            ),
        ] {
            let config = SmppConfig {
                receipt_ids: word.into(),
                ..SmppConfig::default()
            };
            assert_eq!(config.receipt_ids().unwrap(), format);
        }
        let bad = SmppConfig {
            receipt_ids: "same".into(),
            ..SmppConfig::default()
        };
        let error = bad.receipt_ids().unwrap_err().to_string();
        assert!(error.contains("auto, text, hex, decimal"), "{error}");
        assert_eq!(SmppConfig::default().receipt_ids().unwrap(), IdFormat::Auto);
    }

    #[test]
    fn receipt_states_map_to_final_statuses() {
        assert_eq!(
            status_of(Some(MessageState::Delivered)),
            Some(OtpStatus::Delivered)
        );
        assert_eq!(
            status_of(Some(MessageState::Undeliverable)),
            Some(OtpStatus::Undeliverable)
        );
        assert_eq!(
            status_of(Some(MessageState::Expired)),
            Some(OtpStatus::Expired)
        );
        assert_eq!(
            status_of(Some(MessageState::Deleted)),
            Some(OtpStatus::Rejected)
        );
        assert_eq!(status_of(Some(MessageState::Enroute)), None);
        assert_eq!(status_of(None), None);
    }
}
