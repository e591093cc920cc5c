//! `inputs:`: typed values given per run (`--input key=value`, or a JSON file) and put into the
//! instructions wherever they say `{{name}}`. The template is plain substitution: no expressions,
//! no code, nothing else.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{Position, SpecError};

#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    pub description: Option<String>,
    /// `None`: the input is required.
    pub default: Option<Value>,
}

impl InputSpec {
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }

    /// The input as JSON Schema (for clients that pass inputs as JSON, such as MCP's).
    pub fn schema(&self) -> Value {
        let kind = match self.kind {
            InputKind::String => "string",
            InputKind::Integer => "integer",
            InputKind::Number => "number",
            InputKind::Boolean => "boolean",
        };
        let mut schema = serde_json::json!({ "type": kind });
        if let Some(description) = &self.description {
            schema["description"] = Value::String(description.clone());
        }
        if let Some(default) = &self.default {
            schema["default"] = default.clone();
        }
        schema
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInput {
    #[serde(rename = "type")]
    kind: InputKind,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    default: Option<Spanned<Value>>,
}

pub(super) fn resolve(
    raw: IndexMap<String, RawInput>,
    instructions: &Spanned<String>,
    file: &Path,
) -> Result<Vec<InputSpec>, SpecError> {
    let mut inputs = Vec::with_capacity(raw.len());
    for (name, input) in raw {
        if !is_name(&name) {
            let message = format!("input name `{name}` must be letters, digits and `_`, starting with a letter");
            return Err(SpecError::new(Position::start_of(file), message));
        }
        let default = match input.default {
            None => None,
            Some(value) => Some(input.kind.accept(value.value).map_err(|e| {
                SpecError::new(Position::new(file, value.referenced), format!("`default` of input `{name}`: {e}"))
            })?),
        };
        inputs.push(InputSpec { name, kind: input.kind, description: input.description, default });
    }
    for placeholder in placeholders(&instructions.value) {
        if !inputs.iter().any(|input| input.name == placeholder) {
            let declared: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            let message = match declared.is_empty() {
                true => {
                    format!("`{{{{{placeholder}}}}}` in the instructions names no input: declare it under `inputs:`")
                }
                false => format!(
                    "`{{{{{placeholder}}}}}` in the instructions names no input; the inputs are: {}",
                    declared.join(", ")
                ),
            };
            return Err(SpecError::new(Position::new(file, instructions.referenced), message));
        }
    }
    Ok(inputs)
}

impl InputKind {
    fn name(self) -> &'static str {
        match self {
            InputKind::String => "a string",
            InputKind::Integer => "an integer",
            InputKind::Number => "a number",
            InputKind::Boolean => "true or false",
        }
    }

    /// A JSON value of this kind, or why not.
    fn accept(self, value: Value) -> Result<Value, String> {
        let fits = match self {
            InputKind::String => value.is_string(),
            InputKind::Integer => value.is_i64() || value.is_u64(),
            InputKind::Number => value.is_number(),
            InputKind::Boolean => value.is_boolean(),
        };
        if fits { Ok(value) } else { Err(format!("expected {}, got {value}", self.name())) }
    }

    /// A value as typed on the command line.
    fn parse(self, text: &str) -> Result<Value, String> {
        let parsed = match self {
            InputKind::String => return Ok(Value::String(text.to_string())),
            InputKind::Integer => text.trim().parse::<i64>().ok().map(Value::from),
            InputKind::Number => {
                text.trim().parse::<f64>().ok().and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            }
            InputKind::Boolean => text.trim().parse::<bool>().ok().map(Value::Bool),
        };
        parsed.ok_or_else(|| format!("expected {}, got `{text}`", self.name()))
    }
}

/// Inputs as given for one run: `--input key=value` (text, parsed by the declared type) over the
/// values of a JSON file (typed already).
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
pub struct GivenInputs {
    pub from_file: serde_json::Map<String, Value>,
    pub from_flags: Vec<(String, String)>,
}

