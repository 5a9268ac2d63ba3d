//! The PostgreSQL schema and its versioned migrations.
//!
//! Layout (see docs/postgres.md for the reasoning):
//! - `types`/`params`: small dictionaries (reference tables on Citus).
//! - `resource_ids`: the identity map `(id, tid) → rid`, whose primary key is what makes two
//!   concurrent creates of the same id collide; keyed by the logical id (on Citus distributed
//!   by it, and holding the resource's shard).
//! - `resources`: one row per logical resource with its current version.
//! - `resource_versions`: every version, keyed `(rid, version)`; `seq` (from a sequence) is the
//!   global order of history.
//! - `idx_*`: narrow index rows of current versions, keyed `(rid, n)`, with lookup indexes that
//!   start with the parameter and `INCLUDE (rid)`, so that "which rids match" is an
//!   index-only scan. Text is `COLLATE "C"`: bytewise order, so prefix searches are index
//!   ranges whatever the database's locale, and sorting agrees with SQLite.
//! - `access_label`, `consent_rule`, `index_source`: what the visibility predicate reads.
//! - On Citus (`CITUS_LAYOUT`) every resource-scoped table also has a `shard` column leading
//!   its key, and is distributed by it, co-located with the others.
//!
//! Migrations run in one transaction under an advisory lock, so several servers starting at
//! once apply them exactly once.

use super::pool::PgConn;
use crate::StoreResult;

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = 4;

/// Advisory lock key serializing migrations ("phipmigr").
const MIGRATION_LOCK: i64 = 0x7068_6970_6d69_6772;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The distributed layout on PostgreSQL with Citus (see docs/postgres.md, "Citus"), applied
/// to a new database right after the migrations created its tables, in the same transaction.
///
/// - Every resource-scoped table gets a `shard` column (a hash of the resource's *home*:
///   the Patient a resource was created for — its own id for a Patient — or its own id for a
///   resource in no patient's compartment, see `postgres::shard`), leads its primary key
///   with it (Citus requires the distribution column in every unique constraint) and is
///   distributed by it, all co-located: a patient's records, their versions, index rows and
///   access labels are on one shard, so a patient's compartment, `$everything`, a write and
///   a read by id are single-shard statements.
/// - `resource_ids`, the identity map, is distributed by `id`: a read by id first asks it
///   where the resource lives (one shard), and two creates of one id still meet on its key.
/// - `compartment_ref` is the compartment's index for what is not at home: a resource in the
///   compartment of a patient other than its home (a second patient it names, or a subject
///   that changed after it was created) has a row on that patient's shard.
/// - Dictionaries (`types`, `params`, `phip_schema`, `access_backfill`) and the privacy
///   Consents' rules (`consent_rule`, read by the visibility predicate of every query for a
///   caller whatever shard the record is on) are reference tables: a copy on every node.
const CITUS_LAYOUT: &str = r#"
SET LOCAL citus.multi_shard_modify_mode TO 'sequential';
ALTER TABLE resource_ids ADD COLUMN shard bigint NOT NULL;
ALTER TABLE resources ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT resources_pkey, ADD PRIMARY KEY (shard, rid);
ALTER TABLE resource_versions ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT resource_versions_pkey, ADD PRIMARY KEY (shard, rid, version);
ALTER TABLE idx_string ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_string_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_token ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_token_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_date ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_date_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_number ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_number_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_quantity ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_quantity_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_reference ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_reference_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE idx_uri ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT idx_uri_pkey, ADD PRIMARY KEY (shard, rid, n);
ALTER TABLE access_label ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT access_label_pkey, ADD PRIMARY KEY (shard, rid, kind, value);
ALTER TABLE index_source ADD COLUMN shard bigint NOT NULL,
    DROP CONSTRAINT index_source_pkey, ADD PRIMARY KEY (shard, rid, source_id);
