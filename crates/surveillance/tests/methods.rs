//! Hand-computed examples for EARS C1/C2/C3 (following R `surveillance::earsC` line by line),
//! CUSUM and the CIDARS moving percentile.

use chrono::{Datelike, NaiveDate};
use phip_surveillance::cidars::{cidars_at, percentile};
use phip_surveillance::cusum::cusum;
use phip_surveillance::ears::{ears, ears_at};
use phip_surveillance::{CidarsParams, CusumParams, DailySeries, EarsMethod, EarsParams};

const EPS: f64 = 1e-9;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < EPS
}

// The baseline used throughout: 2 4 3 5 1 3 3.
//   sum 21, mean 3; deviations -1 1 0 2 -2 0 0; squares 1 1 0 4 4 0 0 = 10;
//   sample variance 10/6, sd = sqrt(10/6) = 1.2909944487358056.
const SD: f64 = 1.290_994_448_735_805_6;
// qnorm(0.999) and qnorm(0.975) in R.
const Z_001: f64 = 3.090_232_306_167_813;
const Z_025: f64 = 1.959_963_984_540_054;

#[test]
fn normal_quantiles_match_r_qnorm() {
    assert!((EarsParams::new(EarsMethod::C1).z_alpha() - Z_001).abs() < 1e-12);
    assert!((EarsParams::new(EarsMethod::C3).z_alpha() - Z_025).abs() < 1e-12);
    let mut p = EarsParams::new(EarsMethod::C1);
    p.alpha = Some(0.05);
    // qnorm(0.95) = 1.6448536269514722
    assert!((p.z_alpha() - 1.644_853_626_951_472_2).abs() < 1e-12);
}

#[test]
fn c1_by_hand() {
    let y = [2u32, 4, 3, 5, 1, 3, 3, 12];
    let out = ears(&y, &EarsParams::new(EarsMethod::C1)).unwrap();
    // R's default range for C1 starts at baseline + 1 (1-based) = index 7 here: one point.
    assert_eq!(out.len(), 1);
    let p = out[0];
    assert_eq!((p.index, p.baseline_first, p.baseline_last), (7, 0, 6));
    assert!(close(p.mean, 3.0) && close(p.sd, SD));
    // U1 = 3 + 3.090232306 * 1.290994449 = 6.989472752566693
    assert!(close(p.upper_bound.unwrap(), 3.0 + Z_001 * SD));
    assert!(close(p.upper_bound.unwrap(), 6.989_472_752_566_693));
    // C1 = (12 - 3) / 1.290994449 = 6.97137...
    assert!(close(p.statistic.unwrap(), 9.0 / SD));
    assert!(p.alarm, "12 > 6.99");
}

#[test]
fn c2_uses_a_two_day_guard_band() {
    // Days 7 and 8 (20, 20) are the guard band: C2's baseline for day 9 is days 0..=6.
    let y = [2u32, 4, 3, 5, 1, 3, 3, 20, 20, 7];
    let c2 = ears(&y, &EarsParams::new(EarsMethod::C2)).unwrap();
    assert_eq!(c2.len(), 1);
    let p = c2[0];
    assert_eq!((p.index, p.baseline_first, p.baseline_last), (9, 0, 6));
    // U2 = 3 + 3.0902 * 1.2910 = 6.9895; 7 > 6.9895 → alarm.
    assert!(close(p.upper_bound.unwrap(), 6.989_472_752_566_693));
    assert!(p.alarm);

    // C1 on day 9 has the two 20s in its baseline (days 2..=8: 3 5 1 3 3 20 20): mean 55/7,
    // and no alarm. R gives upper bounds 6.98947, 25.58707, 33.73825 for days 7, 8, 9.
    let c1 = ears(&y, &EarsParams::new(EarsMethod::C1)).unwrap();
    let ub: Vec<f64> = c1.iter().map(|p| p.upper_bound.unwrap()).collect();
    let r = [
        6.989_472_752_566_693,
        25.587_066_454_343_23,
        33.738_250_229_363_43,
    ];
    for (a, b) in ub.iter().zip(r) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    assert_eq!(
        c1.iter().map(|p| p.alarm).collect::<Vec<_>>(),
        [true, false, false]
    );
}

