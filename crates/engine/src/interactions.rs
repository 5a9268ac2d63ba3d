//! Instance and type interactions: create, read, vread, update, patch, delete and their
//! conditional forms.
//!
//! Each interaction has an `*_in` form that works inside an open store transaction, so that
//! transaction bundles reuse exactly the same rules, and a public form that opens and commits
//! its own transaction.

use phip_fhir::search::query;
use phip_fhir::IssueType;
use phip_store::{PageCursor, SearchRequest, StoredResource, Transaction, WriteRequest};
use serde_json::Value;

use phip_security::scope::Interaction;

use crate::access::{not_found, Principal};
use crate::guard::{check_stored, check_write, id_in_use, prior, Prior};
use crate::{
    parse_query_string, version_url, Engine, FhirError, FhirResponse, FhirResult, RequestContext,
    ReturnPreference,
};

/// What a write did, before it is turned into a response.
#[derive(Debug, Clone)]
pub(crate) struct WriteOutcome {
    /// 200 or 201 (or 204-style "nothing happened" for deletes, reported as 200/204 later).
    pub status: u16,
    /// The version now current (for a delete: the deletion version, or the unchanged state).
    pub stored: Option<StoredResource>,
}

/// Parses an `ETag`/`If-Match` value such as `W/"3"` or `3` into a version number.
pub fn parse_version_tag(tag: &str) -> FhirResult<u64> {
    let trimmed = tag.trim();
    let inner = trimmed
        .strip_prefix("W/")
        .unwrap_or(trimmed)
        .trim_matches('"');
    inner.parse::<u64>().map_err(|_| {
        FhirError::bad_request(format!(
            "invalid version tag {trimmed:?}: expected W/\"<versionId>\""
        ))
    })
}

/// A new server-assigned logical id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks that `id` is a valid FHIR logical id.
pub(crate) fn check_id(id: &str) -> FhirResult<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(FhirError::bad_request(format!(
            "invalid id {id:?}: ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'"
        )))
    }
}

/// Refuses writes to types the server alone writes: the audit trail is append-only and kept
/// apart from the resource store, so no FHIR interaction (nor a bundle entry) may create,
/// change or delete an `AuditEvent`.
pub(crate) fn check_writable(resource_type: &str) -> FhirResult<()> {
    if resource_type == "AuditEvent" {
        return Err(FhirError::new(
            405,
            IssueType::NotSupported,
            "AuditEvent is written only by the server and can never be changed or deleted",
        ));
    }
    Ok(())
}

/// Checks the resource type named in a URL.
pub(crate) fn check_type(resource_type: &str) -> FhirResult<()> {
    if phip_fhir::r4().is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "unknown resource type {resource_type:?}"
        )))
    }
}

/// Checks a resource body for a write to `resource_type`: JSON object, matching
/// `resourceType`, and structurally valid R4.
pub(crate) fn check_body(resource_type: &str, body: &Value) -> FhirResult<()> {
    let Some(object) = body.as_object() else {
        return Err(FhirError::bad_request(
            "the request body must be a JSON object holding a FHIR resource",
        ));
    };
    match object.get("resourceType").and_then(Value::as_str) {
        None => {
            return Err(FhirError::bad_request(
                "the resource has no resourceType element",
            ))
        }
        Some(found) if found != resource_type => {
            return Err(FhirError::bad_request(format!(
                "the resource's resourceType {found:?} does not match the type {resource_type:?} in the URL"
            )))
        }
        Some(_) => {}
    }
    phip_fhir::validate::validate_resource(body)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))
}

/// Splits a condition written `[Type]?params` into its path and query; `None` when it is only
/// `params`. A `?` inside a search value (`identifier=urn:x|a?b`) comes after a `=`, so only a
/// `?` before the first `=` separates a path.
fn split_condition(criteria: &str) -> Option<(&str, &str)> {
    let (path, query) = criteria.split_once('?')?;
    (!path.contains('=')).then_some((path, query))
}

