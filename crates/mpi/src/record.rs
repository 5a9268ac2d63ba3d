//! The record the matcher compares: the identifying parts of a person, folded once.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identifier::{Classification, IdentifierKind, IdentifierRegistry};
use crate::name::PersonName;
use crate::resident_id::{self, ResidentId};
use crate::text::fold;

/// Administrative sex (FHIR `Patient.gender`; `unknown` is treated as missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// Male.
    Male,
    /// Female.
    Female,
    /// Other.
    Other,
}

impl Sex {
    /// From a FHIR gender code or common spellings (`M`/`F`, 男/女); `None` for unknown.
    pub fn parse(s: &str) -> Option<Sex> {
        match s.trim().to_ascii_lowercase().as_str() {
            "male" | "m" | "男" | "1" => Some(Sex::Male),
            "female" | "f" | "女" | "2" => Some(Sex::Female),
            "other" | "o" => Some(Sex::Other),
            _ => None,
        }
    }
}

/// A birth date, possibly partial (`month`/`day` 0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BirthDate {
    /// Year.
    pub year: u16,
    /// Month 1–12, 0 if unknown.
    pub month: u8,
    /// Day 1–31, 0 if unknown.
    pub day: u8,
}

impl BirthDate {
    /// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` (FHIR; a time part is ignored) or `YYYYMMDD`.
    /// Impossible months/days are kept when the digits are there (they still carry evidence
    /// for the digit-level comparison) but a year outside 1000–2999 is rejected.
    pub fn parse(s: &str) -> Option<BirthDate> {
        let s = s.trim();
        let s = s.get(..10.min(s.len())).unwrap_or(s);
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        if digits.len() != s.chars().filter(|c| *c != '-').count() {
            return None;
        }
        let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<u16>().ok());
        let year = num(0..4)?;
        if !(1000..3000).contains(&year) {
            return None;
        }
        let (month, day) = match digits.len() {
            4 => (0, 0),
            6 => (num(4..6)?, 0),
            8 => (num(4..6)?, num(6..8)?),
            _ => return None,
        };
        Some(BirthDate {
            year,
            month: u8::try_from(month).ok()?,
            day: u8::try_from(day).ok()?,
        })
    }

    /// Whether month and day are known.
    pub fn is_full(&self) -> bool {
        self.month != 0 && self.day != 0
    }

    /// `YYYYMMDD` digits (zeros for unknown parts).
    pub fn digits(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        let s = format!("{:04}{:02}{:02}", self.year, self.month, self.day);
        out.copy_from_slice(&s.as_bytes()[..8]);
        out
    }

    /// Whether two dates can be the same day (equal on every part both know).
    pub fn compatible(&self, other: &BirthDate) -> bool {
        self.year == other.year
            && (self.month == 0 || other.month == 0 || self.month == other.month)
            && (self.day == 0 || other.day == 0 || self.day == other.day)
    }
}

/// An identifier with its registry classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordIdentifier {
    /// System URI.
    pub system: String,
    /// Value, normalised: trimmed, spaces and dashes removed, upper case; 15-digit resident IDs
    /// upgraded to 18.
    pub value: String,
    /// Classification from the registry at construction time.
    pub class: Classification,
    /// For resident IDs: whether the value is a valid ID (check character, date, area).
    pub valid: bool,
}

/// The address parts the matcher compares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressParts {
    /// GB/T 2260 division code, most specific known (county, else prefecture, else province).
    pub division: Option<String>,
    /// Postal code, digits/letters only.
    pub postcode: String,
    /// Folded city / district / suburb text.
    pub locality: String,
    /// Folded street lines (house number included).
    pub street: String,
}

/// A person's identifying data in the form the comparators use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// Names (each script/variant one entry).
    pub names: Vec<PersonName>,
    /// Birth date.
    pub birth_date: Option<BirthDate>,
    /// Sex.
    pub sex: Option<Sex>,
    /// Phone numbers, normalised by [`normalize_phone`].
    pub phones: Vec<String>,
    /// Identifiers.
    pub identifiers: Vec<RecordIdentifier>,
    /// Addresses.
    pub addresses: Vec<AddressParts>,
}

