//! A replay's stubs: calls of the tools an agent marks `replay: stub` (one that reaches the
//! network, say) get the result recorded for them instead of running; every other call runs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{CallContext, Effect, ToolError, ToolErrorKind, ToolOutcome, Toolbox};
use crate::conversation::ToolDeclaration;

pub struct Stubbed {
    inner: Box<dyn Toolbox>,
    /// The tools answered from the recording.
    stubbed: HashSet<String>,
    /// What each call returned when it was recorded, by call id.
    recorded: HashMap<String, ToolOutcome>,
}

impl Stubbed {
    pub fn new(inner: Box<dyn Toolbox>, stubbed: HashSet<String>, recorded: HashMap<String, ToolOutcome>) -> Self {
        Stubbed { inner, stubbed, recorded }
    }
}

#[async_trait]
impl Toolbox for Stubbed {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        self.inner.declarations()
    }

    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        if !self.stubbed.contains(name) {
            return self.inner.call(name, arguments, context).await;
        }
        match context.call_id().and_then(|id| self.recorded.get(id)) {
            Some(outcome) => outcome.clone(),
            None => ToolOutcome {
                result: Err(ToolError::new(
                    ToolErrorKind::Unrecorded,
                    format!(
                        "`{name}` is stubbed on replay (`replay: stub`) and the recording has no result for call {}",
                        context.call_id().unwrap_or("(unnamed)")
                    ),
                )),
                log: String::new(),
                duration: Duration::ZERO,
            },
        }
    }

    fn needs_approval(&self, name: &str) -> bool {
        self.inner.needs_approval(name)
    }

    fn effect(&self, name: &str) -> Effect {
        self.inner.effect(name)
    }

    fn tool_type(&self, name: &str) -> &'static str {
        self.inner.tool_type(name)
    }
}
