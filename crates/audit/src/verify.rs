//! Verification of the chain, the checkpoints and the external anchor, straight from the file.
//!
//! [`AuditLog::verify_with`] reads the whole log in one read transaction on a fresh read-only
//! connection (so it sees one consistent snapshot and never blocks a running server's appends)
//! and recomputes the chain from genesis. For each record in `seq` order it checks, in this
//! order: that `seq` follows its predecessor (a gap means deleted records), that the body's `id`
//! is its `seq` (a mismatch means records were moved or swapped), that both the `prev_hash`
//! column and the body's [`PREV_HASH_EXTENSION`] equal the previous record's hash, and that the
//! recomputed hash equals the stored one; and that the query index (`recorded`, `patient` and
//! `agent` columns, `audit_patient` and `audit_org` rows) is what the body implies — otherwise
//! a record could be hidden from `AuditEvent?patient=…` without touching the chain.
//!
//! Then the checkpoints: each must match the record hash at its `seq` (a checkpoint beyond the
//! last record means the tail was cut off) and carry a valid signature by a trusted key; and
//! they must be where the policy puts them (see [`crate::log`]): a stretch of more than `every`
//! records, or a record recorded `seconds` or more after the checkpoint before it, without a
//! checkpoint means checkpoints were deleted, and so does a head left unpinned for more than
//! twice `seconds`. Each stretch is held to the policy signed into the checkpoint that opens
//! it, the stretch before the first checkpoint to the record limit the first checkpoint
//! signed; a log without any checkpoint, and stretches after checkpoints from before the
//! policy was signed, to [`VerifyOptions`].
//!
//! Last, the anchors ([`crate::anchor`]), checkpoints kept outside the data directory: the
//! log must reach each anchored `seq`, the record there must have the anchored hash, and the
//! log must still hold that checkpoint. When anchors carry keys (or keys are given), checkpoint
//! signatures are checked against those keys only, not against the key ring in the data
//! directory, which an attacker holding the directory could have replaced.
//!
//! The report names the lowest broken `seq`.

