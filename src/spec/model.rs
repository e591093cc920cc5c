//! The `model:` section of an agent file: which backend answers, and how it is asked.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::units::parse_duration;
use super::{Position, SpecError};

/// Tokens a step may generate when the agent file does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A scripted model: its raw outputs, turn by turn, from a YAML file.
    Replay { script: std::path::PathBuf, at: Position },
    /// A model run in this process (llama.cpp or mistralrs): nothing leaves the machine.
    Local(LocalModelSpec),
    /// Any server that speaks OpenAI's `/v1/chat/completions` (vLLM, FriendliAI, llama.cpp, …).
    OpenAi(OpenAiModelSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalModelSpec {
    pub source: LocalSource,
    /// Where the source is named in the agent file.
    pub at: Position,
    /// Tool calls decoded under a grammar, so that every call is well-formed and schema-valid.
    pub constrained: bool,
    /// Render prompts with reagent's own chat format instead of the model's template.
    pub format: Option<PromptFormat>,
    pub sampling: Sampling,
    pub engine: LocalEngine,
}

/// The in-process engine that runs a local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalEngine {
    /// llama.cpp: GGUF files; the default for them.
    LlamaCpp,
    /// mistralrs: GGUF files, Hugging Face directories and hub ids.
    Mistralrs,
}

