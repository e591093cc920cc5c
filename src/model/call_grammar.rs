//! Constrained tool calls: the grammar a local model decodes under, so that what it writes is one
//! or more calls, each exactly `{"name": <one of the agent's tools>, "arguments": <valid for that
//! tool>}` on a line of its own, or, when it may answer, `{"answer": …}` (matching `output.schema`
//! when the agent has one). Even a 135M model cannot write a malformed call this way.

use serde_json::{Map, Value, json};

use super::ModelReply;
use crate::conversation::{MalformedCall, Message, ToolCall, ToolDeclaration};

/// The characters a string argument may have in a constrained call of a step with `max_tokens`:
/// half the budget (or the tool's own `maxLength`, if smaller), so that a small model that never
/// closes its string still finishes the call before the budget runs out.
pub fn string_cap(max_tokens: u32) -> u64 {
    u64::from(max_tokens / 2).max(16)
}

/// The grammar of one reply (Lark, as llguidance reads it): one or more calls, a JSON object a
/// line, or, when `may_answer` (false on a step where a call is required), one answer object whose
/// `answer` matches `answer_schema` (a string without one). Strings are capped at `cap` characters.
pub fn reply_grammar(tools: &[ToolDeclaration], may_answer: bool, cap: u64, answer_schema: Option<&Value>) -> String {
    let calls: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": bounded(&tool.parameters, cap)},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let call = with_fixed_spacing(json!({"anyOf": calls}));
    let mut lark = format!("calls: call (\"\\n\" call)*\ncall: %json {call}\n");
    if may_answer {
        let answer = answer_schema.map_or_else(|| json!({"type": "string"}), |schema| bounded(schema, cap));
        let answer = with_fixed_spacing(json!({
            "type": "object",
            "properties": {"answer": bounded(&answer, cap)},
            "required": ["answer"],
            "additionalProperties": false,
        }));
        format!("start: calls | answer\n{lark}answer: %json {answer}\n")
    } else {
        lark.insert_str(0, "start: calls\n");
        lark
    }
}

/// Flexible whitespace lets a small model emit blanks forever, so it is fixed; to the spacing
/// models see in their training data (`{"name": "calc", "arguments": {...}}`).
fn with_fixed_spacing(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

/// The most an unbounded number may be: bounds its digits, as `cap` bounds a string's characters.
const NUMBER_BOUND: f64 = 1e15;

/// The schema as the grammar enforces it, at any depth: every string's `maxLength` at most `cap`,
/// every number within ±[`NUMBER_BOUND`] and with at most six decimals, and no properties beyond
/// those an object declares unless its schema says otherwise (`additionalProperties`). Left open,
/// models invent parameters or copy schema keywords into their arguments.
fn bounded(schema: &Value, cap: u64) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), bounded(v, cap))).collect();
            let fixed = map.contains_key("enum") || map.contains_key("const");
            let kind = map.get("type").and_then(Value::as_str);
            match kind {
                Some("string") if !fixed => {
                    let own = map.get("maxLength").and_then(Value::as_u64).unwrap_or(u64::MAX);
                    out.insert("maxLength".into(), own.min(cap).into());
                }
                Some("number" | "integer") if !fixed => {
                    out.entry("minimum").or_insert(json!(-NUMBER_BOUND));
                    out.entry("maximum").or_insert(json!(NUMBER_BOUND));
                    if kind == Some("number") {
                        out.entry("multipleOf").or_insert(json!(0.000001));
                    }
                }
                _ => {}
            }
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|item| bounded(item, cap)).collect()),
        other => other.clone(),
    }
}

/// What the model is told about the reply format, appended to its instructions.
pub fn format_note(may_answer: bool) -> &'static str {
    if may_answer {
        // Small models read the answer branch first, or call the same tool again after its result.
        "Reply with JSON, one object per line. When the tool results you have answer the task, reply {\"answer\": <your answer>}. Otherwise call a tool: {\"name\": <tool name>, \"arguments\": {...}}."
    } else {
        "Reply with JSON, one object per line, each calling a tool: {\"name\": <tool name>, \"arguments\": {...}}."
    }
}

/// Where a constrained reply starts to repeat itself: the start of the first complete line that
/// is word for word an earlier one. Small models that may write several calls tend to write the
/// same call again and again until the token limit; the reply is cut there, each call read once.
pub fn repeated_call(text: &str) -> Option<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break; // not complete yet
        }
        if !seen.insert(line.trim()) {
            return Some(start);
        }
        start += line.len();
    }
    None
}

