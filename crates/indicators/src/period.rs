//! Reporting periods: a calendar month (`2026-10`) or year (`2026`), inclusive of both ends.

use chrono::{Datelike, NaiveDate};

/// A reporting period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// As written by the caller (`2026-10`), used in report identifiers.
    pub label: String,
    /// First day.
    pub start: NaiveDate,
    /// Last day.
    pub end: NaiveDate,
}

impl Period {
    /// Parses `YYYY-MM` or `YYYY`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("period {text:?} must be YYYY-MM or YYYY");
        let (start, end) = match text.len() {
            4 => {
                let y: i32 = text.parse().map_err(|_| bad())?;
                (
                    NaiveDate::from_ymd_opt(y, 1, 1).ok_or_else(bad)?,
                    NaiveDate::from_ymd_opt(y, 12, 31).ok_or_else(bad)?,
                )
            }
            7 => {
                let start = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
                    .map_err(|_| bad())?;
                let next = if start.month() == 12 {
                    NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
                }
                .ok_or_else(bad)?;
                (start, next.pred_opt().ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            label: text.to_string(),
            start,
            end,
        })
    }

    /// The calendar month containing `date`.
    pub fn month_of(date: NaiveDate) -> Self {
        // A valid date always gives a valid month label.
        Self::parse(&format!("{:04}-{:02}", date.year(), date.month())).unwrap_or(Self {
            label: date.to_string(),
            start: date,
            end: date,
        })
    }

    /// Whether `date` lies in the period.
    pub fn contains(&self, date: NaiveDate) -> bool {
        date >= self.start && date <= self.end
    }

    /// Whether the span `from..=to` (open ends as `None`) overlaps the period.
    pub fn overlaps(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
        from.is_none_or(|f| f <= self.end) && to.is_none_or(|t| t >= self.start)
    }
}

/// The calendar day of a FHIR date/dateTime/instant as written; `None` for partial dates.
pub fn fhir_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn months_and_years() {
        let feb = Period::parse("2028-02").unwrap();
        assert_eq!((feb.start, feb.end), (d("2028-02-01"), d("2028-02-29")));
        let dec = Period::parse("2026-12").unwrap();
        assert_eq!(dec.end, d("2026-12-31"));
        let year = Period::parse("2026").unwrap();
        assert_eq!((year.start, year.end), (d("2026-01-01"), d("2026-12-31")));
        for bad in ["2026-13", "26-01", "2026-1", "", "2026-10-01"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Period::month_of(d("2026-10-20")).label, "2026-10");
    }

    #[test]
    fn overlaps_with_open_ends() {
        let oct = Period::parse("2026-10").unwrap();
        assert!(oct.overlaps(None, None));
        assert!(oct.overlaps(Some(d("2026-10-31")), None));
        assert!(oct.overlaps(None, Some(d("2026-10-01"))));
        assert!(!oct.overlaps(Some(d("2026-11-01")), None));
        assert!(!oct.overlaps(None, Some(d("2026-09-30"))));
    }
}
