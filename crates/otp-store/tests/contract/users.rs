//! Users, their login attempts, sessions and keys.

use otp_store::users::KeyCopy;
use otp_store::{
    LoginGate, LoginPolicy, LoginScope, NewApiKey, NewUser, Scopes, StoreError, User, now_micros,
};

use crate::Fresh;

const MINUTE: i64 = 60_000_000;

fn policy(now: i64) -> LoginPolicy {
    LoginPolicy {
        max_attempts: 3,
        max_per_address: 0,
        max_global: 0,
        window: MINUTE,
        now,
    }
}

async fn user(store: &Fresh, email: &str) -> User {
    let account = store.create_account(email, 0, 0).await.unwrap();
    store
        .create_user(NewUser {
            account_id: account.id,
            email: email.into(),
            password_hash: "$argon2id$first".into(),
        })
        .await
        .unwrap()
}

/// The gates of `n` attempts, one after the other.
async fn attempts(
    store: &Fresh,
    n: usize,
    email: &str,
    address: Option<&str>,
    policy: LoginPolicy,
) -> Vec<LoginGate> {
    let mut gates = Vec::new();
    for _ in 0..n {
        gates.push(
            store
                .count_login_attempt(email, address, policy)
                .await
                .unwrap(),
        );
    }
    gates
}

fn key(account_id: i64, key_id: &str) -> NewApiKey {
    NewApiKey {
        key_id: key_id.into(),
        account_id,
        secret_hash: [7; 32],
        label: None,
        scopes: Scopes::DEFAULT,
    }
}

