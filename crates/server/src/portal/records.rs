//! The cross-institution health record of one person, read through the API from each of the
//! person's source records (the index's golden record links them), and its HTML rendering:
//! sections per kind of record with the holding institution, a plain-language timeline and
//! trend charts. Shared by the resident's home page and the clinician's patient summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::Method;
use serde_json::Value;

use super::render::{
    clinical_date, code_key, concept, esc, holder, line_chart, number, observation_value, Series,
};
use super::{fhir, AppState};

/// Kinds of record shown, with their section titles and timeline verbs.
const KINDS: &[(&str, &str, &str)] = &[
    ("Condition", "问题与诊断 / Problems", "诊断 / diagnosed"),
    (
        "AllergyIntolerance",
        "过敏 / Allergies",
        "记录过敏 / allergy recorded",
    ),
    (
        "MedicationRequest",
        "用药 / Medications",
        "开具处方 / prescribed",
    ),
    (
        "Immunization",
        "预防接种 / Immunisations",
        "接种 / immunised",
    ),
    ("Encounter", "就诊 / Encounters", "就诊 / visit"),
    ("Observation", "检查检验结果 / Results", "检测 / measured"),
];

/// Most records of one kind read per source record.
const PER_KIND: usize = 200;

/// One person's records, from all their source records.
#[derive(Default)]
pub(crate) struct Record {
    /// Records by resource type.
    pub by_kind: BTreeMap<&'static str, Vec<Value>>,
    /// Read failures (for example, a consent denial), shown rather than hidden.
    pub problems: Vec<String>,
}

impl Record {
    /// Every institution holding any of the records.
    pub fn holders(&self) -> Vec<String> {
        let mut out: Vec<String> = self.by_kind.values().flatten().filter_map(holder).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The source records linked from `golden` (the golden record itself when it has none).
pub(crate) fn sources_of(golden: &Value) -> Vec<String> {
    let id = golden.get("id").and_then(Value::as_str).unwrap_or_default();
    let mut out: Vec<String> = golden
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some("seealso"))
        .filter_map(|l| l.pointer("/other/reference").and_then(Value::as_str))
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .collect();
    if out.is_empty() {
        out.push(id.to_owned());
    }
    out
}

/// Reads the records of each `(source patient id, token)` pair.
pub(crate) async fn collect(state: &AppState, sources: &[(String, String)]) -> Record {
    let mut record = Record::default();
    for (patient, token) in sources {
        for (kind, _, _) in KINDS {
            let found = fhir(
                state,
                token,
                Method::GET,
                &format!("{kind}?patient=Patient/{patient}&_count={PER_KIND}"),
                None,
                None,
            )
            .await;
            if found.ok() {
                record
                    .by_kind
                    .entry(kind)
                    .or_default()
                    .extend(found.matches());
            } else {
                record.problems.push(format!(
                    "{kind} / Patient/{patient}: {}",
                    found.diagnostics()
                ));
            }
        }
    }
    for list in record.by_kind.values_mut() {
        list.sort_by_key(|r| std::cmp::Reverse(clinical_date(r)));
    }
    record
}

/// Demographics of a Patient as a definition list.
pub(crate) fn demographics(patient: &Value) -> String {
    let name = patient
        .get("name")
        .and_then(Value::as_array)
        .and_then(|n| n.first())
        .map(|n| {
            n.get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    let family = n.get("family").and_then(Value::as_str).unwrap_or("");
                    let given: Vec<&str> = n
                        .get("given")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    format!("{family}{}", given.join(""))
                })
        })
        .unwrap_or_default();
    let gender = match patient.get("gender").and_then(Value::as_str) {
        Some("male") => "男 / male",
        Some("female") => "女 / female",
        Some("other") => "其他 / other",
        _ => "未知 / unknown",
    };
    let birth = patient
        .get("birthDate")
        .and_then(Value::as_str)
        .unwrap_or("");
    format!(
        "<dl class=\"demographics\" id=\"demographics\"><dt>姓名 / Name</dt><dd id=\"patient-name\">{}</dd>\
         <dt>性别 / Sex</dt><dd>{gender}</dd><dt>出生日期 / Born</dt><dd>{}</dd></dl>",
        esc(&name),
        esc(birth)
    )
}

