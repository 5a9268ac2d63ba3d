//! The index's FHIR operations: `$match`, `$ihe-pix`, review decisions, merge, unmerge and
//! unlink.

use std::collections::BTreeSet;

use phip_fhir::search::query;
use phip_fhir::IssueType;
use phip_security::scope::Interaction;
use phip_store::{PageCursor, SearchRequest, StoredResource, Transaction};
use serde_json::{json, Value};

use super::{
    golden, is_golden, review, IndexedTransaction, MatchGrade, GOLDEN_TAG_CODE, MPI_SYSTEM,
};
use crate::access::{Decision, Principal};
use crate::interactions::{check_id, new_id};
use crate::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};

/// One person found by `$match`.
#[derive(Debug, Clone)]
pub struct MatchResult {
    /// The person's golden record.
    pub golden: StoredResource,
    /// Match probability of the best source record of that person.
    pub probability: f64,
    /// FHIR match grade.
    pub grade: MatchGrade,
    /// Per-field score breakdown of the best pair.
    pub breakdown: Value,
}

/// The answer of a PIX query.
#[derive(Debug, Clone, Default)]
pub struct PixResult {
    /// Identifiers of the same person in other systems.
    pub identifiers: Vec<Value>,
    /// The person's records (golden and sources), as references.
    pub references: Vec<String>,
}

/// A named parameter of a `Parameters` resource.
fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters
        .get("parameter")
        .and_then(Value::as_array)?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

/// A reference parameter (`valueReference.reference`, or `valueString`) as a Patient id.
fn patient_id_parameter(parameters: &Value, name: &str) -> FhirResult<String> {
    let param = parameter(parameters, name)
        .ok_or_else(|| FhirError::bad_request(format!("the parameter {name:?} is required")))?;
    let reference = param
        .pointer("/valueReference/reference")
        .or_else(|| param.get("valueString"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FhirError::bad_request(format!(
                "the parameter {name:?} must be a Reference to a Patient"
            ))
        })?;
    let id = reference.strip_prefix("Patient/").ok_or_else(|| {
        FhirError::bad_request(format!(
            "the parameter {name:?} must reference a Patient, not {reference:?}"
        ))
    })?;
    check_id(id)?;
    Ok(id.to_owned())
}

impl Engine {
    /// The caller must be able to search all Patients (not only one compartment).
    fn require_index_reader(&self, ctx: &RequestContext) -> FhirResult<()> {
        match ctx.principal.require("Patient", Interaction::Search)? {
            Decision::Full => Ok(()),
            _ => Err(FhirError::new(
                403,
                IssueType::Forbidden,
                "the patient index can only be queried with access to all Patients (a system or user scope, not a patient grant)",
            )),
        }
    }

    /// Changing links requires update rights on all Patients.
    fn require_index_steward(&self, ctx: &RequestContext) -> FhirResult<()> {
        match ctx.principal.require("Patient", Interaction::Update)? {
            Decision::Full => Ok(()),
            _ => Err(FhirError::new(
                403,
                IssueType::Forbidden,
                "linking decisions need update rights on all Patients",
            )),
        }
    }

    /// Persons that may be the Patient described by `patient`, best first, among those
    /// `principal` may see.
    pub fn match_persons(
        &self,
        principal: &Principal,
        patient: &Value,
        count: usize,
    ) -> FhirResult<Vec<MatchResult>> {
        let mpi = self.mpi()?;
        let mut best: Vec<(String, super::matching::Candidate)> = Vec::new();
        {
            let state = mpi.state.read();
            for candidate in state.matcher.candidates(patient) {
                let Some(golden_id) = state.golden_of.get(&candidate.source_id) else {
                    continue;
                };
                match best.iter_mut().find(|(g, _)| g == golden_id) {
                    Some((_, existing)) if existing.probability >= candidate.probability => {}
                    Some((_, existing)) => *existing = candidate,
                    None => best.push((golden_id.clone(), candidate)),
                }
            }
        }
        best.sort_by(|a, b| b.1.probability.total_cmp(&a.1.probability));
        let mut tx = self.store().begin_read()?;
        let mut results = Vec::with_capacity(count.min(best.len()));
        for (golden_id, candidate) in best {
            if results.len() >= count {
                break;
            }
            // A person the caller cannot see is not a candidate it hears of.
            if !principal.can_see(tx.as_mut(), "Patient", &golden_id)? {
                continue;
            }
            let Some(stored) = tx.read("Patient", &golden_id)?.filter(|s| !s.is_deleted()) else {
                continue;
            };
            results.push(MatchResult {
                golden: stored,
                probability: candidate.probability,
                grade: candidate.grade,
                breakdown: candidate.breakdown,
            });
        }
        Ok(results)
    }

