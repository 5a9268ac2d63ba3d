//! Extraction of search index entries from a resource, driven by the R4 SearchParameters.
//!
//! Each parameter's compiled FHIRPath expression is evaluated on the resource, and each result
//! item is converted by parameter type and FHIR data type as laid out in the R4 "Search"
//! page (§3.1.1.4, "Search parameter types"). Values that cannot be converted are skipped:
//! extraction runs on every write and must never fail because of odd data.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use phip_fhirpath::{Item, ModelInfo};
use serde_json::{Map, Value};

use super::values::{normalize_string, parse_date_range, parse_number_range};
use super::{IndexEntry, IndexValue, ParamType};
use crate::definitions::SearchParamDef;

/// Currency code system used for `Money` quantities.
pub const ISO_4217: &str = "urn:iso:std:iso:4217";

/// Cap on the combinations one composite occurrence may produce, so that a resource with many
/// repetitions in each component cannot blow up the index.
const MAX_COMPOSITE_COMBINATIONS: usize = 256;

/// Extracts every index entry of every search parameter defined for the resource's type
/// (including the `Resource` and `DomainResource` parameters such as `_id`, `_lastUpdated`,
/// `_profile`, `_tag`, `_security`, `_source`).
///
/// Entries are grouped by parameter (in the definitions' order) and deduplicated within a
/// parameter. Besides the plain mapping, a token parameter on an `Identifier` with a `type`
/// also gets one `IndexValue::Composite([type coding token, identifier token])` per type
/// coding, which is what the `:of-type` modifier matches against.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    extract_where(resource, |_| true)
}

/// The entries [`extract`] gives for the parameters named in `codes` alone, at the cost of
/// evaluating only those (the store places a new resource by its compartment before the
/// full extraction).
pub fn extract_params(resource: &Value, codes: &[String]) -> Vec<IndexEntry> {
    extract_where(resource, |code| codes.iter().any(|c| c == code))
}

fn extract_where(resource: &Value, wanted: impl Fn(&str) -> bool) -> Vec<IndexEntry> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let defs = crate::r4();
    let model = defs.model();
    let mut entries = Vec::new();
    let mut values = Vec::new();
    for def in defs.search_params(resource_type) {
        if !wanted(&def.code) {
            continue;
        }
        let Some(expr) = &def.compiled else {
            continue;
        };
        let Ok(items) = expr.evaluate(resource, model) else {
            continue;
        };
        values.clear();
        match def.param_type {
            ParamType::Composite => composite_values(def, &items, resource, model, &mut values),
            ParamType::Special => {}
            param_type => {
                for item in &items {
                    convert_item(param_type, item, &mut values);
                }
            }
        }
        push_unique(&def.code, &mut values, &mut entries);
    }
    entries
}

/// Converts one FHIRPath result item into the index values of a parameter of type
/// `param_type`, appending them to `out`. Unconvertible items add nothing.
pub fn convert_item(param_type: ParamType, item: &Item<'_>, out: &mut Vec<IndexValue>) {
    let type_name = item.type_name.as_deref().map(fhir_type_code);
    convert_value(param_type, &item.value, type_name, out);
}

/// Above this many values a parameter is deduplicated by hash rather than by linear scan, so
/// that a resource with thousands of codes (a CodeSystem) stays linear.
const LINEAR_DEDUPE_LIMIT: usize = 16;

fn push_unique(code: &str, values: &mut Vec<IndexValue>, entries: &mut Vec<IndexEntry>) {
    let first = entries.len();
    if values.len() <= LINEAR_DEDUPE_LIMIT {
        for value in values.drain(..) {
            if !entries[first..].iter().any(|e| e.value == value) {
                entries.push(IndexEntry {
                    param: code.to_owned(),
                    value,
                });
            }
        }
        return;
    }
    let mut seen: HashMap<u64, Vec<usize>> = HashMap::with_capacity(values.len());
    for value in values.drain(..) {
        let key = value_hash(&value);
        let same = seen.entry(key).or_default();
        if same.iter().any(|&i| entries[i].value == value) {
            continue;
        }
        same.push(entries.len());
        entries.push(IndexEntry {
            param: code.to_owned(),
            value,
        });
    }
}

