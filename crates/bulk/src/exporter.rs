//! The export service: accepts jobs, runs them on a fixed number of worker threads (others
//! wait in a queue), answers status, file and cancellation requests, resumes unfinished jobs
//! when it starts, and deletes finished jobs after the retention period.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use parking_lot::{Condvar, Mutex};
use phip_engine::{Engine, FhirError, FhirResult, Principal, RequestContext};
use phip_fhir::IssueType;
use serde_json::{json, Value};

use crate::access::{authorize, authorize_job, Requester};
use crate::job::{self, JobError, JobState, JobStatus, TypeProgress};
use crate::request::{ExportLevel, ExportRequest};
use crate::runner::{run_job, JobControl, Proceed, RunOutcome};
use crate::{ExportConfig, ExportError};

/// The directory under the data directory that holds export jobs.
pub const EXPORT_DIR: &str = "export";

/// Prefix of a cancelled job's directory while it is being deleted.
const TRASH_PREFIX: &str = ".trash-";

/// How often idle workers look for expired jobs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// What a status request learns about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportStatus {
    /// Queued or running; the text is for `X-Progress`.
    InProgress(String),
    /// Done: the job's final state, from which [`manifest`] builds the response.
    Completed(Box<JobState>),
    /// Failed with this error.
    Failed(FhirError),
}

/// One job as the service tracks it.
struct Tracked {
    /// The latest state (updated by the worker after every page).
    state: Mutex<JobState>,
    /// Set by a cancellation; the worker abandons the job at the next page.
    cancelled: AtomicBool,
    /// Whether a worker has taken the job.
    running: AtomicBool,
}

struct Shared {
    engine: Arc<Engine>,
    root: PathBuf,
    config: ExportConfig,
    jobs: Mutex<HashMap<String, Arc<Tracked>>>,
    queue: Mutex<VecDeque<String>>,
    wake: Condvar,
    stopping: AtomicBool,
}

/// The bulk export service of one data directory. Dropping it stops the workers at their next
/// page; running jobs resume when a service is started again over the same directory.
pub struct Exporter {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("root", &self.shared.root)
            .field("jobs", &self.shared.jobs.lock().len())
            .finish()
    }
}

/// Control of a job run by a worker: publishes progress and obeys cancellation and shutdown.
struct WorkerControl<'a> {
    shared: &'a Shared,
    tracked: &'a Tracked,
}

impl JobControl for WorkerControl<'_> {
    fn proceed(&self, state: &JobState) -> Proceed {
        *self.tracked.state.lock() = state.clone();
        if self.tracked.cancelled.load(Ordering::SeqCst) {
            Proceed::Cancel
        } else if self.shared.stopping.load(Ordering::SeqCst) {
            Proceed::Stop
        } else {
            Proceed::Continue
        }
    }
}

