//! `_summary` and `_elements`: returning part of a resource.

use phip_fhir::search::SummaryMode;
use serde_json::{json, Map, Value};

/// Marks a resource as deliberately incomplete, as the specification requires for subsets.
fn mark_subsetted(object: &mut Map<String, Value>) {
    let tag = json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
        "display": "subsetted"
    });
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta
            .entry("tag")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(tag);
        }
    }
}

/// Applies `_summary` and `_elements` to a resource. Returns the resource unchanged when
/// neither asks for a subset.
pub fn apply_subset(resource: Value, summary: SummaryMode, elements: Option<&[String]>) -> Value {
    let Value::Object(object) = resource else {
        return resource;
    };
    let resource_type = object
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let always = |name: &str| matches!(name, "resourceType" | "id" | "meta");
    let mut result = match (summary, elements) {
        (SummaryMode::True, _) => {
            let defs = phip_fhir::r4();
            object
                .into_iter()
                .filter(|(name, _)| always(name) || defs.is_summary_element(&resource_type, name))
                .collect::<Map<String, Value>>()
        }
        (SummaryMode::Text, _) => object
            .into_iter()
            .filter(|(name, _)| always(name) || name == "text")
            .collect(),
        (SummaryMode::Data, _) => object
            .into_iter()
            .filter(|(name, _)| name != "text")
            .collect(),
        (_, Some(names)) if !names.is_empty() => object
            .into_iter()
            .filter(|(name, _)| always(name) || names.iter().any(|n| n == name))
            .collect(),
        _ => return Value::Object(object),
    };
    mark_subsetted(&mut result);
    Value::Object(result)
}
