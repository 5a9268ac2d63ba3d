//! A FHIRPath evaluator over FHIR JSON (`serde_json::Value`).
//!
//! It covers what the FHIR R4 search-parameter expressions use — paths, `|`, `where`, `ofType`,
//! `as`, `is`, `exists`, `resolve()`, `extension(url)`, indexers, literals, equality and boolean
//! logic — plus the common functions of the FHIRPath N1 specification. Type information (which
//! element is a choice, what type an element has) comes from a [`ModelInfo`] supplied by the
//! caller, so this crate knows nothing of the FHIR definitions themselves.
//!
//! ```
//! use phip_fhirpath::{Expression, NoModel};
//! use serde_json::json;
//!
//! let expr = Expression::parse("Patient.name.where(use = 'official').given.first()").unwrap();
//! let patient = json!({"resourceType": "Patient", "name": [{"use": "official", "given": ["Ann"]}]});
//! let result = expr.evaluate(&patient, &NoModel).unwrap();
//! assert_eq!(*result[0].value, json!("Ann"));
//! ```
//!
//! Semantics worth knowing:
//! - Results borrow from the input JSON; only computed values (literals, function results)
//!   are owned.
//! - A capitalised path segment is a type name: `Patient.name` on a Practitioner is empty.
//! - Choice elements (`Observation.value`) find `valueQuantity`, `valueString`, …, typed by
//!   the suffix. Without model information, navigation goes by JSON key alone.
//! - `resolve()` makes no server round trip: a reference resolves to itself, typed by the
//!   target resource type in its URL, so `where(resolve() is Patient)` filters by target.
//!   `#id` references resolve to the contained resource, and inside a Bundle a reference equal
//!   to an entry's `fullUrl` resolves to that entry's resource.
//! - `matches()` / `replaceMatches()` use a small built-in regex engine (see `regex.rs`) with
//!   linear-time matching, so hostile patterns cannot hang a write.

#![warn(missing_docs)]

mod ast;
mod eval;
mod functions;
mod lexer;
mod parser;
mod regex;
mod temporal;
mod types;
mod values;

use std::borrow::Cow;

use serde_json::Value;

use crate::eval::{Evaluator, Scope};

/// The UCUM code system URL (`%ucum`, and the system of quantity literals).
pub const UCUM: &str = "http://unitsofmeasure.org";

/// What the evaluator needs to know about the FHIR type system.
pub trait ModelInfo: Send + Sync {
    /// The declared types of element `element` of type `type_name` (a resource or data type name,
    /// or a backbone path such as `Patient.contact`). Choice elements (`value[x]`) are looked up
    /// by their base name (`value`). `None` when the element does not exist.
    fn element(&self, type_name: &str, element: &str) -> Option<ElementInfo<'_>>;

    /// Whether `name` is a known resource type.
    fn is_resource_type(&self, name: &str) -> bool;

    /// The base type of a type (`Age` → `Quantity`, `Patient` → `DomainResource`), if any.
    fn base_type(&self, type_name: &str) -> Option<&str>;
}

/// Type information about one element.
#[derive(Debug, Clone, Copy)]
pub struct ElementInfo<'a> {
    /// Type codes (`string`, `CodeableConcept`, …). Backbone elements report their path
    /// (`Patient.contact`) so that nested lookups work.
    pub types: &'a [String],
    /// Whether the element is a choice (`value[x]`), stored in JSON as `value` + type suffix.
    pub is_choice: bool,
    /// Whether the element repeats (max cardinality > 1).
    pub is_array: bool,
}

/// One item of a FHIRPath result collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Item<'a> {
    /// The JSON value (borrowed from the resource, or owned for computed values).
    pub value: Cow<'a, Value>,
    /// The FHIR type of the value when known (`Quantity`, `dateTime`, `Patient`, …).
    pub type_name: Option<Cow<'a, str>>,
}

impl<'a> Item<'a> {
    /// An item borrowing `value`, with an optional type.
    pub fn borrowed(value: &'a Value, type_name: Option<&'a str>) -> Self {
        Item {
            value: Cow::Borrowed(value),
            type_name: type_name.map(Cow::Borrowed),
        }
    }

    /// An item for a resource, typed by its `resourceType`.
    pub fn resource(value: &'a Value) -> Self {
        Self::borrowed(value, value.get("resourceType").and_then(Value::as_str))
    }

    /// The type name, if known.
    pub fn type_name(&self) -> Option<&str> {
        self.type_name.as_deref()
    }

    /// Detaches the item from the data it borrows.
    pub fn into_owned(self) -> Item<'static> {
        Item {
            value: Cow::Owned(self.value.into_owned()),
            type_name: self.type_name.map(|t| Cow::Owned(t.into_owned())),
        }
    }
}

/// A [`ModelInfo`] that knows nothing: navigation then goes purely by JSON keys, choice
/// elements are recognised by known type suffixes, and resource types by capitalisation.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

impl ModelInfo for NoModel {
    fn element(&self, _type_name: &str, _element: &str) -> Option<ElementInfo<'_>> {
        None
    }

    fn is_resource_type(&self, _name: &str) -> bool {
        false
    }

    fn base_type(&self, _type_name: &str) -> Option<&str> {
        None
    }
}

/// A parse or evaluation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath error: {0}")]
pub struct Error(pub String);

/// A parsed FHIRPath expression: parse once, evaluate many times.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: ast::Node,
}

impl Expression {
    /// Parses an expression. Errors name the position (byte offset) of the problem; unknown
    /// functions and wrong argument counts are reported here rather than at evaluation.
    pub fn parse(source: &str) -> Result<Self, Error> {
        Ok(Self {
            source: source.to_owned(),
            root: parser::parse(source)?,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `resource` as the context (`%resource`, `%context`).
    pub fn evaluate<'a>(
        &self,
        resource: &'a Value,
        model: &dyn ModelInfo,
    ) -> Result<Vec<Item<'a>>, Error> {
        self.evaluate_on(&Item::resource(resource), resource, model)
    }

    /// Evaluates the expression against `context` (an element inside `resource`, e.g. a
    /// component of a composite search parameter); `resource` is `%resource`.
    pub fn evaluate_on<'a>(
        &self,
        context: &Item<'a>,
        resource: &'a Value,
        model: &dyn ModelInfo,
    ) -> Result<Vec<Item<'a>>, Error> {
        let evaluator = Evaluator::new(model, resource, context.clone());
        let scope = Scope {
            this: std::slice::from_ref(context),
            index: None,
            total: None,
        };
        evaluator.eval(&self.root, scope)
    }
}

impl std::str::FromStr for Expression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Expression>();
        assert_send_sync::<Error>();
    }

    #[test]
    fn item_helpers() {
        let v = serde_json::json!({"resourceType": "Patient"});
        let item = Item::resource(&v);
        assert_eq!(item.type_name(), Some("Patient"));
        let owned: Item<'static> = item.into_owned();
        assert_eq!(owned.type_name(), Some("Patient"));
        assert_eq!(Expression::parse("a.b").unwrap().source(), "a.b");
    }
}
