//! Transactions: a pooled connection with an open PostgreSQL transaction that rolls back unless
//! committed.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::pool::Lease;
use super::{history, search, PostgresStore};
use crate::{
    Access, HistoryPage, HistoryQuery, SearchPage, SearchRequest, StoreResult, StoredResource,
    Transaction, WriteRequest,
};

/// An open PostgreSQL transaction.
pub(crate) struct PgTransaction<'s> {
    pub(crate) store: &'s PostgresStore,
    pub(crate) conn: Lease<'s>,
    pub(crate) writer: bool,
    /// The `last_updated` of this transaction's writes, taken at the first write.
    ts: Option<i64>,
    /// Criteria locks already held (see [`PgTransaction::lock_criteria`]).
    criteria_locks: HashSet<i64>,
    open: bool,
}

impl<'s> PgTransaction<'s> {
    pub(crate) fn begin(store: &'s PostgresStore, writer: bool) -> StoreResult<Self> {
        let sql = if writer {
            "BEGIN ISOLATION LEVEL READ COMMITTED"
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        };
        // Idle connections may have died with a server restart; each failed one is dropped,
        // and a fresh connection is tried before giving up, so the first request after the
        // database comes back succeeds.
        let mut attempts = 0;
        let conn = loop {
            attempts += 1;
            let mut conn = store.pool.get()?;
            match conn.batch(sql) {
                Ok(()) => break conn,
                Err(_) if conn.broken && attempts <= super::DEFAULT_POOL_SIZE + 1 => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(PgTransaction {
            store,
            conn,
            writer,
            ts: None,
            criteria_locks: HashSet::new(),
            open: true,
        })
    }

    /// The timestamp of this transaction's writes (epoch ms).
    pub(crate) fn timestamp(&mut self) -> i64 {
        *self.ts.get_or_insert_with(|| self.store.next_timestamp())
    }

    /// Serializes this transaction with every other write transaction searching the same
    /// criteria, until commit: the search-then-write of conditional operations must not let
    /// two transactions both find nothing and both create.
    pub(crate) fn lock_criteria(&mut self, key: i64) -> StoreResult<()> {
        if self.criteria_locks.insert(key) {
            self.conn
                .execute("SELECT pg_advisory_xact_lock($1)", &[&key])?;
        }
        Ok(())
    }

    pub(crate) fn commit_inner(mut self) -> StoreResult<()> {
        self.conn.batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PgTransaction<'_> {
    fn drop(&mut self) {
        if self.open && self.conn.batch("ROLLBACK").is_err() {
            // Unknown transaction state: never hand this connection out again.
            self.conn.broken = true;
        }
    }
}

impl Transaction for PgTransaction<'_> {
    fn read(&mut self, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>> {
        history::read(self, resource_type, id, None)
    }

    fn vread(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> StoreResult<Option<StoredResource>> {
        let Ok(v) = i64::try_from(version_id) else {
            return Ok(None);
        };
        history::read(self, resource_type, id, Some(v))
    }

    fn write(&mut self, request: WriteRequest) -> StoreResult<StoredResource> {
        let mut out = self.write_batch(vec![(request, None)], true)?;
        out.pop()
            .ok_or_else(|| crate::StoreError::Backend("write returned nothing".into()))
    }

    fn search(&mut self, request: &SearchRequest) -> StoreResult<SearchPage> {
        search::search(self, request)
    }

    fn history(&mut self, query: &HistoryQuery) -> StoreResult<HistoryPage> {
        history::history(self, query)
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
        history::patient_compartment(self, patient_id, types, since, count, cursor, access)
    }

    fn visible(&mut self, resource_type: &str, id: &str, access: &Access) -> StoreResult<bool> {
        history::visible(self, resource_type, id, access)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        (*self).commit_inner()
    }
}
