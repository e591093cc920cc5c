//! A stored run made into a recording: what its model produced at each turn (the replies its
//! journal kept, the pieces its events streamed), its events, and the fingerprint of what its
//! model was shown. Read from the store, so that a run on the server is recorded as one on the
//! command line is.

use serde_json::Value;

use super::{Bound, Runs, RunsError};
use crate::launch::first_turn_from;
use crate::model::{ModelError, ModelErrorKind, ModelReply, RecordedTurn, Script, ScriptTurn, Streamed};
use crate::recording::{About, Fingerprint, Recording, secrets_of};
use crate::spec::{GivenInputs, Sources, bind_inputs};

/// How many events are read from the store at a time.
const PAGE: u32 = 1_000;

impl Runs {
    /// The recording of finished run `id`, secrets replaced.
    pub async fn record(&self, id: &str) -> Result<Recording, RunsError> {
        let refuse = |why: &str| RunsError::NotRecordable(id.to_string(), why.to_string());
        let run = self.store.get(id).await?.ok_or_else(|| RunsError::NoSuchRun(id.to_string()))?;
        if !run.status.is_final() {
            return Err(refuse(&format!("it is {}; record it once it has finished", run.status)));
        }
        let unreadable = |e: serde_json::Error| RunsError::Unreadable(run.id.clone(), e.to_string());
        let bound: Bound = serde_json::from_value(run.snapshot.clone()).map_err(unreadable)?;
        let given: GivenInputs = serde_json::from_value(run.inputs.clone()).map_err(unreadable)?;
        let sources = Sources::pinned(bound.snapshot);
        let agent_file = sources.read(&bound.file).map_err(|e| refuse(&format!("its agent file: {e}")))?;
        let (spec, config, tools) = first_turn_from(&self.runtime, &sources, &bound.file, &given).await?;
        if !spec.sub_agents.is_empty() {
            return Err(refuse("its agent has sub-agents, whose model turns a recording does not hold yet"));
        }
        let inputs = bind_inputs(&spec.inputs, &given).map_err(|e| refuse(&e))?;

        let mut events = Vec::new();
        loop {
            let page = self.store.events(id, events.len() as u64, PAGE).await?;
            let done = page.len() < PAGE as usize;
            events.extend(page.into_iter().map(|e| e.body));
            if done {
                break;
            }
        }
        if events.iter().any(|e| e["event"] == "run_resumed") {
            return Err(refuse("it waited for a person's decision, which a replay cannot make"));
        }
        let mut turns = opened_turns(&events);
        for (index, turn) in turns.iter_mut().enumerate() {
            let reply = self.store.reply(id, index as u32 + 1).await?;
            turn.reply = reply.map(serde_json::from_value::<ModelReply>).transpose().map_err(unreadable)?;
        }
        if let (Some(last), Some(finished)) = (turns.last_mut(), events.last())
            && last.reply.is_none()
            && finished["status"] == "model_failed"
        {
            let kind: ModelErrorKind =
                serde_json::from_value(finished["model_error"].clone()).unwrap_or(ModelErrorKind::BadReply);
            let message = finished["message"].as_str().unwrap_or_default();
            last.error = Some(ModelError::new(kind, message));
        }
        let model = events.first().and_then(|e| e["model"].as_str()).map(str::to_string);
        let script = Script { model, turns: turns.into_iter().map(ScriptTurn::Recorded).collect() };
        let about = About {
            agent: bound.file,
            task: run.task.clone(),
            inputs,
            run: run.id.clone(),
            recorded: httpdate::fmt_http_date(std::time::SystemTime::now()),
            fingerprint: Fingerprint::of(&agent_file, &config.instructions, &tools),
        };
        let mut recording = Recording { about, script, events };
        recording.redact(&secrets_of(&spec));
        Ok(recording)
    }
}

/// The run's model turns in the order they were asked, each with the pieces it streamed. A turn
/// opens a step (`step_started`, which says whether it reasoned), follows a draft answer
/// reconsidered, or follows thinking cut short; its deltas come next, before any other event.
fn opened_turns(events: &[Value]) -> Vec<RecordedTurn> {
    let mut turns: Vec<RecordedTurn> = Vec::new();
    let mut streaming = false;
    for event in events {
        match event["event"].as_str().unwrap_or_default() {
            "step_started" => {
                turns.push(RecordedTurn { thinking: event["thinking"].as_bool(), ..RecordedTurn::default() });
                streaming = true;
            }
            "reconsidering" | "thinking_cut" => {
                turns.push(RecordedTurn::default());
                streaming = true;
            }
            "delta" if streaming => {
                if let (Some(turn), Some(text)) = (turns.last_mut(), event["text"].as_str()) {
                    let piece = match event["kind"].as_str() {
                        Some("reasoning") => Streamed::Reasoning(text.to_string()),
                        _ => Streamed::Text(text.to_string()),
                    };
                    turn.stream.push(piece);
                }
            }
            _ => streaming = false,
        }
    }
    turns
}
