//! The phip HTTP API: FHIR R4 REST over axum.
//!
//! Handlers translate HTTP into [`phip_engine::Engine`] calls and [`FhirResponse`]s back into
//! HTTP; the FHIR rules live in the engine. Engine calls are synchronous (the store runs a
//! transaction on one connection), so they run on tokio's blocking pool.

mod audit;
pub mod auth;
pub mod auth_state;
mod bulk;
mod capability;
mod dashboard;
mod documents;
mod federation;
mod handlers;
pub mod health_code;
pub mod hl7;
mod http;
pub mod limits;
mod listen;
pub mod metrics;
mod operations;
pub mod portal;
pub mod public_health;
pub mod signature;
mod smart;
mod subscriptions;
pub mod tls;
mod workflow_pharmacy;
mod workflow_referral;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use phip_engine::Engine;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use http::FHIR_JSON;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How requests are authenticated (required unless explicitly disabled).
    pub auth: auth::AuthMode,
    /// The public FHIR base URL (e.g. `https://hic.example.cn/fhir`). When `None`, it is
    /// derived from each request's `Host` header as `http://{host}/fhir`.
    pub public_base_url: Option<String>,
    /// Largest request body accepted, in bytes: the limit of batch/transaction bundles and
    /// bulk operations (other requests are held to [`limits::Limits::max_resource_body_bytes`]).
    pub max_body_bytes: usize,
    /// This node's name in audit records (`AuditEvent.source.observer`).
    pub node_name: String,
}

/// The engine `phip serve` runs: `store` with every platform rule installed (the
/// collaboration workflows' state machines and one-time guarantees). Tools that write
/// clinical data use it too, so no path bypasses the rules.
pub fn platform_engine(
    store: Arc<dyn phip_store::Store>,
    config: phip_engine::EngineConfig,
) -> Engine {
    let mut engine = Engine::new(store, config);
    phip_workflow::install(&mut engine);
    engine
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) audit: Option<phip_audit::AuditLog>,
    pub(crate) signer: Option<Arc<signature::Signer>>,
    pub(crate) bulk: Option<Arc<phip_bulk::Exporter>>,
    pub(crate) subscriptions: Option<Arc<phip_subscriptions::Subscriptions>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) health_codes: Option<Arc<health_code::HealthCodes>>,
    pub(crate) federation: Option<Arc<phip_federation::Federation>>,
    pub(crate) surveillance: Arc<phip_surveillance::SurveillanceConfig>,
    pub(crate) limiter: Arc<limits::Limiter>,
    /// Where [`serve`] or [`tls::serve_tls`] accepts connections: without a configured
    /// public base URL, the token endpoint's own URL (the audience client assertions must
    /// name) is derived from it, never from a request's `Host`.
    pub(crate) listening: Option<Listening>,
}

/// The socket a server accepts connections on, and whether it speaks TLS there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listening {
    pub(crate) scheme: &'static str,
    pub(crate) address: std::net::SocketAddr,
}

impl AppState {
    /// State over an engine, recording every request in `audit` when given.
    pub fn new(
        engine: Arc<Engine>,
        mut config: ServerConfig,
        audit: Option<phip_audit::AuditLog>,
    ) -> Self {
        if config.max_body_bytes == 0 {
            config.max_body_bytes = 256 * 1024 * 1024;
        }
        Self {
            engine,
            config: Arc::new(config),
            audit,
            signer: None,
            bulk: None,
            subscriptions: None,
            metrics: Arc::new(metrics::Metrics::default()),
            health_codes: None,
            federation: None,
            surveillance: Arc::new(phip_surveillance::SurveillanceConfig::builtin()),
            limiter: Arc::new(limits::Limiter::new(limits::Limits::default())),
            listening: None,
        }
    }

    /// Records the socket the server listens on (see [`AppState::listening`]).
    pub(crate) fn listening_on(mut self, listener: &TcpListener, scheme: &'static str) -> Self {
        self.listening = listener
            .local_addr()
            .ok()
            .map(|address| Listening { scheme, address });
        self
    }

    /// Uses this notifiable-disease configuration for surveillance and indicators (the
    /// built-in one otherwise; see [`public_health::load_surveillance_config`]).
    pub fn with_surveillance_config(
        mut self,
        config: phip_surveillance::SurveillanceConfig,
    ) -> Self {
        self.surveillance = Arc::new(config);
        self
    }

