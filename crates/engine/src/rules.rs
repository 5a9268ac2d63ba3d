//! Business rules checked on every write, inside the write's own transaction.
//!
//! Workflows (referral task state machines, one-time dispensing, slot booking) must hold no
//! matter how a client writes: a REST update, a JSON Patch, a conditional update or an entry
//! of a transaction bundle. Rules therefore wrap the store transaction, the same way the
//! patient index does, and see every [`WriteRequest`] before it reaches the store, with the
//! version it replaces and the principal asking.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use phip_store::{
    Access, HistoryPage, HistoryQuery, SearchPage, SearchRequest, StoreError, StoreResult,
    StoredResource, Transaction, WriteRequest,
};

use crate::{FhirError, FhirResult, Principal};

/// A rule consulted before each write of the resource types it [applies to](WriteRule::applies_to).
///
/// A rule refuses a write by returning an error (its status and OperationOutcome reach the
/// client unchanged, and the whole transaction rolls back). It may also amend the request, or
/// write other resources through [`RuleContext::tx`]; those writes are part of the same
/// transaction but are not themselves checked by rules.
pub trait WriteRule: Send + Sync {
    /// A short name, for logs.
    fn name(&self) -> &str;

    /// Whether writes of `resource_type` concern this rule (a cheap filter run first).
    fn applies_to(&self, resource_type: &str) -> bool;

    /// Checks, and may amend, one write.
    fn check(&self, context: &mut RuleContext<'_>, request: &mut WriteRequest) -> FhirResult<()>;
}

/// What a rule knows about the write it checks.
pub struct RuleContext<'a> {
    /// Who is writing.
    pub principal: &'a Principal,
    /// The version being replaced (possibly a deletion), or `None` for a new resource.
    pub current: Option<StoredResource>,
    /// The transaction the write belongs to, for lookups and dependent writes.
    pub tx: &'a mut dyn Transaction,
}

/// The rules an engine enforces, in registration order.
#[derive(Clone, Default)]
pub struct WriteRules {
    rules: Vec<Arc<dyn WriteRule>>,
}

impl std::fmt::Debug for WriteRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|r| r.name()))
            .finish()
    }
}

impl WriteRules {
    /// Adds a rule, checked after those added before it.
    pub fn push(&mut self, rule: Arc<dyn WriteRule>) {
        self.rules.push(rule);
    }

    /// Whether no rule is registered.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A transaction that runs the engine's rules before every write.
pub(crate) struct RuledTransaction<'a> {
    inner: Box<dyn Transaction + 'a>,
    rules: &'a WriteRules,
    principal: Principal,
}

impl<'a> RuledTransaction<'a> {
    pub(crate) fn new(
        inner: Box<dyn Transaction + 'a>,
        rules: &'a WriteRules,
        principal: &Principal,
    ) -> Self {
        Self {
            inner,
            rules,
            principal: principal.clone(),
        }
    }
}

fn refused(error: FhirError) -> StoreError {
    StoreError::Refused(Box::new(error))
}

impl Transaction for RuledTransaction<'_> {
    fn read(&mut self, resource_type: &str, id: &str) -> StoreResult<Option<StoredResource>> {
        self.inner.read(resource_type, id)
    }

    fn vread(
        &mut self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> StoreResult<Option<StoredResource>> {
        self.inner.vread(resource_type, id, version_id)
    }

    fn write(&mut self, mut request: WriteRequest) -> StoreResult<StoredResource> {
        let applicable: Vec<&Arc<dyn WriteRule>> = self
            .rules
            .rules
            .iter()
            .filter(|rule| rule.applies_to(&request.resource_type))
            .collect();
        if !applicable.is_empty() {
            let current = self.inner.read(&request.resource_type, &request.id)?;
            let mut context = RuleContext {
                principal: &self.principal,
                current,
                tx: self.inner.as_mut(),
            };
            for rule in applicable {
                rule.check(&mut context, &mut request).map_err(refused)?;
            }
        }
        self.inner.write(request)
    }

    fn search(&mut self, request: &SearchRequest) -> StoreResult<SearchPage> {
        self.inner.search(request)
    }

    fn history(&mut self, query: &HistoryQuery) -> StoreResult<HistoryPage> {
        self.inner.history(query)
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
        self.inner
            .patient_compartment(patient_id, types, since, count, cursor, access)
    }

    fn visible(&mut self, resource_type: &str, id: &str, access: &Access) -> StoreResult<bool> {
        self.inner.visible(resource_type, id, access)
    }

    fn commit(self: Box<Self>) -> StoreResult<()> {
        self.inner.commit()
    }
}