/// Checks the given inputs against the declared ones and fills in defaults. The error says which
/// input, what was wrong, and how to pass it.
pub fn bind(declared: &[InputSpec], given: &GivenInputs) -> Result<BTreeMap<String, Value>, String> {
    let known = || declared.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let find = |name: &str| {
        declared.iter().find(|i| i.name == name).ok_or_else(|| match declared.is_empty() {
            true => format!("input `{name}` was given but the agent declares no `inputs:`"),
            false => format!("the agent has no input `{name}`; its inputs are: {}", known()),
        })
    };
    let mut values = BTreeMap::new();
    for (name, value) in &given.from_file {
        let input = find(name)?;
        let value = input.kind.accept(value.clone()).map_err(|e| format!("input `{name}`: {e}"))?;
        values.insert(name.clone(), value);
    }
    for (name, text) in &given.from_flags {
        let input = find(name)?;
        let value = input.kind.parse(text).map_err(|e| format!("input `{name}`: {e}"))?;
        values.insert(name.clone(), value);
    }
    for input in declared {
        if values.contains_key(&input.name) {
            continue;
        }
        match &input.default {
            Some(default) => values.insert(input.name.clone(), default.clone()),
            None => return Err(format!("input `{0}` is required: pass --input {0}=VALUE", input.name)),
        };
    }
    Ok(values)
}

/// The instructions with each `{{name}}` replaced by its value (strings as they are, other values
/// as JSON). Text that is not a placeholder is left alone.
pub fn render(template: &str, values: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let name = after[..close].trim();
        out.push_str(&rest[..open]);
        match values.get(name).filter(|_| is_name(name)) {
            Some(Value::String(text)) => out.push_str(text),
            Some(value) => out.push_str(&value.to_string()),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// The names the template refers to.
fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let name = after[..close].trim();
        if is_name(name) {
            names.push(name);
        }
        rest = &after[close + 2..];
    }
    names
}

fn is_name(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declared() -> Vec<InputSpec> {
        vec![
            InputSpec { name: "city".into(), kind: InputKind::String, description: None, default: None },
            InputSpec { name: "days".into(), kind: InputKind::Integer, description: None, default: Some(json!(3)) },
        ]
    }

    fn flags(pairs: &[(&str, &str)]) -> GivenInputs {
        let from_flags = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        GivenInputs { from_flags, ..GivenInputs::default() }
    }

    #[test]
    fn values_are_typed_defaulted_and_substituted() {
        let values = bind(&declared(), &flags(&[("city", "Seoul")])).unwrap();
        let text = render("Plan {{ city }} for {{days}} days. Keep {{this}} and {{ not a name }}.", &values);
        assert_eq!(text, "Plan Seoul for 3 days. Keep {{this}} and {{ not a name }}.");
    }

    #[test]
    fn mistakes_say_which_input_and_how_to_pass_it() {
        assert_eq!(bind(&declared(), &flags(&[])).unwrap_err(), "input `city` is required: pass --input city=VALUE");
        let err = bind(&declared(), &flags(&[("city", "x"), ("days", "three")])).unwrap_err();
        assert_eq!(err, "input `days`: expected an integer, got `three`");
        let err = bind(&declared(), &flags(&[("cty", "x")])).unwrap_err();
        assert_eq!(err, "the agent has no input `cty`; its inputs are: city, days");
        let file = GivenInputs {
            from_file: json!({"city": "x", "days": "3"}).as_object().unwrap().clone(),
            ..GivenInputs::default()
        };
        assert_eq!(bind(&declared(), &file).unwrap_err(), "input `days`: expected an integer, got \"3\"");
    }

    #[test]
    fn a_value_is_never_read_as_a_template() {
        let values = bind(&declared(), &flags(&[("city", "{{days}}")])).unwrap();
        assert_eq!(render("{{city}}", &values), "{{days}}");
    }
}