    /// `POST [base]/Patient/$match`: a searchset of persons with `search.score` and the
    /// `match-grade` extension.
    pub fn patient_match(
        &self,
        ctx: &RequestContext,
        parameters: &Value,
    ) -> FhirResult<FhirResponse> {
        self.require_index_reader(ctx)?;
        let patient = match parameters.get("resourceType").and_then(Value::as_str) {
            Some("Parameters") => parameter(parameters, "resource")
                .and_then(|p| p.get("resource"))
                .ok_or_else(|| {
                    FhirError::bad_request(
                        "$match needs a \"resource\" parameter holding a Patient",
                    )
                })?,
            Some("Patient") => parameters,
            _ => {
                return Err(FhirError::bad_request(
                    "$match takes a Parameters resource (or a Patient)",
                ))
            }
        };
        if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(FhirError::bad_request(
                "the \"resource\" parameter of $match must be a Patient",
            ));
        }
        phip_fhir::validate::validate_resource(patient)
            .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
        let only_certain = parameter(parameters, "onlyCertainMatches")
            .and_then(|p| p.get("valueBoolean"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let count = parameter(parameters, "count")
            .and_then(|p| p.get("valueInteger"))
            .and_then(Value::as_u64)
            .map(|c| c.clamp(1, 100) as usize)
            .unwrap_or(10);
        let mut results = self.match_persons(&ctx.principal, patient, count)?;
        if only_certain {
            results.retain(|r| r.grade == MatchGrade::Certain);
            results.truncate(1);
        }
        let base = &ctx.base_url;
        let entries: Vec<Value> = results
            .iter()
            .filter_map(|r| {
                let resource = r.golden.resource.clone()?;
                Some(json!({
                    "fullUrl": format!("{base}/Patient/{}", r.golden.id),
                    "resource": resource,
                    "search": {
                        "mode": "match",
                        "score": (r.probability * 1000.0).round() / 1000.0,
                        "extension": [{
                            "url": "http://hl7.org/fhir/StructureDefinition/match-grade",
                            "valueCode": r.grade.code()
                        }, {
                            "url": "urn:phip:mpi:score-breakdown",
                            "valueString": r.breakdown.to_string()
                        }]
                    }
                }))
            })
            .collect();
        let mut bundle = json!({
            "resourceType": "Bundle",
            "id": new_id(),
            "type": "searchset",
            "total": entries.len(),
        });
        if !entries.is_empty() {
            bundle["entry"] = Value::Array(entries);
        }
        Ok(FhirResponse::with_body(200, bundle))
    }

    /// PIXm (ITI-83): the identifiers and records of the person holding `source_identifier`
    /// (`system|value`), optionally only in `target_systems`.
    pub fn pix_query(
        &self,
        ctx: &RequestContext,
        source_identifier: &str,
        target_systems: &[String],
    ) -> FhirResult<FhirResponse> {
        self.require_index_reader(ctx)?;
        let (system, value) = source_identifier.split_once('|').ok_or_else(|| {
            FhirError::bad_request(
                "sourceIdentifier must be system|value (the assigning authority is required)",
            )
        })?;
        if system.is_empty() || value.is_empty() {
            return Err(FhirError::bad_request(
                "sourceIdentifier must be system|value with both parts",
            ));
        }
        let mpi = self.mpi()?;
        let mut tx = self.store().begin_read()?;
        for target in target_systems {
            if find_sources(tx.as_mut(), &ctx.principal, &format!("{target}|"), 1)?.is_empty() {
                return Err(FhirError::new(
                    403,
                    IssueType::CodeInvalid,
                    format!("targetSystem {target:?} is not a known identifier domain"),
                ));
            }
        }
        let sources = find_sources(tx.as_mut(), &ctx.principal, source_identifier, 50)?;
        if sources.is_empty() {
            if find_sources(tx.as_mut(), &ctx.principal, &format!("{system}|"), 1)?.is_empty() {
                return Err(FhirError::bad_request(format!(
                    "sourceIdentifier assigning authority {system:?} is not a known identifier domain"
                )));
            }
            return Err(FhirError::not_found(format!(
                "no patient holds the identifier {source_identifier}"
            )));
        }
        let mut persons = BTreeSet::new();
        for source in &sources {
            match mpi.golden_of(&source.id) {
                Some(g) => {
                    persons.insert(g);
                }
                None => {
                    persons.insert(source.id.clone());
                }
            }
        }
        let mut result = PixResult::default();
        let mut seen = BTreeSet::new();
        for person in persons {
            let mut records = mpi.sources_of(&person);
            if records.is_empty() {
                records.push(person.clone());
            } else if ctx.principal.can_see(tx.as_mut(), "Patient", &person)? {
                result.references.push(format!("Patient/{person}"));
            }
            for record in records {
                // Only the records the caller can see, with their identifiers.
                if !ctx.principal.can_see(tx.as_mut(), "Patient", &record)? {
                    continue;
                }
                let Some(body) = tx.read("Patient", &record)?.and_then(|s| s.resource) else {
                    continue;
                };
                result.references.push(format!("Patient/{record}"));
                for identifier in body
                    .get("identifier")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let id_system = identifier
                        .get("system")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let id_value = identifier
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if id_value.is_empty() || (id_system == system && id_value == value) {
                        continue;
                    }
                    if !target_systems.is_empty() && !target_systems.iter().any(|t| t == id_system)
                    {
                        continue;
                    }
                    if seen.insert((id_system.to_owned(), id_value.to_owned())) {
                        let mut copy = identifier.clone();
                        if let Some(c) = copy.as_object_mut() {
                            c.remove("id");
                        }
                        result.identifiers.push(copy);
                    }
                }
            }
        }
        let base = &ctx.base_url;
        let mut parameters: Vec<Value> = result
            .identifiers
            .iter()
            .map(|i| json!({"name": "targetIdentifier", "valueIdentifier": i}))
            .collect();
        if target_systems.is_empty() {
            parameters.extend(result.references.iter().map(|r| {
                json!({"name": "targetId", "valueReference": {"reference": format!("{base}/{r}")}})
            }));
        }
        let mut body = json!({"resourceType": "Parameters"});
        if !parameters.is_empty() {
            body["parameter"] = Value::Array(parameters);
        }
        Ok(FhirResponse::with_body(200, body))
    }

