//! The write path, set-based: one call writes a batch of requests (one request for a single
//! write, thousands for a bulk load) with a fixed number of statements — lock the existing
//! rows, create the new identities, then one multi-row statement per table (`unnest` of array
//! parameters, so the statement text and its prepared plan do not depend on the batch size).

use std::collections::HashMap;

use phip_fhir::access::AccessLabels;
use phip_fhir::search::{IndexEntry, IndexValue};
use postgres::types::ToSql;
use serde_json::Value;

use super::catalog::to_i32;
use super::error::backend;
use super::tx::PgTransaction;
use super::{home_shard, known_shard, shard_key, PostgresStore};
use crate::sqlgen::access;
use crate::sqlgen::ingest::{self, extract_parallel, finite, from_millis, stamp};
use crate::{StoreError, StoreResult, StoredResource, WriteRequest};

/// Index rows from which a batch streams them with `COPY` rather than prepared inserts.
const COPY_MIN_ROWS: usize = 256;

/// Attempts of a bulk write that lost a deadlock against another writer.
const BULK_ATTEMPTS: usize = 3;

/// The state of one logical resource while a batch is applied.
#[derive(Clone)]
struct Slot {
    tid: i64,
    id: String,
    rid: i64,
    version: i64,
    last_updated: i64,
    deleted: bool,
    /// Whether `resources` has a row for it (before this batch).
    stored: bool,
    /// Whether the stored row had index rows (stored and not deleted).
    had_index: bool,
    /// Whether this batch wrote a version of it.
    dirty: bool,
    /// Index entries of its final version in this batch (`None` when deleted).
    entries: Option<Vec<IndexEntry>>,
    /// Access labels of its final version in this batch (`None` when deleted: the labels of
    /// the last content stay).
    labels: Option<AccessLabels>,
    /// Its shard on Citus (0 otherwise).
    shard: i64,
    /// The labels a golden record's `index_source` rows copy, as stored before this batch.
    facts: Option<Facts>,
}

/// The labels of a Patient that `index_source` copies: class, holder organisation, holder
/// division.
type Facts = (i16, Option<String>, Option<String>);

/// The columns the write path reads of a stored `resources` row, in this order.
const LOCK_COLUMNS: &str =
    "rid, tid, id, version, last_updated, deleted, access_class, holder_org, holder_division";

/// One request with its pre-extracted index entries (extracted here when `None`).
pub(crate) type Item = (WriteRequest, Option<Vec<IndexEntry>>);

