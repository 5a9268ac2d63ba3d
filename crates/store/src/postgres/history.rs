//! Reads, history (instance, type, system) and the patient compartment.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::Row;
use serde_json::Value;

use super::catalog::{to_i32, PgCatalog};
use super::error::backend;
use super::get_int;
use super::tx::PgTransaction;
use crate::sqlgen::builder::Sql;
use crate::sqlgen::filter::Ctx;
use crate::sqlgen::ingest::from_millis;
use crate::sqlgen::{access, cursor, Catalog, Dialect, SqlArg};
use crate::{Access, HistoryPage, HistoryQuery, HistoryScope, StoreResult, StoredResource};

/// The columns every resource-loading query selects, in this order, given aliases `r`
/// (resources) and `v` (resource_versions).
pub(crate) const VERSION_COLUMNS: &str = "r.tid, r.id, v.version, v.last_updated, v.body";

/// Joins the current version of `r`.
pub(crate) const CURRENT_VERSION_JOIN: &str =
    "JOIN resource_versions v ON v.rid = r.rid AND v.version = r.version";

/// Reads the [`VERSION_COLUMNS`] starting at column `at`.
pub(crate) fn stored_from_row(
    catalog: &PgCatalog,
    row: &Row,
    at: usize,
) -> StoreResult<StoredResource> {
    let resource_type = catalog.type_name(get_int(row, at)?)?;
    let id: String = row.get(at + 1);
    let version: i64 = row.get(at + 2);
    let last_updated: i64 = row.get(at + 3);
    let body: Option<String> = row.get(at + 4);
    let resource = match body {
        Some(text) => Some(serde_json::from_str::<Value>(&text).map_err(|e| {
            backend(format!(
                "stored body of {resource_type}/{id} version {version} is not JSON: {e}"
            ))
        })?),
        None => None,
    };
    Ok(StoredResource {
        resource_type,
        id,
        version_id: u64::try_from(version)
            .map_err(|_| backend("negative version number in database"))?,
        last_updated: from_millis(last_updated)?,
        resource,
    })
}

/// The current version (`version == None`) or one version of a resource.
pub(crate) fn read(
    tx: &mut PgTransaction<'_>,
    resource_type: &str,
    id: &str,
    version: Option<i64>,
) -> StoreResult<Option<StoredResource>> {
    let Some(tid) = tx.store.catalog.type_id(resource_type)? else {
        return Ok(None);
    };
    let tid = to_i32(tid);
    let row = match version {
        None => tx.conn.query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN} \
                 WHERE r.tid = $1 AND r.id = $2"
            ),
            &[&tid, &id],
        )?,
        Some(v) => tx.conn.query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM resources r \
                 JOIN resource_versions v ON v.rid = r.rid AND v.version = $3 \
                 WHERE r.tid = $1 AND r.id = $2"
            ),
            &[&tid, &id, &v],
        )?,
    };
    row.map(|r| stored_from_row(&tx.store.catalog, &r, 0))
        .transpose()
}

/// Loads the current versions of the given resources, in the order of `rids`.
pub(crate) fn load_current(
    tx: &mut PgTransaction<'_>,
    rids: &[i64],
) -> StoreResult<Vec<StoredResource>> {
    if rids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx.conn.query(
        &format!(
            "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN} \
             WHERE r.rid = ANY($1)"
        ),
        &[&rids],
    )?;
    let mut by_rid = std::collections::HashMap::with_capacity(rids.len());
    for row in rows {
        let rid: i64 = row.get(0);
        by_rid.insert(rid, row);
    }
    rids.iter()
        .filter_map(|rid| by_rid.remove(rid))
        .map(|row| stored_from_row(&tx.store.catalog, &row, 1))
        .collect()
}

/// Conditions with numbered placeholders and their arguments.
struct Conds {
    sql: Vec<String>,
    b: Sql,
}

impl Conds {
    fn new() -> Self {
        Self {
            sql: Vec::new(),
            b: Sql::new(Dialect::Postgres),
        }
    }

    /// Binds an argument and returns its placeholder.
    fn arg(&mut self, arg: impl Into<SqlArg>) -> String {
        self.b.arg(arg)
    }

    /// Adds `template` with its `?` replaced by the placeholder of `arg`.
    fn push(&mut self, template: &str, arg: impl Into<SqlArg>) {
        let p = self.arg(arg);
        self.sql.push(template.replace('?', &p));
    }

    /// Adds the visibility of the `resources` row `r` for `access`.
    fn push_visible(&mut self, catalog: &PgCatalog, access: &Access) -> StoreResult<()> {
        if access.is_server() {
            return Ok(());
        }
        let ctx = Ctx {
            catalog,
            now_ms: Utc::now().timestamp_millis(),
            access,
        };
        let visible = access::visible(&ctx, &mut self.b, access, "r")?;
        self.sql.push(visible);
        Ok(())
    }

