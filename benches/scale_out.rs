//! Scale-out on PostgreSQL, side by side in one run, each measure printed as one JSON line:
//!
//! - `throughput`: N runs of the calculator agent (replay model, 10 steps, 9 calls of the real
//!   calc component) put in the queue and drained by one `reagent serve` process on SQLite, then
//!   by 1, 2 and 4 `reagent worker` processes on one Postgres (fsync on): completed runs/s of
//!   each, and its ratio to SQLite.
//! - `writes`: what a model step costs Postgres around the 1-worker drain: transactions and rows
//!   per step (`pg_stat_database`), WAL bytes per step (`pg_stat_wal`) and the CPU time of the
//!   server's processes per step; and
//!   `pgbench`'s simple-update transactions/s on the same server: the figures behind the README's
//!   estimate of where one Postgres saturates.
//! - `failover`: a worker killed (SIGKILL) while it drives runs (of 500 in the queue), T times;
//!   for every run it held, the time from the kill until another worker took it (p50, p99), with
//!   `--lease 2s`.
//!
//!     scripts/setup.sh && cargo bench --profile dev --bench scale_out -- --runs 2000 --trials 20

#[path = "shared/args.rs"]
mod args;
#[path = "shared/calc_agent.rs"]
mod calc_agent;
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calc_agent::STEPS_PER_RUN;
use reagent::runs::Runs;
use reagent::runtime::Runtime;
use reagent::spec::GivenInputs;
use reagent_store::{Created, RunStore};
use serde_json::json;

/// The lease of the failover measure.
const LEASE: &str = "2s";

