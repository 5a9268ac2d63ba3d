//! History (instance, type, system) and the patient compartment.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::rows::{RawVersion, VERSION_COLUMNS};
use super::tx::SqliteTransaction;
use crate::sqlgen::builder::Sql;
use crate::sqlgen::filter::Ctx;
use crate::sqlgen::{access, cursor, Dialect, SqlArg};
use crate::{Access, HistoryPage, HistoryQuery, HistoryScope, StoreResult, StoredResource};

/// The visibility of the `resources` row `r` for `access`, bound after the arguments so far.
fn visible_condition(
    tx: &SqliteTransaction<'_>,
    access: &Access,
    args: Vec<SqlArg>,
) -> StoreResult<(String, Vec<SqlArg>)> {
    let ctx = Ctx {
        catalog: tx,
        now_ms: Utc::now().timestamp_millis(),
        access,
    };
    let mut b = Sql::new(Dialect::Sqlite);
    b.args = args;
    let condition = access::visible(&ctx, &mut b, access, "r")?;
    Ok((condition, b.args))
}

/// Whether `resource_type/id` exists (current or deleted) and `access` may see it.
pub(crate) fn visible(
    tx: &mut SqliteTransaction<'_>,
    resource_type: &str,
    id: &str,
    access: &Access,
) -> StoreResult<bool> {
    let Some(tid) = tx.type_id(resource_type)? else {
        return Ok(false);
    };
    let (condition, args) = visible_condition(
        tx,
        access,
        vec![SqlArg::Int(tid), SqlArg::Text(id.to_owned())],
    )?;
    let found: Option<i64> = tx
        .conn
        .prepare_cached(&format!(
            "SELECT 1 FROM resources r WHERE r.tid = ?1 AND r.id = ?2 AND {condition}"
        ))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

pub(crate) fn history(
    tx: &mut SqliteTransaction<'_>,
    query: &HistoryQuery,
) -> StoreResult<HistoryPage> {
    let empty = HistoryPage {
        versions: Vec::new(),
        total: 0,
        next_cursor: None,
    };
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<SqlArg> = Vec::new();
    match &query.scope {
        HistoryScope::Instance { resource_type, id } => {
            let Some(tid) = tx.type_id(resource_type)? else {
                return Ok(empty);
            };
            let rid: Option<i64> = tx
                .conn
                .prepare_cached("SELECT rid FROM resources WHERE tid = ?1 AND id = ?2")?
                .query_row(rusqlite::params![tid, id], |r| r.get(0))
                .optional()?;
            let Some(rid) = rid else {
                return Ok(empty);
            };
            args.push(SqlArg::Int(rid));
            conds.push(format!("v.rid = ?{}", args.len()));
        }
        HistoryScope::Type(resource_type) => {
            let Some(tid) = tx.type_id(resource_type)? else {
                return Ok(empty);
            };
            args.push(SqlArg::Int(tid));
            conds.push(format!("v.tid = ?{}", args.len()));
        }
        HistoryScope::System => {}
    }
    // Version timestamps grow with the sequence, so time bounds become sequence bounds, which
    // every scope's index can range over.
    if let Some(since) = query.since {
        let seq: Option<i64> = tx
            .conn
            .prepare_cached(
                "SELECT seq FROM resource_versions WHERE last_updated >= ?1 \
                 ORDER BY last_updated, seq LIMIT 1",
            )?
            .query_row([since.timestamp_millis()], |r| r.get(0))
            .optional()?;
        let Some(seq) = seq else {
            return Ok(empty);
        };
        args.push(SqlArg::Int(seq));
        conds.push(format!("v.seq >= ?{}", args.len()));
    }
    if let Some(before) = query.before {
        let seq: Option<i64> = tx
            .conn
            .prepare_cached(
                "SELECT seq FROM resource_versions WHERE last_updated <= ?1 \
                 ORDER BY last_updated DESC, seq DESC LIMIT 1",
            )?
            .query_row([before.timestamp_millis()], |r| r.get(0))
            .optional()?;
        let Some(seq) = seq else {
            return Ok(empty);
        };
        args.push(SqlArg::Int(seq));
        conds.push(format!("v.seq <= ?{}", args.len()));
    }
    let (from, args) = if query.access.is_server() {
        ("resource_versions v", args)
    } else {
        let (visible, args) = visible_condition(tx, &query.access, args)?;
        conds.push(visible);
        (
            "resource_versions v JOIN resources r ON r.rid = v.rid",
            args,
        )
    };
    let scope_where = if conds.is_empty() {
        "1".to_owned()
    } else {
        conds.join(" AND ")
    };
    let total: i64 = tx
        .conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM {from} WHERE {scope_where}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;

    let mut page_args = args;
    let mut page_where = scope_where;
    if let Some(c) = &query.cursor {
        let after: i64 = cursor::decode(cursor::HISTORY, c)?;
        page_args.push(SqlArg::Int(after));
        page_where.push_str(&format!(" AND v.seq < ?{}", page_args.len()));
    }
    let count = query.count;
    // A literal LIMIT keeps the cached statement valid (a bound one is re-prepared each time).
    let sql = format!(
        "SELECT v.seq, {VERSION_COLUMNS} FROM resource_versions v \
         JOIN resources r ON r.rid = v.rid JOIN types ty ON ty.tid = v.tid \
         WHERE {page_where} ORDER BY v.seq DESC LIMIT {}",
        count.saturating_add(1)
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(page_args.iter()))?;
    let mut raw = Vec::new();
    while let Some(row) = rows.next()? {
        raw.push((row.get::<_, i64>(0)?, RawVersion::from_row(row, 1)?));
    }
    let next_cursor = cursor::next_after(&mut raw, count, cursor::HISTORY, |(seq, _)| *seq);
    let versions = raw
        .into_iter()
        .map(|(_, r)| r.into_stored())
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(HistoryPage {
        versions,
        total: total as u64,
        next_cursor,
    })
}

pub(crate) fn patient_compartment(
    tx: &mut SqliteTransaction<'_>,
    patient_id: &str,
    types: Option<&[String]>,
    since: Option<DateTime<Utc>>,
    count: usize,
    cursor_text: Option<&str>,
    access: &Access,
) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
    let Some(patient_tid) = tx.type_id("Patient")? else {
        return Ok((Vec::new(), None));
    };
    let mut tids = Vec::new();
    if let Some(wanted) = types {
        for name in wanted {
            if let Some(tid) = tx.type_id(name)? {
                tids.push(tid);
            }
        }
        if tids.is_empty() {
            return Ok((Vec::new(), None));
        }
    }
    // The compartment labels (kind 1) of every resource that references the patient through
    // a compartment parameter, and of the Patient itself; golden records carry their sources'
    // ids too but are the index's, not the patient's, so only the patient's own Patient row
    // counts among Patients.
    let mut args: Vec<SqlArg> = vec![
        SqlArg::Int(access::PATIENT),
        SqlArg::Text(patient_id.to_owned()),
        SqlArg::Int(patient_tid),
    ];
    let mut sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r JOIN types ty ON ty.tid = r.tid \
         JOIN resource_versions v ON v.seq = r.seq \
         WHERE r.deleted = 0 AND r.rid IN (SELECT rid FROM access_label WHERE kind = ?1 \
         AND value = ?2) AND (r.tid <> ?3 OR r.id = ?2)"
    );
    if types.is_some() {
        args.push(SqlArg::IntList(tids));
        sql.push_str(&format!(
            " AND r.tid IN (SELECT value FROM json_each(?{}))",
            args.len()
        ));
    }
    if let Some(since) = since {
        args.push(SqlArg::Int(since.timestamp_millis()));
        sql.push_str(&format!(" AND r.last_updated >= ?{}", args.len()));
    }
    if let Some(c) = cursor_text {
        let after: i64 = cursor::decode(cursor::COMPARTMENT, c)?;
        args.push(SqlArg::Int(after));
        sql.push_str(&format!(" AND r.rid > ?{}", args.len()));
    }
    let args = if access.is_server() {
        args
    } else {
        let (visible, args) = visible_condition(tx, access, args)?;
        sql.push_str(&format!(" AND {visible}"));
        args
    };
    sql.push_str(&format!(
        " ORDER BY r.rid LIMIT {}",
        count.saturating_add(1)
    ));

    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
    let mut raw = Vec::new();
    while let Some(row) = rows.next()? {
        raw.push((row.get::<_, i64>(0)?, RawVersion::from_row(row, 1)?));
    }
    let next = cursor::next_after(&mut raw, count, cursor::COMPARTMENT, |(rid, _)| *rid);
    let resources = raw
        .into_iter()
        .map(|(_, r)| r.into_stored())
        .collect::<StoreResult<Vec<_>>>()?;
    Ok((resources, next))
}
