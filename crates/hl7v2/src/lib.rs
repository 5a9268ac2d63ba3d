//! HL7 v2 for phip: ER7 parsing and encoding, ACK/NAK, MLLP transport and v2 → FHIR R4.
//!
//! * [`message`]: [`Message::parse`] decodes raw bytes (charset from MSH-18, GB18030
//!   included), splits segments and fields, resolves escape sequences, and gives typed
//!   access with 1-based HL7 positions (`msg.get("PID-5-1")`).
//! * [`ack`]: [`Ack`] builds the AA/AE/AR acknowledgement with MSA and ERR segments, encoded
//!   in the sender's charset.
//! * [`mllp`]: the MLLP framing codec, a tokio server that runs a synchronous
//!   [`mllp::MessageHandler`] per message, and a small client.
//! * [`fhir`]: pure mapping of ADT and ORU messages to FHIR R4 JSON and transaction bundles.
//!
//! Every failure is an [`Hl7Error`] carrying a table 0357 code and the segment/field it
//! concerns, so any error can become a NAK that names where the message went wrong.

#![warn(missing_docs)]

pub mod ack;
pub mod error;
pub mod fhir;
pub mod message;
pub mod mllp;

pub use ack::{Ack, AckCode};
pub use error::{ErrorCode, Hl7Error, Location, Severity};
pub use message::{Delimiters, Message, MessageType};
