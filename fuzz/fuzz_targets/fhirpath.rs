//! The FHIRPath parser and evaluator, over the R4 model.
//!
//! Input: an expression, optionally followed by a NUL byte and the JSON resource to evaluate
//! it on (a fixed Patient otherwise). Properties: nothing panics or overflows the stack; what
//! parses evaluates to a collection or a clean error.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phip_fhirpath::Expression;
use serde_json::{json, Value};

fn patient() -> &'static Value {
    static PATIENT: OnceLock<Value> = OnceLock::new();
    PATIENT.get_or_init(|| {
        json!({
            "resourceType": "Patient",
            "id": "p1",
            "meta": {"versionId": "2", "lastUpdated": "2024-03-01T08:00:00+08:00"},
            "extension": [{"url": "http://example.org/ethnicity", "valueCoding": {"code": "01", "display": "汉族"}}],
            "identifier": [
                {"system": "urn:oid:2.16.156.10011.1.1", "value": "11010519491231002X"},
                {"system": "urn:phip:id:hospital-a", "value": "MRN-0042", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
            ],
            "active": true,
            "name": [{"use": "official", "family": "张", "given": ["伟"], "text": "张伟"}, {"family": "Zhang", "given": ["Wei", "W."]}],
            "telecom": [{"system": "phone", "value": "13800138000", "use": "mobile"}],
            "gender": "male",
            "birthDate": "1949-12-31",
            "address": [{"line": ["朝阳区 1 号"], "city": "北京", "postalCode": "100020", "period": {"start": "2001-01"}}],
            "multipleBirthInteger": 2,
            "contact": [{"relationship": [{"text": "spouse"}], "name": {"family": "李"}}],
            "generalPractitioner": [{"reference": "Practitioner/d1", "display": "王医生"}]
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let (source, resource) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], serde_json::from_slice::<Value>(&data[nul + 1..]).ok()),
        None => (data, None),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let Ok(expression) = Expression::parse(source) else {
        return;
    };
    let model = phip_fhir::r4().model();
    let _ = expression.evaluate(resource.as_ref().unwrap_or_else(|| patient()), model);
});
