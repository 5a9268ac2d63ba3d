//! The append-only, tamper-evident audit log: `audit.db` in the data directory.
//!
//! ## Storage
//!
//! A SQLite file of its own (WAL, `synchronous=FULL`, so an append is on disk when it returns),
//! kept apart from the resource store so that no resource API can reach it:
//!
//! ```sql
//! audit_log(seq INTEGER PRIMARY KEY, recorded TEXT, patient TEXT NULL, agent TEXT,
//!           body TEXT, prev_hash TEXT, hash TEXT)
//! audit_patient(patient TEXT, seq INTEGER, PRIMARY KEY (patient, seq))   -- every patient
//! audit_org(organization TEXT, seq INTEGER, PRIMARY KEY (organization, seq))  -- requestor's org
//! audit_checkpoints(seq INTEGER PRIMARY KEY, hash TEXT, created TEXT, kid TEXT, signature TEXT,
//!                   every INTEGER NULL, seconds INTEGER NULL)
//! ```
//!
//! `patient` holds the first patient for people reading the table by hand; the per-patient
//! index is `audit_patient`, which lists every patient of every record (records about several
//! patients appear once per patient). `audit_org` indexes the requestor's organisation, so that
//! an organisation can be served exactly its own staff's actions. Triggers `RAISE(ABORT)` on
//! any `UPDATE` or `DELETE` of the four tables, so nothing that goes through SQLite's SQL
//! engine without first dropping the triggers can alter the trail. A direct edit of the file (or dropping the triggers) remains
//! possible; that is what [`AuditLog::verify`] detects.
//!
//! ## The chain
//!
//! Record `seq` (1, 2, 3, …) is stored as its `AuditEvent` JSON (`body`) with `id` = the decimal
//! `seq` and, as its first extension, [`PREV_HASH_EXTENSION`] = `prev_hash`. Then
//!
//! ```text
//! hash(seq) = lower-hex( SM3( ascii(prev_hash) || body ) )      prev_hash(1) = "0" × 64
//! prev_hash(seq) = hash(seq - 1)
//! ```
//!
//! where `body` is exactly the stored UTF-8 text — the canonical bytes are the stored bytes, so
//! anyone can recompute the chain with an SM3 tool and no JSON canonicalisation. Because the body
//! contains its own `id` and its predecessor's hash, moving, removing or reordering records
//! breaks the chain at the first affected `seq`.
//!
//! ## Checkpoints
//!
//! A checkpoint is a row `(seq, hash, created, kid, signature, every, seconds)` in
//! `audit_checkpoints`, where `signature` is a detached compact JWS (`SM2SM3`, the key ring's
//! active SM2 key) over the payload returned by [`checkpoint_payload_for`]:
//!
//! ```text
//! {"typ":"phip-audit-checkpoint","seq":N,"hash":"<hash(N)>","time":"<created>","every":E,"seconds":S}
//! ```
//!
//! (checkpoints written before the policy was signed have no `every`/`seconds` and sign the
//! payload without them, [`checkpoint_payload`]). `E` and `S` are the policy the checkpoint was
//! made under, and they bind the stretch of records after it: the log checkpoints
//!
//! - at every multiple of `checkpoint_every` records, and whenever `E` records have passed
//!   since the last checkpoint;
//! - at the first record recorded `S` seconds or more after the last checkpoint was made (or
//!   appended when that much wall-clock time has passed), and from a timer
//!   ([`AuditLog::checkpoint_if_due`]) so that a quiet log's head is pinned within `S`;
//! - on [`AuditLog::checkpoint`] (the server does it at shutdown).
//!
//! [`AuditLog::verify`] requires exactly this: a stretch of more than `E` records, or a record
//! recorded `S` or more after the checkpoint before it, without a checkpoint, means checkpoints
//! were deleted. A checkpoint pins the chain: rewriting records before it (even recomputing all
//! later hashes) or cutting the log short behind it is detected unless the attacker also holds
//! the signing key. Against an attacker who holds the whole data directory (key ring included),
//! each checkpoint is also appended to an external [anchor](crate::anchor) file.
//!
//! ## Concurrency
//!
//! One writer connection serialised by a mutex. Callers queue their records; whoever holds the
//! writer lock takes the whole queue and commits it in one transaction (group commit), so under
//! load many requests share one fsync. Queries and verification use separate read-only
//! connections and never wait for the writer.

