//! Decode throughput of the local backend, side by side with llama.cpp on the same GGUF file:
//! generated tokens per second for one stream, and for 8 agents sharing one loaded model
//! (concurrent, batched by mistralrs) against the same 8 requests one after another.
//!
//!     scripts/setup.sh && REAGENT_LLAMA_PYTHON=$(scripts/llama-server-setup.sh) \
//!         cargo bench --profile dev --bench decode
//!
//! Greedy decoding, a short prompt, at most MAX_TOKENS generated per request. The llama.cpp
//! column is skipped (and says so) when REAGENT_LLAMA_PYTHON is unset.

use std::time::Instant;

use futures::future::join_all;
use reagent::conversation::{Message, ToolChoice};
use reagent::model::catalog::find;
use reagent::model::{LocalModel, LocalModels, Model, ModelRequest};
use reagent::spec::{LocalModelSpec, LocalSource, Sampling};

const PROMPT: &str = "Write a detailed, step-by-step explanation of how a hash map works.";
const MAX_TOKENS: u32 = 128;
const AGENTS: usize = 8;

async fn generate(model: &LocalModel) -> u32 {
    let messages = [Message::User { content: PROMPT.to_string() }];
    let request =
        ModelRequest { messages: &messages, tools: &[], thinking: false, tool_choice: ToolChoice::Auto, deltas: None };
    let reply = model.complete(request).await.expect("the model answers");
    reply.usage.map_or(0, |u| u.completion_tokens)
}

fn llama_cpp(path: &std::path::Path) -> Option<f64> {
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

#[tokio::main]
async fn main() {
    println!(
        "| model | reagent local, 1 stream | llama.cpp, 1 stream | ratio | 8 agents sequential | 8 agents concurrent | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for name in ["smollm2-135m", "qwen2.5-coder-0.5b"] {
        let path = find(name).ok().and_then(|m| m.pulled()).unwrap_or_else(|| panic!("{name}: run scripts/setup.sh"));
        let spec = LocalModelSpec {
            constrained: false,
            sampling: Sampling { max_tokens: MAX_TOKENS, temperature: 0.0 },
            ..LocalModelSpec::new(LocalSource::Catalog(name.to_string()))
        };
        let model = LocalModel::load(&LocalModels::default(), &spec).await.expect("load");
        generate(&model).await; // warm-up

        let started = Instant::now();
        let mut tokens = 0;
        for _ in 0..3 {
            tokens += generate(&model).await;
        }
        let single = f64::from(tokens) / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut tokens = 0;
        for _ in 0..AGENTS {
            tokens += generate(&model).await;
        }
        let sequential = f64::from(tokens) / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let tokens: u32 = join_all((0..AGENTS).map(|_| generate(&model))).await.into_iter().sum();
        let concurrent = f64::from(tokens) / started.elapsed().as_secs_f64();

        let (baseline, ratio) = match llama_cpp(&path) {
            Some(t) => (format!("{t:.1} tok/s"), format!("{:.2}×", single / t)),
            None => ("not run (REAGENT_LLAMA_PYTHON unset)".into(), "–".into()),
        };
        println!(
            "| {name} | {single:.1} tok/s | {baseline} | {ratio} | {sequential:.1} tok/s | {concurrent:.1} tok/s | {:.2}× |",
            concurrent / sequential
        );
    }
}
