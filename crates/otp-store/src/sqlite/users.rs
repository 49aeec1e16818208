//! [`UserStore`] for the sqlite backend: writes run in the writer's next batch
//! transaction, reads on the read pool.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, account_by_id, collect, map_err, rows};
use crate::rows::KEY_COLUMNS;
use crate::users::{
    Counter, LOGIN_COUNTER_TABLES, LoginCount, REVOKE_OLDEST_SQL, SESSION_COLUMNS, USER_COLUMNS,
    UserStore, open_key, seal_key, sessions_kept,
};
use crate::{
    AccountId, ApiKeyRecord, LoginGate, LoginPolicy, Micros, NewApiKey, NewUser, Session,
    StoreError, User, UserKey, now_micros,
};

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        account_id: r.get(1)?,
        email: r.get(2)?,
        password_hash: r.get(3)?,
        session_version: r.get(4)?,
        created_at: r.get(5)?,
        password_changed_at: r.get(6)?,
        operator: r.get(7)?,
    })
}

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        last_used_at: r.get(4)?,
        client: r.get(5)?,
    })
}

fn session_by_id(c: &Connection, id: i64) -> Result<Option<Session>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM refresh_tokens WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], session_from_row).optional())
    .map_err(map_err)
}

/// Counts one attempt on one of the policy's counters.
fn count(
    tx: &Connection,
    counter: &Counter,
    policy: &LoginPolicy,
) -> Result<LoginCount, StoreError> {
    let (attempts, window_start) = tx
        .prepare_cached(&counter.sql.replace('$', "?"))
        .and_then(|mut s| {
            s.query_row(
                params![counter.key, policy.now, policy.window_ended()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .map_err(map_err)?;
    Ok(LoginCount {
        scope: counter.scope,
        attempts,
        window_start,
    })
}

fn user_by_id(c: &Connection, id: i64) -> Result<Option<User>, StoreError> {
    c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], user_from_row).optional())
        .map_err(map_err)
}

fn active_key(c: &Connection, user_id: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
    c.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ?1 AND revoked_at IS NULL"
    ))
    .and_then(|mut s| s.query_row([user_id], rows::key).optional())
    .map_err(map_err)
}

