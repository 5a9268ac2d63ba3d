//! The audit trail of the HTTP API: one BALP `AuditEvent` per request — reads, searches,
//! writes and refused requests alike — appended to the tamper-evident log before the response
//! leaves, and `AuditEvent` reads and searches served from that log (never writable).
//!
//! Who may read which events ([`audit_view`]): a token with role [`AUDITOR_ROLE`] and the
//! operator (a `system/` token without organisation) read every event; a resident's
//! `patient/` token the events about their own Patient; an organisation-bound token the events
//! whose requestor acted for that organisation; any other token gets 403. The restriction is
//! part of the log query, so pages are full and paging is exact; an event outside the
//! caller's view read by id is 404, as one that does not exist.

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use phip_audit::{Agent, AuditQuery, AuditRecord, Interaction, Outcome, Source};
use phip_engine::{Decision, FhirError, FhirResponse, Principal};
use phip_fhir::IssueType;
use phip_security::scope::{Access, Interaction as ScopeInteraction, ScopeContext};
use serde_json::{json, Value};

use crate::http::{error_response, fhir_response, ApiError, HandlerResult, OutputOptions};
use crate::AppState;

/// What a handler tells the audit layer about the records a response concerned.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditInfo {
    /// `Patient/{id}` of every patient whose data the response carried or changed.
    pub patients: Vec<String>,
    /// `Type/id` of the resource read or written (single-resource interactions).
    pub resources: Vec<String>,
}

/// The most patients named in one audit record; a larger search still names the query.
const MAX_PATIENTS_PER_RECORD: usize = 200;

fn patient_of(resource: &Value, out: &mut Vec<String>) {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            out.push(format!("Patient/{id}"));
        }
        return;
    }
    for field in ["subject", "patient", "beneficiary", "individual", "for"] {
        let targets = match resource.get(field) {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(item) => vec![item],
            None => continue,
        };
        for target in targets {
            if let Some(reference) = target.get("reference").and_then(Value::as_str) {
                if reference.starts_with("Patient/") {
                    out.push(
                        reference
                            .split("/_history")
                            .next()
                            .unwrap_or(reference)
                            .to_owned(),
                    );
                }
            }
        }
    }
}

/// Derives the audit facts from a response body.
pub(crate) fn info_from_body(body: &Value) -> AuditInfo {
    let mut info = AuditInfo::default();
    if body.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        for entry in body
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(resource) = entry.get("resource") {
                patient_of(resource, &mut info.patients);
            }
        }
    } else if let (Some(rt), Some(id)) = (
        body.get("resourceType").and_then(Value::as_str),
        body.get("id").and_then(Value::as_str),
    ) {
        if rt != "OperationOutcome" {
            info.resources.push(format!("{rt}/{id}"));
        }
        // A referral's access grant is written with the Task that names it: record both.
        if rt == "Task" {
            for output in body
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(reference) = output
                    .get("valueReference")
                    .and_then(|r| r.get("reference"))
                    .and_then(Value::as_str)
                    .filter(|r| r.starts_with("Consent/"))
                {
                    info.resources.push(reference.to_owned());
                }
            }
        }
        patient_of(body, &mut info.patients);
    }
    info.patients.sort();
    info.patients.dedup();
    info.patients.truncate(MAX_PATIENTS_PER_RECORD);
    info
}

/// The FHIR interaction a request performs, from its method and path below `/fhir`.
fn interaction(method: &Method, path: &str) -> Interaction {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let last = segments.last().copied().unwrap_or("");
    if segments.iter().any(|s| s.starts_with('$')) {
        return Interaction::Operation;
    }
    match *method {
        Method::GET | Method::HEAD => {
            if last == "metadata" {
                Interaction::Capabilities
            } else if segments.len() == 4 && segments[2] == "_history" {
                Interaction::Vread
            } else if segments.contains(&"_history") {
                Interaction::History
            } else if segments.len() == 2 {
                Interaction::Read
            } else {
                Interaction::Search
            }
        }
        Method::POST if segments.is_empty() => Interaction::Transaction,
        Method::POST if last == "_search" => Interaction::Search,
        Method::POST => Interaction::Create,
        Method::PUT => Interaction::Update,
        Method::PATCH => Interaction::Patch,
        Method::DELETE => Interaction::Delete,
        _ => Interaction::Operation,
    }
}

