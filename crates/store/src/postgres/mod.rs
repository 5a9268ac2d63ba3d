//! PostgreSQL backend (production).
//!
//! Same behaviour as the SQLite backend behind the same traits, with concurrent writers:
//! - Reads run in `REPEATABLE READ READ ONLY` transactions: one snapshot for the whole
//!   transaction, as SQLite's WAL readers have.
//! - Writes run in `READ COMMITTED` transactions. A write locks the resource's row
//!   (`SELECT … FOR UPDATE`), so writers of one resource queue up and each sees the version
//!   the previous one committed: the optimistic lock (`expected_version`) has exactly one
//!   winner per version and versions stay gapless. Two creates of one new id meet on the
//!   primary key of `resource_ids` (`INSERT … ON CONFLICT DO NOTHING` waits for the other
//!   transaction and then sees its row).
//! - A search inside a write transaction (conditional create/update/delete, conditional
//!   references) first takes a transaction-scoped advisory lock keyed by a hash of the
//!   searched type and criteria, so that two transactions searching-then-writing with the
//!   same criteria run one after the other and the second sees the first one's resource.
//!   Unrelated writers never wait for each other.
//!
//! The same store runs on PostgreSQL with Citus, the schema distributed over worker nodes by
//! the patient a resource belongs to (see `schema::CITUS_LAYOUT` and docs/postgres.md): the
//! store learns the layout from the database and then writes the `shard` column, looks
//! resources up through `resource_ids` and generates SQL in the Citus dialect.
//!
//! Timestamps: a write transaction takes one `last_updated` at its first write, later than
//! every timestamp this process handed out before; a version of a resource is also always
//! later than the resource's previous version (the row lock orders them), whatever the clocks
//! of several servers say. History order is the global `seq` of versions.

mod catalog;
mod error;
mod history;
mod pool;
mod schema;
mod search;
mod tx;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use postgres::types::{IsNull, ToSql, Type};
use postgres::Config;

use crate::sqlgen::SqlArg;
use crate::{Store, StoreError, StoreResult, StoredResource, Transaction, WriteRequest};
use catalog::PgCatalog;
use pool::{PgConn, Pool};
pub use schema::{Layout, SCHEMA_VERSION};
use tx::PgTransaction;

/// Extracts search index entries from a resource (see [`crate::sqlite::Extractor`]).
pub type Extractor = crate::sqlite::Extractor;

/// Connections a store opens at most by [`PostgresStore::connect`]; enough for the blocking
/// thread pool of one server without exhausting PostgreSQL's `max_connections` when several
/// servers share a database (use PgBouncer beyond that, see docs/postgres.md).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Bulk-loaded resources after which the planner statistics are first refreshed; the
/// threshold doubles after each refresh.
const FIRST_ANALYZE: u64 = 2_000;

