//! The moving percentile method of CIDARS, China's Infectious Disease Automated-alert and
//! Response System (中国传染病自动预警信息系统, running nationally since 2008).
//!
//! Source, as understood here: Yang W, Li Z, Lan Y, et al. "A nationwide web-based automated
//! system for outbreak early detection and rapid response in China", *Western Pacific
//! Surveillance and Response Journal* 2(1), 2011; and the threshold study of Wang R, Jiang Y,
//! et al., *BMC Public Health* 17:472, 2017 ("How to select a proper early warning threshold
//! … based on CIDARS"). Every day, for every county and disease:
//!
//! - the **current period** is the `window_days` (7) days ending on the day evaluated, and its
//!   observed count `O` their sum;
//! - the **baseline** is, in each of the `years` (3) previous years, the same calendar period
//!   and the `neighbours` (2) periods of the same length before and after it — 5 blocks a
//!   year, 15 in all;
//! - the **threshold** is the `percentile`-th percentile of the 15 block sums (CIDARS sets P50
//!   to P80 per disease; default P80 here), and a signal is raised when `O` exceeds it
//!   (`O > threshold`) and `O ≥ min_observed` (so an all-zero baseline does not make one case
//!   of a common disease a signal unless configured to).
//!
//! "The same period in year −y" is the day evaluated minus `y` calendar years (29 February
//! becomes 28 February). Percentiles interpolate linearly between order statistics (R's
//! default `quantile` type 7, Excel's `PERCENTILE.INC`).

use chrono::{Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::series::DailySeries;
use crate::ParamError;

/// Moving-percentile parameters (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CidarsParams {
    /// Length of a period in days.
    pub window_days: usize,
    /// Previous years in the baseline.
    pub years: u32,
    /// Periods taken on each side of the same period, each year.
    pub neighbours: u32,
    /// Percentile of the baseline blocks used as threshold, in (0, 100].
    pub percentile: f64,
    /// Smallest observed count that can raise a signal.
    pub min_observed: u64,
}

impl Default for CidarsParams {
    fn default() -> Self {
        Self {
            window_days: 7,
            years: 3,
            neighbours: 2,
            percentile: 80.0,
            min_observed: 1,
        }
    }
}

impl CidarsParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.window_days == 0 {
            return Err(ParamError::new("CIDARS window_days must be at least 1"));
        }
        if self.years == 0 {
            return Err(ParamError::new("CIDARS years must be at least 1"));
        }
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return Err(ParamError::new("CIDARS percentile must lie in (0, 100]"));
        }
        Ok(())
    }

    /// Number of baseline blocks: `years · (2·neighbours + 1)`.
    pub fn blocks(&self) -> usize {
        self.years as usize * (2 * self.neighbours as usize + 1)
    }
}

/// The outcome of one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CidarsPoint {
    /// Day evaluated (last day of the current period).
    pub date: NaiveDate,
    /// Cases in the current period.
    pub observed: u64,
    /// Case count of each baseline block, oldest year first, earliest block first.
    pub blocks: Vec<u64>,
    /// First day of the oldest block.
    pub baseline_first: NaiveDate,
    /// Last day of the most recent block.
    pub baseline_last: NaiveDate,
    /// The percentile of `blocks`.
    pub threshold: f64,
    /// `observed > threshold && observed >= min_observed`.
    pub alarm: bool,
}

/// Linear-interpolation percentile (R type 7) of `values`, `p` in [0, 100]; `None` if empty.
pub fn percentile(values: &[u64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * (p / 100.0).clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// Evaluates `date`; `Ok(None)` when the series does not cover the current period or the
/// whole baseline (less than `years` years of history).
pub fn cidars_at(
    series: &DailySeries,
    date: NaiveDate,
    params: &CidarsParams,
) -> Result<Option<CidarsPoint>, ParamError> {
    params.validate()?;
    let w = params.window_days;
    let Some(observed) = series.window_sum(date, w) else {
        return Ok(None);
    };
    let n = i64::from(params.neighbours);
    let mut blocks = Vec::with_capacity(params.blocks());
    let mut first = None;
    let mut last = None;
    for y in (1..=params.years).rev() {
        let Some(same) = date.checked_sub_months(Months::new(12 * y)) else {
            return Ok(None);
        };
        for j in -n..=n {
            let Some(end) = shift(same, j * w as i64) else {
                return Ok(None);
            };
            let Some(sum) = series.window_sum(end, w) else {
                return Ok(None);
            };
            blocks.push(sum);
            first = first.or_else(|| end.checked_sub_days(Days::new(w as u64 - 1)));
            last = Some(end);
        }
    }
    let (Some(baseline_first), Some(baseline_last), Some(threshold)) =
        (first, last, percentile(&blocks, params.percentile))
    else {
        return Ok(None);
    };
    Ok(Some(CidarsPoint {
        date,
        observed,
        blocks,
        baseline_first,
        baseline_last,
        threshold,
        alarm: observed as f64 > threshold && observed >= params.min_observed,
    }))
}

/// Evaluates every day of `series` that has enough history.
pub fn cidars(series: &DailySeries, params: &CidarsParams) -> Result<Vec<CidarsPoint>, ParamError> {
    params.validate()?;
    let mut out = Vec::new();
    for i in 0..series.len() {
        let Some(date) = series.date_at(i) else { break };
        if let Some(p) = cidars_at(series, date, params)? {
            out.push(p);
        }
    }
    Ok(out)
}

fn shift(d: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        d.checked_add_days(Days::new(days as u64))
    } else {
        d.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}
