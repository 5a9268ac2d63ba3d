//! The dispatcher over a store, without HTTP: a websocket subscriber (the broadcast the
//! server's websocket endpoint forwards) sees exactly the changes it should.

use std::sync::Arc;
use std::time::Duration;

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_store::{open_store, StoreConfig, WriteRequest};
use phip_subscriptions::{Subscriptions, SubscriptionsConfig};
use serde_json::{json, Value};
use tokio::sync::broadcast;

fn config(overlap: Duration) -> SubscriptionsConfig {
    SubscriptionsConfig {
        poll_interval: Duration::from_millis(50),
        overlap,
        owner_grace: Duration::from_millis(200),
        ..SubscriptionsConfig::default()
    }
}

fn ctx() -> RequestContext {
    RequestContext::new("http://test/fhir", Principal::unrestricted("test"))
}

fn observation(code: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})
}

/// Creates a Subscription as an unrestricted caller, records it as the owner, and returns
/// its id.
async fn subscribe(engine: &Arc<Engine>, subs: &Subscriptions, body: Value) -> String {
    let engine2 = engine.clone();
    let created =
        tokio::task::spawn_blocking(move || engine2.create(&ctx(), "Subscription", body, None))
            .await
            .unwrap()
            .unwrap();
    let id = created.body.as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    subs.record_owner(
        &id,
        created.version_id.unwrap(),
        &Principal::unrestricted("test"),
    )
    .unwrap();
    id
}

async fn wait_status(engine: &Arc<Engine>, id: &str, status: &str) -> Value {
    for _ in 0..300 {
        let engine = engine.clone();
        let id2 = id.to_owned();
        let current =
            tokio::task::spawn_blocking(move || engine.read(&ctx(), "Subscription", &id2))
                .await
                .unwrap()
                .unwrap()
                .body
                .unwrap();
        if current["status"] == status {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Subscription/{id} never became {status}");
}

async fn next_ping(pings: &mut broadcast::Receiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(30), pings.recv())
        .await
        .expect("a ping in time")
        .expect("open")
}

fn websocket_subscription(code: &str) -> Value {
    json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
           "criteria": format!("Observation?code={code}"), "channel": {"type": "websocket"}})
}

/// On PostgreSQL a transaction takes its timestamp at its first write but may commit much
/// later, after younger transactions were already dispatched: the overlap window still
/// catches it.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_commit_is_not_skipped() {
    let Some(cluster) = tokio::task::spawn_blocking(phip_testkit::PgCluster::shared)
        .await
        .unwrap()
    else {
        return;
    };
    let url = tokio::task::spawn_blocking(move || cluster.fresh_database())
        .await
        .unwrap();
    let store = tokio::task::spawn_blocking(move || {
        open_store(&StoreConfig::Postgres { url, pool_size: 4 })
    })
    .await
    .unwrap()
    .unwrap();
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let subs =
        Subscriptions::start(engine.clone(), dir.path(), config(Duration::from_secs(5))).unwrap();
    let id = subscribe(&engine, &subs, websocket_subscription("late")).await;
    wait_status(&engine, &id, "active").await;
    let mut pings = {
        let subs = subs.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || subs.bind_websocket(&id, &Principal::unrestricted("t")))
            .await
            .unwrap()
            .unwrap()
    };

    // The slow transaction writes first (older timestamp) and commits last.
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    let slow = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut tx = engine.store().begin_write().unwrap();
            tx.write(WriteRequest {
                resource_type: "Observation".into(),
                id: "slow-one".into(),
                resource: Some(observation("late")),
                expected_version: None,
            })
            .unwrap();
            written_tx.send(()).unwrap();
            commit_rx.recv().unwrap();
            tx.commit().unwrap();
        })
    };
    written_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Observation", observation("late"), None)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next_ping(&mut pings).await, format!("ping {id}"));
    // Let the dispatcher move its cursor well past the slow transaction's timestamp.
    tokio::time::sleep(Duration::from_millis(500)).await;
    commit_tx.send(()).unwrap();
    slow.await.unwrap();
    assert_eq!(next_ping(&mut pings).await, format!("ping {id}"));
    subs.shutdown().await;
}

/// Invalid Subscriptions report why; `off` stops delivery; websocket notifications wait for
/// a bound client instead of failing.
#[tokio::test(flavor = "multi_thread")]
async fn status_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let store = open_store(&StoreConfig::Sqlite { data_dir }).unwrap();
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let subs =
        Subscriptions::start(engine.clone(), dir.path(), config(Duration::from_secs(2))).unwrap();

    let bad = subscribe(
        &engine,
        &subs,
        json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
               "criteria": "Observation?code=x",
               "channel": {"type": "rest-hook", "endpoint": "file:///etc/passwd"}}),
    )
    .await;
    let errored = wait_status(&engine, &bad, "error").await;
    assert!(errored["error"].as_str().unwrap().contains("http or https"));

    // Nobody recorded as owner: never delivered, reported after the grace period.
    let engine2 = engine.clone();
    let orphan = tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Subscription", websocket_subscription("x"), None)
    })
    .await
    .unwrap()
    .unwrap();
    let orphan = orphan.body.unwrap()["id"].as_str().unwrap().to_owned();
    let errored = wait_status(&engine, &orphan, "error").await;
    assert!(errored["error"].as_str().unwrap().contains("not recorded"));

    let id = subscribe(&engine, &subs, websocket_subscription("ws")).await;
    wait_status(&engine, &id, "active").await;
    // Written before anyone is bound: it waits for the client.
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Observation", observation("ws"), None)
    })
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pings = {
        let subs = subs.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || subs.bind_websocket(&id, &Principal::unrestricted("t")))
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next_ping(&mut pings).await, format!("ping {id}"));
    let current = wait_status(&engine, &id, "active").await;
    assert!(current.get("error").is_none());

    // Switched off: later changes are not notified; after switching back on, only changes
    // from then on are.
    let mut off = current.clone();
    off["status"] = json!("off");
    let engine2 = engine.clone();
    let id2 = id.clone();
    let written = tokio::task::spawn_blocking(move || {
        engine2.update(&ctx(), "Subscription", &id2, off, None)
    })
    .await
    .unwrap()
    .unwrap();
    subs.record_owner(
        &id,
        written.version_id.unwrap(),
        &Principal::unrestricted("test"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Observation", observation("ws"), None)
    })
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        pings.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    subs.shutdown().await;
}
