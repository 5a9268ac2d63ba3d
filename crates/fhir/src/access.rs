//! The facts about a stored resource that decide who may see it: its access labels.
//!
//! Access control in phip is decided by the store, as part of every query it runs for a
//! caller (see `docs/security.md`). For that the store keeps, next to each resource, the labels
//! computed here from the resource's content whenever a version is written:
//!
//! - its **class**: an ordinary record, a golden record of the patient index (visible through
//!   the source records it links), or server-private state (never visible to a client);
//! - its **holder**: the organisation and GB/T 2260 division that hold it (tags the server sets
//!   from the writer's token);
//! - the **patients** whose compartment it is in (R4 CompartmentDefinition `patient`);
//! - the **parties**: organisations a workflow record is addressed to (a referral's requester
//!   and owner);
//! - for a privacy `Consent`, its **rules**: the provision tree flattened into rows the store can
//!   evaluate in SQL.
//!
//! Everything here is a pure function of the resource, so the labels can never disagree with
//! the content they were computed from.

use serde_json::Value;

use crate::search::{IndexEntry, IndexValue};

/// Tag system naming the GB/T 2260 division of the institution that holds a record.
pub const DIVISION_TAG_SYSTEM: &str = "urn:phip:division";
/// Tag system naming the holding institution (an Organization id).
pub const HOLDER_TAG_SYSTEM: &str = "urn:phip:holder";
/// Tag system marking state the server writes for itself; no client may create, change or
/// delete a resource carrying it. The code names the kind of state.
pub const SERVER_OWNED_SYSTEM: &str = "urn:phip:server-owned";
/// Server-owned kinds no client may even read (secrets such as sign-in codes).
pub const PRIVATE_KINDS: &[&str] = &["sign-in-code"];
/// Tag system of the patient index.
pub const MPI_SYSTEM: &str = "urn:phip:mpi";
/// Tag code (in [`MPI_SYSTEM`]) marking a golden (master) record.
pub const GOLDEN_TAG_CODE: &str = "golden";
/// `Consent.scope` system and code of the Consents that govern access.
pub const CONSENT_SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// See [`CONSENT_SCOPE_SYSTEM`].
pub const PRIVACY_SCOPE_CODE: &str = "patient-privacy";
/// Stored in place of a holder division that is not a valid GB/T 2260 code: it sorts before
/// every digit, so it is inside no division's range, and it is not NULL (which would make the
/// record regional, visible everywhere).
pub const INVALID_DIVISION: &str = "!";

/// How the visibility rules treat a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessClass {
    /// A record: holder, compartment and consent rules apply.
    Record = 0,
    /// A golden record of the patient index: visible when one of its sources is.
    Index = 1,
    /// Server-private state: visible to the server alone.
    Private = 2,
}

impl AccessClass {
    /// The stored code.
    pub fn code(self) -> i64 {
        self as i64
    }
}

/// One applicable rule of a privacy Consent: a provision node with a `type`, with the
/// conditions of its ancestors folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRule {
    /// The patient the Consent is about (`Consent.patient`).
    pub patient: String,
    /// The node's position in the provision tree, as a string that sorts a node after its
    /// ancestors and after its earlier siblings' subtrees; of the nodes of one Consent that
    /// apply to a request, the greatest decides (R4: a nested provision overrides its parent,
    /// the last applicable sibling wins).
    pub node: String,
    /// `permit` (true) or `deny` (false).
    pub permit: bool,
    /// The organisation the rule is limited to (`None`: any caller).
    pub actor: Option<String>,
    /// The resource type the rule is limited to (`None`: any type).
    pub class: Option<String>,
    /// Start of the rule's period, epoch milliseconds.
    pub start: Option<i64>,
    /// End of the rule's period, epoch milliseconds (inclusive).
    pub end: Option<i64>,
}

/// The access labels of one resource version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLabels {
    /// How the rules treat it.
    pub class: AccessClass,
    /// Organisation id of the holder.
    pub holder_org: Option<String>,
    /// GB/T 2260 code of the holder's division ([`INVALID_DIVISION`] when malformed).
    pub holder_division: Option<String>,
    /// Ids of the Patients whose compartment it is in.
    pub patients: Vec<String>,
    /// Organisation ids the record is addressed to.
    pub parties: Vec<String>,
    /// The rules of a privacy Consent (empty for anything else, or an inactive Consent).
    pub consent_rules: Vec<ConsentRule>,
}

