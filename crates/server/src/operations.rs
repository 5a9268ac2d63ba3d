//! Type- and instance-level operations beyond the core interactions: the patient index's
//! `$match`, `$ihe-pix` (PIXm), `$merge`, `$unmerge`, `$mpi-unlink` and the review-queue
//! decisions `$mpi-accept` / `$mpi-reject`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Extension;
use phip_engine::Principal;
use phip_fhir::IssueType;
use serde_json::Value;

use crate::handlers::{run, Query};
use crate::http::{error, parse_body, HandlerResult};
use crate::AppState;

/// `GET /fhir/{type}/${operation}`.
pub(crate) async fn type_get(
    state: AppState,
    principal: Principal,
    resource_type: String,
    operation: String,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    if crate::workflow_pharmacy::is_type_get(&resource_type, &operation) {
        return crate::workflow_pharmacy::type_get(state, principal, headers, query).await;
    }
    if crate::federation::is_type_get(&resource_type, &operation) {
        return crate::federation::type_get(state, principal, operation, headers, query).await;
    }
    match (resource_type.as_str(), operation.as_str()) {
        ("Patient", "$ihe-pix") => {
            let source = query
                .get("sourceIdentifier")
                .map(str::to_owned)
                .ok_or_else(|| {
                    error(
                        400,
                        IssueType::Required,
                        "$ihe-pix needs sourceIdentifier=system|value",
                    )
                })?;
            let targets: Vec<String> = query
                .params
                .iter()
                .filter(|(name, _)| name == "targetSystem")
                .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                .filter(|t| !t.is_empty())
                .collect();
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.pix_query(ctx, &source, &targets)
            })
            .await
        }
        ("Task", "$referral-report") => {
            crate::workflow_referral::report(state, principal, headers, query).await
        }
        _ => Err(unsupported(&resource_type, &operation)),
    }
}

/// `POST /fhir/{type}/${operation}`.
pub(crate) async fn type_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((resource_type, operation)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> HandlerResult {
    let query = Query::new(raw);
    if !operation.starts_with('$') {
        // `POST [type]/[id]`: not an operation, and not an interaction FHIR defines.
        return Err(error(
            405,
            IssueType::NotSupported,
            "POST is not allowed on a resource instance; use PUT to update it",
        ));
    }
    if crate::workflow_pharmacy::is_type_post(&resource_type, &operation) {
        return crate::workflow_pharmacy::type_post(state, principal, headers, query).await;
    }
    match (resource_type.as_str(), operation.as_str()) {
        ("Patient", "$match") => {
            let parameters = parse_body(&headers, &body, false)?;
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_match(ctx, &parameters)
            })
            .await
        }
        ("Patient", "$mpi-train") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_index_train(ctx)
            })
            .await
        }
        ("Patient", "$merge") => {
            let parameters = parse_body(&headers, &body, false)?;
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_merge(ctx, &parameters)
            })
            .await
        }
        _ => Err(unsupported(&resource_type, &operation)),
    }
}

/// Whether `POST /fhir/{type}/{id}/{operation}` is one of this module's.
pub(crate) fn is_instance_post(resource_type: &str, operation: &str) -> bool {
    matches!(
        (resource_type, operation),
        ("Patient", "$unmerge" | "$mpi-unlink") | ("Task", "$mpi-accept" | "$mpi-reject")
    ) || crate::workflow_referral::is_instance_post(resource_type, operation)
        || crate::workflow_pharmacy::is_instance_post(resource_type, operation)
}

/// `POST /fhir/{type}/{id}/{operation}` for the index's instance operations.
pub(crate) async fn instance_post(
    state: AppState,
    principal: Principal,
    (resource_type, id, operation): (String, String, String),
    headers: HeaderMap,
    query: Query,
    body: Bytes,
) -> HandlerResult {
    if crate::workflow_pharmacy::is_instance_post(&resource_type, &operation) {
        let target = (resource_type, id, operation);
        return crate::workflow_pharmacy::instance_post(
            state, principal, target, headers, query, body,
        )
        .await;
    }
    match (resource_type.as_str(), operation.as_str()) {
        ("Patient", "$unmerge") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_unmerge(ctx, &id)
            })
            .await
        }
        ("Patient", "$mpi-unlink") => {
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.patient_unlink(ctx, &id)
            })
            .await
        }
        ("Task", "$mpi-accept" | "$mpi-reject") => {
            let accept = operation == "$mpi-accept";
            let note = if body.is_empty() {
                None
            } else {
                let parameters = parse_body(&headers, &body, false)?;
                parameters
                    .get("parameter")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter()
                            .find(|p| p.get("name").and_then(Value::as_str) == Some("note"))
                    })
                    .and_then(|p| p.get("valueString"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            run(state, principal, &headers, &query, move |engine, ctx| {
                engine.review_decision(ctx, &id, accept, note.as_deref())
            })
            .await
        }
        _ if crate::workflow_referral::is_instance_post(&resource_type, &operation) => {
            let target = (resource_type, id, operation);
            crate::workflow_referral::instance_post(state, principal, target, headers, query, body)
                .await
        }
        _ => Err(unsupported(&resource_type, &operation)),
    }
}

fn unsupported(resource_type: &str, operation: &str) -> crate::http::ApiError {
    error(
        404,
        IssueType::NotSupported,
        format!("{resource_type}/{operation} is not a supported operation"),
    )
}
