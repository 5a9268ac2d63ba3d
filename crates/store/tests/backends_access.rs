//! The visibility predicate (`phip_store::Access`) on both backends: holder region, residents'
//! consents (nested provisions, periods, classes), parties, golden records, server-private
//! state, compartments — and that it applies to every statement of a search (total, paging,
//! chains, `_has`, includes), to history and to the compartment.

mod support;

use phip_fhir::access::{mark_server_owned, GOLDEN_TAG_CODE, MPI_SYSTEM};
use phip_fhir::search::query::parse;
use phip_store::{
    Access, HistoryQuery, HistoryScope, PageCursor, SearchRequest, Sharing, Store, TypeGrant,
    Visibility,
};
use serde_json::{json, Value};
use support::put;

const NOW: i64 = 1_800_000_000_000;

fn held(mut body: Value, org: &str, division: &str) -> Value {
    body["meta"] = json!({"tag": [
        {"system": "urn:phip:division", "code": division},
        {"system": "urn:phip:holder", "code": org}
    ]});
    body
}

fn obs(patient: &str, value: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "valueString": value})
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}]})
}

fn org_caller(org: &str, division: Option<&str>) -> Access {
    Access::Caller(Box::new(Visibility {
        types: TypeGrant::All,
        compartment_types: TypeGrant::Only(Vec::new()),
        compartment: Vec::new(),
        sharing: Some(Sharing {
            organization: Some(org.into()),
            division: division.map(str::to_owned),
            now_ms: NOW,
        }),
    }))
}

fn resident(patient: &str) -> Access {
    Access::Caller(Box::new(Visibility {
        types: TypeGrant::Only(Vec::new()),
        compartment_types: TypeGrant::All,
        compartment: vec![patient.into()],
        sharing: None,
    }))
}

fn privacy_consent(patient: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active",
           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
           "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
           "patient": {"reference": format!("Patient/{patient}")},
           "provision": provision})
}

fn actor(org: &str) -> Value {
    json!([{"reference": {"reference": format!("Organization/{org}")}}])
}

/// Ids of `ty` matching `query` for `access`, and the total the store reports.
fn search(s: &dyn Store, ty: &str, query: &str, access: &Access) -> (Vec<String>, Option<u64>) {
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let mut parsed = parse(Some(ty), &params, true).unwrap().query;
    parsed.total = phip_fhir::search::TotalMode::Accurate;
    let mut tx = s.begin_read().unwrap();
    let page = tx
        .search(&SearchRequest {
            query: parsed,
            cursor: PageCursor::First,
            page_size: 100,
            access: access.clone(),
        })
        .unwrap();
    let mut ids: Vec<String> = page.matches.into_iter().map(|m| m.id).collect();
    ids.extend(page.included.into_iter().map(|m| format!("+{}", m.id)));
    ids.sort();
    (ids, page.total)
}

fn visible(s: &dyn Store, ty: &str, id: &str, access: &Access) -> bool {
    s.begin_read().unwrap().visible(ty, id, access).unwrap()
}

/// Two counties of one province (320481 and 320115) and a city of another (440300).
fn fixture(s: &dyn Store) {
    put(
        s,
        "Patient",
        "alice",
        Some(held(patient("Alice"), "org-a", "320481")),
        None,
    )
    .unwrap();
    put(
        s,
        "Patient",
        "bob",
        Some(held(patient("Bob"), "org-b", "320115")),
        None,
    )
    .unwrap();
    put(
        s,
        "Patient",
        "carol",
        Some(held(patient("Carol"), "org-b", "320115")),
        None,
    )
    .unwrap();
    put(
        s,
        "Observation",
        "oa",
        Some(held(obs("alice", "A-SECRET"), "org-a", "320481")),
        None,
    )
    .unwrap();
    put(
        s,
        "Observation",
        "ob",
        Some(held(obs("bob", "B-SECRET"), "org-b", "320115")),
        None,
    )
    .unwrap();
    put(
        s,
        "Observation",
        "oc",
        Some(held(obs("carol", "C-SECRET"), "org-b", "320115")),
        None,
    )
    .unwrap();
    // A regional record: no holder division.
    put(s, "Observation", "or", Some(obs("alice", "REGIONAL")), None).unwrap();
    // Carol denies org-c.
    put(
        s,
        "Consent",
        "deny-c",
        Some(privacy_consent(
            "carol",
            json!({"type": "deny", "actor": actor("org-c")}),
        )),
        None,
    )
    .unwrap();
}

