//! The PostgreSQL store, for one or several nodes on one database.
//!
//! Sends are batched per node: a few batcher tasks, each serving its own share
//! of the accounts, each take whatever sends are waiting and commit them in one
//! transaction that locks the touched accounts (`FOR UPDATE`, in id order, so
//! two batches never deadlock) and writes the rows
//! with `UNNEST` multi-row statements, its independent statements pipelined (the
//! reads after the lock together, then the writes in two groups: about six round
//! trips while the locks are held). The row locks make balances exact however
//! many nodes send at once, and they serialize the per-destination limits too:
//! the recent sends to a number are read after its account is locked. Jobs are
//! claimed with `FOR UPDATE SKIP LOCKED`, so nodes share the outbox without
//! handing one job to two of them.
//!
//! Lists run on a pool of their own (`application_name` `otpgate-lists`) whose
//! sessions have a `statement_timeout`, so heavy lists of one account can
//! neither take the connections key checks and sends need nor run on without
//! end.

mod accept;
mod conversions;
mod fallback;
mod guard;
mod jobs;
mod prepared;
mod receipts;
mod retention;
mod routing;
mod rows;
mod rules;
mod users;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::migrate;
use crate::model::{VerifyStep, first_refusal, verify_event};
use crate::rows::{
    ACCOUNT_COLUMNS, KEY_COLUMNS, LEDGER_COLUMNS, OTP_COLUMNS, RESEND_HEAD_COLUMNS, VERIFY_COLUMNS,
};
use crate::webhooks::WebhookEvent;
use crate::*;
use otp_domain::vault::CodeVault;
use prepared::Prepared;

type AcceptReply = oneshot::Sender<Result<Accepted, AcceptError>>;

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// Only lists use these ([`StoreOptions::list_connections`]).
    lists: Pool,
    /// One queue per batcher; an account's sends all go to the same one.
    accepts: Vec<mpsc::UnboundedSender<(SealedOtp, AcceptReply)>>,
    vault: Arc<CodeVault>,
    limits: LiveLimits,
    /// What this process committed, for `/metrics`.
    conversions: Arc<crate::conversions::LiveTotals>,
}

/// Batcher tasks per node. Each takes the sends of its own share of the
/// accounts (the account id modulo this), so a node's batchers never wait for
/// one another's account locks: the sends of a busy account gather into one
/// batcher's next batch while its current one commits (measured: one hot
/// account, 2,552-2,645 sends/s with three batchers sharing every account,
/// 3,838-4,132/s with one; BENCHMARKS.md), and the sends of other accounts
/// commit alongside on the other batchers.
const BATCHERS: usize = 3;

impl PgStore {
    /// Connects, applies migrations (under an advisory lock, so nodes starting
    /// together do not race) and starts the batchers.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        let name = config
            .get_application_name()
            .unwrap_or("otpgate")
            .to_owned();
        config.application_name(&name);
        let mut list_config = config.clone();
        list_config.application_name(format!("{name}-lists"));
        // Statements are prepared once per connection ([`prepared`]). On the
        // main pool (sends, deliveries, receipts, verifies, lookups) each
        // statement finds its rows through an index, whatever the tables'
        // sizes: PostgreSQL's plan cache keeps one generic plan per statement
        // after five runs, so planning is not paid per run (measured: 26-48
        // us of the database's CPU per send; BENCHMARKS.md), and sequential
        // scans are turned off so that a plan made while a table was small
        // (a scan, which then reads the grown table in every run) is never
        // the one kept. A statement no index serves still scans. The list
        // pool's statements filter on what the caller chose, so each run is
        // planned with its values and sequential scans stay allowed.
        add_option(&mut config, "-c enable_seqscan=off");
        add_option(&mut list_config, "-c plan_cache_mode=force_custom_plan");
        if let Some(budget) = options.list_timeout.filter(|t| !t.is_zero()) {
            // Per session, so it covers every statement of the list pool and
            // nothing else; waiting for a lock counts too.
            add_option(
                &mut list_config,
                &format!("-c statement_timeout={}", budget.as_millis().max(1)),
            );
        }
        let pool = build_pool(config, options.connections.max(BATCHERS + 2))?;
        let lists = build_pool(list_config, options.list_connections.max(1))?;
        migrate_pg(&pool).await?;

