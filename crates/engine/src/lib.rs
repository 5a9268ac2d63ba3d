//! FHIR interactions, independent of transport.
//!
//! The [`Engine`] turns a FHIR interaction — create, read, update, patch, delete, their
//! conditional forms, history, search, transaction and batch bundles, `$everything`,
//! `metadata` — into store transactions and FHIR responses. The HTTP layer only maps HTTP to
//! [`Engine`] calls and [`FhirResponse`]s back; a CLI or a message feed can call the same engine.

pub mod access;
mod bundle;
mod capability;
pub mod consent;
pub mod documents;
mod error;
mod everything;
mod guard;
mod history;
mod interactions;
pub mod mpi;
mod reference;
pub mod rules;
mod search;
mod subset;

pub use bundle::ConditionalCache;
pub use interactions::parse_version_tag;
pub use subset::apply_subset;

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use chrono::{DateTime, Utc};
use phip_store::{Store, StoredResource};
use serde_json::Value;

pub use access::{Decision, Principal};
pub use error::{FhirError, FhirResult};
pub use rules::{RuleContext, WriteRule, WriteRules};

/// Limits and defaults of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Page size when `_count` is absent.
    pub default_page_size: usize,
    /// Largest page size honoured; larger `_count` values are clamped.
    pub max_page_size: usize,
    /// Largest number of entries accepted in one transaction or batch bundle.
    pub max_bundle_entries: usize,
    /// The patient index.
    pub mpi: mpi::MpiConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_page_size: 20,
            max_page_size: 1000,
            max_bundle_entries: 100_000,
            mpi: mpi::MpiConfig::default(),
        }
    }
}

/// What the client asked for with `Prefer: return=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnPreference {
    /// `return=representation` (the default): the resource as stored.
    #[default]
    Representation,
    /// `return=minimal`: no body.
    Minimal,
    /// `return=OperationOutcome`: an OperationOutcome about the interaction.
    OperationOutcome,
}

/// Per-request context the transport extracts from the request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The FHIR base URL as the client sees it, without trailing slash
    /// (e.g. `http://localhost:8080/fhir`); used for `fullUrl`, `Location` and paging links.
    pub base_url: String,
    /// `Prefer: return=…`, if the client sent one. Single-resource writes default to
    /// `representation`; bundle responses default to `minimal` entries (no resource bodies).
    pub return_preference: Option<ReturnPreference>,
    /// `Prefer: handling=strict` (unknown search parameters are errors rather than ignored).
    pub strict_handling: bool,
    /// The authenticated caller; every interaction is checked against it.
    pub principal: Principal,
}

impl RequestContext {
    /// A context with defaults for the given base URL, acting for `principal`.
    pub fn new(base_url: impl Into<String>, principal: Principal) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            return_preference: None,
            strict_handling: false,
            principal,
        }
    }
}

/// The result of an interaction, ready to be written by a transport.
#[derive(Debug, Clone, PartialEq)]
pub struct FhirResponse {
    /// HTTP status code.
    pub status: u16,
    /// Body (a resource, Bundle or OperationOutcome), if any.
    pub body: Option<Value>,
    /// `Location` / `Content-Location` (absolute URL of the version written).
    pub location: Option<String>,
    /// Version of the resource concerned, for `ETag: W/"n"`.
    pub version_id: Option<u64>,
    /// Time of that version, for `Last-Modified`.
    pub last_modified: Option<DateTime<Utc>>,
}

impl FhirResponse {
    /// A response with only a status and a body.
    pub fn with_body(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
            version_id: None,
            last_modified: None,
        }
    }

    /// `ETag` header value, if a version is known.
    pub fn etag(&self) -> Option<String> {
        self.version_id.map(|v| format!("W/\"{v}\""))
    }
}

/// The FHIR interaction engine over one store.
pub struct Engine {
    store: Arc<dyn Store>,
    config: EngineConfig,
    /// Loaded on first use, so that opening an engine stays cheap and infallible.
    mpi: OnceLock<mpi::MpiService>,
    mpi_loading: Mutex<()>,
    rules: WriteRules,
}

impl Engine {
    /// An engine over `store` with `config`.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Self {
        Self {
            store,
            config,
            mpi: OnceLock::new(),
            mpi_loading: Mutex::new(()),
            rules: WriteRules::default(),
        }
    }

    /// Adds a business rule checked on every write (see [`rules`]).
    pub fn add_write_rule(&mut self, rule: std::sync::Arc<dyn WriteRule>) {
        self.rules.push(rule);
    }

    /// The patient index, loaded from the store on first use.
    pub fn mpi(&self) -> FhirResult<&mpi::MpiService> {
        if let Some(loaded) = self.mpi.get() {
            loaded.refresh_if_stale(self.store.as_ref())?;
            return Ok(loaded);
        }
        let _loading = self.mpi_loading.lock();
        if let Some(loaded) = self.mpi.get() {
            return Ok(loaded);
        }
        let service = mpi::MpiService::load(self.store.as_ref(), self.config.mpi.clone())?;
        Ok(self.mpi.get_or_init(|| service))
    }

    /// A write transaction for `principal`: with the index enabled, Patient writes go
    /// through it, and every write passes the registered [`WriteRule`]s.
    pub(crate) fn begin_write(
        &self,
        principal: &Principal,
    ) -> FhirResult<Box<dyn phip_store::Transaction + '_>> {
        let indexed: Box<dyn phip_store::Transaction + '_> = if self.config.mpi.enabled {
            // The index first: loading or refreshing it reads the store through a connection
            // of its own, and a writer already holding one would wait for a second while every
            // other writer holds one waiting for the load — a pool-wide deadlock (seen on CI as
            // ten concurrent first Patient writes stalling 30 s into a 503).
            let index = self.mpi()?;
            Box::new(mpi::IndexedTransaction::new(
                self.store.begin_write()?,
                index,
            ))
        } else {
            self.store.begin_write()?
        };
        if self.rules.is_empty() {
            return Ok(indexed);
        }
        Ok(Box::new(rules::RuledTransaction::new(
            indexed,
            &self.rules,
            principal,
        )))
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn page_size(&self, requested: Option<usize>) -> usize {
        requested
            .unwrap_or(self.config.default_page_size)
            .min(self.config.max_page_size)
    }
}

/// Absolute URL of a stored version: `{base}/{type}/{id}/_history/{vid}`.
pub(crate) fn version_url(base: &str, stored: &StoredResource) -> String {
    format!(
        "{base}/{}/{}/_history/{}",
        stored.resource_type, stored.id, stored.version_id
    )
}

/// Absolute URL of a resource: `{base}/{type}/{id}`.
pub(crate) fn resource_url(base: &str, resource_type: &str, id: &str) -> String {
    format!("{base}/{resource_type}/{id}")
}

/// Parses a query string (`a=1&b=2`) into decoded pairs.
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
