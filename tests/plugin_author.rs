//! The plugin author's path, as tools/README.md teaches it: `reagent tool new`, `reagent tool
//! build`, then the component in an agent — all through the CLI.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

#[test]
fn a_scaffolded_tool_builds_inspects_calls_and_runs_in_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let new = reagent(&["tool", "new", "word-count", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(new.status.code(), Some(0), "{}", stderr(&new));
    let again = reagent(&["tool", "new", "word-count", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "refuses to overwrite");
    assert_eq!(reagent(&["tool", "new", "Bad Name"]).status.code(), Some(2));

    let target_dir = test_components_dir();
    let build = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["tool", "build"])
        .arg(dir.path().join("word-count"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert_eq!(build.status.code(), Some(0), "{}", stderr(&build));
    let wasm = stdout(&build).trim().to_string();
    assert!(wasm.ends_with("wasm32-wasip2/release/word_count.wasm"), "{wasm}");

    let inspect = reagent(&["tool", "inspect", &wasm]);
    let described: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(described["tools"][0]["name"], "word_count");
    assert_eq!(described["tools"][0]["effect"], "pure");
    assert_eq!(described["tools"][0]["parameters"]["required"], json!(["text"]));

    let called = reagent(&["tool", "call", &wasm, "word_count", r#"{"text": "one two three"}"#]);
    assert_eq!(called.status.code(), Some(0), "{}", stderr(&called));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&called.stdout).unwrap(), json!({"words": 3}));
    // Checked against the schema as an agent's call would be, before the tool runs...
    let refused = reagent(&["tool", "call", &wasm, "word_count", r#"{"txt": "x"}"#]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("invalid arguments for `word_count`: "), "{message}");
    assert!(message.contains(r#""text" is a required property"#), "{message}");
    assert!(message.contains("--no-validate"), "{message}");
    // ...unless asked not to: then the tool's own check answers.
    let refused = reagent(&["tool", "call", "--no-validate", &wasm, "word_count", r#"{"txt": "x"}"#]);
    assert_eq!(refused.status.code(), Some(7));
    assert!(stderr(&refused).contains("invalid_arguments"), "{}", stderr(&refused));

    let agent = TestAgent::from_files(
        &format!("name: counter\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n  - component: {wasm}\n"),
        &[r#"<tool_call>{"name": "word_count", "arguments": {"text": "the quick brown fox"}}</tool_call>"#, "4 words."],
    );
    let (code, events) = agent.run_json("How many words?");
    assert_eq!(code, Some(0));
    assert_eq!(events_of(&events, "tool_result")[0]["result"], json!({"words": 4}));
}
