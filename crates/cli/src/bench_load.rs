//! `phip bench load`: a sustained mixed workload against a running server, for soak testing.
//!
//! `--workers` concurrent clients loop for `--duration` seconds, each request drawn at random:
//! 60 % reads (`GET Type/id` of known resources), 25 % searches (by name, identifier, birth
//! date, a patient's observations sorted by date, a code) and 15 % writes (new Observations,
//! updates of Patients). Before the clock starts, a seed population of patients with
//! observations is written with transaction Bundles. Throughput, latency percentiles per kind
//! (client side, request sent → whole body read), errors (any non-2xx status or transport
//! failure) and the server's resident memory over time (`VmRSS` of `--pid` from `/proc`,
//! sampled every `--sample-seconds`) are reported.
//!
//! Run `tools/perf/load.sh` to build a release server, start it on SQLite or PostgreSQL and
//! run this against it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::Rng;

/// Options of `phip bench load`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// FHIR base URL of the server under test (e.g. `http://127.0.0.1:8080/fhir`).
    #[arg(long)]
    pub url: String,
    /// Bearer token sent with every request.
    #[arg(long, env = "PHIP_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds of sustained load.
    #[arg(long, default_value_t = 180.0)]
    pub duration: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Patients written before the load starts (each with 5 observations).
    #[arg(long, default_value_t = 2000)]
    pub patients: usize,
    /// Percent of reads, searches and writes.
    #[arg(long, default_value = "60,25,15")]
    pub mix: String,
    /// Process id of the server, for resident memory samples (same machine only).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_seconds: f64,
    /// Seed of the random choices (runs are reproducible up to scheduling).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// Request kinds, for per-kind statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Search,
    Write,
}

const KINDS: [Kind; 3] = [Kind::Read, Kind::Search, Kind::Write];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Search => "search",
            Kind::Write => "write",
        }
    }
}

/// What the seed population holds: ids and values to draw requests from.
struct Population {
    patients: Vec<String>,
    observations: Vec<String>,
    families: Vec<String>,
}

/// One worker's samples.
#[derive(Default)]
struct Samples {
    /// Latency in microseconds per kind.
    latency: [Vec<u32>; 3],
    errors: [u64; 3],
    first_errors: Vec<String>,
}

/// The report of a run.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    url: String,
    workers: usize,
    duration_seconds: f64,
    requests: u64,
    throughput_per_second: f64,
    errors: u64,
    kinds: Vec<KindReport>,
    all: Percentiles,
    rss_mib: Vec<(f64, f64)>,
    rss_growth_after_warmup_mib: Option<f64>,
    first_errors: Vec<String>,
}

#[derive(Debug, Serialize)]
struct KindReport {
    kind: &'static str,
    requests: u64,
    errors: u64,
    latency_ms: Percentiles,
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Serialize, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let index = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            f64::from(samples[index]) / 1000.0
        };
        Self {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: rank(1.0),
        }
    }
}

/// Runs the load test and prints its report.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let mix = parse_mix(&args.mix)?;
    if args.workers == 0 || args.patients == 0 {
        bail!("--workers and --patients must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(load(&args, mix))?;
    print_report(&report);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.errors > 0 {
        bail!("{} requests failed", report.errors);
    }
    Ok(())
}

fn parse_mix(text: &str) -> anyhow::Result<[u32; 3]> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--mix {text:?}: three percentages, e.g. 60,25,15"))?;
    match parts.as_slice() {
        [r, s, w] if r + s + w > 0 => Ok([*r, *s, *w]),
        _ => bail!("--mix {text:?}: three percentages, e.g. 60,25,15"),
    }
}

