//! The four-level platform end to end: a national node and two provincial nodes as separate
//! `phip serve` processes on loopback (configured by `phip dev federation --setup-only`).
//!
//! Proves: the national index links the same resident registered in two provinces; a lookup
//! from one province returns the other's records with their source; with the other province
//! stalled or killed the lookup returns its own part plus a warning within the deadline;
//! index entries written while the national node is down (and the province restarted) arrive
//! after it returns, each change applied exactly once; county MeasureReports roll up.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PHIP: &str = env!("CARGO_BIN_EXE_phip");
const RESIDENT: &str = "urn:oid:2.16.156.10011.1.1";
/// The lookup deadline the nodes are configured with.
const DEADLINE_MS: u64 = 2000;

/// Running nodes, killed when the test ends however it ends.
struct Nodes {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Nodes {
    fn start(&mut self, id: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{id}.log")))
            .expect("log file");
        let child = Command::new(PHIP)
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join(format!("{id}.toml")))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn phip serve");
        self.children.push((id.to_owned(), child));
    }

    fn pid(&self, id: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == id)
            .map(|(_, c)| c.id())
            .expect("running node")
    }

    fn signal(&self, id: &str, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(id).to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Kills a node hard (no graceful shutdown: nothing may depend on one).
    fn kill(&mut self, id: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == id) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three consecutive free ports.
fn free_ports() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        if first > 65000 {
            continue;
        }
        let all_free = (0..3).all(|i| TcpListener::bind(("127.0.0.1", first + i)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no three consecutive free ports");
}

struct Node {
    base: String,
    token: String,
}

fn tokens(dir: &Path) -> (Node, Node, Node) {
    let text = std::fs::read_to_string(dir.join("tokens.json")).expect("tokens.json");
    let all: Value = serde_json::from_str(&text).expect("json");
    let node = |id: &str| Node {
        base: all[id]["base"].as_str().expect("base").to_owned(),
        token: all[id]["token"].as_str().expect("token").to_owned(),
    };
    (node("national"), node("bj"), node("gd"))
}

fn resident_id(area: &str, birth: &str, sequence: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let first17 = format!("{area}{birth}{sequence}");
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    format!("{first17}{}", CHECK[(sum % 11) as usize])
}

async fn get(client: &reqwest::Client, node: &Node, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("{}/{path}", node.base))
        .bearer_auth(&node.token)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(client: &reqwest::Client, node: &Node, path: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(format!("{}/{path}", node.base))
        .bearer_auth(&node.token)
        .header("content-type", "application/fhir+json")
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_healthy(client: &reqwest::Client, node: &Node) {
    let root = node.base.trim_end_matches("/fhir");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{root}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} did not become healthy", node.base);
}

/// Registers a resident with one clinical record at a node; returns the Patient id.
async fn register(client: &reqwest::Client, node: &Node, id: &str, code: &str) -> String {
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": RESIDENT, "value": id}],
        "name": [{"family": "王", "given": ["芳"]}],
        "gender": "female",
        "birthDate": "1985-03-07"
    });
    let (status, created) = post(client, node, "Patient", patient).await;
    assert_eq!(status, 201, "{created}");
    let patient_id = created["id"].as_str().expect("id").to_owned();
    let observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": 120, "unit": "mmHg"}
    });
    let (status, body) = post(client, node, "Observation", observation).await;
    assert_eq!(status, 201, "{body}");
    patient_id
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

