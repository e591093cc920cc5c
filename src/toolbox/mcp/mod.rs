//! External MCP servers as a `Toolbox` (`tools: - mcp: NAME`): each server started (or reached)
//! once per run, its tools offered as `NAME__tool`, held to the pins of the agent's lock file, and
//! called under timeouts that end in a cancellation. Both protocol eras: the first contact probes
//! with `server/discover` and falls back to `initialize`; the lock file remembers which answered.

pub mod lock;
mod names;
mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use reagent_sandbox::allowed_addresses;
use rmcp::ClientHandler;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotification, CancelledNotificationParam,
    ClientCapabilities, ClientConfig, ClientRequest, Implementation, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, RequestId, RequestMetaObject, ServerResult,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, NotificationContext, Peer, PeerRequestOptions, RoleClient, RunningService,
    ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

use crate::conversation::ToolDeclaration;
use crate::spec::{Approval, McpServerSpec, McpTransport, Position, SpecError};
use crate::toolbox::{CallContext, Effect, ToolError, ToolErrorKind, ToolOutcome, Toolbox};
use crate::trace_context::TraceHeaders;
use lock::{Drift, Lock, PinnedServer};
use names::exposed_name;
use process::{Diagnostics, ServerProcess};

/// The characters of a tool's description offered to the model (the server's text).
const MAX_DESCRIPTION: usize = 2048;
/// The characters of a failed call's text kept in its error.
const MAX_ERROR_TEXT: usize = 2000;

/// Whether `load` holds the servers to their pins or pins them anew (`reagent mcp pin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    Check,
    Repin,
}

/// The tools of an agent's MCP servers.
pub struct McpToolbox {
    servers: Vec<Arc<Server>>,
    routes: HashMap<String, Route>,
    declarations: Vec<ToolDeclaration>,
}

struct Route {
    server: usize,
    /// The tool's name on its server.
    tool: String,
    effect: Effect,
    asks: bool,
    /// The tool's `outputSchema`, which its `structuredContent` must match.
    output: Option<jsonschema::Validator>,
}

/// One server, connected; restarted once if it dies.
struct Server {
    spec: McpServerSpec,
    pinned: PinnedServer,
    link: tokio::sync::Mutex<Option<Link>>,
    restarted: AtomicBool,
    progress: ProgressRoutes,
}

struct Link {
    service: RunningService<RoleClient, Listener>,
    process: Option<ServerProcess>,
}

type ProgressRoutes = Arc<Mutex<HashMap<ProgressToken, CallContext>>>;

/// reagent's side of a connection: routes progress notifications to the calls they belong to.
/// It offers servers nothing (no sampling, roots or elicitation): a server asks no one anything.
#[derive(Clone)]
struct Listener {
    progress: ProgressRoutes,
}

impl ClientHandler for Listener {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        if let Some(call) = self.progress.lock().unwrap().get(&params.progress_token) {
            call.report(params.progress, params.total, params.message.as_deref());
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("reagent", env!("CARGO_PKG_VERSION")))
    }
}

