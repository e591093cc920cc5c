//! The `tools:` entries of an agent file: a component, what it is granted, and its limits.
//! Every grant is explicit; nothing is inherited from the host.

use std::collections::HashMap;
use std::path::Path;

use reagent_sandbox::{DirGrant, Grants, HostGrant, Limits};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::units::{parse_duration, parse_size};
use super::{Position, SpecError, ToolSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTool {
    component: Spanned<String>,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    limits: RawToolLimits,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    dirs: Vec<RawDir>,
    #[serde(default)]
    http: Vec<Spanned<String>>,
    #[serde(default)]
    env: Vec<Spanned<String>>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    host: Spanned<String>,
    guest: Spanned<String>,
    #[serde(default)]
    mode: DirMode,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DirMode {
    #[default]
    Ro,
    Rw,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawToolLimits {
    memory: Option<Spanned<String>>,
    cpu_time: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_result: Option<Spanned<String>>,
    max_log: Option<Spanned<String>>,
}

/// Values the tools may be granted by name: the agent's secrets file, then the host environment.
pub(super) struct SecretSource<'a> {
    pub(super) file_values: &'a HashMap<String, String>,
}

impl RawTool {
    pub(super) fn resolve(self, file: &Path, dir: &Path, secrets: &SecretSource) -> Result<ToolSpec, SpecError> {
        let at = |spanned_location| Position::new(file, spanned_location);
        let error = |location, message: String| SpecError::new(at(location), message);
        let mut grants = Grants::default();

        for raw in self.grants.dirs {
            let host = dir.join(&raw.host.value);
            if !host.is_dir() {
                return Err(error(raw.host.referenced, format!("directory {} does not exist", host.display())));
            }
            if !raw.guest.value.starts_with('/') {
                return Err(error(raw.guest.referenced, "`guest` must be an absolute path, e.g. /data".into()));
            }
            grants.dirs.push(DirGrant { host, guest: raw.guest.value, writable: raw.mode == DirMode::Rw });
        }
        for host in self.grants.http {
            grants.http.push(HostGrant::parse(&host.value).map_err(|e| error(host.referenced, e))?);
        }
        for name in self.grants.env {
            let value = std::env::var(&name.value).map_err(|_| {
                error(name.referenced, format!("`{}` is granted but not set in the environment", name.value))
            })?;
            grants.env.push((name.value, value));
        }
        for name in self.grants.secrets {
            let value = secrets.file_values.get(&name.value).cloned().or_else(|| std::env::var(&name.value).ok());
            let Some(value) = value else {
                return Err(error(
                    name.referenced,
                    format!("secret `{}` is in neither the secrets file nor the environment", name.value),
                ));
            };
            grants.env.push((name.value, value));
        }

        let mut limits = Limits::default();
        let raw = self.limits;
        let size = |value: &Spanned<String>| parse_size(&value.value).map_err(|e| error(value.referenced, e));
        let duration = |value: &Spanned<String>| {
            parse_duration(&value.value)
                .and_then(|d| if d.is_zero() { Err("a limit of zero would fail every call".into()) } else { Ok(d) })
                .map_err(|e| error(value.referenced, e))
        };
        if let Some(memory) = &raw.memory {
            limits.memory_bytes = size(memory)?;
            if limits.memory_bytes > reagent_sandbox::MAX_MEMORY_BYTES {
                return Err(error(
                    memory.referenced,
                    format!("`memory` can be at most {} MiB", reagent_sandbox::MAX_MEMORY_BYTES >> 20),
                ));
            }
        }
        if let Some(cpu_time) = &raw.cpu_time {
            limits.cpu_time = duration(cpu_time)?;
        }
        if let Some(timeout) = &raw.timeout {
            limits.wall_time = duration(timeout)?;
        }
        if let Some(max_result) = &raw.max_result {
            limits.result_bytes = size(max_result)?;
        }
        if let Some(max_log) = &raw.max_log {
            limits.log_bytes = size(max_log)?;
        }

        Ok(ToolSpec { component: dir.join(&self.component.value), at: at(self.component.referenced), grants, limits })
    }
}

/// Reads a secrets file: `NAME=value` lines; blank lines and `#` comments are skipped.
pub(super) fn read_secrets(path: &Path, named_at: Position) -> Result<HashMap<String, String>, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(named_at, format!("cannot read secrets file {}: {e}", path.display())))?;
    let mut values = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            let at = Position { file: path.to_path_buf(), line: index as u64 + 1, column: 1 };
            return Err(SpecError::new(at, "expected NAME=value"));
        };
        values.insert(name.trim().to_string(), value.trim().to_string());
    }
    Ok(values)
}
