//! EM recovers known parameters from synthetic comparison vectors; model scoring basics.

use phip_mpi::compare::{Field, Vector, FIELD_COUNT, MISSING};
use phip_mpi::model::{fit_em, probability, EmOptions, Model, Patterns};

/// Deterministic generator for the synthetic data.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick(&mut self, probs: &[f64]) -> u8 {
        let x = self.next_f64();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if x < acc {
                return i as u8;
            }
        }
        (probs.len() - 1) as u8
    }
}

#[test]
fn em_recovers_known_m_u_and_prior() {
    let truth = Model::default();
    // Only the first few fields are generated; the rest stay missing (no information).
    let used = [
        Field::FamilyName,
        Field::GivenName,
        Field::BirthDate,
        Field::Postcode,
        Field::Street,
    ];
    let mut truth = truth;
    // Distinct, well-separated true parameters.
    for f in truth.fields.iter_mut() {
        let n = f.m.len();
        f.m = (0..n)
            .map(|i| if i == 0 { 0.7 } else { 0.3 / (n - 1) as f64 })
            .collect();
        f.u = (0..n)
            .map(|i| {
                if i == n - 1 {
                    0.8
                } else {
                    0.2 / (n - 1) as f64
                }
            })
            .collect();
    }
    let lambda = 0.2;
    let mut rng = Rng(42);
    let mut patterns = Patterns::new();
    for _ in 0..200_000 {
        let is_match = rng.next_f64() < lambda;
        let mut v: Vector = [MISSING; FIELD_COUNT];
        for field in used {
            let p = &truth.fields[field as usize];
            v[field as usize] = rng.pick(if is_match { &p.m } else { &p.u });
        }
        // Some values missing at random.
        if rng.next_f64() < 0.1 {
            v[Field::Street as usize] = MISSING;
        }
        patterns.add(v);
    }
    let (fitted, report) = fit_em(&patterns, &Model::default(), &EmOptions::default());
    assert!(report.converged, "{report:?}");
    assert!(report.iterations > 1 && report.final_delta < 1e-6);
    assert!(
        (fitted.prior - lambda).abs() < 0.01,
        "prior {}",
        fitted.prior
    );
    for field in used {
        let (t, f) = (
            &truth.fields[field as usize],
            &fitted.fields[field as usize],
        );
        for l in 0..t.m.len() {
            assert!(
                (t.m[l] - f.m[l]).abs() < 0.02,
                "{field:?} m[{l}]: {} vs {}",
                t.m[l],
                f.m[l]
            );
            assert!(
                (t.u[l] - f.u[l]).abs() < 0.02,
                "{field:?} u[{l}]: {} vs {}",
                t.u[l],
                f.u[l]
            );
        }
    }
    // Unobserved fields keep their starting parameters.
    assert_eq!(
        fitted.fields[Field::Phone as usize],
        Model::default().fields[Field::Phone as usize]
    );
}

#[test]
fn weights_probability_and_breakdown() {
    let model = Model::default();
    let all_agree: Vector = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let all_differ: Vector = [5, 5, 4, 1, 2, 2, 3, 2, 2, 3];
    let nothing: Vector = [MISSING; FIELD_COUNT];
    assert!(model.probability(&all_agree) > 0.999);
    assert!(model.probability(&all_differ) < 1e-6);
    assert!(
        (model.probability(&nothing) - model.prior).abs() < 1e-12,
        "missing adds no weight"
    );
    assert_eq!(probability(0.0), 0.5);
    assert_eq!(probability(2000.0), 1.0);
    let b = model.breakdown(&all_agree);
    assert_eq!(b.len(), FIELD_COUNT);
    assert_eq!(b[0].label, "exact");
    assert!(b.iter().all(|s| s.weight > 0.0));
    let t = model.weight_table();
    assert!((t.weight(&all_differ) - model.weight(&all_differ)).abs() < 1e-9);
    // A model survives a serde round trip.
    let json = serde_json::to_string(&model).unwrap();
    assert_eq!(serde_json::from_str::<Model>(&json).unwrap(), model);
}
