//! Delivery: from the durable outbox to a channel driver and back.
//!
//! A worker per channel claims due jobs from the store (a lease, so a node
//! that dies gives them back), runs up to `capacity` deliveries at once, and
//! records each outcome in bulk. The [`Driver`] trait is the carrier boundary:
//! `deliver` returns once the carrier has taken the message (an SMSC's
//! `submit_sm_resp`, a call that was answered and played) or refused it, so a
//! windowed SMPP bind or a long SIP call is just a driver with a higher capacity
//! and a slower `deliver`; asynchronous receipts are the driver's own business,
//! reported to the store when they arrive.
//!
//! An account may have its own sender ID on a route (see
//! `otp_store::rules`): the router hands it to the route's driver with
//! [`Driver::deliver_as`], and drivers whose carrier takes no sender keep
//! the default, which ignores it.
//!
//! [`Deliveries`] is a channel's outbox, run by the shared
//! [`Worker`](crate::outbox::Worker): its step is one claim that starts
//! deliveries, its loop adds the waiting.

pub mod balance;
pub mod fallback;
pub mod http;
pub mod log;
pub mod router;
pub mod settings;
pub mod smpp;
pub mod voice;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use otp_domain::channel::Channel;
use otp_domain::sender::SenderId;
use otp_store::{Claim, ClaimedJob, JobOutcome, JobResult, SharedStore, StoreError, now_micros};

use crate::metrics::Metrics;
use crate::outbox::{Handoff, Outbox, Slot};

/// What a driver reports for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    /// The carrier took the message; its id, if it gave one.
    Sent { provider_message_id: Option<String> },
    /// The carrier took a message sent in parts, one id per part (receipts name
    /// parts by these ids).
    SentParts { message_ids: Vec<String> },
    /// What a route of a routing driver did, under the route's name.
    Routed {
        route: String,
        outcome: Box<DeliveryOutcome>,
    },
    /// A transient failure; try again later (the dispatcher picks the delay).
    Retry { error: String },
    /// A permanent failure; do not try again.
    Failed { error: String },
}

/// Who hears of the final receipts a carrier sent, after the store recorded
/// them: the OTP ids that reached a final state, each with whether it was
/// delivered. The SMS-pumping guard is one (`crate::guard`, which depends on
/// delivery, not the other way round).
pub trait FinalReceipts: Send + Sync {
    fn receipts(self: Arc<Self>, finals: Vec<(i64, bool)>);
}

/// A carrier connection for one channel.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short name for logs and metrics ("log", "smpp", ...).
    fn name(&self) -> &'static str;
    /// How many deliveries may be in flight at once.
    fn capacity(&self) -> usize;
    /// Hands one message to the carrier. Must not panic; errors are outcomes.
    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome;
    /// [`Driver::deliver`] under the account's own sender ID on this route
    /// (`None`: the route's configured sender). Only a driver whose carrier
    /// takes a sender ([`Driver::takes_sender`]) uses it.
    async fn deliver_as(&self, job: &ClaimedJob, sender: Option<&SenderId>) -> DeliveryOutcome {
        let _ = sender;
        self.deliver(job).await
    }
    /// [`Driver::deliver_as`] for a delivery that may stop being wanted while
    /// it runs: `unwanted` is cancelled when its code was verified meanwhile
    /// (see [`Deliveries`]). Only a driver that can give a delivery up part
    /// way (a call still ringing) watches it; the rest deliver as usual.
    async fn deliver_watched(
        &self,
        job: &ClaimedJob,
        sender: Option<&SenderId>,
        unwanted: &CancellationToken,
    ) -> DeliveryOutcome {
        let _ = unwanted;
        self.deliver_as(job, sender).await
    }
    /// Whether the carrier takes a sender ID per message (SMPP `source_addr`,
    /// a vendor's sender parameter), so an account's own sender on this
    /// route can be set.
    fn takes_sender(&self) -> bool {
        false
    }
    /// Whether a delivery started now could reach the carrier (a bind is up).
    fn is_ready(&self) -> bool {
        true
    }
    /// The state of each carrier connection, for `/readyz` and `/metrics`.
    fn health(&self) -> Vec<RouteHealth> {
        Vec::new()
    }
    /// Closes carrier connections cleanly; called after the last delivery.
    async fn shutdown(&self) {}
}

/// One carrier connection's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteHealth {
    pub route: String,
    /// Which connection of the route (e.g. `system_id#0`).
    pub connection: String,
    /// `bound`, `connecting`, `bind_refused`, `down`, ...
    pub status: String,
    /// Why it is not up, when it is not.
    pub detail: Option<String>,
    /// Messages sent and not yet answered (the SMPP window in use).
    pub in_flight: usize,
    /// What an operator set the route to: `active`, `draining` or `paused`
    /// (see [`router::RouteState`]).
    pub state: &'static str,
}

