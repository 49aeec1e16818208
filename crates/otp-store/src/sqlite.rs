//! The embedded SQLite store.
//!
//! One writer thread owns the only writable connection. Callers hand it operations
//! over a channel; it drains whatever is queued (up to `max_batch`), runs it all in
//! one `BEGIN IMMEDIATE` transaction and answers every caller only after `COMMIT`
//! returned. With `synchronous = FULL` that commit is the fsync, so a reply means
//! the write is on disk, and a burst of sends shares one fsync (group commit).
//! Reads go to a small pool of read-only connections on blocking threads; in WAL
//! mode they never wait for the writer. The few reads on the hot paths (the
//! resend lookup every generated send makes, an OTP by id, a handful of
//! receipt ids) are a row by id or a few index searches: they run on the
//! caller's thread when a read connection is free (`read_point`), sparing the
//! hand-off to a blocking thread and back, two thread wake-ups per read
//! (`BENCHMARKS.md` has what it bought). Lists have read connections of their
//! own, each with a progress handler that stops a query past its time budget,
//! so heavy lists can neither take the connections key checks need nor run on
//! without end.

mod accept;
mod conversions;
mod fallback;
mod guard;
mod jobs;
mod receipts;
mod retention;
mod routing;
mod rows;
mod rules;
mod users;
mod webhooks;

pub use retention::{CopyReport, backup, restore};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::migrate::{self, Migration};
use crate::model::{VerifyStep, first_refusal, verify_event};
use crate::rows::{
    ACCOUNT_COLUMNS, KEY_COLUMNS, LEDGER_COLUMNS, OTP_COLUMNS, OtpRow, RESEND_HEAD_COLUMNS,
    VERIFY_COLUMNS,
};
use crate::webhooks::WebhookEvent;
use crate::*;
use otp_domain::vault::CodeVault;

/// Sends a caller its answer once the batch's commit is known.
type Finisher = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write run inside the batch's transaction (`None`: no transaction could begin).
type Job = Box<dyn FnOnce(Option<&Transaction<'_>>) -> Finisher + Send>;

enum WriteOp {
    Accept(
        Box<SealedOtp>,
        oneshot::Sender<Result<Accepted, AcceptError>>,
    ),
    Other(Job),
}

/// The SQLite store; cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<WriteOp>,
    readers: Arc<ReadPool>,
    /// Only lists read here ([`StoreOptions::list_connections`]).
    lists: Arc<ReadPool>,
    vault: Arc<CodeVault>,
    limits: LiveLimits,
    /// What this process committed, for `/metrics`.
    conversions: Arc<crate::conversions::LiveTotals>,
}

struct ReadPool {
    conns: Mutex<Vec<Reader>>,
    permits: Semaphore,
    /// How long one read may run before it is interrupted (`None`: no limit).
    budget: Option<Duration>,
    /// How long a read waits for a free connection (`None`: until one is free).
    wait: Option<Duration>,
}

impl ReadPool {
    fn new(readers: Vec<Reader>, budget: Option<Duration>, wait: Option<Duration>) -> Self {
        ReadPool {
            permits: Semaphore::new(readers.len()),
            conns: Mutex::new(readers),
            budget,
            wait,
        }
    }
}

/// A read-only connection and when the read running on it must stop.
struct Reader {
    conn: Connection,
    /// On [`monotonic_nanos`]'s clock; 0: no deadline.
    deadline: Arc<AtomicU64>,
}

/// SQLite calls the progress handler after this many virtual machine
/// instructions: often enough to stop within a millisecond or so of the
/// deadline, rarely enough to cost nothing measurable.
const PROGRESS_OPS: i32 = 1000;

/// How long a list waits for a list connection before it is refused as
/// unavailable (503), like PostgreSQL's pool wait.
const LIST_POOL_WAIT: Duration = Duration::from_secs(5);

/// The page cache of the writer, in KiB. The store's memory is mostly page
/// caches, so each connection's is bounded and together they stay within
/// the server's memory target (under 100 MB resident, see BENCHMARKS.md):
/// the writer 32,000 KiB, each of the 8 default read connections 2,000 KiB,
/// each of the 4 default list connections 4,000 KiB; 64,000 KiB in all,
/// under the 80 MiB budget a test holds them to.
const WRITER_CACHE_KIB: i64 = 32_000;

/// The page cache of a read connection (key checks, verifications,
/// details), in KiB. Kept small: in WAL mode a reader's cache is dropped
/// whenever the writer committed since its last read, which under sends is
/// nearly every read, so a bigger cache holds stale pages, not hits.
const READER_CACHE_KIB: i64 = 2_000;

/// The page cache of a list connection, in KiB. A deep filtered page reads
/// most of an index; with 16 MiB each, four list connections took the
/// server from 70 to 135 MiB resident in `bench/api.sh`'s list stage. At 4
/// MiB a page's index pages come from the operating system's file cache.
const LIST_CACHE_KIB: i64 = 4_000;

impl Reader {
    /// A reader; `interruptible` ones stop a statement past their deadline.
    fn open(path: &Path, interruptible: bool, cache_kib: i64) -> Result<Reader, StoreError> {
        let mut conn = open_reader(path, cache_kib)?;
        let deadline = Arc::new(AtomicU64::new(0));
        if interruptible {
            let at = deadline.clone();
            conn.progress_handler(
                PROGRESS_OPS,
                Some(move || {
                    let at = at.load(Ordering::Relaxed);
                    at != 0 && monotonic_nanos() >= at
                }),
            )
            .map_err(map_err)?;
        }
        Ok(Reader { conn, deadline })
    }
}

/// Nanoseconds since the first call, on a clock that never goes back.
fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let nanos = START.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies migrations and starts
    /// the writer thread.
    pub async fn open(path: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let max_batch = options.max_batch.max(1);
        let limits = LiveLimits::new(options.limits);
        let writer_limits = limits.clone();
        let readers = options.connections.max(1);
        let listers = options.list_connections.max(1);
        let budget = options.list_timeout.filter(|t| !t.is_zero());
        let (conn, read_conns, list_conns) = tokio::task::spawn_blocking(move || {
            let path = Path::new(&path);
            let mut conn = open_writer(path)?;
            apply_migrations(&mut conn, migrate::SQLITE)?;
            let read_conns = (0..readers)
                .map(|_| Reader::open(path, false, READER_CACHE_KIB))
                .collect::<Result<Vec<_>, _>>()?;
            let list_conns = (0..listers)
                .map(|_| Reader::open(path, budget.is_some(), LIST_CACHE_KIB))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((conn, read_conns, list_conns))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;

        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("otpgate-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch, writer_limits))
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(ReadPool::new(read_conns, None, None)),
            lists: Arc::new(ReadPool::new(list_conns, budget, Some(LIST_POOL_WAIT))),
            vault: options.vault.clone(),
            limits,
            conversions: Arc::default(),
        })
    }

    /// Runs `f` in the writer's next transaction and returns its result after the
    /// commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |tx| {
            let result = match tx {
                Some(tx) => run_in_savepoint(tx, f),
                None => Err(StoreError::Unavailable("no transaction".into())),
            };
            Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                };
                let _ = reply.send(result);
            })
        });
        self.writer
            .send(WriteOp::Other(job))
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?
    }

    /// Runs `f` on a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        read_on(&self.readers, f).await
    }

    /// Runs `f`, a read of a row by id or a few pinned index searches, as
    /// [`read_point`] does: on the caller's thread when a read connection is
    /// free.
    async fn read_now<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        read_point(&self.readers, f).await
    }
}

