//! HTTP details of FHIR: media types, headers, and turning engine results into responses.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use phip_engine::{FhirError, FhirResponse, ReturnPreference};
use phip_fhir::IssueType;
use serde_json::Value;

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Output options taken from the query string.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OutputOptions {
    pub pretty: bool,
}

/// An error of a handler: a FHIR error rendered as an OperationOutcome response.
#[derive(Debug)]
pub(crate) struct ApiError(pub FhirError);

impl From<FhirError> for ApiError {
    fn from(error: FhirError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

/// The result type of every handler.
pub(crate) type HandlerResult = Result<Response, ApiError>;

/// Serialises a JSON body.
fn json_body(value: &Value, options: OutputOptions) -> Vec<u8> {
    let result = if options.pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    result.unwrap_or_default()
}

/// An engine response as HTTP.
pub(crate) fn fhir_response(response: FhirResponse, options: OutputOptions) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    let mut builder = Response::builder().status(status);
    if let Some(etag) = response.etag() {
        builder = builder.header(header::ETAG, etag);
    }
    if let Some(modified) = response.last_modified {
        builder = builder.header(
            header::LAST_MODIFIED,
            modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    if let Some(location) = &response.location {
        let name = if response.status == 201 {
            header::LOCATION
        } else {
            header::CONTENT_LOCATION
        };
        builder = builder.header(name, location);
    }
    let audit_info = response.body.as_ref().map(crate::audit::info_from_body);
    let body = match &response.body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, FHIR_JSON);
            Body::from(json_body(value, options))
        }
        None => Body::empty(),
    };
    let mut response = builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    if let Some(info) = audit_info {
        response.extensions_mut().insert(info);
    }
    response
}

/// An engine error as HTTP: its status and OperationOutcome.
pub(crate) fn error_response(error: FhirError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::UNAUTHORIZED {
        return (
            status,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON)),
                (
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"phip\", error=\"invalid_token\""),
                ),
            ],
            json_body(&error.outcome.to_json(), OutputOptions::default()),
        )
            .into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        json_body(&error.outcome.to_json(), OutputOptions::default()),
    )
        .into_response()
}

/// A quick error.
pub(crate) fn error(status: u16, code: IssueType, message: impl Into<String>) -> ApiError {
    ApiError(FhirError::new(status, code, message))
}

/// Reads `Prefer` header directives.
pub(crate) fn prefer(headers: &HeaderMap) -> (Option<ReturnPreference>, bool) {
    let mut return_preference = None;
    let mut strict = false;
    for value in headers.get_all("prefer") {
        let Ok(text) = value.to_str() else { continue };
        for directive in text.split([',', ';']) {
            let directive = directive.trim();
            match directive
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            {
                Some(("return", "minimal")) => return_preference = Some(ReturnPreference::Minimal),
                Some(("return", "representation")) => {
                    return_preference = Some(ReturnPreference::Representation)
                }
                Some(("return", "OperationOutcome")) => {
                    return_preference = Some(ReturnPreference::OperationOutcome)
                }
                Some(("handling", "strict")) => strict = true,
                Some(("handling", "lenient")) => strict = false,
                _ => {}
            }
        }
    }
    (return_preference, strict)
}

/// Refuses media types phip does not produce (only JSON is supported; XML clients get 406).
pub(crate) fn check_accept(headers: &HeaderMap, format: Option<&str>) -> Result<(), ApiError> {
    if let Some(format) = format {
        let ok = matches!(
            format,
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
        );
        if !ok {
            return Err(error(
                406,
                IssueType::NotSupported,
                format!("_format={format:?} is not supported; phip speaks application/fhir+json"),
            ));
        }
        return Ok(());
    }
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let acceptable = accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        matches!(
            media,
            "" | "*/*"
                | "application/*"
                | "application/json"
                | "application/fhir+json"
                | "application/json+fhir"
                | "text/*"
                | "text/plain"
                | "text/html"
        )
    });
    if acceptable {
        Ok(())
    } else {
        Err(error(
            406,
            IssueType::NotSupported,
            format!("cannot produce {accept:?}; phip speaks application/fhir+json"),
        ))
    }
}

/// Parses a JSON request body, checking its media type.
pub(crate) fn parse_body(headers: &HeaderMap, body: &[u8], patch: bool) -> Result<Value, ApiError> {
    if let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let ok = if patch {
            matches!(
                media,
                "application/json-patch+json" | "application/json" | "application/fhir+json"
            )
        } else {
            matches!(
                media,
                "application/fhir+json"
                    | "application/json"
                    | "application/json+fhir"
                    | "text/json"
            )
        };
        if !ok {
            return Err(error(
                415,
                IssueType::NotSupported,
                format!(
                    "unsupported Content-Type {content_type:?}; send application/fhir+json{}",
                    if patch {
                        " or application/json-patch+json"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    if body.is_empty() {
        return Err(error(400, IssueType::Required, "the request has no body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            400,
            IssueType::Structure,
            format!("the body is not valid JSON: {e}"),
        )
    })
}
