//! The adversarial access-control suite (issue #16): every FHIR interaction and operation ×
//! the caller classes of `docs/security.md`, on both backends, proving that hidden data never
//! leaks.
//!
//! Rows (`adversarial/callers.rs`): another resident (bob's `patient/` token against alice), a
//! consent-denied organisation (org-c against carol), an organisation in another division
//! (org-b against alice, held by org-a in 320481), a user without the scope or role the
//! interaction needs, and nobody (no token, a garbage token). Each case checks that no secret
//! of a record the caller may not see appears anywhere in the reply (status line, headers,
//! body; plain, percent-encoded or base64), that the answer about a hidden target equals the
//! answer about an absent one, and — per interaction — that a legitimate caller (the resident,
//! the holding organisation, the operator) does get the data. Each test lists every failing
//! case; `case_table_figure` prints how many (interaction × caller) cases the suite checks.

mod common;

#[path = "adversarial/callers.rs"]
mod callers;
#[path = "adversarial/fixture.rs"]
mod fixture;
#[path = "adversarial/harness.rs"]
mod harness;
#[path = "adversarial/leak.rs"]
mod leak;
#[path = "adversarial/matrix.rs"]
mod matrix;

use callers::*;
use common::Backend;
use fixture::{Who, World, ICD10, LOINC, OBS_ID_SYSTEM, RESIDENT_ID};
use harness::{Auth, Node, Request};
use leak::Matrix;
use serde_json::{json, Value};

/// The victim's records an attacker goes after by id: (type, id).
fn victim_records(w: &World, victim: Who) -> Vec<(&'static str, String)> {
    let r = w.resident(victim);
    let mut records = vec![
        ("Patient", r.patient.clone()),
        ("Observation", r.observation.clone()),
        ("Condition", r.condition.clone()),
        ("MedicationRequest", r.medication.clone()),
    ];
    if victim == Who::Alice {
        records.push(("Observation", w.alice_cd4.clone()));
        records.push(("Encounter", w.alice_encounter.clone()));
        records.push(("DocumentReference", w.alice_document.clone()));
    }
    records
}

/// A fixture on a fresh server.
async fn setup(backend: Backend) -> (Node, World) {
    let node = Node::start(backend).await;
    let world = World::build(&node).await;
    (node, world)
}

// ---------------------------------------------------------------------------------------------
// Reads by id: read, vread, instance history, batch GET, $everything, golden records.

async fn reads_by_id(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("reads_by_id");

    run_pairs(&mut m, &node, &w, "read", |a| {
        victim_records(&w, a.victim)
            .into_iter()
            .map(|(rt, id)| {
                let absent = absent_id();
                Pair::new(
                    Request::get(format!("{rt}/{id}")),
                    Request::get(format!("{rt}/{absent}")),
                    &[&id, &absent],
                )
                .expect(&hidden_read_status(a, rt))
            })
            .collect()
    })
    .await;
    run_pairs(&mut m, &node, &w, "vread", |a| {
        victim_records(&w, a.victim)
            .into_iter()
            .map(|(rt, id)| {
                let absent = absent_id();
                Pair::new(
                    Request::get(format!("{rt}/{id}/_history/1")),
                    Request::get(format!("{rt}/{absent}/_history/1")),
                    &[&id, &absent],
                )
                .expect(&hidden_read_status(a, rt))
            })
            .collect()
    })
    .await;
    run_pairs(&mut m, &node, &w, "instance history", |a| {
        victim_records(&w, a.victim)
            .into_iter()
            .map(|(rt, id)| {
                let absent = absent_id();
                Pair::new(
                    Request::get(format!("{rt}/{id}/_history")),
                    Request::get(format!("{rt}/{absent}/_history")),
                    &[&id, &absent],
                )
                .expect(&hidden_read_status(a, rt))
            })
            .collect()
    })
    .await;
    run_pairs(&mut m, &node, &w, "batch GET", |a| {
        let records = victim_records(&w, a.victim);
        let absent: Vec<String> = records.iter().map(|_| absent_id()).collect();
        let bundle = |ids: Vec<(&str, &str)>| {
            json!({"resourceType": "Bundle", "type": "batch", "entry": ids.iter().map(|(rt, id)| json!({
                "request": {"method": "GET", "url": format!("{rt}/{id}")}})).collect::<Vec<_>>()})
        };
        let hidden_body = bundle(records.iter().map(|(rt, id)| (*rt, id.as_str())).collect());
        let absent_body = bundle(
            records
                .iter()
                .zip(&absent)
                .map(|((rt, _), id)| (*rt, id.as_str()))
                .collect(),
        );
        let mut names: Vec<&str> = records.iter().map(|(_, id)| id.as_str()).collect();
        names.extend(absent.iter().map(String::as_str));
        vec![Pair::new(
            Request::post("", &hidden_body),
            Request::post("", &absent_body),
            &names,
        )]
    })
    .await;
    run_pairs(&mut m, &node, &w, "$everything", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        vec![Pair::new(
            Request::get(format!("Patient/{}/$everything", r.patient)),
            Request::get(format!("Patient/{absent}/$everything")),
            &[&r.patient, &absent],
        )
        .expect(&hidden_read_status(a, "Patient"))]
    })
    .await;
    run_pairs(&mut m, &node, &w, "golden record read", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        vec![Pair::new(
            Request::get(format!("Patient/{}", r.golden)),
            Request::get(format!("Patient/{absent}")),
            &[&r.golden, &absent],
        )
        .expect(&hidden_read_status(a, "Patient"))]
    })
    .await;
    // $everything of a patient the caller may see must still leave out the records it may
    // not: bob's Condition held by org-a (320481) is hidden from org-b and org-c.
    run_each(&mut m, &node, &w, "$everything", |_| {
        vec![Request::get(format!(
            "Patient/{}/$everything",
            w.bob.patient
        ))]
    })
    .await;

    // The legitimate callers get alice's records.
    for (rt, id) in victim_records(&w, Who::Alice) {
        let value = w
            .records
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.secrets.first().cloned())
            .unwrap_or_default();
        legit_all(
            &mut m,
            &node,
            &w,
            "read",
            &Request::get(format!("{rt}/{id}")),
            &value,
        )
        .await;
        legit_all(
            &mut m,
            &node,
            &w,
            "vread",
            &Request::get(format!("{rt}/{id}/_history/1")),
            &value,
        )
        .await;
        legit_all(
            &mut m,
            &node,
            &w,
            "instance history",
            &Request::get(format!("{rt}/{id}/_history")),
            &value,
        )
        .await;
    }
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.alice.observation)}}]});
    legit_all(
        &mut m,
        &node,
        &w,
        "batch GET",
        &Request::post("", &batch),
        &w.alice.observation_value,
    )
    .await;
    legit_all(
        &mut m,
        &node,
        &w,
        "$everything",
        &Request::get(format!("Patient/{}/$everything", w.alice.patient)),
        &w.alice.observation_value,
    )
    .await;
    // $everything adds what the compartment references (alice's Encounter names org-a's
    // doctor) for the callers who may see it; the attackers' rows above check that bob's
    // $everything, whose prescription names the same doctor, never carries it to org-b or
    // org-c, nor to bob himself.
    for caller in legit(&w, Who::Alice).into_iter().skip(1) {
        legit_gets(
            &mut m,
            &node,
            "$everything: referenced resources",
            &caller,
            &Request::get(format!("Patient/{}/$everything", w.alice.patient)),
            &w.org_a_doctor_name,
        )
        .await;
    }
    for caller in legit(&w, Who::Alice).into_iter().skip(1) {
        legit_gets(
            &mut m,
            &node,
            "golden record read",
            &caller,
            &Request::get(format!("Patient/{}", w.alice.golden)),
            &w.alice.family,
        )
        .await;
    }
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Searches: every kind of parameter, modifiers, counts and totals, POST _search, system search.

const NOSUCH: &str = "NOSUCH-VALUE-0000";

/// A search about a hidden value and the same search about a value nothing has.
fn search_pair(hidden: String, absent: String, names: &[&str]) -> Pair {
    Pair::new(Request::get(hidden), Request::get(absent), names)
}

