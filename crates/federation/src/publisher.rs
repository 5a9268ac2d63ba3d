//! The transactional outbox, publishing side.
//!
//! The outbox is the store's own history: every golden-record version (written by the
//! patient index in the same database transaction as the change that caused it) and every
//! MeasureReport version is already there, durably, the moment the change commits. The
//! publisher follows that history from a cursor saved in the data directory, turns the
//! versions into index entries, posts them to the parent in batches and moves the cursor
//! only after the parent acknowledged. If the parent is down it retries with exponential
//! back-off and jitter for as long as it takes; if this node stops, it resumes from the saved
//! cursor. Deliveries are therefore at least once, and the parent's idempotent apply makes
//! them count once.
//!
//! A version's time is taken when it is written, not when its transaction commits, so each
//! scan looks back over an overlap window and skips the versions already delivered (kept,
//! with their times, until they fall out of the window).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use phip_engine::{Engine, FhirResult};
use phip_store::{HistoryQuery, HistoryScope, StoredResource, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::entry::{has_tag, index_entry, is_index_entry, linked_ids, Holder, Source};
use crate::rollup::ReportKey;
use crate::Federation;

/// Most versions one scan handles before it narrows its window.
const MAX_VERSIONS_PER_SCAN: usize = 20_000;
/// Most records counted per source record for the entry's record summary.
const MAX_SUMMARY_RECORDS: usize = 10_000;
/// Scopes of the publisher's service tokens.
const PUBLISH_SCOPE: &str = "system/Patient.cu system/MeasureReport.cu";

/// The publisher's durable position.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OutboxState {
    /// Every version written before this instant (less the overlap) has been delivered.
    cursor: Option<DateTime<Utc>>,
    /// Versions at or after `cursor - overlap` already delivered: `Type/id/version` → time.
    #[serde(default)]
    delivered: BTreeMap<String, DateTime<Utc>>,
    /// Entries acknowledged by the parent since the node was first started.
    #[serde(default)]
    published: u64,
}

