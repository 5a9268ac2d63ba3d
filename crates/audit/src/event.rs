//! Typed audit records and their rendering as IHE BALP-shaped FHIR R4 `AuditEvent`s.
//!
//! An [`AuditRecord`] is what the server knows about one request: the interaction, its outcome,
//! who asked (the [`Agent`]), from where, which node answered (the [`Source`]), which patients
//! and resources were concerned, the query for searches, and the purpose of use (notably
//! break-the-glass). [`AuditRecord::to_fhir`] renders it following the IHE Basic Audit Log
//! Patterns (BALP) for RESTful activity:
//!
//! - `type` = `rest` from `http://terminology.hl7.org/CodeSystem/audit-event-type` (or DICOM
//!   `110110` "Patient Record", see [`EventType`]); `subtype` = the
//!   `http://hl7.org/fhir/restful-interaction` code;
//! - one requestor agent (`requestor = true`) carrying the user's identity, roles, network
//!   address and purpose of use, and — when a human user acts through a client application —
//!   a second agent for the application;
//! - `source.observer` = the phip node;
//! - entities: each patient (`type` 1 "Person", `role` 1 "Patient"), each resource touched
//!   (`type` 2 "System Object", `role` 4 "Domain Resource") and the search query (`type` 2,
//!   `role` 24 "Query", `query` = base64 of the query string).
//!
//! The rendering carries no `id`: the [log](crate::log) assigns it when the record is appended.

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::net::IpAddr;

/// Code system of the BALP event type `rest`.
pub const AUDIT_EVENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
/// Code system of DICOM audit codes (e.g. `110110` "Patient Record").
pub const DICOM_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// Code system of the FHIR RESTful interactions used as `AuditEvent.subtype`.
pub const RESTFUL_INTERACTION_SYSTEM: &str = "http://hl7.org/fhir/restful-interaction";
/// Code system of `AuditEvent.entity.type`.
pub const ENTITY_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
/// Code system of `AuditEvent.entity.role`.
pub const OBJECT_ROLE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// Code system of purposes of use such as `BTG` (break the glass).
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// Code system of agent types for human users.
pub const SECURITY_ROLE_TYPE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
/// Code system of `AuditEvent.source.type`.
pub const SECURITY_SOURCE_TYPE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/security-source-type";
/// Identifier system for the `sub` claim of the caller's access token.
pub const SUBJECT_ID_SYSTEM: &str = "urn:phip:sub";
/// Identifier system for OAuth2 client ids.
pub const CLIENT_ID_SYSTEM: &str = "urn:phip:client-id";
/// Identifier system for phip node names (`AuditEvent.source.observer`).
pub const NODE_ID_SYSTEM: &str = "urn:phip:node";
/// Extension on the requestor agent naming the caller's organisation (`valueReference`).
pub const ORGANIZATION_EXTENSION: &str = "urn:phip:audit:organization";
/// Extension carrying the record's free-text detail (`valueString`).
pub const DETAIL_EXTENSION: &str = "urn:phip:audit:detail";

/// A code with its system and display, as FHIR `Coding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding {
    /// Code system URI.
    pub system: String,
    /// The code.
    pub code: String,
    /// Human-readable display, if any.
    pub display: Option<String>,
}

impl Coding {
    /// A coding with a display.
    pub fn new(system: &str, code: &str, display: &str) -> Self {
        Coding {
            system: system.into(),
            code: code.into(),
            display: Some(display.into()),
        }
    }

    /// Break-the-glass: `BTG` from `v3-ActReason`.
    pub fn break_the_glass() -> Self {
        Coding::new(ACT_REASON_SYSTEM, "BTG", "break the glass")
    }

    /// Treatment: `TREAT` from `v3-ActReason`.
    pub fn treatment() -> Self {
        Coding::new(ACT_REASON_SYSTEM, "TREAT", "treatment")
    }

    /// Emergency treatment: `ETREAT` from `v3-ActReason`.
    pub fn emergency_treatment() -> Self {
        Coding::new(ACT_REASON_SYSTEM, "ETREAT", "Emergency Treatment")
    }

