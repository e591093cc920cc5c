//! Compiled components cached on disk, so an agent starts in milliseconds after the first run.
//! Keyed by the component's SHA-256 and the engine's compatibility hash (its configuration and
//! wasmtime's version): a stale or foreign entry is simply recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// `$REAGENT_CACHE_DIR`, else `$XDG_CACHE_HOME/reagent`, else `~/.cache/reagent`; plus `components`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("REAGENT_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("reagent")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/reagent")))?;
    Some(base.join("components"))
}

pub(crate) fn compile(engine: &Engine, bytes: &[u8], dir: Option<&Path>) -> wasmtime::Result<Component> {
    let Some(dir) = dir else { return Component::new(engine, bytes) };
    let file = dir.join(format!("{}.cwasm", key(engine, bytes)));
    if file.is_file() {
        // SAFETY: the file is one this process family wrote from a component it compiled itself,
        // in the user's own cache directory; wasmtime checks its header, version and config.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &file) } {
            return Ok(component);
        }
    }
    let component = Component::new(engine, bytes)?;
    // The cache is an optimisation: failing to write it is not an error.
    if let Ok(serialized) = component.serialize() {
        let partial = file.with_extension(format!("{}.partial", std::process::id()));
        if std::fs::create_dir_all(dir).is_ok() && std::fs::write(&partial, serialized).is_ok() {
            let _ = std::fs::rename(&partial, &file);
        }
    }
    Ok(component)
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}", hasher.finish())
}
