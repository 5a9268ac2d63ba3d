//! Structural validation: what must be rejected, and where the problem is reported.

use phip_fhir::validate::validate_resource;
use phip_fhir::IssueType;
use serde_json::{json, Value};

/// The issues of a rejected resource as (code, path) pairs.
fn issues(resource: Value) -> Vec<(IssueType, String)> {
    let outcome = validate_resource(&resource).expect_err("resource should be rejected");
    assert!(outcome.has_errors());
    outcome
        .issues
        .iter()
        .map(|i| {
            assert!(!i.diagnostics.is_empty());
            (i.code, i.expression.first().cloned().unwrap_or_default())
        })
        .collect()
}

fn one_issue(resource: Value) -> (IssueType, String) {
    let all = issues(resource);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn valid(resource: Value) {
    if let Err(outcome) = validate_resource(&resource) {
        panic!("unexpectedly invalid: {outcome}");
    }
}

#[test]
fn accepts_minimal_and_rich_resources() {
    valid(json!({"resourceType": "Patient"}));
    valid(json!({
        "resourceType": "Patient",
        "id": "pat-1.A",
        "meta": {"lastUpdated": "2024-01-02T03:04:05.678Z", "tag": [{"code": "x"}]},
        "name": [{"family": "Doe", "given": ["John", "Q"]}],
        "birthDate": "1970-02-28",
        "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "s"}]},
        "deceasedBoolean": false,
        "multipleBirthInteger": 2,
        "contact": [{"name": {"text": "Mum"}, "gender": "female"}],
        "contained": [{"resourceType": "Organization", "id": "o1", "name": "Org"}],
        "extension": [{"url": "http://example.org/nested", "extension": [
            {"url": "a", "valueDecimal": 1.50}
        ]}]
    }));
    valid(json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 72.5, "unit": "kg"},
        "effectiveDateTime": "2020-01-01T10:00:00+01:00"
    }));
}

#[test]
fn rejects_non_resources() {
    assert_eq!(one_issue(json!([])).0, IssueType::Structure);
    assert_eq!(one_issue(json!({"id": "x"})).0, IssueType::Required);
    assert_eq!(
        one_issue(json!({"resourceType": 1})).0,
        IssueType::Structure
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patientx"})).0,
        IssueType::Value
    );
    assert_eq!(
        one_issue(json!({"resourceType": "DomainResource"})).0,
        IssueType::Value
    );
    assert_eq!(
        one_issue(json!({"resourceType": "HumanName"})).0,
        IssueType::Value
    );
}

#[test]
fn unknown_element() {
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "foo": 1})),
        (IssueType::Structure, "Patient.foo".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"family": "x", "nickname": "y"}]})),
        (IssueType::Structure, "Patient.name[0].nickname".into())
    );
    // `_x` only for primitives.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "_name": [{"id": "a"}]})),
        (IssueType::Structure, "Patient._name".into())
    );
    // resourceType is no element of a datatype.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"resourceType": "HumanName"}]})),
        (IssueType::Structure, "Patient.name[0].resourceType".into())
    );
}

#[test]
fn wrong_primitive_json_type() {
    let cases = [
        (
            json!({"resourceType": "Patient", "active": "true"}),
            "Patient.active",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": 1970}),
            "Patient.birthDate",
        ),
        (
            json!({"resourceType": "Patient", "multipleBirthInteger": "2"}),
            "Patient.multipleBirthInteger",
        ),
        (
            json!({"resourceType": "Patient", "multipleBirthInteger": 2.5}),
            "Patient.multipleBirthInteger",
        ),
        (
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "valueQuantity": {"value": "1.5"}}),
            "Observation.valueQuantity.value",
        ),
        (
            json!({"resourceType": "Patient", "name": [{"given": ["a", 5]}]}),
            "Patient.name[0].given[1]",
        ),
    ];
    for (resource, path) in cases {
        assert_eq!(one_issue(resource), (IssueType::Value, path.into()));
    }
    // An object where a primitive belongs is a structural problem.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "gender": {"code": "male"}})),
        (IssueType::Structure, "Patient.gender".into())
    );
    // And a primitive where an object belongs.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "maritalStatus": "M"})),
        (IssueType::Structure, "Patient.maritalStatus".into())
    );
}

