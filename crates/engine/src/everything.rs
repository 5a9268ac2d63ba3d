//! `Patient/[id]/$everything`: the patient's compartment, paged, with the resources it
//! references.
//!
//! R4 defines the answer as the patient's compartment "plus any resources referenced from
//! those": the practitioners, organisations, locations and medications a record names. Each page
//! holds a page of the compartment (search mode `match`, paged by the compartment cursor, so
//! paging is exactly that of the compartment) followed by the resources that page's records
//! reference and that are not in the compartment themselves (mode `include`), found with the
//! caller's access like any `_include`: a referenced record the caller may not see is left out.
//! A resource referenced from several pages comes with each of them. Other Patients are never
//! added: neither the patient index's golden record (`Patient.link`) nor a Patient another
//! record names (e.g. an Observation's `focus`); see docs/mpi.md.

use std::collections::{BTreeMap, BTreeSet};

use phip_fhir::search::{query, SummaryMode};
use phip_security::scope::Interaction;
use phip_store::{PageCursor, SearchRequest, StoredResource, Transaction};
use serde_json::{json, Value};

use crate::access::{Decision, Principal};
use crate::history::parse_instant;
use crate::interactions::{check_id, read_visible};
use crate::search::{encode_query, entry, new_bundle, CURSOR_PARAM};
use crate::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};

/// How many ids one look-up of referenced resources names (`_id=a,b,…`).
const IDS_PER_QUERY: usize = 100;

impl Engine {
    /// `GET [base]/Patient/[id]/$everything` with `_since`, `_type`, `_count` and paging.
    pub fn patient_everything(
        &self,
        ctx: &RequestContext,
        patient_id: &str,
        params: &[(String, String)],
    ) -> FhirResult<FhirResponse> {
        check_id(patient_id)?;
        let principal = &ctx.principal;
        principal.require("Patient", phip_security::scope::Interaction::Read)?;
        let mut since = None;
        let mut types: Option<Vec<String>> = None;
        let mut count = None;
        let mut cursor = None;
        for (name, value) in params {
            match name.as_str() {
                "_since" => since = Some(parse_instant(name, value)?),
                "_type" => {
                    let list: Vec<String> = value.split(',').map(|t| t.trim().to_owned()).collect();
                    for t in &list {
                        if !phip_fhir::r4().is_resource_type(t) {
                            return Err(FhirError::bad_request(format!(
                                "_type names an unknown resource type {t:?}"
                            )));
                        }
                    }
                    types.get_or_insert_with(Vec::new).extend(list);
                }
                "_count" => {
                    count = Some(value.parse::<usize>().map_err(|_| {
                        FhirError::bad_request(format!("_count={value:?} is not a number"))
                    })?)
                }
                CURSOR_PARAM => cursor = Some(value.clone()),
                "start" | "end" | "_format" | "_pretty" => {}
                other => {
                    if ctx.strict_handling {
                        return Err(FhirError::bad_request(format!(
                            "unknown $everything parameter {other:?}"
                        )));
                    }
                }
            }
        }
        let page_size = self.page_size(count);
        let mut tx = self.store().begin_read()?;
        read_visible(tx.as_mut(), principal, "Patient", patient_id)?;
        let (resources, next) = tx.patient_compartment(
            patient_id,
            types.as_deref(),
            since,
            page_size,
            cursor.as_deref(),
            &principal.access(),
        )?;
        let referenced = referenced_resources(
            tx.as_mut(),
            principal,
            &ctx.base_url,
            patient_id,
            &resources,
            types.as_deref(),
        )?;
        drop(tx);

        let base = &ctx.base_url;
        let path = format!("{base}/Patient/{patient_id}/$everything");
        let mut links =
            vec![json!({"relation": "self", "url": format!("{path}?{}", encode_query(params))})];
        if let Some(next) = next {
            let mut next_params: Vec<(String, String)> = params
                .iter()
                .filter(|(n, _)| n != CURSOR_PARAM)
                .cloned()
                .collect();
            next_params.push((CURSOR_PARAM.to_owned(), next));
            links.push(json!({"relation": "next", "url": format!("{path}?{}", encode_query(&next_params))}));
        }
        let mut bundle = new_bundle("searchset");
        bundle.insert("link".into(), Value::Array(links));
        let matched = resources.iter().map(|stored| (stored, "match"));
        let included = referenced.iter().map(|stored| (stored, "include"));
        let entries: Vec<Value> = matched
            .chain(included)
            .filter_map(|(stored, mode)| {
                stored.resource.as_ref().map(|resource| {
                    let resource =
                        crate::subset::apply_subset(resource.clone(), SummaryMode::False, None);
                    entry(base, stored, resource, mode)
                })
            })
            .collect();
        if !entries.is_empty() {
            bundle.insert("entry".into(), Value::Array(entries));
        }
        Ok(FhirResponse::with_body(200, Value::Object(bundle)))
    }
}

