//! End-to-end search on real resources on both backends: extraction by `phip_fhir`, queries
//! parsed from URL parameters, translated to SQL by the shared generator and run by SQLite and
//! PostgreSQL with the same expected results.

mod support;

use phip_fhir::search::query::parse;
use phip_store::{PageCursor, SearchPage, SearchRequest, Store, StoreError, WriteRequest};
use serde_json::{json, Value};

fn put(store: &dyn Store, body: Value) {
    let ty = body["resourceType"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    let mut tx = store.begin_write().unwrap();
    tx.write(WriteRequest {
        resource_type: ty,
        id,
        resource: Some(body),
        expected_version: None,
    })
    .unwrap();
    tx.commit().unwrap();
}

fn delete(store: &dyn Store, ty: &str, id: &str) {
    let mut tx = store.begin_write().unwrap();
    tx.write(WriteRequest {
        resource_type: ty.into(),
        id: id.into(),
        resource: None,
        expected_version: None,
    })
    .unwrap();
    tx.commit().unwrap();
}

fn request(ty: Option<&str>, query: &str, cursor: PageCursor, page_size: usize) -> SearchRequest {
    let params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let parsed = parse(ty, &params, true).unwrap_or_else(|e| panic!("{query}: {e:?}"));
    SearchRequest {
        query: parsed.query,
        cursor,
        page_size,
        access: phip_store::Access::Server,
    }
}

fn run(store: &dyn Store, req: &SearchRequest) -> Result<SearchPage, StoreError> {
    let mut tx = store.begin_read()?;
    tx.search(req)
}

fn ids_of(page: &SearchPage) -> Vec<String> {
    page.matches.iter().map(|r| r.id.clone()).collect()
}

fn search(store: &dyn Store, ty: &str, query: &str) -> Vec<String> {
    let page = run(store, &request(Some(ty), query, PageCursor::First, 100)).unwrap();
    ids_of(&page)
}

fn sorted(store: &dyn Store, ty: &str, query: &str) -> Vec<String> {
    let mut v = search(store, ty, query);
    v.sort();
    v
}

fn fixture(s: &dyn Store) {
    let mr = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]});
    put(
        s,
        json!({"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1980-05-01",
        "name": [{"family": "Smith", "given": ["John"]}],
        "identifier": [{"system": "sys", "value": "111", "type": mr}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "p2", "gender": "female", "birthDate": "1990-01-01",
        "name": [{"family": "Smíth", "given": ["Anna"]}],
        "identifier": [{"system": "sys", "value": "222"}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "p3", "gender": "male", "birthDate": "1980",
        "name": [{"family": "Jones", "given": ["Bob"]}],
        "identifier": [{"system": "other", "value": "111"}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "p4", "name": [{"family": "Müller"}]}),
    );
    let loinc = |code: &str, display: &str| json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}]});
    put(
        s,
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": loinc("1234-5", "Glucose"), "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-01-02",
        "valueQuantity": {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}),
    );
    put(
        s,
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
        "code": loinc("1234-5", "Glucose"), "subject": {"reference": "Patient/p2"},
        "effectiveDateTime": "2021",
        "valueQuantity": {"value": 7, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}),
    );
    put(
        s,
        json!({"resourceType": "Observation", "id": "o3", "status": "amended",
        "code": loinc("9999-9", "Weight"), "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-06-01T10:00:00Z",
        "valueQuantity": {"value": 100, "unit": "kilogram", "system": "http://unitsofmeasure.org", "code": "kg"}}),
    );
    put(
        s,
        json!({"resourceType": "Observation", "id": "o4", "status": "final",
        "code": loinc("9999-9", "Weight"),
        "subject": {"identifier": {"system": "sys", "value": "111"}}}),
    );
    put(
        s,
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}}),
    );
    put(
        s,
        json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final",
        "subject": {"reference": "Patient/p1"}, "prediction": [{"probabilityDecimal": 0.8}]}),
    );
    put(
        s,
        json!({"resourceType": "ValueSet", "id": "vs1", "status": "active",
        "url": "http://example.org/fhir/ValueSet/vs1"}),
    );
}