/// Flat fields for building a [`MatchRecord`] from a table row (FEBRL CSV, an import file).
#[derive(Debug, Clone, Default)]
pub struct RecordParts<'a> {
    /// Family name.
    pub family: Option<&'a str>,
    /// Given name(s).
    pub given: Option<&'a str>,
    /// Birth date (`YYYYMMDD` or `YYYY-MM-DD`).
    pub birth_date: Option<&'a str>,
    /// Sex.
    pub sex: Option<&'a str>,
    /// Phone.
    pub phone: Option<&'a str>,
    /// Identifiers as (system, value).
    pub identifiers: Vec<(&'a str, &'a str)>,
    /// Street lines (house number and street).
    pub street: Vec<&'a str>,
    /// City / suburb / district text.
    pub locality: Option<&'a str>,
    /// Postal code.
    pub postcode: Option<&'a str>,
    /// GB/T 2260 division code.
    pub division: Option<&'a str>,
}

/// Normalises a phone number to digits: drops `+`, spaces, dashes and parentheses, and the
/// China country code `86`/`0086` in front of an 11-digit mobile or a 0-less landline.
/// Returns `None` when fewer than 7 digits remain.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let digits: String = raw
        .split([';', ',', '#', 'x'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let mut d = digits.as_str();
    if let Some(rest) = d.strip_prefix("0086") {
        d = rest;
    } else if d.len() >= 12 && d.starts_with("86") {
        d = &d[2..];
    }
    (d.len() >= 7).then(|| d.to_string())
}

impl MatchRecord {
    /// From a FHIR R4 Patient resource, with the default identifier registry.
    pub fn from_patient(patient: &Value) -> MatchRecord {
        Self::from_patient_with(patient, &IdentifierRegistry::default())
    }

    /// From a FHIR R4 Patient resource. Reads:
    /// - `name[]`: `family` + `given` when present, plus `text` (Chinese and/or Latin);
    /// - `birthDate`, `gender`;
    /// - `telecom[]` with `system` `phone` or `sms` (or no system);
    /// - `identifier[]` (`system` + `value`), classified with `registry`;
    /// - `address[]`: `line`, `city`/`district` text, `postalCode`, and the GB/T 2260 code from
    ///   the first of `district`, `city`, `state` that is a six-digit division code (Chinese
    ///   deployments put the code there), else from an extension valued with one. The area code
    ///   of a resident ID is *not* used as an address: it is where the ID was issued, often
    ///   decades ago.
    pub fn from_patient_with(patient: &Value, registry: &IdentifierRegistry) -> MatchRecord {
        let mut record = MatchRecord::default();
        for name in array(patient, "name").take(6) {
            let family = name.get("family").and_then(Value::as_str).unwrap_or("");
            let given: Vec<&str> = array(name, "given").filter_map(Value::as_str).collect();
            if !family.is_empty() || !given.is_empty() {
                record.push_name(PersonName::from_parts(family, &given));
            }
            if let Some(text) = name.get("text").and_then(Value::as_str) {
                for n in PersonName::from_text(text) {
                    record.push_name(n);
                }
            }
        }
        record.birth_date = patient
            .get("birthDate")
            .and_then(Value::as_str)
            .and_then(BirthDate::parse);
        record.sex = patient
            .get("gender")
            .and_then(Value::as_str)
            .and_then(Sex::parse);
        for t in array(patient, "telecom") {
            let system = t.get("system").and_then(Value::as_str).unwrap_or("phone");
            if system == "phone" || system == "sms" {
                if let Some(p) = t.get("value").and_then(Value::as_str) {
                    record.push_phone(p);
                }
            }
        }
        for id in array(patient, "identifier") {
            if let (Some(system), Some(value)) = (
                id.get("system").and_then(Value::as_str),
                id.get("value").and_then(Value::as_str),
            ) {
                record.push_identifier(registry, system, value);
            }
        }
        for a in array(patient, "address").take(4) {
            let text = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("");
            let division = ["district", "city", "state"]
                .into_iter()
                .map(text)
                .find(|c| phip_security::division::is_valid_code(c))
                .map(str::to_string)
                .or_else(|| {
                    array(a, "extension")
                        .filter_map(|e| {
                            ["valueCode", "valueString"]
                                .into_iter()
                                .find_map(|k| e.get(k).and_then(Value::as_str))
                        })
                        .find(|c| phip_security::division::is_valid_code(c))
                        .map(str::to_string)
                });
            let locality_text: Vec<&str> = ["city", "district"]
                .into_iter()
                .map(text)
                .filter(|t| !t.is_empty() && !phip_security::division::is_valid_code(t))
                .collect();
            let lines: Vec<&str> = array(a, "line").filter_map(Value::as_str).collect();
            record.push_address(AddressParts {
                division,
                postcode: postcode(text("postalCode")),
                locality: fold(&locality_text.join(" ")),
                street: fold(&lines.join(" ")),
            });
        }
        record
    }

    /// From flat fields (a FEBRL row, an import file), with the default registry.
    pub fn from_parts(parts: &RecordParts<'_>) -> MatchRecord {
        Self::from_parts_with(parts, &IdentifierRegistry::default())
    }

    /// From flat fields, classifying identifiers with `registry`.
    pub fn from_parts_with(parts: &RecordParts<'_>, registry: &IdentifierRegistry) -> MatchRecord {
        let mut record = MatchRecord::default();
        let family = parts.family.unwrap_or("");
        let given: Vec<&str> = parts.given.into_iter().collect();
        record.push_name(PersonName::from_parts(family, &given));
        record.birth_date = parts.birth_date.and_then(BirthDate::parse);
        record.sex = parts.sex.and_then(Sex::parse);
        if let Some(p) = parts.phone {
            record.push_phone(p);
        }
        for (system, value) in &parts.identifiers {
            record.push_identifier(registry, system, value);
        }
        record.push_address(AddressParts {
            division: parts
                .division
                .filter(|c| phip_security::division::is_valid_code(c))
                .map(str::to_string),
            postcode: postcode(parts.postcode.unwrap_or("")),
            locality: fold(parts.locality.unwrap_or("")),
            street: fold(&parts.street.join(" ")),
        });
        record
    }

    fn push_name(&mut self, name: PersonName) {
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    fn push_phone(&mut self, raw: &str) {
        if let Some(p) = normalize_phone(raw) {
            if !self.phones.contains(&p) {
                self.phones.push(p);
            }
        }
    }

    fn push_address(&mut self, a: AddressParts) {
        let empty = a.division.is_none()
            && a.postcode.is_empty()
            && a.locality.is_empty()
            && a.street.is_empty();
        if !empty {
            self.addresses.push(a);
        }
    }

    fn push_identifier(&mut self, registry: &IdentifierRegistry, system: &str, value: &str) {
        let class = registry.classify(system);
        let mut value: String = value
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .flat_map(char::to_uppercase)
            .collect();
        if value.is_empty() {
            return;
        }
        let mut valid = true;
        if class.kind == IdentifierKind::ResidentId {
            match resident_id::parse_any(&value) {
                Ok(id) => value = id.number,
                Err(_) => valid = false,
            }
        }
        let id = RecordIdentifier {
            system: system.to_string(),
            value,
            class,
            valid,
        };
        if !self.identifiers.contains(&id) {
            self.identifiers.push(id);
        }
    }

    /// The record's valid resident IDs, parsed.
    pub fn resident_ids(&self) -> impl Iterator<Item = ResidentId> + '_ {
        self.identifiers
            .iter()
            .filter(|i| i.class.kind == IdentifierKind::ResidentId && i.valid)
            .filter_map(|i| resident_id::parse(&i.value).ok())
    }

    /// Disagreements between the record's resident IDs and its own birth date and sex (a
    /// data-quality flag for the review queue).
    pub fn resident_id_mismatches(&self) -> Vec<resident_id::IdMismatch> {
        let birth = self.birth_date.map(|b| match (b.month, b.day) {
            (0, _) => format!("{:04}", b.year),
            (m, 0) => format!("{:04}-{m:02}", b.year),
            (m, d) => format!("{:04}-{m:02}-{d:02}", b.year),
        });
        self.resident_ids()
            .flat_map(|id| resident_id::cross_check(&id, birth.as_deref(), self.sex))
            .collect()
    }
}

fn postcode(raw: &str) -> String {
    raw.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}
