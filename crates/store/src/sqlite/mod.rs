//! SQLite backend (embedded default).
//!
//! One writer connection behind a mutex (SQLite admits one writer at a time; write groups
//! start with `BEGIN IMMEDIATE` so that they never fail half-way on a lock upgrade) and a pool
//! of reader connections. The database runs in WAL mode, so readers see a consistent snapshot
//! from their first read and never block the writer. `synchronous=FULL` makes every
//! acknowledged commit survive a power loss; group commit (see `tx`) lets concurrent writers
//! share one WAL sync: a write transaction is a savepoint in a group transaction that commits
//! when no other writer is queued, and `commit` returns once the group is durable.
//!
//! Timestamps: a write transaction takes one `last_updated` instant at its first write, strictly
//! greater than that of every earlier write transaction in the database; all versions written
//! by that transaction (or by one `bulk_write` call) share it. History order is the global
//! version sequence, which also orders the versions inside one transaction.

mod catalog;
mod error;
mod history;
mod rows;
mod schema;
mod search;
mod tx;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::AtomicUsize;

use parking_lot::{Condvar, Mutex};
use phip_fhir::search::IndexEntry;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::{Store, StoreResult, StoredResource, Transaction, WriteRequest};
use catalog::Catalog;
pub use schema::SCHEMA_VERSION;
use tx::SqliteTransaction;

/// Extracts search index entries from a resource. The default is
/// [`phip_fhir::search::index::extract`]; tests substitute their own.
pub type Extractor = Arc<dyn Fn(&Value) -> Vec<IndexEntry> + Send + Sync>;

/// Reader connections kept open when idle; more are opened on demand under load.
const IDLE_READERS: usize = 4;

/// How long a statement waits for a lock held by another process before giving up with
/// [`crate::StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read transaction's statements may run before SQLite interrupts them (the
/// embedded store's counterpart of PostgreSQL's `statement_timeout`): a runaway search ends
/// with a 503 instead of occupying a reader and a blocking thread after its client gave up.
pub const READ_TIME_LIMIT: Duration = Duration::from_secs(60);

/// SQLite virtual machine instructions between two checks of the deadline (well under a
/// millisecond of work, so the check itself costs nothing measurable).
const PROGRESS_INSTRUCTIONS: std::os::raw::c_int = 20_000;

thread_local! {
    /// When the read transaction running on this thread must stop. Transactions are not
    /// `Send`, so a reader connection always runs on the thread that began its transaction.
    static READ_DEADLINE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Starts the time limit of a read transaction beginning on this thread.
pub(crate) fn start_read_deadline() {
    READ_DEADLINE.with(|d| d.set(Some(std::time::Instant::now() + READ_TIME_LIMIT)));
}

/// SQLite's progress callback on reader connections: `true` interrupts the statement.
fn read_deadline_passed() -> bool {
    READ_DEADLINE.with(|d| d.get().is_some_and(|t| std::time::Instant::now() >= t))
}

/// The embedded SQLite store: one database file `phip.db` in a data directory.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Writers waiting for the writer lock; while there are some, a commit group stays open.
    queued_writers: AtomicUsize,
    durability: Durability,
    /// Write transactions committed so far (group commit statistics).
    committed_writes: std::sync::atomic::AtomicU64,
    readers: Mutex<Vec<Connection>>,
    catalog: Catalog,
    extractor: Extractor,
    schema_version: i64,
}

/// The writer connection and the state that must only change under the writer lock.
pub(crate) struct Writer {
    conn: Connection,
    /// The newest `last_updated` handed out (epoch ms); the next transaction gets a later one.
    last_ts: i64,
    /// Whether an outer transaction (a commit group) is open.
    group_open: bool,
    /// Transactions committed into the open group.
    group_len: usize,
    /// Number of the open (or last) group.
    group_epoch: u64,
    /// Ids created by the group's committed transactions, published when it is durable.
    group_pending: catalog::Pending,
}

/// Which commit groups are durable, for committers waiting on a group another writer closes.
#[derive(Default)]
pub(crate) struct Durability {
    state: Mutex<DurableState>,
    changed: Condvar,
}

#[derive(Default)]
struct DurableState {
    /// Every group up to this epoch has finished.
    finished: u64,
    /// Recent failed groups and why.
    failures: std::collections::VecDeque<(u64, GroupFailure)>,
}

/// Why a commit group failed, kept so that every committer of the group gets an error of the
/// same kind (a full disk is a 507 for all of them, not an internal error for the followers).
#[derive(Debug, Clone)]
pub(crate) enum GroupFailure {
    StorageFull,
    Unavailable(String),
    Other(String),
}

impl From<crate::StoreError> for GroupFailure {
    fn from(error: crate::StoreError) -> Self {
        match error {
            crate::StoreError::StorageFull => GroupFailure::StorageFull,
            crate::StoreError::Unavailable(m) => GroupFailure::Unavailable(m),
            other => GroupFailure::Other(other.to_string()),
        }
    }
}

impl GroupFailure {
    fn to_error(&self) -> crate::StoreError {
        match self {
            GroupFailure::StorageFull => crate::StoreError::StorageFull,
            GroupFailure::Unavailable(m) => crate::StoreError::Unavailable(m.clone()),
            GroupFailure::Other(m) => crate::StoreError::Backend(format!("commit failed: {m}")),
        }
    }
}

