//! Telemetry through the library: a replay run (a Wasm tool behind an approval, a sub-agent, a
//! budget end) reports to in-memory exporters; the span tree, names, kinds, attributes, links and
//! metrics are what the OpenTelemetry GenAI conventions name, and contents stay off by default.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, InMemoryMetricExporterBuilder};
use opentelemetry_sdk::trace::{InMemorySpanExporterBuilder, SpanData};
use reagent::agent_loop::{RunOutcome, Verdict};
use reagent::events::Event;
use reagent::launch::launch;
use reagent::runtime::Runtime;
use reagent::spec::{Budget, GivenInputs};
use reagent::telemetry::{Exporters, Telemetry};
use serde_json::json;

fn calc_call(expression: &str) -> String {
    format!(r#"<tool_call>{{"name": "calc", "arguments": {{"expression": "{expression}"}}}}</tool_call>"#)
}

/// `lead` asks calc (which waits for approval), then its `helper` sub-agent (which asks calc),
/// and runs out of steps: the wrap-up turn answers.
fn write_agents(dir: &Path) {
    let calc = calc_component();
    let helper = format!(
        "name: helper\ndescription: Works sums out.\nmodel:\n  backend: replay\n  script: helper.script.yaml\n\
         tools:\n  - component: {}\n",
        calc.display()
    );
    let lead = format!(
        "name: lead\nmodel:\n  backend: replay\n  script: lead.script.yaml\ntools:\n  - component: {}\n    \
         approval: always\n  - agent: helper.yaml\nlimits:\n  max_steps: 4\n",
        calc.display()
    );
    let ask_helper = r#"<tool_call>{"name": "helper", "arguments": {"task": "work out 2+2"}}</tool_call>"#;
    std::fs::write(dir.join("helper.yaml"), helper).unwrap();
    std::fs::write(dir.join("helper.script.yaml"), json!({"turns": [calc_call("2+2"), "4"]}).to_string()).unwrap();
    std::fs::write(dir.join("lead.yaml"), lead).unwrap();
    let turns = json!({"turns": [calc_call("1+1"), ask_helper, "2 and 4, as far as I got"]});
    std::fs::write(dir.join("lead.script.yaml"), turns.to_string()).unwrap();
}

struct Recorded {
    spans: Vec<SpanData>,
    metrics: ResourceMetrics,
}

/// Runs `lead` until it pauses for approval, then resumes it with a yes, all reporting to
/// in-memory exporters.
async fn traced_run(contents: bool) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    write_agents(dir.path());
    let spans = InMemorySpanExporterBuilder::new().build();
    let metrics = InMemoryMetricExporterBuilder::new().build();
    let telemetry = Telemetry::with(Exporters {
        spans: Some(spans.clone()),
        metrics: Some(metrics.clone()),
        scrape: false,
        contents,
    });
    let runtime = Runtime::new().unwrap().with_telemetry(telemetry.clone());
    let (_, agent) = launch(&runtime, &dir.path().join("lead.yaml"), &GivenInputs::default()).await.unwrap();
    let mut ignore = |_: &Event| {};
    let paused = agent.run("What are 1+1 and 2+2?", &mut ignore).await.unwrap();
    let RunOutcome::Paused(checkpoint) = paused else { panic!("expected a pause for approval, got {paused:?}") };
    let verdicts = HashMap::from([("call_1_1".to_string(), Verdict::Approve)]);
    let finished = agent.resume(*checkpoint, &verdicts, &mut ignore).await.unwrap();
    assert!(
        matches!(finished, RunOutcome::Incomplete { budget: Budget::MaxSteps, .. }),
        "the lead runs out of steps: {finished:?}"
    );
    telemetry.flush();
    Recorded { spans: spans.get_finished_spans().unwrap(), metrics: last_metrics(&metrics) }
}

fn last_metrics(exporter: &InMemoryMetricExporter) -> ResourceMetrics {
    exporter.get_finished_metrics().unwrap().pop().expect("metrics were exported")
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a OtelValue> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    attribute(span, key).map(|v| v.to_string()).unwrap_or_default()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn parent_of<'a>(spans: &'a [SpanData], span: &SpanData) -> Option<&'a SpanData> {
    spans.iter().find(|s| s.span_context.span_id() == span.parent_span_id)
}

fn event_names(span: &SpanData) -> Vec<&str> {
    span.events.iter().map(|e| e.name.as_ref()).collect()
}