impl Exporter {
    /// Starts the service over `<data_dir>/export`: removes leftovers of cancelled and expired
    /// jobs, queues the jobs a previous run did not finish, and starts the workers.
    pub fn start(
        engine: Arc<Engine>,
        data_dir: &Path,
        config: ExportConfig,
    ) -> Result<Exporter, ExportError> {
        let root = data_dir.join(EXPORT_DIR);
        fs::create_dir_all(&root)
            .map_err(|e| ExportError::io("creating the export directory", e))?;
        let mut jobs = HashMap::new();
        let mut queue = Vec::new();
        let entries =
            fs::read_dir(&root).map_err(|e| ExportError::io("reading the export directory", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if !job::valid_job_id(&name) {
                if name.starts_with(TRASH_PREFIX) {
                    remove_dir(&path);
                }
                continue;
            }
            match job::load(&path) {
                Ok(state) => {
                    if matches!(state.status, JobStatus::Queued | JobStatus::Running) {
                        queue.push((state.created, name.clone()));
                    }
                    jobs.insert(name, Arc::new(tracked(state)));
                }
                Err(error) => {
                    // A directory without a readable state is a kick-off that crashed before
                    // it was acknowledged: nobody knows its id.
                    tracing::warn!(job = %name, %error, "removing an export directory without a valid state");
                    remove_dir(&path);
                }
            }
        }
        queue.sort();
        if !queue.is_empty() {
            tracing::info!(jobs = queue.len(), "resuming unfinished bulk exports");
        }
        let shared = Arc::new(Shared {
            engine,
            root,
            config,
            jobs: Mutex::new(jobs),
            queue: Mutex::new(queue.into_iter().map(|(_, id)| id).collect()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        shared.sweep_expired();
        let workers = (0..shared.config.max_concurrent_jobs.max(1))
            .map(|n| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("phip-export-{n}"))
                    .spawn(move || shared.work())
                    .map_err(|e| ExportError::io("starting an export worker", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exporter {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// Accepts an export ([`prepare`]), persists the job and queues it. Returns the job id.
    pub fn kick_off(
        &self,
        ctx: &RequestContext,
        request: ExportRequest,
        request_url: &str,
    ) -> FhirResult<String> {
        let shared = &self.shared;
        let principal = &ctx.principal;
        let state = prepare(&shared.engine, ctx, request, request_url)?;
        if let Err(error) = job::create(&shared.root, &state) {
            tracing::error!(%error, "could not persist an export job");
            return Err(FhirError::new(
                500,
                IssueType::Exception,
                "the export job could not be saved",
            ));
        }
        let id = state.id.clone();
        tracing::info!(job = %id, subject = %principal.subject, types = state.types.len(), "bulk export accepted");
        shared
            .jobs
            .lock()
            .insert(id.clone(), Arc::new(tracked(state)));
        shared.queue.lock().push_back(id.clone());
        shared.wake.notify_one();
        Ok(id)
    }

    /// The status of a job, for the client that started it (404 for anyone else, so that job
    /// ids reveal nothing).
    pub fn status(&self, principal: &Principal, id: &str) -> FhirResult<ExportStatus> {
        let tracked = self.shared.owned(principal, id)?;
        let state = tracked.state.lock().clone();
        Ok(match state.status {
            JobStatus::Queued | JobStatus::Running => {
                ExportStatus::InProgress(state.progress_text())
            }
            JobStatus::Completed => ExportStatus::Completed(Box::new(state)),
            JobStatus::Failed => {
                let error = state.error.unwrap_or(JobError {
                    status: 500,
                    message: "the export failed".into(),
                });
                ExportStatus::Failed(FhirError::new(
                    error.status,
                    IssueType::Exception,
                    error.message,
                ))
            }
        })
    }

    /// Cancels a job (queued, running or finished) and deletes its files.
    pub fn cancel(&self, principal: &Principal, id: &str) -> FhirResult<()> {
        let shared = &self.shared;
        let tracked = shared.owned(principal, id)?;
        let trash = shared.root.join(format!("{TRASH_PREFIX}{id}"));
        let running = {
            let mut jobs = shared.jobs.lock();
            jobs.remove(id);
            tracked.cancelled.store(true, Ordering::SeqCst);
            // Renaming first makes the cancellation survive a crash: a restart deletes
            // `.trash-*` directories instead of resuming them.
            if let Err(error) = fs::rename(job::job_dir(&shared.root, id), &trash) {
                tracing::error!(job = %id, %error, "could not move a cancelled export aside");
            }
            tracked.running.load(Ordering::SeqCst)
        };
        if !running {
            remove_dir(&trash);
        }
        tracing::info!(job = %id, "bulk export cancelled");
        Ok(())
    }

    /// The path of an output file of a completed job, for the client that started it.
    pub fn file(&self, principal: &Principal, id: &str, name: &str) -> FhirResult<PathBuf> {
        let tracked = self.shared.owned(principal, id)?;
        let state = tracked.state.lock();
        if state.status != JobStatus::Completed {
            return Err(FhirError::not_found("the export has not completed"));
        }
        let listed = state
            .types
            .iter()
            .flat_map(|t| &t.parts)
            .any(|p| p.file == name);
        if !listed {
            return Err(FhirError::not_found(format!(
                "the export has no file {name:?}"
            )));
        }
        Ok(job::job_dir(&self.shared.root, id).join(name))
    }

    /// Stops the workers at their next page boundary (checkpointing running jobs) and waits
    /// for them. Unfinished jobs resume when the service starts again.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for worker in self.workers.lock().drain(..) {
            let _ = worker.join();
        }
    }

    /// The ids of the jobs the service knows, for operators and tests.
    pub fn job_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.jobs.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Jobs waiting for a worker, jobs running, and jobs known (any state), for metrics.
    pub fn job_counts(&self) -> (usize, usize, usize) {
        let queued = self.shared.queue.lock().len();
        let jobs = self.shared.jobs.lock();
        let running = jobs
            .values()
            .filter(|t| t.running.load(Ordering::Relaxed))
            .count();
        (queued, running, jobs.len())
    }

    /// The export root directory (`<data_dir>/export`).
    pub fn root(&self) -> &Path {
        &self.shared.root
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tracked(state: JobState) -> Tracked {
    Tracked {
        state: Mutex::new(state),
        cancelled: AtomicBool::new(false),
        running: AtomicBool::new(false),
    }
}

fn remove_dir(path: &Path) {
    if let Err(error) = fs::remove_dir_all(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "could not remove export files");
        }
    }
}

impl Shared {
    /// The job `id` if `principal` started it (404 for anyone else, as for an unknown id)
    /// and its token still permits the export (403).
    fn owned(&self, principal: &Principal, id: &str) -> FhirResult<Arc<Tracked>> {
        let not_found = || FhirError::not_found(format!("no export job {id:?}"));
        let tracked = self.jobs.lock().get(id).cloned().ok_or_else(not_found)?;
        let types: Vec<String> = {
            let state = tracked.state.lock();
            if !state.requester.is(principal) {
                return Err(not_found());
            }
            state
                .types
                .iter()
                .map(|t| t.resource_type.clone())
                .collect()
        };
        authorize_job(principal, &types)?;
        Ok(tracked)
    }

    /// A worker's loop: take the next queued job, run it, repeat; sweep expired jobs when idle.
    fn work(&self) {
        loop {
            let next = {
                let mut queue = self.queue.lock();
                loop {
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(id) = queue.pop_front() {
                        break Some(id);
                    }
                    if self.wake.wait_for(&mut queue, SWEEP_INTERVAL).timed_out() {
                        break None;
                    }
                }
            };
            match next {
                Some(id) => self.run(&id),
                None => self.sweep_expired(),
            }
        }
    }

    fn run(&self, id: &str) {
        let tracked = {
            let jobs = self.jobs.lock();
            let Some(tracked) = jobs.get(id).cloned() else {
                return; // cancelled while queued
            };
            tracked.running.store(true, Ordering::SeqCst);
            tracked
        };
        let dir = job::job_dir(&self.root, id);
        let mut state = tracked.state.lock().clone();
        let control = WorkerControl {
            shared: self,
            tracked: &tracked,
        };
        let result = run_job(&self.engine, &dir, &mut state, &self.config, &control);
        if tracked.cancelled.load(Ordering::SeqCst) {
            remove_dir(&self.root.join(format!("{TRASH_PREFIX}{id}")));
            return;
        }
        match result {
            Ok(RunOutcome::Completed) => {
                tracing::info!(job = %id, resources = state.exported(), "bulk export completed");
            }
            Ok(RunOutcome::Stopped) => {
                tracing::info!(job = %id, resources = state.exported(), "bulk export paused for shutdown");
            }
            Ok(RunOutcome::Cancelled) => return,
            Err(error) => {
                tracing::error!(job = %id, %error, "bulk export failed");
                state.status = JobStatus::Failed;
                state.finished = Some(Utc::now());
                state.error = Some(error.job_error());
                if let Err(error) = job::save(&dir, &state) {
                    tracing::error!(job = %id, %error, "could not record the export failure");
                }
            }
        }
        *tracked.state.lock() = state;
        tracked.running.store(false, Ordering::SeqCst);
        // A cancellation that arrived after the run ended saw the job still running and left
        // the deletion to this worker.
        if tracked.cancelled.load(Ordering::SeqCst) {
            remove_dir(&self.root.join(format!("{TRASH_PREFIX}{id}")));
        }
    }

    /// Deletes completed and failed jobs older than the retention period.
    fn sweep_expired(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else {
            return;
        };
        let now = Utc::now();
        let expired: Vec<String> = {
            let mut jobs = self.jobs.lock();
            let ids: Vec<String> = jobs
                .iter()
                .filter(|(_, t)| {
                    let state = t.state.lock();
                    matches!(state.status, JobStatus::Completed | JobStatus::Failed)
                        && state.finished.is_some_and(|f| f + retention <= now)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                jobs.remove(id);
            }
            ids
        };
        for id in expired {
            tracing::info!(job = %id, "deleting an expired bulk export");
            remove_dir(&job::job_dir(&self.root, &id));
        }
    }
}

/// Turns a validated request into a new job: checks the caller's access, runs each
/// `_typeFilter` once (so that a filter the engine rejects fails the kick-off rather than the
/// job), reads a Group's members and fixes the transaction time.
pub fn prepare(
    engine: &Engine,
    ctx: &RequestContext,
    request: ExportRequest,
    request_url: &str,
) -> FhirResult<JobState> {
    let principal = &ctx.principal;
    let types = authorize(
        principal,
        &request.candidate_types(),
        request.types.is_some(),
    )?;
    if types.is_empty() {
        return Err(FhirError::bad_request(
            "none of the requested types can be exported at this level",
        ));
    }
    let group_members = match &request.level {
        ExportLevel::Group(id) => Some(group_members(engine, ctx, id)?),
        _ => None,
    };
    let mut strict = ctx.clone();
    strict.strict_handling = true;
    for filter in &request.type_filters {
        if types.contains(&filter.resource_type) {
            let mut params = filter.params.clone();
            params.push(("_count".into(), "1".into()));
            params.push(("_total".into(), "none".into()));
            engine.search(&strict, Some(&filter.resource_type), &params)?;
        }
    }
    // Milliseconds: the manifest's transactionTime is what searches compare against, and a
    // client passing it back as `_since` must get a consistent next increment.
    let now = Utc::now().trunc_subsecs(3);
    Ok(JobState {
        id: uuid::Uuid::new_v4().to_string(),
        request,
        request_url: request_url.to_owned(),
        requester: Requester::from_principal(principal),
        transaction_time: now,
        created: now,
        status: JobStatus::Queued,
        finished: None,
        error: None,
        group_members,
        types: types.into_iter().map(TypeProgress::new).collect(),
    })
}

/// The patients of `Group/{id}`: `member.entity` references to Patient (inactive members
/// excluded), read through the engine so that the caller must be allowed to read the Group.
fn group_members(engine: &Engine, ctx: &RequestContext, id: &str) -> FhirResult<Vec<String>> {
    let response = engine.read(ctx, "Group", id)?;
    let group = response.body.unwrap_or(Value::Null);
    let mut members: HashSet<String> = HashSet::new();
    for member in group
        .get("member")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if member.get("inactive").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let Some(reference) = member
            .get("entity")
            .and_then(|e| e.get("reference"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let mut segments = reference
            .split("/_history")
            .next()
            .unwrap_or(reference)
            .rsplit('/');
        if let (Some(patient), Some("Patient")) = (segments.next(), segments.next()) {
            members.insert(patient.to_owned());
        }
    }
    let mut members: Vec<String> = members.into_iter().collect();
    members.sort();
    Ok(members)
}

/// The completion manifest of a job, with file URLs under `base` (the FHIR base URL the
/// client used): `{base}/$export-file/{job}/{file}`.
pub fn manifest(state: &JobState, base: &str) -> Value {
    let base = base.trim_end_matches('/');
    let output: Vec<Value> = state
        .types
        .iter()
        .flat_map(|t| {
            t.parts.iter().filter(|p| p.count > 0).map(move |p| {
                json!({
                    "type": t.resource_type,
                    "url": format!("{base}/$export-file/{}/{}", state.id, p.file),
                    "count": p.count,
                })
            })
        })
        .collect();
    json!({
        "transactionTime": state.transaction_time_text(),
        "request": state.request_url,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    })
}
