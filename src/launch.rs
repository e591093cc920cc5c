//! From an agent file to a runnable agent: the one place that picks concrete backends for the
//! traits the loop depends on.

use std::path::Path;

use reagent_sandbox::Sandbox;

use crate::agent_loop::{Agent, LoopConfig};
use crate::model::{LocalModel, Model, OpenAiModel, ReplayModel};
use crate::spec::{AgentSpec, GivenInputs, ModelSpec, Position, SpecError, bind_inputs, render_instructions};
use crate::toolbox::WasmToolbox;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The agent file, or a file it names (such as a replay script), is invalid.
    #[error("{0}")]
    Spec(SpecError),
    /// A tool component is missing or cannot be used.
    #[error("{0}")]
    Tool(SpecError),
    #[error("{0}")]
    Sandbox(#[from] reagent_sandbox::StartError),
    /// The model cannot be started: not pulled, not loadable, no API key.
    #[error("{0}")]
    Model(SpecError),
    /// The inputs given for the run do not fit the agent's `inputs:`.
    #[error("{0}")]
    Inputs(String),
}

/// Loads the agent in `file` for one run with `inputs`.
pub async fn launch(file: &Path, inputs: &GivenInputs) -> Result<(AgentSpec, Agent), LaunchError> {
    let spec = AgentSpec::load(file).map_err(LaunchError::Spec)?;
    let values =
        bind_inputs(&spec.inputs, inputs).map_err(|e| LaunchError::Inputs(format!("{}: {e}", file.display())))?;
    let model: Box<dyn Model> = match &spec.model {
        ModelSpec::Replay { script, at } => {
            // A missing script is the agent file's mistake (reported there); a broken one, the script's.
            if !script.is_file() {
                let message = format!("replay script {} not found", script.display());
                return Err(LaunchError::Spec(SpecError::new(at.clone(), message)));
            }
            Box::new(ReplayModel::load(script).map_err(LaunchError::Spec)?)
        }
        ModelSpec::Local(local) => Box::new(
            LocalModel::load(local)
                .await
                .map_err(|e| LaunchError::Model(SpecError::new(local.at.clone(), e.to_string())))?,
        ),
        ModelSpec::OpenAi(openai) => Box::new(
            OpenAiModel::new(openai.clone())
                .map_err(|e| LaunchError::Model(SpecError::new(Position::start_of(&spec.file), e)))?,
        ),
    };
    let sandbox = Sandbox::new().map_err(LaunchError::Sandbox)?;
    let toolbox = WasmToolbox::load(&sandbox, &spec.tools).await.map_err(LaunchError::Tool)?;
    let config = LoopConfig {
        name: spec.name.clone(),
        instructions: render_instructions(&spec.instructions, &values),
        reasoning: spec.reasoning,
        tool_choice: spec.tool_choice,
        limits: spec.limits,
        output_schema: spec.output_schema.clone(),
    };
    let agent = Agent::new(config, model, Box::new(toolbox))
        .map_err(|e| LaunchError::Tool(SpecError::new(Position::start_of(&spec.file), e.to_string())))?;
    Ok((spec, agent))
}
