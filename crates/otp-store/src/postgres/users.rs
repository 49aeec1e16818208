//! [`UserStore`] for the postgres backend. Replacing a user's key locks the
//! user's row first, so two nodes generating keys for one user at once leave
//! exactly one key active.

use tokio_postgres::Row;

use super::{KEY_COLUMNS, PgStore, key_from_row, pg_err};
use crate::users::{COUNT_ATTEMPT_SQL, USER_COLUMNS, UserStore};
use crate::{
    AccountId, ApiKeyRecord, LoginGate, LoginPolicy, NewApiKey, NewUser, StoreError, User,
    now_micros,
};

fn user_from_row(r: &Row) -> User {
    User {
        id: r.get(0),
        account_id: r.get(1),
        email: r.get(2),
        password_hash: r.get(3),
        session_version: r.get(4),
        created_at: r.get(5),
        password_changed_at: r.get(6),
    }
}

#[async_trait::async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
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
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"),
                &[&email],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(user_from_row))
    }

    async fn list_users(&self, account: Option<AccountId>) -> Result<Vec<User>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE $1::int8 IS NULL OR account_id = $1 ORDER BY id"
                ),
                &[&account],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(user_from_row).collect())
    }

    async fn set_password(&self, id: i64, password_hash: &str) -> Result<Option<User>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE users SET password_hash = $2, session_version = session_version + 1, \
                     password_changed_at = $3 WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id, &password_hash, &now_micros()],
            )
            .await
            .map_err(pg_err)?;
        let user = row.as_ref().map(user_from_row);
        if let Some(u) = &user {
            tx.execute("DELETE FROM login_attempts WHERE email = $1", &[&u.email])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(user)
    }

    async fn count_login_attempt(
        &self,
        email: &str,
        policy: LoginPolicy,
    ) -> Result<LoginGate, StoreError> {
        let c = self.client().await?;
        let window_ended = policy.now - policy.window;
        // Windows that ended are forgotten, so the table holds only emails tried
        // recently.
        c.execute(
            "DELETE FROM login_attempts WHERE window_start <= $1",
            &[&window_ended],
        )
        .await
        .map_err(pg_err)?;
        // One statement: concurrent attempts on any node are counted exactly.
        let row = c
            .query_one(COUNT_ATTEMPT_SQL, &[&email, &policy.now, &window_ended])
            .await
            .map_err(pg_err)?;
        Ok(LoginGate::after(row.get(0), row.get(1), &policy))
    }

    async fn clear_login_attempts(&self, email: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM login_attempts WHERE email = $1", &[&email])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn replace_user_key(
        &self,
        user_id: i64,
        key: NewApiKey,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let found = tx
            .query_opt(
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
        tx.execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id, &now],
        )
        .await
        .map_err(pg_err)?;
        let hash: &[u8] = &key.secret_hash;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, user_id, scopes) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.key_id,
                    &key.account_id,
                    &hash,
                    &key.label,
                    &now,
                    &user_id,
                    &key.scopes.to_string(),
                ],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(key_from_row(&row))
    }

    async fn user_key(&self, user_id: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL"
                ),
                &[&user_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.as_ref().map(key_from_row))
    }
}
