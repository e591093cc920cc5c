use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::exports_of::{v0_1_tools, v0_2_tools};
use crate::bindings::{v0_1, v0_2};
use crate::call_state::CallState;
use crate::description::{ToolDescription, parse_descriptions};
use crate::disk::CallDisk;
use crate::engine::{EPOCH_TICK, Shared};
use crate::error::{ErrorKind, ToolError};
use crate::grants::CallGrants;
use crate::limits::{Limits, MemoryCap};
use crate::network::HttpPolicy;

/// A loaded component: compiled, linked, its tools known. Cheap to call many times, concurrently.
pub struct ToolComponent {
    shared: Arc<Shared>,
    contract: Contract,
    imports: Vec<String>,
    tools: Vec<ToolDescription>,
    grants: CallGrants,
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
    pub(crate) async fn describe(
        shared: Arc<Shared>,
        contract: Contract,
        imports: Vec<String>,
        grants: CallGrants,
        limits: Limits,
    ) -> Result<Self, String> {
        let mut component = ToolComponent { shared, contract, imports, tools: Vec::new(), grants, limits };
        let (json, _log) = component.invoke(Export::Describe).await;
        component.tools = parse_descriptions(&json.map_err(|e| e.to_string())?)?;
        Ok(component)
    }

    pub fn tools(&self) -> &[ToolDescription] {
        &self.tools
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The interfaces the component imports, e.g. `wasi:http/outgoing-handler@0.2.4`: what it
    /// could use if granted.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The version of the `reagent:tool` contract the component was built against, e.g. `0.2.0`.
    pub fn contract(&self) -> &'static str {
        match self.contract {
            Contract::V0_1(_) => "0.1.0",
            Contract::V0_2(_) => "0.2.0",
        }
    }

    /// Calls `tool` with `arguments` (a JSON object as text) in a fresh instance. The tool sees
    /// `idempotency_key` if it was built against `reagent:tool@0.2.0` or later.
    pub async fn call(&self, tool: &str, arguments: &str, idempotency_key: &str) -> CallOutput {
        let started = Instant::now();
        let (outcome, log) = self.invoke(Export::Call { tool, arguments, idempotency_key }).await;
        let result = outcome.and_then(|json| {
            serde_json::from_str(&json)
                .map_err(|e| ToolError::new(ErrorKind::BadResult, format!("the tool returned invalid JSON: {e}")))
        });
        CallOutput { result, log, duration: started.elapsed() }
    }

    /// Instantiates the component in a fresh store under the grants and limits, runs one export.
    /// Waiting for an instance slot and handle budget does not count against the limits.
    async fn invoke(&self, export: Export<'_>) -> (Result<String, ToolError>, String) {
        // Declared before the store, so dropped after it: the slot is free only once reset, and
        // the handles only once closed.
        let Some(_permits) = self.shared.permits(self.limits.handles).await else {
            return (Err(ToolError::new(ErrorKind::Failed, "the sandbox has shut down")), String::new());
        };
        let limits = self.limits;
        let stdout = MemoryOutputPipe::new(limits.log_bytes);
        let stderr = MemoryOutputPipe::new(limits.log_bytes);
        let wasi = match self.wasi_context(&stdout, &stderr) {
            Ok(wasi) => wasi,
            Err(error) => return (Err(error), String::new()),
        };
        let http_policy = HttpPolicy::new(self.grants.http.clone());
        let refusals = http_policy.refusals.clone();
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.handles);
        let disk = CallDisk::new(self.grants.dirs.clone(), limits.write_bytes, limits.files);
        let state = CallState {
            wasi,
            http: WasiHttpCtx::new(),
            http_policy,
            table,
            memory: MemoryCap::new(limits.memory_bytes),
            disk: disk.clone(),
            cpu_ticks_left: (limits.cpu_time.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64,
        };
        let mut store = Store::new(&self.shared.engine, state);
        store.limiter(|state| &mut state.memory);
        // Every tick the guest yields to the executor, so a spinning tool never holds a worker
        // thread, and spends one tick of its CPU budget.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| {
            let state = context.data_mut();
            if state.cpu_ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.cpu_ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });

        let run = async {
            match &self.contract {
                Contract::V0_2(pre) => {
                    let tools = pre.instantiate_async(&mut store).await?;
                    let tools = tools.reagent_tool_tools();
                    match export {
                        Export::Describe => tools.call_describe(&mut store).await.map(Ok),
                        Export::Call { tool, arguments, idempotency_key } => {
                            let context = v0_2_tools::CallContext { idempotency_key: idempotency_key.to_string() };
                            let called = tools.call_call(&mut store, tool, arguments, &context).await?;
                            Ok(called.map_err(ToolError::from))
                        }
                    }
                }
                Contract::V0_1(pre) => {
                    let tools = pre.instantiate_async(&mut store).await?;
                    let tools = tools.reagent_tool_tools();
                    match export {
                        Export::Describe => tools.call_describe(&mut store).await.map(Ok),
                        Export::Call { tool, arguments, .. } => {
                            Ok(tools.call_call(&mut store, tool, arguments).await?.map_err(ToolError::from))
                        }
                    }
                }
            }
        };
        // Epochs do not interrupt host calls (a slow HTTP response): bound the whole call too.
        let outcome = tokio::time::timeout(limits.wall_time, run).await;
        let log = captured_log(&stdout, &stderr);
        let refused = refusals.lock().map(|r| r.join("; ")).unwrap_or_default();
        let flooded = stdout.contents().len() >= limits.log_bytes || stderr.contents().len() >= limits.log_bytes;
        let disk_breach = disk.lock().ok().and_then(|disk| disk.breach());

        let result = match outcome {
            Err(_elapsed) => Err(ToolError::new(
                ErrorKind::Timeout,
                format!("the tool ran past its wall-clock limit of {:?}", limits.wall_time),
            )),
            Ok(Ok(Ok(json))) if json.len() > limits.result_bytes => Err(ToolError::new(
                ErrorKind::OutputTooLarge,
                format!("the result is {} bytes, over the limit of {} bytes", json.len(), limits.result_bytes),
            )),
            Ok(Ok(Ok(json))) => Ok(json),
            Ok(_) if !refused.is_empty() => Err(ToolError::new(ErrorKind::Denied, refused)),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(trap)) => {
                Err(disk_breach.unwrap_or_else(|| classify_trap(&trap, store.data().memory.refused, flooded, limits)))
            }
        };
        (result, log)
    }

    /// The WASI context of one call: the granted directories and environment, captured stdio,
    /// and nothing else (no network sockets, no DNS, no stdin, no inherited environment).
    fn wasi_context(&self, stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> Result<WasiCtx, ToolError> {
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        for (name, value) in self.grants.env.iter() {
            builder.env(name, value);
        }
        for dir in self.grants.dirs.iter().map(|counted| &counted.grant) {
            let perms = if dir.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            builder.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
                ToolError::new(ErrorKind::Failed, format!("cannot open granted directory {}: {e}", dir.host.display()))
            })?;
        }
        Ok(builder.build())
    }
}

