//! A case's assertions, checked against its run's events. Each failure says what was expected,
//! what happened, and the event (and step) that decided it.

use std::fmt;

use regex::Regex;
use serde_json::Value;

use super::suite::{CallMatch, Expect};
use crate::recording::clip;

/// One assertion that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The assertion, as the suite names it (`answer.contains`, `calls`, …).
    pub check: String,
    pub message: String,
    /// The event that decided it: its number in the run's stream (from 1) and its name.
    pub event: Option<(usize, String)>,
    pub step: Option<u64>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)?;
        match (&self.event, self.step) {
            (Some((number, name)), Some(step)) => write!(f, " [step {step}, event {number} `{name}`]"),
            (Some((number, name)), None) => write!(f, " [event {number} `{name}`]"),
            _ => Ok(()),
        }
    }
}

/// The events of one run, indexed for the checks.
struct Run<'a> {
    events: &'a [Value],
}

impl<'a> Run<'a> {
    /// The last top-level event named `name`, with its index.
    fn last(&self, name: &str) -> Option<(usize, &'a Value)> {
        self.events.iter().enumerate().rev().find(|(_, e)| e["event"] == name)
    }

    fn calls(&self) -> impl Iterator<Item = (usize, &'a Value)> {
        self.events.iter().enumerate().filter(|(_, e)| e["event"] == "tool_call")
    }

    fn failure(&self, check: &str, message: String, at: Option<(usize, &Value)>) -> Failure {
        Failure {
            check: check.to_string(),
            message,
            event: at.map(|(index, e)| (index + 1, e["event"].as_str().unwrap_or_default().to_string())),
            step: at.and_then(|(_, e)| e["step"].as_u64()),
        }
    }
}

/// Every assertion of `expect` that `events` (a run's stream) does not satisfy.
pub fn check(expect: &Expect, events: &[Value]) -> Vec<Failure> {
    let run = Run { events };
    let mut failures = Vec::new();
    let finished = run.last("run_finished");
    let status = finished.map_or("(none: the run did not finish)", |(_, e)| e["status"].as_str().unwrap_or_default());
    let ended = || match finished {
        Some((_, e)) => {
            let mut said = format!("`{status}`");
            if let Some(budget) = e["budget"].as_str() {
                said.push_str(&format!(" ({budget} ran out)"));
            }
            if let Some(message) = e["message"].as_str() {
                said.push_str(&format!(": {}", clip(message, 200)));
            }
            said
        }
        None => "without `run_finished`".into(),
    };

    if let Some(expected) = &expect.status
        && expected != status
    {
        failures.push(run.failure("status", format!("expected `{expected}`, the run ended {}", ended()), finished));
    }
    if let Some(expected) = &expect.budget {
        let ran_out = finished.and_then(|(_, e)| e["budget"].as_str());
        if ran_out != Some(expected.as_str()) {
            failures.push(run.failure(
                "budget",
                format!("expected {expected} to run out, the run ended {}", ended()),
                finished,
            ));
        }
    }

    let answer = run.last("answer");
    let text = answer.and_then(|(_, e)| e["text"].as_str());
    if let Some(matcher) = &expect.answer {
        let wanted = [
            (
                "answer.contains",
                matcher
                    .contains
                    .as_ref()
                    .map(|c| (format!("to contain {c:?}"), text.is_some_and(|t| t.contains(c.as_str())))),
            ),
            (
                "answer.matches",
                matcher.matches.as_ref().map(|r| (format!("to match /{r}/"), text.is_some_and(|t| r.is_match(t)))),
            ),
            (
                "answer.equals",
                matcher.equals.as_ref().map(|e| (format!("to be {e:?}"), text.is_some_and(|t| t.trim() == e.trim()))),
            ),
        ];
        for (check, wanted) in wanted {
            let Some((expected, false)) = wanted else { continue };
            match text {
                Some(text) => failures.push(run.failure(
                    check,
                    format!("expected the answer {expected}; it was {:?}", clip(text, 300)),
                    answer,
                )),
                None => failures.push(run.failure(
                    check,
                    format!("expected the answer {expected}; the run gave no answer, it ended {}", ended()),
                    finished,
                )),
            }
        }
    }

    if !expect.output.is_empty() {
        let output = answer.and_then(|(_, e)| match &e["output"] {
            Value::Null => e["text"].as_str().and_then(json_in),
            output => Some(output.clone()),
        });
        for (pointer, expected) in &expect.output {
            let check = format!("output{pointer}");
            match output.as_ref().map(|o| o.pointer(pointer)) {
                None => failures.push(run.failure(
                    &check,
                    format!("expected {expected} at {pointer}; the answer holds no JSON"),
                    answer.or(finished),
                )),
                Some(None) => failures.push(run.failure(
                    &check,
                    format!("expected {expected} at {pointer}; nothing is there"),
                    answer,
                )),
                Some(Some(found)) => match value_matches(expected, found) {
                    Ok(true) => {}
                    Ok(false) => failures.push(run.failure(
                        &check,
                        format!("expected {expected} at {pointer}; found {}", clip(&found.to_string(), 300)),
                        answer,
                    )),
                    Err(bad) => failures.push(run.failure(&check, bad, None)),
                },
            }
        }
    }

    let mut after = 0;
    for wanted in &expect.calls {
        let from = if expect.calls_in_order { after } else { 0 };
        let found = run.calls().filter(|(index, _)| *index >= from).find_map(|(index, call)| {
            match call_matches(wanted, call) {
                Ok(true) => Some(Ok(index)),
                Ok(false) => None,
                Err(bad) => Some(Err(bad)),
            }
        });
        match found {
            Some(Ok(index)) => after = index + 1,
            Some(Err(bad)) => failures.push(run.failure("calls", bad, None)),
            None => {
                let made: Vec<String> = run
                    .calls()
                    .map(|(_, c)| {
                        format!(
                            "{} {} (step {})",
                            c["tool"].as_str().unwrap_or_default(),
                            clip(&c["arguments"].to_string(), 120),
                            c["step"]
                        )
                    })
                    .collect();
                let order = if expect.calls_in_order && after > 0 { ", after the calls matched before it" } else { "" };
                let made = if made.is_empty() {
                    "no calls were made".to_string()
                } else {
                    format!("the calls were: {}", made.join("; "))
                };
                failures.push(run.failure(
                    "calls",
                    format!("expected a call {}{order}; {made}", describe(wanted)),
                    None,
                ));
            }
        }
    }
    if expect.no_calls
        && let Some(first) = run.calls().next()
    {
        let (_, call) = first;
        let message = format!(
            "expected no calls; the agent called {} {}",
            call["tool"].as_str().unwrap_or_default(),
            clip(&call["arguments"].to_string(), 200)
        );
        failures.push(run.failure("no_calls", message, Some(first)));
    }

    if let Some(max) = expect.max_steps {
        let steps = finished.and_then(|(_, e)| e["steps"].as_u64()).unwrap_or(0);
        if steps > max {
            failures.push(run.failure(
                "max_steps",
                format!("expected at most {max} steps; the run took {steps}"),
                finished,
            ));
        }
    }
    if let Some(max) = expect.max_tokens {
        let usage = finished.map(|(_, e)| &e["usage"]).filter(|u| u.is_object());
        match usage {
            None => failures.push(run.failure(
                "max_tokens",
                format!("expected at most {max} tokens; the model's backend counted none"),
                finished,
            )),
            Some(usage) => {
                let tokens =
                    usage["prompt_tokens"].as_u64().unwrap_or(0) + usage["completion_tokens"].as_u64().unwrap_or(0);
                if tokens > max {
                    failures.push(run.failure(
                        "max_tokens",
                        format!("expected at most {max} tokens; the run used {tokens} (prompt and completion)"),
                        finished,
                    ));
                }
            }
        }
    }
    failures
}

