//! Accepting connections, plain or TLS, and serving each with hyper under deadlines that run
//! before any request is processed.
//!
//! A client that opens a connection and then sends its request head slowly (or not at all)
//! must not hold anything the server needs for others. Each connection has a watchdog: one
//! that has not delivered a complete first request within
//! [`crate::limits::Limits::header_read_timeout`] is closed (hyper reads the first bytes, to
//! tell HTTP/1 from HTTP/2, without any deadline of its own). Later heads on a keep-alive
//! connection are read with hyper's `header_read_timeout` set to
//! [`crate::limits::Limits::keep_alive_timeout`], counted from the end of the previous
//! response — the idle time of a pooled connection, kept longer than the first head's deadline
//! so that clients reusing pooled connections do not race the server's close. Bodies are read
//! under their own deadline by [`crate::limits::guard`], still before a request takes an
//! in-flight permit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::AppState;

/// Longest TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait, after shutdown was asked for, for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the API on `listener` (over TLS when `tls` is given) until `shutdown` completes,
/// then lets in-flight connections finish (up to 30 seconds).
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = state.limiter.limits.header_read_timeout;
    let keep_alive = state.limiter.limits.keep_alive_timeout;
    let app = crate::router(state);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    serve_connection(stream, peer, app, header_timeout, keep_alive, watcher).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    serve_connection(stream, peer, app, header_timeout, keep_alive, watcher).await
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 30 s; closing them");
    }
    Ok(())
}

/// What to do when accepting fails: a failed connection is the client's problem; anything
/// else (e.g. out of file descriptors) is logged and retried after a pause, so the loop does
/// not spin while nothing can be accepted.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection: HTTP/1.1 or HTTP/2 (with upgrades, for websockets), the peer
/// address in each request's extensions (the sign-in limits are per address), request heads
/// under `header_timeout`.
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    app: Router,
    header_timeout: Option<Duration>,
    keep_alive: Option<Duration>,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = started.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            let mut request = request.map(axum::body::Body::new);
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            app.clone().oneshot(request)
        })
    };
    let mut builder = Builder::new(TokioExecutor::new());
    // The CONNECT protocol carries websockets over HTTP/2 (RFC 8441).
    builder.http2().enable_connect_protocol();
    // hyper's head timer runs from the end of each response (or the connection's start) to
    // the next complete head, so it is the keep-alive idle time; the first head's own, shorter
    // deadline is the watchdog's below.
    match keep_alive {
        Some(timeout) => {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
        }
        None => {
            builder.http1().header_read_timeout(None);
        }
    }
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let connection = watcher.watch(connection.into_owned());
    let mut connection = std::pin::pin!(connection);
    if let Some(timeout) = header_timeout {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(timeout) => {}
        }
        if !started.load(Ordering::Relaxed) {
            // Dropping the connection closes it.
            tracing::debug!(%peer, "no complete request head within the deadline; connection closed");
            return;
        }
    }
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