    /// Public health: `PUBHLTH` from `v3-ActReason`.
    pub fn public_health() -> Self {
        Coding::new(ACT_REASON_SYSTEM, "PUBHLTH", "public health")
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("system".into(), json!(self.system));
        m.insert("code".into(), json!(self.code));
        if let Some(d) = &self.display {
            m.insert("display".into(), json!(d));
        }
        Value::Object(m)
    }

    fn to_concept(&self) -> Value {
        json!({ "coding": [self.to_json()] })
    }
}

/// `AuditEvent.action`: what kind of operation was performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `C`: create.
    Create,
    /// `R`: read, view, print.
    Read,
    /// `U`: update.
    Update,
    /// `D`: delete.
    Delete,
    /// `E`: execute (searches, operations, bundles).
    Execute,
}

impl Action {
    /// The FHIR code (`C`, `R`, `U`, `D`, `E`).
    pub fn code(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }
}

/// `AuditEvent.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `0`: success.
    Success,
    /// `4`: minor failure — the request was refused or invalid (4xx, including denied access).
    MinorFailure,
    /// `8`: serious failure — the action could not be completed (5xx).
    SeriousFailure,
    /// `12`: major failure — the node became unavailable.
    MajorFailure,
}

impl Outcome {
    /// The FHIR code (`0`, `4`, `8`, `12`).
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
            Outcome::MajorFailure => "12",
        }
    }

    /// The usual outcome for an HTTP status: 2xx/3xx success, 4xx minor, 5xx serious.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            0..=399 => Outcome::Success,
            400..=499 => Outcome::MinorFailure,
            _ => Outcome::SeriousFailure,
        }
    }
}

/// The FHIR RESTful interaction audited (`AuditEvent.subtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `read`.
    Read,
    /// `vread`.
    Vread,
    /// `update` (including conditional update).
    Update,
    /// `patch`.
    Patch,
    /// `delete` (including conditional delete).
    Delete,
    /// `history` (instance, type or system).
    History,
    /// `create` (including conditional create).
    Create,
    /// `search` (type or system, GET or POST).
    Search,
    /// `capabilities`.
    Capabilities,
    /// `transaction`.
    Transaction,
    /// `batch`.
    Batch,
    /// `operation` (e.g. `$everything`).
    Operation,
}

impl Interaction {
    /// The `restful-interaction` code.
    pub fn code(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Update => "update",
            Interaction::Patch => "patch",
            Interaction::Delete => "delete",
            Interaction::History => "history",
            Interaction::Create => "create",
            Interaction::Search => "search",
            Interaction::Capabilities => "capabilities",
            Interaction::Transaction => "transaction",
            Interaction::Batch => "batch",
            Interaction::Operation => "operation",
        }
    }

    /// The action BALP pairs with the interaction: searches, bundles and operations are `E`.
    pub fn action(self) -> Action {
        match self {
            Interaction::Read
            | Interaction::Vread
            | Interaction::History
            | Interaction::Capabilities => Action::Read,
            Interaction::Update | Interaction::Patch => Action::Update,
            Interaction::Delete => Action::Delete,
            Interaction::Create => Action::Create,
            Interaction::Search
            | Interaction::Transaction
            | Interaction::Batch
            | Interaction::Operation => Action::Execute,
        }
    }
}

/// `AuditEvent.type`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EventType {
    /// BALP's `rest` "RESTful Operation" (the default for API requests).
    #[default]
    Rest,
    /// DICOM `110110` "Patient Record".
    PatientRecord,
    /// Any other coding (e.g. DICOM `110114` "User Authentication").
    Other(Coding),
}

impl EventType {
    fn coding(&self) -> Coding {
        match self {
            EventType::Rest => Coding::new(AUDIT_EVENT_TYPE_SYSTEM, "rest", "Restful Operation"),
            EventType::PatientRecord => Coding::new(DICOM_SYSTEM, "110110", "Patient Record"),
            EventType::Other(c) => c.clone(),
        }
    }
}

