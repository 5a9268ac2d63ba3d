//! Search: one SQL statement per page (plus one for the total and one per include round).

mod builder;
mod filter;
mod include;
mod sort;

use chrono::Utc;
use phip_fhir::search::TotalMode;

use super::cursor::{self, KeyValue};
use super::rows::{RawVersion, VERSION_COLUMNS};
use super::tx::SqliteTransaction;
use crate::{PageCursor, SearchPage, SearchRequest, StoreError, StoreResult};
use builder::Sql;
use filter::{Ctx, Scope};

const SEARCH_CURSOR: &str = "s";

/// A page row: its key (sort values, rid), type id and loaded version.
struct PageRow {
    keys: Vec<KeyValue>,
    rid: i64,
    tid: i64,
    raw: RawVersion,
}

/// The SQL of one search page.
pub(crate) struct Plan {
    /// `SELECT COUNT(*)` of all matches; binds the first `where_args` arguments.
    count_sql: String,
    where_args: usize,
    /// The page: rid, tid, sort values, then [`VERSION_COLUMNS`].
    page_sql: String,
    args: Vec<rusqlite::types::Value>,
    /// Whether the page is read backwards (`PageCursor::Before`).
    before: bool,
}

/// Translates a request; `None` when the searched type has never been stored (no matches).
pub(crate) fn plan(ctx: &Ctx<'_, '_>, request: &SearchRequest) -> StoreResult<Option<Plan>> {
    let q = &request.query;
    // WHERE over `r` (resources): type, not deleted, every filter.
    let mut b = Sql::default();
    let mut conds = vec!["r.deleted = 0".to_owned()];
    let scope = match &q.resource_type {
        Some(t) => {
            let Some(tid) = ctx.type_id(t)? else {
                return Ok(None);
            };
            conds.push(format!("r.tid = {}", b.arg(tid)));
            Scope::Types(vec![tid])
        }
        None => Scope::All,
    };
    for f in &q.filters {
        conds.push(filter::predicate(ctx, &mut b, f, "r", &scope)?);
    }
    let where_sql = conds.join(" AND ");
    let where_args = b.args.len();
    let count_sql = format!("SELECT COUNT(*) FROM resources r WHERE {where_sql}");

    let mut key_cols = String::new();
    for (i, key) in q.sort.iter().enumerate() {
        let e = sort::key_expr(ctx, &mut b, key, "r", &scope)?;
        key_cols.push_str(&format!(", {e} AS s{i}"));
    }
    let (position, before) = match &request.cursor {
        PageCursor::First => (None, false),
        PageCursor::After(c) => (Some(decode_key(c, q.sort.len())?), false),
        PageCursor::Before(c) => (Some(decode_key(c, q.sort.len())?), true),
    };
    let keyset = match &position {
        Some((values, rid)) => sort::keyset(&mut b, &q.sort, values, *rid, "m", before),
        None => "1".to_owned(),
    };
    let limit = b.arg(request.page_size as i64 + 1);
    let p_keys: String = (0..q.sort.len()).map(|i| format!(", p.s{i}")).collect();
    // The inner query picks the page's rids (sorting only narrow rows); the outer one loads
    // those rows' bodies.
    let page_sql = format!(
        "SELECT p.rid, r.tid{p_keys}, {VERSION_COLUMNS} FROM (\
           SELECT m.* FROM (SELECT r.rid AS rid{key_cols} FROM resources r WHERE {where_sql}) m \
           WHERE {keyset} ORDER BY {} LIMIT {limit}\
         ) p JOIN resources r ON r.rid = p.rid JOIN types ty ON ty.tid = r.tid \
         JOIN resource_versions v ON v.seq = r.seq ORDER BY {}",
        sort::order_by(&q.sort, "m", before),
        sort::order_by(&q.sort, "p", false),
    );
    Ok(Some(Plan {
        count_sql,
        where_args,
        page_sql,
        args: b.args,
        before,
    }))
}

/// The SQL of a search and SQLite's query plans for it (diagnostics).
pub(crate) fn explain(tx: &SqliteTransaction<'_>, request: &SearchRequest) -> StoreResult<String> {
    let ctx = Ctx {
        tx,
        now_ms: Utc::now().timestamp_millis(),
    };
    let Some(plan) = plan(&ctx, request)? else {
        return Ok("no resources of this type".into());
    };
    let mut out = String::new();
    for (sql, args) in [
        (&plan.count_sql, &plan.args[..plan.where_args]),
        (&plan.page_sql, &plan.args[..]),
    ] {
        out.push_str(sql);
        out.push('\n');
        let mut stmt = tx.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        while let Some(row) = rows.next()? {
            let detail: String = row.get(3)?;
            out.push_str(&format!("  {detail}\n"));
        }
    }
    Ok(out)
}

pub(crate) fn search(
    tx: &mut SqliteTransaction<'_>,
    request: &SearchRequest,
) -> StoreResult<SearchPage> {
    let tx = &*tx;
    let ctx = Ctx {
        tx,
        now_ms: Utc::now().timestamp_millis(),
    };
    let q = &request.query;
    let Some(plan) = plan(&ctx, request)? else {
        return Ok(SearchPage {
            matches: Vec::new(),
            included: Vec::new(),
            total: Some(0),
            next: None,
            previous: None,
        });
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
        return Ok(SearchPage {
            matches: Vec::new(),
            included: Vec::new(),
            total,
            next: None,
            previous: None,
        });
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
                keys.push(KeyValue::from_sql(row.get_ref(2 + i)?));
            }
            rows.push(PageRow {
                rid: row.get(0)?,
                tid: row.get(1)?,
                keys,
                raw: RawVersion::from_row(row, 2 + nkeys)?,
            });
        }
    }
    // One row more than the page was fetched to learn whether more exist in the direction of
    // travel; when paging backwards the extra row is the first in forward order.
    let more = rows.len() > request.page_size;
    if more {
        if before {
            rows.remove(0);
        } else {
            rows.truncate(request.page_size);
        }
    }
    let key_of = |r: &PageRow| cursor::encode(SEARCH_CURSOR, &(&r.keys, r.rid));
    let (next, previous) = match request.cursor {
        PageCursor::First => (rows.last().filter(|_| more).map(key_of), None),
        PageCursor::After(_) => (
            rows.last().filter(|_| more).map(key_of),
            rows.first().map(key_of),
        ),
        PageCursor::Before(_) => (
            rows.last().map(key_of),
            rows.first().filter(|_| more).map(key_of),
        ),
    };
    // Free when the first page holds every match.
    let total = total
        .or_else(|| (request.cursor == PageCursor::First && !more).then_some(rows.len() as u64));

    let page: Vec<(i64, i64)> = rows.iter().map(|r| (r.rid, r.tid)).collect();
    let matches = rows
        .into_iter()
        .map(|r| r.raw.into_stored())
        .collect::<StoreResult<Vec<_>>>()?;
    let included = include::included(&ctx, &q.includes, &q.revincludes, &page)?;
    Ok(SearchPage {
        matches,
        included,
        total,
        next,
        previous,
    })
}

fn decode_key(c: &str, nkeys: usize) -> StoreResult<(Vec<KeyValue>, i64)> {
    let (keys, rid): (Vec<KeyValue>, i64) = cursor::decode(SEARCH_CURSOR, c)?;
    if keys.len() != nkeys {
        return Err(StoreError::InvalidCursor);
    }
    Ok((keys, rid))
}
