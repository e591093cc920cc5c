//! The local engines' speed, side by side in one run:
//!
//! 1. decode tokens per second, one stream: reagent's llama.cpp engine, llama-cpp-python (built
//!    for the same ISA level, x86-64-v3, with as many threads) and reagent's mistralrs engine, on
//!    the same GGUF files: SmolLM2, Qwen2.5-Coder and a random-weight EXAONE 4.0 1.2B (Q4_K_M);
//! 2. 8 agents at once against the same 8 requests one after another, on the llama.cpp engine,
//!    beside llama.cpp's own batched decode of 8 sequences against one (benches/llama_cpp_batched.py):
//!    what batching can give on this machine at best;
//! 3. time to first token of steps 3–6 of a 6-step calculator conversation, with each run's KV
//!    cache kept between steps against prefilling every step's whole prompt.
//!
//! Run: `scripts/setup.sh && REAGENT_LLAMA_PYTHON=$(scripts/llama-server-setup.sh) cargo bench
//! --profile dev --bench decode`.
//!
//! Greedy decoding, at most MAX_TOKENS generated per request. The llama-cpp-python column is
//! skipped (and says so) when REAGENT_LLAMA_PYTHON is unset; the EXAONE file is made once with it
//! (benches/exaone_1_2b.py) and cached.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::future::join_all;
use reagent::cache_dir;
use reagent::conversation::{Message, ToolCall, ToolChoice, ToolDeclaration};
use reagent::model::catalog::find;
use reagent::model::{LocalModels, Model, ModelRequest, load_local};
use reagent::spec::{LocalEngine, LocalModelSpec, LocalSource, Sampling};
use serde_json::json;

const PROMPT: &str = "Write a detailed, step-by-step explanation of how a hash map works.";
const MAX_TOKENS: u32 = 128;
const AGENTS: usize = 8;

fn request<'a>(messages: &'a [Message], tools: &'a [ToolDeclaration]) -> ModelRequest<'a> {
    ModelRequest {
        messages,
        tools,
        thinking: false,
        tool_choice: ToolChoice::Auto,
        max_thinking_tokens: None,
        answer_schema: None,
        deltas: None,
    }
}

async fn generate(model: &dyn Model) -> u32 {
    let messages = [Message::User { content: PROMPT.to_string() }];
    let reply = model.complete(request(&messages, &[])).await.expect("the model answers");
    reply.usage.map_or(0, |u| u.completion_tokens)
}

/// Tokens per second of one stream, over three requests after a warm-up.
async fn single_stream(model: &dyn Model) -> f64 {
    generate(model).await;
    let started = Instant::now();
    let mut tokens = 0;
    for _ in 0..3 {
        tokens += generate(model).await;
    }
    f64::from(tokens) / started.elapsed().as_secs_f64()
}

async fn load(models: &LocalModels, path: &Path, engine: LocalEngine, max_tokens: u32) -> Option<Box<dyn Model>> {
    let spec = LocalModelSpec {
        constrained: false,
        sampling: Sampling { max_tokens, temperature: 0.0 },
        engine,
        ..LocalModelSpec::new(LocalSource::Gguf(path.to_path_buf()))
    };
    load_local(models, &spec).await.ok()
}

fn llama_cpp_python(path: &Path) -> Option<f64> {
    let python = std::env::var("REAGENT_LLAMA_PYTHON").ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/llama_cpp_decode.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(path)
        .args([PROMPT, &MAX_TOKENS.to_string(), "3"])
        .output()
        .ok()?;
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(result["tokens"].as_f64()? / result["seconds"].as_f64()?)
}

/// llama.cpp's own decode of [`AGENTS`] sequences at once ÷ one: the ceiling of batching here.
fn llama_cpp_batched(path: &Path) -> Option<f64> {
    let python = std::env::var("REAGENT_LLAMA_PYTHON").ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/llama_cpp_batched.py");
    let output = std::process::Command::new(python).arg(script).arg(path).arg(AGENTS.to_string()).output().ok()?;
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(result["batched"].as_f64()? / result["one"].as_f64()?)
}

/// The random-weight EXAONE 4.0 1.2B file, made once by llama.cpp's quantiser.
fn exaone_file() -> Option<PathBuf> {
    let path = cache_dir()?.join("bench/exaone-4.0-1.2b-random-q4_k_m.gguf");
    if path.is_file() {
        return Some(path);
    }
    let python = std::env::var("REAGENT_LLAMA_PYTHON").ok()?;
    std::fs::create_dir_all(path.parent()?).ok()?;
    let pip = std::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "gguf==0.19.0"])
        .status()
        .ok()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/exaone_1_2b.py");
    let quiet =
        std::process::Command::new(&python).arg(script).arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let made = pip.success() && quiet.ok()?.success();
    made.then_some(path)
}

fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "not run".to_string(), |v| format!("{v:.1} tok/s"))
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// A calculator conversation of `steps` steps: the task, then a calc call and its result per step.
fn calculator_conversation(steps: usize) -> Vec<Message> {
    let mut messages = vec![
        Message::System { content: "You are a careful calculator. Use the calc tool for every operation.".into() },
        Message::User { content: "Compute ((((17*23)+4)*3)-5)/2, one operation per step.".into() },
    ];
    let values = [("17*23", 391.0), ("391+4", 395.0), ("395*3", 1185.0), ("1185-5", 1180.0), ("1180/2", 590.0)];
    for (i, (expression, value)) in values.iter().take(steps.saturating_sub(1)).enumerate() {
        let id = format!("call_{i}");
        messages.push(Message::Assistant {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: id.clone(),
                name: "calc".into(),
                arguments: json!({"expression": expression}),
            }],
        });
        messages.push(Message::Tool { call_id: id, content: json!(value) });
    }
    messages
}

/// Time to the first generated token of each step of the conversation on `model`.
async fn first_tokens(model: &dyn Model) -> Vec<Duration> {
    let tools = [ToolDeclaration {
        name: "calc".into(),
        description: "Evaluates an arithmetic expression.".into(),
        parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }];
    let mut out = Vec::new();
    for step in 1..=6 {
        let messages = calculator_conversation(step);
        let (deltas, mut incoming) = tokio::sync::mpsc::unbounded_channel();
        let started = Instant::now();
        let request = ModelRequest { deltas: Some(deltas), ..request(&messages, &tools) };
        let reply = model.complete(request);
        let first = async {
            incoming.recv().await;
            started.elapsed()
        };
        let (_, first) = tokio::join!(reply, first);
        out.push(first);
    }
    out
}

#[tokio::main]
async fn main() {
    let mut files: Vec<(String, Option<PathBuf>)> = ["smollm2-135m", "qwen2.5-coder-0.5b"]
        .into_iter()
        .map(|name| (name.to_string(), find(name).ok().and_then(|m| m.pulled())))
        .collect();
    files.push(("exaone-4.0-1.2b (random, Q4_K_M)".into(), exaone_file()));

    println!("Decode, one stream ({MAX_TOKENS} tokens, greedy):\n");
    println!(
        "| model | reagent llama.cpp | llama-cpp-python | reagent ÷ llama-cpp-python | reagent mistralrs | mistralrs ÷ llama-cpp-python |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, path) in &files {
        let Some(path) = path else {
            println!("| {name} | not run: run scripts/setup.sh (and set REAGENT_LLAMA_PYTHON) | | | | |");
            continue;
        };
        let ours = match load(&LocalModels::default(), path, LocalEngine::LlamaCpp, MAX_TOKENS).await {
            Some(model) => Some(single_stream(model.as_ref()).await),
            None => None,
        };
        let theirs = llama_cpp_python(path);
        let mistralrs = match load(&LocalModels::default(), path, LocalEngine::Mistralrs, MAX_TOKENS).await {
            Some(model) => Some(single_stream(model.as_ref()).await),
            None => None, // mistralrs 0.8.1 has no exaone4
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            rate(ours),
            rate(theirs),
            ratio(ours, theirs),
            mistralrs.map_or_else(|| "cannot load".to_string(), |v| format!("{v:.1} tok/s")),
            ratio(mistralrs, theirs)
        );
    }

    println!("\n{AGENTS} agents on one loaded model (llama.cpp engine), aggregate tokens per second:\n");
    println!("| model | one after another | at once | ratio | llama.cpp's own batch of {AGENTS} ÷ batch of 1 |");
    println!("|---|---|---|---|---|");
    for (name, path) in &files {
        let Some(path) = path else { continue };
        let Some(model) = load(&LocalModels::default(), path, LocalEngine::LlamaCpp, MAX_TOKENS).await else {
            continue;
        };
        generate(model.as_ref()).await;
        let started = Instant::now();
        let mut tokens = 0;
        for _ in 0..AGENTS {
            tokens += generate(model.as_ref()).await;
        }
        let sequential = f64::from(tokens) / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let tokens: u32 = join_all((0..AGENTS).map(|_| generate(model.as_ref()))).await.into_iter().sum();
        let concurrent = f64::from(tokens) / started.elapsed().as_secs_f64();
        let ceiling = llama_cpp_batched(path).map_or_else(|| "not run".to_string(), |r| format!("{r:.2}×"));
        println!(
            "| {name} | {sequential:.1} tok/s | {concurrent:.1} tok/s | {:.2}× | {ceiling} |",
            concurrent / sequential
        );
    }

    println!("\nTime to first token, steps 3–6 of a 6-step calculator conversation (llama.cpp engine):\n");
    println!("| model | KV cache kept | whole prompt prefilled | ratio |");
    println!("|---|---|---|---|");
    for (name, path) in &files[..2] {
        let Some(path) = path else { continue };
        let models = LocalModels::default();
        let Some(model) = load(&models, path, LocalEngine::LlamaCpp, 8).await else { continue };
        let engine = models.llama_cpp(path).await.expect("loaded");
        let kept: Duration = first_tokens(model.as_ref()).await[2..].iter().sum();
        engine.keep_caches(false);
        let prefilled: Duration = first_tokens(model.as_ref()).await[2..].iter().sum();
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.1}× lower |",
            kept.as_secs_f64() * 1000.0,
            prefilled.as_secs_f64() * 1000.0,
            prefilled.as_secs_f64() / kept.as_secs_f64()
        );
    }
}
