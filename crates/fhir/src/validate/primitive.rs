//! Lexical checks of primitive values, hand-written to the regexes of the R4 specification
//! (kept in the generated definitions as `TypeInfo::regex`). Hand-written rather than regex
//! driven because they run on every write and need no regex engine; the unit tests pin them
//! to the spec's patterns.

use serde_json::Value;

/// The primitive types, by how their JSON is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Primitive {
    Boolean,
    Integer,
    UnsignedInt,
    PositiveInt,
    Decimal,
    String,
    Code,
    Id,
    Uri,
    Oid,
    Uuid,
    Base64Binary,
    Date,
    DateTime,
    Instant,
    Time,
    Xhtml,
}

impl Primitive {
    /// The primitive named by a FHIR type code, if it is one.
    pub(super) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "boolean" => Self::Boolean,
            "integer" => Self::Integer,
            "unsignedInt" => Self::UnsignedInt,
            "positiveInt" => Self::PositiveInt,
            "decimal" => Self::Decimal,
            "string" | "markdown" => Self::String,
            "code" => Self::Code,
            "id" => Self::Id,
            "uri" | "url" | "canonical" => Self::Uri,
            "oid" => Self::Oid,
            "uuid" => Self::Uuid,
            "base64Binary" => Self::Base64Binary,
            "date" => Self::Date,
            "dateTime" => Self::DateTime,
            "instant" => Self::Instant,
            "time" => Self::Time,
            "xhtml" => Self::Xhtml,
            _ => return None,
        })
    }
}

/// Checks a (non-null) JSON value against a primitive type; `Err` explains the problem in
/// plain words (the caller adds the element path).
pub(super) fn check(prim: Primitive, type_code: &str, value: &Value) -> Result<(), String> {
    match prim {
        Primitive::Boolean => match value {
            Value::Bool(_) => Ok(()),
            other => Err(format!(
                "expected a JSON boolean (true or false) for a boolean, found {}",
                describe(other)
            )),
        },
        Primitive::Integer | Primitive::UnsignedInt | Primitive::PositiveInt => {
            let Value::Number(n) = value else {
                return Err(format!(
                    "expected a JSON number for {type_code}, found {}",
                    describe(value)
                ));
            };
            let min = match prim {
                Primitive::Integer => i64::from(i32::MIN),
                Primitive::UnsignedInt => 0,
                _ => 1,
            };
            match n.as_i64() {
                Some(i) if (min..=i64::from(i32::MAX)).contains(&i) => Ok(()),
                Some(i) => Err(format!(
                    "{i} is out of range for {type_code} ({min} to {})",
                    i32::MAX
                )),
                None => Err(format!(
                    "{n} is not a whole number, as {type_code} requires"
                )),
            }
        }
        Primitive::Decimal => match value {
            // serde_json only produces JSON-grammar numbers, which the decimal regex accepts.
            Value::Number(_) => Ok(()),
            other => Err(format!(
                "expected a JSON number for a decimal, found {}",
                describe(other)
            )),
        },
        _ => {
            let Value::String(s) = value else {
                return Err(format!(
                    "expected a JSON string for {type_code}, found {}",
                    describe(value)
                ));
            };
            if s.is_empty() {
                return Err(format!(
                    "empty string for {type_code}: FHIR forbids empty values"
                ));
            }
            let ok = match prim {
                Primitive::String => true,
                Primitive::Xhtml => is_xhtml_div(s),
                Primitive::Code => is_code(s),
                Primitive::Id => is_id(s),
                Primitive::Uri => !s.chars().any(is_space),
                Primitive::Oid => is_oid(s),
                Primitive::Uuid => is_uuid(s),
                Primitive::Base64Binary => is_base64(s),
                Primitive::Date => is_date(s),
                Primitive::DateTime => is_date_time(s),
                Primitive::Instant => is_instant(s),
                Primitive::Time => is_time(s),
                _ => unreachable!("numeric and boolean types handled above"),
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "'{}' is not a valid {type_code}{}",
                    clip(s),
                    hint(prim)
                ))
            }
        }
    }
}

