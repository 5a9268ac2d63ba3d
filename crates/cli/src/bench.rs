//! `phip bench`: an ingest and search benchmark over the HTTP API.
//!
//! The benchmark starts a phip server in-process on a loopback port over a fresh temporary data
//! directory (or targets a running server given with `--url`), loads a directory of NDJSON files
//! replicated with fresh ids until the requested number of resources is reached, ingests them as
//! `transaction` Bundles of `PUT Type/id` entries from several concurrent clients, then runs a
//! timed search workload (single-parameter searches, a chained search, `$everything`) and a
//! mixed read/update workload, and reports throughput and latency percentiles.
//!
//! Everything is measured from the client side with [`Instant`], from sending the request to
//! having read the whole response body. Percentiles use the nearest-rank method over all samples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use phip_engine::{Engine, EngineConfig};
use phip_server::{AppState, ServerConfig};
use phip_store::sqlite::SqliteStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Options of `phip bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Benchmark a running server at this FHIR base URL (e.g. `http://127.0.0.1:8080/fhir`)
    /// instead of starting one in-process over a fresh temporary data directory.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token sent with every request (for a `--url` server that requires one).
    #[arg(long, env = "PHIP_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Directory of NDJSON files (one resource per line) to replicate and load.
    #[arg(long, default_value = "../shared/data/synthea/10-patients")]
    pub data: PathBuf,
    /// Load at least this many resources (the data set is replicated with fresh ids).
    #[arg(long, default_value_t = 100_000)]
    pub resources: usize,
    /// Entries per transaction Bundle.
    #[arg(long, default_value_t = 500)]
    pub bundle_size: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds of the single-parameter search phase; the chained/`$everything` phase runs for
    /// half as long (0 skips both).
    #[arg(long, default_value_t = 20.0)]
    pub search_seconds: f64,
    /// Concurrent clients of the search and mixed phases [default: --clients].
    #[arg(long)]
    pub search_clients: Option<usize>,
    /// Seconds of the mixed read/update phase (0 skips it).
    #[arg(long, default_value_t = 10.0)]
    pub mixed_seconds: f64,
    /// Parent directory of the temporary data directory (the disk under test).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary data directory afterwards (its path is printed).
    #[arg(long)]
    pub keep_data: bool,
    /// Seed of the pseudo-random choice of query values (runs are reproducible).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the report as JSON instead of text tables.
    #[arg(long)]
    pub json: bool,
    /// A benchmark other than the HTTP one.
    #[command(subcommand)]
    pub target: Option<BenchTarget>,
}

/// Benchmarks selected by a subcommand of `phip bench`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchTarget {
    /// The master patient index matcher on FEBRL (precision, recall, speed; `--splink` compares).
    Mpi(crate::bench_mpi::MpiArgs),
    /// A sustained mixed read/search/write load against a running server (soak test).
    Load(crate::bench_load::LoadArgs),
}

