//! The dispatcher's durable state: who owns each Subscription version, and how far each
//! subscription's delivery has got in the store's history.
//!
//! Kept as one JSON document, replaced atomically (write a temporary file, fsync, rename), so
//! a crash leaves either the old or the new state and never a torn one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::owner::Owner;

/// Owner records kept per subscription (older versions can no longer be current).
const OWNERS_KEPT: usize = 16;

/// Durable state of one subscription.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SubscriptionState {
    /// Owner of each version written through the API.
    #[serde(default)]
    pub owners: BTreeMap<u64, Owner>,
    /// Versions the dispatcher wrote itself (status changes): they keep the previous owner.
    #[serde(default)]
    pub system_versions: BTreeSet<u64>,
    /// Every change before this instant (less the overlap window) has been handled.
    #[serde(default)]
    pub cursor: Option<DateTime<Utc>>,
    /// Changes at or after `cursor - overlap` already handled, `type/id/version` → time.
    #[serde(default)]
    pub seen: BTreeMap<String, DateTime<Utc>>,
}

impl SubscriptionState {
    /// The owner of `version`: the writer of that version, or for a version the dispatcher
    /// wrote, the owner of the version before it.
    pub fn owner_of(&self, mut version: u64) -> Option<&Owner> {
        loop {
            if let Some(owner) = self.owners.get(&version) {
                return Some(owner);
            }
            if version > 1 && self.system_versions.contains(&version) {
                version -= 1;
            } else {
                return None;
            }
        }
    }

    fn prune(&mut self) {
        while self.owners.len() > OWNERS_KEPT {
            self.owners.pop_first();
        }
        let oldest = self.owners.keys().next().copied().unwrap_or(0);
        self.system_versions.retain(|v| *v > oldest);
    }
}

/// All subscriptions' state, and the file it lives in.
#[derive(Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
    /// By Subscription id.
    pub subscriptions: BTreeMap<String, SubscriptionState>,
}

impl StateFile {
    /// Loads `dir/state.json`, or starts empty.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("state.json");
        let subscriptions = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            subscriptions,
        })
    }

    /// The state of one subscription, created empty if needed.
    pub fn entry(&mut self, id: &str) -> &mut SubscriptionState {
        self.subscriptions.entry(id.to_owned()).or_default()
    }

    /// Records the writer of a version.
    pub fn record_owner(&mut self, id: &str, version: u64, owner: Owner) {
        let state = self.entry(id);
        state.owners.insert(version, owner);
        state.prune();
    }

    /// Writes the state durably.
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.subscriptions)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // The rename itself must reach the disk too.
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phip_engine::Principal;

    #[test]
    fn owner_carries_over_system_versions_only() {
        let mut state = SubscriptionState::default();
        let owner = Owner::from_principal(&Principal::unrestricted("a"));
        state.owners.insert(1, owner.clone());
        state.system_versions.insert(2);
        state.system_versions.insert(3);
        assert_eq!(state.owner_of(3), Some(&owner));
        // Version 4 was written by someone else whose identity was not recorded.
        assert_eq!(state.owner_of(4), None);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::open(dir.path()).unwrap();
        file.record_owner(
            "s1",
            1,
            Owner::from_principal(&Principal::unrestricted("a")),
        );
        file.entry("s1").cursor = Some(Utc::now());
        file.save().unwrap();
        let again = StateFile::open(dir.path()).unwrap();
        assert_eq!(again.subscriptions["s1"].owners.len(), 1);
        assert!(again.subscriptions["s1"].cursor.is_some());
    }
}