fn load(path: &Path) -> std::io::Result<OutboxState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(OutboxState::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the state file atomically (temporary file, fsync, rename, fsync the directory):
/// a crash leaves the old or the new state, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// One change to deliver.
#[derive(Debug, Clone)]
struct Change {
    key: String,
    at: DateTime<Utc>,
    item: Value,
    /// For a report this node computed, the Measure and period whose roll-up it changes.
    report: Option<ReportKey>,
}

/// A running publisher.
pub struct Publisher {
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing to the node's parent, with the cursor kept under `data_dir`.
    /// Returns `None` for a node without a parent.
    pub fn start(
        federation: Arc<Federation>,
        engine: Arc<Engine>,
        data_dir: &Path,
    ) -> std::io::Result<Option<Self>> {
        let Some(parent) = federation.config.parent.clone() else {
            return Ok(None);
        };
        let dir = data_dir.join("federation");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("outbox.json");
        let state = load(&path)?;
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let worker = Worker {
            federation,
            engine,
            parent: parent.trim_end_matches('/').to_owned(),
            path,
            state,
            stopped,
            wake: wake.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(Some(Self { stop, wake, task }))
    }

    /// Asks for a scan now (after a write), instead of at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops after the current delivery attempt; what is undelivered stays in the history
    /// and goes out after the next start.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Stopped;

struct Worker {
    federation: Arc<Federation>,
    engine: Arc<Engine>,
    parent: String,
    path: PathBuf,
    state: OutboxState,
    stopped: watch::Receiver<bool>,
    wake: Arc<Notify>,
}

impl Worker {
    async fn pause(&mut self, delay: Duration, wakeable: bool) -> Result<(), Stopped> {
        let wake = self.wake.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified(), if wakeable => {}
            _ = self.stopped.changed() => {}
        }
        if *self.stopped.borrow() {
            Err(Stopped)
        } else {
            Ok(())
        }
    }

    async fn save(&self) {
        let path = self.path.clone();
        let bytes = match serde_json::to_vec(&self.state) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "federation outbox: could not encode the cursor");
                return;
            }
        };
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
        if let Ok(Err(error)) = result {
            tracing::error!(%error, "federation outbox: could not save the cursor");
        }
    }

    async fn run(mut self) {
        let _ = self.run_until_stopped().await;
    }

    async fn run_until_stopped(&mut self) -> Result<(), Stopped> {
        let config = self.federation.config.publisher.clone();
        let overlap =
            chrono::Duration::from_std(config.overlap).unwrap_or(chrono::Duration::seconds(10));
        let max_window =
            chrono::Duration::from_std(config.max_window).unwrap_or(chrono::Duration::days(1));
        let mut window = max_window;
        loop {
            if *self.stopped.borrow() {
                return Err(Stopped);
            }
            let cursor = self.state.cursor.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
            let now = Utc::now();
            let upper = cursor.checked_add_signed(window).unwrap_or(now).min(now);
            let delivered: HashSet<String> = self.state.delivered.keys().cloned().collect();
            let scan = {
                let engine = self.engine.clone();
                let federation = self.federation.clone();
                let since = cursor - overlap;
                let may_narrow = window > chrono::Duration::seconds(1);
                tokio::task::spawn_blocking(move || {
                    changes(&engine, &federation, since, upper, &delivered, may_narrow)
                })
                .await
            };
            let changes = match scan {
                Ok(Ok(Some(changes))) => changes,
                Ok(Ok(None)) => {
                    // Too many versions at once: look at a shorter stretch.
                    window = (window / 4).max(chrono::Duration::seconds(1));
                    continue;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "federation outbox: could not read the history");
                    self.pause(config.poll_interval, false).await?;
                    continue;
                }
                Err(_) => return Err(Stopped),
            };
            self.roll_up(&changes).await;
            for chunk in changes.chunks(config.batch_size.max(1)) {
                self.deliver(chunk).await?;
                for change in chunk {
                    self.state.delivered.insert(change.key.clone(), change.at);
                }
                self.state.published += chunk.len() as u64;
                self.save().await;
            }
            self.state.cursor = Some(upper);
            let horizon = upper - overlap;
            self.state.delivered.retain(|_, at| *at >= horizon);
            self.save().await;
            if upper < now {
                // A backlog (or a first start): go on at once; widen the window again while
                // stretches of history are sparse.
                if changes.len() < MAX_VERSIONS_PER_SCAN / 4 {
                    window = window
                        .checked_mul(4)
                        .unwrap_or(window)
                        .min(chrono::Duration::days(365 * 100));
                }
                continue;
            }
            window = max_window;
            self.pause(config.poll_interval, true).await?;
        }
    }

    /// Recomputes this node's roll-ups for the Measures and periods of reports it computed
    /// itself (those received from children are rolled up when they arrive). The roll-up is
    /// itself a MeasureReport version, so the next scan publishes it.
    async fn roll_up(&self, changes: &[Change]) {
        let keys: std::collections::BTreeSet<ReportKey> =
            changes.iter().filter_map(|c| c.report.clone()).collect();
        if keys.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        let division = self.federation.config.division.clone();
        let result = tokio::task::spawn_blocking(move || {
            let principal = phip_engine::Principal::unrestricted("federation roll-up");
            engine.write_transaction(&principal, |tx| {
                for key in &keys {
                    crate::rollup::recompute(tx, &division, key)?;
                }
                Ok(())
            })
        })
        .await;
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "federation: could not recompute roll-ups");
        }
    }

    /// Posts one batch until the parent acknowledges it.
    async fn deliver(&mut self, chunk: &[Change]) -> Result<(), Stopped> {
        let config = self.federation.config.publisher.clone();
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "batch",
            "entry": chunk.iter().map(|c| c.item.clone()).collect::<Vec<_>>(),
        });
        let url = format!("{}/$federation-publish", self.parent);
        let mut failures: u32 = 0;
        loop {
            let result = self.post(&url, &bundle).await;
            match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(failures, parent = %self.parent, "federation outbox: the parent is reachable again");
                    }
                    return Ok(());
                }
                Err(reason) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(config.initial_backoff, config.max_backoff, failures);
                    tracing::warn!(failures, %reason, retry_in = ?delay, parent = %self.parent, "federation outbox: delivery failed; entries stay queued");
                    self.pause(delay, false).await?;
                }
            }
        }
    }

    async fn post(&self, url: &str, bundle: &Value) -> Result<(), String> {
        let token = self
            .federation
            .service_token(&self.parent, PUBLISH_SCOPE, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .federation
            .http()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .timeout(Duration::from_secs(60))
            .json(bundle)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(format!(
            "HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        ))
    }
}

/// Exponential back-off with jitter over the upper half: `d/2 ..= d` where
/// `d = min(initial * 2^(failures-1), max)`, so many children retrying a parent spread out.
pub fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let full = initial.saturating_mul(1u32 << exponent).min(max);
    let half = full / 2;
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u32;
    half + (full - half).mul_f64(f64::from(random) / 1_000_000.0)
}

/// The publishable versions written in `[since, before]`, oldest first, less those already
/// delivered; `None` when there are too many for one scan and the window `may_narrow` (a
/// burst inside the narrowest window is taken whole rather than never).
fn changes(
    engine: &Engine,
    federation: &Federation,
    since: DateTime<Utc>,
    before: DateTime<Utc>,
    delivered: &HashSet<String>,
    may_narrow: bool,
) -> FhirResult<Option<Vec<Change>>> {
    let mut tx = engine.store().begin_read()?;
    let mut versions = Vec::new();
    for resource_type in ["Patient", "MeasureReport"] {
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
                if !delivered.contains(&key) {
                    versions.push((key, version));
                }
            }
            if versions.len() > MAX_VERSIONS_PER_SCAN && may_narrow {
                return Ok(None);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    versions.sort_by(|a, b| {
        a.1.last_updated
            .cmp(&b.1.last_updated)
            .then_with(|| a.0.cmp(&b.0))
    });
    let mut out = Vec::new();
    for (key, version) in versions {
        if let Some((item, report)) = publishable(tx.as_mut(), federation, &version)? {
            out.push(Change {
                key,
                at: version.last_updated,
                item,
                report,
            });
        }
    }
    Ok(Some(out))
}

/// The previous body of a deleted resource.
fn body_before(tx: &mut dyn Transaction, version: &StoredResource) -> FhirResult<Option<Value>> {
    if version.version_id <= 1 {
        return Ok(None);
    }
    Ok(tx
        .vread(&version.resource_type, &version.id, version.version_id - 1)?
        .and_then(|s| s.resource))
}

/// The batch entry for one version, if it is published at all: golden records become index
/// entries, MeasureReports this node computed (not those received from children) go as they
/// are — with, for a report other than this node's own roll-up, the Measure and period whose
/// roll-up it changes.
fn publishable(
    tx: &mut dyn Transaction,
    federation: &Federation,
    version: &StoredResource,
) -> FhirResult<Option<(Value, Option<ReportKey>)>> {
    let config = &federation.config;
    let record = format!("{}/{}", version.resource_type, version.id);
    let source = Source {
        node: config.node_id.clone(),
        endpoint: config.base_url.clone(),
        record: record.clone(),
        version: version.version_id,
    };
    let body = match &version.resource {
        Some(body) => body.clone(),
        None => match body_before(tx, version)? {
            Some(before) => before,
            None => return Ok(None),
        },
    };
    let is_golden = has_tag(
        &body,
        phip_engine::mpi::MPI_SYSTEM,
        phip_engine::mpi::GOLDEN_TAG_CODE,
    );
    let wanted = match version.resource_type.as_str() {
        "Patient" => is_golden,
        "MeasureReport" => !crate::apply::is_received(&body),
        _ => false,
    };
    if !wanted {
        return Ok(None);
    }
    // A deleted golden record, or one merged into another person (inactive), leaves the index.
    let retract = version.resource.is_none()
        || (is_golden && body.get("active").and_then(Value::as_bool) == Some(false));
    let own_rollup = has_tag(&body, crate::FEDERATION_SYSTEM, crate::ROLLUP_TAG)
        && crate::rollup::division_of(&body).as_deref() == Some(config.division.as_str());
    let report = if version.resource_type == "MeasureReport" && !own_rollup {
        ReportKey::of(&body)
    } else {
        None
    };
    if retract {
        let item = json!({
            "extension": [source.to_extension()],
            "request": {"method": "DELETE", "url": record},
        });
        return Ok(Some((item, report)));
    }
    let resource = if is_golden {
        let (holders, summary) = holders_and_summary(tx, federation, &body)?;
        index_entry(&source, &body, &holders, &summary)
    } else {
        let mut report = body;
        if let Some(meta) = report.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
            meta.remove("lastUpdated");
        }
        report
    };
    let item = json!({
        "extension": [source.to_extension()],
        "request": {"method": "PUT", "url": record},
        "resource": resource,
    });
    Ok(Some((item, report)))
}

/// Records held here per resource type.
type RecordSummary = Vec<(String, u64)>;

/// Who holds the person's records (this node for its own records, and whichever nodes the
/// index entries among the sources name), and how many records of each type this node holds.
fn holders_and_summary(
    tx: &mut dyn Transaction,
    federation: &Federation,
    golden: &Value,
) -> FhirResult<(Vec<Holder>, RecordSummary)> {
    let config = &federation.config;
    let mut holders = std::collections::BTreeSet::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for source in linked_ids(golden, "seealso") {
        let Some(stored) = tx.read("Patient", &source)? else {
            continue;
        };
        let Some(resource) = stored.resource else {
            continue;
        };
        if is_index_entry(&resource) {
            holders.extend(Holder::all_of(&resource));
            continue;
        }
        holders.insert(Holder {
            node: config.node_id.clone(),
            endpoint: config.base_url.clone(),
            division: config.division.clone(),
        });
        let mut cursor: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let (records, next) = tx.patient_compartment(
                &source,
                None,
                None,
                1000,
                cursor.as_deref(),
                &phip_store::Access::Server,
            )?;
            for record in &records {
                if record.resource_type != "Patient" {
                    *counts.entry(record.resource_type.clone()).or_default() += 1;
                }
            }
            seen += records.len();
            match next {
                Some(next) if seen < MAX_SUMMARY_RECORDS => cursor = Some(next),
                _ => break,
            }
        }
    }
    Ok((holders.into_iter().collect(), counts.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for failures in 1..30 {
            let d = backoff(initial, max, failures);
            let full = initial.saturating_mul(1 << (failures - 1).min(20)).min(max);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
    }

    fn node(dir: &Path) -> (Arc<Engine>, Arc<Federation>) {
        let store =
            phip_store::open_store(&phip_store::StoreConfig::new(dir.join("db"), None)).unwrap();
        let engine = Arc::new(Engine::new(store, phip_engine::EngineConfig::default()));
        let mut config =
            crate::NodeConfig::new("bj", crate::Level::Provincial, "110000", "http://bj/fhir");
        config.parent = Some("http://cn/fhir".into());
        let ring = phip_security::keys::KeyRing::open(&dir.join("keys")).unwrap();
        let federation = Federation::new(config, crate::Trust::default(), &ring, None).unwrap();
        (engine, federation)
    }

    #[test]
    fn scans_golden_records_and_own_reports_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, federation) = node(dir.path());
        let ctx = phip_engine::RequestContext::new(
            "http://bj/fhir",
            phip_engine::Principal::unrestricted("test"),
        );
        let start = Utc::now() - chrono::Duration::seconds(5);
        for (i, id) in ["110101198503070021", "110101199001010015"]
            .iter()
            .enumerate()
        {
            let patient = json!({"resourceType": "Patient", "gender": if i == 0 {"female"} else {"male"},
                "identifier": [{"system": crate::RESIDENT_ID_SYSTEM, "value": id}]});
            engine.create(&ctx, "Patient", patient, None).unwrap();
        }
        let received = json!({"resourceType": "MeasureReport", "status": "complete", "type": "summary",
            "measure": "https://phip.cn/fhir/Measure/m", "period": {"start": "2026-10-01", "end": "2026-10-31"},
            "meta": {"tag": [{"system": crate::FEDERATION_SYSTEM, "code": crate::RECEIVED_TAG}]}});
        engine
            .create(&ctx, "MeasureReport", received.clone(), None)
            .unwrap();
        let mut own = received;
        own.as_object_mut().unwrap().remove("meta");
        engine.create(&ctx, "MeasureReport", own, None).unwrap();
        let until = Utc::now() + chrono::Duration::seconds(1);

        let found = changes(&engine, &federation, start, until, &HashSet::new(), true)
            .unwrap()
            .unwrap();
        // Two golden records (not the two source records), the report computed here (not
        // the one received from a child).
        let kinds: Vec<&str> = found
            .iter()
            .map(|c| {
                c.item["request"]["url"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(kinds, vec!["Patient", "Patient", "MeasureReport"]);
        assert!(found.windows(2).all(|w| w[0].at <= w[1].at));
        let entry = &found[0].item["resource"];
        assert!(crate::entry::is_index_entry(entry));
        assert_eq!(crate::entry::Holder::all_of(entry)[0].node, "bj");
        assert!(found[2].report.is_some());

        // Already delivered versions are not sent again.
        let delivered: HashSet<String> = found[..2].iter().map(|c| c.key.clone()).collect();
        let rest = changes(&engine, &federation, start, until, &delivered, true)
            .unwrap()
            .unwrap();
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn a_county_stays_locatable_through_its_province() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, federation) = node(dir.path());
        let start = Utc::now() - chrono::Duration::seconds(5);
        // A county node under this province published a resident …
        let county = crate::Peer {
            node_id: "dongcheng".into(),
            base_url: "http://dongcheng/fhir".into(),
            jwks: Default::default(),
        };
        let source = Source {
            node: "dongcheng".into(),
            endpoint: "http://dongcheng/fhir".into(),
            record: "Patient/c1".into(),
            version: 1,
        };
        let golden = json!({"resourceType": "Patient", "gender": "female",
            "identifier": [{"system": crate::RESIDENT_ID_SYSTEM, "value": "110101198503070021"}]});
        let holder = Holder {
            node: "dongcheng".into(),
            endpoint: "http://dongcheng/fhir".into(),
            division: "110101".into(),
        };
        let entry = index_entry(&source, &golden, std::slice::from_ref(&holder), &[]);
        let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [{
            "extension": [source.to_extension()],
            "request": {"method": "PUT", "url": "Patient/c1"},
            "resource": entry
        }]});
        crate::apply::apply_batch(&engine, "110000", &county, &bundle).unwrap();
        // … who is also registered at a hospital of the province itself.
        let ctx = phip_engine::RequestContext::new(
            "http://bj/fhir",
            phip_engine::Principal::unrestricted("test"),
        );
        engine.create(&ctx, "Patient", golden, None).unwrap();
        let until = Utc::now() + chrono::Duration::seconds(1);
        let found = changes(&engine, &federation, start, until, &HashSet::new(), true)
            .unwrap()
            .unwrap();
        // The last version of the province's person lists both holders.
        let last = found.last().unwrap();
        let nodes: Vec<String> = Holder::all_of(&last.item["resource"])
            .into_iter()
            .map(|h| h.node)
            .collect();
        assert_eq!(nodes, vec!["bj".to_owned(), "dongcheng".to_owned()]);
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        assert!(load(&path).unwrap().cursor.is_none());
        let mut state = OutboxState {
            cursor: Some(Utc::now()),
            ..Default::default()
        };
        state.delivered.insert("Patient/a/1".into(), Utc::now());
        write_atomically(&path, &serde_json::to_vec(&state).unwrap()).unwrap();
        let again = load(&path).unwrap();
        assert_eq!(again.cursor, state.cursor);
        assert_eq!(again.delivered.len(), 1);
    }
}
