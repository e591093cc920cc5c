//! The loop through the library API, with a toolbox that records what reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reagent::agent_loop::{Agent, LoopConfig, RunOutcome};
use reagent::conversation::ToolDeclaration;
use reagent::events::Event;
use reagent::model::ReplayModel;
use reagent::spec::ReasoningMode;
use reagent::toolbox::{ToolOutcome, Toolbox};
use serde_json::{Value, json};

/// A `double` tool that records every call it receives.
#[derive(Clone, Default)]
struct RecordingToolbox {
    received: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl Toolbox for RecordingToolbox {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        vec![ToolDeclaration {
            name: "double".into(),
            description: "Doubles n.".into(),
            parameters: json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}),
        }]
    }

    async fn call(&self, _name: &str, arguments: &Value) -> ToolOutcome {
        self.received.lock().unwrap().push(arguments.clone());
        let n = arguments["n"].as_i64().unwrap_or_default();
        ToolOutcome { result: Ok(json!(n * 2)), log: String::new(), duration: Duration::ZERO }
    }
}

fn agent(reasoning: ReasoningMode, turns: &[&str], toolbox: RecordingToolbox) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.yaml");
    std::fs::write(&script, json!({ "turns": turns }).to_string()).unwrap();
    let config = LoopConfig { name: "t".into(), instructions: String::new(), reasoning, max_steps: 5 };
    let model = ReplayModel::load(&script).unwrap();
    (Agent::new(config, Box::new(model), Box::new(toolbox)).unwrap(), dir)
}

async fn run(agent: &Agent) -> (RunOutcome, Vec<Event>) {
    let mut events = Vec::new();
    let outcome = agent.run("task", &mut |e: &Event| events.push(e.clone())).await.unwrap();
    (outcome, events)
}

const BAD: &str = r#"<tool_call>{"name": "double", "arguments": {"n": "four"}}</tool_call>"#;
const EXTRA: &str = r#"<tool_call>{"name": "double", "arguments": {"n": 4, "m": 1}}</tool_call>"#;
const GOOD: &str = r#"<tool_call>{"name": "double", "arguments": {"n": 4}}</tool_call>"#;

#[tokio::test]
async fn invalid_arguments_never_reach_the_tool() {
    let toolbox = RecordingToolbox::default();
    let (agent, _dir) = agent(ReasoningMode::Auto, &[BAD, EXTRA, GOOD, "8"], toolbox.clone());
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Answered { answer: "8".into(), steps: 4 });
    assert_eq!(*toolbox.received.lock().unwrap(), vec![json!({"n": 4})], "only the valid call ran");
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult { error: Some(error), .. } => Some(error.kind.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec!["invalid_arguments", "invalid_arguments"]);
}

fn thinking_per_step(events: &[Event]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { thinking, .. } => Some(*thinking),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn reasoning_policy_decides_thinking_per_step() {
    let turns = [GOOD, BAD, GOOD, "8"];
    let (auto, _a) = agent(ReasoningMode::Auto, &turns, RecordingToolbox::default());
    let (on, _b) = agent(ReasoningMode::On, &turns, RecordingToolbox::default());
    let (off, _c) = agent(ReasoningMode::Off, &turns, RecordingToolbox::default());
    // auto: plan on step 1, act on step 2, recover on step 3 after the rejected call, act on 4.
    assert_eq!(thinking_per_step(&run(&auto).await.1), vec![true, false, true, false]);
    assert_eq!(thinking_per_step(&run(&on).await.1), vec![true; 4]);
    assert_eq!(thinking_per_step(&run(&off).await.1), vec![false; 4]);
}

/// A toolbox whose calls each wait until `expected` calls are in flight at once.
struct RendezvousToolbox {
    barrier: Arc<tokio::sync::Barrier>,
}

#[async_trait]
impl Toolbox for RendezvousToolbox {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        RecordingToolbox::default().declarations()
    }

    async fn call(&self, _name: &str, arguments: &Value) -> ToolOutcome {
        // Run one after another, the first call would wait here forever.
        let met = tokio::time::timeout(Duration::from_secs(10), self.barrier.wait()).await.is_ok();
        let result = if met {
            Ok(json!(arguments["n"].as_i64().unwrap_or_default() * 2))
        } else {
            Err(reagent::toolbox::ToolError::new("timeout", "alone"))
        };
        ToolOutcome { result, log: String::new(), duration: Duration::ZERO }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_one_turn_run_concurrently_and_report_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.yaml");
    let turn = (1..=3)
        .map(|n| format!(r#"<tool_call>{{"name": "double", "arguments": {{"n": {n}}}}}</tool_call>"#))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&script, json!({ "turns": [turn, "done"] }).to_string()).unwrap();
    let config =
        LoopConfig { name: "t".into(), instructions: String::new(), reasoning: ReasoningMode::Off, max_steps: 3 };
    let toolbox = RendezvousToolbox { barrier: Arc::new(tokio::sync::Barrier::new(3)) };
    let agent = Agent::new(config, Box::new(ReplayModel::load(&script).unwrap()), Box::new(toolbox)).unwrap();
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Answered { answer: "done".into(), steps: 2 });
    let results: Vec<Value> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult { result, error, .. } => Some(result.clone().unwrap_or_else(|| json!(error))),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![json!(2), json!(4), json!(6)], "all three met at the barrier; results in call order");
}

#[tokio::test]
async fn a_repeated_call_is_refused_once_then_the_run_stops_as_a_loop() {
    let toolbox = RecordingToolbox::default();
    let other = r#"<tool_call>{"name": "double", "arguments": {"n": 5}}</tool_call>"#;
    let (agent, _dir) = agent(ReasoningMode::Off, &[GOOD, GOOD, other, GOOD, GOOD, "never"], toolbox.clone());
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Looped { steps: 5, tool: "double".into() });
    // Two identical calls ran; the third was refused with an explanation; the fourth stopped the run.
    assert_eq!(*toolbox.received.lock().unwrap(), vec![json!({"n": 4}), json!({"n": 4}), json!({"n": 5})]);
    let refused: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ToolResult { error: Some(error), .. } if error.kind == "repeated_call"))
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(matches!(events.last(), Some(Event::RunFinished { status: reagent::events::RunStatus::Loop, .. })));
}
