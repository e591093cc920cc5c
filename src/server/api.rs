//! The runs API (`/v1/runs`, `/v1/agents`), health, metrics and the OpenAPI document. Every
//! error is `{"error": {"code", "message"}}` with the HTTP status that fits; a message names the
//! field or header at fault.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use reagent_store::{Created, Decision, Run, RunFilter, Scope, Status, StoreError};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::App;
use super::auth::{Caller, caller};
use crate::launch::LaunchError;
use crate::runs::{RunsError, Submission, Waiting, waiting};
use crate::spec::GivenInputs;
use crate::trace_context::TraceHeaders;

/// The longest `?wait=` a long poll may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a follower looks at the store when nothing woke it (a run driven by another process).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/runs", post(submit).get(list))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/output", get(output))
        .route("/v1/runs/{id}/recording", get(recording))
        .route("/v1/runs/{id}/events", get(events))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/approvals", get(approvals).post(decide))
        .route("/v1/agents", get(agents))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /openapi.json") })
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub(crate) fn store(error: StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", error.to_string())
    }

    pub(crate) fn no_run(id: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("there is no run {id}"))
    }

    pub(crate) fn body(rejection: JsonRejection) -> Self {
        let code = match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
            _ => "invalid_body",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }

    fn query(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }

    pub(crate) fn runs(error: RunsError) -> Self {
        match error {
            RunsError::Launch(LaunchError::Inputs(message)) => ApiError::invalid(format!("inputs: {message}")),
            RunsError::Launch(e) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "agent_broken", format!("the agent cannot start: {e}"))
            }
            RunsError::Store(e) => ApiError::store(e),
            RunsError::NotRecordable(..) => ApiError::new(StatusCode::CONFLICT, "not_recordable", error.to_string()),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A run as the API shows it: its inputs as one object (as they were submitted; a CLI run's
/// `--input` values as text), with the calls it waits for, when it waits.
pub(crate) fn shown(run: &Run) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Ok(given) = serde_json::from_value::<GivenInputs>(run.inputs.clone()) {
        let mut inputs = given.from_file;
        inputs.extend(given.from_flags.into_iter().map(|(name, text)| (name, Value::String(text))));
        value["inputs"] = Value::Object(inputs);
    }
    if run.status.is_waiting() {
        value["waiting"] = serde_json::to_value(waits_for(run)).unwrap_or(Value::Null);
    }
    value
}

/// The calls a run waits for now: none unless it is waiting.
fn waits_for(run: &Run) -> Waiting {
    run.status.is_waiting().then(|| waiting(run)).flatten().unwrap_or_default()
}

