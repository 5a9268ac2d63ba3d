//! A throwaway Citus cluster: a coordinator and workers, each a [`PgCluster`] on a free
//! loopback port with `shared_preload_libraries = 'citus'`, stopped like every test cluster
//! (by `Drop` for an owned one, at exit, and by the watchdog when the test process dies).
//!
//! Citus keeps its node list per database, so [`CitusCluster::fresh_database`] creates the
//! database on every node, creates the extension in each, and registers the coordinator and
//! the workers in the coordinator's copy. Test databases are distributed over 4 shards
//! (`citus.shard_count`) rather than Citus' default 32, so that laying out phip's schema for
//! a test takes a second, not ten; nothing in phip depends on the number.
//!
//! Without Citus installed (no `citus.so` next to the PostgreSQL server) the helpers print a
//! loud notice and return `None`, so tests skip; with `PHIP_REQUIRE_CITUS=1` (CI) they panic.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::{find_binaries, PgCluster};

/// The environment variable that turns a missing Citus into a test failure.
pub const REQUIRE_CITUS_ENV: &str = "PHIP_REQUIRE_CITUS";

/// Shards of a distributed table in a test database.
pub const TEST_SHARD_COUNT: u32 = 4;

static SHARED: OnceLock<Option<CitusCluster>> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A running Citus cluster: one coordinator, some workers.
#[derive(Debug)]
pub struct CitusCluster {
    coordinator: PgCluster,
    workers: Vec<PgCluster>,
    /// The databases made by [`CitusCluster::fresh_database`], which a worker added later
    /// must also hold.
    databases: Mutex<Vec<String>>,
}

impl CitusCluster {
    /// The cluster (a coordinator and two workers) shared by the tests of this process,
    /// started on first use. `None` after a loud notice when PostgreSQL or Citus is not
    /// installed, unless `PHIP_REQUIRE_CITUS=1` (or, for PostgreSQL itself,
    /// `PHIP_REQUIRE_POSTGRES=1`), in which case this panics; panics too if the nodes fail
    /// to start.
    pub fn shared() -> Option<&'static CitusCluster> {
        SHARED
            .get_or_init(|| {
                let bin_dir = find_citus()?;
                match CitusCluster::start(bin_dir, 2, false) {
                    Ok(c) => Some(c),
                    Err(e) => panic!("cannot start the shared Citus test cluster: {e}"),
                }
            })
            .as_ref()
    }

    /// A cluster of the caller's own with `workers` workers, stopped and deleted when dropped
    /// (for tests that add nodes). `None` as for [`CitusCluster::shared`].
    pub fn start_owned(workers: usize) -> Option<CitusCluster> {
        let bin_dir = find_citus()?;
        match CitusCluster::start(bin_dir, workers, true) {
            Ok(c) => Some(c),
            Err(e) => panic!("cannot start a Citus test cluster: {e}"),
        }
    }

    fn start(bin_dir: PathBuf, workers: usize, owned: bool) -> Result<CitusCluster, String> {
        let node = || PgCluster::start_in(bin_dir.clone(), owned, node_options());
        let coordinator = node()?;
        let workers = (0..workers)
            .map(|_| node())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CitusCluster {
            coordinator,
            workers,
            databases: Mutex::new(Vec::new()),
        })
    }

    /// The coordinator, where clients connect.
    pub fn coordinator(&self) -> &PgCluster {
        &self.coordinator
    }

    /// The workers, in the order they were added.
    pub fn workers(&self) -> &[PgCluster] {
        &self.workers
    }

    /// Creates a new, uniquely named database with the extension and every node registered,
    /// and returns the coordinator's connection URL for it.
    ///
    /// Panics when a node does not answer: there is no test to run without it.
    pub fn fresh_database(&self) -> String {
        // Registering nodes takes cluster-wide locks that concurrent registrations in other
        // databases can deadlock on: one database at a time.
        static SERIAL: Mutex<()> = Mutex::new(());
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("phip_citus_{}_{n}", std::process::id());
        for node in std::iter::once(&self.coordinator).chain(&self.workers) {
            prepare(node, &name).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut c = connect(&self.coordinator.url(&name)).unwrap_or_else(|e| panic!("{e}"));
        let mut setup = format!(
            "ALTER DATABASE {name} SET citus.shard_count = {TEST_SHARD_COUNT}; \
             SELECT citus_set_coordinator_host('127.0.0.1', {});",
            self.coordinator.port()
        );
        for w in &self.workers {
            setup.push_str(&format!(
                "SELECT citus_add_node('127.0.0.1', {});",
                w.port()
            ));
        }
        c.batch_execute(&setup).unwrap_or_else(|e| {
            panic!("cannot register the Citus nodes of {name}: {}", detail(&e))
        });
        if let Ok(mut list) = self.databases.lock() {
            list.push(name.clone());
        }
        self.coordinator.url(&name)
    }

    /// Starts one more worker and registers it in every database made so far (it holds no
    /// shards until they are rebalanced: `citus_rebalance_start`). Returns its port.
    pub fn add_worker(&mut self) -> Result<u16, String> {
        let bin_dir = self.coordinator.bin_dir.clone();
        let worker = PgCluster::start_in(bin_dir, self.coordinator.stop_on_drop, node_options())?;
        let databases = self
            .databases
            .lock()
            .map_err(|_| "database list poisoned".to_owned())?
            .clone();
        for name in &databases {
            prepare(&worker, name)?;
            let mut c = connect(&self.coordinator.url(name))?;
            c.batch_execute(&format!(
                "SELECT citus_add_node('127.0.0.1', {})",
                worker.port()
            ))
            .map_err(|e| format!("cannot add a worker to {name}: {}", detail(&e)))?;
        }
        let port = worker.port();
        self.workers.push(worker);
        Ok(port)
    }
}

