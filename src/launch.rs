//! From an agent file to a runnable agent: the one place that picks concrete backends for the
//! traits the loop depends on.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::agent_loop::{Agent, InvalidSchema, LoopConfig, check_schemas, sub_agent_declaration};
use crate::conversation::ToolDeclaration;
use crate::model::{LocalModelError, Model, OpenAiModel, ReplayModel, check_local, load_local};
use crate::recording::Recording;
use crate::runtime::Runtime;
use crate::spec::{
    AgentSpec, GivenInputs, InReplay, LocalModelSpec, ModelSpec, OpenAiModelSpec, Position, Sources, SpecError,
    bind_inputs, render_instructions,
};
use crate::toolbox::{McpToolbox, Pinning, Stubbed, Toolbox, Toolboxes, WasmToolbox};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The agent file, or a file it names (such as a replay script), is invalid.
    #[error("{0}")]
    Spec(SpecError),
    /// A tool component is missing or cannot be used.
    #[error("{0}")]
    Tool(SpecError),
    /// The model cannot be started: not pulled, not loadable, no API key.
    #[error("{0}")]
    Model(SpecError),
    /// The inputs given for the run do not fit the agent's `inputs:`.
    #[error("{0}")]
    Inputs(String),
}

/// Loads the agent in `file` for one run with `inputs`, on the process's shared `runtime`.
pub async fn launch(runtime: &Runtime, file: &Path, inputs: &GivenInputs) -> Result<(AgentSpec, Agent), LaunchError> {
    launch_from(runtime, &Sources::disk(), file, inputs).await
}

/// `launch`, reading the agent's files from `sources` (a run's snapshot, to resume it under the
/// agent it started with).
pub async fn launch_from(
    runtime: &Runtime,
    sources: &Sources,
    file: &Path,
    inputs: &GivenInputs,
) -> Result<(AgentSpec, Agent), LaunchError> {
    let (spec, values) = load_with_inputs(sources, file, inputs)?;
    let agent = build(runtime, sources, &spec, &values).await?;
    Ok((spec, agent))
}

/// `launch`, with the model playing `recording` (read from `dir`) and the calls of tools marked
/// `replay: stub` answered from it; every other tool really runs. A recorded run, replayed.
pub async fn launch_replaying(
    runtime: &Runtime,
    file: &Path,
    inputs: &GivenInputs,
    recording: &Recording,
    dir: &Path,
) -> Result<(AgentSpec, Agent), LaunchError> {
    let (spec, values) = load_with_inputs(&Sources::disk(), file, inputs)?;
    if let Some(sub) = spec.sub_agents.first() {
        let message = "a recording holds one agent's model turns: an agent with sub-agents cannot be replayed yet";
        return Err(LaunchError::Spec(SpecError::new(sub.at.clone(), message)));
    }
    let model = ReplayModel::new(&dir.join(crate::recording::SCRIPT), recording.script.clone());
    let components = wasm_tools(runtime, &spec).await?;
    let mut stubbed: HashSet<String> = components
        .descriptions()
        .filter(|(entry, _)| spec.tools[*entry].replay == InReplay::Stub)
        .map(|(_, tool)| tool.name.clone())
        .collect();
    let servers = mcp_tools(&spec, &components).await?;
    for server in spec.mcp_servers.iter().filter(|s| s.replay == InReplay::Stub) {
        let prefix = format!("{}__", server.name);
        stubbed.extend(servers.declarations().into_iter().map(|d| d.name).filter(|name| name.starts_with(&prefix)));
    }
    let toolbox = Toolboxes::new(vec![Box::new(components), Box::new(servers)]);
    let toolbox = Stubbed::new(Box::new(toolbox), stubbed, recording.results());
    let agent = assemble(runtime, &Sources::disk(), &spec, &values, Box::new(model), Box::new(toolbox)).await?;
    Ok((spec, agent))
}

/// The agent file read from `sources` and the run's inputs bound to its `inputs:`: what a run can
/// be recorded with, before tools or models are loaded for it. Replay scripts (the agent's and
/// its sub-agents') are read too, so that `sources` holds every file a launch reads.
pub fn bind(sources: &Sources, file: &Path, inputs: &GivenInputs) -> Result<AgentSpec, LaunchError> {
    let (spec, _) = load_with_inputs(sources, file, inputs)?;
    read_scripts(sources, &spec)?;
    Ok(spec)
}

