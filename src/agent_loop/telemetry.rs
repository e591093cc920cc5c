//! What a run tells an operator's tracing system, in the terms of OpenTelemetry's GenAI
//! conventions: an `invoke_agent` span per run (a sub-agent's under the call that ran it), a
//! `chat` span per model turn, an `execute_tool` span per call, and the matching metrics. The loop
//! speaks only the OpenTelemetry API: without a provider (`Instrumentation::off`) every span and
//! measurement is a no-op; `telemetry` installs the SDK once per process.
//!
//! Contents (messages, arguments, results) are recorded only when asked for; secrets never reach
//! the loop, so they cannot reach a span.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::trace::{Link, Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde_json::Value;

use crate::events::{Event, EventSink, RunStatus};
use crate::model::{ModelError, ModelIdentity, ModelReply};
use crate::toolbox::{Effect, ToolErrorKind, ToolOutcome};

/// The instrumentation scope every span and instrument is reported under.
pub const SCOPE: &str = "reagent";

/// Where a process's runs report spans and measurements. Cheap to clone.
#[derive(Clone)]
pub struct Instrumentation(Arc<Instruments>);

struct Instruments {
    tracer: BoxedTracer,
    /// Whether message and argument contents go on spans (off unless switched on).
    contents: bool,
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
    tool_duration: Histogram<f64>,
    agent_duration: Histogram<f64>,
    sandbox_denials: Counter<u64>,
    approvals_waiting: UpDownCounter<i64>,
    runs: Counter<u64>,
    steps: Counter<u64>,
}

impl Default for Instrumentation {
    fn default() -> Self {
        Self::off()
    }
}

impl Instrumentation {
    /// Spans from `tracer`, measurements on `meter`; `contents`: record messages, arguments and
    /// results too.
    pub fn new(tracer: BoxedTracer, meter: &Meter, contents: bool) -> Self {
        // Seconds, with the conventions' advised buckets for operation durations.
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(vec![
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
                ])
                .build()
        };
        Instrumentation(Arc::new(Instruments {
            tracer,
            contents,
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens used by model turns, by type (input, output).")
                .with_boundaries(vec![
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                ])
                .build(),
            operation_duration: seconds("gen_ai.client.operation.duration", "Duration of model turns."),
            tool_duration: seconds("gen_ai.execute_tool.duration", "Duration of tool calls."),
            agent_duration: seconds(
                "gen_ai.invoke_agent.duration",
                "Duration of agent runs (each part of a resumed run).",
            ),
            sandbox_denials: meter
                .u64_counter("reagent.sandbox.denials")
                .with_description("Tool calls the sandbox stopped, by kind (denied, timeout, memory, write_limit, …).")
                .build(),
            approvals_waiting: meter
                .i64_up_down_counter("reagent.approvals.waiting")
                .with_description(
                    "Calls waiting for a person's approval (asked in this process, not yet decided in it).",
                )
                .build(),
            runs: meter
                .u64_counter("reagent.runs")
                .with_description("Runs (or parts of runs) that ended, by status.")
                .build(),
            steps: meter.u64_counter("reagent.steps").with_description("Model steps taken.").build(),
        }))
    }

    /// No spans, no measurements.
    pub fn off() -> Self {
        static OFF: LazyLock<Instrumentation> = LazyLock::new(|| {
            let tracer = BoxedTracer::new(Box::new(opentelemetry::trace::noop::NoopTracer::new()));
            let meter = opentelemetry::metrics::NoopMeterProvider::new().meter(SCOPE);
            Instrumentation::new(tracer, &meter, false)
        });
        OFF.clone()
    }

    /// What `agent`'s spans and measurements share, worked out once rather than per span; `tools`:
    /// the names its calls are expected to carry.
    pub(super) fn agent<'a>(
        &self,
        agent: &str,
        model: &ModelIdentity,
        tools: impl IntoIterator<Item = &'a str>,
    ) -> AgentTelemetry {
        if Arc::ptr_eq(&self.0, &Self::off().0) {
            return AgentTelemetry::off();
        }
        AgentTelemetry(Arc::new(AgentShared::new(self.clone(), agent, model, tools)))
    }
}

fn operation(name: &'static str) -> KeyValue {
    KeyValue::new("gen_ai.operation.name", name)
}

/// What one agent's spans and measurements share. Attribute values are reference-counted, so a
/// span or a measurement takes them without copying: a run spends its time here at every step.
#[derive(Clone)]
pub(super) struct AgentTelemetry(Arc<AgentShared>);

