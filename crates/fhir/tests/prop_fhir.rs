//! Property-based fuzzing of the resource validator, the search-parameter parser and the
//! FHIRPath engine over the real R4 definitions.
//!
//! Seeds: the committed Synthea sample (fixtures/synthea-10-patients) and the FHIRPath
//! expressions of every R4 SearchParameter. Properties: nothing panics; errors are
//! OperationOutcomes with error issues; the validator accepts what it serialises; search
//! value escapes round-trip.

use std::io::{BufRead, BufReader};
use std::sync::OnceLock;

use phip_fhir::search::parse;
use phip_fhir::search::query::{split_escaped, unescape};
use phip_fhir::validate::validate_resource;
use phip_fhirpath::Expression;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

/// Cases per property: `PROPTEST_CASES` overrides (CI's smoke run uses fewer).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resources of the Synthea sample, a bounded number per file so the corpus loads quickly.
fn corpus() -> &'static [Value] {
    static CORPUS: OnceLock<Vec<Value>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/synthea-10-patients"
        );
        let mut resources = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("fixtures/synthea-10-patients")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
            .collect();
        files.sort();
        for path in files {
            let file = std::fs::File::open(&path).expect("open");
            let reader = BufReader::new(flate2::read::GzDecoder::new(file));
            for line in reader.lines().take(40) {
                let line = line.expect("line");
                resources.push(serde_json::from_str(&line).expect("json"));
            }
        }
        assert!(resources.len() > 100, "the Synthea sample is missing");
        resources
    })
}

/// FHIRPath expressions of all R4 search parameters.
fn expressions() -> &'static [String] {
    static EXPRESSIONS: OnceLock<Vec<String>> = OnceLock::new();
    EXPRESSIONS.get_or_init(|| {
        let defs = phip_fhir::r4();
        let mut out: Vec<String> = defs
            .resource_types()
            .flat_map(|t| defs.search_params(t))
            .filter_map(|p| p.expression.clone())
            .collect();
        out.sort();
        out.dedup();
        assert!(out.len() > 500, "{}", out.len());
        out
    })
}

/// Arbitrary JSON, biased towards the shapes FHIR uses.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        "-?[0-9]{1,30}(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?".prop_map(|s| {
            serde_json::from_str::<Number>(&s)
                .map(Value::Number)
                .unwrap_or(Value::String(s))
        }),
        "[ -~]{0,20}".prop_map(Value::String),
        "(19|20|99)[0-9]{2}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
            .prop_map(Value::String),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z_]{1,12}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One structural mutation at the `n`-th node (pre-order, modulo the node count).
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    AddKey(usize, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        "[a-zA-Z_]{1,12}",
        Just("resourceType".to_owned()),
        Just("id".to_owned()),
        Just("extension".to_owned()),
        Just("_birthDate".to_owned()),
        Just("contained".to_owned()),
        Just("valueQuantity".to_owned()),
        Just("meta".to_owned()),
    ];
    prop_oneof![
        (any::<usize>(), json()).prop_map(|(n, v)| Mutation::Replace(n, v)),
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), key, json()).prop_map(|(n, k, v)| Mutation::AddKey(n, k, v)),
    ]
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies `f` to the `target`-th node in pre-order; `parent` removal is done by the caller.
fn visit(value: &mut Value, target: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *target == 0 {
        f(value);
        return true;
    }
    *target -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| visit(v, target, f)),
        Value::Object(map) => map.values_mut().any(|v| visit(v, target, f)),
        _ => false,
    }
}

fn mutate(mut resource: Value, mutations: &[Mutation]) -> Value {
    for m in mutations {
        let nodes = count_nodes(&resource);
        match m {
            Mutation::Replace(n, v) => {
                let mut target = n % nodes;
                visit(&mut resource, &mut target, &mut |node| *node = v.clone());
            }
            Mutation::Remove(n) => {
                let mut target = n % nodes;
                visit(&mut resource, &mut target, &mut |node| match node {
                    Value::Object(map) => {
                        if let Some(k) = map.keys().next().cloned() {
                            map.shift_remove(&k);
                        }
                    }
                    Value::Array(items) => {
                        items.pop();
                    }
                    other => *other = Value::Null,
                });
            }
            Mutation::AddKey(n, k, v) => {
                let mut target = n % nodes;
                visit(&mut resource, &mut target, &mut |node| {
                    if let Value::Object(map) = node {
                        map.insert(k.clone(), v.clone());
                    }
                });
            }
        }
    }
    resource
}

const TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "MedicationRequest",
    "Practitioner",
    "Organization",
    "DiagnosticReport",
];

const MODIFIERS: &[&str] = &[
    "",
    ":missing",
    ":exact",
    ":contains",
    ":text",
    ":not",
    ":above",
    ":below",
    ":in",
    ":not-in",
    ":of-type",
    ":identifier",
    ":Patient",
    ":iterate",
    ":recurse",
    ":type",
    ":bogus",
    ":",
];

const PREFIXES: &[&str] = &[
    "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "zz",
];

const SPECIAL_PARAMS: &[&str] = &[
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_text",
    "_content",
    "_list",
    "_has",
    "_type",
    "_query",
    "_filter",
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
];

/// A parameter name: a real one of the type or a special one, with chains, `_has` and
/// modifiers, or noise.
fn param_name(resource_type: &'static str) -> impl Strategy<Value = String> {
    let codes: Vec<String> = phip_fhir::r4()
        .search_params(resource_type)
        .iter()
        .map(|p| p.code.clone())
        .chain(SPECIAL_PARAMS.iter().map(|s| (*s).to_owned()))
        .collect();
    let code = prop::sample::select(codes);
    prop_oneof![
        4 => (code.clone(), prop::sample::select(MODIFIERS)).prop_map(|(c, m)| format!("{c}{m}")),
        2 => (code.clone(), prop::sample::select(MODIFIERS), "[a-z-]{1,12}")
            .prop_map(|(c, m, chained)| format!("{c}{m}.{chained}")),
        1 => (prop::sample::select(TYPES), "[a-z-]{1,12}", code)
            .prop_map(|(t, r, c)| format!("_has:{t}:{r}:{c}")),
        1 => "[ -~]{0,16}",
    ]
}

/// A value: prefixed dates and numbers, tokens with systems, references, escapes, noise.
fn param_value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        (
            prop::sample::select(PREFIXES),
            "[0-9]{1,4}(-[0-9]{2}(-[0-9]{2}(T[0-9:]{2,8}(Z|[+-][0-9:]{2,5})?)?)?)?"
        )
            .prop_map(|(p, d)| format!("{p}{d}")),
        (
            prop::sample::select(PREFIXES),
            "-?[0-9]{0,8}(\\.[0-9]{0,6})?(e[+-]?[0-9]{1,3})?"
        )
            .prop_map(|(p, n)| format!("{p}{n}")),
        ("[a-z:/.0-9]{0,20}", "[A-Za-z0-9-]{0,10}").prop_map(|(s, c)| format!("{s}|{c}")),
        "[0-9.]{0,6}\\|[a-z:/.]{0,12}\\|[a-zA-Z/]{0,6}",
        "(Patient|Observation|http://x/fhir/Patient)/[A-Za-z0-9.-]{0,12}(/_history/[0-9]{1,3})?",
        "[\\\\,$|a-z ]{0,16}",
        "[ -~]{0,24}",
        ".{0,8}",
        "(Patient|Observation|Encounter|\\*):[a-z-]{0,14}(:[A-Za-z]{0,10})?",
        "-?[a-zA-Z.]{0,12}(,-?[a-zA-Z.]{0,12}){0,3}",
    ];
    prop::collection::vec(piece, 1..4).prop_map(|pieces| pieces.join(","))
}

fn search_request() -> impl Strategy<Value = (&'static str, Vec<(String, String)>, bool)> {
    prop::sample::select(TYPES).prop_flat_map(|rt| {
        (
            Just(rt),
            prop::collection::vec((param_name(rt), param_value()), 0..6),
            any::<bool>(),
        )
    })
}

