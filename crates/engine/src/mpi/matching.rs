//! The engine's view of the `phip-mpi` matcher: Patient JSON in, graded candidates out.

use phip_mpi::compare::Field;
use phip_mpi::index::{IndexConfig, MatchIndex};
use phip_mpi::model::Model;
use phip_mpi::record::MatchRecord;
use phip_mpi::rules::RuleOutcome;
use phip_mpi::{TrainOptions, TrainReport};
use serde_json::{json, Value};

/// What the index remembers of a source record (kept for rollbacks).
pub(crate) type IndexedRecord = MatchRecord;

/// Candidates below this probability are noise, not worth a reviewer's or a client's time.
const FLOOR: f64 = 0.05;

/// FHIR `match-grade` of a candidate
/// (<http://hl7.org/fhir/StructureDefinition/match-grade>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchGrade {
    /// Meets the criteria for an automatic link.
    Certain,
    /// Close, but a human should confirm.
    Probable,
    /// May match; needs review.
    Possible,
}

impl MatchGrade {
    /// The code of the grade.
    pub fn code(self) -> &'static str {
        match self {
            MatchGrade::Certain => "certain",
            MatchGrade::Probable => "probable",
            MatchGrade::Possible => "possible",
        }
    }
}

/// A scored source record.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub source_id: String,
    pub probability: f64,
    /// False when a deterministic rule forbids an automatic link (a shared identifier with a
    /// conflicting birth date or sex).
    pub may_auto_link: bool,
    pub grade: MatchGrade,
    /// Per-field levels and weights, plus the rule that fired, as JSON for reviewers.
    pub breakdown: Value,
}

/// Blocking index and Fellegi–Sunter scorer over the source records.
pub(crate) struct Matcher {
    index: MatchIndex,
    auto_link: f64,
    review: f64,
}

impl Matcher {
    pub fn new(auto_link: f64, review: f64) -> Self {
        Self {
            index: MatchIndex::new(Model::default(), IndexConfig::default()),
            auto_link,
            review,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Fits the Fellegi–Sunter weights to the indexed records by EM (u seeded from random
    /// pairs, m, u and λ fitted on blocked pairs) and scores with them from now on.
    pub fn train(&mut self) -> TrainReport {
        let records: Vec<MatchRecord> = self.index.records().map(|(_, r)| r.clone()).collect();
        let (model, report) = phip_mpi::train(&records, &TrainOptions::default());
        self.index.set_model(model);
        report
    }

    /// Indexes (or re-indexes) a source record; returns what was indexed before.
    pub fn insert(&mut self, id: &str, patient: &Value) -> Option<IndexedRecord> {
        let previous = self.index.remove(id);
        self.index.insert(id, MatchRecord::from_patient(patient));
        previous
    }

    pub fn remove(&mut self, id: &str) -> Option<IndexedRecord> {
        self.index.remove(id)
    }

    /// Puts back what [`Matcher::insert`] or [`Matcher::remove`] replaced.
    pub fn restore(&mut self, id: &str, previous: Option<IndexedRecord>) {
        self.index.remove(id);
        if let Some(record) = previous {
            self.index.insert(id, record);
        }
    }

    /// Source records that may be the person `patient` describes, best first. Certain
    /// non-matches (two different valid resident IDs) are left out.
    pub fn candidates(&self, patient: &Value) -> Vec<Candidate> {
        let record = MatchRecord::from_patient(patient);
        let mut out: Vec<Candidate> = self
            .index
            .candidates(&record)
            .into_iter()
            .filter(|c| !c.rule.as_ref().is_some_and(RuleOutcome::is_non_match))
            .filter(|c| c.probability >= FLOOR || c.rule.is_some())
            .map(|c| {
                let conflict = matches!(c.rule, Some(RuleOutcome::IdentifierConflict { .. }));
                let certain = matches!(c.rule, Some(RuleOutcome::SameTrustedIdentifier { .. }));
                // Name, birth date and sex alone never link automatically, however high the
                // score: a common name (张伟 is shared by some 300,000 people) born on the
                // same day is not rare across a province. Some agreement on a contact or
                // identity field must corroborate, otherwise a human decides.
                let corroborated = certain
                    || c.breakdown.iter().any(|f| {
                        matches!(
                            f.field,
                            Field::Phone
                                | Field::Identifier
                                | Field::Division
                                | Field::Postcode
                                | Field::Locality
                                | Field::Street
                        ) && f.level == 0
                            && f.weight > 0.0
                    });
                let may_auto_link = !conflict && corroborated;
                let grade = if certain || (may_auto_link && c.probability >= self.auto_link) {
                    MatchGrade::Certain
                } else if c.probability >= self.review {
                    MatchGrade::Probable
                } else {
                    MatchGrade::Possible
                };
                // A conflict is always a candidate for review, whatever its score.
                let probability = if conflict {
                    c.probability
                        .clamp(self.review, self.auto_link - f64::EPSILON)
                } else {
                    c.probability
                };
                let breakdown = json!({
                    "weight": (c.weight * 100.0).round() / 100.0,
                    "rule": c.rule,
                    "fields": c.breakdown.iter().map(|f| json!({
                        "field": f.field,
                        "level": f.level,
                        "weight": (f.weight * 100.0).round() / 100.0,
                    })).collect::<Vec<_>>(),
                });
                Candidate {
                    source_id: c.id,
                    probability,
                    may_auto_link,
                    grade,
                    breakdown,
                }
            })
            .collect();
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        out
    }
}
