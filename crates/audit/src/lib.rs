//! The audit trail of phip: every request becomes an IHE BALP-shaped FHIR `AuditEvent`,
//! appended to a tamper-evident log that no API can alter.
//!
//! - [`event`]: [`AuditRecord`] — the typed record of one request — and its rendering as an R4
//!   `AuditEvent`.
//! - [`log`]: [`AuditLog`] — `audit.db` in the data directory: an append-only SQLite table whose
//!   records form an SM3 hash chain, with SM2-signed checkpoints; group-committed appends.
//! - [`verify`]: [`AuditLog::verify`] recomputes the chain from genesis and names the first
//!   broken link (altered, deleted, reordered records, a cut tail, forged or missing
//!   checkpoints), and [`AuditLog::verify_with`] also checks it against checkpoints kept
//!   outside the data directory.
//! - [`anchor`]: [`AnchorLine`] — a checkpoint as kept outside (the anchor file, the line
//!   `phip audit head` prints), which detects a wiped, cut or wholesale replaced log.
//! - [`query`]: [`AuditLog::search`] and [`AuditLog::read`] serve `AuditEvent?patient=…` and
//!   `AuditEvent/{id}` from the log.
//!
//! ```
//! use phip_audit::{Agent, AuditLog, AuditQuery, AuditRecord, Interaction, Outcome};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let ring = phip_security::keys::KeyRing::open(dir.path())?;
//! let log = AuditLog::open(dir.path(), Some(&ring))?;
//! let seq = log.append_one(
//!     AuditRecord::new(Interaction::Read, Outcome::Success)
//!         .agent(Agent { sub: Some("dr-li".into()), network_address: Some("10.0.0.7".into()),
//!                        ..Agent::default() })
//!         .patient("Patient/123")
//!         .resource("Observation/9"),
//! )?;
//! let (events, _next) = log.search(&AuditQuery { patient: Some("Patient/123".into()),
//!                                                ..AuditQuery::default() })?;
//! assert_eq!(events[0]["id"], seq.to_string());
//! assert!(log.verify()?.is_intact());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod anchor;
pub mod event;
pub mod log;
pub mod query;
pub mod reserve;
pub mod verify;

pub use anchor::{read_anchor, AnchorFile, AnchorLine};
pub use event::{Action, Agent, AuditRecord, Coding, EventType, Interaction, Outcome, Source};
pub use log::{AuditLog, AuditOptions, Checkpoint, CheckpointKeys};
pub use query::AuditQuery;
pub use verify::{BreakReason, Broken, VerifyOptions, VerifyReport};

use std::path::PathBuf;

/// Errors from the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed (disk full, locked beyond the busy timeout, not an audit database…).
    #[error("audit database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Read-only mode was asked for but there is no `audit.db`.
    #[error("{0}: no audit log here")]
    NotFound(PathBuf),
    /// The log was opened read-only.
    #[error("the audit log is open read-only")]
    ReadOnly,
    /// The key ring has no active SM2 key to sign checkpoints.
    #[error("the key ring has no active SM2SM3 key for audit checkpoints")]
    NoSigningKey,
    /// A stored record cannot be read back (run `phip audit verify`).
    #[error("audit log corrupt: {0}")]
    Corrupt(String),
    /// The anchor file is unreadable, or the log no longer holds the checkpoint it records
    /// (the log was cut short, rewritten or replaced).
    #[error("audit anchor: {0}")]
    Anchor(String),
    /// A paging cursor that this log did not issue.
    #[error("invalid audit paging cursor {0:?}")]
    InvalidCursor(String),
    /// The group transaction this append was part of failed (another caller's append carried
    /// the original error); nothing of the group was written.
    #[error("audit append failed: {0}")]
    GroupCommit(String),
}
