//! PID → Patient.

use serde_json::{json, Map, Value};

use super::datatypes::{self, Context, Identifier};
use crate::error::{ErrorCode, Hl7Error};
use crate::message::Segment;

/// The Patient described by a PID segment, and its identifiers for the patient index.
///
/// PID-3 is required: a patient nobody can identify cannot be routed through the index.
pub fn patient(pid: &Segment<'_>, ctx: &Context) -> Result<(Value, Vec<Identifier>), Hl7Error> {
    let mut identifiers = Vec::new();
    let mut identifier_json = Vec::new();
    for cx in pid.field(3).repetitions() {
        if let Some((json, id)) = datatypes::identifier(&cx, ctx) {
            identifier_json.push(json);
            identifiers.push(id);
        }
    }
    if identifiers.is_empty() {
        return Err(Hl7Error::missing(
            "PID",
            pid.sequence(),
            3,
            "patient identifier list",
        ));
    }
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Patient"));
    out.insert("identifier".into(), Value::Array(identifier_json));
    let names = datatypes::each(pid.field(5), datatypes::human_name);
    if !names.is_empty() {
        out.insert("name".into(), Value::Array(names));
    }
    let mut telecom = datatypes::each(pid.field(13), |r| datatypes::contact_point(r, "home"));
    telecom.extend(datatypes::each(pid.field(14), |r| {
        datatypes::contact_point(r, "work")
    }));
    if !telecom.is_empty() {
        out.insert("telecom".into(), Value::Array(telecom));
    }
    let gender = pid.field(8).value();
    if !gender.is_empty() {
        let gender = match gender.as_ref() {
            "M" => "male",
            "F" => "female",
            "O" | "A" => "other",
            "U" | "N" => "unknown",
            other => {
                return Err(Hl7Error::at(
                    ErrorCode::TableValueNotFound,
                    pid.location(8),
                    format!("administrative sex {other:?} is not in table 0001"),
                ))
            }
        };
        out.insert("gender".into(), json!(gender));
    }
    if let Some(birth) = datatypes::date(&pid.field(7).value(), &|| pid.location(7))? {
        out.insert("birthDate".into(), json!(birth));
    }
    let death = datatypes::date_time(&pid.field(29).value(), ctx, &|| pid.location(29))?;
    match (death, pid.field(30).value().as_ref()) {
        (Some(when), _) => {
            out.insert("deceasedDateTime".into(), json!(when));
        }
        (None, "Y") => {
            out.insert("deceasedBoolean".into(), json!(true));
        }
        (None, "N") => {
            out.insert("deceasedBoolean".into(), json!(false));
        }
        _ => {}
    }
    let addresses = datatypes::each(pid.field(11), datatypes::address);
    if !addresses.is_empty() {
        out.insert("address".into(), Value::Array(addresses));
    }
    let marital = pid.field(16);
    if !marital.is_empty() {
        if let Some(mut concept) = datatypes::codeable_concept(&marital.repetition(1)) {
            default_system(
                &mut concept,
                "http://terminology.hl7.org/CodeSystem/v2-0002",
            );
            out.insert("maritalStatus".into(), concept);
        }
    }
    let multiple_birth = pid.field(24).value();
    let birth_order = pid.field(25).value();
    if let Ok(order) = birth_order.parse::<u32>() {
        out.insert("multipleBirthInteger".into(), json!(order));
    } else if multiple_birth == "Y" || multiple_birth == "N" {
        out.insert("multipleBirthBoolean".into(), json!(multiple_birth == "Y"));
    }
    Ok((Value::Object(out), identifiers))
}

/// Gives codings without a system the table they come from.
pub(crate) fn default_system(concept: &mut Value, system: &str) {
    if let Some(codings) = concept.get_mut("coding").and_then(Value::as_array_mut) {
        for coding in codings {
            if let Some(obj) = coding.as_object_mut() {
                obj.entry("system").or_insert_with(|| json!(system));
            }
        }
    }
}
