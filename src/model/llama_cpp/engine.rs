//! One loaded GGUF model and the thread that decodes for it. Every request is a sequence of one
//! llama.cpp context; the sequences of all running requests are decoded together, one batch per
//! step (continuous batching). A sequence keeps its KV cache after its request ends, and a new
//! request takes the free sequence whose cache shares the longest prefix with its prompt, so a
//! run's next step prefills only what was added since its last one.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use llama_cpp_2::DecodeError;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;
use llguidance::Matcher;
use tokio::sync::mpsc::UnboundedSender;

use crate::chat_format::{Origin, Prompt};

/// Runs decoded side by side on one model; more wait for a free sequence.
pub const SEQUENCES: u32 = 8;
/// The most tokens the sequences of one model hold together (and so the longest run), unless the
/// model was trained on fewer. Idle sequences' caches are dropped first when it fills.
pub const MAX_CONTEXT: u32 = 16_384;
/// Tokens per decode call: prompt chunks fill what the running sequences' next tokens leave.
const BATCH: usize = 512;

/// How a request's tokens are chosen.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub max_tokens: u32,
    /// 0 picks the most likely token (the same prompt gives the same reply).
    pub temperature: f32,
    pub seed: u64,
}

/// One generation asked of the engine.
pub struct Request {
    pub tokens: Vec<LlamaToken>,
    /// Unconstrained reasoning first, up to the first `</think>`: the prompt left it open.
    pub thinking: bool,
    /// Reasoning tokens after which the engine closes the reasoning itself.
    pub thinking_budget: Option<u32>,
    /// `</think>` as the model's vocabulary writes it.
    pub close_thinking: Vec<LlamaToken>,
    /// The grammar of the reply (after any reasoning), or free text.
    pub grammar: Option<Matcher>,
    /// The grammar without answers in words, taken instead when the model's favourite first
    /// token of the reply is one `grammar` refuses: the model meant to call, in a syntax of its
    /// own (`{`, a code fence). So a model answers in words or calls as it would unconstrained,
    /// and its calls are written under the grammar.
    pub calls_only: Option<Matcher>,
    /// Fed after `</think>` before a constrained reply, or after a reasoning the engine closed:
    /// the format's separator.
    pub after_thinking: Vec<LlamaToken>,
    pub sampling: Sampling,
    pub output: UnboundedSender<Output>,
    /// Set by the caller to end the reply at the next token (as the model would, with `Done`).
    pub stop: Arc<AtomicBool>,
}

