//! OTLP on the wire: `reagent run` exports to a receiver on loopback that decodes the protobuf as
//! a collector would (`tests/fixtures/otel/receiver.py`, PyPI's `opentelemetry-proto`); a Python
//! MCP server that traces itself shows its `tools/call` span in reagent's trace; with the
//! receiver down the run goes on as if nothing were configured.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::listening::{Listening, free_port};
use common::*;
use serde_json::{Value, json};

/// The venv with `opentelemetry-proto` and a traced `mcp` 2.x (scripts/mcp-setup.sh).
fn python() -> String {
    std::env::var("REAGENT_OTEL_PYTHON")
        .expect("REAGENT_OTEL_PYTHON: run scripts/mcp-setup.sh (scripts/test.sh does) and export what it prints")
}

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/otel").join(name)
}

/// The receiver, writing what it decodes to `out`.
struct Receiver {
    port: u16,
    out: PathBuf,
    _server: Listening,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        let (port, out) = (free_port(), dir.join("received.jsonl"));
        let mut command = Command::new(python());
        command.arg(fixture("receiver.py")).arg(&out).args(["--port", &port.to_string()]);
        let server = Listening::start(&mut command, "listening on");
        Receiver { port, out, _server: server }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("a JSON record")).collect()
    }
}

fn spans(records: &[Value], service: &str) -> Vec<Value> {
    records.iter().filter(|r| r["signal"] == "span" && r["service"] == service).cloned().collect()
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let names: Vec<&Value> = spans.iter().map(|s| &s["name"]).collect();
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no span `{name}` among {names:?}"))
}

/// `reagent run --json` with `env` set.
fn run_with(agent: &TestAgent, task: &str, env: &[(&str, &str)]) -> Output {
    let mut command = reagent_command();
    command.args(["run", "--json", agent.file().to_str().unwrap(), task]);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run reagent")
}