/// The shard key of a resource's home (see `schema::CITUS_LAYOUT`): FNV-1a of the home's
/// id. It must be the same in every server of a deployment and every release, since it
/// decides where rows are and where queries look for them; Citus hashes it again to pick
/// the shard, so its own distribution does not matter.
pub(crate) fn shard_key(home: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in home.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The shard of `resource_type/id` when its type and id decide it: a Patient's home is its
/// own id, and so is that of a resource of a type in no patient's compartment. Other
/// resources are looked up in `resource_ids`.
pub(crate) fn known_shard(resource_type: &str, id: &str) -> Option<i64> {
    (resource_type == "Patient"
        || phip_fhir::r4()
            .patient_compartment_params(resource_type)
            .is_empty())
    .then(|| shard_key(id))
}

/// The shard a new resource is created on, for good: its own id for a Patient or a resource
/// in no patient's compartment, otherwise the (first) patient whose compartment its first
/// version is in. A resource whose patients change later stays where it is, and the
/// compartments it then enters reach it through `compartment_ref`.
pub(crate) fn home_shard(resource_type: &str, id: &str, body: Option<&serde_json::Value>) -> i64 {
    if let Some(shard) = known_shard(resource_type, id) {
        return shard;
    }
    let patients = body
        .map(phip_fhir::access::compartment_patients)
        .unwrap_or_default();
    shard_key(patients.first().map_or(id, String::as_str))
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    catalog: PgCatalog,
    extractor: Extractor,
    /// The newest `last_updated` (epoch ms) this process handed out.
    clock: Mutex<i64>,
    /// Resources bulk-loaded by this process, and the count at which statistics are next
    /// refreshed (see [`write::bulk_write`]).
    bulk_loaded: Mutex<(u64, u64)>,
    schema_version: i64,
    /// Whether the schema is distributed with Citus (`shard` columns, other statements).
    citus: bool,
}

/// The time limit of the pool's statements unless the URL's `options` set
/// `statement_timeout`: PostgreSQL cancels a runaway query itself (the request gets a 503)
/// instead of keeping a backend busy after the client gave up. Migrations run without it.
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "60s";

/// `config` with `-c statement_timeout=…` added to its options when they lack one.
fn with_statement_timeout(config: &Config) -> Config {
    let mut config = config.clone();
    let options = config.get_options().unwrap_or_default().to_owned();
    if !options.contains("statement_timeout") {
        let options = format!("{options} -c statement_timeout={DEFAULT_STATEMENT_TIMEOUT}");
        config.options(options.trim());
    }
    config
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or a
    /// libpq key/value string) with a pool of [`DEFAULT_POOL_SIZE`] connections, and migrates
    /// its schema to [`SCHEMA_VERSION`]. Fails if the server cannot be reached or the database
    /// was written by a newer schema version.
    pub fn connect(url: &str) -> StoreResult<PostgresStore> {
        Self::connect_with(
            url,
            DEFAULT_POOL_SIZE,
            Arc::new(phip_fhir::search::index::extract),
        )
    }

    /// Like [`PostgresStore::connect`] with a pool size and an index extractor (tests
    /// substitute their own to test the search translation apart from extraction).
    pub fn connect_with(
        url: &str,
        pool_size: usize,
        extractor: Extractor,
    ) -> StoreResult<PostgresStore> {
        Self::connect_with_layout(url, pool_size, extractor, Layout::Detect)
    }

    /// Like [`PostgresStore::connect_with`], laying out a new database as `layout` says
    /// ([`Layout::Citus`]: `phip migrate --citus`).
    pub fn connect_with_layout(
        url: &str,
        pool_size: usize,
        extractor: Extractor,
        layout: Layout,
    ) -> StoreResult<PostgresStore> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("phip");
        }
        config.keepalives(true);
        let mut conn = PgConn::connect(&config)?;
        let (schema_version, citus) = schema::migrate(&mut conn, layout)?;
        let last: i64 = conn
            .query_one(
                "SELECT COALESCE(MAX(last_updated), 0) FROM resource_versions",
                &[],
            )?
            .get(0);
        let store = PostgresStore {
            pool: Pool::new(with_statement_timeout(&config), pool_size),
            catalog: PgCatalog::new(config),
            extractor,
            clock: Mutex::new(last),
            bulk_loaded: Mutex::new((0, FIRST_ANALYZE)),
            schema_version,
            citus,
        };
        store.catalog.preload()?;
        let labelled = write::backfill_access_labels(&store)?;
        if labelled > 0 {
            tracing::info!(
                labelled,
                "computed the access labels of the stored resources"
            );
        }
        Ok(store)
    }

    /// Applies pending migrations (also done by [`PostgresStore::connect`]) and returns the
    /// schema version. Safe to run from several processes at once.
    pub fn migrate(&self) -> StoreResult<i64> {
        let mut conn = self.pool.get()?;
        Ok(schema::migrate(&mut conn, Layout::Detect)?.0)
    }

    /// The schema version of the database when the store connected.
    pub fn schema_version(&self) -> i64 {
        self.schema_version
    }

    /// Whether the schema is distributed with Citus.
    pub fn is_distributed(&self) -> bool {
        self.citus
    }

    /// The SQL dialect of this database's layout.
    pub(crate) fn dialect(&self) -> crate::sqlgen::Dialect {
        if self.citus {
            crate::sqlgen::Dialect::Citus
        } else {
            crate::sqlgen::Dialect::Postgres
        }
    }

    /// Where the store connects (`host:port/dbname`), for logs.
    pub fn describe(&self) -> String {
        pool::describe(self.pool.config())
    }

    /// Writes one resource with the given index entries instead of extracted ones (test seam
    /// for the search translation).
    #[doc(hidden)]
    pub fn write_with_entries(
        &self,
        request: WriteRequest,
        entries: Vec<phip_fhir::search::IndexEntry>,
    ) -> StoreResult<StoredResource> {
        let mut tx = PgTransaction::begin(self, true)?;
        let mut out = tx.write_batch(vec![(request, Some(entries))], true)?;
        tx.commit_inner()?;
        out.pop()
            .ok_or_else(|| StoreError::Backend("write returned nothing".into()))
    }

    /// The SQL a search translates to and PostgreSQL's plans for it (diagnostics).
    #[doc(hidden)]
    pub fn explain_search(&self, request: &crate::SearchRequest) -> StoreResult<String> {
        let mut tx = PgTransaction::begin(self, false)?;
        search::explain(&mut tx, request)
    }

    /// Counts bulk-loaded resources and refreshes the planner's statistics when the loaded
    /// data has doubled: right after a large import, autovacuum has not analyzed the new rows
    /// yet and the planner picks nested loops over what it believes are empty tables (a
    /// 500 ms search instead of 25 ms on the Synthea sample). Doubling thresholds keep the
    /// cost logarithmic in the size of the load.
    fn after_bulk(&self, written: usize) {
        let due = {
            let mut b = self.bulk_loaded.lock();
            b.0 += written as u64;
            let due = b.0 >= b.1;
            if due {
                b.1 = b.0.saturating_mul(2);
            }
            due
        };
        if due {
            let tables = ["resources", "resource_ids", "resource_versions"]
                .iter()
                .chain(crate::sqlgen::INDEX_TABLES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let result = self
                .pool
                .get()
                .and_then(|mut c| c.batch(&format!("ANALYZE {tables}")));
            if let Err(e) = result {
                // Only a planning hint: autovacuum will analyze later anyway.
                tracing::warn!(error = %e, "ANALYZE after a bulk load failed");
            }
        }
    }

    /// The timestamp for a new write transaction: now, or just after the last one handed out.
    fn next_timestamp(&self) -> i64 {
        let mut last = self.clock.lock();
        let now = chrono::Utc::now().timestamp_millis();
        *last = now.max(*last + 1);
        *last
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.describe())
            .field("schema_version", &self.schema_version)
            .finish_non_exhaustive()
    }
}

