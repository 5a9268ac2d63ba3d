//! HL7 v2 data types (TS/DTM, CX, XPN, XAD, XTN, CWE, EI, XCN, NM) to FHIR R4 JSON.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use crate::error::{ErrorCode, Hl7Error, Location};
use crate::message::{Component, Field, Repetition};

/// System of the Chinese resident identity card number (居民身份证号).
pub const RESIDENT_ID_SYSTEM: &str = "urn:oid:2.16.156.10011.1.1";
/// Prefix of systems naming identifiers by their assigning authority or facility.
pub const ID_SYSTEM_PREFIX: &str = "urn:phip:id:";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// Characters kept as-is when a facility or authority name becomes part of a URI.
const URI_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What every mapping needs from the message header.
#[derive(Debug, Clone)]
pub struct Context {
    /// MSH-4, the sending facility: the assigner of identifiers that name no authority.
    pub facility: String,
    /// The UTC offset (`+08:00`) for times that carry none: MSH-7's offset if it has one,
    /// else China Standard Time, the zone of the platform's senders.
    pub default_offset: String,
}

impl Context {
    /// The system for identifiers assigned by `authority` (percent-encoded into a URN).
    pub fn system_for(authority: &str) -> String {
        format!(
            "{ID_SYSTEM_PREFIX}{}",
            utf8_percent_encode(authority, URI_SAFE)
        )
    }
}

/// An identifier as the master patient index sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    /// `Identifier.system`.
    pub system: String,
    /// `Identifier.value`.
    pub value: String,
}

/// Converts an HL7 date/time (`YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`) to a FHIR dateTime.
///
/// FHIR requires seconds and a zone once a time is given, so minutes are padded with `:00`
/// and a missing zone is `ctx.default_offset`. `Ok(None)` when empty.
pub fn date_time(
    raw: &str,
    ctx: &Context,
    at: &dyn Fn() -> Location,
) -> Result<Option<String>, Hl7Error> {
    let Some(parts) = split_ts(raw, at)? else {
        return Ok(None);
    };
    let mut out = parts.date;
    if let Some(time) = parts.time {
        out.push('T');
        out.push_str(&time);
        out.push_str(parts.offset.as_deref().unwrap_or(&ctx.default_offset));
    }
    Ok(Some(out))
}

/// Converts an HL7 date/time to a FHIR date, dropping any time (e.g. PID-7 `198808181126`).
pub fn date(raw: &str, at: &dyn Fn() -> Location) -> Result<Option<String>, Hl7Error> {
    Ok(split_ts(raw, at)?.map(|p| p.date))
}

/// Converts an HL7 date/time to a FHIR instant: only when it has at least minutes.
pub fn instant(
    raw: &str,
    ctx: &Context,
    at: &dyn Fn() -> Location,
) -> Result<Option<String>, Hl7Error> {
    Ok(split_ts(raw, at)?.and_then(|p| {
        let time = p.time?;
        Some(format!(
            "{}T{time}{}",
            p.date,
            p.offset.as_deref().unwrap_or(&ctx.default_offset)
        ))
    }))
}

struct TsParts {
    date: String,
    time: Option<String>,
    offset: Option<String>,
}

fn split_ts(raw: &str, at: &dyn Fn() -> Location) -> Result<Option<TsParts>, Hl7Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Hl7Error::at(
            ErrorCode::DataTypeError,
            at(),
            format!("{raw:?} is not an HL7 date/time (YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ])"),
        )
    };
    let (body, offset) = match raw.find(['+', '-']) {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || ![4, 6, 8, 10, 12, 14].contains(&digits.len())
        || fraction
            .is_some_and(|f| f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()))
        || (fraction.is_some() && digits.len() != 14)
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let year = num(0..4).ok_or_else(bad)?;
    let month = num(4..6);
    let day = num(6..8);
    let valid_date = match (month, day) {
        (Some(m), Some(d)) => chrono::NaiveDate::from_ymd_opt(year as i32, m, d).is_some(),
        (Some(m), None) => (1..=12).contains(&m),
        _ => true,
    };
    if year == 0 || !valid_date {
        return Err(bad());
    }
    let mut date = format!("{year:04}");
    if let Some(m) = month {
        date.push_str(&format!("-{m:02}"));
    }
    if let Some(d) = day {
        date.push_str(&format!("-{d:02}"));
    }
    let time = match num(8..10) {
        Some(hour) => {
            let minute = num(10..12).unwrap_or(0);
            let second = num(12..14).unwrap_or(0);
            if hour > 23 || minute > 59 || second > 59 {
                return Err(bad());
            }
            let mut t = format!("{hour:02}:{minute:02}:{second:02}");
            if let Some(f) = fraction {
                t.push('.');
                t.push_str(f);
            }
            Some(t)
        }
        None => None,
    };
    let offset = match offset {
        Some(o) => {
            let (sign, rest) = o.split_at(1);
            if rest.len() != 4 || !rest.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let (h, m) = (&rest[..2], &rest[2..]);
            if h > "14" || m > "59" {
                return Err(bad());
            }
            Some(format!("{sign}{h}:{m}"))
        }
        None => None,
    };
    Ok(Some(TsParts { date, time, offset }))
}

