//! Value helpers shared by index extraction, query parsing and the storage backends: string
//! normalization, date precision ranges and number precision ranges.
//!
//! Both sides of a comparison (the stored value and the searched value) go through the same
//! helpers so that they agree on normalization and precision.

use chrono::{Datelike, NaiveDate};
use unicode_normalization::UnicodeNormalization;

/// Normalizes a string for default and `:contains` string matching: lowercase, with the
/// diacritics of alphabetic scripts removed (`Müller` → `muller`, `Ångström` → `angstrom`).
///
/// Only the general-purpose combining diacritical blocks are stripped, so that Japanese voiced
/// marks (`が`) and other marks that carry meaning in CJK scripts survive; the result is NFC so
/// that Hangul syllables are not left decomposed.
pub fn normalize_string(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let stripped: String = s.nfd().filter(|c| !is_stripped_mark(*c)).collect();
    stripped.nfc().collect::<String>().to_lowercase()
}

fn is_stripped_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

/// The longest text, in bytes, that a searchable index column holds.
///
/// PostgreSQL refuses B-tree entries above a third of a page (2,704 bytes), and a token's
/// code and system share one entry; a longer value (a long name or description, an identifier
/// of kilobytes) would make the whole write fail. Stored and searched values are both cut to
/// this length ([`index_text`]), so matching compares their first 1,000 bytes: as HAPI FHIR
/// does (at 200 characters), a search on a longer value may also find values that differ only
/// beyond that point. `:exact` compares the full text, which is kept beside the index.
pub const MAX_INDEXED_TEXT_BYTES: usize = 1000;

