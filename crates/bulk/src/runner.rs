//! Running one export job: page through the engine's search type by type, write each
//! resource as an NDJSON line as soon as it is read, and checkpoint at page boundaries.
//!
//! Every page is one engine search (so `_typeFilter` gets every search parameter, access
//! rules and consent exactly as an interactive search would), restricted to
//! `_lastUpdated <= transactionTime` (and `>= _since`). Keyset cursors make the next page
//! independent of the previous page's transaction, so a checkpoint (type, filter, cursor, part
//! lengths) is all a resumed job needs. Pages are sized by bytes, not counts: the page size
//! follows the average resource size so that one page holds about
//! [`ExportConfig::page_bytes`](crate::ExportConfig::page_bytes).

use std::collections::HashSet;
use std::path::Path;

use chrono::{SecondsFormat, Utc};
use phip_engine::access::patients_of;
use phip_engine::{apply_subset, Engine, FhirError, RequestContext};
use phip_fhir::search::SummaryMode;
use serde_json::Value;

use crate::job::{self, JobState, JobStatus};
use crate::part::PartWriter;
use crate::request::ExportLevel;
use crate::{ExportConfig, ExportError};

/// What a job should do after a page, as decided by its [`JobControl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proceed {
    /// Read the next page.
    Continue,
    /// Checkpoint and stop, leaving the job resumable (server shutdown).
    Stop,
    /// Stop at once; the job is being cancelled and its files will be removed.
    Cancel,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every type is exported and the job is marked completed.
    Completed,
    /// Stopped at a checkpoint on request; resuming continues from there.
    Stopped,
    /// Abandoned because of a cancellation.
    Cancelled,
}

/// Steers a running job: asked after every page, with the job's state at that point (which
/// also makes it the place to report progress).
pub trait JobControl {
    /// Whether to go on.
    fn proceed(&self, state: &JobState) -> Proceed;
}

/// A control that always continues (the CLI and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunToEnd;

impl JobControl for RunToEnd {
    fn proceed(&self, _state: &JobState) -> Proceed {
        Proceed::Continue
    }
}

/// The engine's base URL for export searches; links are never shown to anyone.
const INTERNAL_BASE: &str = "urn:phip:export";

/// Chooses page sizes so that a page holds about the configured number of bytes.
struct PageSizer {
    target_bytes: f64,
    max: usize,
    average: Option<f64>,
}

impl PageSizer {
    fn new(config: &ExportConfig) -> Self {
        Self {
            target_bytes: config.page_bytes.max(1) as f64,
            max: config.max_page_resources.max(1),
            average: None,
        }
    }

    fn next(&self) -> usize {
        match self.average {
            // Until a resource size is known, start small rather than risk a huge first page.
            None => self.max.min(100),
            Some(avg) => ((self.target_bytes / avg.max(1.0)) as usize).clamp(1, self.max),
        }
    }

    /// Learns from `count` resources of `bytes` serialised bytes (a moving average, so that
    /// a type of large documents after one of small observations adapts within a few pages).
    fn observe(&mut self, count: u64, bytes: u64) {
        if count == 0 {
            return;
        }
        let sample = bytes as f64 / count as f64;
        self.average = Some(match self.average {
            None => sample,
            Some(avg) => avg * 0.5 + sample * 0.5,
        });
    }
}

/// One page of an export search.
struct Page {
    resources: Vec<Value>,
    next: Option<String>,
}

/// The search parameters shared by every page of a job: the snapshot bound and `_since`.
fn time_bounds(state: &JobState) -> Vec<(String, String)> {
    let mut params = vec![(
        "_lastUpdated".to_owned(),
        format!("le{}", state.transaction_time_text()),
    )];
    if let Some(since) = state.request.since {
        params.push((
            "_lastUpdated".to_owned(),
            format!("ge{}", since.to_rfc3339_opts(SecondsFormat::Millis, true)),
        ));
    }
    params
}

