//! The personal health information index (master patient index) inside the engine.
//!
//! Every `Patient` a client writes is a *source record* of some institution. The index keeps
//! one *golden record* per person: a `Patient` tagged [`GOLDEN_TAG_CODE`] that the index alone
//! writes, carrying the union of its sources' identifiers and the best demographics, with a
//! `link` of type `seealso` to each source. Each source carries a `link` of type `refer` to its
//! golden record (IHE PMIR / FHIR R4 `Patient.link` semantics). Merging two persons marks the
//! absorbed golden record inactive with `replaced-by`; unmerging restores it from its own
//! history, so nothing is ever destroyed.
//!
//! Matching runs inside the write transaction ([`IndexedTransaction`]): deterministic rules on
//! trusted identifiers, then Fellegi–Sunter scores from `phip-mpi`. Above the auto-link
//! threshold a source joins the best person; between the thresholds it gets a person of its
//! own plus a review `Task` per candidate; below, a new person. Rejected pairs are never
//! proposed again.
//!
//! The in-memory index is rebuilt from the store when the engine opens and kept in step with
//! every committed write of this process. Writers that change the index are serialised by a
//! process-wide lock held until their transaction ends.

mod golden;
mod identity;
mod matching;
mod ops;
mod review;
mod tx;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use phip_fhir::search::query;
use phip_store::{PageCursor, SearchRequest, Store};
use serde_json::Value;

pub use identity::prepare_patient;
pub use matching::MatchGrade;
pub use ops::{MatchResult, PixResult};
pub(crate) use tx::IndexedTransaction;

use crate::{FhirError, FhirResult};
use matching::Matcher;

/// Code system of the index's own tags and task codes.
pub const MPI_SYSTEM: &str = "urn:phip:mpi";
/// Tag code marking a golden (master) record.
pub const GOLDEN_TAG_CODE: &str = "golden";
/// Identifier system of the person identifier the index assigns to each golden record.
pub const PERSON_ID_SYSTEM: &str = "urn:phip:mpi:person";
/// `Task.code` of a review-queue item.
pub const REVIEW_TASK_CODE: &str = "match-review";

/// Fewest source records from which the weights are learned; below it the built-in
/// weights (typical registration error rates) are used, since EM on a handful of records
/// fits noise.
pub const MIN_TRAINING_RECORDS: usize = 1000;

/// Settings of the index.
#[derive(Debug, Clone)]
pub struct MpiConfig {
    /// Whether Patient writes go through the index at all.
    pub enabled: bool,
    /// Match probability at or above which a source is linked automatically.
    pub auto_link: f64,
    /// Match probability at or above which a pair goes to the review queue.
    pub review: f64,
}

impl Default for MpiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auto_link: 0.95,
            review: 0.50,
        }
    }
}

/// The linking state shared by all requests.
pub(crate) struct IndexState {
    /// Blocking index and scorer over source records.
    pub matcher: Matcher,
    /// Source record id → golden record id.
    pub golden_of: HashMap<String, String>,
    /// Golden record id → its source record ids.
    pub sources_of: HashMap<String, BTreeSet<String>>,
    /// Pairs of source ids a reviewer declared different persons (stored smaller id first).
    pub rejected: HashSet<(String, String)>,
}

impl IndexState {
    fn new(config: &MpiConfig) -> Self {
        Self {
            matcher: Matcher::new(config.auto_link, config.review),
            golden_of: HashMap::new(),
            sources_of: HashMap::new(),
            rejected: HashSet::new(),
        }
    }

    pub fn is_rejected(&self, a: &str, b: &str) -> bool {
        self.rejected.contains(&ordered_pair(a, b))
    }
}

/// A pair of ids in canonical order.
pub(crate) fn ordered_pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The master patient index of one engine.
pub struct MpiService {
    config: MpiConfig,
    state: RwLock<IndexState>,
    /// Held by a transaction from its first Patient access until it commits or rolls back.
    writer: Arc<Mutex<()>>,
    /// Set when a commit failed after its index changes were made: the in-memory state may
    /// hold changes that never became durable and is rebuilt from the store before next use.
    stale: AtomicBool,
}

