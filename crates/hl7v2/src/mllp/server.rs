//! The MLLP server: one task per connection, messages answered in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::{MllpCodec, MllpError};
use crate::ack::Ack;
use crate::error::Hl7Error;
use crate::message::Message;

/// Processes one parsed message and says how to acknowledge it.
///
/// Called on tokio's blocking pool, so it may do synchronous I/O (database writes). The
/// server sends the returned [`Ack`] only after `handle` returns: answer AA only once the
/// message's effects are durable. A panic is answered with AR 207 and the connection goes on.
pub trait MessageHandler: Send + Sync + 'static {
    /// Handles `message`, returning its acknowledgement.
    fn handle(&self, message: Message) -> Ack;
}

impl<F> MessageHandler for F
where
    F: Fn(Message) -> Ack + Send + Sync + 'static,
{
    fn handle(&self, message: Message) -> Ack {
        self(message)
    }
}

/// Limits of the MLLP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest message accepted; a longer frame closes the connection (default 16 MiB).
    pub max_message_bytes: usize,
    /// A connection with no complete message for this long is closed (default 5 minutes).
    pub idle_timeout: Duration,
    /// Writing an acknowledgement may take at most this long (default 30 s).
    pub write_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted (default 256).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// Serves MLLP on `listener` until `shutdown` completes.
///
/// On shutdown the server stops accepting, lets every connection finish the message it is
/// processing (and send its ACK), closes idle connections, and returns once all are done.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn MessageHandler>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connection tasks so the set does not grow with every connection.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, peer)) => {
                let handler = handler.clone();
                let config = config.clone();
                let token = token.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    tracing::debug!(%peer, "MLLP connection opened");
                    match connection(stream, handler, &config, token).await {
                        Ok(()) => tracing::debug!(%peer, "MLLP connection closed"),
                        Err(error) => tracing::warn!(%peer, %error, "MLLP connection closed"),
                    }
                });
            }
            Err(error) => {
                // Accept errors (e.g. too many open files) are transient; back off briefly.
                tracing::warn!(%error, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    token.cancel();
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    mut stream: TcpStream,
    handler: Arc<dyn MessageHandler>,
    config: &ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), MllpError> {
    stream.set_nodelay(true)?;
    let mut codec = MllpCodec::new(config.max_message_bytes);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::with_capacity(1024);
    loop {
        if let Some(frame) = codec.decode(&mut buf)? {
            let ack = answer(frame, &handler).await;
            out.clear();
            codec.encode(&ack.to_bytes()[..], &mut out)?;
            tokio::time::timeout(config.write_timeout, stream.write_all(&out))
                .await
                .map_err(|_| MllpError::Timeout(config.write_timeout))??;
            continue;
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(config.idle_timeout, stream.read_buf(&mut buf)) => read,
        };
        match read {
            Err(_) => {
                tracing::debug!("MLLP connection idle, closing");
                return Ok(());
            }
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error.into()),
        }
    }
}

/// Parses a frame and runs the handler, turning every failure into a NAK.
async fn answer(frame: BytesMut, handler: &Arc<dyn MessageHandler>) -> Ack {
    let frame = frame.freeze();
    let message = match Message::parse(&frame) {
        Ok(message) => message,
        Err(error) => {
            tracing::info!(%error, "rejecting malformed HL7 message");
            return Ack::for_unparsed(&frame, error);
        }
    };
    let handler = handler.clone();
    match tokio::task::spawn_blocking(move || handler.handle(message)).await {
        Ok(ack) => ack,
        Err(error) => {
            tracing::error!(%error, "HL7 message handler failed");
            Ack::for_unparsed(
                &frame,
                Hl7Error::internal("the receiver failed while processing the message"),
            )
        }
    }
}
