//! Index entries: what a node tells its parent about a person, and where federated
//! resources came from.
//!
//! An index entry is a `Patient` holding only identifiers, minimal demographics (name, gender,
//! birth date), the nodes that hold the person's records and a count of those records per
//! type — never the records themselves. The child's golden record id and version travel in a
//! [`Source`] extension, which is what makes applying entries idempotent.

use serde_json::{json, Map, Value};

use crate::{FEDERATION_SYSTEM, HOLDER_EXTENSION, INDEX_ENTRY_TAG, SOURCE_EXTENSION};

/// Where a published resource comes from: a node, one of its records, and that record's
/// version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The publishing node's id.
    pub node: String,
    /// The publishing node's FHIR base URL.
    pub endpoint: String,
    /// `Type/id` of the record at the publishing node.
    pub record: String,
    /// Its version there.
    pub version: u64,
}

impl Source {
    /// As a complex extension.
    pub fn to_extension(&self) -> Value {
        json!({
            "url": SOURCE_EXTENSION,
            "extension": [
                {"url": "node", "valueString": self.node},
                {"url": "endpoint", "valueUrl": self.endpoint},
                {"url": "record", "valueString": self.record},
                {"url": "version", "valueInteger": self.version},
            ]
        })
    }

    /// Reads the extension from an element that carries one (a resource or a Bundle entry).
    pub fn from_element(element: &Value) -> Option<Self> {
        let extension = element
            .get("extension")?
            .as_array()?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(SOURCE_EXTENSION))?;
        let part = |name: &str| {
            extension
                .get("extension")?
                .as_array()?
                .iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
        };
        let text = |name: &str, key: &str| {
            part(name)
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Self {
            node: text("node", "valueString")?,
            endpoint: text("endpoint", "valueUrl")?,
            record: text("record", "valueString")?,
            version: part("version")?.get("valueInteger")?.as_u64()?,
        })
    }
}

/// A node holding records of a person.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    /// Its node id.
    pub node: String,
    /// Its FHIR base URL.
    pub endpoint: String,
    /// The GB/T 2260 division it serves.
    pub division: String,
}

impl Holder {
    /// As a complex extension.
    pub fn to_extension(&self) -> Value {
        json!({
            "url": HOLDER_EXTENSION,
            "extension": [
                {"url": "node", "valueString": self.node},
                {"url": "endpoint", "valueUrl": self.endpoint},
                {"url": "division", "valueString": self.division},
            ]
        })
    }

    /// The holders an index entry lists.
    pub fn all_of(resource: &Value) -> Vec<Holder> {
        let mut out = Vec::new();
        for extension in resource
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("url").and_then(Value::as_str) == Some(HOLDER_EXTENSION))
        {
            let part = |name: &str, key: &str| {
                extension
                    .get("extension")
                    .and_then(Value::as_array)
                    .and_then(|parts| {
                        parts
                            .iter()
                            .find(|p| p.get("url").and_then(Value::as_str) == Some(name))
                    })
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if let (Some(node), Some(endpoint)) =
                (part("node", "valueString"), part("endpoint", "valueUrl"))
            {
                out.push(Holder {
                    node,
                    endpoint,
                    division: part("division", "valueString").unwrap_or_default(),
                });
            }
        }
        out
    }
}

/// Whether a resource carries the tag `system|code`.
pub fn has_tag(resource: &Value, system: &str, code: &str) -> bool {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("system").and_then(Value::as_str) == Some(system)
                    && t.get("code").and_then(Value::as_str) == Some(code)
            })
        })
}

/// Whether a Patient is an index entry (a person known at another node).
pub fn is_index_entry(resource: &Value) -> bool {
    has_tag(resource, FEDERATION_SYSTEM, INDEX_ENTRY_TAG)
}

/// Ids of the Patients a resource links to with `link.type == link_type`.
pub fn linked_ids(resource: &Value, link_type: &str) -> Vec<String> {
    resource
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some(link_type))
        .filter_map(|l| l.pointer("/other/reference").and_then(Value::as_str))
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .collect()
}

