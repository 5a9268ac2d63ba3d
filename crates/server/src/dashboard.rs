//! `GET /dashboard?division=CODE&period=YYYY-MM`: the public-health dashboard, one HTML page
//! rendered on the server — indicator tiles and, per notifiable disease, the daily case series
//! of the 60 days to the end of the period as an SVG chart with the surveillance alerts
//! marked. No script, no external asset (inline CSS and SVG), bilingual labels, a text
//! alternative and a data table for every chart.
//!
//! Access: the page shows aggregates only (indicator counts and rates, daily counts, alerts),
//! but small-area daily counts can still point at people, so it is not public. It takes the
//! same bearer token as the FHIR API — in the `Authorization` header or in a `phip_token`
//! cookie (for browsers) — and applies the same rules as `$indicators`: the token must allow
//! MeasureReport search and not be patient-bound, and a region-bound token sees its own region
//! and the divisions inside it only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use phip_engine::{Engine, FhirError, FhirResult, Principal};
use phip_indicators::measures::Scoring;
use phip_indicators::{Facts, Period, MEASURES};
use phip_security::division;
use phip_surveillance::alert::ALERT_ID_SYSTEM;
use phip_surveillance::source::scan;
use phip_surveillance::{DailySeries, SurveillanceConfig};
use serde_json::Value;

use crate::handlers::Query;
use crate::AppState;

/// Days of case series shown.
const SERIES_DAYS: u64 = 60;

/// `GET /dashboard`.
pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = Query::new(raw);
    let division = query
        .get("division")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let period = query
        .get("period")
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let principal = match authenticate(&state, &headers) {
        Ok(p) => p,
        Err(e) => return html(StatusCode::UNAUTHORIZED, &error_page(&e)),
    };
    let engine = state.engine.clone();
    let config = state.surveillance.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let (code, period) = crate::public_health::indicator_scope(&principal, division, period)?;
        render(&engine, &config, &code, &period)
    })
    .await;
    match rendered {
        Ok(Ok(body)) => html(StatusCode::OK, &body),
        Ok(Err(e)) => html(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            &error_page(&diagnostics(&e)),
        ),
        Err(_) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            &error_page("internal error"),
        ),
    }
}

fn diagnostics(e: &FhirError) -> String {
    e.outcome
        .to_json()
        .pointer("/issue/0/diagnostics")
        .and_then(Value::as_str)
        .unwrap_or("request failed")
        .to_string()
}

/// The bearer token from the `Authorization` header, else from the `phip_token` cookie.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, String> {
    if headers.contains_key(header::AUTHORIZATION) {
        return crate::auth::authenticate(&state.config.auth, headers).map_err(|e| diagnostics(&e));
    }
    let cookie_token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("phip_token="))
        .next()
        .map(str::to_owned);
    let mut with_bearer = HeaderMap::new();
    match cookie_token {
        Some(token) => {
            if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                with_bearer.insert(header::AUTHORIZATION, v);
            }
        }
        None if matches!(state.config.auth, crate::auth::AuthMode::Required(_)) => {
            return Err(
                "authentication required: send Authorization: Bearer <access token> \
                        or the token in a phip_token cookie"
                    .into(),
            );
        }
        None => {}
    }
    crate::auth::authenticate(&state.config.auth, &with_bearer).map_err(|e| diagnostics(&e))
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            ),
        ],
        body.to_owned(),
    )
        .into_response()
}

