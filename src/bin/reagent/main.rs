//! The `reagent` command line.

mod human;
mod inputs;
mod mcp;
mod model;
mod run;
mod runs;
mod serve;
mod test;
mod tool;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reagent::launch::{LaunchError, first_turn};
use reagent::model::{ModelRequest, RequestPreview, preview};
use reagent::runs::Runs;
use reagent::runtime::Runtime;
use reagent::telemetry::{FLUSH_AT_EXIT, Telemetry};

/// glibc's allocator spends a fifth of a busy server's time in malloc and free; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit codes:
  0  the agent answered
  1  an unexpected error (I/O, the sandbox could not start)
  2  invalid command-line usage, or --input values that do not fit the agent's inputs:
  3  invalid agent file, or a file it names (e.g. a replay script): the message says file:line:col
  4  a tool component is missing or broken
  5  limits.max_steps ran out: the answer on stdout (if any) is incomplete, the model's best from
     what it knew when tools were taken away
  6  the model failed or cannot start (a replay script ran out of turns, a local model is not
     pulled, a server refused the request or its API key variable is unset)
  7  `reagent tool call`: the tool returned an error
  8  the agent kept repeating the same tool call (stopped as a loop)
  9  limits.max_tool_calls ran out (incomplete, as for 5)
 10  limits.max_tokens ran out (incomplete, as for 5)
 11  limits.timeout ran out (incomplete, as for 5)
 12  the answer did not match output.schema, even after one repair turn
 13  paused: a call needs a person's approval (`approval:`) and no terminal could ask; continue
     with `reagent resume RUN --approve` or `--deny`, RUN as printed
 14  in doubt: a call with side effects started and the run stopped before its outcome was
     recorded; decide with `reagent runs decide RUN CALL retry|done|skip`, then `runs resume`
 15  the run was cancelled
 16  another process is driving the run
 17  `reagent test`: a case failed, could not run, or replays a stale recording

Every run is recorded in the run store (--db, $REAGENT_DB, else $XDG_DATA_HOME/reagent/runs.db or
~/.local/share/reagent/runs.db); its id is printed on stderr as `run ID`.

