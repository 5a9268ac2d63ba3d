//! MLLP (Minimal Lower Layer Protocol) transport: framing, a tokio server and a client.
//!
//! A frame is `0x0B <message bytes> 0x1C 0x0D`. The server reads frames from each
//! connection in order, hands every message to a synchronous [`MessageHandler`] on tokio's
//! blocking pool (phip's engine and stores are synchronous), and writes the handler's
//! [`Ack`](crate::Ack) back before reading the next frame, so a sender sees the ACK only
//! once the handler has returned — after the data is durably stored, if the handler says AA
//! only then.

mod client;
mod codec;
mod server;

pub use self::client::{send, MllpClient};
pub use self::codec::{frame, MllpCodec, END_BLOCK, START_BLOCK};
pub use self::server::{serve, MessageHandler, ServerConfig};

/// Failures of the MLLP transport.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// The socket failed.
    #[error("MLLP I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame grew past the configured limit before its end block arrived.
    #[error("MLLP frame exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The peer did not answer in time.
    #[error("MLLP peer did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The peer closed the connection before a complete frame arrived.
    #[error("MLLP peer closed the connection")]
    Closed,
}
