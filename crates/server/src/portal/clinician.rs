//! The clinician portal: find a patient through the index (resident ID, name and birth date,
//! or a scanned health code), the cross-institution summary, the referral inbox and outbox
//! with accept / reject, and — for pharmacists — prescriptions to dispense.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};

use super::records::{collect, demographics, render as render_record, sources_of};
use super::render::{concept, csrf_field, error_page, esc, page, Chrome};
use super::{enc, fhir, field, form, html, redirect, AppState, Session};

/// Identifier system of the resident ID card number (GB 11643).
const RESIDENT_ID_SYSTEM: &str = "urn:oid:2.16.156.10011.1.1";

fn clinician(state: &AppState, headers: &HeaderMap) -> Result<Session, &'static str> {
    match Session::from_headers(state, headers) {
        Some(s) if s.grant_patient.is_none() => Ok(s),
        Some(_) => Err("/portal/me"),
        None => Err("/portal/login"),
    }
}

/// A clinician's form post: signed in, with a valid anti-forgery token.
struct ClinicianPost {
    state: AppState,
    session: Session,
    csrf: String,
    fields: Vec<(String, String)>,
}

/// Checks the session and the form's anti-forgery token of a clinician's POST; the refusal
/// (a redirect to sign in, or a 403 page) otherwise.
fn clinician_post(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ClinicianPost, Box<Response>> {
    let state = super::for_request(state, headers);
    let session = clinician(&state, headers).map_err(|to| Box::new(redirect(to)))?;
    let csrf = session.csrf();
    let fields = form(body);
    if !session.check_csrf(field(&fields, "csrf")) {
        let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
        return Err(Box::new(html(
            StatusCode::FORBIDDEN,
            error_page(&chrome, "表单已失效 / The form expired"),
        )));
    }
    Ok(ClinicianPost {
        state,
        session,
        csrf,
        fields,
    })
}

fn is_pharmacist(session: &Session) -> bool {
    session.roles.iter().any(|r| r == "pharmacist")
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form(raw.unwrap_or("").as_bytes())
}

fn person_name(p: &Value) -> String {
    p.pointer("/name/0/text")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let family = p
                .pointer("/name/0/family")
                .and_then(Value::as_str)
                .unwrap_or("");
            let given = p
                .pointer("/name/0/given/0")
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("{family}{given}")
        })
}

/// `GET /portal/clinic?identifier=…` or `?name=…&birthdate=…`: search forms, results, and the
/// referral inbox / outbox.
pub(crate) async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let state = super::for_request(&state, &headers);
    let session = match clinician(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let csrf = session.csrf();
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let params = query_pairs(raw.as_deref());
    let identifier = field(&params, "identifier");
    let name = field(&params, "name");
    let birthdate = field(&params, "birthdate");
    let mut main = String::from("<h1>查找患者 / Find a patient</h1>");
    let _ = write!(
        main,
        "<div class=\"forms\"><form method=\"get\" action=\"/portal/clinic\" class=\"card\" id=\"by-id\">\
         <label for=\"identifier\">身份证号 / Resident ID number</label>\
         <input id=\"identifier\" name=\"identifier\" value=\"{}\" pattern=\"[0-9]{{17}}[0-9Xx]\">\
         <button type=\"submit\">查找 / Find</button></form>\
         <form method=\"get\" action=\"/portal/clinic\" class=\"card\" id=\"by-name\">\
         <label for=\"name\">姓名 / Name</label><input id=\"name\" name=\"name\" value=\"{}\">\
         <label for=\"birthdate\">出生日期 / Birth date</label><input id=\"birthdate\" name=\"birthdate\" type=\"date\" value=\"{}\">\
         <button type=\"submit\">查找 / Find</button></form>\
         <form method=\"post\" action=\"/portal/clinic/scan\" class=\"card\" id=\"scan-form\">{}\
         <label for=\"scan-code\">扫描健康码 / Scan a health code</label>\
         <textarea id=\"scan-code\" name=\"code\" rows=\"2\" placeholder=\"shc:/…\"></textarea>\
         <label for=\"scan-image\">或上传二维码图片 / or upload the QR image</label>\
         <input id=\"scan-image\" type=\"file\" accept=\"image/png\" data-target=\"scan-image-data\">\
         <input type=\"hidden\" id=\"scan-image-data\" name=\"image\">\
         <button type=\"submit\" id=\"scan-submit\">识别 / Verify</button></form></div>",
        esc(identifier.unwrap_or("")),
        esc(name.unwrap_or("")),
        esc(birthdate.unwrap_or("")),
        csrf_field(&csrf)
    );
    let search = match (identifier, name) {
        (Some(id), _) => Some(format!(
            "Patient?_master=true&identifier={}",
            enc(&format!("{RESIDENT_ID_SYSTEM}|{}", id.to_ascii_uppercase()))
        )),
        (None, Some(n)) => Some(format!(
            "Patient?_master=true&name={}{}",
            enc(n),
            birthdate
                .map(|b| format!("&birthdate={}", enc(b)))
                .unwrap_or_default()
        )),
        _ => None,
    };
    if let Some(search) = search {
        let found = fhir(&state, &session.token, Method::GET, &search, None, None).await;
        main.push_str("<section aria-labelledby=\"h-results\" id=\"results\"><h2 id=\"h-results\">查找结果 / Results</h2>");
        if !found.ok() {
            let _ = write!(
                main,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&found.diagnostics())
            );
        } else if found.matches().is_empty() {
            main.push_str("<p id=\"no-results\">未找到 / No patient found</p>");
        } else {
            main.push_str("<ul>");
            for p in found.matches() {
                let id = p.get("id").and_then(Value::as_str).unwrap_or("");
                let _ = write!(
                    main,
                    "<li class=\"result\"><a href=\"/portal/clinic/patient/{}\">{}</a> {}</li>",
                    enc(id),
                    esc(&person_name(&p)),
                    esc(p.get("birthDate").and_then(Value::as_str).unwrap_or(""))
                );
            }
            main.push_str("</ul>");
        }
        main.push_str("</section>");
    }
    main.push_str(&referrals(&state, &session, &csrf).await);
    html(
        StatusCode::OK,
        page("医生工作台 / Clinician", &chrome, &main),
    )
}

