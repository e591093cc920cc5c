//! Crash tests: real `reagent` processes killed with SIGKILL at named points of a run (the
//! process kills itself there, `REAGENT_CRASH_AT`) and at random moments from outside, then
//! driven on from the run store. After every restart: no run is lost, each ends answered or waits
//! in doubt, no side-effect call shows twice in the ledger, and the conversation the model saw is
//! the one an uninterrupted run has.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ledger::LedgerAgent;
use common::*;
use reagent_store::{RunFilter, RunStore, SqliteStore, Status};
use serde_json::{Value, json};

fn reagent_on(db: &Path, args: &[&str], crash_at: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
    command.args(args).env("REAGENT_DB", db).current_dir(repo_root());
    match crash_at {
        Some(point) => command.env("REAGENT_CRASH_AT", point),
        None => command.env_remove("REAGENT_CRASH_AT"),
    };
    command
}

fn output(mut command: Command) -> Output {
    command.output().expect("run reagent")
}

fn killed(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(9)
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger.join("ledger.txt")).unwrap_or_default().lines().map(str::to_string).collect()
}

async fn store(db: &Path) -> SqliteStore {
    SqliteStore::open(db.to_str().unwrap()).await.unwrap()
}

/// The conversation the model saw in its last turn: the messages of the run's last checkpoint.
async fn conversation(db: &Path, id: &str) -> Value {
    let run = store(db).await.get(id).await.unwrap().unwrap();
    run.checkpoint.expect("a checkpoint")["progress"]["messages"].clone()
}

async fn only_run(db: &Path) -> String {
    let runs = store(db).await.list(&RunFilter { limit: 10, ..RunFilter::default() }).await.unwrap();
    assert_eq!(runs.len(), 1, "one run recorded");
    runs[0].id.clone()
}

/// Decides on every call the run is in doubt about as a person would, by looking at the world: a
/// line in the ledger happened (`done`, with the result the tool gives), a missing one did not
/// (`retry`).
fn settle_in_doubt(db: &Path, id: &str, ledger: &Path) {
    let shown = output(reagent_on(db, &["runs", "show", id], None));
    let run: Value = serde_json::from_slice(&shown.stdout).expect("runs show prints JSON");
    let calls = run["waiting"]["in_doubt"].as_array().cloned().unwrap_or_default();
    assert!(!calls.is_empty(), "an in-doubt run names its calls: {run}");
    for call in calls {
        assert_eq!(call["name"], "append", "only the side-effect tool is ever in doubt: {call}");
        let line = call["arguments"]["line"].as_str().unwrap().to_string();
        let call_id = call["id"].as_str().unwrap();
        let decided = if ledger_lines(ledger).contains(&line) {
            let result = json!({"appended": line}).to_string();
            output(reagent_on(db, &["runs", "decide", id, call_id, "done", "--result", &result], None))
        } else {
            output(reagent_on(db, &["runs", "decide", id, call_id, "retry"], None))
        };
        assert_eq!(decided.status.code(), Some(0), "{}", stderr(&decided));
    }
}

/// Drives the run on until it answers, settling doubts on the way.
fn finish(db: &Path, id: &str, ledger: &Path) -> Output {
    for _ in 0..5 {
        let resumed = output(reagent_on(db, &["runs", "resume", id], None));
        match resumed.status.code() {
            Some(14) => settle_in_doubt(db, id, ledger),
            _ => return resumed,
        }
    }
    panic!("run {id} never finished");
}

/// The conversation of an uninterrupted run of an agent tagged `tag`, on its own store and
/// ledger; it is also what `LedgerAgent::conversation` says it is.
async fn uninterrupted(tag: &str) -> Value {
    let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let agent = LedgerAgent::new(ledger.path(), tag, 0);
    let db = db_dir.path().join("runs.db");
    let run = output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], None));
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let seen = conversation(&db, &only_run(&db).await).await;
    assert_eq!(seen, agent.conversation());
    seen
}

