//! Who a Subscription acts for: a durable snapshot of the principal that wrote it.
//!
//! Notifications are matched by running the criteria search *as this principal*, so a
//! subscriber never learns of a record its own token could not read.

use phip_engine::Principal;
use phip_security::scope::{Scope, ScopeSet};
use serde::{Deserialize, Serialize};

/// The principal that wrote one version of a Subscription, in a form that survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Token subject.
    pub subject: String,
    /// OAuth client.
    pub client_id: Option<String>,
    /// Resource scopes as SMART v2 text; `None` = unrestricted.
    pub scopes: Option<String>,
    /// Patient a `patient/` grant is bound to.
    pub patient: Option<String>,
    /// Organisation.
    pub organization: Option<String>,
    /// GB/T 2260 division.
    pub division: Option<String>,
    /// Roles (kept for audit; break-the-glass never carries over to notifications).
    pub roles: Vec<String>,
}

impl Owner {
    /// Snapshot of `principal`. Query-constrained scopes are dropped: the engine does not
    /// enforce them yet and so grants nothing for them, which dropping preserves exactly.
    pub fn from_principal(principal: &Principal) -> Self {
        let scopes = principal.scopes.as_ref().map(|set| {
            set.scopes()
                .iter()
                .filter_map(|scope| match scope {
                    Scope::Resource(r) if r.query.is_none() => Some(format!(
                        "{}/{}.{}",
                        r.context.as_str(),
                        r.resource_type.as_deref().unwrap_or("*"),
                        r.permissions
                    )),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" ")
        });
        Self {
            subject: principal.subject.clone(),
            client_id: principal.client_id.clone(),
            scopes,
            patient: principal.patient.clone(),
            organization: principal.organization.clone(),
            division: principal.division.clone(),
            roles: principal.roles.clone(),
        }
    }

    /// The principal notifications are matched as. A scope text that no longer parses
    /// grants nothing (fail closed).
    pub fn to_principal(&self) -> Principal {
        let scopes = self
            .scopes
            .as_ref()
            .map(|text| ScopeSet::parse(text).unwrap_or_default());
        Principal {
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            scopes,
            patient: self.patient.clone(),
            organization: self.organization.clone(),
            division: self.division.clone(),
            roles: self.roles.clone(),
            // Breaking the glass is for one request, never for a standing subscription.
            break_glass: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phip_engine::Decision;
    use phip_security::scope::Interaction;

    fn principal(scope: &str) -> Principal {
        Principal {
            subject: "u1".into(),
            client_id: Some("c".into()),
            scopes: Some(ScopeSet::parse(scope).unwrap()),
            patient: Some("p1".into()),
            organization: Some("org".into()),
            division: Some("110000".into()),
            roles: vec!["doctor".into()],
            break_glass: Some("emergency".into()),
        }
    }

    #[test]
    fn round_trip_keeps_decisions() {
        let p = principal("patient/Observation.rs user/Subscription.cruds openid");
        let back = Owner::from_principal(&p).to_principal();
        for (t, i) in [
            ("Observation", Interaction::Search),
            ("Observation", Interaction::Create),
            ("Subscription", Interaction::Update),
            ("Condition", Interaction::Read),
        ] {
            assert_eq!(p.decide(t, i), back.decide(t, i), "{t} {i:?}");
        }
        assert_eq!(
            back.decide("Observation", Interaction::Read),
            Decision::PatientCompartment("p1".into())
        );
        assert!(back.break_glass.is_none());
        assert_eq!(back.division.as_deref(), Some("110000"));
    }

    #[test]
    fn constrained_scopes_grant_nothing_after_round_trip() {
        let p = principal("user/Observation.rs?category=laboratory");
        let back = Owner::from_principal(&p).to_principal();
        assert_eq!(
            back.decide("Observation", Interaction::Read),
            Decision::Denied
        );
        assert!(!back.is_unrestricted());
    }

    #[test]
    fn unrestricted_stays_unrestricted() {
        let back = Owner::from_principal(&Principal::unrestricted("dev")).to_principal();
        assert!(back.is_unrestricted());
    }
}
