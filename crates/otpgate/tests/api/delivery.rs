use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use otp_domain::channel::Channel;
use otp_store::test_support::sample_otp;
use otp_store::{
    Claim, ClaimedJob, JobLease, LeasedJob, OtpStatus, SharedStore, StoreOptions, now_micros,
};
use otpgate::delivery::{Deliveries, DeliveryOutcome, Driver, Policy};
use otpgate::metrics::Metrics;
use otpgate::outbox::{Slot, Step, Worker};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::for_each_backend;
use crate::helpers::{Backend, database_url, text_send};

for_each_backend! {
    async fn accepted_sends_are_delivered_by_the_log_driver(app) {
        let reply = app.send_ok(&text_send("9851023212")).await;
        let id = reply["data"]["details"]["id"].as_i64().unwrap();
        let otp = app.wait_for_status(id, "sent").await;
        assert_eq!(otp.provider_message_id.as_deref(), Some(format!("log-{id}").as_str()));
        let log = std::fs::read_to_string(&app.deliveries).unwrap();
        let line: Value = log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["otp_id"] == id).expect("a delivery line");
        assert_eq!(line["to"], "+9779851023212");
        assert_eq!(line["message"], reply["data"]["details"]["message"]);
        assert_eq!(line["channel"], "text");
        // A text line has these fields and no voice ones.
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["at", "attempt", "channel", "job_id", "message", "otp_id",
            "provider_message_id", "segments", "to"]);
        assert_eq!((line["attempt"].as_i64(), line["segments"].as_i64()), (Some(1), Some(1)));
        assert_eq!(line["provider_message_id"], format!("log-{id}"));
        let (_, list) = app.list("").await;
        assert_eq!(list["results"]["data"][0]["status"], "sent");
        // The worker had a slot free: the job was handed over, not claimed.
        let metrics = app.metrics_text().await;
        assert!(
            metrics.contains(r#"otpgate_delivery_jobs_started_total{channel="text",via="handed"} 1"#),
            "{metrics}"
        );
        assert!(!metrics.contains(r#"via="claimed""#), "{metrics}");
    }
}

/// A driver that answers with a fixed outcome, after `delay`, and counts calls.
struct Scripted {
    outcome: DeliveryOutcome,
    delay: Duration,
    calls: AtomicUsize,
    /// Deliveries running now, and the most that ever ran at once.
    running: AtomicUsize,
    most: AtomicUsize,
    /// What `is_ready` answers.
    ready: std::sync::atomic::AtomicBool,
}

impl Scripted {
    fn new(outcome: DeliveryOutcome) -> Arc<Scripted> {
        Scripted::with_delay(outcome, Duration::ZERO)
    }

    fn with_delay(outcome: DeliveryOutcome, delay: Duration) -> Arc<Scripted> {
        Arc::new(Scripted {
            outcome,
            delay,
            calls: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            ready: std::sync::atomic::AtomicBool::new(true),
        })
    }

    fn sent() -> DeliveryOutcome {
        DeliveryOutcome::Sent {
            provider_message_id: None,
        }
    }
}

#[async_trait::async_trait]
impl Driver for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn capacity(&self) -> usize {
        4
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    async fn deliver(&self, _job: &ClaimedJob) -> DeliveryOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.outcome.clone()
    }
}

pub(crate) async fn bare_store(backend: Backend) -> (SharedStore, tempfile::TempDir, i64) {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(backend, &dir).await;
    let store = otp_store::open(&url, &StoreOptions::default())
        .await
        .unwrap();
    let account = store.create_account("acme", 1000, 1000).await.unwrap();
    (store, dir, account.id)
}

fn policy(give_up_after_seconds: u64) -> Policy {
    Policy {
        lease: Duration::from_secs(60),
        give_up_after: Duration::from_secs(give_up_after_seconds),
        claim_batch: 16,
        poll_interval: Duration::from_millis(50),
    }
}

/// The text outbox of `store`, delivered by `driver` as node `node-a`.
fn worker(store: &SharedStore, driver: Arc<Scripted>, policy: Policy) -> Worker<Deliveries> {
    worker_counted(store, driver, policy, Arc::new(Metrics::default()))
}

/// [`worker`], counting into `metrics`.
fn worker_counted(
    store: &SharedStore,
    driver: Arc<Scripted>,
    policy: Policy,
    metrics: Arc<Metrics>,
) -> Worker<Deliveries> {
    Worker::new(Deliveries {
        store: store.clone(),
        channel: Channel::Text,
        driver,
        policy,
        node: "node-a".into(),
        metrics,
    })
}