#[tokio::test]
async fn a_run_killed_at_each_named_point_ends_answered_with_each_side_effect_once() {
    let expected = uninterrupted("A").await;
    // (crash point, whether the restart finds a side-effect call in doubt)
    let points = [
        ("asking@2", false),       // in the middle of the second model turn
        ("reply@1", false),        // the first model turn answered, its reply not recorded
        ("reply@3", false),        // the third turn, after two calls
        ("call_started@1", true),  // append recorded as started; the tool never ran
        ("call_finished@1", true), // append ran; its result never recorded
        ("call_started@2", false), // echo (pure) started: simply run again
        ("call_finished@3", true), // the second append ran; its result never recorded
        ("checkpoint@2", true),    // append ran; its result waits for this turn boundary's commit
        ("checkpoint@3", false),   // step 2 decided (echo), not committed: its turn is asked again
    ];
    for (point, in_doubt) in points {
        let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = db_dir.path().join("runs.db");
        let agent = LedgerAgent::new(ledger.path(), "A", 0);
        let first = output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], Some(point)));
        assert!(killed(&first), "{point}: the process was killed: {:?} {}", first.status, stderr(&first));
        let id = only_run(&db).await;

        let resumed = output(reagent_on(&db, &["runs", "resume", &id], None));
        let code = resumed.status.code();
        assert_eq!(code == Some(14), in_doubt, "{point}: in doubt or not: {code:?} {}", stderr(&resumed));
        let done = match code {
            Some(14) => {
                settle_in_doubt(&db, &id, ledger.path());
                finish(&db, &id, ledger.path())
            }
            _ => resumed,
        };
        assert_eq!(done.status.code(), Some(0), "{point}: {}", stderr(&done));
        assert_eq!(ledger_lines(ledger.path()), ["A-1", "A-2"], "{point}: each side effect once");
        assert_eq!(conversation(&db, &id).await, expected, "{point}: the model saw what it would have");
        let run = store(&db).await.get(&id).await.unwrap().unwrap();
        assert_eq!((run.status, run.outcome.unwrap()["answer"].clone()), (Status::Answered, json!("A is done.")));
    }
}

#[tokio::test]
async fn a_run_killed_again_while_it_resumes_loses_nothing() {
    let expected = uninterrupted("B").await;
    let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = db_dir.path().join("runs.db");
    let agent = LedgerAgent::new(ledger.path(), "B", 0);
    let first =
        output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], Some("call_finished@1")));
    assert!(killed(&first));
    let id = only_run(&db).await;
    let during_resume = output(reagent_on(&db, &["runs", "resume", &id], Some("resume")));
    assert!(killed(&during_resume), "{}", stderr(&during_resume));
    let resumed = output(reagent_on(&db, &["runs", "resume", &id], None));
    assert_eq!(resumed.status.code(), Some(14), "still in doubt: {}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains(&format!("reagent runs decide {id} CALL retry|done|skip")),
        "{}",
        stderr(&resumed)
    );
    settle_in_doubt(&db, &id, ledger.path());
    let done = finish(&db, &id, ledger.path());
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(ledger_lines(ledger.path()), ["B-1", "B-2"]);
    assert_eq!(conversation(&db, &id).await, expected);
}

#[tokio::test]
async fn a_retried_call_sees_the_idempotency_key_of_its_first_attempt() {
    let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = db_dir.path().join("runs.db");
    let agent = LedgerAgent::new(ledger.path(), "K", 0);
    // The first append runs; the process dies before its result is recorded.
    let first =
        output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], Some("call_finished@1")));
    assert!(killed(&first));
    let id = only_run(&db).await;
    let resumed = output(reagent_on(&db, &["runs", "resume", &id], None));
    assert_eq!(resumed.status.code(), Some(14), "in doubt: {}", stderr(&resumed));
    // A person says retry: the call runs again, under the same key, so an API that deduplicates
    // by it would not do the thing twice (this ledger does not, and shows both attempts).
    let retried = output(reagent_on(&db, &["runs", "decide", &id, "call_1_1", "retry"], None));
    assert_eq!(retried.status.code(), Some(0), "{}", stderr(&retried));
    let done = output(reagent_on(&db, &["runs", "resume", &id], None));
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));

    let attempts = std::fs::read_to_string(ledger.path().join("attempts.txt")).unwrap();
    let first_call = format!("{id}/call_1_1 K-1");
    let third_call = format!("{id}/call_3_1 K-2");
    assert_eq!(attempts.lines().collect::<Vec<_>>(), [&first_call, &first_call, &third_call], "{attempts}");
    assert_eq!(ledger_lines(ledger.path()), ["K-1", "K-1", "K-2"]);
}