fn string_search(s: &dyn Store) {
    fixture(s);
    assert_eq!(sorted(s, "Patient", "name=smith"), ["p1", "p2"]);
    assert_eq!(sorted(s, "Patient", "name=SMI"), ["p1", "p2"]);
    assert_eq!(sorted(s, "Patient", "name:exact=Smith"), ["p1"]);
    assert_eq!(sorted(s, "Patient", "name:contains=mit"), ["p1", "p2"]);
    assert_eq!(sorted(s, "Patient", "family=jon"), ["p3"]);
    assert_eq!(sorted(s, "Patient", "name=muller"), ["p4"]);
    assert_eq!(sorted(s, "Patient", "name=smith,jones"), ["p1", "p2", "p3"]);
    assert_eq!(sorted(s, "Patient", "name=smith&given=anna"), ["p2"]);
    assert!(search(s, "Patient", "name=zz").is_empty());
    assert_eq!(
        sorted(s, "Patient", "name:contains=%"),
        Vec::<String>::new()
    );
}

fn date_search(s: &dyn Store) {
    fixture(s);
    assert_eq!(sorted(s, "Patient", "birthdate=1980"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "birthdate=1980-05-01"), ["p1"]);
    assert_eq!(sorted(s, "Patient", "birthdate=gt1985"), ["p2"]);
    assert_eq!(sorted(s, "Patient", "birthdate=lt1985"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "birthdate=ge1990-01-01"), ["p2"]);
    assert_eq!(sorted(s, "Patient", "birthdate=le1980-05-01"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "birthdate=sa1980"), ["p2"]);
    assert_eq!(sorted(s, "Patient", "birthdate=eb1990"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "birthdate=ne1980"), ["p2"]);
    assert_eq!(sorted(s, "Patient", "birthdate:missing=true"), ["p4"]);
    assert_eq!(
        sorted(s, "Patient", "birthdate:missing=false"),
        ["p1", "p2", "p3"]
    );
    assert_eq!(
        sorted(s, "Patient", "birthdate=ge1980&birthdate=lt1981"),
        ["p1", "p3"]
    );
    assert_eq!(sorted(s, "Observation", "date=2020"), ["o1", "o3"]);
    assert_eq!(
        sorted(s, "Observation", "date=2020-06-01T10:00:00Z"),
        ["o3"]
    );
    // `ap` widens by 10% of the distance to now: years ago, that is months.
    assert_eq!(
        sorted(s, "Observation", "date=ap2020-06-02"),
        ["o1", "o2", "o3"]
    );
    assert!(search(s, "Observation", "date=ap2024-06-02").is_empty());
}

fn token_search(s: &dyn Store) {
    fixture(s);
    assert_eq!(sorted(s, "Patient", "gender=male"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "gender:not=male"), ["p2", "p4"]);
    assert_eq!(sorted(s, "Patient", "identifier=sys|111"), ["p1"]);
    assert_eq!(sorted(s, "Patient", "identifier=111"), ["p1", "p3"]);
    assert_eq!(sorted(s, "Patient", "identifier=sys|"), ["p1", "p2"]);
    assert!(search(s, "Patient", "identifier=|111").is_empty());
    assert_eq!(
        sorted(
            s,
            "Patient",
            "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|111"
        ),
        ["p1"]
    );
    assert_eq!(
        sorted(s, "Observation", "code=http://loinc.org|1234-5"),
        ["o1", "o2"]
    );
    assert_eq!(sorted(s, "Observation", "code:text=gluc"), ["o1", "o2"]);
    assert_eq!(
        sorted(s, "Observation", "code=1234-5,9999-9&status=amended"),
        ["o3"]
    );
    assert_eq!(sorted(s, "Patient", "_id=p1,p3"), ["p1", "p3"]);
    assert!(matches!(
        run(
            s,
            &request(
                Some("Observation"),
                "code:in=http://x/vs",
                PageCursor::First,
                10
            )
        ),
        Err(StoreError::UnsupportedSearch(_))
    ));
}

