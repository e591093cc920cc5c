use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use reagent_sandbox::{ErrorKind, LoadError, Sandbox, ToolComponent};
use serde_json::Value;

use super::{CallContext, Effect, ToolError, ToolErrorKind, ToolOutcome, Toolbox};
use crate::conversation::ToolDeclaration;
use crate::spec::{Approval, SpecError, ToolSpec};

/// Tools provided by WebAssembly components, each call in a fresh sandboxed instance.
pub struct WasmToolbox {
    components: Vec<ToolComponent>,
    /// Tool name → index into `components`.
    owners: HashMap<String, usize>,
    /// Tools whose calls wait for a person's yes.
    approval_required: HashSet<String>,
    effects: HashMap<String, Effect>,
}

impl WasmToolbox {
    /// Loads every listed component; an error names the agent file's line that lists the tool.
    pub async fn load(sandbox: &Sandbox, tools: &[ToolSpec]) -> Result<Self, SpecError> {
        let mut components = Vec::new();
        let mut owners = HashMap::new();
        let mut approval_required = HashSet::new();
        let mut effects = HashMap::new();
        for spec in tools {
            let component = sandbox
                .load(&spec.component, spec.grants.clone(), spec.limits)
                .await
                .map_err(|e| SpecError::new(spec.at.clone(), load_message(&e)))?;
            for tool in component.tools() {
                let asks = match spec.approval {
                    Approval::Never => false,
                    Approval::Always => true,
                    Approval::SideEffects => tool.effect == reagent_sandbox::Effect::SideEffect,
                };
                if asks {
                    approval_required.insert(tool.name.clone());
                }
                effects.insert(tool.name.clone(), effect(tool.effect));
                if owners.insert(tool.name.clone(), components.len()).is_some() {
                    return Err(SpecError::new(
                        spec.at.clone(),
                        format!("tool `{}` is provided by two components; each tool name must be unique", tool.name),
                    ));
                }
            }
            components.push(component);
        }
        Ok(WasmToolbox { components, owners, approval_required, effects })
    }
}

impl WasmToolbox {
    /// Each tool as its component describes it, with the index of the `tools:` entry providing it.
    pub fn descriptions(&self) -> impl Iterator<Item = (usize, &reagent_sandbox::ToolDescription)> {
        self.components.iter().enumerate().flat_map(|(entry, c)| c.tools().iter().map(move |t| (entry, t)))
    }
}

fn load_message(error: &LoadError) -> String {
    match error {
        LoadError::NotFound { .. } => {
            format!(
                "{error}: build the tools with `scripts/setup.sh`, or fix the path (relative to the agent file's folder)"
            )
        }
        _ => error.to_string(),
    }
}

#[async_trait]
impl Toolbox for WasmToolbox {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        self.components
            .iter()
            .flat_map(|c| c.tools())
            .map(|t| ToolDeclaration {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
            })
            .collect()
    }

    fn needs_approval(&self, name: &str) -> bool {
        self.approval_required.contains(name)
    }

    fn effect(&self, name: &str) -> Effect {
        self.effects.get(name).copied().unwrap_or(Effect::SideEffect)
    }

    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        let Some(&owner) = self.owners.get(name) else {
            return ToolOutcome {
                result: Err(ToolError::new(ToolErrorKind::UnknownTool, format!("no component provides `{name}`"))),
                log: String::new(),
                duration: Default::default(),
            };
        };
        let output = self.components[owner].call(name, &arguments.to_string(), context.idempotency_key()).await;
        ToolOutcome {
            result: output.result.map_err(|e| ToolError::new(kind(e.kind), e.message)),
            log: output.log,
            duration: output.duration,
        }
    }
}

/// The sandbox's kinds in the loop's vocabulary.
fn kind(kind: ErrorKind) -> ToolErrorKind {
    match kind {
        ErrorKind::InvalidArguments => ToolErrorKind::InvalidArguments,
        ErrorKind::UnknownTool => ToolErrorKind::UnknownTool,
        ErrorKind::NotFound => ToolErrorKind::NotFound,
        ErrorKind::Denied => ToolErrorKind::Denied,
        ErrorKind::Failed => ToolErrorKind::Failed,
        ErrorKind::Timeout => ToolErrorKind::Timeout,
        ErrorKind::Memory => ToolErrorKind::Memory,
        ErrorKind::Trap => ToolErrorKind::Trap,
        ErrorKind::OutputTooLarge => ToolErrorKind::OutputTooLarge,
        ErrorKind::BadResult => ToolErrorKind::BadResult,
        ErrorKind::WriteLimit => ToolErrorKind::WriteLimit,
        ErrorKind::FileLimit => ToolErrorKind::FileLimit,
        ErrorKind::HandleLimit => ToolErrorKind::HandleLimit,
    }
}

/// The sandbox's declared effect in the loop's vocabulary.
fn effect(effect: reagent_sandbox::Effect) -> Effect {
    match effect {
        reagent_sandbox::Effect::Pure => Effect::Pure,
        reagent_sandbox::Effect::Idempotent => Effect::Idempotent,
        reagent_sandbox::Effect::SideEffect => Effect::SideEffect,
    }
}
