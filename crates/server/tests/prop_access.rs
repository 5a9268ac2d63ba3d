//! Property-based fuzzing of searches under restricted tokens (issue #16): random search
//! parameters — type, parameter, modifier, a value drawn from the fixture's own values (the
//! hidden ones included), `_count`, `_sort` — run as a resident, as organisations of the same
//! and of another division, as a consent-denied organisation and as a user limited to one type.
//! Properties:
//! - what a restricted caller gets is a subset of what the operator gets for the same query,
//!   intersected with the records the caller may see (computed from the fixture by the rules
//!   of `docs/security.md`);
//! - `_summary=count` and `total`, when given, equal the number of entries paging to the end
//!   yields.
//!
//! Runs the default 64 cases per backend (`PROPTEST_CASES` raises it).

mod common;

#[path = "adversarial/fixture.rs"]
mod fixture;
#[path = "adversarial/harness.rs"]
mod harness;

use std::collections::BTreeSet;

use common::Backend;
use fixture::{Viewer, World, ICD10, LOINC, OBS_ID_SYSTEM, RESIDENT_ID};
use harness::{Auth, Node, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// One generated search.
#[derive(Debug, Clone)]
struct Query {
    resource_type: &'static str,
    params: Vec<(String, String)>,
    count: Option<u32>,
    sort: Option<&'static str>,
}

impl Query {
    fn path(&self, with_paging: bool) -> String {
        let mut pairs: Vec<(String, String)> = self.params.clone();
        if with_paging {
            if let Some(count) = self.count {
                pairs.push(("_count".into(), count.to_string()));
            }
            if let Some(sort) = self.sort {
                pairs.push(("_sort".into(), sort.into()));
            }
        } else {
            pairs.push(("_summary".into(), "count".into()));
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .finish();
        format!("{}?{query}", self.resource_type)
    }
}

/// Search parameters and the values each can take.
type Candidates = Vec<(String, Vec<String>)>;

/// The values a parameter can take, drawn from the fixture.
fn candidates(w: &World, resource_type: &str) -> Candidates {
    let residents = [&w.alice, &w.bob, &w.carol];
    let each = |f: &dyn Fn(&fixture::Resident) -> String| {
        residents.iter().map(|r| f(r)).collect::<Vec<_>>()
    };
    let with = |mut v: Vec<String>, extra: &[&str]| {
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    match resource_type {
        "Observation" => vec![
            (
                "value-string".into(),
                with(
                    each(&|r| r.observation_value.clone()),
                    &["HIV", "BOB", "CAROL", "NOSUCH"],
                ),
            ),
            (
                "value-string:exact".into(),
                each(&|r| r.observation_value.clone()),
            ),
            (
                "value-string:contains".into(),
                vec![
                    "SECRET".into(),
                    "POSITIVE".into(),
                    "5353".into(),
                    "7731".into(),
                ],
            ),
            (
                "code".into(),
                with(
                    each(&|r| format!("{LOINC}|{}", r.observation_code)),
                    &["http://loinc.org|24467-3", "75622-1"],
                ),
            ),
            (
                "code:not".into(),
                each(&|r| format!("{LOINC}|{}", r.observation_code)),
            ),
            (
                "subject".into(),
                each(&|r| format!("Patient/{}", r.patient)),
            ),
            ("patient".into(), each(&|r| r.patient.clone())),
            (
                "identifier".into(),
                each(&|r| format!("{OBS_ID_SYSTEM}|{}", r.observation_identifier)),
            ),
            (
                "date".into(),
                vec![
                    "2023-07-31".into(),
                    "ge2023-01-01".into(),
                    "lt2000-01-01".into(),
                ],
            ),
            (
                "value-quantity".into(),
                vec!["773.1".into(), "gt100".into(), "lt10".into()],
            ),
            (
                "value-quantity:missing".into(),
                vec!["true".into(), "false".into()],
            ),
            ("focus".into(), vec![format!("Patient/{}", w.bob.patient)]),
            (
                "performer".into(),
                vec![format!("Practitioner/{}", w.doctor)],
            ),
            ("_id".into(), each(&|r| r.observation.clone())),
            ("subject:Patient.family".into(), each(&|r| r.family.clone())),
            (
                "subject:Patient.birthdate".into(),
                each(&|r| r.birth_date.clone()),
            ),
        ],
        "Condition" => vec![
            (
                "code".into(),
                with(
                    each(&|r| format!("{ICD10}|{}", r.condition_code)),
                    &["http://hl7.org/fhir/sid/icd-10|F32"],
                ),
            ),
            (
                "code:text".into(),
                with(each(&|r| r.condition_text.clone()), &["BOB-AT-ORGA"]),
            ),
            (
                "subject".into(),
                each(&|r| format!("Patient/{}", r.patient)),
            ),
            (
                "recorded-date".into(),
                vec!["2023-07-31".into(), "gt2030-01-01".into()],
            ),
            (
                "_id".into(),
                with(each(&|r| r.condition.clone()), &[w.bob_at_a.as_str()]),
            ),
            ("subject:Patient.family".into(), each(&|r| r.family.clone())),
        ],
        "Patient" => vec![
            (
                "family".into(),
                with(each(&|r| r.family.clone()), &["ZHAO", "QIAN", "SUN"]),
            ),
            (
                "family:contains".into(),
                vec!["SECRET".into(), "ALICE".into()],
            ),
            ("name".into(), each(&|r| r.given.clone())),
            (
                "birthdate".into(),
                with(
                    each(&|r| r.birth_date.clone()),
                    &["ge1980-01-01", "lt1980-01-01"],
                ),
            ),
            (
                "identifier".into(),
                with(each(&|r| format!("{RESIDENT_ID}|{}", r.resident_id)), &[]),
            ),
            (
                "identifier:not".into(),
                each(&|r| format!("{}|{}", r.mrn_system, r.mrn)),
            ),
            ("gender".into(), vec!["female".into(), "male".into()]),
            ("_id".into(), with(each(&|r| r.patient.clone()), &[])),
            (
                "_has:Observation:subject:code".into(),
                each(&|r| format!("{LOINC}|{}", r.observation_code)),
            ),
            (
                "_has:Condition:subject:code:text".into(),
                with(
                    each(&|r| r.condition_text.clone()),
                    &[w.bob_at_a_text.as_str()],
                ),
            ),
        ],
        _ => vec![
            (
                "subject".into(),
                each(&|r| format!("Patient/{}", r.patient)),
            ),
            ("_id".into(), each(&|r| r.medication.clone())),
            ("status".into(), vec!["active".into(), "stopped".into()]),
        ],
    }
}

fn sorts(resource_type: &str) -> Vec<Option<&'static str>> {
    let mut sorts: Vec<Option<&'static str>> = vec![None];
    sorts.extend(
        match resource_type {
            "Observation" => vec![
                "value-string",
                "-value-string",
                "date",
                "code",
                "-_lastUpdated",
            ],
            "Condition" => vec!["code", "-recorded-date"],
            "Patient" => vec!["family", "-birthdate", "given"],
            _ => vec!["-_lastUpdated"],
        }
        .into_iter()
        .map(Some),
    );
    sorts
}

/// The restricted callers: (label, token, what they may see).
fn callers(w: &World) -> Vec<(&'static str, String, Viewer)> {
    let org = |org, division, types| Viewer::Org {
        org,
        division,
        types,
    };
    vec![
        (
            "bob (patient/)",
            w.bob.token.clone(),
            Viewer::Resident(fixture::Who::Bob),
        ),
        (
            "alice (patient/)",
            w.alice.token.clone(),
            Viewer::Resident(fixture::Who::Alice),
        ),
        (
            "org-a",
            w.org_a_user.clone(),
            org(fixture::ORG_A, fixture::DIV_A, None),
        ),
        (
            "org-b",
            w.org_b_user.clone(),
            org(fixture::ORG_B, fixture::DIV_B, None),
        ),
        (
            "org-c (denied by carol)",
            w.org_c_user.clone(),
            org(fixture::ORG_C, fixture::DIV_C, None),
        ),
        (
            "org-b user/Observation.rs",
            w.no_role.clone(),
            org(fixture::ORG_B, fixture::DIV_B, Some(vec!["Observation"])),
        ),
    ]
}

/// Pages through a search; (status of the first page, Type/id of every match, first total).
async fn page_through(node: &Node, token: &str, first: &str) -> (u16, Vec<String>, Option<u64>) {
    let auth = Auth::Bearer(token.to_owned());
    let mut url = first.to_owned();
    let mut seen = Vec::new();
    let mut status = 0;
    let mut total = None;
    for page in 0..200 {
        let reply = node.send(&auth, &Request::get(url.clone())).await;
        if page == 0 {
            status = reply.status.as_u16();
            total = reply.total();
        }
        if !reply.status.is_success() {
            break;
        }
        for r in reply.entries() {
            seen.push(format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            ));
        }
        match reply.link("next") {
            Some(next) if !next.is_empty() => url = next,
            _ => break,
        }
    }
    (status, seen, total)
}

fn query_strategy(w: &World) -> impl Strategy<Value = (usize, Query)> {
    let caller_count = callers(w).len();
    let types = ["Observation", "Condition", "Patient", "MedicationRequest"];
    let per_type: Vec<(&'static str, Candidates)> =
        types.iter().map(|t| (*t, candidates(w, t))).collect();
    (0..caller_count, 0..per_type.len()).prop_flat_map(move |(caller, t)| {
        let (resource_type, params) = per_type[t].clone();
        let param = prop::sample::select(params).prop_flat_map(|(name, values)| {
            prop::sample::select(values).prop_map(move |v| (name.clone(), v))
        });
        (
            Just(caller),
            Just(resource_type),
            prop::collection::vec(param, 1..3),
            prop::sample::select(vec![None, Some(1u32), Some(2), Some(3), Some(10)]),
            prop::sample::select(sorts(resource_type)),
        )
            .prop_map(|(caller, resource_type, params, count, sort)| {
                (
                    caller,
                    Query {
                        resource_type,
                        params,
                        count,
                        sort,
                    },
                )
            })
    })
}

fn check_query(
    node: &Node,
    w: &World,
    runtime: &tokio::runtime::Runtime,
    caller: usize,
    query: &Query,
) -> Result<(), TestCaseError> {
    let (label, token, viewer) = callers(w).swap_remove(caller);
    let path = query.path(true);
    let (status, seen, total) = runtime.block_on(page_through(node, &token, &path));
    prop_assert!(status < 500, "{label} {path}: {status}");
    if status != 200 {
        return Ok(());
    }
    let (operator_status, operator_seen, _) =
        runtime.block_on(page_through(node, &w.operator, &path));
    prop_assert_eq!(operator_status, 200, "the operator's {}", path);
    let operator: BTreeSet<&String> = operator_seen.iter().collect();
    let visible: BTreeSet<String> = w
        .visible_records(&viewer)
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    for id in &seen {
        prop_assert!(
            operator.contains(id),
            "{label} {path}: {id} is not in the operator's results"
        );
        let label_of = w
            .records
            .iter()
            .find(|r| format!("{}/{}", r.resource_type, r.id) == *id)
            .map(|r| r.label.clone());
        prop_assert!(
            visible.contains(id),
            "{label} {path}: got {id} ({label_of:?}), which it may not see"
        );
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    prop_assert_eq!(
        unique.len(),
        seen.len(),
        "{} {}: a record on two pages",
        label,
        path
    );
    if let Some(total) = total {
        prop_assert_eq!(
            total,
            seen.len() as u64,
            "{} {}: total says {}, paging gave {}",
            label,
            path,
            total,
            seen.len()
        );
    }
    let count_path = query.path(false);
    let reply = runtime.block_on(node.send(
        &Auth::Bearer(token.clone()),
        &Request::get(count_path.clone()),
    ));
    prop_assert_eq!(reply.status.as_u16(), 200, "{} {}", label, count_path);
    if let Some(count) = reply.total() {
        prop_assert_eq!(
            count,
            seen.len() as u64,
            "{} {} counts {}, paging {} gave {}",
            label,
            count_path,
            count,
            path,
            seen.len()
        );
    }
    Ok(())
}

fn restricted_results_are_within_what_the_caller_may_see(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if backend == Backend::Postgres && !common::postgres_available() {
        return;
    }
    let (node, world) = runtime.block_on(async {
        let node = Node::start(backend).await;
        let world = World::build(&node).await;
        (node, world)
    });
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&query_strategy(&world), |(caller, query)| {
        check_query(&node, &world, &runtime, caller, &query)
    });
    runtime.block_on(node.stop());
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn sqlite_restricted_results_are_within_what_the_caller_may_see() {
    restricted_results_are_within_what_the_caller_may_see(Backend::Sqlite);
}

#[test]
fn postgres_restricted_results_are_within_what_the_caller_may_see() {
    restricted_results_are_within_what_the_caller_may_see(Backend::Postgres);
}
