//! Versioned FHIR resource storage and search behind one backend-neutral trait.
//!
//! A [`Store`] hands out [`Transaction`]s. Everything a FHIR interaction needs — reads, searches,
//! writes of new versions and history — goes through a transaction, so that a transaction bundle
//! (with its conditional entries and conditional references) sees one consistent state and
//! commits all-or-nothing. Backends: [`sqlite`] (embedded default) and [`postgres`] (production),
//! chosen at start-up by [`open_store`]. Both translate searches with the same SQL generator.
//!
//! The traits are synchronous on purpose: both SQLite and the PostgreSQL client run a
//! transaction on one connection, and the HTTP layer calls into the store from a blocking pool.

pub mod postgres;
mod sqlgen;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use phip_fhir::search::SearchQuery;
use serde_json::Value;

/// Which backend a server uses, and where its data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded SQLite store: `phip.db` in this directory (created if needed).
    Sqlite {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// PostgreSQL at this connection URL (`postgres://user:password@host:port/dbname`).
    Postgres {
        /// The connection URL; its `connect_timeout` defaults to 5 s.
        url: String,
        /// Connections kept at most ([`postgres::DEFAULT_POOL_SIZE`] is a good default).
        pool_size: usize,
    },
}

impl StoreConfig {
    /// PostgreSQL when a database URL is given (`--database-url` / `PHIP_DATABASE_URL`),
    /// otherwise SQLite in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, database_url: Option<&str>) -> StoreConfig {
        match database_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => StoreConfig::Postgres {
                url: url.to_owned(),
                pool_size: postgres::DEFAULT_POOL_SIZE,
            },
            None => StoreConfig::Sqlite {
                data_dir: data_dir.into(),
            },
        }
    }

    /// Where the data is, for logs (never a password).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { data_dir } => format!("sqlite:{}", data_dir.display()),
            StoreConfig::Postgres { url, .. } => {
                // Drop the user-info part of the URL, which may hold a password.
                let tail = url.rsplit_once('@').map_or(url.as_str(), |(_, t)| t);
                let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
                format!("{scheme}://{tail}")
            }
        }
    }
}

/// Opens the configured store, applying pending schema migrations (both backends refuse a
/// database whose schema is newer than this binary).
pub fn open_store(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Sqlite { data_dir } => Arc::new(sqlite::SqliteStore::open(data_dir)?),
        StoreConfig::Postgres { url, pool_size } => {
            Arc::new(postgres::PostgresStore::connect_with(
                url,
                *pool_size,
                Arc::new(phip_fhir::search::index::extract),
            )?)
        }
    })
}

/// Applies pending schema migrations (`phip migrate`) and returns the schema version the
/// database then has.
pub fn migrate(config: &StoreConfig) -> StoreResult<i64> {
    Ok(migrate_with(config, postgres::Layout::Detect)?.0)
}

/// Like [`migrate`], laying out a new PostgreSQL database as `layout` says (`phip migrate
/// --citus`); also returns whether the schema is distributed with Citus.
pub fn migrate_with(config: &StoreConfig, layout: postgres::Layout) -> StoreResult<(i64, bool)> {
    match config {
        StoreConfig::Sqlite { data_dir } => {
            Ok((sqlite::SqliteStore::open(data_dir)?.schema_version(), false))
        }
        StoreConfig::Postgres { url, .. } => {
            // The real extractor: a migration may compute the access labels of stored
            // resources from their index entries.
            let store = postgres::PostgresStore::connect_with_layout(
                url,
                1,
                Arc::new(phip_fhir::search::index::extract),
                layout,
            )?;
            Ok((store.schema_version(), store.is_distributed()))
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Resource type, e.g. `Patient`.
    pub resource_type: String,
    /// Logical id.
    pub id: String,
    /// Server-assigned version, 1-based and gapless per resource.
    pub version_id: u64,
    /// Server-assigned time of this version.
    pub last_updated: DateTime<Utc>,
    /// The resource JSON with `meta.versionId` and `meta.lastUpdated` set; `None` for a
    /// deletion version.
    pub resource: Option<Value>,
}

impl StoredResource {
    /// Whether this version records a deletion.
    pub fn is_deleted(&self) -> bool {
        self.resource.is_none()
    }
}

/// A request to write a new version (or a deletion) of one resource.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// Resource type.
    pub resource_type: String,
    /// Logical id (server-assigned ids are generated by the caller).
    pub id: String,
    /// New content, or `None` to delete. The store sets `id`, `meta.versionId` and
    /// `meta.lastUpdated`, extracts search index entries and keeps every version.
    pub resource: Option<Value>,
    /// Optimistic lock: the write fails with [`StoreError::VersionConflict`] unless the current
    /// version is exactly this one (`Some(0)` = the resource must not exist yet).
    pub expected_version: Option<u64>,
}

/// Where a history request looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    /// All versions of one resource.
    Instance {
        /// Resource type.
        resource_type: String,
        /// Logical id.
        id: String,
    },
    /// All versions of all resources of one type.
    Type(String),
    /// All versions of everything.
    System,
}

