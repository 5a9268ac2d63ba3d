//! Alerts: what fired, on which count, against which baseline and threshold — explained in
//! English and Chinese, and rendered as FHIR R4 `Flag` and `Communication` resources.
//!
//! An alert must let the epidemiologist on duty check it by hand, so it carries the observed
//! count, the baseline (mean and sd and their window, or the percentile and its blocks), the
//! threshold and every parameter of the method.

use chrono::NaiveDate;
use phip_security::division;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cidars::{CidarsParams, CidarsPoint};
use crate::cusum::{CusumParams, CusumPoint};
use crate::ears::{EarsMethod, EarsParams, EarsPoint};
use crate::series::DailySeries;

/// System of phip's own disease ids (the `id` of each configured disease).
pub const DISEASE_ID_SYSTEM: &str = "urn:phip:surveillance:disease";
/// System of the Flag category phip uses for aberration alerts (FHIR's `flag-category` has no
/// public-health code; its binding is only an example).
pub const FLAG_CATEGORY_SYSTEM: &str = "urn:phip:surveillance:flag-category";
/// System of the alert identifier (`disease-division-date-method`), stable across re-runs so a
/// caller can create the resources conditionally and never twice.
pub const ALERT_ID_SYSTEM: &str = "urn:phip:surveillance:alert";
/// FHIR's communication category code system.
pub const COMMUNICATION_CATEGORY_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/communication-category";

/// A code with its system, as in FHIR's `Coding`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    /// Code system URI.
    pub system: String,
    /// Code.
    pub code: String,
    /// Human display (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

/// Which method raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertMethod {
    /// EARS C1.
    C1,
    /// EARS C2.
    C2,
    /// EARS C3.
    C3,
    /// One-sided CUSUM.
    #[serde(rename = "CUSUM")]
    Cusum,
    /// CIDARS moving percentile.
    #[serde(rename = "CIDARS")]
    Cidars,
}

impl AlertMethod {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            AlertMethod::C1 => "C1",
            AlertMethod::C2 => "C2",
            AlertMethod::C3 => "C3",
            AlertMethod::Cusum => "CUSUM",
            AlertMethod::Cidars => "CIDARS",
        }
    }
}

impl From<EarsMethod> for AlertMethod {
    fn from(m: EarsMethod) -> Self {
        match m {
            EarsMethod::C1 => AlertMethod::C1,
            EarsMethod::C2 => AlertMethod::C2,
            EarsMethod::C3 => AlertMethod::C3,
        }
    }
}

/// The baseline an alert was judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Baseline {
    /// A window of days summarised by mean and sd (EARS, CUSUM).
    MeanSd {
        /// Baseline mean.
        mean: f64,
        /// Baseline sample standard deviation.
        sd: f64,
        /// First day of the window.
        first: NaiveDate,
        /// Last day of the window.
        last: NaiveDate,
        /// The method's statistic (EARS C1/C2 z-score, C3 sum, CUSUM sum), when defined.
        statistic: Option<f64>,
    },
    /// Blocks of earlier years summarised by a percentile (CIDARS).
    Percentile {
        /// Percentile taken (e.g. 80).
        percentile: f64,
        /// Case count of each block.
        blocks: Vec<u64>,
        /// First day of the oldest block.
        first: NaiveDate,
        /// Last day of the newest block.
        last: NaiveDate,
        /// Days summed into the observed count and into each block.
        window_days: usize,
    },
}

/// Who/what an alert is about: the disease as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiseaseLabel {
    /// phip's disease id (e.g. `"HFMD"`).
    pub id: String,
    /// English name.
    pub name_en: String,
    /// Chinese name.
    pub name_zh: String,
    /// Standard code of the disease (ICD-10, SNOMED CT), if any.
    #[serde(default)]
    pub coding: Option<Coding>,
}

/// One aberration signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The disease.
    pub disease: DiseaseLabel,
    /// GB/T 2260 code of the division whose series fired.
    pub division: String,
    /// The day evaluated.
    pub date: NaiveDate,
    /// The method that fired.
    pub method: AlertMethod,
    /// Observed count (the day's, or the period's for CIDARS).
    pub observed: f64,
    /// The baseline it was compared with.
    pub baseline: Baseline,
    /// The threshold it exceeded (upper bound).
    pub threshold: f64,
    /// Every parameter of the method, as configured (serialised parameter struct).
    pub parameters: Value,
}

/// Language of an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

impl Alert {
    /// The alert of an EARS point on `series`, if it alarmed.
    pub fn from_ears(
        disease: &DiseaseLabel,
        division: &str,
        series: &DailySeries,
        point: &EarsPoint,
        params: &EarsParams,
    ) -> Option<Alert> {
        if !point.alarm {
            return None;
        }
        let mut parameters = serde_json::to_value(params).ok()?;
        if let Some(o) = parameters.as_object_mut() {
            // Record the α in force, not "default".
            o.insert("alpha".into(), json!(params.effective_alpha()));
        }
        Some(Alert {
            disease: disease.clone(),
            division: division.to_string(),
            date: series.date_at(point.index)?,
            method: params.method.into(),
            observed: point.observed,
            baseline: Baseline::MeanSd {
                mean: point.mean,
                sd: point.sd,
                first: series.date_at(point.baseline_first)?,
                last: series.date_at(point.baseline_last)?,
                statistic: point.statistic,
            },
            threshold: point.upper_bound?,
            parameters,
        })
    }

