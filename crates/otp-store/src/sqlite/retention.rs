//! [`RetentionStore`] for the sqlite backend: every chunk is one write of the
//! writer, so a purge never holds up sends for longer than one chunk, and the
//! judgement of a chunk and its deletes see the same data. Also the online
//! backup and the restore of a database file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, params};

use super::{SqliteStore, collect, map_err};
use crate::retention::{
    Candidate, PurgeReport, PurgeSteps, RetentionRules, RetentionStore, Sweep, due_accounts_sql,
    live_sql, purge, purgeable_run,
};
use crate::{AccountId, Micros, StoreError};

/// The OTP ids of one account between two of its numbers: ?1 account, ?2 the
/// last number already purged, ?3 the last one purged now.
const RUN: &str =
    "SELECT id FROM otps WHERE account_id = ?1 AND account_seq > ?2 AND account_seq <= ?3";

#[async_trait::async_trait]
impl RetentionStore for SqliteStore {
    async fn purge_expired_rows(&self, rules: RetentionRules) -> Result<PurgeReport, StoreError> {
        purge(self, rules).await
    }
}

#[async_trait::async_trait]
impl PurgeSteps for SqliteStore {
    async fn sweep_chunk(&self, sweep: &Sweep, chunk: i64) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE rowid IN \
             (SELECT rowid FROM {table} WHERE {filter} LIMIT ?2)",
            table = sweep.table,
            filter = sweep.filter("?1"),
        );
        let bound = sweep.bound;
        let n = self
            .write(move |tx| {
                tx.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(params![bound, chunk]))
                    .map_err(map_err)
            })
            .await?;
        Ok(n as u64)
    }

    async fn due_accounts(&self, cutoff: Micros) -> Result<Vec<AccountId>, StoreError> {
        self.read(move |c| {
            let mut s = c.prepare(&due_accounts_sql("?1")).map_err(map_err)?;
            collect(s.query_map([cutoff], |r| r.get(0)).map_err(map_err)?)
        })
        .await
    }

    /// Never `None`: the writer runs one chunk at a time.
    async fn purge_chunk(
        &self,
        account: AccountId,
        cutoff: Micros,
        now: Micros,
        chunk: i64,
    ) -> Result<Option<u64>, StoreError> {
        self.write(move |tx| purge_chunk(tx, account, cutoff, now, chunk))
            .await
            .map(Some)
    }
}

/// One chunk of one account: judge its oldest OTPs, remove the run that may go
/// with everything hanging off it, and move the account's mark. Returns how
/// many OTPs went.
fn purge_chunk(
    tx: &Transaction<'_>,
    account: AccountId,
    cutoff: Micros,
    now: Micros,
    chunk: i64,
) -> Result<u64, StoreError> {
    let Some(through): Option<i64> = tx
        .prepare_cached("SELECT otp_purged_through FROM accounts WHERE id = ?1")
        .and_then(|mut s| {
            rusqlite::OptionalExtension::optional(s.query_row([account], |r| r.get(0)))
        })
        .map_err(map_err)?
    else {
        return Ok(0);
    };
    let candidates = {
        let mut s = tx
            .prepare_cached(&format!(
                "SELECT o.id, o.account_seq, o.created_at, NOT {} FROM otps o \
                 WHERE o.account_id = ?1 AND o.account_seq > ?2 ORDER BY o.account_seq LIMIT ?3",
                live_sql("?4", "?5")
            ))
            .map_err(map_err)?;
        let rows = s
            .query_map(params![account, through, chunk, cutoff, now], |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    account_seq: r.get(1)?,
                    created_at: r.get(2)?,
                    purgeable: r.get(3)?,
                })
            })
            .map_err(map_err)?;
        // Stepping stops at the first OTP that stays: the rest are not read.
        let mut list = Vec::new();
        for row in rows {
            let c = row.map_err(map_err)?;
            let stop = !c.purgeable;
            list.push(c);
            if stop {
                break;
            }
        }
        list
    };
    let run = purgeable_run(&candidates);
    if run.ids.is_empty() {
        return Ok(0);
    }
    for statement in [
        "DELETE FROM webhook_attempts WHERE delivery_id IN \
         (SELECT id FROM webhook_deliveries WHERE otp_id IN (RUN))",
        "DELETE FROM webhook_deliveries WHERE otp_id IN (RUN)",
        "DELETE FROM otp_events WHERE otp_id IN (RUN)",
        "DELETE FROM provider_messages WHERE otp_id IN (RUN)",
        "DELETE FROM delivery_jobs WHERE otp_id IN (RUN)",
    ] {
        tx.prepare_cached(&statement.replace("RUN", RUN))
            .and_then(|mut s| s.execute(params![account, through, run.through]))
            .map_err(map_err)?;
    }
    tx.prepare_cached(&format!(
        "DELETE FROM idempotency WHERE created_at <= ?4 AND otp_id IN ({RUN})"
    ))
    .and_then(|mut s| {
        s.execute(params![
            account,
            through,
            run.through,
            run.newest_created_at
        ])
    })
    .map_err(map_err)?;
    let removed = tx
        .prepare_cached(
            "DELETE FROM otps WHERE account_id = ?1 AND account_seq > ?2 AND account_seq <= ?3",
        )
        .and_then(|mut s| s.execute(params![account, through, run.through]))
        .map_err(map_err)?;
    tx.prepare_cached("UPDATE accounts SET otp_purged_through = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![account, run.through]))
        .map_err(map_err)?;
    Ok(removed as u64)
}

