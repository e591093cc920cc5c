//! Reads what a model wrote: reasoning up to `</think>`, tool calls, and the answer text.
//!
//! Small models do not write calls the way their template asks, so the parser accepts, in order
//! of preference:
//! - `<tool_call>` blocks (one or several, the last one possibly unclosed) holding JSON, GLM's
//!   `NAME<arg_key>K</arg_key><arg_value>V</arg_value>` or Qwen3-Coder's
//!   `<function=NAME><parameter=K>V</parameter></function>`, or a name followed by a JSON object;
//! - `<function=NAME>…</function>` blocks (Llama 3.1, Qwen3-Coder without the outer tag);
//! - Mistral's `[TOOL_CALLS]` (JSON, or `NAME[ARGS]{…}`) and Llama's `<|python_tag|>` prefix;
//! - code-fenced JSON calls (the last fence possibly unclosed);
//! - output that is nothing but JSON calls, or Llama's pythonic `[tool(arg="v")]`;
//! - a JSON call on lines of its own beside prose, or ending the output.
//!
//! A call-shaped object is `{"name": ..., "arguments": {...}}`: `parameters` is taken for
//! `arguments`, a JSON string of the arguments is decoded, and OpenAI's `{"function": {...}}` and
//! `{"tool_calls": [...]}` wrappers are unwrapped. JSON that models get slightly wrong (trailing
//! commas, single quotes, `True`/`None`, unquoted keys) is read by `python_json::read_lenient`.
//! A call the model clearly began but that cannot be read (cut off, invalid JSON) becomes an error
//! that says how to write it; so does a call written only inside the reasoning, where it is not
//! run. Prose that merely mentions a call mid-sentence stays prose. Nothing here panics, recurses
//! without bound, or reads the output more than a bounded number of times.
//!
//! This file and `python_json.rs` depend on nothing in the crate but each other (and serde_json):
//! the fuzz target in `fuzz/` compiles them on their own.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::python_json::{LenientError, read_lenient};

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    /// The reasoning before `</think>`, when the output has any.
    pub reasoning: Option<String>,
    /// The text outside reasoning and calls: the answer when there are no calls.
    pub text: String,
    /// The calls in the order written.
    pub calls: Vec<Result<ParsedCall, UnreadableCall>>,
}

/// A call that could not be read: the text the model wrote (clipped to `RAW_LIMIT` bytes) and why,
/// in words it can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableCall {
    pub raw: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";
