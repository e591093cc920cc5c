//! The `tools:` entries of an agent file: a component, what it is granted, and its limits.
//! Every grant is explicit; nothing is inherited from the host.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use reagent_sandbox::{DirGrant, Grants, HostGrant, Limits};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::mcp::{McpServerSpec, RawMcp, RawTimeouts};
use super::units::{parse_positive_duration, parse_size};
use super::{Approval, InReplay, Position, SpecError, ToolSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTool {
    #[serde(default)]
    component: Option<Spanned<String>>,
    /// Another agent's file: that agent, offered as a tool.
    #[serde(default)]
    agent: Option<Spanned<String>>,
    #[serde(default)]
    grants: Option<Spanned<RawGrants>>,
    #[serde(default)]
    limits: Option<Spanned<RawToolLimits>>,
    #[serde(default)]
    approval: Option<Spanned<Approval>>,
    #[serde(default)]
    replay: Option<Spanned<InReplay>>,
    /// An external MCP server, by the name its tools are offered under (`NAME__tool`).
    #[serde(default)]
    mcp: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    bearer: Option<Spanned<String>>,
    #[serde(default)]
    include: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    trust_annotations: bool,
    #[serde(default)]
    effects: Option<Spanned<BTreeMap<String, Spanned<reagent_sandbox::Effect>>>>,
    #[serde(default)]
    timeouts: Option<Spanned<RawTimeouts>>,
}

/// One `tools:` entry, read.
pub(super) enum ToolEntry {
    Component(ToolSpec),
    /// A sub-agent's file (resolved against the agent file's folder), and where it is named.
    Agent(std::path::PathBuf, Position),
    Mcp(McpServerSpec),
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
    /// Bytes the tool may write under this folder over a run (`rw` only).
    #[serde(default)]
    max_write: Option<Spanned<String>>,
    /// Files and folders the tool may create under it over a run (`rw` only).
    #[serde(default)]
    max_files: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
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
    max_write: Option<Spanned<String>>,
    max_files: Option<Spanned<u64>>,
    max_handles: Option<Spanned<u64>>,
}

/// The fewest handles a call can work with: stdin, stdout, stderr and a granted folder or two.
const MIN_HANDLES: usize = 8;

/// Values the tools may be granted by name: the agent's secrets file, then the host environment.
pub(super) struct SecretSource<'a> {
    pub(super) file_values: &'a HashMap<String, String>,
}

impl RawTool {
    /// `entry` is where the entry starts, for an entry that names neither a component nor an agent.
    pub(super) fn resolve(
        mut self,
        file: &Path,
        dir: &Path,
        secrets: &SecretSource,
        entry: Position,
    ) -> Result<ToolEntry, SpecError> {
        let at = |spanned_location| Position::new(file, spanned_location);
        if let Some(name) = self.mcp.take() {
            return self.resolve_mcp(name, file, dir, secrets).map(ToolEntry::Mcp);
        }
        let mcp_only = [
            self.command.as_ref().map(|c| (c.referenced, "command")),
            self.url.as_ref().map(|u| (u.referenced, "url")),
            self.cwd.as_ref().map(|c| (c.referenced, "cwd")),
            self.bearer.as_ref().map(|b| (b.referenced, "bearer")),
            self.include.as_ref().and_then(|i| i.first()).map(|i| (i.referenced, "include")),
            self.effects.as_ref().map(|e| (e.referenced, "effects")),
            self.timeouts.as_ref().map(|t| (t.referenced, "timeouts")),
        ];
        if let Some((location, field)) = mcp_only.into_iter().flatten().next() {
            let message = format!("`{field}:` belongs to an MCP server entry (`mcp: NAME`)");
            return Err(SpecError::new(at(location), message));
        }
        let component = match (self.component.clone(), self.agent.take()) {
            (Some(component), None) => component,
            (None, Some(agent)) => {
                // A sub-agent's own file grants its tools; the parent cannot widen them.
                let own = [self.grants.as_ref().map(|g| g.referenced), self.limits.as_ref().map(|l| l.referenced)];
                let approval = self.approval.as_ref().map(|a| a.referenced);
                let replay = self.replay.as_ref().map(|r| r.referenced);
                if let Some(extra) = own.into_iter().chain([approval, replay]).flatten().next() {
                    let message = "a sub-agent takes no `grants:`, `limits:`, `approval:` or `replay:` here: its own \
                                   file sets them";
                    return Err(SpecError::new(at(extra), message));
                }
                return Ok(ToolEntry::Agent(dir.join(&agent.value), at(agent.referenced)));
            }
            (Some(_), Some(agent)) => {
                let message = "an entry is either `component:` (a .wasm tool) or `agent:` (an agent file), not both";
                return Err(SpecError::new(at(agent.referenced), message));
            }
            (None, None) => {
                let message = "each tool needs `component:` (a .wasm file), `agent:` (an agent YAML file) or `mcp:` (an MCP server)";
                return Err(SpecError::new(entry, message));
            }
        };
        self.resolve_component(component, file, dir, secrets).map(ToolEntry::Component)
    }

