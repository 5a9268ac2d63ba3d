//! Configuration: command-line flags override environment variables (handled by clap), which
//! override the configuration file, which overrides the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Keys accepted in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL connection URL (otherwise the embedded SQLite store is used).
    pub database_url: Option<String>,
    /// Listen address.
    pub listen: Option<String>,
    /// Public FHIR base URL.
    pub base_url: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// `on` (default) or `off` (local development only).
    pub auth: Option<String>,
}

impl FileConfig {
    /// Reads the file, or returns defaults when none is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("parsing configuration file {}", path.display()))
    }
}

/// The data directory: flag/env, then file, then `./phip-data`.
pub fn data_dir(file: &FileConfig, flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("phip-data"))
}

/// The store to open: PostgreSQL when a database URL is configured, otherwise SQLite in the
/// data directory.
pub fn store_config(file: &FileConfig, args: &crate::StoreArgs) -> phip_store::StoreConfig {
    let url = args
        .database_url
        .clone()
        .or_else(|| file.database_url.clone());
    phip_store::StoreConfig::new(data_dir(file, args.data_dir.clone()), url.as_deref())
}

/// Resolved settings of `phip serve`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Which store to open.
    pub store: phip_store::StoreConfig,
    /// Listen address.
    pub listen: String,
    /// Public base URL, if fixed.
    pub base_url: Option<String>,
    /// Log format.
    pub log_format: String,
    /// Whether bearer tokens are required.
    pub auth_required: bool,
}

impl ServeSettings {
    /// Merges flags/env with the file and defaults.
    pub fn resolve(
        file: &FileConfig,
        store_args: &crate::StoreArgs,
        listen: Option<String>,
        base_url: Option<String>,
        log_format: Option<String>,
        auth: Option<String>,
    ) -> anyhow::Result<Self> {
        let auth = auth
            .or_else(|| file.auth.clone())
            .unwrap_or_else(|| "on".to_owned());
        let auth_required = match auth.as_str() {
            "on" => true,
            "off" => false,
            other => anyhow::bail!("auth must be \"on\" or \"off\", not {other:?}"),
        };
        Ok(Self {
            auth_required,
            data_dir: data_dir(file, store_args.data_dir.clone()),
            store: store_config(file, store_args),
            listen: listen
                .or_else(|| file.listen.clone())
                .unwrap_or_else(|| "127.0.0.1:8080".to_owned()),
            base_url: base_url.or_else(|| file.base_url.clone()),
            log_format: log_format
                .or_else(|| file.log_format.clone())
                .unwrap_or_else(|| "text".to_owned()),
        })
    }
}

/// Installs the tracing subscriber (`RUST_LOG` filters; default `info`).
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let _ = result;
}
