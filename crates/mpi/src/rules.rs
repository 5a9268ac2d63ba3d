//! Deterministic rules, applied before the probabilistic score.
//!
//! - Two records with different *valid* values of an exclusive identifier system (the resident
//!   ID) are different people, whatever else agrees: twins share names, birth dates and
//!   addresses, and merging two people is the costliest error an MPI can make.
//! - Two records sharing a value of a trusted system (resident ID, passport, an institution's
//!   MRN) whose birth dates and sexes do not conflict are the same person.
//! - Sharing a trusted value with a conflicting birth date or sex is a data error (a mistyped
//!   or borrowed ID): never linked automatically, always reviewed.

use serde::{Deserialize, Serialize};

use crate::record::{MatchRecord, RecordIdentifier, Sex};

/// What the rules concluded about a pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum RuleOutcome {
    /// Same trusted identifier, compatible birth date and sex: certain match.
    SameTrustedIdentifier {
        /// The shared identifier's system.
        system: String,
    },
    /// Different valid values of an exclusive system: certain non-match.
    DifferentExclusiveIdentifier {
        /// The system.
        system: String,
    },
    /// Same trusted identifier but conflicting birth date or sex: must be reviewed.
    IdentifierConflict {
        /// The shared identifier's system.
        system: String,
        /// What conflicts (`"birth date"`, `"sex"`).
        conflict: String,
    },
}

impl RuleOutcome {
    /// Whether this outcome forbids linking the pair.
    pub fn is_non_match(&self) -> bool {
        matches!(self, RuleOutcome::DifferentExclusiveIdentifier { .. })
    }
}

fn usable(i: &RecordIdentifier) -> bool {
    i.valid
}

/// Applies the rules to a pair; `None` when they decide nothing and the score decides.
pub fn evaluate(a: &MatchRecord, b: &MatchRecord) -> Option<RuleOutcome> {
    // Exclusive systems first: different people even if they share, say, an MRN by mistake.
    for x in a
        .identifiers
        .iter()
        .filter(|i| i.class.exclusive && usable(i))
    {
        let theirs: Vec<&RecordIdentifier> = b
            .identifiers
            .iter()
            .filter(|y| y.system == x.system && usable(y))
            .collect();
        let ours = a
            .identifiers
            .iter()
            .filter(|y| y.system == x.system && usable(y));
        if !theirs.is_empty()
            && !ours
                .clone()
                .any(|o| theirs.iter().any(|t| t.value == o.value))
        {
            return Some(RuleOutcome::DifferentExclusiveIdentifier {
                system: x.system.clone(),
            });
        }
    }
    for x in a
        .identifiers
        .iter()
        .filter(|i| i.class.trusted && usable(i))
    {
        if b.identifiers
            .iter()
            .any(|y| y.system == x.system && y.value == x.value && usable(y))
        {
            let conflict = conflict(a, b);
            return Some(match conflict {
                None => RuleOutcome::SameTrustedIdentifier {
                    system: x.system.clone(),
                },
                Some(what) => RuleOutcome::IdentifierConflict {
                    system: x.system.clone(),
                    conflict: what.to_string(),
                },
            });
        }
    }
    None
}

/// What makes two records sharing an identifier incompatible, if anything.
fn conflict(a: &MatchRecord, b: &MatchRecord) -> Option<&'static str> {
    if let (Some(x), Some(y)) = (a.birth_date, b.birth_date) {
        if !x.compatible(&y) {
            return Some("birth date");
        }
    }
    if let (Some(x), Some(y)) = (a.sex, b.sex) {
        if x != y && x != Sex::Other && y != Sex::Other {
            return Some("sex");
        }
    }
    None
}
