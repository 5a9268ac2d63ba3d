//! Dialect-neutral translation of FHIR searches into SQL, shared by the SQLite and PostgreSQL
//! backends.
//!
//! Both backends have the same logical schema: `types`/`params` dictionaries, `resources` (one
//! row per logical resource, `rid` its key, `deleted` its state), the version table and one
//! narrow `idx_*` table per parameter type keyed by `rid`. The generated SQL uses only what both
//! dialects understand; the differences (placeholders, boolean literals, how a page joins its
//! version bodies) are [`Dialect`] methods or parameters of [`plan`].

pub(crate) mod access;
pub(crate) mod builder;
pub(crate) mod cursor;
pub(crate) mod filter;
pub(crate) mod include;
pub(crate) mod ingest;
pub(crate) mod sort;

use phip_fhir::search::SearchQuery;

use crate::{PageCursor, SearchPage, SearchRequest, StoreError, StoreResult};
use builder::Sql;
use filter::{Ctx, Scope};

/// The index tables, for statements that touch all of them.
pub(crate) const INDEX_TABLES: &[&str] = &[
    "idx_string",
    "idx_token",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_uri",
];

/// The SQL dialect being generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?N` placeholders, integer booleans.
    Sqlite,
    /// `$N` placeholders, `TRUE`/`FALSE`.
    Postgres,
    /// PostgreSQL with the resource-scoped tables distributed by Citus on their `shard`
    /// column (see `docs/postgres.md`, "Citus"). Citus runs a statement on every shard at
    /// once only when each join and correlated subquery between distributed tables equates
    /// the distribution column, so every row-to-row condition also compares `shard`; joins
    /// on anything else (a reference to its target) are written as uncorrelated subqueries,
    /// which Citus evaluates first and ships to the shards as an intermediate result.
    Citus,
}

impl Dialect {
    /// The placeholder of the `n`th (1-based) argument.
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres | Dialect::Citus => format!("${n}"),
        }
    }

    /// `IN` over the integer list bound as the `n`th argument ([`SqlArg::IntList`]).
    pub(crate) fn in_list(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each(?{n}))"),
            Dialect::Postgres | Dialect::Citus => format!("= ANY(${n})"),
        }
    }

    /// A constant condition.
    pub(crate) fn bool_literal(self, b: bool) -> &'static str {
        match (self, b) {
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
            (Dialect::Postgres | Dialect::Citus, true) => "TRUE",
            (Dialect::Postgres | Dialect::Citus, false) => "FALSE",
        }
    }

    /// Whether the resource-scoped tables are distributed by `shard` (Citus).
    pub(crate) fn distributed(self) -> bool {
        self == Dialect::Citus
    }

    /// The condition that `x` is a row of the same resource as `r` (both aliases of
    /// resource-scoped tables).
    pub(crate) fn same_row(self, x: &str, r: &str) -> String {
        if self.distributed() {
            format!("{x}.shard = {r}.shard AND {x}.rid = {r}.rid")
        } else {
            format!("{x}.rid = {r}.rid")
        }
    }

    /// The condition that the resource `r` is (or with `negated`, is not) one of the resources
    /// whose rows `x` the query `FROM {from} WHERE {cond}` yields. A semi-join on the key
    /// (`r.rid IN (SELECT x.rid …)`), which lets the planner drive it from either side; on
    /// Citus the key includes `shard` so that each shard answers for its own rows, and the
    /// negation is a correlated `NOT EXISTS` (Citus would evaluate a `NOT IN` subquery on its
    /// own and ship every row it yields to the shards).
    pub(crate) fn member(self, r: &str, negated: bool, x: &str, from: &str, cond: &str) -> String {
        match (self.distributed(), negated) {
            (false, _) => format!(
                "{r}.rid {}IN (SELECT {x}.rid FROM {from} WHERE {cond})",
                if negated { "NOT " } else { "" }
            ),
            (true, false) => format!(
                "({r}.shard, {r}.rid) IN (SELECT {x}.shard, {x}.rid FROM {from} WHERE {cond})"
            ),
            (true, true) => format!(
                "NOT EXISTS (SELECT 1 FROM {from} WHERE {} AND ({cond}))",
                self.same_row(x, r)
            ),
        }
    }

    /// The shard column of the resource-scoped alias `a` (a constant 0 where tables are not
    /// distributed and have none).
    pub(crate) fn shard_of(self, a: &str) -> String {
        match self {
            Dialect::Sqlite | Dialect::Postgres => "0".to_owned(),
            Dialect::Citus => format!("{a}.shard"),
        }
    }
}

