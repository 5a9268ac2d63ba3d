//! The public-health dashboard in a real headless Chromium: indicator tiles and the daily
//! series with the alert marker of a surveillance run, screenshotted as a test artifact.

mod common;
mod public_health;

use common::TestServer;
use phip_testkit::browser::{artifacts_dir, Browser};
use public_health::{outbreak_bundle, DAY, OUTBREAK};
use reqwest::StatusCode;
use serde_json::json;

async fn seeded() -> TestServer {
    let server = TestServer::start().await;
    let reply = server.post("", &outbreak_bundle()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    server
        .create(
            &json!({"resourceType": "Group", "type": "person", "actual": false,
            "identifier": [{"system": "urn:phip:population", "value": OUTBREAK}], "quantity": 200}),
        )
        .await;
    let run = server
        .send(
            reqwest::Method::POST,
            &format!("$surveillance-run?date={DAY}"),
            None,
            &[],
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_needs_a_token() {
    let server = TestServer::start().await;
    let url = format!(
        "{}/dashboard?division={OUTBREAK}&period=2026-10",
        server.root
    );
    let anonymous = server.client.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body = anonymous.text().await.expect("body");
    assert!(!body.contains("indicator-"), "no data without a token");
    // The cookie carries the same token as the Authorization header.
    let token = server.token.clone().expect("token");
    let with_cookie = server
        .client
        .get(&url)
        .header("cookie", format!("theme=dark; phip_token={token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(with_cookie.status(), StatusCode::OK);
    let page = with_cookie.text().await.expect("body");
    assert!(page.contains("id=\"indicator-ehr-coverage\""));
    // A bad division is a page with the reason, not a crash.
    let bad = server
        .client
        .get(format!("{}/dashboard?division=abc", server.root))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("six-digit"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_renders_indicators_and_alert_markers_in_chromium() {
    let Some(mut browser) = Browser::launch(1280, 900).await else {
        return;
    };
    let server = seeded().await;
    let token = server.token.clone().expect("token");
    browser
        .set_headers(&[("Authorization", &format!("Bearer {token}"))])
        .await;
    browser
        .goto(&format!(
            "{}/dashboard?division={OUTBREAK}&period=2026-10",
            server.root
        ))
        .await;

    let title = browser.eval("document.title").await;
    assert!(
        title.as_str().unwrap().contains("Public health dashboard"),
        "{title}"
    );
    // EHR coverage: 1 resident of 朝阳区 over a population of 200.
    assert_eq!(
        browser
            .text("#indicator-ehr-coverage .value")
            .await
            .as_deref(),
        Some("0.5%")
    );
    // Incidence: the district's October cases (steady 2/3 a day from Oct 1, 15 on the 20th)
    // per 100,000 of 200.
    let cases: u64 = browser
        .eval("Number(document.querySelector('#indicator-notifiable-incidence').dataset.numerator)")
        .await
        .as_u64()
        .unwrap();
    assert!(cases > 40, "{cases}");
    // The ILI chart has the alert markers of the run, on the outbreak day, with explanations.
    assert!(browser.count("#chart-ILI rect.bar").await >= 60);
    let markers = browser.count("#chart-ILI .alert-marker").await;
    assert!(markers >= 2, "C2 and CUSUM alerts: {markers}");
    let marker_date = browser
        .eval("document.querySelector('#chart-ILI .alert-marker').dataset.date")
        .await;
    assert_eq!(marker_date, DAY);
    let explanation = browser.text("ul.alerts li.alert").await.unwrap_or_default();
    assert!(
        explanation.contains("exceed the upper bound"),
        "{explanation}"
    );
    // Text alternatives for the chart.
    let desc = browser.text("#chart-ILI-d").await.unwrap_or_default();
    assert!(desc.contains("alerts"), "{desc}");

    let path = artifacts_dir().join("dashboard.png");
    let size = browser.screenshot(&path).await;
    assert!(size > 10_000, "screenshot too small: {size} bytes");
    let png = std::fs::read(&path).expect("screenshot file");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    println!("dashboard screenshot: {}", path.display());

    // A browser session: no header, the token in a cookie; without either, the 401 page.
    browser.set_headers(&[]).await;
    let url = format!(
        "{}/dashboard?division={OUTBREAK}&period=2026-10",
        server.root
    );
    browser.goto(&url).await;
    assert_eq!(browser.count(".tile").await, 0);
    assert!(browser
        .text("#error")
        .await
        .unwrap_or_default()
        .contains("authentication required"));
    browser.set_cookie(&server.root, "phip_token", &token).await;
    browser.goto(&url).await;
    assert_eq!(browser.count(".tile").await, 7, "one tile per indicator");
    browser.close().await;
}