/// An HL7 NM value as a FHIR decimal: `+1.50` → `1.50`, `.5` → `0.5`, `007` → `7`; the
/// digits the sender wrote are kept (serde_json keeps the literal, so precision survives).
pub fn decimal(raw: &str) -> Option<serde_json::Number> {
    let raw = raw.trim();
    let (negative, unsigned) = match raw.as_bytes().first()? {
        b'-' => (true, &raw[1..]),
        b'+' => (false, &raw[1..]),
        _ => (false, raw),
    };
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int)
        || !frac.is_none_or(digits)
        || (int.is_empty() && frac.is_none_or(str::is_empty))
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let mut text = String::with_capacity(raw.len() + 1);
    if negative {
        text.push('-');
    }
    text.push_str(if int.is_empty() { "0" } else { int });
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        text.push('.');
        text.push_str(f);
    }
    text.parse().ok()
}

/// A CX (PID-3, MRG-1, PV1-19) as a FHIR Identifier, with `ctx.facility` as assigner when
/// CX-4 names no authority. Chinese resident ID numbers (type `NNCHN`, or untyped 18
/// characters with a valid ISO 7064 check digit) get [`RESIDENT_ID_SYSTEM`].
pub fn identifier(cx: &Repetition<'_>, ctx: &Context) -> Option<(Value, Identifier)> {
    let value = cx.component(1).value();
    if value.is_empty() {
        return None;
    }
    let type_code = cx.component(5).value();
    let resident = (type_code == "NNCHN" || type_code.is_empty()) && is_resident_id(&value);
    let (system, assigner) = if resident {
        (RESIDENT_ID_SYSTEM.to_owned(), None)
    } else {
        authority_system(&cx.component(4), ctx)
    };
    let mut out = Map::new();
    if let Some(type_code) = code(&type_code) {
        out.insert(
            "type".into(),
            json!({"coding": [{"system": V2_0203, "code": type_code}]}),
        );
    }
    out.insert("system".into(), json!(system));
    out.insert("value".into(), json!(value));
    if let Some(assigner) = assigner {
        out.insert("assigner".into(), json!({"display": assigner}));
    }
    let id = Identifier {
        system,
        value: value.into_owned(),
    };
    Some((Value::Object(out), id))
}

/// An EI (OBR-3 filler order number, ...) as a FHIR Identifier of type `type_code`.
pub fn entity_identifier(
    ei: &Repetition<'_>,
    type_code: &str,
    ctx: &Context,
) -> Option<(Value, Identifier)> {
    let value = ei.component(1).value();
    if value.is_empty() {
        return None;
    }
    // EI-2..4 have the shape of an HD, one level up.
    let namespace = ei.component(2).value();
    let universal = ei.component(3).value();
    let universal_type = ei.component(4).value();
    let (system, assigner) = hd_system(&namespace, &universal, &universal_type, ctx);
    let id = Identifier {
        system: system.clone(),
        value: value.clone().into_owned(),
    };
    Some((
        json!({
            "type": {"coding": [{"system": V2_0203, "code": type_code}]},
            "system": system,
            "value": value,
            "assigner": {"display": assigner},
        }),
        id,
    ))
}

/// The system and assigner name for an HD assigning authority (CX-4), falling back to the
/// sending facility. An ISO OID becomes `urn:oid:`; a name becomes `urn:phip:id:<name>`.
fn authority_system(hd: &Component<'_>, ctx: &Context) -> (String, Option<String>) {
    let (system, assigner) = hd_system(
        &hd.subcomponent(1),
        &hd.subcomponent(2),
        &hd.subcomponent(3),
        ctx,
    );
    (system, Some(assigner))
}