impl PgTransaction<'_> {
    /// Writes the requests in order. With `check`, each request's `expected_version` is
    /// enforced; bulk loads pass `false`.
    pub(crate) fn write_batch(
        &mut self,
        items: Vec<Item>,
        check: bool,
    ) -> StoreResult<Vec<StoredResource>> {
        if !self.writer {
            return Err(backend("write in a read-only transaction"));
        }
        let store = self.store;
        // Validate and map every request onto a slot (one per distinct resource).
        let mut slot_of: HashMap<(i64, String), usize> = HashMap::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut order: Vec<usize> = Vec::with_capacity(items.len());
        for (request, _) in &items {
            if let Some(body) = &request.resource {
                match body.get("resourceType").and_then(Value::as_str) {
                    Some(t) if t == request.resource_type => {}
                    other => {
                        return Err(backend(format!(
                            "resourceType {other:?} does not match the written type {}",
                            request.resource_type
                        )))
                    }
                }
            }
            let tid = store.catalog.ensure_type(&request.resource_type)?;
            let key = (tid, request.id.clone());
            let slot = *slot_of.entry(key).or_insert_with(|| {
                slots.push(Slot {
                    tid,
                    id: request.id.clone(),
                    rid: 0,
                    version: 0,
                    last_updated: 0,
                    deleted: false,
                    stored: false,
                    had_index: false,
                    dirty: false,
                    entries: None,
                    labels: None,
                    shard: 0,
                    facts: None,
                });
                slots.len() - 1
            });
            order.push(slot);
        }

        let all: Vec<usize> = (0..slots.len()).collect();
        self.lock_existing(&mut slots, &all)?;
        if check {
            check_versions(&items, &order, &slots)?;
        }
        self.create_identities(&mut slots, &items, &order)?;
        if check {
            // A concurrent create of the same id may have won meanwhile.
            check_versions(&items, &order, &slots)?;
        }

        // Apply the requests in order to the slots, collecting version rows.
        let ts = self.timestamp();
        let mut versions = VersionRows::default();
        let mut out = Vec::with_capacity(items.len());
        for ((request, entries), &i) in items.into_iter().zip(&order) {
            let slot = &mut slots[i];
            let Some(mut body) = request.resource else {
                if !slot.stored && !slot.dirty || slot.deleted {
                    // Deleting what does not exist or is already deleted writes nothing.
                    out.push(StoredResource {
                        resource_type: request.resource_type,
                        id: request.id,
                        version_id: slot.version as u64,
                        last_updated: if slot.version == 0 {
                            chrono::Utc::now()
                        } else {
                            from_millis(slot.last_updated)?
                        },
                        resource: None,
                    });
                    continue;
                }
                let at = ts.max(slot.last_updated + 1);
                slot.version += 1;
                slot.last_updated = at;
                slot.deleted = true;
                slot.dirty = true;
                slot.entries = None;
                slot.labels = None;
                versions.push(slot, None);
                out.push(StoredResource {
                    resource_type: request.resource_type,
                    id: request.id,
                    version_id: slot.version as u64,
                    last_updated: from_millis(at)?,
                    resource: None,
                });
                continue;
            };
            // A version is always later than the resource's previous one, even if another
            // server's clock is ahead of ours.
            let at = ts.max(slot.last_updated + 1);
            let version = slot.version + 1;
            stamp(&mut body, &request.id, version, at)?;
            let text = serde_json::to_string(&body).map_err(|e| backend(e.to_string()))?;
            slot.version = version;
            slot.last_updated = at;
            slot.deleted = false;
            slot.dirty = true;
            let entries = match entries {
                Some(e) => e,
                None => (store.extractor)(&body),
            };
            slot.labels = Some(phip_fhir::access::labels(&body, &entries));
            slot.entries = Some(entries);
            versions.push(slot, Some(text));
            out.push(StoredResource {
                resource_type: request.resource_type,
                id: request.id,
                version_id: version as u64,
                last_updated: from_millis(at)?,
                resource: Some(body),
            });
        }
        self.store_slots(&slots)?;
        versions.insert(self)?;
        let mut index = IndexRows::default();
        for slot in slots.iter().filter(|s| s.dirty) {
            if let Some(entries) = &slot.entries {
                index.add(store, slot.tid, (slot.rid, slot.shard), entries)?;
            }
        }
        index.insert(self)?;
        self.write_access_labels(slots.iter().filter(|s| s.dirty))?;
        Ok(out)
    }

    /// Replaces the access labels of the written slots (see `crate::sqlgen::access`); a
    /// deleted slot keeps its labels but its Consent rules go. Keeps what is derived from
    /// labels current too: `index_source`, and on Citus `compartment_ref`.
    fn write_access_labels<'s>(
        &mut self,
        slots: impl Iterator<Item = &'s Slot>,
    ) -> StoreResult<()> {
        let store = self.store;
        let citus = store.citus;
        let slots: Vec<&Slot> = slots.collect();
        // Only a Consent has rules. On Citus `consent_rule` is a reference table, whose
        // deletions Citus serializes cluster-wide (a lock until commit): only writes of
        // Consents may touch it, or every write would queue behind every other.
        let mut consents: Vec<i64> = Vec::new();
        for slot in &slots {
            if store.catalog.type_name(slot.tid)? == "Consent" {
                consents.push(slot.rid);
            }
        }
        let mut written: Vec<i64> = Vec::new();
        let mut relabelled: Vec<i64> = Vec::new();
        let mut relabelled_shards: Vec<i64> = Vec::new();
        let (mut holder_org, mut holder_division, mut class) = (Vec::new(), Vec::new(), Vec::new());
        let mut labels_rows = LabelRows::default();
        let mut rules = ConsentRows::default();
        for slot in &slots {
            written.push(slot.rid);
            let Some(labels) = &slot.labels else {
                continue;
            };
            relabelled.push(slot.rid);
            relabelled_shards.push(slot.shard);
            holder_org.push(labels.holder_org.as_deref().map(text));
            holder_division.push(labels.holder_division.clone());
            class.push(labels.class.code() as i16);
            for (kind, values) in [
                (access::PATIENT, &labels.patients),
                (access::PARTY, &labels.parties),
            ] {
                for value in values {
                    labels_rows.rid.push(slot.rid);
                    labels_rows.kind.push(kind as i16);
                    labels_rows.value.push(text(value));
                    labels_rows.shard.push(slot.shard);
                }
            }
            for (n, rule) in labels.consent_rules.iter().enumerate() {
                let class_tid = match &rule.class {
                    None => None,
                    Some(c) if phip_fhir::r4().is_resource_type(c) => {
                        Some(to_i32(store.catalog.ensure_type(c)?))
                    }
                    Some(_) => Some(-1),
                };
                rules.consent_rid.push(slot.rid);
                rules.n.push(n as i32);
                rules.patient_id.push(text(&rule.patient));
                rules.node.push(rule.node.clone());
                rules.permit.push(i16::from(rule.permit));
                rules.actor.push(rule.actor.as_deref().map(text));
                rules.class_tid.push(class_tid);
                rules.start_ms.push(rule.start);
                rules.end_ms.push(rule.end);
            }
        }
        if written.is_empty() {
            return Ok(());
        }
        if relabelled.is_empty() {
            if !consents.is_empty() {
                self.conn.execute(
                    "DELETE FROM consent_rule WHERE consent_rid = ANY($1)",
                    &[&consents],
                )?;
            }
            return Ok(());
        }
        if citus {
            if !consents.is_empty() {
                self.conn.execute(
                    "DELETE FROM consent_rule WHERE consent_rid = ANY($1)",
                    &[&consents],
                )?;
            }
            // The compartment memberships that go are needed for `compartment_ref`.
            let gone = self.conn.query(
                "DELETE FROM access_label WHERE shard = ANY($1) AND rid = ANY($2) \
                 RETURNING rid, kind, value",
                &[&relabelled_shards, &relabelled],
            )?;
            self.conn.execute(
                "UPDATE resources r SET holder_org = u.holder_org, \
                 holder_division = u.holder_division, access_class = u.class \
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::smallint[], \
                 $5::bigint[]) AS u(rid, holder_org, holder_division, class, shard) \
                 WHERE r.shard = ANY($5) AND r.shard = u.shard AND r.rid = u.rid",
                &[
                    &relabelled,
                    &holder_org,
                    &holder_division,
                    &class,
                    &relabelled_shards,
                ],
            )?;
            self.write_compartment_refs(&slots, &gone)?;
        } else {
            // One round trip for what goes; the new rows follow (a statement's parts cannot
            // see each other's changes, so deleting and re-inserting one key must be two).
            self.conn.execute(
                "WITH gone_rules AS (DELETE FROM consent_rule WHERE consent_rid = ANY($1)), \
                 gone_labels AS (DELETE FROM access_label WHERE rid = ANY($2)) \
                 UPDATE resources r SET holder_org = u.holder_org, \
                 holder_division = u.holder_division, access_class = u.class \
                 FROM unnest($2::bigint[], $3::text[], $4::text[], $5::smallint[]) \
                 AS u(rid, holder_org, holder_division, class) WHERE r.rid = u.rid",
                &[
                    &consents,
                    &relabelled,
                    &holder_org,
                    &holder_division,
                    &class,
                ],
            )?;
        }
        if !labels_rows.rid.is_empty() {
            let mut params: Vec<&(dyn ToSql + Sync)> =
                vec![&labels_rows.rid, &labels_rows.kind, &labels_rows.value];
            let (col, arg) = shard_column(citus, &mut params, &labels_rows.shard);
            self.conn.execute(
                &format!(
                    "INSERT INTO access_label (rid, kind, value{col}) \
                     SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::text[]{arg}) \
                     ON CONFLICT DO NOTHING"
                ),
                &params,
            )?;
        }
        if !rules.consent_rid.is_empty() {
            self.conn.execute(
                "INSERT INTO consent_rule (consent_rid, n, patient_id, node, permit, actor, \
                 class_tid, start_ms, end_ms) SELECT * FROM unnest($1::bigint[], $2::integer[], \
                 $3::text[], $4::text[], $5::smallint[], $6::text[], $7::integer[], \
                 $8::bigint[], $9::bigint[])",
                &[
                    &rules.consent_rid,
                    &rules.n,
                    &rules.patient_id,
                    &rules.node,
                    &rules.permit,
                    &rules.actor,
                    &rules.class_tid,
                    &rules.start_ms,
                    &rules.end_ms,
                ],
            )?;
        }
        self.write_index_sources(&slots)
    }

    /// Keeps `index_source` current (see the schema's v4): the labels of a written Patient
    /// are copied into the rows of every golden record that names it (when they changed, or
    /// it is new), and a written golden record's rows are rebuilt from the current labels of
    /// the sources it links.
    fn write_index_sources(&mut self, slots: &[&Slot]) -> StoreResult<()> {
        let store = self.store;
        let citus = store.citus;
        // By the slots' own types (known to the catalog's cache): a lookup of a type no
        // write named would ask the database.
        let mut patients: Vec<&Slot> = Vec::new();
        for slot in slots {
            if slot.labels.is_some() && store.catalog.type_name(slot.tid)? == "Patient" {
                patients.push(slot);
            }
        }
        let Some(patient_tid) = patients.first().map(|s| s.tid) else {
            return Ok(());
        };
        let (mut ids, mut classes, mut orgs, mut divisions) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for slot in &patients {
            let Some(labels) = &slot.labels else {
                continue;
            };
            let facts: Facts = (
                labels.class.code() as i16,
                labels.holder_org.as_deref().map(text),
                labels.holder_division.clone(),
            );
            if slot.facts.as_ref() != Some(&facts) {
                ids.push(slot.id.as_str());
                classes.push(facts.0);
                orgs.push(facts.1);
                divisions.push(facts.2);
            }
        }
        if !ids.is_empty() {
            // On Citus this one statement visits every shard: the golden records naming a
            // Patient can be anywhere. Only new Patients and changed labels get here.
            self.conn.execute(
                "UPDATE index_source g SET access_class = u.class, holder_org = u.holder_org, \
                 holder_division = u.holder_division \
                 FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[]) \
                 AS u(id, class, holder_org, holder_division) WHERE g.source_id = u.id",
                &[&ids, &classes, &orgs, &divisions],
            )?;
        }
        let rids: Vec<i64> = patients.iter().map(|s| s.rid).collect();
        let shards: Vec<i64> = patients.iter().map(|s| s.shard).collect();
        if citus {
            self.conn.execute(
                "DELETE FROM index_source WHERE shard = ANY($1) AND rid = ANY($2)",
                &[&shards, &rids],
            )?;
        } else {
            self.conn
                .execute("DELETE FROM index_source WHERE rid = ANY($1)", &[&rids])?;
        }
        let mut rows = IndexSourceRows::default();
        for slot in &patients {
            let Some(labels) = &slot.labels else {
                continue;
            };
            if labels.class != phip_fhir::access::AccessClass::Index {
                continue;
            }
            for source in labels.patients.iter().filter(|p| **p != slot.id) {
                rows.rid.push(slot.rid);
                rows.shard.push(slot.shard);
                rows.source_id.push(text(source));
            }
        }
        if rows.rid.is_empty() {
            return Ok(());
        }
        // The sources' current labels (this batch's included), one statement.
        let source_shards: Vec<i64> = rows.source_id.iter().map(|id| shard_key(id)).collect();
        let facts = if citus {
            self.conn.query(
                "SELECT id, access_class, holder_org, holder_division FROM resources \
                 WHERE shard = ANY($1) AND tid = $2 AND id = ANY($3)",
                &[&source_shards, &to_i32(patient_tid), &rows.source_id],
            )?
        } else {
            self.conn.query(
                "SELECT id, access_class, holder_org, holder_division FROM resources \
                 WHERE tid = $1 AND id = ANY($2)",
                &[&to_i32(patient_tid), &rows.source_id],
            )?
        };
        let facts: HashMap<String, Facts> = facts
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect();
        for source in &rows.source_id {
            let (class, org, division) = match facts.get(source) {
                Some((c, o, d)) => (Some(*c), o.clone(), d.clone()),
                None => (None, None, None),
            };
            rows.class.push(class);
            rows.holder_org.push(org);
            rows.holder_division.push(division);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &rows.rid,
            &rows.source_id,
            &rows.class,
            &rows.holder_org,
            &rows.holder_division,
        ];
        let (col, arg) = shard_column(citus, &mut params, &rows.shard);
        self.conn.execute(
            &format!(
                "INSERT INTO index_source (rid, source_id, access_class, holder_org, \
                 holder_division{col}) SELECT * FROM unnest($1::bigint[], $2::text[], \
                 $3::smallint[], $4::text[], $5::text[]{arg}) ON CONFLICT DO NOTHING"
            ),
            &params,
        )?;
        Ok(())
    }

    /// On Citus, keeps `compartment_ref` current for the relabelled slots, given the
    /// compartment memberships they had (`gone`: `(rid, kind, value)` rows): a resource in
    /// the compartment of a patient whose shard is not its own has a row there. Patients are
    /// left out: a compartment holds no other Patient than its own.
    fn write_compartment_refs(
        &mut self,
        slots: &[&Slot],
        gone: &[postgres::Row],
    ) -> StoreResult<()> {
        let mut is_patient = HashMap::new();
        for slot in slots {
            is_patient.insert(
                slot.tid,
                self.store.catalog.type_name(slot.tid)? == "Patient",
            );
        }
        let away = |slot: &Slot, patient: &str| {
            !is_patient.get(&slot.tid).copied().unwrap_or(false) && shard_key(patient) != slot.shard
        };
        let by_rid: HashMap<i64, &Slot> = slots.iter().map(|s| (s.rid, *s)).collect();
        let mut old = RefRows::default();
        for row in gone {
            let (rid, kind, value): (i64, i16, String) = (row.get(0), row.get(1), row.get(2));
            let Some(slot) = by_rid.get(&rid) else {
                continue;
            };
            if i64::from(kind) == access::PATIENT && away(slot, &value) {
                old.push(slot, value);
            }
        }
        let mut new = RefRows::default();
        for slot in slots {
            let Some(labels) = &slot.labels else {
                continue;
            };
            for patient in labels.patients.iter().filter(|p| away(slot, p)) {
                new.push(slot, text(patient));
            }
        }
        if !old.rid.is_empty() {
            // Every combination of these values belongs to a relabelled slot, whose current
            // rows are all inserted again below.
            self.conn.execute(
                "DELETE FROM compartment_ref WHERE shard = ANY($1) AND patient = ANY($2) \
                 AND rid = ANY($3)",
                &[&old.shard, &old.patient, &old.rid],
            )?;
        }
        if !new.rid.is_empty() {
            self.conn.execute(
                "INSERT INTO compartment_ref (shard, patient, rid, home) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT DO NOTHING",
                &[&new.shard, &new.patient, &new.rid, &new.home],
            )?;
        }
        Ok(())
    }

    /// Reads and locks (`FOR UPDATE`) the stored rows of the given slots, in rid order so that
    /// concurrent batches lock in the same order.
    fn lock_existing(&mut self, slots: &mut [Slot], which: &[usize]) -> StoreResult<()> {
        if which.is_empty() {
            return Ok(());
        }
        let rows = if self.store.citus {
            self.lock_distributed(slots, which)?
        } else {
            let tids: Vec<i32> = which.iter().map(|&i| to_i32(slots[i].tid)).collect();
            let ids: Vec<&str> = which.iter().map(|&i| slots[i].id.as_str()).collect();
            if which.len() == 1 {
                self.conn.query(
                    &format!(
                        "SELECT {LOCK_COLUMNS} FROM resources WHERE tid = $1 AND id = $2 \
                         FOR UPDATE"
                    ),
                    &[&tids[0], &ids[0]],
                )?
            } else {
                self.conn.query(
                    "SELECT r.rid, r.tid, r.id, r.version, r.last_updated, r.deleted, \
                     r.access_class, r.holder_org, r.holder_division FROM resources r \
                     JOIN unnest($1::integer[], $2::text[]) AS k(tid, id) \
                     ON r.tid = k.tid AND r.id = k.id ORDER BY r.rid FOR UPDATE OF r",
                    &[&tids, &ids],
                )?
            }
        };
        let index: HashMap<(i64, &str), usize> = which
            .iter()
            .map(|&i| ((slots[i].tid, slots[i].id.as_str()), i))
            .collect();
        let mut found = Vec::with_capacity(rows.len());
        for row in &rows {
            let tid = i64::from(row.get::<_, i32>(1));
            let id: &str = row.get(2);
            if let Some(&i) = index.get(&(tid, id)) {
                found.push((i, row));
            }
        }
        let citus = self.store.citus;
        for (i, row) in found {
            let s = &mut slots[i];
            s.rid = row.get(0);
            s.version = row.get(3);
            s.last_updated = row.get(4);
            s.deleted = row.get(5);
            s.stored = true;
            s.had_index = !s.deleted;
            s.facts = Some((row.get(6), row.get(7), row.get(8)));
            if citus {
                s.shard = row.get(9);
            }
        }
        Ok(())
    }

    /// [`Self::lock_existing`] on Citus, where `SELECT … FOR UPDATE` must name one shard: a
    /// single resource is looked up (in `resource_ids`, unless its type and id decide its
    /// shard) and locked on its shard; a batch's resources are locked by a no-op `UPDATE`,
    /// which takes the same row locks on all their shards at once.
    fn lock_distributed(
        &mut self,
        slots: &[Slot],
        which: &[usize],
    ) -> StoreResult<Vec<postgres::Row>> {
        if let [i] = which {
            let slot = &slots[*i];
            let tid = to_i32(slot.tid);
            let type_name = self.store.catalog.type_name(slot.tid)?;
            if let Some(shard) = known_shard(&type_name, &slot.id) {
                return self.conn.query(
                    &format!(
                        "SELECT {LOCK_COLUMNS}, shard FROM resources \
                         WHERE shard = $1 AND tid = $2 AND id = $3 FOR UPDATE"
                    ),
                    &[&shard, &tid, &slot.id],
                );
            }
            let Some(row) = self.conn.query_opt(
                "SELECT rid, shard FROM resource_ids WHERE id = $1 AND tid = $2",
                &[&slot.id, &tid],
            )?
            else {
                return Ok(Vec::new());
            };
            let (rid, shard): (i64, i64) = (row.get(0), row.get(1));
            return self.conn.query(
                &format!(
                    "SELECT {LOCK_COLUMNS}, shard FROM resources \
                     WHERE shard = $1 AND rid = $2 FOR UPDATE"
                ),
                &[&shard, &rid],
            );
        }
        let ids: Vec<&str> = which.iter().map(|&i| slots[i].id.as_str()).collect();
        let wanted: std::collections::HashSet<(i64, &str)> = which
            .iter()
            .map(|&i| (slots[i].tid, slots[i].id.as_str()))
            .collect();
        let rows = self.conn.query(
            "SELECT id, tid, rid, shard FROM resource_ids WHERE id = ANY($1)",
            &[&ids],
        )?;
        let mut keys: Vec<(i64, i64)> = rows
            .iter()
            .filter(|r| wanted.contains(&(i64::from(r.get::<_, i32>(1)), r.get::<_, &str>(0))))
            .map(|r| (r.get(2), r.get(3)))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort_unstable();
        let rids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let shards: Vec<i64> = keys.iter().map(|k| k.1).collect();
        self.conn.query(
            &format!(
                "UPDATE resources SET version = version \
                 WHERE shard = ANY($1) AND rid = ANY($2) RETURNING {LOCK_COLUMNS}, shard"
            ),
            &[&shards, &rids],
        )
    }

    /// Gives every slot that is written but not stored a rid, through `resource_ids`. A create
    /// that collides with a concurrent one waits for it; if it committed, the resource now
    /// exists and is locked and updated instead.
    fn create_identities(
        &mut self,
        slots: &mut [Slot],
        items: &[Item],
        order: &[usize],
    ) -> StoreResult<()> {
        let citus = self.store.citus;
        let mut wanted = vec![false; slots.len()];
        for ((request, _), &i) in items.iter().zip(order) {
            if request.resource.is_some() && !slots[i].stored {
                if citus && !wanted[i] {
                    // A new resource's home: where its first version puts it.
                    slots[i].shard = home_shard(
                        &request.resource_type,
                        &request.id,
                        request.resource.as_ref(),
                    );
                }
                wanted[i] = true;
            }
        }
        let mut missing: Vec<usize> = (0..slots.len()).filter(|&i| wanted[i]).collect();
        // Sorted, so that concurrent batches wait on each other's keys in one order.
        missing.sort_by(|&a, &b| (slots[a].tid, &slots[a].id).cmp(&(slots[b].tid, &slots[b].id)));
        for _ in 0..5 {
            if missing.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = missing.iter().map(|&i| slots[i].id.as_str()).collect();
            let tids: Vec<i32> = missing.iter().map(|&i| to_i32(slots[i].tid)).collect();
            let rows = if citus {
                let shards: Vec<i64> = missing.iter().map(|&i| slots[i].shard).collect();
                self.conn.query(
                    "INSERT INTO resource_ids (id, tid, rid, shard) \
                     SELECT k.id, k.tid, nextval('rid_seq'), k.shard \
                     FROM unnest($1::text[], $2::integer[], $3::bigint[]) \
                     WITH ORDINALITY AS k(id, tid, shard, o) \
                     ORDER BY k.o ON CONFLICT DO NOTHING RETURNING id, tid, rid",
                    &[&ids, &tids, &shards],
                )?
            } else {
                self.conn.query(
                    "INSERT INTO resource_ids (id, tid, rid) \
                     SELECT k.id, k.tid, nextval('rid_seq') \
                     FROM unnest($1::text[], $2::integer[]) WITH ORDINALITY AS k(id, tid, o) \
                     ORDER BY k.o ON CONFLICT DO NOTHING RETURNING id, tid, rid",
                    &[&ids, &tids],
                )?
            };
            let mut created: HashMap<(i64, String), i64> = HashMap::with_capacity(rows.len());
            for row in rows {
                created.insert(
                    (i64::from(row.get::<_, i32>(1)), row.get(0)),
                    row.get::<_, i64>(2),
                );
            }
            let mut collided = Vec::new();
            for &i in &missing {
                match created.remove(&(slots[i].tid, slots[i].id.clone())) {
                    Some(rid) => slots[i].rid = rid,
                    None => collided.push(i),
                }
            }
            if collided.is_empty() {
                return Ok(());
            }
            // The identities exist: committed by a concurrent create (whose resource rows are
            // now visible), or left without a resource row, which is adopted.
            self.lock_existing(slots, &collided)?;
            let mut orphans = Vec::new();
            for &i in &collided {
                if slots[i].stored {
                    continue;
                }
                let row = self.conn.query_opt(
                    if citus {
                        "SELECT rid, shard FROM resource_ids WHERE id = $1 AND tid = $2"
                    } else {
                        "SELECT rid, 0::bigint FROM resource_ids WHERE id = $1 AND tid = $2"
                    },
                    &[&slots[i].id, &to_i32(slots[i].tid)],
                )?;
                match row {
                    Some(r) => {
                        slots[i].rid = r.get(0);
                        slots[i].shard = r.get(1);
                    }
                    None => orphans.push(i),
                }
            }
            missing = orphans;
        }
        Err(StoreError::Busy)
    }

    /// Inserts or updates the `resources` rows of the written slots and drops the index rows
    /// of their previous versions.
    fn store_slots(&mut self, slots: &[Slot]) -> StoreResult<()> {
        let citus = self.store.citus;
        let mut new = ResourceRows::default();
        let mut changed = ResourceRows::default();
        let mut reindexed: Vec<i64> = Vec::new();
        let mut reindexed_shards: Vec<i64> = Vec::new();
        for s in slots.iter().filter(|s| s.dirty) {
            if s.stored {
                changed.push(s);
            } else {
                new.push(s);
            }
            if s.had_index {
                reindexed.push(s.rid);
                reindexed_shards.push(s.shard);
            }
        }
        if !new.rid.is_empty() {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                &new.rid,
                &new.tid,
                &new.id,
                &new.version,
                &new.last_updated,
                &new.deleted,
            ];
            let (col, arg) = shard_column(citus, &mut params, &new.shard);
            self.conn.execute(
                &format!(
                    "INSERT INTO resources (rid, tid, id, version, last_updated, deleted{col}) \
                     SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], \
                     $4::bigint[], $5::bigint[], $6::boolean[]{arg})"
                ),
                &params,
            )?;
        }
        if !changed.rid.is_empty() {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                &changed.rid,
                &changed.version,
                &changed.last_updated,
                &changed.deleted,
            ];
            let (col, arg) = shard_column(citus, &mut params, &changed.shard);
            // On Citus the shards are also named as such: a join with `unnest` would not tell
            // Citus which shards to update, and it would visit them all.
            let same = if citus {
                "r.shard = ANY($5) AND r.shard = u.shard AND r.rid = u.rid"
            } else {
                "r.rid = u.rid"
            };
            self.conn.execute(
                &format!(
                    "UPDATE resources r SET version = u.version, last_updated = u.last_updated, \
                     deleted = u.deleted \
                     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[]{arg}) \
                     AS u(rid, version, last_updated, deleted{col}) WHERE {same}"
                ),
                &params,
            )?;
        }
        if !reindexed.is_empty() {
            // One round trip for all seven tables.
            let on_shards = if citus { "shard = ANY($2) AND " } else { "" };
            let deletes: Vec<String> = crate::sqlgen::INDEX_TABLES
                .iter()
                .enumerate()
                .map(|(i, t)| format!("d{i} AS (DELETE FROM {t} WHERE {on_shards}rid = ANY($1))"))
                .collect();
            let sql = format!("WITH {} SELECT 1", deletes.join(", "));
            if citus {
                self.conn.execute(&sql, &[&reindexed, &reindexed_shards])?;
            } else {
                self.conn.execute(&sql, &[&reindexed])?;
            }
        }
        Ok(())
    }
}

