//! A test suite file (`*.test.yaml`): the agent it tests and its cases, read with positions so
//! that every mistake is reported at `file:line:col`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::spec::{Position, Sources, SpecError, yaml};

/// A suite, read.
#[derive(Debug, Clone)]
pub struct Suite {
    pub file: PathBuf,
    /// The agent under test (resolved against the suite's folder).
    pub agent: PathBuf,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub at: Position,
    /// The task; a replayed case defaults to its recording's.
    pub task: Option<String>,
    pub inputs: BTreeMap<String, Value>,
    pub model: CaseModel,
    pub expect: Expect,
}

/// What answers a case.
#[derive(Debug, Clone, PartialEq)]
pub enum CaseModel {
    /// A recording (its folder), replayed: the model's recorded turns, the tools really run.
    Replay(PathBuf),
    /// The agent's own model, `runs` times; the case passes when at least `pass_rate` of the runs do.
    Live { runs: u32, pass_rate: f64 },
}

/// What a case asserts about its run.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `run_finished`'s status.
    pub status: Option<String>,
    /// With `incomplete`: the budget that ran out.
    pub budget: Option<String>,
    pub answer: Option<TextMatch>,
    /// JSON Pointer → the value the answer's JSON (its `output`, else the answer parsed) holds there.
    pub output: BTreeMap<String, Value>,
    /// Calls that must have been made.
    pub calls: Vec<CallMatch>,
    /// Whether `calls` must come in that order (others may come between).
    pub calls_in_order: bool,
    pub no_calls: bool,
    pub max_steps: Option<u64>,
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct TextMatch {
    pub contains: Option<String>,
    pub matches: Option<Regex>,
    pub equals: Option<String>,
}

/// A call: the tool, and what its arguments must hold (each field equal, or `{matches: REGEX}`;
/// fields not named are not looked at).
#[derive(Debug, Clone, PartialEq)]
pub struct CallMatch {
    pub tool: String,
    pub arguments: Option<serde_json::Map<String, Value>>,
}

const STATUSES: &[&str] =
    &["answered", "incomplete", "model_failed", "loop", "invalid_output", "paused", "in_doubt", "cancelled"];
