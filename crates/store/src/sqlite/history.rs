//! History (instance, type, system) and the patient compartment.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::OptionalExtension;

use super::rows::{RawVersion, VERSION_COLUMNS};
use super::tx::SqliteTransaction;
use crate::sqlgen::cursor;
use crate::{HistoryPage, HistoryQuery, HistoryScope, StoreResult, StoredResource};

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
    let mut args: Vec<SqlValue> = Vec::new();
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
            args.push(SqlValue::Integer(rid));
            conds.push(format!("v.rid = ?{}", args.len()));
        }
        HistoryScope::Type(resource_type) => {
            let Some(tid) = tx.type_id(resource_type)? else {
                return Ok(empty);
            };
            args.push(SqlValue::Integer(tid));
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
        args.push(SqlValue::Integer(seq));
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
        args.push(SqlValue::Integer(seq));
        conds.push(format!("v.seq <= ?{}", args.len()));
    }
    let scope_where = if conds.is_empty() {
        "1".to_owned()
    } else {
        conds.join(" AND ")
    };
    let total: i64 = tx
        .conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM resource_versions v WHERE {scope_where}"
        ))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;

    let mut page_args = args;
    let mut page_where = scope_where;
    if let Some(c) = &query.cursor {
        let after: i64 = cursor::decode(cursor::HISTORY, c)?;
        page_args.push(SqlValue::Integer(after));
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
) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
    let Some(patient_tid) = tx.type_id("Patient")? else {
        return Ok((Vec::new(), None));
    };
    let patient_rid: Option<i64> = tx
        .conn
        .prepare_cached("SELECT rid FROM resources WHERE tid = ?1 AND id = ?2")?
        .query_row(rusqlite::params![patient_tid, patient_id], |r| r.get(0))
        .optional()?;

    // The compartment parameters of every type present in the database.
    let stored_types: Vec<(i64, String)> = {
        let mut stmt = tx.conn.prepare_cached("SELECT tid, name FROM types")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let defs = phip_fhir::r4();
    let mut pids = Vec::new();
    let mut tids = Vec::new();
    for (tid, name) in &stored_types {
        if let Some(wanted) = types {
            if !wanted.iter().any(|w| w == name) {
                continue;
            }
            tids.push(*tid);
        }
        for code in defs.patient_compartment_params(name) {
            if code == "{def}" {
                continue;
            }
            if let Some(pid) = tx.param_id(*tid, code)? {
                pids.push(pid);
            }
        }
    }
    if types.is_some() && tids.is_empty() {
        return Ok((Vec::new(), None));
    }

    let json = |v: &[i64]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Integer(patient_rid.unwrap_or(0)),
        SqlValue::Text(patient_id.to_owned()),
        SqlValue::Integer(patient_tid),
        SqlValue::Text(json(&pids)),
    ];
    let mut sql = format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r JOIN types ty ON ty.tid = r.tid \
         JOIN resource_versions v ON v.seq = r.seq \
         WHERE r.deleted = 0 AND r.rid IN (SELECT ?1 UNION SELECT rid FROM idx_reference \
         WHERE target_id = ?2 AND target_tid = ?3 AND pid IN (SELECT value FROM json_each(?4)))"
    );
    if types.is_some() {
        args.push(SqlValue::Text(json(&tids)));
        sql.push_str(&format!(
            " AND r.tid IN (SELECT value FROM json_each(?{}))",
            args.len()
        ));
    }
    if let Some(since) = since {
        args.push(SqlValue::Integer(since.timestamp_millis()));
        sql.push_str(&format!(" AND r.last_updated >= ?{}", args.len()));
    }
    if let Some(c) = cursor_text {
        let after: i64 = cursor::decode(cursor::COMPARTMENT, c)?;
        args.push(SqlValue::Integer(after));
        sql.push_str(&format!(" AND r.rid > ?{}", args.len()));
    }
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
