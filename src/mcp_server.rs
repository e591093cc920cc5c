//! `reagent mcp serve`: an agent's Wasm tools (and, with `--agent-tool`, the agent itself as one
//! tool) served over MCP, both protocol eras, on stdio or Streamable HTTP. The agent file is the
//! only source of grants and limits: a client calls what the file declares, as the file allows; it
//! can never widen either. A call that needs a person's yes asks the client (elicitation) where
//! the client can be asked, and otherwise fails: it never runs without a yes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry::context::FutureExt;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequestParams, Implementation,
    InputRequiredResult, InputResponses, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::agent_loop::{Approver, Decision, RunOutcome, check_arguments};
use crate::conversation::ToolCall;
use crate::events::Event;
use crate::launch::{LaunchError, launch, wasm_tools};
use crate::runtime::Runtime;
use crate::spec::{AgentSpec, GivenInputs};
use crate::toolbox::{CallContext, Effect, Toolbox, WasmToolbox, fresh_key};
use crate::trace_context::TraceHeaders;

/// What one agent file offers MCP clients.
#[derive(Clone)]
pub struct McpService {
    inner: Arc<Served>,
}

struct Served {
    file: PathBuf,
    spec: AgentSpec,
    runtime: Arc<Runtime>,
    toolbox: WasmToolbox,
    tools: Vec<Tool>,
    validators: HashMap<String, jsonschema::Validator>,
    /// The agent's own tool's name, when it is served (`--agent-tool`).
    agent_tool: Option<String>,
    approval: Approvals,
    /// Where `tools/call` spans go.
    tracer: BoxedTracer,
}

impl McpService {
    /// Loads the agent's components as a run would (same grants, limits and approvals).
    pub async fn load(runtime: Arc<Runtime>, file: PathBuf, agent_tool: bool) -> Result<McpService, LaunchError> {
        let spec = AgentSpec::load(&file).map_err(LaunchError::Spec)?;
        let toolbox = wasm_tools(&runtime, &spec).await?;
        let mut tools = Vec::new();
        let mut validators = HashMap::new();
        for (entry, tool) in toolbox.descriptions() {
            let network = !spec.tools[entry].grants.http.is_empty();
            let effect = toolbox.effect(&tool.name);
            let validator = jsonschema::validator_for(&tool.parameters).map_err(|e| {
                LaunchError::Tool(crate::spec::SpecError::new(
                    spec.tools[entry].at.clone(),
                    format!("tool `{}` has invalid parameters: {e}", tool.name),
                ))
            })?;
            validators.insert(tool.name.clone(), validator);
            let mut served = Tool::new(tool.name.clone(), tool.description.clone(), object(&tool.parameters));
            // MCP's outputSchema describes an object; a tool returning anything else declares none.
            served.output_schema = tool.result.as_ref().filter(|r| r["type"] == "object").map(object);
            served.annotations = Some(annotations(effect, network, toolbox.needs_approval(&tool.name)));
            tools.push(served);
        }
        let agent_tool = agent_tool.then(|| spec.name.clone());
        if let Some(name) = &agent_tool {
            if validators.contains_key(name) {
                let message =
                    format!("the agent's name `{name}` is also a tool's: rename one to serve the agent as a tool");
                return Err(LaunchError::Spec(crate::spec::SpecError::new(
                    crate::spec::Position::start_of(&file),
                    message,
                )));
            }
            let description = spec.description.clone().unwrap_or_else(|| format!("Runs the agent `{name}` on a task."));
            let mut served = Tool::new(name.clone(), description, object(&agent_parameters(&spec)));
            // A run does what its tools do; its calls are checked against the agent file as always.
            served.annotations = Some(annotations(Effect::SideEffect, true, false));
            tools.push(served);
        }
        let tracer = runtime.telemetry().tracer();
        let approval = Approvals::new();
        let served = Served { file, spec, runtime, toolbox, tools, validators, agent_tool, approval, tracer };
        Ok(McpService { inner: Arc::new(served) })
    }

    /// The tools as clients list them.
    pub fn tools(&self) -> &[Tool] {
        &self.inner.tools
    }
}

fn object(schema: &Value) -> Arc<Map<String, Value>> {
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

/// The agent as a tool: a task, and its declared inputs.
fn agent_parameters(spec: &AgentSpec) -> Value {
    let mut inputs = Map::new();
    for input in &spec.inputs {
        inputs.insert(input.name.clone(), input.schema());
    }
    let required: Vec<&str> = spec.inputs.iter().filter(|i| i.is_required()).map(|i| i.name.as_str()).collect();
    json!({
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "What the agent is asked to do."},
            "inputs": {"type": "object", "properties": inputs, "required": required, "additionalProperties": false},
        },
        "required": if required.is_empty() { json!(["task"]) } else { json!(["task", "inputs"]) },
        "additionalProperties": false,
    })
}

