//! The suite's assertions: that no hidden value appears anywhere in a reply (status line,
//! headers, body — plain, percent-encoded, base64 or base64url, in any case), that the answer
//! about a hidden record equals the answer about a record that does not exist, and the
//! bookkeeping of (interaction × caller) cases with soft failures, so that one run lists
//! every leak instead of stopping at the first.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

use super::harness::{Reply, Request};

/// The forms in which a secret could travel: as is, lower and upper case, percent-encoded,
/// and base64/base64url of the value at each of the three byte alignments (so that a value
/// inside a longer encoded text — an opaque paging cursor, an audit record's query — is
/// found without decoding anything).
pub fn encoded_forms(secret: &str) -> Vec<String> {
    let mut forms = BTreeSet::new();
    for variant in [
        secret.to_owned(),
        secret.to_lowercase(),
        secret.to_uppercase(),
    ] {
        forms.insert(variant.clone());
        forms.insert(
            percent_encoding::utf8_percent_encode(&variant, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
        let bytes = variant.as_bytes();
        for skip in 0..3 {
            if bytes.len() < skip + 9 {
                continue;
            }
            let chunk = &bytes[skip..];
            let chunk = &chunk[..chunk.len() - chunk.len() % 3];
            forms.insert(STANDARD.encode(chunk));
            forms.insert(URL_SAFE_NO_PAD.encode(chunk));
        }
    }
    forms.into_iter().collect()
}

/// Where a secret was found in a reply.
pub fn find_leaks(reply: &Reply, secrets: &[String], request: Option<&Request>) -> Vec<String> {
    let sent = request.map(Request::text).unwrap_or_default();
    let sent_lower = sent.to_lowercase();
    let mut places = vec![(
        "status line".to_owned(),
        format!(
            "{} {}",
            reply.status.as_u16(),
            reply.status.canonical_reason().unwrap_or_default()
        ),
    )];
    for (name, value) in &reply.headers {
        places.push((
            format!("header {name}"),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    places.push(("body".to_owned(), reply.text.clone()));
    let mut leaks = Vec::new();
    for secret in secrets {
        // What the caller sent itself (a searched value, a copied identifier) is not revealed
        // by an echo of it.
        if sent.contains(secret.as_str()) || sent_lower.contains(&secret.to_lowercase()) {
            continue;
        }
        let forms = encoded_forms(secret);
        for (place, text) in &places {
            if let Some(form) = forms.iter().find(|f| text.contains(f.as_str())) {
                let shown = if form == secret {
                    String::new()
                } else {
                    format!(" (as {form})")
                };
                leaks.push(format!("{secret:?}{shown} in the {place}"));
                break;
            }
        }
    }
    leaks
}

/// What a reply says, with everything that legitimately differs between two requests (new
/// ids, timestamps, the target id or value the caller named) taken out: two replies with the
/// same summary tell a caller the same thing.
pub fn summary(reply: &Reply, substitutions: &[&str]) -> Value {
    let scrub = |text: &str| {
        let mut text = text.to_owned();
        for s in substitutions {
            if !s.is_empty() {
                text = text.replace(s, "<named>");
            }
        }
        text
    };
    let headers: Vec<&str> = ["location", "etag", "content-location", "last-modified"]
        .into_iter()
        .filter(|h| reply.headers.contains_key(*h))
        .collect();
    serde_json::json!({
        "status": reply.status.as_u16(),
        "headers": headers,
        "body": shape(&reply.body, &scrub),
    })
}

fn outcome_shape(outcome: &Value, scrub: &dyn Fn(&str) -> String) -> Value {
    let issues: Vec<Value> = outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            serde_json::json!({
                "severity": i["severity"],
                "code": i["code"],
                "details": i["details"]["coding"],
                "diagnostics": scrub(i["diagnostics"].as_str().unwrap_or_default()),
            })
        })
        .collect();
    serde_json::json!({"OperationOutcome": issues})
}

fn shape(body: &Value, scrub: &dyn Fn(&str) -> String) -> Value {
    match body["resourceType"].as_str() {
        Some("OperationOutcome") => outcome_shape(body, scrub),
        Some("Bundle") => {
            let mut entries: Vec<Value> = body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    serde_json::json!({
                        "type": e["resource"]["resourceType"],
                        "mode": e["search"]["mode"],
                        "status": e["response"]["status"],
                        "outcome": if e["response"]["outcome"].is_object() {
                            outcome_shape(&e["response"]["outcome"], scrub)
                        } else if e["resource"]["resourceType"] == "OperationOutcome" {
                            outcome_shape(&e["resource"], scrub)
                        } else {
                            Value::Null
                        },
                    })
                })
                .collect();
            // Batch and transaction responses keep their order; searchsets are compared as sets.
            let ordered = matches!(
                body["type"].as_str(),
                Some("batch-response" | "transaction-response")
            );
            if !ordered {
                entries.sort_by_key(|e| e.to_string());
            }
            serde_json::json!({
                "Bundle": body["type"],
                "total": body["total"],
                "links": body["link"].as_array().map(|l| {
                    let mut r: Vec<&Value> = l.iter().map(|x| &x["relation"]).collect();
                    r.sort_by_key(|v| v.to_string());
                    serde_json::json!(r)
                }),
                "entries": entries,
            })
        }
        Some("Parameters") => {
            let mut names: Vec<String> = body["parameter"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| scrub(&p["name"].to_string()))
                .collect();
            names.sort();
            serde_json::json!({"Parameters": names})
        }
        Some(other) => serde_json::json!({"resource": other}),
        None => match body {
            Value::Null => Value::Null,
            _ => serde_json::json!("non-FHIR body"),
        },
    }
}

/// The parts of summary `a` that differ from summary `b` (for messages).
fn difference(a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let parts: Vec<String> = x
                .iter()
                .filter(|(k, v)| y.get(*k) != Some(*v))
                .map(|(k, v)| format!("{k}: {}", difference(v, y.get(k).unwrap_or(&Value::Null))))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            let parts: Vec<String> = x
                .iter()
                .zip(y)
                .enumerate()
                .filter(|(_, (p, q))| p != q)
                .map(|(i, (p, q))| format!("[{i}] {}", difference(p, q)))
                .collect();
            parts.join(", ")
        }
        _ => {
            let mut text = a.to_string();
            if text.len() > 400 {
                let mut end = 400;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            text
        }
    }
}

