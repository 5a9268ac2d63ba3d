//! A store transaction that routes every Patient write through the index.
//!
//! Wrapping the transaction (rather than calling the index from each interaction) means
//! single writes, conditional writes, patches, transaction and batch bundles all link
//! Patients by the same rules, inside the same database transaction as the write itself: a
//! source record, its golden record and any review items commit together or not at all.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::MutexGuard;
use phip_store::{
    Access, HistoryPage, HistoryQuery, SearchPage, SearchRequest, StoreError, StoreResult,
    StoredResource, Transaction, WriteRequest,
};
use serde_json::Value;

use super::matching::IndexedRecord;
use super::{golden, is_golden, ordered_pair, review, MpiService};
use crate::interactions::new_id;

/// How long a writer waits for another writer's Patient changes to finish.
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// One change to the shared index state, remembered so that a rollback can undo it.
enum Undo {
    Record(String, Option<IndexedRecord>),
    Golden(String, Option<String>),
    Sources(String, Option<BTreeSet<String>>),
    Rejected((String, String), bool),
}

/// How an incoming source record relates to the persons already known.
pub(crate) struct Linking {
    /// The person to join, if one matched above the auto-link threshold.
    pub link_to: Option<String>,
    /// Persons between the thresholds: (golden id, best candidate source, probability, breakdown).
    pub review: Vec<review::ReviewCandidate>,
}

/// A write transaction that keeps the patient index in step with Patient writes.
pub(crate) struct IndexedTransaction<'a> {
    inner: Option<Box<dyn Transaction + 'a>>,
    mpi: &'a MpiService,
    guard: Option<MutexGuard<'a, ()>>,
    undo: Vec<Undo>,
}

impl<'a> IndexedTransaction<'a> {
    /// Wraps `inner`; the index lock is taken at the first Patient write.
    pub fn new(inner: Box<dyn Transaction + 'a>, mpi: &'a MpiService) -> Self {
        Self {
            inner: Some(inner),
            mpi,
            guard: None,
            undo: Vec::new(),
        }
    }

    fn inner(&mut self) -> StoreResult<&mut (dyn Transaction + 'a)> {
        self.inner
            .as_deref_mut()
            .ok_or_else(|| StoreError::Backend("transaction already finished".into()))
    }

    /// Takes the index writer lock for the rest of the transaction.
    pub fn lock(&mut self) -> StoreResult<()> {
        if self.guard.is_none() {
            let guard = self
                .mpi
                .writer
                .try_lock_for(WRITER_WAIT)
                .ok_or(StoreError::Busy)?;
            self.guard = Some(guard);
        }
        Ok(())
    }

    /// Takes the index lock before the first access to a Patient, so that every
    /// transaction touching Patients takes the lock before any Patient row lock (a fixed lock
    /// order, hence no deadlock between the index lock and the database's row locks).
    fn lock_for(&mut self, resource_type: Option<&str>) -> StoreResult<()> {
        if self.guard.is_none() && self.mpi.config().enabled && resource_type == Some("Patient") {
            self.lock()?;
        }
        Ok(())
    }