/// A send written with its job leased to `node-a` and handed over on `slot`:
/// its OTP id.
async fn hand_over(store: &SharedStore, account: i64, slot: Slot<LeasedJob>) -> i64 {
    let lease = JobLease {
        node: "node-a".into(),
        until: now_micros() + 60_000_000,
    };
    let accepted = store
        .accept_leased(sample_otp(account), None, Some(lease))
        .await
        .unwrap();
    assert!(slot.hand(accepted.leased_job.expect("its job is leased")));
    accepted.id
}

/// Jobs handed over as their sends are written run without a claim: no
/// more than the worker's slots (the driver's and as many ahead) are
/// reserved, none while the carrier is down or a send refused a slot waits
/// in the outbox (until a claim finds it drained), and a stop starts and
/// records the ones handed over and not yet started.
async fn sends_handed_to_the_worker_run_without_a_claim_within_its_slots(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let driver = Scripted::with_delay(Scripted::sent(), Duration::from_millis(20));
    let metrics = Arc::new(Metrics::default());
    let mut worker = worker_counted(&store, driver.clone(), policy(60), metrics.clone());
    let handoff = worker.handoff();
    driver.ready.store(false, Ordering::SeqCst);
    assert!(
        handoff.reserve().is_none(),
        "no slot while the carrier is down"
    );
    driver.ready.store(true, Ordering::SeqCst);
    assert!(
        handoff.reserve().is_none(),
        "the refused send was queued: nothing is handed over until a claim finds the outbox drained"
    );
    assert_eq!(worker.step().await.unwrap().started, 0);
    let slots: Vec<_> = (0..8)
        .map(|_| handoff.reserve().expect("a free slot"))
        .collect();
    assert!(
        handoff.reserve().is_none(),
        "4 running and 4 ahead: no slot left"
    );
    let mut ids = Vec::new();
    for slot in slots {
        ids.push(hand_over(&store, account, slot).await);
    }
    // The send refused a slot is queued and wakes the worker, as a send does.
    ids.push(store.accept(sample_otp(account)).await.unwrap().id);
    let wake = Arc::new(tokio::sync::Notify::new());
    wake.notify_one();
    // The poll never comes: the handoff starts the 8 (they are leased, so no
    // claim could take them), the wake-up claims the queued one.
    let stop = CancellationToken::new();
    let running =
        tokio::spawn(worker.run(stop.clone(), Duration::from_secs(3600), Some(wake.clone())));
    tokio::time::timeout(Duration::from_secs(20), async {
        while driver.calls.load(Ordering::SeqCst) < 9 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the handed jobs and the queued one ran");
    assert_eq!(driver.most.load(Ordering::SeqCst), 4, "ran past the slots");
    // Once a claim found nothing more due, sends are handed over again. One
    // more just before the stop (the stop starts it if the worker has not),
    // and one refused after it.
    let late = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(slot) = handoff.reserve() {
                return slot;
            }
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("slots are free again once the outbox is drained");
    let later = handoff.reserve().expect("slots are free again");
    ids.push(hand_over(&store, account, late).await);
    let kept = store
        .accept_leased(
            sample_otp(account),
            None,
            Some(JobLease {
                node: "node-a".into(),
                until: now_micros() + 60_000_000,
            }),
        )
        .await
        .unwrap();
    stop.cancel();
    // A stopping worker takes no more (free slots aside), and waits for the
    // slot still reserved: the job handed on it now is refused, and waits
    // for its lease.
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(free) = handoff.reserve() {
            drop(free);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stopping worker closed its handoff");
    assert!(
        !running.is_finished(),
        "the worker waits for the reserved slot"
    );
    assert!(!later.hand(kept.leased_job.unwrap()));
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the worker stopped")
        .unwrap();
    assert_eq!(driver.calls.load(Ordering::SeqCst), 10);
    for id in &ids {
        let otp = store.otp(account, *id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Sent, "OTP {id}");
    }
    assert_eq!(
        metrics.counter_sum(
            "otpgate_delivery_jobs_started_total",
            &[("channel", "text")],
            &[("via", "handed")]
        ),
        9
    );
    assert_eq!(
        metrics.counter_sum(
            "otpgate_delivery_jobs_started_total",
            &[("channel", "text")],
            &[("via", "claimed")]
        ),
        1
    );
    // The refused one is claimed once its lease has run out.
    let due = now_micros() + 61_000_000;
    let claimed = claim_text(&store, "node-b", due, due + 60_000_000).await;
    assert_eq!(
        claimed
            .iter()
            .map(|j| (j.otp.id, j.attempts))
            .collect::<Vec<_>>(),
        [(kept.id, 2)]
    );
}

/// One worker step, then a drain so its outcomes are recorded: the jobs it
/// started.
async fn deliver_due(store: &SharedStore, driver: &Arc<Scripted>, policy: Policy) -> usize {
    let mut worker = worker(store, driver.clone(), policy);
    let step = worker.step().await.unwrap();
    worker.drain().await;
    step.started
}

async fn transient_failures_retry_then_fail(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let id = store.accept(sample_otp(account)).await.unwrap().id;
    let driver = Scripted::new(DeliveryOutcome::Retry {
        error: "smsc busy".into(),
    });
    assert_eq!(deliver_due(&store, &driver, policy(2)).await, 1);
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status.as_str(), "queued");
    assert_eq!(otp.error.as_deref(), Some("smsc busy"));
    // Not due again until its backoff passes.
    assert_eq!(deliver_due(&store, &driver, policy(2)).await, 0);
    assert_eq!(driver.calls.load(Ordering::SeqCst), 1);

    // A code accepted longer ago than the give-up horizon is not retried: it
    // fails, and its credit comes back.
    let mut old = sample_otp(account);
    old.created_at = now_micros() - 700_000_000;
    let old_id = store.accept(old).await.unwrap().id;
    let before = store.account(account).await.unwrap().unwrap().sms_credits;
    let far = now_micros() + 120_000_000;
    let jobs = claim_text(&store, "node-a", far, far + 1).await;
    let old_job = jobs.into_iter().find(|j| j.otp.id == old_id).unwrap();
    let outcome = driver.deliver(&old_job).await;
    let result = policy(600).finish(&old_job, outcome);
    assert!(
        matches!(result.outcome, otp_store::JobOutcome::Failed { .. }),
        "{result:?}"
    );
    store.finish_jobs(vec![result]).await.unwrap();
    let otp = store.otp(account, old_id).await.unwrap().unwrap();
    assert_eq!(otp.status.as_str(), "failed");
    assert!(otp.refunded);
    let after = store.account(account).await.unwrap().unwrap().sms_credits;
    assert_eq!(after, before + 1);
    let (history, _) = store.otp_history(old_id).await.unwrap();
    assert_eq!(history.last().unwrap().status, "failed");
}

async fn permanent_failures_stop_at_once(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let id = store.accept(sample_otp(account)).await.unwrap().id;
    let driver = Scripted::new(DeliveryOutcome::Failed {
        error: "invalid destination".into(),
    });
    assert_eq!(deliver_due(&store, &driver, policy(5)).await, 1);
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status.as_str(), "failed");
    assert_eq!(otp.error.as_deref(), Some("invalid destination"));
    let far = now_micros() + 3_600_000_000;
    let again = claim_text(&store, "x", far, far).await;
    assert!(again.is_empty());
}

/// A text worker claims its free slots' worth of jobs and as many again
/// (they wait for a slot on this node), never runs more at once than the
/// driver takes, and records each outcome.
async fn a_worker_step_claims_its_free_slots_and_as_many_again_and_runs_no_more_than_the_slots(
    backend: Backend,
) {
    let (store, _dir, account) = bare_store(backend).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(store.accept(sample_otp(account)).await.unwrap().id);
    }
    let driver = Scripted::with_delay(Scripted::sent(), Duration::from_millis(20));
    let mut worker = worker(&store, driver.clone(), policy(60));
    // The driver takes 4 at once, and 4 more are claimed ahead: a full
    // claim, more may be due.
    let first = worker.step().await.unwrap();
    assert_eq!(
        first,
        Step {
            started: 8,
            more_due: true
        }
    );
    worker.drain().await;
    assert_eq!(driver.calls.load(Ordering::SeqCst), 8);
    assert_eq!(driver.most.load(Ordering::SeqCst), 4, "ran past the slots");
    let mut worker = self::worker(&store, driver.clone(), policy(60));
    let second = worker.step().await.unwrap();
    assert_eq!(
        second,
        Step {
            started: 2,
            more_due: false
        }
    );
    worker.drain().await;
    assert_eq!(driver.calls.load(Ordering::SeqCst), 10);
    for id in ids {
        let otp = store.otp(account, id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Sent, "OTP {id}");
    }
    let mut worker = self::worker(&store, driver.clone(), policy(60));
    assert_eq!(worker.step().await.unwrap().started, 0);
    worker.drain().await;
}