#[test]
fn c3_follows_r_code() {
    // Days 0..=9 repeat the baseline pattern, so every C2 window of days 9..=12 is a
    // permutation of 2 4 3 5 1 3 3 (mean 3, sd 1.2909944). Then 6, 7, 5 on days 10, 11, 12.
    //   C2(9)  = (3 - 3)/sd = 0            → max(0, C2 - 1) = 0
    //   C2(10) = (6 - 3)/sd = 2.3237900    → 1.3237900
    //   C2(11) = (7 - 3)/sd = 3.0983867    → 2.0983867
    //   C2(12) = (5 - 3)/sd = 1.5491933    → 0.5491933
    // α defaults to 0.025 for C3: z = 1.959964.
    let y = [2u32, 4, 3, 5, 1, 3, 3, 2, 4, 3, 6, 7, 5];
    let out = ears(&y, &EarsParams::new(EarsMethod::C3)).unwrap();
    assert_eq!(out.iter().map(|p| p.index).collect::<Vec<_>>(), [11, 12]);
    let e = |v: f64| (v / SD - 1.0).max(0.0);
    let (e9, e10, e11, e12) = (e(0.0), e(3.0), e(4.0), e(2.0));

    // Day 11: U3 = Y(11) + sd·(z − e(9) − e(10)) = 7 + 1.2910·(1.9600 − 1.3238) = 7.8213.
    // 7 > 7.8213 is false: R's C3 does not alarm although the documented statistic
    // C3(11) = e9 + e10 + e11 = 3.4222 exceeds z (see the module documentation).
    let p11 = out[0];
    assert!(close(
        p11.upper_bound.unwrap(),
        7.0 + SD * (Z_025 - e9 - e10)
    ));
    assert!(close(p11.upper_bound.unwrap(), 7.821_297_072_499_125));
    assert!(close(p11.statistic.unwrap(), e9 + e10 + e11));
    assert!(!p11.alarm);

    // Day 12: U3 = 5 + 1.2910·(1.9600 − 1.3238 − 2.0984) = 3.1123; 5 > 3.1123 → alarm.
    let p12 = out[1];
    assert!(close(
        p12.upper_bound.unwrap(),
        5.0 + SD * (Z_025 - e10 - e11)
    ));
    assert!(close(p12.upper_bound.unwrap(), 3.112_291_521_234_930_7));
    assert!(close(p12.statistic.unwrap(), e10 + e11 + e12));
    assert!(p12.alarm);
    assert_eq!((p12.baseline_first, p12.baseline_last), (3, 9));

    // ears_at agrees with the full run.
    let params = EarsParams::new(EarsMethod::C3);
    assert_eq!(ears_at(&y, 12, &params).unwrap(), Some(p12));
    assert_eq!(ears_at(&y, 10, &params).unwrap(), None, "too early for C3");
}

#[test]
fn zero_sigma_cases_follow_r() {
    // A constant baseline: C1's upper bound is the constant itself; an equal count does not
    // alarm (strict >), one more does.
    let mut y = vec![5u32; 8];
    let p = ears(&y, &EarsParams::new(EarsMethod::C1)).unwrap()[0];
    assert_eq!(p.upper_bound, Some(5.0));
    assert!(!p.alarm);
    assert_eq!(p.statistic, None, "0/0");
    y[7] = 6;
    assert!(ears(&y, &EarsParams::new(EarsMethod::C1)).unwrap()[0].alarm);

    // C3 on a constant series: R's upper bound is NaN (0/0 in C2) and its alarm NA.
    let flat = vec![5u32; 20];
    for p in ears(&flat, &EarsParams::new(EarsMethod::C3)).unwrap() {
        assert_eq!(p.upper_bound, None);
        assert!(!p.alarm);
    }

    // A week of zeros then one case: R alarms with minSigma 0 (bound 0), not with
    // minSigma 1 (bound 0 + 3.0902·1).
    let y = [0u32, 0, 0, 0, 0, 0, 0, 1];
    assert!(ears(&y, &EarsParams::new(EarsMethod::C1)).unwrap()[0].alarm);
    let mut p = EarsParams::new(EarsMethod::C1);
    p.min_sigma = 1.0;
    let pt = ears(&y, &p).unwrap()[0];
    assert!(close(pt.upper_bound.unwrap(), Z_001));
    assert!(!pt.alarm);
}

#[test]
fn ears_rejects_what_r_rejects() {
    let mut p = EarsParams::new(EarsMethod::C1);
    p.baseline = 2;
    assert!(
        ears(&[1u32; 10], &p).is_err(),
        "Minimum baseline to use is 3."
    );
    let mut p = EarsParams::new(EarsMethod::C2);
    p.min_sigma = -1.0;
    assert!(ears(&[1u32; 10], &p).is_err());
    let mut p = EarsParams::new(EarsMethod::C2);
    p.alpha = Some(1.0);
    assert!(ears(&[1u32; 10], &p).is_err());
    // Too short a series is not an error, just nothing to evaluate.
    assert!(ears(&[1u32; 7], &EarsParams::new(EarsMethod::C1))
        .unwrap()
        .is_empty());
}