/// How a backup or restore went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Database pages copied.
    pub pages: u64,
    /// The copy's `PRAGMA integrity_check`: "ok", or what it found.
    pub integrity: String,
}

/// Copies the live database at `source` into the new file `dest` with SQLite's
/// online backup, in one step: the copy is one read transaction of the source,
/// so it is consistent (every committed send or none of a batch) while the
/// service keeps writing (in WAL mode a reader does not block the writer).
/// `dest` must not exist. The copy is checked with `PRAGMA integrity_check`.
pub fn backup(source: &Path, dest: &Path) -> Result<CopyReport, StoreError> {
    if !source.exists() {
        return Err(StoreError::NotFound(format!(
            "no database at {}",
            source.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::Conflict(format!(
            "{} exists already; give a new file",
            dest.display()
        )));
    }
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    src.busy_timeout(Duration::from_secs(30)).map_err(map_err)?;
    let mut out = Connection::open(dest).map_err(map_err)?;
    let pages = copy_all(&src, &mut out)?;
    // The copy is a plain file: no WAL beside it to carry around.
    out.pragma_update(None, "journal_mode", "DELETE")
        .map_err(map_err)?;
    let integrity = integrity_check(&out)?;
    Ok(CopyReport { pages, integrity })
}

/// Writes the backup at `backup` into the database at `dest` (created if
/// missing, replaced if `replace`), after checking the backup's integrity and
/// that it is an otpgate database. Every otpgate using `dest` must be stopped
/// first: the copy replaces the database under them.
pub fn restore(backup: &Path, dest: &Path, replace: bool) -> Result<CopyReport, StoreError> {
    let src =
        Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(map_err)?;
    let found = integrity_check(&src)?;
    if found != "ok" {
        return Err(StoreError::Conflict(format!(
            "the backup {} fails its integrity check: {found}",
            backup.display()
        )));
    }
    let migrated: bool = src
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'otpgate_migrations'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if !migrated {
        return Err(StoreError::Conflict(format!(
            "{} is not an otpgate database",
            backup.display()
        )));
    }
    if dest.exists() && !replace {
        return Err(StoreError::Conflict(format!(
            "{} exists; stop every otpgate using it and pass --replace to overwrite it",
            dest.display()
        )));
    }
    let mut out = Connection::open(dest).map_err(map_err)?;
    out.busy_timeout(Duration::from_secs(5)).map_err(map_err)?;
    let pages = copy_all(&src, &mut out)?;
    let integrity = integrity_check(&out)?;
    Ok(CopyReport { pages, integrity })
}

/// How often a copy is tried while the database is locked (50 ms apart).
const COPY_TRIES: u32 = 600;

/// Every page of `src` into `dest`, in one step.
fn copy_all(src: &Connection, dest: &mut Connection) -> Result<u64, StoreError> {
    let backup = rusqlite::backup::Backup::new(src, dest).map_err(map_err)?;
    // -1: all pages at once, under one read lock of the source. Smaller steps
    // would restart whenever the service commits in between.
    for _ in 0..COPY_TRIES {
        match backup.step(-1).map_err(map_err)? {
            rusqlite::backup::StepResult::Done => {
                return Ok(backup.progress().pagecount.max(0) as u64);
            }
            // Busy or locked (or a step left pages): try again shortly.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Err(StoreError::Unavailable(
        "the database stayed locked; nothing was copied".into(),
    ))
}

fn integrity_check(c: &Connection) -> Result<String, StoreError> {
    let mut s = c.prepare("PRAGMA integrity_check").map_err(map_err)?;
    let lines = collect(
        s.query_map([], |r| r.get::<_, String>(0))
            .map_err(map_err)?,
    )?;
    Ok(lines.join("; "))
}