const FUNCTION_OPEN: &str = "<function=";
const FUNCTION_CLOSE: &str = "</function>";
const PARAMETER_OPEN: &str = "<parameter=";
const PARAMETER_CLOSE: &str = "</parameter>";
const ARG_KEY_OPEN: &str = "<arg_key>";
const ARG_KEY_CLOSE: &str = "</arg_key>";
const ARG_VALUE_OPEN: &str = "<arg_value>";
const ARG_VALUE_CLOSE: &str = "</arg_value>";
const PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const FENCE: &str = "```";
/// End-of-turn markers a raw completion may leave at its end.
const END_MARKERS: [&str; 7] =
    ["[|endofturn|]", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end|>", "</s>"];
/// How to write a call: the end of every error about one.
const SHAPE: &str = r#"write each call as <tool_call>{"name": "TOOL", "arguments": {"ARGUMENT": VALUE}}</tool_call>"#;
/// The most of an unreadable call's text quoted back to the model, in bytes.
pub const RAW_LIMIT: usize = 2000;
/// JSON values beside prose tried as calls, at most: each attempt may read to the end of the
/// output, so this bounds the work on a huge one.
const MAX_ATTEMPTS: usize = 32;
/// How far after a `{` the word `name` must appear for the object to be tried as a call.
const NAME_WINDOW: usize = 200;

type Call = Result<ParsedCall, UnreadableCall>;
type Calls = Vec<Call>;

pub fn parse_output(raw: &str) -> ParsedOutput {
    let (reasoning, unclosed, rest) = split_reasoning(raw);
    let (text, mut calls) = read_calls(rest);
    if calls.is_empty()
        && text.is_empty()
        && let Some(reasoning) = &reasoning
    {
        calls = calls_in_reasoning(reasoning, unclosed);
    }
    ParsedOutput { reasoning, text, calls }
}

/// Splits off the reasoning; the flag says it never closed. The generation prompt opens `<think>`
/// for the model, so output in reasoning mode starts mid-reasoning and contains only the closing
/// tag.
fn split_reasoning(raw: &str) -> (Option<String>, bool, &str) {
    let strip_open = |s: &str| s.trim_start().strip_prefix(THINK_OPEN).unwrap_or(s).trim().to_string();
    if let Some((reasoning, rest)) = raw.split_once(THINK_CLOSE) {
        let reasoning = strip_open(reasoning);
        return (Some(reasoning).filter(|r| !r.is_empty()), false, rest);
    }
    if raw.trim_start().starts_with(THINK_OPEN) {
        // Reasoning that never closed (output cut off): nothing after it to act on.
        return (Some(strip_open(raw)).filter(|r| !r.is_empty()), true, "");
    }
    (None, false, raw)
}

/// A reply with nothing but reasoning, whose reasoning holds calls: those calls are not run (the
/// reasoning is the model's draft), but saying so beats calling the reply empty.
fn calls_in_reasoning(reasoning: &str, unclosed: bool) -> Calls {
    let (_, found) = read_calls(reasoning);
    let why = if unclosed {
        "this call is inside reasoning that never closed with </think>, and calls inside reasoning are not run: \
         close the reasoning with </think>, then write the call"
    } else {
        "this call is inside the reasoning (before </think>), where calls are not run: write it after </think>"
    };
    found
        .into_iter()
        .map(|call| {
            let raw = match call {
                Ok(call) => {
                    format!("{CALL_OPEN}{}{CALL_CLOSE}", json!({"name": call.name, "arguments": call.arguments}))
                }
                Err(bad) => bad.raw,
            };
            Err(unreadable(&raw, why))
        })
        .collect()
}

/// The calls in `text` (what follows the reasoning) and the text around them.
fn read_calls(text: &str) -> (String, Calls) {
    let mut text = Cow::Borrowed(strip_end_markers(text));
    if text.contains(PYTHON_TAG) {
        // Llama 3.1 opens a call with `<|python_tag|>`; what follows is a bare call.
        text = Cow::Owned(text.replace(PYTHON_TAG, "\n"));
    }
    if !text.contains(CALL_OPEN) && text.contains(CALL_CLOSE) {
        // Closing tags without opening ones: the calls before them are bare.
        text = Cow::Owned(text.replace(CALL_CLOSE, "\n"));
    }
    let text = text.as_ref();
    if text.contains(CALL_OPEN) {
        return tagged_calls(text);
    }
    if let Some(found) = function_blocks(text) {
        return found;
    }
    if let Some(found) = mistral_calls(text) {
        return found;
    }
    if let Some(found) = fenced_calls(text) {
        return found;
    }
    if let Some(calls) = bare_calls(text).or_else(|| pythonic_calls(text.trim())) {
        return (String::new(), calls);
    }
    if let Some(found) = embedded_calls(text) {
        return found;
    }
    if let Some(found) = broken_call(text) {
        return found;
    }
    (text.trim().to_string(), Vec::new())
}

fn strip_end_markers(text: &str) -> &str {
    let mut text = text.trim_end();
    while let Some(shorter) = END_MARKERS.iter().find_map(|marker| text.strip_suffix(marker)) {
        text = shorter.trim_end();
    }
    text
}

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
        let (found, trailing) = calls_in_block(body);
        calls.extend(found);
        push_line(&mut outside, trailing);
        rest = next;
    }
    outside.push_str(rest);
    (outside.trim().to_string(), calls)
}

/// Appends `text` as a line of its own.
fn push_line(outside: &mut String, text: &str) {
    if !text.trim().is_empty() {
        outside.push('\n');
        outside.push_str(text.trim());
        outside.push('\n');
    }
}

/// The calls inside one `<tool_call>` block, and any prose the model wrote after them in it.
fn calls_in_block(body: &str) -> (Calls, &str) {
    let body = strip_fence(body.trim());
    if body.is_empty() {
        return (vec![Err(unreadable("", "the <tool_call> block is empty"))], "");
    }
    if body.starts_with(['{', '[']) {
        return json_calls(body);
    }
    if body.starts_with(FUNCTION_OPEN)
        && let Some((outside, calls)) = function_blocks(body)
    {
        return (calls, if outside.is_empty() { "" } else { body_tail(body) });
    }
    if let Some(call) = named_call(body) {
        return (vec![call], "");
    }
    (vec![Err(unreadable(body, "the tool call is not JSON"))], "")
}

/// What follows the last `</function>` of a block (prose the model added inside the tag).
fn body_tail(body: &str) -> &str {
    body.rfind(FUNCTION_CLOSE).map_or("", |end| &body[end + FUNCTION_CLOSE.len()..])
}

