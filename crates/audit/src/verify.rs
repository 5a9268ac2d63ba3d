//! Verification of the chain and the checkpoints, straight from the file.
//!
//! [`AuditLog::verify`] reads the whole log in one read transaction on a fresh read-only
//! connection (so it sees one consistent snapshot and never blocks a running server's appends)
//! and recomputes the chain from genesis. For each record in `seq` order it checks, in this
//! order: that `seq` follows its predecessor (a gap means deleted records), that the body's `id`
//! is its `seq` (a mismatch means records were moved or swapped), that both the `prev_hash`
//! column and the body's [`PREV_HASH_EXTENSION`] equal the previous record's hash, and that the
//! recomputed hash equals the stored one; and that the query index (`recorded`, `patient` and
//! `agent` columns, `audit_patient` rows) is what the body implies — otherwise a record could be
//! hidden from `AuditEvent?patient=…` without touching the chain. Then each checkpoint must match the record hash at its
//! `seq` (a checkpoint beyond the last record means the tail was cut off) and, when keys are
//! known, carry a valid signature. The report names the lowest broken `seq`.

use crate::event::OBJECT_ROLE_SYSTEM;
use crate::log::{chain_hash, checkpoint_payload, checkpoint_row, Checkpoint, GENESIS_HASH};
use crate::log::{AuditLog, PREV_HASH_EXTENSION};
use crate::AuditError;
use phip_security::jws::{self, Jwks};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Why a link is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// Records are missing: `seq` was expected but the next stored record is `next`.
    Missing {
        /// The next `seq` present.
        next: u64,
    },
    /// The body's `id` is not its `seq`: records were moved, swapped or renumbered.
    IdMismatch {
        /// The `id` found in the body.
        found: String,
    },
    /// The stored `prev_hash` (column or body extension) is not the previous record's hash:
    /// the predecessor was replaced or removed.
    PrevHashMismatch,
    /// The recomputed hash differs from the stored one: the record was altered.
    HashMismatch,
    /// The body is not a JSON AuditEvent.
    Malformed(String),
    /// The query index (`recorded`, `patient`, `agent` columns or `audit_patient` rows)
    /// disagrees with the record's body: someone edited it to hide or misattribute the record.
    IndexMismatch(String),
    /// A checkpoint covers `seq` but the log ends before it: the tail was removed.
    TailMissing {
        /// The checkpoint's `seq`.
        checkpoint: u64,
        /// The last record present (0 if none).
        last: u64,
    },
    /// A checkpoint's hash differs from the record hash at its `seq`, although every link up to
    /// it is consistent: records after the previous good checkpoint were rewritten and rehashed.
    CheckpointMismatch {
        /// The previous checkpoint that matched (0 if none): the rewrite is after it.
        after: u64,
    },
    /// A checkpoint's signature does not verify (forged or altered checkpoint, or unknown key).
    CheckpointSignature(String),
    /// A checkpoint has no signature although keys are configured.
    CheckpointUnsigned,
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakReason::Missing { next } => {
                write!(f, "record missing (next record present is {next})")
            }
            BreakReason::IdMismatch { found } => {
                write!(f, "record holds id {found:?}: moved or reordered")
            }
            BreakReason::PrevHashMismatch => {
                f.write_str("prev_hash does not match the previous record's hash")
            }
            BreakReason::HashMismatch => f.write_str("hash mismatch: record altered"),
            BreakReason::Malformed(e) => write!(f, "body is not a valid AuditEvent: {e}"),
            BreakReason::IndexMismatch(what) => {
                write!(f, "query index disagrees with the record: {what}")
            }
            BreakReason::TailMissing { checkpoint, last } => write!(
                f,
                "log ends at {last} but checkpoint covers {checkpoint}: tail removed"
            ),
            BreakReason::CheckpointMismatch { after } => write!(
                f,
                "checkpoint hash differs from the record's hash: records after {after} were rewritten"
            ),
            BreakReason::CheckpointSignature(e) => {
                write!(f, "checkpoint signature invalid: {e}")
            }
            BreakReason::CheckpointUnsigned => f.write_str("checkpoint is not signed"),
        }
    }
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The `seq` where the chain first breaks.
    pub seq: u64,
    /// What is wrong there.
    pub reason: BreakReason,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit record {}: {}", self.seq, self.reason)
    }
}

/// The result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records present.
    pub records: u64,
    /// Checkpoints present.
    pub checkpoints: u64,
    /// Whether checkpoint signatures were checked (keys were available).
    pub signatures_checked: bool,
    /// The last record's `seq` and hash, if any.
    pub head: Option<(u64, String)>,
    /// The first broken link, or `None` if the log is intact.
    pub first_broken: Option<Broken>,
}

