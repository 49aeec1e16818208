//! Webhooks: the account's settings, its event deliveries, their claims and
//! attempts, and the events the store records by itself.

use otp_domain::phone::PhoneNumber;
use otp_store::test_support::sample_otp;
use otp_store::webhooks::{
    AttemptOutcome, AttemptResult, ClaimedDelivery, Credits, DeliveryClaim, DeliveryQuery,
    DeliveryState, ExpirySweep, SetWebhook, WebhookDelivery, WebhookEvent,
};
use otp_store::{Accepted, AccountId, Micros, NewOtp, StoreError, VerifyOutcome, VerifyRequest};

use crate::Fresh;

pub const SECOND: Micros = 1_000_000;

/// A one-credit SMS of code "482193" to a number of its own (`n`), sent at
/// `created_at` and verifiable for `lives`.
pub fn send(account_id: AccountId, n: u32, created_at: Micros, lives: Micros) -> NewOtp {
    NewOtp {
        number: PhoneNumber::parse(&format!("98510{n:05}")).unwrap(),
        created_at,
        expires_at: created_at + lives,
        ..sample_otp(account_id)
    }
}

fn hook(account_id: AccountId, secret: &str, rotate: bool, now: Micros) -> SetWebhook {
    SetWebhook {
        account_id,
        url: format!("https://hooks.example/{secret}"),
        new_secret: secret.into(),
        rotate,
        low_balance_sms_credits: None,
        low_balance_phone_credits: None,
        now,
    }
}

/// An account `name` with a webhook and `n` verified codes: `n` pending `verified`
/// deliveries, due at `now`.
async fn verified(store: &Fresh, name: &str, n: u32, now: Micros) -> (AccountId, Vec<Accepted>) {
    let account = store.create_account(name, 100, 0).await.unwrap();
    store
        .set_webhook(hook(account.id, "whsec_1", false, now))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..n {
        let accepted = store
            .accept(send(account.id, i, now, 600 * SECOND))
            .await
            .unwrap();
        let outcome = store
            .verify(otp_store::test_support::verify_sample(
                account.id,
                accepted.id,
                now,
            ))
            .await
            .unwrap();
        assert!(
            matches!(outcome, VerifyOutcome::Verified { .. }),
            "{outcome:?}"
        );
        sent.push(accepted);
    }
    (account.id, sent)
}

fn claim(now: Micros, limit: usize, per_account: usize) -> DeliveryClaim {
    DeliveryClaim {
        node: "node-a".into(),
        limit,
        now,
        lease_until: now + 30 * SECOND,
        per_account,
    }
}

fn result(c: &ClaimedDelivery, at: Micros, outcome: AttemptOutcome) -> AttemptResult {
    AttemptResult {
        delivery_id: c.id,
        attempt: c.attempt,
        at,
        duration_us: 250,
        status_code: Some(500),
        error: Some("HTTP 500".into()),
        outcome,
    }
}

async fn deliveries(store: &Fresh, account_id: AccountId) -> Vec<WebhookDelivery> {
    store
        .webhook_deliveries(DeliveryQuery {
            account_id,
            limit: 50,
            before_id: None,
        })
        .await
        .unwrap()
}

