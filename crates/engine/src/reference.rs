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

/// Whether a reference is a conditional reference (`Type?params`).
pub(crate) fn is_conditional_reference(reference: &str) -> bool {
    !reference.contains("://")
        && reference
            .split_once('?')
            .is_some_and(|(ty, _)| !ty.is_empty() && !ty.contains('/'))
}

/// The fullUrl → `Type/id` map of a transaction.
pub(crate) type IdMap = HashMap<String, String>;
