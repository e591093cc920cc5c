//! `reagent mcp serve`, driven by the official Python `mcp` clients (2.x in both eras, 1.x in the
//! old one) over stdio and Streamable HTTP.

mod common;

use std::path::Path;
use std::process::Command;

use common::listening::{Listening, free_port};
use common::{repo_root, test_component};
use serde_json::{Value, json};

fn python(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is unset: run the tests through scripts/test.sh, which installs the pinned MCP SDKs")
    })
}

/// An agent serving calc, json_query and the ledger component (its `append` waits for approval),
/// whose replay script, run as a tool, calls calc and answers.
fn served_agent(dir: &Path) -> std::path::PathBuf {
    let ledger = dir.join("ledger");
    std::fs::create_dir(&ledger).unwrap();
    let yaml = format!(
        "name: adder\ndescription: Adds numbers with calc.\nmodel:\n  backend: replay\n  script: script.yaml\nreasoning: off\ntools:\n  - component: {root}/tools/dist/calc.wasm\n  - component: {root}/tools/dist/json_query.wasm\n  - component: {ledger_wasm}\n    approval: side-effects\n    grants:\n      dirs:\n        - {{host: {ledger}, guest: /ledger, mode: rw}}\n",
        root = repo_root().display(),
        ledger_wasm = test_component("ledger").display(),
        ledger = ledger.display(),
    );
    let turns = [
        format!("<tool_call>{}</tool_call>", json!({"name": "calc", "arguments": {"expression": "2+3"}})),
        "The sum is 5.".to_string(),
    ];
    std::fs::write(dir.join("agent.yaml"), yaml).unwrap();
    std::fs::write(dir.join("script.yaml"), json!({ "turns": turns }).to_string()).unwrap();
    dir.join("agent.yaml")
}

