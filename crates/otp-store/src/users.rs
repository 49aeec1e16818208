//! Users of an account (email and password), the API key each may hold, their
//! sessions (one per login, which its refresh and access tokens name), and the
//! counts of login attempts per email, per client address and over the whole
//! gateway.
//!
//! Implemented for both backends in `sqlite/users.rs` and `postgres/users.rs`,
//! which only run SQL: which counters an attempt bumps
//! (`LoginPolicy::counters`), whether it may go on (`LoginGate::decide`)
//! and how many sessions a login keeps (`sessions_kept`) are decided here.
//! The store never sees a password: it keeps the hash the service computed
//! (an Argon2id PHC string) and the email as the service normalised it (trimmed,
//! lower case), so a unique column makes emails unique case-insensitively.

use otp_domain::vault::{Binding, CodeVault, SealedCode};

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
    /// May open the console's operator pages (every account, the routes);
    /// set by `otpgate users create --operator`.
    pub operator: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("password_hash", &"[redacted]")
            .field("session_version", &self.session_version)
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// How many login attempts an email, a client address and the whole gateway
/// get, and over what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Attempts one email gets in one window; the next ones are refused until
    /// it ends.
    pub max_attempts: u32,
    /// Attempts one client address gets in one window; 0: no limit.
    pub max_per_address: u32,
    /// Attempts the whole gateway takes in one window; 0: no limit.
    pub max_global: u32,
    /// The window, counted from the first attempt after the previous window.
    pub window: Micros,
    /// The time of this attempt.
    pub now: Micros,
}

/// Which limit refused a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginScope {
    Email,
    Address,
    Global,
}

/// Whether a login attempt may go on to check the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    /// The attempt was counted; check the password.
    Open,
    /// Too many attempts in this window; do not check anything.
    Locked {
        /// The limit that refused (the one that ends last, when several did).
        scope: LoginScope,
        /// Whole seconds (at least 1) until that limit's window ends.
        retry_after_seconds: u64,
    },
}

/// One counter after an attempt was counted: attempts in the window (this one
/// included) and when the window began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginCount {
    pub scope: LoginScope,
    pub attempts: i64,
    pub window_start: Micros,
}

impl LoginGate {
    /// The one decision both backends make once the counters are written: open
    /// unless a counter is over its limit; locked until the last such window
    /// ends otherwise.
    pub(crate) fn decide(counts: &[LoginCount], policy: &LoginPolicy) -> LoginGate {
        let mut gate = LoginGate::Open;
        for count in counts {
            let limit = match count.scope {
                LoginScope::Email => policy.max_attempts,
                LoginScope::Address => policy.max_per_address,
                LoginScope::Global => policy.max_global,
            };
            if limit == 0 || count.attempts <= i64::from(limit) {
                continue;
            }
            let left = (count.window_start + policy.window - policy.now).max(1);
            let retry_after_seconds = (left as u64).div_ceil(1_000_000);
            let longer = match gate {
                LoginGate::Open => true,
                LoginGate::Locked {
                    retry_after_seconds: so_far,
                    ..
                } => retry_after_seconds > so_far,
            };
            if longer {
                gate = LoginGate::Locked {
                    scope: count.scope,
                    retry_after_seconds,
                };
            }
        }
        gate
    }
}

/// One counter a login attempt bumps: the statement that counts it
/// ([`COUNT_ATTEMPT_SQL`] or [`COUNT_THROTTLE_SQL`]) and its key there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counter {
    pub sql: &'static str,
    pub key: String,
    pub scope: LoginScope,
}

impl LoginPolicy {
    /// Counter windows that started at or before this have ended.
    pub(crate) fn window_ended(&self) -> Micros {
        self.now - self.window
    }

