//! Scale-out on PostgreSQL, with real processes on a real server: `reagent worker` processes
//! sharing one queue and journal behind a `reagent serve --no-worker` API node. A worker killed
//! mid-run (SIGKILL) or paused past its lease (SIGSTOP) loses no run and repeats no side effect:
//! its runs go on on the others from their journals, a paused worker's late writes are refused,
//! and a client following a run through an API node that restarts resumes with `Last-Event-ID`
//! and misses nothing.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Client, Server, Setup};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long a claim holds here: short, so that takeovers happen within the tests' patience.
const LEASE: &str = "2s";

/// A `reagent worker` process whose stderr goes to a file the test reads; killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(agents: &Path, db: &str, log: PathBuf, lease: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(["worker", "--agents", agents.to_str().unwrap(), "--lease", lease, "--poll", "100ms"])
            .env("REAGENT_DB", db)
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The runs it took, by its log (`reagent: run ID (AGENT) taken`).
    fn taken(&self) -> BTreeSet<String> {
        self.log()
            .lines()
            .filter(|l| l.ends_with(" taken"))
            .filter_map(|l| l.strip_prefix("reagent: run ").and_then(|rest| rest.split(' ').next()))
            .map(str::to_string)
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ledger agents, one per tag, a database, an API node and `workers` workers.
struct Fleet {
    setup: Setup,
    tags: Vec<String>,
    db: String,
    lease: String,
    api: Option<Server>,
    workers: Vec<Worker>,
}

impl Fleet {
    async fn start(tags: usize, wait_ms: u64, workers: usize) -> Self {
        Fleet::start_with_lease(tags, wait_ms, workers, LEASE).await
    }

    async fn start_with_lease(tags: usize, wait_ms: u64, workers: usize, lease: &str) -> Self {
        let tags: Vec<String> = (0..tags).map(|n| format!("t{n}")).collect();
        let agents: Vec<(&str, u64, &str)> = tags.iter().map(|t| (t.as_str(), wait_ms, "")).collect();
        let setup = Setup::new(&agents);
        let db = tokio::task::spawn_blocking(postgres::database).await.unwrap();
        let api = Server::start_with(setup.agents.path(), &db, &["--no-worker"], None);
        let workers = (0..workers)
            .map(|n| Worker::start(setup.agents.path(), &db, setup.db.path().join(format!("worker{n}.log")), lease))
            .collect();
        Fleet { setup, tags, db, lease: lease.to_string(), api: Some(api), workers }
    }

    fn client(&self) -> Client {
        Client::new(self.api.as_ref().unwrap(), None)
    }

    /// Another worker on the same store.
    fn add_worker(&mut self) {
        let log = self.setup.db.path().join(format!("worker{}.log", self.workers.len()));
        self.workers.push(Worker::start(self.setup.agents.path(), &self.db, log, &self.lease));
    }

    /// The index of a worker that has taken runs, once one has.
    async fn busy_worker(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(busy) = self.workers.iter().position(|w| !w.taken().is_empty()) {
                return busy;
            }
            assert!(Instant::now() < deadline, "no worker took a run");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The API node stopped (SIGTERM) and started again.
    fn restart_api(&mut self) {
        self.api = self.api.take().map(Server::restart);
    }

    /// Submits one run of each tag's agent: tag → run id.
    async fn submit_all(&self) -> HashMap<String, String> {
        let client = self.client();
        let mut ids = HashMap::new();
        for tag in &self.tags {
            let (status, run) = client.submit(&format!("ledger-{tag}")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{run}");
            ids.insert(tag.clone(), run["id"].as_str().unwrap().to_string());
        }
        ids
    }

    /// Drives every run to its end as a person would help it: a call in doubt is `done` when its
    /// line is in the ledger, else `retry`. Each run's final state.
    async fn finish_all(&self, ids: &HashMap<String, String>) -> HashMap<String, Value> {
        let client = self.client();
        let mut ended = HashMap::new();
        for (tag, id) in ids {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                assert!(Instant::now() < deadline, "run {id} ({tag}) never finished");
                let run = client.settled(id).await;
                if run["status"] != "in_doubt" {
                    ended.insert(tag.clone(), run);
                    break;
                }
                let decisions: Vec<Value> = run["waiting"]["in_doubt"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|call| {
                        let line = call["arguments"]["line"].as_str().unwrap().to_string();
                        match self.setup.ledger().contains(&line) {
                            true => json!({"call_id": call["id"], "verdict": "done", "result": {"appended": line}}),
                            false => json!({"call_id": call["id"], "verdict": "retry"}),
                        }
                    })
                    .collect();
                let (status, body) =
                    client.post(&format!("/v1/runs/{id}/approvals"), json!({ "decisions": decisions })).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            }
        }
        ended
    }

    /// Every run answered, and the ledger holds each of its lines exactly once.
    fn assert_each_side_effect_once(&self, ended: &HashMap<String, Value>) {
        for (tag, run) in ended {
            assert_eq!(run["status"], "answered", "run of {tag}: {run}");
        }
        let mut lines = self.setup.ledger();
        lines.sort();
        let mut expected: Vec<String> = self.tags.iter().flat_map(|t| [format!("{t}-1"), format!("{t}-2")]).collect();
        expected.sort();
        assert_eq!(lines, expected, "each side effect exactly once: none lost, none twice");
    }
}

/// Waits until `done` holds, or fails saying `what`.
async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_nothing_and_repeats_no_side_effect() {
    let fleet = Fleet::start(12, 150, 3).await;
    let ids = fleet.submit_all().await;
    let victim = fleet.busy_worker().await;
    let victim = &fleet.workers[victim];
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim.signal(libc::SIGKILL);
    let orphans = victim.taken();

    let ended = fleet.finish_all(&ids).await;
    fleet.assert_each_side_effect_once(&ended);
    let finished_by_victim =
        |id: &String| victim.log().lines().any(|l| l.contains(id.as_str()) && !l.ends_with(" taken"));
    let orphaned: Vec<&String> = orphans.iter().filter(|id| !finished_by_victim(id)).collect();
    assert!(!orphaned.is_empty(), "the killed worker died holding runs: {orphans:?}\n{}", victim.log());
    for id in orphaned {
        let taken_over = fleet.workers.iter().any(|w| !std::ptr::eq(w, victim) && w.taken().contains(id));
        assert!(taken_over, "run {id} of the killed worker went on on another");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_is_taken_over_and_its_late_writes_are_refused() {
    let fleet = Fleet::start(4, 700, 2).await;
    let ids = fleet.submit_all().await;
    let busy = fleet.busy_worker().await;
    let (paused, other) = (&fleet.workers[busy], &fleet.workers[1 - busy]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    paused.signal(libc::SIGSTOP);
    let held = paused.taken();
    eventually("the other worker took over every run of the paused one", Duration::from_secs(30), || {
        held.iter().all(|id| other.taken().contains(id))
    })
    .await;
    paused.signal(libc::SIGCONT);
    // Woken, it finds its claims gone: whatever it tries to write for those runs is refused, and
    // it stops driving them without finishing any.
    eventually("the paused worker stopped every run it lost", Duration::from_secs(30), || {
        held.iter().all(|id| paused.log().lines().any(|l| l.contains(id.as_str()) && l.contains(" stopped: ")))
    })
    .await;
    let log = paused.log();
    for id in &held {
        let said: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str()) && !l.ends_with(" taken")).collect();
        assert!(
            said.iter().all(|l| l.contains("another process") || l.contains("lease")),
            "run {id}: the paused worker was refused for a lost claim: {said:?}"
        );
    }
    // Only now, with the paused worker's calls over, does a person look at calls in doubt.
    let ended = fleet.finish_all(&ids).await;
    fleet.assert_each_side_effect_once(&ended);
    let client = fleet.client();
    for id in &held {
        let events = client.events(id, None, None).await;
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "run {id}: events without gaps or repeats");
        // A run in doubt ends a drive (`run_finished`, in_doubt) and goes on after the decision.
        let answered = events.iter().filter(|(_, e)| e["event"] == "run_finished" && e["status"] == "answered");
        assert_eq!(answered.count(), 1, "run {id} answered once, by the worker that held it: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_following_a_run_through_a_restarted_api_node_resumes_and_misses_nothing() {
    let mut fleet = Fleet::start(1, 800, 1).await;
    let ids = fleet.submit_all().await;
    let id = ids["t0"].clone();
    let reader = {
        let (client, id) = (fleet.client(), id.clone());
        tokio::spawn(async move { client.events(&id, None, None).await })
    };
    let client = fleet.client();
    eventually_async(&client, &id).await;
    // An API node follows a run another process drives by looking at the store every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fleet.restart_api();
    let before = reader.await.unwrap();
    assert!(!before.is_empty(), "the stream carried events before the restart");
    let last = before.last().unwrap().0;
    let after = fleet.client().events(&id, Some(last), None).await;
    let seqs: Vec<u64> = before.iter().chain(&after).map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every event once, in order, across the restart");
    assert_eq!(after.last().unwrap().1["event"], "run_finished", "followed to its end: {after:?}");
    assert!(!after.is_empty() && after[0].0 == last + 1);
}

/// Waits until run `id` has committed a few events (the run is under way, the stream flowing).
async fn eventually_async(client: &Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, run) = client.get(&format!("/v1/runs/{id}")).await;
        if run["last_seq"].as_u64().unwrap_or(0) >= 3 {
            return;
        }
        assert!(Instant::now() < deadline, "run {id} never got going: {run}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_restarted_on_the_same_host_takes_its_predecessors_runs_without_waiting_for_leases() {
    // Leases of ten minutes: the runs can only finish in time if the new worker sees at once
    // that the process holding them has exited.
    let mut fleet = Fleet::start_with_lease(3, 300, 1, "10m").await;
    let ids = fleet.submit_all().await;
    let busy = fleet.busy_worker().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.workers[busy].signal(libc::SIGKILL);
    // Reaped, as its supervisor would: until then the process exists, a zombie.
    fleet.workers[busy].child.wait().unwrap();
    let orphans = fleet.workers[busy].taken();
    fleet.add_worker();
    let ended = fleet.finish_all(&ids).await;
    fleet.assert_each_side_effect_once(&ended);
    let successor = fleet.workers.last().unwrap();
    let victim_log = fleet.workers[busy].log();
    let held: Vec<&String> = orphans
        .iter()
        .filter(|id| !victim_log.lines().any(|l| l.contains(id.as_str()) && !l.ends_with(" taken")))
        .collect();
    assert!(!held.is_empty(), "the killed worker died holding runs: {orphans:?}");
    for id in held {
        assert!(successor.taken().contains(id), "run {id} went on on the new worker");
    }
}
