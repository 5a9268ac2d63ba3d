//! The write path: versions, the current-version row and the search index rows.

use chrono::Utc;
use phip_fhir::search::{IndexEntry, IndexValue};
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::error::backend;
use super::tx::SqliteTransaction;
use super::SqliteStore;
use crate::sqlgen::ingest::{self, extract_parallel, finite, from_millis, stamp};
use crate::sqlgen::{access, INDEX_TABLES};
use crate::{StoreError, StoreResult, StoredResource, WriteRequest};

struct Current {
    rid: i64,
    version: i64,
    last_updated: i64,
    deleted: bool,
}

impl SqliteTransaction<'_> {
    /// Writes one version. `entries` replaces extraction when given (bulk pre-extraction and the
    /// test seam).
    pub(crate) fn write_entries(
        &mut self,
        request: WriteRequest,
        entries: Option<Vec<IndexEntry>>,
    ) -> StoreResult<StoredResource> {
        if !self.is_writer() {
            return Err(backend("write in a read-only transaction"));
        }
        let store = self.store;
        let tid = self.ensure_type(&request.resource_type)?;
        let current = self
            .conn
            .prepare_cached(
                "SELECT rid, version, last_updated, deleted FROM resources \
                 WHERE tid = ?1 AND id = ?2",
            )?
            .query_row(params![tid, request.id], |r| {
                Ok(Current {
                    rid: r.get(0)?,
                    version: r.get(1)?,
                    last_updated: r.get(2)?,
                    deleted: r.get(3)?,
                })
            })
            .optional()?;
        let current_version = current.as_ref().map_or(0, |c| c.version as u64);
        if let Some(expected) = request.expected_version {
            if expected != current_version {
                return Err(StoreError::VersionConflict {
                    expected,
                    current: current_version,
                });
            }
        }

        let Some(mut body) = request.resource else {
            return self.delete(request.resource_type, request.id, current);
        };
        match body.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == request.resource_type => {}
            other => {
                return Err(backend(format!(
                    "resourceType {other:?} does not match the written type {}",
                    request.resource_type
                )))
            }
        }
        let ts = self.timestamp()?;
        let version = current.as_ref().map_or(1, |c| c.version + 1);
        stamp(&mut body, &request.id, version, ts)?;
        let text = serde_json::to_string(&body).map_err(|e| backend(e.to_string()))?;
        let entries = match entries {
            Some(e) => e,
            None => (store.extractor)(&body),
        };
        let seq = self.next_seq()?;
        let rid = match &current {
            Some(c) => {
                self.conn
                    .prepare_cached(
                        "UPDATE resources SET version = ?2, last_updated = ?3, deleted = 0, \
                         seq = ?4 WHERE rid = ?1",
                    )?
                    .execute(params![c.rid, version, ts, seq])?;
                if !c.deleted {
                    self.delete_index_rows(c.rid)?;
                }
                c.rid
            }
            None => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO resources(tid, id, version, last_updated, deleted, seq) \
                         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    )?
                    .execute(params![tid, request.id, version, ts, seq])?;
                self.conn.last_insert_rowid()
            }
        };
        self.conn
            .prepare_cached(
                "INSERT INTO resource_versions(seq, rid, tid, version, last_updated, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![seq, rid, tid, version, ts, text])?;
        self.insert_index_rows(tid, rid, &entries)?;
        self.write_access_labels(rid, &body, &entries)?;
        Ok(StoredResource {
            resource_type: request.resource_type,
            id: request.id,
            version_id: version as u64,
            last_updated: from_millis(ts)?,
            resource: Some(body),
        })
    }

    /// Records a deletion. Deleting what does not exist or is already deleted writes nothing
    /// and returns the current state (version 0 for a resource that never existed).
    fn delete(
        &mut self,
        resource_type: String,
        id: String,
        current: Option<Current>,
    ) -> StoreResult<StoredResource> {
        let c = match current {
            Some(c) if !c.deleted => c,
            Some(c) => {
                return Ok(StoredResource {
                    resource_type,
                    id,
                    version_id: c.version as u64,
                    last_updated: from_millis(c.last_updated)?,
                    resource: None,
                })
            }
            None => {
                return Ok(StoredResource {
                    resource_type,
                    id,
                    version_id: 0,
                    last_updated: Utc::now(),
                    resource: None,
                })
            }
        };
        let ts = self.timestamp()?;
        let seq = self.next_seq()?;
        let version = c.version + 1;
        self.conn
            .prepare_cached(
                "UPDATE resources SET version = ?2, last_updated = ?3, deleted = 1, seq = ?4 \
                 WHERE rid = ?1",
            )?
            .execute(params![c.rid, version, ts, seq])?;
        self.conn
            .prepare_cached(
                "INSERT INTO resource_versions(seq, rid, tid, version, last_updated, body) \
                 SELECT ?1, rid, tid, ?2, ?3, NULL FROM resources WHERE rid = ?4",
            )?
            .execute(params![seq, version, ts, c.rid])?;
        self.delete_index_rows(c.rid)?;
        // The labels stay (the history of a deleted record is governed by its last content);
        // a deleted Consent no longer decides anything.
        self.conn
            .prepare_cached("DELETE FROM consent_rule WHERE consent_rid = ?1")?
            .execute([c.rid])?;
        Ok(StoredResource {
            resource_type,
            id,
            version_id: version as u64,
            last_updated: from_millis(ts)?,
            resource: None,
        })
    }

    /// Replaces the access labels of `rid` with those of its new content (see
    /// `crate::sqlgen::access` for how queries read them).
    pub(crate) fn write_access_labels(
        &mut self,
        rid: i64,
        body: &Value,
        entries: &[IndexEntry],
    ) -> StoreResult<()> {
        let labels = phip_fhir::access::labels(body, entries);
        self.conn
            .prepare_cached(
                "UPDATE resources SET holder_org = ?2, holder_division = ?3, access_class = ?4 \
                 WHERE rid = ?1",
            )?
            .execute(params![
                rid,
                labels.holder_org,
                labels.holder_division,
                labels.class.code()
            ])?;
        self.conn
            .prepare_cached("DELETE FROM access_label WHERE rid = ?1")?
            .execute([rid])?;
        for (kind, values) in [
            (access::PATIENT, &labels.patients),
            (access::PARTY, &labels.parties),
        ] {
            for value in values {
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO access_label(rid, kind, value) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![rid, kind, value])?;
            }
        }
        self.write_index_sources(rid, body, &labels)?;
        self.conn
            .prepare_cached("DELETE FROM consent_rule WHERE consent_rid = ?1")?
            .execute([rid])?;
        for (n, rule) in labels.consent_rules.iter().enumerate() {
            let class_tid = match &rule.class {
                None => None,
                Some(class) if phip_fhir::r4().is_resource_type(class) => {
                    Some(self.ensure_type(class)?)
                }
                // A class that is no resource type matches no record.
                Some(_) => Some(-1),
            };
            self.conn
                .prepare_cached(
                    "INSERT INTO consent_rule(consent_rid, n, patient_id, node, permit, actor, \
                     class_tid, start_ms, end_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                )?
                .execute(params![
                    rid,
                    n as i64,
                    rule.patient,
                    rule.node,
                    i64::from(rule.permit),
                    rule.actor,
                    class_tid,
                    rule.start,
                    rule.end
                ])?;
        }
        Ok(())
    }

    /// Keeps `index_source` current (see the schema's v4): a golden record's rows name the
    /// sources it links with their current labels; a Patient's labels are copied into the
    /// rows of every golden record naming it.
    fn write_index_sources(
        &mut self,
        rid: i64,
        body: &Value,
        labels: &phip_fhir::access::AccessLabels,
    ) -> StoreResult<()> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Ok(());
        }
        let own_id = body.get("id").and_then(Value::as_str).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE index_source SET access_class = ?2, holder_org = ?3, \
                 holder_division = ?4 WHERE source_id = ?1",
            )?
            .execute(params![
                own_id,
                labels.class.code(),
                labels.holder_org,
                labels.holder_division
            ])?;
        self.conn
            .prepare_cached("DELETE FROM index_source WHERE rid = ?1")?
            .execute([rid])?;
        if labels.class != phip_fhir::access::AccessClass::Index {
            return Ok(());
        }
        let tid = self.ensure_type("Patient")?;
        for source in labels.patients.iter().filter(|p| *p != own_id) {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO index_source(rid, source_id, access_class, \
                     holder_org, holder_division) \
                     SELECT ?1, ?2, s.access_class, s.holder_org, s.holder_division \
                     FROM (SELECT 1) LEFT JOIN resources s ON s.tid = ?3 AND s.id = ?2",
                )?
                .execute(params![rid, source, tid])?;
        }
        Ok(())
    }

    fn delete_index_rows(&self, rid: i64) -> StoreResult<()> {
        for table in INDEX_TABLES {
            self.conn
                .prepare_cached(&format!("DELETE FROM {table} WHERE rid = ?1"))?
                .execute([rid])?;
        }
        Ok(())
    }

    fn insert_index_rows(&mut self, tid: i64, rid: i64, entries: &[IndexEntry]) -> StoreResult<()> {
        ingest::index_rows(
            self,
            entries,
            |tx, code| tx.ensure_param(tid, code),
            |tx, n, pid, grp, value| tx.insert_value(rid, n, pid, grp, value),
        )
    }

    fn insert_value(
        &mut self,
        rid: i64,
        n: i64,
        pid: i64,
        grp: Option<i64>,
        value: &IndexValue,
    ) -> StoreResult<()> {
        let conn = &self.conn;
        match value {
            IndexValue::String { normalized, exact } => {
                conn.prepare_cached(
                    "INSERT INTO idx_string(rid, n, pid, grp, norm, exact) VALUES (?1,?2,?3,?4,?5,?6)",
                )?
                .execute(params![rid, n, pid, grp, normalized, exact])?;
            }
            IndexValue::Token { system, code, text } => {
                conn.prepare_cached(
                    "INSERT INTO idx_token(rid, n, pid, grp, system, code, text) \
                     VALUES (?1,?2,?3,?4,?5,?6,?7)",
                )?
                .execute(params![rid, n, pid, grp, system, code, text])?;
            }
            IndexValue::Date { start, end } => {
                conn.prepare_cached(
                    "INSERT INTO idx_date(rid, n, pid, grp, start, \"end\") \
                     VALUES (?1,?2,?3,?4,?5,?6)",
                )?
                .execute(params![rid, n, pid, grp, start, end])?;
            }
            IndexValue::Number { value, low, high } => {
                conn.prepare_cached(
                    "INSERT INTO idx_number(rid, n, pid, grp, value, low, high) \
                     VALUES (?1,?2,?3,?4,?5,?6,?7)",
                )?
                .execute(params![
                    rid,
                    n,
                    pid,
                    grp,
                    finite(*value),
                    finite(*low),
                    finite(*high)
                ])?;
            }
            IndexValue::Quantity {
                value,
                low,
                high,
                system,
                code,
                unit,
            } => {
                conn.prepare_cached(
                    "INSERT INTO idx_quantity(rid, n, pid, grp, value, low, high, system, code, \
                     unit) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                )?
                .execute(params![
                    rid,
                    n,
                    pid,
                    grp,
                    finite(*value),
                    finite(*low),
                    finite(*high),
                    system,
                    code,
                    unit
                ])?;
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
                version,
                identifier,
            } => {
                let target_tid = match target_type {
                    Some(t) => Some(self.ensure_type(t)?),
                    None => None,
                };
                let (id_system, id_value) = match identifier {
                    Some((s, v)) => (s.as_deref(), Some(v.as_str())),
                    None => (None, None),
                };
                self.conn
                    .prepare_cached(
                        "INSERT INTO idx_reference(rid, n, pid, grp, target_tid, target_id, url, \
                         version, id_system, id_value) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                    )?
                    .execute(params![
                        rid, n, pid, grp, target_tid, target_id, url, version, id_system, id_value
                    ])?;
            }
            IndexValue::Uri(uri) => {
                conn.prepare_cached(
                    "INSERT INTO idx_uri(rid, n, pid, grp, uri) VALUES (?1,?2,?3,?4,?5)",
                )?
                .execute(params![rid, n, pid, grp, uri])?;
            }
            // Composites nest only one level deep; a nested one has no meaningful rows.
            IndexValue::Composite(_) => {}
        }
        Ok(())
    }
}

/// Writes many resources in one transaction. Index extraction (the expensive, CPU-bound part)
/// runs on all cores before the writer lock is taken, so the lock is held only for SQL.
pub(crate) fn bulk_write(
    store: &SqliteStore,
    requests: Vec<WriteRequest>,
) -> StoreResult<Vec<StoredResource>> {
    let entries = extract_parallel(&store.extractor, &requests)?;
    let mut tx = store.begin_sqlite_write(true)?;
    let mut out = Vec::with_capacity(requests.len());
    for (mut request, entries) in requests.into_iter().zip(entries) {
        request.expected_version = None;
        out.push(tx.write_entries(request, entries)?);
    }
    tx.commit_inner()?;
    Ok(out)
}

/// Computes the access labels of every stored resource from its newest content (a database
/// migrated from before schema v3 has none). Runs in batches of one write transaction each.
pub(crate) fn backfill_access_labels(store: &SqliteStore) -> StoreResult<u64> {
    let mut after = 0_i64;
    let mut done = 0_u64;
    loop {
        let mut tx = store.begin_sqlite_write(true)?;
        let batch: Vec<(i64, String)> = {
            let mut stmt = tx.conn.prepare(
                "SELECT r.rid, (SELECT v.body FROM resource_versions v WHERE v.rid = r.rid \
                 AND v.body IS NOT NULL ORDER BY v.version DESC LIMIT 1) \
                 FROM resources r WHERE r.rid > ?1 ORDER BY r.rid LIMIT 1000",
            )?;
            let rows = stmt.query_map([after], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (rid, body) = row?;
                after = rid;
                if let Some(body) = body {
                    out.push((rid, body));
                }
            }
            if out.is_empty() && after == 0 {
                return Ok(done);
            }
            out
        };
        let last_batch = batch.is_empty();
        for (rid, text) in batch {
            let body: Value = serde_json::from_str(&text).map_err(|e| backend(e.to_string()))?;
            let entries = (store.extractor)(&body);
            tx.write_access_labels(rid, &body, &entries)?;
            done += 1;
        }
        tx.commit_inner()?;
        if last_batch {
            return Ok(done);
        }
    }
}
