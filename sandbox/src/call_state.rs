//! The store data of one call: the contract between a call's `Store` and the WASI host
//! implementations linked into every component.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::disk::SharedDisk;
use crate::limits::MemoryCap;
use crate::network::HttpPolicy;

pub(crate) struct CallState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_policy: HttpPolicy,
    /// Every host handle the guest holds (descriptors, streams, pollables, HTTP resources),
    /// capped at the call's `max_handles`.
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    /// What the call wrote and created under its read-write grants.
    pub(crate) disk: SharedDisk,
    /// Epoch ticks of CPU the guest may still run.
    pub(crate) cpu_ticks_left: u64,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_policy }
    }
}
