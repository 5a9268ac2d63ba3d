//! Runs store tests on every backend: each test body takes `&dyn Store`, and [`both!`] makes a
//! `sqlite`, a `postgres` and a `citus` test of it. PostgreSQL tests use the process's shared
//! throwaway cluster and a fresh database each; without PostgreSQL binaries they are skipped
//! loudly (or fail, with `PHIP_REQUIRE_POSTGRES=1`). Citus tests do the same on the process's
//! shared Citus cluster (a coordinator and two workers), skipped loudly without Citus (or
//! failing, with `PHIP_REQUIRE_CITUS=1`).

#![allow(dead_code)]

use std::sync::Arc;

use phip_store::postgres::PostgresStore;
use phip_store::sqlite::{Extractor, SqliteStore};
use phip_store::{Store, StoreResult, StoredResource, WriteRequest};
use phip_testkit::{CitusCluster, PgCluster};

/// A store under test and what keeps it alive.
pub enum Backend {
    /// An embedded store in a temporary directory.
    Sqlite(tempfile::TempDir, Box<SqliteStore>),
    /// A PostgreSQL store on a fresh database of the shared cluster.
    Postgres(String, Box<PostgresStore>),
    /// A PostgreSQL store on a fresh database of the shared Citus cluster, laid out for it.
    Citus(String, Box<PostgresStore>),
}

impl Backend {
    /// A fresh SQLite store.
    pub fn sqlite() -> Backend {
        Self::sqlite_with(None)
    }

    /// A fresh SQLite store with a substitute extractor.
    pub fn sqlite_with(extractor: Option<Extractor>) -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let s = match extractor {
            Some(e) => SqliteStore::open_with_extractor(dir.path(), e).unwrap(),
            None => SqliteStore::open(dir.path()).unwrap(),
        };
        Backend::Sqlite(dir, Box::new(s))
    }

    /// A PostgreSQL store on a new database, or `None` when PostgreSQL is not installed.
    pub fn postgres() -> Option<Backend> {
        Self::postgres_with(None)
    }

    /// A PostgreSQL store with a substitute extractor.
    pub fn postgres_with(extractor: Option<Extractor>) -> Option<Backend> {
        let cluster = PgCluster::shared()?;
        let url = cluster.fresh_database();
        let extractor = extractor.unwrap_or_else(|| Arc::new(phip_fhir::search::index::extract));
        let s = PostgresStore::connect_with(&url, 16, extractor).unwrap();
        Some(Backend::Postgres(url, Box::new(s)))
    }

    /// A store on a new database of the Citus cluster, or `None` when Citus is not installed.
    pub fn citus() -> Option<Backend> {
        Self::citus_with(None)
    }

    /// A Citus store with a substitute extractor.
    pub fn citus_with(extractor: Option<Extractor>) -> Option<Backend> {
        let cluster = CitusCluster::shared()?;
        let url = cluster.fresh_database();
        let extractor = extractor.unwrap_or_else(|| Arc::new(phip_fhir::search::index::extract));
        let s = PostgresStore::connect_with_layout(
            &url,
            16,
            extractor,
            phip_store::postgres::Layout::Citus,
        )
        .unwrap();
        assert!(s.is_distributed());
        Some(Backend::Citus(url, Box::new(s)))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        match self {
            Backend::Sqlite(_, s) => s.as_ref(),
            Backend::Postgres(_, s) | Backend::Citus(_, s) => s.as_ref(),
        }
    }

    /// Writes with hand-made index entries (the search translation seam).
    pub fn write_with_entries(
        &self,
        request: WriteRequest,
        entries: Vec<phip_fhir::search::IndexEntry>,
    ) -> StoreResult<StoredResource> {
        match self {
            Backend::Sqlite(_, s) => s.write_with_entries(request, entries),
            Backend::Postgres(_, s) | Backend::Citus(_, s) => {
                s.write_with_entries(request, entries)
            }
        }
    }
}

/// Makes `mod name { #[test] fn sqlite(); #[test] fn postgres(); #[test] fn citus(); }`
/// running `name(&dyn Store)` on each backend.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    let b = $crate::support::Backend::sqlite();
                    super::$name(b.store());
                }

                #[test]
                fn postgres() {
                    let Some(b) = $crate::support::Backend::postgres() else {
                        return;
                    };
                    super::$name(b.store());
                }

                #[test]
                fn citus() {
                    let Some(b) = $crate::support::Backend::citus() else {
                        return;
                    };
                    super::$name(b.store());
                }
            }
        )*
    };
}

/// A minimal Patient.
pub fn patient(family: &str) -> serde_json::Value {
    serde_json::json!({"resourceType": "Patient", "name": [{"family": family}]})
}

/// Writes one version (or a deletion, with `body: None`) in its own transaction.
pub fn put(
    store: &dyn Store,
    ty: &str,
    id: &str,
    body: Option<serde_json::Value>,
    expected: Option<u64>,
) -> StoreResult<StoredResource> {
    let mut tx = store.begin_write()?;
    let r = tx.write(WriteRequest {
        resource_type: ty.into(),
        id: id.into(),
        resource: body,
        expected_version: expected,
    })?;
    tx.commit()?;
    Ok(r)
}
