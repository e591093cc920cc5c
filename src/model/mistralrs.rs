//! `local` with `engine: mistralrs`: a model run in this process by mistralrs, from a GGUF file, a
//! Hugging Face directory or a hub id (the only engine for the last two). CPU by default (CUDA and
//! Metal are cargo features). A loaded model is shared by every run of the runtime that loaded it;
//! mistralrs batches their requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use either::Either;
use futures::FutureExt;
use indexmap::IndexMap;
use mistralrs::core::RequestMessage;
use mistralrs::{
    Constraint, Function, GgufModelBuilder, MessageContent, RequestLike, Response, SamplingParams, StopTokens,
    TextModelBuilder, Tool, ToolChoice as EngineToolChoice, ToolType,
};
use serde_json::Value;

use super::call_grammar::{
    AnswerForm, FORMAT_NOTE, Opener, read_into, repeated_call, reply_grammar, string_cap, with_format_note,
};
use super::catalog;
use super::local::LocalModelError;
use super::{
    DeltaKind, Model, ModelError, ModelErrorKind, ModelIdentity, ModelReply, ModelRequest, Usage, read_free_text,
    send_delta,
};
use crate::chat_format::exaone;
use crate::conversation::{MalformedCall, Message, ToolCall, ToolDeclaration};
use crate::spec::{LocalModelSpec, LocalSource, PromptFormat, Sampling};

pub struct MistralrsModel {
    label: String,
    /// The model's source (a catalogue name, a folder, a hub id).
    name: String,
    engine: Arc<mistralrs::Model>,
    constrained: bool,
    format: Option<PromptFormat>,
    sampling: Sampling,
    next_call: AtomicU64,
    /// The model has a reasoning mode (as far as reagent knows: a catalogue model says; EXAONE's
    /// format has one; another model's own template decides).
    reasons: bool,
}

/// The models mistralrs has loaded for a runtime, by source.
#[derive(Clone, Default)]
pub struct Loaded(Arc<tokio::sync::Mutex<HashMap<String, Arc<mistralrs::Model>>>>);

impl MistralrsModel {
    pub async fn load(models: &Loaded, spec: &LocalModelSpec) -> Result<Self, LocalModelError> {
        let (key, builder) = builder_for(&spec.source)?;
        let mut loaded = models.0.lock().await;
        let engine = match loaded.get(&key) {
            Some(engine) => engine.clone(),
            None => {
                let engine = Arc::new(
                    builder
                        .build()
                        .await
                        .map_err(|e| LocalModelError::Load { source_name: key.clone(), reason: format!("{e:#}") })?,
                );
                loaded.insert(key.clone(), engine.clone());
                engine
            }
        };
        let mode = if spec.constrained { "constrained calls" } else { "free calls" };
        let reasons = match (&spec.format, &spec.source) {
            (Some(PromptFormat::Exaone), _) => true,
            (None, LocalSource::Catalog(name)) => catalog::find(name).map(|m| m.reasons).unwrap_or(true),
            (None, _) => true,
        };
        Ok(MistralrsModel {
            reasons,
            label: format!("local {key} (mistralrs, {mode})"),
            name: key,
            engine,
            constrained: spec.constrained,
            format: spec.format,
            sampling: spec.sampling,
            next_call: AtomicU64::new(1),
        })
    }

    /// Whether the model can be loaded from here, without loading it: a catalogue model must be
    /// pulled.
    pub fn check(spec: &LocalModelSpec) -> Result<(), LocalModelError> {
        builder_for(&spec.source).map(drop)
    }

    fn call_id(&self) -> String {
        format!("call_{}", self.next_call.fetch_add(1, Ordering::Relaxed))
    }
}

enum Builder {
    Gguf(GgufModelBuilder),
    Text(TextModelBuilder),
}

impl Builder {
    /// Loads the model. mistralrs panics on some files it cannot run (a GGUF architecture it does
    /// not know, such as `exaone4`); that is an error to report, not a crash.
    async fn build(self) -> anyhow::Result<mistralrs::Model> {
        let loading = async {
            match self {
                Builder::Gguf(b) => b.build().await,
                Builder::Text(b) => b.build().await,
            }
        };
        match std::panic::AssertUnwindSafe(loading).catch_unwind().await {
            Ok(built) => built,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("it stopped");
                anyhow::bail!("mistralrs cannot run this file ({message}); `engine: llama_cpp` runs GGUF files")
            }
        }
    }
}

