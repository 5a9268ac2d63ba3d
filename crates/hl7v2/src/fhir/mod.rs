//! HL7 v2 → FHIR R4, as pure functions from a [`Message`] to JSON.
//!
//! [`map_message`] dispatches on MSH-9:
//!
//! | message | result |
//! |---|---|
//! | ADT^A01/A04/A05/A08/A03 (+ A28/A31 registration/update, A11 cancel) | [`Mapped::Adt`]: Patient, Encounter from PV1 |
//! | ADT^A40 | [`Mapped::Merge`]: one [`MergeInstruction`] per PID/MRG pair |
//! | ORU^R01 | [`Mapped::Results`]: Patient, DiagnosticReport per OBR, Observation per OBX |
//! | anything else | `Err` with table 0357 code 200 (→ AR) |
//!
//! The Patient is returned on its own because it goes through the master patient index,
//! which decides which stored Patient it is. Everything else comes as a FHIR transaction
//! [`Bundle`](MappedAdt::transaction) built once the caller knows the patient's reference.
//!
//! Identifier systems: an assigning authority with an ISO OID gives `urn:oid:<oid>`; a named
//! authority, or the sender ([`sender`]: MSH-4, else MSH-3) when CX-4 is empty, gives
//! `urn:phip:id:<name>` (percent-encoded), with `assigner.display` set to that name; Chinese
//! resident ID numbers give [`RESIDENT_ID_SYSTEM`]; visit numbers without an authority
//! `urn:phip:visit:<facility>`. Report and observation identifiers share the order's system;
//! an observation's value is `<order number>/<OBR-4>/<OBX-3>[/<OBX-4>][#<n>]` (see
//! [`MappedResults::transaction`]).

mod adt;
mod datatypes;
mod patient;
mod results;

use serde_json::{json, Value};

pub use self::adt::MergeInstruction;
pub use self::datatypes::{
    is_resident_id, Context, Identifier, ID_SYSTEM_PREFIX, RESIDENT_ID_SYSTEM,
};
pub use self::results::{MappedObservation, MappedReport};
use crate::error::{ErrorCode, Hl7Error, Location};
use crate::message::Message;

/// The FHIR content of one message.
#[derive(Debug, Clone)]
pub enum Mapped {
    /// Registration, admission, update or discharge.
    Adt(MappedAdt),
    /// Patient merges (A40).
    Merge(Vec<MergeInstruction>),
    /// Observation results (ORU^R01).
    Results(MappedResults),
}

/// An ADT event mapped to FHIR.
#[derive(Debug, Clone)]
pub struct MappedAdt {
    /// The trigger event (`A01`, ...).
    pub event: String,
    /// The Patient from PID, without `id`.
    pub patient: Value,
    /// PID-3 identifiers, to look the patient up in the index.
    pub patient_identifiers: Vec<Identifier>,
    /// The Encounter from PV1 (when present), without `subject`.
    pub encounter: Option<Value>,
    /// PV1-19, the visit number, when present: the encounter's conditional-update key.
    pub encounter_identifier: Option<Identifier>,
    /// The sending facility (MSH-4).
    pub facility: String,
}

/// An ORU^R01 mapped to FHIR.
#[derive(Debug, Clone)]
pub struct MappedResults {
    /// The Patient from PID, without `id`.
    pub patient: Value,
    /// PID-3 identifiers.
    pub patient_identifiers: Vec<Identifier>,
    /// One per OBR, with its observations.
    pub reports: Vec<MappedReport>,
    /// OBX segments outside any OBR.
    pub observations: Vec<MappedObservation>,
    /// The sending facility (MSH-4).
    pub facility: String,
}

/// What a supported message becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Adt,
    Merge,
    Results,
}

/// The kind of a message, from MSH-9 alone.
fn kind(message: &Message) -> Result<Kind, Hl7Error> {
    let kind = message.message_type();
    match (kind.code.as_str(), kind.trigger.as_str()) {
        ("ADT", "A40") => Ok(Kind::Merge),
        ("ADT", "A01" | "A03" | "A04" | "A05" | "A08" | "A11" | "A28" | "A31") => Ok(Kind::Adt),
        ("ADT", other) => Err(Hl7Error::at(
            ErrorCode::UnsupportedEventCode,
            Location::field("MSH", 1, 9).with_component(2),
            format!("ADT event {other} is not supported"),
        )),
        ("ORU", "R01") => Ok(Kind::Results),
        (code, trigger) => Err(Hl7Error::at(
            ErrorCode::UnsupportedMessageType,
            Location::field("MSH", 1, 9),
            format!("message type {code}^{trigger} is not supported"),
        )),
    }
}