#[test]
fn integer_ranges() {
    let rt = |v: Value| json!({"resourceType": "Patient", "multipleBirthInteger": v});
    valid(rt(json!(2147483647)));
    valid(rt(json!(-2147483648)));
    assert_eq!(one_issue(rt(json!(2147483648_i64))).0, IssueType::Value);
    let positive = |v: Value| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
               "valueSampledData": {"origin": {"value": 0}, "period": 1, "dimensions": v}})
    };
    valid(positive(json!(1)));
    assert_eq!(
        one_issue(positive(json!(0))),
        (
            IssueType::Value,
            "Observation.valueSampledData.dimensions".into()
        )
    );
}

#[test]
fn bad_dates_and_strings() {
    for bad in [
        "1970-13-01",
        "1970-02-30",
        "70-01-01",
        "1970-01-01T10:00:00Z",
        "",
    ] {
        assert_eq!(
            one_issue(json!({"resourceType": "Patient", "birthDate": bad})),
            (IssueType::Value, "Patient.birthDate".into()),
            "{bad}"
        );
    }
    // A dateTime with a time needs a time zone.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01T10:00:00"})),
        (IssueType::Value, "Patient.deceasedDateTime".into())
    );
    // instant needs a full timestamp.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01"}})),
        (IssueType::Value, "Patient.meta.lastUpdated".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "gender": "not a code "})),
        (IssueType::Value, "Patient.gender".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "implicitRules": "has space"})),
        (IssueType::Value, "Patient.implicitRules".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "photo": [{"data": "not base64!"}]})),
        (IssueType::Value, "Patient.photo[0].data".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"family": ""}]})),
        (IssueType::Value, "Patient.name[0].family".into())
    );
}

#[test]
fn bad_id() {
    for bad in ["a_b", "has space", "", &"x".repeat(65)] {
        assert_eq!(
            one_issue(json!({"resourceType": "Patient", "id": bad})),
            (IssueType::Value, "Patient.id".into()),
            "{bad}"
        );
    }
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "id": 5})).1,
        "Patient.id"
    );
}

#[test]
fn cardinality() {
    // A string where an array is expected.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"given": "John"}]})),
        (IssueType::Structure, "Patient.name[0].given".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": {"family": "x"}})),
        (IssueType::Structure, "Patient.name".into())
    );
    // An array where a single value is expected.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "gender": ["male"]})),
        (IssueType::Structure, "Patient.gender".into())
    );
    // Prohibited by a constrained type is not a concern of the base types: Quantity allows
    // comparator; but max 0 elements never appear in base definitions either way.
}

#[test]
fn missing_required() {
    let all = issues(json!({"resourceType": "Observation"}));
    assert_eq!(
        all,
        vec![
            (IssueType::Required, "Observation.status".into()),
            (IssueType::Required, "Observation.code".into()),
        ]
    );
    // Required elements are checked at every level of present elements.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "link": [{"type": "seealso"}]})),
        (IssueType::Required, "Patient.link[0].other".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "extension": [{"valueString": "x"}]})),
        (IssueType::Required, "Patient.extension[0].url".into())
    );
    // A required choice is named with [x].
    assert_eq!(
        one_issue(json!({"resourceType": "Questionnaire", "status": "draft",
                         "item": [{"linkId": "1", "type": "choice",
                                   "enableWhen": [{"question": "q", "operator": "exists"}]}]})),
        (
            IssueType::Required,
            "Questionnaire.item[0].enableWhen[0].answer[x]".into()
        )
    );
    // A primitive given only through its extension counts as present.
    valid(json!({"resourceType": "Observation",
                 "_status": {"extension": [{"url": "http://example.org/absent", "valueCode": "unknown"}]},
                 "code": {"text": "x"}}));
}

#[test]
fn choice_elements() {
    assert_eq!(
        one_issue(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                         "valueFoo": 1})
        ),
        (IssueType::Structure, "Observation.valueFoo".into())
    );
    // The bare base name is not an element.
    assert_eq!(
        one_issue(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                         "value": "1"})
        ),
        (IssueType::Structure, "Observation.value".into())
    );
    // A type suffix that exists but is not allowed for this choice.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "deceasedString": "yes"})),
        (IssueType::Structure, "Patient.deceasedString".into())
    );
    // Two types of one choice.
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "deceasedBoolean": true,
                         "deceasedDateTime": "2020"})),
        (IssueType::Structure, "Patient.deceasedDateTime".into())
    );
}

#[test]
fn empty_and_null_values() {
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": []})),
        (IssueType::Structure, "Patient.name".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "maritalStatus": {}})),
        (IssueType::Structure, "Patient.maritalStatus".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "gender": null})),
        (IssueType::Structure, "Patient.gender".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [null]})),
        (IssueType::Structure, "Patient.name[0]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"given": ["a", null]}]})),
        (IssueType::Structure, "Patient.name[0].given[1]".into())
    );
}

