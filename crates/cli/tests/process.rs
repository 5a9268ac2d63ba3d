//! The `phip` binary as an operator runs it: `serve` with flags, environment and a config file,
//! graceful shutdown on SIGTERM, `import` of Synthea NDJSON, and durability of acknowledged
//! writes across `kill -9`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PHIP: &str = env!("CARGO_BIN_EXE_phip");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `phip serve` child process, killed on drop.
struct Server {
    child: Child,
    base: String,
    root: String,
}

/// Mints a full-access token for the data directory with `phip token`.
fn operator_token(data_dir: &Path) -> String {
    let output = Command::new(PHIP)
        .args(["token", "--scope", "system/*.cruds", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("phip token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A client carrying the data directory's operator token.
fn client_for(data_dir: &Path) -> reqwest::BlockingClient {
    reqwest::blocking_client_with(Some(operator_token(data_dir)))
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(PHIP);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(&listen)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("spawn phip serve");
        let server = Self {
            child,
            base: format!("http://{listen}/fhir"),
            root: format!("http://{listen}"),
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking_client();
        while Instant::now() < deadline {
            if let Ok(response) = client.get(format!("{}/health", self.root)).send() {
                if response.status().is_success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("phip serve did not become healthy");
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "phip did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP client built on reqwest's async client, to keep dependencies small.
mod reqwest {
    pub use ::reqwest::*;

    pub struct BlockingClient {
        token: Option<String>,
        runtime: tokio::runtime::Runtime,
        client: ::reqwest::Client,
    }

    pub struct Request<'a> {
        client: &'a BlockingClient,
        builder: ::reqwest::RequestBuilder,
    }

    pub struct Reply {
        status: StatusCode,
        body: Vec<u8>,
    }

    impl Reply {
        pub fn status(&self) -> StatusCode {
            self.status
        }
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    pub fn blocking_client() -> BlockingClient {
        blocking_client_with(None)
    }

    pub fn blocking_client_with(token: Option<String>) -> BlockingClient {
        BlockingClient {
            token,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: ::reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    impl BlockingClient {
        fn authorized(&self, builder: ::reqwest::RequestBuilder) -> ::reqwest::RequestBuilder {
            match &self.token {
                Some(token) => builder.bearer_auth(token),
                None => builder,
            }
        }

        pub fn get(&self, url: String) -> Request<'_> {
            Request {
                client: self,
                builder: self.authorized(self.client.get(url)),
            }
        }
        pub fn post(&self, url: String, body: &serde_json::Value) -> Request<'_> {
            Request {
                client: self,
                builder: self
                    .authorized(self.client.post(url))
                    .header("content-type", "application/fhir+json")
                    .body(serde_json::to_vec(body).expect("json")),
            }
        }
    }

    impl Request<'_> {
        pub fn send(self) -> Result<Reply> {
            let builder = self.builder;
            self.client.runtime.block_on(async move {
                let response = builder.send().await?;
                let status = response.status();
                let body = response.bytes().await?.to_vec();
                Ok(Reply { status, body })
            })
        }
    }
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &[]);
    let anonymous = reqwest::blocking_client();
    let refused = anonymous
        .get(format!("{}/Patient", server.base))
        .send()
        .expect("request");
    assert_eq!(refused.status().as_u16(), 401, "closed by default");
    let client = client_for(dir.path());
    let created = client
        .post(
            format!("{}/Patient", server.base),
            &json!({"resourceType": "Patient", "name": [{"family": "Tang"}]}),
        )
        .send()
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let status = server.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(
        dir.path().join("phip.db").exists(),
        "data in the data directory"
    );

    // Restarted on the same data directory, the resource is still there.
    let server = Server::start(dir.path(), &[]);
    let read = client
        .get(format!("{}/Patient/{id}", server.base))
        .send()
        .expect("read");
    assert_eq!(read.status().as_u16(), 200);
    assert_eq!(read.json()["name"][0]["family"], "Tang");
}

#[test]
fn configuration_file_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("from-config");
    let port = free_port();
    let config = dir.path().join("phip.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"https://hic.example.cn/fhir\"\n", data.display().to_string()),
    )
    .expect("write config");
    let mut child = Command::new(PHIP)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::blocking_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ok = false;
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/fhir/metadata"))
            .send()
        {
            let body = r.json();
            assert_eq!(
                body["implementation"]["url"], "https://hic.example.cn/fhir",
                "base_url from the file"
            );
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "server from config file answered");
    assert!(data.join("phip.db").exists(), "data_dir from the file");

    // An unknown key is refused with a clear message rather than ignored.
    std::fs::write(&config, "data_dirr = \"x\"\n").expect("write");
    let output = Command::new(PHIP)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("data_dirr"));

    // Environment variables work like flags.
    let env_dir = dir.path().join("from-env");
    let output = Command::new(PHIP)
        .arg("migrate")
        .env("PHIP_DATA_DIR", &env_dir)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(env_dir.join("phip.db").exists());
}

#[test]
fn authentication_can_be_turned_off_for_development_only_explicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--auth", "off"]);
    let anonymous = reqwest::blocking_client();
    let reply = anonymous
        .post(
            format!("{}/Patient", server.base),
            &json!({"resourceType": "Patient"}),
        )
        .send()
        .expect("create");
    assert_eq!(reply.status().as_u16(), 201);
    let output = Command::new(PHIP)
        .args(["serve", "--auth", "maybe", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!output.status.success(), "an unknown auth mode is refused");
}

#[test]
fn import_synthea_ndjson() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/synthea-10-patients"
    );
    let output = Command::new(PHIP)
        .args(["import", "--data-dir"])
        .arg(dir.path())
        .arg(fixtures)
        .output()
        .expect("run import");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("imported 7160 resources"), "{stdout}");
    assert!(stdout.contains("0 rejected"), "{stdout}");

    let server = Server::start(dir.path(), &[]);
    let client = client_for(dir.path());
    let count = |query: &str| -> u64 {
        let reply = client
            .get(format!("{}/{query}", server.base))
            .send()
            .expect("search");
        assert_eq!(reply.status().as_u16(), 200, "{query}");
        reply.json()["total"].as_u64().expect("total")
    };
    assert_eq!(
        count("Patient?_summary=count"),
        13,
        "the sample holds 13 patients"
    );
    let encounters = count("Encounter?_summary=count");
    assert!(encounters > 100, "{encounters}");
    // References between imported resources resolve in chained search.
    let patients = client
        .get(format!("{}/Patient?_count=1", server.base))
        .send()
        .expect("search")
        .json();
    let family = patients["entry"][0]["resource"]["name"][0]["family"]
        .as_str()
        .expect("family")
        .to_owned();
    let chained = count(&format!("Encounter?patient.family={family}&_summary=count"));
    assert!(chained > 0, "chained search over imported references");
    // The NDJSON's conditional references (`Practitioner?identifier=http://…|…`) were
    // resolved on the way in: no encounter is left without a resolved practitioner.
    assert!(
        stdout.contains("no conditional reference left unresolved"),
        "{stdout}"
    );
    assert_eq!(
        count("Encounter?practitioner:missing=true&_summary=count"),
        0
    );
    let encounter = client
        .get(format!("{}/Encounter?_count=1", server.base))
        .send()
        .expect("search")
        .json();
    let practitioner = encounter["entry"][0]["resource"]["participant"][0]["individual"]
        ["reference"]
        .as_str()
        .expect("participant")
        .to_owned();
    assert!(
        practitioner.starts_with("Practitioner/") && !practitioner.contains('?'),
        "{practitioner}"
    );
    assert!(
        count(&format!(
            "Encounter?practitioner={practitioner}&_summary=count"
        )) > 0
    );
}

/// Runs `phip import` into `data_dir`, returning (success, stdout, stderr).
fn import(data_dir: &Path, paths: &[&Path]) -> (bool, String, String) {
    let output = Command::new(PHIP)
        .args(["import", "--data-dir"])
        .arg(data_dir)
        .args(paths)
        .output()
        .expect("run import");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn synthea_bundles() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/synthea-bundles"
    ))
}

