//! A `tools: - mcp: NAME` entry: an external MCP server, started as a process (`command:`, an
//! argv, never a shell) or reached over Streamable HTTP (`url:`), under the same default-deny
//! rules as a component: only the variables, secrets and hosts the entry grants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reagent_sandbox::{Effect, HostGrant};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::units::{parse_positive_duration, parse_size};
use super::{Approval, InReplay, Position, SpecError};

/// The longest server name: tools are offered as `NAME__tool`, within MCP's and the models' 64.
pub const MAX_SERVER_NAME: usize = 24;

#[derive(Debug, Clone, PartialEq)]
pub struct McpServerSpec {
    /// The entry's `mcp:` name: the prefix of its tools (`NAME__tool`) and its key in the lock file.
    pub name: String,
    /// Where the entry names the server.
    pub at: Position,
    pub transport: McpTransport,
    /// The process's environment besides `PATH` (granted variables and secrets), or, over HTTP,
    /// nothing: a secret reaches an HTTP server only as `bearer:`.
    pub env: Vec<(String, String)>,
    /// The values of the secrets it is given (`secrets:`, `bearer:`): kept out of every message
    /// made from what the server says.
    pub secrets: Vec<String>,
    /// Over HTTP: the hosts the URL may resolve to (the URL's own host must be among them).
    pub http: Vec<HostGrant>,
    /// The server's tools the agent uses (all when absent), each with where it is named.
    pub include: Option<Vec<(String, Position)>>,
    /// Whether the server's `readOnlyHint` may make a tool `idempotent` (else every tool is
    /// `side-effect` unless `effects:` says otherwise).
    pub trust_annotations: bool,
    /// The agent file's word on a tool's effect, which wins over everything.
    pub effects: BTreeMap<String, (Effect, Position)>,
    pub approval: Approval,
    /// What a replayed recording does with its tools' calls.
    pub replay: InReplay,
    pub timeouts: McpTimeouts,
    /// Bytes of result a call may return.
    pub max_result: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A process speaking MCP on its stdin and stdout, started in `cwd` (a fresh temporary folder
    /// when absent).
    Stdio { command: Vec<String>, cwd: Option<PathBuf> },
    /// A Streamable HTTP endpoint; `bearer` is the secret sent as `Authorization: Bearer`.
    Http { url: String, bearer: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpTimeouts {
    /// From starting the process (or the first request) to the tool list.
    pub startup: Duration,
    /// A call's silence: reset by each progress notification.
    pub call: Duration,
    /// A call's whole time, progress or not.
    pub max_call: Duration,
}

impl Default for McpTimeouts {
    fn default() -> Self {
        McpTimeouts {
            startup: Duration::from_secs(30),
            call: Duration::from_secs(60),
            max_call: Duration::from_secs(600),
        }
    }
}

/// Results over this are refused (`limits: { max_result: … }` changes it).
const DEFAULT_MAX_RESULT: usize = 1 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    startup: Option<Spanned<String>>,
    call: Option<Spanned<String>>,
    max_call: Option<Spanned<String>>,
}

/// The fields of a tool entry an `mcp:` entry reads; the caller has refused the others.
pub(super) struct RawMcp {
    pub name: Spanned<String>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub url: Option<Spanned<String>>,
    pub cwd: Option<Spanned<String>>,
    pub bearer: Option<Spanned<String>>,
    pub env: Vec<Spanned<String>>,
    pub secrets: Vec<Spanned<String>>,
    pub http: Vec<Spanned<String>>,
    pub include: Option<Vec<Spanned<String>>>,
    pub trust_annotations: bool,
    pub effects: Option<Spanned<BTreeMap<String, Spanned<Effect>>>>,
    pub approval: Option<Spanned<Approval>>,
    pub replay: Option<Spanned<InReplay>>,
    pub timeouts: Option<Spanned<RawTimeouts>>,
    pub max_result: Option<Spanned<String>>,
}

impl RawMcp {
    pub(super) fn resolve(
        self,
        file: &Path,
        dir: &Path,
        secret: impl Fn(&Spanned<String>) -> Result<String, SpecError>,
        env: impl Fn(&Spanned<String>) -> Result<String, SpecError>,
        parse_host: impl Fn(&Spanned<String>) -> Result<HostGrant, SpecError>,
    ) -> Result<McpServerSpec, SpecError> {
        let at = |location| Position::new(file, location);
        let error = |location, message: String| SpecError::new(at(location), message);
        let name = self.name.value.clone();
        if name.is_empty()
            || name.len() > MAX_SERVER_NAME
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.contains("__")
        {
            return Err(error(
                self.name.referenced,
                format!(
                    "`mcp:` names the server with 1 to {MAX_SERVER_NAME} letters, digits, `-` or `_` (no `__`), e.g. `files`: its tools are offered as `NAME__tool`"
                ),
            ));
        }
        let transport = match (self.command, self.url) {
            (Some(command), None) => {
                let argv: Vec<String> = command.value.iter().map(|a| a.value.clone()).collect();
                if argv.first().is_none_or(|program| program.trim().is_empty()) {
                    return Err(error(
                        command.referenced,
                        "`command:` is the server's argv, program first, e.g. `[npx, -y, \"@scope/server\"]` (no shell)".into(),
                    ));
                }
                if let Some(http) = self.http.first() {
                    return Err(error(
                        http.referenced,
                        "`grants: http:` is for a server reached by `url:`; a process's own network use is not confined".into(),
                    ));
                }
                if let Some(bearer) = &self.bearer {
                    return Err(error(bearer.referenced, "`bearer:` is for a server reached by `url:`".into()));
                }
                let cwd = match self.cwd {
                    None => None,
                    Some(cwd) => {
                        let path = dir.join(&cwd.value);
                        if !path.is_dir() {
                            return Err(error(
                                cwd.referenced,
                                format!(
                                    "directory {} does not exist: create it, or fix `cwd:` (relative to the agent file's folder)",
                                    path.display()
                                ),
                            ));
                        }
                        Some(path)
                    }
                };
                McpTransport::Stdio { command: argv, cwd }
            }
            (None, Some(url)) => {
                if let Some(cwd) = &self.cwd {
                    return Err(error(cwd.referenced, "`cwd:` is for a server started by `command:`".into()));
                }
                if let Some(name) = self.env.first() {
                    return Err(error(
                        name.referenced,
                        "`grants: env:` is for a server started by `command:`; send a secret to an HTTP server with `bearer: NAME`".into(),
                    ));
                }
                if let Some(name) = self.secrets.first() {
                    return Err(error(
                        name.referenced,
                        "`grants: secrets:` is for a server started by `command:`; send a secret to an HTTP server with `bearer: NAME`".into(),
                    ));
                }
                let bearer = self.bearer.as_ref().map(&secret).transpose()?;
                McpTransport::Http { url: url.value, bearer }
            }
            (Some(_), Some(url)) => {
                return Err(error(
                    url.referenced,
                    "an MCP server is either `command:` (a process) or `url:`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(error(
                    self.name.referenced,
                    "an MCP server needs `command:` (its argv, e.g. `[npx, -y, \"@scope/server\"]`) or `url:` (Streamable HTTP)"
                        .into(),
                ));
            }
        };
        let mut granted = Vec::new();
        for name in &self.env {
            granted.push((name.value.clone(), env(name)?));
        }
        let mut secrets = Vec::new();
        for name in &self.secrets {
            let value = secret(name)?;
            secrets.push(value.clone());
            granted.push((name.value.clone(), value));
        }
        if let McpTransport::Http { bearer: Some(token), .. } = &transport {
            secrets.push(token.clone());
        }
        let http = self.http.iter().map(&parse_host).collect::<Result<Vec<_>, _>>()?;
        let include = self.include.map(|names| names.into_iter().map(|n| (n.value, at(n.referenced))).collect());
        let effects = self
            .effects
            .map(|e| e.value.into_iter().map(|(tool, effect)| (tool, (effect.value, at(effect.referenced)))).collect())
            .unwrap_or_default();

        let mut timeouts = McpTimeouts::default();
        if let Some(raw) = self.timeouts.map(|t| t.value) {
            let duration = |value: Spanned<String>| {
                let zero = "a timeout of zero would fail every request: give a positive duration, e.g. 30s";
                parse_positive_duration(&value.value, zero).map_err(|e| error(value.referenced, e))
            };
            let max_call_at = raw.max_call.as_ref().map(|m| m.referenced);
            if let Some(startup) = raw.startup {
                timeouts.startup = duration(startup)?;
            }
            if let Some(call) = raw.call {
                timeouts.call = duration(call)?;
            }
            if let Some(max_call) = raw.max_call {
                timeouts.max_call = duration(max_call)?;
            }
            if timeouts.max_call < timeouts.call {
                let message = format!(
                    "`max_call` ({:?}) is shorter than `call` ({:?}): `call` is the longest silence, `max_call` the cap on a whole call",
                    timeouts.max_call, timeouts.call
                );
                return Err(error(max_call_at.unwrap_or(self.name.referenced), message));
            }
        }
        let max_result = match self.max_result {
            Some(size) => parse_size(&size.value).map_err(|e| error(size.referenced, e))?,
            None => DEFAULT_MAX_RESULT,
        };
        Ok(McpServerSpec {
            name,
            at: at(self.name.referenced),
            transport,
            env: granted,
            secrets,
            http,
            include,
            trust_annotations: self.trust_annotations,
            effects,
            approval: self.approval.map(|a| a.value).unwrap_or_default(),
            replay: self.replay.map(|r| r.value).unwrap_or_default(),
            timeouts,
            max_result,
        })
    }
}
