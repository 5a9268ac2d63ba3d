//! Bulk export end to end over a SQLite store loaded with the Synthea fixture: exact contents
//! per type, `_since`, `_type`/`_typeFilter`, Patient and Group levels, file splitting,
//! access, cancellation and resumption after an interruption.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use phip_bulk::{
    job, prepare, run_job, ExportConfig, ExportLevel, ExportRequest, ExportStatus, Exporter,
    JobControl, JobState, JobStatus, Proceed, RunOutcome,
};
use phip_engine::access::patients_of;
use phip_engine::{Engine, Principal, RequestContext};
use phip_security::scope::ScopeSet;
use serde_json::{json, Value};
use support::*;

/// A small configuration so that the fixture spans many pages, checkpoints and files.
fn small() -> ExportConfig {
    ExportConfig {
        max_concurrent_jobs: 2,
        max_page_resources: 50,
        page_bytes: 64 << 10,
        checkpoint_bytes: 0,
        max_file_bytes: 256 << 10,
        ..ExportConfig::default()
    }
}

fn request(level: ExportLevel, params: &[(&str, &str)]) -> ExportRequest {
    ExportRequest::parse(level, &pairs(params), true).expect("request")
}

/// Runs an export through the service and returns its final state and contents.
fn export(
    loaded: &Loaded,
    config: ExportConfig,
    ctx: &RequestContext,
    request: ExportRequest,
) -> (JobState, BTreeMap<String, Vec<Value>>) {
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config).expect("start");
    let id = exporter
        .kick_off(ctx, request, "http://phip.test/fhir/$export")
        .expect("kick-off");
    let state = wait_completed(&exporter, &ctx.principal, &id);
    let contents = read_export(&exporter.root().join(&id), &state);
    (state, contents)
}

/// Every id a search finds, following `next` links.
fn search_ids(engine: &Engine, resource_type: &str, params: &[(&str, &str)]) -> BTreeSet<String> {
    let ctx = operator();
    let mut params = pairs(params);
    params.push(("_count".into(), "500".into()));
    let mut ids = BTreeSet::new();
    loop {
        let body = engine
            .search(&ctx, Some(resource_type), &params)
            .expect("search")
            .body
            .expect("bundle");
        for entry in body["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] == "match" {
                ids.insert(entry["resource"]["id"].as_str().expect("id").to_owned());
            }
        }
        let next = body["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        let Some(next) = next else { break };
        let query = next.split_once('?').expect("query").1;
        params = phip_engine::parse_query_string(query);
    }
    ids
}

#[test]
fn system_export_returns_exactly_the_stored_resources() {
    let loaded = loaded();
    let (state, contents) = export(
        &loaded,
        small(),
        &operator(),
        request(ExportLevel::System, &[]),
    );
    assert_eq!(exported_ids(&contents), ids_by_type(&loaded.resources));
    assert_eq!(state.exported() as usize, loaded.resources.len());
    // Lines are the stored resources (meta set by the store), not summaries.
    let patient = &contents["Patient"][0];
    assert!(patient["meta"]["versionId"].is_string());
    assert!(patient["name"].is_array());
    // The small file limit split the larger types, and no file exceeds it.
    let parts: Vec<_> = state.types.iter().flat_map(|t| &t.parts).collect();
    assert!(parts.len() > 13, "{} files", parts.len());
    assert!(parts.iter().all(|p| p.bytes <= 256 << 10));
    let manifest = phip_bulk::manifest(&state, "http://phip.test/fhir");
    let listed: u64 = manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|o| o["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(listed as usize, loaded.resources.len());
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["transactionTime"], state.transaction_time_text());
}

