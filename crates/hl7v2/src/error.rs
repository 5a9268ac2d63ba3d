//! Errors that become the ERR segment of a negative acknowledgement.
//!
//! Every failure this crate reports — a malformed message, an unsupported message type, a
//! mapping problem, a handler's own failure — is an [`Hl7Error`]: an HL7 table 0357 code, the
//! place in the message it concerns (ERR-2) and a human-readable text (ERR-8). That keeps the
//! path from "something went wrong" to a NAK naming segment and field a single step.

use std::fmt;

/// HL7 table 0357 "Message error condition codes", the value of ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: a segment is missing, out of order or not recognised.
    SegmentSequenceError,
    /// 101: a required field is empty.
    RequiredFieldMissing,
    /// 102: a field's content does not fit its data type.
    DataTypeError,
    /// 103: a coded value is not in its table.
    TableValueNotFound,
    /// 200: the message type is not supported.
    UnsupportedMessageType,
    /// 201: the trigger event is not supported.
    UnsupportedEventCode,
    /// 202: the processing id is not supported.
    UnsupportedProcessingId,
    /// 203: the version id is not supported.
    UnsupportedVersionId,
    /// 204: a key identifier (e.g. a patient id) is not known.
    UnknownKeyIdentifier,
    /// 205: a key identifier would be duplicated.
    DuplicateKeyIdentifier,
    /// 206: the record is locked.
    ApplicationRecordLocked,
    /// 207: the receiver failed for a reason unrelated to the message content.
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code of table 0357.
    pub fn code(self) -> u16 {
        match self {
            Self::SegmentSequenceError => 100,
            Self::RequiredFieldMissing => 101,
            Self::DataTypeError => 102,
            Self::TableValueNotFound => 103,
            Self::UnsupportedMessageType => 200,
            Self::UnsupportedEventCode => 201,
            Self::UnsupportedProcessingId => 202,
            Self::UnsupportedVersionId => 203,
            Self::UnknownKeyIdentifier => 204,
            Self::DuplicateKeyIdentifier => 205,
            Self::ApplicationRecordLocked => 206,
            Self::ApplicationInternalError => 207,
        }
    }

    /// The display text of table 0357.
    pub fn text(self) -> &'static str {
        match self {
            Self::SegmentSequenceError => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataTypeError => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnsupportedProcessingId => "Unsupported processing id",
            Self::UnsupportedVersionId => "Unsupported version id",
            Self::UnknownKeyIdentifier => "Unknown key identifier",
            Self::DuplicateKeyIdentifier => "Duplicate key identifier",
            Self::ApplicationRecordLocked => "Application record locked",
            Self::ApplicationInternalError => "Application internal error",
        }
    }
}

/// HL7 table 0516 "Error severity", the value of ERR-4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Severity {
    /// `E`: the message was not (fully) processed.
    #[default]
    Error,
    /// `W`: processed, but something deserves the sender's attention.
    Warning,
    /// `I`: information only.
    Information,
}

impl Severity {
    /// The table 0516 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Error => "E",
            Self::Warning => "W",
            Self::Information => "I",
        }
    }
}

/// Where in a message an error was found: the ERL data type of ERR-2.
///
/// Positions are 1-based as in HL7; `sequence` counts occurrences of the same segment id
/// (the second OBX has sequence 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The segment id, e.g. `PID`.
    pub segment: String,
    /// The occurrence of that segment id in the message (1-based).
    pub sequence: usize,
    /// The field position, if the error concerns one field.
    pub field: Option<usize>,
    /// The repetition of the field, if known.
    pub repetition: Option<usize>,
    /// The component, if known.
    pub component: Option<usize>,
}

impl Location {
    /// A location naming a whole segment.
    pub fn segment(segment: impl Into<String>, sequence: usize) -> Self {
        Self {
            segment: segment.into(),
            sequence,
            ..Self::default()
        }
    }

    /// A location naming one field of a segment.
    pub fn field(segment: impl Into<String>, sequence: usize, field: usize) -> Self {
        Self {
            segment: segment.into(),
            sequence,
            field: Some(field),
            ..Self::default()
        }
    }

    /// The same location narrowed to one component (of the first repetition).
    pub fn with_component(mut self, component: usize) -> Self {
        self.component = Some(component);
        self
    }

    /// The ERL components (`PID`, `1`, `7`, ...), trailing empties dropped.
    pub fn components(&self) -> Vec<String> {
        let mut parts = vec![self.segment.clone(), self.sequence.to_string()];
        let rest = [self.field, self.repetition, self.component];
        let last = rest.iter().rposition(Option::is_some);
        if let Some(last) = last {
            for (i, part) in rest.iter().enumerate().take(last + 1) {
                // ERL-4 (repetition) defaults to the first when a component is named.
                let value = match (i, part) {
                    (1, None) => Some(1),
                    _ => *part,
                };
                parts.push(value.map(|v| v.to_string()).unwrap_or_default());
            }
        }
        parts
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.sequence > 1 {
            write!(f, "({})", self.sequence)?;
        }
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(rep) = self.repetition {
                write!(f, "({rep})")?;
            }
            if let Some(component) = self.component {
                write!(f, "-{component}")?;
            }
        }
        Ok(())
    }
}

/// A problem with an HL7 v2 message, ready to be reported in an ERR segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Hl7Error {
    /// The table 0357 condition (ERR-3).
    pub code: ErrorCode,
    /// Where the problem is (ERR-2), when it concerns a particular place.
    pub location: Option<Location>,
    /// Severity (ERR-4).
    pub severity: Severity,
    /// A human-readable explanation (ERR-8).
    pub message: String,
}

impl Hl7Error {
    /// An error of `code` with an explanation, not tied to a place in the message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            location: None,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// An error of `code` at `location`.
    pub fn at(code: ErrorCode, location: Location, message: impl Into<String>) -> Self {
        Self {
            code,
            location: Some(location),
            severity: Severity::Error,
            message: message.into(),
        }
    }

    /// A required field (`segment`-`field`, the `sequence`-th such segment) is empty.
    pub fn missing(segment: &str, sequence: usize, field: usize, what: &str) -> Self {
        Self::at(
            ErrorCode::RequiredFieldMissing,
            Location::field(segment, sequence, field),
            format!("{segment}-{field} ({what}) is required but empty"),
        )
    }

    /// The receiver failed for a reason unrelated to the message (storage down, ...).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ApplicationInternalError, message)
    }

    /// The same error with another severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

impl fmt::Display for Hl7Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(
                f,
                "{} ({}) at {location}: {}",
                self.code.text(),
                self.code.code(),
                self.message
            ),
            None => write!(
                f,
                "{} ({}): {}",
                self.code.text(),
                self.code.code(),
                self.message
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erl_components_fill_the_repetition_when_a_component_is_named() {
        assert_eq!(Location::field("PID", 1, 7).components(), ["PID", "1", "7"]);
        assert_eq!(
            Location::field("PID", 1, 5).with_component(2).components(),
            ["PID", "1", "5", "1", "2"]
        );
        assert_eq!(Location::segment("MSH", 1).components(), ["MSH", "1"]);
    }

    #[test]
    fn display_names_segment_and_field() {
        let e = Hl7Error::missing("MSH", 1, 10, "message control id");
        assert_eq!(
            e.to_string(),
            "Required field missing (101) at MSH-10: MSH-10 (message control id) is required but empty"
        );
        assert_eq!(Location::field("OBX", 3, 5).to_string(), "OBX(3)-5");
    }
}
