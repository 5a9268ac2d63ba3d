//! Search interactions and searchset bundles with paging links.

use chrono::Utc;
use phip_fhir::search::{query, SummaryMode, TotalMode};
use phip_store::{PageCursor, SearchRequest, StoredResource};
use serde_json::{json, Map, Value};

use crate::interactions::check_type;
use crate::subset::apply_subset;
use crate::{resource_url, Engine, FhirError, FhirResponse, FhirResult, RequestContext};

/// The parameter carrying a paging cursor in `next`/`previous` links.
pub(crate) const CURSOR_PARAM: &str = "_cursor";

/// Encodes a URL query string from pairs.
pub(crate) fn encode_query(params: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// Decodes a `_cursor` value into a store page cursor.
pub(crate) fn decode_cursor(value: Option<&str>) -> FhirResult<PageCursor> {
    match value {
        None => Ok(PageCursor::First),
        Some(v) => match v.split_at_checked(1) {
            Some(("n", key)) if !key.is_empty() => Ok(PageCursor::After(key.to_owned())),
            Some(("p", key)) if !key.is_empty() => Ok(PageCursor::Before(key.to_owned())),
            _ => Err(FhirError::bad_request(
                "the paging link is invalid; start the search again",
            )),
        },
    }
}

/// A searchset entry for a stored resource.
pub(crate) fn entry(base: &str, stored: &StoredResource, resource: Value, mode: &str) -> Value {
    json!({
        "fullUrl": resource_url(base, &stored.resource_type, &stored.id),
        "resource": resource,
        "search": {"mode": mode}
    })
}

fn link(relation: &str, url: String) -> Value {
    json!({"relation": relation, "url": url})
}

/// Starts a Bundle of the given type with an id and `meta.lastUpdated`.
pub(crate) fn new_bundle(bundle_type: &str) -> Map<String, Value> {
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert(
        "meta".into(),
        json!({"lastUpdated": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
    );
    bundle.insert("type".into(), json!(bundle_type));
    bundle
}

impl Engine {
    /// `GET [base]/[type]?params`, `POST [base]/[type]/_search` and system search
    /// (`resource_type: None`).
    pub fn search(
        &self,
        ctx: &RequestContext,
        resource_type: Option<&str>,
        params: &[(String, String)],
    ) -> FhirResult<FhirResponse> {
        if let Some(rt) = resource_type {
            check_type(rt)?;
        }
        let cursor_value = params
            .iter()
            .find(|(name, _)| name == CURSOR_PARAM)
            .map(|(_, v)| v.as_str());
        let cursor = decode_cursor(cursor_value)?;
        let search_params: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name != CURSOR_PARAM)
            .cloned()
            .collect();
        let parsed = query::parse(resource_type, &search_params, ctx.strict_handling)
            .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
        let mut search_query = parsed.query;
        let summary = search_query.summary;
        let elements = search_query.elements.clone();
        if summary == SummaryMode::Count {
            search_query.total = TotalMode::Accurate;
        }
        let page_size = if summary == SummaryMode::Count {
            0
        } else {
            self.page_size(parsed.count)
        };
        let request = SearchRequest {
            query: search_query,
            cursor,
            page_size,
        };
        let mut tx = self.store().begin_read()?;
        let page = tx.search(&request)?;
        drop(tx);

        let base = &ctx.base_url;
        let path = match resource_type {
            Some(rt) => format!("{base}/{rt}"),
            None => base.clone(),
        };
        let self_query = encode_query(params);
        let mut links = vec![link("self", format!("{path}?{self_query}"))];
        let mut page_link = |relation: &str, cursor: String| {
            let mut with_cursor = search_params.clone();
            with_cursor.push((CURSOR_PARAM.to_owned(), cursor));
            links.push(link(
                relation,
                format!("{path}?{}", encode_query(&with_cursor)),
            ));
        };
        if let Some(next) = &page.next {
            page_link("next", format!("n{next}"));
        }
        if let Some(previous) = &page.previous {
            page_link("previous", format!("p{previous}"));
        }

        let mut bundle = new_bundle("searchset");
        if let Some(total) = page.total {
            bundle.insert("total".into(), json!(total));
        }
        bundle.insert("link".into(), Value::Array(links));
        let mut entries: Vec<Value> = Vec::with_capacity(page.matches.len() + page.included.len());
        for stored in &page.matches {
            if let Some(resource) = &stored.resource {
                let resource = apply_subset(resource.clone(), summary, elements.as_deref());
                entries.push(entry(base, stored, resource, "match"));
            }
        }
        for stored in &page.included {
            if let Some(resource) = &stored.resource {
                let resource = apply_subset(resource.clone(), summary, elements.as_deref());
                entries.push(entry(base, stored, resource, "include"));
            }
        }
        if !parsed.warnings.issues.is_empty() {
            entries.push(
                json!({"resource": parsed.warnings.to_json(), "search": {"mode": "outcome"}}),
            );
        }
        if !entries.is_empty() {
            bundle.insert("entry".into(), Value::Array(entries));
        }
        Ok(FhirResponse::with_body(200, Value::Object(bundle)))
    }
}