struct AgentShared {
    instruments: Instrumentation,
    run_name: String,
    run_attributes: [KeyValue; 4],
    run_metric: [KeyValue; 2],
    chat_name: String,
    chat_attributes: Vec<KeyValue>,
    chat_metric: [KeyValue; 3],
    tools: HashMap<String, ToolShared>,
}

impl AgentShared {
    fn new<'a>(
        instruments: Instrumentation,
        agent: &str,
        model: &ModelIdentity,
        tools: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let name = KeyValue::new("gen_ai.agent.name", Arc::<str>::from(agent));
        let provider = KeyValue::new("gen_ai.provider.name", model.provider);
        let request_model = KeyValue::new("gen_ai.request.model", Arc::<str>::from(model.model.as_str()));
        let mut chat_attributes = vec![operation("chat"), provider.clone(), request_model.clone()];
        if let Some((address, port)) = &model.server {
            chat_attributes.push(KeyValue::new("server.address", Arc::<str>::from(address.as_str())));
            chat_attributes.push(KeyValue::new("server.port", i64::from(*port)));
        }
        AgentShared {
            instruments,
            run_name: format!("invoke_agent {agent}"),
            run_attributes: [operation("invoke_agent"), name.clone(), provider.clone(), request_model.clone()],
            run_metric: [operation("invoke_agent"), name],
            chat_name: format!("chat {}", model.model),
            chat_attributes,
            chat_metric: [operation("chat"), provider, request_model],
            tools: tools.into_iter().map(|tool| (tool.to_string(), ToolShared::new(tool))).collect(),
        }
    }
}

/// A tool's span name and the attributes its calls' measurements carry.
#[derive(Clone)]
struct ToolShared {
    span_name: String,
    name: KeyValue,
    metric: [KeyValue; 2],
}

impl ToolShared {
    fn new(tool: &str) -> Self {
        let name = KeyValue::new("gen_ai.tool.name", Arc::<str>::from(tool));
        ToolShared {
            span_name: format!("execute_tool {tool}"),
            metric: [operation("execute_tool"), name.clone()],
            name,
        }
    }
}

impl AgentTelemetry {
    /// No spans, no measurements, nothing worked out: an agent's until it is given the process's.
    pub(super) fn off() -> Self {
        static OFF: LazyLock<AgentTelemetry> = LazyLock::new(|| {
            let nobody = ModelIdentity { provider: "", model: String::new(), server: None };
            AgentTelemetry(Arc::new(AgentShared::new(Instrumentation::off(), "", &nobody, [])))
        });
        OFF.clone()
    }

    /// Starts a run's `invoke_agent` span under the current context (a caller's, or the call that
    /// runs a sub-agent), linked to `origin`, the span a resumed run first ran under.
    pub(super) fn run(&self, conversation: &str, origin: Option<SpanContext>) -> RunTrace {
        let shared = &self.0;
        let mut attributes = Vec::with_capacity(shared.run_attributes.len() + 1);
        attributes.extend_from_slice(&shared.run_attributes);
        attributes.push(KeyValue::new("gen_ai.conversation.id", conversation.to_string()));
        let links = origin.map(Link::with_context).into_iter().collect();
        let tracer = &shared.instruments.0.tracer;
        let span = tracer
            .span_builder(shared.run_name.clone())
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(tracer, &Context::current());
        RunTrace { agent: self.clone(), context: Context::current_with_span(span), started: Instant::now() }
    }

    /// Starts a model turn's `chat` span under the current context.
    pub(super) fn chat(&self, thinking: bool, messages: impl FnOnce() -> Value) -> ChatTrace {
        let shared = &self.0;
        let mut attributes = Vec::with_capacity(shared.chat_attributes.len() + 2);
        attributes.extend_from_slice(&shared.chat_attributes);
        attributes.push(KeyValue::new("reagent.thinking", thinking));
        if shared.instruments.0.contents {
            attributes.push(KeyValue::new("gen_ai.input.messages", messages().to_string()));
        }
        let tracer = &shared.instruments.0.tracer;
        let span = tracer
            .span_builder(shared.chat_name.clone())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &Context::current());
        ChatTrace { agent: self.clone(), span, started: Instant::now() }
    }

    /// Starts a call's `execute_tool` span under the current context.
    pub(super) fn tool(&self, call: ToolCallTrace<'_>) -> ToolTrace {
        let shared = &self.0;
        let tool = match shared.tools.get(call.tool) {
            Some(known) => known.clone(),
            None => ToolShared::new(call.tool),
        };
        let mut attributes = vec![
            operation("execute_tool"),
            tool.name,
            KeyValue::new("gen_ai.tool.call.id", call.id.to_string()),
            KeyValue::new("gen_ai.tool.type", call.kind),
            KeyValue::new("reagent.tool.effect", call.effect.as_str()),
        ];
        if let Some(approval) = call.approval {
            attributes.push(KeyValue::new("reagent.approval", approval));
        }
        if shared.instruments.0.contents {
            attributes.push(KeyValue::new("gen_ai.tool.call.arguments", call.arguments.to_string()));
        }
        let tracer = &shared.instruments.0.tracer;
        let span = tracer
            .span_builder(tool.span_name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(tracer, &Context::current());
        ToolTrace {
            instruments: shared.instruments.clone(),
            context: Context::current_with_span(span),
            started: Instant::now(),
            metric: tool.metric,
        }
    }
}