/// Checks the optimistic locks of a batch against the stored state, before anything is
/// written.
fn check_versions(items: &[Item], order: &[usize], slots: &[Slot]) -> StoreResult<()> {
    let mut version: Vec<i64> = slots.iter().map(|s| s.version).collect();
    let mut deleted: Vec<bool> = slots.iter().map(|s| s.deleted || !s.stored).collect();
    for ((request, _), &i) in items.iter().zip(order) {
        let current = version[i] as u64;
        if let Some(expected) = request.expected_version {
            if expected != current {
                return Err(StoreError::VersionConflict { expected, current });
            }
        }
        match &request.resource {
            Some(_) => {
                version[i] += 1;
                deleted[i] = false;
            }
            None if !deleted[i] => {
                version[i] += 1;
                deleted[i] = true;
            }
            None => {}
        }
    }
    Ok(())
}

/// Column arrays of `access_label` rows.
#[derive(Default)]
struct LabelRows {
    rid: Vec<i64>,
    kind: Vec<i16>,
    value: Vec<String>,
    shard: Vec<i64>,
}

/// Column arrays of `index_source` rows.
#[derive(Default)]
struct IndexSourceRows {
    rid: Vec<i64>,
    shard: Vec<i64>,
    source_id: Vec<String>,
    class: Vec<Option<i16>>,
    holder_org: Vec<Option<String>>,
    holder_division: Vec<Option<String>>,
}

