use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One tool as its component describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDescription {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// JSON Schema of the result, when the tool declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    pub effect: Effect,
}

/// What calling a tool does to the world: decides what may be retried or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Pure,
    Idempotent,
    SideEffect,
}

/// Parses and checks the JSON a component's `describe` returned.
pub(crate) fn parse_descriptions(json: &str) -> Result<Vec<ToolDescription>, String> {
    let tools: Vec<ToolDescription> =
        serde_json::from_str(json).map_err(|e| format!("invalid description JSON: {e}"))?;
    if tools.is_empty() {
        return Err("it describes no tools".into());
    }
    for (i, tool) in tools.iter().enumerate() {
        if !is_valid_name(&tool.name) {
            return Err(format!("tool name `{}` must be 1-64 characters of letters, digits, `_` or `-`", tool.name));
        }
        if tools[..i].iter().any(|earlier| earlier.name == tool.name) {
            return Err(format!("tool `{}` is described twice", tool.name));
        }
        if tool.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!("the parameters schema of `{}` must have \"type\": \"object\"", tool.name));
        }
    }
    Ok(tools)
}

/// The names every model API accepts for a function.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
