//! Agent tests end to end, through the real binary: a run of the real local model recorded and
//! replayed with the real Wasm tool, suites with passing and failing cases (their JUnit file read
//! by Python's standard parser), a stale recording, a stubbed tool, and a live case's pass rate.

mod common;

use std::path::{Path, PathBuf};

use common::{path_str, reagent, repo_root, stderr, stdout};
use serde_json::Value;

const TASK: &str = "What is (17*23)+4?";

fn events_in(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines().map(|line| serde_json::from_str(line).expect("a JSON event per line")).collect()
}

/// An event without its timing, which is all a replay may change.
fn untimed(mut event: Value) -> Value {
    if let Some(fields) = event.as_object_mut() {
        fields.remove("duration_ms");
    }
    event
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write");
    file
}

fn calculator() -> String {
    path_str(&repo_root().join("agents/calculator.yaml"))
}

#[test]
fn a_run_of_the_real_local_model_recorded_replays_to_the_same_events_with_the_real_tool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recording = dir.path().join("adds");
    let output = reagent(&["run", "--record", &path_str(&recording), "agents/calculator.yaml", TASK]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("recorded run"), "{}", stderr(&output));
    let recorded = events_in(&recording.join("events.jsonl"));
    let calls: Vec<&Value> = recorded.iter().filter(|e| e["event"] == "tool_call").collect();
    assert!(!calls.is_empty() && calls.iter().all(|c| c["tool"] == "calc"), "the model called calc: {recorded:?}");
    assert!(recorded.iter().any(|e| e["event"] == "delta"), "the model's stream is recorded");

    // The same run, recorded again from the store: one way of recording, whoever ran the run.
    let run_id = stderr(&output).lines().find_map(|l| l.strip_prefix("run ")).expect("the run's id").to_string();
    let again = dir.path().join("again");
    let output = reagent(&["runs", "record", &run_id, &path_str(&again)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let script = |d: &Path| std::fs::read_to_string(d.join("script.yaml")).expect("script");
    assert_eq!(script(&recording), script(&again));

    let suite = write(
        dir.path(),
        "calc.test.yaml",
        &format!(
            "agent: {}\ncases:\n  - name: adds\n    replay: adds\n    expect: {{status: answered}}\n",
            calculator()
        ),
    );
    let events = dir.path().join("events");
    let output = reagent(&["test", &path_str(&suite), "--events", &path_str(&events)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let replayed = events_in(&events.join("calc/adds.jsonl"));
    assert_eq!(
        replayed.into_iter().map(untimed).collect::<Vec<_>>(),
        recorded.into_iter().map(untimed).collect::<Vec<_>>(),
        "the replay's events are the recording's, timings aside"
    );
}

#[test]
fn a_suite_reports_each_failure_with_its_event_and_exits_non_zero_and_its_junit_file_parses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recording = path_str(&repo_root().join("agents/recordings/calculator-adds"));
    let suite = write(
        dir.path(),
        "calc.test.yaml",
        &format!(
            "agent: {}\ncases:
  - name: passes
    replay: {recording}
    expect: {{status: answered, answer: {{contains: '395'}}, calls: [calc], max_steps: 2}}
  - name: wrong answer and calls
    replay: {recording}
    expect:
      answer: {{contains: '396'}}
      calls: [{{tool: calc, arguments: {{expression: '1+1'}}}}]
      max_steps: 1
  - name: no calls expected
    replay: {recording}
    expect: {{no_calls: true, status: incomplete}}
",
            calculator()
        ),
    );
    let junit = dir.path().join("junit.xml");
    let output = reagent(&["test", &path_str(&suite), "--junit", &path_str(&junit), "--json"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(17), "{err}");
    for line in [
        "PASS  ",
        "answer.contains: expected the answer to contain \"396\"; it was \"395\" [step 2, event",
        "calls: expected a call of `calc` with {\"expression\":\"1+1\"}; the calls were: calc {\"expression\":\"(17*23)+4\"} (step 1)",
        "max_steps: expected at most 1 steps; the run took 2 [event",
        "no_calls: expected no calls; the agent called calc {\"expression\":\"(17*23)+4\"} [step 1, event",
        "status: expected `incomplete`, the run ended `answered`",
        "3 case(s): 1 passed, 2 failed, 0 stale",
    ] {
        assert!(err.contains(line), "missing {line:?} in:\n{err}");
    }
    let cases: Vec<Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(cases.iter().filter(|c| c["verdict"] == "failed").count(), 2, "{cases:?}");
    assert_eq!(cases.last().map(|s| s["type"].clone()), Some(Value::from("summary")));

    // Python's standard XML parser reads it: a test case per case, failures where they failed.
    let read = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as ET\n\
             root = ET.parse(sys.argv[1]).getroot()\n\
             for case in root.iter('testcase'):\n\
             \x20   failure = case.find('failure')\n\
             \x20   print(case.get('name'), '|', '' if failure is None else failure.get('message'))",
        )
        .arg(&junit)
        .output()
        .expect("python3");
    assert!(read.status.success(), "{}", stderr(&read));
    let lines: Vec<String> = stdout(&read).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.contains(&"passes | ".to_string()), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("wrong answer and calls | answer.contains: expected")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("no calls expected | ")), "{lines:?}");
}