/// Column arrays of `compartment_ref` rows.
#[derive(Default)]
struct RefRows {
    shard: Vec<i64>,
    patient: Vec<String>,
    rid: Vec<i64>,
    home: Vec<i64>,
}

impl RefRows {
    fn push(&mut self, slot: &Slot, patient: String) {
        self.shard.push(shard_key(&patient));
        self.patient.push(patient);
        self.rid.push(slot.rid);
        self.home.push(slot.shard);
    }
}

/// Column arrays of `consent_rule` rows.
#[derive(Default)]
struct ConsentRows {
    consent_rid: Vec<i64>,
    n: Vec<i32>,
    patient_id: Vec<String>,
    node: Vec<String>,
    permit: Vec<i16>,
    actor: Vec<Option<String>>,
    class_tid: Vec<Option<i32>>,
    start_ms: Vec<Option<i64>>,
    end_ms: Vec<Option<i64>>,
}

/// On Citus, appends the `shard` column's values to `params` and returns the column-list
/// and `unnest` argument fragments that write it (`, shard` and `, $N::bigint[]`); nothing
/// elsewhere.
fn shard_column<'a>(
    citus: bool,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
    shards: &'a Vec<i64>,
) -> (&'static str, String) {
    if !citus {
        return ("", String::new());
    }
    params.push(shards);
    (", shard", format!(", ${}::bigint[]", params.len()))
}

