//! Character sets (MSH-18, HL7 table 0211): detection on the raw bytes, decoding, encoding.

use encoding_rs::{
    Encoding, BIG5, EUC_KR, GB18030, GBK, ISO_2022_JP, ISO_8859_15, ISO_8859_2, ISO_8859_3,
    ISO_8859_4, ISO_8859_5, ISO_8859_6, ISO_8859_7, ISO_8859_8, UTF_16BE, UTF_16LE, UTF_8,
    WINDOWS_1252, WINDOWS_1254,
};

use crate::error::{ErrorCode, Hl7Error, Location};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The character set a message was (or will be) encoded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charset {
    /// MSH-18 as the sender wrote it (first repetition); empty when absent.
    pub label: String,
    /// The encoding used to decode and encode the message.
    pub encoding: &'static Encoding,
}

impl Default for Charset {
    fn default() -> Self {
        Self {
            label: String::new(),
            encoding: UTF_8,
        }
    }
}

impl Charset {
    /// Encodes text in this charset, for replies that must match the sender's MSH-18.
    ///
    /// Characters the charset cannot represent come out as `?` (encoding_rs would write HTML
    /// character references, which mean nothing in HL7).
    pub fn encode(&self, text: &str) -> Vec<u8> {
        if self.encoding == UTF_8 {
            return text.as_bytes().to_vec();
        }
        let mut encoder = self.encoding.new_encoder();
        let mut out = Vec::with_capacity(text.len() + 16);
        let mut rest = text;
        loop {
            let capacity = encoder
                .max_buffer_length_from_utf8_without_replacement(rest.len())
                .unwrap_or(rest.len() * 4 + 16);
            out.reserve(capacity);
            let (result, read) =
                encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
            rest = &rest[read..];
            match result {
                encoding_rs::EncoderResult::InputEmpty => return out,
                encoding_rs::EncoderResult::OutputFull => {}
                encoding_rs::EncoderResult::Unmappable(_) => out.push(b'?'),
            }
        }
    }
}

/// Encodes a whole message for the wire so that [`decode`] reads the same text back.
///
/// A message that arrived UTF-8 because of a byte-order mark may carry an MSH-18 label that
/// names another (or no known) charset; the mark is what made it UTF-8, so it is written
/// again. Without it the label would decide, and the text would read differently or not at all.
pub(crate) fn encode_message(charset: &Charset, text: &str) -> Vec<u8> {
    let bytes = charset.encode(text);
    let label_disagrees = charset.encoding == UTF_8
        && declared_label(text.as_bytes())
            .is_some_and(|label| encoding_for_label(&label) != Some(UTF_8));
    if label_disagrees {
        let mut marked = Vec::with_capacity(UTF8_BOM.len() + bytes.len());
        marked.extend_from_slice(UTF8_BOM);
        marked.extend_from_slice(&bytes);
        marked
    } else {
        bytes
    }
}

/// Maps an MSH-18 value (table 0211, or a WHATWG label) to an encoding.
pub fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    let normalized = label.trim().to_ascii_uppercase();
    let encoding = match normalized.as_str() {
        "ASCII" | "8859/1" => WINDOWS_1252,
        "8859/2" => ISO_8859_2,
        "8859/3" => ISO_8859_3,
        "8859/4" => ISO_8859_4,
        "8859/5" => ISO_8859_5,
        "8859/6" => ISO_8859_6,
        "8859/7" => ISO_8859_7,
        "8859/8" => ISO_8859_8,
        "8859/9" => WINDOWS_1254,
        "8859/15" => ISO_8859_15,
        "UNICODE" | "UNICODE UTF-8" | "UTF-8" | "UTF8" => UTF_8,
        "GB 18030-2000" | "GB 18030-2005" | "GB18030" | "GB 18030" | "GB18030-2000"
        | "GB18030-2005" => GB18030,
        // GB 2312 is a subset of GBK; the GBK decoder reads both.
        "ISO IR58" | "GB2312" | "GBK" => GBK,
        "BIG-5" | "BIG5" => BIG5,
        "KS X 1001" | "ISO IR149" => EUC_KR,
        "ISO IR87" | "ISO IR159" => ISO_2022_JP,
        _ => return Encoding::for_label(normalized.as_bytes()).filter(is_ascii_compatible),
    };
    Some(encoding)
}

/// UTF-16 cannot carry an ER7 header readable as ASCII, so such labels are refused.
fn is_ascii_compatible(encoding: &&'static Encoding) -> bool {
    *encoding != UTF_16LE && *encoding != UTF_16BE
}

