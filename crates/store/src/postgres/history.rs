//! Reads, history (instance, type, system) and the patient compartment.

use chrono::{DateTime, Utc};
use postgres::types::ToSql;
use postgres::Row;
use serde_json::Value;

use super::catalog::{to_i32, PgCatalog};
use super::error::backend;
use super::get_int;
use super::tx::PgTransaction;
use crate::sqlgen::cursor;
use crate::sqlgen::ingest::from_millis;
use crate::sqlgen::Catalog;
use crate::{HistoryPage, HistoryQuery, HistoryScope, StoreResult, StoredResource};

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
#[derive(Default)]
struct Conds {
    sql: Vec<String>,
    args: Vec<Box<dyn ToSql + Sync>>,
}

impl Conds {
    /// Binds an argument and returns its placeholder.
    fn arg(&mut self, arg: impl ToSql + Sync + 'static) -> String {
        self.args.push(Box::new(arg));
        format!("${}", self.args.len())
    }

    /// Adds `template` with its `?` replaced by the placeholder of `arg`.
    fn push(&mut self, template: &str, arg: impl ToSql + Sync + 'static) {
        let p = self.arg(arg);
        self.sql.push(template.replace('?', &p));
    }

    fn where_sql(&self) -> String {
        if self.sql.is_empty() {
            "TRUE".into()
        } else {
            self.sql.join(" AND ")
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|a| a.as_ref()).collect()
    }
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
    let mut conds = Conds::default();
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
            conds.push("v.tid = ?", to_i32(tid));
        }
        HistoryScope::System => {}
    }
    if let Some(since) = query.since {
        conds.push("v.last_updated >= ?", since.timestamp_millis());
    }
    if let Some(before) = query.before {
        conds.push("v.last_updated <= ?", before.timestamp_millis());
    }
    let total: i64 = tx
        .conn
        .query_one(
            &format!(
                "SELECT COUNT(*) FROM resource_versions v WHERE {}",
                conds.where_sql()
            ),
            &conds.params(),
        )?
        .get(0);
    if let Some(c) = &query.cursor {
        let after: i64 = cursor::decode(cursor::HISTORY, c)?;
        conds.push("v.seq < ?", after);
    }
    let count = query.count;
    let limit = count as i64 + 1;
    let mut params = conds.params();
    params.push(&limit);
    let sql = format!(
        "SELECT v.seq, {VERSION_COLUMNS} FROM resource_versions v \
         JOIN resources r ON r.rid = v.rid \
         WHERE {} ORDER BY v.seq DESC LIMIT ${}",
        conds.where_sql(),
        params.len()
    );
    let mut rows = tx.conn.query(&sql, &params)?;
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
) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
    let catalog = &tx.store.catalog;
    let Some(patient_tid) = catalog.type_id("Patient")? else {
        return Ok((Vec::new(), None));
    };
    let patient_rid: i64 = tx
        .conn
        .query_opt(
            "SELECT rid FROM resources WHERE tid = $1 AND id = $2",
            &[&to_i32(patient_tid), &patient_id],
        )?
        .map_or(0, |r| r.get(0));

    // The compartment parameters of every type present in the database.
    let defs = phip_fhir::r4();
    let mut pids: Vec<i32> = Vec::new();
    let mut tids: Vec<i32> = Vec::new();
    for (tid, name) in catalog.all_types()? {
        if let Some(wanted) = types {
            if !wanted.contains(&name) {
                continue;
            }
            tids.push(to_i32(tid));
        }
        for code in defs.patient_compartment_params(&name) {
            if code == "{def}" {
                continue;
            }
            if let Some(pid) = catalog.param_id(tid, code)? {
                pids.push(to_i32(pid));
            }
        }
    }
    if types.is_some() && tids.is_empty() {
        return Ok((Vec::new(), None));
    }

    let mut conds = Conds::default();
    let (p_rid, p_id) = (conds.arg(patient_rid), conds.arg(patient_id.to_owned()));
    let (p_tid, p_pids) = (conds.arg(to_i32(patient_tid)), conds.arg(pids));
    conds.sql.push(format!(
        "r.rid IN (SELECT {p_rid}::bigint UNION SELECT rid FROM idx_reference \
         WHERE target_id = {p_id} AND target_tid = {p_tid} AND pid = ANY({p_pids}))"
    ));
    conds.sql.push("NOT r.deleted".into());
    if types.is_some() {
        conds.push("r.tid = ANY(?)", tids);
    }
    if let Some(since) = since {
        conds.push("r.last_updated >= ?", since.timestamp_millis());
    }
    if let Some(c) = cursor_text {
        let after: i64 = cursor::decode(cursor::COMPARTMENT, c)?;
        conds.push("r.rid > ?", after);
    }
    let limit = count as i64 + 1;
    let mut params = conds.params();
    params.push(&limit);
    let sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN} \
         WHERE {} ORDER BY r.rid LIMIT ${}",
        conds.where_sql(),
        params.len()
    );
    let mut rows = tx.conn.query(&sql, &params)?;
    let next = cursor::next_after(&mut rows, count, cursor::COMPARTMENT, |r| r.get(0));
    let resources = rows
        .iter()
        .map(|r| stored_from_row(&tx.store.catalog, r, 1))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((resources, next))
}