async fn searches(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("searches");
    let alice = &w.alice;

    run_pairs(&mut m, &node, &w, "search: string", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!("Patient?family={}", r.family),
                format!("Patient?family={NOSUCH}"),
                &[&r.family, NOSUCH],
            ),
            search_pair(
                format!("Patient?name={}", r.given),
                format!("Patient?name={NOSUCH}"),
                &[&r.given, NOSUCH],
            ),
            search_pair(
                format!("Observation?value-string={}", r.observation_value),
                format!("Observation?value-string={NOSUCH}"),
                &[&r.observation_value, NOSUCH],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: token", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!("Patient?identifier={}|{}", r.mrn_system, r.mrn),
                format!("Patient?identifier={}|{NOSUCH}", r.mrn_system),
                &[&r.mrn, NOSUCH],
            ),
            search_pair(
                format!("Patient?identifier={}", r.resident_id),
                format!("Patient?identifier={}", absent_resident_id()),
                &[&r.resident_id, &absent_resident_id()],
            ),
            search_pair(
                format!(
                    "Observation?identifier={OBS_ID_SYSTEM}|{}",
                    r.observation_identifier
                ),
                format!("Observation?identifier={OBS_ID_SYSTEM}|{NOSUCH}"),
                &[&r.observation_identifier, NOSUCH],
            ),
            search_pair(
                format!("Observation?code={LOINC}|{}", r.observation_code),
                format!("Observation?code={LOINC}|0000-0"),
                &[r.observation_code, "0000-0"],
            ),
            search_pair(
                format!("Condition?code={ICD10}|{}", r.condition_code),
                format!("Condition?code={ICD10}|Z99.9"),
                &[r.condition_code, "Z99.9"],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: reference", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        vec![
            search_pair(
                format!("Observation?subject=Patient/{}", r.patient),
                format!("Observation?subject=Patient/{absent}"),
                &[&r.patient, &absent],
            ),
            search_pair(
                format!("Condition?patient={}", r.patient),
                format!("Condition?patient={absent}"),
                &[&r.patient, &absent],
            ),
            search_pair(
                format!("MedicationRequest?subject=Patient/{}", r.patient),
                format!("MedicationRequest?subject=Patient/{absent}"),
                &[&r.patient, &absent],
            ),
            // Only alice's hidden HIV result names bob (visible to most) as its focus.
            search_pair(
                format!("Observation?focus=Patient/{}", w.bob.patient),
                format!("Observation?focus=Patient/{absent}"),
                &[&w.bob.patient, &absent],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: date", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!("Patient?birthdate={}", r.birth_date),
                "Patient?birthdate=1901-01-01".into(),
                &[&r.birth_date, "1901-01-01"],
            ),
            // Only alice has an Encounter.
            search_pair(
                "Encounter?date=2023-07-31".into(),
                "Encounter?date=1901-01-01".into(),
                &["2023-07-31", "1901-01-01"],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: quantity", |_| {
        // Only alice's CD4 count has a quantity.
        vec![
            search_pair(
                "Observation?value-quantity=773.1".into(),
                "Observation?value-quantity=4321.5".into(),
                &["773.1", "4321.5"],
            ),
            search_pair(
                "Observation?value-quantity=gt700|http://unitsofmeasure.org|/uL".into(),
                "Observation?value-quantity=gt90000|http://unitsofmeasure.org|/uL".into(),
                &["gt700", "gt90000"],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: _id", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        vec![
            search_pair(
                format!("Observation?_id={}", r.observation),
                format!("Observation?_id={absent}"),
                &[&r.observation, &absent],
            ),
            search_pair(
                format!("Patient?_id={}", r.patient),
                format!("Patient?_id={absent}"),
                &[&r.patient, &absent],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: composite", |a| {
        let r = w.resident(a.victim);
        vec![search_pair(
            format!(
                "Observation?code-value-string={LOINC}|{}${}",
                r.observation_code, r.observation_value
            ),
            format!(
                "Observation?code-value-string={LOINC}|{}${NOSUCH}",
                r.observation_code
            ),
            &[&r.observation_value, NOSUCH],
        )]
    })
    .await;
    run_pairs(&mut m, &node, &w, "search: modifiers", |a| {
        let r = w.resident(a.victim);
        // The distinctive middle of the secret value, so that :contains has work to do.
        let middle = &r.observation_value[4..r.observation_value.len() - 2];
        vec![
            search_pair(
                format!("Observation?value-string:exact={}", r.observation_value),
                format!("Observation?value-string:exact={NOSUCH}"),
                &[&r.observation_value, NOSUCH],
            ),
            search_pair(
                format!("Observation?value-string:contains={middle}"),
                format!("Observation?value-string:contains={NOSUCH}"),
                &[middle, NOSUCH],
            ),
            search_pair(
                format!("Patient?family:contains={}", &r.family[2..]),
                format!("Patient?family:contains={NOSUCH}"),
                &[&r.family[2..], NOSUCH],
            ),
            search_pair(
                format!("Condition?code:text={}", r.condition_text),
                format!("Condition?code:text={NOSUCH}"),
                &[&r.condition_text, NOSUCH],
            ),
            search_pair(
                format!(
                    "Observation?identifier:not={OBS_ID_SYSTEM}|{NOSUCH}&code={LOINC}|{}",
                    r.observation_code
                ),
                format!("Observation?identifier:not={OBS_ID_SYSTEM}|{NOSUCH}&code={LOINC}|0000-0"),
                &[r.observation_code, "0000-0"],
            ),
            search_pair(
                format!("Observation?value-quantity:missing=false&code={LOINC}|24467-3"),
                format!("Observation?value-quantity:missing=false&code={LOINC}|0000-0"),
                &["24467-3", "0000-0"],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "_summary=count", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!(
                    "Observation?value-string={}&_summary=count",
                    r.observation_value
                ),
                format!("Observation?value-string={NOSUCH}&_summary=count"),
                &[&r.observation_value, NOSUCH],
            ),
            search_pair(
                format!("Condition?code={ICD10}|{}&_summary=count", r.condition_code),
                format!("Condition?code={ICD10}|Z99.9&_summary=count"),
                &[r.condition_code, "Z99.9"],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "_total=accurate", |a| {
        let r = w.resident(a.victim);
        vec![search_pair(
            format!(
                "Observation?code={LOINC}|{}&_total=accurate",
                r.observation_code
            ),
            format!("Observation?code={LOINC}|0000-0&_total=accurate"),
            &[r.observation_code, "0000-0"],
        )]
    })
    .await;
    run_pairs(&mut m, &node, &w, "POST _search", |a| {
        let r = w.resident(a.victim);
        vec![
            Pair::new(
                Request::new(reqwest::Method::POST, "Observation/_search")
                    .form(&[("value-string", r.observation_value.as_str())]),
                Request::new(reqwest::Method::POST, "Observation/_search")
                    .form(&[("value-string", NOSUCH)]),
                &[&r.observation_value, NOSUCH],
            ),
            Pair::new(
                Request::new(reqwest::Method::POST, "Patient/_search")
                    .form(&[("family", r.family.as_str())]),
                Request::new(reqwest::Method::POST, "Patient/_search").form(&[("family", NOSUCH)]),
                &[&r.family, NOSUCH],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "system search", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        vec![search_pair(
            format!(
                "?_type=Observation,Condition&_id={},{}",
                r.observation, r.condition
            ),
            format!("?_type=Observation,Condition&_id={absent},{absent}"),
            &[&r.observation, &r.condition, &absent],
        )]
    })
    .await;

    // Unfiltered searches of a type: exactly the records the caller may see, and counts and
    // totals that say so.
    for attacker in attackers(&w) {
        for auth in &attacker.auths {
            for rt in [
                "Observation",
                "Condition",
                "MedicationRequest",
                "Encounter",
                "DocumentReference",
            ] {
                let expected: Vec<String> = {
                    let mut ids: Vec<String> = w
                        .visible_records(&attacker.viewer)
                        .iter()
                        .filter(|r| r.resource_type == rt)
                        .map(|r| r.id.clone())
                        .collect();
                    ids.sort();
                    ids
                };
                let may_search = hidden_read_status(&attacker, rt) == vec![404];
                let request = Request::get(format!("{rt}?_count=100"));
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "search: all of a type",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                check_visible_only(
                    &mut m,
                    "search: all of a type",
                    attacker.caller,
                    &attacker.viewer,
                    &w,
                    &request,
                    &reply,
                );
                if may_search {
                    m.check(
                        "search: all of a type",
                        attacker.caller,
                        reply.ids() == expected,
                        || {
                            format!(
                                "GET {rt}: expected the {} records the caller may see, got {}",
                                expected.len(),
                                reply.describe()
                            )
                        },
                    );
                }
                let request = Request::get(format!("{rt}?_summary=count"));
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "_summary=count",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                // A count, when the server gives one, is the number of records the caller may
                // see (leaving it out reveals nothing; counting hidden rows does).
                if may_search {
                    m.check("_summary=count", attacker.caller, reply.total().is_none_or(|t| t == expected.len() as u64), || {
                        format!("GET {rt}?_summary=count: the caller may see {} records, the count says {}", expected.len(), reply.describe())
                    });
                }
                let request = Request::get(format!("{rt}?_total=accurate&_count=1"));
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "_total=accurate",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                if may_search {
                    m.check("_total=accurate", attacker.caller, reply.total().is_none_or(|t| t == expected.len() as u64), || {
                        format!("GET {rt}?_total=accurate: the caller may see {} records, total says {}", expected.len(), reply.describe())
                    });
                }
            }
        }
    }

    // The legitimate callers find alice's records with the same searches.
    let v = &alice.observation_value;
    for (interaction, request) in [
        (
            "search: string",
            Request::get(format!("Observation?value-string={v}")),
        ),
        (
            "search: token",
            Request::get(format!(
                "Observation?identifier={OBS_ID_SYSTEM}|{}",
                alice.observation_identifier
            )),
        ),
        (
            "search: reference",
            Request::get(format!("Observation?subject=Patient/{}", alice.patient)),
        ),
        (
            "search: date",
            Request::get(format!(
                "Observation?date=2023-07-31&code={LOINC}|{}",
                alice.observation_code
            )),
        ),
        (
            "search: quantity",
            Request::get("Observation?value-quantity=773.1"),
        ),
        (
            "search: _id",
            Request::get(format!("Observation?_id={}", alice.observation)),
        ),
        (
            "search: composite",
            Request::get(format!(
                "Observation?code-value-string={LOINC}|{}${v}",
                alice.observation_code
            )),
        ),
        (
            "search: modifiers",
            Request::get(format!(
                "Observation?value-string:contains={}",
                &v[4..v.len() - 2]
            )),
        ),
        (
            "POST _search",
            Request::new(reqwest::Method::POST, "Observation/_search")
                .form(&[("value-string", v.as_str())]),
        ),
        (
            "system search",
            Request::get(format!(
                "?_type=Observation,Condition&_id={},{}",
                alice.observation, alice.condition
            )),
        ),
        (
            "search: all of a type",
            Request::get("Observation?_count=100"),
        ),
    ] {
        let value = if interaction == "search: quantity" {
            "ALICE-CD4-NOTE-SECRET-7731"
        } else {
            v.as_str()
        };
        legit_all(&mut m, &node, &w, interaction, &request, value).await;
    }
    for caller in legit(&w, Who::Alice) {
        let request = Request::get(format!(
            "Observation?code={LOINC}|{}&_summary=count",
            alice.observation_code
        ));
        let reply = node.send(&caller.auth, &request).await;
        m.check(
            "_summary=count",
            caller.caller,
            reply.status.is_success() && reply.total().is_none_or(|t| t == 1),
            || format!("legitimate count: {}", reply.describe()),
        );
        let request = Request::get(format!(
            "Observation?code={LOINC}|{}&_total=accurate",
            alice.observation_code
        ));
        let reply = node.send(&caller.auth, &request).await;
        m.check(
            "_total=accurate",
            caller.caller,
            reply.ids().len() == 1 && reply.total().is_none_or(|t| t == 1),
            || format!("legitimate total: {}", reply.describe()),
        );
    }
    node.stop().await;
    m.finish();
}

/// A valid resident ID nobody in the fixture has.
fn absent_resident_id() -> String {
    common::resident_id("320481", "19010101", "998")
}

// ---------------------------------------------------------------------------------------------
// Paging: `_sort` + `_count=1` through every next link, history with totals and `_since`.

async fn paging_and_totals(backend: Backend) {
    let start = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("paging_and_totals");
    let since = form_urlencoded::byte_serialize(start.as_bytes()).collect::<String>();
    // (interaction, first page, the type whose visible records it must list exactly, the
    // same query's `_summary=count`)
    let queries: Vec<(&str, String, Option<&str>, Option<String>)> = vec![
        (
            "_sort paging",
            "Observation?_sort=value-string&_count=1&_total=accurate".into(),
            Some("Observation"),
            Some("Observation?_summary=count".into()),
        ),
        (
            "_sort paging",
            "Observation?_sort=-value-string&_count=1&_total=accurate".into(),
            Some("Observation"),
            None,
        ),
        (
            "_sort paging",
            "Observation?_sort=code,-date&_count=1&_total=accurate".into(),
            Some("Observation"),
            None,
        ),
        (
            "_sort paging",
            "Condition?_sort=code&_count=1&_total=accurate".into(),
            Some("Condition"),
            Some("Condition?_summary=count".into()),
        ),
        (
            "_sort paging",
            "MedicationRequest?_sort=-_lastUpdated&_count=1&_total=accurate".into(),
            Some("MedicationRequest"),
            None,
        ),
        (
            "_sort paging",
            "Patient?_sort=family&_count=1&_total=accurate".into(),
            None,
            Some("Patient?_summary=count".into()),
        ),
        (
            "_sort paging",
            "Patient?_sort=-birthdate,given&_count=1&_total=accurate".into(),
            None,
            None,
        ),
        (
            "type history",
            "Observation/_history?_count=1".into(),
            Some("Observation"),
            None,
        ),
        (
            "type history",
            "Condition/_history?_count=1".into(),
            Some("Condition"),
            None,
        ),
        (
            "type history",
            "Patient/_history?_count=1".into(),
            None,
            None,
        ),
        ("system history", "_history?_count=2".into(), None, None),
        (
            "history _since",
            format!("Observation/_history?_since={since}&_count=1"),
            Some("Observation"),
            None,
        ),
        (
            "history _since",
            format!("_history?_since={since}&_count=3"),
            None,
            None,
        ),
    ];
    for attacker in attackers(&w) {
        for auth in &attacker.auths {
            for (interaction, first, exact, count_query) in &queries {
                let (pages, seen, total) = walk(
                    &mut m,
                    &node,
                    interaction,
                    attacker.caller,
                    auth,
                    first,
                    &attacker.hidden,
                )
                .await;
                for page in &pages {
                    check_visible_only(
                        &mut m,
                        interaction,
                        attacker.caller,
                        &attacker.viewer,
                        &w,
                        &Request::get(first.clone()),
                        page,
                    );
                }
                if let Some(count_query) = count_query {
                    let request = Request::get(count_query.clone());
                    let reply = node.send(auth, &request).await;
                    m.no_leak(
                        "_summary=count",
                        attacker.caller,
                        &request,
                        &reply,
                        &attacker.hidden,
                    );
                    m.check(
                        "_summary=count",
                        attacker.caller,
                        !pages[0].status.is_success()
                            || reply.total().is_none_or(|t| t == seen.len() as u64),
                        || {
                            format!(
                                "{count_query} says {}, paging {first} gave {}",
                                reply.describe(),
                                seen.len()
                            )
                        },
                    );
                }
                if !pages[0].status.is_success() {
                    continue;
                }
                let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
                m.check(
                    interaction,
                    attacker.caller,
                    unique.len() == seen.len(),
                    || format!("{first}: a record came back on two pages: {seen:?}"),
                );
                if let Some(total) = total {
                    m.check(
                        interaction,
                        attacker.caller,
                        total == seen.len() as u64,
                        || {
                            format!(
                                "{first}: total {total}, but paging to the end gave {} entries",
                                seen.len()
                            )
                        },
                    );
                }
                if let Some(rt) = exact {
                    let expected = w
                        .visible_records(&attacker.viewer)
                        .iter()
                        .filter(|r| r.resource_type == *rt)
                        .count();
                    m.check(interaction, attacker.caller, seen.len() == expected, || {
                        format!(
                            "{first}: the caller may see {expected} {rt} records, paging gave {}",
                            seen.len()
                        )
                    });
                }
            }
        }
    }
    // The holder pages through alice's records and finds them.
    for caller in legit(&w, Who::Alice) {
        for (interaction, first, _, _) in &queries {
            let hidden_from_legit: Vec<String> = Vec::new();
            let (pages, seen, total) = walk(
                &mut m,
                &node,
                interaction,
                caller.caller,
                &caller.auth,
                first,
                &hidden_from_legit,
            )
            .await;
            let text: String = pages.iter().map(|p| p.text.as_str()).collect();
            let wanted = if first.starts_with("Patient") {
                w.alice.family.as_str()
            } else if first.starts_with("Condition") {
                w.alice.condition_text.as_str()
            } else if first.starts_with("MedicationRequest") {
                "ALICE-MEDICATION-SECRET"
            } else {
                w.alice.observation_value.as_str()
            };
            m.check(interaction, caller.caller, text.contains(wanted), || {
                format!("legitimate {first} never showed {wanted:?}")
            });
            if let Some(total) = total {
                m.check(
                    interaction,
                    caller.caller,
                    total == seen.len() as u64,
                    || {
                        format!(
                            "{first}: total {total}, paging gave {} (the total counts records this caller may not see)",
                            seen.len()
                        )
                    },
                );
            }
        }
    }
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// References across the boundary: `_include`/`_revinclude` (+ `:iterate`), chains, `_has`.

/// Each attacker that can write plants a record of its own pointing at the victim's hidden
/// records (as an attacker would): returns caller → the pointer's id.
async fn plant_pointers(
    m: &mut Matrix,
    node: &Node,
    w: &World,
    interaction: &str,
) -> std::collections::BTreeMap<&'static str, String> {
    let mut pointers = std::collections::BTreeMap::new();
    for attacker in attackers(w) {
        let victim = w.resident(attacker.victim);
        // An organisation records its own Observation about the victim; a resident can only
        // write into their own compartment, so bob points at alice through `focus`.
        let pointer = if attacker.caller == OTHER_RESIDENT {
            json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{}", w.bob.patient)},
                "focus": [{"reference": format!("Patient/{}", victim.patient)}],
                "hasMember": [{"reference": format!("Observation/{}", victim.observation)}],
                "valueString": "POINTER-OF-THE-ATTACKER"})
        } else {
            json!({"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{}", victim.patient)},
                "hasMember": [{"reference": format!("Observation/{}", victim.observation)}],
                "derivedFrom": [{"reference": format!("Observation/{}", victim.observation)}],
                "valueString": "POINTER-OF-THE-ATTACKER"})
        };
        let request = Request::post("Observation", &pointer);
        let reply = node.send(&attacker.auths[0], &request).await;
        m.no_leak(
            interaction,
            attacker.caller,
            &request,
            &reply,
            &attacker.hidden,
        );
        if reply.status.as_u16() == 201 {
            if let Some(id) = reply.body["id"].as_str() {
                pointers.insert(attacker.caller, id.to_owned());
            }
        }
    }
    pointers
}

async fn includes_chains_has(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("includes_chains_has");
    let pointers = plant_pointers(&mut m, &node, &w, "_include").await;
    let pointer_of = |a: &Attacker| pointers.get(a.caller).cloned();

    // _include from a record the caller sees to ones it may not.
    let include_requests = |a: &Attacker| {
        let mut requests = vec![
            Request::get("Observation?_include=Observation:subject&_include=Observation:has-member&_include=Observation:derived-from&_include=Observation:focus&_count=100"),
            Request::get("Condition?_include=Condition:subject&_count=100"),
            Request::get("MedicationRequest?_include=MedicationRequest:subject&_count=100"),
        ];
        if let Some(p) = pointer_of(a) {
            requests.push(Request::get(format!(
                "Observation?_id={p}&_include=Observation:subject&_include=Observation:has-member&_include=Observation:derived-from&_include=Observation:focus"
            )));
        }
        requests
    };
    for attacker in attackers(&w) {
        for auth in &attacker.auths {
            for request in include_requests(&attacker) {
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "_include",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                check_visible_only(
                    &mut m,
                    "_include",
                    attacker.caller,
                    &attacker.viewer,
                    &w,
                    &request,
                    &reply,
                );
            }
            let mut iterate = vec![Request::get(
                "Observation?_include=Observation:has-member&_include:iterate=Observation:subject&_include:iterate=Observation:performer&_count=100",
            )];
            if let Some(p) = pointer_of(&attacker) {
                iterate.push(Request::get(format!(
                    "Observation?_id={p}&_include=Observation:has-member&_include:iterate=Observation:subject&_include:iterate=Observation:has-member&_revinclude:iterate=Condition:subject"
                )));
            }
            for request in iterate {
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "_include:iterate",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                check_visible_only(
                    &mut m,
                    "_include:iterate",
                    attacker.caller,
                    &attacker.viewer,
                    &w,
                    &request,
                    &reply,
                );
            }
            // _revinclude from a record the caller sees (the regional doctor; bob, whom alice's
            // hidden result names as focus) to ones it may not.
            for request in [
                Request::get(format!("Practitioner?_id={}&_revinclude=Observation:performer", w.doctor)),
                Request::get(format!(
                    "Patient?_id={}&_revinclude=Observation:focus&_revinclude=Condition:subject&_revinclude=Observation:subject",
                    w.bob.patient
                )),
            ] {
                let reply = node.send(auth, &request).await;
                m.no_leak("_revinclude", attacker.caller, &request, &reply, &attacker.hidden);
                check_visible_only(&mut m, "_revinclude", attacker.caller, &attacker.viewer, &w, &request, &reply);
            }
            for request in [
                Request::get(format!(
                    "Practitioner?_id={}&_revinclude=Observation:performer&_include:iterate=Observation:subject&_revinclude:iterate=Condition:subject",
                    w.doctor
                )),
                Request::get(format!(
                    "Patient?_id={}&_revinclude:iterate=Observation:focus&_include:iterate=Observation:subject",
                    w.bob.patient
                )),
            ] {
                let reply = node.send(auth, &request).await;
                m.no_leak("_revinclude:iterate", attacker.caller, &request, &reply, &attacker.hidden);
                check_visible_only(&mut m, "_revinclude:iterate", attacker.caller, &attacker.viewer, &w, &request, &reply);
            }
        }
    }

    // Chains through a hidden record must not match (the attacker's own pointer refers to it).
    run_pairs(&mut m, &node, &w, "chain", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!("Observation?subject:Patient.family={}", r.family),
                format!("Observation?subject:Patient.family={NOSUCH}"),
                &[&r.family, NOSUCH],
            ),
            search_pair(
                format!("Observation?subject.name={}", r.given),
                format!("Observation?subject.name={NOSUCH}"),
                &[&r.given, NOSUCH],
            ),
            search_pair(
                format!("Observation?subject.identifier={}|{}", r.mrn_system, r.mrn),
                format!("Observation?subject.identifier={}|{NOSUCH}", r.mrn_system),
                &[&r.mrn, NOSUCH],
            ),
            search_pair(
                format!(
                    "Observation?has-member:Observation.value-string={}",
                    r.observation_value
                ),
                format!("Observation?has-member:Observation.value-string={NOSUCH}"),
                &[&r.observation_value, NOSUCH],
            ),
            search_pair(
                format!("Condition?subject:Patient.birthdate={}", r.birth_date),
                "Condition?subject:Patient.birthdate=1901-01-01".into(),
                &[&r.birth_date, "1901-01-01"],
            ),
        ]
    })
    .await;
    // _has over hidden records must not be an oracle: the answer for a hidden match equals
    // the answer for no match.
    run_pairs(&mut m, &node, &w, "_has", |a| {
        let r = w.resident(a.victim);
        let mut pairs = vec![
            search_pair(
                format!(
                    "Practitioner?_has:Observation:performer:value-string={}",
                    r.observation_value
                ),
                format!("Practitioner?_has:Observation:performer:value-string={NOSUCH}"),
                &[&r.observation_value, NOSUCH],
            ),
            search_pair(
                format!(
                    "Practitioner?_has:Observation:performer:value-string={}&_summary=count",
                    r.observation_value
                ),
                format!(
                    "Practitioner?_has:Observation:performer:value-string={NOSUCH}&_summary=count"
                ),
                &[&r.observation_value, NOSUCH],
            ),
            search_pair(
                format!(
                    "Patient?_has:Observation:focus:value-string={}",
                    w.alice.observation_value
                ),
                format!("Patient?_has:Observation:focus:value-string={NOSUCH}"),
                &[&w.alice.observation_value, NOSUCH],
            ),
        ];
        if !a.sees(&w, "bob.condition-at-org-a") {
            pairs.push(search_pair(
                format!(
                    "Patient?_has:Condition:subject:code:text={}",
                    w.bob_at_a_text
                ),
                format!("Patient?_has:Condition:subject:code:text={NOSUCH}"),
                &[&w.bob_at_a_text, NOSUCH],
            ));
            pairs.push(search_pair(
                format!("Patient?_has:Condition:subject:code={ICD10}|F32"),
                format!("Patient?_has:Condition:subject:code={ICD10}|Z99.9"),
                &["F32", "Z99.9"],
            ));
        }
        pairs
    })
    .await;

    // The legitimate callers follow the same references to alice's records.
    let obs = &w.alice.observation;
    for caller in legit(&w, Who::Alice) {
        for (interaction, request, value) in [
            ("_include", format!("Observation?_id={obs}&_include=Observation:subject"), w.alice.family.clone()),
            ("_include:iterate", format!("Observation?_id={obs}&_include=Observation:subject&_revinclude:iterate=Condition:subject"), w.alice.condition_text.clone()),
            ("_revinclude", format!("Patient?_id={}&_revinclude=Observation:subject", w.alice.patient), w.alice.observation_value.clone()),
            ("_revinclude:iterate", format!("Patient?_id={}&_revinclude:iterate=Observation:subject&_revinclude:iterate=Condition:subject", w.alice.patient), w.alice.condition_text.clone()),
            ("chain", format!("Observation?subject:Patient.family={}", w.alice.family), w.alice.observation_value.clone()),
        ] {
            legit_gets(&mut m, &node, interaction, &caller, &Request::get(request), &value).await;
        }
    }
    for caller in legit(&w, Who::Alice).into_iter().skip(1) {
        let request = Request::get(format!(
            "Practitioner?_has:Observation:performer:value-string={}&_revinclude=Observation:performer",
            w.alice.observation_value
        ));
        legit_gets(
            &mut m,
            &node,
            "_has",
            &caller,
            &request,
            &w.alice.observation_value,
        )
        .await;
    }
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Conditional create, update and delete, and the same in batch and transaction bundles.

/// An Observation the attacker writes about its own visible patient (bob).
fn own_observation(w: &World, marker: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "identifier": [{"system": OBS_ID_SYSTEM, "value": format!("ATTACKER-{marker}-{}", absent_id())}],
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{}", w.bob.patient)},
        "valueString": format!("ATTACKER-WRITE-{marker}")})
}