/// A history request: newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Scope.
    pub scope: HistoryScope,
    /// Only versions updated at or after this instant (`_since`).
    pub since: Option<DateTime<Utc>>,
    /// Only versions updated at or before this instant (`_at` upper bound).
    pub before: Option<DateTime<Utc>>,
    /// Page size.
    pub count: usize,
    /// Opaque cursor from a previous page's [`HistoryPage::next_cursor`].
    pub cursor: Option<String>,
    /// Whom the history is read for: only versions of resources it may see, and the total
    /// counts only those.
    pub access: Access,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Versions, newest first.
    pub versions: Vec<StoredResource>,
    /// Total number of versions in scope that the caller may see.
    pub total: u64,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Position of a search page, carried in paging links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCursor {
    /// The first page.
    First,
    /// The page after the row with this opaque key.
    After(String),
    /// The page before the row with this opaque key.
    Before(String),
}

/// A search request: the query plus the page wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The parsed query (filters, sort, includes, `_total`).
    pub query: SearchQuery,
    /// Which page.
    pub cursor: PageCursor,
    /// Page size (already clamped by the caller).
    pub page_size: usize,
    /// Whom the search runs for: matches, includes, chains, `_has`, the total and the
    /// paging cursors see only the rows this allows.
    pub access: Access,
}

/// Whom a query runs for, and so which rows it may see.
///
/// The store applies it inside every statement of a search, history or compartment query
/// (SQL generated once for both backends), so that nothing about a row the caller may not see
/// can influence a response: not the total, not a paging cursor, not a chain or `_has` match.
/// The rules are those of `docs/security.md`; the labels they read are computed on every write
/// by [`phip_fhir::access::labels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The server's own work (its jobs, feeds, the patient index, migrations): every row.
    Server,
    /// A caller: only the rows its [`Visibility`] gives.
    Caller(Box<Visibility>),
}

impl Access {
    /// Whether every row is visible.
    pub fn is_server(&self) -> bool {
        matches!(self, Access::Server)
    }
}

/// What one caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visibility {
    /// Resource types visible wherever the sharing rules allow.
    pub types: TypeGrant,
    /// Resource types visible inside the compartments of [`Visibility::compartment`].
    pub compartment_types: TypeGrant,
    /// Patient ids whose compartments the caller may see (a `patient/` grant).
    pub compartment: Vec<String>,
    /// The sharing rules (holder, region, residents' consents) for [`Visibility::types`];
    /// `None` when the caller breaks the glass.
    pub sharing: Option<Sharing>,
}

/// A set of resource types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeGrant {
    /// Every type.
    All,
    /// These types (none, when empty).
    Only(Vec<String>),
}

impl TypeGrant {
    /// Whether the set is empty.
    pub fn is_none(&self) -> bool {
        matches!(self, TypeGrant::Only(types) if types.is_empty())
    }
}

