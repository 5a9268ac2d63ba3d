//! EARS C1, C2 and C3 (CDC Early Aberration Reporting System), computed exactly as R's
//! `surveillance::earsC` computes them (package source `R/earsC.R`; Salmon, Schumacher and
//! Höhle, *J Stat Softw* 70(10), 2016; Fricker, Hegler and Dunfee, *Stat Med* 27, 2008).
//!
//! Notation: `Y(t)` is the count on day `t` (0-based here; R's indices are 1-based, the offsets
//! are the same), `b` the `baseline` length (default 7), `z = Φ⁻¹(1 − α)` the standard normal
//! quantile (R's `qnorm`; no Student t anywhere), and `σ(t) = max(S(t), minSigma)`, where `S`
//! is the sample standard deviation (denominator `b − 1`, R's `sd`).
//!
//! - **C1** ("mild"): baseline `Y(t−b) … Y(t−1)`, mean `Ȳ₁(t)`, sd `S₁(t)`.
//!   Upper bound `U₁(t) = Ȳ₁(t) + z·σ₁(t)`; statistic `C₁(t) = (Y(t) − Ȳ₁(t)) / σ₁(t)`.
//!   Needs `t ≥ b`.
//! - **C2** ("medium"): the same with a two-day guard band: baseline `Y(t−b−2) … Y(t−3)`.
//!   Upper bound `U₂(t) = Ȳ₂(t) + z·σ₂(t)`. Needs `t ≥ b + 2`.
//! - **C3** ("high"): statistic `C₃(t) = Σ_{i=t−2..t} max(0, C₂(i) − 1)` (R's documentation).
//!   R's *code* — which decides R's alarms — sets the upper bound to
//!   `U₃(t) = max(0, Y(t) + σ₂(t)·(z − max(0, C₂(t−1) − 1) − max(0, C₂(t−2) − 1)))`:
//!   it adds to the *observed* count, where its documentation writes `Ȳ₂(t)`. As a
//!   consequence R's C3 alarm (`Y(t) > U₃(t)`) fires when the two previous days' excesses
//!   alone sum past `z` (and `Y(t) > 0`), whatever today's count. phip follows the code, so
//!   its alarms are R's alarms; the documented statistic is reported alongside for the
//!   explanation. Needs `t ≥ b + 4`.
//!
//! An alarm is `Y(t) > U(t)`, strictly. When `σ = 0` (a constant baseline with
//! `minSigma = 0`) C1 and C2 alarm on any count above the constant, as R does; C3 divides by
//! zero, R's upper bound is `NaN` and its alarm `NA`: here the upper bound is `None` and there
//! is no alarm. A `minSigma` of 0.5 or 1 (Burkom's advice for sparse data) avoids both.
//!
//! Default α is R's: 0.001 for C1 and C2 (`z ≈ 3.09`), 0.025 for C3 (`z ≈ 1.96`).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::ParamError;

/// Which EARS method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EarsMethod {
    /// C1-MILD: baseline the `b` days just before.
    C1,
    /// C2-MEDIUM: baseline `b` days ending three days before (two-day guard band).
    C2,
    /// C3-HIGH: sum of the last three C2 excesses.
    C3,
}

impl EarsMethod {
    /// R's default α for this method when none is given.
    pub fn default_alpha(self) -> f64 {
        match self {
            EarsMethod::C1 | EarsMethod::C2 => 0.001,
            EarsMethod::C3 => 0.025,
        }
    }

    /// Display name (`"C1"`, …).
    pub fn name(self) -> &'static str {
        match self {
            EarsMethod::C1 => "C1",
            EarsMethod::C2 => "C2",
            EarsMethod::C3 => "C3",
        }
    }
}

/// Parameters of R's `earsC` `control` list (`range` aside: every computable day is
/// evaluated, or one day with [`ears_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarsParams {
    /// C1, C2 or C3.
    pub method: EarsMethod,
    /// Number of days in the baseline window, `b` (R: `baseline`, default 7, at least 3).
    #[serde(default = "default_baseline")]
    pub baseline: usize,
    /// One-sided error rate; `None` means R's default for the method
    /// ([`EarsMethod::default_alpha`]).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Floor for the standard deviation (R: `minSigma`, default 0).
    #[serde(default)]
    pub min_sigma: f64,
}

fn default_baseline() -> usize {
    7
}

impl EarsParams {
    /// R's defaults for `method`: `baseline = 7`, `minSigma = 0`, default α.
    pub fn new(method: EarsMethod) -> Self {
        Self {
            method,
            baseline: 7,
            alpha: None,
            min_sigma: 0.0,
        }
    }