fn agent(principal: Option<&Principal>, headers: &HeaderMap) -> Agent {
    let network_address = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned());
    let Some(principal) = principal else {
        return Agent {
            sub: Some("anonymous".into()),
            network_address,
            ..Agent::default()
        };
    };
    let reference = principal
        .patient
        .as_ref()
        .filter(|_| {
            principal.scopes.as_ref().is_some_and(|s| {
                s.contexts()
                    .contains(&phip_security::scope::ScopeContext::Patient)
            })
        })
        .map(|p| format!("Patient/{p}"));
    Agent {
        sub: Some(principal.subject.clone()),
        client_id: principal.client_id.clone(),
        organization: principal
            .organization
            .as_ref()
            .map(|o| format!("Organization/{o}")),
        reference,
        name: None,
        roles: Vec::new(),
        network_address,
    }
}

/// Middleware around the FHIR API: appends one audit record per request, durably, before the
/// response is returned. If the record cannot be written the request fails: an access that
/// cannot be traced is not served.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(log) = state.audit.clone() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let mut response = if is_storage_write(&method, uri.path()) && storage_emergency(&log).await {
        error_response(FhirError::new(
            507,
            IssueType::Exception,
            "the disk is full: writes are refused until space is freed (reads are still served)",
        ))
    } else {
        next.run(request).await
    };
    let principal = response.extensions().get::<Principal>().cloned();
    let info = response
        .extensions_mut()
        .remove::<AuditInfo>()
        .unwrap_or_default();
    let path = uri.path().strip_prefix("/fhir").unwrap_or(uri.path());
    let interaction = interaction(&method, path);
    let mut record = AuditRecord::new(
        interaction,
        Outcome::from_http_status(response.status().as_u16()),
    )
    .agent(agent(principal.as_ref(), &headers))
    .source(Source {
        node: state.config.node_name.clone(),
        site: None,
    });
    if !response.status().is_success() {
        record = record.outcome_desc(format!(
            "{} {}",
            response.status().as_u16(),
            response.status().canonical_reason().unwrap_or("")
        ));
    }
    if let Some(query) = uri.query() {
        record = record.query(query.to_owned());
    }
    for resource in &info.resources {
        record = record.resource(resource.clone());
    }
    if info.resources.is_empty()
        && matches!(
            interaction,
            Interaction::Read
                | Interaction::Vread
                | Interaction::Update
                | Interaction::Patch
                | Interaction::Delete
                | Interaction::History
        )
    {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.len() >= 2 {
            record = record.resource(format!("{}/{}", segments[0], segments[1]));
            if segments[0] == "Patient" {
                record = record.patient(segments[1]);
            }
        }
    }
    for patient in &info.patients {
        record = record.patient(patient);
    }
    if let Some(reason) = principal.as_ref().and_then(|p| p.break_glass.clone()) {
        record = record
            .purpose(phip_audit::Coding::break_the_glass())
            .detail(format!("break the glass: {reason}"));
    }
    match tokio::task::spawn_blocking(move || log.append_one(record)).await {
        Ok(Ok(_)) => response,
        Ok(Err(error)) => {
            tracing::error!(%error, "audit log append failed; refusing the response");
            // Fail closed (no unrecorded access to health records), but with a status that
            // says the condition is the server's and may pass (e.g. a full disk being freed).
            error_response(FhirError::new(
                503,
                IssueType::Transient,
                "the access could not be recorded in the audit trail; retry later",
            ))
        }
        Err(_) => error_response(FhirError::new(500, IssueType::Exception, "internal error")),
    }
}

/// Whether a request writes to the store: PUT, PATCH, DELETE, and POST other than searches
/// and operations (which mostly read; those that write fail cleanly on a full disk anyway).
fn is_storage_write(method: &Method, path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    match *method {
        Method::PUT | Method::PATCH | Method::DELETE => true,
        Method::POST => last != "_search" && !last.starts_with('$'),
        _ => false,
    }
}

