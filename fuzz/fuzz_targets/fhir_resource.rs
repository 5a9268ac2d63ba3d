//! The resource JSON parser and validator.
//!
//! Properties: nothing panics; a refusal carries an error issue; whatever is accepted is still
//! accepted, and unchanged, after a serialisation round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phip_fhir::validate::validate_resource;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(resource) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match validate_resource(&resource) {
        Err(outcome) => assert!(outcome.has_errors(), "refusal without an error: {outcome}"),
        Ok(()) => {
            let text = serde_json::to_string(&resource).expect("a parsed value serialises");
            let again: Value = serde_json::from_str(&text).expect("serialised JSON parses");
            assert_eq!(again, resource, "the round trip changed the resource");
            assert!(
                validate_resource(&again).is_ok(),
                "accepted, then refused after a round trip: {text}"
            );
        }
    }
});
