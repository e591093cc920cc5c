use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::PluginPre;
use crate::cache;
use crate::component::{CallState, ToolComponent};
use crate::error::{LoadError, StartError};
use crate::grants::Grants;
use crate::limits::{Limits, MAX_MEMORY_BYTES};

/// How often the engine's epoch advances: the granularity of CPU deadlines and of yielding.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Calls that may run at once across all tools (pooling-allocator slots); sized for a small
/// machine running many concurrent agents. Calls beyond it wait for a slot.
const CONCURRENT_INSTANCES: u32 = 256;
const DECOMMIT_BATCH: usize = 32;
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const SMALL_KEEP_RESIDENT: usize = 64 << 10;

/// One wasmtime engine and WASI linker shared by every tool component of a process.
pub struct Sandbox {
    shared: Arc<Shared>,
    linker: Arc<Linker<CallState>>,
    cache_dir: Option<PathBuf>,
}

/// What the sandbox and every component it loaded share; alive while any of them is.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    _ticker: EpochTicker,
    /// One permit per pooling-allocator slot: a call holds one from instantiation until its store
    /// is dropped, so that a burst of calls queues instead of failing with "limit reached".
    pub(crate) slots: Semaphore,
}

impl Sandbox {
    /// A sandbox that caches compiled components in the user's cache directory.
    pub fn new() -> Result<Self, StartError> {
        Self::with_cache(cache::default_dir())
    }

    /// A sandbox with compiled components cached in `cache_dir`, or not cached when `None`.
    pub fn with_cache(cache_dir: Option<PathBuf>) -> Result<Self, StartError> {
        let engine = Engine::new(&engine_config()).map_err(|e| StartError(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // What a tool can reach through these interfaces is decided per call by its grants.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| StartError(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|e| StartError(format!("{e:#}")))?;

        let ticker = EpochTicker::start(engine.clone()).map_err(|e| StartError(e.to_string()))?;
        let slots = Semaphore::new(CONCURRENT_INSTANCES as usize);
        Ok(Sandbox { shared: Arc::new(Shared { engine, _ticker: ticker, slots }), linker: Arc::new(linker), cache_dir })
    }

    /// The wasmtime engine tools run on (pooling allocator, epoch interruption). For embedders
    /// that measure or run their own wasmtime code under the same configuration, as the
    /// dispatch benchmark does for its baseline.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Compiles (or loads from the cache) a component, links it and reads its tool descriptions.
    pub async fn load(&self, path: &Path, grants: Grants, limits: Limits) -> Result<ToolComponent, LoadError> {
        check_grants(path, &grants, limits)?;
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound { path: path.to_path_buf() },
            _ => LoadError::Unreadable { path: path.to_path_buf(), source },
        })?;
        check_is_component(path, &bytes)?;
        let engine = self.shared.engine.clone();
        let cache_dir = self.cache_dir.clone();
        // Compiling is seconds of CPU for a large component: keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || cache::compile(&engine, &bytes, cache_dir.as_deref()))
            .await
            .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?
            .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: one_line(&format!("{e:#}")) })?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link { path: path.to_path_buf(), reason: link_reason(&e) })?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| LoadError::Link { path: path.to_path_buf(), reason: one_line(&format!("{e:#}")) })?;
        let imports =
            component.component_type().imports(&self.shared.engine).map(|(name, _)| name.to_string()).collect();
        ToolComponent::describe(self.shared.clone(), pre, imports, grants.into(), limits)
            .await
            .map_err(|reason| LoadError::Describe { path: path.to_path_buf(), reason })
    }
}

/// Advances the engine's epoch on a fixed tick so that CPU deadlines fire, until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new().name("reagent-epoch".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Pooling: instantiation reuses pre-mapped slots with copy-on-write memory images, so a
    // fresh instance per call costs microseconds. Slots are sized down from the defaults (which
    // reserve ~6 GiB of address space each) to the largest memory a call may be granted.
    let mut pool = PoolingAllocationConfig::new();
    // The other totals are per call: a componentize-py tool instantiates 14 core modules (a Rust
    // tool 3), each with its own counter but no reserved memory; memories and tables reserve
    // address space, and tools have one memory and two tables.
    pool.total_component_instances(CONCURRENT_INSTANCES)
        .total_core_instances(CONCURRENT_INSTANCES * 32)
        .total_memories(CONCURRENT_INSTANCES * 2)
        .total_tables(CONCURRENT_INSTANCES * 4)
        .total_stacks(CONCURRENT_INSTANCES)
        .max_memory_size(MAX_MEMORY_BYTES)
        // Returning a slot unmaps its dirty pages, and each unmap flushes the TLB of every core:
        // that was most of a call's cost. Instead, keep the pages a call touches resident and
        // reset only the dirty ones (found with Linux's PAGEMAP_SCAN where the kernel has it);
        // batch whatever must still be unmapped. Rust guests put a 1 MiB stack below their heap,
        // so the window covers both.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(SMALL_KEEP_RESIDENT)
        .async_stack_keep_resident(SMALL_KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn check_grants(path: &Path, grants: &Grants, limits: Limits) -> Result<(), LoadError> {
    let error = |reason: String| LoadError::Grant { path: path.to_path_buf(), reason };
    if limits.memory_bytes > MAX_MEMORY_BYTES {
        return Err(error(format!("a memory limit over {} MiB cannot be granted", MAX_MEMORY_BYTES >> 20)));
    }
    for dir in &grants.dirs {
        if !dir.host.is_dir() {
            return Err(error(format!("granted directory {} does not exist", dir.host.display())));
        }
        if !dir.guest.starts_with('/') {
            return Err(error(format!("guest path `{}` must be absolute, e.g. /data", dir.guest)));
        }
    }
    Ok(())
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

/// A component that imports what the host does not provide fails here; say so in words a tool
/// author can act on.
fn link_reason(error: &wasmtime::Error) -> String {
    let text = one_line(&format!("{error:#}"));
    if text.contains("matching implementation was not found in the linker") {
        format!("it imports an interface reagent does not provide to tools ({text})")
    } else {
        text
    }
}
