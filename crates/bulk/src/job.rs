//! The persisted state of an export job and its checkpoints.
//!
//! A job lives in `<data_dir>/export/<id>/`: `job.json` plus the NDJSON part files. `job.json`
//! is replaced atomically (write a temporary file, fsync, rename, fsync the directory), and
//! always after the part files it describes were synced, so after a crash it never claims more
//! than the files hold. Whatever a part file holds beyond its recorded length was written after
//! the last checkpoint and is cut off when the job resumes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::access::Requester;
use crate::request::ExportRequest;

/// The state file of a job.
pub const STATE_FILE: &str = "job.json";

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker is (or was, before a restart) exporting it.
    Running,
    /// All files are written; the manifest is available.
    Completed,
    /// The export failed; `error` says why.
    Failed,
}

/// A failed job's error: the status and message a status request answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// HTTP status (4xx when the request cannot be served, 5xx for server faults).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// One NDJSON output file of a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// File name inside the job directory, e.g. `Observation.002.ndjson`.
    pub file: String,
    /// Resources (lines) in the file up to `bytes`.
    pub count: u64,
    /// Bytes of the file that belong to the export.
    pub bytes: u64,
}

/// The progress of one resource type: its files so far and where reading continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeProgress {
    /// The resource type.
    pub resource_type: String,
    /// The `_typeFilter` being read (index among the type's filters; 0 when unfiltered).
    pub filter_index: usize,
    /// Engine paging cursor of the next page of that filter, `None` for its first page.
    pub cursor: Option<String>,
    /// Whether the type is fully exported.
    pub done: bool,
    /// Output files, in order; the last one is the one being appended to.
    pub parts: Vec<PartRecord>,
}

impl TypeProgress {
    /// A type not started yet.
    pub fn new(resource_type: impl Into<String>) -> Self {
        Self {
            resource_type: resource_type.into(),
            filter_index: 0,
            cursor: None,
            done: false,
            parts: Vec::new(),
        }
    }

    /// Resources written for the type.
    pub fn count(&self) -> u64 {
        self.parts.iter().map(|p| p.count).sum()
    }
}

/// Everything about a job that must survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// Job id (a UUID; also the directory name).
    pub id: String,
    /// The validated request.
    pub request: ExportRequest,
    /// The kick-off URL, echoed in the manifest.
    pub request_url: String,
    /// Who started the job.
    pub requester: Requester,
    /// The instant the export reflects: resources updated after it are left out, so that a
    /// resumed job reads the same set as the interrupted one.
    pub transaction_time: DateTime<Utc>,
    /// When the job was accepted.
    pub created: DateTime<Utc>,
    /// Life-cycle status.
    pub status: JobStatus,
    /// When it completed or failed.
    pub finished: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<JobError>,
    /// For a Group export, the member patients' ids (sorted), fixed at kick-off.
    pub group_members: Option<Vec<String>>,
    /// Per-type progress, in export order.
    pub types: Vec<TypeProgress>,
}

impl JobState {
    /// Resources written so far, all types.
    pub fn exported(&self) -> u64 {
        self.types.iter().map(TypeProgress::count).sum()
    }

    /// A one-line progress summary for `X-Progress`.
    pub fn progress_text(&self) -> String {
        let done = self.types.iter().filter(|t| t.done).count();
        let current = self
            .types
            .iter()
            .find(|t| !t.done)
            .map(|t| format!(", exporting {}", t.resource_type))
            .unwrap_or_default();
        match self.status {
            JobStatus::Queued => "queued".to_owned(),
            _ => format!(
                "{} resources; {done} of {} types done{current}",
                self.exported(),
                self.types.len()
            ),
        }
    }

    /// `transactionTime` as written in the manifest and used in searches (milliseconds, UTC).
    pub fn transaction_time_text(&self) -> String {
        self.transaction_time
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// Writes `state` to `<dir>/job.json` atomically and durably.
pub fn save(dir: &Path, state: &JobState) -> io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(STATE_FILE))?;
    sync_dir(dir)
}

/// Reads `<dir>/job.json`.
pub fn load(dir: &Path) -> io::Result<JobState> {
    let text = fs::read(dir.join(STATE_FILE))?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Creates the directory of a new job under `root` and writes its first state, durably.
/// Returns the directory.
pub fn create(root: &Path, state: &JobState) -> io::Result<PathBuf> {
    let dir = job_dir(root, &state.id);
    fs::create_dir_all(root)?;
    fs::create_dir(&dir)?;
    let result = save(&dir, state).and_then(|()| sync_dir(root));
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&dir);
        return Err(error);
    }
    Ok(dir)
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory of job `id` under the export root.
pub fn job_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Whether `id` has the shape of a job id, so that it can name a directory safely.
pub fn valid_job_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ExportLevel;

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut progress = TypeProgress::new("Patient");
        progress.parts.push(PartRecord {
            file: "Patient.000.ndjson".into(),
            count: 3,
            bytes: 120,
        });
        let state = JobState {
            id: uuid::Uuid::new_v4().to_string(),
            request: ExportRequest::parse(ExportLevel::Group("g1".into()), &[], false).unwrap(),
            request_url: "http://x/fhir/Group/g1/$export".into(),
            requester: Requester::from_principal(&phip_engine::Principal::unrestricted("t")),
            transaction_time: Utc::now(),
            created: Utc::now(),
            status: JobStatus::Running,
            finished: None,
            error: None,
            group_members: Some(vec!["p1".into()]),
            types: vec![progress],
        };
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), state);
        assert!(!dir.path().join("job.json.tmp").exists());
        assert_eq!(state.exported(), 3);
        assert!(valid_job_id(&state.id));
        assert!(!valid_job_id("../etc"));
    }
}
