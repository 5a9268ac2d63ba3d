//! The document-type code system of the EHR/EMR catalogue (WS/T 500 style), shipped as data
//! (`wst500.json`), with its mapping to LOINC document types.
//!
//! The data file is a FHIR `CodeSystem` whose concepts may carry a non-FHIR `loinc` member
//! (`code`, `display`, `equivalence`); from it phip derives the published `CodeSystem` (without
//! those members) and a `ConceptMap` to LOINC. A deployment edits the file, or loads its own with
//! [`DocumentTypes::from_json`], to follow its edition or a regional catalogue.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The canonical URL of the built-in document-type code system.
pub const WST500_SYSTEM: &str = "urn:phip:cs:wst500-doc-type";
/// LOINC.
pub const LOINC_SYSTEM: &str = "http://loinc.org";
/// Id under which the ConceptMap to LOINC is published.
pub const CONCEPT_MAP_ID: &str = "wst500-doc-type-to-loinc";

const BUILTIN: &str = include_str!("wst500.json");

/// One concept's LOINC equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoincMapping {
    /// The catalogue code.
    pub source: String,
    /// The LOINC code.
    pub code: String,
    /// The LOINC display.
    pub display: String,
    /// ConceptMap equivalence (`equivalent`, `wider`, `narrower`, …).
    pub equivalence: String,
}

/// A document-type catalogue: its CodeSystem and LOINC mappings.
#[derive(Debug, Clone)]
pub struct DocumentTypes {
    code_system: Value,
    mappings: Vec<LoincMapping>,
}

impl DocumentTypes {
    /// Reads a catalogue from its data file (a CodeSystem with optional `loinc` members).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut code_system: Value =
            serde_json::from_str(text).map_err(|e| format!("document types: {e}"))?;
        if code_system["resourceType"] != "CodeSystem" || code_system["url"].as_str().is_none() {
            return Err("document types: the file must hold a CodeSystem with a url".into());
        }
        let mut mappings = Vec::new();
        for concept in code_system["concept"].as_array_mut().into_iter().flatten() {
            let Some(object) = concept.as_object_mut() else {
                continue;
            };
            let source = object
                .get("code")
                .and_then(Value::as_str)
                .ok_or("document types: a concept has no code")?
                .to_owned();
            if let Some(loinc) = object.remove("loinc") {
                let field = |name: &str| loinc[name].as_str().unwrap_or("").to_owned();
                if field("code").is_empty() {
                    return Err(format!(
                        "document types: {source}'s loinc mapping has no code"
                    ));
                }
                mappings.push(LoincMapping {
                    source,
                    code: field("code"),
                    display: field("display"),
                    equivalence: Some(field("equivalence"))
                        .filter(|e| !e.is_empty())
                        .unwrap_or_else(|| "equivalent".into()),
                });
            }
        }
        Ok(Self {
            code_system,
            mappings,
        })
    }

    /// The catalogue shipped with phip (`wst500.json`).
    pub fn builtin() -> &'static Self {
        static BUILT: OnceLock<DocumentTypes> = OnceLock::new();
        // The file is part of the source tree and covered by tests, so it always parses.
        BUILT.get_or_init(|| Self::from_json(BUILTIN).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The code system's canonical URL.
    pub fn system(&self) -> &str {
        self.code_system["url"].as_str().unwrap_or(WST500_SYSTEM)
    }

    /// The published `CodeSystem` resource.
    pub fn code_system(&self) -> &Value {
        &self.code_system
    }

    /// The LOINC mapping of a catalogue code, if it has one.
    pub fn loinc_for(&self, code: &str) -> Option<&LoincMapping> {
        self.mappings.iter().find(|m| m.source == code)
    }

    /// The display of a catalogue code.
    pub fn display(&self, code: &str) -> Option<&str> {
        self.code_system["concept"]
            .as_array()?
            .iter()
            .find(|c| c["code"] == code)?["display"]
            .as_str()
    }

    /// The published `ConceptMap` from the catalogue to LOINC.
    pub fn concept_map(&self) -> Value {
        let elements: Vec<Value> = self
            .mappings
            .iter()
            .map(|m| {
                let mut element = Map::new();
                element.insert("code".into(), json!(m.source));
                if let Some(display) = self.display(&m.source) {
                    element.insert("display".into(), json!(display));
                }
                element.insert(
                    "target".into(),
                    json!([{"code": m.code, "display": m.display, "equivalence": m.equivalence}]),
                );
                Value::Object(element)
            })
            .collect();
        json!({
            "resourceType": "ConceptMap",
            "id": CONCEPT_MAP_ID,
            "url": format!("{}/to-loinc", self.system()),
            "name": "WST500DocumentTypeToLoinc",
            "title": "Document types (WS/T 500 style) to LOINC",
            "status": "active",
            "sourceUri": self.system(),
            "targetUri": LOINC_SYSTEM,
            "group": [{"source": self.system(), "target": LOINC_SYSTEM, "element": elements}]
        })
    }

    /// Adds to a `CodeableConcept` the LOINC coding of its catalogue coding, when the concept
    /// has a catalogue coding with a mapping and no LOINC coding yet, so that a search by
    /// either code finds the document. Returns whether it changed the concept.
    pub fn add_loinc_coding(&self, concept: &mut Value) -> bool {
        let Some(codings) = concept.get_mut("coding").and_then(Value::as_array_mut) else {
            return false;
        };
        if codings.iter().any(|c| c["system"] == LOINC_SYSTEM) {
            return false;
        }
        let mapping = codings
            .iter()
            .filter(|c| c["system"] == self.system())
            .find_map(|c| c["code"].as_str().and_then(|code| self.loinc_for(code)));
        // Only equivalent mappings are asserted on the record: a wider or narrower LOINC code
        // would misstate the document's type.
        match mapping {
            Some(m) if m.equivalence == "equivalent" => {
                codings.push(json!({"system": LOINC_SYSTEM, "code": m.code, "display": m.display}));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_parses_and_maps_to_loinc() {
        let types = DocumentTypes::builtin();
        assert_eq!(types.system(), WST500_SYSTEM);
        assert_eq!(
            types
                .loinc_for("DISCHARGE-SUMMARY")
                .map(|m| m.code.as_str()),
            Some("18842-5")
        );
        assert!(types.code_system()["concept"][0].get("loinc").is_none());
        let map = types.concept_map();
        let elements = map["group"][0]["element"].as_array().expect("elements");
        assert!(elements
            .iter()
            .any(|e| e["code"] == "REFERRAL" && e["target"][0]["code"] == "57133-1"));
        assert!(elements
            .iter()
            .all(|e| e["code"] != "HEALTH-CHECKUP-REPORT"));
    }

    #[test]
    fn adds_only_equivalent_loinc_codings() {
        let types = DocumentTypes::builtin();
        let mut concept =
            json!({"coding": [{"system": WST500_SYSTEM, "code": "LABORATORY-REPORT"}]});
        assert!(types.add_loinc_coding(&mut concept));
        assert_eq!(concept["coding"][1]["code"], "11502-2");
        assert!(!types.add_loinc_coding(&mut concept), "idempotent");
        let mut wider =
            json!({"coding": [{"system": WST500_SYSTEM, "code": "EXAMINATION-REPORT"}]});
        assert!(!types.add_loinc_coding(&mut wider));
    }

    #[test]
    fn refuses_malformed_catalogues() {
        assert!(DocumentTypes::from_json("{}").is_err());
        assert!(DocumentTypes::from_json(
            r#"{"resourceType":"CodeSystem","url":"x","concept":[{"code":"A","loinc":{}}]}"#
        )
        .is_err());
    }
}
