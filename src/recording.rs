//! Recordings: a real run kept so that it can be replayed, exactly, as a regression test. A
//! recording is a folder:
//! - `script.yaml`: a replay script of what the model produced at each turn (the reply the loop
//!   read, the pieces it streamed), which `replay` plays;
//! - `events.jsonl`: the run's events as they were committed, which a replay is held to (tools
//!   really run again; the results of tools marked `replay: stub` are taken from here);
//! - `recording.yaml`: what was run (agent, task, inputs) and the fingerprint of what the model
//!   was shown (instructions, tool declarations), which says why a replay that parts from the
//!   recording does: a stale recording, or a tool that now behaves differently.
//!
//! No secret lands in a recording: the values of every secret the agent names are replaced.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::conversation::ToolDeclaration;
use crate::model::Script;
use crate::spec::{AgentSpec, ModelSpec, Sources, SpecError, yaml};
use crate::toolbox::{ToolError, ToolOutcome};

pub const SCRIPT: &str = "script.yaml";
pub const EVENTS: &str = "events.jsonl";
pub const ABOUT: &str = "recording.yaml";

/// A recording, read or about to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub about: About,
    pub script: Script,
    /// The run's events, as JSON objects.
    pub events: Vec<Value>,
}

/// What was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct About {
    /// The agent file, as it was named when the run was recorded.
    pub agent: PathBuf,
    pub task: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Value>,
    /// The run it was made from, and when.
    pub run: String,
    pub recorded: String,
    pub fingerprint: Fingerprint,
}

/// What the model was shown, hashed: a change here is what makes a recording stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    /// SHA-256 of the agent file's text.
    pub agent_file: String,
    /// SHA-256 of the system prompt (the instructions, inputs put in).
    pub instructions: String,
    /// Each tool offered, by name: SHA-256 of its declaration (description and parameters).
    pub tools: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn of(agent_file: &[u8], instructions: &str, tools: &[ToolDeclaration]) -> Self {
        let tools = tools
            .iter()
            .map(|tool| {
                let declared = serde_json::json!({"description": tool.description, "parameters": tool.parameters});
                (tool.name.clone(), sha256(declared.to_string().as_bytes()))
            })
            .collect();
        Fingerprint { agent_file: sha256(agent_file), instructions: sha256(instructions.as_bytes()), tools }
    }

    /// What changed from `self` (the recording's) to `now`, in words; empty when nothing did.
    pub fn changes(&self, now: &Fingerprint) -> Vec<String> {
        let mut changes = Vec::new();
        for (name, hash) in &self.tools {
            match now.tools.get(name) {
                None => changes.push(format!("tool `{name}` is gone")),
                Some(now) if now != hash => changes.push(format!("tool `{name}` is declared differently")),
                Some(_) => {}
            }
        }
        changes.extend(now.tools.keys().filter(|n| !self.tools.contains_key(*n)).map(|n| format!("tool `{n}` is new")));
        if self.instructions != now.instructions {
            changes.push("the instructions changed".into());
        }
        if self.agent_file != now.agent_file {
            changes.push("the agent file was edited".into());
        }
        changes
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

impl Recording {
    /// Reads the recording in `dir`.
    pub fn read(dir: &Path) -> Result<Recording, RecordingError> {
        let sources = Sources::disk();
        let about_file = dir.join(ABOUT);
        if !about_file.is_file() {
            return Err(RecordingError::File {
                path: dir.to_path_buf(),
                message: format!("not a recording (no {ABOUT}); make one with `reagent run --record DIR AGENT TASK`"),
            });
        }
        let about: About = yaml::read_from(&sources, &about_file)?;
        let script: Script = yaml::read_from(&sources, &dir.join(SCRIPT))?;
        let events_file = dir.join(EVENTS);
        let text = std::fs::read_to_string(&events_file)
            .map_err(|e| RecordingError::File { path: events_file.clone(), message: e.to_string() })?;
        let events = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| RecordingError::File {
                    path: events_file.clone(),
                    message: format!("line {}: {e}", n + 1),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Recording { about, script, events })
    }

    /// Writes the recording into `dir` (made if missing), each file whole or not at all.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let script = format!(
            "# What the model produced at each turn of run {}, recorded by reagent: `reagent test` replays it.\n{}",
            self.about.run,
            to_yaml(&self.script)?
        );
        write_whole(&dir.join(SCRIPT), &script)?;
        let events: String = self.events.iter().map(|e| format!("{e}\n")).collect();
        write_whole(&dir.join(EVENTS), &events)?;
        write_whole(&dir.join(ABOUT), &to_yaml(&self.about)?)
    }

    /// The command that makes this recording (in `dir`) again, of `agent` as it is now.
    pub fn rerecord_command(&self, dir: &Path, agent: &Path) -> String {
        let mut command = format!(
            "reagent run --record {} {} {}",
            shell_word(&dir.display().to_string()),
            shell_word(&agent.display().to_string()),
            shell_word(&self.about.task)
        );
        for (name, value) in &self.about.inputs {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            command.push_str(&format!(" --input {}", shell_word(&format!("{name}={value}"))));
        }
        command
    }

    /// The recorded outcome of each call, by call id: what a stubbed tool returns on replay.
    pub fn results(&self) -> HashMap<String, ToolOutcome> {
        self.events
            .iter()
            .filter(|e| e["event"] == "tool_result")
            .filter_map(|e| {
                let id = e["id"].as_str()?.to_string();
                let result = match e["ok"].as_bool()? {
                    true => Ok(e["result"].clone()),
                    false => Err(serde_json::from_value::<ToolError>(e["error"].clone()).ok()?),
                };
                let log = e["log"].as_str().unwrap_or_default().to_string();
                let duration = Duration::from_secs_f64(e["duration_ms"].as_f64().unwrap_or(0.0).max(0.0) / 1000.0);
                Some((id, ToolOutcome { result, log, duration }))
            })
            .collect()
    }

    /// Replaces every secret's value, wherever it appears.
    pub fn redact(&mut self, secrets: &[String]) {
        let secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
        if secrets.is_empty() {
            return;
        }
        let mut script = serde_json::to_value(&self.script).unwrap_or_default();
        redact_value(&mut script, &secrets);
        if let Ok(redacted) = serde_json::from_value(script) {
            self.script = redacted;
        }
        for event in &mut self.events {
            redact_value(event, &secrets);
        }
        self.about.task = redact_text(&self.about.task, &secrets);
        for value in self.about.inputs.values_mut() {
            redact_value(value, &secrets);
        }
    }
}