/// Retry timing and limits.
#[derive(Debug, Clone)]
pub struct Policy {
    pub lease: Duration,
    /// Transient failures are retried while the code is still useful: until this
    /// long after the OTP was accepted.
    pub give_up_after: Duration,
    pub claim_batch: usize,
    pub poll_interval: Duration,
}

impl Policy {
    /// Exponential backoff: 1 s, 2 s, 4 s ... capped at 30 s.
    fn retry_delay(attempts: i64) -> Duration {
        let exp = attempts.clamp(1, 6) as u32 - 1;
        Duration::from_secs(2u64.pow(exp).min(30))
    }

    /// What to record for one attempt's outcome.
    pub fn finish(&self, job: &ClaimedJob, outcome: DeliveryOutcome) -> JobResult {
        let at = now_micros();
        JobResult {
            job_id: job.job_id,
            otp_id: job.otp.id,
            outcome: self.outcome(job, outcome, None, at),
            at,
        }
    }

    fn outcome(
        &self,
        job: &ClaimedJob,
        outcome: DeliveryOutcome,
        route: Option<String>,
        at: i64,
    ) -> JobOutcome {
        match outcome {
            DeliveryOutcome::Sent {
                provider_message_id,
            } => JobOutcome::Sent {
                route,
                message_ids: provider_message_id.into_iter().collect(),
            },
            DeliveryOutcome::SentParts { message_ids } => JobOutcome::Sent { route, message_ids },
            DeliveryOutcome::Routed { route, outcome } => {
                self.outcome(job, *outcome, Some(route), at)
            }
            DeliveryOutcome::Retry { error } => {
                let next = at + Self::retry_delay(job.attempts).as_micros() as i64;
                let deadline = job.otp.created_at + self.give_up_after.as_micros() as i64;
                if next <= deadline {
                    JobOutcome::Retry {
                        next_attempt_at: next,
                        error,
                    }
                } else {
                    JobOutcome::Failed {
                        error: format!(
                            "gave up after {} attempts, the code is no longer useful: {error}",
                            job.attempts
                        ),
                    }
                }
            }
            DeliveryOutcome::Failed { error } => JobOutcome::Failed { error },
        }
    }
}

impl Deliveries {
    fn count_started(&self, via: &str, n: usize) {
        if n > 0 {
            self.metrics.add(
                "otpgate_delivery_jobs_started_total",
                &[("channel", self.channel.as_str()), ("via", via)],
                n as u64,
            );
        }
    }
}

fn outcome_label(o: &JobOutcome) -> &'static str {
    match o {
        JobOutcome::Sent { .. } => "sent",
        JobOutcome::Retry { .. } => "retry",
        JobOutcome::Failed { .. } => "failed",
    }
}

/// The due deliveries of one channel, worked through by a
/// [`Worker`](crate::outbox::Worker): claimed under a lease, handed to the
/// channel's driver, their outcomes recorded in bulk.
pub struct Deliveries {
    pub store: SharedStore,
    pub channel: Channel,
    pub driver: Arc<dyn Driver>,
    pub policy: Policy,
    pub node: String,
    pub metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl Outbox for Deliveries {
    type Job = ClaimedJob;
    type Done = JobResult;
    type Leased = otp_store::LeasedJob;
    const RECORD_BATCH: usize = 1024;

    fn name(&self) -> &'static str {
        match self.channel {
            Channel::Text => "text deliveries",
            Channel::Voice => "voice deliveries",
        }
    }

    /// The carrier's window: the route list may grow on a reload, and the
    /// window with it.
    fn capacity(&self) -> usize {
        self.driver.capacity()
    }

    fn claim_batch(&self) -> usize {
        self.policy.claim_batch
    }

    /// Text: as many again as the carrier's window, so a submit the SMSC
    /// answers frees a slot the next job takes at once, while the next claim
    /// (a store transaction) is still on its way; the window itself, what
    /// the carrier sees, does not grow. Such a job waits at most for the
    /// slots ahead of it to finish, well within its lease. Calls run for
    /// tens of seconds: voice claims only for free slots.
    fn claim_ahead(&self) -> usize {
        match self.channel {
            Channel::Text => self.driver.capacity(),
            Channel::Voice => 0,
        }
    }

    /// With no carrier connection up, jobs stay in the outbox untouched (no
    /// attempt spent) until one comes back.
    fn is_ready(&self) -> bool {
        self.driver.is_ready()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = now_micros();
        let jobs = self
            .store
            .claim_jobs(Claim {
                node: self.node.clone(),
                channel: self.channel,
                limit,
                now,
                lease_until: now + self.policy.lease.as_micros() as i64,
            })
            .await?;
        self.count_started("claimed", jobs.len());
        Ok(jobs)
    }

    async fn adopt(
        &self,
        leased: Vec<otp_store::LeasedJob>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let jobs = self.store.leased_jobs(leased).await?;
        self.count_started("handed", jobs.len());
        Ok(jobs)
    }

