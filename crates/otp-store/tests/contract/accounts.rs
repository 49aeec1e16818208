//! Accounts and their credits, and the operator's view across accounts.

use otp_store::{AllOtpsQuery, OtpStatus};

use crate::admission::sms;

crate::contract! {
    async fn an_account_starts_with_the_credits_it_was_given(store) {
        let account = store.create_account("acme", 10, 3).await.unwrap();
        assert_eq!((account.sms_credits, account.phone_credits, account.otp_count), (10, 3, 0));
        let read = store.account(account.id).await.unwrap().expect("the account is found");
        assert_eq!(read, account);
    }

    async fn a_top_up_adds_to_the_balance_and_to_the_ledger(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let after = store.add_credits(account.id, 5, 2, "invoice 7").await.unwrap();
        assert_eq!((after.sms_credits, after.phone_credits), (15, 2));
        let ledger = store.ledger(account.id).await.unwrap();
        let deltas: Vec<(i64, i64)> = ledger.iter().map(|e| (e.sms_delta, e.phone_delta)).collect();
        assert!(deltas.contains(&(5, 2)), "{ledger:?}");
    }

    async fn the_recent_ledger_is_the_newest_entries_newest_first(store) {
        let account = store.create_account("acme", 0, 0).await.unwrap();
        for n in 1..=4 {
            store.add_credits(account.id, n, 0, &format!("top-up {n}")).await.unwrap();
        }
        let recent = store.recent_ledger(account.id, 3).await.unwrap();
        let notes: Vec<_> = recent.iter().map(|e| e.note.clone().unwrap()).collect();
        assert_eq!(notes, ["top-up 4", "top-up 3", "top-up 2"]);
        let other = store.create_account("other", 0, 0).await.unwrap();
        let theirs = store.recent_ledger(other.id, 3).await.unwrap();
        assert!(theirs.iter().all(|e| e.account_id == other.id), "{theirs:?}");
    }

    async fn every_accounts_otps_are_listed_newest_first_by_number_id_and_status(store) {
        let a = store.create_account("a", 10, 0).await.unwrap();
        let b = store.create_account("b", 10, 0).await.unwrap();
        let first = store.accept(sms(a.id, 1)).await.unwrap().id;
        let second = store.accept(sms(b.id, 2)).await.unwrap().id;
        let third = store.accept(sms(b.id, 1)).await.unwrap().id;
        let ids = |q: AllOtpsQuery| {
            let store = &store;
            async move {
                let q = AllOtpsQuery { limit: q.limit.max(1), ..q };
                store.list_all_otps(&q).await.unwrap().iter().map(|o| o.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(AllOtpsQuery { limit: 10, ..Default::default() }).await, [third, second, first]);
        let number = store.list_all_otps(&AllOtpsQuery { id: Some(first), limit: 1, ..Default::default() })
            .await.unwrap()[0].number.display().to_owned();
        assert_eq!(
            ids(AllOtpsQuery { phone_number: Some(number), limit: 10, ..Default::default() }).await,
            [third, first],
            "both accounts' OTPs to the number"
        );
        assert_eq!(ids(AllOtpsQuery { id: Some(second), limit: 10, ..Default::default() }).await, [second]);
        assert_eq!(ids(AllOtpsQuery { before_id: Some(third), limit: 1, ..Default::default() }).await, [second]);
        assert!(ids(AllOtpsQuery { status: Some(OtpStatus::Verified), limit: 10, ..Default::default() }).await.is_empty());
        assert_eq!(
            ids(AllOtpsQuery { status: Some(OtpStatus::Queued), limit: 10, ..Default::default() }).await.len(),
            3
        );
    }
}