async fn referrals(state: &AppState, session: &Session, csrf: &str) -> String {
    let Some(org) = &session.organization else {
        return String::new();
    };
    let mut out = String::new();
    for (title, id, query, actionable) in [
        (
            "转诊收件箱 / Referral inbox",
            "inbox",
            format!("Task?owner=Organization/{}&status=requested", enc(org)),
            true,
        ),
        (
            "已发出的转诊 / Referrals sent",
            "outbox",
            format!("Task?requester=Organization/{}", enc(org)),
            false,
        ),
    ] {
        let found = fhir(state, &session.token, Method::GET, &query, None, None).await;
        let _ = write!(
            out,
            "<section aria-labelledby=\"h-{id}\" id=\"{id}\"><h2 id=\"h-{id}\">{title}</h2>"
        );
        let tasks = found.matches();
        if !found.ok() || tasks.is_empty() {
            out.push_str("<p class=\"empty\">暂无 / None</p></section>");
            continue;
        }
        out.push_str("<ul>");
        for t in tasks {
            let tid = t.get("id").and_then(Value::as_str).unwrap_or("");
            let patient = t
                .pointer("/for/reference")
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = write!(
                out,
                "<li class=\"task\" data-id=\"{}\">{} · {} · {}",
                esc(tid),
                esc(t.get("status").and_then(Value::as_str).unwrap_or("")),
                esc(&concept(t.get("code"))),
                esc(patient)
            );
            if actionable {
                let _ = write!(
                    out,
                    " <form method=\"post\" action=\"/portal/clinic/task\" class=\"inline\">{c}<input type=\"hidden\" name=\"task\" value=\"{i}\"><input type=\"hidden\" name=\"action\" value=\"accept\"><button type=\"submit\">接收 / Accept</button></form>\
                     <form method=\"post\" action=\"/portal/clinic/task\" class=\"inline\">{c}<input type=\"hidden\" name=\"task\" value=\"{i}\"><input type=\"hidden\" name=\"action\" value=\"reject\">\
                     <input name=\"reason\" required aria-label=\"拒绝原因 / Reason\" placeholder=\"原因 / reason\"><button type=\"submit\">拒绝 / Reject</button></form>",
                    c = csrf_field(csrf),
                    i = esc(tid)
                );
            }
            out.push_str("</li>");
        }
        out.push_str("</ul></section>");
    }
    out
}