/// Resolves a conditional-operation search (`Type?params` or `params`) inside a transaction,
/// returning up to two matches (enough to tell none / one / several apart).
pub(crate) fn match_condition(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    criteria: &str,
) -> FhirResult<Vec<StoredResource>> {
    principal.require(resource_type, Interaction::Search)?;
    let query_part = match split_condition(criteria) {
        Some((path, q)) => {
            let path = path.trim_start_matches('/');
            let path_type = path.rsplit('/').next().unwrap_or(path);
            if !path.is_empty() && path_type != resource_type {
                return Err(FhirError::bad_request(format!(
                    "the condition {criteria:?} names a different resource type than {resource_type:?}"
                )));
            }
            q
        }
        None => criteria,
    };
    let mut params = parse_query_string(query_part);
    if params.is_empty() {
        return Err(FhirError::bad_request(format!(
            "the condition {criteria:?} has no search parameters"
        )));
    }
    crate::search::exclude_golden_records(Some(resource_type), &mut params);
    let parsed = query::parse(Some(resource_type), &params, true)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
    // A condition only matches what the caller could find by searching: a record it cannot
    // see neither satisfies If-None-Exist nor is updated or deleted by a condition.
    let request = SearchRequest {
        query: parsed.query,
        cursor: PageCursor::First,
        page_size: 2,
        access: principal.access(),
    };
    Ok(tx.search(&request)?.matches)
}

/// Sets `id` on a resource body.
fn set_id(body: &mut Value, id: &str) {
    if let Some(object) = body.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_owned()));
    }
}

/// Create inside a transaction. `if_none_exist` makes it conditional.
pub(crate) fn create_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    mut body: Value,
    if_none_exist: Option<&str>,
    assigned_id: Option<String>,
) -> FhirResult<WriteOutcome> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    let decision = principal.require(resource_type, Interaction::Create)?;
    check_write(principal, resource_type, None, Some(&mut body))?;
    crate::mpi::prepare_patient(resource_type, &mut body)?;
    check_body(resource_type, &body)?;
    if let Some(criteria) = if_none_exist {
        let matches = match_condition(tx, principal, resource_type, criteria)?;
        match matches.len() {
            0 => {}
            1 => {
                return Ok(WriteOutcome {
                    status: 200,
                    stored: matches.into_iter().next(),
                })
            }
            _ => {
                return Err(FhirError::new(
                    412,
                    IssueType::MultipleMatches,
                    format!(
                    "conditional create: the condition {criteria:?} matches more than one resource"
                ),
                ))
            }
        }
    }
    let id = assigned_id.unwrap_or_else(new_id);
    set_id(&mut body, &id);
    let stored = tx.write(WriteRequest {
        resource_type: resource_type.to_owned(),
        id,
        resource: Some(body),
        expected_version: Some(0),
    })?;
    check_stored(tx, principal, &decision, &stored)?;
    Ok(WriteOutcome {
        status: 201,
        stored: Some(stored),
    })
}