/// A call as its span names it.
pub(super) struct ToolCallTrace<'a> {
    pub(super) tool: &'a str,
    pub(super) id: &'a str,
    /// `function` (a component, a sub-agent) or `extension` (an MCP server's).
    pub(super) kind: &'static str,
    pub(super) effect: Effect,
    /// `approved` or `denied` where the call needed a person's word.
    pub(super) approval: Option<&'static str>,
    pub(super) arguments: &'a Value,
}

/// A run's span, fed by the run's own events (budget ends, approvals, the outcome) as they pass
/// on to the sink it wraps.
pub(super) struct RunTrace {
    agent: AgentTelemetry,
    context: Context,
    started: Instant,
}

impl RunTrace {
    /// The context the run's turns and calls run under.
    pub(super) fn context(&self) -> Context {
        self.context.clone()
    }

    /// The events of the run, seen on their way to `sink`.
    pub(super) fn watching<'a>(&'a self, sink: &'a mut dyn EventSink) -> Watching<'a> {
        Watching { trace: self, sink }
    }

    fn observe(&self, event: &Event) {
        let span = self.context.span();
        let metric = &self.agent.0.run_metric;
        let instruments = &self.agent.0.instruments.0;
        match event {
            Event::StepStarted { .. } => instruments.steps.add(1, metric),
            Event::BudgetSpent { budget, step, .. } => span.add_event(
                "reagent.budget_spent",
                vec![KeyValue::new("reagent.budget", budget.key()), KeyValue::new("reagent.step", i64::from(*step))],
            ),
            Event::ApprovalRequired { id, tool, .. } => {
                instruments.approvals_waiting.add(1, metric);
                span.add_event("reagent.approval_required", call_attributes(id, tool));
            }
            Event::InDoubt { id, tool, .. } => span.add_event("reagent.in_doubt", call_attributes(id, tool)),
            Event::RunResumed { approved, denied, retried, done, skipped, .. } => {
                let decided = approved.len() + denied.len();
                instruments.approvals_waiting.add(-i64::try_from(decided).unwrap_or(i64::MAX), metric);
                let ids = |name: &'static str, ids: &[String]| KeyValue::new(name, ids.join(","));
                span.add_event(
                    "reagent.run_resumed",
                    vec![
                        ids("reagent.approved", approved),
                        ids("reagent.denied", denied),
                        ids("reagent.retried", retried),
                        ids("reagent.done", done),
                        ids("reagent.skipped", skipped),
                    ],
                );
            }
            Event::RunFinished { status, model_error, usage, .. } => {
                span.set_attribute(KeyValue::new("reagent.run.status", status.as_str()));
                if let Some(usage) = usage {
                    span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", i64::from(usage.prompt_tokens)));
                    span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", i64::from(usage.completion_tokens)));
                }
                let error = match (status, model_error) {
                    (RunStatus::ModelFailed, Some(kind)) => Some(kind.as_str()),
                    (RunStatus::ModelFailed | RunStatus::Loop | RunStatus::InvalidOutput, _) => Some(status.as_str()),
                    _ => None,
                };
                if let Some(error) = error {
                    span.set_attribute(KeyValue::new("error.type", error));
                    span.set_status(Status::error(status.as_str()));
                }
                let [operation, agent] = metric.clone();
                instruments.runs.add(1, &[operation, agent, KeyValue::new("reagent.run.status", status.as_str())]);
            }
            _ => {}
        }
    }

    /// Ends the span, and measures the run.
    pub(super) fn end(self) {
        let shared = &self.agent.0;
        shared.instruments.0.agent_duration.record(self.started.elapsed().as_secs_f64(), &shared.run_metric);
        self.context.span().end();
    }
}

fn call_attributes(id: &str, tool: &str) -> Vec<KeyValue> {
    vec![KeyValue::new("gen_ai.tool.call.id", id.to_string()), KeyValue::new("gen_ai.tool.name", tool.to_string())]
}