#[test]
fn since_returns_only_what_changed_and_later_writes_are_excluded() {
    let loaded = loaded();
    std::thread::sleep(Duration::from_millis(20));
    let since = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(20));
    let ctx = operator();
    let mut changed = BTreeSet::new();
    for resource in loaded
        .resources
        .iter()
        .filter(|r| r["resourceType"] == "Condition")
        .take(3)
    {
        let id = resource["id"].as_str().expect("id");
        let mut updated = resource.clone();
        updated["onsetDateTime"] = json!("2001-01-01");
        loaded
            .engine
            .update(&ctx, "Condition", id, updated, None)
            .expect("update");
        changed.insert(id.to_owned());
    }
    let since_text = since.to_rfc3339();
    let mut state = prepare(
        &loaded.engine,
        &ctx,
        request(ExportLevel::System, &[("_since", &since_text)]),
        "http://phip.test/fhir/$export",
    )
    .expect("prepare");
    // Written after the transaction time: not part of this export.
    std::thread::sleep(Duration::from_millis(20));
    loaded
        .engine
        .create(
            &ctx,
            "Condition",
            json!({"resourceType": "Condition", "subject": {"reference": "Patient/x"}}),
            None,
        )
        .expect("create");
    let root = loaded.dir.path().join("export");
    let dir = job::create(&root, &state).expect("job dir");
    let outcome = run_job(
        &loaded.engine,
        &dir,
        &mut state,
        &small(),
        &phip_bulk::RunToEnd,
    )
    .expect("run");
    assert_eq!(outcome, RunOutcome::Completed);
    let contents = read_export(&dir, &state);
    let ids = exported_ids(&contents);
    assert_eq!(ids.keys().collect::<Vec<_>>(), vec!["Condition"]);
    assert_eq!(ids["Condition"], changed);
    assert_eq!(job::load(&dir).expect("state").status, JobStatus::Completed);
}

#[test]
fn type_and_type_filters_select_like_searches() {
    let loaded = loaded();
    let (_, contents) = export(
        &loaded,
        small(),
        &operator(),
        request(
            ExportLevel::System,
            &[
                ("_type", "Patient,Condition,Encounter"),
                (
                    "_typeFilter",
                    "Condition?clinical-status=active,Condition?category=encounter-diagnosis",
                ),
                ("_typeFilter", "Patient?gender=female"),
            ],
        ),
    );
    let ids = exported_ids(&contents);
    let mut conditions = search_ids(
        &loaded.engine,
        "Condition",
        &[("clinical-status", "active")],
    );
    let diagnoses = search_ids(
        &loaded.engine,
        "Condition",
        &[("category", "encounter-diagnosis")],
    );
    // The filters overlap; each match is written once.
    assert!(conditions.intersection(&diagnoses).next().is_some());
    conditions.extend(diagnoses);
    assert_eq!(ids["Condition"], conditions);
    assert_eq!(
        ids["Patient"],
        search_ids(&loaded.engine, "Patient", &[("gender", "female")])
    );
    assert_eq!(
        ids["Encounter"],
        ids_by_type(&loaded.resources)["Encounter"]
    );
    assert_eq!(ids.len(), 3);
}

#[test]
fn elements_subset_the_lines() {
    let loaded = loaded();
    let (_, contents) = export(
        &loaded,
        small(),
        &operator(),
        request(
            ExportLevel::Patient,
            &[
                ("_type", "Patient,Condition"),
                ("_elements", "Patient.gender"),
            ],
        ),
    );
    let patient = &contents["Patient"][0];
    assert!(patient["gender"].is_string());
    assert!(patient.get("name").is_none());
    // The compartment check ran on the whole resource, before subsetting.
    assert_eq!(
        contents["Condition"].len(),
        ids_by_type(&loaded.resources)["Condition"].len()
    );
    assert!(contents["Condition"][0].get("code").is_some());
}

