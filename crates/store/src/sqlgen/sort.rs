//! `_sort` keys as per-row SQL expressions, and the keyset conditions and orderings built on
//! them.
//!
//! The total order of a search is: each sort key (rows without a value last), then `rid`. A
//! page cursor holds the last (or first) row's key values and `rid`; the next page is the rows
//! after that tuple in this order, so writes between page requests never duplicate or skip an
//! unchanged row.

use phip_fhir::search::{ParamType, SortDirection, SortKey};

use super::builder::Sql;
use super::filter::{Ctx, Scope};
use super::SqlArg;
use crate::{StoreError, StoreResult};

/// The value a resource sorts by for one key: the smallest of its values for an ascending
/// key, the largest for a descending one.
pub(crate) fn key_expr(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    key: &SortKey,
    alias: &str,
    scope: &Scope,
) -> StoreResult<String> {
    match key.code.as_str() {
        "_id" => return Ok(format!("{alias}.id")),
        "_lastUpdated" => return Ok(format!("{alias}.last_updated")),
        _ => {}
    }
    let asc = key.direction == SortDirection::Ascending;
    let agg = if asc { "MIN" } else { "MAX" };
    let (table, col) = match key.param_type {
        ParamType::String => ("idx_string", "norm"),
        ParamType::Token => ("idx_token", "code"),
        ParamType::Date => ("idx_date", if asc { "start" } else { "\"end\"" }),
        ParamType::Number => ("idx_number", "value"),
        ParamType::Quantity => ("idx_quantity", "value"),
        ParamType::Reference => ("idx_reference", "target_id"),
        ParamType::Uri => ("idx_uri", "uri"),
        ParamType::Composite | ParamType::Special => {
            return Err(StoreError::UnsupportedSearch(format!(
                "sorting by the {:?} parameter {}",
                key.param_type, key.code
            )))
        }
    };
    let pids = ctx.pids(scope, &key.code)?;
    if pids.is_empty() {
        return Ok("NULL".into());
    }
    let x = b.alias("k");
    let pid_list = b.int_list(&pids);
    let value = if key.param_type == ParamType::Reference {
        format!("COALESCE({x}.target_id, {x}.url)")
    } else {
        format!("{x}.{col}")
    };
    // `+pid` keeps the planner off the parameter index: the resource's own rows (a range of
    // the table's key) are the few to look at.
    Ok(format!(
        "(SELECT {agg}({value}) FROM {table} {x} \
         WHERE {} AND +{x}.pid IN {pid_list})",
        b.dialect.same_row(&x, alias)
    ))
}

/// `ORDER BY` terms over columns `{m}.s0…` and `{m}.rid`; `reverse` flips the whole order.
pub(crate) fn order_by(keys: &[SortKey], m: &str, reverse: bool) -> String {
    let mut terms = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let asc = (key.direction == SortDirection::Ascending) != reverse;
        terms.push(format!(
            "({m}.s{i} IS NULL){}",
            if reverse { " DESC" } else { "" }
        ));
        terms.push(format!("{m}.s{i}{}", if asc { "" } else { " DESC" }));
    }
    terms.push(format!("{m}.rid{}", if reverse { " DESC" } else { "" }));
    terms.join(", ")
}

/// The rows strictly after (`before == false`) or strictly before the cursor row in the
/// forward order.
pub(crate) fn keyset(
    b: &mut Sql,
    keys: &[SortKey],
    values: &[Option<SqlArg>],
    rid: i64,
    m: &str,
    before: bool,
) -> String {
    let mut cond = format!("{m}.rid {} {}", if before { "<" } else { ">" }, b.arg(rid));
    for (i, (key, value)) in keys.iter().zip(values).enumerate().rev() {
        let col = format!("{m}.s{i}");
        let asc = key.direction == SortDirection::Ascending;
        cond = match (value, before) {
            // Missing values sort last: after a missing value come only other missing ones.
            (None, false) => format!("({col} IS NULL AND ({cond}))"),
            (None, true) => format!("({col} IS NOT NULL OR ({cond}))"),
            (Some(v), before) => {
                let p = b.arg(v.clone());
                let op = if asc != before { ">" } else { "<" };
                let nulls = if before {
                    ""
                } else {
                    &format!("{col} IS NULL OR ")
                };
                format!("({nulls}{col} {op} {p} OR ({col} = {p} AND ({cond})))")
            }
        };
    }
    cond
}
