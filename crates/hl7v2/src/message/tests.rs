use super::*;
use encoding_rs::GB18030;

const ADT: &str = "MSH|^~\\&|HIS|\u{4eba}\u{6c11}\u{533b}\u{9662}^1.2.3^ISO|PHIP|HUB|20240102030405||ADT^A01^ADT_A01|CTRL-1|P|2.5.1\r\
EVN|A01|20240102030405\r\
PID|1||MRN1^^^HOSP^MR~110101199003078515^^^^NNCHN||\u{5f20}^\u{4f1f}~Zhang^Wei||19900307|M|||Road \\T\\ Lane^^Beijing^^100000\r\
OBX|1|ST|A^B||x\\F\\y\r\
OBX|2|ST|C^D||second\r";

#[test]
fn fields_components_repetitions_and_subcomponents() {
    let m = Message::parse(ADT.as_bytes()).unwrap();
    assert_eq!(m.get("PID-3-1").as_deref(), Some("MRN1"));
    assert_eq!(m.get("PID-3(2)-1").as_deref(), Some("110101199003078515"));
    assert_eq!(m.get("PID-3(2)-5").as_deref(), Some("NNCHN"));
    assert_eq!(m.get("PID-5-1").as_deref(), Some("张"));
    assert_eq!(m.get("PID-5(2)-2").as_deref(), Some("Wei"));
    assert_eq!(m.get("PID-11-1").as_deref(), Some("Road & Lane"));
    assert_eq!(m.get("OBX(2)-5").as_deref(), Some("second"));
    assert_eq!(m.get("OBX-5").as_deref(), Some("x|y"));
    assert_eq!(m.get("PID-4"), None);
    assert_eq!(m.get("ZZZ-1"), None);
    let pid = m.segment("PID").unwrap();
    assert_eq!(pid.field(3).repetitions().count(), 2);
    assert_eq!(pid.field(5).repetition(2).components().count(), 2);
    assert_eq!(m.segments("OBX").count(), 2);
    assert_eq!(m.segments("OBX").nth(1).unwrap().sequence(), 2);
}

#[test]
fn header_accessors_count_msh_fields_from_the_separator() {
    let m = Message::parse(ADT.as_bytes()).unwrap();
    assert_eq!(m.msh().field(1).raw(), "|");
    assert_eq!(m.msh().field(2).raw(), "^~\\&");
    assert_eq!(m.msh().field(2).value(), "^~\\&");
    assert_eq!(m.get("MSH-3").as_deref(), Some("HIS"));
    assert_eq!(m.control_id(), "CTRL-1");
    assert_eq!(m.sending_facility().as_deref(), Some("人民医院"));
    assert_eq!(m.sending_application().as_deref(), Some("HIS"));
    assert_eq!(m.version(), "2.5.1");
    let t = m.message_type();
    assert_eq!(
        (t.code.as_str(), t.trigger.as_str(), t.structure.as_str()),
        ("ADT", "A01", "ADT_A01")
    );
}

#[test]
fn accepts_lf_crlf_bom_and_custom_delimiters() {
    let lf = ADT.replace('\r', "\n");
    let crlf = ADT.replace('\r', "\r\n");
    let bom = format!("\u{feff}{lf}");
    for text in [lf, crlf, bom] {
        let m = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(m.segment_count(), 5);
        assert_eq!(m.get("PID-5(2)-1").as_deref(), Some("Zhang"));
    }
    let custom = "MSH#*@!%#A#B#C#D#2024##ADT*A01#9#P#2.3\rPID#1##X*Y@Z%S##N!F!X\r";
    let m = Message::parse(custom.as_bytes()).unwrap();
    assert_eq!(m.get("PID-3-2").as_deref(), Some("Y"));
    assert_eq!(m.get("PID-3(2)-1").as_deref(), Some("Z"));
    assert_eq!(m.get("PID-3(2)-1-2").as_deref(), Some("S"));
    assert_eq!(m.get("PID-5").as_deref(), Some("N#X"));
}

