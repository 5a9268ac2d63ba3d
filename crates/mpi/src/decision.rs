//! From a candidate list to what to do with an incoming record.

use serde::{Deserialize, Serialize};

use crate::index::Candidate;
use crate::rules::RuleOutcome;

/// Match-probability thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: link automatically (when a single candidate reaches it).
    pub auto_link: f64,
    /// At or above (and below `auto_link`): a human reviews the pair.
    pub review: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            auto_link: 0.95,
            review: 0.5,
        }
    }
}

/// What to do with a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Decision {
    /// Link to this existing record.
    AutoLink(String),
    /// Ask a human; the candidates worth showing, best first.
    Review(Vec<Candidate>),
    /// No plausible match: a new person.
    NewPerson,
}

/// Decides from `candidates` (any order):
/// - exactly one deterministic match → link to it; several → review them;
/// - exactly one candidate at or above `auto_link` (rule conflicts never count) → link;
///   several → review (one of them would be merged wrongly);
/// - any candidate at or above `review`, or with a rule conflict → review those;
/// - otherwise a new person.
pub fn decide(candidates: &[Candidate], thresholds: &Thresholds) -> Decision {
    let mut sorted: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !c.rule.as_ref().is_some_and(RuleOutcome::is_non_match))
        .collect();
    sorted.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    let certain: Vec<&Candidate> = sorted
        .iter()
        .copied()
        .filter(|c| matches!(c.rule, Some(RuleOutcome::SameTrustedIdentifier { .. })))
        .collect();
    if certain.len() == 1 {
        return Decision::AutoLink(certain[0].id.clone());
    }
    if certain.len() > 1 {
        return Decision::Review(certain.into_iter().cloned().collect());
    }
    let conflict = |c: &Candidate| matches!(c.rule, Some(RuleOutcome::IdentifierConflict { .. }));
    let high: Vec<&Candidate> = sorted
        .iter()
        .copied()
        .filter(|c| !conflict(c) && c.probability >= thresholds.auto_link)
        .collect();
    if high.len() == 1 {
        return Decision::AutoLink(high[0].id.clone());
    }
    let review: Vec<Candidate> = sorted
        .into_iter()
        .filter(|c| conflict(c) || c.probability >= thresholds.review)
        .cloned()
        .collect();
    if review.is_empty() {
        Decision::NewPerson
    } else {
        Decision::Review(review)
    }
}
