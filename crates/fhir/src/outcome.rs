//! OperationOutcome: the one shape of every error (and warning) phip returns.

use serde_json::{json, Value};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueSeverity {
    /// The operation failed because of this issue.
    Fatal,
    /// An error.
    Error,
    /// A warning: the operation went ahead.
    Warning,
    /// Information only.
    Information,
}

impl IssueSeverity {
    fn code(self) -> &'static str {
        match self {
            Self::Fatal => "fatal",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Information => "information",
        }
    }
}

/// `OperationOutcome.issue.code` (the subset of the IssueType value set phip uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    /// Content invalid against the specification or a profile.
    Invalid,
    /// A structural issue in the content (e.g. an unknown element).
    Structure,
    /// A required element is missing.
    Required,
    /// An element or header value is invalid.
    Value,
    /// A content validation rule failed.
    Invariant,
    /// Authentication is needed or failed.
    Login,
    /// Not authorised.
    Forbidden,
    /// Content or operation not supported.
    NotSupported,
    /// A duplicate (e.g. a conditional create matching several resources).
    Duplicate,
    /// Too many matches for a conditional operation.
    MultipleMatches,
    /// The resource or reference was not found.
    NotFound,
    /// The resource has been deleted.
    Deleted,
    /// Too costly (e.g. too many results).
    TooCostly,
    /// A business rule or version conflict.
    Conflict,
    /// A processing failure.
    Processing,
    /// An exception internal to the server.
    Exception,
    /// Transient issue (busy, timeout); retry may succeed.
    Transient,
    /// Information only.
    Informational,
    /// A limit was exceeded.
    TooLong,
    /// A business rule of the server refuses the request (e.g. the patient index's rules).
    BusinessRule,
    /// A code or identifier system is not known.
    CodeInvalid,
    /// Load management refused the request (rate limit, too many requests in flight).
    Throttled,
    /// An internal time limit expired before processing completed.
    Timeout,
}

impl IssueType {
    fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Structure => "structure",
            Self::Required => "required",
            Self::Value => "value",
            Self::Invariant => "invariant",
            Self::Login => "login",
            Self::Forbidden => "forbidden",
            Self::NotSupported => "not-supported",
            Self::Duplicate => "duplicate",
            Self::MultipleMatches => "multiple-matches",
            Self::NotFound => "not-found",
            Self::Deleted => "deleted",
            Self::TooCostly => "too-costly",
            Self::Conflict => "conflict",
            Self::Processing => "processing",
            Self::Exception => "exception",
            Self::Transient => "transient",
            Self::Informational => "informational",
            Self::TooLong => "too-long",
            Self::BusinessRule => "business-rule",
            Self::CodeInvalid => "code-invalid",
            Self::Throttled => "throttled",
            Self::Timeout => "timeout",
        }
    }
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Severity.
    pub severity: IssueSeverity,
    /// Issue type code.
    pub code: IssueType,
    /// Human-readable explanation.
    pub diagnostics: String,
    /// FHIRPath expressions of the elements concerned (e.g. `Patient.birthDate`).
    pub expression: Vec<String>,
}

/// An OperationOutcome under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationOutcome {
    /// The issues, in order.
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    /// An outcome with one issue.
    pub fn single(
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
    ) -> Self {
        let mut outcome = Self::default();
        outcome.push(severity, code, diagnostics, None);
        outcome
    }

    /// An outcome with one error issue.
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self::single(IssueSeverity::Error, code, diagnostics)
    }

    /// Adds an issue, optionally naming the element path it concerns.
    pub fn push(
        &mut self,
        severity: IssueSeverity,
        code: IssueType,
        diagnostics: impl Into<String>,
        expression: Option<String>,
    ) -> &mut Self {
        self.issues.push(Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: expression.into_iter().collect(),
        });
        self
    }

    /// The diagnostics of every issue, joined: a one-line explanation for logs and pages.
    pub fn summary(&self) -> String {
        self.issues
            .iter()
            .map(|i| i.diagnostics.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether any issue is an error or fatal.
    pub fn has_errors(&self) -> bool {
        self.issues
            .iter()
            .any(|i| matches!(i.severity, IssueSeverity::Error | IssueSeverity::Fatal))
    }

    /// The outcome as FHIR JSON. An empty outcome gets one informational "All OK" issue, since
    /// R4 requires at least one issue.
    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![
                json!({"severity": "information", "code": "informational", "diagnostics": "All OK"}),
            ]
        } else {
            self.issues
                .iter()
                .map(|issue| {
                    let mut value = json!({
                        "severity": issue.severity.code(),
                        "code": issue.code.code(),
                        "diagnostics": issue.diagnostics,
                    });
                    if !issue.expression.is_empty() {
                        value["expression"] = json!(issue.expression);
                    }
                    value
                })
                .collect()
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

impl std::fmt::Display for OperationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<&str> = self.issues.iter().map(|i| i.diagnostics.as_str()).collect();
        f.write_str(&texts.join("; "))
    }
}
