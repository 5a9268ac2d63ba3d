//! Search interactions and searchset bundles with paging links.

use chrono::Utc;
use phip_fhir::search::{query, SummaryMode, TotalMode};
use phip_store::{PageCursor, SearchRequest, StoredResource};
use serde_json::{json, Map, Value};

use phip_fhir::search::Filter;
use phip_security::scope::{Interaction, ScopeContext, TypeSet};

use crate::access::Principal;
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

/// A system-level search by a restricted caller must name its types with `_type`, each of
/// which must be searchable (which rows of them it sees is the store's visibility).
fn require_system_search(principal: &Principal, params: &[(String, String)]) -> FhirResult<()> {
    let Some(scopes) = &principal.scopes else {
        return Ok(());
    };
    let everything = [ScopeContext::System, ScopeContext::User]
        .into_iter()
        .any(|c| scopes.searchable_types(c) == TypeSet::All);
    let types: Vec<&str> = params
        .iter()
        .filter(|(name, _)| name == "_type")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    if types.is_empty() && everything {
        return Ok(());
    }
    if types.is_empty() {
        return Err(FhirError::new(
            403,
            phip_fhir::IssueType::Forbidden,
            "a system-level search with a restricted access token must name its resource types with _type",
        ));
    }
    for t in types {
        principal.require(t, Interaction::Search)?;
    }
    Ok(())
}

/// Chains and `_has` read other resource types: the caller must be allowed to search them,
/// so that a search cannot reveal what a direct search of those types would not.
fn require_filter_types(principal: &Principal, filter: &Filter) -> FhirResult<()> {
    match filter {
        Filter::Param { .. } => Ok(()),
        Filter::Chain {
            target_types,
            inner,
            ..
        } => {
            for t in target_types {
                principal.require(t, Interaction::Search)?;
            }
            require_filter_types(principal, inner)
        }
        Filter::Has {
            source_type, inner, ..
        } => {
            principal.require(source_type, Interaction::Search)?;
            require_filter_types(principal, inner)
        }
    }
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
        let principal = &ctx.principal;
        match resource_type {
            Some(rt) => {
                check_type(rt)?;
                principal.require(rt, Interaction::Search)?;
            }
            None => require_system_search(principal, params)?,
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
        let query_params = self.with_index_view(resource_type, &search_params)?;
        let parsed = query::parse(resource_type, &query_params, ctx.strict_handling)
            .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
        let mut search_query = parsed.query;
        for filter in &search_query.filters {
            require_filter_types(principal, filter)?;
        }
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
        // The store applies the caller's visibility inside the query, so the matches, the
        // total, the paging cursors, includes, chains and `_has` all see the same rows.
        let request = SearchRequest {
            query: search_query,
            cursor,
            page_size,
            access: principal.access(),
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

impl Engine {
    /// Patient searches see source records by default: the index's golden records would
    /// otherwise answer every identifier and name query a second time. `_master=true` asks for
    /// the golden records (one per person, the search resolved to the master record) instead,
    /// and an explicit `_tag` filter is left to mean what it says.
    fn with_index_view(
        &self,
        resource_type: Option<&str>,
        params: &[(String, String)],
    ) -> FhirResult<Vec<(String, String)>> {
        let master = params.iter().find(|(name, _)| name == MASTER_PARAM);
        if resource_type.is_none() && master.is_none() && self.config().mpi.enabled {
            // A system search may include Patients (`_type=Patient,…`): same default view.
            let mut out = params.to_vec();
            exclude_golden_records(None, &mut out);
            return Ok(out);
        }
        if resource_type != Some("Patient") || !self.config().mpi.enabled {
            if master.is_some() {
                return Err(FhirError::bad_request(
                    "_master applies to Patient searches with the patient index enabled",
                ));
            }
            return Ok(params.to_vec());
        }
        let golden = format!("{}|{}", crate::mpi::MPI_SYSTEM, crate::mpi::GOLDEN_TAG_CODE);
        let mut out: Vec<(String, String)> = params
            .iter()
            .filter(|(name, _)| name != MASTER_PARAM)
            .cloned()
            .collect();
        match master.map(|(_, v)| v.as_str()) {
            Some("true") => {
                out.push(("_tag".to_owned(), golden));
                out.push(("active".to_owned(), "true".to_owned()));
            }
            Some("false") | None => exclude_golden_records(Some("Patient"), &mut out),
            Some(other) => {
                return Err(FhirError::bad_request(format!(
                    "_master must be true or false, not {other:?}"
                )))
            }
        }
        Ok(out)
    }
}

/// Search parameter resolving Patient searches to golden records.
pub const MASTER_PARAM: &str = "_master";

/// Adds the filter that keeps the index's golden records out of a Patient query, unless the
/// query filters on tags itself. Conditional interactions use it too, so that
/// `PUT Patient?identifier=…` finds the institution's record, not the person's golden one.
pub(crate) fn exclude_golden_records(
    resource_type: Option<&str>,
    params: &mut Vec<(String, String)>,
) {
    if matches!(resource_type, Some("Patient") | None)
        && !params.iter().any(|(name, _)| name.starts_with("_tag"))
    {
        params.push((
            "_tag:not".to_owned(),
            format!("{}|{}", crate::mpi::MPI_SYSTEM, crate::mpi::GOLDEN_TAG_CODE),
        ));
    }
}
