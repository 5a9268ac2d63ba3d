//! Search: one SQL statement per page (plus one for the total and one per include round).
//! The translation itself is shared with PostgreSQL (`crate::sqlgen`).

use chrono::Utc;
use phip_fhir::search::TotalMode;

use super::rows::{RawVersion, VERSION_COLUMNS};
use super::tx::SqliteTransaction;
use crate::sqlgen::cursor::{self, KeyValue};
use crate::sqlgen::filter::Ctx;
use crate::sqlgen::{self, Catalog, Dialect, PageShape, Plan, SqlArg};
use crate::{PageCursor, SearchPage, SearchRequest, StoreResult};

/// A page row: its key (sort values, rid), type id and loaded version.
struct PageRow {
    keys: Vec<KeyValue>,
    rid: i64,
    tid: i64,
    raw: RawVersion,
}

impl Catalog for SqliteTransaction<'_> {
    fn type_id(&self, name: &str) -> StoreResult<Option<i64>> {
        SqliteTransaction::type_id(self, name)
    }

    fn param_id(&self, tid: i64, code: &str) -> StoreResult<Option<i64>> {
        SqliteTransaction::param_id(self, tid, code)
    }

    fn params_with_code(&self, code: &str) -> StoreResult<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT pid FROM params WHERE code = ?1")?;
        let rows = stmt.query_map([code], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl rusqlite::ToSql for SqlArg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            SqlArg::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            SqlArg::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            SqlArg::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            SqlArg::IntList(v) => ToSqlOutput::Owned(Value::Text(
                serde_json::to_string(v)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            )),
        })
    }
}

/// A page's versions are found through the current version's sequence number.
const SHAPE: PageShape<'static> = PageShape {
    columns: VERSION_COLUMNS,
    joins: "JOIN types ty ON ty.tid = r.tid JOIN resource_versions v ON v.seq = r.seq",
};

/// Translates a request; `None` when the searched type has never been stored (no matches).
fn plan(ctx: &Ctx<'_>, request: &SearchRequest) -> StoreResult<Option<Plan>> {
    sqlgen::plan(ctx, Dialect::Sqlite, request, &SHAPE)
}

/// The SQL of a search and SQLite's query plans for it (diagnostics).
pub(crate) fn explain(tx: &SqliteTransaction<'_>, request: &SearchRequest) -> StoreResult<String> {
    let ctx = Ctx {
        catalog: tx,
        now_ms: Utc::now().timestamp_millis(),
        access: &request.access,
    };
    sqlgen::explain(plan(&ctx, request)?, |sql, args| {
        let mut stmt = tx.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |row| row.get(3))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
}

pub(crate) fn search(
    tx: &mut SqliteTransaction<'_>,
    request: &SearchRequest,
) -> StoreResult<SearchPage> {
    let tx = &*tx;
    let ctx = Ctx {
        catalog: tx,
        now_ms: Utc::now().timestamp_millis(),
        access: &request.access,
    };
    let q = &request.query;
    let Some(plan) = plan(&ctx, request)? else {
        return Ok(sqlgen::empty_page(Some(0)));
    };
    let total = match q.total {
        TotalMode::Accurate | TotalMode::Estimate => {
            let n: i64 = tx.conn.prepare_cached(&plan.count_sql)?.query_row(
                rusqlite::params_from_iter(plan.args[..plan.where_args].iter()),
                |r| r.get(0),
            )?;
            Some(n as u64)
        }
        TotalMode::None => None,
    };
    if request.page_size == 0 {
        return Ok(sqlgen::empty_page(total));
    }
    let before = plan.before;
    let sql = &plan.page_sql;
    let nkeys = q.sort.len();
    let mut rows: Vec<PageRow> = Vec::new();
    {
        let mut stmt = tx.conn.prepare_cached(sql)?;
        let mut res = stmt.query(rusqlite::params_from_iter(plan.args.iter()))?;
        while let Some(row) = res.next()? {
            let mut keys = Vec::with_capacity(nkeys);
            for i in 0..nkeys {
                keys.push(key_value(row.get_ref(2 + i)?));
            }
            rows.push(PageRow {
                rid: row.get(0)?,
                tid: row.get(1)?,
                keys,
                raw: RawVersion::from_row(row, 2 + nkeys)?,
            });
        }
    }
    let more = sqlgen::trim_page(&mut rows, request.page_size, before);
    let key_of = |r: &PageRow| cursor::encode_position(&r.keys, r.rid);
    let (next, previous) = sqlgen::page_links(
        rows.first().map(key_of),
        rows.last().map(key_of),
        more,
        &request.cursor,
    );
    // Free when the first page holds every match.
    let total = total
        .or_else(|| (request.cursor == PageCursor::First && !more).then_some(rows.len() as u64));

    let page: Vec<(i64, i64, i64)> = rows.iter().map(|r| (r.rid, r.tid, 0)).collect();
    let matches = rows
        .into_iter()
        .map(|r| r.raw.into_stored())
        .collect::<StoreResult<Vec<_>>>()?;
    let mut run = |sql: &str, args: &[SqlArg]| -> StoreResult<Vec<(i64, i64, i64)>> {
        let mut stmt = tx.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let found = sqlgen::include::included(
        &ctx,
        Dialect::Sqlite,
        &q.includes,
        &q.revincludes,
        &page,
        &mut run,
    )?;
    let found: Vec<i64> = found.into_iter().map(|(rid, _)| rid).collect();
    let included = super::rows::load_current(tx, &found)?;
    Ok(SearchPage {
        matches,
        included,
        total,
        next,
        previous,
    })
}

/// A sort value as read from a page row.
fn key_value(v: rusqlite::types::ValueRef<'_>) -> KeyValue {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => KeyValue::Null,
        ValueRef::Integer(i) => KeyValue::Int(i),
        ValueRef::Real(r) => KeyValue::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            KeyValue::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}