/// Runs the benchmark and prints its report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        Some(BenchTarget::Mpi(mpi)) => return crate::bench_mpi::run(mpi),
        Some(BenchTarget::Load(load)) => return crate::bench_load::run(load),
        None => {}
    }
    if args.bundle_size == 0 || args.clients == 0 {
        bail!("--bundle-size and --clients must be at least 1");
    }
    let progress = !args.json;
    let note = |text: &str| {
        if progress {
            eprintln!("bench: {text}");
        }
    };

    let machine = Machine::detect();
    // Data preparation (not timed as part of any phase).
    let started = Instant::now();
    let dataset = Dataset::load(&args.data)?;
    if dataset.resources.is_empty() {
        bail!("{} holds no resources", args.data.display());
    }
    let replicas = args.resources.div_ceil(dataset.resources.len()).max(1);
    note(&format!(
        "loaded {} resources from {}; building {replicas} replicas with fresh ids",
        dataset.resources.len(),
        args.data.display()
    ));
    let mut rng = Rng::new(args.seed);
    let workload = Workload::build(&dataset, replicas, args.bundle_size, &mut rng)?;
    note(&format!(
        "prepared {} bundles ({} resources, {:.1} MB) in {:.1} s",
        workload.bundles.len(),
        workload.resource_count,
        workload.bundle_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    // The server: in-process over a temporary directory, or the one given with --url.
    let mut temp_dir = None;
    let mut fsync = None;
    let mut server = None;
    let base_url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
            let dir = TempDir::create(&parent, args.keep_data)?;
            note(&format!("data directory {}", dir.path.display()));
            fsync = Some(measure_fsync(&dir.path, 50)?);
            let store = SqliteStore::open(&dir.path)
                .with_context(|| format!("opening {}", dir.path.display()))?;
            // Load the definitions before any timing.
            let _ = phip_fhir::r4();
            let engine = Arc::new(Engine::new(Arc::new(store), EngineConfig::default()));
            let state = AppState::new(
                engine,
                ServerConfig {
                    // The benchmark measures the FHIR core; token checks are measured apart.
                    auth: phip_server::auth::AuthMode::Disabled,
                    public_base_url: None,
                    max_body_bytes: 0,
                    node_name: "phip-bench".into(),
                },
                // Audit appends are measured by the audit crate's own benchmark.
                None,
            );
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .context("binding a loopback port")?;
            let address = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = runtime.spawn(async move {
                phip_server::serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
            });
            server = Some((stop, handle));
            temp_dir = Some(dir);
            format!("http://{address}/fhir")
        }
    };

    let result = runtime.block_on(run_phases(&args, &base_url, &workload, &note));

    if let Some((stop, handle)) = server {
        let _ = stop.send(());
        let _ = runtime.block_on(handle);
    }
    drop(runtime);
    let data_dir = temp_dir.as_ref().map(|d| d.path.display().to_string());
    let data_dir_bytes = temp_dir.as_ref().map(|d| dir_size(&d.path));
    drop(temp_dir);

    let phases = result?;
    let report = Report {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        target: match &args.url {
            Some(url) => format!("external server {url}"),
            None => "in-process server on loopback (shares the CPUs with the clients)".into(),
        },
        data: args.data.display().to_string(),
        data_dir,
        data_dir_bytes,
        original_resources: dataset.resources.len(),
        replicas,
        bundle_size: args.bundle_size,
        clients: args.clients,
        search_clients: args.search_clients.unwrap_or(args.clients).max(1),
        fsync,
        ingest: phases.ingest,
        search: phases.search,
        heavy: phases.heavy,
        mixed: phases.mixed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Data set and replication
// ---------------------------------------------------------------------------------------------

/// The resources of the data directory and what replication needs to know about them.
#[derive(Debug, Default)]
pub(crate) struct Dataset {
    /// The resources, in file order.
    resources: Vec<Value>,
    /// `(type, system, value)` of every identifier → the id of the resource carrying it, for
    /// resolving conditional references (`Practitioner?identifier=system|value`).
    identifiers: HashMap<(String, String, String), String>,
}

impl Dataset {
    /// Reads every `*.ndjson` file of `dir` (sorted by name).
    fn load(dir: &Path) -> anyhow::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the data directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} contains no .ndjson files", dir.display());
        }
        let mut resources = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not JSON", file.display(), n + 1))?;
                if value.get("resourceType").and_then(Value::as_str).is_none()
                    || value.get("id").and_then(Value::as_str).is_none()
                {
                    bail!(
                        "{}:{}: a resource needs resourceType and id",
                        file.display(),
                        n + 1
                    );
                }
                resources.push(value);
            }
        }
        Ok(Self::from_resources(resources))
    }

    /// A data set over resources that all have `resourceType` and `id`.
    pub(crate) fn from_resources(resources: Vec<Value>) -> Self {
        let mut identifiers = HashMap::new();
        for resource in &resources {
            let (Some(ty), Some(id)) = (resource_type(resource), resource_id(resource)) else {
                continue;
            };
            if let Some(Value::Array(list)) = resource.get("identifier") {
                for identifier in list {
                    let system = identifier.get("system").and_then(Value::as_str);
                    let value = identifier.get("value").and_then(Value::as_str);
                    if let (Some(system), Some(value)) = (system, value) {
                        identifiers.insert(
                            (ty.to_owned(), system.to_owned(), value.to_owned()),
                            id.to_owned(),
                        );
                    }
                }
            }
        }
        Self {
            resources,
            identifiers,
        }
    }

    /// One replica: every resource with a fresh id from `fresh_id`, and every reference to a
    /// resource of the data set (`Type/id`, absolute URLs ending so, `urn:uuid:id`, and
    /// conditional `Type?identifier=system|value` references, which become `Type/newid`)
    /// rewritten to the replica's copy. Any other string equal to an original id (Synthea puts
    /// ids in `identifier.value`) gets the new id too, so replicas share no ids at all.
    ///
    /// Returns the replica and the number of conditional references that could not be
    /// resolved within the data set (left unchanged).
    pub(crate) fn replicate(&self, fresh_id: &mut dyn FnMut() -> String) -> (Vec<Value>, usize) {
        let mut ids: HashMap<&str, String> = HashMap::with_capacity(self.resources.len());
        for resource in &self.resources {
            if let Some(id) = resource_id(resource) {
                ids.entry(id).or_insert_with(&mut *fresh_id);
            }
        }
        let mut unresolved = 0;
        let replica = self
            .resources
            .iter()
            .map(|resource| {
                let mut copy = resource.clone();
                self.rewrite(&mut copy, &ids, &mut unresolved);
                copy
            })
            .collect();
        (replica, unresolved)
    }

    fn rewrite(&self, value: &mut Value, ids: &HashMap<&str, String>, unresolved: &mut usize) {
        match value {
            Value::Object(object) => {
                for (key, child) in object.iter_mut() {
                    if key == "reference" {
                        if let Value::String(text) = child {
                            match self.rewrite_reference(text, ids) {
                                Some(new) => *text = new,
                                None if text.contains('?') => *unresolved += 1,
                                None => {}
                            }
                            continue;
                        }
                    }
                    self.rewrite(child, ids, unresolved);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.rewrite(item, ids, unresolved);
                }
            }
            Value::String(text) => {
                if let Some(new) = ids.get(text.as_str()) {
                    *text = new.clone();
                } else if let Some(new) =
                    text.strip_prefix("urn:uuid:").and_then(|old| ids.get(old))
                {
                    *text = format!("urn:uuid:{new}");
                }
            }
            _ => {}
        }
    }

    /// The rewritten form of a reference, or `None` to leave it as it is.
    fn rewrite_reference(&self, text: &str, ids: &HashMap<&str, String>) -> Option<String> {
        if let Some(old) = text.strip_prefix("urn:uuid:") {
            return ids.get(old).map(|new| format!("urn:uuid:{new}"));
        }
        if let Some((ty, query)) = text.split_once('?') {
            if ty.is_empty() || ty.contains('/') {
                return None;
            }
            // Only single `identifier=system|value` criteria are resolved.
            let (name, value) = query.split_once('=')?;
            if name != "identifier" || query.contains('&') {
                return None;
            }
            let value = percent_decode(value);
            let (system, code) = value.split_once('|')?;
            let id = self
                .identifiers
                .get(&(ty.to_owned(), system.to_owned(), code.to_owned()))?;
            return ids.get(id.as_str()).map(|new| format!("{ty}/{new}"));
        }
        // `Type/id`, `Type/id/_history/n` or an absolute URL ending so.
        let mut changed = false;
        let segments: Vec<String> = text
            .split('/')
            .map(|segment| match ids.get(segment) {
                Some(new) => {
                    changed = true;
                    new.clone()
                }
                None => segment.to_owned(),
            })
            .collect();
        changed.then(|| segments.join("/"))
    }
}

