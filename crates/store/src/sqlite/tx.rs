//! Transactions: a connection (the writer under its lock, or a pooled reader) with an open
//! SQLite transaction that rolls back unless committed.

use std::ops::Deref;

use chrono::{DateTime, Utc};
use parking_lot::MutexGuard;
use rusqlite::Connection;

use super::catalog::Pending;
use super::{error, rows, SqliteStore, Writer};
use crate::{
    HistoryPage, HistoryQuery, SearchPage, SearchRequest, StoreResult, StoredResource, Transaction,
    WriteRequest,
};

pub(crate) enum Conn<'s> {
    Writer(MutexGuard<'s, Writer>),
    Reader(Option<Connection>),
}

impl Deref for Conn<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Conn::Writer(w) => &w.conn,
            // Always Some until drop hands the connection back to the pool.
            Conn::Reader(c) => c.as_ref().expect("reader connection present until drop"),
        }
    }
}

/// An open SQLite transaction.
pub(crate) struct SqliteTransaction<'s> {
    pub(crate) store: &'s SqliteStore,
    pub(crate) conn: Conn<'s>,
    /// Type and parameter ids created by this transaction, published on commit.
    pub(crate) pending: Pending,
    /// The `last_updated` of this transaction's writes, taken at the first write.
    ts: Option<i64>,
    /// The next version sequence number, read at the first write.
    next_seq: Option<i64>,
    open: bool,
}

impl<'s> SqliteTransaction<'s> {
    pub(crate) fn begin_write(
        store: &'s SqliteStore,
        guard: MutexGuard<'s, Writer>,
    ) -> StoreResult<Self> {
        // A failed rollback of an earlier transaction must not wedge the writer for good.
        if !guard.conn.is_autocommit() {
            let _ = guard.conn.execute_batch("ROLLBACK");
        }
        guard.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(SqliteTransaction {
            store,
            conn: Conn::Writer(guard),
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

    /// The timestamp of this transaction's writes (epoch ms), strictly after every earlier
    /// transaction's.
    pub(crate) fn timestamp(&mut self) -> StoreResult<i64> {
        if let Some(ts) = self.ts {
            return Ok(ts);
        }
        let Conn::Writer(w) = &mut self.conn else {
            return Err(error::backend("write in a read-only transaction"));
        };
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
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        let pending = std::mem::take(&mut self.pending);
        self.store.catalog.merge(pending);
        Ok(())
    }
}

impl Drop for SqliteTransaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the caller abandoned the transaction. A connection left
            // inside a transaction is repaired at its next begin.
            let _ = self.conn.execute_batch("ROLLBACK");
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
    ) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
        super::history::patient_compartment(self, patient_id, types, since, count, cursor)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        (*self).commit_inner()
    }
}
