//! The 139 public sample messages (fixtures/hl7v2, MIT): parse, round-trip, map, validate.

use std::collections::BTreeMap;
use std::io::Read;

use phip_hl7v2::fhir::{self, Mapped, RESIDENT_ID_SYSTEM};
use phip_hl7v2::{ErrorCode, Message};
use serde_json::Value;

fn samples() -> BTreeMap<String, Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/hl7v2/samples.tar.gz"
    );
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(name, bytes);
    }
    out
}

fn sample(name: &str) -> Message {
    Message::parse(&samples()[name]).unwrap()
}

fn valid(resource: &Value) {
    if let Err(outcome) = phip_fhir::validate::validate_resource(resource) {
        panic!(
            "invalid {}: {outcome:?}",
            serde_json::to_string_pretty(resource).unwrap()
        );
    }
}

#[test]
fn every_sample_parses_and_round_trips() {
    let samples = samples();
    assert_eq!(samples.len(), 139);
    let mut bom = 0;
    for (name, bytes) in &samples {
        bom += usize::from(bytes.starts_with(b"\xEF\xBB\xBF"));
        let message = Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(message.segment_count() > 1, "{name}");
        assert!(!message.control_id().is_empty(), "{name}");
        // Re-encoding gives CR-separated text that parses to the same values everywhere.
        let again = Message::parse(message.to_er7().as_bytes()).unwrap();
        assert_eq!(again.segment_count(), message.segment_count(), "{name}");
        for (a, b) in message.segments_all().zip(again.segments_all()) {
            assert_eq!(a.id(), b.id());
            for n in 1..=a.field_count() {
                for (ra, rb) in a.field(n).repetitions().zip(b.field(n).repetitions()) {
                    for (ca, cb) in ra.components().zip(rb.components()) {
                        assert_eq!(
                            ca.subcomponents(),
                            cb.subcomponents(),
                            "{name} {}-{n}",
                            a.id()
                        );
                    }
                }
            }
        }
    }
    assert_eq!(bom, 27, "the samples include BOM-prefixed files");
}

#[test]
fn every_adt_and_oru_sample_maps_to_valid_fhir() {
    let mut mapped = 0;
    for (name, bytes) in samples() {
        let message = Message::parse(&bytes).unwrap();
        let result = fhir::map_message(&message);
        let kind = message.message_type();
        match result {
            Ok(Mapped::Adt(adt)) => {
                valid(&adt.patient);
                if let Some(e) = &adt.encounter {
                    let mut e = e.clone();
                    e["subject"] = serde_json::json!({"reference": "Patient/1"});
                    valid(&e);
                }
                valid(&adt.transaction("Patient/1"));
                mapped += 1;
            }
            Ok(Mapped::Results(results)) => {
                valid(&results.patient);
                valid(&results.transaction("Patient/1"));
                mapped += 1;
            }
            Ok(Mapped::Merge(merges)) => {
                for m in merges {
                    valid(&m.patient);
                }
                mapped += 1;
            }
            Err(e) => {
                let supported = (kind.code == "ADT"
                    && [
                        "A01", "A03", "A04", "A05", "A08", "A11", "A28", "A31", "A40",
                    ]
                    .contains(&kind.trigger.as_str()))
                    || (kind.code == "ORU" && kind.trigger == "R01");
                assert!(!supported, "{name}: {e}");
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::UnsupportedMessageType | ErrorCode::UnsupportedEventCode
                    ),
                    "{name}: {e}"
                );
            }
        }
    }
    assert!(mapped >= 25, "{mapped}");
}

