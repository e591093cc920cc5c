//! Durable runs under load, two measurements in one process, each printed as one JSON line:
//!
//! - `journal`: the loop benchmark's run shape (10 model turns: 9 calls of the real calc
//!   component, then the answer, on the replay model), N runs, C at a time, in memory
//!   (`launch`, `Agent::run`) and durable (`Runs::submit`, `Runs::drive` on a SQLite store: every
//!   reply, call and checkpoint committed), alternating for R rounds: the median steps/s of each
//!   and their ratio.
//! - `serve`: `reagent serve` on loopback, S runs submitted at once over HTTP, each followed on
//!   its SSE stream to its end: failed and lost runs, runs/s, p50/p99 submit latency, events/s,
//!   the server's peak RSS.
//!
//!     scripts/setup.sh && cargo bench --profile dev --bench runs -- --runs 2000 --at-once 50 --rounds 5 --served 1000

// As the `reagent` binary allocates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/args.rs"]
mod args;
#[path = "shared/calc_agent.rs"]
mod calc_agent;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use calc_agent::{STEPS_PER_RUN, TASK};
use reagent::events::Event;
use reagent::launch::launch;
use reagent::runs::Runs;
use reagent::runtime::Runtime;
use reagent::spec::GivenInputs;
use reagent_store::{Created, SqliteStore};
use serde_json::{Value, json};

fn main() {
    let arg = args::number;
    let (runs, at_once, served) = (arg("--runs", 2000), arg("--at-once", 50), arg("--served", 1000));
    let rounds = arg("--rounds", 5).max(1);
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    executor.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let agent_file = calc_agent::write(dir.path());
        journal(&agent_file, runs, at_once, rounds, dir.path()).await;
        serve(dir.path(), served).await;
    });
}

