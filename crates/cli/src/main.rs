//! `phip`: the population health information platform's single binary.
//!
//! A thin layer over the library crates: it parses the command line, configuration file and
//! environment, builds the store and engine, and runs a command.

mod bench;
mod bench_load;
mod bench_mpi;
mod bench_mpi_scale;
mod config;
mod dev;
mod export;
mod federation;
mod health_code;
mod import;
mod portal;
mod serve;
mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of the system allocator: the server allocates many short-lived JSON
/// values per request, and glibc malloc/free took over a third of search CPU in profiles (an
/// alternative allocator raised search throughput by about a fifth; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// phip — population health information platform (FHIR R4).
#[derive(Parser, Debug)]
#[command(name = "phip", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML with keys data_dir, listen, base_url, log_format).
    #[arg(long, global = true, env = "PHIP_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// Options shared by commands that open the store.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct StoreArgs {
    /// Data directory: the embedded store, keys and audit log [default: ./phip-data].
    #[arg(long, env = "PHIP_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// PostgreSQL connection URL (`postgres://user:pass@host:port/db`); without it the
    /// embedded SQLite store in the data directory is used.
    #[arg(long, env = "PHIP_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the audit trail's hash chain, its signed checkpoints and their interval, and the
    /// checkpoints kept outside the data directory (the anchor file, `--expect` lines); names
    /// the first broken record and exits non-zero if any record was altered, deleted or
    /// reordered, the log was cut short, wiped or replaced, or checkpoints were removed.
    Verify {
        /// Data directory holding `audit.db` and the key ring [default: ./phip-data].
        #[arg(long, env = "PHIP_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Anchor file the server appends its checkpoints to [default: `[audit] anchor`].
        #[arg(long)]
        anchor: Option<PathBuf>,
        /// A checkpoint line kept earlier (printed by `phip audit head`, or logged by the
        /// server): the log must still hold that checkpoint with that hash. Repeatable.
        #[arg(long)]
        expect: Vec<String>,
        /// JWKS file of public keys trusted for checkpoint signatures besides those the anchor
        /// carries (with either, the key ring in the data directory is not trusted).
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Print the newest checkpoint as a line to keep outside the data directory (for
    /// `phip audit verify --expect`).
    Head {
        /// Data directory holding `audit.db` and the key ring [default: ./phip-data].
        #[arg(long, env = "PHIP_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the FHIR server.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "PHIP_LISTEN")]
        listen: Option<String>,
        /// Public FHIR base URL, when behind a proxy (default: derived from the Host header).
        #[arg(long, env = "PHIP_BASE_URL")]
        base_url: Option<String>,
        /// Log format: `text` or `json`.
        #[arg(long, env = "PHIP_LOG_FORMAT")]
        log_format: Option<String>,
        /// `on` (default): every FHIR request needs a bearer token; `off`: no authentication,
        /// for local development only.
        #[arg(long, env = "PHIP_AUTH")]
        auth: Option<String>,
        #[command(flatten)]
        tls: config::TlsArgs,
        /// Also accept HL7 v2 messages over MLLP on this address (e.g. `0.0.0.0:2575`);
        /// bind it to the hospital network only, MLLP has no authentication.
        #[arg(long, env = "PHIP_MLLP")]
        mllp: Option<String>,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Mint an access token from the data directory's key (for operators and scripts).
    Token(token::TokenArgs),
    /// Residents' electronic health codes: verify one offline, or render one as a QR image.
    HealthCode {
        #[command(subcommand)]
        command: health_code::HealthCodeCommand,
    },
    /// Manage SMART Backend Services clients allowed to use the token endpoint.
    Client(token::ClientArgs),
    /// Load NDJSON files and Bundles into the store (files or directories, recursively).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// Files or directories (`.ndjson`, `.json`, optionally `.gz`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Resources per database transaction.
        #[arg(long, default_value_t = 2000)]
        batch_size: usize,
    },
    /// Export resources as FHIR Bulk Data NDJSON files straight from the store (as `$export`).
    Export(export::ExportArgs),
    /// Benchmark ingest and search over the HTTP API (in-process server or `--url`).
    Bench(bench::BenchArgs),
    /// Development helpers (`phip dev federation`: a national and two provincial nodes on
    /// loopback).
    Dev(dev::DevArgs),
    /// Web portal helpers (`phip portal code`: a one-time sign-in code).
    Portal(portal::PortalArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
        /// Lay out a new PostgreSQL database for Citus (distributed tables; see
        /// docs/postgres.md), failing if the `citus` extension is missing or the database
        /// already holds a schema that is not distributed. Without it a new database is laid
        /// out for Citus when the extension is installed.
        #[arg(long)]
        citus: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = config::FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve {
            store,
            listen,
            base_url,
            log_format,
            auth,
            tls,
            mllp,
        } => {
            let mut settings =
                config::ServeSettings::resolve(&file, &store, listen, base_url, log_format, auth)?;
            settings.tls = tls.resolve(&file)?;
            settings.mllp = mllp.or_else(|| file.mllp.clone());
            serve::run(settings)
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    anchor,
                    expect,
                    jwks,
                },
        } => audit_verify(
            &config::data_dir(&file, data_dir),
            &file.audit,
            anchor,
            &expect,
            jwks,
        ),
        Command::Audit {
            command: AuditCommand::Head { data_dir },
        } => audit_head(&config::data_dir(&file, data_dir)),
        Command::Token(args) => token::mint(&file, args),
        Command::HealthCode { command } => health_code::run(command),
        Command::Client(args) => token::client(&file, args),
        Command::Import {
            store,
            paths,
            batch_size,
        } => {
            config::init_logging("text");
            import::run(
                &config::store_config(&file, &store),
                &paths,
                batch_size.max(1),
            )
        }
        Command::Export(args) => {
            config::init_logging("text");
            export::run(&file, args)
        }
        Command::Bench(args) => bench::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Portal(args) => portal::run(&file, args),
        Command::Migrate { store, citus } => {
            config::init_logging("text");
            let store_config = config::store_config(&file, &store);
            if citus && !matches!(store_config, phip_store::StoreConfig::Postgres { .. }) {
                anyhow::bail!("--citus needs a PostgreSQL database (--database-url)");
            }
            let layout = if citus {
                phip_store::postgres::Layout::Citus
            } else {
                phip_store::postgres::Layout::Detect
            };
            let (version, distributed) = phip_store::migrate_with(&store_config, layout)?;
            println!(
                "schema of {} is at version {version}{}",
                store_config.describe(),
                if distributed {
                    ", distributed with Citus"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// `phip audit verify`.
fn audit_verify(
    data_dir: &std::path::Path,
    audit: &config::AuditConfig,
    anchor: Option<PathBuf>,
    expect: &[String],
    jwks: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let (every, seconds) = audit.policy()?;
    let anchor = anchor.or_else(|| audit.anchor.clone());
    let mut anchors = Vec::new();
    let mut notes = Vec::new();
    if let Some(path) = &anchor {
        let file = phip_audit::read_anchor(path)
            .with_context(|| format!("reading the audit anchor {}", path.display()))?;
        if file.torn > 0 {
            notes.push(format!(
                "note: {} holds {} line(s) whose write was cut short (a crash); they were skipped",
                path.display(),
                file.torn
            ));
        }
        if file.lines.is_empty() {
            notes.push(format!(
                "warning: the anchor {} holds no checkpoint yet",
                path.display()
            ));
        }
        anchors.extend(file.lines);
    }
    for line in expect {
        anchors.push(
            phip_audit::AnchorLine::parse(line)
                .map_err(|e| anyhow::anyhow!("--expect {line:?}: {e}"))?,
        );
    }
    let keys = match &jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                phip_security::jws::Jwks::from_json(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )
        }
        None => None,
    };
    // Keys pinned outside the data directory replace its key ring, which whoever rewrote the
    // trail could have replaced as well.
    let pinned = keys.is_some() || anchors.iter().any(|a| a.key.is_some());
    let ring = if pinned {
        None
    } else {
        Some(phip_security::keys::KeyRing::open(data_dir).context("opening the key ring")?)
    };
    let log = phip_audit::AuditLog::open_read_only(data_dir, ring.as_ref())
        .with_context(|| format!("opening the audit log in {}", data_dir.display()))?;
    let report = log
        .verify_with(&phip_audit::VerifyOptions {
            every,
            seconds,
            anchors,
            keys,
            now: chrono::Utc::now(),
        })
        .context("reading the audit log")?;
    for note in &notes {
        eprintln!("{note}");
    }
    match &report.first_broken {
        None => {
            println!(
                "audit trail intact: {} records, {} signed checkpoints{}",
                report.records,
                report.checkpoints,
                report
                    .head
                    .as_ref()
                    .map(|(seq, hash)| format!(", head #{seq} {hash}"))
                    .unwrap_or_default()
            );
            match report.anchored {
                Some(seq) => println!(
                    "anchored: records 1–{seq} are pinned by a checkpoint kept outside the data directory{}",
                    if report.keys_pinned {
                        "; checkpoint signatures checked against the anchor's keys"
                    } else {
                        ""
                    }
                ),
                None => eprintln!(
                    "warning: no anchor checked ([audit] anchor, --anchor or --expect): a trail cut \
                     short, wiped or replaced together with its keys cannot be detected from the \
                     data directory alone; signatures were checked against its own key ring"
                ),
            }
            if let Some((from, to)) = report.unpinned {
                println!(
                    "not yet checkpointed: records {from}–{to} (the server checkpoints within the \
                     interval, and at shutdown)"
                );
            }
            Ok(())
        }
        Some(broken) => {
            println!(
                "audit trail BROKEN at record #{}: {}",
                broken.seq, broken.reason
            );
            std::process::exit(1);
        }
    }
}

/// `phip audit head`.
fn audit_head(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let ring = phip_security::keys::KeyRing::open(data_dir).context("opening the key ring")?;
    let log = phip_audit::AuditLog::open_read_only(data_dir, Some(&ring))
        .with_context(|| format!("opening the audit log in {}", data_dir.display()))?;
    let Some(checkpoint) = log.newest_checkpoint()? else {
        anyhow::bail!(
            "the audit trail has no checkpoint yet (the server makes one within the checkpoint \
             interval, and at shutdown)"
        );
    };
    println!("{}", log.anchor_line(&checkpoint));
    if let Some((head, _)) = log.head()? {
        if head > checkpoint.seq {
            eprintln!(
                "note: records {}–{head} are not checkpointed yet (the server checkpoints within \
                 the interval, and at shutdown)",
                checkpoint.seq + 1
            );
        }
    }
    Ok(())
}
