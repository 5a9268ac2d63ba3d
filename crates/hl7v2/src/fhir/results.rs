//! ORU^R01: OBR → DiagnosticReport, OBX → Observation.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Map, Value};

use super::datatypes::{self, Context, Identifier};
use crate::error::{ErrorCode, Hl7Error};
use crate::message::{Message, Segment};

const INTERPRETATION_V3: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const INTERPRETATION_V2: &str = "http://terminology.hl7.org/CodeSystem/v2-0078";
/// OBX-8 flags that mean the same in the FHIR (v3) interpretation code system.
const V3_FLAGS: &[&str] = &[
    "L", "H", "LL", "HH", "LU", "HU", "N", "A", "AA", "S", "R", "I", "<", ">", "B", "U", "D", "W",
    "NEG", "POS", "IND", "DET", "ND", "E", "EX", "HX", "LX", "MS", "VS", "NR", "SDD", "SYN-R",
    "SYN-S",
];

/// A diagnostic report (one OBR) and the observations (OBX) under it.
#[derive(Debug, Clone)]
pub struct MappedReport {
    /// The DiagnosticReport, without `subject` and `result` (set by the bundle builder).
    pub report: Value,
    /// Its order number: the filler order number (OBR-3), else the placer's (OBR-2), else
    /// those of the order's ORC (ORC-3, ORC-2).
    pub identifier: Option<Identifier>,
    /// The coded service (OBR-4) as a search token (`system|code`, or `code` without a
    /// system): with the order number, what tells this report from the order's others.
    pub service: Option<String>,
    /// The observations of this report.
    pub observations: Vec<MappedObservation>,
}

impl MappedReport {
    /// The conditional-update URL of this report: its order number and, when coded, its
    /// service (`DiagnosticReport?identifier=…&code=…`). `None` without an order number.
    pub fn conditional_url(&self) -> Option<String> {
        let id = self.identifier.as_ref()?;
        let mut url = super::conditional_url("DiagnosticReport", id);
        if let Some(service) = &self.service {
            url.push_str("&code=");
            url.push_str(&super::query_encode(service));
        }
        Some(url)
    }
}

/// One OBX as an Observation.
#[derive(Debug, Clone)]
pub struct MappedObservation {
    /// The Observation, without `subject`.
    pub observation: Value,
    /// Its key, when its report has an order number: see [`observation_key`].
    pub identifier: Option<Identifier>,
}

/// The reports of an ORU message, and observations that belong to no OBR (v2.8 allows
/// OBX in the patient group).
///
/// Two OBRs of one message with the same order number and the same service (OBR-4) cannot
/// be told apart, by this message or a later correction: that is an error (205, duplicate
/// key identifier) naming the second one's OBR-3.
pub fn reports(
    message: &Message,
    ctx: &Context,
) -> Result<(Vec<MappedReport>, Vec<MappedObservation>), Hl7Error> {
    let mut reports: Vec<MappedReport> = Vec::new();
    // How often each observation key was used under the current report.
    let mut occurrences: HashMap<String, usize> = HashMap::new();
    let mut loose = Vec::new();
    let mut in_report = false;
    let mut order: Option<Segment<'_>> = None;
    // The current OBR's service (OBR-4) as the message wrote it, for observation keys.
    let mut service = String::new();
    for segment in message.segments_all() {
        match segment.id() {
            "OBR" => {
                let next = report(&segment, order.take().as_ref(), ctx)?;
                if next.identifier.is_some()
                    && reports
                        .iter()
                        .any(|r| r.identifier == next.identifier && r.service == next.service)
                {
                    return Err(Hl7Error::at(
                        ErrorCode::DuplicateKeyIdentifier,
                        segment.location(3),
                        format!(
                            "a second OBR for order {} and service {}: the two reports cannot \
                             be told apart",
                            next.identifier.as_ref().map_or("", |i| i.value.as_str()),
                            next.service.as_deref().unwrap_or("(uncoded)")
                        ),
                    ));
                }
                reports.push(next);
                service = coded_part(&segment.field(4).repetition(1));
                occurrences.clear();
                in_report = true;
            }
            "ORC" => {
                order = Some(segment);
                in_report = false;
            }
            "PID" => {
                order = None;
                in_report = false;
            }
            // Encapsulated documents (ED) are not observations: they belong in a
            // DocumentReference, which this mapping does not produce.
            "OBX" if segment.field(2).value() == "ED" => {}
            "OBX" => match reports.last_mut().filter(|_| in_report) {
                Some(current) => {
                    let key = current
                        .identifier
                        .as_ref()
                        .map(|order| observation_key(order, &service, &segment, &mut occurrences));
                    let fallback = current.report.get("effectiveDateTime").cloned();
                    current
                        .observations
                        .push(observation(&segment, ctx, key, fallback)?);
                }
                None => loose.push(observation(&segment, ctx, None, None)?),
            },
            _ => {}
        }
    }
    Ok((reports, loose))
}