/// `INSERT INTO {table} (rid, n, pid, grp, <columns>) SELECT * FROM unnest(…)` of the rows of
/// `key` and the column arrays `values` (of the `columns`' SQL types), plus `shard` on Citus.
fn insert_unnest<'a>(
    conn: &mut super::pool::PgConn,
    citus: bool,
    table: &str,
    key: &'a Key,
    columns: &[(&str, &str)],
    values: Vec<&'a (dyn ToSql + Sync)>,
) -> StoreResult<()> {
    if key.rid.is_empty() {
        return Ok(());
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key.rid, &key.n, &key.pid, &key.grp];
    let mut names = String::new();
    let mut args = String::from("$1::bigint[], $2::integer[], $3::integer[], $4::integer[]");
    for ((name, ty), value) in columns.iter().zip(values) {
        params.push(value);
        names.push_str(&format!(", {name}"));
        args.push_str(&format!(", ${}::{ty}[]", params.len()));
    }
    let (col, arg) = shard_column(citus, &mut params, &key.shard);
    conn.execute(
        &format!(
            "INSERT INTO {table} (rid, n, pid, grp{names}{col}) SELECT * FROM unnest({args}{arg})"
        ),
        &params,
    )?;
    Ok(())
}

/// Column arrays of `resources` rows.
#[derive(Default)]
struct ResourceRows {
    rid: Vec<i64>,
    tid: Vec<i32>,
    id: Vec<String>,
    version: Vec<i64>,
    last_updated: Vec<i64>,
    deleted: Vec<bool>,
    shard: Vec<i64>,
}

