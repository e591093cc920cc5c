//! Constrained tool calls: the JSON Schema a local model decodes under, so that what it writes is
//! exactly `{"name": <one of the agent's tools>, "arguments": <valid for that tool>}` or, when it
//! may answer, `{"answer": "…"}`. Even a 135M model cannot write a malformed call this way.

use serde_json::{Map, Value, json};

use crate::conversation::ToolDeclaration;

/// The characters a string argument may have in a constrained call of a step with `max_tokens`:
/// half the budget (or the tool's own `maxLength`, if smaller), so that a small model that never
/// closes its string still finishes the call before the budget runs out.
pub fn string_cap(max_tokens: u32) -> u64 {
    u64::from(max_tokens / 2).max(16)
}

/// The grammar of one reply. `may_answer` is false on a step where a call is required; strings
/// are capped at `cap` characters.
pub fn reply_schema(tools: &[ToolDeclaration], may_answer: bool, cap: u64) -> Value {
    let mut choices: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": capped_strings(&tool.parameters, cap)},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    if may_answer {
        choices.push(json!({
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": false,
        }));
    }
    // Flexible whitespace lets a small model emit blanks forever, so it is fixed; to the spacing
    // models see in their training data (`{"name": "calc", "arguments": {...}}`).
    json!({
        "anyOf": choices,
        "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "},
    })
}

/// The schema with every string's `maxLength` at most `cap`, at any depth.
fn capped_strings(schema: &Value, cap: u64) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), capped_strings(v, cap))).collect();
            let is_string = map.get("type").is_some_and(|t| t == "string");
            let fixed = map.contains_key("enum") || map.contains_key("const");
            if is_string && !fixed {
                let own = map.get("maxLength").and_then(Value::as_u64).unwrap_or(u64::MAX);
                out.insert("maxLength".into(), own.min(cap).into());
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| capped_strings(item, cap)).collect()),
        other => other.clone(),
    }
}

/// What the model is told about the reply format, appended to its instructions.
pub fn format_note(may_answer: bool) -> &'static str {
    if may_answer {
        // Small models read the answer branch first, or call the same tool again after its result.
        "Reply with exactly one JSON object. When the tool results you have answer the task, reply {\"answer\": <your answer>}. Otherwise call a tool: {\"name\": <tool name>, \"arguments\": {...}}."
    } else {
        "Reply with exactly one JSON object that calls a tool: {\"name\": <tool name>, \"arguments\": {...}}."
    }
}

/// A reply decoded under [`reply_schema`].
#[derive(Debug, Clone, PartialEq)]
pub enum ConstrainedReply {
    Call {
        name: String,
        arguments: Value,
    },
    Answer(String),
    /// The grammar was cut short (the token limit) or not followed; the text as written.
    Unreadable {
        raw: String,
        error: String,
    },
}

pub fn read_reply(text: &str) -> ConstrainedReply {
    let unreadable = |error: String| ConstrainedReply::Unreadable { raw: text.to_string(), error };
    // The first JSON value is the reply; an end marker the engine let through may follow it.
    let first = serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>().next();
    let object: Map<String, Value> = match first {
        Some(Ok(Value::Object(object))) => object,
        Some(Ok(_)) => return unreadable("the reply is not a JSON object".into()),
        Some(Err(e)) => return unreadable(format!("the reply is not complete JSON ({e}); was max_tokens reached?")),
        None => return unreadable("the reply is empty".into()),
    };
    match (object.get("name"), object.get("arguments"), object.get("answer")) {
        (Some(Value::String(name)), Some(arguments), None) => {
            ConstrainedReply::Call { name: name.clone(), arguments: arguments.clone() }
        }
        (None, None, Some(Value::String(answer))) => ConstrainedReply::Answer(answer.clone()),
        _ => unreadable("expected {\"name\", \"arguments\"} or {\"answer\"}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calc() -> ToolDeclaration {
        ToolDeclaration {
            name: "calc".into(),
            description: "Evaluates arithmetic".into(),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
        }
    }

    #[test]
    fn every_reply_the_schema_admits_is_read_back() {
        let schema = reply_schema(&[calc()], true, 100);
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let call = json!({"name": "calc", "arguments": {"expression": "1+1"}});
        let answer = json!({"answer": "2"});
        assert!(validator.is_valid(&call) && validator.is_valid(&answer));
        assert!(!validator.is_valid(&json!({"name": "rm", "arguments": {}})));
        assert!(!validator.is_valid(&json!({"name": "calc", "arguments": {"expr": 1}})));
        assert_eq!(
            read_reply(&call.to_string()),
            ConstrainedReply::Call { name: "calc".into(), arguments: json!({"expression": "1+1"}) }
        );
        assert_eq!(read_reply(&answer.to_string()), ConstrainedReply::Answer("2".into()));
    }

    #[test]
    fn strings_are_capped_to_fit_the_budget_and_tighter_bounds_kept() {
        let tool = ToolDeclaration {
            name: "t".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {
                "free": {"type": "string"},
                "short": {"type": "string", "maxLength": 5},
                "list": {"type": "array", "items": {"type": "string"}},
            }}),
        };
        let schema = reply_schema(&[tool], false, string_cap(200));
        let arguments = &schema["anyOf"][0]["properties"]["arguments"]["properties"];
        assert_eq!(arguments["free"]["maxLength"], 100);
        assert_eq!(arguments["short"]["maxLength"], 5);
        assert_eq!(arguments["list"]["items"]["maxLength"], 100);
    }

    #[test]
    fn a_required_call_leaves_no_way_to_answer() {
        let validator = jsonschema::validator_for(&reply_schema(&[calc()], false, 100)).expect("a valid schema");
        assert!(!validator.is_valid(&json!({"answer": "2"})));
    }

    #[test]
    fn a_reply_cut_short_is_unreadable_not_a_panic() {
        assert!(matches!(read_reply("{\"name\": \"calc\", \"argu"), ConstrainedReply::Unreadable { .. }));
        assert!(matches!(read_reply("[1]"), ConstrainedReply::Unreadable { .. }));
        assert!(matches!(read_reply(""), ConstrainedReply::Unreadable { .. }));
    }

    #[test]
    fn an_end_marker_after_the_reply_is_ignored() {
        assert_eq!(
            read_reply("{\"answer\": \"395\"}<|endoftext|><|endoftext|>"),
            ConstrainedReply::Answer("395".into())
        );
    }
}