fn hint(prim: Primitive) -> &'static str {
    match prim {
        Primitive::Code => " (no leading, trailing or repeated whitespace)",
        Primitive::Id => " (1 to 64 letters, digits, '-' or '.')",
        Primitive::Uri => " (no whitespace)",
        Primitive::Oid => " (urn:oid:1.2.3…)",
        Primitive::Uuid => " (urn:uuid: and a lowercase UUID)",
        Primitive::Base64Binary => " (base64 text)",
        Primitive::Date => " (YYYY, YYYY-MM or YYYY-MM-DD)",
        Primitive::DateTime => {
            " (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with a time zone)"
        }
        Primitive::Instant => " (YYYY-MM-DDThh:mm:ss[.fff] with a time zone)",
        Primitive::Time => " (hh:mm:ss[.fff])",
        Primitive::Xhtml => " (the narrative must be one XHTML <div> element)",
        _ => "",
    }
}

/// A value quoted in a message, cut short so that a huge payload does not end up in it.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A JSON value's kind, for messages.
pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Narrative.div: a single XHTML `div` element (txt-1/txt-2 and the XHTML rules are not
/// checked in depth; this catches plain text or other markup put in its place).
fn is_xhtml_div(s: &str) -> bool {
    let s = s.trim_matches(is_space);
    let rest = match s.strip_prefix("<div") {
        Some(rest) => rest,
        None => return false,
    };
    rest.starts_with([' ', '>', '/', '\t', '\n', '\r'])
        && (s.ends_with("</div>") || s.ends_with("/>"))
}

/// `\s` of the spec's regexes, which are XML Schema ones: only these four characters.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
fn is_code(s: &str) -> bool {
    let mut prev_ws = true;
    for c in s.chars() {
        let ws = is_space(c);
        if ws && prev_ws {
            return false;
        }
        prev_ws = ws;
    }
    !prev_ws
}

/// `[A-Za-z0-9\-\.]{1,64}`.
pub(super) fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`.
fn is_oid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:oid:") else {
        return false;
    };
    let mut parts = rest.split('.');
    if !matches!(parts.next(), Some("0" | "1" | "2")) {
        return false;
    }
    let mut count = 0;
    for part in parts {
        count += 1;
        let valid = part == "0"
            || (!part.is_empty()
                && !part.starts_with('0')
                && part.bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return false;
        }
    }
    count > 0
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`.
fn is_uuid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: base64 characters in groups of four, whitespace allowed
/// between groups.
fn is_base64(s: &str) -> bool {
    let mut count = 0usize;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=' {
            count += 1;
        } else if is_space(c) {
            if !count.is_multiple_of(4) {
                return false;
            }
        } else {
            return false;
        }
    }
    count > 0 && count.is_multiple_of(4)
}