/// The run, if the caller's tenant may see it (another tenant's run is not found).
pub(crate) async fn visible_run(app: &App, who: &Caller, id: &str) -> Result<Run, ApiError> {
    match app.runs.store().get(id).await.map_err(ApiError::store)? {
        Some(run) if run.tenant == who.tenant => Ok(run),
        _ => Err(ApiError::no_run(id)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    agent: String,
    task: String,
    #[serde(default)]
    inputs: Map<String, Value>,
    /// Where the run's final state is delivered (a signed webhook).
    callback_url: Option<String>,
}

/// Records a run for `who` and starts driving it: shared by `/v1/runs` and the OpenAI facade.
/// `trace`: the request's, which the run continues.
#[allow(clippy::too_many_arguments)] // the request's parts, as each handler reads them
pub(crate) async fn start_run(
    app: &App,
    who: &Caller,
    agent: &str,
    task: &str,
    inputs: Map<String, Value>,
    idempotency_key: Option<String>,
    callback_url: Option<String>,
    trace: Option<TraceHeaders>,
) -> Result<(Run, bool), ApiError> {
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "the server is shutting down");
        error.retry_after = Some(5);
        return Err(error);
    }
    let Some(offered) = app.agents.get(agent) else {
        let names: Vec<&str> = app.agents.keys().map(String::as_str).collect();
        return Err(ApiError::invalid(format!("agent: no agent `{agent}`; the agents are: {}", names.join(", "))));
    };
    if task.trim().is_empty() {
        return Err(ApiError::invalid("task: must not be empty"));
    }
    if let Some(url) = &callback_url {
        app.webhooks.check(url).await.map_err(|e| ApiError::invalid(format!("callback_url: {e}")))?;
    }
    let idempotency = idempotency_key.map(|key| {
        let sorted: BTreeMap<&String, &Value> = inputs.iter().collect();
        let request = json!({"agent": agent, "task": task, "inputs": sorted});
        let digest: String =
            Sha256::digest(request.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        (key, digest)
    });
    let given = GivenInputs { from_file: inputs, from_flags: Vec::new() };
    let submission = Submission {
        file: &offered.file,
        task,
        inputs: &given,
        tenant: &who.tenant,
        key: who.key.as_ref().map(|k| (k.id.clone(), k.max_runs)),
        idempotency,
        callback_url,
        trace,
    };
    match app.runs.submit(submission).await.map_err(ApiError::runs)? {
        Created::New(run) => {
            app.wake_worker();
            Ok((run, false))
        }
        Created::Existing(run) => Ok((run, true)),
        Created::KeyReused => Err(ApiError::invalid(
            "Idempotency-Key: this key was used with another request; use a new key for a new run",
        )),
        Created::OverLimit => {
            let limit = who.key.as_ref().map_or(0, |k| k.max_runs);
            let message = format!("this key has {limit} unfinished run(s), its limit; retry when one ends");
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_runs", message);
            error.retry_after = Some(5);
            Err(error)
        }
    }
}

/// The W3C Trace Context headers of a request, if its `traceparent` is well formed.
pub(crate) fn trace_of(headers: &HeaderMap) -> Option<TraceHeaders> {
    let traceparent = headers.get("traceparent")?.to_str().ok()?;
    TraceHeaders::received(traceparent, headers.get("tracestate").and_then(|v| v.to_str().ok()))
}

async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Scope::Write).await?;
    let Json(body) = body.map_err(ApiError::body)?;
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => Some(key.to_string()),
        Some(_) => return Err(ApiError::invalid("Idempotency-Key: 1 to 255 visible ASCII characters")),
    };
    let trace = trace_of(&headers);
    let (run, replayed) =
        start_run(&app, &who, &body.agent, &body.task, body.inputs, key, body.callback_url, trace).await?;
    let mut response = (StatusCode::ACCEPTED, Json(shown(&run))).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", run.id)) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    agent: Option<String>,
    /// A run id: the page after it (runs are listed newest first).
    before: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let Query(query) = query.map_err(ApiError::query)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(format!("status: `{text}` is not a run status; one of {}", known.join(", ")))
        })?),
    };
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit: from 1 to 100"));
    }
    let filter = RunFilter { tenant: Some(who.tenant), status, agent: query.agent, before: query.before, limit };
    let runs = app.runs.store().list(&filter).await.map_err(ApiError::store)?;
    let next = (runs.len() == limit as usize).then(|| runs.last().map(|r| r.id.clone())).flatten();
    Ok(Json(json!({"runs": runs.iter().map(shown).collect::<Vec<_>>(), "next_before": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    /// Long poll: wait up to this long (e.g. `30s`) for the run to end or to wait for a person.
    wait: Option<String>,
}

async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let Query(query) = query.map_err(ApiError::query)?;
    let wait = match query.wait.as_deref() {
        None => Duration::ZERO,
        Some(text) => {
            crate::spec::parse_duration(text).map_err(|e| ApiError::invalid(format!("wait: {e}")))?.min(MAX_WAIT)
        }
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut woken = app.hub.subscribe(&id);
    loop {
        let run = visible_run(&app, &who, &id).await?;
        if run.status.is_final() || run.status.is_waiting() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(shown(&run)));
        }
        let look_again = deadline.min(tokio::time::Instant::now() + LOOK_AGAIN);
        if let Ok(Err(_)) = tokio::time::timeout_at(look_again, woken.changed()).await {
            // Its driver here is done with it: look on the timer from now on.
            woken = app.hub.subscribe(&id);
            tokio::time::sleep_until(look_again).await;
        }
    }
}

async fn output(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let run = visible_run(&app, &who, &id).await?;
    let outcome = run.outcome.clone().unwrap_or(Value::Null);
    match run.status {
        Status::Answered | Status::Incomplete | Status::InvalidOutput if !outcome["answer"].is_null() => Ok(Json(
            json!({"id": run.id, "status": run.status, "answer": outcome["answer"], "output": outcome["output"]}),
        )),
        status => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_output",
            format!("run {id} is {status} and has no answer{}", if status.is_final() { "" } else { " yet" }),
        )),
    }
}

