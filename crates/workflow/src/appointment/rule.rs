//! The booking rule.

use chrono::{DateTime, Utc};
use phip_engine::{FhirResult, RuleContext, WriteRule};
use phip_store::{StoredResource, Transaction, WriteRequest};
use serde_json::{json, Value};

use super::HOLDING;
use crate::lookup::{self, business, conflict};

/// Keeps slots and appointments consistent:
/// - an Appointment in a holding status (pending, booked, arrived, checked-in, fulfilled)
///   takes each new slot it names: the slot must exist, be `free` and be held by no other
///   appointment, and becomes `busy` in the same transaction (409 otherwise, including when
///   a concurrent booking took it first), and the appointment's stated `start`/`end` must
///   lie within the slot (422);
/// - an Appointment leaving its slots (cancelled, entered-in-error, another slot, deleted)
///   frees them;
/// - a Slot held by an active appointment cannot be made free, changed to another status or
///   deleted by a client.
#[derive(Debug, Default)]
pub struct BookingRule;

impl WriteRule for BookingRule {
    fn name(&self) -> &str {
        "slot-booking"
    }

    fn applies_to(&self, resource_type: &str) -> bool {
        resource_type == "Appointment" || resource_type == "Slot"
    }

    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()> {
        if request.resource_type == "Slot" {
            return check_slot_write(context, request);
        }
        let held_before = context
            .current
            .as_ref()
            .and_then(|c| c.resource.as_ref())
            .map(held_slots)
            .unwrap_or_default();
        let held_after = request
            .resource
            .as_ref()
            .map(held_slots)
            .unwrap_or_default();
        for slot in held_after.iter().filter(|s| !held_before.contains(s)) {
            let times = request.resource.as_ref().map(times_of).unwrap_or_default();
            take(context.tx, slot, &request.id, times)?;
        }
        for slot in held_before.iter().filter(|s| !held_after.contains(s)) {
            give_back(context.tx, slot, &request.id)?;
        }
        Ok(())
    }
}

/// The slots an appointment holds: those it names while in a holding status.
fn held_slots(appointment: &Value) -> Vec<String> {
    if !lookup::status_of(Some(appointment)).is_some_and(|s| HOLDING.contains(&s)) {
        return Vec::new();
    }
    let mut slots: Vec<String> = appointment
        .get("slot")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| lookup::reference_id(r, "Slot"))
                .collect()
        })
        .unwrap_or_default();
    slots.sort();
    slots.dedup();
    slots
}

/// Other appointments holding `slot` (the search also serialises concurrent bookings of the
/// slot on PostgreSQL; the slot's version check settles any that still overlap).
fn holders(tx: &mut dyn Transaction, slot: &str, except: &str) -> FhirResult<Vec<StoredResource>> {
    let found = lookup::search(
        tx,
        "Appointment",
        &[
            ("slot", format!("Slot/{slot}")),
            ("status", HOLDING.join(",")),
        ],
        10,
    )?;
    Ok(found.into_iter().filter(|a| a.id != except).collect())
}

/// An instant element (`start`, `end`) of a resource, as written and parsed.
type Instant = Option<(String, DateTime<Utc>)>;

/// The `start` and `end` of an appointment or slot.
fn times_of(resource: &Value) -> (Instant, Instant) {
    let get = |name: &str| {
        let text = resource.get(name)?.as_str()?;
        Some((text.to_owned(), lookup::instant_start(text)?))
    };
    (get("start"), get("end"))
}

/// Refuses an appointment whose stated times fall outside the slot it books.
fn check_within(
    slot: &str,
    slot_resource: &Value,
    appointment: (Instant, Instant),
) -> FhirResult<()> {
    let (slot_start, slot_end) = times_of(slot_resource);
    let (start, end) = appointment;
    let outside = |t: &Option<(String, DateTime<Utc>)>| {
        t.as_ref().is_some_and(|(_, at)| {
            slot_start.as_ref().is_some_and(|(_, s)| at < s)
                || slot_end.as_ref().is_some_and(|(_, e)| at > e)
        })
    };
    if outside(&start) || outside(&end) {
        let show = |t: &Option<(String, DateTime<Utc>)>| {
            t.as_ref().map_or("?", |(s, _)| s.as_str()).to_owned()
        };
        return Err(business(format!(
            "the appointment ({}–{}) lies outside Slot/{slot} ({}–{})",
            show(&start),
            show(&end),
            show(&slot_start),
            show(&slot_end)
        )));
    }
    Ok(())
}

fn take(
    tx: &mut dyn Transaction,
    slot: &str,
    appointment: &str,
    times: (Instant, Instant),
) -> FhirResult<()> {
    let stored = lookup::read_live(tx, "Slot", slot)?
        .ok_or_else(|| business(format!("Slot/{slot} is not known")))?;
    let Some(resource) = stored.resource.clone() else {
        return Ok(());
    };
    let status = lookup::status_of(Some(&resource)).unwrap_or("unknown");
    if status != "free" {
        return Err(conflict(format!(
            "Slot/{slot} is {status}, not free: it cannot be booked"
        )));
    }
    if let Some(other) = holders(tx, slot, appointment)?.first() {
        return Err(conflict(format!(
            "Slot/{slot} is already booked by Appointment/{}",
            other.id
        )));
    }
    check_within(slot, &resource, times)?;
    let mut busy = resource;
    busy["status"] = json!("busy");
    lookup::write_next(
        tx,
        &stored,
        busy,
        &format!("Slot/{slot} was booked concurrently by another appointment"),
    )?;
    Ok(())
}

fn give_back(tx: &mut dyn Transaction, slot: &str, appointment: &str) -> FhirResult<()> {
    let Some(stored) = lookup::read_live(tx, "Slot", slot)? else {
        return Ok(());
    };
    let Some(resource) = stored.resource.clone() else {
        return Ok(());
    };
    if lookup::status_of(Some(&resource)) != Some("busy")
        || !holders(tx, slot, appointment)?.is_empty()
    {
        return Ok(());
    }
    let mut free = resource;
    free["status"] = json!("free");
    lookup::write_next(
        tx,
        &stored,
        free,
        &format!("Slot/{slot} changed while it was being freed; retry"),
    )?;
    Ok(())
}

/// A client write of a Slot: refused when it would free (or delete) a slot an active
/// appointment holds.
fn check_slot_write(context: &mut RuleContext<'_>, request: &WriteRequest) -> FhirResult<()> {
    let was_busy = context
        .current
        .as_ref()
        .and_then(|c| c.resource.as_ref())
        .is_some_and(|r| lookup::status_of(Some(r)) == Some("busy"));
    let stays_busy = request
        .resource
        .as_ref()
        .is_some_and(|r| lookup::status_of(Some(r)) == Some("busy"));
    if !was_busy || stays_busy {
        return Ok(());
    }
    if let Some(holder) = holders(context.tx, &request.id, "")?.first() {
        return Err(conflict(format!(
            "Slot/{} is held by Appointment/{}; cancel the appointment to free it",
            request.id, holder.id
        )));
    }
    Ok(())
}
