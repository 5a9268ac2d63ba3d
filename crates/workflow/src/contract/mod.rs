//! Family-doctor contracting (家庭医生签约) and chronic-disease follow-up.
//!
//! Model:
//! - a family-doctor team is a `CareTeam` with category [`TEAM_CATEGORY_SYSTEM`]`|`
//!   [`FAMILY_DOCTOR`], `managingOrganization` the community clinic, practitioners as
//!   participants;
//! - a signed contract is a `Contract` of type [`CONTRACT_TYPE_SYSTEM`]`|`[`FAMILY_DOCTOR`]:
//!   `subject` the resident (`Patient`), `authority` the clinic, `topicReference` the team,
//!   `applies` the contract year, `status` `executed` while in force, `signer`s the resident
//!   and the team's doctor. A resident has at most one executed contract covering any day
//!   ([`ContractRule`]); renewal ([`renew`]) executes a new contract for the following year
//!   (pointing back with the [`RENEWS_EXTENSION`] extension) and marks the old one
//!   `renewed`; termination is the status `terminated`;
//! - a chronic-disease follow-up plan is a `CarePlan` with category
//!   [`PLAN_CATEGORY_SYSTEM`]`|`[`CHRONIC_FOLLOW_UP`], `careTeam` the team, one activity
//!   whose `detail.code` names the disease and whose `detail.scheduledTiming` the interval
//!   (quarterly for hypertension and type 2 diabetes under the national basic public health
//!   service specification, which is also the default); a follow-up done is a completed
//!   `Procedure` with `basedOn` the plan ([`follow_ups_due`]).

mod follow_up;
mod panel;
mod renew;
mod rule;

pub use follow_up::{follow_ups_due, FollowUpStatus, DEFAULT_INTERVAL_DAYS};
pub use panel::panel;
pub use renew::renew;
pub use rule::ContractRule;

use serde_json::Value;

use crate::lookup;

/// The coding system of the CareTeam category marking a family-doctor team.
pub const TEAM_CATEGORY_SYSTEM: &str = "urn:phip:care-team-category";
/// The code of family-doctor teams and contracts.
pub const FAMILY_DOCTOR: &str = "family-doctor";
/// The coding system of the Contract type marking a family-doctor contract.
pub const CONTRACT_TYPE_SYSTEM: &str = "urn:phip:contract-type";
/// The coding system of the CarePlan category marking a chronic-disease follow-up plan.
pub const PLAN_CATEGORY_SYSTEM: &str = "urn:phip:careplan-category";
/// The category code of chronic-disease follow-up plans.
pub const CHRONIC_FOLLOW_UP: &str = "chronic-follow-up";
/// The extension on a renewal Contract naming the contract it renews.
pub const RENEWS_EXTENSION: &str = "urn:phip:extension:contract-renews";

/// Contract statuses whose term stands: `executed`, and `renewed` (continued by a new
/// contract after running its whole term). A `terminated` contract no longer counts, even
/// for the days before its termination.
pub const IN_FORCE: &[&str] = &["executed", "renewed"];

/// Whether `contract` is a family-doctor contract.
pub(crate) fn is_family_doctor_contract(contract: &Value) -> bool {
    lookup::has_coding(contract.get("type"), CONTRACT_TYPE_SYSTEM, FAMILY_DOCTOR)
}

/// The resident a contract is with.
pub(crate) fn resident_of(contract: &Value) -> Option<String> {
    contract
        .get("subject")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|s| lookup::reference_id(s, "Patient"))
}

/// The team a contract is with.
pub(crate) fn team_of(contract: &Value) -> Option<String> {
    contract
        .get("topicReference")
        .and_then(|t| lookup::reference_id(t, "CareTeam"))
}

/// The days a contract covers, as dates (`applies.start`, `applies.end`).
pub(crate) fn term_of(contract: &Value) -> Option<(chrono::NaiveDate, chrono::NaiveDate)> {
    let applies = contract.get("applies")?;
    let start = lookup::date_of(applies.get("start")?.as_str()?)?;
    let end = lookup::date_of(applies.get("end")?.as_str()?)?;
    Some((start, end))
}