/// Who made the request (from the access token and the connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agent {
    /// The token's `sub` claim.
    pub sub: Option<String>,
    /// The OAuth2 client id of the application used.
    pub client_id: Option<String>,
    /// The caller's organisation, as a reference (`Organization/…`).
    pub organization: Option<String>,
    /// The user as a FHIR reference: `Practitioner/…`, `PractitionerRole/…` or `Patient/…`.
    pub reference: Option<String>,
    /// A display name for the user.
    pub name: Option<String>,
    /// Roles (free text, e.g. `doctor`, or scopes-derived labels).
    pub roles: Vec<String>,
    /// The client's network address (IP address or host name).
    pub network_address: Option<String>,
}

impl Agent {
    /// The value stored in the log's `agent` column and matched by [`crate::AuditQuery::agent`]:
    /// the FHIR reference if known, else `sub`, else the client id.
    pub fn key(&self) -> Option<&str> {
        self.reference
            .as_deref()
            .or(self.sub.as_deref())
            .or(self.client_id.as_deref())
    }

    fn is_human(&self) -> bool {
        self.reference.is_some() || self.sub.is_some()
    }
}

/// The node that observed and recorded the event (`AuditEvent.source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Node name (`source.observer`).
    pub node: String,
    /// Node base URL or site (`source.site`).
    pub site: Option<String>,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            node: "phip".into(),
            site: None,
        }
    }
}

/// One audited event. Build it with [`AuditRecord::new`] and the chaining setters, or fill the
/// public fields directly.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When the event happened (`AuditEvent.recorded`).
    pub when: DateTime<Utc>,
    /// `AuditEvent.type`.
    pub event_type: EventType,
    /// `AuditEvent.subtype`, if the event is a RESTful interaction.
    pub interaction: Option<Interaction>,
    /// `AuditEvent.action`.
    pub action: Action,
    /// `AuditEvent.outcome`.
    pub outcome: Outcome,
    /// `AuditEvent.outcomeDesc`: why it failed, e.g. "403: consent denies sharing".
    pub outcome_desc: Option<String>,
    /// The requestor.
    pub agent: Agent,
    /// The observing node.
    pub source: Source,
    /// Patients concerned, as references `Patient/…` (a bare id is prefixed).
    pub patients: Vec<String>,
    /// Resources touched, as references `Type/id` or `Type/id/_history/v`.
    pub resources: Vec<String>,
    /// The query of a search, e.g. `Observation?patient=123&code=8480-6`.
    pub query: Option<String>,
    /// Purposes of use (`AuditEvent.purposeOfEvent` and the agent's `purposeOfUse`), e.g.
    /// [`Coding::break_the_glass`].
    pub purpose_of_use: Vec<Coding>,
    /// Free-text detail.
    pub detail: Option<String>,
}

impl AuditRecord {
    /// A record of `interaction` with `outcome`, happening now; the action follows the
    /// interaction (see [`Interaction::action`]).
    pub fn new(interaction: Interaction, outcome: Outcome) -> Self {
        AuditRecord {
            when: Utc::now(),
            event_type: EventType::Rest,
            interaction: Some(interaction),
            action: interaction.action(),
            outcome,
            outcome_desc: None,
            agent: Agent::default(),
            source: Source::default(),
            patients: Vec::new(),
            resources: Vec::new(),
            query: None,
            purpose_of_use: Vec::new(),
            detail: None,
        }
    }

    /// Set the event time.
    pub fn at(mut self, when: DateTime<Utc>) -> Self {
        self.when = when;
        self
    }

    /// Set the event type.
    pub fn event_type(mut self, t: EventType) -> Self {
        self.event_type = t;
        self
    }

    /// Override the action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// Describe the outcome (typically why it failed).
    pub fn outcome_desc(mut self, desc: impl Into<String>) -> Self {
        self.outcome_desc = Some(desc.into());
        self
    }

