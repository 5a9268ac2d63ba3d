//! Business collaboration between institutions, on top of the FHIR engine.
//!
//! Each workflow is plain FHIR resources (Task, ServiceRequest, MedicationRequest, Slot, …)
//! plus the rules that keep them consistent however a client writes them: the rules are
//! [`phip_engine::WriteRule`]s checked inside the write's own transaction, and the
//! operations are functions over [`phip_engine::Engine`] that the HTTP layer exposes.

pub mod appointment;
pub mod contract;
mod lookup;
pub mod prescription;

use std::sync::Arc;

use phip_engine::Engine;

pub mod recognition;
pub mod referral;

/// Registers every workflow rule with `engine`. Call it once, before the engine is shared.
pub fn install(engine: &mut Engine) {
    engine.add_write_rule(Arc::new(referral::ReferralRule::default()));
    engine.add_write_rule(Arc::new(recognition::OrderAdvisoryRule::default()));
    engine.add_write_rule(Arc::new(prescription::PrescriptionRule));
    engine.add_write_rule(Arc::new(prescription::DispenseRule));
    engine.add_write_rule(Arc::new(contract::ContractRule));
    engine.add_write_rule(Arc::new(appointment::BookingRule));
}
