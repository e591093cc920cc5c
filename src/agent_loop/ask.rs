//! Asking the model: one turn, its deltas streamed into events as they come, thinking cut off
//! past `max_thinking_tokens`, and an unthought answer reconsidered (`before_answer`).

use tokio::sync::mpsc;

use super::budget::Spent;
use super::{Agent, Failure};
use crate::conversation::{Message, ToolChoice, ToolDeclaration};
use crate::events::{Event, EventSink};
use crate::model::{Delta, DeltaKind, ModelError, ModelErrorKind, ModelReply, ModelRequest, Usage};
use crate::spec::ReasoningMode;

impl Agent {
    /// One step's model turn. In `auto` with `before_answer`, an answer drafted without thinking is
    /// dropped and the step asked again with thinking on.
    pub(super) async fn turn(
        &self,
        step: u32,
        messages: &[Message],
        thinking: bool,
        tool_choice: ToolChoice,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<ModelReply, Failure> {
        let reply = self.ask(step, messages, thinking, &self.tools, tool_choice, spent, events).await?;
        let reconsider = self.config.reasoning.mode == ReasoningMode::Auto
            && self.config.reasoning.before_answer
            && !thinking
            && reply.calls.is_empty()
            && !reply.text.trim().is_empty();
        if !reconsider {
            return Ok(reply);
        }
        events.emit(&Event::Reconsidering { step, draft: reply.text.trim().to_string() });
        self.ask(step, messages, true, &self.tools, tool_choice, spent, events).await
    }

    /// One model turn, its deltas streamed into the events as they come. Thinking past
    /// `max_thinking_tokens` is cut off and the step asked again without thinking. With a
    /// journal, a turn it recorded is not asked again, and a new reply is recorded before the
    /// loop acts on it.
    #[allow(clippy::too_many_arguments)] // one step's whole context; a struct would only rename it
    pub(super) async fn ask(
        &self,
        step: u32,
        messages: &[Message],
        thinking: bool,
        tools: &[ToolDeclaration],
        tool_choice: ToolChoice,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<ModelReply, Failure> {
        spent.turns += 1;
        let turn = spent.turns;
        if let Some(journal) = &self.journal
            && let Some(reply) = journal.recorded_reply(turn).await?
        {
            return Ok(accepted(step, thinking, reply, spent, events));
        }
        let budget = self.config.reasoning.max_thinking_tokens.filter(|_| thinking);
        let (deltas, mut incoming) = mpsc::unbounded_channel();
        let answer_schema = self.config.output_schema.as_ref();
        let request = ModelRequest {
            messages,
            tools,
            thinking,
            tool_choice,
            max_thinking_tokens: budget,
            answer_schema,
            deltas: Some(deltas),
        };
        let chat = self.telemetry.chat(thinking, || serde_json::to_value(messages).unwrap_or_default());
        let mut thought = String::new();
        let mut thought_tokens = 0u32;
        let mut over_budget = |delta: Delta, events: &mut dyn EventSink| {
            if delta.kind == DeltaKind::Reasoning {
                thought_tokens = thought_tokens.saturating_add(1);
                thought.push_str(&delta.text);
            }
            events.emit(&Event::Delta { step, kind: delta.kind, text: delta.text });
            budget.is_some_and(|max| thought_tokens > max)
        };
        // Boxed by the trait, so dropping it below really cancels the request.
        let mut pending = self.model.complete(request);
        let mut cut = false;
        let mut finished = None;
        while finished.is_none() && !cut {
            tokio::select! {
                biased;
                Some(delta) = incoming.recv() => cut = over_budget(delta, events),
                result = &mut pending => finished = Some(result),
            }
        }
        while let (false, Ok(delta)) = (cut, incoming.try_recv()) {
            cut = over_budget(delta, events);
        }
        if !cut {
            let stopped = || Err(ModelError::new(ModelErrorKind::BadReply, "the model stopped without a reply"));
            let reply = finished.unwrap_or_else(stopped);
            chat.end(reply.as_ref());
            let reply = reply?;
            if let Some(journal) = &self.journal {
                journal.record_reply(turn, &reply).await?;
            }
            return Ok(accepted(step, thinking, reply, spent, events));
        }
        drop(pending); // stop generating before the step is asked again
        chat.cut();
        let thought_tokens = thought_tokens - 1;
        events.emit(&Event::ThinkingCut { step, tokens: thought_tokens, reasoning: thought });
        spent.add_usage(Usage {
            completion_tokens: thought_tokens,
            reasoning_tokens: thought_tokens,
            ..Usage::default()
        });
        Box::pin(self.ask(step, messages, false, tools, tool_choice, spent, events)).await
    }
}

/// A reply taken: its raw output and its cost reported, its tokens counted against the budget.
fn accepted(step: u32, thinking: bool, reply: ModelReply, spent: &mut Spent, events: &mut dyn EventSink) -> ModelReply {
    if let Some(raw) = reply.raw.clone().filter(|raw| !raw.is_empty()) {
        events.emit(&Event::ModelOutput { step, text: raw });
    }
    if let Some(usage) = reply.usage {
        spent.add_usage(usage);
        events.emit(&Event::Usage { step, thinking, usage });
    }
    reply
}