    /// Set the requestor.
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agent = agent;
        self
    }

    /// Set the observing node.
    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Add a patient concerned (`Patient/123` or `123`).
    pub fn patient(mut self, patient: impl AsRef<str>) -> Self {
        let p = normalize_patient(patient.as_ref());
        if !self.patients.contains(&p) {
            self.patients.push(p);
        }
        self
    }

    /// Add a resource touched (`Type/id[/_history/v]`).
    pub fn resource(mut self, reference: impl Into<String>) -> Self {
        self.resources.push(reference.into());
        self
    }

    /// Set the search query.
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Add a purpose of use.
    pub fn purpose(mut self, purpose: Coding) -> Self {
        self.purpose_of_use.push(purpose);
        self
    }

    /// Set the free-text detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `recorded` in the form stored and compared by the log (UTC, milliseconds).
    pub fn recorded(&self) -> String {
        self.when.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The patients as normalised references (`Patient/…`), duplicates removed.
    pub fn patient_refs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.patients.len());
        for p in &self.patients {
            let p = normalize_patient(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }

    /// Render as a FHIR R4 `AuditEvent` (without `id`).
    pub fn to_fhir(&self) -> Value {
        let mut ev = Map::new();
        ev.insert("resourceType".into(), json!("AuditEvent"));
        if let Some(d) = self.detail.as_deref().filter(|d| !d.is_empty()) {
            ev.insert(
                "extension".into(),
                json!([{ "url": DETAIL_EXTENSION, "valueString": d }]),
            );
        }
        ev.insert("type".into(), self.event_type.coding().to_json());
        if let Some(i) = self.interaction {
            ev.insert(
                "subtype".into(),
                json!([{ "system": RESTFUL_INTERACTION_SYSTEM, "code": i.code(), "display": i.code() }]),
            );
        }
        ev.insert("action".into(), json!(self.action.code()));
        ev.insert("recorded".into(), json!(self.recorded()));
        ev.insert("outcome".into(), json!(self.outcome.code()));
        if let Some(d) = self.outcome_desc.as_deref().filter(|d| !d.is_empty()) {
            ev.insert("outcomeDesc".into(), json!(d));
        }
        let purposes: Vec<Value> = self.purpose_of_use.iter().map(Coding::to_concept).collect();
        if !purposes.is_empty() {
            ev.insert("purposeOfEvent".into(), json!(purposes));
        }
        ev.insert("agent".into(), Value::Array(self.agents(&purposes)));
        let mut source = Map::new();
        if let Some(site) = self.source.site.as_deref().filter(|s| !s.is_empty()) {
            source.insert("site".into(), json!(site));
        }
        source.insert(
            "observer".into(),
            json!({
                "identifier": { "system": NODE_ID_SYSTEM, "value": non_empty(&self.source.node, "phip") },
                "display": non_empty(&self.source.node, "phip"),
            }),
        );
        source.insert(
            "type".into(),
            json!([Coding::new(SECURITY_SOURCE_TYPE_SYSTEM, "4", "Application Server").to_json()]),
        );
        ev.insert("source".into(), Value::Object(source));
        let entities = self.entities();
        if !entities.is_empty() {
            ev.insert("entity".into(), Value::Array(entities));
        }
        Value::Object(ev)
    }

    fn agents(&self, purposes: &[Value]) -> Vec<Value> {
        let a = &self.agent;
        let mut requestor = Map::new();
        let human = a.is_human();
        let (type_coding, who) = if human || a.client_id.is_none() {
            let mut who = Map::new();
            if let Some(r) = &a.reference {
                who.insert("reference".into(), json!(r));
            }
            if let Some(sub) = &a.sub {
                who.insert(
                    "identifier".into(),
                    json!({ "system": SUBJECT_ID_SYSTEM, "value": sub }),
                );
            }
            if who.is_empty() {
                // An unauthenticated caller: say so rather than leave `who` empty.
                who.insert("display".into(), json!("anonymous"));
            }
            (
                Coding::new(SECURITY_ROLE_TYPE_SYSTEM, "humanuser", "human user"),
                who,
            )
        } else {
            // Backend services: the application itself is the requestor.
            (
                Coding::new(DICOM_SYSTEM, "110150", "Application"),
                client_who(a.client_id.as_deref().unwrap_or_default()),
            )
        };
        if let Some(org) = &a.organization {
            requestor.insert(
                "extension".into(),
                json!([{ "url": ORGANIZATION_EXTENSION, "valueReference": { "reference": org } }]),
            );
        }
        requestor.insert("type".into(), type_coding.to_concept());
        if !a.roles.is_empty() {
            let roles: Vec<Value> = a.roles.iter().map(|r| json!({ "text": r })).collect();
            requestor.insert("role".into(), json!(roles));
        }
        requestor.insert("who".into(), Value::Object(who));
        if let Some(n) = &a.name {
            requestor.insert("name".into(), json!(n));
        }
        requestor.insert("requestor".into(), json!(true));
        if let Some(addr) = a.network_address.as_deref().filter(|s| !s.is_empty()) {
            requestor.insert("network".into(), network(addr));
        }
        if !purposes.is_empty() {
            requestor.insert("purposeOfUse".into(), json!(purposes));
        }
        let mut agents = vec![Value::Object(requestor)];
        if let (true, Some(client)) = (human, a.client_id.as_deref()) {
            let mut app = Map::new();
            app.insert(
                "type".into(),
                Coding::new(DICOM_SYSTEM, "110150", "Application").to_concept(),
            );
            app.insert("who".into(), Value::Object(client_who(client)));
            app.insert("requestor".into(), json!(false));
            if let Some(addr) = a.network_address.as_deref().filter(|s| !s.is_empty()) {
                app.insert("network".into(), network(addr));
            }
            agents.push(Value::Object(app));
        }
        agents
    }

    fn entities(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for p in self.patient_refs() {
            out.push(json!({
                "what": { "reference": p },
                "type": Coding::new(ENTITY_TYPE_SYSTEM, "1", "Person").to_json(),
                "role": Coding::new(OBJECT_ROLE_SYSTEM, "1", "Patient").to_json(),
            }));
        }
        for r in &self.resources {
            out.push(json!({
                "what": { "reference": r },
                "type": Coding::new(ENTITY_TYPE_SYSTEM, "2", "System Object").to_json(),
                "role": Coding::new(OBJECT_ROLE_SYSTEM, "4", "Domain Resource").to_json(),
            }));
        }
        if let Some(q) = &self.query {
            out.push(json!({
                "type": Coding::new(ENTITY_TYPE_SYSTEM, "2", "System Object").to_json(),
                "role": Coding::new(OBJECT_ROLE_SYSTEM, "24", "Query").to_json(),
                "query": base64::engine::general_purpose::STANDARD.encode(q.as_bytes()),
            }));
        }
        out
    }
}

