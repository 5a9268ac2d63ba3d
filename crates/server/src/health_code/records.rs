//! What the health code service keeps and looks up in the store: the person a Patient id
//! stands for, who may manage their code, and the revocation records
//! (`Basic/health-code-{person}`).

use chrono::DateTime;
use phip_engine::{Decision, Engine, FhirError, FhirResult, Principal};
use phip_fhir::search::query;
use phip_fhir::IssueType;
use phip_security::scope::{Access, Interaction, ScopeContext};
use phip_store::{PageCursor, SearchRequest, Transaction, WriteRequest};
use serde_json::{json, Value};

use super::{instant, now, HEALTH_CODE_SYSTEM};

const REVOCATION_CODE: &str = "revocation";
const REVOKED_BEFORE_URL: &str =
    "https://phip.cn/fhir/StructureDefinition/health-code-revoked-before";
/// The internal principal that writes revocation records on behalf of the server.
const SERVER_PRINCIPAL: &str = "phip health-code service";

/// The resident's person (golden record id) and golden record body.
pub(super) struct Person {
    pub(super) id: String,
    pub(super) golden: Value,
}

/// Resolves a Patient id (source or golden) to its person, failing when the record is
/// missing, deleted, merged away or not in the patient index.
pub(super) fn person_of(engine: &Engine, patient_id: &str) -> FhirResult<Person> {
    let mut tx = engine.store().begin_read()?;
    let stored = tx
        .read("Patient", patient_id)?
        .ok_or_else(|| FhirError::not_found(format!("Patient/{patient_id} is not known")))?;
    let body = stored
        .resource
        .ok_or_else(|| FhirError::gone(format!("Patient/{patient_id} was deleted")))?;
    let person_id = if phip_engine::mpi::is_golden(&body) {
        patient_id.to_owned()
    } else {
        engine.mpi()?.golden_of(patient_id).ok_or_else(|| {
            FhirError::new(
                422,
                IssueType::BusinessRule,
                format!(
                    "Patient/{patient_id} is not linked to a master record in the patient index"
                ),
            )
        })?
    };
    let golden = if person_id == patient_id {
        body
    } else {
        tx.read("Patient", &person_id)?
            .and_then(|s| s.resource)
            .ok_or_else(|| FhirError::gone(format!("master record Patient/{person_id} is gone")))?
    };
    if golden.get("active").and_then(Value::as_bool) == Some(false) {
        return Err(FhirError::new(
            422,
            IssueType::BusinessRule,
            format!("master record Patient/{person_id} was merged into another; use the surviving record"),
        ));
    }
    Ok(Person {
        id: person_id,
        golden,
    })
}

/// Whether `principal` may issue or revoke the code of `patient_id` (whose person is
/// `person`): the resident themself (a `patient/` grant for any of the person's records) or
/// an operator with a `system/` grant on Patient. Clinicians' `user/` grants do not
/// suffice: a code stands for the resident, so only they or the platform hand it out.
pub(super) fn may_manage(
    engine: &Engine,
    principal: &Principal,
    patient_id: &str,
    person: &str,
) -> bool {
    let Some(scopes) = &principal.scopes else {
        return true;
    };
    if scopes.access(ScopeContext::System, "Patient", Interaction::Read) == Access::Full {
        return true;
    }
    match principal.decide("Patient", Interaction::Read) {
        Decision::PatientCompartment(own) => {
            own == patient_id
                || own == person
                || engine.mpi().ok().and_then(|m| m.golden_of(&own)).as_deref() == Some(person)
        }
        _ => false,
    }
}

/// 403 when the token grants no Patient read at all; 404 when the record does not exist or
/// the caller cannot see it (the same answer, docs/security.md) — before anything is said
/// about who may manage the resident's code.
pub(super) fn require_visible_patient(
    engine: &Engine,
    principal: &Principal,
    patient_id: &str,
) -> FhirResult<()> {
    principal.require("Patient", Interaction::Read)?;
    let mut tx = engine.store().begin_read()?;
    if principal.can_see(tx.as_mut(), "Patient", patient_id)? {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "Patient/{patient_id} is not known"
        )))
    }
}

