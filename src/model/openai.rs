//! `openai`: any server that speaks OpenAI's `/v1/chat/completions` — vLLM or FriendliAI serving
//! EXAONE 4.0, a llama.cpp server, mistralrs-server. Native `tools`/`tool_calls`, streamed over
//! SSE; reasoning read from `reasoning_content` or inline up to `</think>`; the thinking switch
//! sent per request; retries with backoff where a retry can help.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::sse::{SseData, SseReader};
use super::{DeltaKind, Model, ModelError, ModelErrorKind, ModelIdentity, ModelReply, ModelRequest, Usage, send_delta};
use crate::chat_format::parse_output;
use crate::conversation::{MalformedCall, Message, ToolCall, ToolChoice, ToolDeclaration};
use crate::spec::{OpenAiModelSpec, ReasoningControl};

pub struct OpenAiModel {
    spec: OpenAiModelSpec,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl OpenAiModel {
    /// Reads the API key from the environment variable the agent file names.
    pub fn new(spec: OpenAiModelSpec) -> Result<Self, String> {
        let api_key = match &spec.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).ok().filter(|k| !k.is_empty()).ok_or_else(|| {
                format!("the environment variable {var} (named by `api_key_env`) is not set: export the API key in it")
            })?),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot start an HTTP client: {e}"))?;
        Ok(OpenAiModel { spec, api_key, client })
    }

    fn body(&self, request: &ModelRequest<'_>) -> Value {
        request_body(&self.spec, request)
    }

    /// Sends the request, retrying 429, 5xx and failed connections with exponential backoff.
    async fn send(&self, body: &Value) -> Result<reqwest::Response, ModelError> {
        let url = format!("{}/chat/completions", self.spec.url);
        let mut attempt = 0;
        loop {
            let mut builder = self.client.post(&url).json(body).timeout(self.spec.timeout);
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key);
            }
            let retry_after = match builder.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) if response.status().as_u16() == 429 || response.status().is_server_error() => {
                    let wait = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    if attempt >= self.spec.retries {
                        return Err(self.refused(response).await);
                    }
                    wait
                }
                Ok(response) => return Err(self.refused(response).await),
                Err(e) if attempt < self.spec.retries && (e.is_connect() || e.is_timeout()) => None,
                Err(e) => {
                    return Err(ModelError::new(
                        ModelErrorKind::Unreachable,
                        format!("cannot reach {url} after {} attempt(s): {e}{}", attempt + 1, source_chain(&e)),
                    ));
                }
            };
            let backoff = Duration::from_millis(500 << attempt.min(4));
            tokio::time::sleep(retry_after.unwrap_or(backoff).min(Duration::from_secs(30))).await;
            attempt += 1;
        }
    }

    async fn refused(&self, response: reqwest::Response) -> ModelError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/error/message").or_else(|| v.get("error")).cloned())
            .map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string()))
            .unwrap_or_else(|| body.chars().take(300).collect());
        let hint = match status.as_u16() {
            401 | 403 => match &self.spec.api_key_env {
                Some(var) => format!(" — check the API key in {var}"),
                None => " — the server wants an API key: name its variable with `api_key_env`".into(),
            },
            404 => " — check the model's `url` and `name`".into(),
            _ => String::new(),
        };
        let kind = match status.as_u16() {
            429 | 500.. => ModelErrorKind::Unavailable,
            _ => ModelErrorKind::Refused,
        };
        ModelError::new(kind, format!("the server refused the request ({status}): {detail}{hint}"))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut source = e.source();
    while let Some(inner) = source {
        out.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    out
}

#[async_trait]
impl Model for OpenAiModel {
    fn label(&self) -> String {
        format!("openai {} at {}", self.spec.name, self.spec.url)
    }

    fn identity(&self) -> ModelIdentity {
        let url = reqwest::Url::parse(&self.spec.url).ok();
        let server = url.and_then(|url| Some((url.host_str()?.to_string(), url.port_or_known_default()?)));
        ModelIdentity { provider: "openai", model: self.spec.name.clone(), server }
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let response = self.send(&self.body(&request)).await?;
        let mut body = response.bytes_stream();
        let mut reader = SseReader::default();
        let mut reply = StreamedReply::default();
        'stream: while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| bad_reply(format!("the reply stream broke off: {e}{}", source_chain(&e))))?;
            for data in reader.feed(&piece) {
                match data {
                    SseData::Done => break 'stream,
                    SseData::Json(text) => {
                        let chunk: Value = serde_json::from_str(&text).map_err(|e| {
                            bad_reply(format!("the server streamed something that is not JSON ({e}): {text}"))
                        })?;
                        reply.absorb(&chunk, &request)?;
                    }
                }
            }
        }
        Ok(reply.finish())
    }
}

/// A reply as its chunks arrive.
#[derive(Default)]
struct StreamedReply {
    content: String,
    reasoning: String,
    reasoning_chunks: u32,
    /// Tool calls by index: id, name, arguments so far.
    calls: Vec<(String, String, String)>,
    usage: Option<Usage>,
}

