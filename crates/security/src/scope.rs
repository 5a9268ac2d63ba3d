//! SMART on FHIR scopes (App Launch 2.x, with the 1.x forms mapped onto them).
//!
//! A resource scope is `context/Type.permissions[?query]`:
//!
//! - **context** says *whose* data the permission reaches, and the three never imply one another:
//!   - `patient/` — only resources in the compartment of the one patient the token is bound to
//!     (its `patient` claim). A `patient/Observation.rs` token reads that resident's observations
//!     and nothing else, whatever organisation holds them (subject to the resident's consent).
//!   - `user/` — whatever the authenticated user (practitioner, clerk, public-health officer) may
//!     see in their own right: in phip that is records held by institutions of the user's
//!     organisation and administrative division (`org`/`division` claims), widened only by
//!     consent or referral. It is not limited to one patient.
//!   - `system/` — backend services acting for themselves (SMART Backend Services, client
//!     credentials), with no user and no patient; bounded by the client's registration and
//!     organisation, not by a compartment.
//! - **Type** is a FHIR resource type or `*` for all types.
//! - **permissions** (v2) are a subset of `c` create, `r` read, `u` update, `d` delete,
//!   `s` search, in that order (`cruds`). The v1 forms map as `read` → `rs`, `write` → `cud`,
//!   `*` → `cruds`.
//! - **query** (v2 only, optional) narrows the scope to resources matching FHIR search
//!   parameters, e.g. `patient/Observation.rs?category=laboratory`. It is parsed and exposed
//!   ([`Access::Constrained`]); enforcing it is the engine's job (add it to searches, check it on
//!   reads).
//!
//! Non-resource scopes — `openid`, `fhirUser`, `profile`, `launch`, `launch/patient`,
//! `launch/encounter`, `offline_access`, `online_access` — are recognised and grant no data
//! access. Unknown scopes are kept (as [`Scope::Other`]) and likewise grant nothing.

use std::collections::BTreeSet;
use std::fmt;

/// Errors from parsing a scope string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A scope that starts like a resource scope (`patient/`, `user/`, `system/`) but is not one.
    #[error("malformed scope {scope:?}: {reason}")]
    Malformed {
        /// The offending scope.
        scope: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Whose data a resource scope reaches. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    /// `patient/`: the bound patient's compartment only.
    Patient,
    /// `user/`: what the user may see by organisation and region.
    User,
    /// `system/`: a backend service acting on its own behalf.
    System,
}

impl ScopeContext {
    /// The scope prefix without the slash.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// A FHIR interaction class, as SMART v2 permissions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interaction {
    /// `c`: create (including conditional create, transaction POST entries).
    Create,
    /// `r`: read and vread (also history of a known instance, `$everything` reads).
    Read,
    /// `u`: update and patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search (type, system and compartment searches, type history).
    Search,
}

impl Interaction {
    const ALL: [Interaction; 5] = [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
    ];

    fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of interactions (`cruds` letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// All five interactions.
    pub const ALL: Permissions = Permissions(0b11111);

    /// Parse v2 letters, which must be a non-empty subsequence of `cruds` (order enforced by the
    /// spec so each permission set has one spelling).
    pub fn parse_v2(letters: &str) -> Option<Self> {
        let mut bits = 0u8;
        let mut next = 0usize;
        if letters.is_empty() {
            return None;
        }
        for c in letters.chars() {
            let pos = Interaction::ALL[next..]
                .iter()
                .position(|i| i.letter() == c)?;
            bits |= Interaction::ALL[next + pos].bit();
            next += pos + 1;
        }
        Some(Permissions(bits))
    }

    /// Whether `interaction` is included.
    pub fn contains(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in Interaction::ALL {
            if self.contains(i) {
                write!(f, "{}", i.letter())?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// The search parameters of a query-constrained scope (`?category=laboratory`), percent-decoded,
/// in order. Several scopes' queries combine with OR; parameters within one query with AND, as
/// in a FHIR search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeQuery {
    /// `(name, value)` pairs.
    pub params: Vec<(String, String)>,
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    /// `patient`, `user` or `system`.
    pub context: ScopeContext,
    /// The resource type, `None` for `*`.
    pub resource_type: Option<String>,
    /// Granted interactions.
    pub permissions: Permissions,
    /// Optional v2 query constraint.
    pub query: Option<ScopeQuery>,
}

impl ResourceScope {
    /// Whether the scope names this resource type (or `*`).
    pub fn covers_type(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `patient/…`, `user/…`, `system/…`.
    Resource(ResourceScope),
    /// `openid`.
    OpenId,
    /// `fhirUser`.
    FhirUser,
    /// `profile` (v1).
    Profile,
    /// `launch` (EHR launch).
    Launch,
    /// `launch/patient`: ask for a patient context at launch.
    LaunchPatient,
    /// `launch/encounter`.
    LaunchEncounter,
    /// `offline_access`: ask for a refresh token (no data access by itself).
    OfflineAccess,
    /// `online_access`.
    OnlineAccess,
    /// Anything else; grants nothing.
    Other(String),
}

impl Scope {
    /// Parse one scope token.
    pub fn parse(token: &str) -> Result<Scope, ScopeError> {
        Ok(match token {
            "openid" => Scope::OpenId,
            "fhirUser" => Scope::FhirUser,
            "profile" => Scope::Profile,
            "launch" => Scope::Launch,
            "launch/patient" => Scope::LaunchPatient,
            "launch/encounter" => Scope::LaunchEncounter,
            "offline_access" => Scope::OfflineAccess,
            "online_access" => Scope::OnlineAccess,
            _ => match parse_resource(token)? {
                Some(r) => Scope::Resource(r),
                None => Scope::Other(token.to_string()),
            },
        })
    }
}

fn parse_resource(token: &str) -> Result<Option<ResourceScope>, ScopeError> {
    let (ctx, rest) = match token.split_once('/') {
        Some(("patient", r)) => (ScopeContext::Patient, r),
        Some(("user", r)) => (ScopeContext::User, r),
        Some(("system", r)) => (ScopeContext::System, r),
        _ => return Ok(None),
    };
    let bad = |reason| ScopeError::Malformed {
        scope: token.to_string(),
        reason,
    };
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (ty, perm) = body
        .split_once('.')
        .ok_or_else(|| bad("expected Type.permissions"))?;
    let resource_type = match ty {
        "*" => None,
        t if is_resource_type_name(t) => Some(t.to_string()),
        _ => return Err(bad("not a resource type name")),
    };
    let (permissions, v1) = match perm {
        "read" => (
            Permissions(Interaction::Read.bit() | Interaction::Search.bit()),
            true,
        ),
        "write" => (
            Permissions(
                Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit(),
            ),
            true,
        ),
        "*" => (Permissions::ALL, true),
        p => (
            Permissions::parse_v2(p).ok_or_else(|| bad("permissions must be a subset of cruds"))?,
            false,
        ),
    };
    let query = match query {
        None => None,
        Some(_) if v1 => return Err(bad("v1 scopes cannot carry a query")),
        Some("") => return Err(bad("empty query")),
        Some(q) => {
            let params: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if params.iter().any(|(k, _)| k.is_empty()) {
                return Err(bad("query parameter without a name"));
            }
            Some(ScopeQuery { params })
        }
    };
    Ok(Some(ResourceScope {
        context: ctx,
        resource_type,
        permissions,
        query,
    }))
}

/// FHIR resource type names are an upper-case ASCII letter followed by letters/digits. Checking
/// the shape (not membership in R4's list) keeps this crate independent of the FHIR model; a
/// scope for a type that does not exist simply never matches.
fn is_resource_type_name(t: &str) -> bool {
    let mut c = t.chars();
    matches!(c.next(), Some(f) if f.is_ascii_uppercase()) && c.all(|c| c.is_ascii_alphanumeric())
}

/// What a scope set allows for one (context, type, interaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No scope grants it.
    Denied,
    /// Granted without a query constraint.
    Full,
    /// Granted only for resources matching at least one of these queries.
    Constrained(Vec<ScopeQuery>),
}

/// Resource types a context may read or search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSet {
    /// Every resource type (a `*` scope).
    All,
    /// Exactly these (possibly none).
    Only(BTreeSet<String>),
}

impl TypeSet {
    /// Whether `resource_type` is in the set.
    pub fn contains(&self, resource_type: &str) -> bool {
        match self {
            TypeSet::All => true,
            TypeSet::Only(s) => s.contains(resource_type),
        }
    }
}

/// The scopes of one token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parse a space-separated scope string (the `scope` claim). Repeated whitespace is allowed;
    /// a malformed resource scope is an error so that a typo never silently narrows or widens
    /// access.
    pub fn parse(text: &str) -> Result<ScopeSet, ScopeError> {
        let scopes = text
            .split_ascii_whitespace()
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScopeSet { scopes })
    }

    /// The parsed scopes, in order.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// Whether a non-resource scope is present (e.g. [`Scope::OpenId`]).
    pub fn has(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// The resource scopes.
    pub fn resource_scopes(&self) -> impl Iterator<Item = &ResourceScope> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::Resource(r) => Some(r),
            _ => None,
        })
    }

    /// The contexts that appear in any resource scope.
    pub fn contexts(&self) -> BTreeSet<ScopeContext> {
        self.resource_scopes().map(|r| r.context).collect()
    }

    /// What `context` scopes allow for `interaction` on `resource_type`.
    ///
    /// Only scopes of exactly that context count: `user/Observation.rs` does not answer a
    /// `patient` question, nor `system/` a `user` one, because the contexts bound access
    /// differently (see the module docs). An unconstrained matching scope wins over constrained
    /// ones.
    pub fn access(
        &self,
        context: ScopeContext,
        resource_type: &str,
        interaction: Interaction,
    ) -> Access {
        let mut queries = Vec::new();
        for r in self.resource_scopes() {
            if r.context == context
                && r.covers_type(resource_type)
                && r.permissions.contains(interaction)
            {
                match &r.query {
                    None => return Access::Full,
                    Some(q) => queries.push(q.clone()),
                }
            }
        }
        if queries.is_empty() {
            Access::Denied
        } else {
            Access::Constrained(queries)
        }
    }

    /// Whether `context` scopes allow `interaction` on `resource_type` at all (possibly only for
    /// resources matching a query; use [`ScopeSet::access`] to learn which).
    pub fn permits(
        &self,
        context: ScopeContext,
        resource_type: &str,
        interaction: Interaction,
    ) -> bool {
        self.access(context, resource_type, interaction) != Access::Denied
    }

    /// The resource types `context` scopes allow reading (`r`) — what `_include`, `_revinclude`
    /// and `$everything` may return. Types reachable only through search are in
    /// [`ScopeSet::searchable_types`].
    pub fn readable_types(&self, context: ScopeContext) -> TypeSet {
        self.types_with(context, Interaction::Read)
    }

    /// The resource types `context` scopes allow searching (`s`).
    pub fn searchable_types(&self, context: ScopeContext) -> TypeSet {
        self.types_with(context, Interaction::Search)
    }

    /// The union of permissions granted on `resource_type` in `context`, ignoring queries.
    pub fn permissions(&self, context: ScopeContext, resource_type: &str) -> Permissions {
        self.resource_scopes()
            .filter(|r| r.context == context && r.covers_type(resource_type))
            .fold(Permissions::default(), |p, r| p.union(r.permissions))
    }

    fn types_with(&self, context: ScopeContext, interaction: Interaction) -> TypeSet {
        let mut set = BTreeSet::new();
        for r in self.resource_scopes() {
            if r.context == context && r.permissions.contains(interaction) {
                match &r.resource_type {
                    None => return TypeSet::All,
                    Some(t) => {
                        set.insert(t.clone());
                    }
                }
            }
        }
        TypeSet::Only(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interaction::*;
    use ScopeContext::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn v2_parsing() {
        let s = set("patient/Observation.rs user/*.cruds system/Patient.r");
        let r: Vec<_> = s.resource_scopes().collect();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].context, Patient);
        assert_eq!(r[0].resource_type.as_deref(), Some("Observation"));
        assert_eq!(r[0].permissions.to_string(), "rs");
        assert_eq!(r[1].resource_type, None);
        assert_eq!(r[1].permissions, Permissions::ALL);
        assert_eq!(r[2].permissions.to_string(), "r");
    }

    #[test]
    fn v1_forms_map_to_v2() {
        let s = set("patient/*.read user/Observation.write system/Patient.*");
        let r: Vec<_> = s.resource_scopes().collect();
        assert_eq!(r[0].permissions.to_string(), "rs");
        assert_eq!(r[1].permissions.to_string(), "cud");
        assert_eq!(r[2].permissions.to_string(), "cruds");
    }

    #[test]
    fn non_resource_scopes() {
        let s = set("openid fhirUser launch/patient offline_access launch profile x-custom");
        assert!(s.has(&Scope::OpenId));
        assert!(s.has(&Scope::FhirUser));
        assert!(s.has(&Scope::LaunchPatient));
        assert!(s.has(&Scope::OfflineAccess));
        assert!(s.has(&Scope::Other("x-custom".into())));
        assert_eq!(s.resource_scopes().count(), 0);
        for ctx in [Patient, User, System] {
            for i in Interaction::ALL {
                assert!(!s.permits(ctx, "Patient", i));
            }
            assert_eq!(s.readable_types(ctx), TypeSet::Only(BTreeSet::new()));
        }
    }

    #[test]
    fn malformed_scopes_rejected() {
        for bad in [
            "patient/Observation",
            "patient/Observation.",
            "patient/Observation.sr", // wrong order
            "patient/Observation.rr", // duplicate
            "patient/Observation.x",
            "patient/observation.rs", // not a type name
            "user/.rs",
            "user/Obs-ervation.rs",
            "patient/*.read?category=x", // v1 cannot carry a query
            "patient/Observation.rs?",
            "patient/Observation.rs?=x",
        ] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad} should be rejected");
        }
        // whitespace handling
        assert_eq!(set("  openid \t patient/Patient.r ").scopes().len(), 2);
        assert_eq!(set("").scopes().len(), 0);
    }

    #[test]
    fn query_constrained_scopes() {
        let s = set(
            "patient/Observation.rs?category=laboratory \
             patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category%7Cvital-signs&status=final",
        );
        match s.access(Patient, "Observation", Search) {
            Access::Constrained(qs) => {
                assert_eq!(qs.len(), 2);
                assert_eq!(qs[0].params, vec![("category".into(), "laboratory".into())]);
                assert_eq!(
                    qs[1].params,
                    vec![
                        (
                            "category".into(),
                            "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
                                .into()
                        ),
                        ("status".into(), "final".into())
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(s.permits(Patient, "Observation", Read));
        assert!(!s.permits(Patient, "Observation", Create));
        // an unconstrained scope for the same thing wins
        let s = set("patient/Observation.rs?category=laboratory patient/Observation.r");
        assert_eq!(s.access(Patient, "Observation", Read), Access::Full);
        assert!(matches!(
            s.access(Patient, "Observation", Search),
            Access::Constrained(_)
        ));
    }

    /// (scopes, context, type, interaction, expected)
    #[test]
    fn permits_table() {
        let cases: &[(&str, ScopeContext, &str, Interaction, bool)] = &[
            ("patient/Observation.rs", Patient, "Observation", Read, true),
            (
                "patient/Observation.rs",
                Patient,
                "Observation",
                Search,
                true,
            ),
            (
                "patient/Observation.rs",
                Patient,
                "Observation",
                Create,
                false,
            ),
            (
                "patient/Observation.rs",
                Patient,
                "Observation",
                Update,
                false,
            ),
            (
                "patient/Observation.rs",
                Patient,
                "Observation",
                Delete,
                false,
            ),
            ("patient/Observation.rs", Patient, "Condition", Read, false),
            // contexts never imply one another
            ("patient/Observation.rs", User, "Observation", Read, false),
            ("patient/Observation.rs", System, "Observation", Read, false),
            ("user/*.cruds", Patient, "Observation", Read, false),
            ("system/*.cruds", User, "Patient", Read, false),
            ("user/*.cruds", User, "AuditEvent", Delete, true),
            ("user/*.rs", User, "Encounter", Update, false),
            ("system/Patient.r", System, "Patient", Read, true),
            ("system/Patient.r", System, "Patient", Search, false),
            ("patient/*.read", Patient, "MedicationRequest", Search, true),
            (
                "patient/*.read",
                Patient,
                "MedicationRequest",
                Create,
                false,
            ),
            ("user/Observation.write", User, "Observation", Create, true),
            ("user/Observation.write", User, "Observation", Update, true),
            ("user/Observation.write", User, "Observation", Delete, true),
            ("user/Observation.write", User, "Observation", Read, false),
            ("user/Observation.*", User, "Observation", Search, true),
            (
                "user/Observation.cd user/Observation.r",
                User,
                "Observation",
                Read,
                true,
            ),
            (
                "launch/patient openid fhirUser",
                Patient,
                "Patient",
                Read,
                false,
            ),
            ("offline_access", User, "Patient", Read, false),
        ];
        for (scopes, ctx, ty, i, want) in cases {
            assert_eq!(
                set(scopes).permits(*ctx, ty, *i),
                *want,
                "{scopes} {ctx:?} {ty} {i:?}"
            );
        }
    }

    #[test]
    fn readable_and_searchable_types() {
        let s = set("patient/Observation.rs patient/Condition.r patient/Encounter.s user/*.r");
        assert_eq!(
            s.readable_types(Patient),
            TypeSet::Only(["Condition".to_string(), "Observation".to_string()].into())
        );
        assert_eq!(
            s.searchable_types(Patient),
            TypeSet::Only(["Encounter".to_string(), "Observation".to_string()].into())
        );
        assert_eq!(s.readable_types(User), TypeSet::All);
        assert!(s.readable_types(User).contains("Anything"));
        assert_eq!(s.readable_types(System), TypeSet::Only(BTreeSet::new()));
        assert_eq!(s.permissions(Patient, "Observation").to_string(), "rs");
        assert_eq!(
            s.contexts(),
            [Patient, User].into_iter().collect::<BTreeSet<_>>()
        );
    }
}