/// The conversation with the reply format's note ([`format_note`]) added to the instructions.
pub fn with_format_note(messages: &[Message], may_answer: bool) -> Vec<Message> {
    let note = format_note(may_answer);
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(Message::System { content }) => *content = format!("{content}\n\n{note}"),
        _ => out.insert(0, Message::System { content: note.to_string() }),
    }
    out
}

/// A reply decoded under [`reply_grammar`].
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

/// The replies in a text decoded under [`reply_grammar`], in order: each JSON object a call or an
/// answer. What follows the last complete object (an end marker the engine let through) is
/// ignored; an object cut short is one unreadable reply.
pub fn read_replies(text: &str) -> Vec<ConstrainedReply> {
    let mut replies = Vec::new();
    let mut values = serde_json::Deserializer::from_str(text.trim()).into_iter::<Value>();
    loop {
        let start = values.byte_offset();
        let unreadable = |error: String| ConstrainedReply::Unreadable { raw: text.trim()[start..].to_string(), error };
        match values.next() {
            Some(Ok(value)) => replies.push(read_object(value)),
            Some(Err(e)) if replies.is_empty() || e.is_eof() => {
                replies.push(unreadable(format!("the reply is not complete JSON ({e}); was max_tokens reached?")));
                break;
            }
            Some(Err(_)) | None => break,
        }
    }
    if replies.is_empty() {
        replies.push(ConstrainedReply::Unreadable { raw: text.to_string(), error: "the reply is empty".into() });
    }
    replies
}

/// A constrained reply's calls and answer, into `reply`; `id` names each call.
pub fn read_into(reply: &mut ModelReply, text: &str, mut id: impl FnMut() -> String) {
    for read in read_replies(text) {
        match read {
            ConstrainedReply::Call { name, arguments } => reply.calls.push(Ok(ToolCall { id: id(), name, arguments })),
            ConstrainedReply::Answer(answer) => reply.text = answer,
            ConstrainedReply::Unreadable { raw, error } => {
                reply.calls.push(Err(MalformedCall { id: id(), raw, error }))
            }
        }
    }
}

