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
use crate::sqlgen::{access, cursor, Catalog, SqlArg};
use crate::{Access, HistoryPage, HistoryQuery, HistoryScope, StoreResult, StoredResource};

/// The columns every resource-loading query selects, in this order, given aliases `r`
/// (resources) and `v` (resource_versions).
pub(crate) const VERSION_COLUMNS: &str = "r.tid, r.id, v.version, v.last_updated, v.body";

/// Joins the current version of `r`.
pub(crate) const CURRENT_VERSION_JOIN: &str =
    "JOIN resource_versions v ON v.rid = r.rid AND v.version = r.version";

/// [`CURRENT_VERSION_JOIN`] on Citus, co-located on the distribution column.
pub(crate) const CURRENT_VERSION_JOIN_DISTRIBUTED: &str =
    "JOIN resource_versions v ON v.shard = r.shard AND v.rid = r.rid AND v.version = r.version";

/// The join of the current version for the store's layout.
pub(crate) fn current_version_join(tx: &PgTransaction<'_>) -> &'static str {
    if tx.store.citus {
        CURRENT_VERSION_JOIN_DISTRIBUTED
    } else {
        CURRENT_VERSION_JOIN
    }
}

/// On Citus, the shard of `resource_type/id` (`tid` its type id): from its type and id when
/// they decide it, else from `resource_ids`, a single-shard lookup by id. `None` when the id
/// was never used.
pub(crate) fn locate(
    tx: &mut PgTransaction<'_>,
    resource_type: &str,
    tid: i64,
    id: &str,
) -> StoreResult<Option<i64>> {
    if let Some(shard) = super::known_shard(resource_type, id) {
        return Ok(Some(shard));
    }
    Ok(tx
        .conn
        .query_opt(
            "SELECT shard FROM resource_ids WHERE id = $1 AND tid = $2",
            &[&id, &to_i32(tid)],
        )?
        .map(|r| r.get(0)))
}

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
    if tx.store.citus {
        let Some(shard) = locate(tx, resource_type, tid, id)? else {
            return Ok(None);
        };
        let tid = to_i32(tid);
        let row = match version {
            None => tx.conn.query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM resources r \
                     {CURRENT_VERSION_JOIN_DISTRIBUTED} \
                     WHERE r.shard = $3 AND r.tid = $1 AND r.id = $2"
                ),
                &[&tid, &id, &shard],
            )?,
            Some(v) => tx.conn.query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM resources r JOIN resource_versions v \
                     ON v.shard = r.shard AND v.rid = r.rid AND v.version = $3 \
                     WHERE r.shard = $4 AND r.tid = $1 AND r.id = $2"
                ),
                &[&tid, &id, &v, &shard],
            )?,
        };
        return row
            .map(|r| stored_from_row(&tx.store.catalog, &r, 0))
            .transpose();
    }
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