/// What the engine sends back for a request, in order; `Done` or `Failed` ends it.
#[derive(Debug)]
pub enum Output {
    Piece { text: String, reasoning: bool },
    Done(Finished),
    Failed(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finished {
    pub prompt_tokens: u32,
    /// Prompt tokens found in the sequence's kept cache: not computed again.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    pub reasoning_tokens: u32,
    /// The token limit ended the reply, not the model or the grammar.
    pub cut: bool,
    /// The thinking budget ran out: the engine wrote `</think>` (not among the pieces).
    pub thinking_closed: bool,
}

/// What the engine has done since it loaded, for tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Prompt tokens computed (prefilled), as opposed to taken from kept caches.
    pub prefilled: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

/// How the KV cache holds keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCache {
    /// llama.cpp's default: half the memory, with flash attention; logits within about 1% RMS of
    /// an exact computation on the EXAONE fixtures.
    F16,
    /// Exact: F32 keys and values, no flash attention (for checking the engine against a
    /// reference implementation).
    F32,
}

/// `LLAMA_FLASH_ATTN_TYPE_DISABLED` in llama.h.
const FLASH_ATTENTION_DISABLED: i32 = 0;

enum Job {
    Generate(Box<Request>),
    /// Logits at every position of `tokens`, from one forward pass or one token at a time.
    Score {
        tokens: Vec<LlamaToken>,
        stepwise: bool,
        reply: mpsc::Sender<Result<Vec<Vec<f32>>, EngineError>>,
    },
}

pub struct Engine {
    model: Arc<LlamaModel>,
    jobs: Mutex<mpsc::Sender<Job>>,
    /// The vocabulary's control tokens by text, longest first.
    specials: Vec<(String, LlamaToken)>,
    pub counters: Arc<Counters>,
    keep: Arc<AtomicBool>,
    tok_env: OnceLock<toktrie::TokEnv>,
}

/// llama.cpp's latest error lines: its log goes nowhere else, and they say why a file did not load.
static ERRORS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

unsafe extern "C" fn keep_errors(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::ffi::c_char,
    _user_data: *mut std::ffi::c_void,
) {
    if level != llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR || text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that lives for the call.
    let line = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy().trim().to_string();
    if let Ok(mut errors) = ERRORS.lock() {
        if errors.len() == 4 {
            errors.pop_front();
        }
        errors.push_back(line);
    }
}

/// What llama.cpp reported since the last call, as one line.
fn reported() -> String {
    let lines: Vec<String> = ERRORS.lock().map(|mut errors| errors.drain(..).collect()).unwrap_or_default();
    lines.join("; ")
}

fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every load and decode to stderr; reagent reports through its events,
            // and keeps llama.cpp's errors for the messages of failed loads.
            // SAFETY: the callback is a plain function that outlives every call.
            unsafe { llama_cpp_sys_2::llama_log_set(Some(keep_errors), std::ptr::null_mut()) };
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| EngineError(format!("llama.cpp did not start: {e}")))
}

