//! Accounts and their credits.

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
}