    fn resolve_mcp(
        self,
        name: Spanned<String>,
        file: &Path,
        dir: &Path,
        secrets: &SecretSource,
    ) -> Result<McpServerSpec, SpecError> {
        let at = |spanned_location| Position::new(file, spanned_location);
        let other = [self.component.as_ref().map(|c| c.referenced), self.agent.as_ref().map(|a| a.referenced)];
        if let Some(location) = other.into_iter().flatten().next() {
            let message = "an entry is one of `component:`, `agent:` or `mcp:`";
            return Err(SpecError::new(at(location), message));
        }
        let grants = self.grants.map(|g| g.value).unwrap_or_default();
        if let Some(dir) = grants.dirs.first() {
            let message = "an MCP server is a process outside the sandbox: folders cannot be granted to it; give it `cwd:` to work in";
            return Err(SpecError::new(at(dir.host.referenced), message));
        }
        let limits = self.limits.map(|l| l.value).unwrap_or_default();
        let sandbox_only = [
            limits.memory.as_ref().map(|m| m.referenced),
            limits.cpu_time.as_ref().map(|m| m.referenced),
            limits.timeout.as_ref().map(|m| m.referenced),
            limits.max_log.as_ref().map(|m| m.referenced),
            limits.max_write.as_ref().map(|m| m.referenced),
            limits.max_files.as_ref().map(|m| m.referenced),
            limits.max_handles.as_ref().map(|m| m.referenced),
        ];
        if let Some(location) = sandbox_only.into_iter().flatten().next() {
            let message = "an MCP server takes only `max_result` under `limits:`; its time limits are `timeouts: {startup, call, max_call}`";
            return Err(SpecError::new(at(location), message));
        }
        let raw = RawMcp {
            name,
            command: self.command,
            url: self.url,
            cwd: self.cwd,
            bearer: self.bearer,
            env: grants.env,
            secrets: grants.secrets,
            http: grants.http,
            include: self.include,
            trust_annotations: self.trust_annotations,
            effects: self.effects,
            approval: self.approval,
            replay: self.replay,
            timeouts: self.timeouts,
            max_result: limits.max_result,
        };
        raw.resolve(
            file,
            dir,
            |name| secret_value(secrets, name).map_err(|m| SpecError::new(at(name.referenced), m)),
            |name| env_value(name).map_err(|m| SpecError::new(at(name.referenced), m)),
            |host| parse_host_grant(&host.value).map_err(|m| SpecError::new(at(host.referenced), m)),
        )
    }

