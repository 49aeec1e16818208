//! [`AccountRulesStore`] for the postgres backend. A change of an account's
//! templates locks its account row first, so two nodes adding templates at
//! once cannot pass [`MAX_TEMPLATES`] together. [`senders_of`] is what
//! claiming jobs calls for the accounts of the jobs it claimed.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;

use super::{PgStore, Prepared, pg_err};
use crate::rules::{
    AccountRulesStore, AccountSender, ApprovedTemplate, MAX_TEMPLATES, check_route,
    distinct_templates, key_of_text, template_key, too_many,
};
use crate::{AccountId, Micros, StoreError};
use otp_domain::message::MessageTemplate;
use otp_domain::sender::SenderId;

/// The senders of `accounts`, by account; a stored value that is not a sender
/// ID is left out, so the route's own sender is used rather than a garbled one.
pub(super) async fn senders_of(
    c: &impl GenericClient,
    accounts: &[AccountId],
) -> Result<HashMap<AccountId, Vec<AccountSender>>, StoreError> {
    let mut by_account: HashMap<AccountId, Vec<AccountSender>> = HashMap::new();
    if accounts.is_empty() {
        return Ok(by_account);
    }
    let rows = c
        .query_cached(
            "SELECT account_id, route, sender, updated_at FROM account_senders \
             WHERE account_id = ANY($1) ORDER BY account_id, route",
            &[&accounts],
        )
        .await
        .map_err(pg_err)?;
    for r in rows {
        let Some(sender) = SenderId::from_stored(r.get(2)) else {
            continue;
        };
        by_account.entry(r.get(0)).or_default().push(AccountSender {
            route: r.get(1),
            sender,
            updated_at: r.get(3),
        });
    }
    Ok(by_account)
}

async fn templates_of(
    c: &impl GenericClient,
    account: AccountId,
) -> Result<Vec<ApprovedTemplate>, StoreError> {
    let rows = c
        .query_cached(
            "SELECT text, created_at FROM account_templates WHERE account_id = $1 \
             ORDER BY created_at, text",
            &[&account],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| ApprovedTemplate {
            text: r.get(0),
            created_at: r.get(1),
        })
        .collect())
}

/// Locks the account's row; `NotFound` unless it exists.
async fn lock_account(c: &impl GenericClient, account: AccountId) -> Result<(), StoreError> {
    c.query_opt_cached(
        "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
        &[&account],
    )
    .await
    .map_err(pg_err)?
    .map(|_| ())
    .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

#[async_trait::async_trait]
impl AccountRulesStore for PgStore {
    async fn account_templates(
        &self,
        account: AccountId,
    ) -> Result<Vec<ApprovedTemplate>, StoreError> {
        let c = self.client().await?;
        templates_of(&c, account).await
    }

    async fn add_account_template(
        &self,
        account: AccountId,
        template: &MessageTemplate,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let text = template.normalized();
        let key = template_key(&text);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        lock_account(&tx, account).await?;
        let counts = tx
            .query_one_cached(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE text_hash = $2) \
                 FROM account_templates WHERE account_id = $1",
                &[&account, &key],
            )
            .await
            .map_err(pg_err)?;
        let (count, known): (i64, i64) = (counts.get(0), counts.get(1));
        if known > 0 {
            return Ok(false);
        }
        if count >= MAX_TEMPLATES as i64 {
            return Err(too_many());
        }
        tx.execute_cached(
            "INSERT INTO account_templates (account_id, text_hash, text, created_at) \
             VALUES ($1, $2, $3, $4)",
            &[&account, &key, &text, &now],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn replace_account_templates(
        &self,
        account: AccountId,
        templates: Vec<MessageTemplate>,
        now: Micros,
    ) -> Result<Vec<ApprovedTemplate>, StoreError> {
        let (keys, texts): (Vec<Vec<u8>>, Vec<String>) =
            distinct_templates(&templates)?.into_iter().unzip();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        lock_account(&tx, account).await?;
        tx.execute_cached(
            "DELETE FROM account_templates WHERE account_id = $1",
            &[&account],
        )
        .await
        .map_err(pg_err)?;
        tx.execute_cached(
            "INSERT INTO account_templates (account_id, text_hash, text, created_at) \
             SELECT $1, h, t, $4 FROM UNNEST($2::bytea[], $3::text[]) AS u(h, t)",
            &[&account, &keys, &texts, &now],
        )
        .await
        .map_err(pg_err)?;
        let list = templates_of(&tx, account).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(list)
    }

    async fn remove_account_template(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<bool, StoreError> {
        let key = key_of_text(text);
        let c = self.client().await?;
        let removed = c
            .execute_cached(
                "DELETE FROM account_templates WHERE account_id = $1 AND text_hash = $2",
                &[&account, &key],
            )
            .await
            .map_err(pg_err)?;
        Ok(removed > 0)
    }

    async fn account_senders(&self, account: AccountId) -> Result<Vec<AccountSender>, StoreError> {
        let c = self.client().await?;
        Ok(senders_of(&c, &[account])
            .await?
            .remove(&account)
            .unwrap_or_default())
    }

    async fn set_account_sender(
        &self,
        account: AccountId,
        route: &str,
        sender: &SenderId,
        now: Micros,
    ) -> Result<AccountSender, StoreError> {
        check_route(route)?;
        let c = self.client().await?;
        let inserted = c
            .execute_cached(
                "INSERT INTO account_senders (account_id, route, sender, updated_at) \
                 SELECT id, $2, $3, $4 FROM accounts WHERE id = $1 \
                 ON CONFLICT (account_id, route) \
                 DO UPDATE SET sender = excluded.sender, updated_at = excluded.updated_at",
                &[&account, &route, &sender.as_str(), &now],
            )
            .await
            .map_err(pg_err)?;
        if inserted == 0 {
            return Err(StoreError::NotFound(format!("account {account}")));
        }
        Ok(AccountSender {
            route: route.to_owned(),
            sender: sender.clone(),
            updated_at: now,
        })
    }

    async fn remove_account_sender(
        &self,
        account: AccountId,
        route: &str,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let removed = c
            .execute_cached(
                "DELETE FROM account_senders WHERE account_id = $1 AND route = $2",
                &[&account, &route],
            )
            .await
            .map_err(pg_err)?;
        Ok(removed > 0)
    }
}