impl Engine {
    /// Loads a GGUF file and starts its decode thread.
    pub fn load(path: &Path, cache: KvCache) -> Result<Engine, EngineError> {
        let backend = backend()?;
        reported();
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| {
            let why = reported();
            let why = if why.is_empty() { e.to_string() } else { why };
            EngineError(format!("llama.cpp cannot load {}: {why}", path.display()))
        })?;
        let model = Arc::new(model);
        let context = model.n_ctx_train().clamp(1, MAX_CONTEXT);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(context))
            .with_n_batch(BATCH as u32)
            .with_n_ubatch(BATCH as u32)
            .with_n_seq_max(SEQUENCES)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let params = match cache {
            KvCache::F16 => params,
            KvCache::F32 => params
                .with_type_k(KvCacheType::F32)
                .with_type_v(KvCacheType::F32)
                // Flash attention on the CPU rounds queries to the cache's F16.
                .with_flash_attention_policy(FLASH_ATTENTION_DISABLED),
        };
        let specials = specials(&model);
        let counters = Arc::new(Counters::default());
        let (jobs, incoming) = mpsc::channel();
        let (started, start) = mpsc::channel();
        let thread_model = model.clone();
        let thread_counters = counters.clone();
        let keep = Arc::new(AtomicBool::new(true));
        let thread_keep = keep.clone();
        std::thread::Builder::new()
            .name("reagent-llama".into())
            .spawn(move || {
                let ctx = match thread_model.new_context(backend, params) {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = started.send(Err(EngineError(format!("llama.cpp cannot make a context: {e}"))));
                        return;
                    }
                };
                let _ = started.send(Ok(()));
                Decoder::new(&thread_model, ctx, thread_counters, thread_keep).run(incoming);
            })
            .map_err(|e| EngineError(format!("cannot start the decode thread: {e}")))?;
        start.recv().map_err(|_| EngineError("the decode thread stopped while starting".into()))??;
        Ok(Engine { model, jobs: Mutex::new(jobs), specials, counters, keep, tok_env: OnceLock::new() })
    }

    /// Whether a request may start from a sequence's kept cache (on unless a benchmark measures
    /// the difference): off, every prompt is prefilled whole.
    pub fn keep_caches(&self, keep: bool) {
        self.keep.store(keep, Ordering::Relaxed);
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The vocabulary as llguidance sees it, built on first use (a walk over every token).
    pub fn tok_env(&self) -> toktrie::TokEnv {
        self.tok_env.get_or_init(|| llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(&self.model)).clone()
    }

    /// The tokens of a prompt: the format's markers as the control tokens they are, text from
    /// outside the format as plain text, whatever it contains.
    pub fn tokenize(&self, prompt: &Prompt) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut out = Vec::new();
        if vocab.should_add_bos() {
            out.push(vocab.bos());
        }
        out.extend(self.tokenize_pieces(prompt));
        out
    }

    /// [`Engine::tokenize`] without the beginning-of-sequence token: a prompt's continuation.
    pub fn tokenize_pieces(&self, prompt: &Prompt) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut out = Vec::new();
        let mut plain = String::new();
        let flush = |plain: &mut String, out: &mut Vec<LlamaToken>| {
            if !plain.is_empty() {
                out.extend(vocab.tokenize(plain.as_bytes(), false, false));
                plain.clear();
            }
        };
        for (origin, text) in prompt.pieces() {
            if origin == Origin::Outside {
                plain.push_str(text);
                continue;
            }
            let mut rest = text;
            while let Some(c) = rest.chars().next() {
                match self.specials.iter().find(|(marker, _)| rest.starts_with(marker.as_str())) {
                    Some((marker, token)) => {
                        flush(&mut plain, &mut out);
                        out.push(*token);
                        rest = &rest[marker.len()..];
                    }
                    None => {
                        plain.push(c);
                        rest = &rest[c.len_utf8()..];
                    }
                }
            }
        }
        flush(&mut plain, &mut out);
        out
    }

    /// The control token written as `text`, if the vocabulary has one.
    pub fn special_token(&self, text: &str) -> Option<LlamaToken> {
        self.specials.iter().find(|(marker, _)| marker == text).map(|(_, token)| *token)
    }

    pub fn generate(&self, request: Request) -> Result<(), EngineError> {
        self.send(Job::Generate(Box::new(request)))
    }

    /// The logits at every position of `tokens` (in a sequence of their own, cleared after): from
    /// one forward pass, or fed one token at a time through the KV cache.
    pub fn logits(&self, tokens: &[LlamaToken], stepwise: bool) -> Result<Vec<Vec<f32>>, EngineError> {
        let (reply, answer) = mpsc::channel();
        self.send(Job::Score { tokens: tokens.to_vec(), stepwise, reply })?;
        answer.recv().map_err(|_| EngineError("the decode thread stopped".into()))?
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        let jobs = self.jobs.lock().map_err(|_| EngineError("the engine's queue is poisoned".into()))?;
        jobs.send(job).map_err(|_| EngineError("the decode thread stopped".into()))
    }
}

/// Every control and user-defined token of the vocabulary with its text, longest first (so that
/// `</think>` is not read as `<` and more).
fn specials(model: &LlamaModel) -> Vec<(String, LlamaToken)> {
    let vocab = model.vocab();
    let mut out: Vec<(String, LlamaToken)> = vocab
        .tokens()
        .filter(|token| {
            let attrs = vocab.attr(*token).0;
            attrs.contains(LlamaTokenAttr::Control) || attrs.contains(LlamaTokenAttr::UserDefined)
        })
        .filter_map(|token| {
            let text = String::from_utf8(vocab.token_to_piece(token, true, None)).ok()?;
            (!text.is_empty()).then_some((text, token))
        })
        .collect();
    out.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
    out
}

/// A sequence of the context: what its KV cache holds, and the request it runs, if any.
struct Slot {
    id: i32,
    cached: Vec<LlamaToken>,
    last_used: u64,
    running: Option<Running>,
}

