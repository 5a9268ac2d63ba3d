//! `Patient/[id]/$everything`: the patient's compartment, paged.

use phip_fhir::search::SummaryMode;
use serde_json::{json, Value};

use crate::history::parse_instant;
use crate::interactions::{check_id, read_visible};
use crate::search::{encode_query, entry, new_bundle, CURSOR_PARAM};
use crate::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};

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
        let entries: Vec<Value> = resources
            .iter()
            .filter_map(|stored| {
                stored.resource.as_ref().map(|resource| {
                    let resource =
                        crate::subset::apply_subset(resource.clone(), SummaryMode::False, None);
                    entry(base, stored, resource, "match")
                })
            })
            .collect();
        if !entries.is_empty() {
            bundle.insert("entry".into(), Value::Array(entries));
        }
        Ok(FhirResponse::with_body(200, Value::Object(bundle)))
    }
}