fn main() {
    let arg = args::number;
    let (runs, trials) = (arg("--runs", 2000), arg("--trials", 20).max(1));
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    executor.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let agent = calc_agent::write(dir.path());
        let runtime = Runtime::new().expect("the runtime");
        let sqlite = drain_on_sqlite(&runtime, &agent, dir.path(), runs).await;
        println!("{}", json!({"measure": "throughput", "store": "sqlite", "processes": 1, "runs": runs, "runs_per_s": round(sqlite)}));
        for workers in [1, 2, 4] {
            let url = tokio::task::spawn_blocking(postgres::durable_database).await.unwrap();
            let before = pg_stats(&url);
            let (rate, db_cpu) = drain_on_postgres(&runtime, &agent, &url, workers, runs).await;
            println!(
                "{}",
                json!({"measure": "throughput", "store": "postgres", "processes": workers, "runs": runs,
                       "runs_per_s": round(rate), "vs_sqlite": round(rate / sqlite)})
            );
            if workers == 1 {
                let after = pg_stats(&url);
                let steps = (runs as u64 * STEPS_PER_RUN) as f64;
                let ceiling = pgbench_ceiling(&url);
                println!(
                    "{}",
                    json!({"measure": "writes", "transactions_per_step": round((after.0 - before.0) / steps),
                           "rows_written_per_step": round((after.1 - before.1) / steps),
                           "wal_bytes_per_step": round((after.2 - before.2) / steps),
                           "db_cpu_us_per_step": round(db_cpu * 1e6 / steps),
                           "pgbench_simple_update_tps": round(ceiling)})
                );
            }
        }
        let mut waits = Vec::new();
        for _ in 0..trials {
            let url = tokio::task::spawn_blocking(postgres::durable_database).await.unwrap();
            waits.extend(failover(&runtime, &agent, &url, runs.min(500)).await);
        }
        waits.sort_by(f64::total_cmp);
        let percentile = |p: f64| waits.get(((waits.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
        println!(
            "{}",
            json!({"measure": "failover", "lease_s": 2, "trials": trials, "runs_taken_over": waits.len(),
                   "p50_s": round(percentile(0.5)), "p99_s": round(percentile(0.99))})
        );
    });
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A `reagent` process whose stderr lines are kept with the moment each arrived.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Process {
    fn start(args: &[&str], db: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(args)
            .env("REAGENT_DB", db)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start reagent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (stderr, kept) = (child.stderr.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push((Instant::now(), line));
            }
        });
        Process { child, lines }
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap().clone()
    }

    async fn said(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.lines().iter().any(|(_, l)| l.contains(what)) {
            assert!(Instant::now() < deadline, "reagent never said `{what}`: {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs it took (`reagent: run ID (AGENT) taken`), with when, and runs it ended.
    fn runs(&self) -> (Vec<(Instant, String)>, BTreeSet<String>) {
        let mut taken = Vec::new();
        let mut ended = BTreeSet::new();
        for (at, line) in self.lines() {
            let Some(id) = line.strip_prefix("reagent: run ").and_then(|r| r.split(' ').next()) else { continue };
            match line.ends_with(" taken") {
                true => taken.push((at, id.to_string())),
                false => drop(ended.insert(id.to_string())),
            }
        }
        (taken, ended)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts `count` runs in the queue; the moment the first went in.
async fn submit(runs: &Runs, agent: &Path, count: usize) -> Instant {
    let started = Instant::now();
    let inputs = GivenInputs::default();
    for _ in 0..count {
        let Ok(Created::New(_)) = runs.submit(calc_agent::submission(agent, &inputs)).await else { panic!("submit") };
    }
    started
}

/// Waits until `count` runs have ended, all answered.
async fn drained(store: &dyn RunStore, count: usize) {
    loop {
        let counts = store.counts().await.expect("counts");
        let ended: u64 = counts.iter().filter(|(s, _)| s.is_final()).map(|(_, n)| n).sum();
        if ended as usize >= count {
            let answered = counts.iter().find(|(s, _)| s.as_str() == "answered").map_or(0, |(_, n)| *n);
            assert_eq!(answered as usize, count, "every run answered: {counts:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain_on_sqlite(runtime: &Runtime, agent: &Path, dir: &Path, count: usize) -> f64 {
    let db = dir.join("sqlite.db").to_string_lossy().into_owned();
    let agents = dir.join("agents").to_string_lossy().into_owned();
    let server = Process::start(&["serve", "--agents", &agents, "--listen", "127.0.0.1:0", "--poll", "50ms"], &db);
    server.said("serving").await;
    let store = reagent_store::open(&db).await.expect("the SQLite store");
    let runs = Runs::new(store.clone(), runtime.clone());
    let started = submit(&runs, agent, count).await;
    drained(&*store, count).await;
    count as f64 / started.elapsed().as_secs_f64()
}

fn worker(agents: &str, url: &str, lease: &str) -> Process {
    Process::start(&["worker", "--agents", agents, "--poll", "50ms", "--lease", lease], url)
}

/// Runs/s, and the CPU seconds the server's processes spent meanwhile (read while the workers'
/// connections, and so their backends, are still alive).
async fn drain_on_postgres(runtime: &Runtime, agent: &Path, url: &str, workers: usize, count: usize) -> (f64, f64) {
    let agents = agent.parent().unwrap().to_string_lossy().into_owned();
    let processes: Vec<Process> = (0..workers).map(|_| worker(&agents, url, "30s")).collect();
    for process in &processes {
        process.said("worker taking runs").await;
    }
    let store = reagent_store::open(url).await.expect("the Postgres store");
    let runs = Runs::new(store.clone(), runtime.clone());
    let cpu = postgres_cpu_seconds();
    let started = submit(&runs, agent, count).await;
    drained(&*store, count).await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (rate, postgres_cpu_seconds() - cpu)
}

/// Transactions committed and rows written in the database so far, and WAL bytes written by the
/// server.
fn pg_stats(url: &str) -> (f64, f64, f64) {
    let sql = "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, (SELECT wal_bytes FROM pg_stat_wal) \
               FROM pg_stat_database WHERE datname = current_database()";
    // The statistics collector reports at most every half second.
    std::thread::sleep(Duration::from_millis(700));
    let row = postgres::query(url, sql);
    let mut numbers = row.split('|').map(|n| n.parse::<f64>().unwrap_or(f64::NAN));
    let mut next = || numbers.next().unwrap_or(f64::NAN);
    (next(), next(), next())
}

/// CPU seconds the `postgres` processes of this machine have used so far (live ones: the
/// server and the backends of the pools, which outlive a drain).
fn postgres_cpu_seconds() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(entries) = std::fs::read_dir("/proc") else { return f64::NAN };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state … utime stime: fields 14 and 15, counted after the comm's `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let time = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        total += (time(11) + time(12)) / ticks;
    }
    total
}

/// `pgbench -N` (simple updates, one transaction each) on this server for 10 s, 8 clients.
fn pgbench_ceiling(url: &str) -> f64 {
    let pgbench = postgres::bin_dir().join("pgbench");
    let init = Command::new(&pgbench).args(["-i", "-q", "-s", "10", url]).output().expect("pgbench -i");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let run = Command::new(&pgbench).args(["-N", "-c", "8", "-j", "2", "-T", "10", url]).output().expect("pgbench");
    let out = String::from_utf8_lossy(&run.stdout);
    out.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|rest| rest.split_whitespace().next()?.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Two workers drain `count` runs; one is killed while it drives runs. For each run it held, the
/// seconds until the other took it.
async fn failover(runtime: &Runtime, agent: &Path, url: &str, count: usize) -> Vec<f64> {
    let agents = agent.parent().unwrap().to_string_lossy().into_owned();
    let (victim, survivor) = (worker(&agents, url, LEASE), worker(&agents, url, LEASE));
    victim.said("worker taking runs").await;
    survivor.said("worker taking runs").await;
    let store = reagent_store::open(url).await.expect("the Postgres store");
    let runs = Runs::new(store.clone(), runtime.clone());
    submit(&runs, agent, count).await;
    // Killed once it is under way and drives several runs (its log says which it took and ended).
    let holding = |victim: &Process| {
        let (taken, ended) = victim.runs();
        taken.len() >= 20 && taken.iter().filter(|(_, id)| !ended.contains(id)).count() >= 4
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !holding(&victim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut victim = victim;
    let _ = victim.child.kill();
    let killed = Instant::now();
    let _ = victim.child.wait();
    let (taken, ended) = victim.runs();
    let held: BTreeSet<String> = taken.into_iter().map(|(_, id)| id).filter(|id| !ended.contains(id)).collect();
    drained(&*store, count).await;
    let (taken_over, _) = survivor.runs();
    taken_over
        .into_iter()
        .filter(|(_, id)| held.contains(id))
        .map(|(at, _)| at.saturating_duration_since(killed).as_secs_f64())
        .collect()
}
