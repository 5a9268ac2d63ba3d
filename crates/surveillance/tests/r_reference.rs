//! EARS C1/C2/C3 against R itself: `tests/data/earsc_reference.csv` holds what
//! `surveillance::earsC` (R 4.2.2, surveillance 1.20.3) computed for six series — Poisson at
//! low and middle rates, an injected outbreak, sparse counts, a flat series with jumps (zero
//! standard deviations), a weekly pattern — under seven parameter sets (each method, baselines
//! 7 and 10, α from 0.001 to 0.1, `minSigma` 0, 0.5 and 1). It was produced by
//! `tools/surveillance/ears_reference.R`; phip must give the same upper bound (to 1e-9) and the
//! same alarm on every one of the 5,040 days, and no bound where R's is `NA`.

use std::collections::BTreeMap;

use phip_surveillance::ears::ears;
use phip_surveillance::{EarsMethod, EarsParams};

const REFERENCE: &str = include_str!("data/earsc_reference.csv");

/// R's answer for one day: `None` before the first evaluated day; inside, the upper bound
/// (`None` for `NA`) and the alarm (`None` for `NA`).
type RDay = Option<(Option<f64>, Option<bool>)>;

struct Case {
    params: EarsParams,
    counts: Vec<u32>,
    r: Vec<RDay>,
}

fn method(name: &str) -> EarsMethod {
    match name {
        "C1" => EarsMethod::C1,
        "C2" => EarsMethod::C2,
        "C3" => EarsMethod::C3,
        other => panic!("unknown method {other}"),
    }
}

fn cases() -> BTreeMap<String, Case> {
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for line in REFERENCE.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 9, "{line}");
        let key = f[..5].join(",");
        let case = cases.entry(key).or_insert_with(|| Case {
            params: EarsParams {
                method: method(f[1]),
                baseline: f[2].parse().expect("baseline"),
                alpha: Some(f[3].parse().expect("alpha")),
                min_sigma: f[4].parse().expect("minSigma"),
            },
            counts: Vec::new(),
            r: Vec::new(),
        });
        let day: usize = f[5].parse().expect("day");
        assert_eq!(day, case.counts.len(), "days in order: {line}");
        case.counts.push(f[6].parse().expect("observed"));
        case.r.push(match (f[7], f[8]) {
            ("-", _) => None,
            (bound, alarm) => Some((
                (bound != "NA").then(|| bound.parse().expect("upper bound")),
                match alarm {
                    "NA" => None,
                    a => Some(a == "1"),
                },
            )),
        });
    }
    cases
}

#[test]
fn ears_matches_r_earsc_on_every_day() {
    let cases = cases();
    assert_eq!(cases.len(), 6 * 7, "six series, seven parameter sets");
    let mut days = 0;
    let mut alarms = 0;
    for (key, case) in &cases {
        let points = ears(&case.counts, &case.params).expect("valid parameters");
        let first = case.params.first_index();
        assert!(
            case.r[..first].iter().all(Option::is_none),
            "{key}: R evaluates from day {first}"
        );
        assert_eq!(points.len(), case.counts.len() - first, "{key}");
        for point in &points {
            let (r_bound, r_alarm) = case.r[point.index]
                .unwrap_or_else(|| panic!("{key} day {}: R did not evaluate it", point.index));
            match (point.upper_bound, r_bound) {
                (Some(ours), Some(theirs)) => assert!(
                    (ours - theirs).abs() <= 1e-9 * theirs.abs().max(1.0),
                    "{key} day {}: upper bound {ours} vs R {theirs}",
                    point.index
                ),
                (None, None) => {}
                (ours, theirs) => panic!(
                    "{key} day {}: upper bound {ours:?} vs R {theirs:?}",
                    point.index
                ),
            }
            // R's alarm is NA exactly where its bound is; phip raises none there.
            assert_eq!(
                point.alarm,
                r_alarm.unwrap_or(false),
                "{key} day {}: observed {}, bound {:?}",
                point.index,
                point.observed,
                point.upper_bound
            );
            days += 1;
            alarms += usize::from(point.alarm);
        }
    }
    // The reference is not a quiet one: plenty of alarms, across methods.
    assert!(days > 4000, "{days}");
    assert!(alarms > 200, "{alarms}");
}
