//! Transaction and batch bundles.
//!
//! A transaction runs in one store transaction: every entry succeeds or nothing is stored.
//! Entries are processed in the order the specification prescribes (DELETE, POST, PUT/PATCH,
//! GET/HEAD) after ids have been assigned and `urn:uuid:` and conditional references resolved,
//! so that entries can refer to each other regardless of their order in the bundle.

use chrono::SecondsFormat;
use phip_fhir::IssueType;
use phip_store::Transaction;
use serde_json::{json, Value};

use crate::access::Principal;
use crate::interactions::{
    conditional_delete_in, conditional_update_in, create_in, delete_in, match_condition, new_id,
    parse_version_tag, patch_in, update_in, WriteOutcome,
};
use crate::reference::{is_conditional_reference, rewrite_references, IdMap};
use crate::search::new_bundle;
use crate::{
    parse_query_string, version_url, Engine, FhirError, FhirResponse, FhirResult, RequestContext,
    ReturnPreference,
};

/// HTTP verbs allowed in bundle entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// Processing rank in a transaction.
    fn rank(self) -> u8 {
        match self {
            Self::Delete => 0,
            Self::Post => 1,
            Self::Put | Self::Patch => 2,
            Self::Get | Self::Head => 3,
        }
    }
}

/// What an entry's `request.url` designates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `Type` (create, search without params).
    Type(String),
    /// `Type/id`.
    Instance(String, String),
    /// `Type/id/_history/vid`.
    Version(String, String, String),
    /// `Type?criteria`.
    Conditional(String, String),
    /// Anything else GET may address (`Type/_history`, `Patient/1/$everything`, `metadata`…).
    Other(String),
}

/// One parsed entry.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    method: Method,
    url: String,
    target: Target,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<u64>,
}

fn entry_error(index: usize, err: FhirError) -> FhirError {
    let mut outcome = err.outcome;
    for issue in &mut outcome.issues {
        issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
        for expression in &mut issue.expression {
            *expression = format!("Bundle.entry[{index}].resource.{expression}");
        }
    }
    FhirError::from_outcome(err.status, outcome)
}

fn parse_target(base: &str, url: &str) -> Target {
    let relative = url
        .strip_prefix(base)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or(url)
        .trim_start_matches('/');
    if let Some((path, query)) = relative.split_once('?') {
        if !path.contains('/') && !path.is_empty() && !path.starts_with('_') {
            return Target::Conditional(path.to_owned(), query.to_owned());
        }
        return Target::Other(relative.to_owned());
    }
    let parts: Vec<&str> = relative.split('/').collect();
    match parts.as_slice() {
        [ty] if !ty.is_empty()
            && !ty.starts_with('_')
            && !ty.starts_with('$')
            && *ty != "metadata" =>
        {
            Target::Type((*ty).to_owned())
        }
        [ty, id] if !id.starts_with('_') && !id.starts_with('$') => {
            Target::Instance((*ty).to_owned(), (*id).to_owned())
        }
        [ty, id, "_history", vid] => {
            Target::Version((*ty).to_owned(), (*id).to_owned(), (*vid).to_owned())
        }
        _ => Target::Other(relative.to_owned()),
    }
}

fn parse_entries(ctx: &RequestContext, bundle: &Value, max: usize) -> FhirResult<Vec<Entry>> {
    let entries = match bundle.get("entry") {
        None => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(FhirError::bad_request("Bundle.entry must be an array")),
    };
    if entries.len() > max {
        return Err(FhirError::new(
            413,
            IssueType::TooCostly,
            format!(
                "the bundle has {} entries; at most {max} are accepted in one request",
                entries.len()
            ),
        ));
    }
    let mut parsed = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let request = entry.get("request").ok_or_else(|| {
            FhirError::bad_request(format!("Bundle.entry[{index}] has no request element"))
        })?;
        let method_text = request.get("method").and_then(Value::as_str).unwrap_or("");
        let method = Method::parse(method_text).ok_or_else(|| {
            FhirError::bad_request(format!(
                "Bundle.entry[{index}].request.method {method_text:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE"
            ))
        })?;
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                FhirError::bad_request(format!("Bundle.entry[{index}].request.url is missing"))
            })?
            .to_owned();
        let if_match = request
            .get("ifMatch")
            .and_then(Value::as_str)
            .map(parse_version_tag)
            .transpose()
            .map_err(|e| entry_error(index, e))?;
        let resource = entry.get("resource").cloned();
        if matches!(method, Method::Post | Method::Put | Method::Patch) && resource.is_none() {
            return Err(FhirError::bad_request(format!(
                "Bundle.entry[{index}] ({method_text} {url}) has no resource"
            )));
        }
        parsed.push(Entry {
            index,
            method,
            target: parse_target(&ctx.base_url, &url),
            url,
            full_url: entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource,
            if_none_exist: request
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .map(str::to_owned),
            if_match,
        });
    }
    Ok(parsed)
}

