//! HTML building blocks of the portal pages: the page frame, escaping, plain-language labels
//! of FHIR values, and SVG trend charts with text alternatives.

use std::fmt::Write as _;

use serde_json::Value;

/// The navigation a page shows.
pub(crate) enum Chrome<'a> {
    /// Signed out.
    Public,
    /// A resident, with the session's anti-forgery token.
    Resident(&'a str),
    /// A clinician, with the session's anti-forgery token and whether they dispense.
    Clinician(&'a str, bool),
}

/// HTML-escapes text.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A hidden anti-forgery field.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A whole page.
pub(crate) fn page(title: &str, chrome: &Chrome<'_>, main: &str) -> String {
    let nav = match chrome {
        Chrome::Public => String::new(),
        Chrome::Resident(csrf) => format!(
            "<nav aria-label=\"主导航 / Main\"><a href=\"/portal/me\">我的健康档案 / My record</a>\
             <a href=\"/portal/me#consent-h\">授权管理 / Consent</a><a href=\"/portal/me#access-h\">访问记录 / Access log</a>{}</nav>",
            logout(csrf)
        ),
        Chrome::Clinician(csrf, pharmacist) => format!(
            "<nav aria-label=\"主导航 / Main\"><a href=\"/portal/clinic\">查找患者 / Find patient</a>{}{}</nav>",
            if *pharmacist {
                "<a href=\"/portal/clinic/pharmacy\">处方调剂 / Dispense</a>"
            } else {
                ""
            },
            logout(csrf)
        ),
    };
    format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} — phip</title><link rel=\"stylesheet\" href=\"/portal/assets/portal.css\">\
         <script src=\"/portal/assets/portal.js\" defer></script></head>\
         <body><header><span class=\"brand\">phip 居民健康 / Health portal</span>{nav}</header>\
         <main id=\"main\">{main}</main></body></html>",
        esc(title)
    )
}

fn logout(csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/portal/logout\" class=\"inline\">{}<button type=\"submit\" id=\"sign-out\">退出 / Sign out</button></form>",
        csrf_field(csrf)
    )
}

/// The readable text of a CodeableConcept: its text, else the first display, else the code.
pub(crate) fn concept(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        return text.to_owned();
    }
    let codings = value.get("coding").and_then(Value::as_array);
    codings
        .into_iter()
        .flatten()
        .find_map(|c| c.get("display").and_then(Value::as_str))
        .or_else(|| {
            codings
                .into_iter()
                .flatten()
                .find_map(|c| c.get("code").and_then(Value::as_str))
        })
        .unwrap_or("")
        .to_owned()
}

/// The first code of a CodeableConcept, as `system|code`.
pub(crate) fn code_key(value: Option<&Value>) -> Option<String> {
    let coding = value?.get("coding")?.as_array()?.first()?;
    Some(format!(
        "{}|{}",
        coding.get("system").and_then(Value::as_str).unwrap_or(""),
        coding.get("code").and_then(Value::as_str)?
    ))
}

