//! `calc`: evaluates an arithmetic expression with a hand-written recursive-descent parser.
//! Nothing is executed but arithmetic; every bad input is a `invalid-arguments` error that says
//! where the expression went wrong.

wit_bindgen::generate!({ path: "../wit", world: "plugin" });

use exports::reagent::tool::tools::{ErrorKind, Guest, ToolError};

mod expr;

const DESCRIPTION: &str = r#"[{
  "name": "calc",
  "description": "Evaluates an arithmetic expression and returns its value. Supports + - * / % ^ (power), parentheses, unary minus, the constants pi and e, and the functions sqrt, abs, floor, ceil, round, ln, log10, exp, sin, cos, tan, min, max.",
  "parameters": {
    "type": "object",
    "properties": {
      "expression": {"type": "string", "description": "The expression, e.g. \"(17*23)+4\"", "minLength": 1, "maxLength": 4096}
    },
    "required": ["expression"],
    "additionalProperties": false
  },
  "result": {"type": "number"},
  "effect": "pure"
}]"#;

struct Calc;

impl Guest for Calc {
    fn describe() -> String {
        DESCRIPTION.to_string()
    }

    fn call(name: String, arguments: String) -> Result<String, ToolError> {
        if name != "calc" {
            return Err(error(
                ErrorKind::UnknownTool,
                format!("this component has no tool `{name}`; it provides `calc`"),
            ));
        }
        let arguments: serde_json::Value = serde_json::from_str(&arguments)
            .map_err(|e| error(ErrorKind::InvalidArguments, format!("arguments are not JSON: {e}")))?;
        let Some(expression) = arguments.get("expression").and_then(|v| v.as_str()) else {
            return Err(error(ErrorKind::InvalidArguments, "`expression` (a string) is required".to_string()));
        };
        let value = expr::evaluate(expression).map_err(|e| error(ErrorKind::InvalidArguments, e.to_string()))?;
        Ok(number_json(value))
    }
}

fn error(kind: ErrorKind, message: String) -> ToolError {
    ToolError { kind, message }
}

/// Whole numbers print without a fraction (`395`, not `395.0`), as a person would write them.
fn number_json(value: f64) -> String {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
        format!("{}", value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or_else(|| "null".to_string(), |n| n.to_string())
    }
}

export!(Calc);
