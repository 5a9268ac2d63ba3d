//! Blocking recall, training and linking on the committed FEBRL4 sample.

use std::path::PathBuf;

use phip_mpi::febrl::{self, FebrlRow, RunOptions};
use phip_mpi::{train, IndexConfig, MatchIndex, MatchRecord, Model, TrainOptions};

fn sample(name: &str) -> Vec<FebrlRow> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/mpi")
        .join(name);
    febrl::load(&path).unwrap()
}

#[test]
fn blocking_finds_nearly_every_true_pair() {
    let (a, b) = (
        sample("febrl4a_sample.csv.gz"),
        sample("febrl4b_sample.csv.gz"),
    );
    assert_eq!((a.len(), b.len()), (500, 500));
    let mut index = MatchIndex::new(
        Model::default(),
        IndexConfig {
            min_probability: 0.0,
            ..IndexConfig::default()
        },
    );
    for r in &a {
        index.insert(&r.entity, r.to_record());
    }
    assert_eq!(index.len(), 500);
    let mut found = 0;
    let mut candidates = 0;
    for r in &b {
        let c = index.candidates(&r.to_record());
        candidates += c.len();
        if c.iter().any(|c| c.id == r.entity) {
            found += 1;
        }
    }
    assert!(found >= 497, "blocking recall {found}/500");
    // Far fewer comparisons than all pairs (250,000).
    assert!(candidates < 5_000, "{candidates} candidates");
}

#[test]
fn training_converges_and_links_the_sample() {
    let (a, b) = (
        sample("febrl4a_sample.csv.gz"),
        sample("febrl4b_sample.csv.gz"),
    );
    let records: Vec<MatchRecord> = a.iter().chain(&b).map(FebrlRow::to_record).collect();
    let (model, report) = train(&records, &TrainOptions::default());
    assert!(report.em.converged, "{report:?}");
    assert!(report.blocked_pairs > 500);
    // The learned weights make sense: agreement is evidence for, disagreement against.
    // (u is fitted on blocked pairs, which agree on names or birth dates by construction, so
    // agreement on those fields is weaker evidence here than among random pairs.)
    for f in &model.fields[..3] {
        assert!(f.weight(0) > 0.0, "{:?} {}", f.field, f.weight(0));
        let last = (f.m.len() - 1) as u8;
        assert!(f.weight(last) < -1.0, "{:?} {}", f.field, f.weight(last));
    }
    let e = febrl::link(
        &a,
        &b,
        &RunOptions {
            threads: 2,
            ..RunOptions::default()
        },
    );
    assert!(e.em.converged);
    assert_eq!(e.true_pairs, 500);
    assert_eq!(e.false_links, 0, "{e:?}");
    assert!(e.true_links >= 495, "{e:?}");
    let d = febrl::dedupe(
        &a.iter().chain(&b).cloned().collect::<Vec<_>>(),
        &RunOptions::default(),
    );
    assert_eq!(d.true_pairs, 500);
    assert!(d.f1 > 0.98, "{d:?}");
}

#[test]
fn csv_errors_are_reported() {
    assert!(febrl::parse_csv("h\nrec-1-org, a, b\n").is_err());
    let ok =
        febrl::parse_csv("h\nrec-7-dup-0, a, b, 1, s, , sub, 2000, nsw, 19800101, 123\n").unwrap();
    assert_eq!(ok[0].entity, "7");
    assert_eq!(ok[0].fields[0], "a");
}
