//! The HL7 v2 feed: messages received over MLLP applied to the FHIR store.
//!
//! Each message becomes one FHIR transaction: the Patient (a conditional update on the
//! sending institution's record number, so it goes through the patient index like any other
//! Patient write), the Encounter or results, and a receipt (`Basic`, identified by the sender
//! and message control id, with a digest of the message's content). The acknowledgement is
//! AA only after that transaction committed. Checks come in this order: the message type
//! (MSH-9; an unsupported one is AR whatever its control id), the sender (MSH-4, else MSH-3),
//! the control id (MSH-10), then the receipts: a message whose receipt exists with the same
//! content (a resend after a lost ACK) is acknowledged without being applied again; a control
//! id the sender used before for other content (a counter reset) is applied as the new message
//! it is. ADT^A40 merges go to the index as source-record merges.
//!
//! MLLP has no authentication of its own: the listener acts for the sending systems with
//! the rights of the platform itself, so bind it to the hospital network only (or put it
//! behind a TLS-terminating MLLP gateway).

use std::sync::Arc;

use chrono::Utc;
use phip_engine::{Engine, FhirError, Principal, RequestContext};
use phip_hl7v2::fhir::{
    check_supported, conditional_url, map_message, sender, Identifier, Mapped, RESIDENT_ID_SYSTEM,
};
use phip_hl7v2::mllp::MessageHandler;
use phip_hl7v2::{Ack, ErrorCode, Hl7Error, Message};
use serde_json::{json, Value};

/// Code system of the receipts of applied messages.
pub const RECEIPT_SYSTEM: &str = "urn:phip:hl7v2";
/// Prefix of the identifier system of receipts: one system per sender.
pub const RECEIPT_ID_PREFIX: &str = "urn:phip:hl7v2:message:";
/// Identifier system of a receipt's second identifier, the digest of the message's content
/// (`sha256:<hex>`, see [`content_digest`]).
pub const RECEIPT_DIGEST_SYSTEM: &str = "urn:phip:hl7v2:content";

/// Applies HL7 v2 messages through an [`Engine`].
pub struct Hl7Handler {
    engine: Arc<Engine>,
    base_url: String,
}

impl Hl7Handler {
    /// A handler writing through `engine`; `base_url` is used for the FHIR context.
    pub fn new(engine: Arc<Engine>, base_url: impl Into<String>) -> Self {
        Self {
            engine,
            base_url: base_url.into(),
        }
    }

    fn context(&self, facility: &str) -> RequestContext {
        RequestContext::new(
            self.base_url.clone(),
            Principal::unrestricted(format!("hl7v2:{facility}")),
        )
    }

    /// Applies one message; `Ok(false)` when it was a duplicate and nothing was applied.
    pub fn apply(&self, message: &Message) -> Result<bool, Hl7Error> {
        // MSH-9 before any receipt: a control id that a supported message used before must
        // not make an unsupported one look applied (it would be acknowledged and dropped).
        check_supported(message)?;
        let facility = sender(message)?;
        let control_id = message.control_id().trim().to_owned();
        if control_id.is_empty() {
            return Err(Hl7Error::missing("MSH", 1, 10, "message control id"));
        }
        let receipt = Receipt {
            id: Identifier {
                system: format!("{RECEIPT_ID_PREFIX}{}", encode_facility(&facility)),
                value: control_id,
            },
            digest: content_digest(message),
        };
        let ctx = self.context(&facility);
        match self.receipt_state(&ctx, &receipt)? {
            ReceiptState::Applied => return Ok(false),
            ReceiptState::Reused => tracing::warn!(
                sender = %facility,
                control_id = %receipt.id.value,
                "HL7 v2 control id reused for a message with other content: applied as a new message"
            ),
            ReceiptState::New => {}
        }
        match map_message(message)? {
            Mapped::Adt(adt) => {
                let mut bundle = adt.transaction(PATIENT_URL);
                self.prepend_patient(&mut bundle, adt.patient, &adt.patient_identifiers)?;
                push_receipt(&mut bundle, &receipt, message);
                self.commit(&ctx, bundle)?;
            }
            Mapped::Results(results) => {
                let mut bundle = results.transaction(PATIENT_URL);
                self.prepend_patient(&mut bundle, results.patient, &results.patient_identifiers)?;
                push_receipt(&mut bundle, &receipt, message);
                self.commit(&ctx, bundle)?;
            }
            Mapped::Merge(instructions) => {
                for (index, merge) in instructions.iter().enumerate() {
                    let surviving_key = record_key(&merge.surviving).ok_or_else(|| {
                        Hl7Error::missing("PID", index + 1, 3, "surviving patient identifier")
                    })?;
                    let retired_key = record_key(&merge.retired).ok_or_else(|| {
                        Hl7Error::missing("MRG", index + 1, 1, "prior patient identifier")
                    })?;
                    let retired = self.find_patient(&ctx, retired_key)?.ok_or_else(|| {
                        Hl7Error::at(
                            ErrorCode::UnknownKeyIdentifier,
                            phip_hl7v2::Location::field("MRG", index + 1, 1),
                            format!(
                                "no patient holds the prior identifier {}|{}",
                                retired_key.system, retired_key.value
                            ),
                        )
                    })?;
                    // The surviving record is registered (or updated) from the PID segment.
                    let mut bundle =
                        json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
                    self.prepend_patient(&mut bundle, merge.patient.clone(), &merge.surviving)?;
                    self.commit(&ctx, bundle)?;
                    let surviving = self.find_patient(&ctx, surviving_key)?.ok_or_else(|| {
                        Hl7Error::internal("the surviving patient was not stored")
                    })?;
                    self.engine
                        .merge_source_records(&ctx, &retired, &surviving)
                        .map_err(fhir_to_hl7)?;
                }
                let mut bundle =
                    json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
                push_receipt(&mut bundle, &receipt, message);
                if let Some(entry) = bundle["entry"][0].as_object_mut() {
                    entry
                        .get_mut("resource")
                        .and_then(Value::as_object_mut)
                        .map(|r| r.remove("subject"));
                }
                self.commit(&ctx, bundle)?;
            }
        }
        Ok(true)
    }