Telemetry (OpenTelemetry, off unless an endpoint is set): OTEL_EXPORTER_OTLP_ENDPOINT (e.g.
http://127.0.0.1:4318; OTLP over HTTP/protobuf) exports an invoke_agent span per run, a chat span
per model turn and an execute_tool span per call, and the GenAI metrics. Also read:
OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME
(default reagent), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
OTEL_METRIC_EXPORT_INTERVAL, OTEL_SDK_DISABLED. Message and argument contents are recorded only
with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true. `reagent run` continues the trace in
$TRACEPARENT.";

#[derive(Parser)]
#[command(
    name = "reagent",
    version,
    about = "Run tool-using AI agents: an agent is a YAML file, every tool a sandboxed WebAssembly component.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The run store: a SQLite file or `sqlite:` URL (one machine), or a `postgres://` URL
    /// (workers and API nodes sharing one queue; `?max_connections=N` sizes the pool, default 10)
    /// [default: $XDG_DATA_HOME/reagent/runs.db, else ~/.local/share/reagent/runs.db]
    #[arg(long, global = true, env = "REAGENT_DB", value_name = "PATH|URL")]
    db: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent on a task: prints each step on stderr and the answer on stdout.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The agent's YAML file, e.g. agents/calculator.yaml
        agent: PathBuf,
        /// The task, in words
        task: String,
        /// Print one JSON event per line on stdout instead (run_started, step_started, delta,
        /// usage, reasoning, text, tool_call, tool_result, answer, run_finished, …; see README)
        #[arg(long)]
        json: bool,
        /// Also write the answer to FILE: the validated JSON when the agent has `output.schema`,
        /// the answer's text otherwise. Written only when the agent answered (exit 0).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Also record the run into DIR, to replay it as a test (`replay: DIR` in a suite, run by
        /// `reagent test`): what the model produced at each turn, the run's events, and what the
        /// model was shown. Secrets the agent names are replaced.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        #[command(flatten)]
        inputs: inputs::InputArgs,
    },
    /// Run agent test suites (`*.test.yaml`): each case a task on a recording (replayed: the
    /// model's recorded turns, the tools really run) or on the agent's own model (live, `runs:`
    /// times against a `pass_rate:`), with assertions on the run. A line per case as it ends,
    /// then a summary; exit 0 only when every case passed.
    #[command(after_help = test::SUITE_HELP)]
    Test {
        /// Suite files, or folders to find `*.test.yaml` in [default: .]
        paths: Vec<PathBuf>,
        /// Runs at once
        #[arg(long, default_value_t = 8, value_name = "N")]
        jobs: usize,
        /// Also write the results as JUnit XML (for CI systems) to FILE
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Print one JSON object per case on stdout, then a summary object
        #[arg(long)]
        json: bool,
        /// Write each run's events to DIR/SUITE/CASE.jsonl (to see what a failing case did)
        #[arg(long, value_name = "DIR")]
        events: Option<PathBuf>,
    },
    /// Continue a run that paused for approval (exit 13): approve or deny every call it waits for.
    /// (`reagent runs` decides call by call.)
    #[command(after_help = EXIT_CODES)]
    Resume {
        /// The paused run's id, as printed when it paused
        run: String,
        /// Let the waiting calls run
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        approve: bool,
        /// Refuse the waiting calls; the model is told a person declined them
        #[arg(long)]
        deny: bool,
        /// Print one JSON event per line on stdout, as `run --json` does
        #[arg(long)]
        json: bool,
        /// Also write the answer to FILE, as `run --output` does
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check an agent file without running it: the spec, the files it names, the model (pulled,
    /// or its API key set), every tool component and schema. Exits 0 when the agent can run.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// The agent's YAML file, e.g. agents/calculator.yaml
        agent: PathBuf,
    },
    /// List and fetch the local models reagent knows by name.
    #[command(subcommand, after_help = EXIT_CODES)]
    Model(model::ModelCommand),
    /// Write, build, inspect and call tool components.
    #[command(subcommand, after_help = EXIT_CODES)]
    Tool(tool::ToolCommand),
    /// MCP both ways: serve an agent's tools to MCP clients; pin the tools of its MCP servers.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// The runs in the run store: list, show, events, resume, cancel, approve, deny, decide.
    #[command(subcommand, after_help = EXIT_CODES)]
    Runs(runs::RunsCommand),
    /// Serve the agent files of a folder over HTTP (see README: the runs API, SSE events,
    /// approvals, /openapi.json, an OpenAI-compatible /v1/chat/completions). Runs are recorded in
    /// the run store and driven in this process (with `--no-worker`, by `reagent worker`
    /// processes on the same Postgres store); SIGTERM drains them to a turn boundary, and the
    /// next process on the store resumes them.
    Serve {
        /// The folder of agent files (*.yaml) to offer, by their `name:`
        #[arg(long)]
        agents: PathBuf,
        /// Where to listen; beyond loopback only once the store has API keys
        #[arg(long, default_value = "127.0.0.1:8420")]
        listen: std::net::SocketAddr,
        /// Only record and read runs: `reagent worker` processes drive them
        #[arg(long)]
        no_worker: bool,
        #[command(flatten)]
        worker: serve::WorkerArgs,
    },
    /// Drive runs from the run store's queue (a `postgres://` --db shared with other workers and
    /// `reagent serve --no-worker` API nodes): claim queued runs of the agents in --agents, hold
    /// a lease on each while it runs, and take over runs whose worker died once their lease runs
    /// out. SIGTERM stops taking runs and lets the running ones stop at a turn boundary.
    Worker {
        /// The folder of agent files (*.yaml) whose runs this worker takes (at the same paths as
        /// on the API nodes: runs name their files)
        #[arg(long)]
        agents: PathBuf,
        #[command(flatten)]
        worker: serve::WorkerArgs,
    },
    /// API keys for `reagent serve`: create (the secret is shown once), list.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Print the agent's first model turn as its backend would be sent it, without loading or
    /// calling the model: the prompt text with `format: exaone`; the request (messages, tools,
    /// thinking switch, constraint) where the model's own template or a server renders it.
    #[command(after_help = EXIT_CODES)]
    Prompt {
        /// The agent's YAML file
        agent: PathBuf,
        /// The task, in words
        task: String,
        #[command(flatten)]
        inputs: inputs::InputArgs,
    },
}