fn hd_system(
    namespace: &str,
    universal: &str,
    universal_type: &str,
    ctx: &Context,
) -> (String, String) {
    let name = if namespace.is_empty() {
        universal
    } else {
        namespace
    };
    let assigner = if name.is_empty() {
        ctx.facility.as_str()
    } else {
        name
    }
    .to_owned();
    let system =
        if !universal.is_empty() && universal_type.eq_ignore_ascii_case("ISO") && is_oid(universal)
        {
            format!("urn:oid:{universal}")
        } else if universal.contains("://") || universal.starts_with("urn:") {
            universal.to_owned()
        } else {
            Context::system_for(&assigner)
        };
    (system, assigner)
}

fn is_oid(s: &str) -> bool {
    s.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && s.contains('.')
}

/// True for an 18-character resident ID number whose last character is its ISO 7064 MOD
/// 11-2 check digit (GB 11643).
pub fn is_resident_id(value: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let bytes = value.as_bytes();
    if bytes.len() != 18 || !bytes[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = bytes[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    bytes[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// An XPN (PID-5) as a FHIR HumanName. Names written in CJK characters get a `text` with
/// family and given names run together (张伟), as they are written.
pub fn human_name(xpn: &Repetition<'_>) -> Option<Value> {
    let family = xpn.component(1).value();
    let given: Vec<Cow<'_, str>> = [xpn.component(2).value(), xpn.component(3).value()]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    if family.is_empty() && given.is_empty() {
        return None;
    }
    let mut out = Map::new();
    let use_ = match xpn.component(7).value().as_ref() {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" => Some("maiden"),
        "N" => Some("nickname"),
        "A" | "S" => Some("anonymous"),
        "BAD" | "NAV" => Some("old"),
        _ => None,
    };
    if let Some(use_) = use_ {
        out.insert("use".into(), json!(use_));
    }
    if is_cjk(&family) || given.iter().any(|g| is_cjk(g)) {
        let text: String = std::iter::once(family.as_ref())
            .chain(given.iter().map(AsRef::as_ref))
            .collect();
        out.insert("text".into(), json!(text));
    }
    if !family.is_empty() {
        out.insert("family".into(), json!(family));
    }
    if !given.is_empty() {
        out.insert("given".into(), json!(given));
    }
    let suffix: Vec<Cow<'_, str>> = [xpn.component(4).value(), xpn.component(6).value()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if !suffix.is_empty() {
        out.insert("suffix".into(), json!(suffix));
    }
    let prefix = xpn.component(5).value();
    if !prefix.is_empty() {
        out.insert("prefix".into(), json!([prefix]));
    }
    Some(Value::Object(out))
}

fn is_cjk(s: &str) -> bool {
    s.chars().any(|c| matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{20000}'..='\u{2A6DF}'))
}

/// An XAD (PID-11) as a FHIR Address.
pub fn address(xad: &Repetition<'_>) -> Option<Value> {
    let mut out = Map::new();
    let lines: Vec<Cow<'_, str>> = [xad.component(1).value(), xad.component(2).value()]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let (use_, type_) = match xad.component(7).value().as_ref() {
        "H" | "P" => (Some("home"), None),
        "B" | "O" => (Some("work"), None),
        "C" | "TEMP" => (Some("temp"), None),
        "BA" => (Some("billing"), None),
        "M" => (None, Some("postal")),
        "SH" => (None, Some("physical")),
        "BAD" => (Some("old"), None),
        _ => (None, None),
    };
    if let Some(u) = use_ {
        out.insert("use".into(), json!(u));
    }
    if let Some(t) = type_ {
        out.insert("type".into(), json!(t));
    }
    if !lines.is_empty() {
        out.insert("line".into(), json!(lines));
    }
    for (key, n) in [
        ("city", 3),
        ("state", 4),
        ("postalCode", 5),
        ("country", 6),
        ("district", 9),
    ] {
        let v = xad.component(n).value();
        if !v.is_empty() {
            out.insert(key.into(), json!(v));
        }
    }
    (out.len() > use_.iter().len() + type_.iter().len()).then_some(Value::Object(out))
}

/// An XTN (PID-13/14) as a FHIR ContactPoint; `default_use` applies when XTN-2 is empty.
pub fn contact_point(xtn: &Repetition<'_>, default_use: &str) -> Option<Value> {
    let equipment = xtn.component(3).value();
    let email = xtn.component(4).value();
    let value = if !email.is_empty() {
        email.into_owned()
    } else {
        let unformatted = xtn.component(12).value();
        let local = xtn.component(7).value();
        if !unformatted.is_empty() {
            unformatted.into_owned()
        } else if !local.is_empty() {
            let mut v = String::new();
            let country = xtn.component(5).value();
            let area = xtn.component(6).value();
            if !country.is_empty() {
                v.push_str(&format!("+{} ", country.trim_start_matches('+')));
            }
            if !area.is_empty() {
                v.push_str(&format!("({area}) "));
            }
            v.push_str(&local);
            let ext = xtn.component(8).value();
            if !ext.is_empty() {
                v.push_str(&format!(" x{ext}"));
            }
            v
        } else {
            xtn.component(1).value().into_owned()
        }
    };
    if value.trim().is_empty() {
        return None;
    }
    let system = match equipment.as_ref() {
        "Internet" | "X.400" => "email",
        "FX" => "fax",
        "BP" => "pager",
        _ if value.contains('@') => "email",
        _ => "phone",
    };
    let use_ = match (xtn.component(2).value().as_ref(), equipment.as_ref()) {
        (_, "CP") => "mobile",
        ("WPN", _) => "work",
        ("PRS", _) => "mobile",
        ("VHN", _) => "temp",
        ("PRN" | "ORN" | "EMR" | "NET" | "ASN" | "BPN", _) | ("", _) => default_use,
        _ => default_use,
    };
    Some(json!({"system": system, "value": value, "use": use_}))
}

/// A CWE/CE/CNE as a FHIR CodeableConcept: the primary and alternate codings, and the
/// original text (CWE-9). Well-known v2 coding system names map to their FHIR URIs.
pub fn codeable_concept(cwe: &Repetition<'_>) -> Option<Value> {
    let mut codings = Vec::new();
    for base in [0, 3] {
        let code = code(&cwe.component(base + 1).value()).unwrap_or_default();
        let display = cwe.component(base + 2).value();
        let system = cwe.component(base + 3).value();
        let system = system.trim();
        if code.is_empty() && display.is_empty() {
            continue;
        }
        let mut coding = Map::new();
        if !system.is_empty() {
            coding.insert("system".into(), json!(coding_system(system)));
        }
        if !code.is_empty() {
            coding.insert("code".into(), json!(code));
        }
        if !display.is_empty() {
            coding.insert("display".into(), json!(display));
        }
        codings.push(Value::Object(coding));
    }
    let text = cwe.component(9).value();
    if codings.is_empty() && text.is_empty() {
        return None;
    }
    let mut out = Map::new();
    if !codings.is_empty() {
        out.insert("coding".into(), Value::Array(codings));
    }
    if !text.is_empty() {
        out.insert("text".into(), json!(text));
    }
    Some(Value::Object(out))
}

/// A v2 value as a FHIR `code`, which has no leading, trailing or repeated whitespace: padding
/// and escaped line breaks (`\X0A\`, `\.br\`) are not part of a code. `None` when nothing is left.
pub fn code(raw: &str) -> Option<String> {
    let code = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!code.is_empty()).then_some(code)
}

/// The FHIR URI of a v2 coding system name (table 0396).
pub fn coding_system(name: &str) -> String {
    match name {
        "LN" | "LOINC" => "http://loinc.org".into(),
        "SCT" | "SNM" | "SNOMEDCT" => "http://snomed.info/sct".into(),
        "UCUM" => "http://unitsofmeasure.org".into(),
        "I10" | "ICD10" => "http://hl7.org/fhir/sid/icd-10".into(),
        "I9" | "I9C" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "CPT" | "C4" => "http://www.ama-assn.org/go/cpt".into(),
        "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        "NDC" => "http://hl7.org/fhir/sid/ndc".into(),
        "CVX" => "http://hl7.org/fhir/sid/cvx".into(),
        n if n.len() == 7 && n.starts_with("HL7") && n[3..].bytes().all(|b| b.is_ascii_digit()) => {
            format!("http://terminology.hl7.org/CodeSystem/v2-{}", &n[3..])
        }
        n if (n.contains("://") || n.starts_with("urn:")) && !n.contains(char::is_whitespace) => {
            n.into()
        }
        n if is_oid(n) => format!("urn:oid:{n}"),
        n => Context::system_for(n),
    }
}

/// An XCN (attending doctor, ...) as a logical reference: identifier and display name.
pub fn practitioner_reference(xcn: &Repetition<'_>, ctx: &Context) -> Option<Value> {
    let id = xcn.component(1).value();
    let family = xcn.component(2).value();
    let given = xcn.component(3).value();
    if id.is_empty() && family.is_empty() && given.is_empty() {
        return None;
    }
    let mut out = Map::new();
    if !id.is_empty() {
        let authority = xcn.component(9);
        let (system, _) = authority_system(&authority, ctx);
        out.insert("identifier".into(), json!({"system": system, "value": id}));
    }
    let display = [given.as_ref(), family.as_ref()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !display.is_empty() {
        out.insert("display".into(), json!(display));
    }
    Some(Value::Object(out))
}

/// All non-empty repetitions of a field mapped by `f`.
pub fn each<'m>(field: Field<'m>, f: impl Fn(&Repetition<'m>) -> Option<Value>) -> Vec<Value> {
    field.repetitions().filter_map(|r| f(&r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            facility: "协和医院".into(),
            default_offset: "+08:00".into(),
        }
    }

    fn loc() -> Location {
        Location::field("PID", 1, 7)
    }

    #[test]
    fn date_times_get_seconds_and_a_zone() {
        let c = ctx();
        let dt = |s: &str| date_time(s, &c, &loc).unwrap();
        assert_eq!(dt("2024"), Some("2024".into()));
        assert_eq!(dt("202403"), Some("2024-03".into()));
        assert_eq!(dt("20240315"), Some("2024-03-15".into()));
        assert_eq!(dt("202403151230"), Some("2024-03-15T12:30:00+08:00".into()));
        assert_eq!(
            dt("20240315123045.25-0500"),
            Some("2024-03-15T12:30:45.25-05:00".into())
        );
        assert_eq!(
            dt("2024031512+0215"),
            Some("2024-03-15T12:00:00+02:15".into())
        );
        assert_eq!(dt(""), None);
        assert_eq!(
            date("198808181126", &loc).unwrap(),
            Some("1988-08-18".into())
        );
        assert_eq!(instant("20240315", &c, &loc).unwrap(), None);
        for bad in [
            "2024-03-15",
            "20240230",
            "20241301",
            "2024031525",
            "abc",
            "20240315+08",
            "20240315.5",
        ] {
            let err = date_time(bad, &c, &loc).unwrap_err();
            assert_eq!(err.code, ErrorCode::DataTypeError, "{bad}");
            assert_eq!(err.location, Some(loc()));
        }
    }

    #[test]
    fn decimals_are_normalised_to_fhir_lexical_form() {
        let d = |s: &str| decimal(s).map(|n| n.to_string());
        assert_eq!(d("4.06"), Some("4.06".into()));
        assert_eq!(d("+1.50"), Some("1.50".into()));
        assert_eq!(d(".5"), Some("0.5".into()));
        assert_eq!(d("-007"), Some("-7".into()));
        assert_eq!(d("12."), Some("12".into()));
        for bad in ["", "abc", "1.2.3", "1e5", ".", "-", "1,5"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn resident_id_check_digit() {
        assert!(is_resident_id("11010519491231002X"));
        assert!(!is_resident_id("110105194912310021"));
        assert!(is_resident_id("440524188001010014"));
        assert!(!is_resident_id("44052418800101001"));
        assert!(!is_resident_id("4405241880010100AX"));
    }

    #[test]
    fn coding_systems() {
        assert_eq!(coding_system("LN"), "http://loinc.org");
        assert_eq!(
            coding_system("HL70078"),
            "http://terminology.hl7.org/CodeSystem/v2-0078"
        );
        assert_eq!(
            coding_system("2.16.840.1.113883.6.1"),
            "urn:oid:2.16.840.1.113883.6.1"
        );
        assert_eq!(coding_system("Local Lab"), "urn:phip:id:Local%20Lab");
        assert_eq!(coding_system("urn:x y"), "urn:phip:id:urn%3Ax%20y");
    }

    #[test]
    fn blank_padded_codes_are_trimmed_or_left_out() {
        let message = crate::Message::parse_str(
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||1||W^F|||||||||||   ^Married^HL70002\r",
        )
        .unwrap();
        let pid = message.segment("PID").unwrap();
        let concept = codeable_concept(&pid.field(16).repetition(1)).unwrap();
        assert_eq!(
            concept,
            json!({"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0002",
                "display": "Married"
            }]})
        );
    }
}