/// A bound value, converted by each backend into its driver's parameter type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlArg {
    /// An integer (ids, epoch milliseconds).
    Int(i64),
    /// A double (numbers, quantities).
    Real(f64),
    /// Text.
    Text(String),
    /// A list of integers for [`Dialect::in_list`] (a JSON array for SQLite, an array for
    /// PostgreSQL), so that a statement's text does not depend on the list's length.
    IntList(Vec<i64>),
}

impl From<i64> for SqlArg {
    fn from(v: i64) -> Self {
        SqlArg::Int(v)
    }
}

impl From<f64> for SqlArg {
    fn from(v: f64) -> Self {
        SqlArg::Real(v)
    }
}

impl From<String> for SqlArg {
    fn from(v: String) -> Self {
        SqlArg::Text(v)
    }
}

impl From<&str> for SqlArg {
    fn from(v: &str) -> Self {
        SqlArg::Text(v.to_owned())
    }
}

/// Type and parameter ids, as a backend's transaction sees them.
pub(crate) trait Catalog {
    /// The id of a resource type, if it was ever stored.
    fn type_id(&self, name: &str) -> StoreResult<Option<i64>>;
    /// The id of a parameter of a type, if a value of it was ever stored.
    fn param_id(&self, tid: i64, code: &str) -> StoreResult<Option<i64>>;
    /// The ids of a parameter code in every type (system searches).
    fn params_with_code(&self, code: &str) -> StoreResult<Vec<i64>>;
}

/// How the page query loads the bodies of its rows: the columns it selects after the row's
/// sort keys and the joins that provide them, given `r` (resources) and `p` (the page).
pub(crate) struct PageShape<'a> {
    /// Columns, e.g. `ty.name, r.id, v.version, v.last_updated, v.body`.
    pub(crate) columns: &'a str,
    /// Joins after `JOIN resources r ON r.rid = p.rid`.
    pub(crate) joins: &'a str,
}

/// The SQL of one search page.
pub(crate) struct Plan {
    /// `SELECT COUNT(*)` of all matches; binds the first `where_args` arguments.
    pub(crate) count_sql: String,
    pub(crate) where_args: usize,
    /// The page: rid, tid, sort values `s0…`, then the [`PageShape`] columns.
    pub(crate) page_sql: String,
    pub(crate) args: Vec<SqlArg>,
    /// Whether the page is read backwards (`PageCursor::Before`).
    pub(crate) before: bool,
}

/// A decoded keyset position: the row's sort values (`None` = no value) and its rid.
pub(crate) type Position = (Vec<Option<SqlArg>>, i64);

