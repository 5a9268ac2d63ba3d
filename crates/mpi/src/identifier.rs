//! Registry of the identifier systems the matcher knows, and how far each is trusted.
//!
//! The registry is data: a list of [`SystemEntry`] (a system URI, or a URI prefix for families
//! of systems such as one MRN system per hospital), with built-in defaults and
//! [`IdentifierRegistry::register`] to add or override entries at run time.
//!
//! Two flags drive the deterministic rules of [`crate::rules`]:
//! - `trusted`: the same value in this system means the same person (when the birth dates
//!   agree), so two records sharing it are linked without a probabilistic score;
//! - `exclusive`: a person has exactly one value in this system for life, so two records with
//!   two different *valid* values are two different people.

use serde::{Deserialize, Serialize};

/// China resident identity number (公民身份号码). `2.16.156.10011.1.1` is the OID under
/// the National Health Commission's health-informatics arc (`2.16.156.10011`) that the WS/T
/// data-set standards use for the ID-card number; it is what phip writes in
/// `Patient.identifier.system` for resident IDs.
pub const RESIDENT_ID: &str = "urn:oid:2.16.156.10011.1.1";
/// Resident health card (居民健康卡) number; phip's own URI, override with the deployment's OID.
pub const HEALTH_CARD: &str = "https://phip.cn/fhir/sid/health-card";
/// Basic medical insurance (医保) number; phip's own URI, override with the deployment's OID.
pub const MEDICAL_INSURANCE: &str = "https://phip.cn/fhir/sid/medical-insurance";
/// Passport of the People's Republic of China: HL7's passport arc
/// `2.16.840.1.113883.4.330` followed by the ISO 3166 numeric country code (156 = China).
pub const PASSPORT_CN: &str = "urn:oid:2.16.840.1.113883.4.330.156";
/// Prefix of the passport systems of every country (HL7 passport arc).
pub const PASSPORT_PREFIX: &str = "urn:oid:2.16.840.1.113883.4.330.";
/// Prefix of per-institution medical record number systems; see [`mrn_system`].
pub const MRN_PREFIX: &str = "https://phip.cn/fhir/sid/mrn/";

/// The medical record number (病案号/病历号) system of one assigning organisation: MRNs are
/// unique only within the institution that assigned them, so each has its own system.
pub fn mrn_system(organization_id: &str) -> String {
    format!("{MRN_PREFIX}{organization_id}")
}

/// What kind of identifier a system holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentifierKind {
    /// China resident identity number.
    ResidentId,
    /// Resident health card.
    HealthCard,
    /// Medical insurance number.
    MedicalInsurance,
    /// Passport number.
    Passport,
    /// Medical record number of one institution.
    MedicalRecordNumber,
    /// Anything else (used only as probabilistic evidence).
    Other,
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemEntry {
    /// System URI, or a URI prefix when `prefix` is set.
    pub system: String,
    /// Whether `system` is a prefix matching a family of systems.
    #[serde(default)]
    pub prefix: bool,
    /// Kind of identifier.
    pub kind: IdentifierKind,
    /// Same value ⇒ same person (if birth dates agree).
    pub trusted: bool,
    /// One value per person for life: different valid values ⇒ different people.
    pub exclusive: bool,
    /// Human-readable label.
    pub label: String,
}

/// How one system is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// Kind of identifier.
    pub kind: IdentifierKind,
    /// See [`SystemEntry::trusted`].
    pub trusted: bool,
    /// See [`SystemEntry::exclusive`].
    pub exclusive: bool,
}

impl Classification {
    /// Untrusted, non-exclusive `Other`: what unknown systems are.
    pub const OTHER: Classification = Classification {
        kind: IdentifierKind::Other,
        trusted: false,
        exclusive: false,
    };
}

/// The identifier systems known to the matcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierRegistry {
    entries: Vec<SystemEntry>,
}

impl Default for IdentifierRegistry {
    /// Resident ID (trusted, exclusive), passports (trusted: a passport number is never
    /// reissued to someone else, but a person holds several over a lifetime), MRNs (trusted
    /// within their institution's system; one patient may wrongly hold two, which is what an
    /// MPI finds), health card and medical insurance numbers (untrusted: reissued across
    /// provinces, so only probabilistic evidence).
    fn default() -> Self {
        let entry = |system: &str, prefix, kind, trusted, exclusive, label: &str| SystemEntry {
            system: system.to_string(),
            prefix,
            kind,
            trusted,
            exclusive,
            label: label.to_string(),
        };
        use IdentifierKind::*;
        IdentifierRegistry {
            entries: vec![
                entry(RESIDENT_ID, false, ResidentId, true, true, "居民身份证号码"),
                entry(HEALTH_CARD, false, HealthCard, false, false, "居民健康卡号"),
                entry(
                    MEDICAL_INSURANCE,
                    false,
                    MedicalInsurance,
                    false,
                    false,
                    "医保号",
                ),
                entry(PASSPORT_PREFIX, true, Passport, true, false, "护照号码"),
                entry(MRN_PREFIX, true, MedicalRecordNumber, true, false, "病案号"),
            ],
        }
    }
}

impl IdentifierRegistry {
    /// A registry with no entries (every system is `Other`).
    pub fn empty() -> Self {
        IdentifierRegistry {
            entries: Vec::new(),
        }
    }

    /// Adds an entry; an existing entry with the same `system` and `prefix` is replaced.
    pub fn register(&mut self, entry: SystemEntry) {
        self.entries
            .retain(|e| !(e.system == entry.system && e.prefix == entry.prefix));
        self.entries.push(entry);
    }

    /// The entries, in registration order.
    pub fn entries(&self) -> &[SystemEntry] {
        &self.entries
    }

    /// Classifies `system`: an exact entry wins over a prefix entry, the longest prefix over
    /// shorter ones; unknown systems are [`Classification::OTHER`].
    pub fn classify(&self, system: &str) -> Classification {
        let exact = self
            .entries
            .iter()
            .find(|e| !e.prefix && e.system == system);
        let best = exact.or_else(|| {
            self.entries
                .iter()
                .filter(|e| e.prefix && system.starts_with(&e.system))
                .max_by_key(|e| e.system.len())
        });
        best.map_or(Classification::OTHER, |e| Classification {
            kind: e.kind,
            trusted: e.trusted,
            exclusive: e.exclusive,
        })
    }
}