impl MpiService {
    /// Builds the index from every Patient in `store`.
    pub fn load(store: &dyn Store, config: MpiConfig) -> FhirResult<Self> {
        let mut state = IndexState::new(&config);
        if config.enabled {
            load_state(store, &mut state)?;
        }
        if state.matcher.len() >= MIN_TRAINING_RECORDS {
            let report = state.matcher.train();
            tracing::info!(
                iterations = report.em.iterations,
                converged = report.em.converged,
                blocked_pairs = report.blocked_pairs,
                "patient index weights learned from the data (EM)"
            );
        }
        if state.matcher.len() > 0 {
            tracing::info!(
                sources = state.matcher.len(),
                persons = state.sources_of.len(),
                "patient index loaded"
            );
        }
        Ok(Self {
            config,
            state: RwLock::new(state),
            writer: Arc::new(Mutex::new(())),
            stale: AtomicBool::new(false),
        })
    }

    /// Marks the in-memory state for a rebuild.
    pub(crate) fn mark_stale(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Rebuilds the in-memory state from the store if a failed commit left it stale.
    pub(crate) fn refresh_if_stale(&self, store: &dyn Store) -> FhirResult<()> {
        if !self.stale.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _writer = self.writer.lock();
        if !self.stale.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let mut fresh = IndexState::new(&self.config);
        if let Err(error) = load_state(store, &mut fresh) {
            self.stale.store(true, Ordering::SeqCst);
            return Err(error);
        }
        if fresh.matcher.len() >= MIN_TRAINING_RECORDS {
            fresh.matcher.train();
        }
        *self.state.write() = fresh;
        tracing::warn!("patient index rebuilt from the store after a failed commit");
        Ok(())
    }

    /// The index's settings.
    pub fn config(&self) -> &MpiConfig {
        &self.config
    }

    /// Re-learns the matching weights from the records now indexed (EM); refused below
    /// [`MIN_TRAINING_RECORDS`].
    pub fn retrain(&self) -> Option<phip_mpi::TrainReport> {
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        if state.matcher.len() < MIN_TRAINING_RECORDS {
            return None;
        }
        Some(state.matcher.train())
    }

    /// Number of source records indexed.
    pub fn source_count(&self) -> usize {
        self.state.read().matcher.len()
    }

    /// Number of persons (golden records with at least one source).
    pub fn person_count(&self) -> usize {
        self.state.read().sources_of.len()
    }

    /// The golden record id of a source record, if it is linked.
    pub fn golden_of(&self, source_id: &str) -> Option<String> {
        self.state.read().golden_of.get(source_id).cloned()
    }

    /// The source record ids of a golden record.
    pub fn sources_of(&self, golden_id: &str) -> Vec<String> {
        self.state
            .read()
            .sources_of
            .get(golden_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Whether a Patient body is a golden record.
pub fn is_golden(resource: &Value) -> bool {
    resource
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("system").and_then(Value::as_str) == Some(MPI_SYSTEM)
                    && t.get("code").and_then(Value::as_str) == Some(GOLDEN_TAG_CODE)
            })
        })
}

/// Reads every current Patient (sources and golden records) and the rejected review items.
fn load_state(store: &dyn Store, state: &mut IndexState) -> FhirResult<()> {
    let mut tx = store.begin_read()?;
    let parsed = query::parse(Some("Patient"), &[], true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut cursor = PageCursor::First;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 1000,
            access: phip_store::Access::Server,
        })?;
        for stored in &page.matches {
            let Some(resource) = &stored.resource else {
                continue;
            };
            if is_golden(resource) {
                if resource.get("active").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let sources: BTreeSet<String> = golden::linked_ids(resource, "seealso");
                for source in &sources {
                    state.golden_of.insert(source.clone(), stored.id.clone());
                }
                if !sources.is_empty() {
                    state.sources_of.insert(stored.id.clone(), sources);
                }
            } else {
                state.matcher.insert(&stored.id, resource);
            }
        }
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => break,
        }
    }
    let params = vec![
        (
            "code".to_owned(),
            format!("{MPI_SYSTEM}|{REVIEW_TASK_CODE}"),
        ),
        ("status".to_owned(), "rejected".to_owned()),
        // Only the index's own review items (a client cannot forge one).
        (
            "_tag".to_owned(),
            format!(
                "{}|{}",
                phip_fhir::access::SERVER_OWNED_SYSTEM,
                review::REVIEW_KIND
            ),
        ),
    ];
    let parsed = query::parse(Some("Task"), &params, true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut cursor = PageCursor::First;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 1000,
            access: phip_store::Access::Server,
        })?;
        for task in page.matches.iter().filter_map(|m| m.resource.as_ref()) {
            if let Some((a, b)) = review::pair_of(task) {
                state.rejected.insert(ordered_pair(&a, &b));
            }
        }
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => break,
        }
    }
    Ok(())
}
