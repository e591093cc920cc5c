//! The agent the loop and runs benchmarks drive: a replay model that makes 9 calls of the real
//! `calc` component (nine spellings of one sum, so the repeat guard sees nine different calls),
//! then answers.

use std::path::{Path, PathBuf};

use reagent::runs::Submission;
use reagent::spec::GivenInputs;
use serde_json::json;

pub const EXPRESSIONS: [&str; 9] =
    ["(17*23)+4", "4+(17*23)", "(23*17)+4", "4+(23*17)", "17*23+4", "4+17*23", "23*17+4", "4+23*17", "(17*23+4)"];
pub const STEPS_PER_RUN: u64 = EXPRESSIONS.len() as u64 + 1;
pub const TASK: &str = "What is (17*23)+4?";

/// Writes the 10-turn replay script into `dir` and the agent (named `calculator`) into
/// `dir/agents/`, so that the folder can also be served; returns the agent file.
pub fn write(dir: &Path) -> PathBuf {
    let calc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/dist/calc.wasm");
    assert!(calc.is_file(), "{} is missing: run scripts/setup.sh first", calc.display());
    let mut turns: Vec<String> = EXPRESSIONS
        .iter()
        .map(|e| format!(r#"<tool_call>{{"name": "calc", "arguments": {{"expression": "{e}"}}}}</tool_call>"#))
        .collect();
    turns.push("(17*23)+4 = 395.".into());
    let script = dir.join("script.yaml");
    std::fs::write(&script, json!({ "turns": turns }).to_string()).expect("write the script");
    std::fs::create_dir_all(dir.join("agents")).expect("the agents folder");
    let agent_file = dir.join("agents/calculator.yaml");
    let yaml = format!(
        "name: calculator\nmodel:\n  backend: replay\n  script: {}\ninstructions: |\n  You are a careful calculator. Never compute in your head: call the calc tool for every\n  arithmetic expression, then answer with the result in one short sentence.\ntools:\n  - component: {}\nlimits:\n  max_steps: {STEPS_PER_RUN}\n",
        script.display(),
        calc.display()
    );
    std::fs::write(&agent_file, yaml).expect("write the agent");
    agent_file
}

/// A run of the agent in `file` on `TASK`, as a pipeline submits it.
#[allow(dead_code)] // the loop benchmark runs in memory and submits nothing
pub fn submission<'a>(file: &'a Path, inputs: &'a GivenInputs) -> Submission<'a> {
    Submission { file, task: TASK, inputs, tenant: "", key: None, idempotency: None, callback_url: None, trace: None }
}
