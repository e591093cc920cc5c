//! `reagent mcp serve` and `reagent mcp pin`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use reagent::mcp_server::{McpService, TOKEN_VARIABLE, serve_http, serve_stdio};
use reagent::runtime::Runtime;
use reagent::server::stop_on_signals;

use crate::{Exit, fail, launch_failure};

#[derive(Subcommand)]
pub enum McpCommand {
    /// Serve an agent's Wasm tools to MCP clients (both protocol eras), under the agent file's
    /// grants, limits and approvals: a client can call what the file declares and nothing more.
    /// A call that needs approval asks the client's person (elicitation), or fails.
    ///
    /// stdio (the default) speaks only protocol on stdout; `--http` serves Streamable HTTP at
    /// /mcp, checking `Host` and `Origin`; bound beyond loopback it requires the bearer token in
    /// $REAGENT_MCP_TOKEN on every request.
    Serve {
        /// The agent's YAML file, e.g. agents/calculator.yaml
        agent: PathBuf,
        /// Serve on stdin and stdout (the default)
        #[arg(long, conflicts_with = "http")]
        stdio: bool,
        /// Serve Streamable HTTP on ADDR: a port (on loopback, e.g. 8808) or an address and port
        /// (e.g. 0.0.0.0:8808, which needs $REAGENT_MCP_TOKEN)
        #[arg(long, value_name = "ADDR", value_parser = listen_address)]
        http: Option<SocketAddr>,
        /// Also serve the agent itself as one tool (a task and the agent's inputs), reporting
        /// its steps as progress
        #[arg(long)]
        agent_tool: bool,
        /// Browser origins allowed to call over HTTP (e.g. http://localhost:5173); by default a
        /// request that carries an `Origin` is refused
        #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
        allow_origin: Vec<String>,
    },
    /// Start the agent's MCP servers and pin the tools they offer now, with the protocol each
    /// speaks, in the lock file beside the agent (AGENT.mcp-lock.json). Run it after reviewing a
    /// server's changed or new tools: until then they are refused.
    Pin {
        /// The agent's YAML file
        agent: PathBuf,
    },
}

/// `8808` is loopback's port 8808; anything else is an address and port.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => text
            .parse()
            .map_err(|_| format!("`{text}` is neither a port (8808) nor an address and port (127.0.0.1:8808)")),
    }
}

pub async fn run(command: McpCommand, runtime: Runtime) -> ExitCode {
    match command {
        McpCommand::Serve { agent, stdio: _, http, agent_tool, allow_origin } => {
            let service = match Box::pin(McpService::load(Arc::new(runtime), agent, agent_tool)).await {
                Ok(service) => service,
                Err(e) => return launch_failure(&e),
            };
            let Some(address) = http else {
                return match Box::pin(serve_stdio(service)).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(Exit::Internal, &e),
                };
            };
            let token = std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty());
            if !address.ip().is_loopback() && token.is_none() {
                let message = format!(
                    "--http {address} is reachable beyond this machine: set {TOKEN_VARIABLE} to a token clients must send as `Authorization: Bearer`, or bind to 127.0.0.1"
                );
                return fail(Exit::Usage, &message);
            }
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(e) => return fail(Exit::Usage, &format!("cannot listen on {address}: {e}")),
            };
            let bound = listener.local_addr().unwrap_or(address);
            let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into(), bound.ip().to_string()];
            hosts.push(format!("localhost:{}", bound.port()));
            // A page served from this very address is same-origin; any other origin must be named.
            let mut origins = allow_origin;
            origins.extend(["localhost", "127.0.0.1"].map(|host| format!("http://{host}:{}", bound.port())));
            let mut stopping = match stop_on_signals() {
                Ok(stopping) => stopping,
                Err(e) => return fail(Exit::Internal, &e),
            };
            eprintln!("reagent: serving MCP on http://{bound}/mcp");
            let stop = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            match Box::pin(serve_http(service, listener, hosts, origins, token, stop)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(Exit::Internal, &e),
            }
        }
        McpCommand::Pin { agent } => match Box::pin(reagent::launch::pin_mcp(&agent)).await {
            Ok(servers) => {
                for (name, protocol, tools) in servers.summary() {
                    println!("{name}: {tools} tool(s) pinned (protocol {protocol})");
                }
                servers.shut_down().await;
                ExitCode::SUCCESS
            }
            Err(e) => launch_failure(&e),
        },
    }
}