/// A finished run as a recording, to replay it as a test: what `reagent runs record` writes, as
/// one JSON object (`about`, `script`, `events`), secrets replaced.
async fn recording(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let run = visible_run(&app, &who, &id).await?;
    let recording = app.runs.record(&run.id).await.map_err(ApiError::runs)?;
    Ok(Json(json!({"about": recording.about, "script": recording.script, "events": recording.events})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only events after this seq (as `Last-Event-ID` does).
    after: Option<u64>,
}

/// The run's events as Server-Sent Events, each with its seq as `id:`. `Last-Event-ID` (or
/// `?after=`) resumes after the last event seen. Ends after `run_finished` (and after a pause's);
/// a closed connection changes nothing for the run.
async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let Query(query) = query.map_err(ApiError::query)?;
    let last_seen =
        match headers.get("last-event-id").map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok())) {
            None => None,
            Some(Some(seq)) => Some(seq),
            Some(None) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", "Last-Event-ID: a seq number"));
            }
        };
    visible_run(&app, &who, &id).await?;
    let cursor = last_seen.or(query.after).unwrap_or(0);
    let woken = app.hub.subscribe(&id);
    let follower = Follower { app: app.clone(), id, cursor, queue: Default::default(), woken, done: false };
    let stream = futures::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive")))
}

/// One SSE stream's place in a run's events.
struct Follower {
    app: App,
    id: String,
    cursor: u64,
    queue: std::collections::VecDeque<reagent_store::StoredEvent>,
    woken: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                crate::runs::crash::point("streaming");
                self.cursor = event.seq;
                let name = event.body["event"].as_str().unwrap_or("event").to_string();
                let mut body = event.body;
                body["seq"] = json!(event.seq);
                return Some(SseEvent::default().id(event.seq.to_string()).event(name).data(body.to_string()));
            }
            if self.done || *self.app.shutdown.borrow() {
                return None;
            }
            let store = self.app.runs.store();
            // Read the status first: a run that was over before its events were read has them all.
            let over = match store.get(&self.id).await {
                Ok(Some(run)) => run.status.is_final() || run.status.is_waiting(),
                _ => true,
            };
            match store.events(&self.id, self.cursor, 256).await {
                Ok(events) if !events.is_empty() => self.queue.extend(events),
                Ok(_) if over => self.done = true,
                Ok(_) => {
                    let mut shutdown = self.app.shutdown.clone();
                    tokio::select! {
                        woken = self.woken.changed() => if woken.is_err() {
                            // Its driver here is done with it: look on the timer from now on.
                            self.woken = self.app.hub.subscribe(&self.id);
                            tokio::time::sleep(LOOK_AGAIN).await;
                        },
                        _ = tokio::time::sleep(LOOK_AGAIN) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(_) => self.done = true,
            }
        }
    }
}