pub(crate) enum Exit {
    Success = 0,
    Internal = 1,
    Usage = 2,
    InvalidAgent = 3,
    BrokenTool = 4,
    OutOfSteps = 5,
    ModelFailed = 6,
    ToolFailed = 7,
    Looped = 8,
    OutOfToolCalls = 9,
    OutOfTokens = 10,
    OutOfTime = 11,
    InvalidOutput = 12,
    Paused = 13,
    InDoubt = 14,
    Cancelled = 15,
    Busy = 16,
    TestsFailed = 17,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the async runtime: the exporter's HTTP client has one of its own.
    let telemetry = match Telemetry::from_env(matches!(cli.command, Command::Serve { .. })) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(Exit::Usage, &e.to_string()),
    };
    let code = run_command(cli, &telemetry);
    telemetry.shutdown(FLUSH_AT_EXIT);
    code
}

fn run_command(cli: Cli, telemetry: &Telemetry) -> ExitCode {
    let executor = match tokio::runtime::Runtime::new() {
        Ok(executor) => executor,
        Err(e) => return fail(Exit::Internal, &format!("cannot start the async runtime: {e}")),
    };
    // The commands that run agents share one runtime (one sandbox, the loaded models).
    let runtime = || {
        Runtime::new()
            .map(|runtime| runtime.with_telemetry(telemetry.clone()))
            .map_err(|e| fail(Exit::Internal, &e.to_string()))
    };
    let db = cli.db;
    executor.block_on(async {
        match cli.command {
            Command::Run { agent, task, json, output, record, inputs } => {
                match open_runs(db.as_deref(), runtime).await {
                    Ok(runs) => {
                        let outputs = run::Outputs { json, output: output.as_deref(), record: record.as_deref() };
                        run::run(&runs, &agent, &task, &inputs, outputs).await
                    }
                    Err(code) => code,
                }
            }
            Command::Test { paths, jobs, junit, json, events } => match runtime() {
                Ok(runtime) => {
                    let options = test::TestArgs { paths, jobs, junit, json, events };
                    test::run(&runtime, options).await
                }
                Err(code) => code,
            },
            Command::Resume { run, approve, deny: _, json, output } => match open_runs(db.as_deref(), runtime).await {
                Ok(runs) => run::resume(&runs, &run, approve, json, output.as_deref()).await,
                Err(code) => code,
            },
            Command::Runs(command) => match open_runs(db.as_deref(), runtime).await {
                Ok(runs) => runs::run(&runs, command).await,
                Err(code) => code,
            },
            Command::Serve { agents, listen, no_worker, worker } => match open_runs(db.as_deref(), runtime).await {
                Ok(runs) => serve::run(runs, &agents, listen, no_worker, worker).await,
                Err(code) => code,
            },
            Command::Worker { agents, worker } => match open_runs(db.as_deref(), runtime).await {
                Ok(runs) => serve::work(runs, &agents, worker).await,
                Err(code) => code,
            },
            Command::Keys(command) => match open_runs(db.as_deref(), runtime).await {
                Ok(runs) => serve::keys(&runs, command).await,
                Err(code) => code,
            },
            Command::Prompt { agent, task, inputs } => match runtime() {
                Ok(runtime) => prompt(&runtime, &agent, &task, &inputs).await,
                Err(code) => code,
            },
            Command::Validate { agent } => match runtime() {
                Ok(runtime) => validate(&runtime, &agent).await,
                Err(code) => code,
            },
            Command::Tool(command) => tool::run(command).await,
            Command::Mcp(command) => match runtime() {
                Ok(runtime) => mcp::run(command, runtime).await,
                Err(code) => code,
            },
            Command::Model(command) => model::run(command),
        }
    })
}

