//! Throughput of the daily surveillance run: `cargo bench -p phip-surveillance`.
//!
//! Synthetic data: 1,000 counties (GB/T 2260 shaped codes in 10 provinces) × the four built-in
//! diseases, Poisson daily counts (mean 0.5–8) over 2022-01-01..=2025-06-30. Times building the
//! series from case events, rolling them up, and the daily detection run (every configured
//! method of every disease in every county for one day, plus CUSUM over the whole history).

use std::time::Instant;

use chrono::NaiveDate;
use phip_surveillance::{detect, CaseEvent, RollUp, SeriesSet, SurveillanceConfig};

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
    fn poisson(&mut self, lambda: f64) -> u32 {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= self.uniform();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}

fn main() {
    let cfg = SurveillanceConfig::builtin();
    let start: NaiveDate = "2022-01-01".parse().unwrap();
    let end: NaiveDate = "2025-06-30".parse().unwrap();
    let counties: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "{:02}{:02}{:02}",
                11 + i / 100,
                1 + (i / 10) % 10,
                1 + i % 10
            )
        })
        .collect();
    let mut rng = Rng(42);
    let mut events = Vec::new();
    for c in &counties {
        for d in &cfg.diseases {
            let lambda = 0.5 + 7.5 * rng.uniform();
            for day in start.iter_days().take_while(|x| *x <= end) {
                for _ in 0..rng.poisson(lambda) {
                    events.push(CaseEvent {
                        date: day,
                        division: c.clone(),
                        disease: d.id.clone(),
                    });
                }
            }
        }
    }
    let n_events = events.len();

    let t = Instant::now();
    let set = SeriesSet::from_events(start, end, events);
    let build = t.elapsed();

    let t = Instant::now();
    let pref = set.roll_up(RollUp::Prefecture);
    let prov = set.roll_up(RollUp::Province);
    let roll = t.elapsed();

    let t = Instant::now();
    let mut alerts = 0;
    for (key, series) in set.iter() {
        if let Some(d) = cfg.disease(&key.disease) {
            alerts += detect(d, &key.division, series, end, end).unwrap().len();
        }
    }
    let daily = t.elapsed();

    println!("events                 {n_events}");
    println!("series (county)        {}", set.len());
    println!(
        "build series           {build:.2?} ({:.1} M events/s)",
        n_events as f64 / build.as_secs_f64() / 1e6
    );
    println!(
        "roll-up (pref + prov)  {roll:.2?} ({} + {} series)",
        pref.len(),
        prov.len()
    );
    println!(
        "daily detection run    {daily:.2?} ({} series, {alerts} alerts, {:.1} µs/series)",
        set.len(),
        daily.as_secs_f64() * 1e6 / set.len() as f64
    );
}
