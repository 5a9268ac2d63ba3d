//! FHIR Bulk Data export (`$export`, Bulk Data Access IG v2.0.0), independent of HTTP.
//!
//! An export is a *job*: [`ExportRequest::parse`] validates the kick-off parameters,
//! [`Exporter::kick_off`] checks the caller's system scopes, fixes the transaction time and
//! persists the job under `<data_dir>/export/<id>/`, and a worker pages through the engine's
//! search type by type ([`run_job`]), streaming each resource to NDJSON part files split by
//! size. Progress is checkpointed (type, filter, cursor, file lengths) with fsync and an atomic
//! rename, so a job interrupted by a crash or restart resumes where it was without duplicating
//! or losing lines. The server maps HTTP onto [`Exporter`]; `phip export` runs [`run_job`]
//! directly on a store.

mod access;
mod exporter;
pub mod job;
mod part;
mod request;
mod runner;

use std::time::Duration;

pub use access::{authorize, authorize_job, Requester};
pub use exporter::{manifest, prepare, ExportStatus, Exporter, EXPORT_DIR};
pub use job::{JobError, JobState, JobStatus, PartRecord, TypeProgress};
pub use request::{ExportLevel, ExportRequest, TypeFilter, OUTPUT_FORMATS};
pub use runner::{run_job, JobControl, Proceed, RunOutcome, RunToEnd};

/// Limits of the export service.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// Jobs exported at the same time; more wait in a queue.
    pub max_concurrent_jobs: usize,
    /// How long a finished job's files stay available.
    pub retention: Duration,
    /// Largest NDJSON part file; a type with more data gets several files.
    pub max_file_bytes: u64,
    /// Serialised bytes a search page should hold (the page size adapts to resource sizes).
    pub page_bytes: usize,
    /// Most resources in one page, whatever their size.
    pub max_page_resources: usize,
    /// Bytes written between checkpoints (0: after every page). The end of each type is always
    /// a checkpoint.
    pub checkpoint_bytes: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 2,
            retention: Duration::from_secs(24 * 3600),
            max_file_bytes: 256 << 20,
            page_bytes: 4 << 20,
            max_page_resources: 1000,
            checkpoint_bytes: 16 << 20,
        }
    }
}

/// Why an export could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The engine refused or failed a search.
    #[error("{0}")]
    Fhir(#[from] phip_engine::FhirError),
    /// The job's stored state cannot be used.
    #[error("{0}")]
    Invalid(String),
}

impl ExportError {
    pub(crate) fn io(context: &str, source: std::io::Error) -> Self {
        ExportError::Io {
            context: context.to_owned(),
            source,
        }
    }

    /// The error as recorded in a failed job: FHIR errors keep their status, anything else is
    /// a server fault.
    pub fn job_error(&self) -> JobError {
        match self {
            ExportError::Fhir(error) => JobError {
                status: error.status,
                message: error.outcome.to_string(),
            },
            other => JobError {
                status: 500,
                message: other.to_string(),
            },
        }
    }
}
