//! Translation of search filters into SQL predicates over a `resources` row.
//!
//! Every predicate is a condition on `<alias>.rid` (or another column of `resources`), so a
//! filter nests freely: a chain applies its inner filter to the referenced `resources` row, a
//! `_has` to the referring one. Positive conditions are `rid IN (SELECT rid FROM idx_… WHERE
//! pid … AND value…)`, which SQLite can either drive from the covering lookup index or check
//! per row, whichever its planner finds cheaper; negative ones (`:not`, `:missing=true`) are
//! `NOT IN`.

use phip_fhir::search::{
    index_text, normalize_string, Filter, Modifier, ParamType, Prefix, SearchValue, TokenSystem,
};

use super::builder::{like_escape, prefix_upper, Sql};
use super::{Catalog, INDEX_TABLES};
use crate::{StoreError, StoreResult};

/// The resource types a filter applies to.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// These type ids.
    Types(Vec<i64>),
    /// Every type (system search).
    All,
}

/// Lookups a translation needs.
pub(crate) struct Ctx<'a> {
    pub(crate) catalog: &'a dyn Catalog,
    pub(crate) now_ms: i64,
    /// Whom the statement runs for: every row a chain or `_has` reaches must be visible too,
    /// or the filter would answer about rows the caller cannot see.
    pub(crate) access: &'a crate::Access,
}

impl Ctx<'_> {
    pub(crate) fn type_id(&self, name: &str) -> StoreResult<Option<i64>> {
        self.catalog.type_id(name)
    }

    /// The parameter ids of `code` in the scope's types (empty: no value was ever stored).
    pub(crate) fn pids(&self, scope: &Scope, code: &str) -> StoreResult<Vec<i64>> {
        match scope {
            Scope::Types(tids) => {
                let mut out = Vec::with_capacity(tids.len());
                for tid in tids {
                    if let Some(pid) = self.catalog.param_id(*tid, code)? {
                        out.push(pid);
                    }
                }
                Ok(out)
            }
            Scope::All => self.catalog.params_with_code(code),
        }
    }
}

fn unsupported(msg: impl Into<String>) -> StoreError {
    StoreError::UnsupportedSearch(msg.into())
}

