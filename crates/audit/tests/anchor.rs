//! Issue #16, item 8: the audit trail cannot be cut. Checkpoints are required at their
//! interval, and the anchor file (kept apart from the data directory) detects a log that was
//! rewritten with its checkpoints deleted, wiped, cut short, or replaced wholesale by a fresh,
//! validly signed log made with a new key. Every attack here passed the verifier before.

use chrono::{Duration, TimeZone, Utc};
use phip_audit::log::{chain_hash, AUDIT_DB};
use phip_audit::{
    read_anchor, Agent, AnchorLine, AuditError, AuditLog, AuditOptions, AuditQuery, AuditRecord,
    BreakReason, CheckpointKeys, Interaction, Outcome, VerifyOptions, VerifyReport,
};
use phip_security::keys::{KeyRing, KeyWrap, MasterKey};
use rusqlite::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A data directory and, apart from it, the anchor file (another file system in production).
struct Site {
    data: tempfile::TempDir,
    elsewhere: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        Site {
            data: tempfile::tempdir().unwrap(),
            elsewhere: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> &Path {
        self.data.path()
    }

    fn anchor(&self) -> PathBuf {
        self.elsewhere.path().join("phip-audit.anchor")
    }

    fn ring(&self, master: u8) -> KeyRing {
        KeyRing::open_with(
            self.dir(),
            MasterKey::from_bytes([master; 32]),
            KeyWrap::default(),
        )
        .unwrap()
    }

    /// The log with checkpoints every `every` records and `seconds`, anchored.
    fn open(&self, every: u64, seconds: u64) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(
            self.dir(),
            AuditOptions {
                keys: Some(CheckpointKeys::from_key_ring(&self.ring(7)).unwrap()),
                checkpoint_every: every,
                checkpoint_seconds: seconds,
                anchor: Some(self.anchor()),
                ..AuditOptions::default()
            },
        )
    }

    fn anchors(&self) -> Vec<AnchorLine> {
        read_anchor(&self.anchor()).unwrap().lines
    }

    /// `phip audit verify --anchor`: the anchor's lines, their keys pinned, no key ring.
    fn verify_anchored(&self, every: u64, seconds: u64) -> VerifyReport {
        AuditLog::open_read_only(self.dir(), None)
            .unwrap()
            .verify_with(&VerifyOptions {
                every,
                seconds,
                anchors: self.anchors(),
                ..VerifyOptions::default()
            })
            .unwrap()
    }
}

fn record(i: usize) -> AuditRecord {
    AuditRecord::new(Interaction::Read, Outcome::Success)
        .at(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(i as i64))
        .agent(Agent {
            sub: Some(format!("user-{}", i % 3)),
            organization: Some(format!("Organization/org-{}", i % 2)),
            ..Agent::default()
        })
        .patient(format!("p{}", i % 5))
        .resource(format!("Observation/{i}"))
}

/// 25 records with a checkpoint every 10 and one at the head (as at a server's shutdown).
fn filled(site: &Site) -> AuditLog {
    let log = site.open(10, 0).unwrap();
    log.append((1..=25).map(record).collect()).unwrap();
    log.checkpoint().unwrap();
    log
}

/// Opens `audit.db` as an attacker with the file would, with the append-only triggers dropped.
fn attacker(dir: &Path) -> Connection {
    let c = Connection::open(dir.join(AUDIT_DB)).unwrap();
    let triggers: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in triggers {
        c.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
    }
    c
}