impl ResourceRows {
    fn push(&mut self, s: &Slot) {
        self.rid.push(s.rid);
        self.tid.push(to_i32(s.tid));
        self.id.push(s.id.clone());
        self.version.push(s.version);
        self.last_updated.push(s.last_updated);
        self.deleted.push(s.deleted);
        self.shard.push(s.shard);
    }
}

/// Column arrays of `resource_versions` rows, in write order (which `seq` follows).
#[derive(Default)]
struct VersionRows {
    rid: Vec<i64>,
    version: Vec<i64>,
    tid: Vec<i32>,
    last_updated: Vec<i64>,
    body: Vec<Option<String>>,
    shard: Vec<i64>,
}

impl VersionRows {
    fn push(&mut self, s: &Slot, body: Option<String>) {
        self.rid.push(s.rid);
        self.version.push(s.version);
        self.tid.push(to_i32(s.tid));
        self.last_updated.push(s.last_updated);
        self.body.push(body);
        self.shard.push(s.shard);
    }

    fn insert(self, tx: &mut PgTransaction<'_>) -> StoreResult<()> {
        if self.rid.is_empty() {
            return Ok(());
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &self.rid,
            &self.version,
            &self.tid,
            &self.last_updated,
            &self.body,
        ];
        let (col, arg) = shard_column(tx.store.citus, &mut params, &self.shard);
        tx.conn.execute(
            &format!(
                "INSERT INTO resource_versions (rid, version, tid, last_updated, body{col}) \
                 SELECT rid, version, tid, last_updated, body{col} \
                 FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::bigint[], \
                 $5::text[]{arg}) \
                 WITH ORDINALITY AS u(rid, version, tid, last_updated, body{col}, o) ORDER BY o"
            ),
            &params,
        )?;
        Ok(())
    }
}

/// Pushes the key columns of row `i`.
fn key<'a>(k: &'a Key, i: usize, v: &mut Vec<&'a (dyn ToSql + Sync)>) {
    v.push(&k.rid[i]);
    v.push(&k.n[i]);
    v.push(&k.pid[i]);
    v.push(&k.grp[i]);
}

/// The key columns every index table starts with, and the resource's shard (Citus).
#[derive(Default)]
struct Key {
    rid: Vec<i64>,
    n: Vec<i32>,
    pid: Vec<i32>,
    grp: Vec<Option<i32>>,
    shard: Vec<i64>,
}

impl Key {
    fn push(&mut self, (rid, shard): (i64, i64), n: i32, pid: i64, grp: Option<i32>) {
        self.rid.push(rid);
        self.n.push(n);
        self.pid.push(to_i32(pid));
        self.grp.push(grp);
        self.shard.push(shard);
    }
}

/// Column arrays of the rows of every index table.
#[derive(Default)]
struct IndexRows {
    string: Key,
    string_norm: Vec<String>,
    string_exact: Vec<String>,
    token: Key,
    token_system: Vec<Option<String>>,
    token_code: Vec<Option<String>>,
    token_text: Vec<Option<String>>,
    date: Key,
    date_start: Vec<i64>,
    date_end: Vec<i64>,
    number: Key,
    number_value: Vec<Option<f64>>,
    number_low: Vec<Option<f64>>,
    number_high: Vec<Option<f64>>,
    quantity: Key,
    quantity_value: Vec<Option<f64>>,
    quantity_low: Vec<Option<f64>>,
    quantity_high: Vec<Option<f64>>,
    quantity_system: Vec<Option<String>>,
    quantity_code: Vec<Option<String>>,
    quantity_unit: Vec<Option<String>>,
    reference: Key,
    reference_target_tid: Vec<Option<i32>>,
    reference_target_id: Vec<Option<String>>,
    reference_url: Vec<Option<String>>,
    reference_version: Vec<Option<String>>,
    reference_id_system: Vec<Option<String>>,
    reference_id_value: Vec<Option<String>>,
    uri: Key,
    uri_uri: Vec<String>,
}

impl IndexRows {
    /// Adds the rows of one resource's entries, numbered by [`ingest::index_rows`] exactly as
    /// the SQLite backend numbers them.
    fn add(
        &mut self,
        store: &PostgresStore,
        tid: i64,
        rid: (i64, i64),
        entries: &[IndexEntry],
    ) -> StoreResult<()> {
        ingest::index_rows(
            self,
            entries,
            |_, code| store.catalog.ensure_param(tid, code),
            |rows, n, pid, grp, value| {
                rows.value(store, rid, to_i32(n), pid, grp.map(to_i32), value)
            },
        )
    }

