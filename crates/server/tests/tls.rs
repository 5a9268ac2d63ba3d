//! HTTPS with rustls, and mutual TLS for node authentication.

use std::path::Path;
use std::sync::Arc;

use phip_engine::{Engine, EngineConfig};
use phip_server::auth::AuthMode;
use phip_server::tls::{serve_tls, server_config, TlsSettings};
use phip_server::{AppState, ServerConfig};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let client = CertificateParams::new(vec!["node.province-11.phip".to_owned()])
        .expect("params")
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client cert");
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("certs")
}

fn pem_key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .expect("key")
        .expect("a key")
}

async fn start(dir: &Path, settings: TlsSettings) -> (u16, tokio::sync::oneshot::Sender<()>) {
    start_with(dir, settings, phip_server::limits::Limits::default()).await
}

async fn start_with(
    dir: &Path,
    settings: TlsSettings,
    limits: phip_server::limits::Limits,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let store = phip_store::open_store(&phip_store::StoreConfig::Sqlite {
        data_dir: dir.to_path_buf(),
    })
    .expect("store");
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let state = AppState::new(
        engine,
        ServerConfig {
            auth: AuthMode::Disabled,
            public_base_url: None,
            max_body_bytes: 0,
            node_name: "tls-test".into(),
        },
        None,
    )
    .with_limits(limits);
    let config = server_config(&settings).expect("tls config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_tls(listener, state, config, async {
        let _ = stopped.await;
    }));
    (port, stop)
}

/// A TLS connection to the server, handshake done; `None` when it fails.
async fn connect(
    port: u16,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(ca_pem) {
        roots.add(cert).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(pem_certs(cert), pem_key(key))
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    connector
        .connect(ServerName::try_from("localhost").ok()?, tcp)
        .await
        .ok()
}

/// GET /health over TLS; `None` when the handshake or request fails.
async fn health(port: u16, ca_pem: &str, client: Option<(&str, &str)>) -> Option<String> {
    let mut tls = connect(port, ca_pem, client).await?;
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_and_mutual_tls() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let cert = write("server.pem", &pki.server_cert);
    let key = write("server.key", &pki.server_key);
    let ca = write("ca.pem", &pki.ca_pem);

    let data = tempfile::tempdir().expect("tempdir");
    let (port, _stop) = start(
        data.path(),
        TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        },
    )
    .await;
    let reply = health(port, &pki.ca_pem, None).await.expect("https works");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let data = tempfile::tempdir().expect("tempdir");
    let (port, _stop) = start(
        data.path(),
        TlsSettings {
            cert,
            key,
            client_ca: Some(ca),
        },
    )
    .await;
    assert!(
        health(port, &pki.ca_pem, None).await.is_none(),
        "a client without a certificate is refused"
    );
    let reply = health(port, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("mutual TLS works");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Bad files give clear errors rather than a server that cannot handshake.
    let missing = server_config(&TlsSettings {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("nope.key"),
        client_ca: None,
    });
    assert!(missing.unwrap_err().contains("nope.pem"));
}

/// Over TLS as over plain HTTP, a connection whose request head is incomplete at the header
/// deadline — or that sends nothing after the handshake — is closed without an answer.
#[tokio::test(flavor = "multi_thread")]
async fn incomplete_request_heads_are_closed_over_tls() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let settings = TlsSettings {
        cert: write("server.pem", &pki.server_cert),
        key: write("server.key", &pki.server_key),
        client_ca: None,
    };
    let data = tempfile::tempdir().expect("tempdir");
    let (port, _stop) = start_with(
        data.path(),
        settings,
        phip_server::limits::Limits {
            header_read_timeout: Some(std::time::Duration::from_secs(1)),
            ..phip_server::limits::Limits::default()
        },
    )
    .await;
    for head in [
        &b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: a"[..],
        b"",
    ] {
        let mut tls = connect(port, &pki.ca_pem, None).await.expect("handshake");
        tls.write_all(head).await.expect("write");
        let mut response = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tls.read_to_end(&mut response),
        )
        .await;
        assert!(closed.is_ok(), "still open after 30 s");
        let text = String::from_utf8_lossy(&response);
        assert!(!text.contains("200 OK"), "{text}");
    }
    let reply = health(port, &pki.ca_pem, None).await.expect("https works");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
