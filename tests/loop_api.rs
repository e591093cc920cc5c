//! The loop through the library API, with a toolbox that records what reaches it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reagent::agent_loop::{Agent, Checkpoint, LoopConfig, RunOutcome, Verdict};
use reagent::conversation::{Message, ToolChoice, ToolDeclaration};
use reagent::events::Event;
use reagent::model::{Model, ModelError, ModelReply, ModelRequest, ReplayModel, Usage};
use reagent::spec::{Budget, Limits, ReasoningMode, ReasoningPolicy};
use reagent::toolbox::{CallContext, ToolErrorKind, ToolOutcome, Toolbox};
use serde_json::{Value, json};

/// A `double` tool that records every call it receives.
#[derive(Clone, Default)]
struct RecordingToolbox {
    received: Arc<Mutex<Vec<Value>>>,
    /// The idempotency key of each call.
    keys: Arc<Mutex<Vec<String>>>,
    /// Whether its calls wait for a person's yes.
    approval: bool,
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

    async fn call(&self, _name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        self.received.lock().unwrap().push(arguments.clone());
        self.keys.lock().unwrap().push(context.idempotency_key().to_string());
        let n = arguments["n"].as_i64().unwrap_or_default();
        ToolOutcome { result: Ok(json!(n * 2)), log: String::new(), duration: Duration::ZERO }
    }

    fn needs_approval(&self, _name: &str) -> bool {
        self.approval
    }
}

fn config(mode: ReasoningMode) -> LoopConfig {
    LoopConfig {
        name: "t".into(),
        instructions: String::new(),
        reasoning: ReasoningPolicy { mode, ..ReasoningPolicy::default() },
        tool_choice: ToolChoice::Auto,
        limits: Limits { max_steps: 5, ..Limits::default() },
        output_schema: None,
    }
}

fn replay(turns: &[&str]) -> (ReplayModel, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.yaml");
    std::fs::write(&script, json!({ "turns": turns }).to_string()).unwrap();
    (ReplayModel::load(&script).unwrap(), dir)
}

fn agent(reasoning: ReasoningMode, turns: &[&str], toolbox: RecordingToolbox) -> (Agent, tempfile::TempDir) {
    let (model, dir) = replay(turns);
    (Agent::new(config(reasoning), Box::new(model), Box::new(toolbox)).unwrap(), dir)
}

/// What the model was asked, step by step: the thinking flag, the tool choice, the messages.
#[derive(Clone, Debug)]
struct Asked {
    thinking: bool,
    tools: usize,
    tool_choice: ToolChoice,
    messages: Vec<Message>,
}

/// A replay model that records each request it receives; it may count tokens, and take its time
/// over its first turn.
struct RecordingModel {
    inner: ReplayModel,
    asked: Arc<Mutex<Vec<Asked>>>,
    usage_per_turn: Option<Usage>,
    first_turn_delay: Duration,
}

#[async_trait]
impl Model for RecordingModel {
    fn label(&self) -> String {
        "recording".into()
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let first = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(Asked {
                thinking: request.thinking,
                tools: request.tools.len(),
                tool_choice: request.tool_choice,
                messages: request.messages.to_vec(),
            });
            asked.len() == 1
        };
        if first {
            tokio::time::sleep(self.first_turn_delay).await;
        }
        let reply = self.inner.complete(request).await?;
        Ok(ModelReply { usage: self.usage_per_turn, ..reply })
    }
}

fn recorded(config: LoopConfig, turns: &[&str]) -> (Agent, Arc<Mutex<Vec<Asked>>>, tempfile::TempDir) {
    recorded_with(config, turns, |_| {}, Box::new(RecordingToolbox::default()))
}

