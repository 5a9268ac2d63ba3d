//! Transactions: a connection (the writer under its lock, or a pooled reader) with an open
//! SQLite transaction that rolls back unless committed.
//!
//! Group commit: write transactions run as savepoints inside an outer SQLite transaction. A
//! committed write transaction releases its savepoint; when no other writer is waiting for the
//! lock (or the group is full), the outer transaction commits with one WAL sync for the whole
//! group. `commit` returns only once its group is durable, and fails if the group's commit
//! fails, so every acknowledged write survives a crash while concurrent writers share syncs.

use std::ops::Deref;

use chrono::{DateTime, Utc};
use parking_lot::MutexGuard;
use rusqlite::Connection;

use super::catalog::Pending;
use super::{error, rows, SqliteStore, Writer};
use crate::{
    Access, HistoryPage, HistoryQuery, SearchPage, SearchRequest, StoreError, StoreResult,
    StoredResource, Transaction, WriteRequest,
};

/// Most transactions committed with one sync; bounds the latency a long queue adds.
const MAX_GROUP: usize = 64;

/// The writer lock. Dropping it finishes the commit group unless another writer is queued to
/// continue it.
pub(crate) struct WriterLease<'s> {
    guard: Option<MutexGuard<'s, Writer>>,
    store: &'s SqliteStore,
}

impl<'s> WriterLease<'s> {
    /// Takes the writer lock (queueing behind other writers) and opens a savepoint, starting
    /// a new group if none is open. A `solo` transaction (a bulk load) first makes the open
    /// group durable, so that small commits do not wait for a long load.
    pub(crate) fn acquire(store: &'s SqliteStore, solo: bool) -> StoreResult<WriterLease<'s>> {
        store
            .queued_writers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = store.writer.lock();
        store
            .queued_writers
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let mut lease = WriterLease {
            guard: Some(guard),
            store,
        };
        let w = lease.writer_mut();
        if w.group_open && w.conn.is_autocommit() {
            // SQLite rolled the group back on an I/O or resource error; its members are
            // still waiting to learn that their commit failed.
            w.group_open = false;
            w.group_pending = Pending::default();
            store.durability.finish(
                w.group_epoch,
                Some(super::GroupFailure::Unavailable(
                    "the commit group was rolled back by SQLite (an I/O or resource error, such as a full disk); nothing was written, retry".into(),
                )),
            );
        }
        if solo && w.group_open {
            finish_group(w, store);
        }
        if !w.group_open {
            // A connection left inside a transaction by a failed rollback is repaired here.
            if !w.conn.is_autocommit() {
                let _ = w.conn.execute_batch("ROLLBACK");
            }
            w.conn.execute_batch("BEGIN IMMEDIATE")?;
            w.group_open = true;
            w.group_len = 0;
            w.group_epoch += 1;
        }
        w.conn.execute_batch("SAVEPOINT phip_tx")?;
        Ok(lease)
    }

    fn writer_mut(&mut self) -> &mut Writer {
        // Present until drop.
        self.guard
            .as_mut()
            .expect("writer lease holds the lock until drop")
    }

    pub(crate) fn writer(&self) -> &Writer {
        self.guard
            .as_ref()
            .expect("writer lease holds the lock until drop")
    }

    /// Releases the lock, finishing the group first when nobody is queued to continue it.
    /// Returns the epoch of the group the lease belonged to.
    fn release(&mut self) -> u64 {
        let store = self.store;
        let Some(mut guard) = self.guard.take() else {
            return 0;
        };
        let epoch = guard.group_epoch;
        let queued = store
            .queued_writers
            .load(std::sync::atomic::Ordering::SeqCst);
        if guard.group_open && (queued == 0 || guard.group_len >= MAX_GROUP) {
            finish_group(&mut guard, store);
        }
        drop(guard);
        epoch
    }
}

/// Commits the open group (one WAL sync for all its transactions) and tells its waiting
/// committers how it went.
fn finish_group(w: &mut Writer, store: &SqliteStore) {
    let result = if w.conn.is_autocommit() {
        // SQLite rolls a transaction back by itself after some statement failures (a full
        // disk, an I/O error); the statement that failed already reported why to its own
        // committer, and the others in the group may simply try again.
        Err(StoreError::Unavailable(
            "the commit group was rolled back by SQLite; nothing was written, retry".into(),
        ))
    } else {
        w.conn.execute_batch("COMMIT").map_err(StoreError::from)
    };
    w.group_open = false;
    let pending = std::mem::take(&mut w.group_pending);
    let failure = match result {
        Ok(()) => {
            store.catalog.merge(pending);
            None
        }
        Err(e) => {
            if !w.conn.is_autocommit() {
                let _ = w.conn.execute_batch("ROLLBACK");
            }
            Some(super::GroupFailure::from(e))
        }
    };
    store.durability.finish(w.group_epoch, failure);
}

impl Drop for WriterLease<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

pub(crate) enum Conn<'s> {
    Writer(WriterLease<'s>),
    Reader(Option<Connection>),
}

impl Deref for Conn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Conn::Writer(w) => &w.writer().conn,
            // Always Some until drop hands the connection back to the pool.
            Conn::Reader(c) => c.as_ref().expect("reader connection present until drop"),
        }
    }
}