/// Parses `n` ASCII digits at the start of `b`.
fn digits(b: &[u8], n: usize) -> Option<u32> {
    if b.len() < n || !b[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b[..n]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0')),
    )
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// A date prefix: `YYYY`, `YYYY-MM` or `YYYY-MM-DD` (year 0001–9999, real calendar days).
/// Returns the number of bytes consumed and whether the day was present.
fn date_prefix(b: &[u8]) -> Option<(usize, bool)> {
    let year = digits(b, 4)?;
    if year == 0 {
        return None;
    }
    if b.len() == 4 || b[4] != b'-' {
        return Some((4, false));
    }
    let month = digits(&b[5..], 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.len() == 7 || b[7] != b'-' {
        return Some((7, false));
    }
    let day = digits(&b[8..], 2)?;
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some((10, true))
}

/// `hh:mm:ss(.f+)?` at the start of `b`; returns the bytes consumed.
fn time_prefix(b: &[u8]) -> Option<usize> {
    let h = digits(b, 2)?;
    if h > 23 || b.get(2) != Some(&b':') {
        return None;
    }
    let m = digits(&b[3..], 2)?;
    if m > 59 || b.get(5) != Some(&b':') {
        return None;
    }
    let s = digits(&b[6..], 2)?;
    if s > 60 {
        return None;
    }
    let mut end = 8;
    if b.get(end) == Some(&b'.') {
        let frac = b[end + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if frac == 0 {
            return None;
        }
        end += 1 + frac;
    }
    Some(end)
}

/// `Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`, exactly.
fn is_zone(b: &[u8]) -> bool {
    match b {
        [b'Z'] => true,
        [b'+' | b'-', rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            match (digits(rest, 2), digits(&rest[3..], 2)) {
                (Some(14), Some(0)) => true,
                (Some(h), Some(m)) => h <= 13 && m <= 59,
                _ => false,
            }
        }
        _ => false,
    }
}

fn is_date(s: &str) -> bool {
    date_prefix(s.as_bytes()).is_some_and(|(n, _)| n == s.len())
}

fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let Some((n, has_day)) = date_prefix(b) else {
        return false;
    };
    if n == b.len() {
        return true;
    }
    if !has_day || b[n] != b'T' {
        return false;
    }
    let rest = &b[n + 1..];
    time_prefix(rest).is_some_and(|t| is_zone(&rest[t..]))
}

fn is_instant(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(date_prefix(b), Some((10, true)))
        && b.get(10) == Some(&b'T')
        && time_prefix(&b[11..]).is_some_and(|t| is_zone(&b[11 + t..]))
}

fn is_time(s: &str) -> bool {
    time_prefix(s.as_bytes()) == Some(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        for ok in ["2020", "2020-02", "2020-02-29", "0001", "1900-12-31"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "0000",
            "20",
            "2020-2",
            "2020-13",
            "2020-00",
            "2019-02-29",
            "2020-04-31",
            "2020-01-01T",
            "2020-01-1",
            "2020/01/01",
            "",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }

    #[test]
    fn date_times() {
        for ok in [
            "2020",
            "2020-05",
            "2020-05-06",
            "2020-05-06T10:11:12Z",
            "2020-05-06T10:11:12.123+02:00",
            "2020-05-06T23:59:60-14:00",
            "2020-05-06T00:00:00+14:00",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "2020-05-06T10:11:12",
            "2020-05-06T10:11Z",
            "2020-05T10:11:12Z",
            "2020-05-06T24:00:00Z",
            "2020-05-06T10:11:12.Z",
            "2020-05-06T10:11:12+14:30",
            "2020-05-06T10:11:12+0200",
            "2020-05-06 10:11:12Z",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_instant("2015-02-07T13:28:17.239+02:00"));
        assert!(!is_instant("2015-02-07"));
        assert!(!is_instant("2015-02-07T13:28:17"));
        assert!(is_time("10:11:12") && is_time("10:11:12.5"));
        assert!(!is_time("10:11") && !is_time("25:00:00") && !is_time("10:11:12Z"));
    }

    #[test]
    fn strings() {
        assert!(is_code("a b") && is_code("final") && is_code("x"));
        assert!(!is_code(" a") && !is_code("a ") && !is_code("a  b"));
        assert!(is_id("a-B.9") && !is_id("a_b") && !is_id(&"a".repeat(65)));
        assert!(is_oid("urn:oid:1.2.840.10008") && !is_oid("urn:oid:1") && !is_oid("1.2.3"));
        assert!(!is_oid("urn:oid:1.02"));
        assert!(is_uuid("urn:uuid:c757873d-ec9a-4326-a141-556f43239520"));
        assert!(!is_uuid("urn:uuid:C757873D-EC9A-4326-A141-556F43239520"));
        assert!(is_base64("aGVsbG8=") && is_base64(" aGVs\nbG8= ") && !is_base64("abc"));
        assert!(!is_base64("ab c d") && !is_base64("a*cd"));
    }

    #[test]
    fn xhtml() {
        assert!(is_xhtml_div(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"
        ));
        assert!(is_xhtml_div("<div/>") && is_xhtml_div(" <div>\n</div>\n"));
        assert!(!is_xhtml_div("plain text") && !is_xhtml_div("<divx></divx>"));
        assert!(!is_xhtml_div("<p>x</p>") && !is_xhtml_div("<div>unclosed"));
    }

    #[test]
    fn numbers() {
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(check(Primitive::Integer, "integer", &v("-5")).is_ok());
        assert!(check(Primitive::Integer, "integer", &v("2147483648")).is_err());
        assert!(check(Primitive::Integer, "integer", &v("1.5")).is_err());
        assert!(check(Primitive::Integer, "integer", &v("\"1\"")).is_err());
        assert!(check(Primitive::PositiveInt, "positiveInt", &v("0")).is_err());
        assert!(check(Primitive::UnsignedInt, "unsignedInt", &v("0")).is_ok());
        assert!(check(Primitive::Decimal, "decimal", &v("1.50")).is_ok());
        assert!(check(Primitive::Decimal, "decimal", &v("\"1.5\"")).is_err());
        assert!(check(Primitive::Boolean, "boolean", &v("\"true\"")).is_err());
    }
}