fn read_object(value: Value) -> ConstrainedReply {
    let unreadable =
        |value: &Value, error: &str| ConstrainedReply::Unreadable { raw: value.to_string(), error: error.into() };
    let Value::Object(object) = &value else {
        return unreadable(&value, "the reply is not a JSON object");
    };
    match (object.get("name"), object.get("arguments"), object.get("answer")) {
        (Some(Value::String(name)), Some(arguments), None) => {
            ConstrainedReply::Call { name: name.clone(), arguments: arguments.clone() }
        }
        (None, None, Some(Value::String(answer))) => ConstrainedReply::Answer(answer.clone()),
        // An answer under `output.schema` is JSON; the loop reads it from the text.
        (None, None, Some(answer)) => ConstrainedReply::Answer(answer.to_string()),
        _ => unreadable(&value, "expected {\"name\", \"arguments\"} or {\"answer\"}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use llguidance::api::TopLevelGrammar;
    use llguidance::{Matcher, ParserFactory};
    use toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};

    use super::*;

    fn calc() -> ToolDeclaration {
        ToolDeclaration {
            name: "calc".into(),
            description: "Evaluates arithmetic".into(),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
        }
    }

    /// Whether the grammar admits `text` whole, fed a byte at a time (a vocabulary of bytes).
    fn admits(grammar: &str, text: &str) -> bool {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        words.push(vec![TokTrie::SPECIAL_TOKEN_MARKER, b'e']);
        let trie = TokTrie::from(&TokRxInfo::new(257, 256), &words);
        let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let factory = ParserFactory::new_simple(&env).expect("a parser factory");
        let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar.to_string())).expect("a valid grammar");
        let mut matcher = Matcher::new(Ok(parser));
        let bytes: Vec<u32> = text.bytes().map(u32::from).collect();
        matcher.consume_tokens(&bytes).is_ok() && matcher.is_accepting().unwrap_or(false)
    }

    #[test]
    fn the_grammar_admits_calls_and_answers_and_refuses_the_rest() {
        let grammar = reply_grammar(&[calc()], true, 100, None);
        let call = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;
        assert!(admits(&grammar, call));
        assert!(admits(&grammar, &format!("{call}\n{call}")), "several calls, a line each");
        assert!(admits(&grammar, r#"{"answer": "2"}"#));
        assert!(!admits(&grammar, r#"{"name": "rm", "arguments": {}}"#), "an unknown tool");
        assert!(!admits(&grammar, r#"{"name": "calc", "arguments": {"expr": "1"}}"#), "a wrong argument");
        assert!(
            !admits(&grammar, r#"{"name": "calc", "arguments": {"expression": "1", "required": ["x"]}}"#),
            "a property the tool does not declare"
        );
        assert!(!admits(&grammar, &format!("{call}\n{{\"answer\": \"2\"}}")), "calls and an answer at once");
    }

    #[test]
    fn every_reply_the_grammar_admits_is_read_back() {
        let call = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;
        let expected = ConstrainedReply::Call { name: "calc".into(), arguments: json!({"expression": "1+1"}) };
        assert_eq!(read_replies(call), std::slice::from_ref(&expected));
        assert_eq!(read_replies(&format!("{call}\n{call}")), [expected.clone(), expected]);
        assert_eq!(read_replies(r#"{"answer": "2"}"#), [ConstrainedReply::Answer("2".into())]);
    }

    #[test]
    fn an_answer_under_an_output_schema_is_that_schema() {
        let schema = json!({"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]});
        let grammar = reply_grammar(&[calc()], true, 100, Some(&schema));
        assert!(admits(&grammar, r#"{"answer": {"total": 395}}"#));
        assert!(!admits(&grammar, r#"{"answer": "395"}"#));
        assert_eq!(
            read_replies(r#"{"answer": {"total": 395}}"#),
            [ConstrainedReply::Answer(r#"{"total":395}"#.into())]
        );
    }

    #[test]
    fn strings_numbers_and_objects_are_bounded_and_tighter_bounds_kept() {
        let parameters = json!({"type": "object", "properties": {
            "free": {"type": "string"},
            "short": {"type": "string", "maxLength": 5},
            "list": {"type": "array", "items": {"type": "string"}},
            "n": {"type": "number"},
            "small": {"type": "integer", "maximum": 9},
            "open": {"type": "object", "properties": {}, "additionalProperties": true},
        }});
        let out = bounded(&parameters, string_cap(200));
        let properties = &out["properties"];
        assert_eq!(properties["free"]["maxLength"], 100);
        assert_eq!(properties["short"]["maxLength"], 5);
        assert_eq!(properties["list"]["items"]["maxLength"], 100);
        assert_eq!(properties["n"]["maximum"], NUMBER_BOUND);
        assert_eq!(properties["small"]["maximum"], 9);
        assert_eq!(out["additionalProperties"], false);
        assert_eq!(properties["open"]["additionalProperties"], true);
        let tool = ToolDeclaration { name: "t".into(), description: String::new(), parameters };
        let grammar = reply_grammar(&[tool], false, string_cap(200), None);
        assert!(admits(&grammar, r#"{"name": "t", "arguments": {"n": 2.5}}"#));
        assert!(!admits(&grammar, r#"{"name": "t", "arguments": {"n": 12345678901234567890}}"#), "a runaway number");
    }

    #[test]
    fn a_required_call_leaves_no_way_to_answer() {
        assert!(!admits(&reply_grammar(&[calc()], false, 100, None), r#"{"answer": "2"}"#));
    }

    #[test]
    fn a_reply_cut_short_is_unreadable_not_a_panic() {
        assert!(matches!(read_replies("{\"name\": \"calc\", \"argu")[..], [ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies("[1]")[..], [ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies("")[..], [ConstrainedReply::Unreadable { .. }]));
        let call = r#"{"name": "calc", "arguments": {"expression": "1"}}"#;
        let replies = read_replies(&format!("{call}\n{{\"name\": \"ca"));
        assert!(matches!(replies[..], [ConstrainedReply::Call { .. }, ConstrainedReply::Unreadable { .. }]));
    }

    #[test]
    fn a_reply_is_cut_where_a_call_repeats_word_for_word() {
        let call = r#"{"name": "calc", "arguments": {"expression": "1"}}"#;
        let other = r#"{"name": "calc", "arguments": {"expression": "2"}}"#;
        assert_eq!(repeated_call(&format!("{call}\n{other}\n{call}")), None, "the last line is not complete");
        let text = format!("{call}\n{other}\n{call}\n");
        assert_eq!(repeated_call(&text), Some(call.len() + other.len() + 2));
        assert_eq!(repeated_call(&format!("{call}\n{other}\n")), None);
    }

    #[test]
    fn an_end_marker_after_the_reply_is_ignored() {
        assert_eq!(
            read_replies("{\"answer\": \"395\"}<|endoftext|><|endoftext|>"),
            [ConstrainedReply::Answer("395".into())]
        );
    }
}