/// The identifier an OBX is stored under, in its order number's system:
/// `<order number>/<OBR-4>/<OBX-3>[/<OBX-4>][#<n>]`, each part as `<code>^<coding system>`
/// from the message (`82503246/24317-0^LN/11156-7^LN`), with `%`, `/`, `^` and `#` inside
/// a part percent-encoded.
///
/// HL7 makes OBX-3 (observation identifier) with OBX-4 (sub-id) unique within an OBR, and
/// that pair is what names a result; OBX-1 (set id) is only a position, which real feeds
/// restart or repeat (specimen groups, appended comments). So a resent or corrected message
/// updates the same Observations whatever their order, and a pair that occurs again under
/// the same OBR (senders that break the rule) is numbered `#2`, `#3`, … in message order.
fn observation_key(
    order: &Identifier,
    service: &str,
    obx: &Segment<'_>,
    occurrences: &mut HashMap<String, usize>,
) -> Identifier {
    let code = obx.field(3).repetition(1);
    let mut key = key_part(&order.value).into_owned();
    key.push('/');
    key.push_str(service);
    key.push('/');
    key.push_str(&coded_part(&code));
    let sub_id = obx.field(4).value();
    if !sub_id.is_empty() {
        key.push('/');
        key.push_str(&key_part(&sub_id));
    }
    let seen = occurrences.entry(key.clone()).or_insert(0);
    *seen += 1;
    if *seen > 1 {
        key.push_str(&format!("#{seen}"));
    }
    Identifier {
        system: order.system.clone(),
        value: key,
    }
}

/// A CWE's identifier (or, uncoded, its text) and coding system as `code^system`.
fn coded_part(cwe: &crate::message::Repetition<'_>) -> String {
    let id = cwe.component(1).value();
    let id = if id.trim().is_empty() {
        cwe.component(2).value()
    } else {
        id
    };
    let system = cwe.component(3).value();
    if system.trim().is_empty() {
        key_part(id.trim()).into_owned()
    } else {
        format!("{}^{}", key_part(id.trim()), key_part(system.trim()))
    }
}

/// One part of a key, with the key's own separators escaped.
fn key_part(raw: &str) -> std::borrow::Cow<'_, str> {
    const SEPARATORS: &AsciiSet = &CONTROLS.add(b'%').add(b'/').add(b'^').add(b'#');
    utf8_percent_encode(raw, SEPARATORS).into()
}

fn report(
    obr: &Segment<'_>,
    orc: Option<&Segment<'_>>,
    ctx: &Context,
) -> Result<MappedReport, Hl7Error> {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("DiagnosticReport"));
    // ORC-2/3 carry the same numbers as OBR-2/3; some senders fill only the ORC.
    let number = |n: usize, kind: &str| {
        datatypes::entity_identifier(&obr.field(n).repetition(1), kind, ctx).or_else(|| {
            orc.and_then(|orc| datatypes::entity_identifier(&orc.field(n).repetition(1), kind, ctx))
        })
    };
    let filler = number(3, "FILL");
    let placer = number(2, "PLAC");
    let identifier = filler
        .as_ref()
        .or(placer.as_ref())
        .map(|(_, id)| id.clone());
    let ids: Vec<Value> = [filler, placer]
        .into_iter()
        .flatten()
        .map(|(j, _)| j)
        .collect();
    if !ids.is_empty() {
        out.insert("identifier".into(), Value::Array(ids));
    }
    let status = match obr.field(25).value().as_ref() {
        "O" | "I" => "registered",
        "S" | "A" => "partial",
        "P" | "R" => "preliminary",
        "C" => "corrected",
        "F" => "final",
        "X" => "cancelled",
        "" | "Y" | "Z" => "unknown",
        other => {
            return Err(Hl7Error::at(
                ErrorCode::TableValueNotFound,
                obr.location(25),
                format!("result status {other:?} is not in table 0123"),
            ))
        }
    };
    out.insert("status".into(), json!(status));
    if let Some(section) = datatypes::code(&obr.field(24).value()) {
        out.insert(
            "category".into(),
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": section}]}]),
        );
    }
    let code = datatypes::codeable_concept(&obr.field(4).repetition(1)).ok_or_else(|| {
        Hl7Error::missing("OBR", obr.sequence(), 4, "universal service identifier")
    })?;
    let service = code
        .pointer("/coding/0/code")
        .and_then(Value::as_str)
        .map(
            |c| match code.pointer("/coding/0/system").and_then(Value::as_str) {
                Some(system) => format!("{system}|{c}"),
                None => c.to_owned(),
            },
        );
    out.insert("code".into(), code);
    if let Some(when) = datatypes::date_time(&obr.field(7).value(), ctx, &|| obr.location(7))? {
        out.insert("effectiveDateTime".into(), json!(when));
    }
    if let Some(issued) = datatypes::instant(&obr.field(22).value(), ctx, &|| obr.location(22))? {
        out.insert("issued".into(), json!(issued));
    }
    Ok(MappedReport {
        report: Value::Object(out),
        identifier,
        service,
        observations: Vec::new(),
    })
}

