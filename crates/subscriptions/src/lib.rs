//! FHIR R4 Subscriptions: criteria-based notifications over `rest-hook` and `websocket`
//! channels, delivered at least once, and never about data the subscriber may not see.
//!
//! # Design
//!
//! * **The store's history is the outbox.** Every committed change is already a durable,
//!   ordered version in the store. Each active Subscription has a durable cursor into its
//!   criteria type's history (`<data_dir>/subscriptions/state.json`); a worker reads the
//!   changes after its cursor, decides which match, delivers them in order, and only then
//!   moves the cursor. A subscriber that is down keeps its cursor where it was, so it gets
//!   every notification when it comes back; a server restart resumes from the saved cursor.
//! * **No change is skipped.** Version times are assigned inside transactions that may
//!   commit out of time order (PostgreSQL), so each read goes back an overlap window
//!   ([`SubscriptionsConfig::overlap`]) before the cursor and drops versions already handled
//!   (`type/id/version` keys kept for the window). At-least-once allows duplicates; loss
//!   would need a transaction that commits more than the overlap after it wrote.
//! * **Matching runs as the owner.** The criteria search runs through the engine with
//!   `_id=<changed ids>` added, as the principal who wrote the Subscription version
//!   ([`Owner`], recorded by the HTTP layer with [`Subscriptions::record_owner`]). So every
//!   search parameter the engine supports works, and the engine's access rules (scopes,
//!   patient compartment, region, residents' consent) decide what may be notified. A version
//!   whose writer is unknown (e.g. written inside a transaction bundle) is never delivered:
//!   the Subscription is set to `error` saying so.
//! * **Criteria are evaluated when the change is dispatched**, against the resource as it then
//!   is; several versions of one resource read in one pass are notified once, with the
//!   current version.
//! * **Status.** `requested` (or `active`) Subscriptions that validate become `active`;
//!   invalid ones become `error` with the reason in `Subscription.error`. After
//!   [`SubscriptionsConfig::failures_before_error`] failed attempts in a row the status becomes
//!   `error` with the last failure; retries go on with exponential back-off and jitter, and
//!   the first success sets `active` again. `off` stops delivery (and forgets the cursor).
//!   These writes go through the engine as the server's own unrestricted principal.
//! * **rest-hook**: without `channel.payload`, an empty `POST` to `channel.endpoint`; with
//!   `application/fhir+json`, `PUT {endpoint}/{type}/{id}` with the resource (R4's
//!   full-resource form). `channel.header` entries are sent as headers. Any 2xx is
//!   delivered. No redirects are followed, and each call times out.
//! * **websocket**: clients bind with [`Subscriptions::bind_websocket`] (the server offers
//!   the R4 `bind <id>` / `bound <id>` / `ping <id>` protocol); while no client is bound,
//!   notifications wait, they are not failures.
//! * **Throughput and memory.** One task per subscription, so a slow endpoint delays only its
//!   own subscribers; history is read in bounded windows and pages, matched in batches.
//!
//! # Security
//!
//! Only `http`/`https` endpoints are accepted, and by default only at globally routable
//! addresses: a rest-hook cannot reach the server itself, the operator's internal network or
//! a cloud metadata service (server-side request forgery). The check is made on the address
//! each connection actually uses, after DNS resolution ([`egress`]); an operator allows
//! internal receivers with [`SubscriptionsConfig::allow_private_endpoints`]. A server that
//! must call only its partners also sets [`SubscriptionsConfig::allowed_endpoints`] to their
//! URL prefixes. No redirect is followed, no proxy is used (it would resolve names itself),
//! and `channel.header` cannot set connection or framing headers. Every failure to reach an
//! endpoint (refused address, closed port, timeout, unknown name) is reported to the
//! subscriber in the same words, so `Subscription.error` cannot be used to scan ports.

mod dispatcher;
pub mod egress;
mod model;
mod owner;
mod state;
mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use phip_engine::{Engine, FhirError, Principal, RequestContext};
use tokio::sync::{broadcast, watch, Notify};

