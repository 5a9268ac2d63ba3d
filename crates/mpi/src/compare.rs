//! Comparators: each turns a pair of values into a discrete comparison level (0 = best), the
//! input of the Fellegi–Sunter model, and [`compare`] builds the whole comparison vector.

use serde::{Deserialize, Serialize};

use crate::name::{NamePart, PersonName};
use crate::record::{AddressParts, BirthDate, MatchRecord, Sex};

/// Number of compared fields.
pub const FIELD_COUNT: usize = 10;
/// Level value of a field that is missing on either side (contributes no weight).
pub const MISSING: u8 = u8::MAX;

/// A comparison vector: one level per [`Field`], [`MISSING`] where either side lacks it.
pub type Vector = [u8; FIELD_COUNT];

/// The compared fields, in vector order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    /// Family name.
    FamilyName,
    /// Given name.
    GivenName,
    /// Birth date.
    BirthDate,
    /// Sex.
    Sex,
    /// Phone.
    Phone,
    /// Identifiers of a shared system.
    Identifier,
    /// GB/T 2260 division of the address.
    Division,
    /// Postal code.
    Postcode,
    /// City / district / suburb.
    Locality,
    /// Street line.
    Street,
}

impl Field {
    /// All fields in vector order.
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::FamilyName,
        Field::GivenName,
        Field::BirthDate,
        Field::Sex,
        Field::Phone,
        Field::Identifier,
        Field::Division,
        Field::Postcode,
        Field::Locality,
        Field::Street,
    ];

    /// Labels of the field's levels, best first; the last is "different".
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::FamilyName | Field::GivenName => NAME_LEVELS,
            Field::BirthDate => &[
                "exact",
                "day/month transposed",
                "one digit off",
                "same year",
                "different",
            ],
            Field::Sex => &["same", "different"],
            Field::Phone => &["exact", "last 8 digits", "different"],
            Field::Identifier | Field::Postcode => &["exact", "one edit", "different"],
            Field::Division => &[
                "same county",
                "same prefecture",
                "same province",
                "different",
            ],
            Field::Locality => &["exact", "similar", "different"],
            Field::Street => &["exact", "similar", "fuzzy", "different"],
        }
    }

    /// Label of `level` (`"missing"` for [`MISSING`]).
    pub fn level_label(self, level: u8) -> &'static str {
        self.levels()
            .get(usize::from(level))
            .copied()
            .unwrap_or("missing")
    }
}

const NAME_LEVELS: &[&str] = &[
    "exact",
    "homophone",
    "one edit",
    "similar (JW ≥ 0.9)",
    "fuzzy (JW ≥ 0.8)",
    "different",
];

/// Name level: same characters, or same Latin spelling when either side has no characters.
pub const NAME_EXACT: u8 = 0;
/// Name level: different Chinese characters read the same (张伟 / 张玮).
pub const NAME_HOMOPHONE: u8 = 1;
/// Name level: one insertion, deletion, substitution or adjacent transposition apart.
pub const NAME_ONE_EDIT: u8 = 2;
/// Name level: Jaro–Winkler ≥ 0.9.
pub const NAME_SIMILAR: u8 = 3;
/// Name level: Jaro–Winkler ≥ 0.8.
pub const NAME_FUZZY: u8 = 4;
/// Name level: different.
pub const NAME_DIFFERENT: u8 = 5;

/// Compares one name part. `None` when either is empty.
pub fn compare_name_part(a: &NamePart, b: &NamePart) -> Option<u8> {
    if a.latin.is_empty() || b.latin.is_empty() {
        return None;
    }
    if !a.han.is_empty() && !b.han.is_empty() {
        if a.han == b.han {
            return Some(NAME_EXACT);
        }
        if a.latin == b.latin {
            return Some(NAME_HOMOPHONE);
        }
    } else if a.latin == b.latin {
        return Some(NAME_EXACT);
    }
    Some(fuzzy_level(&a.latin, &b.latin))
}

fn fuzzy_level(a: &str, b: &str) -> u8 {
    if strsim::osa_distance(a, b) <= 1 {
        return NAME_ONE_EDIT;
    }
    let jw = strsim::jaro_winkler(a, b);
    if jw >= 0.9 {
        NAME_SIMILAR
    } else if jw >= 0.8 {
        NAME_FUZZY
    } else {
        NAME_DIFFERENT
    }
}

/// Compares two names as (family, given) and, when better, crossed (family ↔ given), so that
/// `Wei Zhang` read given-first matches `Zhang Wei` and FEBRL's swapped name fields match.
/// Returns (family level, given level).
pub fn compare_names(a: &PersonName, b: &PersonName) -> (Option<u8>, Option<u8>) {
    let straight = (
        compare_name_part(&a.family, &b.family),
        compare_name_part(&a.given, &b.given),
    );
    if straight == (Some(NAME_EXACT), Some(NAME_EXACT)) {
        return straight;
    }
    let crossed = (
        compare_name_part(&a.family, &b.given),
        compare_name_part(&a.given, &b.family),
    );
    if name_cost(crossed) < name_cost(straight) {
        crossed
    } else {
        straight
    }
}

fn name_cost((f, g): (Option<u8>, Option<u8>)) -> u8 {
    f.unwrap_or(NAME_DIFFERENT) + g.unwrap_or(NAME_DIFFERENT)
}