#[test]
fn a01_patient_and_encounter() {
    let m = sample("ADT-A01-01.hl7");
    let Mapped::Adt(adt) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    let p = &adt.patient;
    assert_eq!(adt.event, "A01");
    assert_eq!(adt.facility, "GHHSFacility");
    // PID-3: PATID1234 with assigning authority test1&2.16.1&HCD (not ISO: named), and an SSN.
    assert_eq!(p["identifier"][0]["value"], "PATID1234");
    assert_eq!(p["identifier"][0]["system"], "urn:phip:id:test1");
    assert_eq!(p["identifier"][0]["type"]["coding"][0]["code"], "MR");
    assert_eq!(p["identifier"][1]["system"], "urn:phip:id:USSSA");
    assert_eq!(adt.patient_identifiers.len(), 2);
    assert_eq!(p["name"][0]["family"], "EVERYMAN");
    assert_eq!(p["name"][0]["given"], serde_json::json!(["ADAM", "A"]));
    assert_eq!(p["name"][1]["use"], "official");
    let e = adt.encounter.as_ref().unwrap();
    assert_eq!(e["status"], "in-progress");
    assert_eq!(e["class"]["code"], "PRENC");
    let bundle = adt.transaction("Patient/42");
    let entry = &bundle["entry"][0];
    assert_eq!(entry["resource"]["subject"]["reference"], "Patient/42");
    let id = adt.encounter_identifier.as_ref().unwrap();
    assert_eq!(entry["request"]["method"], "PUT");
    assert!(
        entry["request"]["url"]
            .as_str()
            .unwrap()
            .starts_with("Encounter?identifier="),
        "{entry}"
    );
    assert!(!id.value.is_empty());
}

#[test]
fn a03_discharge_finishes_the_encounter_and_a08_updates() {
    let m = sample("ADT-A03-01.hl7");
    let Mapped::Adt(adt) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(adt.encounter.as_ref().unwrap()["status"], "finished");
    let m = sample("ADT-A08-01.hl7");
    let Mapped::Adt(adt) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(adt.event, "A08");
    valid(&adt.patient);
}

#[test]
fn a40_merge_names_surviving_and_retired_ids() {
    let m = sample("ADT-A40-01.hl7");
    let Mapped::Merge(merges) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].surviving[0].value, "12345");
    assert_eq!(merges[0].surviving[0].system, "urn:phip:id:BCBS");
    assert_eq!(merges[0].retired[0].value, "56789");
    assert_eq!(merges[0].retired[0].system, "urn:phip:id:BCBS");
    assert_eq!(merges[0].facility, "Ntierprise Clinic");
}

#[test]
fn oru_reports_and_observations() {
    let m = sample("LAB-ORU-1.hl7");
    let Mapped::Results(r) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(r.reports.len(), 2);
    let first = &r.reports[0];
    assert_eq!(
        first.report["code"]["coding"][0]["system"],
        "http://loinc.org"
    );
    assert_eq!(first.report["status"], "final");
    assert_eq!(first.observations.len(), 5);
    let erythrocytes = &first.observations[1].observation;
    assert_eq!(
        erythrocytes["valueQuantity"]["value"],
        serde_json::json!(4.06)
    );
    assert_eq!(erythrocytes["valueQuantity"]["unit"], "tera.l-1");
    assert_eq!(erythrocytes["status"], "preliminary");
    assert_eq!(erythrocytes["interpretation"][0]["coding"][0]["code"], "N");
    assert_eq!(
        erythrocytes["effectiveDateTime"],
        "2014-10-06T06:27:00+07:00"
    );
    // No facility in MSH-4: the sending application assigns.
    assert_eq!(first.identifier.as_ref().unwrap().value, "82503246");
    assert_eq!(
        first.identifier.as_ref().unwrap().system,
        "urn:phip:id:SomeSystem"
    );
    // Observations are keyed on order number, OBR-4, OBX-3 (and OBX-4), never OBX-1.
    assert_eq!(
        first.observations[1].identifier.as_ref().unwrap().value,
        "82503246/24317-0^LN/11273-0^LN"
    );
    assert_eq!(
        first.observations[1].identifier.as_ref().unwrap().system,
        "urn:phip:id:SomeSystem"
    );

    let bundle = r.transaction("Patient/7");
    valid(&bundle);
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2 + 5 + 5);
    let report = entries
        .iter()
        .find(|e| e["resource"]["resourceType"] == "DiagnosticReport")
        .unwrap();
    let urls: Vec<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    for result in report["resource"]["result"].as_array().unwrap() {
        assert!(urls.contains(&result["reference"].as_str().unwrap()));
    }
    assert_eq!(
        report["request"]["url"],
        "DiagnosticReport?identifier=urn:phip:id:SomeSystem|82503246&code=http://loinc.org%7C24317-0"
    );
}

