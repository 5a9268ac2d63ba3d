//! Built-in knowledge of FHIR type names, used to name types without allocating and as a
//! fallback when the [`ModelInfo`](crate::ModelInfo) has no answer.

/// FHIR primitive type codes (first letter lowercase).
pub(crate) const PRIMITIVES: &[&str] = &[
    "boolean",
    "integer",
    "string",
    "decimal",
    "uri",
    "url",
    "canonical",
    "base64Binary",
    "instant",
    "date",
    "dateTime",
    "time",
    "code",
    "oid",
    "id",
    "markdown",
    "unsignedInt",
    "positiveInt",
    "uuid",
    "xhtml",
];

/// FHIR R4 complex data types and abstract bases.
const COMPLEX: &[&str] = &[
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "BackboneElement",
    "CodeableConcept",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "DomainResource",
    "Dosage",
    "Duration",
    "Element",
    "ElementDefinition",
    "Expression",
    "Extension",
    "HumanName",
    "Identifier",
    "MarketingStatus",
    "Meta",
    "Money",
    "MoneyQuantity",
    "Narrative",
    "ParameterDefinition",
    "Period",
    "Population",
    "ProdCharacteristic",
    "ProductShelfLife",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "RelatedArtifact",
    "Resource",
    "SampledData",
    "Signature",
    "SimpleQuantity",
    "SubstanceAmount",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
];

/// FHIRPath System types.
const SYSTEM: &[&str] = &[
    "Boolean", "Integer", "String", "Decimal", "Date", "DateTime", "Time",
];

/// The `'static` spelling of a known type name, so items can carry it without allocating.
pub(crate) fn intern(name: &str) -> Option<&'static str> {
    PRIMITIVES
        .iter()
        .chain(COMPLEX)
        .chain(SYSTEM)
        .find(|t| **t == name)
        .copied()
}

/// Maps a choice-element suffix (`String`, `Quantity`, `DateTime`) to a known type code
/// (`string`, `Quantity`, `dateTime`), for use without model information.
pub(crate) fn known_suffix_type(suffix: &str) -> Option<&'static str> {
    if let Some(p) = PRIMITIVES
        .iter()
        .find(|p| eq_ignoring_first_case(p, suffix))
    {
        return Some(p);
    }
    COMPLEX.iter().find(|t| **t == suffix).copied()
}

/// `dateTime` vs `DateTime`: equal except for the case of the first letter.
pub(crate) fn eq_ignoring_first_case(a: &str, b: &str) -> bool {
    let (mut ca, mut cb) = (a.chars(), b.chars());
    match (ca.next(), cb.next()) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(&y) && ca.as_str() == cb.as_str(),
        (None, None) => true,
        _ => false,
    }
}

/// The FHIRPath System type that a FHIR primitive converts to implicitly.
pub(crate) fn system_type(fhir_type: &str) -> Option<&'static str> {
    Some(match fhir_type {
        "boolean" | "Boolean" => "Boolean",
        "integer" | "unsignedInt" | "positiveInt" | "Integer" => "Integer",
        "decimal" | "Decimal" => "Decimal",
        "date" | "Date" => "Date",
        "dateTime" | "instant" | "DateTime" => "DateTime",
        "time" | "Time" => "Time",
        "Quantity" | "Age" | "Distance" | "Duration" | "Count" | "MoneyQuantity"
        | "SimpleQuantity" => "Quantity",
        "string" | "code" | "id" | "markdown" | "uri" | "url" | "canonical" | "oid" | "uuid"
        | "base64Binary" | "xhtml" | "String" => "String",
        _ => return None,
    })
}

/// Base types assumed when the model has none to offer.
pub(crate) fn builtin_base(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "Age" | "Distance" | "Duration" | "Count" | "MoneyQuantity" | "SimpleQuantity" => {
            "Quantity"
        }
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "unsignedInt" | "positiveInt" => "integer",
        "DomainResource" => "Resource",
        "Bundle" | "Binary" | "Parameters" => "Resource",
        "Resource" | "Element" => return None,
        t if t.starts_with(|c: char| c.is_ascii_lowercase()) => "Element",
        t if COMPLEX.contains(&t) => "Element",
        // Unknown capitalised names are most likely resource types.
        t if t.chars().all(|c| c.is_ascii_alphanumeric()) => "DomainResource",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_map_to_type_codes() {
        assert_eq!(known_suffix_type("DateTime"), Some("dateTime"));
        assert_eq!(known_suffix_type("Quantity"), Some("Quantity"));
        assert_eq!(known_suffix_type("Base64Binary"), Some("base64Binary"));
        assert_eq!(known_suffix_type("Patient"), None);
        assert_eq!(known_suffix_type("Integer"), Some("integer"));
        assert_eq!(intern("HumanName"), Some("HumanName"));
        assert!(eq_ignoring_first_case("string", "String"));
        assert!(!eq_ignoring_first_case("string", "Strings"));
    }
}
