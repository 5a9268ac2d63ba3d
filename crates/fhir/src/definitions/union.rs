//! Narrowing a shared search-parameter expression to one resource type.
//!
//! Many R4 parameters are shared by several types with one union expression
//! (`AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …`, up to
//! 30 branches). Evaluating it on a resource means evaluating every branch, all but one of which
//! cannot match. This module keeps only the branches that can apply to a type, working on the
//! text so that it does not depend on the FHIRPath parser's internals.

/// The expression `full` reduced to the union branches that apply to `resource_type`:
/// branches starting with that type, and branches that do not start with a resource type
/// name. Branches starting with `Resource` or `DomainResource` are rewritten to start with
/// `resource_type` (equivalent, and saves the evaluator a subtype check). If the text cannot
/// be split safely (a top-level operator binding looser than `|`), or nothing would be left,
/// `full` is returned unchanged.
pub(super) fn restrict_to_type(
    full: &str,
    resource_type: &str,
    is_resource_type: &dyn Fn(&str) -> bool,
) -> String {
    let Some(branches) = split_top_level_union(full) else {
        return full.to_owned();
    };
    let mut kept: Vec<String> = Vec::with_capacity(branches.len());
    for branch in branches {
        let branch = branch.trim();
        let (start, ident) = leading_identifier(branch);
        let rest = &branch[start + ident.len()..];
        let names_type = rest.is_empty() || rest.starts_with('.') || rest.starts_with(')');
        if names_type && (ident == "Resource" || ident == "DomainResource") {
            kept.push(format!("{}{}{}", &branch[..start], resource_type, rest));
        } else if names_type && ident != resource_type && is_resource_type(ident) {
            continue;
        } else {
            kept.push(branch.to_owned());
        }
    }
    if kept.is_empty() {
        return full.to_owned();
    }
    kept.join(" | ")
}

/// The identifier a branch starts with, after any opening parentheses: (its offset, it).
fn leading_identifier(branch: &str) -> (usize, &str) {
    let start = branch
        .find(|c: char| c != '(' && !c.is_whitespace())
        .unwrap_or(branch.len());
    let tail = &branch[start..];
    let len = tail
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(tail.len());
    (start, &tail[..len])
}

/// Splits `expr` at its top-level `|` operators, or `None` when the top level holds an
/// operator of lower precedence than `|` (comparison, equality, membership, boolean), where
/// splitting would change the meaning.
fn split_top_level_union(expr: &str) -> Option<Vec<&str>> {
    let bytes = expr.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut part_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'`' => {
                // Skip a string literal or delimited identifier, honouring backslash escapes.
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            b'|' if depth == 0 => {
                parts.push(&expr[part_start..i]);
                part_start = i + 1;
            }
            b'=' | b'<' | b'>' | b'~' | b'!' if depth == 0 => return None,
            c if depth == 0 && c.is_ascii_alphabetic() => {
                let len = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .unwrap_or(bytes.len() - i);
                let word = &expr[i..i + len];
                // A word after a dot is a path step (`ValueSet.expansion.contains`).
                let after_dot = i > 0 && bytes[i - 1] == b'.';
                if !after_dot
                    && matches!(word, "and" | "or" | "xor" | "implies" | "in" | "contains")
                {
                    return None;
                }
                i += len;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    parts.push(&expr[part_start..]);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_type(name: &str) -> bool {
        matches!(
            name,
            "Patient" | "Practitioner" | "Observation" | "Resource" | "DomainResource"
        )
    }

    #[test]
    fn keeps_only_own_branches() {
        let full = "Patient.name | Practitioner.name | (Observation.value as Quantity)";
        assert_eq!(restrict_to_type(full, "Patient", &is_type), "Patient.name");
        assert_eq!(
            restrict_to_type(full, "Observation", &is_type),
            "(Observation.value as Quantity)"
        );
    }

    #[test]
    fn rewrites_resource_prefix() {
        assert_eq!(
            restrict_to_type("Resource.id", "Patient", &is_type),
            "Patient.id"
        );
        assert_eq!(
            restrict_to_type("DomainResource.text", "Patient", &is_type),
            "Patient.text"
        );
    }

    #[test]
    fn leaves_unsplittable_alone() {
        let full = "Patient.name | Practitioner.name and true";
        assert_eq!(restrict_to_type(full, "Patient", &is_type), full);
        let full = "Patient.a.where(x = 'a|b') | Practitioner.b";
        assert_eq!(
            restrict_to_type(full, "Patient", &is_type),
            "Patient.a.where(x = 'a|b')"
        );
        // Patient is not named at all: keep everything rather than nothing.
        assert_eq!(
            restrict_to_type("Practitioner.name", "Patient", &is_type),
            "Practitioner.name"
        );
        // Generic branches stay.
        assert_eq!(
            restrict_to_type("name | Practitioner.name", "Patient", &is_type),
            "name"
        );
        assert_eq!(
            restrict_to_type("ValueSet.expansion.contains.code", "Patient", &|_| false),
            "ValueSet.expansion.contains.code"
        );
    }
}