/// MCP's hints from what the agent file and the tool declare: `pure` reads only; `idempotent` may
/// be repeated; `side-effect` is destructive; a network grant opens the world. A tool that waits
/// for approval is never advertised as harmless.
fn annotations(effect: Effect, network: bool, asks: bool) -> ToolAnnotations {
    let mut hints = ToolAnnotations::default();
    hints.read_only_hint = Some(effect == Effect::Pure && !asks);
    hints.destructive_hint = Some(effect == Effect::SideEffect);
    hints.idempotent_hint = Some(effect != Effect::SideEffect);
    hints.open_world_hint = Some(network);
    hints
}

impl ServerHandler for McpService {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::default();
        info.capabilities = ServerCapabilities::builder().enable_tools().build();
        info.server_info = Implementation::new("reagent", env!("CARGO_PKG_VERSION"));
        info.instructions = self.inner.spec.description.clone();
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.inner.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let cancelled = context.ct.clone();
        let trace = self.inner.trace(&request, &context);
        // A client's cancellation drops the call (the sandbox stops the instance) or the run.
        let result = async {
            tokio::select! {
                result = self.inner.call(request, &context) => result,
                _ = cancelled.cancelled() => Err(McpError::invalid_request("cancelled by the client", None)),
            }
        }
        .with_context(trace.clone())
        .await;
        let error = match &result {
            Ok(CallToolResponse::Complete(done)) if done.is_error == Some(true) => Some("tool_error".to_string()),
            Ok(_) => None,
            Err(error) => Some(error.code.0.to_string()),
        };
        let span = trace.span();
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("error.type", error.clone()));
            span.set_status(Status::error(error));
        }
        span.end();
        result
    }
}

impl Served {
    /// A `tools/call`'s server span, continuing the client's trace from `_meta.traceparent`.
    fn trace(&self, request: &CallToolRequestParams, context: &RequestContext<RoleServer>) -> Context {
        let parent = context
            .meta
            .get_traceparent()
            .and_then(|parent| TraceHeaders::received(parent, context.meta.get_tracestate()))
            .map_or_else(Context::new, |headers| headers.parent());
        let version = context.protocol_version().map(|v| v.to_string()).unwrap_or_default();
        let attributes = vec![
            KeyValue::new("mcp.method.name", "tools/call"),
            KeyValue::new("gen_ai.operation.name", "execute_tool"),
            KeyValue::new("gen_ai.tool.name", request.name.to_string()),
            KeyValue::new("jsonrpc.request.id", context.id.to_string()),
            KeyValue::new("mcp.protocol.version", version),
        ];
        let tracer = &self.tracer;
        let span = tracer
            .span_builder(format!("tools/call {}", request.name))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        parent.with_span(span)
    }

    /// A `tools/call`: the agent's own tool, or a Wasm tool: its arguments checked, its approval
    /// asked where the agent file wants one, then run in the sandbox.
    async fn call(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        if self.agent_tool.as_deref() == Some(name.as_str()) {
            return self.run_agent(&arguments, context).await.map(CallToolResponse::Complete);
        }
        let Some(validator) = self.validators.get(&name) else {
            let known: Vec<&str> = self.tools.iter().map(|t| t.name.as_ref()).collect();
            return Err(McpError::invalid_params(
                format!("there is no tool `{name}`; the tools are: {}", known.join(", ")),
                None,
            ));
        };
        if let Err(error) = check_arguments(&name, validator, &arguments) {
            return Ok(CallToolResponse::Complete(failure(error.kind.as_str(), &error.message)));
        }
        if self.toolbox.needs_approval(&name) {
            let call = ToolCall { id: "call_1".into(), name: name.clone(), arguments: arguments.clone() };
            let answer = self
                .approval
                .ask(
                    context,
                    &self.spec.name,
                    &call,
                    request.input_responses.as_ref(),
                    request.request_state.as_deref(),
                )
                .await;
            match answer {
                Asked::Yes => {}
                Asked::No(refused) => return Ok(CallToolResponse::Complete(failure("denied", &refused))),
                Asked::Ask(question) => return Ok(CallToolResponse::InputRequired(question)),
            }
        }
        let outcome = self.toolbox.call(&name, &arguments, &CallContext::new(fresh_key())).await;
        Ok(CallToolResponse::Complete(match outcome.result {
            Ok(value) => success(value, self.declares_output(&name)),
            Err(error) => failure(error.kind.as_str(), &error.message),
        }))
    }

    fn declares_output(&self, name: &str) -> bool {
        self.tools.iter().any(|t| t.name == name && t.output_schema.is_some())
    }