#[test]
fn patient_and_group_levels_follow_the_compartments() {
    let loaded = loaded();
    let in_compartment: Vec<&Value> = loaded
        .resources
        .iter()
        .filter(|r| !patients_of(r).is_empty())
        .collect();
    let (_, contents) = export(
        &loaded,
        small(),
        &operator(),
        request(ExportLevel::Patient, &[]),
    );
    let ids = exported_ids(&contents);
    assert_eq!(ids, ids_by_type(in_compartment.iter().copied()));
    assert!(!ids.contains_key("Organization"));
    assert!(!ids.contains_key("Practitioner"));

    let patients: Vec<String> = ids["Patient"].iter().take(2).cloned().collect();
    let ctx = operator();
    loaded
        .engine
        .update(
            &ctx,
            "Group",
            "cohort",
            json!({
                "resourceType": "Group", "id": "cohort", "type": "person", "actual": true,
                "member": [
                    {"entity": {"reference": format!("Patient/{}", patients[0])}},
                    {"entity": {"reference": format!("Patient/{}", patients[1])}},
                    {"entity": {"reference": "Patient/not-a-member"}, "inactive": true}
                ]
            }),
            None,
        )
        .expect("group");
    let (state, contents) = export(
        &loaded,
        small(),
        &ctx,
        request(ExportLevel::Group("cohort".into()), &[]),
    );
    assert_eq!(state.group_members.as_deref(), Some(patients.as_slice()));
    let members: BTreeSet<String> = patients.iter().cloned().collect();
    let expected: Vec<&Value> = in_compartment
        .iter()
        .copied()
        .filter(|r| patients_of(r).iter().any(|p| members.contains(p)))
        .collect();
    let mut expected = ids_by_type(expected.iter().copied());
    // The Group itself is in its members' compartments (Group.member).
    expected.insert("Group".into(), BTreeSet::from(["cohort".to_owned()]));
    assert_eq!(exported_ids(&contents), expected);
    assert_eq!(contents["Patient"].len(), 2);

    let missing = prepare(
        &loaded.engine,
        &ctx,
        request(ExportLevel::Group("nope".into()), &[]),
        "x",
    )
    .unwrap_err();
    assert_eq!(missing.status, 404);
}

fn principal(scope: &str, client: &str) -> Principal {
    Principal {
        scopes: Some(ScopeSet::parse(scope).expect("scope")),
        client_id: Some(client.into()),
        ..Principal::unrestricted(client)
    }
}

#[test]
fn access_needs_system_scopes_and_stays_with_the_client() {
    let loaded = loaded();
    let reader = ctx(principal("system/Patient.rs system/Condition.r", "reader"));
    // Without _type, the export narrows to what the scopes allow for read and search.
    let (state, contents) = export(&loaded, small(), &reader, request(ExportLevel::System, &[]));
    assert_eq!(
        state
            .types
            .iter()
            .map(|t| t.resource_type.as_str())
            .collect::<Vec<_>>(),
        vec!["Patient"]
    );
    assert_eq!(
        contents["Patient"].len(),
        ids_by_type(&loaded.resources)["Patient"].len()
    );
    let denied = prepare(
        &loaded.engine,
        &reader,
        request(ExportLevel::System, &[("_type", "Patient,Condition")]),
        "x",
    )
    .unwrap_err();
    assert_eq!(denied.status, 403);
    let user = ctx(principal("user/*.read patient/*.read", "app"));
    assert_eq!(
        prepare(
            &loaded.engine,
            &user,
            request(ExportLevel::System, &[]),
            "x"
        )
        .unwrap_err()
        .status,
        403
    );
    // A filter chaining into a type the caller may not search fails the kick-off.
    let chained = prepare(
        &loaded.engine,
        &reader,
        request(
            ExportLevel::System,
            &[
                ("_type", "Patient"),
                ("_typeFilter", "Patient?general-practitioner.name=x"),
            ],
        ),
        "x",
    )
    .unwrap_err();
    assert_eq!(chained.status, 403);

    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), small()).expect("start");
    let id = exporter
        .kick_off(&reader, request(ExportLevel::System, &[]), "x")
        .expect("kick-off");
    let other = principal("system/*.read", "other");
    assert_eq!(exporter.status(&other, &id).unwrap_err().status, 404);
    assert_eq!(exporter.cancel(&other, &id).unwrap_err().status, 404);
    let state = wait_completed(&exporter, &reader.principal, &id);
    let file = &state.types[0].parts[0].file;
    assert!(exporter.file(&reader.principal, &id, file).is_ok());
    assert_eq!(exporter.file(&other, &id, file).unwrap_err().status, 404);
    assert_eq!(
        exporter
            .file(&reader.principal, &id, "../job.json")
            .unwrap_err()
            .status,
        404
    );
}

