//! `replay`: a scripted model. The script is a YAML file of the model's raw outputs, turn by turn,
//! exactly as a model would print them; each turn is parsed as a real model's output would be.
//! Agents get deterministic tests in CI with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde::Deserialize;

use super::{DeltaKind, Model, ModelError, ModelErrorKind, ModelIdentity, ModelReply, ModelRequest, send_delta};
use crate::chat_format::parse_output;
use crate::conversation::{MalformedCall, Message, ToolCall};
use crate::spec::{Sources, SpecError, yaml};

pub struct ReplayModel {
    script: PathBuf,
    turns: Vec<String>,
    next: AtomicUsize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    turns: Vec<String>,
}

impl ReplayModel {
    pub fn load(script: &Path) -> Result<Self, SpecError> {
        Self::load_from(&Sources::disk(), script)
    }

    /// `load`, reading the script from `sources`.
    pub fn load_from(sources: &Sources, script: &Path) -> Result<Self, SpecError> {
        let parsed: Script = yaml::read_from(sources, script)?;
        Ok(ReplayModel { script: script.to_path_buf(), turns: parsed.turns, next: AtomicUsize::new(0) })
    }
}

#[async_trait]
impl Model for ReplayModel {
    fn label(&self) -> String {
        format!("replay ({})", self.script.display())
    }

    fn identity(&self) -> ModelIdentity {
        let script = self.script.file_name().unwrap_or(self.script.as_os_str());
        ModelIdentity { provider: "reagent.replay", model: script.to_string_lossy().into_owned(), server: None }
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        // The next turn in this process, but never one the conversation has already had: a run
        // resumed in another process (after a pause for approval) goes on where it stopped.
        let answered = request.messages.iter().filter(|m| matches!(m, Message::Assistant { .. })).count();
        let turn = self.next.fetch_max(answered, Ordering::SeqCst).max(answered);
        self.next.fetch_max(turn + 1, Ordering::SeqCst);
        let Some(raw) = self.turns.get(turn) else {
            return Err(ModelError::new(
                ModelErrorKind::ScriptExhausted,
                format!(
                    "the replay script {} has {} turn(s) but the agent asked for turn {}: add a turn to `turns:`",
                    self.script.display(),
                    self.turns.len(),
                    turn + 1
                ),
            ));
        };
        let parsed = parse_output(raw);
        // Streamed a word at a time, as a real model streams tokens.
        for (kind, text) in [(DeltaKind::Reasoning, parsed.reasoning.as_deref()), (DeltaKind::Text, Some(&parsed.text))]
        {
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
        Ok(ModelReply { reasoning: parsed.reasoning, text: parsed.text, calls, usage: None, raw: Some(raw.clone()) })
    }
}
