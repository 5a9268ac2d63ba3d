//! Runs a disease's configured methods over a division's series and collects the alerts.

use chrono::NaiveDate;

use crate::alert::Alert;
use crate::cidars::{cidars_at, CidarsParams};
use crate::config::{DiseaseConfig, EarsOptions, MethodConfig};
use crate::cusum::cusum;
use crate::ears::{ears_range, EarsMethod};
use crate::series::DailySeries;
use crate::ParamError;

/// Every alert that `disease`'s methods raise on `series` (the series of `division`) for the
/// days `from..=to`, in configuration order, then by date. Days before a method has enough
/// history are skipped by that method. CUSUM runs from the start of the series (its sum
/// carries over from earlier days) and is reported for the days asked for only.
pub fn detect(
    disease: &DiseaseConfig,
    division: &str,
    series: &DailySeries,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Alert>, ParamError> {
    let label = disease.label();
    let in_range = |i: usize| series.date_at(i).is_some_and(|d| d >= from && d <= to);
    // Index range of from..=to within the series (EARS reads only the days it needs).
    let first = series
        .index_of(from.max(series.start()))
        .unwrap_or(series.len());
    let end = series
        .end()
        .map_or(0, |e| series.index_of(to.min(e)).map_or(0, |i| i + 1));
    let mut alerts = Vec::new();
    for m in &disease.methods {
        let ears_run = |o: &EarsOptions, method: EarsMethod| -> Result<Vec<Alert>, ParamError> {
            let params = o.params(method);
            Ok(ears_range(series.counts(), first, end, &params)?
                .iter()
                .filter_map(|p| Alert::from_ears(&label, division, series, p, &params))
                .collect())
        };
        match m {
            MethodConfig::C1(o) => alerts.extend(ears_run(o, EarsMethod::C1)?),
            MethodConfig::C2(o) => alerts.extend(ears_run(o, EarsMethod::C2)?),
            MethodConfig::C3(o) => alerts.extend(ears_run(o, EarsMethod::C3)?),
            MethodConfig::Cusum(params) => alerts.extend(
                cusum(series.counts(), params)?
                    .iter()
                    .filter(|p| in_range(p.index))
                    .filter_map(|p| Alert::from_cusum(&label, division, series, p, params)),
            ),
            MethodConfig::Cidars(params) => alerts.extend(
                cidars_range(series, from, to, params)?
                    .into_iter()
                    .filter_map(|p| Alert::from_cidars(&label, division, &p, params)),
            ),
        }
    }
    Ok(alerts)
}

fn cidars_range(
    series: &DailySeries,
    from: NaiveDate,
    to: NaiveDate,
    params: &CidarsParams,
) -> Result<Vec<crate::cidars::CidarsPoint>, ParamError> {
    let mut out = Vec::new();
    for d in from.iter_days().take_while(|d| *d <= to) {
        if let Some(p) = cidars_at(series, d, params)? {
            out.push(p);
        }
    }
    Ok(out)
}
