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

/// Runs one include query and returns its `(rid, tid)` rows.
pub(crate) type RunQuery<'a> = dyn FnMut(&str, &[SqlArg]) -> StoreResult<Vec<(i64, i64)>> + 'a;

/// The rids of the resources included for a page (`(rid, tid)` of its matches), in discovery
/// order: deduplicated, never one of the matches, never deleted.
pub(crate) fn included(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    includes: &[Include],
    revincludes: &[Include],
    page: &[(i64, i64)],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<i64>> {
    if includes.is_empty() && revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<i64> = page.iter().map(|(rid, _)| *rid).collect();
    let mut found: Vec<i64> = Vec::new();
    let mut frontier: Vec<(i64, i64)> = page.to_vec();
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
        for (rid, tid) in next {
            if found.len() >= MAX_INCLUDED {
                break;
            }
            if seen.insert(rid) {
                found.push(rid);
                frontier.push((rid, tid));
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
    frontier: &[(i64, i64)],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<(i64, i64)>> {
    let source_tid = if inc.source_type == "*" {
        None
    } else {
        match ctx.type_id(&inc.source_type)? {
            Some(t) => Some(t),
            None => return Ok(Vec::new()),
        }
    };
    let sources: Vec<i64> = frontier
        .iter()
        .filter(|(_, tid)| source_tid.is_none_or(|s| s == *tid))
        .map(|(rid, _)| *rid)
        .collect();
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![SqlArg::IntList(sources)];
    let mut sql = format!(
        "SELECT DISTINCT t.rid, t.tid FROM idx_reference x \
         JOIN resources t ON t.tid = x.target_tid AND t.id = x.target_id \
         WHERE x.rid {} AND t.deleted = {}",
        dialect.in_list(1),
        dialect.bool_literal(false)
    );
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
        sql.push_str(&format!(" AND x.pid {}", dialect.in_list(2)));
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
    let args = with_visibility(ctx, dialect, args, "t", &mut sql)?;
    run(&sql, &args)
}

/// The resources of `inc.source_type` whose references (of `inc`) point at the frontier.
fn reverse(
    ctx: &Ctx<'_>,
    dialect: Dialect,
    inc: &Include,
    frontier: &[(i64, i64)],
    run: &mut RunQuery<'_>,
) -> StoreResult<Vec<(i64, i64)>> {
    let target_tid = match &inc.target_type {
        Some(t) => match ctx.type_id(t)? {
            Some(tid) => Some(tid),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let targets: Vec<i64> = frontier
        .iter()
        .filter(|(_, tid)| target_tid.is_none_or(|t| t == *tid))
        .map(|(rid, _)| *rid)
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
    let mut args = vec![SqlArg::IntList(targets)];
    let mut sql = format!(
        "SELECT DISTINCT s.rid, s.tid FROM resources p \
         JOIN idx_reference x ON x.target_id = p.id AND x.target_tid = p.tid \
         JOIN resources s ON s.rid = x.rid \
         WHERE p.rid {} AND s.deleted = {}",
        dialect.in_list(1),
        dialect.bool_literal(false)
    );
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
        sql.push_str(&format!(" AND x.pid {}", dialect.in_list(2)));
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