/// A run's event sink, watched by its span.
pub(super) struct Watching<'a> {
    trace: &'a RunTrace,
    sink: &'a mut dyn EventSink,
}

impl EventSink for Watching<'_> {
    fn emit(&mut self, event: &Event) {
        self.trace.observe(event);
        self.sink.emit(event);
    }
}

/// A model turn's span.
pub(super) struct ChatTrace {
    agent: AgentTelemetry,
    span: BoxedSpan,
    started: Instant,
}

impl ChatTrace {
    /// Ends the span with the turn's reply (usage, finish reason) or its failure, and measures it.
    pub(super) fn end(mut self, reply: Result<&ModelReply, &ModelError>) {
        let shared = &self.agent.0;
        let instruments = &shared.instruments.0;
        let metric = &shared.chat_metric;
        let elapsed = self.started.elapsed().as_secs_f64();
        match reply {
            Ok(reply) => {
                let finish = if reply.calls.is_empty() { "stop" } else { "tool_calls" };
                self.span.set_attribute(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(finish)].into()),
                ));
                if let Some(usage) = reply.usage {
                    let input = i64::from(usage.prompt_tokens);
                    let output = i64::from(usage.completion_tokens);
                    self.span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", input));
                    self.span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", output));
                    for (kind, count) in [("input", usage.prompt_tokens), ("output", usage.completion_tokens)] {
                        let [operation, provider, model] = metric.clone();
                        let attributes = [operation, provider, model, KeyValue::new("gen_ai.token.type", kind)];
                        instruments.token_usage.record(u64::from(count), &attributes);
                    }
                }
                if instruments.contents {
                    let output =
                        serde_json::json!({"reasoning": reply.reasoning, "text": reply.text, "raw": reply.raw});
                    self.span.set_attribute(KeyValue::new("gen_ai.output.messages", output.to_string()));
                }
                instruments.operation_duration.record(elapsed, metric);
            }
            Err(error) => {
                let kind = error.kind.as_str();
                self.span.set_attribute(KeyValue::new("error.type", kind));
                self.span.set_status(Status::error(kind));
                let [operation, provider, model] = metric.clone();
                let attributes = [operation, provider, model, KeyValue::new("error.type", kind)];
                instruments.operation_duration.record(elapsed, &attributes);
            }
        }
        self.span.end();
    }

    /// Ends the span of a turn whose thinking was cut past its budget (the step is asked again).
    pub(super) fn cut(mut self) {
        self.span.set_attribute(KeyValue::new(
            "gen_ai.response.finish_reasons",
            opentelemetry::Value::Array(vec![opentelemetry::StringValue::from("length")].into()),
        ));
        let shared = &self.agent.0;
        shared.instruments.0.operation_duration.record(self.started.elapsed().as_secs_f64(), &shared.chat_metric);
        self.span.end();
    }
}

/// A call's span.
pub(super) struct ToolTrace {
    instruments: Instrumentation,
    context: Context,
    started: Instant,
    metric: [KeyValue; 2],
}

impl ToolTrace {
    /// The context the call runs under: a sub-agent's run, an MCP server's request.
    pub(super) fn context(&self) -> Context {
        self.context.clone()
    }

    /// Ends the span with the call's outcome and measures it. `ran`: the call reached its tool
    /// (a refusal by the loop is no sandbox denial).
    pub(super) fn end(self, outcome: &ToolOutcome, ran: bool) {
        let instruments = &self.instruments.0;
        let span = self.context.span();
        let elapsed = self.started.elapsed().as_secs_f64();
        match &outcome.result {
            Ok(result) => {
                if instruments.contents {
                    span.set_attribute(KeyValue::new("gen_ai.tool.call.result", result.to_string()));
                }
                instruments.tool_duration.record(elapsed, &self.metric);
            }
            Err(error) => {
                let kind = error.kind.as_str();
                span.set_attribute(KeyValue::new("error.type", kind));
                span.set_status(Status::error(kind));
                let [operation, tool] = self.metric;
                instruments.tool_duration.record(elapsed, &[operation, tool, KeyValue::new("error.type", kind)]);
                if ran && sandbox_stop(error.kind) {
                    instruments.sandbox_denials.add(1, &[KeyValue::new("reagent.denial.kind", kind)]);
                }
            }
        }
        span.end();
    }
}

/// Whether a tool's failure is the sandbox stopping it (a grant it lacked, a limit it passed).
fn sandbox_stop(kind: ToolErrorKind) -> bool {
    use ToolErrorKind::*;
    matches!(kind, Denied | Timeout | Memory | OutputTooLarge | WriteLimit | FileLimit | HandleLimit | Trap)
}