fn read_scripts(sources: &Sources, spec: &AgentSpec) -> Result<(), LaunchError> {
    if let ModelSpec::Replay { script, at } = &spec.model {
        replay_model(sources, script, at)?;
    }
    spec.sub_agents.iter().try_for_each(|sub| read_scripts(sources, &sub.spec))
}

/// The agent file, and the run's inputs bound to its `inputs:`.
fn load_with_inputs(
    sources: &Sources,
    file: &Path,
    inputs: &GivenInputs,
) -> Result<(AgentSpec, BTreeMap<String, Value>), LaunchError> {
    let spec = AgentSpec::load_from(sources, file).map_err(LaunchError::Spec)?;
    let values =
        bind_inputs(&spec.inputs, inputs).map_err(|e| LaunchError::Inputs(format!("{}: {e}", file.display())))?;
    Ok((spec, values))
}

/// The agent and, depth first, its sub-agents (which take their inputs' defaults).
async fn build(
    runtime: &Runtime,
    sources: &Sources,
    spec: &AgentSpec,
    values: &BTreeMap<String, Value>,
) -> Result<Agent, LaunchError> {
    let model: Box<dyn Model> = match &spec.model {
        ModelSpec::Replay { script, at } => Box::new(replay_model(sources, script, at)?),
        ModelSpec::Local(local) => {
            load_local(runtime.local_models(), local).await.map_err(|e| local_failed(local, e))?
        }
        ModelSpec::OpenAi(openai) => Box::new(openai_model(spec, openai)?),
    };
    let toolbox = load_tools(runtime, spec).await?;
    assemble(runtime, sources, spec, values, model, Box::new(toolbox)).await
}

/// The agent on its model and tools, and, depth first, its sub-agents.
async fn assemble(
    runtime: &Runtime,
    sources: &Sources,
    spec: &AgentSpec,
    values: &BTreeMap<String, Value>,
    model: Box<dyn Model>,
    toolbox: Box<dyn Toolbox>,
) -> Result<Agent, LaunchError> {
    let mut agent = Agent::new(loop_config(spec, values), model, toolbox).map_err(|e| invalid_schema(spec, e))?;
    for sub in &spec.sub_agents {
        let defaults = bind_inputs(&sub.spec.inputs, &GivenInputs::default()).map_err(LaunchError::Inputs)?;
        let sub_agent = Box::pin(build(runtime, sources, &sub.spec, &defaults)).await?;
        agent
            .add_sub_agent(sub_agent, sub.spec.description.as_deref())
            .map_err(|e| LaunchError::Spec(SpecError::new(sub.at.clone(), e.to_string())))?;
    }
    // Last, so that the sub-agents' tool names are known to their caller's spans.
    agent.set_instrumentation(runtime.telemetry().instrumentation());
    Ok(agent)
}

fn loop_config(spec: &AgentSpec, values: &BTreeMap<String, Value>) -> LoopConfig {
    LoopConfig {
        name: spec.name.clone(),
        instructions: render_instructions(&spec.instructions, values),
        reasoning: spec.reasoning,
        tool_choice: spec.tool_choice,
        limits: spec.limits,
        output_schema: spec.output_schema.clone(),
    }
}

/// What `reagent prompt` shows: the agent's first model turn as its backend would be sent it,
/// built without starting the model (no weights loaded, no server asked): the loop's
/// configuration with the run's inputs, and the tools the model would be offered.
pub async fn first_turn(
    runtime: &Runtime,
    file: &Path,
    inputs: &GivenInputs,
) -> Result<(AgentSpec, LoopConfig, Vec<ToolDeclaration>), LaunchError> {
    first_turn_from(runtime, &Sources::disk(), file, inputs).await
}

/// `first_turn`, reading the agent's files from `sources`.
pub async fn first_turn_from(
    runtime: &Runtime,
    sources: &Sources,
    file: &Path,
    inputs: &GivenInputs,
) -> Result<(AgentSpec, LoopConfig, Vec<ToolDeclaration>), LaunchError> {
    let (spec, values) = load_with_inputs(sources, file, inputs)?;
    let mut tools = load_tools(runtime, &spec).await?.declarations();
    tools.extend(
        spec.sub_agents.iter().map(|sub| sub_agent_declaration(&sub.spec.name, sub.spec.description.as_deref())),
    );
    let config = loop_config(&spec, &values);
    Ok((spec, config, tools))
}