-- Compartment lookups that start from the patient: (shard, kind, value) on its shard.
DROP INDEX access_label_value;
CREATE INDEX access_label_value ON access_label (shard, kind, value) INCLUDE (rid);
CREATE TABLE compartment_ref (
    shard   bigint NOT NULL,
    patient text COLLATE "C" NOT NULL,
    rid     bigint NOT NULL,
    home    bigint NOT NULL,
    PRIMARY KEY (shard, patient, rid)
);
-- Adding a node copies the reference tables to it by logical replication, which needs a
-- replica identity; these one-row tables have no key.
ALTER TABLE phip_schema REPLICA IDENTITY FULL;
ALTER TABLE access_backfill REPLICA IDENTITY FULL;
SELECT create_reference_table(t)
FROM unnest(ARRAY['types', 'params', 'phip_schema', 'access_backfill', 'consent_rule']) t;
-- The version row written before the table was distributed now lives in its shards.
SELECT truncate_local_data_after_distributing_table('phip_schema');
SELECT create_distributed_table('resources', 'shard');
SELECT create_distributed_table(t, 'shard', colocate_with => 'resources')
FROM unnest(ARRAY['resource_versions', 'idx_string', 'idx_token', 'idx_date', 'idx_number',
    'idx_quantity', 'idx_reference', 'idx_uri', 'access_label', 'index_source',
    'compartment_ref']) t;
SELECT create_distributed_table('resource_ids', 'id');
"#;

/// v4: `index_source`, the access labels of the source records each golden record of the
/// patient index links, kept beside the golden record (see the SQLite schema's v4 for why).
/// Filled from the existing rows here; the store keeps it current.
const V4: &str = r#"
CREATE TABLE index_source (
    rid             bigint NOT NULL,
    source_id       text COLLATE "C" NOT NULL,
    access_class    smallint,
    holder_org      text COLLATE "C",
    holder_division text COLLATE "C",
    PRIMARY KEY (rid, source_id)
);
CREATE INDEX index_source_source ON index_source (source_id);
INSERT INTO index_source (rid, source_id, access_class, holder_org, holder_division)
SELECT g.rid, l.value, s.access_class, s.holder_org, s.holder_division
FROM resources g JOIN access_label l ON l.rid = g.rid AND l.kind = 1
LEFT JOIN resources s ON s.tid = g.tid AND s.id = l.value
WHERE g.access_class = 1 AND l.value <> g.id;
"#;

/// v3: access labels (`phip_fhir::access`), read by the visibility predicate of every query
/// run for a caller (see the SQLite schema for the layout). A database that already holds
/// resources is marked in `access_backfill`, and the first server to connect computes their
/// labels from their bodies (`PostgresStore::backfill_access_labels`).
const V3: &str = r#"
ALTER TABLE resources
    ADD COLUMN holder_org text COLLATE "C",
    ADD COLUMN holder_division text COLLATE "C",
    ADD COLUMN access_class smallint NOT NULL DEFAULT 0;

CREATE TABLE access_label (
    rid   bigint NOT NULL,
    kind  smallint NOT NULL,
    value text COLLATE "C" NOT NULL,
    PRIMARY KEY (rid, kind, value)
);
CREATE INDEX access_label_value ON access_label (kind, value) INCLUDE (rid);

CREATE TABLE consent_rule (
    consent_rid bigint NOT NULL,
    n           integer NOT NULL,
    patient_id  text COLLATE "C" NOT NULL,
    node        text COLLATE "C" NOT NULL,
    permit      smallint NOT NULL,
    actor       text COLLATE "C",
    class_tid   integer,
    start_ms    bigint,
    end_ms      bigint,
    PRIMARY KEY (consent_rid, n)
);
CREATE INDEX consent_rule_patient ON consent_rule (patient_id, permit);

CREATE TABLE access_backfill (after_rid bigint NOT NULL);
INSERT INTO access_backfill SELECT 0 WHERE EXISTS (SELECT 1 FROM resources);
"#;

