//! Operators: arithmetic, comparison, equality, equivalence, membership, boolean logic,
//! precedence.

mod common;

use common::*;
use serde_json::json;

#[test]
fn arithmetic() {
    let p = patient();
    assert_eq!(values("1 + 2 * 3", &p), vec![json!(7)]);
    assert_eq!(values("(1 + 2) * 3", &p), vec![json!(9)]);
    assert_eq!(values("10 - 4 - 3", &p), vec![json!(3)]);
    assert_eq!(values("7 div 2", &p), vec![json!(3)]);
    assert_eq!(values("7 mod 2", &p), vec![json!(1)]);
    assert_eq!(values("7 / 2", &p)[0].as_f64(), Some(3.5));
    assert_eq!(values("1.5 + 1", &p)[0].as_f64(), Some(2.5));
    assert_eq!(values("1 / 0", &p).len(), 0);
    assert_eq!(values("1 div 0", &p).len(), 0);
    assert_eq!(values("-3 + 1", &p), vec![json!(-2)]);
    assert_eq!(values("-(3 + 1)", &p), vec![json!(-4)]);
    assert_eq!(values("{} + 1", &p).len(), 0);
    assert_eq!(values("'a' + 'b'", &p), vec![json!("ab")]);
    assert_eq!(values("'a' & {} & 'c'", &p), vec![json!("ac")]);
    assert_eq!(values("'a' + {}", &p).len(), 0);
    assert_eq!(values("Patient.multipleBirth + 1", &p), vec![json!(3)]);
    assert_eq!(values("9223372036854775807 + 1", &p).len(), 0);
    assert!(error("'a' * 2", &p).contains("cannot apply"));
    assert!(error("Patient.name.given + 1", &p).contains("single item"));
}

#[test]
fn date_arithmetic() {
    let p = patient();
    assert_eq!(
        values("@2020-01-31 + 1 month", &p),
        vec![json!("2020-02-29")]
    );
    assert_eq!(
        values("Patient.birthDate + 1 year", &p),
        vec![json!("1975-12-25")]
    );
    assert_eq!(values("@2020-01-01 - 1 'd'", &p), vec![json!("2019-12-31")]);
    assert_eq!(
        values("@2020-01-01T23:00:00Z + 2 hours", &p),
        vec![json!("2020-01-02T01:00:00Z")]
    );
}

#[test]
fn comparison() {
    let p = patient();
    assert_eq!(boolean("1 < 2", &p), Some(true));
    assert_eq!(boolean("2 <= 2.0", &p), Some(true));
    assert_eq!(boolean("2.5 > 3", &p), Some(false));
    assert_eq!(boolean("'abc' < 'abd'", &p), Some(true));
    assert_eq!(boolean("'b' >= 'a'", &p), Some(true));
    assert_eq!(boolean("Patient.birthDate > @1970-01-01", &p), Some(true));
    assert_eq!(boolean("Patient.birthDate < @1974-12-26", &p), Some(true));
    // Different precision with an equal common prefix is undecidable.
    assert_eq!(boolean("Patient.birthDate > @1974-12", &p), None);
    assert_eq!(boolean("Patient.birthDate > @1973", &p), Some(true));
    assert_eq!(
        boolean("@2020-01-01T10:00:00+02:00 < @2020-01-01T09:00:00Z", &p),
        Some(true)
    );
    assert_eq!(boolean("@T10:00 < @T10:30", &p), Some(true));
    assert_eq!(boolean("{} < 1", &p), None);
    assert_eq!(boolean("5 'mg' < 6 'mg'", &p), Some(true));
    assert_eq!(boolean("5 'mg' < 6 'kg'", &p), None);
    let o = observation();
    assert_eq!(boolean("Observation.value > 70 'kg'", &o), Some(true));
    assert_eq!(boolean("Observation.value.value > 72.4", &o), Some(true));
    assert_eq!(
        boolean("Observation.effective > @2024-01-15T08:00:00Z", &o),
        Some(true)
    );
    assert!(error("1 < 'a'", &p).contains("cannot compare"));
}

