//! Tool-call dispatch: reagent's fast path against compiling per call, against wasmtime alone
//! doing what the fast path does (a fresh store and instance per call on reagent's engine, with a
//! minimal host), and against the floor, a raw typed call on an instance made once. Prints p50/p99
//! latency and calls/s.
//!
//! Run after `scripts/setup.sh` (it builds tools/dist/calc.wasm):
//!     cargo bench --profile dev -p reagent-sandbox --bench dispatch

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reagent_sandbox::{Grants, Limits, Sandbox};
use serde_json::json;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod raw {
    wasmtime::component::bindgen!({ path: "../tools/wit", world: "plugin" });
}

mod raw_async {
    wasmtime::component::bindgen!({
        path: "../tools/wit",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

const ARGUMENTS: &str = r#"{"expression": "1+2"}"#;

fn raw_context() -> raw::exports::reagent::tool::tools::CallContext {
    raw::exports::reagent::tool::tools::CallContext { idempotency_key: "bench".into() }
}

fn raw_async_context() -> raw_async::exports::reagent::tool::tools::CallContext {
    raw_async::exports::reagent::tool::tools::CallContext { idempotency_key: "bench".into() }
}

fn main() {
    let calc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/dist/calc.wasm");
    let bytes = std::fs::read(&calc).unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh first", calc.display()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    println!("tool: calc {ARGUMENTS} ({} KB component), {} cores", bytes.len() / 1024, num_cpus());
    let sandbox = Sandbox::with_cache(None).expect("sandbox");
    let (fast, wasmtime_alone) = runtime.block_on(fast_path_and_wasmtime_alone(&sandbox, &calc, &bytes, 20_000));
    report("reagent fast path (validate + instantiate + call + parse)", &fast);
    report("wasmtime alone: fresh store + instance + call, same engine", &wasmtime_alone);
    let compile = compile_per_call(&bytes, 20);
    report("compile + instantiate + call, per call", &compile);
    let floor = raw_typed_call(&bytes, 20_000);
    report("floor: raw typed call on one instance", &floor);
    let p50 = |samples: &[Duration]| percentile(samples, 50).as_secs_f64();
    println!(
        "fast path vs compile-per-call: {:.0}x faster (p50); fast path vs floor: {:.1}x the floor's p50; \
         reagent's own share over wasmtime alone: {:+.1} us (p50)",
        p50(&compile) / p50(&fast),
        p50(&fast) / p50(&floor),
        (p50(&fast) - p50(&wasmtime_alone)) * 1e6,
    );
    let (calls, elapsed) = runtime.block_on(concurrent(&sandbox, &calc, 64, 500));
    println!(
        "64 concurrent callers: {calls} calls in {:.2} s = {:.0} calls/s",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64()
    );
}

/// The fast path and wasmtime alone, alternating in blocks so that both see the same machine:
/// on a shared VM the speed of the host drifts from one second to the next.
async fn fast_path_and_wasmtime_alone(
    sandbox: &Sandbox,
    calc: &std::path::Path,
    bytes: &[u8],
    iterations: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    const BLOCK: usize = 500;
    let component = sandbox.load(calc, Grants::default(), Limits::default()).await.expect("load calc");
    let validator = jsonschema::validator_for(&component.tools()[0].parameters).expect("schema");
    let engine = sandbox.engine();
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link wasi");
    let pre = raw_async::PluginPre::new(
        linker.instantiate_pre(&Component::new(engine, bytes).expect("compile")).expect("link"),
    )
    .expect("exports");

    let (mut fast, mut alone) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
    for block in 0..2 * (iterations / BLOCK + 1) {
        let warming_up = block < 2;
        for _ in 0..BLOCK {
            let started = Instant::now();
            if block % 2 == 0 {
                let arguments: serde_json::Value = serde_json::from_str(ARGUMENTS).expect("json");
                assert!(validator.is_valid(&arguments));
                let output = component.call("calc", &arguments.to_string(), "bench").await;
                assert_eq!(output.result, Ok(json!(3)));
                if !warming_up {
                    fast.push(started.elapsed());
                }
            } else {
                let mut store = new_store(engine);
                // reagent's engine interrupts guests at an epoch deadline; this one never comes.
                store.set_epoch_deadline(u64::MAX / 2);
                let plugin = pre.instantiate_async(&mut store).await.expect("instantiate");
                let result = plugin
                    .reagent_tool_tools()
                    .call_call(&mut store, "calc", ARGUMENTS, &raw_async_context())
                    .await
                    .expect("call");
                assert_eq!(result.ok().as_deref(), Some("3"));
                drop(store);
                if !warming_up {
                    alone.push(started.elapsed());
                }
            }
        }
    }
    (fast, alone)
}

async fn concurrent(sandbox: &Sandbox, calc: &std::path::Path, callers: usize, calls_each: usize) -> (usize, Duration) {
    let component = Arc::new(sandbox.load(calc, Grants::default(), Limits::default()).await.expect("load calc"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let component = component.clone();
            tokio::spawn(async move {
                for _ in 0..calls_each {
                    assert!(component.call("calc", ARGUMENTS, "bench").await.result.is_ok());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (callers * calls_each, started.elapsed())
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn raw_setup() -> (Engine, Linker<State>) {
    let engine = Engine::default();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link wasi");
    (engine, linker)
}

fn new_store(engine: &Engine) -> Store<State> {
    Store::new(engine, State { wasi: WasiCtx::builder().build(), table: ResourceTable::new() })
}

fn compile_per_call(bytes: &[u8], iterations: usize) -> Vec<Duration> {
    let (engine, linker) = raw_setup();
    (0..iterations)
        .map(|_| {
            let started = Instant::now();
            let component = Component::new(&engine, bytes).expect("compile");
            let mut store = new_store(&engine);
            let plugin = raw::Plugin::instantiate(&mut store, &component, &linker).expect("instantiate");
            let result =
                plugin.reagent_tool_tools().call_call(&mut store, "calc", ARGUMENTS, &raw_context()).expect("call");
            assert_eq!(result.ok().as_deref(), Some("3"));
            started.elapsed()
        })
        .collect()
}

fn raw_typed_call(bytes: &[u8], iterations: usize) -> Vec<Duration> {
    let (engine, linker) = raw_setup();
    let component = Component::new(&engine, bytes).expect("compile");
    let mut store = new_store(&engine);
    let plugin = raw::Plugin::instantiate(&mut store, &component, &linker).expect("instantiate");
    let tools = plugin.reagent_tool_tools();
    (0..iterations + 1_000)
        .map(|_| {
            let started = Instant::now();
            let result = tools.call_call(&mut store, "calc", ARGUMENTS, &raw_context()).expect("call");
            assert_eq!(result.ok().as_deref(), Some("3"));
            started.elapsed()
        })
        .skip(1_000)
        .collect()
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn report(name: &str, samples: &[Duration]) {
    let total: Duration = samples.iter().sum();
    println!(
        "{name:58} p50 {:>10.1?}  p99 {:>10.1?}  {:>9.0} calls/s  (n={})",
        percentile(samples, 50),
        percentile(samples, 99),
        samples.len() as f64 / total.as_secs_f64(),
        samples.len()
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