fn region_and_holder_decide(s: &dyn Store) {
    fixture(s);
    let a = org_caller("org-a", Some("320481"));
    let b = org_caller("org-b", Some("320115"));
    let c = org_caller("org-c", Some("320115"));
    let province = org_caller("bureau", Some("320000"));
    assert_eq!(
        search(s, "Observation", "", &a),
        (vec!["oa".into(), "or".into()], Some(2))
    );
    assert_eq!(
        search(s, "Observation", "", &b),
        (vec!["ob".into(), "oc".into(), "or".into()], Some(3))
    );
    // org-c is in org-b's county, but carol's consent denies it her records.
    assert_eq!(
        search(s, "Observation", "", &c),
        (vec!["ob".into(), "or".into()], Some(2))
    );
    assert_eq!(search(s, "Observation", "", &province).1, Some(4));
    assert!(!visible(s, "Observation", "oa", &b));
    assert!(visible(s, "Observation", "oa", &a));
    assert!(!visible(s, "Observation", "oc", &c));
    assert!(!visible(s, "Patient", "carol", &c));
    assert!(visible(s, "Patient", "bob", &c));
    // A resident sees their compartment, nothing else.
    assert_eq!(
        search(s, "Observation", "", &resident("alice")),
        (vec!["oa".into(), "or".into()], Some(2))
    );
    assert!(!visible(s, "Observation", "ob", &resident("alice")));
    assert!(visible(s, "Patient", "alice", &resident("alice")));
    // The server sees everything.
    assert_eq!(search(s, "Observation", "", &Access::Server).1, Some(4));
}

