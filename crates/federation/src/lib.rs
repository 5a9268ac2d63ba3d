//! The four-level platform (national, provincial, municipal, county): a hierarchy of phip
//! nodes that share a record locator and roll indicators up, while clinical records stay
//! where they were written.
//!
//! - [`config`]: a node's level, GB/T 2260 division, parent and trusted peers.
//! - [`trust`]: nodes authenticate each other with ES256 service tokens signed by their own
//!   key rings; each node lists its peers' public keys in a trust file.
//! - [`publisher`]: the transactional outbox. Golden-record and MeasureReport versions are in
//!   the store's history, written in the same database transaction as the change; a task
//!   follows that history from a durable cursor and posts index entries to the parent,
//!   advancing only after the parent acknowledges.
//! - [`apply`]: the parent's idempotent apply, keyed by (source node, source record, source
//!   version), feeding index entries through the parent's own patient index.
//! - [`locate`] and [`lookup`]: the cross-node record locator query and the federated
//!   `$everything` (IHE XCPD/XCA in spirit, FHIR in form).
//! - [`rollup`]: MeasureReport population counts summed up the hierarchy.
//! - [`national`]: the write rule that keeps a national node an index only.

pub mod apply;
pub mod config;
pub mod entry;
pub mod locate;
pub mod lookup;
pub mod national;
pub mod publisher;
pub mod rollup;
pub mod trust;

use std::sync::Arc;

pub use config::{Level, NodeConfig, PeerAccess, PublisherConfig};
pub use trust::{Peer, Trust};

/// Code system of the federation's tags.
pub const FEDERATION_SYSTEM: &str = "urn:phip:federation";
/// Tag code of an index entry (a Patient standing for a person known at another node).
pub const INDEX_ENTRY_TAG: &str = "index-entry";
/// Tag code of a MeasureReport received from a child node (kept for drill-down, never
/// published again).
pub const RECEIVED_TAG: &str = "received";
/// Tag code of a MeasureReport this node computed by summing its children's.
pub const ROLLUP_TAG: &str = "rollup";
/// Extension naming where a federated resource came from (node, endpoint, record, version).
pub const SOURCE_EXTENSION: &str = "https://phip.cn/fhir/StructureDefinition/federation-source";
/// Extension on an index entry listing a node that holds records of the person.
pub const HOLDER_EXTENSION: &str = "https://phip.cn/fhir/StructureDefinition/federation-holder";
/// Extension on an index entry counting the person's records of one type at the holder.
pub const SUMMARY_EXTENSION: &str =
    "https://phip.cn/fhir/StructureDefinition/federation-record-summary";
/// Identifier system of the resident identity card number (GB 11643).
pub const RESIDENT_ID_SYSTEM: &str = "urn:oid:2.16.156.10011.1.1";
/// The role carried by service tokens nodes mint for each other.
pub const NODE_ROLE: &str = "federation-node";

/// Everything a running node needs for federation: its settings, its trusted peers, the
/// token issuer for its outgoing calls and an HTTP client.
pub struct Federation {
    /// This node's settings.
    pub config: NodeConfig,
    /// The peers whose service tokens this node accepts.
    pub trust: Trust,
    issuer: phip_security::token::TokenIssuer,
    http: reqwest::Client,
    audit: Option<phip_audit::AuditLog>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("node", &self.config.node_id)
            .field("level", &self.config.level)
            .field("peers", &self.trust.peers().len())
            .finish()
    }
}

/// Errors setting a node up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

