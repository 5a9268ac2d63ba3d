//! Issue #16, item 8, as an operator meets it: `phip serve` with `[audit] anchor` on another
//! file system, `phip audit head`, and `phip audit verify` against the anchor (or a kept line)
//! after each way of cutting the trail: rewriting a record and deleting the checkpoints,
//! wiping the log, cutting its tail, and replacing it with a fresh log signed by a new key.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use phip_audit::log::chain_hash;
use rusqlite::Connection;
use serde_json::{json, Value};

const PHIP: &str = env!("CARGO_BIN_EXE_phip");

fn phip(args: &[&str]) -> Output {
    Command::new(PHIP).args(args).output().expect("run phip")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Runs `phip serve --config`, sends `requests` audited requests, and stops it with SIGTERM
/// (which writes the closing checkpoint).
fn serve_and_stop(config: &Path, requests: usize) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(PHIP)
        .args(["serve", "--config", s(config), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn phip serve");
    let root = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(format!("{root}/health"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "phip serve did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = phip(&["token", "--config", s(config), "--scope", "system/*.cruds"]);
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let created: Value = client
        .post(format!("{root}/fhir/Patient"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Gao"}]}).to_string())
        .send()
        .expect("create")
        .json()
        .expect("json");
    let id = created["id"].as_str().expect("id");
    for _ in 1..requests {
        let read = client
            .get(format!("{root}/fhir/Patient/{id}"))
            .bearer_auth(&token)
            .send()
            .expect("read");
        assert!(read.status().is_success());
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "phip serve exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "phip did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the files of the data directory that hold the trail and its keys.
fn copy_trail(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in [
        "audit.db",
        "audit.db-wal",
        "audit.db-shm",
        "keys.json",
        "master.key",
    ] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).expect("copy");
        }
    }
}

/// `audit.db` opened by an attacker, with the append-only triggers dropped.
fn attacker(dir: &Path) -> Connection {
    let c = Connection::open(dir.join("audit.db")).expect("open audit.db");
    let triggers: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .expect("triggers");
    for t in triggers {
        c.execute_batch(&format!("DROP TRIGGER \"{t}\""))
            .expect("drop trigger");
    }
    c
}

/// Record 3 now says the access failed; every later record is re-chained; checkpoints gone.
fn rewrite_rehash_delete_checkpoints(dir: &Path) {
    let c = attacker(dir);
    let rows: Vec<(i64, String)> = c
        .prepare("SELECT seq, body FROM audit_log WHERE seq >= 3 ORDER BY seq")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("rows");
    let mut prev: String = c
        .query_row("SELECT hash FROM audit_log WHERE seq = 2", [], |r| r.get(0))
        .expect("hash 2");
    for (seq, body) in rows {
        let mut v: Value = serde_json::from_str(&body).expect("json");
        v["extension"][0]["valueString"] = Value::String(prev.clone());
        if seq == 3 {
            v["outcome"] = Value::String("4".into());
        }
        let body = v.to_string();
        let hash = chain_hash(&prev, &body);
        c.execute(
            "UPDATE audit_log SET body = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![body, prev, hash, seq],
        )
        .expect("rewrite");
        prev = hash;
    }
    c.execute("DELETE FROM audit_checkpoints", [])
        .expect("delete checkpoints");
}

fn wipe(dir: &Path) {
    attacker(dir)
        .execute_batch(
            "DELETE FROM audit_log; DELETE FROM audit_patient; DELETE FROM audit_org;
             DELETE FROM audit_checkpoints;",
        )
        .expect("wipe");
}

fn cut_tail(dir: &Path) {
    attacker(dir)
        .execute_batch(
            "DELETE FROM audit_log WHERE seq > 6; DELETE FROM audit_patient WHERE seq > 6;
             DELETE FROM audit_org WHERE seq > 6; DELETE FROM audit_checkpoints WHERE seq > 6;",
        )
        .expect("cut");
}

/// A fresh trail, internally valid and signed with a new key ring, put in place of the old
/// one (key ring and master key included).
fn replace(dir: &Path) {
    let forge = tempfile::tempdir().expect("tempdir");
    let ring = phip_security::keys::KeyRing::open(forge.path()).expect("ring");
    let log = phip_audit::AuditLog::open(forge.path(), Some(&ring)).expect("log");
    for i in 0..40 {
        log.append_one(
            phip_audit::AuditRecord::new(
                phip_audit::Interaction::Read,
                phip_audit::Outcome::Success,
            )
            .resource(format!("Patient/p{i}")),
        )
        .expect("append");
    }
    log.checkpoint().expect("checkpoint");
    assert!(log.verify().expect("verify").is_intact());
    drop(log);
    for name in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    copy_trail(forge.path(), dir);
}

#[test]
fn audit_verify_with_the_anchor_detects_every_cut() {
    let data = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let anchor: PathBuf = elsewhere.path().join("phip-audit.anchor");
    let config = elsewhere.path().join("phip.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[audit]\nanchor = {:?}\ncheckpoint_every = 5\n",
            s(data.path()),
            s(&anchor)
        ),
    )
    .expect("config");
    serve_and_stop(&config, 12);

    // Every checkpoint is in the anchor file, the closing one last; `phip audit head` prints
    // that same line.
    let lines: Vec<String> = std::fs::read_to_string(&anchor)
        .expect("anchor written")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    let head = phip(&["audit", "head", "--config", s(&config)]);
    assert!(head.status.success(), "{}", text(&head));
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(Some(&head), lines.last());
    assert!(head.starts_with("phip-audit-checkpoint seq="), "{head}");

    let verify = phip(&["audit", "verify", "--config", s(&config)]);
    let out = text(&verify);
    assert!(verify.status.success(), "{out}");
    assert!(out.contains("audit trail intact"), "{out}");
    assert!(out.contains("anchored: records 1–"), "{out}");
    assert!(out.contains("against the anchor's keys"), "{out}");

    type Attack = fn(&Path);
    let attacks: [(&str, Attack, &str); 4] = [
        (
            "rewrite a record, rehash, delete the checkpoints",
            rewrite_rehash_delete_checkpoints,
            "",
        ),
        ("wipe the log", wipe, "the anchor holds checkpoint"),
        ("cut the tail", cut_tail, "the anchor holds checkpoint"),
        (
            "replace the log with one signed by a new key",
            replace,
            "replaced by another log",
        ),
    ];
    for (what, attack, says) in attacks {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_trail(data.path(), copy.path());
        attack(copy.path());
        for how in [
            vec!["--anchor", s(&anchor)],
            vec!["--expect", head.as_str()],
        ] {
            let mut args = vec!["audit", "verify", "--data-dir", s(copy.path())];
            args.extend(how.iter().copied());
            let verify = phip(&args);
            let out = text(&verify);
            assert_eq!(verify.status.code(), Some(1), "{what} {how:?}: {out}");
            assert!(
                out.contains("audit trail BROKEN at record #"),
                "{what} {how:?}: {out}"
            );
            if how[0] == "--anchor" {
                assert!(out.contains(says), "{what}: {out}");
            }
        }
    }
}