fn describe(wanted: &CallMatch) -> String {
    match &wanted.arguments {
        None => format!("of `{}`", wanted.tool),
        Some(arguments) => format!("of `{}` with {}", wanted.tool, Value::Object(arguments.clone())),
    }
}

fn call_matches(wanted: &CallMatch, call: &Value) -> Result<bool, String> {
    if call["tool"] != wanted.tool.as_str() {
        return Ok(false);
    }
    match &wanted.arguments {
        None => Ok(true),
        Some(arguments) => value_matches(&Value::Object(arguments.clone()), &call["arguments"]),
    }
}

/// Whether `found` holds what `expected` says: `{matches: REGEX}` matches a string (or a value's
/// JSON text), an object holds at least the fields named, numbers compare as numbers, anything
/// else is equal. An invalid pattern is an error.
fn value_matches(expected: &Value, found: &Value) -> Result<bool, String> {
    match expected {
        Value::Object(fields) if fields.len() == 1 && fields.get("matches").is_some_and(Value::is_string) => {
            let pattern = fields["matches"].as_str().unwrap_or_default();
            let regex = Regex::new(pattern)
                .map_err(|e| format!("`matches: {pattern}` is not a valid regular expression: {e}"))?;
            Ok(match found {
                Value::String(text) => regex.is_match(text),
                other => regex.is_match(&other.to_string()),
            })
        }
        Value::Object(fields) => {
            let Value::Object(found) = found else { return Ok(false) };
            for (key, value) in fields {
                match found.get(key) {
                    Some(inner) if value_matches(value, inner)? => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
        Value::Number(a) => Ok(found.as_f64().is_some_and(|b| a.as_f64() == Some(b))),
        other => Ok(other == found),
    }
}

/// The JSON in an answer: the whole text, or the outermost object or array in it.
fn json_in(text: &str) -> Option<Value> {
    let text = text.trim();
    serde_json::from_str(text).ok().or_else(|| {
        let start = text.find(['{', '['])?;
        let end = text.rfind(['}', ']'])?;
        serde_json::from_str(text.get(start..=end)?).ok()
    })
}