fn what(kind: &str, r: &Value) -> String {
    match kind {
        "MedicationRequest" => concept(r.get("medicationCodeableConcept")),
        "Immunization" => concept(r.get("vaccineCode")),
        "Encounter" => {
            let t = concept(r.get("type").and_then(|t| t.get(0)));
            if t.is_empty() {
                r.pointer("/class/display")
                    .or_else(|| r.pointer("/class/code"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            } else {
                t
            }
        }
        _ => concept(r.get("code")),
    }
}

fn detail(kind: &str, r: &Value) -> String {
    match kind {
        "Observation" => observation_value(r),
        "Condition" => concept(r.get("clinicalStatus")),
        "AllergyIntolerance" => r
            .get("criticality")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        "MedicationRequest" => r
            .pointer("/dosageInstruction/0/text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                r.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            }),
        _ => r
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// The record as HTML sections.
pub(crate) fn render(record: &Record) -> String {
    let mut out = String::new();
    if !record.problems.is_empty() {
        out.push_str("<div class=\"notice\" role=\"status\" id=\"withheld\"><p>部分记录无法显示 / Some records could not be shown:</p><ul>");
        for p in &record.problems {
            let _ = write!(out, "<li>{}</li>", esc(p));
        }
        out.push_str("</ul></div>");
    }
    for (kind, title, _) in KINDS {
        let list = record.by_kind.get(kind).map(Vec::as_slice).unwrap_or(&[]);
        let _ = write!(
            out,
            "<section aria-labelledby=\"h-{kind}\" id=\"section-{kind}\"><h2 id=\"h-{kind}\">{title} <span class=\"count\">({})</span></h2>",
            list.len()
        );
        if list.is_empty() {
            out.push_str("<p class=\"empty\">暂无记录 / None recorded</p></section>");
            continue;
        }
        out.push_str("<table><thead><tr><th scope=\"col\">日期 / Date</th><th scope=\"col\">项目 / Item</th><th scope=\"col\">详情 / Detail</th><th scope=\"col\">机构 / Institution</th></tr></thead><tbody>");
        for r in list {
            let _ = write!(
                out,
                "<tr class=\"record\" data-type=\"{kind}\" data-holder=\"{h}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"holder\">{h}</td></tr>",
                esc(&clinical_date(r)),
                esc(&what(kind, r)),
                esc(&detail(kind, r)),
                h = esc(&holder(r).unwrap_or_else(|| "—".into())),
            );
        }
        out.push_str("</tbody></table></section>");
    }
    out.push_str(&trends(record));
    out.push_str(&timeline(record));
    out
}

/// Trend charts: one per measured quantity with at least two values.
fn trends(record: &Record) -> String {
    let mut by_code: BTreeMap<String, Series> = BTreeMap::new();
    for r in record.by_kind.get("Observation").into_iter().flatten() {
        let (Some(key), Some(value)) = (
            code_key(r.get("code")),
            number(r.pointer("/valueQuantity/value")),
        ) else {
            continue;
        };
        let series = by_code.entry(key).or_insert_with(|| Series {
            label: concept(r.get("code")),
            unit: r
                .pointer("/valueQuantity/unit")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            points: Vec::new(),
        });
        series.points.push((clinical_date(r), value));
    }
    let mut out = String::from(
        "<section aria-labelledby=\"h-trends\" id=\"trends\"><h2 id=\"h-trends\">生命体征与检验趋势 / Vital sign and lab trends</h2>",
    );
    let mut shown = 0;
    for (i, series) in by_code.values_mut().enumerate() {
        if series.points.len() < 2 {
            continue;
        }
        series.points.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(&line_chart(&format!("trend-{i}"), series));
        shown += 1;
    }
    if shown == 0 {
        out.push_str(
            "<p class=\"empty\">测量次数不足以显示趋势 / Not enough measurements for a trend</p>",
        );
    }
    out.push_str("</section>");
    out
}

/// Every record in date order, in plain words.
fn timeline(record: &Record) -> String {
    let mut events: Vec<(String, String)> = Vec::new();
    for (kind, _, verb) in KINDS {
        for r in record.by_kind.get(kind).into_iter().flatten() {
            let holder = holder(r).unwrap_or_else(|| "—".into());
            let mut text = format!("{verb}: {}", what(kind, r));
            let d = detail(kind, r);
            if *kind == "Observation" && !d.is_empty() {
                let _ = write!(text, " = {d}");
            }
            let _ = write!(text, " @ {holder}");
            events.push((clinical_date(r), text));
        }
    }
    events.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out = String::from(
        "<section aria-labelledby=\"h-timeline\" id=\"timeline\"><h2 id=\"h-timeline\">健康时间线 / Timeline</h2><ol class=\"timeline\">",
    );
    for (date, text) in events.iter().take(100) {
        let _ = write!(
            out,
            "<li><time>{}</time> {}</li>",
            esc(&date.chars().take(10).collect::<String>()),
            esc(text)
        );
    }
    out.push_str("</ol></section>");
    out
}