fn resource_type(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

fn resource_id(resource: &Value) -> Option<&str> {
    resource.get("id").and_then(Value::as_str)
}

/// Decodes `%XX` escapes (conditional references in files are sometimes URL-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Workload: bundles and query values
// ---------------------------------------------------------------------------------------------

/// A patient of the loaded data, for queries.
#[derive(Debug, Clone)]
struct PatientInfo {
    id: String,
    family: Option<String>,
    birthdate: Option<String>,
    /// `system|value` of each identifier.
    identifiers: Vec<String>,
}

/// Everything the timed phases send, built before any timing.
struct Workload {
    /// Serialized transaction Bundles and their entry counts.
    bundles: Vec<(Vec<u8>, usize)>,
    resource_count: usize,
    bundle_bytes: usize,
    unresolved_references: usize,
    patients: Vec<PatientInfo>,
    /// `system|code` of Condition.code codings.
    condition_codes: Vec<String>,
    /// `system|code` of Observation.code codings.
    observation_codes: Vec<String>,
    /// Dates (`YYYY-MM-DD`) of Encounter.period.start.
    encounter_dates: Vec<String>,
    /// `(type, id)` of every loaded resource, for reads.
    instances: Vec<(String, String)>,
    /// Serialized resources (type, id, body) for updates.
    update_bodies: Vec<(String, String, Vec<u8>)>,
}

/// Largest number of resource bodies kept for the update part of the mixed phase.
const UPDATE_SAMPLE: usize = 2000;

impl Workload {
    fn build(
        dataset: &Dataset,
        replicas: usize,
        bundle_size: usize,
        rng: &mut Rng,
    ) -> anyhow::Result<Self> {
        let mut workload = Workload {
            bundles: Vec::new(),
            resource_count: 0,
            bundle_bytes: 0,
            unresolved_references: 0,
            patients: Vec::new(),
            condition_codes: Vec::new(),
            observation_codes: Vec::new(),
            encounter_dates: Vec::new(),
            instances: Vec::new(),
            update_bodies: Vec::new(),
        };
        let mut seen_codes = HashSet::new();
        let mut entries: Vec<Value> = Vec::with_capacity(bundle_size);
        for replica_index in 0..replicas {
            let (replica, unresolved) = dataset.replicate(&mut || uuid::Uuid::new_v4().to_string());
            workload.unresolved_references += unresolved;
            for resource in replica {
                let (Some(ty), Some(id)) = (resource_type(&resource), resource_id(&resource))
                else {
                    continue;
                };
                let (ty, id) = (ty.to_owned(), id.to_owned());
                match ty.as_str() {
                    "Patient" => workload.patients.push(patient_info(&id, &resource)),
                    "Condition" | "Observation" if replica_index == 0 => {
                        for code in codings(resource.get("code")) {
                            if seen_codes.insert((ty.clone(), code.clone())) {
                                if ty == "Condition" {
                                    workload.condition_codes.push(code);
                                } else {
                                    workload.observation_codes.push(code);
                                }
                            }
                        }
                    }
                    "Encounter" if replica_index == 0 => {
                        if let Some(start) = resource
                            .pointer("/period/start")
                            .and_then(Value::as_str)
                            .and_then(|s| s.get(..10))
                        {
                            workload.encounter_dates.push(start.to_owned());
                        }
                    }
                    _ => {}
                }
                // Reservoir sample of bodies for updates.
                let seen = workload.instances.len();
                if workload.update_bodies.len() < UPDATE_SAMPLE {
                    workload.update_bodies.push((
                        ty.clone(),
                        id.clone(),
                        serde_json::to_vec(&resource)?,
                    ));
                } else {
                    let slot = rng.below(seen + 1);
                    if slot < UPDATE_SAMPLE {
                        workload.update_bodies[slot] =
                            (ty.clone(), id.clone(), serde_json::to_vec(&resource)?);
                    }
                }
                workload.instances.push((ty.clone(), id.clone()));
                // Built by hand: `json!` would deep-copy the resource through `to_value`.
                let mut request = Map::new();
                request.insert("method".into(), Value::from("PUT"));
                request.insert("url".into(), Value::from(format!("{ty}/{id}")));
                let mut entry = Map::new();
                entry.insert("resource".into(), resource);
                entry.insert("request".into(), Value::Object(request));
                entries.push(Value::Object(entry));
                if entries.len() == bundle_size {
                    workload.push_bundle(std::mem::take(&mut entries))?;
                }
            }
        }
        if !entries.is_empty() {
            workload.push_bundle(entries)?;
        }
        Ok(workload)
    }

    fn push_bundle(&mut self, entries: Vec<Value>) -> anyhow::Result<()> {
        let count = entries.len();
        let mut bundle = Map::new();
        bundle.insert("resourceType".into(), Value::from("Bundle"));
        bundle.insert("type".into(), Value::from("transaction"));
        bundle.insert("entry".into(), Value::Array(entries));
        let body = serde_json::to_vec(&bundle)?;
        self.resource_count += count;
        self.bundle_bytes += body.len();
        self.bundles.push((body, count));
        Ok(())
    }
}

fn patient_info(id: &str, patient: &Value) -> PatientInfo {
    let name = patient
        .get("name")
        .and_then(Value::as_array)
        .and_then(|names| names.iter().find(|n| n.get("family").is_some()));
    PatientInfo {
        id: id.to_owned(),
        family: name
            .and_then(|n| n.get("family"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        birthdate: patient
            .get("birthDate")
            .and_then(Value::as_str)
            .map(str::to_owned),
        identifiers: patient
            .get("identifier")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|i| {
                        let system = i.get("system").and_then(Value::as_str)?;
                        let value = i.get("value").and_then(Value::as_str)?;
                        Some(format!("{system}|{value}"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `system|code` of every coding of a CodeableConcept.
fn codings(concept: Option<&Value>) -> Vec<String> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let system = c.get("system").and_then(Value::as_str)?;
                    let code = c.get("code").and_then(Value::as_str)?;
                    Some(format!("{system}|{code}"))
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Timed phases
// ---------------------------------------------------------------------------------------------

struct Phases {
    ingest: IngestReport,
    search: Option<SearchReport>,
    heavy: Option<SearchReport>,
    mixed: Option<SearchReport>,
}

async fn run_phases(
    args: &BenchArgs,
    base: &str,
    workload: &Workload,
    note: &dyn Fn(&str),
) -> anyhow::Result<Phases> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the --token value is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(args.clients.max(args.search_clients.unwrap_or(0)) * 2)
        .timeout(Duration::from_secs(600))
        .build()
        .context("building the HTTP client")?;
    // The server must answer before anything is timed.
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{base}/metadata")).send().await {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("the server at {base} does not answer GET /metadata");
    }

    note(&format!(
        "ingesting {} resources in {} bundles with {} clients",
        workload.resource_count,
        workload.bundles.len(),
        args.clients
    ));
    let ingest = ingest(&client, base, workload, args.clients).await;
    note(&format!(
        "ingest: {:.0} resources/s, {} errors",
        ingest.resources_per_second, ingest.errors
    ));

    let rng_seed = args.seed;
    let clients = args.search_clients.unwrap_or(args.clients).max(1);
    let client = &client;
    let phase = |kinds: Vec<Kind>, seconds: f64, seed: u64, title: String| async move {
        if seconds <= 0.0 {
            return None;
        }
        note(&format!("{title} for {seconds} s with {clients} clients"));
        Some(
            timed_mix(
                client,
                base,
                workload,
                &kinds,
                clients,
                Duration::from_secs_f64(seconds),
                seed,
            )
            .await,
        )
    };
    let search = phase(
        single_parameter_kinds(workload),
        args.search_seconds,
        rng_seed,
        "single-parameter searches".into(),
    )
    .await;
    let heavy = phase(
        vec![Kind::ChainedFamily, Kind::Everything],
        args.search_seconds / 2.0,
        rng_seed.wrapping_add(1),
        "chained search and $everything".into(),
    )
    .await;
    let mixed = phase(
        vec![Kind::Read, Kind::Read, Kind::Read, Kind::Read, Kind::Update],
        args.mixed_seconds,
        rng_seed.wrapping_add(2),
        "mixed reads (80%) and updates (20%)".into(),
    )
    .await;
    Ok(Phases {
        ingest,
        search,
        heavy,
        mixed,
    })
}

/// Result of one request.
struct Sample {
    latency: Duration,
    error: Option<String>,
}

/// Sends one request and reads the whole body; any status but 2xx is an error.
async fn send(request: reqwest::RequestBuilder, check: impl Fn(&[u8]) -> Option<String>) -> Sample {
    let start = Instant::now();
    let result = request.send().await;
    let outcome = match result {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(body) if status.is_success() => check(&body),
                Ok(body) => Some(format!(
                    "HTTP {status}: {}",
                    truncate(&String::from_utf8_lossy(&body), 2000)
                )),
                Err(e) => Some(format!("reading the response: {e}")),
            }
        }
        Err(e) => Some(format!("request failed: {e}")),
    };
    Sample {
        latency: start.elapsed(),
        error: outcome,
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Ingest figures.
#[derive(Debug, Serialize)]
struct IngestReport {
    resources: usize,
    bundles: usize,
    seconds: f64,
    resources_per_second: f64,
    bundles_per_second: f64,
    megabytes_per_second: f64,
    bundle_latency_ms: Percentiles,
    errors: usize,
    first_error: Option<String>,
    /// Conditional references of the data set not resolvable within it (left unchanged).
    unresolved_conditional_references: usize,
    /// CPU use during the phase.
    cpu: Option<CpuUsage>,
}

async fn ingest(
    client: &reqwest::Client,
    base: &str,
    workload: &Workload,
    clients: usize,
) -> IngestReport {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let results: Vec<Vec<(Sample, usize)>> = {
        let tasks = (0..clients).map(|_| {
            let next = next.clone();
            async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((body, count)) = workload.bundles.get(i) else {
                        break;
                    };
                    let count = *count;
                    let request = client
                        .post(base)
                        .header("Content-Type", "application/fhir+json")
                        .header("Accept", "application/fhir+json")
                        .body(body.clone());
                    let sample =
                        send(request, |bytes| check_transaction_response(bytes, count)).await;
                    samples.push((sample, count));
                }
                samples
            }
        });
        futures_join_all(tasks).await
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuUsage::between(cpu_before, CpuSnapshot::take(), seconds);
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut resources = 0;
    for (sample, count) in results.into_iter().flatten() {
        latencies.push(sample.latency);
        match sample.error {
            Some(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
            None => resources += count,
        }
    }
    let bundles = latencies.len();
    IngestReport {
        resources,
        bundles,
        seconds,
        resources_per_second: resources as f64 / seconds.max(1e-9),
        bundles_per_second: bundles as f64 / seconds.max(1e-9),
        megabytes_per_second: workload.bundle_bytes as f64 / 1e6 / seconds.max(1e-9),
        bundle_latency_ms: Percentiles::of(&mut latencies),
        errors,
        first_error,
        unresolved_conditional_references: workload.unresolved_references,
        cpu,
    }
}

/// The outline of a Bundle response: enough to check it without building a JSON tree (the
/// clients share the CPUs with an in-process server, so they must stay cheap).
#[derive(Debug, Deserialize)]
struct BundleOutline {
    #[serde(rename = "resourceType")]
    resource_type: String,
    #[serde(rename = "type")]
    bundle_type: Option<String>,
    #[serde(default)]
    entry: Vec<serde::de::IgnoredAny>,
}

/// The number of entries of a Bundle of type `bundle_type`, or why the body is not one.
fn bundle_entries(body: &[u8], bundle_type: &str) -> Result<usize, String> {
    match serde_json::from_slice::<BundleOutline>(body) {
        Ok(b) if b.resource_type == "Bundle" && b.bundle_type.as_deref() == Some(bundle_type) => {
            Ok(b.entry.len())
        }
        Ok(_) => Err(format!(
            "expected a {bundle_type} Bundle, got: {}",
            truncate(&String::from_utf8_lossy(body), 2000)
        )),
        Err(e) => Err(format!("the response is not a Bundle: {e}")),
    }
}

/// A transaction-response must have one entry per request entry.
fn check_transaction_response(body: &[u8], expected: usize) -> Option<String> {
    match bundle_entries(body, "transaction-response") {
        Ok(n) if n == expected => None,
        Ok(n) => Some(format!(
            "expected a transaction-response with {expected} entries, got {n}"
        )),
        Err(e) => Some(e),
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    // A tiny join_all without the `futures` crate: the client futures borrow the workload,
    // so they are polled together on the calling task rather than spawned.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if outputs[i].is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                std::task::Poll::Ready(value) => outputs[i] = Some(value),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The kinds of requests of the timed phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    PatientFamily,
    PatientBirthdate,
    PatientIdentifier,
    PatientId,
    EncounterPatient,
    EncounterDate,
    ConditionCode,
    ObservationCode,
    MedicationRequestPatient,
    ChainedFamily,
    Everything,
    Read,
    Update,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::PatientFamily => "Patient?family=",
            Kind::PatientBirthdate => "Patient?birthdate=",
            Kind::PatientIdentifier => "Patient?identifier=",
            Kind::PatientId => "Patient?_id=",
            Kind::EncounterPatient => "Encounter?patient=",
            Kind::EncounterDate => "Encounter?date=ge",
            Kind::ConditionCode => "Condition?code=",
            Kind::ObservationCode => "Observation?code=",
            Kind::MedicationRequestPatient => "MedicationRequest?patient=",
            Kind::ChainedFamily => "Encounter?patient.family=",
            Kind::Everything => "Patient/{id}/$everything",
            Kind::Read => "read Type/{id}",
            Kind::Update => "update PUT Type/{id}",
        }
    }
}

/// The single-parameter kinds the data supports.
fn single_parameter_kinds(workload: &Workload) -> Vec<Kind> {
    let mut kinds = vec![
        Kind::PatientFamily,
        Kind::PatientBirthdate,
        Kind::PatientIdentifier,
        Kind::PatientId,
        Kind::EncounterPatient,
        Kind::MedicationRequestPatient,
    ];
    if !workload.encounter_dates.is_empty() {
        kinds.push(Kind::EncounterDate);
    }
    if !workload.condition_codes.is_empty() {
        kinds.push(Kind::ConditionCode);
    }
    if !workload.observation_codes.is_empty() {
        kinds.push(Kind::ObservationCode);
    }
    kinds
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.below(items.len()))
    }
}

/// Builds the request of a kind with values drawn from the workload.
fn build_request(
    client: &reqwest::Client,
    base: &str,
    workload: &Workload,
    kind: Kind,
    rng: &mut Rng,
) -> Option<reqwest::RequestBuilder> {
    let search = |path: &str, name: &str, value: &str| {
        let mut url = reqwest::Url::parse(&format!("{base}/{path}")).ok()?;
        url.query_pairs_mut().append_pair(name, value);
        Some(client.get(url).header("Accept", "application/fhir+json"))
    };
    let patient = pick(rng, &workload.patients)?.clone();
    match kind {
        Kind::PatientFamily => search("Patient", "family", patient.family.as_deref()?),
        Kind::PatientBirthdate => search("Patient", "birthdate", patient.birthdate.as_deref()?),
        Kind::PatientIdentifier => {
            search("Patient", "identifier", pick(rng, &patient.identifiers)?)
        }
        Kind::PatientId => search("Patient", "_id", &patient.id),
        Kind::EncounterPatient => {
            search("Encounter", "patient", &format!("Patient/{}", patient.id))
        }
        Kind::MedicationRequestPatient => search(
            "MedicationRequest",
            "patient",
            &format!("Patient/{}", patient.id),
        ),
        Kind::EncounterDate => search(
            "Encounter",
            "date",
            &format!("ge{}", pick(rng, &workload.encounter_dates)?),
        ),
        Kind::ConditionCode => search("Condition", "code", pick(rng, &workload.condition_codes)?),
        Kind::ObservationCode => search(
            "Observation",
            "code",
            pick(rng, &workload.observation_codes)?,
        ),
        Kind::ChainedFamily => search("Encounter", "patient.family", patient.family.as_deref()?),
        Kind::Everything => Some(
            client
                .get(format!("{base}/Patient/{}/$everything", patient.id))
                .header("Accept", "application/fhir+json"),
        ),
        Kind::Read => {
            let (ty, id) = pick(rng, &workload.instances)?;
            Some(
                client
                    .get(format!("{base}/{ty}/{id}"))
                    .header("Accept", "application/fhir+json"),
            )
        }
        Kind::Update => {
            let (ty, id, body) = pick(rng, &workload.update_bodies)?;
            Some(
                client
                    .put(format!("{base}/{ty}/{id}"))
                    .header("Content-Type", "application/fhir+json")
                    .header("Accept", "application/fhir+json")
                    .body(body.clone()),
            )
        }
    }
}

/// Latency figures of one request kind.
#[derive(Debug, Serialize)]
struct KindReport {
    kind: String,
    count: usize,
    errors: usize,
    latency_ms: Percentiles,
    /// Mean number of entries of the first page (searches only).
    mean_entries: Option<f64>,
}

/// Figures of a timed phase.
#[derive(Debug, Serialize)]
struct SearchReport {
    seconds: f64,
    requests: usize,
    requests_per_second: f64,
    errors: usize,
    first_error: Option<String>,
    overall_latency_ms: Percentiles,
    kinds: Vec<KindReport>,
    /// CPU use during the phase.
    cpu: Option<CpuUsage>,
}

async fn timed_mix(
    client: &reqwest::Client,
    base: &str,
    workload: &Workload,
    kinds: &[Kind],
    clients: usize,
    duration: Duration,
    seed: u64,
) -> SearchReport {
    let cpu_before = CpuSnapshot::take();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = (0..clients).map(|c| {
        let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(c as u64));
        async move {
            let mut samples: Vec<(Kind, Sample, Option<usize>)> = Vec::new();
            while Instant::now() < deadline {
                let Some(&kind) = pick(&mut rng, kinds) else {
                    break;
                };
                let Some(request) = build_request(client, base, workload, kind, &mut rng) else {
                    continue;
                };
                let entries = std::cell::Cell::new(None);
                let is_search = !matches!(kind, Kind::Read | Kind::Update);
                let sample = send(request, |body| {
                    if is_search {
                        match bundle_entries(body, "searchset") {
                            Ok(n) => entries.set(Some(n)),
                            Err(e) => return Some(e),
                        }
                    }
                    None
                })
                .await;
                samples.push((kind, sample, entries.get()));
            }
            samples
        }
    });
    let results = futures_join_all(tasks).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut by_kind: BTreeMap<Kind, (Vec<Duration>, usize, usize, usize)> = BTreeMap::new();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for (kind, sample, entries) in results.into_iter().flatten() {
        let slot = by_kind.entry(kind).or_default();
        slot.0.push(sample.latency);
        all.push(sample.latency);
        if let Some(n) = entries {
            slot.2 += n;
            slot.3 += 1;
        }
        if let Some(e) = sample.error {
            slot.1 += 1;
            errors += 1;
            first_error.get_or_insert_with(|| format!("{}: {e}", kind.label()));
        }
    }
    let requests = all.len();
    let cpu = CpuUsage::between(cpu_before, CpuSnapshot::take(), seconds);
    SearchReport {
        cpu,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds.max(1e-9),
        errors,
        first_error,
        overall_latency_ms: Percentiles::of(&mut all),
        kinds: by_kind
            .into_iter()
            .map(
                |(kind, (mut latencies, errors, entries, searches))| KindReport {
                    kind: kind.label().to_owned(),
                    count: latencies.len(),
                    errors,
                    latency_ms: Percentiles::of(&mut latencies),
                    mean_entries: (searches > 0).then(|| entries as f64 / searches as f64),
                },
            )
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics, machine facts, fsync
// ---------------------------------------------------------------------------------------------

/// Latency percentiles in milliseconds (nearest rank over all samples).
#[derive(Debug, Serialize, Default, Clone, Copy)]
pub(crate) struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted in place).
    pub(crate) fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rank = |p: f64| {
            let n = samples.len();
            let index = ((p / 100.0) * n as f64).ceil() as usize;
            ms(samples[index.clamp(1, n) - 1])
        };
        let total: f64 = samples.iter().map(|d| ms(*d)).sum();
        Self {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: ms(samples[samples.len() - 1]),
            mean: total / samples.len() as f64,
        }
    }
}

/// Write+fsync latency of the data directory's disk.
#[derive(Debug, Serialize)]
struct FsyncReport {
    calls: usize,
    /// 4 KiB `write` + `fdatasync` (what SQLite uses on Linux) per call.
    fdatasync_ms: Percentiles,
    /// 4 KiB `write` + `fsync` per call.
    fsync_ms: Percentiles,
}

fn measure_fsync(dir: &Path, calls: usize) -> anyhow::Result<FsyncReport> {
    let path = dir.join("fsync-probe.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5au8; 4096];
    file.write_all(&block)?;
    file.sync_all()?;
    let mut time = |full: bool| -> anyhow::Result<Percentiles> {
        let mut samples = Vec::with_capacity(calls);
        for i in 0..calls {
            let start = Instant::now();
            file.seek(SeekFrom::Start(((i % 16) * 4096) as u64))?;
            file.write_all(&block)?;
            if full {
                file.sync_all()?;
            } else {
                file.sync_data()?;
            }
            samples.push(start.elapsed());
        }
        Ok(Percentiles::of(&mut samples))
    };
    let fdatasync_ms = time(false)?;
    let fsync_ms = time(true)?;
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncReport {
        calls,
        fdatasync_ms,
        fsync_ms,
    })
}

/// Facts about the machine the figures come from.
#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_gib: Option<f64>,
    kernel: Option<String>,
    /// 1-, 5- and 15-minute load averages when the benchmark started.
    load_average: Option<String>,
}

