//! `reagent tool …`: the plugin author's commands: scaffold, build, inspect and call a tool
//! component without writing an agent.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Subcommand;
use reagent::agent_loop::check_arguments;
use reagent_sandbox::{DirGrant, Grants, HostGrant, Limits, Sandbox, ToolComponent};

use crate::{Exit, fail};

#[derive(Subcommand)]
pub enum ToolCommand {
    /// Create a tool crate that builds: NAME/Cargo.toml and NAME/src/lib.rs, using the
    /// reagent-tool SDK. Then: `reagent tool build NAME`.
    New {
        /// The crate's name; its tool is named the same, with `-` as `_`
        name: String,
        /// Where to create it
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The reagent-tool SDK (tools/sdk of a reagent checkout)
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/sdk"))]
        sdk: PathBuf,
    },
    /// Build a tool crate into a WebAssembly component (installs the wasm32-wasip2 target if
    /// needed) and print the component's path.
    Build {
        /// The crate's folder
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show a component's tools (description, effect, argument and result schemas) and the
    /// interfaces it imports.
    Inspect {
        /// The component, e.g. tools/dist/calc.wasm
        component: PathBuf,
    },
    /// Call one tool of a component with JSON arguments, granting only what the flags say.
    /// Prints the JSON result on stdout and the tool's log on stderr.
    Call {
        /// The component, e.g. tools/dist/calc.wasm
        component: PathBuf,
        /// The tool's name
        tool: String,
        /// The arguments, a JSON object, e.g. '{"expression": "1+2"}'
        arguments: String,
        /// Allow outgoing HTTP to a host: HOST, HOST:PORT or SCHEME://HOST[:PORT] (repeatable)
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Grant a directory: HOST_DIR:GUEST_PATH, read-only unless it ends in :rw (repeatable)
        #[arg(long = "dir", value_name = "HOST:GUEST[:ro|:rw]")]
        dirs: Vec<String>,
        /// Pass an environment variable through from this shell (repeatable)
        #[arg(long = "env", value_name = "NAME")]
        env: Vec<String>,
        /// Send the arguments to the tool even if they fail its JSON Schema (an agent never
        /// does: to see how the tool itself handles bad input)
        #[arg(long)]
        no_validate: bool,
        /// The call's idempotency key, as the tool sees it (an agent's run gives each call its
        /// own, the same on every retry); by default a new one for this call
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
}

pub async fn run(command: ToolCommand) -> ExitCode {
    let result = match command {
        ToolCommand::New { name, dir, sdk } => new(&name, &dir, &sdk),
        ToolCommand::Build { dir } => build(&dir),
        ToolCommand::Inspect { component } => inspect(&component).await,
        ToolCommand::Call { component, tool, arguments, allow_hosts, dirs, env, no_validate, idempotency_key } => {
            let grants = match grants_from_flags(&allow_hosts, &dirs, &env) {
                Ok(grants) => grants,
                Err(message) => return fail(Exit::Usage, &message),
            };
            let key = idempotency_key.unwrap_or_else(reagent::toolbox::fresh_key);
            return call(&component, &tool, &arguments, &key, grants, !no_validate).await;
        }
    };
    match result {
        Ok(()) => ExitCode::from(Exit::Success as u8),
        Err((code, message)) => fail(code, &message),
    }
}

type Outcome = Result<(), (Exit, String)>;

fn usage(message: String) -> (Exit, String) {
    (Exit::Usage, message)
}

fn new(name: &str, dir: &Path, sdk: &Path) -> Outcome {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(usage(format!("`{name}`: a tool name is lowercase letters, digits, `-` and `_`, from a letter")));
    }
    if !sdk.join("Cargo.toml").is_file() {
        return Err(usage(format!("the reagent-tool SDK is not at {}: pass --sdk PATH/tools/sdk", sdk.display())));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(usage(format!("{} already exists", root.display())));
    }
    let sdk = sdk.canonicalize().map_err(|e| (Exit::Internal, format!("{}: {e}", sdk.display())))?;
    let function = name.replace('-', "_");
    let manifest = TEMPLATE_MANIFEST.replace("{name}", name).replace("{sdk}", &sdk.display().to_string());
    let source = TEMPLATE_SOURCE.replace("{function}", &function).replace("{name}", name);
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|e| (Exit::Internal, format!("cannot write {}: {e}", path.display())))
    };
    std::fs::create_dir_all(root.join("src"))
        .map_err(|e| (Exit::Internal, format!("cannot create {}: {e}", root.display())))?;
    write(root.join("Cargo.toml"), &manifest)?;
    write(root.join("src/lib.rs"), &source)?;
    write(root.join(".gitignore"), "/target\n")?;
    eprintln!(
        "created {} with the tool `{function}`; build it with: reagent tool build {}",
        root.display(),
        root.display()
    );
    Ok(())
}

