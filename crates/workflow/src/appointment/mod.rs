//! Appointments for online follow-up and re-examination, without double booking.
//!
//! A practitioner's `Schedule` offers `Slot`s; a booking is an `Appointment` naming its slot.
//! [`BookingRule`] makes a booking take the slot (`free` → `busy`) in the booking's own
//! transaction, guarded by the slot's version, so of several concurrent bookings of one slot
//! exactly one succeeds; cancelling the appointment frees the slot again. No client write can
//! free a slot an active appointment holds.

mod rule;

pub use rule::BookingRule;

/// Appointment statuses that hold their slots.
pub const HOLDING: &[&str] = &["pending", "booked", "arrived", "checked-in", "fulfilled"];
/// Appointment statuses that give their slots back.
pub const RELEASING: &[&str] = &["cancelled", "entered-in-error"];
