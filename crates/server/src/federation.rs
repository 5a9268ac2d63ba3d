//! HTTP glue of the four-level platform (see `phip_federation`):
//!
//! - `POST [base]/$federation-publish`: a child node delivers a batch of index entries and
//!   MeasureReports (service token of a trusted peer required).
//! - `GET [base]/Patient/$locate?identifier=system|value`: which nodes hold records of a
//!   person (the record locator; answered by the node keeping the index).
//! - `GET [base]/Patient/$federated-everything?identifier=system|value`: a clinician's lookup
//!   across nodes, one merged Bundle.
//! - `GET [base]/Patient/$federation-records?identifier=system|value`: another node asking
//!   for this node's records on a clinician's behalf (peer service token required).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Extension;
use phip_engine::{Decision, Principal, RequestContext};
use phip_federation::trust::PeerCall;
use phip_federation::Federation;
use phip_fhir::IssueType;

use crate::handlers::{base_url, run, Query};
use crate::http::{check_accept, error, fhir_response, parse_body, ApiError, HandlerResult};
use crate::AppState;

/// The federation operations this module serves at type level.
pub(crate) fn is_type_get(resource_type: &str, operation: &str) -> bool {
    resource_type == "Patient"
        && matches!(
            operation,
            "$locate" | "$federated-everything" | "$federation-records"
        )
}

fn federation(state: &AppState) -> Result<Arc<Federation>, ApiError> {
    state.federation.clone().ok_or_else(|| {
        error(
            404,
            IssueType::NotSupported,
            "this server is not a federation node (no node settings are configured)",
        )
    })
}

/// The verified peer behind the request's bearer token, if it is a trusted node's.
fn peer_call(federation: &Federation, headers: &HeaderMap) -> Option<PeerCall> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    federation.trust.verify(token.trim())
}

fn not_a_peer(what: &str) -> ApiError {
    error(
        403,
        IssueType::Forbidden,
        format!("{what} is only answered to trusted federation nodes (a service token signed by a peer listed in the trust file)"),
    )
}

fn identifier(query: &Query) -> Result<String, ApiError> {
    query.get("identifier").map(str::to_owned).ok_or_else(|| {
        error(
            400,
            IssueType::Required,
            "identifier=system|value is required",
        )
    })
}

/// `GET Patient/$locate`, `$federated-everything`, `$federation-records`.
pub(crate) async fn type_get(
    state: AppState,
    principal: Principal,
    operation: String,
    headers: HeaderMap,
    query: Query,
) -> HandlerResult {
    let federation = federation(&state)?;
    let identifier = identifier(&query)?;
    match operation.as_str() {
        "$locate" => {
            let allowed = peer_call(&federation, &headers).is_some()
                || principal.decide("Patient", phip_security::scope::Interaction::Search)
                    == Decision::Full;
            if !allowed {
                return Err(not_a_peer("$locate"));
            }
            run(state, principal, &headers, &query, move |engine, ctx| {
                phip_federation::locate::locate_response(engine, &ctx.base_url, &identifier)
            })
            .await
        }
        "$federation-records" => {
            let call = peer_call(&federation, &headers)
                .ok_or_else(|| not_a_peer("$federation-records"))?;
            let principal = federation.peer_principal(principal, &call);
            run(state, principal, &headers, &query, move |engine, ctx| {
                federation.peer_records(engine, ctx, &identifier)
            })
            .await
        }
        _ => {
            check_accept(&headers, query.get("_format"))?;
            let ctx = RequestContext::new(base_url(&state, &headers), principal);
            let output = query.output();
            let response = federation
                .federated_everything(state.engine.clone(), ctx, identifier)
                .await?;
            Ok(fhir_response(response, output))
        }
    }
}

/// `POST [base]/$federation-publish`.
pub(crate) async fn publish(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> HandlerResult {
    let federation = federation(&state)?;
    let call = peer_call(&federation, &headers).ok_or_else(|| not_a_peer("$federation-publish"))?;
    let bundle = parse_body(&headers, &body, false)?;
    let division = federation.config.division.clone();
    let query = Query::new(None);
    run(state, principal, &headers, &query, move |engine, _ctx| {
        let applied = phip_federation::apply::apply_batch(engine, &division, &call.peer, &bundle)?;
        Ok(phip_engine::FhirResponse::with_body(
            200,
            serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": format!(
                        "applied {} entries, {} already applied before, {} roll-ups recomputed",
                        applied.applied, applied.ignored, applied.rollups
                    )
                }]
            }),
        ))
    })
    .await
}