use crate::anchor::AnchorLine;
use crate::event::{requestor_organization, OBJECT_ROLE_SYSTEM};
use crate::log::{chain_hash, checkpoint_row, checkpoint_select, has_table, millis, parse_millis};
use crate::log::{AuditLog, Checkpoint, GENESIS_HASH, PREV_HASH_EXTENSION};
use crate::AuditError;
use chrono::{DateTime, Utc};
use phip_security::jws::{self, Jwks, JwsError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
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
    /// The query index (`recorded`, `patient`, `agent` columns or `audit_patient` /
    /// `audit_org` rows) disagrees with the record's body: someone edited it to hide or
    /// misattribute the record.
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
    /// A checkpoint's signature does not verify (forged or altered checkpoint, or a key that
    /// is not trusted).
    CheckpointSignature(String),
    /// A checkpoint has no signature although keys are configured.
    CheckpointUnsigned,
    /// Records `from..=to`, more than `every` of them, have no checkpoint: checkpoints were
    /// deleted (so that the records could be rewritten).
    CheckpointGap {
        /// First record of the stretch.
        from: u64,
        /// Last record of the stretch.
        to: u64,
        /// The most records allowed between checkpoints.
        every: u64,
    },
    /// Records `from..=to` have no checkpoint although record `at` was recorded `seconds` or
    /// more after the checkpoint before them: checkpoints were deleted.
    CheckpointLate {
        /// First record of the stretch.
        from: u64,
        /// Last record of the stretch.
        to: u64,
        /// The first record that should have been checkpointed.
        at: u64,
        /// The longest time allowed between a record and its checkpoint.
        seconds: u64,
    },
    /// The newest records `from..=to` have had no checkpoint since `since`, more than twice
    /// the `seconds` the policy allows: the checkpoints at the head were deleted, or the server
    /// stopped without its closing checkpoint (a crash; its next start checkpoints the head).
    HeadUnpinned {
        /// First record after the last checkpoint.
        from: u64,
        /// The last record.
        to: u64,
        /// When the last checkpoint was made (or, with none, when the first record was).
        since: String,
        /// The longest time allowed between a record and its checkpoint.
        seconds: u64,
    },
    /// The anchor holds checkpoint `anchored` but the log ends at `last`: records were cut
    /// off, or the log was wiped or replaced.
    AnchorAhead {
        /// The highest anchored checkpoint beyond the log.
        anchored: u64,
        /// The last record present (0 if none).
        last: u64,
    },
    /// The record at an anchored checkpoint has another hash: the log up to there was
    /// rewritten, or replaced by another log.
    AnchorMismatch,
    /// The anchor holds a checkpoint at this record that the log no longer has: checkpoints
    /// were deleted.
    CheckpointRemoved,
    /// An anchor line (from the anchor file or `--expect`) is not validly signed by the key it
    /// carries.
    AnchorInvalid(String),
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
            BreakReason::CheckpointGap { from, to, every } => write!(
                f,
                "records {from}–{to} have no checkpoint, but one is made at least every {every} \
                 records: checkpoints were removed"
            ),
            BreakReason::CheckpointLate {
                from,
                to,
                at,
                seconds,
            } => write!(
                f,
                "records {from}–{to} have no checkpoint, but record {at} was recorded {seconds} s \
                 or more after the checkpoint before it and must have been one: checkpoints were \
                 removed"
            ),
            BreakReason::HeadUnpinned {
                from,
                to,
                since,
                seconds,
            } => write!(
                f,
                "the newest records {from}–{to} have had no checkpoint since {since}, more than \
                 twice the {seconds} s allowed: checkpoints at the head were removed, or the \
                 server stopped without its closing checkpoint (after a crash, its next start \
                 makes one)"
            ),
            BreakReason::AnchorAhead { anchored, last } => write!(
                f,
                "the log ends at {last} but the anchor holds checkpoint {anchored}: records were \
                 cut off, or the log was wiped or replaced"
            ),
            BreakReason::AnchorMismatch => f.write_str(
                "the record's hash differs from the anchored checkpoint: the log up to here was \
                 rewritten, or replaced by another log",
            ),
            BreakReason::CheckpointRemoved => f.write_str(
                "the anchor holds a checkpoint here that the log no longer has: checkpoints were \
                 removed",
            ),
            BreakReason::AnchorInvalid(e) => write!(f, "anchor line invalid: {e}"),
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

/// What [`AuditLog::verify_with`] checks against besides the log itself.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The most records between checkpoints, for stretches no signed policy covers (a log
    /// without checkpoints, or after checkpoints made before the policy was signed); 0: no
    /// limit.
    pub every: u64,
    /// The longest time between a record and its checkpoint, for a log that has no checkpoint
    /// at all; 0: no limit.
    pub seconds: u64,
    /// Checkpoints kept outside the data directory (the anchor file, `--expect` lines).
    pub anchors: Vec<AnchorLine>,
    /// Public keys trusted for checkpoint signatures besides those the anchors carry. When
    /// either is present the log's own key ring is not used.
    pub keys: Option<Jwks>,
    /// The time the head's age is measured at.
    pub now: DateTime<Utc>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            every: crate::log::DEFAULT_CHECKPOINT_EVERY,
            seconds: crate::log::DEFAULT_CHECKPOINT_SECONDS,
            anchors: Vec::new(),
            keys: None,
            now: Utc::now(),
        }
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
    /// Whether those keys were pinned outside the data directory (by the anchors or given
    /// keys) rather than taken from the log's own key ring.
    pub keys_pinned: bool,
    /// The highest anchored checkpoint the log was found to hold.
    pub anchored: Option<u64>,
    /// Records after the newest checkpoint, not pinned by any checkpoint yet.
    pub unpinned: Option<(u64, u64)>,
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
    /// Recompute the chain from genesis and check every checkpoint, with this log's own keys
    /// and checkpoint policy and no anchor. See the [module docs](crate::verify).
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.verify_with(&VerifyOptions {
            every: self.inner.policy.every,
            seconds: self.inner.policy.seconds,
            ..VerifyOptions::default()
        })
    }

    /// [`verify`](Self::verify) against `options`: anchors, pinned keys, the policy for
    /// stretches no signed policy covers.
    pub fn verify_with(&self, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
        let ring = self.inner.keys.as_ref().map(|k| k.jwks().clone());
        let conn = self.open_reader()?;
        // One read transaction: one snapshot for records and checkpoints alike.
        conn.execute_batch("BEGIN")?;
        let report = verify_conn(&conn, ring.as_ref(), options);
        // Ending a read transaction cannot lose anything; the connection is dropped anyway.
        let _ = conn.execute_batch("COMMIT");
        report
    }
}