impl VerifyReport {
    /// No broken link.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

impl AuditLog {
    /// Recompute the chain from genesis and check every checkpoint. See the
    /// [module docs](crate::verify).
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let jwks = self.inner.keys.as_ref().map(|k| k.jwks().clone());
        let conn = self.open_reader()?;
        // One read transaction: one snapshot for records and checkpoints alike.
        conn.execute_batch("BEGIN")?;
        let report = verify_conn(&conn, jwks.as_ref());
        // Ending a read transaction cannot lose anything; the connection is dropped anyway.
        let _ = conn.execute_batch("COMMIT");
        report
    }
}

fn verify_conn(
    conn: &rusqlite::Connection,
    jwks: Option<&Jwks>,
) -> Result<VerifyReport, AuditError> {
    let checkpoints: BTreeMap<u64, Checkpoint> = {
        let mut st = conn.prepare(
            "SELECT seq, hash, created, kid, signature FROM audit_checkpoints ORDER BY seq",
        )?;
        let rows = st.query_map([], checkpoint_row)?;
        rows.map(|r| r.map(|c| (c.seq, c)))
            .collect::<Result<_, _>>()?
    };

    let mut first: Option<Broken> = None;
    let mut records = 0u64;
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_string();
    let mut head: Option<(u64, String)> = None;
    // Record hashes at checkpoint seqs, recorded only while the chain is intact.
    let mut at_checkpoint: BTreeMap<u64, String> = BTreeMap::new();

    let mut st = conn.prepare(
        "SELECT seq, body, prev_hash, hash, recorded, patient, agent FROM audit_log ORDER BY seq",
    )?;
    let mut rows = st.query([])?;
    // The per-patient index, merged with the records in seq order.
    let mut idx_st =
        conn.prepare("SELECT seq, patient FROM audit_patient ORDER BY seq, patient")?;
    let mut index = PatientIndex {
        rows: idx_st.query([])?,
        peeked: None,
    };
    while let Some(row) = rows.next()? {
        records += 1;
        let seq_i: i64 = row.get(0)?;
        let hash: String = row.get(3)?;
        let seq = u64::try_from(seq_i).unwrap_or(0);
        head = Some((seq, hash.clone()));
        if first.is_some() {
            continue;
        }
        let body: String = row.get(1)?;
        let prev_col: String = row.get(2)?;
        let columns = Columns {
            recorded: row.get(4)?,
            patient: row.get(5)?,
            agent: row.get(6)?,
            index: index.take_up_to(seq)?,
        };
        if let Some(reason) = check_record(seq, expected, &body, &prev_col, &prev, &hash, columns) {
            let at = if seq > expected { expected } else { seq };
            first = Some(Broken { seq: at, reason });
            continue;
        }
        if checkpoints.contains_key(&seq) {
            at_checkpoint.insert(seq, hash.clone());
        }
        prev = hash;
        expected = seq + 1;
    }
    // Index rows for records that do not exist (reported after the checkpoints, which explain
    // a cut tail better).
    let stray = if first.is_none() { index.next()? } else { None };
    drop(index);

    let last = head.as_ref().map_or(0, |(s, _)| *s);
    let mut good_checkpoint = 0;
    for cp in checkpoints.values() {
        if first.as_ref().is_some_and(|b| b.seq <= cp.seq) {
            // Already broken earlier; later checkpoints add nothing.
            break;
        }
        let reason = if cp.seq > last {
            Some((
                last + 1,
                BreakReason::TailMissing {
                    checkpoint: cp.seq,
                    last,
                },
            ))
        } else if at_checkpoint.get(&cp.seq).is_some_and(|h| *h != cp.hash) {
            Some((
                cp.seq,
                BreakReason::CheckpointMismatch {
                    after: good_checkpoint,
                },
            ))
        } else {
            signature_problem(cp, jwks).map(|r| (cp.seq, r))
        };
        if let Some((seq, reason)) = reason {
            if first.as_ref().is_none_or(|b| seq < b.seq) {
                first = Some(Broken { seq, reason });
            }
        } else {
            good_checkpoint = cp.seq;
        }
    }

    if let Some((seq, patient)) = stray {
        if first.as_ref().is_none_or(|b| seq < b.seq) {
            first = Some(Broken {
                seq,
                reason: BreakReason::IndexMismatch(format!(
                    "audit_patient lists {patient} for a record that does not exist"
                )),
            });
        }
    }

    Ok(VerifyReport {
        records,
        checkpoints: checkpoints.len() as u64,
        signatures_checked: jwks.is_some(),
        head,
        first_broken: first,
    })
}