impl StreamedReply {
    fn absorb(&mut self, chunk: &Value, request: &ModelRequest<'_>) -> Result<(), ModelError> {
        if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
            return Err(bad_reply(format!("the server reported an error mid-stream: {message}")));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |pointer: &str| {
                let counted = usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
                u32::try_from(counted).unwrap_or(u32::MAX)
            };
            self.usage = Some(Usage {
                prompt_tokens: count("/prompt_tokens"),
                completion_tokens: count("/completion_tokens"),
                reasoning_tokens: count("/completion_tokens_details/reasoning_tokens"),
                cached_tokens: count("/prompt_tokens_details/cached_tokens"),
            });
        }
        let Some(delta) = chunk.pointer("/choices/0/delta") else { return Ok(()) };
        // vLLM names it `reasoning_content`; newer servers `reasoning`.
        if let Some(piece) = delta.get("reasoning_content").or_else(|| delta.get("reasoning")).and_then(Value::as_str) {
            send_delta(&request.deltas, DeltaKind::Reasoning, piece);
            self.reasoning.push_str(piece);
            self.reasoning_chunks = self.reasoning_chunks.saturating_add(1);
        }
        if let Some(piece) = delta.get("content").and_then(Value::as_str) {
            send_delta(&request.deltas, DeltaKind::Text, piece);
            self.content.push_str(piece);
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(self.calls.len() as u64) as usize;
            if index > 1024 {
                return Err(bad_reply(format!("the server streamed tool call index {index}")));
            }
            if self.calls.len() <= index {
                self.calls.resize_with(index + 1, Default::default);
            }
            let entry = &mut self.calls[index];
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                entry.0 = id.to_string();
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                entry.1.push_str(name);
            }
            if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str) {
                entry.2.push_str(arguments);
            }
        }
        Ok(())
    }

    fn finish(self) -> ModelReply {
        let raw = self.calls.iter().fold(self.content.clone(), |mut raw, (_, name, arguments)| {
            raw.push_str(&format!("\n[tool call] {name} {arguments}"));
            raw
        });
        // Servers without a reasoning parser leave `<think>…</think>` (or only `</think>`) in the
        // content, and servers without a tool parser leave the model's call tags there.
        let parsed = parse_output(&self.content);
        let reasoning = if self.reasoning.is_empty() { parsed.reasoning } else { Some(self.reasoning) };
        let mut calls: Vec<Result<ToolCall, MalformedCall>> = self
            .calls
            .into_iter()
            .enumerate()
            .filter(|(_, (_, name, _))| !name.is_empty())
            .map(|(i, (id, name, arguments))| {
                let id = if id.is_empty() { format!("call_{}", i + 1) } else { id };
                let arguments = if arguments.trim().is_empty() { "{}".to_string() } else { arguments };
                match serde_json::from_str::<Value>(&arguments) {
                    Ok(arguments) => Ok(ToolCall { id, name, arguments }),
                    Err(e) => Err(MalformedCall {
                        id,
                        raw: arguments,
                        error: format!("the arguments of `{name}` are not JSON: {e}"),
                    }),
                }
            })
            .collect();
        let first_parsed = calls.len();
        calls.extend(parsed.calls.into_iter().enumerate().map(|(i, call)| {
            let id = format!("call_text_{}", first_parsed + i + 1);
            match call {
                Ok(call) => Ok(ToolCall { id, name: call.name, arguments: call.arguments }),
                Err(bad) => Err(MalformedCall { id, raw: bad.raw, error: bad.error }),
            }
        }));
        // Servers that count nothing (llama.cpp's Python server) leave usage unknown, not zero.
        let usage = self.usage.map(|mut usage| {
            if usage.reasoning_tokens == 0 {
                usage.reasoning_tokens = self.reasoning_chunks;
            }
            usage
        });
        ModelReply { reasoning, text: parsed.text, calls, usage, raw: Some(raw) }
    }
}

fn wire_tool(tool: &ToolDeclaration) -> Value {
    json!({
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    })
}

fn wire_message(message: &Message) -> Value {
    match message {
        Message::System { content } => json!({"role": "system", "content": content}),
        Message::User { content } => json!({"role": "user", "content": content}),
        Message::Assistant { content, tool_calls } => {
            let mut wire = Map::new();
            wire.insert("role".into(), json!("assistant"));
            // OpenAI allows null beside tool calls; llama.cpp's server does not. "" suits both.
            wire.insert("content".into(), json!(content));
            if !tool_calls.is_empty() {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments.to_string()},
                        })
                    })
                    .collect();
                wire.insert("tool_calls".into(), Value::Array(calls));
            }
            Value::Object(wire)
        }
        Message::Tool { call_id, content } => {
            let text = Message::tool_text(content);
            json!({"role": "tool", "tool_call_id": call_id, "content": text})
        }
    }
}