use crate::anchor::{key_for, AnchorLine, AnchorWriter};
use crate::event::{requestor_organization, AuditRecord};
use crate::AuditError;
use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::Mutex;
use phip_security::jws::{self, Algorithm, Jwks, SigningKey};
use phip_security::keys::KeyRing;
use phip_security::sm::sm3_digest_parts;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// File name of the audit database inside the data directory.
pub const AUDIT_DB: &str = "audit.db";
/// `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Extension (first in `AuditEvent.extension`, `valueString`) carrying the previous record's
/// hash inside the stored body.
pub const PREV_HASH_EXTENSION: &str = "urn:phip:audit:prev-hash";
/// Extension added to AuditEvents returned by queries (not stored), carrying the record's hash.
pub const HASH_EXTENSION: &str = "urn:phip:audit:hash";
/// `typ` of checkpoint JWS headers and payloads.
pub const CHECKPOINT_TYP: &str = "phip-audit-checkpoint";
/// Default number of records between automatic checkpoints.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;
/// Default longest time, in seconds, between a record and the checkpoint that pins it.
pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 300;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    recorded TEXT NOT NULL,
    patient TEXT,
    agent TEXT,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_agent ON audit_log(agent, seq);
CREATE INDEX IF NOT EXISTS audit_log_recorded ON audit_log(recorded);
CREATE TABLE IF NOT EXISTS audit_patient (
    patient TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_org (
    organization TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (organization, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    created TEXT NOT NULL,
    kid TEXT,
    signature TEXT,
    every INTEGER,
    seconds INTEGER
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_patient_no_update BEFORE UPDATE ON audit_patient
    BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_patient_no_delete BEFORE DELETE ON audit_patient
    BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_org_no_update BEFORE UPDATE ON audit_org
    BEGIN SELECT RAISE(ABORT, 'audit_org is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_org_no_delete BEFORE DELETE ON audit_org
    BEGIN SELECT RAISE(ABORT, 'audit_org is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
"#;

/// Keys for checkpoints: the SM2 key that signs new ones (absent when only verifying) and the
/// public keys that verify existing ones.
#[derive(Debug, Clone)]
pub struct CheckpointKeys {
    signer: Option<SigningKey>,
    jwks: Jwks,
}

impl CheckpointKeys {
    /// The ring's active `SM2SM3` key signs; all its public keys (active and retired) verify.
    pub fn from_key_ring(ring: &KeyRing) -> Result<Self, AuditError> {
        let signer = ring
            .active(Algorithm::Sm2Sm3)
            .cloned()
            .ok_or(AuditError::NoSigningKey)?;
        Ok(CheckpointKeys {
            signer: Some(signer),
            jwks: ring.jwks(),
        })
    }

    /// Sign with `signer`; verify with `jwks` (which should include `signer`'s public key).
    pub fn new(signer: SigningKey, jwks: Jwks) -> Self {
        CheckpointKeys {
            signer: Some(signer),
            jwks,
        }
    }

    /// Verify only (e.g. `phip audit verify` given a published JWKS).
    pub fn verify_only(jwks: Jwks) -> Self {
        CheckpointKeys { signer: None, jwks }
    }

    /// The public keys checkpoints are verified against.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }
}

/// How to open an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Checkpoint keys. Without them checkpoints are stored unsigned (they still detect a cut
    /// tail, but can be forged) and [`AuditLog::verify`] cannot check signatures.
    pub keys: Option<CheckpointKeys>,
    /// Records between automatic checkpoints (a checkpoint at every multiple); 0 disables them.
    pub checkpoint_every: u64,
    /// Longest time in seconds between a record and the checkpoint that pins it (see the
    /// [module docs](self)); 0 disables time-based checkpoints.
    pub checkpoint_seconds: u64,
    /// The external anchor file: every checkpoint is appended to it as an
    /// [`AnchorLine`]. It should be on another file system than the data directory. On open,
    /// the log must still hold the checkpoint of the file's last line
    /// ([`AuditError::Anchor`] otherwise), and checkpoints the file misses are added.
    pub anchor: Option<PathBuf>,
    /// Open without a writer: appends fail with [`AuditError::ReadOnly`]. The file must exist.
    pub read_only: bool,
    /// Bytes held back in [`crate::reserve::RESERVE_FILE`] so that accesses can still be
    /// recorded when the disk fills up; 0 disables the reserve.
    pub reserve_bytes: u64,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            keys: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_seconds: DEFAULT_CHECKPOINT_SECONDS,
            anchor: None,
            read_only: false,
            reserve_bytes: crate::reserve::DEFAULT_RESERVE_BYTES,
        }
    }
}

/// A signed checkpoint as stored in `audit_checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last record covered.
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
    /// When the checkpoint was made (UTC, RFC 3339 with milliseconds).
    pub created: String,
    /// The signing key's id (`None` when unsigned).
    pub kid: Option<String>,
    /// Detached compact JWS over [`Checkpoint::payload`] (`None` when unsigned).
    pub signature: Option<String>,
    /// The policy it was made under: records between checkpoints (`None`: made before the
    /// policy was signed).
    pub every: Option<u64>,
    /// The policy it was made under: longest seconds between a record and its checkpoint.
    pub seconds: Option<u64>,
}

impl Checkpoint {
    /// The bytes its signature covers.
    pub fn payload(&self) -> Vec<u8> {
        checkpoint_payload_for(
            self.seq,
            &self.hash,
            &self.created,
            self.every,
            self.seconds,
        )
    }

    /// `created` in milliseconds since the epoch, if it is a valid RFC 3339 time.
    pub fn created_millis(&self) -> Option<i64> {
        parse_millis(&self.created)
    }
}

/// The bytes a checkpoint signature covers, for checkpoints made before the policy was signed.
pub fn checkpoint_payload(seq: u64, hash: &str, created: &str) -> Vec<u8> {
    // Built by hand so that the byte form is fixed by this format string, not by a serialiser.
    format!(r#"{{"typ":"{CHECKPOINT_TYP}","seq":{seq},"hash":"{hash}","time":"{created}"}}"#)
        .into_bytes()
}

/// The bytes a checkpoint signature covers: with its policy (`every`, `seconds`) when it has
/// one, otherwise the older form of [`checkpoint_payload`].
pub fn checkpoint_payload_for(
    seq: u64,
    hash: &str,
    created: &str,
    every: Option<u64>,
    seconds: Option<u64>,
) -> Vec<u8> {
    if every.is_none() && seconds.is_none() {
        return checkpoint_payload(seq, hash, created);
    }
    let (every, seconds) = (every.unwrap_or(0), seconds.unwrap_or(0));
    format!(
        r#"{{"typ":"{CHECKPOINT_TYP}","seq":{seq},"hash":"{hash}","time":"{created}","every":{every},"seconds":{seconds}}}"#
    )
    .into_bytes()
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub(crate) fn parse_millis(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `lower-hex(SM3(ascii(prev_hash) || body))`.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    hex(&sm3_digest_parts(&[prev_hash.as_bytes(), body.as_bytes()]))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

type JobResult = Result<Vec<u64>, AuditError>;

struct Job {
    records: Vec<AuditRecord>,
    slot: Arc<Mutex<Option<JobResult>>>,
}

struct Writer {
    conn: Connection,
    anchor: Option<AnchorWriter>,
}

/// When checkpoints are made: the writer's configured policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) every: u64,
    pub(crate) seconds: u64,
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    writer: Option<Mutex<Writer>>,
    queue: Mutex<Vec<Job>>,
    readers: Mutex<Vec<Connection>>,
    pub(crate) keys: Option<CheckpointKeys>,
    pub(crate) policy: Policy,
    reserve: crate::reserve::Reserve,
}

/// The audit log of one data directory. Cheap to clone (shared handle); safe to use from many
/// threads. See the [module docs](self) for the format.
#[derive(Clone)]
pub struct AuditLog {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("read_only", &self.inner.writer.is_none())
            .field("signed", &self.inner.keys.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Open (creating on first use) `data_dir/audit.db`, signing checkpoints with the ring's
    /// active SM2 key when a ring is given, checkpointing every 1000 records.
    pub fn open(data_dir: &Path, key_ring: Option<&KeyRing>) -> Result<Self, AuditError> {
        let keys = key_ring.map(CheckpointKeys::from_key_ring).transpose()?;
        Self::open_with(
            data_dir,
            AuditOptions {
                keys,
                ..AuditOptions::default()
            },
        )
    }

    /// Open `data_dir/audit.db` read-only (for `phip audit verify` while a server runs): queries
    /// and [`verify`](Self::verify) work, appends fail. Signatures are checked against the ring's
    /// public keys when a ring is given.
    pub fn open_read_only(data_dir: &Path, key_ring: Option<&KeyRing>) -> Result<Self, AuditError> {
        let keys = key_ring.map(|r| CheckpointKeys::verify_only(r.jwks()));
        Self::open_with(
            data_dir,
            AuditOptions {
                keys,
                read_only: true,
                ..AuditOptions::default()
            },
        )
    }

    /// Open with explicit options.
    pub fn open_with(data_dir: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let path = data_dir.join(AUDIT_DB);
        let writer = if options.read_only {
            if !path.exists() {
                return Err(AuditError::NotFound(path));
            }
            None
        } else {
            std::fs::create_dir_all(data_dir).map_err(|source| AuditError::Io {
                path: data_dir.to_path_buf(),
                source,
            })?;
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            let had_log = has_table(&conn, "audit_log")?;
            let had_org = has_table(&conn, "audit_org")?;
            conn.execute_batch(SCHEMA)?;
            migrate(&conn, had_log && !had_org)?;
            let anchor = match &options.anchor {
                Some(anchor_path) => {
                    let (writer, last) = AnchorWriter::open(anchor_path)?;
                    if let Some(last) = last {
                        check_anchored(&conn, &last, anchor_path)?;
                    }
                    Some(writer)
                }
                None => None,
            };
            Some(Mutex::new(Writer { conn, anchor }))
        };
        let reserve = crate::reserve::Reserve::new(
            data_dir,
            if options.read_only {
                0
            } else {
                options.reserve_bytes
            },
        );
        if let Err(error) = reserve.fill() {
            // Not fatal: the log works, it just cannot outlast a full disk.
            tracing::warn!(%error, "could not set aside the audit reserve");
        }
        let log = AuditLog {
            inner: Arc::new(Inner {
                path,
                writer,
                queue: Mutex::new(Vec::new()),
                readers: Mutex::new(Vec::new()),
                keys: options.keys,
                policy: Policy {
                    every: options.checkpoint_every,
                    seconds: options.checkpoint_seconds,
                },
                reserve,
            }),
        };
        // Fail now, not on the first query, if the file is not an audit log.
        log.with_reader(|c| {
            c.query_row("SELECT count(*) FROM audit_checkpoints", [], |_| Ok(()))?;
            Ok(())
        })?;
        // Checkpoints made while the anchor was unreachable (or before it was configured).
        if let Some(writer) = &log.inner.writer {
            writer.lock().publish(log.inner.keys.as_ref())?;
        }
        Ok(log)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Append `records` atomically (all or none), durable on return. Returns their `seq`s in
    /// order. Concurrent callers are grouped into one transaction.
    pub fn append(&self, records: Vec<AuditRecord>) -> Result<Vec<u64>, AuditError> {
        let writer = self.inner.writer.as_ref().ok_or(AuditError::ReadOnly)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let slot = Arc::new(Mutex::new(None));
        self.inner.queue.lock().push(Job {
            records,
            slot: slot.clone(),
        });
        let mut w = writer.lock();
        // A previous lock holder may have committed our job along with its own.
        if let Some(done) = slot.lock().take() {
            return done;
        }
        // Invariant: under the writer lock our job is either done (slot filled) or still
        // queued, because jobs are only taken from the queue, and completed, under this lock.
        let jobs = std::mem::take(&mut *self.inner.queue.lock());
        let mut committed = w.commit(&jobs, self.inner.policy, self.signer());
        if committed.as_ref().is_err_and(is_disk_full) && self.inner.reserve.release() {
            committed = w.commit(&jobs, self.inner.policy, self.signer());
        }
        match committed {
            Ok((seqs, checkpointed)) => {
                for (job, seqs) in jobs.iter().zip(seqs) {
                    *job.slot.lock() = Some(Ok(seqs));
                }
                if checkpointed {
                    w.publish_or_log(self.inner.keys.as_ref());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = jobs.len(), "audit append failed");
                let msg = e.to_string();
                for job in &jobs {
                    *job.slot.lock() = Some(Err(AuditError::GroupCommit(msg.clone())));
                }
                // Our own job gets the original, typed error.
                let _ = slot.lock().take();
                return Err(e);
            }
        }
        drop(w);
        let done = slot.lock().take();
        done.unwrap_or_else(|| Err(AuditError::GroupCommit("append was not committed".into())))
    }

    /// Whether the disk is full and the audit reserve has been spent on recording accesses:
    /// the server must then refuse writes before they reach the store, so that what space is
    /// left goes to recording reads. Each call during an emergency tries to set the reserve
    /// aside again (the file write is cheap, and only happens during the emergency) and ends
    /// the emergency when it can. See [`crate::reserve`].
    pub fn storage_emergency(&self) -> bool {
        self.inner.reserve.emergency()
    }

    /// Whether a storage emergency may be on: a cheap check (no file access) that tells when
    /// [`storage_emergency`](Self::storage_emergency) is worth calling.
    pub fn storage_emergency_suspected(&self) -> bool {
        self.inner.reserve.spent()
    }

    /// Append one record; returns its `seq`.
    pub fn append_one(&self, record: AuditRecord) -> Result<u64, AuditError> {
        self.append(vec![record])?
            .first()
            .copied()
            .ok_or_else(|| AuditError::GroupCommit("no seq returned".into()))
    }

    /// Make a checkpoint of the current head now (signed if keys are configured). Returns the
    /// existing checkpoint if the head is already checkpointed, `None` if the log is empty.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let writer = self.inner.writer.as_ref().ok_or(AuditError::ReadOnly)?;
        let mut w = writer.lock();
        let tx = w
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some((seq, hash)) = head(&tx)? else {
            return Ok(None);
        };
        if let Some(cp) = checkpoint_at(&tx, seq)? {
            return Ok(Some(cp));
        }
        let cp = insert_checkpoint(&tx, seq, &hash, self.signer(), self.inner.policy)?;
        tx.commit()?;
        w.publish_or_log(self.inner.keys.as_ref());
        Ok(Some(cp))
    }

    /// Checkpoints the head if the time policy says it is due: records after the last
    /// checkpoint exist and `checkpoint_seconds` (or the last checkpoint's own signed
    /// `seconds`, if shorter) have passed since it was made. A server calls this from a timer
    /// so that a quiet log's head is pinned, and anchored, within that time. Returns the new
    /// checkpoint, if one was made.
    pub fn checkpoint_if_due(&self) -> Result<Option<Checkpoint>, AuditError> {
        let writer = self.inner.writer.as_ref().ok_or(AuditError::ReadOnly)?;
        let mut w = writer.lock();
        let tx = w
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some((seq, hash)) = head(&tx)? else {
            return Ok(None);
        };
        let stretch = Stretch::load(&tx)?;
        if stretch.last_seq == seq
            || !stretch.time_due(Utc::now().timestamp_millis(), self.inner.policy)
        {
            return Ok(None);
        }
        let cp = insert_checkpoint(&tx, seq, &hash, self.signer(), self.inner.policy)?;
        tx.commit()?;
        w.publish_or_log(self.inner.keys.as_ref());
        Ok(Some(cp))
    }

    /// The line to keep outside for `checkpoint` (see [`crate::anchor`]), carrying the
    /// public key that signed it when this log's keys know it.
    pub fn anchor_line(&self, checkpoint: &Checkpoint) -> AnchorLine {
        let key = self
            .inner
            .keys
            .as_ref()
            .and_then(|k| key_for(k.jwks(), checkpoint.kid.as_deref()));
        AnchorLine::from_checkpoint(checkpoint, key.as_ref())
    }

    /// The newest checkpoint, if any.
    pub fn newest_checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        self.with_reader(|c| {
            let sql = format!("{} ORDER BY seq DESC LIMIT 1", checkpoint_select(c)?);
            Ok(c.query_row(&sql, [], checkpoint_row).optional()?)
        })
    }

    /// The last record's `(seq, hash)`, or `None` when the log is empty.
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        self.with_reader(head)
    }

    /// All checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.with_reader(|c| {
            let mut st = c.prepare(&format!("{} ORDER BY seq", checkpoint_select(c)?))?;
            let rows = st.query_map([], checkpoint_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn signer(&self) -> Option<&SigningKey> {
        self.inner.keys.as_ref().and_then(|k| k.signer.as_ref())
    }

    /// Run `f` on a pooled read-only connection.
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let pooled = self.inner.readers.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let result = f(&conn);
        let mut pool = self.inner.readers.lock();
        // A connection left inside a transaction (a failed read) is dropped, not reused.
        if pool.len() < 8 && conn.is_autocommit() {
            pool.push(conn);
        }
        result
    }

    /// A fresh read-only connection (verification uses its own for one consistent snapshot).
    pub(crate) fn open_reader(&self) -> Result<Connection, AuditError> {
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(conn)
    }
}

impl Writer {
    /// Write every job in one transaction; returns each job's seqs, and whether a checkpoint
    /// was made.
    fn commit(
        &mut self,
        jobs: &[Job],
        policy: Policy,
        signer: Option<&SigningKey>,
    ) -> Result<(Vec<Vec<u64>>, bool), AuditError> {
        // IMMEDIATE: take the write lock now, and read the head inside it, so that another
        // process appending to the same file cannot fork the chain.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut seq, mut prev) = head(&tx)?.unwrap_or((0, GENESIS_HASH.to_string()));
        let mut stretch = Stretch::load(&tx)?;
        let mut checkpointed = false;
        let mut out = Vec::with_capacity(jobs.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit_log (seq, recorded, patient, agent, body, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ins_patient =
                tx.prepare_cached("INSERT INTO audit_patient (patient, seq) VALUES (?1, ?2)")?;
            let mut ins_org =
                tx.prepare_cached("INSERT INTO audit_org (organization, seq) VALUES (?1, ?2)")?;
            for job in jobs {
                let mut seqs = Vec::with_capacity(job.records.len());
                for rec in &job.records {
                    seq += 1;
                    let body = stored_body(rec, seq, &prev);
                    let hash = chain_hash(&prev, &body);
                    let patients = rec.patient_refs();
                    let seq_i = to_i64(seq)?;
                    ins.execute(params![
                        seq_i,
                        rec.recorded(),
                        patients.first(),
                        rec.agent.key(),
                        body,
                        prev,
                        hash
                    ])?;
                    for p in &patients {
                        ins_patient.execute(params![p, seq_i])?;
                    }
                    if let Some(org) = &rec.agent.organization {
                        ins_org.execute(params![org, seq_i])?;
                    }
                    let now = Utc::now().timestamp_millis();
                    if stretch.due(seq, rec.when.timestamp_millis(), now, policy) {
                        let cp = insert_checkpoint(&tx, seq, &hash, signer, policy)?;
                        stretch.start_after(&cp);
                        checkpointed = true;
                    }
                    prev = hash;
                    seqs.push(seq);
                }
                out.push(seqs);
            }
        }
        tx.commit()?;
        Ok((out, checkpointed))
    }

    /// Appends the checkpoints the anchor file does not have yet (nothing without an anchor).
    fn publish(&mut self, keys: Option<&CheckpointKeys>) -> Result<(), AuditError> {
        let Some(anchor) = &mut self.anchor else {
            return Ok(());
        };
        let pending: Vec<Checkpoint> = {
            let sql = format!(
                "{} WHERE seq > ?1 ORDER BY seq",
                checkpoint_select(&self.conn)?
            );
            let mut st = self.conn.prepare(&sql)?;
            let rows = st.query_map([to_i64(anchor.last_seq)?], checkpoint_row)?;
            rows.collect::<Result<_, _>>()?
        };
        let lines: Vec<AnchorLine> = pending
            .iter()
            .map(|cp| {
                let key = keys.and_then(|k| key_for(k.jwks(), cp.kid.as_deref()));
                AnchorLine::from_checkpoint(cp, key.as_ref())
            })
            .collect();
        anchor.append(&lines)
    }

    /// After a commit that made a checkpoint: logs the newest checkpoint as a line the operator
    /// can keep, and appends what the anchor file misses. A failure to write the anchor is
    /// logged, not returned (the records are safely in the log); the lines are written with
    /// the next checkpoint.
    fn publish_or_log(&mut self, keys: Option<&CheckpointKeys>) {
        let newest = checkpoint_select(&self.conn).and_then(|select| {
            Ok(self
                .conn
                .query_row(
                    &format!("{select} ORDER BY seq DESC LIMIT 1"),
                    [],
                    checkpoint_row,
                )
                .optional()?)
        });
        if let Ok(Some(cp)) = newest {
            let key = keys.and_then(|k| key_for(k.jwks(), cp.kid.as_deref()));
            let line = AnchorLine::from_checkpoint(&cp, key.as_ref());
            tracing::info!(
                target: "phip_audit::checkpoint",
                seq = cp.seq,
                anchor = %line,
                "audit checkpoint (keep this line to check the trail later with `phip audit verify --expect`)"
            );
        }
        if let Err(error) = self.publish(keys) {
            tracing::error!(
                %error,
                "could not append the audit checkpoint to the anchor file; it will be retried \
                 with the next checkpoint"
            );
        }
    }
}

/// The stretch of records after the last checkpoint, as the writer tracks it to know when the
/// next checkpoint is due — by exactly the rule [`AuditLog::verify`] checks.
pub(crate) struct Stretch {
    /// The last checkpoint's `seq` (0: none yet).
    last_seq: u64,
    /// When it was made (ms); with no checkpoint, when the first record was recorded.
    base_ms: Option<i64>,
    /// Its signed policy (0: none).
    every: u64,
    seconds: u64,
}

impl Stretch {
    /// The stretch at the head of a writer's log (migrated, so it has the policy columns).
    fn load(c: &Connection) -> Result<Self, AuditError> {
        let newest = c
            .prepare_cached(
                "SELECT seq, hash, created, kid, signature, every, seconds \
                 FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], checkpoint_row)
            .optional()?;
        match newest {
            Some(cp) => {
                let mut s = Stretch {
                    last_seq: 0,
                    base_ms: None,
                    every: 0,
                    seconds: 0,
                };
                s.start_after(&cp);
                Ok(s)
            }
            None => {
                let first: Option<String> = c
                    .query_row("SELECT recorded FROM audit_log WHERE seq = 1", [], |r| {
                        r.get(0)
                    })
                    .optional()?;
                Ok(Stretch {
                    last_seq: 0,
                    base_ms: first.as_deref().and_then(parse_millis),
                    every: 0,
                    seconds: 0,
                })
            }
        }
    }

    fn start_after(&mut self, cp: &Checkpoint) {
        self.last_seq = cp.seq;
        self.base_ms = cp.created_millis();
        self.every = cp.every.unwrap_or(0);
        self.seconds = cp.seconds.unwrap_or(0);
    }

    /// Whether record `seq`, recorded at `recorded_ms` and appended at `now_ms`, must be a
    /// checkpoint.
    fn due(&mut self, seq: u64, recorded_ms: i64, now_ms: i64, policy: Policy) -> bool {
        let base = *self.base_ms.get_or_insert(recorded_ms);
        let by_count = (policy.every > 0 && seq % policy.every == 0)
            || (self.every > 0 && seq - self.last_seq >= self.every);
        let late =
            |seconds: u64| seconds > 0 && recorded_ms >= base.saturating_add(millis(seconds));
        let by_time = late(self.seconds)
            || late(policy.seconds)
            || (policy.seconds > 0 && now_ms >= base.saturating_add(millis(policy.seconds)));
        by_count || by_time
    }

    /// Whether, at `now_ms`, the head has waited long enough for a checkpoint.
    fn time_due(&self, now_ms: i64, policy: Policy) -> bool {
        let Some(base) = self.base_ms else {
            return false;
        };
        [self.seconds, policy.seconds]
            .into_iter()
            .any(|s| s > 0 && now_ms >= base.saturating_add(millis(s)))
    }
}

pub(crate) fn millis(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

pub(crate) fn has_table(c: &Connection, name: &str) -> Result<bool, AuditError> {
    Ok(c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

/// Brings a log written by an older version up to the current schema: the checkpoint policy
/// columns, and the organisation index (filled from the stored bodies when it is new).
fn migrate(c: &Connection, fill_org_index: bool) -> Result<(), AuditError> {
    let has_policy: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info('audit_checkpoints') WHERE name = 'every'",
        [],
        |r| r.get(0),
    )?;
    if has_policy == 0 {
        c.execute_batch(
            "ALTER TABLE audit_checkpoints ADD COLUMN every INTEGER;
             ALTER TABLE audit_checkpoints ADD COLUMN seconds INTEGER;",
        )?;
    }
    if fill_org_index {
        c.execute_batch("BEGIN IMMEDIATE")?;
        let filled = (|| -> Result<(), AuditError> {
            let mut ins = c.prepare("INSERT INTO audit_org (organization, seq) VALUES (?1, ?2)")?;
            let mut st = c.prepare("SELECT seq, body FROM audit_log ORDER BY seq")?;
            let mut rows = st.query([])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let body: String = row.get(1)?;
                let Ok(ev) = serde_json::from_str::<Value>(&body) else {
                    continue; // verify names it
                };
                if let Some(org) = requestor_organization(&ev) {
                    ins.execute(params![org, seq])?;
                }
            }
            Ok(())
        })();
        match filled {
            Ok(()) => c.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The log must still hold the checkpoint of the anchor file's last line.
fn check_anchored(c: &Connection, last: &AnchorLine, anchor: &Path) -> Result<(), AuditError> {
    let hash: Option<String> = c
        .query_row(
            "SELECT hash FROM audit_log WHERE seq = ?1",
            [to_i64(last.seq)?],
            |r| r.get(0),
        )
        .optional()?;
    let problem = match hash {
        None => "the log ends before that record: it was cut short, wiped or replaced",
        Some(h) if h != last.hash => {
            "that record's hash differs: the log was rewritten or replaced"
        }
        Some(_) => return Ok(()),
    };
    Err(AuditError::Anchor(format!(
        "the anchor {} holds checkpoint #{} but {problem}. Run `phip audit verify`; to start a \
         new trail on purpose, move both audit.db and the anchor file aside",
        anchor.display(),
        last.seq
    )))
}

/// The checkpoint columns in [`checkpoint_row`] order; a read-only log written by an older
/// version has no policy columns.
pub(crate) fn checkpoint_select(c: &Connection) -> Result<&'static str, AuditError> {
    let has_policy: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info('audit_checkpoints') WHERE name = 'every'",
        [],
        |r| r.get(0),
    )?;
    Ok(if has_policy > 0 {
        "SELECT seq, hash, created, kid, signature, every, seconds FROM audit_checkpoints"
    } else {
        "SELECT seq, hash, created, kid, signature, NULL, NULL FROM audit_checkpoints"
    })
}

/// The stored body: the record's AuditEvent with `id` and the previous hash as first extension.
fn stored_body(rec: &AuditRecord, seq: u64, prev: &str) -> String {
    let ev = match rec.to_fhir() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut out = Map::with_capacity(ev.len() + 2);
    let mut ext = vec![json!({ "url": PREV_HASH_EXTENSION, "valueString": prev })];
    let mut rest = Map::new();
    for (k, v) in ev {
        match (k.as_str(), v) {
            ("extension", Value::Array(more)) => ext.extend(more),
            (_, v) => {
                rest.insert(k, v);
            }
        }
    }
    out.insert("resourceType".into(), json!("AuditEvent"));
    out.insert("id".into(), json!(seq.to_string()));
    out.insert("extension".into(), Value::Array(ext));
    for (k, v) in rest {
        if k != "resourceType" {
            out.insert(k, v);
        }
    }
    Value::Object(out).to_string()
}

pub(crate) fn to_i64(seq: u64) -> Result<i64, AuditError> {
    i64::try_from(seq).map_err(|_| AuditError::Corrupt(format!("seq {seq} out of range")))
}

pub(crate) fn head(c: &Connection) -> Result<Option<(u64, String)>, AuditError> {
    let row: Option<(i64, String)> = c
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(s, h)| (u64::try_from(s).unwrap_or(0), h)))
}

pub(crate) fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Checkpoint> {
    let seq: i64 = r.get(0)?;
    let count = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    Ok(Checkpoint {
        seq: u64::try_from(seq).unwrap_or(0),
        hash: r.get(1)?,
        created: r.get(2)?,
        kid: r.get(3)?,
        signature: r.get(4)?,
        every: count(r.get(5)?),
        seconds: count(r.get(6)?),
    })
}

fn checkpoint_at(c: &Connection, seq: u64) -> Result<Option<Checkpoint>, AuditError> {
    let sql = format!("{} WHERE seq = ?1", checkpoint_select(c)?);
    Ok(c.query_row(&sql, [to_i64(seq)?], checkpoint_row)
        .optional()?)
}

fn insert_checkpoint(
    c: &Connection,
    seq: u64,
    hash: &str,
    signer: Option<&SigningKey>,
    policy: Policy,
) -> Result<Checkpoint, AuditError> {
    let mut cp = Checkpoint {
        seq,
        hash: hash.to_string(),
        created: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        kid: signer.map(|k| k.kid().to_string()),
        signature: None,
        every: Some(policy.every),
        seconds: Some(policy.seconds),
    };
    cp.signature = signer.map(|k| jws::sign_detached(k, Some(CHECKPOINT_TYP), &cp.payload()));
    c.prepare_cached(
        "INSERT INTO audit_checkpoints (seq, hash, created, kid, signature, every, seconds) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        to_i64(seq)?,
        cp.hash,
        cp.created,
        cp.kid,
        cp.signature,
        to_i64(policy.every)?,
        to_i64(policy.seconds)?
    ])?;
    Ok(cp)
}

/// Whether an append failed because the disk is full.
fn is_disk_full(error: &AuditError) -> bool {
    matches!(
        error,
        AuditError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::DiskFull
    )
}
