//! Decompressing and indexing the generated definition files.

use std::collections::HashMap;
use std::io::Read;

use phip_fhirpath::Expression;
use serde::Deserialize;
use serde_json::Value;

use super::{
    union, Definitions, ElementDef, ParseFailure, SearchParamDef, TypeInfo, TypeKind, TypeParams,
};
use crate::search::ParamType;

static TYPES_GZ: &[u8] = include_bytes!("../../defs/types.json.gz");
static SEARCH_PARAMS_GZ: &[u8] = include_bytes!("../../defs/search-parameters.json.gz");
static COMPARTMENT_GZ: &[u8] = include_bytes!("../../defs/compartment-patient.json.gz");

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 16);
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("embedded definitions are valid gzip");
    out
}

#[derive(Deserialize)]
struct RawTypes {
    types: HashMap<String, RawType>,
}

#[derive(Deserialize)]
struct RawType {
    kind: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default, rename = "abstract")]
    is_abstract: bool,
    #[serde(default)]
    constraint: bool,
    #[serde(default)]
    regex: Option<String>,
    elements: Vec<RawElement>,
}

#[derive(Deserialize)]
struct RawElement {
    n: String,
    t: Vec<String>,
    min: u32,
    max: Value,
    #[serde(default)]
    ch: u8,
    #[serde(default)]
    s: u8,
    #[serde(default)]
    m: u8,
    #[serde(default)]
    r: Vec<String>,
}

