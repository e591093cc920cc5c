//! An agent on the `ledger` test component: its replay script appends a line, echoes, appends
//! another, then answers; every side effect is a line in a ledger file a test can count.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::test_component;

/// An agent whose replay script appends `<tag>-1`, echoes, appends `<tag>-2`, then answers.
pub struct LedgerAgent {
    pub dir: tempfile::TempDir,
    pub tag: String,
    calls: [Value; 3],
}

impl LedgerAgent {
    pub fn new(ledger: &Path, tag: &str, wait_ms: u64) -> Self {
        Self::with(ledger, tag, wait_ms, "")
    }

    /// `new`, with `extra` YAML in the tool's entry (e.g. `approval: always`).
    pub fn with(ledger: &Path, tag: &str, wait_ms: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "name: ledger-{tag}\nmodel:\n  backend: replay\n  script: script.yaml\nreasoning: off\ntools:\n  - component: {}\n    grants:\n      dirs:\n        - {{host: {}, guest: /ledger, mode: rw}}\n{extra}",
            test_component("ledger").display(),
            ledger.display()
        );
        std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
        let calls = [
            json!({"name": "append", "arguments": {"line": format!("{tag}-1"), "wait_ms": wait_ms, "wait_after_ms": wait_ms}}),
            json!({"name": "echo", "arguments": {"text": tag, "wait_ms": wait_ms}}),
            json!({"name": "append", "arguments": {"line": format!("{tag}-2"), "wait_ms": wait_ms, "wait_after_ms": wait_ms}}),
        ];
        let mut turns: Vec<String> = calls.iter().map(|call| format!("<tool_call>{call}</tool_call>")).collect();
        turns.push(format!("{tag} is done."));
        std::fs::write(dir.path().join("script.yaml"), json!({ "turns": turns }).to_string()).unwrap();
        LedgerAgent { dir, tag: tag.to_string(), calls }
    }

    /// The conversation an uninterrupted run has when the model answers: the task, each call
    /// and what it returned.
    pub fn conversation(&self) -> Value {
        let mut messages = vec![json!({"role": "user", "content": "keep the ledger"})];
        for (n, call) in self.calls.iter().enumerate() {
            let id = format!("call_{}_1", n + 1);
            let result = match call["name"].as_str() {
                Some("append") => json!({"appended": call["arguments"]["line"]}),
                _ => call["arguments"]["text"].clone(),
            };
            let called = json!({"id": id, "name": call["name"], "arguments": call["arguments"]});
            messages.push(json!({"role": "assistant", "content": "", "tool_calls": [called]}));
            messages.push(json!({"role": "tool", "call_id": id, "content": result}));
        }
        Value::Array(messages)
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }

    /// Writes the agent into `dir` as `ledger-<tag>.yaml` (its script named by its full path), to
    /// be offered by `reagent serve --agents dir`.
    pub fn offer_in(&self, dir: &Path) {
        let yaml = std::fs::read_to_string(self.file()).unwrap();
        let script = self.dir.path().join("script.yaml");
        let yaml = yaml.replace("script: script.yaml", &format!("script: {}", script.display()));
        std::fs::write(dir.join(format!("ledger-{}.yaml", self.tag)), yaml).unwrap();
    }
}
