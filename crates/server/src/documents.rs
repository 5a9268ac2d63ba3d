//! The HTTP side of document sharing: ITI-68 Retrieve Document (Binary content served raw by
//! content negotiation), HTML views of FHIR documents, `Composition/[id]/$document`,
//! `$render`, and the document-type terminology served read-only.
//!
//! The FHIR rules (ITI-65 checks, `$document` assembly, rendering) live in
//! [`phip_engine::documents`]; this module only negotiates media types.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use phip_engine::documents::{render_document, DocumentTypes, CONCEPT_MAP_ID};
use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext};
use phip_fhir::IssueType;
use serde_json::Value;

use crate::handlers::{base_url, Query};
use crate::http::{error, fhir_response, HandlerResult, OutputOptions};
use crate::AppState;

/// Media types that ask for the FHIR resource rather than its content.
const FHIR_MEDIA: [&str; 3] = [
    "application/fhir+json",
    "application/json",
    "application/json+fhir",
];

/// Policy for HTML phip renders: no script, no remote content, inline style only.
const HTML_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// The media ranges of an `Accept` header, without parameters, lower-cased.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|part| {
            part.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// ITI-68: `Accept` names some non-FHIR media type and no FHIR one (a bare `*/*`, as
/// generic HTTP clients send, keeps the FHIR resource).
fn wants_raw(headers: &HeaderMap, query: &Query) -> bool {
    let media = accepted(headers);
    query.get("_format").is_none()
        && !media.iter().any(|m| FHIR_MEDIA.contains(&m.as_str()))
        && media.iter().any(|m| m != "*/*")
}

fn wants_html(headers: &HeaderMap, query: &Query) -> bool {
    let media = accepted(headers);
    query.get("_format").is_none()
        && media.iter().any(|m| m == "text/html")
        && !media.iter().any(|m| FHIR_MEDIA.contains(&m.as_str()))
}

/// Whether `GET /fhir/{type}/{id}` is answered here rather than by the plain read: Binary
/// content, a document Bundle as HTML, or the document-type terminology.
pub(crate) fn intercepts_read(
    resource_type: &str,
    id: &str,
    headers: &HeaderMap,
    query: &Query,
) -> bool {
    let types = DocumentTypes::builtin();
    match resource_type {
        "Binary" => wants_raw(headers, query),
        "Bundle" => wants_html(headers, query),
        "CodeSystem" => types.code_system()["id"].as_str() == Some(id),
        "ConceptMap" => id == CONCEPT_MAP_ID,
        _ => false,
    }
}

/// Runs an engine call on the blocking pool with the request's context.
async fn call<T, F>(
    state: &AppState,
    principal: Principal,
    headers: &HeaderMap,
    f: F,
) -> Result<T, crate::http::ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine, &RequestContext) -> FhirResult<T> + Send + 'static,
{
    let ctx = RequestContext::new(base_url(state, headers), principal);
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || f(&engine, &ctx))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "engine task failed");
            error(500, IssueType::Exception, "internal error")
        })?
        .map_err(Into::into)
}

/// `GET /fhir/{type}/{id}` for the cases [`intercepts_read`] accepts.
pub(crate) async fn read(
    state: AppState,
    principal: Principal,
    resource_type: String,
    id: String,
    headers: HeaderMap,
) -> HandlerResult {
    match resource_type.as_str() {
        "Binary" => {
            let response = call(&state, principal, &headers, move |engine, ctx| {
                engine.read(ctx, "Binary", &id)
            })
            .await?;
            raw_binary(response)
        }
        "Bundle" => {
            let response = call(&state, principal, &headers, move |engine, ctx| {
                engine.read(ctx, "Bundle", &id)
            })
            .await?;
            // A Bundle that is not a document has no readable view: answer the resource.
            match response.body.as_ref().and_then(render_document) {
                Some(html) => Ok(html_response(html)),
                None => Ok(fhir_response(response, OutputOptions::default())),
            }
        }
        "CodeSystem" => Ok(terminology(DocumentTypes::builtin().code_system().clone())),
        _ => Ok(terminology(DocumentTypes::builtin().concept_map())),
    }
}

fn terminology(resource: Value) -> Response {
    fhir_response(
        FhirResponse::with_body(200, resource),
        OutputOptions::default(),
    )
}

/// The Binary's content with its own media type. The content comes from submitters, so the
/// browser is told not to sniff it and to treat it as a sandboxed, script-less origin.
fn raw_binary(response: FhirResponse) -> HandlerResult {
    let etag = response.etag();
    let body = response.body.unwrap_or(Value::Null);
    let content_type = body["contentType"]
        .as_str()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"].as_str().unwrap_or(""))
        .map_err(|_| {
            FhirError::new(
                500,
                IssueType::Exception,
                "the stored Binary's data is not valid base64",
            )
        })?;
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    if let Some(etag) = etag {
        builder = builder.header(header::ETAG, etag);
    }
    if let Some(modified) = response.last_modified {
        builder = builder.header(
            header::LAST_MODIFIED,
            modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    Ok(builder
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn html_response(html: String) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(HTML_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        html,
    )
        .into_response()
}

/// Whether `/fhir/{type}/{id}/{operation}` is one of this module's operations.
pub(crate) fn is_instance_operation(resource_type: &str, operation: &str) -> bool {
    matches!(
        (resource_type, operation),
        ("Composition", "$document" | "$render") | ("Bundle", "$render")
    )
}

/// `Composition/[id]/$document[?persist=true]`, `Composition/[id]/$render` and
/// `Bundle/[id]/$render` (GET or POST).
pub(crate) async fn instance_operation(
    state: AppState,
    principal: Principal,
    (resource_type, id, operation): (String, String, String),
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    match (resource_type.as_str(), operation.as_str()) {
        ("Composition", "$document") => {
            let persist = query.get("persist") == Some("true");
            let response = call(&state, principal, &headers, move |engine, ctx| {
                engine.composition_document(ctx, &id, persist)
            })
            .await?;
            Ok(fhir_response(response, OutputOptions::default()))
        }
        ("Composition", "$render") => {
            let response = call(&state, principal, &headers, move |engine, ctx| {
                engine.composition_document(ctx, &id, false)
            })
            .await?;
            render(response.body)
        }
        _ => {
            let response = call(&state, principal, &headers, move |engine, ctx| {
                engine.read(ctx, "Bundle", &id)
            })
            .await?;
            render(response.body)
        }
    }
}

fn render(document: Option<Value>) -> HandlerResult {
    document
        .as_ref()
        .and_then(render_document)
        .map(html_response)
        .ok_or_else(|| {
            error(
                422,
                IssueType::NotSupported,
                "only a document Bundle (type document, first entry a Composition) renders",
            )
        })
}