#[derive(Deserialize)]
struct RawParams {
    parameters: Vec<RawParam>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParam {
    code: String,
    url: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    param_type: ParamType,
    #[serde(default)]
    expression: Option<String>,
    #[serde(default)]
    target: Vec<String>,
    #[serde(default)]
    component: Vec<RawComponent>,
    #[serde(default)]
    multiple_or: Option<bool>,
    #[serde(default)]
    multiple_and: Option<bool>,
    #[serde(default)]
    modifier: Vec<String>,
    #[serde(default)]
    comparator: Vec<String>,
}

#[derive(Deserialize)]
struct RawComponent {
    definition: String,
    expression: String,
}

#[derive(Deserialize)]
struct RawCompartment {
    resources: HashMap<String, Vec<String>>,
}

fn convert_type(name: String, raw: RawType) -> TypeInfo {
    let kind = match raw.kind.as_str() {
        "primitive-type" => TypeKind::Primitive,
        "complex-type" => TypeKind::Complex,
        "resource" => TypeKind::Resource,
        "backbone" => TypeKind::Backbone,
        other => panic!("unknown type kind {other} in embedded definitions"),
    };
    let elements = raw
        .elements
        .into_iter()
        .map(|e| ElementDef {
            name: e.n,
            types: e.t,
            min: e.min,
            max: e.max.as_u64().map(|m| m as u32),
            is_choice: e.ch != 0,
            is_summary: e.s != 0,
            is_modifier: e.m != 0,
            targets: e.r,
        })
        .collect();
    let mut info = TypeInfo {
        name,
        kind,
        base: raw.base,
        is_abstract: raw.is_abstract,
        is_constraint: raw.constraint,
        regex: raw.regex,
        elements,
        json_names: HashMap::new(),
    };
    info.index_json_names();
    info
}

/// Compiles one expression, recording a failure.
fn compile(
    source: &str,
    url: &str,
    resource_type: Option<&str>,
    failures: &mut Vec<ParseFailure>,
) -> Option<Expression> {
    match Expression::parse(source) {
        Ok(expr) => Some(expr),
        Err(err) => {
            failures.push(ParseFailure {
                url: url.to_owned(),
                resource_type: resource_type.map(str::to_owned),
                expression: source.to_owned(),
                error: err.to_string(),
            });
            None
        }
    }
}

fn build_param(
    raw: &RawParam,
    resource_type: Option<&str>,
    is_type: &dyn Fn(&str) -> bool,
    failures: &mut Vec<ParseFailure>,
) -> SearchParamDef {
    let compiled = raw.expression.as_deref().and_then(|full| {
        let source = match resource_type {
            Some(rt) => union::restrict_to_type(full, rt, is_type),
            None => full.to_owned(),
        };
        compile(&source, &raw.url, resource_type, failures)
    });
    let compiled_components = raw
        .component
        .iter()
        .map(|c| {
            let expr = compile(&c.expression, &raw.url, resource_type, failures);
            (c.definition.clone(), expr)
        })
        .collect();
    SearchParamDef {
        code: raw.code.clone(),
        url: raw.url.clone(),
        param_type: raw.param_type,
        expression: raw.expression.clone(),
        targets: raw.target.clone(),
        components: raw
            .component
            .iter()
            .map(|c| (c.definition.clone(), c.expression.clone()))
            .collect(),
        compiled,
        compiled_components,
        base: raw.base.clone(),
        comparators: raw.comparator.clone(),
        modifiers: raw.modifier.clone(),
        multiple_or: raw.multiple_or,
        multiple_and: raw.multiple_and,
    }
}

pub(super) fn load() -> Definitions {
    let raw_types: RawTypes =
        serde_json::from_slice(&gunzip(TYPES_GZ)).expect("embedded types.json is valid");
    let types: HashMap<String, TypeInfo> = raw_types
        .types
        .into_iter()
        .map(|(name, raw)| {
            let info = convert_type(name.clone(), raw);
            (name, info)
        })
        .collect();
    let mut resource_types: Vec<String> = types
        .values()
        .filter(|t| t.kind == TypeKind::Resource && !t.is_abstract)
        .map(|t| t.name.clone())
        .collect();
    resource_types.sort_unstable();

    let raw_params: RawParams = serde_json::from_slice(&gunzip(SEARCH_PARAMS_GZ))
        .expect("embedded search-parameters.json is valid");
    let is_type = |name: &str| {
        types
            .get(name)
            .is_some_and(|t| t.kind == TypeKind::Resource)
    };
    let mut failures = Vec::new();

    let mut params_by_url = HashMap::with_capacity(raw_params.parameters.len());
    for raw in &raw_params.parameters {
        let def = build_param(raw, None, &is_type, &mut failures);
        params_by_url.insert(raw.url.clone(), def);
    }

    // Every resource type (abstract ones too, so `Resource` lists the common parameters).
    let mut all_resource_types: Vec<&str> = types
        .values()
        .filter(|t| t.kind == TypeKind::Resource)
        .map(|t| t.name.as_str())
        .collect();
    all_resource_types.sort_unstable();
    let mut params_by_type = HashMap::with_capacity(all_resource_types.len());
    let mut by_base: HashMap<&str, Vec<&RawParam>> = HashMap::new();
    for raw in &raw_params.parameters {
        for base in &raw.base {
            by_base.entry(base.as_str()).or_default().push(raw);
        }
    }
    for &rt in &all_resource_types {
        // The type's own parameters and those of its ancestors (DomainResource, Resource).
        let mut applicable: Vec<&RawParam> = Vec::new();
        let mut current = Some(rt);
        while let Some(name) = current {
            applicable.extend(by_base.get(name).into_iter().flatten());
            current = types.get(name).and_then(|t| t.base.as_deref());
        }
        applicable.sort_by(|a, b| a.code.cmp(&b.code).then_with(|| a.url.cmp(&b.url)));
        let mut tp = TypeParams::default();
        for raw in applicable {
            if tp.by_code.contains_key(&raw.code) {
                // Two definitions with one code for a type would be a spec error; first wins.
                continue;
            }
            let def = build_param(raw, Some(rt), &is_type, &mut failures);
            tp.by_code.insert(raw.code.clone(), tp.params.len());
            tp.params.push(def);
        }
        params_by_type.insert(rt.to_owned(), tp);
    }

    let compartment: RawCompartment = serde_json::from_slice(&gunzip(COMPARTMENT_GZ))
        .expect("embedded compartment-patient.json is valid");

    Definitions {
        types,
        resource_types,
        params_by_type,
        params_by_url,
        patient_compartment: compartment.resources,
        parse_failures: failures,
    }
}
