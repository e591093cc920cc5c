//! Helpers for the integration tests: agents written into a temporary folder, run through the
//! real `reagent` binary with the real calc component.
#![allow(dead_code)] // each test binary uses a different subset

pub mod http_server;
pub mod ledger;
pub mod listening;
pub mod postgres;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The calc component that `scripts/setup.sh` builds.
pub fn calc_component() -> PathBuf {
    let path = repo_root().join("tools/dist/calc.wasm");
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh (scripts/test.sh does) first", path.display());
    path
}

/// An agent with the calc tool and a replay script of `turns`, in a fresh folder.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
}

impl TestAgent {
    pub fn new(extra_yaml: &str, turns: &[&str]) -> Self {
        let yaml = format!(
            "name: test-agent\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n  - component: {}\n{extra_yaml}",
            calc_component().display()
        );
        Self::from_files(&yaml, turns)
    }

    pub fn from_files(yaml: &str, turns: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("agent.yaml"), yaml).expect("write agent");
        let script = serde_json::json!({ "turns": turns }); // JSON is YAML
        std::fs::write(dir.path().join("script.yaml"), script.to_string()).expect("write script");
        TestAgent { dir }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("agent.yaml")
    }

    pub fn run(&self, task: &str) -> Output {
        reagent(&["run", self.file().to_str().unwrap(), task])
    }

    /// Runs with `--json` and returns the exit code and the events.
    pub fn run_json(&self, task: &str) -> (Option<i32>, Vec<Value>) {
        let (code, events, _) = reagent_json(&["run", "--json", self.file().to_str().unwrap(), task]);
        (code, events)
    }
}

/// Runs `reagent` with `args` (which include `--json`): the exit code, the events, stderr.
pub fn reagent_json(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let output = reagent(args);
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each stdout line is a JSON event"))
        .collect();
    (output.status.code(), events, stderr(&output))
}

pub fn reagent(args: &[&str]) -> Output {
    reagent_command().args(args).output().expect("run reagent")
}

/// `reagent`, run from the repository's root on this test binary's own run store.
pub fn reagent_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
    command.current_dir(repo_root()).env("REAGENT_DB", test_db());
    command
}

/// A run store for this test binary, in a folder removed when it exits.
pub fn test_db() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().join("runs.db")
}

/// The events without the streamed deltas, for readable assertion messages.
pub fn shown(events: &[Value]) -> String {
    let kept: Vec<&Value> = events.iter().filter(|e| e["event"] != "delta").collect();
    serde_json::to_string_pretty(&kept).unwrap_or_default()
}

pub fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Where components built by the tests go: one folder shared by every test run, so their
/// dependencies build once.
pub fn test_components_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("test-components")
}

/// Builds a test component from `tests/components/NAME` for wasm32-wasip2 (once per test binary)
/// and returns the path of its `.wasm`.
pub fn test_component(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let target_dir = test_components_dir();
    let wasm = target_dir.join(format!("wasm32-wasip2/release/{name}.wasm"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let manifest = repo_root().join(format!("tests/components/{name}/Cargo.toml"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--locked", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building test component {name} failed (is the wasm32-wasip2 target installed?)");
        built.push(name.to_string());
    }
    wasm
}