#[tokio::test]
async fn a_run_is_one_span_tree_in_the_genai_conventions() {
    let Recorded { spans, .. } = traced_run(false).await;
    let listing: Vec<String> = spans.iter().map(|s| format!("{} ({:?})", s.name, s.span_kind)).collect();

    // Two parts: paused for approval, then resumed; each its own `invoke_agent lead`.
    let runs = named(&spans, "invoke_agent lead");
    assert_eq!(runs.len(), 2, "{listing:?}");
    let (first, resumed) =
        if text(runs[0], "reagent.run.status") == "paused" { (runs[0], runs[1]) } else { (runs[1], runs[0]) };
    for run in [first, resumed] {
        assert_eq!(run.span_kind, SpanKind::Internal);
        assert_eq!(run.parent_span_id, SpanId::INVALID, "each part is a root: {listing:?}");
        assert_eq!(text(run, "gen_ai.operation.name"), "invoke_agent");
        assert_eq!(text(run, "gen_ai.agent.name"), "lead");
        assert_eq!(text(run, "gen_ai.provider.name"), "reagent.replay");
        assert_eq!(text(run, "gen_ai.request.model"), "lead.script.yaml");
        assert!(!text(run, "gen_ai.conversation.id").is_empty());
    }
    assert_eq!(text(first, "reagent.run.status"), "paused");
    assert_eq!(event_names(first), ["reagent.approval_required"]);
    assert_eq!(text(resumed, "reagent.run.status"), "incomplete");
    assert_eq!(event_names(resumed), ["reagent.run_resumed", "reagent.budget_spent"]);
    let spent = &resumed.events.events[1];
    assert!(spent.attributes.contains(&KeyValue::new("reagent.budget", "max_steps")), "{spent:?}");
    assert!(
        resumed.events.events[0].attributes.contains(&KeyValue::new("reagent.approved", "call_1_1")),
        "{:?}",
        resumed.events.events[0]
    );
    // The resumed part starts a trace of its own, linked to the first part's span.
    let first_trace = first.span_context.trace_id();
    assert_ne!(resumed.span_context.trace_id(), first_trace);
    let links: Vec<_> = resumed.links.iter().map(|l| l.span_context.clone()).collect();
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].trace_id(), links[0].span_id()), (first_trace, first.span_context.span_id()));

    // Model turns: `chat` client spans under their run's span. Step 1 (paused) in the first
    // trace; step 2 and the wrap-up in the resumed one; the helper's two turns under its own run.
    let chats = named(&spans, "chat lead.script.yaml");
    assert_eq!(chats.len(), 3, "{listing:?}");
    for chat in &chats {
        assert_eq!(chat.span_kind, SpanKind::Client);
        assert_eq!(text(chat, "gen_ai.operation.name"), "chat");
        assert_eq!(text(chat, "gen_ai.provider.name"), "reagent.replay");
        assert_eq!(text(chat, "gen_ai.request.model"), "lead.script.yaml");
        let reasons = text(chat, "gen_ai.response.finish_reasons");
        assert!(reasons.contains("tool_calls") || reasons.contains("stop"), "{reasons}");
    }
    assert_eq!(chats.iter().filter(|c| c.parent_span_id == first.span_context.span_id()).count(), 1);
    assert_eq!(chats.iter().filter(|c| c.parent_span_id == resumed.span_context.span_id()).count(), 2);

    // Calls: the approved calc under the resumed run; the helper as a call whose span holds the
    // helper's own run, which holds its own chat and calc spans.
    let tools = named(&spans, "execute_tool calc");
    assert_eq!(tools.len(), 2, "the lead's calc and the helper's: {listing:?}");
    let lead_calc = tools.iter().find(|t| t.parent_span_id == resumed.span_context.span_id()).expect("lead's calc");
    assert_eq!(lead_calc.span_kind, SpanKind::Internal);
    assert_eq!(text(lead_calc, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(text(lead_calc, "gen_ai.tool.name"), "calc");
    assert_eq!(text(lead_calc, "gen_ai.tool.call.id"), "call_1_1");
    assert_eq!(text(lead_calc, "gen_ai.tool.type"), "function");
    assert_eq!(text(lead_calc, "reagent.tool.effect"), "pure");
    assert_eq!(text(lead_calc, "reagent.approval"), "approved");
    assert_eq!(lead_calc.status, Status::Unset, "the call succeeded");
    assert!(attribute(lead_calc, "error.type").is_none());

    let helper_call = named(&spans, "execute_tool helper");
    assert_eq!(helper_call.len(), 1, "{listing:?}");
    let helper_call = helper_call[0];
    assert_eq!(helper_call.parent_span_id, resumed.span_context.span_id());
    assert_eq!(text(helper_call, "gen_ai.tool.call.id"), "call_2_1");
    assert!(attribute(helper_call, "reagent.approval").is_none(), "the helper needs no approval");
    let helper_run = named(&spans, "invoke_agent helper");
    assert_eq!(helper_run.len(), 1, "{listing:?}");
    let helper_run = helper_run[0];
    assert_eq!(helper_run.parent_span_id, helper_call.span_context.span_id(), "a sub-agent nests under its call");
    assert_eq!(text(helper_run, "reagent.run.status"), "answered");
    let helper_chats = named(&spans, "chat helper.script.yaml");
    assert_eq!(helper_chats.len(), 2);
    assert!(helper_chats.iter().all(|c| c.parent_span_id == helper_run.span_context.span_id()));
    let helper_calc = tools.iter().find(|t| t.parent_span_id == helper_run.span_context.span_id());
    assert!(helper_calc.is_some(), "the helper's calc under the helper's run: {listing:?}");

    // Everything after the pause is one trace.
    let resumed_trace = resumed.span_context.trace_id();
    let in_resumed = spans.iter().filter(|s| s.span_context.trace_id() == resumed_trace).count();
    assert_eq!(in_resumed, spans.len() - 2, "all but the first part's two spans: {listing:?}");
    assert!(spans.iter().all(|s| s.end_time >= s.start_time));
    let parents_known =
        spans.iter().filter(|s| s.parent_span_id != SpanId::INVALID).all(|s| parent_of(&spans, s).is_some());
    assert!(parents_known, "every parent is a span of the run: {listing:?}");

    // No contents unless asked for.
    for key in
        ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"]
    {
        assert!(spans.iter().all(|s| attribute(s, key).is_none()), "{key} recorded by default");
    }
}

#[tokio::test]
async fn contents_are_recorded_only_when_switched_on() {
    let Recorded { spans, .. } = traced_run(true).await;
    let calc = named(&spans, "execute_tool calc");
    let lead_calc = calc.iter().find(|s| text(s, "gen_ai.tool.call.id") == "call_1_1").unwrap();
    assert_eq!(text(lead_calc, "gen_ai.tool.call.arguments"), r#"{"expression":"1+1"}"#);
    assert_eq!(text(lead_calc, "gen_ai.tool.call.result"), "2");
    let chat = named(&spans, "chat lead.script.yaml");
    assert!(chat.iter().all(|c| text(c, "gen_ai.input.messages").contains("What are 1+1 and 2+2?")));
}

/// Every data point of a metric: its attributes and its count (histograms) or value (sums).
fn points(metrics: &ResourceMetrics, name: &str) -> Vec<(Vec<KeyValue>, f64)> {
    let metric = metrics.scope_metrics().flat_map(|s| s.metrics()).find(|m| m.name() == name);
    let Some(metric) = metric else { return Vec::new() };
    match metric.data() {
        AggregatedMetrics::F64(MetricData::Histogram(h)) => {
            h.data_points().map(|p| (p.attributes().cloned().collect(), p.count() as f64)).collect()
        }
        AggregatedMetrics::U64(MetricData::Sum(s)) => {
            s.data_points().map(|p| (p.attributes().cloned().collect(), p.value() as f64)).collect()
        }
        AggregatedMetrics::I64(MetricData::Sum(s)) => {
            s.data_points().map(|p| (p.attributes().cloned().collect(), p.value() as f64)).collect()
        }
        other => panic!("{name}: unexpected data {other:?}"),
    }
}

fn total(points: &[(Vec<KeyValue>, f64)], with: Option<KeyValue>) -> f64 {
    points.iter().filter(|(attributes, _)| with.as_ref().is_none_or(|kv| attributes.contains(kv))).map(|(_, n)| n).sum()
}

#[tokio::test]
async fn the_genai_metrics_count_what_the_spans_show() {
    let Recorded { metrics, .. } = traced_run(false).await;
    let chats = points(&metrics, "gen_ai.client.operation.duration");
    assert_eq!(total(&chats, None), 5.0, "three lead turns, two helper turns: {chats:?}");
    let tools = points(&metrics, "gen_ai.execute_tool.duration");
    assert_eq!(total(&tools, Some(KeyValue::new("gen_ai.tool.name", "calc"))), 2.0, "{tools:?}");
    assert_eq!(total(&tools, Some(KeyValue::new("gen_ai.tool.name", "helper"))), 1.0, "{tools:?}");
    let runs = points(&metrics, "gen_ai.invoke_agent.duration");
    assert_eq!(total(&runs, Some(KeyValue::new("gen_ai.agent.name", "lead"))), 2.0, "two parts: {runs:?}");
    let ended = points(&metrics, "reagent.runs");
    for (status, count) in [("paused", 1.0), ("incomplete", 1.0), ("answered", 1.0)] {
        assert_eq!(total(&ended, Some(KeyValue::new("reagent.run.status", status))), count, "{status}: {ended:?}");
    }
    let steps = points(&metrics, "reagent.steps");
    // The lead's three steps came in two parts.
    assert_eq!(total(&steps, Some(KeyValue::new("gen_ai.agent.name", "lead"))), 3.0, "{steps:?}");
    assert_eq!(total(&steps, Some(KeyValue::new("gen_ai.agent.name", "helper"))), 2.0, "{steps:?}");
    let waiting = points(&metrics, "reagent.approvals.waiting");
    assert_eq!(total(&waiting, None), 0.0, "asked once, then decided: {waiting:?}");
    assert!(points(&metrics, "gen_ai.client.token.usage").is_empty(), "replay counts no tokens");
    assert!(points(&metrics, "reagent.sandbox.denials").is_empty(), "nothing was denied");
}