/// A hash consistent with `IndexValue`'s `PartialEq` (floats by bit pattern; `0.0`/`-0.0` may
/// hash apart, which only costs a duplicate row).
fn value_hash(value: &IndexValue) -> u64 {
    fn feed(value: &IndexValue, h: &mut DefaultHasher) {
        std::mem::discriminant(value).hash(h);
        match value {
            IndexValue::String { normalized, exact } => (normalized, exact).hash(h),
            IndexValue::Token { system, code, text } => (system, code, text).hash(h),
            IndexValue::Date { start, end } => (start, end).hash(h),
            IndexValue::Number { value, low, high } => {
                (value.to_bits(), low.to_bits(), high.to_bits()).hash(h)
            }
            IndexValue::Quantity {
                value,
                low,
                high,
                system,
                code,
                unit,
            } => (
                value.to_bits(),
                low.to_bits(),
                high.to_bits(),
                system,
                code,
                unit,
            )
                .hash(h),
            IndexValue::Reference {
                target_type,
                target_id,
                url,
                version,
                identifier,
            } => (target_type, target_id, url, version, identifier).hash(h),
            IndexValue::Uri(u) => u.hash(h),
            IndexValue::Composite(parts) => {
                for part in parts {
                    feed(part, h);
                }
            }
        }
    }
    let mut h = DefaultHasher::new();
    feed(value, &mut h);
    h.finish()
}

fn composite_values(
    def: &SearchParamDef,
    items: &[Item<'_>],
    resource: &Value,
    model: &dyn ModelInfo,
    out: &mut Vec<IndexValue>,
) {
    let defs = crate::r4();
    if def.compiled_components.is_empty() {
        return;
    }
    for item in items {
        let mut per_component: Vec<Vec<IndexValue>> = Vec::new();
        for (url, expr) in &def.compiled_components {
            let (Some(expr), Some(component_def)) = (expr, defs.search_param_by_url(url)) else {
                return;
            };
            let Ok(component_items) = expr.evaluate_on(item, resource, model) else {
                return;
            };
            let mut values = Vec::new();
            for component_item in &component_items {
                convert_item(component_def.param_type, component_item, &mut values);
            }
            dedupe(&mut values);
            per_component.push(values);
        }
        combine(&per_component, out);
    }
}

/// Appends the cartesian product of the component values (one `Composite` per combination).
fn combine(per_component: &[Vec<IndexValue>], out: &mut Vec<IndexValue>) {
    let total = per_component
        .iter()
        .try_fold(1usize, |acc, v| acc.checked_mul(v.len()));
    let Some(total) = total else { return };
    if total == 0 {
        return;
    }
    let total = total.min(MAX_COMPOSITE_COMBINATIONS);
    let mut indices = vec![0usize; per_component.len()];
    for _ in 0..total {
        out.push(IndexValue::Composite(
            indices
                .iter()
                .zip(per_component)
                .map(|(&i, values)| values[i].clone())
                .collect(),
        ));
        // Odometer increment, last component fastest.
        for (slot, values) in indices.iter_mut().zip(per_component).rev() {
            *slot += 1;
            if *slot < values.len() {
                break;
            }
            *slot = 0;
        }
    }
}

fn dedupe(values: &mut Vec<IndexValue>) {
    let mut i = 0;
    while i < values.len() {
        if values[..i].contains(&values[i]) {
            values.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Maps the type names the evaluator may report to FHIR type codes (`System.String` →
/// `string`, `FHIR.Quantity` → `Quantity`).
fn fhir_type_code(name: &str) -> &str {
    if let Some(system) = name.strip_prefix("System.") {
        return match system {
            "String" => "string",
            "Boolean" => "boolean",
            "Integer" => "integer",
            "Decimal" => "decimal",
            "Date" => "date",
            "DateTime" => "dateTime",
            "Time" => "time",
            "Quantity" => "Quantity",
            _ => system,
        };
    }
    name.strip_prefix("FHIR.").unwrap_or(name)
}

/// Converts a JSON value whose FHIR type is `type_name` (inferred from its shape when `None`).
fn convert_value(
    param_type: ParamType,
    value: &Value,
    type_name: Option<&str>,
    out: &mut Vec<IndexValue>,
) {
    let first = out.len();
    match param_type {
        ParamType::String => string_values(value, type_name, out),
        ParamType::Token => token_values(value, type_name, out),
        ParamType::Date => date_values(value, type_name, out),
        ParamType::Number => number_values(value, type_name, out),
        ParamType::Quantity => quantity_values(value, type_name, out),
        ParamType::Reference => reference_values(value, type_name, out),
        ParamType::Uri => {
            if let Some(s) = non_empty_str(value) {
                out.push(IndexValue::Uri(s.to_owned()));
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
    out[first..]
        .iter_mut()
        .for_each(IndexValue::cap_indexed_text);
}

fn non_empty_str(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.trim().is_empty())
}

fn str_field<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    obj.get(key).and_then(non_empty_str)
}

/// The strings of a field that may be a single string or an array of strings.
fn str_list<'v>(obj: &'v Map<String, Value>, key: &str) -> impl Iterator<Item = &'v str> {
    let (single, many) = match obj.get(key) {
        Some(Value::Array(a)) => (None, a.as_slice()),
        Some(v) => (non_empty_str(v), &[][..]),
        None => (None, &[][..]),
    };
    single
        .into_iter()
        .chain(many.iter().filter_map(non_empty_str))
}

/// Guesses the FHIR type of a complex value from its properties, for items the evaluator could
/// not type.
fn infer_type(obj: &Map<String, Value>) -> &'static str {
    let has = |k: &str| obj.contains_key(k);
    if has("coding") {
        "CodeableConcept"
    } else if has("family") || has("given") || has("prefix") || has("suffix") {
        "HumanName"
    } else if has("line") || has("city") || has("postalCode") || has("country") || has("state") {
        "Address"
    } else if has("reference") {
        "Reference"
    } else if has("currency") {
        "Money"
    } else if has("low") || has("high") {
        "Range"
    } else if has("start") || has("end") {
        "Period"
    } else if has("event") || has("repeat") {
        "Timing"
    } else if has("origin") || has("data") {
        "SampledData"
    } else if has("value") {
        match obj.get("value") {
            Some(Value::Number(_)) => "Quantity",
            _ if has("type") || has("assigner") => "Identifier",
            _ if matches!(
                str_field(obj, "system"),
                Some("phone" | "fax" | "email" | "pager" | "url" | "sms" | "other")
            ) =>
            {
                "ContactPoint"
            }
            _ => "Identifier",
        }
    } else if has("system") || has("code") || has("display") {
        "Coding"
    } else if has("identifier") {
        "Reference"
    } else if has("text") {
        "CodeableConcept"
    } else {
        ""
    }
}

fn complex_type<'t>(obj: &Map<String, Value>, type_name: Option<&'t str>) -> &'t str {
    match type_name {
        Some(t) if t.starts_with(|c: char| c.is_ascii_uppercase()) && !t.contains('.') => t,
        _ => infer_type(obj),
    }
}

fn string_entry(s: &str) -> IndexValue {
    IndexValue::String {
        normalized: normalize_string(s),
        exact: s.to_owned(),
    }
}

fn string_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) if !s.trim().is_empty() => out.push(string_entry(s)),
        Value::Object(obj) => {
            let fields: &[&str] = match complex_type(obj, type_name) {
                "HumanName" => &["family", "given", "prefix", "suffix", "text"],
                "Address" => &[
                    "line",
                    "city",
                    "district",
                    "state",
                    "postalCode",
                    "country",
                    "text",
                ],
                _ => &[],
            };
            for field in fields {
                for s in str_list(obj, field) {
                    out.push(string_entry(s));
                }
            }
        }
        _ => {}
    }
}