/// Keeps the lowest broken `seq` (on a tie, the first reported).
fn note(first: &mut Option<Broken>, seq: u64, reason: BreakReason) {
    if first.as_ref().is_none_or(|b| seq < b.seq) {
        *first = Some(Broken { seq, reason });
    }
}

/// The policy a stretch of records is held to, and where it started.
struct Stretch {
    /// The checkpoint before it (0: none).
    last_seq: u64,
    base_ms: Option<i64>,
    base_text: Option<String>,
    every: u64,
    seconds: u64,
}

impl Stretch {
    fn after(cp: &Checkpoint, options: &VerifyOptions) -> Self {
        Stretch {
            last_seq: cp.seq,
            base_ms: cp.created_millis(),
            base_text: Some(cp.created.clone()),
            // A checkpoint from before the policy was signed: the configured record limit.
            every: cp.every.unwrap_or(if cp.seconds.is_none() {
                options.every
            } else {
                0
            }),
            seconds: cp.seconds.unwrap_or(0),
        }
    }
}

/// A violation of the checkpoint policy, before its stretch's end is known.
enum PolicyBreak {
    Gap { from: u64, every: u64 },
    Late { from: u64, at: u64, seconds: u64 },
}

fn verify_conn(
    conn: &rusqlite::Connection,
    ring: Option<&Jwks>,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let mut first: Option<Broken> = None;

    // Trusted keys: those the anchors carry (each line's signature checked with its key) and
    // those given; the log's own ring only when there are none.
    let mut pinned = options.keys.clone().unwrap_or_default();
    let mut anchors: Vec<&AnchorLine> = options.anchors.iter().collect();
    anchors.sort_by_key(|l| l.seq);
    for line in &anchors {
        match line.verified_key() {
            Ok(Some(jwk)) => pinned.keys.push(jwk),
            Ok(None) => {}
            Err(e) => note(&mut first, line.seq, BreakReason::AnchorInvalid(e)),
        }
    }
    let keys_pinned = !pinned.keys.is_empty();
    let jwks = if keys_pinned { Some(&pinned) } else { ring };
    let anchored_seqs: BTreeSet<u64> = anchors.iter().map(|l| l.seq).collect();

    let checkpoints: BTreeMap<u64, Checkpoint> = {
        let mut st = conn.prepare(&format!("{} ORDER BY seq", checkpoint_select(conn)?))?;
        let rows = st.query_map([], checkpoint_row)?;
        rows.map(|r| r.map(|c| (c.seq, c)))
            .collect::<Result<_, _>>()?
    };

    let mut records = 0u64;
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_string();
    let mut head: Option<(u64, String)> = None;
    // Where the chain first breaks (checks that need an intact prefix stop there).
    let mut chain_broken = false;
    // Record hashes at checkpoint and anchor seqs, recorded only while the chain is intact.
    let mut at_checkpoint: BTreeMap<u64, String> = BTreeMap::new();
    let mut at_anchor: BTreeMap<u64, String> = BTreeMap::new();
    // The stretch before the first checkpoint: the record limit the first checkpoint signed
    // (the writer's policy then), or the configured one; the time limit only if there is no
    // checkpoint at all (logs from before the time policy have long first stretches).
    let mut stretch = Stretch {
        last_seq: 0,
        base_ms: None,
        base_text: None,
        every: checkpoints
            .values()
            .next()
            .and_then(|first| first.every)
            .unwrap_or(options.every),
        seconds: if checkpoints.is_empty() {
            options.seconds
        } else {
            0
        },
    };
    let mut policy_break: Option<PolicyBreak> = None;

    let mut st = conn.prepare(
        "SELECT seq, body, prev_hash, hash, recorded, patient, agent FROM audit_log ORDER BY seq",
    )?;
    let mut rows = st.query([])?;
    // The per-patient and per-organisation indexes, merged with the records in seq order.
    let mut idx_st =
        conn.prepare("SELECT seq, patient FROM audit_patient ORDER BY seq, patient")?;
    let mut patient_index = SeqIndex {
        rows: idx_st.query([])?,
        peeked: None,
    };
    // A read-only log written by an older version has no organisation index yet.
    let mut org_st = if has_table(conn, "audit_org")? {
        Some(conn.prepare("SELECT seq, organization FROM audit_org ORDER BY seq, organization")?)
    } else {
        None
    };
    let mut org_index = match &mut org_st {
        Some(st) => Some(SeqIndex {
            rows: st.query([])?,
            peeked: None,
        }),
        None => None,
    };
    while let Some(row) = rows.next()? {
        records += 1;
        let seq_i: i64 = row.get(0)?;
        let hash: String = row.get(3)?;
        let seq = u64::try_from(seq_i).unwrap_or(0);
        head = Some((seq, hash.clone()));
        if chain_broken {
            continue;
        }
        let body: String = row.get(1)?;
        let prev_col: String = row.get(2)?;
        let recorded: String = row.get(4)?;
        let recorded_ms = parse_millis(&recorded);
        let columns = Columns {
            recorded,
            patient: row.get(5)?,
            agent: row.get(6)?,
            index: patient_index.take_up_to(seq)?,
            orgs: match &mut org_index {
                Some(idx) => Some(idx.take_up_to(seq)?),
                None => None,
            },
        };
        if let Some(reason) = check_record(seq, expected, &body, &prev_col, &prev, &hash, columns) {
            let at = if seq > expected { expected } else { seq };
            note(&mut first, at, reason);
            chain_broken = true;
            continue;
        }
        if anchored_seqs.contains(&seq) {
            at_anchor.insert(seq, hash.clone());
        }
        // The checkpoint policy of the stretch this record is in.
        if let Some(ms) = recorded_ms {
            let base = *stretch.base_ms.get_or_insert(ms);
            if stretch.base_text.is_none() {
                stretch.base_text = Some(row.get(4)?);
            }
            if policy_break.is_none() && !checkpoints.contains_key(&seq) {
                let from = stretch.last_seq + 1;
                if stretch.every > 0 && seq - stretch.last_seq >= stretch.every {
                    policy_break = Some(PolicyBreak::Gap {
                        from,
                        every: stretch.every,
                    });
                } else if stretch.seconds > 0 && ms >= base.saturating_add(millis(stretch.seconds))
                {
                    policy_break = Some(PolicyBreak::Late {
                        from,
                        at: seq,
                        seconds: stretch.seconds,
                    });
                }
            }
        }
        if let Some(cp) = checkpoints.get(&seq) {
            at_checkpoint.insert(seq, hash.clone());
            stretch = Stretch::after(cp, options);
        }
        prev = hash;
        expected = seq + 1;
    }
    // Index rows for records that do not exist (reported after the checkpoints, which explain
    // a cut tail better).
    let stray = if chain_broken {
        None
    } else {
        match patient_index.next()? {
            Some((seq, p)) => Some((seq, format!("audit_patient lists {p}"))),
            None => org_index
                .as_mut()
                .map(SeqIndex::next)
                .transpose()?
                .flatten()
                .map(|(seq, o)| (seq, format!("audit_org lists {o}"))),
        }
    };
    drop(patient_index);
    drop(org_index);

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
            signature_problem(cp, jwks, keys_pinned).map(|r| (cp.seq, r))
        };
        if let Some((seq, reason)) = reason {
            note(&mut first, seq, reason);
        } else {
            good_checkpoint = cp.seq;
        }
    }

    // Checkpoints where the policy puts them.
    let stretch_end = |from: u64| {
        checkpoints
            .range(from..)
            .next()
            .map_or(last, |(s, _)| s.saturating_sub(1).min(last))
    };
    match policy_break {
        Some(PolicyBreak::Gap { from, every }) => note(
            &mut first,
            from,
            BreakReason::CheckpointGap {
                from,
                to: stretch_end(from),
                every,
            },
        ),
        Some(PolicyBreak::Late { from, at, seconds }) => note(
            &mut first,
            from,
            BreakReason::CheckpointLate {
                from,
                to: stretch_end(from),
                at,
                seconds,
            },
        ),
        None => {}
    }
    let unpinned =
        (!chain_broken && last > stretch.last_seq).then_some((stretch.last_seq + 1, last));
    if let (Some((from, to)), Some(base)) = (unpinned, stretch.base_ms) {
        let now = options.now.timestamp_millis();
        if stretch.seconds > 0
            && now >= base.saturating_add(millis(stretch.seconds.saturating_mul(2)))
        {
            note(
                &mut first,
                from,
                BreakReason::HeadUnpinned {
                    from,
                    to,
                    since: stretch.base_text.clone().unwrap_or_default(),
                    seconds: stretch.seconds,
                },
            );
        }
    }

    // The anchors.
    let mut anchored = None;
    if let Some(beyond) = anchors.iter().map(|l| l.seq).filter(|s| *s > last).max() {
        note(
            &mut first,
            last + 1,
            BreakReason::AnchorAhead {
                anchored: beyond,
                last,
            },
        );
    }
    for line in &anchors {
        let Some(hash) = at_anchor.get(&line.seq) else {
            continue; // beyond the log, or after a break already reported
        };
        if *hash != line.hash {
            note(&mut first, line.seq, BreakReason::AnchorMismatch);
        } else if !checkpoints.contains_key(&line.seq) {
            note(&mut first, line.seq, BreakReason::CheckpointRemoved);
        } else {
            anchored = Some(line.seq);
        }
    }

    if let Some((seq, what)) = stray {
        note(
            &mut first,
            seq,
            BreakReason::IndexMismatch(format!("{what} for a record that does not exist")),
        );
    }

    Ok(VerifyReport {
        records,
        checkpoints: checkpoints.len() as u64,
        signatures_checked: jwks.is_some(),
        keys_pinned,
        anchored,
        unpinned,
        head,
        first_broken: first,
    })
}

