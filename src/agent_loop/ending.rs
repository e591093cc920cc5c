//! Ending a run: an answer (checked against `output.schema`, with one repair turn), a spent
//! budget (one wrap-up turn without tools), a pause for approval, a loop, a failed model. Every
//! ending is reported by one `run_finished`, built in one place.

use serde_json::Value;
use tokio::time::timeout_at;

use super::budget::{Spent, deadline_after};
use super::state::{Checkpoint, Pending, Progress, SavedSpend};
use super::{Agent, Failure, RunOutcome, Stop, WRAP_UP_TIME, output};
use crate::conversation::{Message, ToolChoice};
use crate::events::{Event, EventSink, RunStatus};
use crate::model::ModelError;
use crate::spec::{Budget, ReasoningMode};

/// How a run ended, for its `run_finished` event.
pub(super) enum Ending<'a> {
    Answered,
    /// A budget ran out; the message says whether the wrap-up turn answered.
    Incomplete(Budget, String),
    ModelFailed(&'a ModelError),
    /// Stopped for repeating a call; the message says which.
    Looped(String),
    InvalidOutput(String),
    Paused,
    InDoubt,
    Cancelled,
}

/// Emits the run's last event: the only place a `run_finished` is built.
pub(super) fn emit_finished(events: &mut dyn EventSink, step: u32, spent: &Spent, ending: Ending<'_>) {
    let (status, budget, message, model_error) = match ending {
        Ending::Answered => (RunStatus::Answered, None, None, None),
        Ending::Incomplete(budget, message) => (RunStatus::Incomplete, Some(budget), Some(message), None),
        Ending::ModelFailed(error) => (RunStatus::ModelFailed, None, Some(error.message.clone()), Some(error.kind)),
        Ending::Looped(message) => (RunStatus::Loop, None, Some(message), None),
        Ending::InvalidOutput(message) => (RunStatus::InvalidOutput, None, Some(message), None),
        Ending::Paused => {
            let message = "waiting for a person to approve or deny the calls above".to_string();
            (RunStatus::Paused, None, Some(message), None)
        }
        Ending::InDoubt => {
            let message = "a call with side effects may or may not have happened before the run stopped: a person \
                           must say whether to retry it, take it as done, or skip it"
                .to_string();
            (RunStatus::InDoubt, None, Some(message), None)
        }
        Ending::Cancelled => (RunStatus::Cancelled, None, Some("cancelled".to_string()), None),
    };
    events.emit(&Event::RunFinished { status, budget, steps: step, message, model_error, usage: spent.usage });
}

/// The model failed: the run ends, reporting why.
pub(super) fn model_failed(step: u32, error: ModelError, spent: &Spent, events: &mut dyn EventSink) -> ModelError {
    emit_finished(events, step, spent, Ending::ModelFailed(&error));
    error
}

fn answered(step: u32, answer: String, output: Option<Value>, spent: &Spent, events: &mut dyn EventSink) -> RunOutcome {
    events.emit(&Event::Answer { step, text: answer.clone(), output: output.clone() });
    emit_finished(events, step, spent, Ending::Answered);
    RunOutcome::Answered { answer, output, steps: step }
}

impl Agent {
    /// A stop was asked for at a turn boundary: a cancelled run ends; one stopped by a shutdown
    /// ends nothing, and goes on from its last checkpoint.
    pub(super) fn stopped(&self, stop: Stop, spent: &Spent, events: &mut dyn EventSink) -> RunOutcome {
        if stop == Stop::Cancelled {
            emit_finished(events, spent.steps, spent, Ending::Cancelled);
        }
        RunOutcome::Stopped { stop, steps: spent.steps }
    }

