use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::PluginPre;
use crate::bindings::exports::reagent::tool::tools as wit;
use crate::description::{ToolDescription, parse_descriptions};
use crate::error::{ErrorKind, ToolError};
use crate::host::EPOCH_TICK;
use crate::limits::{Limits, MemoryCap};

/// The store data of one call.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A loaded component: compiled, linked, its tools known. Cheap to call many times.
pub struct ToolComponent {
    engine: Engine,
    pre: PluginPre<CallState>,
    tools: Vec<ToolDescription>,
    limits: Limits,
}

/// What one call produced.
#[derive(Debug)]
pub struct CallOutput {
    pub result: Result<Value, ToolError>,
    /// The guest's stdout then stderr, up to the log limit each.
    pub log: String,
    pub duration: Duration,
}

impl ToolComponent {
    pub(crate) async fn describe(engine: &Engine, pre: PluginPre<CallState>, limits: Limits) -> Result<Self, String> {
        let mut component = ToolComponent { engine: engine.clone(), pre, tools: Vec::new(), limits };
        let (json, _log) = component.invoke(Export::Describe).await;
        component.tools = parse_descriptions(&json.map_err(|e| e.to_string())?)?;
        Ok(component)
    }

    pub fn tools(&self) -> &[ToolDescription] {
        &self.tools
    }

    /// Calls `tool` with `arguments` (a JSON object as text) in a fresh instance.
    pub async fn call(&self, tool: &str, arguments: &str) -> CallOutput {
        let started = Instant::now();
        let (outcome, log) = self.invoke(Export::Call { tool, arguments }).await;
        let result = outcome.and_then(|json| {
            serde_json::from_str(&json)
                .map_err(|e| ToolError::new(ErrorKind::BadResult, format!("the tool returned invalid JSON: {e}")))
        });
        CallOutput { result, log, duration: started.elapsed() }
    }

    /// Instantiates the component in a fresh store under the limits and runs one export.
    async fn invoke(&self, export: Export<'_>) -> (Result<String, ToolError>, String) {
        let stdout = MemoryOutputPipe::new(self.limits.log_bytes);
        let stderr = MemoryOutputPipe::new(self.limits.log_bytes);
        // Nothing granted: no preopens, no env, no args, no network, no stdin.
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let state = CallState { wasi, table: ResourceTable::new(), memory: MemoryCap::new(self.limits.memory_bytes) };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.set_epoch_deadline(deadline_ticks(self.limits.cpu_time));

        let outcome = match self.pre.instantiate_async(&mut store).await {
            Ok(plugin) => {
                let tools = plugin.reagent_tool_tools();
                match export {
                    Export::Describe => tools.call_describe(&mut store).await.map(Ok),
                    Export::Call { tool, arguments } => tools.call_call(&mut store, tool, arguments).await,
                }
            }
            Err(e) => Err(e),
        };
        let result = match outcome {
            Ok(Ok(json)) => Ok(json),
            Ok(Err(error)) => Err(ToolError::new(guest_kind(error.kind), error.message)),
            Err(trap) => Err(classify_trap(&trap, store.data().memory.refused, self.limits)),
        };
        (result, captured_log(&stdout, &stderr))
    }
}

enum Export<'a> {
    Describe,
    Call { tool: &'a str, arguments: &'a str },
}

fn deadline_ticks(cpu_time: Duration) -> u64 {
    (cpu_time.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

fn guest_kind(kind: wit::ErrorKind) -> ErrorKind {
    match kind {
        wit::ErrorKind::InvalidArguments => ErrorKind::InvalidArguments,
        wit::ErrorKind::UnknownTool => ErrorKind::UnknownTool,
        wit::ErrorKind::NotFound => ErrorKind::NotFound,
        wit::ErrorKind::Denied => ErrorKind::Denied,
        wit::ErrorKind::Failed => ErrorKind::Failed,
    }
}

fn classify_trap(error: &wasmtime::Error, memory_refused: bool, limits: Limits) -> ToolError {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return ToolError::new(ErrorKind::Timeout, format!("the tool ran past its CPU limit of {:?}", limits.cpu_time));
    }
    if memory_refused {
        return ToolError::new(
            ErrorKind::Memory,
            format!("the tool tried to use more than its memory limit of {} MiB", limits.memory_bytes >> 20),
        );
    }
    ToolError::new(ErrorKind::Trap, format!("the tool crashed: {}", first_line(&format!("{error:#}"))))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn captured_log(stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> String {
    let mut log = String::from_utf8_lossy(&stdout.contents()).into_owned();
    log.push_str(&String::from_utf8_lossy(&stderr.contents()));
    log
}