impl McpToolbox {
    /// Connects to every server, lists its tools and holds them to the agent's lock file (pinning
    /// a server seen for the first time). `taken` are the names other tools already have.
    pub async fn load(
        agent_file: &Path,
        specs: &[McpServerSpec],
        taken: &HashSet<String>,
        pinning: Pinning,
    ) -> Result<McpToolbox, SpecError> {
        let mut toolbox = McpToolbox { servers: Vec::new(), routes: HashMap::new(), declarations: Vec::new() };
        if specs.is_empty() {
            return Ok(toolbox);
        }
        let lock_path = lock::path_for(agent_file);
        let mut lock = Lock::read(&lock_path).map_err(|e| SpecError::new(Position::start_of(agent_file), e))?;
        let mut changed = false;
        if pinning == Pinning::Repin {
            // Pinning anew forgets the servers the agent no longer lists.
            lock.servers.retain(|name, _| specs.iter().any(|s| &s.name == name));
        }
        let pins: Vec<Option<PinnedServer>> = specs
            .iter()
            .map(|spec| match pinning {
                Pinning::Check => lock.servers.get(&spec.name).cloned(),
                Pinning::Repin => None,
            })
            .collect();
        // The servers start side by side; their errors are reported in the agent file's order.
        let opened = futures::future::join_all(specs.iter().zip(&pins).map(|(spec, pinned)| async move {
            let progress = ProgressRoutes::default();
            let hint = pinned.as_ref().map(|p| p.protocol.as_str());
            let (link, protocol) = connect(spec, hint, &progress).await?;
            let offered = list_tools(spec, &link).await?;
            Ok::<_, String>((link, protocol, offered, progress))
        }))
        .await;
        for ((spec, pinned), opened) in specs.iter().zip(pins).zip(opened) {
            let fail = |message: String| {
                let message = process::redact(&format!("MCP server `{}`: {message}", spec.name), &spec.secrets);
                SpecError::new(spec.at.clone(), message)
            };
            let (link, protocol, offered, progress) = opened.map_err(fail)?;
            let used = included(spec, offered)?;
            let pinned = match pinned {
                Some(pinned) => {
                    let drift = Drift::between(&pinned, &used);
                    if !drift.is_empty() {
                        return Err(fail(drift_message(&drift, &lock_path, agent_file)));
                    }
                    pinned
                }
                None => {
                    let fresh = PinnedServer { protocol: protocol.clone(), tools: used.clone() };
                    lock.servers.insert(spec.name.clone(), fresh.clone());
                    changed = true;
                    fresh
                }
            };
            if let Some(entry) = lock.servers.get_mut(&spec.name)
                && entry.protocol != protocol
            {
                entry.protocol = protocol;
                changed = true;
            }
            for (tool, (_, at)) in &spec.effects {
                if !used.contains_key(tool) {
                    let message =
                        format!("`effects:` names `{tool}`, which the server does not offer{}", offered_list(&used));
                    return Err(SpecError::new(at.clone(), message));
                }
            }
            let index = toolbox.servers.len();
            for (tool, definition) in &used {
                let name = exposed_name(&spec.name, tool);
                if taken.contains(&name) || toolbox.routes.contains_key(&name) {
                    let message = format!(
                        "MCP server `{}`: its tool `{tool}` would be offered as `{name}`, a name another tool has: rename the server",
                        spec.name
                    );
                    return Err(SpecError::new(spec.at.clone(), message));
                }
                let route = route(spec, index, tool, definition).map_err(fail)?;
                toolbox.declarations.push(declaration(&name, definition));
                toolbox.routes.insert(name, route);
            }
            let server = Server {
                spec: spec.clone(),
                pinned,
                link: tokio::sync::Mutex::new(Some(link)),
                restarted: AtomicBool::new(false),
                progress,
            };
            toolbox.servers.push(Arc::new(server));
        }
        if changed {
            lock.write(&lock_path).map_err(|e| SpecError::new(Position::start_of(agent_file), e))?;
        }
        Ok(toolbox)
    }

    /// The servers' names and the tools each offers the model, for `reagent mcp pin`.
    pub fn summary(&self) -> Vec<(String, String, usize)> {
        self.servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let tools = self.routes.values().filter(|r| r.server == index).count();
                (server.spec.name.clone(), server.pinned.protocol.clone(), tools)
            })
            .collect()
    }

    /// Ends every server now, in order (stdin closed, SIGTERM, SIGKILL), and waits for them.
    pub async fn shut_down(&self) {
        for server in &self.servers {
            if let Some(link) = server.link.lock().await.take() {
                link.close().await;
            }
        }
    }
}

impl Drop for McpToolbox {
    fn drop(&mut self) {
        // A run's servers end with it: in order where a runtime is there to do it, else killed
        // (ServerProcess's own drop).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        for server in &self.servers {
            if let Ok(mut link) = server.link.try_lock()
                && let Some(link) = link.take()
            {
                runtime.spawn(link.close());
            }
        }
    }
}

impl Link {
    async fn close(mut self) {
        let process = self.process.take();
        let closed = async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.service.close()).await;
        };
        match process {
            Some(process) => process.stop(closed).await,
            None => closed.await,
        }
    }

    fn why_gone(&mut self) -> String {
        match &mut self.process {
            Some(process) => {
                process.reap();
                process.diagnostics.describe().unwrap_or_else(|| "the connection closed".into())
            }
            None => "the connection closed".into(),
        }
    }
}