/// The institution holding a record, from the tag the server stamps at write.
pub(crate) fn holder(resource: &Value) -> Option<String> {
    resource
        .pointer("/meta/tag")?
        .as_array()?
        .iter()
        .find(|t| {
            t.get("system").and_then(Value::as_str) == Some(phip_engine::consent::HOLDER_TAG_SYSTEM)
        })?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// The clinically relevant date of a record (first of the usual date elements).
pub(crate) fn clinical_date(resource: &Value) -> String {
    const PATHS: &[&str] = &[
        "/effectiveDateTime",
        "/effectivePeriod/start",
        "/occurrenceDateTime",
        "/onsetDateTime",
        "/recordedDate",
        "/authoredOn",
        "/period/start",
        "/issued",
        "/meta/lastUpdated",
    ];
    PATHS
        .iter()
        .find_map(|p| resource.pointer(p).and_then(Value::as_str))
        .unwrap_or("")
        .to_owned()
}

/// A number of a JSON value (numbers are arbitrary precision).
pub(crate) fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// An Observation's value in words.
pub(crate) fn observation_value(resource: &Value) -> String {
    if let Some(q) = resource.get("valueQuantity") {
        let v = q.get("value").map(|v| match v {
            Value::Number(n) => n.to_string(),
            other => other.as_str().unwrap_or("").to_owned(),
        });
        let unit = q
            .get("unit")
            .or_else(|| q.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("");
        return format!("{} {unit}", v.unwrap_or_default())
            .trim()
            .to_owned();
    }
    if let Some(s) = resource.get("valueString").and_then(Value::as_str) {
        return s.to_owned();
    }
    if resource.get("valueCodeableConcept").is_some() {
        return concept(resource.get("valueCodeableConcept"));
    }
    let parts: Vec<String> = resource
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| format!("{} {}", concept(c.get("code")), observation_value(c)))
        .collect();
    parts.join("; ")
}

/// One series of a trend chart.
pub(crate) struct Series {
    /// What is measured.
    pub label: String,
    /// Unit of the values.
    pub unit: String,
    /// (date, value), oldest first.
    pub points: Vec<(String, f64)>,
}

/// A line chart of one series as inline SVG, with a text alternative and a data table.
pub(crate) fn line_chart(id: &str, series: &Series) -> String {
    let (w, h, left, right, top, bottom) = (560.0_f64, 200.0_f64, 48.0, 12.0, 14.0, 28.0);
    let values: Vec<f64> = series.points.iter().map(|(_, v)| *v).collect();
    let (mut min, mut max) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    if values.is_empty() {
        (min, max) = (0.0, 1.0);
    }
    if (max - min).abs() < f64::EPSILON {
        min -= 1.0;
        max += 1.0;
    }
    let n = values.len().max(2) as f64 - 1.0;
    let x = |i: usize| left + (w - left - right) * i as f64 / n;
    let y = |v: f64| h - bottom - (h - top - bottom) * (v - min) / (max - min);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let first = series.points.first().map(|p| p.0.as_str()).unwrap_or("");
    let last = series.points.last().map(|p| p.0.as_str()).unwrap_or("");
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{label}</figcaption>\
         <svg role=\"img\" aria-labelledby=\"{id}-t {id}-d\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-t\">{label}</title><desc id=\"{id}-d\">{count} 次测量 / measurements, {first} – {last}, 范围 / range {min:.1}–{max:.1} {unit}</desc>\
         <line x1=\"{left}\" y1=\"{base}\" x2=\"{xend}\" y2=\"{base}\" stroke=\"#777\"/>\
         <text x=\"{lx}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{max:.1}</text>\
         <text x=\"{lx}\" y=\"{base}\" font-size=\"11\" text-anchor=\"end\">{min:.1}</text>\
         <polyline fill=\"none\" stroke=\"#0b6e4f\" stroke-width=\"2\" points=\"{pts}\"/>",
        label = esc(&series.label),
        count = values.len(),
        first = esc(first),
        last = esc(last),
        unit = esc(&series.unit),
        base = h - bottom,
        xend = w - right,
        lx = left - 4.0,
        ty = top + 4.0,
        pts = points.join(" "),
    );
    for (i, (date, v)) in series.points.iter().enumerate() {
        let _ = write!(
            svg,
            "<circle class=\"point\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#0b6e4f\"><title>{}: {v} {}</title></circle>",
            x(i),
            y(*v),
            esc(date),
            esc(&series.unit)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text></svg>",
        h - 8.0,
        esc(&first.chars().take(10).collect::<String>()),
        w - right,
        h - 8.0,
        esc(&last.chars().take(10).collect::<String>())
    );
    svg.push_str("<details><summary>数据表 / Data table</summary><table><thead><tr><th scope=\"col\">日期 / Date</th><th scope=\"col\">数值 / Value</th></tr></thead><tbody>");
    for (date, v) in &series.points {
        let _ = write!(
            svg,
            "<tr><td>{}</td><td>{v} {}</td></tr>",
            esc(date),
            esc(&series.unit)
        );
    }
    svg.push_str("</tbody></table></details></figure>");
    svg
}

/// An error page.
pub(crate) fn error_page(chrome: &Chrome<'_>, message: &str) -> String {
    page(
        "出错了 / Error",
        chrome,
        &format!(
            "<h1>出错了 / Something went wrong</h1><p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            esc(message)
        ),
    )
}
