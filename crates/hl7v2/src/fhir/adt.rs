//! ADT events: PV1 → Encounter, and A40 merges.

use serde_json::{json, Map, Value};

use super::datatypes::{self, Context, Identifier};
use super::patient::default_system;
use crate::error::Hl7Error;
use crate::message::{Message, Segment};

/// What phip should do with the patient ids of an A40 (merge patient — patient identifier
/// list): the records known by `retired` are merged into the one known by `surviving`.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeInstruction {
    /// The surviving patient's identifiers (PID-3).
    pub surviving: Vec<Identifier>,
    /// The identifiers of the record being merged away (MRG-1, and MRG-4 in old versions).
    pub retired: Vec<Identifier>,
    /// The surviving patient as the message describes it (mapped from the PID).
    pub patient: Value,
    /// The sending facility.
    pub facility: String,
}

/// Encounter status implied by the trigger event, given whether PV1-45 (discharge) is set.
fn encounter_status(trigger: &str, discharged: bool) -> &'static str {
    match trigger {
        "A03" => "finished",
        "A05" | "A14" => "planned",
        "A11" | "A27" | "A38" => "cancelled",
        _ if discharged => "finished",
        _ => "in-progress",
    }
}

/// The Encounter described by a PV1 (without `subject`, which the caller sets once the
/// patient is resolved), with its visit-number identifier when PV1-19 is given.
pub fn encounter(
    pv1: &Segment<'_>,
    trigger: &str,
    ctx: &Context,
) -> Result<(Value, Option<Identifier>), Hl7Error> {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Encounter"));
    let visit = pv1.field(19).repetition(1);
    let visit_id = visit_identifier(&visit, ctx);
    if let Some((json, _)) = &visit_id {
        out.insert("identifier".into(), json!([json]));
    }
    let start = datatypes::date_time(&pv1.field(44).value(), ctx, &|| pv1.location(44))?;
    let end = datatypes::date_time(&pv1.field(45).value(), ctx, &|| pv1.location(45))?;
    out.insert(
        "status".into(),
        json!(encounter_status(trigger, end.is_some())),
    );
    let class = pv1.field(2).value();
    let class_code = match class.as_ref() {
        "I" | "B" => Some(("IMP", "inpatient encounter")),
        "O" | "R" | "C" => Some(("AMB", "ambulatory")),
        "E" => Some(("EMER", "emergency")),
        "P" => Some(("PRENC", "pre-admission")),
        _ => None,
    };
    out.insert(
        "class".into(),
        match class_code {
            Some((code, display)) => json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": code,
                "display": display,
            }),
            None => match datatypes::code(&class) {
                Some(class) => json!({
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0004",
                    "code": class,
                }),
                None => json!({
                    "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
                    "code": "UNK",
                }),
            },
        },
    );
    let mut period = Map::new();
    if let Some(start) = start {
        period.insert("start".into(), json!(start));
    }
    if let Some(end) = end {
        period.insert("end".into(), json!(end));
    }
    if !period.is_empty() {
        out.insert("period".into(), Value::Object(period));
    }
    let mut participants = Vec::new();
    for (field, code, display) in [
        (7, "ATND", "attender"),
        (8, "REF", "referrer"),
        (17, "ADM", "admitter"),
    ] {
        for xcn in pv1.field(field).repetitions() {
            if let Some(individual) = datatypes::practitioner_reference(&xcn, ctx) {
                participants.push(json!({
                    "type": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": code,
                        "display": display,
                    }]}],
                    "individual": individual,
                }));
            }
        }
    }
    if !participants.is_empty() {
        out.insert("participant".into(), Value::Array(participants));
    }
    let location = pv1.field(3).repetition(1);
    let place: Vec<String> = (1..=3)
        .map(|n| location.component(n).value().into_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if !place.is_empty() {
        out.insert(
            "location".into(),
            json!([{"location": {"display": place.join(" ")}}]),
        );
    }
    let disposition = pv1.field(36);
    if !disposition.is_empty() {
        if let Some(mut concept) = datatypes::codeable_concept(&disposition.repetition(1)) {
            default_system(
                &mut concept,
                "http://terminology.hl7.org/CodeSystem/v2-0112",
            );
            out.insert(
                "hospitalization".into(),
                json!({"dischargeDisposition": concept}),
            );
        }
    }
    if !ctx.facility.is_empty() {
        out.insert("serviceProvider".into(), json!({"display": ctx.facility}));
    }
    Ok((Value::Object(out), visit_id.map(|(_, id)| id)))
}

/// PV1-19 with the sending facility as assigner when it names none: visit numbers are only
/// unique within the facility that issued them.
fn visit_identifier(
    cx: &crate::message::Repetition<'_>,
    ctx: &Context,
) -> Option<(Value, Identifier)> {
    let (mut json, mut id) = datatypes::identifier(cx, ctx)?;
    if cx.component(4).is_empty() {
        id.system = format!(
            "urn:phip:visit:{}",
            id.system.trim_start_matches(datatypes::ID_SYSTEM_PREFIX)
        );
        json["system"] = json!(id.system);
    }
    Some((json, id))
}

/// The merges of an A40 message: one per PID/MRG pair.
pub fn merges(message: &Message, ctx: &Context) -> Result<Vec<MergeInstruction>, Hl7Error> {
    let mut out = Vec::new();
    let mut pending: Option<(Value, Vec<Identifier>)> = None;
    for segment in message.segments_all() {
        match segment.id() {
            "PID" => pending = Some(super::patient::patient(&segment, ctx)?),
            "MRG" => {
                let Some((patient, surviving)) = pending.take() else {
                    return Err(Hl7Error::at(
                        crate::ErrorCode::SegmentSequenceError,
                        crate::Location::segment("MRG", segment.sequence()),
                        "MRG must follow the PID of the surviving patient",
                    ));
                };
                let mut retired: Vec<Identifier> = segment
                    .field(1)
                    .repetitions()
                    .filter_map(|cx| datatypes::identifier(&cx, ctx).map(|(_, id)| id))
                    .collect();
                if retired.is_empty() {
                    retired.extend(
                        segment
                            .field(4)
                            .repetitions()
                            .filter_map(|cx| datatypes::identifier(&cx, ctx).map(|(_, id)| id)),
                    );
                }
                if retired.is_empty() {
                    return Err(Hl7Error::missing(
                        "MRG",
                        segment.sequence(),
                        1,
                        "prior patient identifier list",
                    ));
                }
                out.push(MergeInstruction {
                    surviving,
                    retired,
                    patient,
                    facility: ctx.facility.clone(),
                });
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(Hl7Error::at(
            crate::ErrorCode::SegmentSequenceError,
            crate::Location::segment("MRG", 1),
            "an A40 message needs a PID followed by an MRG segment",
        ));
    }
    Ok(out)
}