/// Runs one engine search page and takes its matches and its next cursor.
fn fetch(
    engine: &Engine,
    ctx: &RequestContext,
    resource_type: &str,
    mut params: Vec<(String, String)>,
    count: usize,
    cursor: Option<&str>,
) -> Result<Page, FhirError> {
    params.push(("_count".to_owned(), count.to_string()));
    params.push(("_total".to_owned(), "none".to_owned()));
    if let Some(cursor) = cursor {
        params.push(("_cursor".to_owned(), cursor.to_owned()));
    }
    let response = engine.search(ctx, Some(resource_type), &params)?;
    let Some(Value::Object(mut bundle)) = response.body else {
        return Err(FhirError::new(
            500,
            phip_fhir::IssueType::Exception,
            "the search returned no Bundle",
        ));
    };
    let next = bundle
        .get("link")
        .and_then(Value::as_array)
        .and_then(|links| {
            links
                .iter()
                .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        })
        .and_then(|l| l.get("url").and_then(Value::as_str))
        .and_then(|url| url.split_once('?'))
        .and_then(|(_, query)| {
            phip_engine::parse_query_string(query)
                .into_iter()
                .find(|(name, _)| name == "_cursor")
                .map(|(_, value)| value)
        });
    let resources = match bundle.remove("entry") {
        Some(Value::Array(entries)) => entries
            .into_iter()
            .filter_map(|entry| match entry {
                Value::Object(mut entry) => {
                    let is_match = entry
                        .get("search")
                        .and_then(|s| s.get("mode"))
                        .and_then(Value::as_str)
                        == Some("match");
                    is_match.then(|| entry.remove("resource")).flatten()
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Page { resources, next })
}

/// Of `ids`, those some earlier `_typeFilter` of the type already matched: one search per
/// earlier filter and page, so that a resource matching several filters is written once.
fn matched_earlier(
    engine: &Engine,
    ctx: &RequestContext,
    resource_type: &str,
    earlier: &[Vec<(String, String)>],
    bounds: &[(String, String)],
    ids: &[String],
) -> Result<HashSet<String>, FhirError> {
    let mut matched = HashSet::new();
    if ids.is_empty() {
        return Ok(matched);
    }
    for filter in earlier {
        let mut params = filter.clone();
        params.extend_from_slice(bounds);
        params.push(("_id".to_owned(), ids.join(",")));
        let page = fetch(engine, ctx, resource_type, params, ids.len(), None)?;
        matched.extend(
            page.resources
                .iter()
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned)),
        );
    }
    Ok(matched)
}

/// Whether a resource belongs to the export's level: any patient's compartment (Patient
/// level) or a member's compartment (Group level).
fn in_level(level: &ExportLevel, members: Option<&HashSet<String>>, resource: &Value) -> bool {
    match level {
        ExportLevel::System => true,
        ExportLevel::Patient => !patients_of(resource).is_empty(),
        ExportLevel::Group(_) => {
            let Some(members) = members else {
                return false;
            };
            patients_of(resource).iter().any(|p| members.contains(p))
        }
    }
}

/// Syncs the part being written, then records the state that describes it.
fn checkpoint(writer: &mut PartWriter, dir: &Path, state: &JobState) -> Result<(), ExportError> {
    writer
        .sync()
        .map_err(|e| ExportError::io("syncing an export file", e))?;
    job::save(dir, state).map_err(|e| ExportError::io("saving the export checkpoint", e))
}

/// Runs (or resumes) the job whose directory is `dir` and whose state is `state`, until it
/// completes or `control` stops it. The state on disk is updated at every checkpoint.
pub fn run_job(
    engine: &Engine,
    dir: &Path,
    state: &mut JobState,
    config: &ExportConfig,
    control: &dyn JobControl,
) -> Result<RunOutcome, ExportError> {
    let principal = state.requester.principal().map_err(ExportError::Invalid)?;
    let mut ctx = RequestContext::new(INTERNAL_BASE, principal);
    // The filters were validated strictly at kick-off; strict here too, so that nothing is
    // ever silently ignored.
    ctx.strict_handling = true;
    let members: Option<HashSet<String>> = state
        .group_members
        .as_ref()
        .map(|m| m.iter().cloned().collect());
    let bounds = time_bounds(state);
    let mut sizer = PageSizer::new(config);
    if state.status != JobStatus::Running {
        state.status = JobStatus::Running;
        job::save(dir, state).map_err(|e| ExportError::io("saving the export state", e))?;
    }
    for index in 0..state.types.len() {
        if state.types[index].done {
            continue;
        }
        let resource_type = state.types[index].resource_type.clone();
        let filters: Vec<Vec<(String, String)>> = state
            .request
            .filters_of(&resource_type)
            .map(|f| f.params.clone())
            .collect();
        let elements = state.request.elements_of(&resource_type);
        let rounds = filters.len().max(1);
        let mut writer = PartWriter::resume(dir, &state.types[index], config.max_file_bytes)
            .map_err(|e| ExportError::io("opening an export file", e))?;
        let mut unsynced = 0u64;
        loop {
            let progress = &mut state.types[index];
            let filter_index = progress.filter_index;
            let mut params = filters.get(filter_index).cloned().unwrap_or_default();
            params.extend_from_slice(&bounds);
            let page = fetch(
                engine,
                &ctx,
                &resource_type,
                params,
                sizer.next(),
                progress.cursor.as_deref(),
            )?;
            let resources: Vec<Value> = page
                .resources
                .into_iter()
                .filter(|r| in_level(&state.request.level, members.as_ref(), r))
                .collect();
            let repeated = if filter_index > 0 {
                let ids: Vec<String> = resources
                    .iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                matched_earlier(
                    engine,
                    &ctx,
                    &resource_type,
                    &filters[..filter_index],
                    &bounds,
                    &ids,
                )?
            } else {
                HashSet::new()
            };
            let before = (progress.count(), part_bytes(progress));
            for resource in resources {
                if resource
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| repeated.contains(id))
                {
                    continue;
                }
                let resource = match &elements {
                    Some(elements) => apply_subset(resource, SummaryMode::False, Some(elements)),
                    None => resource,
                };
                writer
                    .write(progress, &resource)
                    .map_err(|e| ExportError::io("writing an export file", e))?;
            }
            let written = part_bytes(progress) - before.1;
            sizer.observe(progress.count() - before.0, written);
            unsynced += written;
            match page.next {
                Some(next) => progress.cursor = Some(next),
                None => {
                    progress.filter_index += 1;
                    progress.cursor = None;
                    progress.done = progress.filter_index >= rounds;
                }
            }
            let done = progress.done;
            let mut saved = false;
            if done || unsynced >= config.checkpoint_bytes {
                checkpoint(&mut writer, dir, state)?;
                unsynced = 0;
                saved = true;
            }
            match control.proceed(state) {
                Proceed::Continue => {}
                Proceed::Stop => {
                    if !saved {
                        checkpoint(&mut writer, dir, state)?;
                    }
                    return Ok(RunOutcome::Stopped);
                }
                Proceed::Cancel => return Ok(RunOutcome::Cancelled),
            }
            if done {
                break;
            }
        }
    }
    state.status = JobStatus::Completed;
    state.finished = Some(Utc::now());
    job::save(dir, state).map_err(|e| ExportError::io("saving the export state", e))?;
    Ok(RunOutcome::Completed)
}

/// Bytes written for a type so far.
fn part_bytes(progress: &crate::job::TypeProgress) -> u64 {
    progress.parts.iter().map(|p| p.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_follows_resource_size() {
        let config = ExportConfig {
            page_bytes: 1_000_000,
            max_page_resources: 1000,
            ..ExportConfig::default()
        };
        let mut sizer = PageSizer::new(&config);
        assert_eq!(sizer.next(), 100);
        sizer.observe(100, 100 * 500);
        assert_eq!(sizer.next(), 1000);
        // Large documents: 100 kB each, so ten per megabyte.
        for _ in 0..20 {
            sizer.observe(10, 10 * 100_000);
        }
        assert!((9..=11).contains(&sizer.next()), "{}", sizer.next());
        sizer.observe(1, 50_000_000);
        assert_eq!(sizer.next(), 1);
    }
}