    /// The alert of a CUSUM point on `series`, if it alarmed.
    pub fn from_cusum(
        disease: &DiseaseLabel,
        division: &str,
        series: &DailySeries,
        point: &CusumPoint,
        params: &CusumParams,
    ) -> Option<Alert> {
        if !point.alarm {
            return None;
        }
        Some(Alert {
            disease: disease.clone(),
            division: division.to_string(),
            date: series.date_at(point.index)?,
            method: AlertMethod::Cusum,
            observed: point.observed,
            baseline: Baseline::MeanSd {
                mean: point.mean,
                sd: point.sd,
                first: series.date_at(point.baseline_first)?,
                last: series.date_at(point.baseline_last)?,
                statistic: Some(point.cusum),
            },
            threshold: point.upper_bound,
            parameters: serde_json::to_value(params).ok()?,
        })
    }

    /// The alert of a CIDARS point, if it alarmed.
    pub fn from_cidars(
        disease: &DiseaseLabel,
        division: &str,
        point: &CidarsPoint,
        params: &CidarsParams,
    ) -> Option<Alert> {
        if !point.alarm {
            return None;
        }
        Some(Alert {
            disease: disease.clone(),
            division: division.to_string(),
            date: point.date,
            method: AlertMethod::Cidars,
            observed: point.observed as f64,
            baseline: Baseline::Percentile {
                percentile: params.percentile,
                blocks: point.blocks.clone(),
                first: point.baseline_first,
                last: point.baseline_last,
                window_days: params.window_days,
            },
            threshold: point.threshold,
            parameters: serde_json::to_value(params).ok()?,
        })
    }

