//! A node's place in the hierarchy and its federation settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SetupError;

/// The administrative level a node serves (the four levels of China's population health
/// information platforms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The national platform: a record locator and indicator roll-ups, no clinical records.
    National,
    /// A provincial platform: the records of the province's institutions.
    Provincial,
    /// A municipal (prefecture-level city) platform, optional.
    Municipal,
    /// A county platform, optional.
    County,
}

impl Level {
    /// The lowercase name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::National => "national",
            Level::Provincial => "provincial",
            Level::Municipal => "municipal",
            Level::County => "county",
        }
    }
}

/// How a holding node treats clinicians of other nodes asking for its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerAccess {
    /// Residents' records are shared with treating clinicians elsewhere unless the resident's
    /// Consent denies it (the platform's default of sharing within the access rules); the
    /// holding node's own regional restriction does not apply to them.
    #[default]
    Share,
    /// Only records whose resident has a Consent permitting the requesting organisation are
    /// returned (the holding node's regional restriction applies in full).
    ConsentOnly,
}

/// Settings of the outbox publisher.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Pause between scans of the history when nothing is pending.
    pub poll_interval: Duration,
    /// First retry delay after a failed delivery.
    pub initial_backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
    /// Largest number of entries per request to the parent.
    pub batch_size: usize,
    /// How far before the cursor each scan looks again, for transactions that committed after
    /// later ones (a version's time is taken when written, not when committed).
    pub overlap: Duration,
    /// Longest stretch of history scanned at once.
    pub max_window: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            batch_size: 200,
            overlap: Duration::from_secs(10),
            max_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// A node's federation settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Short stable name of the node (e.g. `gd` for Guangdong), unique in the federation.
    pub node_id: String,
    /// The level it serves.
    pub level: Level,
    /// GB/T 2260 code of the division it serves (`000000` for the national node).
    pub division: String,
    /// Its public FHIR base URL (what other nodes call; also the audience of their tokens).
    pub base_url: String,
    /// The parent node's FHIR base URL (none for the national node).
    pub parent: Option<String>,
    /// The national node's FHIR base URL, where lookups find which nodes hold a person's
    /// records (defaults to the parent).
    pub locator: Option<String>,
    /// How long a federated lookup waits for other nodes in total.
    pub lookup_deadline: Duration,
    /// The outbox publisher.
    pub publisher: PublisherConfig,
    /// How this node answers other nodes' clinicians.
    pub peer_access: PeerAccess,
    /// On a national node, the resource types clients may write besides index entries.
    pub national_allowed_types: Vec<String>,
    /// PEM CA certificates trusted for `https` calls to other nodes, besides the public web
    /// roots (e.g. the health commission's own CA).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Resource types a national node accepts by default: the index's own bookkeeping,
/// aggregate reports and directory resources — nothing clinical.
pub const NATIONAL_ALLOWED_TYPES: &[&str] = &[
    "MeasureReport",
    "Measure",
    "Organization",
    "Endpoint",
    "Location",
    "Subscription",
    "Task",
];

impl NodeConfig {
    /// A node with default timings.
    pub fn new(
        node_id: impl Into<String>,
        level: Level,
        division: impl Into<String>,
        base_url: impl Into<String>,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            level,
            division: division.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            parent: None,
            locator: None,
            lookup_deadline: Duration::from_secs(3),
            publisher: PublisherConfig::default(),
            peer_access: PeerAccess::default(),
            national_allowed_types: NATIONAL_ALLOWED_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            ca_file: None,
        }
    }

    /// Where lookups ask who holds a person's records.
    pub fn locator_url(&self) -> Option<&str> {
        self.locator.as_deref().or(self.parent.as_deref())
    }

    /// Checks the settings hang together.
    pub fn check(&self) -> Result<(), SetupError> {
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 32
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return Err(SetupError(format!(
                "node id {:?} must be 1-32 letters, digits, '-' or '_'",
                self.node_id
            )));
        }
        if self.level == Level::National {
            if self.parent.is_some() {
                return Err(SetupError("a national node has no parent".into()));
            }
        } else {
            if !phip_security::division::is_valid_code(&self.division) {
                return Err(SetupError(format!(
                    "division {:?} is not a GB/T 2260 code",
                    self.division
                )));
            }
            if self.parent.is_none() {
                return Err(SetupError(format!(
                    "a {} node needs a parent URL",
                    self.level.as_str()
                )));
            }
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(SetupError(format!(
                "base URL {:?} must be an http(s) URL",
                self.base_url
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provincial_needs_parent_and_division() {
        let mut node = NodeConfig::new("gd", Level::Provincial, "440000", "http://gd/fhir");
        assert!(node.check().is_err());
        node.parent = Some("http://nat/fhir".into());
        assert!(node.check().is_ok());
        node.division = "44".into();
        assert!(node.check().is_err());
        let national = NodeConfig::new("cn", Level::National, "000000", "http://nat/fhir");
        assert!(national.check().is_ok());
        assert_eq!(national.locator_url(), None);
    }

    #[test]
    fn node_ids_are_plain() {
        let mut node = NodeConfig::new("a/b", Level::National, "000000", "http://n/fhir");
        assert!(node.check().is_err());
        node.node_id = "national-1".into();
        assert!(node.check().is_ok());
    }
}
