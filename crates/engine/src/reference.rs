//! Reference rewriting inside transaction bundles.

use std::collections::HashMap;

use serde_json::Value;

/// Visits every `reference` string of `Reference`-shaped objects and every other string value
/// (for `urn:uuid:` placeholders used outside `reference`, e.g. in `uri` elements), letting
/// `rewrite` replace it. Returns the first error `rewrite` reports.
pub(crate) fn rewrite_references<E, F>(value: &mut Value, rewrite: &mut F) -> Result<(), E>
where
    F: FnMut(&str, bool) -> Result<Option<String>, E>,
{
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                if key == "reference" {
                    if let Value::String(text) = child {
                        if let Some(replacement) = rewrite(text, true)? {
                            *text = replacement;
                        }
                        continue;
                    }
                }
                rewrite_references(child, rewrite)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                rewrite_references(item, rewrite)?;
            }
            Ok(())
        }
        Value::String(text) => {
            if text.starts_with("urn:uuid:") || text.starts_with("urn:oid:") {
                if let Some(replacement) = rewrite(text, false)? {
                    *text = replacement;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a reference is a conditional reference: `Type?query`, whatever the query holds.
///
/// Only the part before the first `?` decides: it must have the shape of a resource type name
/// (a letter, then letters and digits). Search values commonly hold URLs
/// (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999951909`, as Synthea writes
/// them), so what follows the `?` is never looked at; an absolute URL (`http://…/Patient?…`,
/// `urn:…`) has `:` or `/` before its `?` and is not conditional.
pub(crate) fn is_conditional_reference(reference: &str) -> bool {
    reference.split_once('?').is_some_and(|(ty, _)| {
        ty.starts_with(|c: char| c.is_ascii_alphabetic())
            && ty.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// The fullUrl → `Type/id` map of a transaction.
pub(crate) type IdMap = HashMap<String, String>;

#[cfg(test)]
mod tests {
    use super::is_conditional_reference;

    #[test]
    fn a_conditional_reference_is_type_question_mark_query_whatever_the_query_holds() {
        for conditional in [
            "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999951909",
            "Location?identifier=https://github.com/synthetichealth/synthea|3b23bdf7",
            "Organization?identifier=urn:oid:2.16.156.10011.1.5|H-1",
            "Patient?identifier=urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "Organization?name=a?b",
            "Unknowntype?x=1",
        ] {
            assert!(is_conditional_reference(conditional), "{conditional}");
        }
        for literal in [
            "Patient/123",
            "http://example.org/fhir/Patient?identifier=x|1",
            "https://example.org/fhir/Patient/1?x=1",
            "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
            "urn:oid:1.2.3?x",
            "#contained",
            "?identifier=x|1",
            "Patient/1?x=1",
            "_history?x=1",
        ] {
            assert!(!is_conditional_reference(literal), "{literal}");
        }
    }
}
