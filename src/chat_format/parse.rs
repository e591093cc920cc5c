//! Reads what a model wrote: reasoning up to `</think>`, tool calls, and the answer text.
//!
//! Small models do not write calls the way their template asks, so the parser accepts, in order
//! of preference: `<tool_call>` blocks (one or several, the last one possibly unclosed), code-fenced
//! JSON calls, and bare JSON calls. A call-shaped object is `{"name": ..., "arguments": {...}}`
//! (`parameters` is taken for `arguments`, a JSON string of the arguments is decoded, and an
//! OpenAI-style `{"function": {...}}` wrapper is unwrapped). Whatever cannot be read becomes an
//! error for the model, never a panic.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    /// The reasoning before `</think>`, when the output has any.
    pub reasoning: Option<String>,
    /// The text outside reasoning and calls: the answer when there are no calls.
    pub text: String,
    /// The calls in the order written.
    pub calls: Vec<Result<ParsedCall, UnreadableCall>>,
}

/// A call that could not be read: the text the model wrote and why, in words it can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableCall {
    pub raw: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: Value,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";
const FENCE: &str = "```";

pub fn parse_output(raw: &str) -> ParsedOutput {
    let (reasoning, rest) = split_reasoning(raw);
    let (text, calls) = if rest.contains(CALL_OPEN) {
        tagged_calls(rest)
    } else if let Some(found) = fenced_calls(rest) {
        found
    } else if let Some(calls) = bare_calls(rest) {
        (String::new(), calls)
    } else {
        (rest.trim().to_string(), Vec::new())
    };
    ParsedOutput { reasoning, text, calls }
}

/// Splits off the reasoning. The generation prompt opens `<think>` for the model, so output in
/// reasoning mode starts mid-reasoning and contains only the closing tag.
fn split_reasoning(raw: &str) -> (Option<String>, &str) {
    let strip_open = |s: &str| s.trim_start().strip_prefix(THINK_OPEN).unwrap_or(s).trim().to_string();
    if let Some((reasoning, rest)) = raw.split_once(THINK_CLOSE) {
        let reasoning = strip_open(reasoning);
        return (Some(reasoning).filter(|r| !r.is_empty()), rest);
    }
    if raw.trim_start().starts_with(THINK_OPEN) {
        // Reasoning that never closed (output cut off): nothing after it to act on.
        return (Some(strip_open(raw)).filter(|r| !r.is_empty()), "");
    }
    (None, raw)
}

type Calls = Vec<Result<ParsedCall, UnreadableCall>>;

fn tagged_calls(text: &str) -> (String, Calls) {
    let mut calls = Vec::new();
    let mut outside = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(CALL_OPEN) {
        outside.push_str(&rest[..start]);
        let after_open = &rest[start + CALL_OPEN.len()..];
        let (body, next) = match after_open.find(CALL_CLOSE) {
            Some(end) => (&after_open[..end], &after_open[end + CALL_CLOSE.len()..]),
            None => (after_open, ""),
        };
        calls.extend(calls_in_json(strip_fence(body.trim())));
        rest = next;
    }
    outside.push_str(rest);
    (outside.trim().to_string(), calls)
}

/// Code-fenced calls: ```json {...} ``` blocks whose content is call-shaped JSON. Fences that hold
/// anything else stay in the text, since answers may show code.
fn fenced_calls(text: &str) -> Option<(String, Calls)> {
    let mut calls = Vec::new();
    let mut outside = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(FENCE) {
        let after_open = &rest[start + FENCE.len()..];
        let Some(end) = after_open.find(FENCE) else { break };
        let block = &rest[start..start + FENCE.len() + end + FENCE.len()];
        match bare_calls(strip_fence(block)) {
            Some(found) => {
                outside.push_str(&rest[..start]);
                calls.extend(found);
            }
            None => outside.push_str(&rest[..start + block.len()]),
        }
        rest = &rest[start + block.len()..];
    }
    outside.push_str(rest);
    (!calls.is_empty()).then(|| (outside.trim().to_string(), calls))
}

/// Removes a surrounding code fence and its language tag, if there is one.
fn strip_fence(text: &str) -> &str {
    let Some(inner) = text.strip_prefix(FENCE) else { return text };
    let inner = inner.strip_suffix(FENCE).unwrap_or(inner);
    // The language tag runs to the end of the first line (```json).
    match inner.split_once('\n') {
        Some((tag, body)) if !tag.trim_start().starts_with(['{', '[']) => body.trim(),
        _ => inner.trim(),
    }
}

