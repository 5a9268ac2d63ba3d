//! Who a health code identifies: the minimal Patient a code carries, taken from the
//! resident's golden (master) record.
//!
//! ## What the code discloses, and why
//!
//! A QR code on a phone screen can be photographed by anyone, and SMART Health Cards are
//! verifiable offline with public keys, so whatever is inside is effectively public to whoever
//! sees the screen. The code therefore carries only what a clinic or pharmacy scanner needs
//! to recognise the person in front of it and to settle with the insurer:
//!
//! - the patient index's person identifier (`urn:phip:mpi:person`), an opaque id that binds
//!   the code to the master record;
//! - name, birth date and gender, as on the resident's ID card;
//! - the **last four characters** of the resident ID number, under their own system
//!   [`RESIDENT_ID_LAST4`], never the full number: with the birth date (also in the code) and
//!   a region prefix, a full or half-masked number could be rebuilt. The clerk compares them
//!   with the ID card presented; the full number is returned only by the authenticated online
//!   `$verify`;
//! - the linked identifiers of *multi-code fusion* (by default the resident health card and
//!   the medical insurance number), in full, so one scan serves registration, insurance
//!   settlement and prescriptions.

pub use phip_mpi::identifier::{HEALTH_CARD, MEDICAL_INSURANCE, RESIDENT_ID};
use serde_json::{json, Map, Value};

use crate::HealthCodeError;

/// Identifier system of the patient index's person identifier (same as the engine's).
pub const PERSON_ID_SYSTEM: &str = "urn:phip:mpi:person";
/// Identifier system under which a code carries the last four characters of the resident ID.
pub const RESIDENT_ID_LAST4: &str = "urn:phip:health-code:resident-id-last4";

/// The linked identifier systems a code carries by default (multi-code fusion).
pub fn default_linked_systems() -> Vec<String> {
    vec![HEALTH_CARD.to_owned(), MEDICAL_INSURANCE.to_owned()]
}

/// One identifier carried in a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeIdentifier {
    /// Identifier system URI.
    pub system: String,
    /// Value.
    pub value: String,
}

/// The person a code identifies. See the [module docs](self) for what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCodeSubject {
    /// The golden record's person identifier (its logical id).
    pub person_id: String,
    /// `HumanName`s as in the golden record, reduced to `use`, `text`, `family`, `given`.
    pub names: Vec<Value>,
    /// `birthDate`.
    pub birth_date: Option<String>,
    /// `gender`.
    pub gender: Option<String>,
    /// Resident ID tail and linked identifiers, in the order they appear in the code.
    pub identifiers: Vec<CodeIdentifier>,
}

impl HealthCodeSubject {
    /// Builds the subject from a golden Patient, carrying the identifiers of
    /// `linked_systems` (each system at most once, the first current value).
    pub fn from_patient(
        person_id: &str,
        patient: &Value,
        linked_systems: &[String],
    ) -> Result<Self, HealthCodeError> {
        if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(HealthCodeError::Subject("not a Patient".into()));
        }
        let names: Vec<Value> = patient
            .get("name")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|n| n.get("use").and_then(Value::as_str) != Some("old"))
            .map(reduce_name)
            .filter(|n| n.as_object().is_some_and(|o| !o.is_empty()))
            .take(2)
            .collect();
        if names.is_empty() {
            return Err(HealthCodeError::Subject(
                "the master record has no name to show on a health code".into(),
            ));
        }
        let current: Vec<(&str, &str)> = patient
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|i| i.get("use").and_then(Value::as_str) != Some("old"))
            .filter_map(|i| {
                Some((
                    i.get("system").and_then(Value::as_str)?,
                    i.get("value").and_then(Value::as_str)?,
                ))
            })
            .collect();
        let mut identifiers = Vec::new();
        if let Some((_, id)) = current.iter().find(|(s, _)| *s == RESIDENT_ID) {
            let chars: Vec<char> = id.chars().collect();
            let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
            identifiers.push(CodeIdentifier {
                system: RESIDENT_ID_LAST4.into(),
                value: tail,
            });
        }
        for system in linked_systems {
            if system == RESIDENT_ID {
                // Never in full; see the module docs.
                continue;
            }
            if let Some((_, value)) = current.iter().find(|(s, _)| s == system) {
                identifiers.push(CodeIdentifier {
                    system: system.clone(),
                    value: (*value).to_owned(),
                });
            }
        }
        Ok(Self {
            person_id: person_id.to_owned(),
            names,
            birth_date: patient
                .get("birthDate")
                .and_then(Value::as_str)
                .map(str::to_owned),
            gender: patient
                .get("gender")
                .and_then(Value::as_str)
                .map(str::to_owned),
            identifiers,
        })
    }

    /// The minimal Patient of the code (no `id`, `meta` or `text`, per SMART Health Cards).
    pub fn to_patient(&self) -> Value {
        let mut identifiers = vec![json!({"system": PERSON_ID_SYSTEM, "value": self.person_id})];
        identifiers.extend(
            self.identifiers
                .iter()
                .map(|i| json!({"system": i.system, "value": i.value})),
        );
        let mut patient = Map::new();
        patient.insert("resourceType".into(), json!("Patient"));
        patient.insert("identifier".into(), Value::Array(identifiers));
        patient.insert("name".into(), Value::Array(self.names.clone()));
        if let Some(gender) = &self.gender {
            patient.insert("gender".into(), json!(gender));
        }
        if let Some(birth_date) = &self.birth_date {
            patient.insert("birthDate".into(), json!(birth_date));
        }
        Value::Object(patient)
    }

    /// The `fhirBundle` of the credential: a collection with the Patient as `resource:0`.
    pub fn to_bundle(&self) -> Value {
        json!({
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"fullUrl": "resource:0", "resource": self.to_patient()}]
        })
    }

    /// Reads the subject back from a verified credential's `fhirBundle`.
    pub fn from_bundle(bundle: &Value) -> Result<Self, HealthCodeError> {
        let patient = bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .find(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
            .ok_or_else(|| HealthCodeError::Malformed("the credential has no Patient".into()))?;
        let mut person_id = None;
        let mut identifiers = Vec::new();
        for identifier in patient
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(system), Some(value)) = (
                identifier.get("system").and_then(Value::as_str),
                identifier.get("value").and_then(Value::as_str),
            ) else {
                continue;
            };
            if system == PERSON_ID_SYSTEM {
                person_id = Some(value.to_owned());
            } else {
                identifiers.push(CodeIdentifier {
                    system: system.to_owned(),
                    value: value.to_owned(),
                });
            }
        }
        let person_id = person_id.ok_or_else(|| {
            HealthCodeError::Malformed("the credential's Patient has no person identifier".into())
        })?;
        Ok(Self {
            person_id,
            names: patient
                .get("name")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            birth_date: patient
                .get("birthDate")
                .and_then(Value::as_str)
                .map(str::to_owned),
            gender: patient
                .get("gender")
                .and_then(Value::as_str)
                .map(str::to_owned),
            identifiers,
        })
    }

    /// The value carried for identifier `system`, if any.
    pub fn identifier(&self, system: &str) -> Option<&str> {
        self.identifiers
            .iter()
            .find(|i| i.system == system)
            .map(|i| i.value.as_str())
    }

    /// A one-line display name: the first name's `text`, else family + given (no space
    /// between them for Chinese names, which are written family-first without one).
    pub fn display_name(&self) -> String {
        let Some(name) = self.names.first() else {
            return String::new();
        };
        if let Some(text) = name.get("text").and_then(Value::as_str) {
            return text.to_owned();
        }
        let family = name.get("family").and_then(Value::as_str).unwrap_or("");
        let given: Vec<&str> = name
            .get("given")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cjk = family
            .chars()
            .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        if cjk {
            format!("{family}{}", given.concat())
        } else {
            let mut parts = given;
            if !family.is_empty() {
                parts.push(family);
            }
            parts.join(" ")
        }
    }
}

