//! The agent spec: an agent YAML file read into typed, checked values. Unknown fields are errors,
//! every error names `file:line:col`, and paths are resolved against the YAML file's folder.
//! YAML is data only: nothing in it is ever executed.

mod inputs;
mod mcp;
mod model;
mod sources;
mod tools;
mod units;
pub(crate) mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reagent_sandbox::{Grants, Limits as ToolLimits};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use inputs::{GivenInputs, InputKind, InputSpec, bind as bind_inputs, render as render_instructions};
pub use mcp::{MAX_SERVER_NAME, McpServerSpec, McpTimeouts, McpTransport};
pub use model::{
    DEFAULT_MAX_TOKENS, LocalEngine, LocalModelSpec, LocalSource, ModelSpec, OpenAiModelSpec, PromptFormat,
    ReasoningControl, Sampling,
};
pub use sources::{Snapshot, Sources};
pub use units::parse_duration;
pub use yaml::{Position, SpecError};

use crate::conversation::ToolChoice;

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The YAML file this agent was read from.
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub model: ModelSpec,
    pub reasoning: ReasoningPolicy,
    /// Whether the model must call a tool before it may answer.
    pub tool_choice: ToolChoice,
    /// The system prompt; `{{name}}` stands for an input.
    pub instructions: String,
    /// Typed values given per run and put into the instructions.
    pub inputs: Vec<InputSpec>,
    pub tools: Vec<ToolSpec>,
    /// External MCP servers whose tools the agent uses (`tools: - mcp: NAME`).
    pub mcp_servers: Vec<McpServerSpec>,
    /// Other agents offered to the model as tools (`tools: - agent: FILE`).
    pub sub_agents: Vec<SubAgentSpec>,
    pub limits: Limits,
    /// `output.schema`: the JSON Schema the final answer must match.
    pub output_schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubAgentSpec {
    pub spec: AgentSpec,
    /// Where the parent names it.
    pub at: Position,
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
    /// Which of its calls wait for a person's yes.
    pub approval: Approval,
    /// What a replayed recording does with its calls.
    pub replay: InReplay,
}

/// `replay:` of a tool entry: what a replayed recording (`reagent test`) does with its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InReplay {
    /// The tool really runs, so that a replay tests it too.
    #[default]
    Run,
    /// The recorded result is returned instead (a tool that reaches the network, or the clock).
    Stub,
}

/// `approval:` of a tool entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// Calls run without asking.
    #[default]
    Never,
    /// Every call waits for a yes.
    Always,
    /// Calls of tools that declare side effects wait for a yes; pure and idempotent ones run.
    SideEffects,
}

/// How much a run may spend. When one runs out, a last turn without tools asks for the best
/// answer, and the run ends incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Model turns.
    pub max_steps: u32,
    /// Tool calls over all turns, refused ones included (the model spent a turn on them).
    pub max_tool_calls: u32,
    /// Prompt + completion tokens (reasoning included), where the backend counts them.
    pub max_tokens: u64,
    /// Wall clock for the whole run.
    #[serde(rename = "timeout_ms", serialize_with = "units::as_millis")]
    pub timeout: Duration,
}

/// One of the `limits:`, as the one that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    MaxSteps,
    MaxToolCalls,
    MaxTokens,
    Timeout,
}

impl Budget {
    /// The `limits:` key that sets it, as the agent file spells it.
    pub fn key(self) -> &'static str {
        match self {
            Budget::MaxSteps => "max_steps",
            Budget::MaxToolCalls => "max_tool_calls",
            Budget::MaxTokens => "max_tokens",
            Budget::Timeout => "timeout",
        }
    }

    /// e.g. `limits.max_steps (4 steps)`.
    pub fn describe(self, limits: &Limits) -> String {
        let amount = match self {
            Budget::MaxSteps => format!("{} steps", limits.max_steps),
            Budget::MaxToolCalls => format!("{} tool calls", limits.max_tool_calls),
            Budget::MaxTokens => format!("{} tokens", limits.max_tokens),
            Budget::Timeout => format!("{:?}", limits.timeout),
        };
        format!("limits.{} ({amount})", self.key())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_steps: 10, max_tool_calls: 50, max_tokens: 200_000, timeout: Duration::from_secs(600) }
    }
}