/// A component linked against the version of the `reagent:tool` contract it was built for.
pub(crate) enum Contract {
    V0_1(v0_1::PluginPre<CallState>),
    V0_2(v0_2::PluginPre<CallState>),
}

enum Export<'a> {
    Describe,
    Call { tool: &'a str, arguments: &'a str, idempotency_key: &'a str },
}

/// A tool's own error, as each contract version reports it (their error types are alike).
macro_rules! from_guest_error {
    ($($wit:ident),+) => {$(
        impl From<$wit::ToolError> for ToolError {
            fn from(error: $wit::ToolError) -> Self {
                let kind = match error.kind {
                    $wit::ErrorKind::InvalidArguments => ErrorKind::InvalidArguments,
                    $wit::ErrorKind::UnknownTool => ErrorKind::UnknownTool,
                    $wit::ErrorKind::NotFound => ErrorKind::NotFound,
                    $wit::ErrorKind::Denied => ErrorKind::Denied,
                    $wit::ErrorKind::Failed => ErrorKind::Failed,
                };
                ToolError::new(kind, error.message)
            }
        }
    )+};
}

from_guest_error!(v0_1_tools, v0_2_tools);

fn classify_trap(error: &wasmtime::Error, memory_refused: bool, flooded: bool, limits: Limits) -> ToolError {
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return ToolError::new(ErrorKind::Timeout, format!("the tool ran past its CPU limit of {:?}", limits.cpu_time));
    }
    if memory_refused {
        return ToolError::new(
            ErrorKind::Memory,
            format!("the tool tried to use more than its memory limit of {} MiB", limits.memory_bytes >> 20),
        );
    }
    let table_full = error.chain().any(|cause| matches!(cause.downcast_ref(), Some(ResourceTableError::Full)));
    if table_full {
        return ToolError::new(
            ErrorKind::HandleLimit,
            format!(
                "the tool held more than {} handles (open files, streams, HTTP resources) at once (limits.max_handles)",
                limits.handles
            ),
        );
    }
    if flooded {
        return ToolError::new(
            ErrorKind::OutputTooLarge,
            format!("the tool wrote more than {} bytes to stdout or stderr", limits.log_bytes),
        );
    }
    // The root cause says what happened (e.g. `wasm trap: ... unreachable`); the outer layers only
    // carry a backtrace. The guest's own words, such as a panic message, are in the log.
    ToolError::new(ErrorKind::Trap, format!("the tool crashed: {} (see its log)", error.root_cause()))
}

fn captured_log(stdout: &MemoryOutputPipe, stderr: &MemoryOutputPipe) -> String {
    let mut log = String::from_utf8_lossy(&stdout.contents()).into_owned();
    log.push_str(&String::from_utf8_lossy(&stderr.contents()));
    log
}
