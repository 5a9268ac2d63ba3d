//! Acknowledgements: the ACK (AA) or NAK (AE/AR with ERR segments) answering a message.
//!
//! The reply mirrors the message it answers, as receivers are expected to: sending and
//! receiving application/facility swapped, `ACK^<trigger>^ACK`, processing id, version and
//! MSH-18 echoed, the sender's delimiters reused, and the bytes encoded in the sender's
//! charset. Errors go into ERR-2/3/4/8 (v2.5 and later) or ERR-1 (earlier versions, whose
//! ERR segment has only that field), so both old and new receivers can read them.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{ErrorCode, Hl7Error, Location};
use crate::message::{Charset, Delimiters, Message, MessageWriter};

/// MSA-1 acknowledgement codes (original acknowledgement mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`: processed (and, for phip, durably stored).
    Accept,
    /// `AE`: the content is in error; resending it unchanged will fail again.
    Error,
    /// `AR`: rejected for a reason unrelated to the content (unsupported type, version or
    /// processing id, header validation failed, or the receiver is unable to process now).
    Reject,
}

impl AckCode {
    /// The MSA-1 code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }

    /// Reads an MSA-1 code; the enhanced-mode commit codes map to their original-mode peers.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "AA" | "CA" => Some(Self::Accept),
            "AE" | "CE" => Some(Self::Error),
            "AR" | "CR" => Some(Self::Reject),
            _ => None,
        }
    }

    /// The code HL7 prescribes for an error: AR when the header failed validation, the
    /// type/version/processing id is unsupported or the receiver failed internally; AE when
    /// the content is wrong.
    pub fn for_error(error: &Hl7Error) -> Self {
        let in_header = error.location.as_ref().is_some_and(|l| l.segment == "MSH");
        match error.code {
            ErrorCode::UnsupportedMessageType
            | ErrorCode::UnsupportedEventCode
            | ErrorCode::UnsupportedProcessingId
            | ErrorCode::UnsupportedVersionId
            | ErrorCode::ApplicationRecordLocked
            | ErrorCode::ApplicationInternalError => Self::Reject,
            _ if in_header => Self::Reject,
            _ => Self::Error,
        }
    }
}

/// An acknowledgement ready to be encoded and sent back.
#[derive(Debug, Clone)]
pub struct Ack {
    code: AckCode,
    errors: Vec<Hl7Error>,
    header: ReplyHeader,
    control_id: String,
    timestamp: String,
}

/// What the reply copies from the message it answers; composite fields are kept as ER7 in
/// the original delimiters, which the reply reuses.
#[derive(Debug, Clone, Default)]
struct ReplyHeader {
    delimiters: Delimiters,
    charset: Charset,
    sending_application: String,
    sending_facility: String,
    receiving_application: String,
    receiving_facility: String,
    trigger: String,
    control_id: String,
    processing_id: String,
    version: String,
    charset_field: String,
}

impl ReplyHeader {
    fn of(message: &Message) -> Self {
        let msh = message.msh();
        Self {
            delimiters: *message.delimiters(),
            charset: message.charset().clone(),
            sending_application: msh.field(3).raw().to_owned(),
            sending_facility: msh.field(4).raw().to_owned(),
            receiving_application: msh.field(5).raw().to_owned(),
            receiving_facility: msh.field(6).raw().to_owned(),
            trigger: msh.field(9).component(2).raw().to_owned(),
            control_id: msh.field(10).raw().to_owned(),
            processing_id: msh.field(11).raw().to_owned(),
            version: msh.field(12).raw().to_owned(),
            charset_field: msh.field(18).raw().to_owned(),
        }
    }
}

impl Ack {
    /// A positive acknowledgement (AA) of `message`.
    pub fn accept(message: &Message) -> Self {
        Self::new(message, AckCode::Accept, Vec::new())
    }

    /// A negative acknowledgement of `message` for one error, AE or AR as
    /// [`AckCode::for_error`] decides.
    pub fn error(message: &Message, error: Hl7Error) -> Self {
        let code = AckCode::for_error(&error);
        Self::new(message, code, vec![error])
    }

    /// An acknowledgement with an explicit code and any number of ERR segments (an AA may
    /// carry warnings).
    pub fn new(message: &Message, code: AckCode, errors: Vec<Hl7Error>) -> Self {
        Self::with_header(ReplyHeader::of(message), code, errors)
    }