fn observation(
    obx: &Segment<'_>,
    ctx: &Context,
    identifier: Option<Identifier>,
    report_effective: Option<Value>,
) -> Result<MappedObservation, Hl7Error> {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Observation"));
    if let Some(id) = &identifier {
        out.insert(
            "identifier".into(),
            json!([{"system": id.system, "value": id.value}]),
        );
    }
    let status = match obx.field(11).value().as_ref() {
        "F" | "U" => "final",
        "C" => "corrected",
        "A" => "amended",
        "P" | "R" | "S" => "preliminary",
        "I" | "O" => "registered",
        "X" | "N" => "cancelled",
        "D" | "W" => "entered-in-error",
        "" => "unknown",
        other => {
            return Err(Hl7Error::at(
                ErrorCode::TableValueNotFound,
                obx.location(11),
                format!("observation result status {other:?} is not in table 0085"),
            ))
        }
    };
    out.insert("status".into(), json!(status));
    let code = datatypes::codeable_concept(&obx.field(3).repetition(1))
        .ok_or_else(|| Hl7Error::missing("OBX", obx.sequence(), 3, "observation identifier"))?;
    out.insert("code".into(), code);
    let effective = datatypes::date_time(&obx.field(14).value(), ctx, &|| obx.location(14))?
        .map(Value::from)
        .or(report_effective);
    if let Some(effective) = effective {
        out.insert("effectiveDateTime".into(), effective);
    }
    if let Some((key, value)) = value(obx, ctx)? {
        out.insert(key.into(), value);
    }
    let flags: Vec<Value> = obx
        .field(8)
        .repetitions()
        .filter_map(|flag| {
            let code = datatypes::code(&flag.value())?;
            let system = if V3_FLAGS.contains(&code.as_ref()) {
                INTERPRETATION_V3
            } else {
                INTERPRETATION_V2
            };
            Some(json!({"coding": [{"system": system, "code": code}]}))
        })
        .collect();
    if !flags.is_empty() {
        out.insert("interpretation".into(), Value::Array(flags));
    }
    if let Some(range) = reference_range(&obx.field(7).value(), &obx.field(6).repetition(1)) {
        out.insert("referenceRange".into(), json!([range]));
    }
    Ok(MappedObservation {
        observation: Value::Object(out),
        identifier,
    })
}

