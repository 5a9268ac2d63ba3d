//! Cross-node lookup: one resident's records from every node holding them, in one Bundle.
//!
//! The asking node reads its own records, asks the record locator which other nodes hold
//! records of the person, and queries those in parallel under one deadline. Every entry's
//! `meta.source` names the node it came from. A node that is slow, down or refuses becomes a
//! warning in an OperationOutcome entry; the lookup never waits past the deadline. Each
//! holding node applies its own access and consent rules to the clinician the request is
//! made for, and both ends audit every hop.

use std::sync::Arc;
use std::time::Duration;

use phip_engine::{
    Decision, Engine, FhirError, FhirResponse, FhirResult, Principal, RequestContext,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::entry::{is_index_entry, Holder};
use crate::trust::PeerCall;
use crate::{Federation, PeerAccess};

/// Largest number of resources one node returns for one person.
const MAX_ENTRIES_PER_NODE: usize = 5000;
/// The scope of the service tokens a node sends when querying on a clinician's behalf:
/// read-only.
const LOOKUP_SCOPE: &str = "user/*.rs";

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// This node's records of the person `identifier` names, as the caller may see them: the
/// compartments of every local Patient record carrying the identifier (not index entries of
/// persons held elsewhere). Returns Bundle entries and warnings.
pub fn local_records(
    engine: &Engine,
    ctx: &RequestContext,
    identifier: &str,
) -> FhirResult<(Vec<Value>, Vec<String>)> {
    crate::locate::check_identifier(identifier)?;
    let params = vec![
        ("identifier".to_owned(), identifier.to_owned()),
        ("_count".to_owned(), "100".to_owned()),
    ];
    let found = engine.search(ctx, Some("Patient"), &params)?;
    let patients: Vec<String> = entries_of(found.body.as_ref())
        .filter_map(|e| e.get("resource"))
        .filter(|r| !is_index_entry(r))
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let page = engine.config().max_page_size.to_string();
    for patient in patients {
        let everything =
            engine.patient_everything(ctx, &patient, &[("_count".to_owned(), page.clone())])?;
        let body = everything.body.as_ref();
        let more = body
            .and_then(|b| b.get("link"))
            .and_then(Value::as_array)
            .is_some_and(|links| {
                links
                    .iter()
                    .any(|l| l.get("relation") == Some(&json!("next")))
            });
        for entry in entries_of(body) {
            let key = entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if seen.insert(key) && out.len() < MAX_ENTRIES_PER_NODE {
                out.push(entry.clone());
            }
        }
        if more || out.len() >= MAX_ENTRIES_PER_NODE {
            warnings.push(format!(
                "Patient/{patient} has more records than one lookup returns; the most recent are shown"
            ));
        }
    }
    Ok((out, warnings))
}

fn entries_of(body: Option<&Value>) -> impl Iterator<Item = &Value> {
    body.and_then(|b| b.get("entry"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Stamps the node a resource came from.
fn set_source(entry: &mut Value, endpoint: &str) {
    if let Some(resource) = entry.get_mut("resource").and_then(Value::as_object_mut) {
        let meta = resource.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("source".into(), json!(endpoint));
        }
    }
}

/// The searchset Bundle of a lookup: matches, then one OperationOutcome entry with the
/// warnings, if any.
pub fn bundle(mut entries: Vec<Value>, warnings: &[String]) -> Value {
    for entry in &mut entries {
        entry["search"] = json!({"mode": "match"});
    }
    let total = entries.len();
    if !warnings.is_empty() {
        let issues: Vec<Value> = warnings
            .iter()
            .map(|w| json!({"severity": "warning", "code": "incomplete", "diagnostics": w}))
            .collect();
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"}
        }));
    }
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
        "total": total,
        "entry": entries,
    })
}

/// What one remote call produced.
struct Answer {
    target: String,
    result: Result<Value, String>,
    status: Option<u16>,
}

