//! Route handlers: each extracts the request's parts, runs one engine call on the blocking
//! pool, and writes the result.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use phip_engine::{
    parse_query_string, Engine, FhirResponse, FhirResult, Principal, RequestContext,
};
use phip_fhir::IssueType;
use serde_json::json;

use crate::http::{
    check_accept, error, fhir_response, parse_body, prefer, ApiError, HandlerResult, OutputOptions,
};
use crate::AppState;

/// The request's query parameters, decoded.
pub(crate) struct Query {
    pub(crate) params: Vec<(String, String)>,
    raw: String,
}

impl Query {
    pub(crate) fn new(raw: Option<String>) -> Self {
        let raw = raw.unwrap_or_default();
        Self {
            params: parse_query_string(&raw),
            raw,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn output(&self) -> OutputOptions {
        OutputOptions {
            pretty: self.get("_pretty") == Some("true"),
        }
    }
}

/// The FHIR base URL as the client sees it: the configured public base URL, or else (local
/// development) `{scheme}://{Host}/fhir`. A `Host` that is not a plain authority never gets
/// here ([`check_host`] refuses it); should one anyway, the listening address stands in.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.public_base_url {
        Some(base) => base.clone(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| valid_authority(h))
                .map(str::to_owned)
                .or_else(|| state.listening.map(|l| l.address.to_string()))
                .unwrap_or_else(|| "localhost".to_owned());
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .filter(|p| *p == "https" || *p == "http")
                .unwrap_or("http");
            format!("{scheme}://{host}/fhir")
        }
    }
}

/// Whether `text` is a URI authority without user information (RFC 3986 §3.2): a DNS name or
/// IPv4 address, or an IPv6 address in brackets, with an optional port. Nothing that could
/// end a URL, a header or an HTML attribute (spaces, quotes, angle brackets, slashes, `@`,
/// `?`, `#`) passes.
pub(crate) fn valid_authority(text: &str) -> bool {
    if text.is_empty() || text.len() > 261 {
        return false;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return false,
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(text), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| n <= 65_535)
    });
    host_ok && port_ok
}

/// Middleware: without a configured public base URL, a request whose `Host` is not a valid
/// authority is refused (400) before any handler can put it into a link, a `Location`, the
/// CapabilityStatement or the SMART configuration. With a configured base URL `Host` is never
/// used, so it is not checked.
pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.config.public_base_url.is_none() {
        let host = request.headers().get(header::HOST);
        if host.is_some_and(|h| h.to_str().map_or(true, |h| !valid_authority(h))) {
            return crate::http::error_response(phip_engine::FhirError::new(
                400,
                IssueType::Invalid,
                "the Host header is not a valid host[:port]",
            ));
        }
    }
    next.run(request).await
}

/// Builds the request context: authenticated principal, base URL, `Prefer`.
fn context(state: &AppState, principal: Principal, headers: &HeaderMap) -> RequestContext {
    let mut ctx = RequestContext::new(base_url(state, headers), principal);
    let (return_preference, strict) = prefer(headers);
    ctx.return_preference = return_preference;
    ctx.strict_handling = strict;
    ctx
}

/// Runs an engine call on the blocking pool and writes its response.
pub(crate) async fn run<F>(
    state: AppState,
    principal: Principal,
    headers: &HeaderMap,
    query: &Query,
    call: F,
) -> HandlerResult
where
    F: FnOnce(&Engine, &RequestContext) -> FhirResult<FhirResponse> + Send + 'static,
{
    check_accept(headers, query.get("_format"))?;
    let ctx = context(&state, principal, headers);
    let engine = state.engine.clone();
    let output = query.output();
    let result = tokio::task::spawn_blocking(move || call(&engine, &ctx))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "engine task failed");
            error(500, IssueType::Exception, "internal error")
        })?;
    Ok(fhir_response(result?, output))
}

fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                error(
                    400,
                    IssueType::Value,
                    "the If-Match header is not valid text",
                )
            })?;
            Ok(Some(phip_engine::parse_version_tag(text)?))
        }
    }
}

/// Form-encoded (`application/x-www-form-urlencoded`) search body plus URL parameters.
fn search_post_params(
    query: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    if let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.is_empty() && media != "application/x-www-form-urlencoded" {
            return Err(error(
                415,
                IssueType::NotSupported,
                "_search with POST takes application/x-www-form-urlencoded parameters",
            ));
        }
    }
    let mut params = query.params.clone();
    params.extend(parse_query_string(&String::from_utf8_lossy(body)));
    Ok(params)
}