/// When the model thinks, and how much.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReasoningPolicy {
    pub mode: ReasoningMode,
    /// Reasoning tokens a step may spend; past them the step is asked again without thinking.
    pub max_thinking_tokens: Option<u32>,
    /// In `auto`, an answer given without thinking is reconsidered once with thinking on.
    pub before_answer: bool,
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
        Self::load_from(&Sources::disk(), file)
    }

    /// `load`, reading the agent's files from `sources`.
    pub fn load_from(sources: &Sources, file: &Path) -> Result<Self, SpecError> {
        Self::load_nested(sources, file, &mut Vec::new())
    }

    /// `parents`: the files of the agents that name this one, to refuse cycles.
    fn load_nested(sources: &Sources, file: &Path, parents: &mut Vec<PathBuf>) -> Result<Self, SpecError> {
        let raw: RawAgent = yaml::read_from(sources, file)?;
        let dir = file.parent().unwrap_or(Path::new(""));
        let at = |spanned_location| Position::new(file, spanned_location);

        let name = raw.name.value.trim().to_string();
        if name.is_empty() {
            return Err(SpecError::new(at(raw.name.referenced), "`name` must not be empty"));
        }
        let model = raw.model.value.resolve(file, dir, at(raw.model.referenced))?;
        let reasoning = match raw.reasoning {
            RawReasoning::Mode(mode) => ReasoningPolicy { mode, ..ReasoningPolicy::default() },
            RawReasoning::Policy(RawReasoningPolicy { mode, max_thinking_tokens, before_answer }) => {
                ReasoningPolicy { mode, max_thinking_tokens, before_answer }
            }
        };
        let file_values = match &raw.secrets_file {
            Some(path) => tools::read_secrets(&dir.join(&path.value), at(path.referenced))?,
            None => HashMap::new(),
        };
        let secrets = tools::SecretSource { file_values: &file_values };
        let (mut tools, mut mcp_servers, mut sub_agents) = (Vec::new(), Vec::new(), Vec::<SubAgentSpec>::new());
        for entry in raw.tools {
            match entry.value.resolve(file, dir, &secrets, at(entry.referenced))? {
                tools::ToolEntry::Component(tool) => tools.push(tool),
                tools::ToolEntry::Mcp(server) => {
                    if let Some(first) = mcp_servers.iter().find(|s: &&McpServerSpec| s.name == server.name) {
                        let message = format!(
                            "MCP server `{}` is already listed at line {}: give each server its own name",
                            server.name, first.at.line
                        );
                        return Err(SpecError::new(server.at, message));
                    }
                    mcp_servers.push(server);
                }
                tools::ToolEntry::Agent(path, named_at) => {
                    let spec = load_sub_agent(sources, file, &path, &named_at, parents)?;
                    sub_agents.push(SubAgentSpec { spec, at: named_at });
                }
            }
        }
        let limits = raw.limits.resolve(file)?;
        let unknown = serde_saphyr::Location::UNKNOWN;
        let instructions = raw.instructions.unwrap_or_else(|| Spanned::new(String::new(), unknown, unknown));
        let inputs = inputs::resolve(raw.inputs, &instructions, file)?;
        let output_schema = match raw.output {
            None => None,
            Some(RawOutput { schema }) => {
                if let Err(e) = jsonschema::validator_for(&schema.value) {
                    let place = match e.instance_path().to_string() {
                        path if path.is_empty() => String::new(),
                        path => format!(" at {path}"),
                    };
                    let message = format!("`schema` is not valid JSON Schema{place}: {e}");
                    return Err(SpecError::new(at(schema.referenced), message));
                }
                Some(schema.value)
            }
        };
        Ok(AgentSpec {
            file: file.to_path_buf(),
            name,
            description: raw.description,
            model,
            reasoning,
            tool_choice: raw.tool_choice,
            instructions: instructions.value,
            inputs,
            tools,
            mcp_servers,
            sub_agents,
            limits,
            output_schema,
        })
    }
}