const TEMPLATE_MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
reagent-tool = { path = "{sdk}" }
schemars = { version = "1", features = ["preserve_order"] }
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = "s"
lto = true
strip = true
panic = "abort"

# A crate of its own, even inside another workspace's folder.
[workspace]
"#;

const TEMPLATE_SOURCE: &str = r#"//! `{name}`: a reagent tool. Build: `reagent tool build`. Try: `reagent tool call
//! target/wasm32-wasip2/release/{function}.wasm {function} '{"text": "one two three"}'`.

use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the model passes. Doc comments become the descriptions in the tool's JSON Schema.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The text to count the words of.
    text: String,
}

/// What the tool returns.
#[derive(Serialize, JsonSchema)]
struct Counted {
    /// Words separated by whitespace.
    words: usize,
}

fn {function}(args: Args) -> Result<Counted, ToolError> {
    if args.text.len() > 1_000_000 {
        return Err(ToolError::invalid_arguments("`text` is over 1 MB"));
    }
    Ok(Counted { words: args.text.split_whitespace().count() })
}

// Each entry: the function (its name is the tool's name), its effect (Pure, Idempotent or
// SideEffect) and the description the model reads.
reagent_tool::export_tools! {
    {function}: Pure => "Counts the words in a text.",
}
"#;

fn build(dir: &Path) -> Outcome {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(usage(format!("{} has no Cargo.toml: is it a tool crate?", dir.display())));
    }
    let (library, target_dir) = library_and_target_dir(&manifest)?;
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if installed.is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip2")) {
        run_command(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    run_command(
        Command::new("cargo")
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest),
    )?;
    let wasm = target_dir.join(format!("wasm32-wasip2/release/{library}.wasm"));
    if !wasm.is_file() {
        return Err((Exit::BrokenTool, format!("the build succeeded but {} is missing", wasm.display())));
    }
    println!("{}", wasm.display());
    Ok(())
}