/// Text that is nothing but call-shaped JSON values (objects or arrays of them).
fn bare_calls(text: &str) -> Option<Calls> {
    let text = text.trim();
    if !text.starts_with(['{', '[']) {
        return None;
    }
    let mut calls = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        let value = value.ok()?;
        let items = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for item in items {
            if !looks_like_call(&item) {
                return None;
            }
            calls.push(call_from_value(item).map_err(|error| UnreadableCall { raw: text.to_string(), error }));
        }
    }
    (!calls.is_empty()).then_some(calls)
}

fn looks_like_call(value: &Value) -> bool {
    let value = value.get("function").unwrap_or(value);
    value.get("name").is_some() && (value.get("arguments").is_some() || value.get("parameters").is_some())
}

/// The calls inside one `<tool_call>` block: usually one object, sometimes an array.
fn calls_in_json(body: &str) -> Calls {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .map(|item| call_from_value(item).map_err(|error| UnreadableCall { raw: body.to_string(), error }))
            .collect(),
        Ok(value) => vec![call_from_value(value).map_err(|error| UnreadableCall { raw: body.to_string(), error })],
        Err(e) => vec![Err(UnreadableCall {
            raw: body.to_string(),
            error: format!(
                "the tool call is not valid JSON ({e}); write it as <tool_call>{{\"name\": \"TOOL\", \"arguments\": {{...}}}}</tool_call>"
            ),
        })],
    }
}

fn call_from_value(value: Value) -> Result<ParsedCall, String> {
    let Value::Object(mut object) = value else {
        return Err("a tool call must be a JSON object with \"name\" and \"arguments\"".into());
    };
    if let Some(Value::Object(function)) = object.remove("function") {
        object = function;
    }
    let name = match object.remove("name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(_) => return Err("the tool call's \"name\" must be a non-empty string".into()),
        None => return Err("the tool call has no \"name\"".into()),
    };
    let arguments = match object.remove("arguments").or_else(|| object.remove("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(encoded)) => serde_json::from_str(&encoded)
            .map_err(|e| format!("the arguments of `{name}` are a string that is not JSON: {e}"))?,
        Some(arguments) => arguments,
    };
    if !arguments.is_object() {
        return Err(format!("the arguments of `{name}` must be a JSON object"));
    }
    Ok(ParsedCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(name: &str, arguments: Value) -> Result<ParsedCall, UnreadableCall> {
        Ok(ParsedCall { name: name.into(), arguments })
    }

    #[test]
    fn reasoning_then_tagged_calls() {
        let out = parse_output(
            "I need two sums.\n</think>\n\n<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"1+2\"}}</tool_call>\n<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"3+4\"}}</tool_call>",
        );
        assert_eq!(out.reasoning.as_deref(), Some("I need two sums."));
        assert_eq!(out.text, "");
        assert_eq!(
            out.calls,
            vec![call("calc", json!({"expression": "1+2"})), call("calc", json!({"expression": "3+4"}))]
        );
    }

    #[test]
    fn plain_answer() {
        let out = parse_output("The answer is 395.");
        assert_eq!((out.reasoning, out.text.as_str(), out.calls.len()), (None, "The answer is 395.", 0));
    }

    #[test]
    fn fenced_and_bare_calls() {
        let fenced =
            parse_output("Sure:\n```json\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"2*3\"}}\n```");
        assert_eq!(fenced.text, "Sure:");
        assert_eq!(fenced.calls, vec![call("calc", json!({"expression": "2*3"}))]);
        let bare = parse_output("{\"name\": \"calc\", \"parameters\": \"{\\\"expression\\\": \\\"1\\\"}\"}");
        assert_eq!(bare.calls, vec![call("calc", json!({"expression": "1"}))]);
    }

    #[test]
    fn code_that_is_not_a_call_stays_text() {
        let out = parse_output("Use this:\n```json\n{\"a\": 1}\n```");
        assert!(out.calls.is_empty());
        assert_eq!(out.text, "Use this:\n```json\n{\"a\": 1}\n```");
    }

    #[test]
    fn broken_calls_become_errors() {
        let out = parse_output("<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"1\"</tool_call>");
        assert!(matches!(&out.calls[..], [Err(UnreadableCall { error, .. })] if error.contains("not valid JSON")));
        let out = parse_output("<tool_call>{\"arguments\": {}}</tool_call>");
        assert!(matches!(&out.calls[..], [Err(UnreadableCall { error, .. })] if error.contains("no \"name\"")));
        let unclosed = parse_output("<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"9\"}}");
        assert_eq!(unclosed.calls, vec![call("calc", json!({"expression": "9"}))]);
    }

    #[test]
    fn unclosed_reasoning_is_all_reasoning() {
        let out = parse_output("<think>\nstill thinking");
        assert_eq!((out.reasoning.as_deref(), out.text.as_str(), out.calls.len()), (Some("still thinking"), "", 0));
    }
}