/// Runs `f` on a connection of `pool` on a blocking thread, within the pool's
/// time budget.
async fn read_on<T, F>(pool: &Arc<ReadPool>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let acquire = pool.permits.acquire();
    let permit = match pool.wait {
        Some(wait) => tokio::time::timeout(wait, acquire)
            .await
            .map_err(|_| StoreError::Unavailable("no read connection came free".into()))?,
        None => acquire.await,
    };
    let permit = permit.map_err(|_| StoreError::Unavailable("the read pool is closed".into()))?;
    // The permit goes back when the blocking read is done with its connection,
    // not when this future is: a caller that gives up (a client hanging up)
    // must not let another read in while the connection is still taken.
    permit.forget();
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let _give_back = PermitBack(&pool);
        read_with(&pool, f)
    })
    .await
    .map_err(|e| StoreError::Internal(e.to_string()))?
}

/// Runs `f`, a read of a few rows found by index, on the caller's thread
/// when a connection of `pool` is free at once, and as [`read_on`] does when
/// none is. Handing such a read to a blocking thread and back costs two
/// thread wake-ups; sparing them on the resend lookup alone took the burst of
/// `bench/smpp.sh` from 9,560-10,157 to 12,854-12,945 accepted sends/s (on one
/// machine, BENCHMARKS.md). Only reads of a row by its id,
/// and a few index searches whose plan a test pins, come here: a scan would
/// hold up the async worker thread.
async fn read_point<T, F>(pool: &Arc<ReadPool>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    match pool.permits.try_acquire() {
        // Held until `read_with` has put the connection back; nothing here
        // awaits, so a caller giving up cannot leave the connection taken.
        Ok(_permit) => read_with(pool, f),
        Err(tokio::sync::TryAcquireError::NoPermits) => read_on(pool, f).await,
        Err(tokio::sync::TryAcquireError::Closed) => {
            Err(StoreError::Unavailable("the read pool is closed".into()))
        }
    }
}

/// Runs `f` on a connection taken from `pool` (the caller holds a permit for
/// it), within the pool's time budget, and puts the connection back.
fn read_with<T>(
    pool: &ReadPool,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // std Mutex: held only to pop or push a connection, never across I/O.
    let reader = pool.conns.lock().expect("read pool poisoned").pop();
    let reader = reader.ok_or_else(|| StoreError::Internal("read pool empty".into()))?;
    if let Some(budget) = pool.budget {
        let nanos = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        let at = monotonic_nanos().saturating_add(nanos).max(1);
        reader.deadline.store(at, Ordering::Relaxed);
    }
    let result = f(&reader.conn);
    reader.deadline.store(0, Ordering::Relaxed);
    // A read stopped inside its transaction (even at its COMMIT) must not
    // leave the connection on an old snapshot for the next one.
    if !reader.conn.is_autocommit() {
        let _ = reader.conn.execute_batch("ROLLBACK");
    }
    pool.conns.lock().expect("read pool poisoned").push(reader);
    result
}

/// Gives a read pool's permit back when dropped (after the connection is).
struct PermitBack<'a>(&'a ReadPool);

impl Drop for PermitBack<'_> {
    fn drop(&mut self) {
        self.0.permits.add_permits(1);
    }
}

/// The migrations a database recorded, read with `select` (the columns of
/// [`migrate::Recorded`] in order).
fn recorded_migrations(
    conn: &Connection,
    select: &str,
) -> Result<Vec<migrate::Recorded>, StoreError> {
    conn.prepare(select)
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok(migrate::Recorded {
                    version: r.get(0)?,
                    name: r.get(1)?,
                    checksum: r.get(2)?,
                    min_binary: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(map_err)
}

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    create_private(path)?;
    let conn = Connection::open(path).map_err(map_err)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA temp_store = MEMORY;"
    ))
    .map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn)?;
    #[cfg(test)]
    let conn = tests::traced(conn);
    Ok(conn)
}

/// Creates the database file, empty, readable and writable by its owner only
/// (0600), before SQLite opens it: SQLite would create it 0644 (less the
/// umask), readable by every user of the machine. SQLite gives the `-wal` and
/// `-shm` files it creates the database file's mode, so they are 0600 too. The
/// mode is set after creation, so the process umask does not matter.
///
/// An existing file keeps its mode, which an operator may have chosen (a backup
/// group); a warning says when group or others can read it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(file) => file
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| {
                    StoreError::Unavailable(format!("setting the mode of {}: {e}", path.display()))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok(meta) = std::fs::metadata(path) {
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        tracing::warn!(
                            path = %path.display(),
                            mode = format_args!("{mode:o}"),
                            "the SQLite database can be read by other users; \
                             `chmod 600` it and its -wal and -shm files"
                        );
                    }
                }
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "creating the database file {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Turns on the query planner stability guarantee. Without it SQLite may look
/// at a bound value when it decides whether a partial index fits, and then
/// marks the cached statement to be compiled again whenever that parameter is
/// bound anew: the webhook outbox insert was recompiled on every call.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(map_err)?;
    Ok(())
}

fn open_reader(path: &Path, cache_kib: i64) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map_err)?;
    conn.execute_batch(&format!(
        "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{cache_kib};"
    ))
    .map_err(map_err)?;
    conn.set_prepared_statement_cache_capacity(32);
    stable_plans(&conn)?;
    #[cfg(test)]
    let conn = tests::traced(conn);
    Ok(conn)
}

fn apply_migrations(conn: &mut Connection, list: &[Migration]) -> Result<(), StoreError> {
    // A migration that drops data (0003 drops plain codes) must not leave it in
    // free pages; afterwards, zero freed space only where it costs no extra I/O.
    conn.execute_batch("PRAGMA secure_delete = ON")
        .map_err(map_err)?;
    apply_migrations_in(conn, list)?;
    conn.execute_batch("PRAGMA secure_delete = FAST")
        .map_err(map_err)
}

