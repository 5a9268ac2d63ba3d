//! Search: the shared translation (`crate::sqlgen`) run on PostgreSQL — one statement per page,
//! one for the total and one per include round.

use chrono::Utc;
use phip_fhir::search::TotalMode;
use postgres::types::Type;
use postgres::Row;

use super::history::{
    load_current, stored_from_row, CURRENT_VERSION_JOIN, CURRENT_VERSION_JOIN_DISTRIBUTED,
    VERSION_COLUMNS,
};
use super::tx::PgTransaction;
use super::{error, get_int, params};
use crate::sqlgen::cursor::{self, KeyValue};
use crate::sqlgen::filter::Ctx;
use crate::sqlgen::{self, Dialect, PageShape, Plan, SqlArg};
use crate::{PageCursor, SearchPage, SearchRequest, StoreResult};

/// Page rows select the body columns of their current version after the sort keys.
const SHAPE: PageShape<'static> = PageShape {
    columns: VERSION_COLUMNS,
    joins: CURRENT_VERSION_JOIN,
};

/// [`SHAPE`] on Citus: the version is joined on the distribution column too, and the row's
/// shard follows the body columns (for loading what it includes).
const SHAPE_DISTRIBUTED: PageShape<'static> = PageShape {
    columns: "r.tid, r.id, v.version, v.last_updated, v.body, r.shard",
    joins: CURRENT_VERSION_JOIN_DISTRIBUTED,
};

fn plan(ctx: &Ctx<'_>, dialect: Dialect, request: &SearchRequest) -> StoreResult<Option<Plan>> {
    let shape = if dialect.distributed() {
        &SHAPE_DISTRIBUTED
    } else {
        &SHAPE
    };
    sqlgen::plan(ctx, dialect, request, shape)
}

/// A sort value as read from a page row, whatever the column's type.
fn key_value(row: &Row, i: usize) -> StoreResult<KeyValue> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(error::pg)?
            .map(KeyValue::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(error::pg)?
            .map(|v| KeyValue::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(error::pg)?
            .map(|v| KeyValue::Int(v.into())),
        Type::FLOAT4 | Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(error::pg)?
            .map(KeyValue::Real),
        _ => row
            .try_get::<_, Option<String>>(i)
            .map_err(error::pg)?
            .map(KeyValue::Text),
    };
    Ok(v.unwrap_or(KeyValue::Null))
}

/// Serializes write transactions searching the same criteria (see [`PgTransaction::lock_criteria`]).
fn criteria_key(request: &SearchRequest) -> i64 {
    // FNV-1a: stable across processes and releases, unlike std's hasher, since servers of
    // different builds may share a database.
    let text = format!(
        "{:?}|{:?}",
        request.query.resource_type, request.query.filters
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The SQL of a search and PostgreSQL's plans for it (diagnostics).
pub(crate) fn explain(tx: &mut PgTransaction<'_>, request: &SearchRequest) -> StoreResult<String> {
    let ctx = Ctx {
        catalog: &tx.store.catalog,
        now_ms: Utc::now().timestamp_millis(),
        access: &request.access,
    };
    sqlgen::explain(plan(&ctx, tx.store.dialect(), request)?, |sql, args| {
        let rows = tx
            .conn
            .client()
            .query(&format!("EXPLAIN {sql}"), &params(args))
            .map_err(error::pg)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    })
}

pub(crate) fn search(
    tx: &mut PgTransaction<'_>,
    request: &SearchRequest,
) -> StoreResult<SearchPage> {
    if tx.writer {
        tx.lock_criteria(criteria_key(request))?;
    }
    let store = tx.store;
    let ctx = Ctx {
        catalog: &store.catalog,
        now_ms: Utc::now().timestamp_millis(),
        access: &request.access,
    };
    let q = &request.query;
    let dialect = store.dialect();
    let Some(plan) = plan(&ctx, dialect, request)? else {
        return Ok(sqlgen::empty_page(Some(0)));
    };
    let total = match q.total {
        TotalMode::Accurate | TotalMode::Estimate => {
            let row = tx
                .conn
                .query_one(&plan.count_sql, &params(&plan.args[..plan.where_args]))?;
            Some(row.get::<_, i64>(0) as u64)
        }
        TotalMode::None => None,
    };
    if request.page_size == 0 {
        return Ok(sqlgen::empty_page(total));
    }
    let nkeys = q.sort.len();
    let mut rows = tx.conn.query(&plan.page_sql, &params(&plan.args))?;
    let more = sqlgen::trim_page(&mut rows, request.page_size, plan.before);
    let mut keys = Vec::with_capacity(rows.len());
    let mut page = Vec::with_capacity(rows.len());
    let mut matches = Vec::with_capacity(rows.len());
    for row in &rows {
        let rid: i64 = row.get(0);
        let tid = get_int(row, 1)?;
        let mut values = Vec::with_capacity(nkeys);
        for i in 0..nkeys {
            values.push(key_value(row, 2 + i)?);
        }
        keys.push(cursor::encode_position(&values, rid));
        let shard = if dialect.distributed() {
            row.get(2 + nkeys + 5)
        } else {
            0
        };
        page.push((rid, tid, shard));
        matches.push(stored_from_row(&store.catalog, row, 2 + nkeys)?);
    }
    let (next, previous) = sqlgen::page_links(
        keys.first().cloned(),
        keys.last().cloned(),
        more,
        &request.cursor,
    );
    // Free when the first page holds every match.
    let total = total
        .or_else(|| (request.cursor == PageCursor::First && !more).then_some(matches.len() as u64));

    let found = {
        let conn = &mut tx.conn;
        let mut run = |sql: &str, args: &[SqlArg]| -> StoreResult<Vec<(i64, i64, i64)>> {
            conn.query(sql, &params(args))?
                .iter()
                .map(|r| Ok((r.get::<_, i64>(0), get_int(r, 1)?, get_int(r, 2)?)))
                .collect()
        };
        sqlgen::include::included(&ctx, dialect, &q.includes, &q.revincludes, &page, &mut run)?
    };
    let included = load_current(tx, &found)?;
    Ok(SearchPage {
        matches,
        included,
        total,
        next,
        previous,
    })
}