    /// A NAK for bytes that did not parse: the header is read leniently where possible so
    /// that MSA-2 still echoes the control id; otherwise the reply uses default delimiters,
    /// UTF-8 and an empty MSA-2.
    pub fn for_unparsed(raw: &[u8], error: Hl7Error) -> Self {
        let header = Message::parse_lenient(raw)
            .map(|m| ReplyHeader::of(&m))
            .unwrap_or_default();
        let code = AckCode::for_error(&error);
        Self::with_header(header, code, vec![error])
    }

    fn with_header(header: ReplyHeader, code: AckCode, errors: Vec<Hl7Error>) -> Self {
        Self {
            code,
            errors,
            header,
            control_id: next_control_id(),
            timestamp: chrono::Local::now().format("%Y%m%d%H%M%S%z").to_string(),
        }
    }

    /// MSA-1.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// The errors reported in ERR segments.
    pub fn errors(&self) -> &[Hl7Error] {
        &self.errors
    }

    /// MSA-2: the control id of the acknowledged message (ER7 as received).
    pub fn acknowledged_control_id(&self) -> &str {
        &self.header.control_id
    }

    /// MSH-10 of the acknowledgement itself.
    pub fn control_id(&self) -> &str {
        &self.control_id
    }

    /// The acknowledgement as ER7 text.
    pub fn to_er7(&self) -> String {
        let h = &self.header;
        let mut w = MessageWriter::new(h.delimiters);
        let message_type = [
            "ACK",
            h.trigger.as_str(),
            if h.trigger.is_empty() { "" } else { "ACK" },
        ]
        .iter()
        .map(|c| crate::message::escape(c, &h.delimiters).into_owned())
        .collect::<Vec<_>>();
        let last = message_type
            .iter()
            .rposition(|c| !c.is_empty())
            .map_or(0, |i| i + 1);
        w.segment("MSH")
            .raw(3, &h.receiving_application)
            .raw(4, &h.receiving_facility)
            .raw(5, &h.sending_application)
            .raw(6, &h.sending_facility)
            .text(7, &self.timestamp)
            .raw(
                9,
                &message_type[..last].join(&h.delimiters.component.to_string()),
            )
            .text(10, &self.control_id)
            .raw(
                11,
                if h.processing_id.is_empty() {
                    "P"
                } else {
                    &h.processing_id
                },
            )
            .raw(
                12,
                if h.version.is_empty() {
                    "2.5"
                } else {
                    &h.version
                },
            )
            .raw(18, &h.charset_field)
            .end();
        let legacy = is_before_v25(&h.version);
        let mut msa = w.segment("MSA");
        msa.text(1, self.code.as_str()).raw(2, &h.control_id);
        if legacy {
            if let Some(first) = self.errors.first() {
                msa.text(3, &truncate(&first.message, 80));
            }
        }
        msa.end();
        for error in &self.errors {
            let mut err = w.segment("ERR");
            let code = error.code.code().to_string();
            if legacy {
                let location = error.location.clone().unwrap_or_default();
                let sub = h
                    .delimiters
                    .subcomponent
                    .map(String::from)
                    .unwrap_or_default();
                let code = [code.as_str(), error.code.text(), "HL70357"]
                    .iter()
                    .map(|c| escaped(c, &h.delimiters))
                    .collect::<Vec<_>>()
                    .join(&sub);
                let eld = [
                    escaped(&location.segment, &h.delimiters),
                    if location.segment.is_empty() {
                        String::new()
                    } else {
                        location.sequence.to_string()
                    },
                    location.field.map(|f| f.to_string()).unwrap_or_default(),
                    code,
                ]
                .join(&h.delimiters.component.to_string());
                err.raw(1, &eld);
            } else {
                if let Some(location) = &error.location {
                    let parts = location.components();
                    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                    err.components(2, &refs);
                }
                err.components(3, &[&code, error.code.text(), "HL70357"])
                    .text(4, error.severity.code())
                    .text(8, &error.message);
            }
            err.end();
        }
        w.finish()
    }

    /// The acknowledgement encoded in the charset of the message it answers.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.header.charset.encode(&self.to_er7())
    }
}

