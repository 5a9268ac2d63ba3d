//! Dates, date-times and times: parsing, precision-aware comparison, arithmetic and the clock.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// A parsed date/time value. `parts` are year, month, day, hour, minute, millisecond-of-minute;
/// `precision` is how many of them were given (times start at hour, so a time `12:30` has
/// precision 5). Seconds and their fraction form one precision level, as FHIRPath specifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Temporal {
    pub kind: TemporalKind,
    pub parts: [i64; 6],
    pub precision: usize,
    /// Offset from UTC in minutes.
    pub tz: Option<i64>,
}

const HOUR: usize = 3;

impl Temporal {
    /// Parses FHIR JSON text: `2020`, `2020-01`, `2020-01-02`, `2020-01-02T10:00:00.5+02:00`,
    /// or a time `10:00:00`.
    pub fn parse(s: &str) -> Option<Temporal> {
        if s.len() >= 3 && s.as_bytes()[2] == b':' {
            return Self::parse_time(s);
        }
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let mut parts = [0i64; 6];
        let mut precision = 0;
        for (i, field) in date.split('-').enumerate() {
            let width = if i == 0 { 4 } else { 2 };
            if i > 2 {
                return None;
            }
            parts[i] = fixed_digits(field, width)?;
            precision = i + 1;
        }
        if precision >= 2 && !(1..=12).contains(&parts[1]) {
            return None;
        }
        if precision >= 3 && (parts[2] < 1 || parts[2] > days_in_month(parts[0], parts[1])) {
            return None;
        }
        let mut t = Temporal {
            kind: TemporalKind::Date,
            parts,
            precision,
            tz: None,
        };
        if let Some(time) = time {
            if precision != 3 {
                return None;
            }
            t.kind = TemporalKind::DateTime;
            if !time.is_empty() {
                let (clock, tz) = split_tz(time)?;
                t.tz = tz;
                t.precision = parse_clock(clock, &mut t.parts)?;
            }
        }
        Some(t)
    }

    /// Parses the text of a FHIRPath literal after `@` (`2020-01-01`, `2020-01-01T`, `T10:00`).
    pub fn parse_literal(s: &str) -> Option<Temporal> {
        if let Some(time) = s.strip_prefix('T') {
            return Self::parse_time(time);
        }
        let mut t = Self::parse(s.strip_suffix('T').unwrap_or(s))?;
        if s.ends_with('T') {
            t.kind = TemporalKind::DateTime;
        }
        Some(t)
    }

    fn parse_time(s: &str) -> Option<Temporal> {
        let mut parts = [0i64; 6];
        let precision = parse_clock(s, &mut parts)?;
        Some(Temporal {
            kind: TemporalKind::Time,
            parts,
            precision,
            tz: None,
        })
    }

