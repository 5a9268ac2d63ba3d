//! Parsing of search requests against the real R4 search parameters.

use phip_fhir::search::{
    parse, parse_date_range, Filter, Include, Modifier, ParamType, ParsedSearch, Prefix,
    SearchValue, SortDirection, SortKey, SummaryMode, TokenSystem, TotalMode,
};
use phip_fhir::{IssueSeverity, IssueType, OperationOutcome};

fn pairs(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn ok(rt: &str, params: &[(&str, &str)]) -> ParsedSearch {
    match parse(Some(rt), &pairs(params), true) {
        Ok(p) => {
            assert!(p.warnings.issues.is_empty(), "warnings: {}", p.warnings);
            p
        }
        Err(e) => panic!("{params:?}: {e}"),
    }
}

fn err(rt: &str, params: &[(&str, &str)]) -> OperationOutcome {
    match parse(Some(rt), &pairs(params), true) {
        Ok(p) => panic!("{params:?} parsed: {:?}", p.query),
        Err(e) => {
            assert!(e.has_errors());
            e
        }
    }
}

fn one_filter(rt: &str, params: &[(&str, &str)]) -> Filter {
    let p = ok(rt, params);
    assert_eq!(p.query.filters.len(), 1, "{:?}", p.query.filters);
    p.query.filters.into_iter().next().unwrap()
}

fn param(
    code: &str,
    param_type: ParamType,
    modifier: Modifier,
    values: Vec<SearchValue>,
) -> Filter {
    Filter::Param {
        code: code.into(),
        param_type,
        modifier,
        values,
    }
}

fn token(system: TokenSystem, code: Option<&str>) -> SearchValue {
    SearchValue::Token {
        system,
        code: code.map(Into::into),
    }
}

fn date(prefix: Prefix, s: &str) -> SearchValue {
    let (start, end) = parse_date_range(s).unwrap();
    SearchValue::Date { prefix, start, end }
}

#[test]
fn string_values_and_modifiers() {
    assert_eq!(
        one_filter("Patient", &[("name", "Müller")]),
        param(
            "name",
            ParamType::String,
            Modifier::None,
            vec![SearchValue::String("Müller".into())]
        )
    );
    assert_eq!(
        one_filter("Patient", &[("family:exact", "Chalmers,Smith")]),
        param(
            "family",
            ParamType::String,
            Modifier::Exact,
            vec![
                SearchValue::String("Chalmers".into()),
                SearchValue::String("Smith".into())
            ]
        )
    );
    assert_eq!(
        one_filter("Patient", &[("address:contains", "a\\,b\\$c\\|d\\\\e")]),
        param(
            "address",
            ParamType::String,
            Modifier::Contains,
            vec![SearchValue::String("a,b$c|d\\e".into())]
        )
    );
    // Repeated names are ANDed: two filters.
    let p = ok("Patient", &[("given", "a"), ("given", "b")]);
    assert_eq!(p.query.filters.len(), 2);
    // Empty values are ignored.
    assert!(ok("Patient", &[("name", "")]).query.filters.is_empty());
}

#[test]
fn token_values_and_modifiers() {
    assert_eq!(
        one_filter(
            "Observation",
            &[("code", "http://loinc.org|8867-4,|abc,sys|,plain")]
        ),
        param(
            "code",
            ParamType::Token,
            Modifier::None,
            vec![
                token(TokenSystem::Is("http://loinc.org".into()), Some("8867-4")),
                token(TokenSystem::NoSystem, Some("abc")),
                token(TokenSystem::Is("sys".into()), None),
                token(TokenSystem::Any, Some("plain")),
            ]
        )
    );
    assert_eq!(
        one_filter("Patient", &[("gender:not", "male")]),
        param(
            "gender",
            ParamType::Token,
            Modifier::Not,
            vec![token(TokenSystem::Any, Some("male"))]
        )
    );
    assert_eq!(
        one_filter("Observation", &[("code:text", "heart rate")]),
        param(
            "code",
            ParamType::Token,
            Modifier::Text,
            vec![SearchValue::String("heart rate".into())]
        )
    );
    assert_eq!(
        one_filter(
            "Observation",
            &[("code:in", "http://example.org/ValueSet/vitals")]
        ),
        param(
            "code",
            ParamType::Token,
            Modifier::In,
            vec![SearchValue::Uri(
                "http://example.org/ValueSet/vitals".into()
            )]
        )
    );
    assert_eq!(
        one_filter(
            "Patient",
            &[(
                "identifier:of-type",
                "http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345"
            )]
        ),
        param(
            "identifier",
            ParamType::Token,
            Modifier::OfType,
            vec![SearchValue::Composite(vec![
                token(
                    TokenSystem::Is("http://terminology.hl7.org/CodeSystem/v2-0203".into()),
                    Some("MR")
                ),
                token(TokenSystem::Any, Some("12345")),
            ])]
        )
    );
    err("Patient", &[("identifier:of-type", "MR|12345")]);
    assert_eq!(
        one_filter("Patient", &[("_id", "a1,b2")]),
        param(
            "_id",
            ParamType::Token,
            Modifier::None,
            vec![
                token(TokenSystem::Any, Some("a1")),
                token(TokenSystem::Any, Some("b2"))
            ]
        )
    );
    assert_eq!(
        one_filter("Patient", &[("active", "true")]),
        param(
            "active",
            ParamType::Token,
            Modifier::None,
            vec![token(TokenSystem::Any, Some("true"))]
        )
    );
}

#[test]
fn date_values_and_prefixes() {
    assert_eq!(
        one_filter("Patient", &[("birthdate", "1974-12")]),
        param(
            "birthdate",
            ParamType::Date,
            Modifier::None,
            vec![date(Prefix::Eq, "1974-12")]
        )
    );
    for (prefix, p) in [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ] {
        assert_eq!(
            one_filter(
                "Observation",
                &[("date", &format!("{prefix}2020-03-04T10:00:00+08:00"))]
            ),
            param(
                "date",
                ParamType::Date,
                Modifier::None,
                vec![date(p, "2020-03-04T02:00:00Z")]
            ),
            "{prefix}"
        );
    }
    let f = one_filter("Encounter", &[("_lastUpdated", "gt2021-01-01T00:00")]);
    let Filter::Param { values, .. } = f else {
        panic!()
    };
    let SearchValue::Date { start, end, prefix } = values[0] else {
        panic!()
    };
    assert_eq!(prefix, Prefix::Gt);
    assert_eq!(start, 1_609_459_200_000);
    assert_eq!(end, 1_609_459_200_000 + 59_999);

    // A `+` that was not percent-encoded arrives as a space.
    assert_eq!(
        one_filter("Observation", &[("date", "ge2020-03-04T10:00:00 08:00")]),
        param(
            "date",
            ParamType::Date,
            Modifier::None,
            vec![date(Prefix::Ge, "2020-03-04T02:00:00Z")]
        )
    );
    let e = err("Patient", &[("birthdate", "12/03/1980")]);
    assert_eq!(e.issues[0].code, IssueType::Invalid);
    assert!(e.to_string().contains("birthdate"), "{e}");
    assert!(e.to_string().contains("12/03/1980"), "{e}");
    err("Patient", &[("birthdate", "gt")]);
    err("Patient", &[("birthdate", "2020-02-30")]);
    // Date parameters take no string modifiers.
    err("Patient", &[("birthdate:exact", "2020")]);
}

#[test]
fn number_and_quantity_values() {
    assert_eq!(
        one_filter("RiskAssessment", &[("probability", "gt0.8")]),
        param(
            "probability",
            ParamType::Number,
            Modifier::None,
            vec![SearchValue::Number {
                prefix: Prefix::Gt,
                value: 0.8,
                low: 0.75,
                high: 0.85
            }]
        )
    );
    err("RiskAssessment", &[("probability", "high")]);
    assert_eq!(
        one_filter(
            "Observation",
            &[(
                "value-quantity",
                "le5.4|http://unitsofmeasure.org|mg,100||mg,7"
            )]
        ),
        param(
            "value-quantity",
            ParamType::Quantity,
            Modifier::None,
            vec![
                SearchValue::Quantity {
                    prefix: Prefix::Le,
                    value: 5.4,
                    low: 5.35,
                    high: 5.45,
                    system: Some("http://unitsofmeasure.org".into()),
                    code: Some("mg".into())
                },
                SearchValue::Quantity {
                    prefix: Prefix::Eq,
                    value: 100.0,
                    low: 99.5,
                    high: 100.5,
                    system: None,
                    code: Some("mg".into())
                },
                SearchValue::Quantity {
                    prefix: Prefix::Eq,
                    value: 7.0,
                    low: 6.5,
                    high: 7.5,
                    system: None,
                    code: None
                },
            ]
        )
    );
    err("Observation", &[("value-quantity", "5.4|mg")]);
    err(
        "Observation",
        &[("value-quantity", "abc|http://unitsofmeasure.org|mg")],
    );
}

#[test]
fn reference_values() {
    let r = |t: Option<&str>, id: Option<&str>, url: Option<&str>, v: Option<&str>| {
        SearchValue::Reference {
            target_type: t.map(Into::into),
            target_id: id.map(Into::into),
            url: url.map(Into::into),
            version: v.map(Into::into),
        }
    };
    assert_eq!(
        one_filter("Observation", &[("subject", "Patient/123")]),
        param(
            "subject",
            ParamType::Reference,
            Modifier::None,
            vec![r(Some("Patient"), Some("123"), None, None)]
        )
    );
    // A bare id with several possible targets has no type…
    assert_eq!(
        one_filter("Observation", &[("subject", "123")]),
        param(
            "subject",
            ParamType::Reference,
            Modifier::None,
            vec![r(None, Some("123"), None, None)]
        )
    );
    // …unless the modifier gives it…
    assert_eq!(
        one_filter("Observation", &[("subject:Patient", "123")]),
        param(
            "subject",
            ParamType::Reference,
            Modifier::Type("Patient".into()),
            vec![r(Some("Patient"), Some("123"), None, None)]
        )
    );
    // …or the parameter has a single target.
    assert_eq!(
        one_filter("Observation", &[("patient", "123")]),
        param(
            "patient",
            ParamType::Reference,
            Modifier::None,
            vec![r(Some("Patient"), Some("123"), None, None)]
        )
    );
    assert_eq!(
        one_filter(
            "Observation",
            &[("subject", "http://example.org/fhir/Patient/23/_history/2")]
        ),
        param(
            "subject",
            ParamType::Reference,
            Modifier::None,
            vec![r(
                Some("Patient"),
                Some("23"),
                Some("http://example.org/fhir/Patient/23/_history/2"),
                Some("2")
            )]
        )
    );
    assert_eq!(
        one_filter(
            "QuestionnaireResponse",
            &[("questionnaire", "http://example.org/Questionnaire/q1|2.0")]
        ),
        param(
            "questionnaire",
            ParamType::Reference,
            Modifier::None,
            vec![r(
                Some("Questionnaire"),
                Some("q1"),
                Some("http://example.org/Questionnaire/q1"),
                Some("2.0")
            )]
        )
    );
    assert_eq!(
        one_filter(
            "Observation",
            &[(
                "subject:identifier",
                "http://hl7.org/fhir/sid/us-ssn|444222222"
            )]
        ),
        param(
            "subject",
            ParamType::Reference,
            Modifier::Identifier,
            vec![SearchValue::ReferenceIdentifier {
                system: TokenSystem::Is("http://hl7.org/fhir/sid/us-ssn".into()),
                value: Some("444222222".into())
            }]
        )
    );
    // Observation.subject cannot be a Medication; Foo is not a type; mismatched type.
    err("Observation", &[("subject:Medication", "1")]);
    err("Observation", &[("subject", "Foo/1")]);
    err("Observation", &[("subject:Patient", "Group/1")]);
    err("Observation", &[("subject:exact", "Patient/1")]);
}

#[test]
fn uri_and_composite_values() {
    assert_eq!(
        one_filter("ValueSet", &[("url:below", "http://acme.org/fhir/")]),
        param(
            "url",
            ParamType::Uri,
            Modifier::Below,
            vec![SearchValue::Uri("http://acme.org/fhir/".into())]
        )
    );
    assert_eq!(
        one_filter(
            "Observation",
            &[(
                "code-value-quantity",
                "http://loinc.org|8480-6$gt100||mm[Hg],1234$lt5"
            )]
        ),
        param(
            "code-value-quantity",
            ParamType::Composite,
            Modifier::None,
            vec![
                SearchValue::Composite(vec![
                    token(TokenSystem::Is("http://loinc.org".into()), Some("8480-6")),
                    SearchValue::Quantity {
                        prefix: Prefix::Gt,
                        value: 100.0,
                        low: 99.5,
                        high: 100.5,
                        system: None,
                        code: Some("mm[Hg]".into())
                    },
                ]),
                SearchValue::Composite(vec![
                    token(TokenSystem::Any, Some("1234")),
                    SearchValue::Quantity {
                        prefix: Prefix::Lt,
                        value: 5.0,
                        low: 4.5,
                        high: 5.5,
                        system: None,
                        code: None
                    },
                ]),
            ]
        )
    );
    // An escaped `$` stays inside the component.
    assert_eq!(
        one_filter("Observation", &[("code-value-string", "a\\$b$x")]),
        param(
            "code-value-string",
            ParamType::Composite,
            Modifier::None,
            vec![SearchValue::Composite(vec![
                token(TokenSystem::Any, Some("a$b")),
                SearchValue::String("x".into())
            ])]
        )
    );
    err("Observation", &[("code-value-quantity", "1234")]);
    err("Observation", &[("code-value-quantity", "1234$abc")]);
}

#[test]
fn missing() {
    assert_eq!(
        one_filter("Patient", &[("birthdate:missing", "true")]),
        param(
            "birthdate",
            ParamType::Date,
            Modifier::Missing(true),
            vec![]
        )
    );
    assert_eq!(
        one_filter("Patient", &[("gender:missing", "false")]),
        param("gender", ParamType::Token, Modifier::Missing(false), vec![])
    );
    err("Patient", &[("gender:missing", "yes")]);
}

#[test]
fn invalid_modifiers_are_errors_even_when_lenient() {
    for name in [
        "name:foo",
        "gender:exact",
        "name:not",
        "birthdate:contains",
        "gender:identifier",
    ] {
        let e = parse(Some("Patient"), &pairs(&[(name, "x")]), false).unwrap_err();
        assert_eq!(e.issues[0].severity, IssueSeverity::Error, "{name}");
        let code = name.split(':').next().unwrap();
        assert!(e.to_string().contains(code), "{name}: {e}");
    }
}

#[test]
fn chains() {
    assert_eq!(
        one_filter("Observation", &[("subject:Patient.name", "peter")]),
        Filter::Chain {
            reference_param: "subject".into(),
            target_types: vec!["Patient".into()],
            inner: Box::new(param(
                "name",
                ParamType::String,
                Modifier::None,
                vec![SearchValue::String("peter".into())]
            )),
        }
    );
    // Without a type: the targets of subject that have a `name` parameter.
    let Filter::Chain {
        target_types,
        inner,
        ..
    } = one_filter("Observation", &[("subject.name", "peter")])
    else {
        panic!()
    };
    // Observation.subject may be a Patient, Group, Device or Location; only Patient and
    // Location have a `name` parameter.
    assert_eq!(target_types, vec!["Patient".to_string(), "Location".into()]);
    assert_eq!(
        *inner,
        param(
            "name",
            ParamType::String,
            Modifier::None,
            vec![SearchValue::String("peter".into())]
        )
    );
    // Two levels, with a modifier on the last one.
    assert_eq!(
        one_filter(
            "Encounter",
            &[("subject:Patient.organization.name:exact", "Acme")]
        ),
        Filter::Chain {
            reference_param: "subject".into(),
            target_types: vec!["Patient".into()],
            inner: Box::new(Filter::Chain {
                reference_param: "organization".into(),
                target_types: vec!["Organization".into()],
                inner: Box::new(param(
                    "name",
                    ParamType::String,
                    Modifier::Exact,
                    vec![SearchValue::String("Acme".into())]
                )),
            }),
        }
    );
    err("Observation", &[("code.name", "x")]);
    err("Observation", &[("subject:Patient.nosuch", "x")]);
    err("Observation", &[("subject:exact.name", "x")]);
    err("Observation", &[("subject:Patient.birthdate", "notadate")]);
}

#[test]
fn reverse_chains() {
    assert_eq!(
        one_filter("Patient", &[("_has:Observation:patient:code", "1234-5")]),
        Filter::Has {
            source_type: "Observation".into(),
            reference_param: "patient".into(),
            inner: Box::new(param(
                "code",
                ParamType::Token,
                Modifier::None,
                vec![token(TokenSystem::Any, Some("1234-5"))]
            )),
        }
    );
    assert_eq!(
        one_filter(
            "Patient",
            &[(
                "_has:Observation:patient:_has:AuditEvent:entity:agent",
                "MyUserId"
            )]
        ),
        Filter::Has {
            source_type: "Observation".into(),
            reference_param: "patient".into(),
            inner: Box::new(Filter::Has {
                source_type: "AuditEvent".into(),
                reference_param: "entity".into(),
                inner: Box::new(param(
                    "agent",
                    ParamType::Reference,
                    Modifier::None,
                    vec![SearchValue::Reference {
                        target_type: None,
                        target_id: Some("MyUserId".into()),
                        url: None,
                        version: None
                    }]
                )),
            }),
        }
    );
    err("Patient", &[("_has:Observation:patient", "x")]);
    err("Patient", &[("_has:Nope:patient:code", "x")]);
    err("Patient", &[("_has:Observation:code:code", "x")]);
    err("Patient", &[("_has:Observation:patient:nosuch", "x")]);
    // Observation.patient only points at Patients.
    err("Practitioner", &[("_has:Observation:patient:code", "x")]);
}

#[test]
fn result_parameters() {
    let p = ok(
        "Observation",
        &[
            ("_count", "20"),
            ("_sort", "-date,code,_id"),
            ("_total", "accurate"),
            ("_summary", "data"),
            ("_elements", "status, code,subject"),
            ("_include", "Observation:subject:Patient"),
            ("_include:iterate", "Patient:general-practitioner"),
            ("_revinclude", "Provenance:target"),
            ("_contained", "false"),
            ("_format", "json"),
            ("_pretty", "true"),
            ("_cursor", "abc"),
        ],
    );
    assert_eq!(p.count, Some(20));
    assert_eq!(p.query.count, Some(20));
    assert!(p.query.filters.is_empty());
    assert_eq!(
        p.query.sort,
        vec![
            SortKey {
                code: "date".into(),
                param_type: ParamType::Date,
                direction: SortDirection::Descending
            },
            SortKey {
                code: "code".into(),
                param_type: ParamType::Token,
                direction: SortDirection::Ascending
            },
            SortKey {
                code: "_id".into(),
                param_type: ParamType::Token,
                direction: SortDirection::Ascending
            },
        ]
    );
    assert_eq!(p.query.total, TotalMode::Accurate);
    assert_eq!(p.query.summary, SummaryMode::Data);
    assert_eq!(
        p.query.elements,
        Some(vec!["status".to_string(), "code".into(), "subject".into()])
    );
    assert_eq!(
        p.query.includes,
        vec![
            Include {
                source_type: "Observation".into(),
                param: "subject".into(),
                target_type: Some("Patient".into()),
                iterate: false
            },
            Include {
                source_type: "Patient".into(),
                param: "general-practitioner".into(),
                target_type: None,
                iterate: true
            },
        ]
    );
    assert_eq!(
        p.query.revincludes,
        vec![Include {
            source_type: "Provenance".into(),
            param: "target".into(),
            target_type: None,
            iterate: false
        }]
    );
    assert_eq!(ok("Patient", &[("_elements", " , ")]).query.elements, None);
    let star = ok(
        "Observation",
        &[("_include", "*"), ("_revinclude:recurse", "*:*")],
    );
    assert_eq!(star.query.includes[0].param, "*");
    assert!(star.query.revincludes[0].iterate);

    err("Patient", &[("_count", "-1")]);
    err("Patient", &[("_count", "ten")]);
    err("Patient", &[("_total", "some")]);
    err("Patient", &[("_summary", "maybe")]);
    err("Patient", &[("_include", "Patient")]);
    err("Patient", &[("_include", "Patient:name")]);
    err("Patient", &[("_include", "Nope:subject")]);
    err("Patient", &[("_include:deep", "Patient:organization")]);
    err("Patient", &[("_sort", "nosuch")]);
    err("Observation", &[("_sort", "code-value-quantity")]);
    err("Patient", &[("_contained", "true")]);
    assert_eq!(
        err("Patient", &[("_contained", "true")]).issues[0].code,
        IssueType::NotSupported
    );
}

#[test]
fn unknown_parameters() {
    let e = err(
        "Patient",
        &[("foo", "1"), ("name", "x"), ("bar:exact", "2")],
    );
    assert_eq!(e.issues.len(), 1);
    assert_eq!(e.issues[0].code, IssueType::NotSupported);
    let msg = e.to_string();
    assert!(
        msg.contains("'foo'") && msg.contains("'bar:exact'"),
        "{msg}"
    );

    let p = parse(
        Some("Patient"),
        &pairs(&[("foo", "1"), ("name", "x"), ("_sort", "nosuch")]),
        false,
    )
    .unwrap();
    assert_eq!(p.query.filters.len(), 1);
    assert!(p.query.sort.is_empty());
    assert_eq!(p.warnings.issues.len(), 2, "{}", p.warnings);
    assert!(p
        .warnings
        .issues
        .iter()
        .all(|i| i.severity == IssueSeverity::Warning));
    assert!(p.warnings.to_string().contains("'foo'"));
    assert!(p.warnings.to_string().contains("nosuch"));

    // Unknown parameters inside chains and reverse chains are unknown parameters too.
    let p = parse(
        Some("Patient"),
        &pairs(&[
            ("_has:Observation:patient:nosuch", "1"),
            ("general-practitioner.nosuch", "2"),
        ]),
        false,
    )
    .unwrap();
    assert!(p.query.filters.is_empty());
    let w = p.warnings.to_string();
    assert!(
        w.contains("'_has:Observation:patient:nosuch'")
            && w.contains("'general-practitioner.nosuch'"),
        "{w}"
    );

    // Unsupported parameters: `_text` has no expression, `near` is special.
    err("Patient", &[("_text", "x")]);
    err("Location", &[("near", "1|2|3|km")]);
    let p = parse(Some("Location"), &pairs(&[("near", "1|2|3|km")]), false).unwrap();
    assert!(p.query.filters.is_empty());
    assert_eq!(p.warnings.issues.len(), 1);

    // Ignored parameters never warn.
    for name in phip_fhir::search::IGNORED_PARAMS {
        let p = parse(Some("Patient"), &pairs(&[(name, "1")]), true).unwrap();
        assert!(
            p.warnings.issues.is_empty() && p.query.filters.is_empty(),
            "{name}"
        );
    }

    let e = parse(Some("NoSuchType"), &[], false).unwrap_err();
    assert!(e.to_string().contains("NoSuchType"));
}

#[test]
fn system_search() {
    let p = parse(
        None,
        &pairs(&[("_type", "Patient,Observation"), ("_lastUpdated", "ge2020")]),
        true,
    )
    .unwrap();
    assert_eq!(p.query.resource_type, None);
    assert_eq!(
        p.query.filters,
        vec![
            param(
                "_type",
                ParamType::Token,
                Modifier::None,
                vec![
                    token(TokenSystem::Any, Some("Patient")),
                    token(TokenSystem::Any, Some("Observation"))
                ]
            ),
            param(
                "_lastUpdated",
                ParamType::Date,
                Modifier::None,
                vec![date(Prefix::Ge, "2020")]
            ),
        ]
    );
    // A parameter common to the listed types.
    let p = parse(
        None,
        &pairs(&[("_type", "Patient,Practitioner"), ("family", "x")]),
        true,
    )
    .unwrap();
    assert_eq!(p.query.filters.len(), 2);
    // Not common to all: unknown.
    assert!(parse(
        None,
        &pairs(&[("_type", "Patient,Observation"), ("family", "x")]),
        true
    )
    .is_err());
    // Without _type only Resource-level parameters.
    assert!(parse(None, &pairs(&[("_id", "1")]), true).is_ok());
    assert!(parse(None, &pairs(&[("name", "x")]), true).is_err());
    assert!(parse(None, &pairs(&[("_type", "Nope")]), false).is_err());
}