/// Rewrites record `at` and re-chains every record after it.
fn rewrite_and_rehash(c: &Connection, at: i64) {
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT seq, body FROM audit_log WHERE seq >= ?1 ORDER BY seq")
        .unwrap()
        .query_map([at], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev: String = c
        .query_row("SELECT hash FROM audit_log WHERE seq = ?1", [at - 1], |r| {
            r.get(0)
        })
        .unwrap();
    for (seq, body) in rows {
        let mut v: Value = serde_json::from_str(&body).unwrap();
        v["extension"][0]["valueString"] = Value::String(prev.clone());
        if seq == at {
            v["outcome"] = Value::String("4".into());
        }
        let body = v.to_string();
        let hash = chain_hash(&prev, &body);
        c.execute(
            "UPDATE audit_log SET body = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![body, prev, hash, seq],
        )
        .unwrap();
        prev = hash;
    }
}

fn broken(report: &VerifyReport) -> (u64, BreakReason) {
    let b = report
        .first_broken
        .clone()
        .unwrap_or_else(|| panic!("verify must fail: {report:?}"));
    (b.seq, b.reason)
}

#[test]
fn every_checkpoint_is_anchored_with_its_key() {
    let site = Site::new();
    let log = filled(&site);
    let lines = site.anchors();
    let cps = log.checkpoints().unwrap();
    assert_eq!(
        lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [10, 20, 25]
    );
    for (line, cp) in lines.iter().zip(&cps) {
        assert_eq!(*line, log.anchor_line(cp));
        assert_eq!(line.hash, cp.hash);
        let key = line.verified_key().unwrap().expect("signed and keyed");
        assert_eq!(key.kid, cp.kid);
        // The text form round-trips, and `seq hash` alone is a valid (keyless) line.
        assert_eq!(AnchorLine::parse(&line.to_line()).unwrap(), *line);
        let short = AnchorLine::parse(&format!("seq={} hash={}", line.seq, line.hash)).unwrap();
        assert_eq!(short.verified_key().unwrap(), None);
    }
    // The signed policy (every 10) governs, not the verifier's configuration (every 3).
    let report = site.verify_anchored(3, 0);
    assert!(report.is_intact(), "{:?}", report.first_broken);
    assert_eq!(report.anchored, Some(25));
    assert!(report.keys_pinned && report.signatures_checked);
    // A forged line is refused, whatever the log says.
    let mut forged = lines[2].clone();
    forged.hash = "0".repeat(64);
    assert!(forged.verified_key().is_err());
    assert!(AnchorLine::parse("seq=3").is_err());
    assert!(AnchorLine::parse("seq=3 hash=xyz").is_err());
    assert!(AnchorLine::parse(&format!("seq=3 hash={} who=me", "a".repeat(64))).is_err());
}

#[test]
fn rewrite_rehash_and_deleted_checkpoints_are_detected() {
    // With the count rule: 25 records and no checkpoint left.
    let site = Site::new();
    let log = filled(&site);
    let c = attacker(site.dir());
    rewrite_and_rehash(&c, 13);
    c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    assert_eq!(
        broken(&log.verify().unwrap()),
        (
            1,
            BreakReason::CheckpointGap {
                from: 1,
                to: 25,
                every: 10
            }
        )
    );
    // Deleting only the checkpoints the rewrite crossed leaves a stretch too long as well.
    let site = Site::new();
    let log = filled(&site);
    let c = attacker(site.dir());
    rewrite_and_rehash(&c, 13);
    c.execute("DELETE FROM audit_checkpoints WHERE seq > 10", [])
        .unwrap();
    assert_eq!(
        broken(&log.verify().unwrap()),
        (
            11,
            BreakReason::CheckpointGap {
                from: 11,
                to: 25,
                every: 10
            }
        )
    );
    // The anchor names the rewritten stretch even where the interval rule cannot (here a log
    // whose checkpoints are not count-based).
    let site = Site::new();
    let log = site.open(0, 0).unwrap();
    log.append((1..=5).map(record).collect()).unwrap();
    log.checkpoint().unwrap();
    let c = attacker(site.dir());
    rewrite_and_rehash(&c, 3);
    c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    assert!(
        log.verify().unwrap().is_intact(),
        "the log alone cannot tell"
    );
    assert_eq!(
        broken(&site.verify_anchored(0, 0)),
        (5, BreakReason::AnchorMismatch)
    );
    // And the server refuses to go on writing to it.
    drop(log);
    let refused = site.open(0, 0).unwrap_err();
    assert!(matches!(refused, AuditError::Anchor(_)), "{refused}");
}

#[test]
fn a_wiped_log_is_detected() {
    let site = Site::new();
    let _log = filled(&site);
    let c = attacker(site.dir());
    c.execute_batch(
        "DELETE FROM audit_log; DELETE FROM audit_patient; DELETE FROM audit_org;
         DELETE FROM audit_checkpoints;",
    )
    .unwrap();
    assert_eq!(
        broken(&site.verify_anchored(10, 0)),
        (
            1,
            BreakReason::AnchorAhead {
                anchored: 25,
                last: 0
            }
        )
    );
    // Deleting the file altogether: the server will not start a new trail over the anchor.
    drop(_log);
    drop(c);
    for f in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(site.dir().join(f));
    }
    let refused = site.open(10, 0).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the log ends before that record"),
        "{refused}"
    );
}

