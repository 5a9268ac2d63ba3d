//! Structural validation of resources against the R4 StructureDefinitions.
//!
//! Checks what the base specification says about the shape of a resource in JSON: known
//! elements only, the right JSON kind and lexical form for every primitive, arrays exactly
//! where an element repeats, required elements present, no empty or null values, choice
//! elements with one allowed type suffix, primitive-extension (`_x`) siblings, and the same
//! for every nested datatype, backbone element, extension and inline resource. Invariants
//! (FHIRPath constraints), terminology bindings and profiles are not checked.
//!
//! All problems are collected into one OperationOutcome, each naming the element by a path
//! such as `Patient.name[0].given[1]`. Validation runs on every write, so the happy path
//! allocates nothing: element paths are kept as a chain of borrowed steps on the stack and
//! only rendered into strings for an issue.

mod primitive;

use std::fmt::Write;

use serde_json::{Map, Value};

use self::primitive::{describe, Primitive};
use crate::definitions::{r4, Definitions, JsonProperty, TypeInfo, TypeKind};
use crate::{IssueSeverity, IssueType, OperationOutcome};

/// More issues than this are not worth reporting one by one (and a hostile payload should not
/// make an outcome larger than itself many times over).
const MAX_ISSUES: usize = 500;

/// Validates a resource (a JSON object with a `resourceType`) structurally against the R4
/// definitions. `Err` carries one error issue per problem found, each with the path of the
/// element concerned in `expression`.
pub fn validate_resource(resource: &Value) -> Result<(), OperationOutcome> {
    let defs = r4();
    let mut validator = Validator {
        defs,
        element_type: defs
            .type_info("Element")
            .expect("the definitions include Element"),
        outcome: OperationOutcome::default(),
    };
    validator.resource(resource, None);
    if validator.outcome.issues.is_empty() {
        Ok(())
    } else {
        Err(validator.outcome)
    }
}

/// One step of an element path.
#[derive(Clone, Copy)]
enum Step<'a> {
    Name(&'a str),
    Index(usize),
}

/// An element path as a chain of steps borrowed from the stack, rendered only when needed.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
}

impl<'a> Path<'a> {
    fn root(name: &'a str) -> Self {
        Path {
            parent: None,
            step: Step::Name(name),
        }
    }