#[test]
fn import_of_a_path_that_does_not_exist_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let missing = dir.path().join("synthea-typo");
    let (ok, stdout, stderr) = import(&data, &[synthea_bundles(), &missing]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("synthea-typo") && stderr.contains("no such file or directory"),
        "{stderr}"
    );
    assert!(!stdout.contains("imported"), "nothing imported: {stdout}");
    assert!(!data.exists(), "no store created for a mistyped path");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let (ok, _, stderr) = import(&data, &[&empty]);
    assert!(!ok);
    assert!(stderr.contains("no .ndjson or .json file"), "{stderr}");
}

/// A directory of Synthea bundles in one call: the shared bundles go first, whatever the
/// names sort like, and every reference resolves.
#[test]
fn import_a_directory_of_synthea_bundles_in_one_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, stdout, stderr) = import(dir.path(), &[synthea_bundles()]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("imported 674 resources from 7 files"),
        "{stdout}"
    );
    assert!(stdout.contains("; 0 rejected"), "{stdout}");
    assert!(
        stdout.contains(
            "distinct literal targets are stored; no conditional reference left unresolved"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("all 0 distinct"), "{stdout}");

    let server = Server::start(dir.path(), &[]);
    let client = client_for(dir.path());
    let total = |query: &str| -> u64 {
        let reply = client
            .get(format!("{}/{query}", server.base))
            .send()
            .expect("search");
        assert_eq!(reply.status().as_u16(), 200, "{query}");
        reply.json()["total"].as_u64().expect("total")
    };
    assert_eq!(total("Patient?_summary=count"), 5);
    assert_eq!(total("Practitioner?_summary=count"), 43);
    let encounters = total("Encounter?_summary=count");
    assert!(encounters > 50, "{encounters}");
    assert_eq!(
        total("Encounter?practitioner:missing=false&_summary=count"),
        encounters
    );
    assert_eq!(
        total("Encounter?location:missing=false&_summary=count"),
        encounters
    );
    assert_eq!(
        total("Encounter?service-provider:missing=false&_summary=count"),
        encounters
    );
}