/// A job belongs to the whole identity of its starter: a token sharing only the subject
/// name (a `patient/` token whose `sub` is `phip token`'s default `operator`, another client,
/// another organisation or division) gets 404; the starter with narrower scopes gets 403.
#[test]
fn a_job_belongs_to_the_whole_identity_of_its_starter() {
    let loaded = loaded();
    let starter = ctx(Principal {
        scopes: Some(ScopeSet::parse("system/*.read").expect("scope")),
        ..Principal::unrestricted("operator")
    });
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), small()).expect("start");
    let id = exporter
        .kick_off(
            &starter,
            request(ExportLevel::System, &[("_type", "Patient,Condition")]),
            "x",
        )
        .expect("kick-off");
    let state = wait_completed(&exporter, &starter.principal, &id);
    let file = state.types[0].parts[0].file.clone();
    let like_starter = |scope: &str| Principal {
        scopes: Some(ScopeSet::parse(scope).expect("scope")),
        ..Principal::unrestricted("operator")
    };
    let resident = Principal {
        patient: Some("some-patient".into()),
        ..like_starter("patient/*.rs")
    };
    let resident_with_system = Principal {
        patient: Some("some-patient".into()),
        ..like_starter("patient/*.rs system/*.read")
    };
    let client = Principal {
        client_id: Some("operator".into()),
        ..like_starter("system/*.read")
    };
    let organisation = Principal {
        organization: Some("clinic-1".into()),
        ..like_starter("system/*.read")
    };
    let division = Principal {
        division: Some("110105".into()),
        ..like_starter("system/*.read")
    };
    for (name, caller) in [
        ("patient/ token", &resident),
        ("patient-bound system token", &resident_with_system),
        ("other client", &client),
        ("other organisation", &organisation),
        ("other division", &division),
        ("unrestricted", &Principal::unrestricted("operator")),
    ] {
        assert_eq!(
            exporter.status(caller, &id).unwrap_err().status,
            404,
            "{name}: status"
        );
        assert_eq!(
            exporter.file(caller, &id, &file).unwrap_err().status,
            404,
            "{name}: file"
        );
        assert_eq!(
            exporter.cancel(caller, &id).unwrap_err().status,
            404,
            "{name}: cancel"
        );
    }
    // The starter's identity with scopes that would not allow this export: 403.
    let narrower = like_starter("system/Patient.rs");
    assert_eq!(exporter.status(&narrower, &id).unwrap_err().status, 403);
    assert_eq!(
        exporter.file(&narrower, &id, &file).unwrap_err().status,
        403
    );
    assert_eq!(exporter.cancel(&narrower, &id).unwrap_err().status, 403);
    let mut glass = starter.principal.clone();
    glass.break_glass = Some("emergency".into());
    assert_eq!(exporter.status(&glass, &id).unwrap_err().status, 403);
    // The starter itself still reads and cancels it.
    assert!(exporter.file(&starter.principal, &id, &file).is_ok());
    exporter.cancel(&starter.principal, &id).expect("cancel");
}