/// The caller's place in the sharing rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// The caller's organisation id.
    pub organization: Option<String>,
    /// The caller's GB/T 2260 division (`None`: not bound to a region).
    pub division: Option<String>,
    /// Now, in epoch milliseconds (consent periods).
    pub now_ms: i64,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The matches on this page, in order (current versions, never deleted ones).
    pub matches: Vec<StoredResource>,
    /// Resources added by `_include`/`_revinclude` (deduplicated, not in `matches`).
    pub included: Vec<StoredResource>,
    /// Total number of matches, when requested or cheap.
    pub total: Option<u64>,
    /// Cursor of the next page (`PageCursor::After(key)`), if there are more matches.
    pub next: Option<String>,
    /// Cursor of the previous page (`PageCursor::Before(key)`), if this is not the first page.
    pub previous: Option<String>,
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The optimistic lock failed: the current version is not the expected one.
    #[error("version conflict: expected version {expected}, current version is {current}")]
    VersionConflict {
        /// The version the caller expected (0 = must not exist).
        expected: u64,
        /// The version actually current (0 = does not exist).
        current: u64,
    },
    /// The search cannot be executed as asked (e.g. an unsupported combination).
    #[error("unsupported search: {0}")]
    UnsupportedSearch(String),
    /// A cursor from a paging link could not be decoded.
    #[error("invalid paging cursor")]
    InvalidCursor,
    /// The database is busy beyond the configured timeout.
    #[error("the database is busy, try again")]
    Busy,
    /// The database cannot be reached, or gave up on the statement (its time limit): the
    /// request may succeed later, without anything having been written.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full: nothing was written.
    #[error("the database's storage is full")]
    StorageFull,
    /// Any other backend failure.
    #[error("storage failure: {0}")]
    Backend(String),
    /// A layer wrapping the transaction (a business rule, say) refused the write; the error is
    /// that layer's own and is handed back to it unchanged.
    #[error("{0}")]
    Refused(Box<dyn std::error::Error + Send + Sync>),
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A unit of work against the store. Dropping it without [`Transaction::commit`] rolls back.
pub trait Transaction {
    /// The current version of a resource (which may be a deletion), or `None` if it never
    /// existed.
    fn read(&mut self, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>>;

    /// One specific version.
    fn vread(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> StoreResult<Option<StoredResource>>;

    /// Writes a new version (or a deletion) and its search index entries. Returns the stored
    /// version with `meta` set.
    fn write(&mut self, request: WriteRequest) -> StoreResult<StoredResource>;

    /// Runs a search against the state this transaction sees.
    fn search(&mut self, request: &SearchRequest) -> StoreResult<SearchPage>;

    /// Reads history, newest first.
    fn history(&mut self, query: &HistoryQuery) -> StoreResult<HistoryPage>;

    /// Current (non-deleted) resources in a patient's compartment that `access` may see: the
    /// patient itself and every resource whose patient-compartment parameters reference it.
    /// Paged by an opaque cursor.
    fn patient_compartment(
        &mut self,
        patient_id: &str,
        types: Option<&[String]>,
        since: Option<DateTime<Utc>>,
        count: usize,
        cursor: Option<&str>,
        access: &Access,
    ) -> StoreResult<(Vec<StoredResource>, Option<String>)>;

    /// Whether the resource (current or deleted) exists and `access` may see it, by the same
    /// rules a search applies. Reads and writes for a caller ask this before answering about a
    /// resource, and again after writing one, inside the same transaction.
    fn visible(&mut self, resource_type: &str, id: &str, access: &Access) -> StoreResult<bool>;

    /// Makes every write of this transaction durable, all or nothing.
    fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// A read-only transaction over a consistent snapshot.
    fn begin_read(&self) -> StoreResult<Box<dyn Transaction + '_>>;

    /// A read-write transaction. Writers are serialised by the backend as needed.
    fn begin_write(&self) -> StoreResult<Box<dyn Transaction + '_>>;

    /// Writes many resources in one durable transaction, as fast as the backend can (bulk
    /// import). Versions are assigned as by [`Transaction::write`] without optimistic locks.
    fn bulk_write(&self, requests: Vec<WriteRequest>) -> StoreResult<Vec<StoredResource>>;

    /// A short name for logs and `/metadata` (`sqlite`, `postgres`).
    fn backend_name(&self) -> &'static str;

    /// The state of the backend's connection pool, for metrics; `None` without one.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }
}

/// Connections of a store's pool at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections lent to transactions.
    pub in_use: usize,
    /// Open connections waiting to be lent.
    pub idle: usize,
    /// Callers waiting for a connection (the pool's queue).
    pub waiting: usize,
    /// Most connections the pool opens.
    pub max: usize,
}
