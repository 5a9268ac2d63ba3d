//! The Fellegi–Sunter model: per-field m and u probabilities of each comparison level, a prior
//! probability λ that a compared pair matches, match weights log2(m/u), and EM estimation of
//! the parameters from unlabelled comparison vectors.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{Field, Vector, FIELD_COUNT, MISSING};

/// Smallest probability a level may have: keeps weights finite when a level was never seen.
const FLOOR: f64 = 1e-5;

/// m and u probabilities of one field's levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// The field.
    pub field: Field,
    /// P(level | match), one per level.
    pub m: Vec<f64>,
    /// P(level | non-match), one per level.
    pub u: Vec<f64>,
}

impl FieldParams {
    /// Match weight log2(m/u) of `level` (0 for [`MISSING`] or an unknown level).
    pub fn weight(&self, level: u8) -> f64 {
        let l = usize::from(level);
        match (self.m.get(l), self.u.get(l)) {
            (Some(m), Some(u)) => (m.max(FLOOR) / u.max(FLOOR)).log2(),
            _ => 0.0,
        }
    }
}

/// A fitted (or default) Fellegi–Sunter model. Serializable so a trained model can be stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Prior probability λ that a compared pair is a match.
    pub prior: f64,
    /// Parameters of every field, in [`Field::ALL`] order.
    pub fields: Vec<FieldParams>,
}

/// One field's contribution to a score, for the review queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldScore {
    /// The field.
    pub field: Field,
    /// Level index (0 = best; 255 = missing).
    pub level: u8,
    /// Level label (`"missing"` when either side lacks the field).
    pub label: String,
    /// Its weight log2(m/u) (0 when missing).
    pub weight: f64,
}

/// Converts a total match weight (log2 odds) to a probability.
pub fn probability(weight: f64) -> f64 {
    let odds = weight.exp2();
    if odds.is_infinite() {
        1.0
    } else {
        odds / (1.0 + odds)
    }
}

impl Default for Model {
    /// Parameters that work without training: m from typical error rates of registration
    /// data, u from the chance agreement of each level among unrelated people; λ 1e-4.
    fn default() -> Self {
        let p = |field, m: &[f64], u: &[f64]| FieldParams {
            field,
            m: m.to_vec(),
            u: u.to_vec(),
        };
        let name_m = [0.88, 0.03, 0.04, 0.02, 0.01, 0.02];
        Model {
            prior: 1e-4,
            fields: vec![
                p(
                    Field::FamilyName,
                    &name_m,
                    &[0.01, 0.005, 0.005, 0.01, 0.03, 0.94],
                ),
                p(
                    Field::GivenName,
                    &name_m,
                    &[0.01, 0.01, 0.005, 0.01, 0.03, 0.935],
                ),
                p(
                    Field::BirthDate,
                    &[0.9, 0.02, 0.05, 0.02, 0.01],
                    &[0.00005, 0.00005, 0.0003, 0.012, 0.98755],
                ),
                p(Field::Sex, &[0.98, 0.02], &[0.5, 0.5]),
                p(Field::Phone, &[0.8, 0.1, 0.1], &[0.0001, 0.0001, 0.9998]),
                p(
                    Field::Identifier,
                    &[0.9, 0.07, 0.03],
                    &[0.0001, 0.001, 0.9989],
                ),
                p(
                    Field::Division,
                    &[0.8, 0.1, 0.05, 0.05],
                    &[0.01, 0.05, 0.2, 0.74],
                ),
                p(Field::Postcode, &[0.85, 0.1, 0.05], &[0.01, 0.05, 0.94]),
                p(Field::Locality, &[0.85, 0.08, 0.07], &[0.01, 0.02, 0.97]),
                p(
                    Field::Street,
                    &[0.8, 0.1, 0.05, 0.05],
                    &[0.0005, 0.005, 0.05, 0.9445],
                ),
            ],
        }
    }
}

impl Model {
    /// Total match weight of a comparison vector: log2(λ/(1−λ)) + Σ log2(m/u).
    pub fn weight(&self, v: &Vector) -> f64 {
        let prior = (self.prior / (1.0 - self.prior)).log2();
        prior
            + self
                .fields
                .iter()
                .zip(v)
                .map(|(f, &l)| if l == MISSING { 0.0 } else { f.weight(l) })
                .sum::<f64>()
    }

    /// Match probability of a comparison vector.
    pub fn probability(&self, v: &Vector) -> f64 {
        probability(self.weight(v))
    }

    /// Per-field levels and weights of a comparison vector.
    pub fn breakdown(&self, v: &Vector) -> Vec<FieldScore> {
        self.fields
            .iter()
            .zip(v)
            .map(|(f, &l)| FieldScore {
                field: f.field,
                level: l,
                label: f.field.level_label(l).to_string(),
                weight: if l == MISSING { 0.0 } else { f.weight(l) },
            })
            .collect()
    }

    /// A lookup table of weights: `table[field][level]`, for scoring many vectors fast.
    pub fn weight_table(&self) -> WeightTable {
        let mut table = [[0.0f64; 8]; FIELD_COUNT];
        for (row, f) in table.iter_mut().zip(&self.fields) {
            for (l, w) in row.iter_mut().enumerate().take(f.m.len()) {
                *w = f.weight(l as u8);
            }
        }
        WeightTable {
            prior: (self.prior / (1.0 - self.prior)).log2(),
            table,
        }
    }
}

/// Precomputed weights of a [`Model`].
#[derive(Debug, Clone)]
pub struct WeightTable {
    prior: f64,
    table: [[f64; 8]; FIELD_COUNT],
}

