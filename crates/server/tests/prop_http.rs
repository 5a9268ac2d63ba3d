//! Property-based fuzzing of the HTTP API: arbitrary search query strings, resource bodies and
//! bundles sent to a real server. Properties: the server never answers 5xx, every 4xx carries
//! an OperationOutcome, and the server keeps serving (a final health check).

mod common;

use common::TestServer;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

const TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Encounter",
    "Bundle",
    "Nope",
    "metadata",
];

/// A query string: real and bogus parameter names, modifiers, prefixes and escapes, and raw
/// bytes percent-encoded or not.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "name",
            "family",
            "birthdate",
            "identifier",
            "_id",
            "_lastUpdated",
            "subject",
            "patient",
            "code",
            "value-quantity",
            "date",
            "_count",
            "_sort",
            "_include",
            "_revinclude",
            "_summary",
            "_elements",
            "_total",
            "_has:Observation:subject:code",
            "subject:Patient.name",
            "general-practitioner.name",
            "_format",
            "_pretty",
            "_cursor",
            "_master",
            "_type",
            "_text",
            "_filter",
        ])
        .prop_map(str::to_owned),
        "[a-z_:.-]{1,16}",
    ];
    let modifier = prop::sample::select(vec![
        "",
        ":exact",
        ":contains",
        ":missing",
        ":not",
        ":below",
        ":above",
        ":iterate",
        ":x",
    ]);
    let value = prop_oneof![
        "(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{1,4}(-[0-9]{2}){0,2}",
        "[a-z:/.]{0,10}\\|[A-Za-z0-9-]{0,8}",
        "-?[0-9]{0,12}(\\.[0-9]{0,4})?",
        "[\\\\,$|a-zA-Z %]{0,16}",
        "%[0-9A-Fa-f]{2}|%[G-Z]{2}|%",
        "Patient:[a-z-]{0,12}(:iterate)?",
        "[ -~]{0,20}",
    ];
    prop::collection::vec((name, modifier, value), 0..5).prop_map(|params| {
        params
            .into_iter()
            .map(|(n, m, v)| format!("{n}{m}={}", v.replace([' ', '#', '&'], "%20")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<Vec<u8>> = vec![
        br#"{"resourceType":"Patient","name":[{"family":"Fuzz"}]}"#.to_vec(),
        br#"{"resourceType":"Patient","birthDate":"2024-02-30"}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient?name=x"}}]}"#.to_vec(),
        br#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient?_count=abc"}}]}"#.to_vec(),
        br#"[{"op":"replace","path":"/active","value":true}]"#.to_vec(),
        br#"{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":1e999999}}"#.to_vec(),
        b"{".to_vec(),
        Vec::new(),
        vec![0xff, 0xfe, 0x00],
        format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
    ];
    prop_oneof![
        prop::sample::select(fixed),
        prop::collection::vec(any::<u8>(), 0..64),
        "[ -~]{0,64}".prop_map(String::into_bytes),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ])
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TYPES).prop_map(str::to_owned),
        (prop::sample::select(TYPES), "[A-Za-z0-9.-]{1,10}")
            .prop_map(|(t, id)| format!("{t}/{id}")),
        (
            prop::sample::select(TYPES),
            "[A-Za-z0-9.-]{1,10}",
            "[0-9a-z]{1,3}"
        )
            .prop_map(|(t, id, v)| format!("{t}/{id}/_history/{v}")),
        prop::sample::select(vec![
            "",
            "_history",
            "_search",
            "Patient/_search",
            "Patient/x/$everything",
            "$export",
            "Patient/$match",
            "Patient/x/$validate",
            "..%2F..%2Fetc",
            "Patient/%00",
        ])
        .prop_map(str::to_owned),
    ]
}

fn content_type() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "application/fhir+json",
        "application/json",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/fhir+json; charset=latin1",
    ])
}

fn check(status: u16, body: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{what} answered {status}: {body}");
    // HEAD answers carry no body by definition.
    if status >= 400 && !what.starts_with("HEAD ") {
        prop_assert_eq!(
            &body["resourceType"],
            "OperationOutcome",
            "{} answered {}: {}",
            what,
            status,
            body
        );
    }
    Ok(())
}

#[test]
fn arbitrary_requests_never_fail_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        server
            .post(
                "Patient",
                &json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Seed"}]}),
            )
            .await;
        server
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        path(),
        query(),
        method(),
        prop::option::of(body()),
        content_type(),
    );
    let result = runner.run(&strategy, |(path, query, method, body, content_type)| {
        let url = if query.is_empty() {
            server.url(&path)
        } else {
            format!("{}?{query}", server.url(&path))
        };
        let what = format!("{method} {url}");
        let (status, value) = runtime.block_on(async {
            let mut request = server
                .client
                .request(method.clone(), &url)
                .bearer_auth(server.token.as_deref().unwrap_or_default());
            if let Some(body) = body {
                request = request.header("content-type", content_type).body(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.unwrap_or_default();
                    (
                        status,
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    )
                }
                // A URL reqwest itself refuses to send is not the server's answer.
                Err(error) if error.is_builder() => (0, Value::Null),
                Err(error) => (599, Value::String(error.to_string())),
            }
        });
        check(status, &value, &what)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let health = runtime.block_on(server.get(&format!("{}/health", server.root)));
    assert_eq!(health.status.as_u16(), 200);
}