    fn resolve_component(
        self,
        component: Spanned<String>,
        file: &Path,
        dir: &Path,
        secrets: &SecretSource,
    ) -> Result<ToolSpec, SpecError> {
        let at = |spanned_location| Position::new(file, spanned_location);
        let error = |location, message: String| SpecError::new(at(location), message);
        let mut grants = Grants::default();
        let raw_grants = self.grants.map(|g| g.value).unwrap_or_default();

        for raw in raw_grants.dirs {
            let host = dir.join(&raw.host.value);
            if !host.is_dir() {
                return Err(error(
                    raw.host.referenced,
                    format!(
                        "directory {} does not exist: create it, or fix `host:` (relative to the agent file's folder)",
                        host.display()
                    ),
                ));
            }
            if !raw.guest.value.starts_with('/') {
                let example = match raw.guest.value.trim() {
                    "" => "/data".to_string(),
                    relative => format!("/{}", relative.trim_start_matches("./")),
                };
                return Err(error(
                    raw.guest.referenced,
                    format!("`guest` must be an absolute path (where the tool sees the folder), e.g. `{example}`"),
                ));
            }
            let mut grant = match raw.mode {
                DirMode::Ro => DirGrant::read_only(host, raw.guest.value),
                DirMode::Rw => DirGrant::read_write(host, raw.guest.value),
            };
            let quotas = [raw.max_write.as_ref().map(|m| m.referenced), raw.max_files.as_ref().map(|m| m.referenced)];
            if let (DirMode::Ro, Some(at)) = (raw.mode, quotas.into_iter().flatten().next()) {
                return Err(error(
                    at,
                    "a read-only folder cannot be written: `max_write` and `max_files` need `mode: rw`".into(),
                ));
            }
            if let Some(max_write) = &raw.max_write {
                grant.max_write = parse_size(&max_write.value).map_err(|e| error(max_write.referenced, e))? as u64;
            }
            if let Some(max_files) = &raw.max_files {
                grant.max_files = max_files.value;
            }
            grants.dirs.push(grant);
        }
        for host in raw_grants.http {
            grants.http.push(parse_host_grant(&host.value).map_err(|e| error(host.referenced, e))?);
        }
        for name in raw_grants.env {
            let value = env_value(&name).map_err(|m| error(name.referenced, m))?;
            grants.env.push((name.value, value));
        }
        for name in raw_grants.secrets {
            let value = secret_value(secrets, &name).map_err(|m| error(name.referenced, m))?;
            grants.env.push((name.value, value));
        }

        let mut limits = Limits::default();
        let raw = self.limits.map(|l| l.value).unwrap_or_default();
        let size = |value: &Spanned<String>| parse_size(&value.value).map_err(|e| error(value.referenced, e));
        let duration = |value: &Spanned<String>| {
            let zero = "a limit of zero would fail every call: give a positive duration, e.g. 5s";
            parse_positive_duration(&value.value, zero).map_err(|e| error(value.referenced, e))
        };
        if let Some(memory) = &raw.memory {
            limits.memory_bytes = size(memory)?;
            if limits.memory_bytes > reagent_sandbox::MAX_MEMORY_BYTES {
                return Err(error(
                    memory.referenced,
                    format!(
                        "`memory` can be at most {} MiB; the default, 64MiB, suits most tools",
                        reagent_sandbox::MAX_MEMORY_BYTES >> 20
                    ),
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
        if let Some(max_write) = &raw.max_write {
            limits.write_bytes = size(max_write)? as u64;
        }
        if let Some(max_files) = &raw.max_files {
            limits.files = max_files.value;
        }
        if let Some(max_handles) = &raw.max_handles {
            limits.handles = usize::try_from(max_handles.value)
                .ok()
                .filter(|&n| n >= MIN_HANDLES)
                .ok_or_else(|| {
                    let message = format!(
                        "`max_handles` must be at least {MIN_HANDLES}: a tool holds its stdio and folders before it opens anything (the default is {})",
                        Limits::default().handles
                    );
                    error(max_handles.referenced, message)
                })?;
        }

        let approval = self.approval.map(|a| a.value).unwrap_or_default();
        let replay = self.replay.map(|r| r.value).unwrap_or_default();
        Ok(ToolSpec {
            component: dir.join(&component.value),
            at: at(component.referenced),
            grants,
            limits,
            approval,
            replay,
        })
    }
}

/// A granted variable's value, from reagent's environment.
fn env_value(name: &Spanned<String>) -> Result<String, String> {
    std::env::var(&name.value).map_err(|_| {
        format!(
            "`{}` is granted but not set in the environment: set it before running reagent, or remove it from `env:`",
            name.value
        )
    })
}

/// A secret's value: from the secrets file, else reagent's environment.
fn secret_value(secrets: &SecretSource, name: &Spanned<String>) -> Result<String, String> {
    let value = secrets.file_values.get(&name.value).cloned().or_else(|| std::env::var(&name.value).ok());
    value.ok_or_else(|| {
        format!(
            "secret `{0}` is in neither the secrets file nor the environment: add a line `{0}=…` to the file named by `secrets_file:`, or set `{0}` in the environment",
            name.value
        )
    })
}

/// Reads a secrets file: `NAME=value` lines; blank lines and `#` comments are skipped.
pub(super) fn read_secrets(path: &Path, named_at: Position) -> Result<HashMap<String, String>, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| {
            let message = format!(
                "cannot read secrets file {}: {e}; create it (NAME=value lines) or fix `secrets_file:` (relative to the agent file's folder)",
                path.display()
            );
            SpecError::new(named_at, message)
        })?;
    let mut values = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The line itself is never quoted back: it may hold a secret.
        let at = || Position { file: path.to_path_buf(), line: index as u64 + 1, column: 1 };
        let Some((name, value)) = line.split_once('=') else {
            return Err(SpecError::new(
                at(),
                "expected NAME=value, e.g. API_TOKEN=abc123 (blank lines and # comments are skipped)",
            ));
        };
        let name = name.trim();
        if let Some(exported) = name.strip_prefix("export ") {
            let message = format!(
                "expected NAME=value: drop `export ` (this is not a shell script) and write `{}=…`",
                exported.trim()
            );
            return Err(SpecError::new(at(), message));
        }
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(SpecError::new(
                at(),
                "expected NAME=value, with a NAME of one word before the `=`, e.g. API_TOKEN=abc123",
            ));
        }
        values.insert(name.to_string(), value.trim().to_string());
    }
    Ok(values)
}

/// An HTTP grant, with the fix in the message when it is written the way people write URLs.
fn parse_host_grant(text: &str) -> Result<HostGrant, String> {
    if text.trim().is_empty() {
        return Err("an empty HTTP grant: give a host, e.g. `api.example.com` or `https://api.example.com:8443`".into());
    }
    HostGrant::parse(text).map_err(|error| {
        // `https://api.example.com/v1/search` → `https://api.example.com`: a grant covers every path.
        let (scheme, rest) = text.split_once("://").map_or(("", text), |(scheme, rest)| (scheme, rest));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit('@').next().unwrap_or_default();
        let suggestion = if scheme.is_empty() { host.to_string() } else { format!("{scheme}://{host}") };
        match suggestion != text && HostGrant::parse(&suggestion).is_ok() {
            true => format!("{error}; grant `{suggestion}`, which allows every path on that host"),
            false => format!("{error}; e.g. `api.example.com` or `https://api.example.com:8443`"),
        }
    })
}
