//! HTTP glue of the referral and result-recognition workflows (`phip_workflow`):
//!
//! * `POST Task/{id}/$transition` (Parameters `status`, `reason`, `businessStatus`, `note`) and
//!   the shorthands `$receive`, `$accept`, `$reject`, `$start`, `$hold`, `$complete`, `$fail`,
//!   `$cancel` — updates of the referral Task, checked by the referral rule like any PUT;
//! * `GET Task/$referral-report?start=…&end=…&organization=…` — Parameters;
//! * `GET|POST Patient/{id}/$recognizable-results?code=…` — a searchset Bundle.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::HeaderMap;
use phip_engine::Principal;
use phip_workflow::recognition::{self, RecognitionConfig};
use phip_workflow::referral::ops::{self, Transition};
use serde_json::Value;

use crate::handlers::{run, Query};
use crate::http::{parse_body, HandlerResult};
use crate::AppState;

/// The recognition windows (the crate's defaults; regions override them with stored `Basic`
/// resources, so no server setting is needed).
fn recognition_config() -> &'static RecognitionConfig {
    static CONFIG: OnceLock<RecognitionConfig> = OnceLock::new();
    CONFIG.get_or_init(RecognitionConfig::default)
}

/// Whether `POST {type}/{id}/{operation}` is one of the workflow operations.
pub(crate) fn is_instance_post(resource_type: &str, operation: &str) -> bool {
    match resource_type {
        "Task" => operation == "$transition" || ops::shorthand(operation).is_some(),
        "Patient" => operation == "$recognizable-results",
        _ => false,
    }
}

/// Whether `GET {type}/{id}/{operation}` is one of the workflow operations.
pub(crate) fn is_instance_get(resource_type: &str, operation: &str) -> bool {
    resource_type == "Patient" && operation == "$recognizable-results"
}

/// `POST Task/{id}/$transition` and its shorthands, `POST Patient/{id}/$recognizable-results`.
pub(crate) async fn instance_post(
    state: AppState,
    principal: Principal,
    (resource_type, id, operation): (String, String, String),
    headers: HeaderMap,
    query: Query,
    body: Bytes,
) -> HandlerResult {
    let parameters = if body.is_empty() {
        Value::Null
    } else {
        parse_body(&headers, &body, false)?
    };
    if resource_type == "Patient" {
        if !parameters.is_null()
            && parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters")
        {
            return Err(recognition::not_parameters().into());
        }
        let mut params = query.params.clone();
        params.extend(recognition::codes_from_parameters(&parameters));
        return run(state, principal, &headers, &query, move |engine, ctx| {
            recognition::recognizable_results(engine, ctx, recognition_config(), &id, &params)
        })
        .await;
    }
    let mut transition = Transition::from_parameters(&parameters)?;
    if let Some(status) = ops::shorthand(&operation) {
        transition.status = Some(status.to_owned());
    }
    run(state, principal, &headers, &query, move |engine, ctx| {
        ops::transition(engine, ctx, &id, &transition)
    })
    .await
}

/// `GET Patient/{id}/$recognizable-results?code=…`.
pub(crate) async fn instance_get(
    state: AppState,
    principal: Principal,
    id: String,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        recognition::recognizable_results(engine, ctx, recognition_config(), &id, &params)
    })
    .await
}

/// `GET Task/$referral-report`.
pub(crate) async fn report(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    let params = query.params.clone();
    run(state, principal, &headers, &query, move |engine, ctx| {
        ops::report(engine, ctx, &params)
    })
    .await
}