#[test]
fn gb18030_message_decodes_per_msh18() {
    let text = "MSH|^~\\&|HIS|协和医院|PHIP|HUB|20240102||ADT^A01|G1|P|2.5|||||CHN|GB 18030-2000\r\
PID|1||A1^^^协和医院^MR||张^伟||19800101|M|||朝阳区建国路88号^^北京市^^100020\r";
    let (bytes, _, unmappable) = GB18030.encode(text);
    assert!(!unmappable);
    assert!(std::str::from_utf8(&bytes).is_err(), "really GB18030 bytes");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.get("PID-5-1").as_deref(), Some("张"));
    assert_eq!(m.get("PID-5-2").as_deref(), Some("伟"));
    assert_eq!(m.get("PID-11-3").as_deref(), Some("北京市"));
    assert_eq!(m.sending_facility().as_deref(), Some("协和医院"));
    assert_eq!(m.charset().encoding, GB18030);
    assert_eq!(m.to_bytes(), bytes.as_ref());
}

#[test]
fn malformed_messages_name_segment_and_field() {
    let err = Message::parse(b"PID|1||X\r").unwrap_err();
    assert_eq!(err.code, ErrorCode::SegmentSequenceError);
    assert_eq!(err.location.unwrap().segment, "MSH");

    let err = Message::parse(b"MSH|^^\\&|A\r").unwrap_err();
    assert_eq!(err.location, Some(Location::field("MSH", 1, 2)));

    let err = Message::parse(b"MSHX^~\\&|A\r").unwrap_err();
    assert_eq!(err.location, Some(Location::field("MSH", 1, 1)));

    let err = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\r").unwrap_err();
    assert_eq!(err.code, ErrorCode::RequiredFieldMissing);
    assert_eq!(err.location, Some(Location::field("MSH", 1, 10)));

    let err = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT|1|P|2.5\r").unwrap_err();
    assert_eq!(
        err.location,
        Some(Location::field("MSH", 1, 9).with_component(2))
    );

    let err =
        Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\rPID|1\rpv1|x\r").unwrap_err();
    assert_eq!(err.code, ErrorCode::SegmentSequenceError);
    assert_eq!(err.location.as_ref().unwrap().sequence, 3);
    assert!(err.message.contains("pv1"), "{}", err.message);

    // A lenient parse still reads the header of a message the strict one rejects.
    let lenient = Message::parse_lenient(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\r").unwrap();
    assert_eq!(lenient.sending_application().as_deref(), Some("A"));
}

#[test]
fn writer_escapes_and_round_trips() {
    let mut w = MessageWriter::new(Delimiters::default());
    w.segment("MSH")
        .text(3, "APP")
        .components(9, &["ADT", "A01", ""])
        .text(10, "1")
        .text(11, "P")
        .text(12, "2.5")
        .end();
    w.segment("PID")
        .components(5, &["O|Brien^", "Pat&\\~"])
        .text(11, "line1\nline2")
        .end();
    let er7 = w.finish();
    assert!(
        er7.starts_with("MSH|^~\\&|APP||||||ADT^A01|1|P|2.5\rPID|||||"),
        "{er7}"
    );
    let m = Message::parse(er7.as_bytes()).unwrap();
    assert_eq!(m.get("PID-5-1").as_deref(), Some("O|Brien^"));
    assert_eq!(m.get("PID-5-2").as_deref(), Some("Pat&\\~"));
    assert_eq!(m.get("PID-11").as_deref(), Some("line1\nline2"));
    assert_eq!(m.to_er7(), er7);
}

#[test]
fn explicit_null_is_visible() {
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|1||X||\"\"\r").unwrap();
    assert!(m.segment("PID").unwrap().field(5).is_null());
}

/// Found by the libFuzzer target: a later segment cut down to a bare `MSH` indexed an MSH-1
/// past the end of the text, and reading it panicked.
#[test]
fn a_bare_msh_segment_has_no_fields() {
    let m = Message::parse(b"MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.5\rPID|1||X\rMSH").unwrap();
    let bare = m.segments_all().nth(2).unwrap();
    assert_eq!(bare.id(), "MSH");
    assert_eq!(bare.field_count(), 0);
    assert_eq!(bare.field(1).value(), "");
    assert_eq!(bare.field(2).value(), "");
    let again = Message::parse(&m.to_bytes()).unwrap();
    assert_eq!(again.segments_all().count(), 3);
}