/// Update (create-or-update with a client id) inside a transaction.
pub(crate) fn update_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
    mut body: Value,
    if_match: Option<u64>,
) -> FhirResult<WriteOutcome> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    check_id(id)?;
    let decision = principal.require(resource_type, Interaction::Update)?;
    crate::mpi::prepare_patient(resource_type, &mut body)?;
    check_body(resource_type, &body)?;
    match body.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id != id => {
            return Err(FhirError::bad_request(format!(
                "the resource id {body_id:?} does not match the id {id:?} in the URL"
            )))
        }
        Some(_) => {}
        None => {
            return Err(FhirError::bad_request(
                "an update must carry the resource id in the body, matching the URL",
            ))
        }
    }
    set_id(&mut body, id);
    // Without If-Match the client set no precondition: the version read here only guards
    // against a concurrent writer between this read and the write, and losing that race (on
    // PostgreSQL, whose writers run concurrently) means updating the newer version, not a
    // 412. Found by the load test; the retry re-reads inside the same transaction, which
    // sees the other writer's commit.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = match prior(tx, principal, resource_type, id)? {
            Prior::Hidden => return Err(id_in_use(resource_type, id)),
            Prior::Absent => None,
            Prior::Visible(stored) => Some(stored),
        };
        let mut next = body.clone();
        check_write(
            principal,
            resource_type,
            current.as_ref().and_then(|c| c.resource.as_ref()),
            Some(&mut next),
        )?;
        let current_version = current.as_ref().map(|c| c.version_id).unwrap_or(0);
        if let Some(expected) = if_match {
            if expected != current_version || current.is_none() {
                return Err(FhirError::precondition_failed(format!(
                    "If-Match expected version {expected} of {resource_type}/{id}, but the current version is {current_version}"
                )));
            }
        }
        let existed = current.as_ref().is_some_and(|c| !c.is_deleted());
        let retry = if_match.is_none() && attempts < MAX_UPDATE_ATTEMPTS;
        let request = WriteRequest {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            resource: Some(next),
            expected_version: Some(current_version),
        };
        match tx.write(request) {
            Err(phip_store::StoreError::VersionConflict { .. }) if retry => continue,
            result => {
                let stored = result?;
                check_stored(tx, principal, &decision, &stored)?;
                return Ok(WriteOutcome {
                    status: if existed { 200 } else { 201 },
                    stored: Some(stored),
                });
            }
        }
    }
}

/// How often an update without If-Match re-reads after losing a race with another writer.
const MAX_UPDATE_ATTEMPTS: u32 = 5;

/// Conditional update (`PUT Type?criteria`) inside a transaction.
pub(crate) fn conditional_update_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    criteria: &str,
    body: Value,
    if_match: Option<u64>,
    assigned_id: Option<String>,
) -> FhirResult<WriteOutcome> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    let matches = match_condition(tx, principal, resource_type, criteria)?;
    match matches.len() {
        0 => {
            // No match: the body's id (if any) is used, otherwise a new id is assigned.
            let body_id = body.get("id").and_then(Value::as_str).map(str::to_owned);
            match body_id {
                Some(id) => update_in(tx, principal, resource_type, &id, body, if_match),
                None => create_in(tx, principal, resource_type, body, None, assigned_id),
            }
        }
        1 => {
            let existing = &matches[0];
            if let Some(body_id) = body.get("id").and_then(Value::as_str) {
                if body_id != existing.id {
                    return Err(FhirError::bad_request(format!(
                        "conditional update: the body's id {body_id:?} differs from the matched resource {}/{}",
                        existing.resource_type, existing.id
                    )));
                }
            }
            let mut body = body;
            set_id(&mut body, &existing.id);
            let id = existing.id.clone();
            update_in(tx, principal, resource_type, &id, body, if_match)
        }
        _ => Err(FhirError::new(
            412,
            IssueType::MultipleMatches,
            format!(
                "conditional update: the condition {criteria:?} matches more than one resource"
            ),
        )),
    }
}

/// Delete inside a transaction. Deleting a missing or already deleted resource succeeds and
/// changes nothing (deletes are idempotent, as the specification allows).
pub(crate) fn delete_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
    if_match: Option<u64>,
) -> FhirResult<WriteOutcome> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    check_id(id)?;
    principal.require(resource_type, Interaction::Delete)?;
    let current = match prior(tx, principal, resource_type, id)? {
        // A record the caller cannot see is, for it, one that does not exist: nothing is
        // deleted, and the answer is the same.
        Prior::Hidden | Prior::Absent => None,
        Prior::Visible(stored) => Some(stored),
    };
    check_write(
        principal,
        resource_type,
        current.as_ref().and_then(|c| c.resource.as_ref()),
        None,
    )?;
    let Some(current) = current else {
        if if_match.is_some() {
            return Err(FhirError::precondition_failed(format!(
                "If-Match given but {resource_type}/{id} does not exist"
            )));
        }
        return Ok(WriteOutcome {
            status: 204,
            stored: None,
        });
    };
    if let Some(expected) = if_match {
        if expected != current.version_id {
            return Err(FhirError::precondition_failed(format!(
                "If-Match expected version {expected} of {resource_type}/{id}, but the current version is {}",
                current.version_id
            )));
        }
    }
    if current.is_deleted() {
        return Ok(WriteOutcome {
            status: 204,
            stored: Some(current),
        });
    }
    let stored = tx.write(WriteRequest {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        resource: None,
        expected_version: Some(current.version_id),
    })?;
    Ok(WriteOutcome {
        status: 204,
        stored: Some(stored),
    })
}