        let limits = LiveLimits::new(options.limits);
        let mut accepts = Vec::with_capacity(BATCHERS);
        for _ in 0..BATCHERS {
            let (tx, rx) = mpsc::unbounded_channel();
            accepts.push(tx);
            tokio::spawn(accept::batcher(
                pool.clone(),
                rx,
                options.max_batch.max(1),
                limits.clone(),
            ));
        }
        Ok(PgStore {
            pool,
            lists,
            accepts,
            vault: options.vault.clone(),
            limits,
            conversions: Arc::default(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// Claims up to `$5` due jobs of channel `$4` for node `$2` until `$1` (`$3`
/// is now), with their OTPs.
fn claim_sql() -> &'static str {
    sql_once!(
        "WITH c AS (UPDATE delivery_jobs SET next_attempt_at = $1, lease_owner = $2, \
             attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT id FROM delivery_jobs \
             WHERE state = 'queued' AND channel = $4 AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) \
         RETURNING id, otp_id, attempts) \
         SELECT c.id, c.attempts, {OTP_COLUMNS} FROM c JOIN otps o ON o.id = c.otp_id ORDER BY c.id"
    )
}

/// Adds a session setting to those the URL gives (`options=...`).
fn add_option(config: &mut tokio_postgres::Config, option: &str) {
    let options = match config.get_options() {
        Some(given) => format!("{given} {option}"),
        None => option.to_owned(),
    };
    config.options(&options);
}

fn build_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// See [`crate::database_now_micros`].
pub(crate) async fn now_micros_at(url: &str) -> Result<Micros, StoreError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    let pool = build_pool(config, 1)?;
    let client = pool.get().await.map_err(pool_err)?;
    let row = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(row.get(0))
}

/// See [`crate::missing_migrations`].
pub(crate) async fn missing_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    let pool = build_pool(config, 1)?;
    let client = pool.get().await.map_err(pool_err)?;
    // The first release's table has neither column, and no otpgate_schema.
    let shape = client
        .query_one(
            "SELECT to_regclass('otpgate_migrations') IS NOT NULL, \
             to_regclass('otpgate_schema') IS NOT NULL, \
             EXISTS (SELECT 1 FROM information_schema.columns \
                     WHERE table_schema = current_schema() \
                     AND table_name = 'otpgate_migrations' AND column_name = 'checksum')",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let (exists, has_schema, has_checksums): (bool, bool, bool) =
        (shape.get(0), shape.get(1), shape.get(2));
    let recorded: Vec<migrate::Recorded> = if exists {
        let select = if has_checksums {
            migrate::SELECT_RECORDED
        } else {
            migrate::SELECT_FIRST_RELEASE
        };
        client
            .query(select, &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| migrate::Recorded {
                version: r.get(0),
                name: r.get(1),
                checksum: r.get(2),
                min_binary: r.get(3),
            })
            .collect()
    } else {
        Vec::new()
    };
    let floor: Option<String> = if has_schema {
        client
            .query_opt("SELECT min_binary FROM otpgate_schema WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0))
    } else {
        None
    };
    let plan = migrate::plan(
        migrate::POSTGRES,
        &recorded,
        floor.as_deref(),
        migrate::BINARY_VERSION,
    )?;
    Ok(crate::not_applied(&plan))
}

async fn migrate_pg(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_err)?;
    let tx = client.transaction().await.map_err(pg_err)?;
    // The first release takes the same lock, so old and new nodes starting
    // together migrate one at a time.
    tx.execute("SELECT pg_advisory_xact_lock(727100)", &[])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(migrate::CREATE_TABLES)
        .await
        .map_err(pg_err)?;
    for (column, kind) in migrate::ADD_COLUMNS {
        tx.batch_execute(&format!(
            "ALTER TABLE otpgate_migrations ADD COLUMN IF NOT EXISTS {column} {kind}"
        ))
        .await
        .map_err(pg_err)?;
    }
    let recorded: Vec<migrate::Recorded> = tx
        .query(migrate::SELECT_RECORDED, &[])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| migrate::Recorded {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
            min_binary: r.get(3),
        })
        .collect();
    let floor: Option<String> = tx
        .query_opt("SELECT min_binary FROM otpgate_schema WHERE id = 1", &[])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    let plan = migrate::plan(
        migrate::POSTGRES,
        &recorded,
        floor.as_deref(),
        migrate::BINARY_VERSION,
    )?;
    for m in &plan.stamp {
        tx.execute(
            "UPDATE otpgate_migrations SET checksum = $2, min_binary = $3 WHERE version = $1",
            &[&m.version, &m.checksum(), &m.min_binary],
        )
        .await
        .map_err(pg_err)?;
    }
    for m in &plan.apply {
        tx.batch_execute(m.sql).await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO otpgate_migrations (version, name, applied_at, checksum, min_binary) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &m.version,
                &m.name,
                &now_micros(),
                &m.checksum(),
                &m.min_binary,
            ],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    let floor_now = plan.floor.to_string();
    if plan.changes_records() || floor.as_deref() != Some(floor_now.as_str()) {
        tx.execute(
            "INSERT INTO otpgate_schema (id, min_binary, written_by, updated_at) \
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET \
             min_binary = excluded.min_binary, written_by = excluded.written_by, \
             updated_at = excluded.updated_at",
            &[&floor_now, &migrate::BINARY_VERSION, &now_micros()],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

fn limits_from_row(r: &Row) -> AccountLimits {
    AccountLimits {
        max_rps: r.get(0),
        daily_spend_cap: r.get(1),
        spend_day: r.get(2),
        spent: r.get(3),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        None => StoreError::Unavailable(e.to_string()),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
        Some(c) if *c == SqlState::DISK_FULL => StoreError::Full,
        // `statement_timeout`, set only on the list pool.
        Some(c) if *c == SqlState::QUERY_CANCELED => StoreError::TimedOut,
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("57P")
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            StoreError::Unavailable(e.to_string())
        }
        Some(_) => StoreError::Internal(e.to_string()),
    }
}

/// A row with its code decrypted and its status as shown at `now`.
impl PgStore {
    /// Claimed or leased jobs from rows of their id, their attempts and their
    /// OTP's columns, with their accounts' senders read on `c`
    /// ([`open_claimed`]).
    async fn open_jobs(
        &self,
        c: deadpool_postgres::Object,
        rows: Vec<Row>,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = now_micros();
        let otps = rows
            .iter()
            .map(|r| revealed(&self.vault, r, 2, now))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let accounts = distinct_accounts(otps.iter().map(|o| o.account_id));
        let senders = rules::senders_of(&c, &accounts).await?;
        drop(c);
        let rows = rows
            .iter()
            .zip(otps)
            .map(|(r, otp)| (r.get(0), r.get(1), otp))
            .collect();
        open_claimed(self, rows, &senders, now).await
    }
}

fn revealed(vault: &CodeVault, r: &Row, at: usize, now: Micros) -> Result<OtpRecord, StoreError> {
    let (mut record, code) = rows::otp(r, at)?;
    record.reveal(vault, &code, now);
    Ok(record)
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(p: &Params) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn set_send_limits(&self, limits: SendLimits) {
        self.limits.set(limits);
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }

    async fn create_account(
        &self,
        name: &str,
        sms: i64,
        phone: i64,
    ) -> Result<Account, StoreError> {
        if sms < 0 || phone < 0 {
            return Err(StoreError::Conflict(
                "opening credits cannot be negative".into(),
            ));
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let now = now_micros();
        let row = tx
            .query_one_cached(
                sql_once!(
                    "INSERT INTO accounts (name, sms_credits, phone_credits, created_at) \
                     VALUES ($1, $2, $3, $4) RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&name, &sms, &phone, &now],
            )
            .await
            .map_err(|e| match pg_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("an account named {name:?} exists"))
                }
                other => other,
            })?;
        let account = rows::account(&row)?;
        tx.execute_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, note, created_at) \
             VALUES ($1, 'topup', $2, $3, 'opening balance', $4)",
            &[&account.id, &sms, &phone, &now],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(account)
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                sql_once!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"),
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(rows::account).collect()
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref().map(rows::account).transpose()
    }

    async fn set_account_disabled(
        &self,
        id: AccountId,
        at: Option<Micros>,
    ) -> Result<Option<Account>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "UPDATE accounts SET disabled_at = CASE WHEN $2::int8 IS NULL THEN NULL \
                     ELSE COALESCE(disabled_at, $2::int8) END WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&id, &at],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| rows::account(&r)).transpose()
    }

