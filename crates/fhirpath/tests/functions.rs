//! The FHIRPath function library, group by group.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn existence() {
    let p = patient();
    assert_eq!(boolean("Patient.name.empty()", &p), Some(false));
    assert_eq!(boolean("Patient.foo.empty()", &p), Some(true));
    assert_eq!(boolean("Patient.name.exists()", &p), Some(true));
    assert_eq!(
        boolean("Patient.name.exists(use = 'usual')", &p),
        Some(true)
    );
    assert_eq!(
        boolean("Patient.name.exists(use = 'nickname')", &p),
        Some(false)
    );
    assert_eq!(boolean("Patient.name.all(given.exists())", &p), Some(true));
    assert_eq!(
        boolean("Patient.name.all(family.exists())", &p),
        Some(false)
    );
    assert_eq!(boolean("{}.all(false)", &p), Some(true));
    assert_eq!(boolean("(true | false).allTrue()", &p), Some(false));
    assert_eq!(boolean("(true | false).anyTrue()", &p), Some(true));
    assert_eq!(boolean("(false).allFalse()", &p), Some(true));
    assert_eq!(boolean("(true).anyFalse()", &p), Some(false));
    assert_eq!(boolean("(1 | 2).subsetOf(1 | 2 | 3)", &p), Some(true));
    assert_eq!(boolean("(1 | 2).supersetOf(1 | 4)", &p), Some(false));
    assert_eq!(values("Patient.name.given.count()", &p), vec![json!(4)]);
    assert_eq!(values("{}.count()", &p), vec![json!(0)]);
    assert_eq!(values("Patient.name.given.distinct()", &p).len(), 3);
    assert_eq!(boolean("Patient.name.given.isDistinct()", &p), Some(false));
    assert_eq!(boolean("Patient.name.family.isDistinct()", &p), Some(true));
    assert_eq!(boolean("Patient.birthDate.hasValue()", &p), Some(true));
    assert_eq!(boolean("Patient.name.hasValue()", &p), Some(false));
}

#[test]
fn filtering_and_projection() {
    let p = patient();
    assert_eq!(
        values("Patient.name.select(given.first())", &p),
        vec![json!("Peter"), json!("Jim"), json!("Peter")]
    );
    assert_eq!(
        values("Patient.name.select(family & ', ' & given.first())", &p),
        vec![
            json!("Chalmers, Peter"),
            json!(", Jim"),
            json!("Windsor, Peter")
        ]
    );
    assert_eq!(
        values("Patient.name.where(family.exists()).select($this.use)", &p),
        vec![json!("official"), json!("maiden")]
    );
    let q = json!({"resourceType": "Questionnaire", "item": [
        {"linkId": "1", "item": [{"linkId": "1.1"}, {"linkId": "1.2", "item": [{"linkId": "1.2.1"}]}]},
        {"linkId": "2"}
    ]});
    assert_eq!(
        values("repeat(item).linkId", &q),
        vec![
            json!("1"),
            json!("2"),
            json!("1.1"),
            json!("1.2"),
            json!("1.2.1")
        ]
    );
    assert_eq!(values("Questionnaire.descendants().linkId", &q).len(), 5);
    assert_eq!(
        values("Questionnaire.item.children().linkId", &q),
        vec![json!("1.1"), json!("1.2")]
    );
    // item 1: linkId + two nested items; item 2: linkId.
    assert_eq!(values("Questionnaire.item.children()", &q).len(), 4);
    assert_eq!(
        values("(1 | 2 | 3).aggregate($this + $total, 0)", &q),
        vec![json!(6)]
    );
}

#[test]
fn subsetting() {
    let p = patient();
    assert_eq!(
        values("Patient.name.given.first()", &p),
        vec![json!("Peter")]
    );
    assert_eq!(
        values("Patient.name.given.last()", &p),
        vec![json!("Peter")]
    );
    assert_eq!(values("Patient.name.given.tail()", &p).len(), 3);
    assert_eq!(
        values("Patient.name.given.skip(2)", &p),
        vec![json!("Jim"), json!("Peter")]
    );
    assert_eq!(
        values("Patient.name.given.take(2)", &p),
        vec![json!("Peter"), json!("James")]
    );
    assert_eq!(values("Patient.name.given.take(0)", &p).len(), 0);
    assert_eq!(values("Patient.gender.single()", &p), vec![json!("male")]);
    assert!(error("Patient.name.single()", &p).contains("single()"));
    assert_eq!(
        values("(1 | 2 | 3).intersect(2 | 3 | 4)", &p),
        vec![json!(2), json!(3)]
    );
    assert_eq!(
        values("(1 | 2 | 3).exclude(2)", &p),
        vec![json!(1), json!(3)]
    );
}

