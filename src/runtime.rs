//! What one process shares among every agent, sub-agent and run it hosts: the sandbox (one
//! wasmtime engine, linker, epoch ticker, instance-slot and handle budgets, compile cache) and
//! the local models loaded so far, and the telemetry its runs report to. `launch` borrows it; a
//! server holds one for its life.

use reagent_sandbox::{Sandbox, StartError};

use crate::model::LocalModels;
use crate::telemetry::Telemetry;

/// Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Runtime {
    sandbox: Sandbox,
    local_models: LocalModels,
    telemetry: Telemetry,
}

impl Runtime {
    /// A runtime whose sandbox caches compiled components in the user's cache directory.
    pub fn new() -> Result<Self, StartError> {
        Ok(Self::with_sandbox(Sandbox::new()?))
    }

    pub fn with_sandbox(sandbox: Sandbox) -> Self {
        Runtime { sandbox, local_models: LocalModels::default(), telemetry: Telemetry::off() }
    }

    /// The same, its runs reporting to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The local models this runtime has loaded (loading one on first use).
    pub fn local_models(&self) -> &LocalModels {
        &self.local_models
    }
}
