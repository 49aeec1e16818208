//! Which sends are accepted: credits, idempotency keys, resends and the send
//! limits, decided by `admission::decide` and written by each backend.

use otp_domain::channel::{Channel, OtpOption};
use otp_domain::credits::Cost;
use otp_domain::phone::PhoneNumber;
use otp_store::test_support::sample_otp;
use otp_store::webhooks::{DeliveryQuery, SetWebhook, WebhookEvent};
use otp_store::{
    AcceptError, AccountId, IDEMPOTENCY_TTL, IdempotencyKey, LimitKind, Micros, NewApiKey, NewOtp,
    ResendOf, Scopes, SendLimits, Store,
};

const SECOND: Micros = 1_000_000;

/// An SMS send of one credit to `number` (the last digit of a Nepali mobile
/// number), sent now.
pub(crate) fn sms(account: AccountId, number: u8) -> NewOtp {
    let sample = sample_otp(account);
    let day = sample.created_at.div_euclid(86_400 * SECOND);
    NewOtp {
        number: PhoneNumber::parse(&format!("985102321{number}")).unwrap(),
        otp_option: OtpOption::Generated,
        spend_day: day,
        spend_day_ends: (day + 1) * 86_400 * SECOND,
        ..sample
    }
}

fn key(name: &str, body: u8) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: name.into(),
        body_hash: vec![body; 32],
    })
}

async fn api_key(store: &dyn Store, account: AccountId) -> i64 {
    store
        .create_key(NewApiKey {
            key_id: format!("k{account}abcdefghij"),
            account_id: account,
            secret_hash: [7; 32],
            label: None,
            scopes: Scopes::DEFAULT,
        })
        .await
        .unwrap()
        .id
}

fn limited(result: Result<otp_store::Accepted, AcceptError>) -> Option<LimitKind> {
    match result {
        Err(AcceptError::RateLimited { limit, .. }) => Some(limit),
        _ => None,
    }
}

async fn balance(store: &dyn Store, account: AccountId) -> (i64, i64) {
    let a = store.account(account).await.unwrap().unwrap();
    (a.sms_credits, a.otp_count)
}

