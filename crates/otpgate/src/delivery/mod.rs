//! Delivery: from the durable outbox to a channel driver and back.
//!
//! A [`Dispatcher`] per channel claims due jobs from the store (a lease, so a node
//! that dies gives them back), runs up to `capacity` deliveries at once, and
//! records each outcome in bulk. The [`Driver`] trait is the carrier boundary:
//! `deliver` returns once the carrier has taken the message (an SMSC's
//! `submit_sm_resp`, a call that was answered and played) or refused it, so a
//! windowed SMPP bind or a long SIP call is just a driver with a higher capacity
//! and a slower `deliver`; asynchronous receipts are the driver's own business,
//! reported to the store when they arrive.
//!
//! [`try_deliver_next`] is one claim-deliver-record step without the waiting; the
//! loop in [`Dispatcher::run`] adds concurrency, polling and wake-ups.

pub mod http;
pub mod log;
pub mod router;
pub mod settings;
pub mod smpp;
pub mod voice;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, mpsc};

use otp_domain::channel::Channel;
use otp_store::{Claim, ClaimedJob, JobOutcome, JobResult, SharedStore, StoreError, now_micros};

use crate::metrics::Metrics;

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

/// A carrier connection for one channel.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Short name for logs and metrics ("log", "smpp", ...).
    fn name(&self) -> &'static str;
    /// How many deliveries may be in flight at once.
    fn capacity(&self) -> usize;
    /// Hands one message to the carrier. Must not panic; errors are outcomes.
    async fn deliver(&self, job: &ClaimedJob) -> DeliveryOutcome;
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

fn outcome_label(o: &JobOutcome) -> &'static str {
    match o {
        JobOutcome::Sent { .. } => "sent",
        JobOutcome::Retry { .. } => "retry",
        JobOutcome::Failed { .. } => "failed",
    }
}

/// One step: claim up to `limit` due jobs of the driver's channel, deliver them one
/// after another, record the outcomes. Returns how many jobs were handled.
pub async fn try_deliver_next(
    store: &SharedStore,
    channel: Channel,
    driver: &dyn Driver,
    policy: &Policy,
    node: &str,
    limit: usize,
) -> Result<usize, StoreError> {
    let now = now_micros();
    let jobs = store
        .claim_jobs(Claim {
            node: node.to_owned(),
            channel,
            limit,
            now,
            lease_until: now + policy.lease.as_micros() as i64,
        })
        .await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let outcome = driver.deliver(job).await;
        results.push(policy.finish(job, outcome));
    }
    let n = results.len();
    if n > 0 {
        store.finish_jobs(results).await?;
    }
    Ok(n)
}

/// The delivery loop of one channel on this node.
pub struct Dispatcher {
    pub store: SharedStore,
    pub channel: Channel,
    pub driver: Arc<dyn Driver>,
    pub policy: Policy,
    pub node: String,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    /// Runs until `stop` is notified, then lets deliveries in flight finish and
    /// records their outcomes before returning.
    pub async fn run(self, stop: Arc<Notify>) {
        // The route list may grow on a reload: the window grows with it (it
        // never shrinks; a smaller one only means more waiting in the drivers).
        let mut capacity = self.driver.capacity().max(1);
        let permits = Arc::new(Semaphore::new(capacity));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<JobResult>();
        let recorder = tokio::spawn(record_results(self.store.clone(), done_rx));
        let stopping = stop.notified();
        tokio::pin!(stopping);
        loop {
            // Wait for room in the carrier's window before claiming anything.
            let room = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("dispatcher semaphore closed"),
                _ = &mut stopping => break,
            };
            drop(room);
            let now_capacity = self.driver.capacity().max(1);
            if now_capacity > capacity {
                permits.add_permits(now_capacity - capacity);
                capacity = now_capacity;
            }
            if permits.available_permits() < self.policy.claim_batch.min(self.driver.capacity()) / 4
            {
                // Let a few more deliveries finish so one claim serves many.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let free = permits.available_permits();
            // With no carrier connection up, jobs stay in the outbox untouched
            // (no attempt spent) until one comes back.
            let limit = free.min(self.policy.claim_batch);
            let claimed = if free == 0 || !self.driver.is_ready() {
                Ok(Vec::new())
            } else {
                let now = now_micros();
                self.store
                    .claim_jobs(Claim {
                        node: self.node.clone(),
                        channel: self.channel,
                        limit,
                        now,
                        lease_until: now + self.policy.lease.as_micros() as i64,
                    })
                    .await
            };
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, channel = self.channel.as_str(), "claiming jobs failed");
                    Vec::new()
                }
            };
            let got = jobs.len();
            for job in jobs {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("dispatcher semaphore closed");
                let driver = self.driver.clone();
                let policy = self.policy.clone();
                let done = done_tx.clone();
                let metrics = self.metrics.clone();
                let channel = self.channel;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let outcome = driver.deliver(&job).await;
                    let result = policy.finish(&job, outcome);
                    metrics.observe(
                        "otpgate_delivery_duration_seconds",
                        &[("channel", channel.as_str()), ("driver", driver.name())],
                        started.elapsed().as_secs_f64(),
                    );
                    metrics.inc(
                        "otpgate_deliveries_total",
                        &[
                            ("channel", channel.as_str()),
                            ("driver", driver.name()),
                            ("outcome", outcome_label(&result.outcome)),
                        ],
                    );
                    let _ = done.send(result);
                    drop(permit);
                });
            }
            if got > 0 && got == limit {
                // A full claim: more may be due right away.
                continue;
            }
            tokio::select! {
                _ = &mut stopping => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.policy.poll_interval) => {}
            }
        }
        // Graceful stop: wait for every delivery in flight, then flush outcomes.
        let all = capacity as u32;
        let _ = permits.acquire_many(all).await;
        drop(done_tx);
        let _ = recorder.await;
    }
}

/// Writes outcomes in batches. A batch that cannot be written is retried; if the
/// process dies first, the jobs' leases run out and they are delivered again
/// (at least once, never lost).
async fn record_results(store: SharedStore, mut rx: mpsc::UnboundedReceiver<JobResult>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match store.finish_jobs(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "recording delivery outcomes failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}

/// One wake-up per channel, so a text send never wakes only the voice worker.
#[derive(Default)]
pub struct NewJobs {
    pub text: Arc<Notify>,
    pub voice: Arc<Notify>,
}

impl NewJobs {
    pub fn for_channel(&self, channel: Channel) -> &Arc<Notify> {
        match channel {
            Channel::Text => &self.text,
            Channel::Voice => &self.voice,
        }
    }
}