#[test]
fn ears_baseline_length_is_configurable() {
    // baseline = 3: days 0..=2 (1 2 3): mean 2, sd 1; α 0.05: U = 2 + 1.6449 = 3.6449.
    let p = EarsParams {
        method: EarsMethod::C1,
        baseline: 3,
        alpha: Some(0.05),
        min_sigma: 0.0,
    };
    let out = ears(&[1u32, 2, 3, 4], &p).unwrap();
    assert_eq!(out.len(), 1);
    assert!(close(
        out[0].upper_bound.unwrap(),
        2.0 + 1.644_853_626_951_472_2
    ));
    assert!(out[0].alarm, "4 > 3.64");
}

#[test]
fn cusum_by_hand() {
    // baseline 4 days, guard 1 day, k 0.5, h 2. First evaluated day: 4 + 1 = 5.
    let params = CusumParams {
        k: 0.5,
        h: 2.0,
        baseline: 4,
        guard: 1,
        min_sigma: 1.0,
        reset_after_alarm: true,
    };
    let y = [2u32, 4, 2, 4, 2, 5, 5, 3];
    let out = cusum(&y, &params).unwrap();
    assert_eq!(out.iter().map(|p| p.index).collect::<Vec<_>>(), [5, 6, 7]);
    // Day 5: baseline days 0..=3 (2 4 2 4): mean 3, sd sqrt(4/3) = 1.1547005.
    //   z = (5 - 3)/1.1547 = 1.7320508; C = max(0, 0 + 1.7320508 - 0.5) = 1.2320508 ≤ 2.
    //   U = 3 + 1.1547·(2 + 0.5 - 0) = 5.8867513.
    let sd = (4.0f64 / 3.0).sqrt();
    let z = 2.0 / sd;
    let p = out[0];
    assert_eq!((p.baseline_first, p.baseline_last), (0, 3));
    assert!(close(p.mean, 3.0) && close(p.sd, sd) && close(p.z, z));
    assert!(close(p.cusum, z - 0.5) && !p.alarm);
    assert!(close(p.upper_bound, 3.0 + sd * 2.5));
    // Day 6: baseline days 1..=4 (4 2 4 2), same mean and sd; C = 1.2320508 · 2 = 2.4641016 > 2.
    //   U = 3 + 1.1547·(2.5 - 1.2320508) = 4.4641016 < 5.
    let p = out[1];
    assert!(close(p.cusum, 2.0 * (z - 0.5)) && p.alarm);
    assert!(close(p.upper_bound, 3.0 + sd * (2.5 - (z - 0.5))));
    // Day 7: reset to 0 after the alarm. Baseline days 2..=5 (2 4 2 5): mean 3.25,
    //   squares 1.5625 0.5625 1.5625 3.0625 = 6.75, /3 = 2.25, sd 1.5;
    //   z = (3 - 3.25)/1.5 = -0.1666667; C = max(0, 0 - 0.1667 - 0.5) = 0.
    let p = out[2];
    assert!(close(p.mean, 3.25) && close(p.sd, 1.5));
    assert!(close(p.cusum, 0.0) && !p.alarm);

    // Without the reset the sum carries on: 2.4641016 - 0.1666667 - 0.5 = 1.7974349.
    let no_reset = CusumParams {
        reset_after_alarm: false,
        ..params
    };
    let out = cusum(&y, &no_reset).unwrap();
    assert!(close(out[2].cusum, 2.0 * (z - 0.5) - 1.0 / 6.0 - 0.5));
}

#[test]
fn cusum_floors_sigma_on_flat_baselines() {
    let out = cusum(&[3u32; 40], &CusumParams::default()).unwrap();
    assert_eq!(out.len(), 40 - 30);
    assert!(out
        .iter()
        .all(|p| p.sigma == 1.0 && p.cusum == 0.0 && !p.alarm));
    let bad = CusumParams {
        min_sigma: 0.0,
        ..CusumParams::default()
    };
    assert!(cusum(&[3u32; 40], &bad).is_err());
}