/// One or more JSON values, each a call or a list of calls, separated by whitespace or commas.
/// Stray closing brackets after the last are ignored; other text after it is returned as prose.
fn json_calls(body: &str) -> (Calls, &str) {
    let mut calls = Vec::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ';');
        if rest.is_empty() || !rest.starts_with(['{', '[']) {
            break;
        }
        match read_value(rest) {
            Ok((value, used)) => {
                calls.extend(calls_from_value(value, &rest[..used]));
                rest = &rest[used..];
            }
            Err(error) => {
                calls.push(Err(json_error(rest, &error)));
                rest = "";
            }
        }
    }
    if rest.chars().all(|c| c.is_whitespace() || matches!(c, '}' | ']' | ',' | ';')) {
        rest = "";
    }
    (calls, rest)
}

/// A call whose name is written before its arguments: GLM's `NAME<arg_key>…`, or `NAME {…}`, or
/// a bare `NAME` (no arguments).
fn named_call(body: &str) -> Option<Call> {
    let name_end = body.find(['\n', '<', '{', ' ']).unwrap_or(body.len());
    let name = body[..name_end].trim();
    if !is_tool_name(name) {
        return None;
    }
    let mut rest = body[name_end..].trim();
    if rest.starts_with('{') {
        return Some(match read_value(rest) {
            Ok((arguments, used)) if rest[used..].trim().is_empty() => call_from_parts(name, arguments, body),
            Ok(_) => Err(unreadable(body, "the tool call has text after its arguments")),
            Err(error) => Err(json_error(body, &error)),
        });
    }
    if !rest.is_empty() && !rest.starts_with(ARG_KEY_OPEN) {
        return None;
    }
    let mut arguments = Map::new();
    while !rest.is_empty() {
        let pair = rest.strip_prefix(ARG_KEY_OPEN).and_then(|r| r.split_once(ARG_KEY_CLOSE)).and_then(|(key, r)| {
            let (value, r) = r.trim_start().strip_prefix(ARG_VALUE_OPEN)?.split_once(ARG_VALUE_CLOSE)?;
            Some((key, value, r))
        });
        let Some((key, value, next)) = pair else {
            let error = "the arguments are not complete <arg_key>NAME</arg_key><arg_value>VALUE</arg_value> pairs";
            return Some(Err(unreadable(body, error)));
        };
        arguments.insert(key.trim().to_string(), tagged_value(value));
        rest = next.trim();
    }
    Some(Ok(ParsedCall { name: name.to_string(), arguments: Value::Object(arguments) }))
}

/// An argument written between tags: JSON when it reads as JSON (numbers, lists, quoted strings),
/// else the text itself, less the line breaks that put it on lines of its own.
fn tagged_value(value: &str) -> Value {
    let value = value.strip_prefix('\n').unwrap_or(value);
    let value = value.strip_suffix('\n').unwrap_or(value);
    serde_json::from_str(value.trim()).unwrap_or_else(|_| Value::String(value.to_string()))
}

/// `<function=NAME>…</function>` blocks: the body is a JSON object of the arguments or
/// `<parameter=KEY>VALUE</parameter>` pairs.
fn function_blocks(text: &str) -> Option<(String, Calls)> {
    if !text.contains(FUNCTION_OPEN) {
        return None;
    }
    let mut calls = Vec::new();
    let mut outside = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(FUNCTION_OPEN) {
        outside.push_str(&rest[..start]);
        let after_open = &rest[start + FUNCTION_OPEN.len()..];
        let (block, next) = match after_open.find(FUNCTION_CLOSE) {
            Some(end) => (&after_open[..end], &after_open[end + FUNCTION_CLOSE.len()..]),
            None => (after_open, ""),
        };
        calls.push(function_block(block));
        rest = next;
    }
    outside.push_str(rest);
    Some((outside.trim().to_string(), calls))
}

