//! One Subscription's delivery: read history after the cursor, match as the owner, deliver
//! in order with retries, then advance the cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use phip_engine::{FhirError, FhirResult, Principal, RequestContext};
use phip_store::{HistoryQuery, HistoryScope};
use serde_json::Value;

use crate::model::{self, Channel, Spec};
use crate::owner::Owner;
use crate::Shared;

/// One changed version in the history.
#[derive(Debug, Clone)]
struct Change {
    key: String,
    id: String,
    at: DateTime<Utc>,
    deleted: bool,
}

/// Why an attempt did not deliver.
enum Undelivered {
    /// The endpoint failed; counts towards `error`.
    Failed(String),
    /// No websocket client is bound; wait for one.
    NotConnected,
}

/// The worker stopped (shutdown, or the Subscription changed).
struct Stopped;

/// Runs until aborted or the service stops.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: String,
    spec: Spec,
    owner: Owner,
    in_error: bool,
    start_at: DateTime<Utc>,
) {
    let mut worker = Worker {
        principal: owner.to_principal(),
        shared,
        id,
        spec,
        in_error,
        stop: None,
    };
    worker.stop = Some(worker.shared.stop.subscribe());
    let _ = worker.run(start_at).await;
}

struct Worker {
    shared: Arc<Shared>,
    id: String,
    spec: Spec,
    principal: Principal,
    in_error: bool,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Worker {
    fn stopped(&self) -> bool {
        self.stop.as_ref().is_none_or(|s| *s.borrow())
    }

    /// Sleeps, waking early on `wake` (when `wakeable`) and returning `Stopped` on shutdown.
    async fn pause(&mut self, delay: Duration, wakeable: bool) -> Result<(), Stopped> {
        let shared = self.shared.clone();
        let Some(stop) = self.stop.as_mut() else {
            return Err(Stopped);
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.wake.notified(), if wakeable => {}
            _ = stop.changed() => {}
        }
        if self.stopped() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    async fn run(&mut self, start_at: DateTime<Utc>) -> Result<(), Stopped> {
        let overlap = chrono::Duration::from_std(self.shared.config.overlap)
            .unwrap_or(chrono::Duration::seconds(10));
        let max_window = chrono::Duration::from_std(self.shared.config.max_window)
            .unwrap_or(chrono::Duration::minutes(5));
        loop {
            if self.stopped() {
                return Err(Stopped);
            }
            let (cursor, seen) = {
                let mut state = self.shared.state.lock();
                let entry = state.entry(&self.id);
                let cursor = *entry.cursor.get_or_insert(start_at);
                let seen: HashSet<String> = entry.seen.keys().cloned().collect();
                (cursor, seen)
            };
            let now = Utc::now();
            let upper = (cursor + max_window).min(now);
            let changes = {
                let shared = self.shared.clone();
                let resource_type = self.spec.resource_type.clone();
                tokio::task::spawn_blocking(move || {
                    scan(&shared, &resource_type, cursor - overlap, upper, &seen)
                })
                .await
            };
            let changes = match changes {
                Ok(Ok(changes)) => changes,
                Ok(Err(error)) => {
                    tracing::warn!(subscription = %self.id, %error, "could not read history");
                    self.pause(self.shared.config.poll_interval, false).await?;
                    continue;
                }
                Err(_) => return Err(Stopped),
            };
            if let Err(error) = self.dispatch(&changes).await {
                match error {
                    DispatchError::Stopped => return Err(Stopped),
                    DispatchError::Match(error) => {
                        if (400..500).contains(&error.status) {
                            // The owner may not run this search: nothing can be delivered.
                            let text = format!(
                                "the criteria cannot be evaluated with the subscriber's access: {}",
                                error.outcome
                            );
                            self.in_error = true;
                            set_status(&self.shared, &self.id, "error", Some(&text)).await;
                        } else {
                            tracing::warn!(subscription = %self.id, %error, "could not match changes");
                        }
                        let delay = self.shared.config.max_backoff;
                        self.pause(delay, false).await?;
                        continue;
                    }
                }
            }
            {
                let mut state = self.shared.state.lock();
                let entry = state.entry(&self.id);
                for change in &changes {
                    entry.seen.insert(change.key.clone(), change.at);
                }
                entry.cursor = Some(upper);
                let horizon = upper - overlap;
                entry.seen.retain(|_, at| *at >= horizon);
            }
            self.save().await;
            if upper < now {
                // A backlog: go on with the next window at once.
                continue;
            }
            self.pause(self.shared.config.poll_interval, true).await?;
        }
    }

    async fn save(&self) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.save()).await;
    }

