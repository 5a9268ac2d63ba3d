//! Resource limits of the HTTP layer: requests in flight, request bodies, processing time and
//! per-client request rates. Every refusal is a FHIR OperationOutcome with the HTTP status a
//! client can act on:
//!
//! | limit                     | status | issue code  | headers       |
//! |---------------------------|--------|-------------|---------------|
//! | requests in flight        | 503    | `throttled` | `Retry-After` |
//! | per-client request rate   | 429    | `throttled` | `Retry-After` |
//! | failed sign-ins (address) | 429    | (see below) | `Retry-After` |
//! | request body size         | 413    | `too-long`  |               |
//! | request body arrival      | 408    | `timeout`   | `Connection: close` |
//! | processing time           | 503    | `timeout`   | `Retry-After` |
//!
//! **Slow clients hold nothing.** A request takes an in-flight permit only once it is
//! complete: its head within [`Limits::header_read_timeout`] (enforced by the connection,
//! [`crate::listen`]), its body within [`Limits::body_read_timeout`] plus the time its size
//! earns at [`Limits::body_min_bytes_per_second`] (enforced here, before the permit). A client
//! trickling its request one byte at a time is cut off by these deadlines, and meanwhile every
//! other client's requests are processed. Requests without a body (`GET`, `/health`) do not
//! wait for one.
//!
//! Sign-in endpoints (`/auth/token`, `/portal/login`) come before any token exists, so they are
//! limited by the client's network address instead: each failed attempt (401) spends a token of
//! the address's bucket, and an address with none left is refused before its attempt is even
//! checked, as an OAuth error or a sign-in page as the endpoint answers. Successful sign-ins
//! cost nothing, so a busy proxy or clinic network is not locked out by its own users.
//!
//! A request that outlives its time limit gets its answer at the limit, but the database work
//! already started runs on until the store's own statement time limit stops it: the response
//! time is bounded here, the database load by the store.
//!
//! Memory: bodies are read into memory (every handler needs the whole JSON document), each
//! within its size limit; resource-sized requests are held to the much smaller
//! `max_resource_body_bytes`, and only batch/transaction bundles and bulk operations may use
//! the large limit. Bodies are read before the in-flight permit, so the memory they hold is
//! bounded by what clients actually send within the body deadline, not by the permit count;
//! a client that declares a large body and sends it slowly holds only what it has sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use phip_engine::{FhirError, Principal};
use phip_fhir::IssueType;
use tokio::sync::Semaphore;

use crate::http::error_response;
use crate::AppState;

/// Limits of the HTTP layer (see the module documentation for how each is enforced).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body of a request that is not a batch/transaction bundle or a bulk operation
    /// (a single resource, a patch, a search form, an operation's Parameters), in bytes.
    /// Bundles use [`crate::ServerConfig::max_body_bytes`].
    pub max_resource_body_bytes: usize,
    /// Most requests processed at once; further requests are refused with 503 at once
    /// instead of queueing without bound (0: no limit).
    pub max_in_flight: usize,
    /// Most requests one client (token client id or subject) may have in progress at once;
    /// more are refused with 429, so that one client cannot take the whole
    /// [`max_in_flight`](Self::max_in_flight) budget from the others (0: no limit).
    pub max_in_flight_per_client: usize,
    /// Longest time a request may take before the client gets a 503 (`None`: no limit).
    pub request_timeout: Option<Duration>,
    /// Per-client request rate of the FHIR API (`None`: not limited).
    pub rate_limit: Option<RateLimit>,
    /// Failed sign-ins allowed per client address: `burst` at once, then `per_second`
    /// (`None`: not limited).
    pub failed_sign_ins: Option<RateLimit>,
    /// Whether the client address is the last one in `X-Forwarded-For` (the one the reverse
    /// proxy in front of phip appended) rather than the TCP peer. Only for deployments behind
    /// such a proxy: otherwise a client could name any address it likes.
    pub trust_forwarded_for: bool,
    /// Longest time a new connection may take to send its first request head (request line
    /// and headers); the connection is closed after it (`None`: no limit).
    pub header_read_timeout: Option<Duration>,
    /// Longest time a connection may stay open between requests, or take to send the head of a
    /// later request; the connection is closed after it. Longer than
    /// [`header_read_timeout`](Self::header_read_timeout) because clients pool connections: a
    /// server that closes an idle connection sooner than its clients expect races their next
    /// request on it (a reset). A slow head on such a connection holds a connection, never an
    /// in-flight permit (`None`: no limit).
    pub keep_alive_timeout: Option<Duration>,
    /// Time a request body has to arrive, before the request takes an in-flight permit; after
    /// it (plus what [`body_min_bytes_per_second`](Self::body_min_bytes_per_second) earns) the
    /// client gets 408 (`None`: no limit).
    pub body_read_timeout: Option<Duration>,
    /// A body that keeps arriving at least this fast on average is given the time it needs
    /// beyond [`body_read_timeout`](Self::body_read_timeout): every byte received extends its
    /// deadline by `1 / body_min_bytes_per_second` seconds, so large uploads over slow links
    /// complete while a trickle is cut off (0: the deadline is fixed).
    pub body_min_bytes_per_second: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_resource_body_bytes: 16 * 1024 * 1024,
            max_in_flight: 512,
            max_in_flight_per_client: 64,
            request_timeout: Some(Duration::from_secs(120)),
            rate_limit: None,
            // Ten failures at once, then one every six seconds: nothing a person mistyping
            // notices, and far too slow for guessing a one-time code or a client key.
            failed_sign_ins: Some(RateLimit {
                per_second: 10.0 / 60.0,
                burst: 10,
            }),
            trust_forwarded_for: false,
            header_read_timeout: Some(Duration::from_secs(10)),
            // nginx's keepalive_timeout: clients should keep idle connections for less, or
            // retry a request that failed on a reused connection.
            keep_alive_timeout: Some(Duration::from_secs(75)),
            body_read_timeout: Some(Duration::from_secs(30)),
            body_min_bytes_per_second: 1024,
        }
    }
}

