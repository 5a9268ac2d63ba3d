//! Helpers shared by the prescription, family-doctor and appointment workflows: searches
//! inside a write transaction, references, codings, statuses and FHIR dates.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use phip_engine::{FhirError, FhirResult};
use phip_fhir::search::query;
use phip_fhir::IssueType;
use phip_store::{PageCursor, SearchRequest, StoreError, StoredResource, Transaction};
use serde_json::Value;

/// The tag system naming the organisation that holds (wrote) a record.
pub(crate) const HOLDER_TAG_SYSTEM: &str = "urn:phip:holder";

/// Current resources of `resource_type` matching `params`, at most `limit`, as seen by the
/// transaction. On PostgreSQL a search inside a write transaction also serialises it with
/// every other write transaction running the same search, which is what makes the
/// search-then-write checks of the rules race-free.
pub(crate) fn search(
    tx: &mut dyn Transaction,
    resource_type: &str,
    params: &[(&str, String)],
    limit: usize,
) -> FhirResult<Vec<StoredResource>> {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    let parsed = query::parse(Some(resource_type), &owned, true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let page = tx.search(&SearchRequest {
        query: parsed.query,
        cursor: PageCursor::First,
        page_size: limit,
        access: phip_store::Access::Server,
    })?;
    Ok(page
        .matches
        .into_iter()
        .filter(|m| m.resource.is_some())
        .collect())
}

/// Every current resource of `resource_type` matching `params`, following the pages.
pub(crate) fn search_all(
    tx: &mut dyn Transaction,
    resource_type: &str,
    params: &[(&str, String)],
) -> FhirResult<Vec<StoredResource>> {
    const PAGE: usize = 500;
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    let parsed = query::parse(Some(resource_type), &owned, true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut found = Vec::new();
    let mut cursor = PageCursor::First;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: PAGE,
            access: phip_store::Access::Server,
        })?;
        found.extend(page.matches.into_iter().filter(|m| m.resource.is_some()));
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => return Ok(found),
        }
    }
}

/// The current, non-deleted version of a resource, if any.
pub(crate) fn read_live(
    tx: &mut dyn Transaction,
    resource_type: &str,
    id: &str,
) -> FhirResult<Option<StoredResource>> {
    Ok(tx.read(resource_type, id)?.filter(|s| !s.is_deleted()))
}

/// Writes `resource` as the next version of `stored`, failing with 409 and `on_conflict` if
/// somebody else wrote a version in between (the optimistic lock is what gives concurrent
/// claims on one resource exactly one winner on every backend).
pub(crate) fn write_next(
    tx: &mut dyn Transaction,
    stored: &StoredResource,
    resource: Value,
    on_conflict: &str,
) -> FhirResult<StoredResource> {
    tx.write(phip_store::WriteRequest {
        resource_type: stored.resource_type.clone(),
        id: stored.id.clone(),
        resource: Some(resource),
        expected_version: Some(stored.version_id),
    })
    .map_err(|e| match e {
        StoreError::VersionConflict { .. } => conflict(on_conflict),
        other => FhirError::from(other),
    })
}

/// The id of a reference to `resource_type` (`Type/id`, `Type/id/_history/n` or an
/// absolute URL ending so), or `None` for anything else.
pub(crate) fn reference_id(reference: &Value, resource_type: &str) -> Option<String> {
    let text = reference.get("reference")?.as_str()?;
    let segments: Vec<&str> = text.split('/').collect();
    let n = segments.len();
    if n >= 4 && segments[n - 2] == "_history" && segments[n - 4] == resource_type {
        return Some(segments[n - 3].to_owned());
    }
    (n >= 2 && segments[n - 2] == resource_type && !segments[n - 1].is_empty())
        .then(|| segments[n - 1].to_owned())
}

/// Whether a CodeableConcept (or an array of them) holds `system|code`.
pub(crate) fn has_coding(concepts: Option<&Value>, system: &str, code: &str) -> bool {
    let matches = |concept: &Value| {
        concept
            .get("coding")
            .and_then(Value::as_array)
            .is_some_and(|codings| {
                codings.iter().any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(system)
                        && c.get("code").and_then(Value::as_str) == Some(code)
                })
            })
    };
    match concepts {
        Some(Value::Array(items)) => items.iter().any(matches),
        Some(concept) => matches(concept),
        None => false,
    }
}

/// A resource's `status`.
pub(crate) fn status_of(resource: Option<&Value>) -> Option<&str> {
    resource?.get("status")?.as_str()
}

/// The organisation holding a record (from the tag the engine stamps at write).
pub(crate) fn holder_of(resource: &Value) -> Option<&str> {
    resource
        .get("meta")?
        .get("tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(HOLDER_TAG_SYSTEM))?
        .get("code")?
        .as_str()
}

/// The FHIR date or dateTime `text` as the instant it starts (a date is its midnight UTC).
pub(crate) fn instant_start(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let date = parse_partial_date(text)?;
    Some(Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN)))
}

/// The FHIR date or dateTime `text` as the last instant it covers: a date `2025-03-31` lasts
/// until the end of that day, so an end date means "valid through that day".
pub(crate) fn instant_end(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let next = parse_partial_date(text)?.checked_add_days(Days::new(1))?;
    Some(Utc.from_utc_datetime(&next.and_time(NaiveTime::MIN)))
}

/// The calendar date of a FHIR date or dateTime (as written, without time-zone shifting).
pub(crate) fn date_of(text: &str) -> Option<NaiveDate> {
    text.get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

fn parse_partial_date(text: &str) -> Option<NaiveDate> {
    match text.len() {
        10 => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
        _ => None,
    }
}

/// 409 Conflict with `diagnostics`.
pub(crate) fn conflict(diagnostics: impl Into<String>) -> FhirError {
    FhirError::new(409, IssueType::Conflict, diagnostics)
}

/// 422 Unprocessable Entity (a business rule) with `diagnostics`.
pub(crate) fn business(diagnostics: impl Into<String>) -> FhirError {
    FhirError::new(422, IssueType::BusinessRule, diagnostics)
}

/// 403 Forbidden with `diagnostics`.
pub(crate) fn forbidden(diagnostics: impl Into<String>) -> FhirError {
    FhirError::new(403, IssueType::Forbidden, diagnostics)
}

/// A copy of `resource` without the named top-level elements, for comparing what a write
/// changes.
pub(crate) fn without(resource: &Value, names: &[&str]) -> Value {
    let mut copy = resource.clone();
    if let Some(object) = copy.as_object_mut() {
        for name in names {
            object.remove(*name);
        }
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_resolve_local_versioned_and_absolute_forms() {
        let r = |s: &str| json!({ "reference": s });
        assert_eq!(reference_id(&r("Slot/a"), "Slot").as_deref(), Some("a"));
        assert_eq!(
            reference_id(&r("Slot/a/_history/3"), "Slot").as_deref(),
            Some("a")
        );
        assert_eq!(
            reference_id(&r("http://x/fhir/Slot/b"), "Slot").as_deref(),
            Some("b")
        );
        assert_eq!(reference_id(&r("Schedule/a"), "Slot"), None);
        assert_eq!(reference_id(&json!({"display": "x"}), "Slot"), None);
    }

    #[test]
    fn a_date_end_covers_the_whole_day() {
        let end = instant_end("2025-03-31").unwrap();
        assert_eq!(end, instant_start("2025-04-01").unwrap());
        assert_eq!(
            instant_end("2025-03-31T10:00:00+08:00").unwrap(),
            instant_start("2025-03-31T02:00:00Z").unwrap()
        );
        assert_eq!(instant_end("2025-03"), None);
    }
}
