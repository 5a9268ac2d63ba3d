//! The visibility predicate: the SQL form of `docs/security.md`'s rules, added to every
//! statement that reads rows for a caller (search matches and totals, chains, `_has`,
//! includes, history, the compartment, single reads).
//!
//! It reads the access labels each write stores (`phip_fhir::access::labels`): the
//! columns `holder_org`, `holder_division` and `access_class` of `resources`, the
//! `access_label` rows (kind [`PATIENT`]: compartment membership, kind [`PARTY`]:
//! organisations a workflow record is addressed to), the `consent_rule` rows of privacy
//! Consents, and for the patient index's golden records the `index_source` rows: the labels
//! of the source records each one links, kept beside it so that its visibility is decided
//! from its own rows (on Citus a golden record and its sources live on different shards).

use super::builder::Sql;
use super::filter::Ctx;
use crate::{Access, Sharing, StoreResult, TypeGrant, Visibility};

/// `access_label.kind` of compartment membership: the value is a Patient id.
pub(crate) const PATIENT: i64 = 1;
/// `access_label.kind` of a party: the value is an Organization id.
pub(crate) const PARTY: i64 = 2;

/// The condition under which the `resources` row `r` is visible to `access` (a constant
/// true for the server).
pub(crate) fn visible(ctx: &Ctx<'_>, b: &mut Sql, access: &Access, r: &str) -> StoreResult<String> {
    match access {
        Access::Server => Ok(b.lit(true)),
        Access::Caller(v) => caller_visible(ctx, b, v, r),
    }
}

fn caller_visible(ctx: &Ctx<'_>, b: &mut Sql, v: &Visibility, r: &str) -> StoreResult<String> {
    let mut alternatives = Vec::new();
    if let Some(types) = type_condition(ctx, b, &v.types, r)? {
        let class = match &v.sharing {
            // Breaking the glass sets the sharing rules aside, never the server's secrets.
            None => format!("{r}.access_class <> 2"),
            Some(sharing) => {
                let record = shared(b, sharing, r);
                let g = b.alias("src");
                let source = shared_source(b, sharing, &g, r);
                let denied = denied(b, sharing, r);
                let same = b.same_row(&g, r);
                format!(
                    "(({r}.access_class = 0 AND {record}) OR ({r}.access_class = 1 AND NOT {denied} \
                     AND EXISTS (SELECT 1 FROM index_source {g} WHERE {same} \
                     AND {g}.access_class = 0 AND {source})))"
                )
            }
        };
        alternatives.push(format!("({types} AND {class})"));
    }
    if !v.compartment.is_empty() {
        if let Some(types) = type_condition(ctx, b, &v.compartment_types, r)? {
            let a = b.alias("cl");
            let kind = b.arg(PATIENT);
            let patients: Vec<String> = v.compartment.iter().map(|p| b.arg(p.as_str())).collect();
            let same = b.same_row(&a, r);
            alternatives.push(format!(
                "({types} AND {r}.access_class <> 2 AND EXISTS (SELECT 1 FROM access_label {a} \
                 WHERE {same} AND {a}.kind = {kind} AND {a}.value IN ({})))",
                patients.join(", ")
            ));
        }
    }
    Ok(match alternatives.len() {
        0 => b.lit(false),
        1 => alternatives.remove(0),
        _ => format!("({})", alternatives.join(" OR ")),
    })
}

/// `r.tid IN (…)` for a type grant; `None` when the grant is empty (or names only types never
/// stored), `TRUE` for every type.
fn type_condition(
    ctx: &Ctx<'_>,
    b: &mut Sql,
    grant: &TypeGrant,
    r: &str,
) -> StoreResult<Option<String>> {
    match grant {
        TypeGrant::All => Ok(Some(b.lit(true))),
        TypeGrant::Only(names) => {
            let mut tids = Vec::new();
            for name in names {
                if let Some(tid) = ctx.type_id(name)? {
                    tids.push(tid);
                }
            }
            if tids.is_empty() {
                return Ok(None);
            }
            Ok(Some(format!("{r}.tid IN {}", b.int_list(&tids))))
        }
    }
}

/// A record is shared with the caller: its own organisation holds it, or no consent denies
/// it and the region, a party role or a consent allows it.
fn shared(b: &mut Sql, sharing: &Sharing, r: &str) -> String {
    let mut own = None;
    if let Some(org) = &sharing.organization {
        own = Some(format!("{r}.holder_org = {}", b.arg(org.as_str())));
    }
    let denied = denied(b, sharing, r);
    let allowed = match &sharing.division {
        // Not bound to a region: everything the consents leave.
        None => None,
        Some(division) => {
            let mut ways = vec![format!("{r}.holder_division IS NULL")];
            if let Some((lo, hi)) = phip_fhir::access::division_range(division) {
                ways.push(format!(
                    "({r}.holder_division >= {} AND {r}.holder_division < {})",
                    b.arg(lo),
                    b.arg(hi)
                ));
            }
            if let Some(org) = &sharing.organization {
                let a = b.alias("pl");
                ways.push(format!(
                    "EXISTS (SELECT 1 FROM access_label {a} WHERE {} \
                     AND {a}.kind = {} AND {a}.value = {})",
                    b.same_row(&a, r),
                    b.arg(PARTY),
                    b.arg(org.as_str())
                ));
            }
            ways.push(deciding_rule(b, sharing, r, true));
            Some(format!("({})", ways.join(" OR ")))
        }
    };
    let consented = match allowed {
        Some(allowed) => format!("(NOT {denied} AND {allowed})"),
        None => format!("NOT {denied}"),
    };
    match own {
        Some(own) => format!("({own} OR {consented})"),
        None => consented,
    }
}

