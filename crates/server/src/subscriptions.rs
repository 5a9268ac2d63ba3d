//! Subscriptions over HTTP: recording who writes each Subscription (so notifications are
//! matched with that caller's access), waking the dispatcher after writes, and the R4
//! websocket channel at `GET [base]/$subscription-websocket`.
//!
//! Websocket protocol (FHIR R4): after the upgrade — authenticated with the same bearer
//! token as the API — the client sends `bind <subscription-id>`; the server answers
//! `bound <id>` (or `error <id> <reason>` when the caller may not read that Subscription or it
//! has no websocket channel) and then sends `ping <id>` for each notification. One connection
//! may bind several subscriptions.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use phip_engine::Principal;
use phip_subscriptions::Subscriptions;
use tokio::sync::mpsc;

use crate::AppState;

/// Middleware inside authentication: after a successful write, records the writer of a
/// Subscription version and wakes the dispatcher.
pub(crate) async fn track_writes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(subscriptions) = state.subscriptions.clone() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let writes = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let principal = request.extensions().get::<Principal>().cloned();
    let on_subscription = is_subscription_path(request.uri().path());
    let request = if on_subscription && matches!(method, Method::POST | Method::PUT) {
        match refuse_invalid(&state, &subscriptions, request).await {
            Ok(request) => request,
            Err(response) => return response,
        }
    } else {
        request
    };
    let response = next.run(request).await;
    if !writes || !response.status().is_success() {
        return response;
    }
    if on_subscription && method != Method::DELETE {
        if let (Some(principal), Some((id, version))) = (principal, written_version(&response)) {
            let recorder = subscriptions.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                recorder.record_owner(&id, version, &principal)
            })
            .await;
            if !matches!(recorded, Ok(Ok(()))) {
                // The Subscription stays undelivered (and reports why) rather than acting
                // for someone else.
                tracing::error!("could not record the owner of a Subscription version");
            }
        }
    }
    subscriptions.wake();
    response
}

/// Refuses (422) a Subscription that could never be delivered — above all an endpoint that
/// is not http(s), not on the allow-list or plainly at a forbidden address, or a header the
/// server sets itself — before it is stored. Anything that is not a
/// Subscription body passes on for the handler to judge.
async fn refuse_invalid(
    state: &AppState,
    subscriptions: &Subscriptions,
    request: Request,
) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            crate::http::error_response(phip_engine::FhirError::new(
                413,
                phip_fhir::IssueType::TooLong,
                "the request body is too large",
            ))
        })?;
    if let Ok(resource) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if resource.get("resourceType").and_then(|t| t.as_str()) == Some("Subscription") {
            if let Err(invalid) = subscriptions.validate(&resource) {
                let mut outcome = phip_fhir::OperationOutcome::default();
                outcome.push(
                    phip_fhir::IssueSeverity::Error,
                    phip_fhir::IssueType::Invalid,
                    invalid.reason,
                    invalid.expression.map(str::to_owned),
                );
                return Err(crate::http::error_response(
                    phip_engine::FhirError::unprocessable(outcome),
                ));
            }
        }
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Whether a request path (with or without the `/fhir` prefix) addresses the Subscription
/// type or one Subscription.
fn is_subscription_path(path: &str) -> bool {
    let path = path.strip_prefix("/fhir").unwrap_or(path);
    let mut segments = path.trim_start_matches('/').split('/');
    segments.next() == Some("Subscription") && segments.count() <= 1
}

/// `(id, version)` of the Subscription version a write produced, from `Location`.
fn written_version(response: &Response) -> Option<(String, u64)> {
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let (before, version) = location.rsplit_once("/_history/")?;
    let (_, id) = before.rsplit_once("/Subscription/")?;
    Some((id.to_owned(), version.parse().ok()?))
}

/// `GET [base]/$subscription-websocket`.
pub(crate) async fn websocket(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(subscriptions) = state.subscriptions.clone() else {
        return crate::http::error_response(phip_engine::FhirError::not_found(
            "subscriptions are not enabled on this server",
        ));
    };
    upgrade.on_upgrade(move |socket| serve_socket(socket, subscriptions, principal))
}

async fn serve_socket(
    mut socket: WebSocket,
    subscriptions: Arc<Subscriptions>,
    principal: Principal,
) {
    // Pings of every bound subscription funnel into one queue for this socket.
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let mut forwarders = Vec::new();
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let reply = bind(&subscriptions, &principal, text.trim(), &out_tx, &mut forwarders).await;
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
            Some(ping) = out_rx.recv() => {
                if socket.send(Message::Text(ping.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    for forwarder in forwarders {
        forwarder.abort();
    }
}

/// Handles one client message; returns the reply.
async fn bind(
    subscriptions: &Arc<Subscriptions>,
    principal: &Principal,
    text: &str,
    out: &mpsc::Sender<String>,
    forwarders: &mut Vec<tokio::task::JoinHandle<()>>,
) -> String {
    let Some(id) = text.strip_prefix("bind ").map(str::trim) else {
        return format!("error unknown command {text:?} (expected: bind <subscription-id>)");
    };
    let id = id.to_owned();
    let result = {
        let subscriptions = subscriptions.clone();
        let principal = principal.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || subscriptions.bind_websocket(&id, &principal)).await
    };
    match result {
        Ok(Ok(mut pings)) => {
            let out = out.clone();
            forwarders.push(tokio::spawn(async move {
                loop {
                    match pings.recv().await {
                        Ok(ping) => {
                            if out.send(ping).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }));
            format!("bound {id}")
        }
        Ok(Err(error)) => format!("error {id} {}", error.outcome),
        Err(_) => format!("error {id} the server is shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_subscription_writes() {
        assert!(is_subscription_path("/Subscription"));
        assert!(is_subscription_path("/fhir/Subscription/abc"));
        assert!(!is_subscription_path("/Subscription/abc/_history/1"));
        assert!(!is_subscription_path("/Observation"));
        let response = Response::builder()
            .header(
                header::LOCATION,
                "http://h/fhir/Subscription/s-1/_history/3",
            )
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(written_version(&response), Some(("s-1".into(), 3)));
    }
}
