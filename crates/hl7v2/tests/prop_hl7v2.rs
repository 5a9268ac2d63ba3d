//! Property-based fuzzing of the HL7 v2 parser, writer and FHIR mapping.
//!
//! Inputs are the 139 committed sample messages (fixtures/hl7v2) under byte-level mutations
//! (flips, insertions, deletions, splices of delimiters and line breaks), plus messages built
//! from arbitrary text with the writer. Properties: nothing panics; whatever parses re-encodes
//! to text that parses to the same values; text written with the writer reads back exactly;
//! whatever the mapper produces from a parsed message is valid FHIR.

use std::io::Read;
use std::sync::OnceLock;

use phip_hl7v2::fhir::{self, Mapped};
use phip_hl7v2::message::MessageWriter;
use phip_hl7v2::{Delimiters, Message};
use proptest::prelude::*;
use serde_json::Value;

fn samples() -> &'static [Vec<u8>] {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/hl7v2/samples.tar.gz"
        );
        let file = std::fs::File::open(path).expect("fixtures/hl7v2/samples.tar.gz");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut out = Vec::new();
        for entry in archive.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            out.push(bytes);
        }
        assert!(out.len() > 100, "the sample corpus is missing");
        out
    })
}

/// One edit of a byte string; positions are taken modulo the current length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

/// Bytes that matter to the grammar, inserted more often than chance would.
const INTERESTING: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"#",
    b"\r",
    b"\n",
    b"\r\n",
    b"MSH",
    b"MSH|^~\\&|",
    b"\\X0D\\",
    b"\\F\\",
    b"\\E\\",
    b"\\X",
    b"\\XZZ\\",
    b"\\.br\\",
    b"\xEF\xBB\xBF",
    b"\xFF\xFE",
    b"\xE4\xB8\xAD",
    b"\xC3",
    b"UNICODE UTF-8",
    b"GB 18030-2000",
    b"\"\"",
    b"PID|||",
    b"19991231235959+0800",
    b"2024",
    b"0000",
    b"99999999",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), prop::sample::select(INTERESTING))
            .prop_map(|(p, s)| Edit::Insert(p, s.to_vec())),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip(p, b) => {
                if !bytes.is_empty() {
                    bytes[p % len] = *b;
                }
            }
            Edit::Insert(p, s) => {
                let at = p % (bytes.len() + 1);
                bytes.splice(at..at, s.iter().copied());
            }
            Edit::Delete(p, n) => {
                let at = p % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Truncate(p) => bytes.truncate(p % len),
        }
    }
    bytes
}

/// A segment's id, field count, and fields → repetitions → components (subcomponents joined).
type SegmentValues = (String, usize, Vec<Vec<Vec<String>>>);

/// Every value of every segment, as the reader decodes them.
fn values(message: &Message) -> Vec<SegmentValues> {
    message
        .segments_all()
        .map(|segment| {
            let fields = (1..=segment.field_count())
                .map(|n| {
                    segment
                        .field(n)
                        .repetitions()
                        .map(|r| {
                            r.components()
                                .map(|c| c.subcomponents().join("&"))
                                .collect()
                        })
                        .collect()
                })
                .collect();
            (segment.id().to_owned(), segment.field_count(), fields)
        })
        .collect()
}

fn assert_valid(resource: &Value) -> Result<(), TestCaseError> {
    if let Err(outcome) = phip_fhir::validate::validate_resource(resource) {
        return Err(TestCaseError::fail(format!(
            "the mapper produced invalid FHIR: {outcome:?}\n{resource}"
        )));
    }
    Ok(())
}

