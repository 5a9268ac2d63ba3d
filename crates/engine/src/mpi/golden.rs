//! Golden records: building one from its sources, and reading and writing `Patient.link`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{GOLDEN_TAG_CODE, MPI_SYSTEM, PERSON_ID_SYSTEM};

/// Ids of the Patients a resource links to with `link.type == link_type`.
pub(crate) fn linked_ids(resource: &Value, link_type: &str) -> BTreeSet<String> {
    resource
        .get("link")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter(|l| l.get("type").and_then(Value::as_str) == Some(link_type))
                .filter_map(|l| l.pointer("/other/reference").and_then(Value::as_str))
                .filter_map(|r| r.strip_prefix("Patient/"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Sets the source's `refer` link to `golden_id`, keeping every other link the client sent.
pub(crate) fn set_refer_link(source: &mut Value, golden_id: &str) {
    let Some(object) = source.as_object_mut() else {
        return;
    };
    let mut links: Vec<Value> = object
        .get("link")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter(|l| l.get("type").and_then(Value::as_str) != Some("refer"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    links.push(json!({
        "other": {"reference": format!("Patient/{golden_id}")},
        "type": "refer"
    }));
    object.insert("link".into(), Value::Array(links));
}

/// Whether the source already refers to `golden_id` (and to nothing else).
pub(crate) fn refers_to(source: &Value, golden_id: &str) -> bool {
    let refers = linked_ids(source, "refer");
    refers.len() == 1 && refers.contains(golden_id)
}

/// The `lastUpdated` of a stored body, for survivorship ordering.
fn last_updated(resource: &Value) -> &str {
    resource
        .pointer("/meta/lastUpdated")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Builds a golden record from its sources (id, current body).
///
/// Survivorship: identifiers are the union of the sources' (deduplicated by system and
/// value, `old` ones last); every other demographic element is taken from the most recently
/// updated source that has it, which is the freshest information any institution reported.
/// `extra_links` (such as `replaces`) are kept from the previous golden version.
pub(crate) fn build(golden_id: &str, sources: &[(String, Value)], extra_links: &[Value]) -> Value {
    let mut ordered: Vec<&(String, Value)> = sources.iter().collect();
    ordered.sort_by(|a, b| last_updated(&b.1).cmp(last_updated(&a.1)));

    let mut object = Map::new();
    object.insert("resourceType".into(), json!("Patient"));
    object.insert("id".into(), json!(golden_id));
    object.insert(
        "meta".into(),
        json!({"tag": [{"system": MPI_SYSTEM, "code": GOLDEN_TAG_CODE, "display": "Master patient record"}]}),
    );

    let mut identifiers = vec![json!({
        "use": "official",
        "type": {"text": "Person identifier of the patient index"},
        "system": PERSON_ID_SYSTEM,
        "value": golden_id
    })];
    let mut seen = BTreeSet::new();
    let mut old = Vec::new();
    for (_, source) in &ordered {
        for identifier in source
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = (
                identifier
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                identifier
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
            if key.1.is_empty() || !seen.insert((key.0.to_owned(), key.1.to_owned())) {
                continue;
            }
            let mut copy = identifier.clone();
            if let Some(c) = copy.as_object_mut() {
                c.remove("id");
            }
            if identifier.get("use").and_then(Value::as_str) == Some("old") {
                old.push(copy);
            } else {
                identifiers.push(copy);
            }
        }
    }
    identifiers.extend(old);
    object.insert("identifier".into(), Value::Array(identifiers));
    object.insert("active".into(), json!(true));

    for element in [
        "name",
        "telecom",
        "gender",
        "birthDate",
        "deceasedBoolean",
        "deceasedDateTime",
        "address",
        "maritalStatus",
        "multipleBirthBoolean",
        "multipleBirthInteger",
        "communication",
    ] {
        if let Some(value) = ordered.iter().find_map(|(_, s)| s.get(element)) {
            // A death reported anywhere wins over "alive" elsewhere: keep the first one found
            // of either deceased form, never both.
            if element == "deceasedDateTime" && object.contains_key("deceasedBoolean") {
                continue;
            }
            if element == "multipleBirthInteger" && object.contains_key("multipleBirthBoolean") {
                continue;
            }
            object.insert(element.into(), value.clone());
        }
    }

    let mut links: Vec<Value> = sources
        .iter()
        .map(|(id, _)| json!({"other": {"reference": format!("Patient/{id}")}, "type": "seealso"}))
        .collect();
    links.extend(extra_links.iter().cloned());
    if !links.is_empty() {
        object.insert("link".into(), Value::Array(links));
    }
    Value::Object(object)
}

/// Links of a golden record other than its `seealso` links to sources (`replaces`, …).
pub(crate) fn extra_links(golden: &Value) -> Vec<Value> {
    golden
        .get("link")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter(|l| l.get("type").and_then(Value::as_str) != Some("seealso"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A golden record retired by a merge: inactive, pointing at the survivor, its source links
/// kept so that an unmerge can restore it from this very version.
pub(crate) fn retired(previous: &Value, survivor_id: &str) -> Value {
    let mut body = previous.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert("active".into(), json!(false));
        let mut links: Vec<Value> = object
            .get("link")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter(|l| l.get("type").and_then(Value::as_str) != Some("replaced-by"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        links.push(json!({"other": {"reference": format!("Patient/{survivor_id}")}, "type": "replaced-by"}));
        object.insert("link".into(), Value::Array(links));
        if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_takes_the_union_of_identifiers_and_the_freshest_demographics() {
        let a = json!({"resourceType": "Patient", "meta": {"lastUpdated": "2026-01-01T00:00:00Z"},
            "identifier": [{"system": "urn:mrn:a", "value": "1"}],
            "name": [{"text": "张伟"}], "gender": "male", "birthDate": "1980-01-02"});
        let b = json!({"resourceType": "Patient", "meta": {"lastUpdated": "2026-02-01T00:00:00Z"},
            "identifier": [{"system": "urn:mrn:b", "value": "9"}, {"system": "urn:mrn:a", "value": "1"}],
            "name": [{"text": "张伟", "family": "张", "given": ["伟"]}]});
        let golden = build("g1", &[("a".into(), a), ("b".into(), b)], &[]);
        let ids: Vec<&str> = golden["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["value"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["g1", "9", "1"]);
        assert_eq!(golden["name"][0]["family"], "张");
        assert_eq!(golden["gender"], "male");
        assert_eq!(linked_ids(&golden, "seealso").len(), 2);
        assert!(super::super::is_golden(&golden));
    }

    #[test]
    fn refer_link_replaces_only_the_previous_refer() {
        let mut source = json!({"resourceType": "Patient", "link": [
            {"other": {"reference": "Patient/old"}, "type": "refer"},
            {"other": {"reference": "Patient/x"}, "type": "seealso"}]});
        set_refer_link(&mut source, "g2");
        assert!(refers_to(&source, "g2"));
        assert_eq!(linked_ids(&source, "seealso").len(), 1);
    }
}
