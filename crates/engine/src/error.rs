//! Errors of FHIR interactions: an HTTP status plus an OperationOutcome.

use phip_fhir::{IssueType, OperationOutcome};
use phip_store::StoreError;

/// A failed interaction: the status to answer with and the OperationOutcome explaining it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {outcome}")]
pub struct FhirError {
    /// HTTP status (400, 404, 405, 409, 410, 412, 422, 500, 503, …).
    pub status: u16,
    /// The explanation.
    pub outcome: OperationOutcome,
}

/// Result alias for interactions.
pub type FhirResult<T> = Result<T, FhirError>;

impl FhirError {
    /// An error with one issue.
    pub fn new(status: u16, code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            status,
            outcome: OperationOutcome::error(code, diagnostics),
        }
    }

    /// 400 Bad Request, invalid content.
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(400, IssueType::Invalid, diagnostics)
    }

    /// 404 Not Found.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(404, IssueType::NotFound, diagnostics)
    }

    /// 410 Gone: the resource was deleted.
    pub fn gone(diagnostics: impl Into<String>) -> Self {
        Self::new(410, IssueType::Deleted, diagnostics)
    }

    /// 412 Precondition Failed.
    pub fn precondition_failed(diagnostics: impl Into<String>) -> Self {
        Self::new(412, IssueType::Conflict, diagnostics)
    }

    /// 422 Unprocessable Entity, with an outcome from validation.
    pub fn unprocessable(outcome: OperationOutcome) -> Self {
        Self {
            status: 422,
            outcome,
        }
    }

    /// An error from an OperationOutcome with a status.
    pub fn from_outcome(status: u16, outcome: OperationOutcome) -> Self {
        Self { status, outcome }
    }
}

impl From<StoreError> for FhirError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::VersionConflict { expected, current } => {
                if expected == 0 {
                    Self::new(
                        409,
                        IssueType::Conflict,
                        "the resource was created concurrently by another request",
                    )
                } else {
                    Self::precondition_failed(format!(
                        "version conflict: the request expected version {expected} but the current version is {current}"
                    ))
                }
            }
            StoreError::UnsupportedSearch(msg) => Self::new(400, IssueType::NotSupported, msg),
            StoreError::InvalidCursor => Self::bad_request(
                "the paging link is invalid or has expired; start the search again",
            ),
            StoreError::Busy => Self::new(503, IssueType::Transient, "the database is busy; retry"),
            StoreError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "database unavailable");
                Self::new(
                    503,
                    IssueType::Transient,
                    "the database is unavailable or the query exceeded its time limit; retry later",
                )
            }
            // 507 (RFC 4918) says exactly this, and clients treat it as a server-side failure
            // that a retry after intervention can cure.
            StoreError::StorageFull => {
                tracing::error!("the database's storage is full; writes are refused");
                Self::new(
                    507,
                    IssueType::Exception,
                    "the server's storage is full; nothing was written",
                )
            }
            StoreError::Refused(inner) => match inner.downcast::<FhirError>() {
                Ok(refusal) => *refusal,
                Err(other) => Self::new(422, IssueType::BusinessRule, other.to_string()),
            },
            StoreError::Backend(msg) => {
                tracing::error!(error = %msg, "storage failure");
                Self::new(500, IssueType::Exception, "internal storage failure")
            }
        }
    }
}
