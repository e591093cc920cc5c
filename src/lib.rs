//! reagent: a runtime for tool-using AI agents. An agent is a YAML file; every tool is a
//! WebAssembly component run with nothing granted but what the YAML grants.
//!
//! The data flows one way: `spec` → `agent_loop` → (`model` | `toolbox`) → `events`.
//! See ARCHITECTURE.md.

pub mod agent_loop;
pub mod chat_format;
pub mod conversation;
pub mod events;
pub mod launch;
pub mod model;
pub mod spec;
pub mod toolbox;