/// Whether the disk is full and the audit reserve is being spent (see
/// [`phip_audit::reserve`]): then writes are refused before they reach the store, so that the
/// space left goes to recording reads.
async fn storage_emergency(log: &phip_audit::AuditLog) -> bool {
    if !log.storage_emergency_suspected() {
        return false;
    }
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.storage_emergency())
        .await
        .unwrap_or(true)
}

fn audit_error(error: phip_audit::AuditError) -> ApiError {
    match error {
        phip_audit::AuditError::InvalidCursor(_) => {
            ApiError(FhirError::bad_request("the paging link is invalid"))
        }
        other => {
            tracing::error!(error = %other, "audit log query failed");
            ApiError(FhirError::new(
                500,
                IssueType::Exception,
                "the audit trail could not be read",
            ))
        }
    }
}

/// The role entitled to read the whole audit trail.
pub const AUDITOR_ROLE: &str = "auditor";

/// Which audit events a caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuditView {
    /// Every event.
    All,
    /// The events about this patient (`Patient/…`).
    Patient(String),
    /// The events whose requestor acted for this organisation (`Organization/…`).
    Organization(String),
}

/// Who may read the trail, in this order (after the token's scopes must grant `AuditEvent`):
///
/// 1. a `patient/` grant: the events about its own patient ("who looked at my records");
/// 2. the server itself (authentication off) and a token with role `auditor`: every event;
/// 3. a token bound to an organisation: the events of that organisation's own staff and
///    systems (the requestor's `urn:phip:audit:organization`);
/// 4. a `system/` token without organisation — the operator's, minted with `phip token` from
///    the data directory: every event. Whoever can mint it holds the data directory and can
///    read `audit.db` directly, so refusing it would protect nothing;
/// 5. anyone else (e.g. a `user/` token with neither organisation nor the auditor role): 403.
fn audit_view(principal: &Principal, interaction: ScopeInteraction) -> Result<AuditView, ApiError> {
    if let Decision::PatientCompartment(patient) = principal.require("AuditEvent", interaction)? {
        return Ok(AuditView::Patient(format!("Patient/{patient}")));
    }
    if principal.is_unrestricted() || principal.roles.iter().any(|r| r == AUDITOR_ROLE) {
        return Ok(AuditView::All);
    }
    if let Some(org) = &principal.organization {
        return Ok(AuditView::Organization(
            phip_audit::event::normalize_organization(org),
        ));
    }
    let operator = principal.scopes.as_ref().is_some_and(|scopes| {
        scopes.access(ScopeContext::System, "AuditEvent", interaction) == Access::Full
    });
    if operator {
        return Ok(AuditView::All);
    }
    Err(ApiError(FhirError::new(
        403,
        IssueType::Forbidden,
        "the audit trail may be read by auditors (role auditor), by residents about their own \
         records and by an organisation about its own staff's actions",
    )))
}

