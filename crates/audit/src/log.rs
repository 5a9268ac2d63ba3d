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
//! audit_checkpoints(seq INTEGER PRIMARY KEY, hash TEXT, created TEXT, kid TEXT, signature TEXT)
//! ```
//!
//! `patient` holds the first patient for people reading the table by hand; the per-patient
//! index is `audit_patient`, which lists every patient of every record (records about several
//! patients appear once per patient). Triggers `RAISE(ABORT)` on any `UPDATE` or `DELETE` of
//! the three tables, so nothing that goes through SQLite's SQL engine without first dropping the
//! triggers can alter the trail. A direct edit of the file (or dropping the triggers) remains
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
//! Every `checkpoint_every` records (at each multiple of it) and on [`AuditLog::checkpoint`], a
//! row `(seq, hash, created, kid, signature)` is added to `audit_checkpoints`, where `signature`
//! is a detached compact JWS (`SM2SM3`, the key ring's active SM2 key) over the payload returned
//! by [`checkpoint_payload`]:
//!
//! ```text
//! {"typ":"phip-audit-checkpoint","seq":N,"hash":"<hash(N)>","time":"<created>"}
//! ```
//!
//! A checkpoint pins the chain: rewriting records before it (even recomputing all later hashes)
//! or cutting the log short behind it is detected unless the attacker also holds the signing
//! key. Records after the last checkpoint can be cut off undetected — checkpoint often, or export
//! the latest checkpoint elsewhere.
//!
//! ## Concurrency
//!
//! One writer connection serialised by a mutex. Callers queue their records; whoever holds the
//! writer lock takes the whole queue and commits it in one transaction (group commit), so under
//! load many requests share one fsync. Queries and verification use separate read-only
//! connections and never wait for the writer.

use crate::event::AuditRecord;
use crate::AuditError;
use chrono::{SecondsFormat, Utc};
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
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    created TEXT NOT NULL,
    kid TEXT,
    signature TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_patient_no_update BEFORE UPDATE ON audit_patient
    BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_patient_no_delete BEFORE DELETE ON audit_patient
    BEGIN SELECT RAISE(ABORT, 'audit_patient is append-only'); END;
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
    /// Detached compact JWS over [`checkpoint_payload`] (`None` when unsigned).
    pub signature: Option<String>,
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_payload(seq: u64, hash: &str, created: &str) -> Vec<u8> {
    // Built by hand so that the byte form is fixed by this format string, not by a serialiser.
    format!(r#"{{"typ":"{CHECKPOINT_TYP}","seq":{seq},"hash":"{hash}","time":"{created}"}}"#)
        .into_bytes()
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
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    writer: Option<Mutex<Writer>>,
    queue: Mutex<Vec<Job>>,
    readers: Mutex<Vec<Connection>>,
    pub(crate) keys: Option<CheckpointKeys>,
    checkpoint_every: u64,
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
            conn.execute_batch(SCHEMA)?;
            Some(Mutex::new(Writer { conn }))
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
                checkpoint_every: options.checkpoint_every,
                reserve,
            }),
        };
        // Fail now, not on the first query, if the file is not an audit log.
        log.with_reader(|c| {
            c.query_row("SELECT count(*) FROM audit_checkpoints", [], |_| Ok(()))?;
            Ok(())
        })?;
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
        let mut committed = w.commit(&jobs, self.inner.checkpoint_every, self.signer());
        if committed.as_ref().is_err_and(is_disk_full) && self.inner.reserve.release() {
            committed = w.commit(&jobs, self.inner.checkpoint_every, self.signer());
        }
        match committed {
            Ok(seqs) => {
                for (job, seqs) in jobs.iter().zip(seqs) {
                    *job.slot.lock() = Some(Ok(seqs));
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
        let cp = insert_checkpoint(&tx, seq, &hash, self.signer())?;
        tx.commit()?;
        tracing::info!(seq, "audit checkpoint");
        Ok(Some(cp))
    }

    /// The last record's `(seq, hash)`, or `None` when the log is empty.
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        self.with_reader(head)
    }

    /// All checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        self.with_reader(|c| {
            let mut st = c.prepare(
                "SELECT seq, hash, created, kid, signature FROM audit_checkpoints ORDER BY seq",
            )?;
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
    /// Write every job in one transaction; returns each job's seqs.
    fn commit(
        &mut self,
        jobs: &[Job],
        checkpoint_every: u64,
        signer: Option<&SigningKey>,
    ) -> Result<Vec<Vec<u64>>, AuditError> {
        // IMMEDIATE: take the write lock now, and read the head inside it, so that another
        // process appending to the same file cannot fork the chain.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut seq, mut prev) = head(&tx)?.unwrap_or((0, GENESIS_HASH.to_string()));
        let mut out = Vec::with_capacity(jobs.len());
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit_log (seq, recorded, patient, agent, body, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ins_patient =
                tx.prepare_cached("INSERT INTO audit_patient (patient, seq) VALUES (?1, ?2)")?;
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
                    if checkpoint_every > 0 && seq % checkpoint_every == 0 {
                        insert_checkpoint(&tx, seq, &hash, signer)?;
                    }
                    prev = hash;
                    seqs.push(seq);
                }
                out.push(seqs);
            }
        }
        tx.commit()?;
        Ok(out)
    }
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
    Ok(Checkpoint {
        seq: u64::try_from(seq).unwrap_or(0),
        hash: r.get(1)?,
        created: r.get(2)?,
        kid: r.get(3)?,
        signature: r.get(4)?,
    })
}

fn checkpoint_at(c: &Connection, seq: u64) -> Result<Option<Checkpoint>, AuditError> {
    Ok(c.query_row(
        "SELECT seq, hash, created, kid, signature FROM audit_checkpoints WHERE seq = ?1",
        [to_i64(seq)?],
        checkpoint_row,
    )
    .optional()?)
}

fn insert_checkpoint(
    c: &Connection,
    seq: u64,
    hash: &str,
    signer: Option<&SigningKey>,
) -> Result<Checkpoint, AuditError> {
    let created = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let payload = checkpoint_payload(seq, hash, &created);
    let signature = signer.map(|k| jws::sign_detached(k, Some(CHECKPOINT_TYP), &payload));
    let cp = Checkpoint {
        seq,
        hash: hash.to_string(),
        created,
        kid: signer.map(|k| k.kid().to_string()),
        signature,
    };
    c.prepare_cached(
        "INSERT INTO audit_checkpoints (seq, hash, created, kid, signature) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        to_i64(seq)?,
        cp.hash,
        cp.created,
        cp.kid,
        cp.signature
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