/// Reads the agent file `path` that `parent` names at `named_at`, refusing cycles and inputs that
/// a task alone cannot give.
fn load_sub_agent(
    sources: &Sources,
    parent: &Path,
    path: &Path,
    named_at: &Position,
    parents: &mut Vec<PathBuf>,
) -> Result<AgentSpec, SpecError> {
    if !sources.is_file(path) {
        let message = format!("agent file {} not found: fix `agent:` (relative to this file's folder)", path.display());
        return Err(SpecError::new(named_at.clone(), message));
    }
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    parents.push(canonical(parent));
    let child = canonical(path);
    if parents.contains(&child) {
        let start = parents.iter().position(|p| *p == child).unwrap_or(0);
        let chain: Vec<String> = parents[start..]
            .iter()
            .chain(std::iter::once(&child))
            .map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()))
            .collect();
        let message =
            format!("sub-agents form a cycle: {}; an agent cannot hand work back to itself", chain.join(" → "));
        return Err(SpecError::new(named_at.clone(), message));
    }
    let spec = AgentSpec::load_nested(sources, path, parents)?;
    parents.pop();
    if let Some(input) = spec.inputs.iter().find(|input| input.default.is_none()) {
        let message = format!(
            "sub-agent `{}` requires input `{}`, but a sub-agent is given only a task: give the input a `default:`",
            spec.name, input.name
        );
        return Err(SpecError::new(named_at.clone(), message));
    }
    Ok(spec)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    model: Spanned<model::RawModel>,
    #[serde(default)]
    reasoning: RawReasoning,
    #[serde(default)]
    tool_choice: ToolChoice,
    #[serde(default)]
    instructions: Option<Spanned<String>>,
    #[serde(default)]
    inputs: indexmap::IndexMap<String, inputs::RawInput>,
    #[serde(default)]
    tools: Vec<Spanned<tools::RawTool>>,
    #[serde(default)]
    secrets_file: Option<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    output: Option<RawOutput>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    /// JSON Schema, written as YAML.
    schema: Spanned<serde_json::Value>,
}

/// `reasoning: auto`, or `reasoning: {mode: auto, max_thinking_tokens: 512, before_answer: true}`.
enum RawReasoning {
    Mode(ReasoningMode),
    Policy(RawReasoningPolicy),
}

impl Default for RawReasoning {
    fn default() -> Self {
        RawReasoning::Mode(ReasoningMode::default())
    }
}

/// By hand rather than `untagged`, so that a wrong mode still lists the modes, at its position.
impl<'de> Deserialize<'de> for RawReasoning {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawReasoning;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mode (on, off, auto) or a map {mode, max_thinking_tokens, before_answer}")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawReasoning, E> {
                ReasoningMode::deserialize(serde::de::value::StrDeserializer::new(text)).map(RawReasoning::Mode)
            }

            /// YAML 1.1 reads a bare `on`/`off` as a boolean.
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<RawReasoning, E> {
                Ok(RawReasoning::Mode(if on { ReasoningMode::On } else { ReasoningMode::Off }))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawReasoning, A::Error> {
                RawReasoningPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawReasoning::Policy)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReasoningPolicy {
    #[serde(default)]
    mode: ReasoningMode,
    #[serde(default)]
    max_thinking_tokens: Option<u32>,
    #[serde(default)]
    before_answer: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_steps: Option<Spanned<i64>>,
    #[serde(default)]
    max_tool_calls: Option<Spanned<i64>>,
    #[serde(default)]
    max_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

impl RawLimits {
    fn resolve(self, file: &Path) -> Result<Limits, SpecError> {
        let defaults = Limits::default();
        let count = |value: Option<Spanned<i64>>, key: &str, default: u64, max: u64| match value {
            None => Ok(default),
            Some(n) => u64::try_from(n.value).ok().filter(|&v| (1..=max).contains(&v)).ok_or_else(|| {
                SpecError::new(
                    Position::new(file, n.referenced),
                    format!("`{key}` must be a whole number from 1 to {max} (the default is {default})"),
                )
            }),
        };
        let small = |value, key, default: u32| {
            count(value, key, u64::from(default), u64::from(u32::MAX)).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let timeout = match self.timeout {
            None => defaults.timeout,
            Some(text) => units::parse_duration(&text.value)
                .and_then(|d| {
                    if d.is_zero() { Err("a timeout of zero would stop every run at once".into()) } else { Ok(d) }
                })
                .map_err(|e| SpecError::new(Position::new(file, text.referenced), e))?,
        };
        Ok(Limits {
            max_steps: small(self.max_steps, "max_steps", defaults.max_steps)?,
            max_tool_calls: small(self.max_tool_calls, "max_tool_calls", defaults.max_tool_calls)?,
            max_tokens: count(self.max_tokens, "max_tokens", defaults.max_tokens, u64::MAX >> 1)?,
            timeout,
        })
    }
}
