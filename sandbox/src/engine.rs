//! What every component of a process shares: one wasmtime engine, its epoch ticker, the
//! instance slots of the pooling allocator and the process's budget of host handles. One of
//! these per process keeps the global limits global.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::StartError;
use crate::limits::MAX_MEMORY_BYTES;

/// How often the engine's epoch advances: the granularity of CPU deadlines and of yielding.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Calls that may run at once across all tools (pooling-allocator slots); sized for a small
/// machine running many concurrent agents. Calls beyond it wait for a slot.
pub const INSTANCE_SLOTS: u32 = 256;
const DECOMMIT_BATCH: usize = 32;
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const SMALL_KEEP_RESIDENT: usize = 64 << 10;

/// Descriptors kept for the host itself (model files, sockets, the run store) out of the
/// process's limit; tools share the rest.
const HOST_RESERVED_DESCRIPTORS: u64 = 1024;

static LIVE_ENGINES: AtomicUsize = AtomicUsize::new(0);
static LIVE_TICKERS: AtomicUsize = AtomicUsize::new(0);

/// Engines and epoch ticker threads alive in this process: one each for a process that shares
/// one `Sandbox`, however many agents and runs it hosts.
pub fn live_engines() -> (usize, usize) {
    (LIVE_ENGINES.load(Ordering::SeqCst), LIVE_TICKERS.load(Ordering::SeqCst))
}

/// The engine and what goes with it; alive while the sandbox or any component it loaded is.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    _ticker: EpochTicker,
    /// One permit per pooling-allocator slot: a call holds one from instantiation until its store
    /// is dropped, so that a burst of calls queues instead of failing with "limit reached".
    slots: Semaphore,
    /// The most slots ever held at once.
    slots_peak: AtomicUsize,
    /// Calls that found every slot taken and waited.
    slot_waits: AtomicUsize,
    /// Host handles (file descriptors, streams, HTTP resources) all calls together may hold: a
    /// call reserves its `max_handles` before it starts, so no mix of calls can take the
    /// descriptors the rest of the process needs.
    handles: Semaphore,
    handles_total: usize,
}

/// What a running call holds of the shared pools; given back when dropped (after the store).
pub(crate) struct CallPermits<'a> {
    _slot: SemaphorePermit<'a>,
    _handles: SemaphorePermit<'a>,
}

impl Shared {
    pub(crate) fn start() -> Result<Arc<Self>, StartError> {
        let engine = Engine::new(&engine_config()).map_err(|e| StartError(format!("{e:#}")))?;
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| StartError(e.to_string()))?;
        let handles_total = usize::try_from(raise_descriptor_limit().saturating_sub(HOST_RESERVED_DESCRIPTORS))
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        LIVE_ENGINES.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Shared {
            engine,
            _ticker: ticker,
            slots: Semaphore::new(INSTANCE_SLOTS as usize),
            slots_peak: AtomicUsize::new(0),
            slot_waits: AtomicUsize::new(0),
            handles: Semaphore::new(handles_total),
            handles_total,
        }))
    }

    /// Waits for an instance slot and for `handles` of the handle budget; `None` once closed.
    pub(crate) async fn permits(&self, handles: usize) -> Option<CallPermits<'_>> {
        let handles = u32::try_from(handles.min(self.handles_total)).unwrap_or(u32::MAX);
        let slot = match self.slots.try_acquire() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {
                self.slot_waits.fetch_add(1, Ordering::Relaxed);
                self.slots.acquire().await.ok()?
            }
        };
        let held = INSTANCE_SLOTS as usize - self.slots.available_permits();
        self.slots_peak.fetch_max(held, Ordering::Relaxed);
        let handles = self.handles.acquire_many(handles).await.ok()?;
        Some(CallPermits { _slot: slot, _handles: handles })
    }

    pub(crate) fn slots_peak(&self) -> usize {
        self.slots_peak.load(Ordering::Relaxed)
    }

    pub(crate) fn slot_waits(&self) -> usize {
        self.slot_waits.load(Ordering::Relaxed)
    }

    pub(crate) fn handles_total(&self) -> usize {
        self.handles_total
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        LIVE_ENGINES.fetch_sub(1, Ordering::SeqCst);
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
        LIVE_TICKERS.fetch_add(1, Ordering::SeqCst);
        let spawned = thread::Builder::new().name("reagent-epoch".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
            LIVE_TICKERS.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(error) = spawned {
            LIVE_TICKERS.fetch_sub(1, Ordering::SeqCst);
            return Err(error);
        }
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Raises the soft limit on open descriptors to the hard limit (as Go's runtime does at start)
/// and returns it: the default soft limit of 1024 is too small for a process hosting many runs.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
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
    pool.total_component_instances(INSTANCE_SLOTS)
        .total_core_instances(INSTANCE_SLOTS * 32)
        .total_memories(INSTANCE_SLOTS * 2)
        .total_tables(INSTANCE_SLOTS * 4)
        .total_stacks(INSTANCE_SLOTS)
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
