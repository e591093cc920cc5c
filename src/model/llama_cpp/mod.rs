//! `local` on llama.cpp (the default engine for GGUF files): the prompt rendered by reagent
//! (EXAONE 4.0's format, or the model's own Jinja template), tokenised so that only the format's
//! markers are control tokens, and decoded by [`engine::Engine`], which every run of the runtime
//! shares. A step that thinks writes its reasoning freely up to `</think>`; a constrained reply
//! after it is decoded under [`reply_grammar`].

pub mod engine;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use llama_cpp_2::token::LlamaToken;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

use super::call_grammar::{AnswerForm, Opener, read_into, repeated_call, reply_grammar, string_cap, with_format_note};
use super::{
    DeltaKind, Model, ModelError, ModelErrorKind, ModelIdentity, ModelReply, ModelRequest, Usage, read_free_text,
    send_delta,
};
use crate::chat_format::template::ChatTemplate;
use crate::chat_format::{Prompt, exaone};
use crate::conversation::Message;
use crate::spec::{LocalModelSpec, Sampling};
pub use engine::{Counters, Engine, EngineError, KvCache};
use engine::{Output, Request};

/// How a model's prompts are written.
pub enum Format {
    /// reagent's byte-exact EXAONE 4.0 renderer (`format: exaone`, and every `exaone4` GGUF).
    Exaone,
    /// The chat template the GGUF carries.
    Template(Box<ChatTemplate>),
}

impl Format {
    /// The format of a loaded model: EXAONE's where asked or where the model is EXAONE 4.0,
    /// else the model's own template.
    pub fn of(engine: &Engine, exaone: bool) -> Result<Format, String> {
        let model = engine.model();
        if exaone || model.meta_val_str("general.architecture").is_ok_and(|arch| arch == "exaone4") {
            return Ok(Format::Exaone);
        }
        let source = model.meta_val_str("tokenizer.chat_template").map_err(|_| {
            "the GGUF carries no chat template: give the agent `format: exaone` if the model reads EXAONE 4.0's format"
                .to_string()
        })?;
        let token_text =
            |token: LlamaToken| String::from_utf8_lossy(&model.vocab().token_to_piece(token, true, None)).into_owned();
        let vocab = model.vocab();
        let template = ChatTemplate::new(&source, &token_text(vocab.bos()), &token_text(vocab.eos()))?;
        Ok(Format::Template(Box::new(template)))
    }

    /// Whether the model has a reasoning mode: as its source says (a catalogue model), else as
    /// its format does (EXAONE's has one; a template has one if it takes `enable_thinking`).
    pub fn reasons(&self, source_says: Option<bool>) -> bool {
        source_says.unwrap_or(match self {
            Format::Exaone => true,
            Format::Template(source) => source.takes_thinking(),
        })
    }

    fn render(&self, messages: &[Message], request: &ModelRequest<'_>, thinking: bool) -> Result<Prompt, String> {
        let mut prompt = match self {
            Format::Exaone => exaone::render_prompt(messages, request.tools, thinking),
            Format::Template(template) => template.render(messages, request.tools, thinking)?,
        };
        // A template whose model opens its reasoning itself: opened here, so that the reply is
        // reasoning up to `</think>` whichever model writes it.
        if thinking && !prompt.ends_with("<think>\n") {
            prompt.format("<think>\n");
        }
        Ok(prompt)
    }
}

pub struct LlamaCppModel {
    /// The model's name: its catalogue name, or its file's.
    name: String,
    label: String,
    engine: Arc<Engine>,
    factory: Arc<ParserFactory>,
    format: Format,
    constrained: bool,
    sampling: Sampling,
    reasons: bool,
    /// What follows `</think>` before a constrained reply, as the format writes it.
    after_thinking: Vec<LlamaToken>,
    close_thinking: Vec<LlamaToken>,
    next_call: AtomicU64,
}

impl LlamaCppModel {
    /// The model `name` of `spec` on a loaded engine, its prompts in `format`.
    pub fn new(
        name: String,
        engine: Arc<Engine>,
        factory: Arc<ParserFactory>,
        format: Format,
        spec: &LocalModelSpec,
        reasons: bool,
    ) -> Self {
        let format_tokens = |text: &str| {
            let mut prompt = Prompt::default();
            prompt.format(text);
            engine.tokenize_pieces(&prompt)
        };
        let after_thinking = format_tokens("\n\n");
        let close_thinking = format_tokens("</think>");
        let mode = if spec.constrained { "constrained calls" } else { "free calls" };
        LlamaCppModel {
            label: format!("local {name} (llama.cpp, {mode})"),
            name,
            engine,
            factory,
            format,
            constrained: spec.constrained,
            sampling: spec.sampling,
            reasons,
            after_thinking,
            close_thinking,
            next_call: AtomicU64::new(1),
        }
    }

