//! Invalid agent files: every error is one line `file:line:col: message` with exit code 3, or 4 for
//! a tool component that is missing or broken.

mod common;

use common::*;

/// Runs `reagent run` on `yaml` (with a valid replay script beside it) and returns the exit code
/// and stderr with the temp folder's path replaced by `DIR`.
fn run_agent(yaml: &str) -> (Option<i32>, String) {
    let agent = TestAgent::from_files(yaml, &["done"]);
    let output = agent.run("task");
    let dir = path_str(agent.dir.path());
    (output.status.code(), stderr(&output).replace(&dir, "DIR"))
}

const MODEL: &str = "model:\n  backend: replay\n  script: script.yaml\n";

#[test]
fn unknown_field_names_its_line_and_the_fields_allowed() {
    let (code, err) = run_agent("name: x\nmodle:\n  backend: replay\n");
    assert_eq!(code, Some(3));
    assert!(err.starts_with("reagent: DIR/agent.yaml:2:1: unknown field `modle`, expected one of name,"), "{err}");
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let (code, err) = run_agent("name: x\nmodel: [\n");
    assert_eq!(code, Some(3));
    assert!(err.starts_with("reagent: DIR/agent.yaml:2:8: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn unknown_backend_and_reasoning_mode_list_the_choices() {
    let (code, err) = run_agent("name: x\nmodel:\n  backend: gpt\n");
    assert_eq!(code, Some(3));
    assert!(err.starts_with("reagent: DIR/agent.yaml:3:12: unknown variant `gpt`, expected one of replay"), "{err}");
    let (code, err) = run_agent(&format!("name: x\n{MODEL}reasoning: sometimes\n"));
    assert_eq!(code, Some(3));
    assert!(err.contains("agent.yaml:5:1: unknown variant `sometimes`, expected one of on, off, auto"), "{err}");
}

#[test]
fn missing_fields_and_bad_values_say_what_to_do() {
    let (_, err) = run_agent("model:\n  backend: replay\n  script: script.yaml\n");
    assert!(err.contains("agent.yaml:1:1: missing field `name`"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: replay\n");
    assert!(err.contains("agent.yaml:3:3: the replay backend needs `script:`"), "{err}");
    for steps in ["0", "-3"] {
        let (code, err) = run_agent(&format!("name: x\n{MODEL}limits:\n  max_steps: {steps}\n"));
        assert_eq!(code, Some(3));
        assert!(err.contains("agent.yaml:6:14: `max_steps` must be a whole number from 1"), "{err}");
    }
}

#[test]
fn budgets_and_the_output_schema_are_checked_where_they_are_written() {
    let (code, err) = run_agent(&format!("name: x\n{MODEL}limits:\n  max_tool_calls: 0\n"));
    assert_eq!(code, Some(3));
    assert!(
        err.contains(
            "agent.yaml:6:19: `max_tool_calls` must be a whole number from 1 to 4294967295 (the default is 50)"
        ),
        "{err}"
    );
    let (_, err) = run_agent(&format!("name: x\n{MODEL}limits:\n  timeout: 2 fortnights\n"));
    assert!(err.contains("agent.yaml:6:12: unknown duration unit `fortnights`"), "{err}");
    let (_, err) = run_agent(&format!("name: x\n{MODEL}output:\n  schema:\n    type: objet\n"));
    assert!(
        err.contains("agent.yaml:7:5: `schema` is not valid JSON Schema at /type: \"objet\" is not valid"),
        "{err}"
    );
    let (code, _) = run_agent(&format!(
        "name: x\n{MODEL}limits: {{max_steps: 3, max_tool_calls: 9, max_tokens: 5000, timeout: 90s}}\n"
    ));
    assert_eq!(code, Some(0), "every budget written is accepted");
}

#[test]
fn missing_replay_script_is_reported_where_it_is_named() {
    let (code, err) = run_agent("name: x\nmodel:\n  backend: replay\n  script: missing.yaml\n");
    assert_eq!(code, Some(3));
    assert!(err.contains("agent.yaml:4:11: replay script DIR/missing.yaml not found"), "{err}");
}

#[test]
fn broken_replay_script_is_reported_in_the_script() {
    let agent = TestAgent::from_files(&format!("name: x\n{MODEL}"), &[]);
    std::fs::write(agent.dir.path().join("script.yaml"), "turns: [\"a\", \n  {oops: 1}]\n").unwrap();
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output).replace(&path_str(agent.dir.path()), "DIR");
    assert!(err.starts_with("reagent: DIR/script.yaml:2:"), "{err}");
}

#[test]
fn missing_tool_component_exits_4_and_says_how_to_build_it() {
    let (code, err) = run_agent(&format!("name: x\n{MODEL}tools:\n  - component: nope.wasm\n"));
    assert_eq!(code, Some(4));
    assert!(err.contains("agent.yaml:6:16: tool component DIR/nope.wasm not found: build the tools"), "{err}");
}

#[test]
fn a_file_that_is_not_a_component_exits_4() {
    let agent = TestAgent::from_files(&format!("name: x\n{MODEL}tools:\n  - component: bad.wasm\n"), &["done"]);
    std::fs::write(agent.dir.path().join("bad.wasm"), "not wasm").unwrap();
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("agent.yaml:6:16:"), "{}", stderr(&output));
    assert!(stderr(&output).contains("it is not a WebAssembly file"), "{}", stderr(&output));
    // A core module (here: 8 bytes of header) is told apart from a component.
    std::fs::write(agent.dir.path().join("bad.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("a core WebAssembly module, not a component"), "{}", stderr(&output));
}

#[test]
fn grants_and_limits_are_checked_where_they_are_written() {
    let tool = |extra: &str| format!("name: x\n{MODEL}tools:\n  - component: {}\n{extra}", path_str(&calc_component()));
    let cases = [
        (
            "    grants:\n      dirs:\n        - {host: nowhere, guest: /data}\n",
            "9:18: directory DIR/nowhere does not exist",
        ),
        ("    grants:\n      dirs:\n        - {host: ., guest: data}\n", "9:28: `guest` must be an absolute path"),
        ("    grants:\n      http: [\"ftp://example.com\"]\n", "8:14: `ftp://example.com`: only http and https"),
        ("    grants:\n      http: [\"example.com/path\"]\n", "8:14: `example.com/path`: give a host only"),
        (
            "    grants:\n      env: [REAGENT_TEST_UNSET_VARIABLE]\n",
            "8:13: `REAGENT_TEST_UNSET_VARIABLE` is granted but not set",
        ),
        ("    grants:\n      secrets: [NOPE_SECRET]\n", "8:17: secret `NOPE_SECRET` is in neither"),
        ("    limits:\n      memory: 2GiB\n", "8:15: `memory` can be at most 1024 MiB"),
        ("    limits:\n      cpu_time: 5\n", "8:17: `5` needs a unit: ms, s, m or h, e.g. `5s`"),
        ("    limits:\n      timeout: 0s\n", "8:16: a limit of zero would fail every call"),
        ("    grants:\n      network: []\n", "8:7: unknown field `network`, expected one of dirs, http, env, secrets"),
    ];
    for (extra, expected) in cases {
        let (code, err) = run_agent(&tool(extra));
        assert_eq!(code, Some(3), "{extra}: {err}");
        assert!(err.contains(expected), "{extra}\nexpected: {expected}\ngot: {err}");
    }
}

#[test]
fn a_secrets_file_grants_values_by_name() {
    let yaml = format!(
        "name: x\n{MODEL}secrets_file: secrets.env\ntools:\n  - component: {}\n    grants:\n      secrets: [API_TOKEN]\n    limits:\n      memory: 16MiB\n      cpu_time: 500ms\n",
        path_str(&calc_component())
    );
    let agent = TestAgent::from_files(&yaml, &["done"]);
    std::fs::write(agent.dir.path().join("secrets.env"), "# test secrets\nAPI_TOKEN=s3cr3t\n").unwrap();
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    std::fs::write(agent.dir.path().join("secrets.env"), "API_TOKEN\n").unwrap();
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("secrets.env:1:1: expected NAME=value"), "{}", stderr(&output));
}

#[test]
fn the_reasoning_policy_takes_a_mode_or_a_map_and_names_mistakes() {
    let (code, err) = run_agent(&format!("name: x\n{MODEL}reasoning:\n  mode: often\n"));
    assert_eq!(code, Some(3));
    assert!(err.contains("agent.yaml:6:9: unknown variant `often`, expected one of on, off, auto"), "{err}");
    let (code, err) = run_agent(&format!("name: x\n{MODEL}reasoning:\n  mode: auto\n  budget: 3\n"));
    assert_eq!(code, Some(3));
    assert!(err.contains("agent.yaml:7:3: unknown field `budget`, expected one of mode, max_thinking_tokens"), "{err}");
    let (code, err) = run_agent(&format!(
        "name: x\n{MODEL}reasoning:\n  mode: auto\n  max_thinking_tokens: 64\n  before_answer: true\n"
    ));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn model_settings_are_checked_per_backend() {
    // A setting of another backend is named where it is written.
    let (code, err) = run_agent("name: x\nmodel:\n  backend: replay\n  script: script.yaml\n  url: http://x\n");
    assert_eq!(code, Some(3));
    assert!(err.contains("agent.yaml:5:8: `url` is a setting of the openai backend, not of replay"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: local\n");
    assert!(err.contains("agent.yaml:3:3: the local backend needs exactly one of `model:`"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: local\n  model: a\n  path: b.gguf\n");
    assert!(err.contains("agent.yaml:5:9: the local backend needs exactly one of"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: local\n  path: missing.gguf\n");
    assert!(err.contains("agent.yaml:4:9: DIR/missing.gguf does not exist"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: openai\n  name: m\n");
    assert!(err.contains("agent.yaml:3:3: the openai backend needs `url:`"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: openai\n  url: ftp://x\n  name: m\n");
    assert!(err.contains("agent.yaml:4:8: `url` must start with http:// or https://"), "{err}");
    let (_, err) = run_agent("name: x\nmodel:\n  backend: local\n  model: x\n  temperature: 9\n");
    assert!(err.contains("agent.yaml:5:16: `temperature` must be from 0 to 2"), "{err}");
}

#[test]
fn a_model_that_cannot_start_exits_6_and_says_what_to_do() {
    let (code, err) = run_agent("name: x\nmodel:\n  backend: local\n  model: no-such-model\n");
    assert_eq!(code, Some(6));
    assert!(err.contains("agent.yaml:4:10: no model `no-such-model` in the catalogue; `reagent model list`"), "{err}");
    let yaml = "name: x\nmodel:\n  backend: openai\n  url: http://127.0.0.1:9/v1\n  name: m\n  api_key_env: REAGENT_TEST_UNSET_KEY\n";
    let (code, err) = run_agent(yaml);
    assert_eq!(code, Some(6));
    assert!(err.contains("REAGENT_TEST_UNSET_KEY (named by `api_key_env`) is not set"), "{err}");
}

#[test]
fn an_unreachable_server_fails_the_run_with_the_address_not_a_hang() {
    let yaml = "name: x\nmodel:\n  backend: openai\n  url: http://127.0.0.1:9/v1\n  name: m\n  retries: 1\n";
    let (code, err) = run_agent(yaml);
    assert_eq!(code, Some(6));
    assert!(err.contains("cannot reach http://127.0.0.1:9/v1/chat/completions after 2 attempt(s)"), "{err}");
}

#[test]
fn validate_checks_everything_a_run_needs_without_running_it() {
    let agent = TestAgent::new("inputs:\n  who: {type: string}\ninstructions: Greet {{who}}.\n", &[]);
    let output = reagent(&["validate", agent.file().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("valid — agent `test-agent`"), "{}", stdout(&output));
    assert!(stdout(&output).contains("tools   calc"), "the component was loaded and described itself");
    assert!(stdout(&output).contains("inputs  who (required)"), "{}", stdout(&output));

    let missing = TestAgent::from_files(&format!("name: x\n{MODEL}tools:\n  - component: nowhere.wasm\n"), &[]);
    assert_eq!(reagent(&["validate", missing.file().to_str().unwrap()]).status.code(), Some(4));

    let empty_cache = tempfile::tempdir().unwrap();
    let local = TestAgent::from_files("name: x\nmodel:\n  backend: local\n  model: smollm2-135m\n", &[]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["validate", local.file().to_str().unwrap()])
        .env("REAGENT_CACHE_DIR", empty_cache.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "a model not pulled is found without loading anything");
    assert!(stderr(&output).contains("run `reagent model pull smollm2-135m`"), "{}", stderr(&output));
}