struct Running {
    request: Request,
    /// The next prompt token to prefill; `tokens.len()` once the prompt is in.
    next: usize,
    /// Tokens to decode next: the last one sampled, then any the engine adds (the separator
    /// after reasoning). Logits are taken after the last.
    feed: VecDeque<LlamaToken>,
    reasoning: bool,
    thought: String,
    bytes: Vec<u8>,
    finished: Finished,
    rng: u64,
}

struct Decoder<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    waiting: VecDeque<Request>,
    counters: Arc<Counters>,
    clock: u64,
    /// Sliding-window attention keeps no cache before the window: its sequences only grow.
    sliding: bool,
    /// The tokens that end a turn.
    end_tokens: Vec<LlamaToken>,
    keep: Arc<AtomicBool>,
}

impl<'m> Decoder<'m> {
    fn new(model: &'m LlamaModel, ctx: LlamaContext<'m>, counters: Arc<Counters>, keep: Arc<AtomicBool>) -> Self {
        let slots =
            (0..SEQUENCES as i32).map(|id| Slot { id, cached: Vec::new(), last_used: 0, running: None }).collect();
        let sliding = model.meta_val_str(&format!("{}.attention.sliding_window", arch(model))).is_ok();
        let vocab = model.vocab();
        let end_tokens = vocab.tokens().filter(|token| vocab.is_eog(*token)).collect();
        Decoder { model, ctx, slots, waiting: VecDeque::new(), counters, clock: 0, sliding, end_tokens, keep }
    }