/// Starts or reaches the server and speaks the protocol's opening: `server/discover` or
/// `initialize` as `protocol` (what it spoke last time) says, else a probe that falls back.
/// Returns the link and the protocol version it answered with.
async fn connect(
    spec: &McpServerSpec,
    protocol: Option<&str>,
    progress: &ProgressRoutes,
) -> Result<(Link, String), String> {
    let lifecycle = match protocol {
        Some(version) if version >= ProtocolVersion::NO_INITIALIZE.as_str() => {
            ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::LATEST] }
        }
        Some(_) => ClientLifecycleMode::Initialize,
        None => ClientLifecycleMode::Auto { preferred_versions: vec![ProtocolVersion::LATEST], legacy_version: None },
    };
    let listener = Listener { progress: progress.clone() };
    let startup = spec.timeouts.startup;
    let (service, process) = match &spec.transport {
        McpTransport::Stdio { command, cwd } => {
            let (mut process, pipes) = process::start(command, cwd.as_deref(), &spec.env, &spec.secrets)?;
            let opened = tokio::time::timeout(startup, listener.serve_with_lifecycle(pipes, lifecycle)).await;
            match opened {
                Ok(Ok(service)) => (service, Some(process)),
                Ok(Err(error)) => {
                    // Give the reader a moment to record why the pipe closed.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    process.reap();
                    let why = process.diagnostics.describe().unwrap_or_else(|| error.to_string());
                    return Err(format!("it failed to start: {why}"));
                }
                Err(_) => {
                    let why = stderr_only(&process.diagnostics);
                    return Err(format!("it did not answer within {startup:?} (`timeouts: {{startup: …}}`){why}"));
                }
            }
        }
        McpTransport::Http { url, bearer } => {
            let client = http_client(spec, url).await?;
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = bearer {
                config = config.auth_header(token.clone());
            }
            let transport = StreamableHttpClientTransport::with_client(client, config);
            match tokio::time::timeout(startup, listener.serve_with_lifecycle(transport, lifecycle)).await {
                Ok(Ok(service)) => (service, None),
                Ok(Err(error)) => return Err(format!("cannot reach it at {url}: {error}")),
                Err(_) => return Err(format!("{url} did not answer within {startup:?} (`timeouts: {{startup: …}}`)")),
            }
        }
    };
    let protocol = service.peer().peer_info().map(|info| info.protocol_version.to_string()).unwrap_or_default();
    Ok((Link { service, process }, protocol))
}

fn stderr_only(diagnostics: &Diagnostics) -> String {
    diagnostics.describe().map(|d| format!("; {d}")).unwrap_or_default()
}

/// An HTTP client that reaches only the addresses the grants allow for `url` (resolved once, so
/// that a later DNS answer cannot point it elsewhere), following no redirects and no proxy.
async fn http_client(spec: &McpServerSpec, url: &str) -> Result<reqwest::Client, String> {
    if spec.http.is_empty() {
        return Err(format!("`url: {url}` needs its host granted: add it under `grants: http:`"));
    }
    let addresses = allowed_addresses(&spec.http, url).await?;
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| format!("`{url}` has no host"))?;
    reqwest::Client::builder()
        .resolve_to_addrs(&host, &addresses)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Every tool the server offers, as JSON definitions by name.
async fn list_tools(spec: &McpServerSpec, link: &Link) -> Result<BTreeMap<String, Value>, String> {
    let listed = tokio::time::timeout(spec.timeouts.startup, link.service.peer().list_all_tools()).await;
    let tools = match listed {
        Ok(Ok(tools)) => tools,
        Ok(Err(error)) => return Err(format!("listing its tools failed: {error}")),
        Err(_) => return Err(format!("it did not list its tools within {:?}", spec.timeouts.startup)),
    };
    Ok(tools
        .into_iter()
        .map(|tool| {
            let mut definition = serde_json::to_value(&tool).expect("a tool serialises");
            if let Some(object) = definition.as_object_mut() {
                // Presentation only: a changed icon or `_meta` is no reason to re-pin.
                object.remove("icons");
                object.remove("_meta");
            }
            (tool.name.to_string(), definition)
        })
        .collect())
}

/// The tools `include:` keeps (all without it); an included tool the server lacks is an error at
/// its place.
fn included(spec: &McpServerSpec, offered: BTreeMap<String, Value>) -> Result<BTreeMap<String, Value>, SpecError> {
    let Some(include) = &spec.include else { return Ok(offered) };
    let mut kept = BTreeMap::new();
    for (tool, at) in include {
        let Some(definition) = offered.get(tool) else {
            let message = format!("MCP server `{}` offers no tool `{tool}`{}", spec.name, offered_list(&offered));
            return Err(SpecError::new(at.clone(), message));
        };
        kept.insert(tool.clone(), definition.clone());
    }
    Ok(kept)
}

