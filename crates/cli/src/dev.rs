//! `phip dev federation`: a whole small federation on one machine — a national node and two
//! provincial nodes (Beijing 110000, Guangdong 440000) on loopback ports, each with its own
//! data directory, key ring, configuration and trust file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use phip_federation::{Level, Peer, Trust};
use phip_security::token::Grant;

/// `phip dev …`: development helpers.
#[derive(Args, Debug)]
pub struct DevArgs {
    #[command(subcommand)]
    command: DevCommand,
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Start a national node and two provincial nodes on loopback; Ctrl-C stops them all.
    Federation(FederationArgs),
}

/// Options of `phip dev federation`.
#[derive(Args, Debug)]
pub struct FederationArgs {
    /// First port: the national node listens on it, the provinces on the next two.
    #[arg(long, default_value_t = 18080)]
    base_port: u16,
    /// Directory for the nodes' data, configuration and tokens [default: a new temporary
    /// directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only write the configuration, trust files and tokens (`tokens.json`), then exit.
    #[arg(long)]
    setup_only: bool,
    /// Outbox poll interval, in milliseconds.
    #[arg(long, default_value_t = 500)]
    publish_interval_ms: u64,
    /// Largest outbox retry delay, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    retry_max_ms: u64,
    /// Deadline of federated lookups, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    lookup_deadline_ms: u64,
}

/// One node of the development federation.
struct DevNode {
    id: &'static str,
    level: Level,
    division: &'static str,
    port: u16,
}

impl DevNode {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }
}

/// Runs `phip dev …`.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    match args.command {
        DevCommand::Federation(args) => federation(args),
    }
}

fn federation(args: FederationArgs) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("phip-federation-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nodes = [
        DevNode {
            id: "national",
            level: Level::National,
            division: "000000",
            port: args.base_port,
        },
        DevNode {
            id: "bj",
            level: Level::Provincial,
            division: "110000",
            port: args.base_port.saturating_add(1),
        },
        DevNode {
            id: "gd",
            level: Level::Provincial,
            division: "440000",
            port: args.base_port.saturating_add(2),
        },
    ];
    let configs = setup(&dir, &nodes, &args)?;
    if args.setup_only {
        println!("federation configured in {}", dir.display());
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the phip binary")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for (node, config) in nodes.iter().zip(&configs) {
        let log = std::fs::File::create(dir.join(format!("{}.log", node.id)))?;
        let child = Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {}", node.id))?;
        children.push((node.id.to_owned(), child));
    }
    let ready = wait_ready(&nodes);
    if let Err(error) = ready {
        stop(&mut children);
        return Err(error);
    }
    println!(
        "phip development federation (data, logs and tokens in {}):",
        dir.display()
    );
    for node in &nodes {
        println!(
            "  {:<9} {:<10} {}  {}",
            node.id,
            node.level.as_str(),
            node.division,
            node.base()
        );
    }
    println!(
        "clinician tokens (user/*.cruds, 8 h; also in {}):",
        dir.join("tokens.json").display()
    );
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json"))?)?;
    for node in &nodes {
        if let Some(token) = tokens[node.id]["token"].as_str() {
            println!("  {:<9} {token}", node.id);
        }
    }
    println!("try: curl -H \"Authorization: Bearer $TOKEN\" '{}/Patient/$federated-everything?identifier={}|<resident id>'", nodes[1].base(), phip_federation::RESIDENT_ID_SYSTEM);
    println!("Ctrl-C stops all nodes.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    stop(&mut children);
    Ok(())
}

/// Writes every node's data directory (key ring), trust file, configuration and a clinician
/// token; returns the configuration files.
fn setup(dir: &Path, nodes: &[DevNode], args: &FederationArgs) -> anyhow::Result<Vec<PathBuf>> {
    let mut peers = Vec::new();
    for node in nodes {
        let data = dir.join(node.id);
        std::fs::create_dir_all(&data)?;
        let ring = phip_security::keys::KeyRing::open(&data).context("opening a key ring")?;
        peers.push(Peer {
            node_id: node.id.to_owned(),
            base_url: node.base(),
            jwks: ring.jwks(),
        });
    }
    let mut configs = Vec::new();
    let mut tokens = serde_json::Map::new();
    for node in nodes {
        let data = dir.join(node.id);
        let others: Vec<Peer> = peers
            .iter()
            .filter(|p| p.node_id != node.id)
            .cloned()
            .collect();
        let trust_file = dir.join(format!("{}-trust.json", node.id));
        Trust::save(&trust_file, &others).map_err(anyhow::Error::msg)?;
        let parent = match node.level {
            Level::National => String::new(),
            _ => format!("parent = \"{}\"\n", nodes[0].base()),
        };
        let config = format!(
            "data_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"{base}\"\nauth = \"on\"\n\n[federation]\nnode_id = \"{id}\"\nlevel = \"{level}\"\ndivision = \"{division}\"\n{parent}trust_file = {trust:?}\nlookup_deadline_ms = {deadline}\npublish_interval_ms = {interval}\nretry_initial_ms = {initial}\nretry_max_ms = {max}\n",
            data = data.display().to_string(),
            port = node.port,
            base = node.base(),
            id = node.id,
            level = node.level.as_str(),
            division = node.division,
            trust = trust_file.display().to_string(),
            deadline = args.lookup_deadline_ms,
            interval = args.publish_interval_ms,
            initial = (args.retry_max_ms / 10).max(50),
            max = args.retry_max_ms,
        );
        let path = dir.join(format!("{}.toml", node.id));
        std::fs::write(&path, config)?;
        configs.push(path);
        let authenticator =
            phip_server::auth::Authenticator::from_data_dir(&data, Some(&node.base()), Vec::new())
                .map_err(anyhow::Error::msg)?;
        let division = (node.level != Level::National).then(|| node.division.to_owned());
        let minted = authenticator
            .mint(
                &Grant {
                    sub: format!("dr-{}", node.id),
                    scope: "user/*.cruds".into(),
                    org: Some(format!("hospital-{}", node.id)),
                    division,
                    roles: vec!["doctor".into()],
                    ..Grant::default()
                },
                Duration::from_secs(8 * 3600),
            )
            .map_err(|e| anyhow::anyhow!("minting a token: {e}"))?;
        tokens.insert(
            node.id.to_owned(),
            serde_json::json!({"base": node.base(), "token": minted.token}),
        );
    }
    std::fs::write(
        dir.join("tokens.json"),
        serde_json::to_string_pretty(&tokens)?,
    )?;
    Ok(configs)
}

/// Asks a node to shut down gracefully (SIGTERM, as `phip serve` expects from a service
/// manager).
#[cfg(unix)]
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid this process spawned and has not yet reaped, so it
        // cannot name an unrelated process; it touches no memory.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {}

fn wait_ready(nodes: &[DevNode]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok();
            if up {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("node {} did not start (see its log)", node.id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn stop(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        terminate(child);
    }
    for (name, child) in children.iter_mut() {
        // Each node finishes in-flight requests and saves its cursors; whatever is still
        // running after a moment is killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("node {name} killed");
                    break;
                }
            }
        }
    }
}