fn recorded_with(
    config: LoopConfig,
    turns: &[&str],
    adjust: impl FnOnce(&mut RecordingModel),
    toolbox: Box<dyn Toolbox>,
) -> (Agent, Arc<Mutex<Vec<Asked>>>, tempfile::TempDir) {
    let (inner, dir) = replay(turns);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut model =
        RecordingModel { inner, asked: asked.clone(), usage_per_turn: None, first_turn_delay: Duration::ZERO };
    adjust(&mut model);
    (Agent::new(config, Box::new(model), toolbox).unwrap(), asked, dir)
}

fn thinking_asked(asked: &Mutex<Vec<Asked>>) -> Vec<bool> {
    asked.lock().unwrap().iter().map(|a| a.thinking).collect()
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
    assert_eq!(outcome, RunOutcome::Answered { answer: "8".into(), output: None, steps: 4 });
    assert_eq!(*toolbox.received.lock().unwrap(), vec![json!({"n": 4})], "only the valid call ran");
    let kinds: Vec<ToolErrorKind> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult { error: Some(error), .. } => Some(error.kind),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, vec![ToolErrorKind::InvalidArguments, ToolErrorKind::InvalidArguments]);
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
    for (mode, expected) in [
        // auto: plan on step 1, act on step 2, recover on step 3 after the rejected call, act on 4.
        (ReasoningMode::Auto, vec![true, false, true, false]),
        (ReasoningMode::On, vec![true; 4]),
        (ReasoningMode::Off, vec![false; 4]),
    ] {
        let (agent, asked, _dir) = recorded(config(mode), &turns);
        let (_, events) = run(&agent).await;
        assert_eq!(thinking_per_step(&events), expected, "{mode:?}: events");
        assert_eq!(thinking_asked(&asked), expected, "{mode:?}: what the model was asked");
    }
}

#[tokio::test]
async fn earlier_reasoning_is_in_the_events_but_not_in_later_prompts() {
    let plan = "<think>Plan: double four with the tool.</think>";
    let (agent, asked, _dir) = recorded(config(ReasoningMode::Auto), &[&format!("{plan}{GOOD}"), "8"]);
    let (_, events) = run(&agent).await;
    assert!(events.iter().any(|e| matches!(e, Event::Reasoning { step: 1, text } if text.contains("Plan: double"))));
    let second = &asked.lock().unwrap()[1];
    assert!(!format!("{:?}", second.messages).contains("Plan: double"), "{:?}", second.messages);
}

#[tokio::test]
async fn before_answer_reconsiders_an_unthought_answer_with_thinking() {
    let mut config = config(ReasoningMode::Auto);
    config.reasoning.before_answer = true;
    let (agent, asked, _dir) = recorded(config, &[GOOD, "9", "<think>4 doubled is 8, not 9.</think>8"]);
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Answered { answer: "8".into(), output: None, steps: 2 });
    assert_eq!(thinking_asked(&asked), vec![true, false, true]);
    assert!(events.iter().any(|e| matches!(e, Event::Reconsidering { step: 2, draft } if draft == "9")));
}

#[tokio::test]
async fn thinking_past_its_budget_is_cut_and_the_step_asked_again_without() {
    let mut config = config(ReasoningMode::On);
    config.reasoning.max_thinking_tokens = Some(3);
    let long = format!("<think>one two three four five six</think>{GOOD}");
    let (agent, asked, _dir) = recorded(config, &[&long, GOOD, "<think>short</think>8"]);
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Answered { answer: "8".into(), output: None, steps: 2 });
    // Step 1 thought too long and was asked again without thinking; step 2 stayed in budget.
    assert_eq!(thinking_asked(&asked), vec![true, false, true]);
    let cuts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::ThinkingCut { step, tokens, .. } => Some(*step * 100 + *tokens),
            _ => None,
        })
        .collect();
    assert_eq!(cuts, vec![103], "one cut, on step 1, after 3 tokens");
}

#[tokio::test]
async fn required_tool_choice_holds_until_a_call_succeeds() {
    let mut config = config(ReasoningMode::Off);
    config.tool_choice = ToolChoice::Required;
    let (agent, asked, _dir) = recorded(config, &[BAD, GOOD, "8"]);
    run(&agent).await;
    let choices: Vec<ToolChoice> = asked.lock().unwrap().iter().map(|a| a.tool_choice).collect();
    assert_eq!(choices, vec![ToolChoice::Required, ToolChoice::Required, ToolChoice::Auto]);
}

