//! Parse errors are clear and positioned; evaluation never panics on odd input.

mod common;

use common::MockModel;
use phip_fhirpath::{Expression, NoModel};
use serde_json::json;

fn parse_error(src: &str) -> String {
    match Expression::parse(src) {
        Ok(_) => panic!("{src}: expected a parse error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_errors_name_the_problem_and_position() {
    let e = parse_error("Patient.name.");
    assert!(
        e.contains("expected a name after '.'") && e.contains("position 13"),
        "{e}"
    );
    let e = parse_error("Patient.name.where(use = 'x'");
    assert!(
        e.contains("expected ',' or ')'") && e.contains("position 28"),
        "{e}"
    );
    let e = parse_error("Patient.name.frobnicate()");
    assert!(
        e.contains("unknown function 'frobnicate'") && e.contains("position 13"),
        "{e}"
    );
    let e = parse_error("Patient.name.where()");
    assert!(e.contains("takes 1 argument"), "{e}");
    let e = parse_error("'unterminated");
    assert!(e.contains("unterminated"), "{e}");
    let e = parse_error("1 +");
    assert!(e.contains("expected an expression"), "{e}");
    let e = parse_error("a b");
    assert!(e.contains("position 2"), "{e}");
    let e = parse_error("@2020-13-01");
    assert!(e.contains("invalid date/time literal"), "{e}");
    let e = parse_error("value.ofType('Quantity')");
    assert!(e.contains("type name"), "{e}");
    let e = parse_error("$foo");
    assert!(e.contains("unknown special variable"), "{e}");
    let e = parse_error("a # b");
    assert!(e.contains("unexpected character '#'"), "{e}");
    assert!(parse_error("").contains("expected an expression"));
    assert!(parse_error(&"(".repeat(1000)).contains("nested too deeply"));
}

#[test]
fn evaluation_never_panics() {
    let resources = [
        json!(null),
        json!(1),
        json!("x"),
        json!([1, 2]),
        json!({}),
        json!({"resourceType": 5}),
        json!({"resourceType": "Patient", "name": "not an array", "birthDate": 19741225}),
        json!({"resourceType": "Patient", "name": [null, 1, "x", {"given": [null]}], "contained": "x"}),
        json!({"resourceType": "Observation", "valueQuantity": [1, 2], "component": {"valueString": 3}}),
        json!({"resourceType": "Patient", "generalPractitioner": [{"reference": 5}, {"reference": ""}, {"reference": "/"}, {"reference": "#"}]}),
    ];
    let exprs = [
        "Patient.name.given",
        "name.family.upper()",
        "Patient.birthDate > @2000",
        "Patient.birthDate + 1 year",
        "Observation.value.ofType(Quantity).value * 2",
        "Observation.component.value",
        "generalPractitioner.resolve()",
        "generalPractitioner.where(resolve() is Patient)",
        "descendants().count()",
        "children()",
        "repeat(children())",
        "%resource.contained.resolve()",
        "name[0].given[0].substring(1, 100)",
        "name.select($this.given | $this.family)",
        "'a'.matches('(a*)*b')",
        "extension('x').value",
        "iif(name.exists(), name.count(), 0)",
        "name.exists() implies name.given.exists()",
        "birthDate.toString().length()",
        "$this.resourceType",
        "Patient.deceased != false",
        "1 / 0.0",
        "(name | name).count()",
    ];
    for resource in &resources {
        for expr in exprs {
            let parsed = Expression::parse(expr).unwrap();
            // Errors are acceptable; panics are not.
            let _ = parsed.evaluate(resource, &MockModel::new());
            let _ = parsed.evaluate(resource, &NoModel);
        }
    }
}

#[test]
fn expressions_are_reusable() {
    let e = Expression::parse("Patient.name.family").unwrap();
    let a = json!({"resourceType": "Patient", "name": [{"family": "A"}]});
    let b = json!({"resourceType": "Patient", "name": [{"family": "B"}]});
    let model = MockModel::new();
    assert_eq!(*e.evaluate(&a, &model).unwrap()[0].value, json!("A"));
    assert_eq!(*e.evaluate(&b, &model).unwrap()[0].value, json!("B"));
    assert_eq!(*e.evaluate(&a, &model).unwrap()[0].value, json!("A"));
    let from_str: Expression = "1 + 1".parse().unwrap();
    assert_eq!(*from_str.evaluate(&a, &model).unwrap()[0].value, json!(2));
}
