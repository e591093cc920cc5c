//! The malformed-outputs corpus: raw model turns as models really write them when they get tool
//! calls wrong, each run through the replay backend and the real binary. None may crash a run;
//! each either runs the intended call or feeds a clear error back (or is read as an answer, only
//! where that is the right reading).
//!
//! `tests/corpus/malformed_outputs/NAME.txt` holds one turn byte for byte (valid UTF-8, since
//! replay scripts are text); `NAME.expect` says what must come of it, one line per tool result of
//! that turn, in the order the calls were written (`#` starts a comment):
//!
//! ```text
//! call TOOL {"arg": …}   the call runs with exactly these arguments and its result is 395
//! error KIND             a tool result with ok=false, this error kind (malformed_call,
//!                        invalid_arguments, unknown_tool) and a message that says what to write
//! answer                 no call: the text is the answer (at step 1)
//! retry                  nothing to act on (empty output, reasoning only): no result, no answer;
//!                        the loop asks again
//! ```
//!
//! Each case runs as turn 1 of a script whose turn 2 is the answer "done". Huge outputs are
//! generated here rather than stored.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};

const CORPUS: &str = "tests/corpus/malformed_outputs";
/// What every `call` case computes: (17*23)+4.
const RESULT: i64 = 395;

struct Case {
    name: String,
    raw: String,
    expect: Vec<Expect>,
}

#[derive(Debug)]
enum Expect {
    Call { tool: String, arguments: Value },
    Error(String),
    Answer,
    Retry,
}

fn parse_expect(text: &str) -> Result<Vec<Expect>, String> {
    let mut expect = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        expect.push(match word {
            "call" => {
                let (tool, arguments) = rest.split_once(' ').ok_or(format!("`{line}`: call TOOL {{ARGUMENTS}}"))?;
                let arguments = serde_json::from_str(arguments).map_err(|e| format!("`{line}`: {e}"))?;
                Expect::Call { tool: tool.to_string(), arguments }
            }
            "error" if !rest.is_empty() => Expect::Error(rest.to_string()),
            "answer" if rest.is_empty() => Expect::Answer,
            "retry" if rest.is_empty() => Expect::Retry,
            _ => return Err(format!("`{line}`: expected `call TOOL ARGS`, `error KIND`, `answer` or `retry`")),
        });
    }
    let only = |e: &Expect| matches!(e, Expect::Answer | Expect::Retry);
    if expect.is_empty() || (expect.len() > 1 && expect.iter().any(only)) {
        return Err("`answer` and `retry` stand alone; otherwise one line per tool result".into());
    }
    Ok(expect)
}

fn corpus_dir() -> PathBuf {
    repo_root().join(CORPUS)
}

/// The stored cases, sorted by name. Panics on a broken corpus (a missing or unreadable sidecar).
fn stored_cases() -> Vec<Case> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .map(|entry| entry.expect("a corpus entry").file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".txt").map(str::to_string))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let read = |ext: &str| {
                let path = corpus_dir().join(format!("{name}.{ext}"));
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            };
            let expect = parse_expect(&read("expect")).unwrap_or_else(|e| panic!("{name}.expect: {e}"));
            Case { raw: read("txt"), name, expect }
        })
        .collect()
}