fn number_quantity_uri_search(s: &dyn Store) {
    fixture(s);
    assert_eq!(sorted(s, "Observation", "value-quantity=5.4"), ["o1"]);
    assert_eq!(sorted(s, "Observation", "value-quantity=5"), ["o1"]);
    assert_eq!(sorted(s, "Observation", "value-quantity=gt6"), ["o2", "o3"]);
    assert_eq!(
        sorted(
            s,
            "Observation",
            "value-quantity=gt6|http://unitsofmeasure.org|mg"
        ),
        ["o2"]
    );
    assert_eq!(
        sorted(s, "Observation", "value-quantity=lt200||kilogram"),
        ["o3"]
    );
    assert_eq!(sorted(s, "Observation", "value-quantity=ap7.5"), ["o2"]);
    assert_eq!(sorted(s, "RiskAssessment", "probability=gt0.5"), ["r1"]);
    assert_eq!(sorted(s, "RiskAssessment", "probability=0.8"), ["r1"]);
    assert!(search(s, "RiskAssessment", "probability=0.5").is_empty());
    assert_eq!(
        sorted(s, "ValueSet", "url=http://example.org/fhir/ValueSet/vs1"),
        ["vs1"]
    );
    assert_eq!(
        sorted(s, "ValueSet", "url:below=http://example.org/fhir/"),
        ["vs1"]
    );
    assert_eq!(
        sorted(
            s,
            "ValueSet",
            "url:above=http://example.org/fhir/ValueSet/vs1/x"
        ),
        ["vs1"]
    );
    assert!(search(s, "ValueSet", "url=http://example.org/fhir").is_empty());
}

fn composite_search(s: &dyn Store) {
    fixture(s);
    assert_eq!(
        sorted(
            s,
            "Observation",
            "code-value-quantity=http://loinc.org|1234-5$gt6"
        ),
        ["o2"]
    );
    assert!(search(
        s,
        "Observation",
        "code-value-quantity=http://loinc.org|9999-9$lt10"
    )
    .is_empty());
    assert_eq!(
        sorted(s, "Observation", "code-value-quantity:missing=true"),
        ["o4"]
    );
}

fn reference_chain_and_has(s: &dyn Store) {
    fixture(s);
    assert_eq!(sorted(s, "Observation", "subject=Patient/p1"), ["o1", "o3"]);
    assert_eq!(sorted(s, "Observation", "patient=p1"), ["o1", "o3"]);
    assert_eq!(sorted(s, "Observation", "subject:Patient=p1"), ["o1", "o3"]);
    assert_eq!(
        sorted(s, "Observation", "subject:identifier=sys|111"),
        ["o4"]
    );
    assert_eq!(
        sorted(s, "Observation", "subject:missing=true"),
        Vec::<String>::new()
    );
    assert_eq!(
        sorted(s, "Observation", "subject.name=smith"),
        ["o1", "o2", "o3"]
    );
    assert_eq!(
        sorted(s, "Observation", "subject:Patient.gender=female"),
        ["o2"]
    );
    assert_eq!(
        sorted(s, "Observation", "patient.identifier=sys|111&code=9999-9"),
        ["o3"]
    );
    assert_eq!(
        sorted(s, "Patient", "_has:Observation:subject:code=9999-9"),
        ["p1"]
    );
    assert_eq!(
        sorted(s, "Patient", "_has:Observation:patient:status=final"),
        ["p1", "p2"]
    );
    assert_eq!(
        sorted(
            s,
            "Patient",
            "_has:Observation:subject:code=1234-5&gender=female"
        ),
        ["p2"]
    );
    assert!(search(s, "Patient", "_has:Encounter:subject:status=planned").is_empty());
}

