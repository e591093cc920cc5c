//! The `openai` backend against real servers on loopback: llama.cpp's OpenAI-compatible server
//! (llama-cpp-python, installed by scripts/test.sh) serving the default GGUF for the round trip,
//! and a plain HTTP server for the refusals a client must handle.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http_server::TestServer;
use common::*;
use reagent::model::catalog;
use serde_json::json;

/// llama.cpp's server on a free loopback port, killed when dropped.
struct LlamaServer {
    child: Child,
    port: u16,
}

impl LlamaServer {
    fn start(model: &std::path::Path) -> Self {
        let python = std::env::var("REAGENT_LLAMA_PYTHON").expect(
            "REAGENT_LLAMA_PYTHON is unset: run the tests through scripts/test.sh, which installs llama.cpp's server",
        );
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--host", "127.0.0.1", "--n_ctx", "4096", "--model_alias", "qwen"])
            .args(["--port", &port.to_string(), "--model"])
            .arg(model)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama_cpp.server");
        let server = LlamaServer { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(120), "llama.cpp's server did not start in 120 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_tool_call_round_trips_through_llama_cpps_openai_server() {
    let model =
        catalog::find(catalog::DEFAULT_MODEL).unwrap().pulled().expect("the default model: run scripts/setup.sh");
    let server = LlamaServer::start(&model);
    let yaml = format!(
        "name: calculator\nmodel:\n  backend: openai\n  url: http://127.0.0.1:{}/v1\n  name: qwen\n  max_tokens: 200\n\
         instructions: You are a careful calculator. Never compute in your head; call the calc tool, then answer with the result.\n\
         tools:\n  - component: {}\nlimits:\n  max_steps: 4\n",
        server.port,
        calc_component().display()
    );
    let agent = TestAgent::from_files(&yaml, &[]);
    let (code, events, err) = reagent_json(&["run", "--json", agent.file().to_str().unwrap(), "What is (17*23)+4?"]);
    assert_eq!(code, Some(0), "{err}\n{}", shown(&events));
    let call = &events_of(&events, "tool_call")[0];
    assert_eq!(call["tool"], "calc", "{}", shown(&events));
    assert_eq!(events_of(&events, "tool_result")[0]["result"], json!(395), "{}", shown(&events));
    assert!(events_of(&events, "answer")[0]["text"].as_str().unwrap_or_default().contains("395"), "{}", shown(&events));
    assert!(!events_of(&events, "delta").is_empty(), "the reply was streamed");
}

/// Runs an agent on the `openai` backend against a server that answers every request with
/// `status`; returns the exit code, stderr and how many requests the server saw.
async fn run_against(status: u16, headers: Vec<(String, String)>, extra_yaml: &str) -> (Option<i32>, String, usize) {
    let body = json!({"error": {"message": "the server says no"}}).to_string();
    let routes = HashMap::from([("/v1/chat/completions".to_string(), (status, headers, body))]);
    let server = TestServer::start(routes).await;
    let yaml =
        format!("name: t\nmodel:\n  backend: openai\n  url: http://{}/v1\n  name: m\n{extra_yaml}", server.address);
    let agent = TestAgent::from_files(&yaml, &[]);
    let file = agent.file();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_reagent"))
            .args(["run"])
            .arg(&file)
            .arg("task")
            .env("REAGENT_TEST_KEY", "sk-wrong")
            .output()
            .expect("run reagent")
    })
    .await
    .expect("join");
    let attempts = server.requests.lock().unwrap().len();
    (output.status.code(), stderr(&output), attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported_with_the_servers_words() {
    let (code, error, attempts) = run_against(503, vec![("retry-after".into(), "0".into())], "  retries: 2\n").await;
    assert_eq!(code, Some(6));
    assert_eq!(attempts, 3, "one try and two retries");
    assert!(error.contains("(503 Service Unavailable): the server says no"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_not_retried_and_names_the_variable() {
    let (code, error, attempts) = run_against(401, vec![], "  api_key_env: REAGENT_TEST_KEY\n").await;
    assert_eq!(code, Some(6));
    assert_eq!(attempts, 1);
    assert!(
        error.contains("(401 Unauthorized): the server says no — check the API key in REAGENT_TEST_KEY"),
        "{error}"
    );
    assert!(!error.contains("sk-wrong"), "the key never appears in errors");
}