/// Outputs too big to store: megabytes of text, brackets nested 100 000 deep, a runaway argument.
fn generated_cases() -> Vec<Case> {
    let case = |name: &str, raw: String, expect: Vec<Expect>| Case { name: name.into(), raw, expect };
    let line = format!("{}\n", "(17*23)+4=395;".repeat(70));
    let deep_object = format!(r#"{{"name": "calc", "arguments": {}"#, r#"{"a": "#.repeat(100_000));
    let long_expression = format!(
        r#"<tool_call>{{"name": "calc", "arguments": {{"expression": "{}4"}}}}</tool_call>"#,
        "1+".repeat(500_000)
    );
    vec![
        case("generated_5mb_of_text", line.repeat(5 * 1024 * 1024 / line.len()), vec![Expect::Answer]),
        case(
            "generated_brackets_100k_deep_in_tool_call",
            format!("<tool_call>{}", "[".repeat(100_000)),
            vec![Expect::Error("malformed_call".into())],
        ),
        case("generated_objects_100k_deep_in_a_call", deep_object, vec![Expect::Error("malformed_call".into())]),
        case("generated_bare_brackets_100k_deep", "[".repeat(100_000), vec![Expect::Answer]),
        case(
            "generated_100k_unclosed_tool_call_tags",
            "<tool_call>".repeat(100_000),
            vec![Expect::Error("malformed_call".into())],
        ),
        case("generated_50k_think_tags", "<think>".repeat(50_000), vec![Expect::Retry]),
        case("generated_1mb_argument", long_expression, vec![Expect::Error("invalid_arguments".into())]),
    ]
}

/// `raw` as a YAML double-quoted scalar in printable ASCII: every other character escaped, so the
/// script holds the output exactly whatever it contains (NUL, a BOM, lone C1 controls).
fn yaml_quoted(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for c in raw.chars() {
        let _ = match c {
            '"' => write!(out, "\\\""),
            '\\' => write!(out, "\\\\"),
            ' '..='~' => write!(out, "{c}"),
            c if u32::from(c) <= 0xFF => write!(out, "\\x{:02X}", u32::from(c)),
            c if u32::from(c) <= 0xFFFF => write!(out, "\\u{:04X}", u32::from(c)),
            c => write!(out, "\\U{:08X}", u32::from(c)),
        };
    }
    out.push('"');
    out
}

#[derive(serde::Deserialize)]
struct Script {
    turns: Vec<String>,
}

/// Writes the agent and its script into `dir` and checks that the script reads back as `raw`.
fn write_agent(dir: &Path, raw: &str) -> Result<PathBuf, String> {
    let script = format!("turns:\n  - {}\n  - \"done\"\n", yaml_quoted(raw));
    let read_back: Script = serde_saphyr::from_str(&script).map_err(|e| format!("the script is not YAML: {e}"))?;
    if read_back.turns.first().map(String::as_str) != Some(raw) {
        return Err("the script does not hold the output byte for byte".into());
    }
    let agent = format!(
        "name: malformed-outputs\nmodel:\n  backend: replay\n  script: script.yaml\nreasoning: auto\n\
         tools:\n  - component: {}\nlimits:\n  max_steps: 4\n",
        calc_component().display()
    );
    std::fs::write(dir.join("script.yaml"), script).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("agent.yaml"), agent).map_err(|e| e.to_string())?;
    Ok(dir.join("agent.yaml"))
}