    fn name(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Name(name),
        }
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            step: Step::Index(index),
        }
    }

    fn render(&self) -> String {
        let mut steps = Vec::new();
        let mut current = Some(self);
        while let Some(p) = current {
            steps.push(p.step);
            current = p.parent;
        }
        let mut out = String::new();
        for step in steps.iter().rev() {
            match step {
                Step::Name(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Step::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }
}

struct Validator<'d> {
    defs: &'d Definitions,
    /// `Element`, the type of the objects in primitive-extension (`_x`) siblings.
    element_type: &'d TypeInfo,
    outcome: OperationOutcome,
}

impl Validator<'_> {
    fn issue(&mut self, code: IssueType, path: Option<&Path<'_>>, message: String) {
        let count = self.outcome.issues.len();
        if count > MAX_ISSUES {
            return;
        }
        if count == MAX_ISSUES {
            self.outcome.push(
                IssueSeverity::Error,
                IssueType::TooCostly,
                format!("more than {MAX_ISSUES} problems; the rest are not reported"),
                None,
            );
            return;
        }
        let expression = path.map(Path::render);
        let message = match &expression {
            Some(p) => format!("{p}: {message}"),
            None => message,
        };
        self.outcome
            .push(IssueSeverity::Error, code, message, expression);
    }

    /// A resource, at the top level (`path` None) or inline (`contained`, `Bundle.entry.resource`,
    /// `Parameters.parameter.resource`), where `path` is the element holding it.
    fn resource(&mut self, value: &Value, path: Option<&Path<'_>>) {
        let Value::Object(obj) = value else {
            let found = describe(value);
            self.issue(
                IssueType::Structure,
                path,
                format!("expected a resource (a JSON object), found {found}"),
            );
            return;
        };
        let resource_type = match obj.get("resourceType") {
            Some(Value::String(rt)) => rt.as_str(),
            Some(other) => {
                let found = describe(other);
                self.issue(
                    IssueType::Structure,
                    path,
                    format!("resourceType must be a string, found {found}"),
                );
                return;
            }
            None => {
                self.issue(
                    IssueType::Required,
                    path,
                    "the resource has no resourceType".to_owned(),
                );
                return;
            }
        };
        let info = match self.defs.type_info(resource_type) {
            Some(info) if info.kind == TypeKind::Resource && !info.is_abstract => info,
            Some(info) if info.kind == TypeKind::Resource => {
                self.issue(
                    IssueType::Value,
                    path,
                    format!("resourceType '{resource_type}' is abstract; use a concrete type"),
                );
                return;
            }
            _ => {
                self.issue(
                    IssueType::Value,
                    path,
                    format!("'{resource_type}' is not a known FHIR R4 resource type"),
                );
                return;
            }
        };
        let root = Path::root(resource_type);
        self.object(obj, info, path.unwrap_or(&root), true);
    }

    /// An object of a complex type, backbone element or resource.
    fn object(
        &mut self,
        obj: &Map<String, Value>,
        info: &TypeInfo,
        path: &Path<'_>,
        is_resource: bool,
    ) {
        if obj.is_empty() {
            self.issue(
                IssueType::Structure,
                Some(path),
                "empty object: FHIR forbids empty elements".to_owned(),
            );
            return;
        }
        // Elements present, by index (as value or `_x`), and choice elements given as value.
        // No type has more than 128 elements (54 in R4); beyond that presence is not tracked.
        let mut present: u128 = 0;
        let mut valued: u128 = 0;
        for (key, value) in obj {
            if is_resource && key == "resourceType" {
                continue;
            }
            if let Some(base) = key.strip_prefix('_') {
                match info.json_property(base) {
                    Some(prop) if Primitive::from_code(prop.type_code).is_some() => {
                        present |= bit(prop);
                        self.primitive_extension(obj, base, value, prop, &path.name(key));
                    }
                    _ => self.unknown_element(info, key, path),
                }
                continue;
            }
            let Some(prop) = info.json_property(key) else {
                self.unknown_element(info, key, path);
                continue;
            };
            let b = bit(prop);
            if prop.element.is_choice && valued & b != 0 {
                let name = &prop.element.name;
                self.issue(
                    IssueType::Structure,
                    Some(&path.name(key)),
                    format!("{name}[x] is a choice element and may have only one type, but appears more than once"),
                );
            }
            present |= b;
            valued |= b;
            if prop.element.is_prohibited() {
                self.issue(
                    IssueType::Structure,
                    Some(&path.name(key)),
                    format!("element '{key}' is not allowed in {}", info.name),
                );
                continue;
            }
            self.property(obj, key, value, prop, &path.name(key));
        }
        for (i, element) in info.elements.iter().enumerate() {
            if element.min == 0 || i >= 128 || present & (1u128 << i) != 0 {
                continue;
            }
            let shown;
            let name = if element.is_choice {
                shown = format!("{}[x]", element.name);
                shown.as_str()
            } else {
                element.name.as_str()
            };
            self.issue(
                IssueType::Required,
                Some(&path.name(name)),
                format!("required element '{name}' is missing"),
            );
        }
        if info.name == "Extension" {
            self.extension_content(obj, path);
        }
    }

    /// ext-1: an extension has either a value or nested extensions.
    fn extension_content(&mut self, obj: &Map<String, Value>, path: &Path<'_>) {
        let has_value = obj
            .keys()
            .any(|k| k.starts_with("value") || k.starts_with("_value"));
        let has_extensions = obj.contains_key("extension");
        if has_value && has_extensions {
            self.issue(
                IssueType::Invalid,
                Some(path),
                "an extension has either a value[x] or nested extensions, not both".to_owned(),
            );
        } else if !has_value && !has_extensions {
            self.issue(
                IssueType::Invalid,
                Some(path),
                "an extension needs a value[x] or nested extensions".to_owned(),
            );
        }
    }

    fn unknown_element(&mut self, info: &TypeInfo, key: &str, path: &Path<'_>) {
        let bare = key.strip_prefix('_').unwrap_or(key);
        let choice = info.elements.iter().find(|e| {
            e.is_choice
                && bare.starts_with(e.name.as_str())
                && bare[e.name.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_ascii_uppercase())
        });
        let message = if let Some(choice) = choice {
            let allowed: Vec<String> = choice
                .types
                .iter()
                .map(|t| {
                    let mut chars = t.chars();
                    let first = chars.next().map(|c| c.to_ascii_uppercase());
                    format!(
                        "{}{}{}",
                        choice.name,
                        first.unwrap_or_default(),
                        chars.as_str()
                    )
                })
                .collect();
            if bare == choice.name {
                format!(
                    "'{key}' needs a type suffix: {}[x] is a choice of {}",
                    choice.name,
                    allowed.join(", ")
                )
            } else {
                format!(
                    "'{key}' is not an allowed type for {}[x]; allowed: {}",
                    choice.name,
                    allowed.join(", ")
                )
            }
        } else if key.starts_with('_') && info.json_property(bare).is_some() {
            format!("'{key}' is not allowed: '{bare}' is not a primitive element")
        } else {
            format!("unknown element '{key}' in {}", info.name)
        };
        self.issue(IssueType::Structure, Some(&path.name(key)), message);
    }

    /// The value of a property `key` (the element `prop`), at `path`.
    fn property(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        value: &Value,
        prop: JsonProperty<'_>,
        path: &Path<'_>,
    ) {
        let type_code = prop.type_code;
        if !prop.element.is_array() {
            match value {
                Value::Array(_) => self.issue(
                    IssueType::Structure,
                    Some(path),
                    format!("'{key}' must be a single value, not an array (it does not repeat)"),
                ),
                Value::Null => self.null(path),
                _ => self.value(value, type_code, path),
            }
            return;
        }
        let Value::Array(items) = value else {
            let found = describe(value);
            self.issue(
                IssueType::Structure,
                Some(path),
                format!("'{key}' repeats and must be an array, found {found}"),
            );
            return;
        };
        if items.is_empty() {
            self.issue(
                IssueType::Structure,
                Some(path),
                "empty array: FHIR forbids empty elements (omit the element)".to_owned(),
            );
            return;
        }
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                // A null stands in for a value that only has an extension, in `_key` at the
                // same index.
                let has_extension = Primitive::from_code(type_code).is_some()
                    && sibling(obj, key)
                        .and_then(|ext| ext.as_array())
                        .and_then(|ext| ext.get(i))
                        .is_some_and(|e| !e.is_null());
                if !has_extension {
                    self.issue(
                        IssueType::Structure,
                        Some(&path.index(i)),
                        format!("null is not allowed here (a null in '{key}' needs an extension in '_{key}' at the same index)"),
                    );
                }
                continue;
            }
            self.value(item, type_code, &path.index(i));
        }
    }

    fn null(&mut self, path: &Path<'_>) {
        self.issue(
            IssueType::Structure,
            Some(path),
            "null is not allowed here (omit the element instead)".to_owned(),
        );
    }

    /// One (non-null) value of type `type_code`.
    fn value(&mut self, value: &Value, type_code: &str, path: &Path<'_>) {
        if let Some(prim) = Primitive::from_code(type_code) {
            if let Err(message) = primitive::check(prim, type_code, value) {
                let code = if matches!(value, Value::Object(_) | Value::Array(_)) {
                    IssueType::Structure
                } else {
                    IssueType::Value
                };
                self.issue(code, Some(path), message);
            }
            return;
        }
        let Some(info) = self.defs.type_info(type_code) else {
            // Every type the definitions reference is defined (checked by the generator).
            return;
        };
        if info.kind == TypeKind::Resource {
            // An inline resource: `Resource` (contained, Bundle.entry.resource, …) or a
            // specific type (Bundle.entry.response.outcome is an OperationOutcome).
            let actual = value.get("resourceType").and_then(Value::as_str);
            if let Some(actual) = actual.filter(|a| !info.is_abstract && a != &type_code) {
                self.issue(
                    IssueType::Value,
                    Some(path),
                    format!("expected a {type_code} resource here, found {actual}"),
                );
                return;
            }
            self.resource(value, Some(path));
            return;
        }
        match value {
            Value::Object(obj) => self.object(obj, info, path, false),
            other => {
                let found = describe(other);
                self.issue(
                    IssueType::Structure,
                    Some(path),
                    format!("expected an object ({type_code}), found {found}"),
                );
            }
        }
    }

    /// A primitive-extension sibling `_base` (its id and extensions), at `path`.
    fn primitive_extension(
        &mut self,
        obj: &Map<String, Value>,
        base: &str,
        value: &Value,
        prop: JsonProperty<'_>,
        path: &Path<'_>,
    ) {
        let element_type = self.element_type;
        if !prop.element.is_array() {
            match value {
                Value::Object(ext) => self.object(ext, element_type, path, false),
                other => {
                    let found = describe(other);
                    self.issue(
                        IssueType::Structure,
                        Some(path),
                        format!("expected an object with id and/or extension, found {found}"),
                    );
                }
            }
            return;
        }
        let Value::Array(items) = value else {
            let found = describe(value);
            self.issue(
                IssueType::Structure,
                Some(path),
                format!("'{base}' repeats, so '_{base}' must be an array, found {found}"),
            );
            return;
        };
        if items.is_empty() {
            self.issue(
                IssueType::Structure,
                Some(path),
                "empty array: FHIR forbids empty elements (omit the element)".to_owned(),
            );
            return;
        }
        let values = obj.get(base).and_then(Value::as_array);
        if let Some(values) = values {
            if values.len() != items.len() {
                self.issue(
                    IssueType::Structure,
                    Some(path),
                    format!(
                        "'_{base}' has {} items but '{base}' has {}; they must line up (use null for gaps)",
                        items.len(),
                        values.len()
                    ),
                );
            }
        }
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Null => {
                    // A null in both arrays is reported once, for the value array.
                    if values.and_then(|v| v.get(i)).is_none() {
                        self.issue(
                            IssueType::Structure,
                            Some(&path.index(i)),
                            format!("null in '_{base}' with no value in '{base}' at this index"),
                        );
                    }
                }
                Value::Object(ext) => self.object(ext, element_type, &path.index(i), false),
                other => {
                    let found = describe(other);
                    self.issue(
                        IssueType::Structure,
                        Some(&path.index(i)),
                        format!(
                            "expected an object with id and/or extension, or null, found {found}"
                        ),
                    );
                }
            }
        }
    }
}

/// The bit of an element in a presence set.
fn bit(prop: JsonProperty<'_>) -> u128 {
    if prop.index < 128 {
        1u128 << prop.index
    } else {
        0
    }
}

/// The `_key` sibling of property `key`, found without building the name.
fn sibling<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.strip_prefix('_') == Some(key))
        .map(|(_, v)| v)
}
