//! The in-memory blocking index: records by id, and for each blocking key the records that
//! have it.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::blocking::{self, Key};
use crate::compare::compare;
use crate::model::{FieldScore, Model, WeightTable};
use crate::record::MatchRecord;
use crate::rules::{self, RuleOutcome};

/// Tuning of a [`MatchIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexConfig {
    /// Blocks larger than this are skipped when looking for candidates: a key shared by that
    /// many records (a birth date in a city of millions, a placeholder phone) no longer
    /// singles anyone out, and comparing against all of them would be an O(n) scan.
    pub max_block: usize,
    /// Candidates below this match probability are not returned (rule outcomes always are).
    pub min_probability: f64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            max_block: 1000,
            min_probability: 0.001,
        }
    }
}

/// A stored record similar enough to a query record to be reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Id the record was inserted with.
    pub id: String,
    /// Match probability (1 for a deterministic match).
    pub probability: f64,
    /// Fellegi–Sunter match weight (log2 odds, prior included).
    pub weight: f64,
    /// Per-field levels and weights.
    pub breakdown: Vec<FieldScore>,
    /// Deterministic rule that fired, if any.
    pub rule: Option<RuleOutcome>,
}

/// Slot of a stored record.
pub(crate) type Slot = u32;

/// An in-memory index of records supporting candidate search by blocking keys.
#[derive(Debug, Clone)]
pub struct MatchIndex {
    model: Model,
    weights: WeightTable,
    config: IndexConfig,
    ids: HashMap<String, Slot>,
    slots: Vec<Option<(Box<str>, MatchRecord)>>,
    free: Vec<Slot>,
    blocks: FxHashMap<Key, Vec<Slot>>,
    len: usize,
}

impl MatchIndex {
    /// An empty index scoring with `model`.
    pub fn new(model: Model, config: IndexConfig) -> Self {
        MatchIndex {
            weights: model.weight_table(),
            model,
            config,
            ids: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            blocks: FxHashMap::default(),
            len: 0,
        }
    }

    /// The scoring model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Replaces the scoring model (after training).
    pub fn set_model(&mut self, model: Model) {
        self.weights = model.weight_table();
        self.model = model;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every stored record with its id, in storage order (for training on the index's own
    /// data).
    pub fn records(&self) -> impl Iterator<Item = (&str, &MatchRecord)> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.as_ref().map(|(id, record)| (&**id, record)))
    }

    /// The record stored under `id`.
    pub fn get(&self, id: &str) -> Option<&MatchRecord> {
        let slot = *self.ids.get(id)?;
        self.slots[slot as usize].as_ref().map(|(_, r)| r)
    }

    /// Inserts or replaces the record of `id`.
    pub fn insert(&mut self, id: &str, record: MatchRecord) {
        self.remove(id);
        let keys = blocking::keys(&record);
        let entry = Some((Box::from(id), record));
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = entry;
                s
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as Slot
            }
        };
        for k in keys {
            self.blocks.entry(k).or_default().push(slot);
        }
        self.ids.insert(id.to_string(), slot);
        self.len += 1;
    }

    /// Removes the record of `id`; returns it if it was there.
    pub fn remove(&mut self, id: &str) -> Option<MatchRecord> {
        let slot = self.ids.remove(id)?;
        let (_, record) = self.slots[slot as usize].take()?;
        for k in blocking::keys(&record) {
            if let Some(list) = self.blocks.get_mut(&k) {
                if let Some(pos) = list.iter().position(|&s| s == slot) {
                    list.swap_remove(pos);
                }
                if list.is_empty() {
                    self.blocks.remove(&k);
                }
            }
        }
        self.free.push(slot);
        self.len -= 1;
        Some(record)
    }

    /// Slots sharing at least one (not oversized) blocking key with `record`, each once.
    pub(crate) fn candidate_slots(&self, record: &MatchRecord, out: &mut Vec<Slot>) {
        out.clear();
        for k in blocking::keys(record) {
            if let Some(list) = self.blocks.get(&k) {
                if list.len() <= self.config.max_block {
                    out.extend_from_slice(list);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// The id and record in `slot`.
    pub(crate) fn slot(&self, slot: Slot) -> Option<(&str, &MatchRecord)> {
        self.slots
            .get(slot as usize)?
            .as_ref()
            .map(|(id, r)| (&**id, r))
    }

    /// Stored records that may be the same person as `record`, best first: deterministic
    /// matches and conflicts always, others when their probability reaches
    /// [`IndexConfig::min_probability`]. Records the rules prove to be different people are
    /// left out.
    pub fn candidates(&self, record: &MatchRecord) -> Vec<Candidate> {
        let mut slots = Vec::new();
        self.candidate_slots(record, &mut slots);
        let mut out = Vec::new();
        for s in slots {
            let Some((id, other)) = self.slot(s) else {
                continue;
            };
            let rule = rules::evaluate(record, other);
            if rule.as_ref().is_some_and(RuleOutcome::is_non_match) {
                continue;
            }
            let v = compare(record, other);
            let weight = self.weights.weight(&v);
            let certain = matches!(rule, Some(RuleOutcome::SameTrustedIdentifier { .. }));
            let probability = if certain {
                1.0
            } else {
                crate::model::probability(weight)
            };
            if rule.is_none() && probability < self.config.min_probability {
                continue;
            }
            out.push(Candidate {
                id: id.to_string(),
                probability,
                weight,
                breakdown: self.model.breakdown(&v),
                rule,
            });
        }
        out.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(b.weight.total_cmp(&a.weight))
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }
}