fn offered_list(tools: &BTreeMap<String, Value>) -> String {
    match tools.is_empty() {
        true => " (it offers none)".into(),
        false => format!(" (it offers: {})", tools.keys().cloned().collect::<Vec<_>>().join(", ")),
    }
}

fn drift_message(drift: &Drift, lock_path: &Path, agent_file: &Path) -> String {
    let mut parts = Vec::new();
    for (tool, fields) in &drift.changed {
        parts.push(format!("`{tool}` changed ({}) since it was pinned", fields.join(", ")));
    }
    if !drift.new.is_empty() {
        parts.push(format!("new tool(s) not pinned: {}", drift.new.join(", ")));
    }
    format!(
        "{} in {}; these tools are refused until you review them and run `reagent mcp pin {}`",
        parts.join("; "),
        lock_path.display(),
        agent_file.display()
    )
}

/// What reagent makes of a tool: its effect (the agent file's word, else, from a trusted server,
/// read-only means idempotent, else side-effect), whether its calls wait for a yes, and its
/// output schema.
fn route(spec: &McpServerSpec, server: usize, tool: &str, definition: &Value) -> Result<Route, String> {
    let effect = match spec.effects.get(tool) {
        Some((effect, _)) => match effect {
            reagent_sandbox::Effect::Pure => Effect::Pure,
            reagent_sandbox::Effect::Idempotent => Effect::Idempotent,
            reagent_sandbox::Effect::SideEffect => Effect::SideEffect,
        },
        None if spec.trust_annotations && definition["annotations"]["readOnlyHint"] == Value::Bool(true) => {
            Effect::Idempotent
        }
        None => Effect::SideEffect,
    };
    let asks = match spec.approval {
        Approval::Never => false,
        Approval::Always => true,
        Approval::SideEffects => effect == Effect::SideEffect,
    };
    let output = match definition.get("outputSchema") {
        Some(schema) => Some(
            jsonschema::validator_for(schema).map_err(|e| format!("tool `{tool}` has an invalid outputSchema: {e}"))?,
        ),
        None => None,
    };
    if let Err(e) = jsonschema::validator_for(&definition["inputSchema"]) {
        return Err(format!("tool `{tool}` has an invalid inputSchema: {e}"));
    }
    Ok(Route { server, tool: tool.to_string(), effect, asks, output })
}

fn declaration(name: &str, definition: &Value) -> ToolDeclaration {
    let description = definition["description"].as_str().unwrap_or_default();
    ToolDeclaration {
        name: name.to_string(),
        description: description.chars().take(MAX_DESCRIPTION).collect(),
        parameters: definition["inputSchema"].clone(),
    }
}

#[async_trait]
impl Toolbox for McpToolbox {
    fn declarations(&self) -> Vec<ToolDeclaration> {
        self.declarations.clone()
    }

    fn needs_approval(&self, name: &str) -> bool {
        self.routes.get(name).is_some_and(|r| r.asks)
    }

    fn effect(&self, name: &str) -> Effect {
        self.routes.get(name).map_or(Effect::SideEffect, |r| r.effect)
    }

    fn tool_type(&self, _name: &str) -> &'static str {
        "extension"
    }

    async fn call(&self, name: &str, arguments: &Value, context: &CallContext) -> ToolOutcome {
        let started = Instant::now();
        let result = match self.routes.get(name) {
            None => Err(ToolError::new(ToolErrorKind::UnknownTool, format!("no MCP server offers `{name}`"))),
            Some(route) => {
                let server = &self.servers[route.server];
                match server.call(&route.tool, arguments, context).await {
                    Ok(result) => read_result(result, route, server.spec.max_result),
                    Err(error) => Err(error),
                }
            }
        };
        ToolOutcome { result, log: String::new(), duration: started.elapsed() }
    }
}

impl Server {
    fn error(&self, kind: ToolErrorKind, message: impl std::fmt::Display) -> ToolError {
        ToolError::new(
            kind,
            process::redact(&format!("MCP server `{}`: {message}", self.spec.name), &self.spec.secrets),
        )
    }