    /// Whether this sender's control id was seen before, and for this content.
    fn receipt_state(
        &self,
        ctx: &RequestContext,
        receipt: &Receipt,
    ) -> Result<ReceiptState, Hl7Error> {
        // Only a receipt the feed itself wrote counts: one a client made up with the same
        // identifier cannot make a message look applied (and the tag cannot be forged).
        let params = vec![
            (
                "identifier".to_owned(),
                format!("{}|{}", receipt.id.system, receipt.id.value),
            ),
            (
                "_tag".to_owned(),
                format!("{}|{RECEIPT_KIND}", phip_fhir::access::SERVER_OWNED_SYSTEM),
            ),
        ];
        let response = self
            .engine
            .search(ctx, Some("Basic"), &params)
            .map_err(fhir_to_hl7)?;
        let entries = response
            .body
            .as_ref()
            .and_then(|b| b.get("entry"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if entries.is_empty() {
            return Ok(ReceiptState::New);
        }
        let same = entries.iter().any(|entry| {
            let digests: Vec<&str> = entry
                .pointer("/resource/identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|i| i["system"] == RECEIPT_DIGEST_SYSTEM)
                .filter_map(|i| i["value"].as_str())
                .collect();
            // A receipt from before digests were kept says only "this control id was applied".
            digests.is_empty() || digests.contains(&receipt.digest.as_str())
        });
        Ok(if same {
            ReceiptState::Applied
        } else {
            ReceiptState::Reused
        })
    }

    fn find_patient(
        &self,
        ctx: &RequestContext,
        key: &Identifier,
    ) -> Result<Option<String>, Hl7Error> {
        let params = vec![(
            "identifier".to_owned(),
            format!("{}|{}", key.system, key.value),
        )];
        let response = self
            .engine
            .search(ctx, Some("Patient"), &params)
            .map_err(fhir_to_hl7)?;
        Ok(response
            .body
            .as_ref()
            .and_then(|b| b.pointer("/entry/0/resource/id"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// Puts the Patient first in the transaction, as a conditional update on the
    /// institution's own record number (never on the resident ID, which other institutions'
    /// records of the same person share).
    fn prepend_patient(
        &self,
        bundle: &mut Value,
        patient: Value,
        identifiers: &[Identifier],
    ) -> Result<(), Hl7Error> {
        let key = record_key(identifiers)
            .ok_or_else(|| Hl7Error::missing("PID", 1, 3, "patient identifier list"))?;
        let entry = json!({
            "fullUrl": PATIENT_URL,
            "resource": patient,
            "request": {"method": "PUT", "url": conditional_url("Patient", key)}
        });
        match bundle.get_mut("entry").and_then(Value::as_array_mut) {
            Some(entries) => entries.insert(0, entry),
            None => bundle["entry"] = json!([entry]),
        }
        Ok(())
    }

    fn commit(&self, ctx: &RequestContext, bundle: Value) -> Result<(), Hl7Error> {
        self.engine
            .process_bundle(ctx, bundle)
            .map(|_| ())
            .map_err(fhir_to_hl7)
    }
}

/// The fullUrl standing for the message's Patient inside its transaction.
const PATIENT_URL: &str = "urn:uuid:00000000-0000-4000-8000-00000000a001";

/// The identifier a record is keyed on: the first that is not a resident ID.
fn record_key(identifiers: &[Identifier]) -> Option<&Identifier> {
    identifiers
        .iter()
        .find(|i| i.system != RESIDENT_ID_SYSTEM)
        .or_else(|| identifiers.first())
}

/// Facility names become part of a URI.
fn encode_facility(facility: &str) -> String {
    percent_encoding::utf8_percent_encode(facility, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Kind of server-owned state a receipt is.
const RECEIPT_KIND: &str = "hl7v2-receipt";

/// What identifies an applied message: the sender's control id and the content's digest.
struct Receipt {
    id: Identifier,
    digest: String,
}

/// What the receipts say about a message.
enum ReceiptState {
    /// No receipt for its control id.
    New,
    /// A receipt for its control id and content: applied before.
    Applied,
    /// Receipts for its control id, all for other content.
    Reused,
}

/// `sha256:<hex>` of what a message says: its type (MSH-9) and every segment after MSH, as
/// received. The rest of MSH (time of message, processing id, …) is left out, so a resend
/// whose header an interface engine rebuilt is still recognised as the same message.
pub fn content_digest(message: &Message) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(message.msh().field(9).raw().as_bytes());
    for segment in message.segments_all().skip(1) {
        hash.update(b"\r");
        hash.update(segment.raw().as_bytes());
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn push_receipt(bundle: &mut Value, receipt: &Receipt, message: &Message) {
    let message_type = message.message_type();
    let mut resource = json!({
        "resourceType": "Basic",
        "identifier": [{"system": receipt.id.system, "value": receipt.id.value},
                       {"system": RECEIPT_DIGEST_SYSTEM, "value": receipt.digest}],
        "code": {"coding": [{"system": RECEIPT_SYSTEM, "code": "message-receipt",
                              "display": "HL7 v2 message applied"}],
                 "text": format!("{}^{}", message_type.code, message_type.trigger)},
        "subject": {"reference": PATIENT_URL},
        "created": Utc::now().format("%Y-%m-%d").to_string(),
    });
    phip_fhir::access::mark_server_owned(&mut resource, RECEIPT_KIND);
    let entry = json!({
        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "resource": resource,
        "request": {
            "method": "POST",
            "url": "Basic",
            "ifNoneExist": format!(
                "identifier={}&identifier={}&_tag={}|{RECEIPT_KIND}",
                query_value(&format!("{}|{}", receipt.id.system, receipt.id.value)),
                query_value(&format!("{RECEIPT_DIGEST_SYSTEM}|{}", receipt.digest)),
                phip_fhir::access::SERVER_OWNED_SYSTEM
            ),
        }
    });
    match bundle.get_mut("entry").and_then(Value::as_array_mut) {
        Some(entries) => entries.push(entry),
        None => bundle["entry"] = json!([entry]),
    }
}

/// A search value for a query string (`|` and `:` stay as they are).
fn query_value(raw: &str) -> String {
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b'=')
        .add(b'?');
    percent_encoding::utf8_percent_encode(raw, QUERY).to_string()
}

/// A refused FHIR write becomes an application error naming what the server said.
fn fhir_to_hl7(error: FhirError) -> Hl7Error {
    let text = error.outcome.to_string();
    if error.status >= 500 {
        Hl7Error::internal(text)
    } else {
        Hl7Error::new(ErrorCode::DataTypeError, text)
    }
}

impl MessageHandler for Hl7Handler {
    fn handle(&self, message: Message) -> Ack {
        match self.apply(&message) {
            Ok(applied) => {
                if !applied {
                    tracing::info!(
                        control_id = %message.control_id(),
                        "duplicate HL7 v2 message acknowledged without being applied again"
                    );
                }
                Ack::accept(&message)
            }
            Err(error) => {
                tracing::warn!(control_id = %message.control_id(), error = %error.message, "HL7 v2 message refused");
                Ack::error(&message, error)
            }
        }
    }
}