/// v2: `ge`/`gt`/`sa` date searches bound the range's end; index it so they seek.
const V2: &str = r#"CREATE INDEX idx_date_end ON idx_date (pid, "end", start) INCLUDE (rid);"#;

const V1: &str = r#"
CREATE TABLE types (
    tid  integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE params (
    pid  integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tid  integer NOT NULL,
    code text COLLATE "C" NOT NULL,
    UNIQUE (tid, code)
);
CREATE INDEX params_code ON params (code);

CREATE SEQUENCE rid_seq;
CREATE SEQUENCE version_seq;

CREATE TABLE resource_ids (
    id  text COLLATE "C" NOT NULL,
    tid integer NOT NULL,
    rid bigint NOT NULL,
    PRIMARY KEY (id, tid)
);

CREATE TABLE resources (
    rid          bigint PRIMARY KEY,
    tid          integer NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    last_updated bigint NOT NULL,
    deleted      boolean NOT NULL
);
-- Reads by id, chain and include joins on (type, id); covers the deleted check.
CREATE INDEX resources_id ON resources (tid, id) INCLUDE (deleted, version);
-- Type searches in the default order (rid), skipping deleted resources.
CREATE INDEX resources_type ON resources (tid, rid) WHERE NOT deleted;
CREATE INDEX resources_updated ON resources (tid, last_updated);

CREATE TABLE resource_versions (
    rid          bigint NOT NULL,
    version      bigint NOT NULL,
    seq          bigint NOT NULL DEFAULT nextval('version_seq'),
    tid          integer NOT NULL,
    last_updated bigint NOT NULL,
    body         text,
    PRIMARY KEY (rid, version)
);
CREATE INDEX resource_versions_seq ON resource_versions (seq);
CREATE INDEX resource_versions_type ON resource_versions (tid, seq);
CREATE INDEX resource_versions_updated ON resource_versions (last_updated);

CREATE TABLE idx_string (
    rid   bigint NOT NULL,
    n     integer NOT NULL,
    pid   integer NOT NULL,
    grp   integer,
    norm  text COLLATE "C" NOT NULL,
    exact text COLLATE "C" NOT NULL,
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_string_lookup ON idx_string (pid, norm) INCLUDE (rid);

CREATE TABLE idx_token (
    rid    bigint NOT NULL,
    n      integer NOT NULL,
    pid    integer NOT NULL,
    grp    integer,
    system text COLLATE "C",
    code   text COLLATE "C",
    text   text COLLATE "C",
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_token_lookup ON idx_token (pid, code, system) INCLUDE (rid);

CREATE TABLE idx_date (
    rid   bigint NOT NULL,
    n     integer NOT NULL,
    pid   integer NOT NULL,
    grp   integer,
    start bigint NOT NULL,
    "end" bigint NOT NULL,
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_date_lookup ON idx_date (pid, start, "end") INCLUDE (rid);

CREATE TABLE idx_number (
    rid   bigint NOT NULL,
    n     integer NOT NULL,
    pid   integer NOT NULL,
    grp   integer,
    value double precision,
    low   double precision,
    high  double precision,
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_number_lookup ON idx_number (pid, value) INCLUDE (rid);

CREATE TABLE idx_quantity (
    rid    bigint NOT NULL,
    n      integer NOT NULL,
    pid    integer NOT NULL,
    grp    integer,
    value  double precision,
    low    double precision,
    high   double precision,
    system text COLLATE "C",
    code   text COLLATE "C",
    unit   text COLLATE "C",
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (pid, code, value) INCLUDE (rid, system);

CREATE TABLE idx_reference (
    rid        bigint NOT NULL,
    n          integer NOT NULL,
    pid        integer NOT NULL,
    grp        integer,
    target_tid integer,
    target_id  text COLLATE "C",
    url        text COLLATE "C",
    version    text COLLATE "C",
    id_system  text COLLATE "C",
    id_value   text COLLATE "C",
    PRIMARY KEY (rid, n)
);
-- Forward searches, chains, _has, _revinclude and the compartment all start from a target.
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_tid, pid) INCLUDE (rid);
CREATE INDEX idx_reference_url ON idx_reference (pid, url) INCLUDE (rid) WHERE url IS NOT NULL;

CREATE TABLE idx_uri (
    rid bigint NOT NULL,
    n   integer NOT NULL,
    pid integer NOT NULL,
    grp integer,
    uri text COLLATE "C" NOT NULL,
    PRIMARY KEY (rid, n)
);
CREATE INDEX idx_uri_lookup ON idx_uri (pid, uri) INCLUDE (rid);
"#;

/// Reads the schema version (0 for an empty database).
pub(crate) fn version(conn: &mut PgConn) -> StoreResult<i64> {
    let exists = conn
        .query_one("SELECT to_regclass('phip_schema') IS NOT NULL", &[])?
        .get::<_, bool>(0);
    if !exists {
        return Ok(0);
    }
    let row = conn.query_opt("SELECT version FROM phip_schema", &[])?;
    Ok(row.map_or(0, |r| i64::from(r.get::<_, i32>(0))))
}

/// Whether the schema is (to be) distributed with Citus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Distributed when the database has the `citus` extension: a new database is laid out
    /// for Citus, an existing one keeps its layout.
    Detect,
    /// Distributed, or an error: the extension is missing, or the database already holds a
    /// schema that is not distributed (`phip migrate --citus`).
    Citus,
}

/// Whether `resources` is a Citus distributed table.
fn is_distributed(conn: &mut PgConn) -> StoreResult<bool> {
    if !citus_installed(conn)? {
        return Ok(false);
    }
    Ok(conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition \
             WHERE logicalrelid = to_regclass('resources'))",
            &[],
        )?
        .get(0))
}

fn citus_installed(conn: &mut PgConn) -> StoreResult<bool> {
    Ok(conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )?
        .get(0))
}

/// Brings the schema up to [`SCHEMA_VERSION`], refusing databases written by a newer binary,
/// and returns the version and whether the schema is distributed (Citus).
pub(crate) fn migrate(conn: &mut PgConn, layout: Layout) -> StoreResult<(i64, bool)> {
    conn.batch("BEGIN")?;
    let result = migrate_in_transaction(conn, layout);
    match result {
        Ok(v) => {
            conn.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_in_transaction(conn: &mut PgConn, layout: Layout) -> StoreResult<(i64, bool)> {
    conn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    conn.batch("CREATE TABLE IF NOT EXISTS phip_schema (version integer NOT NULL)")?;
    let current = version(conn)?;
    crate::sqlgen::check_schema_version(current, SCHEMA_VERSION)?;
    let citus = citus_installed(conn)?;
    let distributed = is_distributed(conn)?;
    if layout == Layout::Citus {
        if !citus {
            return Err(crate::StoreError::Backend(
                "the database has no citus extension: run CREATE EXTENSION citus and add the \
                 worker nodes (citus_add_node) before laying out phip's schema for Citus"
                    .into(),
            ));
        }
        if current > 0 && !distributed {
            return Err(crate::StoreError::Backend(
                "the database already holds phip's schema without Citus distribution; lay out \
                 a new database for Citus and move the data with phip export / phip import"
                    .into(),
            ));
        }
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        conn.batch(sql)?;
        let to = i32::try_from(from + 1).unwrap_or(i32::MAX);
        if conn.execute("UPDATE phip_schema SET version = $1", &[&to])? == 0 {
            conn.execute("INSERT INTO phip_schema (version) VALUES ($1)", &[&to])?;
        }
    }
    // A new database where Citus is installed is distributed; an existing one keeps its
    // layout (moving a populated database is a data migration, not a schema one).
    let lay_out = citus && current == 0;
    if lay_out {
        conn.batch(CITUS_LAYOUT)?;
    }
    Ok((version(conn)?, distributed || lay_out))
}