fn token(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.map(str::to_owned),
        code: code.map(str::to_owned),
        text: text.map(normalize_string),
    }
}

fn coding_token(obj: &Map<String, Value>) -> Option<IndexValue> {
    let system = str_field(obj, "system");
    let code = str_field(obj, "code");
    let display = str_field(obj, "display");
    (system.is_some() || code.is_some() || display.is_some()).then(|| token(system, code, display))
}

fn token_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) if !s.trim().is_empty() => out.push(token(None, Some(s), None)),
        Value::Bool(b) => out.push(token(None, Some(if *b { "true" } else { "false" }), None)),
        Value::Number(n) => out.push(token(None, Some(&n.to_string()), None)),
        Value::Object(obj) => match complex_type(obj, type_name) {
            "Coding" => out.extend(coding_token(obj)),
            "CodeableConcept" => {
                if let Some(Value::Array(codings)) = obj.get("coding") {
                    for coding in codings.iter().filter_map(Value::as_object) {
                        out.extend(coding_token(coding));
                    }
                }
                if let Some(text) = str_field(obj, "text") {
                    out.push(token(None, None, Some(text)));
                }
            }
            "Identifier" => {
                let system = str_field(obj, "system");
                let code = str_field(obj, "value");
                let type_obj = obj.get("type").and_then(Value::as_object);
                let type_text = type_obj.and_then(|t| str_field(t, "text"));
                if system.is_none() && code.is_none() {
                    return;
                }
                out.push(token(system, code, type_text));
                let Some(code) = code else { return };
                let type_codings = type_obj
                    .and_then(|t| t.get("coding"))
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice);
                for coding in type_codings.iter().filter_map(Value::as_object) {
                    if let Some(type_token) = coding_token(coding) {
                        out.push(IndexValue::Composite(vec![
                            type_token,
                            token(system, Some(code), None),
                        ]));
                    }
                }
            }
            "ContactPoint" => {
                if let Some(v) = str_field(obj, "value") {
                    out.push(token(None, Some(v), None));
                }
            }
            _ => {}
        },
        _ => {}
    }
}