/// The response part of a transaction-response or batch-response entry.
fn response_entry(ctx: &RequestContext, outcome: &WriteOutcome, status_text: &str) -> Value {
    let mut response = json!({"status": status_text});
    let mut entry = json!({});
    if let Some(stored) = &outcome.stored {
        response["location"] = json!(version_url(&ctx.base_url, stored));
        response["etag"] = json!(format!("W/\"{}\"", stored.version_id));
        response["lastModified"] = json!(stored
            .last_updated
            .to_rfc3339_opts(SecondsFormat::Millis, true));
        entry["fullUrl"] = json!(format!(
            "{}/{}/{}",
            ctx.base_url, stored.resource_type, stored.id
        ));
        if ctx.return_preference == Some(ReturnPreference::Representation) {
            if let Some(resource) = &stored.resource {
                entry["resource"] = resource.clone();
            }
        }
    }
    entry["response"] = response;
    entry
}

fn status_text(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        422 => "Unprocessable Entity",
        _ => "",
    };
    format!("{status} {reason}").trim_end().to_owned()
}

impl Engine {
    /// `POST [base]` with a `transaction` or `batch` Bundle.
    pub fn process_bundle(&self, ctx: &RequestContext, bundle: Value) -> FhirResult<FhirResponse> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(FhirError::bad_request(
                "POST to the base URL takes a Bundle of type transaction or batch",
            ));
        }
        match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") if crate::documents::is_provide_bundle(&bundle) => {
                self.provide_document_bundle(ctx, bundle)
            }
            Some("transaction") => self.transaction(ctx, &bundle),
            Some("batch") => self.batch(ctx, &bundle),
            other => Err(FhirError::bad_request(format!(
                "POST to the base URL takes a transaction or batch Bundle, not {:?}",
                other.unwrap_or("(no type)")
            ))),
        }
    }

    pub(crate) fn transaction(
        &self,
        ctx: &RequestContext,
        bundle: &Value,
    ) -> FhirResult<FhirResponse> {
        let mut entries = parse_entries(ctx, bundle, self.config().max_bundle_entries)?;
        let mut responses: Vec<Option<Value>> = vec![None; entries.len()];
        let mut gets = Vec::new();
        {
            let mut tx = self.begin_write(&ctx.principal)?;
            let ids = self.assign_ids(tx.as_mut(), &ctx.principal, &mut entries)?;
            self.resolve_references(tx.as_mut(), &ctx.principal, &mut entries, &ids)?;
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by_key(|&i| entries[i].method.rank());
            for i in order {
                let entry = &mut entries[i];
                if matches!(entry.method, Method::Get | Method::Head) {
                    gets.push(i);
                    continue;
                }
                let index = entry.index;
                let (outcome, text) = execute_write(tx.as_mut(), &ctx.principal, entry)
                    .map_err(|e| entry_error(index, e))?;
                responses[index] = Some(response_entry(ctx, &outcome, &text));
            }
            tx.commit()?;
        }
        // GETs run after the writes, as the specification orders them, against the
        // committed state.
        for i in gets {
            let entry = &entries[i];
            let response = self.execute_read(ctx, entry);
            responses[entry.index] = Some(match response {
                Ok(r) => read_response_entry(&r),
                Err(e) => return Err(entry_error(entry.index, e)),
            });
        }
        let mut result = new_bundle("transaction-response");
        result.insert(
            "entry".into(),
            Value::Array(
                responses
                    .into_iter()
                    .map(|r| r.unwrap_or(json!({})))
                    .collect(),
            ),
        );
        Ok(FhirResponse::with_body(200, Value::Object(result)))
    }

    /// Assigns the final id of every entry that creates or conditionally updates, so that
    /// references between entries can be rewritten before anything is written.
    fn assign_ids(
        &self,
        tx: &mut dyn Transaction,
        principal: &Principal,
        entries: &mut [Entry],
    ) -> FhirResult<IdMap> {
        let mut ids = IdMap::new();
        for entry in entries.iter_mut() {
            let index = entry.index;
            let resource_type = entry
                .resource
                .as_ref()
                .and_then(|r| r.get("resourceType"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let final_ref = match (&entry.method, &entry.target) {
                (Method::Post, Target::Type(ty)) => {
                    let mut existing = None;
                    if let Some(criteria) = &entry.if_none_exist {
                        let matches = match_condition(tx, principal, ty, criteria)
                            .map_err(|e| entry_error(index, e))?;
                        if matches.len() > 1 {
                            return Err(entry_error(
                                index,
                                FhirError::new(
                                    412,
                                    IssueType::MultipleMatches,
                                    format!(
                                        "ifNoneExist {criteria:?} matches more than one resource"
                                    ),
                                ),
                            ));
                        }
                        existing = matches.into_iter().next().map(|m| m.id);
                    }
                    let id = match existing {
                        Some(id) => id,
                        None => {
                            let id = new_id();
                            // Carry the assigned id to the create itself.
                            if let Some(resource) =
                                entry.resource.as_mut().and_then(Value::as_object_mut)
                            {
                                resource.insert("id".into(), json!(id));
                            }
                            id
                        }
                    };
                    Some(format!("{ty}/{id}"))
                }
                (Method::Put, Target::Conditional(ty, criteria)) => {
                    let matches = match_condition(tx, principal, ty, criteria)
                        .map_err(|e| entry_error(index, e))?;
                    match matches.len() {
                        0 => {
                            let id = entry
                                .resource
                                .as_ref()
                                .and_then(|r| r.get("id"))
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .unwrap_or_else(new_id);
                            if let Some(resource) = entry.resource.as_mut().and_then(Value::as_object_mut) {
                                resource.insert("id".into(), json!(id));
                            }
                            Some(format!("{ty}/{id}"))
                        }
                        1 => Some(format!("{ty}/{}", matches[0].id)),
                        _ => {
                            return Err(entry_error(
                                index,
                                FhirError::new(
                                    412,
                                    IssueType::MultipleMatches,
                                    format!("conditional update {criteria:?} matches more than one resource"),
                                ),
                            ))
                        }
                    }
                }
                (Method::Put | Method::Patch, Target::Instance(ty, id)) => {
                    Some(format!("{ty}/{id}"))
                }
                _ => None,
            };
            if let (Some(full_url), Some(final_ref)) = (&entry.full_url, final_ref) {
                if let Some(rt) = &resource_type {
                    if !final_ref.starts_with(&format!("{rt}/")) {
                        return Err(entry_error(
                            index,
                            FhirError::bad_request(format!(
                                "the resource type {rt:?} does not match the request URL {:?}",
                                entry.url
                            )),
                        ));
                    }
                }
                if ids.insert(full_url.clone(), final_ref).is_some() {
                    return Err(entry_error(
                        index,
                        FhirError::bad_request(format!(
                            "fullUrl {full_url:?} appears more than once"
                        )),
                    ));
                }
            }
        }
        Ok(ids)
    }

    /// Rewrites `urn:uuid:` references to the assigned ids and resolves conditional references.
    fn resolve_references(
        &self,
        tx: &mut dyn Transaction,
        principal: &Principal,
        entries: &mut [Entry],
        ids: &IdMap,
    ) -> FhirResult<()> {
        let mut conditional_cache = ConditionalCache::new();
        for entry in entries.iter_mut() {
            let index = entry.index;
            if let Target::Conditional(_, criteria) = &mut entry.target {
                // Conditional URLs may name placeholders too (e.g. `patient=urn:uuid:…`).
                for (placeholder, target) in ids {
                    if criteria.contains(placeholder.as_str()) {
                        *criteria = criteria.replace(placeholder.as_str(), target);
                    }
                }
            }
            let Some(resource) = entry.resource.as_mut() else {
                continue;
            };
            let mut rewrite = |text: &str, is_reference: bool| -> FhirResult<Option<String>> {
                if let Some(target) = ids.get(text) {
                    return Ok(Some(target.clone()));
                }
                if is_reference && text.starts_with("urn:uuid:") {
                    return Err(FhirError::bad_request(format!(
                        "the reference {text:?} matches no fullUrl in the transaction"
                    )));
                }
                if is_reference && is_conditional_reference(text) {
                    return resolve_conditional(tx, principal, text, &mut conditional_cache)
                        .map(Some);
                }
                Ok(None)
            };
            rewrite_references(resource, &mut rewrite).map_err(|e| entry_error(index, e))?;
        }
        Ok(())
    }

    fn batch(&self, ctx: &RequestContext, bundle: &Value) -> FhirResult<FhirResponse> {
        let entries = parse_entries(ctx, bundle, self.config().max_bundle_entries)?;
        let mut responses = Vec::with_capacity(entries.len());
        for mut entry in entries {
            let result = if matches!(entry.method, Method::Get | Method::Head) {
                self.execute_read(ctx, &entry)
                    .map(|r| read_response_entry(&r))
            } else {
                self.execute_batch_write(ctx, &mut entry)
            };
            responses.push(match result {
                Ok(value) => value,
                Err(err) => json!({
                    "response": {
                        "status": status_text(err.status),
                        "outcome": err.outcome.to_json(),
                    }
                }),
            });
        }
        let mut result = new_bundle("batch-response");
        result.insert("entry".into(), Value::Array(responses));
        Ok(FhirResponse::with_body(200, Value::Object(result)))
    }

    fn execute_batch_write(&self, ctx: &RequestContext, entry: &mut Entry) -> FhirResult<Value> {
        if let Some(resource) = &mut entry.resource {
            let mut check = |text: &str, is_reference: bool| -> FhirResult<Option<String>> {
                if is_reference && (text.starts_with("urn:uuid:") || is_conditional_reference(text))
                {
                    return Err(FhirError::bad_request(format!(
                        "batch entries are independent: the reference {text:?} cannot be resolved (use a transaction)"
                    )));
                }
                Ok(None)
            };
            rewrite_references(resource, &mut check)?;
            // A create names no id: the server assigns a new one, as REST create and a
            // transaction POST do, whatever id the body carries.
            if let (Method::Post, Target::Type(_)) = (entry.method, &entry.target) {
                if let Some(object) = resource.as_object_mut() {
                    object.insert("id".into(), json!(new_id()));
                }
            }
        }
        let mut tx = self.begin_write(&ctx.principal)?;
        let (outcome, text) = execute_write(tx.as_mut(), &ctx.principal, entry)?;
        tx.commit()?;
        Ok(response_entry(ctx, &outcome, &text))
    }

    fn execute_read(&self, ctx: &RequestContext, entry: &Entry) -> FhirResult<FhirResponse> {
        match &entry.target {
            Target::Instance(ty, id) => self.read(ctx, ty, id),
            Target::Version(ty, id, vid) => self.vread(ctx, ty, id, vid),
            Target::Type(ty) => self.search(ctx, Some(ty), &[]),
            Target::Conditional(ty, query) => {
                self.search(ctx, Some(ty), &parse_query_string(query))
            }
            Target::Other(path) => {
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                let params = parse_query_string(query);
                let parts: Vec<&str> = path.split('/').collect();
                match parts.as_slice() {
                    ["metadata"] => Ok(FhirResponse::with_body(
                        200,
                        self.capability_statement(&ctx.base_url),
                    )),
                    ["_history"] => self.history(ctx, None, None, &params),
                    [ty, "_history"] => self.history(ctx, Some(ty), None, &params),
                    [ty, id, "_history"] => self.history(ctx, Some(ty), Some(id), &params),
                    ["Patient", id, "$everything"] => self.patient_everything(ctx, id, &params),
                    [""] | [] => self.search(ctx, None, &params),
                    _ => Err(FhirError::bad_request(format!(
                        "the bundle entry URL {:?} is not supported",
                        entry.url
                    ))),
                }
            }
        }
    }
}

/// Conditional references already resolved (`Type?query` → `Type/id`).
pub type ConditionalCache = std::collections::HashMap<String, String>;

/// Resolves one conditional reference (`Type?query`) to `Type/id` by searching as `principal`:
/// exactly one match, or 412 (none, or several), as in a transaction.
fn resolve_conditional(
    tx: &mut dyn Transaction,
    principal: &Principal,
    text: &str,
    cache: &mut ConditionalCache,
) -> FhirResult<String> {
    if let Some(found) = cache.get(text) {
        return Ok(found.clone());
    }
    let (ty, criteria) = text.split_once('?').unwrap_or((text, ""));
    if !phip_fhir::r4().is_resource_type(ty) {
        return Err(FhirError::bad_request(format!(
            "the conditional reference {text:?} names an unknown resource type"
        )));
    }
    let matches = match_condition(tx, principal, ty, criteria)?;
    match matches.len() {
        1 => {
            let resolved = format!("{ty}/{}", matches[0].id);
            cache.insert(text.to_owned(), resolved.clone());
            Ok(resolved)
        }
        0 => Err(FhirError::new(
            412,
            IssueType::NotFound,
            format!("the conditional reference {text:?} matches no resource"),
        )),
        _ => Err(FhirError::new(
            412,
            IssueType::MultipleMatches,
            format!("the conditional reference {text:?} matches more than one resource"),
        )),
    }
}

impl Engine {
    /// Replaces every conditional reference (`Type?query`) in `resource` by the `Type/id` it
    /// designates, searching as `principal` in the committed state, the way a transaction
    /// resolves them: one match, or 412 naming the reference that matches none or several
    /// (the resource is then left partly rewritten: it should not be stored, but may be passed
    /// again once what it names exists). `cache` keeps
    /// resolutions across calls, for loaders that write many resources naming the same few
    /// practitioners and organisations (`phip import`).
    pub fn resolve_conditional_references(
        &self,
        principal: &Principal,
        resource: &mut Value,
        cache: &mut ConditionalCache,
    ) -> FhirResult<()> {
        // What the cache knows needs no store transaction; most resources of a load name the
        // same few practitioners and organisations, or none at all.
        let mut pending = false;
        let mut from_cache = |text: &str, is_reference: bool| -> FhirResult<Option<String>> {
            if is_reference && is_conditional_reference(text) {
                match cache.get(text) {
                    Some(found) => return Ok(Some(found.clone())),
                    None => pending = true,
                }
            }
            Ok(None)
        };
        rewrite_references(resource, &mut from_cache)?;
        if !pending {
            return Ok(());
        }
        let mut tx = self.store().begin_read()?;
        let mut rewrite = |text: &str, is_reference: bool| -> FhirResult<Option<String>> {
            if is_reference && is_conditional_reference(text) {
                return resolve_conditional(tx.as_mut(), principal, text, cache).map(Some);
            }
            Ok(None)
        };
        rewrite_references(resource, &mut rewrite)
    }
}

fn read_response_entry(response: &FhirResponse) -> Value {
    let mut entry = json!({"response": {"status": status_text(response.status)}});
    if let Some(etag) = response.etag() {
        entry["response"]["etag"] = json!(etag);
    }
    if let Some(body) = &response.body {
        entry["resource"] = body.clone();
    }
    entry
}

/// Executes one write entry inside an open transaction.
fn execute_write(
    tx: &mut dyn Transaction,
    principal: &Principal,
    entry: &mut Entry,
) -> FhirResult<(WriteOutcome, String)> {
    let resource = entry.resource.take();
    let outcome = match (entry.method, &entry.target, resource) {
        (Method::Post, Target::Type(ty), Some(resource)) => {
            let assigned = resource
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            // The id was assigned (or an existing match found) in the identification pass.
            match &entry.if_none_exist {
                Some(criteria) => create_in(tx, principal, ty, resource, Some(criteria), assigned)?,
                None => create_in(tx, principal, ty, resource, None, assigned)?,
            }
        }
        (Method::Put, Target::Instance(ty, id), Some(resource)) => {
            update_in(tx, principal, ty, id, resource, entry.if_match)?
        }
        (Method::Put, Target::Conditional(ty, criteria), Some(resource)) => {
            let assigned = resource
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            conditional_update_in(
                tx,
                principal,
                ty,
                criteria,
                resource,
                entry.if_match,
                assigned,
            )?
        }
        (Method::Patch, Target::Instance(ty, id), Some(patch)) => {
            let patch = binary_patch_body(&patch)?;
            patch_in(tx, principal, ty, id, &patch, entry.if_match)?
        }
        (Method::Delete, Target::Instance(ty, id), _) => {
            delete_in(tx, principal, ty, id, entry.if_match)?
        }
        (Method::Delete, Target::Conditional(ty, criteria), _) => {
            conditional_delete_in(tx, principal, ty, criteria)?.0
        }
        _ => {
            return Err(FhirError::bad_request(format!(
                "{:?} {:?} is not a supported bundle entry",
                entry.method, entry.url
            )))
        }
    };
    let status = if outcome.status == 204 {
        204
    } else {
        outcome.status
    };
    Ok((outcome, status_text(status)))
}

/// A PATCH entry carries its JSON Patch as a `Binary` resource (base64 `data`), per the
/// specification; a bare JSON array is also accepted.
fn binary_patch_body(resource: &Value) -> FhirResult<Value> {
    if resource.is_array() {
        return Ok(resource.clone());
    }
    if resource.get("resourceType").and_then(Value::as_str) == Some("Binary") {
        let data = resource.get("data").and_then(Value::as_str).unwrap_or("");
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| FhirError::bad_request("the PATCH Binary's data is not valid base64"))?;
        return serde_json::from_slice(&bytes).map_err(|e| {
            FhirError::bad_request(format!("the PATCH Binary does not hold a JSON Patch: {e}"))
        });
    }
    Err(FhirError::bad_request(
        "a PATCH entry needs a Binary resource holding a JSON Patch",
    ))
}