/// Loads the current versions of the given resources (`(rid, shard)`), in their order.
pub(crate) fn load_current(
    tx: &mut PgTransaction<'_>,
    found: &[(i64, i64)],
) -> StoreResult<Vec<StoredResource>> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<i64> = found.iter().map(|(rid, _)| *rid).collect();
    let rows = if tx.store.citus {
        let shards: Vec<i64> = found.iter().map(|(_, shard)| *shard).collect();
        tx.conn.query(
            &format!(
                "SELECT r.rid, {VERSION_COLUMNS} FROM resources r \
                 {CURRENT_VERSION_JOIN_DISTRIBUTED} WHERE r.shard = ANY($2) AND r.rid = ANY($1)"
            ),
            &[&rids, &shards],
        )?
    } else {
        tx.conn.query(
            &format!(
                "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN} \
                 WHERE r.rid = ANY($1)"
            ),
            &[&rids],
        )?
    };
    let rids = &rids;
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
    fn new(tx: &PgTransaction<'_>) -> Self {
        Self {
            sql: Vec::new(),
            b: Sql::new(tx.store.dialect()),
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

    /// Restricts the rows of `alias` (and on Citus every row the conditions join to them) to
    /// one shard.
    fn pin_shard(&mut self, alias: &str, shard: i64) {
        let p = self.arg(shard);
        self.sql.push(format!("{alias}.shard = {p}"));
        self.b.pin = Some(p);
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
    let mut conds = Conds::new(tx);
    if tx.store.citus {
        let Some(shard) = locate(tx, resource_type, tid, id)? else {
            return Ok(false);
        };
        conds.pin_shard("r", shard);
    }
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
    let mut conds = Conds::new(tx);
    let citus = tx.store.citus;
    match &query.scope {
        HistoryScope::Instance { resource_type, id } => {
            let Some(tid) = tx.store.catalog.type_id(resource_type)? else {
                return Ok(empty);
            };
            let row = if citus {
                let Some(shard) = locate(tx, resource_type, tid, id)? else {
                    return Ok(empty);
                };
                // `r`, when joined, is joined on `v.shard`.
                conds.pin_shard("v", shard);
                tx.conn.query_opt(
                    "SELECT rid FROM resources WHERE shard = $3 AND tid = $1 AND id = $2",
                    &[&to_i32(tid), id, &shard],
                )?
            } else {
                tx.conn.query_opt(
                    "SELECT rid FROM resources WHERE tid = $1 AND id = $2",
                    &[&to_i32(tid), id],
                )?
            };
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
    let join = if citus {
        "JOIN resources r ON r.shard = v.shard AND r.rid = v.rid"
    } else {
        "JOIN resources r ON r.rid = v.rid"
    };
    let from = if query.access.is_server() {
        "resource_versions v".to_owned()
    } else {
        format!("resource_versions v {join}")
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
        "SELECT v.seq, {VERSION_COLUMNS} FROM resource_versions v {join} \
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
    let after = match cursor_text {
        Some(c) => Some(cursor::decode::<i64>(cursor::COMPARTMENT, c)?),
        None => None,
    };
    let limit = count.saturating_add(1);
    // The conditions every row of the page meets besides membership (`member` adds that).
    let page = |tx: &PgTransaction<'_>, member: &dyn Fn(&mut Conds)| -> StoreResult<Conds> {
        let mut conds = Conds::new(tx);
        member(&mut conds);
        conds.sql.push("NOT r.deleted".into());
        if types.is_some() {
            conds.push("r.tid = ANY(?)", SqlArg::IntList(tids.clone()));
        }
        if let Some(since) = since {
            conds.push("r.last_updated >= ?", since.timestamp_millis());
        }
        if let Some(after) = after {
            conds.push("r.rid > ?", after);
        }
        conds.push_visible(&tx.store.catalog, access)?;
        Ok(conds)
    };
    let join = current_version_join(tx);
    let mut rows = if tx.store.citus {
        distributed_compartment(tx, patient_id, patient_tid, after, limit, &page)?
    } else {
        // See the SQLite backend: compartment labels, and among Patients only the patient's
        // own.
        let conds = page(tx, &|conds| {
            let (kind, id) = (conds.arg(access::PATIENT), conds.arg(patient_id));
            let p_tid = conds.arg(patient_tid);
            conds.sql.push(format!(
                "r.rid IN (SELECT rid FROM access_label WHERE kind = {kind} AND value = {id}) \
                 AND (r.tid <> {p_tid} OR r.id = {id})"
            ));
        })?;
        let sql = format!(
            "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {join} \
             WHERE {} ORDER BY r.rid LIMIT {limit}",
            conds.where_sql(),
        );
        tx.conn.query(&sql, &conds.params())?
    };
    let next = cursor::next_after(&mut rows, count, cursor::COMPARTMENT, |r| r.get(0));
    let resources = rows
        .iter()
        .map(|r| stored_from_row(&tx.store.catalog, r, 1))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((resources, next))
}

/// Builds the conditions of a compartment page around a membership condition.
type PageConds<'a> = dyn Fn(&PgTransaction<'_>, &dyn Fn(&mut Conds)) -> StoreResult<Conds> + 'a;

/// The compartment page on Citus: the patient's shard answers for the resources at home
/// there (one single-shard statement); those homed elsewhere are listed in `compartment_ref`
/// on the same shard and, only if there are any, loaded from their shards. The two sorted
/// runs are merged by rid.
fn distributed_compartment(
    tx: &mut PgTransaction<'_>,
    patient_id: &str,
    patient_tid: i64,
    after: Option<i64>,
    limit: usize,
    page: &PageConds<'_>,
) -> StoreResult<Vec<Row>> {
    let shard = super::shard_key(patient_id);
    let conds = page(tx, &|conds| {
        conds.pin_shard("r", shard);
        let h = conds.b.pin.clone().unwrap_or_default();
        let (kind, id) = (conds.arg(access::PATIENT), conds.arg(patient_id));
        let p_tid = conds.arg(patient_tid);
        conds.sql.push(format!(
            "r.rid IN (SELECT rid FROM access_label \
             WHERE shard = {h} AND kind = {kind} AND value = {id}) \
             AND (r.tid <> {p_tid} OR r.id = {id})"
        ));
    })?;
    let sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN_DISTRIBUTED} \
         WHERE {} ORDER BY r.rid LIMIT {limit}",
        conds.where_sql(),
    );
    let mut rows = tx.conn.query(&sql, &conds.params())?;
    let away = tx.conn.query(
        &format!(
            "SELECT home, rid FROM compartment_ref WHERE shard = $1 AND patient = $2 \
             AND rid > $3 ORDER BY rid LIMIT {limit}"
        ),
        &[&shard, &patient_id, &after.unwrap_or(i64::MIN)],
    )?;
    if away.is_empty() {
        return Ok(rows);
    }
    let homes: Vec<i64> = away.iter().map(|r| r.get(0)).collect();
    let rids: Vec<i64> = away.iter().map(|r| r.get(1)).collect();
    let conds = page(tx, &|conds| {
        let (h, r) = (
            conds.arg(SqlArg::IntList(homes.clone())),
            conds.arg(SqlArg::IntList(rids.clone())),
        );
        let (kind, id) = (conds.arg(access::PATIENT), conds.arg(patient_id));
        let p_tid = conds.arg(patient_tid);
        conds.sql.push(format!(
            "r.shard = ANY({h}) AND r.rid = ANY({r}) AND (r.shard, r.rid) IN \
             (SELECT shard, rid FROM access_label WHERE kind = {kind} AND value = {id}) \
             AND r.tid <> {p_tid}"
        ));
    })?;
    let sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r {CURRENT_VERSION_JOIN_DISTRIBUTED} \
         WHERE {} ORDER BY r.rid LIMIT {limit}",
        conds.where_sql(),
    );
    rows.extend(tx.conn.query(&sql, &conds.params())?);
    rows.sort_by_key(|r| r.get::<_, i64>(0));
    rows.truncate(limit);
    Ok(rows)
}