/// The first tag code in `system`, if any.
pub fn tag_code<'a>(resource: &'a Value, system: &str) -> Option<&'a str> {
    resource
        .get("meta")?
        .get("tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(system))?
        .get("code")?
        .as_str()
}

/// Whether the resource carries the tag `system|code`.
fn has_tag(resource: &Value, system: &str, code: &str) -> bool {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("system").and_then(Value::as_str) == Some(system)
                    && t.get("code").and_then(Value::as_str) == Some(code)
            })
        })
}

/// Whether `resource` is a golden record of the patient index.
pub fn is_golden(resource: &Value) -> bool {
    resource.get("resourceType").and_then(Value::as_str) == Some("Patient")
        && has_tag(resource, MPI_SYSTEM, GOLDEN_TAG_CODE)
}

/// The kind of server-owned state `resource` is (`golden-record` for the index's golden
/// records), or `None` for a client's resource.
pub fn server_owned_kind(resource: &Value) -> Option<&str> {
    if is_golden(resource) {
        return Some("golden-record");
    }
    tag_code(resource, SERVER_OWNED_SYSTEM)
}

/// Marks `resource` as server-owned state of `kind` (replacing any earlier mark).
pub fn mark_server_owned(resource: &mut Value, kind: &str) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(tags) = tags.as_array_mut() else {
        return;
    };
    tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(SERVER_OWNED_SYSTEM));
    tags.push(serde_json::json!({"system": SERVER_OWNED_SYSTEM, "code": kind}));
}

/// The access labels of `resource`, given its search index entries (as extracted for the
/// store, so that the compartment is what the `patient` search parameters say it is).
pub fn labels(resource: &Value, entries: &[IndexEntry]) -> AccessLabels {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let class = match server_owned_kind(resource) {
        Some("golden-record") => AccessClass::Index,
        Some(kind) if PRIVATE_KINDS.contains(&kind) => AccessClass::Private,
        _ => AccessClass::Record,
    };
    let holder_division = tag_code(resource, DIVISION_TAG_SYSTEM).map(|code| {
        if is_division_code(code) {
            code.to_owned()
        } else {
            INVALID_DIVISION.to_owned()
        }
    });
    AccessLabels {
        class,
        holder_org: tag_code(resource, HOLDER_TAG_SYSTEM).map(str::to_owned),
        holder_division,
        patients: patients_of(resource_type, resource, entries),
        parties: parties_of(resource_type, entries),
        consent_rules: if resource_type == "Consent" {
            consent_rules(resource)
        } else {
            Vec::new()
        },
    }
}

/// A six-digit GB/T 2260 code of a province, prefecture or county.
fn is_division_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 6
        && b.iter().all(u8::is_ascii_digit)
        && &b[0..2] != b"00"
        && !(&b[2..4] == b"00" && &b[4..6] != b"00")
}

/// The half-open range of holder-division codes inside `division`: a province's two leading
/// digits, a prefecture's four, a county exactly. `None` for a malformed code (which contains
/// nothing).
pub fn division_range(division: &str) -> Option<(String, String)> {
    if !is_division_code(division) {
        return None;
    }
    let prefix = if division.ends_with("0000") {
        &division[..2]
    } else if division.ends_with("00") {
        &division[..4]
    } else {
        division
    };
    // The next prefix of equal length: digits only, and never "99…" at a level that has a
    // successor, since the last digit is below 9 or the whole prefix carries.
    let mut upper: Vec<u8> = prefix.as_bytes().to_vec();
    for i in (0..upper.len()).rev() {
        if upper[i] < b'9' {
            upper[i] += 1;
            upper.truncate(i + 1);
            break;
        }
        if i == 0 {
            // "99…": everything above starts with ':' (the byte after '9').
            upper = b":".to_vec();
        }
    }
    Some((
        prefix.to_owned(),
        String::from_utf8(upper).unwrap_or_else(|_| ":".to_owned()),
    ))
}