fn date_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) => {
            if let Some((start, end)) = parse_date_range(s) {
                out.push(IndexValue::Date { start, end });
            }
        }
        Value::Object(obj) => {
            match complex_type(obj, type_name) {
                "Period" => out
                    .extend(period_range(obj).map(|(start, end)| IndexValue::Date { start, end })),
                "Timing" => out
                    .extend(timing_range(obj).map(|(start, end)| IndexValue::Date { start, end })),
                _ => {}
            }
        }
        _ => {}
    }
}

/// A Period's range; open ends extend to the end of time. `None` when neither end is usable.
fn period_range(obj: &Map<String, Value>) -> Option<(i64, i64)> {
    let start = str_field(obj, "start").map(parse_date_range);
    let end = str_field(obj, "end").map(parse_date_range);
    match (start, end) {
        (None, None) | (Some(None), _) | (_, Some(None)) => None,
        (start, end) => Some((
            start.flatten().map_or(i64::MIN, |r| r.0),
            end.flatten().map_or(i64::MAX, |r| r.1),
        )),
    }
}

/// A Timing's outer limits: its events and its `repeat.boundsPeriod` (the schedule details
/// are ignored, as the spec says).
fn timing_range(obj: &Map<String, Value>) -> Option<(i64, i64)> {
    let mut range: Option<(i64, i64)> = None;
    let mut widen = |(s, e): (i64, i64)| {
        range = Some(range.map_or((s, e), |(rs, re)| (rs.min(s), re.max(e))));
    };
    for event in str_list(obj, "event") {
        if let Some(r) = parse_date_range(event) {
            widen(r);
        }
    }
    if let Some(bounds) = obj
        .get("repeat")
        .and_then(|r| r.get("boundsPeriod"))
        .and_then(Value::as_object)
    {
        if let Some(r) = period_range(bounds) {
            widen(r);
        }
    }
    range
}

/// The number as written (serde_json keeps the literal, so `1.50` keeps its precision).
fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.trim().to_owned()),
        _ => None,
    }
}

fn number_range(value: &Value) -> Option<(f64, f64, f64)> {
    parse_number_range(&number_text(value)?)
}

fn number_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::Number(_) | Value::String(_) => {
            if let Some((value, low, high)) = number_range(value) {
                out.push(IndexValue::Number { value, low, high });
            }
        }
        Value::Object(_) => {
            // A Range (e.g. `RiskAssessment.prediction.probability`) or a Quantity: its bounds.
            let mut quantities = Vec::new();
            quantity_values(value, type_name, &mut quantities);
            for q in quantities {
                if let IndexValue::Quantity {
                    value, low, high, ..
                } = q
                {
                    out.push(IndexValue::Number { value, low, high });
                }
            }
        }
        _ => {}
    }
}

/// A Quantity's value and range, honouring its comparator (`<5` is open below).
fn quantity_range(obj: &Map<String, Value>) -> Option<(f64, f64, f64)> {
    let (value, mut low, mut high) = number_range(obj.get("value")?)?;
    match str_field(obj, "comparator") {
        Some("<" | "<=") => low = f64::MIN,
        Some(">" | ">=") => high = f64::MAX,
        _ => {}
    }
    Some((value, low, high))
}