/// An open SQLite transaction.
pub(crate) struct SqliteTransaction<'s> {
    pub(crate) store: &'s SqliteStore,
    pub(crate) conn: Conn<'s>,
    /// Type and parameter ids created by this transaction, published when durable.
    pending: Pending,
    /// The `last_updated` of this transaction's writes, taken at the first write.
    ts: Option<i64>,
    /// The next version sequence number, read at the first write.
    next_seq: Option<i64>,
    open: bool,
}

/// An empty set, for readers (which see no undurable ids).
static NO_PENDING: std::sync::LazyLock<Pending> = std::sync::LazyLock::new(Pending::default);

impl<'s> SqliteTransaction<'s> {
    pub(crate) fn begin_write(store: &'s SqliteStore, solo: bool) -> StoreResult<Self> {
        let lease = WriterLease::acquire(store, solo)?;
        Ok(SqliteTransaction {
            store,
            conn: Conn::Writer(lease),
            pending: Pending::default(),
            ts: None,
            next_seq: None,
            open: true,
        })
    }

    pub(crate) fn begin_read(store: &'s SqliteStore, conn: Connection) -> StoreResult<Self> {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        super::start_read_deadline();
        // Deferred: the snapshot is fixed by the first read and kept until the end.
        conn.execute_batch("BEGIN")?;
        Ok(SqliteTransaction {
            store,
            conn: Conn::Reader(Some(conn)),
            pending: Pending::default(),
            ts: None,
            next_seq: None,
            open: true,
        })
    }

    pub(crate) fn is_writer(&self) -> bool {
        matches!(self.conn, Conn::Writer(_))
    }

    fn group_pending(&self) -> &Pending {
        match &self.conn {
            Conn::Writer(w) => &w.writer().group_pending,
            Conn::Reader(_) => &NO_PENDING,
        }
    }

    /// The id of a resource type, if it was ever stored.
    pub(crate) fn type_id(&self, name: &str) -> StoreResult<Option<i64>> {
        self.store
            .catalog
            .type_id(&self.conn, &[&self.pending, self.group_pending()], name)
    }

    /// The id of a parameter of a type, if a value of it was ever stored.
    pub(crate) fn param_id(&self, tid: i64, code: &str) -> StoreResult<Option<i64>> {
        self.store.catalog.param_id(
            &self.conn,
            &[&self.pending, self.group_pending()],
            tid,
            code,
        )
    }

    /// The id of a resource type, created if needed.
    pub(crate) fn ensure_type(&mut self, name: &str) -> StoreResult<i64> {
        let Conn::Writer(w) = &self.conn else {
            return Err(error::backend("write in a read-only transaction"));
        };
        let w = w.writer();
        self.store
            .catalog
            .ensure_type(&w.conn, &mut self.pending, &w.group_pending, name)
    }