/// The ids of the Patients whose compartment the resource is in. A Patient is in its own; a
/// golden record also in those of the source records it links (`seealso`), so that a
/// resident's consent on any of their records covers the record that joins them.
fn patients_of(resource_type: &str, resource: &Value, entries: &[IndexEntry]) -> Vec<String> {
    let mut out = Vec::new();
    if resource_type == "Patient" {
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            out.push(id.to_owned());
        }
        if is_golden(resource) {
            out.extend(linked_patients(resource, "seealso"));
        }
    } else {
        let params = crate::r4().patient_compartment_params(resource_type);
        for entry in entries {
            if !params.iter().any(|p| p == &entry.param) {
                continue;
            }
            if let IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(id),
                ..
            } = &entry.value
            {
                if t == "Patient" {
                    out.push(id.clone());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The ids of the Patients whose compartment `resource` is in, as [`AccessLabels::patients`]
/// has them, computed from the compartment's search parameters alone (without the full index
/// extraction of a write).
pub fn compartment_patients(resource: &Value) -> Vec<String> {
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = crate::r4().patient_compartment_params(resource_type);
    let entries = if resource_type == "Patient" || params.is_empty() {
        Vec::new()
    } else {
        crate::search::index::extract_params(resource, params)
    };
    patients_of(resource_type, resource, &entries)
}

/// Ids of the Patients `resource` links to with `link.type == link_type`.
pub fn linked_patients(resource: &Value, link_type: &str) -> Vec<String> {
    resource
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some(link_type))
        .filter_map(|l| l.pointer("/other/reference").and_then(Value::as_str))
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .collect()
}

/// Search parameters whose Organization targets are parties to a record of each type.
const PARTY_PARAMS: &[(&str, &[&str])] = &[
    ("Task", &["requester", "owner"]),
    ("ServiceRequest", &["requester", "performer"]),
];

fn parties_of(resource_type: &str, entries: &[IndexEntry]) -> Vec<String> {
    let Some((_, params)) = PARTY_PARAMS.iter().find(|(t, _)| *t == resource_type) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .iter()
        .filter(|e| params.contains(&e.param.as_str()))
        .filter_map(|e| match &e.value {
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(id),
                ..
            } if t == "Organization" => Some(id.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `consent` governs access: an R4 Consent whose `scope` is patient-privacy.
pub fn is_privacy_consent(consent: &Value) -> bool {
    consent.get("resourceType").and_then(Value::as_str) == Some("Consent")
        && consent
            .pointer("/scope/coding")
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("code").and_then(Value::as_str) == Some(PRIVACY_SCOPE_CODE)
                        && c.get("system")
                            .and_then(Value::as_str)
                            .is_none_or(|s| s == CONSENT_SCOPE_SYSTEM)
                })
            })
}

/// The patient a Consent is about.
pub fn consent_patient(consent: &Value) -> Option<&str> {
    consent
        .pointer("/patient/reference")
        .and_then(Value::as_str)?
        .strip_prefix("Patient/")
        .map(|id| id.split('/').next().unwrap_or(id))
        .filter(|id| !id.is_empty())
}

/// The organisation ids a Consent's provisions of `type` permit, anywhere in the tree.
pub fn permitted_organizations(consent: &Value) -> Vec<String> {
    fn walk(provision: &Value, out: &mut Vec<String>) {
        if provision.get("type").and_then(Value::as_str) == Some("permit") {
            out.extend(actor_orgs(provision).into_iter().flatten());
        }
        for nested in provision
            .get("provision")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(nested, out);
        }
    }
    let mut out = Vec::new();
    if let Some(provision) = consent.get("provision") {
        walk(provision, &mut out);
    }
    out
}

/// The actors of a provision as organisation ids: `None` when the provision names no actor
/// (it applies to everyone); a non-organisation actor becomes a reference no caller has.
fn actor_orgs(provision: &Value) -> Option<Vec<String>> {
    let actors = provision.get("actor")?.as_array()?;
    if actors.is_empty() {
        return None;
    }
    Some(
        actors
            .iter()
            .map(|actor| {
                let reference = actor
                    .pointer("/reference/reference")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match reference.strip_prefix("Organization/") {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    // Matches no organisation id (ids are [A-Za-z0-9.-]).
                    _ => format!(" {reference}"),
                }
            })
            .collect(),
    )
}

/// Classes of a provision as resource type names (`None`: every type).
fn classes(provision: &Value) -> Option<Vec<String>> {
    let classes = provision.get("class")?.as_array()?;
    if classes.is_empty() {
        return None;
    }
    Some(
        classes
            .iter()
            .map(|c| {
                c.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or(" ")
                    .to_owned()
            })
            .collect(),
    )
}

/// The conditions a provision node adds, folded with its ancestors' (intersections).
#[derive(Clone, Default)]
struct Conditions {
    actors: Option<Vec<String>>,
    classes: Option<Vec<String>>,
    start: Option<i64>,
    end: Option<i64>,
    /// No request can satisfy these conditions (empty intersection).
    impossible: bool,
}