/// The `/chat/completions` body for a request: what `reagent prompt` shows, and what is sent
/// (the API key goes in a header, never here).
pub fn request_body(spec: &OpenAiModelSpec, request: &ModelRequest<'_>) -> Value {
    let mut body = json!({
    "model": spec.name,
        "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": spec.sampling.max_tokens,
        "temperature": spec.sampling.temperature,
    });
    if !request.tools.is_empty() {
        body["tools"] = request.tools.iter().map(wire_tool).collect();
        body["tool_choice"] = json!(match request.tool_choice {
            ToolChoice::Auto => "auto",
            ToolChoice::Required => "required",
        });
    }
    match spec.reasoning_control {
        ReasoningControl::ChatTemplateKwargs => {
            body["chat_template_kwargs"] = json!({"enable_thinking": request.thinking})
        }
        ReasoningControl::ReasoningEffort => {
            body["reasoning_effort"] = json!(if request.thinking { "high" } else { "low" })
        }
        ReasoningControl::None => {}
    }
    body
}

fn bad_reply(message: String) -> ModelError {
    ModelError::new(ModelErrorKind::BadReply, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[Value]) -> ModelReply {
        let request = ModelRequest {
            messages: &[],
            tools: &[],
            thinking: true,
            tool_choice: ToolChoice::Auto,
            max_thinking_tokens: None,
            answer_schema: None,
            deltas: None,
        };
        let mut reply = StreamedReply::default();
        for chunk in chunks {
            reply.absorb(chunk, &request).expect("a valid chunk");
        }
        reply.finish()
    }

    fn delta(delta: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": delta}]})
    }

    #[test]
    fn reasoning_content_and_tool_call_fragments_are_assembled() {
        let reply = stream(&[
            delta(json!({"reasoning_content": "Add "})),
            delta(json!({"reasoning_content": "them."})),
            delta(
                json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "calc", "arguments": "{\"expr"}}]}),
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ession\": \"1+1\"}"}}]})),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7, "completion_tokens_details": {"reasoning_tokens": 2}}}),
        ]);
        assert_eq!(reply.reasoning.as_deref(), Some("Add them."));
        assert_eq!(
            reply.calls,
            vec![Ok(ToolCall { id: "c1".into(), name: "calc".into(), arguments: json!({"expression": "1+1"}) })]
        );
        assert_eq!(
            reply.usage,
            Some(Usage { prompt_tokens: 9, completion_tokens: 7, reasoning_tokens: 2, cached_tokens: 0 })
        );
    }

    #[test]
    fn inline_reasoning_up_to_the_closing_tag_is_split_off() {
        // EXAONE on vLLM without a reasoning parser: the opening tag is in the prompt.
        let reply = stream(&[delta(json!({"content": "Plan first.</think>"})), delta(json!({"content": "2"}))]);
        assert_eq!(reply.reasoning.as_deref(), Some("Plan first."));
        assert_eq!(reply.text, "2");
        assert_eq!(reply.usage, None, "a server that counts nothing reports no usage");
    }

    #[test]
    fn broken_arguments_become_a_malformed_call_not_a_crash() {
        let reply = stream(&[delta(
            json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "calc", "arguments": "{\"x\": "}}]}),
        )]);
        assert!(matches!(&reply.calls[..], [Err(MalformedCall { .. })]), "{:?}", reply.calls);
        let request = ModelRequest {
            messages: &[],
            tools: &[],
            thinking: false,
            tool_choice: ToolChoice::Auto,
            max_thinking_tokens: None,
            answer_schema: None,
            deltas: None,
        };
        let error = StreamedReply::default().absorb(&json!({"error": {"message": "overloaded"}}), &request);
        assert!(error.is_err_and(|e| e.kind == ModelErrorKind::BadReply && e.message.contains("overloaded")));
    }

    #[test]
    fn the_thinking_switch_is_sent_as_the_agent_file_says() {
        let spec = |control| OpenAiModelSpec {
            url: "http://x/v1".into(),
            name: "m".into(),
            api_key_env: None,
            reasoning_control: control,
            timeout: Duration::from_secs(1),
            retries: 0,
            sampling: crate::spec::Sampling { max_tokens: 10, temperature: 0.0 },
        };
        let request = |thinking| ModelRequest {
            messages: &[],
            tools: &[],
            thinking,
            tool_choice: ToolChoice::Auto,
            max_thinking_tokens: None,
            answer_schema: None,
            deltas: None,
        };
        let kwargs = OpenAiModel::new(spec(ReasoningControl::ChatTemplateKwargs)).expect("a model");
        assert_eq!(kwargs.body(&request(false))["chat_template_kwargs"], json!({"enable_thinking": false}));
        let effort = OpenAiModel::new(spec(ReasoningControl::ReasoningEffort)).expect("a model");
        assert_eq!(effort.body(&request(true))["reasoning_effort"], "high");
        assert!(effort.body(&request(true)).get("chat_template_kwargs").is_none());
    }
}