    /// Matches and delivers the changes of one window, in order.
    async fn dispatch(&mut self, changes: &[Change]) -> Result<(), DispatchError> {
        // Several versions of one resource: notify once, at its last change.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (index, change) in changes.iter().enumerate() {
            last.insert(&change.id, index);
        }
        let candidates: Vec<&Change> = changes
            .iter()
            .enumerate()
            .filter(|(index, c)| !c.deleted && last.get(c.id.as_str()) == Some(index))
            .map(|(_, c)| c)
            .collect();
        for chunk in candidates.chunks(self.shared.config.batch_size.max(1)) {
            let ids: Vec<String> = chunk.iter().map(|c| c.id.clone()).collect();
            let matched = {
                let shared = self.shared.clone();
                let spec = self.spec.clone();
                let principal = self.principal.clone();
                tokio::task::spawn_blocking(move || matching(&shared, &spec, &principal, &ids))
                    .await
                    .map_err(|_| DispatchError::Stopped)?
                    .map_err(DispatchError::Match)?
            };
            for change in chunk {
                if let Some(resource) = matched.get(&change.id) {
                    self.deliver_with_retries(resource).await?;
                }
                self.shared
                    .state
                    .lock()
                    .entry(&self.id)
                    .seen
                    .insert(change.key.clone(), change.at);
            }
            self.save().await;
        }
        Ok(())
    }

    /// Delivers one notification, retrying with back-off until it succeeds.
    async fn deliver_with_retries(&mut self, resource: &Value) -> Result<(), DispatchError> {
        let mut failures: u32 = 0;
        loop {
            if self.stopped() {
                return Err(DispatchError::Stopped);
            }
            match deliver(&self.shared, &self.id, &self.spec, resource).await {
                Ok(()) => {
                    if self.in_error {
                        self.in_error = false;
                        set_status(&self.shared, &self.id, "active", None).await;
                    }
                    return Ok(());
                }
                Err(Undelivered::NotConnected) => {
                    let shared = self.shared.clone();
                    let Some(stop) = self.stop.as_mut() else {
                        return Err(DispatchError::Stopped);
                    };
                    tokio::select! {
                        _ = shared.bound.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(Undelivered::Failed(reason)) => {
                    failures = failures.saturating_add(1);
                    tracing::info!(subscription = %self.id, failures, %reason, "notification not delivered");
                    if failures >= self.shared.config.failures_before_error && !self.in_error {
                        self.in_error = true;
                        let text = format!(
                            "{failures} delivery attempts failed in a row; the last: {reason}. Notifications are kept and retried."
                        );
                        set_status(&self.shared, &self.id, "error", Some(&text)).await;
                    }
                    let delay = backoff(&self.shared.config, failures);
                    self.pause(delay, false)
                        .await
                        .map_err(|_| DispatchError::Stopped)?;
                }
            }
        }
    }
}

enum DispatchError {
    Stopped,
    Match(FhirError),
}

impl From<Stopped> for DispatchError {
    fn from(_: Stopped) -> Self {
        DispatchError::Stopped
    }
}

/// Exponential back-off with full jitter over the upper half: `d/2 ..= d` where
/// `d = min(initial * 2^(failures-1), max)`, so retries of many subscribers spread out.
pub(crate) fn backoff(config: &crate::SubscriptionsConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let full = config
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(config.max_backoff);
    let half = full / 2;
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u32;
    half + (full - half).mul_f64(f64::from(random) / 1_000_000.0)
}

/// The versions of `resource_type` written in `[since, before]`, oldest first, less those
/// already handled.
fn scan(
    shared: &Shared,
    resource_type: &str,
    since: DateTime<Utc>,
    before: DateTime<Utc>,
    seen: &HashSet<String>,
) -> FhirResult<Vec<Change>> {
    let mut tx = shared.engine.store().begin_read()?;
    let mut changes = Vec::new();
    let mut cursor = None;
    loop {
        let page = tx.history(&HistoryQuery {
            scope: HistoryScope::Type(resource_type.to_owned()),
            since: Some(since),
            before: Some(before),
            count: 500,
            cursor,
            access: phip_store::Access::Server,
        })?;
        for version in page.versions {
            let key = format!(
                "{}/{}/{}",
                version.resource_type, version.id, version.version_id
            );
            if seen.contains(&key) {
                continue;
            }
            changes.push(Change {
                key,
                deleted: version.is_deleted(),
                id: version.id,
                at: version.last_updated,
            });
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    changes.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
    Ok(changes)
}

/// Which of `ids` match the criteria as the owner sees them: the criteria search with `_id`
/// added, through the engine (so the owner's access rules apply), current versions by id.
fn matching(
    shared: &Shared,
    spec: &Spec,
    principal: &Principal,
    ids: &[String],
) -> FhirResult<HashMap<String, Value>> {
    let mut params = spec.params.clone();
    params.push(("_id".to_owned(), ids.join(",")));
    params.push(("_count".to_owned(), ids.len().to_string()));
    let ctx = RequestContext::new("urn:phip:subscriptions", principal.clone());
    let response = shared
        .engine
        .search(&ctx, Some(&spec.resource_type), &params)?;
    let mut matched = HashMap::new();
    let entries = response
        .body
        .as_ref()
        .and_then(|b| b.get("entry"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in entries {
        let mode = entry
            .get("search")
            .and_then(|s| s.get("mode"))
            .and_then(Value::as_str);
        if mode.is_some_and(|m| m != "match") {
            continue;
        }
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        if resource.get("resourceType").and_then(Value::as_str) != Some(&spec.resource_type) {
            continue;
        }
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            matched.insert(id.to_owned(), resource.clone());
        }
    }
    Ok(matched)
}

/// One delivery attempt.
async fn deliver(
    shared: &Shared,
    subscription: &str,
    spec: &Spec,
    resource: &Value,
) -> Result<(), Undelivered> {
    match &spec.channel {
        Channel::Websocket => {
            let sockets = shared.sockets.lock();
            match sockets.get(subscription) {
                Some(sender) if sender.receiver_count() > 0 => sender
                    .send(format!("ping {subscription}"))
                    .map(|_| ())
                    .map_err(|_| Undelivered::NotConnected),
                _ => Err(Undelivered::NotConnected),
            }
        }
        Channel::RestHook {
            endpoint,
            headers,
            payload,
        } => {
            let (method, url, body) = match payload {
                None => (reqwest::Method::POST, endpoint.clone(), None),
                Some(mime) => {
                    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
                    let body = serde_json::to_vec(resource)
                        .map_err(|e| Undelivered::Failed(e.to_string()))?;
                    (
                        reqwest::Method::PUT,
                        format!("{endpoint}/{}/{id}", spec.resource_type),
                        Some((mime, body)),
                    )
                }
            };
            let unreachable = |detail: &dyn std::fmt::Display| {
                // The detail is for the operator; the subscriber learns only that the endpoint
                // could not be reached, whatever the cause, so that the status cannot tell a
                // refused address from a closed, filtered or open port.
                tracing::info!(%subscription, %detail, "rest-hook endpoint not reached");
                Undelivered::Failed(format!("{endpoint} could not be reached"))
            };
            let url = reqwest::Url::parse(&url).map_err(|e| unreachable(&e))?;
            // Address literals are connected to without resolving: judge them here. Names are
            // judged by the client's resolver, on the addresses it connects to.
            shared.policy.check_url(&url).map_err(|e| unreachable(&e))?;
            let port = url.port_or_known_default().unwrap_or(0);
            let client = shared.http_client(port).map_err(|e| unreachable(&e))?;
            let mut request = client.request(method, url);
            if let Some((mime, body)) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, mime.as_str())
                    .body(body);
            }
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(Undelivered::Failed(format!(
                    "{endpoint} answered {}",
                    response.status()
                ))),
                Err(error) => Err(unreachable(&error_chain(&error))),
            }
        }
    }
}

/// An error with its causes, for the log (reqwest's own text omits them).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sets `Subscription.status` (and `error`) unless it already says so or the subscriber has
/// switched it off meanwhile. The server writes it as itself; the new version keeps the
/// previous version's owner.
pub(crate) async fn set_status(shared: &Arc<Shared>, id: &str, status: &str, error: Option<&str>) {
    let shared = shared.clone();
    let id = id.to_owned();
    let status = status.to_owned();
    let error = error.map(str::to_owned);
    let outcome = tokio::task::spawn_blocking(move || -> FhirResult<()> {
        let mut tx = shared.engine.store().begin_read()?;
        let current = tx.read("Subscription", &id)?;
        drop(tx);
        let Some(stored) = current else {
            return Ok(());
        };
        let Some(mut resource) = stored.resource else {
            return Ok(());
        };
        let now = model::status(&resource);
        if now == "off" || (now == status && model::error(&resource) == error.as_deref()) {
            return Ok(());
        }
        if let Some(object) = resource.as_object_mut() {
            object.insert("status".into(), Value::String(status.clone()));
            match &error {
                Some(text) => object.insert("error".into(), Value::String(text.clone())),
                None => object.remove("error"),
            };
        }
        let response = shared.engine.update(
            &shared.system_context(),
            "Subscription",
            &id,
            resource,
            Some(stored.version_id),
        )?;
        if let Some(version) = response.version_id {
            let mut state = shared.state.lock();
            state.entry(&id).system_versions.insert(version);
            state
                .save()
                .map_err(|e| FhirError::new(500, phip_fhir::IssueType::Exception, e.to_string()))?;
        }
        tracing::info!(subscription = %id, %status, "subscription status set");
        Ok(())
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        // Someone else wrote it meanwhile: the next pass looks again.
        Ok(Err(error)) if error.status == 409 || error.status == 412 => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not set a subscription's status"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let config = crate::SubscriptionsConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        for failures in 1..40 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (failures - 1).min(20))
                .min(Duration::from_secs(2));
            let delay = backoff(&config, failures);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
    }
}
