//! The kick-off request of an export: its level and parameters (`_type`, `_since`,
//! `_typeFilter`, `_elements`, `_outputFormat`), checked before any job exists so that a job
//! never fails on something the client could have been told at once.

use chrono::{DateTime, Utc};
use phip_engine::{FhirError, FhirResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The output formats accepted for `_outputFormat`; all mean NDJSON of FHIR JSON resources.
pub const OUTPUT_FORMATS: [&str; 3] = ["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Search parameters a `_typeFilter` may not carry: they control paging, result shape or pull
/// in other resources, which the export itself decides.
const FORBIDDEN_IN_FILTER: [&str; 11] = [
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_cursor",
    "_format",
];

/// Which resources an export covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", content = "group", rename_all = "lowercase")]
pub enum ExportLevel {
    /// `[base]/$export`: every resource of the requested types.
    System,
    /// `[base]/Patient/$export`: resources in any patient's compartment.
    Patient,
    /// `[base]/Group/[id]/$export`: resources in the compartments of the group's patients.
    Group(String),
}

/// One `_typeFilter`: a FHIR search on one resource type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeFilter {
    /// The resource type the query searches.
    pub resource_type: String,
    /// The query's parameters, percent-decoded, in order.
    pub params: Vec<(String, String)>,
}

/// A validated kick-off request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// System, Patient or Group level.
    pub level: ExportLevel,
    /// `_type`: the resource types asked for, in order, or `None` for all the level allows.
    pub types: Option<Vec<String>>,
    /// `_since`: only resources last updated at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// `_typeFilter`s. Several for one type combine with OR; types without one are unfiltered.
    pub type_filters: Vec<TypeFilter>,
    /// `_elements`: element names, either bare (`id`) or type-qualified (`Patient.name`).
    pub elements: Option<Vec<String>>,
}

