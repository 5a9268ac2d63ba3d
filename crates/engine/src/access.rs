//! Who is asking, and what they may do: SMART scopes turned into decisions about resource
//! types, interactions and the patient compartment.
//!
//! Every interaction asks [`Principal::decide`] before touching the store. A `patient/` grant
//! confines the caller to one resident's compartment: reads and writes check the resource's
//! compartment membership; searches get a compartment restriction added by the engine, so it
//! cannot be bypassed through `_include`, chains or `_has`.

use phip_fhir::search::IndexValue;
use phip_security::scope::{Access, Interaction, ScopeContext, ScopeSet};
use serde_json::Value;

use crate::{FhirError, FhirResult};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Subject of the token (user id or client id), for audit.
    pub subject: String,
    /// OAuth client, if known.
    pub client_id: Option<String>,
    /// Granted scopes; `None` means unrestricted (authentication disabled for local
    /// development, or the server acting on its own behalf).
    pub scopes: Option<ScopeSet>,
    /// The resident a `patient/` grant is bound to.
    pub patient: Option<String>,
    /// The caller's organisation.
    pub organization: Option<String>,
    /// GB/T 2260 code of the caller's region.
    pub division: Option<String>,
    /// Role codes from the token (e.g. `emergency`, which may break the glass).
    pub roles: Vec<String>,
    /// The stated reason when the caller breaks the glass: residents' consent denials are
    /// overridden for this request, and the audit trail flags it.
    pub break_glass: Option<String>,
}

/// What a principal may do with one resource type and interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed on any resource of the type.
    Full,
    /// Allowed only inside this patient's compartment.
    PatientCompartment(String),
    /// Not allowed.
    Denied,
}

impl Principal {
    /// A principal that may do everything: local development with authentication off, and
    /// the server's own internal work (imports, migrations).
    pub fn unrestricted(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            client_id: None,
            scopes: None,
            patient: None,
            organization: None,
            division: None,
            roles: Vec::new(),
            break_glass: None,
        }
    }

    /// Whether no restriction applies.
    pub fn is_unrestricted(&self) -> bool {
        self.scopes.is_none()
    }

    /// The decision for `interaction` on `resource_type`. System and user grants cover any
    /// resource of the type; a patient grant covers the bound patient's compartment only.
    pub fn decide(&self, resource_type: &str, interaction: Interaction) -> Decision {
        let Some(scopes) = &self.scopes else {
            return Decision::Full;
        };
        // Only unconstrained grants count: SMART v2 query-constrained scopes
        // (`patient/Observation.rs?category=laboratory`) are not enforced yet, so they grant
        // nothing rather than everything.
        let full = |context| scopes.access(context, resource_type, interaction) == Access::Full;
        if full(ScopeContext::System) || full(ScopeContext::User) {
            return Decision::Full;
        }
        if full(ScopeContext::Patient) {
            if let Some(patient) = &self.patient {
                return Decision::PatientCompartment(patient.clone());
            }
        }
        Decision::Denied
    }

    /// Like [`decide`](Self::decide), but a denial is a 403 OperationOutcome.
    pub fn require(&self, resource_type: &str, interaction: Interaction) -> FhirResult<Decision> {
        match self.decide(resource_type, interaction) {
            Decision::Denied => Err(forbidden(resource_type, interaction)),
            decision => Ok(decision),
        }
    }
}

/// The 403 for a denied interaction.
pub(crate) fn forbidden(resource_type: &str, interaction: Interaction) -> FhirError {
    FhirError::new(
        403,
        phip_fhir::IssueType::Forbidden,
        format!(
            "the access token does not permit {} on {resource_type}",
            interaction_name(interaction)
        ),
    )
}

/// The 403 for a resource outside the caller's grant.
pub(crate) fn forbidden_read(resource_type: &str, id: &str) -> FhirError {
    FhirError::new(
        403,
        phip_fhir::IssueType::Forbidden,
        format!("the access token does not permit reading {resource_type}/{id}"),
    )
}

fn interaction_name(interaction: Interaction) -> &'static str {
    match interaction {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// The ids of the patients whose compartment `resource` is in.
pub fn patients_of(resource: &Value) -> Vec<String> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    if resource_type == "Patient" {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .map(|id| vec![id.to_owned()])
            .unwrap_or_default();
    }
    let params = phip_fhir::r4().patient_compartment_params(resource_type);
    if params.is_empty() {
        return Vec::new();
    }
    let mut patients: Vec<String> = phip_fhir::search::index::extract(resource)
        .into_iter()
        .filter(|entry| params.iter().any(|p| p == &entry.param))
        .filter_map(|entry| match entry.value {
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(id),
                ..
            } if t == "Patient" => Some(id),
            _ => None,
        })
        .collect();
    patients.sort();
    patients.dedup();
    patients
}

/// Whether `resource` belongs to the compartment of `Patient/{patient_id}`: it is that
/// Patient, or one of its Patient-compartment parameters references it.
pub fn in_patient_compartment(resource: &Value, patient_id: &str) -> bool {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    if resource_type == "Patient" {
        return resource.get("id").and_then(Value::as_str) == Some(patient_id);
    }
    let params = phip_fhir::r4().patient_compartment_params(resource_type);
    if params.is_empty() {
        return false;
    }
    phip_fhir::search::index::extract(resource)
        .iter()
        .any(|entry| {
            params.iter().any(|p| p == &entry.param)
                && matches!(&entry.value, IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. }
                    if t == "Patient" && id == patient_id)
        })
}

/// Checks a resource against a decision: full access, or compartment membership (which is
/// reported as 403, since the caller is authenticated but not entitled).
pub(crate) fn check_resource(decision: &Decision, resource: &Value) -> FhirResult<()> {
    match decision {
        Decision::Full => Ok(()),
        Decision::PatientCompartment(patient) if in_patient_compartment(resource, patient) => {
            Ok(())
        }
        Decision::PatientCompartment(_) => Err(FhirError::new(
            403,
            phip_fhir::IssueType::Forbidden,
            "the access token is limited to its patient's own records",
        )),
        Decision::Denied => Err(FhirError::new(
            403,
            phip_fhir::IssueType::Forbidden,
            "not permitted",
        )),
    }
}
