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
//! - [`Worker::drain`]: what is in flight finishes and is recorded;
//! - a [`Handoff`]: a job written already leased to this node (a send whose
//!   job the accepting transaction leased) is handed to the worker in memory
//!   and started without a claim. The one who writes it first reserves a slot
//!   ([`Handoff::reserve`]), so handed jobs count against the same bound as
//!   claimed ones; with no slot free, or the outbox not ready, the job is
//!   written unleased and claimed as any other. Once a job has been queued
//!   so, no job is handed over until a claim has found the outbox drained:
//!   fresh jobs never overtake a backlog for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use otp_store::StoreError;

/// One kind of outbox job: how to claim, run and record it.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// A claimed job.
    type Job: Send + 'static;
    /// A job written already leased to this node, handed over through a
    /// [`Handoff`]; [`Outbox::adopt`] makes it a [`Outbox::Job`], reading
    /// what it does not carry.
    type Leased: Send + 'static;
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
    /// The jobs handed over as leased, made ready to run (those gone left
    /// out).
    async fn adopt(&self, leased: Vec<Self::Leased>) -> Result<Vec<Self::Job>, StoreError>;
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
    /// Jobs handed over, each with the slot reserved for it.
    handed: mpsc::UnboundedReceiver<(K::Leased, OwnedSemaphorePermit)>,
    hand: mpsc::UnboundedSender<(K::Leased, OwnedSemaphorePermit)>,
    /// See [`Handoff`]'s field.
    backlog: Arc<AtomicBool>,
}

/// Where jobs leased to this node as they were written are handed to its
/// [`Worker`] ([`Worker::handoff`]); cheap to clone.
pub struct Handoff<L> {
    held: Arc<Semaphore>,
    hand: mpsc::UnboundedSender<(L, OwnedSemaphorePermit)>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Jobs may be waiting in the outbox: set when a reservation fails,
    /// cleared by a claim that took less than it could.
    backlog: Arc<AtomicBool>,
}

impl<L> Clone for Handoff<L> {
    fn clone(&self) -> Self {
        Handoff {
            held: self.held.clone(),
            hand: self.hand.clone(),
            ready: self.ready.clone(),
            backlog: self.backlog.clone(),
        }
    }
}

/// A slot on the worker reserved for one job about to be written leased.
/// Dropped unused (the write failed or was refused), it frees the slot.
pub struct Slot<L> {
    held: OwnedSemaphorePermit,
    hand: mpsc::UnboundedSender<(L, OwnedSemaphorePermit)>,
}

impl<L> Handoff<L> {
    /// A slot for one job, when the worker has one free, is running, and its
    /// outbox could start a job now ([`Outbox::is_ready`]), and no job
    /// refused a slot waits in the outbox; never waits. `None` means the job
    /// is to be queued, and marks the backlog.
    pub fn reserve(&self) -> Option<Slot<L>> {
        if self.hand.is_closed() || self.backlog.load(Ordering::Acquire) {
            return None;
        }
        let held = (self.ready)()
            .then(|| self.held.clone().try_acquire_owned().ok())
            .flatten();
        if held.is_none() {
            self.backlog.store(true, Ordering::Release);
        }
        Some(Slot {
            held: held?,
            hand: self.hand.clone(),
        })
    }
}

impl<L> Slot<L> {
    /// Hands the job written leased to the worker. `false` when the worker
    /// has stopped meanwhile: the job then waits for its lease to run out,
    /// and is claimed as one whose node died.
    pub fn hand(self, leased: L) -> bool {
        self.hand.send((leased, self.held)).is_ok()
    }
}

impl<K: Outbox> Worker<K> {
    /// A worker with nothing in flight, its recorder started.
    pub fn new(outbox: K) -> Worker<K> {
        let outbox = Arc::new(outbox);
        let capacity = outbox.capacity().max(1);
        let ahead = outbox.claim_ahead();
        let (results, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(outbox.clone(), rx));
        let (hand, handed) = mpsc::unbounded_channel();
        Worker {
            outbox,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            held: Arc::new(Semaphore::new(capacity + ahead)),
            ahead,
            results,
            recorder,
            handed,
            hand,
            backlog: Arc::default(),
        }
    }

    /// Where jobs written leased to this node are handed to this worker.
    pub fn handoff(&self) -> Handoff<K::Leased> {
        let outbox = self.outbox.clone();
        Handoff {
            held: self.held.clone(),
            hand: self.hand.clone(),
            ready: Arc::new(move || outbox.is_ready()),
            backlog: self.backlog.clone(),
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
        if started < limit {
            // Nothing more is due: jobs may be handed over again.
            self.backlog.store(false, Ordering::Release);
        }
        for job in jobs {
            // Never waits: only this step takes these, and `limit` were free.
            let held = self
                .held
                .clone()
                .acquire_owned()
                .await
                .expect("the outbox semaphore is never closed");
            self.start(job, held);
        }
        Ok(Step {
            started,
            more_due: started > 0 && started == limit,
        })
    }

    /// Runs `job` on its own task once a slot is free, holding `held` until
    /// it is done.
    fn start(&self, job: K::Job, held: OwnedSemaphorePermit) {
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

    /// Reads and starts `first` and whatever else was handed over meanwhile
    /// (at most a claim batch at once), each on the slot reserved for it. A
    /// job that cannot be read now keeps its lease, and is claimed once the
    /// lease has run out.
    async fn adopt(&mut self, first: (K::Leased, OwnedSemaphorePermit)) {
        let mut batch = vec![first];
        while batch.len() < self.outbox.claim_batch().max(1) {
            match self.handed.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        self.adopt_batch(batch).await;
    }

    async fn adopt_batch(&self, batch: Vec<(K::Leased, OwnedSemaphorePermit)>) {
        let (leased, mut held): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match self.outbox.adopt(leased).await {
            // Slots are alike: a job left out frees one.
            Ok(jobs) => {
                for job in jobs {
                    let Some(slot) = held.pop() else { break };
                    self.start(job, slot);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, outbox = self.outbox.name(), "reading jobs handed over failed; they run once their lease has run out")
            }
        }
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
        'run: loop {
            // Wait for room before claiming anything.
            let handed = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(first) = self.handed.recv() => Some(first),
                room = self.held.acquire() => {
                    drop(room);
                    None
                }
            };
            if let Some(first) = handed {
                self.adopt(first).await;
                continue;
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
            let poll = tokio::time::sleep(poll_interval);
            tokio::pin!(woken, poll);
            // Jobs handed over start while the worker waits, without a claim.
            loop {
                let first = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break 'run,
                    Some(first) = self.handed.recv() => first,
                    _ = &mut woken => break,
                    _ = &mut poll => break,
                };
                self.adopt(first).await;
            }
        }
        self.drain().await;
    }

    /// Starts the jobs handed over and not yet started (no more are taken:
    /// a job handed on a slot reserved before is refused, and waits for its
    /// lease), waits for every job in flight and every slot still reserved
    /// (a send being written), then for the recorder to write their results.
    pub async fn drain(mut self) {
        self.handed.close();
        let mut rest = Vec::new();
        while let Ok(handed) = self.handed.try_recv() {
            rest.push(handed);
        }
        while !rest.is_empty() {
            let n = rest.len().min(self.outbox.claim_batch().max(1));
            let batch: Vec<_> = rest.drain(..n).collect();
            self.adopt_batch(batch).await;
        }
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
