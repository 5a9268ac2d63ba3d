//! `$renew`: the next contract year.

use chrono::{Days, Months, NaiveDate, SecondsFormat, Utc};
use phip_engine::{Engine, FhirError, FhirResponse, FhirResult, RequestContext};
use phip_security::scope::Interaction;
use phip_store::WriteRequest;
use serde_json::{json, Value};

use super::{is_family_doctor_contract, term_of, RENEWS_EXTENSION};
use crate::lookup::{self, business, conflict, forbidden};

/// `POST Contract/{id}/$renew`: renews an executed family-doctor contract for one more
/// year. In one transaction the old contract becomes `renewed` and a new executed contract
/// with the same resident, team, authority and signers starts the day after the old term
/// ends (or `today`, if the old term is already over), lasting one year; it names the old
/// one in the [`RENEWS_EXTENSION`] extension. Only the contracting clinic (`authority`) may
/// renew. Answers 201 with the new contract.
pub fn renew(
    engine: &Engine,
    ctx: &RequestContext,
    id: &str,
    today: NaiveDate,
) -> FhirResult<FhirResponse> {
    ctx.principal.require("Contract", Interaction::Update)?;
    ctx.principal.require("Contract", Interaction::Create)?;
    let stored = engine.write_transaction(&ctx.principal, |tx| {
        let current = lookup::read_live(tx, "Contract", id)?
            .ok_or_else(|| FhirError::not_found(format!("Contract/{id} is not known")))?;
        let Some(old) = current.resource.clone() else {
            return Err(FhirError::not_found(format!("Contract/{id} is not known")));
        };
        if !is_family_doctor_contract(&old) {
            return Err(business(format!(
                "Contract/{id} is not a family-doctor contract"
            )));
        }
        if let Some(org) = ctx.principal.organization.as_deref() {
            let authorities: Vec<String> = old
                .get("authority")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| lookup::reference_id(r, "Organization"))
                        .collect()
                })
                .unwrap_or_default();
            if !authorities.iter().any(|a| a == org) {
                return Err(forbidden(format!(
                    "only the contracting clinic may renew Contract/{id}"
                )));
            }
        }
        let status = lookup::status_of(Some(&old)).unwrap_or("unknown");
        if status != "executed" {
            return Err(conflict(format!(
                "only a contract in force can be renewed; Contract/{id} is {status}"
            )));
        }
        let (_, old_end) = term_of(&old).ok_or_else(|| {
            business(format!("Contract/{id} states no term (applies.start/end)"))
        })?;
        let start = old_end
            .checked_add_days(Days::new(1))
            .map_or(today, |next| next.max(today));
        let end = start
            .checked_add_months(Months::new(12))
            .and_then(|d| d.checked_sub_days(Days::new(1)))
            .ok_or_else(|| business("the renewed term is out of range"))?;
        let mut retired = old.clone();
        retired["status"] = json!("renewed");
        lookup::write_next(
            tx,
            &current,
            retired,
            &format!("Contract/{id} changed while it was being renewed; retry"),
        )?;
        let mut renewed = lookup::without(&old, &["id", "identifier", "text"]);
        if let Some(meta) = renewed.get_mut("meta").and_then(Value::as_object_mut) {
            // Keep the holder tags; the store sets the version and time.
            meta.retain(|name, _| name == "tag" || name == "security");
        }
        renewed["status"] = json!("executed");
        renewed["issued"] = json!(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true));
        renewed["applies"] = json!({"start": start.to_string(), "end": end.to_string()});
        let mut extensions: Vec<Value> = renewed
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        extensions.retain(|e| e.get("url").and_then(Value::as_str) != Some(RENEWS_EXTENSION));
        extensions.push(json!({"url": RENEWS_EXTENSION, "valueReference": {"reference": format!("Contract/{id}")}}));
        renewed["extension"] = Value::Array(extensions);
        let new_id = uuid::Uuid::new_v4().to_string();
        renewed["id"] = json!(new_id);
        Ok(tx.write(WriteRequest {
            resource_type: "Contract".into(),
            id: new_id,
            resource: Some(renewed),
            expected_version: Some(0),
        })?)
    })?;
    Ok(FhirResponse {
        status: 201,
        location: Some(format!(
            "{}/Contract/{}/_history/{}",
            ctx.base_url, stored.id, stored.version_id
        )),
        version_id: Some(stored.version_id),
        last_modified: Some(stored.last_updated),
        body: stored.resource,
    })
}
