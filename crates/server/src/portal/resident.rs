//! The resident portal: the person's record from every institution, trends, the health code,
//! consent management (deny an organisation, withdraw a denial) and who accessed the record.
//!
//! The session token is bound to the resident's golden record. Reading the records of each
//! source record the index links to it uses a token bound to that source record, minted for
//! the same subject: the set of source records comes from the index, never from the browser.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use phip_security::token::Grant;
use serde_json::{json, Value};

use super::records::{collect, demographics, render as render_record, sources_of};
use super::render::{csrf_field, error_page, esc, page, Chrome};
use super::{fhir, field, form, html, redirect, AppState, Session};

const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// Tag on the Consents the portal writes, so withdrawing touches only the resident's own.
const PORTAL_TAG: &str = "urn:phip:portal";

fn resident(state: &AppState, headers: &HeaderMap) -> Result<(Session, String), &'static str> {
    match Session::from_headers(state, headers) {
        Some(s) => match s.grant_patient.clone() {
            Some(golden) => Ok((s, golden)),
            None => Err("/portal/clinic"),
        },
        None => Err("/portal/login"),
    }
}

/// A token for one of the resident's source records, of the same session (signing out ends
/// it too).
fn source_token(state: &AppState, session: &Session, patient: &str, scope: &str) -> Option<String> {
    session
        .derived_token(
            state,
            Grant {
                sub: session.subject.clone(),
                scope: scope.into(),
                patient: Some(patient.to_owned()),
                ..Grant::default()
            },
        )
        .ok()
}

/// The golden record and its sources, each with a read token.
async fn person(
    state: &AppState,
    session: &Session,
    golden: &str,
) -> Result<(Value, Vec<(String, String)>), String> {
    let read = fhir(
        state,
        &session.token,
        Method::GET,
        &format!("Patient/{golden}"),
        None,
        None,
    )
    .await;
    if !read.ok() {
        return Err(read.diagnostics());
    }
    let sources = sources_of(&read.body)
        .into_iter()
        .filter_map(|p| {
            let token = source_token(state, session, &p, "patient/*.rs")?;
            Some((p, token))
        })
        .collect();
    Ok((read.body, sources))
}

/// `GET /portal/me`.
pub(crate) async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let state = super::for_request(&state, &headers);
    let (session, golden) = match resident(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let csrf = session.csrf();
    let chrome = Chrome::Resident(&csrf);
    let (patient, sources) = match person(&state, &session, &golden).await {
        Ok(p) => p,
        Err(e) => return html(StatusCode::BAD_GATEWAY, error_page(&chrome, &e)),
    };
    let record = collect(&state, &sources).await;
    let denials = active_denials(&state, &sources).await;
    let accesses = access_log(&state, &sources, &session.subject, &golden).await;
    let mut main = String::from("<h1>我的健康档案 / My health record</h1>");
    main.push_str(&demographics(&patient));
    let _ = write!(
        main,
        "<p class=\"hint\" id=\"sources\">来自 {} 个机构的记录 / Records from {} institution(s): {}</p>",
        record.holders().len(),
        record.holders().len(),
        esc(&record.holders().join(", "))
    );
    main.push_str(
        "<section aria-labelledby=\"h-code\" id=\"health-code\"><h2 id=\"h-code\">电子健康码 / Health code</h2>\
         <img src=\"/portal/me/health-code.svg\" alt=\"我的电子健康码（二维码） / My health code (QR)\" width=\"220\" height=\"220\">\
         <p class=\"hint\">就诊时出示，医生扫码即可调阅档案 / Show it at a clinic so staff can find your record.</p></section>",
    );
    main.push_str(&render_record(&record));
    main.push_str(&consent_section(&csrf, &record.holders(), &denials));
    main.push_str(&access_section(&accesses));
    html(
        StatusCode::OK,
        page("我的健康档案 / My health record", &chrome, &main),
    )
}