crate::contract! {
    async fn an_email_past_its_attempts_is_locked_until_its_window_ends(store) {
        let now = now_micros();
        let gates = attempts(&store, 4, "a@b.np", None, policy(now)).await;
        assert_eq!(gates[..3], [LoginGate::Open; 3]);
        assert_eq!(
            gates[3],
            LoginGate::Locked { scope: LoginScope::Email, retry_after_seconds: 60 }
        );
        let later = store
            .count_login_attempt("a@b.np", None, policy(now + 45 * 1_000_000))
            .await
            .unwrap();
        assert_eq!(later, LoginGate::Locked { scope: LoginScope::Email, retry_after_seconds: 15 });
        let next_window = store
            .count_login_attempt("a@b.np", None, policy(now + MINUTE))
            .await
            .unwrap();
        assert_eq!(next_window, LoginGate::Open);
    }

    async fn an_address_is_limited_across_emails_only_when_the_policy_limits_addresses(store) {
        let now = now_micros();
        let limited = LoginPolicy { max_per_address: 2, ..policy(now) };
        let mut gates = Vec::new();
        for email in ["a@b.np", "c@d.np", "e@f.np"] {
            gates.extend(attempts(&store, 1, email, Some("10.0.0.9"), limited).await);
        }
        assert_eq!(
            gates,
            [
                LoginGate::Open,
                LoginGate::Open,
                LoginGate::Locked { scope: LoginScope::Address, retry_after_seconds: 60 }
            ]
        );
        let elsewhere = attempts(&store, 1, "g@h.np", Some("10.0.0.10"), limited).await;
        assert_eq!(elsewhere, [LoginGate::Open]);
        let unlimited = attempts(&store, 3, "i@j.np", Some("10.0.0.9"), policy(now)).await;
        assert_eq!(unlimited, [LoginGate::Open; 3]);
    }

    async fn the_gateway_limit_counts_every_attempt_of_every_email(store) {
        let now = now_micros();
        let global = LoginPolicy { max_global: 2, ..policy(now) };
        let mut gates = Vec::new();
        for email in ["a@b.np", "c@d.np", "e@f.np"] {
            gates.extend(attempts(&store, 1, email, None, global).await);
        }
        assert_eq!(
            gates[2],
            LoginGate::Locked { scope: LoginScope::Global, retry_after_seconds: 60 }
        );
        assert_eq!(gates[..2], [LoginGate::Open; 2]);
    }

    async fn clearing_an_emails_attempts_gives_it_a_fresh_window(store) {
        let now = now_micros();
        attempts(&store, 4, "a@b.np", None, policy(now)).await;
        store.clear_login_attempts("a@b.np").await.unwrap();
        let gates = attempts(&store, 3, "a@b.np", None, policy(now)).await;
        assert_eq!(gates, [LoginGate::Open; 3]);
    }

    async fn a_new_password_ends_the_users_sessions_and_forgets_its_attempts(store) {
        let u = user(&store, "a@b.np").await;
        let now = now_micros();
        let session = store
            .create_session(u.id, Some("10.0.0.1".into()), now + MINUTE, 0)
            .await
            .unwrap();
        attempts(&store, 4, "a@b.np", None, policy(now)).await;
        let changed = store
            .set_password(u.id, "$argon2id$second")
            .await
            .unwrap()
            .expect("the user is found");
        assert_eq!(changed.session_version, u.session_version + 1);
        assert_eq!(changed.password_hash, "$argon2id$second");
        assert!(store.active_session(session.id, now).await.unwrap().is_none());
        assert_eq!(attempts(&store, 1, "a@b.np", None, policy(now)).await, [LoginGate::Open]);
        assert_eq!(store.set_password(u.id + 1000, "$argon2id$x").await.unwrap(), None);
    }

    async fn a_login_past_the_session_limit_revokes_the_oldest_sessions(store) {
        let u = user(&store, "a@b.np").await;
        let now = now_micros();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(store.create_session(u.id, None, now + MINUTE, 2).await.unwrap().id);
        }
        let active: Vec<i64> = store
            .list_sessions(u.id, now_micros())
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(active, [ids[2], ids[1]]);
        let unlimited = store.create_session(u.id, None, now + MINUTE, 0).await.unwrap();
        assert_eq!(store.list_sessions(u.id, now_micros()).await.unwrap().len(), 3);
        let (session, owner) = store
            .active_session(unlimited.id, now_micros())
            .await
            .unwrap()
            .expect("the new session is active");
        assert_eq!((session.user_id, owner.id), (u.id, u.id));
    }

    async fn revoking_one_session_leaves_the_others_and_revoking_twice_revokes_nothing(store) {
        let u = user(&store, "a@b.np").await;
        let now = now_micros();
        let first = store.create_session(u.id, None, now + MINUTE, 0).await.unwrap();
        let second = store.create_session(u.id, None, now + MINUTE, 0).await.unwrap();
        assert_eq!(store.revoke_sessions(u.id, Some(first.id), now).await.unwrap(), 1);
        assert_eq!(store.revoke_sessions(u.id, Some(first.id), now).await.unwrap(), 0);
        let left: Vec<i64> = store.list_sessions(u.id, now).await.unwrap().iter().map(|s| s.id).collect();
        assert_eq!(left, [second.id]);
        assert_eq!(store.revoke_sessions(u.id, None, now).await.unwrap(), 1);
        assert!(store.list_sessions(u.id, now).await.unwrap().is_empty());
    }

    async fn an_email_is_taken_once_and_a_user_needs_its_account(store) {
        let u = user(&store, "a@b.np").await;
        let again = store
            .create_user(NewUser {
                account_id: u.account_id,
                email: "a@b.np".into(),
                password_hash: "$argon2id$x".into(),
            })
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        let orphan = store
            .create_user(NewUser {
                account_id: u.account_id + 1000,
                email: "c@d.np".into(),
                password_hash: "$argon2id$x".into(),
            })
            .await;
        assert!(matches!(orphan, Err(StoreError::NotFound(_))), "{orphan:?}");
        assert_eq!(store.user_by_email("a@b.np").await.unwrap(), Some(u));
    }

    async fn a_new_user_key_revokes_the_old_one_and_keeps_a_copy_that_opens(store) {
        let u = user(&store, "a@b.np").await;
        let first = store
            .replace_user_key(u.id, key(u.account_id, "k1"), "otpg_k1_secret".into())
            .await
            .unwrap();
        let second = store
            .replace_user_key(u.id, key(u.account_id, "k2"), "otpg_k2_secret".into())
            .await
            .unwrap();
        let found = store.user_key(u.id).await.unwrap().expect("the user has a key");
        assert_eq!(found.record.id, second.id);
        assert_eq!(found.copy, KeyCopy::Plain("otpg_k2_secret".into()));
        let old = store.find_key("k1").await.unwrap().expect("the old key is kept");
        assert_eq!(old.id, first.id);
        assert!(old.revoked_at.is_some());
        let other = store.create_account("other", 0, 0).await.unwrap();
        let elsewhere = store
            .replace_user_key(u.id, key(other.id, "k3"), "otpg_k3_secret".into())
            .await;
        assert!(matches!(elsewhere, Err(StoreError::NotFound(_))), "{elsewhere:?}");
        assert_eq!(store.user_key(u.id).await.unwrap().unwrap().record.id, second.id);
    }

    async fn a_user_made_an_operator_reads_as_one_everywhere(store) {
        let u = user(&store, "a@b.np").await;
        assert!(!u.operator, "a new user is an account user");
        let made = store.set_operator(u.id, true).await.unwrap().expect("the user is there");
        assert!(made.operator);
        assert!(store.user(u.id).await.unwrap().unwrap().operator);
        assert!(store.user_by_email("a@b.np").await.unwrap().unwrap().operator);
        assert!(store.list_users(Some(u.account_id)).await.unwrap()[0].operator);
        assert!(!store.set_operator(u.id, false).await.unwrap().unwrap().operator);
        assert!(store.set_operator(u.id + 1000, true).await.unwrap().is_none());
    }
}
