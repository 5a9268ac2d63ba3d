//! The supervisor: keeps one delivery worker running per active Subscription, validates new
//! ones and maintains their status.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use phip_engine::{FhirError, FhirResult};
use phip_fhir::search::query;
use phip_store::{PageCursor, SearchRequest, StoredResource};
use tokio::task::JoinHandle;

use crate::model::{self, Spec};
use crate::owner::Owner;
use crate::{worker, Shared};

/// The text set in `Subscription.error` when nobody is known to own a version.
const NO_OWNER: &str = "the identity of whoever wrote this version of the Subscription was not recorded (it was written inside a batch or transaction, or the server stopped at that moment), so nothing can be delivered safely: create or update the Subscription on its own";

/// A running worker and what it was started for.
struct Running {
    spec: Spec,
    owner: Owner,
    task: JoinHandle<()>,
}

/// Runs until the service stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut workers: HashMap<String, Running> = HashMap::new();
    let mut stop = shared.stop.subscribe();
    loop {
        if let Err(error) = tick(&shared, &mut workers).await {
            tracing::warn!(%error, "subscription dispatcher: could not list Subscriptions");
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
            _ = shared.wake.notified() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    for (_, running) in workers.drain() {
        running.task.abort();
        let _ = running.task.await;
    }
}

/// All current Subscriptions (the server's own view, unrestricted).
fn list(shared: &Shared) -> FhirResult<Vec<StoredResource>> {
    let parsed = query::parse(Some("Subscription"), &[], true)
        .map_err(|outcome| FhirError::from_outcome(500, outcome))?;
    let mut tx = shared.engine.store().begin_read()?;
    let mut all = Vec::new();
    let mut cursor = PageCursor::First;
    loop {
        let page = tx.search(&SearchRequest {
            query: parsed.query.clone(),
            cursor,
            page_size: 500,
            access: phip_store::Access::Server,
        })?;
        all.extend(page.matches);
        match page.next {
            Some(next) => cursor = PageCursor::After(next),
            None => return Ok(all),
        }
    }
}

/// One pass over the Subscriptions.
async fn tick(shared: &Arc<Shared>, workers: &mut HashMap<String, Running>) -> FhirResult<()> {
    let listed = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || list(&shared))
            .await
            .map_err(|e| FhirError::new(500, phip_fhir::IssueType::Exception, e.to_string()))??
    };
    let mut present = std::collections::HashSet::new();
    for stored in listed {
        let Some(resource) = stored.resource.as_ref() else {
            continue;
        };
        present.insert(stored.id.clone());
        let status = model::status(resource).to_owned();
        if status == "off" {
            stop_worker(workers, &stored.id, shared, true);
            continue;
        }
        // Addresses are judged at every connection, and refusals reported like any
        // unreachable endpoint.
        let spec = model::parse(resource, &shared.config.allowed_endpoints, None)
            .map_err(|invalid| invalid.reason);
        let owner = shared
            .state
            .lock()
            .entry(&stored.id)
            .owner_of(stored.version_id)
            .cloned();
        match (spec, owner) {
            (Err(reason), _) => {
                stop_worker(workers, &stored.id, shared, false);
                worker::set_status(shared, &stored.id, "error", Some(&reason)).await;
            }
            (Ok(_), None) => {
                stop_worker(workers, &stored.id, shared, false);
                let age = Utc::now() - stored.last_updated;
                if age
                    .to_std()
                    .is_ok_and(|age| age > shared.config.owner_grace)
                {
                    worker::set_status(shared, &stored.id, "error", Some(NO_OWNER)).await;
                }
            }
            (Ok(spec), Some(owner)) => {
                if status == "requested" {
                    worker::set_status(shared, &stored.id, "active", None).await;
                }
                ensure_worker(
                    shared,
                    workers,
                    &stored.id,
                    spec,
                    owner,
                    status == "error",
                    stored.last_updated,
                );
            }
        }
    }
    let gone: Vec<String> = workers
        .keys()
        .filter(|id| !present.contains(*id))
        .cloned()
        .collect();
    for id in gone {
        // Deleted: a Subscription created later under the same id starts afresh.
        stop_worker(workers, &id, shared, true);
    }
    Ok(())
}

fn ensure_worker(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, Running>,
    id: &str,
    spec: Spec,
    owner: Owner,
    in_error: bool,
    since: DateTime<Utc>,
) {
    if let Some(running) = workers.get(id) {
        if running.spec == spec && running.owner == owner && !running.task.is_finished() {
            return;
        }
    }
    stop_worker(workers, id, shared, false);
    let task = tokio::spawn(worker::run(
        shared.clone(),
        id.to_owned(),
        spec.clone(),
        owner.clone(),
        in_error,
        since,
    ));
    workers.insert(id.to_owned(), Running { spec, owner, task });
}

/// Stops a worker; with `forget`, its cursor too (the subscription was switched off or
/// deleted, so a later restart begins at that point rather than replaying the gap).
fn stop_worker(workers: &mut HashMap<String, Running>, id: &str, shared: &Shared, forget: bool) {
    if let Some(running) = workers.remove(id) {
        running.task.abort();
    }
    if forget {
        let mut state = shared.state.lock();
        let entry = state.entry(id);
        if entry.cursor.is_some() || !entry.seen.is_empty() {
            entry.cursor = None;
            entry.seen.clear();
            if let Err(error) = state.save() {
                tracing::error!(%error, "could not save the subscription state");
            }
        }
    }
}
