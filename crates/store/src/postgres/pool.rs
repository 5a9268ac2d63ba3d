//! A small blocking connection pool with a prepared-statement cache per connection.
//!
//! The store's trait is synchronous and called from a blocking thread pool, so a
//! `Mutex`/`Condvar` pool of `postgres::Client`s is all that is needed. A connection that saw a
//! fatal error is dropped instead of returned, so the pool heals itself when the server comes
//! back; connecting fails fast (the URL's `connect_timeout`, 5 s by default).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, NoTls, Row, Statement};

use super::error::{is_fatal, pg};
use crate::{StoreError, StoreResult};

/// Statements kept prepared per connection; search statements vary with their filters, so the
/// cache is bounded and simply cleared when full.
const STATEMENT_CACHE: usize = 512;

/// How long a caller waits for a free connection before the store reports it is busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection and its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Set when an error left the connection unusable (or in an unknown transaction state).
    pub(crate) broken: bool,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PgConn {
    pub(crate) fn connect(config: &Config) -> StoreResult<PgConn> {
        let client = config.connect(NoTls).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                describe(config)
            ))
        })?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            broken: false,
        })
    }

    fn statement(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(|e| self.fail(e))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    fn fail(&mut self, e: postgres::Error) -> StoreError {
        if is_fatal(&e) {
            self.broken = true;
        }
        pg(e)
    }

    /// Runs a (cached, prepared) query.
    pub(crate) fn query(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Vec<Row>> {
        let stmt = self.statement(sql)?;
        self.client.query(&stmt, params).map_err(|e| self.fail(e))
    }

    /// Runs a query expected to return at most one row.
    pub(crate) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Option<Row>> {
        let stmt = self.statement(sql)?;
        self.client
            .query_opt(&stmt, params)
            .map_err(|e| self.fail(e))
    }

    /// Runs a query expected to return exactly one row.
    pub(crate) fn query_one(&mut self, sql: &str, params: Params<'_>) -> StoreResult<Row> {
        let stmt = self.statement(sql)?;
        self.client
            .query_one(&stmt, params)
            .map_err(|e| self.fail(e))
    }

    /// Runs a statement and returns the number of rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: Params<'_>) -> StoreResult<u64> {
        let stmt = self.statement(sql)?;
        self.client.execute(&stmt, params).map_err(|e| self.fail(e))
    }

    /// Runs statements without parameters (transaction control, DDL).
    pub(crate) fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.client.batch_execute(sql).map_err(|e| self.fail(e))
    }

    /// Streams `rows` rows into a table with binary `COPY … FROM STDIN BINARY`; `row(i, out)`
    /// pushes the values of row `i`, of the given column types.
    pub(crate) fn copy_in<'a>(
        &mut self,
        sql: &str,
        types: &[Type],
        rows: usize,
        mut row: impl FnMut(usize, &mut Vec<&'a (dyn ToSql + Sync)>),
    ) -> StoreResult<u64> {
        let result = (|| {
            let sink = self.client.copy_in(sql)?;
            let mut writer = BinaryCopyInWriter::new(sink, types);
            let mut values = Vec::with_capacity(types.len());
            for i in 0..rows {
                values.clear();
                row(i, &mut values);
                writer.write(&values)?;
            }
            writer.finish()
        })();
        result.map_err(|e| self.fail(e))
    }

    /// Prepares a statement without caching it (diagnostics).
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// `host:port/dbname` of a config, for error messages (never the password).
pub(crate) fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("?"))
}

/// The pool.
pub(crate) struct Pool {
    config: Config,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    /// Connections open (idle or leased).
    open: usize,
    /// Callers blocked waiting for a connection.
    waiting: usize,
}

impl Pool {
    pub(crate) fn new(config: Config, max: usize) -> Pool {
        Pool {
            config,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A connection: an idle one, a new one while under the limit, or the next one returned.
    pub(crate) fn get(&self) -> StoreResult<Lease<'_>> {
        let mut state = self.state.lock();
        loop {
            while let Some(conn) = state.idle.pop() {
                if conn.client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match PgConn::connect(&self.config) {
                    Ok(conn) => Ok(Lease {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.state.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            state.waiting += 1;
            let timed_out = self.freed.wait_for(&mut state, ACQUIRE_TIMEOUT).timed_out();
            state.waiting -= 1;
            if timed_out {
                return Err(StoreError::Busy);
            }
        }
    }

    /// Connections in use, idle and waited for.
    pub(crate) fn status(&self) -> crate::PoolStatus {
        let state = self.state.lock();
        crate::PoolStatus {
            in_use: state.open.saturating_sub(state.idle.len()),
            idle: state.idle.len(),
            waiting: state.waiting,
            max: self.max,
        }
    }

    fn put(&self, conn: PgConn) {
        let mut state = self.state.lock();
        if conn.broken || conn.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.freed.notify_one();
    }
}

/// A leased connection, returned to the pool on drop.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<PgConn>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConn;

    fn deref(&self) -> &PgConn {
        // Present until drop.
        self.conn
            .as_ref()
            .expect("lease holds its connection until drop")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn
            .as_mut()
            .expect("lease holds its connection until drop")
    }
}

impl Drop for Pool {
    /// Closing a synchronous `postgres` connection blocks on its private runtime, which panics
    /// when the pool is dropped on an async worker (e.g. when a server shuts down): close the
    /// idle connections on a plain thread instead.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state.get_mut().idle);
        if idle.is_empty() {
            return;
        }
        let closer = std::thread::Builder::new()
            .name("phip-pg-close".into())
            .spawn(move || drop(idle));
        if let Err(error) = closer {
            tracing::warn!(%error, "could not close PostgreSQL connections cleanly");
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(conn);
        }
    }
}
