//! Sub-agents: agent files listed as tools, run with budgets carved from their parent's.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

fn calc_call(expression: &str) -> String {
    format!(r#"<tool_call>{{"name": "calc", "arguments": {{"expression": "{expression}"}}}}</tool_call>"#)
}

/// Writes `NAME.yaml` (a replay agent with calc, plus `extra`) and its script into `dir`.
fn write_agent(dir: &Path, name: &str, extra: &str, turns: &[&str]) {
    let yaml = format!(
        "name: {name}\ndescription: The {name} agent.\nmodel:\n  backend: replay\n  script: {name}.script.yaml\ntools:\n  - component: {}\n{extra}",
        calc_component().display()
    );
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
    std::fs::write(dir.join(format!("{name}.script.yaml")), json!({ "turns": turns }).to_string()).unwrap();
}

const ASK_HELPER: &str = r#"<tool_call>{"name": "helper", "arguments": {"task": "work out (17*23)+4"}}</tool_call>"#;

#[test]
fn a_sub_agent_is_a_tool_that_runs_the_other_agent() {
    let dir = tempfile::tempdir().unwrap();
    write_agent(dir.path(), "helper", "", &[&calc_call("(17*23)+4"), "395"]);
    write_agent(dir.path(), "lead", "  - agent: helper.yaml\n", &[ASK_HELPER, "The helper says 395."]);
    let lead = dir.path().join("lead.yaml");

    let validated = reagent(&["validate", lead.to_str().unwrap()]);
    assert!(stdout(&validated).contains("tools   calc, helper"), "{}", stdout(&validated));

    let (code, events, err) = reagent_json(&["run", "--json", lead.to_str().unwrap(), "What is (17*23)+4?"]);
    assert_eq!(code, Some(0), "{err}");
    let started = events_of(&events, "run_started");
    assert_eq!(started[0]["tools"], json!(["calc", "helper"]));
    let result = events_of(&events, "tool_result")[0];
    assert_eq!((result["tool"].as_str(), result["ok"].as_bool()), (Some("helper"), Some(true)), "{}", shown(&events));
    assert_eq!(result["result"], json!("395"), "the helper's answer is the result");
    assert!(result["log"].as_str().unwrap().contains("sub-agent `helper`: 2 step(s), calls: calc"), "{result}");

    // The helper's own run is in the lead's stream, marked with its path, before its result.
    let inner = events_of(&events, "sub_agent");
    let kinds: Vec<&str> = inner.iter().map(|e| e["inner"]["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert!(inner.iter().all(|e| e["path"] == json!(["helper"])), "{}", shown(&events));
    let calc = inner.iter().find(|e| e["inner"]["event"] == "tool_result").expect("the helper's calc result");
    assert_eq!(calc["inner"]["result"], json!(395));
    let position = |e: &serde_json::Value| events.iter().position(|x| x == e).unwrap();
    assert!(position(inner.last().unwrap()) < position(result), "inner events come before the call's result");
}

#[test]
fn a_sub_agents_budgets_are_carved_from_its_parents() {
    let dir = tempfile::tempdir().unwrap();
    // The helper may make 50 calls on its own; under a lead allowed 3 (one spent calling it), it
    // gets 2, so its third turn is a wrap-up (were it not, the text would be a plain answer).
    let (first, second) = (calc_call("1+1"), calc_call("2+1"));
    let helper_turns = [first.as_str(), second.as_str(), "2, 3 and that is all I got"];
    write_agent(dir.path(), "helper", "limits:\n  max_tool_calls: 50\n", &helper_turns);
    write_agent(
        dir.path(),
        "lead",
        "  - agent: helper.yaml\nlimits:\n  max_tool_calls: 3\n",
        &[ASK_HELPER, "partial: 2, 3"],
    );
    let lead = dir.path().join("lead.yaml");
    let (code, events, err) = reagent_json(&["run", "--json", lead.to_str().unwrap(), "task"]);
    assert_eq!(code, Some(9), "the lead ran out of tool calls: the helper's count against it: {err}");
    let result = events_of(&events, "tool_result")[0];
    assert_eq!(result["error"]["kind"], "incomplete", "{}", shown(&events));
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("ran out of limits.max_tool_calls before finishing; its best answer: 2, 3"), "{message}");
    assert!(result["log"].as_str().unwrap().contains("calls: calc, calc"), "two calls, no more: {result}");
    let finished = events.last().unwrap();
    assert_eq!(finished["budget"], "max_tool_calls");
}

#[test]
fn sub_agent_cycles_are_refused_where_they_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_agent(dir.path(), "a", "  - agent: b.yaml\n", &["x"]);
    write_agent(dir.path(), "b", "  - agent: a.yaml\n", &["x"]);
    let output = reagent(&["validate", dir.path().join("a.yaml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    let expected = "b.yaml:8:12: sub-agents form a cycle: a.yaml → b.yaml → a.yaml";
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));

    write_agent(dir.path(), "selfish", "  - agent: selfish.yaml\n", &["x"]);
    let output = reagent(&["run", dir.path().join("selfish.yaml").to_str().unwrap(), "task"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("selfish.yaml → selfish.yaml"), "{}", stderr(&output));
}
