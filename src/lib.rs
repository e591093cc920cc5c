//! reagent: a runtime for tool-using AI agents. An agent is a YAML file; every tool is a
//! WebAssembly component run with nothing granted but what the YAML grants.
//!
//! The data flows one way: `spec` → `agent_loop` → (`model` | `toolbox`) → `events`; `launch`
//! builds agents on a shared `runtime::Runtime`.
//! See ARCHITECTURE.md.

pub mod agent_loop;
pub mod chat_format;
pub mod conversation;
pub mod events;
pub mod launch;
pub mod mcp_server;
pub mod model;
pub mod recording;
pub mod runs;
pub mod runtime;
pub mod server;
pub mod spec;
pub mod telemetry;
pub mod testing;
pub mod toolbox;
pub mod trace_context;
pub mod webhooks;

/// Where reagent keeps its data (the run store): `$XDG_DATA_HOME/reagent`, else
/// `~/.local/share/reagent`. Runs are data, not cache: clearing a cache must not lose them.
pub fn data_dir() -> Option<std::path::PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    env("XDG_DATA_HOME").map(|d| d.join("reagent")).or_else(|| env("HOME").map(|d| d.join(".local/share/reagent")))
}

/// Where reagent keeps what it downloads and saves: `$REAGENT_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/reagent`, else `~/.cache/reagent`.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    env("REAGENT_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("reagent")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/reagent")))
}