#[test]
fn equality_and_equivalence() {
    let p = patient();
    assert_eq!(boolean("1 = 1.0", &p), Some(true));
    assert_eq!(boolean("'a' = 'A'", &p), Some(false));
    assert_eq!(boolean("'a' ~ 'A'", &p), Some(true));
    assert_eq!(boolean("'a' != 'b'", &p), Some(true));
    assert_eq!(boolean("'a' !~ ' A '", &p), Some(false));
    assert_eq!(boolean("{} = 1", &p), None);
    assert_eq!(boolean("{} ~ {}", &p), Some(true));
    assert_eq!(boolean("{} ~ 1", &p), Some(false));
    assert_eq!(boolean("(1 | 2) = (1 | 2)", &p), Some(true));
    assert_eq!(boolean("(1 | 2) = (2 | 1)", &p), Some(false));
    assert_eq!(boolean("(1 | 2) ~ (2 | 1)", &p), Some(true));
    assert_eq!(boolean("(1 | 2) = 1", &p), Some(false));
    assert_eq!(boolean("Patient.birthDate = @1974-12-25", &p), Some(true));
    assert_eq!(boolean("Patient.birthDate = @1974-12", &p), None);
    assert_eq!(boolean("Patient.birthDate ~ @1974-12", &p), Some(false));
    assert_eq!(boolean("Patient.active = true", &p), Some(true));
    assert_eq!(
        boolean("Patient.name[0] = Patient.name.first()", &p),
        Some(true)
    );
    assert_eq!(
        boolean("Patient.name[0] = Patient.name[1]", &p),
        Some(false)
    );
    assert_eq!(boolean("1.2 ~ 1.23", &p), Some(true));
    assert_eq!(
        boolean("@2020-01-01T10:00:00Z = @2020-01-01T11:00:00+01:00", &p),
        Some(true)
    );
}

#[test]
fn membership() {
    let p = patient();
    assert_eq!(boolean("'Jim' in Patient.name.given", &p), Some(true));
    assert_eq!(boolean("'Bob' in Patient.name.given", &p), Some(false));
    assert_eq!(
        boolean("Patient.name.given contains 'James'", &p),
        Some(true)
    );
    assert_eq!(boolean("{} in (1 | 2)", &p), None);
    assert_eq!(boolean("1 in {}", &p), Some(false));
    assert_eq!(
        boolean("Patient.gender in ('male' | 'female')", &p),
        Some(true)
    );
}

#[test]
fn three_valued_logic() {
    let p = patient();
    let cases = [
        ("true and true", Some(true)),
        ("true and false", Some(false)),
        ("true and {}", None),
        ("false and {}", Some(false)),
        ("{} and false", Some(false)),
        ("{} and {}", None),
        ("true or {}", Some(true)),
        ("{} or true", Some(true)),
        ("false or {}", None),
        ("false or false", Some(false)),
        ("true xor false", Some(true)),
        ("true xor true", Some(false)),
        ("true xor {}", None),
        ("true implies false", Some(false)),
        ("true implies {}", None),
        ("false implies {}", Some(true)),
        ("{} implies true", Some(true)),
        ("{} implies false", None),
        ("{} implies {}", None),
    ];
    for (expr, want) in cases {
        assert_eq!(boolean(expr, &p), want, "{expr}");
    }
    // A non-boolean single item counts as true.
    assert_eq!(boolean("Patient.gender and true", &p), Some(true));
    assert!(error("Patient.name.given and true", &p).contains("single boolean"));
}

#[test]
fn precedence() {
    let p = patient();
    // `|` binds tighter than `=`, which binds tighter than `and`.
    assert_eq!(boolean("1 | 2 = 1 | 2", &p), Some(true));
    assert_eq!(boolean("1 = 1 and 2 = 2", &p), Some(true));
    assert_eq!(boolean("true or false and false", &p), Some(true));
    assert_eq!(boolean("false and true implies false", &p), Some(true));
    assert_eq!(
        boolean("Patient.active is boolean and true", &p),
        Some(true)
    );
    assert_eq!(boolean("2 + 3 > 4", &p), Some(true));
    assert_eq!(boolean("'a' & 'b' = 'ab'", &p), Some(true));
    assert_eq!(values("-2.abs()", &p), vec![json!(-2)]);
}

#[test]
fn literals() {
    let p = patient();
    assert_eq!(values("{}", &p).len(), 0);
    assert_eq!(values("true", &p), vec![json!(true)]);
    assert_eq!(values("1.50", &p)[0].to_string(), "1.50");
    assert_eq!(types("@2020-01-01", &p), vec![Some("Date".into())]);
    assert_eq!(types("@2020-01-01T", &p), vec![Some("DateTime".into())]);
    assert_eq!(
        types("@2020-01-01T10:00:00.000+01:00", &p),
        vec![Some("DateTime".into())]
    );
    assert_eq!(types("@T10:00", &p), vec![Some("Time".into())]);
    assert_eq!(
        values("10 'mg'", &p),
        vec![
            json!({"value": 10, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"})
        ]
    );
    assert_eq!(types("4 days", &p), vec![Some("Quantity".into())]);
    assert_eq!(values("5 // comment\n + /* block */ 1", &p), vec![json!(6)]);
}