async fn journal(agent_file: &Path, runs: usize, at_once: usize, rounds: usize, dir: &Path) {
    let runtime = Runtime::new().expect("the runtime");
    let store = SqliteStore::open(dir.join("journal.db").to_str().unwrap()).await.expect("the store");
    let durable = Runs::new(Arc::new(store), runtime.clone());
    let steps = Arc::new(AtomicU64::new(0));
    let expected = runs as u64 * STEPS_PER_RUN;

    // In memory, then durable, round after round: the same work at the same concurrency, side by
    // side, so that a slower or faster stretch of the machine weighs on both alike.
    let (mut memory_rates, mut journal_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let memory = timed(runs, at_once, {
            let (runtime, file, steps) = (runtime.clone(), agent_file.to_path_buf(), steps.clone());
            move || {
                let (runtime, file, steps) = (runtime.clone(), file.clone(), steps.clone());
                async move {
                    let (_, agent) = launch(&runtime, &file, &GivenInputs::default()).await.expect("launch");
                    let mut sink = |event: &Event| {
                        if let Event::StepStarted { .. } = event {
                            steps.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    agent.run(TASK, &mut sink).await.expect("a run");
                }
            }
        })
        .await;
        let memory_steps = steps.swap(0, Ordering::Relaxed);
        let journalled = timed(runs, at_once, {
            let (durable, file, steps) = (durable.clone(), agent_file.to_path_buf(), steps.clone());
            move || {
                let (durable, file, steps) = (durable.clone(), file.clone(), steps.clone());
                async move {
                    let inputs = GivenInputs::default();
                    let submission = calc_agent::submission(&file, &inputs);
                    let Ok(Created::New(run)) = durable.submit(submission).await else { panic!("submit") };
                    let counted = steps.clone();
                    let listener = Box::new(move |_seq, event: &Event| {
                        if let Event::StepStarted { .. } = event {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    let driven = durable.drive(&run.id, listener, None).await.expect("a drive");
                    assert_eq!(driven.run.status, reagent_store::Status::Answered);
                }
            }
        })
        .await;
        let journal_steps = steps.swap(0, Ordering::Relaxed);
        assert_eq!((memory_steps, journal_steps), (expected, expected), "every run made 10 model turns");
        memory_rates.push(expected as f64 / memory);
        journal_rates.push(expected as f64 / journalled);
    }
    let each_round: Vec<Value> =
        memory_rates.iter().zip(&journal_rates).map(|(m, j)| json!([round(*m), round(*j)])).collect();
    let (memory_rate, journal_rate) = (median(&mut memory_rates), median(&mut journal_rates));
    println!(
        "{}",
        json!({
            "measure": "journal",
            "runs": runs,
            "at_once": at_once,
            "rounds": rounds,
            "steps_per_round": expected,
            "in_memory_steps_per_s": round(memory_rate),
            "journalled_steps_per_s": round(journal_rate),
            "journalled_over_in_memory": (journal_rate / memory_rate * 1000.0).round() / 1000.0,
            "each_round_steps_per_s": each_round,
            "journal": "SQLite (WAL, synchronous=NORMAL; FULL before side-effect calls), every model reply, call and turn boundary committed",
        })
    );
}

/// The middle value (of an odd count; the upper middle of an even one).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `count` jobs made by `job`, `at_once` at a time; the seconds it took.
async fn timed<F, Fut>(count: usize, at_once: usize, job: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use futures::StreamExt;
    let started = Instant::now();
    futures::stream::iter((0..count).map(|_| tokio::spawn(job())))
        .buffer_unordered(at_once)
        .for_each(|done| async move { done.expect("a job") })
        .await;
    started.elapsed().as_secs_f64()
}

async fn serve(dir: &Path, served: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["serve", "--agents", dir.join("agents").to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("REAGENT_DB", dir.join("served.db"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("reagent serve");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(2000).build().unwrap();
    let started = Instant::now();
    let submits: Vec<_> = (0..served)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let response = client
                    .post(format!("{url}/v1/runs"))
                    .json(&json!({"agent": "calculator", "task": TASK}))
                    .send()
                    .await;
                let latency = sent.elapsed();
                let run: Option<Value> = match response {
                    Ok(r) if r.status() == 202 => r.json().await.ok(),
                    _ => None,
                };
                let id = run.and_then(|r| r["id"].as_str().map(str::to_string));
                // Follow it to its end.
                let Some(id) = id else { return (latency, None, 0) };
                let mut stream = client.get(format!("{url}/v1/runs/{id}/events")).send().await.expect("events");
                let (mut events, mut last) = (0u64, String::new());
                while let Ok(Some(chunk)) = stream.chunk().await {
                    let text = String::from_utf8_lossy(&chunk);
                    events += text.matches("\nid: ").count() as u64 + u64::from(text.starts_with("id: "));
                    last.push_str(&text);
                    if last.len() > 4096 {
                        last.drain(..last.len() - 4096);
                    }
                }
                let answered = last.contains("\"status\":\"answered\"");
                (latency, Some(answered), events)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut answered, mut failed, mut lost, mut events) = (0, 0, 0, 0);
    for submit in submits {
        let (latency, outcome, seen) = submit.await.expect("a client task");
        latencies.push(latency);
        events += seen;
        match outcome {
            Some(true) => answered += 1,
            Some(false) => failed += 1,
            None => lost += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kb = std::fs::read_to_string(format!("/proc/{}/status", server.id())).ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    });
    let _ = server.kill();
    let _ = server.wait();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "{}",
        json!({
            "measure": "serve",
            "runs": served,
            "answered": answered,
            "failed": failed,
            "lost": lost,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "runs_per_s": round(served as f64 / seconds),
            "submit_p50_ms": (percentile(0.5) * 10.0).round() / 10.0,
            "submit_p99_ms": (percentile(0.99) * 10.0).round() / 10.0,
            "events": events,
            "events_per_s": round(events as f64 / seconds),
            "server_peak_rss_kb": peak_rss_kb,
            "shape": "all submitted at once over loopback HTTP, each followed on SSE to its end; 10 model turns (replay) and 9 calc calls per run",
        })
    );
    assert_eq!((failed, lost), (0, 0), "every run answered");
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
