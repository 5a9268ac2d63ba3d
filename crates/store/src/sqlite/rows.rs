//! Loading stored versions into [`StoredResource`]s.

use rusqlite::{OptionalExtension, Row};
use serde_json::Value;

use super::error::backend;
use super::tx::SqliteTransaction;
use crate::sqlgen::ingest::from_millis;
use crate::{StoreResult, StoredResource};

/// The columns every resource-loading query selects, in this order, given aliases `ty` (types),
/// `v` (resource_versions).
pub(crate) const VERSION_COLUMNS: &str = "ty.name, r.id, v.version, v.last_updated, v.body";

/// A version row as read, before its body is parsed.
pub(crate) struct RawVersion {
    pub(crate) resource_type: String,
    pub(crate) id: String,
    pub(crate) version: i64,
    pub(crate) last_updated: i64,
    pub(crate) body: Option<String>,
}

impl RawVersion {
    /// Reads the [`VERSION_COLUMNS`] starting at column `at`.
    pub(crate) fn from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<RawVersion> {
        Ok(RawVersion {
            resource_type: row.get(at)?,
            id: row.get(at + 1)?,
            version: row.get(at + 2)?,
            last_updated: row.get(at + 3)?,
            body: row.get(at + 4)?,
        })
    }

    pub(crate) fn into_stored(self) -> StoreResult<StoredResource> {
        let resource = match self.body {
            Some(text) => Some(serde_json::from_str::<Value>(&text).map_err(|e| {
                backend(format!(
                    "stored body of {}/{} version {} is not JSON: {e}",
                    self.resource_type, self.id, self.version
                ))
            })?),
            None => None,
        };
        Ok(StoredResource {
            resource_type: self.resource_type,
            id: self.id,
            version_id: u64::try_from(self.version)
                .map_err(|_| backend("negative version number in database"))?,
            last_updated: from_millis(self.last_updated)?,
            resource,
        })
    }
}

pub(crate) fn read_current(
    tx: &mut SqliteTransaction<'_>,
    resource_type: &str,
    id: &str,
) -> StoreResult<Option<StoredResource>> {
    let Some(tid) = tx.type_id(resource_type)? else {
        return Ok(None);
    };
    let raw = tx
        .conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN types ty ON ty.tid = r.tid \
             JOIN resource_versions v ON v.seq = r.seq WHERE r.tid = ?1 AND r.id = ?2"
        ))?
        .query_row(rusqlite::params![tid, id], |row| {
            RawVersion::from_row(row, 0)
        })
        .optional()?;
    raw.map(RawVersion::into_stored).transpose()
}

pub(crate) fn read_version(
    tx: &mut SqliteTransaction<'_>,
    resource_type: &str,
    id: &str,
    version: u64,
) -> StoreResult<Option<StoredResource>> {
    let Some(tid) = tx.type_id(resource_type)? else {
        return Ok(None);
    };
    let Ok(version) = i64::try_from(version) else {
        return Ok(None);
    };
    let raw = tx
        .conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resources r JOIN types ty ON ty.tid = r.tid \
             JOIN resource_versions v ON v.rid = r.rid AND v.version = ?3 \
             WHERE r.tid = ?1 AND r.id = ?2"
        ))?
        .query_row(rusqlite::params![tid, id, version], |row| {
            RawVersion::from_row(row, 0)
        })
        .optional()?;
    raw.map(RawVersion::into_stored).transpose()
}

/// Loads the current versions of the given resources, in the order of `rids`.
pub(crate) fn load_current(
    tx: &SqliteTransaction<'_>,
    rids: &[i64],
) -> StoreResult<Vec<StoredResource>> {
    if rids.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(rids).map_err(|e| backend(e.to_string()))?;
    let mut stmt = tx.conn.prepare_cached(&format!(
        "SELECT r.rid, {VERSION_COLUMNS} FROM resources r JOIN types ty ON ty.tid = r.tid \
         JOIN resource_versions v ON v.seq = r.seq \
         WHERE r.rid IN (SELECT value FROM json_each(?1))"
    ))?;
    let mut by_rid = std::collections::HashMap::with_capacity(rids.len());
    let mut q = stmt.query([list])?;
    while let Some(row) = q.next()? {
        let rid: i64 = row.get(0)?;
        by_rid.insert(rid, RawVersion::from_row(row, 1)?);
    }
    rids.iter()
        .filter_map(|rid| by_rid.remove(rid))
        .map(RawVersion::into_stored)
        .collect()
}
