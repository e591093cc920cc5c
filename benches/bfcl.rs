//! Tool-call accuracy of the default local model on the Berkeley Function Calling Leaderboard's
//! single-turn categories (benches/bfcl/: simple, multiple, parallel, parallel_multiple,
//! irrelevance), with constrained and unconstrained calls, on both local engines. Calls are scored
//! with BFCL's AST rules, written here: the function's name, no parameter it does not declare,
//! every required one present, each value among the accepted ones (strings compared as BFCL
//! normalises them, an integer accepted for a float), and for several calls any order. In
//! `irrelevance` a case passes when the model calls no tool.
//!
//!     scripts/setup.sh && cargo bench --profile dev --bench bfcl -- [--cases N] [--model NAME]
//!         [--only CATEGORY] [--engine llama_cpp|mistralrs] [--calls constrained|free] [--show-failures]
//!
//! The first N cases of each category (default 20), greedy, `max_tokens` 192, 8 cases at a time.
//! `--show-failures` prints each failing case's reply to stderr.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures::future::join_all;
use reagent::conversation::{Message, ToolCall, ToolChoice, ToolDeclaration};
use reagent::model::catalog::{DEFAULT_MODEL, find};
use reagent::model::{LocalModels, Model, ModelRequest, load_local};
use reagent::spec::{LocalEngine, LocalModelSpec, LocalSource, Sampling};
use serde_json::{Map, Value, json};

const CATEGORIES: &[(&str, &str)] = &[
    ("simple", "simple_python"),
    ("multiple", "multiple"),
    ("parallel", "parallel"),
    ("parallel_multiple", "parallel_multiple"),
    ("irrelevance", "irrelevance"),
];
const AT_ONCE: usize = 8;

struct Case {
    messages: Vec<Message>,
    tools: Vec<ToolDeclaration>,
    /// BFCL's declarations, for the parameters' types.
    functions: Vec<Value>,
    id: String,
    /// One map per expected call: function name → parameter → accepted values.
    expected: Vec<Map<String, Value>>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bfcl")
}

fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn cases(file: &str, count: usize) -> Vec<Case> {
    let questions = lines(&data_dir().join(format!("BFCL_v4_{file}.json")));
    let answers: HashMap<String, Value> = {
        let path = data_dir().join(format!("possible_answer/BFCL_v4_{file}.json"));
        if path.exists() {
            lines(&path).into_iter().map(|a| (a["id"].as_str().unwrap_or_default().to_string(), a)).collect()
        } else {
            HashMap::new()
        }
    };
    questions
        .into_iter()
        .take(count)
        .map(|q| {
            let messages = q["question"][0]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let content = m["content"].as_str().unwrap_or_default().to_string();
                    match m["role"].as_str() {
                        Some("system") => Message::System { content },
                        _ => Message::User { content },
                    }
                })
                .collect();
            let functions: Vec<Value> = q["function"].as_array().cloned().unwrap_or_default();
            let tools = functions
                .iter()
                .map(|f| ToolDeclaration {
                    name: f["name"].as_str().unwrap_or_default().to_string(),
                    description: f["description"].as_str().unwrap_or_default().to_string(),
                    parameters: json_schema(&f["parameters"]),
                })
                .collect();
            let id = q["id"].as_str().unwrap_or_default();
            let expected = answers
                .get(id)
                .and_then(|a| a["ground_truth"].as_array())
                .map(|calls| calls.iter().filter_map(|c| c.as_object().cloned()).collect())
                .unwrap_or_default();
            Case { id: id.to_string(), messages, tools, functions, expected }
        })
        .collect()
}

/// BFCL's types as JSON Schema, as its OpenAI handler maps them.
fn json_schema(bfcl: &Value) -> Value {
    match bfcl {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    ("type", Some("dict")) => out.insert(key.clone(), json!("object")),
                    ("type", Some("float")) => out.insert(key.clone(), json!("number")),
                    ("type", Some("tuple")) => out.insert(key.clone(), json!("array")),
                    ("type", Some("any")) => None,
                    ("properties", _) => out.insert(
                        key.clone(),
                        Value::Object(
                            value.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), json_schema(v))).collect(),
                        ),
                    ),
                    ("items", _) => out.insert(key.clone(), json_schema(value)),
                    _ => out.insert(key.clone(), value.clone()),
                };
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// How BFCL compares strings: case, spaces and `,./-_*^` do not count.
fn normalised(text: &str) -> String {
    text.chars().filter(|c| !" ,./-_*^".contains(*c)).collect::<String>().to_lowercase()
}

/// Whether `value` is `accepted` (one accepted value) for a parameter of BFCL type `kind`.
fn same_value(value: &Value, accepted: &Value, kind: &str) -> bool {
    match (value, accepted) {
        (Value::String(a), Value::String(b)) => normalised(a) == normalised(b),
        (Value::Number(a), Value::Number(b)) => {
            if kind == "integer" && !a.is_i64() && !a.is_u64() {
                return false;
            }
            a.as_f64() == b.as_f64()
        }
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y, "")),
        (Value::Object(a), Value::Object(b)) => {
            // A nested dict's accepted values are lists of options, like a call's parameters.
            b.iter().all(|(key, options)| match a.get(key) {
                None => accepts_absence(options),
                Some(v) => options.as_array().is_some_and(|o| o.iter().any(|opt| same_value(v, opt, ""))),
            }) && a.keys().all(|k| b.contains_key(k))
        }
        _ => false,
    }
}

fn accepts_absence(options: &Value) -> bool {
    options.as_array().is_some_and(|o| o.iter().any(|v| v == "" || v.is_null()))
}