/// An Observation about `patient` (for legitimate writes).
fn observation_about(patient: &str, marker: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueString": format!("LEGIT-WRITE-{marker}")})
}

/// The statuses a write by `attacker` gets when the target is hidden and the write goes
/// ahead as if it matched nothing: `ok` for those who may write, 403 for the scope-less
/// user, 401 for nobody.
fn write_status(attacker: &Attacker, ok: &[u16]) -> Vec<u16> {
    match attacker.caller {
        NOBODY => vec![401],
        MISSING_ROLE => vec![403],
        _ => ok.to_vec(),
    }
}

/// Checks (with the operator's token) that the victim's records are all still there,
/// unchanged at version 1 with their secret values.
async fn check_intact(
    m: &mut Matrix,
    node: &Node,
    w: &World,
    interaction: &str,
    caller: &str,
    victim: Who,
) {
    let operator = Auth::Bearer(w.operator.clone());
    for (rt, id) in victim_records(w, victim) {
        let reply = node
            .send(&operator, &Request::get(format!("{rt}/{id}")))
            .await;
        let secret = w
            .records
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.secrets.first())
            .cloned()
            .unwrap_or_default();
        m.check(
            interaction,
            caller,
            reply.status.as_u16() == 200
                && reply.body["meta"]["versionId"] == "1"
                && reply.text.contains(&secret),
            || {
                format!(
                    "{rt}/{id} of {} was changed or deleted by the attack: {}",
                    victim.name(),
                    reply.describe()
                )
            },
        );
    }
}

async fn conditional_writes(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("conditional_writes");
    for attacker in attackers(&w) {
        let r = w.resident(attacker.victim);
        let identifier = format!("{OBS_ID_SYSTEM}|{}", r.observation_identifier);
        let absent_identifier = format!("{OBS_ID_SYSTEM}|{NOSUCH}");
        let absent = absent_id();
        for auth in &attacker.auths {
            let create = |condition: &str| {
                Request::post("Observation", &own_observation(&w, "conditional-create"))
                    .header("if-none-exist", condition)
            };
            let pairs = vec![
                ("conditional create", Pair::new(create(&format!("_id={}", r.observation)), create(&format!("_id={absent}")), &[&r.observation, &absent]).expect(&write_status(&attacker, &[201]))),
                ("conditional create", Pair::new(create(&format!("identifier={identifier}")), create(&format!("identifier={absent_identifier}")), &[&r.observation_identifier, NOSUCH]).expect(&write_status(&attacker, &[201]))),
                ("conditional create", Pair::new(
                    Request::post("Patient", &json!({"resourceType": "Patient", "name": [{"family": "ATTACKER-PATIENT"}]})).header("if-none-exist", &format!("identifier={}|{}", r.mrn_system, r.mrn)),
                    Request::post("Patient", &json!({"resourceType": "Patient", "name": [{"family": "ATTACKER-PATIENT"}]})).header("if-none-exist", &format!("identifier={}|{NOSUCH}", r.mrn_system)),
                    &[&r.mrn, NOSUCH],
                )),
                ("conditional update", Pair::new(
                    Request::put(format!("Observation?identifier={identifier}"), &own_observation(&w, "conditional-update")),
                    Request::put(format!("Observation?identifier={absent_identifier}"), &own_observation(&w, "conditional-update")),
                    &[&r.observation_identifier, NOSUCH],
                ).expect(&write_status(&attacker, &[201]))),
                ("conditional update", Pair::new(
                    Request::put(format!("Condition?code={ICD10}|{}", r.condition_code), &json!({"resourceType": "Condition",
                        "code": {"text": "ATTACKER-CONDITION"}, "subject": {"reference": format!("Patient/{}", w.bob.patient)}})),
                    Request::put(format!("Condition?code={ICD10}|Z99.9"), &json!({"resourceType": "Condition",
                        "code": {"text": "ATTACKER-CONDITION"}, "subject": {"reference": format!("Patient/{}", w.bob.patient)}})),
                    &[r.condition_code, "Z99.9"],
                )),
                ("conditional delete", Pair::new(
                    Request::delete(format!("Observation?identifier={identifier}")),
                    Request::delete(format!("Observation?identifier={absent_identifier}")),
                    &[&r.observation_identifier, NOSUCH],
                )),
                ("conditional delete", Pair::new(
                    Request::delete(format!("Observation?_id={}", r.observation)),
                    Request::delete(format!("Observation?_id={absent}")),
                    &[&r.observation, &absent],
                )),
                ("conditional delete", Pair::new(
                    Request::delete(format!("Condition?code={ICD10}|{}", r.condition_code)),
                    Request::delete(format!("Condition?code={ICD10}|Z99.9")),
                    &[r.condition_code, "Z99.9"],
                )),
                ("conditional delete", Pair::new(
                    Request::delete(format!("MedicationRequest?subject=Patient/{}", r.patient)),
                    Request::delete(format!("MedicationRequest?subject=Patient/{absent}")),
                    &[&r.patient, &absent],
                )),
            ];
            for (interaction, pair) in &pairs {
                let hidden = node.send(auth, &pair.hidden).await;
                let absent_reply = node.send(auth, &pair.absent).await;
                check_pair(&mut m, interaction, &attacker, pair, &hidden, &absent_reply);
            }
            for interaction in [
                "conditional create",
                "conditional update",
                "conditional delete",
            ] {
                check_intact(
                    &mut m,
                    &node,
                    &w,
                    interaction,
                    attacker.caller,
                    attacker.victim,
                )
                .await;
            }
        }
    }
    // The holder's conditional writes do find alice's records.
    let org_a = Auth::Bearer(w.org_a_user.clone());
    let identifier = format!("{OBS_ID_SYSTEM}|{}", w.alice.observation_identifier);
    let request = Request::post("Observation", &observation_about(&w.alice.patient, "legit"))
        .header("if-none-exist", &format!("identifier={identifier}"));
    let reply = node.send(&org_a, &request).await;
    m.check(
        "conditional create",
        HOLDER_ORG,
        reply.status.as_u16() == 200,
        || {
            format!(
                "the holder's conditional create should find alice's result: {}",
                reply.describe()
            )
        },
    );
    let operator = Auth::Bearer(w.operator.clone());
    let mut updated = node
        .send(
            &operator,
            &Request::get(format!("Observation/{}", w.alice.observation)),
        )
        .await
        .body;
    updated["status"] = json!("amended");
    if let Some(o) = updated.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    let reply = node
        .send(
            &org_a,
            &Request::put(format!("Observation?identifier={identifier}"), &updated),
        )
        .await;
    m.check(
        "conditional update",
        HOLDER_ORG,
        reply.status.as_u16() == 200 && reply.body["id"] == w.alice.observation.as_str(),
        || {
            format!(
                "the holder's conditional update should update alice's result: {}",
                reply.describe()
            )
        },
    );
    let reply = node
        .send(
            &org_a,
            &Request::delete(format!("Observation?identifier={identifier}")),
        )
        .await;
    let after = node
        .send(
            &operator,
            &Request::get(format!("Observation/{}", w.alice.observation)),
        )
        .await;
    m.check(
        "conditional delete",
        HOLDER_ORG,
        reply.status.is_success() && after.status.as_u16() == 410,
        || {
            format!(
                "the holder's conditional delete should delete alice's result: {} then {}",
                reply.describe(),
                after.describe()
            )
        },
    );
    node.stop().await;
    m.finish();
}

