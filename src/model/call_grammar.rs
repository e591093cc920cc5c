//! Constrained tool calls: the grammar a local model decodes under, so that what it writes is a
//! list of one or more calls, `[<call>, …]` with each call exactly `{"name": <one of the agent's
//! tools>, "arguments": <valid for that tool>}`, or what [`AnswerForm`] lets the step answer. Even
//! a 135M model cannot write a malformed call this way. The list is what gets several calls out of
//! a small model: after a call it weighs `, {` against `]`, where after a call on a line of its own
//! it ended the turn (BFCL's parallel cases: 0 of 20 on lines, 4 of 20 in a list; README).

use std::ops::Range;

use serde_json::{Map, Value, json};

use super::{ModelReply, ModelRequest};
use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice, ToolDeclaration};

/// The characters a string argument may have in a constrained call of a step with `max_tokens`:
/// half the budget (or the tool's own `maxLength`, if smaller), so that a small model that never
/// closes its string still finishes the call before the budget runs out.
pub fn string_cap(max_tokens: u32) -> u64 {
    u64::from(max_tokens / 2).max(16)
}

/// An answer in words: anything that does not start as JSON, a code fence, markup or a blank
/// (what a model writes to call, in a syntax of its own).
const WORDS: &str = r"[^\[{`<\s][\s\S]*";

/// What Hermes-style models (Qwen2.5 and 3, EXAONE 4.0) write to start calls: allowed before the
/// list, so that a model decides to call as it would unconstrained (Qwen2.5-Coder-0.5B, its
/// opener masked, wrote prose about the call instead).
const NATIVE_CALL_OPENER: &str = "<tool_call>";

/// How the vocabulary spells [`NATIVE_CALL_OPENER`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Opener {
    /// As text (or not at all).
    Text,
    /// As a special token, which text in the grammar does not match.
    Token,
}

impl Opener {
    pub fn of(tok_env: &toktrie::TokEnv) -> Opener {
        match tok_env.tok_trie().get_special_token(NATIVE_CALL_OPENER) {
            Some(_) => Opener::Token,
            None => Opener::Text,
        }
    }
}

/// How a list of calls starts, between calls and ends, with the grammar's fixed spacing.
const CALLS_OPEN: &str = "[";
const CALL_SEPARATOR: &str = ", ";
const CALLS_CLOSE: &str = "]";

/// What a constrained reply may be besides a list of calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswerForm<'a> {
    /// Nothing: a call is required (`tool_choice: required`).
    None,
    /// Words, as free as without constraint, on an engine that lets the model choose between
    /// words and calls as it would unconstrained (the llama.cpp engine's `calls_only`): a turn's
    /// first step, where a model plans, and several calls at once are likeliest.
    Words,
    /// `{"answer": …}` (a string, or matching the agent's `output.schema`), or one call object.
    /// After tool results a small model's `{` opens the answer (the note names it first), where
    /// in a list it calls the same tool again (Qwen2.5-Coder-0.5B on the calculator).
    Object(Option<&'a Value>),
}

impl<'a> AnswerForm<'a> {
    pub fn of(request: &ModelRequest<'a>) -> Self {
        let after_results = matches!(request.messages.last(), Some(Message::Tool { .. }));
        match (request.tool_choice, request.answer_schema) {
            (ToolChoice::Required, _) => AnswerForm::None,
            (ToolChoice::Auto, Some(schema)) => AnswerForm::Object(Some(schema)),
            (ToolChoice::Auto, None) if after_results => AnswerForm::Object(None),
            (ToolChoice::Auto, None) => AnswerForm::Words,
        }
    }

    /// The form on an engine that cannot let the model choose: no answers in words.
    pub fn without_words(self) -> Self {
        match self {
            AnswerForm::Words => AnswerForm::Object(None),
            other => other,
        }
    }
}