    /// `POST [base]/Patient/$mpi-train`: re-learns the matching weights from the records
    /// in the index by EM and reports the fit.
    pub fn patient_index_train(&self, ctx: &RequestContext) -> FhirResult<FhirResponse> {
        self.require_index_steward(ctx)?;
        let mpi = self.mpi()?;
        let report = mpi.retrain().ok_or_else(|| {
            FhirError::new(
                422,
                IssueType::BusinessRule,
                format!(
                    "the index holds {} records; learning weights needs at least {}",
                    mpi.source_count(),
                    super::MIN_TRAINING_RECORDS
                ),
            )
        })?;
        Ok(FhirResponse::with_body(
            200,
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "records", "valueInteger": mpi.source_count()},
                {"name": "blocked-pairs", "valueInteger": report.blocked_pairs},
                {"name": "random-pairs", "valueInteger": report.random_pairs},
                {"name": "iterations", "valueInteger": report.em.iterations},
                {"name": "converged", "valueBoolean": report.em.converged},
                {"name": "final-delta", "valueDecimal": report.em.final_delta},
                {"name": "prior", "valueDecimal": report.em.prior},
            ]}),
        ))
    }

    /// An index transaction for the steward operations.
    fn index_transaction(&self) -> FhirResult<IndexedTransaction<'_>> {
        let mpi = self.mpi()?;
        if !mpi.config().enabled {
            return Err(FhirError::new(
                501,
                IssueType::NotSupported,
                "the patient index is disabled on this server",
            ));
        }
        let mut tx = IndexedTransaction::new(self.store().begin_write()?, mpi);
        tx.lock()?;
        Ok(tx)
    }

    /// `POST [base]/Task/[id]/$mpi-accept` and `$mpi-reject`: a data steward's decision on a
    /// review item. Accepting merges the two persons (the focus's person into the
    /// candidate's); rejecting records that they are different persons for good.
    pub fn review_decision(
        &self,
        ctx: &RequestContext,
        task_id: &str,
        accept: bool,
        note: Option<&str>,
    ) -> FhirResult<FhirResponse> {
        self.require_index_steward(ctx)?;
        check_id(task_id)?;
        let mut tx = self.index_transaction()?;
        require_visible(&mut tx, &ctx.principal, "Task", task_id)?;
        let stored = tx
            .read("Task", task_id)?
            .filter(|s| !s.is_deleted())
            .ok_or_else(|| FhirError::not_found(format!("Task/{task_id} does not exist")))?;
        let task = stored.resource.clone().unwrap_or(Value::Null);
        if !review::is_review_task(&task) {
            return Err(FhirError::new(
                422,
                IssueType::BusinessRule,
                format!("Task/{task_id} is not a review item of the patient index"),
            ));
        }
        if task.get("status").and_then(Value::as_str) != Some("requested") {
            return Err(FhirError::new(
                409,
                IssueType::Conflict,
                format!(
                    "Task/{task_id} was already decided (status {})",
                    task.get("status").and_then(Value::as_str).unwrap_or("?")
                ),
            ));
        }
        let (focus, candidate) = review::pair_of(&task).ok_or_else(|| {
            FhirError::new(
                422,
                IssueType::Invalid,
                "the review item names no focus and candidate",
            )
        })?;
        // Deciding about two records is deciding about what the caller can see.
        require_visible(&mut tx, &ctx.principal, "Patient", &focus)?;
        require_visible(&mut tx, &ctx.principal, "Patient", &candidate)?;
        if accept {
            let from = tx.golden_of(&focus);
            let into = tx.golden_of(&candidate);
            match (from, into) {
                (Some(from), Some(into)) => tx.merge_persons(&from, &into)?,
                _ => {
                    return Err(FhirError::new(
                        409,
                        IssueType::Conflict,
                        "one of the two records is no longer in the index (deleted since)",
                    ))
                }
            }
        } else {
            tx.reject_pair(&focus, &candidate);
        }
        let decided = review::decided(&task, accept, &ctx.principal.subject, note);
        let written = tx.write_internal("Task", task_id, Some(decided), Some(stored.version_id))?;
        Box::new(tx).commit()?;
        Ok(FhirResponse {
            status: 200,
            location: Some(crate::version_url(&ctx.base_url, &written)),
            version_id: Some(written.version_id),
            last_modified: Some(written.last_updated),
            body: written.resource,
        })
    }

    /// The person (golden record id) a Patient id stands for: itself if golden, else its
    /// golden record.
    fn person_of(&self, tx: &mut IndexedTransaction<'_>, id: &str) -> FhirResult<String> {
        let stored = tx
            .current(id)?
            .ok_or_else(|| FhirError::not_found(format!("Patient/{id} does not exist")))?;
        let body = stored.resource.unwrap_or(Value::Null);
        if is_golden(&body) {
            if body.get("active").and_then(Value::as_bool) == Some(false) {
                return Err(FhirError::new(
                    409,
                    IssueType::Conflict,
                    format!("Patient/{id} was merged into another person already"),
                ));
            }
            return Ok(id.to_owned());
        }
        tx.golden_of(id).ok_or_else(|| {
            FhirError::new(
                409,
                IssueType::Conflict,
                format!("Patient/{id} is not linked to a person"),
            )
        })
    }

    /// `POST [base]/Patient/$merge` (`source-patient`, `target-patient`): the person of the
    /// source becomes part of the person of the target. The source's golden record is kept,
    /// inactive, with a `replaced-by` link, so `$unmerge` can restore it.
    pub fn patient_merge(
        &self,
        ctx: &RequestContext,
        parameters: &Value,
    ) -> FhirResult<FhirResponse> {
        self.require_index_steward(ctx)?;
        let source = patient_id_parameter(parameters, "source-patient")?;
        let target = patient_id_parameter(parameters, "target-patient")?;
        let mut tx = self.index_transaction()?;
        // A record the caller cannot see cannot be merged by it, and is not named to it.
        require_visible(&mut tx, &ctx.principal, "Patient", &source)?;
        require_visible(&mut tx, &ctx.principal, "Patient", &target)?;
        let from = self.person_of(&mut tx, &source)?;
        let into = self.person_of(&mut tx, &target)?;
        if from == into {
            return Err(FhirError::new(
                422,
                IssueType::BusinessRule,
                "the two records already belong to the same person",
            ));
        }
        for a in tx.sources_of(&from) {
            for b in tx.sources_of(&into) {
                if tx.mpi().state.read().is_rejected(&a, &b) {
                    return Err(FhirError::new(
                        409,
                        IssueType::BusinessRule,
                        format!("Patient/{a} and Patient/{b} were declared different persons by a reviewer"),
                    ));
                }
            }
        }
        tx.merge_persons(&from, &into)?;
        let result = tx.current(&into)?;
        Box::new(tx).commit()?;
        Ok(FhirResponse::with_body(
            200,
            outcome_parameters(
                &format!("Patient/{from} merged into Patient/{into}"),
                result.and_then(|r| r.resource),
            ),
        ))
    }

    /// A source-level merge, as an HL7 v2 ADT^A40 announces it: the institution retired one
    /// of its records (`retired`) in favour of another (`surviving`). The two persons become
    /// one, and the retired record is kept, inactive, with a `replaced-by` link (IHE PMIR).
    /// Repeating the same merge changes nothing.
    pub fn merge_source_records(
        &self,
        ctx: &RequestContext,
        retired: &str,
        surviving: &str,
    ) -> FhirResult<()> {
        self.require_index_steward(ctx)?;
        check_id(retired)?;
        check_id(surviving)?;
        if retired == surviving {
            return Ok(());
        }
        let mut tx = self.index_transaction()?;
        let from = self.person_of(&mut tx, retired)?;
        let into = self.person_of(&mut tx, surviving)?;
        if from != into {
            tx.merge_persons(&from, &into)?;
        }
        let stored = tx
            .current(retired)?
            .ok_or_else(|| FhirError::not_found(format!("Patient/{retired} does not exist")))?;
        if let Some(mut body) = stored.resource {
            let already = body.get("active").and_then(Value::as_bool) == Some(false)
                && golden::linked_ids(&body, "replaced-by").contains(surviving);
            if !already {
                body["active"] = json!(false);
                let mut links: Vec<Value> = body
                    .get("link")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter(|l| {
                                l.get("type").and_then(Value::as_str) != Some("replaced-by")
                            })
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                links.push(json!({"other": {"reference": format!("Patient/{surviving}")}, "type": "replaced-by"}));
                body["link"] = Value::Array(links);
                if let Some(meta) = body.get_mut("meta").and_then(Value::as_object_mut) {
                    meta.remove("versionId");
                    meta.remove("lastUpdated");
                }
                tx.write_internal("Patient", retired, Some(body), Some(stored.version_id))?;
            }
        }
        Box::new(tx).commit()?;
        Ok(())
    }

    /// `POST [base]/Patient/[id]/$unmerge`: restores a golden record retired by a merge, with
    /// the sources it had before, taken from its own history.
    pub fn patient_unmerge(&self, ctx: &RequestContext, id: &str) -> FhirResult<FhirResponse> {
        self.require_index_steward(ctx)?;
        check_id(id)?;
        let mut tx = self.index_transaction()?;
        require_visible(&mut tx, &ctx.principal, "Patient", id)?;
        let stored = tx
            .current(id)?
            .ok_or_else(|| FhirError::not_found(format!("Patient/{id} does not exist")))?;
        let body = stored.resource.clone().unwrap_or(Value::Null);
        let survivor = golden::linked_ids(&body, "replaced-by").into_iter().next();
        let (true, Some(survivor)) = (
            is_golden(&body) && body.get("active").and_then(Value::as_bool) == Some(false),
            survivor,
        ) else {
            return Err(FhirError::new(
                422,
                IssueType::BusinessRule,
                format!("Patient/{id} is not a person retired by a merge"),
            ));
        };
        // The retired version keeps the source links it had at the merge.
        let former_sources = golden::linked_ids(&body, "seealso");
        let mut restored = Vec::new();
        for source in &former_sources {
            if tx.golden_of(source).as_deref() == Some(survivor.as_str()) {
                tx.relink_source(source, id)?;
                restored.push(source.clone());
            }
        }
        if restored.is_empty() {
            return Err(FhirError::new(
                409,
                IssueType::Conflict,
                format!("none of Patient/{id}'s former records still belong to Patient/{survivor}"),
            ));
        }
        // Unmerged persons are different persons: never propose them again.
        for a in &restored {
            for b in tx.sources_of(&survivor) {
                tx.reject_pair(a, &b);
            }
        }
        let restored_extra: Vec<Value> = golden::extra_links(&body)
            .into_iter()
            .filter(|l| l.get("type").and_then(Value::as_str) != Some("replaced-by"))
            .collect();
        tx.rewrite_golden(id, Some(restored_extra))?;
        let survivor_extra: Vec<Value> = match tx.current(&survivor)? {
            Some(s) => s
                .resource
                .as_ref()
                .map(golden::extra_links)
                .unwrap_or_default()
                .into_iter()
                .filter(|l| {
                    !(l.get("type").and_then(Value::as_str) == Some("replaces")
                        && l.pointer("/other/reference").and_then(Value::as_str)
                            == Some(format!("Patient/{id}").as_str()))
                })
                .collect(),
            None => Vec::new(),
        };
        tx.rewrite_golden(&survivor, Some(survivor_extra))?;
        let result = tx.current(id)?;
        Box::new(tx).commit()?;
        Ok(FhirResponse::with_body(
            200,
            outcome_parameters(
                &format!(
                    "Patient/{id} restored with {} record(s) from Patient/{survivor}",
                    restored.len()
                ),
                result.and_then(|r| r.resource),
            ),
        ))
    }

    /// `POST [base]/Patient/[id]/$mpi-unlink`: detaches a source record from its person into
    /// a person of its own, and records that it differs from the records it left.
    pub fn patient_unlink(&self, ctx: &RequestContext, id: &str) -> FhirResult<FhirResponse> {
        self.require_index_steward(ctx)?;
        check_id(id)?;
        let mut tx = self.index_transaction()?;
        require_visible(&mut tx, &ctx.principal, "Patient", id)?;
        let from = tx.golden_of(id).ok_or_else(|| {
            FhirError::new(
                422,
                IssueType::BusinessRule,
                format!("Patient/{id} is not a linked source record"),
            )
        })?;
        let others: Vec<String> = tx
            .sources_of(&from)
            .into_iter()
            .filter(|s| s != id)
            .collect();
        if others.is_empty() {
            return Err(FhirError::new(
                422,
                IssueType::BusinessRule,
                format!("Patient/{id} is the only record of its person; nothing to unlink"),
            ));
        }
        let person = new_id();
        tx.relink_source(id, &person)?;
        for other in &others {
            tx.reject_pair(id, other);
        }
        tx.rewrite_golden(&person, Some(Vec::new()))?;
        tx.rewrite_golden(&from, None)?;
        let result = tx.current(&person)?;
        Box::new(tx).commit()?;
        Ok(FhirResponse::with_body(
            200,
            outcome_parameters(
                &format!("Patient/{id} now stands for a person of its own, Patient/{person}"),
                result.and_then(|r| r.resource),
            ),
        ))
    }
}