/// `s` cut to at most [`MAX_INDEXED_TEXT_BYTES`] bytes, at a character boundary.
pub fn index_text(s: &str) -> &str {
    if s.len() <= MAX_INDEXED_TEXT_BYTES {
        return s;
    }
    let mut end = MAX_INDEXED_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses a FHIR date, dateTime or instant (or a search date value) into the inclusive range of
/// epoch milliseconds (UTC) its precision covers.
///
/// Accepted: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh`, `YYYY-MM-DDThh:mm`,
/// `YYYY-MM-DDThh:mm:ss` and `YYYY-MM-DDThh:mm:ss.f…`, with `Z`, `±hh:mm` or no zone after a
/// time (no zone is taken as UTC). `2020` gives the whole year; `…:05` the whole second;
/// `….5` the tenth of a second; three or more fraction digits a single millisecond.
pub fn parse_date_range(s: &str) -> Option<(i64, i64)> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    if b.len() == 4 {
        let start = day_start(year, 1, 1)?;
        let end = day_start(year + 1, 1, 1)? - 1;
        return Some((start, end));
    }
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.len() == 7 {
        let start = day_start(year, month, 1)?;
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        return Some((start, day_start(ny, nm, 1)? - 1));
    }
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    let day_ms = day_start(year, month, day)?;
    if b.len() == 10 {
        return Some((day_ms, day_ms + DAY_MS - 1));
    }
    if b[10] != b'T' && b[10] != b't' {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if hour > 23 {
        return None;
    }
    let mut pos = 13;
    let mut minute = 0;
    let mut second = 0;
    let mut millis = 0;
    // Width of the range the stated precision covers, in ms.
    let mut width = 3_600_000;
    if b.get(pos) == Some(&b':') {
        minute = digits(b, pos + 1, 2)?;
        if minute > 59 {
            return None;
        }
        pos += 3;
        width = 60_000;
        if b.get(pos) == Some(&b':') {
            second = digits(b, pos + 1, 2)?;
            // 60 is a leap second; fold it into the last second of the minute.
            if second > 60 {
                return None;
            }
            second = second.min(59);
            pos += 3;
            width = 1000;
            if b.get(pos) == Some(&b'.') {
                pos += 1;
                let frac_start = pos;
                while pos < b.len() && b[pos].is_ascii_digit() {
                    pos += 1;
                }
                let frac = &s[frac_start..pos];
                if frac.is_empty() {
                    return None;
                }
                let mut ms_digits: String = frac.chars().take(3).collect();
                let precision = ms_digits.len();
                while ms_digits.len() < 3 {
                    ms_digits.push('0');
                }
                millis = ms_digits.parse::<i64>().ok()?;
                width = 10_i64.pow(3 - precision as u32);
            }
        }
    }
    let offset_ms = match &b[pos..] {
        [] => 0,
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] => {
            let oh = digits(b, pos + 1, 2)?;
            expect(b, pos + 3, b':')?;
            let om = digits(b, pos + 4, 2)?;
            if b.len() != pos + 6 || oh > 14 || om > 59 {
                return None;
            }
            let off = (oh * 3600 + om * 60) * 1000;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let start = day_ms + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis - offset_ms;
    Some((start, start + width - 1))
}

const DAY_MS: i64 = 86_400_000;

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let slice = b.get(at..at + n)?;
    if !slice.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v = 0i64;
    for d in slice {
        v = v * 10 + i64::from(d - b'0');
    }
    Some(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Option<()> {
    (b.get(at) == Some(&c)).then_some(())
}

fn day_start(year: i64, month: i64, day: i64) -> Option<i64> {
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month as u32, day as u32)?;
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
    Some(days * DAY_MS)
}

/// `NaiveDate::from_ymd(1970, 1, 1).num_days_from_ce()`.
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Parses a decimal number as written (`100`, `1.50`, `-3`, `1e2`, `2.5E-3`) into
/// `(value, low, high)`: the value and the half-open range `[low, high)` its significant digits
/// imply (`1.5` → `[1.45, 1.55)`, `100` → `[99.5, 100.5)`, `1e2` → `[50, 150)`).
///
/// The bounds are rounded to the decimal they stand for, so that `1.45` parsed here equals the
/// literal `1.45` and equality comparisons in a backend behave.
pub fn parse_number_range(s: &str) -> Option<(f64, f64, f64)> {
    let s = s.trim();
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let unsigned = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, f),
        None => (unsigned, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    // The last significant digit is at 10^(exponent - decimals); the range is half of it.
    let last_digit_pow = exponent.checked_sub(i32::try_from(frac_part.len()).ok()?)?;
    let half = 0.5 * 10f64.powi(last_digit_pow);
    let places = -(last_digit_pow - 1);
    Some((
        value,
        round_to(value - half, places),
        round_to(value + half, places),
    ))
}

/// Rounds to `places` decimal places (negative: to tens, hundreds, …), giving the nearest f64 to
/// the decimal the computation stands for.
fn round_to(x: f64, places: i32) -> f64 {
    if !(-300..=15).contains(&places) {
        return x;
    }
    if places >= 0 {
        let f = 10f64.powi(places);
        (x * f).round() / f
    } else {
        let f = 10f64.powi(-places);
        (x / f).round() * f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn index_text_is_cut_at_a_character_boundary() {
        assert_eq!(index_text("short"), "short");
        let ascii = "a".repeat(MAX_INDEXED_TEXT_BYTES + 5);
        assert_eq!(index_text(&ascii).len(), MAX_INDEXED_TEXT_BYTES);
        // 张 is three bytes: 1,000 is not a multiple of three, so the cut falls before it.
        let chinese = "张".repeat(400);
        let cut = index_text(&chinese);
        assert_eq!(cut.len(), 999);
        assert!(chinese.starts_with(cut));
    }

    #[test]
    fn normalizes_strings() {
        assert_eq!(normalize_string("Müller"), "muller");
        assert_eq!(normalize_string("ÅNGSTRÖM"), "angstrom");
        assert_eq!(normalize_string("Chalmers"), "chalmers");
        assert_eq!(normalize_string("Zoë Saldaña"), "zoe saldana");
        assert_eq!(normalize_string("张伟"), "张伟");
        assert_eq!(normalize_string("がっこう"), "がっこう");
        assert_eq!(normalize_string("한국어"), "한국어");
        assert_eq!(normalize_string("ΆΛΦΑ"), "αλφα");
    }

    #[test]
    fn date_precisions() {
        assert_eq!(
            parse_date_range("2020"),
            Some((ms("2020-01-01T00:00:00Z"), ms("2021-01-01T00:00:00Z") - 1))
        );
        assert_eq!(
            parse_date_range("2020-02"),
            Some((ms("2020-02-01T00:00:00Z"), ms("2020-03-01T00:00:00Z") - 1))
        );
        assert_eq!(
            parse_date_range("2019-12"),
            Some((ms("2019-12-01T00:00:00Z"), ms("2020-01-01T00:00:00Z") - 1))
        );
        assert_eq!(
            parse_date_range("2020-03-04"),
            Some((ms("2020-03-04T00:00:00Z"), ms("2020-03-05T00:00:00Z") - 1))
        );
        let t = ms("2020-03-04T02:00:00Z");
        assert_eq!(
            parse_date_range("2020-03-04T10:00:00+08:00"),
            Some((t, t + 999))
        );
        assert_eq!(
            parse_date_range("2020-03-04T10:00+08:00"),
            Some((t, t + 59_999))
        );
        assert_eq!(parse_date_range("2020-03-04T02:00"), Some((t, t + 59_999)));
        assert_eq!(parse_date_range("2020-03-04T02:00:00Z"), Some((t, t + 999)));
        assert_eq!(
            parse_date_range("2020-03-04T02:00:00.123Z"),
            Some((t + 123, t + 123))
        );
        assert_eq!(
            parse_date_range("2020-03-04T02:00:00.5Z"),
            Some((t + 500, t + 599))
        );
        assert_eq!(
            parse_date_range("2020-03-04T02:00:00.123456-00:00"),
            Some((t + 123, t + 123))
        );
        let t2 = ms("2020-03-04T07:30:00Z");
        assert_eq!(
            parse_date_range("2020-03-04T02:30:00-05:00"),
            Some((t2, t2 + 999))
        );
        assert_eq!(parse_date_range("1969-12-31"), Some((-DAY_MS, -1)));
    }

    #[test]
    fn bad_dates() {
        for bad in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2020-1-01",
            "2020-01-01T25:00",
            "2020-01-01T10:61",
            "2020-01-01X10:00",
            "2020-01-01T10:00:00+0800",
            "2020-01-01T10:00:00.Z",
            "abcd",
            "2020-01-01T10:00:00Zjunk",
            "2020/01/01",
        ] {
            assert_eq!(parse_date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn number_ranges() {
        assert_eq!(parse_number_range("1.5"), Some((1.5, 1.45, 1.55)));
        assert_eq!(parse_number_range("100"), Some((100.0, 99.5, 100.5)));
        assert_eq!(parse_number_range("1.50"), Some((1.5, 1.495, 1.505)));
        assert_eq!(parse_number_range("-3"), Some((-3.0, -3.5, -2.5)));
        assert_eq!(parse_number_range("1e2"), Some((100.0, 50.0, 150.0)));
        assert_eq!(
            parse_number_range("2.5E-3"),
            Some((0.0025, 0.00245, 0.00255))
        );
        assert_eq!(parse_number_range("0.1"), Some((0.1, 0.05, 0.15)));
        assert_eq!(parse_number_range(".5"), Some((0.5, 0.45, 0.55)));
        for bad in ["", "abc", "1.2.3", "1e", "--1", "1,5", "NaN", "inf", "."] {
            assert_eq!(parse_number_range(bad), None, "{bad}");
        }
    }
}
