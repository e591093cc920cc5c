//! The tools as the loop sees them: declarations to show the model, and a way to call one.
//! The loop depends on this trait only; `wasm` implements it with the sandbox.

mod wasm;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::ToolDeclaration;

pub use wasm::WasmToolbox;

#[async_trait]
pub trait Toolbox: Send + Sync {
    fn declarations(&self) -> Vec<ToolDeclaration>;

    /// Calls a declared tool with arguments already validated against its schema.
    async fn call(&self, name: &str, arguments: &Value) -> ToolOutcome;

    /// Whether a call of `name` must wait for a person's yes (the agent file's `approval:`).
    fn needs_approval(&self, _name: &str) -> bool {
        false
    }
}

/// One toolbox shared by many agents, e.g. by concurrent runs of one agent file.
#[async_trait]
impl<T: Toolbox + ?Sized> Toolbox for std::sync::Arc<T> {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        (**self).declarations()
    }

    async fn call(&self, name: &str, arguments: &Value) -> ToolOutcome {
        (**self).call(name, arguments).await
    }

    fn needs_approval(&self, name: &str) -> bool {
        (**self).needs_approval(name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub result: Result<Value, ToolError>,
    /// What the tool printed (stdout, then stderr), capped.
    pub log: String,
    pub duration: Duration,
}

/// A failed call, as fed back to the model and reported in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolError {
    /// e.g. `invalid_arguments`, `unknown_tool`, `timeout`, `memory`, `trap`.
    pub kind: String,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        ToolError { kind: kind.to_string(), message: message.into() }
    }
}
