//! Fitting a [`Model`] to a set of records: u seeded from random pairs, then m, u and λ by EM
//! over the pairs the blocking index proposes.

use serde::{Deserialize, Serialize};

use crate::compare::compare;
use crate::index::{IndexConfig, MatchIndex};
use crate::model::{estimate_u, fit_em, EmOptions, EmReport, Model, Patterns};
use crate::record::MatchRecord;

/// Options of [`train`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// EM options.
    pub em: EmOptions,
    /// Random pairs compared to seed u.
    pub random_pairs: usize,
    /// Seed of the random pair sampler (runs are reproducible).
    pub seed: u64,
    /// Blocking configuration used to generate training pairs.
    pub index: IndexConfig,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            em: EmOptions::default(),
            random_pairs: 20_000,
            seed: 0x5eed,
            index: IndexConfig::default(),
        }
    }
}

/// How training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// EM convergence.
    pub em: EmReport,
    /// Random pairs compared to seed u.
    pub random_pairs: u64,
    /// Blocked pairs EM was fitted on.
    pub blocked_pairs: u64,
}

/// A small deterministic generator (SplitMix64) for pair sampling.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Comparison vectors of `count` random pairs (`left[i]`, `right[j]`), skipping identical
/// positions when both sides are the same slice.
pub(crate) fn random_patterns(
    left: &[&MatchRecord],
    right: &[&MatchRecord],
    same: bool,
    count: usize,
    seed: u64,
) -> Patterns {
    let mut patterns = Patterns::new();
    if left.is_empty() || right.is_empty() || (same && left.len() < 2) {
        return patterns;
    }
    let mut rng = SplitMix::new(seed);
    while patterns.total() < count as u64 {
        let (i, j) = (rng.below(left.len()), rng.below(right.len()));
        if same && i == j {
            continue;
        }
        patterns.add(compare(left[i], right[j]));
    }
    patterns
}

/// EM from a starting model whose u was seeded from `random`.
pub fn fit(
    blocked: &Patterns,
    random: &Patterns,
    start: &Model,
    em: &EmOptions,
) -> (Model, EmReport) {
    let seeded = estimate_u(random, start);
    fit_em(blocked, &seeded, em)
}

/// Trains a model on one set of records (deduplication): u seeded from random pairs, then EM
/// over every pair sharing a blocking key, starting from [`Model::default`].
pub fn train(records: &[MatchRecord], options: &TrainOptions) -> (Model, TrainReport) {
    let refs: Vec<&MatchRecord> = records.iter().collect();
    let random = random_patterns(&refs, &refs, true, options.random_pairs, options.seed);
    let mut index = MatchIndex::new(Model::default(), options.index);
    let mut blocked = Patterns::new();
    let mut slots = Vec::new();
    for (i, r) in records.iter().enumerate() {
        // Query before inserting: each unordered pair is compared once.
        index.candidate_slots(r, &mut slots);
        for &s in &slots {
            if let Some((_, other)) = index.slot(s) {
                blocked.add(compare(r, other));
            }
        }
        index.insert(&i.to_string(), r.clone());
    }
    let (model, em) = fit(&blocked, &random, &Model::default(), &options.em);
    let report = TrainReport {
        em,
        random_pairs: random.total(),
        blocked_pairs: blocked.total(),
    };
    (model, report)
}