fn chains_has_includes_and_counts_see_only_visible_rows(s: &dyn Store) {
    fixture(s);
    let b = org_caller("org-b", Some("320115"));
    let c = org_caller("org-c", Some("320115"));
    // A chain through a hidden Patient matches nothing.
    assert_eq!(
        search(s, "Observation", "subject.name=Alice", &b).0.len(),
        0
    );
    assert_eq!(
        search(
            s,
            "Observation",
            "subject.name=Alice",
            &org_caller("org-a", Some("320481"))
        )
        .0,
        vec!["oa".to_owned(), "or".to_owned()]
    );
    // `_has` over a hidden Observation answers as if there were none.
    assert_eq!(
        search(
            s,
            "Patient",
            "_has:Observation:subject:value-string=C-SECRET",
            &c
        ),
        (Vec::new(), Some(0))
    );
    assert_eq!(
        search(
            s,
            "Patient",
            "_has:Observation:subject:value-string=C-SECRET",
            &b
        )
        .0,
        vec!["carol".to_owned()]
    );
    // Includes never bring in what the caller cannot read.
    assert_eq!(
        search(s, "Observation", "_id=or&_include=Observation:subject", &b).0,
        vec!["or".to_owned()]
    );
    assert_eq!(
        search(
            s,
            "Patient",
            "_id=bob,carol&_revinclude=Observation:subject",
            &c
        )
        .0,
        vec!["+ob".to_owned(), "bob".to_owned()]
    );
    // Paging one row at a time yields exactly the total, and only visible rows.
    let mut parsed = parse(
        Some("Observation"),
        &[("_sort".to_owned(), "value-string".to_owned())],
        true,
    )
    .unwrap()
    .query;
    parsed.total = phip_fhir::search::TotalMode::Accurate;
    let mut cursor = PageCursor::First;
    let mut seen = Vec::new();
    let mut tx = s.begin_read().unwrap();
    loop {
        let page = tx
            .search(&SearchRequest {
                query: parsed.clone(),
                cursor,
                page_size: 1,
                access: c.clone(),
            })
            .unwrap();
        assert_eq!(page.total, Some(2));
        seen.extend(page.matches.into_iter().map(|m| m.id));
        match page.next {
            Some(next) => {
                // The cursor carries the sort key of a visible row only.
                assert!(!next.contains("C-SECRET") && !next.contains("A-SECRET"));
                cursor = PageCursor::After(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, vec!["ob".to_owned(), "or".to_owned()]);
}

fn nested_provisions_periods_and_classes(s: &dyn Store) {
    fixture(s);
    // Bob denies everyone, except org-c for Observations in a period that covers NOW; and
    // within that exception, denies org-c again for a class that never matches here.
    put(
        s,
        "Consent",
        "bob-rules",
        Some(privacy_consent(
            "bob",
            json!({"type": "deny", "provision": [
                {"type": "permit", "actor": actor("org-c"), "class": [{"code": "Observation"}],
                 "period": {"start": "2020-01-01", "end": "2030-12-31"},
                 "provision": [{"type": "deny", "class": [{"code": "Condition"}]}]}
            ]}),
        )),
        None,
    )
    .unwrap();
    let c = org_caller("org-c", Some("320115"));
    let other_county = org_caller("org-x", Some("320481"));
    assert!(visible(s, "Observation", "ob", &c));
    // The root deny applies to Bob's Patient record (class Patient is not excepted).
    assert!(!visible(s, "Patient", "bob", &c));
    // Everyone else is denied, even in Bob's own county.
    assert!(!visible(
        s,
        "Observation",
        "ob",
        &org_caller("org-y", Some("320115"))
    ));
    // The holder still sees what it holds.
    assert!(visible(
        s,
        "Observation",
        "ob",
        &org_caller("org-b", Some("320115"))
    ));
    // A permit opens records outside the caller's region.
    put(
        s,
        "Consent",
        "alice-grant",
        Some(privacy_consent(
            "alice",
            json!({"type": "permit", "actor": actor("org-x")}),
        )),
        None,
    )
    .unwrap();
    assert!(!visible(
        s,
        "Observation",
        "oa",
        &org_caller("org-b", Some("320115"))
    ));
    assert!(visible(
        s,
        "Observation",
        "oa",
        &org_caller("org-x", Some("440300"))
    ));
    assert!(visible(s, "Observation", "oa", &other_county));
    // Withdrawn (inactive) and deleted Consents decide nothing.
    let mut inactive = privacy_consent("carol", json!({"type": "deny", "actor": actor("org-c")}));
    inactive["status"] = json!("inactive");
    put(s, "Consent", "deny-c", Some(inactive), None).unwrap();
    assert!(visible(s, "Observation", "oc", &c));
    put(
        s,
        "Consent",
        "deny-c",
        Some(privacy_consent(
            "carol",
            json!({"type": "deny", "actor": actor("org-c")}),
        )),
        None,
    )
    .unwrap();
    assert!(!visible(s, "Observation", "oc", &c));
    put(s, "Consent", "deny-c", None, None).unwrap();
    assert!(visible(s, "Observation", "oc", &c));
}

fn golden_records_private_state_and_breaking_the_glass(s: &dyn Store) {
    fixture(s);
    put(
        s,
        "Patient",
        "g-carol",
        Some(json!({"resourceType": "Patient",
            "meta": {"tag": [{"system": MPI_SYSTEM, "code": GOLDEN_TAG_CODE}]},
            "link": [{"type": "seealso", "other": {"reference": "Patient/carol"}}]})),
        None,
    )
    .unwrap();
    let b = org_caller("org-b", Some("320115"));
    let c = org_caller("org-c", Some("320115"));
    let a = org_caller("org-a", Some("320481"));
    // Visible through a visible source; hidden by the person's consent or when no source is.
    assert!(visible(s, "Patient", "g-carol", &b));
    assert!(!visible(s, "Patient", "g-carol", &c));
    assert!(!visible(s, "Patient", "g-carol", &a));
    assert!(visible(s, "Patient", "g-carol", &resident("carol")));
    let mut code = json!({"resourceType": "Basic", "code": {"text": "secret"}});
    mark_server_owned(&mut code, "sign-in-code");
    put(s, "Basic", "code", Some(code), None).unwrap();
    assert!(!visible(s, "Basic", "code", &b));
    assert!(visible(s, "Basic", "code", &Access::Server));
    // Breaking the glass sets consents and region aside, never the server's secrets.
    let glass = Access::Caller(Box::new(Visibility {
        types: TypeGrant::All,
        compartment_types: TypeGrant::Only(Vec::new()),
        compartment: Vec::new(),
        sharing: None,
    }));
    assert!(visible(s, "Observation", "oc", &glass));
    assert!(visible(s, "Observation", "oa", &glass));
    assert!(!visible(s, "Basic", "code", &glass));
    // Type grants bound what is visible.
    let only_patients = Access::Caller(Box::new(Visibility {
        types: TypeGrant::Only(vec!["Patient".into()]),
        compartment_types: TypeGrant::Only(Vec::new()),
        compartment: Vec::new(),
        sharing: None,
    }));
    assert!(!visible(s, "Observation", "oc", &only_patients));
    assert!(visible(s, "Patient", "carol", &only_patients));
}

fn history_and_compartment_apply_it_too(s: &dyn Store) {
    fixture(s);
    put(
        s,
        "Observation",
        "oc",
        Some(held(obs("carol", "C-SECRET-2"), "org-b", "320115")),
        None,
    )
    .unwrap();
    let c = org_caller("org-c", Some("320115"));
    let mut tx = s.begin_read().unwrap();
    let history = |tx: &mut Box<dyn phip_store::Transaction + '_>, access: &Access| {
        tx.history(&HistoryQuery {
            scope: HistoryScope::Type("Observation".into()),
            since: None,
            before: None,
            count: 100,
            cursor: None,
            access: access.clone(),
        })
        .unwrap()
    };
    let hidden = history(&mut tx, &c);
    assert_eq!(hidden.total, 2);
    assert!(hidden.versions.iter().all(|v| v.id != "oc"));
    assert_eq!(history(&mut tx, &Access::Server).total, 5);
    let (records, _) = tx
        .patient_compartment("carol", None, None, 100, None, &c)
        .unwrap();
    assert!(records.is_empty());
    let (records, _) = tx
        .patient_compartment("carol", None, None, 100, None, &Access::Server)
        .unwrap();
    let mut ids: Vec<String> = records.into_iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec!["carol", "deny-c", "oc"]);
}

/// A golden record linking `sources`.
fn golden(sources: &[&str]) -> Value {
    let links: Vec<Value> = sources
        .iter()
        .map(|s| json!({"type": "seealso", "other": {"reference": format!("Patient/{s}")}}))
        .collect();
    json!({"resourceType": "Patient",
        "meta": {"tag": [{"system": MPI_SYSTEM, "code": GOLDEN_TAG_CODE}]},
        "link": links})
}

/// A golden record's visibility follows its sources' labels as they are now, whichever was
/// written first: the store keeps a copy of them beside it (`index_source`), which must
/// change when a source appears, changes holder, or the golden record links others.
fn golden_records_follow_their_sources_labels(s: &dyn Store) {
    let a = org_caller("org-a", Some("320481"));
    let b = org_caller("org-b", Some("320115"));
    // Linked before the source exists (an import in any order): visible to nobody.
    put(s, "Patient", "g-1", Some(golden(&["src-1", "src-2"])), None).unwrap();
    assert!(!visible(s, "Patient", "g-1", &a));
    assert!(visible(s, "Patient", "g-1", &Access::Server));
    // The source appears, held in org-a's county: org-a sees the person, org-b does not.
    put(
        s,
        "Patient",
        "src-1",
        Some(held(patient("One"), "org-a", "320481")),
        None,
    )
    .unwrap();
    assert!(visible(s, "Patient", "g-1", &a));
    assert!(!visible(s, "Patient", "g-1", &b));
    // The server moves the record to org-b: the person follows.
    put(
        s,
        "Patient",
        "src-1",
        Some(held(patient("One"), "org-b", "320115")),
        None,
    )
    .unwrap();
    assert!(!visible(s, "Patient", "g-1", &a));
    assert!(visible(s, "Patient", "g-1", &b));
    // A second source held by org-a: both see the person; searches agree.
    put(
        s,
        "Patient",
        "src-2",
        Some(held(patient("Two"), "org-a", "320481")),
        None,
    )
    .unwrap();
    assert!(visible(s, "Patient", "g-1", &a));
    assert_eq!(
        search(s, "Patient", "_id=g-1", &a),
        (vec!["g-1".into()], Some(1))
    );
    // The golden record unlinks src-2: org-a loses the person again.
    put(s, "Patient", "g-1", Some(golden(&["src-1"])), None).unwrap();
    assert!(!visible(s, "Patient", "g-1", &a));
    assert!(visible(s, "Patient", "g-1", &b));
    assert_eq!(search(s, "Patient", "_id=g-1", &a), (vec![], Some(0)));
    // The source's resident denies another organisation of the county: it loses the person,
    // the holder keeps it.
    let x = org_caller("org-x", Some("320115"));
    assert!(visible(s, "Patient", "g-1", &x), "same county");
    put(
        s,
        "Consent",
        "deny-x",
        Some(privacy_consent(
            "src-1",
            json!({"type": "deny", "actor": actor("org-x")}),
        )),
        None,
    )
    .unwrap();
    assert!(!visible(s, "Patient", "g-1", &x));
    assert!(visible(s, "Patient", "g-1", &b));
    // ... and a permit opens it to an organisation of another province.
    let far = org_caller("org-far", Some("440300"));
    assert!(!visible(s, "Patient", "g-1", &far));
    put(
        s,
        "Consent",
        "permit-far",
        Some(privacy_consent(
            "src-1",
            json!({"type": "permit", "actor": actor("org-far")}),
        )),
        None,
    )
    .unwrap();
    assert!(visible(s, "Patient", "g-1", &far));
}

/// A resident's compartment holds what names them now: a second patient a record names, a
/// subject that changed after the record was created (on Citus these records live on
/// another patient's shard).
fn compartment_follows_the_patients_a_record_names(s: &dyn Store) {
    for p in ["p1", "p2", "p3"] {
        put(s, "Patient", p, Some(patient(p)), None).unwrap();
    }
    let mut shared = obs("p1", "shared");
    shared["performer"] = json!([{"reference": "Patient/p2"}]);
    put(s, "Observation", "o-shared", Some(shared), None).unwrap();
    put(s, "Observation", "o-moved", Some(obs("p1", "moved")), None).unwrap();
    let compartment = |patient: &str, access: &Access| {
        let mut tx = s.begin_read().unwrap();
        let mut ids = Vec::new();
        let mut cursor = None;
        // Pages of one, so that the order across shards is exercised too.
        loop {
            let (page, next) = tx
                .patient_compartment(patient, None, None, 1, cursor.as_deref(), access)
                .unwrap();
            ids.extend(page.into_iter().map(|r| r.id));
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        ids.sort();
        ids
    };
    assert_eq!(
        compartment("p1", &Access::Server),
        ["o-moved", "o-shared", "p1"]
    );
    assert_eq!(compartment("p2", &Access::Server), ["o-shared", "p2"]);
    assert_eq!(compartment("p2", &resident("p2")), ["o-shared", "p2"]);
    assert!(visible(s, "Observation", "o-shared", &resident("p2")));
    // The subject changes: the record leaves p1's compartment for p3's.
    put(s, "Observation", "o-moved", Some(obs("p3", "moved")), None).unwrap();
    assert_eq!(compartment("p1", &Access::Server), ["o-shared", "p1"]);
    assert_eq!(compartment("p3", &Access::Server), ["o-moved", "p3"]);
    assert_eq!(compartment("p3", &resident("p3")), ["o-moved", "p3"]);
    assert!(!visible(s, "Observation", "o-moved", &resident("p1")));
    // The second patient is dropped.
    put(
        s,
        "Observation",
        "o-shared",
        Some(obs("p1", "shared")),
        None,
    )
    .unwrap();
    assert_eq!(compartment("p2", &Access::Server), ["p2"]);
    // A deleted record leaves every compartment.
    put(s, "Observation", "o-moved", None, None).unwrap();
    assert_eq!(compartment("p3", &Access::Server), ["p3"]);
    // Reads by id find them all wherever they live.
    let mut tx = s.begin_read().unwrap();
    assert!(tx.read("Observation", "o-shared").unwrap().is_some());
    assert_eq!(
        tx.vread("Observation", "o-moved", 1)
            .unwrap()
            .and_then(|r| r.resource)
            .map(|b| b["subject"]["reference"].clone()),
        Some(json!("Patient/p1"))
    );
    assert!(tx
        .read("Observation", "o-moved")
        .unwrap()
        .unwrap()
        .is_deleted());
}

both!(
    region_and_holder_decide,
    chains_has_includes_and_counts_see_only_visible_rows,
    nested_provisions_periods_and_classes,
    golden_records_private_state_and_breaking_the_glass,
    history_and_compartment_apply_it_too,
    golden_records_follow_their_sources_labels,
    compartment_follows_the_patients_a_record_names,
);

/// A golden record and its source as a v3 database holds them (`index_source` did not
/// exist): the v4 migration fills `index_source` from them, so the golden record stays
/// visible through its source.
fn write_v3_world(s: &dyn Store) {
    put(
        s,
        "Patient",
        "src-old",
        Some(held(patient("Old"), "org-a", "320481")),
        None,
    )
    .unwrap();
    put(s, "Patient", "g-old", Some(golden(&["src-old"])), None).unwrap();
}

fn check_v4_world(s: &dyn Store) {
    let a = org_caller("org-a", Some("320481"));
    let b = org_caller("org-b", Some("320115"));
    assert!(visible(s, "Patient", "g-old", &a));
    assert!(!visible(s, "Patient", "g-old", &b));
}

#[test]
fn v4_migration_fills_index_source_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = phip_store::sqlite::SqliteStore::open(dir.path()).unwrap();
        write_v3_world(&s);
    }
    {
        let conn = rusqlite::Connection::open(dir.path().join("phip.db")).unwrap();
        conn.execute_batch("DROP TABLE index_source; PRAGMA user_version = 3")
            .unwrap();
    }
    let s = phip_store::sqlite::SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.schema_version(), 4);
    check_v4_world(&s);
}

#[test]
fn v4_migration_fills_index_source_postgres() {
    let Some(cluster) = phip_testkit::PgCluster::shared() else {
        return;
    };
    let url = cluster.fresh_database();
    {
        let s = phip_store::postgres::PostgresStore::connect(&url).unwrap();
        write_v3_world(&s);
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("DROP TABLE index_source; UPDATE phip_schema SET version = 3")
        .unwrap();
    let s = phip_store::postgres::PostgresStore::connect(&url).unwrap();
    assert_eq!(s.schema_version(), 4);
    check_v4_world(&s);
}