fn updates_and_deletes_replace_index_rows(s: &dyn Store) {
    fixture(s);
    put(
        s,
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Brown"}]}),
    );
    assert_eq!(sorted(s, "Patient", "name=smith"), ["p2"]);
    assert_eq!(sorted(s, "Patient", "name=brown"), ["p1"]);
    assert_eq!(sorted(s, "Patient", "gender=male"), ["p3"]);
    delete(s, "Patient", "p2");
    assert!(search(s, "Patient", "name=smith").is_empty());
    assert_eq!(sorted(s, "Patient", ""), ["p1", "p3", "p4"]);
    // A chain never reaches a deleted target.
    assert!(search(s, "Observation", "subject:Patient.gender=female").is_empty());
}

fn sorting(s: &dyn Store) {
    fixture(s);
    assert_eq!(
        search(s, "Patient", "_sort=birthdate"),
        ["p3", "p1", "p2", "p4"]
    );
    assert_eq!(
        search(s, "Patient", "_sort=-birthdate"),
        ["p2", "p3", "p1", "p4"]
    );
    assert_eq!(
        search(s, "Patient", "_sort=family"),
        ["p3", "p4", "p1", "p2"]
    );
    assert_eq!(
        search(s, "Patient", "_sort=gender,-_id"),
        ["p2", "p3", "p1", "p4"]
    );
    assert_eq!(
        search(s, "Patient", "_sort=-_lastUpdated"),
        ["p4", "p3", "p2", "p1"]
    );
    assert_eq!(
        search(s, "Observation", "_sort=-value-quantity"),
        ["o3", "o2", "o1", "o4"]
    );
}

fn walk(s: &dyn Store, ty: &str, query: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = PageCursor::First;
    loop {
        let page = run(s, &request(Some(ty), query, cursor, size)).unwrap();
        out.extend(ids_of(&page));
        match page.next {
            Some(n) => cursor = PageCursor::After(n),
            None => return out,
        }
    }
}

/// Walks back from the last page by `previous` links; returns the rows before the last page.
fn walk_back(s: &dyn Store, ty: &str, query: &str, size: usize) -> Vec<String> {
    let mut cursor = PageCursor::First;
    let mut last = loop {
        let page = run(s, &request(Some(ty), query, cursor, size)).unwrap();
        match page.next.clone() {
            Some(n) => cursor = PageCursor::After(n),
            None => break page,
        }
    };
    let mut out: Vec<String> = Vec::new();
    while let Some(prev) = last.previous.clone() {
        last = run(s, &request(Some(ty), query, PageCursor::Before(prev), size)).unwrap();
        assert!(last.next.is_some());
        let mut ids = ids_of(&last);
        ids.extend(out);
        out = ids;
    }
    out
}

fn keyset_paging_in_every_order(s: &dyn Store) {
    fixture(s);
    for q in [
        "",
        "_sort=birthdate",
        "_sort=-birthdate",
        "_sort=family",
        "_sort=gender,-_id",
        "_sort=-gender,birthdate",
    ] {
        let all = search(s, "Patient", q);
        assert_eq!(all.len(), 4);
        for size in 1..=4 {
            assert_eq!(walk(s, "Patient", q, size), all, "{q} by {size}");
            let last_page = (all.len() - 1) / size * size;
            assert_eq!(
                walk_back(s, "Patient", q, size),
                all[..last_page],
                "{q} back by {size}"
            );
        }
    }
}