fn escaped(text: &str, d: &Delimiters) -> String {
    crate::message::escape(text, d).into_owned()
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// v2.1–2.4 ERR has only ERR-1 (ELD); v2.5 introduced ERR-2..12.
fn is_before_v25(version: &str) -> bool {
    let mut parts = version.split(['.', '^']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (2, 5),
        _ => false,
    }
}

/// Control ids unique within the process and sortable by time: `yyMMddHHmmssSSS` plus a
/// 4-digit counter, 19 characters (v2.3's MSH-10 allows 20).
fn next_control_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("{}{n:04}", chrono::Local::now().format("%y%m%d%H%M%S%3f"))
}

/// Reads an acknowledgement: MSA-1, MSA-2 and the errors of its ERR segments (v2.5 layout
/// or the older ERR-1). Useful to MLLP clients and tests.
pub fn read_ack(message: &Message) -> Option<(AckCode, String, Vec<Hl7Error>)> {
    let msa = message.segment("MSA")?;
    let code = AckCode::parse(&msa.field(1).value())?;
    let control_id = msa.field(2).value().into_owned();
    let errors = message
        .segments("ERR")
        .map(|err| {
            let (erl, code_field) = if err.field(2).is_empty() && !err.field(1).is_empty() {
                (err.field(1), None)
            } else {
                (err.field(2), Some(err.field(3)))
            };
            let number = match code_field {
                Some(field) => field.value().into_owned(),
                None => erl.component(4).subcomponent(1).into_owned(),
            };
            let location = (!erl.component(1).is_empty()).then(|| Location {
                segment: erl.component(1).value().into_owned(),
                sequence: erl.component(2).value().parse().unwrap_or(1),
                field: erl.component(3).value().parse().ok(),
                repetition: None,
                component: code_field.and_then(|_| erl.component(5).value().parse().ok()),
            });
            Hl7Error {
                code: code_from_number(&number),
                location,
                severity: match err.field(4).value().as_ref() {
                    "W" => crate::error::Severity::Warning,
                    "I" => crate::error::Severity::Information,
                    _ => crate::error::Severity::Error,
                },
                message: err.field(8).value().into_owned(),
            }
        })
        .collect();
    Some((code, control_id, errors))
}

