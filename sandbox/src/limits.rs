use std::time::Duration;

/// The most linear memory one call may be granted: the size of a pooling-allocator slot.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// What one call may use. Every call gets a fresh instance under these limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes, across the instance's memories (at most `MAX_MEMORY_BYTES`).
    pub memory_bytes: usize,
    /// CPU time the guest may run before it is interrupted (epoch deadline).
    pub cpu_time: Duration,
    /// Wall-clock time for the whole call, host calls (HTTP, files) included.
    pub wall_time: Duration,
    /// Bytes of JSON result the call may return.
    pub result_bytes: usize,
    /// Bytes of stdout and of stderr the call may write; more is an `output_too_large` error.
    pub log_bytes: usize,
    /// Bytes the call may write to files under its read-write grants (`write_limit`).
    pub write_bytes: u64,
    /// Files, folders and links the call may create under its read-write grants (`file_limit`).
    pub files: u64,
    /// Host handles the call may hold at once: open files and folders, streams, pollables,
    /// HTTP requests and responses, its stdio and preopens included (`handle_limit`).
    pub handles: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            cpu_time: Duration::from_secs(5),
            wall_time: Duration::from_secs(30),
            result_bytes: 1 << 20,
            log_bytes: 64 << 10,
            write_bytes: 64 << 20,
            files: 1_000,
            handles: 64,
        }
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
