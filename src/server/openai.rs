//! The OpenAI-compatible facade, for clients that speak nothing else: `GET /v1/models` lists the
//! agents, `POST /v1/chat/completions` with `model` = an agent's name runs it on the last user
//! message as its task. Each call is an ordinary durable run; its id comes back in the
//! `x-reagent-run-id` header. An agent that may wait for approvals is refused: a chat completion
//! cannot wait for a person.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use reagent_store::{Run, Scope, Status};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::App;
use super::api::{ApiError, start_run, trace_of};
use super::auth::caller;

/// How often a waiting completion looks at its run when nothing woke it.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

pub(super) fn routes() -> Router<App> {
    Router::new().route("/v1/models", get(models)).route("/v1/chat/completions", post(completions))
}

async fn models(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Read).await?;
    let data: Vec<Value> = app
        .agents
        .keys()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "reagent"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// The fields reagent reads; the rest of what OpenAI clients send (temperature, …) is the
/// agent file's to decide, and ignored.
#[derive(Deserialize)]
struct CompletionBody {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

async fn completions(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Json<CompletionBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Scope::Write).await?;
    let Json(body) = body.map_err(ApiError::body)?;
    let Some(agent) = app.agents.get(&body.model) else {
        let names: Vec<&str> = app.agents.keys().map(String::as_str).collect();
        return Err(ApiError::invalid(format!(
            "model: no agent `{}`; GET /v1/models lists: {}",
            body.model,
            names.join(", ")
        )));
    };
    if agent.approvals {
        return Err(ApiError::invalid(format!(
            "model: agent `{}` may wait for a person's approval, which a chat completion cannot; use POST /v1/runs",
            agent.name
        )));
    }
    let task = body.messages.iter().rev().find(|m| m.role == "user").map(|m| text_of(&m.content)).unwrap_or_default();
    if task.trim().is_empty() {
        return Err(ApiError::invalid("messages: give a user message with the task"));
    }
    let (run, _) = start_run(&app, &who, &body.model, &task, Map::new(), None, None, trace_of(&headers)).await?;
    let id = run.id.clone();
    let mut response = if body.stream {
        streamed(app, run).into_response()
    } else {
        let run = finished(&app, &id).await?;
        Json(completion(&run)?).into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-reagent-run-id", value);
    }
    Ok(response)
}

/// A message's text: a string, or the text parts of a list of parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

/// Waits until the run has ended.
async fn finished(app: &App, id: &str) -> Result<Run, ApiError> {
    let mut woken = app.hub.subscribe(id);
    loop {
        let run = app.runs.store().get(id).await.map_err(ApiError::store)?.ok_or_else(|| ApiError::no_run(id))?;
        if run.status.is_final() || run.status.is_waiting() {
            return Ok(run);
        }
        if let Ok(Err(_)) = tokio::time::timeout(LOOK_AGAIN, woken.changed()).await {
            woken = app.hub.subscribe(id);
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }
}

/// The answer, as a chat completion; a run that ended without one is an error naming it.
fn completion(run: &Run) -> Result<Value, ApiError> {
    let answer = answer_of(run)?;
    Ok(json!({
        "id": format!("chatcmpl-{}", run.id),
        "object": "chat.completion",
        "created": run.created_ms / 1000,
        "model": run.agent,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }))
}

fn answer_of(run: &Run) -> Result<String, ApiError> {
    let outcome = run.outcome.clone().unwrap_or(Value::Null);
    match (run.status, outcome["answer"].as_str()) {
        (Status::Answered, Some(answer)) => Ok(answer.to_string()),
        (status, _) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "run_failed",
            format!("run {} ended {status} without an answer; GET /v1/runs/{} tells why", run.id, run.id),
        )),
    }
}

/// The answer as chat completion chunks: the role, the answer, the finish, `[DONE]`.
fn streamed(app: App, run: Run) -> Sse<impl futures::Stream<Item = Result<SseEvent, Infallible>>> {
    let chunk = move |run: &Run, delta: Value, finish: Option<&str>| {
        let body = json!({
            "id": format!("chatcmpl-{}", run.id),
            "object": "chat.completion.chunk",
            "created": run.created_ms / 1000,
            "model": run.agent,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        SseEvent::default().data(body.to_string())
    };
    Sse::new(chunks(app, run, chunk))
}

/// The chunks, once the run has ended.
fn chunks(
    app: App,
    run: Run,
    chunk: impl Fn(&Run, Value, Option<&str>) -> SseEvent + Send + 'static,
) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::once(async move {
        let events = match finished(&app, &run.id).await.and_then(|done| answer_of(&done).map(|a| (done, a))) {
            Ok((done, answer)) => vec![
                chunk(&done, json!({"role": "assistant", "content": ""}), None),
                chunk(&done, json!({"content": answer}), None),
                chunk(&done, json!({}), Some("stop")),
                SseEvent::default().data("[DONE]"),
            ],
            Err(error) => vec![SseEvent::default().data(json!({"error": {"message": error.message()}}).to_string())],
        };
        futures::stream::iter(events.into_iter().map(Ok))
    })
    .flatten()
}
