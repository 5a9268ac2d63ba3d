//! Helpers of both backends' write paths that involve no SQL: timestamps, stamping a body,
//! numbering index rows and parallel index extraction.

use chrono::{DateTime, SecondsFormat, Utc};
use phip_fhir::search::{IndexEntry, IndexValue};
use serde_json::{Map, Value};

use crate::sqlite::Extractor;
use crate::{StoreError, StoreResult, WriteRequest};

fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}

/// Parameters that map onto columns of `resources` and need no index rows.
const COLUMN_PARAMS: &[&str] = &["_id", "_lastUpdated"];

/// Epoch milliseconds to a UTC instant.
pub(crate) fn from_millis(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| backend("timestamp out of range"))
}

/// The `meta.lastUpdated` text of an epoch-millisecond instant.
pub(crate) fn instant_text(ms: i64) -> StoreResult<String> {
    Ok(from_millis(ms)?.to_rfc3339_opts(SecondsFormat::Millis, true))
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

/// Numbers the index rows of one resource's entries as both backends store them: `n = 1…` in
/// entry order, [`COLUMN_PARAMS`] skipped, each part of a composite a row of parameter
/// `code#i` with the composite's occurrence as `grp = 1…`. `param_id` resolves a parameter
/// code (looked up once per run of equal codes, as entries come grouped by parameter) and
/// `row` receives `(n, pid, grp, value)`; both get `sink` to work on.
pub(crate) fn index_rows<S: ?Sized>(
    sink: &mut S,
    entries: &[IndexEntry],
    mut param_id: impl FnMut(&mut S, &str) -> StoreResult<i64>,
    mut row: impl FnMut(&mut S, i64, i64, Option<i64>, &IndexValue) -> StoreResult<()>,
) -> StoreResult<()> {
    let mut grp = 0_i64;
    let mut n = 0_i64;
    let mut last_param: Option<(&str, i64)> = None;
    for entry in entries {
        if COLUMN_PARAMS.contains(&entry.param.as_str()) {
            continue;
        }
        match &entry.value {
            IndexValue::Composite(parts) => {
                grp += 1;
                for (i, part) in parts.iter().enumerate() {
                    let pid = param_id(sink, &format!("{}#{i}", entry.param))?;
                    n += 1;
                    row(sink, n, pid, Some(grp), part)?;
                }
            }
            value => {
                let pid = match last_param {
                    Some((code, pid)) if code == entry.param => pid,
                    _ => {
                        let pid = param_id(sink, &entry.param)?;
                        last_param = Some((&entry.param, pid));
                        pid
                    }
                };
                n += 1;
                row(sink, n, pid, None, value)?;
            }
        }
    }
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