fn code_from_number(number: &str) -> ErrorCode {
    match number {
        "100" => ErrorCode::SegmentSequenceError,
        "101" => ErrorCode::RequiredFieldMissing,
        "102" => ErrorCode::DataTypeError,
        "103" => ErrorCode::TableValueNotFound,
        "200" => ErrorCode::UnsupportedMessageType,
        "201" => ErrorCode::UnsupportedEventCode,
        "202" => ErrorCode::UnsupportedProcessingId,
        "203" => ErrorCode::UnsupportedVersionId,
        "204" => ErrorCode::UnknownKeyIdentifier,
        "205" => ErrorCode::DuplicateKeyIdentifier,
        "206" => ErrorCode::ApplicationRecordLocked,
        _ => ErrorCode::ApplicationInternalError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::GB18030;

    const A01: &str =
        "MSH|^~\\&|HIS|HOSP^1.2.3^ISO|PHIP|HUB|20240102||ADT^A01^ADT_A01|C123|P|2.5.1\rPID|1||M1\r";

    #[test]
    fn accept_mirrors_the_header() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        let ack = Ack::accept(&m);
        let reply = Message::parse(ack.to_er7().as_bytes()).unwrap();
        assert_eq!(reply.get("MSH-3").as_deref(), Some("PHIP"));
        assert_eq!(reply.get("MSH-4").as_deref(), Some("HUB"));
        assert_eq!(reply.get("MSH-5").as_deref(), Some("HIS"));
        assert_eq!(reply.msh().field(6).raw(), "HOSP^1.2.3^ISO");
        assert_eq!(reply.msh().field(9).raw(), "ACK^A01^ACK");
        assert_eq!(reply.get("MSH-11").as_deref(), Some("P"));
        assert_eq!(reply.get("MSH-12").as_deref(), Some("2.5.1"));
        assert_eq!(reply.control_id(), ack.control_id());
        assert_ne!(reply.control_id(), "C123");
        assert_eq!(reply.get("MSA-1").as_deref(), Some("AA"));
        assert_eq!(reply.get("MSA-2").as_deref(), Some("C123"));
        assert!(reply.segment("ERR").is_none());
        assert_ne!(Ack::accept(&m).control_id(), ack.control_id());
    }

    #[test]
    fn nak_carries_err_location_code_severity_and_text() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        let error = Hl7Error::missing("PID", 1, 7, "date of birth");
        let ack = Ack::error(&m, error.clone());
        assert_eq!(ack.code(), AckCode::Error);
        let reply = Message::parse(ack.to_er7().as_bytes()).unwrap();
        assert_eq!(reply.get("MSA-1").as_deref(), Some("AE"));
        assert_eq!(reply.segment("ERR").unwrap().field(2).raw(), "PID^1^7");
        assert_eq!(
            reply.segment("ERR").unwrap().field(3).raw(),
            "101^Required field missing^HL70357"
        );
        assert_eq!(reply.get("ERR-4").as_deref(), Some("E"));
        let (code, id, errors) = read_ack(&reply).unwrap();
        assert_eq!((code, id.as_str()), (AckCode::Error, "C123"));
        assert_eq!(errors, vec![error]);
    }

    #[test]
    fn unsupported_and_internal_errors_reject() {
        let m = Message::parse(A01.as_bytes()).unwrap();
        let ack = Ack::error(
            &m,
            Hl7Error::new(ErrorCode::UnsupportedMessageType, "no MFN"),
        );
        assert_eq!(ack.code(), AckCode::Reject);
        assert_eq!(
            AckCode::for_error(&Hl7Error::internal("db down")),
            AckCode::Reject
        );
        assert_eq!(
            AckCode::for_error(&Hl7Error::missing("MSH", 1, 10, "control id")),
            AckCode::Reject
        );
    }

    #[test]
    fn pre_v25_replies_use_err1_and_msa3() {
        let m = Message::parse(A01.replace("2.5.1", "2.3").as_bytes()).unwrap();
        let ack = Ack::error(&m, Hl7Error::missing("PID", 1, 3, "patient id"));
        let reply = Message::parse(ack.to_er7().as_bytes()).unwrap();
        assert_eq!(
            reply.segment("ERR").unwrap().field(1).raw(),
            "PID^1^3^101&Required field missing&HL70357"
        );
        assert!(reply.get("MSA-3").unwrap().contains("PID-3"));
        let (_, _, errors) = read_ack(&reply).unwrap();
        assert_eq!(errors[0].code, ErrorCode::RequiredFieldMissing);
        assert_eq!(errors[0].location, Some(Location::field("PID", 1, 3)));
    }

    #[test]
    fn reply_uses_the_senders_charset() {
        let text = "MSH|^~\\&|HIS|协和医院|PHIP|HUB|20240102||ADT^A01|G1|P|2.5|||||CHN|GB 18030-2000\rPID|1||A1\r";
        let (bytes, _, _) = GB18030.encode(text);
        let m = Message::parse(&bytes).unwrap();
        let ack = Ack::error(&m, Hl7Error::missing("PID", 1, 5, "患者姓名"));
        let out = ack.to_bytes();
        assert!(std::str::from_utf8(&out).is_err(), "GB18030 bytes expected");
        let reply = Message::parse(&out).unwrap();
        assert_eq!(reply.get("MSH-5").as_deref(), Some("HIS"));
        assert_eq!(reply.get("MSH-6").as_deref(), Some("协和医院"));
        assert_eq!(reply.get("MSH-18").as_deref(), Some("GB 18030-2000"));
        assert!(reply.get("ERR-8").unwrap().contains("患者姓名"));
    }

    #[test]
    fn unparsed_bytes_still_get_a_nak() {
        let raw = b"MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5\r";
        let error = Message::parse(raw).unwrap_err();
        let ack = Ack::for_unparsed(raw, error);
        let reply = Message::parse_lenient(ack.to_er7().as_bytes()).unwrap();
        assert_eq!(reply.get("MSA-1").as_deref(), Some("AR"));
        assert_eq!(reply.segment("ERR").unwrap().field(2).raw(), "MSH^1^10");
        assert_eq!(reply.get("MSH-5").as_deref(), Some("A"));

        let ack = Ack::for_unparsed(b"garbage", Message::parse(b"garbage").unwrap_err());
        let reply = Message::parse_lenient(ack.to_er7().as_bytes()).unwrap();
        assert_eq!(reply.get("MSA-2"), None);
        assert_eq!(reply.get("ERR-3").as_deref(), Some("100"));
    }
}
