//! A federated lookup asks only nodes of its trust file: the holders the record locator names
//! come from index entries (data), and a lookup carries a service token naming the clinician.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_federation::{Federation, Level, NodeConfig, Peer, Trust};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP endpoint on loopback answering every request with `body` (200), counting the
/// connections it accepts; returns its base URL.
async fn endpoint(body: Value) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let body = body.to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{address}/fhir"), accepted)
}

fn holder(node: &str, endpoint: &str) -> Value {
    json!({"name": "holder", "part": [
        {"name": "node", "valueString": node},
        {"name": "endpoint", "valueUrl": endpoint},
        {"name": "division", "valueString": "440000"},
    ]})
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_ask_only_trusted_nodes() {
    let empty = json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
    let (trusted, trusted_calls) = endpoint(empty.clone()).await;
    let (stranger, stranger_calls) = endpoint(empty).await;
    let (locator, _) = endpoint(json!({"resourceType": "Parameters", "parameter": [
        holder("gd", &trusted),
        holder("internal", &stranger),
    ]}))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let ring = phip_security::keys::KeyRing::open(dir.path()).unwrap();
    let mut config = NodeConfig::new("bj", Level::Provincial, "110000", "http://bj.example/fhir");
    config.parent = Some(locator);
    let trust = Trust::new(
        &config.base_url,
        vec![Peer {
            node_id: "gd".into(),
            base_url: trusted.clone(),
            jwks: ring.jwks(),
        }],
    );
    let federation = Federation::new(config, trust, &ring, None).unwrap();
    let store =
        phip_store::open_store(&phip_store::StoreConfig::new(dir.path().join("db"), None)).unwrap();
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let ctx = RequestContext::new("http://bj.example/fhir", Principal::unrestricted("dr-bj"));
    let answer = federation
        .federated_everything(
            engine,
            ctx,
            format!("{}|110101198503070021", phip_federation::RESIDENT_ID_SYSTEM),
        )
        .await
        .unwrap();
    let body = answer.body.unwrap();
    assert!(
        trusted_calls.load(Ordering::SeqCst) > 0,
        "the trusted node is asked"
    );
    assert_eq!(
        stranger_calls.load(Ordering::SeqCst),
        0,
        "a node outside the trust file was called"
    );
    let text = body.to_string();
    assert!(text.contains("not in this node's trust file"), "{text}");
}