    pub fn mpi(&self) -> &'a MpiService {
        self.mpi
    }

    // ---- shared-state changes, each with its undo ----

    fn index_record(&mut self, id: &str, body: Option<&Value>) {
        let mut state = self.mpi.state.write();
        let previous = match body {
            Some(body) => state.matcher.insert(id, body),
            None => state.matcher.remove(id),
        };
        self.undo.push(Undo::Record(id.to_owned(), previous));
    }

    fn set_golden_of(&mut self, source: &str, golden: Option<&str>) {
        let mut state = self.mpi.state.write();
        let previous = match golden {
            Some(g) => state.golden_of.insert(source.to_owned(), g.to_owned()),
            None => state.golden_of.remove(source),
        };
        self.undo.push(Undo::Golden(source.to_owned(), previous));
    }

    fn edit_sources(&mut self, golden: &str, edit: impl FnOnce(&mut BTreeSet<String>)) {
        let mut state = self.mpi.state.write();
        let previous = state.sources_of.get(golden).cloned();
        let mut set = previous.clone().unwrap_or_default();
        edit(&mut set);
        if set.is_empty() {
            state.sources_of.remove(golden);
        } else {
            state.sources_of.insert(golden.to_owned(), set);
        }
        self.undo.push(Undo::Sources(golden.to_owned(), previous));
    }

    pub fn reject_pair(&mut self, a: &str, b: &str) {
        let pair = ordered_pair(a, b);
        let inserted = self.mpi.state.write().rejected.insert(pair.clone());
        if inserted {
            self.undo.push(Undo::Rejected(pair, false));
        }
    }

    // ---- reads of the shared state ----

    pub fn golden_of(&self, source: &str) -> Option<String> {
        self.mpi.state.read().golden_of.get(source).cloned()
    }

    pub fn sources_of(&self, golden: &str) -> BTreeSet<String> {
        self.mpi
            .state
            .read()
            .sources_of
            .get(golden)
            .cloned()
            .unwrap_or_default()
    }

    /// Scores `body` (source `id`) against the index and groups candidates by person.
    fn link_for(&self, id: &str, body: &Value) -> Linking {
        let config = self.mpi.config();
        let state = self.mpi.state.read();
        let mut best_by_person: Vec<review::ReviewCandidate> = Vec::new();
        for candidate in state.matcher.candidates(body) {
            if candidate.source_id == id {
                continue;
            }
            let Some(golden_id) = state.golden_of.get(&candidate.source_id) else {
                continue;
            };
            // A person with any source declared different from this one is never proposed.
            let excluded = state
                .sources_of
                .get(golden_id)
                .is_some_and(|sources| sources.iter().any(|s| state.is_rejected(s, id)));
            if excluded || candidate.probability < config.review {
                continue;
            }
            match best_by_person
                .iter_mut()
                .find(|c| &c.golden_id == golden_id)
            {
                Some(existing) if existing.probability >= candidate.probability => {}
                Some(existing) => {
                    *existing = review::ReviewCandidate::new(golden_id, candidate);
                }
                None => best_by_person.push(review::ReviewCandidate::new(golden_id, candidate)),
            }
        }
        best_by_person.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let link_to = best_by_person
            .first()
            .filter(|c| c.probability >= config.auto_link && c.certain_or_probable)
            .map(|c| c.golden_id.clone());
        let review = best_by_person
            .into_iter()
            .filter(|c| Some(&c.golden_id) != link_to.as_ref())
            .take(5)
            .collect();
        Linking { link_to, review }
    }

    // ---- writes ----

    /// Writes a source record (create, update or delete) and everything the index derives.
    fn write_source(&mut self, mut request: WriteRequest) -> StoreResult<StoredResource> {
        self.lock()?;
        let id = request.id.clone();
        let Some(mut body) = request.resource.take() else {
            let stored = self.inner()?.write(request)?;
            self.index_record(&id, None);
            if let Some(golden_id) = self.golden_of(&id) {
                self.set_golden_of(&id, None);
                self.edit_sources(&golden_id, |s| {
                    s.remove(&id);
                });
                self.rewrite_golden(&golden_id, None)?;
            }
            return Ok(stored);
        };
        let existing = self.golden_of(&id);
        let (golden_id, review) = match &existing {
            Some(golden_id) => (golden_id.clone(), Vec::new()),
            None => {
                let linking = self.link_for(&id, &body);
                (linking.link_to.unwrap_or_else(new_id), linking.review)
            }
        };
        golden::set_refer_link(&mut body, &golden_id);
        request.resource = Some(body);
        let stored = self.inner()?.write(request)?;
        self.index_record(&id, stored.resource.as_ref());
        if existing.is_none() {
            self.set_golden_of(&id, Some(&golden_id));
            self.edit_sources(&golden_id, |s| {
                s.insert(id.clone());
            });
        }
        self.rewrite_golden(&golden_id, None)?;
        for candidate in review {
            let task = review::new_task(&id, &golden_id, &candidate);
            self.write_internal("Task", &new_id(), Some(task), Some(0))?;
        }
        Ok(stored)
    }

    /// A write that bypasses the index rules (the index's own records).
    pub fn write_internal(
        &mut self,
        resource_type: &str,
        id: &str,
        resource: Option<Value>,
        expected_version: Option<u64>,
    ) -> StoreResult<StoredResource> {
        self.inner()?.write(WriteRequest {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            resource,
            expected_version,
        })
    }

    /// Current body of a Patient (None if missing or deleted).
    pub fn current(&mut self, id: &str) -> StoreResult<Option<StoredResource>> {
        Ok(self
            .inner()?
            .read("Patient", id)?
            .filter(|s| !s.is_deleted()))
    }

    /// Rebuilds a golden record from its current sources; deletes it when none are left.
    /// `extra_links` replaces the non-source links kept from the current version.
    pub fn rewrite_golden(
        &mut self,
        golden_id: &str,
        extra_links: Option<Vec<Value>>,
    ) -> StoreResult<()> {
        let sources = self.sources_of(golden_id);
        let current = self.inner()?.read("Patient", golden_id)?;
        let current_version = current.as_ref().map(|c| c.version_id).unwrap_or(0);
        let current_body = current.as_ref().and_then(|c| c.resource.clone());
        if sources.is_empty() {
            if current_body.is_some() {
                self.write_internal("Patient", golden_id, None, Some(current_version))?;
            }
            return Ok(());
        }
        let mut bodies = Vec::with_capacity(sources.len());
        for source in &sources {
            if let Some(stored) = self.current(source)? {
                if let Some(body) = stored.resource {
                    bodies.push((source.clone(), body));
                }
            }
        }
        let extra = extra_links.unwrap_or_else(|| {
            current_body
                .as_ref()
                .map(golden::extra_links)
                .unwrap_or_default()
        });
        let body = golden::build(golden_id, &bodies, &extra);
        if current_body
            .as_ref()
            .is_some_and(|c| without_meta_versions(c) == without_meta_versions(&body))
        {
            return Ok(());
        }
        self.write_internal("Patient", golden_id, Some(body), Some(current_version))?;
        Ok(())
    }

    /// Points a source record at another golden record (a new version of the source).
    pub fn relink_source(&mut self, source: &str, to: &str) -> StoreResult<()> {
        let Some(stored) = self.current(source)? else {
            return Ok(());
        };
        let Some(mut body) = stored.resource else {
            return Ok(());
        };
        if let Some(from) = self.golden_of(source) {
            self.edit_sources(&from, |s| {
                s.remove(source);
            });
        }
        if !golden::refers_to(&body, to) {
            golden::set_refer_link(&mut body, to);
            strip_meta_versions(&mut body);
            self.write_internal("Patient", source, Some(body), Some(stored.version_id))?;
        }
        self.set_golden_of(source, Some(to));
        self.edit_sources(to, |s| {
            s.insert(source.to_owned());
        });
        Ok(())
    }

    /// Moves every source of person `from` to person `into` and retires `from`.
    pub fn merge_persons(&mut self, from: &str, into: &str) -> StoreResult<()> {
        if from == into {
            return Ok(());
        }
        self.lock()?;
        for source in self.sources_of(from) {
            self.relink_source(&source, into)?;
        }
        if let Some(stored) = self.current(from)? {
            if let Some(previous) = &stored.resource {
                let retired = golden::retired(previous, into);
                self.write_internal("Patient", from, Some(retired), Some(stored.version_id))?;
            }
        }
        let mut extra = match self.current(into)? {
            Some(stored) => stored
                .resource
                .as_ref()
                .map(golden::extra_links)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        extra.push(serde_json::json!({"other": {"reference": format!("Patient/{from}")}, "type": "replaces"}));
        self.rewrite_golden(into, Some(extra))
    }
}