impl WeightTable {
    /// Total match weight of `v` (same as [`Model::weight`]).
    pub fn weight(&self, v: &Vector) -> f64 {
        let mut w = self.prior;
        for (row, &l) in self.table.iter().zip(v) {
            if let Some(x) = row.get(usize::from(l)) {
                w += x;
            }
        }
        w
    }
}

/// Counts of distinct comparison vectors: the sufficient statistic EM works on.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    counts: HashMap<Vector, u64>,
}

impl Patterns {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one observed vector.
    pub fn add(&mut self, v: Vector) {
        *self.counts.entry(v).or_insert(0) += 1;
    }

    /// Number of vectors added.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Number of distinct vectors.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }

    /// (vector, count) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&Vector, u64)> {
        self.counts.iter().map(|(v, &c)| (v, c))
    }
}

/// Options of [`fit_em`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EmOptions {
    /// Stop after this many iterations.
    pub max_iterations: usize,
    /// Stop when no parameter moved by more than this.
    pub tolerance: f64,
    /// Keep u fixed at its starting values (e.g. estimated from random pairs) and estimate only
    /// m and λ.
    pub fix_u: bool,
}

impl Default for EmOptions {
    fn default() -> Self {
        EmOptions {
            max_iterations: 200,
            tolerance: 1e-6,
            fix_u: false,
        }
    }
}

/// How an EM run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmReport {
    /// Iterations run.
    pub iterations: usize,
    /// Largest parameter change in the last iteration.
    pub final_delta: f64,
    /// Whether `final_delta` fell below the tolerance.
    pub converged: bool,
    /// Comparison vectors the model was fitted on.
    pub pairs: u64,
    /// Distinct vectors among them.
    pub distinct_patterns: usize,
    /// Fitted λ.
    pub prior: f64,
}

/// Fits m, u (unless fixed) and λ by expectation–maximisation from `start`, treating
/// [`MISSING`] levels as uninformative. Levels are conditionally independent given match
/// status (the Fellegi–Sunter assumption).
pub fn fit_em(patterns: &Patterns, start: &Model, options: &EmOptions) -> (Model, EmReport) {
    let mut model = start.clone();
    let rows: Vec<(&Vector, f64)> = patterns.iter().map(|(v, c)| (v, c as f64)).collect();
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let mut report = EmReport {
        iterations: 0,
        final_delta: f64::INFINITY,
        converged: false,
        pairs: patterns.total(),
        distinct_patterns: patterns.distinct(),
        prior: model.prior,
    };
    if total == 0.0 {
        return (model, report);
    }
    for iteration in 1..=options.max_iterations {
        let mut m_acc: Vec<Vec<f64>> = model.fields.iter().map(|f| vec![0.0; f.m.len()]).collect();
        let mut u_acc = m_acc.clone();
        let mut matches = 0.0;
        for &(v, count) in &rows {
            // E step: posterior match probability of this pattern, in log space for range.
            let mut log_m = model.prior.max(FLOOR * FLOOR).ln();
            let mut log_u = (1.0 - model.prior).max(FLOOR).ln();
            for (f, &l) in model.fields.iter().zip(v.iter()) {
                if l == MISSING {
                    continue;
                }
                let l = usize::from(l);
                log_m += f.m.get(l).copied().unwrap_or(FLOOR).max(FLOOR).ln();
                log_u += f.u.get(l).copied().unwrap_or(FLOOR).max(FLOOR).ln();
            }
            let g = 1.0 / (1.0 + (log_u - log_m).exp());
            matches += g * count;
            for (i, &l) in v.iter().enumerate() {
                if l == MISSING {
                    continue;
                }
                if let Some(slot) = m_acc[i].get_mut(usize::from(l)) {
                    *slot += g * count;
                    u_acc[i][usize::from(l)] += (1.0 - g) * count;
                }
            }
        }
        // M step.
        let mut delta: f64 = 0.0;
        let prior = (matches / total).clamp(1e-9, 1.0 - 1e-9);
        delta = delta.max((prior - model.prior).abs());
        model.prior = prior;
        for (i, f) in model.fields.iter_mut().enumerate() {
            delta = delta.max(update(&mut f.m, &m_acc[i]));
            if !options.fix_u {
                delta = delta.max(update(&mut f.u, &u_acc[i]));
            }
        }
        report.iterations = iteration;
        report.final_delta = delta;
        if delta < options.tolerance {
            report.converged = true;
            break;
        }
    }
    report.prior = model.prior;
    (model, report)
}

/// Replaces `probs` with the normalised accumulator (floored), unless the field was never
/// observed; returns the largest change.
fn update(probs: &mut [f64], acc: &[f64]) -> f64 {
    let sum: f64 = acc.iter().sum();
    if sum <= 0.0 {
        return 0.0;
    }
    let mut delta: f64 = 0.0;
    let floored: Vec<f64> = acc.iter().map(|a| (a / sum).max(FLOOR)).collect();
    let norm: f64 = floored.iter().sum();
    for (p, new) in probs.iter_mut().zip(floored) {
        let new = new / norm;
        delta = delta.max((new - *p).abs());
        *p = new;
    }
    delta
}

/// u probabilities estimated as level frequencies among vectors of random (overwhelmingly
/// non-matching) pairs, as Splink does; fields never observed keep `fallback`'s u.
pub fn estimate_u(random_pairs: &Patterns, fallback: &Model) -> Model {
    let mut model = fallback.clone();
    for (i, f) in model.fields.iter_mut().enumerate() {
        let mut acc = vec![0.0; f.u.len()];
        for (v, c) in random_pairs.iter() {
            if let Some(slot) = acc.get_mut(usize::from(v[i])) {
                *slot += c as f64;
            }
        }
        update(&mut f.u, &acc);
    }
    model
}
