//! HL7 escape sequences (`\F\`, `\S\`, `\Xhh\`, `\.br\`, ...) in both directions.

use std::borrow::Cow;

use encoding_rs::Encoding;

use super::Delimiters;

/// Replaces escape sequences in `raw` with the text they stand for.
///
/// Delimiter escapes (`\F\ \S\ \T\ \R\ \E\ \P\`) become the delimiter; `\Xhh..\` becomes the
/// bytes it spells, decoded in the message charset; `\.br\` and `\.sp\` become line breaks;
/// highlighting and other formatting commands (`\H\ \N\ \.in..\` ...) and charset switches
/// (`\C..\ \M..\`) are dropped, as they carry no text. An unterminated or unknown sequence is
/// kept as written rather than losing data. Borrows when there is nothing to unescape.
pub fn unescape<'a>(
    raw: &'a str,
    delimiters: &Delimiters,
    charset: &'static Encoding,
) -> Cow<'a, str> {
    let Some(esc) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    if !raw.contains(esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(len) = after.find(esc) else {
            // No closing escape character: keep the remainder literally.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let sequence = &after[..len];
        if !expand(sequence, delimiters, charset, &mut out) {
            out.push(esc);
            out.push_str(sequence);
            out.push(esc);
        }
        rest = &after[len + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends the text `sequence` (without its escape characters) stands for; false if unknown.
fn expand(sequence: &str, d: &Delimiters, charset: &'static Encoding, out: &mut String) -> bool {
    let delimiter = match sequence {
        "F" => Some(d.field),
        "S" => Some(d.component),
        "T" => d.subcomponent,
        "R" => Some(d.repetition),
        "E" => d.escape,
        "P" => d.truncation,
        _ => None,
    };
    if let Some(c) = delimiter {
        out.push(c);
        return true;
    }
    match sequence.as_bytes().first() {
        Some(b'X') => match decode_hex(&sequence[1..]) {
            Some(bytes) => {
                let (text, _) = charset.decode_without_bom_handling(&bytes);
                out.push_str(&text);
                true
            }
            None => false,
        },
        Some(b'.') => {
            // Formatted-text commands: only line breaks carry meaning in plain text.
            if sequence == ".br" || sequence.starts_with(".sp") {
                out.push('\n');
            }
            true
        }
        Some(b'H' | b'N') if sequence.len() == 1 => true,
        Some(b'C' | b'M' | b'Z') => true,
        _ => false,
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || hex.len() & 1 == 1 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Escapes `text` so that it can stand as one value inside a component or subcomponent.
///
/// Every delimiter becomes its escape sequence and line breaks become `\X0D\`/`\X0A\`, since a
/// raw CR would end the segment. Borrows when nothing needs escaping.
pub fn escape<'a>(text: &'a str, delimiters: &Delimiters) -> Cow<'a, str> {
    let needs = |c: char| delimiters.is_special(c) || c == '\r' || c == '\n';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    // Without an escape character nothing can be escaped; dropping structure is the only safe choice.
    let Some(esc) = delimiters.escape else {
        return Cow::Owned(text.chars().filter(|&c| !needs(c)).collect());
    };
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let code = if c == delimiters.field {
            "F"
        } else if c == delimiters.component {
            "S"
        } else if Some(c) == delimiters.subcomponent {
            "T"
        } else if c == delimiters.repetition {
            "R"
        } else if c == esc {
            "E"
        } else if Some(c) == delimiters.truncation {
            "P"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else {
            out.push(c);
            continue;
        };
        out.push(esc);
        out.push_str(code);
        out.push(esc);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{GB18030, UTF_8};

    fn un(s: &str) -> String {
        unescape(s, &Delimiters::default(), UTF_8).into_owned()
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(un(r"A\F\B\S\C\T\D\R\E\E\F"), r"A|B^C&D~E\F");
        assert!(matches!(
            unescape("plain", &Delimiters::default(), UTF_8),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hex_formatting_and_unknown_sequences() {
        assert_eq!(un(r"caf\XC3A9\"), "café");
        assert_eq!(un(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(un(r"\H\bold\N\ text"), "bold text");
        assert_eq!(un(r"a\.in+4\b"), "ab");
        assert_eq!(un(r"keep \Q\ and \ dangling"), r"keep \Q\ and \ dangling");
        assert_eq!(un(r"odd \X4\ hex"), r"odd \X4\ hex");
        // Hex bytes are decoded in the message charset.
        let (gb, _, _) = GB18030.encode("张");
        let hex: String = gb.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            unescape(&format!(r"\X{hex}\"), &Delimiters::default(), GB18030),
            "张"
        );
    }

    #[test]
    fn truncation_escape_only_with_v27_delimiters() {
        let d = Delimiters::from_msh('|', "^~\\&#").unwrap();
        assert_eq!(unescape(r"a\P\b", &d, UTF_8), "a#b");
        assert_eq!(escape("a#b", &d), r"a\P\b");
        assert_eq!(escape("a#b", &Delimiters::default()), "a#b");
    }

    #[test]
    fn escape_round_trips() {
        let d = Delimiters::default();
        for text in [
            r"plain",
            r"A|B^C&D~E\F",
            "multi\nline\r\ntext",
            r"\\||^^",
            "中文 | 张伟^王芳",
            "",
        ] {
            let escaped = escape(text, &d);
            assert!(
                !escaped.contains(['|', '^', '&', '~', '\r', '\n']),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped, &d, UTF_8), text);
        }
    }
}