    fn value(
        &mut self,
        store: &PostgresStore,
        rid: (i64, i64),
        n: i32,
        pid: i64,
        grp: Option<i32>,
        value: &IndexValue,
    ) -> StoreResult<()> {
        match value {
            IndexValue::String { normalized, exact } => {
                self.string.push(rid, n, pid, grp);
                self.string_norm.push(text(normalized));
                self.string_exact.push(text(exact));
            }
            IndexValue::Token {
                system,
                code,
                text: t,
            } => {
                self.token.push(rid, n, pid, grp);
                self.token_system.push(opt_text(system));
                self.token_code.push(opt_text(code));
                self.token_text.push(opt_text(t));
            }
            IndexValue::Date { start, end } => {
                self.date.push(rid, n, pid, grp);
                self.date_start.push(*start);
                self.date_end.push(*end);
            }
            IndexValue::Number { value, low, high } => {
                self.number.push(rid, n, pid, grp);
                self.number_value.push(finite(*value));
                self.number_low.push(finite(*low));
                self.number_high.push(finite(*high));
            }
            IndexValue::Quantity {
                value,
                low,
                high,
                system,
                code,
                unit,
            } => {
                self.quantity.push(rid, n, pid, grp);
                self.quantity_value.push(finite(*value));
                self.quantity_low.push(finite(*low));
                self.quantity_high.push(finite(*high));
                self.quantity_system.push(opt_text(system));
                self.quantity_code.push(opt_text(code));
                self.quantity_unit.push(opt_text(unit));
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
                version,
                identifier,
            } => {
                let target_tid = match target_type {
                    Some(t) => Some(to_i32(store.catalog.ensure_type(t)?)),
                    None => None,
                };
                let (id_system, id_value) = match identifier {
                    Some((s, v)) => (opt_text(s), Some(text(v))),
                    None => (None, None),
                };
                self.reference.push(rid, n, pid, grp);
                self.reference_target_tid.push(target_tid);
                self.reference_target_id.push(opt_text(target_id));
                self.reference_url.push(opt_text(url));
                self.reference_version.push(opt_text(version));
                self.reference_id_system.push(id_system);
                self.reference_id_value.push(id_value);
            }
            IndexValue::Uri(uri) => {
                self.uri.push(rid, n, pid, grp);
                self.uri_uri.push(text(uri));
            }
            // Composites nest only one level deep; a nested one has no meaningful rows.
            IndexValue::Composite(_) => {}
        }
        Ok(())
    }

    /// One multi-row insert per table that has rows, by prepared statements.
    fn insert_prepared(&self, tx: &mut PgTransaction<'_>) -> StoreResult<()> {
        let citus = tx.store.citus;
        let c = &mut tx.conn;
        insert_unnest(
            c,
            citus,
            "idx_string",
            &self.string,
            &[("norm", "text"), ("exact", "text")],
            vec![&self.string_norm, &self.string_exact],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_token",
            &self.token,
            &[("system", "text"), ("code", "text"), ("text", "text")],
            vec![&self.token_system, &self.token_code, &self.token_text],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_date",
            &self.date,
            &[("start", "bigint"), ("\"end\"", "bigint")],
            vec![&self.date_start, &self.date_end],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_number",
            &self.number,
            &[("value", "float8"), ("low", "float8"), ("high", "float8")],
            vec![&self.number_value, &self.number_low, &self.number_high],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_quantity",
            &self.quantity,
            &[
                ("value", "float8"),
                ("low", "float8"),
                ("high", "float8"),
                ("system", "text"),
                ("code", "text"),
                ("unit", "text"),
            ],
            vec![
                &self.quantity_value,
                &self.quantity_low,
                &self.quantity_high,
                &self.quantity_system,
                &self.quantity_code,
                &self.quantity_unit,
            ],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_reference",
            &self.reference,
            &[
                ("target_tid", "integer"),
                ("target_id", "text"),
                ("url", "text"),
                ("version", "text"),
                ("id_system", "text"),
                ("id_value", "text"),
            ],
            vec![
                &self.reference_target_tid,
                &self.reference_target_id,
                &self.reference_url,
                &self.reference_version,
                &self.reference_id_system,
                &self.reference_id_value,
            ],
        )?;
        insert_unnest(
            c,
            citus,
            "idx_uri",
            &self.uri,
            &[("uri", "text")],
            vec![&self.uri_uri],
        )
    }

    /// Writes the rows: prepared multi-row inserts for a few (a single write: one round trip
    /// per table, statements already parsed), binary `COPY` for many (bulk loads).
    fn insert(self, tx: &mut PgTransaction<'_>) -> StoreResult<()> {
        let rows = [
            &self.string,
            &self.token,
            &self.date,
            &self.number,
            &self.quantity,
            &self.reference,
            &self.uri,
        ]
        .iter()
        .map(|k| k.rid.len())
        .sum::<usize>();
        if rows < COPY_MIN_ROWS {
            self.insert_prepared(tx)
        } else {
            self.insert_copy(tx)
        }
    }