/// The resources `page` references that belong in `$everything` next to it: not Patients, not
/// on the page, of a type `_type` lets through, not in the patient's compartment (those come
/// as matches on their own page), and visible to the caller.
fn referenced_resources(
    tx: &mut dyn Transaction,
    principal: &Principal,
    base: &str,
    patient_id: &str,
    page: &[StoredResource],
    types: Option<&[String]>,
) -> FhirResult<Vec<StoredResource>> {
    let on_page: BTreeSet<(&str, &str)> = page
        .iter()
        .map(|stored| (stored.resource_type.as_str(), stored.id.as_str()))
        .collect();
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for resource in page.iter().filter_map(|stored| stored.resource.as_ref()) {
        let mut references = Vec::new();
        collect_references(resource, &mut references);
        for reference in references {
            let Some((ty, id)) = literal_target(base, reference) else {
                continue;
            };
            let allowed = ty != "Patient"
                && phip_fhir::r4().is_resource_type(ty)
                && check_id(id).is_ok()
                && !on_page.contains(&(ty, id))
                && types.is_none_or(|list| list.iter().any(|t| t == ty))
                && principal.decide(ty, Interaction::Read) != Decision::Denied;
            if allowed {
                wanted
                    .entry(ty.to_owned())
                    .or_default()
                    .insert(id.to_owned());
            }
        }
    }
    let mut found = Vec::new();
    for (ty, ids) in wanted {
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            // A search, so that the store applies the caller's visibility as it does to any
            // `_include`; a record the caller may not see is simply not among the rows.
            let params = vec![("_id".to_owned(), chunk.join(","))];
            let parsed = query::parse(Some(&ty), &params, true)
                .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
            let request = SearchRequest {
                query: parsed.query,
                cursor: PageCursor::First,
                page_size: chunk.len(),
                access: principal.access(),
            };
            found.extend(tx.search(&request)?.matches.into_iter().filter(|stored| {
                stored.resource.as_ref().is_some_and(|resource| {
                    !crate::access::patients_of(resource)
                        .iter()
                        .any(|p| p == patient_id)
                })
            }));
        }
    }
    Ok(found)
}

/// Every `reference` string of the resource's `Reference` elements.
fn collect_references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("reference", Value::String(text)) => out.push(text),
                    _ => collect_references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

/// The `(type, id)` a literal reference names on this server: `Type/id`, `Type/id/_history/v`
/// or the same under `base`. Contained (`#…`), placeholder, conditional and other servers'
/// references name nothing here.
fn literal_target<'a>(base: &str, reference: &'a str) -> Option<(&'a str, &'a str)> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.strip_prefix('/')?,
        None => reference,
    };
    if relative.contains(['?', '#', ':']) {
        return None;
    }
    let mut parts = relative.split('/');
    let (ty, id) = (parts.next()?, parts.next()?);
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => Some((ty, id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::literal_target;

    #[test]
    fn literal_targets_are_relative_or_under_this_servers_base() {
        let base = "https://hic.example.cn/fhir";
        assert_eq!(
            literal_target(base, "Practitioner/p1"),
            Some(("Practitioner", "p1"))
        );
        assert_eq!(
            literal_target(base, "Location/l1/_history/3"),
            Some(("Location", "l1"))
        );
        assert_eq!(
            literal_target(base, "https://hic.example.cn/fhir/Organization/o1"),
            Some(("Organization", "o1"))
        );
        for elsewhere in [
            "https://other.example.org/fhir/Organization/o1",
            "https://hic.example.cn/fhirx/Organization/o1",
            "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1",
            "#med",
            "Practitioner",
            "Practitioner/p1/extra",
        ] {
            assert_eq!(literal_target(base, elsewhere), None, "{elsewhere}");
        }
    }
}