/// Checks MSH-9 alone: `Ok` for a message type and event [`map_message`] maps, else the
/// error (200, or 201 for an unsupported ADT event, at MSH-9) that
/// [`Ack::error`](crate::Ack::error) turns into AR. A receiver calls this before anything
/// else, so that an unsupported message is refused whatever else it carries.
pub fn check_supported(message: &Message) -> Result<(), Hl7Error> {
    kind(message).map(|_| ())
}

/// Who sent a message: the sending facility (MSH-4), or, when that is empty, the sending
/// application (MSH-3) — lab and device systems often fill only MSH-3 — each as its
/// namespace id, else its universal id. It scopes the sender's message control ids and
/// assigns the identifiers that name no authority. Both empty is an error (101 at MSH-4):
/// nothing would tell this sender's records and control ids from another's.
pub fn sender(message: &Message) -> Result<String, Hl7Error> {
    message
        .sending_facility()
        .or_else(|| message.sending_application())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            Hl7Error::at(
                ErrorCode::RequiredFieldMissing,
                Location::field("MSH", 1, 4),
                "MSH-4 (sending facility) and MSH-3 (sending application) are both empty: \
                 the sender of the message cannot be identified",
            )
        })
}

/// Maps a message to FHIR. Unsupported message types are an error with code 200 (or 201
/// for an unsupported ADT event), which [`Ack::error`](crate::Ack::error) turns into AR; a
/// message naming no sender (see [`sender`]) is an error at MSH-4.
pub fn map_message(message: &Message) -> Result<Mapped, Hl7Error> {
    let kind = kind(message)?;
    let ctx = context(message)?;
    match kind {
        Kind::Merge => Ok(Mapped::Merge(adt::merges(message, &ctx)?)),
        Kind::Adt => map_adt(message, &message.message_type().trigger, ctx).map(Mapped::Adt),
        Kind::Results => map_results(message, ctx).map(Mapped::Results),
    }
}

/// The mapping context of a message: its sender (see [`sender`]) and default UTC offset.
pub fn context(message: &Message) -> Result<Context, Hl7Error> {
    let facility = sender(message)?;
    // The message time's zone is the sender's zone; use it for times that carry none.
    let msh7 = message.msh().field(7).value();
    let default_offset = msh7
        .rfind(['+', '-'])
        .map(|i| &msh7[i..])
        .filter(|o| o.len() == 5 && o[1..].bytes().all(|b| b.is_ascii_digit()))
        .map(|o| format!("{}:{}", &o[..3], &o[3..]))
        .unwrap_or_else(|| "+08:00".to_owned());
    Ok(Context {
        facility,
        default_offset,
    })
}

fn required_pid<'m>(message: &'m Message) -> Result<crate::message::Segment<'m>, Hl7Error> {
    message.segment("PID").ok_or_else(|| {
        Hl7Error::at(
            ErrorCode::SegmentSequenceError,
            Location::segment("PID", 1),
            "the message has no PID segment",
        )
    })
}

fn map_adt(message: &Message, trigger: &str, ctx: Context) -> Result<MappedAdt, Hl7Error> {
    let (patient, patient_identifiers) = patient::patient(&required_pid(message)?, &ctx)?;
    let (encounter, encounter_identifier) = match message.segment("PV1") {
        Some(pv1) => {
            let (e, id) = adt::encounter(&pv1, trigger, &ctx)?;
            (Some(e), id)
        }
        None => (None, None),
    };
    Ok(MappedAdt {
        event: trigger.to_owned(),
        patient,
        patient_identifiers,
        encounter,
        encounter_identifier,
        facility: ctx.facility,
    })
}

fn map_results(message: &Message, ctx: Context) -> Result<MappedResults, Hl7Error> {
    let (patient, patient_identifiers) = patient::patient(&required_pid(message)?, &ctx)?;
    let (reports, observations) = results::reports(message, &ctx)?;
    if reports.is_empty() && observations.is_empty() {
        return Err(Hl7Error::at(
            ErrorCode::SegmentSequenceError,
            Location::segment("OBR", 1),
            "an ORU^R01 message needs at least one OBR or OBX segment",
        ));
    }
    Ok(MappedResults {
        patient,
        patient_identifiers,
        reports,
        observations,
        facility: ctx.facility,
    })
}

