use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::{v0_1, v0_2};
use crate::cache;
use crate::call_state::CallState;
use crate::component::{Contract, ToolComponent};
use crate::disk;
use crate::engine::{INSTANCE_SLOTS, Shared};
use crate::error::{LoadError, StartError};
use crate::grants::Grants;
use crate::limits::{Limits, MAX_MEMORY_BYTES};

/// One wasmtime engine, WASI linker and compile cache, meant to be shared by every tool
/// component of a process: clones share them.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
    linker: Arc<Linker<CallState>>,
    cache_dir: Option<PathBuf>,
    /// Components compiled (or read from the disk cache) in this process, by file.
    compiled: Arc<Mutex<HashMap<Fingerprint, Component>>>,
}

/// A component file as last seen: path, size, modification time.
type Fingerprint = (PathBuf, u64, Option<SystemTime>);

impl Sandbox {
    /// A sandbox that caches compiled components in the user's cache directory.
    pub fn new() -> Result<Self, StartError> {
        Self::with_cache(cache::default_dir())
    }

    /// A sandbox with compiled components cached in `cache_dir`, or not cached when `None`.
    pub fn with_cache(cache_dir: Option<PathBuf>) -> Result<Self, StartError> {
        let shared = Shared::start()?;
        let mut linker = Linker::new(&shared.engine);
        let failed = |e: wasmtime::Error| StartError(format!("{e:#}"));
        // What a tool can reach through these interfaces is decided per call by its grants.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(failed)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(failed)?;
        disk::shadow_filesystem(&mut linker).map_err(failed)?;
        Ok(Sandbox { shared, linker: Arc::new(linker), cache_dir, compiled: Arc::default() })
    }

    /// Calls that may run at once across every component of this sandbox; more wait for a slot.
    pub fn instance_slots(&self) -> usize {
        INSTANCE_SLOTS as usize
    }

    /// The most instance slots held at once so far, by all components of this sandbox together.
    pub fn peak_instances(&self) -> usize {
        self.shared.slots_peak()
    }

    /// How many calls so far found every instance slot taken and waited for one.
    pub fn slot_waits(&self) -> usize {
        self.shared.slot_waits()
    }

    /// The wasmtime engine tools run on (pooling allocator, epoch interruption). For embedders
    /// that measure or run their own wasmtime code under the same configuration, as the
    /// dispatch benchmark does for its baseline.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Compiles (or loads from the cache) a component, links it and reads its tool descriptions.
    /// A component loaded before (same path, size and modification time) is not read again.
    pub async fn load(&self, path: &Path, grants: Grants, limits: Limits) -> Result<ToolComponent, LoadError> {
        check_grants(path, &grants, limits, self.shared.handles_total())?;
        let unreadable = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound { path: path.to_path_buf() },
            _ => LoadError::Unreadable { path: path.to_path_buf(), source },
        };
        let metadata = std::fs::metadata(path).map_err(unreadable)?;
        let fingerprint = (path.to_path_buf(), metadata.len(), metadata.modified().ok());
        let known = self.compiled.lock().ok().and_then(|compiled| compiled.get(&fingerprint).cloned());
        let component = match known {
            Some(component) => component,
            None => {
                let bytes = std::fs::read(path).map_err(unreadable)?;
                check_is_component(path, &bytes)?;
                let engine = self.shared.engine.clone();
                let cache_dir = self.cache_dir.clone();
                // Compiling is seconds of CPU for a large component: keep it off the async workers.
                let component =
                    tokio::task::spawn_blocking(move || cache::compile(&engine, &bytes, cache_dir.as_deref()))
                        .await
                        .map_err(|e| LoadError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?
                        .map_err(|e| LoadError::Invalid {
                            path: path.to_path_buf(),
                            reason: one_line(&format!("{e:#}")),
                        })?;
                if let Ok(mut compiled) = self.compiled.lock() {
                    compiled.insert(fingerprint, component.clone());
                }
                component
            }
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link { path: path.to_path_buf(), reason: link_reason(&e) })?;
        let contract = link_contract(&self.shared.engine, &component, instance_pre)
            .map_err(|reason| LoadError::Link { path: path.to_path_buf(), reason })?;
        let imports =
            component.component_type().imports(&self.shared.engine).map(|(name, _)| name.to_string()).collect();
        ToolComponent::describe(self.shared.clone(), contract, imports, grants.into(), limits)
            .await
            .map_err(|reason| LoadError::Describe { path: path.to_path_buf(), reason })
    }
}

/// Links the component to the newest version of the `reagent:tool` contract it exports.
fn link_contract(
    engine: &Engine,
    component: &Component,
    instance_pre: wasmtime::component::InstancePre<CallState>,
) -> Result<Contract, String> {
    const V0_2: &str = "reagent:tool/tools@0.2.0";
    const V0_1: &str = "reagent:tool/tools@0.1.0";
    let exports: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
    let exports_version = |name: &str| exports.iter().any(|e| e == name);
    let linked = if exports_version(V0_2) {
        v0_2::PluginPre::new(instance_pre).map(Contract::V0_2)
    } else if exports_version(V0_1) {
        v0_1::PluginPre::new(instance_pre).map(Contract::V0_1)
    } else {
        return Err(format!(
            "it exports no version of the tool contract this reagent knows ({V0_2} or {V0_1}); it exports: {}. \
             Build it with the reagent-tool SDK (tools/README.md)",
            if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
        ));
    };
    linked.map_err(|e| one_line(&format!("{e:#}")))
}

fn check_grants(path: &Path, grants: &Grants, limits: Limits, handles_total: usize) -> Result<(), LoadError> {
    let error = |reason: String| LoadError::Grant { path: path.to_path_buf(), reason };
    if limits.memory_bytes > MAX_MEMORY_BYTES {
        return Err(error(format!("a memory limit over {} MiB cannot be granted", MAX_MEMORY_BYTES >> 20)));
    }
    if limits.handles > handles_total {
        return Err(error(format!(
            "max_handles over {handles_total} (this process's descriptor budget) cannot be granted"
        )));
    }
    for dir in &grants.dirs {
        if !dir.host.is_dir() {
            return Err(error(format!("granted directory {} does not exist", dir.host.display())));
        }
        if !dir.guest.starts_with('/') {
            return Err(error(format!("guest path `{}` must be absolute, e.g. /data", dir.guest)));
        }
    }
    Ok(())
}

/// Tells the two common mistakes apart before wasmtime reports them in its own terms.
fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];
    let reason = if !bytes.starts_with(MAGIC) {
        "it is not a WebAssembly file: build the tool with `--target wasm32-wasip2`"
    } else if bytes.get(4..8) == Some(CORE_MODULE_VERSION) {
        "it is a core WebAssembly module, not a component: build the tool with `--target wasm32-wasip2`"
    } else {
        return Ok(());
    };
    Err(LoadError::Invalid { path: path.to_path_buf(), reason: reason.to_string() })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A component that imports what the host does not provide fails here; say so in words a tool
/// author can act on.
fn link_reason(error: &wasmtime::Error) -> String {
    let text = one_line(&format!("{error:#}"));
    if text.contains("matching implementation was not found in the linker") {
        format!("it imports an interface reagent does not provide to tools ({text})")
    } else {
        text
    }
}
