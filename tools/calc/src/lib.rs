//! `calc`: evaluates an arithmetic expression with a hand-written recursive-descent parser.
//! Nothing is executed but arithmetic; every bad input is an `invalid-arguments` error that says
//! where the expression went wrong.

use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Number;

mod expr;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The expression, e.g. "(17*23)+4"
    #[schemars(length(min = 1, max = 4096))]
    expression: String,
}

fn calc(args: Args) -> Result<Number, ToolError> {
    let value = expr::evaluate(&args.expression).map_err(|e| ToolError::invalid_arguments(e.to_string()))?;
    Ok(number(value))
}

/// Whole numbers come back without a fraction (`395`, not `395.0`), as a person writes them.
fn number(value: f64) -> Number {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT_INTEGER_LIMIT {
        Number::from(value as i64)
    } else {
        // `evaluate` returns finite numbers only, which JSON can always hold.
        Number::from_f64(value).unwrap_or_else(|| Number::from(0))
    }
}

reagent_tool::export_tools! {
    calc: Pure => "Evaluates an arithmetic expression and returns its value. Supports + - * / % ^ (power), parentheses, unary minus, the constants pi and e, and the functions sqrt, abs, floor, ceil, round, ln, log10, exp, sin, cos, tan, min, max.",
}