    fn where_sql(&self) -> String {
        if self.sql.is_empty() {
            "TRUE".into()
        } else {
            self.sql.join(" AND ")
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        super::params(&self.b.args)
    }
}

/// Whether `resource_type/id` exists (current or deleted) and `access` may see it.
pub(crate) fn visible(
    tx: &mut PgTransaction<'_>,
    resource_type: &str,
    id: &str,
    access: &Access,
) -> StoreResult<bool> {
    let Some(tid) = tx.store.catalog.type_id(resource_type)? else {
        return Ok(false);
    };
    let mut conds = Conds::new();
    conds.push("r.tid = ?", tid);
    conds.push("r.id = ?", id);
    conds.push_visible(&tx.store.catalog, access)?;
    let row = tx.conn.query_opt(
        &format!("SELECT 1 FROM resources r WHERE {}", conds.where_sql()),
        &conds.params(),
    )?;
    Ok(row.is_some())
}

pub(crate) fn history(
    tx: &mut PgTransaction<'_>,
    query: &HistoryQuery,
) -> StoreResult<HistoryPage> {
    let empty = HistoryPage {
        versions: Vec::new(),
        total: 0,
        next_cursor: None,
    };
    let mut conds = Conds::new();
    match &query.scope {
        HistoryScope::Instance { resource_type, id } => {
            let Some(tid) = tx.store.catalog.type_id(resource_type)? else {
                return Ok(empty);
            };
            let row = tx.conn.query_opt(
                "SELECT rid FROM resources WHERE tid = $1 AND id = $2",
                &[&to_i32(tid), id],
            )?;
            let Some(row) = row else {
                return Ok(empty);
            };
            conds.push("v.rid = ?", row.get::<_, i64>(0));
        }
        HistoryScope::Type(resource_type) => {
            let Some(tid) = tx.store.catalog.type_id(resource_type)? else {
                return Ok(empty);
            };
            conds.push("v.tid = ?", tid);
        }
        HistoryScope::System => {}
    }
    if let Some(since) = query.since {
        conds.push("v.last_updated >= ?", since.timestamp_millis());
    }
    if let Some(before) = query.before {
        conds.push("v.last_updated <= ?", before.timestamp_millis());
    }
    conds.push_visible(&tx.store.catalog, &query.access)?;
    let from = if query.access.is_server() {
        "resource_versions v"
    } else {
        "resource_versions v JOIN resources r ON r.rid = v.rid"
    };
    let total: i64 = tx
        .conn
        .query_one(
            &format!("SELECT COUNT(*) FROM {from} WHERE {}", conds.where_sql()),
            &conds.params(),
        )?
        .get(0);
    if let Some(c) = &query.cursor {
        let after: i64 = cursor::decode(cursor::HISTORY, c)?;
        conds.push("v.seq < ?", after);
    }
    let count = query.count;
    let sql = format!(
        "SELECT v.seq, {VERSION_COLUMNS} FROM resource_versions v \
         JOIN resources r ON r.rid = v.rid \
         WHERE {} ORDER BY v.seq DESC LIMIT {}",
        conds.where_sql(),
        count.saturating_add(1)
    );
    let mut rows = tx.conn.query(&sql, &conds.params())?;
    let next_cursor = cursor::next_after(&mut rows, count, cursor::HISTORY, |r| r.get(0));
    let versions = rows
        .iter()
        .map(|r| stored_from_row(&tx.store.catalog, r, 1))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(HistoryPage {
        versions,
        total: total as u64,
        next_cursor,
    })
}

pub(crate) fn patient_compartment(
    tx: &mut PgTransaction<'_>,
    patient_id: &str,
    types: Option<&[String]>,
    since: Option<DateTime<Utc>>,
    count: usize,
    cursor_text: Option<&str>,
    access: &Access,
) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
    let catalog = &tx.store.catalog;
    let Some(patient_tid) = catalog.type_id("Patient")? else {
        return Ok((Vec::new(), None));
    };
    let mut tids: Vec<i64> = Vec::new();
    if let Some(wanted) = types {
        for name in wanted {
            if let Some(tid) = catalog.type_id(name)? {
                tids.push(tid);
            }
        }
        if tids.is_empty() {
            return Ok((Vec::new(), None));
        }
    }
    // See the SQLite backend: compartment labels, and among Patients only the patient's own.
    let mut conds = Conds::new();
    let (kind, id) = (conds.arg(access::PATIENT), conds.arg(patient_id));
    let p_tid = conds.arg(patient_tid);
    conds.sql.push(format!(
        "r.rid IN (SELECT rid FROM access_label WHERE kind = {kind} AND value = {id}) \
         AND (r.tid <> {p_tid} OR r.id = {id})"
    ));
    conds.sql.push("NOT r.deleted".into());
    if types.is_some() {
        conds.push("r.tid = ANY(?)", SqlArg::IntList(tids));
    }
    if let Some(since) = since {
        conds.push("r.last_updated >= ?", since.timestamp_millis());
    }
    if let Some(c) = cursor_text {
        let after: i64 = cursor::decode(cursor::COMPARTMENT, c)?;
        conds.push("r.rid > ?", after);
    }
    conds.push_visible(catalog, access)?;
    let sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN} \
         WHERE {} ORDER BY r.rid LIMIT {}",
        conds.where_sql(),
        count.saturating_add(1)
    );
    let mut rows = tx.conn.query(&sql, &conds.params())?;
    let next = cursor::next_after(&mut rows, count, cursor::COMPARTMENT, |r| r.get(0));
    let resources = rows
        .iter()
        .map(|r| stored_from_row(&tx.store.catalog, r, 1))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((resources, next))
}
