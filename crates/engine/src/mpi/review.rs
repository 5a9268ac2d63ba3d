//! Review-queue items: a `Task` per "possibly the same person" pair.
//!
//! `Task.focus` is the new source record, `Task.for` the golden record of the person it may
//! belong to, and the inputs carry the candidate source, the probability, the match grade
//! and the per-field score breakdown, so a data steward sees why the pair was proposed.
//! `status` is `requested` while open, `completed` once accepted (the persons were merged)
//! and `rejected` once declared different persons (the pair is never proposed again).

use chrono::Utc;
use serde_json::{json, Value};

use super::matching::Candidate;
use super::{MPI_SYSTEM, REVIEW_TASK_CODE};

/// Input type texts of a review Task.
pub(crate) const INPUT_CANDIDATE: &str = "candidate";
pub(crate) const INPUT_PROBABILITY: &str = "probability";
pub(crate) const INPUT_GRADE: &str = "match-grade";
pub(crate) const INPUT_BREAKDOWN: &str = "breakdown";

/// The best candidate source of one person for an incoming record.
#[derive(Debug, Clone)]
pub(crate) struct ReviewCandidate {
    pub golden_id: String,
    pub source_id: String,
    pub probability: f64,
    /// Whether the deterministic rules allow an automatic link at all.
    pub certain_or_probable: bool,
    pub grade: &'static str,
    pub breakdown: Value,
}

impl ReviewCandidate {
    pub fn new(golden_id: &str, candidate: Candidate) -> Self {
        Self {
            golden_id: golden_id.to_owned(),
            source_id: candidate.source_id,
            probability: candidate.probability,
            certain_or_probable: candidate.may_auto_link,
            grade: candidate.grade.code(),
            breakdown: candidate.breakdown,
        }
    }
}

fn input(text: &str, value_key: &str, value: Value) -> Value {
    let mut object = serde_json::Map::new();
    object.insert(
        "type".into(),
        json!({"coding": [{"system": MPI_SYSTEM, "code": text}], "text": text}),
    );
    object.insert(value_key.into(), value);
    Value::Object(object)
}

/// A new open review item for source `focus` (linked to its own person `focus_golden`).
pub(crate) fn new_task(focus: &str, focus_golden: &str, candidate: &ReviewCandidate) -> Value {
    let mut task = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": MPI_SYSTEM, "code": REVIEW_TASK_CODE,
                              "display": "Review a possible duplicate person"}]},
        "description": format!(
            "Patient/{focus} may be the same person as Patient/{} (match probability {:.3}, {})",
            candidate.source_id, candidate.probability, candidate.grade),
        "focus": {"reference": format!("Patient/{focus}")},
        "for": {"reference": format!("Patient/{}", candidate.golden_id)},
        "authoredOn": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "input": [
            input(INPUT_CANDIDATE, "valueReference", json!({"reference": format!("Patient/{}", candidate.source_id)})),
            input("focus-person", "valueReference", json!({"reference": format!("Patient/{focus_golden}")})),
            input(INPUT_PROBABILITY, "valueDecimal", json!(round3(candidate.probability))),
            input(INPUT_GRADE, "valueCode", json!(candidate.grade)),
            input(INPUT_BREAKDOWN, "valueString", json!(candidate.breakdown.to_string())),
        ]
    });
    // The index's own work item: a client can neither forge one (a steward accepting it would
    // merge two persons) nor change or delete one; `$mpi-accept`/`$mpi-reject` decide it.
    phip_fhir::access::mark_server_owned(&mut task, REVIEW_KIND);
    task
}

/// Kind of server-owned state a review item is.
pub(crate) const REVIEW_KIND: &str = "mpi-review";

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Whether a Task is a review item of the index (one the index wrote itself).
pub(crate) fn is_review_task(task: &Value) -> bool {
    phip_fhir::access::server_owned_kind(task) == Some(REVIEW_KIND)
        && task
            .pointer("/code/coding")
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(MPI_SYSTEM)
                        && c.get("code").and_then(Value::as_str) == Some(REVIEW_TASK_CODE)
                })
            })
}

/// The (focus source, candidate source) pair of a review item.
pub(crate) fn pair_of(task: &Value) -> Option<(String, String)> {
    let focus = task
        .pointer("/focus/reference")
        .and_then(Value::as_str)?
        .strip_prefix("Patient/")?
        .to_owned();
    let candidate = task
        .get("input")
        .and_then(Value::as_array)?
        .iter()
        .find(|i| i.pointer("/type/text").and_then(Value::as_str) == Some(INPUT_CANDIDATE))?
        .pointer("/valueReference/reference")
        .and_then(Value::as_str)?
        .strip_prefix("Patient/")?
        .to_owned();
    Some((focus, candidate))
}

/// The task after a decision: `completed` (accepted) or `rejected`, with who decided and when.
pub(crate) fn decided(task: &Value, accepted: bool, decided_by: &str, note: Option<&str>) -> Value {
    let mut body = task.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert(
            "status".into(),
            json!(if accepted { "completed" } else { "rejected" }),
        );
        object.insert(
            "businessStatus".into(),
            json!({"text": if accepted { "same person: merged" } else { "different persons" }}),
        );
        object.insert(
            "lastModified".into(),
            json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        object.insert("owner".into(), json!({"display": decided_by}));
        if let Some(note) = note.filter(|n| !n.is_empty()) {
            object.insert("note".into(), json!([{"text": note}]));
        }
        if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
    }
    body
}