impl LocalEngine {
    /// The engine a source gets when the agent file names none: llama.cpp for a GGUF file.
    pub fn default_for(source: &LocalSource) -> LocalEngine {
        match source {
            LocalSource::Catalog(_) | LocalSource::Gguf(_) | LocalSource::Hub { file: Some(_), .. } => {
                LocalEngine::LlamaCpp
            }
            LocalSource::HfDir(_) | LocalSource::Hub { file: None, .. } => LocalEngine::Mistralrs,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LocalSource {
    /// A model of reagent's catalogue, fetched by `reagent model pull`.
    Catalog(String),
    /// A GGUF file.
    Gguf(std::path::PathBuf),
    /// A Hugging Face format directory (config.json, tokenizer.json, safetensors).
    HfDir(std::path::PathBuf),
    /// A model id on the Hugging Face hub, downloaded by mistralrs where the network allows; with
    /// `file`, the GGUF file of that repository to load.
    Hub { id: String, file: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    Exaone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiModelSpec {
    /// The API base, e.g. `http://127.0.0.1:8080/v1`.
    pub url: String,
    /// The model name the server knows.
    pub name: String,
    /// The environment variable that holds the API key; the key itself never appears in YAML.
    pub api_key_env: Option<String>,
    pub reasoning_control: ReasoningControl,
    /// One request's limit, streaming included.
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx or a failed connection.
    pub retries: u32,
    pub sampling: Sampling,
}

/// How the thinking switch reaches a served model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningControl {
    /// `chat_template_kwargs: {enable_thinking: …}` (vLLM, SGLang, llama.cpp; EXAONE 4.0, Qwen3).
    #[default]
    ChatTemplateKwargs,
    /// `reasoning_effort: low|medium|high` for thinking steps, `none` otherwise.
    ReasoningEffort,
    /// The server is not told; the model decides.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub max_tokens: u32,
    /// 0 decodes greedily: the same prompt gives the same answer.
    pub temperature: f64,
}

/// As an agent file leaves them: at most `DEFAULT_MAX_TOKENS`, greedy.
impl Default for Sampling {
    fn default() -> Self {
        Sampling { max_tokens: DEFAULT_MAX_TOKENS, temperature: 0.0 }
    }
}

/// How long one request to a served model may take unless the agent file says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Further attempts after a 429, a 5xx or a failed connection unless the agent file says otherwise.
pub const DEFAULT_RETRIES: u32 = 3;

impl LocalModelSpec {
    /// A local model built in code rather than read from an agent file, with the file's defaults:
    /// constrained calls, the model's own chat template, greedy sampling.
    pub fn new(source: LocalSource) -> Self {
        LocalModelSpec {
            engine: LocalEngine::default_for(&source),
            source,
            at: Position::in_code(),
            constrained: true,
            format: None,
            sampling: Sampling::default(),
        }
    }
}

impl OpenAiModelSpec {
    /// A served model built in code rather than read from an agent file, with the file's defaults:
    /// no API key, the thinking switch as `chat_template_kwargs`, greedy sampling.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        OpenAiModelSpec {
            url: url.into().trim_end_matches('/').to_string(),
            name: name.into(),
            api_key_env: None,
            reasoning_control: ReasoningControl::default(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
            retries: DEFAULT_RETRIES,
            sampling: Sampling::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    backend: Backend,
    // replay
    script: Option<Spanned<String>>,
    // local
    model: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    hub: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    constrained: Option<Spanned<bool>>,
    format: Option<Spanned<PromptFormat>>,
    engine: Option<Spanned<LocalEngine>>,
    // openai
    url: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    reasoning_control: Option<Spanned<ReasoningControl>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    // both real backends
    max_tokens: Option<Spanned<u32>>,
    temperature: Option<Spanned<f64>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Replay,
    Local,
    Openai,
}

impl RawModel {
    pub(super) fn resolve(self, file: &Path, dir: &Path, whole: Position) -> Result<ModelSpec, SpecError> {
        let at = |location| Position::new(file, location);
        self.refuse_foreign_fields(file)?;
        match self.backend {
            Backend::Replay => {
                let Some(script) = self.script else {
                    return Err(SpecError::new(
                        whole,
                        "the replay backend needs `script:`, the YAML file of the model's outputs (see README, \"Replay scripts\")",
                    ));
                };
                Ok(ModelSpec::Replay { script: dir.join(&script.value), at: at(script.referenced) })
            }
            Backend::Local => {
                let sampling = self.sampling(file)?;
                if let (Some(file_name), None) = (&self.file, &self.hub) {
                    return Err(SpecError::new(
                        at(file_name.referenced),
                        "`file:` names a GGUF file of a `hub:` repository; use it with `hub:`",
                    ));
                }
                let (source, place) = match (self.model, self.path, self.hub) {
                    (Some(name), None, None) => (LocalSource::Catalog(name.value.trim().to_string()), name.referenced),
                    (None, Some(path), None) => {
                        let full = dir.join(&path.value);
                        let source = if full.is_dir() {
                            LocalSource::HfDir(full)
                        } else if full.is_file() {
                            LocalSource::Gguf(full)
                        } else {
                            return Err(SpecError::new(
                                at(path.referenced),
                                format!(
                                    "{} does not exist: give a GGUF file or a Hugging Face model directory",
                                    full.display()
                                ),
                            ));
                        };
                        (source, path.referenced)
                    }
                    (None, None, Some(hub)) => {
                        (LocalSource::Hub { id: hub.value, file: self.file.map(|f| f.value) }, hub.referenced)
                    }
                    (model, path, hub) => {
                        let named: Vec<Spanned<String>> = [model, path, hub].into_iter().flatten().collect();
                        let place = named.get(1).map_or(whole, |second| at(second.referenced));
                        return Err(SpecError::new(
                            place,
                            "the local backend needs exactly one of `model:` (a catalogue name, see `reagent model list`), `path:` (a GGUF file or a Hugging Face directory) or `hub:` (a hub model id)",
                        ));
                    }
                };
                let engine = match self.engine {
                    None => LocalEngine::default_for(&source),
                    Some(engine) => {
                        if engine.value == LocalEngine::LlamaCpp && LocalEngine::default_for(&source) != engine.value {
                            return Err(SpecError::new(
                                at(engine.referenced),
                                "llama.cpp loads GGUF files only (a `path:` to a .gguf file, a catalogue `model:`, or `hub:` with `file:`); use `engine: mistralrs` for a Hugging Face directory or a whole hub repository",
                            ));
                        }
                        engine.value
                    }
                };
                Ok(ModelSpec::Local(LocalModelSpec {
                    engine,
                    source,
                    at: at(place),
                    constrained: self.constrained.is_none_or(|c| c.value),
                    format: self.format.map(|f| f.value),
                    sampling,
                }))
            }
            Backend::Openai => {
                let sampling = self.sampling(file)?;
                let missing = |field: &str, example: &str| {
                    SpecError::new(
                        whole.clone(),
                        format!("the openai backend needs `{field}:`, e.g. `{field}: {example}`"),
                    )
                };
                let url = self.url.ok_or_else(|| missing("url", "http://127.0.0.1:8000/v1"))?;
                if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                    let example = match url.value.contains("://") {
                        false => format!("https://{}", url.value.trim()),
                        true => "http://127.0.0.1:8000/v1".to_string(),
                    };
                    let message = format!("`url` must start with http:// or https://, e.g. `url: {example}`");
                    return Err(SpecError::new(at(url.referenced), message));
                }
                let name = self.name.ok_or_else(|| missing("name", "LGAI-EXAONE/EXAONE-4.0-32B"))?;
                let timeout = match self.timeout {
                    None => DEFAULT_REQUEST_TIMEOUT,
                    Some(t) => parse_duration(&t.value).map_err(|e| SpecError::new(at(t.referenced), e))?,
                };
                Ok(ModelSpec::OpenAi(OpenAiModelSpec {
                    url: url.value.trim_end_matches('/').to_string(),
                    name: name.value,
                    api_key_env: self.api_key_env.map(|v| v.value),
                    reasoning_control: self.reasoning_control.map(|r| r.value).unwrap_or_default(),
                    timeout,
                    retries: self.retries.map_or(DEFAULT_RETRIES, |r| r.value),
                    sampling,
                }))
            }
        }
    }

    fn sampling(&self, file: &Path) -> Result<Sampling, SpecError> {
        let error = |location: Option<serde_saphyr::Location>, message: &str| {
            let place = location.map_or_else(|| Position::start_of(file), |l| Position::new(file, l));
            SpecError::new(place, message)
        };
        let defaults = Sampling::default();
        let max_tokens = self.max_tokens.as_ref().map_or(defaults.max_tokens, |m| m.value);
        if max_tokens == 0 {
            return Err(error(location(&self.max_tokens), "`max_tokens` must be at least 1; the default is 1024"));
        }
        let temperature = self.temperature.as_ref().map_or(defaults.temperature, |t| t.value);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(error(
                location(&self.temperature),
                "`temperature` must be from 0 to 2; 0 (the default) gives the same reply to the same prompt",
            ));
        }
        Ok(Sampling { max_tokens, temperature })
    }

    /// A field of another backend is a mistake worth naming, not something to ignore.
    fn refuse_foreign_fields(&self, file: &Path) -> Result<(), SpecError> {
        const LOCAL: &[Backend] = &[Backend::Local];
        const OPENAI: &[Backend] = &[Backend::Openai];
        const BOTH: &[Backend] = &[Backend::Local, Backend::Openai];
        let fields: [(&str, Option<serde_saphyr::Location>, &[Backend]); 16] = [
            ("script", location(&self.script), &[Backend::Replay]),
            ("model", location(&self.model), LOCAL),
            ("path", location(&self.path), LOCAL),
            ("hub", location(&self.hub), LOCAL),
            ("file", location(&self.file), LOCAL),
            ("constrained", location(&self.constrained), LOCAL),
            ("format", location(&self.format), LOCAL),
            ("engine", location(&self.engine), LOCAL),
            ("url", location(&self.url), OPENAI),
            ("name", location(&self.name), OPENAI),
            ("api_key_env", location(&self.api_key_env), OPENAI),
            ("reasoning_control", location(&self.reasoning_control), OPENAI),
            ("timeout", location(&self.timeout), OPENAI),
            ("retries", location(&self.retries), OPENAI),
            ("max_tokens", location(&self.max_tokens), BOTH),
            ("temperature", location(&self.temperature), BOTH),
        ];
        for (field, location, backends) in fields {
            if let Some(location) = location
                && !backends.contains(&self.backend)
            {
                let owners: Vec<String> = backends.iter().map(|b| format!("{b:?}").to_lowercase()).collect();
                let backend = format!("{:?}", self.backend).to_lowercase();
                return Err(SpecError::new(
                    Position::new(file, location),
                    format!(
                        "`{field}` is a setting of the {} backend, not of {backend}: remove it, or change `backend:`",
                        owners.join(" and "),
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn location<T>(field: &Option<Spanned<T>>) -> Option<serde_saphyr::Location> {
    field.as_ref().map(|spanned| spanned.referenced)
}