fn apply_migrations_in(conn: &mut Connection, list: &[Migration]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(migrate::CREATE_TABLES).map_err(map_err)?;
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('otpgate_migrations')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(map_err)?;
    for (column, kind) in migrate::ADD_COLUMNS {
        if !columns.iter().any(|c| c == column) {
            tx.execute_batch(&format!(
                "ALTER TABLE otpgate_migrations ADD COLUMN {column} {kind}"
            ))
            .map_err(map_err)?;
        }
    }
    let recorded = recorded_migrations(&tx, migrate::SELECT_RECORDED)?;
    let floor: Option<String> = tx
        .query_row(
            "SELECT min_binary FROM otpgate_schema WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    let plan = migrate::plan(list, &recorded, floor.as_deref(), migrate::BINARY_VERSION)?;
    for m in &plan.stamp {
        tx.execute(
            "UPDATE otpgate_migrations SET checksum = ?2, min_binary = ?3 WHERE version = ?1",
            params![m.version, m.checksum(), m.min_binary],
        )
        .map_err(map_err)?;
    }
    for m in &plan.apply {
        tx.execute_batch(m.sql).map_err(map_err)?;
        tx.execute(
            "INSERT INTO otpgate_migrations (version, name, applied_at, checksum, min_binary) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![m.version, m.name, now_micros(), m.checksum(), m.min_binary],
        )
        .map_err(map_err)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    let floor_now = plan.floor.to_string();
    if plan.changes_records() || floor.as_deref() != Some(floor_now.as_str()) {
        tx.execute(
            "INSERT INTO otpgate_schema (id, min_binary, written_by, updated_at) \
             VALUES (1, ?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET \
             min_binary = excluded.min_binary, written_by = excluded.written_by, \
             updated_at = excluded.updated_at",
            params![floor_now, migrate::BINARY_VERSION, now_micros()],
        )
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    max_batch: usize,
    limits: LiveLimits,
) {
    let mut ops = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        ops.push(first);
        while ops.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, &mut ops, &limits.get());
    }
}

/// See [`crate::missing_migrations`].
pub(crate) fn missing_migrations(path: &Path) -> Result<Vec<String>, StoreError> {
    if !path.exists() {
        return Err(StoreError::Internal(format!(
            "no database file at {}",
            path.display()
        )));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(map_err)?;
    let has_table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'otpgate_migrations'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    if has_table.is_none() {
        return Ok(crate::not_applied(&migrate::plan(
            migrate::SQLITE,
            &[],
            None,
            migrate::BINARY_VERSION,
        )?));
    }
    // The first release's table has neither column, and no otpgate_schema.
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM pragma_table_info('otpgate_migrations') \
             UNION ALL SELECT name FROM sqlite_master WHERE name = 'otpgate_schema'",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(map_err)?;
    let select = if tables.iter().any(|c| c == "checksum") {
        migrate::SELECT_RECORDED
    } else {
        migrate::SELECT_FIRST_RELEASE
    };
    let recorded = recorded_migrations(&conn, select)?;
    let floor: Option<String> = if tables.iter().any(|t| t == "otpgate_schema") {
        conn.query_row(
            "SELECT min_binary FROM otpgate_schema WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?
    } else {
        None
    };
    let plan = migrate::plan(
        migrate::SQLITE,
        &recorded,
        floor.as_deref(),
        migrate::BINARY_VERSION,
    )?;
    Ok(crate::not_applied(&plan))
}

fn run_batch(conn: &mut Connection, ops: &mut Vec<WriteOp>, limits: &SendLimits) {
    let mut accepts = Vec::new();
    let mut others = Vec::new();
    for op in ops.drain(..) {
        match op {
            WriteOp::Accept(otp, reply) => accepts.push((otp, reply)),
            WriteOp::Other(job) => others.push(job),
        }
    }
    let begin = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err);
    let (finishers, results, commit_error): (Vec<Finisher>, _, _) = match begin {
        Err(e) => (
            others.into_iter().map(|job| job(None)).collect(),
            None,
            Some(e),
        ),
        Ok(tx) => {
            let finishers = others.into_iter().map(|job| job(Some(&tx))).collect();
            let otps: Vec<&SealedOtp> = accepts.iter().map(|(otp, _)| otp.as_ref()).collect();
            match accept::accept_batch(&tx, &otps, limits) {
                Ok(results) => match tx.commit() {
                    Ok(()) => (finishers, Some(results), None),
                    Err(e) => (finishers, None, Some(map_err(e))),
                },
                // Dropping the transaction rolls it back.
                Err(e) => (finishers, None, Some(e)),
            }
        }
    };
    if let Some(e) = &commit_error {
        tracing::error!(error = %e, "SQLite batch was not committed");
    }
    for finish in finishers {
        finish(commit_error.as_ref());
    }
    match results {
        Some(results) => {
            for ((_, reply), result) in accepts.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        None => {
            let e = commit_error.unwrap_or(StoreError::Internal("batch lost".into()));
            for (_, reply) in accepts {
                let _ = reply.send(Err(AcceptError::Store(e.clone())));
            }
        }
    }
}

fn run_in_savepoint<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Cached, not `execute_batch`: every write of a batch runs these two.
    tx.prepare_cached("SAVEPOINT op")
        .and_then(|mut s| s.execute([]))
        .map_err(map_err)?;
    match f(tx) {
        Ok(v) => {
            tx.prepare_cached("RELEASE op")
                .and_then(|mut s| s.execute([]))
                .map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO op; RELEASE op");
            Err(e)
        }
    }
}

pub(crate) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DiskFull => StoreError::Full,
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Unavailable(e.to_string())
            }
            ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
            ErrorCode::CannotOpen => StoreError::Unavailable(e.to_string()),
            // Only the list readers' progress handler interrupts.
            ErrorCode::OperationInterrupted => StoreError::TimedOut,
            _ => StoreError::Internal(e.to_string()),
        },
        // A row mapping's own error (`rows`), passed through rusqlite.
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
            match inner.downcast_ref::<StoreError>() {
                Some(mapped) => mapped.clone(),
                None => StoreError::Internal(e.to_string()),
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// Decrypts the codes of rows read, on the calling thread.
fn reveal(vault: &CodeVault, rows: Vec<OtpRow>) -> Vec<OtpRecord> {
    let now = now_micros();
    rows.into_iter()
        .map(|(mut record, code)| {
            record.reveal(vault, &code, now);
            record
        })
        .collect()
}

fn limits_of(conn: &Connection, id: AccountId) -> Result<Option<AccountLimits>, StoreError> {
    conn.query_row(
        "SELECT max_rps, daily_spend_cap, spend_day, spend_today FROM accounts WHERE id = ?1",
        [id],
        |r| {
            Ok(AccountLimits {
                max_rps: r.get(0)?,
                daily_spend_cap: r.get(1)?,
                spend_day: r.get(2)?,
                spent: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(map_err)
}

fn account_by_id(conn: &Connection, id: AccountId) -> Result<Option<Account>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
    ))
    .and_then(|mut s| s.query_row([id], rows::account).optional())
    .map_err(map_err)
}

/// A resend's head: the newest live generated record of the account, number
/// and key, then its chain's first record, in one statement. Newest by
/// `created_at`, then by `id`: within one account the single writer hands out
/// ids in the order it hands out `account_seq`, and `id` (the rowid) ends every
/// index entry, so `otps_account_e164_created` yields this order as it is,
/// with no temporary b-tree built to sort (each send to a number with a live
/// code runs this).
static RESEND_HEAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {RESEND_HEAD_COLUMNS} FROM otps o WHERE o.id = (\
         SELECT COALESCE(n.resend_of, n.id) FROM otps n WHERE n.account_id = ?1 \
         AND n.e164 = ?2 AND n.api_key_id = ?3 AND n.otp_options = 'generated' \
         AND n.verified_at IS NULL AND n.otp_hash IS NOT NULL AND n.expires_at > ?4 \
         AND n.verify_attempts < ?5 AND n.created_at > ?6 \
         ORDER BY n.created_at DESC, n.id DESC LIMIT 1) \
         AND o.account_id = ?1"
    )
});

/// Claimed or leased jobs as `(job id, attempts, OTP row)` (a job whose OTP
/// is gone is left out), in job id order, and their accounts' senders.
type JobRows = (
    Vec<(i64, i64, OtpRow)>,
    std::collections::HashMap<AccountId, Vec<crate::AccountSender>>,
);

/// Reads what [`JobRows`] holds of `claimed`, given as `(job id, OTP id,
/// attempts)`, on `conn`.
fn job_rows(conn: &Connection, claimed: Vec<(i64, i64, i64)>) -> Result<JobRows, StoreError> {
    let mut jobs = Vec::with_capacity(claimed.len());
    let mut senders = std::collections::HashMap::new();
    for (job_id, otp_id, attempts) in claimed {
        if let Some(row) = otp_by_id(conn, otp_id)? {
            let account = row.0.account_id;
            if let std::collections::hash_map::Entry::Vacant(e) = senders.entry(account) {
                e.insert(rules::senders_of(conn, account)?);
            }
            jobs.push((job_id, attempts, row));
        }
    }
    jobs.sort_by_key(|j| j.0);
    Ok((jobs, senders))
}

impl SqliteStore {
    /// The jobs of [`JobRows`], their codes decrypted on the caller's
    /// thread ([`open_claimed`]).
    async fn open_jobs(&self, (rows, senders): JobRows) -> Result<Vec<ClaimedJob>, StoreError> {
        let now = now_micros();
        let rows = rows
            .into_iter()
            .map(|(job_id, attempts, (mut otp, code))| {
                otp.reveal(&self.vault, &code, now);
                (job_id, attempts, otp)
            })
            .collect();
        open_claimed(self, rows, &senders, now).await
    }
}