/// Conditional delete (`DELETE Type?criteria`): deletes every match (multiple deletes allowed,
/// as HAPI and the spec's `conditional-delete-multiple` permit, up to a limit).
pub(crate) fn conditional_delete_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    criteria: &str,
) -> FhirResult<(WriteOutcome, usize)> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    principal.require(resource_type, Interaction::Delete)?;
    principal.require(resource_type, Interaction::Search)?;
    const MAX_CONDITIONAL_DELETES: usize = 1000;
    let query_part = split_condition(criteria).map_or(criteria, |(_, q)| q);
    let mut params = parse_query_string(query_part);
    if params.is_empty() {
        return Err(FhirError::bad_request(
            "a conditional delete needs search parameters",
        ));
    }
    crate::search::exclude_golden_records(Some(resource_type), &mut params);
    let parsed = query::parse(Some(resource_type), &params, true)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
    let page = tx.search(&SearchRequest {
        query: parsed.query,
        cursor: PageCursor::First,
        page_size: MAX_CONDITIONAL_DELETES + 1,
        access: principal.access(),
    })?;
    if page.matches.len() > MAX_CONDITIONAL_DELETES {
        return Err(FhirError::new(
            412,
            IssueType::TooCostly,
            format!("conditional delete matches more than {MAX_CONDITIONAL_DELETES} resources; narrow the condition"),
        ));
    }
    let count = page.matches.len();
    let mut last = WriteOutcome {
        status: 204,
        stored: None,
    };
    for matched in page.matches {
        last = delete_in(tx, principal, resource_type, &matched.id, None)?;
    }
    Ok((last, count))
}

/// Applies a JSON Patch to the current version inside a transaction.
pub(crate) fn patch_in(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
    patch: &Value,
    if_match: Option<u64>,
) -> FhirResult<WriteOutcome> {
    check_type(resource_type)?;
    check_writable(resource_type)?;
    check_id(id)?;
    let decision = principal.require(resource_type, Interaction::Update)?;
    let current = read_visible(tx, principal, resource_type, id)?;
    if let Some(expected) = if_match {
        if expected != current.version_id {
            return Err(FhirError::precondition_failed(format!(
                "If-Match expected version {expected} of {resource_type}/{id}, but the current version is {}",
                current.version_id
            )));
        }
    }
    let operations: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        FhirError::bad_request(format!("the body is not a valid JSON Patch document: {e}"))
    })?;
    let mut body = current.resource.clone().unwrap_or(Value::Null);
    json_patch::patch(&mut body, &operations).map_err(|e| {
        FhirError::new(
            422,
            IssueType::Processing,
            format!("the JSON Patch could not be applied: {e}"),
        )
    })?;
    if body.get("id").and_then(Value::as_str) != Some(id)
        || body.get("resourceType").and_then(Value::as_str) != Some(resource_type)
    {
        return Err(FhirError::new(
            422,
            IssueType::Processing,
            "a patch may not change the resource's id or resourceType",
        ));
    }
    check_write(
        principal,
        resource_type,
        current.resource.as_ref(),
        Some(&mut body),
    )?;
    crate::mpi::prepare_patient(resource_type, &mut body)?;
    check_body(resource_type, &body).map_err(|e| FhirError::from_outcome(422, e.outcome))?;
    let stored = tx.write(WriteRequest {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        resource: Some(body),
        expected_version: Some(current.version_id),
    })?;
    check_stored(tx, principal, &decision, &stored)?;
    Ok(WriteOutcome {
        status: 200,
        stored: Some(stored),
    })
}