/// Whether one call is one expected call (`expected`: {name: {param: [accepted…]}}).
fn call_matches(call: &ToolCall, expected: &Map<String, Value>, functions: &[Value]) -> bool {
    let Some((name, parameters)) = expected.iter().next() else { return false };
    if &call.name != name {
        return false;
    }
    let Some(arguments) = call.arguments.as_object() else { return false };
    let Some(parameters) = parameters.as_object() else { return false };
    let declared = functions.iter().find(|f| f["name"] == *name);
    let kind = |param: &str| {
        declared.and_then(|f| f["parameters"]["properties"][param]["type"].as_str()).unwrap_or_default().to_string()
    };
    if arguments.keys().any(|k| !parameters.contains_key(k)) {
        return false; // a parameter the answer does not know
    }
    parameters.iter().all(|(param, options)| match arguments.get(param) {
        None => accepts_absence(options),
        Some(value) => options
            .as_array()
            .is_some_and(|o| o.iter().filter(|v| *v != "").any(|accepted| same_value(value, accepted, &kind(param)))),
    })
}

/// Whether the calls are the expected ones, in any order.
fn calls_match(calls: &[ToolCall], case: &Case) -> bool {
    fn assign(calls: &[ToolCall], expected: &[Map<String, Value>], used: &mut Vec<bool>, functions: &[Value]) -> bool {
        let Some((first, rest)) = expected.split_first() else { return true };
        for (i, call) in calls.iter().enumerate() {
            if !used[i] && call_matches(call, first, functions) {
                used[i] = true;
                if assign(calls, rest, used, functions) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    calls.len() == case.expected.len() && assign(calls, &case.expected, &mut vec![false; calls.len()], &case.functions)
}

/// Whether the model passes the case, and what it replied (for `--show-failures`).
async fn attempt(model: &dyn Model, case: &Case, irrelevance: bool) -> (bool, String) {
    let request = ModelRequest {
        messages: &case.messages,
        tools: &case.tools,
        thinking: false,
        tool_choice: ToolChoice::Auto,
        max_thinking_tokens: None,
        answer_schema: None,
        deltas: None,
    };
    let reply = match model.complete(request).await {
        Ok(reply) => reply,
        Err(e) => return (false, format!("error: {e}")),
    };
    let shown = format!("{:?} {}", reply.calls, reply.text);
    let calls: Vec<ToolCall> = reply.calls.into_iter().filter_map(Result::ok).collect();
    let passed = if irrelevance { calls.is_empty() } else { calls_match(&calls, case) };
    (passed, shown)
}

fn argument(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let count: usize = argument("--cases").and_then(|n| n.parse().ok()).unwrap_or(20);
    let name = argument("--model").unwrap_or_else(|| DEFAULT_MODEL.to_string());
    find(&name).ok().and_then(|m| m.pulled()).unwrap_or_else(|| panic!("{name}: run scripts/setup.sh"));
    let only = argument("--only");
    let engines: Vec<LocalEngine> = match argument("--engine").as_deref() {
        Some("llama_cpp") => vec![LocalEngine::LlamaCpp],
        Some("mistralrs") => vec![LocalEngine::Mistralrs],
        Some(other) => panic!("--engine {other}: llama_cpp or mistralrs"),
        None => vec![LocalEngine::LlamaCpp, LocalEngine::Mistralrs],
    };
    let modes: Vec<bool> = match argument("--calls").as_deref() {
        Some("constrained") => vec![true],
        Some("free") => vec![false],
        Some(other) => panic!("--calls {other}: constrained or free"),
        None => vec![true, false],
    };
    let show_failures = std::env::args().any(|a| a == "--show-failures");
    let categories: Vec<(&str, bool, Vec<Case>)> = CATEGORIES
        .iter()
        .filter(|(label, _)| only.as_deref().is_none_or(|o| o == *label))
        .map(|(label, file)| (*label, *label == "irrelevance", cases(file, count)))
        .collect();

    println!("BFCL single-turn accuracy, {name}, first {count} cases per category (AST rules):\n");
    let header: Vec<&str> = categories.iter().map(|(label, _, _)| *label).collect();
    println!("| engine | calls | {} |", header.join(" | "));
    println!("|---|---|{}", "---|".repeat(header.len()));
    for engine in engines {
        for constrained in modes.iter().copied() {
            let spec = LocalModelSpec {
                constrained,
                engine,
                sampling: Sampling { max_tokens: 192, temperature: 0.0 },
                ..LocalModelSpec::new(LocalSource::Catalog(name.clone()))
            };
            let model = load_local(&LocalModels::default(), &spec).await.expect("the model loads");
            let mut cells = Vec::new();
            for (_, irrelevance, cases) in &categories {
                let mut passed = 0;
                for chunk in cases.chunks(AT_ONCE) {
                    let results = join_all(chunk.iter().map(|case| attempt(model.as_ref(), case, *irrelevance))).await;
                    for (case, (ok, shown)) in chunk.iter().zip(results) {
                        passed += usize::from(ok);
                        if show_failures && !ok {
                            eprintln!("bfcl: failed {}: {shown}", case.id);
                        }
                    }
                }
                cells.push(format!("{passed}/{}", cases.len()));
                eprintln!("bfcl: {engine:?} constrained={constrained}: {}", cells.join(" "));
            }
            let engine = if engine == LocalEngine::LlamaCpp { "llama.cpp" } else { "mistralrs" };
            let calls = if constrained { "constrained" } else { "free" };
            println!("| {engine} | {calls} | {} |", cells.join(" | "));
        }
    }
}
