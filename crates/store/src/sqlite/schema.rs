//! The database schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Layout, chosen for the lookup paths of FHIR search:
//! - `types`/`params`: small dictionaries so that every other table carries integer ids instead
//!   of repeated type names and parameter codes. A parameter id is per (type, code), so an index
//!   lookup on `pid` already restricts the resource type.
//! - `resources`: one row per logical resource with its current version (`seq` points at the
//!   version row holding the body, so loading a page is a rowid join).
//! - `resource_versions`: every version ever written; `seq` (the rowid) is the global
//!   monotonically increasing order used by system history and history cursors.
//! - `idx_*`: one narrow table per parameter type, rows for current versions only. They are
//!   `WITHOUT ROWID` tables clustered on `(rid, n)` (`n` numbers a resource's rows), so that
//!   replacing a resource's rows and per-resource lookups (sort values) are range operations
//!   on the table itself, and each row costs one table and one index insert. The lookup index
//!   starts with the parameter (or the reference target) and, like every index of a
//!   `WITHOUT ROWID` table, ends with the key `(rid, n)`, so it covers "which rids match".
//!   `grp` ties together the components of one composite occurrence (NULL for plain values).

use rusqlite::Connection;

use crate::StoreResult;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 4;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// v4: `index_source`, the access labels of the source records each golden record of the
/// patient index links (its `seealso` Patients), kept beside the golden record so that the
/// visibility predicate decides "visible when a source record is" from the golden record's
/// own rows instead of joining the sources' rows by id (which PostgreSQL with Citus cannot do
/// inside a correlated subquery: the sources live on other shards). The store keeps it
/// current: a golden record's write replaces its rows, a Patient's write updates the rows
/// naming it. `access_class` is NULL for a source that does not exist (yet).
const V4: &str = r#"
CREATE TABLE index_source (
    rid             INTEGER NOT NULL,
    source_id       TEXT NOT NULL,
    access_class    INTEGER,
    holder_org      TEXT,
    holder_division TEXT,
    PRIMARY KEY (rid, source_id)
) WITHOUT ROWID;
CREATE INDEX index_source_source ON index_source(source_id);
INSERT INTO index_source (rid, source_id, access_class, holder_org, holder_division)
SELECT g.rid, l.value, s.access_class, s.holder_org, s.holder_division
FROM resources g JOIN access_label l ON l.rid = g.rid AND l.kind = 1
LEFT JOIN resources s ON s.tid = g.tid AND s.id = l.value
WHERE g.access_class = 1 AND l.value <> g.id;
"#;

/// v3: access labels (`phip_fhir::access`), read by the visibility predicate of every query
/// run for a caller. `access_label` holds compartment membership (kind 1, a Patient id) and
/// parties (kind 2, an Organization id), kept for deleted resources too so that their history
/// stays governed; `consent_rule` the flattened provisions of active privacy Consents.
/// Existing rows get their labels from their bodies right after the migration
/// (`SqliteStore::backfill_access_labels`).
const V3: &str = r#"
ALTER TABLE resources ADD COLUMN holder_org TEXT;
ALTER TABLE resources ADD COLUMN holder_division TEXT;
ALTER TABLE resources ADD COLUMN access_class INTEGER NOT NULL DEFAULT 0;

CREATE TABLE access_label (
    rid   INTEGER NOT NULL,
    kind  INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (rid, kind, value)
) WITHOUT ROWID;
CREATE INDEX access_label_value ON access_label(kind, value);

CREATE TABLE consent_rule (
    consent_rid INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    patient_id  TEXT NOT NULL,
    node        TEXT NOT NULL,
    permit      INTEGER NOT NULL,
    actor       TEXT,
    class_tid   INTEGER,
    start_ms    INTEGER,
    end_ms      INTEGER,
    PRIMARY KEY (consent_rid, n)
) WITHOUT ROWID;
CREATE INDEX consent_rule_patient ON consent_rule(patient_id, permit);
"#;

/// v2: `ge`/`gt`/`sa` date searches bound the range's end; index it so they seek.
const V2: &str = r#"CREATE INDEX idx_date_end ON idx_date(pid, "end", start);"#;

const V1: &str = r#"
CREATE TABLE types (
    tid  INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE params (
    pid  INTEGER PRIMARY KEY,
    tid  INTEGER NOT NULL REFERENCES types(tid),
    code TEXT NOT NULL,
    UNIQUE (tid, code)
);
CREATE INDEX params_code ON params(code);

CREATE TABLE resources (
    rid          INTEGER PRIMARY KEY,
    tid          INTEGER NOT NULL REFERENCES types(tid),
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    UNIQUE (tid, id)
);
-- Default search order within a type is rid (the index carries rid implicitly).
CREATE INDEX resources_type ON resources(tid, deleted);
CREATE INDEX resources_updated ON resources(tid, last_updated);

CREATE TABLE resource_versions (
    seq          INTEGER PRIMARY KEY,
    rid          INTEGER NOT NULL REFERENCES resources(rid),
    tid          INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    body         TEXT
);
CREATE UNIQUE INDEX resource_versions_rid ON resource_versions(rid, version);
CREATE INDEX resource_versions_type ON resource_versions(tid);
CREATE INDEX resource_versions_updated ON resource_versions(last_updated);

CREATE TABLE idx_string (
    rid   INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    pid   INTEGER NOT NULL,
    grp   INTEGER,
    norm  TEXT NOT NULL,
    exact TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_string_lookup ON idx_string(pid, norm);

CREATE TABLE idx_token (
    rid    INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    pid    INTEGER NOT NULL,
    grp    INTEGER,
    system TEXT,
    code   TEXT,
    text   TEXT,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_token_lookup ON idx_token(pid, code, system);

CREATE TABLE idx_date (
    rid   INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    pid   INTEGER NOT NULL,
    grp   INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_date_lookup ON idx_date(pid, start, "end");

CREATE TABLE idx_number (
    rid   INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    pid   INTEGER NOT NULL,
    grp   INTEGER,
    value REAL,
    low   REAL,
    high  REAL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_number_lookup ON idx_number(pid, value);

CREATE TABLE idx_quantity (
    rid    INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    pid    INTEGER NOT NULL,
    grp    INTEGER,
    value  REAL,
    low    REAL,
    high   REAL,
    system TEXT,
    code   TEXT,
    unit   TEXT,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_quantity_lookup ON idx_quantity(pid, code, value);

CREATE TABLE idx_reference (
    rid        INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    grp        INTEGER,
    target_tid INTEGER,
    target_id  TEXT,
    url        TEXT,
    version    TEXT,
    id_system  TEXT,
    id_value   TEXT,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
-- Serves forward searches (pid + target), chains, _has, _revinclude and the compartment, which
-- all start from a target (type, id).
CREATE INDEX idx_reference_target ON idx_reference(target_id, target_tid, pid);
CREATE INDEX idx_reference_url ON idx_reference(pid, url) WHERE url IS NOT NULL;

CREATE TABLE idx_uri (
    rid INTEGER NOT NULL,
    n   INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    grp INTEGER,
    uri TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
CREATE INDEX idx_uri_lookup ON idx_uri(pid, uri);
"#;

/// Reads the schema version of an open database.
pub(crate) fn version(conn: &Connection) -> StoreResult<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing databases written by a newer binary.
/// Returns the version the database had before.
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<i64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = version(&tx)?;
    crate::sqlgen::check_schema_version(current, SCHEMA_VERSION)?;
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", from + 1))?;
    }
    tx.commit()?;
    Ok(current)
}
