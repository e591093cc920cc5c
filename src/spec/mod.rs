//! The agent spec: an agent YAML file read into typed, checked values. Unknown fields are errors,
//! every error names `file:line:col`, and paths are resolved against the YAML file's folder.
//! YAML is data only: nothing in it is ever executed.

mod tools;
mod units;
pub(crate) mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reagent_sandbox::{Grants, Limits as ToolLimits};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use yaml::{Position, SpecError};

/// The steps an agent gets when its file does not say.
pub const DEFAULT_MAX_STEPS: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The YAML file this agent was read from.
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub model: ModelSpec,
    pub reasoning: ReasoningMode,
    /// The system prompt.
    pub instructions: String,
    pub tools: Vec<ToolSpec>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A scripted model: its raw outputs, turn by turn, from a YAML file.
    Replay { script: PathBuf, at: Position },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The WebAssembly component that provides the tool(s).
    pub component: PathBuf,
    /// Where the tool is listed in the agent file.
    pub at: Position,
    /// What the tool may reach; nothing else.
    pub grants: Grants,
    pub limits: ToolLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Model turns before the run stops unanswered.
    pub max_steps: u32,
}

/// When the model thinks before it acts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningMode {
    /// Every step.
    On,
    /// Never.
    Off,
    /// On the first step (to plan) and after a failed call (to recover); acting fast otherwise.
    #[default]
    Auto,
}

impl AgentSpec {
    pub fn load(file: &Path) -> Result<Self, SpecError> {
        let raw: RawAgent = yaml::read(file)?;
        let dir = file.parent().unwrap_or(Path::new(""));
        let at = |spanned_location| Position::new(file, spanned_location);

        let name = raw.name.value.trim().to_string();
        if name.is_empty() {
            return Err(SpecError::new(at(raw.name.referenced), "`name` must not be empty"));
        }
        let model = match raw.model.value.backend {
            Backend::Replay => {
                let Some(script) = raw.model.value.script else {
                    return Err(SpecError::new(
                        at(raw.model.referenced),
                        "the replay backend needs `script:`, the YAML file of the model's outputs (see README, \"Replay scripts\")",
                    ));
                };
                ModelSpec::Replay { script: dir.join(&script.value), at: at(script.referenced) }
            }
        };
        let file_values = match &raw.secrets_file {
            Some(path) => tools::read_secrets(&dir.join(&path.value), at(path.referenced))?,
            None => HashMap::new(),
        };
        let secrets = tools::SecretSource { file_values: &file_values };
        let tools = raw.tools.into_iter().map(|tool| tool.resolve(file, dir, &secrets)).collect::<Result<_, _>>()?;
        let max_steps = match raw.limits.max_steps {
            None => DEFAULT_MAX_STEPS,
            Some(steps) => u32::try_from(steps.value).ok().filter(|&n| n >= 1).ok_or_else(|| {
                SpecError::new(at(steps.referenced), "`max_steps` must be a whole number from 1 to 4294967295")
            })?,
        };
        Ok(AgentSpec {
            file: file.to_path_buf(),
            name,
            description: raw.description,
            model,
            reasoning: raw.reasoning,
            instructions: raw.instructions,
            tools,
            limits: Limits { max_steps },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    model: Spanned<RawModel>,
    #[serde(default)]
    reasoning: ReasoningMode,
    #[serde(default)]
    instructions: String,
    #[serde(default)]
    tools: Vec<tools::RawTool>,
    #[serde(default)]
    secrets_file: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    backend: Backend,
    #[serde(default)]
    script: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Replay,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_steps: Option<Spanned<i64>>,
}