/// The current, non-deleted version if `principal` may see it; 404 when it does not exist or
/// the caller cannot see it (the same answer), 410 when the caller could see it and it was
/// deleted.
pub(crate) fn read_visible(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
) -> FhirResult<StoredResource> {
    match prior(tx, principal, resource_type, id)? {
        Prior::Absent | Prior::Hidden => Err(not_found(resource_type, id)),
        Prior::Visible(stored) if stored.is_deleted() => Err(FhirError::gone(format!(
            "{resource_type}/{id} was deleted (version {})",
            stored.version_id
        ))),
        Prior::Visible(stored) => Ok(stored),
    }
}

/// Builds the response for a write, honouring `Prefer: return`.
pub(crate) fn write_response(
    ctx: &RequestContext,
    outcome: WriteOutcome,
    message: &str,
) -> FhirResponse {
    let Some(stored) = outcome.stored else {
        return FhirResponse {
            status: outcome.status,
            body: None,
            location: None,
            version_id: None,
            last_modified: None,
        };
    };
    let body = match ctx.return_preference.unwrap_or_default() {
        ReturnPreference::Representation => stored.resource.clone(),
        ReturnPreference::Minimal => None,
        ReturnPreference::OperationOutcome => Some(
            phip_fhir::OperationOutcome::single(
                phip_fhir::IssueSeverity::Information,
                IssueType::Informational,
                message,
            )
            .to_json(),
        ),
    };
    let status = if body.is_none() && outcome.status == 204 {
        204
    } else if outcome.status == 204 {
        200
    } else {
        outcome.status
    };
    FhirResponse {
        status,
        body,
        location: Some(version_url(&ctx.base_url, &stored)),
        version_id: Some(stored.version_id),
        last_modified: Some(stored.last_updated),
    }
}

/// A stored version as a read response.
fn read_response(ctx: &RequestContext, stored: StoredResource) -> FhirResult<FhirResponse> {
    Ok(FhirResponse {
        status: 200,
        location: Some(version_url(&ctx.base_url, &stored)),
        version_id: Some(stored.version_id),
        last_modified: Some(stored.last_updated),
        body: stored.resource,
    })
}

impl Engine {
    /// Runs `work` in one write transaction for `principal` and commits it if `work`
    /// succeeds. Writes made through the transaction pass the patient index and the
    /// registered [`crate::WriteRule`]s, as REST writes do; lower layers (workflow
    /// operations, importers) use it to read and write atomically.
    pub fn write_transaction<T>(
        &self,
        principal: &Principal,
        work: impl FnOnce(&mut dyn Transaction) -> FhirResult<T>,
    ) -> FhirResult<T> {
        let mut tx = self.begin_write(principal)?;
        let result = work(tx.as_mut())?;
        tx.commit()?;
        Ok(result)
    }

    /// `POST [base]/[type]` with optional `If-None-Exist`.
    pub fn create(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        body: Value,
        if_none_exist: Option<&str>,
    ) -> FhirResult<FhirResponse> {
        let outcome = self.write_transaction(&ctx.principal, |tx| {
            create_in(tx, &ctx.principal, resource_type, body, if_none_exist, None)
        })?;
        let message = if outcome.status == 201 {
            "created"
        } else {
            "a resource matching If-None-Exist already exists; nothing was created"
        };
        Ok(write_response(ctx, outcome, message))
    }

