//! The tool contract's versions: a component built against `reagent:tool@0.1.0` (before calls had
//! a context) keeps working, in the sandbox and in an agent; one built against 0.2.0 sees each
//! call's idempotency key.

mod common;

use std::process::Command;

use common::*;
use reagent_sandbox::{Grants, Limits, Sandbox};
use serde_json::{Value, json};

#[tokio::test]
async fn a_component_built_against_the_first_contract_still_runs() {
    let legacy = test_component("legacy");
    let tool = Sandbox::new().unwrap().load(&legacy, Grants::default(), Limits::default()).await.unwrap();
    assert_eq!(tool.contract(), "0.1.0");
    assert_eq!(tool.call("shout", r#"{"text": "quiet"}"#, "any-key").await.result, Ok(json!("QUIET")));

    let inspected =
        Command::new(env!("CARGO_BIN_EXE_reagent")).args(["tool", "inspect"]).arg(&legacy).output().unwrap();
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["contract"], "reagent:tool@0.1.0");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.yaml"),
        format!(
            "name: legacy\nmodel:\n  backend: replay\n  script: script.yaml\nreasoning: off\ntools:\n  - component: {}\n",
            legacy.display()
        ),
    )
    .unwrap();
    let turns = [r#"<tool_call>{"name": "shout", "arguments": {"text": "hi"}}</tool_call>"#, "It says HI."];
    std::fs::write(dir.path().join("script.yaml"), json!({ "turns": turns }).to_string()).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["run", "--json"])
        .arg(dir.path().join("agent.yaml"))
        .arg("shout hi")
        .env("REAGENT_DB", dir.path().join("runs.db"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", String::from_utf8_lossy(&run.stderr));
    let events = String::from_utf8_lossy(&run.stdout);
    assert!(events.contains(r#""result":"HI""#), "{events}");
}

#[test]
fn a_component_built_against_the_current_contract_sees_the_calls_key() {
    let ledger = tempfile::tempdir().unwrap();
    let called = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["tool", "call"])
        .arg(test_component("ledger"))
        .args(["append", r#"{"line": "x"}"#, "--idempotency-key", "order-17"])
        .arg("--dir")
        .arg(format!("{}:/ledger:rw", ledger.path().display()))
        .output()
        .unwrap();
    assert_eq!(called.status.code(), Some(0), "{}", String::from_utf8_lossy(&called.stderr));
    let attempts = std::fs::read_to_string(ledger.path().join("attempts.txt")).unwrap();
    assert_eq!(attempts, "order-17 x\n");

    // Without one, `tool call` makes a new key for each call.
    for _ in 0..2 {
        let called = Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(["tool", "call"])
            .arg(test_component("ledger"))
            .args(["append", r#"{"line": "y"}"#, "--dir"])
            .arg(format!("{}:/ledger:rw", ledger.path().display()))
            .output()
            .unwrap();
        assert_eq!(called.status.code(), Some(0), "{}", String::from_utf8_lossy(&called.stderr));
    }
    let attempts = std::fs::read_to_string(ledger.path().join("attempts.txt")).unwrap();
    let keys: Vec<&str> = attempts.lines().skip(1).map(|line| line.split(' ').next().unwrap()).collect();
    assert!(keys.iter().all(|key| key.starts_with("key_")) && keys[0] != keys[1], "{attempts}");
}