#[test]
fn cancel_removes_the_job_and_its_files() {
    let loaded = loaded();
    let ctx = operator();
    let config = ExportConfig {
        max_page_resources: 5,
        ..small()
    };
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config).expect("start");
    let running = exporter
        .kick_off(&ctx, request(ExportLevel::System, &[]), "x")
        .expect("kick-off");
    let finished = exporter
        .kick_off(
            &ctx,
            request(ExportLevel::System, &[("_type", "Patient")]),
            "x",
        )
        .expect("kick-off");
    wait_completed(&exporter, &ctx.principal, &finished);
    for id in [&running, &finished] {
        exporter.cancel(&ctx.principal, id).expect("cancel");
        assert_eq!(exporter.status(&ctx.principal, id).unwrap_err().status, 404);
        assert_eq!(exporter.cancel(&ctx.principal, id).unwrap_err().status, 404);
    }
    drop(exporter);
    let left: Vec<_> = std::fs::read_dir(loaded.dir.path().join("export"))
        .expect("dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Stops a run after a number of pages, as a crash or shutdown would.
struct StopAfter {
    pages: usize,
    seen: AtomicUsize,
}

impl JobControl for StopAfter {
    fn proceed(&self, _state: &JobState) -> Proceed {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.pages {
            Proceed::Stop
        } else {
            Proceed::Continue
        }
    }
}

#[test]
fn an_interrupted_job_resumes_without_duplicates_or_gaps() {
    let loaded = loaded();
    let ctx = operator();
    let config = ExportConfig {
        max_page_resources: 7,
        checkpoint_bytes: 1, // every page
        ..small()
    };
    let mut state = prepare(
        &loaded.engine,
        &ctx,
        request(ExportLevel::System, &[]),
        "http://phip.test/fhir/$export",
    )
    .expect("prepare");
    let root = loaded.dir.path().join("export");
    let dir = job::create(&root, &state).expect("job dir");
    let stop = StopAfter {
        pages: 40,
        seen: AtomicUsize::new(0),
    };
    let outcome = run_job(&loaded.engine, &dir, &mut state, &config, &stop).expect("run");
    assert_eq!(outcome, RunOutcome::Stopped);
    let checkpoint = job::load(&dir).expect("checkpoint");
    assert_eq!(checkpoint.status, JobStatus::Running);
    let exported = checkpoint.exported();
    assert!(exported > 0 && (exported as usize) < loaded.resources.len());
    // What a crash leaves: lines written after the checkpoint, one of them torn.
    let current = checkpoint
        .types
        .iter()
        .find(|t| !t.done && !t.parts.is_empty())
        .or_else(|| checkpoint.types.iter().rev().find(|t| !t.parts.is_empty()))
        .expect("a type with files");
    let last = current.parts.last().expect("part");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(&last.file))
        .expect("part");
    let duplicate = std::fs::read_to_string(dir.join(&last.file))
        .expect("read")
        .lines()
        .next()
        .expect("a line")
        .to_owned();
    writeln!(file, "{duplicate}").expect("append");
    write!(
        file,
        "{{\"resourceType\":\"{}\",\"id\":\"tor",
        current.resource_type
    )
    .expect("append");
    drop(file);

    // A new service over the same directory resumes the job from its checkpoint.
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config).expect("start");
    assert_eq!(exporter.job_ids(), vec![state.id.clone()]);
    let done = wait_completed(&exporter, &ctx.principal, &state.id);
    let contents = read_export(&dir, &done);
    assert_eq!(exported_ids(&contents), ids_by_type(&loaded.resources));
    assert_eq!(done.transaction_time, state.transaction_time);
}

#[test]
fn a_service_shut_down_mid_job_finishes_it_after_restart() {
    let loaded = loaded();
    let ctx = operator();
    let config = ExportConfig {
        max_page_resources: 3,
        ..small()
    };
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config.clone()).expect("start");
    let id = exporter
        .kick_off(&ctx, request(ExportLevel::System, &[]), "x")
        .expect("kick-off");
    // Let the worker get going, then stop the service as a server shutdown would.
    while job::load(&exporter.root().join(&id))
        .map(|s| s.exported() == 0)
        .unwrap_or(true)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    exporter.shutdown();
    let paused = job::load(&exporter.root().join(&id)).expect("state");
    drop(exporter);
    assert_eq!(
        paused.status,
        JobStatus::Running,
        "the job finished before the shutdown"
    );
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config).expect("start");
    match exporter.status(&ctx.principal, &id).expect("status") {
        ExportStatus::InProgress(text) => assert!(text.contains("resources"), "{text}"),
        ExportStatus::Completed(_) => {}
        ExportStatus::Failed(e) => panic!("{e}"),
    }
    let done = wait_completed(&exporter, &ctx.principal, &id);
    let contents = read_export(&exporter.root().join(&id), &done);
    assert_eq!(exported_ids(&contents), ids_by_type(&loaded.resources));
}

#[test]
fn expired_jobs_are_deleted_on_start() {
    let loaded = loaded();
    let ctx = operator();
    let config = ExportConfig {
        retention: Duration::from_millis(1),
        ..small()
    };
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config.clone()).expect("start");
    let id = exporter
        .kick_off(
            &ctx,
            request(ExportLevel::System, &[("_type", "Patient")]),
            "x",
        )
        .expect("kick-off");
    wait_completed(&exporter, &ctx.principal, &id);
    drop(exporter);
    std::thread::sleep(Duration::from_millis(5));
    let exporter =
        Exporter::start(loaded.engine.clone(), loaded.dir.path(), config).expect("start");
    assert!(exporter.job_ids().is_empty());
    assert!(!exporter.root().join(&id).exists());
}