#[tokio::test]
async fn replies_stream_into_the_events_as_deltas() {
    let (agent, _asked, _dir) = recorded(config(ReasoningMode::On), &["<think>a b</think>eight it is"]);
    let (_, events) = run(&agent).await;
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            Event::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "a beight it is");
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

    async fn call(&self, _name: &str, arguments: &Value, _context: &CallContext) -> ToolOutcome {
        // Run one after another, the first call would wait here forever.
        let met = tokio::time::timeout(Duration::from_secs(10), self.barrier.wait()).await.is_ok();
        let result = if met {
            Ok(json!(arguments["n"].as_i64().unwrap_or_default() * 2))
        } else {
            Err(reagent::toolbox::ToolError::new(ToolErrorKind::Timeout, "alone"))
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
    let config = LoopConfig { limits: Limits { max_steps: 3, ..Limits::default() }, ..config(ReasoningMode::Off) };
    let toolbox = RendezvousToolbox { barrier: Arc::new(tokio::sync::Barrier::new(3)) };
    let agent = Agent::new(config, Box::new(ReplayModel::load(&script).unwrap()), Box::new(toolbox)).unwrap();
    let (outcome, events) = run(&agent).await;
    assert_eq!(outcome, RunOutcome::Answered { answer: "done".into(), output: None, steps: 2 });
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
        .filter(
            |e| matches!(e, Event::ToolResult { error: Some(error), .. } if error.kind == ToolErrorKind::RepeatedCall),
        )
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(matches!(events.last(), Some(Event::RunFinished { status: reagent::events::RunStatus::Loop, .. })));
}

fn limited(limits: Limits) -> LoopConfig {
    LoopConfig { limits, ..config(ReasoningMode::Off) }
}

fn double(n: u32) -> String {
    format!(r#"<tool_call>{{"name": "double", "arguments": {{"n": {n}}}}}</tool_call>"#)
}

/// The events a budget ending leaves: which budget, the wrap-up answer, the final status.
fn ending(events: &[Event]) -> (Option<Budget>, Option<String>, Option<String>) {
    let spent = events.iter().find_map(|e| match e {
        Event::BudgetSpent { budget, .. } => Some(*budget),
        _ => None,
    });
    let answer = events.iter().find_map(|e| match e {
        Event::Answer { text, .. } => Some(text.clone()),
        _ => None,
    });
    let finished = events.iter().find_map(|e| match e {
        Event::RunFinished { status, budget, .. } => Some(format!("{status:?} {budget:?}")),
        _ => None,
    });
    (spent, answer, finished)
}

#[tokio::test]
async fn out_of_steps_one_last_turn_without_tools_gives_the_best_answer() {
    let limits = Limits { max_steps: 2, ..Limits::default() };
    let (agent, asked, _dir) = recorded(limited(limits), &[&double(1), &double(2), "probably 4"]);
    let (outcome, events) = run(&agent).await;
    let answer = Some("probably 4".to_string());
    assert_eq!(outcome, RunOutcome::Incomplete { budget: Budget::MaxSteps, answer: answer.clone(), steps: 3 });
    assert_eq!(ending(&events), (Some(Budget::MaxSteps), answer, Some("Incomplete Some(MaxSteps)".into())));
    let asked = asked.lock().unwrap();
    let tools: Vec<usize> = asked.iter().map(|a| a.tools).collect();
    assert_eq!(tools, vec![1, 1, 0], "the wrap-up turn offers no tools");
    let last = asked[2].messages.last().unwrap();
    assert!(
        matches!(last, Message::User { content } if content.contains("limits.max_steps (2 steps)")),
        "the model is told which budget ran out: {last:?}"
    );
}

#[tokio::test]
async fn out_of_tool_calls_the_calls_past_the_budget_are_not_run() {
    let toolbox = RecordingToolbox::default();
    let two = |a, b| format!("{}\n{}", double(a), double(b));
    let limits = Limits { max_tool_calls: 3, ..Limits::default() };
    let (agent, _asked, _dir) =
        recorded_with(limited(limits), &[&two(1, 2), &two(3, 4), "2, 4, 6"], |_| {}, Box::new(toolbox.clone()));
    let (outcome, events) = run(&agent).await;
    assert!(matches!(outcome, RunOutcome::Incomplete { budget: Budget::MaxToolCalls, steps: 3, .. }), "{outcome:?}");
    assert_eq!(*toolbox.received.lock().unwrap(), vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
    let refused: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult { error: Some(error), .. } => Some(error.kind.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec!["budget"], "the fourth call is refused, saying why");
    assert_eq!(ending(&events).0, Some(Budget::MaxToolCalls));
}

#[tokio::test]
async fn out_of_tokens_counts_prompt_and_completion_over_the_run() {
    let limits = Limits { max_tokens: 100, ..Limits::default() };
    let usage = Usage { prompt_tokens: 40, completion_tokens: 20, reasoning_tokens: 5, cached_tokens: 0 };
    let (agent, asked, _dir) = recorded_with(
        limited(limits),
        &[&double(1), &double(2), "best so far: 4"],
        |model| model.usage_per_turn = Some(usage),
        Box::new(RecordingToolbox::default()),
    );
    let (outcome, events) = run(&agent).await;
    // 60 tokens a turn: two turns pass 100, so the third model turn is the wrap-up.
    let answer = Some("best so far: 4".to_string());
    assert_eq!(outcome, RunOutcome::Incomplete { budget: Budget::MaxTokens, answer, steps: 3 });
    assert_eq!(asked.lock().unwrap().len(), 3);
    let totals = events.iter().find_map(|e| match e {
        Event::RunFinished { usage, .. } => *usage,
        _ => None,
    });
    assert_eq!(totals.map(|u| u.prompt_tokens + u.completion_tokens), Some(180), "the wrap-up's tokens count too");
}

/// A toolbox whose calls never finish.
struct StuckToolbox;

#[async_trait]
impl Toolbox for StuckToolbox {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        RecordingToolbox::default().declarations()
    }

    async fn call(&self, _name: &str, _arguments: &Value, _context: &CallContext) -> ToolOutcome {
        std::future::pending().await
    }
}

/// On paused time: the run's 300 ms pass the moment nothing else can happen.
#[tokio::test(start_paused = true)]
async fn out_of_time_a_stuck_call_is_cut_and_the_run_still_answers() {
    let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
    let (agent, _asked, _dir) =
        recorded_with(limited(limits), &[&double(1), "could not finish"], |_| {}, Box::new(StuckToolbox));
    let (outcome, events) = run(&agent).await;
    let answer = Some("could not finish".to_string());
    assert_eq!(outcome, RunOutcome::Incomplete { budget: Budget::Timeout, answer, steps: 2 });
    let cut = events
        .iter()
        .any(|e| matches!(e, Event::ToolResult { error: Some(error), .. } if error.kind == ToolErrorKind::Timeout));
    assert!(cut, "the stuck call is reported as cut by the run's timeout");
}

#[tokio::test(start_paused = true)]
async fn out_of_time_a_slow_model_turn_is_cancelled_and_the_run_wraps_up() {
    let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
    let (agent, asked, _dir) = recorded_with(
        limited(limits),
        &["nothing yet"], // the cancelled first turn never reads the script
        |model| model.first_turn_delay = Duration::from_secs(3600),
        Box::new(RecordingToolbox::default()),
    );
    let (outcome, _events) = run(&agent).await;
    let answer = Some("nothing yet".to_string());
    assert_eq!(outcome, RunOutcome::Incomplete { budget: Budget::Timeout, answer, steps: 2 });
    assert_eq!(asked.lock().unwrap()[1].tools, 0);
}

#[tokio::test]
async fn an_answer_the_output_schema_rejects_gets_one_repair_turn_quoting_the_errors() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let config = LoopConfig { output_schema: Some(schema), ..config(ReasoningMode::Off) };
    let (agent, asked, _dir) = recorded(config, &[r#"{"n": "eight"}"#, "```json\n{\"n\": 8}\n```"]);
    let (outcome, events) = run(&agent).await;
    let fixed = r#"```json
{"n": 8}
```"#;
    assert_eq!(outcome, RunOutcome::Answered { answer: fixed.into(), output: Some(json!({"n": 8})), steps: 2 });
    let asked = asked.lock().unwrap();
    assert!(
        matches!(&asked[0].messages[0], Message::System { content } if content.contains(r#""required":["n"]"#)),
        "the model is shown the schema: {:?}",
        asked[0].messages[0]
    );
    let repair = asked[1].messages.last().unwrap();
    let expected = r#"at /n: "eight" is not of type "integer""#;
    assert!(matches!(repair, Message::User { content } if content.contains(expected)), "{repair:?}");
    assert_eq!(asked[1].tools, 0, "the repair turn is an answer, not more work");
    let invalid =
        events.iter().any(|e| matches!(e, Event::OutputInvalid { step: 1, errors, .. } if errors == &[expected]));
    assert!(invalid, "{events:?}");
}

#[tokio::test]
async fn an_answer_still_invalid_after_the_repair_ends_the_run_as_invalid_output() {
    let schema = json!({"type": "array", "items": {"type": "integer"}});
    let config = LoopConfig { output_schema: Some(schema), ..config(ReasoningMode::Off) };
    let (agent, _asked, _dir) = recorded(config, &["some numbers", "[1, 2, \"three\"]", "never asked"]);
    let (outcome, _events) = run(&agent).await;
    let errors = vec![r#"at /2: "three" is not of type "integer""#.to_string()];
    assert_eq!(outcome, RunOutcome::InvalidOutput { answer: r#"[1, 2, "three"]"#.into(), errors, steps: 2 });
}

#[tokio::test]
async fn a_call_that_needs_approval_pauses_the_run_which_resumes_with_the_decision() {
    for approve in [true, false] {
        let toolbox = RecordingToolbox { approval: true, ..RecordingToolbox::default() };
        let turns = [GOOD, if approve { "8" } else { "I was not allowed to double it" }];
        let (agent, asked, _dir) = recorded_with(config(ReasoningMode::Off), &turns, |_| {}, Box::new(toolbox.clone()));
        let (outcome, events) = run(&agent).await;
        let RunOutcome::Paused(checkpoint) = outcome else { panic!("expected a pause, got {outcome:?}") };
        assert!(toolbox.received.lock().unwrap().is_empty(), "nothing runs before the decision");
        assert!(events.iter().any(|e| matches!(e, Event::ApprovalRequired { tool, .. } if tool == "double")));
        assert!(matches!(events.last(), Some(Event::RunFinished { status: reagent::events::RunStatus::Paused, .. })));

        // The checkpoint survives a trip through a file, as `reagent resume` reads it.
        let saved = serde_json::to_string(&checkpoint).unwrap();
        let checkpoint: Checkpoint = serde_json::from_str(&saved).unwrap();
        let ids: Vec<String> = checkpoint.awaiting().iter().map(|c| c.id.clone()).collect();
        let verdict = if approve { Verdict::Approve } else { Verdict::Deny };
        let decisions = ids.iter().map(|id| (id.clone(), verdict.clone())).collect();
        let mut events = Vec::new();
        let outcome = agent.resume(checkpoint, &decisions, &mut |e: &Event| events.push(e.clone())).await.unwrap();
        assert!(matches!(outcome, RunOutcome::Answered { steps: 2, .. }), "{outcome:?}");
        let ran = toolbox.received.lock().unwrap().len();
        let result = events.iter().find_map(|e| match e {
            Event::ToolResult { ok, error, .. } => Some((*ok, error.as_ref().map(|e| e.kind))),
            _ => None,
        });
        if approve {
            assert_eq!((ran, result), (1, Some((true, None))));
        } else {
            assert_eq!((ran, result), (0, Some((false, Some(ToolErrorKind::Denied)))));
            let fed_back = format!("{:?}", asked.lock().unwrap()[1].messages.last());
            assert!(fed_back.contains("a person declined this call"), "{fed_back}");
        }
    }
}

#[test]
fn models_and_tools_can_be_declared_in_code_without_an_agent_file() {
    use reagent::model::OpenAiModel;
    use reagent::spec::{LocalModelSpec, LocalSource, OpenAiModelSpec, Position, Sampling};

    let declared = json!({"name": "double", "description": "Doubles n.", "parameters": {"type": "object"}});
    let declaration: ToolDeclaration = serde_json::from_value(declared.clone()).expect("a declaration from JSON");
    assert_eq!(serde_json::to_value(&declaration).unwrap(), declared, "it reads back what it writes");

    let served = OpenAiModelSpec::new("http://127.0.0.1:8000/v1/", "LGAI-EXAONE/EXAONE-4.0-32B");
    assert_eq!((served.url.as_str(), served.sampling), ("http://127.0.0.1:8000/v1", Sampling::default()));
    assert!(OpenAiModel::new(served).is_ok());

    let local = LocalModelSpec::new(LocalSource::Catalog("qwen2.5-coder-0.5b".into()));
    assert!(local.constrained && local.format.is_none());
    assert_eq!(local.at.to_string(), Position::in_code().to_string());
    assert_eq!(Position::in_code().to_string(), "(built in code)", "errors about it name no file");
}

#[tokio::test]
async fn each_call_gets_an_idempotency_key_under_its_run_and_a_sub_agents_under_its_call() {
    let inner_toolbox = RecordingToolbox::default();
    let mut inner_config = config(ReasoningMode::Off);
    inner_config.name = "helper".into();
    let (inner_model, _inner_dir) =
        replay(&[r#"<tool_call>{"name": "double", "arguments": {"n": 5}}</tool_call>"#, "10"]);
    let inner = Agent::new(inner_config, Box::new(inner_model), Box::new(inner_toolbox.clone())).unwrap();

    let toolbox = RecordingToolbox::default();
    let turns = [
        r#"<tool_call>{"name": "double", "arguments": {"n": 1}}</tool_call><tool_call>{"name": "double", "arguments": {"n": 2}}</tool_call>"#,
        r#"<tool_call>{"name": "helper", "arguments": {"task": "double 5"}}</tool_call>"#,
        "Done.",
    ];
    let (mut outer, _dir) = agent(ReasoningMode::Off, &turns, toolbox.clone());
    outer.add_sub_agent(inner, Some("Doubles things.")).unwrap();
    let outcome = outer.run("go", &mut |_: &Event| {}).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Answered { .. }), "{outcome:?}");

    let keys = toolbox.keys.lock().unwrap().clone();
    let run = keys[0].strip_suffix("/call_1_1").expect("the first call's key ends with its id").to_string();
    assert!(run.starts_with("key_"), "a run without a journal gets a fresh prefix: {run}");
    assert_eq!(keys, [format!("{run}/call_1_1"), format!("{run}/call_1_2")]);
    assert_eq!(*inner_toolbox.keys.lock().unwrap(), [format!("{run}/call_2_1/call_1_1")]);

    // Another run: other keys.
    let second_toolbox = RecordingToolbox::default();
    let (second, _dir2) = agent(ReasoningMode::Off, &[turns[0], "Done."], second_toolbox.clone());
    second.run("go", &mut |_: &Event| {}).await.unwrap();
    assert!(!second_toolbox.keys.lock().unwrap()[0].starts_with(&run), "a new run, new keys");
}
