//! Daily count series: case events in, one zero-filled count per day out, grouped per
//! (disease, division) and rolled up the GB/T 2260 hierarchy.
//!
//! Detection methods need a count for every day, including the days nobody reported anything:
//! a missing day is a zero, not a gap, or the baseline mean of a quiet county would be computed
//! from its busy days only. So a [`DailySeries`] covers a fixed date range and a [`SeriesSet`]
//! gives every (disease, division) pair the same range.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use phip_security::division::{self, Level};

/// Pseudo-code phip uses for the whole nation when rolling series up past the provinces; GB/T
/// 2260 itself has no code for the country.
pub const NATION: &str = "000000";

/// One notified case: the date that counts for surveillance (onset, or diagnosis when onset is
/// unknown), the county-level division where it is reported, and the disease id of the
/// [`crate::config::SurveillanceConfig`] it was classified into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    /// Date the case counts on.
    pub date: NaiveDate,
    /// GB/T 2260 code of the (county-level) division.
    pub division: String,
    /// Disease id (e.g. `"HFMD"`).
    pub disease: String,
}

/// A count per day over `[start, start + len)`, zero-filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailySeries {
    start: NaiveDate,
    counts: Vec<u32>,
}

impl DailySeries {
    /// A series of zeros covering `start..=end` (empty if `end < start`).
    pub fn zeros(start: NaiveDate, end: NaiveDate) -> Self {
        let len = (end - start).num_days().max(-1) + 1;
        Self {
            start,
            counts: vec![0; usize::try_from(len).unwrap_or(0)],
        }
    }

    /// A series from explicit counts, the first on `start`.
    pub fn from_counts(start: NaiveDate, counts: Vec<u32>) -> Self {
        Self { start, counts }
    }

    /// The series of the dates in `dates` (each date one case), zero-filled over
    /// `start..=end`; dates outside the range are ignored.
    pub fn from_dates<I: IntoIterator<Item = NaiveDate>>(
        start: NaiveDate,
        end: NaiveDate,
        dates: I,
    ) -> Self {
        let mut s = Self::zeros(start, end);
        for d in dates {
            s.add(d, 1);
        }
        s
    }

    /// First day.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// Last day (`None` for an empty series).
    pub fn end(&self) -> Option<NaiveDate> {
        self.date_at(self.counts.len().checked_sub(1)?)
    }

    /// Number of days.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether the series covers no day.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The counts, one per day from [`Self::start`].
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Index of `date` in [`Self::counts`], if covered.
    pub fn index_of(&self, date: NaiveDate) -> Option<usize> {
        let i = usize::try_from((date - self.start).num_days()).ok()?;
        (i < self.counts.len()).then_some(i)
    }

    /// Date of index `i` (`None` past the end).
    pub fn date_at(&self, i: usize) -> Option<NaiveDate> {
        if i >= self.counts.len() {
            return None;
        }
        self.start.checked_add_days(Days::new(i as u64))
    }

    /// Count on `date` (`None` if the date is not covered).
    pub fn get(&self, date: NaiveDate) -> Option<u32> {
        self.index_of(date).map(|i| self.counts[i])
    }

    /// Adds `n` cases on `date`; returns whether the date was covered.
    pub fn add(&mut self, date: NaiveDate, n: u32) -> bool {
        match self.index_of(date) {
            Some(i) => {
                self.counts[i] = self.counts[i].saturating_add(n);
                true
            }
            None => false,
        }
    }

    /// Sum of the `days` days ending on `end` (inclusive); `None` unless all are covered.
    pub fn window_sum(&self, end: NaiveDate, days: usize) -> Option<u64> {
        let last = self.index_of(end)?;
        let first = (last + 1).checked_sub(days)?;
        Some(
            self.counts[first..=last]
                .iter()
                .map(|&c| u64::from(c))
                .sum(),
        )
    }

    /// Adds `other` day by day (the two must cover the same dates, which [`SeriesSet`]
    /// guarantees).
    fn accumulate(&mut self, other: &DailySeries) {
        debug_assert_eq!((self.start, self.len()), (other.start, other.len()));
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }
}