pub use egress::AllowedNetwork;
pub use model::{Channel, Invalid, Spec};
pub use owner::Owner;

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct SubscriptionsConfig {
    /// How often history is read when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// How far back before its cursor each read looks, to catch versions committed late.
    pub overlap: Duration,
    /// Longest span of history read in one pass (bounds memory on a backlog).
    pub max_window: Duration,
    /// Timeout of one rest-hook call.
    pub http_timeout: Duration,
    /// Failed attempts in a row after which the Subscription's status becomes `error`.
    pub failures_before_error: u32,
    /// Delay after the first failed attempt; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// When not empty, rest-hook endpoints must start with one of these prefixes.
    pub allowed_endpoints: Vec<String>,
    /// Networks (and ports) that rest-hooks may reach although they are not public: loopback,
    /// private, link-local and the other special-purpose ranges are refused otherwise.
    pub allow_private_endpoints: Vec<AllowedNetwork>,
    /// How long a Subscription version may wait for its owner to be recorded before the
    /// Subscription is reported as being in error.
    pub owner_grace: Duration,
    /// Changed resources matched per criteria search.
    pub batch_size: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            overlap: Duration::from_secs(10),
            max_window: Duration::from_secs(300),
            http_timeout: Duration::from_secs(10),
            failures_before_error: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            allowed_endpoints: Vec::new(),
            allow_private_endpoints: Vec::new(),
            owner_grace: Duration::from_secs(10),
            batch_size: 100,
        }
    }
}

/// Errors starting the dispatcher or recording state.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionsError {
    /// The state file could not be read or written.
    #[error("subscription state: {0}")]
    State(#[from] std::io::Error),
    /// The HTTP client could not be built.
    #[error("rest-hook client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Most rest-hook clients (one per destination port) kept at once.
const MAX_CACHED_CLIENTS: usize = 64;

/// Whatever the dispatcher's tasks share.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub config: SubscriptionsConfig,
    pub state: Mutex<state::StateFile>,
    /// Where rest-hooks may connect.
    pub policy: Arc<egress::EgressPolicy>,
    /// Rest-hook clients by destination port: each resolves names through a
    /// [`egress::GuardedResolver`] that judges addresses with that port.
    pub http: Mutex<HashMap<u16, reqwest::Client>>,
    /// Bound websocket clients, by Subscription id.
    pub sockets: Mutex<HashMap<String, broadcast::Sender<String>>>,
    /// Signalled when a websocket client binds.
    pub bound: Notify,
    /// Signalled after writes, so that notifications go out without waiting for a poll.
    pub wake: Notify,
    pub stop: watch::Sender<bool>,
}

impl Shared {
    /// The server acting on its own behalf (status updates, listing Subscriptions).
    pub(crate) fn system_context(&self) -> RequestContext {
        RequestContext::new(
            "urn:phip:subscriptions",
            Principal::unrestricted("phip subscription dispatcher"),
        )
    }

    /// The rest-hook client for connections to `port` (built on first use).
    pub(crate) fn http_client(&self, port: u16) -> Result<reqwest::Client, reqwest::Error> {
        let mut clients = self.http.lock();
        if let Some(client) = clients.get(&port) {
            return Ok(client.clone());
        }
        let client = egress::client(self.policy.clone(), port, self.config.http_timeout)?;
        // Endpoints choose their ports: keep the cache small whatever they choose (a dropped
        // client only costs its idle connections).
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(port, client.clone());
        Ok(client)
    }

    /// Saves the state file (blocking).
    pub(crate) fn save(&self) {
        if let Err(error) = self.state.lock().save() {
            tracing::error!(%error, "could not save the subscription state");
        }
    }
}