fn reduce_name(name: &Value) -> Value {
    let mut out = Map::new();
    for key in ["use", "text", "family", "given"] {
        if let Some(value) = name.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Value {
        json!({
            "resourceType": "Patient", "id": "g1",
            "meta": {"tag": [{"system": "urn:phip:mpi", "code": "golden"}]},
            "identifier": [
                {"system": PERSON_ID_SYSTEM, "value": "g1"},
                {"system": RESIDENT_ID, "value": "11010519491231002X"},
                {"system": HEALTH_CARD, "value": "HC-7788"},
                {"system": MEDICAL_INSURANCE, "value": "MI-42", "use": "old"},
                {"system": MEDICAL_INSURANCE, "value": "MI-43"},
                {"system": "https://phip.cn/fhir/sid/mrn/org1", "value": "MRN-1"}
            ],
            "name": [{"use": "official", "family": "张", "given": ["三"], "period": {"start": "2000"}},
                     {"use": "old", "text": "张老三"}],
            "gender": "male", "birthDate": "1949-12-31",
            "telecom": [{"system": "phone", "value": "13800000000"}],
            "address": [{"text": "secret street"}]
        })
    }

    #[test]
    fn carries_the_minimum_and_masks_the_resident_id() {
        let subject =
            HealthCodeSubject::from_patient("g1", &golden(), &default_linked_systems()).unwrap();
        let patient = subject.to_patient();
        let text = patient.to_string();
        assert!(!text.contains("11010519491231002X"), "{text}");
        assert!(
            !text.contains("13800000000") && !text.contains("secret") && !text.contains("MRN-1")
        );
        assert!(!text.contains("张老三") && !text.contains("period"));
        assert_eq!(subject.identifier(RESIDENT_ID_LAST4), Some("002X"));
        assert_eq!(subject.identifier(HEALTH_CARD), Some("HC-7788"));
        assert_eq!(subject.identifier(MEDICAL_INSURANCE), Some("MI-43"));
        assert_eq!(subject.display_name(), "张三");
        assert!(patient.get("id").is_none() && patient.get("meta").is_none());
        let back = HealthCodeSubject::from_bundle(&subject.to_bundle()).unwrap();
        assert_eq!(back, subject);
    }

    #[test]
    fn the_full_resident_id_is_never_a_linked_identifier() {
        let systems = vec![RESIDENT_ID.to_owned()];
        let subject = HealthCodeSubject::from_patient("g1", &golden(), &systems).unwrap();
        assert!(!subject
            .to_patient()
            .to_string()
            .contains("11010519491231002X"));
    }

    #[test]
    fn refuses_records_it_cannot_show() {
        let nameless = json!({"resourceType": "Patient", "birthDate": "2000-01-01"});
        assert!(HealthCodeSubject::from_patient("x", &nameless, &[]).is_err());
        assert!(
            HealthCodeSubject::from_patient("x", &json!({"resourceType": "Basic"}), &[]).is_err()
        );
        assert!(HealthCodeSubject::from_bundle(&json!({"entry": []})).is_err());
    }
}