async fn bundles(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("bundles");
    let entries = |r: &fixture::Resident, hidden: bool, absent: &str| {
        let (obs, identifier, code, value) = if hidden {
            (
                r.observation.clone(),
                r.observation_identifier.clone(),
                r.condition_code.to_owned(),
                r.observation_value.clone(),
            )
        } else {
            (
                absent.to_owned(),
                NOSUCH.to_owned(),
                "Z99.9".to_owned(),
                NOSUCH.to_owned(),
            )
        };
        let medication = if hidden {
            r.medication.clone()
        } else {
            absent.to_owned()
        };
        vec![
            json!({"resource": own_observation(&w, "bundle-create-id"),
                   "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("_id={obs}")}}),
            json!({"resource": own_observation(&w, "bundle-create-identifier"),
                   "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier={OBS_ID_SYSTEM}|{identifier}")}}),
            json!({"resource": own_observation(&w, "bundle-update"),
                   "request": {"method": "PUT", "url": format!("Observation?identifier={OBS_ID_SYSTEM}|{identifier}")}}),
            json!({"request": {"method": "DELETE", "url": format!("Condition?code={ICD10}|{code}")}}),
            json!({"request": {"method": "DELETE", "url": format!("MedicationRequest?_id={medication}")}}),
            json!({"request": {"method": "GET", "url": format!("Observation/{obs}")}}),
            json!({"request": {"method": "GET", "url": format!("Observation?value-string={value}")}}),
        ]
    };
    for kind in ["batch", "transaction"] {
        let interaction = format!("{kind} with conditional entries");
        for attacker in attackers(&w) {
            let r = w.resident(attacker.victim);
            let absent = absent_id();
            let mut hidden_entries = entries(r, true, &absent);
            let mut absent_entries = entries(r, false, &absent);
            if kind == "transaction" {
                // A transaction's GETs may not be searches; keep the read by id.
                hidden_entries.pop();
                absent_entries.pop();
            }
            let pair = Pair::new(
                Request::post(
                    "",
                    &json!({"resourceType": "Bundle", "type": kind, "entry": hidden_entries}),
                ),
                Request::post(
                    "",
                    &json!({"resourceType": "Bundle", "type": kind, "entry": absent_entries}),
                ),
                &[
                    &r.observation,
                    &r.observation_identifier,
                    r.condition_code,
                    &r.observation_value,
                    &r.medication,
                    &absent,
                    NOSUCH,
                    "Z99.9",
                ],
            );
            for auth in &attacker.auths {
                let hidden = node.send(auth, &pair.hidden).await;
                let absent_reply = node.send(auth, &pair.absent).await;
                check_pair(
                    &mut m,
                    &interaction,
                    &attacker,
                    &pair,
                    &hidden,
                    &absent_reply,
                );
                check_intact(
                    &mut m,
                    &node,
                    &w,
                    &interaction,
                    attacker.caller,
                    attacker.victim,
                )
                .await;
            }
        }
        // The holder's bundle finds alice's result.
        for caller in legit(&w, Who::Alice) {
            let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
                {"resource": observation_about(&w.alice.patient, "legit-bundle"),
                 "request": {"method": "POST", "url": "Observation",
                             "ifNoneExist": format!("identifier={OBS_ID_SYSTEM}|{}", w.alice.observation_identifier)}},
                {"request": {"method": "GET", "url": format!("Observation/{}", w.alice.observation)}}]});
            let reply = node.send(&caller.auth, &Request::post("", &bundle)).await;
            let first = reply.body["entry"][0]["response"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            m.check(&interaction, caller.caller, reply.status.as_u16() == 200 && first.starts_with("200") && reply.text.contains(&w.alice.observation_value), || {
                format!("legitimate {kind}: the conditional entry should match alice's result and the read return it: {}", reply.describe())
            });
        }
    }
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// PUT, PATCH and DELETE by id of a hidden record.

async fn writes_by_id(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("writes_by_id");
    for attacker in attackers(&w) {
        let r = w.resident(attacker.victim);
        let targets = [
            ("Observation", r.observation.clone()),
            ("Condition", r.condition.clone()),
            ("Patient", r.patient.clone()),
        ];
        for auth in &attacker.auths {
            for (rt, id) in &targets {
                let mut body = match *rt {
                    "Observation" => own_observation(&w, "put"),
                    "Condition" => {
                        json!({"resourceType": "Condition", "code": {"text": "ATTACKER-CONDITION"},
                        "subject": {"reference": format!("Patient/{}", w.bob.patient)}})
                    }
                    _ => {
                        json!({"resourceType": "Patient", "name": [{"family": "ATTACKER-PATIENT"}]})
                    }
                };
                body["id"] = json!(id);
                // PUT: 409 "the id is in use", revealing nothing about the record.
                let request = Request::put(format!("{rt}/{id}"), &body);
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "PUT by id",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                m.status(
                    "PUT by id",
                    attacker.caller,
                    &request,
                    &reply,
                    &write_status(&attacker, &[409]),
                );
                // PATCH: 404, as for an id that does not exist.
                let absent = absent_id();
                let patch = json!([{"op": "add", "path": "/language", "value": "en"}]);
                let pair = Pair::new(
                    Request::patch(format!("{rt}/{id}"), &patch),
                    Request::patch(format!("{rt}/{absent}"), &patch),
                    &[id, &absent],
                )
                .expect(&write_status(&attacker, &[404]));
                let hidden = node.send(auth, &pair.hidden).await;
                let absent_reply = node.send(auth, &pair.absent).await;
                check_pair(
                    &mut m,
                    "PATCH by id",
                    &attacker,
                    &pair,
                    &hidden,
                    &absent_reply,
                );
                // DELETE: success and nothing changes, as for an id that does not exist (204;
                // the server answers such a delete with 200 and an OperationOutcome today).
                let pair = Pair::new(
                    Request::delete(format!("{rt}/{id}")),
                    Request::delete(format!("{rt}/{absent}")),
                    &[id, &absent],
                )
                .expect(&write_status(&attacker, &[200, 204]));
                let hidden = node.send(auth, &pair.hidden).await;
                let absent_reply = node.send(auth, &pair.absent).await;
                check_pair(
                    &mut m,
                    "DELETE by id",
                    &attacker,
                    &pair,
                    &hidden,
                    &absent_reply,
                );
            }
            for interaction in ["PUT by id", "PATCH by id", "DELETE by id"] {
                check_intact(
                    &mut m,
                    &node,
                    &w,
                    interaction,
                    attacker.caller,
                    attacker.victim,
                )
                .await;
            }
        }
    }
    // The holder may change and delete alice's records.
    let org_a = Auth::Bearer(w.org_a_user.clone());
    let patch = json!([{"op": "add", "path": "/language", "value": "zh-CN"}]);
    let reply = node
        .send(
            &org_a,
            &Request::patch(format!("Observation/{}", w.alice.observation), &patch),
        )
        .await;
    m.status(
        "PATCH by id",
        HOLDER_ORG,
        &Request::patch("Observation", &patch),
        &reply,
        &[200],
    );
    let mut body = reply.body.clone();
    body["status"] = json!("amended");
    let request = Request::put(format!("Observation/{}", w.alice.observation), &body);
    let reply = node.send(&org_a, &request).await;
    m.status("PUT by id", HOLDER_ORG, &request, &reply, &[200]);
    let request = Request::delete(format!("Observation/{}", w.alice.observation));
    let reply = node.send(&org_a, &request).await;
    m.status("DELETE by id", HOLDER_ORG, &request, &reply, &[200, 204]);
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// The patient index: $match, $ihe-pix, _master=true, $merge; the health code.

fn match_parameters(patient: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]})
}

fn match_body(r: &fixture::Resident) -> Value {
    match_parameters(json!({"resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": r.resident_id}],
        "name": [{"family": r.family, "given": [r.given]}],
        "birthDate": r.birth_date, "gender": r.gender}))
}

/// The golden record a source Patient is linked to now (operator's view).
async fn current_golden(node: &Node, w: &World, patient: &str) -> String {
    fixture::golden_of(node, &w.operator, patient).await
}

async fn patient_index(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("patient_index");
    let nobody_rid = absent_resident_id();
    let nobody = json!({"resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": nobody_rid}],
        "name": [{"family": NOSUCH, "given": ["NOSUCH-GIVEN"]}], "birthDate": "1901-01-01", "gender": "female"});
    run_pairs(&mut m, &node, &w, "$match", |a| {
        let r = w.resident(a.victim);
        vec![Pair::new(
            Request::post("Patient/$match", &match_body(r)),
            Request::post("Patient/$match", &match_parameters(nobody.clone())),
            &[
                &r.resident_id,
                &r.family,
                &r.given,
                &r.birth_date,
                &nobody_rid,
                NOSUCH,
                "NOSUCH-GIVEN",
                "1901-01-01",
            ],
        )]
    })
    .await;
    run_pairs(&mut m, &node, &w, "$ihe-pix", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!(
                    "Patient/$ihe-pix?sourceIdentifier={RESIDENT_ID}|{}",
                    r.resident_id
                ),
                format!("Patient/$ihe-pix?sourceIdentifier={RESIDENT_ID}|{nobody_rid}"),
                &[&r.resident_id, &nobody_rid],
            ),
            search_pair(
                format!(
                    "Patient/$ihe-pix?sourceIdentifier={}|{}",
                    r.mrn_system, r.mrn
                ),
                format!(
                    "Patient/$ihe-pix?sourceIdentifier={}|{NOSUCH}",
                    r.mrn_system
                ),
                &[&r.mrn, NOSUCH],
            ),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "_master=true", |a| {
        let r = w.resident(a.victim);
        vec![
            search_pair(
                format!(
                    "Patient?identifier={RESIDENT_ID}|{}&_master=true",
                    r.resident_id
                ),
                format!("Patient?identifier={RESIDENT_ID}|{nobody_rid}&_master=true"),
                &[&r.resident_id, &nobody_rid],
            ),
            search_pair(
                format!("Patient?family={}&_master=true", r.family),
                format!("Patient?family={NOSUCH}&_master=true"),
                &[&r.family, NOSUCH],
            ),
        ]
    })
    .await;
    // $merge of a hidden record into one the caller sees: refused as if absent, the hidden
    // demographics not returned, the index unchanged.
    for attacker in attackers(&w) {
        let r = w.resident(attacker.victim);
        let before = current_golden(&node, &w, &r.patient).await;
        for auth in &attacker.auths {
            let absent = absent_id();
            let merge = |source: &str| {
                Request::post(
                    "Patient/$merge",
                    &json!({"resourceType": "Parameters", "parameter": [
                    {"name": "source-patient", "valueReference": {"reference": format!("Patient/{source}")}},
                    {"name": "target-patient", "valueReference": {"reference": format!("Patient/{}", w.bob.patient)}}]}),
                )
            };
            let expected = match attacker.caller {
                NOBODY => vec![401],
                MISSING_ROLE => vec![403],
                OTHER_RESIDENT => vec![403, 404],
                _ => vec![404],
            };
            let pair = Pair::new(merge(&r.patient), merge(&absent), &[&r.patient, &absent])
                .expect(&expected);
            let hidden = node.send(auth, &pair.hidden).await;
            let absent_reply = node.send(auth, &pair.absent).await;
            check_pair(&mut m, "$merge", &attacker, &pair, &hidden, &absent_reply);
            let after = current_golden(&node, &w, &r.patient).await;
            m.check("$merge", attacker.caller, after == before, || {
                format!(
                    "{}'s record was merged by the attack: golden {before} became {after}",
                    attacker.victim.name()
                )
            });
        }
    }

    // The legitimate callers find alice in the index.
    for caller in legit(&w, Who::Alice).into_iter().skip(1) {
        legit_gets(
            &mut m,
            &node,
            "$match",
            &caller,
            &Request::post("Patient/$match", &match_body(&w.alice)),
            &w.alice.mrn,
        )
        .await;
        legit_gets(
            &mut m,
            &node,
            "$ihe-pix",
            &caller,
            &Request::get(format!(
                "Patient/$ihe-pix?sourceIdentifier={RESIDENT_ID}|{}",
                w.alice.resident_id
            )),
            &w.alice.mrn,
        )
        .await;
        legit_gets(
            &mut m,
            &node,
            "_master=true",
            &caller,
            &Request::get(format!(
                "Patient?identifier={RESIDENT_ID}|{}&_master=true",
                w.alice.resident_id
            )),
            &w.alice.family,
        )
        .await;
        // A merge of two records the caller holds goes through.
        let token = match &caller.auth {
            Auth::Bearer(t) => t.clone(),
            Auth::None => String::new(),
        };
        let one = fixture::create(&node, &token, &json!({"resourceType": "Patient", "name": [{"family": "Duplicate", "given": ["One"]}], "birthDate": "1950-01-01", "gender": "male"})).await;
        let two = fixture::create(&node, &token, &json!({"resourceType": "Patient", "name": [{"family": "Doppel", "given": ["Two"]}], "birthDate": "1951-02-02", "gender": "male"})).await;
        let request = Request::post(
            "Patient/$merge",
            &json!({"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": format!("Patient/{one}")}},
            {"name": "target-patient", "valueReference": {"reference": format!("Patient/{two}")}}]}),
        );
        let reply = node.send(&caller.auth, &request).await;
        m.status("$merge", caller.caller, &request, &reply, &[200]);
    }
    node.stop().await;
    m.finish();
}

