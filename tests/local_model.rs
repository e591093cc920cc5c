//! The local backend through the real mistralrs path, on the real small models that
//! `scripts/setup.sh` pulls (`reagent model pull --all`). These never skip: a missing model fails.

mod common;

use common::*;
use reagent::model::catalog;
use serde_json::json;

fn require_pulled(name: &str) {
    let model = catalog::find(name).expect("a catalogue model");
    assert!(
        model.pulled().is_some(),
        "model {name} is not pulled: run scripts/setup.sh (it runs `reagent model pull --all`)"
    );
}

#[test]
fn calculator_on_the_default_model_calls_calc_and_answers_395() {
    require_pulled(catalog::DEFAULT_MODEL);
    let (code, events, err) = reagent_json(&["run", "--json", "agents/calculator.yaml", "What is (17*23)+4?"]);
    assert_eq!(code, Some(0), "{err}\n{}", shown(&events));
    let calls = events_of(&events, "tool_call");
    assert_eq!(calls[0]["tool"], "calc", "{}", shown(&events));
    let results = events_of(&events, "tool_result");
    assert_eq!(results[0]["result"], json!(395), "{}", shown(&events));
    let answer = events_of(&events, "answer");
    assert!(answer[0]["text"].as_str().unwrap_or_default().contains("395"), "{answer:?}");
    // Token usage is counted per step and over the run.
    let usage = events_of(&events, "usage");
    assert!(usage.iter().all(|u| u["prompt_tokens"].as_u64() > Some(0) && u["completion_tokens"].as_u64() > Some(0)));
    let finished = events_of(&events, "run_finished");
    assert!(finished[0]["usage"]["completion_tokens"].as_u64() > Some(0), "{finished:?}");
    // `reasoning: auto` asks step 1 to think, but this model has no reasoning mode and its call is
    // decoded under a constraint: no step says it thinks.
    let steps = events_of(&events, "step_started");
    assert!(steps.iter().all(|s| s["thinking"] == false), "{steps:?}");
    // What the engine returned is kept, so a dropped call could be seen.
    let raw = events_of(&events, "model_output");
    assert!(raw[0]["text"].as_str().unwrap_or_default().contains("calc"), "{raw:?}");
}

/// SmolLM2 with calc, a call required on the first step; `model_extra` adds settings.
fn smoke_run(model_extra: &str) -> (Option<i32>, Vec<serde_json::Value>, String) {
    require_pulled("smollm2-135m");
    let yaml = format!(
        "name: smoke\nmodel:\n  backend: local\n  model: smollm2-135m\n  max_tokens: 200\n{model_extra}\
         tool_choice: required\ninstructions: Use the calc tool to compute.\n\
         tools:\n  - component: {}\nlimits:\n  max_steps: 2\n",
        calc_component().display()
    );
    let agent = TestAgent::from_files(&yaml, &[]);
    reagent_json(&["run", "--json", agent.file().to_str().unwrap(), "What is 12*12?"])
}

/// The first call passed the loop's schema check and reached the Wasm tool: any error is calc's.
fn assert_first_call_reached_calc(code: Option<i32>, events: &[serde_json::Value], err: &str) {
    assert!(matches!(code, Some(0) | Some(5)), "{err}\n{}", shown(events));
    let call = &events_of(events, "tool_call")[0];
    assert_eq!(call["tool"], "calc");
    let arguments = call["arguments"].as_object().expect("an arguments object");
    assert!(arguments.len() == 1 && arguments["expression"].is_string(), "{call}");
    let result = &events_of(events, "tool_result")[0];
    let kind = result["error"]["kind"].as_str().unwrap_or("none");
    assert!(!["malformed_call", "unknown_tool"].contains(&kind), "{result}");
    // Only the loop's schema check words its rejection so; calc's own errors are fine.
    let message = result["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.starts_with("invalid arguments for `calc`"), "{result}");
}

#[test]
fn smollm2_under_constrained_decoding_makes_a_schema_valid_call_into_a_wasm_tool() {
    let (code, events, err) = smoke_run("");
    assert_first_call_reached_calc(code, &events, &err);
}

#[test]
fn the_exaone_format_renders_the_prompt_and_constrained_calls_still_hold() {
    // A raw completion rendered by reagent's EXAONE 4.0 format instead of the model's template.
    let (code, events, err) = smoke_run("  format: exaone\n");
    assert_first_call_reached_calc(code, &events, &err);
}

/// Berkeley Function Calling Leaderboard's `parallel_1`: one request, two calls. On lines of
/// their own the model wrote one call and ended its turn; in a list it writes both.
#[tokio::test]
async fn the_default_model_makes_several_calls_in_one_constrained_turn() {
    use reagent::conversation::{Message, ToolChoice, ToolDeclaration};
    use reagent::model::{LocalModels, ModelRequest, load_local};
    use reagent::spec::{LocalModelSpec, LocalSource};

    require_pulled(catalog::DEFAULT_MODEL);
    let spec = LocalModelSpec::new(LocalSource::Catalog(catalog::DEFAULT_MODEL.into()));
    let model = load_local(&LocalModels::default(), &spec).await.expect("the default model loads");
    let integer = json!({"type": "integer"});
    let tools = [ToolDeclaration {
        name: "calculate_em_force".into(),
        description: "Calculate the induced electromagnetic force based on Faraday's Law of Electromagnetic \
                      Induction, given the magnetic field (in Tesla), change in magnetic field area (in square \
                      meters), and the change in time (in seconds)."
            .into(),
        parameters: json!({"type": "object",
            "properties": {"b_field": integer, "area": integer, "d_time": integer},
            "required": ["b_field", "area", "d_time"]}),
    }];
    let messages = [Message::User {
        content: "Calculate the induced electromagnetic force for a magnetic field of 5 Tesla, area of 2 square \
                  meters and change in time of 4 seconds, then repeat with a change in time of 10 seconds."
            .into(),
    }];
    let request = ModelRequest {
        messages: &messages,
        tools: &tools,
        thinking: false,
        tool_choice: ToolChoice::Auto,
        max_thinking_tokens: None,
        answer_schema: None,
        deltas: None,
    };
    let reply = model.complete(request).await.expect("a reply");
    let times: Vec<_> = reply.calls.iter().map(|call| call.as_ref().map(|c| c.arguments["d_time"].clone())).collect();
    assert_eq!(times, [Ok(json!(4)), Ok(json!(10))], "{reply:?}");
}