fn otp_by_id(conn: &Connection, id: i64) -> Result<Option<OtpRow>, StoreError> {
    conn.prepare_cached(sql_once!("SELECT {OTP_COLUMNS} FROM otps o WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], rows::otp).optional())
        .map_err(map_err)
}

fn collect<T>(
    rows: rusqlite::MappedRows<'_, impl FnMut(&Row<'_>) -> rusqlite::Result<T>>,
) -> Result<Vec<T>, StoreError> {
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(map_err)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn set_send_limits(&self, limits: SendLimits) {
        self.limits.set(limits);
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
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
        let name = name.to_owned();
        self.write(move |tx| {
            let now = now_micros();
            tx.execute(
                "INSERT INTO accounts (name, sms_credits, phone_credits, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, sms, phone, now],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("an account named {name:?} exists")),
                other => other,
            })?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, note, created_at) \
                 VALUES (?1, 'topup', ?2, ?3, 'opening balance', ?4)",
                params![id, sms, phone, now],
            )
            .map_err(map_err)?;
            account_by_id(tx, id)?.ok_or_else(|| StoreError::NotFound("account".into()))
        })
        .await
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
                ))
                .map_err(map_err)?;
            collect(s.query_map([], rows::account).map_err(map_err)?)
        })
        .await
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.read(move |c| account_by_id(c, id)).await
    }

    async fn set_account_disabled(
        &self,
        id: AccountId,
        at: Option<Micros>,
    ) -> Result<Option<Account>, StoreError> {
        self.write(move |tx| {
            tx.execute(
                "UPDATE accounts SET disabled_at = CASE WHEN ?2 IS NULL THEN NULL \
                 ELSE COALESCE(disabled_at, ?2) END WHERE id = ?1",
                params![id, at],
            )
            .map_err(map_err)?;
            account_by_id(tx, id)
        })
        .await
    }

    async fn set_account_fallback(
        &self,
        id: AccountId,
        default: Option<AccountFallback>,
    ) -> Result<Option<Account>, StoreError> {
        self.write(move |tx| {
            let (channel, after, voice) = AccountFallback::columns(default.as_ref());
            tx.execute(
                "UPDATE accounts SET fallback_channel = ?2, fallback_after_seconds = ?3, \
                 fallback_voice = ?4 WHERE id = ?1",
                params![id, channel, after, voice],
            )
            .map_err(map_err)?;
            account_by_id(tx, id)
        })
        .await
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let name = name.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?1"
            ))
            .and_then(|mut s| s.query_row([name], rows::account).optional())
            .map_err(map_err)
        })
        .await
    }

    async fn add_credits(
        &self,
        id: AccountId,
        sms: i64,
        phone: i64,
        note: &str,
    ) -> Result<Account, StoreError> {
        let note = note.to_owned();
        self.write(move |tx| {
            let account = account_by_id(tx, id)?
                .ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
            if account.sms_credits + sms < 0 || account.phone_credits + phone < 0 {
                return Err(StoreError::Conflict("a balance cannot go below zero".into()));
            }
            let now = now_micros();
            tx.execute(
                "UPDATE accounts SET sms_credits = sms_credits + ?2, phone_credits = phone_credits + ?3 WHERE id = ?1",
                params![id, sms, phone],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO ledger (account_id, kind, sms_delta, phone_delta, note, created_at) \
                 VALUES (?1, 'topup', ?2, ?3, ?4, ?5)",
                params![id, sms, phone, note, now],
            )
            .map_err(map_err)?;
            account_by_id(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("account {id}")))
        })
        .await
    }

    async fn account_limits(&self, id: AccountId) -> Result<Option<AccountLimits>, StoreError> {
        self.read(move |c| limits_of(c, id)).await
    }

    async fn set_account_limits(
        &self,
        id: AccountId,
        max_rps: Option<i64>,
        daily_spend_cap: Option<i64>,
    ) -> Result<AccountLimits, StoreError> {
        check_limit_values(max_rps, daily_spend_cap)?;
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE accounts SET max_rps = ?2, daily_spend_cap = ?3 WHERE id = ?1",
                    params![id, max_rps, daily_spend_cap],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("account {id}")));
            }
            limits_of(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("account {id}")))
        })
        .await
    }

    async fn ledger(&self, id: AccountId) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {LEDGER_COLUMNS} FROM ledger WHERE account_id = ?1 ORDER BY id",
                ))
                .map_err(map_err)?;
            collect(s.query_map([id], rows::ledger_entry).map_err(map_err)?)
        })
        .await
    }

    async fn recent_ledger(
        &self,
        id: AccountId,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {LEDGER_COLUMNS} FROM ledger WHERE account_id = ?1 ORDER BY id DESC LIMIT ?2",
                ))
                .map_err(map_err)?;
            collect(
                s.query_map(params![id, limit], rows::ledger_entry)
                .map_err(map_err)?,
            )
        })
        .await
    }

    async fn create_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        self.write(move |tx| {
            if account_by_id(tx, key.account_id)?.is_none() {
                return Err(StoreError::NotFound(format!("account {}", key.account_id)));
            }
            tx.execute(
                "INSERT INTO api_keys (key_id, account_id, secret_hash, label, created_at, scopes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key.key_id,
                    key.account_id,
                    &key.secret_hash[..],
                    key.label,
                    now_micros(),
                    key.scopes.to_string()
                ],
            )
            .map_err(map_err)?;
            let id = tx.last_insert_rowid();
            tx.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                [id],
                rows::key,
            )
            .map_err(map_err)
        })
        .await
    }

    async fn find_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"
            ))
            .and_then(|mut s| s.query_row([key_id], rows::key).optional())
            .map_err(map_err)
        })
        .await
    }

    async fn list_keys(&self, account: Option<AccountId>) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR account_id = ?1 ORDER BY id"
                ))
                .map_err(map_err)?;
            collect(s.query_map([account], rows::key).map_err(map_err)?)
        })
        .await
    }

    async fn revoke_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let key_id = key_id.to_owned();
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
                    params![key_id, now_micros()],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn touch_keys(&self, used: Vec<(i64, Micros)>) -> Result<(), StoreError> {
        self.write(move |tx| {
            let mut s = tx
                .prepare_cached(
                    "UPDATE api_keys SET last_used = MAX(COALESCE(last_used, 0), ?2) WHERE id = ?1",
                )
                .map_err(map_err)?;
            for (id, at) in used {
                s.execute(params![id, at]).map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn accept_leased(
        &self,
        otp: NewOtp,
        key: Option<IdempotencyKey>,
        lease: Option<JobLease>,
    ) -> Result<Accepted, AcceptError> {
        let counted = crate::conversions::accepted_key(&otp);
        // Sealed here, on the caller's task: the writer thread only copies bytes.
        let mut sealed = SealedOtp::new(otp, &self.vault, lease);
        sealed.idempotency = key;
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Accept(Box::new(sealed), reply))
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        let accepted = rx
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))??;
        self.conversions.add_sent(counted);
        Ok(accepted)
    }

    async fn list_otps(&self, query: &ListQuery) -> Result<OtpPage, StoreError> {
        let q = query.clone();
        let vault = self.vault.clone();
        read_on(&self.lists, move |c| {
            // One read transaction, so the count and the page agree.
            c.execute_batch("BEGIN DEFERRED").map_err(map_err)?;
            let result = list_otps_in(c, &q);
            let _ = c.execute_batch("COMMIT");
            let (count, rows) = result?;
            Ok(OtpPage {
                count,
                items: reveal(&vault, rows),
            })
        })
        .await
    }

    async fn otp(&self, account: AccountId, id: i64) -> Result<Option<OtpRecord>, StoreError> {
        let vault = self.vault.clone();
        self.read_now(move |c| {
            let row = otp_by_id(c, id)?.filter(|(o, _)| o.account_id == account);
            Ok(reveal(&vault, row.into_iter().collect()).pop())
        })
        .await
    }

    async fn otp_verified(&self, account: AccountId, id: i64) -> Result<Option<bool>, StoreError> {
        self.read_now(move |c| {
            c.prepare_cached(
                "SELECT verified_at IS NOT NULL FROM otps WHERE id = ?1 AND account_id = ?2",
            )
            .and_then(|mut s| s.query_row(params![id, account], |r| r.get(0)).optional())
            .map_err(map_err)
        })
        .await
    }

    async fn list_all_otps(&self, query: &AllOtpsQuery) -> Result<Vec<OtpRecord>, StoreError> {
        let q = query.clone();
        let vault = self.vault.clone();
        read_on(&self.lists, move |c| {
            let mut filter = String::from("1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(id) = q.id {
                args.push(id.into());
                filter.push_str(&format!(" AND id = ?{}", args.len()));
            }
            if let Some(p) = &q.phone_number {
                args.push(p.clone().into());
                // Each account's (account_id, phone_number) index: the rows
                // of this number, not every OTP.
                filter.push_str(&format!(
                    " AND account_id IN (SELECT id FROM accounts) AND phone_number = ?{}",
                    args.len()
                ));
            }
            if let Some(status) = q.status {
                args.push(status.as_str().to_owned().into());
                filter.push_str(&status.filter_sql("", format!("?{}", args.len())));
            }
            if let Some(before) = q.before_id {
                args.push(before.into());
                filter.push_str(&format!(" AND id < ?{}", args.len()));
            }
            args.push(i64::from(q.limit).into());
            let sql = format!(
                "SELECT {OTP_COLUMNS} FROM otps o WHERE {filter} ORDER BY id DESC LIMIT ?{}",
                args.len()
            );
            let mut s = c.prepare_cached(&sql).map_err(map_err)?;
            let rows = collect(
                s.query_map(rusqlite::params_from_iter(args.iter()), rows::otp)
                    .map_err(map_err)?,
            )?;
            Ok(reveal(&vault, rows))
        })
        .await
    }

    async fn resend_head(&self, q: ResendQuery) -> Result<Option<ResendHead>, StoreError> {
        let vault = self.vault.clone();
        self.read_now(move |c| {
            c.prepare_cached(&RESEND_HEAD)
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            q.account_id,
                            q.e164,
                            q.api_key_id,
                            q.now,
                            q.max_attempts,
                            q.created_after
                        ],
                        |r| rows::lift(crate::rows::resend_head(r, &vault)),
                    )
                    .optional()
                })
                .map(Option::flatten)
                .map_err(map_err)
        })
        .await
    }

    async fn claim_jobs(&self, claim: Claim) -> Result<Vec<ClaimedJob>, StoreError> {
        let claimed = self
            .write(move |tx| {
                let claimed: Vec<(i64, i64, i64)> = {
                    let mut s = tx
                        .prepare_cached(
                            "UPDATE delivery_jobs SET next_attempt_at = ?1, lease_owner = ?2, \
                         attempts = attempts + 1, updated_at = ?3 \
                         WHERE id IN (SELECT id FROM delivery_jobs \
                             WHERE state = 'queued' AND channel = ?4 AND next_attempt_at <= ?3 \
                             ORDER BY next_attempt_at LIMIT ?5) \
                         RETURNING id, otp_id, attempts",
                        )
                        .map_err(map_err)?;
                    let rows = s
                        .query_map(
                            params![
                                claim.lease_until,
                                claim.node,
                                claim.now,
                                claim.channel.as_str(),
                                claim.limit as i64
                            ],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .map_err(map_err)?;
                    collect(rows)?
                };
                job_rows(tx, claimed)
            })
            .await?;
        // Decrypted here, off the writer thread.
        self.open_jobs(claimed).await
    }

    async fn leased_jobs(&self, jobs: Vec<LeasedJob>) -> Result<Vec<ClaimedJob>, StoreError> {
        let accounts = distinct_accounts(jobs.iter().map(|j| j.otp.account_id));
        let senders = self
            .read_now(move |c| {
                accounts
                    .into_iter()
                    .map(|a| Ok((a, rules::senders_of(c, a)?)))
                    .collect::<Result<std::collections::HashMap<_, _>, StoreError>>()
            })
            .await?;
        Ok(handed_jobs(jobs, &senders, now_micros()))
    }

    async fn finish_jobs(&self, results: Vec<JobResult>) -> Result<(), StoreError> {
        let tally = self
            .write(move |tx| {
                let changes = jobs::finish_all(tx, &results)?;
                conversions::record(tx, [], &changes)
            })
            .await?;
        self.conversions.add(&tally);
        Ok(())
    }

    async fn record_receipts(
        &self,
        receipts: Vec<Receipt>,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let (applied, tally) = self
            .write(move |tx| {
                let mut changes = Vec::new();
                let applied = receipts
                    .iter()
                    .map(|r| receipts::apply(tx, r, &mut changes))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((applied, conversions::record(tx, [], &changes)?))
            })
            .await?;
        self.conversions.add(&tally);
        Ok(applied)
    }

    async fn otp_history(&self, otp_id: i64) -> Result<(Vec<OtpEvent>, Vec<String>), StoreError> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT status, at, route, detail, error_code FROM otp_events WHERE otp_id = ?1 ORDER BY id",
                )
                .map_err(map_err)?;
            let events = collect(
                s.query_map([otp_id], |r| {
                    Ok(OtpEvent {
                        status: r.get(0)?,
                        at: r.get(1)?,
                        route: r.get(2)?,
                        detail: r.get(3)?,
                        error_code: r.get(4)?,
                    })
                })
                .map_err(map_err)?,
            )?;
            let mut s = c
                .prepare_cached("SELECT message_id FROM provider_messages WHERE otp_id = ?1 ORDER BY part")
                .map_err(map_err)?;
            let ids = collect(s.query_map([otp_id], |r| r.get(0)).map_err(map_err)?)?;
            Ok((events, ids))
        })
        .await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT channel, COUNT(*) FROM delivery_jobs WHERE state = 'queued' GROUP BY channel",
                )
                .map_err(map_err)?;
            collect(s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(map_err)?)
        })
        .await
    }

    async fn verify(&self, request: VerifyRequest) -> Result<VerifyOutcome, StoreError> {
        let vault = self.vault.clone();
        // In the writer: verifications are serialized with every other write, so
        // the check and the attempt count are one step.
        let (outcome, tally) = self
            .write(move |tx| {
                let outcome = verify_in(tx, &request, &vault)?;
                let changes: Vec<_> = crate::conversions::from_verify(&outcome)
                    .into_iter()
                    .collect();
                Ok((outcome, conversions::record(tx, [], &changes)?))
            })
            .await?;
        self.conversions.add(&tally);
        Ok(outcome)
    }

    async fn start_fallbacks(&self, now: Micros, limit: usize) -> Result<FallbackScan, StoreError> {
        self.write(move |tx| fallback::start_due(tx, now, limit))
            .await
    }

    async fn purge_codes(&self, expired_before: Micros) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            // A chunk per write, so a large purge never holds up sends for long.
            let n = self
                .write(move |tx| {
                    tx.prepare_cached(
                        "UPDATE otps SET otp_cipher = NULL, otp_hash = NULL, key_id = NULL \
                         WHERE id IN (SELECT id FROM otps WHERE otp_cipher IS NOT NULL \
                         AND expires_at < ?1 LIMIT ?2)",
                    )
                    .and_then(|mut s| s.execute(params![expired_before, PURGE_CHUNK]))
                    .map_err(map_err)
                })
                .await?;
            total += n as u64;
            if (n as i64) < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }
}