impl Machine {
    fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        }
    }
}

/// CPU counters at one moment (Linux `/proc`; the usual 100 clock ticks per second).
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    /// User + system CPU seconds of this process.
    process: f64,
    /// CPU seconds all CPUs spent busy (neither idle nor waiting for I/O).
    machine_busy: f64,
    /// CPU seconds all CPUs spent idle waiting for I/O.
    machine_iowait: f64,
}

impl CpuSnapshot {
    fn take() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        let line = machine.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: f64 = ticks.iter().take(8).sum();
        let idle = *ticks.get(3)?;
        let iowait = *ticks.get(4)?;
        Some(Self {
            process: (utime + stime) / 100.0,
            machine_busy: (total - idle - iowait) / 100.0,
            machine_iowait: iowait / 100.0,
        })
    }
}

/// Average CPU use over a phase, in cores.
#[derive(Debug, Serialize, Clone, Copy)]
struct CpuUsage {
    /// Cores this process (in-process server and clients) kept busy.
    process_cores: f64,
    /// Cores other processes of the machine kept busy (a shared machine skews figures).
    other_cores: f64,
    /// Cores idle waiting for I/O.
    iowait_cores: f64,
}

impl CpuUsage {
    fn between(
        before: Option<CpuSnapshot>,
        after: Option<CpuSnapshot>,
        seconds: f64,
    ) -> Option<Self> {
        let (a, b) = (before?, after?);
        let s = seconds.max(1e-9);
        let process = (b.process - a.process) / s;
        let machine = (b.machine_busy - a.machine_busy) / s;
        Some(Self {
            process_cores: process,
            other_cores: (machine - process).max(0.0),
            iowait_cores: (b.machine_iowait - a.machine_iowait) / s,
        })
    }
}