fn intersect(a: Option<Vec<String>>, b: Option<Vec<String>>) -> (Option<Vec<String>>, bool) {
    match (a, b) {
        (None, x) | (x, None) => (x, false),
        (Some(a), Some(b)) => {
            let both: Vec<String> = a.into_iter().filter(|x| b.contains(x)).collect();
            let empty = both.is_empty();
            (Some(both), empty)
        }
    }
}

impl Conditions {
    fn and(&self, provision: &Value) -> Conditions {
        let (actors, no_actor) = intersect(self.actors.clone(), actor_orgs(provision));
        let (classes, no_class) = intersect(self.classes.clone(), classes(provision));
        let bound = |name: &str| {
            provision
                .get("period")?
                .get(name)?
                .as_str()
                .and_then(crate::search::parse_date_range)
        };
        let start = match (self.start, bound("start").map(|(s, _)| s)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let end = match (self.end, bound("end").map(|(_, e)| e)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Conditions {
            actors,
            classes,
            start,
            end,
            impossible: self.impossible
                || no_actor
                || no_class
                || matches!((start, end), (Some(s), Some(e)) if s > e),
        }
    }
}

/// The rules of a privacy Consent: one per (typed provision node × actor × class) whose
/// conditions can hold. An inactive Consent, or one of another scope, has none.
pub fn consent_rules(consent: &Value) -> Vec<ConsentRule> {
    if consent.get("status").and_then(Value::as_str) != Some("active")
        || !is_privacy_consent(consent)
    {
        return Vec::new();
    }
    let (Some(patient), Some(root)) = (consent_patient(consent), consent.get("provision")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    flatten(
        root,
        &Conditions::default(),
        String::from("0000"),
        patient,
        &mut out,
    );
    out
}

fn flatten(
    provision: &Value,
    inherited: &Conditions,
    node: String,
    patient: &str,
    out: &mut Vec<ConsentRule>,
) {
    let here = inherited.and(provision);
    if here.impossible {
        // Neither this node nor anything under it can apply.
        return;
    }
    let permit = match provision.get("type").and_then(Value::as_str) {
        Some("permit") => Some(true),
        Some("deny") => Some(false),
        _ => None,
    };
    if let Some(permit) = permit {
        let actors: Vec<Option<String>> = match &here.actors {
            Some(list) => list.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        let classes: Vec<Option<String>> = match &here.classes {
            Some(list) => list.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        for actor in &actors {
            for class in &classes {
                out.push(ConsentRule {
                    patient: patient.to_owned(),
                    node: node.clone(),
                    permit,
                    actor: actor.clone(),
                    class: class.clone(),
                    start: here.start,
                    end: here.end,
                });
            }
        }
    }
    for (i, nested) in provision
        .get("provision")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        // Deeper than any real consent nests; bounds the work a hostile one can cause.
        .take(256)
    {
        if node.len() > 5 * 16 {
            break;
        }
        flatten(nested, &here, format!("{node}.{i:04}"), patient, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The decision the rules give, as the store's SQL computes it: per Consent, the
    /// applicable rule with the greatest node decides; any deny beats any permit.
    fn decide(rules: &[ConsentRule], org: Option<&str>, class: &str, now: i64) -> Option<bool> {
        let applicable = |r: &&ConsentRule| {
            r.actor.as_deref().is_none_or(|a| Some(a) == org)
                && r.class.as_deref().is_none_or(|c| c == class)
                && r.start.is_none_or(|s| s <= now)
                && r.end.is_none_or(|e| e >= now)
        };
        rules
            .iter()
            .filter(applicable)
            .max_by(|a, b| a.node.cmp(&b.node))
            .map(|r| r.permit)
    }

    fn consent(provision: Value) -> Value {
        json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "patient": {"reference": "Patient/p1"},
            "provision": provision
        })
    }

    /// The store places a new resource by `compartment_patients` before extracting its index
    /// entries; the place must be one of the patients its labels name.
    #[test]
    fn compartment_patients_agree_with_the_labels() {
        let resources = [
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/b"},
                   "performer": [{"reference": "Patient/a"}, {"reference": "Practitioner/x"}]}),
            json!({"resourceType": "Encounter", "status": "finished",
                   "subject": {"reference": "Patient/p"}}),
            json!({"resourceType": "Patient", "id": "g",
                   "meta": {"tag": [{"system": MPI_SYSTEM, "code": GOLDEN_TAG_CODE}]},
                   "link": [{"type": "seealso", "other": {"reference": "Patient/s1"}}]}),
            json!({"resourceType": "Organization", "name": "clinic"}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Group/g"}}),
        ];
        for resource in &resources {
            let entries = crate::search::index::extract(resource);
            assert_eq!(
                compartment_patients(resource),
                labels(resource, &entries).patients,
                "{resource}"
            );
        }
        assert_eq!(compartment_patients(&resources[0]), ["a", "b"]);
    }

    #[test]
    fn a_nested_provision_overrides_its_parent_and_the_last_sibling_wins() {
        let c = consent(json!({
            "type": "deny",
            "provision": [
                {"type": "permit", "actor": [{"reference": {"reference": "Organization/a"}}]},
                {"type": "deny", "actor": [{"reference": {"reference": "Organization/a"}}],
                 "class": [{"code": "Observation"}]}
            ]
        }));
        let rules = consent_rules(&c);
        assert_eq!(decide(&rules, Some("a"), "Condition", 0), Some(true));
        assert_eq!(decide(&rules, Some("a"), "Observation", 0), Some(false));
        assert_eq!(decide(&rules, Some("b"), "Condition", 0), Some(false));
        assert_eq!(decide(&rules, None, "Condition", 0), Some(false));
    }

    #[test]
    fn nested_actors_intersect_with_their_parents() {
        let c = consent(json!({
            "type": "permit", "actor": [{"reference": {"reference": "Organization/a"}}],
            "provision": [{"type": "deny", "actor": [{"reference": {"reference": "Organization/b"}}]}]
        }));
        let rules = consent_rules(&c);
        // The nested deny can never apply: no caller is both a and b.
        assert_eq!(decide(&rules, Some("b"), "Observation", 0), None);
        assert_eq!(decide(&rules, Some("a"), "Observation", 0), Some(true));
    }

    #[test]
    fn periods_bound_rules_and_inactive_or_other_scopes_give_none() {
        let mut c = consent(json!({
            "type": "permit", "actor": [{"reference": {"reference": "Organization/a"}}],
            "period": {"start": "2026-01-01", "end": "2026-01-31"}
        }));
        let rules = consent_rules(&c);
        let jan = crate::search::parse_date_range("2026-01-15")
            .map(|r| r.0)
            .unwrap_or(0);
        let feb = crate::search::parse_date_range("2026-02-15")
            .map(|r| r.0)
            .unwrap_or(0);
        assert_eq!(decide(&rules, Some("a"), "Observation", jan), Some(true));
        assert_eq!(decide(&rules, Some("a"), "Observation", feb), None);
        c["status"] = json!("inactive");
        assert!(consent_rules(&c).is_empty());
        c["status"] = json!("active");
        c["scope"] = json!({"coding": [{"code": "research"}]});
        assert!(consent_rules(&c).is_empty());
    }

    #[test]
    fn division_ranges_follow_the_code_levels() {
        assert_eq!(
            division_range("320000"),
            Some(("32".to_owned(), "33".to_owned()))
        );
        assert_eq!(
            division_range("320100"),
            Some(("3201".to_owned(), "3202".to_owned()))
        );
        assert_eq!(
            division_range("320481"),
            Some(("320481".to_owned(), "320482".to_owned()))
        );
        assert_eq!(
            division_range("329900"),
            Some(("3299".to_owned(), "33".to_owned()))
        );
        assert_eq!(division_range("32x"), None);
        let (lo, hi) = division_range("320000").unwrap_or_default();
        assert!(INVALID_DIVISION < lo.as_str() && "320481" < hi.as_str());
    }

    #[test]
    fn labels_of_a_golden_record_include_its_sources() {
        let golden = json!({
            "resourceType": "Patient", "id": "g",
            "meta": {"tag": [{"system": MPI_SYSTEM, "code": GOLDEN_TAG_CODE}]},
            "link": [{"type": "seealso", "other": {"reference": "Patient/s1"}},
                     {"type": "seealso", "other": {"reference": "Patient/s2"}}]
        });
        let labels = labels(&golden, &[]);
        assert_eq!(labels.class, AccessClass::Index);
        assert_eq!(labels.patients, vec!["g", "s1", "s2"]);
        let mut code = json!({"resourceType": "Basic", "id": "c"});
        mark_server_owned(&mut code, "sign-in-code");
        assert_eq!(super::labels(&code, &[]).class, AccessClass::Private);
    }
}