async fn health_code(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("health_code");
    // Alice holds a health code before the attacks.
    let alice = Auth::Bearer(w.alice.token.clone());
    let issued = node
        .send(
            &alice,
            &Request::get(format!("Patient/{}/$health-code", w.alice.patient)),
        )
        .await;
    let code = issued.body["parameter"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["name"] == "qrCode"))
        .and_then(|x| x["valueString"].as_str())
        .unwrap_or_default()
        .to_owned();
    m.check(
        "$health-code",
        RESIDENT_SELF,
        issued.status.as_u16() == 200 && !code.is_empty(),
        || {
            format!(
                "alice could not get her own health code: {}",
                issued.describe()
            )
        },
    );
    run_pairs(&mut m, &node, &w, "$health-code", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        let expected = match a.caller {
            NOBODY => vec![401],
            MISSING_ROLE => vec![403, 404],
            _ => vec![404],
        };
        vec![
            Pair::new(
                Request::get(format!("Patient/{}/$health-code", r.patient)),
                Request::get(format!("Patient/{absent}/$health-code")),
                &[&r.patient, &absent],
            )
            .expect(&expected),
            Pair::new(
                Request::get(format!("Patient/{}/$health-code", r.golden)),
                Request::get(format!("Patient/{absent}/$health-code")),
                &[&r.golden, &absent],
            )
            .expect(&expected),
        ]
    })
    .await;
    run_pairs(&mut m, &node, &w, "$health-code-revoke", |a| {
        let r = w.resident(a.victim);
        let absent = absent_id();
        let expected = match a.caller {
            NOBODY => vec![401],
            MISSING_ROLE => vec![403, 404],
            _ => vec![404],
        };
        let body = json!({"resourceType": "Parameters"});
        vec![Pair::new(
            Request::post(format!("Patient/{}/$health-code-revoke", r.patient), &body),
            Request::post(format!("Patient/{absent}/$health-code-revoke"), &body),
            &[&r.patient, &absent],
        )
        .expect(&expected)]
    })
    .await;
    // Nobody revoked alice's code: a scanner still accepts it.
    let verify = Request::post(
        "Patient/$verify",
        &json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": code}]}),
    );
    let reply = node.send(&Auth::Bearer(w.operator.clone()), &verify).await;
    m.check(
        "$health-code-revoke",
        RESIDENT_SELF,
        reply.status.as_u16() == 200,
        || {
            format!(
                "alice's health code no longer verifies after the attacks: {}",
                reply.describe()
            )
        },
    );
    let request = Request::get(format!("Patient/{}/$health-code", w.alice.patient));
    let reply = node.send(&Auth::Bearer(w.operator.clone()), &request).await;
    m.check(
        "$health-code",
        OPERATOR,
        reply.status.as_u16() == 200 && reply.text.contains("verifiableCredential"),
        || {
            format!(
                "the operator could not issue alice's code: {}",
                reply.describe()
            )
        },
    );
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// The audit trail: who may read which AuditEvents.