/// The grammar of one reply (Lark, as llguidance reads it): a list of one or more calls, or the
/// answer `answer` allows. Strings are capped at `cap` characters.
pub fn reply_grammar(tools: &[ToolDeclaration], answer: AnswerForm<'_>, opener: Opener, cap: u64) -> String {
    let each: Vec<Value> = tools
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
    let calls = with_fixed_spacing(json!({"type": "array", "items": {"anyOf": each}, "minItems": 1}));
    let opener = match opener {
        Opener::Text => format!("{NATIVE_CALL_OPENER:?}"),
        Opener::Token => NATIVE_CALL_OPENER.to_string(), // Lark's syntax for a special token
    };
    let calls = format!("calls: ({opener} \"\\n\")? %json {calls}\n");
    match answer {
        AnswerForm::None => format!("start: calls\n{calls}"),
        AnswerForm::Words => format!("start: calls | words\n{calls}words: /{WORDS}/\n"),
        AnswerForm::Object(schema) => {
            let schema = schema.map_or_else(|| json!({"type": "string"}), Value::clone);
            let answer = with_fixed_spacing(json!({
                "type": "object",
                "properties": {"answer": bounded(&schema, cap)},
                "required": ["answer"],
                "additionalProperties": false,
            }));
            let call = with_fixed_spacing(json!({"anyOf": each}));
            format!("start: calls | call | answer\n{calls}call: %json {call}\nanswer: %json {answer}\n")
        }
    }
}

/// Flexible whitespace lets a small model emit blanks forever, so it is fixed; to the spacing
/// models see in their training data (`{"name": "calc", "arguments": {...}}`).
fn with_fixed_spacing(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({"whitespace_flexible": false, "item_separator": CALL_SEPARATOR, "key_separator": ": "}),
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

/// What the model is told about the reply format, appended to its instructions: the same
/// words whatever the step allows, so that the prompt of one step is the prefix of the next
/// (the kept KV cache) and the grammar alone says what this step may be. The answer comes first:
/// small models read the first branch first, or call the same tool again after its result.
pub const FORMAT_NOTE: &str = "When the tool results you have answer the task, reply {\"answer\": <your answer>}. Otherwise reply with a JSON list of the tool calls the task needs: [{\"name\": <tool name>, \"arguments\": {...}}, ...].";

/// Where a constrained reply starts to repeat itself: the end of the call before the first
/// complete call that is word for word an earlier one. Small models that may write several calls
/// tend to write the same call again and again until the token limit; the reply is cut there,
/// each call read once (what is left reads as the calls before the cut).
pub fn repeated_call(text: &str) -> Option<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut previous_end = None;
    for (span, _) in listed_calls(text)?.calls {
        if !seen.insert(&text[span.clone()]) {
            return previous_end;
        }
        previous_end = Some(span.end);
    }
    None
}

/// The complete calls of a `[...]` reply, so far as it is written.
struct ListedCalls {
    /// Each call's place in the text, and its value.
    calls: Vec<(Range<usize>, Value)>,
    /// What follows the last complete call, less the separator: `]` when the list is closed,
    /// empty when it stops between calls, the start of a call when it was cut short.
    rest: Range<usize>,
}

/// The calls listed in `text`, or `None` when it is not a list of calls.
fn listed_calls(text: &str) -> Option<ListedCalls> {
    let body = text.trim_start();
    let body = body.strip_prefix(NATIVE_CALL_OPENER).map_or(body, str::trim_start);
    if !body.starts_with(CALLS_OPEN) {
        return None;
    }
    let mut at = text.len() - body.len() + CALLS_OPEN.len();
    let mut calls = Vec::new();
    loop {
        if !calls.is_empty() {
            let rest = &text[at..];
            at += rest.len() - rest.strip_prefix(',').unwrap_or(rest).trim_start().len();
        }
        let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) if value.is_object() => {
                let end = at + values.byte_offset();
                calls.push((at..end, value));
                at = end;
            }
            _ => return Some(ListedCalls { calls, rest: at..text.len() }),
        }
    }
}

