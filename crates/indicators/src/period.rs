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