/// The organisation an AuditEvent's requesting agent acted for.
fn audit_agent_org(event: &Value) -> Option<String> {
    event["agent"]
        .as_array()?
        .iter()
        .find(|a| a["requestor"] == true)
        .and_then(|a| {
            a["extension"].as_array()?.iter().find_map(|e| {
                (e["url"] == "urn:phip:audit:organization").then(|| {
                    e["valueReference"]["reference"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
            })
        })
}

/// Whether an AuditEvent names one of these patients.
fn audit_names(event: &Value, patients: &[&str]) -> bool {
    event["entity"].as_array().into_iter().flatten().any(|e| {
        let what = e["what"]["reference"].as_str().unwrap_or_default();
        patients
            .iter()
            .any(|p| what.ends_with(&format!("Patient/{p}")))
    })
}

async fn audit_trail(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("audit_trail");
    // Legitimate work whose audit records carry secrets (the searched values, base64 in
    // AuditEvent.entity.query).
    let org_a = Auth::Bearer(w.org_a_user.clone());
    let org_b = Auth::Bearer(w.org_b_user.clone());
    node.send(
        &org_a,
        &Request::get(format!(
            "Observation?value-string={}",
            w.alice.observation_value
        )),
    )
    .await;
    node.send(
        &org_a,
        &Request::get(format!("Condition?code:text={}", w.bob_at_a_text)),
    )
    .await;
    node.send(
        &org_b,
        &Request::get(format!(
            "Observation?value-string={}",
            w.carol.observation_value
        )),
    )
    .await;
    node.send(
        &Auth::Bearer(w.alice.token.clone()),
        &Request::get(format!("Observation/{}", w.alice.observation)),
    )
    .await;

    // An event about each victim written by someone else, for reads by id.
    let all = node
        .send(
            &Auth::Bearer(w.auditor.clone()),
            &Request::get("AuditEvent?_count=1000"),
        )
        .await;
    let event_about = |patient: &str, org: &str| {
        all.entries()
            .into_iter()
            // A search event (it carries the query with the secret value).
            .find(|e| {
                audit_names(e, &[patient])
                    && audit_agent_org(e).is_some_and(|o| o.ends_with(org))
                    && e["entity"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|x| x["query"].is_string())
            })
            .and_then(|e| e["id"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let alice_event = event_about(&w.alice.patient, fixture::ORG_A);
    let carol_event = event_about(&w.carol.patient, fixture::ORG_B);
    m.check(
        "AuditEvent search",
        "auditor",
        !alice_event.is_empty() && !carol_event.is_empty(),
        || {
            format!(
                "the auditor should see org-a's and org-b's events: {}",
                all.describe()
            )
        },
    );

    for attacker in attackers(&w) {
        let mut auths = attacker.auths.clone();
        if attacker.caller == MISSING_ROLE {
            // A user token of no organisation, no patient and no auditor role.
            auths.push(Auth::Bearer(w.roleless_user.clone()));
        }
        for auth in &auths {
            for request in [
                Request::get("AuditEvent?_count=1000"),
                Request::get(format!(
                    "AuditEvent?patient=Patient/{}&_count=1000",
                    w.resident(attacker.victim).patient
                )),
            ] {
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "AuditEvent search",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                let events = reply.entries();
                match attacker.caller {
                    OTHER_RESIDENT => {
                        let foreign: Vec<&Value> = events
                            .iter()
                            .filter(|e| !audit_names(e, &[&w.bob.patient, &w.bob.golden]))
                            .collect();
                        m.check(
                            "AuditEvent search",
                            attacker.caller,
                            foreign.is_empty(),
                            || {
                                format!(
                                    "{}: bob sees {} events not about him, e.g. {}",
                                    request.path,
                                    foreign.len(),
                                    foreign.first().map(|e| e.to_string()).unwrap_or_default()
                                )
                            },
                        );
                    }
                    CONSENT_DENIED | OTHER_DIVISION => {
                        let own = if attacker.caller == CONSENT_DENIED {
                            fixture::ORG_C
                        } else {
                            fixture::ORG_B
                        };
                        let foreign: Vec<&Value> = events
                            .iter()
                            .filter(|e| {
                                !audit_agent_org(e)
                                    .is_some_and(|o| o == own || o.ends_with(&format!("/{own}")))
                            })
                            .collect();
                        m.check(
                            "AuditEvent search",
                            attacker.caller,
                            foreign.is_empty(),
                            || {
                                format!(
                                    "{}: {own} sees {} events of other actors, e.g. {}",
                                    request.path,
                                    foreign.len(),
                                    foreign.first().map(|e| e.to_string()).unwrap_or_default()
                                )
                            },
                        );
                    }
                    MISSING_ROLE => m.status(
                        "AuditEvent search",
                        attacker.caller,
                        &request,
                        &reply,
                        &[403],
                    ),
                    _ => m.status(
                        "AuditEvent search",
                        attacker.caller,
                        &request,
                        &reply,
                        &[401],
                    ),
                }
            }
            let target = if attacker.victim == Who::Carol {
                &carol_event
            } else {
                &alice_event
            };
            let absent = absent_id();
            let expected = match attacker.caller {
                NOBODY => vec![401],
                _ => vec![403, 404],
            };
            // AuditEvent ids are sequence numbers, not secrets: a refusal may say 403 or 404,
            // as long as it carries nothing of the event.
            let _ = absent;
            let request = Request::get(format!("AuditEvent/{target}"));
            let reply = node.send(auth, &request).await;
            m.no_leak(
                "AuditEvent read",
                attacker.caller,
                &request,
                &reply,
                &attacker.hidden,
            );
            m.status(
                "AuditEvent read",
                attacker.caller,
                &request,
                &reply,
                &expected,
            );
        }
    }
    // Alice sees who looked at her records; org-a sees its own actions; the auditor sees all.
    let value = &w.alice.observation_value;
    for caller in legit(&w, Who::Alice).into_iter().take(2) {
        legit_gets(
            &mut m,
            &node,
            "AuditEvent search",
            &caller,
            &Request::get("AuditEvent?_count=1000"),
            value,
        )
        .await;
        legit_gets(
            &mut m,
            &node,
            "AuditEvent read",
            &caller,
            &Request::get(format!("AuditEvent/{alice_event}")),
            value,
        )
        .await;
    }
    let auditor = Legit {
        caller: "auditor",
        auth: Auth::Bearer(w.auditor.clone()),
    };
    legit_gets(
        &mut m,
        &node,
        "AuditEvent search",
        &auditor,
        &Request::get("AuditEvent?_count=1000"),
        &w.carol.observation_value,
    )
    .await;
    legit_gets(
        &mut m,
        &node,
        "AuditEvent read",
        &auditor,
        &Request::get(format!("AuditEvent/{alice_event}")),
        value,
    )
    .await;
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Bulk export: what an export gives each caller, and another caller's job.

/// Kicks off an export and waits for its manifest; `Err(reply)` when it did not start.
async fn run_export(
    node: &Node,
    auth: &Auth,
    path: &str,
) -> Result<(String, Value), harness::Reply> {
    let kick = Request::get(path)
        .header("prefer", "respond-async")
        .header("accept", "application/fhir+json");
    let reply = node.send(auth, &kick).await;
    if reply.status.as_u16() != 202 {
        return Err(reply);
    }
    let status_url = reply
        .header("content-location")
        .unwrap_or_default()
        .to_owned();
    for _ in 0..1200 {
        let poll = node.send(auth, &Request::get(status_url.clone())).await;
        match poll.status.as_u16() {
            202 => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            200 => return Ok((status_url, poll.body)),
            _ => return Err(poll),
        }
    }
    Err(reply)
}

/// The output file URLs of a manifest.
fn export_files(manifest: &Value) -> Vec<String> {
    manifest["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["url"].as_str().map(str::to_owned))
        .collect()
}

async fn bulk_export(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("bulk_export");
    let org_a_viewer = fixture::Viewer::Org {
        org: fixture::ORG_A,
        division: fixture::DIV_A,
        types: None,
    };
    // Each attacker's own exports hold only what it may see.
    for attacker in attackers(&w) {
        for auth in &attacker.system_auths {
            for path in [
                "$export",
                "Patient/$export",
                "$export?_type=Observation,Patient,Condition",
            ] {
                match run_export(&node, auth, path).await {
                    Ok((status_url, manifest)) => {
                        m.no_leak(
                            "$export kick-off",
                            attacker.caller,
                            &Request::get(status_url),
                            &harness::Reply {
                                status: reqwest::StatusCode::OK,
                                headers: Default::default(),
                                text: manifest.to_string(),
                                body: manifest.clone(),
                            },
                            &attacker.hidden,
                        );
                        for file in export_files(&manifest) {
                            let request = Request::get(file);
                            let reply = node.send(auth, &request).await;
                            m.no_leak(
                                "$export kick-off",
                                attacker.caller,
                                &request,
                                &reply,
                                &attacker.hidden,
                            );
                            for line in reply.text.lines() {
                                let resource: Value =
                                    serde_json::from_str(line).unwrap_or(Value::Null);
                                let as_reply = harness::Reply {
                                    status: reply.status,
                                    headers: Default::default(),
                                    text: line.to_owned(),
                                    body: resource,
                                };
                                check_visible_only(
                                    &mut m,
                                    "$export kick-off",
                                    attacker.caller,
                                    &attacker.viewer,
                                    &w,
                                    &request,
                                    &as_reply,
                                );
                            }
                        }
                    }
                    Err(reply) => {
                        let request = Request::get(path);
                        m.no_leak(
                            "$export kick-off",
                            attacker.caller,
                            &request,
                            &reply,
                            &attacker.hidden,
                        );
                        let expected: &[u16] = match attacker.caller {
                            NOBODY => &[401],
                            MISSING_ROLE | OTHER_RESIDENT => &[403],
                            // An institution's system token may export what it may see.
                            _ => &[202],
                        };
                        m.status(
                            "$export kick-off",
                            attacker.caller,
                            &request,
                            &reply,
                            expected,
                        );
                    }
                }
            }
        }
    }
    // org-a's job: nobody else may poll it, fetch its files or cancel it.
    let org_a = Auth::Bearer(w.org_a_system.clone());
    let (status_url, manifest) = match run_export(&node, &org_a, "$export").await {
        Ok(done) => done,
        Err(reply) => panic!("org-a's export did not run: {}", reply.describe()),
    };
    let files = export_files(&manifest);
    let mut text = String::new();
    for file in &files {
        text.push_str(&node.send(&org_a, &Request::get(file.clone())).await.text);
    }
    let holder = harness::Reply {
        status: reqwest::StatusCode::OK,
        headers: Default::default(),
        text: text.clone(),
        body: Value::Null,
    };
    m.gets(
        "$export kick-off",
        HOLDER_ORG,
        &Request::get("$export"),
        &holder,
        &w.alice.observation_value,
    );
    // org-a is itself in another division than bob's and carol's holder.
    m.no_leak(
        "$export kick-off",
        HOLDER_ORG,
        &Request::get("$export"),
        &holder,
        &w.hidden_from(&org_a_viewer),
    );
    for attacker in attackers(&w) {
        let mut auths = attacker.auths.clone();
        auths.extend(attacker.system_auths.iter().cloned());
        let expected: &[u16] = if attacker.caller == NOBODY {
            &[401]
        } else {
            &[403, 404]
        };
        for auth in &auths {
            for request in std::iter::once(Request::get(status_url.clone()))
                .chain(files.iter().map(|f| Request::get(f.clone())))
            {
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "another caller's export job",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                m.status(
                    "another caller's export job",
                    attacker.caller,
                    &request,
                    &reply,
                    expected,
                );
            }
            let request = Request::delete(status_url.clone());
            let reply = node.send(auth, &request).await;
            m.status(
                "another caller's export job",
                attacker.caller,
                &request,
                &reply,
                expected,
            );
        }
    }
    let still = node.send(&org_a, &Request::get(status_url.clone())).await;
    m.check(
        "another caller's export job",
        HOLDER_ORG,
        still.status.as_u16() == 200,
        || {
            format!(
                "org-a's job is gone after the attacks: {}",
                still.describe()
            )
        },
    );
    // The operator's export has everyone's records.
    let operator = Auth::Bearer(w.operator.clone());
    let (_, manifest) = run_export(&node, &operator, "$export")
        .await
        .unwrap_or_else(|r| panic!("operator export: {}", r.describe()));
    let mut text = String::new();
    for file in export_files(&manifest) {
        text.push_str(&node.send(&operator, &Request::get(file)).await.text);
    }
    let all = harness::Reply {
        status: reqwest::StatusCode::OK,
        headers: Default::default(),
        text,
        body: Value::Null,
    };
    m.gets(
        "$export kick-off",
        OPERATOR,
        &Request::get("$export"),
        &all,
        &w.carol.observation_value,
    );
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Subscriptions: a subscriber is never notified of records it may not see.

/// A rest-hook receiver on loopback that keeps every notification's body.
struct Receiver {
    address: std::net::SocketAddr,
    got: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let got: std::sync::Arc<parking_lot::Mutex<Vec<String>>> = Default::default();
        async fn record(
            axum::extract::State(got): axum::extract::State<
                std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
            >,
            uri: axum::http::Uri,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            got.lock()
                .push(format!("{uri} {}", String::from_utf8_lossy(&body)));
            axum::http::StatusCode::OK
        }
        let app = axum::Router::new().fallback(record).with_state(got.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            address,
            got,
            shutdown: Some(tx),
        }
    }

    fn text(&self) -> String {
        self.got.lock().join("\n")
    }

    /// Waits (up to a minute) until a notification mentions `needle`.
    async fn wait_for(&self, needle: &str) -> bool {
        for _ in 0..600 {
            if self.text().contains(needle) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn subscription(receiver: &Receiver, criteria: &str) -> Value {
    json!({"resourceType": "Subscription", "status": "requested", "reason": "adversarial suite",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": format!("http://{}/hook", receiver.address),
                    "payload": "application/fhir+json"}})
}

async fn subscriptions(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("subscriptions");
    let operator = Auth::Bearer(w.operator.clone());
    // Each caller subscribes to every new Observation, and to the victim's in particular.
    let mut subscribers: Vec<(&'static str, Vec<String>, Receiver, Option<String>)> = Vec::new();
    for attacker in attackers(&w) {
        let receiver = Receiver::start().await;
        let victim = w.resident(attacker.victim);
        let mut created = None;
        for (i, auth) in attacker.auths.iter().enumerate() {
            for criteria in [
                "Observation?status=final".to_owned(),
                format!("Observation?subject=Patient/{}", victim.patient),
            ] {
                let request = Request::post("Subscription", &subscription(&receiver, &criteria));
                let reply = node.send(auth, &request).await;
                m.no_leak(
                    "Subscription",
                    attacker.caller,
                    &request,
                    &reply,
                    &attacker.hidden,
                );
                if reply.status.as_u16() == 201 && i == 0 && created.is_none() {
                    created = reply.body["id"].as_str().map(str::to_owned);
                }
            }
        }
        subscribers.push((attacker.caller, attacker.hidden.clone(), receiver, created));
    }
    let legit_receiver = Receiver::start().await;
    let request = Request::post(
        "Subscription",
        &subscription(&legit_receiver, "Observation?status=final"),
    );
    let reply = node
        .send(&Auth::Bearer(w.org_a_user.clone()), &request)
        .await;
    m.check("Subscription", HOLDER_ORG, reply.status.as_u16() == 201, || {
        format!(
            "org-a could not subscribe (if the SSRF guard now refuses loopback endpoints, allow the receiver in harness::subscriptions_config()): {}",
            reply.describe()
        )
    });
    // Wait until the dispatcher took every Subscription on.
    let mut ids: Vec<String> = subscribers.iter().filter_map(|s| s.3.clone()).collect();
    ids.extend(reply.body["id"].as_str().map(str::to_owned));
    for id in &ids {
        for _ in 0..300 {
            let current = node
                .send(&operator, &Request::get(format!("Subscription/{id}")))
                .await;
            if current.body["status"] == "active" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    // New hidden results, then one everybody but alice's side may see (bob's), last: the
    // dispatcher notifies in commit order, so once the sentinel arrives the others were judged.
    let alice_new = "HIV-VIRAL-LOAD-NEW-SECRET-7731";
    let carol_new = "CAROL-NEW-RESULT-SECRET-5353";
    fixture::create(&node, &w.org_a_system, &json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "25836-8"}]},
        "subject": {"reference": format!("Patient/{}", w.alice.patient)}, "valueString": alice_new})).await;
    fixture::create(&node, &w.org_b_system, &json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "5195-3"}]},
        "subject": {"reference": format!("Patient/{}", w.carol.patient)}, "valueString": carol_new})).await;
    let sentinel = "BOB-SENTINEL-VISIBLE-4242";
    fixture::create(
        &node,
        &w.org_b_system,
        &json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{}", w.bob.patient)}, "valueString": sentinel}),
    )
    .await;
    for (caller, hidden, receiver, created) in &subscribers {
        let mut hidden = hidden.clone();
        // Alice's new result is hidden from every attacker; carol's from all but org-b's.
        hidden.push(alice_new.to_owned());
        if *caller != OTHER_DIVISION && *caller != MISSING_ROLE {
            hidden.push(carol_new.to_owned());
        }
        if created.is_some() {
            let arrived = receiver.wait_for(sentinel).await;
            m.check("Subscription", caller, arrived, || {
                "the subscriber was never notified of a record it may see (bob's new result); if the SSRF guard now refuses loopback endpoints, allow the receiver in harness::subscriptions_config()".to_owned()
            });
        }
        let got = harness::Reply {
            status: reqwest::StatusCode::OK,
            headers: Default::default(),
            text: receiver.text(),
            body: Value::Null,
        };
        let leaks = leak::find_leaks(&got, &hidden, None);
        m.check("Subscription", caller, leaks.is_empty(), || {
            format!("notifications carried {}", leaks.join(", "))
        });
    }
    let arrived = legit_receiver.wait_for(alice_new).await;
    m.check("Subscription", HOLDER_ORG, arrived, || {
        "org-a was not notified of alice's new result".to_owned()
    });
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// The portal: pages under another person's session.

/// Issues a sign-in code with the operator's token.
async fn issue_code(node: &Node, w: &World, request: Value) -> String {
    let reply = node
        .send(
            &Auth::Bearer(w.operator.clone()),
            &Request::post("/portal/one-time-code", &request),
        )
        .await;
    assert_eq!(
        reply.status.as_u16(),
        201,
        "issuing a sign-in code: {}",
        reply.describe()
    );
    reply.body["code"].as_str().unwrap_or_default().to_owned()
}

/// Signs in with a code; the session's `Cookie` header, if a session was opened.
async fn sign_in(node: &Node, code: &str) -> (harness::Reply, Option<String>) {
    let reply = node
        .send(
            &Auth::None,
            &Request::new(reqwest::Method::POST, "/portal/login").form(&[("code", code)]),
        )
        .await;
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .filter(|c| c.starts_with("phip_portal=") && c.len() > "phip_portal=".len())
        .map(str::to_owned);
    (reply, cookie)
}

async fn session(node: &Node, w: &World, request: Value) -> String {
    let code = issue_code(node, w, request).await;
    let (reply, cookie) = sign_in(node, &code).await;
    cookie.unwrap_or_else(|| panic!("signing in failed: {}", reply.describe()))
}

fn page(path: String, cookie: Option<&str>) -> Request {
    let request = Request::get(path);
    match cookie {
        Some(c) => request.header("cookie", c),
        None => request,
    }
}

async fn portal_pages(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("portal_pages");
    let clinician = |org: &str, division: &str, role: &str| json!({"practitioner": format!("dr-{org}"), "organization": org, "division": division, "role": role});
    let bob = session(&node, &w, json!({"patient": w.bob.patient})).await;
    let org_b = session(
        &node,
        &w,
        clinician(fixture::ORG_B, fixture::DIV_B, "clinician"),
    )
    .await;
    let org_c = session(
        &node,
        &w,
        clinician(fixture::ORG_C, fixture::DIV_C, "clinician"),
    )
    .await;
    let pharmacist = session(
        &node,
        &w,
        clinician(fixture::ORG_B, fixture::DIV_B, "pharmacist"),
    )
    .await;
    let pharmacist_viewer = fixture::Viewer::Org {
        org: fixture::ORG_B,
        division: fixture::DIV_B,
        types: Some(vec![
            "MedicationRequest",
            "MedicationDispense",
            "Patient",
            "Provenance",
            "Practitioner",
            "Organization",
        ]),
    };
    let garbage = format!("phip_portal={}", w.garbage);
    for attacker in attackers(&w) {
        let victim = w.resident(attacker.victim);
        let patient_pages = [
            format!("/portal/clinic/patient/{}", victim.patient),
            format!("/portal/clinic/patient/{}", victim.golden),
        ];
        let (cookies, hidden, pages): (Vec<Option<&str>>, Vec<String>, Vec<String>) =
            match attacker.caller {
                OTHER_RESIDENT => (vec![Some(bob.as_str())], attacker.hidden.clone(), {
                    let mut p = vec!["/portal/me".to_owned(), "/portal".to_owned()];
                    p.extend(patient_pages.iter().cloned());
                    p
                }),
                CONSENT_DENIED => (vec![Some(org_c.as_str())], attacker.hidden.clone(), {
                    let mut p = vec!["/portal/clinic".to_owned()];
                    p.extend(patient_pages.iter().cloned());
                    p
                }),
                OTHER_DIVISION => (vec![Some(org_b.as_str())], attacker.hidden.clone(), {
                    let mut p = vec!["/portal/clinic".to_owned()];
                    p.extend(patient_pages.iter().cloned());
                    p
                }),
                // A pharmacist's session has no clinician role.
                MISSING_ROLE => (
                    vec![Some(pharmacist.as_str())],
                    w.hidden_from(&pharmacist_viewer),
                    {
                        let mut p = vec!["/portal/clinic/pharmacy".to_owned()];
                        p.extend(patient_pages.iter().cloned());
                        p
                    },
                ),
                _ => (
                    vec![None, Some(garbage.as_str())],
                    attacker.hidden.clone(),
                    {
                        let mut p = vec!["/portal/me".to_owned(), "/portal/clinic".to_owned()];
                        p.extend(patient_pages.iter().cloned());
                        p
                    },
                ),
            };
        for cookie in cookies {
            for path in &pages {
                let request = page(path.clone(), cookie);
                let reply = node.send(&Auth::None, &request).await;
                m.no_leak("portal pages", attacker.caller, &request, &reply, &hidden);
            }
        }
    }
    // Alice's own session shows her records; org-a's clinician sees her summary.
    let alice = session(&node, &w, json!({"patient": w.alice.patient})).await;
    let request = page("/portal/me".into(), Some(&alice));
    let reply = node.send(&Auth::None, &request).await;
    m.gets(
        "portal pages",
        RESIDENT_SELF,
        &request,
        &reply,
        &w.alice.condition_text,
    );
    let org_a = session(
        &node,
        &w,
        clinician(fixture::ORG_A, fixture::DIV_A, "clinician"),
    )
    .await;
    let request = page(
        format!("/portal/clinic/patient/{}", w.alice.patient),
        Some(&org_a),
    );
    let reply = node.send(&Auth::None, &request).await;
    m.gets(
        "portal pages",
        HOLDER_ORG,
        &request,
        &reply,
        &w.alice.condition_text,
    );
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Server-owned state: sign-in codes, golden records, receipts, revocations (items 1, 5 of #16).

/// A sign-in code and the `Basic` resource the portal would store for it.
fn forged_sign_in_code(subject: &str, extra: &[Value], tag: bool) -> (String, Value) {
    use sha2::Digest as _;
    let code: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_digit() && *c != '0' && *c != '1')
        .chain("ABCDEFGHJKMN".chars())
        .take(12)
        .collect();
    let hash: String = sha2::Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expires = (chrono::Utc::now() + chrono::Duration::minutes(9))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut extension = vec![
        json!({"url": "urn:phip:portal:subject", "valueString": subject}),
        json!({"url": "urn:phip:portal:expires", "valueDateTime": expires}),
        json!({"url": "urn:phip:portal:state", "valueCode": "issued"}),
    ];
    extension.extend(extra.iter().cloned());
    let mut basic = json!({"resourceType": "Basic",
        "identifier": [{"system": "urn:phip:portal:sign-in-code", "value": hash}],
        "code": {"coding": [{"system": "urn:phip:portal", "code": "sign-in-code"}]},
        "extension": extension});
    if tag {
        basic["meta"] =
            json!({"tag": [{"system": "urn:phip:server-owned", "code": "sign-in-code"}]});
    }
    (code, basic)
}

async fn server_owned_sign_in_codes(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("server_owned_sign_in_codes");
    let mut callers: Vec<(&str, Vec<Auth>)> = attackers(&w)
        .into_iter()
        .map(|a| (a.caller, a.auths))
        .collect();
    callers.push((
        HOLDER_ORG,
        vec![
            Auth::Bearer(w.org_a_user.clone()),
            Auth::Bearer(w.org_a_system.clone()),
        ],
    ));
    callers.push((OPERATOR, vec![Auth::Bearer(w.operator.clone())]));
    for (caller, auths) in &callers {
        for auth in auths {
            for (subject, extra) in [
                // A resident's session bound to alice's golden record.
                (format!("Patient/{}", w.alice.golden), vec![]),
                // A clinician of no division (who would see everything).
                (
                    "Practitioner/forged".to_owned(),
                    vec![
                        json!({"url": "urn:phip:portal:organization", "valueString": "forged-org"}),
                        json!({"url": "urn:phip:portal:role", "valueCode": "clinician"}),
                    ],
                ),
            ] {
                for tag in [false, true] {
                    let (code, basic) = forged_sign_in_code(&subject, &extra, tag);
                    let request = Request::post("Basic", &basic);
                    let reply = node.send(auth, &request).await;
                    // With the server-owned tag the write itself is refused; without it, the
                    // record may be an ordinary Basic, but it must never sign anybody in.
                    if tag {
                        let expected: &[u16] = if *caller == NOBODY { &[401] } else { &[403] };
                        m.status("forged sign-in code", caller, &request, &reply, expected);
                    }
                    let (login, cookie) = sign_in(&node, &code).await;
                    m.check("forged sign-in code", caller, cookie.is_none(), || {
                        format!(
                            "a code written through the API signed in as {subject}: {}",
                            login.describe()
                        )
                    });
                    // The same through a transaction.
                    let (code, basic) = forged_sign_in_code(&subject, &extra, tag);
                    let request = Request::post(
                        "",
                        &json!({"resourceType": "Bundle", "type": "transaction",
                        "entry": [{"resource": basic, "request": {"method": "POST", "url": "Basic"}}]}),
                    );
                    let reply = node.send(auth, &request).await;
                    m.check(
                        "forged sign-in code",
                        caller,
                        !tag || !reply.status.is_success(),
                        || {
                            format!(
                                "a transaction wrote a server-owned sign-in code: {}",
                                reply.describe()
                            )
                        },
                    );
                    let (_, cookie) = sign_in(&node, &code).await;
                    m.check("forged sign-in code", caller, cookie.is_none(), || {
                        format!("a code written in a transaction signed in as {subject}")
                    });
                }
            }
        }
    }
    // Codes the portal issues still work, and are visible to no token.
    let code = issue_code(&node, &w, json!({"patient": w.alice.patient})).await;
    let (reply, cookie) = sign_in(&node, &code).await;
    m.check("sign-in code", RESIDENT_SELF, cookie.is_some(), || {
        format!(
            "a code the portal issued did not sign in: {}",
            reply.describe()
        )
    });
    // The codes the server stores carry its tag and the hash of the code; the look-alikes the
    // attacks above wrote are ordinary Basic resources of their writers and may be found.
    let hash: String = {
        use sha2::Digest as _;
        let normalized: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        sha2::Sha256::digest(normalized.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for (caller, token) in [(OPERATOR, &w.operator), (HOLDER_ORG, &w.org_a_system)] {
        for query in [
            "Basic?_tag=urn:phip:server-owned|sign-in-code&_count=100".to_owned(),
            format!("Basic?identifier=urn:phip:portal:sign-in-code|{hash}"),
        ] {
            let request = Request::get(&query);
            let reply = node.send(&Auth::Bearer(token.clone()), &request).await;
            m.check(
                "sign-in code",
                caller,
                reply.status.as_u16() == 200 && reply.entries().is_empty(),
                || {
                    format!(
                        "sign-in codes are server-private, yet a token found them: {}",
                        reply.describe()
                    )
                },
            );
        }
    }
    node.stop().await;
    m.finish();
}

async fn server_owned_golden_records(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("server_owned_golden_records");
    let operator = Auth::Bearer(w.operator.clone());
    let golden = node
        .send(
            &operator,
            &Request::get(format!("Patient/{}", w.alice.golden)),
        )
        .await
        .body;
    let mut forged = golden.clone();
    if let Some(o) = forged.as_object_mut() {
        o.remove("meta");
    }
    let mut links = forged["link"].as_array().cloned().unwrap_or_default();
    links.push(
        json!({"other": {"reference": format!("Patient/{}", w.bob.golden)}, "type": "seealso"}),
    );
    forged["link"] = json!(links);
    let mut callers: Vec<(&str, Vec<Auth>)> = attackers(&w)
        .into_iter()
        .map(|a| (a.caller, a.auths))
        .collect();
    callers.push((RESIDENT_SELF, vec![Auth::Bearer(w.alice.token.clone())]));
    callers.push((
        HOLDER_ORG,
        vec![
            Auth::Bearer(w.org_a_user.clone()),
            Auth::Bearer(w.org_a_system.clone()),
        ],
    ));
    callers.push((OPERATOR, vec![operator.clone()]));
    for (caller, auths) in &callers {
        // Judged against the record as this caller found it, so that one caller's success
        // is not blamed on the next.
        let baseline = node
            .send(
                &operator,
                &Request::get(format!("Patient/{}", w.alice.golden)),
            )
            .await;
        let version = baseline.body["meta"]["versionId"].clone();
        let refused: &[u16] = match *caller {
            NOBODY => &[401],
            // Who cannot see the golden record gets what a hidden record's update gets.
            OTHER_RESIDENT | CONSENT_DENIED | OTHER_DIVISION | RESIDENT_SELF => &[403, 409],
            _ => &[403],
        };
        for auth in auths {
            let request = Request::put(format!("Patient/{}", w.alice.golden), &forged);
            let reply = node.send(auth, &request).await;
            m.status("golden record write", caller, &request, &reply, refused);
            let patch = json!([{"op": "add", "path": "/link/-", "value": {"other": {"reference": format!("Patient/{}", w.bob.golden)}, "type": "seealso"}}]);
            let request = Request::patch(format!("Patient/{}", w.alice.golden), &patch);
            let reply = node.send(auth, &request).await;
            m.check(
                "golden record write",
                caller,
                !reply.status.is_success(),
                || format!("PATCH of a golden record accepted: {}", reply.describe()),
            );
            let request = Request::post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": forged.clone(), "request": {"method": "PUT", "url": format!("Patient/{}", w.alice.golden)}}]}),
            );
            let reply = node.send(auth, &request).await;
            m.check(
                "golden record write",
                caller,
                !reply.status.is_success(),
                || {
                    format!(
                        "a transaction rewrote a golden record: {}",
                        reply.describe()
                    )
                },
            );
            // A new record claiming to be a golden one.
            let mut fake = forged.clone();
            if let Some(o) = fake.as_object_mut() {
                o.remove("id");
            }
            fake["meta"] = json!({"tag": [{"system": "urn:phip:mpi", "code": "golden"}]});
            let request = Request::post("Patient", &fake);
            let reply = node.send(auth, &request).await;
            let created_golden = reply.status.is_success()
                && reply.body["meta"]["tag"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["system"] == "urn:phip:mpi" && t["code"] == "golden");
            m.check("golden record write", caller, !created_golden, || {
                format!("a client created a golden record: {}", reply.describe())
            });
            let request = Request::delete(format!("Patient/{}", w.alice.golden));
            let reply = node.send(auth, &request).await;
            let _ = reply;
            let after = node
                .send(
                    &operator,
                    &Request::get(format!("Patient/{}", w.alice.golden)),
                )
                .await;
            m.check(
                "golden record write",
                caller,
                after.status == baseline.status
                    && after.body["meta"]["versionId"] == version
                    && (after.text.contains(&w.bob.golden)
                        == baseline.text.contains(&w.bob.golden)),
                || {
                    format!(
                        "alice's golden record was changed or deleted: {}",
                        after.describe()
                    )
                },
            );
        }
    }
    // Alice's portal shows nothing of bob.
    let alice = session(&node, &w, json!({"patient": w.alice.patient})).await;
    let request = page("/portal/me".into(), Some(&alice));
    let reply = node.send(&Auth::None, &request).await;
    m.no_leak(
        "golden record write",
        RESIDENT_SELF,
        &request,
        &reply,
        &w.hidden_from(&fixture::Viewer::Resident(Who::Alice)),
    );
    m.gets(
        "golden record write",
        RESIDENT_SELF,
        &request,
        &reply,
        &w.alice.condition_text,
    );
    node.stop().await;
    m.finish();
}

/// Applies an HL7 v2 admission through the feed (as the MLLP listener does) and returns the
/// id of the receipt the server wrote for it.
async fn hl7_receipt(node: &Node, w: &World, sequence: usize) -> String {
    let handler = phip_server::hl7::Hl7Handler::new(node.engine.clone(), node.base.clone());
    let rid = common::resident_id("320481", "19800517", "135");
    let control = format!("RCPT-{sequence}");
    let message = format!(
        "MSH|^~\\&|HIS|ORGA|PHIP|HUB|20261125080000||ADT^A01^ADT_A01|{control}|P|2.5.1\r\
         PID|1||A100^^^^MR~{rid}^^^^NNCHN||ZHANG^WEI||19800517|M\r\
         PV1|1|I|W1^101^1||||||||||||||||V1|||||||||||||||||||||||||20261125080000\r"
    );
    let applied = tokio::task::spawn_blocking(move || {
        let parsed = phip_hl7v2::Message::parse(message.as_bytes()).expect("message parses");
        handler.apply(&parsed)
    })
    .await
    .expect("join");
    assert!(
        matches!(applied, Ok(true)),
        "the HL7 message was not applied: {applied:?}"
    );
    let receipts = node
        .send(
            &Auth::Bearer(w.operator.clone()),
            &Request::get(format!(
                "Basic?identifier=urn:phip:hl7v2:message:ORGA|{control}"
            )),
        )
        .await;
    receipts
        .ids()
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no receipt: {}", receipts.describe()))
}

async fn server_owned_receipts_and_revocations(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("server_owned_receipts_and_revocations");
    let operator = Auth::Bearer(w.operator.clone());
    // Each caller attacks a fresh receipt of an HL7 v2 admission applied by the feed, and
    // alice's health-code revocation (which alice renews whenever an attack removed it).
    let mut sequence = 0;
    let mut callers: Vec<(&str, Vec<Auth>)> = attackers(&w)
        .into_iter()
        .map(|a| (a.caller, a.auths))
        .collect();
    callers.push((RESIDENT_SELF, vec![Auth::Bearer(w.alice.token.clone())]));
    callers.push((
        HOLDER_ORG,
        vec![
            Auth::Bearer(w.org_a_user.clone()),
            Auth::Bearer(w.org_a_system.clone()),
        ],
    ));
    callers.push((OPERATOR, vec![operator.clone()]));
    let revocation = format!("health-code-{}", w.alice.golden);
    for (caller, auths) in &callers {
        for auth in auths {
            sequence += 1;
            let receipt = hl7_receipt(&node, &w, sequence).await;
            let current = node
                .send(&operator, &Request::get(format!("Basic/{revocation}")))
                .await;
            if current.status.as_u16() != 200 {
                let revoke = node
                    .send(
                        &Auth::Bearer(w.alice.token.clone()),
                        &Request::post(
                            format!("Patient/{}/$health-code-revoke", w.alice.patient),
                            &json!({"resourceType": "Parameters"}),
                        ),
                    )
                    .await;
                assert!(
                    revoke.status.is_success(),
                    "alice could not revoke her code: {}",
                    revoke.describe()
                );
            }
            for (interaction, id) in [
                ("HL7 receipt write", receipt.clone()),
                ("health-code revocation write", revocation.clone()),
            ] {
                let baseline = node
                    .send(&operator, &Request::get(format!("Basic/{id}")))
                    .await;
                assert_eq!(
                    baseline.status.as_u16(),
                    200,
                    "Basic/{id}: {}",
                    baseline.describe()
                );
                let mut changed = baseline.body.clone();
                if let Some(o) = changed.as_object_mut() {
                    o.remove("meta");
                }
                // A valid change (the record's date), so that only the server-owned rule can
                // refuse it.
                changed["created"] = json!("2001-01-01");
                for request in [
                    Request::put(format!("Basic/{id}"), &changed),
                    Request::patch(
                        format!("Basic/{id}"),
                        &json!([{"op": "add", "path": "/created", "value": "2001-01-01"}]),
                    ),
                    Request::delete(format!("Basic/{id}")),
                ] {
                    let reply = node.send(auth, &request).await;
                    if request.method != reqwest::Method::DELETE {
                        m.check(interaction, caller, !reply.status.is_success(), || {
                            format!(
                                "{} {} of server-owned state accepted: {}",
                                request.method,
                                request.path,
                                reply.describe()
                            )
                        });
                    }
                    let after = node
                        .send(&operator, &Request::get(format!("Basic/{id}")))
                        .await;
                    m.check(
                        interaction,
                        caller,
                        after.status.as_u16() == 200
                            && after.body["meta"]["versionId"]
                                == baseline.body["meta"]["versionId"],
                        || {
                            format!(
                                "{} {} changed or deleted server-owned state: now {}",
                                request.method,
                                request.path,
                                after.describe()
                            )
                        },
                    );
                    if after.status.as_u16() != 200
                        || after.body["meta"]["versionId"] != baseline.body["meta"]["versionId"]
                    {
                        break;
                    }
                }
            }
        }
    }
    // Nor can a client mint server-owned state of its own.
    for (caller, auths) in &callers {
        for auth in auths {
            let request = Request::post(
                "Basic",
                &json!({"resourceType": "Basic",
                "meta": {"tag": [{"system": "urn:phip:server-owned", "code": "receipt"}]},
                "code": {"coding": [{"system": "urn:phip:hl7v2", "code": "message-receipt"}]},
                "identifier": [{"system": "urn:phip:hl7v2:message:ORGA", "value": "FORGED-1"}]}),
            );
            let reply = node.send(auth, &request).await;
            m.check(
                "server-owned tag forged",
                caller,
                !reply.status.is_success(),
                || format!("a client wrote a server-owned record: {}", reply.describe()),
            );
        }
    }
    node.stop().await;
    m.finish();
}

// ---------------------------------------------------------------------------------------------
// Consent authority (item 2 of #16) and writes that leave the compartment (item 6).

/// Whether org `token` can read `path` (200).
async fn can_read(node: &Node, token: &str, path: &str) -> bool {
    node.send(&Auth::Bearer(token.to_owned()), &Request::get(path))
        .await
        .status
        .as_u16()
        == 200
}

async fn consent_authority(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("consent_authority");
    let operator = Auth::Bearer(w.operator.clone());
    let alice_obs = format!("Observation/{}", w.alice.observation);
    let carol_obs = format!("Observation/{}", w.carol.observation);

    // First the legitimate authors: the resident opens and closes her records herself; a
    // steward records a denial.
    let alice = Auth::Bearer(w.alice.token.clone());
    let request = Request::post(
        "Consent",
        &fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
    );
    let reply = node.send(&alice, &request).await;
    m.status(
        "privacy Consent by the resident",
        RESIDENT_SELF,
        &request,
        &reply,
        &[201],
    );
    let opened = can_read(&node, &w.org_b_user, &alice_obs).await;
    m.check(
        "privacy Consent by the resident",
        RESIDENT_SELF,
        opened,
        || "alice's permit does not open her result to org-b".into(),
    );
    if let Some(id) = reply.body["id"].as_str() {
        let mut withdrawn = reply.body.clone();
        withdrawn["status"] = json!("inactive");
        let request = Request::put(format!("Consent/{id}"), &withdrawn);
        let reply = node.send(&alice, &request).await;
        m.status(
            "privacy Consent by the resident",
            RESIDENT_SELF,
            &request,
            &reply,
            &[200],
        );
        let opened = can_read(&node, &w.org_b_user, &alice_obs).await;
        m.check(
            "privacy Consent by the resident",
            RESIDENT_SELF,
            !opened,
            || "alice's withdrawn permit still opens her result".into(),
        );
    }
    let steward = Auth::Bearer(w.steward.clone());
    let request = Request::post(
        "Consent",
        &fixture::privacy_consent(&w.alice.patient, "deny", fixture::ORG_A),
    );
    let reply = node.send(&steward, &request).await;
    m.status(
        "privacy Consent by a steward",
        "consent-steward",
        &request,
        &reply,
        &[201],
    );

    // Consents that open records to their own author.
    let attempts: Vec<(&str, Auth, Value, &str, String)> = vec![
        (
            OTHER_DIVISION,
            Auth::Bearer(w.org_b_user.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            OTHER_DIVISION,
            Auth::Bearer(w.org_b_system.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            CONSENT_DENIED,
            Auth::Bearer(w.org_c_user.clone()),
            fixture::privacy_consent(&w.carol.patient, "permit", fixture::ORG_C),
            fixture::ORG_C,
            carol_obs.clone(),
        ),
        (
            HOLDER_ORG,
            Auth::Bearer(w.org_a_user.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            OTHER_RESIDENT,
            Auth::Bearer(w.bob.token.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            MISSING_ROLE,
            Auth::Bearer(w.no_role.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            NOBODY,
            Auth::None,
            fixture::privacy_consent(&w.alice.patient, "permit", fixture::ORG_B),
            fixture::ORG_B,
            alice_obs.clone(),
        ),
        (
            "consent-steward",
            Auth::Bearer(w.steward.clone()),
            fixture::privacy_consent(&w.alice.patient, "permit", "registry-office"),
            "registry-office",
            alice_obs.clone(),
        ),
    ];
    let reader = |org: &str| match org {
        fixture::ORG_B => w.org_b_user.clone(),
        fixture::ORG_C => w.org_c_user.clone(),
        _ => node.mint(phip_security::token::Grant {
            sub: "registry".into(),
            scope: "user/*.rs".into(),
            org: Some(org.into()),
            division: Some("320100".into()),
            ..Default::default()
        }),
    };
    for (caller, auth, consent, grantee, target) in &attempts {
        let was_open = can_read(&node, &reader(grantee), target).await;
        let expected: &[u16] = if *caller == NOBODY { &[401] } else { &[403] };
        let request = Request::post("Consent", consent);
        let reply = node.send(auth, &request).await;
        m.status(
            "privacy Consent by a non-resident",
            caller,
            &request,
            &reply,
            expected,
        );
        let request = Request::post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": consent, "request": {"method": "POST", "url": "Consent"}}]}),
        );
        let reply = node.send(auth, &request).await;
        m.check(
            "privacy Consent by a non-resident",
            caller,
            !reply.status.is_success(),
            || format!("a transaction recorded the Consent: {}", reply.describe()),
        );
        let opened = can_read(&node, &reader(grantee), target).await;
        m.check(
            "privacy Consent by a non-resident",
            caller,
            was_open || !opened,
            || format!("{grantee} can read {target} after the attack"),
        );
    }

    // Changing or withdrawing carol's denial of org-c. Each attempt finds an active denial:
    // after one that succeeded, carol records a new one, so that every row is judged.
    let changers: Vec<(&str, Auth)> = vec![
        (CONSENT_DENIED, Auth::Bearer(w.org_c_user.clone())),
        (CONSENT_DENIED, Auth::Bearer(w.org_c_system.clone())),
        (HOLDER_ORG, Auth::Bearer(w.org_b_user.clone())),
        (OTHER_RESIDENT, Auth::Bearer(w.bob.token.clone())),
        (MISSING_ROLE, Auth::Bearer(w.no_role.clone())),
        (NOBODY, Auth::None),
        (OTHER_DIVISION, Auth::Bearer(w.org_a_user.clone())),
    ];
    let mut consent_id = w.carol_consent.clone();
    for (caller, auth) in &changers {
        for attempt in 0..5 {
            let mut before = node
                .send(&operator, &Request::get(format!("Consent/{consent_id}")))
                .await;
            if before.status.as_u16() != 200 || before.body["status"] != "active" {
                consent_id = fixture::create(
                    &node,
                    &w.carol.token,
                    &fixture::privacy_consent(&w.carol.patient, "deny", fixture::ORG_C),
                )
                .await;
                before = node
                    .send(&operator, &Request::get(format!("Consent/{consent_id}")))
                    .await;
            }
            let consent_path = format!("Consent/{consent_id}");
            let mut inactive = before.body.clone();
            inactive["status"] = json!("inactive");
            if let Some(o) = inactive.as_object_mut() {
                o.remove("meta");
            }
            let request = match attempt {
                0 => Request::put(consent_path.clone(), &inactive),
                1 => Request::patch(
                    consent_path.clone(),
                    &json!([{"op": "replace", "path": "/status", "value": "inactive"}]),
                ),
                2 => Request::put(format!("Consent?_id={consent_id}"), &inactive),
                3 => Request::delete(consent_path.clone()),
                _ => Request::delete(format!("Consent?_id={consent_id}")),
            };
            let was_open = can_read(&node, &w.org_c_user, &carol_obs).await;
            node.send(auth, &request).await;
            let after = node
                .send(&operator, &Request::get(consent_path.clone()))
                .await;
            m.check(
                "privacy Consent changed by another",
                caller,
                after.status == before.status
                    && after.body["status"] == before.body["status"]
                    && after.body["meta"]["versionId"] == before.body["meta"]["versionId"],
                || {
                    format!(
                        "{} {} changed carol's Consent: now {}",
                        request.method,
                        request.path,
                        after.describe()
                    )
                },
            );
            let opened = can_read(&node, &w.org_c_user, &carol_obs).await;
            m.check(
                "privacy Consent changed by another",
                caller,
                was_open || !opened,
                || {
                    format!(
                        "org-c reads carol's result after {} {}",
                        request.method, request.path
                    )
                },
            );
        }
    }

    node.stop().await;
    m.finish();
}

async fn patient_writes_stay_in_compartment(backend: Backend) {
    let (node, w) = setup(backend).await;
    let mut m = Matrix::new("patient_writes_stay_in_compartment");
    let bob = Auth::Bearer(w.bob.token.clone());
    let operator = Auth::Bearer(w.operator.clone());
    let marker = |what: &str| format!("BOB-FORGED-{what}");
    let about = |subject: &str, performer: &str, what: &str| {
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{subject}")},
            "performer": [{"reference": format!("Patient/{performer}")}],
            "valueString": marker(what)})
    };
    let attempts = vec![
        (
            "subject-alice",
            Request::post(
                "Observation",
                &about(&w.alice.patient, &w.bob.patient, "subject-alice"),
            ),
        ),
        (
            "performer-alice",
            Request::post(
                "Observation",
                &about(&w.bob.patient, &w.alice.patient, "performer-alice"),
            ),
        ),
        (
            "conditional",
            Request::put(
                format!("Observation?identifier={OBS_ID_SYSTEM}|{NOSUCH}"),
                &about(&w.alice.patient, &w.bob.patient, "conditional"),
            ),
        ),
        (
            "transaction",
            Request::post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": about(&w.alice.patient, &w.bob.patient, "transaction"), "request": {"method": "POST", "url": "Observation"}}]}),
            ),
        ),
    ];
    for (what, request) in &attempts {
        let reply = node.send(&bob, request).await;
        m.check(
            "patient/ write into another compartment",
            OTHER_RESIDENT,
            !reply.status.is_success(),
            || format!("{what}: {}", reply.describe()),
        );
        let stored = node
            .send(
                &operator,
                &Request::get(format!("Observation?value-string={}", marker(what))),
            )
            .await;
        m.check(
            "patient/ write into another compartment",
            OTHER_RESIDENT,
            stored.entries().is_empty(),
            || format!("{what} was stored: {}", stored.describe()),
        );
    }
    // Moving his own record into alice's compartment.
    let request = Request::patch(
        format!("Observation/{}", w.bob.observation),
        &json!([
        {"op": "replace", "path": "/subject/reference", "value": format!("Patient/{}", w.alice.patient)}]),
    );
    let reply = node.send(&bob, &request).await;
    m.check(
        "patient/ write into another compartment",
        OTHER_RESIDENT,
        !reply.status.is_success(),
        || format!("PATCH moved bob's record to alice: {}", reply.describe()),
    );
    // Patients: with a body id, without one, by update.
    let new_id = absent_id();
    for request in [
        Request::post(
            "Patient",
            &json!({"resourceType": "Patient", "id": new_id, "name": [{"family": "BOB-FORGED-PATIENT"}]}),
        ),
        Request::post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "BOB-FORGED-PATIENT"}]}),
        ),
        Request::put(
            format!("Patient/{new_id}"),
            &json!({"resourceType": "Patient", "id": new_id, "name": [{"family": "BOB-FORGED-PATIENT"}]}),
        ),
    ] {
        let reply = node.send(&bob, &request).await;
        m.check(
            "patient/ Patient create",
            OTHER_RESIDENT,
            !reply.status.is_success(),
            || format!("{} {}: {}", request.method, request.path, reply.describe()),
        );
    }
    let stored = node
        .send(
            &operator,
            &Request::get("Patient?family=BOB-FORGED-PATIENT"),
        )
        .await;
    m.check(
        "patient/ Patient create",
        OTHER_RESIDENT,
        stored.entries().is_empty(),
        || format!("a resident created Patients: {}", stored.describe()),
    );
    // Bob still writes into his own compartment.
    let request = Request::post("Observation", &about(&w.bob.patient, &w.bob.patient, "own"));
    let reply = node.send(&bob, &request).await;
    m.status(
        "patient/ write into another compartment",
        RESIDENT_SELF,
        &request,
        &reply,
        &[201],
    );
    node.stop().await;
    m.finish();
}

on_all_backends!(
    reads_by_id,
    searches,
    paging_and_totals,
    includes_chains_has,
    conditional_writes,
    bundles,
    writes_by_id,
    patient_index,
    health_code,
    audit_trail,
    bulk_export,
    subscriptions,
    portal_pages,
    server_owned_sign_in_codes,
    server_owned_golden_records,
    server_owned_receipts_and_revocations,
    consent_authority,
    patient_writes_stay_in_compartment,
);

/// Prints the figure: how many (interaction × caller) cases the suite checks (per backend,
/// and on all three: SQLite, PostgreSQL, PostgreSQL with Citus).
#[test]
fn case_table_figure() {
    let (cases, attacker_cases, legit_cases) = matrix::figure();
    println!(
        "adversarial suite: {cases} (interaction × caller) cases per backend ({attacker_cases} attacking, {legit_cases} legitimate), {} on the three backends",
        cases * 3
    );
    assert!(cases > 0);
}
