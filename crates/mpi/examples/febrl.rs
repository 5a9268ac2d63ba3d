//! Runs the FEBRL benchmark: `cargo run --release -p phip-mpi --example febrl [-- DIR]`.

use std::path::PathBuf;

use phip_mpi::febrl::{self, RunOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or("../shared/data/febrl".into()),
    );
    let options = RunOptions::default();
    let a = febrl::load(&dir.join("dataset4a.csv"))?;
    let b = febrl::load(&dir.join("dataset4b.csv"))?;
    let link = febrl::link(&a, &b, &options);
    let three = febrl::load(&dir.join("dataset3.csv"))?;
    let dedupe = febrl::dedupe(&three, &options);
    for e in [link, dedupe] {
        let mut v = serde_json::to_value(&e)?;
        if std::env::var_os("SHOW_MODEL").is_none() {
            v.as_object_mut().map(|o| o.remove("model"));
        }
        println!("{v}");
    }
    Ok(())
}