/// `POST /portal/clinic/task` (form `task`, `action` = accept | reject, `reason`, `csrf`).
pub(crate) async fn task_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ClinicianPost {
        state,
        session,
        csrf,
        fields,
    } = match clinician_post(&state, &headers, &body) {
        Ok(post) => post,
        Err(refused) => return *refused,
    };
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let task = field(&fields, "task").unwrap_or("");
    let (op, params) = match field(&fields, "action") {
        Some("accept") => ("$accept", json!({"resourceType": "Parameters"})),
        Some("reject") => (
            "$reject",
            json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": field(&fields, "reason").unwrap_or("")}]}),
        ),
        _ => {
            return html(
                StatusCode::BAD_REQUEST,
                error_page(&chrome, "unknown action"),
            )
        }
    };
    let done = fhir(
        &state,
        &session.token,
        Method::POST,
        &format!("Task/{}/{op}", enc(task)),
        Some(&params),
        None,
    )
    .await;
    if done.ok() {
        redirect("/portal/clinic")
    } else {
        html(
            StatusCode::from_u16(done.status).unwrap_or(StatusCode::BAD_REQUEST),
            error_page(&chrome, &done.diagnostics()),
        )
    }
}

/// `POST /portal/clinic/scan` (form `code` with the `shc:/…` text, or `image` with the QR
/// PNG as a data URL): verifies the code and opens the patient.
pub(crate) async fn scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ClinicianPost {
        state,
        session,
        csrf,
        fields,
    } = match clinician_post(&state, &headers, &body) {
        Ok(post) => post,
        Err(refused) => return *refused,
    };
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let code = match (field(&fields, "code"), field(&fields, "image")) {
        (Some(text), _) => text.to_owned(),
        (None, Some(image)) => {
            let data = image
                .split_once(";base64,")
                .map(|(_, d)| d)
                .unwrap_or(image);
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| e.to_string())
                .and_then(|png| phip_healthcode::qr::decode_png(&png).map_err(|e| e.to_string()));
            match decoded {
                Ok(text) => text,
                Err(e) => {
                    return html(
                        StatusCode::BAD_REQUEST,
                        error_page(
                            &chrome,
                            &format!("无法识别二维码 / Could not read the QR image: {e}"),
                        ),
                    )
                }
            }
        }
        (None, None) => {
            return html(
                StatusCode::BAD_REQUEST,
                error_page(&chrome, "请扫描或上传健康码 / Scan or upload a health code"),
            )
        }
    };
    let params =
        json!({"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": code}]});
    let verified = fhir(
        &state,
        &session.token,
        Method::POST,
        "Patient/$verify",
        Some(&params),
        None,
    )
    .await;
    let subject = verified
        .body
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("subject"))
        .and_then(|p| p.pointer("/valueReference/reference"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned);
    match (verified.ok(), subject) {
        (true, Some(id)) => redirect(&format!("/portal/clinic/patient/{}", enc(&id))),
        _ => html(
            StatusCode::from_u16(verified.status.max(400)).unwrap_or(StatusCode::BAD_REQUEST),
            error_page(
                &chrome,
                &format!(
                    "健康码无效 / The health code was refused: {}",
                    verified.diagnostics()
                ),
            ),
        ),
    }
}

