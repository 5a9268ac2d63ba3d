//! Who may export what. Bulk export is a backend-services interaction: the kick-off needs a
//! SMART `system/` read-and-search grant for every type exported (`system/*.read`,
//! `system/*.rs` or per type `system/Observation.rs`); per-type grants narrow the export to
//! those types. The requester is kept with the job so that a worker resumed after a restart
//! reads with exactly the caller's rights (consent and regional rules included), and so that
//! only the same caller may poll, download or cancel: the same subject, OAuth client, patient
//! binding, organisation and division ([`Requester::is`]), still holding scopes that would let
//! it start the export ([`authorize_job`]). A token that merely shares the subject name (every
//! `phip token` without `--subject` is `operator`) is someone else.

use phip_engine::{FhirError, FhirResult, Principal};
use phip_fhir::IssueType;
use phip_security::scope::{Access, Interaction, ScopeContext, ScopeSet};
use serde::{Deserialize, Serialize};

/// The caller who started an export, as persisted with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// Token subject.
    pub subject: String,
    /// OAuth client.
    pub client_id: Option<String>,
    /// The resource scopes granted (space-separated); `None` for an unrestricted caller.
    pub scope: Option<String>,
    /// The patient a `patient/` grant of the caller is bound to (absent in jobs saved before
    /// it was recorded, which were all started without one: `patient/` tokens alone cannot
    /// start an export).
    #[serde(default)]
    pub patient: Option<String>,
    /// Organisation of the caller (consent and regional rules depend on it).
    pub organization: Option<String>,
    /// GB/T 2260 division of the caller.
    pub division: Option<String>,
    /// Role codes.
    pub roles: Vec<String>,
}

impl Requester {
    /// The requester record of a principal.
    pub fn from_principal(principal: &Principal) -> Requester {
        Requester {
            subject: principal.subject.clone(),
            client_id: principal.client_id.clone(),
            scope: principal.scopes.as_ref().map(scope_text),
            patient: principal.patient.clone(),
            organization: principal.organization.clone(),
            division: principal.division.clone(),
            roles: principal.roles.clone(),
        }
    }

    /// The principal a worker acts as. Never breaks the glass: an emergency override is for
    /// one interactive request, not a background copy of the records.
    pub fn principal(&self) -> Result<Principal, String> {
        let scopes = match &self.scope {
            None => None,
            Some(text) => Some(
                ScopeSet::parse(text)
                    .map_err(|e| format!("the job's stored scopes are invalid: {e}"))?,
            ),
        };
        Ok(Principal {
            subject: self.subject.clone(),
            client_id: self.client_id.clone(),
            scopes,
            patient: self.patient.clone(),
            organization: self.organization.clone(),
            division: self.division.clone(),
            roles: self.roles.clone(),
            break_glass: None,
        })
    }

    /// Whether `principal` is the caller that started the job: every part of the identity
    /// that decides what a token may read must match, not the subject name alone.
    pub fn is(&self, principal: &Principal) -> bool {
        let unrestricted = self.scope.is_none();
        self.subject == principal.subject
            && self.client_id == principal.client_id
            && self.patient == principal.patient
            && self.organization == principal.organization
            && self.division == principal.division
            && unrestricted == principal.is_unrestricted()
    }
}