    /// The connection to call on: the live one, or, once, a fresh one if the server died.
    async fn peer(&self) -> Result<Peer<RoleClient>, ToolError> {
        let mut link = self.link.lock().await;
        if let Some(live) = link.as_ref()
            && !live.service.peer().is_transport_closed()
        {
            return Ok(live.service.peer().clone());
        }
        let why = link.as_mut().map(Link::why_gone).unwrap_or_else(|| "it was shut down".into());
        if let Some(dead) = link.take() {
            tokio::spawn(dead.close());
        }
        if self.restarted.swap(true, Ordering::SeqCst) {
            return Err(self.error(ToolErrorKind::Failed, format!("it stopped again after one restart: {why}")));
        }
        let (fresh, _) = connect(&self.spec, Some(&self.pinned.protocol), &self.progress).await.map_err(|e| {
            self.error(ToolErrorKind::Failed, format!("it stopped ({why}) and restarting it failed: {e}"))
        })?;
        let offered = list_tools(&self.spec, &fresh).await.map_err(|e| self.error(ToolErrorKind::Failed, e))?;
        let changed = Drift::between(&self.pinned, &offered).changed;
        if !changed.is_empty() {
            let names: Vec<&str> = changed.iter().map(|(tool, _)| tool.as_str()).collect();
            tokio::spawn(fresh.close());
            let message = format!("after a restart its tools changed ({}): refused", names.join(", "));
            return Err(self.error(ToolErrorKind::Denied, message));
        }
        let peer = fresh.service.peer().clone();
        *link = Some(fresh);
        Ok(peer)
    }

    async fn call(&self, tool: &str, arguments: &Value, context: &CallContext) -> Result<CallToolResult, ToolError> {
        let peer = self.peer().await?;
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = arguments.as_object().cloned();
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let timeouts = self.spec.timeouts;
        let mut options = PeerRequestOptions::with_timeout(timeouts.call)
            .reset_timeout_on_progress()
            .with_max_total_timeout(timeouts.max_call);
        // The server continues the call's trace (its `tools/call` span under our `execute_tool`).
        if let Some(trace) = TraceHeaders::of(context.trace()) {
            let mut meta = RequestMetaObject::new();
            meta.set_traceparent(trace.traceparent);
            if let Some(tracestate) = trace.tracestate {
                meta.set_tracestate(tracestate);
            }
            options = options.with_meta(meta);
        }
        let handle = match peer.send_request_with_option(request, options).await {
            Ok(handle) => handle,
            Err(error) => return Err(self.gone(error).await),
        };
        self.note_on_span(context, &handle.id);
        let token = handle.progress_token.clone();
        self.progress.lock().unwrap().insert(token.clone(), context.clone());
        // The run's deadline may drop this call: the server is told, as for a timeout.
        let mut abandoned = CancelOnDrop { peer: Some(peer.clone()), id: handle.id.clone() };
        let response = handle.await_response().await;
        abandoned.peer = None;
        self.progress.lock().unwrap().remove(&token);
        match response {
            Ok(ServerResult::CallToolResult(result)) => Ok(result),
            Ok(ServerResult::InputRequiredResult(_)) => Err(self.error(
                ToolErrorKind::Failed,
                format!("`{tool}` asked for input; reagent answers no MCP server's questions"),
            )),
            Ok(_) => Err(self
                .error(ToolErrorKind::BadResult, format!("`{tool}` was answered with something other than a result"))),
            Err(ServiceError::Timeout { timeout }) => {
                let limit = match timeout == timeouts.max_call {
                    true => format!("ran past `max_call` ({timeout:?})"),
                    false => format!("was silent for `call` ({timeout:?}), with no progress"),
                };
                Err(self.error(ToolErrorKind::Timeout, format!("`{tool}` {limit}; it was sent a cancellation")))
            }
            Err(ServiceError::McpError(error)) => {
                let kind = match error.code {
                    rmcp::model::ErrorCode::INVALID_PARAMS => ToolErrorKind::InvalidArguments,
                    rmcp::model::ErrorCode::METHOD_NOT_FOUND => ToolErrorKind::UnknownTool,
                    _ => ToolErrorKind::Failed,
                };
                let message: String = error.message.chars().take(MAX_ERROR_TEXT).collect();
                Err(self.error(kind, format!("`{tool}` failed: {message} (error {})", error.code.0)))
            }
            Err(error) => Err(self.gone(error).await),
        }
    }

