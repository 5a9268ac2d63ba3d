//! The log: append, read, search, concurrency, verification after direct edits of the file,
//! checkpoint signatures, and the append-only triggers.

use chrono::{Duration, TimeZone, Utc};
use phip_audit::log::{chain_hash, checkpoint_payload, AUDIT_DB, GENESIS_HASH};
use phip_audit::{
    Agent, AuditError, AuditLog, AuditOptions, AuditQuery, AuditRecord, BreakReason,
    CheckpointKeys, Interaction, Outcome,
};
use phip_security::jws::{self, Algorithm, PrivateKey, SigningKey};
use phip_security::keys::{KeyRing, KeyWrap, MasterKey};
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;

fn ring(dir: &Path) -> KeyRing {
    KeyRing::open_with(dir, MasterKey::from_bytes([7; 32]), KeyWrap::default()).unwrap()
}

fn open(dir: &Path, every: u64) -> AuditLog {
    let keys = CheckpointKeys::from_key_ring(&ring(dir)).unwrap();
    AuditLog::open_with(
        dir,
        AuditOptions {
            keys: Some(keys),
            checkpoint_every: every,
            // These records carry fixed times in 2024: only count-based checkpoints.
            checkpoint_seconds: 0,
            read_only: false,
            ..AuditOptions::default()
        },
    )
    .unwrap()
}

fn record(i: usize) -> AuditRecord {
    AuditRecord::new(Interaction::Read, Outcome::Success)
        .at(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(i as i64))
        .agent(Agent {
            sub: Some(format!("user-{}", i % 3)),
            network_address: Some("10.0.0.1".into()),
            ..Agent::default()
        })
        .patient(format!("p{}", i % 5))
        .resource(format!("Observation/{i}"))
}

/// A log of `n` records with a checkpoint every 10.
fn filled(dir: &Path, n: usize) -> AuditLog {
    let log = open(dir, 10);
    let seqs = log.append((1..=n).map(record).collect()).unwrap();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    log
}

/// Open the file directly, as an attacker with file access would, and drop the triggers.
fn tamper(dir: &Path, sql: &str) {
    let c = Connection::open(dir.join(AUDIT_DB)).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete;
         DROP TRIGGER IF EXISTS audit_checkpoints_no_update;
         DROP TRIGGER IF EXISTS audit_checkpoints_no_delete;
         DROP TRIGGER IF EXISTS audit_patient_no_update; DROP TRIGGER IF EXISTS audit_patient_no_delete;",
    )
    .unwrap();
    c.execute_batch(sql).unwrap();
}

fn broken(log: &AuditLog) -> (u64, BreakReason) {
    let r = log.verify().unwrap();
    let b = r.first_broken.expect("verify must fail");
    (b.seq, b.reason)
}

#[test]
fn append_read_and_stored_bodies_are_valid_r4() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 3);
    let ev = log.read("2").unwrap().unwrap();
    assert_eq!(ev["id"], "2");
    assert_eq!(ev["entity"][0]["what"]["reference"], "Patient/p2");
    let ext = ev["extension"].as_array().unwrap();
    let (_, h1) = (
        1,
        log.read("1").unwrap().unwrap()["extension"][1]["valueString"].clone(),
    );
    assert_eq!(ext[0]["url"], "urn:phip:audit:prev-hash");
    assert_eq!(
        ext[0]["valueString"], h1,
        "record 2 carries record 1's hash"
    );
    assert_eq!(ext[1]["url"], "urn:phip:audit:hash");
    phip_fhir::validate::validate_resource(&ev).unwrap();
    assert!(log.read("4").unwrap().is_none());
    assert!(log.read("02").unwrap().is_none());
    assert!(log.read("x").unwrap().is_none());
    assert!(log.read("-1").unwrap().is_none());

    // The chain can be recomputed by hand from the stored bytes.
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    let (body, prev, hash): (String, String, String) = c
        .query_row(
            "SELECT body, prev_hash, hash FROM audit_log WHERE seq = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(prev, GENESIS_HASH);
    assert_eq!(hash, chain_hash(GENESIS_HASH, &body));
    assert_eq!(log.head().unwrap().unwrap().0, 3);
    assert!(log.append(Vec::new()).unwrap().is_empty());
}