/// The key of one series: which disease in which division.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// Disease id.
    pub disease: String,
    /// GB/T 2260 code (or [`NATION`]).
    pub division: String,
}

/// Levels a county series can be rolled up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RollUp {
    /// Prefecture (地级). Districts of the four municipalities and the directly administered
    /// county-level cities have no prefecture: they roll up to their province-level parent,
    /// which then plays the prefecture's part.
    Prefecture,
    /// Province (省级).
    Province,
    /// The whole nation ([`NATION`]).
    Nation,
}

/// The division `code` is counted under at level `to`. Uses the embedded GB/T 2260 list, so
/// `110105` (朝阳区, directly under 北京市) goes to `110000` even for [`RollUp::Prefecture`];
/// codes not in the list follow their digits. `None` for a malformed code.
pub fn roll_up_code(code: &str, to: RollUp) -> Option<String> {
    let level = division::level(code)?;
    let want = match to {
        RollUp::Nation => return Some(NATION.to_string()),
        RollUp::Prefecture => Level::Prefecture,
        RollUp::Province => Level::Province,
    };
    // `Level` orders Province < Prefecture < County, so "at or above" is `<=`.
    if level <= want {
        // Already at (or above) the level asked for: a prefecture stays itself for a
        // prefecture roll-up; a province stays itself for both.
        return Some(code.to_string());
    }
    // Nearest ancestor at the wanted level or above: ancestors() is nearest first, so this
    // picks the prefecture when there is one and the province otherwise.
    division::ancestors(code)
        .into_iter()
        .find(|a| division::level(a).is_some_and(|l| l <= want))
}

/// Series for many (disease, division) pairs over one common date range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSet {
    start: NaiveDate,
    end: NaiveDate,
    series: BTreeMap<SeriesKey, DailySeries>,
    outside: u64,
}

impl SeriesSet {
    /// Counts `events` per (disease, division) per day over `start..=end`. Events dated
    /// outside the range are not counted (see [`Self::outside_range`]).
    pub fn from_events<I>(start: NaiveDate, end: NaiveDate, events: I) -> Self
    where
        I: IntoIterator<Item = CaseEvent>,
    {
        let mut set = Self {
            start,
            end,
            series: BTreeMap::new(),
            outside: 0,
        };
        for e in events {
            if e.date < start || e.date > end {
                set.outside += 1;
                continue;
            }
            let key = SeriesKey {
                disease: e.disease,
                division: e.division,
            };
            set.series
                .entry(key)
                .or_insert_with(|| DailySeries::zeros(start, end))
                .add(e.date, 1);
        }
        set
    }

    /// First day covered.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// Last day covered.
    pub fn end(&self) -> NaiveDate {
        self.end
    }

    /// How many events fell outside the date range and were not counted.
    pub fn outside_range(&self) -> u64 {
        self.outside
    }

    /// The series of `disease` in `division`: all zeros when nothing was reported there (a
    /// quiet county is a real series, not a missing one).
    pub fn get(&self, disease: &str, division: &str) -> DailySeries {
        let key = SeriesKey {
            disease: disease.to_string(),
            division: division.to_string(),
        };
        self.series
            .get(&key)
            .cloned()
            .unwrap_or_else(|| DailySeries::zeros(self.start, self.end))
    }

    /// Every series that has at least one case, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &DailySeries)> {
        self.series.iter()
    }

    /// Number of non-empty series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no event was counted.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The same cases summed to level `to`: each series is added into the series of the
    /// division it rolls up to (see [`roll_up_code`]). Series under malformed codes cannot be
    /// placed and are left out.
    pub fn roll_up(&self, to: RollUp) -> SeriesSet {
        let mut series: BTreeMap<SeriesKey, DailySeries> = BTreeMap::new();
        for (k, s) in &self.series {
            let Some(division) = roll_up_code(&k.division, to) else {
                continue;
            };
            let key = SeriesKey {
                disease: k.disease.clone(),
                division,
            };
            series
                .entry(key)
                .or_insert_with(|| DailySeries::zeros(self.start, self.end))
                .accumulate(s);
        }
        SeriesSet {
            start: self.start,
            end: self.end,
            series,
            outside: self.outside,
        }
    }
}
