//! A Patient write must not hold a database connection while the patient index loads.
//!
//! The index is loaded from the store on first use, through a connection of its own. A writer
//! that took its connection before asking for the index needed a second one; with many first
//! writes at once every connection of the pool was held by a writer waiting for the load, and
//! all stalled until the pool's 30-s acquire timeout answered 503 (seen on CI as ten concurrent
//! conditional creates of a Patient). A pool of one connection makes the order visible
//! deterministically: the first write succeeds only if the index is loaded before the write
//! transaction takes the connection.

use std::time::Instant;

use phip_engine::{Engine, EngineConfig, Principal, RequestContext};
use phip_store::{open_store, StoreConfig};
use serde_json::json;

#[test]
fn the_first_patient_write_loads_the_index_before_taking_a_connection() {
    let Some(cluster) = phip_testkit::PgCluster::shared() else {
        return;
    };
    let store = open_store(&StoreConfig::Postgres {
        url: cluster.fresh_database(),
        pool_size: 1,
    })
    .expect("store");
    let engine = Engine::new(store, EngineConfig::default());
    let ctx = RequestContext::new("http://localhost/fhir", Principal::unrestricted("test"));
    for n in 0..3 {
        let started = Instant::now();
        let patient = json!({"resourceType": "Patient",
            "name": [{"family": format!("Writer{n}")}], "birthDate": "1950-01-01"});
        let status = match engine.create(&ctx, "Patient", patient, None) {
            Ok(response) => response.status,
            Err(error) => error.status,
        };
        assert_eq!(status, 201, "write {n} (after {:?})", started.elapsed());
    }
}