    /// Where the engine closes the reasoning: `max_thinking_tokens`, and before a constrained
    /// reply at half the step's tokens at most, leaving the reply the room its strings are capped to.
    fn thinking_budget(&self, request: &ModelRequest<'_>, constrained: bool) -> Option<u32> {
        let room = constrained.then_some(self.sampling.max_tokens / 2);
        match (request.max_thinking_tokens, room) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn call_id(&self) -> String {
        format!("call_{}", self.next_call.fetch_add(1, Ordering::Relaxed))
    }

    fn grammar(
        &self,
        request: &ModelRequest<'_>,
        answer: AnswerForm<'_>,
        thinking: Option<u32>,
    ) -> Result<Matcher, ModelError> {
        // Strings fit in what the reasoning leaves of the step's tokens.
        let cap = string_cap(self.sampling.max_tokens.saturating_sub(thinking.unwrap_or(0)));
        let lark = reply_grammar(request.tools, answer, Opener::of(self.factory.tok_env()), cap);
        let refused = |e: String| {
            let message = format!(
                "the constrained-call grammar cannot be built: {e} (a tool's schema may use JSON Schema the grammar engine does not support; `constrained: false` turns constrained calls off)"
            );
            ModelError::new(ModelErrorKind::Engine, message)
        };
        let parser =
            self.factory.create_parser(TopLevelGrammar::from_lark(lark)).map_err(|e| refused(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        match matcher.get_error() {
            Some(e) => Err(refused(e)),
            None => Ok(matcher),
        }
    }
}

#[async_trait]
impl Model for LlamaCppModel {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn identity(&self) -> ModelIdentity {
        ModelIdentity { provider: "reagent.llama_cpp", model: self.name.clone(), server: None }
    }

    /// Thinking comes before a constrained reply as before any other.
    fn thinks(&self, requested: bool, _tools_offered: bool) -> bool {
        requested && self.reasons
    }

    async fn complete(&self, request: ModelRequest<'_>) -> Result<ModelReply, ModelError> {
        let answer = AnswerForm::of(&request);
        let constrained = self.constrained && !request.tools.is_empty();
        let thinking = self.thinks(request.thinking, !request.tools.is_empty());
        let noted;
        let messages = if constrained {
            noted = with_format_note(request.messages);
            &noted[..]
        } else {
            request.messages
        };
        let prompt =
            self.format.render(messages, &request, thinking).map_err(|e| ModelError::new(ModelErrorKind::Engine, e))?;
        let thinking_budget = thinking.then(|| self.thinking_budget(&request, constrained)).flatten();
        let grammar = if constrained { Some(self.grammar(&request, answer, thinking_budget)?) } else { None };
        let calls_only = match answer {
            AnswerForm::Words if constrained => Some(self.grammar(&request, AnswerForm::None, thinking_budget)?),
            _ => None,
        };
        let (output, mut outputs) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seed = self.next_call.load(Ordering::Relaxed);
        self.engine
            .generate(Request {
                tokens: self.engine.tokenize(&prompt),
                thinking,
                thinking_budget,
                close_thinking: self.close_thinking.clone(),
                grammar,
                calls_only,
                after_thinking: self.after_thinking.clone(),
                sampling: engine::Sampling {
                    max_tokens: self.sampling.max_tokens,
                    temperature: self.sampling.temperature as f32,
                    seed,
                },
                output,
                stop: stop.clone(),
            })
            .map_err(|e| ModelError::new(ModelErrorKind::Engine, format!("the local model is not running: {e}")))?;

        let (mut thought, mut text) = (String::new(), String::new());
        let finished = loop {
            match outputs.recv().await {
                Some(Output::Piece { text: piece, reasoning: true }) => {
                    send_delta(&request.deltas, DeltaKind::Reasoning, &piece);
                    thought.push_str(&piece);
                }
                Some(Output::Piece { .. }) if stop.load(Ordering::Relaxed) => {}
                Some(Output::Piece { text: piece, reasoning: false }) => {
                    send_delta(&request.deltas, DeltaKind::Text, &piece);
                    text.push_str(&piece);
                    if constrained && let Some(at) = repeated_call(&text) {
                        text.truncate(at);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Some(Output::Done(finished)) => break finished,
                Some(Output::Failed(message)) => {
                    return Err(ModelError::new(ModelErrorKind::Engine, format!("the local model failed: {message}")));
                }
                None => return Err(ModelError::new(ModelErrorKind::Engine, "the local model stopped")),
            }
        };
        let usage = Usage {
            prompt_tokens: finished.prompt_tokens,
            completion_tokens: finished.completion_tokens,
            reasoning_tokens: finished.reasoning_tokens,
            cached_tokens: finished.cached_tokens,
        };
        if finished.thinking_closed {
            thought.push_str("</think>");
        }
        let raw = format!("{thought}{text}");
        let mut reply = ModelReply { usage: Some(usage), raw: Some(raw.clone()), ..ModelReply::default() };
        if constrained {
            let reasoning = thought.split("</think>").next().unwrap_or_default().trim();
            reply.reasoning = Some(reasoning.to_string()).filter(|r| !r.is_empty());
            read_into(&mut reply, &text, || self.call_id());
        } else {
            read_free_text(&mut reply, &raw, || self.call_id());
        }
        Ok(reply)
    }
}
