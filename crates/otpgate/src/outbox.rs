//! The leased-outbox worker that carrier deliveries and webhooks share.
//!
//! An outbox is a table of jobs that the store hands out under a lease: a node
//! claims the due ones, works on them, and records what happened; a node that
//! dies before recording lets its leases run out, and another node claims the
//! jobs again (at least once, never lost). What a job is, how it is claimed, run
//! and recorded is the [`Outbox`]'s business; the [`Worker`] adds the rest:
//!
//! - a bound on jobs in flight ([`Outbox::capacity`], which may grow while it
//!   runs): a claim takes no more jobs than there are free slots, and
//!   [`Outbox::claim_ahead`] more that wait on this node for a slot;
//! - each job run on its own task, its result handed to one recorder task that
//!   writes results in batches (retrying a batch the store refuses);
//! - [`Worker::step`], one claim that starts its jobs: what the loop calls and
//!   what tests call;
//! - [`Worker::run`], the loop: a step whenever a slot is free, then a wait for
//!   the poll interval or a wake-up, until the stop token is cancelled;
//! - [`Worker::drain`]: what is in flight finishes and is recorded.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use otp_store::StoreError;

/// One kind of outbox job: how to claim, run and record it.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// A claimed job.
    type Job: Send + 'static;
    /// What one run of a job leaves to record.
    type Done: Send + 'static;
    /// Most results written in one batch.
    const RECORD_BATCH: usize;

    /// Which outbox this is, for logs.
    fn name(&self) -> &'static str;
    /// How many jobs may run at once.
    fn capacity(&self) -> usize;
    /// Most jobs taken in one claim.
    fn claim_batch(&self) -> usize;
    /// Jobs claimed beyond the free slots, which wait on this node for a
    /// slot: one a finished job frees is taken at once, not after the next
    /// claim. They hold their lease while they wait, so an outbox whose jobs
    /// run long (a call) keeps this 0, claiming only for free slots.
    fn claim_ahead(&self) -> usize {
        0
    }
    /// Whether a job started now could get anywhere; when not, nothing is
    /// claimed, so no attempt is spent.
    fn is_ready(&self) -> bool {
        true
    }
    /// Claims up to `limit` due jobs under a lease.
    async fn claim(&self, limit: usize) -> Result<Vec<Self::Job>, StoreError>;
    /// Runs one job. Must not panic; failures are results.
    async fn run(&self, job: Self::Job) -> Self::Done;
    /// Records a batch of results.
    async fn record(&self, done: &[Self::Done]) -> Result<(), StoreError>;
}

/// What one [`Worker::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Jobs claimed and started.
    pub started: usize,
    /// The claim was full: more may be due right away.
    pub more_due: bool,
}

/// Works through one [`Outbox`] on this node.
pub struct Worker<K: Outbox> {
    outbox: Arc<K>,
    /// One permit per job running, `capacity` in all.
    permits: Arc<Semaphore>,
    capacity: usize,
    /// One permit per job claimed and not yet done (running or waiting for a
    /// slot), `capacity` + `ahead` in all.
    held: Arc<Semaphore>,
    ahead: usize,
    results: mpsc::UnboundedSender<K::Done>,
    recorder: JoinHandle<()>,
}

impl<K: Outbox> Worker<K> {
    /// A worker with nothing in flight, its recorder started.
    pub fn new(outbox: K) -> Worker<K> {
        let outbox = Arc::new(outbox);
        let capacity = outbox.capacity().max(1);
        let ahead = outbox.claim_ahead();
        let (results, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(outbox.clone(), rx));
        Worker {
            outbox,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            held: Arc::new(Semaphore::new(capacity + ahead)),
            ahead,
            results,
            recorder,
        }
    }

    /// One step: claims as many due jobs as there are free slots and
    /// [`Outbox::claim_ahead`] more (at most a claim batch) and starts each on
    /// its own task, which waits for a slot before it runs. Their results
    /// reach the store through the recorder; [`Worker::drain`] waits for them.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        // The capacity may grow (a reload adds routes); it never shrinks here,
        // a smaller one only means more waiting inside the outbox.
        let capacity = self.outbox.capacity().max(1);
        if capacity > self.capacity {
            self.permits.add_permits(capacity - self.capacity);
            self.held.add_permits(capacity - self.capacity);
            self.capacity = capacity;
        }
        let limit = self.held.available_permits().min(self.outbox.claim_batch());
        if limit == 0 || !self.outbox.is_ready() {
            return Ok(Step {
                started: 0,
                more_due: false,
            });
        }
        let jobs = self.outbox.claim(limit).await?;
        let started = jobs.len();
        for job in jobs {
            // Never waits: only this step takes these, and `limit` were free.
            let held = self
                .held
                .clone()
                .acquire_owned()
                .await
                .expect("the outbox semaphore is never closed");
            let slots = self.permits.clone();
            let outbox = self.outbox.clone();
            let results = self.results.clone();
            tokio::spawn(async move {
                // Jobs claimed ahead wait here for a running one to finish;
                // the semaphore is fair, so they start in about the order
                // their tasks first ran.
                let slot = slots
                    .acquire_owned()
                    .await
                    .expect("the outbox semaphore is never closed");
                let done = outbox.run(job).await;
                let _ = results.send(done);
                drop(slot);
                drop(held);
            });
        }
        Ok(Step {
            started,
            more_due: started > 0 && started == limit,
        })
    }

    /// Steps whenever a slot is free, waiting `poll_interval` (or for `wake`)
    /// after a claim that was not full, until `stop` is cancelled; then
    /// [drains](Worker::drain). A token cancelled before this starts stops it
    /// before its first claim.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        poll_interval: Duration,
        wake: Option<Arc<Notify>>,
    ) {
        loop {
            // Wait for room before claiming anything.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                room = self.held.acquire() => drop(room),
            }
            let batch = self
                .outbox
                .claim_batch()
                .min(self.outbox.capacity() + self.ahead);
            if self.held.available_permits() < batch / 4 {
                // Let a few more jobs finish so one claim serves many.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            match self.step().await {
                Ok(step) if step.more_due => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, outbox = self.outbox.name(), "claiming from the outbox failed")
                }
            }
            let woken = async {
                match &wake {
                    Some(wake) => wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(poll_interval) => {}
            }
        }
        self.drain().await;
    }

    /// Waits for every job in flight, then for the recorder to write their
    /// results.
    pub async fn drain(self) {
        // Every job claimed, those still waiting for a slot included.
        let all = u32::try_from(self.capacity + self.ahead).unwrap_or(u32::MAX);
        let _ = self.held.acquire_many(all).await;
        drop(self.results);
        let _ = self.recorder.await;
    }
}

/// Writes results in batches. A batch that cannot be written is retried; if
/// the process dies first, the jobs' leases run out and they are run again (at
/// least once, never lost).
async fn record<K: Outbox>(outbox: Arc<K>, mut rx: mpsc::UnboundedReceiver<K::Done>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < K::RECORD_BATCH {
            match rx.try_recv() {
                Ok(done) => batch.push(done),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        while let Err(e) = outbox.record(&batch).await {
            tracing::warn!(error = %e, outbox = outbox.name(), results = batch.len(), "recording outbox results failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}
