//! The HL7 v2 parser, writer and FHIR mapping.
//!
//! Properties: nothing panics; a message that parses re-encodes (in its own charset) to bytes
//! that parse to the same values; whatever the mapper makes of it is valid FHIR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phip_fhir::validate::validate_resource;
use phip_hl7v2::fhir::{self, Mapped};
use phip_hl7v2::Message;
use serde_json::Value;

/// Every value of every segment: id, field count, fields → repetitions → components.
fn values(message: &Message) -> Vec<(String, usize, Vec<Vec<Vec<String>>>)> {
    message
        .segments_all()
        .map(|segment| {
            let fields = (1..=segment.field_count())
                .map(|n| {
                    segment
                        .field(n)
                        .repetitions()
                        .map(|r| r.components().map(|c| c.subcomponents().join("&")).collect())
                        .collect()
                })
                .collect();
            (segment.id().to_owned(), segment.field_count(), fields)
        })
        .collect()
}

fn assert_valid(resource: &Value) {
    if let Err(outcome) = validate_resource(resource) {
        panic!("the mapper produced invalid FHIR: {outcome}\n{resource}");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = Message::parse_lenient(data);
    if let Ok(message) = Message::parse(data) {
        let again = Message::parse_lenient(&message.to_bytes())
            .unwrap_or_else(|e| panic!("re-encoded text does not parse: {e}"));
        assert_eq!(values(&message), values(&again), "the round trip changed values");
        match fhir::map_message(&message) {
            Ok(Mapped::Adt(adt)) => {
                assert_valid(&adt.patient);
                assert_valid(&adt.transaction("Patient/1"));
            }
            Ok(Mapped::Results(results)) => {
                assert_valid(&results.patient);
                assert_valid(&results.transaction("Patient/1"));
            }
            Ok(Mapped::Merge(merges)) => merges.iter().for_each(|m| assert_valid(&m.patient)),
            Err(_) => {}
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Message::parse_str(text);
    }
});