#[test]
fn search_by_patient_agent_time_with_paging() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    // A record about two patients is found under both.
    let both = log
        .append_one(record(100).patient("Patient/p1").patient("Patient/zz"))
        .unwrap();

    let q = |patient: Option<&str>, agent: Option<&str>, count| AuditQuery {
        patient: patient.map(Into::into),
        agent: agent.map(Into::into),
        count,
        ..AuditQuery::default()
    };
    let (evs, next) = log.search(&q(Some("Patient/zz"), None, None)).unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["id"], both.to_string());
    assert!(next.is_none());

    // p1: records 1, 6, 11, 16, 21 and the two-patient one; newest first; bare id accepted.
    let (evs, next) = log.search(&q(Some("p1"), None, Some(4))).unwrap();
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["26", "21", "16", "11"]);
    let (evs, next2) = log
        .search(&AuditQuery {
            cursor: next,
            ..q(Some("Patient/p1"), None, Some(4))
        })
        .unwrap();
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["6", "1"]);
    assert!(next2.is_none());

    // Agent plus time window.
    let t0 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let (evs, _) = log
        .search(&AuditQuery {
            agent: Some("user-1".into()),
            since: Some(t0 + Duration::minutes(4)),
            until: Some(t0 + Duration::minutes(13)),
            ..AuditQuery::default()
        })
        .unwrap();
    let ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["13", "10", "7", "4"]);

    // Everything, default page size.
    let (evs, next) = log.search(&AuditQuery::default()).unwrap();
    assert_eq!(evs.len(), 26);
    assert!(next.is_none());

    assert!(matches!(
        log.search(&AuditQuery {
            cursor: Some("nope".into()),
            ..AuditQuery::default()
        }),
        Err(AuditError::InvalidCursor(_))
    ));
}

#[test]
fn concurrent_appenders_get_gapless_seqs_and_an_intact_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1000);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| log.append_one(record(t * 1000 + i)).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for t in threads {
        let seqs = t.join().unwrap();
        // Each thread's own records come back in the order it appended them.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1600).collect::<Vec<u64>>());
    let report = log.verify().unwrap();
    assert!(report.is_intact(), "{:?}", report.first_broken);
    assert_eq!(report.records, 1600);
    assert_eq!(report.checkpoints, 1, "one automatic checkpoint at 1000");
    assert!(report.signatures_checked);
}

#[test]
fn verify_passes_on_an_intact_log_and_checkpoints_verify() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    let cp = log.checkpoint().unwrap().unwrap();
    assert_eq!(cp.seq, 25);
    // Idempotent at the same head.
    assert_eq!(log.checkpoint().unwrap().unwrap(), cp);
    let cps = log.checkpoints().unwrap();
    assert_eq!(cps.iter().map(|c| c.seq).collect::<Vec<_>>(), [10, 20, 25]);
    let jwks = ring(dir.path()).jwks();
    for c in &cps {
        assert_eq!(
            (c.every, c.seconds),
            (Some(10), Some(0)),
            "the policy is signed"
        );
        let payload = c.payload();
        assert!(String::from_utf8_lossy(&payload).contains(r#""every":10,"seconds":0"#));
        jws::verify_detached(c.signature.as_deref().unwrap(), &payload, &jwks).unwrap();
    }
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.first_broken);
    assert_eq!((r.records, r.checkpoints), (25, 3));
    assert_eq!(r.head.unwrap().0, 25);

    // An empty log verifies too.
    let empty = tempfile::tempdir().unwrap();
    let r = open(empty.path(), 10).verify().unwrap();
    assert!(r.is_intact());
    assert_eq!(r.records, 0);
    assert!(open(empty.path(), 10).checkpoint().unwrap().is_none());
}

#[test]
fn read_only_open_verifies_while_the_writer_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 12);
    let ro = AuditLog::open_read_only(dir.path(), Some(&ring(dir.path()))).unwrap();
    assert!(ro.verify().unwrap().is_intact());
    assert!(matches!(
        ro.append_one(record(1)),
        Err(AuditError::ReadOnly)
    ));
    log.append_one(record(13)).unwrap();
    assert_eq!(ro.verify().unwrap().records, 13);
    assert_eq!(ro.read("13").unwrap().unwrap()["id"], "13");
    // With no server running (the writer closed, WAL files gone), as `phip audit verify` would.
    drop(log);
    drop(ro);
    let ro = AuditLog::open_read_only(dir.path(), Some(&ring(dir.path()))).unwrap();
    let r = ro.verify().unwrap();
    assert!(r.is_intact());
    assert_eq!(r.records, 13);
    let nowhere = tempfile::tempdir().unwrap();
    assert!(matches!(
        AuditLog::open_read_only(nowhere.path(), None),
        Err(AuditError::NotFound(_))
    ));
}

#[test]
fn triggers_forbid_update_and_delete_through_sql() {
    let dir = tempfile::tempdir().unwrap();
    let _log = filled(dir.path(), 12);
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    for sql in [
        "UPDATE audit_log SET body = '{}' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log",
        "UPDATE audit_patient SET patient = 'Patient/x'",
        "DELETE FROM audit_patient",
        "UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = c.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert!(_log.verify().unwrap().is_intact());
}

#[test]
fn altered_body_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    tamper(
        dir.path(),
        "UPDATE audit_log SET body = replace(body, 'Observation/17', 'Observation/99') WHERE seq = 17",
    );
    assert_eq!(broken(&log), (17, BreakReason::HashMismatch));
}