    /// Replaces the default [`limits::Limits`] (requests in flight, body sizes, time, rate).
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limiter = Arc::new(limits::Limiter::new(limits));
        self
    }

    /// Enables bulk export (`$export`) with this export service.
    pub fn with_bulk_export(mut self, exporter: Arc<phip_bulk::Exporter>) -> Self {
        self.bulk = Some(exporter);
        self
    }

    /// Enables Subscriptions: records who writes each Subscription, wakes the dispatcher after
    /// writes, and serves the websocket channel at `[base]/$subscription-websocket`.
    pub fn with_subscriptions(
        mut self,
        subscriptions: Arc<phip_subscriptions::Subscriptions>,
    ) -> Self {
        self.subscriptions = Some(subscriptions);
        self
    }

    /// Enables the residents' electronic health code (`$health-code`, `$verify`, and the
    /// JWKS and revocation lists under `[base]/.well-known/`).
    pub fn with_health_codes(mut self, codes: Arc<health_code::HealthCodes>) -> Self {
        self.health_codes = Some(codes);
        self
    }

    /// Makes this server a node of the four-level platform (`$federation-publish`, `$locate`,
    /// `$federated-everything`, `$federation-records`).
    pub fn with_federation(mut self, federation: Arc<phip_federation::Federation>) -> Self {
        self.federation = Some(federation);
        self
    }

    /// Enables `$sign` and `$verify-signature` with the data directory's key ring.
    pub fn with_signer(mut self, signer: Arc<signature::Signer>) -> Self {
        self.signer = Some(signer);
        self
    }
}

/// The complete router: `/health` and the FHIR API under `/fhir`.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let fhir = Router::new()
        .route(
            "/",
            get(handlers::system_search).post(handlers::system_bundle),
        )
        .route("/_history", get(handlers::system_history))
        .route(
            "/$export",
            get(bulk::kick_off_system).post(bulk::kick_off_system),
        )
        .route(
            "/Patient/$export",
            get(bulk::kick_off_patient).post(bulk::kick_off_patient),
        )
        .route(
            "/Group/{id}/$export",
            get(bulk::kick_off_group).post(bulk::kick_off_group),
        )
        .route(
            "/$export-status/{job}",
            get(bulk::status).delete(bulk::cancel),
        )
        .route("/$export-file/{job}/{file}", get(bulk::file))
        .route("/$subscription-websocket", get(subscriptions::websocket))
        .route("/$federation-publish", post(federation::publish))
        .route("/$surveillance-run", post(public_health::surveillance_run))
        .route(
            "/$indicators",
            get(public_health::indicators).post(public_health::indicators),
        )
        .route("/Observation/$ingest", post(public_health::ingest))
        .route(
            "/AuditEvent",
            get(audit::search)
                .post(audit::refuse_write)
                .put(audit::refuse_write)
                .delete(audit::refuse_write),
        )
        .route(
            "/AuditEvent/{id}",
            get(audit::read)
                .put(audit::refuse_write)
                .patch(audit::refuse_write)
                .delete(audit::refuse_write),
        )
        .route("/_search", post(handlers::system_search_post))
        .route(
            "/Patient/{id}/$health-code",
            get(health_code::issue).post(health_code::issue),
        )
        .route(
            "/Patient/{id}/$health-code-revoke",
            post(health_code::revoke),
        )
        .route("/Patient/$verify", post(health_code::verify))
        .route(
            "/{resource_type}",
            get(handlers::type_search)
                .post(handlers::create)
                .put(handlers::conditional_update)
                .delete(handlers::conditional_delete),
        )
        .route("/{resource_type}/_search", post(handlers::type_search_post))
        .route("/{resource_type}/_history", get(handlers::type_history))
        .route(
            "/{resource_type}/{id}",
            get(handlers::read)
                .post(operations::type_post)
                .put(handlers::update)
                .patch(handlers::patch)
                .delete(handlers::delete),
        )
        .route(
            "/{resource_type}/{id}/{operation}",
            get(handlers::instance_get).post(handlers::instance_post),
        )
        .route(
            "/{resource_type}/{id}/_history/{version}",
            get(handlers::vread),
        )
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Innermost: runs after authentication, so that clients are told apart by token.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::rate_limit,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            subscriptions::track_writes,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ));
    Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/auth/token",
            post(smart::token).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                limits::sign_in_throttle,
            )),
        )
        .route("/.well-known/jwks.json", get(smart::jwks))
        .route(
            "/.well-known/smart-configuration",
            get(smart::smart_configuration),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart::smart_configuration),
        )
        .route("/fhir/metadata", get(handlers::metadata))
        .route("/fhir/.well-known/jwks.json", get(health_code::jwks))
        .route("/fhir/.well-known/crl/{file}", get(health_code::crl))
        .route("/dashboard", get(dashboard::page))
        .merge(portal::routes(state.clone()))
        .nest("/fhir", fhir)
        .fallback(handlers::not_found)
        // `/fhir/metadata`, `/auth/token` and the other routes outside the FHIR router answer
        // a wrong method with an OperationOutcome too (found by the HTTP fuzz target).
        .method_not_allowed_fallback(handlers::method_not_allowed)
        // Without a configured base URL, links are built from `Host`: one that is not a plain
        // authority is refused before anything can reflect it.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            handlers::check_host,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then lets in-flight connections
/// finish (up to 30 seconds). Request heads and bodies are read under the deadlines of
/// [`limits::Limits`] before a request is processed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = state.listening_on(&listener, "http");
    listen::serve(listener, state, None, shutdown).await
}