/// The run store (`--db`, `$REAGENT_DB`, else the data directory's `runs.db`), with the runtime
/// its runs are driven on.
async fn open_runs(db: Option<&str>, runtime: impl FnOnce() -> Result<Runtime, ExitCode>) -> Result<Runs, ExitCode> {
    let location = match db {
        Some(db) => db.to_string(),
        None => match reagent::data_dir() {
            Some(dir) => dir.join("runs.db").to_string_lossy().into_owned(),
            None => return Err(fail(Exit::Usage, "no place for the run store: give --db, or set REAGENT_DB or HOME")),
        },
    };
    let store = reagent_store::open(&location).await.map_err(|e| fail(Exit::Internal, &e.to_string()))?;
    Ok(Runs::new(store, runtime()?))
}

async fn validate(runtime: &Runtime, file: &Path) -> ExitCode {
    let (spec, tools) = match reagent::launch::validate(runtime, file).await {
        Ok(checked) => checked,
        Err(e) => return launch_failure(&e),
    };
    let names = tools;
    let inputs: Vec<String> = spec
        .inputs
        .iter()
        .map(|i| format!("{}{}", i.name, if i.default.is_none() { " (required)" } else { "" }))
        .collect();
    let limits = &spec.limits;
    let lines = [
        format!("{}: valid — agent `{}`", file.display(), spec.name),
        format!("  tools   {}", if names.is_empty() { "none".into() } else { names.join(", ") }),
        format!("  inputs  {}", if inputs.is_empty() { "none".into() } else { inputs.join(", ") }),
        format!(
            "  limits  {} steps · {} tool calls · {} tokens · {:?}",
            limits.max_steps, limits.max_tool_calls, limits.max_tokens, limits.timeout
        ),
        format!(
            "  output  {}",
            if spec.output_schema.is_some() { "JSON checked against output.schema" } else { "text" }
        ),
    ];
    let _ = writeln!(std::io::stdout(), "{}", lines.join("\n"));
    ExitCode::from(Exit::Success as u8)
}

async fn prompt(runtime: &Runtime, file: &Path, task: &str, inputs: &inputs::InputArgs) -> ExitCode {
    let given = match inputs.given() {
        Ok(given) => given,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let (spec, config, tools) = match first_turn(runtime, file, &given).await {
        Ok(first) => first,
        Err(e) => return launch_failure(&e),
    };
    let messages = config.opening(task);
    let request = ModelRequest {
        messages: &messages,
        tools: &tools,
        thinking: config.thinking(1, false),
        tool_choice: config.tool_choice,
        max_thinking_tokens: None,
        answer_schema: config.output_schema.as_ref(),
        deltas: None,
    };
    let shown = match preview(&spec.model, &request) {
        RequestPreview::Prompt(text) => text,
        RequestPreview::Request(body) => {
            eprintln!(
                "reagent: the model's own chat template renders this request; `format: exaone` shows text instead"
            );
            serde_json::to_string_pretty(&body).unwrap_or_default() + "\n"
        }
        RequestPreview::Reference(text) => {
            eprintln!("reagent: a replay model reads no prompt; this is the first turn in EXAONE 4.0's format");
            text
        }
    };
    let _ = std::io::stdout().write_all(shown.as_bytes());
    ExitCode::from(Exit::Success as u8)
}

pub(crate) fn launch_failure(error: &LaunchError) -> ExitCode {
    let code = match error {
        LaunchError::Spec(_) => Exit::InvalidAgent,
        LaunchError::Tool(_) => Exit::BrokenTool,
        LaunchError::Model(_) => Exit::ModelFailed,
        LaunchError::Inputs(_) => Exit::Usage,
    };
    fail(code, &error.to_string())
}

pub(crate) fn fail(code: Exit, message: &str) -> ExitCode {
    eprintln!("reagent: {message}");
    ExitCode::from(code as u8)
}
