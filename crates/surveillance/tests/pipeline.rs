//! From case reports to alerts: classification, series and roll-up, detection on synthetic
//! county series (an injected outbreak fires, flat series stay quiet), alerts as valid FHIR R4.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use phip_fhir::validate::validate_resource;
use phip_surveillance::series::roll_up_code;
use phip_surveillance::{
    detect, Alert, AlertMethod, CaseEvent, CusumParams, DailySeries, DiseaseConfig, EarsMethod,
    EarsParams, Lang, MethodConfig, RollUp, SeriesSet, SurveillanceConfig,
};
use serde_json::Value;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../fixtures/surveillance/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn builtin_config_loads_and_validates() {
    let cfg = SurveillanceConfig::builtin();
    let ids: Vec<&str> = cfg.diseases.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["ILI", "HFMD", "BACILLARY_DYSENTERY", "COVID19"]);
    cfg.validate().unwrap();
    let hfmd = cfg.disease("HFMD").unwrap();
    assert_eq!(hfmd.methods.len(), 4);
    assert!(
        matches!(hfmd.methods[0], MethodConfig::C1(o) if o.baseline == 7 && o.min_sigma == 1.0)
    );
}

#[test]
fn config_parses_tagged_methods_and_rejects_bad_ones() {
    let text = r#"{ "diseases": [ {
        "id": "X", "name_en": "x", "name_zh": "某病",
        "codes": [ { "system": "urn:local", "code": "X1" } ],
        "methods": [
            { "method": "C3", "alpha": 0.01 },
            { "method": "CUSUM", "h": 5 },
            { "method": "CIDARS", "percentile": 50, "years": 5 }
        ] } ] }"#;
    let cfg = SurveillanceConfig::from_json(text).unwrap();
    let m = &cfg.diseases[0].methods;
    assert!(matches!(m[0], MethodConfig::C3(o) if o.alpha == Some(0.01) && o.baseline == 7));
    assert!(matches!(m[1], MethodConfig::Cusum(p) if p.h == 5.0 && p.k == 0.5));
    assert!(
        matches!(m[2], MethodConfig::Cidars(p) if p.percentile == 50.0 && p.years == 5 && p.window_days == 7)
    );

    for bad in [
        // baseline below R's minimum
        r#"{ "diseases": [ { "id": "X", "name_en": "x", "name_zh": "x",
             "methods": [ { "method": "C1", "baseline": 2 } ] } ] }"#,
        // unknown parameter (a typo must not silently fall back to a default)
        r#"{ "diseases": [ { "id": "X", "name_en": "x", "name_zh": "x",
             "methods": [ { "method": "C2", "minsigma": 1 } ] } ] }"#,
        // unknown method
        r#"{ "diseases": [ { "id": "X", "name_en": "x", "name_zh": "x",
             "methods": [ { "method": "C4" } ] } ] }"#,
        // repeated id
        r#"{ "diseases": [ { "id": "X", "name_en": "x", "name_zh": "x" },
                           { "id": "X", "name_en": "y", "name_zh": "y" } ] }"#,
    ] {
        assert!(SurveillanceConfig::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn classifies_case_reports() {
    let cfg = SurveillanceConfig::builtin();
    let cases = fixture("case-reports.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let note = case["note"].as_str().unwrap();
        let resource = &case["resource"];
        // The fixtures themselves are valid R4.
        validate_resource(resource).unwrap_or_else(|e| panic!("{note}: {e:?}"));
        let got = cfg
            .classify(resource)
            .map(|c| (c.disease.id.clone(), c.date.to_string()));
        let want = case["expect"].as_object().map(|e| {
            (
                e["disease"].as_str().unwrap().to_string(),
                e["date"].as_str().unwrap().to_string(),
            )
        });
        assert_eq!(got, want, "{note}");
    }
}

#[test]
fn series_zero_fill_and_roll_up() {
    let ev = |date: &str, division: &str, disease: &str| CaseEvent {
        date: d(date),
        division: division.into(),
        disease: disease.into(),
    };
    let events = vec![
        ev("2026-03-01", "440305", "HFMD"), // 南山区, 深圳市
        ev("2026-03-01", "440305", "HFMD"),
        ev("2026-03-03", "440304", "HFMD"), // 福田区, 深圳市
        ev("2026-03-03", "440106", "HFMD"), // 天河区, 广州市
        ev("2026-03-02", "110105", "HFMD"), // 朝阳区, directly under 北京市
        ev("2026-03-02", "440305", "ILI"),
        ev("2026-02-28", "440305", "HFMD"), // before the range
    ];
    let set = SeriesSet::from_events(d("2026-03-01"), d("2026-03-04"), events);
    assert_eq!(set.outside_range(), 1);
    assert_eq!(set.len(), 5);
    assert_eq!(set.get("HFMD", "440305").counts(), [2, 0, 0, 0]);
    assert_eq!(
        set.get("HFMD", "440303").counts(),
        [0, 0, 0, 0],
        "quiet county"
    );

    let pref = set.roll_up(RollUp::Prefecture);
    assert_eq!(pref.get("HFMD", "440300").counts(), [2, 0, 1, 0]);
    assert_eq!(pref.get("HFMD", "440100").counts(), [0, 0, 1, 0]);
    assert_eq!(pref.get("HFMD", "110000").counts(), [0, 1, 0, 0]);
    assert_eq!(pref.get("ILI", "440300").counts(), [0, 1, 0, 0]);

    let prov = set.roll_up(RollUp::Province);
    assert_eq!(prov.get("HFMD", "440000").counts(), [2, 0, 2, 0]);
    assert_eq!(prov.get("HFMD", "110000").counts(), [0, 1, 0, 0]);
    // Rolling up twice is rolling up once.
    assert_eq!(pref.roll_up(RollUp::Province), prov);

    let nation = set.roll_up(RollUp::Nation);
    assert_eq!(nation.get("HFMD", "000000").counts(), [2, 1, 2, 0]);
    assert_eq!(nation.len(), 2);

    assert_eq!(
        roll_up_code("429004", RollUp::Prefecture).as_deref(),
        Some("429000")
    );
    assert_eq!(roll_up_code("4403", RollUp::Province), None);
    assert_eq!(
        roll_up_code("440000", RollUp::Prefecture).as_deref(),
        Some("440000")
    );
}

#[test]
fn daily_series_basics() {
    let s = DailySeries::from_dates(
        d("2026-01-30"),
        d("2026-02-02"),
        [
            d("2026-01-31"),
            d("2026-02-02"),
            d("2026-02-02"),
            d("2026-02-05"),
        ],
    );
    assert_eq!(s.counts(), [0, 1, 0, 2]);
    assert_eq!(s.end(), Some(d("2026-02-02")));
    assert_eq!(s.window_sum(d("2026-02-02"), 3), Some(3));
    assert_eq!(
        s.window_sum(d("2026-02-02"), 5),
        None,
        "needs days before the start"
    );
    assert_eq!(s.get(d("2026-02-03")), None);
    assert!(DailySeries::zeros(d("2026-01-02"), d("2026-01-01")).is_empty());
}

/// splitmix64: a tiny deterministic generator, enough for synthetic counts.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Knuth's multiplication method (fine for small means).
    fn poisson(&mut self, lambda: f64) -> u32 {
        let l = (-lambda).exp();
        let mut k = 0;
        let mut p = 1.0;
        loop {
            p *= self.uniform();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

/// Case events of a Poisson(λ = 4) county series from 2022-01-01 to 2025-06-30, plus
/// `outbreak[i]` extra cases on 2025-06-20 + i.
fn synthetic_events(seed: u64, outbreak: &[u32]) -> Vec<CaseEvent> {
    let mut rng = Rng(seed);
    let mut events = Vec::new();
    let onset = d("2025-06-20");
    for day in d("2022-01-01")
        .iter_days()
        .take_while(|x| *x <= d("2025-06-30"))
    {
        let mut n = rng.poisson(4.0);
        if let Some(i) = (day - onset)
            .num_days()
            .try_into()
            .ok()
            .filter(|&i: &usize| i < outbreak.len())
        {
            n += outbreak[i];
        }
        for _ in 0..n {
            events.push(CaseEvent {
                date: day,
                division: "440305".into(),
                disease: "HFMD".into(),
            });
        }
    }
    events
}

fn hfmd_with_all_methods() -> DiseaseConfig {
    let mut hfmd = SurveillanceConfig::builtin()
        .disease("HFMD")
        .unwrap()
        .clone();
    hfmd.methods
        .push(MethodConfig::Cusum(CusumParams::default()));
    hfmd
}

fn alerts_by_method(alerts: &[Alert]) -> BTreeMap<&'static str, Vec<NaiveDate>> {
    let mut m: BTreeMap<&'static str, Vec<NaiveDate>> = BTreeMap::new();
    for a in alerts {
        m.entry(a.method.name()).or_default().push(a.date);
    }
    m
}

#[test]
fn injected_outbreak_raises_alerts() {
    let hfmd = hfmd_with_all_methods();
    let outbreak = [4, 8, 12, 16, 20, 20, 16];
    let set = SeriesSet::from_events(
        d("2022-01-01"),
        d("2025-06-30"),
        synthetic_events(7, &outbreak),
    );
    let series = set.get("HFMD", "440305");

    // The outbreak week: every method fires, each within the first four days.
    let during = detect(&hfmd, "440305", &series, d("2025-06-20"), d("2025-06-26")).unwrap();
    let by = alerts_by_method(&during);
    for m in ["C1", "C2", "C3", "CUSUM", "CIDARS"] {
        let first = by.get(m).and_then(|v| v.first().copied());
        assert!(
            first.is_some_and(|f| f <= d("2025-06-23")),
            "{m} did not fire early: {by:?}"
        );
    }
    for a in &during {
        assert!(a.observed > a.threshold, "{a:?}");
        assert_eq!(a.division, "440305");
    }
}

/// Detection and false-alarm rates over 20 synthetic counties (seeds 1..=20), each a
/// Poisson(4) series with the same ramping outbreak from 2025-06-20. Within its first four
/// days C2, C3, CUSUM and CIDARS catch it in all 20 counties, C1 in 17. In the 170 days before
/// (2025-01-01..=2025-06-19, no outbreak) the alarm rate stays near what each method is known
/// to give on small counts; measured: C1 2.3 %, C2 2.0 %, C3 5.4 %, CUSUM 0.9 %, CIDARS P80
/// 19 % — EARS's 7-day baselines run far above the
/// nominal α (Fricker et al. 2008), and a P80 threshold is exceeded about one week in five
/// by construction, which is why CIDARS signals go to field verification.
#[test]
fn outbreaks_detected_in_every_county_false_alarms_bounded() {
    let hfmd = hfmd_with_all_methods();
    let outbreak = [4, 8, 12, 16, 20, 20, 16];
    let bounds = [
        ("C1", 0.04),
        ("C2", 0.04),
        ("C3", 0.08),
        ("CUSUM", 0.02),
        ("CIDARS", 0.25),
    ];
    let mut false_alarms: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut quiet_days = 0;
    let mut detected: BTreeMap<&'static str, usize> = BTreeMap::new();
    for seed in 1..=20u64 {
        let set = SeriesSet::from_events(
            d("2022-01-01"),
            d("2025-06-30"),
            synthetic_events(seed, &outbreak),
        );
        let s = set.get("HFMD", "440305");
        let before = detect(&hfmd, "440305", &s, d("2025-01-01"), d("2025-06-19")).unwrap();
        quiet_days += 170;
        for (m, v) in alerts_by_method(&before) {
            *false_alarms.entry(m).or_default() += v.len();
        }
        let during = detect(&hfmd, "440305", &s, d("2025-06-20"), d("2025-06-26")).unwrap();
        let by = alerts_by_method(&during);
        for (m, _) in bounds {
            let first = by.get(m).and_then(|v| v.first().copied());
            if first.is_some_and(|f| f <= d("2025-06-23")) {
                *detected.entry(m).or_default() += 1;
            }
        }
    }
    // C1's baseline is the week just past: a ramping outbreak leaks into it within days, so
    // the mildest method misses some (measured: 17 of 20); the others catch every one.
    for (m, _) in bounds {
        let n = detected.get(m).copied().unwrap_or(0);
        let want = if m == "C1" { 15 } else { 20 };
        assert!(n >= want, "{m} caught {n} of 20 outbreaks within four days");
    }
    for (m, bound) in bounds {
        let rate = false_alarms.get(m).copied().unwrap_or(0) as f64 / quiet_days as f64;
        assert!(rate <= bound, "{m}: false alarm rate {rate:.4} > {bound}");
    }
}

#[test]
fn flat_series_raise_nothing() {
    let hfmd = hfmd_with_all_methods();
    for level in [0u32, 1, 5, 40] {
        let start = d("2021-01-01");
        let end = d("2025-12-31");
        let len = (end - start).num_days() as usize + 1;
        let s = DailySeries::from_counts(start, vec![level; len]);
        let alerts = detect(&hfmd, "440305", &s, start, end).unwrap();
        assert!(
            alerts.is_empty(),
            "level {level}: {:?}",
            alerts_by_method(&alerts)
        );
    }
}

fn sample_alert() -> Alert {
    // C2 on day 9 of the guard-band example in tests/methods.rs, dated so the baseline is
    // 2026-11-11..=2026-11-17 and the alert day 2026-11-20.
    let start = d("2026-11-11");
    let s = DailySeries::from_counts(start, vec![2, 4, 3, 5, 1, 3, 3, 20, 20, 7]);
    let params = EarsParams::new(EarsMethod::C2);
    let p = phip_surveillance::ears::ears(s.counts(), &params).unwrap()[0];
    let hfmd = SurveillanceConfig::builtin()
        .disease("HFMD")
        .unwrap()
        .label();
    Alert::from_ears(&hfmd, "110105", &s, &p, &params).unwrap()
}

#[test]
fn alert_explains_baseline_and_threshold() {
    let a = sample_alert();
    assert_eq!(a.method, AlertMethod::C2);
    assert_eq!(a.date, d("2026-11-20"));
    assert_eq!(a.identifier(), "HFMD-110105-2026-11-20-C2");
    assert_eq!(
        a.explanation(Lang::En),
        "C2: 7 cases of Hand, foot and mouth disease on 2026-11-20 in 110105 exceed the upper \
         bound 7.0 (baseline mean 3.0, sd 1.3 over 2026-11-11..2026-11-17, alpha 0.001)"
    );
    assert_eq!(
        a.explanation(Lang::Zh),
        "C2：2026-11-20 110105（朝阳区） 报告手足口病 7 例，超过预警上限 7.0（基线均值3.0，\
         标准差1.3，基线期2026-11-11至2026-11-17，α=0.001）"
    );
    // Round-trips through JSON (alerts are queued and stored by the caller).
    let back: Alert = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn alerts_are_valid_fhir_r4() {
    let hfmd = hfmd_with_all_methods();
    let set = SeriesSet::from_events(
        d("2022-01-01"),
        d("2025-06-30"),
        synthetic_events(7, &[4, 8, 12, 16, 20, 20, 16]),
    );
    let mut alerts = detect(
        &hfmd,
        "440305",
        &set.get("HFMD", "440305"),
        d("2025-06-20"),
        d("2025-06-26"),
    )
    .unwrap();
    alerts.push(sample_alert());
    let methods: std::collections::BTreeSet<_> = alerts.iter().map(|a| a.method.name()).collect();
    assert_eq!(methods.len(), 5, "every method's rendering is covered");
    for a in &alerts {
        let flag = a.to_flag("Location/county-440305");
        validate_resource(&flag).unwrap_or_else(|e| panic!("{flag:#}\n{e:?}"));
        assert_eq!(flag["status"], "active");
        assert_eq!(flag["subject"]["reference"], "Location/county-440305");
        assert_eq!(flag["period"]["start"], a.date.to_string());
        assert_eq!(flag["code"]["coding"][0]["code"], "B08.4");

        let comm = a.to_communication("Location/county-440305", Some("Flag/f1"));
        validate_resource(&comm).unwrap_or_else(|e| panic!("{comm:#}\n{e:?}"));
        assert_eq!(comm["payload"][0]["contentString"], a.explanation(Lang::En));
        assert_eq!(comm["payload"][1]["contentString"], a.explanation(Lang::Zh));
        assert_eq!(comm["about"][1]["reference"], "Flag/f1");
    }
    // A broken rendering would be caught: the validator rejects an unknown element.
    let mut flag = alerts[0].to_flag("Location/x");
    flag["explanation"] = Value::String("x".into());
    assert!(validate_resource(&flag).is_err());
}