/// `GET /fhir/AuditEvent?patient=…&agent=…&date=ge…&_count=…`: served from the audit log.
pub(crate) async fn search(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let Some(log) = state.audit.clone() else {
        return Err(ApiError(FhirError::new(
            404,
            IssueType::NotSupported,
            "auditing is not enabled",
        )));
    };
    let view = audit_view(&principal, ScopeInteraction::Search)?;
    let params = phip_engine::parse_query_string(raw.as_deref().unwrap_or(""));
    let mut query = AuditQuery::default();
    for (name, value) in &params {
        match name.as_str() {
            "patient" | "entity" => {
                query.patient = Some(phip_audit::event::normalize_patient(value))
            }
            "agent" | "who" => query.agent = Some(value.clone()),
            "date" => {
                let (prefix, date) = value.split_at(value.len().min(2));
                let parse = |text: &str| {
                    phip_fhir::search::parse_date_range(text)
                        .and_then(|(start, end)| {
                            Some((
                                chrono::DateTime::from_timestamp_millis(start)?,
                                chrono::DateTime::from_timestamp_millis(end)?,
                            ))
                        })
                        .ok_or_else(|| {
                            ApiError(FhirError::bad_request(format!(
                                "date={value:?} is not a valid date"
                            )))
                        })
                };
                match prefix {
                    "ge" | "gt" | "sa" => query.since = Some(parse(date)?.0),
                    "le" | "lt" | "eb" => query.until = Some(parse(date)?.1),
                    _ => {
                        let (start, end) = parse(value)?;
                        query.since = Some(start);
                        query.until = Some(end);
                    }
                }
            }
            "_count" => query.count = value.parse().ok(),
            "_cursor" => query.cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError(FhirError::bad_request(format!(
                    "AuditEvent search supports patient, agent, date, _count; not {other:?}"
                ))))
            }
        }
    }
    match view {
        AuditView::All => {}
        AuditView::Patient(own) => match &query.patient {
            Some(asked) if *asked != own => {
                return Err(ApiError(FhirError::new(
                    403,
                    IssueType::Forbidden,
                    "a patient may only see the audit trail of their own records",
                )))
            }
            _ => query.patient = Some(own),
        },
        // Part of the query: other organisations' events are not rows at all.
        AuditView::Organization(own) => query.organization = Some(own),
    }
    let base = crate::handlers::base_url(&state, &headers);
    let result = tokio::task::spawn_blocking(move || log.search(&query)).await;
    let (events, next) = match result {
        Ok(Ok(found)) => found,
        Ok(Err(error)) => return Err(audit_error(error)),
        Err(_) => {
            return Err(ApiError(FhirError::new(
                500,
                IssueType::Exception,
                "internal error",
            )))
        }
    };
    let self_url = format!("{base}/AuditEvent?{}", raw.clone().unwrap_or_default());
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(cursor) = next {
        let mut next_params: Vec<(String, String)> = params
            .iter()
            .filter(|(n, _)| n != "_cursor")
            .cloned()
            .collect();
        next_params.push(("_cursor".into(), cursor));
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next_params)
            .finish();
        links.push(json!({"relation": "next", "url": format!("{base}/AuditEvent?{query}")}));
    }
    let entries: Vec<Value> = events
        .into_iter()
        .map(|event| {
            let id = event.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
            json!({"fullUrl": format!("{base}/AuditEvent/{id}"), "resource": event, "search": {"mode": "match"}})
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(fhir_response(
        FhirResponse::with_body(200, bundle),
        OutputOptions::default(),
    ))
}

/// `GET /fhir/AuditEvent/{id}`.
pub(crate) async fn read(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> HandlerResult {
    let Some(log) = state.audit.clone() else {
        return Err(ApiError(FhirError::new(
            404,
            IssueType::NotSupported,
            "auditing is not enabled",
        )));
    };
    let view = audit_view(&principal, ScopeInteraction::Read)?;
    let lookup = id.clone();
    let event = match tokio::task::spawn_blocking(move || log.read(&lookup)).await {
        Ok(Ok(Some(event))) => event,
        Ok(Ok(None)) => {
            return Err(ApiError(FhirError::not_found(format!(
                "AuditEvent/{id} is not known"
            ))))
        }
        Ok(Err(error)) => return Err(audit_error(error)),
        Err(_) => {
            return Err(ApiError(FhirError::new(
                500,
                IssueType::Exception,
                "internal error",
            )))
        }
    };
    let visible = match &view {
        AuditView::All => true,
        AuditView::Patient(own) => event["entity"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["what"]["reference"] == own.as_str()),
        AuditView::Organization(own) => {
            phip_audit::event::requestor_organization(&event) == Some(own.as_str())
        }
    };
    if !visible {
        // As for an id that does not exist: the event is not in the caller's trail.
        return Err(ApiError(FhirError::not_found(format!(
            "AuditEvent/{id} is not known"
        ))));
    }
    Ok(fhir_response(
        FhirResponse::with_body(200, event),
        OutputOptions::default(),
    ))
}

/// Any write to `AuditEvent`: the trail is append-only and written only by the server.
pub(crate) async fn refuse_write() -> Response {
    let mut response = error_response(FhirError::new(
        405,
        IssueType::NotSupported,
        "AuditEvent is written only by the server and can never be changed or deleted",
    ));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