crate::contract! {
    async fn a_webhook_keeps_its_secret_unless_rotated_and_needs_its_account(store) {
        let account = store.create_account("acme", 0, 0).await.unwrap();
        let first = store.set_webhook(hook(account.id, "whsec_1", false, 10)).await.unwrap();
        assert_eq!(first.secret.as_deref(), Some("whsec_1"));
        assert_eq!((first.created_at, first.updated_at), (10, 10));
        let kept = store.set_webhook(hook(account.id, "whsec_2", false, 20)).await.unwrap();
        assert_eq!(kept.secret.as_deref(), Some("whsec_1"));
        assert_eq!(kept.url, "https://hooks.example/whsec_2");
        assert_eq!((kept.created_at, kept.updated_at), (10, 20));
        let rotated = store.set_webhook(hook(account.id, "whsec_3", true, 30)).await.unwrap();
        assert_eq!(rotated.secret.as_deref(), Some("whsec_3"));
        assert_eq!(store.webhook(account.id).await.unwrap(), Some(rotated));
        let missing = store.set_webhook(hook(account.id + 1000, "whsec_4", false, 40)).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    }

    async fn a_threshold_left_out_is_kept_and_one_cleared_goes_back_to_the_configured_one(store) {
        let account = store.create_account("acme", 0, 0).await.unwrap();
        let set = |sms, phone| SetWebhook {
            low_balance_sms_credits: sms,
            low_balance_phone_credits: phone,
            ..hook(account.id, "whsec_1", false, 10)
        };
        let both = store.set_webhook(set(Some(Some(50)), Some(Some(5)))).await.unwrap();
        assert_eq!((both.low_balance_sms_credits, both.low_balance_phone_credits), (Some(50), Some(5)));
        let kept = store.set_webhook(set(None, Some(None))).await.unwrap();
        assert_eq!((kept.low_balance_sms_credits, kept.low_balance_phone_credits), (Some(50), None));
    }

    async fn removing_a_webhook_cancels_its_pending_deliveries(store) {
        let now = otp_store::now_micros();
        let (account, _) = verified(&store, "acme", 1, now).await;
        assert!(store.delete_webhook(account, now + SECOND).await.unwrap());
        assert!(!store.delete_webhook(account, now + SECOND).await.unwrap());
        let list = deliveries(&store, account).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DeliveryState::Cancelled);
        assert_eq!(list[0].finished_at, Some(now + SECOND));
        assert_eq!(list[0].next_attempt_at, None);
        assert!(store.claim_webhook_deliveries(claim(now + SECOND, 10, 10)).await.unwrap().is_empty());
    }

    async fn a_retried_delivery_waits_for_its_time_and_a_given_up_one_fails_when_its_attempt_ends(store) {
        let now = otp_store::now_micros();
        let (account, sent) = verified(&store, "acme", 1, now).await;
        let first = store.claim_webhook_deliveries(claim(now, 10, 10)).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].event, first[0].attempt, first[0].otp.id), (WebhookEvent::Verified, 1, sent[0].id));
        assert_eq!(first[0].secret.as_deref(), Some("whsec_1"));
        let retry_at = now + 10 * SECOND;
        store
            .finish_webhook_deliveries(vec![result(&first[0], now, AttemptOutcome::Retry { next_attempt_at: retry_at })])
            .await
            .unwrap();
        let pending = &deliveries(&store, account).await[0];
        assert_eq!((pending.state, pending.next_attempt_at, pending.finished_at), (DeliveryState::Pending, Some(retry_at), None));
        assert!(store.claim_webhook_deliveries(claim(retry_at - 1, 10, 10)).await.unwrap().is_empty());
        let second = store.claim_webhook_deliveries(claim(retry_at, 10, 10)).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].attempt, 2);
        store
            .finish_webhook_deliveries(vec![result(&second[0], retry_at, AttemptOutcome::GiveUp)])
            .await
            .unwrap();
        let failed = &deliveries(&store, account).await[0];
        assert_eq!((failed.state, failed.next_attempt_at, failed.finished_at), (DeliveryState::Failed, None, Some(retry_at + 250)));
        let attempts: Vec<(i64, i64, Option<i64>)> =
            failed.attempts.iter().map(|a| (a.attempt, a.at, a.status_code)).collect();
        assert_eq!(attempts, [(1, now, Some(500)), (2, retry_at, Some(500))]);
        assert!(store.claim_webhook_deliveries(claim(retry_at + 100 * SECOND, 10, 10)).await.unwrap().is_empty());
    }

    async fn a_delivered_delivery_is_done_and_a_cancelled_one_stays_cancelled(store) {
        let now = otp_store::now_micros();
        let (account, _) = verified(&store, "acme", 2, now).await;
        let claimed = store.claim_webhook_deliveries(claim(now, 10, 10)).await.unwrap();
        assert_eq!(claimed.len(), 2);
        store.delete_webhook(account, now).await.unwrap();
        store
            .finish_webhook_deliveries(vec![
                result(&claimed[0], now, AttemptOutcome::Delivered),
                result(&claimed[1], now, AttemptOutcome::Retry { next_attempt_at: now + SECOND }),
            ])
            .await
            .unwrap();
        let states: Vec<DeliveryState> = deliveries(&store, account).await.iter().map(|d| d.state).collect();
        assert_eq!(states, [DeliveryState::Cancelled; 2]);
        let (other, _) = verified(&store, "other", 1, now).await;
        let c = store.claim_webhook_deliveries(claim(now, 10, 10)).await.unwrap();
        store.finish_webhook_deliveries(vec![result(&c[0], now, AttemptOutcome::Delivered)]).await.unwrap();
        let done = &deliveries(&store, other).await[0];
        assert_eq!((done.state, done.finished_at, done.next_attempt_at), (DeliveryState::Delivered, Some(now + 250), None));
    }

    async fn a_claim_hands_out_no_more_of_one_account_than_its_bound_counting_leased_ones(store) {
        let now = otp_store::now_micros();
        let (_, sent) = verified(&store, "acme", 3, now).await;
        let first = store.claim_webhook_deliveries(claim(now, 10, 2)).await.unwrap();
        let ids: Vec<i64> = first.iter().map(|c| c.otp.id).collect();
        assert_eq!(ids, [sent[0].id, sent[1].id]);
        assert!(store.claim_webhook_deliveries(claim(now, 10, 2)).await.unwrap().is_empty());
        store.finish_webhook_deliveries(vec![result(&first[0], now, AttemptOutcome::Delivered)]).await.unwrap();
        let next = store.claim_webhook_deliveries(claim(now, 10, 2)).await.unwrap();
        assert_eq!(next.iter().map(|c| c.otp.id).collect::<Vec<_>>(), [sent[2].id]);
    }

    async fn an_unverified_code_is_reported_expired_once_by_the_sweep(store) {
        let now = otp_store::now_micros();
        let account = store.create_account("acme", 10, 0).await.unwrap();
        store.set_webhook(hook(account.id, "whsec_1", false, now - 120 * SECOND)).await.unwrap();
        let sent_at = now - 100 * SECOND;
        let gone = store.accept(send(account.id, 1, sent_at, 30 * SECOND)).await.unwrap();
        store.accept(send(account.id, 2, sent_at, 600 * SECOND)).await.unwrap();
        let used = store.accept(send(account.id, 3, sent_at, 30 * SECOND)).await.unwrap();
        store.accept(send(account.id, 4, sent_at, 15 * SECOND)).await.unwrap();
        let outcome = store
            .verify(VerifyRequest {
                account_id: account.id,
                phone_number: None,
                otp_id: Some(used.id),
                api_key_id: None,
                code: "482193".into(),
                max_attempts: 3,
                now: now - 90 * SECOND,
            })
            .await
            .unwrap();
        assert!(matches!(outcome, VerifyOutcome::Verified { .. }), "{outcome:?}");
        let sweep = ExpirySweep {
            now,
            expired_until: now - SECOND,
            longest_expiry: 600 * SECOND,
            not_before: now - 80 * SECOND,
        };
        assert_eq!(store.sweep_expired(sweep).await.unwrap(), 1);
        assert_eq!(store.sweep_expired(sweep).await.unwrap(), 0);
        let list = deliveries(&store, account.id).await;
        let expired: Vec<(i64, &str, i64, Option<i64>)> = list
            .iter()
            .filter(|d| d.event == WebhookEvent::Expired)
            .map(|d| (d.otp_id, d.otp_status.as_str(), d.occurred_at, d.next_attempt_at))
            .collect();
        assert_eq!(expired, [(gone.id, "expired", now - 70 * SECOND, Some(now))]);
    }

    async fn a_send_that_takes_the_balance_below_the_accounts_threshold_is_reported_once(store) {
        let now = otp_store::now_micros();
        let account = store.create_account("acme", 6, 0).await.unwrap();
        store
            .set_webhook(SetWebhook {
                low_balance_sms_credits: Some(Some(5)),
                ..hook(account.id, "whsec_1", false, now)
            })
            .await
            .unwrap();
        let mut sent = Vec::new();
        for n in 0..3 {
            sent.push(store.accept(send(account.id, n, now, 600 * SECOND)).await.unwrap());
        }
        let claimed = store.claim_webhook_deliveries(claim(now, 10, 10)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].event, claimed[0].otp.id), (WebhookEvent::LowBalance, sent[1].id));
        let balance = claimed[0].balance.expect("a low_balance event reports the balance");
        assert_eq!(
            (balance.credits, balance.threshold, balance.sms_credits, balance.phone_credits),
            (Credits::Sms, 5, 4, 0)
        );
    }
}