    async fn set_account_fallback(
        &self,
        id: AccountId,
        default: Option<AccountFallback>,
    ) -> Result<Option<Account>, StoreError> {
        let (channel, after, voice) = AccountFallback::columns(default.as_ref());
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "UPDATE accounts SET fallback_channel = $2, fallback_after_seconds = $3, \
                     fallback_voice = $4 WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&id, &channel, &after, &voice],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| rows::account(&r)).transpose()
    }

    async fn add_credits(
        &self,
        id: AccountId,
        sms: i64,
        phone: i64,
        note: &str,
    ) -> Result<Account, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_opt_cached(
                sql_once!(
                    "UPDATE accounts SET sms_credits = sms_credits + $2, phone_credits = phone_credits + $3 \
                     WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}"
                ),
                &[&id, &sms, &phone],
            )
            .await
            .map_err(|e| match e.code() {
                Some(c) if *c == tokio_postgres::error::SqlState::CHECK_VIOLATION => {
                    StoreError::Conflict("a balance cannot go below zero".into())
                }
                _ => pg_err(e),
            })?
            .ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
        tx.execute_cached(
            "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, note, created_at) \
             VALUES ($1, 'topup', $2, $3, $4, $5)",
            &[&id, &sms, &phone, &note, &now_micros()],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        rows::account(&row)
    }

