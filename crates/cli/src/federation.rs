//! Node settings of `phip serve` (the `[federation]` table of the configuration file) and
//! starting the node's federation services.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use phip_federation::{Federation, Level, NodeConfig, PeerAccess, Trust};
use serde::Deserialize;

/// The `[federation]` table: this server's place in the four-level platform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFile {
    /// Short stable node name, unique in the federation (e.g. `gd`).
    pub node_id: String,
    /// `national`, `provincial`, `municipal` or `county`.
    pub level: Level,
    /// GB/T 2260 code of the division served (`000000` for the national node).
    pub division: String,
    /// The parent node's FHIR base URL (all but the national node).
    pub parent: Option<String>,
    /// The record locator's FHIR base URL, when not the parent (e.g. a county node asking
    /// the national locator directly).
    pub locator: Option<String>,
    /// JSON file listing the trusted peer nodes and their public keys.
    pub trust_file: PathBuf,
    /// Deadline of a federated lookup, in milliseconds [default: 3000].
    pub lookup_deadline_ms: Option<u64>,
    /// Pause between outbox scans when idle, in milliseconds [default: 2000].
    pub publish_interval_ms: Option<u64>,
    /// First retry delay of a failed delivery, in milliseconds [default: 1000].
    pub retry_initial_ms: Option<u64>,
    /// Largest retry delay, in milliseconds [default: 300000].
    pub retry_max_ms: Option<u64>,
    /// Entries per delivery [default: 200].
    pub batch_size: Option<usize>,
    /// How this node answers other nodes' clinicians: `share` (default; residents' consent
    /// denials apply) or `consent-only` (only residents who permitted the organisation).
    pub peer_access: Option<PeerAccess>,
    /// On a national node, resource types accepted besides index entries.
    pub national_allowed_types: Option<Vec<String>>,
    /// PEM CA certificates trusted for https calls to other nodes (besides the web roots).
    pub ca_file: Option<PathBuf>,
}

impl FederationFile {
    /// The node settings, given the server's public base URL.
    pub fn node_config(&self, base_url: Option<&str>) -> anyhow::Result<NodeConfig> {
        let base = base_url.context(
            "a federation node needs its public base URL (base_url / --base-url): other nodes call it and address their tokens to it",
        )?;
        let mut node = NodeConfig::new(&self.node_id, self.level, &self.division, base);
        node.parent = self.parent.clone();
        node.locator = self.locator.clone();
        let ms = Duration::from_millis;
        if let Some(v) = self.lookup_deadline_ms {
            node.lookup_deadline = ms(v);
        }
        if let Some(v) = self.publish_interval_ms {
            node.publisher.poll_interval = ms(v);
        }
        if let Some(v) = self.retry_initial_ms {
            node.publisher.initial_backoff = ms(v);
        }
        if let Some(v) = self.retry_max_ms {
            node.publisher.max_backoff = ms(v);
        }
        if let Some(v) = self.batch_size {
            node.publisher.batch_size = v.max(1);
        }
        if let Some(v) = self.peer_access {
            node.peer_access = v;
        }
        if let Some(types) = &self.national_allowed_types {
            node.national_allowed_types = types.clone();
        }
        node.ca_file = self.ca_file.clone();
        node.check().map_err(anyhow::Error::msg)?;
        Ok(node)
    }

    /// The trusted peers.
    pub fn trust(&self, base_url: &str) -> anyhow::Result<Trust> {
        Trust::load(&self.trust_file, base_url).map_err(anyhow::Error::msg)
    }
}

/// The node's federation service over `data_dir`'s key ring, auditing to `audit`.
pub fn start(
    node: NodeConfig,
    trust: Trust,
    data_dir: &Path,
    audit: phip_audit::AuditLog,
) -> anyhow::Result<Arc<Federation>> {
    let ring = phip_security::keys::KeyRing::open(data_dir).context("opening the key ring")?;
    Federation::new(node, trust, &ring, Some(audit)).map_err(anyhow::Error::msg)
}
