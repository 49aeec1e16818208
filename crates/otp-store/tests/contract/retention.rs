//! What the purge removes, when, and what it leaves.

use otp_domain::channel::Channel;
use otp_store::guard::{HoldScope, NewHold};
use otp_store::{
    AccountId, Claim, IdempotencyKey, JobOutcome, JobResult, LoginPolicy, Micros, PurgeReport,
    RetentionRules, now_micros,
};

use crate::Fresh;
use crate::webhooks::{SECOND, send};

fn rules(now: Micros, otps_before: Option<Micros>, chunk: usize) -> RetentionRules {
    RetentionRules {
        now,
        otps_before,
        idempotency_before: i64::MIN,
        login_windows_ended: i64::MIN,
        chunk,
    }
}

/// Sends the `(created_at, lives)` codes to `account`, and hands every one
/// to a carrier at `sent_at`, so none waits in the delivery queue.
async fn sent(
    store: &Fresh,
    account: AccountId,
    codes: &[(Micros, Micros)],
    sent_at: Micros,
) -> Vec<i64> {
    let mut ids = Vec::new();
    for (n, (created_at, lives)) in codes.iter().enumerate() {
        ids.push(
            store
                .accept(send(account, n as u32, *created_at, *lives))
                .await
                .unwrap()
                .id,
        );
    }
    let jobs = store
        .claim_jobs(Claim {
            node: "node-a".into(),
            channel: Channel::Text,
            limit: 100,
            now: now_micros(),
            lease_until: now_micros() + 30 * SECOND,
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), codes.len());
    let results = jobs
        .iter()
        .map(|j| JobResult {
            job_id: j.job_id,
            otp_id: j.otp.id,
            outcome: JobOutcome::Sent {
                route: None,
                message_ids: vec![format!("m{}", j.otp.id)],
            },
            at: sent_at,
        })
        .collect();
    store.finish_jobs(results).await.unwrap();
    ids
}

crate::contract! {
    async fn old_idempotency_records_and_ended_login_windows_go_chunk_by_chunk(store) {
        let now = now_micros();
        let account = store.create_account("acme", 10, 0).await.unwrap();
        for n in 0..4u32 {
            let created_at = if n < 3 { now - 100 * SECOND } else { now };
            let key = IdempotencyKey { key: format!("k{n}"), body_hash: vec![n as u8] };
            store.accept_once(send(account.id, n, created_at, 600 * SECOND), Some(key)).await.unwrap();
        }
        let login = LoginPolicy { max_attempts: 5, max_per_address: 5, max_global: 0, window: 60 * SECOND, now };
        for email in ["a@b.np", "c@d.np", "e@f.np"] {
            store.count_login_attempt(email, Some("10.0.0.1"), login).await.unwrap();
        }
        let report = store
            .purge_expired_rows(RetentionRules {
                idempotency_before: now - 50 * SECOND,
                login_windows_ended: now,
                ..rules(now, None, 2)
            })
            .await
            .unwrap();
        assert_eq!(report, PurgeReport { otps: 0, idempotency: 3, login_counters: 4, guard_holds: 0 });
        let again = store
            .purge_expired_rows(RetentionRules {
                idempotency_before: now,
                login_windows_ended: now - 1,
                ..rules(now, None, 2)
            })
            .await
            .unwrap();
        assert!(again.is_empty(), "{again:?}");
        let repeat = store
            .accept_once(
                send(account.id, 3, now, 600 * SECOND),
                Some(IdempotencyKey { key: "k3".into(), body_hash: vec![3] }),
            )
            .await;
        assert!(matches!(repeat, Err(otp_store::AcceptError::Replayed(_))), "{repeat:?}");
    }

    async fn ended_guard_holds_go_with_the_otps_and_active_ones_stay(store) {
        let now = now_micros();
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let hold = |value: &str, at: Micros, until: Micros| NewHold {
            scope: HoldScope::Prefix,
            value: value.into(),
            account_id: Some(account.id),
            reason: "test".into(),
            volume: 100,
            conversion_ppm: 0,
            baseline_ppm: 800_000,
            at,
            until,
        };
        let old = now - 1000 * SECOND;
        let (ended, _) = store.place_hold(hold("+977984", old, old + 10 * SECOND)).await.unwrap();
        let (released, _) = store.place_hold(hold("+977980", old, now + 900 * SECOND)).await.unwrap();
        store.release_hold(released.id, "ops", now - 10 * SECOND).await.unwrap().unwrap();
        let (active, _) = store.place_hold(hold("+977986", now, now + 900 * SECOND)).await.unwrap();

        // OTPs kept for ever: so are holds.
        let report = store.purge_expired_rows(rules(now, None, 10)).await.unwrap();
        assert_eq!(report.guard_holds, 0);
        let report = store.purge_expired_rows(rules(now, Some(now - 500 * SECOND), 1)).await.unwrap();
        assert_eq!(report.guard_holds, 1, "{report:?}");
        let left: Vec<i64> = store.guard_holds(i64::MIN).await.unwrap().iter().map(|h| h.id).collect();
        assert!(!left.contains(&ended.id), "{left:?}");
        assert!(left.contains(&released.id) && left.contains(&active.id), "{left:?}");
        // Once its release is past the cutoff too, the released hold goes.
        let report = store.purge_expired_rows(rules(now, Some(now + 1000 * SECOND), 1)).await.unwrap();
        assert_eq!(report.guard_holds, 2, "{report:?}");
        assert!(store.guard_holds(i64::MIN).await.unwrap().is_empty());
    }

    async fn old_otps_go_oldest_first_up_to_the_first_that_must_stay(store) {
        let now = now_micros();
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let old = now - 1000 * SECOND;
        let ids = sent(
            &store,
            account.id,
            &[(old, 60 * SECOND), (old + 1, 60 * SECOND), (old + 2, 2000 * SECOND), (old + 3, 60 * SECOND)],
            old + 10 * SECOND,
        )
        .await;
        let report = store.purge_expired_rows(rules(now, Some(now - 500 * SECOND), 1)).await.unwrap();
        assert_eq!(report, PurgeReport { otps: 2, idempotency: 0, login_counters: 0, guard_holds: 0 });
        let mut left = Vec::new();
        for id in &ids {
            left.push(store.otp(account.id, *id).await.unwrap().is_some());
        }
        assert_eq!(left, [false, false, true, true]);
        let kept = store.account(account.id).await.unwrap().unwrap();
        assert_eq!((kept.sms_credits, kept.otp_count), (6, 4));
        assert_eq!(store.ledger(account.id).await.unwrap().len(), 5);
        let later = store.purge_expired_rows(rules(now + 2000 * SECOND, Some(now), 10)).await.unwrap();
        assert_eq!(later.otps, 2);
        for id in &ids {
            assert!(store.otp(account.id, *id).await.unwrap().is_none());
        }
    }

    async fn otps_changed_after_the_cutoff_or_without_a_cutoff_stay(store) {
        let now = now_micros();
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let old = now - 1000 * SECOND;
        let ids = sent(&store, account.id, &[(old, 60 * SECOND)], now - 10 * SECOND).await;
        assert!(store.purge_expired_rows(rules(now, None, 10)).await.unwrap().is_empty());
        let recent = store.purge_expired_rows(rules(now, Some(now - 500 * SECOND), 10)).await.unwrap();
        assert!(recent.is_empty(), "{recent:?}");
        assert!(store.otp(account.id, ids[0]).await.unwrap().is_some());
    }
}