impl ExportRequest {
    /// Parses kick-off parameters from a query string (or form body). Unknown parameters are
    /// ignored unless `strict` (`Prefer: handling=strict`).
    pub fn parse(
        level: ExportLevel,
        params: &[(String, String)],
        strict: bool,
    ) -> FhirResult<ExportRequest> {
        let mut request = ExportRequest {
            level,
            types: None,
            since: None,
            type_filters: Vec::new(),
            elements: None,
        };
        for (name, value) in params {
            match name.as_str() {
                "_outputFormat" if !OUTPUT_FORMATS.contains(&value.trim()) => {
                    return Err(FhirError::bad_request(format!(
                        "_outputFormat {value:?} is not supported; use application/fhir+ndjson"
                    )));
                }
                "_type" => {
                    let types = request.types.get_or_insert_with(Vec::new);
                    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if !phip_fhir::r4().is_resource_type(t) {
                            return Err(FhirError::bad_request(format!(
                                "_type names an unknown resource type {t:?}"
                            )));
                        }
                        if !types.iter().any(|x| x == t) {
                            types.push(t.to_owned());
                        }
                    }
                }
                "_since" => request.since = Some(parse_instant(value)?),
                "_typeFilter" => {
                    // Several filters may share one parameter, comma-separated; a comma inside a
                    // filter's own values is percent-encoded (%2C) by the client.
                    for filter in value.split(',').filter(|f| !f.trim().is_empty()) {
                        request.type_filters.push(parse_type_filter(filter.trim())?);
                    }
                }
                "_elements" => {
                    let elements = request.elements.get_or_insert_with(Vec::new);
                    elements.extend(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|e| !e.is_empty())
                            .map(str::to_owned),
                    );
                }
                "patient" => {
                    // Ignoring it would export every patient's records instead of the few
                    // asked for.
                    return Err(FhirError::new(
                        400,
                        phip_fhir::IssueType::NotSupported,
                        "the patient parameter of $export is not supported; export a Group instead",
                    ));
                }
                "_outputFormat" | "includeAssociatedData" | "_format" | "_pretty" => {}
                other if strict => {
                    return Err(FhirError::bad_request(format!(
                        "unknown $export parameter {other:?}"
                    )));
                }
                _ => {}
            }
        }
        if let Some(types) = &request.types {
            if types.is_empty() {
                return Err(FhirError::bad_request("_type names no resource type"));
            }
            if let Some(f) = request
                .type_filters
                .iter()
                .find(|f| !types.contains(&f.resource_type))
            {
                return Err(FhirError::bad_request(format!(
                    "_typeFilter searches {} which _type does not include",
                    f.resource_type
                )));
            }
        }
        Ok(request)
    }

    /// Parses a `POST` kick-off body: a `Parameters` resource whose parameters carry the same
    /// names as the query form (values in any `value[x]` of a primitive type).
    pub fn from_parameters(
        level: ExportLevel,
        body: &Value,
        strict: bool,
    ) -> FhirResult<ExportRequest> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(FhirError::bad_request(
                "the body of a POST $export must be a Parameters resource",
            ));
        }
        let mut pairs = Vec::new();
        for parameter in body
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = parameter.get("name").and_then(Value::as_str) else {
                return Err(FhirError::bad_request("a parameter has no name"));
            };
            let value = parameter.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .and_then(|(_, v)| match v {
                        Value::String(s) => Some(s.clone()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    })
            });
            match value {
                Some(value) => pairs.push((name.to_owned(), value)),
                None if name == "patient" => pairs.push((name.to_owned(), String::new())),
                None => {
                    return Err(FhirError::bad_request(format!(
                        "parameter {name:?} needs a primitive value"
                    )))
                }
            }
        }
        Self::parse(level, &pairs, strict)
    }

    /// The resource types the level and `_type` ask for, before access narrows them: for the
    /// Patient and Group levels only types in the Patient compartment.
    pub fn candidate_types(&self) -> Vec<String> {
        let defs = phip_fhir::r4();
        let in_level = |t: &str| match self.level {
            ExportLevel::System => true,
            ExportLevel::Patient | ExportLevel::Group(_) => {
                t == "Patient" || !defs.patient_compartment_params(t).is_empty()
            }
        };
        match &self.types {
            Some(types) => types.iter().filter(|t| in_level(t)).cloned().collect(),
            None => defs
                .resource_types()
                .filter(|t| in_level(t))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The `_typeFilter`s of one type.
    pub fn filters_of<'a>(
        &'a self,
        resource_type: &'a str,
    ) -> impl Iterator<Item = &'a TypeFilter> {
        self.type_filters
            .iter()
            .filter(move |f| f.resource_type == resource_type)
    }

    /// The `_elements` that apply to one type: bare names and those qualified with the type.
    pub fn elements_of(&self, resource_type: &str) -> Option<Vec<String>> {
        let elements = self.elements.as_ref()?;
        Some(
            elements
                .iter()
                .filter_map(|e| match e.split_once('.') {
                    None => Some(e.clone()),
                    Some((t, name)) if t == resource_type => Some(name.to_owned()),
                    Some(_) => None,
                })
                .collect(),
        )
    }
}

/// Parses an instant (`_since`): a full date-time with a time zone.
fn parse_instant(value: &str) -> FhirResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            FhirError::bad_request(format!(
                "_since={value:?} is not an instant (e.g. 2024-01-31T08:00:00+08:00)"
            ))
        })
}

