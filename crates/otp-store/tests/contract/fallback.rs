//! An account's default fallback call: set and read back with the account,
//! resolved by the accepting transaction, its credits reserved with the send.

use otp_domain::channel::Voice;
use otp_store::{
    AcceptError, AccountFallback, FallbackState, NewFallback, NewOtp, SendFallback, VerifyOutcome,
};

use crate::admission::sms;

/// `sms` asking for its account's default, whose call would reserve one
/// phone credit.
fn asking_default(account: i64, number: u8) -> NewOtp {
    NewOtp {
        fallback: SendFallback::AccountDefault { phone_credits: 1 },
        ..sms(account, number)
    }
}

crate::contract! {
    async fn whether_an_otp_is_verified_is_read_for_its_own_account_only(store) {
        let account = store.create_account("acme", 10, 10).await.unwrap();
        let other = store.create_account("other", 10, 10).await.unwrap();
        let sent = store.accept(sms(account.id, 1)).await.unwrap();
        assert_eq!(store.otp_verified(account.id, sent.id).await.unwrap(), Some(false));
        assert_eq!(store.otp_verified(other.id, sent.id).await.unwrap(), None, "another account's OTP");
        assert_eq!(store.otp_verified(account.id, sent.id + 1000).await.unwrap(), None, "no such OTP");
        let outcome = store
            .verify(otp_store::test_support::verify_sample(account.id, sent.id, otp_store::now_micros()))
            .await
            .unwrap();
        assert!(matches!(outcome, VerifyOutcome::Verified { .. }), "{outcome:?}");
        assert_eq!(store.otp_verified(account.id, sent.id).await.unwrap(), Some(true));
        assert_eq!(store.otp_verified(other.id, sent.id).await.unwrap(), None);
    }

    async fn an_accounts_default_fallback_is_set_read_back_and_cleared(store) {
        let account = store.create_account("acme", 10, 10).await.unwrap();
        assert_eq!(account.fallback, None, "no default at first");
        let default = AccountFallback::new(Voice::NpRija, 45).unwrap();
        let set = store.set_account_fallback(account.id, Some(default)).await.unwrap().unwrap();
        assert_eq!(set.fallback, Some(default));
        assert_eq!(store.account(account.id).await.unwrap().unwrap().fallback, Some(default));
        let cleared = store.set_account_fallback(account.id, None).await.unwrap().unwrap();
        assert_eq!(cleared.fallback, None);
        assert!(store.set_account_fallback(account.id + 100, Some(default)).await.unwrap().is_none());
    }

    async fn a_send_asking_for_the_default_gets_it_with_its_credits_reserved(store) {
        let account = store.create_account("acme", 10, 10).await.unwrap();
        let none = store.accept(asking_default(account.id, 1)).await.unwrap();
        assert_eq!((none.fallback, none.phone_credits), (None, 10), "no default: no call, nothing reserved");

        let default = AccountFallback::new(Voice::NpBinod, 45).unwrap();
        store.set_account_fallback(account.id, Some(default)).await.unwrap();
        let send = asking_default(account.id, 2);
        let created_at = send.created_at;
        let got = store.accept(send).await.unwrap();
        let call = got.fallback.expect("the default's call");
        assert_eq!((call.voice, call.due_at, call.phone_credits), (Voice::NpBinod, created_at + 45_000_000, 1));
        assert_eq!(got.phone_credits, 9, "its phone credit is reserved");
        let record = store.otp(account.id, got.id).await.unwrap().unwrap();
        let stored = record.fallback.expect("stored with the OTP");
        assert_eq!((stored.state, stored.credits, stored.due_at), (FallbackState::Pending, 1, created_at + 45_000_000));
        let ledger = store.ledger(account.id).await.unwrap();
        let debit = ledger.iter().find(|e| e.otp_id == Some(got.id)).unwrap();
        assert_eq!((debit.sms_delta, debit.phone_delta), (-1, -1), "one debit for both");

        let opted_out = store.accept(sms(account.id, 3)).await.unwrap();
        assert_eq!((opted_out.fallback, opted_out.phone_credits), (None, 9), "a send without it gets none");
        let own = NewFallback { voice: Voice::NpRija, due_at: created_at + 20_000_000, phone_credits: 2 };
        let explicit = store.accept(NewOtp { fallback: SendFallback::Call(own), ..sms(account.id, 4) }).await.unwrap();
        assert_eq!(explicit.fallback, Some(own), "a send's own call wins over the default");
        assert_eq!(explicit.phone_credits, 7);
    }

    async fn a_send_that_cannot_pay_for_the_default_call_is_refused_and_writes_nothing(store) {
        let account = store.create_account("acme", 10, 0).await.unwrap();
        let default = AccountFallback::new(Voice::NpRija, 60).unwrap();
        store.set_account_fallback(account.id, Some(default)).await.unwrap();
        match store.accept(asking_default(account.id, 1)).await {
            Err(AcceptError::InsufficientCredits { sms_credits: 10, phone_credits: 0 }) => {}
            other => panic!("refused for the call's phone credit: {other:?}"),
        }
        let after = store.account(account.id).await.unwrap().unwrap();
        assert_eq!((after.sms_credits, after.phone_credits, after.otp_count), (10, 0, 0));
        assert_eq!(store.ledger(account.id).await.unwrap().len(), 1, "only the opening top-up");
    }

    async fn a_stored_default_this_version_cannot_read_is_an_error_naming_it(store) {
        let account = store.create_account("acme", 10, 10).await.unwrap();
        crate::tamper(&store, "UPDATE accounts SET fallback_channel = 'carrier-pigeon'").await;
        let e = store.account(account.id).await.unwrap_err();
        assert!(e.to_string().contains("accounts.fallback_channel"), "{e}");
    }
}
