//! The official FHIR R4 definitions, embedded in the binary.
//!
//! The data under `crates/fhir/defs/` is generated from the official 4.0.1 definition files by
//! `tools/gen_fhir_defs.py` and committed, so building needs nothing but this crate. It is
//! decompressed and indexed once, on first use of [`r4`].

mod load;
mod union;

use std::collections::HashMap;
use std::sync::OnceLock;

use phip_fhirpath::{ElementInfo, Expression, ModelInfo};

use crate::search::ParamType;

/// A search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParamDef {
    /// The code used in URLs (`birthdate`).
    pub code: String,
    /// Canonical URL of the SearchParameter.
    pub url: String,
    /// Type.
    pub param_type: ParamType,
    /// FHIRPath expression (the whole expression of the definition; it names its base types).
    pub expression: Option<String>,
    /// Target resource types of a reference parameter.
    pub targets: Vec<String>,
    /// Components of a composite parameter: (definition URL, expression relative to the
    /// composite's element).
    pub components: Vec<(String, String)>,
    /// The expression, parsed, for the resource type this definition was looked up for: the
    /// branches of a shared union (`Patient.name | Practitioner.name | …`) that concern other
    /// resource types are left out, and `Resource.x`/`DomainResource.x` branches are rewritten
    /// to start with the concrete type. `None` when there is no expression (`_text`,
    /// `_content`, `_query`) or it failed to parse (see [`Definitions::parse_failures`]).
    /// Looked up by URL ([`Definitions::search_param_by_url`]) it is the whole expression.
    /// The narrowed expression gives the same items as the whole one, except that a lone
    /// remaining branch does not remove duplicates as a union would.
    pub compiled: Option<Expression>,
    /// The components' expressions, parsed: (definition URL, expression). `None` for an
    /// expression that failed to parse.
    pub compiled_components: Vec<(String, Option<Expression>)>,
    /// The resource types the definition applies to (`SearchParameter.base`).
    pub base: Vec<String>,
    /// Comparators allowed (`eq`, `ne`, `gt`, …); empty when the definition lists none.
    pub comparators: Vec<String>,
    /// Modifiers allowed (`missing`, `exact`, …); empty when the definition lists none.
    pub modifiers: Vec<String>,
    /// `SearchParameter.multipleOr`, when stated.
    pub multiple_or: Option<bool>,
    /// `SearchParameter.multipleAnd`, when stated.
    pub multiple_and: Option<bool>,
}

/// The kind of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    /// A primitive datatype (`string`, `date`, …).
    Primitive,
    /// A complex datatype (`HumanName`, `Quantity`, …), including `Element`, `BackboneElement`
    /// and constrained types such as `SimpleQuantity`.
    Complex,
    /// A resource type, including the abstract `Resource` and `DomainResource`.
    Resource,
    /// A backbone element of a resource or datatype, a pseudo-type named by its path
    /// (`Patient.contact`, `Bundle.entry.request`, `Timing.repeat`).
    Backbone,
}

/// One element of a type.
#[derive(Debug, Clone)]
pub struct ElementDef {
    /// The element name; a choice element (`value[x]`) by its base name (`value`).
    pub name: String,
    /// Type codes: FHIR type names (`string`, `HumanName`, `Resource`), the pseudo-type path of
    /// a backbone element (`Patient.contact`), or for the `value` of a primitive the FHIRPath
    /// system type (`System.String`, `System.Date`, …).
    pub types: Vec<String>,
    /// Minimum cardinality.
    pub min: u32,
    /// Maximum cardinality; `None` for `*`.
    pub max: Option<u32>,
    /// Whether this is a choice element (`value[x]`), stored in JSON as name + type suffix.
    pub is_choice: bool,
    /// Whether the element is part of the summary (`_summary=true`).
    pub is_summary: bool,
    /// Whether the element is a modifier.
    pub is_modifier: bool,
    /// Target resource types (or profiles' names) of a `Reference`/`canonical` element.
    pub targets: Vec<String>,
}

impl ElementDef {
    /// Whether the element repeats (max cardinality above 1), i.e. is a JSON array.
    pub fn is_array(&self) -> bool {
        self.max.is_none_or(|m| m > 1)
    }

    /// Whether the element is prohibited (max cardinality 0, e.g. in `SimpleQuantity`).
    pub fn is_prohibited(&self) -> bool {
        self.max == Some(0)
    }
}