crate::contract! {
    async fn credits_never_go_below_zero_however_the_sends_are_batched(store) {
        let account = store.create_account("acme", 40, 0).await.unwrap().id;
        let sends = (0..60).map(|i| {
            let store = store.store.clone();
            tokio::spawn(async move { store.accept(sms(account, (i % 10) as u8)).await })
        });
        let mut accepted = Vec::new();
        let mut short = 0;
        for send in sends.collect::<Vec<_>>() {
            match send.await.unwrap() {
                Ok(a) => accepted.push(a),
                Err(AcceptError::InsufficientCredits { sms_credits: 0, .. }) => short += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((accepted.len(), short), (40, 20));
        let mut seqs: Vec<i64> = accepted.iter().map(|a| a.account_seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "each accepted send has its own number");
        assert_eq!(balance(store.as_ref(), account).await, (0, 40));
        let debits = store.ledger(account).await.unwrap().iter().filter(|e| e.sms_delta == -1).count();
        assert_eq!(debits, 40);
    }

    async fn a_repeated_key_replays_the_first_send_across_batches(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let first = store.accept_once(sms(account, 1), key("order-1", 1)).await.unwrap();
        match store.accept_once(sms(account, 1), key("order-1", 1)).await {
            Err(AcceptError::Replayed(again)) => assert_eq!(again, first),
            other => panic!("{other:?}"),
        }
        assert_eq!(balance(store.as_ref(), account).await, (9, 1), "charged once");
    }

    async fn a_key_older_than_its_ttl_is_new_again_even_beside_an_older_send(store) {
        // Fired together, the two later sends most often share a batch: the
        // key's age is judged for its own send, not for the batch's oldest.
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let first = sms(account, 1);
        let at = first.created_at;
        store.accept_once(first, key("k", 1)).await.unwrap();
        let (before, after) = tokio::join!(
            store.accept(NewOtp { created_at: at + IDEMPOTENCY_TTL - SECOND, ..sms(account, 2) }),
            store.accept_once(NewOtp { created_at: at + IDEMPOTENCY_TTL + SECOND, ..sms(account, 1) }, key("k", 1)),
        );
        before.unwrap();
        let again = after.expect("a day later the key counts as new");
        assert_eq!(again.account_seq, 3);
        match store.accept_once(NewOtp { created_at: at + IDEMPOTENCY_TTL + 2 * SECOND, ..sms(account, 1) }, key("k", 1)).await {
            Err(AcceptError::Replayed(a)) => assert_eq!(a, again, "the key now answers with its new send"),
            other => panic!("{other:?}"),
        }
    }

    async fn concurrent_sends_under_one_key_are_accepted_once_and_all_get_its_answer(store) {
        // Fired together, most land in one batch with the first.
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let sends: Vec<_> = (0..12)
            .map(|_| {
                let store = store.store.clone();
                tokio::spawn(async move { store.accept_once(sms(account, 1), key("k", 1)).await })
            })
            .collect();
        let mut accepted = Vec::new();
        let mut replayed = Vec::new();
        for send in sends {
            match send.await.unwrap() {
                Ok(a) => accepted.push(a),
                Err(AcceptError::Replayed(a)) => replayed.push(a),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        assert_eq!(replayed.len(), 11);
        assert!(replayed.iter().all(|r| *r == accepted[0]), "{replayed:?}");
        assert_eq!(balance(store.as_ref(), account).await, (9, 1));
    }

    async fn a_key_reused_with_another_body_is_refused_in_or_across_batches(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        store.accept_once(sms(account, 1), key("k", 1)).await.unwrap();
        assert!(matches!(
            store.accept_once(sms(account, 1), key("k", 2)).await,
            Err(AcceptError::IdempotencyKeyReused)
        ));
        // Another body fired together with the first of a new key.
        let (a, b) = tokio::join!(
            store.accept_once(sms(account, 2), key("j", 1)),
            store.accept_once(sms(account, 2), key("j", 2)),
        );
        // PostgreSQL may commit either first (batchers run side by side).
        let refused = |r: &Result<otp_store::Accepted, AcceptError>| {
            matches!(r, Err(AcceptError::IdempotencyKeyReused))
        };
        assert!(
            (a.is_ok() && refused(&b)) || (refused(&a) && b.is_ok()),
            "{a:?} {b:?}"
        );
        assert_eq!(balance(store.as_ref(), account).await, (8, 2));
        let other = store.create_account("other", 10, 0).await.unwrap().id;
        assert!(
            store.accept_once(sms(other, 1), key("k", 2)).await.is_ok(),
            "keys are per account"
        );
    }

    async fn a_number_gets_at_most_its_sends_per_window(store) {
        store.set_send_limits(SendLimits {
            per_number_max: 2,
            per_number_window: 600 * SECOND,
            ..SendLimits::default()
        });
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        for _ in 0..2 {
            store.accept(sms(account, 1)).await.unwrap();
        }
        assert_eq!(limited(store.accept(sms(account, 1)).await), Some(LimitKind::Window));
        store.accept(sms(account, 2)).await.expect("another number has its own count");
        assert_eq!(balance(store.as_ref(), account).await, (7, 3), "a refusal costs nothing");
    }

    async fn an_api_key_gets_at_most_its_sends_per_second(store) {
        store.set_send_limits(SendLimits { per_key_rps: 2, ..SendLimits::default() });
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let key_id = api_key(store.as_ref(), account).await;
        let at = (otp_store::now_micros() / SECOND + 5) * SECOND;
        let under_key = |number: u8| NewOtp { api_key_id: Some(key_id), created_at: at, ..sms(account, number) };
        for n in 0..2 {
            store.accept(under_key(n)).await.unwrap();
        }
        assert_eq!(limited(store.accept(under_key(3)).await), Some(LimitKind::KeyRate));
        let later = NewOtp { created_at: at + 2 * SECOND, ..under_key(4) };
        store.accept(later).await.expect("two seconds later the key's window is empty");
        let keyless = NewOtp { created_at: at, ..sms(account, 5) };
        store.accept(keyless).await.expect("a send without the key is not counted against it");
    }

    async fn an_account_gets_at_most_its_sends_per_second(store) {
        store.set_send_limits(SendLimits { per_account_rps: 3, ..SendLimits::default() });
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let other = store.create_account("other", 10, 0).await.unwrap().id;
        let at = (otp_store::now_micros() / SECOND + 5) * SECOND;
        let send = |account: AccountId, number: u8| NewOtp { created_at: at, ..sms(account, number) };
        for n in 0..3 {
            store.accept(send(account, n)).await.unwrap();
        }
        assert_eq!(limited(store.accept(send(account, 3)).await), Some(LimitKind::AccountRate));
        store.accept(send(other, 3)).await.expect("each account has its own rate");
        store.set_account_limits(account, Some(0), None).await.unwrap();
        store.accept(send(account, 4)).await.expect("the account's own 0: no limit");
    }

    async fn an_account_spends_at_most_its_daily_cap(store) {
        let account = store.create_account("acme", 10, 5).await.unwrap().id;
        store.set_account_limits(account, None, Some(3)).await.unwrap();
        store.accept(sms(account, 1)).await.unwrap();
        let call = NewOtp { channel: Channel::Voice, cost: Cost { sms: 0, phone: 2 }, ..sms(account, 2) };
        store.accept(call).await.expect("phone credits count too, up to the cap");
        match store.accept(sms(account, 3)).await {
            Err(AcceptError::RateLimited { limit: LimitKind::DailySpend, retry_after_seconds }) => {
                assert!((1..=86_400).contains(&retry_after_seconds), "{retry_after_seconds}")
            }
            other => panic!("{other:?}"),
        }
        let tomorrow = sms(account, 3);
        let tomorrow = NewOtp {
            spend_day: tomorrow.spend_day + 1,
            spend_day_ends: tomorrow.spend_day_ends + 86_400 * SECOND,
            created_at: tomorrow.spend_day_ends,
            ..tomorrow
        };
        store.accept(tomorrow).await.expect("a new day starts at zero");
        let limits = store.account_limits(account).await.unwrap().unwrap();
        assert_eq!(limits.spent, 1);
    }

    async fn a_resend_joins_a_live_chain_and_is_refused_once_the_code_expired(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap().id;
        let key_id = api_key(store.as_ref(), account).await;
        let first = NewOtp { api_key_id: Some(key_id), ..sms(account, 1) };
        let expires_at = first.created_at + 60 * SECOND;
        let head = store.accept(NewOtp { expires_at, ..first.clone() }).await.unwrap();
        let resend_at = |created_at: Micros| NewOtp {
            created_at,
            resend_of: Some(ResendOf { id: head.id, max_attempts: 3 }),
            ..first.clone()
        };
        let live = store.accept(resend_at(first.created_at + SECOND)).await.unwrap();
        let record = store.otp(account, live.id).await.unwrap().unwrap();
        assert_eq!(record.expires_at, expires_at, "the chain's expiry");
        assert!(matches!(
            store.accept(resend_at(expires_at)).await,
            Err(AcceptError::ResendStale)
        ));
        let unknown = NewOtp {
            resend_of: Some(ResendOf { id: head.id + 1000, max_attempts: 3 }),
            ..first.clone()
        };
        assert!(matches!(store.accept(unknown).await, Err(AcceptError::ResendStale)));
        assert_eq!(balance(store.as_ref(), account).await, (8, 2), "a stale resend costs nothing");
    }

    async fn a_low_balance_event_is_recorded_once_per_fall_below_the_threshold(store) {
        let account = store.create_account("acme", 7, 0).await.unwrap().id;
        store
            .set_webhook(SetWebhook {
                account_id: account,
                url: "https://hooks.example.test/otp".into(),
                new_secret: "a-secret-of-enough-length".into(),
                rotate: true,
                low_balance_sms_credits: Some(Some(5)),
                low_balance_phone_credits: None,
                now: otp_store::now_micros(),
            })
            .await
            .unwrap();
        let mut sent = Vec::new();
        // 7 -> 6 -> 5 -> 4 (falls below 5) -> 3.
        for n in 0..4 {
            sent.push(store.accept(sms(account, n)).await.unwrap().id);
        }
        // A top-up to 6 and two sends: 6 -> 5 -> 4 falls again.
        store.add_credits(account, 3, 0, "top-up").await.unwrap();
        for n in 4..6 {
            sent.push(store.accept(sms(account, n)).await.unwrap().id);
        }
        let deliveries = store
            .webhook_deliveries(DeliveryQuery { account_id: account, limit: 100, before_id: None })
            .await
            .unwrap();
        let mut low: Vec<i64> = deliveries
            .iter()
            .filter(|d| d.event == WebhookEvent::LowBalance)
            .map(|d| d.otp_id)
            .collect();
        low.sort_unstable();
        assert_eq!(low, [sent[2], sent[5]]);
    }
}