    /// The MCP side of the call's `execute_tool` span (the conventions add these attributes to it
    /// rather than open a client span of their own).
    fn note_on_span(&self, context: &CallContext, id: &RequestId) {
        let span = context.trace().span();
        if !span.is_recording() {
            return;
        }
        let transport = match self.spec.transport {
            McpTransport::Stdio { .. } => "pipe",
            McpTransport::Http { .. } => "tcp",
        };
        span.set_attribute(KeyValue::new("mcp.method.name", "tools/call"));
        span.set_attribute(KeyValue::new("mcp.protocol.version", self.pinned.protocol.clone()));
        span.set_attribute(KeyValue::new("network.transport", transport));
        span.set_attribute(KeyValue::new("jsonrpc.request.id", id.to_string()));
    }

    /// The error for a call the connection dropped: why, as far as the server's side tells.
    async fn gone(&self, error: ServiceError) -> ToolError {
        let why = match self.link.lock().await.as_mut() {
            Some(link) if link.process.is_some() => {
                // The reader and the exit status land a moment after the pipe closes.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                link.why_gone()
            }
            _ => error.to_string(),
        };
        self.error(ToolErrorKind::Failed, format!("the call was lost: {why}"))
    }
}

/// Sends `notifications/cancelled` for a request whose caller stopped waiting.
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: RequestId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(peer) = self.peer.take() else { return };
        let reason = Some("the run stopped waiting".to_string());
        let notification = CancelledNotification::new(CancelledNotificationParam::new(Some(self.id.clone()), reason));
        spawn_detached(async move {
            let _ = peer.send_notification(notification.into()).await;
        });
    }
}

fn spawn_detached(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// A call's result as the model reads it: the structured content (checked against the tool's
/// `outputSchema`), else the text, else the content blocks with binary data left out.
fn read_result(result: CallToolResult, route: &Route, max_result: usize) -> Result<Value, ToolError> {
    let tool = &route.tool;
    if result.is_error == Some(true) {
        let text: String = content_text(&result).chars().take(MAX_ERROR_TEXT).collect();
        return Err(ToolError::new(ToolErrorKind::Failed, text));
    }
    let value = match (result.structured_content.clone(), &route.output) {
        (Some(structured), Some(schema)) => {
            let problems: Vec<String> = schema
                .iter_errors(&structured)
                .take(5)
                .map(|e| match e.instance_path().to_string() {
                    path if path.is_empty() => e.to_string(),
                    path => format!("{path}: {e}"),
                })
                .collect();
            if !problems.is_empty() {
                let message = format!(
                    "`{tool}` returned structuredContent that does not match its outputSchema: {}",
                    problems.join("; ")
                );
                return Err(ToolError::new(ToolErrorKind::BadResult, message));
            }
            structured
        }
        (None, Some(_)) => {
            let message = format!("`{tool}` declares an outputSchema but returned no structuredContent");
            return Err(ToolError::new(ToolErrorKind::BadResult, message));
        }
        (Some(structured), None) => structured,
        (None, None) => content_value(&result),
    };
    let size = serde_json::to_string(&value).map_or(0, |s| s.len());
    if size > max_result {
        let message = format!("`{tool}` returned {size} bytes, over `max_result` ({max_result} bytes)");
        return Err(ToolError::new(ToolErrorKind::OutputTooLarge, message));
    }
    Ok(value)
}

fn blocks(result: &CallToolResult) -> Vec<Value> {
    result.content.iter().map(|block| serde_json::to_value(block).unwrap_or(Value::Null)).collect()
}

fn content_text(result: &CallToolResult) -> String {
    blocks(result).iter().filter_map(|b| b["text"].as_str().map(str::to_string)).collect::<Vec<_>>().join("\n")
}

fn content_value(result: &CallToolResult) -> Value {
    let blocks = blocks(result);
    if blocks.iter().all(|b| b["type"] == "text") {
        return Value::String(content_text(result));
    }
    Value::Array(
        blocks
            .into_iter()
            .map(|mut block| {
                if let Some(data) = block.get_mut("data")
                    && let Some(text) = data.as_str()
                {
                    *data = Value::String(format!("({} bytes of base64, not shown)", text.len()));
                }
                block
            })
            .collect(),
    )
}
