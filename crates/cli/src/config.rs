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
    /// HL7 v2 MLLP listen address.
    pub mllp: Option<String>,
    /// Public FHIR base URL.
    pub base_url: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// `on` (default) or `off` (local development only).
    pub auth: Option<String>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates of accepted client certificates (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// External token issuers whose access tokens are accepted (e.g. a provincial identity
    /// provider), each with a JWKS file of its public keys.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// This server's place in the four-level platform (none: a stand-alone server).
    pub federation: Option<crate::federation::FederationFile>,
    /// Resource limits of the HTTP layer (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Subscription delivery (`[subscriptions]`).
    #[serde(default)]
    pub subscriptions: SubscriptionsFileConfig,
    /// The audit trail's checkpoints and their external anchor (`[audit]`).
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[subscriptions]`: where rest-hook notifications may go.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsFileConfig {
    /// Non-public networks rest-hooks may reach, each `ADDRESS[/PREFIX][:PORT]`
    /// (`"10.1.2.0/24"`, `"127.0.0.1:9000"`, `"[fd00::1]:443"`); loopback, private,
    /// link-local and the other special-purpose ranges are refused otherwise [none].
    #[serde(default)]
    pub allow_private_endpoints: Vec<String>,
}

impl SubscriptionsFileConfig {
    /// The dispatcher's settings with these exceptions.
    pub fn resolve(&self) -> anyhow::Result<phip_subscriptions::SubscriptionsConfig> {
        let allow_private_endpoints = self
            .allow_private_endpoints
            .iter()
            .map(|entry| {
                entry
                    .parse::<phip_subscriptions::AllowedNetwork>()
                    .map_err(|e| anyhow::anyhow!("subscriptions.allow_private_endpoints: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(phip_subscriptions::SubscriptionsConfig {
            allow_private_endpoints,
            ..phip_subscriptions::SubscriptionsConfig::default()
        })
    }
}

/// `[audit]`: when the audit trail is checkpointed, and where checkpoints are kept outside the
/// data directory (see docs/security.md, "Audit trail").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A file on another file system than the data directory (ideally append-only) to which
    /// every checkpoint is appended; `phip audit verify` checks the log against it.
    pub anchor: Option<PathBuf>,
    /// Records between checkpoints [1000; 0: no count-based checkpoints].
    pub checkpoint_every: Option<u64>,
    /// Longest time, in minutes, before a record is pinned by a checkpoint [5; 0: no
    /// time-based checkpoints].
    pub checkpoint_minutes: Option<f64>,
}

impl AuditConfig {
    /// `(records, seconds)` between checkpoints.
    pub fn policy(&self) -> anyhow::Result<(u64, u64)> {
        let every = self
            .checkpoint_every
            .unwrap_or(phip_audit::log::DEFAULT_CHECKPOINT_EVERY);
        let seconds = match self.checkpoint_minutes {
            None => phip_audit::log::DEFAULT_CHECKPOINT_SECONDS,
            Some(0.0) => 0,
            // At least a second: the policy is signed in whole seconds.
            Some(m) if m.is_finite() && m > 0.0 => ((m * 60.0).round() as u64).max(1),
            Some(m) => anyhow::bail!("audit.checkpoint_minutes must be ≥ 0, not {m}"),
        };
        Ok((every, seconds))
    }
}

/// `[limits]`: resource limits of the HTTP layer; absent keys keep the defaults of
/// [`phip_server::limits::Limits`] (see docs/performance.md).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest batch/transaction bundle or bulk request body, in bytes [256 MiB].
    pub max_body_bytes: Option<usize>,
    /// Largest body of any other request, in bytes [16 MiB].
    pub max_resource_body_bytes: Option<usize>,
    /// Most requests processed at once; more are refused with 503 [512; 0: no limit].
    pub max_in_flight: Option<usize>,
    /// Most requests one client may have in progress at once; more get 429 [64; 0: no limit].
    pub max_in_flight_per_client: Option<usize>,
    /// Seconds a request may take before it is answered with 503 [120; 0: no limit].
    pub request_timeout_seconds: Option<f64>,
    /// Sustained requests per second per client (token subject or client id) [no limit].
    pub rate_limit_per_second: Option<f64>,
    /// Requests a client may send at once [2 × the rate, at least 10].
    pub rate_limit_burst: Option<u32>,
    /// Failed sign-ins (`/auth/token`, `/portal/login`) per minute per client address, after
    /// the burst [10; 0: no limit].
    pub failed_sign_ins_per_minute: Option<f64>,
    /// Failed sign-ins an address may make at once [10].
    pub failed_sign_in_burst: Option<u32>,
    /// Take the client address from the last `X-Forwarded-For` entry; only behind a reverse
    /// proxy that sets it [false].
    pub trust_forwarded_for: Option<bool>,
    /// Seconds a new connection has to send its first request head [10; 0: no limit].
    pub header_read_timeout_seconds: Option<f64>,
    /// Seconds an idle keep-alive connection stays open, and a later request head may take
    /// [75; 0: no limit].
    pub keep_alive_seconds: Option<f64>,
    /// Seconds a request body has to arrive before the client gets 408; it runs before the
    /// request takes an in-flight permit [30; 0: no limit].
    pub body_read_timeout_seconds: Option<f64>,
    /// Bytes per second at which a body earns time beyond `body_read_timeout_seconds`, so
    /// large uploads over slow links complete [1024; 0: a fixed deadline].
    pub body_min_bytes_per_second: Option<u64>,
}

/// A timeout key: `None` keeps `default`, 0 turns it off.
fn timeout(
    key: &str,
    value: Option<f64>,
    default: Option<std::time::Duration>,
) -> anyhow::Result<Option<std::time::Duration>> {
    match value {
        None => Ok(default),
        Some(0.0) => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(std::time::Duration::from_secs_f64(s))),
        Some(s) => anyhow::bail!("limits.{key} must be ≥ 0, not {s}"),
    }
}

impl LimitsConfig {
    /// The limits these settings give, and the bundle body limit.
    pub fn resolve(&self) -> anyhow::Result<(phip_server::limits::Limits, usize)> {
        use phip_server::limits::{Limits, RateLimit};
        let defaults = Limits::default();
        let request_timeout = timeout(
            "request_timeout_seconds",
            self.request_timeout_seconds,
            defaults.request_timeout,
        )?;
        let header_read_timeout = timeout(
            "header_read_timeout_seconds",
            self.header_read_timeout_seconds,
            defaults.header_read_timeout,
        )?;
        let keep_alive_timeout = timeout(
            "keep_alive_seconds",
            self.keep_alive_seconds,
            defaults.keep_alive_timeout,
        )?;
        let body_read_timeout = timeout(
            "body_read_timeout_seconds",
            self.body_read_timeout_seconds,
            defaults.body_read_timeout,
        )?;
        let rate_limit = match self.rate_limit_per_second {
            None => None,
            Some(rate) if rate.is_finite() && rate > 0.0 => Some(RateLimit {
                per_second: rate,
                burst: self
                    .rate_limit_burst
                    .unwrap_or_else(|| ((rate * 2.0).ceil() as u32).max(10)),
            }),
            Some(rate) => anyhow::bail!("limits.rate_limit_per_second must be > 0, not {rate}"),
        };
        let failed_sign_ins = match self.failed_sign_ins_per_minute {
            None => defaults.failed_sign_ins.map(|limit| RateLimit {
                burst: self.failed_sign_in_burst.unwrap_or(limit.burst),
                ..limit
            }),
            Some(0.0) => None,
            Some(rate) if rate.is_finite() && rate > 0.0 => Some(RateLimit {
                per_second: rate / 60.0,
                burst: self.failed_sign_in_burst.unwrap_or(10),
            }),
            Some(rate) => {
                anyhow::bail!("limits.failed_sign_ins_per_minute must be ≥ 0, not {rate}")
            }
        };
        let limits = Limits {
            max_resource_body_bytes: self
                .max_resource_body_bytes
                .unwrap_or(defaults.max_resource_body_bytes),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
            max_in_flight_per_client: self
                .max_in_flight_per_client
                .unwrap_or(defaults.max_in_flight_per_client),
            request_timeout,
            rate_limit,
            failed_sign_ins,
            trust_forwarded_for: self
                .trust_forwarded_for
                .unwrap_or(defaults.trust_forwarded_for),
            header_read_timeout,
            keep_alive_timeout,
            body_read_timeout,
            body_min_bytes_per_second: self
                .body_min_bytes_per_second
                .unwrap_or(defaults.body_min_bytes_per_second),
        };
        Ok((limits, self.max_body_bytes.unwrap_or(0)))
    }
}

/// An external issuer of access tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` claim of its tokens.
    pub issuer: String,
    /// A JWKS file with its public keys.
    pub jwks: PathBuf,
}