/// Parses one `_typeFilter` (`Observation?category=laboratory&status=final`) and checks its
/// parameters against the type's search parameters (strictly: an unknown parameter silently
/// dropped would export more than the client asked for).
fn parse_type_filter(filter: &str) -> FhirResult<TypeFilter> {
    let (resource_type, query) = filter.split_once('?').ok_or_else(|| {
        FhirError::bad_request(format!(
            "_typeFilter {filter:?} must be a search like Observation?category=laboratory"
        ))
    })?;
    if !phip_fhir::r4().is_resource_type(resource_type) {
        return Err(FhirError::bad_request(format!(
            "_typeFilter names an unknown resource type {resource_type:?}"
        )));
    }
    let params: Vec<(String, String)> = phip_engine::parse_query_string(query);
    if params.is_empty() {
        return Err(FhirError::bad_request(format!(
            "_typeFilter {filter:?} has no search parameters"
        )));
    }
    if let Some((name, _)) = params
        .iter()
        .find(|(n, _)| FORBIDDEN_IN_FILTER.contains(&n.as_str()))
    {
        return Err(FhirError::bad_request(format!(
            "_typeFilter may not use {name}"
        )));
    }
    phip_fhir::search::query::parse(Some(resource_type), &params, true)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
    Ok(TypeFilter {
        resource_type: resource_type.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_types_since_filters_and_elements() {
        let request = ExportRequest::parse(
            ExportLevel::System,
            &pairs(&[
                ("_outputFormat", "application/fhir+ndjson"),
                ("_type", "Patient,Observation"),
                ("_since", "2024-01-31T08:00:00+08:00"),
                (
                    "_typeFilter",
                    "Observation?category=laboratory,Observation?code=1234-5",
                ),
                ("_elements", "id,Patient.name"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            request.types,
            Some(vec!["Patient".to_string(), "Observation".to_string()])
        );
        assert_eq!(
            request.since.unwrap().to_rfc3339(),
            "2024-01-31T00:00:00+00:00"
        );
        assert_eq!(request.type_filters.len(), 2);
        assert_eq!(
            request.type_filters[0].params,
            pairs(&[("category", "laboratory")])
        );
        assert_eq!(
            request.elements_of("Patient"),
            Some(vec!["id".to_string(), "name".to_string()])
        );
        assert_eq!(
            request.elements_of("Observation"),
            Some(vec!["id".to_string()])
        );
        assert_eq!(request.filters_of("Observation").count(), 2);
    }

    #[test]
    fn rejects_what_would_change_the_meaning() {
        let bad = |list: &[(&str, &str)]| {
            ExportRequest::parse(ExportLevel::System, &pairs(list), false)
                .unwrap_err()
                .status
        };
        assert_eq!(bad(&[("_outputFormat", "text/csv")]), 400);
        assert_eq!(bad(&[("_type", "Patient,Nonsense")]), 400);
        assert_eq!(bad(&[("_since", "yesterday")]), 400);
        assert_eq!(bad(&[("_typeFilter", "Observation?bogus-param=1")]), 400);
        assert_eq!(bad(&[("_typeFilter", "Observation?_count=5")]), 400);
        assert_eq!(bad(&[("_typeFilter", "category=laboratory")]), 400);
        assert_eq!(
            bad(&[("_type", "Patient"), ("_typeFilter", "Observation?code=1")]),
            400
        );
        assert_eq!(bad(&[("patient", "Patient/1")]), 400);
        // Unknown parameters only matter under strict handling.
        assert!(ExportRequest::parse(ExportLevel::System, &pairs(&[("x", "1")]), false).is_ok());
        assert!(ExportRequest::parse(ExportLevel::System, &pairs(&[("x", "1")]), true).is_err());
    }

    #[test]
    fn patient_level_types_are_the_compartment_types() {
        let all = ExportRequest::parse(ExportLevel::Patient, &[], false)
            .unwrap()
            .candidate_types();
        assert!(all.contains(&"Patient".to_string()));
        assert!(all.contains(&"Observation".to_string()));
        assert!(!all.contains(&"Organization".to_string()));
        let some = ExportRequest::parse(
            ExportLevel::Patient,
            &pairs(&[("_type", "Organization,Condition")]),
            false,
        )
        .unwrap()
        .candidate_types();
        assert_eq!(some, vec!["Condition".to_string()]);
    }

    #[test]
    fn post_parameters_read_like_the_query() {
        let body = serde_json::json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "_type", "valueString": "Condition"},
                {"name": "_since", "valueInstant": "2020-01-01T00:00:00Z"},
                {"name": "_typeFilter", "valueString": "Condition?clinical-status=active"}
            ]
        });
        let request = ExportRequest::from_parameters(ExportLevel::System, &body, true).unwrap();
        assert_eq!(request.types, Some(vec!["Condition".to_string()]));
        assert!(request.since.is_some());
        assert_eq!(request.type_filters.len(), 1);
        assert!(ExportRequest::from_parameters(
            ExportLevel::System,
            &serde_json::json!({"resourceType": "Patient"}),
            false
        )
        .is_err());
    }
}
