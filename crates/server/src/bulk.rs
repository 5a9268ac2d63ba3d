//! FHIR Bulk Data export over HTTP (Bulk Data Access IG v2.0.0): the asynchronous kick-off at
//! system, Patient and Group level, the status endpoint (progress, manifest, cancellation)
//! and the NDJSON output files. The jobs themselves are [`phip_bulk::Exporter`]'s.
//!
//! All endpoints sit behind the authentication and audit middleware like the rest of the FHIR
//! API, so every kick-off, poll, download and cancellation is in the audit trail; status and
//! files are served only to the client that started the job (`requiresAccessToken: true`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use phip_bulk::{ExportLevel, ExportRequest, ExportStatus, Exporter};
use phip_engine::{parse_query_string, FhirError, Principal, RequestContext};
use phip_fhir::{IssueSeverity, IssueType, OperationOutcome};
use serde_json::Value;

use crate::audit::AuditInfo;
use crate::http::{
    check_accept, error, error_response, parse_body, prefer, ApiError, HandlerResult,
};
use crate::AppState;

/// The media type of the output files.
const NDJSON: &str = "application/fhir+ndjson";

/// Seconds a client is asked to wait between status polls.
const RETRY_AFTER_SECONDS: &str = "2";

/// The export service, or 404 when the server runs without one.
fn exporter(state: &AppState) -> Result<Arc<Exporter>, ApiError> {
    state.bulk.clone().ok_or_else(|| {
        error(
            404,
            IssueType::NotSupported,
            "bulk export is not enabled on this server",
        )
    })
}

/// Runs blocking export work (file system, store reads) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FhirError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "bulk export task failed");
            error(500, IssueType::Exception, "internal error")
        })?
        .map_err(ApiError)
}

/// `GET|POST [base]/$export`.
pub(crate) async fn kick_off_system(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    kick_off(state, principal, headers, raw, body, ExportLevel::System).await
}

/// `GET|POST [base]/Patient/$export`.
pub(crate) async fn kick_off_patient(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    kick_off(state, principal, headers, raw, body, ExportLevel::Patient).await
}

/// `GET|POST [base]/Group/[id]/$export`.
pub(crate) async fn kick_off_group(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    kick_off(state, principal, headers, raw, body, ExportLevel::Group(id)).await
}

/// Whether the request carries `Prefer: respond-async`.
fn respond_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|d| d.trim().eq_ignore_ascii_case("respond-async"))
}

async fn kick_off(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    raw: Option<String>,
    body: Bytes,
    level: ExportLevel,
) -> HandlerResult {
    let exporter = exporter(&state)?;
    let raw = raw.unwrap_or_default();
    let params = parse_query_string(&raw);
    let format = params
        .iter()
        .find(|(n, _)| n == "_format")
        .map(|(_, v)| v.as_str());
    check_accept(&headers, format)?;
    if !respond_async(&headers) {
        return Err(error(
            400,
            IssueType::Invalid,
            "$export is asynchronous: send Prefer: respond-async",
        ));
    }
    let (_, strict) = prefer(&headers);
    let request = if body.is_empty() {
        ExportRequest::parse(level.clone(), &params, strict)?
    } else {
        let parameters = parse_body(&headers, &body, false)?;
        ExportRequest::from_parameters(level.clone(), &parameters, strict)?
    };
    let base = crate::handlers::base_url(&state, &headers);
    let path = match &level {
        ExportLevel::System => "$export".to_owned(),
        ExportLevel::Patient => "Patient/$export".to_owned(),
        ExportLevel::Group(id) => format!("Group/{id}/$export"),
    };
    let request_url = if raw.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{raw}")
    };
    let mut ctx = RequestContext::new(base.clone(), principal);
    ctx.strict_handling = strict;
    let id = blocking(move || exporter.kick_off(&ctx, request, &request_url)).await?;
    let outcome = OperationOutcome::single(
        IssueSeverity::Information,
        IssueType::Informational,
        format!("export {id} accepted; poll the Content-Location URL for its status"),
    );
    let mut response = (
        StatusCode::ACCEPTED,
        [
            (
                header::CONTENT_LOCATION,
                header_value(&format!("{base}/$export-status/{id}"))?,
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::FHIR_JSON),
            ),
        ],
        json_bytes(&outcome.to_json()),
    )
        .into_response();
    if let ExportLevel::Group(group) = &level {
        response.extensions_mut().insert(AuditInfo {
            resources: vec![format!("Group/{group}")],
            patients: Vec::new(),
        });
    }
    Ok(response)
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text)
        .map_err(|_| error(500, IssueType::Exception, "the URL is not a valid header"))
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// `GET [base]/$export-status/[job]`: 202 with `X-Progress` while running, 200 with the
/// manifest when done, the job's error when it failed.
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> HandlerResult {
    let exporter = exporter(&state)?;
    let base = crate::handlers::base_url(&state, &headers);
    let status = blocking(move || exporter.status(&principal, &id)).await?;
    Ok(match status {
        ExportStatus::InProgress(progress) => (
            StatusCode::ACCEPTED,
            [
                (
                    "x-progress",
                    HeaderValue::from_str(&progress)
                        .unwrap_or_else(|_| HeaderValue::from_static("in progress")),
                ),
                ("retry-after", HeaderValue::from_static(RETRY_AFTER_SECONDS)),
            ],
        )
            .into_response(),
        ExportStatus::Completed(job) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json_bytes(&phip_bulk::manifest(&job, &base)),
        )
            .into_response(),
        ExportStatus::Failed(error) => error_response(error),
    })
}

/// `DELETE [base]/$export-status/[job]`: cancels the job and deletes its files.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> HandlerResult {
    let exporter = exporter(&state)?;
    let job = id.clone();
    blocking(move || exporter.cancel(&principal, &job)).await?;
    let outcome = OperationOutcome::single(
        IssueSeverity::Information,
        IssueType::Informational,
        format!("export {id} cancelled; its files are deleted"),
    );
    Ok((
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::FHIR_JSON),
        )],
        json_bytes(&outcome.to_json()),
    )
        .into_response())
}

/// `GET [base]/$export-file/[job]/[file]`: one NDJSON output file, streamed.
pub(crate) async fn file(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
) -> HandlerResult {
    let exporter = exporter(&state)?;
    let path = blocking(move || exporter.file(&principal, &id, &name)).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "export file unreadable");
        error(404, IssueType::NotFound, "the export file is gone")
    })?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, NDJSON);
    if let Some(length) = length {
        response = response.header(header::CONTENT_LENGTH, length);
    }
    response
        .body(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(file, 256 << 10),
        ))
        .map_err(|_| error(500, IssueType::Exception, "could not build the response"))
}