fn warnings(bundle: &Value) -> Vec<String> {
    entries(bundle)
        .iter()
        .filter(|e| e["search"]["mode"] == "outcome")
        .flat_map(|e| {
            e["resource"]["issue"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|i| i["diagnostics"].as_str().map(str::to_owned))
        .collect()
}

/// `(source node base, LOINC code)` of each Observation in a lookup's answer.
fn observations(bundle: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = entries(bundle)
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Observation")
        .map(|r| {
            (
                r["meta"]["source"].as_str().unwrap_or("").to_owned(),
                r["code"]["coding"][0]["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Polls until `check` holds (the outbox delivers asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

fn measure_report(division: &str, numerator: u64, denominator: u64) -> Value {
    json!({
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": "https://phip.cn/fhir/Measure/ehr-coverage",
        "subject": {"identifier": {"system": "urn:phip:division", "value": division}},
        "period": {"start": "2026-10-01", "end": "2026-10-31"},
        "group": [{"population": [
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-population", "code": "numerator"}]}, "count": numerator},
            {"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-population", "code": "denominator"}]}, "count": denominator}
        ]}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_level_federation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base_port = free_ports();
    let setup = Command::new(PHIP)
        .args(["dev", "federation", "--setup-only", "--dir"])
        .arg(dir.path())
        .args(["--base-port", &base_port.to_string()])
        .args(["--publish-interval-ms", "200", "--retry-max-ms", "800"])
        .args(["--lookup-deadline-ms", &DEADLINE_MS.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("phip dev federation");
    assert!(setup.success());
    let (national, bj, gd) = tokens(dir.path());
    // Guangdong runs on PostgreSQL (when the testkit can start a cluster), the others on
    // SQLite: the outbox and the lookups work over both stores.
    // (The synchronous PostgreSQL client must stay off the async workers.)
    let database = tokio::task::spawn_blocking(|| {
        phip_testkit::PgCluster::shared().map(|cluster| cluster.fresh_database())
    })
    .await
    .expect("join");
    let on_postgres = database.is_some();
    if let Some(url) = database {
        let path = dir.path().join("gd.toml");
        let config = std::fs::read_to_string(&path).expect("gd.toml");
        std::fs::write(&path, format!("database_url = {url:?}\n{config}")).expect("gd.toml");
    }
    let mut nodes = Nodes {
        dir: dir.path().to_owned(),
        children: Vec::new(),
    };
    for id in ["national", "bj", "gd"] {
        nodes.start(id);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for node in [&national, &bj, &gd] {
        wait_healthy(&client, node).await;
    }
    if on_postgres {
        assert!(nodes.log("gd").contains("postgres"), "{}", nodes.log("gd"));
    }

    // The same resident registers in Beijing and in Guangdong.
    let resident = resident_id("110101", "19850307", "002");
    register(&client, &bj, &resident, "8480-6").await;
    let gd_patient = register(&client, &gd, &resident, "2339-0").await;

    // 1. The national index links both provinces' entries into one person.
    let locate = format!("Patient/$locate?identifier={RESIDENT}%7C{resident}");
    eventually("the national index lists both provinces", || async {
        let (status, parameters) = get(&client, &national, &locate).await;
        let holders = parameters["parameter"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["name"] == "holder").count())
            .unwrap_or(0);
        status == 200 && holders == 2
    })
    .await;
    let (status, masters) = get(
        &client,
        &national,
        &format!("Patient?identifier={RESIDENT}%7C{resident}&_master=true"),
    )
    .await;
    assert_eq!(status, 200);
    let goldens = entries(&masters);
    assert_eq!(goldens.len(), 1, "one national person: {masters}");
    let linked: Vec<&Value> = goldens[0]["resource"]["link"]
        .as_array()
        .expect("links")
        .iter()
        .filter(|l| l["type"] == "seealso")
        .collect();
    assert_eq!(linked.len(), 2, "linked to both entries: {}", goldens[0]);
    // The index holds identifiers and minimal demographics, not clinical records.
    let (status, index_entries) = get(
        &client,
        &national,
        &format!("Patient?identifier={RESIDENT}%7C{resident}"),
    )
    .await;
    assert_eq!(status, 200);
    let sources: Vec<String> = entries(&index_entries)
        .iter()
        .map(|e| {
            e["resource"]["meta"]["source"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        sources.contains(&bj.base) && sources.contains(&gd.base),
        "{sources:?}"
    );
    let (status, refused) = post(
        &client,
        &national,
        "Observation",
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
    )
    .await;
    assert_eq!(
        status, 422,
        "a national node refuses clinical records: {refused}"
    );

    // 2. A lookup from Beijing returns Guangdong's records, each with its source node.
    let lookup = format!("Patient/$federated-everything?identifier={RESIDENT}%7C{resident}");
    let (status, bundle) = get(&client, &bj, &lookup).await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(
        observations(&bundle),
        vec![
            (bj.base.clone(), "8480-6".to_owned()),
            (gd.base.clone(), "2339-0".to_owned())
        ],
        "{bundle}"
    );
    assert!(warnings(&bundle).is_empty(), "{:?}", warnings(&bundle));
    // A clinician without user-level Patient access cannot look people up.
    let (status, _) = get(
        &client,
        &Node {
            base: bj.base.clone(),
            token: "not-a-token".into(),
        },
        &lookup,
    )
    .await;
    assert_eq!(status, 401);
    // Only trusted nodes may ask a province for its records directly.
    let (status, _) = get(
        &client,
        &gd,
        &format!("Patient/$federation-records?identifier={RESIDENT}%7C{resident}"),
    )
    .await;
    assert_eq!(status, 403);

    // Every hop is audited at both ends: Beijing records the clinician's request and its
    // outgoing calls, Guangdong the call it answered for Beijing's clinician.
    let (status, audit) = get(&client, &bj, "AuditEvent?agent=dr-bj&_count=100").await;
    assert_eq!(status, 200, "{audit}");
    let outgoing = entries(&audit)
        .iter()
        .filter(|e| e.to_string().contains("outgoing federation call"))
        .count();
    // The locator and Guangdong.
    assert!(outgoing >= 2, "{audit}");
    // Guangdong's record is read by Guangdong's auditor: a clinician of a Guangdong hospital
    // sees only their own hospital's actions there, not Beijing's clinician's.
    let auditor = Command::new(PHIP)
        .args(["token", "--config"])
        .arg(dir.path().join("gd.toml"))
        .args(["--scope", "user/AuditEvent.rs", "--role", "auditor"])
        .args(["--subject", "inspector-gd"])
        .output()
        .expect("phip token");
    assert!(auditor.status.success());
    let gd_auditor = Node {
        base: gd.base.clone(),
        token: String::from_utf8_lossy(&auditor.stdout).trim().to_owned(),
    };
    let (status, audit) = get(&client, &gd_auditor, "AuditEvent?agent=dr-bj&_count=100").await;
    assert_eq!(status, 200, "{audit}");
    // Beijing's clinician, through Beijing's node (the token's client).
    assert!(
        entries(&audit)
            .iter()
            .any(|e| e.to_string().contains("node:bj")),
        "{audit}"
    );
    let (status, audit) = get(&client, &gd, "AuditEvent?agent=dr-bj&_count=100").await;
    assert_eq!(status, 200, "{audit}");
    assert!(entries(&audit).is_empty(), "{audit}");

    // The holding province's consent rules apply: the resident denies Beijing's hospital.
    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{gd_patient}")},
        "provision": {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": "Organization/hospital-bj"}
        }]}
    });
    // Written by the resident herself (a privacy Consent is the resident's to write).
    let minted = Command::new(PHIP)
        .arg("token")
        .arg("--data-dir")
        .arg(dir.path().join("gd"))
        .args(["--base-url", &gd.base])
        .args(["--scope", "patient/*.cruds", "--patient", &gd_patient])
        .output()
        .expect("phip token");
    assert!(minted.status.success(), "{minted:?}");
    let gd_resident = Node {
        base: gd.base.clone(),
        token: String::from_utf8_lossy(&minted.stdout).trim().to_owned(),
    };
    let (status, body) = post(&client, &gd_resident, "Consent", consent).await;
    assert_eq!(status, 201, "{body}");
    let (status, bundle) = get(&client, &bj, &lookup).await;
    assert_eq!(status, 200);
    assert_eq!(
        observations(&bundle),
        vec![(bj.base.clone(), "8480-6".to_owned())],
        "{bundle}"
    );

    // 3a. Guangdong stalls (the process is stopped: connections open, no answer): Beijing's
    // part plus a warning, within the deadline instead of a hang.
    nodes.signal("gd", "STOP");
    let started = Instant::now();
    let (status, bundle) = get(&client, &bj, &lookup).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(
        observations(&bundle),
        vec![(bj.base.clone(), "8480-6".to_owned())]
    );
    let warned = warnings(&bundle);
    assert!(
        warned
            .iter()
            .any(|w| w.contains("node gd") && w.contains("deadline")),
        "{warned:?}"
    );
    // Bounded by the deadline (a hang would last until the client's 30 s timeout).
    assert!(
        took < Duration::from_millis(DEADLINE_MS) + Duration::from_secs(10),
        "{took:?}"
    );
    // 3b. Guangdong is killed: the same partial answer, naming the node.
    nodes.kill("gd");
    let (status, bundle) = get(&client, &bj, &lookup).await;
    assert_eq!(status, 200);
    assert_eq!(
        observations(&bundle),
        vec![(bj.base.clone(), "8480-6".to_owned())]
    );
    assert!(
        warnings(&bundle).iter().any(|w| w.contains("node gd")),
        "{bundle}"
    );

    // 4. The national node goes down; Beijing registers a resident meanwhile and restarts.
    nodes.kill("national");
    let newcomer = resident_id("110102", "19850307", "004");
    register(&client, &bj, &newcomer, "8462-4").await;
    eventually("Beijing's outbox has retried the national node", || async {
        nodes.log("bj").contains("delivery failed")
    })
    .await;
    nodes.kill("bj");
    nodes.start("bj");
    wait_healthy(&client, &bj).await;
    nodes.start("national");
    wait_healthy(&client, &national).await;
    let search = format!("Patient?identifier={RESIDENT}%7C{newcomer}");
    eventually(
        "the entry written during the outage reaches the national index",
        || async {
            let (status, bundle) = get(&client, &national, &search).await;
            status == 200 && entries(&bundle).len() == 1
        },
    )
    .await;
    // Exactly once: the national entry has one version per version of Beijing's golden
    // record — redelivery after the restart added none.
    let (_, golden) = get(
        &client,
        &bj,
        &format!("Patient?identifier={RESIDENT}%7C{newcomer}&_master=true"),
    )
    .await;
    let golden_id = entries(&golden)[0]["resource"]["id"]
        .as_str()
        .expect("golden")
        .to_owned();
    let (_, golden_history) = get(&client, &bj, &format!("Patient/{golden_id}/_history")).await;
    let published_versions = entries(&golden_history).len();
    assert!(published_versions >= 1);
    let (_, entry) = get(&client, &national, &search).await;
    let entry_id = entries(&entry)[0]["resource"]["id"]
        .as_str()
        .expect("entry id")
        .to_owned();
    // Give a duplicate delivery every chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, history) = get(&client, &national, &format!("Patient/{entry_id}/_history")).await;
    assert_eq!(entries(&history).len(), published_versions, "{history}");
    // The first resident's Beijing entry was not applied again either.
    let (_, first) = get(
        &client,
        &national,
        &format!("Patient?identifier={RESIDENT}%7C{resident}"),
    )
    .await;
    for item in entries(&first) {
        let id = item["resource"]["id"].as_str().expect("id");
        let (_, history) = get(&client, &national, &format!("Patient/{id}/_history")).await;
        let versions = entries(&history).len();
        assert!(versions <= 2, "entry {id} applied {versions} times");
    }

    // 5. Roll-up: Beijing's two districts and Guangdong's (restarted) one sum nationally.
    nodes.start("gd");
    wait_healthy(&client, &gd).await;
    for (node, division, numerator, denominator) in [
        (&bj, "110101", 90, 100),
        (&bj, "110102", 10, 100),
        (&gd, "440103", 50, 200),
    ] {
        let (status, body) = post(
            &client,
            node,
            "MeasureReport",
            measure_report(division, numerator, denominator),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    eventually("the national roll-up sums all three districts", || async {
        let (status, bundle) = get(
            &client,
            &national,
            "MeasureReport?_tag=urn:phip:federation%7Crollup",
        )
        .await;
        let Some(report) = entries(&bundle).first().map(|e| e["resource"].clone()) else {
            return false;
        };
        let count = |code: &str| {
            report["group"][0]["population"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["code"]["coding"][0]["code"] == code))
                .and_then(|p| p["count"].as_u64())
        };
        status == 200 && count("numerator") == Some(150) && count("denominator") == Some(400)
    })
    .await;
    // Guangdong rolled its district up to the province too; the national sum counted the
    // district once (the province's roll-up contains it).
    let (status, bundle) = get(
        &client,
        &gd,
        "MeasureReport?_tag=urn:phip:federation%7Crollup",
    )
    .await;
    assert_eq!(status, 200);
    let rollups = entries(&bundle);
    assert_eq!(rollups.len(), 1, "{bundle}");
    assert_eq!(
        rollups[0]["resource"]["subject"]["identifier"]["value"],
        "440000"
    );
}