/// A token bucket per client: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second allowed to one client.
    pub per_second: f64,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
}

/// The limits with their run-time state, shared by the middleware.
pub(crate) struct Limiter {
    pub(crate) limits: Limits,
    in_flight: Option<Arc<Semaphore>>,
    per_client: Option<Arc<ClientSlots>>,
    buckets: Option<Buckets>,
    sign_ins: Option<Buckets>,
}

impl Limiter {
    pub(crate) fn new(limits: Limits) -> Self {
        let in_flight =
            (limits.max_in_flight > 0).then(|| Arc::new(Semaphore::new(limits.max_in_flight)));
        let buckets = limits.rate_limit.map(Buckets::new);
        let sign_ins = limits.failed_sign_ins.map(Buckets::new);
        let per_client = (limits.max_in_flight_per_client > 0)
            .then(|| Arc::new(ClientSlots::new(limits.max_in_flight_per_client)));
        Self {
            limits,
            in_flight,
            per_client,
            buckets,
            sign_ins,
        }
    }
}

/// Requests in progress per client. Entries exist only while a client has requests in
/// progress, so the map is bounded by the in-flight limit.
pub(crate) struct ClientSlots {
    max: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// One request's slot; released when dropped (the response is ready, or the request was
/// abandoned).
pub(crate) struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: String,
}

impl ClientSlots {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `client`, or `None` when it already has `max` requests in progress.
    pub(crate) fn acquire(self: &Arc<Self>, client: &str) -> Option<ClientSlot> {
        let mut busy = self.busy.lock();
        let count = busy.entry(client.to_owned()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            client: client.to_owned(),
        })
    }

    #[cfg(test)]
    fn in_progress(&self, client: &str) -> usize {
        self.busy.lock().get(client).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock();
        if let Some(count) = busy.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                busy.remove(&self.client);
            }
        }
    }
}