#[test]
fn altered_body_with_recomputed_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    let (body, prev): (String, String) = c
        .query_row(
            "SELECT body, prev_hash FROM audit_log WHERE seq = 17",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = body.replace("Observation/17", "Observation/99");
    let hash = chain_hash(&prev, &forged);
    c.execute_batch("DROP TRIGGER audit_log_no_update").unwrap();
    c.execute(
        "UPDATE audit_log SET body = ?1, hash = ?2 WHERE seq = 17",
        [&forged, &hash],
    )
    .unwrap();
    assert_eq!(broken(&log), (18, BreakReason::PrevHashMismatch));
}

#[test]
fn full_rewrite_after_a_record_is_caught_by_the_signed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_checkpoints_no_update")
        .unwrap();
    // Rewrite record 13 and re-chain everything after it, as an attacker without the key would.
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT seq, body FROM audit_log WHERE seq >= 13 ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut prev: String = c
        .query_row("SELECT hash FROM audit_log WHERE seq = 12", [], |r| {
            r.get(0)
        })
        .unwrap();
    for (seq, body) in rows {
        let mut v: Value = serde_json::from_str(&body).unwrap();
        v["extension"][0]["valueString"] = Value::String(prev.clone());
        if seq == 13 {
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
    // The checkpoint at 20 no longer matches.
    assert_eq!(
        broken(&log),
        (20, BreakReason::CheckpointMismatch { after: 10 })
    );
    // Also rewriting the checkpoint's hash leaves its signature invalid.
    let new20: String = c
        .query_row("SELECT hash FROM audit_log WHERE seq = 20", [], |r| {
            r.get(0)
        })
        .unwrap();
    c.execute(
        "UPDATE audit_checkpoints SET hash = ?1 WHERE seq = 20",
        [&new20],
    )
    .unwrap();
    let (seq, reason) = broken(&log);
    assert_eq!(seq, 20);
    assert!(
        matches!(reason, BreakReason::CheckpointSignature(_)),
        "{reason:?}"
    );
}

#[test]
fn deleted_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq = 17");
    assert_eq!(broken(&log), (17, BreakReason::Missing { next: 18 }));
    let r = log.verify().unwrap();
    assert_eq!(r.records, 24);
}

#[test]
fn deleted_first_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 5);
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq = 1");
    assert_eq!(broken(&log), (1, BreakReason::Missing { next: 2 }));
}

#[test]
fn deleted_and_renumbered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    // Close the gap by moving the later records down one seq.
    tamper(
        dir.path(),
        "DELETE FROM audit_log WHERE seq = 17; UPDATE audit_log SET seq = seq - 1 WHERE seq > 17;",
    );
    let (seq, reason) = broken(&log);
    assert_eq!(seq, 17);
    assert_eq!(reason, BreakReason::IdMismatch { found: "18".into() });
}

#[test]
fn swapped_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    tamper(
        dir.path(),
        "CREATE TEMP TABLE s AS SELECT seq, body, prev_hash, hash FROM audit_log WHERE seq IN (12, 19);
         UPDATE audit_log SET body = (SELECT body FROM s WHERE s.seq = 31 - audit_log.seq),
                              prev_hash = (SELECT prev_hash FROM s WHERE s.seq = 31 - audit_log.seq),
                              hash = (SELECT hash FROM s WHERE s.seq = 31 - audit_log.seq)
         WHERE seq IN (12, 19);",
    );
    assert_eq!(
        broken(&log),
        (12, BreakReason::IdMismatch { found: "19".into() })
    );
    // Swapping only the bodies is caught the same way.
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    tamper(
        dir.path(),
        "CREATE TEMP TABLE s AS SELECT seq, body FROM audit_log WHERE seq IN (12, 19);
         UPDATE audit_log SET body = (SELECT body FROM s WHERE s.seq = 31 - audit_log.seq)
         WHERE seq IN (12, 19);",
    );
    assert_eq!(broken(&log).0, 12);
}

#[test]
fn removed_tail_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    log.checkpoint().unwrap();
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq >= 22");
    assert_eq!(
        broken(&log),
        (
            22,
            BreakReason::TailMissing {
                checkpoint: 25,
                last: 21
            }
        )
    );
    // Cutting back beyond an automatic checkpoint is caught as well.
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq >= 15");
    assert_eq!(
        broken(&log),
        (
            15,
            BreakReason::TailMissing {
                checkpoint: 20,
                last: 14
            }
        )
    );
}

