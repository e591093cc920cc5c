//! Checking and running a turn's calls: the budget of calls, the repeat guard and approvals
//! decide which may run; those run concurrently (sub-agents included) and their results are fed
//! back in the order the model wrote them.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use opentelemetry::context::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use super::budget::Spent;
use super::ending::{Ending, emit_finished};
use super::repeats::Verdict;
use super::state::{Pending, Progress};
use super::telemetry::ToolCallTrace;
use super::{
    Agent, CallRecord, DENIED, Decision, JournalError, MAX_FED_BACK, MAX_PARALLEL_CALLS, MAX_QUOTED, RunOutcome, Turn,
    clipped, sub_agents,
};

/// A call's id, its tool (none for an unreadable call), its outcome, and a sub-agent's spending
/// and events.
type Ran = (String, Option<String>, ToolOutcome, Option<(Spent, Vec<Event>)>);
use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice};
use crate::events::{Event, EventSink};
use crate::spec::Budget;
use crate::toolbox::{CallContext, ToolError, ToolErrorKind, ToolOutcome, ToolProgress};

impl Agent {
    /// Decides on each call of a turn: refused (past the call budget, repeated), waiting for a
    /// person, or to be run. A fourth identical call stops the run as a loop.
    pub(super) async fn check_calls(
        &self,
        step: u32,
        calls: Vec<Result<ToolCall, MalformedCall>>,
        progress: &mut Progress,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Turn {
        let calls_left = spent.calls_left() as usize;
        spent.tool_calls = spent.tool_calls.saturating_add(u32::try_from(calls.len()).unwrap_or(u32::MAX));
        let mut pending = Vec::with_capacity(calls.len());
        for (index, call) in calls.into_iter().enumerate() {
            let Ok(readable) = &call else {
                pending.push(Pending { call, refusal: None, awaiting: false, in_doubt: false });
                continue;
            };
            let refusal = if index >= calls_left {
                let message = format!("not run: {} is spent", Budget::MaxToolCalls.describe(&spent.limits));
                Some(ToolError::new(ToolErrorKind::Budget, message))
            } else {
                match progress.repeats.check(readable) {
                    Verdict::Run => None,
                    Verdict::Refuse(message) => Some(ToolError::new(ToolErrorKind::RepeatedCall, message)),
                    Verdict::Stop => {
                        let message = format!("stopped: `{}` was called again with the same arguments", readable.name);
                        emit_finished(events, step, spent, Ending::Looped(message));
                        return Turn::Done(RunOutcome::Looped { steps: step, tool: readable.name.clone() });
                    }
                }
            };
            let (id, tool, arguments) = (readable.id.clone(), readable.name.clone(), readable.arguments.clone());
            events.emit(&Event::ToolCall { step, id, tool, arguments });
            pending.push(Pending { call, refusal, awaiting: false, in_doubt: false });
        }
        for entry in &mut pending {
            let Ok(call) = &entry.call else { continue };
            if entry.refusal.is_some() || !self.toolbox.needs_approval(&call.name) {
                continue;
            }
            let decision = match &self.approver {
                Some(approver) => approver.decide(step, call).await,
                None => Decision::Pause,
            };
            match decision {
                Decision::Approve => {}
                Decision::Deny => entry.refusal = Some(ToolError::new(ToolErrorKind::Denied, DENIED)),
                Decision::Pause => entry.awaiting = true,
            }
        }
        if pending.iter().any(|p| p.awaiting) { Turn::Pause(pending) } else { Turn::Calls(pending) }
    }

    /// Runs a turn's calls and feeds the results back. The calls run concurrently (at most
    /// MAX_PARALLEL_CALLS at once); their results are fed back in the order the model wrote them.
    /// Sub-agents called in one turn each get budgets carved from what the run had left when the
    /// turn began.
    pub(super) async fn run_calls(
        &self,
        pending: Vec<Pending>,
        progress: &mut Progress,
        spent: &mut Spent,
        events: &mut dyn EventSink,
    ) -> Result<(), JournalError> {
        let step = spent.steps;
        let before = &*spent;
        // A turn's only call has its result committed with the checkpoint that follows it.
        let alone = pending.iter().filter(|p| p.call.is_ok() && p.refusal.is_none()).count() == 1;
        let (reports, mut reported) = mpsc::unbounded_channel();
        let reports = &reports;
        let running = stream::iter(pending)
            .map(|Pending { call, refusal, .. }| async move {
                match call {
                    Ok(call) => {
                        let trace = self.telemetry.tool(self.traced(&call, refusal.as_ref()));
                        let refused = refusal.is_some();
                        let (outcome, child) = match refusal {
                            Some(error) => (failed(error), None),
                            None => {
                                self.journalled(&call, before, alone, reports).with_context(trace.context()).await?
                            }
                        };
                        trace.end(&outcome, !refused && child.is_none());
                        Ok((call.id, Some(call.name), outcome, child))
                    }
                    Err(bad) => {
                        let message = format!("{} (you wrote: {})", bad.error, clipped(&bad.raw, MAX_QUOTED));
                        Ok((bad.id, None, failed(ToolError::new(ToolErrorKind::MalformedCall, message)), None))
                    }
                }
            })
            .buffered(MAX_PARALLEL_CALLS)
            .collect::<Vec<Result<Ran, JournalError>>>();
        // Progress reports become events while the calls run.
        let outcomes = {
            tokio::pin!(running);
            loop {
                tokio::select! {
                    outcomes = &mut running => break outcomes,
                    Some(report) = reported.recv() => events.emit(&progress_event(step, report)),
                }
            }
        };
        while let Ok(report) = reported.try_recv() {
            events.emit(&progress_event(step, report));
        }
        for ran in outcomes {
            let (id, tool, outcome, child) = ran?;
            if let Some((child, inner)) = child {
                spent.absorb(&child);
                for event in &inner {
                    events.emit(event);
                }
            }
            progress.recovering |= outcome.result.is_err();
            if outcome.result.is_ok() {
                progress.tool_choice = ToolChoice::Auto;
            }
            progress.messages.push(Message::Tool { call_id: id.clone(), content: fed_back(&outcome.result) });
            events.emit(&result_event(step, id, tool, outcome));
        }
        Ok(())
    }

    /// A call as its span names it.
    fn traced<'a>(&self, call: &'a ToolCall, refusal: Option<&ToolError>) -> ToolCallTrace<'a> {
        let sub_agent = self.sub_agents.contains_key(&call.name);
        let approval = match refusal {
            _ if sub_agent || !self.toolbox.needs_approval(&call.name) => None,
            None => Some("approved"),
            Some(error) if error.kind == ToolErrorKind::Denied => Some("denied"),
            Some(_) => None,
        };
        ToolCallTrace {
            tool: &call.name,
            id: &call.id,
            kind: if sub_agent { "function" } else { self.toolbox.tool_type(&call.name) },
            effect: self.effect(&call.name),
            approval,
            arguments: &call.arguments,
        }
    }

    /// Runs a call under the run's deadline, with a journal recording it as started before it runs
    /// (unless its checkpoint did) and its outcome after (`alone`: with the next checkpoint); a
    /// call the journal saw finish is not run again.
    async fn journalled(
        &self,
        call: &ToolCall,
        parent: &Spent,
        alone: bool,
        reports: &mpsc::UnboundedSender<ToolProgress>,
    ) -> Result<(ToolOutcome, Option<(Spent, Vec<Event>)>), JournalError> {
        if let Some(journal) = &self.journal {
            match journal.call(&call.id).await? {
                CallRecord::Finished(outcome) => return Ok((outcome, None)),
                CallRecord::Started => {}
                CallRecord::NotStarted | CallRecord::Unfinished => {
                    journal.call_started(call, self.effect(&call.name)).await?
                }
            }
        }
        let running = timeout_at(parent.deadline, self.execute(call, parent, reports));
        let (outcome, child) = running.await.unwrap_or_else(|_| {
            let limit = Budget::Timeout.describe(&parent.limits);
            let message = format!("{limit} ran out before this call finished");
            (failed(ToolError::new(ToolErrorKind::Timeout, message)), None)
        });
        if let Some(journal) = &self.journal {
            journal.call_finished(&call.id, &outcome, alone).await?;
        }
        Ok((outcome, child))
    }

    /// Checks a call against the declared tools and their schemas, then runs it: on the toolbox,
    /// or as a sub-agent's run with budgets carved from `parent`'s, whose spending and events
    /// (marked with its name) it returns.
    async fn execute(
        &self,
        call: &ToolCall,
        parent: &Spent,
        reports: &mpsc::UnboundedSender<ToolProgress>,
    ) -> (ToolOutcome, Option<(Spent, Vec<Event>)>) {
        let failed = |error| (failed(error), None);
        let Some(validator) = self.validators.get(&call.name) else {
            let known: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
            return failed(ToolError::new(
                ToolErrorKind::UnknownTool,
                format!("there is no tool `{}`; the tools are: {}", call.name, known.join(", ")),
            ));
        };
        if let Err(error) = check_arguments(&call.name, validator, &call.arguments) {
            return failed(error);
        }
        let Some(sub_agent) = self.sub_agents.get(&call.name) else {
            let context = CallContext::reporting(parent.key_of(&call.id), &call.id, reports.clone())
                .traced(opentelemetry::Context::current());
            return (self.toolbox.call(&call.name, &call.arguments, &context).await, None);
        };
        let task = call.arguments["task"].as_str().unwrap_or_default();
        let mut spent = Spent::start(parent.carve(&sub_agent.config.limits), parent.key_of(&call.id));
        let started = std::time::Instant::now();
        let (mut steps, mut inner) = (Vec::new(), Vec::new());
        let mut record = |event: &Event| {
            if let Event::ToolCall { tool, .. } = event {
                steps.push(tool.clone());
            }
            inner.push(sub_agents::marked(&call.name, event));
        };
        // Boxed: a sub-agent's run is the same async function as its parent's.
        let outcome = Box::pin(sub_agent.run_within(task, &mut spent, &mut record)).await;
        let outcome = super::settle(outcome, &spent);
        let log = format!("sub-agent `{}`: {} step(s), calls: {}", call.name, spent.steps, steps.join(", "));
        let outcome = ToolOutcome { result: sub_agents::result(outcome), log, duration: started.elapsed() };
        (outcome, Some((spent, inner)))
    }
}