/// The values of the secrets an agent (and its sub-agents) names: its model's API key, its MCP
/// servers' secrets.
pub fn secrets_of(spec: &AgentSpec) -> Vec<String> {
    let mut secrets: Vec<String> = spec.mcp_servers.iter().flat_map(|s| s.secrets.iter().cloned()).collect();
    if let ModelSpec::OpenAi(openai) = &spec.model
        && let Some(value) = openai.api_key_env.as_deref().and_then(|name| std::env::var(name).ok())
    {
        secrets.push(value);
    }
    secrets.extend(spec.sub_agents.iter().flat_map(|sub| secrets_of(&sub.spec)));
    secrets
}

fn redact_value(value: &mut Value, secrets: &[&String]) {
    match value {
        Value::String(text) => *text = redact_text(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(v, secrets)),
        Value::Object(fields) => fields.values_mut().for_each(|v| redact_value(v, secrets)),
        _ => {}
    }
}

fn redact_text(text: &str, secrets: &[&String]) -> String {
    secrets.iter().fold(text.to_string(), |text, secret| text.replace(secret.as_str(), "[secret]"))
}

/// Where a replay first parted from its recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// The index of the first event that differs.
    pub index: usize,
    pub recorded: Option<Value>,
    pub replayed: Option<Value>,
}

impl Divergence {
    /// The step the differing event belongs to, where it names one.
    pub fn step(&self) -> Option<u64> {
        [&self.recorded, &self.replayed].into_iter().flatten().find_map(|e| e["step"].as_u64())
    }
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |event: &Option<Value>| match event {
            Some(event) => clip(&event.to_string(), 300),
            None => "nothing (the run ended)".into(),
        };
        write!(f, "event {}", self.index + 1)?;
        if let Some(step) = self.step() {
            write!(f, " (step {step})")?;
        }
        write!(f, ": recorded {}, replayed {}", show(&self.recorded), show(&self.replayed))
    }
}

/// The first place `replayed` differs from `recorded`, timings aside.
pub fn divergence(recorded: &[Value], replayed: &[Value]) -> Option<Divergence> {
    let len = recorded.len().max(replayed.len());
    (0..len).find_map(|index| {
        let (a, b) = (recorded.get(index).map(untimed), replayed.get(index).map(untimed));
        (a != b).then(|| Divergence { index, recorded: a, replayed: b })
    })
}

/// An event without what only says how long something took.
pub fn untimed(event: &Value) -> Value {
    let mut event = event.clone();
    strip_timings(&mut event);
    event
}

fn strip_timings(value: &mut Value) {
    if let Value::Object(fields) = value {
        fields.remove("duration_ms");
        fields.values_mut().for_each(strip_timings);
    }
}

pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

fn to_yaml<T: Serialize>(value: &T) -> std::io::Result<String> {
    serde_saphyr::to_string(value).map_err(std::io::Error::other)
}