    /// Stable identifier value: `disease-division-date-method` (no `|`, which FHIR token
    /// search would need escaped).
    pub fn identifier(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.disease.id,
            self.division,
            self.date,
            self.method.name()
        )
    }

    fn param(&self, name: &str) -> Option<f64> {
        self.parameters.get(name).and_then(Value::as_f64)
    }

    /// The explanation: what was observed, the baseline, the threshold and the parameters.
    pub fn explanation(&self, lang: Lang) -> String {
        match lang {
            Lang::En => self.explain_en(),
            Lang::Zh => self.explain_zh(),
        }
    }

    fn explain_en(&self) -> String {
        let m = self.method.name();
        let d = &self.disease.name_en;
        let place = &self.division;
        let (obs, date, thr) = (fmt_num(self.observed), self.date, fmt1(self.threshold));
        match &self.baseline {
            Baseline::MeanSd {
                mean,
                sd,
                first,
                last,
                statistic,
            } => {
                let base = format!(
                    "baseline mean {}, sd {} over {first}..{last}",
                    fmt1(*mean),
                    fmt1(*sd)
                );
                let detail = match self.method {
                    AlertMethod::Cusum => format!(
                        "cumulative sum {} > h {}; {base}; k {}",
                        fmt_stat(*statistic),
                        fmt_num(self.param("h").unwrap_or(f64::NAN)),
                        fmt_num(self.param("k").unwrap_or(f64::NAN)),
                    ),
                    AlertMethod::C3 => format!(
                        "C3 statistic {}; {base}; alpha {}",
                        fmt_stat(*statistic),
                        fmt_num(self.param("alpha").unwrap_or(f64::NAN)),
                    ),
                    _ => format!(
                        "{base}, alpha {}",
                        fmt_num(self.param("alpha").unwrap_or(f64::NAN))
                    ),
                };
                format!(
                    "{m}: {obs} {} of {d} on {date} in {place} exceed the upper bound {thr} ({detail})",
                    cases_en(self.observed)
                )
            }
            Baseline::Percentile {
                percentile,
                blocks,
                first,
                last,
                window_days,
            } => {
                let years = self.param("years").unwrap_or(f64::NAN);
                let neighbours = self.param("neighbours").unwrap_or(f64::NAN);
                format!(
                    "{m}: {obs} {} of {d} in the {window_days} days to {date} in {place} exceed the \
                     P{} threshold {thr} of {} baseline periods (the same period and {} periods \
                     either side in each of the previous {} years, {first}..{last})",
                    cases_en(self.observed),
                    fmt_num(*percentile),
                    blocks.len(),
                    fmt_num(neighbours),
                    fmt_num(years),
                )
            }
        }
    }

    fn explain_zh(&self) -> String {
        let m = self.method.name();
        let d = &self.disease.name_zh;
        let place = match division::name(&self.division) {
            Some(n) => format!("{}（{n}）", self.division),
            None => self.division.clone(),
        };
        let (obs, date, thr) = (fmt_num(self.observed), self.date, fmt1(self.threshold));
        match &self.baseline {
            Baseline::MeanSd {
                mean,
                sd,
                first,
                last,
                statistic,
            } => {
                let base = format!(
                    "基线均值{}，标准差{}，基线期{first}至{last}",
                    fmt1(*mean),
                    fmt1(*sd)
                );
                let detail = match self.method {
                    AlertMethod::Cusum => format!(
                        "累积和{}，超过决策界值h={}；{base}；k={}",
                        fmt_stat(*statistic),
                        fmt_num(self.param("h").unwrap_or(f64::NAN)),
                        fmt_num(self.param("k").unwrap_or(f64::NAN)),
                    ),
                    AlertMethod::C3 => format!(
                        "C3统计量{}；{base}；α={}",
                        fmt_stat(*statistic),
                        fmt_num(self.param("alpha").unwrap_or(f64::NAN)),
                    ),
                    _ => format!(
                        "{base}，α={}",
                        fmt_num(self.param("alpha").unwrap_or(f64::NAN))
                    ),
                };
                format!("{m}：{date} {place} 报告{d} {obs} 例，超过预警上限 {thr}（{detail}）")
            }
            Baseline::Percentile {
                percentile,
                blocks,
                first,
                last,
                window_days,
            } => {
                let years = self.param("years").unwrap_or(f64::NAN);
                let neighbours = self.param("neighbours").unwrap_or(f64::NAN);
                format!(
                    "{m}：截至{date}的{window_days}天内 {place} 报告{d} {obs} 例，超过预警阈值 {thr}\
                     （前{}年同期及前后各{}个周期共{}个基线周期的P{}，{first}至{last}）",
                    fmt_num(years),
                    fmt_num(neighbours),
                    blocks.len(),
                    fmt_num(*percentile),
                )
            }
        }
    }

    fn disease_concept(&self) -> Value {
        let mut codings = Vec::new();
        if let Some(c) = &self.disease.coding {
            let mut coding = json!({ "system": c.system, "code": c.code });
            if let Some(display) = &c.display {
                coding["display"] = json!(display);
            }
            codings.push(coding);
        }
        codings.push(json!({
            "system": DISEASE_ID_SYSTEM,
            "code": self.disease.id,
            "display": self.disease.name_en,
        }));
        json!({ "coding": codings, "text": self.disease.name_en })
    }

    fn identifier_json(&self) -> Value {
        json!([{ "system": ALERT_ID_SYSTEM, "value": self.identifier() }])
    }

    /// The alert as an active FHIR R4 `Flag`: category "aberration", code the disease,
    /// `subject` the reference the caller gives (`Location/…`, `Organization/…` or `Group/…`
    /// standing for the division), period starting on the alert date.
    pub fn to_flag(&self, subject: &str) -> Value {
        json!({
            "resourceType": "Flag",
            "identifier": self.identifier_json(),
            "status": "active",
            "category": [{
                "coding": [{
                    "system": FLAG_CATEGORY_SYSTEM,
                    "code": "aberration",
                    "display": "Surveillance aberration",
                }],
                "text": format!("{} aberration", self.method.name()),
            }],
            "code": self.disease_concept(),
            "subject": { "reference": subject },
            "period": { "start": self.date.to_string() },
        })
    }

    /// The alert as a FHIR R4 `Communication` (category `alert`, priority `urgent`): the
    /// explanations in English and Chinese as payloads, `about` the subject and, when given,
    /// the Flag, `reasonCode` the disease. `status` is `completed`: the resource records a
    /// notice that has been composed; delivery goes through Subscriptions.
    pub fn to_communication(&self, subject: &str, flag: Option<&str>) -> Value {
        let mut about = vec![json!({ "reference": subject })];
        if let Some(f) = flag {
            about.push(json!({ "reference": f }));
        }
        json!({
            "resourceType": "Communication",
            "identifier": self.identifier_json(),
            "status": "completed",
            "category": [{
                "coding": [{
                    "system": COMMUNICATION_CATEGORY_SYSTEM,
                    "code": "alert",
                    "display": "Alert",
                }],
            }],
            "priority": "urgent",
            "about": about,
            "reasonCode": [self.disease_concept()],
            "payload": [
                { "contentString": self.explanation(Lang::En) },
                { "contentString": self.explanation(Lang::Zh) },
            ],
        })
    }
}

fn cases_en(n: f64) -> &'static str {
    if n == 1.0 {
        "case"
    } else {
        "cases"
    }
}

/// One decimal place (thresholds, means, sds).
fn fmt1(x: f64) -> String {
    format!("{x:.1}")
}

/// Integers without decimals, other numbers as Rust prints them (shortest round trip).
fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn fmt_stat(s: Option<f64>) -> String {
    s.map_or_else(|| "undefined".to_string(), |v| format!("{v:.2}"))
}