#[test]
fn percentile_is_r_type_7() {
    // sorted 1 2 2 3 3 3 4 4 4 5 5 5 6 6 7; P80: h = 14·0.8 = 11.2 → x[11] + 0.2·(x[12] − x[11])
    // = 5 + 0.2·1 = 5.2; P50: h = 7 → x[7] = 4.
    let v = [3u64, 5, 2, 4, 6, 4, 3, 7, 5, 2, 1, 4, 3, 6, 5];
    assert!(close(percentile(&v, 80.0).unwrap(), 5.2));
    assert!(close(percentile(&v, 50.0).unwrap(), 4.0));
    assert!(close(percentile(&v, 100.0).unwrap(), 7.0));
    assert_eq!(percentile(&[], 50.0), None);
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[test]
fn cidars_by_hand() {
    // Evaluate 2026-03-10. Blocks end on (2026-03-10 − y years) + 7j, j = −2..=2, y = 3, 2, 1;
    // put each block's count on its last day so the 7-day sums are exactly these.
    let blocks = [3u32, 5, 2, 4, 6, 4, 3, 7, 5, 2, 1, 4, 3, 6, 5];
    let day = d("2026-03-10");
    let mut s = DailySeries::zeros(d("2022-12-01"), day);
    let mut k = 0;
    for y in [3, 2, 1] {
        let same = day.with_year(2026 - y).unwrap();
        for j in -2i64..=2 {
            let end = same + chrono::Duration::days(7 * j);
            assert!(s.add(end, blocks[k]));
            k += 1;
        }
    }
    // Current period 2026-03-04..=2026-03-10: 5 cases, not above P80 = 5.2 (see
    // percentile_is_r_type_7).
    s.add(d("2026-03-04"), 1);
    s.add(d("2026-03-10"), 4);
    // Outside the current period (2026-03-03): must not count.
    s.add(d("2026-03-03"), 9);
    let params = CidarsParams::default();
    let p = cidars_at(&s, day, &params).unwrap().unwrap();
    assert_eq!(
        p.blocks,
        blocks.iter().map(|&b| u64::from(b)).collect::<Vec<_>>()
    );
    assert_eq!(p.observed, 5);
    assert!(close(p.threshold, 5.2) && !p.alarm);
    // Oldest block: ends 2023-03-10 − 14 days = 2023-02-24, starts 2023-02-18; newest ends
    // 2025-03-10 + 14 days = 2025-03-24.
    assert_eq!(
        (p.baseline_first, p.baseline_last),
        (d("2023-02-18"), d("2025-03-24"))
    );
    // P50 = 4: 5 > 4 → signal.
    let p50 = CidarsParams {
        percentile: 50.0,
        ..params
    };
    assert!(cidars_at(&s, day, &p50).unwrap().unwrap().alarm);

    // One more case: 6 > 5.2 → signal at P80.
    s.add(d("2026-03-05"), 1);
    let p = cidars_at(&s, day, &params).unwrap().unwrap();
    assert!(p.observed == 6 && p.alarm);

    // Not enough history: nothing to say.
    let short = DailySeries::zeros(d("2024-01-01"), day);
    assert_eq!(cidars_at(&short, day, &params).unwrap(), None);
}

#[test]
fn cidars_min_observed_and_leap_day() {
    // All-zero history: threshold 0. One case exceeds it (CIDARS' behaviour for rare
    // diseases) unless min_observed asks for more.
    let day = d("2028-02-29");
    let mut s = DailySeries::zeros(d("2024-12-01"), day);
    s.add(day, 1);
    let p = cidars_at(&s, day, &CidarsParams::default())
        .unwrap()
        .unwrap();
    assert!(p.threshold == 0.0 && p.alarm);
    let strict = CidarsParams {
        min_observed: 3,
        ..CidarsParams::default()
    };
    assert!(!cidars_at(&s, day, &strict).unwrap().unwrap().alarm);
    // 29 February minus one year is 28 February: the newest "same period" block ends on
    // 2027-02-28 + 14 days.
    assert_eq!(p.baseline_last, d("2027-03-14"));
}

#[test]
fn ears_range_matches_the_full_run() {
    // A bumpy series; every method, every sub-range: the same points as the full run.
    let y: Vec<u32> = (0..40u32).map(|i| (i * 7 + i * i) % 11).collect();
    for method in [EarsMethod::C1, EarsMethod::C2, EarsMethod::C3] {
        let params = EarsParams::new(method);
        let full = ears(&y, &params).unwrap();
        assert_eq!(full.len(), y.len() - params.first_index());
        for from in [0, 5, 11, 20] {
            for to in [12, 30, 40, 99] {
                let part = phip_surveillance::ears::ears_range(&y, from, to, &params).unwrap();
                let want: Vec<_> = full
                    .iter()
                    .filter(|p| p.index >= from && p.index < to)
                    .copied()
                    .collect();
                assert_eq!(part, want, "{method:?} {from}..{to}");
            }
        }
    }
}