#[test]
fn primitive_extensions() {
    let ext = json!({"extension": [{"url": "http://example.org/e", "valueBoolean": true}]});
    // Aligned arrays, nulls standing in for the missing side.
    valid(json!({"resourceType": "Patient", "name": [{
        "given": ["a", null, "c"],
        "_given": [null, ext, {"id": "g3"}]
    }]}));
    // Extension without values at all.
    valid(json!({"resourceType": "Patient", "name": [{"_given": [ext]}]}));
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{
            "given": ["a", "b"], "_given": [null]
        }]})),
        (IssueType::Structure, "Patient.name[0]._given".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{
            "given": ["a", null], "_given": [null, null]
        }]})),
        (IssueType::Structure, "Patient.name[0].given[1]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"_given": [null]}]})),
        (IssueType::Structure, "Patient.name[0]._given[0]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "name": [{"_given": [null]}]})),
        (IssueType::Structure, "Patient.name[0]._given[0]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "_birthDate": [ext]})),
        (IssueType::Structure, "Patient._birthDate".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "_birthDate": {"foo": 1}})),
        (IssueType::Structure, "Patient._birthDate.foo".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "_birthDate": "x"})),
        (IssueType::Structure, "Patient._birthDate".into())
    );
}

#[test]
fn extensions() {
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "extension": [
            {"url": "http://example.org/e"}
        ]})),
        (IssueType::Invalid, "Patient.extension[0]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "extension": [
            {"url": "http://example.org/e", "valueString": "x",
             "extension": [{"url": "a", "valueString": "y"}]}
        ]})),
        (IssueType::Invalid, "Patient.extension[0]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "extension": [
            {"url": "http://example.org/e", "valueFoo": "x"}
        ]})),
        (IssueType::Structure, "Patient.extension[0].valueFoo".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "modifierExtension": [
            {"url": "http://example.org/e", "valueDate": "2020-02-31"}
        ]})),
        (
            IssueType::Value,
            "Patient.modifierExtension[0].valueDate".into()
        )
    );
}

#[test]
fn nested_paths_and_inline_resources() {
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "contact": [
            {"name": {"family": "x"}},
            {"name": {"given": ["a", 1]}}
        ]})),
        (IssueType::Value, "Patient.contact[1].name.given[1]".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "contained": [
            {"resourceType": "Observation", "status": "final"}
        ]})),
        (IssueType::Required, "Patient.contained[0].code".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "contained": [{"id": "x"}]})),
        (IssueType::Required, "Patient.contained[0]".into())
    );
    assert_eq!(
        one_issue(
            json!({"resourceType": "Bundle", "type": "collection", "entry": [
                {"resource": {"resourceType": "Patient", "birthDate": "x"}}
            ]})
        ),
        (
            IssueType::Value,
            "Bundle.entry[0].resource.birthDate".into()
        )
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Parameters", "parameter": [
            {"name": "p", "resource": {"resourceType": "Nope"}}
        ]})),
        (IssueType::Value, "Parameters.parameter[0].resource".into())
    );
    assert_eq!(
        one_issue(
            json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
                {"response": {"status": "200", "outcome": {"resourceType": "Patient"}}}
            ]})
        ),
        (IssueType::Value, "Bundle.entry[0].response.outcome".into())
    );
    // Backbone via contentReference (Questionnaire.item.item).
    assert_eq!(
        one_issue(
            json!({"resourceType": "Questionnaire", "status": "draft", "item": [
                {"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "bogus": true}]}
            ]})
        ),
        (
            IssueType::Structure,
            "Questionnaire.item[0].item[0].bogus".into()
        )
    );
}

#[test]
fn narrative() {
    valid(
        json!({"resourceType": "Patient", "text": {"status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Jo</div>"}}),
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "text": {"status": "generated", "div": "Jo"}})),
        (IssueType::Value, "Patient.text.div".into())
    );
    assert_eq!(
        one_issue(json!({"resourceType": "Patient", "text": {"status": "generated"}})),
        (IssueType::Required, "Patient.text.div".into())
    );
}

#[test]
fn collects_all_errors() {
    let all = issues(json!({
        "resourceType": "Observation",
        "id": "bad id",
        "foo": 1,
        "code": {"coding": [{"system": "x y"}]},
        "valueQuantity": {"value": "1"}
    }));
    let paths: Vec<&str> = all.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Observation.id",
            "Observation.foo",
            "Observation.code.coding[0].system",
            "Observation.valueQuantity.value",
            "Observation.status",
        ]
    );
}