impl Store for PostgresStore {
    fn begin_read(&self) -> StoreResult<Box<dyn Transaction + '_>> {
        Ok(Box::new(PgTransaction::begin(self, false)?))
    }

    fn begin_write(&self) -> StoreResult<Box<dyn Transaction + '_>> {
        Ok(Box::new(PgTransaction::begin(self, true)?))
    }

    fn bulk_write(&self, requests: Vec<WriteRequest>) -> StoreResult<Vec<StoredResource>> {
        write::bulk_write(self, requests)
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    fn pool_status(&self) -> Option<crate::PoolStatus> {
        Some(self.pool.status())
    }
}

/// Binds a generated argument to whatever type PostgreSQL inferred for its placeholder (the
/// shared SQL generator does not know that `pid` is an `integer` and `rid` a `bigint`).
impl ToSql for SqlArg {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlArg::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            SqlArg::Real(r) => match *ty {
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => r.to_sql(ty, out),
            },
            SqlArg::Text(t) => t.as_str().to_sql(ty, out),
            SqlArg::IntList(v) => match *ty {
                Type::INT4_ARRAY => {
                    let narrow: Result<Vec<i32>, _> = v.iter().map(|x| i32::try_from(*x)).collect();
                    narrow?.to_sql(ty, out)
                }
                _ => v.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// The arguments as the driver's parameter list.
fn params(args: &[SqlArg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

/// An integer column of any width.
fn get_int(row: &postgres::Row, i: usize) -> StoreResult<i64> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT2 => row.try_get::<_, i16>(i).map(i64::from),
        Type::INT4 => row.try_get::<_, i32>(i).map(i64::from),
        _ => row.try_get::<_, i64>(i),
    };
    v.map_err(error::pg)
}