/// `GET /health`: liveness and readiness (the store answers a read).
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let engine = state.engine.clone();
    let ok = tokio::task::spawn_blocking(move || engine.store().begin_read().is_ok())
        .await
        .unwrap_or(false);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": state.engine.store().backend_name(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /fhir/metadata`.
pub(crate) async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    check_accept(&headers, query.get("_format"))?;
    let base = base_url(&state, &headers);
    let mut statement = state.engine.capability_statement(&base);
    crate::smart::describe_security(&state, &mut statement);
    crate::capability::declare_operations(&state, &mut statement);
    Ok(fhir_response(
        FhirResponse::with_body(200, statement),
        query.output(),
    ))
}

/// `GET /fhir?params`: system search.
pub(crate) async fn system_search(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.search(ctx, None, &params)
    })
    .await
}

/// `POST /fhir/_search`.
pub(crate) async fn system_search_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = search_post_params(&query, &headers, &body)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.search(ctx, None, &params)
    })
    .await
}

/// `POST /fhir`: transaction or batch.
pub(crate) async fn system_bundle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let bundle = parse_body(&headers, &body, false)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.process_bundle(ctx, bundle)
    })
    .await
}

/// `GET /fhir/_history`.
pub(crate) async fn system_history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.history(ctx, None, None, &params)
    })
    .await
}

/// `GET /fhir/{type}?params`.
pub(crate) async fn type_search(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.search(ctx, Some(&resource_type), &params)
    })
    .await
}

/// `POST /fhir/{type}/_search`.
pub(crate) async fn type_search_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = search_post_params(&query, &headers, &body)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.search(ctx, Some(&resource_type), &params)
    })
    .await
}

/// `GET /fhir/{type}/_history`.
pub(crate) async fn type_history(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.history(ctx, Some(&resource_type), None, &params)
    })
    .await
}

/// `POST /fhir/{type}` with optional `If-None-Exist`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let resource = parse_body(&headers, &body, false)?;
    let if_none_exist = headers
        .get("if-none-exist")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.create(ctx, &resource_type, resource, if_none_exist.as_deref())
    })
    .await
}

/// `PUT /fhir/{type}?criteria`: conditional update.
pub(crate) async fn conditional_update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    if query.params.is_empty() {
        return Err(error(405, IssueType::NotSupported, format!("PUT /{resource_type} needs an id (PUT /{resource_type}/[id]) or search criteria (conditional update)")));
    }
    let resource = parse_body(&headers, &body, false)?;
    let if_match = if_match(&headers)?;
    let criteria = query.raw.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.conditional_update(ctx, &resource_type, &criteria, resource, if_match)
    })
    .await
}

/// `DELETE /fhir/{type}?criteria`: conditional delete.
pub(crate) async fn conditional_delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    if query.params.is_empty() {
        return Err(error(
            405,
            IssueType::NotSupported,
            format!("DELETE /{resource_type} needs an id or search criteria (conditional delete)"),
        ));
    }
    let criteria = query.raw.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.conditional_delete(ctx, &resource_type, &criteria)
    })
    .await
}

/// `GET /fhir/{type}/{id}`.
pub(crate) async fn read(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    if id.starts_with('$') {
        return crate::operations::type_get(state, principal, resource_type, id, headers, query)
            .await;
    }
    if crate::documents::intercepts_read(&resource_type, &id, &headers, &query) {
        return crate::documents::read(state, principal, resource_type, id, headers).await;
    }
    let summary = query.get("_summary").map(str::to_owned);
    let elements = query.get("_elements").map(str::to_owned);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = run(state, principal, &headers, &query, move |engine, ctx| {
        let mut response = engine.read(ctx, &resource_type, &id)?;
        if let Some(tag) = if_none_match {
            if response.etag().as_deref() == Some(tag.trim()) {
                response.status = 304;
                response.body = None;
                return Ok(response);
            }
        }
        if summary.is_some() || elements.is_some() {
            if let Some(body) = response.body.take() {
                let mode = match summary.as_deref() {
                    Some("true") => phip_fhir::search::SummaryMode::True,
                    Some("text") => phip_fhir::search::SummaryMode::Text,
                    Some("data") => phip_fhir::search::SummaryMode::Data,
                    _ => phip_fhir::search::SummaryMode::False,
                };
                let names: Option<Vec<String>> =
                    elements.map(|e| e.split(',').map(|s| s.trim().to_owned()).collect());
                response.body = Some(phip_engine::apply_subset(body, mode, names.as_deref()));
            }
        }
        Ok(response)
    })
    .await?;
    Ok(response)
}

/// `PUT /fhir/{type}/{id}` with optional `If-Match`.
pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let resource = parse_body(&headers, &body, false)?;
    let if_match = if_match(&headers)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.update(ctx, &resource_type, &id, resource, if_match)
    })
    .await
}