fn paging_forward_and_back_under_concurrent_inserts(s: &dyn Store) {
    for i in 0..10 {
        put(
            s,
            json!({"resourceType": "Patient", "id": format!("a{i:02}"), "name": [{"family": format!("F{i:02}")}]}),
        );
    }
    let q = "_sort=family";
    let first = run(s, &request(Some("Patient"), q, PageCursor::First, 3)).unwrap();
    assert_eq!(ids_of(&first), ["a00", "a01", "a02"]);
    assert!(first.previous.is_none());
    assert_eq!(first.total, None);
    // Someone inserts a resource that sorts before the current position, and one after.
    put(
        s,
        json!({"resourceType": "Patient", "id": "b", "name": [{"family": "F00a"}]}),
    );
    put(
        s,
        json!({"resourceType": "Patient", "id": "c", "name": [{"family": "F05a"}]}),
    );
    let second = run(
        s,
        &request(
            Some("Patient"),
            q,
            PageCursor::After(first.next.clone().unwrap()),
            3,
        ),
    )
    .unwrap();
    assert_eq!(ids_of(&second), ["a03", "a04", "a05"]);
    let third = run(
        s,
        &request(
            Some("Patient"),
            q,
            PageCursor::After(second.next.clone().unwrap()),
            3,
        ),
    )
    .unwrap();
    assert_eq!(ids_of(&third), ["c", "a06", "a07"]);
    // Back from the third page: the three before a03…: now including b.
    let back = run(
        s,
        &request(
            Some("Patient"),
            q,
            PageCursor::Before(third.previous.clone().unwrap()),
            3,
        ),
    )
    .unwrap();
    assert_eq!(ids_of(&back), ["a03", "a04", "a05"]);
    let back2 = run(
        s,
        &request(
            Some("Patient"),
            q,
            PageCursor::Before(back.previous.clone().unwrap()),
            3,
        ),
    )
    .unwrap();
    assert_eq!(ids_of(&back2), ["b", "a01", "a02"]);
    assert!(back2.previous.is_some());
    let back3 = run(
        s,
        &request(
            Some("Patient"),
            q,
            PageCursor::Before(back2.previous.clone().unwrap()),
            3,
        ),
    )
    .unwrap();
    assert_eq!(ids_of(&back3), ["a00"]);
    assert!(back3.previous.is_none());
    assert!(back3.next.is_some());
    // Cursors are opaque and checked.
    assert!(matches!(
        run(
            s,
            &request(Some("Patient"), q, PageCursor::After("nonsense".into()), 3)
        ),
        Err(StoreError::InvalidCursor)
    ));
    let other_sort = run(
        s,
        &request(
            Some("Patient"),
            "_sort=family,birthdate",
            PageCursor::After(first.next.unwrap()),
            3,
        ),
    );
    assert!(matches!(other_sort, Err(StoreError::InvalidCursor)));
}

fn totals(s: &dyn Store) {
    fixture(s);
    let page = run(
        s,
        &request(Some("Patient"), "_total=accurate", PageCursor::First, 2),
    )
    .unwrap();
    assert_eq!(page.total, Some(4));
    assert_eq!(page.matches.len(), 2);
    let page = run(s, &request(Some("Patient"), "", PageCursor::First, 2)).unwrap();
    assert_eq!(page.total, None);
    let page = run(s, &request(Some("Patient"), "", PageCursor::First, 10)).unwrap();
    assert_eq!(page.total, Some(4));
    let page = run(
        s,
        &request(
            Some("Patient"),
            "_total=accurate&gender=male",
            PageCursor::First,
            0,
        ),
    )
    .unwrap();
    assert_eq!(page.total, Some(2));
    assert!(page.matches.is_empty());
    let page = run(
        s,
        &request(Some("Basic"), "_total=accurate", PageCursor::First, 10),
    )
    .unwrap();
    assert_eq!(page.total, Some(0));
}

