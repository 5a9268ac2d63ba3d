//! Fault tests of the real `phip` binary: `kill -9` in the middle of concurrent transactions
//! and bulk ingest (SQLite and PostgreSQL), a full disk (SQLite's data directory, or
//! PostgreSQL's data volume, on a size-limited tmpfs), and PostgreSQL restarted under load.
//!
//! The PostgreSQL tests skip with a notice when PostgreSQL is not installed (and fail instead
//! under `PHIP_REQUIRE_POSTGRES=1`); the disk-full test skips when a tmpfs cannot be mounted
//! (not root, or a container without the capability) unless `PHIP_REQUIRE_FAULTS=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phip_testkit::incompressible;
use serde_json::{json, Value};

/// A `phip serve` child process with authentication off on a free loopback port.
struct Server {
    child: Child,
    base: String,
    root: String,
}

impl Server {
    fn start(data_dir: &Path, database_url: Option<&str>) -> Server {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_phip"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--auth", "off"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command.spawn().expect("spawn phip serve");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}/fhir"),
            root: format!("http://127.0.0.1:{port}"),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let client = reqwest::blocking::Client::new();
        for _ in 0..600 {
            if let Ok(response) = client.get(format!("{}/health", self.root)).send() {
                if response.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("phip serve did not come up at {}", self.root);
    }

    /// `kill -9`: no shutdown handler runs.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A transaction of `size` Patients with ids chosen here, all tagged with the batch name.
fn batch(name: &str, size: usize) -> (Value, Vec<String>) {
    let ids: Vec<String> = (0..size).map(|i| format!("{name}-{i}")).collect();
    let entries: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "resource": {
                    "resourceType": "Patient", "id": id,
                    // The batch is a tag, not a shared identifier: a shared identifier would
                    // make the patient index link the whole batch into one person, and the
                    // test is about crashes, not about a 500-record person's cost.
                    "meta": {"tag": [{"system": "urn:phip:fault", "code": name}]},
                    "identifier": [{"system": "urn:phip:fault:patient", "value": id}],
                    "name": [{"family": format!("Fault-{name}"), "given": [id]}]
                },
                "request": {"method": "PUT", "url": format!("Patient/{id}")}
            })
        })
        .collect();
    (
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        ids,
    )
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> reqwest::Result<u16> {
    post_reply(client, url, body).map(|(status, _)| status)
}

/// Posts a bundle; the status and the body's text.
fn post_reply(
    client: &reqwest::blocking::Client,
    url: &str,
    body: &Value,
) -> reqwest::Result<(u16, String)> {
    let response = client
        .post(url)
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(body.to_string())
        .send()?;
    let status = response.status().as_u16();
    Ok((status, response.text()?))
}