fn drive(mode: &str, target: &[String]) -> Value {
    let script = repo_root().join("tests/fixtures/mcp/drive_reagent.py");
    let output =
        Command::new(python("REAGENT_MCP2_PYTHON")).arg(script).args([mode, "adder"]).args(target).output().unwrap();
    assert!(output.status.success(), "the client failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// What every era and transport must show.
fn check(report: &Value, era: &str) {
    assert_eq!(report["protocol"], era, "{report}");
    let tools = &report["tools"];
    let calc = &tools["calc"];
    assert_eq!(calc["inputSchema"]["required"], json!(["expression"]), "{calc}");
    assert_eq!(calc["annotations"]["readOnlyHint"], true, "{calc}");
    assert_eq!(calc["annotations"]["destructiveHint"], false, "{calc}");
    let append = &tools["append"]["annotations"];
    assert_eq!(append["destructiveHint"], true, "{append}");
    assert_eq!(append["readOnlyHint"], false, "{append}");
    assert_eq!(tools["adder"]["inputSchema"]["required"], json!(["task"]), "{}", tools["adder"]);

    assert_eq!(text(&report["calc"]), "395", "{}", report["calc"]);
    assert_ne!(report["json_query"]["isError"], true, "{}", report["json_query"]);
    assert!(text(&report["json_query"]).contains("[1,2]"), "{}", report["json_query"]);
    assert_eq!(report["error"]["isError"], true, "{}", report["error"]);
    assert!(text(&report["invalid"]).starts_with("error (invalid_arguments)"), "{}", report["invalid"]);
    assert!(
        report["unknown"]["exception"].as_str().unwrap_or_default().contains("no_such_tool"),
        "{}",
        report["unknown"]
    );
    assert!(report["cancelled_after"].as_f64().unwrap() < 5.0, "{report}");
    assert_eq!(text(&report["after_cancel"]), "still serving");

    assert_eq!(text(&report["agent"]), "The sum is 5.", "{}", report["agent"]);
    let steps: Vec<f64> = report["progress"].as_array().unwrap().iter().map(|p| p[0].as_f64().unwrap()).collect();
    assert_eq!(steps, [1.0, 2.0], "a progress report per step: {report}");
}

#[test]
fn the_python_client_uses_served_tools_over_stdio_in_both_eras() {
    let dir = tempfile::tempdir().unwrap();
    let agent = served_agent(dir.path());
    let command = vec![
        env!("CARGO_BIN_EXE_reagent").to_string(),
        "mcp".into(),
        "serve".into(),
        agent.display().to_string(),
        "--agent-tool".into(),
    ];

    // The old era asks by an elicitation request, the new one by an input-required result the
    // client answers by calling again: either way the side-effect call runs after a person's yes.
    for (mode, era) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let report = drive(mode, &command);
        check(&report, era);
        assert_eq!(report["elicited"].as_array().unwrap().len(), 1, "{report}");
        assert!(report["elicited"][0].as_str().unwrap().contains("`append`"), "{report}");
        assert_eq!(text(&report["append"]), r#"{"appended":"approved"}"#, "{report}");
    }
    let ledger = std::fs::read_to_string(dir.path().join("ledger/ledger.txt")).unwrap();
    assert_eq!(ledger, "approved\napproved\n");
}

/// `reagent mcp serve --http` on a free loopback port, stopped on drop.
struct HttpServe {
    _server: Listening,
    url: String,
}

impl HttpServe {
    fn start(agent: &Path, env: &[(&str, &str)], address: &str) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
        command
            .args(["mcp", "serve", agent.to_str().unwrap(), "--agent-tool", "--http", &format!("{address}:{port}")])
            .envs(env.iter().copied());
        HttpServe {
            _server: Listening::start(&mut command, "serving MCP on"),
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

#[test]
fn the_python_client_uses_served_tools_over_http_in_both_eras_and_bad_hosts_and_origins_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = served_agent(dir.path());
    let server = HttpServe::start(&agent, &[], "127.0.0.1");
    check(&drive("legacy", std::slice::from_ref(&server.url)), "2025-11-25");
    check(&drive("2026-07-28", std::slice::from_ref(&server.url)), "2026-07-28");

    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let post = |headers: &[(&str, &str)]| status(&server.url, headers, &body.to_string());
    assert_eq!(post(&[]), 200);
    assert_eq!(post(&[("host", "evil.example")]), 403, "a rebound Host is refused");
    assert_eq!(post(&[("origin", "http://evil.example")]), 403, "a browser's foreign Origin is refused");
}

#[test]
fn http_beyond_loopback_needs_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = served_agent(dir.path());
    let refused = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["mcp", "serve", agent.to_str().unwrap(), "--http", "0.0.0.0:0"])
        .env_remove("REAGENT_MCP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("set REAGENT_MCP_TOKEN"));

    let server = HttpServe::start(&agent, &[("REAGENT_MCP_TOKEN", "s3cret-token")], "0.0.0.0");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(status(&server.url, &[], ping), 401);
    assert_eq!(status(&server.url, &[("authorization", "Bearer wrong")], ping), 401);
    assert_ne!(status(&server.url, &[("authorization", "Bearer s3cret-token")], ping), 401);
}

/// The status of a POST of `body` to `url` with `headers`.
fn status(url: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap().status().as_u16()
    })
}

const PYTHON_1_CLIENT: &str = r#"
import json, sys, anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main():
    params = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("calc", {"expression": "6*7"})
            # No elicitation callback: this client cannot be asked, so the call must not run.
            append = await session.call_tool("append", {"line": "unasked"})
            print(json.dumps({"protocol": init.protocolVersion, "tools": sorted(t.name for t in tools.tools),
                              "calc": result.content[0].text, "append": [append.isError, append.content[0].text]}))

anyio.run(main)
"#;

#[test]
fn the_python_mcp_1_client_uses_served_tools() {
    let dir = tempfile::tempdir().unwrap();
    let agent = served_agent(dir.path());
    let output = Command::new(python("REAGENT_MCP1_PYTHON"))
        .args(["-c", PYTHON_1_CLIENT, env!("CARGO_BIN_EXE_reagent"), "mcp", "serve", agent.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["protocol"], "2025-11-25");
    assert_eq!(report["tools"], json!(["append", "calc", "echo", "json_query"]));
    assert_eq!(report["calc"], "42");
    assert_eq!(report["append"][0], true, "{report}");
    assert!(report["append"][1].as_str().unwrap().contains("this client cannot be asked"), "{report}");
    assert!(!dir.path().join("ledger/ledger.txt").exists(), "the unapproved append ran");
}