/// The conditional URLs of a transaction's entries (the keys it writes under).
fn keys(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["request"]["method"] == "PUT")
                .filter_map(|e| e["request"]["url"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn no_oru_sample_writes_two_results_under_one_key() {
    // ORU-R01-01 repeats OBX set id 1 (its specimen group restarts the numbering): keyed on
    // OBX-1 two of its Observations shared a key and the transaction was refused.
    let mut checked = 0;
    for (name, bytes) in samples() {
        let message = Message::parse(&bytes).unwrap();
        let Ok(Mapped::Results(results)) = fhir::map_message(&message) else {
            continue;
        };
        let keys = keys(&results.transaction("Patient/1"));
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{name}: {keys:#?}");
        checked += 1;
    }
    assert_eq!(checked, 5);
    let Mapped::Results(r) = fhir::map_message(&sample("ORU-R01-01.hl7")).unwrap() else {
        panic!()
    };
    let values: Vec<&str> = r.reports[0]
        .observations
        .iter()
        .map(|o| o.identifier.as_ref().unwrap().value.as_str())
        .collect();
    assert_eq!(
        values,
        [
            "986/625-4^XYZ/625-4^XYZ/1",
            "986/625-4^XYZ/1063-7^XYZ/1",
            "986/625-4^XYZ/8867-4^LN/1"
        ]
    );
}

#[test]
fn reordered_results_keep_their_keys() {
    // LAB-ORU-2 is LAB-ORU-1 with its OBRs and OBXs in another order (and other set ids):
    // every result keeps its key, so the second message updates the first one's results.
    let key_to_code = |name: &str| {
        let Mapped::Results(r) = fhir::map_message(&sample(name)).unwrap() else {
            panic!()
        };
        r.reports
            .iter()
            .flat_map(|report| report.observations.iter())
            .map(|o| {
                (
                    o.identifier.clone().map(|i| (i.system, i.value)).unwrap(),
                    o.observation["code"]["coding"][0]["code"].clone(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let first = key_to_code("LAB-ORU-1.hl7");
    assert_eq!(first.len(), 10);
    assert_eq!(first, key_to_code("LAB-ORU-2.hl7"));
}

#[test]
fn repeated_set_ids_and_codes_get_distinct_keys() {
    let m = Message::parse_str(
        "MSH|^~\\&|LIS|LAB|PHIP|HUB|20240102083000||ORU^R01|K1|P|2.5.1\r\
         PID|1||P1^^^^MR\r\
         OBR|1||ACC/7|CBC^Blood count^L\r\
         OBX|1|NM|WBC^Leukocytes^L||6.1|10*9/L|||||F\r\
         OBX|1|NM|RBC^Erythrocytes^L||4.5|10*12/L|||||F\r\
         OBX|2|TX|NOTE^Comment^L||line one||||||F\r\
         OBX|2|TX|NOTE^Comment^L||line two||||||F\r\
         OBX|3|ST|ORG^Organism^L|1a|E. coli||||||F\r\
         OBX|3|ST|ORG^Organism^L|1b|K. pneumoniae||||||F\r\
         OBR|2||ACC/7|DIFF^Differential^L\r\
         OBX|1|NM|WBC^Leukocytes^L||6.2|10*9/L|||||F\r",
    )
    .unwrap();
    let Mapped::Results(r) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    let values: Vec<&str> = r
        .reports
        .iter()
        .flat_map(|report| report.observations.iter())
        .map(|o| o.identifier.as_ref().unwrap().value.as_str())
        .collect();
    assert_eq!(
        values,
        [
            "ACC%2F7/CBC^L/WBC^L",
            "ACC%2F7/CBC^L/RBC^L",
            "ACC%2F7/CBC^L/NOTE^L",
            "ACC%2F7/CBC^L/NOTE^L#2",
            "ACC%2F7/CBC^L/ORG^L/1a",
            "ACC%2F7/CBC^L/ORG^L/1b",
            "ACC%2F7/DIFF^L/WBC^L",
        ]
    );
    let bundle = r.transaction("Patient/1");
    valid(&bundle);
    let keys = keys(&bundle);
    assert_eq!(keys.len(), 9);
    assert!(
        keys.contains(
            &"DiagnosticReport?identifier=urn:phip:id:LAB|ACC/7&code=urn:phip:id:L%7CDIFF"
                .to_owned()
        ),
        "{keys:#?}"
    );

    // Two OBRs for the same order and the same service cannot be told apart: 205 at OBR-3.
    let m = Message::parse_str(
        "MSH|^~\\&|LIS|LAB|PHIP|HUB|20240102083000||ORU^R01|K2|P|2.5.1\r\
         PID|1||P1^^^^MR\r\
         OBR|1||ACC7|CBC^Blood count^L\r\
         OBX|1|NM|WBC^Leukocytes^L||6.1|10*9/L|||||F\r\
         OBR|2||ACC7|CBC^Blood count^L\r\
         OBX|1|NM|WBC^Leukocytes^L||6.2|10*9/L|||||F\r",
    )
    .unwrap();
    let err = fhir::map_message(&m).unwrap_err();
    assert_eq!(err.code, ErrorCode::DuplicateKeyIdentifier);
    assert_eq!(err.location.unwrap().to_string(), "OBR(2)-3");

    // Order numbers only in ORC (OBR-2/3 empty) still key the report.
    let m = Message::parse_str(
        "MSH|^~\\&|LIS|LAB|PHIP|HUB|20240102083000||ORU^R01|K3|P|2.5.1\r\
         PID|1||P1^^^^MR\r\
         ORC|RE|PL1|FI1\r\
         OBR|1|||CBC^Blood count^L\r\
         OBX|1|NM|WBC^Leukocytes^L||6.1|10*9/L|||||F\r",
    )
    .unwrap();
    let Mapped::Results(r) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(r.reports[0].identifier.as_ref().unwrap().value, "FI1");
    assert_eq!(
        r.reports[0].observations[0]
            .identifier
            .as_ref()
            .unwrap()
            .value,
        "FI1/CBC^L/WBC^L"
    );
}

#[test]
fn the_sender_is_msh4_else_msh3() {
    let parse = |s: &str| Message::parse(s.as_bytes()).unwrap();
    let with_both = parse("MSH|^~\\&|APP|FAC|C|D|2024||ADT^A01|1|P|2.5\rPID|1||X\r");
    assert_eq!(fhir::sender(&with_both).unwrap(), "FAC");
    let application_only = parse("MSH|^~\\&|APP||C|D|2024||ADT^A01|1|P|2.5\rPID|1||X\r");
    assert_eq!(fhir::sender(&application_only).unwrap(), "APP");
    let Mapped::Adt(adt) = fhir::map_message(&application_only).unwrap() else {
        panic!()
    };
    assert_eq!(adt.patient_identifiers[0].system, "urn:phip:id:APP");
    // HD universal id when the namespace is empty.
    let universal = parse("MSH|^~\\&||^2.16.1^ISO|C|D|2024||ADT^A01|1|P|2.5\rPID|1||X\r");
    assert_eq!(fhir::sender(&universal).unwrap(), "2.16.1");
    let nobody = parse("MSH|^~\\&|||C|D|2024||ADT^A01|1|P|2.5\rPID|1||X\r");
    for err in [
        fhir::sender(&nobody).unwrap_err(),
        fhir::map_message(&nobody).unwrap_err(),
    ] {
        assert_eq!(err.code, ErrorCode::RequiredFieldMissing);
        assert_eq!(err.location.unwrap().to_string(), "MSH-4");
    }
    // The type is checked first: an unsupported message without a sender is refused for its type.
    let err = fhir::map_message(&parse("MSH|^~\\&|||C|D|2024||VXU^V04|1|P|2.5\r")).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedMessageType);
    assert!(fhir::check_supported(&nobody).is_ok());
    let err =
        fhir::check_supported(&parse("MSH|^~\\&|A|F|C|D|2024||ADT^A06|1|P|2.5\r")).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedEventCode);
}

#[test]
fn oru_with_gb18030_resident_id_and_reference_range() {
    let text = "MSH|^~\\&|LIS|协和医院|PHIP|HUB|20240102083000+0800||ORU^R01^ORU_R01|L1|P|2.5.1|||||CHN|GB 18030-2000\r\
PID|1||11010519491231002X^^^^NNCHN~A100^^^^MR||张^伟||19491231|M\r\
OBR|1||R1|2345-7^血糖^LN|||20240102080000\r\
OBX|1|NM|2345-7^血糖^LN||6.1|mmol/L^^UCUM|3.9-6.1|H|||F\r\
OBX|2|SN|777-3^血小板^LN||<^10|10*9/L^^UCUM||L|||F\r\
OBX|3|ST|X^备注^L||样本轻度溶血\\.br\\请复查||||||F\r";
    let (bytes, _, _) = encoding_rs::GB18030.encode(text);
    let m = Message::parse(&bytes).unwrap();
    let Mapped::Results(r) = fhir::map_message(&m).unwrap() else {
        panic!()
    };
    assert_eq!(r.patient["identifier"][0]["system"], RESIDENT_ID_SYSTEM);
    assert_eq!(
        r.patient["identifier"][1]["system"],
        fhir::Context::system_for("协和医院")
    );
    assert_eq!(
        r.patient["identifier"][1]["assigner"]["display"],
        "协和医院"
    );
    assert_eq!(r.patient["name"][0]["text"], "张伟");
    let obs = &r.reports[0].observations;
    assert_eq!(obs[0].observation["valueQuantity"]["code"], "mmol/L");
    assert_eq!(
        obs[0].observation["referenceRange"][0]["high"]["value"],
        serde_json::json!(6.1)
    );
    assert_eq!(obs[1].observation["valueQuantity"]["comparator"], "<");
    assert_eq!(obs[2].observation["valueString"], "样本轻度溶血\n请复查");
    assert_eq!(obs[0].observation["code"]["coding"][0]["display"], "血糖");
    valid(&r.patient);
    valid(&r.transaction("Patient/1"));
}

#[test]
fn mapping_errors_name_segment_and_field() {
    let parse = |s: &str| Message::parse(s.as_bytes()).unwrap();
    let err = fhir::map_message(&parse("MSH|^~\\&|A|F|C|D|2024||ADT^A01|1|P|2.5\rPID|1||\r"))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RequiredFieldMissing);
    assert_eq!(err.location.unwrap().to_string(), "PID-3");
    let err = fhir::map_message(&parse(
        "MSH|^~\\&|A|F|C|D|2024||ADT^A01|1|P|2.5\rPID|1||X||||1988-01-01\r",
    ))
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::DataTypeError);
    assert_eq!(err.location.unwrap().to_string(), "PID-7");
    let err = fhir::map_message(&parse("MSH|^~\\&|A|F|C|D|2024||ORU^R01|1|P|2.5\rPID|1||X\rOBR|1||R|C^c^LN\rOBX|1|NM|C^c^LN||abc\r")).unwrap_err();
    assert_eq!(err.location.unwrap().to_string(), "OBX-5");
    let err = fhir::map_message(&parse("MSH|^~\\&|A|F|C|D|2024||MFN^M02|1|P|2.5\r")).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnsupportedMessageType);
    let err = fhir::map_message(&parse(
        "MSH|^~\\&|A|F|C|D|2024||ADT^A40|1|P|2.5\rPID|1||X\r",
    ))
    .unwrap_err();
    assert_eq!(err.location.unwrap().segment, "MRG");
}