/// Current source Patients holding an identifier (`system|value`, or `system|` for any) that
/// `principal` may see.
fn find_sources(
    tx: &mut dyn Transaction,
    principal: &Principal,
    identifier: &str,
    limit: usize,
) -> FhirResult<Vec<StoredResource>> {
    let params = vec![
        ("identifier".to_owned(), identifier.to_owned()),
        (
            "_tag:not".to_owned(),
            format!("{MPI_SYSTEM}|{GOLDEN_TAG_CODE}"),
        ),
    ];
    let parsed = query::parse(Some("Patient"), &params, true)
        .map_err(|outcome| FhirError::from_outcome(400, outcome))?;
    Ok(tx
        .search(&SearchRequest {
            query: parsed.query,
            cursor: PageCursor::First,
            page_size: limit,
            access: principal.access(),
        })?
        .matches)
}

/// The `Parameters` answer of a steward operation.
fn outcome_parameters(message: &str, result: Option<Value>) -> Value {
    let mut parameters = vec![json!({
        "name": "outcome",
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": message}]
        }
    })];
    if let Some(result) = result {
        parameters.push(json!({"name": "result", "resource": result}));
    }
    json!({"resourceType": "Parameters", "parameter": parameters})
}

/// 404 unless `principal` may see `resource_type/id` (the same answer as for one that does
/// not exist).
fn require_visible(
    tx: &mut dyn Transaction,
    principal: &Principal,
    resource_type: &str,
    id: &str,
) -> FhirResult<()> {
    if principal.can_see(tx, resource_type, id)? {
        Ok(())
    } else {
        Err(crate::access::not_found(resource_type, id))
    }
}