    /// The counters an attempt for `email` from `address` bumps, in the order
    /// they are counted: the email's always, the address's when it is known
    /// and limited, the gateway's when it is limited.
    pub(crate) fn counters(&self, email: &str, address: Option<&str>) -> Vec<Counter> {
        let mut counters = vec![Counter {
            sql: COUNT_ATTEMPT_SQL,
            key: email.to_owned(),
            scope: LoginScope::Email,
        }];
        if let Some(address) = address.filter(|_| self.max_per_address > 0) {
            counters.push(Counter {
                sql: COUNT_THROTTLE_SQL,
                key: format!("a:{address}"),
                scope: LoginScope::Address,
            });
        }
        if self.max_global > 0 {
            counters.push(Counter {
                sql: COUNT_THROTTLE_SQL,
                key: GLOBAL_THROTTLE_KEY.to_owned(),
                scope: LoginScope::Global,
            });
        }
        counters
    }
}

/// The tables of login counters; a counter whose window ended is forgotten.
pub(crate) const LOGIN_COUNTER_TABLES: [&str; 2] = ["login_attempts", "login_throttle"];

/// Counts an attempt for an email, opening a new window when the last one has
/// ended; both backends run this one statement (bound as `email`, `now`,
/// `now - window`) and read back `attempts, window_start`.
pub(crate) const COUNT_ATTEMPT_SQL: &str = "INSERT INTO login_attempts (email, attempts, window_start) VALUES ($1, 1, $2) \
     ON CONFLICT (email) DO UPDATE SET \
     attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 ELSE login_attempts.attempts + 1 END, \
     window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END \
     RETURNING attempts, window_start";

/// The same for a key of `login_throttle` (`a:<address>` or `g`).
pub(crate) const COUNT_THROTTLE_SQL: &str = "INSERT INTO login_throttle (key, attempts, window_start) VALUES ($1, 1, $2) \
     ON CONFLICT (key) DO UPDATE SET \
     attempts = CASE WHEN login_throttle.window_start <= $3 THEN 1 ELSE login_throttle.attempts + 1 END, \
     window_start = CASE WHEN login_throttle.window_start <= $3 THEN $2 ELSE login_throttle.window_start END \
     RETURNING attempts, window_start";

/// The `login_throttle` key of the whole gateway (a client address's is
/// `a:<address>`, as the service wrote the address).
const GLOBAL_THROTTLE_KEY: &str = "g";

/// One login of a user: the refresh token it issued, and the access tokens
/// refreshed from it, carry its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub created_at: Micros,
    /// When its refresh token expires.
    pub expires_at: Micros,
    /// The last refresh, if any.
    pub last_used_at: Option<Micros>,
    /// The client address the login came from, as the service wrote it.
    pub client: Option<String>,
}

/// How many of a user's active sessions a new login keeps, itself included
/// (`max_active` of [`UserStore::create_session`]); `None`: all of them.
pub(crate) fn sessions_kept(max_active: u32) -> Option<i64> {
    (max_active > 0).then_some(i64::from(max_active))
}

/// Revokes a user's active sessions but the newest `$3` ([`sessions_kept`]);
/// both backends bind `user_id`, `now`, that number.
pub(crate) const REVOKE_OLDEST_SQL: &str = "UPDATE refresh_tokens SET revoked_at = $2 \
     WHERE user_id = $1 AND revoked_at IS NULL AND id NOT IN (\
     SELECT id FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
     ORDER BY id DESC LIMIT $3)";

/// The columns of a [`Session`], in the order the row readers expect.
pub(crate) const SESSION_COLUMNS: &str =
    "id, user_id, created_at, expires_at, last_used_at, client";

