//! Integer ids for resource types and (type, parameter code) pairs.
//!
//! The shared cache only ever holds ids that are durable: a write transaction keeps the ids it
//! creates in a [`Pending`] set that moves to its commit group's set on commit and to the
//! shared cache once the group is durable, because a rolled-back id would be handed out again
//! by SQLite to a different name.

use std::collections::HashMap;

use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension};

use crate::StoreResult;

/// Durable type and parameter ids, shared by all connections of a store.
#[derive(Default)]
pub(crate) struct Catalog {
    types: RwLock<HashMap<String, i64>>,
    params: RwLock<HashMap<(i64, String), i64>>,
}

/// Ids created by writes that are not durable yet.
#[derive(Default)]
pub(crate) struct Pending {
    types: HashMap<String, i64>,
    params: HashMap<(i64, String), i64>,
}

impl Pending {
    /// Takes over the ids of another set.
    pub(crate) fn absorb(&mut self, other: Pending) {
        self.types.extend(other.types);
        self.params.extend(other.params);
    }
}

impl Catalog {
    /// The id of a type, if any resource or reference of that type was ever stored. `pending`
    /// are the not yet durable sets visible to the caller's connection; a row found in the
    /// database but in none of them is durable and is cached.
    pub(crate) fn type_id(
        &self,
        conn: &Connection,
        pending: &[&Pending],
        name: &str,
    ) -> StoreResult<Option<i64>> {
        if let Some(tid) = pending.iter().find_map(|p| p.types.get(name)) {
            return Ok(Some(*tid));
        }
        if let Some(&tid) = self.types.read().get(name) {
            return Ok(Some(tid));
        }
        let tid: Option<i64> = conn
            .prepare_cached("SELECT tid FROM types WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        if let Some(tid) = tid {
            self.types.write().insert(name.to_owned(), tid);
        }
        Ok(tid)
    }

    /// The id of a type, created if needed (write transactions only) in `created`.
    pub(crate) fn ensure_type(
        &self,
        conn: &Connection,
        created: &mut Pending,
        group: &Pending,
        name: &str,
    ) -> StoreResult<i64> {
        if let Some(tid) = self.type_id(conn, &[created, group], name)? {
            return Ok(tid);
        }
        conn.prepare_cached("INSERT INTO types(name) VALUES (?1)")?
            .execute([name])?;
        let tid = conn.last_insert_rowid();
        created.types.insert(name.to_owned(), tid);
        Ok(tid)
    }

    /// The id of a parameter of a type, if any value of it was ever stored.
    pub(crate) fn param_id(
        &self,
        conn: &Connection,
        pending: &[&Pending],
        tid: i64,
        code: &str,
    ) -> StoreResult<Option<i64>> {
        let key = (tid, code.to_owned());
        if let Some(pid) = pending.iter().find_map(|p| p.params.get(&key)) {
            return Ok(Some(*pid));
        }
        if let Some(&pid) = self.params.read().get(&key) {
            return Ok(Some(pid));
        }
        let pid: Option<i64> = conn
            .prepare_cached("SELECT pid FROM params WHERE tid = ?1 AND code = ?2")?
            .query_row(rusqlite::params![tid, code], |r| r.get(0))
            .optional()?;
        if let Some(pid) = pid {
            self.params.write().insert(key, pid);
        }
        Ok(pid)
    }

    /// The id of a parameter of a type, created if needed (write transactions only).
    pub(crate) fn ensure_param(
        &self,
        conn: &Connection,
        created: &mut Pending,
        group: &Pending,
        tid: i64,
        code: &str,
    ) -> StoreResult<i64> {
        if let Some(pid) = self.param_id(conn, &[created, group], tid, code)? {
            return Ok(pid);
        }
        conn.prepare_cached("INSERT INTO params(tid, code) VALUES (?1, ?2)")?
            .execute(rusqlite::params![tid, code])?;
        let pid = conn.last_insert_rowid();
        created.params.insert((tid, code.to_owned()), pid);
        Ok(pid)
    }

    /// Publishes the ids of a durable commit.
    pub(crate) fn merge(&self, pending: Pending) {
        if !pending.types.is_empty() {
            self.types.write().extend(pending.types);
        }
        if !pending.params.is_empty() {
            self.params.write().extend(pending.params);
        }
    }
}