    /// Runs the agent on the call's task and inputs, reporting each step as progress.
    async fn run_agent(
        &self,
        arguments: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let task = arguments["task"].as_str().unwrap_or_default().to_string();
        let given = GivenInputs {
            from_file: arguments["inputs"].as_object().cloned().unwrap_or_default(),
            from_flags: Vec::new(),
        };
        let (spec, mut agent) = match launch(&self.runtime, &self.file, &given).await {
            Ok(launched) => launched,
            Err(LaunchError::Inputs(message)) => return Ok(failure("invalid_arguments", &message)),
            Err(error) => return Ok(failure("failed", &error.to_string())),
        };
        let modern = context.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        let peer = (!modern).then(|| context.peer.clone());
        agent.set_approver(Box::new(ClientApprover { peer, agent: spec.name.clone() }));
        let token = context.meta.get_progress_token();
        let total = f64::from(spec.limits.max_steps);
        let (steps, mut reported) = mpsc::unbounded_channel();
        let peer = context.peer.clone();
        let forwarding = tokio::spawn(async move {
            while let Some(step) = reported.recv().await {
                if let Some(token) = &token {
                    let mut progress = ProgressNotificationParam::new(token.clone(), f64::from(step));
                    progress.total = Some(total);
                    progress.message = Some(format!("step {step}"));
                    let _ = peer.notify_progress(progress).await;
                }
            }
        });
        let mut events = move |event: &Event| {
            if let Event::StepStarted { step, .. } = event {
                let _ = steps.send(*step);
            }
        };
        let outcome = agent.run(&task, &mut events).await;
        drop(events);
        let _ = forwarding.await;
        Ok(match outcome {
            Ok(RunOutcome::Answered { answer, output, .. }) => match output {
                Some(output) => success(output, false),
                None => CallToolResult::success(vec![ContentBlock::text(answer)]),
            },
            Ok(RunOutcome::Paused(_)) => failure("approval_required", "a call needed approval that was not given"),
            Ok(RunOutcome::InvalidOutput { errors, .. }) => failure("invalid_output", &errors.join("; ")),
            Ok(RunOutcome::Incomplete { budget, answer, .. }) => {
                let answer = answer.map(|a| format!("; its best answer: {a}")).unwrap_or_default();
                failure("incomplete", &format!("the run ran out of {}{answer}", budget.describe(&spec.limits)))
            }
            Ok(RunOutcome::Looped { tool, .. }) => {
                failure("loop", &format!("the run was stopped for repeating `{tool}`"))
            }
            Ok(RunOutcome::Stopped { stop, .. }) => failure("stopped", &stop.to_string()),
            Err(error) => failure("model_failed", &error.to_string()),
        })
    }
}

/// A call's result: its JSON as text (for clients that read only text) and, where the tool
/// declares an output schema, as `structuredContent`.
fn success(value: Value, structured: bool) -> CallToolResult {
    let text = match &value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if structured {
        result.structured_content = Some(value);
    }
    result
}

fn failure(kind: &str, message: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!("error ({kind}): {message}"))])
}

/// The answer to "may this call run?".
enum Asked {
    Yes,
    /// Why not: a person said no, or the client cannot be asked.
    No(String),
    /// The 2026-07-28 era: the question goes back as an input-required result, which the client
    /// answers by calling again.
    Ask(InputRequiredResult),
}

/// How approvals are asked of a client: by an elicitation request in the old era, by an
/// input-required result in the new one, whose `requestState` seals the call it asked about (an
/// HMAC under a key of this process), so that a yes is never spent on other arguments.
struct Approvals {
    key: [u8; 32],
}

/// The key of an approval's answer in `inputRequests` / `inputResponses`.
const APPROVAL: &str = "approval";

impl Approvals {
    fn new() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Approvals { key }
    }

    fn seal(&self, call: &ToolCall) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&self.key).expect("any key length");
        hmac::Mac::update(&mut mac, format!("{}\n{}", call.name, call.arguments).as_bytes());
        hmac::Mac::finalize(mac).into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    async fn ask(
        &self,
        context: &RequestContext<RoleServer>,
        agent: &str,
        call: &ToolCall,
        responses: Option<&InputResponses>,
        state: Option<&str>,
    ) -> Asked {
        let modern = context.protocol_version().is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        let can_ask = match modern {
            true => context.client_capabilities().is_some_and(|c| c.elicitation.is_some()),
            false => !context.peer.supported_elicitation_modes().is_empty(),
        };
        if !can_ask {
            return Asked::No(format!(
                "`{}` needs a person's approval (the agent file's `approval:`), and this client cannot be asked (it offers no elicitation)",
                call.name
            ));
        }
        let form = approval_form(agent, call);
        if !modern {
            let params: ElicitRequestParams = serde_json::from_value(form).expect("the approval form is valid");
            return match context.peer.create_elicitation(params).await {
                Ok(reply) => verdict(call, &serde_json::to_value(reply).unwrap_or_default()),
                Err(e) => Asked::No(format!("asking for approval failed: {e}")),
            };
        }
        let sealed = self.seal(call);
        match responses.and_then(|r| r.get(APPROVAL)) {
            Some(reply) if state == Some(sealed.as_str()) => verdict(call, reply),
            Some(_) => Asked::No(format!("the approval sent does not belong to this call of `{}`", call.name)),
            None => {
                let question = json!({
                    "resultType": "input_required",
                    "inputRequests": {APPROVAL: {"method": "elicitation/create", "params": form}},
                    "requestState": sealed,
                });
                Asked::Ask(serde_json::from_value(question).expect("the approval question is valid"))
            }
        }
    }
}

