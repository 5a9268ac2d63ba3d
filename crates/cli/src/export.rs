//! `phip export`: a FHIR Bulk Data export straight from the store, without a server. It runs
//! the same job code as `$export` (same parameters, same NDJSON files, same checkpoints), with
//! the output directory as the job directory: running the command again on an interrupted
//! export resumes it.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use phip_bulk::{
    job, prepare, run_job, ExportConfig, ExportLevel, ExportRequest, JobControl, JobState,
    JobStatus, Proceed, RunOutcome,
};
use phip_engine::{Engine, EngineConfig, Principal, RequestContext};

/// `phip export` options.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: crate::StoreArgs,
    /// Output directory (created; an interrupted export in it is resumed).
    #[arg(long)]
    out: PathBuf,
    /// Resource types to export (comma-separated or repeated) [default: all].
    #[arg(long = "type", value_name = "TYPES")]
    types: Vec<String>,
    /// Only resources last updated at or after this instant (e.g. 2024-01-31T00:00:00+08:00).
    #[arg(long)]
    since: Option<String>,
    /// A FHIR search restricting one type, e.g. `Observation?category=laboratory` (repeatable).
    #[arg(long = "type-filter", value_name = "QUERY")]
    type_filters: Vec<String>,
    /// Elements to keep (`id,Patient.name`); the rest are left out.
    #[arg(long)]
    elements: Option<String>,
    /// Export the Patient compartments (all patients) instead of the whole store.
    #[arg(long, conflicts_with = "group")]
    patients: bool,
    /// Export the compartments of this Group's member patients.
    #[arg(long, value_name = "ID")]
    group: Option<String>,
    /// Largest NDJSON file, in MiB; a type with more data gets several files.
    #[arg(long, default_value_t = 256)]
    max_file_mb: u64,
}

/// Prints each type as it completes.
struct Progress {
    done: Cell<usize>,
    started: Instant,
}

impl JobControl for Progress {
    fn proceed(&self, state: &JobState) -> Proceed {
        let done = state.types.iter().filter(|t| t.done).count();
        for t in state.types.iter().filter(|t| t.done).skip(self.done.get()) {
            let count = t.count();
            if count > 0 {
                eprintln!(
                    "{:>10} {} ({:.1} s)",
                    count,
                    t.resource_type,
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
        self.done.set(done);
        Proceed::Continue
    }
}

impl ExportArgs {
    fn request(&self) -> anyhow::Result<ExportRequest> {
        let level = match (&self.group, self.patients) {
            (Some(id), _) => ExportLevel::Group(id.clone()),
            (None, true) => ExportLevel::Patient,
            (None, false) => ExportLevel::System,
        };
        let mut params = Vec::new();
        if !self.types.is_empty() {
            params.push(("_type".to_owned(), self.types.join(",")));
        }
        if let Some(since) = &self.since {
            params.push(("_since".to_owned(), since.clone()));
        }
        for filter in &self.type_filters {
            params.push(("_typeFilter".to_owned(), filter.clone()));
        }
        if let Some(elements) = &self.elements {
            params.push(("_elements".to_owned(), elements.clone()));
        }
        ExportRequest::parse(level, &params, true).map_err(|e| anyhow::anyhow!("{}", e.outcome))
    }
}

/// Runs `phip export`.
pub(crate) fn run(file: &crate::config::FileConfig, args: ExportArgs) -> anyhow::Result<()> {
    let config = crate::config::store_config(file, &args.store);
    let store = phip_store::open_store(&config)
        .with_context(|| format!("opening the store ({})", config.describe()))?;
    let engine = Arc::new(Engine::new(store, EngineConfig::default()));
    let export_config = ExportConfig {
        max_file_bytes: args.max_file_mb.max(1) << 20,
        ..ExportConfig::default()
    };
    let (dir, mut state) = open_job(&engine, &args)?;
    let started = Instant::now();
    let before = state.exported();
    let control = Progress {
        done: Cell::new(state.types.iter().filter(|t| t.done).count()),
        started,
    };
    let outcome = run_job(&engine, &dir, &mut state, &export_config, &control)
        .map_err(|e| anyhow::anyhow!("export failed: {e}"))?;
    if outcome != RunOutcome::Completed {
        bail!("the export stopped before completing; run the command again to resume");
    }
    let seconds = started.elapsed().as_secs_f64();
    let written = state.exported() - before;
    println!(
        "exported {} resources of {} types into {} files in {:.1} s ({:.0} resources/s); transactionTime {}",
        state.exported(),
        state.types.iter().filter(|t| t.count() > 0).count(),
        state.types.iter().map(|t| t.parts.len()).sum::<usize>(),
        seconds,
        written as f64 / seconds.max(1e-9),
        state.transaction_time_text()
    );
    if let Some(peak) = peak_rss_kib() {
        println!("peak memory (VmHWM): {:.1} MiB", peak as f64 / 1024.0);
    }
    Ok(())
}

/// The job in `--out`: a new one, or the unfinished one found there.
fn open_job(engine: &Engine, args: &ExportArgs) -> anyhow::Result<(PathBuf, JobState)> {
    let dir = args.out.clone();
    if dir.join(job::STATE_FILE).exists() {
        let state = job::load(&dir).with_context(|| format!("reading {}", dir.display()))?;
        return match state.status {
            JobStatus::Queued | JobStatus::Running => {
                eprintln!(
                    "resuming the export in {} ({} resources so far)",
                    dir.display(),
                    state.exported()
                );
                Ok((dir, state))
            }
            _ => bail!(
                "{} already holds a finished export; choose another --out",
                dir.display()
            ),
        };
    }
    if dir.exists() && !is_empty_dir(&dir)? {
        bail!("{} exists and is not empty", dir.display());
    }
    let ctx = RequestContext::new(
        "urn:phip:cli",
        Principal::unrestricted("phip export (operator)"),
    );
    let state = prepare(engine, &ctx, args.request()?, "phip export")
        .map_err(|e| anyhow::anyhow!("{}", e.outcome))?;
    // The job directory is the output directory itself.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    job::save(&dir, &state).with_context(|| format!("writing {}", dir.display()))?;
    Ok((dir, state))
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .next()
        .is_none())
}

/// The process's peak resident set size in KiB (Linux `VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