#[async_trait::async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.write(move |tx| {
            if account_by_id(tx, user.account_id)?.is_none() {
                return Err(StoreError::NotFound(format!("account {}", user.account_id)));
            }
            let now = now_micros();
            tx.execute(
                "INSERT INTO users (account_id, email, password_hash, created_at, password_changed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![user.account_id, user.email, user.password_hash, now],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict("the email is taken".into()),
                other => other,
            })?;
            user_by_id(tx, tx.last_insert_rowid())?
                .ok_or_else(|| StoreError::Internal("a user just written is missing".into()))
        })
        .await
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.read(move |c| user_by_id(c, id)).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE email = ?1"
            ))
            .and_then(|mut s| s.query_row([email], user_from_row).optional())
            .map_err(map_err)
        })
        .await
    }

    async fn list_users(&self, account: Option<AccountId>) -> Result<Vec<User>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE ?1 IS NULL OR account_id = ?1 ORDER BY id"
                ))
                .map_err(map_err)?;
            collect(s.query_map([account], user_from_row).map_err(map_err)?)
        })
        .await
    }

    async fn set_operator(&self, id: i64, operator: bool) -> Result<Option<User>, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE users SET operator = ?2 WHERE id = ?1",
                params![id, operator],
            )
            .map_err(map_err)?;
            user_by_id(tx, id)
        })
        .await
    }

    async fn set_password(&self, id: i64, password_hash: &str) -> Result<Option<User>, StoreError> {
        let hash = password_hash.to_owned();
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE users SET password_hash = ?2, session_version = session_version + 1, \
                     password_changed_at = ?3 WHERE id = ?1",
                    params![id, hash, now_micros()],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Ok(None);
            }
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![id, now_micros()],
            )
            .map_err(map_err)?;
            let user = user_by_id(tx, id)?;
            if let Some(u) = &user {
                tx.execute("DELETE FROM login_attempts WHERE email = ?1", [&u.email])
                    .map_err(map_err)?;
            }
            Ok(user)
        })
        .await
    }

    async fn count_login_attempt(
        &self,
        email: &str,
        address: Option<&str>,
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError> {
        let counters = policy.counters(email, address);
        self.write(move |tx| {
            // Windows that ended are forgotten, so the tables hold only emails
            // and addresses tried recently.
            for table in LOGIN_COUNTER_TABLES {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE window_start <= ?1"),
                    [policy.window_ended()],
                )
                .map_err(map_err)?;
            }
            let counts = counters
                .iter()
                .map(|counter| count(tx, counter, &policy))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(LoginGate::decide(&counts, &policy))
        })
        .await
    }

    async fn clear_login_attempts(&self, email: &str) -> Result<(), StoreError> {
        let email = email.to_owned();
        self.write(move |tx| {
            tx.execute("DELETE FROM login_attempts WHERE email = ?1", [email])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn create_session(
        &self,
        user_id: i64,
        client: Option<String>,
        expires_at: Micros,
        max_active: u32,
    ) -> Result<Session, StoreError> {
        self.write(move |tx| {
            let now = now_micros();
            // The user's sessions that ended are forgotten, so its rows are
            // bounded by its logins within one refresh lifetime.
            tx.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND expires_at <= ?2",
                params![user_id, now],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO refresh_tokens (user_id, created_at, expires_at, client) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![user_id, now, expires_at, client],
            )
            .map_err(map_err)?;
            let id = tx.last_insert_rowid();
            if let Some(kept) = sessions_kept(max_active) {
                tx.prepare_cached(&REVOKE_OLDEST_SQL.replace('$', "?"))
                    .and_then(|mut s| s.execute(params![user_id, now, kept]))
                    .map_err(map_err)?;
            }
            session_by_id(tx, id)?
                .ok_or_else(|| StoreError::Internal("a session just written is missing".into()))
        })
        .await
    }

    async fn active_session(
        &self,
        session_id: i64,
        now: Micros,
    ) -> Result<Option<(Session, User)>, StoreError> {
        self.read(move |c| {
            let session = c
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM refresh_tokens \
                     WHERE id = ?1 AND revoked_at IS NULL AND expires_at > ?2"
                ))
                .and_then(|mut s| {
                    s.query_row(params![session_id, now], session_from_row)
                        .optional()
                })
                .map_err(map_err)?;
            let Some(session) = session else {
                return Ok(None);
            };
            Ok(user_by_id(c, session.user_id)?.map(|user| (session, user)))
        })
        .await
    }

    async fn touch_session(&self, session_id: i64, now: Micros) -> Result<(), StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE refresh_tokens SET last_used_at = ?2 WHERE id = ?1",
                params![session_id, now],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_sessions(&self, user_id: i64, now: Micros) -> Result<Vec<Session>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM refresh_tokens \
                     WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 ORDER BY id DESC"
                ))
                .map_err(map_err)?;
            collect(
                s.query_map(params![user_id, now], session_from_row)
                    .map_err(map_err)?,
            )
        })
        .await
    }

    async fn revoke_sessions(
        &self,
        user_id: i64,
        only: Option<i64>,
        now: Micros,
    ) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let revoked = tx
                .execute(
                    "UPDATE refresh_tokens SET revoked_at = ?3 WHERE user_id = ?1 \
                     AND (?2 IS NULL OR id = ?2) AND revoked_at IS NULL AND expires_at > ?3",
                    params![user_id, only, now],
                )
                .map_err(map_err)?;
            tx.execute(
                "DELETE FROM refresh_tokens WHERE user_id = ?1 AND expires_at <= ?2",
                params![user_id, now],
            )
            .map_err(map_err)?;
            Ok(revoked as u64)
        })
        .await
    }

    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
        plaintext: String,
    ) -> Result<ApiKeyRecord, StoreError> {
        let copy = seal_key(&self.vault, key.account_id, &plaintext);
        self.write(move |tx| {
            let user = user_by_id(tx, user_id)?
                .filter(|u| u.account_id == key.account_id)
                .ok_or_else(|| StoreError::NotFound(format!("user {user_id} of the account")))?;
            let now = now_micros();
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![user.id, now],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, user_id, scopes, \
                 copy_salt, copy_cipher, copy_key_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    key.key_id,
                    key.account_id,
                    &key.secret_hash[..],
                    key.label,
                    now,
                    user.id,
                    key.scopes.to_string(),
                    &copy.salt[..],
                    copy.cipher,
                    copy.key_id
                ],
            )
            .map_err(map_err)?;
            active_key(tx, user.id)?
                .ok_or_else(|| StoreError::Internal("a key just written is missing".into()))
        })
        .await
    }

    async fn user_key(&self, user_id: i64) -> Result<Option<UserKey>, StoreError> {
        let vault = self.vault.clone();
        self.read(move |c| {
            let Some(record) = active_key(c, user_id)? else {
                return Ok(None);
            };
            type Copy = (Option<Vec<u8>>, Option<Vec<u8>>, Option<String>);
            let (salt, cipher, key_id): Copy = c
                .prepare_cached(
                    "SELECT copy_salt, copy_cipher, copy_key_id FROM api_keys WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([record.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                })
                .map_err(map_err)?;
            let copy = open_key(
                &vault,
                record.account_id,
                salt.as_deref(),
                cipher.as_deref(),
                key_id.as_deref(),
            );
            Ok(Some(UserKey { record, copy }))
        })
        .await
    }
}
