//! `_include` and `_revinclude`, set-based over a page's resources.

use std::collections::HashSet;

use phip_fhir::search::Include;

use super::builder::Sql;
use super::filter::{Ctx, Scope};
use super::{Dialect, SqlArg};
use crate::StoreResult;

/// How many rounds `:iterate` directives run after the first.
pub(crate) const MAX_ITERATE_DEPTH: usize = 4;

/// Upper bound on included resources per page, so that a `_revinclude` of a hub resource
/// cannot exhaust memory.
pub(crate) const MAX_INCLUDED: usize = 10_000;

/// A resource found by a query: its rid, type id and shard (0 where the backend has none).
pub(crate) type Found = (i64, i64, i64);

/// Runs one include query and returns its `(rid, tid, shard)` rows.
pub(crate) type RunQuery<'a> = dyn FnMut(&str, &[SqlArg]) -> StoreResult<Vec<Found>> + 'a;

/// The resources included for a page (the [`Found`] rows of its matches), as `(rid, shard)`
/// in discovery order: deduplicated, never one of the matches, never deleted.
pub(crate) fn included(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    includes: &[Include],
    revincludes: &[Include],
    page: &[Found],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<(i64, i64)>> {
    if includes.is_empty() && revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<i64> = page.iter().map(|(rid, _, _)| *rid).collect();
    let mut found: Vec<(i64, i64)> = Vec::new();
    let mut frontier: Vec<Found> = page.to_vec();
    for depth in 0..=MAX_ITERATE_DEPTH {
        if frontier.is_empty() || found.len() >= MAX_INCLUDED {
            break;
        }
        let mut next = Vec::new();
        for inc in includes.iter().filter(|i| depth == 0 || i.iterate) {
            next.extend(forward(ctx, dialect, inc, &frontier, run)?);
        }
        for inc in revincludes.iter().filter(|i| depth == 0 || i.iterate) {
            next.extend(reverse(ctx, dialect, inc, &frontier, run)?);
        }
        frontier.clear();
        for (rid, tid, shard) in next {
            if found.len() >= MAX_INCLUDED {
                break;
            }
            if seen.insert(rid) {
                found.push((rid, shard));
                frontier.push((rid, tid, shard));
            }
        }
    }
    Ok(found)
}

/// The resources the frontier's references (of `inc`) point at.
fn forward(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    inc: &Include,
    frontier: &[Found],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<Found>> {
    let source_tid = if inc.source_type == "*" {
        None
    } else {
        match ctx.type_id(&inc.source_type)? {
            Some(t) => Some(t),
            None => return Ok(Vec::new()),
        }
    };
    let sources: Vec<&Found> = frontier
        .iter()
        .filter(|(_, tid, _)| source_tid.is_none_or(|s| s == *tid))
        .collect();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![SqlArg::IntList(
        sources.iter().map(|(rid, _, _)| *rid).collect(),
    )];
    let live = dialect.bool_literal(false);
    let mut sql = if dialect.distributed() {
        // The references are on the sources' shards, the targets anywhere: the targets'
        // (type, id) pairs are found first.
        args.push(SqlArg::IntList(
            sources.iter().map(|(_, _, shard)| *shard).collect(),
        ));
        format!(
            "SELECT t.rid, t.tid, t.shard FROM resources t WHERE t.deleted = {live} \
             AND (t.tid, t.id) IN (SELECT x.target_tid, x.target_id FROM idx_reference x \
             WHERE x.shard {} AND x.rid {}",
            dialect.in_list(2),
            dialect.in_list(1),
        )
    } else {
        format!(
            "SELECT DISTINCT t.rid, t.tid, {} FROM idx_reference x \
             JOIN resources t ON t.tid = x.target_tid AND t.id = x.target_id \
             WHERE x.rid {} AND t.deleted = {live}",
            dialect.shard_of("t"),
            dialect.in_list(1),
        )
    };
    if inc.param != "*" {
        let scope = match source_tid {
            Some(t) => Scope::Types(vec![t]),
            None => Scope::All,
        };
        let pids = ctx.pids(&scope, &inc.param)?;
        if pids.is_empty() {
            return Ok(Vec::new());
        }
        args.push(SqlArg::IntList(pids));
        sql.push_str(&format!(" AND x.pid {}", dialect.in_list(args.len())));
    }
    if let Some(target) = &inc.target_type {
        let Some(tid) = ctx.type_id(target)? else {
            return Ok(Vec::new());
        };
        args.push(SqlArg::Int(tid));
        sql.push_str(&format!(
            " AND x.target_tid = {}",
            dialect.placeholder(args.len())
        ));
    }
    if dialect.distributed() {
        sql.push(')');
    }
    let args = with_visibility(ctx, dialect, args, "t", &mut sql)?;
    run(&sql, &args)
}

/// The resources of `inc.source_type` whose references (of `inc`) point at the frontier.
fn reverse(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    inc: &Include,
    frontier: &[Found],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<Found>> {
    let target_tid = match &inc.target_type {
        Some(t) => match ctx.type_id(t)? {
            Some(tid) => Some(tid),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let targets: Vec<&Found> = frontier
        .iter()
        .filter(|(_, tid, _)| target_tid.is_none_or(|t| t == *tid))
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let source_tid = if inc.source_type == "*" {
        None
    } else {
        match ctx.type_id(&inc.source_type)? {
            Some(t) => Some(t),
            None => return Ok(Vec::new()),
        }
    };
    let mut args = vec![SqlArg::IntList(
        targets.iter().map(|(rid, _, _)| *rid).collect(),
    )];
    let live = dialect.bool_literal(false);
    let mut sql = if dialect.distributed() {
        // The targets' (type, id) pairs first, then the references to them on every shard.
        args.push(SqlArg::IntList(
            targets.iter().map(|(_, _, shard)| *shard).collect(),
        ));
        format!(
            "SELECT DISTINCT s.rid, s.tid, s.shard FROM resources s \
             JOIN idx_reference x ON x.shard = s.shard AND x.rid = s.rid \
             WHERE (x.target_tid, x.target_id) IN (SELECT p.tid, p.id FROM resources p \
             WHERE p.shard {} AND p.rid {}) AND s.deleted = {live}",
            dialect.in_list(2),
            dialect.in_list(1),
        )
    } else {
        format!(
            "SELECT DISTINCT s.rid, s.tid, {} FROM resources p \
             JOIN idx_reference x ON x.target_id = p.id AND x.target_tid = p.tid \
             JOIN resources s ON s.rid = x.rid \
             WHERE p.rid {} AND s.deleted = {live}",
            dialect.shard_of("s"),
            dialect.in_list(1),
        )
    };
    if inc.param != "*" {
        let scope = match source_tid {
            Some(t) => Scope::Types(vec![t]),
            None => Scope::All,
        };
        let pids = ctx.pids(&scope, &inc.param)?;
        if pids.is_empty() {
            return Ok(Vec::new());
        }
        args.push(SqlArg::IntList(pids));
        sql.push_str(&format!(" AND x.pid {}", dialect.in_list(args.len())));
    }
    if let Some(tid) = source_tid {
        args.push(SqlArg::Int(tid));
        sql.push_str(&format!(" AND s.tid = {}", dialect.placeholder(args.len())));
    }
    let args = with_visibility(ctx, dialect, args, "s", &mut sql)?;
    run(&sql, &args)
}

/// Appends the caller's visibility of the included row `alias` to `sql`: an include never
/// brings in what the caller could not read directly.
fn with_visibility(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    args: Vec<SqlArg>,
    alias: &str,
    sql: &mut String,
) -> StoreResult<Vec<SqlArg>> {
    if ctx.access.is_server() {
        return Ok(args);
    }
    let mut b = Sql::new(dialect);
    b.args = args;
    let visible = super::access::visible(ctx, &mut b, ctx.access, alias)?;
    sql.push_str(&format!(" AND {visible}"));
    Ok(b.args)
}