pub(super) fn forbidden_for(patient_id: &str) -> FhirError {
    FhirError::new(
        403,
        IssueType::Forbidden,
        format!(
            "only the resident or an operator with a system/ Patient grant may manage the health code of Patient/{patient_id}"
        ),
    )
}

fn revocation_id(person: &str) -> String {
    let id = format!("health-code-{person}");
    if id.len() <= 64 {
        return id;
    }
    // FHIR ids are at most 64 characters; a long person id is hashed instead.
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(person.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("health-code-{hex}")
}

/// Kind of server-owned state a revocation record is.
const REVOCATION_KIND: &str = "health-code-revocation";

/// `revoked before` (seconds) of one revocation record — only of one the server wrote: a
/// record a client made up at the same id cannot revoke anybody's code.
fn revoked_before(record: &Value) -> Option<i64> {
    if phip_fhir::access::server_owned_kind(record) != Some(REVOCATION_KIND) {
        return None;
    }
    record
        .get("extension")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(REVOKED_BEFORE_URL))?
        .get("valueInstant")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
}

pub(super) fn person_revoked_before(
    tx: &mut dyn Transaction,
    person: &str,
) -> FhirResult<Option<i64>> {
    Ok(tx
        .read("Basic", &revocation_id(person))?
        .and_then(|s| s.resource)
        .as_ref()
        .and_then(revoked_before))
}

/// Records that every code of `person` issued before `before` is revoked. Two revocations of
/// one person racing each other both succeed: the loser of the version check retries.
pub(super) fn record_revocation(engine: &Engine, person: &str, before: i64) -> FhirResult<u64> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match write_revocation(engine, person, before) {
            Err(e) if matches!(e.status, 409 | 412) && attempts < 5 => continue,
            other => return other,
        }
    }
}

fn write_revocation(engine: &Engine, person: &str, before: i64) -> FhirResult<u64> {
    let principal = Principal::unrestricted(SERVER_PRINCIPAL);
    engine.write_transaction(&principal, |tx| {
        let id = revocation_id(person);
        let current = tx.read("Basic", &id)?;
        let version = current.as_ref().map_or(0, |s| s.version_id);
        let mut body = json!({
            "resourceType": "Basic",
            "id": id,
            "code": {"coding": [{
                "system": HEALTH_CODE_SYSTEM,
                "code": REVOCATION_CODE,
                "display": "Electronic health code revocation"
            }]},
            "subject": {"reference": format!("Patient/{person}")},
            "created": instant(now()).get(..10).unwrap_or_default(),
            "extension": [{"url": REVOKED_BEFORE_URL, "valueInstant": instant(before)}]
        });
        phip_fhir::access::mark_server_owned(&mut body, REVOCATION_KIND);
        let stored = tx.write(WriteRequest {
            resource_type: "Basic".into(),
            id,
            resource: Some(body),
            expected_version: Some(version),
        })?;
        Ok(stored.version_id)
    })
}

/// Every revocation: (person, revoked before), and the CRL counter (the sum of the records'
/// versions, which grows with every revocation).
pub(super) fn all_revocations(engine: &Engine) -> FhirResult<(Vec<(String, i64)>, u64)> {
    let mut tx = engine.store().begin_read()?;
    let parsed = query::parse(
        Some("Basic"),
        &[(
            "code".to_owned(),
            format!("{HEALTH_CODE_SYSTEM}|{REVOCATION_CODE}"),
        )],
        true,
    )
    .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut cursor = PageCursor::First;
    let mut out = Vec::new();
    let mut counter = 0u64;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 1000,
            access: phip_store::Access::Server,
        })?;
        for stored in &page.matches {
            let Some(body) = &stored.resource else {
                continue;
            };
            let person = body
                .pointer("/subject/reference")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Patient/"));
            if let (Some(person), Some(before)) = (person, revoked_before(body)) {
                out.push((person.to_owned(), before));
                counter += stored.version_id;
            }
        }
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => break,
        }
    }
    Ok((out, counter))
}