/// One (interaction × caller) cell and what went wrong in it.
#[derive(Debug, Default)]
struct Cell {
    checks: usize,
    failures: Vec<String>,
}

/// The cases one test checks, with soft failures: a test checks every cell, then fails
/// listing every cell that leaked.
pub struct Matrix {
    test: &'static str,
    cells: BTreeMap<(String, String), Cell>,
}

impl Matrix {
    pub fn new(test: &'static str) -> Self {
        Self {
            test,
            cells: BTreeMap::new(),
        }
    }

    fn cell(&mut self, interaction: &str, caller: &str) -> &mut Cell {
        self.cells
            .entry((interaction.to_owned(), caller.to_owned()))
            .or_default()
    }

    /// Records one check of a cell.
    pub fn check(
        &mut self,
        interaction: &str,
        caller: &str,
        ok: bool,
        why: impl FnOnce() -> String,
    ) {
        let cell = self.cell(interaction, caller);
        cell.checks += 1;
        if !ok {
            cell.failures.push(why());
        }
    }

    /// Checks that no secret in `hidden` appears in `reply`.
    pub fn no_leak(
        &mut self,
        interaction: &str,
        caller: &str,
        request: &Request,
        reply: &Reply,
        hidden: &[String],
    ) {
        let leaks = find_leaks(reply, hidden, Some(request));
        self.check(interaction, caller, leaks.is_empty(), || {
            format!(
                "{} {} leaked {}",
                request.method,
                request.path,
                leaks.join(", ")
            )
        });
    }

    /// Checks that a reply about a hidden target says what the reply about an absent one says.
    pub fn same_as_absent(
        &mut self,
        interaction: &str,
        caller: &str,
        hidden: (&Request, &Reply),
        absent: (&Request, &Reply),
        substitutions: &[&str],
    ) {
        let a = summary(hidden.1, substitutions);
        let b = summary(absent.1, substitutions);
        self.check(interaction, caller, a == b, || {
            format!(
                "{} {} answers differently about a hidden target than {} {} about an absent one (an existence oracle):\n      hidden: {}\n      absent: {}",
                hidden.0.method,
                hidden.0.path,
                absent.0.method,
                absent.0.path,
                difference(&a, &b),
                difference(&b, &a)
            )
        });
    }

    /// Checks a status.
    pub fn status(
        &mut self,
        interaction: &str,
        caller: &str,
        request: &Request,
        reply: &Reply,
        expected: &[u16],
    ) {
        let status = reply.status.as_u16();
        self.check(interaction, caller, expected.contains(&status), || {
            format!(
                "{} {}: expected {expected:?}, got {}",
                request.method,
                request.path,
                reply.describe()
            )
        });
    }

    /// Checks that a legitimate caller got a value.
    pub fn gets(
        &mut self,
        interaction: &str,
        caller: &str,
        request: &Request,
        reply: &Reply,
        value: &str,
    ) {
        let found = reply.status.is_success()
            && encoded_forms(value)
                .iter()
                .any(|f| reply.text.contains(f.as_str()));
        self.check(interaction, caller, found, || {
            format!(
                "legitimate {} {} did not get {value:?}: {}",
                request.method,
                request.path,
                reply.describe()
            )
        });
    }

    /// The cells checked.
    pub fn cases(&self) -> BTreeSet<(String, String)> {
        self.cells.keys().cloned().collect()
    }

    /// Fails the test listing every cell with a failure; checks that the test exercised
    /// exactly the cells the suite's table declares for it.
    pub fn finish(self) {
        let declared = super::matrix::declared(self.test);
        let checked = self.cases();
        let mut report = Vec::new();
        let failed: Vec<_> = self
            .cells
            .iter()
            .filter(|(_, c)| !c.failures.is_empty())
            .collect();
        for ((interaction, caller), cell) in &failed {
            report.push(format!("  [{interaction} × {caller}]"));
            // The first few say what leaked; the rest are usually the same class.
            for f in cell.failures.iter().take(4) {
                report.push(format!("    - {f}"));
            }
            if cell.failures.len() > 4 {
                report.push(format!("    … and {} more", cell.failures.len() - 4));
            }
        }
        let undeclared: Vec<_> = checked.difference(&declared).collect();
        let unchecked: Vec<_> = declared.difference(&checked).collect();
        if !undeclared.is_empty() || !unchecked.is_empty() {
            report.push(format!(
                "  the case table is out of date: checked but not declared {undeclared:?}; declared but not checked {unchecked:?}"
            ));
        }
        println!(
            "{}: {} (interaction × caller) cases, {} checks, {} cases failed",
            self.test,
            checked.len(),
            self.cells.values().map(|c| c.checks).sum::<usize>(),
            failed.len()
        );
        if !report.is_empty() {
            panic!(
                "{}: {} of {} cases failed\n{}",
                self.test,
                failed.len(),
                checked.len(),
                report.join("\n")
            );
        }
    }
}
