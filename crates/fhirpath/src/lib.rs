//! A FHIRPath evaluator over FHIR JSON (`serde_json::Value`).
//!
//! It covers what the FHIR R4 search-parameter expressions use — paths, `|`, `where`, `ofType`,
//! `as`, `is`, `exists`, `resolve()`, `extension(url)`, indexers, literals, equality and boolean
//! logic — plus the common functions of the FHIRPath N1 specification. Type information (which
//! element is a choice, what type an element has) comes from a [`ModelInfo`] supplied by the
//! caller, so this crate knows nothing of the FHIR definitions themselves.

use std::borrow::Cow;

use serde_json::Value;

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

/// A parse or evaluation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath error: {0}")]
pub struct Error(pub String);

/// A parsed FHIRPath expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
}

impl Expression {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Self, Error> {
        Ok(Self {
            source: source.to_owned(),
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `resource` as the context (`%resource`, `%context`).
    pub fn evaluate<'a>(
        &self,
        _resource: &'a Value,
        _model: &dyn ModelInfo,
    ) -> Result<Vec<Item<'a>>, Error> {
        Err(Error("not implemented yet".into()))
    }
}
