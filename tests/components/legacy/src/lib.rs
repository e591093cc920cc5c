//! `shout`: a pure tool that upper-cases its text, exporting `reagent:tool/tools@0.1.0`, whose
//! `call` takes no context.

wit_bindgen::generate!({ path: "../../../tools/wit/0.1.0", world: "plugin" });

use exports::reagent::tool::tools::{ErrorKind, Guest, ToolError};

struct Legacy;

impl Guest for Legacy {
    fn describe() -> String {
        r#"[{"name": "shout", "description": "Upper-cases a text.",
             "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
             "effect": "pure"}]"#
            .to_string()
    }

    fn call(name: String, arguments: String) -> Result<String, ToolError> {
        if name != "shout" {
            return Err(ToolError { kind: ErrorKind::UnknownTool, message: format!("no tool `{name}`") });
        }
        let arguments: serde_json::Value = serde_json::from_str(&arguments)
            .map_err(|e| ToolError { kind: ErrorKind::InvalidArguments, message: e.to_string() })?;
        let text = arguments["text"].as_str().unwrap_or_default().to_uppercase();
        Ok(serde_json::Value::String(text).to_string())
    }
}

export!(Legacy);