    async fn account_limits(&self, id: AccountId) -> Result<Option<AccountLimits>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                "SELECT max_rps, daily_spend_cap, spend_day, spend_today FROM accounts WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| limits_from_row(&r)))
    }

    async fn set_account_limits(
        &self,
        id: AccountId,
        max_rps: Option<i64>,
        daily_spend_cap: Option<i64>,
    ) -> Result<AccountLimits, StoreError> {
        check_limit_values(max_rps, daily_spend_cap)?;
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                "UPDATE accounts SET max_rps = $2, daily_spend_cap = $3 WHERE id = $1 \
                 RETURNING max_rps, daily_spend_cap, spend_day, spend_today",
                &[&id, &max_rps, &daily_spend_cap],
            )
            .await
            .map_err(pg_err)?
            .ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
        Ok(limits_from_row(&row))
    }

    async fn ledger(&self, id: AccountId) -> Result<Vec<LedgerEntry>, StoreError> {
        let c = self.client().await?;
        let found = c
            .query_cached(
                sql_once!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE account_id = $1 ORDER BY id"),
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        found.iter().map(rows::ledger_entry).collect()
    }

    async fn recent_ledger(
        &self,
        id: AccountId,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let c = self.client().await?;
        let found = c
            .query_cached(
                sql_once!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE account_id = $1 ORDER BY id DESC LIMIT $2"),
                &[&id, &i64::from(limit)],
            )
            .await
            .map_err(pg_err)?;
        found.iter().map(rows::ledger_entry).collect()
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        let c = self.client().await?;
        let hash: &[u8] = &key.secret_hash;
        let row = c
            .query_opt_cached(
                sql_once!(
                    "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, scopes) \
                     SELECT $1, id, $3, $4, $5, $6 FROM accounts WHERE id = $2 RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.key_id,
                    &key.account_id,
                    &hash,
                    &key.label,
                    &now_micros(),
                    &key.scopes.to_string(),
                ],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref()
            .map(rows::key)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("account {}", key.account_id)))
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = $1"),
                &[&key_id],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref().map(rows::key).transpose()
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                sql_once!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE $1::int8 IS NULL OR account_id = $1 ORDER BY id"
                ),
                &[&account],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(rows::key).collect()
    }

    async fn revoke_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let n = c
            .execute_cached(
                "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                &[&key_id, &now_micros()],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn touch_keys(&self, used: Vec<(i64, Micros)>) -> Result<(), StoreError> {
        let (ids, ats): (Vec<i64>, Vec<i64>) = used.into_iter().unzip();
        let c = self.client().await?;
        c.execute_cached(
            "UPDATE api_keys k SET last_used = GREATEST(COALESCE(k.last_used, 0), u.at) \
             FROM UNNEST($1::int8[], $2::int8[]) AS u(id, at) WHERE k.id = u.id",
            &[&ids, &ats],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn accept_leased(
        &self,
        otp: NewOtp,
        key: Option<IdempotencyKey>,
        lease: Option<JobLease>,
    ) -> Result<Accepted, AcceptError> {
        let counted = crate::conversions::accepted_key(&otp);
        // Sealed here, on the caller's task, before the send joins a batch.
        let mut sealed = SealedOtp::new(otp, &self.vault, lease);
        sealed.idempotency = key;
        let (reply, rx) = oneshot::channel();
        let batcher = sealed.otp.account_id.unsigned_abs() as usize % self.accepts.len();
        self.accepts[batcher]
            .send((sealed, reply))
            .map_err(|_| StoreError::Unavailable("the PostgreSQL batcher has stopped".into()))?;
        let accepted = rx
            .await
            .map_err(|_| StoreError::Unavailable("the PostgreSQL batcher has stopped".into()))??;
        self.conversions.add_sent(counted);
        Ok(accepted)
    }

    async fn list_otps(&self, q: &ListQuery) -> Result<OtpPage, StoreError> {
        let mut c = self.lists.get().await.map_err(pool_err)?;
        // One snapshot, so the count and the page agree.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let mut filter = String::from("o.account_id = $1");
        let mut args: Params = vec![Box::new(q.account_id)];
        if let Some(p) = &q.phone_number {
            args.push(Box::new(p.clone()));
            filter.push_str(&format!(" AND o.phone_number = ${}", args.len()));
        }
        if let Some(ch) = q.channel {
            args.push(Box::new(ch.as_str().to_owned()));
            filter.push_str(&format!(" AND o.channel = ${}", args.len()));
        }
        if let Some(status) = q.status {
            args.push(Box::new(status.as_str().to_owned()));
            filter.push_str(&status.filter_sql("o.", format!("${}", args.len())));
        }
        if let Some(from) = q.created_from {
            args.push(Box::new(from));
            filter.push_str(&format!(" AND o.created_at >= ${}", args.len()));
        }
        if let Some(before) = q.created_before {
            args.push(Box::new(before));
            filter.push_str(&format!(" AND o.created_at < ${}", args.len()));
        }
        let offset = q.offset.min(i64::MAX as u64) as i64;
        let (count, bound, skip) = if q.is_unfiltered() {
            // Gapless per-account numbers (past the retention purge's mark)
            // turn any offset into an index bound.
            let (newest, purged): (i64, i64) = tx
                .query_opt_cached(
                    "SELECT otp_count, otp_purged_through FROM accounts WHERE id = $1",
                    &[&q.account_id],
                )
                .await
                .map_err(pg_err)?
                .map(|r| (r.get(0), r.get(1)))
                .unwrap_or((0, 0));
            let bound = q.before_seq.unwrap_or(newest.saturating_sub(offset) + 1);
            (newest - purged, Some(bound), 0)
        } else {
            let count: i64 = match q.known_count {
                Some(n) => n.min(i64::MAX as u64) as i64,
                None => tx
                    .query_one(
                        &format!("SELECT COUNT(*) FROM otps o WHERE {filter}"),
                        &refs(&args),
                    )
                    .await
                    .map_err(pg_err)?
                    .get(0),
            };
            match q.before_seq {
                Some(b) => (count, Some(b), 0),
                None => (count, None, offset),
            }
        };
        if let Some(b) = bound {
            args.push(Box::new(b));
            filter.push_str(&format!(" AND o.account_seq < ${}", args.len()));
        }
        args.push(Box::new(i64::from(q.limit)));
        args.push(Box::new(skip));
        let sql = format!(
            "SELECT {OTP_COLUMNS} FROM otps o WHERE {filter} ORDER BY o.account_seq DESC LIMIT ${} OFFSET ${}",
            args.len() - 1,
            args.len()
        );
        let rows = tx.query(&sql, &refs(&args)).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(OtpPage {
            count: count.max(0) as u64,
            items: {
                let now = now_micros();
                rows.iter()
                    .map(|r| revealed(&self.vault, r, 0, now))
                    .collect::<Result<_, _>>()?
            },
        })
    }

    async fn otp(&self, account: AccountId, id: i64) -> Result<Option<OtpRecord>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                sql_once!("SELECT {OTP_COLUMNS} FROM otps o WHERE o.id = $1 AND o.account_id = $2"),
                &[&id, &account],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| revealed(&self.vault, &r, 0, now_micros()))
            .transpose()
    }

    async fn otp_verified(&self, account: AccountId, id: i64) -> Result<Option<bool>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt_cached(
                "SELECT verified_at IS NOT NULL FROM otps WHERE id = $1 AND account_id = $2",
                &[&id, &account],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn list_all_otps(&self, q: &AllOtpsQuery) -> Result<Vec<OtpRecord>, StoreError> {
        let c = self.lists.get().await.map_err(pool_err)?;
        let mut filter = String::from("TRUE");
        let mut args: Params = Vec::new();
        if let Some(id) = q.id {
            args.push(Box::new(id));
            filter.push_str(&format!(" AND o.id = ${}", args.len()));
        }
        if let Some(p) = &q.phone_number {
            args.push(Box::new(p.clone()));
            // Each account's (account_id, phone_number) index: the rows of
            // this number, not every OTP.
            filter.push_str(&format!(
                " AND o.account_id = ANY(ARRAY(SELECT id FROM accounts)) AND o.phone_number = ${}",
                args.len()
            ));
        }
        if let Some(status) = q.status {
            args.push(Box::new(status.as_str().to_owned()));
            filter.push_str(&status.filter_sql("o.", format!("${}", args.len())));
        }
        if let Some(before) = q.before_id {
            args.push(Box::new(before));
            filter.push_str(&format!(" AND o.id < ${}", args.len()));
        }
        args.push(Box::new(i64::from(q.limit)));
        let sql = format!(
            "SELECT {OTP_COLUMNS} FROM otps o WHERE {filter} ORDER BY o.id DESC LIMIT ${}",
            args.len()
        );
        let rows = c.query(&sql, &refs(&args)).await.map_err(pg_err)?;
        let now = now_micros();
        rows.iter()
            .map(|r| revealed(&self.vault, r, 0, now))
            .collect()
    }

    async fn resend_head(&self, q: ResendQuery) -> Result<Option<ResendHead>, StoreError> {
        let c = self.client().await?;
        // The newest live record, then its chain's first record.
        let row = c
            .query_opt_cached(
                sql_once!(
                    "SELECT {RESEND_HEAD_COLUMNS} FROM otps o WHERE o.id = (\
                     SELECT COALESCE(n.resend_of, n.id) FROM otps n WHERE n.account_id = $1 \
                     AND n.e164 = $2 AND n.api_key_id = $3 AND n.otp_options = 'generated' \
                     AND n.verified_at IS NULL AND n.otp_hash IS NOT NULL AND n.expires_at > $4 \
                     AND n.verify_attempts < $5 AND n.created_at > $6 \
                     ORDER BY n.created_at DESC, n.account_seq DESC LIMIT 1) \
                     AND o.account_id = $1"
                ),
                &[
                    &q.account_id,
                    &q.e164,
                    &q.api_key_id,
                    &q.now,
                    &q.max_attempts,
                    &q.created_after,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(row
            .map(|r| crate::rows::resend_head(&r, &self.vault))
            .transpose()?
            .flatten())
    }

    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        let c = self.client().await?;
        let limit = claim.limit as i64;
        let rows = c
            .query_cached(
                claim_sql(),
                &[
                    &claim.lease_until,
                    &claim.node,
                    &claim.now,
                    &claim.channel.as_str(),
                    &limit,
                ],
            )
            .await
            .map_err(pg_err)?;
        self.open_jobs(c, rows).await
    }

    async fn leased_jobs(&self, jobs: Vec<LeasedJob>) -> Result<Vec<ClaimedJob>, StoreError> {
        let c = self.client().await?;
        let accounts = distinct_accounts(jobs.iter().map(|j| j.otp.account_id));
        let senders = rules::senders_of(&c, &accounts).await?;
        drop(c);
        Ok(handed_jobs(jobs, &senders, now_micros()))
    }

    async fn finish_jobs(&self, results: Vec<JobResult>) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let changes = jobs::finish_all(&tx, &results).await?;
        let tally = conversions::record(&tx, [], &changes).await?;
        tx.commit().await.map_err(pg_err)?;
        self.conversions.add(&tally);
        Ok(())
    }

    async fn record_receipts(
        &self,
        receipts: Vec<Receipt>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let mut out = Vec::with_capacity(receipts.len());
        let mut changes = Vec::new();
        let mut refunds = Vec::new();
        for rc in &receipts {
            out.push(receipts::apply(&tx, rc, &mut changes, &mut refunds).await?);
        }
        receipts::pay_refunds(&tx, refunds).await?;
        let tally = conversions::record(&tx, [], &changes).await?;
        tx.commit().await.map_err(pg_err)?;
        self.conversions.add(&tally);
        Ok(out)
    }

    async fn otp_history(&self, otp_id: i64) -> Result<(Vec<OtpEvent>, Vec<String>), StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT status, at, route, detail, error_code FROM otp_events WHERE otp_id = $1 ORDER BY id",
                &[&otp_id],
            )
            .await
            .map_err(pg_err)?;
        let events = rows
            .iter()
            .map(|r| OtpEvent {
                status: r.get(0),
                at: r.get(1),
                route: r.get(2),
                detail: r.get(3),
                error_code: r.get(4),
            })
            .collect();
        let ids = c
            .query_cached(
                "SELECT message_id FROM provider_messages WHERE otp_id = $1 ORDER BY part",
                &[&otp_id],
            )
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((events, ids))
    }

    async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query_cached(
                "SELECT channel, COUNT(*) FROM delivery_jobs WHERE state = 'queued' GROUP BY channel",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn verify(&self, req: VerifyRequest) -> Result<VerifyOutcome, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // The row is found first, then its chain's first record (the row
        // itself unless it is a resend) is locked (FOR UPDATE) and read again
        // from the check to the commit: two verifications of one code, by
        // any of its records, take turns, and the second sees the first's
        // result. Only first records are locked before the chain is written,
        // in the order the accepting batches take them.
        let row = match (req.otp_id, &req.phone_number) {
            (Some(id), number) => tx
                .query_opt_cached(
                    sql_once!(
                        "SELECT {VERIFY_COLUMNS} FROM otps WHERE id = $1 AND account_id = $2 \
                         AND ($3::text IS NULL OR phone_number = $3)"
                    ),
                    &[&id, &req.account_id, number],
                )
                .await
                .map_err(pg_err)?,
            (None, Some(number)) => {
                let live = tx
                    .query_opt_cached(
                        sql_once!(
                            "SELECT {VERIFY_COLUMNS} FROM otps WHERE account_id = $1 AND phone_number = $2 \
                             AND ($5::int8 IS NULL OR api_key_id = $5) \
                             AND verified_at IS NULL AND otp_hash IS NOT NULL AND expires_at > $3 \
                             AND verify_attempts < $4 ORDER BY account_seq DESC LIMIT 1"
                        ),
                        &[&req.account_id, number, &req.now, &req.max_attempts, &req.api_key_id],
                    )
                    .await
                    .map_err(pg_err)?;
                match live {
                    Some(row) => Some(row),
                    None => tx
                        .query_opt_cached(
                            sql_once!(
                                "SELECT {VERIFY_COLUMNS} FROM otps WHERE account_id = $1 \
                                 AND phone_number = $2 AND ($3::int8 IS NULL OR api_key_id = $3) \
                                 ORDER BY account_seq DESC LIMIT 1"
                            ),
                            &[&req.account_id, number, &req.api_key_id],
                        )
                        .await
                        .map_err(pg_err)?,
                }
            }
            (None, None) => None,
        };
        let Some(row) = row else {
            return Ok(VerifyOutcome::NotFound);
        };
        let row = rows::verify(&row)?;
        let head = row.head();
        let shared = tx
            .query_opt_cached(
                sql_once!("SELECT {VERIFY_COLUMNS} FROM otps WHERE id = $1 FOR UPDATE"),
                &[&head],
            )
            .await
            .map_err(pg_err)?
            .ok_or_else(|| StoreError::Internal("a resend's first record is missing".into()))?;
        let shared = rows::verify(&shared)?;
        let row = if row.id == head {
            shared
        } else {
            row.sharing(&shared)
        };
        let (outcome, recorded) = match row.step(&req, &self.vault) {
            VerifyStep::Verify => {
                // The records whose message failed keep that status (and
                // their refund); all stop verifying.
                tx.execute_cached(
                    "UPDATE otps SET verified_at = $2, \
                     status = CASE WHEN id = $3 OR status IN ('queued', 'sent', 'delivered') \
                     THEN 'verified' ELSE status END, \
                     status_at = CASE WHEN id = $3 OR status IN ('queued', 'sent', 'delivered') \
                     THEN $2 ELSE status_at END \
                     WHERE id = $1 OR resend_of = $1",
                    &[&head, &req.now, &row.id],
                )
                .await
                .map_err(pg_err)?;
                // In this transaction: once it commits, no scan finds the
                // call due (a scan holding the row makes this wait, and
                // then the call was started before the verification).
                fallback::cancel_pending(&tx, head, req.now).await?;
                (
                    VerifyOutcome::Verified {
                        id: row.id,
                        verified_at: req.now,
                    },
                    true,
                )
            }
            VerifyStep::Fail => {
                let attempts: i64 = tx
                    .query_one_cached(
                        "UPDATE otps SET verify_attempts = verify_attempts + 1 WHERE id = $1 \
                         RETURNING verify_attempts",
                        &[&head],
                    )
                    .await
                    .map_err(pg_err)?
                    .get(0);
                tx.execute_cached(
                    "UPDATE otps SET verify_attempts = $2 WHERE resend_of = $1 \
                     AND verify_attempts <> $2",
                    &[&head, &attempts],
                )
                .await
                .map_err(pg_err)?;
                (
                    VerifyOutcome::WrongCode {
                        id: row.id,
                        attempts_remaining: (req.max_attempts - attempts).max(0),
                    },
                    true,
                )
            }
            VerifyStep::Refuse(outcome) => {
                let refusals: i64 = tx
                    .query_one_cached(
                        "UPDATE otps SET verify_refusals = verify_refusals + 1 WHERE id = $1 \
                         RETURNING verify_refusals",
                        &[&head],
                    )
                    .await
                    .map_err(pg_err)?
                    .get(0);
                (outcome, first_refusal(refusals))
            }
            VerifyStep::Done(outcome) => return Ok(outcome),
        };
        if let Some((status, detail)) =
            verify_event(&outcome, req.max_attempts).filter(|_| recorded)
        {
            tx.execute_cached(
                "INSERT INTO otp_events (otp_id, status, at, detail) VALUES ($1, $2, $3, $4)",
                &[&row.id, &status, &req.now, &detail],
            )
            .await
            .map_err(pg_err)?;
        }
        if let Some(hook) = WebhookEvent::for_verify(&outcome) {
            webhooks::enqueue(&tx, row.id, hook, req.now).await?;
        }
        let changes: Vec<_> = crate::conversions::from_verify(&outcome)
            .into_iter()
            .collect();
        let tally = conversions::record(&tx, [], &changes).await?;
        tx.commit().await.map_err(pg_err)?;
        self.conversions.add(&tally);
        Ok(outcome)
    }

    async fn start_fallbacks(&self, now: Micros, limit: usize) -> Result<FallbackScan, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_err)?;
        let scan = fallback::start_due(&tx, now, limit).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(scan)
    }

    async fn purge_codes(&self, expired_before: Micros) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let mut total = 0;
        loop {
            // Chunks, so no statement holds many row locks for long.
            let n = c
                .execute_cached(
                    "UPDATE otps SET otp_cipher = NULL, otp_hash = NULL, key_id = NULL \
                     WHERE id IN (SELECT id FROM otps WHERE otp_cipher IS NOT NULL \
                     AND expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&expired_before, &PURGE_CHUNK],
                )
                .await
                .map_err(pg_err)?;
            total += n;
            if (n as i64) < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(options: StoreOptions) -> PgStore {
        PgStore::open(&crate::test_support::fresh_pg_database().await, &options)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn key_checks_and_sends_do_not_need_a_list_connection() {
        let store = store(StoreOptions {
            list_connections: 2,
            ..StoreOptions::default()
        })
        .await;
        let account = store.create_account("acme", 10, 0).await.unwrap();
        // Every list connection taken, as by lists that run long.
        let taken = (
            store.lists.get().await.unwrap(),
            store.lists.get().await.unwrap(),
        );
        assert_eq!(store.lists.status().available, 0);
        assert_eq!(store.find_key("abcdefghijkm").await.unwrap(), None);
        let accepted = store
            .accept(crate::test_support::sample_otp(account.id))
            .await
            .unwrap();
        let otp = store.otp(account.id, accepted.id).await.unwrap().unwrap();
        assert_eq!(otp.code.shown(), "482193");
        drop(taken);
        let page = store
            .list_otps(&ListQuery {
                account_id: account.id,
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.count, 1);
    }

    /// Migration 28: the index of a reading of ids (hex as decimal, decimal
    /// as hex) holds only the parts whose id has it, the text form's only the
    /// parts whose text form is not their id as written (the contract test
    /// `every_kind_of_id_is_found_by_another_spelling` looks them up).
    /// ANALYZE sets a partial index's `reltuples` to the rows its condition
    /// holds for (the table's sample is the whole table here).
    #[tokio::test]
    async fn parts_without_another_reading_of_their_id_stay_out_of_its_index() {
        let store = store(StoreOptions::default()).await;
        let c = store.client().await.unwrap();
        for (n, (id, f)) in crate::receipts::id_kinds().into_iter().enumerate() {
            c.execute(
                "INSERT INTO provider_messages (route, message_id, otp_id, part, parts, \
                 id_text, id_hex_decimal, id_decimal_hex) VALUES ('smsc', $1, $2, 1, 1, $3, $4, $5)",
                &[&id, &(n as i64 + 1), &f.text, &f.hex_as_decimal, &f.decimal_as_hex],
            )
            .await
            .unwrap();
        }
        c.batch_execute("ANALYZE provider_messages").await.unwrap();
        let entries = |index: &'static str| {
            let c = &c;
            async move {
                let n: f32 = c
                    .query_one(
                        "SELECT reltuples FROM pg_class WHERE relname = $1",
                        &[&index],
                    )
                    .await
                    .unwrap()
                    .get(0);
                n
            }
        };
        for (index, want) in crate::receipts::ID_KIND_ENTRIES {
            assert_eq!(entries(index).await, want as f32, "{index}");
        }
    }

    /// The plan PostgreSQL would run for `sql`, as `EXPLAIN` prints it.
    async fn explain(
        c: &tokio_postgres::Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> String {
        let rows = c.query(&format!("EXPLAIN {sql}"), params).await.unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The main pool keeps one generic plan per statement and never a
    /// sequential scan, even for a plan made while the tables are empty.
    /// Without `enable_seqscan = off`, the finished batch's job update keeps a
    /// hash join over a scan of `delivery_jobs`, which then reads the whole
    /// grown table in every batch. The list pool plans each run and may scan.
    #[tokio::test]
    async fn the_main_pool_keeps_index_plans_made_on_empty_tables_and_lists_plan_each_run() {
        let store = store(StoreOptions::default()).await;
        let c = store.client().await.unwrap();
        async fn show(c: &tokio_postgres::Client, name: &str) -> String {
            let sql = format!("SHOW {name}");
            c.query_one(&sql, &[]).await.unwrap().get(0)
        }
        assert_eq!(show(&c, "enable_seqscan").await, "off");
        assert_eq!(show(&c, "plan_cache_mode").await, "auto");
        let lists = store.lists.get().await.unwrap();
        assert_eq!(show(&lists, "enable_seqscan").await, "on");
        assert_eq!(show(&lists, "plan_cache_mode").await, "force_custom_plan");

        // The claim (a data-modifying CTE) and a finished batch's job update
        // (a join with the batch's arrays), prepared as the pool prepares
        // them, run six times on empty tables, then explained.
        for (name, types, sql, args) in [
            (
                "claim",
                "int8, text, int8, text, int8",
                claim_sql(),
                "10, 'node', 1, 'sms', 64",
            ),
            (
                "finish",
                "int8[], text[], text[], int8[], int8[]",
                jobs::FINISH_JOBS,
                "'{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20}', \
                 array_fill('done'::text, '{20}'), array_fill(NULL::text, '{20}'), \
                 array_fill(NULL::int8, '{20}'), array_fill(1::int8, '{20}')",
            ),
        ] {
            c.batch_execute(&format!("PREPARE {name}({types}) AS {sql}"))
                .await
                .unwrap();
            let run = format!("EXECUTE {name}({args})");
            for _ in 0..6 {
                c.execute(&run, &[]).await.unwrap();
            }
            let generic: i64 = c
                .query_one(
                    "SELECT generic_plans FROM pg_prepared_statements WHERE name = $1",
                    &[&name],
                )
                .await
                .unwrap()
                .get(0);
            assert!(generic >= 1, "{name}: no generic plan was kept");
            let text = explain(&c, &run, &[]).await;
            assert!(!text.contains("Seq Scan"), "{name}: {text}");
        }
    }

    /// The receipt lookup's plan on PostgreSQL, as `sqlite::receipts`'s test
    /// pins SQLite's: each branch one search of its own index, the partial
    /// ones of migration 28 included (their conditions proven from the
    /// branch's). Sequential scans are turned off, as the tables are empty:
    /// an index the planner could not prove usable would leave a branch on
    /// another index or on a scan.
    #[tokio::test]
    async fn a_receipt_lookup_is_index_searches_only() {
        let store = store(StoreOptions::default()).await;
        let c = store.client().await.unwrap();
        c.batch_execute("SET enable_seqscan = off").await.unwrap();
        let ids = |v: &str| vec![Some(v.to_owned())];
        let text = explain(
            &c,
            receipts::CANDIDATES,
            &[
                &"smsc",
                &ids("0x1F"),
                &ids("1f"),
                &ids("31"),
                &vec![None::<String>],
                &ids("1f"),
                &vec![true],
                &vec![true],
                &(crate::receipts::MAX_CANDIDATES * 4),
            ],
        )
        .await;
        assert!(!text.contains("Seq Scan"), "{text}");
        for index in [
            "provider_messages_pkey",
            "provider_messages_id_text",
            "provider_messages_id_hex_decimal",
            "provider_messages_id_decimal_hex",
        ] {
            assert!(
                text.contains(&format!(" using {index} on ")),
                "{index}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn only_list_statements_are_stopped_at_the_budget() {
        let store = store(StoreOptions {
            list_timeout: Some(Duration::from_millis(100)),
            ..StoreOptions::default()
        })
        .await;
        let list = store.lists.get().await.unwrap();
        let stopped = list.query("SELECT pg_sleep(30)", &[]).await.map_err(pg_err);
        assert!(matches!(stopped, Err(StoreError::TimedOut)), "{stopped:?}");
        // The other pool has no budget: three times the list budget is fine.
        let main = store.client().await.unwrap();
        main.query("SELECT pg_sleep(0.3)", &[]).await.unwrap();
        let names: Vec<String> = main
            .query(
                "SELECT application_name FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name LIKE 'otpgate%' \
                 ORDER BY application_name",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(names.contains(&"otpgate-lists".to_owned()), "{names:?}");
        assert!(names.contains(&"otpgate".to_owned()), "{names:?}");
    }
}