    fn run(mut self, incoming: mpsc::Receiver<Job>) {
        loop {
            let busy = self.slots.iter().any(|s| s.running.is_some()) || !self.waiting.is_empty();
            let job = if busy {
                match incoming.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match incoming.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return,
                }
            };
            if let Some(job) = job {
                match job {
                    Job::Generate(request) => self.waiting.push_back(*request),
                    Job::Score { tokens, stepwise, reply } => {
                        let _ = reply.send(self.score(&tokens, stepwise));
                    }
                }
                continue; // take every job that is queued before the next batch
            }
            self.start_waiting();
            self.step();
        }
    }

    /// Gives waiting requests the free sequences whose caches share the most with their prompts.
    fn start_waiting(&mut self) {
        while let Some(request) = self.waiting.pop_front() {
            if request.output.is_closed() {
                continue;
            }
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.running.is_none())
                .max_by_key(|(_, slot)| (common_prefix(&slot.cached, &request.tokens), u64::MAX - slot.last_used))
                .map(|(index, _)| index);
            let Some(index) = best else {
                self.waiting.push_front(request);
                return;
            };
            if request.tokens.is_empty() {
                let _ = request.output.send(Output::Failed("the prompt is empty".into()));
                continue;
            }
            let limit = self.ctx.n_ctx() as usize;
            if request.tokens.len() >= limit {
                let message = format!(
                    "the prompt is {} tokens; the model's context holds {limit} (the conversation is too long for this model: lower the run's limits or use a model with a longer context)",
                    request.tokens.len()
                );
                let _ = request.output.send(Output::Failed(message));
                continue;
            }
            self.clock += 1;
            let slot = &mut self.slots[index];
            let mut keep = common_prefix(&slot.cached, &request.tokens);
            // The last prompt token is decoded again for its logits.
            keep = keep.min(request.tokens.len() - 1);
            if (self.sliding && keep < slot.cached.len()) || !self.keep.load(Ordering::Relaxed) {
                keep = 0;
            }
            let removed = keep == slot.cached.len()
                || self.ctx.clear_kv_cache_seq(Some(slot.id as u32), Some(keep as u32), None).unwrap_or(false);
            if !removed {
                let _ = self.ctx.clear_kv_cache_seq(Some(slot.id as u32), None, None);
                keep = 0;
            }
            slot.cached.truncate(keep);
            slot.last_used = self.clock;
            let finished = Finished {
                prompt_tokens: request.tokens.len() as u32,
                cached_tokens: keep as u32,
                ..Finished::default()
            };
            let rng = request.sampling.seed | 1;
            slot.running = Some(Running {
                reasoning: request.thinking,
                request,
                next: keep,
                feed: VecDeque::new(),
                thought: String::new(),
                bytes: Vec::new(),
                finished,
                rng,
            });
        }
    }

    /// One decode call: every running sequence's next token, then prompt chunks in what is left.
    fn step(&mut self) {
        for slot in &mut self.slots {
            // A caller that stopped listening (a cut or cancelled turn) frees its sequence; the
            // cache keeps what was decoded.
            if slot.running.as_ref().is_some_and(|r| r.request.output.is_closed()) {
                slot.running = None;
            }
        }
        let mut batch = LlamaBatch::new(BATCH, SEQUENCES as i32);
        // (slot index, batch index of the logits it samples from)
        let mut sampled: Vec<(usize, i32)> = Vec::new();
        let mut fed: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(running) = slot.running.as_mut() else { continue };
            if running.next < running.request.tokens.len() {
                continue;
            }
            let Some(token) = running.feed.pop_front() else { continue };
            let logits = running.feed.is_empty();
            let position = slot.cached.len() as i32;
            if batch.add(token, position, &[slot.id], logits).is_err() {
                break;
            }
            if logits {
                sampled.push((index, batch.n_tokens() - 1));
            }
            fed.push((index, vec![token]));
        }
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(running) = slot.running.as_mut() else { continue };
            let left = BATCH - batch.n_tokens() as usize;
            if left == 0 {
                break;
            }
            let prompt = &running.request.tokens;
            if running.next >= prompt.len() {
                continue;
            }
            let end = prompt.len().min(running.next + left);
            let chunk = prompt[running.next..end].to_vec();
            let base = slot.cached.len() as i32;
            for (offset, token) in chunk.iter().enumerate() {
                let last = running.next + offset + 1 == prompt.len();
                if batch.add(*token, base + offset as i32, &[slot.id], last).is_err() {
                    break;
                }
                if last {
                    sampled.push((index, batch.n_tokens() - 1));
                }
            }
            running.next = end;
            self.counters.prefilled.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            fed.push((index, chunk));
        }
        if batch.n_tokens() == 0 {
            return;
        }
        match self.decode(&mut batch) {
            Ok(()) => {}
            Err(message) => {
                for (index, _) in &fed {
                    self.fail(*index, &message);
                }
                return;
            }
        }
        for (index, tokens) in fed {
            self.slots[index].cached.extend(tokens);
        }
        for (index, at) in sampled {
            self.sample(index, at);
        }
    }

    /// Decodes, dropping idle sequences' caches while the context is full.
    fn decode(&mut self, batch: &mut LlamaBatch) -> Result<(), String> {
        loop {
            match self.ctx.decode(batch) {
                Ok(()) => return Ok(()),
                Err(DecodeError::NoKvCacheSlot) => {
                    let idle = self
                        .slots
                        .iter_mut()
                        .filter(|slot| slot.running.is_none() && !slot.cached.is_empty())
                        .min_by_key(|slot| slot.last_used);
                    let Some(idle) = idle else {
                        return Err(format!(
                            "the model's context ({} tokens) is full with the runs decoding now; try again with fewer runs at once",
                            self.ctx.n_ctx()
                        ));
                    };
                    let _ = self.ctx.clear_kv_cache_seq(Some(idle.id as u32), None, None);
                    idle.cached.clear();
                }
                Err(e) => return Err(format!("llama.cpp failed to decode: {e}")),
            }
        }
    }

    fn fail(&mut self, index: usize, message: &str) {
        let slot = &mut self.slots[index];
        if let Some(running) = slot.running.take() {
            let _ = running.request.output.send(Output::Failed(message.to_string()));
        }
        // What the failed decode wrote is unknown: the cache is rebuilt next time.
        let _ = self.ctx.clear_kv_cache_seq(Some(slot.id as u32), None, None);
        slot.cached.clear();
    }

    /// Chooses the sequence's next token from the logits at `at`, and sends its text.
    fn sample(&mut self, index: usize, at: i32) {
        let model = self.model;
        let vocab = model.vocab();
        let slot = &mut self.slots[index];
        let Some(running) = slot.running.as_mut() else { return };
        if running.request.output.is_closed() {
            slot.running = None; // the caller stopped listening: the cache stays for the next step
            return;
        }
        if running.request.stop.load(Ordering::Relaxed) {
            return self.finish(index, false);
        }
        let mut logits = self.ctx.get_logits_ith(at).to_vec();
        let constrained = !running.reasoning && running.request.grammar.is_some();
        if running.reasoning && running.request.grammar.is_some() {
            // A constrained reply must follow the reasoning: the turn cannot end inside it.
            for token in &self.end_tokens {
                if let Some(logit) = logits.get_mut(token.0 as usize) {
                    *logit = f32::NEG_INFINITY;
                }
            }
        }
        if constrained && let Some(grammar) = running.request.grammar.as_mut() {
            if grammar.is_stopped() {
                return self.finish(index, false);
            }
            let mut mask = grammar.compute_mask();
            if let Some(calls_only) = running.request.calls_only.take()
                && let Ok(allowed) = &mask
                && pick(&logits, 0.0, &mut running.rng).is_some_and(|favourite| !allowed.is_allowed(favourite as u32))
            {
                *grammar = calls_only;
                mask = grammar.compute_mask();
            }
            match mask {
                Ok(mask) => {
                    for (token, logit) in logits.iter_mut().enumerate() {
                        if !mask.is_allowed(token as u32) {
                            *logit = f32::NEG_INFINITY;
                        }
                    }
                }
                Err(e) => {
                    let message = format!("the reply's grammar failed: {e}");
                    return self.fail(index, &message);
                }
            }
        }
        let Some(token) = pick(&logits, running.request.sampling.temperature, &mut running.rng) else {
            return self.fail(index, "the grammar admits no token here");
        };
        let token = LlamaToken(token as i32);
        if vocab.is_eog(token) {
            return self.finish(index, false);
        }
        if constrained
            && let Some(grammar) = running.request.grammar.as_mut()
            && let Err(e) = grammar.consume_token(token.0 as u32)
        {
            let message = format!("the reply's grammar refused a token: {e}");
            return self.fail(index, &message);
        }
        running.finished.completion_tokens += 1;
        if running.reasoning {
            running.finished.reasoning_tokens += 1;
        }
        running.bytes.extend(vocab.token_to_piece(token, true, None));
        let text = take_utf8(&mut running.bytes);
        let reasoning = running.reasoning;
        if reasoning {
            running.thought.push_str(&text);
            let spent = running.request.thinking_budget.is_some_and(|max| running.finished.reasoning_tokens >= max);
            if running.thought.contains("</think>") {
                running.reasoning = false;
                if running.request.grammar.is_some() {
                    running.feed.push_back(token);
                    running.feed.extend(running.request.after_thinking.iter().copied());
                }
            } else if spent {
                running.reasoning = false;
                running.finished.thinking_closed = true;
                running.feed.push_back(token);
                running.feed.extend(running.request.close_thinking.iter().copied());
                running.feed.extend(running.request.after_thinking.iter().copied());
            }
        }
        if !text.is_empty() && running.request.output.send(Output::Piece { text, reasoning }).is_err() {
            slot.running = None;
            return;
        }
        if running.feed.is_empty() {
            running.feed.push_back(token);
        }
        if running.finished.completion_tokens >= running.request.sampling.max_tokens {
            self.finish(index, true);
        }
    }

    fn finish(&mut self, index: usize, cut: bool) {
        let slot = &mut self.slots[index];
        if let Some(mut running) = slot.running.take() {
            running.finished.cut = cut;
            let rest = String::from_utf8_lossy(&running.bytes).into_owned();
            if !rest.is_empty() {
                let _ = running.request.output.send(Output::Piece { text: rest, reasoning: running.reasoning });
            }
            let _ = running.request.output.send(Output::Done(running.finished));
        }
    }

    fn score(&mut self, tokens: &[LlamaToken], stepwise: bool) -> Result<Vec<Vec<f32>>, EngineError> {
        let Some(slot) = self.slots.iter_mut().filter(|s| s.running.is_none()).min_by_key(|s| s.last_used) else {
            return Err(EngineError("every sequence is busy".into()));
        };
        let id = slot.id;
        slot.cached.clear();
        let _ = self.ctx.clear_kv_cache_seq(Some(id as u32), None, None);
        let mut out = Vec::with_capacity(tokens.len());
        let chunk = if stepwise { 1 } else { BATCH };
        for (start, piece) in tokens.chunks(chunk).enumerate().map(|(i, c)| (i * chunk, c)) {
            let mut batch = LlamaBatch::new(BATCH, 1);
            for (offset, token) in piece.iter().enumerate() {
                batch
                    .add(*token, (start + offset) as i32, &[id], true)
                    .map_err(|e| EngineError(format!("cannot batch the tokens: {e}")))?;
            }
            self.ctx.decode(&mut batch).map_err(|e| EngineError(format!("llama.cpp failed to decode: {e}")))?;
            for i in 0..piece.len() {
                out.push(self.ctx.get_logits_ith(i as i32).to_vec());
            }
        }
        let _ = self.ctx.clear_kv_cache_seq(Some(id as u32), None, None);
        Ok(out)
    }
}