/// Every node preloads Citus; a smaller buffer pool than a lone test cluster's, since a
/// cluster is three servers; room for a Citus maintenance daemon (a background worker) in
/// each of the many databases tests create, which detects distributed deadlocks.
fn node_options() -> String {
    // `wal_level=logical`: Citus moves shards between nodes by logical replication, so that
    // writes go on while a shard moves (`citus_rebalance_start`).
    "-c shared_preload_libraries=citus -c shared_buffers=64MB -c max_worker_processes=512 \
     -c wal_level=logical"
        .to_owned()
}

/// Creates database `name` on `node` with the extension.
fn prepare(node: &PgCluster, name: &str) -> Result<(), String> {
    let mut c = connect(&node.url("postgres"))?;
    // Identifiers cannot be bound; the name is our own.
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .map_err(|e| {
            format!(
                "cannot create database {name} on port {}: {}",
                node.port(),
                detail(&e)
            )
        })?;
    let mut c = connect(&node.url(name))?;
    c.batch_execute("CREATE EXTENSION citus").map_err(|e| {
        format!(
            "cannot create the citus extension on port {}: {}",
            node.port(),
            detail(&e)
        )
    })
}

/// The server's message for a database error (the driver's `Display` says only "db error").
fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn connect(url: &str) -> Result<postgres::Client, String> {
    postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| format!("cannot connect to {url}: {}", detail(&e)))
}

/// The PostgreSQL binaries when Citus is installed next to them (`citus.so` in the server's
/// library directory), or `None` after a loud notice (a panic when Citus is required).
fn find_citus() -> Option<PathBuf> {
    let required = std::env::var(REQUIRE_CITUS_ENV).is_ok_and(|v| v == "1");
    let bin_dir = match find_binaries() {
        Some(b) => b,
        None if required => panic!("PostgreSQL binaries not found, but {REQUIRE_CITUS_ENV}=1"),
        None => return None,
    };
    if citus_library(&bin_dir).is_some() {
        return Some(bin_dir);
    }
    let msg = "SKIPPING Citus tests: the citus extension is not installed next to the \
               PostgreSQL server found on PATH";
    if required {
        panic!("{msg}, but {REQUIRE_CITUS_ENV}=1 requires them");
    }
    eprintln!("\n========================================================");
    eprintln!("{msg}");
    eprintln!("(build it from third_party/citus-12.1.12.tar.gz as .ci/run does, or set");
    eprintln!(" {REQUIRE_CITUS_ENV}=1 to fail instead)");
    eprintln!("========================================================\n");
    None
}

/// `citus.so` in the library directory of the server in `bin_dir` (following symbolic links:
/// `/usr/local/bin/postgres` may point into `/usr/lib/postgresql/15/bin`).
fn citus_library(bin_dir: &Path) -> Option<PathBuf> {
    let server = std::fs::canonicalize(bin_dir.join("postgres")).ok()?;
    let lib = server.parent()?.parent()?.join("lib").join("citus.so");
    lib.is_file().then_some(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_cluster_distributes_over_both_workers() {
        let Some(cluster) = CitusCluster::shared() else {
            return;
        };
        let url = cluster.fresh_database();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(
            "CREATE TABLE t (k bigint PRIMARY KEY); \
             SELECT create_distributed_table('t', 'k'); \
             INSERT INTO t SELECT generate_series(1, 100);",
        )
        .unwrap();
        let nodes: i64 = c
            .query_one(
                "SELECT count(DISTINCT nodeport) FROM citus_shards \
                 WHERE table_name = 't'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(nodes, 2);
        let shards: i64 = c
            .query_one(
                "SELECT count(*) FROM citus_shards WHERE table_name = 't'::regclass",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(shards, i64::from(TEST_SHARD_COUNT));
        let rows: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
        assert_eq!(rows, 100);
    }
}