impl Federation {
    /// The principal a holding node serves a peer's clinician as: the clinician's identity,
    /// organisation and roles from the verified service token, the calling node as the client
    /// (both are audited), read-only, with the regional
    /// restriction lifted when this node shares with other nodes' clinicians
    /// ([`PeerAccess::Share`]). Residents' consent denials always apply.
    pub fn peer_principal(&self, mut principal: Principal, call: &PeerCall) -> Principal {
        principal.client_id = Some(format!("node:{}", call.peer.node_id));
        if self.config.peer_access == PeerAccess::Share {
            principal.division = None;
        }
        principal
    }

    async fn get_json(
        &self,
        url: &str,
        audience: &str,
        on_behalf_of: &Principal,
        deadline: Instant,
    ) -> Answer {
        let token = match self.service_token(audience, LOOKUP_SCOPE, Some(on_behalf_of)) {
            Ok(token) => token,
            Err(error) => {
                return Answer {
                    target: url.to_owned(),
                    result: Err(format!("could not mint a service token: {error}")),
                    status: None,
                }
            }
        };
        let mut request = self
            .http()
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/fhir+json");
        if let Some(reason) = &on_behalf_of.break_glass {
            request = request.header("x-break-glass", reason);
        }
        let call = async {
            let response = request.send().await.map_err(|e| (None, e.to_string()))?;
            let status = response.status().as_u16();
            let body: Value = response
                .json()
                .await
                .map_err(|e| (Some(status), format!("unreadable answer: {e}")))?;
            if !(200..300).contains(&status) {
                let text = body
                    .pointer("/issue/0/diagnostics")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                return Err((Some(status), format!("answered HTTP {status} {text}")));
            }
            Ok((status, body))
        };
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok((status, body))) => Answer {
                target: url.to_owned(),
                result: Ok(body),
                status: Some(status),
            },
            Ok(Err((status, reason))) => Answer {
                target: url.to_owned(),
                result: Err(reason),
                status,
            },
            Err(_) => Answer {
                target: url.to_owned(),
                result: Err(format!(
                    "no answer within the lookup deadline of {:?}",
                    self.config.lookup_deadline
                )),
                status: None,
            },
        }
    }

    /// `GET [base]/Patient/$federated-everything?identifier=system|value`: this node's and
    /// every other holding node's records of the person, merged.
    pub async fn federated_everything(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        ctx: RequestContext,
        identifier: String,
    ) -> FhirResult<FhirResponse> {
        crate::locate::check_identifier(&identifier)?;
        // A lookup by identifier reaches any resident: it needs unrestricted read access, as
        // a search of all Patients does.
        if ctx
            .principal
            .decide("Patient", phip_security::scope::Interaction::Read)
            != Decision::Full
        {
            return Err(FhirError::new(
                403,
                phip_fhir::IssueType::Forbidden,
                "a federated lookup needs user- or system-level read access to Patient",
            ));
        }
        let deadline = Instant::now() + self.config.lookup_deadline;
        let principal = ctx.principal.clone();
        let local = {
            let engine = engine.clone();
            let ctx = ctx.clone();
            let identifier = identifier.clone();
            tokio::task::spawn_blocking(move || local_records(&engine, &ctx, &identifier))
        };
        let own = self.config.base_url.clone();
        let mut warnings = Vec::new();
        let mut audits = Vec::new();
        let holders: Vec<Holder> = match self.config.locator_url() {
            None => Vec::new(),
            Some(locator) => {
                let url = format!(
                    "{}/Patient/$locate?identifier={}",
                    locator.trim_end_matches('/'),
                    encode(&identifier)
                );
                let answer = self.get_json(&url, locator, &principal, deadline).await;
                audits.push((
                    answer.target.clone(),
                    answer.status,
                    answer.result.as_ref().err().cloned(),
                ));
                match answer.result {
                    Ok(parameters) => crate::locate::holders_from_parameters(&parameters),
                    Err(reason) => {
                        warnings.push(format!(
                            "the record locator {locator} could not be asked ({reason}); only this node's records are shown"
                        ));
                        Vec::new()
                    }
                }
            }
        };
        let mut calls = tokio::task::JoinSet::new();
        // Endpoint → node of every node asked and not yet heard from.
        let mut pending = std::collections::BTreeMap::new();
        for holder in holders {
            let endpoint = holder.endpoint.trim_end_matches('/').to_owned();
            if endpoint == own || pending.contains_key(&endpoint) {
                continue;
            }
            // Endpoints come from index entries, i.e. from data: only nodes of the trust file
            // are asked, so that a lookup (with a service token naming the clinician) never
            // goes to an address nobody configured.
            let trusted = self
                .trust
                .peers()
                .iter()
                .any(|peer| peer.base_url.trim_end_matches('/') == endpoint);
            if !trusted {
                tracing::warn!(node = %holder.node, %endpoint, "a holder named by the record locator is not a trusted peer; not asked");
                warnings.push(format!(
                    "node {} ({endpoint}) holds records of this person but is not in this node's trust file, so it was not asked",
                    holder.node
                ));
                continue;
            }
            pending.insert(endpoint.clone(), holder.node.clone());
            let this = self.clone();
            let principal = principal.clone();
            let url = format!(
                "{endpoint}/Patient/$federation-records?identifier={}",
                encode(&identifier)
            );
            calls.spawn(async move {
                let answer = this.get_json(&url, &endpoint, &principal, deadline).await;
                (holder, answer)
            });
        }
        let mut entries = Vec::new();
        // Tasks end by the deadline themselves; the outer timeout only guards against a
        // task that does not.
        let grace = deadline + Duration::from_millis(250);
        while let Ok(Some(joined)) = tokio::time::timeout_at(grace, calls.join_next()).await {
            let Ok((holder, answer)) = joined else {
                continue;
            };
            pending.remove(holder.endpoint.trim_end_matches('/'));
            audits.push((
                answer.target.clone(),
                answer.status,
                answer.result.as_ref().err().cloned(),
            ));
            match answer.result {
                Ok(bundle) => {
                    for mut entry in entries_of(Some(&bundle)).cloned() {
                        let is_outcome = entry.pointer("/search/mode") == Some(&json!("outcome"));
                        if is_outcome {
                            for issue in entry
                                .pointer("/resource/issue")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                if let Some(text) = issue.get("diagnostics").and_then(Value::as_str)
                                {
                                    warnings.push(format!("node {}: {text}", holder.node));
                                }
                            }
                            continue;
                        }
                        set_source(&mut entry, &holder.endpoint);
                        entries.push(entry);
                    }
                }
                Err(reason) => warnings.push(format!(
                    "node {} ({}) is missing from this result: {reason}",
                    holder.node, holder.endpoint
                )),
            }
        }
        calls.abort_all();
        // Whatever did not report (a task that failed) is missing all the same.
        for (endpoint, node) in pending {
            warnings.push(format!(
                "node {node} ({endpoint}) is missing from this result: no answer"
            ));
        }
        let (mut local_entries, local_warnings) = local
            .await
            .map_err(|e| FhirError::new(500, phip_fhir::IssueType::Exception, e.to_string()))??;
        for entry in &mut local_entries {
            set_source(entry, &own);
        }
        warnings.extend(local_warnings);
        local_entries.extend(entries);
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (target, status, error) in audits {
                let outcome = match (status, error) {
                    (Some(status), None) => Ok(status),
                    (_, Some(error)) => Err(error),
                    (None, None) => Err("no answer".to_owned()),
                };
                this.audit_outgoing(&principal, &target, outcome, None);
            }
        })
        .await;
        Ok(FhirResponse::with_body(
            200,
            bundle(local_entries, &warnings),
        ))
    }

    /// `GET [base]/Patient/$federation-records?identifier=…` for a peer: this node's records
    /// of the person, as the peer's clinician may see them here.
    pub fn peer_records(
        &self,
        engine: &Engine,
        ctx: &RequestContext,
        identifier: &str,
    ) -> FhirResult<FhirResponse> {
        let (entries, warnings) = local_records(engine, ctx, identifier)?;
        Ok(FhirResponse::with_body(200, bundle(entries, &warnings)))
    }
}