/// Decodes a raw message to text, choosing the charset from MSH-18.
///
/// A UTF-8 byte-order mark means UTF-8 and is dropped. Without MSH-18 the text must be UTF-8;
/// if it is not, GB18030 is assumed, because senders in China commonly emit GBK without
/// declaring it and GB18030 decodes every GBK (and ASCII) byte sequence. Bytes that are not
/// valid in the declared charset are an error on MSH-18 rather than silently replaced.
pub fn decode(raw: &[u8]) -> Result<(String, Charset), Hl7Error> {
    let (bom, bytes) = match raw.strip_prefix(UTF8_BOM) {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let label = declared_label(bytes).unwrap_or_default();
    let msh18 = || Location::field("MSH", 1, 18);
    let encoding = if bom || label.is_empty() {
        UTF_8
    } else {
        encoding_for_label(&label).ok_or_else(|| {
            Hl7Error::at(
                ErrorCode::TableValueNotFound,
                msh18(),
                format!("character set {label:?} is not supported"),
            )
        })?
    };
    if encoding == UTF_8 {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                return Ok((
                    text.to_owned(),
                    Charset {
                        label,
                        encoding: UTF_8,
                    },
                ))
            }
            Err(e) if !label.is_empty() || bom => {
                return Err(Hl7Error::at(
                    ErrorCode::DataTypeError,
                    msh18(),
                    format!(
                        "message is declared UTF-8 but byte {} is not valid UTF-8",
                        e.valid_up_to()
                    ),
                ))
            }
            Err(_) => {
                let text = decode_strict(bytes, GB18030).ok_or_else(|| {
                    Hl7Error::at(
                        ErrorCode::DataTypeError,
                        msh18(),
                        "message declares no character set and is neither UTF-8 nor GB18030",
                    )
                })?;
                return Ok((
                    text,
                    Charset {
                        label,
                        encoding: GB18030,
                    },
                ));
            }
        }
    }
    let text = decode_strict(bytes, encoding).ok_or_else(|| {
        Hl7Error::at(
            ErrorCode::DataTypeError,
            msh18(),
            format!("message bytes are not valid in the declared character set {label:?}"),
        )
    })?;
    Ok((text, Charset { label, encoding }))
}

fn decode_strict(bytes: &[u8], encoding: &'static Encoding) -> Option<String> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| text.into_owned())
}

/// Reads the first repetition of MSH-18 from raw bytes, before anything is decoded.
///
/// Every supported charset is ASCII-compatible and the header is ASCII, so MSH can be split
/// on its byte delimiters without knowing the charset yet.
fn declared_label(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let line = &bytes[start..];
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    if !line.starts_with(b"MSH") || line.len() < 8 {
        return None;
    }
    let separator = line[3];
    let repetition = line[5];
    // parts[0] = "MSH", parts[1] = MSH-2, parts[n - 1] = MSH-n.
    let msh18 = line.split(|&b| b == separator).nth(17)?;
    let first = msh18.split(|&b| b == repetition).next()?;
    let label = std::str::from_utf8(first).ok()?.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh(charset: &str) -> String {
        format!("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5|||||CHN|{charset}\r")
    }

    #[test]
    fn labels_of_table_0211() {
        assert_eq!(encoding_for_label("GB 18030-2000"), Some(GB18030));
        assert_eq!(encoding_for_label("gb18030"), Some(GB18030));
        assert_eq!(encoding_for_label("UNICODE UTF-8"), Some(UTF_8));
        assert_eq!(encoding_for_label("8859/1"), Some(WINDOWS_1252));
        assert_eq!(encoding_for_label("ISO IR58"), Some(GBK));
        assert_eq!(encoding_for_label("UNICODE UTF-16"), None);
        assert_eq!(encoding_for_label("KLINGON"), None);
    }

    #[test]
    fn decodes_declared_gb18030() {
        let text = format!("{}PID|1||1||张^伟\r", msh("GB 18030-2000"));
        let (bytes, _, _) = GB18030.encode(&text);
        let (decoded, charset) = decode(&bytes).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(charset.encoding, GB18030);
        assert_eq!(charset.label, "GB 18030-2000");
        assert_eq!(charset.encode(&decoded), bytes.as_ref());
    }

    #[test]
    fn undeclared_non_utf8_falls_back_to_gb18030() {
        let text = format!("{}PID|1||1||王^芳\r", msh(""));
        let (bytes, _, _) = GB18030.encode(&text);
        let (decoded, charset) = decode(&bytes).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(charset.encoding, GB18030);
    }

    #[test]
    fn declared_utf8_that_is_not_is_an_msh18_error() {
        let mut bytes = msh("UNICODE UTF-8").into_bytes();
        bytes.extend_from_slice(b"PID|1||\xFF\xFE\r");
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.location, Some(Location::field("MSH", 1, 18)));
        let err = decode(msh("EBCDIC-ISH").as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TableValueNotFound);
    }

    #[test]
    fn bom_is_dropped() {
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice(msh("").as_bytes());
        let (text, _) = decode(&bytes).unwrap();
        assert!(text.starts_with("MSH|"));
    }

    #[test]
    fn a_bom_that_overrode_the_label_is_written_again() {
        let mut bytes = UTF8_BOM.to_vec();
        bytes.extend_from_slice(format!("{}PID|1||1||张^伟\r", msh("19790629")).as_bytes());
        let (text, charset) = decode(&bytes).unwrap();
        assert_eq!(charset.encoding, UTF_8);
        let again = encode_message(&charset, &text);
        assert_eq!(again, bytes);
        assert_eq!(decode(&again).unwrap(), (text.clone(), charset.clone()));
        // A label that agrees needs no mark.
        let plain = msh("UNICODE UTF-8");
        let (text, charset) = decode(plain.as_bytes()).unwrap();
        assert_eq!(encode_message(&charset, &text), plain.as_bytes());
    }

    #[test]
    fn unmappable_characters_become_question_marks() {
        let latin = Charset {
            label: "8859/1".into(),
            encoding: WINDOWS_1252,
        };
        assert_eq!(latin.encode("café 张"), b"caf\xE9 ?");
    }
}