/// The SQL predicate for one filter on the `resources` row `alias` of a type in `scope`.
pub(crate) fn predicate(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    filter: &Filter,
    alias: &str,
    scope: &Scope,
) -> StoreResult<String> {
    match filter {
        Filter::Param {
            code,
            param_type,
            modifier,
            values,
        } => param_predicate(ctx, b, code, *param_type, modifier, values, alias, scope),
        Filter::Chain {
            reference_param,
            target_types,
            inner,
        } => {
            let pids = ctx.pids(scope, reference_param)?;
            if pids.is_empty() {
                return Ok(b.lit(false));
            }
            let (target_scope, target_tids) = if target_types.is_empty() {
                (Scope::All, None)
            } else {
                let mut tids = Vec::new();
                for t in target_types {
                    if let Some(tid) = ctx.type_id(t)? {
                        tids.push(tid);
                    }
                }
                if tids.is_empty() {
                    return Ok(b.lit(false));
                }
                (Scope::Types(tids.clone()), Some(tids))
            };
            let x = b.alias("x");
            let t = b.alias("t");
            let pid_list = b.int_list(&pids);
            let tid_cond = match target_tids {
                Some(tids) => format!(" AND {t}.tid IN {}", b.int_list(&tids)),
                None => String::new(),
            };
            let inner = predicate(ctx, b, inner, &t, &target_scope)?;
            let live = b.lit(false);
            let visible = super::access::visible(ctx, b, ctx.access, &t)?;
            if b.dialect.distributed() {
                // The targets live on other shards: find them first (each shard answers for
                // its own), then the references to them on every shard.
                let targets = format!(
                    "SELECT {t}.tid, {t}.id FROM resources {t} WHERE {t}.deleted = {live}\
                     {tid_cond} AND ({inner}) AND {visible}"
                );
                return Ok(b.dialect.member(
                    alias,
                    false,
                    &x,
                    &format!("idx_reference {x}"),
                    &format!(
                        "{x}.pid IN {pid_list} AND ({x}.target_tid, {x}.target_id) IN ({targets})"
                    ),
                ));
            }
            Ok(format!(
                "{alias}.rid IN (SELECT {x}.rid FROM idx_reference {x} \
                 JOIN resources {t} ON {t}.tid = {x}.target_tid AND {t}.id = {x}.target_id \
                 WHERE {x}.pid IN {pid_list}{tid_cond} AND {t}.deleted = {live} AND ({inner}) \
                 AND {visible})"
            ))
        }
        Filter::Has {
            source_type,
            reference_param,
            inner,
        } => {
            let Some(stid) = ctx.type_id(source_type)? else {
                return Ok(b.lit(false));
            };
            let source_scope = Scope::Types(vec![stid]);
            let pids = ctx.pids(&source_scope, reference_param)?;
            if pids.is_empty() {
                return Ok(b.lit(false));
            }
            let x = b.alias("x");
            let s = b.alias("s");
            let t = b.alias("t");
            let pid_list = b.int_list(&pids);
            let inner = predicate(ctx, b, inner, &s, &source_scope)?;
            let live = b.lit(false);
            let visible = super::access::visible(ctx, b, ctx.access, &s)?;
            if b.dialect.distributed() {
                // The referring resources live on other shards: the (type, id) pairs they
                // point at are found first, which (a key of `resources`) is the same as
                // matching the target's rid.
                let same = b.dialect.same_row(&s, &x);
                return Ok(format!(
                    "({alias}.tid, {alias}.id) IN (SELECT {x}.target_tid, {x}.target_id \
                     FROM idx_reference {x} JOIN resources {s} ON {same} \
                     WHERE {x}.pid IN {pid_list} AND {s}.deleted = {live} AND ({inner}) \
                     AND {visible})"
                ));
            }
            Ok(format!(
                "{alias}.rid IN (SELECT {t}.rid FROM idx_reference {x} \
                 JOIN resources {s} ON {s}.rid = {x}.rid \
                 JOIN resources {t} ON {t}.tid = {x}.target_tid AND {t}.id = {x}.target_id \
                 WHERE {x}.pid IN {pid_list} AND {s}.deleted = {live} AND ({inner}) \
                 AND {visible})"
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn param_predicate(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    code: &str,
    param_type: ParamType,
    modifier: &Modifier,
    values: &[SearchValue],
    alias: &str,
    scope: &Scope,
) -> StoreResult<String> {
    match code {
        "_id" => return id_predicate(b, modifier, values, alias),
        "_lastUpdated" => {
            let col = format!("{alias}.last_updated");
            return column_date_predicate(ctx, b, modifier, values, &col);
        }
        "_type" => return type_predicate(ctx, b, modifier, values, alias),
        _ => {}
    }
    if matches!(modifier, Modifier::In | Modifier::NotIn) {
        return Err(unsupported(format!(
            "the :in and :not-in modifiers ({code}) need terminology support"
        )));
    }
    if param_type == ParamType::Special {
        return Err(unsupported(format!(
            "search parameter {code} is not supported"
        )));
    }
    let composite = param_type == ParamType::Composite || *modifier == Modifier::OfType;
    if let Modifier::Missing(missing) = modifier {
        return missing_predicate(ctx, b, code, param_type, *missing, alias, scope);
    }
    if composite {
        let mut ors = Vec::new();
        for v in values {
            ors.push(composite_value(ctx, b, code, v, alias, scope)?);
        }
        return Ok(or_all(b, ors));
    }
    let table = table_of(param_type)?;
    let pids = ctx.pids(scope, code)?;
    let negated = *modifier == Modifier::Not;
    if pids.is_empty() {
        return Ok(b.lit(negated));
    }
    let x = b.alias("x");
    let pid_list = b.int_list(&pids);
    let mut ors = Vec::new();
    for v in values {
        ors.push(value_condition(ctx, b, param_type, modifier, v, &x)?);
    }
    let cond = or_all(b, ors);
    Ok(b.dialect.member(
        alias,
        negated,
        &x,
        &format!("{table} {x}"),
        &format!("{x}.pid IN {pid_list} AND ({cond})"),
    ))
}

fn or_all(b: &Sql, parts: Vec<String>) -> String {
    match parts.len() {
        0 => b.lit(false),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", parts.join(") OR (")),
    }
}

fn table_of(param_type: ParamType) -> StoreResult<&'static str> {
    Ok(match param_type {
        ParamType::String => "idx_string",
        ParamType::Token => "idx_token",
        ParamType::Date => "idx_date",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Reference => "idx_reference",
        ParamType::Uri => "idx_uri",
        ParamType::Composite | ParamType::Special => {
            return Err(unsupported(format!("{param_type:?} parameters here")))
        }
    })
}

/// The parameter type whose index table holds a component value.
fn value_type(v: &SearchValue) -> StoreResult<ParamType> {
    Ok(match v {
        SearchValue::String(_) => ParamType::String,
        SearchValue::Token { .. } => ParamType::Token,
        SearchValue::Date { .. } => ParamType::Date,
        SearchValue::Number { .. } => ParamType::Number,
        SearchValue::Quantity { .. } => ParamType::Quantity,
        SearchValue::Reference { .. } | SearchValue::ReferenceIdentifier { .. } => {
            ParamType::Reference
        }
        SearchValue::Uri(_) => ParamType::Uri,
        SearchValue::Composite(_) => return Err(unsupported("nested composite values")),
    })
}

fn missing_predicate(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    code: &str,
    param_type: ParamType,
    missing: bool,
    alias: &str,
    scope: &Scope,
) -> StoreResult<String> {
    let (tables, pids): (Vec<&str>, Vec<i64>) = if param_type == ParamType::Composite {
        // Component tables depend on the parameter; the first component is present exactly
        // when an occurrence is.
        (
            INDEX_TABLES.to_vec(),
            ctx.pids(scope, &format!("{code}#0"))?,
        )
    } else {
        (vec![table_of(param_type)?], ctx.pids(scope, code)?)
    };
    if pids.is_empty() {
        return Ok(b.lit(missing));
    }
    let pid_list = b.int_list(&pids);
    if b.dialect.distributed() {
        // One membership test per table: Citus runs each on every shard at once.
        let mut parts = Vec::new();
        for t in &tables {
            let x = b.alias("x");
            let cond = format!("{x}.pid IN {pid_list}");
            parts.push(
                b.dialect
                    .member(alias, missing, &x, &format!("{t} {x}"), &cond),
            );
        }
        let joined = parts.join(if missing { " AND " } else { " OR " });
        return Ok(format!("({joined})"));
    }
    let selects: Vec<String> = tables
        .iter()
        .map(|t| format!("SELECT rid FROM {t} WHERE pid IN {pid_list}"))
        .collect();
    Ok(format!(
        "{alias}.rid {}IN ({})",
        if missing { "NOT " } else { "" },
        selects.join(" UNION ALL ")
    ))
}

/// One composite value: all components on the same occurrence (`grp`).
fn composite_value(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    code: &str,
    value: &SearchValue,
    alias: &str,
    scope: &Scope,
) -> StoreResult<String> {
    let SearchValue::Composite(parts) = value else {
        return Err(unsupported(format!("a non-composite value for {code}")));
    };
    if parts.is_empty() {
        return Ok(b.lit(false));
    }
    let mut from = String::new();
    let mut conds = Vec::new();
    let mut first = String::new();
    for (i, part) in parts.iter().enumerate() {
        let pids = ctx.pids(scope, &format!("{code}#{i}"))?;
        if pids.is_empty() {
            return Ok(b.lit(false));
        }
        let ptype = value_type(part)?;
        let table = table_of(ptype)?;
        let c = b.alias("c");
        if i == 0 {
            from = format!("{table} {c}");
            first = c.clone();
        } else {
            from.push_str(&format!(
                " JOIN {table} {c} ON {} AND {c}.grp = {first}.grp",
                b.dialect.same_row(&c, &first)
            ));
        }
        let pid_list = b.int_list(&pids);
        conds.push(format!("{c}.pid IN {pid_list}"));
        conds.push(format!(
            "({})",
            value_condition(ctx, b, ptype, &Modifier::None, part, &c)?
        ));
    }
    Ok(b.dialect
        .member(alias, false, &first, &from, &conds.join(" AND ")))
}

/// The condition on one index row `x` for one searched value.
fn value_condition(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    param_type: ParamType,
    modifier: &Modifier,
    value: &SearchValue,
    x: &str,
) -> StoreResult<String> {
    let mismatch = || {
        unsupported(format!(
            "value {value:?} for a {param_type:?} parameter with modifier {modifier:?}"
        ))
    };
    match param_type {
        ParamType::String => {
            let SearchValue::String(s) = value else {
                return Err(mismatch());
            };
            string_condition(b, modifier, s, &format!("{x}.norm"), &format!("{x}.exact"))
        }
        ParamType::Token => match (modifier, value) {
            (Modifier::Text, SearchValue::String(s)) => {
                let n = normalize_string(s);
                let col = format!("{x}.text");
                Ok(prefix_condition(b, &col, &n))
            }
            (Modifier::None | Modifier::Not, SearchValue::Token { system, code }) => {
                let mut parts = Vec::new();
                if let Some(code) = code {
                    parts.push(format!("{x}.code = {}", b.arg(indexed(code))));
                }
                match system {
                    TokenSystem::Any => {}
                    TokenSystem::NoSystem => parts.push(format!("{x}.system IS NULL")),
                    TokenSystem::Is(s) => parts.push(format!("{x}.system = {}", b.arg(indexed(s)))),
                }
                Ok(and_all(b, parts))
            }
            (Modifier::Below | Modifier::Above, _) => {
                Err(unsupported("token :below/:above need terminology support"))
            }
            _ => Err(mismatch()),
        },
        ParamType::Date => {
            let SearchValue::Date { prefix, start, end } = value else {
                return Err(mismatch());
            };
            Ok(date_condition(
                ctx,
                b,
                *prefix,
                *start,
                *end,
                &format!("{x}.start"),
                &format!("{x}.\"end\""),
            ))
        }
        ParamType::Number => {
            let SearchValue::Number {
                prefix,
                value,
                low,
                high,
            } = value
            else {
                return Err(mismatch());
            };
            Ok(number_condition(
                b,
                *prefix,
                *value,
                *low,
                *high,
                &format!("{x}.value"),
            ))
        }
        ParamType::Quantity => {
            let SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            } = value
            else {
                return Err(mismatch());
            };
            let mut parts = vec![number_condition(
                b,
                *prefix,
                *value,
                *low,
                *high,
                &format!("{x}.value"),
            )];
            match (system, code) {
                (Some(s), Some(c)) => {
                    parts.push(format!("{x}.code = {}", b.arg(indexed(c))));
                    parts.push(format!("{x}.system = {}", b.arg(indexed(s))));
                }
                (None, Some(c)) => {
                    let code = b.arg(indexed(c));
                    let unit = b.arg(c.clone());
                    parts.push(format!("({x}.code = {code} OR {x}.unit = {unit})"));
                }
                (Some(s), None) => parts.push(format!("{x}.system = {}", b.arg(indexed(s)))),
                (None, None) => {}
            }
            Ok(and_all(b, parts))
        }
        ParamType::Reference => reference_condition(ctx, b, modifier, value, x),
        ParamType::Uri => {
            let SearchValue::Uri(u) = value else {
                return Err(mismatch());
            };
            uri_condition(b, modifier, u, &format!("{x}.uri"))
        }
        ParamType::Composite | ParamType::Special => Err(mismatch()),
    }
}

/// A searched value as the index holds it (cut like stored values; see
/// [`phip_fhir::search::index_text`]).
fn indexed(value: &str) -> String {
    index_text(value).to_owned()
}

fn and_all(b: &Sql, parts: Vec<String>) -> String {
    if parts.is_empty() {
        b.lit(true)
    } else {
        parts.join(" AND ")
    }
}

fn prefix_condition(b: &mut Sql, col: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        return format!("{col} IS NOT NULL");
    }
    let lo = b.arg(prefix.to_owned());
    let hi = b.arg(prefix_upper(prefix));
    format!("({col} >= {lo} AND {col} < {hi})")
}

fn string_condition(
    b: &mut Sql,
    modifier: &Modifier,
    s: &str,
    norm_col: &str,
    exact_col: &str,
) -> StoreResult<String> {
    match modifier {
        Modifier::None => Ok(prefix_condition(
            b,
            norm_col,
            index_text(&normalize_string(s)),
        )),
        Modifier::Exact => Ok(format!("{exact_col} = {}", b.arg(s.to_owned()))),
        Modifier::Contains => {
            let pattern = format!("%{}%", like_escape(index_text(&normalize_string(s))));
            Ok(format!("{norm_col} LIKE {} ESCAPE '\\'", b.arg(pattern)))
        }
        other => Err(unsupported(format!(
            "modifier {other:?} on a string parameter"
        ))),
    }
}

fn uri_condition(b: &mut Sql, modifier: &Modifier, u: &str, col: &str) -> StoreResult<String> {
    match modifier {
        Modifier::None => Ok(format!("{col} = {}", b.arg(indexed(u)))),
        Modifier::Below => Ok(prefix_condition(b, col, index_text(u))),
        Modifier::Above => {
            let p = b.arg(u.to_owned());
            Ok(format!(
                "({col} <> '' AND substr({p}, 1, length({col})) = {col})"
            ))
        }
        Modifier::Contains => {
            let pattern = format!("%{}%", like_escape(index_text(u)));
            Ok(format!("{col} LIKE {} ESCAPE '\\'", b.arg(pattern)))
        }
        other => Err(unsupported(format!(
            "modifier {other:?} on a uri parameter"
        ))),
    }
}

fn reference_condition(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    modifier: &Modifier,
    value: &SearchValue,
    x: &str,
) -> StoreResult<String> {
    let mut parts = Vec::new();
    match (modifier, value) {
        (Modifier::Identifier, SearchValue::ReferenceIdentifier { system, value }) => {
            if let Some(v) = value {
                parts.push(format!("{x}.id_value = {}", b.arg(v.clone())));
            } else {
                parts.push(format!("{x}.id_value IS NOT NULL"));
            }
            match system {
                TokenSystem::Any => {}
                TokenSystem::NoSystem => parts.push(format!("{x}.id_system IS NULL")),
                TokenSystem::Is(s) => parts.push(format!("{x}.id_system = {}", b.arg(s.clone()))),
            }
        }
        (
            Modifier::None | Modifier::Type(_) | Modifier::Below | Modifier::Above,
            SearchValue::Reference {
                target_type,
                target_id,
                url,
                version,
            },
        ) => {
            if let (Modifier::Below | Modifier::Above, Some(u)) = (modifier, url) {
                return uri_condition(b, modifier, u, &format!("{x}.url"));
            }
            let type_name = match modifier {
                Modifier::Type(t) => Some(t),
                _ => target_type.as_ref(),
            };
            match (url, target_id) {
                (Some(u), _) => parts.push(format!("{x}.url = {}", b.arg(indexed(u)))),
                (None, Some(id)) => {
                    parts.push(format!("{x}.target_id = {}", b.arg(id.clone())));
                    if let Some(t) = type_name {
                        let Some(tid) = ctx.type_id(t)? else {
                            return Ok(b.lit(false));
                        };
                        parts.push(format!("{x}.target_tid = {}", b.arg(tid)));
                    }
                }
                (None, None) => return Ok(b.lit(false)),
            }
            if let Some(v) = version {
                parts.push(format!("{x}.version = {}", b.arg(v.clone())));
            }
        }
        _ => {
            return Err(unsupported(format!(
                "reference value {value:?} with modifier {modifier:?}"
            )))
        }
    }
    Ok(and_all(b, parts))
}

/// Date prefixes on a resource range `[start_col, end_col]` against the searched range
/// `[start, end]`, per the R4 search page (§3.1.1.4.2).
pub(crate) fn date_condition(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    prefix: Prefix,
    start: i64,
    end: i64,
    start_col: &str,
    end_col: &str,
) -> String {
    let eq = |b: &mut Sql| {
        let s = b.arg(start);
        let e = b.arg(end);
        format!("({start_col} >= {s} AND {end_col} <= {e})")
    };
    match prefix {
        Prefix::Eq => eq(b),
        Prefix::Ne => format!("NOT {}", eq(b)),
        Prefix::Gt => format!("{end_col} > {}", b.arg(end)),
        Prefix::Lt => format!("{start_col} < {}", b.arg(start)),
        Prefix::Ge => {
            // Equivalent to `end > e OR (start >= s AND end <= e)` for stored ranges
            // (start <= end), but led by a range on `end` that an index can seek.
            let s = b.arg(start);
            let e = b.arg(end);
            format!("({end_col} >= {s} AND ({end_col} > {e} OR {start_col} >= {s}))")
        }
        Prefix::Le => {
            // Both branches imply `start <= end`; stating it gives the index a range.
            let s = b.arg(start);
            let e = b.arg(end);
            format!("({start_col} <= {e} AND ({start_col} < {s} OR {}))", eq(b))
        }
        Prefix::Sa => format!("{start_col} > {}", b.arg(end)),
        Prefix::Eb => format!("{end_col} < {}", b.arg(start)),
        Prefix::Ap => {
            // 10% of the distance between the value and now, as the spec suggests.
            let gap = (ctx.now_ms.saturating_sub(start)).unsigned_abs() / 10;
            let gap = i64::try_from(gap).unwrap_or(i64::MAX);
            let lo = b.arg(start.saturating_sub(gap));
            let hi = b.arg(end.saturating_add(gap));
            format!("({start_col} <= {hi} AND {end_col} >= {lo})")
        }
    }
}

/// Number prefixes on a stored value. `eq` honours the searched value's implicit precision
/// (`[low, high)`); the other comparisons use the value itself, as the spec says.
fn number_condition(
    b: &mut Sql,
    prefix: Prefix,
    value: f64,
    low: f64,
    high: f64,
    col: &str,
) -> String {
    let range = |b: &mut Sql| {
        let lo = b.arg(low);
        let hi = b.arg(high);
        format!("({col} >= {lo} AND {col} < {hi})")
    };
    match prefix {
        Prefix::Eq => range(b),
        Prefix::Ne => format!("NOT {}", range(b)),
        Prefix::Gt | Prefix::Sa => format!("{col} > {}", b.arg(value)),
        Prefix::Lt | Prefix::Eb => format!("{col} < {}", b.arg(value)),
        Prefix::Ge => format!("{col} >= {}", b.arg(value)),
        Prefix::Le => format!("{col} <= {}", b.arg(value)),
        Prefix::Ap => {
            let d = value.abs() * 0.1;
            let lo = b.arg(low.min(value - d));
            let hi = b.arg(high.max(value + d));
            format!("({col} >= {lo} AND {col} <= {hi})")
        }
    }
}

fn id_predicate(
    b: &mut Sql,
    modifier: &Modifier,
    values: &[SearchValue],
    alias: &str,
) -> StoreResult<String> {
    let negated = match modifier {
        Modifier::Missing(m) => return Ok(b.lit(!*m)),
        Modifier::None | Modifier::Exact => false,
        Modifier::Not => true,
        other => return Err(unsupported(format!("modifier {other:?} on _id"))),
    };
    let mut ids = Vec::new();
    for v in values {
        match v {
            SearchValue::Token { code: Some(c), .. } | SearchValue::String(c) => {
                ids.push(b.arg(c.clone()))
            }
            other => return Err(unsupported(format!("_id value {other:?}"))),
        }
    }
    if ids.is_empty() {
        return Ok(b.lit(negated));
    }
    Ok(format!(
        "{alias}.id {}IN ({})",
        if negated { "NOT " } else { "" },
        ids.join(", ")
    ))
}

fn column_date_predicate(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    modifier: &Modifier,
    values: &[SearchValue],
    col: &str,
) -> StoreResult<String> {
    match modifier {
        Modifier::Missing(m) => return Ok(b.lit(!*m)),
        Modifier::None => {}
        other => return Err(unsupported(format!("modifier {other:?} on _lastUpdated"))),
    }
    let mut ors = Vec::new();
    for v in values {
        let SearchValue::Date { prefix, start, end } = v else {
            return Err(unsupported(format!("_lastUpdated value {v:?}")));
        };
        ors.push(date_condition(ctx, b, *prefix, *start, *end, col, col));
    }
    Ok(or_all(b, ors))
}

fn type_predicate(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    modifier: &Modifier,
    values: &[SearchValue],
    alias: &str,
) -> StoreResult<String> {
    let negated = match modifier {
        Modifier::Missing(m) => return Ok(b.lit(!*m)),
        Modifier::None => false,
        Modifier::Not => true,
        other => return Err(unsupported(format!("modifier {other:?} on _type"))),
    };
    let mut tids = Vec::new();
    for v in values {
        let name = match v {
            SearchValue::Token { code: Some(c), .. } | SearchValue::String(c) => c,
            other => return Err(unsupported(format!("_type value {other:?}"))),
        };
        if let Some(tid) = ctx.type_id(name)? {
            tids.push(tid);
        }
    }
    if tids.is_empty() {
        return Ok(b.lit(negated));
    }
    Ok(format!(
        "{alias}.tid {}IN {}",
        if negated { "NOT " } else { "" },
        b.int_list(&tids)
    ))
}
