//! The search-parameter parser: names with modifiers, chains and `_has`, prefixed values,
//! escapes, for one resource type or the whole system.
//!
//! Input: a request target such as `Observation?code=http://loinc.org|1234-5&date=ge2024`;
//! before the `?` the resource type (none: a system-level search). Properties: nothing panics;
//! a refusal carries an error issue; a strict parse that succeeds leaves no error warnings;
//! value lists split on unescaped commas join back to the original text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phip_fhir::search::parse;
use phip_fhir::search::query::{split_escaped, unescape};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (resource_type, query) = text.split_once('?').unwrap_or(("", text));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let resource_type = (!resource_type.is_empty()).then_some(resource_type);
    for strict in [false, true] {
        match parse(resource_type, &params, strict) {
            Ok(parsed) => assert!(!strict || !parsed.warnings.has_errors()),
            Err(outcome) => assert!(outcome.has_errors(), "refusal without an error: {outcome}"),
        }
    }
    for (_, value) in &params {
        let pieces = split_escaped(value, ',');
        assert_eq!(pieces.join(","), *value, "splitting lost text");
        for piece in pieces {
            let _ = unescape(piece);
        }
    }
});