#[test]
fn strings() {
    let p = patient();
    assert_eq!(values("'abcdef'.substring(2)", &p), vec![json!("cdef")]);
    assert_eq!(values("'abcdef'.substring(2, 3)", &p), vec![json!("cde")]);
    assert_eq!(values("'abcdef'.substring(9)", &p).len(), 0);
    assert_eq!(values("'abcdef'.indexOf('cd')", &p), vec![json!(2)]);
    assert_eq!(values("'abcdef'.indexOf('x')", &p), vec![json!(-1)]);
    assert_eq!(boolean("Patient.gender.startsWith('ma')", &p), Some(true));
    assert_eq!(boolean("Patient.gender.endsWith('le')", &p), Some(true));
    assert_eq!(boolean("Patient.gender.contains('al')", &p), Some(true));
    assert_eq!(boolean("Patient.gender.contains('x')", &p), Some(false));
    assert_eq!(values("Patient.gender.upper()", &p), vec![json!("MALE")]);
    assert_eq!(values("'ÀB'.lower()", &p), vec![json!("àb")]);
    assert_eq!(values("'héllo'.length()", &p), vec![json!(5)]);
    assert_eq!(
        values("'a-b-c'.replace('-', '+')", &p),
        vec![json!("a+b+c")]
    );
    assert_eq!(values("'abc'.replace('', 'x')", &p), vec![json!("xaxbxcx")]);
    assert_eq!(
        boolean("'MRN-001'.matches('^[A-Z]+-\\\\d{3}$')", &p),
        Some(true)
    );
    assert_eq!(
        boolean("'MRN-01'.matches('^[A-Z]+-\\\\d{3}$')", &p),
        Some(false)
    );
    assert_eq!(boolean("'hello world'.matches('o w')", &p), Some(true));
    assert_eq!(
        values(
            "'2024-01-15'.replaceMatches('(\\\\d+)-(\\\\d+)-(\\\\d+)', '$3/$2/$1')",
            &p
        ),
        vec![json!("15/01/2024")]
    );
    assert_eq!(values("'  x  '.trim()", &p), vec![json!("x")]);
    assert_eq!(values("'a,b,c'.split(',')", &p).len(), 3);
    assert_eq!(
        values("('a' | 'b' | 'c').join('-')", &p),
        vec![json!("a-b-c")]
    );
    assert_eq!(values("'ab'.toChars()", &p), vec![json!("a"), json!("b")]);
    assert_eq!(values("{}.upper()", &p).len(), 0);
    assert!(error("Patient.name.given.upper()", &p).contains("single item"));
    assert!(error("'x'.matches('(')", &p).contains("regular expression"));
    // String escapes in literals.
    assert_eq!(values("'it\\'s'", &p), vec![json!("it's")]);
    assert_eq!(values("'a\\tb\\u0041'", &p), vec![json!("a\tbA")]);
}

#[test]
fn conversions() {
    let p = patient();
    assert_eq!(values("'42'.toInteger()", &p), vec![json!(42)]);
    assert_eq!(values("'4.2'.toInteger()", &p).len(), 0);
    assert_eq!(boolean("'4.2'.convertsToInteger()", &p), Some(false));
    assert_eq!(values("'4.20'.toDecimal()", &p)[0].to_string(), "4.20");
    assert_eq!(boolean("'x'.convertsToDecimal()", &p), Some(false));
    assert_eq!(values("42.toString()", &p), vec![json!("42")]);
    assert_eq!(values("true.toString()", &p), vec![json!("true")]);
    assert_eq!(
        values("Patient.multipleBirth.toString()", &p),
        vec![json!("2")]
    );
    assert_eq!(values("5 'mg'.toString()", &p), vec![json!("5 'mg'")]);
    assert_eq!(values("'yes'.toBoolean()", &p), vec![json!(true)]);
    assert_eq!(boolean("'maybe'.convertsToBoolean()", &p), Some(false));
    assert_eq!(
        values("'2020-01-02T10:00:00Z'.toDate()", &p),
        vec![json!("2020-01-02")]
    );
    assert_eq!(
        values("iif(Patient.active, 'yes', 'no')", &p),
        vec![json!("yes")]
    );
    assert_eq!(
        values("iif(Patient.foo, 'yes', 'no')", &p),
        vec![json!("no")]
    );
    assert_eq!(values("iif(false, 'yes')", &p).len(), 0);
}

#[test]
fn math() {
    let p = patient();
    assert_eq!(values("(-5).abs()", &p), vec![json!(5)]);
    assert_eq!(values("1.1.ceiling()", &p), vec![json!(2)]);
    assert_eq!(values("1.9.floor()", &p), vec![json!(1)]);
    assert_eq!(values("(-1.9).truncate()", &p), vec![json!(-1)]);
    assert_eq!(values("2.71828.round(2)", &p)[0].as_f64(), Some(2.72));
    assert_eq!(values("16.sqrt()", &p)[0].as_f64(), Some(4.0));
    assert_eq!(values("2.power(10)", &p), vec![json!(1024)]);
    assert_eq!(values("100.log(10)", &p)[0].as_f64(), Some(2.0));
    assert_eq!(values("(-1).sqrt()", &p).len(), 0);
}

#[test]
fn utility_functions() {
    let p = patient();
    assert_eq!(
        values("Patient.name.trace('names').count()", &p),
        vec![json!(3)]
    );
    let today = values("today()", &p);
    let today = today[0].as_str().unwrap();
    assert_eq!(today.len(), 10);
    assert!(today > "2024-01-01");
    let now = values("now()", &p);
    assert!(now[0].as_str().unwrap().starts_with(today) || now[0].as_str().unwrap() > today);
    assert_eq!(boolean("now() > @2020-01-01T00:00:00Z", &p), Some(true));
    assert_eq!(boolean("today() >= @2024-01-01", &p), Some(true));
    assert_eq!(boolean("Patient.birthDate < today()", &p), Some(true));
    assert_eq!(values("timeOfDay()", &p)[0].as_str().unwrap().len(), 12);
    assert_eq!(boolean("Patient.text.div.htmlChecks()", &p), Some(true));
}

#[test]
fn booleans_and_not() {
    let p = patient();
    assert_eq!(boolean("Patient.active.not()", &p), Some(false));
    assert_eq!(boolean("Patient.foo.not()", &p), None);
    assert_eq!(boolean("Patient.name.exists().not()", &p), Some(false));
    let v: Vec<Value> = values("Patient.name.where(family.exists().not()).given", &p);
    assert_eq!(v, vec![json!("Jim")]);
}