fn function_block(block: &str) -> Call {
    let raw = format!("{FUNCTION_OPEN}{block}");
    let Some((name, body)) = block.split_once('>') else {
        return Err(unreadable(&raw, "`<function=NAME>` is missing its `>`"));
    };
    let name = name.trim();
    if !is_tool_name(name) {
        return Err(unreadable(&raw, &format!("`{name}` is not a tool name")));
    }
    let mut rest = body.trim();
    if rest.starts_with('{') {
        return match read_value(rest) {
            Ok((arguments, used)) if rest[used..].trim().is_empty() => call_from_parts(name, arguments, &raw),
            Ok(_) => Err(unreadable(&raw, "the call has text after its arguments")),
            Err(error) => Err(json_error(&raw, &error)),
        };
    }
    let mut arguments = Map::new();
    while !rest.is_empty() {
        let pair = rest.strip_prefix(PARAMETER_OPEN).and_then(|r| r.split_once('>')).and_then(|(key, r)| {
            let (value, r) = r.split_once(PARAMETER_CLOSE)?;
            Some((key, value, r))
        });
        let Some((key, value, next)) = pair else {
            let error = "the arguments are not complete <parameter=NAME>VALUE</parameter> blocks";
            return Err(unreadable(&raw, error));
        };
        arguments.insert(key.trim().to_string(), tagged_value(value));
        rest = next.trim();
    }
    Ok(ParsedCall { name: name.to_string(), arguments: Value::Object(arguments) })
}

/// Mistral's `[TOOL_CALLS]`, followed by a JSON list of calls or by `NAME[ARGS]{…}`.
fn mistral_calls(text: &str) -> Option<(String, Calls)> {
    let (before, after) = text.split_once(MISTRAL_CALLS)?;
    let mut calls = Vec::new();
    let mut outside = before.to_string();
    for segment in after.split(MISTRAL_CALLS).map(str::trim) {
        if segment.starts_with(['{', '[']) {
            let (found, trailing) = json_calls(segment);
            calls.extend(found);
            push_line(&mut outside, trailing);
        } else if let Some((name, arguments)) = segment.split_once(MISTRAL_ARGS) {
            let arguments = arguments.trim();
            match read_value(arguments) {
                Ok((value, used)) => {
                    calls.push(call_from_parts(name.trim(), value, segment));
                    push_line(&mut outside, &arguments[used..]);
                }
                Err(error) => calls.push(Err(json_error(segment, &error))),
            }
        } else {
            calls.push(Err(unreadable(segment, "[TOOL_CALLS] is not followed by calls")));
        }
    }
    Some((outside.trim().to_string(), calls))
}

/// Code-fenced calls: ```json {...} ``` blocks whose content is call-shaped JSON; the last fence
/// may be unclosed (output cut off after the call). Fences that hold anything else stay in the
/// text, since answers may show code.
fn fenced_calls(text: &str) -> Option<(String, Calls)> {
    let mut calls = Vec::new();
    let mut outside = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(FENCE) {
        let after_open = &rest[start + FENCE.len()..];
        let block_len = after_open.find(FENCE).map_or(rest.len() - start, |end| FENCE.len() + end + FENCE.len());
        let block = &rest[start..start + block_len];
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

/// Text that is nothing but call-shaped JSON values (objects or lists of them).
fn bare_calls(text: &str) -> Option<Calls> {
    let text = text.trim();
    if !text.starts_with(['{', '[']) {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ';');
        if !rest.starts_with(['{', '[']) {
            break;
        }
        let (value, used) = read_value(rest).ok()?;
        if !looks_like_call(&value) {
            return None;
        }
        calls.extend(calls_from_value(value, &rest[..used]));
        rest = &rest[used..];
    }
    let stray = rest.chars().all(|c| c.is_whitespace() || matches!(c, '}' | ']' | ',' | ';'));
    (stray && !calls.is_empty()).then_some(calls)
}

/// Llama's pythonic calls, the whole text: `[calc(expression="1+1"), other(x=1)]`.
fn pythonic_calls(text: &str) -> Option<Calls> {
    let mut rest = text.strip_prefix('[')?.strip_suffix(']')?.trim();
    let mut calls = Vec::new();
    while !rest.is_empty() {
        let name_end = rest.find(|c: char| !is_name_char(c))?;
        let name = &rest[..name_end];
        if !is_tool_name(name) {
            return None;
        }
        rest = rest[name_end..].trim_start().strip_prefix('(')?;
        let mut arguments = Map::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(')') {
                rest = after;
                break;
            }
            let key_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let (key, after_key) = rest.split_at(key_end);
            let Some(after_equals) = after_key.trim_start().strip_prefix('=').filter(|_| !key.is_empty()) else {
                let error = format!("name each argument of `{name}`, as in [{name}(ARGUMENT=VALUE)]");
                return Some(vec![Err(unreadable(text, &error))]);
            };
            let Ok((value, used)) = read_lenient(after_equals) else {
                let error = format!("the value of `{key}` in the call of `{name}` cannot be read");
                return Some(vec![Err(unreadable(text, &error))]);
            };
            arguments.insert(key.to_string(), value);
            rest = after_equals[used..].trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with(')') {
                return None;
            }
        }
        calls.push(Ok(ParsedCall { name: name.to_string(), arguments: Value::Object(arguments) }));
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    (!calls.is_empty()).then_some(calls)
}

/// Calls written beside prose: a call-shaped JSON value that starts a line, or ends one (or the
/// output). A call mid-sentence, with prose on both sides of it, is a mention, not a call.
fn embedded_calls(text: &str) -> Option<(String, Calls)> {
    let mut calls = Vec::new();
    let mut outside = String::new();
    let mut copied = 0;
    let mut attempts = 0;
    for start in candidates(text) {
        if start < copied {
            continue; // inside a call already taken
        }
        if attempts == MAX_ATTEMPTS {
            break;
        }
        attempts += 1;
        let Ok((value, used)) = read_value(&text[start..]) else { continue };
        let end = start + used;
        if !looks_like_call(&value) || !(starts_line(text, start) || ends_line(text, end)) {
            continue;
        }
        outside.push_str(&text[copied..start]);
        calls.extend(calls_from_value(value, &text[start..end]));
        copied = end;
    }
    if calls.is_empty() {
        return None;
    }
    outside.push_str(&text[copied..]);
    Some((outside.trim().to_string(), calls))
}

/// Where a call may start: a `{`, or a `[` opening a list of objects, with the word `name` soon
/// after.
fn candidates(text: &str) -> impl Iterator<Item = usize> + '_ {
    // The next `name` at or after the candidate, looked for once per occurrence: linear in the text.
    let mut next_name = text.find("name");
    text.match_indices(['{', '[']).map(|(at, _)| at).filter(move |&at| {
        if next_name.is_some_and(|name_at| name_at < at) {
            next_name = text[at..].find("name").map(|offset| at + offset);
        }
        let opens_object = text.as_bytes()[at] == b'{' || text[at + 1..].trim_start().starts_with('{');
        opens_object && next_name.is_some_and(|name_at| name_at - at < NAME_WINDOW)
    })
}

