//! Reading surveillance and indicator inputs out of the store: paged scans of one resource
//! type, and where a record "happens" geographically.
//!
//! Geography rule (used for case reports and for every regional indicator): a record counts in
//! the **residence of its patient** — the GB/T 2260 code in the patient's home address (the
//! first of `district`, `city`, `state` holding a valid six-digit code, else an address
//! extension valued with one; `use = home` addresses first) — because incidence and coverage
//! are rates over the resident population. When the patient has no coded address (or the
//! record names no patient), the record falls back to the division of the institution that
//! holds it: the `urn:phip:division` tag the engine stamps at write from the writer's token.
//! Records with neither are *unplaced*: counted and reported, never guessed.

use std::collections::HashMap;

use phip_engine::{FhirError, FhirResult};
use phip_fhir::search::query;
use phip_security::division;
use phip_store::{PageCursor, SearchRequest, Transaction};
use serde_json::Value;

/// The meta tag system naming the holding institution's division (see `phip_engine`'s
/// consent module, which stamps it).
pub const DIVISION_TAG_SYSTEM: &str = "urn:phip:division";

/// Page size of scans: large pages keep the per-page query overhead small.
const PAGE: usize = 1000;

/// Calls `each` on the current version of every `resource_type` resource matching the search
/// `params` (FHIR search syntax, parsed strictly), page by page inside `tx`. Returns how many
/// were visited.
pub fn scan(
    tx: &mut dyn Transaction,
    resource_type: &str,
    params: &[(String, String)],
    mut each: impl FnMut(&Value),
) -> FhirResult<u64> {
    let parsed = query::parse(Some(resource_type), params, true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut cursor = PageCursor::First;
    let mut seen = 0;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: PAGE,
            access: phip_store::Access::Server,
        })?;
        for stored in &page.matches {
            if let Some(resource) = &stored.resource {
                seen += 1;
                each(resource);
            }
        }
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => return Ok(seen),
        }
    }
}

/// The GB/T 2260 code of a Patient's residence (see the module documentation).
pub fn residence_division(patient: &Value) -> Option<String> {
    let addresses: Vec<&Value> = patient
        .get("address")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let is_home = |a: &&Value| a.get("use").and_then(Value::as_str) == Some("home");
    let ordered = addresses
        .iter()
        .filter(|a| is_home(a))
        .chain(addresses.iter().filter(|a| !is_home(a)));
    for address in ordered {
        for field in ["district", "city", "state"] {
            if let Some(code) = address.get(field).and_then(Value::as_str) {
                if division::is_valid_code(code) {
                    return Some(code.to_string());
                }
            }
        }
        let extensions = address.get("extension").and_then(Value::as_array);
        for ext in extensions.into_iter().flatten() {
            let value = ["valueCode", "valueString"]
                .iter()
                .find_map(|k| ext.get(*k).and_then(Value::as_str));
            if let Some(code) = value.filter(|c| division::is_valid_code(c)) {
                return Some(code.to_string());
            }
        }
    }
    None
}

/// The holding institution's division, from the record's `urn:phip:division` tag.
pub fn holder_division(resource: &Value) -> Option<&str> {
    resource
        .get("meta")?
        .get("tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(DIVISION_TAG_SYSTEM))?
        .get("code")?
        .as_str()
}

/// The id of the Patient a record is about: `subject`, `patient` or `for` (the first that is
/// a literal `Patient/{id}` reference; for `Contract`, the first subject that is one).
pub fn patient_id(resource: &Value) -> Option<&str> {
    ["subject", "patient", "for", "beneficiary"]
        .iter()
        .filter_map(|k| resource.get(*k))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .find_map(|r| {
            r.get("reference")
                .and_then(Value::as_str)?
                .strip_prefix("Patient/")
                .map(|id| id.split('/').next().unwrap_or(id))
        })
}

/// Every Patient's residence division, by Patient id.
#[derive(Debug, Clone, Default)]
pub struct Residences {
    by_patient: HashMap<String, Option<String>>,
}

impl Residences {
    /// Loads every Patient (one paged scan).
    pub fn load(tx: &mut dyn Transaction) -> FhirResult<Self> {
        let mut by_patient = HashMap::new();
        scan(tx, "Patient", &[], |p| {
            if let Some(id) = p.get("id").and_then(Value::as_str) {
                by_patient.insert(id.to_string(), residence_division(p));
            }
        })?;
        Ok(Self { by_patient })
    }

    /// Residences from explicit (patient id, division) pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, Option<String>)>>(pairs: I) -> Self {
        Self {
            by_patient: pairs.into_iter().collect(),
        }
    }

    /// The residence of Patient `id` (`None` when unknown or without a coded address).
    pub fn of_patient(&self, id: &str) -> Option<&str> {
        self.by_patient.get(id)?.as_deref()
    }

    /// Every patient id with its residence.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.by_patient
            .iter()
            .map(|(id, d)| (id.as_str(), d.as_deref()))
    }

    /// Where `resource` counts: its patient's residence, else its holder's division.
    pub fn place_of(&self, resource: &Value) -> Option<String> {
        patient_id(resource)
            .and_then(|id| self.of_patient(id))
            .or_else(|| holder_division(resource))
            .map(str::to_string)
    }
}
