//! The resident and clinician portals: sign-in with one-time codes, sessions and their limits
//! over plain HTTP, and the end-to-end flows in headless Chromium — a resident sees records
//! from two institutions, refuses one and sees another's access in the audit list; a
//! clinician scans a health code and opens the patient; a pharmacist dispenses.

mod common;

use base64::Engine as _;
use common::{resident_id, Backend, TestServer};
use phip_security::token::Grant;
use phip_testkit::browser::{artifacts_dir, Browser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
const ACCESS_CODE: &str = "urn:phip:eprescription:access-code";
/// Chaoyang district, Beijing: every institution of the scenario.
const DISTRICT: &str = "110105";

/// The institutions' tokens.
struct World {
    hosp_a: String,
    hosp_b: String,
    clinic_c: String,
    /// The resident's golden record and their two source records (at A and at B).
    golden: String,
    source_a: String,
    source_b: String,
    rid: String,
}

fn org_token(server: &TestServer, sub: &str, org: &str) -> String {
    server.mint(Grant {
        sub: sub.into(),
        scope: "user/*.cruds".into(),
        org: Some(org.into()),
        division: Some(DISTRICT.into()),
        ..Grant::default()
    })
}

async fn call(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> common::Reply {
    let bearer = format!("Bearer {token}");
    server
        .send(method, path, body, &[("authorization", bearer.as_str())])
        .await
}

async fn create(server: &TestServer, token: &str, resource: Value) -> String {
    let rt = resource["resourceType"].as_str().unwrap().to_owned();
    let reply = call(server, token, Method::POST, &rt, Some(&resource)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn observation(
    patient: &str,
    loinc: &str,
    text: &str,
    value: f64,
    unit: &str,
    date: &str,
) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}], "text": text},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}})
}

/// One resident registered at two hospitals, each writing its own records.
async fn world(server: &TestServer) -> World {
    let hosp_a = org_token(server, "dr-a", "hosp-a");
    let hosp_b = org_token(server, "dr-b", "hosp-b");
    let clinic_c = org_token(server, "dr-c", "clinic-c");
    let rid = resident_id(DISTRICT, "19620718", "246");
    let patient = json!({"resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": rid}],
        "name": [{"text": "张秀英"}], "gender": "female", "birthDate": "1962-07-18"});
    let source_a = create(server, &hosp_a, patient.clone()).await;
    let source_b = create(server, &hosp_b, patient).await;
    let golden = server
        .get(&format!(
            "Patient?_master=true&identifier={RESIDENT_ID}|{rid}"
        ))
        .await;
    assert_eq!(golden.ids().len(), 1, "one person: {}", golden.body);
    let golden = golden.ids()[0].clone();

    create(server, &hosp_a, json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10"}], "text": "高血压 Hypertension"},
        "subject": {"reference": format!("Patient/{source_a}")}, "recordedDate": "2024-03-02"})).await;
    for (date, value) in [
        ("2024-03-02", 162.0),
        ("2024-06-10", 148.0),
        ("2024-09-20", 136.0),
    ] {
        create(
            server,
            &hosp_a,
            observation(
                &source_a,
                "8480-6",
                "收缩压 Systolic BP",
                value,
                "mm[Hg]",
                date,
            ),
        )
        .await;
    }
    create(server, &hosp_a, json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "C08CA01"}], "text": "氨氯地平 Amlodipine"},
        "subject": {"reference": format!("Patient/{source_a}")}, "authoredOn": "2024-03-02",
        "dosageInstruction": [{"text": "5 mg 每日一次 once daily"}]})).await;
    create(server, &hosp_b, json!({"resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"}], "text": "2型糖尿病 Type 2 diabetes"},
        "subject": {"reference": format!("Patient/{source_b}")}, "recordedDate": "2025-01-15"})).await;
    create(server, &hosp_b, json!({"resourceType": "Immunization", "status": "completed",
        "vaccineCode": {"text": "流感疫苗 Influenza vaccine"},
        "patient": {"reference": format!("Patient/{source_b}")}, "occurrenceDateTime": "2025-10-08"})).await;
    for (date, value) in [("2025-01-15", 8.1), ("2025-04-20", 7.2)] {
        create(
            server,
            &hosp_b,
            observation(&source_b, "4548-4", "糖化血红蛋白 HbA1c", value, "%", date),
        )
        .await;
    }
    World {
        hosp_a,
        hosp_b,
        clinic_c,
        golden,
        source_a,
        source_b,
        rid,
    }
}