/// The crate's `cdylib` target name (as the `.wasm` file is named) and cargo's target directory.
fn library_and_target_dir(manifest: &Path) -> Result<(String, PathBuf), (Exit, String)> {
    let output = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .map_err(|e| (Exit::Internal, format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(usage(format!(
            "cargo cannot read {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| (Exit::Internal, format!("cargo metadata: {e}")))?;
    let library = metadata["packages"][0]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["crate_types"].as_array().is_some_and(|k| k.iter().any(|k| k == "cdylib")))
        .and_then(|t| t["name"].as_str())
        .map(|name| name.replace('-', "_"))
        .ok_or_else(|| {
            usage(format!("{} builds no cdylib: add `[lib] crate-type = [\"cdylib\"]`", manifest.display()))
        })?;
    let target_dir =
        metadata["target_directory"].as_str().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    Ok((library, target_dir))
}

fn run_command(command: &mut Command) -> Outcome {
    let status = command.status().map_err(|e| (Exit::Internal, format!("cannot run {command:?}: {e}")))?;
    if !status.success() {
        return Err((Exit::BrokenTool, format!("{command:?} failed ({status})")));
    }
    Ok(())
}

async fn inspect(component: &Path) -> Outcome {
    let sandbox = Sandbox::new().map_err(|e| (Exit::Internal, e.to_string()))?;
    let loaded = sandbox
        .load(component, Grants::default(), Limits::default())
        .await
        .map_err(|e| (Exit::BrokenTool, e.to_string()))?;
    let described = serde_json::json!({
        "component": component,
        "contract": format!("reagent:tool@{}", loaded.contract()),
        "tools": loaded.tools(),
        "imports": loaded.imports(),
    });
    println!("{}", serde_json::to_string_pretty(&described).unwrap_or_default());
    Ok(())
}

async fn call(component: &Path, tool: &str, arguments: &str, key: &str, grants: Grants, validate: bool) -> ExitCode {
    let parsed = match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(arguments) {
        Ok(parsed) => serde_json::Value::Object(parsed),
        Err(e) => return fail(Exit::Usage, &format!("the arguments must be a JSON object: {e}")),
    };
    let sandbox = match Sandbox::new() {
        Ok(sandbox) => sandbox,
        Err(e) => return fail(Exit::Internal, &e.to_string()),
    };
    let loaded = match sandbox.load(component, grants, Limits::default()).await {
        Ok(loaded) => loaded,
        Err(e) => return fail(Exit::BrokenTool, &e.to_string()),
    };
    if validate && let Err(message) = check(&loaded, tool, &parsed) {
        return fail(Exit::Usage, &message);
    }
    let output = loaded.call(tool, arguments, key).await;
    if !output.log.is_empty() {
        eprint!("{}", output.log);
    }
    match output.result {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            ExitCode::from(Exit::Success as u8)
        }
        Err(error) => fail(Exit::ToolFailed, &format!("the tool failed ({}): {}", error.kind.as_str(), error.message)),
    }
}

fn grants_from_flags(allow_hosts: &[String], dirs: &[String], env: &[String]) -> Result<Grants, String> {
    let http = allow_hosts.iter().map(|h| HostGrant::parse(h)).collect::<Result<_, _>>()?;
    let dirs = dirs
        .iter()
        .map(|flag| {
            let (spec, writable) = match flag.rsplit_once(':') {
                Some((spec, "rw")) => (spec, true),
                Some((spec, "ro")) => (spec, false),
                _ => (flag.as_str(), false),
            };
            let (host, guest) =
                spec.split_once(':').ok_or_else(|| format!("--dir {flag}: write HOST_DIR:GUEST_PATH[:ro|:rw]"))?;
            Ok(match writable {
                true => DirGrant::read_write(host, guest),
                false => DirGrant::read_only(host, guest),
            })
        })
        .collect::<Result<_, String>>()?;
    let env = env
        .iter()
        .map(|name| {
            std::env::var(name).map(|value| (name.clone(), value)).map_err(|_| format!("--env {name}: not set"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Grants { dirs, http, env })
}

/// The checks an agent makes before a call: the tool exists and the arguments fit its schema.
fn check(loaded: &ToolComponent, tool: &str, arguments: &serde_json::Value) -> Result<(), String> {
    let Some(description) = loaded.tools().iter().find(|t| t.name == tool) else {
        let names: Vec<&str> = loaded.tools().iter().map(|t| t.name.as_str()).collect();
        return Err(format!("the component has no tool `{tool}`; its tools are: {}", names.join(", ")));
    };
    let validator = jsonschema::validator_for(&description.parameters)
        .map_err(|e| format!("the parameters schema of `{tool}` is not valid JSON Schema: {e}"))?;
    check_arguments(tool, &validator, arguments).map_err(|e| format!("{} (--no-validate sends them anyway)", e.message))
}