/// Loads the trusted issuers' keys.
pub fn trusted_issuers(
    file: &FileConfig,
) -> anyhow::Result<Vec<(String, phip_security::jws::Jwks)>> {
    file.trusted_issuers
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(&t.jwks)
                .with_context(|| format!("reading {}", t.jwks.display()))?;
            let keys = phip_security::jws::Jwks::from_json(&text)
                .with_context(|| format!("parsing {}", t.jwks.display()))?;
            Ok((t.issuer.clone(), keys))
        })
        .collect()
}

/// HTTPS options of `phip serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate chain: serve HTTPS instead of HTTP.
    #[arg(long, env = "PHIP_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key matching --tls-cert.
    #[arg(long, env = "PHIP_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate they signed (mutual TLS).
    #[arg(long, env = "PHIP_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Merges flags with the file; both a certificate and a key, or neither.
    pub fn resolve(
        self,
        file: &FileConfig,
    ) -> anyhow::Result<Option<phip_server::tls::TlsSettings>> {
        let cert = self.tls_cert.or_else(|| file.tls_cert.clone());
        let key = self.tls_key.or_else(|| file.tls_key.clone());
        let client_ca = self.tls_client_ca.or_else(|| file.tls_client_ca.clone());
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(phip_server::tls::TlsSettings {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            _ => anyhow::bail!(
                "HTTPS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)"
            ),
        }
    }
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
    /// HTTPS settings, if any.
    pub tls: Option<phip_server::tls::TlsSettings>,
    /// External issuers whose tokens are accepted.
    pub trusted_issuers: Vec<(String, phip_security::jws::Jwks)>,
    /// HL7 v2 MLLP listen address, if the feed is enabled.
    pub mllp: Option<String>,
    /// Federation node settings, if this server is a node.
    pub federation: Option<crate::federation::FederationFile>,
    /// Resource limits of the HTTP layer.
    pub limits: phip_server::limits::Limits,
    /// Largest bundle body in bytes (0: the server's default).
    pub max_body_bytes: usize,
    /// Subscription dispatcher settings.
    pub subscriptions: phip_subscriptions::SubscriptionsConfig,
    /// Audit checkpoints and their anchor.
    pub audit: AuditConfig,
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
        let (limits, max_body_bytes) = file.limits.resolve()?;
        let subscriptions = file.subscriptions.resolve()?;
        file.audit.policy()?;
        Ok(Self {
            subscriptions,
            audit: file.audit.clone(),
            tls: None,
            mllp: None,
            federation: file.federation.clone(),
            limits,
            max_body_bytes,
            trusted_issuers: trusted_issuers(file)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_slow_client_limits_are_read_from_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
[limits]
header_read_timeout_seconds = 5
keep_alive_seconds = 20
body_read_timeout_seconds = 0
body_min_bytes_per_second = 4096

[subscriptions]
allow_private_endpoints = ["10.1.2.0/24", "127.0.0.1:9000", "[fd00::1]:443"]
"#,
        )
        .expect("valid file");
        let (limits, _) = file.limits.resolve().expect("limits");
        assert_eq!(
            limits.header_read_timeout,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            limits.keep_alive_timeout,
            Some(std::time::Duration::from_secs(20))
        );
        assert_eq!(limits.body_read_timeout, None, "0 turns the deadline off");
        assert_eq!(limits.body_min_bytes_per_second, 4096);
        let subscriptions = file.subscriptions.resolve().expect("subscriptions");
        let allowed: Vec<String> = subscriptions
            .allow_private_endpoints
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            allowed,
            ["10.1.2.0/24", "127.0.0.1/32:9000", "[fd00::1/128]:443"]
        );

        let defaults = FileConfig::default();
        let (limits, _) = defaults.limits.resolve().expect("limits");
        assert_eq!(
            limits.body_read_timeout,
            phip_server::limits::Limits::default().body_read_timeout
        );
        assert!(defaults
            .subscriptions
            .resolve()
            .expect("defaults")
            .allow_private_endpoints
            .is_empty());

        let bad: FileConfig =
            toml::from_str("[subscriptions]\nallow_private_endpoints = [\"intranet\"]\n")
                .expect("parses as TOML");
        let error = bad.subscriptions.resolve().expect_err("not a network");
        assert!(
            error.to_string().contains("allow_private_endpoints"),
            "{error}"
        );
        assert!(toml::from_str::<FileConfig>("[subscriptions]\nallow = []\n").is_err());
    }
}