/// How many Patients of a batch the search index finds.
fn indexed(client: &reqwest::blocking::Client, base: &str, name: &str) -> u64 {
    let reply: Value = client
        .get(format!(
            "{base}/Patient?_tag=urn:phip:fault|{name}&_summary=count"
        ))
        .send()
        .expect("search")
        .json()
        .expect("json");
    reply["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("search for {name} failed: {reply}"))
}

/// Several clients write transactions (small ones and 500-entry ingest bundles) as fast as
/// the server takes them; the server is killed with SIGKILL mid-stream and restarted. Every
/// acknowledged transaction must be complete afterwards, every other one absent or complete
/// (never partial), and the search index must agree with the resources.
fn kill_nine_during_writes(data_dir: &Path, database_url: Option<&str>) {
    let server = Server::start(data_dir, database_url);
    let base = server.base.clone();
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let attempted = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let base = base.clone();
        let acknowledged = acknowledged.clone();
        let attempted = attempted.clone();
        writers.push(std::thread::spawn(move || {
            let client = client();
            for n in 0.. {
                // Every fourth transaction of writer 0 is a bulk-ingest-sized bundle.
                let size = if writer == 0 && n % 4 == 3 { 500 } else { 10 };
                let name = format!("w{writer}n{n}");
                let (bundle, _) = batch(&name, size);
                attempted.lock().expect("lock").push((name.clone(), size));
                // A 503 (the patient index's writer lock or the database busy) says "retry":
                // the PUTs make the retry idempotent, as a real client's would be.
                loop {
                    match post_reply(&client, &base, &bundle) {
                        Ok((200, _)) => {
                            acknowledged.lock().expect("lock").push((name, size));
                            break;
                        }
                        Ok((503, _)) => std::thread::sleep(Duration::from_millis(50)),
                        Ok((status, body)) => {
                            panic!("transaction {name} answered {status} before the crash: {body}")
                        }
                        // A slow answer on a loaded machine is not a crash: the PUTs make the
                        // retry idempotent.
                        Err(error) if error.is_timeout() => continue,
                        // The server died under us.
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    // Kill once a fair amount has been acknowledged (and writes are certainly in flight).
    let waiting = Instant::now();
    while acknowledged.lock().expect("lock").len() < 60 {
        assert!(
            writers.iter().any(|w| !w.is_finished()),
            "every writer stopped before the crash"
        );
        assert!(
            waiting.elapsed() < Duration::from_secs(300),
            "too few transactions acknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    for writer in writers {
        writer.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let attempted = attempted.lock().expect("lock").clone();

    let server = Server::start(data_dir, database_url);
    let client = client();
    let acked: BTreeSet<&str> = acknowledged.iter().map(|(n, _)| n.as_str()).collect();
    for (name, size) in &attempted {
        let found = indexed(&client, &server.base, name);
        if acked.contains(name.as_str()) {
            assert_eq!(
                found, *size as u64,
                "acknowledged transaction {name} lost writes"
            );
        } else {
            assert!(
                found == 0 || found == *size as u64,
                "transaction {name} is partial after the crash: {found} of {size}"
            );
        }
    }
    // Reads agree with the index: every acknowledged resource is readable.
    for (name, size) in acknowledged.iter().take(20) {
        for i in [0, size - 1] {
            let status = client
                .get(format!("{}/Patient/{name}-{i}", server.base))
                .send()
                .expect("read")
                .status();
            assert_eq!(status.as_u16(), 200, "Patient/{name}-{i}");
        }
    }
    // And the store takes writes again.
    let (bundle, _) = batch("after-restart", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
}

#[test]
fn kill_nine_during_transactions_and_ingest_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    kill_nine_during_writes(dir.path(), None);
}

#[test]
fn kill_nine_during_transactions_and_ingest_on_postgres() {
    let Some(cluster) = phip_testkit::PgCluster::shared() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = cluster.fresh_database();
    kill_nine_during_writes(dir.path(), Some(&url));
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tmpfs")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// With the data directory on a full disk: writes are refused with a 507 OperationOutcome
/// (never a hang, a crash or a 500), reads are still served — and still recorded, in the space
/// the audit log set aside for this (`phip_audit::reserve`) — nothing acknowledged is lost,
/// and once space is freed the server takes writes again without a restart.
#[test]
fn a_full_disk_refuses_writes_cleanly_and_keeps_serving_reads() {
    let Some(disk) = Tmpfs::mount("48m") else {
        assert!(
            std::env::var("PHIP_REQUIRE_FAULTS").as_deref() != Ok("1"),
            "cannot mount a tmpfs, and PHIP_REQUIRE_FAULTS=1"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root and CAP_SYS_ADMIN)");
        return;
    };
    let data_dir = disk.path().join("data");
    let server = Server::start(&data_dir, None);
    let client = client();
    // Something to read back later.
    let (bundle, _) = batch("before-full", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
    // A ballast file takes most of the space; writes then fill the rest.
    let ballast = disk.path().join("ballast");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=36"])
        .arg(format!("of={}", ballast.display()))
        .stderr(Stdio::null())
        .status();
    let note = "x".repeat(64 * 1024);
    let (created, _) = fill_until_refused(&client, &server.base, |_| note.clone());
    // While the disk is full, reads are served, many of them, each one recorded.
    for _ in 0..50 {
        let read = client
            .get(format!("{}/Patient/before-full-3", server.base))
            .send()
            .expect("read");
        let read_status = read.status().as_u16();
        let read_body: Value = read.json().unwrap_or(Value::Null);
        assert_eq!(read_status, 200, "read on a full disk: {read_body}");
    }
    // Writes stay refused, cleanly, while the disk is full.
    let (bundle, _) = batch("during-full", 2);
    let during = post(&client, &server.base, &bundle).expect("post during full");
    assert_eq!(during, 507);
    // Space back: reads and writes resume without a restart, and nothing acknowledged is lost.
    std::fs::remove_file(&ballast).expect("remove ballast");
    assert_eq!(indexed(&client, &server.base, "before-full"), 10);
    for location in created.iter().step_by(10) {
        let status = client.get(location).send().expect("read").status();
        assert_eq!(status.as_u16(), 200, "{location}");
    }
    let (bundle, _) = batch("after-full", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
    // The reads made while the disk was full are in the audit trail.
    let audited: Value = client
        .get(format!(
            "{}/AuditEvent?entity=Patient/before-full-3&_count=100",
            server.base
        ))
        .send()
        .expect("audit search")
        .json()
        .expect("audit bundle");
    let reads = audited["entry"].as_array().map_or(0, Vec::len);
    assert!(reads >= 50, "only {reads} audited reads: {audited}");
    drop(server);
}

/// Creates Patients whose `name.text` is `note(n)` until the server refuses one; checks the
/// refusal is a 507 OperationOutcome after at least one success, and returns the locations
/// created and the refusal's body.
fn fill_until_refused(
    client: &reqwest::blocking::Client,
    base: &str,
    note: impl Fn(u64) -> String,
) -> (Vec<String>, Value) {
    let mut created = Vec::new();
    for n in 0..2000u64 {
        let patient =
            json!({"resourceType": "Patient", "name": [{"family": "Full", "text": note(n)}]});
        let response = client
            .post(format!("{base}/Patient"))
            .header("content-type", "application/fhir+json")
            .body(patient.to_string())
            .send()
            .expect("the server answers even when the disk is full");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = response.json().unwrap_or(Value::Null);
        if status == 201 {
            created.extend(location);
            continue;
        }
        assert!(n > 0, "nothing could be written at all: {status} {body}");
        assert_eq!(
            status, 507,
            "a full disk should be 507 Insufficient Storage, got {status}: {body}"
        );
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
        return (created, body);
    }
    panic!("the disk never filled");
}

/// PostgreSQL's data volume fills up (the database's tablespace on a small tmpfs; WAL on its
/// own volume, as a production server keeps it): writes are refused with a 507 OperationOutcome
/// — never a hang, a crash or a 500 — reads are still served, nothing acknowledged is lost,
/// and once space is freed writes are taken again without restarting phip or PostgreSQL.
#[test]
fn a_full_postgres_data_volume_refuses_writes_cleanly_and_keeps_serving_reads() {
    // Declared first, dropped last: PostgreSQL must stop before its tablespace is unmounted.
    let Some(disk) = Tmpfs::mount("40m") else {
        assert!(
            std::env::var("PHIP_REQUIRE_FAULTS").as_deref() != Ok("1"),
            "cannot mount a tmpfs, and PHIP_REQUIRE_FAULTS=1"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root and CAP_SYS_ADMIN)");
        return;
    };
    let Some(cluster) = phip_testkit::PgCluster::start_owned() else {
        return;
    };
    let location = disk.path().join("tablespace");
    std::fs::create_dir(&location).expect("tablespace directory");
    let url = cluster
        .fresh_database_in(&location)
        .expect("database on the tmpfs");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(&url));
    let client = client();
    let (bundle, _) = batch("before-full", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
    let ballast = disk.path().join("ballast");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=24"])
        .arg(format!("of={}", ballast.display()))
        .stderr(Stdio::null())
        .status();
    let (created, _) = fill_until_refused(&client, &server.base, |n| incompressible(64 * 1024, n));
    for _ in 0..20 {
        let read = client
            .get(format!("{}/Patient/before-full-3", server.base))
            .send()
            .expect("read");
        let read_status = read.status().as_u16();
        let read_body: Value = read.json().unwrap_or(Value::Null);
        assert_eq!(read_status, 200, "read on a full disk: {read_body}");
    }
    assert_eq!(indexed(&client, &server.base, "before-full"), 10);
    // Large entries, so that they need new space (small ones may fit in pages' free space).
    let (mut bundle, _) = batch("during-full", 5);
    if let Some(entries) = bundle["entry"].as_array_mut() {
        for (n, entry) in entries.iter_mut().enumerate() {
            entry["resource"]["name"][0]["text"] =
                json!(incompressible(64 * 1024, 10_000 + n as u64));
        }
    }
    let (during, text) = post_reply(&client, &server.base, &bundle).expect("post during full");
    assert_eq!(during, 507, "{text}");
    assert_eq!(
        indexed(&client, &server.base, "during-full"),
        0,
        "a refused transaction left entries"
    );
    // Space back: writes resume without a restart, and nothing acknowledged is lost.
    std::fs::remove_file(&ballast).expect("remove ballast");
    for location in &created {
        let status = client.get(location).send().expect("read").status();
        assert_eq!(status.as_u16(), 200, "{location}");
    }
    let (bundle, _) = batch("after-full", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
    assert_eq!(indexed(&client, &server.base, "after-full"), 10);
    drop(server);
    drop(cluster);
}

/// PostgreSQL stopped and started again under a steady client load: while it is down, phip
/// answers quickly with 503 OperationOutcomes (no hangs, no 500s), and afterwards it serves
/// again without being restarted.
#[test]
fn postgres_restarted_under_load_fails_fast_and_recovers() {
    let Some(cluster) = phip_testkit::PgCluster::start_owned() else {
        return;
    };
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), Some(&url));
    let client = client();
    let (bundle, _) = batch("before-restart", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);

    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observations = Arc::new(Mutex::new(Vec::<(bool, u16, Duration, String)>::new()));
    let mut loaders = Vec::new();
    for worker in 0..4 {
        let base = server.base.clone();
        let down = down.clone();
        let stop = stop.clone();
        let observations = observations.clone();
        loaders.push(std::thread::spawn(move || {
            let client = self::client();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let was_down = down.load(std::sync::atomic::Ordering::SeqCst);
                let started = Instant::now();
                let response = if worker % 2 == 0 {
                    client
                        .get(format!("{base}/Patient/before-restart-1"))
                        .send()
                } else {
                    let (bundle, _) = batch(&format!("load{worker}-{n}"), 2);
                    client
                        .post(&base)
                        .header("content-type", "application/fhir+json")
                        .body(bundle.to_string())
                        .send()
                };
                let (status, body) = match response {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (status, r.text().unwrap_or_default())
                    }
                    Err(e) => (0, e.to_string()),
                };
                observations.lock().expect("lock").push((
                    was_down,
                    status,
                    started.elapsed(),
                    body,
                ));
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    cluster.stop_server().expect("stop PostgreSQL");
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    cluster.start_server().expect("start PostgreSQL");
    // phip recovers on its own: a read succeeds within a bounded number of attempts.
    let mut recovered = false;
    for _ in 0..100 {
        let status = client
            .get(format!("{}/Patient/before-restart-1", server.base))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for loader in loaders {
        loader.join().expect("loader");
    }
    assert!(recovered, "phip did not recover after PostgreSQL came back");
    let observations = observations.lock().expect("lock").clone();
    let during: Vec<_> = observations.iter().filter(|o| o.0).collect();
    assert!(
        !during.is_empty(),
        "no request was made while PostgreSQL was down"
    );
    for (_, status, took, body) in &during {
        // A request either raced the shutdown and succeeded, or failed as unavailable.
        assert!(
            matches!(status, 200 | 503),
            "while PostgreSQL was down phip answered {status}: {body}"
        );
        if *status == 503 {
            assert!(body.contains("OperationOutcome"), "{body}");
        }
        // Failing fast: the pool's connect attempt is refused at once; the bound is generous
        // for a loaded machine, it only catches hangs.
        assert!(
            *took < Duration::from_secs(10),
            "a request hung for {took:?} while PostgreSQL was down"
        );
    }
    // After recovery, writes work again too.
    let (bundle, _) = batch("after-restart", 10);
    assert_eq!(post(&client, &server.base, &bundle).expect("post"), 200);
    assert_eq!(indexed(&client, &server.base, "after-restart"), 10);
}