    /// One binary `COPY` per table that has rows.
    fn insert_copy(&self, tx: &mut PgTransaction<'_>) -> StoreResult<()> {
        use postgres::types::Type as T;
        const KEY: [T; 4] = [T::INT8, T::INT4, T::INT4, T::INT4];
        let citus = tx.store.citus;
        let c = &mut tx.conn;
        let s = self;
        // On Citus every row also carries its shard, after the table's own columns.
        let sql = |head: &str| {
            let (cols, rest) = head.split_once(')').unwrap_or((head, ""));
            let shard = if citus { ", shard" } else { "" };
            format!("COPY {cols}{shard}){rest} FROM STDIN BINARY")
        };
        let types = |own: &[T]| {
            let mut all = [&KEY[..], own].concat();
            if citus {
                all.push(T::INT8);
            }
            all
        };
        if !s.string.rid.is_empty() {
            c.copy_in(
                &sql("idx_string (rid, n, pid, grp, norm, exact)"),
                &types(&[T::TEXT, T::TEXT]),
                s.string.rid.len(),
                |i, v| {
                    key(&s.string, i, v);
                    v.push(&s.string_norm[i]);
                    v.push(&s.string_exact[i]);
                    if citus {
                        v.push(&s.string.shard[i]);
                    }
                },
            )?;
        }
        if !s.token.rid.is_empty() {
            c.copy_in(
                &sql("idx_token (rid, n, pid, grp, system, code, text)"),
                &types(&[T::TEXT, T::TEXT, T::TEXT]),
                s.token.rid.len(),
                |i, v| {
                    key(&s.token, i, v);
                    v.push(&s.token_system[i]);
                    v.push(&s.token_code[i]);
                    v.push(&s.token_text[i]);
                    if citus {
                        v.push(&s.token.shard[i]);
                    }
                },
            )?;
        }
        if !s.date.rid.is_empty() {
            c.copy_in(
                &sql("idx_date (rid, n, pid, grp, start, \"end\")"),
                &types(&[T::INT8, T::INT8]),
                s.date.rid.len(),
                |i, v| {
                    key(&s.date, i, v);
                    v.push(&s.date_start[i]);
                    v.push(&s.date_end[i]);
                    if citus {
                        v.push(&s.date.shard[i]);
                    }
                },
            )?;
        }
        if !s.number.rid.is_empty() {
            c.copy_in(
                &sql("idx_number (rid, n, pid, grp, value, low, high)"),
                &types(&[T::FLOAT8, T::FLOAT8, T::FLOAT8]),
                s.number.rid.len(),
                |i, v| {
                    key(&s.number, i, v);
                    v.push(&s.number_value[i]);
                    v.push(&s.number_low[i]);
                    v.push(&s.number_high[i]);
                    if citus {
                        v.push(&s.number.shard[i]);
                    }
                },
            )?;
        }
        if !s.quantity.rid.is_empty() {
            c.copy_in(
                &sql("idx_quantity (rid, n, pid, grp, value, low, high, system, code, unit)"),
                &types(&[T::FLOAT8, T::FLOAT8, T::FLOAT8, T::TEXT, T::TEXT, T::TEXT]),
                s.quantity.rid.len(),
                |i, v| {
                    key(&s.quantity, i, v);
                    v.push(&s.quantity_value[i]);
                    v.push(&s.quantity_low[i]);
                    v.push(&s.quantity_high[i]);
                    v.push(&s.quantity_system[i]);
                    v.push(&s.quantity_code[i]);
                    v.push(&s.quantity_unit[i]);
                    if citus {
                        v.push(&s.quantity.shard[i]);
                    }
                },
            )?;
        }
        if !s.reference.rid.is_empty() {
            c.copy_in(
                &sql(
                    "idx_reference (rid, n, pid, grp, target_tid, target_id, url, version, \
                 id_system, id_value)",
                ),
                &types(&[T::INT4, T::TEXT, T::TEXT, T::TEXT, T::TEXT, T::TEXT]),
                s.reference.rid.len(),
                |i, v| {
                    key(&s.reference, i, v);
                    v.push(&s.reference_target_tid[i]);
                    v.push(&s.reference_target_id[i]);
                    v.push(&s.reference_url[i]);
                    v.push(&s.reference_version[i]);
                    v.push(&s.reference_id_system[i]);
                    v.push(&s.reference_id_value[i]);
                    if citus {
                        v.push(&s.reference.shard[i]);
                    }
                },
            )?;
        }
        if !s.uri.rid.is_empty() {
            c.copy_in(
                &sql("idx_uri (rid, n, pid, grp, uri)"),
                &types(&[T::TEXT]),
                s.uri.rid.len(),
                |i, v| {
                    key(&s.uri, i, v);
                    v.push(&s.uri_uri[i]);
                    if citus {
                        v.push(&s.uri.shard[i]);
                    }
                },
            )?;
        }
        Ok(())
    }
}

/// PostgreSQL text cannot hold NUL; a NUL in an index value could never be searched for
/// anyway, so it is dropped (the stored body keeps it, escaped by JSON).
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "")
    } else {
        s.to_owned()
    }
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

/// Writes many resources in one transaction. Index extraction (the expensive, CPU-bound part)
/// runs on all cores before the transaction starts. A batch that loses a deadlock against a
/// concurrent writer is retried from the start: nothing of it was committed.
pub(crate) fn bulk_write(
    store: &PostgresStore,
    requests: Vec<WriteRequest>,
) -> StoreResult<Vec<StoredResource>> {
    let entries = extract_parallel(&store.extractor, &requests)?;
    let items: Vec<Item> = requests
        .into_iter()
        .map(|mut r| {
            r.expected_version = None;
            r
        })
        .zip(entries)
        .collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = (|| {
            let mut tx = PgTransaction::begin(store, true)?;
            let out = tx.write_batch(items.clone(), false)?;
            tx.commit_inner()?;
            Ok(out)
        })();
        match result {
            Err(StoreError::Busy) if attempt < BULK_ATTEMPTS => continue,
            Ok(out) => {
                store.after_bulk(out.len());
                return Ok(out);
            }
            other => return other,
        }
    }
}

/// Computes the access labels of every stored resource from its newest content, for a
/// database migrated from before schema v3 (marked in `access_backfill`). Several servers may
/// run it at once: each batch relabels rows idempotently and moves the mark forward.
pub(crate) fn backfill_access_labels(store: &PostgresStore) -> StoreResult<u64> {
    let mut done = 0_u64;
    loop {
        let mut tx = PgTransaction::begin(store, true)?;
        let Some(mark) = tx
            .conn
            .query_opt("SELECT after_rid FROM access_backfill FOR UPDATE", &[])?
        else {
            return Ok(done);
        };
        let after: i64 = mark.get(0);
        let rows = tx.conn.query(
            if store.citus {
                "SELECT r.rid, r.tid, r.id, (SELECT v.body FROM resource_versions v \
                 WHERE v.shard = r.shard AND v.rid = r.rid AND v.body IS NOT NULL \
                 ORDER BY v.version DESC LIMIT 1), r.shard \
                 FROM resources r WHERE r.rid > $1 ORDER BY r.rid LIMIT 1000"
            } else {
                "SELECT r.rid, r.tid, r.id, (SELECT v.body FROM resource_versions v \
                 WHERE v.rid = r.rid AND v.body IS NOT NULL ORDER BY v.version DESC LIMIT 1), \
                 0::bigint FROM resources r WHERE r.rid > $1 ORDER BY r.rid LIMIT 1000"
            },
            &[&after],
        )?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else {
            tx.conn.execute("DELETE FROM access_backfill", &[])?;
            tx.commit_inner()?;
            return Ok(done);
        };
        let mut slots = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(text) = row.get::<_, Option<String>>(3) else {
                continue;
            };
            let body: Value = serde_json::from_str(&text).map_err(|e| backend(e.to_string()))?;
            let entries = (store.extractor)(&body);
            slots.push(Slot {
                tid: i64::from(row.get::<_, i32>(1)),
                id: row.get(2),
                rid: row.get(0),
                version: 0,
                last_updated: 0,
                deleted: false,
                stored: true,
                had_index: false,
                dirty: true,
                labels: Some(phip_fhir::access::labels(&body, &entries)),
                entries: None,
                shard: row.get(4),
                facts: None,
            });
        }
        tx.write_access_labels(slots.iter())?;
        tx.conn
            .execute("UPDATE access_backfill SET after_rid = $1", &[&last])?;
        tx.commit_inner()?;
        done += slots.len() as u64;
    }
}