/// Token buckets keyed by client. The map is pruned of buckets that have refilled completely
/// (their clients are idle, so forgetting them changes nothing), which bounds it by the
/// number of recently active clients.
pub(crate) struct Buckets {
    rate: RateLimit,
    state: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Size of the bucket map above which idle buckets are pruned.
const PRUNE_ABOVE: usize = 10_000;

impl Buckets {
    pub(crate) fn new(rate: RateLimit) -> Self {
        Self {
            rate,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `client`'s bucket, or says how long until one is available.
    pub(crate) fn acquire(&self, client: &str, now: Instant) -> Result<(), Duration> {
        self.take(client, now, true)
    }

    /// Whether `client`'s bucket has a token, without taking it; or how long until it has.
    pub(crate) fn check(&self, client: &str, now: Instant) -> Result<(), Duration> {
        self.take(client, now, false)
    }

    fn take(&self, client: &str, now: Instant, spend: bool) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst.max(1));
        let per_second = self.rate.per_second.max(f64::MIN_POSITIVE);
        let mut state = self.state.lock();
        if !spend && !state.contains_key(client) {
            return Ok(());
        }
        if state.len() > PRUNE_ABOVE {
            state.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second
                    < burst
            });
        }
        let bucket = state.entry(client.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if spend {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

/// A refusal with a `Retry-After` header (whole seconds, at least 1).
fn refuse_with_retry(error: FhirError, retry_after: Duration) -> Response {
    let mut response = error_response(error);
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Whether a request may carry a bundle-sized body: batch/transaction bundles posted to the
/// base, system- or type-level bulk operations (`$import`, `$process-message`, device
/// `$ingest`), and writes of the resource types that are containers by nature — stored
/// `Bundle`s (documents, collections; the official R4 examples include one of 17 MB) and
/// `Binary` content.
fn takes_large_body(method: &Method, path: &str) -> bool {
    if method != Method::POST && method != Method::PUT {
        return false;
    }
    let Some(rest) = path.strip_prefix("/fhir") else {
        return false;
    };
    let rest = rest.trim_matches('/');
    let mut segments = rest.split('/');
    let first = segments.next().unwrap_or("");
    let second = segments.next();
    let container =
        matches!(first, "Bundle" | "Binary") && second.is_none_or(|s| !s.starts_with('$'));
    if method == Method::PUT {
        return container && second.is_some();
    }
    rest.is_empty()
        || rest == "$import"
        || rest == "$process-message"
        || rest.ends_with("/$import")
        || rest.ends_with("/$ingest")
        || (container && second.is_none())
}

/// Middleware around every request: the body's size limit and deadline, then the in-flight
/// limit and the time limit. The body is read first, so that a client sending it slowly holds
/// no in-flight permit meanwhile.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limiter = state.limiter.clone();
    let limit = if takes_large_body(request.method(), request.uri().path()) {
        state.config.max_body_bytes
    } else {
        limiter.limits.max_resource_body_bytes
    };
    let request = match read_body(request, limit, &limiter.limits).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    // Monitoring must see an overloaded server, so `/metrics` is never shed.
    let shed = request.uri().path() != "/metrics";
    // Held until the response is ready (the permit drops at the end of this function).
    let _permit = match &limiter.in_flight {
        Some(semaphore) if shed => match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return refuse_with_retry(
                    FhirError::new(
                        503,
                        IssueType::Throttled,
                        format!(
                            "the server is processing its maximum of {} requests; retry shortly",
                            limiter.limits.max_in_flight
                        ),
                    ),
                    Duration::from_secs(1),
                )
            }
        },
        _ => None,
    };
    match limiter.limits.request_timeout {
        Some(timeout) => match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(timeout_seconds = timeout.as_secs_f64(), "request timed out");
                refuse_with_retry(
                    FhirError::new(
                        503,
                        IssueType::Timeout,
                        format!(
                            "the request did not complete within {} s; narrow it (e.g. fewer search criteria matches, a smaller _count) or retry later",
                            timeout.as_secs_f64()
                        ),
                    ),
                    Duration::from_secs(5),
                )
            }
        },
        None => next.run(request).await,
    }
}