/// Shared bundles named so that they sort after the patients, and outside Synthea's naming:
/// the patients' bundles are refused with 412 at first and imported in the pass after the
/// whole input.
#[test]
fn import_retries_bundles_whose_conditional_references_found_nothing_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::create_dir(&input).expect("mkdir");
    for entry in std::fs::read_dir(synthea_bundles()).expect("fixtures") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let renamed = if name.starts_with("hospitalInformation") {
            "zz-shared-1.json.gz".to_owned()
        } else if name.starts_with("practitionerInformation") {
            "zz-shared-2.json.gz".to_owned()
        } else if name.ends_with(".json.gz") {
            name
        } else {
            continue;
        };
        std::fs::copy(&path, input.join(renamed)).expect("copy");
    }
    let data = dir.path().join("data");
    let (ok, stdout, stderr) = import(&data, &[&input]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("imported 674 resources"), "{stdout}");
    assert!(stdout.contains("; 0 rejected"), "{stdout}");
}

/// What cannot be resolved is reported: a conditional reference matching nothing (its
/// resource is rejected, as a transaction would refuse it) and a literal reference to a
/// resource that is not stored.
#[test]
fn import_reports_unresolved_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input");
    std::fs::create_dir(&input).expect("mkdir");
    let lines = [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Known"}]}),
        // A conditional reference to a resource earlier in the same file (still in the
        // unwritten batch) resolves.
        json!({"resourceType": "Organization", "id": "parent", "name": "Parent",
            "identifier": [{"system": "urn:phip:org", "value": "parent"}]}),
        json!({"resourceType": "Organization", "id": "child", "name": "Child",
            "partOf": {"reference": "Organization?identifier=urn:phip:org|parent"}}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "participant": [{"individual": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|0000000000"}}]}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/never-sent"}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(input.join("mixed.ndjson"), text).expect("write");
    let data = dir.path().join("data");
    let (ok, stdout, stderr) = import(&data, &[&input]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("imported 4 resources"), "{stdout}");
    assert!(stdout.contains("; 1 rejected"), "{stdout}");
    assert!(
        stdout.contains("unresolved conditional references: 1 distinct")
            && stdout
                .contains("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|0000000000 matches no resource (1x)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 referenced resources are not stored")
            && stdout.contains("  Encounter/never-sent"),
        "{stdout}"
    );
    assert!(!stdout.contains("Patient/p1"), "{stdout}");
}

/// Writers send 20-entry transactions until the server is killed with SIGKILL mid-stream;
/// after a restart every acknowledged resource must be readable, and no transaction may be
/// half-applied.
fn acknowledged_writes_survive_kill_9_on(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), extra);
    let token = operator_token(dir.path());
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (base, token, acknowledged) =
            (server.base.clone(), token.clone(), acknowledged.clone());
        writers.push(std::thread::spawn(move || {
            let client = reqwest::blocking_client_with(Some(token));
            for i in 0..100_000 {
                let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": (0..20).map(|j| json!({
                    "resource": {"resourceType": "Observation", "status": "final",
                        "code": {"text": format!("w{writer}-{i}-{j}")}},
                    "request": {"method": "POST", "url": "Observation"}})).collect::<Vec<Value>>()});
                let Ok(reply) = client.post(base.clone(), &bundle).send() else { return };
                if !reply.status().is_success() {
                    return;
                }
                let body = reply.json();
                let mut ids = acknowledged.lock().expect("lock");
                for entry in body["entry"].as_array().into_iter().flatten() {
                    if let Some(location) = entry["response"]["location"].as_str() {
                        ids.push(location.to_owned());
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().expect("kill -9");
    server.child.wait().expect("wait");
    for writer in writers {
        let _ = writer.join();
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= 20,
        "some writes were acknowledged before the kill"
    );

    let server = Server::start(dir.path(), extra);
    let client = client_for(dir.path());
    for location in &acknowledged {
        // location: {base}/Observation/{id}/_history/1
        let path = location.split("/fhir/").nth(1).expect("relative");
        let id_path = path.split("/_history").next().expect("id path");
        let reply = client
            .get(format!("{}/{id_path}", server.base))
            .send()
            .expect("read");
        assert_eq!(
            reply.status().as_u16(),
            200,
            "acknowledged {id_path} lost after kill -9"
        );
    }
    let total = client
        .get(format!("{}/Observation?_summary=count", server.base))
        .send()
        .expect("count")
        .json()["total"]
        .as_u64()
        .expect("total");
    assert!(total as usize >= acknowledged.len());
    assert_eq!(
        total % 20,
        0,
        "transactions are all-or-nothing even when killed mid-way"
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive_kill_9_on(&[]);
}

#[test]
fn acknowledged_writes_survive_kill_9_on_postgresql() {
    let Some(cluster) = phip_testkit::PgCluster::shared() else {
        return;
    };
    let url = cluster.fresh_database();
    acknowledged_writes_survive_kill_9_on(&["--database-url", &url]);
}

#[test]
fn audit_verify_detects_a_direct_edit_of_the_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), &[]);
    let client = client_for(dir.path());
    let created = client
        .post(
            format!("{}/Patient", server.base),
            &json!({"resourceType": "Patient", "name": [{"family": "Gao"}]}),
        )
        .send()
        .expect("create");
    let id = created.json()["id"].as_str().expect("id").to_owned();
    for _ in 0..5 {
        client
            .get(format!("{}/Patient/{id}", server.base))
            .send()
            .expect("read");
    }
    assert!(server.terminate().success());

    let verify = || {
        Command::new(PHIP)
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("verify")
    };
    let intact = verify();
    let stdout = String::from_utf8_lossy(&intact.stdout);
    assert!(
        intact.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&intact.stderr)
    );
    assert!(stdout.contains("intact"), "{stdout}");

    // Someone with access to the file rewrites what record 3 says (the triggers that block
    // UPDATE through SQL have to be dropped first).
    let db = rusqlite::Connection::open(dir.path().join("audit.db")).expect("open audit.db");
    let triggers: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("triggers");
    for trigger in triggers {
        db.execute_batch(&format!("DROP TRIGGER \"{trigger}\""))
            .expect("drop trigger");
    }
    let changed = db
        .execute(
            "UPDATE audit_log SET body = replace(body, 'read', 'vread') WHERE seq = 3",
            [],
        )
        .expect("tamper");
    assert_eq!(changed, 1);
    drop(db);

    let broken = verify();
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert!(
        !broken.status.success(),
        "tampering must fail verification: {stdout}"
    );
    assert!(
        stdout.contains("#3"),
        "names the first broken record: {stdout}"
    );
}
