//! One runtime per process: every agent, sub-agent and run launched on it shares one wasmtime
//! engine, one epoch ticker and one pool of instance slots. (Its own test binary, so that the
//! process-wide counters see nothing else.)

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::test_component;
use reagent::agent_loop::RunOutcome;
use reagent::launch::launch;
use reagent::runtime::Runtime;
use reagent::spec::GivenInputs;
use reagent_sandbox::{Sandbox, live_engines};
use serde_json::json;

/// A turn of `count` calls of the hostile component's `spin`, each with its own arguments (the
/// repeat guard refuses identical ones), plus `extra`.
fn spins(count: usize, extra: &str) -> String {
    let calls: String = (0..count)
        .map(|i| format!(r#"<tool_call>{{"name": "spin", "arguments": {{"name": "spin-{i}"}}}}</tool_call>"#))
        .collect();
    format!("{calls}{extra}")
}

/// Writes `NAME.yaml`, a replay agent whose `spin` calls burn a 50 ms CPU budget each: long
/// enough that the calls of all runs are in flight together.
fn write_agent(dir: &Path, name: &str, extra_tools: &str, turns: &[String]) {
    let yaml = format!(
        "name: {name}\ndescription: The {name} agent.\nmodel:\n  backend: replay\n  script: {name}.script.yaml\ntools:\n  - component: {}\n    limits:\n      cpu_time: 50ms\n{extra_tools}",
        test_component("hostile").display()
    );
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
    std::fs::write(dir.join(format!("{name}.script.yaml")), json!({ "turns": turns }).to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_sub_agents_launched_at_once_share_one_engine_ticker_and_slot_pool() {
    let dir = tempfile::tempdir().unwrap();
    // Each lead run: 7 spins and a call of its helper in one turn; the helper spins 8 more.
    write_agent(dir.path(), "helper", "", &[spins(8, ""), "helped".into()]);
    let ask_helper = r#"<tool_call>{"name": "helper", "arguments": {"task": "spin"}}</tool_call>"#;
    write_agent(dir.path(), "lead", "  - agent: helper.yaml\n", &[spins(7, ask_helper), "done".into()]);
    let lead = dir.path().join("lead.yaml");

    let runtime = Runtime::with_sandbox(Sandbox::with_cache(None).unwrap());
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut most = (0, 0);
            while running.load(Ordering::SeqCst) {
                let (engines, tickers) = live_engines();
                most = (most.0.max(engines), most.1.max(tickers));
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            most
        })
    };
    // 20 runs × (7 + 8) concurrent calls: 300 calls wanting an instance at once.
    let runs: Vec<_> = (0..20)
        .map(|_| {
            let (runtime, lead) = (runtime.clone(), lead.clone());
            tokio::spawn(async move {
                let (_, agent) = launch(&runtime, &lead, &GivenInputs::default()).await.expect("launch");
                agent.run("spin a while", &mut |_: &reagent::events::Event| {}).await.expect("run")
            })
        })
        .collect();
    for run in runs {
        let outcome = run.await.unwrap();
        assert!(matches!(&outcome, RunOutcome::Answered { answer, .. } if answer == "done"), "{outcome:?}");
    }
    running.store(false, Ordering::SeqCst);
    assert_eq!(watcher.await.unwrap(), (1, 1), "at most one engine and one epoch ticker were ever alive");
    assert_eq!(live_engines(), (1, 1));
    // The 300 calls of 40 agents shared one pool: it held them to its slots, and the calls beyond
    // waited (a run alone never has more than 15 calls in flight).
    let (slots, peak) = (runtime.sandbox().instance_slots(), runtime.sandbox().peak_instances());
    assert!(peak > 15 && peak <= slots, "at most {peak} calls held slots at once");
    assert!(runtime.sandbox().slot_waits() > 0, "calls waited for the {slots} slots");
    drop(runtime);
}