/// Checks a call's arguments against its tool's compiled schema, as the loop does before any call
/// runs: the error says where each problem is, quoting at most a clipped part of a value.
pub fn check_arguments(tool: &str, validator: &jsonschema::Validator, arguments: &Value) -> Result<(), ToolError> {
    let problems: Vec<String> = validator
        .iter_errors(arguments)
        .map(|e| match e.instance_path().to_string() {
            path if path.is_empty() => clipped(&e.to_string(), MAX_QUOTED),
            path => format!("{path}: {}", clipped(&e.to_string(), MAX_QUOTED)),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let message = format!("invalid arguments for `{tool}`: {}", problems.join("; "));
    Err(ToolError::new(ToolErrorKind::InvalidArguments, message))
}

fn progress_event(step: u32, report: ToolProgress) -> Event {
    let ToolProgress { call_id, progress, total, message } = report;
    Event::ToolProgress { step, id: call_id, progress, total, message }
}

fn failed(error: ToolError) -> ToolOutcome {
    ToolOutcome { result: Err(error), log: String::new(), duration: Duration::ZERO }
}

/// What the model reads in place of a result when a call failed.
fn fed_back(result: &Result<Value, ToolError>) -> Value {
    match result {
        Ok(value) => value.clone(),
        Err(error) => Value::String(clipped(&format!("error ({}): {}", error.kind, error.message), MAX_FED_BACK)),
    }
}

fn result_event(step: u32, id: String, tool: Option<String>, outcome: ToolOutcome) -> Event {
    let duration_ms = outcome.duration.as_secs_f64() * 1000.0;
    let (ok, result, error) = match outcome.result {
        Ok(value) => (true, Some(value), None),
        Err(error) => (false, None, Some(error)),
    };
    Event::ToolResult { step, id, tool, ok, result, error, log: outcome.log, duration_ms }
}
