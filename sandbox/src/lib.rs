//! `reagent-sandbox`: the wasmtime host for tool components.
//!
//! A tool is a WebAssembly component implementing the `reagent:tool` WIT contract
//! (`tools/wit/tool.wit`). The host links WASI 0.2 with nothing granted: no preopened
//! directories, no network, no environment, no inherited stdio (stdout and stderr are captured
//! into a capped buffer and returned as the call's log). Every call runs in a fresh instance with
//! a CPU deadline (epoch interruption) and a linear-memory cap, so no state leaks between calls
//! and no call can hang or exhaust the host.
//!
//! This crate knows nothing of models or the agent loop: it loads components and calls tools.

mod bindings;
mod component;
mod description;
mod error;
mod host;
mod limits;

pub use component::{CallOutput, ToolComponent};
pub use description::{Effect, ToolDescription};
pub use error::{ErrorKind, LoadError, StartError, ToolError};
pub use host::Sandbox;
pub use limits::Limits;
