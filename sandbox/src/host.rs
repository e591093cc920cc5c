use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::PluginPre;
use crate::component::{CallState, ToolComponent};
use crate::error::{LoadError, StartError};
use crate::limits::Limits;

/// How often the engine's epoch advances: the granularity of CPU deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// One wasmtime engine and WASI linker shared by every tool component of a process.
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Sandbox {
    pub fn new() -> Result<Self, StartError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| StartError(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        // WASI 0.2 is linked because Rust's std makes every component import it; what a tool can
        // reach through it is decided per call by the `WasiCtx`, which grants nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| StartError(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone()).map_err(|e| StartError(e.to_string()))?;
        Ok(Sandbox { engine, linker: Arc::new(linker), ticker_stop })
    }

    /// Compiles a component, links it and reads its tool descriptions.
    pub async fn load(&self, path: &Path, limits: Limits) -> Result<ToolComponent, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound { path: path.to_path_buf() },
            _ => LoadError::Unreadable { path: path.to_path_buf(), source },
        })?;
        check_is_component(path, &bytes)?;
        let engine = self.engine.clone();
        // Compiling is seconds of CPU for a large component: keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?
            .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: one_line(&format!("{e:#}")) })?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link { path: path.to_path_buf(), reason: link_reason(&e) })?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| LoadError::Link { path: path.to_path_buf(), reason: one_line(&format!("{e:#}")) })?;
        ToolComponent::describe(&self.engine, pre, limits)
            .await
            .map_err(|reason| LoadError::Describe { path: path.to_path_buf(), reason })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Advances the engine's epoch on a fixed tick so that CPU deadlines fire.
fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    thread::Builder::new()
        .name("reagent-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}

/// Tells the two common mistakes apart before wasmtime reports them in its own terms.
fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];
    let reason = if !bytes.starts_with(MAGIC) {
        "it is not a WebAssembly file: build the tool with `--target wasm32-wasip2`"
    } else if bytes.get(4..8) == Some(CORE_MODULE_VERSION) {
        "it is a core WebAssembly module, not a component: build the tool with `--target wasm32-wasip2`"
    } else {
        return Ok(());
    };
    Err(LoadError::Invalid { path: path.to_path_buf(), reason: reason.to_string() })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A component that imports what the host does not provide (e.g. `wasi:http` while no network is
/// granted) fails here; say so in words a tool author can act on.
fn link_reason(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    if text.contains("matching implementation was not found in the linker") {
        format!("it imports an interface reagent does not provide to tools ({})", one_line(&text))
    } else {
        one_line(&text)
    }
}