/// The columns of a [`User`], in the order the row readers expect.
pub(crate) const USER_COLUMNS: &str = "id, account_id, email, password_hash, session_version, created_at, password_changed_at, operator";

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
    /// tokens), revokes its sessions (refresh tokens) and forgets the login
    /// attempts of its email, in one transaction. `None`: no such user.
    async fn set_password(&self, id: i64, password_hash: &str) -> Result<Option<User>, StoreError>;
    /// Makes a user an operator, or an account user again. `None`: no such
    /// user.
    async fn set_operator(&self, id: i64, operator: bool) -> Result<Option<User>, StoreError>;

    /// Counts a login attempt for a normalised email (known or not), for the
    /// client address it came from (when known, and when the policy limits
    /// addresses) and for the whole gateway (when the policy limits it), and
    /// says whether it may go on. Counting before the password is checked
    /// makes concurrent attempts count exactly: at most the limit of each
    /// counter gets through per window, however many arrive at once, on
    /// however many nodes.
    async fn count_login_attempt(
        &self,
        email: &str,
        address: Option<&str>,
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError>;
    /// Forgets the attempts of an email (after a successful login).
    async fn clear_login_attempts(&self, email: &str) -> Result<(), StoreError>;

    /// Records a login of a user from `client`, its refresh token valid
    /// until `expires_at`, and revokes the user's oldest active sessions
    /// beyond the newest `max_active` (this one included; 0: no limit).
    async fn create_session(
        &self,
        user_id: i64,
        client: Option<String>,
        expires_at: Micros,
        max_active: u32,
    ) -> Result<Session, StoreError>;
    /// A session that is neither revoked nor expired at `now`, with its user.
    async fn active_session(
        &self,
        session_id: i64,
        now: Micros,
    ) -> Result<Option<(Session, User)>, StoreError>;
    /// Notes that the session's refresh token was used at `now`.
    async fn touch_session(&self, session_id: i64, now: Micros) -> Result<(), StoreError>;
    /// The user's sessions that are neither revoked nor expired at `now`,
    /// newest first.
    async fn list_sessions(&self, user_id: i64, now: Micros) -> Result<Vec<Session>, StoreError>;
    /// Revokes the user's active sessions (only `only`, when given) and
    /// forgets its sessions that ended; returns how many were revoked.
    async fn revoke_sessions(
        &self,
        user_id: i64,
        only: Option<i64>,
        now: Micros,
    ) -> Result<u64, StoreError>;

    /// Revokes the user's key, if it has one, and stores `key` as its key for
    /// the user's account, in one transaction, with a sealed copy of
    /// `plaintext` (the whole key) that [`UserStore::user_key`] opens.
    /// `NotFound` when the user does not exist or `key` is for another account.
    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
        plaintext: String,
    ) -> Result<ApiKeyRecord, StoreError>;
    /// The user's key that is not revoked, if any, with its copy opened.
    async fn user_key(&self, user_id: i64) -> Result<Option<UserKey>, StoreError>;
}

/// A user's key and what its stored copy gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    pub record: ApiKeyRecord,
    pub copy: KeyCopy,
}

/// The sealed copy of a user's key, opened.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyCopy {
    /// The whole key.
    Plain(String),
    /// No copy: the key was made before copies were kept.
    Missing,
    /// A copy sealed under an encryption key that is no longer configured.
    Unreadable,
}

impl std::fmt::Debug for KeyCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyCopy::Plain(_) => "Plain([redacted])",
            KeyCopy::Missing => "Missing",
            KeyCopy::Unreadable => "Unreadable",
        })
    }
}

/// The value that binds a sealed key copy: never a phone number or the
/// webhook secret's binding, so no sealed value opens as another kind.
const KEY_COPY_BINDING: &str = "api-key-copy";

pub(crate) fn seal_key(vault: &CodeVault, account: AccountId, plaintext: &str) -> SealedCode {
    vault.seal(account, KEY_COPY_BINDING, plaintext)
}