/// The subscription service: a running dispatcher plus the hooks the HTTP layer calls.
pub struct Subscriptions {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Subscriptions {
    /// Opens the state in `data_dir/subscriptions` and starts the dispatcher on the current
    /// tokio runtime (must be called from within one).
    pub fn start(
        engine: Arc<Engine>,
        data_dir: &Path,
        config: SubscriptionsConfig,
    ) -> Result<Arc<Self>, SubscriptionsError> {
        let state = state::StateFile::open(&data_dir.join("subscriptions"))?;
        let policy = Arc::new(egress::EgressPolicy::new(
            config.allow_private_endpoints.clone(),
        ));
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            engine,
            config,
            state: Mutex::new(state),
            policy,
            http: Mutex::new(HashMap::new()),
            sockets: Mutex::new(HashMap::new()),
            bound: Notify::new(),
            wake: Notify::new(),
            stop,
        });
        // Fails now rather than at the first notification if no client can be built.
        shared.http_client(443)?;
        let supervisor = tokio::spawn(dispatcher::run(shared.clone()));
        Ok(Arc::new(Self {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        }))
    }

    /// Subscriptions the dispatcher tracks, and the oldest point in the store's history it
    /// has not yet processed for one of them: the changes after it are its queue (for metrics).
    pub fn backlog_start(&self) -> (usize, Option<chrono::DateTime<chrono::Utc>>) {
        let state = self.shared.state.lock();
        let oldest = state.subscriptions.values().filter_map(|s| s.cursor).min();
        (state.subscriptions.len(), oldest)
    }

    /// Records that `principal` wrote `version` of `Subscription/{id}`: notifications for that
    /// version are matched with exactly its access. Call it after the write committed and
    /// before answering the client. Blocking (writes the state file durably).
    pub fn record_owner(
        &self,
        id: &str,
        version: u64,
        principal: &Principal,
    ) -> Result<(), SubscriptionsError> {
        let mut state = self.shared.state.lock();
        state.record_owner(id, version, Owner::from_principal(principal));
        state.save()?;
        drop(state);
        self.wake();
        Ok(())
    }

    /// Checks a Subscription about to be written: the criteria's type, the channel, and
    /// (for rest-hooks) that the endpoint is http(s), allowed, not plainly at a forbidden
    /// address, and that the headers are ones a client may set. The error is for a 422.
    /// A Subscription being switched `off` is not checked.
    pub fn validate(&self, resource: &serde_json::Value) -> Result<(), Invalid> {
        if model::status(resource) == "off" {
            return Ok(());
        }
        model::parse(
            resource,
            &self.shared.config.allowed_endpoints,
            Some(&self.shared.policy),
        )
        .map(|_| ())
    }

    /// Wakes the dispatcher: something was committed. Cheap; call it after writes.
    pub fn wake(&self) {
        self.shared.wake.notify_waiters();
    }

    /// Binds a websocket client to `Subscription/{id}`: the caller must be allowed to read the
    /// Subscription, and it must have a websocket channel. The receiver gets `ping {id}` per
    /// notification. Blocking (reads the store); call it from a blocking context.
    pub fn bind_websocket(
        &self,
        id: &str,
        principal: &Principal,
    ) -> Result<broadcast::Receiver<String>, FhirError> {
        let ctx = RequestContext::new("urn:phip:subscriptions", principal.clone());
        let response = self.shared.engine.read(&ctx, "Subscription", id)?;
        let resource = response.body.unwrap_or_default();
        match model::parse(&resource, &self.shared.config.allowed_endpoints, None) {
            Ok(Spec {
                channel: Channel::Websocket,
                ..
            }) => {}
            Ok(_) => {
                return Err(FhirError::bad_request(format!(
                    "Subscription/{id} does not have a websocket channel"
                )))
            }
            Err(error) => return Err(FhirError::bad_request(error.reason)),
        }
        let receiver = self
            .shared
            .sockets
            .lock()
            .entry(id.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe();
        self.shared.bound.notify_waiters();
        Ok(receiver)
    }

    /// Stops the dispatcher and saves its state. Undelivered notifications stay pending and
    /// go out after the next start.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        let supervisor = self.supervisor.lock().take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.save()).await;
    }
}