const BUDGETS: &[&str] = &["max_steps", "max_tool_calls", "max_tokens", "timeout"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    agent: Spanned<String>,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Value>,
    /// A recording's folder, relative to the suite.
    #[serde(default)]
    replay: Option<Spanned<String>>,
    #[serde(default)]
    runs: Option<Spanned<u32>>,
    #[serde(default)]
    pass_rate: Option<Spanned<f64>>,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    status: Option<Spanned<String>>,
    #[serde(default)]
    budget: Option<Spanned<String>>,
    #[serde(default)]
    answer: Option<RawText>,
    #[serde(default)]
    output: BTreeMap<String, Value>,
    #[serde(default)]
    calls: Vec<RawCall>,
    #[serde(default)]
    calls_in_order: bool,
    #[serde(default)]
    no_calls: bool,
    #[serde(default)]
    max_steps: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    matches: Option<Spanned<String>>,
    #[serde(default)]
    equals: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCall {
    Tool(String),
    Call {
        tool: String,
        #[serde(default)]
        arguments: Option<serde_json::Map<String, Value>>,
    },
}

impl Suite {
    pub fn load(file: &Path) -> Result<Suite, SpecError> {
        let raw: RawSuite = yaml::read_from(&Sources::disk(), file)?;
        let at = |location: serde_saphyr::Location| Position::new(file, location);
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut cases: Vec<Case> = Vec::new();
        for case in raw.cases {
            let place = at(case.name.referenced);
            if cases.iter().any(|c| c.name == case.name.value) {
                let message = format!("a second case named `{}`: give each case its own name", case.name.value);
                return Err(SpecError::new(place, message));
            }
            let model = match (case.replay, case.runs, case.pass_rate) {
                (Some(_), Some(runs), _) => {
                    let message = "a replayed case runs once (a replay gives the same result every time): drop `runs:`, or `replay:` to run the agent's own model";
                    return Err(SpecError::new(at(runs.referenced), message));
                }
                (Some(_), None, Some(rate)) => {
                    let message = "`pass_rate:` is for a case run on the agent's own model several times (`runs:`)";
                    return Err(SpecError::new(at(rate.referenced), message));
                }
                (Some(recording), None, None) => CaseModel::Replay(dir.join(&recording.value)),
                (None, runs, rate) => {
                    let runs_value = runs.as_ref().map_or(1, |r| r.value);
                    if runs_value == 0 {
                        let at_runs = runs.map_or(place.clone(), |r| at(r.referenced));
                        return Err(SpecError::new(at_runs, "`runs:` must be at least 1"));
                    }
                    let pass_rate = rate.as_ref().map_or(1.0, |r| r.value);
                    if !(0.0..=1.0).contains(&pass_rate) || pass_rate == 0.0 {
                        let at_rate = rate.map_or(place.clone(), |r| at(r.referenced));
                        return Err(SpecError::new(
                            at_rate,
                            "`pass_rate:` is a fraction of the runs: above 0, at most 1 (e.g. 0.8)",
                        ));
                    }
                    CaseModel::Live { runs: runs_value, pass_rate }
                }
            };
            if case.task.is_none() && !matches!(model, CaseModel::Replay(_)) {
                let message = "a case on the agent's own model needs `task:` (a replayed case takes its recording's)";
                return Err(SpecError::new(place, message));
            }
            let expect = expect(case.expect, &at)?;
            cases.push(Case { name: case.name.value, at: place, task: case.task, inputs: case.inputs, model, expect });
        }
        if cases.is_empty() {
            return Err(SpecError::new(Position::start_of(file), "the suite has no `cases:`"));
        }
        Ok(Suite { file: file.to_path_buf(), agent: dir.join(&raw.agent.value), cases })
    }
}

fn expect(raw: RawExpect, at: &impl Fn(serde_saphyr::Location) -> Position) -> Result<Expect, SpecError> {
    let one_of = |value: Option<Spanned<String>>, names: &[&str], what: &str| match value {
        Some(v) if !names.contains(&v.value.as_str()) => Err(SpecError::new(
            at(v.referenced),
            format!("`{}` is not a {what}; one of: {}", v.value, names.join(", ")),
        )),
        v => Ok(v.map(|v| v.value)),
    };
    let answer = match raw.answer {
        None => None,
        Some(text) => {
            let matches = match text.matches {
                None => None,
                Some(pattern) => Some(Regex::new(&pattern.value).map_err(|e| {
                    SpecError::new(at(pattern.referenced), format!("`matches:` is not a valid regular expression: {e}"))
                })?),
            };
            Some(TextMatch { contains: text.contains, matches, equals: text.equals })
        }
    };
    let calls = raw
        .calls
        .into_iter()
        .map(|call| match call {
            RawCall::Tool(tool) => CallMatch { tool, arguments: None },
            RawCall::Call { tool, arguments } => CallMatch { tool, arguments },
        })
        .collect();
    Ok(Expect {
        status: one_of(raw.status, STATUSES, "run status")?,
        budget: one_of(raw.budget, BUDGETS, "budget")?,
        answer,
        output: raw.output,
        calls,
        calls_in_order: raw.calls_in_order,
        no_calls: raw.no_calls,
        max_steps: raw.max_steps,
        max_tokens: raw.max_tokens,
    })
}

/// The suites under each path: a file is one; a folder holds every `*.test.yaml` below it
/// (hidden folders, `target` and `node_modules` aside), in name order.
pub fn discover(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found)?;
        } else if path.exists() {
            found.push(path.clone());
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or folder", path.display()),
            ));
        }
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                walk(&path, found)?;
            }
        } else if name.ends_with(".test.yaml") || name.ends_with(".test.yml") {
            found.push(path);
        }
    }
    Ok(())
}
