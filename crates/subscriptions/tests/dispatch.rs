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

/// A rest-hook receiver on loopback that counts the connections it accepts and answers each
/// request with 200.
async fn counting_receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, accepted)
}

fn rest_hook_subscription(endpoint: &str, code: &str) -> Value {
    json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
           "criteria": format!("Observation?code={code}"),
           "channel": {"type": "rest-hook", "endpoint": endpoint,
                       "payload": "application/fhir+json", "header": ["X-Injected: yes"]}})
}

/// A dispatcher that reports an error after the first failed attempt.
fn impatient(allowed: &[&str]) -> SubscriptionsConfig {
    SubscriptionsConfig {
        failures_before_error: 1,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        http_timeout: Duration::from_secs(2),
        allow_private_endpoints: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        ..config(Duration::from_secs(2))
    }
}

/// `Subscription.error` with the endpoint taken out, so that texts can be compared.
fn error_text(subscription: &Value, endpoint: &str) -> String {
    subscription["error"]
        .as_str()
        .unwrap_or_default()
        .replace(endpoint, "ENDPOINT")
}

/// Subscriptions stored without the write-time check (as a transaction, a patch or an older
/// server could store them): every spelling of loopback, and a name that resolves to it, is
/// refused when connecting, so the receiver never sees a connection, and the subscriber is
/// told nothing that tells a refused address from a closed port.
#[tokio::test(flavor = "multi_thread")]
async fn rest_hooks_never_reach_forbidden_addresses() {
    let (port, accepted) = counting_receiver().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&StoreConfig::Sqlite {
        data_dir: dir.path().join("db"),
    })
    .unwrap();
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let subs = Subscriptions::start(engine.clone(), dir.path(), impatient(&[])).unwrap();
    let mut endpoints: Vec<String> = [
        "localhost",
        "LocalHost.",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect();
    // A closed port, refused the same way: whether something listens makes no difference.
    endpoints.push(format!("http://127.0.0.1:{closed_port}/hook"));
    let mut ids = Vec::new();
    for endpoint in &endpoints {
        let id = subscribe(&engine, &subs, rest_hook_subscription(endpoint, "ssrf")).await;
        wait_status(&engine, &id, "active").await;
        ids.push(id);
    }
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Observation", observation("ssrf"), None)
    })
    .await
    .unwrap()
    .unwrap();
    let mut texts = std::collections::BTreeSet::new();
    for (id, endpoint) in ids.iter().zip(&endpoints) {
        let errored = wait_status(&engine, id, "error").await;
        texts.insert(error_text(&errored, endpoint.trim_end_matches('/')));
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a forbidden endpoint was connected to"
    );
    assert_eq!(texts.len(), 1, "the errors differ: {texts:?}");
    let text = texts.into_iter().next().unwrap();
    assert!(text.contains("ENDPOINT could not be reached"), "{text}");
    for detail in [
        "refused",
        "timed out",
        "route",
        "loopback",
        "not allowed",
        "dns",
    ] {
        assert!(!text.to_lowercase().contains(detail), "{text}");
    }
    subs.shutdown().await;

    // The operator allows the loopback address: the same name now reaches the receiver, and
    // the closed port (now really tried) fails in the very same words.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&StoreConfig::Sqlite {
        data_dir: dir.path().join("db"),
    })
    .unwrap();
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let subs = Subscriptions::start(engine.clone(), dir.path(), impatient(&["127.0.0.1"])).unwrap();
    let reachable = format!("http://localhost:{port}/hook");
    let closed = format!("http://127.0.0.1:{closed_port}/hook");
    let delivered = subscribe(
        &engine,
        &subs,
        rest_hook_subscription(&reachable, "allowed"),
    )
    .await;
    let refused = subscribe(&engine, &subs, rest_hook_subscription(&closed, "allowed")).await;
    wait_status(&engine, &delivered, "active").await;
    wait_status(&engine, &refused, "active").await;
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.create(&ctx(), "Observation", observation("allowed"), None)
    })
    .await
    .unwrap()
    .unwrap();
    let errored = wait_status(&engine, &refused, "error").await;
    assert_eq!(error_text(&errored, &closed), text);
    for _ in 0..300 {
        if accepted.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    subs.shutdown().await;
}
