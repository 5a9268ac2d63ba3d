//! Prometheus metrics at `GET /metrics`: requests by FHIR interaction and status, latency
//! histograms per interaction, requests in flight, and the patient index's size.
//!
//! A handful of atomics behind a mutex-free map would be premature: requests take a short
//! `parking_lot` lock to bump one counter and one histogram, which costs far less than the
//! JSON work of the request itself, and keeps the exposition code small and obvious.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::AppState;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The server's metrics registry.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    in_flight: AtomicI64,
}

impl Metrics {
    fn observe(&self, interaction: &'static str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .entry((interaction, status))
            .or_default() += 1;
        let mut latency = self.latency.lock();
        let histogram = latency.entry(interaction).or_default();
        for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, extra_gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP phip_http_requests_total HTTP requests by FHIR interaction and status.\n",
        );
        out.push_str("# TYPE phip_http_requests_total counter\n");
        for ((interaction, status), count) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "phip_http_requests_total{{interaction=\"{interaction}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP phip_http_request_duration_seconds Request latency by FHIR interaction.\n",
        );
        out.push_str("# TYPE phip_http_request_duration_seconds histogram\n");
        for (interaction, histogram) in self.latency.lock().iter() {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts.iter()) {
                let _ = writeln!(
                    out,
                    "phip_http_request_duration_seconds_bucket{{interaction=\"{interaction}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "phip_http_request_duration_seconds_bucket{{interaction=\"{interaction}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "phip_http_request_duration_seconds_sum{{interaction=\"{interaction}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "phip_http_request_duration_seconds_count{{interaction=\"{interaction}\"}} {}",
                histogram.count
            );
        }
        out.push_str("# HELP phip_http_requests_in_flight Requests being processed.\n");
        out.push_str("# TYPE phip_http_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "phip_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        for (name, help, value) in extra_gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// The FHIR interaction a request is, from its method and path (for metric labels; bounded
/// to a fixed set so that ids never become label values).
fn interaction(method: &Method, path: &str) -> &'static str {
    let Some(fhir) = path.strip_prefix("/fhir") else {
        return match path {
            "/health" => "health",
            "/auth/token" => "token",
            "/metrics" => "metrics",
            _ => "other",
        };
    };
    let segments: Vec<&str> = fhir.split('/').filter(|s| !s.is_empty()).collect();
    let operation = segments.iter().any(|s| s.starts_with('$'));
    match (method, segments.as_slice()) {
        (_, _) if operation => "operation",
        (&Method::GET, ["metadata"]) => "capabilities",
        (&Method::GET, []) | (&Method::POST, ["_search"]) => "search-system",
        (&Method::POST, []) => "batch-transaction",
        (&Method::GET, [_, "_history"]) | (&Method::GET, ["_history"]) => "history",
        (&Method::GET, [_, _, "_history"]) => "history",
        (&Method::GET, [_, _, "_history", _]) => "vread",
        (&Method::GET, [_]) | (&Method::POST, [_, "_search"]) => "search-type",
        (&Method::GET, [_, _]) => "read",
        (&Method::POST, [_]) => "create",
        (&Method::PUT, [_]) | (&Method::PUT, [_, _]) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "other",
    }
}

/// Middleware recording every request.
pub(crate) async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let label = interaction(request.method(), request.uri().path());
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.metrics.observe(
        label,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    // The first use of the patient index loads it from the store: blocking work.
    let engine = state.engine.clone();
    let index = tokio::task::spawn_blocking(move || {
        engine
            .mpi()
            .map(|mpi| (mpi.source_count(), mpi.person_count()))
            .ok()
    })
    .await
    .ok()
    .flatten();
    let mut gauges = queue_gauges(&state).await;
    if let Some((sources, persons)) = index {
        gauges.push((
            "phip_mpi_source_records",
            "Patient records in the patient index.",
            sources as f64,
        ));
        gauges.push((
            "phip_mpi_persons",
            "Persons (golden records) in the patient index.",
            persons as f64,
        ));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// Depths of the queues behind the API: the store's connection pool, the subscription
/// dispatcher's backlog and the bulk export jobs.
async fn queue_gauges(state: &AppState) -> Vec<(&'static str, &'static str, f64)> {
    let mut gauges = Vec::new();
    if let Some(pool) = state.engine.store().pool_status() {
        gauges.extend([
            (
                "phip_store_pool_connections_in_use",
                "Database connections lent to transactions.",
                pool.in_use as f64,
            ),
            (
                "phip_store_pool_connections_idle",
                "Open database connections waiting to be lent.",
                pool.idle as f64,
            ),
            (
                "phip_store_pool_waiting",
                "Requests waiting for a database connection.",
                pool.waiting as f64,
            ),
            (
                "phip_store_pool_connections_max",
                "Most database connections the pool opens.",
                pool.max as f64,
            ),
        ]);
    }
    if let Some(bulk) = &state.bulk {
        let (queued, running, known) = bulk.job_counts();
        gauges.extend([
            (
                "phip_bulk_export_jobs_queued",
                "Bulk export jobs waiting for a worker.",
                queued as f64,
            ),
            (
                "phip_bulk_export_jobs_running",
                "Bulk export jobs running.",
                running as f64,
            ),
            (
                "phip_bulk_export_jobs",
                "Bulk export jobs kept (any state, until they expire).",
                known as f64,
            ),
        ]);
    }
    if let Some(subscriptions) = &state.subscriptions {
        let (tracked, oldest) = subscriptions.backlog_start();
        gauges.push((
            "phip_subscriptions_tracked",
            "Subscriptions the dispatcher tracks.",
            tracked as f64,
        ));
        // The dispatcher reads the store's history as its queue: the backlog is the number of
        // changes after the oldest point it has not processed yet.
        let backlog = match oldest {
            Some(since) => {
                let engine = state.engine.clone();
                tokio::task::spawn_blocking(move || history_count_since(&engine, since))
                    .await
                    .ok()
                    .flatten()
            }
            None => Some(0),
        };
        if let Some(backlog) = backlog {
            gauges.push((
                "phip_subscription_backlog_changes",
                "Changes in the store's history not yet processed by the subscription dispatcher.",
                backlog as f64,
            ));
        }
    }
    gauges
}

/// How many versions the store's history holds after `since`.
fn history_count_since(
    engine: &phip_engine::Engine,
    since: chrono::DateTime<chrono::Utc>,
) -> Option<u64> {
    let ctx = phip_engine::RequestContext::new(
        "http://localhost/fhir",
        phip_engine::Principal::unrestricted("metrics"),
    );
    let params = [
        (
            "_since".to_owned(),
            since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        ("_summary".to_owned(), "count".to_owned()),
    ];
    let response = engine.history(&ctx, None, None, &params).ok()?;
    response.body?.get("total")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interactions_are_classified_without_ids() {
        assert_eq!(interaction(&Method::GET, "/fhir/Patient/123"), "read");
        assert_eq!(interaction(&Method::GET, "/fhir/Patient"), "search-type");
        assert_eq!(interaction(&Method::POST, "/fhir/Patient"), "create");
        assert_eq!(interaction(&Method::PUT, "/fhir/Patient/1"), "update");
        assert_eq!(
            interaction(&Method::GET, "/fhir/Patient/1/_history/2"),
            "vread"
        );
        assert_eq!(interaction(&Method::POST, "/fhir"), "batch-transaction");
        assert_eq!(
            interaction(&Method::POST, "/fhir/Patient/$match"),
            "operation"
        );
        assert_eq!(interaction(&Method::GET, "/fhir/metadata"), "capabilities");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.observe("read", 200, 0.003);
        metrics.observe("read", 404, 0.2);
        let text = metrics.render(&[]);
        assert!(text.contains("phip_http_requests_total{interaction=\"read\",status=\"200\"} 1"));
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.25\"} 2"), "{text}");
        assert!(text.contains("phip_http_request_duration_seconds_count{interaction=\"read\"} 2"));
    }
}