/// The due text jobs at `now`, claimed for `node` until `lease_until` (10 at most).
async fn claim_text(
    store: &SharedStore,
    node: &str,
    now: i64,
    lease_until: i64,
) -> Vec<ClaimedJob> {
    store
        .claim_jobs(Claim {
            node: node.into(),
            channel: Channel::Text,
            limit: 10,
            now,
            lease_until,
        })
        .await
        .unwrap()
}

/// Nothing else holds the text outbox of `store` now: the due job is claimed
/// by another node at once.
async fn unclaimed(store: &SharedStore) -> usize {
    let now = now_micros();
    claim_text(store, "other", now, now + 60_000_000)
        .await
        .len()
}

async fn a_worker_started_after_the_stop_claims_nothing_and_returns(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let id = store.accept(sample_otp(account)).await.unwrap().id;
    let driver = Scripted::new(Scripted::sent());
    let stop = CancellationToken::new();
    stop.cancel();
    let running =
        worker(&store, driver.clone(), policy(60)).run(stop, Duration::from_millis(10), None);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker saw the stop given before it started");
    assert_eq!(driver.calls.load(Ordering::SeqCst), 0);
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status, OtpStatus::Queued);
    assert_eq!(unclaimed(&store).await, 1, "the job was not leased");
}

