//! HTTPS with rustls (ring provider), optionally requiring client certificates (mutual TLS)
//! so that platform nodes and hospital gateways authenticate at the transport too.

use std::future::Future;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig as RustlsConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::AppState;

/// Certificate files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates whose clients are accepted; when set, every client must present a
    /// certificate signed by one of them (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(file)).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key found", path.display()))
}

/// Builds the rustls configuration (HTTP/2 and HTTP/1.1 via ALPN).
pub fn server_config(settings: &TlsSettings) -> Result<Arc<RustlsConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = RustlsConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(read_certs(&settings.cert)?, read_key(&settings.key)?)
        .map_err(|e| format!("the certificate and key do not match: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the API over TLS on `listener` until `shutdown` completes, then lets in-flight
/// connections finish (up to 30 seconds). Handshakes have 10 seconds; request heads and
/// bodies are read under the deadlines of [`crate::limits::Limits`], as over plain HTTP.
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    config: Arc<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = state.listening_on(&listener, "https");
    crate::listen::serve(listener, state, Some(TlsAcceptor::from(config)), shutdown).await
}