async fn issue_code(server: &TestServer, request: Value) -> String {
    let reply = server
        .client
        .post(format!("{}/portal/one-time-code", server.root))
        .bearer_auth(server.token.as_deref().unwrap())
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let body: Value = reply.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["code"].as_str().unwrap().to_owned()
}

/// A client that does not follow redirects (to see them).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(server: &TestServer, code: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/portal/login", server.root))
        .form(&[("code", code)])
        .send()
        .await
        .unwrap()
}

/// The `Cookie` header of the session a successful sign-in set.
fn session_cookie(reply: &reqwest::Response) -> String {
    let set = reply.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

async fn page(server: &TestServer, cookie: &str, path: &str) -> reqwest::Response {
    no_redirects()
        .get(format!("{}{path}", server.root))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

async fn codes_work_once_and_pages_need_a_session(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    // Without a session every page sends the browser to sign in.
    for path in [
        "/portal/me",
        "/portal/clinic",
        "/portal/clinic/pharmacy",
        "/portal",
    ] {
        let reply = page(&server, "theme=dark", path).await;
        assert_eq!(reply.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(reply.headers()["location"], "/portal/login", "{path}");
    }
    // Only system tokens issue codes.
    let refused = server
        .client
        .post(format!("{}/portal/one-time-code", server.root))
        .bearer_auth(&w.hosp_a)
        .json(&json!({"patient": w.source_a}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // A wrong code is refused; a right one signs in once, with a strict HttpOnly cookie.
    let wrong = login(&server, "AAAAAAAAAAAA").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let code = issue_code(&server, json!({"patient": w.source_a})).await;
    let ok = login(&server, &code.to_lowercase()).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/portal/me");
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = session_cookie(&ok);
    let again = login(&server, &code).await;
    assert_eq!(
        again.status(),
        StatusCode::UNAUTHORIZED,
        "a code works once"
    );

    // The session is bound to the golden record: the page shows both institutions' records.
    let home = page(&server, &cookie, "/portal/me").await;
    assert_eq!(home.status(), StatusCode::OK);
    let body = home.text().await.unwrap();
    assert!(
        body.contains("Hypertension") && body.contains("Type 2 diabetes"),
        "{body}"
    );

    // A form without the session's anti-forgery token changes nothing.
    let forged = no_redirects()
        .post(format!("{}/portal/me/consent", server.root))
        .header("cookie", &cookie)
        .form(&[
            ("organization", "hosp-b"),
            ("action", "deny"),
            ("csrf", "0000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let consents = server
        .get(&format!("Consent?patient=Patient/{}", w.source_b))
        .await;
    assert!(consents.ids().is_empty(), "{}", consents.body);

    // Another resident's session does not reach this resident's records.
    let other = create(
        &server,
        &w.hosp_a,
        json!({"resourceType": "Patient",
        "identifier": [{"system": RESIDENT_ID, "value": resident_id(DISTRICT, "19900101", "135")}],
        "name": [{"text": "李明"}], "gender": "male", "birthDate": "1990-01-01"}),
    )
    .await;
    let code = issue_code(&server, json!({"patient": other})).await;
    let other_cookie = session_cookie(&login(&server, &code).await);
    let body = page(&server, &other_cookie, "/portal/me")
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("李明"), "{body}");
    assert!(
        !body.contains("Hypertension") && !body.contains("张秀英"),
        "{body}"
    );
    // Nor the clinician pages.
    let clinic = page(
        &server,
        &other_cookie,
        &format!("/portal/clinic/patient/{}", w.golden),
    )
    .await;
    assert_eq!(clinic.status(), StatusCode::SEE_OTHER);
    assert_eq!(clinic.headers()["location"], "/portal/me");
    let _ = (&w.hosp_b, &w.clinic_c, &w.rid);
}

async fn an_expired_code_is_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let code = issue_code(&server, json!({"patient": w.source_b})).await;
    // Codes are server-private state: not even an operator's token finds one.
    let listed = server
        .get("Basic?identifier=urn:phip:portal:sign-in-code|")
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.entries().is_empty(), "{}", listed.body);
    // Age the stored code past its expiry, as the clock would, as the server itself.
    let engine = server.engine.clone();
    tokio::task::spawn_blocking(move || {
        let me = phip_engine::Principal::unrestricted("test-clock");
        engine.write_transaction(&me, |tx| {
            let params = vec![(
                "identifier".to_owned(),
                "urn:phip:portal:sign-in-code|".to_owned(),
            )];
            let parsed = phip_fhir::search::query::parse(Some("Basic"), &params, true).unwrap();
            let page = tx.search(&phip_store::SearchRequest {
                query: parsed.query,
                cursor: phip_store::PageCursor::First,
                page_size: 10,
                access: phip_store::Access::Server,
            })?;
            let stored = page.matches.into_iter().next().expect("the code is stored");
            let mut basic = stored.resource.clone().unwrap();
            for e in basic["extension"].as_array_mut().unwrap() {
                if e["url"] == "urn:phip:portal:expires" {
                    e["valueDateTime"] = json!("2020-01-01T00:00:00Z");
                }
            }
            tx.write(phip_store::WriteRequest {
                resource_type: "Basic".into(),
                id: stored.id,
                resource: Some(basic),
                expected_version: Some(stored.version_id),
            })?;
            Ok(())
        })
    })
    .await
    .unwrap()
    .unwrap();
    let reply = login(&server, &code).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert!(reply.text().await.unwrap().contains("expired"));
}

/// The anti-forgery token of a rendered page.
fn csrf_of(html: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let start = html.find(field).expect("csrf field") + field.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The receiving hospital's clinician works the referral inbox: accepts one, rejects one.
async fn clinician_accepts_and_rejects_referrals(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let focus = create(
            &server,
            &w.clinic_c,
            json!({"resourceType": "ServiceRequest",
            "status": "active", "intent": "order", "code": {"text": "Cardiology assessment"},
            "subject": {"reference": format!("Patient/{}", w.source_a)},
            "requester": {"reference": "Organization/clinic-c"},
            "performer": [{"reference": "Organization/hosp-a"}]}),
        )
        .await;
        tasks.push(create(&server, &w.clinic_c, json!({"resourceType": "Task",
            "extension": [{"url": "urn:phip:workflow:referral-direction", "valueCode": "up"}],
            "status": "requested", "intent": "order",
            "code": {"coding": [{"system": "urn:phip:workflow", "code": "referral"}], "text": "转诊 Referral"},
            "focus": {"reference": format!("ServiceRequest/{focus}")},
            "for": {"reference": format!("Patient/{}", w.source_a)},
            "requester": {"reference": "Organization/clinic-c"},
            "owner": {"reference": "Organization/hosp-a"}})).await);
    }
    let code = issue_code(
        &server,
        json!({"practitioner": "dr-a", "organization": "hosp-a", "division": DISTRICT}),
    )
    .await;
    let cookie = session_cookie(&login(&server, &code).await);
    let inbox = page(&server, &cookie, "/portal/clinic")
        .await
        .text()
        .await
        .unwrap();
    for id in &tasks {
        assert!(
            inbox.contains(&format!("class=\"task\" data-id=\"{id}\"")),
            "{inbox}"
        );
    }
    let csrf = csrf_of(&inbox);
    let act = |fields: Vec<(&'static str, String)>| {
        no_redirects()
            .post(format!("{}/portal/clinic/task", server.root))
            .header("cookie", &cookie)
            .form(&fields)
            .send()
    };
    let accepted = act(vec![
        ("csrf", csrf.clone()),
        ("task", tasks[0].clone()),
        ("action", "accept".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        accepted.status(),
        StatusCode::SEE_OTHER,
        "{}",
        accepted.text().await.unwrap()
    );
    let rejected = act(vec![
        ("csrf", csrf.clone()),
        ("task", tasks[1].clone()),
        ("action", "reject".into()),
        ("reason", "无床位 no bed".into()),
    ])
    .await
    .unwrap();
    assert_eq!(
        rejected.status(),
        StatusCode::SEE_OTHER,
        "{}",
        rejected.text().await.unwrap()
    );
    assert_eq!(
        server.get(&format!("Task/{}", tasks[0])).await.body["status"],
        "accepted"
    );
    assert_eq!(
        server.get(&format!("Task/{}", tasks[1])).await.body["status"],
        "rejected"
    );
    // Without the form token nothing moves.
    let forged = act(vec![
        ("task", tasks[0].clone()),
        ("action", "reject".into()),
        ("reason", "x".into()),
    ])
    .await
    .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Handled referrals leave the inbox.
    let inbox = page(&server, &cookie, "/portal/clinic")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !inbox.contains(&format!("data-id=\"{}\"", tasks[1])),
        "{inbox}"
    );
}

/// A refusal written through the portal is enforced by the API, and withdrawing it restores
/// access.
async fn resident_refuses_and_allows_again(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let w = world(&server).await;
    let cookie = session_cookie(
        &login(
            &server,
            &issue_code(&server, json!({"patient": w.source_a})).await,
        )
        .await,
    );
    let csrf = csrf_of(
        &page(&server, &cookie, "/portal/me")
            .await
            .text()
            .await
            .unwrap(),
    );
    let consent = |action: &'static str| {
        no_redirects()
            .post(format!("{}/portal/me/consent", server.root))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("organization", "hosp-b"),
                ("action", action),
            ])
            .send()
    };
    let path_a = format!("Patient/{}", w.source_a);
    let read_b = || call(&server, &w.hosp_b, Method::GET, &path_a, None);
    assert_eq!(read_b().await.status, StatusCode::OK);
    assert_eq!(
        consent("deny").await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(read_b().await.status, StatusCode::NOT_FOUND);
    // One Consent per source record, so B's own record of the resident is covered too.
    let active = server
        .get(&format!(
            "Consent?status=active&patient=Patient/{},Patient/{}",
            w.source_a, w.source_b
        ))
        .await;
    assert_eq!(active.ids().len(), 2, "{}", active.body);
    assert_eq!(
        consent("allow").await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(read_b().await.status, StatusCode::OK);
    let home = page(&server, &cookie, "/portal/me")
        .await
        .text()
        .await
        .unwrap();
    assert!(home.contains("id=\"no-denials\""), "{home}");
}

on_both_backends!(
    resident_refuses_and_allows_again,
    codes_work_once_and_pages_need_a_session,
    an_expired_code_is_refused,
    clinician_accepts_and_rejects_referrals
);

/// Submits by running `script` and waits until the browser has loaded a new document at
/// `path` (the old document is marked, so staying on the same path is not mistaken for it).
async fn submit(browser: &mut Browser, script: &str, path: &str) {
    browser.eval("window.__phipOld = true").await;
    browser.eval(script).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let here = browser
            .eval("(window.__phipOld ? 'old:' : '') + location.pathname + '|' + document.readyState + ((document.querySelector('#error') || {}).textContent || '')")
            .await;
        if here.as_str() == Some(format!("{path}|complete").as_str()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {path}: at {here}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn sign_in(browser: &mut Browser, server: &TestServer, code: &str, home: &str) {
    browser.goto(&format!("{}/portal/login", server.root)).await;
    assert_accessible(browser, "sign-in page").await;
    submit(
        browser,
        &format!("document.querySelector('#code').value = {}; document.querySelector('#sign-in').click()", json!(code)),
        home,
    )
    .await;
}

/// Checks the page a screen reader or keyboard user gets: the language, a title, a `main`
/// landmark and a heading; a name for every form field, button and link; a text alternative for
/// every image and chart. Prints how long the page took to load (navigation timing).
async fn assert_accessible(browser: &mut Browser, page: &str) {
    const AUDIT: &str = r#"(() => {
        const problems = [];
        const byId = id => (document.getElementById(id) || {}).textContent || '';
        const name = el => [
            el.getAttribute('aria-label') || '',
            (el.getAttribute('aria-labelledby') || '').split(/\s+/).map(byId).join(' '),
            el.id ? Array.from(document.querySelectorAll('label'))
                .filter(l => l.htmlFor === el.id).map(l => l.textContent).join(' ') : '',
            (el.closest('label') || {}).textContent || '',
            el.getAttribute('title') || '',
        ].join(' ').trim();
        const show = el => el.outerHTML.slice(0, 100);
        if (!document.documentElement.lang) problems.push('html without lang');
        if (!document.title.trim()) problems.push('no title');
        if (!document.querySelector('main')) problems.push('no main landmark');
        if (!document.querySelector('h1')) problems.push('no h1');
        for (const el of document.querySelectorAll('input, select, textarea')) {
            const type = (el.getAttribute('type') || '').toLowerCase();
            if (['hidden', 'submit', 'button', 'reset', 'image'].includes(type)) continue;
            if (!name(el)) problems.push('field without a label: ' + show(el));
        }
        for (const el of document.querySelectorAll('button, input[type=submit], input[type=button]')) {
            if (!(el.textContent.trim() || el.value || name(el))) problems.push('button without a name: ' + show(el));
        }
        for (const el of document.querySelectorAll('a[href]')) {
            if (!(el.textContent.trim() || name(el))) problems.push('link without text: ' + show(el));
        }
        for (const el of document.querySelectorAll('img')) {
            if (!el.hasAttribute('alt')) problems.push('image without alt: ' + show(el));
        }
        for (const el of document.querySelectorAll('svg')) {
            if (el.closest('[aria-hidden=true]')) continue;
            if (!(name(el) || el.querySelector('title'))) problems.push('chart without a text alternative: ' + show(el));
        }
        const nav = performance.getEntriesByType('navigation')[0];
        return JSON.stringify({problems, ms: nav ? Math.round(nav.duration) : null});
    })()"#;
    let report = browser.eval(AUDIT).await;
    let report: Value = serde_json::from_str(report.as_str().unwrap_or("{}")).unwrap_or_default();
    assert_eq!(
        report["problems"],
        json!([]),
        "{page}: accessibility problems"
    );
    println!("{page}: loaded in {} ms", report["ms"]);
}

async fn shot(browser: &mut Browser, name: &str) {
    assert_accessible(browser, name).await;
    let size = browser.screenshot(&artifacts_dir().join(name)).await;
    assert!(size > 10_000, "{name}: {size} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn portal_flows_in_chromium() {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let server = TestServer::start().await;
    let w = world(&server).await;

    // Before the resident acts, hospital B may read hospital A's record of them.
    let before = call(
        &server,
        &w.hosp_b,
        Method::GET,
        &format!("Patient/{}", w.source_a),
        None,
    )
    .await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    // 1. The resident signs in and sees records from both hospitals, with trends.
    let code = issue_code(&server, json!({"patient": w.source_b})).await;
    sign_in(&mut browser, &server, &code, "/portal/me").await;
    assert_eq!(
        browser.text("#patient-name").await.as_deref(),
        Some("张秀英")
    );
    assert!(browser.count("tr.record[data-holder='hosp-a']").await >= 5);
    assert!(browser.count("tr.record[data-holder='hosp-b']").await >= 4);
    let problems = browser.text("#section-Condition").await.unwrap_or_default();
    assert!(
        problems.contains("Hypertension") && problems.contains("Type 2 diabetes"),
        "{problems}"
    );
    assert!(
        browser.count("#trends figure.chart").await >= 2,
        "BP and HbA1c trends"
    );
    assert_eq!(browser.count("#trends circle.point").await, 5);
    let timeline = browser.text("#timeline").await.unwrap_or_default();
    assert!(
        timeline.contains("Influenza vaccine @ hosp-b"),
        "{timeline}"
    );
    let code_loaded = browser
        .eval("(() => { const i = document.querySelector('#health-code img'); return i.complete && i.naturalWidth > 0; })()")
        .await;
    assert_eq!(code_loaded, json!(true), "the health code image loads");
    shot(&mut browser, "portal-resident-home.png").await;

    // 2. They refuse hospital B.
    submit(
        &mut browser,
        "document.querySelector('#deny-org').value = 'hosp-b'; document.querySelector('#deny').click()",
        "/portal/me",
    )
    .await;
    assert_eq!(
        browser.count("#denials li.denied[data-org='hosp-b']").await,
        1
    );
    let after = call(
        &server,
        &w.hosp_b,
        Method::GET,
        &format!("Patient/{}", w.source_a),
        None,
    )
    .await;
    // Withheld: it answers as an unknown record would.
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{}", after.body);

    // 3. Clinic C reads their record; the resident sees that access (and B's refused one).
    let read = call(
        &server,
        &w.clinic_c,
        Method::GET,
        &format!("Condition?patient=Patient/{}", w.source_a),
        None,
    )
    .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    browser.goto(&format!("{}/portal/me", server.root)).await;
    let log = browser.text("#access-log").await.unwrap_or_default();
    assert!(
        log.contains("dr-c") && log.contains("Organization/clinic-c"),
        "{log}"
    );
    assert!(log.contains("dr-b"), "{log}");
    shot(&mut browser, "portal-resident-consent-and-access.png").await;

    // 4. A clinician of clinic C scans the resident's health code (the QR image) and opens them.
    let png = server
        .client
        .get(server.url(&format!("Patient/{}/$health-code", w.golden)))
        .bearer_auth(server.token.as_deref().unwrap())
        .header("accept", "image/png")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    assert_eq!(&png[..4], b"\x89PNG");
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let code = issue_code(&server, json!({"practitioner": "dr-c", "organization": "clinic-c", "division": DISTRICT, "role": "clinician"})).await;
    sign_in(&mut browser, &server, &code, "/portal/clinic").await;
    submit(
        &mut browser,
        &format!("document.querySelector('#scan-image-data').value = {}; document.querySelector('#scan-submit').click()", json!(data_url)),
        &format!("/portal/clinic/patient/{}", w.golden),
    )
    .await;
    assert_eq!(
        browser.text("#patient-name").await.as_deref(),
        Some("张秀英")
    );
    let summary = browser.text("#section-Condition").await.unwrap_or_default();
    assert!(
        summary.contains("Hypertension") && summary.contains("Type 2 diabetes"),
        "{summary}"
    );
    shot(&mut browser, "portal-clinician-summary.png").await;
    // The index search by ID number finds the same person.
    browser
        .goto(&format!(
            "{}/portal/clinic?identifier={}",
            server.root, w.rid
        ))
        .await;
    assert_eq!(browser.count("#results li.result").await, 1);

    // 5. A pharmacist dispenses a released prescription, once.
    let practitioner =
        json!({"resourceType": "Practitioner", "id": "dr-a", "name": [{"text": "王医生"}]});
    let put = call(
        &server,
        &w.hosp_a,
        Method::PUT,
        "Practitioner/dr-a",
        Some(&practitioner),
    )
    .await;
    assert!(put.status.is_success(), "{}", put.body);
    let rx = json!({"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "C08CA01"}], "text": "氨氯地平 Amlodipine 5 mg"},
        "subject": {"reference": format!("Patient/{}", w.source_a)}, "requester": {"reference": "Practitioner/dr-a"},
        "authoredOn": "2025-05-01", "dosageInstruction": [{"text": "5 mg once daily"}],
        "dispenseRequest": {"validityPeriod": {"start": "2025-05-01", "end": "2099-12-31"},
            "quantity": {"value": 28, "unit": "tablet", "system": "http://unitsofmeasure.org", "code": "{tbl}"}}});
    let id = create(&server, &w.hosp_a, rx).await;
    let signed = call(
        &server,
        &w.hosp_a,
        Method::POST,
        &format!("MedicationRequest/{id}/$sign"),
        None,
    )
    .await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    let released = call(
        &server,
        &w.hosp_a,
        Method::POST,
        &format!("MedicationRequest/{id}/$release"),
        None,
    )
    .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let access = released.body["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find(|i| i["system"] == ACCESS_CODE))
        .and_then(|i| i["value"].as_str())
        .unwrap()
        .to_owned();
    let code = issue_code(&server, json!({"practitioner": "ph-1", "organization": "pharm-1", "division": DISTRICT, "role": "pharmacist"})).await;
    sign_in(&mut browser, &server, &code, "/portal/clinic").await;
    browser
        .goto(&format!(
            "{}/portal/clinic/pharmacy?code={access}",
            server.root
        ))
        .await;
    assert_eq!(
        browser.count(&format!("article.rx[data-id='{id}']")).await,
        1
    );
    shot(&mut browser, "portal-pharmacy-find.png").await;
    submit(
        &mut browser,
        "document.querySelector('article.rx button.dispense').click()",
        "/portal/clinic/dispense",
    )
    .await;
    let done = browser.text("#dispensed").await.unwrap_or_default();
    assert!(done.contains(&id), "{done}");
    shot(&mut browser, "portal-pharmacy-dispensed.png").await;
    let dispenses = server
        .get(&format!(
            "MedicationDispense?prescription=MedicationRequest/{id}"
        ))
        .await;
    assert_eq!(dispenses.ids().len(), 1, "{}", dispenses.body);
    // The same prescription cannot be dispensed twice.
    browser
        .goto(&format!(
            "{}/portal/clinic/pharmacy?code={access}",
            server.root
        ))
        .await;
    if browser.count("article.rx button.dispense").await > 0 {
        browser
            .eval("document.querySelector('article.rx button.dispense').click()")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(browser.count("#error").await >= 1 || browser.count("#dispensed").await == 0);
    }
    let dispenses = server
        .get(&format!(
            "MedicationDispense?prescription=MedicationRequest/{id}"
        ))
        .await;
    assert_eq!(dispenses.ids().len(), 1, "{}", dispenses.body);
    let _ = (&w.source_b,);
    browser.close().await;
}