impl MappedAdt {
    /// The transaction for everything but the Patient, given the patient's reference
    /// (e.g. `Patient/123`, as resolved by the index).
    ///
    /// With a visit number the Encounter is a conditional update
    /// (`PUT Encounter?identifier=<system>|<value>`), so A01 then A08 then A03 update one
    /// Encounter. Without one, A01/A04/A05 create it (`POST`) and other events, which
    /// could not say which encounter they mean, leave encounters alone.
    pub fn transaction(&self, patient_reference: &str) -> Value {
        let mut entries = Vec::new();
        if let Some(encounter) = &self.encounter {
            let mut encounter = encounter.clone();
            encounter["subject"] = json!({"reference": patient_reference});
            match &self.encounter_identifier {
                Some(id) => {
                    entries.push(entry(encounter, "PUT", &conditional_url("Encounter", id)))
                }
                None if matches!(self.event.as_str(), "A01" | "A04" | "A05") => {
                    entries.push(entry(encounter, "POST", "Encounter"))
                }
                None => {}
            }
        }
        bundle(entries)
    }
}

impl MappedResults {
    /// The transaction for reports and observations, given the patient's reference.
    ///
    /// Reports with an order number are conditional updates on it and their service
    /// (`PUT DiagnosticReport?identifier=<order>&code=<OBR-4>`), their observations on a key
    /// made of the order number, OBR-4, OBX-3 and OBX-4
    /// (`PUT Observation?identifier=<order system>|<order>/<OBR-4>/<OBX-3>[/<OBX-4>][#<n>]`,
    /// never OBX-1, which feeds repeat), so a resent or corrected result (status C) replaces
    /// the earlier one instead of adding a second; those without an order number are created. `DiagnosticReport.result` points at the observations' `urn:uuid:`
    /// fullUrls, which the transaction resolves.
    pub fn transaction(&self, patient_reference: &str) -> Value {
        let subject = json!({"reference": patient_reference});
        let mut entries = Vec::new();
        let push_observation = |obs: &MappedObservation, entries: &mut Vec<Value>| -> String {
            let mut resource = obs.observation.clone();
            resource["subject"] = subject.clone();
            let e = match &obs.identifier {
                Some(id) => entry(resource, "PUT", &conditional_url("Observation", id)),
                None => entry(resource, "POST", "Observation"),
            };
            let url = e["fullUrl"].as_str().unwrap_or_default().to_owned();
            entries.push(e);
            url
        };
        for report in &self.reports {
            let results: Vec<Value> = report
                .observations
                .iter()
                .map(|o| json!({"reference": push_observation(o, &mut entries)}))
                .collect();
            let mut resource = report.report.clone();
            resource["subject"] = subject.clone();
            if !results.is_empty() {
                resource["result"] = Value::Array(results);
            }
            entries.push(match report.conditional_url() {
                Some(url) => entry(resource, "PUT", &url),
                None => entry(resource, "POST", "DiagnosticReport"),
            });
        }
        for obs in &self.observations {
            push_observation(obs, &mut entries);
        }
        bundle(entries)
    }
}

fn entry(resource: Value, method: &str, url: &str) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "resource": resource,
        "request": {"method": method, "url": url},
    })
}

fn bundle(entries: Vec<Value>) -> Value {
    // FHIR forbids empty arrays: a message with nothing to write (an ORU without results, an
    // A08 without a visit) gives a transaction without `entry`.
    if entries.is_empty() {
        return json!({"resourceType": "Bundle", "type": "transaction"});
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// `Type?identifier=<system>|<value>` with both parts percent-encoded for a query string.
pub fn conditional_url(resource_type: &str, id: &Identifier) -> String {
    format!(
        "{resource_type}?identifier={}|{}",
        query_encode(&id.system),
        query_encode(&id.value)
    )
}

/// One search value percent-encoded for a query string: its delimiters, the token
/// separator and characters URLs may not carry raw (`^`) are escaped.
fn query_encode(raw: &str) -> std::borrow::Cow<'_, str> {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const QUERY: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b',')
        .add(b'<')
        .add(b'>')
        .add(b'=')
        .add(b'?')
        .add(b'|')
        .add(b'\\')
        .add(b'$')
        .add(b'^')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    utf8_percent_encode(raw, QUERY).into()
}
