//! `reagent-sandbox`: the wasmtime host for tool components.
//!
//! A tool is a WebAssembly component implementing the `reagent:tool` WIT contract
//! (`tools/wit/tool.wit`). The host links WASI 0.2 and `wasi:http`, and grants each tool only
//! what its `Grants` name: preopened directories (read-only or read-write), HTTP destinations
//! (checked on every request and redirect hop, by resolved IP), environment variables. Nothing
//! else: no sockets, no DNS, no inherited environment or stdio (stdout and stderr are captured,
//! capped, and returned as the call's log). Every call runs in a fresh instance under `Limits`
//! (memory, CPU, wall clock, result and log size, bytes written and files created under its
//! read-write grants, host handles held), so no state leaks between calls and no call can hang or
//! exhaust the host: a breach is a `ToolError`. What all calls of a process share (the engine,
//! the instance slots, the descriptor budget) is bounded for the process as a whole.
//!
//! This crate knows nothing of models or the agent loop: it loads components and calls tools.

mod bindings;
mod cache;
mod call_state;
mod component;
mod description;
mod disk;
mod engine;
mod error;
mod grants;
mod host;
mod limits;
mod network;

pub use component::{CallOutput, ToolComponent};
pub use description::{Effect, ToolDescription};
pub use engine::live_engines;
pub use error::{ErrorKind, LoadError, StartError, ToolError};
pub use grants::{DirGrant, Grants};
pub use host::Sandbox;
pub use limits::{Limits, MAX_MEMORY_BYTES};
pub use network::{HostGrant, allowed_addresses, restricted_kind};
