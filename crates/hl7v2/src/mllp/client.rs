//! A small MLLP client: send a message, wait for the acknowledgement.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::{Decoder, Encoder};

use super::{MllpCodec, MllpError};

/// A connection to an MLLP server over which messages are sent one at a time.
#[derive(Debug)]
pub struct MllpClient {
    stream: TcpStream,
    codec: MllpCodec,
    buf: BytesMut,
    timeout: Duration,
}

impl MllpClient {
    /// Connects to `addr`; replies may be up to 16 MiB and must come within 30 s.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, MllpError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            codec: MllpCodec::new(16 * 1024 * 1024),
            buf: BytesMut::with_capacity(4096),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sets how long [`MllpClient::send`] waits for a reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Frames and sends `message`, then returns the next reply frame's bytes.
    pub async fn send(&mut self, message: &[u8]) -> Result<Bytes, MllpError> {
        let mut out = BytesMut::new();
        self.codec.encode(message, &mut out)?;
        self.stream.write_all(&out).await?;
        self.receive().await
    }

    /// Waits for the next reply frame.
    pub async fn receive(&mut self) -> Result<Bytes, MllpError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf)? {
                    return Ok(frame.freeze());
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(MllpError::Closed);
                }
            }
        })
        .await
        .map_err(|_| MllpError::Timeout(timeout))?
    }

    /// Writes raw bytes, unframed: for tests of how a server copes with odd peers.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), MllpError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }
}

/// Sends one message on a new connection and returns the reply frame.
pub async fn send(addr: impl ToSocketAddrs, message: &[u8]) -> Result<Bytes, MllpError> {
    MllpClient::connect(addr).await?.send(message).await
}
