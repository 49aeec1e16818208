//! [`UserStore`] for the postgres backend. Replacing a user's key locks the
//! user's row first, so two nodes generating keys for one user at once leave
//! exactly one key active.

use tokio_postgres::Row;

use super::{PgStore, Prepared, pg_err};
use crate::rows::{self, KEY_COLUMN_COUNT, KEY_COLUMNS};
use crate::users::{
    LOGIN_COUNTER_TABLES, LoginCount, REVOKE_OLDEST_SQL, SESSION_COLUMNS, USER_COLUMNS, UserStore,
    open_key, seal_key, sessions_kept,
};
use crate::{
    AccountId, ApiKeyRecord, LoginGate, LoginPolicy, Micros, NewApiKey, NewUser, Session,
    StoreError, User, UserKey, now_micros,
};

fn user_from_row(r: &Row) -> User {
    user_at(r, 0)
}

/// A user whose columns start at `base`.
fn user_at(r: &Row, base: usize) -> User {
    User {
        id: r.get(base),
        account_id: r.get(base + 1),
        email: r.get(base + 2),
        password_hash: r.get(base + 3),
        session_version: r.get(base + 4),
        created_at: r.get(base + 5),
        password_changed_at: r.get(base + 6),
        operator: r.get(base + 7),
    }
}

fn session_from_row(r: &Row) -> Session {
    Session {
        id: r.get(0),
        user_id: r.get(1),
        created_at: r.get(2),
        expires_at: r.get(3),
        last_used_at: r.get(4),
        client: r.get(5),
    }
}