impl Durability {
    fn finish(&self, epoch: u64, failure: Option<GroupFailure>) {
        let mut s = self.state.lock();
        s.finished = s.finished.max(epoch);
        if let Some(f) = failure {
            s.failures.push_back((epoch, f));
            // Waiters of a failed group are woken right away; a short memory is enough.
            while s.failures.len() > 64 {
                s.failures.pop_front();
            }
        }
        self.changed.notify_all();
    }

    fn wait(&self, epoch: u64) -> StoreResult<()> {
        let mut s = self.state.lock();
        while s.finished < epoch {
            self.changed.wait(&mut s);
        }
        match s.failures.iter().find(|(e, _)| *e == epoch) {
            Some((_, f)) => Err(f.to_error()),
            None => Ok(()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database `phip.db` in `data_dir`, migrating its schema
    /// to [`SCHEMA_VERSION`]. Fails if the database was written by a newer schema version.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        Self::open_with_extractor(data_dir, Arc::new(phip_fhir::search::index::extract))
    }

    /// Like [`SqliteStore::open`], with a substitute index extractor (for tests of the search
    /// translation independent of the FHIRPath-driven extraction).
    #[doc(hidden)]
    pub fn open_with_extractor(data_dir: &Path, extractor: Extractor) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            error::backend(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join("phip.db");
        let mut conn = open_connection(&path, true)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let previous_version = schema::migrate(&mut conn)?;
        let schema_version = schema::version(&conn)?;
        let last_ts: i64 = conn.query_row(
            "SELECT COALESCE(MAX(last_updated), 0) FROM resource_versions",
            [],
            |r| r.get(0),
        )?;
        let store = SqliteStore {
            path,
            writer: Mutex::new(Writer {
                conn,
                last_ts,
                group_open: false,
                group_len: 0,
                group_epoch: 0,
                group_pending: catalog::Pending::default(),
            }),
            queued_writers: AtomicUsize::new(0),
            durability: Durability::default(),
            committed_writes: std::sync::atomic::AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            catalog: Catalog::default(),
            extractor,
            schema_version,
        };
        let mut readers = Vec::with_capacity(IDLE_READERS);
        for _ in 0..IDLE_READERS {
            readers.push(open_connection(&store.path, false)?);
        }
        *store.readers.lock() = readers;
        if (1..3).contains(&previous_version) {
            let labelled = write::backfill_access_labels(&store)?;
            tracing::info!(
                labelled,
                "computed the access labels of the stored resources"
            );
        }
        Ok(store)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one resource with the given index entries instead of extracted ones (test seam
    /// for the search translation).
    #[doc(hidden)]
    pub fn write_with_entries(
        &self,
        request: WriteRequest,
        entries: Vec<IndexEntry>,
    ) -> StoreResult<StoredResource> {
        let mut tx = self.begin_sqlite_write(false)?;
        let stored = tx.write_entries(request, Some(entries))?;
        tx.commit_inner()?;
        Ok(stored)
    }

    /// The SQL a search translates to and SQLite's query plans for it (diagnostics).
    #[doc(hidden)]
    pub fn explain_search(&self, request: &crate::SearchRequest) -> StoreResult<String> {
        let conn = self.take_reader()?;
        let tx = SqliteTransaction::begin_read(self, conn)?;
        search::explain(&tx, request)
    }

    /// Commit groups closed and write transactions committed since the store was opened
    /// (diagnostics: their ratio is the average number of commits sharing one WAL sync).
    #[doc(hidden)]
    pub fn commit_stats(&self) -> (u64, u64) {
        let groups = self.writer.lock().group_epoch;
        let writes = self
            .committed_writes
            .load(std::sync::atomic::Ordering::Relaxed);
        (groups, writes)
    }

    fn begin_sqlite_write(&self, solo: bool) -> StoreResult<SqliteTransaction<'_>> {
        SqliteTransaction::begin_write(self, solo)
    }

    fn take_reader(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.readers.lock().pop() {
            return Ok(conn);
        }
        open_connection(&self.path, false)
    }

    fn return_reader(&self, conn: Connection) {
        let mut idle = self.readers.lock();
        if idle.len() < IDLE_READERS * 2 {
            idle.push(conn);
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("schema_version", &self.schema_version)
            .finish_non_exhaustive()
    }
}

fn open_connection(path: &Path, writer: bool) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !writer {
        conn.progress_handler(PROGRESS_INSTRUCTIONS, Some(read_deadline_passed));
    }
    conn.set_prepared_statement_cache_capacity(256);
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Negative = KiB: 64 MiB of page cache for the writer (bulk index inserts touch many
    // pages), 16 MiB per reader.
    conn.pragma_update(None, "cache_size", if writer { -65536 } else { -16384 })?;
    if writer {
        // Bound the WAL file after a checkpoint (a bulk load can grow it a lot).
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    } else {
        conn.pragma_update(None, "query_only", "ON")?;
    }
    Ok(conn)
}

impl Store for SqliteStore {
    fn begin_read(&self) -> StoreResult<Box<dyn Transaction + '_>> {
        let conn = self.take_reader()?;
        Ok(Box::new(SqliteTransaction::begin_read(self, conn)?))
    }

    fn begin_write(&self) -> StoreResult<Box<dyn Transaction + '_>> {
        Ok(Box::new(self.begin_sqlite_write(false)?))
    }

    fn bulk_write(&self, requests: Vec<WriteRequest>) -> StoreResult<Vec<StoredResource>> {
        write::bulk_write(self, requests)
    }

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }
}