fn starts_line(text: &str, at: usize) -> bool {
    text[..at].rsplit('\n').next().is_none_or(|line| line.trim().is_empty())
}

fn ends_line(text: &str, at: usize) -> bool {
    text[at..].split('\n').next().is_none_or(|line| line.trim().is_empty())
}

/// A call the model began but that no reading accepts (cut off, or not JSON): an object whose
/// first key is `name`, `function` or `tool_calls`, that starts a line or runs to the end of the
/// output. It becomes an error that says what is wrong; the prose before it stays text.
fn broken_call(text: &str) -> Option<(String, Calls)> {
    for start in candidates(text).filter(|&at| opens_call(&text[at..])).take(MAX_ATTEMPTS) {
        // A fence around it is not part of the call.
        let end = text[start..].find(FENCE).map_or(text.len(), |i| start + i);
        let Err(error) = read_value(&text[start..end]) else { continue };
        if !(starts_line(text, start) || error.lenient.eof) {
            continue;
        }
        let before = text[..start].trim_end();
        let before = before.strip_suffix("```json").or_else(|| before.strip_suffix(FENCE)).unwrap_or(before);
        let error = json_error(&text[start..end], &error);
        return Some((before.trim().to_string(), vec![Err(error)]));
    }
    None
}

/// Whether `text` opens an object (or a list of them) whose first key says it is a call.
fn opens_call(text: &str) -> bool {
    let text = text.trim_start_matches(['[', ' ', '\n', '\t', '\r']);
    let Some(after) = text.strip_prefix('{') else { return false };
    let key = after.trim_start().trim_start_matches(['"', '\'']);
    ["name", "function", "tool_calls"]
        .iter()
        .any(|k| key.strip_prefix(k).is_some_and(|r| r.trim_start_matches(['"', '\'']).trim_start().starts_with(':')))
}

/// Why a value could not be read: serde_json's words, and whether the text ended too soon.
struct ValueError {
    strict: serde_json::Error,
    lenient: LenientError,
}

/// One value at the start of `text`: strict JSON, else the lenient reading (Python literals,
/// trailing commas, unquoted keys). Returns the value and the bytes it took.
fn read_value(text: &str) -> Result<(Value, usize), ValueError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let strict = match stream.next() {
        Some(Ok(value)) => return Ok((value, stream.byte_offset())),
        Some(Err(error)) => error,
        None => serde_json::from_str::<Value>(text).err().unwrap_or_else(|| serde::de::Error::custom("no value")),
    };
    read_lenient(text).map_err(|lenient| ValueError { strict, lenient })
}