fn verify_in(
    tx: &Transaction<'_>,
    req: &VerifyRequest,
    vault: &CodeVault,
) -> Result<VerifyOutcome, StoreError> {
    let row = match (req.otp_id, &req.phone_number) {
        (Some(id), number) => tx
            .prepare_cached(&format!(
                "SELECT {VERIFY_COLUMNS} FROM otps WHERE id = ?1 AND account_id = ?2 \
                 AND (?3 IS NULL OR phone_number = ?3)"
            ))
            .and_then(|mut s| {
                s.query_row(params![id, req.account_id, number], rows::verify)
                    .optional()
            })
            .map_err(map_err)?,
        (None, Some(number)) => {
            // The newest code that can still verify; failing that, the newest
            // code, to say why not.
            let live = tx
                .prepare_cached(&format!(
                    "SELECT {VERIFY_COLUMNS} FROM otps WHERE account_id = ?1 AND phone_number = ?2 \
                     AND (?5 IS NULL OR api_key_id = ?5) \
                     AND verified_at IS NULL AND otp_hash IS NOT NULL AND expires_at > ?3 \
                     AND verify_attempts < ?4 ORDER BY account_seq DESC LIMIT 1"
                ))
                .and_then(|mut s| {
                    s.query_row(
                        params![
                            req.account_id,
                            number,
                            req.now,
                            req.max_attempts,
                            req.api_key_id
                        ],
                        rows::verify,
                    )
                    .optional()
                })
                .map_err(map_err)?;
            match live {
                Some(row) => Some(row),
                None => tx
                    .prepare_cached(&format!(
                        "SELECT {VERIFY_COLUMNS} FROM otps WHERE account_id = ?1 AND phone_number = ?2 \
                         AND (?3 IS NULL OR api_key_id = ?3) ORDER BY account_seq DESC LIMIT 1"
                    ))
                    .and_then(|mut s| {
                        s.query_row(params![req.account_id, number, req.api_key_id], rows::verify)
                            .optional()
                    })
                    .map_err(map_err)?,
            }
        }
        (None, None) => None,
    };
    let Some(row) = row else {
        return Ok(VerifyOutcome::NotFound);
    };
    // A resend is checked against the state its chain shares, kept on the
    // first record; every write below goes to the whole chain.
    let head = row.head();
    let row = match row.resend_of {
        None => row,
        Some(first) => {
            let shared = tx
                .prepare_cached(&format!("SELECT {VERIFY_COLUMNS} FROM otps WHERE id = ?1"))
                .and_then(|mut s| s.query_row([first], rows::verify).optional())
                .map_err(map_err)?
                .ok_or_else(|| StoreError::Internal("a resend's first record is missing".into()))?;
            row.sharing(&shared)
        }
    };
    let (outcome, recorded) = match row.step(req, vault) {
        VerifyStep::Verify => {
            // The records whose message failed keep that status (and their
            // refund); all stop verifying. Equalities, not an IN list: SQLite
            // builds a temporary table for an IN list of three values.
            tx.prepare_cached(
                "UPDATE otps SET verified_at = ?2, \
                 status = CASE WHEN id = ?3 OR status = 'queued' OR status = 'sent' \
                 OR status = 'delivered' THEN 'verified' ELSE status END, \
                 status_at = CASE WHEN id = ?3 OR status = 'queued' OR status = 'sent' \
                 OR status = 'delivered' THEN ?2 ELSE status_at END \
                 WHERE id = ?1 OR resend_of = ?1",
            )
            .and_then(|mut s| s.execute(params![head, req.now, row.id]))
            .map_err(map_err)?;
            // In this transaction: once it commits, no scan finds the call due.
            fallback::cancel_pending(tx, head, req.now)?;
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
                .prepare_cached(
                    "UPDATE otps SET verify_attempts = verify_attempts + 1 WHERE id = ?1 \
                     RETURNING verify_attempts",
                )
                .and_then(|mut s| s.query_row([head], |r| r.get(0)))
                .map_err(map_err)?;
            tx.prepare_cached(
                "UPDATE otps SET verify_attempts = ?2 WHERE resend_of = ?1 AND verify_attempts <> ?2",
            )
            .and_then(|mut s| s.execute(params![head, attempts]))
            .map_err(map_err)?;
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
                .prepare_cached(
                    "UPDATE otps SET verify_refusals = verify_refusals + 1 WHERE id = ?1 \
                     RETURNING verify_refusals",
                )
                .and_then(|mut s| s.query_row([head], |r| r.get(0)))
                .map_err(map_err)?;
            (outcome, first_refusal(refusals))
        }
        VerifyStep::Done(outcome) => return Ok(outcome),
    };
    if let Some((status, detail)) = verify_event(&outcome, req.max_attempts).filter(|_| recorded) {
        event(tx, row.id, status, req.now, None, Some(&detail), None)?;
    }
    if let Some(hook) = WebhookEvent::for_verify(&outcome) {
        webhooks::enqueue(tx, row.id, hook, req.now)?;
    }
    Ok(outcome)
}