async fn cancel(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Scope::Write).await?;
    let run = visible_run(&app, &who, &id).await?;
    if run.status.is_final() {
        return Ok((StatusCode::OK, Json(shown(&run))).into_response());
    }
    let run = app.runs.cancel(&id).await.map_err(ApiError::runs)?.ok_or_else(|| ApiError::no_run(&id))?;
    // A run nobody drives (it waits for a person, or was left by a shutdown) is driven to its end
    // by a worker; the one driving it hears of the cancel from the store.
    app.wake_worker();
    Ok((StatusCode::ACCEPTED, Json(shown(&run))).into_response())
}

async fn approvals(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller(&app, &headers, Scope::Read).await?;
    let run = visible_run(&app, &who, &id).await?;
    let mut value = serde_json::to_value(waits_for(&run)).unwrap_or(Value::Null);
    value["status"] = json!(run.status);
    Ok(Json(value))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    decisions: Vec<DecisionBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    call_id: String,
    verdict: String,
    result: Option<Value>,
}

async fn decide(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecideBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let who = caller(&app, &headers, Scope::Approve).await?;
    let Json(body) = body.map_err(ApiError::body)?;
    let run = visible_run(&app, &who, &id).await?;
    if !run.status.is_waiting() {
        let message = format!("run {id} is {}: it waits for no decision", run.status);
        return Err(ApiError::new(StatusCode::CONFLICT, "not_waiting", message));
    }
    if body.decisions.is_empty() {
        return Err(ApiError::invalid("decisions: give at least one"));
    }
    let waiting = waits_for(&run);
    let (awaiting, in_doubt) = (Waiting::ids(&waiting.awaiting), Waiting::ids(&waiting.in_doubt));
    let mut decisions = Vec::new();
    for (i, decision) in body.decisions.into_iter().enumerate() {
        let allowed: &[&str] = if awaiting.contains(&decision.call_id) {
            &["approve", "deny"]
        } else if in_doubt.contains(&decision.call_id) {
            &["retry", "done", "skip"]
        } else {
            let mut known = awaiting.clone();
            known.extend(in_doubt.iter().cloned());
            return Err(ApiError::invalid(format!(
                "decisions[{i}].call_id: run {id} waits for no call `{}`; it waits for: {}",
                decision.call_id,
                known.join(", ")
            )));
        };
        if !allowed.contains(&decision.verdict.as_str()) {
            return Err(ApiError::invalid(format!(
                "decisions[{i}].verdict: for call `{}` one of {}",
                decision.call_id,
                allowed.join(", ")
            )));
        }
        if decision.verdict != "done" && decision.result.is_some() {
            return Err(ApiError::invalid(format!("decisions[{i}].result: only a `done` verdict takes a result")));
        }
        decisions.push(Decision {
            call_id: decision.call_id,
            verdict: decision.verdict,
            result: decision.result,
            made_by: who.name(),
        });
    }
    app.runs.store().decide(&id, &decisions).await.map_err(ApiError::store)?;
    app.wake_worker();
    Ok((StatusCode::ACCEPTED, Json(shown(&run))).into_response())
}

async fn agents(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    caller(&app, &headers, Scope::Read).await?;
    let agents: Vec<Value> = app
        .agents
        .values()
        .map(|a| json!({"name": a.name, "description": a.description, "inputs": a.inputs, "approvals": a.approvals}))
        .collect();
    Ok(Json(json!({"agents": agents})))
}

async fn ready(State(app): State<App>) -> Response {
    let draining = app.draining.load(std::sync::atomic::Ordering::SeqCst);
    match app.runs.store().counts().await {
        Ok(_) if !draining => Json(json!({"status": "ready"})).into_response(),
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response(),
        Err(e) => ApiError::store(e).into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Result<Response, ApiError> {
    let counts = app.runs.store().counts().await.map_err(ApiError::store)?;
    let driving = app.driving.load(std::sync::atomic::Ordering::SeqCst);
    let text = super::metrics::render(&counts, driving, app.runs.runtime().telemetry());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}