#[test]
fn edited_query_index_is_named() {
    fn index_break(sql: &str) -> (u64, BreakReason) {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 25);
        tamper(dir.path(), sql);
        broken(&log)
    }
    // Hiding record 7 from the resident's `AuditEvent?patient=Patient/p2`.
    let (seq, reason) = index_break("DELETE FROM audit_patient WHERE seq = 7");
    assert_eq!(seq, 7);
    assert!(
        matches!(reason, BreakReason::IndexMismatch(_)),
        "{reason:?}"
    );
    let (seq, reason) = index_break("UPDATE audit_patient SET patient = 'Patient/x' WHERE seq = 8");
    assert_eq!(seq, 8);
    assert!(
        matches!(reason, BreakReason::IndexMismatch(_)),
        "{reason:?}"
    );
    let (seq, _) = index_break("INSERT INTO audit_patient VALUES ('Patient/zz', 9)");
    assert_eq!(seq, 9);
    let (seq, _) = index_break("INSERT INTO audit_patient VALUES ('Patient/zz', 99)");
    assert_eq!(seq, 99);
    let (seq, _) = index_break("UPDATE audit_log SET agent = 'someone-else' WHERE seq = 11");
    assert_eq!(seq, 11);
    let (seq, _) = index_break("UPDATE audit_log SET patient = NULL WHERE seq = 12");
    assert_eq!(seq, 12);
    let (seq, _) = index_break("UPDATE audit_log SET recorded = '1999-01-01' WHERE seq = 13");
    assert_eq!(seq, 13);
}

#[test]
fn forged_checkpoint_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    let (hash, kid): (String, String) = c
        .query_row(
            "SELECT l.hash, c.kid FROM audit_log l, audit_checkpoints c WHERE l.seq = 24 AND c.seq = 10",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // Signed with a key that is not in the ring, but claiming the ring's kid.
    let rogue = SigningKey::new(
        kid.clone(),
        PrivateKey::generate(Algorithm::Sm2Sm3).unwrap(),
    );
    let created = "2024-01-01T00:00:00.000Z";
    let sig = jws::sign_detached(
        &rogue,
        Some("phip-audit-checkpoint"),
        &checkpoint_payload(24, &hash, created),
    );
    c.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created, kid, signature) VALUES (24, ?1, ?2, ?3, ?4)",
        [&hash, created, &kid, &sig],
    )
    .unwrap();
    let (seq, reason) = broken(&log);
    assert_eq!(seq, 24);
    assert!(
        matches!(reason, BreakReason::CheckpointSignature(_)),
        "{reason:?}"
    );

    // An unsigned checkpoint is not accepted either when keys are configured.
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 25);
    let c = Connection::open(dir.path().join(AUDIT_DB)).unwrap();
    c.execute(
        "INSERT INTO audit_checkpoints (seq, hash, created) SELECT seq, hash, 'x' FROM audit_log WHERE seq = 24",
        [],
    )
    .unwrap();
    assert_eq!(broken(&log), (24, BreakReason::CheckpointUnsigned));

    // Without keys, signatures are not checked (and the report says so).
    let ro = AuditLog::open_read_only(dir.path(), None).unwrap();
    let r = ro.verify().unwrap();
    assert!(!r.signatures_checked);
    assert!(r.is_intact());
}

#[test]
fn checkpoints_signed_by_a_retired_key_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let _log = filled(dir.path(), 10);
    drop(_log);
    let mut ring = ring(dir.path());
    ring.rotate(Algorithm::Sm2Sm3).unwrap();
    let log = AuditLog::open(dir.path(), Some(&ring)).unwrap();
    log.append((11..=15).map(record).collect()).unwrap();
    log.checkpoint().unwrap();
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{:?}", r.first_broken);
    assert_eq!(r.checkpoints, 2);
}

/// `cargo test -p phip-audit --release -- --ignored --nocapture throughput`
#[test]
#[ignore]
fn throughput() {
    let n = 2000usize;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1000);
    let t = std::time::Instant::now();
    for i in 0..n {
        log.append_one(record(i)).unwrap();
    }
    let single = n as f64 / t.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1000);
    let per = n / 8 * 2;
    let t = std::time::Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|k| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    log.append_one(record(k * 100_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let eight = (per * 8) as f64 / t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let batch = log.append((0..n).map(record).collect()).unwrap();
    let batched = batch.len() as f64 / t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let r = log.verify().unwrap();
    assert!(r.is_intact());
    let verify = r.records as f64 / t.elapsed().as_secs_f64();
    println!(
        "audit append: {single:.0} records/s single-threaded (one fsync each), \
         {eight:.0} records/s with 8 threads (group commit), \
         {batched:.0} records/s in one {n}-record batch; verify {verify:.0} records/s"
    );
}
