//! Deterministic rules, the index's candidates and decisions.

use phip_mpi::identifier::{mrn_system, RESIDENT_ID};
use phip_mpi::{
    decide, Decision, IndexConfig, MatchIndex, MatchRecord, Model, RuleOutcome, Thresholds,
};
use serde_json::{json, Value};

/// A valid resident ID for the given birth date and sequence (check character computed here).
fn rid(birth: &str, seq: &str) -> String {
    let first17 = format!("440305{birth}{seq}");
    let check = phip_mpi::resident_id::check_char(&first17).unwrap();
    format!("{first17}{check}")
}

fn patient(name: &str, birth: &str, gender: &str, ids: &[(&str, &str)]) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{"text": name}],
        "birthDate": birth,
        "gender": gender,
        "telecom": [{"system": "phone", "value": "13800138000"}],
        "address": [{"line": ["科技园路1号"], "district": "440305"}],
        "identifier": ids.iter().map(|(s, v)| json!({"system": s, "value": v})).collect::<Vec<_>>()
    })
}

fn index_with(records: &[(&str, Value)]) -> MatchIndex {
    let mut index = MatchIndex::new(Model::default(), IndexConfig::default());
    for (id, p) in records {
        index.insert(id, MatchRecord::from_patient(p));
    }
    index
}

#[test]
fn two_different_valid_resident_ids_never_match() {
    // Twins: same name, birth date, phone and address; different resident IDs.
    let a = patient(
        "张伟",
        "1985-03-17",
        "male",
        &[(RESIDENT_ID, &rid("19850317", "123"))],
    );
    let b = patient(
        "张伟",
        "1985-03-17",
        "male",
        &[(RESIDENT_ID, &rid("19850317", "135"))],
    );
    let ra = MatchRecord::from_patient(&a);
    let rb = MatchRecord::from_patient(&b);
    assert!(matches!(
        phip_mpi::rules::evaluate(&ra, &rb),
        Some(RuleOutcome::DifferentExclusiveIdentifier { .. })
    ));
    let index = index_with(&[("a", a)]);
    assert!(index.candidates(&rb).is_empty());
    assert_eq!(
        decide(&index.candidates(&rb), &Thresholds::default()),
        Decision::NewPerson
    );
    // Without IDs the same pair is a confident probabilistic match.
    let c = MatchRecord::from_patient(&patient("张伟", "1985-03-17", "male", &[]));
    let cands = index.candidates(&c);
    assert_eq!(cands.len(), 1);
    assert!(cands[0].probability > 0.99, "{}", cands[0].probability);
}

#[test]
fn invalid_resident_id_does_not_trigger_rules() {
    let good = rid("19850317", "123");
    let mut bad = good.clone();
    bad.replace_range(17..18, if good.ends_with('0') { "1" } else { "0" });
    let a = MatchRecord::from_patient(&patient(
        "张伟",
        "1985-03-17",
        "male",
        &[(RESIDENT_ID, &good)],
    ));
    let b = MatchRecord::from_patient(&patient(
        "张伟",
        "1985-03-17",
        "male",
        &[(RESIDENT_ID, &bad)],
    ));
    assert!(!b.identifiers[0].valid);
    assert_eq!(phip_mpi::rules::evaluate(&a, &b), None);
}

#[test]
fn same_trusted_identifier_links_unless_it_conflicts() {
    let id = rid("19850317", "123");
    let stored = patient("张伟", "1985-03-17", "male", &[(RESIDENT_ID, &id)]);
    let index = index_with(&[
        ("p1", stored),
        ("p2", patient("李娜", "1990-01-01", "female", &[])),
    ]);
    // Same ID, different spelling of the name: certain match.
    let query = MatchRecord::from_patient(&patient(
        "Zhang Wei",
        "1985-03-17",
        "male",
        &[(RESIDENT_ID, &id)],
    ));
    let cands = index.candidates(&query);
    assert_eq!(cands[0].id, "p1");
    assert_eq!(cands[0].probability, 1.0);
    assert!(matches!(
        cands[0].rule,
        Some(RuleOutcome::SameTrustedIdentifier { .. })
    ));
    assert_eq!(
        decide(&cands, &Thresholds::default()),
        Decision::AutoLink("p1".into())
    );
    // Same ID, conflicting birth date: review, never auto-link.
    let query = MatchRecord::from_patient(&patient(
        "张伟",
        "1986-05-01",
        "male",
        &[(RESIDENT_ID, &id)],
    ));
    let cands = index.candidates(&query);
    assert!(
        matches!(&cands[0].rule, Some(RuleOutcome::IdentifierConflict { conflict, .. }) if conflict == "birth date")
    );
    match decide(&cands, &Thresholds::default()) {
        Decision::Review(list) => assert_eq!(list[0].id, "p1"),
        other => panic!("expected review, got {other:?}"),
    }
    // MRNs are trusted within their institution only.
    let mrn = mrn_system("h1");
    let index = index_with(&[(
        "m",
        patient("王芳", "1970-02-02", "female", &[(&mrn, "A001")]),
    )]);
    let q = MatchRecord::from_patient(&patient(
        "王芳",
        "1970-02-02",
        "female",
        &[(&mrn_system("h2"), "A001")],
    ));
    assert!(index.candidates(&q)[0].rule.is_none());
}

#[test]
fn thresholds_decide_between_link_review_and_new() {
    let index = index_with(&[
        ("a", patient("张伟", "1985-03-17", "male", &[])),
        ("b", patient("王芳", "1970-02-02", "female", &[])),
    ]);
    let strong = MatchRecord::from_patient(&patient("張偉", "1985-03-17", "male", &[]));
    assert_eq!(
        decide(&index.candidates(&strong), &Thresholds::default()),
        Decision::AutoLink("a".into())
    );
    // A weaker candidate: same name, birth date one digit off, no phone or address.
    let weak = MatchRecord::from_patient(&json!({
        "resourceType": "Patient", "name": [{"text": "张伟"}], "birthDate": "1985-03-18"
    }));
    let cands = index.candidates(&weak);
    let p = cands[0].probability;
    assert!(p < 0.999 && p > 0.01, "{p}");
    let t = Thresholds {
        auto_link: 0.999,
        review: p / 2.0,
    };
    assert!(matches!(decide(&cands, &t), Decision::Review(ref l) if l[0].id == "a"));
    let t = Thresholds {
        auto_link: 0.999,
        review: 0.9999,
    };
    assert_eq!(decide(&cands, &t), Decision::NewPerson);
    // Two candidates above auto_link: ambiguous, reviewed.
    let mut dup = index_with(&[
        ("a", patient("张伟", "1985-03-17", "male", &[])),
        ("a2", patient("张伟", "1985-03-17", "male", &[])),
    ]);
    assert!(
        matches!(decide(&dup.candidates(&strong), &Thresholds::default()), Decision::Review(ref l) if l.len() == 2)
    );
    // Removal takes a record out of every block.
    assert!(dup.remove("a2").is_some());
    assert_eq!(dup.len(), 1);
    assert!(dup.remove("a2").is_none());
    assert_eq!(
        decide(&dup.candidates(&strong), &Thresholds::default()),
        Decision::AutoLink("a".into())
    );
    // Re-inserting an id replaces its record.
    dup.insert(
        "a",
        MatchRecord::from_patient(&patient("王芳", "1970-02-02", "female", &[])),
    );
    assert_eq!(dup.len(), 1);
    assert_eq!(
        decide(&dup.candidates(&strong), &Thresholds::default()),
        Decision::NewPerson
    );
}
