//! The declared case table: which (interaction × caller) cases each test checks. Every test
//! checks that it exercised exactly its rows here (`Matrix::finish`), so the figure printed by
//! `case_table_figure` is the number of cases the suite really checks.

#![allow(dead_code)]

use std::collections::BTreeSet;

use super::callers::{
    ATTACKERS, CONSENT_DENIED, HOLDER_ORG, MISSING_ROLE, NOBODY, OPERATOR, OTHER_DIVISION,
    OTHER_RESIDENT, RESIDENT_SELF,
};

/// The five attacking classes.
const ATT: &[&str] = ATTACKERS;
/// Attackers and the three legitimate callers.
const ALL: &[&str] = &[
    OTHER_RESIDENT,
    CONSENT_DENIED,
    OTHER_DIVISION,
    MISSING_ROLE,
    NOBODY,
    RESIDENT_SELF,
    HOLDER_ORG,
    OPERATOR,
];
/// Attackers, the holding organisation and the operator.
const ATT_ORG: &[&str] = &[
    OTHER_RESIDENT,
    CONSENT_DENIED,
    OTHER_DIVISION,
    MISSING_ROLE,
    NOBODY,
    HOLDER_ORG,
    OPERATOR,
];

/// Attackers and the holding organisation.
const ATT_HOLDER: &[&str] = &[
    OTHER_RESIDENT,
    CONSENT_DENIED,
    OTHER_DIVISION,
    MISSING_ROLE,
    NOBODY,
    HOLDER_ORG,
];

/// Attackers, the resident and the holding organisation.
const ATT_SELF_HOLDER: &[&str] = &[
    OTHER_RESIDENT,
    CONSENT_DENIED,
    OTHER_DIVISION,
    MISSING_ROLE,
    NOBODY,
    RESIDENT_SELF,
    HOLDER_ORG,
];
/// Attackers, the holding organisation and the operator (who must all be refused).
const ATT_HOLDER_OP: &[&str] = ATT_ORG;