fn includes_and_revincludes(s: &dyn Store) {
    fixture(s);
    let inc = |ty: &str, q: &str| {
        let page = run(s, &request(Some(ty), q, PageCursor::First, 100)).unwrap();
        let mut included: Vec<String> = page
            .included
            .iter()
            .map(|r| format!("{}/{}", r.resource_type, r.id))
            .collect();
        included.sort();
        (ids_of(&page), included)
    };
    let (m, i) = inc("Observation", "code=1234-5&_include=Observation:subject");
    assert_eq!(m, ["o1", "o2"]);
    assert_eq!(i, ["Patient/p1", "Patient/p2"]);
    let (_, i) = inc(
        "Observation",
        "_include=Observation:subject:Patient&_id=o1,o3",
    );
    assert_eq!(i, ["Patient/p1"]);
    let (_, i) = inc("Patient", "_id=p1&_revinclude=Observation:subject");
    assert_eq!(i, ["Observation/o1", "Observation/o3"]);
    let (_, i) = inc("Patient", "_id=p1&_revinclude=*");
    assert_eq!(
        i,
        [
            "Encounter/e1",
            "Observation/o1",
            "Observation/o3",
            "RiskAssessment/r1"
        ]
    );
    let (_, i) = inc("Observation", "_id=o1&_include=*");
    assert_eq!(i, ["Patient/p1"]);
    // Iterate: observations → patient → the patient's other observations.
    let (_, i) = inc(
        "Observation",
        "_id=o1&_include=Observation:subject&_revinclude:iterate=Observation:subject",
    );
    assert_eq!(i, ["Observation/o3", "Patient/p1"]);
    let (_, i) = inc(
        "Observation",
        "_id=o1&_include=Observation:subject&_revinclude=Observation:subject",
    );
    assert_eq!(i, ["Patient/p1"]);
    // Includes never contain page matches or deleted resources.
    let (_, i) = inc(
        "Observation",
        "subject=Patient/p1&_include=Observation:subject&_revinclude:iterate=Observation:subject",
    );
    assert_eq!(i, ["Patient/p1"]);
    delete(s, "Patient", "p2");
    let (_, i) = inc("Observation", "code=1234-5&_include=Observation:subject");
    assert_eq!(i, ["Patient/p1"]);
}

fn system_search_and_last_updated(s: &dyn Store) {
    fixture(s);
    let page = run(s, &request(None, "_id=p1,o1,e1", PageCursor::First, 100)).unwrap();
    let mut got: Vec<String> = page
        .matches
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    got.sort();
    assert_eq!(got, ["Encounter/e1", "Observation/o1", "Patient/p1"]);
    let page = run(
        s,
        &request(
            None,
            "_type=Patient,Encounter&_id=p1,o1,e1",
            PageCursor::First,
            100,
        ),
    )
    .unwrap();
    assert_eq!(page.matches.len(), 2);
    let now = chrono::Utc::now();
    let later = (now + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let earlier = (now - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(
        search(s, "Patient", &format!("_lastUpdated=gt{earlier}")).len(),
        4
    );
    assert!(search(s, "Patient", &format!("_lastUpdated=gt{later}")).is_empty());
}

fn patient_compartment(s: &dyn Store) {
    fixture(s);
    let mut tx = s.begin_read().unwrap();
    let (all, next) = tx
        .patient_compartment("p1", None, None, 100, None, &phip_store::Access::Server)
        .unwrap();
    let mut got: Vec<String> = all
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "Encounter/e1",
            "Observation/o1",
            "Observation/o3",
            "Patient/p1",
            "RiskAssessment/r1"
        ]
    );
    assert!(next.is_none());
    // Paged.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = tx
            .patient_compartment(
                "p1",
                None,
                None,
                2,
                cursor.as_deref(),
                &phip_store::Access::Server,
            )
            .unwrap();
        paged.extend(page.into_iter().map(|r| r.id));
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(paged.len(), 5);
    let only = ["Observation".to_owned()];
    let (obs, _) = tx
        .patient_compartment(
            "p1",
            Some(&only),
            None,
            100,
            None,
            &phip_store::Access::Server,
        )
        .unwrap();
    assert_eq!(obs.len(), 2);
}

both!(
    string_search,
    date_search,
    token_search,
    number_quantity_uri_search,
    composite_search,
    reference_chain_and_has,
    updates_and_deletes_replace_index_rows,
    sorting,
    keyset_paging_in_every_order,
    paging_forward_and_back_under_concurrent_inserts,
    totals,
    includes_and_revincludes,
    system_search_and_last_updated,
    patient_compartment,
);