/// A copy without `meta.versionId`/`meta.lastUpdated`, for "did anything change" checks.
fn without_meta_versions(body: &Value) -> Value {
    let mut copy = body.clone();
    strip_meta_versions(&mut copy);
    copy
}

fn strip_meta_versions(body: &mut Value) {
    if let Some(meta) = body.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
}

impl Transaction for IndexedTransaction<'_> {
    fn read(&mut self, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>> {
        self.lock_for(Some(resource_type))?;
        self.inner()?.read(resource_type, id)
    }

    fn vread(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> StoreResult<Option<StoredResource>> {
        self.lock_for(Some(resource_type))?;
        self.inner()?.vread(resource_type, id, version_id)
    }

    fn write(&mut self, request: WriteRequest) -> StoreResult<StoredResource> {
        let is_source = request.resource_type == "Patient"
            && self.mpi.config().enabled
            && !request.resource.as_ref().is_some_and(is_golden);
        if is_source {
            self.write_source(request)
        } else {
            self.inner()?.write(request)
        }
    }

    fn search(&mut self, request: &SearchRequest) -> StoreResult<SearchPage> {
        self.lock_for(request.query.resource_type.as_deref())?;
        self.inner()?.search(request)
    }

    fn history(&mut self, query: &HistoryQuery) -> StoreResult<HistoryPage> {
        self.inner()?.history(query)
    }

    fn patient_compartment(
        &mut self,
        patient_id: &str,
        types: Option<&[String]>,
        since: Option<DateTime<Utc>>,
        count: usize,
        cursor: Option<&str>,
        access: &Access,
    ) -> StoreResult<(Vec<StoredResource>, Option<String>)> {
        self.inner()?
            .patient_compartment(patient_id, types, since, count, cursor, access)
    }

    fn visible(&mut self, resource_type: &str, id: &str, access: &Access) -> StoreResult<bool> {
        self.lock_for(Some(resource_type))?;
        self.inner()?.visible(resource_type, id, access)
    }

    fn commit(mut self: Box<Self>) -> StoreResult<()> {
        let inner = self
            .inner
            .take()
            .ok_or_else(|| StoreError::Backend("transaction already finished".into()))?;
        // The index lock is released before the store commits: SQLite's group commit makes a
        // commit wait for the writers queued behind it, and one of them may be waiting for
        // this lock. Later writers may thus build on changes not yet durable; should the
        // commit fail, the index is marked stale and rebuilt from the store instead of
        // being rolled back change by change.
        let changed = !self.undo.is_empty();
        self.undo.clear();
        self.guard = None;
        let result = inner.commit();
        if result.is_err() && changed {
            self.mpi.mark_stale();
        }
        result
    }
}

impl Drop for IndexedTransaction<'_> {
    fn drop(&mut self) {
        // Rolled back (or the commit failed): put the shared index back as it was, newest
        // change first, while the writer lock is still held.
        if self.undo.is_empty() {
            return;
        }
        let mut state = self.mpi.state.write();
        for undo in self.undo.drain(..).rev() {
            match undo {
                Undo::Record(id, previous) => state.matcher.restore(&id, previous),
                Undo::Golden(source, previous) => match previous {
                    Some(g) => {
                        state.golden_of.insert(source, g);
                    }
                    None => {
                        state.golden_of.remove(&source);
                    }
                },
                Undo::Sources(golden, previous) => match previous {
                    Some(set) => {
                        state.sources_of.insert(golden, set);
                    }
                    None => {
                        state.sources_of.remove(&golden);
                    }
                },
                Undo::Rejected(pair, was_present) => {
                    if !was_present {
                        state.rejected.remove(&pair);
                    }
                }
            }
        }
    }
}