/// A record's query-index columns and its `audit_patient` and `audit_org` rows (plus stray
/// rows before it); `orgs` is `None` for a log without the organisation index.
struct Columns {
    recorded: String,
    patient: Option<String>,
    agent: Option<String>,
    index: Vec<(u64, String)>,
    orgs: Option<Vec<(u64, String)>>,
}

/// An index table's `(seq, value)` rows in `seq` order.
struct SeqIndex<'s> {
    rows: rusqlite::Rows<'s>,
    peeked: Option<(u64, String)>,
}

impl SeqIndex<'_> {
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
    if let Some(orgs) = &columns.orgs {
        if let Some((stray, o)) = orgs.iter().find(|(s, _)| *s != seq) {
            return Some(format!(
                "audit_org lists {o} for record {stray}, which does not exist"
            ));
        }
        let listed: Vec<&str> = orgs.iter().map(|(_, o)| o.as_str()).collect();
        let wanted: Vec<&str> = requestor_organization(ev).into_iter().collect();
        if listed != wanted {
            return Some(format!(
                "audit_org lists {listed:?} but the requestor's organisation is {wanted:?}"
            ));
        }
    }
    None
}

fn signature_problem(cp: &Checkpoint, jwks: Option<&Jwks>, pinned: bool) -> Option<BreakReason> {
    let jwks = jwks?;
    let Some(sig) = &cp.signature else {
        return Some(BreakReason::CheckpointUnsigned);
    };
    match jws::verify_detached(sig, &cp.payload(), jwks) {
        Ok(header) if header.kid.is_some() && header.kid != cp.kid => Some(
            BreakReason::CheckpointSignature("kid differs from the signing key".into()),
        ),
        Ok(_) => None,
        Err(JwsError::KeyNotFound { kid, .. }) if pinned => {
            Some(BreakReason::CheckpointSignature(format!(
                "signed by key {} which the anchor does not know (a key put into the data \
                 directory, or a rotation the anchor missed: give its public key with --jwks)",
                kid.as_deref().unwrap_or("without kid")
            )))
        }
        Err(e) => Some(BreakReason::CheckpointSignature(e.to_string())),
    }
}