async fn a_stopped_worker_finishes_and_records_the_deliveries_in_flight(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let id = store.accept(sample_otp(account)).await.unwrap().id;
    let driver = Scripted::with_delay(Scripted::sent(), Duration::from_millis(300));
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker(&store, driver.clone(), policy(60)).run(
        stop.clone(),
        Duration::from_millis(10),
        None,
    ));
    while driver.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stopped")
        .unwrap();
    let otp = store.otp(account, id).await.unwrap().unwrap();
    assert_eq!(otp.status, OtpStatus::Sent);
    assert_eq!(driver.calls.load(Ordering::SeqCst), 1);
}

async fn a_dead_nodes_lease_runs_out_and_its_job_is_taken_again(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    store.accept(sample_otp(account)).await.unwrap();
    let now = now_micros();
    let first = claim_text(&store, "dies", now, now + 5_000_000).await;
    assert_eq!(first.len(), 1);
    let during = claim_text(&store, "other", now + 1_000_000, now + 9_000_000).await;
    assert!(during.is_empty());
    let after = claim_text(&store, "other", now + 6_000_000, now + 9_000_000).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].job_id, first[0].job_id);
    assert_eq!(after[0].attempts, 2);
    // Voice jobs are a separate queue.
    let voice = store
        .claim_jobs(Claim {
            node: "other".into(),
            channel: Channel::Voice,
            limit: 10,
            now: now + 60_000_000,
            lease_until: now + 90_000_000,
        })
        .await
        .unwrap();
    assert!(voice.is_empty());
}

async fn concurrent_claimers_never_share_a_job(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let accepts: Vec<_> = (0..200)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.accept(sample_otp(account)).await.unwrap() })
        })
        .collect();
    for a in accepts {
        a.await.unwrap();
    }
    let claimed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let claimed = claimed.clone();
            tokio::spawn(async move {
                loop {
                    let now = now_micros();
                    let jobs = store
                        .claim_jobs(Claim {
                            node: format!("node-{w}"),
                            channel: Channel::Text,
                            limit: 7,
                            now,
                            lease_until: now + 60_000_000,
                        })
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        break;
                    }
                    claimed
                        .lock()
                        .unwrap()
                        .extend(jobs.iter().map(|j| j.job_id));
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let all = claimed.lock().unwrap().clone();
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "jobs claimed twice or missed");
    assert_eq!(unique.len(), 200);
}