/// OBX-5 as the Observation value[x] its type (OBX-2) calls for.
fn value(obx: &Segment<'_>, ctx: &Context) -> Result<Option<(&'static str, Value)>, Hl7Error> {
    let field = obx.field(5);
    if field.is_empty() || field.is_null() {
        return Ok(None);
    }
    let first = field.repetition(1);
    let units = obx.field(6).repetition(1);
    let kind = obx.field(2).value();
    let bad = |what: &str| {
        Hl7Error::at(
            ErrorCode::DataTypeError,
            obx.location(5),
            format!("{:?} is not a valid {what}", field.raw()),
        )
    };
    Ok(Some(match kind.as_ref() {
        "NM" => {
            let number = datatypes::decimal(&first.value()).ok_or_else(|| bad("number (NM)"))?;
            ("valueQuantity", quantity(number, &units, None))
        }
        "SN" => structured_numeric(&first, &units).ok_or_else(|| bad("structured numeric (SN)"))?,
        "CE" | "CWE" | "CNE" | "CF" => match datatypes::codeable_concept(&first) {
            Some(concept) => ("valueCodeableConcept", concept),
            None => return Ok(None),
        },
        "DT" | "TS" | "DTM" => {
            let when = datatypes::date_time(&first.value(), ctx, &|| obx.location(5))?;
            match when {
                Some(when) => ("valueDateTime", json!(when)),
                None => return Ok(None),
            }
        }
        "TM" => {
            let t = first.value();
            let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
            if !matches!(digits.len(), 4 | 6) {
                return Err(bad("time (TM)"));
            }
            let padded = format!("{digits:0<6}");
            (
                "valueTime",
                json!(format!(
                    "{}:{}:{}",
                    &padded[..2],
                    &padded[2..4],
                    &padded[4..6]
                )),
            )
        }
        // ST, TX, FT and anything else: text, repetitions as lines.
        _ => {
            let text: Vec<String> = field
                .repetitions()
                .map(|r| r.value().into_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if text.is_empty() {
                return Ok(None);
            }
            ("valueString", json!(text.join("\n")))
        }
    }))
}

fn quantity(
    number: serde_json::Number,
    units: &crate::message::Repetition<'_>,
    comparator: Option<&str>,
) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), Value::Number(number));
    if let Some(c) = comparator {
        q.insert("comparator".into(), json!(c));
    }
    let code = datatypes::code(&units.component(1).value()).unwrap_or_default();
    let text = units.component(2).value();
    let system = units.component(3).value();
    if !code.is_empty() || !text.is_empty() {
        q.insert(
            "unit".into(),
            json!(if text.is_empty() {
                code.as_str()
            } else {
                text.as_ref()
            }),
        );
    }
    if !code.is_empty()
        && (system == "UCUM" || system == "ISO+" || system.is_empty() && is_plain_ucum(&code))
    {
        q.insert("system".into(), json!("http://unitsofmeasure.org"));
        q.insert("code".into(), json!(code));
    }
    Value::Object(q)
}

/// A few unit strings are unambiguous UCUM even when the sender names no system.
fn is_plain_ucum(code: &str) -> bool {
    matches!(
        code,
        "%" | "mg/dL"
            | "mmol/L"
            | "g/L"
            | "g/dL"
            | "mm[Hg]"
            | "kg"
            | "cm"
            | "Cel"
            | "/min"
            | "10*9/L"
            | "10*12/L"
            | "fL"
            | "pg"
            | "U/L"
    )
}

/// SN: `comparator^num1^separator^num2` as a Quantity, Range or Ratio.
fn structured_numeric(
    sn: &crate::message::Repetition<'_>,
    units: &crate::message::Repetition<'_>,
) -> Option<(&'static str, Value)> {
    let comparator = sn.component(1).value();
    let n1 = sn.component(2).value();
    let separator = sn.component(3).value();
    let n2 = sn.component(4).value();
    match (separator.as_ref(), n2.is_empty()) {
        ("", true) => {
            let c = match comparator.as_ref() {
                "" | "=" => None,
                "<" | "<=" | ">" | ">=" => Some(comparator.as_ref()),
                _ => return None,
            };
            Some((
                "valueQuantity",
                quantity(datatypes::decimal(&n1)?, units, c),
            ))
        }
        ("-", false) => Some((
            "valueRange",
            json!({
                "low": quantity(datatypes::decimal(&n1)?, units, None),
                "high": quantity(datatypes::decimal(&n2)?, units, None),
            }),
        )),
        (":" | "/", false) => Some((
            "valueRatio",
            json!({
                "numerator": {"value": Value::Number(datatypes::decimal(&n1)?)},
                "denominator": {"value": Value::Number(datatypes::decimal(&n2)?)},
            }),
        )),
        _ => None,
    }
}

/// OBX-7 (`3.5-5.0`, `<5`, `>10`, free text) as a referenceRange.
fn reference_range(raw: &str, units: &crate::message::Repetition<'_>) -> Option<Value> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let q = |s: &str| datatypes::decimal(s).map(|n| quantity(n, units, None));
    if let Some(rest) = raw.strip_prefix('<') {
        if let Some(high) = q(rest.trim_start_matches('=')) {
            return Some(json!({"high": high}));
        }
    }
    if let Some(rest) = raw.strip_prefix('>') {
        if let Some(low) = q(rest.trim_start_matches('=')) {
            return Some(json!({"low": low}));
        }
    }
    // Split on the dash between two numbers, not a leading minus sign.
    if let Some(i) = raw.get(1..).and_then(|r| r.find('-')).map(|i| i + 1) {
        if let (Some(low), Some(high)) = (q(&raw[..i]), q(&raw[i + 1..])) {
            return Some(json!({"low": low, "high": high}));
        }
    }
    Some(json!({"text": raw}))
}
