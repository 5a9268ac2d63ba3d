//! The official FHIR R4 definitions, embedded in the binary.

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
}

/// The loaded R4 definitions.
#[derive(Debug)]
pub struct Definitions {}

/// The embedded R4 definitions, loaded once.
pub fn r4() -> &'static Definitions {
    static DEFS: Definitions = Definitions {};
    &DEFS
}