/// `columns` (a `*_COLUMNS` list) with each name qualified by `alias`.
fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait::async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "INSERT INTO users (account_id, email, password_hash, created_at, password_changed_at) \
                     SELECT id, $2, $3, $4, $4 FROM accounts WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[
                    &user.account_id,
                    &user.email,
                    &user.password_hash,
                    &now_micros(),
                ],
            )
            .await
            .map_err(|e| match pg_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict("the email is taken".into()),
                other => other,
            })?;
        row.as_ref()
            .map(user_from_row)
            .ok_or_else(|| StoreError::NotFound(format!("account {}", user.account_id)))
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"),
                &[&email],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn list_users(&self, account: Option<AccountId>) -> Result<Vec<User>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                sql_once!(
                    "SELECT {USER_COLUMNS} FROM users WHERE $1::int8 IS NULL OR account_id = $1 ORDER BY id"
                ),
                &[&account],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn set_operator(&self, id: i64, operator: bool) -> Result<Option<User>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("UPDATE users SET operator = $2 WHERE id = $1 RETURNING {USER_COLUMNS}"),
                &[&id, &operator],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn set_password(&self, id: i64, password_hash: &str) -> Result<Option<User>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt_cached(
                sql_once!(
                    "UPDATE users SET password_hash = $2, session_version = session_version + 1, \
                     password_changed_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id, &password_hash, &now_micros()],
            )
            .await
            .map_err(pg_err)?;
        let user = row.as_ref().map(user_from_row);
        tx.execute_cached(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            &[&id, &now_micros()],
        )
        .await
        .map_err(pg_err)?;
        if let Some(u) = &user {
            tx.execute_cached("DELETE FROM login_attempts WHERE email = $1", &[&u.email])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(user)
    }

    async fn count_login_attempt(
        &self,
        email: &str,
        address: Option<&str>,
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError> {
        let c = self.client().await?;
        // Windows that ended are forgotten, so the tables hold only emails and
        // addresses tried recently.
        for table in LOGIN_COUNTER_TABLES {
            c.execute(
                &format!("DELETE FROM {table} WHERE window_start <= $1"),
                &[&policy.window_ended()],
            )
            .await
            .map_err(pg_err)?;
        }
        // One statement per counter, each on its own: concurrent attempts on
        // any node are counted exactly, and the gateway's row is locked only
        // for its own statement.
        let mut counts = Vec::new();
        for counter in policy.counters(email, address) {
            let row = c
                .query_one_cached(
                    counter.sql,
                    &[&counter.key, &policy.now, &policy.window_ended()],
                )
                .await
                .map_err(pg_err)?;
            counts.push(LoginCount {
                scope: counter.scope,
                attempts: row.get(0),
                window_start: row.get(1),
            });
        }
        Ok(LoginGate::decide(&counts, &policy))
    }

    async fn clear_login_attempts(&self, email: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute_cached("DELETE FROM login_attempts WHERE email = $1", &[&email])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn create_session(
        &self,
        user_id: i64,
        client: Option<String>,
        expires_at: Micros,
        max_active: u32,
    ) -> Result<Session, StoreError> {
        let c = self.client().await?;
        let now = now_micros();
        // The user's sessions that ended are forgotten, so its rows are bounded
        // by its logins within one refresh lifetime.
        c.execute_cached(
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at <= $2",
            &[&user_id, &now],
        )
        .await
        .map_err(pg_err)?;
        let row = c
            .query_one_cached(
                sql_once!(
                    "INSERT INTO refresh_tokens (user_id, created_at, expires_at, client) \
                     VALUES ($1, $2, $3, $4) RETURNING {SESSION_COLUMNS}"
                ),
                &[&user_id, &now, &expires_at, &client],
            )
            .await
            .map_err(pg_err)?;
        if let Some(kept) = sessions_kept(max_active) {
            c.execute_cached(REVOKE_OLDEST_SQL, &[&user_id, &now, &kept])
                .await
                .map_err(pg_err)?;
        }
        Ok(session_from_row(&row))
    }

    async fn active_session(
        &self,
        session_id: i64,
        now: Micros,
    ) -> Result<Option<(Session, User)>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "SELECT {}, {} FROM refresh_tokens s JOIN users u ON u.id = s.user_id \
                     WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
                    qualified(SESSION_COLUMNS, "s"),
                    qualified(USER_COLUMNS, "u"),
                ),
                &[&session_id, &now],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| (session_from_row(&r), user_at(&r, 6))))
    }

    async fn touch_session(&self, session_id: i64, now: Micros) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute_cached(
            "UPDATE refresh_tokens SET last_used_at = $2 WHERE id = $1",
            &[&session_id, &now],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn list_sessions(&self, user_id: i64, now: Micros) -> Result<Vec<Session>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                sql_once!(
                    "SELECT {SESSION_COLUMNS} FROM refresh_tokens \
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY id DESC"
                ),
                &[&user_id, &now],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(session_from_row).collect())
    }

    async fn revoke_sessions(
        &self,
        user_id: i64,
        only: Option<i64>,
        now: Micros,
    ) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let revoked = c
            .execute_cached(
                "UPDATE refresh_tokens SET revoked_at = $3 WHERE user_id = $1 \
                 AND ($2::int8 IS NULL OR id = $2) AND revoked_at IS NULL AND expires_at > $3",
                &[&user_id, &only, &now],
            )
            .await
            .map_err(pg_err)?;
        c.execute_cached(
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at <= $2",
            &[&user_id, &now],
        )
        .await
        .map_err(pg_err)?;
        Ok(revoked)
    }

    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
        plaintext: String,
    ) -> Result<ApiKeyRecord, StoreError> {
        let copy = seal_key(&self.vault, key.account_id, &plaintext);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let found = tx
            .query_opt_cached(
                "SELECT id FROM users WHERE id = $1 AND account_id = $2 FOR UPDATE",
                &[&user_id, &key.account_id],
            )
            .await
            .map_err(pg_err)?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!(
                "user {user_id} of the account"
            )));
        }
        let now = now_micros();
        tx.execute_cached(
            "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id, &now],
        )
        .await
        .map_err(pg_err)?;
        let hash: &[u8] = &key.secret_hash;
        let row = tx
            .query_one_cached(
                sql_once!(
                    "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, user_id, scopes, \
                     copy_salt, copy_cipher, copy_key_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.key_id,
                    &key.account_id,
                    &hash,
                    &key.label,
                    &now,
                    &user_id,
                    &key.scopes.to_string(),
                    &&copy.salt[..],
                    &copy.cipher,
                    &copy.key_id,
                ],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        rows::key(&row)
    }

    async fn user_key(&self, user_id: i64) -> Result<Option<UserKey>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "SELECT {KEY_COLUMNS}, copy_salt, copy_cipher, copy_key_id \
                     FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"
                ),
                &[&user_id],
            )
            .await
            .map_err(pg_err)?;
        row.map(|row| {
            // The copy's columns follow KEY_COLUMNS'.
            let record = rows::key(&row)?;
            let salt: Option<Vec<u8>> = row.get(KEY_COLUMN_COUNT);
            let cipher: Option<Vec<u8>> = row.get(KEY_COLUMN_COUNT + 1);
            let key_id: Option<String> = row.get(KEY_COLUMN_COUNT + 2);
            let copy = open_key(
                &self.vault,
                record.account_id,
                salt.as_deref(),
                cipher.as_deref(),
                key_id.as_deref(),
            );
            Ok(UserKey { record, copy })
        })
        .transpose()
    }
}