    /// Stops the run until a person decides on the awaited calls and those in doubt; the
    /// checkpoint is all `resume` needs.
    pub(super) fn pause(
        &self,
        task: &str,
        progress: Progress,
        pending: Vec<Pending>,
        spent: &Spent,
        events: &mut dyn EventSink,
    ) -> RunOutcome {
        let step = spent.steps;
        for entry in pending.iter().filter(|p| p.awaiting || p.in_doubt) {
            if let Ok(call) = &entry.call {
                let (id, tool, arguments) = (call.id.clone(), call.name.clone(), call.arguments.clone());
                match entry.in_doubt {
                    true => events.emit(&Event::InDoubt { step, id, tool, arguments }),
                    false => events.emit(&Event::ApprovalRequired { step, id, tool, arguments }),
                }
            }
        }
        let ending = if pending.iter().any(|p| p.in_doubt) { Ending::InDoubt } else { Ending::Paused };
        emit_finished(events, step, spent, ending);
        RunOutcome::Paused(Box::new(Checkpoint {
            task: task.to_string(),
            progress,
            pending,
            spent: SavedSpend::of(spent),
        }))
    }

    /// The model answered. With `output.schema`, an answer that does not match gets one repair
    /// turn, without tools, that quotes the validator's errors.
    pub(super) async fn finish(
        &self,
        step: u32,
        answer: String,
        messages: &mut Vec<Message>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        let Some(check) = &self.output else {
            return Ok(answered(step, answer, None, spent, events));
        };
        let errors = match check.check(&answer) {
            Ok(output) => return Ok(answered(step, answer, Some(output), spent, events)),
            Err(errors) => errors,
        };
        events.emit(&Event::OutputInvalid { step, answer: answer.clone(), errors: errors.clone() });
        messages.push(Message::Assistant { content: answer, tool_calls: Vec::new() });
        messages.push(Message::User { content: output::repair_request(&errors) });
        spent.steps += 1;
        let step = spent.steps;
        events.emit(&Event::StepStarted { step, thinking: false });
        let deadline = spent.deadline;
        let turn = self.ask(step, messages, false, &[], ToolChoice::Auto, spent, events);
        let repaired = match timeout_at(deadline, turn).await {
            Ok(Ok(reply)) => reply.text.trim().to_string(),
            Ok(Err(Failure::Model(error))) => return Err(model_failed(step, error, spent, events).into()),
            Ok(Err(failure)) => return Err(failure),
            Err(_) => String::new(),
        };
        let errors = match check.check(&repaired) {
            Ok(output) => return Ok(answered(step, repaired, Some(output), spent, events)),
            Err(errors) => errors,
        };
        events.emit(&Event::OutputInvalid { step, answer: repaired.clone(), errors: errors.clone() });
        let message = format!("the answer does not match output.schema after one repair: {}", errors.join("; "));
        emit_finished(events, step, spent, Ending::InvalidOutput(message));
        Ok(RunOutcome::InvalidOutput { answer: repaired, errors, steps: step })
    }

    /// A budget ran out: one more turn, without tools, asks for the best answer from what is known.
    /// The run ends incomplete either way, with or without that answer.
    pub(super) async fn wrap_up(
        &self,
        budget: Budget,
        messages: &mut Vec<Message>,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<RunOutcome, Failure> {
        let step = spent.steps + 1;
        let described = budget.describe(&spent.limits);
        events.emit(&Event::BudgetSpent { step, budget, message: format!("{described} is spent") });
        let thinking = self.config.reasoning.mode == ReasoningMode::On;
        events.emit(&Event::StepStarted { step, thinking: self.model.thinks(thinking, false) });
        messages.push(Message::User {
            content: format!(
                "You have run out of budget ({described}) and can no longer use tools. Answer the task now, as well \
                 as you can from what you already know, and say what is still missing."
            ),
        });
        let turn = self.ask(step, messages, thinking, &[], ToolChoice::Auto, spent, events);
        let answer = match timeout_at(deadline_after(WRAP_UP_TIME), turn).await {
            Ok(Ok(reply)) => Some(reply.text.trim().to_string()).filter(|text| !text.is_empty()),
            Ok(Err(Failure::Journal(error))) => return Err(error.into()),
            Ok(Err(Failure::Model(_))) | Err(_) => None,
        };
        let outcome = match &answer {
            Some(text) => {
                events.emit(&Event::Answer { step, text: text.clone(), output: None });
                "its answer is the best from what it knew"
            }
            None => "and gave no answer",
        };
        emit_finished(events, step, spent, Ending::Incomplete(budget, format!("ran out of {described}; {outcome}")));
        Ok(RunOutcome::Incomplete { budget, answer, steps: step })
    }
}
