//! `phip portal code`: issues a one-time portal sign-in code for a resident or a clinician,
//! through the same code path as the server's `POST /portal/one-time-code`.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use phip_engine::EngineConfig;
use phip_server::auth::{AuthMode, Authenticator};
use phip_server::portal::codes::{issue, CodeRequest};
use phip_server::{AppState, ServerConfig};

/// `phip portal …`.
#[derive(Args, Debug)]
pub(crate) struct PortalArgs {
    #[command(subcommand)]
    command: PortalCommand,
}

#[derive(Subcommand, Debug)]
enum PortalCommand {
    /// Print a one-time sign-in code (ten minutes, single use).
    Code {
        #[command(flatten)]
        store: crate::StoreArgs,
        /// A resident: any of their Patient record ids.
        #[arg(long, conflicts_with = "practitioner")]
        patient: Option<String>,
        /// A clinician or pharmacist: their Practitioner id.
        #[arg(long, requires = "org")]
        practitioner: Option<String>,
        /// The clinician's Organization id.
        #[arg(long)]
        org: Option<String>,
        /// The clinician's GB/T 2260 division code.
        #[arg(long)]
        division: Option<String>,
        /// `clinician` (default) or `pharmacist`.
        #[arg(long)]
        role: Option<String>,
    },
}

/// Runs a `phip portal` command.
pub(crate) fn run(file: &crate::config::FileConfig, args: PortalArgs) -> anyhow::Result<()> {
    let PortalCommand::Code {
        store,
        patient,
        practitioner,
        org,
        division,
        role,
    } = args.command;
    let data_dir = crate::config::data_dir(file, store.data_dir.clone());
    let store_config = crate::config::store_config(file, &store);
    let opened = phip_store::open_store(&store_config).context("opening the store")?;
    let engine = Arc::new(phip_server::platform_engine(
        opened,
        EngineConfig::default(),
    ));
    let auth = Authenticator::from_data_dir(&data_dir, None, Vec::new())?;
    let state = AppState::new(
        engine,
        ServerConfig {
            auth: AuthMode::Required(Arc::new(auth)),
            public_base_url: None,
            max_body_bytes: 0,
            node_name: "phip-cli".into(),
        },
        None,
    );
    let request = CodeRequest {
        patient,
        practitioner,
        organization: org,
        division,
        role,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (code, expires) = runtime
        .block_on(issue(&state, &request))
        .map_err(|(status, message)| anyhow::anyhow!("{message} ({status})"))?;
    println!("{code}");
    eprintln!("valid until {expires}, once; sign in at /portal/login");
    Ok(())
}
