//! `reagent serve`, `reagent worker` and `reagent keys`: the HTTP API over the run store, the
//! processes that drive its runs, and the keys the API accepts.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reagent::agent_loop::RunOutcome;
use reagent::runs::{Driven, Runs, Worker};
use reagent::server::{DRAIN_TIME, LOOPBACK_ONLY, Offered, needs_keys, offered_agents, serve, stop_on_signals};
use reagent::spec::parse_duration;
use reagent::webhooks::Webhooks;
use reagent_store::{NewKey, Queue, Scope};

use crate::{Exit, fail};

/// How a process drives runs from the store's queue (`serve` unless `--no-worker`, `worker`).
#[derive(Args, Clone)]
pub struct WorkerArgs {
    /// Runs this process drives at once; more wait in the queue
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// How long a claim on a run holds without renewal (renewed every third of it): how long a
    /// run whose process died waits before another process takes it over
    #[arg(long, default_value = "30s", value_parser = at_least(Duration::from_secs(1)), value_name = "DURATION")]
    pub lease: Duration,
    /// How often an idle process looks at the queue for runs submitted elsewhere
    #[arg(long, default_value = "500ms", value_parser = at_least(Duration::from_millis(10)), value_name = "DURATION")]
    pub poll: Duration,
    /// The most runs of one tenant driven at once across every process on the store (give every
    /// process the same value); the others wait in the queue while other tenants' runs go first
    #[arg(long, value_name = "N")]
    pub max_running_per_tenant: Option<u32>,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Where runs' callbacks may go, and the secret they are signed with.
#[derive(Args, Clone)]
pub struct WebhookArgs {
    /// Hosts a run's `callback_url` may name, comma-separated, as a tool's network grant names
    /// them (`hooks.example.com`, `https://hooks.example.com:8443`; a loopback or private
    /// address only by its IP). Without it, a run with a callback is refused
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub webhook_allow: Vec<String>,
    /// The Standard Webhooks secret deliveries are signed with (`whsec_` and base64); set it in
    /// the environment rather than here, where `ps` would show it
    #[arg(long, env = "REAGENT_WEBHOOK_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub webhook_secret: Option<String>,
}

impl WebhookArgs {
    fn webhooks(&self) -> Result<Webhooks, ExitCode> {
        Webhooks::new(&self.webhook_allow, self.webhook_secret.as_deref()).map_err(|e| fail(Exit::Usage, &e))
    }
}

impl WorkerArgs {
    /// Takes runs of the `offered` agents only.
    fn worker(&self, offered: &BTreeMap<String, Offered>) -> Worker {
        let queue = Queue { agents: offered.keys().cloned().collect(), per_tenant: self.max_running_per_tenant };
        Worker::new(queue, self.concurrency as usize, self.poll)
    }
}

/// A duration flag's parser that refuses durations below `least`.
fn at_least(least: Duration) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |text| match parse_duration(text)? {
        duration if duration < least => Err(format!("`{text}` is too short; give at least {least:?}")),
        duration => Ok(duration),
    }
}

/// The agents of `--agents DIR`, each checked as `reagent validate` would.
async fn checked_agents(runs: &Runs, agents: &Path) -> Result<BTreeMap<String, Offered>, ExitCode> {
    let offered = match offered_agents(agents) {
        Ok(offered) if offered.is_empty() => {
            return Err(fail(Exit::Usage, &format!("--agents {}: no agent files (*.yaml) in it", agents.display())));
        }
        Ok(offered) => offered,
        Err(e) => return Err(fail(Exit::InvalidAgent, &e)),
    };
    for agent in offered.values() {
        if let Err(e) = runs.validate(&agent.file).await {
            return Err(crate::launch_failure(&e));
        }
    }
    Ok(offered)
}

/// `reagent serve`: the API, and (without `no_worker`) a worker on the same runs.
pub async fn run(runs: Runs, agents: &Path, listen: SocketAddr, no_worker: bool, args: WorkerArgs) -> ExitCode {
    let offered = match checked_agents(&runs, agents).await {
        Ok(offered) => offered,
        Err(code) => return code,
    };
    let worker = (!no_worker).then(|| args.worker(&offered));
    let webhooks = match args.webhooks.webhooks() {
        Ok(webhooks) => webhooks,
        Err(code) => return code,
    };
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
    match serve(runs.with_lease(args.lease), offered, listener, worker, webhooks).await {
        Ok(()) => ExitCode::from(Exit::Success as u8),
        Err(e) => fail(Exit::Internal, &e),
    }
}

/// `reagent worker`: drives runs of the agents in `agents` from the store's queue until SIGTERM,
/// then lets them stop at a turn boundary (resumable by any other process).
pub async fn work(runs: Runs, agents: &Path, args: WorkerArgs) -> ExitCode {
    let offered = match checked_agents(&runs, agents).await {
        Ok(offered) => offered,
        Err(code) => return code,
    };
    let stop = match stop_on_signals() {
        Ok(stop) => stop,
        Err(e) => return fail(Exit::Internal, &e),
    };
    let webhooks = match args.webhooks.webhooks() {
        Ok(webhooks) => webhooks,
        Err(code) => return code,
    };
    let runs = runs.with_lease(args.lease);
    tokio::spawn({
        let (store, stop) = (runs.store().clone(), stop.clone());
        async move { webhooks.deliver(store, stop).await }
    });
    eprintln!(
        "reagent: worker taking runs of {} agent(s), {} at once, lease {:?}",
        offered.len(),
        args.concurrency,
        args.lease
    );
    let mut drained = stop.clone();
    let driver = runs.clone();
    let working = runs.work(args.worker(&offered), stop, move |run| {
        let runs = driver.clone();
        async move {
            let (id, agent) = (run.id.clone(), run.agent.clone());
            eprintln!("reagent: run {id} ({agent}) taken");
            match runs.drive_taken(run, Box::new(|_, _| {}), None).await {
                Ok(Driven { outcome: Some(Ok(RunOutcome::Stopped { stop, .. })), .. }) => {
                    eprintln!("reagent: run {id} ({agent}) stopped: {stop}")
                }
                Ok(driven) => eprintln!("reagent: run {id} ({agent}) {}", driven.run.status),
                Err(e) => eprintln!("reagent: run {id} ({agent}) stopped: {e}"),
            }
        }
    });
    tokio::pin!(working);
    // Until a signal, then at most DRAIN_TIME for the runs to reach a turn boundary.
    tokio::select! {
        () = &mut working => return ExitCode::from(Exit::Success as u8),
        _ = drained.wait_for(|stopping| *stopping) => {}
    }
    if tokio::time::timeout(DRAIN_TIME, working).await.is_err() {
        eprintln!("reagent: runs still going after {DRAIN_TIME:?}; they resume from their last checkpoint elsewhere");
    }
    eprintln!("reagent: drained");
    ExitCode::from(Exit::Success as u8)
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