/// Claims the one due text job and records it as sent in `parts` parts.
pub(crate) async fn sent_in_parts(
    store: &SharedStore,
    account: i64,
    parts: usize,
    route: &str,
) -> i64 {
    let id = store.accept(sample_otp(account)).await.unwrap().id;
    let now = now_micros();
    let jobs = store
        .claim_jobs(otp_store::Claim {
            node: "t".into(),
            channel: Channel::Text,
            limit: 1,
            now,
            lease_until: now + 60_000_000,
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    store
        .finish_jobs(vec![otp_store::JobResult {
            job_id: jobs[0].job_id,
            otp_id: id,
            outcome: otp_store::JobOutcome::Sent {
                route: Some(route.into()),
                message_ids: (1..=parts).map(|p| format!("{id}-{p}")).collect(),
            },
            at: now_micros(),
        }])
        .await
        .unwrap();
    id
}

async fn delivered(store: &SharedStore, route: &str, message_id: String) -> Option<i64> {
    store
        .record_receipts(vec![otp_store::Receipt {
            route: route.into(),
            message_ids: vec![message_id],
            status: Some(otp_store::OtpStatus::Delivered),
            state: "DELIVRD".into(),
            error_code: None,
            at: now_micros(),
        }])
        .await
        .unwrap()[0]
}

async fn a_message_is_delivered_when_its_last_part_is(backend: Backend) {
    let (store, _dir, account) = bare_store(backend).await;
    let status = |id: i64| {
        let store = store.clone();
        async move { store.otp(account, id).await.unwrap().unwrap().status }
    };
    let single = sent_in_parts(&store, account, 1, "r").await;
    assert_eq!(
        delivered(&store, "r", format!("{single}-1")).await,
        Some(single)
    );
    assert_eq!(status(single).await, otp_store::OtpStatus::Delivered);

    let long = sent_in_parts(&store, account, 3, "r").await;
    for part in 1..=2 {
        assert_eq!(
            delivered(&store, "r", format!("{long}-{part}")).await,
            Some(long)
        );
        assert_eq!(
            status(long).await,
            otp_store::OtpStatus::Sent,
            "part {part} of 3"
        );
    }
    assert_eq!(
        delivered(&store, "r", format!("{long}-3")).await,
        Some(long)
    );
    assert_eq!(status(long).await, otp_store::OtpStatus::Delivered);
}

/// A carrier that gives one id twice (an SMSC that restarted its counter):
/// both sends are recorded in one batch, and the later one takes the id, so
/// its receipt lands there. PostgreSQL refused the whole batch (one statement
/// may not update a row twice), and its recorder retried it forever.
async fn a_batch_where_the_carrier_gave_one_id_twice_is_recorded_and_the_later_send_takes_it(
    backend: Backend,
) {
    let (store, _dir, account) = bare_store(backend).await;
    let first = store.accept(sample_otp(account)).await.unwrap().id;
    let second = store.accept(sample_otp(account)).await.unwrap().id;
    let now = now_micros();
    let jobs = claim_text(&store, "t", now, now + 60_000_000).await;
    assert_eq!(jobs.len(), 2);
    let sent = |job: &ClaimedJob| otp_store::JobResult {
        job_id: job.job_id,
        otp_id: job.otp.id,
        outcome: otp_store::JobOutcome::Sent {
            route: Some("r".into()),
            message_ids: vec!["reused".into()],
        },
        at: now_micros(),
    };
    let in_order: Vec<_> = [first, second]
        .iter()
        .map(|id| sent(jobs.iter().find(|j| j.otp.id == *id).unwrap()))
        .collect();
    store.finish_jobs(in_order).await.unwrap();
    for id in [first, second] {
        let otp = store.otp(account, id).await.unwrap().unwrap();
        assert_eq!(otp.status, OtpStatus::Sent, "OTP {id}");
        assert_eq!(otp.provider_message_id.as_deref(), Some("reused"));
    }
    assert_eq!(delivered(&store, "r", "reused".into()).await, Some(second));
    let status = |id| {
        let store = store.clone();
        async move { store.otp(account, id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(second).await, OtpStatus::Delivered);
    assert_eq!(status(first).await, OtpStatus::Sent);
}

for_each_backend!(
    a_batch_where_the_carrier_gave_one_id_twice_is_recorded_and_the_later_send_takes_it,
    transient_failures_retry_then_fail,
    permanent_failures_stop_at_once,
    a_worker_step_claims_its_free_slots_and_as_many_again_and_runs_no_more_than_the_slots,
    a_worker_started_after_the_stop_claims_nothing_and_returns,
    sends_handed_to_the_worker_run_without_a_claim_within_its_slots,
    a_stopped_worker_finishes_and_records_the_deliveries_in_flight,
    a_dead_nodes_lease_runs_out_and_its_job_is_taken_again,
    concurrent_claimers_never_share_a_job,
    a_message_is_delivered_when_its_last_part_is
);
