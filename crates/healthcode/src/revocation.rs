//! SMART Health Cards revocation: a per-key revocation list (CRL) of `rid`s.
//!
//! A code carries `vc.rid`, an opaque id of the resident under the signing key (see
//! [`crate::IssuerKeys::rid`]). The issuer publishes `[iss]/.well-known/crl/[kid].json`:
//!
//! ```json
//! {"kid": "…", "method": "rid", "ctr": 3, "rids": ["Fb0ZEkT0HMk.1764000000"]}
//! ```
//!
//! An entry `rid` revokes every code with that rid; `rid.timestamp` revokes only codes whose
//! `nbf` is before the timestamp (seconds since the epoch). phip always writes the timestamp
//! form: revoking a resident's code (a lost phone, a leaked screenshot) invalidates every code
//! issued so far, and a refreshed code issued afterwards is valid again. `ctr` grows with
//! every change, so verifiers caching a CRL know when to fetch it again.

use serde::{Deserialize, Serialize};

use crate::HealthCodeError;

/// A revocation list for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crl {
    /// The key whose codes the list covers.
    pub kid: String,
    /// Always `rid`.
    pub method: String,
    /// Version counter; grows with every change.
    pub ctr: u64,
    /// Revoked `rid`s, each optionally followed by `.timestamp`.
    pub rids: Vec<String>,
}

impl Crl {
    /// An empty list for `kid`.
    pub fn empty(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            method: "rid".into(),
            ctr: 0,
            rids: Vec::new(),
        }
    }

    /// Parses a CRL document, refusing other revocation methods.
    pub fn from_json(text: &str) -> Result<Self, HealthCodeError> {
        let crl: Crl = serde_json::from_str(text)
            .map_err(|e| HealthCodeError::Malformed(format!("revocation list: {e}")))?;
        if crl.method != "rid" {
            return Err(HealthCodeError::Malformed(format!(
                "revocation method {:?} is not supported (only rid)",
                crl.method
            )));
        }
        Ok(crl)
    }

    /// Whether a code with `rid` and `nbf` is revoked by this list.
    pub fn revokes(&self, rid: &str, nbf: i64) -> bool {
        self.rids.iter().any(|entry| entry_revokes(entry, rid, nbf))
    }
}

/// Whether one CRL entry (`rid` or `rid.timestamp`) revokes a code with `rid` and `nbf`.
pub fn entry_revokes(entry: &str, rid: &str, nbf: i64) -> bool {
    match entry.split_once('.') {
        None => entry == rid,
        Some((entry_rid, timestamp)) => {
            // An unreadable timestamp revokes unconditionally: failing closed is the safe side.
            entry_rid == rid && timestamp.parse::<i64>().map_or(true, |t| nbf < t)
        }
    }
}

/// The CRL entry that revokes every code of `rid` issued before `revoked_before`.
pub fn entry(rid: &str, revoked_before: i64) -> String {
    format!("{rid}.{revoked_before}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamped_and_plain_entries() {
        let crl = Crl {
            kid: "k".into(),
            method: "rid".into(),
            ctr: 2,
            rids: vec![entry("aaa", 1000), "bbb".into(), "ccc.garbage".into()],
        };
        assert!(crl.revokes("aaa", 999));
        assert!(
            !crl.revokes("aaa", 1000),
            "issued at the revocation time: after it"
        );
        assert!(!crl.revokes("aaa", 5000));
        assert!(crl.revokes("bbb", i64::MAX));
        assert!(crl.revokes("ccc", 1));
        assert!(!crl.revokes("ddd", 1));
        let text = serde_json::to_string(&crl).unwrap();
        assert_eq!(Crl::from_json(&text).unwrap(), crl);
        assert!(Crl::from_json(r#"{"kid":"k","method":"other","ctr":1,"rids":[]}"#).is_err());
        assert!(Crl::from_json("[]").is_err());
    }
}
