//! The tool contract is language-neutral: a tool written in Python (tests/components/python_tool),
//! built with componentize-py, runs in the same sandbox and in an agent like a Rust tool.

mod common;

use std::process::Command;

use common::*;
use reagent_sandbox::{ErrorKind, Grants, Limits, Sandbox};
use serde_json::json;

fn build_python_tool() -> std::path::PathBuf {
    let componentize = repo_root().join("tools/.venv/bin/componentize-py");
    assert!(componentize.is_file(), "{} is missing: run scripts/setup.sh", componentize.display());
    let out = test_components_dir().join("word_frequencies.wasm");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new(componentize)
        .args(["-d", repo_root().join("tools/wit").to_str().unwrap(), "-w", "plugin", "componentize", "app", "-o"])
        .arg(&out)
        .current_dir(repo_root().join("tests/components/python_tool"))
        .status()
        .unwrap();
    assert!(status.success(), "componentize-py failed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_tool_runs_in_the_sandbox_and_in_an_agent() {
    let wasm = build_python_tool();
    let cache = wasm.with_file_name("cache");
    let tool =
        Sandbox::with_cache(Some(cache)).unwrap().load(&wasm, Grants::default(), Limits::default()).await.unwrap();
    assert_eq!(tool.tools()[0].name, "word_frequencies");

    let counted = tool.call("word_frequencies", r#"{"text": "to be or not to be", "top": 2}"#, "test-key").await;
    assert_eq!(counted.result, Ok(json!([{"word": "to", "count": 2}, {"word": "be", "count": 2}])));
    let refused = tool.call("word_frequencies", r#"{"text": "  "}"#, "test-key").await.result.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::InvalidArguments);
    let unknown = tool.call("nope", "{}", "test-key").await.result.unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::UnknownTool);

    // A componentize-py component instantiates 14 core modules per call, many more than a Rust
    // tool: a burst of calls must still find room in the sandbox's instance pool.
    let tool = std::sync::Arc::new(tool);
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let tool = tool.clone();
            tokio::spawn(async move {
                tool.call("word_frequencies", r#"{"text": "a b a", "top": 1}"#, "test-key").await.result
            })
        })
        .collect();
    for call in burst {
        assert_eq!(call.await.unwrap(), Ok(json!([{"word": "a", "count": 2}])));
    }

    // In an agent, the loop validates arguments against the schema the Python code declared.
    let agent = TestAgent::from_files(
        &format!(
            "name: words\nmodel:\n  backend: replay\n  script: script.yaml\ntools:\n  - component: {}\n",
            wasm.display()
        ),
        &[
            r#"<tool_call>{"name": "word_frequencies", "arguments": {"text": "a b a", "top": 0}}</tool_call>"#,
            r#"<tool_call>{"name": "word_frequencies", "arguments": {"text": "a b a", "top": 1}}</tool_call>"#,
            "`a`, twice.",
        ],
    );
    let (code, events) = agent.run_json("Most frequent word?");
    assert_eq!(code, Some(0));
    let results = events_of(&events, "tool_result");
    assert_eq!(results[0]["error"]["kind"], "invalid_arguments", "top: 0 breaks `minimum: 1`");
    assert_eq!(results[1]["result"], json!([{"word": "a", "count": 2}]));
}
