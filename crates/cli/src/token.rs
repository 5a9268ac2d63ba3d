//! `phip token` and `phip client`: access tokens for operators and scripts, and the registry
//! of SMART Backend Services clients.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use phip_security::jws::Jwks;
use phip_security::token::Grant;
use phip_server::auth::{load_clients, save_clients, Authenticator, RegisteredClient};

use crate::config::{data_dir, FileConfig};

/// Options of `phip token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Data directory holding the key ring [default: ./phip-data].
    #[arg(long, env = "PHIP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Public FHIR base URL of the server the token is for (must match `serve --base-url`).
    #[arg(long, env = "PHIP_BASE_URL")]
    base_url: Option<String>,
    /// SMART scopes, space-separated, e.g. `system/*.cruds` or `patient/*.rs`.
    #[arg(long)]
    scope: String,
    /// Subject (user or client id) recorded in audit trails.
    #[arg(long, default_value = "operator")]
    subject: String,
    /// Organisation the user acts for.
    #[arg(long)]
    org: Option<String>,
    /// GB/T 2260 division code of the user's region.
    #[arg(long)]
    division: Option<String>,
    /// Patient id (required with `patient/` scopes).
    #[arg(long)]
    patient: Option<String>,
    /// Practitioner id of the user.
    #[arg(long)]
    practitioner: Option<String>,
    /// Role codes (repeatable); `emergency` entitles the user to break the glass.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Lifetime, e.g. `30m`, `8h`, `7d`, or seconds.
    #[arg(long, default_value = "1h")]
    ttl: String,
}

/// `phip client …`.
#[derive(Args, Debug)]
pub struct ClientArgs {
    #[command(subcommand)]
    command: ClientCommand,
    /// Data directory [default: ./phip-data].
    #[arg(long, env = "PHIP_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Register (or replace) a client with its public keys (a JWKS file).
    Add {
        /// Client id.
        #[arg(long)]
        id: String,
        /// JWKS file with the client's public keys.
        #[arg(long)]
        jwks: PathBuf,
        /// The largest scope the client may obtain.
        #[arg(long)]
        scope: String,
        /// Organisation the client acts for.
        #[arg(long)]
        org: Option<String>,
        /// GB/T 2260 division code of that organisation.
        #[arg(long)]
        division: Option<String>,
    },
    /// List registered clients.
    List,
    /// Remove a client.
    Remove {
        /// Client id.
        #[arg(long)]
        id: String,
    },
}

/// Parses `30s`, `15m`, `8h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .with_context(|| format!("invalid lifetime {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        other => bail!("invalid lifetime unit {other:?} (use s, m, h or d)"),
    };
    if seconds == 0 {
        bail!("the lifetime must be positive");
    }
    Ok(Duration::from_secs(seconds))
}

/// Mints a token and prints it.
pub fn mint(file: &FileConfig, args: TokenArgs) -> anyhow::Result<()> {
    let dir = data_dir(file, args.data_dir);
    let base_url = args.base_url.or_else(|| file.base_url.clone());
    let authenticator = Authenticator::from_data_dir(&dir, base_url.as_deref(), Vec::new())?;
    let ttl = parse_ttl(&args.ttl)?;
    let minted = authenticator
        .mint(
            &Grant {
                sub: args.subject,
                scope: args.scope,
                org: args.org,
                division: args.division,
                patient: args.patient,
                practitioner: args.practitioner,
                roles: args.roles,
                ..Grant::default()
            },
            ttl,
        )
        .context("minting the token")?;
    println!("{}", minted.token);
    Ok(())
}

/// Runs a `phip client` command.
pub fn client(file: &FileConfig, args: ClientArgs) -> anyhow::Result<()> {
    let dir = data_dir(file, args.data_dir);
    let mut clients = load_clients(&dir).map_err(anyhow::Error::msg)?;
    match args.command {
        ClientCommand::Add {
            id,
            jwks,
            scope,
            org,
            division,
        } => {
            let text = std::fs::read_to_string(&jwks)
                .with_context(|| format!("reading {}", jwks.display()))?;
            let keys =
                Jwks::from_json(&text).with_context(|| format!("parsing {}", jwks.display()))?;
            phip_security::scope::ScopeSet::parse(&scope).context("invalid scope")?;
            clients.retain(|c| c.client_id != id);
            clients.push(RegisteredClient {
                client_id: id.clone(),
                jwks: keys,
                scope,
                org,
                division,
            });
            save_clients(&dir, &clients).map_err(anyhow::Error::msg)?;
            println!("registered client {id}; restart phip serve to pick it up");
        }
        ClientCommand::List => {
            for c in &clients {
                println!(
                    "{}\t{}\t{}",
                    c.client_id,
                    c.scope,
                    c.org.as_deref().unwrap_or("-")
                );
            }
        }
        ClientCommand::Remove { id } => {
            let before = clients.len();
            clients.retain(|c| c.client_id != id);
            if clients.len() == before {
                bail!("no client {id:?}");
            }
            save_clients(&dir, &clients).map_err(anyhow::Error::msg)?;
            println!("removed client {id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("8h").unwrap(), Duration::from_secs(28_800));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