/// `reagent validate`: everything `launch` checks, without starting a model: the spec, the files
/// it names, that the model is on this machine (or its API key set), that every tool component
/// loads and describes itself with valid schemas; the same for every sub-agent. Returns the
/// names of the tools the model would see.
pub async fn validate(runtime: &Runtime, file: &Path) -> Result<(AgentSpec, Vec<String>), LaunchError> {
    let spec = AgentSpec::load(file).map_err(LaunchError::Spec)?;
    let tools = check(runtime, &spec).await?;
    Ok((spec, tools))
}

async fn check(runtime: &Runtime, spec: &AgentSpec) -> Result<Vec<String>, LaunchError> {
    match &spec.model {
        ModelSpec::Replay { script, at } => drop(replay_model(&Sources::disk(), script, at)?),
        ModelSpec::Local(local) => check_local(local).map_err(|e| local_failed(local, e))?,
        ModelSpec::OpenAi(openai) => drop(openai_model(spec, openai)?),
    }
    let declarations = load_tools(runtime, spec).await?.declarations();
    check_schemas(&declarations, spec.output_schema.as_ref()).map_err(|e| invalid_schema(spec, e))?;
    let mut tools: Vec<String> = declarations.into_iter().map(|t| t.name).collect();
    for sub in &spec.sub_agents {
        Box::pin(check(runtime, &sub.spec)).await?;
        if tools.contains(&sub.spec.name) {
            let message = format!("sub-agent `{}` has the name of a tool: rename one of them", sub.spec.name);
            return Err(LaunchError::Spec(SpecError::new(sub.at.clone(), message)));
        }
        tools.push(sub.spec.name.clone());
    }
    Ok(tools)
}

fn replay_model(sources: &Sources, script: &Path, at: &Position) -> Result<ReplayModel, LaunchError> {
    // A missing script is the agent file's mistake (reported there); a broken one, the script's.
    if !sources.is_file(script) {
        let message = format!("replay script {} not found", script.display());
        return Err(LaunchError::Spec(SpecError::new(at.clone(), message)));
    }
    ReplayModel::load_from(sources, script).map_err(LaunchError::Spec)
}

fn local_failed(local: &LocalModelSpec, error: LocalModelError) -> LaunchError {
    LaunchError::Model(SpecError::new(local.at.clone(), error.to_string()))
}

fn openai_model(spec: &AgentSpec, openai: &OpenAiModelSpec) -> Result<OpenAiModel, LaunchError> {
    OpenAiModel::new(openai.clone()).map_err(|e| LaunchError::Model(SpecError::new(Position::start_of(&spec.file), e)))
}

/// The agent's tools: its components in the sandbox, then its MCP servers, started for this run.
async fn load_tools(runtime: &Runtime, spec: &AgentSpec) -> Result<Toolboxes, LaunchError> {
    let components = wasm_tools(runtime, spec).await?;
    let servers = mcp_tools(spec, &components).await?;
    Ok(Toolboxes::new(vec![Box::new(components), Box::new(servers)]))
}

/// The agent's MCP servers, started for this run, their tools named apart from `components`'.
async fn mcp_tools(spec: &AgentSpec, components: &WasmToolbox) -> Result<McpToolbox, LaunchError> {
    let taken = components.declarations().into_iter().map(|d| d.name).collect();
    McpToolbox::load(&spec.file, &spec.mcp_servers, &taken, Pinning::Check).await.map_err(LaunchError::Tool)
}

/// The agent's Wasm tools alone, as a run loads them (for `reagent mcp serve`, which serves them).
pub async fn wasm_tools(runtime: &Runtime, spec: &AgentSpec) -> Result<WasmToolbox, LaunchError> {
    WasmToolbox::load(runtime.sandbox(), &spec.tools).await.map_err(LaunchError::Tool)
}

/// `reagent mcp pin`: starts the agent's MCP servers and writes what they offer now into its lock
/// file, with the protocol each spoke.
pub async fn pin_mcp(file: &Path) -> Result<McpToolbox, LaunchError> {
    let spec = AgentSpec::load(file).map_err(LaunchError::Spec)?;
    McpToolbox::load(&spec.file, &spec.mcp_servers, &Default::default(), Pinning::Repin)
        .await
        .map_err(LaunchError::Tool)
}

fn invalid_schema(spec: &AgentSpec, error: InvalidSchema) -> LaunchError {
    LaunchError::Tool(SpecError::new(Position::start_of(&spec.file), error.to_string()))
}
