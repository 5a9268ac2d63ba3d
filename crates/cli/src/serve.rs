//! `phip serve`.

use std::sync::Arc;

use anyhow::Context;
use phip_engine::EngineConfig;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::{AppState, ServerConfig};

use crate::config::{init_logging, ServeSettings};

/// Starts the server and blocks until SIGTERM or Ctrl-C, then shuts down gracefully.
pub fn run(settings: ServeSettings) -> anyhow::Result<()> {
    init_logging(&settings.log_format);
    let store = phip_store::open_store(&settings.store)
        .with_context(|| format!("opening the store ({})", settings.store.describe()))?;
    tracing::info!(store = %settings.store.describe(), backend = store.backend_name(), "store open");
    // Loading the definitions up front keeps the first request fast and fails early if the
    // embedded data were damaged.
    let defs = phip_fhir::r4();
    tracing::info!(
        resource_types = defs.resource_types().count(),
        "FHIR R4 definitions loaded"
    );
    // A federation node accepts its peers' service tokens at the front door too.
    let node = match &settings.federation {
        Some(file) => {
            let node = file.node_config(settings.base_url.as_deref())?;
            let trust = file.trust(&node.base_url)?;
            Some((node, trust))
        }
        None => None,
    };
    let mut trusted = settings.trusted_issuers.clone();
    if let Some((_, trust)) = &node {
        trusted.extend(trust.issuers());
    }
    let auth = if settings.auth_required {
        let authenticator =
            Authenticator::from_data_dir(&settings.data_dir, settings.base_url.as_deref(), trusted)
                .context("setting up token authentication")?;
        tracing::info!(
            issuer = authenticator.issuer_url(),
            "bearer tokens required (mint one with `phip token`)"
        );
        AuthMode::Required(Arc::new(authenticator))
    } else {
        tracing::warn!("AUTHENTICATION IS OFF: every request has full access to all records. Never run like this with real data.");
        AuthMode::Disabled
    };
    let ring =
        phip_security::keys::KeyRing::open(&settings.data_dir).context("opening the key ring")?;
    let (checkpoint_every, checkpoint_seconds) = settings.audit.policy()?;
    match &settings.audit.anchor {
        Some(anchor) => check_anchor_placement(anchor, &settings.data_dir),
        None => tracing::warn!(
            "no [audit] anchor configured: if the data directory is taken over, a cut, wiped or \
             replaced audit trail can only be detected with checkpoint lines kept elsewhere \
             (`phip audit head`)"
        ),
    }
    let audit = phip_audit::AuditLog::open_with(
        &settings.data_dir,
        phip_audit::AuditOptions {
            keys: Some(
                phip_audit::CheckpointKeys::from_key_ring(&ring)
                    .context("loading the audit checkpoint key")?,
            ),
            checkpoint_every,
            checkpoint_seconds,
            anchor: settings.audit.anchor.clone(),
            ..phip_audit::AuditOptions::default()
        },
    )
    .context("opening the audit log")?;
    tracing::info!(path = %audit.path().display(), anchor = ?settings.audit.anchor, checkpoint_every, checkpoint_seconds, "audit trail open (every request is recorded)");
    let mut engine = phip_server::platform_engine(store, EngineConfig::default());
    if let Some((config, _)) = &node {
        phip_federation::install(&mut engine, config);
    }
    let engine = Arc::new(engine);
    let federation = match node {
        Some((config, trust)) => {
            tracing::info!(node = %config.node_id, level = config.level.as_str(), division = %config.division, parent = ?config.parent, peers = trust.peers().len(), "federation node");
            Some(crate::federation::start(
                config,
                trust,
                &settings.data_dir,
                audit.clone(),
            )?)
        }
        None => None,
    };
    // Bulk export jobs live in the data directory; unfinished ones resume now.
    let exporter = Arc::new(
        phip_bulk::Exporter::start(
            engine.clone(),
            &settings.data_dir,
            phip_bulk::ExportConfig::default(),
        )
        .context("starting the bulk export service")?,
    );
    let hl7_engine = engine.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Subscriptions resume from their saved cursors: notifications pending at the last stop
    // go out now.
    if !settings.subscriptions.allow_private_endpoints.is_empty() {
        let allowed: Vec<String> = settings
            .subscriptions
            .allow_private_endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(?allowed, "rest-hooks may reach these non-public networks");
    }
    let subscriptions = {
        let _runtime = runtime.enter();
        phip_subscriptions::Subscriptions::start(
            engine.clone(),
            &settings.data_dir,
            settings.subscriptions.clone(),
        )
        .context("starting the subscription dispatcher")?
    };
    let publisher_engine = engine.clone();
    let surveillance = phip_server::public_health::load_surveillance_config(&settings.data_dir)
        .map_err(anyhow::Error::msg)?;
    let surveillance_engine = engine.clone();
    let state = AppState::new(
        engine,
        ServerConfig {
            auth,
            public_base_url: settings.base_url.clone(),
            max_body_bytes: settings.max_body_bytes,
            node_name: format!("phip@{}", settings.listen),
        },
        Some(audit.clone()),
    )
    .with_health_codes(
        phip_server::health_code::HealthCodes::new(
            &phip_security::keys::KeyRing::open(&settings.data_dir)
                .context("opening the key ring")?,
            phip_server::health_code::HealthCodeConfig::default(),
        )
        .context("loading the health code keys")?,
    )
    .with_limits(settings.limits.clone())
    .with_signer(phip_server::signature::Signer::new(
        phip_security::keys::KeyRing::open(&settings.data_dir).context("opening the key ring")?,
    ))
    .with_bulk_export(exporter.clone())
    .with_subscriptions(subscriptions.clone())
    .with_surveillance_config(surveillance.clone());
    let state = match &federation {
        Some(federation) => state.with_federation(federation.clone()),
        None => state,
    };
    // The outbox resumes from its saved cursor: entries pending at the last stop go out now.
    let publisher = match &federation {
        Some(federation) => {
            let _runtime = runtime.enter();
            phip_federation::publisher::Publisher::start(
                federation.clone(),
                publisher_engine,
                &settings.data_dir,
            )
            .context("starting the federation outbox publisher")?
        }
        None => None,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        let address = listener.local_addr()?;
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = settings
            .base_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{address}/fhir"));
        tracing::info!(%address, fhir_base = %base, "phip is serving");
        if settings.base_url.is_none() && address.ip().is_unspecified() {
            tracing::warn!(%address, "no base_url is configured and the server listens on every interface: links are built from each request's Host, and /auth/token refuses SMART Backend Services requests because it cannot know which URL client assertions must name; set base_url");
        }
        // Pins a quiet trail's head within the checkpoint interval (appends check it too).
        let checkpointer = (checkpoint_seconds > 0).then(|| {
            let audit = audit.clone();
            tokio::spawn(async move {
                let tick = std::time::Duration::from_secs((checkpoint_seconds / 5).clamp(1, 60));
                let mut interval = tokio::time::interval(tick);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let audit = audit.clone();
                    let done = tokio::task::spawn_blocking(move || audit.checkpoint_if_due()).await;
                    if let Ok(Err(error)) = done {
                        tracing::warn!(%error, "could not checkpoint the audit trail");
                    }
                }
            })
        });
        // A node below the national level records its own division's indicators daily; the
        // outbox carries them up for the roll-up. The national node holds no clinical records.
        let indicator_division = federation
            .as_ref()
            .filter(|f| f.config.level != phip_federation::Level::National)
            .map(|f| f.config.division.clone());
        let daily_surveillance = phip_server::public_health::spawn_daily_surveillance(
            surveillance_engine,
            Arc::new(surveillance),
            base.clone(),
            indicator_division,
        );
        let (mllp_stop, mllp_task) = match &settings.mllp {
            Some(mllp_address) => {
                let mllp_listener = tokio::net::TcpListener::bind(mllp_address)
                    .await
                    .with_context(|| format!("listening for MLLP on {mllp_address}"))?;
                tracing::info!(address = %mllp_listener.local_addr()?, "accepting HL7 v2 over MLLP");
                let handler = Arc::new(phip_server::hl7::Hl7Handler::new(hl7_engine, base.clone()));
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(phip_hl7v2::mllp::serve(
                    mllp_listener,
                    handler,
                    phip_hl7v2::mllp::ServerConfig::default(),
                    async move {
                        let _ = stopped.await;
                    },
                ));
                (Some(stop), Some(task))
            }
            None => (None, None),
        };
        match &settings.tls {
            Some(tls) => {
                let config = phip_server::tls::server_config(tls).map_err(anyhow::Error::msg)?;
                if tls.client_ca.is_some() {
                    tracing::info!("mutual TLS: clients must present a certificate");
                }
                phip_server::tls::serve_tls(listener, state, config, shutdown_signal()).await?;
            }
            None => phip_server::serve(listener, state, shutdown_signal()).await?,
        }
        // In-flight HL7 messages finish and are acknowledged before the store closes.
        if let (Some(stop), Some(task)) = (mllp_stop, mllp_task) {
            let _ = stop.send(());
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "the MLLP listener stopped with an error");
            }
        }
        // Undelivered index entries stay in the history and go out after the next start.
        if let Some(publisher) = publisher {
            publisher.shutdown().await;
        }
        // A daily run cut short can be repeated with $surveillance-run (alerts are idempotent).
        daily_surveillance.abort();
        // Undelivered notifications stay pending in the store's history and the saved cursors.
        subscriptions.shutdown().await;
        // Running exports stop at their next checkpoint and resume at the next start.
        tokio::task::spawn_blocking(move || exporter.shutdown()).await?;
        if let Some(checkpointer) = checkpointer {
            checkpointer.abort();
        }
        // A signed checkpoint at shutdown bounds what a truncation of the log could hide.
        if let Err(error) = tokio::task::spawn_blocking(move || audit.checkpoint()).await? {
            tracing::warn!(%error, "could not write the closing audit checkpoint");
        }
        tracing::info!("phip stopped");
        Ok(())
    })
}

/// Warns when the anchor is where an attacker holding the data directory would also reach it.
fn check_anchor_placement(anchor: &std::path::Path, data_dir: &std::path::Path) {
    let folder = anchor
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let (Ok(folder), Ok(data)) = (folder.canonicalize(), data_dir.canonicalize()) else {
        return; // opening the anchor reports a missing folder
    };
    if folder.starts_with(&data) {
        tracing::warn!(anchor = %anchor.display(), "the audit anchor is inside the data directory: whoever can rewrite the trail can rewrite the anchor too; put it on another file system");
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(d)) = (std::fs::metadata(&folder), std::fs::metadata(&data)) {
            if a.dev() == d.dev() {
                tracing::warn!(anchor = %anchor.display(), "the audit anchor is on the same file system as the data directory; another file system (ideally append-only, or remote) protects it better");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
