//! `reagent serve`: the HTTP API over durable runs. Handlers stay thin: they check the caller and
//! the request, then ask `runs::Runs` (submit, drive, cancel) or the run store (read), and shape
//! the answer. Runs execute in this process, on its one runtime (a run submitted here at once,
//! others from the store's queue by the worker loop), unless it serves with `--no-worker`: then
//! it is an API node, and `reagent worker` processes on the same store drive the runs. A closed
//! connection never stops a run. SIGTERM (or SIGINT) drains: new work is refused, every run
//! stops at its next turn boundary, resumable, and the next process on the store takes it up.

mod api;
mod auth;
mod hub;
mod metrics;
mod openai;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::{Notify, watch};

use crate::runs::{Runs, Worker};
use crate::spec::{AgentSpec, Approval};
use crate::webhooks::Webhooks;
use reagent_store::Run;

pub use auth::{LOOPBACK_ONLY, needs_keys};

/// The largest request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// How long a drain waits for runs to reach a turn boundary before the process exits anyway
/// (they are resumable from their last checkpoint either way).
pub const DRAIN_TIME: Duration = Duration::from_secs(60);

/// An agent the server offers, by name.
#[derive(Debug, Clone)]
pub struct Offered {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub inputs: Vec<String>,
    /// Some call of it may wait for a person's approval.
    pub approvals: bool,
}

/// Reads the agent files of `dir` (`*.yaml`, `*.yml`), by name. A broken file or two agents of one
/// name is an error: a server must not start with half its agents.
pub fn offered_agents(dir: &Path) -> Result<BTreeMap<String, Offered>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read --agents {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().contains(".replay.")))
        .collect();
    files.sort();
    let mut agents = BTreeMap::new();
    for file in files {
        let file = std::path::absolute(&file).unwrap_or(file);
        let spec = AgentSpec::load(&file).map_err(|e| e.to_string())?;
        let approvals = spec.tools.iter().any(|t| t.approval != Approval::Never);
        let offered = Offered {
            name: spec.name.clone(),
            description: spec.description.clone(),
            inputs: spec.inputs.iter().map(|i| i.name.clone()).collect(),
            approvals,
            file: file.clone(),
        };
        if let Some(earlier) = agents.insert(spec.name.clone(), offered) {
            return Err(format!(
                "{} and {} both name an agent `{}`: names must be unique",
                earlier.file.display(),
                file.display(),
                spec.name
            ));
        }
    }
    Ok(agents)
}

/// Turns true on the process's first SIGTERM or SIGINT.
pub fn stop_on_signals() -> Result<watch::Receiver<bool>, String> {
    let (stop, stopping) = watch::channel(false);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = stop.send(true);
        }
    });
    Ok(stopping)
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    runs: Runs,
    agents: Arc<BTreeMap<String, Offered>>,
    hub: hub::Hub,
    draining: Arc<AtomicBool>,
    /// Runs this process drives now: the drain waits for none.
    driving: Arc<AtomicUsize>,
    /// Where callbacks may go, and how deliveries are signed.
    webhooks: Webhooks,
    /// Nudges this process's worker loop (none on an API node, whose workers poll the store).
    wake: Option<Arc<Notify>>,
    shutdown: watch::Receiver<bool>,
}

impl App {
    /// There may be a run to take (one submitted, decided or asked to cancel here): the worker
    /// loop looks at the queue now rather than at its next poll.
    pub(crate) fn wake_worker(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }

    /// Drives a run this process claimed (from the queue, or at start) until it ends or stops;
    /// events wake its followers.
    fn drive_taken(&self, run: Run) -> impl Future<Output = ()> + Send + use<> {
        let app = self.clone();
        app.driving.fetch_add(1, Ordering::SeqCst);
        async move {
            let id = run.id.clone();
            let listener = app.hub.listener(&id);
            // Errors are the run's own (recorded in the store), or its claim was lost.
            let _ = app.runs.drive_taken(run, listener, None).await;
            app.hub.ended(&id);
            app.driving.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serves the API on `listener` until SIGTERM or SIGINT, then drains. With a `worker`, this
/// process also drives runs: those submitted to it at once, and others from the queue; without,
/// it only records and reads them.
pub async fn serve(
    runs: Runs,
    agents: BTreeMap<String, Offered>,
    listener: tokio::net::TcpListener,
    worker: Option<Worker>,
    webhooks: Webhooks,
) -> Result<(), String> {
    let shutdown = stop_on_signals()?;
    let app = App {
        runs,
        agents: Arc::new(agents),
        hub: hub::Hub::default(),
        draining: Arc::default(),
        driving: Arc::default(),
        wake: worker.as_ref().map(|w| w.wake.clone()),
        webhooks,
        shutdown: shutdown.clone(),
    };
    if let Some(worker) = worker {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let runs = app.runs.clone();
            runs.work(worker, shutdown, move |run| app.drive_taken(run)).await;
        });
    }
    // Every node delivers due webhooks, API nodes too: the outbox is the store's.
    tokio::spawn({
        let (webhooks, store, shutdown) = (app.webhooks.clone(), app.runs.store().clone(), shutdown.clone());
        async move { webhooks.deliver(store, shutdown).await }
    });
    let router: Router =
        api::routes().merge(openai::routes()).layer(DefaultBodyLimit::max(MAX_BODY)).with_state(app.clone());
    let drain = {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
            app.draining.store(true, Ordering::SeqCst);
            app.runs.shut_down();
        }
    };
    let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("reagent: serving {} agent(s) on http://{local}", app.agents.len());
    axum::serve(listener, router).with_graceful_shutdown(drain).await.map_err(|e| e.to_string())?;
    let waited = tokio::time::timeout(DRAIN_TIME, async {
        while app.driving.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if waited.await.is_err() {
        eprintln!("reagent: runs still going after {DRAIN_TIME:?}; they resume from their last checkpoint");
    }
    eprintln!("reagent: drained; unfinished runs resume on the next start");
    Ok(())
}