/// The question a person is asked: the agent, the tool and its arguments, and a yes or no.
fn approval_form(agent: &str, call: &ToolCall) -> Value {
    let shown: String = call.arguments.to_string().chars().take(500).collect();
    json!({
        "mode": "form",
        "message": format!("Agent `{agent}` wants to run `{}` with {shown}. Allow it?", call.name),
        "requestedSchema": {
            "type": "object",
            "properties": {"approve": {"type": "boolean", "title": "Allow this call"}},
            "required": ["approve"],
        },
    })
}

/// A yes only when the person accepted the form and ticked `approve`.
fn verdict(call: &ToolCall, reply: &Value) -> Asked {
    match reply["action"] == "accept" && reply["content"]["approve"] == true {
        true => Asked::Yes,
        false => Asked::No(format!("a person said no to `{}`", call.name)),
    }
}

/// Approvals of an agent run served as a tool: asked of the client.
struct ClientApprover {
    /// The old era's connection, which can carry an elicitation request; none in the new era.
    peer: Option<Peer<RoleServer>>,
    agent: String,
}

#[async_trait::async_trait]
impl Approver for ClientApprover {
    async fn decide(&self, _step: u32, call: &ToolCall) -> Decision {
        // Mid-run a question can only go out as a request (the old era); where the client cannot
        // be asked so, the call is denied and the model told.
        let Some(peer) = self.peer.as_ref().filter(|p| !p.supported_elicitation_modes().is_empty()) else {
            return Decision::Deny;
        };
        let params: ElicitRequestParams =
            serde_json::from_value(approval_form(&self.agent, call)).expect("the approval form is valid");
        match peer.create_elicitation(params).await {
            Ok(reply) if matches!(verdict(call, &serde_json::to_value(&reply).unwrap_or_default()), Asked::Yes) => {
                Decision::Approve
            }
            _ => Decision::Deny,
        }
    }
}

/// Serves `service` on this process's stdin and stdout until the client closes stdin. Nothing
/// else may be written to stdout meanwhile.
pub async fn serve_stdio(service: McpService) -> Result<(), String> {
    use rmcp::ServiceExt;
    let running =
        service.serve(rmcp::transport::stdio()).await.map_err(|e| format!("the client's opening failed: {e}"))?;
    running.waiting().await.map_err(|e| format!("serving stopped: {e}"))?;
    Ok(())
}

/// The environment variable holding the bearer token clients must send when `--http` binds
/// beyond loopback.
pub const TOKEN_VARIABLE: &str = "REAGENT_MCP_TOKEN";

/// Serves `service` over Streamable HTTP at `/mcp` on `listener` until `stop` resolves. `Host`
/// must name the bound address (or `hosts`), a browser's `Origin` must be one of `origins`, and
/// with a `token` every request must carry it as `Authorization: Bearer`.
pub async fn serve_http(
    service: McpService,
    listener: tokio::net::TcpListener,
    hosts: Vec<String>,
    origins: Vec<String>,
    token: Option<String>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};

    let cancel = tokio_util::sync::CancellationToken::new();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_cancellation_token(cancel.clone());
    let http =
        StreamableHttpService::new(move || Ok(service.clone()), Arc::new(LocalSessionManager::default()), config);
    let token: Option<Arc<str>> = token.map(Into::into);
    let router = axum::Router::new().nest_service("/mcp", http).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                if let Some(token) = token {
                    let sent = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    let expected = format!("Bearer {token}");
                    if !sent.is_some_and(|sent| constant_time_eq(sent.as_bytes(), expected.as_bytes())) {
                        return axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                            "missing or wrong bearer token",
                        ));
                    }
                }
                next.run(request).await
            }
        },
    ));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            stop.await;
            cancel.cancel();
        })
        .await
        .map_err(|e| format!("serving stopped: {e}"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