async fn load(args: &LoadArgs, mix: [u32; 3]) -> anyhow::Result<LoadReport> {
    let base = args.url.trim_end_matches('/').to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.workers)
        .timeout(Duration::from_secs(60))
        .build()?;
    eprintln!("load: writing {} patients with observations", args.patients);
    let population = Arc::new(seed(&client, &base, args.token.as_deref(), args.patients).await?);
    eprintln!(
        "load: {} workers for {:.0} s (mix read/search/write {}/{}/{})",
        args.workers, args.duration, mix[0], mix[1], mix[2]
    );
    let stop = Arc::new(AtomicBool::new(false));
    let rss = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let sampler = args.pid.map(|pid| {
        let stop = stop.clone();
        let rss = rss.clone();
        let every = Duration::from_secs_f64(args.sample_seconds.max(0.5));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = resident_kib(pid) {
                    rss.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((started.elapsed().as_secs_f64(), kib as f64 / 1024.0));
                }
                tokio::time::sleep(every).await;
            }
        })
    });
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for worker in 0..args.workers {
        let client = client.clone();
        let base = base.clone();
        let token = args.token.clone();
        let population = population.clone();
        let mut rng = Rng::new(args.seed.wrapping_add(worker as u64 * 7919));
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            while Instant::now() < deadline {
                let kind = pick(&mut rng, mix);
                let (method, path, body) = request(kind, &population, &mut rng);
                let mut builder = client.request(method, format!("{base}/{path}"));
                if let Some(token) = &token {
                    builder = builder.bearer_auth(token);
                }
                if let Some(body) = body {
                    builder = builder
                        .header("content-type", "application/fhir+json")
                        .header("prefer", "return=minimal")
                        .body(body);
                }
                let sent = Instant::now();
                let result = match builder.send().await {
                    Ok(response) => {
                        let status = response.status();
                        match response.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(body) => Err(format!(
                                "{} {path}: {}",
                                status.as_u16(),
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            )),
                            Err(e) => Err(format!("{path}: reading the body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("{path}: {e}")),
                };
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                let k = kind as usize;
                samples.latency[k].push(micros);
                if let Err(error) = result {
                    samples.errors[k] += 1;
                    if samples.first_errors.len() < 5 {
                        samples.first_errors.push(error);
                    }
                }
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for task in tasks {
        let samples = task.await?;
        for k in 0..3 {
            all.latency[k].extend_from_slice(&samples.latency[k]);
            all.errors[k] += samples.errors[k];
        }
        all.first_errors.extend(samples.first_errors);
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let rss = rss
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(report(args, elapsed, all, rss))
}

fn report(args: &LoadArgs, elapsed: f64, mut all: Samples, rss: Vec<(f64, f64)>) -> LoadReport {
    let mut every: Vec<u32> = all.latency.iter().flatten().copied().collect();
    let requests = every.len() as u64;
    let kinds = KINDS
        .iter()
        .map(|kind| {
            let k = *kind as usize;
            KindReport {
                kind: kind.name(),
                requests: all.latency[k].len() as u64,
                errors: all.errors[k],
                latency_ms: Percentiles::of(&mut all.latency[k]),
            }
        })
        .collect();
    // Memory after the first 30 s (caches, pools and the allocator's arenas warm up) to the end.
    let warm = rss.iter().find(|(t, _)| *t >= 30.0).map(|(_, m)| *m);
    let growth = match (warm, rss.last()) {
        (Some(warm), Some((_, last))) => Some(last - warm),
        _ => None,
    };
    LoadReport {
        url: args.url.clone(),
        workers: args.workers,
        duration_seconds: elapsed,
        requests,
        throughput_per_second: requests as f64 / elapsed.max(f64::EPSILON),
        errors: all.errors.iter().sum(),
        kinds,
        all: Percentiles::of(&mut every),
        rss_mib: rss,
        rss_growth_after_warmup_mib: growth,
        first_errors: all.first_errors,
    }
}

fn print_report(report: &LoadReport) {
    println!(
        "load: {} requests in {:.0} s = {:.0}/s with {} workers; errors: {}",
        report.requests,
        report.duration_seconds,
        report.throughput_per_second,
        report.workers,
        report.errors
    );
    println!(
        "{:<8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "kind", "requests", "errors", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let rows = report
        .kinds
        .iter()
        .map(|k| (k.kind, k.requests, k.errors, &k.latency_ms))
        .chain(std::iter::once((
            "all",
            report.requests,
            report.errors,
            &report.all,
        )));
    for (name, requests, errors, p) in rows {
        println!(
            "{name:<8} {requests:>9} {errors:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            p.p50, p.p99, p.p999, p.max
        );
    }
    if !report.rss_mib.is_empty() {
        let series: Vec<String> = report
            .rss_mib
            .iter()
            .map(|(t, m)| format!("{t:.0}s:{m:.0}"))
            .collect();
        println!("server RSS (MiB): {}", series.join(" "));
        if let Some(growth) = report.rss_growth_after_warmup_mib {
            println!("RSS change from 30 s to the end: {growth:+.1} MiB");
        }
    }
    for error in &report.first_errors {
        println!("error: {error}");
    }
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn pick(rng: &mut Rng, mix: [u32; 3]) -> Kind {
    let total: u32 = mix.iter().sum();
    let mut draw = rng.below(total as usize) as u32;
    for (kind, weight) in KINDS.iter().zip(mix) {
        if draw < weight {
            return *kind;
        }
        draw -= weight;
    }
    Kind::Read
}

const FAMILIES: [&str; 12] = [
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun",
];
const CODES: [&str; 5] = ["8867-4", "9279-1", "8310-5", "29463-7", "8302-2"];

/// The next request of a kind: method, path relative to the base, body.
fn request(
    kind: Kind,
    population: &Population,
    rng: &mut Rng,
) -> (reqwest::Method, String, Option<Vec<u8>>) {
    let patient = &population.patients[rng.below(population.patients.len())];
    match kind {
        Kind::Read => {
            if rng.below(2) == 0 {
                (reqwest::Method::GET, format!("Patient/{patient}"), None)
            } else {
                let observation =
                    &population.observations[rng.below(population.observations.len())];
                (
                    reqwest::Method::GET,
                    format!("Observation/{observation}"),
                    None,
                )
            }
        }
        Kind::Search => {
            let family = &population.families[rng.below(population.families.len())];
            let path = match rng.below(5) {
                0 => format!("Patient?family={family}&_count=20"),
                1 => format!("Observation?subject=Patient/{patient}&_sort=-date"),
                2 => format!(
                    "Observation?code=http://loinc.org|{}&_count=20",
                    CODES[rng.below(CODES.len())]
                ),
                3 => format!(
                    "Patient?birthdate=ge{}-01-01&_count=20",
                    1940 + rng.below(60)
                ),
                _ => format!("Patient?identifier=urn:phip:load|{}", rng.below(1_000_000)),
            };
            (reqwest::Method::GET, path, None)
        }
        Kind::Write => {
            if rng.below(3) == 0 {
                let body = patient_resource(Some(patient.as_str()), rng);
                (
                    reqwest::Method::PUT,
                    format!("Patient/{patient}"),
                    Some(body.to_string().into_bytes()),
                )
            } else {
                let body = observation_resource(patient, rng);
                (
                    reqwest::Method::POST,
                    "Observation".into(),
                    Some(body.to_string().into_bytes()),
                )
            }
        }
    }
}

fn patient_resource(id: Option<&str>, rng: &mut Rng) -> Value {
    let family = FAMILIES[rng.below(FAMILIES.len())];
    let gender = if rng.below(2) == 0 { "female" } else { "male" };
    let mut patient = json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:phip:load", "value": rng.below(1_000_000).to_string()}],
        "name": [{"family": family, "given": [format!("G{}", rng.below(1000))]}],
        "gender": gender,
        "birthDate": format!("{}-{:02}-{:02}", 1940 + rng.below(80), 1 + rng.below(12), 1 + rng.below(28)),
    });
    if let Some(id) = id {
        patient["id"] = Value::String(id.to_owned());
    }
    patient
}

fn observation_resource(patient: &str, rng: &mut Rng) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": CODES[rng.below(CODES.len())]}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": format!("20{:02}-{:02}-{:02}T08:00:00Z", 10 + rng.below(15), 1 + rng.below(12), 1 + rng.below(28)),
        "valueQuantity": {"value": rng.below(2000) as f64 / 10.0, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// Writes the seed population in transaction Bundles of 100 patients and their observations.
async fn seed(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    patients: usize,
) -> anyhow::Result<Population> {
    let mut rng = Rng::new(1);
    let mut population = Population {
        patients: Vec::with_capacity(patients),
        observations: Vec::with_capacity(patients * 5),
        families: FAMILIES.iter().map(|f| (*f).to_owned()).collect(),
    };
    let mut next = 0;
    while next < patients {
        let batch = (patients - next).min(100);
        let mut entries = Vec::new();
        for _ in 0..batch {
            let patient_id = uuid::Uuid::new_v4().to_string();
            entries.push(json!({
                "resource": patient_resource(Some(patient_id.as_str()), &mut rng),
                "request": {"method": "PUT", "url": format!("Patient/{patient_id}")}
            }));
            for _ in 0..5 {
                let id = uuid::Uuid::new_v4().to_string();
                let mut observation = observation_resource(&patient_id, &mut rng);
                observation["id"] = Value::String(id.clone());
                entries.push(json!({
                    "resource": observation,
                    "request": {"method": "PUT", "url": format!("Observation/{id}")}
                }));
                population.observations.push(id);
            }
            population.patients.push(patient_id);
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let mut builder = client
            .post(base)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(bundle.to_string());
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        let response = builder.send().await.context("seeding")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("seeding failed with {status}: {body}");
        }
        next += batch;
    }
    Ok(population)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
    }

    #[test]
    fn the_mix_is_followed() {
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            counts[pick(&mut rng, [60, 25, 15]) as usize] += 1;
        }
        assert!((5700..6300).contains(&counts[0]), "{counts:?}");
        assert!((2200..2800).contains(&counts[1]), "{counts:?}");
        assert!((1200..1800).contains(&counts[2]), "{counts:?}");
        assert!(parse_mix("60,25").is_err());
        assert!(parse_mix("0,0,0").is_err());
    }
}