/// Translates a request; `None` when the searched type has never been stored (no matches).
pub(crate) fn plan(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    request: &SearchRequest,
    shape: &PageShape<'_>,
) -> StoreResult<Option<Plan>> {
    let q: &SearchQuery = &request.query;
    // WHERE over `r` (resources): type, not deleted, every filter.
    let mut b = Sql::new(dialect);
    let mut conds = vec![format!("r.deleted = {}", b.lit(false))];
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
    if !ctx.access.is_server() {
        conds.push(access::visible(ctx, &mut b, ctx.access, "r")?);
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
        PageCursor::After(c) => (Some(cursor::decode_position(c, q.sort.len())?), false),
        PageCursor::Before(c) => (Some(cursor::decode_position(c, q.sort.len())?), true),
    };
    let keyset = match &position {
        Some((values, rid)) => sort::keyset(&mut b, &q.sort, values, *rid, "m", before),
        None => b.lit(true),
    };
    // The limit is written into the SQL, not bound: SQLite re-prepares a statement whose
    // LIMIT is a bound parameter on every execution, which cost a fifth of search CPU.
    let limit = request.page_size.saturating_add(1);
    let p_keys: String = (0..q.sort.len()).map(|i| format!(", p.s{i}")).collect();
    // The inner query picks the page's rids (sorting only narrow rows); the outer one loads
    // those rows' bodies.
    // On Citus the page's rows carry their shard, so that loading their bodies joins on the
    // distribution column.
    let shard_col = if dialect.distributed() {
        "r.shard AS shard, "
    } else {
        ""
    };
    let page_sql = format!(
        "SELECT p.rid, r.tid{p_keys}, {columns} FROM (\
           SELECT m.* FROM (SELECT {shard_col}r.rid AS rid{key_cols} FROM resources r \
           WHERE {where_sql}) m \
           WHERE {keyset} ORDER BY {} LIMIT {limit}\
         ) p JOIN resources r ON {} {joins} ORDER BY {}",
        sort::order_by(&q.sort, "m", before),
        dialect.same_row("r", "p"),
        sort::order_by(&q.sort, "p", false),
        columns = shape.columns,
        joins = shape.joins,
    );
    Ok(Some(Plan {
        count_sql,
        where_args,
        page_sql,
        args: b.args,
        before,
    }))
}

/// Drops the extra row a page query fetches to learn whether more rows exist in the direction
/// of travel (when paging backwards it is the first in forward order); returns whether it did.
pub(crate) fn trim_page<T>(rows: &mut Vec<T>, page_size: usize, before: bool) -> bool {
    let more = rows.len() > page_size;
    if more {
        if before {
            rows.remove(0);
        } else {
            rows.truncate(page_size);
        }
    }
    more
}

/// The `(next, previous)` cursors of a page, given the cursors of its first and last rows.
pub(crate) fn page_links(
    first: Option<String>,
    last: Option<String>,
    more: bool,
    cursor: &PageCursor,
) -> (Option<String>, Option<String>) {
    match cursor {
        PageCursor::First => (last.filter(|_| more), None),
        PageCursor::After(_) => (last.filter(|_| more), first),
        PageCursor::Before(_) => (last, first.filter(|_| more)),
    }
}

/// The SQL of a search and, after each statement, the lines `explain` gives for it (the
/// database's query plan; diagnostics).
pub(crate) fn explain(
    plan: Option<Plan>,
    mut explain: impl FnMut(&str, &[SqlArg]) -> StoreResult<Vec<String>>,
) -> StoreResult<String> {
    let Some(plan) = plan else {
        return Ok("no resources of this type".into());
    };
    let mut out = String::new();
    for (sql, args) in [
        (&plan.count_sql, &plan.args[..plan.where_args]),
        (&plan.page_sql, &plan.args[..]),
    ] {
        out.push_str(sql);
        out.push('\n');
        for line in explain(sql, args)? {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Ok(out)
}

/// A page without matches (no such type, or `_count=0`) with the given total.
pub(crate) fn empty_page(total: Option<u64>) -> SearchPage {
    SearchPage {
        matches: Vec::new(),
        included: Vec::new(),
        total,
        next: None,
        previous: None,
    }
}

/// Refuses a database whose schema version `current` is newer than the `supported` one.
pub(crate) fn check_schema_version(current: i64, supported: i64) -> StoreResult<()> {
    if current > supported {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary supports \
             (version {supported}); use a newer phip"
        )));
    }
    Ok(())
}
