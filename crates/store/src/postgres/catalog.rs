//! Integer ids for resource types and (type, parameter code) pairs.
//!
//! New ids are created on a connection of the catalog's own, in autocommit, so that they are
//! durable and visible to everyone at once: a write transaction never holds a lock on a
//! dictionary row (which would serialize every writer introducing the same new parameter), and
//! the shared cache never holds an id that a rollback could take back. An id nobody uses after
//! a rollback is harmless.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};
use postgres::Config;

use super::pool::PgConn;
use crate::sqlgen::Catalog;
use crate::StoreResult;

/// Durable type and parameter ids, shared by all connections of a store.
pub(crate) struct PgCatalog {
    config: Config,
    conn: Mutex<Option<PgConn>>,
    types: RwLock<HashMap<String, i64>>,
    names: RwLock<HashMap<i64, String>>,
    params: RwLock<HashMap<(i64, String), i64>>,
}

impl PgCatalog {
    pub(crate) fn new(config: Config) -> PgCatalog {
        PgCatalog {
            config,
            conn: Mutex::new(None),
            types: RwLock::default(),
            names: RwLock::default(),
            params: RwLock::default(),
        }
    }

    /// Runs `f` on the catalog connection, (re)connecting as needed.
    fn with_conn<T>(&self, f: impl FnOnce(&mut PgConn) -> StoreResult<T>) -> StoreResult<T> {
        let mut guard = self.conn.lock();
        if guard.as_ref().is_none_or(|c| c.broken) {
            *guard = Some(PgConn::connect(&self.config)?);
        }
        let conn = guard.as_mut().expect("catalog connection was just opened");
        f(conn)
    }

    /// Loads every type and parameter (they are few) so that most lookups never leave memory.
    pub(crate) fn preload(&self) -> StoreResult<()> {
        let (types, params) = self.with_conn(|c| {
            let types = c.query("SELECT tid, name FROM types", &[])?;
            let params = c.query("SELECT pid, tid, code FROM params", &[])?;
            Ok((types, params))
        })?;
        let mut t = self.types.write();
        let mut n = self.names.write();
        for row in types {
            let tid = i64::from(row.get::<_, i32>(0));
            let name: String = row.get(1);
            n.insert(tid, name.clone());
            t.insert(name, tid);
        }
        let mut p = self.params.write();
        for row in params {
            let pid = i64::from(row.get::<_, i32>(0));
            let tid = i64::from(row.get::<_, i32>(1));
            p.insert((tid, row.get(2)), pid);
        }
        Ok(())
    }

    /// The name of a type id.
    pub(crate) fn type_name(&self, tid: i64) -> StoreResult<String> {
        if let Some(n) = self.names.read().get(&tid) {
            return Ok(n.clone());
        }
        let tid32 = to_i32(tid);
        let name: Option<String> = self.with_conn(|c| {
            Ok(
                c.query_opt("SELECT name FROM types WHERE tid = $1", &[&tid32])?
                    .map(|r| r.get(0)),
            )
        })?;
        let name = name.ok_or_else(|| {
            crate::StoreError::Backend(format!("unknown type id {tid} in the database"))
        })?;
        self.remember_type(tid, &name);
        Ok(name)
    }

    fn remember_type(&self, tid: i64, name: &str) {
        self.types.write().insert(name.to_owned(), tid);
        self.names.write().insert(tid, name.to_owned());
    }

    /// The id of a type, created if needed.
    pub(crate) fn ensure_type(&self, name: &str) -> StoreResult<i64> {
        if let Some(&tid) = self.types.read().get(name) {
            return Ok(tid);
        }
        let tid = self.insert_or_get(
            "WITH ins AS (INSERT INTO types (name) VALUES ($1) ON CONFLICT (name) DO NOTHING \
             RETURNING tid) \
             SELECT tid FROM ins UNION ALL SELECT tid FROM types WHERE name = $1 LIMIT 1",
            &[&name],
        )?;
        self.remember_type(tid, name);
        Ok(tid)
    }

    /// The id of a parameter of a type, created if needed.
    pub(crate) fn ensure_param(&self, tid: i64, code: &str) -> StoreResult<i64> {
        let key = (tid, code.to_owned());
        if let Some(&pid) = self.params.read().get(&key) {
            return Ok(pid);
        }
        let tid32 = to_i32(tid);
        let pid = self.insert_or_get(
            "WITH ins AS (INSERT INTO params (tid, code) VALUES ($1, $2) \
             ON CONFLICT (tid, code) DO NOTHING RETURNING pid) \
             SELECT pid FROM ins UNION ALL \
             SELECT pid FROM params WHERE tid = $1 AND code = $2 LIMIT 1",
            &[&tid32, &code],
        )?;
        self.params.write().insert(key, pid);
        Ok(pid)
    }

    /// Runs an insert-or-select returning one id. A row committed by another session between
    /// this statement's snapshot and its insert conflicts without being visible to the
    /// select, so that case is simply asked again.
    fn insert_or_get(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> StoreResult<i64> {
        self.with_conn(|c| {
            for _ in 0..5 {
                if let Some(row) = c.query_opt(sql, params)? {
                    return Ok(i64::from(row.get::<_, i32>(0)));
                }
            }
            Err(crate::StoreError::Busy)
        })
    }
}

impl Drop for PgCatalog {
    /// Like the pool's connections, the catalog connection is closed on a plain thread: closing
    /// a synchronous client blocks on its runtime, which panics on an async worker.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take() {
            let closer = std::thread::Builder::new()
                .name("phip-pg-close".into())
                .spawn(move || drop(conn));
            if let Err(error) = closer {
                tracing::warn!(%error, "could not close a PostgreSQL connection cleanly");
            }
        }
    }
}

impl Catalog for PgCatalog {
    fn type_id(&self, name: &str) -> StoreResult<Option<i64>> {
        if let Some(&tid) = self.types.read().get(name) {
            return Ok(Some(tid));
        }
        let tid: Option<i64> = self.with_conn(|c| {
            Ok(
                c.query_opt("SELECT tid FROM types WHERE name = $1", &[&name])?
                    .map(|r| i64::from(r.get::<_, i32>(0))),
            )
        })?;
        if let Some(tid) = tid {
            self.remember_type(tid, name);
        }
        Ok(tid)
    }

    fn param_id(&self, tid: i64, code: &str) -> StoreResult<Option<i64>> {
        let key = (tid, code.to_owned());
        if let Some(&pid) = self.params.read().get(&key) {
            return Ok(Some(pid));
        }
        let tid32 = to_i32(tid);
        let pid: Option<i64> = self.with_conn(|c| {
            Ok(c.query_opt(
                "SELECT pid FROM params WHERE tid = $1 AND code = $2",
                &[&tid32, &code],
            )?
            .map(|r| i64::from(r.get::<_, i32>(0))))
        })?;
        if let Some(pid) = pid {
            self.params.write().insert(key, pid);
        }
        Ok(pid)
    }

    fn params_with_code(&self, code: &str) -> StoreResult<Vec<i64>> {
        self.with_conn(|c| {
            Ok(c.query("SELECT pid FROM params WHERE code = $1", &[&code])?
                .into_iter()
                .map(|r| i64::from(r.get::<_, i32>(0)))
                .collect())
        })
    }
}

/// Dictionary ids are `integer` columns; ids come from those columns, so they always fit.
pub(crate) fn to_i32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}
