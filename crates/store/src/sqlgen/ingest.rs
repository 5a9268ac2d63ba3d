//! Helpers of both backends' write paths that involve no SQL.

use chrono::{DateTime, SecondsFormat, Utc};
use phip_fhir::search::IndexEntry;
use serde_json::{Map, Value};

use crate::sqlite::Extractor;
use crate::{StoreError, StoreResult, WriteRequest};

fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}

/// The `meta.lastUpdated` text of an epoch-millisecond instant.
pub(crate) fn instant_text(ms: i64) -> StoreResult<String> {
    let t: DateTime<Utc> =
        DateTime::from_timestamp_millis(ms).ok_or_else(|| backend("timestamp out of range"))?;
    Ok(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Non-finite numbers are stored as NULL, so comparisons simply never match (as in SQLite).
pub(crate) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Sets `id`, `meta.versionId` and `meta.lastUpdated`, keeping `resourceType`, `id` and `meta`
/// first as FHIR JSON conventionally has them.
pub(crate) fn stamp(body: &mut Value, id: &str, version: i64, ts: i64) -> StoreResult<()> {
    let obj = body
        .as_object_mut()
        .ok_or_else(|| backend("a resource must be a JSON object"))?;
    let mut meta = match obj.shift_remove("meta") {
        Some(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(instant_text(ts)?));
    obj.shift_remove("id");
    let first = usize::from(obj.keys().next().is_some_and(|k| k == "resourceType"));
    obj.shift_insert(first, "id".into(), Value::String(id.to_owned()));
    obj.shift_insert(first + 1, "meta".into(), Value::Object(meta));
    Ok(())
}

/// Extracts the index entries of every request's resource on all cores (up to 8): extraction
/// is the CPU-bound part of a bulk load and needs no database.
pub(crate) fn extract_parallel(
    extractor: &Extractor,
    requests: &[WriteRequest],
) -> StoreResult<Vec<Option<Vec<IndexEntry>>>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let extract_one = |r: &WriteRequest| r.resource.as_ref().map(|body| extractor(body));
    if threads <= 1 || requests.len() < 64 {
        return Ok(requests.iter().map(extract_one).collect());
    }
    let chunk = requests.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(extract_one).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(requests.len());
        for handle in handles {
            out.extend(
                handle
                    .join()
                    .map_err(|_| backend("index extraction panicked"))?,
            );
        }
        Ok(out)
    })
}