/// A small deterministic generator: the same seed, the same kills.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn two_hundred_random_kills_across_concurrent_runs_lose_nothing_and_repeat_no_side_effect() {
    const KILLS: usize = 200;
    const AT_ONCE: usize = 6;
    let seed = 0x5eed_2026_u64;
    let mut rng = Rng(seed);
    let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = db_dir.path().join("runs.db");
    let s = store(&db).await;

    // AT_ONCE runs are driven at a time, each process killed after a random delay, until KILLS
    // kills have landed; a run that ends makes room for a new one. A run is started by
    // `reagent run`, then driven on by `reagent runs resume`.
    let mut agents: Vec<LedgerAgent> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    let (mut kills, mut doubts) = (0, 0);
    let began = Instant::now();
    while kills < KILLS {
        assert!(began.elapsed() < Duration::from_secs(900), "{kills} kills in 15 minutes (seed {seed:#x})");
        while live.len() < AT_ONCE {
            let wait_ms = 40 + rng.below(120);
            agents.push(LedgerAgent::new(ledger.path(), &format!("R{}", agents.len()), wait_ms));
            live.push(agents.len() - 1);
        }
        let mut batch: Vec<(usize, Child)> = Vec::new();
        for &i in &live {
            let agent = &agents[i];
            let mut command = match run_of(&s, agent).await {
                None => reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], None),
                Some(id) => {
                    if s.get(&id).await.unwrap().unwrap().status == Status::InDoubt {
                        settle_in_doubt(&db, &id, ledger.path());
                        doubts += 1;
                    }
                    reagent_on(&db, &["runs", "resume", &id], None)
                }
            };
            batch.push((i, command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()));
        }
        for (_, child) in &mut batch {
            std::thread::sleep(Duration::from_millis(rng.below(200)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
        }
        for (_, mut child) in batch {
            child.wait().unwrap();
        }
        let mut still = Vec::new();
        for &i in &live {
            let finished = match run_of(&s, &agents[i]).await {
                Some(id) => s.get(&id).await.unwrap().unwrap().status.is_final(),
                None => false,
            };
            if !finished {
                still.push(i);
            }
        }
        live = still;
    }

    // Then every run is driven to its end without kills (a run whose process died before it was
    // recorded was never accepted, and is started now).
    for &i in &live {
        let agent = &agents[i];
        let done = match run_of(&s, agent).await {
            Some(id) => finish(&db, &id, ledger.path()),
            None => output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], None)),
        };
        assert_eq!(done.status.code(), Some(0), "{} (seed {seed:#x})", stderr(&done));
    }
    let runs = s.list(&RunFilter { limit: 10_000, ..RunFilter::default() }).await.unwrap();
    assert_eq!(runs.len(), agents.len(), "one run per agent, none lost");
    let lines = ledger_lines(ledger.path());
    for agent in &agents {
        for n in [1, 2] {
            let line = format!("{}-{n}", agent.tag);
            let count = lines.iter().filter(|l| **l == line).count();
            assert_eq!(count, 1, "{line} appears {count} times (seed {seed:#x}, {kills} kills)");
        }
    }
    for agent in &agents {
        let id = run_of(&s, agent).await.unwrap();
        let run = s.get(&id).await.unwrap().unwrap();
        assert_eq!(run.status, Status::Answered, "run {id} ended {} (seed {seed:#x})", run.status);
        assert_eq!(conversation(&db, &id).await, agent.conversation(), "{}: the model saw the same", agent.tag);
    }
    assert!(doubts > 0, "some kills landed while a side effect was unconfirmed (seed {seed:#x})");
    eprintln!("{kills} kills across {} runs, {doubts} doubts settled (seed {seed:#x})", runs.len());
}

/// The id of `agent`'s run, if one was recorded.
async fn run_of(store: &SqliteStore, agent: &LedgerAgent) -> Option<String> {
    let runs = store.list(&RunFilter { limit: 10_000, ..RunFilter::default() }).await.unwrap();
    let file = agent.file();
    let mut found: Vec<String> = Vec::new();
    for run in runs {
        let full = store.get(&run.id).await.unwrap().unwrap();
        if full.snapshot["file"].as_str() == file.to_str() {
            found.push(run.id);
        }
    }
    assert!(found.len() <= 1, "one run per agent: {found:?}");
    found.pop()
}

#[tokio::test]
async fn two_processes_never_drive_one_run_and_a_resumed_run_keeps_the_agent_it_started_with() {
    let (db_dir, ledger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = db_dir.path().join("runs.db");
    let agent = LedgerAgent::new(ledger.path(), "C", 300);
    let first = output(reagent_on(&db, &["run", agent.file().to_str().unwrap(), "keep the ledger"], Some("reply@3")));
    assert!(killed(&first));
    let id = only_run(&db).await;

    // The agent file and its script are edited while the run is stopped: it goes on under the
    // files it started with, and says so.
    let script = agent.dir.path().join("script.yaml");
    std::fs::write(&script, json!({"turns": ["edited: I answer at once."]}).to_string()).unwrap();
    let driving = reagent_on(&db, &["runs", "resume", &id], None).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = output(reagent_on(&db, &["runs", "resume", &id], None));
    assert_eq!(second.status.code(), Some(16), "{}", stderr(&second));
    assert!(stderr(&second).contains("is being driven by another process"), "{}", stderr(&second));
    let driven = driving.wait_with_output().unwrap();
    assert_eq!(driven.status.code(), Some(0), "{}", stderr(&driven));
    assert!(stderr(&driven).contains("changed since run"), "{}", stderr(&driven));
    assert_eq!(conversation(&db, &id).await, agent.conversation(), "the snapshot's script, not the edited one");
    assert_eq!(ledger_lines(ledger.path()), ["C-1", "C-2"]);
}
