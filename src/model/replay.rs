//! `replay`: a scripted model. The script is a YAML file of the model's outputs, turn by turn:
//! written by hand as raw text, exactly as a model would print it (each parsed as a real model's
//! output would be), or recorded by `reagent run --record` as what a real model produced (the
//! reply the loop read, and the pieces it streamed). Agents get deterministic tests in CI with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{DeltaKind, Model, ModelError, ModelErrorKind, ModelIdentity, ModelReply, ModelRequest, send_delta};
use crate::chat_format::parse_output;
use crate::conversation::{MalformedCall, Message, ToolCall};
use crate::spec::{Sources, SpecError, yaml};

pub struct ReplayModel {
    path: PathBuf,
    script: Script,
    next: AtomicUsize,
}

/// A replay script.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// In a recording: the model that was recorded, named as its run named it, so that a replay
    /// reports the run a recording reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub turns: Vec<ScriptTurn>,
}

/// One model turn of a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScriptTurn {
    /// The raw output, as a model prints it: parsed, and streamed a word at a time.
    Raw(String),
    Recorded(RecordedTurn),
}

/// A turn as a real model took it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedTurn {
    /// Whether the step really reasoned (`step_started`), where the step opened with this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
    /// The pieces the model streamed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream: Vec<Streamed>,
    /// What the loop read from it. Absent for a turn that failed, or was cut short (thinking past
    /// `max_thinking_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ModelReply>,
    /// How it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ModelError>,
}

/// One streamed piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Streamed {
    Reasoning(String),
    Text(String),
}

impl ReplayModel {
    pub fn load(script: &Path) -> Result<Self, SpecError> {
        Self::load_from(&Sources::disk(), script)
    }

    /// `load`, reading the script from `sources`.
    pub fn load_from(sources: &Sources, script: &Path) -> Result<Self, SpecError> {
        Ok(Self::new(script, yaml::read_from(sources, script)?))
    }

    /// Plays `script`, read from `path`.
    pub fn new(path: &Path, script: Script) -> Self {
        ReplayModel { path: path.to_path_buf(), script, next: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl Model for ReplayModel {
    fn label(&self) -> String {
        match &self.script.model {
            Some(recorded) => recorded.clone(),
            None => format!("replay ({})", self.path.display()),
        }
    }

    fn identity(&self) -> ModelIdentity {
        let script = self.path.file_name().unwrap_or(self.path.as_os_str());
        ModelIdentity { provider: "reagent.replay", model: script.to_string_lossy().into_owned(), server: None }
    }

    /// A recorded turn reasons as the recorded model did.
    fn thinks(&self, requested: bool, _tools_offered: bool) -> bool {
        match self.script.turns.get(self.next.load(Ordering::SeqCst)) {
            Some(ScriptTurn::Recorded(RecordedTurn { thinking: Some(thinking), .. })) => *thinking,
            _ => requested,
        }
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        // The next turn in this process, but never one the conversation has already had: a run
        // resumed in another process (after a pause for approval) goes on where it stopped.
        let answered = request.messages.iter().filter(|m| matches!(m, Message::Assistant { .. })).count();
        let turn = self.next.fetch_max(answered, Ordering::SeqCst).max(answered);
        self.next.fetch_max(turn + 1, Ordering::SeqCst);
        match self.script.turns.get(turn) {
            None => Err(ModelError::new(
                ModelErrorKind::ScriptExhausted,
                format!(
                    "the replay script {} has {} turn(s) but the agent asked for turn {}: add a turn to `turns:`",
                    self.path.display(),
                    self.script.turns.len(),
                    turn + 1
                ),
            )),
            Some(ScriptTurn::Raw(raw)) => Ok(parsed(raw, turn, &request)),
            Some(ScriptTurn::Recorded(recorded)) => {
                for piece in &recorded.stream {
                    match piece {
                        Streamed::Reasoning(text) => send_delta(&request.deltas, DeltaKind::Reasoning, text),
                        Streamed::Text(text) => send_delta(&request.deltas, DeltaKind::Text, text),
                    }
                }
                match (&recorded.reply, &recorded.error) {
                    (Some(reply), _) => Ok(reply.clone()),
                    (None, Some(error)) => Err(error.clone()),
                    // The loop cuts such a turn while it streams; a replay that does not has
                    // parted from the recording.
                    (None, None) => Err(ModelError::new(
                        ModelErrorKind::BadReply,
                        format!(
                            "turn {} of {} was cut short when it was recorded (thinking past \
                             max_thinking_tokens), and this run did not cut it",
                            turn + 1,
                            self.path.display()
                        ),
                    )),
                }
            }
        }
    }
}

/// A raw turn read as a model's output, streamed a word at a time as a real model streams tokens.
fn parsed(raw: &str, turn: usize, request: &ModelRequest<'_>) -> ModelReply {
    let parsed = parse_output(raw);
    for (kind, text) in [(DeltaKind::Reasoning, parsed.reasoning.as_deref()), (DeltaKind::Text, Some(&parsed.text))] {
        for word in text.unwrap_or_default().split_inclusive(char::is_whitespace) {
            send_delta(&request.deltas, kind, word);
        }
    }
    let calls = parsed
        .calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let id = format!("call_{}_{}", turn + 1, i + 1);
            match call {
                Ok(call) => Ok(ToolCall { id, name: call.name, arguments: call.arguments }),
                Err(bad) => Err(MalformedCall { id, raw: bad.raw, error: bad.error }),
            }
        })
        .collect();
    ModelReply { reasoning: parsed.reasoning, text: parsed.text, calls, usage: None, raw: Some(raw.to_string()) }
}