/// Organisations the resident currently denies, with the Consents that say so.
async fn active_denials(
    state: &AppState,
    sources: &[(String, String)],
) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (patient, token) in sources {
        let found = fhir(
            state,
            token,
            Method::GET,
            &format!("Consent?patient=Patient/{patient}&status=active"),
            None,
            None,
        )
        .await;
        for consent in found.matches() {
            if consent.pointer("/provision/type").and_then(Value::as_str) != Some("deny") {
                continue;
            }
            let actors: Vec<String> = consent
                .pointer("/provision/actor")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.pointer("/reference/reference").and_then(Value::as_str))
                .filter_map(|r| r.strip_prefix("Organization/"))
                .map(str::to_owned)
                .collect();
            for org in actors {
                match out.iter_mut().find(|(o, _)| *o == org) {
                    Some((_, list)) => list.push(consent.clone()),
                    None => out.push((org, vec![consent.clone()])),
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn consent_section(csrf: &str, holders: &[String], denials: &[(String, Vec<Value>)]) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"consent-h\" id=\"consent\"><h2 id=\"consent-h\">授权管理 / Who may see my records</h2>\
         <p class=\"hint\">默认情况下，辖区内为您诊疗的机构可以调阅您的档案。您可以拒绝某个机构。 / \
         By default, institutions caring for you in your region may see your record; you can refuse any of them.</p>",
    );
    if denials.is_empty() {
        out.push_str(
            "<p id=\"no-denials\">您未拒绝任何机构 / You have not refused any institution.</p>",
        );
    } else {
        out.push_str("<ul id=\"denials\">");
        for (org, _) in denials {
            let _ = write!(
                out,
                "<li class=\"denied\" data-org=\"{o}\">已拒绝 / Refused: <strong>{o}</strong> \
                 <form method=\"post\" action=\"/portal/me/consent\" class=\"inline\">{}\
                 <input type=\"hidden\" name=\"organization\" value=\"{o}\"><input type=\"hidden\" name=\"action\" value=\"allow\">\
                 <button type=\"submit\">撤销拒绝 / Allow again</button></form></li>",
                csrf_field(csrf),
                o = esc(org)
            );
        }
        out.push_str("</ul>");
    }
    let mut options = String::new();
    for h in holders {
        if !denials.iter().any(|(o, _)| o == h) {
            let _ = write!(options, "<option value=\"{0}\">{0}</option>", esc(h));
        }
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/portal/me/consent\" class=\"card\" id=\"deny-form\">{}\
         <input type=\"hidden\" name=\"action\" value=\"deny\">\
         <label for=\"deny-org\">拒绝机构调阅 / Refuse access to</label>\
         <input id=\"deny-org\" name=\"organization\" list=\"holders\" required pattern=\"[A-Za-z0-9\\-\\.]{{1,64}}\">\
         <datalist id=\"holders\">{options}</datalist>\
         <button type=\"submit\" id=\"deny\">拒绝 / Refuse</button></form></section>",
        csrf_field(csrf)
    );
    out
}

/// One access to the record.
struct Access {
    when: String,
    who: String,
    organization: String,
    action: String,
    outcome: String,
}

/// Whether an AuditEvent's requestor is the resident's own portal session (its subject, bound
/// to one of the resident's records, no organisation) or the portal's own sign-in service.
/// The whole recorded identity decides, not the subject name: a backend client or an
/// organisation's user that happens to use the same name is listed like anyone else.
fn own_or_portal(event: &Value, me: &str, golden: &str, sources: &[(String, String)]) -> bool {
    let agents = event.get("agent").and_then(Value::as_array);
    // Exactly one agent: the requestor, with no OAuth client application beside it.
    let Some([agent]) = agents.map(Vec::as_slice) else {
        return false;
    };
    let subject = agent
        .pointer("/who/identifier")
        .filter(|i| {
            i.get("system").and_then(Value::as_str) == Some(phip_audit::event::SUBJECT_ID_SYSTEM)
        })
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str);
    if agent.get("extension").is_some() {
        return false; // acting for an organisation
    }
    let bound = agent.pointer("/who/reference").and_then(Value::as_str);
    match subject {
        Some(s) if s == me => bound
            .and_then(|r| r.strip_prefix("Patient/"))
            .is_some_and(|p| p == golden || sources.iter().any(|(source, _)| source == p)),
        Some("phip-portal") => bound.is_none(),
        _ => false,
    }
}

