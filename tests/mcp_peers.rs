//! External MCP servers as an agent's tools, against real third-party servers installed by
//! `scripts/mcp-setup.sh` (pinned): the npm reference servers over stdio and Streamable HTTP, and
//! servers written with the Python `mcp` SDK of each protocol era.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::listening::{Listening, free_port};
use common::{TestAgent, events_of, reagent_command, shown, stderr};
use serde_json::{Value, json};

fn node_bin(name: &str) -> PathBuf {
    let dir = std::env::var("REAGENT_MCP_NODE").expect(
        "REAGENT_MCP_NODE is unset: run the tests through scripts/test.sh, which installs the pinned MCP servers",
    );
    PathBuf::from(dir).join(name)
}

fn python(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is unset: run the tests through scripts/test.sh, which installs the pinned MCP SDKs")
    })
}

fn mcp_agent(entries: &str, turns: &[String]) -> TestAgent {
    let yaml = format!("name: mcp-peers\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n{entries}");
    let turns: Vec<&str> = turns.iter().map(String::as_str).collect();
    TestAgent::from_files(&yaml, &turns)
}

fn call(tool: &str, arguments: Value) -> String {
    format!("<tool_call>{}</tool_call>", json!({"name": tool, "arguments": arguments}))
}

/// Runs the agent with `env` added to reagent's environment: exit code and events.
fn run(agent: &TestAgent, env: &[(&str, &str)]) -> (Option<i32>, Vec<Value>, String) {
    let output = reagent_command()
        .args(["run", "--json", agent.file().to_str().unwrap(), "task"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (output.status.code(), events, stderr(&output))
}

fn everything_stdio(extra: &str) -> String {
    format!("  - mcp: every\n    command: [{}, stdio]\n{extra}", node_bin("mcp-server-everything").display())
}

#[test]
fn server_everything_over_stdio_round_trips_sees_only_granted_variables_and_validates_structured_content() {
    let extra = "    grants:\n      env: [MCP_GRANTED]\n";
    let turns = [
        call("every__echo", json!({"message": "hi"})),
        call("every__get-env", json!({})),
        call("every__get-structured-content", json!({"location": "Chicago"})),
        "done".to_string(),
    ];
    let agent = mcp_agent(&everything_stdio(extra), &turns);
    let (code, events, err) = run(&agent, &[("MCP_GRANTED", "granted"), ("PLANTED_SECRET", "must-not-leak")]);
    assert_eq!(code, Some(0), "{err}\n{}", shown(&events));
    let results = events_of(&events, "tool_result");
    assert_eq!(results[0]["result"], "Echo: hi", "{}", shown(&events));

    let env: Value = serde_json::from_str(results[1]["result"].as_str().unwrap()).unwrap();
    let mut names: Vec<&str> = env.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["MCP_GRANTED", "PATH"], "the server's environment: {env}");

    let weather = &results[2]["result"];
    assert!(weather["temperature"].is_number() && weather["conditions"].is_string(), "{weather}");
    // Annotations from an untrusted server do not make its tools safe.
    assert!(events_of(&events, "tool_call").len() == 3);
}

#[test]
fn a_long_operation_reports_progress_and_is_cancelled_past_its_cap_and_the_run_goes_on() {
    // Progress each second keeps the 2 s silence limit from firing; the 4 s cap ends it.
    let extra = "    timeouts: {call: 2s, max_call: 4s}\n";
    let turns = [
        call("every__trigger-long-running-operation", json!({"duration": 8, "steps": 8})),
        call("every__echo", json!({"message": "after"})),
        "done".to_string(),
    ];
    let agent = mcp_agent(&everything_stdio(extra), &turns);
    let (code, events, err) = run(&agent, &[]);
    assert_eq!(code, Some(0), "{err}\n{}", shown(&events));
    let progress = events_of(&events, "tool_progress");
    assert!(progress.len() >= 2, "{}", shown(&events));
    assert_eq!(progress[0]["total"], 8.0);
    let results = events_of(&events, "tool_result");
    assert_eq!(results[0]["error"]["kind"], "timeout", "{}", shown(&events));
    let message = results[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("ran past `max_call` (4s); it was sent a cancellation"), "{message}");
    assert_eq!(results[1]["result"], "Echo: after");
}

/// `mcp-server-everything streamableHttp` on a free port, stopped on drop.
struct HttpEverything {
    _server: Listening,
    port: u16,
}

impl HttpEverything {
    fn start() -> Self {
        let port = free_port();
        let mut command = Command::new(node_bin("mcp-server-everything"));
        command.arg("streamableHttp").env("PORT", port.to_string()).stdout(Stdio::null());
        HttpEverything { _server: Listening::start(&mut command, "listening on port"), port }
    }
}

#[test]
fn server_everything_over_streamable_http_round_trips_when_its_host_is_granted() {
    let server = HttpEverything::start();
    let entry = format!(
        "  - mcp: remote\n    url: http://127.0.0.1:{0}/mcp\n    grants:\n      http: [\"http://127.0.0.1:{0}\"]\n",
        server.port
    );
    let turns = [call("remote__get-sum", json!({"a": 2, "b": 3.5})), "done".to_string()];
    let agent = mcp_agent(&entry, &turns);
    let (code, events, err) = run(&agent, &[]);
    assert_eq!(code, Some(0), "{err}\n{}", shown(&events));
    assert_eq!(events_of(&events, "tool_result")[0]["result"], "The sum of 2 and 3.5 is 5.5.");
}

#[test]
fn server_filesystems_write_waits_for_approval_under_side_effects() {
    let root = tempfile::tempdir().unwrap();
    let entry = format!(
        "  - mcp: fs\n    command: [{}, {}]\n    approval: side-effects\n    effects: {{list_allowed_directories: pure}}\n",
        node_bin("mcp-server-filesystem").display(),
        root.path().display()
    );
    let target = root.path().join("note.txt");
    let turns = [
        call("fs__list_allowed_directories", json!({})),
        call("fs__write_file", json!({"path": target.display().to_string(), "content": "hello"})),
        "done".to_string(),
    ];
    let agent = mcp_agent(&entry, &turns);
    let (code, events, err) = run(&agent, &[]);
    assert_eq!(code, Some(13), "paused: {err}\n{}", shown(&events));
    let waiting = events_of(&events, "approval_required");
    assert_eq!(waiting.len(), 1, "{}", shown(&events));
    assert_eq!(waiting[0]["tool"], "fs__write_file");
    assert!(!target.exists(), "the write ran without a yes");
}

const PYTHON_SERVER_2: &str = r#"
from mcp.server.mcpserver import MCPServer
app = MCPServer("py2", version="1")
@app.tool()
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
app.run()
"#;

const PYTHON_SERVER_1: &str = r#"
from mcp.server.fastmcp import FastMCP
app = FastMCP("py1")
@app.tool()
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b
app.run()
"#;

/// A Python SDK server of one era: the call works, and the lock file remembers the era.
fn python_server(variable: &str, source: &str, era: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("server.py");
    std::fs::write(&server, source).unwrap();
    let entry = format!("  - mcp: py\n    command: [{}, {}]\n", python(variable), server.display());
    let turns = [call("py__add", json!({"a": 2, "b": 40})), "done".to_string()];
    let agent = mcp_agent(&entry, &turns);
    for attempt in ["first contact (probed)", "second contact (remembered)"] {
        let (code, events, err) = run(&agent, &[]);
        assert_eq!(code, Some(0), "{attempt}: {err}\n{}", shown(&events));
        assert_eq!(events_of(&events, "tool_result")[0]["result"], json!({"result": 42}), "{attempt}");
    }
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(agent.dir.path().join("agent.mcp-lock.json")).unwrap()).unwrap();
    assert_eq!(lock["servers"]["py"]["protocol"], era, "{lock}");
}

#[test]
fn a_python_mcp_2_server_is_spoken_to_in_the_2026_era() {
    python_server("REAGENT_MCP2_PYTHON", PYTHON_SERVER_2, "2026-07-28");
}

#[test]
fn a_python_mcp_1_server_is_spoken_to_in_the_2025_era() {
    python_server("REAGENT_MCP1_PYTHON", PYTHON_SERVER_1, "2025-11-25");
}