/// The mistralrs builder for a source, and the name it is shared under.
fn builder_for(source: &LocalSource) -> Result<(String, Builder), LocalModelError> {
    let gguf = |path: &std::path::Path| {
        let dir = path.parent().map_or_else(|| ".".to_string(), |d| d.display().to_string());
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        Builder::Gguf(GgufModelBuilder::new(dir, vec![file]))
    };
    Ok(match source {
        LocalSource::Catalog(name) => {
            let model = catalog::find(name)?;
            let path = model
                .pulled()
                .ok_or_else(|| LocalModelError::NotPulled { name: name.clone(), size: model.size / 1_000_000 })?;
            (name.clone(), gguf(&path))
        }
        LocalSource::Gguf(path) => (path.display().to_string(), gguf(path)),
        LocalSource::HfDir(path) => {
            (path.display().to_string(), Builder::Text(TextModelBuilder::new(path.display().to_string())))
        }
        LocalSource::Hub { id, file: Some(file) } => {
            (format!("{id}/{file}"), Builder::Gguf(GgufModelBuilder::new(id, vec![file.clone()])))
        }
        LocalSource::Hub { id, file: None } => (id.clone(), Builder::Text(TextModelBuilder::new(id))),
    })
}

#[async_trait]
impl Model for MistralrsModel {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn identity(&self) -> ModelIdentity {
        ModelIdentity { provider: "reagent.mistralrs", model: self.name.clone(), server: None }
    }

    /// A constrained turn is JSON from its first token: there is no room to think.
    fn thinks(&self, requested: bool, tools_offered: bool) -> bool {
        requested && self.reasons && !(self.constrained && tools_offered)
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let answer = AnswerForm::of(&request).without_words();
        let constrained = self.constrained && !request.tools.is_empty();
        let prepared = Prepared {
            messages: match self.format {
                Some(PromptFormat::Exaone) => {
                    let noted = match constrained {
                        true => with_format_note(request.messages),
                        false => request.messages.to_vec(),
                    };
                    Prompt::Raw(exaone::render(&noted, request.tools, request.thinking))
                }
                None => {
                    let note = constrained.then_some(FORMAT_NOTE);
                    Prompt::Chat(chat_messages(request.messages, note))
                }
            },
            thinking: request.thinking,
            constraint: if constrained {
                let cap = string_cap(self.sampling.max_tokens);
                Constraint::Lark(reply_grammar(request.tools, answer, Opener::Text, cap))
            } else {
                Constraint::None
            },
            tools: engine_tools(request.tools),
            sampling: sampling_params(&self.sampling),
        };

        let mut stream = self.engine.stream_chat_request(prepared).await.map_err(engine_error)?;
        let (mut text, mut reasoning, mut engine_calls) = (String::new(), String::new(), Vec::new());
        let mut usage = Usage::default();
        let mut chunks = 0u32;
        'stream: while let Some(response) = stream.next().await {
            match response {
                Response::Chunk(chunk) => {
                    if let Some(counted) = chunk.usage {
                        usage.prompt_tokens = u32::try_from(counted.prompt_tokens).unwrap_or(u32::MAX);
                        usage.completion_tokens = u32::try_from(counted.completion_tokens).unwrap_or(u32::MAX);
                    }
                    for choice in chunk.choices {
                        if let Some(piece) = choice.delta.reasoning_content {
                            send_delta(&request.deltas, DeltaKind::Reasoning, &piece);
                            usage.reasoning_tokens = usage.reasoning_tokens.saturating_add(1);
                            reasoning.push_str(&piece);
                        }
                        if let Some(piece) = choice.delta.content {
                            send_delta(&request.deltas, DeltaKind::Text, &piece);
                            text.push_str(&piece);
                        }
                        if constrained && let Some(at) = repeated_call(&text) {
                            text.truncate(at);
                            break 'stream; // dropping the stream stops the sequence
                        }
                        engine_calls.extend(choice.delta.tool_calls.unwrap_or_default());
                    }
                }
                Response::CompletionChunk(chunk) => {
                    for choice in chunk.choices {
                        chunks = chunks.saturating_add(1);
                        send_delta(&request.deltas, DeltaKind::Text, &choice.text);
                        text.push_str(&choice.text);
                        if constrained && let Some(at) = repeated_call(&text) {
                            text.truncate(at);
                            break 'stream;
                        }
                    }
                }
                Response::ModelError(message, _) | Response::CompletionModelError(message, _) => {
                    return Err(ModelError::new(ModelErrorKind::Engine, format!("the local model failed: {message}")));
                }
                Response::InternalError(e) | Response::ValidationError(e) => {
                    let message = format!("the local model refused the request: {e}{}", hint(constrained));
                    return Err(ModelError::new(ModelErrorKind::Engine, message));
                }
                Response::Done(_) | Response::CompletionDone(_) => break,
                _ => {
                    let message = "the local model sent a response of an unexpected kind";
                    return Err(ModelError::new(ModelErrorKind::BadReply, message));
                }
            }
        }
        if usage.completion_tokens == 0 {
            usage.completion_tokens = chunks;
        }