fn json_error(raw: &str, error: &ValueError) -> UnreadableCall {
    let cut_off = if error.lenient.eof {
        let open = &error.lenient.open;
        let closers = if open.is_empty() { String::new() } else { format!(" (`{open}` would close it)") };
        format!(": it stops before the JSON is complete{closers}; the output may have been cut off")
    } else {
        String::new()
    };
    unreadable(raw, &format!("the tool call is not valid JSON ({}){cut_off}", error.strict))
}

fn looks_like_call(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty() && items.iter().all(looks_like_call),
        Value::Object(object) if !object.contains_key("name") && object.contains_key("tool_calls") => {
            object.get("tool_calls").is_some_and(looks_like_call)
        }
        _ => {
            let value = value.get("function").filter(|f| f.is_object()).unwrap_or(value);
            value.get("name").is_some_and(Value::is_string)
                && (value.get("arguments").is_some() || value.get("parameters").is_some())
        }
    }
}

/// The calls in one JSON value: a call, a list of calls, or OpenAI's `{"tool_calls": [...]}`.
fn calls_from_value(value: Value, raw: &str) -> Calls {
    match value {
        Value::Array(items) if items.is_empty() => vec![Err(unreadable(raw, "the list of tool calls is empty"))],
        Value::Array(items) => {
            items.into_iter().map(|item| call_from_value(item).map_err(|e| unreadable(raw, &e))).collect()
        }
        Value::Object(mut object) if !object.contains_key("name") && object.contains_key("tool_calls") => {
            match object.remove("tool_calls") {
                Some(Value::Array(items)) if !items.is_empty() => calls_from_value(Value::Array(items), raw),
                _ => vec![Err(unreadable(raw, "\"tool_calls\" must be a non-empty list of calls"))],
            }
        }
        other => vec![call_from_value(other).map_err(|e| unreadable(raw, &e))],
    }
}

fn call_from_parts(name: &str, arguments: Value, raw: &str) -> Call {
    call_from_value(json!({"name": name, "arguments": arguments})).map_err(|e| unreadable(raw, &e))
}

fn call_from_value(value: Value) -> Result<ParsedCall, String> {
    let Value::Object(mut object) = value else {
        return Err("a tool call must be a JSON object with \"name\" and \"arguments\"".into());
    };
    if let Some(Value::Object(function)) = object.remove("function") {
        object = function;
    }
    let name = match object.remove("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name,
        Some(_) => return Err("the tool call's \"name\" must be a non-empty string".into()),
        None => return Err("the tool call has no \"name\"".into()),
    };
    let arguments = match object.remove("arguments").or_else(|| object.remove("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(encoded)) if encoded.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(encoded)) => match read_value(encoded.trim()) {
            Ok((arguments, used)) if encoded.trim()[used..].trim().is_empty() => arguments,
            _ => {
                return Err(format!(
                    "the arguments of `{name}` are a string that is not a JSON object; give them as an object of named arguments"
                ));
            }
        },
        Some(arguments) => arguments,
    };
    if !arguments.is_object() {
        return Err(format!("the arguments of `{name}` must be a JSON object of named arguments"));
    }
    Ok(ParsedCall { name, arguments })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A plausible tool name: ASCII letters, digits, `_`, `-` and `.`, starting with a letter or `_`.
fn is_tool_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && name.chars().all(is_name_char)
}

fn unreadable(raw: &str, problem: &str) -> UnreadableCall {
    UnreadableCall { raw: clip(raw), error: format!("{problem}; {SHAPE}") }
}