impl Federation {
    /// A node signing its service tokens with the active ES256 key of `ring`; outgoing
    /// lookups are recorded in `audit` when given.
    pub fn new(
        config: NodeConfig,
        trust: Trust,
        ring: &phip_security::keys::KeyRing,
        audit: Option<phip_audit::AuditLog>,
    ) -> Result<Arc<Self>, SetupError> {
        config.check()?;
        let issuer = phip_security::token::TokenIssuer::from_key_ring(
            ring,
            trust::issuer_of(&config.base_url),
            config.base_url.clone(),
        )
        .map_err(|e| SetupError(e.to_string()))?;
        let mut http =
            reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(2));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| SetupError(format!("reading {}: {e}", path.display())))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SetupError(format!("{}: {e}", path.display())))?;
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        let http = http
            .build()
            .map_err(|e| SetupError(format!("HTTP client: {e}")))?;
        Ok(Arc::new(Self {
            config,
            trust,
            issuer,
            http,
            audit,
        }))
    }

    /// The HTTP client for calls to other nodes.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A short-lived service token for a call to `audience` (another node's FHIR base), acting
    /// for `on_behalf_of` (the clinician whose request caused the call) or for the node itself.
    pub fn service_token(
        &self,
        audience: &str,
        scope: &str,
        on_behalf_of: Option<&phip_engine::Principal>,
    ) -> Result<String, phip_security::token::TokenError> {
        let own = format!("node:{}", self.config.node_id);
        let mut grant = phip_security::token::Grant {
            sub: own.clone(),
            audience: Some(audience.trim_end_matches('/').to_owned()),
            scope: scope.to_owned(),
            client_id: Some(own),
            division: (self.config.level != Level::National).then(|| self.config.division.clone()),
            roles: vec![NODE_ROLE.to_owned()],
            ..Default::default()
        };
        if let Some(clinician) = on_behalf_of {
            grant.sub = clinician.subject.clone();
            grant.org = clinician.organization.clone();
            grant.division = clinician.division.clone();
            grant.roles.extend(clinician.roles.iter().cloned());
        }
        self.issuer
            .mint(&grant, std::time::Duration::from_secs(120))
            .map(|m| m.token)
    }

    /// Records an outgoing call in the audit trail (the receiving node records it too).
    pub(crate) fn audit_outgoing(
        &self,
        on_behalf_of: &phip_engine::Principal,
        target: &str,
        outcome: Result<u16, String>,
        patient: Option<&str>,
    ) {
        let Some(log) = &self.audit else {
            return;
        };
        use phip_audit::event::{Agent, AuditRecord, Interaction, Outcome, Source};
        let (result, desc) = match outcome {
            Ok(status) => (Outcome::from_http_status(status), format!("HTTP {status}")),
            Err(reason) => (Outcome::from_http_status(504), reason),
        };
        let mut record = AuditRecord::new(Interaction::Operation, result)
            .agent(Agent {
                sub: Some(on_behalf_of.subject.clone()),
                client_id: on_behalf_of.client_id.clone(),
                organization: on_behalf_of
                    .organization
                    .as_ref()
                    .map(|o| format!("Organization/{o}")),
                reference: None,
                name: None,
                roles: on_behalf_of.roles.clone(),
                network_address: None,
            })
            .source(Source {
                node: format!("phip-node:{}", self.config.node_id),
                site: Some(self.config.division.clone()),
            })
            .query(target.to_owned())
            .detail(format!("outgoing federation call: {desc}"));
        if let Some(patient) = patient {
            record = record.patient(patient);
        }
        if let Some(reason) = &on_behalf_of.break_glass {
            record = record.purpose(phip_audit::event::Coding::break_the_glass());
            record = record.outcome_desc(format!("break the glass: {reason}"));
        }
        if let Err(error) = log.append_one(record) {
            tracing::error!(%error, "could not audit an outgoing federation call");
        }
    }
}

/// Installs the node's write rules in `engine` (a national node keeps only the index).
pub fn install(engine: &mut phip_engine::Engine, config: &NodeConfig) {
    if config.level == Level::National {
        engine.add_write_rule(Arc::new(national::IndexOnly::new(
            config.national_allowed_types.clone(),
        )));
    }
}

/// A stable resource id for `parts` (so the same source always maps to the same resource):
/// `prefix-` and 40 hex digits of their SM3 digest, within FHIR's 64-character id limit.
pub(crate) fn hash_id(prefix: &str, parts: &[&str]) -> String {
    let joined = parts.join("|");
    let digest = phip_security::sm::sm3_hex(joined.as_bytes());
    format!("{prefix}-{}", &digest[..40])
}