/// Accesses to any of the resident's source records by anyone but the resident.
async fn access_log(
    state: &AppState,
    sources: &[(String, String)],
    me: &str,
    golden: &str,
) -> Vec<Access> {
    let mut out = Vec::new();
    for (patient, token) in sources {
        let found = fhir(
            state,
            token,
            Method::GET,
            &format!("AuditEvent?patient=Patient/{patient}&_count=100"),
            None,
            None,
        )
        .await;
        for event in found.matches() {
            let Some(agent) = event.get("agent").and_then(Value::as_array).and_then(|a| {
                a.iter()
                    .find(|a| a.get("requestor") == Some(&Value::Bool(true)))
            }) else {
                continue;
            };
            let who = agent
                .pointer("/who/identifier/value")
                .or_else(|| agent.pointer("/who/reference"))
                .or_else(|| agent.pointer("/who/display"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if own_or_portal(&event, me, golden, sources) {
                continue;
            }
            out.push(Access {
                when: event
                    .get("recorded")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                who,
                organization: agent
                    .pointer("/extension/0/valueReference/reference")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                action: event
                    .pointer("/subtype/0/code")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                outcome: match event.get("outcome").and_then(Value::as_str) {
                    Some("0") => "成功 / allowed".into(),
                    _ => "被拒绝或失败 / refused or failed".into(),
                },
            });
        }
    }
    out.sort_by(|a, b| b.when.cmp(&a.when));
    out
}

fn access_section(accesses: &[Access]) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"access-h\" id=\"access\"><h2 id=\"access-h\">谁查看了我的档案 / Who accessed my records</h2>",
    );
    if accesses.is_empty() {
        out.push_str("<p id=\"no-access\">暂无他人访问 / No one else has accessed your records.</p></section>");
        return out;
    }
    out.push_str("<table id=\"access-log\"><thead><tr><th scope=\"col\">时间 / When</th><th scope=\"col\">访问者 / Who</th><th scope=\"col\">机构 / Organisation</th><th scope=\"col\">操作 / Action</th><th scope=\"col\">结果 / Outcome</th></tr></thead><tbody>");
    for a in accesses.iter().take(200) {
        let _ = write!(
            out,
            "<tr class=\"access\"><td>{}</td><td class=\"who\">{}</td><td class=\"org\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.when),
            esc(&a.who),
            esc(&a.organization),
            esc(&a.action),
            esc(&a.outcome)
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// `POST /portal/me/consent` (form `organization`, `action` = `deny` | `allow`, `csrf`).
pub(crate) async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let state = super::for_request(&state, &headers);
    let (session, golden) = match resident(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let csrf = session.csrf();
    let chrome = Chrome::Resident(&csrf);
    let fields = form(&body);
    if !session.check_csrf(field(&fields, "csrf")) {
        return html(
            StatusCode::FORBIDDEN,
            error_page(&chrome, "表单已失效，请重试 / The form expired; try again"),
        );
    }
    let org = field(&fields, "organization").unwrap_or("");
    let valid_id = !org.is_empty()
        && org.len() <= 64
        && org
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_id {
        return html(
            StatusCode::BAD_REQUEST,
            error_page(&chrome, "请填写机构编号 / Enter an organisation id"),
        );
    }
    let (_, sources) = match person(&state, &session, &golden).await {
        Ok(p) => p,
        Err(e) => return html(StatusCode::BAD_GATEWAY, error_page(&chrome, &e)),
    };
    let scope = "patient/*.rs patient/Consent.cru";
    let mut failures = Vec::new();
    match field(&fields, "action") {
        Some("deny") => {
            for (patient, _) in &sources {
                let Some(token) = source_token(&state, &session, patient, scope) else {
                    continue;
                };
                let consent = json!({
                    "resourceType": "Consent",
                    "meta": {"tag": [{"system": PORTAL_TAG, "code": "resident-consent"}]},
                    "status": "active",
                    "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "patient": {"reference": format!("Patient/{patient}")},
                    "dateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
                    "provision": {"type": "deny", "actor": [{
                        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                        "reference": {"reference": format!("Organization/{org}")}}]}
                });
                let created = fhir(
                    &state,
                    &token,
                    Method::POST,
                    "Consent",
                    Some(&consent),
                    None,
                )
                .await;
                if !created.ok() {
                    failures.push(created.diagnostics());
                }
            }
        }
        Some("allow") => {
            let denials = active_denials(&state, &sources).await;
            for consent in denials
                .iter()
                .filter(|(o, _)| o == org)
                .flat_map(|(_, c)| c)
            {
                let patient = consent
                    .pointer("/patient/reference")
                    .and_then(Value::as_str)
                    .and_then(|r| r.strip_prefix("Patient/"))
                    .unwrap_or_default();
                let id = consent
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some(token) = source_token(&state, &session, patient, scope) else {
                    continue;
                };
                let mut withdrawn = consent.clone();
                withdrawn["status"] = json!("inactive");
                let updated = fhir(
                    &state,
                    &token,
                    Method::PUT,
                    &format!("Consent/{id}"),
                    Some(&withdrawn),
                    None,
                )
                .await;
                if !updated.ok() {
                    failures.push(updated.diagnostics());
                }
            }
        }
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                error_page(&chrome, "unknown action"),
            )
        }
    }
    if failures.is_empty() {
        redirect("/portal/me#consent-h")
    } else {
        html(
            StatusCode::BAD_GATEWAY,
            error_page(&chrome, &failures.join("; ")),
        )
    }
}

/// `GET /portal/me/health-code.svg`: the resident's health code QR, issued for them.
pub(crate) async fn health_code(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let state = super::for_request(&state, &headers);
    let (session, golden) = match resident(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let issued = fhir(
        &state,
        &session.token,
        Method::GET,
        &format!("Patient/{golden}/$health-code"),
        None,
        Some("image/svg+xml"),
    )
    .await;
    if !issued.ok() {
        return (
            StatusCode::from_u16(issued.status).unwrap_or(StatusCode::BAD_GATEWAY),
            issued.diagnostics(),
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        issued.raw,
    )
        .into_response()
}
