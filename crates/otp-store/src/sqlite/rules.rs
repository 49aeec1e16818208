//! [`AccountRulesStore`] for the sqlite backend: changes run in the writer's
//! next batch transaction, lists on the read pool. [`senders_of`] is what
//! claiming jobs calls, inside its own transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, collect, map_err};
use crate::rules::{
    AccountRulesStore, AccountSender, ApprovedTemplate, MAX_TEMPLATES, check_route,
    distinct_templates, key_of_text, template_key, too_many,
};
use crate::{AccountId, Micros, StoreError};
use otp_domain::message::MessageTemplate;
use otp_domain::sender::SenderId;

/// The account's senders; a stored value that is not a sender ID is left
/// out, so the route's own sender is used rather than a garbled one.
pub(super) fn senders_of(
    c: &Connection,
    account: AccountId,
) -> Result<Vec<AccountSender>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT route, sender, updated_at FROM account_senders WHERE account_id = ?1 \
             ORDER BY route",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map([account], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(map_err)?;
    Ok(collect(rows)?
        .into_iter()
        .filter_map(|(route, sender, updated_at)| {
            Some(AccountSender {
                route,
                sender: SenderId::from_stored(&sender)?,
                updated_at,
            })
        })
        .collect())
}

fn templates_of(c: &Connection, account: AccountId) -> Result<Vec<ApprovedTemplate>, StoreError> {
    let mut stmt = c
        .prepare_cached(
            "SELECT text, created_at FROM account_templates WHERE account_id = ?1 \
             ORDER BY created_at, text",
        )
        .map_err(map_err)?;
    let rows = stmt
        .query_map([account], |r| {
            Ok(ApprovedTemplate {
                text: r.get(0)?,
                created_at: r.get(1)?,
            })
        })
        .map_err(map_err)?;
    collect(rows)
}

/// `NotFound` unless the account exists.
fn require_account(c: &Connection, account: AccountId) -> Result<(), StoreError> {
    c.query_row(
        "SELECT 1 FROM accounts WHERE id = ?1",
        [account],
        |_| Ok(()),
    )
    .optional()
    .map_err(map_err)?
    .ok_or_else(|| StoreError::NotFound(format!("account {account}")))
}

#[async_trait::async_trait]
impl AccountRulesStore for SqliteStore {
    async fn account_templates(
        &self,
        account: AccountId,
    ) -> Result<Vec<ApprovedTemplate>, StoreError> {
        self.read(move |c| templates_of(c, account)).await
    }

    async fn add_account_template(
        &self,
        account: AccountId,
        template: &MessageTemplate,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let text = template.normalized();
        self.write(move |tx| {
            require_account(tx, account)?;
            let key = template_key(&text);
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM account_templates \
                     WHERE account_id = ?1 AND text_hash = ?2)",
                    params![account, key],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if known {
                return Ok(false);
            }
            let count: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM account_templates WHERE account_id = ?1",
                    [account],
                    |r| r.get(0),
                )
                .map_err(map_err)?;
            if count >= MAX_TEMPLATES as i64 {
                return Err(too_many());
            }
            tx.execute(
                "INSERT INTO account_templates (account_id, text_hash, text, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![account, key, text, now],
            )
            .map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn replace_account_templates(
        &self,
        account: AccountId,
        templates: Vec<MessageTemplate>,
        now: Micros,
    ) -> Result<Vec<ApprovedTemplate>, StoreError> {
        let distinct = distinct_templates(&templates)?;
        self.write(move |tx| {
            require_account(tx, account)?;
            tx.execute(
                "DELETE FROM account_templates WHERE account_id = ?1",
                [account],
            )
            .map_err(map_err)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO account_templates (account_id, text_hash, text, created_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(map_err)?;
            for (key, text) in &distinct {
                insert
                    .execute(params![account, key, text, now])
                    .map_err(map_err)?;
            }
            templates_of(tx, account)
        })
        .await
    }

    async fn remove_account_template(
        &self,
        account: AccountId,
        text: &str,
    ) -> Result<bool, StoreError> {
        let key = key_of_text(text);
        self.write(move |tx| {
            let removed = tx
                .execute(
                    "DELETE FROM account_templates WHERE account_id = ?1 AND text_hash = ?2",
                    params![account, key],
                )
                .map_err(map_err)?;
            Ok(removed > 0)
        })
        .await
    }

    async fn account_senders(&self, account: AccountId) -> Result<Vec<AccountSender>, StoreError> {
        self.read(move |c| senders_of(c, account)).await
    }

    async fn set_account_sender(
        &self,
        account: AccountId,
        route: &str,
        sender: &SenderId,
        now: Micros,
    ) -> Result<AccountSender, StoreError> {
        check_route(route)?;
        let set = AccountSender {
            route: route.to_owned(),
            sender: sender.clone(),
            updated_at: now,
        };
        self.write(move |tx| {
            require_account(tx, account)?;
            tx.execute(
                "INSERT INTO account_senders (account_id, route, sender, updated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account_id, route) \
                 DO UPDATE SET sender = excluded.sender, updated_at = excluded.updated_at",
                params![account, set.route, set.sender.as_str(), set.updated_at],
            )
            .map_err(map_err)?;
            Ok(set)
        })
        .await
    }

    async fn remove_account_sender(
        &self,
        account: AccountId,
        route: &str,
    ) -> Result<bool, StoreError> {
        let route = route.to_owned();
        self.write(move |tx| {
            let removed = tx
                .execute(
                    "DELETE FROM account_senders WHERE account_id = ?1 AND route = ?2",
                    params![account, route],
                )
                .map_err(map_err)?;
            Ok(removed > 0)
        })
        .await
    }
}