const CALC_THEN_ANSWER: [&str; 2] =
    [r#"<tool_call>{"name": "calc", "arguments": {"expression": "(17*23)+4"}}</tool_call>"#, "395"];

#[test]
fn spans_and_metrics_reach_an_otlp_receiver_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let agent = TestAgent::new("", &CALC_THEN_ANSWER);
    let caller = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{}-{}-01", caller.0, caller.1);
    let endpoint = receiver.endpoint();
    let output = run_with(
        &agent,
        "What is (17*23)+4?",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=t1"),
            ("TRACEPARENT", &traceparent),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // The flush at exit has landed everything by the time the process is gone.
    let records = receiver.records();
    assert!(records.iter().all(|r| r["signal"] != "error"), "{records:?}");
    assert!(records.iter().all(|r| r["headers"]["x-tenant"] == "t1"), "OTEL_EXPORTER_OTLP_HEADERS is sent");
    let spans = spans(&records, "reagent");
    let run = named(&spans, "invoke_agent test-agent");
    let (chat, calc) = (named(&spans, "chat script.yaml"), named(&spans, "execute_tool calc"));
    // The run continues the caller's trace ($TRACEPARENT); turns and calls are its children.
    assert_eq!((run["trace_id"].as_str(), run["parent_span_id"].as_str()), (Some(caller.0), Some(caller.1)));
    assert!(spans.iter().all(|s| s["trace_id"] == caller.0), "{spans:?}");
    assert_eq!((chat["parent_span_id"].clone(), chat["kind"].clone()), (run["span_id"].clone(), json!("CLIENT")));
    assert_eq!((calc["parent_span_id"].clone(), calc["kind"].clone()), (run["span_id"].clone(), json!("INTERNAL")));
    assert_eq!(run["kind"], "INTERNAL");
    assert_eq!(run["attributes"]["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(run["attributes"]["reagent.run.status"], "answered");
    assert_eq!(calc["attributes"]["gen_ai.tool.name"], "calc");
    assert_eq!(calc["attributes"]["gen_ai.tool.call.id"], "call_1_1");
    assert!(calc["attributes"].get("gen_ai.tool.call.arguments").is_none(), "no contents by default");
    assert_eq!(spans.iter().filter(|s| s["name"] == "chat script.yaml").count(), 2);
    assert!(spans.iter().all(|s| s["scope"] == "reagent" && s["end"].as_u64() >= s["start"].as_u64()));

    let metrics: Vec<&Value> = records.iter().filter(|r| r["signal"] == "metric").collect();
    let metric = |name: &str| {
        let names: Vec<&Value> = metrics.iter().map(|m| &m["name"]).collect();
        *metrics.iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no metric `{name}` among {names:?}"))
    };
    let count = |name: &str| {
        metric(name)["points"].as_array().unwrap().iter().map(|p| p["count"].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(count("gen_ai.client.operation.duration"), 2);
    assert_eq!(count("gen_ai.execute_tool.duration"), 1);
    assert_eq!(count("gen_ai.invoke_agent.duration"), 1);
    assert_eq!(metric("gen_ai.client.operation.duration")["unit"], "s");
    assert_eq!(metric("gen_ai.execute_tool.duration")["type"], "histogram");
    let runs = &metric("reagent.runs")["points"][0];
    assert_eq!(
        (runs["attributes"]["reagent.run.status"].as_str(), runs["value"].as_u64()),
        (Some("answered"), Some(1))
    );
}

#[test]
fn an_mcp_servers_span_is_a_child_of_reagents_execute_tool_span() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let server = fixture("traced_mcp_server.py");
    let yaml = format!(
        "name: traced\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n  - mcp: traced\n    command: [{}, {}]\n    \
         effects: {{echo: pure}}\n    grants:\n      env: [OTEL_EXPORTER_OTLP_ENDPOINT]\n",
        json!(python()),
        json!(server.display().to_string())
    );
    let turns =
        [r#"<tool_call>{"name": "traced__echo", "arguments": {"text": "hello"}}</tool_call>"#, "It said hello."];
    let agent = TestAgent::from_files(&yaml, &turns);
    let endpoint = receiver.endpoint();
    let output = run_with(&agent, "Echo hello.", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let records = receiver.records();
    let ours = spans(&records, "reagent");
    let call = named(&ours, "execute_tool traced__echo");
    assert_eq!(call["attributes"]["gen_ai.tool.type"], "extension");
    assert_eq!(call["attributes"]["mcp.method.name"], "tools/call");
    assert_eq!(call["attributes"]["network.transport"], "pipe");
    assert!(call["attributes"]["mcp.protocol.version"].as_str().is_some_and(|v| !v.is_empty()), "{call}");
    assert!(call["attributes"]["jsonrpc.request.id"].as_str().is_some(), "{call}");
    let theirs = spans(&records, "traced-mcp-server");
    let served = named(&theirs, "tools/call echo");
    assert_eq!(served["kind"], "SERVER");
    assert_eq!(served["trace_id"], call["trace_id"], "one trace across both processes");
    assert_eq!(served["parent_span_id"], call["span_id"], "the server's span is a child of the call's");
}

#[test]
fn with_the_receiver_down_the_run_goes_on_unchanged() {
    let agent = TestAgent::new("", &CALC_THEN_ANSWER);
    let plain = run_with(&agent, "What is (17*23)+4?", &[]);
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let down = run_with(&agent, "What is (17*23)+4?", &[("OTEL_EXPORTER_OTLP_ENDPOINT", &nobody)]);
    assert_eq!(down.status.code(), plain.status.code(), "{}", stderr(&down));
    assert_eq!(down.status.code(), Some(0));
    let answers = |output: &Output| -> Vec<Value> {
        let events: Vec<Value> = stdout(output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        events
            .iter()
            .filter(|e| e["event"] == "answer" || e["event"] == "tool_result")
            .map(|e| json!({"event": e["event"], "text": e["text"], "result": e["result"]}))
            .collect()
    };
    assert_eq!(answers(&down), answers(&plain), "the same results and answer");
    assert!(stderr(&down).contains("telemetry: exporting spans failed"), "said once: {}", stderr(&down));
    assert!(!stderr(&plain).contains("telemetry"), "nothing configured, nothing said: {}", stderr(&plain));
}

#[test]
fn settings_the_exporter_cannot_honour_are_refused_naming_the_variable() {
    let agent = TestAgent::new("", &CALC_THEN_ANSWER);
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    for (setting, said) in [
        (("OTEL_EXPORTER_OTLP_HEADERS", "api-key"), "OTEL_EXPORTER_OTLP_HEADERS: `api-key` has no `=`"),
        (("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-key=%zz"), "`x-key=%zz` has a malformed %-escape"),
        (
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            "OTEL_EXPORTER_OTLP_COMPRESSION=gzip: reagent sends OTLP uncompressed",
        ),
        (
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector:4318: not an http(s) URL",
        ),
    ] {
        let output = run_with(&agent, "What is (17*23)+4?", &[endpoint, setting]);
        assert_eq!(output.status.code(), Some(2), "{setting:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(said), "{setting:?}: {}", stderr(&output));
        assert!(stdout(&output).is_empty(), "{setting:?}: nothing ran");
    }
}

#[tokio::test]
async fn a_served_run_continues_its_callers_trace_and_metrics_match() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    // The folder holds agent files only: the replay script stays beside the test agent's.
    let agent = TestAgent::new("", &CALC_THEN_ANSWER);
    let script = agent.dir.path().join("script.yaml");
    let yaml = std::fs::read_to_string(agent.file()).unwrap().replace("script.yaml", &path_str(&script));
    std::fs::write(agents.join("agent.yaml"), yaml).unwrap();
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["serve", "--agents", agents.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .env("REAGENT_DB", dir.path().join("runs.db"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .current_dir(repo_root())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "reagent serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let caller = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let submitted: Value = http
        .post(format!("{url}/v1/runs"))
        .header("traceparent", format!("00-{}-{}-01", caller.0, caller.1))
        .json(&json!({"agent": "test-agent", "task": "What is (17*23)+4?"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().expect("a run id").to_string();
    let run: Value = http.get(format!("{url}/v1/runs/{id}?wait=30s")).send().await.unwrap().json().await.unwrap();
    assert_eq!(run["status"], "answered", "{run}");

    // `/metrics` shows the figures OTLP exports, in Prometheus' naming.
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"reagent_runs{status="answered"} 1"#,
        r#"gen_ai_execute_tool_duration_seconds_count{gen_ai_operation_name="execute_tool",gen_ai_tool_name="calc"} 1"#,
        r#"gen_ai_invoke_agent_duration_seconds_count{gen_ai_agent_name="test-agent",gen_ai_operation_name="invoke_agent"} 1"#,
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
        r#"reagent_runs_total{gen_ai_agent_name="test-agent",gen_ai_operation_name="invoke_agent",reagent_run_status="answered"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }

    // SIGTERM drains and flushes: the run's span is under the caller's.
    // SAFETY: sends SIGTERM to the child this test started.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
    let records = receiver.records();
    let ours = spans(&records, "reagent");
    let served = named(&ours, "invoke_agent test-agent");
    assert_eq!((served["trace_id"].as_str(), served["parent_span_id"].as_str()), (Some(caller.0), Some(caller.1)));
    assert_eq!(served["attributes"]["gen_ai.conversation.id"], id.as_str());
}

#[test]
fn a_tool_served_over_mcp_continues_the_clients_trace() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    let agent = TestAgent::new("", &CALC_THEN_ANSWER);
    let caller = ("5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b8");
    let output = Command::new(python())
        .arg(fixture("call_reagent.py"))
        .arg(format!("00-{}-{}-01", caller.0, caller.1))
        .args([env!("CARGO_BIN_EXE_reagent"), "mcp", "serve", agent.file().to_str().unwrap()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("REAGENT_DB", test_db())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let result: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(result["isError"], json!(false), "{result}");

    // The client's stdio transport closes reagent's stdin: it exits, flushing its spans.
    let records = receiver.records();
    let ours = spans(&records, "reagent");
    let served = named(&ours, "tools/call calc");
    assert_eq!(served["kind"], "SERVER");
    assert_eq!((served["trace_id"].as_str(), served["parent_span_id"].as_str()), (Some(caller.0), Some(caller.1)));
    assert_eq!(served["attributes"]["mcp.method.name"], "tools/call");
    assert_eq!(served["attributes"]["gen_ai.tool.name"], "calc");
}