/// Opens the copy columns of a key row (`NULL`s: no copy).
pub(crate) fn open_key(
    vault: &CodeVault,
    account: AccountId,
    salt: Option<&[u8]>,
    cipher: Option<&[u8]>,
    key_id: Option<&str>,
) -> KeyCopy {
    let (Some(salt), Some(cipher), Some(key_id)) = (salt, cipher, key_id) else {
        return KeyCopy::Missing;
    };
    let binding = Binding {
        account_id: account,
        e164: KEY_COPY_BINDING,
        salt,
    };
    vault
        .open(&binding, cipher, key_id)
        .map_or(KeyCopy::Unreadable, KeyCopy::Plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginPolicy {
        LoginPolicy {
            max_attempts: 3,
            max_per_address: 10,
            max_global: 0,
            window: 60_000_000,
            now: 10_000_000,
        }
    }

    fn count(scope: LoginScope, attempts: i64, window_start: Micros) -> LoginCount {
        LoginCount {
            scope,
            attempts,
            window_start,
        }
    }

    fn scopes(counters: &[Counter]) -> Vec<(LoginScope, &str)> {
        counters.iter().map(|c| (c.scope, c.key.as_str())).collect()
    }

    #[test]
    fn an_attempt_counts_for_its_email_and_for_the_address_and_gateway_only_when_limited() {
        let policy = policy();
        assert_eq!(
            scopes(&policy.counters("a@b.np", Some("10.0.0.1"))),
            [
                (LoginScope::Email, "a@b.np"),
                (LoginScope::Address, "a:10.0.0.1")
            ]
        );
        assert_eq!(
            scopes(&policy.counters("a@b.np", None)),
            [(LoginScope::Email, "a@b.np")]
        );
        let gateway_only = LoginPolicy {
            max_per_address: 0,
            max_global: 5,
            ..policy
        };
        let counters = gateway_only.counters("a@b.np", Some("10.0.0.1"));
        assert_eq!(
            scopes(&counters),
            [(LoginScope::Email, "a@b.np"), (LoginScope::Global, "g")]
        );
        assert_eq!(
            counters.iter().map(|c| c.sql).collect::<Vec<_>>(),
            [COUNT_ATTEMPT_SQL, COUNT_THROTTLE_SQL]
        );
        assert_eq!(policy.window_ended(), 10_000_000 - 60_000_000);
    }

    #[test]
    fn a_login_keeps_the_newest_sessions_up_to_the_limit_and_zero_keeps_all() {
        assert_eq!(sessions_kept(0), None);
        assert_eq!(sessions_kept(3), Some(3));
    }

    #[test]
    fn a_key_copy_opens_only_for_its_account_and_a_missing_one_says_so() {
        let vault = CodeVault::ephemeral();
        let sealed = seal_key(&vault, 7, "otpg_abc_def");
        let open = |account| {
            open_key(
                &vault,
                account,
                Some(&sealed.salt[..]),
                Some(&sealed.cipher[..]),
                Some(sealed.key_id.as_str()),
            )
        };
        assert_eq!(open(7), KeyCopy::Plain("otpg_abc_def".into()));
        assert_eq!(open(8), KeyCopy::Unreadable);
        assert_eq!(open_key(&vault, 7, None, None, None), KeyCopy::Missing);
        assert!(!format!("{:?}", open(7)).contains("otpg_abc"));
    }

    #[test]
    fn attempts_beyond_the_limit_lock_until_the_window_ends() {
        let policy = policy();
        let email = |n| [count(LoginScope::Email, n, 0)];
        assert_eq!(LoginGate::decide(&email(3), &policy), LoginGate::Open);
        assert_eq!(
            LoginGate::decide(&email(4), &policy),
            LoginGate::Locked {
                scope: LoginScope::Email,
                retry_after_seconds: 50
            }
        );
        assert_eq!(
            LoginGate::decide(
                &email(4),
                &LoginPolicy {
                    now: 59_999_999,
                    ..policy
                }
            ),
            LoginGate::Locked {
                scope: LoginScope::Email,
                retry_after_seconds: 1
            }
        );
    }

    #[test]
    fn the_limit_whose_window_ends_last_is_the_one_reported_and_zero_is_no_limit() {
        let policy = policy();
        let counts = [
            count(LoginScope::Email, 4, 0),
            count(LoginScope::Address, 11, 5_000_000),
            count(LoginScope::Global, 1_000_000, 0),
        ];
        assert_eq!(
            LoginGate::decide(&counts, &policy),
            LoginGate::Locked {
                scope: LoginScope::Address,
                retry_after_seconds: 55
            }
        );
        let under = [
            count(LoginScope::Email, 3, 0),
            count(LoginScope::Address, 10, 0),
            count(LoginScope::Global, 1_000_000, 0),
        ];
        assert_eq!(LoginGate::decide(&under, &policy), LoginGate::Open);
        let global = LoginPolicy {
            max_global: 100,
            ..policy
        };
        assert_eq!(
            LoginGate::decide(&under, &global),
            LoginGate::Locked {
                scope: LoginScope::Global,
                retry_after_seconds: 50
            }
        );
    }
}
