//! Who is asking, and what they may do: SMART scopes turned into decisions about resource
//! types, interactions and the patient compartment.
//!
//! Every interaction asks [`Principal::decide`] whether the token grants it on the type at all
//! (403 when not). Which *records* the caller then sees is not decided here but by the store,
//! as part of every query it runs: [`Principal::access`] states the caller's grants, compartment,
//! organisation and region, and the store's visibility predicate applies the rules of
//! `docs/security.md` to counts, cursors, chains, includes and history alike. Writes are checked
//! against the same predicate before and after they reach the store (`crate::guard`).

use phip_security::scope::{Access as ScopeAccess, Interaction, ScopeContext, ScopeSet};
use phip_store::{Access, Sharing, Transaction, TypeGrant, Visibility};
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
        let full =
            |context| scopes.access(context, resource_type, interaction) == ScopeAccess::Full;
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

fn interaction_name(interaction: Interaction) -> &'static str {
    match interaction {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// The ids of the patients whose compartment `resource` is in (R4 CompartmentDefinition
/// `patient`, as the store labels it).
pub fn patients_of(resource: &Value) -> Vec<String> {
    let entries = phip_fhir::search::index::extract(resource);
    phip_fhir::access::labels(resource, &entries).patients
}

/// The resource types `scopes` grant `interaction` on in `context` without a query constraint
/// (SMART v2 query-constrained scopes are not enforced yet, so they grant nothing rather than
/// everything).
fn unconstrained_types(
    scopes: &ScopeSet,
    context: ScopeContext,
    interaction: Interaction,
) -> TypeGrant {
    let mut types = Vec::new();
    for scope in scopes.resource_scopes() {
        if scope.context != context
            || scope.query.is_some()
            || !scope.permissions.contains(interaction)
        {
            continue;
        }
        match &scope.resource_type {
            None => return TypeGrant::All,
            Some(t) => types.push(t.clone()),
        }
    }
    TypeGrant::Only(types)
}

fn union(grants: impl IntoIterator<Item = TypeGrant>) -> TypeGrant {
    let mut types = Vec::new();
    for grant in grants {
        match grant {
            TypeGrant::All => return TypeGrant::All,
            TypeGrant::Only(list) => types.extend(list),
        }
    }
    types.sort();
    types.dedup();
    TypeGrant::Only(types)
}

impl Principal {
    /// Whether this is the server itself (or authentication is off): no rule restricts it.
    pub fn is_server(&self) -> bool {
        self.is_unrestricted()
    }

    /// What this principal may see, as the store applies it to every query run for it (see
    /// `docs/security.md`): the types its scopes let it read or search, its own compartment
    /// with a `patient/` grant, and its organisation and region for the sharing rules (set
    /// aside when it breaks the glass).
    pub fn access(&self) -> Access {
        let Some(scopes) = &self.scopes else {
            return Access::Server;
        };
        let grant = |context| {
            union([
                unconstrained_types(scopes, context, Interaction::Read),
                unconstrained_types(scopes, context, Interaction::Search),
            ])
        };
        let types = union([grant(ScopeContext::System), grant(ScopeContext::User)]);
        let (compartment_types, compartment) = match &self.patient {
            Some(patient) => (grant(ScopeContext::Patient), vec![patient.clone()]),
            None => (TypeGrant::Only(Vec::new()), Vec::new()),
        };
        let sharing = self.break_glass.is_none().then(|| Sharing {
            organization: self.organization.clone(),
            division: self.division.clone(),
            now_ms: chrono::Utc::now().timestamp_millis(),
        });
        Access::Caller(Box::new(Visibility {
            types,
            compartment_types,
            compartment,
            sharing,
        }))
    }

    /// Whether the resource exists and this principal may see it (the store's rules).
    pub fn can_see(
        &self,
        tx: &mut dyn Transaction,
        resource_type: &str,
        id: &str,
    ) -> FhirResult<bool> {
        if self.is_server() {
            return Ok(tx.read(resource_type, id)?.is_some());
        }
        Ok(tx.visible(resource_type, id, &self.access())?)
    }
}

/// The answer for a resource that does not exist or that the caller may not see: the same in
/// both cases, so that it reveals nothing (docs/security.md).
pub(crate) fn not_found(resource_type: &str, id: &str) -> FhirError {
    FhirError::not_found(format!("{resource_type}/{id} is not known"))
}
