//! Users of an account (email and password), the API key each may hold, and the
//! count of login attempts per email.
//!
//! Implemented for both backends in `sqlite/users.rs` and `postgres/users.rs`.
//! The store never sees a password: it keeps the hash the service computed
//! (an Argon2id PHC string) and the email as the service normalised it (trimmed,
//! lower case), so a unique column makes emails unique case-insensitively.

use crate::{AccountId, ApiKeyRecord, Micros, NewApiKey, StoreError};

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    pub account_id: AccountId,
    /// Normalised: trimmed and lower case.
    pub email: String,
    /// The password's hash (never the password).
    pub password_hash: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("account_id", &self.account_id)
            .field("password_hash", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub account_id: AccountId,
    pub email: String,
    pub password_hash: String,
    /// Carried by the user's tokens; bumped when the password changes, which
    /// ends every token issued before.
    pub session_version: i64,
    pub created_at: Micros,
    pub password_changed_at: Micros,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("password_hash", &"[redacted]")
            .field("session_version", &self.session_version)
            .finish_non_exhaustive()
    }
}

/// How many login attempts an email gets, and over what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Attempts allowed in one window; the next ones are refused until it ends.
    pub max_attempts: u32,
    /// The window, counted from the first attempt after the previous window.
    pub window: Micros,
    /// The time of this attempt.
    pub now: Micros,
}

/// Whether a login attempt may go on to check the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    /// The attempt was counted; check the password.
    Open,
    /// Too many attempts in this window; do not check anything.
    Locked {
        /// Whole seconds (at least 1) until the window ends.
        retry_after_seconds: u64,
    },
}

impl LoginGate {
    /// The gate after `attempts` attempts (this one included) in the window
    /// that began at `window_start`.
    pub(crate) fn after(attempts: i64, window_start: Micros, policy: &LoginPolicy) -> LoginGate {
        if attempts <= i64::from(policy.max_attempts) {
            return LoginGate::Open;
        }
        let left = (window_start + policy.window - policy.now).max(1);
        LoginGate::Locked {
            retry_after_seconds: (left as u64).div_ceil(1_000_000),
        }
    }
}

/// Counts an attempt for an email, opening a new window when the last one has
/// ended; both backends run this one statement (bound as `email`, `now`,
/// `now - window`) and read back `attempts, window_start`.
pub(crate) const COUNT_ATTEMPT_SQL: &str = "INSERT INTO login_attempts (email, attempts, window_start) VALUES ($1, 1, $2) \
     ON CONFLICT (email) DO UPDATE SET \
     attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 ELSE login_attempts.attempts + 1 END, \
     window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END \
     RETURNING attempts, window_start";

/// The columns of a [`User`], in the order the row readers expect.
pub(crate) const USER_COLUMNS: &str =
    "id, account_id, email, password_hash, session_version, created_at, password_changed_at";

/// What the login, user-detail and key-management endpoints need from the store.
#[async_trait::async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates a user of an account. `Conflict` when the email is taken,
    /// `NotFound` when the account does not exist.
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;
    /// One user by id.
    async fn user(&self, id: i64) -> Result<Option<User>, StoreError>;
    /// One user by normalised email.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Users, of one account or of all, oldest first.
    async fn list_users(&self, account: Option<AccountId>) -> Result<Vec<User>, StoreError>;
    /// Replaces a user's password hash, bumps its session version (ending its
    /// tokens) and forgets the login attempts of its email, in one
    /// transaction. `None`: no such user.
    async fn set_password(&self, id: i64, password_hash: &str) -> Result<Option<User>, StoreError>;

    /// Counts a login attempt for a normalised email, known or not, and says
    /// whether it may go on. Counting before the password is checked makes
    /// concurrent attempts count exactly: at most `max_attempts` get through
    /// per window, however many arrive at once, on however many nodes.
    async fn count_login_attempt(
        &self,
        email: &str,
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError>;
    /// Forgets the attempts of an email (after a successful login).
    async fn clear_login_attempts(&self, email: &str) -> Result<(), StoreError>;

    /// Revokes the user's key, if it has one, and stores `key` as its key for
    /// the user's account, in one transaction. `NotFound` when the user does not
    /// exist or `key` is for another account.
    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
    ) -> Result<ApiKeyRecord, StoreError>;
    /// The user's key that is not revoked, if any.
    async fn user_key(&self, user_id: i64) -> Result<Option<ApiKeyRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_beyond_the_limit_lock_until_the_window_ends() {
        let policy = LoginPolicy {
            max_attempts: 3,
            window: 60_000_000,
            now: 10_000_000,
        };
        assert_eq!(LoginGate::after(3, 0, &policy), LoginGate::Open);
        assert_eq!(
            LoginGate::after(4, 0, &policy),
            LoginGate::Locked {
                retry_after_seconds: 50
            }
        );
        assert_eq!(
            LoginGate::after(
                4,
                0,
                &LoginPolicy {
                    now: 59_999_999,
                    ..policy
                }
            ),
            LoginGate::Locked {
                retry_after_seconds: 1
            }
        );
    }
}
