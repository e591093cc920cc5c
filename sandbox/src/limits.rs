use std::time::Duration;

/// What one call may use. Every call gets a fresh instance under these limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes, across the instance's memories.
    pub memory_bytes: usize,
    /// CPU time the guest may run before it is interrupted.
    pub cpu_time: Duration,
    /// Bytes of stdout and of stderr kept as the call's log.
    pub log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 64 << 20, cpu_time: Duration::from_secs(5), log_bytes: 64 << 10 }
    }
}

/// Caps linear-memory growth and remembers whether it refused, so that the resulting trap can be
/// reported as `memory` rather than a generic trap.
pub(crate) struct MemoryCap {
    max_bytes: usize,
    pub(crate) refused: bool,
}

/// Tables hold function references; a component needs few. The cap stops table-growth bombs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap { max_bytes, refused: false }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