    /// Compares two values; `None` when the answer depends on the missing precision (e.g.
    /// `2020` vs `2020-05`) or the kinds are incompatible.
    pub fn compare(&self, other: &Temporal) -> Option<Ordering> {
        if (self.kind == TemporalKind::Time) != (other.kind == TemporalKind::Time) {
            return None;
        }
        let (a, b) = match (self.tz, other.tz) {
            (Some(x), Some(y)) if x != y => (self.to_utc(), other.to_utc()),
            _ => (*self, *other),
        };
        let common = a.precision.min(b.precision);
        let start = if a.kind == TemporalKind::Time {
            HOUR
        } else {
            0
        };
        for i in start..common {
            match a.parts[i].cmp(&b.parts[i]) {
                Ordering::Equal => {}
                other => return Some(other),
            }
        }
        if a.precision == b.precision {
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Shifts a value with a time of day to UTC; others are returned unchanged.
    fn to_utc(self) -> Temporal {
        let Some(tz) = self.tz else { return self };
        if self.precision <= HOUR || self.kind != TemporalKind::DateTime {
            return self;
        }
        let mut t = self;
        let minutes = days_from_civil(t.parts[0], t.parts[1], t.parts[2]) * 1440
            + t.parts[3] * 60
            + t.parts[4]
            - tz;
        let (days, minute_of_day) = (minutes.div_euclid(1440), minutes.rem_euclid(1440));
        let (y, m, d) = civil_from_days(days);
        t.parts[..5].copy_from_slice(&[y, m, d, minute_of_day / 60, minute_of_day % 60]);
        t.tz = Some(0);
        t
    }

    /// Adds `amount` of a calendar `unit` (`year(s)`, `month(s)`, `week(s)`, `day(s)`, `hour(s)`,
    /// `minute(s)`, `second(s)`, `millisecond(s)`, or the UCUM codes `a mo wk d h min s ms`).
    pub fn add(&self, amount: i64, unit: &str) -> Option<Temporal> {
        let unit = unit.trim_end_matches('s');
        let mut t = *self;
        match unit {
            "year" | "a" => t.parts[0] = t.parts[0].checked_add(amount)?,
            "month" | "mo" => {
                let months = t.parts[0] * 12 + (t.parts[1] - 1) + amount;
                t.parts[0] = months.div_euclid(12);
                t.parts[1] = months.rem_euclid(12) + 1;
            }
            "week" | "wk" | "day" | "d" => {
                let days = if unit.starts_with('w') {
                    amount.checked_mul(7)?
                } else {
                    amount
                };
                if t.kind == TemporalKind::Time || t.precision < 3 {
                    return None;
                }
                let (y, m, d) =
                    civil_from_days(days_from_civil(t.parts[0], t.parts[1], t.parts[2]) + days);
                t.parts[..3].copy_from_slice(&[y, m, d]);
                return Some(t);
            }
            "hour" | "h" | "minute" | "min" | "second" | "" | "millisecond" | "m" => {
                let ms_per = match unit {
                    "hour" | "h" => 3_600_000,
                    "minute" | "min" => 60_000,
                    "second" | "" => 1000,
                    _ => 1,
                };
                return t.add_millis(amount.checked_mul(ms_per)?);
            }
            _ => return None,
        }
        if t.precision >= 3 {
            t.parts[2] = t.parts[2].min(days_in_month(t.parts[0], t.parts[1]));
        }
        if !(1..=9999).contains(&t.parts[0]) {
            return None;
        }
        Some(t)
    }

    fn add_millis(mut self, ms: i64) -> Option<Temporal> {
        if self.kind == TemporalKind::Date {
            return None;
        }
        let day_ms = 86_400_000;
        let time_ms = self.parts[3] * 3_600_000 + self.parts[4] * 60_000 + self.parts[5];
        let total = time_ms.checked_add(ms)?;
        let (carry_days, in_day) = (total.div_euclid(day_ms), total.rem_euclid(day_ms));
        self.parts[3] = in_day / 3_600_000;
        self.parts[4] = in_day / 60_000 % 60;
        self.parts[5] = in_day % 60_000;
        if self.kind == TemporalKind::DateTime {
            let days = days_from_civil(self.parts[0], self.parts[1], self.parts[2]) + carry_days;
            let (y, m, d) = civil_from_days(days);
            self.parts[..3].copy_from_slice(&[y, m, d]);
        }
        Some(self)
    }

    /// Formats back to FHIR JSON text at the value's precision.
    pub fn format(&self) -> String {
        let p = &self.parts;
        let mut s = String::new();
        if self.kind != TemporalKind::Time {
            s.push_str(&format!("{:04}", p[0]));
            if self.precision >= 2 {
                s.push_str(&format!("-{:02}", p[1]));
            }
            if self.precision >= 3 {
                s.push_str(&format!("-{:02}", p[2]));
            }
            if self.kind == TemporalKind::Date || self.precision <= HOUR {
                return s;
            }
            s.push('T');
        }
        s.push_str(&format!("{:02}", p[3]));
        if self.precision >= 5 {
            s.push_str(&format!(":{:02}", p[4]));
        }
        if self.precision >= 6 {
            s.push_str(&format!(":{:02}", p[5] / 1000));
            if p[5] % 1000 != 0 {
                s.push_str(&format!(".{:03}", p[5] % 1000));
            }
        }
        if let Some(tz) = self.tz {
            if tz == 0 {
                s.push('Z');
            } else {
                let sign = if tz < 0 { '-' } else { '+' };
                s.push_str(&format!("{sign}{:02}:{:02}", tz.abs() / 60, tz.abs() % 60));
            }
        }
        s
    }
}

fn fixed_digits(s: &str, width: usize) -> Option<i64> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits a trailing `Z` or `±hh:mm` zone off a clock time.
fn split_tz(s: &str) -> Option<(&str, Option<i64>)> {
    if let Some(clock) = s.strip_suffix('Z') {
        return Some((clock, Some(0)));
    }
    match s.rfind(['+', '-']) {
        Some(i) => {
            let (clock, zone) = (&s[..i], &s[i + 1..]);
            let (h, m) = zone.split_once(':')?;
            let minutes = fixed_digits(h, 2)? * 60 + fixed_digits(m, 2)?;
            let sign = if s.as_bytes()[i] == b'-' { -1 } else { 1 };
            Some((clock, Some(sign * minutes)))
        }
        None => Some((s, None)),
    }
}

/// Parses `hh[:mm[:ss[.fff]]]` into parts 3..6; returns the precision reached.
fn parse_clock(s: &str, parts: &mut [i64; 6]) -> Option<usize> {
    let mut fields = s.split(':');
    parts[3] = fixed_digits(fields.next()?, 2).filter(|h| *h < 24)?;
    let mut precision = 4;
    if let Some(m) = fields.next() {
        parts[4] = fixed_digits(m, 2).filter(|m| *m < 60)?;
        precision = 5;
    }
    if let Some(sec) = fields.next() {
        let (whole, frac) = match sec.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (sec, None),
        };
        let mut ms = fixed_digits(whole, 2).filter(|s| *s < 61)? * 1000;
        if let Some(frac) = frac {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let padded: String = frac.chars().chain("000".chars()).take(3).collect();
            ms += padded.parse::<i64>().ok()?;
        }
        parts[5] = ms;
        precision = 6;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(precision)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The current UTC instant as a DateTime of millisecond precision.
pub(crate) fn now() -> Temporal {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    Temporal {
        kind: TemporalKind::DateTime,
        parts: [
            y,
            m,
            d,
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day % 60_000,
        ],
        precision: 6,
        tz: Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Temporal {
        Temporal::parse(s).unwrap()
    }

    #[test]
    fn parses_and_formats_round_trip() {
        for s in [
            "2020",
            "2020-02",
            "2020-02-29",
            "2020-02-29T10:11:12.345+05:30",
            "2020-02-29T10:11:12Z",
            "10:11",
            "10:11:12.5",
        ] {
            let parsed = t(s);
            let back = parsed.format();
            assert_eq!(Temporal::parse(&back), Some(parsed), "{s} -> {back}");
        }
        assert_eq!(
            t("2020-02-29T10:11:12.5Z").format(),
            "2020-02-29T10:11:12.500Z"
        );
        assert!(Temporal::parse("2019-02-29").is_none());
        assert!(Temporal::parse("2020-13").is_none());
        assert!(Temporal::parse("20201").is_none());
        assert!(Temporal::parse("2020-01-01T25:00").is_none());
    }

    #[test]
    fn compares_with_precision_and_zones() {
        assert_eq!(
            t("2020-01-01").compare(&t("2020-01-02")),
            Some(Ordering::Less)
        );
        assert_eq!(t("2020").compare(&t("2020-05")), None);
        assert_eq!(t("2019").compare(&t("2020-05")), Some(Ordering::Less));
        assert_eq!(
            t("2020-01-01T10:00:00+02:00").compare(&t("2020-01-01T08:00:00Z")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            t("2020-01-01T01:00:00+02:00").compare(&t("2019-12-31T23:30:00Z")),
            Some(Ordering::Less)
        );
        assert_eq!(t("10:00").compare(&t("09:59:59")), Some(Ordering::Greater));
    }

    #[test]
    fn adds_calendar_durations() {
        assert_eq!(
            t("2020-01-31").add(1, "month").unwrap().format(),
            "2020-02-29"
        );
        assert_eq!(
            t("2020-12-31").add(1, "day").unwrap().format(),
            "2021-01-01"
        );
        assert_eq!(
            t("2020-03-01").add(-1, "days").unwrap().format(),
            "2020-02-29"
        );
        assert_eq!(
            t("2020-12-31T23:30:00Z")
                .add(45, "minutes")
                .unwrap()
                .format(),
            "2021-01-01T00:15:00Z"
        );
        assert_eq!(t("2020").add(2, "years").unwrap().format(), "2022");
        assert_eq!(
            civil_from_days(days_from_civil(1999, 12, 31)),
            (1999, 12, 31)
        );
    }
}