    async fn run(&self, job: ClaimedJob) -> JobResult {
        let started = Instant::now();
        // A channel fallback call claimed after its code was verified (the
        // verification came between the start and the claim) is not placed;
        // recording it failed marks the fallback cancelled and refunds it.
        // One verified while it rings is cancelled the same way (the driver
        // is told through `deliver_watched`). The SMS of the same OTP (its
        // fallback still pending) is sent as any SMS is.
        let a_fallback_call = job
            .otp
            .fallback
            .as_ref()
            .is_some_and(|f| f.state == otp_store::FallbackState::Started);
        if a_fallback_call && job.otp.verified_at.is_some() {
            return self.policy.finish(
                &job,
                DeliveryOutcome::Failed {
                    error: "the code was verified before the fallback call was placed".into(),
                },
            );
        }
        let outcome = if a_fallback_call {
            let unwanted = CancellationToken::new();
            let watch = tokio::spawn(watch_verified(
                self.store.clone(),
                job.otp.account_id,
                job.otp.id,
                unwanted.clone(),
            ));
            let outcome = self.driver.deliver_watched(&job, None, &unwanted).await;
            watch.abort();
            outcome
        } else {
            self.driver.deliver(&job).await
        };
        let result = self.policy.finish(&job, outcome);
        let labels = [
            ("channel", self.channel.as_str()),
            ("driver", self.driver.name()),
        ];
        self.metrics.observe(
            "otpgate_delivery_duration_seconds",
            &labels,
            started.elapsed().as_secs_f64(),
        );
        self.metrics.inc(
            "otpgate_deliveries_total",
            &[
                labels[0],
                labels[1],
                ("outcome", outcome_label(&result.outcome)),
            ],
        );
        result
    }

    async fn record(&self, done: &[JobResult]) -> Result<(), StoreError> {
        self.store.finish_jobs(done.to_vec()).await
    }
}

/// How often a fallback call in progress reads whether its code was verified.
pub const VERIFIED_POLL: Duration = Duration::from_millis(500);

/// Cancels `unwanted` once OTP `otp_id` is verified (on any node: it reads
/// the shared store every [`VERIFIED_POLL`]), so a fallback call still
/// ringing is cancelled. A failed read is tried again at the next poll.
async fn watch_verified(
    store: SharedStore,
    account: otp_store::AccountId,
    otp_id: i64,
    unwanted: CancellationToken,
) {
    loop {
        tokio::time::sleep(VERIFIED_POLL).await;
        match store.otp_verified(account, otp_id).await {
            Ok(Some(false)) => {}
            Ok(_) => {
                unwanted.cancel();
                return;
            }
            Err(e) => tracing::debug!(otp_id, error = %e, "reading whether a code was verified"),
        }
    }
}

/// One wake-up per channel, so a text send never wakes only the voice worker,
/// and, once its worker runs, the channel's [`Handover`].
#[derive(Default)]
pub struct NewJobs {
    pub text: Arc<Notify>,
    pub voice: Arc<Notify>,
    text_handover: std::sync::OnceLock<Handover>,
    voice_handover: std::sync::OnceLock<Handover>,
}

/// Where a send's job goes to the channel's worker on this node without a
/// claim: the send's transaction writes it leased to this node
/// ([`otp_store::JobLease`], `delivery.lease_seconds` as a claim takes it),
/// and the worker starts it as soon as the send is committed. A send takes
/// this way only while the worker has a slot free and its carrier is up
/// ([`Handoff::reserve`]); otherwise its job is queued and claimed as
/// before.
pub struct Handover {
    pub handoff: Handoff<otp_store::LeasedJob>,
    pub node: String,
    pub lease: Duration,
}

impl NewJobs {
    pub fn for_channel(&self, channel: Channel) -> &Arc<Notify> {
        match channel {
            Channel::Text => &self.text,
            Channel::Voice => &self.voice,
        }
    }

    /// Sets the channel's [`Handover`] as its worker starts; a second one
    /// (a worker started again in one process) is not taken.
    pub fn set_handover(&self, channel: Channel, handover: Handover) {
        let _ = self.handover(channel).set(handover);
    }

    fn handover(&self, channel: Channel) -> &std::sync::OnceLock<Handover> {
        match channel {
            Channel::Text => &self.text_handover,
            Channel::Voice => &self.voice_handover,
        }
    }

    /// A slot on the channel's worker for a send about to be written, and
    /// the lease its job is written with; `None` when the send's job is to
    /// be queued and claimed.
    pub fn reserve(
        &self,
        channel: Channel,
    ) -> Option<(Slot<otp_store::LeasedJob>, otp_store::JobLease)> {
        let handover = self.handover(channel).get()?;
        let slot = handover.handoff.reserve()?;
        let lease = otp_store::JobLease {
            node: handover.node.clone(),
            until: now_micros() + handover.lease.as_micros() as i64,
        };
        Some((slot, lease))
    }
}