/// At most `RAW_LIMIT` bytes of `raw`, cut on a character boundary, saying how much was left out.
fn clip(raw: &str) -> String {
    if raw.len() <= RAW_LIMIT {
        return raw.to_string();
    }
    let mut end = RAW_LIMIT;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &raw[..end], raw.len() - end)
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

    const CALC: &str = r#"{"name": "calc", "arguments": {"expression": "1+1"}}"#;

    fn one_call(text: &str) -> ParsedOutput {
        let out = parse_output(text);
        assert_eq!(out.calls, vec![call("calc", json!({"expression": "1+1"}))], "{text:?}");
        out
    }

    fn error_of(text: &str) -> String {
        let out = parse_output(text);
        match &out.calls[..] {
            [Err(bad)] => bad.error.clone(),
            other => panic!("expected one unreadable call in {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn json_models_get_slightly_wrong_is_read() {
        one_call(r#"<tool_call>{"name": "calc", "arguments": {"expression": "1+1",},}</tool_call>"#);
        one_call("<tool_call>{'name': 'calc', 'arguments': {'expression': '1+1'}, 'strict': True}</tool_call>");
        one_call(r#"<tool_call>{name: "calc", arguments: {expression: "1+1"}}</tool_call>"#);
        one_call("{'name': 'calc', 'arguments': {'expression': '1+1'}, 'id': None}");
        one_call(&format!("<tool_call>{CALC}}}</tool_call>")); // a stray closing brace
        one_call(&format!("<tool_call>{CALC}\n</tool_call>\n"));
    }

    #[test]
    fn wrappers_and_encoded_arguments_are_unwrapped() {
        one_call(r#"{"type": "function", "function": {"name": "calc", "arguments": "{\"expression\": \"1+1\"}"}}"#);
        one_call(
            r#"{"tool_calls": [{"id": "x", "type": "function", "function": {"name": "calc", "arguments": {"expression": "1+1"}}}]}"#,
        );
        one_call(r#"<tool_call>{"name": "calc", "arguments": "{'expression': '1+1'}"}</tool_call>"#);
        let error = error_of(r#"<tool_call>{"name": "calc", "arguments": "1+1"}</tool_call>"#);
        assert!(error.contains("not a JSON object") && error.contains(SHAPE), "{error}");
        let out = parse_output(r#"<tool_call>{"name": "calc", "arguments": ""}</tool_call>"#);
        assert_eq!(out.calls, vec![call("calc", json!({}))]);
    }

    #[test]
    fn other_models_call_formats_are_read() {
        one_call("<tool_call>calc\n<arg_key>expression</arg_key>\n<arg_value>1+1</arg_value>\n</tool_call>");
        one_call("<tool_call>\n<function=calc>\n<parameter=expression>\n1+1\n</parameter>\n</function>\n</tool_call>");
        one_call(r#"<function=calc>{"expression": "1+1"}</function>"#);
        one_call("<tool_call>calc {\"expression\": \"1+1\"}</tool_call>");
        one_call(r#"<|python_tag|>{"name": "calc", "parameters": {"expression": "1+1"}}<|eom_id|>"#);
        one_call(r#"[calc(expression="1+1")]"#);
        one_call(&format!("[TOOL_CALLS][{CALC}]"));
        one_call(r#"[TOOL_CALLS]calc[ARGS]{"expression": "1+1"}"#);
        let glm = parse_output(
            "<tool_call>calc\n<arg_key>n</arg_key><arg_value>3</arg_value><arg_key>s</arg_key><arg_value>x y</arg_value></tool_call>",
        );
        assert_eq!(glm.calls, vec![call("calc", json!({"n": 3, "s": "x y"}))]);
        let pythonic = parse_output("[a(x=1, y='two', z=[True, None]), b()]");
        assert_eq!(
            pythonic.calls,
            vec![call("a", json!({"x": 1, "y": "two", "z": [true, null]})), call("b", json!({}))]
        );
        assert!(error_of(r#"[calc("1+1")]"#).contains("name each argument"));
        assert!(error_of("<tool_call>calc\n<arg_key>expression</arg_key></tool_call>").contains("<arg_key>"));
    }

    #[test]
    fn end_of_turn_markers_are_not_text() {
        assert_eq!(parse_output("395<|im_end|>").text, "395");
        assert_eq!(parse_output("395 [|endofturn|]\n<|endoftext|>").text, "395");
        assert_eq!(one_call(&format!("<tool_call>{CALC}</tool_call>[|endofturn|]")).text, "");
    }

    #[test]
    fn a_call_beside_prose_is_read_a_call_mid_sentence_is_not() {
        assert_eq!(one_call(&format!("Let me compute.\n{CALC}")).text, "Let me compute.");
        assert_eq!(one_call(&format!("{CALC}\nThat adds them.")).text, "That adds them.");
        assert_eq!(one_call(&format!("I'll call: {CALC}")).text, "I'll call:");
        assert_eq!(one_call(&format!("Sure.\n{CALC}</tool_call>")).text, "Sure.");
        let mention = format!("Calling {CALC} gives 2, so the answer is 2.");
        let out = parse_output(&mention);
        assert_eq!((out.text.as_str(), out.calls.len()), (mention.as_str(), 0));
        let two = parse_output(&format!("First:\n[{CALC}, {CALC}]\nDone."));
        assert_eq!((two.text.as_str(), two.calls.len()), ("First:\n\nDone.", 2));
    }

    #[test]
    fn fences_may_be_left_open() {
        one_call(&format!("```json\n{CALC}\n"));
        one_call(&format!("<tool_call>\n```json\n{CALC}\n```\n</tool_call>"));
    }

    #[test]
    fn a_call_cut_off_says_so() {
        let error = error_of(r#"<tool_call>{"name": "calc", "arguments": {"expression": "1+"#);
        assert!(error.contains("not valid JSON") && error.contains("cut off") && error.contains(SHAPE), "{error}");
        let bare = parse_output("Let me see.\n{\"name\": \"calc\", \"arguments\": {\"expr");
        assert_eq!(bare.text, "Let me see.");
        assert!(matches!(&bare.calls[..], [Err(bad)] if bad.error.contains("`}}` would close it")), "{bare:?}");
        let fenced = parse_output("```json\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"1\",\n```");
        assert!(matches!(&fenced.calls[..], [Err(bad)] if bad.raw.starts_with("{\"name\"") && !bad.raw.contains('`')));
    }

    #[test]
    fn every_unreadable_call_says_how_to_write_one() {
        for text in [
            "<tool_call></tool_call>",
            "<tool_call>call calc please</tool_call>",
            r#"<tool_call>{"name": 5, "arguments": {}}</tool_call>"#,
            r#"<tool_call>[]</tool_call>"#,
            r#"<tool_call>{"tool_calls": 3}</tool_call>"#,
            "<function=calc>{oops</function>",
            "<function=>x</function>",
            "[TOOL_CALLS]nonsense",
        ] {
            let error = error_of(text);
            assert!(error.ends_with(SHAPE), "{text:?}: {error}");
        }
    }

    #[test]
    fn calls_only_in_the_reasoning_are_not_run_but_explained() {
        let closed = error_of(&format!("I will call <tool_call>{CALC}</tool_call>\n</think>\n\n"));
        assert!(closed.contains("inside the reasoning") && closed.contains("after </think>"), "{closed}");
        let open = error_of(&format!("<think>\nPlan: <tool_call>{CALC}</tool_call>"));
        assert!(open.contains("never closed"), "{open}");
        // A draft in the reasoning and the call after it: the call runs once.
        one_call(&format!("Draft: {CALC}\n</think>\n<tool_call>{CALC}</tool_call>"));
        // Reasoning then an answer: the answer stands.
        let answer = parse_output(&format!("maybe {CALC}\n</think>\nIt is 2."));
        assert_eq!((answer.text.as_str(), answer.calls.len()), ("It is 2.", 0));
    }

    #[test]
    fn answers_that_show_json_stay_answers() {
        for text in [
            "Here it is:\n```json\n{\"result\": 2}\n```",
            "I could pass {\"expression\": \"1+1\"}, but it is 2.",
            "[1] The answer is 2.",
            "{}",
            "[]",
            "{\"name\": \"Ada\", \"age\": 36}",
        ] {
            let out = parse_output(text);
            assert_eq!((out.text.as_str(), out.calls.len()), (text, 0), "{text:?}");
        }
    }

    #[test]
    fn huge_and_deep_outputs_neither_overflow_nor_crawl() {
        let start = std::time::Instant::now();
        let deep = format!("<tool_call>{}", "[".repeat(200_000));
        assert!(error_of(&deep).contains("not valid JSON"));
        let deep_call = format!(r#"{{"name": "calc", "arguments": {}"#, r#"{"a": "#.repeat(200_000));
        let bad = &parse_output(&deep_call).calls;
        assert!(matches!(&bad[..], [Err(bad)] if bad.raw.len() < RAW_LIMIT + 100), "the raw text is clipped");
        assert_eq!(parse_output(&"[".repeat(200_000)).calls.len(), 0);
        // Many call-like starts in a long text: a bounded number of attempts.
        let noisy = format!("{}\n", r#"{"name": "x", "arguments": {"a": [1, 2, "#).repeat(100_000);
        assert!(parse_output(&noisy).calls.len() <= 1);
        let big_answer = "word ".repeat(1_000_000);
        assert_eq!(parse_output(&big_answer).text, big_answer.trim());
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{:?}", start.elapsed());
    }
}