    /// `GET [base]/[type]/[id]`.
    pub fn read(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> FhirResult<FhirResponse> {
        check_type(resource_type)?;
        check_id(id)?;
        ctx.principal.require(resource_type, Interaction::Read)?;
        let mut tx = self.store().begin_read()?;
        let stored = read_visible(tx.as_mut(), &ctx.principal, resource_type, id)?;
        read_response(ctx, stored)
    }

    /// `GET [base]/[type]/[id]/_history/[vid]`.
    pub fn vread(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: &str,
    ) -> FhirResult<FhirResponse> {
        check_type(resource_type)?;
        check_id(id)?;
        ctx.principal.require(resource_type, Interaction::Read)?;
        let version_id: u64 = version.parse().map_err(|_| {
            FhirError::not_found(format!("{resource_type}/{id} has no version {version:?}"))
        })?;
        let mut tx = self.store().begin_read()?;
        // Who may see a version is decided by the resource's current state.
        if !ctx.principal.can_see(tx.as_mut(), resource_type, id)? {
            return Err(not_found(resource_type, id));
        }
        match tx.vread(resource_type, id, version_id)? {
            None => Err(FhirError::not_found(format!(
                "{resource_type}/{id} has no version {version_id}"
            ))),
            Some(stored) if stored.is_deleted() => Err(FhirError::gone(format!(
                "version {version_id} of {resource_type}/{id} records its deletion"
            ))),
            Some(stored) => read_response(ctx, stored),
        }
    }

    /// `PUT [base]/[type]/[id]` with optional `If-Match`.
    pub fn update(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> FhirResult<FhirResponse> {
        let outcome = self.write_transaction(&ctx.principal, |tx| {
            update_in(tx, &ctx.principal, resource_type, id, body, if_match)
        })?;
        Ok(write_response(ctx, outcome, "updated"))
    }

    /// `PUT [base]/[type]?[criteria]`.
    pub fn conditional_update(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        criteria: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> FhirResult<FhirResponse> {
        let outcome = self.write_transaction(&ctx.principal, |tx| {
            conditional_update_in(
                tx,
                &ctx.principal,
                resource_type,
                criteria,
                body,
                if_match,
                None,
            )
        })?;
        Ok(write_response(ctx, outcome, "updated"))
    }

    /// `PATCH [base]/[type]/[id]` with a JSON Patch body.
    pub fn patch(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        patch: &Value,
        if_match: Option<u64>,
    ) -> FhirResult<FhirResponse> {
        let outcome = self.write_transaction(&ctx.principal, |tx| {
            patch_in(tx, &ctx.principal, resource_type, id, patch, if_match)
        })?;
        Ok(write_response(ctx, outcome, "patched"))
    }

    /// `DELETE [base]/[type]/[id]`.
    pub fn delete(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> FhirResult<FhirResponse> {
        let outcome = self.write_transaction(&ctx.principal, |tx| {
            delete_in(tx, &ctx.principal, resource_type, id, if_match)
        })?;
        // Nothing there (or nothing the caller can see): said the same way either way.
        let count = usize::from(outcome.stored.is_some());
        Ok(delete_response(ctx, outcome, count))
    }

    /// `DELETE [base]/[type]?[criteria]`.
    pub fn conditional_delete(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        criteria: &str,
    ) -> FhirResult<FhirResponse> {
        let (outcome, count) = self.write_transaction(&ctx.principal, |tx| {
            conditional_delete_in(tx, &ctx.principal, resource_type, criteria)
        })?;
        Ok(delete_response(ctx, outcome, count))
    }
}

fn delete_response(ctx: &RequestContext, outcome: WriteOutcome, count: usize) -> FhirResponse {
    let message = match count {
        0 => "nothing to delete: no resource matched".to_owned(),
        1 => "deleted".to_owned(),
        n => format!("deleted {n} resources"),
    };
    let body = phip_fhir::OperationOutcome::single(
        phip_fhir::IssueSeverity::Information,
        IssueType::Informational,
        message,
    )
    .to_json();
    let version_id = outcome.stored.as_ref().map(|s| s.version_id);
    match ctx.return_preference.unwrap_or_default() {
        ReturnPreference::Minimal => FhirResponse {
            status: 204,
            body: None,
            location: None,
            version_id,
            last_modified: None,
        },
        _ => FhirResponse {
            status: 200,
            body: Some(body),
            location: None,
            version_id,
            last_modified: None,
        },
    }
}