#[test]
fn a_cut_tail_is_detected() {
    let site = Site::new();
    let log = filled(&site);
    let c = attacker(site.dir());
    c.execute_batch(
        "DELETE FROM audit_log WHERE seq > 15; DELETE FROM audit_patient WHERE seq > 15;
         DELETE FROM audit_org WHERE seq > 15; DELETE FROM audit_checkpoints WHERE seq > 15;",
    )
    .unwrap();
    assert!(
        log.verify().unwrap().is_intact(),
        "records after the last checkpoint left can be cut without trace in the log itself"
    );
    assert_eq!(
        broken(&site.verify_anchored(10, 0)),
        (
            16,
            BreakReason::AnchorAhead {
                anchored: 25,
                last: 15
            }
        )
    );
    // `--expect` with the line `phip audit head` printed before the cut.
    let head = site.anchors().pop().unwrap();
    let report = AuditLog::open_read_only(site.dir(), None)
        .unwrap()
        .verify_with(&VerifyOptions {
            every: 10,
            seconds: 0,
            anchors: vec![AnchorLine::parse(&head.to_line()).unwrap()],
            ..VerifyOptions::default()
        })
        .unwrap();
    assert_eq!(broken(&report).0, 16);
}

#[test]
fn a_log_replaced_by_one_signed_with_a_new_key_is_detected() {
    let site = Site::new();
    let log = filled(&site);
    drop(log);
    // The attacker builds a fresh, internally valid log with a key of their own (more records
    // than the original, so that no cut is visible) and puts it, and the key ring, in place.
    let forge = tempfile::tempdir().unwrap();
    let forged_ring = KeyRing::open_with(
        forge.path(),
        MasterKey::from_bytes([9; 32]),
        KeyWrap::default(),
    )
    .unwrap();
    let forged = AuditLog::open_with(
        forge.path(),
        AuditOptions {
            keys: Some(CheckpointKeys::from_key_ring(&forged_ring).unwrap()),
            checkpoint_every: 10,
            checkpoint_seconds: 0,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    forged
        .append((1..=30).map(|i| record(i + 1000)).collect())
        .unwrap();
    forged.checkpoint().unwrap();
    assert!(forged.verify().unwrap().is_intact());
    drop(forged);
    for f in ["audit.db", "audit.db-wal", "audit.db-shm", "keys.json"] {
        let _ = std::fs::remove_file(site.dir().join(f));
        if forge.path().join(f).exists() {
            std::fs::copy(forge.path().join(f), site.dir().join(f)).unwrap();
        }
    }
    // With the data directory's (replaced) key ring, the log looks perfect.
    let ring = forged_ring;
    let replaced = AuditLog::open_read_only(site.dir(), Some(&ring)).unwrap();
    assert!(replaced.verify().unwrap().is_intact());
    // Against the anchor: the first checkpoint is signed by a key the anchor never saw.
    let report = site.verify_anchored(10, 0);
    assert!(report.keys_pinned);
    let (seq, reason) = broken(&report);
    assert_eq!(seq, 10);
    assert!(
        matches!(&reason, BreakReason::CheckpointSignature(e) if e.contains("anchor does not know")),
        "{reason:?}"
    );
    // Even trusting the forged key, the anchored hashes do not match.
    let report = replaced
        .verify_with(&VerifyOptions {
            every: 10,
            seconds: 0,
            anchors: site.anchors(),
            keys: Some(ring.jwks()),
            ..VerifyOptions::default()
        })
        .unwrap();
    assert!(!report.is_intact());
    assert!(
        matches!(
            broken(&report).1,
            BreakReason::AnchorMismatch | BreakReason::CheckpointSignature(_)
        ),
        "{report:?}"
    );
    let only_hashes: Vec<AnchorLine> = site
        .anchors()
        .into_iter()
        .map(|l| AnchorLine::parse(&format!("seq={} hash={}", l.seq, l.hash)).unwrap())
        .collect();
    let report = replaced
        .verify_with(&VerifyOptions {
            every: 10,
            seconds: 0,
            anchors: only_hashes,
            ..VerifyOptions::default()
        })
        .unwrap();
    assert_eq!(broken(&report), (10, BreakReason::AnchorMismatch));
    // The server refuses to append to it.
    let refused = AuditLog::open_with(
        site.dir(),
        AuditOptions {
            keys: Some(CheckpointKeys::from_key_ring(&ring).unwrap()),
            anchor: Some(site.anchor()),
            ..AuditOptions::default()
        },
    )
    .unwrap_err();
    assert!(refused.to_string().contains("hash differs"), "{refused}");
}

#[test]
fn time_checkpoints_are_required_and_the_head_may_not_stay_unpinned() {
    let site = Site::new();
    let log = site.open(0, 60).unwrap();
    let now = Utc::now();
    // Records as a server writes them: recorded now.
    log.append(
        (1..=3)
            .map(|i| AuditRecord::new(Interaction::Read, Outcome::Success).patient(format!("p{i}")))
            .collect(),
    )
    .unwrap();
    let cp3 = log.checkpoint().unwrap().unwrap();
    assert_eq!((cp3.every, cp3.seconds), (Some(0), Some(60)));
    // Record 5 is recorded two minutes after checkpoint 3 was made: it must be a checkpoint.
    log.append(vec![
        AuditRecord::new(Interaction::Read, Outcome::Success).at(now + Duration::seconds(1)),
        AuditRecord::new(Interaction::Read, Outcome::Success).at(now + Duration::seconds(120)),
    ])
    .unwrap();
    let seqs: Vec<u64> = log.checkpoints().unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [3, 5]);
    assert!(log.verify().unwrap().is_intact());
    let c = attacker(site.dir());
    c.execute("DELETE FROM audit_checkpoints WHERE seq = 5", [])
        .unwrap();
    assert_eq!(
        broken(&log.verify().unwrap()),
        (
            4,
            BreakReason::CheckpointLate {
                from: 4,
                to: 5,
                at: 5,
                seconds: 60
            }
        )
    );
    // With every checkpoint gone the configured policy applies from the first record.
    c.execute("DELETE FROM audit_checkpoints", []).unwrap();
    assert_eq!(
        broken(&log.verify().unwrap()),
        (
            1,
            BreakReason::CheckpointLate {
                from: 1,
                to: 5,
                at: 5,
                seconds: 60
            }
        )
    );
}

#[test]
fn a_head_left_unpinned_too_long_is_named() {
    let site = Site::new();
    let log = site.open(0, 60).unwrap();
    let now = Utc::now();
    log.append(vec![AuditRecord::new(Interaction::Read, Outcome::Success)])
        .unwrap();
    let cp = log.checkpoint().unwrap().unwrap();
    log.append(vec![AuditRecord::new(Interaction::Read, Outcome::Success)])
        .unwrap();
    let at = |later: i64| {
        log.verify_with(&VerifyOptions {
            every: 0,
            seconds: 60,
            now: now + Duration::seconds(later),
            ..VerifyOptions::default()
        })
        .unwrap()
    };
    let soon = at(30);
    assert!(soon.is_intact(), "{:?}", soon.first_broken);
    assert_eq!(soon.unpinned, Some((2, 2)));
    assert_eq!(
        broken(&at(600)),
        (
            2,
            BreakReason::HeadUnpinned {
                from: 2,
                to: 2,
                since: cp.created.clone(),
                seconds: 60
            }
        )
    );
}

#[test]
fn a_due_checkpoint_is_made_by_the_timer_and_anchored() {
    let site = Site::new();
    let log = site.open(0, 2).unwrap();
    log.append(vec![AuditRecord::new(Interaction::Read, Outcome::Success)])
        .unwrap();
    log.checkpoint().unwrap();
    // Appended right after the checkpoint: not due yet, so the head is unpinned…
    log.append(vec![AuditRecord::new(Interaction::Read, Outcome::Success)])
        .unwrap();
    assert!(log.checkpoint_if_due().unwrap().is_none());
    // …until the interval has passed with no further append.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cp = log
        .checkpoint_if_due()
        .unwrap()
        .expect("due after the interval");
    assert_eq!(cp.seq, 2);
    assert!(
        log.checkpoint_if_due().unwrap().is_none(),
        "the head is pinned"
    );
    assert_eq!(site.anchors().last().map(|l| l.seq), Some(2));
}

#[test]
fn the_anchor_catches_up_and_survives_a_torn_line() {
    let site = Site::new();
    // Checkpoints made before an anchor was configured are anchored when it is.
    let log = AuditLog::open_with(
        site.dir(),
        AuditOptions {
            keys: Some(CheckpointKeys::from_key_ring(&site.ring(7)).unwrap()),
            checkpoint_every: 10,
            checkpoint_seconds: 0,
            ..AuditOptions::default()
        },
    )
    .unwrap();
    log.append((1..=25).map(record).collect()).unwrap();
    drop(log);
    let log = site.open(10, 0).unwrap();
    assert_eq!(
        site.anchors().iter().map(|l| l.seq).collect::<Vec<_>>(),
        [10, 20]
    );
    drop(log);
    // A write cut short by a crash: the next line starts on a line of its own.
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(site.anchor())
        .unwrap()
        .write_all(b"phip-audit-checkpoint seq=2")
        .unwrap();
    assert_eq!(read_anchor(&site.anchor()).unwrap().torn, 1);
    let log = site.open(10, 0).unwrap();
    log.append((26..=30).map(record).collect()).unwrap();
    let file = read_anchor(&site.anchor()).unwrap();
    assert_eq!(file.torn, 1, "the torn line stays, marked");
    assert_eq!(
        file.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [10, 20, 30]
    );
    assert!(site.verify_anchored(10, 0).is_intact());
}

#[test]
fn organisation_index_is_queried_verified_and_filled_for_older_logs() {
    let site = Site::new();
    let log = filled(&site);
    let q = |org: &str, count| AuditQuery {
        organization: Some(org.into()),
        count,
        ..AuditQuery::default()
    };
    let (evs, next) = log.search(&q("org-1", Some(4))).unwrap();
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["25", "23", "21", "19"]);
    let (evs, _) = log
        .search(&AuditQuery {
            cursor: next,
            ..q("Organization/org-1", Some(100))
        })
        .unwrap();
    assert_eq!(evs.len(), 13 - 4);
    for e in &evs {
        assert_eq!(
            phip_audit::event::requestor_organization(e),
            Some("Organization/org-1")
        );
    }
    // Moving a record out of an organisation's view is an index edit verify names.
    let c = attacker(site.dir());
    c.execute("DELETE FROM audit_org WHERE seq = 7", [])
        .unwrap();
    let (seq, reason) = broken(&log.verify().unwrap());
    assert_eq!(seq, 7);
    assert!(
        matches!(reason, BreakReason::IndexMismatch(_)),
        "{reason:?}"
    );
    // A log from before the index: it is filled from the bodies on open.
    c.execute_batch("DROP TABLE audit_org").unwrap();
    drop(c);
    drop(log);
    let log = site.open(10, 0).unwrap();
    assert!(log.verify().unwrap().is_intact());
    assert_eq!(log.search(&q("org-0", Some(100))).unwrap().0.len(), 12);
}