/// A type: primitive, complex datatype, resource or backbone pseudo-type.
#[derive(Debug, Clone)]
pub struct TypeInfo {
    /// The type name (`Patient`, `Age`, `Patient.contact`).
    pub name: String,
    /// Kind.
    pub kind: TypeKind,
    /// The base type (`Age` → `Quantity`, `Patient` → `DomainResource`, `Patient.contact` →
    /// `BackboneElement`); `None` for `Element` and `Resource`.
    pub base: Option<String>,
    /// Whether the type is abstract (`Resource`, `DomainResource`, `Element`,
    /// `BackboneElement`).
    pub is_abstract: bool,
    /// Whether the type is a constraint on its base (`SimpleQuantity`, `MoneyQuantity`).
    pub is_constraint: bool,
    /// For a primitive: the regex its lexical form must match (from the spec), if any.
    pub regex: Option<String>,
    /// The elements, in the order of the definition (inherited ones included).
    pub elements: Vec<ElementDef>,
    /// JSON property name → (element index, choice type index). A choice element appears once
    /// per type, as `valueQuantity`, `valueString`, …
    json_names: HashMap<String, (u16, u16)>,
}

/// What a JSON property name of an object of some type stands for.
#[derive(Debug, Clone, Copy)]
pub struct JsonProperty<'a> {
    /// The element.
    pub element: &'a ElementDef,
    /// The type the property carries: the single type of a plain element, or the type a
    /// choice property's suffix names (`Quantity` for `valueQuantity`).
    pub type_code: &'a str,
    /// The index of the element in [`TypeInfo::elements`].
    pub index: usize,
}

impl TypeInfo {
    /// The element named `name` (a choice by its base name), not looking at base types.
    pub fn element(&self, name: &str) -> Option<&ElementDef> {
        self.elements.iter().find(|e| e.name == name)
    }

    /// What the JSON property `name` of an object of this type is (`valueQuantity` → the
    /// `value[x]` element, as a `Quantity`). The `_name` siblings of primitives are not
    /// resolved here: strip the underscore first.
    pub fn json_property(&self, name: &str) -> Option<JsonProperty<'_>> {
        let &(e, t) = self.json_names.get(name)?;
        let element = &self.elements[e as usize];
        Some(JsonProperty {
            element,
            type_code: element.types.get(t as usize).map_or("", String::as_str),
            index: e as usize,
        })
    }

    /// Whether this is a primitive datatype.
    pub fn is_primitive(&self) -> bool {
        self.kind == TypeKind::Primitive
    }

    fn index_json_names(&mut self) {
        let mut names = HashMap::with_capacity(self.elements.len());
        for (i, el) in self.elements.iter().enumerate() {
            if el.is_choice {
                for (t, code) in el.types.iter().enumerate() {
                    names.insert(
                        format!("{}{}", el.name, capitalize(code)),
                        (i as u16, t as u16),
                    );
                }
            } else {
                names.insert(el.name.clone(), (i as u16, 0));
            }
        }
        self.json_names = names;
    }
}

fn capitalize(code: &str) -> String {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// The search parameters of one resource type.
#[derive(Debug, Default)]
struct TypeParams {
    params: Vec<SearchParamDef>,
    by_code: HashMap<String, usize>,
}

/// An expression of the definitions that did not parse.
#[derive(Debug, Clone)]
pub struct ParseFailure {
    /// URL of the SearchParameter.
    pub url: String,
    /// The resource type it was compiled for (`None` for the whole expression, by URL).
    pub resource_type: Option<String>,
    /// The expression text.
    pub expression: String,
    /// The parser's message.
    pub error: String,
}

/// The loaded R4 definitions.
pub struct Definitions {
    types: HashMap<String, TypeInfo>,
    /// Concrete and abstract resource type names, sorted.
    resource_types: Vec<String>,
    params_by_type: HashMap<String, TypeParams>,
    params_by_url: HashMap<String, SearchParamDef>,
    patient_compartment: HashMap<String, Vec<String>>,
    parse_failures: Vec<ParseFailure>,
}

impl std::fmt::Debug for Definitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definitions")
            .field("types", &self.types.len())
            .field("resource_types", &self.resource_types.len())
            .field("search_params", &self.params_by_url.len())
            .field("parse_failures", &self.parse_failures.len())
            .finish_non_exhaustive()
    }
}