/// HTML-escapes text.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans CJK SC','WenQuanYi Micro Hei',sans-serif;margin:1.5rem;color:#1b1b1b;background:#fafafa}\
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}\
form{display:flex;gap:1rem;align-items:end;flex-wrap:wrap;margin-bottom:1rem}\
label{display:flex;flex-direction:column;font-size:.85rem}input{font-size:1rem;padding:.3rem}\
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem}\
.tile{background:#fff;border:1px solid #ccd;border-radius:6px;padding:.8rem}\
.tile .value{font-size:1.8rem;font-weight:600;color:#0b4f8a}.tile .counts{font-size:.8rem;color:#555}\
figure{background:#fff;border:1px solid #ccd;border-radius:6px;padding:.8rem;margin:1rem 0}\
.alerts li{margin:.3rem 0}table{border-collapse:collapse;font-size:.8rem}td,th{border:1px solid #ccc;padding:2px 6px}";

fn error_page(message: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>公共卫生仪表盘 / Public health dashboard</title>\
         <style>{STYLE}</style></head><body><main><h1>公共卫生仪表盘 / Public health dashboard</h1>\
         <p role=\"alert\" id=\"error\">{}</p>{}</main></body></html>",
        esc(message),
        filter_form("", "")
    )
}

fn filter_form(code: &str, period: &str) -> String {
    format!(
        "<form method=\"get\" action=\"/dashboard\" aria-label=\"筛选 / Filter\">\
         <label for=\"division\">行政区划代码 / Division (GB/T 2260)<input id=\"division\" name=\"division\" value=\"{}\" pattern=\"[0-9]{{6}}\" required></label>\
         <label for=\"period\">统计期 / Period (YYYY-MM)<input id=\"period\" name=\"period\" value=\"{}\" pattern=\"[0-9]{{4}}(-[0-9]{{2}})?\"></label>\
         <button type=\"submit\">查看 / Show</button></form>",
        esc(code),
        esc(period)
    )
}

/// One stored alert, read back from its Communication.
struct StoredAlert {
    disease: String,
    date: NaiveDate,
    method: String,
    division: String,
    explanation: String,
}

/// Parses `disease-division-YYYY-MM-DD-method` from the right (disease ids may hold `-`).
fn parse_alert_id(value: &str) -> Option<(String, String, NaiveDate, String)> {
    let parts: Vec<&str> = value.rsplitn(6, '-').collect();
    if parts.len() != 6 {
        return None;
    }
    let date = NaiveDate::parse_from_str(
        &format!("{}-{}-{}", parts[3], parts[2], parts[1]),
        "%Y-%m-%d",
    )
    .ok()?;
    Some((
        parts[5].to_string(),
        parts[4].to_string(),
        date,
        parts[0].to_string(),
    ))
}

fn stored_alerts(
    engine: &Engine,
    code: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> FhirResult<Vec<StoredAlert>> {
    let mut tx = engine.store().begin_read()?;
    let mut out = Vec::new();
    let params = [("identifier".to_string(), format!("{ALERT_ID_SYSTEM}|"))];
    scan(tx.as_mut(), "Communication", &params, |c| {
        let id = c
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.get("system").and_then(Value::as_str) == Some(ALERT_ID_SYSTEM))
            .and_then(|i| i.get("value"))
            .and_then(Value::as_str);
        let Some((disease, div, date, method)) = id.and_then(parse_alert_id) else {
            return;
        };
        if !division::contains(code, &div) || date < from || date > to {
            return;
        }
        let explanation = c
            .pointer("/payload/0/contentString")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        out.push(StoredAlert {
            disease,
            date,
            method,
            division: div,
            explanation,
        });
    })?;
    out.sort_by(|a, b| (a.date, &a.method).cmp(&(b.date, &b.method)));
    Ok(out)
}

fn render(
    engine: &Engine,
    config: &SurveillanceConfig,
    code: &str,
    period: &Period,
) -> FhirResult<String> {
    let facts = Facts::collect(engine, config, period)?;
    let to = period.end;
    let from = to
        .checked_sub_days(Days::new(SERIES_DAYS - 1))
        .unwrap_or(to);
    let cases = phip_surveillance::run::read_cases(engine, config, from, to)?;
    let mut series: BTreeMap<String, DailySeries> = BTreeMap::new();
    for e in cases
        .events
        .iter()
        .filter(|e| division::contains(code, &e.division))
    {
        series
            .entry(e.disease.clone())
            .or_insert_with(|| DailySeries::zeros(from, to))
            .add(e.date, 1);
    }
    let alerts = stored_alerts(engine, code, from, to)?;
    for a in &alerts {
        series
            .entry(a.disease.clone())
            .or_insert_with(|| DailySeries::zeros(from, to));
    }
    let place = match division::name(code) {
        Some(n) => format!("{n}（{code}）"),
        None => code.to_string(),
    };
    let mut page = String::with_capacity(32 * 1024);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>公共卫生仪表盘 / Public health dashboard — {}</title><style>{STYLE}</style></head>\
         <body><main><h1>公共卫生仪表盘 / Public health dashboard</h1>\
         <p id=\"scope\">{} · {} ({} – {})</p>{}",
        esc(&place),
        esc(&place),
        esc(&period.label),
        period.start,
        period.end,
        filter_form(code, &period.label)
    );
    page.push_str("<section aria-labelledby=\"ind-h\"><h2 id=\"ind-h\">指标 / Indicators</h2><div class=\"tiles\">");
    for m in MEASURES {
        let r = facts.ratio(m, code);
        let value = match (r.score(m.scoring), m.scoring) {
            (None, _) => "—".to_string(),
            (Some(s), Scoring::Proportion) => format!("{:.1}%", s * 100.0),
            (Some(s), Scoring::PerHundredThousand) => format!("{s:.2}/10万"),
        };
        let _ = write!(
            page,
            "<div class=\"tile\" id=\"indicator-{}\" data-numerator=\"{}\" data-denominator=\"{}\">\
             <div class=\"name\">{} / {}</div><div class=\"value\">{}</div>\
             <div class=\"counts\">{} / {}</div></div>",
            m.id,
            r.numerator,
            r.denominator,
            esc(m.name_zh),
            esc(m.name_en),
            esc(&value),
            r.numerator,
            r.denominator
        );
    }
    page.push_str("</div></section>");
    let _ = write!(
        page,
        "<section aria-labelledby=\"sv-h\"><h2 id=\"sv-h\">传染病监测 / Notifiable disease surveillance ({from} – {to})</h2>"
    );
    if series.is_empty() {
        page.push_str("<p id=\"no-cases\">此期间无病例报告 / No case reports in this window.</p>");
    }
    for (disease, s) in &series {
        let label = config
            .disease(disease)
            .map(|d| format!("{} / {}", d.name_zh, d.name_en))
            .unwrap_or_else(|| disease.clone());
        let mine: Vec<&StoredAlert> = alerts.iter().filter(|a| &a.disease == disease).collect();
        page.push_str(&chart(disease, &label, s, &mine));
    }
    page.push_str("</section></main></body></html>");
    Ok(page)
}

/// A bar chart of daily counts with alert markers, its text alternative and data table.
fn chart(disease: &str, label: &str, s: &DailySeries, alerts: &[&StoredAlert]) -> String {
    let (w, h, left, bottom, top) = (1100.0_f64, 220.0_f64, 40.0_f64, 30.0_f64, 20.0_f64);
    let max = s.counts().iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = s.len().max(1) as f64;
    let step = (w - left - 10.0) / n;
    let y = |c: f64| h - bottom - (h - bottom - top) * c / max;
    let total: u64 = s.counts().iter().map(|&c| u64::from(c)).sum();
    let id = format!("chart-{}", esc(disease));
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<figure aria-labelledby=\"{id}-cap\"><figcaption id=\"{id}-cap\"><strong>{}</strong></figcaption>\
         <svg id=\"{id}\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\" viewBox=\"0 0 {w} {h}\" width=\"100%\" style=\"max-width:{w}px\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-t\">{} 每日病例 / daily cases</title>\
         <desc id=\"{id}-d\">{} – {}: {total} 例 / cases, 最多 / max {} 例 per day, {} 个预警 / alerts</desc>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        esc(label),
        esc(label),
        s.start(),
        s.end().unwrap_or(s.start()),
        max as u64,
        alerts.len(),
        h - bottom,
        w - 10.0,
        h - bottom,
        left - 4.0,
        top + 4.0,
        max as u64,
        left - 4.0,
        h - bottom
    );
    for (i, c) in s.counts().iter().enumerate() {
        let x = left + step * i as f64;
        let date = s.date_at(i).map(|d| d.to_string()).unwrap_or_default();
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7fb5\"><title>{date}: {c}</title></rect>",
            x + 1.0,
            y(f64::from(*c)),
            (step - 2.0).max(1.0),
            h - bottom - y(f64::from(*c))
        );
    }
    for (i, d) in [0, s.len().saturating_sub(1)].iter().enumerate() {
        if let Some(date) = s.date_at(*d) {
            let anchor = if i == 0 { "start" } else { "end" };
            let x = if i == 0 { left } else { w - 10.0 };
            let _ = write!(
                svg,
                "<text x=\"{x}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\">{date}</text>",
                h - 10.0
            );
        }
    }
    for a in alerts {
        let Some(i) = s.index_of(a.date) else {
            continue;
        };
        let x = left + step * i as f64 + step / 2.0;
        let c = f64::from(s.counts()[i]);
        let top_y = y(c) - 6.0;
        let _ = write!(
            svg,
            "<path class=\"alert-marker\" data-date=\"{}\" data-method=\"{}\" data-division=\"{}\" d=\"M{:.1} {:.1} l-6 -10 h12 z\" fill=\"#c62828\"><title>{} {} {}: {}</title></path>",
            a.date,
            esc(&a.method),
            esc(&a.division),
            x,
            top_y,
            a.date,
            esc(&a.method),
            esc(&a.division),
            esc(&a.explanation)
        );
    }
    svg.push_str("</svg>");
    if !alerts.is_empty() {
        svg.push_str("<ul class=\"alerts\" aria-label=\"预警 / Alerts\">");
        for a in alerts {
            let _ = write!(svg, "<li class=\"alert\">⚠ {}</li>", esc(&a.explanation));
        }
        svg.push_str("</ul>");
    }
    svg.push_str("<details><summary>数据表 / Data table</summary><table><thead><tr><th scope=\"col\">日期 / Date</th><th scope=\"col\">病例 / Cases</th></tr></thead><tbody>");
    for (i, c) in s.counts().iter().enumerate() {
        if let Some(d) = s.date_at(i) {
            let _ = write!(svg, "<tr><td>{d}</td><td>{c}</td></tr>");
        }
    }
    svg.push_str("</tbody></table></details></figure>");
    svg
}