/// A similarity in \[0, 1\] of two names (1 = same), for display and ranking outside the
/// model: the mean Jaro–Winkler of the parts in the better arrangement, counting homophones
/// as 0.95.
pub fn name_similarity(a: &PersonName, b: &PersonName) -> f64 {
    let part = |x: &NamePart, y: &NamePart| -> f64 {
        match compare_name_part(x, y) {
            Some(NAME_EXACT) => 1.0,
            Some(NAME_HOMOPHONE) => 0.95,
            Some(_) => strsim::jaro_winkler(&x.latin, &y.latin),
            None => 0.0,
        }
    };
    let straight = part(&a.family, &b.family) + part(&a.given, &b.given);
    let crossed = part(&a.family, &b.given) + part(&a.given, &b.family);
    straight.max(crossed) / 2.0
}

/// Birth date levels: 0 exact, 1 day and month transposed, 2 one digit off (one substitution
/// or adjacent transposition in `YYYYMMDD`), 3 same year, 4 different. Partial dates reach at
/// best "same year".
pub fn compare_birth_date(a: &BirthDate, b: &BirthDate) -> u8 {
    if a.is_full() && b.is_full() {
        if a == b {
            return 0;
        }
        if a.year == b.year && a.month == b.day && a.day == b.month {
            return 1;
        }
        let (da, db) = (a.digits(), b.digits());
        let diffs: Vec<usize> = (0..8).filter(|&i| da[i] != db[i]).collect();
        let one_digit = diffs.len() == 1
            || (diffs.len() == 2
                && diffs[1] == diffs[0] + 1
                && da[diffs[0]] == db[diffs[1]]
                && da[diffs[1]] == db[diffs[0]]);
        if one_digit {
            return 2;
        }
    }
    if a.year == b.year {
        return 3;
    }
    4
}

/// Sex levels: 0 same, 1 different.
pub fn compare_sex(a: Sex, b: Sex) -> u8 {
    u8::from(a != b)
}

/// Phone levels over normalised numbers: 0 exact, 1 same last 8 digits, 2 different.
pub fn compare_phone(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if a.len() >= 8 && b.len() >= 8 && a[a.len() - 8..] == b[b.len() - 8..] {
        1
    } else {
        2
    }
}

/// Levels of short codes (identifiers, postcodes): 0 exact, 1 one edit apart, 2 different.
pub fn compare_code(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if strsim::osa_distance(a, b) <= 1 {
        1
    } else {
        2
    }
}

/// Division levels of two GB/T 2260 codes: 0 same county, 1 same prefecture, 2 same province,
/// 3 different. A coarser code compares at its own level (`440300` vs `440305`: same
/// prefecture).
pub fn compare_division(a: &str, b: &str) -> u8 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != 6 || b.len() != 6 || a[..2] != b[..2] {
        return 3;
    }
    if a[2..4] != b[2..4] || &a[2..4] == b"00" {
        return 2;
    }
    if a[4..] != b[4..] || &a[4..] == b"00" {
        return 1;
    }
    0
}

/// Locality levels: 0 exact, 1 Jaro–Winkler ≥ 0.9, 2 different.
pub fn compare_locality(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if strsim::jaro_winkler(a, b) >= 0.9 {
        1
    } else {
        2
    }
}

/// Street levels: 0 exact, 1 Jaro–Winkler ≥ 0.9, 2 ≥ 0.75, 3 different.
pub fn compare_street(a: &str, b: &str) -> u8 {
    if a == b {
        return 0;
    }
    let jw = strsim::jaro_winkler(a, b);
    if jw >= 0.9 {
        1
    } else if jw >= 0.75 {
        2
    } else {
        3
    }
}

/// Best (lowest) level over all pairs of non-empty values, [`MISSING`] if there is none.
fn best<T, F>(a: &[T], b: &[T], present: impl Fn(&T) -> bool, f: F) -> u8
where
    F: Fn(&T, &T) -> u8,
{
    let mut level = MISSING;
    for x in a.iter().filter(|x| present(x)) {
        for y in b.iter().filter(|y| present(y)) {
            level = level.min(f(x, y));
            if level == 0 {
                return 0;
            }
        }
    }
    level
}

/// The comparison vector of two records.
pub fn compare(a: &MatchRecord, b: &MatchRecord) -> Vector {
    let mut v = [MISSING; FIELD_COUNT];
    let mut best_cost = u8::MAX;
    for x in &a.names {
        for y in &b.names {
            let (f, g) = compare_names(x, y);
            let cost = name_cost((f, g));
            if cost < best_cost {
                best_cost = cost;
                v[0] = f.unwrap_or(MISSING);
                v[1] = g.unwrap_or(MISSING);
            }
        }
    }
    if let (Some(x), Some(y)) = (&a.birth_date, &b.birth_date) {
        v[2] = compare_birth_date(x, y);
    }
    if let (Some(x), Some(y)) = (a.sex, b.sex) {
        v[3] = compare_sex(x, y);
    }
    v[4] = best(&a.phones, &b.phones, |_| true, |x, y| compare_phone(x, y));
    let mut id_level = MISSING;
    for x in &a.identifiers {
        for y in b.identifiers.iter().filter(|y| y.system == x.system) {
            id_level = id_level.min(compare_code(&x.value, &y.value));
        }
    }
    v[5] = id_level;
    let (aa, ba) = (&a.addresses, &b.addresses);
    v[6] = best(
        aa,
        ba,
        |x: &AddressParts| x.division.is_some(),
        |x, y| {
            compare_division(
                x.division.as_deref().unwrap_or(""),
                y.division.as_deref().unwrap_or(""),
            )
        },
    );
    v[7] = best(
        aa,
        ba,
        |x| !x.postcode.is_empty(),
        |x, y| compare_code(&x.postcode, &y.postcode),
    );
    v[8] = best(
        aa,
        ba,
        |x| !x.locality.is_empty(),
        |x, y| compare_locality(&x.locality, &y.locality),
    );
    v[9] = best(
        aa,
        ba,
        |x| !x.street.is_empty(),
        |x, y| compare_street(&x.street, &y.street),
    );
    v
}
