//! What serving a Wasm tool over MCP costs, side by side in one run: `tools/call` round trips per
//! second to the real calc component through `reagent mcp serve`, over stdio and over Streamable
//! HTTP, in each protocol era, beside the same calls dispatched in process on the agent's
//! toolbox (the baseline); one at a time and 16 in flight. Each measure is one JSON line with its
//! ratio to the baseline.
//!
//!     scripts/setup.sh && cargo bench --profile dev --bench mcp -- --calls 2000

#[path = "shared/args.rs"]
mod args;
#[path = "shared/calc_agent.rs"]
mod calc_agent;

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use reagent::runtime::Runtime;
use reagent::spec::AgentSpec;
use reagent::toolbox::{CallContext, Toolbox, WasmToolbox};
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

/// Calls in flight in the concurrent measure.
const IN_FLIGHT: usize = 16;

fn main() {
    let calls = args::number("--calls", 2000);
    let executor = tokio::runtime::Runtime::new().expect("a tokio runtime");
    executor.block_on(async {
        let dir = tempfile::tempdir().expect("a temp dir");
        let agent = calc_agent::write(dir.path());
        let runtime = Runtime::new().expect("the runtime");
        let spec = AgentSpec::load(&agent).expect("the agent");
        let toolbox = Arc::new(WasmToolbox::load(runtime.sandbox(), &spec.tools).await.expect("the calc component"));
        let direct = |toolbox: Arc<WasmToolbox>| {
            move |n: usize| {
                let toolbox = toolbox.clone();
                async move {
                    let outcome = toolbox.call("calc", &arguments(n), &CallContext::new(format!("key_{n}"))).await;
                    assert_eq!(outcome.result.expect("calc answers"), json!(395));
                }
            }
        };
        let mut baseline = [0.0; 2];
        for (slot, in_flight) in [1, IN_FLIGHT].into_iter().enumerate() {
            baseline[slot] = rate(calls, in_flight, direct(toolbox.clone())).await;
            report("in_process", "-", in_flight, calls, baseline[slot], baseline[slot]);
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut http = serve_http(&agent, port).await;
        for (era, lifecycle) in eras() {
            let (client, _server) = stdio_client(&agent, lifecycle.clone()).await;
            for (slot, in_flight) in [1, IN_FLIGHT].into_iter().enumerate() {
                let per_s = rate(calls, in_flight, through(&client)).await;
                report("stdio", era, in_flight, calls, per_s, baseline[slot]);
            }
            drop(client);
            let url = format!("http://127.0.0.1:{port}/mcp");
            let client =
                ().serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle).await.unwrap();
            for (slot, in_flight) in [1, IN_FLIGHT].into_iter().enumerate() {
                let per_s = rate(calls, in_flight, through(&client)).await;
                report("http", era, in_flight, calls, per_s, baseline[slot]);
            }
        }
        let _ = http.kill().await;
    });
}

fn eras() -> [(&'static str, ClientLifecycleMode); 2] {
    [
        ("2025-11-25", ClientLifecycleMode::Initialize),
        ("2026-07-28", ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }),
    ]
}

/// One of the agent's nine spellings of (17*23)+4 (so no two neighbours are the same call).
fn arguments(n: usize) -> Value {
    json!({"expression": calc_agent::EXPRESSIONS[n % calc_agent::EXPRESSIONS.len()]})
}

/// Calls per second of `call(0..calls)`, `in_flight` at a time.
async fn rate<F, Fut>(calls: usize, in_flight: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Warm up: the sandbox's instance pool, the connection, the server's first call.
    stream::iter(0..IN_FLIGHT).map(&call).buffer_unordered(in_flight).collect::<Vec<()>>().await;
    let started = Instant::now();
    stream::iter(0..calls).map(&call).buffer_unordered(in_flight).collect::<Vec<()>>().await;
    calls as f64 / started.elapsed().as_secs_f64()
}

type Call<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// One `tools/call` of calc through `client`.
fn through<'a>(client: &'a RunningService<RoleClient, ()>) -> impl Fn(usize) -> Call<'a> + 'a {
    move |n| {
        Box::pin(async move {
            let mut params = CallToolRequestParams::new("calc");
            params.arguments = arguments(n).as_object().cloned();
            let result = client.peer().call_tool(params).await.expect("tools/call answers");
            assert_eq!(result.structured_content, None);
            assert_eq!(result.content[0].as_text().map(|t| t.text.as_str()), Some("395"));
        })
    }
}

/// A client of a `reagent mcp serve` process of its own (ended when the returned child drops).
async fn stdio_client(
    agent: &Path,
    lifecycle: ClientLifecycleMode,
) -> (RunningService<RoleClient, ()>, tokio::process::Child) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["mcp", "serve"])
        .arg(agent)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start reagent mcp serve");
    let pipes = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    (().serve_with_lifecycle(pipes, lifecycle).await.expect("the server answers"), child)
}

async fn serve_http(agent: &Path, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["mcp", "serve", "--http", &format!("127.0.0.1:{port}")])
        .arg(agent)
        .kill_on_drop(true)
        .spawn()
        .expect("start reagent mcp serve --http");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child
}

fn report(transport: &str, era: &str, in_flight: usize, calls: usize, per_s: f64, baseline: f64) {
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({"measure": "tools_call", "transport": transport, "era": era, "in_flight": in_flight, "calls": calls,
               "calls_per_s": round(per_s), "vs_in_process": round(per_s / baseline)})
    );
}