/// The conversation with the reply format's note ([`FORMAT_NOTE`]) added to the instructions.
pub fn with_format_note(messages: &[Message]) -> Vec<Message> {
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(Message::System { content }) => *content = format!("{content}\n\n{FORMAT_NOTE}"),
        _ => out.insert(0, Message::System { content: FORMAT_NOTE.to_string() }),
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

/// The replies in a text decoded under [`reply_grammar`], in order: each listed call, one call
/// object, or the answer (in words, or as `{"answer": …}`). What follows JSON (an end marker the
/// engine let through) is ignored; a list cut short keeps its complete calls, and the call it was
/// writing is one unreadable reply.
pub fn read_replies(text: &str) -> Vec<ConstrainedReply> {
    let text = text.trim();
    let unreadable = |raw: &str, error: String| ConstrainedReply::Unreadable { raw: raw.to_string(), error };
    let cut_short =
        |e: &dyn std::fmt::Display| format!("the reply is not complete JSON ({e}); was max_tokens reached?");
    if let Some(listed) = listed_calls(text) {
        let mut replies: Vec<ConstrainedReply> =
            listed.calls.into_iter().map(|(_, value)| read_object(value)).collect();
        let rest = &text[listed.rest];
        if !rest.starts_with(CALLS_CLOSE) && (replies.is_empty() || !rest.is_empty()) {
            let error =
                serde_json::from_str::<Value>(rest).err().map_or_else(|| "not a call".into(), |e| cut_short(&e));
            replies.push(unreadable(rest, error));
        }
        return replies;
    }
    if !text.starts_with('{') {
        return match text {
            "" => vec![unreadable(text, "the reply is empty".into())],
            words => vec![ConstrainedReply::Answer(words.to_string())],
        };
    }
    match serde_json::Deserializer::from_str(text).into_iter::<Value>().next() {
        Some(Ok(value)) => vec![read_object(value)],
        Some(Err(e)) => vec![unreadable(text, cut_short(&e))],
        None => vec![unreadable(text, "the reply is empty".into())],
    }
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

    /// The calls as the grammar lists them.
    fn list(calls: &[&str]) -> String {
        format!("{CALLS_OPEN}{}{CALLS_CLOSE}", calls.join(CALL_SEPARATOR))
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
        let grammar = reply_grammar(&[calc()], AnswerForm::Words, Opener::Text, 100);
        let call = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;
        assert!(admits(&grammar, &list(&[call])));
        assert!(admits(&grammar, &list(&[call, call])), "several calls");
        assert!(admits(&grammar, &format!("{NATIVE_CALL_OPENER}\n{}", list(&[call]))), "the model's own opener");
        assert!(!admits(&grammar, &list(&[])), "an empty list");
        assert!(!admits(&grammar, call), "a call outside the list");
        assert!(admits(&grammar, "It is 2."), "an answer in words");
        assert!(!admits(&grammar, r#"{"name": "calc"}"#), "JSON that is not a list of calls");
        assert!(!admits(&grammar, " [1]"), "a list after a blank");
        assert!(!admits(&grammar, &list(&[r#"{"name": "rm", "arguments": {}}"#])), "an unknown tool");
        assert!(!admits(&grammar, &list(&[r#"{"name": "calc", "arguments": {"expr": "1"}}"#])), "a wrong argument");
        assert!(
            !admits(&grammar, &list(&[r#"{"name": "calc", "arguments": {"expression": "1", "required": ["x"]}}"#])),
            "a property the tool does not declare"
        );
        assert!(!admits(&grammar, &format!("{} It is 2.", list(&[call]))), "calls and an answer at once");
    }

    #[test]
    fn after_tool_results_the_reply_is_one_object_or_a_list() {
        let grammar = reply_grammar(&[calc()], AnswerForm::Object(None), Opener::Text, 100);
        let call = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;
        assert!(admits(&grammar, r#"{"answer": "2"}"#));
        assert!(admits(&grammar, call));
        assert!(admits(&grammar, &list(&[call, call])));
        assert!(!admits(&grammar, "It is 2."), "words");
        assert!(!admits(&grammar, &format!("{call}\n{call}")), "calls outside a list");
        assert_eq!(read_replies(r#"{"answer": "2"}"#), [ConstrainedReply::Answer("2".into())]);
        let expected = ConstrainedReply::Call { name: "calc".into(), arguments: json!({"expression": "1+1"}) };
        assert_eq!(read_replies(call), [expected]);
    }

    #[test]
    fn every_reply_the_grammar_admits_is_read_back() {
        let call = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;
        let expected = ConstrainedReply::Call { name: "calc".into(), arguments: json!({"expression": "1+1"}) };
        assert_eq!(read_replies(&list(&[call])), std::slice::from_ref(&expected));
        assert_eq!(read_replies(&format!("{NATIVE_CALL_OPENER}\n{}", list(&[call]))), std::slice::from_ref(&expected));
        assert_eq!(read_replies(&list(&[call, call])), [expected.clone(), expected]);
        assert_eq!(read_replies("It is 2.\n"), [ConstrainedReply::Answer("It is 2.".into())]);
    }

    #[test]
    fn an_answer_under_an_output_schema_is_that_schema() {
        let schema = json!({"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]});
        let grammar = reply_grammar(&[calc()], AnswerForm::Object(Some(&schema)), Opener::Text, 100);
        assert!(admits(&grammar, r#"{"answer": {"total": 395}}"#));
        assert!(!admits(&grammar, r#"{"answer": "395"}"#));
        assert!(!admits(&grammar, "395"), "words");
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
        let grammar = reply_grammar(&[tool], AnswerForm::None, Opener::Text, string_cap(200));
        assert!(admits(&grammar, &list(&[r#"{"name": "t", "arguments": {"n": 2.5}}"#])));
        assert!(
            !admits(&grammar, &list(&[r#"{"name": "t", "arguments": {"n": 12345678901234567890}}"#])),
            "a runaway number"
        );
    }

    #[test]
    fn a_required_call_leaves_no_way_to_answer() {
        let grammar = reply_grammar(&[calc()], AnswerForm::None, Opener::Text, 100);
        assert!(!admits(&grammar, "2"));
        assert!(!admits(&grammar, r#"[{"answer": "2"}]"#));
    }

    #[test]
    fn a_reply_cut_short_is_unreadable_not_a_panic() {
        assert!(matches!(read_replies("[{\"name\": \"calc\", \"argu")[..], [ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies("[1]")[..], [ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies("{\"name\": \"calc\", \"argu")[..], [ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies("")[..], [ConstrainedReply::Unreadable { .. }]));
        let call = r#"{"name": "calc", "arguments": {"expression": "1"}}"#;
        let replies = read_replies(&format!("{CALLS_OPEN}{call}, {{\"name\": \"ca"));
        assert!(matches!(replies[..], [ConstrainedReply::Call { .. }, ConstrainedReply::Unreadable { .. }]));
        assert!(matches!(read_replies(CALLS_OPEN)[..], [ConstrainedReply::Unreadable { .. }]));
    }

    #[test]
    fn a_reply_is_cut_where_a_call_repeats_word_for_word() {
        let call = r#"{"name": "calc", "arguments": {"expression": "1"}}"#;
        let other = r#"{"name": "calc", "arguments": {"expression": "2"}}"#;
        let partial = format!("{CALLS_OPEN}{call}, {other}, {}", &call[..call.len() - 1]);
        assert_eq!(repeated_call(&partial), None, "the last call is not complete");
        let text = format!("{CALLS_OPEN}{call}, {other}, {call}");
        let at = repeated_call(&text).expect("a repeat");
        assert_eq!(&text[..at], format!("{CALLS_OPEN}{call}, {other}"));
        let cut = read_replies(&text[..at]);
        assert!(matches!(cut[..], [ConstrainedReply::Call { .. }, ConstrainedReply::Call { .. }]), "{cut:?}");
        assert_eq!(repeated_call(&list(&[call, other])), None);
    }

    #[test]
    fn an_end_marker_after_the_reply_is_ignored() {
        assert_eq!(
            read_replies("[{\"answer\": 395}]<|endoftext|><|endoftext|>"),
            [ConstrainedReply::Answer("395".into())]
        );
    }
}