fn quantity_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Number(_) => {
            if let Some((value, low, high)) = number_range(value) {
                out.push(IndexValue::Quantity {
                    value,
                    low,
                    high,
                    system: None,
                    code: None,
                    unit: None,
                });
            }
            return;
        }
        _ => return,
    };
    let owned = |s: Option<&str>| s.map(str::to_owned);
    match complex_type(obj, type_name) {
        "Money" => {
            if let Some((value, low, high)) = obj.get("value").and_then(number_range) {
                out.push(IndexValue::Quantity {
                    value,
                    low,
                    high,
                    system: Some(ISO_4217.to_owned()),
                    code: owned(str_field(obj, "currency")),
                    unit: None,
                });
            }
        }
        "Range" => {
            let low_q = obj.get("low").and_then(Value::as_object);
            let high_q = obj.get("high").and_then(Value::as_object);
            let low_r = low_q.and_then(quantity_range);
            let high_r = high_q.and_then(quantity_range);
            let Some(value) = low_r.or(high_r).map(|r| r.0) else {
                return;
            };
            let Some(units) = low_q.filter(|_| low_r.is_some()).or(high_q) else {
                return;
            };
            out.push(IndexValue::Quantity {
                value,
                low: low_r.map_or(f64::MIN, |r| r.1),
                high: high_r.map_or(f64::MAX, |r| r.2),
                system: owned(str_field(units, "system")),
                code: owned(str_field(units, "code")),
                unit: owned(str_field(units, "unit")),
            });
        }
        "SampledData" => {}
        _ => {
            if let Some((value, low, high)) = quantity_range(obj) {
                out.push(IndexValue::Quantity {
                    value,
                    low,
                    high,
                    system: owned(str_field(obj, "system")),
                    code: owned(str_field(obj, "code")),
                    unit: owned(str_field(obj, "unit")),
                });
            }
        }
    }
}

fn reference_values(value: &Value, type_name: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) => out.extend(parse_reference(s)),
        Value::Object(obj) => {
            // A resource (e.g. `Bundle.entry[0].resource`) is not a reference.
            if obj.contains_key("resourceType") || complex_type(obj, type_name) != "Reference" {
                return;
            }
            let identifier = obj
                .get("identifier")
                .and_then(Value::as_object)
                .and_then(|i| {
                    let value = str_field(i, "value")?;
                    Some((str_field(i, "system").map(str::to_owned), value.to_owned()))
                });
            let parsed = str_field(obj, "reference").and_then(parse_reference);
            match (parsed, identifier) {
                (
                    Some(IndexValue::Reference {
                        target_type,
                        target_id,
                        url,
                        version,
                        ..
                    }),
                    identifier,
                ) => out.push(IndexValue::Reference {
                    target_type,
                    target_id,
                    url,
                    version,
                    identifier,
                }),
                (_, Some(identifier)) => out.push(IndexValue::Reference {
                    target_type: str_field(obj, "type").map(str::to_owned),
                    target_id: None,
                    url: None,
                    version: None,
                    identifier: Some(identifier),
                }),
                _ => {}
            }
        }
        _ => {}
    }
}

/// Parses a reference or canonical as written into an `IndexValue::Reference`:
/// `Type/id[/_history/v]` (local), an absolute URL (kept in `url`, with type and id when the
/// path ends in `Type/id[/_history/v]`), `urn:uuid:…`/`urn:oid:…` (in `url`), and
/// `url|version` canonicals. Contained (`#id`) and conditional (`Type?…`) references give
/// `None`.
pub fn parse_reference(s: &str) -> Option<IndexValue> {
    let s = s.trim();
    if s.is_empty() || s.starts_with('#') {
        return None;
    }
    let (s, canonical_version) = match s.split_once('|') {
        Some((url, version)) => (url, Some(version.to_owned()).filter(|v| !v.is_empty())),
        None => (s, None),
    };
    let absolute = s.contains("://") || s.starts_with("urn:");
    if !absolute && s.contains('?') {
        return None;
    }
    let path = if absolute {
        s.split(['?', '#']).next().unwrap_or(s)
    } else {
        s
    };
    let segments: Vec<&str> = path.split('/').collect();
    let tail = if !absolute || s.contains("://") {
        type_id_tail(&segments, absolute)
    } else {
        None
    };
    // A relative reference that is no `Type/id` cannot be resolved; it is kept as written in
    // `url` so that an exact search still finds it.
    let (target_type, target_id, history) = match tail {
        Some((t, id, v)) => (
            Some(t.to_owned()),
            Some(id.to_owned()),
            v.map(str::to_owned),
        ),
        None => (None, None, None),
    };
    Some(IndexValue::Reference {
        target_type,
        target_id,
        url: (absolute || tail.is_none()).then(|| s.to_owned()),
        version: canonical_version.or(history),
        identifier: None,
    })
}

/// Finds `Type/id` or `Type/id/_history/v` at the end of a reference's path segments. A local
/// reference must consist of exactly those segments.
fn type_id_tail<'s>(
    segments: &[&'s str],
    absolute: bool,
) -> Option<(&'s str, &'s str, Option<&'s str>)> {
    let defs = crate::r4();
    let n = segments.len();
    let candidates = [
        (n >= 4 && segments[n - 2] == "_history").then(|| (n - 4, Some(segments[n - 1]))),
        (n >= 2).then(|| (n - 2, None)),
    ];
    for (at, version) in candidates.into_iter().flatten() {
        if !absolute && at != 0 {
            continue;
        }
        let (ty, id) = (segments[at], segments[at + 1]);
        if defs.is_resource_type(ty) && is_valid_id(id) {
            return Some((ty, id, version.filter(|v| !v.is_empty())));
        }
    }
    None
}