/// An answer after which the connection is closed: the rest of the body is left unread, so
/// the connection cannot carry another request, and saying so keeps a client from reusing it
/// and failing its next request on a broken pipe.
fn closing(error: FhirError) -> Response {
    let mut response = error_response(error);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The deadline of a body of which `received` bytes arrived, for one that began at `start`:
/// the base time plus what the bytes earn at the minimum rate.
fn body_deadline(start: Instant, received: usize, limits: &Limits) -> Option<Instant> {
    let base = limits.body_read_timeout?;
    let earned = match limits.body_min_bytes_per_second {
        0 => Duration::ZERO,
        rate => Duration::from_secs_f64(received as f64 / rate as f64),
    };
    Some(start + base + earned)
}

/// Reads the body within `limit` bytes (refusing at once when `Content-Length` says it is too
/// large, otherwise while reading, for chunked bodies) and within its deadline
/// ([`body_deadline`]), and puts it back in memory.
async fn read_body(request: Request, limit: usize, limits: &Limits) -> Result<Request, Response> {
    use http_body_util::BodyExt;
    let too_large = || {
        closing(FhirError::new(
            413,
            IssueType::TooLong,
            format!("the request body is larger than this server accepts ({limit} bytes)"),
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    if declared == Some(0) || (declared.is_none() && !has_body(&request)) {
        return Ok(request);
    }
    let start = Instant::now();
    let (parts, mut body) = request.into_parts();
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let next = body.frame();
        let frame = match body_deadline(start, bytes.len(), limits) {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), next).await {
                Ok(frame) => frame,
                Err(_) => {
                    tracing::info!(
                        received = bytes.len(),
                        declared,
                        "request body did not arrive in time"
                    );
                    return Err(closing(FhirError::new(
                        408,
                        IssueType::Timeout,
                        format!(
                            "the request body did not arrive in time ({} bytes in {} s); send it at once, or at {} bytes per second or faster",
                            bytes.len(),
                            start.elapsed().as_secs(),
                            limits.body_min_bytes_per_second
                        ),
                    )));
                }
            },
            None => next.await,
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > limit {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => {
                return Err(error_response(FhirError::bad_request(format!(
                    "the request body could not be read: {error}"
                ))))
            }
        }
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Whether a request without `Content-Length` has a body (chunked transfer encoding).
fn has_body(request: &Request) -> bool {
    request.headers().contains_key(header::TRANSFER_ENCODING)
}

/// Who a request counts against: the OAuth client when the token names one, otherwise the
/// whole identity of the token (subject, patient binding, organisation, division), so that
/// tokens that only share a subject name (every `phip token` without `--subject` is
/// `operator`) do not use up each other's allowance.
fn client_key(principal: &Principal) -> String {
    match &principal.client_id {
        Some(client) => format!("client:{client}"),
        // Debug formatting quotes and escapes each part, so two identities never share a key.
        None => format!(
            "user:{:?}",
            (
                &principal.subject,
                &principal.patient,
                &principal.organization,
                &principal.division
            )
        ),
    }
}

/// Route middleware of the FHIR API (after authentication): the per-client rate limit, keyed by
/// [`client_key`].
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limiter = &state.limiter;
    if limiter.buckets.is_none() && limiter.per_client.is_none() {
        return next.run(request).await;
    }
    let client = request
        .extensions()
        .get::<Principal>()
        .map(client_key)
        .unwrap_or_else(|| "anonymous".to_owned());
    // Held until the response is ready.
    let _slot = match &limiter.per_client {
        Some(slots) => match slots.acquire(&client) {
            Some(slot) => Some(slot),
            None => {
                tracing::info!(%client, "per-client in-flight limit reached");
                return refuse_with_retry(
                    FhirError::new(
                        429,
                        IssueType::Throttled,
                        format!(
                            "this client already has {} requests in progress, its maximum; wait for them before sending more",
                            slots.max
                        ),
                    ),
                    Duration::from_secs(1),
                );
            }
        },
        None => None,
    };
    let Some(buckets) = &limiter.buckets else {
        return next.run(request).await;
    };
    match buckets.acquire(&client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            tracing::info!(%client, "rate limit exceeded");
            refuse_with_retry(
                FhirError::new(
                    429,
                    IssueType::Throttled,
                    format!(
                        "too many requests from this client (limit {} per second, bursts of {}); retry later",
                        buckets.rate.per_second, buckets.rate.burst
                    ),
                ),
                wait,
            )
        }
    }
}

/// The network address a request came from: the TCP peer (without its port), or with
/// [`Limits::trust_forwarded_for`] the last address in `X-Forwarded-For`.
fn client_address(request: &Request, trust_forwarded_for: bool) -> String {
    if trust_forwarded_for {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty());
        if let Some(address) = forwarded {
            return address.to_owned();
        }
    }
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        // In-process callers (tests, `tower::ServiceExt::oneshot`) have no peer.
        .unwrap_or_else(|| "local".to_owned())
}

/// Route middleware of the sign-in endpoints: refuses an address that has spent its failed
/// sign-ins, and spends one for every attempt answered 401.
pub(crate) async fn sign_in_throttle(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(buckets) = &state.limiter.sign_ins else {
        return next.run(request).await;
    };
    let address = client_address(&request, state.limiter.limits.trust_forwarded_for);
    if let Err(wait) = buckets.check(&address, Instant::now()) {
        tracing::warn!(%address, path = request.uri().path(), "sign-in refused: too many failures from this address");
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let message = format!(
            "too many failed sign-ins from this address; try again in {} s",
            seconds.max(1)
        );
        let mut response = if request.uri().path().starts_with("/portal") {
            crate::portal::throttled_login_page(&message)
        } else {
            crate::smart::oauth_error(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                &message,
            )
        };
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let response = next.run(request).await;
    if response.status() == axum::http::StatusCode::UNAUTHORIZED {
        tracing::info!(%address, "failed sign-in");
        let _ = buckets.acquire(&address, Instant::now());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_told_apart_by_their_whole_identity() {
        let operator = Principal {
            scopes: Some(Default::default()),
            ..Principal::unrestricted("operator")
        };
        let resident = Principal {
            patient: Some("p1".into()),
            ..operator.clone()
        };
        let clinic = Principal {
            organization: Some("clinic".into()),
            ..operator.clone()
        };
        assert_ne!(client_key(&operator), client_key(&resident));
        assert_ne!(client_key(&operator), client_key(&clinic));
        assert_eq!(client_key(&operator), client_key(&operator.clone()));
        // One OAuth client is one client, whoever its tokens name.
        let app = |sub: &str| Principal {
            client_id: Some("app".into()),
            ..Principal::unrestricted(sub)
        };
        assert_eq!(client_key(&app("a")), client_key(&app("b")));
        assert_ne!(client_key(&app("operator")), client_key(&operator));
    }

    #[test]
    fn client_slots_are_per_client_and_released_on_drop() {
        let slots = Arc::new(ClientSlots::new(2));
        let a1 = slots.acquire("a").expect("first");
        let a2 = slots.acquire("a").expect("second");
        assert!(slots.acquire("a").is_none(), "a third at once is refused");
        let b1 = slots
            .acquire("b")
            .expect("another client has its own slots");
        drop(a1);
        assert_eq!(slots.in_progress("a"), 1);
        let a3 = slots.acquire("a").expect("a slot was released");
        drop((a2, a3, b1));
        assert!(slots.busy.lock().is_empty(), "idle clients leave no entry");
    }

    #[test]
    fn buckets_allow_a_burst_then_the_sustained_rate() {
        let buckets = Buckets::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.acquire("a", start), Ok(()));
        }
        let wait = buckets.acquire("a", start).expect_err("bucket empty");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another client has its own bucket.
        assert_eq!(buckets.acquire("b", start), Ok(()));
        // Half a second refills one token at 2/s, not more.
        let later = start + Duration::from_millis(500);
        assert_eq!(buckets.acquire("a", later), Ok(()));
        assert!(buckets.acquire("a", later).is_err());
        // A long idle time refills up to the burst only.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(buckets.acquire("a", much_later), Ok(()));
        }
        assert!(buckets.acquire("a", much_later).is_err());
    }

    #[test]
    fn checking_a_bucket_spends_nothing() {
        let buckets = Buckets::new(RateLimit {
            per_second: 1.0,
            burst: 2,
        });
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(buckets.check("a", start), Ok(()));
        }
        assert_eq!(buckets.acquire("a", start), Ok(()));
        assert_eq!(buckets.check("a", start), Ok(()));
        assert_eq!(buckets.acquire("a", start), Ok(()));
        let wait = buckets.check("a", start).expect_err("spent");
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert_eq!(buckets.check("a", start + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let buckets = Buckets::new(RateLimit {
            per_second: 100.0,
            burst: 1,
        });
        let start = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            let _ = buckets.acquire(&format!("client-{i}"), start);
        }
        assert_eq!(buckets.state.lock().len(), PRUNE_ABOVE + 1);
        let _ = buckets.acquire("late", start + Duration::from_secs(1));
        assert_eq!(buckets.state.lock().len(), 1);
    }

    #[test]
    fn only_bundles_and_bulk_operations_take_large_bodies() {
        assert!(takes_large_body(&Method::POST, "/fhir"));
        assert!(takes_large_body(&Method::POST, "/fhir/"));
        assert!(takes_large_body(&Method::POST, "/fhir/$import"));
        assert!(!takes_large_body(&Method::POST, "/fhir/Patient"));
        assert!(!takes_large_body(&Method::PUT, "/fhir"));
        assert!(!takes_large_body(&Method::POST, "/fhir/Patient/$match"));
        assert!(!takes_large_body(&Method::POST, "/auth/token"));
        assert!(takes_large_body(&Method::POST, "/fhir/Observation/$ingest"));
        assert!(takes_large_body(&Method::POST, "/fhir/Bundle"));
        assert!(takes_large_body(&Method::PUT, "/fhir/Bundle/resources"));
        assert!(takes_large_body(&Method::PUT, "/fhir/Binary/b1"));
        assert!(!takes_large_body(&Method::PUT, "/fhir/Patient/p1"));
        assert!(!takes_large_body(&Method::PUT, "/fhir/Bundle"));
        assert!(!takes_large_body(&Method::POST, "/fhir/Bundle/b1/$render"));
    }
}