    /// The α in force.
    pub fn effective_alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.method.default_alpha())
    }

    /// `z = Φ⁻¹(1 − α)`.
    pub fn z_alpha(&self) -> f64 {
        Normal::standard().inverse_cdf(1.0 - self.effective_alpha())
    }

    /// First (0-based) day that can be evaluated: `b`, `b + 2` or `b + 4` (R's `maxLag`).
    pub fn first_index(&self) -> usize {
        match self.method {
            EarsMethod::C1 => self.baseline,
            EarsMethod::C2 => self.baseline + 2,
            EarsMethod::C3 => self.baseline + 4,
        }
    }

    /// Checks the parameters as R does (and α inside (0, 1), which R leaves to `qnorm`).
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.baseline < 3 {
            return Err(ParamError::new("EARS baseline must be at least 3 days"));
        }
        if !(self.min_sigma >= 0.0 && self.min_sigma.is_finite()) {
            return Err(ParamError::new(
                "EARS minSigma must be a finite number >= 0",
            ));
        }
        let a = self.effective_alpha();
        if !(a > 0.0 && a < 1.0) {
            return Err(ParamError::new(
                "EARS alpha must lie strictly between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// The outcome of one day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarsPoint {
    /// 0-based day evaluated.
    pub index: usize,
    /// `Y(t)`.
    pub observed: f64,
    /// First day of the window `mean` and `sd` are taken over (C3: the C2 window of `t`;
    /// C3 also uses the windows of `t−1` and `t−2`, reaching two days further back).
    pub baseline_first: usize,
    /// Last day of that window (inclusive).
    pub baseline_last: usize,
    /// Baseline mean `Ȳ(t)`.
    pub mean: f64,
    /// Baseline sample standard deviation `S(t)` (before the `minSigma` floor).
    pub sd: f64,
    /// C1/C2: `(Y(t) − Ȳ)/σ`; C3: `C₃(t)`. `None` where undefined or infinite (σ = 0).
    pub statistic: Option<f64>,
    /// `U(t)`; `None` where R's is `NaN`.
    pub upper_bound: Option<f64>,
    /// `Y(t) > U(t)`.
    pub alarm: bool,
}

/// Evaluates every day from [`EarsParams::first_index`] to the end of `counts`, as R's
/// `earsC` with the default `range`. Empty when the series is too short.
pub fn ears<T: Copy + Into<f64>>(
    counts: &[T],
    params: &EarsParams,
) -> Result<Vec<EarsPoint>, ParamError> {
    ears_range(counts, params.first_index(), counts.len(), params)
}

/// Evaluates the days `from..to` (0-based, end exclusive), as R's `earsC` with
/// `range = (from+1):to`, except that days too early for the method are skipped rather than
/// refused (R stops with "The vector of observed is too short!").
pub fn ears_range<T: Copy + Into<f64>>(
    counts: &[T],
    from: usize,
    to: usize,
    params: &EarsParams,
) -> Result<Vec<EarsPoint>, ParamError> {
    params.validate()?;
    let from = from.max(params.first_index());
    let to = to.min(counts.len());
    if from >= to {
        return Ok(Vec::new());
    }
    // Only the days the method reads are converted.
    let offset = from - params.first_index();
    let y: Vec<f64> = counts[offset..to].iter().map(|&c| c.into()).collect();
    let z = params.z_alpha();
    Ok((from..to)
        .map(|t| shifted(point(&y, t - offset, params, z), offset))
        .collect())
}

/// Evaluates day `t` alone; `Ok(None)` if `t` is out of the series or too early for the
/// method.
pub fn ears_at<T: Copy + Into<f64>>(
    counts: &[T],
    t: usize,
    params: &EarsParams,
) -> Result<Option<EarsPoint>, ParamError> {
    Ok(ears_range(counts, t, t + 1, params)?.pop())
}

/// Moves a point computed on a slice starting at `offset` back to series indices.
fn shifted(mut p: EarsPoint, offset: usize) -> EarsPoint {
    p.index += offset;
    p.baseline_first += offset;
    p.baseline_last += offset;
    p
}

/// Baseline window `[first, last]` of day `t` for a lag of `lag` days (1 for C1, 3 for C2).
fn window(t: usize, b: usize, lag: usize) -> (usize, usize) {
    (t + 1 - lag - b, t - lag)
}

/// Mean and sample sd (two-pass, so a constant window gives exactly 0 as in R).
fn mean_sd(w: &[f64]) -> (f64, f64) {
    let n = w.len() as f64;
    let mean = w.iter().sum::<f64>() / n;
    let ss: f64 = w.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// R's `pmax(0, x)`: like `max` but `NaN` stays `NaN` (Rust's `f64::max` would drop it).
fn pmax0(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(0.0)
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// C2 of day `t` with its mean, sd and floored sd.
fn c2(y: &[f64], t: usize, p: &EarsParams) -> (f64, f64, f64, f64) {
    let (a, b) = window(t, p.baseline, 3);
    let (mean, sd) = mean_sd(&y[a..=b]);
    let sigma = sd.max(p.min_sigma);
    ((y[t] - mean) / sigma, mean, sd, sigma)
}

fn point(y: &[f64], t: usize, p: &EarsParams, z: f64) -> EarsPoint {
    let observed = y[t];
    match p.method {
        EarsMethod::C1 | EarsMethod::C2 => {
            let lag = if p.method == EarsMethod::C1 { 1 } else { 3 };
            let (first, last) = window(t, p.baseline, lag);
            let (mean, sd) = mean_sd(&y[first..=last]);
            let sigma = sd.max(p.min_sigma);
            let ub = mean + z * sigma;
            EarsPoint {
                index: t,
                observed,
                baseline_first: first,
                baseline_last: last,
                mean,
                sd,
                statistic: finite((observed - mean) / sigma),
                upper_bound: finite(ub),
                alarm: observed > ub,
            }
        }
        EarsMethod::C3 => {
            let (c2_t, mean, sd, sigma) = c2(y, t, p);
            let lag1 = pmax0(c2(y, t - 1, p).0 - 1.0);
            let lag2 = pmax0(c2(y, t - 2, p).0 - 1.0);
            // R: upperbound = pmax(0, observed + sigma * (zAlpha - (lag2 + lag1))).
            let ub = pmax0(observed + sigma * (z - (lag2 + lag1)));
            let (first, last) = window(t, p.baseline, 3);
            EarsPoint {
                index: t,
                observed,
                baseline_first: first,
                baseline_last: last,
                mean,
                sd,
                statistic: finite(pmax0(c2_t - 1.0) + lag1 + lag2),
                upper_bound: (!ub.is_nan()).then_some(ub),
                // R compares with NA and gets NA; NaN > x is false here, i.e. no alarm.
                alarm: observed > ub,
            }
        }
    }
}