/// The resource scopes of a set, in their canonical v2 spelling (other scopes such as `openid`
/// grant no data access and are dropped).
fn scope_text(scopes: &ScopeSet) -> String {
    scopes
        .resource_scopes()
        .map(|r| {
            let mut text = format!(
                "{}/{}.{}",
                r.context.as_str(),
                r.resource_type.as_deref().unwrap_or("*"),
                r.permissions
            );
            if let Some(query) = &r.query {
                let mut encoded = form_urlencoded::Serializer::new(String::new());
                for (name, value) in &query.params {
                    encoded.append_pair(name, value);
                }
                text.push('?');
                text.push_str(&encoded.finish());
            }
            text
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether system scopes let the caller read and search every resource of a type (a
/// query-constrained scope is not enough: it is not enforced on bulk reads, so it grants
/// nothing here, as elsewhere in phip).
fn system_full(scopes: &ScopeSet, resource_type: &str) -> bool {
    [Interaction::Read, Interaction::Search]
        .into_iter()
        .all(|i| scopes.access(ScopeContext::System, resource_type, i) == Access::Full)
}

/// The types `principal` may export out of `candidates`. When the client named its types
/// (`explicit`), each must be permitted (403 otherwise); otherwise the export is narrowed to the
/// permitted ones. A caller without any system grant gets 403.
pub fn authorize(
    principal: &Principal,
    candidates: &[String],
    explicit: bool,
) -> FhirResult<Vec<String>> {
    if principal.break_glass.is_some() {
        return Err(FhirError::new(
            403,
            IssueType::Forbidden,
            "breaking the glass does not extend to bulk export",
        ));
    }
    let Some(scopes) = &principal.scopes else {
        return Ok(candidates.to_vec());
    };
    let no_system_grant = || {
        FhirError::new(
            403,
            IssueType::Forbidden,
            "bulk export needs a system-level read scope (system/*.read or system/[type].rs)",
        )
    };
    if !scopes.contexts().contains(&ScopeContext::System) {
        return Err(no_system_grant());
    }
    if explicit {
        if let Some(denied) = candidates.iter().find(|t| !system_full(scopes, t)) {
            return Err(FhirError::new(
                403,
                IssueType::Forbidden,
                format!("the access token does not permit exporting {denied}"),
            ));
        }
        return Ok(candidates.to_vec());
    }
    let permitted: Vec<String> = candidates
        .iter()
        .filter(|t| system_full(scopes, t))
        .cloned()
        .collect();
    if permitted.is_empty() {
        return Err(no_system_grant());
    }
    Ok(permitted)
}

/// Whether `principal` (already known to be the job's requester) may still see the job of
/// `types`: its token must permit starting that export now (403 otherwise), so a token with
/// narrower scopes than the one that started the job, or a break-the-glass request, cannot
/// read its files.
pub fn authorize_job(principal: &Principal, types: &[String]) -> FhirResult<()> {
    authorize(principal, types, true).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: &str) -> Principal {
        Principal {
            scopes: Some(ScopeSet::parse(scope).unwrap()),
            client_id: Some("c1".into()),
            ..Principal::unrestricted("s1")
        }
    }

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn system_scopes_grant_and_narrow() {
        let all = types(&["Patient", "Observation", "Condition"]);
        assert_eq!(
            authorize(&principal("system/*.read"), &all, false).unwrap(),
            all
        );
        assert_eq!(
            authorize(
                &principal("system/Observation.rs system/Patient.r"),
                &all,
                false
            )
            .unwrap(),
            types(&["Observation"])
        );
        let err = authorize(&principal("system/Observation.rs"), &all, true).unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(
            authorize(&principal("patient/*.read user/*.read"), &all, false)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            authorize(
                &principal("system/Observation.rs?category=laboratory"),
                &all,
                false
            )
            .unwrap_err()
            .status,
            403
        );
        let mut glass = principal("system/*.read");
        glass.break_glass = Some("why".into());
        assert_eq!(authorize(&glass, &all, false).unwrap_err().status, 403);
    }

    #[test]
    fn requester_round_trips_through_json() {
        let original = principal("system/*.read system/Observation.rs?category=laboratory openid");
        let requester = Requester::from_principal(&original);
        let text = serde_json::to_string(&requester).unwrap();
        let back: Requester = serde_json::from_str(&text).unwrap();
        let restored = back.principal().unwrap();
        assert_eq!(
            restored.scopes.as_ref().unwrap().resource_scopes().count(),
            2
        );
        assert_eq!(
            restored.scopes.as_ref().unwrap().access(
                ScopeContext::System,
                "Patient",
                Interaction::Search
            ),
            Access::Full
        );
        assert!(back.is(&original));
        assert!(!back.is(&Principal::unrestricted("s1")));
        let unrestricted = Requester::from_principal(&Principal::unrestricted("local"));
        assert!(unrestricted.principal().unwrap().is_unrestricted());
    }
}