/// `GET /portal/clinic/patient/{id}`: the cross-institution summary of a person.
pub(crate) async fn patient(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let state = super::for_request(&state, &headers);
    let session = match clinician(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let csrf = session.csrf();
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let read = fhir(
        &state,
        &session.token,
        Method::GET,
        &format!("Patient/{}", enc(&id)),
        None,
        None,
    )
    .await;
    if !read.ok() {
        return html(
            StatusCode::from_u16(read.status).unwrap_or(StatusCode::BAD_GATEWAY),
            error_page(&chrome, &read.diagnostics()),
        );
    }
    let sources: Vec<(String, String)> = sources_of(&read.body)
        .into_iter()
        .map(|p| (p, session.token.clone()))
        .collect();
    let record = collect(&state, &sources).await;
    let mut main = String::from("<h1>患者摘要 / Patient summary</h1>");
    main.push_str(&demographics(&read.body));
    let _ = write!(
        main,
        "<p class=\"hint\" id=\"sources\">{} 条来源档案，来自机构 / source records, from: {}</p>",
        sources.len(),
        esc(&record.holders().join(", "))
    );
    main.push_str(&render_record(&record));
    html(
        StatusCode::OK,
        page("患者摘要 / Patient summary", &chrome, &main),
    )
}

/// `GET /portal/clinic/pharmacy?code=…`: a prescription by its access code (or a resident's
/// ID number), ready to dispense.
pub(crate) async fn pharmacy(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let state = super::for_request(&state, &headers);
    let session = match clinician(&state, &headers) {
        Ok(s) => s,
        Err(to) => return redirect(to),
    };
    let csrf = session.csrf();
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let params = query_pairs(raw.as_deref());
    let code = field(&params, "code");
    let mut main = format!(
        "<h1>处方调剂 / Dispense prescriptions</h1>\
         <form method=\"get\" action=\"/portal/clinic/pharmacy\" class=\"card\" id=\"find-rx\">\
         <label for=\"rx-code\">处方取药码或身份证号 / Prescription access code or resident ID</label>\
         <input id=\"rx-code\" name=\"code\" value=\"{}\" required><button type=\"submit\">查找 / Find</button></form>",
        esc(code.unwrap_or(""))
    );
    if let Some(code) = code {
        let query = if code.len() == 18 && code[..17].bytes().all(|b| b.is_ascii_digit()) {
            format!(
                "patient={}",
                enc(&format!(
                    "{RESIDENT_ID_SYSTEM}|{}",
                    code.to_ascii_uppercase()
                ))
            )
        } else {
            format!("code={}", enc(code))
        };
        let found = fhir(
            &state,
            &session.token,
            Method::GET,
            &format!("MedicationRequest/$find-prescription?{query}"),
            None,
            None,
        )
        .await;
        main.push_str("<section aria-labelledby=\"h-rx\" id=\"prescriptions\"><h2 id=\"h-rx\">处方 / Prescriptions</h2>");
        if !found.ok() {
            let _ = write!(
                main,
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                esc(&found.diagnostics())
            );
        } else if found.matches().is_empty() {
            main.push_str("<p id=\"no-rx\">未找到可调剂的处方 / No prescription to dispense</p>");
        }
        for rx in found.matches() {
            let id = rx.get("id").and_then(Value::as_str).unwrap_or("");
            let quantity = rx
                .pointer("/dispenseRequest/quantity")
                .map(|q| {
                    format!(
                        "{} {}",
                        q.get("value").map(Value::to_string).unwrap_or_default(),
                        q.get("unit").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                main,
                "<article class=\"card rx\" data-id=\"{i}\"><h3>{}</h3><p>{}</p><p>数量 / Quantity: {}</p><p>状态 / Status: <span class=\"status\">{}</span></p>\
                 <form method=\"post\" action=\"/portal/clinic/dispense\">{}<input type=\"hidden\" name=\"id\" value=\"{i}\">\
                 <button type=\"submit\" class=\"dispense\">调剂 / Dispense</button></form></article>",
                esc(&concept(rx.get("medicationCodeableConcept"))),
                esc(rx.pointer("/dosageInstruction/0/text").and_then(Value::as_str).unwrap_or("")),
                esc(&quantity),
                esc(rx.get("status").and_then(Value::as_str).unwrap_or("")),
                csrf_field(&csrf),
                i = esc(id)
            );
        }
        main.push_str("</section>");
    }
    html(StatusCode::OK, page("处方调剂 / Dispense", &chrome, &main))
}

/// `POST /portal/clinic/dispense` (form `id`, `csrf`): dispenses once, through `$dispense`.
pub(crate) async fn dispense(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ClinicianPost {
        state,
        session,
        csrf,
        fields,
    } = match clinician_post(&state, &headers, &body) {
        Ok(post) => post,
        Err(refused) => return *refused,
    };
    let chrome = Chrome::Clinician(&csrf, is_pharmacist(&session));
    let id = field(&fields, "id").unwrap_or("");
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "pharmacist", "valueReference": {"reference": format!("Practitioner/{}", session.subject)}}
    ]});
    let done = fhir(
        &state,
        &session.token,
        Method::POST,
        &format!("MedicationRequest/{}/$dispense", enc(id)),
        Some(&params),
        None,
    )
    .await;
    if !done.ok() {
        return html(
            StatusCode::from_u16(done.status).unwrap_or(StatusCode::BAD_REQUEST),
            error_page(
                &chrome,
                &format!("调剂失败 / Not dispensed: {}", done.diagnostics()),
            ),
        );
    }
    let main = format!(
        "<h1>处方调剂 / Dispense prescriptions</h1><p class=\"success\" role=\"status\" id=\"dispensed\">已调剂 / Dispensed: MedicationRequest/{}</p>\
         <p><a href=\"/portal/clinic/pharmacy\">继续 / Next prescription</a></p>",
        esc(id)
    );
    html(StatusCode::OK, page("已调剂 / Dispensed", &chrome, &main))
}