/// The embedded R4 definitions, loaded once.
pub fn r4() -> &'static Definitions {
    static DEFS: OnceLock<Definitions> = OnceLock::new();
    DEFS.get_or_init(load::load)
}

const NO_PARAMS: &[SearchParamDef] = &[];
const NO_STRINGS: &[String] = &[];

impl Definitions {
    /// The resource type names (abstract `Resource` and `DomainResource` excluded), sorted.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.resource_types.iter().map(String::as_str)
    }

    /// Whether `name` is a concrete resource type (not `Resource` or `DomainResource`).
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.resource_types
            .binary_search_by(|t| t.as_str().cmp(name))
            .is_ok()
    }

    /// All search parameters applicable to a resource type, sorted by code: those defined for
    /// it plus the `Resource` ones (`_id`, `_lastUpdated`, `_profile`, `_security`, `_source`,
    /// `_tag`, `_content`, `_query`) and, for domain resources, `_text`. Empty for an unknown
    /// type. `_list`, `_has` and `_type` are no SearchParameters in R4.
    pub fn search_params(&self, resource_type: &str) -> &[SearchParamDef] {
        self.params_by_type
            .get(resource_type)
            .map_or(NO_PARAMS, |p| p.params.as_slice())
    }

    /// The search parameter `code` as it applies to `resource_type`.
    pub fn search_param(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        let params = self.params_by_type.get(resource_type)?;
        params.by_code.get(code).map(|&i| &params.params[i])
    }

    /// A search parameter by canonical URL, with its whole expression compiled.
    pub fn search_param_by_url(&self, url: &str) -> Option<&SearchParamDef> {
        self.params_by_url.get(url)
    }

    /// The codes of the search parameters that put a resource of this type in a Patient's
    /// compartment. `{def}` (for `Patient` only) stands for the Patient itself, by its id.
    /// Empty when the type is not in the compartment.
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.patient_compartment
            .get(resource_type)
            .map_or(NO_STRINGS, Vec::as_slice)
    }

    /// The type model, for FHIRPath evaluation.
    pub fn model(&self) -> &dyn ModelInfo {
        self
    }

    /// A type by name: a primitive (`date`), complex datatype (`HumanName`), resource type
    /// (`Patient`, `Resource`) or backbone pseudo-type (`Patient.contact`).
    pub fn type_info(&self, name: &str) -> Option<&TypeInfo> {
        self.types.get(name)
    }

    /// The element `element` of a type, looking through base types too (so `id` and
    /// `extension` are found on any type, and `text` on any domain resource).
    pub fn element(&self, type_name: &str, element: &str) -> Option<&ElementDef> {
        let mut name = type_name;
        // Bounded: the deepest hierarchy is a handful of levels.
        for _ in 0..8 {
            let info = self.types.get(name)?;
            if let Some(el) = info.element(element) {
                return Some(el);
            }
            name = info.base.as_deref()?;
        }
        None
    }

    /// Whether a top-level element of a resource is in the summary (`_summary=true`).
    /// `element` may be a JSON property name (`valueQuantity`, `_birthDate`);
    /// `resourceType` counts as summary.
    pub fn is_summary_element(&self, resource_type: &str, element: &str) -> bool {
        if element == "resourceType" {
            return true;
        }
        let name = element.strip_prefix('_').unwrap_or(element);
        let Some(info) = self.types.get(resource_type) else {
            return false;
        };
        info.json_property(name)
            .map(|p| p.element)
            .or_else(|| info.element(name))
            .is_some_and(|e| e.is_summary)
    }

    /// The expressions of the definitions that failed to parse (none once the FHIRPath crate
    /// handles everything R4 uses).
    pub fn parse_failures(&self) -> &[ParseFailure] {
        &self.parse_failures
    }
}

impl ModelInfo for Definitions {
    fn element(&self, type_name: &str, element: &str) -> Option<ElementInfo<'_>> {
        let el = Definitions::element(self, type_name, element)?;
        Some(ElementInfo {
            types: &el.types,
            is_choice: el.is_choice,
            is_array: el.is_array(),
        })
    }

    fn is_resource_type(&self, name: &str) -> bool {
        Definitions::is_resource_type(self, name) || name == "Resource" || name == "DomainResource"
    }

    fn base_type(&self, type_name: &str) -> Option<&str> {
        self.types.get(type_name)?.base.as_deref()
    }
}

#[cfg(test)]
mod tests;