/// Runs one case; the problems found, in words.
fn check(case: &Case) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = match write_agent(dir.path(), &case.raw) {
        Ok(file) => file,
        Err(e) => return vec![e],
    };
    let output = reagent(&["run", "--json", &path_str(&file), "What is (17*23)+4?"]);
    let (code, err) = (output.status.code(), stderr(&output));
    let mut problems = Vec::new();
    if code == Some(101) || err.contains("panicked") {
        return vec![format!("PANIC (exit {code:?}): {err}")];
    }
    let events: Vec<Value> = match stdout(&output).lines().map(serde_json::from_str).collect() {
        Ok(events) => events,
        Err(e) => return vec![format!("stdout is not JSON lines ({e}); exit {code:?}; stderr: {err}")],
    };
    if code != Some(0) {
        problems.push(format!("exit {code:?} (expected 0); stderr: {err}"));
    }
    let step1 =
        |kind: &str| -> Vec<&Value> { events_of(&events, kind).into_iter().filter(|e| e["step"] == 1).collect() };
    let (calls, results, answers) = (step1("tool_call"), step1("tool_result"), events_of(&events, "answer"));

    match &case.expect[..] {
        [Expect::Answer] => {
            if !results.is_empty() {
                problems.push(format!("expected an answer, got {} tool result(s)", results.len()));
            }
            match answers.first() {
                Some(answer) if answer["step"] == 1 && answer["text"].as_str().is_some_and(|t| !t.is_empty()) => {}
                other => problems.push(format!("expected a non-empty answer at step 1, got {other:?}")),
            }
        }
        [Expect::Retry] => {
            if !results.is_empty() || answers.iter().any(|a| a["step"] == 1) {
                problems.push("expected nothing to act on at step 1 (a retry)".into());
            }
            if !answers.iter().any(|a| a["step"] == 2 && a["text"] == "done") {
                problems.push("expected the loop to ask again and get turn 2's answer".into());
            }
        }
        expected => {
            if results.len() != expected.len() {
                problems.push(format!("expected {} tool result(s) at step 1, got {}", expected.len(), results.len()));
            }
            for (i, (expect, result)) in expected.iter().zip(&results).enumerate() {
                let n = i + 1;
                match expect {
                    Expect::Call { tool, arguments } => {
                        let call = calls.iter().find(|c| c["id"] == result["id"]);
                        match call {
                            Some(call) if call["tool"] == json!(tool) && &call["arguments"] == arguments => {}
                            other => problems.push(format!(
                                "result {n}: expected the call {tool} {arguments}, got {}",
                                other.map_or("no call".into(), |c| format!("{} {}", c["tool"], c["arguments"]))
                            )),
                        }
                        if result["ok"] != true || result["result"] != json!(RESULT) {
                            problems.push(format!("result {n}: expected ok with {RESULT}, got {result}"));
                        }
                    }
                    Expect::Error(kind) => {
                        let message = result["error"]["message"].as_str().unwrap_or_default();
                        if result["ok"] != false || result["error"]["kind"] != json!(kind) {
                            problems.push(format!("result {n}: expected error {kind}, got {result}"));
                        } else if let Some(missing) = unclear(kind, message) {
                            problems.push(format!("result {n}: the {kind} message {missing}: {message}"));
                        }
                    }
                    Expect::Answer | Expect::Retry => unreachable!("parse_expect keeps these alone"),
                }
            }
            if !answers.iter().any(|a| a["text"] == "done") {
                problems.push("expected the run to go on to turn 2's answer".into());
            }
        }
    }
    if !problems.is_empty() {
        let shown: Vec<Value> = events
            .into_iter()
            .filter(|e| e["event"] != "delta")
            .map(|mut e| {
                // Huge cases: keep the report readable.
                for field in ["text", "task"] {
                    if let Some(text) = e[field].as_str().filter(|t| t.len() > 300) {
                        e[field] = json!(format!("{}… ({} bytes)", &text[..text.floor_char_boundary(300)], text.len()));
                    }
                }
                e
            })
            .collect();
        problems.push(format!("events: {}", serde_json::to_string(&shown).unwrap_or_default()));
    }
    problems
}

/// Whether an error message tells the model what to do; `Some(what is missing)` if not.
fn unclear(kind: &str, message: &str) -> Option<&'static str> {
    let says = |needles: &[&str]| needles.iter().all(|n| message.contains(n));
    match kind {
        _ if message.trim().is_empty() => Some("is empty"),
        // The model reads it back: a huge argument must not come back whole.
        _ if message.len() > 4_000 => Some("is longer than 4000 bytes"),
        "malformed_call" if !says(&["\"name\"", "\"arguments\""]) => Some("does not show the shape of a call"),
        "unknown_tool" if !says(&["the tools are: calc"]) => Some("does not list the tools"),
        "invalid_arguments" if !says(&["expression"]) => Some("does not name the expected argument"),
        _ => None,
    }
}

#[test]
fn every_malformed_output_runs_its_call_or_feeds_a_clear_error_back() {
    let stored = stored_cases();
    assert!(stored.len() >= 40, "the corpus holds {} cases; it needs at least 40", stored.len());
    let cases: Vec<Case> = stored.into_iter().chain(generated_cases()).collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let problems = check(case);
                    if !problems.is_empty() {
                        let report = format!("── {}\n   {}", case.name, problems.join("\n   "));
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(report);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_output_has_an_expectation_and_every_expectation_an_output() {
    let names = |ext: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
            .expect("the corpus folder")
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(ext).map(str::to_string))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(".txt"), names(".expect"));
    let others: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|name| !name.ends_with(".txt") && !name.ends_with(".expect"))
        .collect();
    assert!(others.is_empty(), "unexpected files in {CORPUS}: {others:?}");
}

#[test]
fn yaml_quoting_keeps_every_character() {
    let raw = "a\"b\\c\n\t\0\u{7f}\u{85}\u{a0}\u{feff}\u{2028}é🧮\u{10ffff}'";
    let script = format!("turns:\n  - {}\n", yaml_quoted(raw));
    assert!(script.is_ascii());
    let read_back: Script = serde_saphyr::from_str(&script).expect("YAML");
    assert_eq!(read_back.turns, vec![raw.to_string()]);
}