#[test]
fn a_recording_whose_agent_changed_its_tools_is_reported_stale_with_the_command_that_records_it_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The calculator, its calc tool since swapped for the text tools.
    let agent = std::fs::read_to_string(repo_root().join("agents/calculator.yaml"))
        .expect("agent")
        .replace("../tools/dist/calc.wasm", &path_str(&repo_root().join("tools/dist/text.wasm")));
    write(dir.path(), "calculator.yaml", &agent);
    let recording = path_str(&repo_root().join("agents/recordings/calculator-adds"));
    let suite = write(
        dir.path(),
        "calc.test.yaml",
        &format!(
            "agent: calculator.yaml\ncases:\n  - name: adds\n    replay: {recording}\n    expect: {{answer: {{contains: '395'}}}}\n"
        ),
    );
    let output = reagent(&["test", &path_str(&suite)]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(17), "{err}");
    assert!(err.contains("STALE"), "{err}");
    assert!(err.contains("the recording is stale: since it was made, tool `calc` is gone"), "{err}");
    assert!(err.contains(&format!("record it again: reagent run --record {recording} ")), "{err}");
    assert!(!err.contains("FAIL"), "a stale recording is not an assertion failure: {err}");
    assert!(err.contains("0 failed, 1 stale"), "{err}");
}

#[test]
fn a_tool_marked_replay_stub_returns_its_recorded_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = path_str(&repo_root().join("tools/dist/clock.wasm"));
    write(
        dir.path(),
        "agent.yaml",
        &format!(
            "name: clocked\nmodel: {{backend: replay, script: script.yaml}}\ntools:\n  - component: {clock}\n    replay: stub\n"
        ),
    );
    write(
        dir.path(),
        "script.yaml",
        "turns:\n  - '<tool_call>{\"name\": \"clock_now\", \"arguments\": {}}</tool_call>'\n  - The time is known.\n",
    );
    let recording = dir.path().join("now");
    let output = reagent(&[
        "run",
        "--record",
        &path_str(&recording),
        &path_str(&dir.path().join("agent.yaml")),
        "What time is it?",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // A second later the clock says otherwise: only the stub gives the recorded time back.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let suite = write(dir.path(), "clock.test.yaml", "agent: agent.yaml\ncases:\n  - name: now\n    replay: now\n");
    let events = dir.path().join("events");
    let output = reagent(&["test", &path_str(&suite), "--events", &path_str(&events)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let recorded = events_in(&recording.join("events.jsonl"));
    let replayed = events_in(&events.join("clock/now.jsonl"));
    let result = |events: &[Value]| events.iter().find(|e| e["event"] == "tool_result").map(|e| e["result"].clone());
    assert!(result(&recorded).is_some_and(|r| !r.is_null()), "{recorded:?}");
    assert_eq!(result(&replayed), result(&recorded));
}

#[test]
fn a_live_case_run_five_times_on_the_real_local_model_reports_its_pass_rate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = write(
        dir.path(),
        "live.test.yaml",
        &format!(
            "agent: {}\ncases:
  - name: adds
    task: '{TASK}'
    runs: 5
    pass_rate: 0.6
    expect: {{status: answered, answer: {{matches: '\\b395\\b'}}}}
  - name: never right
    task: '{TASK}'
    runs: 5
    pass_rate: 0.8
    expect: {{answer: {{contains: '396'}}}}
",
            calculator()
        ),
    );
    let output = reagent(&["test", &path_str(&suite), "--json"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(17), "{err}");
    let cases: Vec<Value> = stdout(&output).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let case = |name: &str| cases.iter().find(|c| c["case"] == name).unwrap_or_else(|| panic!("{name}: {cases:?}"));
    let adds = case("adds");
    assert_eq!(adds["runs"], 5);
    let passed = adds["passed_runs"].as_u64().expect("passed runs");
    assert!(err.contains(&format!("note: {passed}/5 runs passed ({}%)", passed * 20)), "{err}");
    let never = case("never right");
    assert_eq!((never["verdict"].as_str(), never["passed_runs"].as_u64()), (Some("failed"), Some(0)));
    assert!(err.contains("pass_rate: 0/5 runs passed (0%), 80% required"), "{err}");
}

#[test]
fn no_secret_the_agent_names_lands_in_a_recording() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = "sk-recorded-nowhere-5f1c";
    // A server nobody answers: the run fails at its first turn, and is recorded as it went.
    write(
        dir.path(),
        "agent.yaml",
        "name: keyed\nmodel:\n  backend: openai\n  url: http://127.0.0.1:9/v1\n  name: m\n  api_key_env: REAGENT_TEST_RECORDED_KEY\n",
    );
    let recording = dir.path().join("keyed");
    let output = common::reagent_command()
        .args(["run", "--record", &path_str(&recording), &path_str(&dir.path().join("agent.yaml"))])
        .arg(format!("My key is {secret}; what is 2+2?"))
        .env("REAGENT_TEST_RECORDED_KEY", secret)
        .output()
        .expect("run reagent");
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let mut written = String::new();
    for file in ["script.yaml", "events.jsonl", "recording.yaml"] {
        written += &std::fs::read_to_string(recording.join(file)).expect("a recording file");
    }
    assert!(!written.contains(secret), "{written}");
    assert!(written.contains("My key is [secret]"), "{written}");
}