/// The index entry a node publishes for one version of its golden record `golden`.
///
/// The node's own person identifier is renamed to a node-specific system: the parent's index
/// assigns its own person identifiers, and two nodes' person numbers are unrelated.
pub fn index_entry(
    source: &Source,
    golden: &Value,
    holders: &[Holder],
    summary: &[(String, u64)],
) -> Value {
    let mut entry = Map::new();
    entry.insert("resourceType".into(), json!("Patient"));
    entry.insert(
        "meta".into(),
        json!({
            "source": source.endpoint,
            "tag": [{"system": FEDERATION_SYSTEM, "code": INDEX_ENTRY_TAG, "display": "Record locator entry"}]
        }),
    );
    let mut extensions = vec![source.to_extension()];
    extensions.extend(holders.iter().map(Holder::to_extension));
    for (resource_type, count) in summary {
        extensions.push(json!({
            "url": crate::SUMMARY_EXTENSION,
            "extension": [
                {"url": "type", "valueCode": resource_type},
                {"url": "count", "valueInteger": count},
            ]
        }));
    }
    entry.insert("extension".into(), Value::Array(extensions));
    let person_system = format!("urn:phip:node:{}:person", source.node);
    let identifiers: Vec<Value> = golden
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|identifier| {
            let mut copy = identifier.clone();
            if identifier.get("system").and_then(Value::as_str)
                == Some(phip_engine::mpi::PERSON_ID_SYSTEM)
            {
                copy["system"] = json!(person_system);
                copy["use"] = json!("secondary");
            }
            copy
        })
        .collect();
    if !identifiers.is_empty() {
        entry.insert("identifier".into(), Value::Array(identifiers));
    }
    for element in ["active", "name", "gender", "birthDate"] {
        if let Some(value) = golden.get(element) {
            entry.insert(element.into(), value.clone());
        }
    }
    entry.insert(
        "managingOrganization".into(),
        json!({
            "identifier": {"system": "urn:phip:node", "value": source.node},
            "display": format!("phip node {}", source.node)
        }),
    );
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_round_trips() {
        let source = Source {
            node: "gd".into(),
            endpoint: "http://gd/fhir".into(),
            record: "Patient/g1".into(),
            version: 7,
        };
        let element = json!({"extension": [source.to_extension()]});
        assert_eq!(Source::from_element(&element), Some(source));
        assert_eq!(Source::from_element(&json!({})), None);
    }

    #[test]
    fn entry_keeps_only_minimal_demographics() {
        let golden = json!({
            "resourceType": "Patient", "id": "g1",
            "identifier": [
                {"system": phip_engine::mpi::PERSON_ID_SYSTEM, "value": "g1"},
                {"system": crate::RESIDENT_ID_SYSTEM, "value": "110101199001011234"}
            ],
            "name": [{"text": "张三"}], "gender": "male", "birthDate": "1990-01-01",
            "telecom": [{"system": "phone", "value": "13800000000"}],
            "address": [{"text": "somewhere"}]
        });
        let source = Source {
            node: "bj".into(),
            endpoint: "http://bj/fhir".into(),
            record: "Patient/g1".into(),
            version: 1,
        };
        let holder = Holder {
            node: "bj".into(),
            endpoint: "http://bj/fhir".into(),
            division: "110000".into(),
        };
        let entry = index_entry(&source, &golden, std::slice::from_ref(&holder), &[]);
        assert!(entry.get("telecom").is_none() && entry.get("address").is_none());
        assert_eq!(entry["identifier"][0]["system"], "urn:phip:node:bj:person");
        assert_eq!(entry["identifier"][1]["value"], "110101199001011234");
        assert!(is_index_entry(&entry));
        assert_eq!(Holder::all_of(&entry), vec![holder]);
        assert_eq!(Source::from_element(&entry), Some(source));
    }
}