    /// The id of a parameter of a type, created if needed.
    pub(crate) fn ensure_param(&mut self, tid: i64, code: &str) -> StoreResult<i64> {
        let Conn::Writer(w) = &self.conn else {
            return Err(error::backend("write in a read-only transaction"));
        };
        let w = w.writer();
        self.store
            .catalog
            .ensure_param(&w.conn, &mut self.pending, &w.group_pending, tid, code)
    }

    /// The timestamp of this transaction's writes (epoch ms), strictly after every earlier
    /// transaction's.
    pub(crate) fn timestamp(&mut self) -> StoreResult<i64> {
        if let Some(ts) = self.ts {
            return Ok(ts);
        }
        let Conn::Writer(w) = &mut self.conn else {
            return Err(error::backend("write in a read-only transaction"));
        };
        let w = w.writer_mut();
        let now = Utc::now().timestamp_millis();
        let ts = now.max(w.last_ts + 1);
        w.last_ts = ts;
        self.ts = Some(ts);
        Ok(ts)
    }

    /// Hands out the next global version sequence number.
    pub(crate) fn next_seq(&mut self) -> StoreResult<i64> {
        let seq = match self.next_seq {
            Some(s) => s,
            None => self.conn.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM resource_versions",
                [],
                |r| r.get(0),
            )?,
        };
        self.next_seq = Some(seq + 1);
        Ok(seq)
    }

    pub(crate) fn commit_inner(mut self) -> StoreResult<()> {
        match &mut self.conn {
            Conn::Reader(_) => {
                self.conn.execute_batch("COMMIT")?;
                self.open = false;
                Ok(())
            }
            Conn::Writer(lease) => {
                lease.writer().conn.execute_batch("RELEASE phip_tx")?;
                self.open = false;
                let w = lease.writer_mut();
                w.group_len += 1;
                self.store
                    .committed_writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.group_pending.absorb(std::mem::take(&mut self.pending));
                let epoch = lease.release();
                self.store.durability.wait(epoch)
            }
        }
    }
}

impl Drop for SqliteTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller abandoned the transaction. A connection left
            // inside a transaction is repaired at its next begin.
            let sql = match self.conn {
                Conn::Writer(_) => "ROLLBACK TO phip_tx; RELEASE phip_tx",
                Conn::Reader(_) => "ROLLBACK",
            };
            let _ = self.conn.execute_batch(sql);
        }
        if let Conn::Reader(conn) = &mut self.conn {
            if let Some(conn) = conn.take() {
                self.store.return_reader(conn);
            }
        }
    }
}

impl Transaction for SqliteTransaction<'_> {
    fn read(&mut self, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>> {
        rows::read_current(self, resource_type, id)
    }

    fn vread(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> StoreResult<Option<StoredResource>> {
        rows::read_version(self, resource_type, id, version_id)
    }

    fn write(&mut self, request: WriteRequest) -> StoreResult<StoredResource> {
        self.write_entries(request, None)
    }

    fn search(&mut self, request: &SearchRequest) -> StoreResult<SearchPage> {
        super::search::search(self, request)
    }

    fn history(&mut self, query: &HistoryQuery) -> StoreResult<HistoryPage> {
        super::history::history(self, query)
    }

    fn patient_compartment(
        &mut self,
        patient_id: &str,
        types: Option<&[String]>,
        since: Option<DateTime<Utc>>,
        count: usize,
        cursor: Option<&str>,
        access: &Access,
    ) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
        super::history::patient_compartment(self, patient_id, types, since, count, cursor, access)
    }

    fn visible(&mut self, resource_type: &str, id: &str, access: &Access) -> StoreResult<bool> {
        super::history::visible(self, resource_type, id, access)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        (*self).commit_inner()
    }
}
