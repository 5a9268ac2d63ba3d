//! `phip bench mpi`: the master patient index matcher on the FEBRL benchmark data, optionally
//! side by side with Splink (`--splink`, which runs `tools/splink_febrl.py`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use phip_mpi::febrl::{self, Evaluation, RunOptions};
use serde_json::Value;

/// Options of `phip bench mpi`.
#[derive(Args, Debug, Clone)]
pub struct MpiArgs {
    /// Directory holding FEBRL's dataset3.csv, dataset4a.csv and dataset4b.csv.
    #[arg(long, default_value = "../shared/data/febrl")]
    pub febrl_dir: PathBuf,
    /// Also run Splink (tools/splink_febrl.py; creates a cached venv on first use).
    #[arg(long)]
    pub splink: bool,
    /// Path of the Splink script.
    #[arg(long, default_value = "tools/splink_febrl.py")]
    pub splink_script: PathBuf,
    /// Match probability threshold.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Worker threads of the comparison phase [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead of FEBRL: index this many synthetic Chinese residents and measure inserts,
    /// candidate queries and memory (how the index behaves at millions of records).
    #[arg(long)]
    pub scale: Option<usize>,
}

/// Runs the benchmark and prints its report.
pub fn run(args: MpiArgs) -> anyhow::Result<()> {
    if let Some(records) = args.scale {
        return crate::bench_mpi_scale::run(records);
    }
    let mut options = RunOptions {
        threshold: args.threshold,
        ..RunOptions::default()
    };
    if let Some(t) = args.threads {
        options.threads = t.max(1);
    }
    let load = |name: &str| {
        let path = args.febrl_dir.join(name);
        febrl::load(&path).with_context(|| format!("loading {}", path.display()))
    };
    let a = load("dataset4a.csv")?;
    let b = load("dataset4b.csv")?;
    let three = load("dataset3.csv")?;
    let link = febrl::link(&a, &b, &options);
    let dedupe = febrl::dedupe(&three, &options);
    let splink = if args.splink {
        Some(run_splink(&args)?)
    } else {
        None
    };
    if args.json {
        let strip = |e: &Evaluation| -> anyhow::Result<Value> {
            let mut v = serde_json::to_value(e)?;
            if let Some(o) = v.as_object_mut() {
                o.remove("model");
            }
            Ok(v)
        };
        let report = serde_json::json!({
            "febrl4_link": strip(&link)?,
            "febrl3_dedupe": strip(&dedupe)?,
            "splink": splink,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_section(
        "FEBRL4: dataset4a ⋈ dataset4b (link, one-to-one)",
        &link,
        splink.as_ref().and_then(|s| s.get("febrl4_link")),
    );
    print_section(
        "FEBRL3: dataset3 (dedupe)",
        &dedupe,
        splink.as_ref().and_then(|s| s.get("febrl3_dedupe")),
    );
    if let Some(v) = splink.as_ref().and_then(|s| s.get("splink_version")) {
        println!("splink version: {v}");
    }
    Ok(())
}

fn print_section(title: &str, ours: &Evaluation, splink: Option<&Value>) {
    println!("{title}");
    println!(
        "  {:<28} {:>14} {:>14}",
        "",
        "phip",
        if splink.is_some() { "splink" } else { "" }
    );
    let num = |k: &str| splink.and_then(|s| s.get(k)).and_then(Value::as_f64);
    let row = |label: &str, ours: String, theirs: Option<String>| {
        println!(
            "  {label:<28} {ours:>14} {:>14}",
            theirs.unwrap_or_default()
        );
    };
    row(
        "precision",
        format!("{:.4}", ours.precision),
        num("precision").map(|x| format!("{x:.4}")),
    );
    row(
        "recall",
        format!("{:.4}", ours.recall),
        num("recall").map(|x| format!("{x:.4}")),
    );
    row(
        "F1",
        format!("{:.4}", ours.f1),
        num("f1").map(|x| format!("{x:.4}")),
    );
    row(
        "true links",
        ours.true_links.to_string(),
        num("true").map(|x| format!("{x:.0}")),
    );
    row(
        "false links",
        ours.false_links.to_string(),
        num("false").map(|x| format!("{x:.0}")),
    );
    row(
        "missed",
        ours.missed.to_string(),
        num("missed").map(|x| format!("{x:.0}")),
    );
    row("comparisons", ours.comparisons.to_string(), None);
    row(
        "blocking recall",
        format!(
            "{:.4}",
            ours.true_pairs_blocked as f64 / ours.true_pairs.max(1) as f64
        ),
        None,
    );
    row(
        "records/s",
        format!("{:.0}", ours.records_per_second),
        num("records_per_second").map(|x| format!("{x:.0}")),
    );
    row(
        &format!("comparisons/s/core ({}t)", ours.threads),
        format!("{:.0}", ours.comparisons_per_second_per_core),
        None,
    );
    row(
        "wall time (s)",
        format!("{:.3}", ours.wall_seconds),
        num("wall_seconds").map(|x| format!("{x:.3}")),
    );
    row(
        "EM iterations",
        format!("{} (Δ {:.1e})", ours.em.iterations, ours.em.final_delta),
        None,
    );
    println!();
}

fn run_splink(args: &MpiArgs) -> anyhow::Result<Value> {
    eprintln!(
        "bench: running {} (first run installs Splink in a venv)",
        args.splink_script.display()
    );
    let out = Command::new("python3")
        .arg(&args.splink_script)
        .arg("--febrl-dir")
        .arg(&args.febrl_dir)
        .output()
        .with_context(|| format!("running {}", args.splink_script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.splink_script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).context("parsing the Splink script's JSON output")
}