/// FHIR `id`: 1–64 of `[A-Za-z0-9\-\.]`.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    fn item(value: Value, type_name: Option<&str>) -> Item<'static> {
        Item {
            value: Cow::Owned(value),
            type_name: type_name.map(|t| Cow::Owned(t.to_owned())),
        }
    }

    fn conv(param_type: ParamType, value: Value, type_name: Option<&str>) -> Vec<IndexValue> {
        let mut out = Vec::new();
        convert_item(param_type, &item(value, type_name), &mut out);
        out
    }

    fn s(n: &str, e: &str) -> IndexValue {
        IndexValue::String {
            normalized: n.into(),
            exact: e.into(),
        }
    }

    fn tok(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
        IndexValue::Token {
            system: system.map(Into::into),
            code: code.map(Into::into),
            text: text.map(Into::into),
        }
    }

    fn reference(
        target_type: Option<&str>,
        target_id: Option<&str>,
        url: Option<&str>,
        version: Option<&str>,
    ) -> IndexValue {
        IndexValue::Reference {
            target_type: target_type.map(Into::into),
            target_id: target_id.map(Into::into),
            url: url.map(Into::into),
            version: version.map(Into::into),
            identifier: None,
        }
    }

    #[test]
    fn strings() {
        assert_eq!(
            conv(ParamType::String, json!("Zoë"), Some("string")),
            vec![s("zoe", "Zoë")]
        );
        assert_eq!(
            conv(
                ParamType::String,
                json!({"use": "official", "family": "Müller", "given": ["Anna", "Lena"], "prefix": ["Dr."], "text": "Dr. Anna Müller"}),
                Some("HumanName")
            ),
            vec![
                s("muller", "Müller"),
                s("anna", "Anna"),
                s("lena", "Lena"),
                s("dr.", "Dr."),
                s("dr. anna muller", "Dr. Anna Müller"),
            ]
        );
        // Untyped: inferred from the shape.
        assert_eq!(
            conv(
                ParamType::String,
                json!({"line": ["1 Main St", "Apt 2"], "city": "Springfield", "postalCode": "12345", "country": "US"}),
                None
            ),
            vec![
                s("1 main st", "1 Main St"),
                s("apt 2", "Apt 2"),
                s("springfield", "Springfield"),
                s("12345", "12345"),
                s("us", "US"),
            ]
        );
        assert!(conv(ParamType::String, json!(""), Some("string")).is_empty());
        assert!(conv(ParamType::String, json!(12), Some("integer")).is_empty());
    }

    #[test]
    fn tokens() {
        assert_eq!(
            conv(ParamType::Token, json!("male"), Some("code")),
            vec![tok(None, Some("male"), None)]
        );
        assert_eq!(
            conv(ParamType::Token, json!(true), Some("boolean")),
            vec![tok(None, Some("true"), None)]
        );
        assert_eq!(
            conv(
                ParamType::Token,
                json!({"coding": [
                    {"system": "http://loinc.org", "code": "8867-4", "display": "Heart Rate"},
                    {"system": "http://snomed.info/sct", "code": "364075005"}
                ], "text": "Pulse"}),
                Some("CodeableConcept")
            ),
            vec![
                tok(Some("http://loinc.org"), Some("8867-4"), Some("heart rate")),
                tok(Some("http://snomed.info/sct"), Some("364075005"), None),
                tok(None, None, Some("pulse")),
            ]
        );
        assert_eq!(
            conv(
                ParamType::Token,
                json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}),
                Some("Coding")
            ),
            vec![tok(
                Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"),
                Some("AMB"),
                None
            )]
        );
        assert_eq!(
            conv(
                ParamType::Token,
                json!({"system": "phone", "value": "+1 555 0100", "use": "home"}),
                Some("ContactPoint")
            ),
            vec![tok(None, Some("+1 555 0100"), None)]
        );
        assert_eq!(
            conv(
                ParamType::Token,
                json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "Medical Record"},
                       "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}),
                Some("Identifier")
            ),
            vec![
                tok(
                    Some("urn:oid:1.2.36.146.595.217.0.1"),
                    Some("12345"),
                    Some("medical record")
                ),
                IndexValue::Composite(vec![
                    tok(
                        Some("http://terminology.hl7.org/CodeSystem/v2-0203"),
                        Some("MR"),
                        None
                    ),
                    tok(Some("urn:oid:1.2.36.146.595.217.0.1"), Some("12345"), None),
                ]),
            ]
        );
        assert!(conv(ParamType::Token, json!({}), Some("Coding")).is_empty());
    }

    #[test]
    fn dates() {
        let year = parse_date_range("2020").unwrap();
        assert_eq!(
            conv(ParamType::Date, json!("2020"), Some("date")),
            vec![IndexValue::Date {
                start: year.0,
                end: year.1
            }]
        );
        let a = parse_date_range("2020-01-01T10:00:00Z").unwrap();
        let b = parse_date_range("2020-01-03").unwrap();
        assert_eq!(
            conv(
                ParamType::Date,
                json!({"start": "2020-01-01T10:00:00Z", "end": "2020-01-03"}),
                Some("Period")
            ),
            vec![IndexValue::Date {
                start: a.0,
                end: b.1
            }]
        );
        assert_eq!(
            conv(
                ParamType::Date,
                json!({"start": "2020-01-01T10:00:00Z"}),
                None
            ),
            vec![IndexValue::Date {
                start: a.0,
                end: i64::MAX
            }]
        );
        assert_eq!(
            conv(
                ParamType::Date,
                json!({"end": "2020-01-03"}),
                Some("Period")
            ),
            vec![IndexValue::Date {
                start: i64::MIN,
                end: b.1
            }]
        );
        assert!(conv(ParamType::Date, json!({"start": "garbage"}), Some("Period")).is_empty());
        assert!(conv(ParamType::Date, json!("not a date"), Some("dateTime")).is_empty());
        let e1 = parse_date_range("2021-05-01").unwrap();
        let e2 = parse_date_range("2021-05-03T08:00:00Z").unwrap();
        assert_eq!(
            conv(
                ParamType::Date,
                json!({"event": ["2021-05-03T08:00:00Z", "2021-05-01"], "repeat": {"frequency": 1}}),
                Some("Timing")
            ),
            vec![IndexValue::Date {
                start: e1.0,
                end: e2.1
            }]
        );
    }

    #[test]
    fn numbers_and_quantities() {
        assert_eq!(
            conv(
                ParamType::Number,
                serde_json::from_str("0.80").unwrap(),
                Some("decimal")
            ),
            vec![IndexValue::Number {
                value: 0.8,
                low: 0.795,
                high: 0.805
            }]
        );
        assert_eq!(
            conv(ParamType::Number, json!(3), Some("integer")),
            vec![IndexValue::Number {
                value: 3.0,
                low: 2.5,
                high: 3.5
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                json!({"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}),
                Some("Quantity")
            ),
            vec![IndexValue::Quantity {
                value: 72.0,
                low: 71.5,
                high: 72.5,
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("/min".into()),
                unit: Some("beats/minute".into())
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                json!({"value": 5, "comparator": "<", "unit": "mg"}),
                Some("Quantity")
            ),
            vec![IndexValue::Quantity {
                value: 5.0,
                low: f64::MIN,
                high: 5.5,
                system: None,
                code: None,
                unit: Some("mg".into())
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                serde_json::from_str(r#"{"value": 12.50, "currency": "EUR"}"#).unwrap(),
                Some("Money")
            ),
            vec![IndexValue::Quantity {
                value: 12.5,
                low: 12.495,
                high: 12.505,
                system: Some(ISO_4217.into()),
                code: Some("EUR".into()),
                unit: None
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                json!({"low": {"value": 40, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
                       "high": {"value": 60, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}),
                Some("Range")
            ),
            vec![IndexValue::Quantity {
                value: 40.0,
                low: 39.5,
                high: 60.5,
                system: Some("http://unitsofmeasure.org".into()),
                code: Some("a".into()),
                unit: Some("a".into())
            }]
        );
        assert_eq!(
            conv(
                ParamType::Quantity,
                json!({"high": {"value": 6, "code": "a"}}),
                Some("Range")
            ),
            vec![IndexValue::Quantity {
                value: 6.0,
                low: f64::MIN,
                high: 6.5,
                system: None,
                code: Some("a".into()),
                unit: None
            }]
        );
        assert!(conv(
            ParamType::Quantity,
            json!({"origin": {"value": 0}, "data": "1 2"}),
            Some("SampledData")
        )
        .is_empty());
        assert!(conv(ParamType::Quantity, json!({"unit": "mg"}), Some("Quantity")).is_empty());
    }

    #[test]
    fn references() {
        assert_eq!(
            conv(
                ParamType::Reference,
                json!({"reference": "Patient/123"}),
                Some("Reference")
            ),
            vec![reference(Some("Patient"), Some("123"), None, None)]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!({"reference": "Patient/123/_history/4", "display": "x"}),
                Some("Reference")
            ),
            vec![reference(Some("Patient"), Some("123"), None, Some("4"))]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!({"reference": "http://example.org/fhir/Practitioner/p-1"}),
                Some("Reference")
            ),
            vec![reference(
                Some("Practitioner"),
                Some("p-1"),
                Some("http://example.org/fhir/Practitioner/p-1"),
                None
            )]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!({"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}),
                Some("Reference")
            ),
            vec![reference(
                None,
                None,
                Some("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"),
                None
            )]
        );
        assert!(conv(
            ParamType::Reference,
            json!({"reference": "#med1"}),
            Some("Reference")
        )
        .is_empty());
        assert_eq!(
            conv(
                ParamType::Reference,
                json!({"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234"}, "type": "Practitioner"}),
                Some("Reference")
            ),
            vec![IndexValue::Reference {
                target_type: Some("Practitioner".into()),
                target_id: None,
                url: None,
                version: None,
                identifier: Some((Some("http://hl7.org/fhir/sid/us-npi".into()), "1234".into()))
            }]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!("http://hl7.org/fhir/Questionnaire/phq-9|1.2"),
                Some("canonical")
            ),
            vec![reference(
                Some("Questionnaire"),
                Some("phq-9"),
                Some("http://hl7.org/fhir/Questionnaire/phq-9"),
                Some("1.2")
            )]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!("http://example.org/fhir/StructureDefinition/x"),
                Some("canonical")
            ),
            vec![reference(
                Some("StructureDefinition"),
                Some("x"),
                Some("http://example.org/fhir/StructureDefinition/x"),
                None
            )]
        );
        assert_eq!(
            conv(
                ParamType::Reference,
                json!("http://example.org/vs/abc"),
                Some("canonical")
            ),
            vec![reference(
                None,
                None,
                Some("http://example.org/vs/abc"),
                None
            )]
        );
        assert!(conv(
            ParamType::Reference,
            json!({"reference": "Patient?identifier=x|1"}),
            Some("Reference")
        )
        .is_empty());
        assert!(conv(
            ParamType::Reference,
            json!({"resourceType": "Patient", "id": "1"}),
            Some("Patient")
        )
        .is_empty());
    }

    #[test]
    fn uris() {
        assert_eq!(
            conv(
                ParamType::Uri,
                json!("http://example.org/fhir/ValueSet/x|2.0"),
                Some("canonical")
            ),
            vec![IndexValue::Uri(
                "http://example.org/fhir/ValueSet/x|2.0".into()
            )]
        );
        assert!(conv(ParamType::Uri, json!(" "), Some("uri")).is_empty());
    }

    #[test]
    fn combines_components() {
        let a = tok(None, Some("a"), None);
        let b = tok(None, Some("b"), None);
        let x = IndexValue::Uri("x".into());
        let mut out = Vec::new();
        combine(&[vec![a.clone(), b.clone()], vec![x.clone()]], &mut out);
        assert_eq!(
            out,
            vec![
                IndexValue::Composite(vec![a.clone(), x.clone()]),
                IndexValue::Composite(vec![b, x.clone()])
            ]
        );
        out.clear();
        combine(&[vec![a], vec![]], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn dedupes_many_values_by_hash() {
        let mut values: Vec<IndexValue> = (0..100)
            .map(|i| tok(Some("s"), Some(&format!("c{}", i % 40)), None))
            .collect();
        values.push(IndexValue::Number {
            value: 1.0,
            low: 0.5,
            high: 1.5,
        });
        values.push(IndexValue::Number {
            value: 1.0,
            low: 0.5,
            high: 1.5,
        });
        let mut entries = vec![IndexEntry {
            param: "other".into(),
            value: tok(Some("s"), Some("c0"), None),
        }];
        push_unique("code", &mut values, &mut entries);
        assert_eq!(entries.len(), 1 + 40 + 1);
        assert_eq!(entries[1].value, tok(Some("s"), Some("c0"), None));
        assert_eq!(entries[40].value, tok(Some("s"), Some("c39"), None));
        assert!(entries[1..].iter().all(|e| e.param == "code"));
        assert!(values.is_empty());
    }

    #[test]
    fn type_codes() {
        assert_eq!(fhir_type_code("System.String"), "string");
        assert_eq!(fhir_type_code("FHIR.Quantity"), "Quantity");
        assert_eq!(fhir_type_code("dateTime"), "dateTime");
    }
}
