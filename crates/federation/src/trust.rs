//! Which nodes this node trusts, and checking their service tokens.
//!
//! Each node signs its service tokens with its own key ring (ES256). The trust file lists the
//! other nodes: their id, FHIR base URL and public keys (JWKS). A token is a peer's when it
//! verifies against that peer's keys, its issuer is the peer's (`{base}/auth`, as phip names
//! issuers) and its audience is this node's base URL.

use std::path::Path;

use phip_security::jws::Jwks;
use phip_security::token::{Claims, TokenValidator};
use serde::{Deserialize, Serialize};

use crate::SetupError;

/// The issuer name of a node's tokens, derived from its FHIR base URL the way `phip serve`
/// derives it.
pub fn issuer_of(base_url: &str) -> String {
    format!("{}/auth", base_url.trim_end_matches('/'))
}

/// Another node of the federation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    /// Its node id.
    pub node_id: String,
    /// Its FHIR base URL.
    pub base_url: String,
    /// Its public keys.
    pub jwks: Jwks,
}

impl Peer {
    /// Its issuer name.
    pub fn issuer(&self) -> String {
        issuer_of(&self.base_url)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TrustFile {
    peers: Vec<Peer>,
}

/// The trusted peers of a node.
#[derive(Debug, Default)]
pub struct Trust {
    peers: Vec<Peer>,
    validator: Option<TokenValidator>,
}

/// A verified call from a peer.
#[derive(Debug, Clone)]
pub struct PeerCall {
    /// The calling node.
    pub peer: Peer,
    /// The token's claims (the clinician the call is made for, or the node itself).
    pub claims: Claims,
}

impl Trust {
    /// Trusts `peers`; their tokens must be addressed to `own_base_url`.
    pub fn new(own_base_url: &str, peers: Vec<Peer>) -> Self {
        let mut validator = TokenValidator::new(own_base_url.trim_end_matches('/'));
        for peer in &peers {
            validator = validator.trust_issuer(peer.issuer(), peer.jwks.clone());
        }
        Self {
            peers,
            validator: Some(validator),
        }
    }

    /// Reads a trust file (`{"peers": [{"node_id", "base_url", "jwks"}]}`).
    pub fn load(path: &Path, own_base_url: &str) -> Result<Self, SetupError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SetupError(format!("reading {}: {e}", path.display())))?;
        let file: TrustFile = serde_json::from_str(&text)
            .map_err(|e| SetupError(format!("{} is not a trust file: {e}", path.display())))?;
        Ok(Self::new(own_base_url, file.peers))
    }

    /// Writes a trust file.
    pub fn save(path: &Path, peers: &[Peer]) -> Result<(), SetupError> {
        let file = TrustFile {
            peers: peers.to_vec(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| SetupError(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| SetupError(format!("writing {}: {e}", path.display())))
    }

    /// The trusted peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The issuers and keys to accept at the API's front door.
    pub fn issuers(&self) -> Vec<(String, Jwks)> {
        self.peers
            .iter()
            .map(|p| (p.issuer(), p.jwks.clone()))
            .collect()
    }

    /// The peer that signed `token`, if it is a valid service token of a trusted peer
    /// carrying the node role.
    pub fn verify(&self, token: &str) -> Option<PeerCall> {
        let claims = self.validator.as_ref()?.validate(token).ok()?;
        if !claims.roles.iter().any(|r| r == crate::NODE_ROLE) {
            return None;
        }
        let peer = self
            .peers
            .iter()
            .find(|p| p.issuer() == claims.iss)?
            .clone();
        Some(PeerCall { peer, claims })
    }

    /// The peer with this base URL.
    pub fn by_base(&self, base_url: &str) -> Option<&Peer> {
        let base = base_url.trim_end_matches('/');
        self.peers
            .iter()
            .find(|p| p.base_url.trim_end_matches('/') == base)
    }
}