/// The source record `g` (an `index_source` row of the golden record `r`: a Patient, see
/// `index_source` in the schema) is shared with the caller: [`shared`] for a Patient, whose
/// only compartment is its own and which is never addressed to a party.
fn shared_source(b: &mut Sql, sharing: &Sharing, g: &str, r: &str) -> String {
    let denied = source_rule(b, sharing, g, r, false);
    let allowed = sharing.division.as_ref().map(|division| {
        let mut ways = vec![format!("{g}.holder_division IS NULL")];
        if let Some((lo, hi)) = phip_fhir::access::division_range(division) {
            ways.push(format!(
                "({g}.holder_division >= {} AND {g}.holder_division < {})",
                b.arg(lo),
                b.arg(hi)
            ));
        }
        ways.push(source_rule(b, sharing, g, r, true));
        format!("({})", ways.join(" OR "))
    });
    let consented = match allowed {
        Some(allowed) => format!("(NOT {denied} AND {allowed})"),
        None => format!("NOT {denied}"),
    };
    match &sharing.organization {
        Some(org) => format!("({g}.holder_org = {} OR {consented})", b.arg(org.as_str())),
        None => consented,
    }
}

/// Some Consent of a patient of `r` denies it to the caller.
fn denied(b: &mut Sql, sharing: &Sharing, r: &str) -> String {
    deciding_rule(b, sharing, r, false)
}

/// Some Consent of a patient of `r` decides `permit` (true) or `deny` (false) for the caller:
/// an applicable rule of that effect with no applicable rule after it in the same Consent.
fn deciding_rule(b: &mut Sql, sharing: &Sharing, r: &str, permit: bool) -> String {
    let a = b.alias("ca");
    let d = b.alias("cd");
    let e = b.alias("ce");
    let kind = b.arg(PATIENT);
    let effect = b.arg(i64::from(permit));
    let applies_d = applicable(b, sharing, &d, r);
    let applies_e = applicable(b, sharing, &e, r);
    let same = b.same_row(&a, r);
    // `consent_rule` is a reference table on Citus (a copy on every node), so the join runs
    // on whichever shard holds `r`.
    format!(
        "EXISTS (SELECT 1 FROM access_label {a} JOIN consent_rule {d} ON {d}.patient_id = {a}.value \
         WHERE {same} AND {a}.kind = {kind} AND {d}.permit = {effect} AND {applies_d} \
         AND NOT EXISTS (SELECT 1 FROM consent_rule {e} WHERE {e}.consent_rid = {d}.consent_rid \
         AND {e}.node > {d}.node AND {applies_e}))"
    )
}

/// [`deciding_rule`] for the source record of the `index_source` row `g` of the golden record
/// `r` (a Patient, whose only compartment is its own). The rules are joined through `g`'s
/// row again rather than read alone: Citus refuses a correlated subquery over reference
/// tables alone that has subqueries of its own, and one with an outer join in a statement
/// with constant conditions, but runs this one on `g`'s shard.
fn source_rule(b: &mut Sql, sharing: &Sharing, g: &str, r: &str, permit: bool) -> String {
    let g2 = b.alias("sg");
    let d = b.alias("cd");
    let e = b.alias("ce");
    let effect = b.arg(i64::from(permit));
    let applies_d = applicable(b, sharing, &d, r);
    let applies_e = applicable(b, sharing, &e, r);
    let same = b.same_row(&g2, g);
    format!(
        "EXISTS (SELECT 1 FROM index_source {g2} JOIN consent_rule {d} \
         ON {d}.patient_id = {g2}.source_id \
         WHERE {same} AND {g2}.source_id = {g}.source_id AND {d}.permit = {effect} \
         AND {applies_d} \
         AND NOT EXISTS (SELECT 1 FROM consent_rule {e} WHERE {e}.consent_rid = {d}.consent_rid \
         AND {e}.node > {d}.node AND {applies_e}))"
    )
}

/// A consent rule `d` applies to the caller reading the row `r`: its actor, class and period.
fn applicable(b: &mut Sql, sharing: &Sharing, d: &str, r: &str) -> String {
    let actor = match &sharing.organization {
        Some(org) => format!("({d}.actor IS NULL OR {d}.actor = {})", b.arg(org.as_str())),
        None => format!("{d}.actor IS NULL"),
    };
    let now = b.arg(sharing.now_ms);
    format!(
        "{actor} AND ({d}.class_tid IS NULL OR {d}.class_tid = {r}.tid) \
         AND ({d}.start_ms IS NULL OR {d}.start_ms <= {now}) \
         AND ({d}.end_ms IS NULL OR {d}.end_ms >= {now})"
    )
}
