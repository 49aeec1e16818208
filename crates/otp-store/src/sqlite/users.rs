//! [`UserStore`] for the sqlite backend: writes run in the writer's next batch
//! transaction, reads on the read pool.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{KEY_COLUMNS, SqliteStore, account_by_id, collect, key_from_row, map_err};
use crate::users::{COUNT_ATTEMPT_SQL, USER_COLUMNS, UserStore};
use crate::{
    AccountId, ApiKeyRecord, LoginGate, LoginPolicy, NewApiKey, NewUser, StoreError, User,
    now_micros,
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
    .and_then(|mut s| s.query_row([user_id], key_from_row).optional())
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
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError> {
        let email = email.to_owned();
        self.write(move |tx| {
            let window_ended = policy.now - policy.window;
            // Windows that ended are forgotten, so the table holds only emails
            // tried recently.
            tx.execute(
                "DELETE FROM login_attempts WHERE window_start <= ?1",
                [window_ended],
            )
            .map_err(map_err)?;
            let (attempts, window_start): (i64, i64) = tx
                .prepare_cached(&COUNT_ATTEMPT_SQL.replace('$', "?"))
                .and_then(|mut s| {
                    s.query_row(params![email, policy.now, window_ended], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                })
                .map_err(map_err)?;
            Ok(LoginGate::after(attempts, window_start, &policy))
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

    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
    ) -> Result<ApiKeyRecord, StoreError> {
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
                "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, user_id, scopes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.key_id,
                    key.account_id,
                    &key.secret_hash[..],
                    key.label,
                    now,
                    user.id,
                    key.scopes.to_string()
                ],
            )
            .map_err(map_err)?;
            active_key(tx, user.id)?
                .ok_or_else(|| StoreError::Internal("a key just written is missing".into()))
        })
        .await
    }

    async fn user_key(&self, user_id: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(move |c| active_key(c, user_id)).await
    }
}
