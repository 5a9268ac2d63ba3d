//! The 18-digit resident identity number (公民身份号码, GB 11643-1999).
//!
//! Layout: `AAAAAA YYYYMMDD SSS C` — the GB/T 2260 code of the area where the number was
//! issued, the holder's birth date, a sequence number whose parity is the holder's sex (odd =
//! male, even = female) and an ISO 7064 MOD 11-2 check character (`0`–`9` or `X`). Numbers
//! issued before 1999 have 15 digits (`AAAAAA YYMMDD SSS`, no check character, 20th-century
//! birth years); [`upgrade_15`] turns them into the 18-digit form.

use chrono::{Datelike as _, NaiveDate};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::record::Sex;

/// ISO 7064 MOD 11-2 weights of the first 17 positions (2^(17-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character for each value of the weighted sum mod 11.
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why a string is not a valid resident identity number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResidentIdError {
    /// Not 18 (or, for [`upgrade_15`], 15) characters long.
    #[error("a resident ID has {expected} characters, found {found}")]
    Length {
        /// Required length.
        expected: usize,
        /// Length found (in characters, after trimming).
        found: usize,
    },
    /// A character that is not allowed at its position (digits everywhere, `X` only last).
    #[error("character {found:?} at position {position} is not allowed in a resident ID")]
    Charset {
        /// Zero-based character position.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// The first six digits are not shaped like a GB/T 2260 division code.
    #[error("area code {0} is not a GB/T 2260 division code")]
    AreaCode(String),
    /// The encoded birth date is not a calendar date, is before 1850 or in the future.
    #[error("encoded birth date {0} is not a possible birth date")]
    BirthDate(String),
    /// The check character does not match the first 17 digits.
    #[error("check character is {found}, expected {expected}")]
    CheckDigit {
        /// Check character computed from the first 17 digits.
        expected: char,
        /// Check character found.
        found: char,
    },
}

/// A validated 18-character resident identity number and what it encodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentId {
    /// The number in canonical form (uppercase `X`).
    pub number: String,
    /// GB/T 2260 code of the issuing area (first six digits).
    pub area_code: String,
    /// Encoded birth date.
    pub birth_date: NaiveDate,
    /// Sex encoded by the parity of the sequence number.
    pub sex: Sex,
}

/// One disagreement between a resident ID and the record that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMismatch {
    /// The record's birth date differs from the encoded one.
    BirthDate {
        /// Encoded in the ID.
        encoded: NaiveDate,
        /// On the record (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`).
        recorded: String,
    },
    /// The record's sex differs from the encoded one.
    Sex {
        /// Encoded in the ID.
        encoded: Sex,
        /// On the record.
        recorded: Sex,
    },
}

/// The MOD 11-2 check character of the first 17 digits. `None` if `first17` is not 17 ASCII
/// digits.
pub fn check_char(first17: &str) -> Option<char> {
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(CHECK[(sum % 11) as usize])
}

/// Validates and parses an 18-character resident ID (surrounding whitespace ignored, `x`
/// accepted for `X`). Errors are reported in layout order: length, characters, area code,
/// birth date, check character.
pub fn parse(input: &str) -> Result<ResidentId, ResidentIdError> {
    let s = input.trim();
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 18 {
        return Err(ResidentIdError::Length {
            expected: 18,
            found: chars.len(),
        });
    }
    for (position, &c) in chars.iter().enumerate() {
        let ok = c.is_ascii_digit() || (position == 17 && (c == 'X' || c == 'x'));
        if !ok {
            return Err(ResidentIdError::Charset { position, found: c });
        }
    }
    let number = s.to_ascii_uppercase();
    let area_code = &number[..6];
    if !phip_security::division::is_valid_code(area_code) {
        return Err(ResidentIdError::AreaCode(area_code.to_string()));
    }
    let birth_date = birth_date(&number[6..14])?;
    let expected = check_char(&number[..17]).unwrap_or('?');
    let found = chars[17].to_ascii_uppercase();
    if expected != found {
        return Err(ResidentIdError::CheckDigit { expected, found });
    }
    let sequence_last = u32::from(number.as_bytes()[16] - b'0');
    Ok(ResidentId {
        area_code: area_code.to_string(),
        birth_date,
        sex: if sequence_last % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        },
        number,
    })
}

/// Whether `input` is a valid 18-character resident ID.
pub fn is_valid(input: &str) -> bool {
    parse(input).is_ok()
}

/// Upgrades a 15-digit legacy ID to 18 characters: inserts the century `19` before the
/// two-digit birth year and appends the check character. The result is validated.
pub fn upgrade_15(input: &str) -> Result<ResidentId, ResidentIdError> {
    let s = input.trim();
    let count = s.chars().count();
    if count != 15 {
        return Err(ResidentIdError::Length {
            expected: 15,
            found: count,
        });
    }
    if let Some((position, found)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(ResidentIdError::Charset { position, found });
    }
    let first17 = format!("{}19{}", &s[..6], &s[6..]);
    let check = check_char(&first17).unwrap_or('?');
    parse(&format!("{first17}{check}"))
}

/// Parses an 18- or 15-character ID, upgrading the latter.
pub fn parse_any(input: &str) -> Result<ResidentId, ResidentIdError> {
    if input.trim().chars().count() == 15 {
        upgrade_15(input)
    } else {
        parse(input)
    }
}

fn birth_date(digits: &str) -> Result<NaiveDate, ResidentIdError> {
    let bad = || ResidentIdError::BirthDate(digits.to_string());
    let date = NaiveDate::parse_from_str(digits, "%Y%m%d").map_err(|_| bad())?;
    let today = chrono::Local::now().date_naive();
    if date.year() < 1850 || date > today {
        return Err(bad());
    }
    Ok(date)
}

/// Compares what `id` encodes with a record's `birth_date` (FHIR date: `YYYY`, `YYYY-MM` or
/// `YYYY-MM-DD`; partial dates are compared on the parts they have) and `sex`. Returns every
/// disagreement; missing values disagree with nothing.
pub fn cross_check(id: &ResidentId, birth_date: Option<&str>, sex: Option<Sex>) -> Vec<IdMismatch> {
    let mut out = Vec::new();
    if let Some(recorded) = birth_date {
        let encoded = id.birth_date.format("%Y-%m-%d").to_string();
        let recorded_trim = recorded.trim();
        let prefix = recorded_trim
            .get(..recorded_trim.len().min(10))
            .unwrap_or("");
        if prefix.len() >= 4 && !encoded.starts_with(prefix) {
            out.push(IdMismatch::BirthDate {
                encoded: id.birth_date,
                recorded: recorded_trim.to_string(),
            });
        }
    }
    if let Some(recorded) = sex {
        if matches!(recorded, Sex::Male | Sex::Female) && recorded != id.sex {
            out.push(IdMismatch::Sex {
                encoded: id.sex,
                recorded,
            });
        }
    }
    out
}