fn non_empty<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() {
        fallback
    } else {
        s
    }
}

fn client_who(client_id: &str) -> Map<String, Value> {
    let mut who = Map::new();
    who.insert(
        "identifier".into(),
        json!({ "system": CLIENT_ID_SYSTEM, "value": client_id }),
    );
    who
}

/// `agent.network`: type `2` for an IP address, `1` for a machine name.
fn network(addr: &str) -> Value {
    let kind = if addr.parse::<IpAddr>().is_ok() {
        "2"
    } else {
        "1"
    };
    json!({ "address": addr, "type": kind })
}

/// `123` → `Patient/123`; references and absolute URLs are kept as given.
pub fn normalize_patient(p: &str) -> String {
    let p = p.trim();
    if p.contains('/') {
        p.to_string()
    } else {
        format!("Patient/{p}")
    }
}

/// `clinic-7` → `Organization/clinic-7`; references are kept as given.
pub fn normalize_organization(o: &str) -> String {
    let o = o.trim();
    if o.contains('/') {
        o.to_string()
    } else {
        format!("Organization/{o}")
    }
}

/// The requestor's organisation in a rendered `AuditEvent`: the
/// [`ORGANIZATION_EXTENSION`] reference on the agent with `requestor = true`, as
/// [`AuditRecord::to_fhir`] writes it from [`Agent::organization`].
pub fn requestor_organization(event: &Value) -> Option<&str> {
    event
        .get("agent")?
        .as_array()?
        .iter()
        .find(|a| a.get("requestor") == Some(&Value::Bool(true)))?
        .get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(ORGANIZATION_EXTENSION))?
        .pointer("/valueReference/reference")?
        .as_str()
}