fn event(
    tx: &Transaction<'_>,
    otp_id: i64,
    status: &str,
    at: Micros,
    route: Option<&str>,
    detail: Option<&str>,
    error_code: Option<&str>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO otp_events (otp_id, status, at, route, detail, error_code) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![otp_id, status, at, route, detail, error_code]))
    .map_err(map_err)?;
    Ok(())
}

fn list_otps_in(c: &Connection, q: &ListQuery) -> Result<(u64, Vec<OtpRow>), StoreError> {
    let mut filter = String::from("account_id = ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![q.account_id.into()];
    if let Some(p) = &q.phone_number {
        args.push(p.clone().into());
        filter.push_str(&format!(" AND phone_number = ?{}", args.len()));
    }
    if let Some(ch) = q.channel {
        args.push(ch.as_str().to_owned().into());
        filter.push_str(&format!(" AND channel = ?{}", args.len()));
    }
    if let Some(status) = q.status {
        args.push(status.as_str().to_owned().into());
        filter.push_str(&status.filter_sql("", format!("?{}", args.len())));
    }
    if let Some(from) = q.created_from {
        args.push(from.into());
        filter.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(before) = q.created_before {
        args.push(before.into());
        filter.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    let offset = q.offset.min(i64::MAX as u64) as i64;
    let (count, bound, skip) = if q.is_unfiltered() {
        // The OTPs left of an account have gapless numbers from past the
        // retention purge's mark to otp_count, so an offset maps straight to a
        // bound on that number: O(log n) however deep the page.
        let (newest, purged): (i64, i64) = c
            .prepare_cached("SELECT otp_count, otp_purged_through FROM accounts WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([q.account_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(map_err)?
            .unwrap_or((0, 0));
        let bound = q.before_seq.unwrap_or(newest.saturating_sub(offset) + 1);
        (newest - purged, Some(bound), 0)
    } else {
        let count: i64 = match q.known_count {
            Some(n) => n.min(i64::MAX as u64) as i64,
            None => c
                .prepare_cached(&format!("SELECT COUNT(*) FROM otps WHERE {filter}"))
                .and_then(|mut s| {
                    s.query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
                })
                .map_err(map_err)?,
        };
        match q.before_seq {
            Some(b) => (count, Some(b), 0),
            None => (count, None, offset),
        }
    };
    if let Some(b) = bound {
        args.push(b.into());
        filter.push_str(&format!(" AND account_seq < ?{}", args.len()));
    }
    args.push(i64::from(q.limit).into());
    args.push(skip.into());
    let sql = format!(
        "SELECT {OTP_COLUMNS} FROM otps o WHERE {filter} ORDER BY account_seq DESC LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    );
    let mut s = c.prepare_cached(&sql).map_err(map_err)?;
    let items = collect(
        s.query_map(rusqlite::params_from_iter(args.iter()), rows::otp)
            .map_err(map_err)?,
    )?;
    Ok((count.max(0) as u64, items))
}

/// The plan SQLite makes of `sql` with `args`, one line a step
/// (`EXPLAIN QUERY PLAN`), read on a new store in a temporary folder.
#[cfg(test)]
pub(crate) async fn query_plan(
    sql: &'static str,
    args: Vec<rusqlite::types::Value>,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(path.to_str().unwrap(), &StoreOptions::default())
        .await
        .unwrap();
    store
        .read(move |c| {
            let mut s = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(map_err)?;
            collect(
                s.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                    .map_err(map_err)?,
            )
        })
        .await
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    async fn store_with(dir: &tempfile::TempDir, options: StoreOptions) -> SqliteStore {
        let path = dir.path().join("t.db");
        SqliteStore::open(path.to_str().unwrap(), &options)
            .await
            .unwrap()
    }

    /// The page cache each connection may fill, in KiB, as SQLite reports it.
    fn cache_kib(conn: &Connection) -> i64 {
        let size: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert!(size < 0, "a cache size in pages, not KiB: {size}");
        -size
    }

    /// Every connection's page cache has its bound, and at the default pool
    /// sizes they add up to at most 80 MiB (64,000 KiB now): four list
    /// connections at 16,000 KiB each took the server from 70 to 135 MiB
    /// resident in one deep filtered list (BENCHMARKS.md).
    #[tokio::test]
    async fn the_page_caches_of_all_connections_stay_within_80_mib() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let store = store_with(&dir, options.clone()).await;
        let mut total = store.write(|tx| Ok(cache_kib(tx))).await.unwrap();
        assert_eq!(total, WRITER_CACHE_KIB);
        for (pool, each, count) in [
            (&store.readers, READER_CACHE_KIB, options.connections),
            (&store.lists, LIST_CACHE_KIB, options.list_connections),
        ] {
            let conns = pool.conns.lock().unwrap();
            assert_eq!(conns.len(), count);
            for reader in conns.iter() {
                assert_eq!(cache_kib(&reader.conn), each);
                total += each;
            }
        }
        assert!(total <= 80 * 1024, "{total} KiB of page caches");
    }

    /// A point read runs on the caller's thread while a read connection is
    /// free, and gives the connection back; with every connection taken it
    /// waits for one, as any read does, and then runs on a blocking thread.
    #[tokio::test]
    async fn a_point_read_runs_on_the_callers_thread_when_a_connection_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let store = Arc::new(store_with(&dir, options.clone()).await);
        let here = std::thread::current().id();
        for _ in 0..3 * options.connections {
            let ran_on = store
                .read_now(|c| {
                    c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)?;
                    Ok(std::thread::current().id())
                })
                .await
                .unwrap();
            assert_eq!(ran_on, here);
        }
        assert_eq!(
            store.readers.conns.lock().unwrap().len(),
            options.connections
        );
        // A plain read goes to a blocking thread.
        let ran_on = store
            .read(|_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, here);

        let all = u32::try_from(options.connections).unwrap();
        let taken = store.readers.permits.acquire_many(all).await.unwrap();
        let waiting = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .read_now(|_| Ok(std::thread::current().id()))
                    .await
                    .unwrap()
            }
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "a read ran with no connection free");
        drop(taken);
        assert_ne!(waiting.await.unwrap(), here);
        assert_eq!(
            store.readers.conns.lock().unwrap().len(),
            options.connections
        );
    }

    /// The resend lookup, which every generated send runs, searches the
    /// number's index in the order it wants: no temporary b-tree to sort in,
    /// no scan.
    #[tokio::test]
    async fn the_resend_lookup_searches_the_numbers_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, StoreOptions::default()).await;
        let plan = plan_of(
            &store,
            &RESEND_HEAD,
            vec![1.into(), "+9779851023212".to_owned().into(), 1.into()],
        )
        .await;
        let detail = plan.join("; ");
        assert!(
            detail.contains("SEARCH n USING INDEX otps_account_e164_created"),
            "{detail}"
        );
        assert!(!detail.contains("TEMP B-TREE"), "{detail}");
        assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{detail}");
    }

    /// A search for a failure status reads migration 21's partial index, not
    /// every OTP of the account; any other status does not take it.
    #[tokio::test]
    async fn a_search_for_a_failure_status_reads_only_the_failures_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, StoreOptions::default()).await;
        for status in OtpStatus::ALL {
            let sql = format!(
                "SELECT COUNT(*) FROM otps WHERE account_id = ?1{}",
                status.filter_sql("", "?2".to_owned())
            );
            let detail = plan_of(
                &store,
                &sql,
                vec![1.into(), status.as_str().to_owned().into()],
            )
            .await
            .join("; ");
            assert_eq!(
                detail.contains("otps_account_failures"),
                status.is_failure(),
                "{status:?}: {detail}"
            );
        }
    }

    /// The lines of `sql`'s query plan, read on a list connection with its
    /// parameters bound to `values` (those past them left NULL).
    async fn plan_of(
        store: &SqliteStore,
        sql: &str,
        mut values: Vec<rusqlite::types::Value>,
    ) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        read_on(&store.lists, move |c| {
            let mut s = c.prepare(&explain).map_err(map_err)?;
            values.resize(s.parameter_count(), rusqlite::types::Value::Null);
            let rows = s
                .query_map(rusqlite::params_from_iter(values), |r| {
                    r.get::<_, String>(3)
                })
                .map_err(map_err)?;
            collect(rows)
        })
        .await
        .unwrap()
    }

    /// Every statement text the store's connections ran, in this test binary.
    static RAN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    /// `conn`, with every statement it runs recorded in [`RAN`].
    pub(super) fn traced(mut conn: Connection) -> Connection {
        use rusqlite::trace::{TraceEvent, TraceEventCodes};
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(|e: TraceEvent<'_>| {
                if let TraceEvent::Stmt(stmt, _) = e {
                    let sql = stmt.sql().into_owned();
                    let mut ran = RAN.lock().unwrap_or_else(|p| p.into_inner());
                    if !ran.contains(&sql) {
                        ran.push(sql);
                    }
                }
            }),
        )
        .expect("a trace callback");
        conn
    }

    /// Tables that grow with the traffic, and the names statements give them.
    const GROWING: &[&str] = &[
        "otps",
        "o",
        "n",
        "provider_messages",
        "p",
        "ledger",
        "otp_events",
        "delivery_jobs",
        "j",
        "webhook_deliveries",
        "d",
        "webhook_attempts",
        "idempotency",
        "i",
        "conversions",
    ];

    /// Whole-table reads that are bounded anyway: (table, the partial index
    /// the read walks), each holding only rows still in flight.
    const BOUNDED_SCANS: &[(&str, &str)] = &[
        // The queued jobs.
        ("delivery_jobs", "delivery_jobs_due"),
        // The OTPs whose fallback call is pending.
        ("o", "otps_fallback_pending"),
        // The webhook deliveries leased right now.
        ("webhook_deliveries", "webhook_deliveries_leased"),
    ];

    /// A send's whole life and every periodic task, run on one store with
    /// every statement traced; then the plan of each statement that ran is
    /// read: none may read a table that grows with the traffic from end to
    /// end (the expiry sweep did, and with ten million OTPs it stalled every
    /// send). A new statement that does fails here, naming its plan.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_statement_reads_a_growing_table_whole() {
        use crate::conversions::ConversionStore;
        use crate::guard::GuardStore;
        use crate::retention::{RetentionRules, RetentionStore};
        use crate::webhooks::{
            AttemptOutcome, AttemptResult, DeliveryClaim, ExpirySweep, SetWebhook, WebhookStore,
        };

        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, StoreOptions::default()).await;
        let account = store.create_account("acme", 100, 100).await.unwrap();
        let start = now_micros();
        store
            .set_webhook(SetWebhook {
                account_id: account.id,
                url: "https://hooks.example/otp".into(),
                new_secret: "whsec_test".into(),
                rotate: false,
                low_balance_sms_credits: None,
                low_balance_phone_credits: None,
                now: start,
            })
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                store
                    .accept(crate::test_support::sample_otp(account.id))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let now = now_micros();
        let jobs = store
            .claim_jobs(crate::test_support::text_claim(now))
            .await
            .unwrap();
        assert_eq!(jobs.len(), 3, "every send's job claimed");
        let results = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| JobResult {
                job_id: j.job_id,
                otp_id: j.otp.id,
                outcome: JobOutcome::Sent {
                    route: Some("smsc".into()),
                    message_ids: vec![format!("m{i}")],
                },
                at: now,
            })
            .collect();
        store.finish_jobs(results).await.unwrap();
        store
            .record_receipts(vec![crate::test_support::delivered_receipt(
                "smsc", "m0", now,
            )])
            .await
            .unwrap();
        let outcome = store
            .verify(crate::test_support::verify_sample(account.id, ids[0], now))
            .await
            .unwrap();
        assert!(
            matches!(outcome, VerifyOutcome::Verified { .. }),
            "{outcome:?}"
        );
        let page = store
            .list_otps(&ListQuery {
                account_id: account.id,
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.items.len(), 2);
        store.otp(account.id, ids[1]).await.unwrap().unwrap();
        assert_eq!(
            store.otp_verified(account.id, ids[0]).await.unwrap(),
            Some(true)
        );
        store.otp_history(ids[0]).await.unwrap();
        let deliveries = store
            .claim_webhook_deliveries(DeliveryClaim {
                node: "node-a".into(),
                limit: 10,
                now,
                lease_until: now + 30_000_000,
                per_account: 10,
            })
            .await
            .unwrap();
        assert!(!deliveries.is_empty(), "the sends' events are due");
        let attempts = deliveries
            .iter()
            .map(|d| AttemptResult {
                delivery_id: d.id,
                attempt: 1,
                at: now,
                duration_us: 1_000,
                status_code: Some(200),
                error: None,
                outcome: AttemptOutcome::Delivered,
            })
            .collect();
        store.finish_webhook_deliveries(attempts).await.unwrap();
        store.queue_depth().await.unwrap();
        // The periodic tasks, as of an hour later.
        let later = now + 3_600_000_000;
        store
            .sweep_expired(ExpirySweep {
                now: later,
                expired_until: later - 5_000_000,
                longest_expiry: 600_000_000,
                not_before: later - 86_400_000_000,
            })
            .await
            .unwrap();
        store.purge_codes(later).await.unwrap();
        store.start_fallbacks(later, 100).await.unwrap();
        store.guard_holds(later).await.unwrap();
        store
            .purge_conversions(later - 86_400_000_000)
            .await
            .unwrap();
        store
            .purge_expired_rows(RetentionRules {
                now: later,
                otps_before: Some(later - 86_400_000_000),
                idempotency_before: later - 86_400_000_000,
                login_windows_ended: later - 86_400_000_000,
                chunk: 100,
            })
            .await
            .unwrap();

        let ran = RAN.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(ran.len() > 20, "the trace saw the statements: {ran:?}");
        let mut whole = Vec::new();
        for sql in ran {
            let sql = sql.trim().to_owned();
            if sql.starts_with("--")
                || !sql.split_whitespace().next().is_some_and(|w| {
                    ["SELECT", "UPDATE", "DELETE", "INSERT", "WITH"]
                        .contains(&w.to_uppercase().as_str())
                })
            {
                continue;
            }
            let detail = plan_of(&store, &sql, Vec::new()).await;
            for line in detail {
                let Some(scanned) = line.strip_prefix("SCAN ") else {
                    continue;
                };
                let table = scanned.split_whitespace().next().unwrap_or_default();
                if GROWING.contains(&table)
                    && !BOUNDED_SCANS
                        .iter()
                        .any(|(t, index)| *t == table && scanned.contains(index))
                {
                    whole.push(format!("{line}  <-  {sql}"));
                }
            }
        }
        assert!(
            whole.is_empty(),
            "statements that read a growing table whole:\n{}",
            whole.join("\n")
        );
    }

    /// SQLite evaluates a partial index's condition in every insert into
    /// its table and twice in every update of a column it reads, and an IN
    /// list of more than two values there makes it build a temporary B-tree
    /// each time: migration 21's failure indexes did, and that was most of
    /// the writer's cost of recording a delivery. No index may say IN.
    #[tokio::test]
    async fn no_partial_index_condition_is_an_in_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, StoreOptions::default()).await;
        let partial = read_on(&store.lists, |c| {
            let mut s = c
                .prepare(
                    "SELECT name, sql FROM sqlite_master \
                     WHERE type = 'index' AND sql LIKE '% WHERE %'",
                )
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(map_err)?;
            collect(rows)
        })
        .await
        .unwrap();
        assert!(
            partial.iter().any(|(name, _)| name == "otps_failures"),
            "the failure indexes are partial: {partial:?}"
        );
        let with_lists: Vec<_> = partial
            .iter()
            .filter(|(_, sql)| {
                let sql = sql.to_uppercase();
                let condition = &sql[sql.rfind(" WHERE ").unwrap_or(0)..];
                condition.contains(" IN ") || condition.contains(" IN(")
            })
            .collect();
        assert!(with_lists.is_empty(), "{with_lists:?}");
    }

    /// Counts for ever: only the time budget can end it.
    const ENDLESS: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                           SELECT COUNT(*) FROM n";

    #[tokio::test]
    async fn a_list_read_past_its_budget_is_stopped_and_leaves_a_clean_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            &dir,
            StoreOptions {
                list_connections: 1,
                list_timeout: Some(Duration::from_millis(50)),
                ..StoreOptions::default()
            },
        )
        .await;
        let stopped = read_on(&store.lists, |c| {
            c.execute_batch("BEGIN DEFERRED").map_err(map_err)?;
            c.query_row(ENDLESS, [], |r| r.get::<_, i64>(0))
                .map_err(map_err)
        })
        .await;
        assert!(matches!(stopped, Err(StoreError::TimedOut)), "{stopped:?}");
        // The one list connection is back, out of the stopped read's
        // transaction: it sees an account created since.
        let account = store.create_account("acme", 1, 0).await.unwrap();
        let page = store
            .list_otps(&ListQuery {
                account_id: account.id,
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.count, 0);
        let seen = read_on(&store.lists, move |c| account_by_id(c, account.id))
            .await
            .unwrap();
        assert_eq!(seen.map(|a| a.name), Some("acme".to_owned()));
        // Other reads have no budget.
        let long = store
            .read(|c| {
                c.query_row(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) \
                     SELECT COUNT(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(map_err)
            })
            .await;
        assert_eq!(long.unwrap(), 300_000);
    }

    #[tokio::test]
    async fn key_checks_and_sends_do_not_need_a_list_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            &dir,
            StoreOptions {
                list_connections: 2,
                ..StoreOptions::default()
            },
        )
        .await;
        let account = store.create_account("acme", 10, 0).await.unwrap();
        // Every list connection taken, as by lists that run long.
        let taken = store.lists.permits.acquire_many(2).await.unwrap();
        assert_eq!(store.lists.permits.available_permits(), 0);
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

    /// The writer runs its statements from the cache with new values each
    /// time; none of them may be compiled again for it (that cost a sixth of
    /// the writer's time under load before plans were made stable).
    #[test]
    fn cached_writer_statements_are_not_recompiled_when_rebound() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("t.db")).unwrap();
        apply_migrations(&mut conn, migrate::SQLITE).unwrap();
        let tx = conn.transaction().unwrap();
        for (otp, at) in [(1_i64, 10_i64), (2, 20), (3, 30), (4, 40)] {
            let mut s = tx.prepare_cached(webhooks::ENQUEUE).unwrap();
            s.execute(params![otp, "sent", at]).unwrap();
            assert_eq!(
                s.get_status(StatementStatus::RePrepare),
                0,
                "the outbox insert was compiled again for otp {otp}"
            );
        }
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_and_its_wal_and_shm_files_are_private_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open_writer(&path).unwrap();
        apply_migrations(&mut conn, migrate::SQLITE).unwrap();
        let reader = open_reader(&path, READER_CACHE_KIB).unwrap();
        let tables: i64 = reader
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert!(tables > 0, "the reader sees the migrated schema");
        for name in ["t.db", "t.db-wal", "t.db-shm"] {
            assert_eq!(mode_of(&dir.path().join(name)), 0o600, "{name}");
        }
    }

    #[test]
    fn an_existing_database_keeps_the_mode_its_operator_gave_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(open_writer(&path).unwrap());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut conn = open_writer(&path).unwrap();
        apply_migrations(&mut conn, migrate::SQLITE).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(mode_of(&dir.path().join("t.db-wal")), 0o640);
    }
}
