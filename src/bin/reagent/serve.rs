//! `reagent serve` and `reagent keys`: the HTTP API over the run store, and the keys it accepts.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use reagent::runs::Runs;
use reagent::server::{LOOPBACK_ONLY, needs_keys, offered_agents, serve};
use reagent_store::{NewKey, Scope};

use crate::{Exit, fail};

pub async fn run(runs: Runs, agents: &Path, listen: SocketAddr) -> ExitCode {
    let offered = match offered_agents(agents) {
        Ok(offered) if offered.is_empty() => {
            return fail(Exit::Usage, &format!("--agents {}: no agent files (*.yaml) in it", agents.display()));
        }
        Ok(offered) => offered,
        Err(e) => return fail(Exit::InvalidAgent, &e),
    };
    for agent in offered.values() {
        if let Err(e) = runs.validate(&agent.file).await {
            return crate::launch_failure(&e);
        }
    }
    if needs_keys(&listen) {
        match runs.store().keys().await {
            Ok(keys) if keys.is_empty() => return fail(Exit::Usage, &format!("--listen {listen}: {LOOPBACK_ONLY}")),
            Ok(_) => {}
            Err(e) => return fail(Exit::Internal, &e.to_string()),
        }
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(Exit::Usage, &format!("cannot listen on {listen}: {e}")),
    };
    match serve(runs, offered, listener).await {
        Ok(()) => ExitCode::from(Exit::Success as u8),
        Err(e) => fail(Exit::Internal, &e),
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed once, on stdout, and stored only hashed.
    Create {
        /// The tenant whose runs the key sees (keys of one tenant share its runs)
        #[arg(long)]
        tenant: String,
        /// What the key may do: runs:read, runs:write (submit, cancel), runs:approve, comma-separated
        #[arg(long, value_delimiter = ',', default_value = "runs:read,runs:write")]
        scopes: Vec<String>,
        /// Runs of this key that may be unfinished at once; more are refused with 429
        #[arg(long, default_value_t = 16)]
        max_runs: u32,
    },
    /// The keys: id, tenant, scopes, limit (never their secrets).
    List,
}

pub async fn keys(runs: &Runs, command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::Create { tenant, scopes, max_runs } => {
            let mut parsed = Vec::new();
            for scope in &scopes {
                match Scope::parse(scope) {
                    Some(scope) => parsed.push(scope),
                    None => {
                        return fail(
                            Exit::Usage,
                            &format!("--scopes: `{scope}` is not a scope; use runs:read, runs:write, runs:approve"),
                        );
                    }
                }
            }
            if tenant.trim().is_empty() {
                return fail(Exit::Usage, "--tenant must not be empty");
            }
            match runs.store().create_key(NewKey { tenant, scopes: parsed, max_runs }).await {
                Ok(key) => {
                    eprintln!("key {} for tenant `{}`: the secret below is shown once; keep it", key.id, key.tenant);
                    let _ = writeln!(std::io::stdout(), "{}", key.secret.unwrap_or_default());
                    ExitCode::from(Exit::Success as u8)
                }
                Err(e) => fail(Exit::Internal, &e.to_string()),
            }
        }
        KeysCommand::List => match runs.store().keys().await {
            Ok(keys) => {
                let mut out = std::io::stdout();
                for key in keys {
                    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                    let _ =
                        writeln!(out, "{}  {:<16} {:<40} max {}", key.id, key.tenant, scopes.join(","), key.max_runs);
                }
                ExitCode::from(Exit::Success as u8)
            }
            Err(e) => fail(Exit::Internal, &e.to_string()),
        },
    }
}