fn cpu_text(cpu: &Option<CpuUsage>) -> String {
    match cpu {
        Some(c) => format!(
            "  CPU: this process {:.2} cores, other processes {:.2} cores, I/O wait {:.2} cores\n",
            c.process_cores, c.other_cores, c.iowait_cores
        ),
        None => String::new(),
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// A temporary data directory, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create(parent: &Path, keep: bool) -> anyhow::Result<Self> {
        let path = parent.join(format!("phip-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A small deterministic PRNG (SplitMix64); statistical quality is ample for picking values.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// The whole benchmark report.
#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    command: String,
    target: String,
    data: String,
    data_dir: Option<String>,
    data_dir_bytes: Option<u64>,
    original_resources: usize,
    replicas: usize,
    bundle_size: usize,
    clients: usize,
    search_clients: usize,
    fsync: Option<FsyncReport>,
    ingest: IngestReport,
    search: Option<SearchReport>,
    heavy: Option<SearchReport>,
    mixed: Option<SearchReport>,
}

impl Report {
    fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "phip bench");
        let _ = writeln!(
            out,
            "machine   {} CPUs, {}, {} GiB RAM, Linux {}",
            m.cpus,
            m.cpu_model,
            m.memory_gib.map_or("?".into(), |g| g.to_string()),
            m.kernel.as_deref().unwrap_or("?")
        );
        let _ = writeln!(
            out,
            "load      {} (1/5/15 min, at the start)",
            m.load_average.as_deref().unwrap_or("?")
        );
        let _ = writeln!(out, "command   {}", self.command);
        let _ = writeln!(out, "target    {}", self.target);
        let _ = writeln!(
            out,
            "data      {} ({} resources) x {} replicas with fresh ids; bundles of {}; {} ingest clients, {} search clients",
            self.data,
            self.original_resources,
            self.replicas,
            self.bundle_size,
            self.clients,
            self.search_clients
        );
        if let Some(f) = &self.fsync {
            let _ = writeln!(
                out,
                "fsync     {} x (4 KiB write + fdatasync): p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms  (≈ {:.0} serial commits/s); with fsync: p50 {:.2} ms",
                f.calls,
                f.fdatasync_ms.p50,
                f.fdatasync_ms.p99,
                f.fdatasync_ms.mean,
                1000.0 / f.fdatasync_ms.mean.max(1e-9),
                f.fsync_ms.p50
            );
        }
        let i = &self.ingest;
        let _ = writeln!(
            out,
            "\nINGEST (transaction Bundles of PUT entries over HTTP)"
        );
        let _ = writeln!(
            out,
            "  {} resources in {} bundles in {:.2} s",
            i.resources, i.bundles, i.seconds
        );
        let _ = writeln!(
            out,
            "  {:.0} resources/s, {:.2} bundles/s, {:.1} MB/s of request bodies",
            i.resources_per_second, i.bundles_per_second, i.megabytes_per_second
        );
        let _ = writeln!(
            out,
            "  bundle latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            i.bundle_latency_ms.p50,
            i.bundle_latency_ms.p90,
            i.bundle_latency_ms.p99,
            i.bundle_latency_ms.max
        );
        out.push_str(&cpu_text(&i.cpu));
        if let (Some(cpu), true) = (&i.cpu, self.fsync.is_some() && i.resources > 0) {
            let per_resource = cpu.process_cores * i.seconds / i.resources as f64;
            let _ = writeln!(
                out,
                "  CPU cost: {:.0} µs per resource (server + clients) = {:.0} resources per CPU-second",
                per_resource * 1e6,
                1.0 / per_resource.max(1e-12)
            );
        }
        let _ = writeln!(out, "  errors {}", i.errors);
        if let Some(e) = &i.first_error {
            let _ = writeln!(out, "  first error: {e}");
        }
        if i.unresolved_conditional_references > 0 {
            let _ = writeln!(
                out,
                "  note: {} conditional references could not be resolved within the data set",
                i.unresolved_conditional_references
            );
        }
        if let Some(size) = self.data_dir_bytes {
            let _ = writeln!(
                out,
                "  data directory size at the end: {:.1} MB",
                size as f64 / 1e6
            );
        }
        if let Some(search) = &self.search {
            write_phase(
                &mut out,
                "SINGLE-PARAMETER SEARCHES (first page, default _count)",
                search,
            );
        }
        if let Some(heavy) = &self.heavy {
            write_phase(&mut out, "CHAINED SEARCH AND $everything", heavy);
        }
        if let Some(mixed) = &self.mixed {
            write_phase(&mut out, "MIXED READS AND UPDATES", mixed);
        }
        out
    }
}

fn write_phase(out: &mut String, title: &str, phase: &SearchReport) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n{title}: {} requests in {:.1} s = {:.0} req/s, {} errors",
        phase.requests, phase.seconds, phase.requests_per_second, phase.errors
    );
    let _ = writeln!(
        out,
        "  {:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "kind", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "entries"
    );
    for k in &phase.kinds {
        let _ = writeln!(
            out,
            "  {:<28} {:>7} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8}",
            k.kind,
            k.count,
            k.errors,
            k.latency_ms.p50,
            k.latency_ms.p90,
            k.latency_ms.p99,
            k.latency_ms.max,
            k.mean_entries.map_or("-".into(), |e| format!("{e:.1}"))
        );
    }
    let o = &phase.overall_latency_ms;
    let _ = writeln!(
        out,
        "  {:<28} {:>7} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.1}",
        "ALL", phase.requests, phase.errors, o.p50, o.p90, o.p99, o.max
    );
    out.push_str(&cpu_text(&phase.cpu));
    if let Some(e) = &phase.first_error {
        let _ = writeln!(out, "  first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collect_strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
            Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
            _ => {}
        }
    }

    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Array(items) => items.iter().for_each(|i| references(i, out)),
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("reference", Value::String(s)) => out.push(s.clone()),
                        _ => references(v, out),
                    }
                }
            }
            _ => {}
        }
    }

    fn sample() -> Dataset {
        Dataset::from_resources(vec![
            json!({"resourceType": "Patient", "id": "p1",
                   "identifier": [{"system": "urn:s", "value": "p1"}],
                   "name": [{"family": "Li"}]}),
            json!({"resourceType": "Practitioner", "id": "d1",
                   "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "999"}]}),
            json!({"resourceType": "Encounter", "id": "e1",
                   "subject": {"reference": "Patient/p1"},
                   "participant": [{"individual": {"reference":
                       "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|999"}}]}),
            json!({"resourceType": "Condition", "id": "c1",
                   "subject": {"reference": "urn:uuid:p1"},
                   "encounter": {"reference": "http://example.org/fhir/Encounter/e1"},
                   "note": [{"text": "see Patient p1"}]}),
        ])
    }

    #[test]
    fn replicas_have_fresh_ids_and_consistent_references() {
        let dataset = sample();
        let originals = ["p1", "d1", "e1", "c1"];
        let mut counter = 0;
        let mut fresh = || {
            counter += 1;
            format!("new-{counter}")
        };
        let (first, unresolved) = dataset.replicate(&mut fresh);
        assert_eq!(unresolved, 0);
        let (second, _) = dataset.replicate(&mut fresh);

        for replica in [&first, &second] {
            let ids: HashMap<String, String> = replica
                .iter()
                .map(|r| {
                    (
                        r["resourceType"].as_str().unwrap_or_default().to_owned(),
                        r["id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            // No original id is left anywhere (ids, references, identifier values).
            let mut strings = Vec::new();
            replica
                .iter()
                .for_each(|r| collect_strings(r, &mut strings));
            for s in &strings {
                for old in originals {
                    assert!(
                        s != old
                            && !s.ends_with(&format!("/{old}"))
                            && !s.ends_with(&format!(":{old}")),
                        "original id {old} left in {s:?}"
                    );
                }
            }
            // Every reference points at the copy in the same replica.
            let encounter = &replica[2];
            let condition = &replica[3];
            assert_eq!(
                encounter["subject"]["reference"],
                json!(format!("Patient/{}", ids["Patient"]))
            );
            assert_eq!(
                encounter["participant"][0]["individual"]["reference"],
                json!(format!("Practitioner/{}", ids["Practitioner"]))
            );
            assert_eq!(
                condition["subject"]["reference"],
                json!(format!("urn:uuid:{}", ids["Patient"]))
            );
            assert_eq!(
                condition["encounter"]["reference"],
                json!(format!(
                    "http://example.org/fhir/Encounter/{}",
                    ids["Encounter"]
                ))
            );
            assert_eq!(replica[0]["identifier"][0]["value"], replica[0]["id"]);
            // Free text and other values are left alone.
            assert_eq!(condition["note"][0]["text"], json!("see Patient p1"));
            assert_eq!(replica[1]["identifier"][0]["value"], json!("999"));
            let mut refs = Vec::new();
            replica.iter().for_each(|r| references(r, &mut refs));
            assert_eq!(refs.len(), 4);
        }
        // Replicas share no ids.
        let first_ids: HashSet<&str> = first.iter().filter_map(resource_id).collect();
        assert!(second
            .iter()
            .filter_map(resource_id)
            .all(|id| !first_ids.contains(id)));
        // The originals are untouched.
        assert_eq!(
            dataset.resources[2]["subject"]["reference"],
            json!("Patient/p1")
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.p50, 50.0);
        assert_eq!(p.p99, 99.0);
        assert_eq!(p.max, 100.0);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%7Cb"), "a|b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
