//! The guard's holds: one open hold per key, placed once however many
//! nodes judge the same burst; extended only forward; released once; an
//! ended hold makes way for a new one; and the three reads at the guard's
//! edges.

use otp_domain::phone::PhoneNumber;
use otp_store::guard::{HoldScope, NewHold};
use otp_store::test_support::sample_otp;
use otp_store::{IdempotencyKey, VerifyOutcome, VerifyRequest, now_micros};

use crate::{claim_at, sent};

const MINUTE: i64 = 60_000_000;

fn hold(account: Option<i64>, at: i64) -> NewHold {
    NewHold {
        scope: HoldScope::Prefix,
        value: "+977984".into(),
        account_id: account,
        reason: "a burst".into(),
        volume: 250,
        conversion_ppm: 0,
        baseline_ppm: 800_000,
        at,
        until: at + 15 * MINUTE,
    }
}

crate::contract! {
    async fn a_key_has_one_open_hold_and_concurrent_placers_get_the_same_one(store) {
        let now = now_micros();
        let placers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.store.clone();
                tokio::spawn(async move { store.place_hold(hold(None, now)).await.unwrap() })
            })
            .collect();
        let mut placed = Vec::new();
        for p in placers {
            placed.push(p.await.unwrap());
        }
        assert_eq!(placed.iter().filter(|(_, created)| *created).count(), 1);
        assert!(placed.iter().all(|(h, _)| h.id == placed[0].0.id));
        let first = &placed[0].0;
        assert_eq!(first.account_id, None);
        assert_eq!(first.scope, HoldScope::Prefix);
        assert!(first.is_active(now));

        // Another account's key is another hold.
        let (own, created) = store.place_hold(hold(Some(7), now)).await.unwrap();
        assert!(created);
        assert_ne!(own.id, first.id);
        assert_eq!(own.account_id, Some(7));

        let listed = store.guard_holds(now).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, own.id, "newest first");
    }

    async fn a_hold_is_extended_forward_only_and_an_ended_one_makes_way(store) {
        let now = now_micros();
        let (h, _) = store.place_hold(hold(None, now)).await.unwrap();
        store.extend_hold(h.id, h.until + MINUTE).await.unwrap();
        store.extend_hold(h.id, h.until - MINUTE).await.unwrap();
        let listed = store.guard_holds(now).await.unwrap();
        assert_eq!(listed[0].until, h.until + MINUTE);

        // After it ended, the same key takes a new hold.
        let later = h.until + 2 * MINUTE;
        let (next, created) = store.place_hold(hold(None, later)).await.unwrap();
        assert!(created);
        assert_ne!(next.id, h.id);
        // The ended one is listed while it is recent, not after.
        assert_eq!(store.guard_holds(h.until).await.unwrap().len(), 2);
        assert_eq!(store.guard_holds(next.until + MINUTE).await.unwrap().len(), 1);
    }

    async fn a_hold_is_released_once_and_its_key_can_be_held_again(store) {
        let now = now_micros();
        let (h, _) = store.place_hold(hold(Some(3), now)).await.unwrap();
        let released = store.release_hold(h.id, "cli", now + 1).await.unwrap().unwrap();
        assert_eq!(released.released_at, Some(now + 1));
        assert_eq!(released.released_by.as_deref(), Some("cli"));
        assert!(!released.is_active(now + 2));
        assert!(store.release_hold(h.id, "cli", now + 2).await.unwrap().is_none());
        assert!(store.release_hold(h.id + 100, "cli", now).await.unwrap().is_none());
        let (again, created) = store.place_hold(hold(Some(3), now + 3)).await.unwrap();
        assert!(created);
        assert_ne!(again.id, h.id);
        // An ended hold cannot be released.
        let ended = again.until + 1;
        assert!(store.release_hold(again.id, "cli", ended).await.unwrap().is_none());
    }

    async fn receipts_find_where_their_otps_went_and_a_keyed_send_is_found_again(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let key = IdempotencyKey { key: "k-1".into(), body_hash: vec![1, 2, 3] };
        let accepted = store
            .accept_once(sample_otp(account.id), Some(key.clone()))
            .await
            .unwrap();
        let found = store.otp_destinations(vec![accepted.id, accepted.id + 50]).await.unwrap();
        assert_eq!(found, vec![(accepted.id, account.id, "+9779851023212".to_owned())]);

        let since = now_micros() - 60 * MINUTE;
        let (hash, first) = store
            .idempotent_send(account.id, "k-1".into(), since)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hash, vec![1, 2, 3]);
        assert_eq!(first, accepted);
        assert!(store.idempotent_send(account.id, "k-2".into(), since).await.unwrap().is_none());
        assert!(store.idempotent_send(account.id + 1, "k-1".into(), since).await.unwrap().is_none());
    }

    async fn a_number_is_proven_by_a_verified_code_or_a_delivery_of_the_same_account(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let other = store.create_account("other", 10, 0).await.unwrap();
        let to = |number: &str| otp_store::NewOtp {
            number: PhoneNumber::parse(number).unwrap(),
            ..sample_otp(account.id)
        };
        let verified = store.accept(to("9851023212")).await.unwrap();
        let delivered = store.accept(to("9851023213")).await.unwrap();
        store.accept(to("9851023214")).await.unwrap();

        let jobs = claim_at(&store, now_micros()).await;
        let job = |id: i64| jobs.iter().find(|j| j.otp.id == id).unwrap();
        sent(&store, job(delivered.id), "smsc", &["m1"]).await;
        store
            .record_receipts(vec![otp_store::test_support::delivered_receipt("smsc", "m1", now_micros())])
            .await
            .unwrap();
        let outcome = store
            .verify(VerifyRequest {
                account_id: account.id,
                phone_number: None,
                otp_id: Some(verified.id),
                api_key_id: None,
                code: otp_store::test_support::SAMPLE_CODE.into(),
                max_attempts: 5,
                now: now_micros(),
            })
            .await
            .unwrap();
        assert!(matches!(outcome, VerifyOutcome::Verified { .. }), "{outcome:?}");

        let proven = |account: i64, e164: &str, delivered: bool| {
            let store = store.store.clone();
            let e164 = e164.to_owned();
            async move { store.proven_number(account, e164, delivered).await.unwrap() }
        };
        // A verified code proves its number for either signal.
        assert!(proven(account.id, "+9779851023212", false).await);
        assert!(proven(account.id, "+9779851023212", true).await);
        // A delivery proves it only for an account judged on deliveries.
        assert!(!proven(account.id, "+9779851023213", false).await);
        assert!(proven(account.id, "+9779851023213", true).await);
        // A send that was neither, a number never sent to, another account.
        assert!(!proven(account.id, "+9779851023214", true).await);
        assert!(!proven(account.id, "+9779851023215", true).await);
        assert!(!proven(other.id, "+9779851023212", true).await);
    }
}