        let raw = engine_calls.iter().fold(format!("{reasoning}{text}"), |mut raw, call| {
            raw.push_str(&format!("\n[tool call] {} {}", call.function.name, call.function.arguments));
            raw
        });
        let mut reply = ModelReply { usage: Some(usage), raw: Some(raw), ..ModelReply::default() };
        if !engine_calls.is_empty() {
            reply.reasoning = Some(reasoning).filter(|r| !r.is_empty());
            reply.text = text;
            reply.calls = engine_calls
                .into_iter()
                .map(|call| match serde_json::from_str::<Value>(&call.function.arguments) {
                    Ok(arguments) => Ok(ToolCall { id: self.call_id(), name: call.function.name, arguments }),
                    Err(e) => Err(MalformedCall {
                        id: self.call_id(),
                        raw: call.function.arguments,
                        error: format!("the arguments of `{}` are not JSON: {e}", call.function.name),
                    }),
                })
                .collect();
        } else if constrained {
            read_into(&mut reply, &text, || self.call_id());
        } else {
            // The model's own tags or a code fence the engine did not read as a call.
            read_free_text(&mut reply, &format!("{reasoning}{text}"), || self.call_id());
        }
        Ok(reply)
    }
}

fn hint(constrained: bool) -> &'static str {
    if constrained {
        " (a tool's schema may use JSON Schema the grammar engine does not support; `constrained: false` turns constrained calls off)"
    } else {
        ""
    }
}

fn engine_error(e: impl std::fmt::Display) -> ModelError {
    ModelError::new(ModelErrorKind::Engine, format!("the local model is not running: {e}"))
}

fn sampling_params(sampling: &Sampling) -> SamplingParams {
    let mut params =
        if sampling.temperature == 0.0 { SamplingParams::deterministic() } else { SamplingParams::neutral() };
    if sampling.temperature > 0.0 {
        params.temperature = Some(sampling.temperature);
    }
    params.max_len = Some(sampling.max_tokens as usize);
    // A grammar that is complete admits only the tokenizer's end token, which some GGUFs do not
    // list among the model's stop tokens (Qwen2.5: `<|endoftext|>`); without these the model
    // would repeat it up to max_tokens.
    params.stop_toks = Some(StopTokens::Seqs(END_MARKERS.iter().map(|m| m.to_string()).collect()));
    params
}

