//! `reagent run` end to end: YAML → loop → replay model → calc component in wasmtime → answer.

mod common;

use common::*;
use serde_json::json;

const CALC_395: &str = r#"<tool_call>{"name": "calc", "arguments": {"expression": "(17*23)+4"}}</tool_call>"#;

#[test]
fn calculator_example_answers_395_by_running_calc_in_wasmtime() {
    let output = reagent(&["run", "agents/calculator-replay.yaml", "What is (17*23)+4?"]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "(17*23)+4 = 395.");
    let steps = stderr(&output);
    assert!(steps.contains("── step 1 (thinking)"), "{steps}");
    assert!(steps.contains(r#"call     │ calc {"expression":"(17*23)+4"}"#), "{steps}");
    assert!(steps.contains("result   │ 395  ["), "the calc component's own result is shown: {steps}");

    let json = reagent(&["run", "--json", "agents/calculator-replay.yaml", "What is (17*23)+4?"]);
    let events: Vec<serde_json::Value> =
        stdout(&json).lines().map(|l| serde_json::from_str(l).expect("JSON event")).collect();
    let results = events_of(&events, "tool_result");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["result"], json!(395), "395 comes from the Wasm tool, not the script");
    assert_eq!(events.last().unwrap()["status"], "answered");
}

#[test]
fn multi_step_run_feeds_each_result_back() {
    let agent = TestAgent::new(
        "",
        &[
            r#"<tool_call>{"name": "calc", "arguments": {"expression": "2*3"}}</tool_call>"#,
            r#"<tool_call>{"name": "calc", "arguments": {"expression": "6+1"}}</tool_call>"#,
            "It is 7.",
        ],
    );
    let (code, events) = agent.run_json("What is 2*3+1, step by step?");
    assert_eq!(code, Some(0));
    let results: Vec<_> = events_of(&events, "tool_result").iter().map(|e| e["result"].clone()).collect();
    assert_eq!(results, vec![json!(6), json!(7)]);
    assert_eq!(events_of(&events, "answer")[0]["text"], "It is 7.");
    assert_eq!(events.last().unwrap()["steps"], 3);
}

#[test]
fn several_calls_in_one_turn_all_run_in_order() {
    let agent = TestAgent::new(
        "",
        &[
            "<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"1+2\"}}</tool_call>\n<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"3+4\"}}</tool_call>",
            "3 and 7.",
        ],
    );
    let (code, events) = agent.run_json("Two sums");
    assert_eq!(code, Some(0));
    let calls = events_of(&events, "tool_call");
    let results = events_of(&events, "tool_result");
    assert_eq!((calls.len(), results.len()), (2, 2));
    assert_eq!(calls.iter().map(|c| c["step"].clone()).collect::<Vec<_>>(), vec![json!(1), json!(1)]);
    assert_eq!(results.iter().map(|r| r["result"].clone()).collect::<Vec<_>>(), vec![json!(3), json!(7)]);
}

#[test]
fn code_fenced_json_call_is_recovered() {
    let agent = TestAgent::new(
        "",
        &["I'll use the tool:\n```json\n{\"name\": \"calc\", \"arguments\": {\"expression\": \"10/4\"}}\n```", "2.5"],
    );
    let (code, events) = agent.run_json("10/4?");
    assert_eq!(code, Some(0));
    assert_eq!(events_of(&events, "tool_result")[0]["result"], json!(2.5));
    assert_eq!(events_of(&events, "text")[0]["text"], "I'll use the tool:");
}

#[test]
fn output_that_starts_mid_reasoning_is_split_at_the_closing_tag() {
    let turn = format!("Multiply first, then add.\n</think>\n\n{CALC_395}");
    let agent = TestAgent::new("reasoning: on\n", &[&turn, "395"]);
    let (code, events) = agent.run_json("(17*23)+4");
    assert_eq!(code, Some(0));
    assert_eq!(events_of(&events, "reasoning")[0]["text"], "Multiply first, then add.");
    assert_eq!(events_of(&events, "tool_result")[0]["result"], json!(395));
}

#[test]
fn unknown_tool_is_fed_back_and_the_model_recovers() {
    let agent = TestAgent::new(
        "",
        &[r#"<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>"#, CALC_395, "395"],
    );
    let (code, events) = agent.run_json("task");
    assert_eq!(code, Some(0));
    let results = events_of(&events, "tool_result");
    assert_eq!(results[0]["ok"], false);
    assert_eq!(results[0]["error"]["kind"], "unknown_tool");
    assert!(results[0]["error"]["message"].as_str().unwrap().contains("the tools are: calc"));
    assert_eq!(results[1]["result"], json!(395));
    // reasoning: auto thinks again to recover after the failed call.
    let thinking: Vec<_> = events_of(&events, "step_started").iter().map(|s| s["thinking"].clone()).collect();
    assert_eq!(thinking, vec![json!(true), json!(true), json!(false)]);
}

#[test]
fn arguments_that_break_the_schema_are_rejected_with_the_field() {
    let agent = TestAgent::new(
        "",
        &[r#"<tool_call>{"name": "calc", "arguments": {"expression": 5}}</tool_call>"#, CALC_395, "395"],
    );
    let (code, events) = agent.run_json("task");
    assert_eq!(code, Some(0));
    let rejected = events_of(&events, "tool_result")[0];
    assert_eq!(rejected["error"]["kind"], "invalid_arguments");
    let message = rejected["error"]["message"].as_str().unwrap();
    assert!(message.contains("/expression") && message.contains("string"), "{message}");
}

#[test]
fn unreadable_call_is_fed_back_not_fatal() {
    let agent =
        TestAgent::new("", &[r#"<tool_call>{"name": "calc", "arguments": {"expression": "1"</tool_call>"#, "1"]);
    let (code, events) = agent.run_json("task");
    assert_eq!(code, Some(0));
    let result = events_of(&events, "tool_result")[0];
    assert_eq!(result["error"]["kind"], "malformed_call");
    assert!(result["error"]["message"].as_str().unwrap().contains("not valid JSON"));
}

#[test]
fn out_of_steps_exits_5_with_the_wrap_up_answer_marked_incomplete() {
    let agent = TestAgent::new("limits:\n  max_steps: 2\n", &[CALC_395, CALC_395, "395, I believe"]);
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(5));
    let err = stderr(&output);
    assert!(err.contains("budget   │ limits.max_steps (2 steps) is spent"), "{err}");
    assert!(err.contains("reagent: incomplete: limits.max_steps ran out and the answer is the model's best"), "{err}");
    assert!(err.contains("raise limits.max_steps in"), "{err}");
    assert_eq!(stdout(&output), "395, I believe\n", "the answer still reaches stdout");

    let (code, events) = agent.run_json("task");
    assert_eq!(code, Some(5));
    let finished = events.last().unwrap();
    assert_eq!((finished["status"].as_str(), finished["budget"].as_str()), (Some("incomplete"), Some("max_steps")));
}

#[test]
fn out_of_tool_calls_exits_9() {
    let agent = TestAgent::new("limits:\n  max_tool_calls: 1\n", &[CALC_395, CALC_395, "395"]);
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(9), "{}", stderr(&output));
    assert!(stderr(&output).contains("limits.max_tool_calls ran out"), "{}", stderr(&output));
}

#[test]
fn replay_script_running_out_exits_6() {
    let agent = TestAgent::new("", &[CALC_395]);
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(6));
    assert!(stderr(&output).contains("has 1 turn(s) but the agent asked for turn 2"), "{}", stderr(&output));
}

#[test]
fn prompt_shows_a_local_models_request_without_loading_it() {
    // An empty cache: the model is not on this machine, so nothing could have been loaded.
    let cache = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reagent"))
        .args(["prompt", "agents/calculator.yaml", "What is (17*23)+4?"])
        .env("REAGENT_CACHE_DIR", cache.path())
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("the model's own chat template renders this request"), "{}", stderr(&output));
    let request: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the request as JSON");
    assert_eq!(request["messages"][0]["role"], "system");
    assert!(request["messages"][0]["content"].as_str().unwrap().starts_with("You are a careful calculator."));
    assert_eq!(request["messages"][1]["content"], "What is (17*23)+4?");
    assert_eq!(request["tools"][0]["function"]["name"], "calc");
    let grammar = request["grammar"].as_str().unwrap_or_default();
    assert!(grammar.contains("%json") && grammar.contains("\"calc\""), "constrained calls: {request}");
}

#[test]
fn prompt_prints_the_first_prompt_in_exaones_format() {
    let output = reagent(&["prompt", "agents/calculator-replay.yaml", "What is (17*23)+4?"]);
    assert_eq!(output.status.code(), Some(0));
    let prompt = stdout(&output);
    assert!(prompt.starts_with("[|system|]\nYou are a careful calculator."), "{prompt}");
    assert!(prompt.contains("<tool>{\"type\": \"function\", \"function\": {\"name\": \"calc\""));
    assert!(prompt.ends_with("[|user|]\nWhat is (17*23)+4?[|endofturn|]\n[|assistant|]\n<think>\n"), "{prompt}");
}

#[test]
fn a_model_stuck_in_a_loop_exits_8() {
    let agent = TestAgent::new("", &[CALC_395, CALC_395, CALC_395, CALC_395, "never"]);
    let output = agent.run("task");
    assert_eq!(output.status.code(), Some(8), "{}", stderr(&output));
    assert!(stderr(&output).contains("kept calling `calc` with the same arguments"), "{}", stderr(&output));
}

const PERSON_SCHEMA: &str = "output:\n  schema:\n    type: object\n    properties:\n      name: {type: string}\n      age: {type: integer, minimum: 0}\n    required: [name, age]\n";

#[test]
fn output_schema_validates_the_answer_and_output_writes_the_json() {
    let agent = TestAgent::new(PERSON_SCHEMA, &["Here you go: {\"name\": \"Ada\", \"age\": 36}"]);
    let file = agent.dir.path().join("out.json");
    let output = reagent(&["run", agent.file().to_str().unwrap(), "who?", "--output", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written, json!({"name": "Ada", "age": 36}));
}

#[test]
fn an_answer_that_stays_invalid_exits_12_and_writes_no_output() {
    let agent = TestAgent::new(PERSON_SCHEMA, &["{\"name\": \"Ada\"}", "{\"name\": \"Ada\", \"age\": -1}"]);
    let file = agent.dir.path().join("out.json");
    let output = reagent(&["run", agent.file().to_str().unwrap(), "who?", "--output", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(12), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains(r#"invalid  │ {"name": "Ada"}"#), "both answers are shown: {err}");
    assert!(err.contains(r#""age" is a required property"#), "{err}");
    assert!(err.contains("at /age: -1 is less than the minimum of 0"), "{err}");
    assert!(!file.exists(), "no output file for an invalid answer");
}

const TRIP_INPUTS: &str = "inputs:\n  city: {type: string, description: Where to}\n  days: {type: integer, default: 3}\ninstructions: |\n  Plan {{days}} days in {{ city }}.\n";

#[test]
fn inputs_are_typed_and_substituted_into_the_instructions() {
    let agent = TestAgent::new(TRIP_INPUTS, &["ok"]);
    let file = agent.file();
    let prompt = reagent(&["prompt", file.to_str().unwrap(), "go", "--input", "city=Seoul"]);
    assert_eq!(prompt.status.code(), Some(0), "{}", stderr(&prompt));
    assert!(stdout(&prompt).contains("Plan 3 days in Seoul."), "{}", stdout(&prompt));

    let values = agent.dir.path().join("inputs.json");
    std::fs::write(&values, r#"{"city": "Busan", "days": 5}"#).unwrap();
    let args = ["prompt", file.to_str().unwrap(), "go", "--inputs", values.to_str().unwrap(), "--input", "days=2"];
    assert!(stdout(&reagent(&args)).contains("Plan 2 days in Busan."), "--input overrides the file");

    for (given, expected) in [
        (vec![], "input `city` is required: pass --input city=VALUE"),
        (vec!["--input", "city=x", "--input", "days=three"], "input `days`: expected an integer, got `three`"),
        (vec!["--input", "town=x"], "the agent has no input `town`; its inputs are: city, days"),
        (vec!["--input", "city"], "--input city: write KEY=VALUE"),
    ] {
        let mut args = vec!["run", file.to_str().unwrap(), "go"];
        args.extend(given);
        let output = reagent(&args);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
}

#[test]
fn a_placeholder_that_names_no_input_is_an_error_in_the_agent_file() {
    let agent = TestAgent::new("instructions: Plan a trip to {{city}}.\n", &["ok"]);
    let output = agent.run("go");
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output)
            .contains("agent.yaml:7:15: `{{city}}` in the instructions names no input: declare it under `inputs:`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_call_that_needs_approval_pauses_without_a_terminal_and_resumes_with_the_decision() {
    let agent = TestAgent::new("    approval: always\n", &[CALC_395, "395"]);
    let run = agent.run("task");
    assert_eq!(run.status.code(), Some(13), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains(r#"approval │ calc {"expression":"(17*23)+4"} waits for a person's yes"#), "{err}");
    let id = err.split("reagent resume ").nth(1).and_then(|rest| rest.split(' ').next()).expect("a resume command");
    assert!(err.starts_with(&format!("run {id}\n")), "the run's id comes first: {err}");

    let (code, events, err) = reagent_json(&["resume", id, "--approve", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(events_of(&events, "tool_result")[0]["result"], json!(395));
    let again = reagent(&["resume", id, "--approve"]);
    assert_eq!(again.status.code(), Some(2), "a decision is taken once: {}", stderr(&again));
    assert!(stderr(&again).contains("is answered, not paused for approval"), "{}", stderr(&again));

    let side_effects = TestAgent::new("    approval: side-effects\n", &[CALC_395, "395"]);
    assert_eq!(side_effects.run("task").status.code(), Some(0), "calc is pure: nothing to approve");
}