/// (test, interaction, callers).
pub const TABLE: &[(&str, &str, &[&str])] = &[
    ("reads_by_id", "read", ALL),
    ("reads_by_id", "vread", ALL),
    ("reads_by_id", "instance history", ALL),
    ("reads_by_id", "batch GET", ALL),
    ("reads_by_id", "$everything", ALL),
    ("reads_by_id", "golden record read", ATT_ORG),
    (
        "reads_by_id",
        "$everything: referenced resources",
        &[HOLDER_ORG, OPERATOR],
    ),
    ("searches", "search: string", ALL),
    ("searches", "search: token", ALL),
    ("searches", "search: reference", ALL),
    ("searches", "search: date", ALL),
    ("searches", "search: quantity", ALL),
    ("searches", "search: _id", ALL),
    ("searches", "search: composite", ALL),
    ("searches", "search: modifiers", ALL),
    ("searches", "_summary=count", ALL),
    ("searches", "_total=accurate", ALL),
    ("searches", "POST _search", ALL),
    ("searches", "system search", ALL),
    ("searches", "search: all of a type", ALL),
    ("paging_and_totals", "_sort paging", ALL),
    ("paging_and_totals", "type history", ALL),
    ("paging_and_totals", "system history", ALL),
    ("paging_and_totals", "history _since", ALL),
    ("paging_and_totals", "_summary=count", ATT),
    ("includes_chains_has", "_include", ALL),
    ("includes_chains_has", "_include:iterate", ALL),
    ("includes_chains_has", "_revinclude", ALL),
    ("includes_chains_has", "_revinclude:iterate", ALL),
    ("includes_chains_has", "chain", ALL),
    ("includes_chains_has", "_has", ATT_ORG),
    ("conditional_writes", "conditional create", ATT_HOLDER),
    ("conditional_writes", "conditional update", ATT_HOLDER),
    ("conditional_writes", "conditional delete", ATT_HOLDER),
    ("bundles", "batch with conditional entries", ALL),
    ("bundles", "transaction with conditional entries", ALL),
    ("writes_by_id", "PUT by id", ATT_HOLDER),
    ("writes_by_id", "PATCH by id", ATT_HOLDER),
    ("writes_by_id", "DELETE by id", ATT_HOLDER),
    ("patient_index", "$match", ATT_ORG),
    ("patient_index", "$ihe-pix", ATT_ORG),
    ("patient_index", "_master=true", ATT_ORG),
    ("patient_index", "$merge", ATT_ORG),
    (
        "health_code",
        "$health-code",
        &[
            OTHER_RESIDENT,
            CONSENT_DENIED,
            OTHER_DIVISION,
            MISSING_ROLE,
            NOBODY,
            RESIDENT_SELF,
            OPERATOR,
        ],
    ),
    (
        "audit_trail",
        "AuditEvent search",
        &[
            OTHER_RESIDENT,
            CONSENT_DENIED,
            OTHER_DIVISION,
            MISSING_ROLE,
            NOBODY,
            RESIDENT_SELF,
            HOLDER_ORG,
            "auditor",
        ],
    ),
    (
        "audit_trail",
        "AuditEvent read",
        &[
            OTHER_RESIDENT,
            CONSENT_DENIED,
            OTHER_DIVISION,
            MISSING_ROLE,
            NOBODY,
            RESIDENT_SELF,
            HOLDER_ORG,
            "auditor",
        ],
    ),
    ("bulk_export", "$export kick-off", ATT_ORG),
    ("bulk_export", "another caller's export job", ATT_HOLDER),
    ("subscriptions", "Subscription", ATT_HOLDER),
    ("portal_pages", "portal pages", ATT_SELF_HOLDER),
    (
        "server_owned_sign_in_codes",
        "forged sign-in code",
        ATT_HOLDER_OP,
    ),
    (
        "server_owned_sign_in_codes",
        "sign-in code",
        &[RESIDENT_SELF, HOLDER_ORG, OPERATOR],
    ),
    ("server_owned_golden_records", "golden record write", ALL),
    (
        "server_owned_receipts_and_revocations",
        "HL7 receipt write",
        ALL,
    ),
    (
        "server_owned_receipts_and_revocations",
        "health-code revocation write",
        ALL,
    ),
    (
        "server_owned_receipts_and_revocations",
        "server-owned tag forged",
        ALL,
    ),
    (
        "consent_authority",
        "privacy Consent by a non-resident",
        &[
            OTHER_RESIDENT,
            CONSENT_DENIED,
            OTHER_DIVISION,
            MISSING_ROLE,
            NOBODY,
            HOLDER_ORG,
            "consent-steward",
        ],
    ),
    (
        "consent_authority",
        "privacy Consent changed by another",
        ATT_HOLDER,
    ),
    (
        "consent_authority",
        "privacy Consent by the resident",
        &[RESIDENT_SELF],
    ),
    (
        "consent_authority",
        "privacy Consent by a steward",
        &["consent-steward"],
    ),
    (
        "patient_writes_stay_in_compartment",
        "patient/ write into another compartment",
        &[OTHER_RESIDENT, RESIDENT_SELF],
    ),
    (
        "patient_writes_stay_in_compartment",
        "patient/ Patient create",
        &[OTHER_RESIDENT],
    ),
    (
        "health_code",
        "$health-code-revoke",
        &[
            OTHER_RESIDENT,
            CONSENT_DENIED,
            OTHER_DIVISION,
            MISSING_ROLE,
            NOBODY,
            RESIDENT_SELF,
        ],
    ),
];

/// The legitimate callers' labels (not attackers).
fn is_attacker(caller: &str) -> bool {
    ATT.contains(&caller)
}

/// The cases declared for `test`.
pub fn declared(test: &str) -> BTreeSet<(String, String)> {
    TABLE
        .iter()
        .filter(|(t, _, _)| *t == test)
        .flat_map(|(_, interaction, callers)| {
            callers
                .iter()
                .map(move |c| ((*interaction).to_owned(), (*c).to_owned()))
        })
        .collect()
}

/// (all cases, attacking cases, legitimate cases) of the whole table.
pub fn figure() -> (usize, usize, usize) {
    let mut all = BTreeSet::new();
    for (test, interaction, callers) in TABLE {
        for caller in *callers {
            all.insert((*test, *interaction, *caller));
        }
    }
    let attacking = all.iter().filter(|(_, _, c)| is_attacker(c)).count();
    (all.len(), attacking, all.len() - attacking)
}