/// Maps a parsed message and checks what comes out (errors are fine: they become NAKs).
fn check_mapping(message: &Message) -> Result<(), TestCaseError> {
    match fhir::map_message(message) {
        Ok(Mapped::Adt(adt)) => {
            assert_valid(&adt.patient)?;
            assert_valid(&adt.transaction("Patient/1"))?;
        }
        Ok(Mapped::Results(results)) => {
            assert_valid(&results.patient)?;
            assert_valid(&results.transaction("Patient/1"))?;
        }
        Ok(Mapped::Merge(merges)) => {
            for merge in merges {
                assert_valid(&merge.patient)?;
            }
        }
        Err(_) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(512),
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    })]

    /// Mutated real messages: no panic; what parses round-trips and maps to valid FHIR.
    #[test]
    fn mutated_samples_parse_round_trip_and_map(
        index in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let base = index.get(samples()).clone();
        let bytes = apply(base, &edits);
        let _ = Message::parse_lenient(&bytes);
        if let Ok(message) = Message::parse(&bytes) {
            // Re-encoded in the message's own charset (MSH-18), as it would be sent.
            let again = Message::parse_lenient(&message.to_bytes())
                .map_err(|e| TestCaseError::fail(format!("re-encoded text does not parse: {e}")))?;
            prop_assert_eq!(values(&message), values(&again));
            check_mapping(&message)?;
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Message::parse_str(text);
        }
    }

    /// Arbitrary bytes after a valid header.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = b"MSH|^~\\&|APP|FAC|PHIP|PHIP|20240101120000||ADT^A01^ADT_A01|1|P|2.5\r".to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(message) = Message::parse(&bytes) {
            // Re-encoded in the message's own charset (MSH-18), as it would be sent.
            let again = Message::parse_lenient(&message.to_bytes())
                .map_err(|e| TestCaseError::fail(format!("re-encoded text does not parse: {e}")))?;
            prop_assert_eq!(values(&message), values(&again));
            check_mapping(&message)?;
        }
    }

    /// Any text written with the writer reads back exactly, delimiters and line breaks included.
    #[test]
    fn written_text_reads_back(
        texts in prop::collection::vec(
            prop_oneof![
                "[^\u{0}]{0,24}",
                "[|^~\\\\&\r\nA-Za-z0-9 ]{0,24}",
            ],
            1..6,
        ),
    ) {
        let delimiters = Delimiters::default();
        let mut writer = MessageWriter::new(delimiters);
        writer
            .segment("MSH")
            .text(3, "APP")
            .text(4, "FAC")
            .components(9, &["ADT", "A01", "ADT_A01"])
            .text(10, "1")
            .text(11, "P")
            .text(12, "2.5")
            .end();
        {
            let mut segment = writer.segment("NTE");
            for (i, text) in texts.iter().enumerate() {
                segment.text(i + 1, text);
            }
            segment.end();
        }
        let er7 = writer.finish();
        let message = Message::parse_str(&er7)
            .map_err(|e| TestCaseError::fail(format!("written message does not parse: {e}\n{er7:?}")))?;
        let nte = message.segment("NTE").ok_or_else(|| TestCaseError::fail("NTE lost"))?;
        for (i, text) in texts.iter().enumerate() {
            prop_assert_eq!(&nte.field(i + 1).value().into_owned(), text, "field {}", i + 1);
        }
    }
}

/// Cases per property: `PROPTEST_CASES` overrides (CI's smoke run uses fewer).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Regression (found by `mutated_samples_parse_round_trip_and_map`): an A01 cut before its
/// PV1 segment (so without a visit) gave a transaction with `"entry": []`, which FHIR forbids.
#[test]
fn a_message_with_nothing_to_write_maps_to_a_valid_transaction() {
    let bytes = samples()
        .iter()
        .find(|s| s.windows(13).any(|w| w == b"ADTApp|GHHSFa"))
        .expect("ADT-A01-01.hl7");
    let cut = bytes
        .windows(5)
        .position(|w| matches!(w[0], b'\r' | b'\n') && &w[1..] == b"PV1|")
        .expect("a PV1 segment");
    let message = Message::parse(&bytes[..cut + 1]).expect("parses");
    let Ok(Mapped::Adt(adt)) = fhir::map_message(&message) else {
        panic!("an A01 maps to a patient");
    };
    let transaction = adt.transaction("Patient/1");
    assert!(transaction.get("entry").is_none(), "{transaction}");
    assert!(phip_fhir::validate::validate_resource(&transaction).is_ok());
}