/// `PATCH /fhir/{type}/{id}` with a JSON Patch.
pub(crate) async fn patch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    let patch = parse_body(&headers, &body, true)?;
    let if_match = if_match(&headers)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.patch(ctx, &resource_type, &id, &patch, if_match)
    })
    .await
}

/// `DELETE /fhir/{type}/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    let if_match = if_match(&headers)?;
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.delete(ctx, &resource_type, &id, if_match)
    })
    .await
}

/// `GET /fhir/{type}/{id}/_history` and `GET /fhir/Patient/{id}/$everything`.
pub(crate) async fn instance_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    if crate::documents::is_instance_operation(&resource_type, &operation) {
        let target = (resource_type, id, operation);
        return crate::documents::instance_operation(state, principal, target, headers, query)
            .await;
    }
    if crate::workflow_referral::is_instance_get(&resource_type, &operation) {
        return crate::workflow_referral::instance_get(state, principal, id, headers, query).await;
    }
    if crate::workflow_pharmacy::is_instance_get(&resource_type, &operation) {
        let target = (resource_type, id, operation);
        return crate::workflow_pharmacy::instance_get(state, principal, target, headers, query)
            .await;
    }
    let params = query.params.clone();
    match (resource_type.as_str(), operation.as_str()) {
        (_, "_history") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.history(ctx, Some(&resource_type), Some(&id), &params)
            })
            .await
        }
        ("Patient", "$everything") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_everything(ctx, &id, &params)
            })
            .await
        }
        ("Provenance", "$verify-signature") => {
            let signer = signer(&state)?;
            run(state, principal, &headers, &query, move |engine, ctx| {
                crate::signature::verify(engine, &signer, ctx, &id)
            })
            .await
        }
        _ => Err(error(
            404,
            IssueType::NotSupported,
            format!("{resource_type}/{id}/{operation} is not a supported operation"),
        )),
    }
}

/// `GET /fhir/{type}/{id}/_history/{version}`.
pub(crate) async fn vread(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HandlerResult {
    let query = Query::new(raw);
    run(state, principal, &headers, &query, move |engine, ctx| {
        engine.vread(ctx, &resource_type, &id, &version)
    })
    .await
}

/// Unknown paths.
pub(crate) async fn not_found() -> Response {
    error(
        404,
        IssueType::NotFound,
        "no such endpoint; the FHIR API is under /fhir",
    )
    .into_response()
}

/// Known paths with a method they do not support.
pub(crate) async fn method_not_allowed() -> Response {
    error(
        405,
        IssueType::NotSupported,
        "this method is not allowed on this endpoint",
    )
    .into_response()
}

fn signer(state: &AppState) -> Result<std::sync::Arc<crate::signature::Signer>, ApiError> {
    state.signer.clone().ok_or_else(|| {
        error(
            404,
            IssueType::NotSupported,
            "signatures are not enabled on this server",
        )
    })
}

/// `POST /fhir/{type}/{id}/$sign` and `POST /fhir/Provenance/{id}/$verify-signature`.
pub(crate) async fn instance_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    if crate::documents::is_instance_operation(&resource_type, &operation) {
        let target = (resource_type, id, operation);
        return crate::documents::instance_operation(state, principal, target, headers, query)
            .await;
    }
    if crate::operations::is_instance_post(&resource_type, &operation) {
        return crate::operations::instance_post(
            state,
            principal,
            (resource_type, id, operation),
            headers,
            query,
            body,
        )
        .await;
    }
    let signer = signer(&state)?;
    match (resource_type.as_str(), operation.as_str()) {
        ("Provenance", "$verify-signature") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                crate::signature::verify(engine, &signer, ctx, &id)
            })
            .await
        }
        (_, "$sign") => {
            let alg = query.get("alg").map(str::to_owned);
            run(state, principal, &headers, &query, move |engine, ctx| {
                crate::signature::sign(engine, &signer, ctx, &resource_type, &id, alg.as_deref())
            })
            .await
        }
        _ => Err(error(
            404,
            IssueType::NotSupported,
            format!("{resource_type}/{id}/{operation} is not a supported operation"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_authority;

    #[test]
    fn authorities() {
        for good in [
            "localhost",
            "127.0.0.1:8080",
            "hic.example.cn",
            "hic-1.example.cn:443",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:65535",
            "phip_node",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "",
            "evil.example/path",
            "a b",
            "x\"><script>",
            "<evil>",
            "user@host",
            "host:",
            "host:65536",
            "host:8080:1",
            "host:-1",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "host?q",
            "host#f",
            "'quoted'",
            "back\\slash",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
