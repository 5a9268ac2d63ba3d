//! History interactions: instance, type and system.

use chrono::{DateTime, SecondsFormat, Utc};
use phip_store::{HistoryQuery, HistoryScope, StoredResource};
use serde_json::{json, Value};

use phip_security::scope::Interaction;

use crate::interactions::{check_id, check_type};
use crate::search::{encode_query, new_bundle, CURSOR_PARAM};
use crate::{resource_url, Engine, FhirError, FhirResponse, FhirResult, RequestContext};

/// Parses a FHIR instant or date given in `_since`/`_at`.
pub(crate) fn parse_instant(name: &str, value: &str) -> FhirResult<DateTime<Utc>> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Some((start, _)) = phip_fhir::search::parse_date_range(value) {
        if let Some(instant) = DateTime::<Utc>::from_timestamp_millis(start) {
            return Ok(instant);
        }
    }
    Err(FhirError::bad_request(format!(
        "{name}={value:?} is not a valid instant (expected e.g. 2024-01-31T10:00:00Z)"
    )))
}

/// A history bundle entry for one version.
fn history_entry(base: &str, stored: &StoredResource) -> Value {
    let url = format!("{}/{}", stored.resource_type, stored.id);
    let (method, status) = if stored.is_deleted() {
        ("DELETE", "204 No Content")
    } else if stored.version_id == 1 {
        ("POST", "201 Created")
    } else {
        ("PUT", "200 OK")
    };
    let mut entry = json!({
        "fullUrl": resource_url(base, &stored.resource_type, &stored.id),
        "request": {"method": method, "url": if method == "POST" { stored.resource_type.clone() } else { url }},
        "response": {
            "status": status,
            "etag": format!("W/\"{}\"", stored.version_id),
            "lastModified": stored.last_updated.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    });
    if let Some(resource) = &stored.resource {
        entry["resource"] = resource.clone();
    }
    entry
}

impl Engine {
    /// `GET [base]/[type]/[id]/_history`, `GET [base]/[type]/_history`, `GET [base]/_history`.
    pub fn history(
        &self,
        ctx: &RequestContext,
        resource_type: Option<&str>,
        id: Option<&str>,
        params: &[(String, String)],
    ) -> FhirResult<FhirResponse> {
        let principal = &ctx.principal;
        let scope = match (resource_type, id) {
            (Some(rt), Some(id)) => {
                check_type(rt)?;
                check_id(id)?;
                principal.require(rt, Interaction::Read)?;
                HistoryScope::Instance {
                    resource_type: rt.to_owned(),
                    id: id.to_owned(),
                }
            }
            (Some(rt), None) => {
                check_type(rt)?;
                principal.require(rt, Interaction::Read)?;
                HistoryScope::Type(rt.to_owned())
            }
            _ => HistoryScope::System,
        };
        let mut since = None;
        let mut before = None;
        let mut count = None;
        let mut cursor = None;
        for (name, value) in params {
            match name.as_str() {
                "_since" => since = Some(parse_instant(name, value)?),
                "_at" => before = Some(parse_instant(name, value)?),
                "_count" => {
                    count = Some(value.parse::<usize>().map_err(|_| {
                        FhirError::bad_request(format!("_count={value:?} is not a number"))
                    })?)
                }
                CURSOR_PARAM => cursor = Some(value.clone()),
                "_format" | "_pretty" | "_summary" | "_elements" => {}
                other => {
                    if ctx.strict_handling {
                        return Err(FhirError::bad_request(format!(
                            "unknown history parameter {other:?}"
                        )));
                    }
                }
            }
        }
        let query = HistoryQuery {
            scope: scope.clone(),
            since,
            before,
            count: self.page_size(count),
            cursor,
            access: principal.access(),
        };
        let mut tx = self.store().begin_read()?;
        if let HistoryScope::Instance { resource_type, id } = &scope {
            if !principal.can_see(tx.as_mut(), resource_type, id)? {
                return Err(crate::access::not_found(resource_type, id));
            }
        }
        let page = tx.history(&query)?;
        drop(tx);

        let base = &ctx.base_url;
        let path = match (resource_type, id) {
            (Some(rt), Some(id)) => format!("{base}/{rt}/{id}/_history"),
            (Some(rt), None) => format!("{base}/{rt}/_history"),
            _ => format!("{base}/_history"),
        };
        let mut links =
            vec![json!({"relation": "self", "url": format!("{path}?{}", encode_query(params))})];
        if let Some(next) = &page.next_cursor {
            let mut next_params: Vec<(String, String)> = params
                .iter()
                .filter(|(n, _)| n != CURSOR_PARAM)
                .cloned()
                .collect();
            next_params.push((CURSOR_PARAM.to_owned(), next.clone()));
            links.push(json!({"relation": "next", "url": format!("{path}?{}", encode_query(&next_params))}));
        }
        let mut bundle = new_bundle("history");
        bundle.insert("total".into(), json!(page.total));
        bundle.insert("link".into(), Value::Array(links));
        let entries: Vec<Value> = page
            .versions
            .iter()
            .map(|stored| history_entry(base, stored))
            .collect();
        if !entries.is_empty() {
            bundle.insert("entry".into(), Value::Array(entries));
        }
        Ok(FhirResponse::with_body(200, Value::Object(bundle)))
    }
}