/// A record's query-index columns and its `audit_patient` rows (plus stray rows before it).
struct Columns {
    recorded: String,
    patient: Option<String>,
    agent: Option<String>,
    index: Vec<(u64, String)>,
}

struct PatientIndex<'s> {
    rows: rusqlite::Rows<'s>,
    peeked: Option<(u64, String)>,
}

impl PatientIndex<'_> {
    fn next(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        match self.rows.next()? {
            Some(r) => {
                let seq: i64 = r.get(0)?;
                Ok(Some((u64::try_from(seq).unwrap_or(0), r.get(1)?)))
            }
            None => Ok(None),
        }
    }

    /// Every index row with `seq <= upto`.
    fn take_up_to(&mut self, upto: u64) -> Result<Vec<(u64, String)>, AuditError> {
        let mut out = Vec::new();
        while let Some(row) = self.next()? {
            if row.0 > upto {
                self.peeked = Some(row);
                break;
            }
            out.push(row);
        }
        Ok(out)
    }
}

fn check_record(
    seq: u64,
    expected: u64,
    body: &str,
    prev_col: &str,
    prev: &str,
    hash: &str,
    columns: Columns,
) -> Option<BreakReason> {
    if seq != expected {
        return Some(BreakReason::Missing { next: seq });
    }
    let parsed: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Some(BreakReason::Malformed(e.to_string())),
    };
    let id = parsed.get("id").and_then(Value::as_str).unwrap_or_default();
    if id != seq.to_string() {
        return Some(BreakReason::IdMismatch { found: id.into() });
    }
    let body_prev = parsed
        .get("extension")
        .and_then(Value::as_array)
        .and_then(|exts| {
            exts.iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(PREV_HASH_EXTENSION))
        })
        .and_then(|e| e.get("valueString"))
        .and_then(Value::as_str);
    if prev_col != prev || body_prev != Some(prev) {
        return Some(BreakReason::PrevHashMismatch);
    }
    if chain_hash(prev, body) != hash {
        return Some(BreakReason::HashMismatch);
    }
    check_index(seq, &parsed, columns).map(BreakReason::IndexMismatch)
}

/// The index columns must be what [`crate::AuditLog::append`] derived from the body.
fn check_index(seq: u64, ev: &Value, columns: Columns) -> Option<String> {
    if let Some((stray, p)) = columns.index.iter().find(|(s, _)| *s != seq) {
        return Some(format!(
            "audit_patient lists {p} for record {stray}, which does not exist"
        ));
    }
    if ev.get("recorded").and_then(Value::as_str) != Some(columns.recorded.as_str()) {
        return Some("recorded column differs from the body".into());
    }
    let patients: Vec<&str> = ev
        .get("entity")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .filter(|e| {
                    e.pointer("/role/system").and_then(Value::as_str) == Some(OBJECT_ROLE_SYSTEM)
                        && e.pointer("/role/code").and_then(Value::as_str) == Some("1")
                })
                .filter_map(|e| e.pointer("/what/reference").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if columns.patient.as_deref() != patients.first().copied() {
        return Some("patient column differs from the body".into());
    }
    let mut listed: Vec<&str> = columns.index.iter().map(|(_, p)| p.as_str()).collect();
    let mut wanted = patients.clone();
    listed.sort_unstable();
    wanted.sort_unstable();
    if listed != wanted {
        return Some(format!(
            "audit_patient lists {listed:?} but the record concerns {wanted:?}"
        ));
    }
    // The requestor as Agent::key derives it: who.reference, else who.identifier.value.
    let requestor = ev.get("agent").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .find(|a| a.get("requestor") == Some(&Value::Bool(true)))
    });
    let agent = requestor.and_then(|a| {
        a.pointer("/who/reference")
            .or_else(|| a.pointer("/who/identifier/value"))
            .and_then(Value::as_str)
    });
    if columns.agent.as_deref() != agent {
        return Some("agent column differs from the body".into());
    }
    None
}

fn signature_problem(cp: &Checkpoint, jwks: Option<&Jwks>) -> Option<BreakReason> {
    let jwks = jwks?;
    let Some(sig) = &cp.signature else {
        return Some(BreakReason::CheckpointUnsigned);
    };
    let payload = checkpoint_payload(cp.seq, &cp.hash, &cp.created);
    match jws::verify_detached(sig, &payload, jwks) {
        Ok(header) if header.kid.is_some() && header.kid != cp.kid => Some(
            BreakReason::CheckpointSignature("kid differs from the signing key".into()),
        ),
        Ok(_) => None,
        Err(e) => Some(BreakReason::CheckpointSignature(e.to_string())),
    }
}