/// Escapes a value for use inside a comma-separated search value list.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    /// Any search request parses or is refused with an error OperationOutcome.
    #[test]
    fn search_requests_parse_or_are_refused((rt, params, strict) in search_request()) {
        match parse(Some(rt), &params, strict) {
            Ok(parsed) => prop_assert!(!parsed.warnings.has_errors() || !strict),
            Err(outcome) => prop_assert!(outcome.has_errors(), "{outcome}"),
        }
        // System-level searches see the same parameters.
        if let Err(outcome) = parse(None, &params, strict) {
            prop_assert!(outcome.has_errors(), "{outcome}");
        }
    }

    /// Escaped value lists split back into exactly the original values.
    #[test]
    fn search_value_escapes_round_trip(values in prop::collection::vec("[\\\\,$|a-z\u{4e2d} ]{0,10}", 1..6)) {
        let joined = values.iter().map(|v| escape(v)).collect::<Vec<_>>().join(",");
        let back: Vec<String> = split_escaped(&joined, ',').into_iter().map(unescape).collect();
        prop_assert_eq!(back, values);
    }

    /// Mutated real resources: the validator never panics, and refusals carry error issues.
    #[test]
    fn mutated_resources_are_validated_without_panic(
        index in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let resource = mutate(index.get(corpus()).clone(), &mutations);
        if let Err(outcome) = validate_resource(&resource) {
            prop_assert!(outcome.has_errors(), "{outcome}");
        }
        // Whatever is accepted stays accepted after a serialisation round trip.
        if validate_resource(&resource).is_ok() {
            let text = serde_json::to_string(&resource).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(validate_resource(&again).is_ok());
        }
    }

    /// Arbitrary JSON documents, typed or not, never make the validator panic.
    #[test]
    fn arbitrary_documents_are_validated_without_panic(
        rt in prop::sample::select(TYPES),
        body in json(),
    ) {
        let mut resource = body;
        if let Value::Object(map) = &mut resource {
            map.insert("resourceType".into(), Value::String(rt.to_owned()));
        }
        if let Err(outcome) = validate_resource(&resource) {
            prop_assert!(outcome.has_errors());
        }
    }

    /// Mutated FHIRPath expressions of the R4 search parameters: parsing never panics, and
    /// what parses evaluates (or fails cleanly) on real resources.
    #[test]
    fn mutated_fhirpath_parses_and_evaluates_without_panic(
        expression in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<usize>(), prop_oneof![
            Just(String::new()),
            "[().\\[\\]|'$%a-z0-9 =<>!~+*/&-]{1,3}",
            prop::sample::select(vec![
                "where(", ".resolve()", " | ", "ofType(", " as ", " is ", "[0]", "'\\u00e9'",
                "@2024-01-01T", "1.5 'mg'", "%resource", "$this", "iif(", ".exists()", ".extension('",
                "aggregate(", "repeat(", "descendants()", ".substring(", "9999999999999999999999",
            ]).prop_map(str::to_owned),
        ]), 0..4),
        resource in any::<prop::sample::Index>(),
    ) {
        let mut source = expression.get(expressions()).clone();
        for (at, text) in &edits {
            let mut cut = at % (source.len() + 1);
            while !source.is_char_boundary(cut) {
                cut -= 1;
            }
            if text.is_empty() {
                let end = (cut + 3).min(source.len());
                let mut end = end;
                while !source.is_char_boundary(end) {
                    end += 1;
                }
                source.replace_range(cut..end, "");
            } else {
                source.insert_str(cut, text);
            }
        }
        if let Ok(parsed) = Expression::parse(&source) {
            let _ = parsed.evaluate(resource.get(corpus()), phip_fhir::r4().model());
        }
    }
}

/// Every R4 search parameter expression that parses evaluates on every sample resource without
/// panicking (errors are allowed: e.g. `resolve()` with nothing to resolve).
#[test]
fn every_search_expression_evaluates_on_the_corpus() {
    let model = phip_fhir::r4().model();
    let parsed: Vec<Expression> = expressions()
        .iter()
        .filter_map(|e| Expression::parse(e).ok())
        .collect();
    assert!(
        parsed.len() * 10 >= expressions().len() * 9,
        "most expressions parse"
    );
    for resource in corpus().iter().step_by(7) {
        for expression in &parsed {
            let _ = expression.evaluate(resource, model);
        }
    }
}
