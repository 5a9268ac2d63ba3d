//! The FHIR R4 Task state machine (the state diagram of the Task resource page) and who may
//! move a referral along it.

/// Every `Task.status` code of R4.
pub const STATUSES: &[&str] = &[
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
];

/// The states a Task can leave from `status` to, in diagram order. Terminal states
/// (`rejected`, `cancelled`, `failed`, `completed`, `entered-in-error`) have none but
/// `entered-in-error`, which corrects a record created by mistake.
pub fn next_states(status: &str) -> &'static [&'static str] {
    match status {
        "draft" => &["requested", "cancelled", "entered-in-error"],
        "requested" => &[
            "received",
            "accepted",
            "rejected",
            "cancelled",
            "entered-in-error",
        ],
        "received" => &["accepted", "rejected", "cancelled", "entered-in-error"],
        "accepted" => &["ready", "in-progress", "cancelled", "entered-in-error"],
        "ready" => &["in-progress", "failed", "cancelled", "entered-in-error"],
        "in-progress" => &[
            "on-hold",
            "completed",
            "failed",
            "cancelled",
            "entered-in-error",
        ],
        "on-hold" => &["in-progress", "failed", "cancelled", "entered-in-error"],
        "rejected" | "cancelled" | "failed" | "completed" => &["entered-in-error"],
        _ => &[],
    }
}

/// Whether `status` ends the Task's life.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "rejected" | "cancelled" | "failed" | "completed" | "entered-in-error"
    )
}

/// Which party of a referral may move it into `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The sending organisation (`Task.requester`).
    Requester,
    /// The receiving organisation (`Task.owner`).
    Owner,
}

impl Party {
    /// The Task element naming this party.
    pub fn element(self) -> &'static str {
        match self {
            Party::Requester => "requester",
            Party::Owner => "owner",
        }
    }
}

/// The party entitled to make a transition into `status`: the sender issues, withdraws and
/// voids its referral; the receiver does everything about fulfilling it.
pub fn actor_for(status: &str) -> Party {
    match status {
        "draft" | "requested" | "cancelled" | "entered-in-error" => Party::Requester,
        _ => Party::Owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_a_known_status_and_terminals_only_void() {
        for status in STATUSES {
            for next in next_states(status) {
                assert!(STATUSES.contains(next), "{status} -> {next}");
                assert_ne!(next, status);
            }
            if is_terminal(status) {
                assert!(next_states(status).iter().all(|n| *n == "entered-in-error"));
            }
        }
        assert!(!next_states("requested").contains(&"completed"));
        assert!(!next_states("completed").contains(&"in-progress"));
        assert_eq!(actor_for("accepted"), Party::Owner);
        assert_eq!(actor_for("cancelled"), Party::Requester);
    }
}