fn arch(model: &LlamaModel) -> String {
    model.meta_val_str("general.architecture").unwrap_or_default()
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The longest valid UTF-8 prefix of `bytes`, taken out; a character split between tokens waits
/// for its next bytes.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let valid = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        // Bytes that can never become UTF-8: replaced, not held forever.
        Err(_) => return String::from_utf8_lossy(&std::mem::take(bytes)).into_owned(),
    };
    let rest = bytes.split_off(valid);
    String::from_utf8(std::mem::replace(bytes, rest)).unwrap_or_default()
}

/// The index of the chosen token: the most likely one at temperature 0, else a draw from the
/// softmax at `temperature`. `None` when every token is masked out.
fn pick(logits: &[f32], temperature: f32, rng: &mut u64) -> Option<usize> {
    let (best, max) = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, l)| (i, *l))?;
    if temperature <= 0.0 {
        return Some(best);
    }
    let weights: Vec<f32> =
        logits.iter().map(|l| if l.is_finite() { ((l - max) / temperature).exp() } else { 0.0 }).collect();
    let total: f32 = weights.iter().sum();
    // xorshift64*: a reproducible draw from the request's seed.
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    let draw = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 * total;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if acc > draw && *w > 0.0 {
            return Some(i);
        }
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_tokens_waits_for_its_rest() {
        let mut bytes = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut bytes), "");
        bytes.extend(&"é".as_bytes()[1..]);
        bytes.extend(b"x");
        assert_eq!(take_utf8(&mut bytes), "éx");
        assert!(bytes.is_empty());
    }

    #[test]
    fn greedy_picks_the_best_unmasked_token_and_none_when_all_are_masked() {
        let mut rng = 1;
        assert_eq!(pick(&[0.1, f32::NEG_INFINITY, 0.3], 0.0, &mut rng), Some(2));
        assert_eq!(pick(&[f32::NEG_INFINITY; 3], 0.0, &mut rng), None);
        for _ in 0..50 {
            assert_ne!(pick(&[0.1, f32::NEG_INFINITY, 0.3], 1.0, &mut rng), Some(1));
        }
    }
}
