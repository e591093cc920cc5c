//! For the crash tests: `append` adds a line to /ledger/ledger.txt (a side effect that must never
//! happen twice), `echo` returns its text (pure). Both can wait first, so that a test can kill
//! the process while a call runs. Each attempt of `append` also adds its call's idempotency key
//! to /ledger/attempts.txt, before anything else.

use std::io::Write;

use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct AppendArgs {
    line: String,
    /// Milliseconds to wait before appending.
    #[serde(default)]
    wait_ms: u64,
    /// Milliseconds to wait after appending.
    #[serde(default)]
    wait_after_ms: u64,
}

#[derive(Serialize, JsonSchema)]
struct Appended {
    appended: String,
}

fn append(args: AppendArgs) -> Result<Appended, ToolError> {
    let mut attempts = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/ledger/attempts.txt")
        .map_err(|e| ToolError::failed(format!("cannot open the attempts log: {e}")))?;
    attempts
        .write_all(format!("{} {}\n", reagent_tool::idempotency_key(), args.line).as_bytes())
        .map_err(|e| ToolError::failed(format!("cannot log the attempt: {e}")))?;
    drop(attempts);
    std::thread::sleep(std::time::Duration::from_millis(args.wait_ms));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/ledger/ledger.txt")
        .map_err(|e| ToolError::failed(format!("cannot open the ledger: {e}")))?;
    // One write: concurrent appends (other runs, other processes) never interleave within a line.
    file.write_all(format!("{}\n", args.line).as_bytes()).map_err(|e| ToolError::failed(format!("cannot append: {e}")))?;
    drop(file);
    std::thread::sleep(std::time::Duration::from_millis(args.wait_after_ms));
    Ok(Appended { appended: args.line })
}

#[derive(Deserialize, JsonSchema)]
struct EchoArgs {
    text: String,
    #[serde(default)]
    wait_ms: u64,
}

fn echo(args: EchoArgs) -> Result<String, ToolError> {
    std::thread::sleep(std::time::Duration::from_millis(args.wait_ms));
    Ok(args.text)
}

reagent_tool::export_tools! {
    append: SideEffect => "Appends a line to the ledger.",
    echo: Pure => "Returns its text.",
}
