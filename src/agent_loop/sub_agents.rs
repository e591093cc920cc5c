//! Sub-agents: another agent offered to the model as a tool that takes a task in words. Its run
//! spends from its parent's budgets; what it returns is its answer, or an error saying why there
//! is none.

use serde_json::{Value, json};

use super::RunOutcome;
use crate::conversation::ToolDeclaration;
use crate::events::Event;
use crate::model::ModelError;
use crate::toolbox::{ToolError, ToolErrorKind};

/// How the parent's model sees a sub-agent: a tool named after it, taking a task.
pub fn declaration(name: &str, description: Option<&str>) -> ToolDeclaration {
    let description = description.map_or_else(|| format!("Hands a task to the agent `{name}`."), str::to_string);
    ToolDeclaration {
        name: name.to_string(),
        description,
        parameters: json!({
            "type": "object",
            "properties": {"task": {"type": "string", "description": "The task for this agent, in words"}},
            "required": ["task"],
            "additionalProperties": false,
        }),
    }
}

/// A sub-agent `name`'s event as its parent's stream carries it.
pub(super) fn marked(name: &str, event: &Event) -> Event {
    match event {
        Event::SubAgent { path, inner } => {
            let path = std::iter::once(name.to_string()).chain(path.iter().cloned()).collect();
            Event::SubAgent { path, inner: inner.clone() }
        }
        other => Event::SubAgent { path: vec![name.to_string()], inner: Box::new(other.clone()) },
    }
}

/// The sub-agent's run as a tool result.
pub(super) fn result(outcome: Result<RunOutcome, ModelError>) -> Result<Value, ToolError> {
    match outcome {
        Ok(RunOutcome::Answered { answer, output, .. }) => Ok(output.unwrap_or(Value::String(answer))),
        Ok(RunOutcome::Incomplete { budget, answer, .. }) => Err(ToolError::new(
            ToolErrorKind::Incomplete,
            match answer {
                Some(answer) => {
                    format!("it ran out of limits.{} before finishing; its best answer: {answer}", budget.key())
                }
                None => format!("it ran out of limits.{} and gave no answer", budget.key()),
            },
        )),
        Ok(RunOutcome::Looped { tool, .. }) => {
            Err(ToolError::new(ToolErrorKind::Loop, format!("it was stopped for repeating the same `{tool}` call")))
        }
        Ok(RunOutcome::InvalidOutput { errors, .. }) => Err(ToolError::new(
            ToolErrorKind::InvalidOutput,
            format!("its answer did not match its output schema: {}", errors.join("; ")),
        )),
        Ok(RunOutcome::Paused(checkpoint)) => {
            let tools: Vec<&str> = checkpoint.awaiting().iter().map(|c| c.name.as_str()).collect();
            let message = format!(
                "it needs a person's approval for {} and a sub-agent cannot pause: set `approval:` in the parent's file instead",
                tools.join(", ")
            );
            Err(ToolError::new(ToolErrorKind::ApprovalRequired, message))
        }
        // A sub-agent has no journal of its own, so nothing stops it short but its parent's end.
        Ok(RunOutcome::Stopped { stop, .. }) => {
            Err(ToolError::new(ToolErrorKind::Failed, format!("it stopped before its end: {stop:?}")))
        }
        Err(error) => Err(ToolError::new(ToolErrorKind::ModelFailed, format!("its model failed: {error}"))),
    }
}