/// End-of-turn markers of the common chat formats (ChatML, Llama 3, EXAONE, Gemma, SentencePiece).
const END_MARKERS: &[&str] = &["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "[|endofturn|]", "<end_of_turn>", "</s>"];

fn engine_tools(tools: &[ToolDeclaration]) -> Vec<Tool> {
    tools
        .iter()
        .map(|tool| Tool {
            tp: ToolType::Function,
            function: Function {
                name: tool.name.clone(),
                description: Some(tool.description.clone()),
                parameters: tool.parameters.as_object().map(|o| o.clone().into_iter().collect()),
            },
        })
        .collect()
}

/// The conversation as the model's own chat template reads it.
pub(super) fn chat_messages(messages: &[Message], note: Option<&str>) -> Vec<IndexMap<String, MessageContent>> {
    let text = |role: &str, content: String| {
        IndexMap::from([
            ("role".to_string(), Either::Left(role.to_string())),
            ("content".to_string(), Either::Left(content)),
        ])
    };
    let mut out: Vec<IndexMap<String, MessageContent>> = Vec::with_capacity(messages.len() + 1);
    for message in messages {
        out.push(match message {
            Message::System { content } => text("system", with_note(content, note)),
            Message::User { content } => text("user", content.clone()),
            Message::Assistant { content, tool_calls } => {
                let mut entry = text("assistant", content.clone());
                if !tool_calls.is_empty() {
                    let calls = tool_calls
                        .iter()
                        .map(|call| {
                            IndexMap::from([
                                ("id".to_string(), Value::String(call.id.clone())),
                                ("type".to_string(), Value::String("function".into())),
                                (
                                    "function".to_string(),
                                    serde_json::json!({"name": call.name, "arguments": call.arguments}),
                                ),
                            ])
                        })
                        .collect();
                    entry.insert("tool_calls".to_string(), Either::Right(calls));
                }
                entry
            }
            Message::Tool { call_id, content } => {
                let body = Message::tool_text(content);
                let mut entry = text("tool", body);
                entry.insert("tool_call_id".to_string(), Either::Left(call_id.clone()));
                entry
            }
        });
    }
    if let Some(note) = note
        && !matches!(messages.first(), Some(Message::System { .. }))
    {
        out.insert(0, text("system", note.to_string()));
    }
    out
}

fn with_note(content: &str, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{content}\n\n{note}"),
        None => content.to_string(),
    }
}

enum Prompt {
    Chat(Vec<IndexMap<String, MessageContent>>),
    /// A prompt rendered by reagent's chat format, sent as a completion.
    Raw(String),
}

/// One request as mistralrs takes it.
struct Prepared {
    messages: Prompt,
    thinking: bool,
    constraint: Constraint,
    tools: Vec<Tool>,
    sampling: SamplingParams,
}

impl RequestLike for Prepared {
    fn messages_ref(&self) -> &[IndexMap<String, MessageContent>] {
        match &self.messages {
            Prompt::Chat(messages) => messages,
            Prompt::Raw(_) => &[],
        }
    }

    fn images_ref(&self) -> &[image::DynamicImage] {
        &[]
    }

    fn take_messages(&mut self) -> RequestMessage {
        match std::mem::replace(&mut self.messages, Prompt::Chat(Vec::new())) {
            Prompt::Chat(messages) => {
                RequestMessage::Chat { messages, enable_thinking: Some(self.thinking), reasoning_effort: None }
            }
            Prompt::Raw(text) => RequestMessage::Completion { text, echo_prompt: false, best_of: None },
        }
    }

    fn take_logits_processors(&mut self) -> Option<Vec<Arc<dyn mistralrs::CustomLogitsProcessor>>> {
        None
    }

    fn take_adapters(&mut self) -> Option<Vec<String>> {
        None
    }

    fn return_logprobs(&self) -> bool {
        false
    }

    fn enable_search(&self) -> Option<bool> {
        None
    }

    fn take_constraint(&mut self) -> Constraint {
        std::mem::replace(&mut self.constraint, Constraint::None)
    }

    fn take_tools(&mut self) -> Option<(Vec<Tool>, EngineToolChoice)> {
        // A raw-text prompt already shows the tools; reagent reads the calls itself.
        if self.tools.is_empty() || matches!(self.messages, Prompt::Raw(_)) {
            return None;
        }
        Some((std::mem::take(&mut self.tools), EngineToolChoice::Auto))
    }

    fn take_sampling_params(&mut self) -> SamplingParams {
        self.sampling.clone()
    }

    fn take_web_search_options(&mut self) -> Option<mistralrs::WebSearchOptions> {
        None
    }
}
