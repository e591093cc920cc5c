//! A corpus of broken agent files, `tests/corpus/broken_agents/*.yaml`, one realistic mistake
//! each. Every file must be refused with exit code 3 or 4 (never a panic, never a hang), in one
//! line that names `file:line:col` and says what to do.
//!
//! Each file's first line gives its expectation:
//!
//! ```text
//! # expect: LINE:COL MESSAGE          the error is in this file
//! # expect: PATH:LINE:COL MESSAGE     the error is in a file it names (PATH: relative to the corpus)
//! ```
//!
//! MESSAGE is a case-sensitive substring of what follows `file:line:col: ` in stderr.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::repo_root;

/// How the test loads an agent fully (spec, replay script, tool components) without running a
/// model; `{file}` stands for the agent file.
const LOAD_COMMAND: &[&str] = &["validate", "{file}"];

/// The corpus, relative to the repository root (reagent runs there, so messages name this path).
const CORPUS: &str = "tests/corpus/broken_agents";

/// Longer than any broken file may take to be refused: past it, the run counts as a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// A refusal is one line a person reads; a value quoted whole from a very long line would not be.
const MAX_MESSAGE_CHARS: usize = 1000;

/// Variables the corpus grants or asks for as secrets, and that must therefore not be set.
const UNSET_VARIABLES: &[&str] = &["REAGENT_CORPUS_UNSET_VARIABLE", "REAGENT_CORPUS_MISSING_SECRET"];

#[test]
fn every_broken_agent_is_refused_at_its_place_with_advice() {
    let files = corpus_files();
    assert!(files.len() >= 30, "the corpus has {} files; it should have at least 30", files.len());
    let failures: Vec<String> = files.iter().filter_map(|file| check(file).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} corpus files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The corpus's agent files, sorted so that a failure list reads the same on every run.
fn corpus_files() -> Vec<PathBuf> {
    let dir = repo_root().join(CORPUS);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| Path::new(CORPUS).join(path.file_name().expect("a file name")))
        .collect();
    files.sort();
    files
}

/// Where the error must be and what it must say, read from the file's first line.
struct Expectation {
    /// `path:line:col` as reagent prints it.
    place: String,
    message: String,
}

fn expectation(file: &Path) -> Result<Expectation, String> {
    // Lossy: one corpus file is deliberately not UTF-8 past its first line.
    let bytes = std::fs::read(repo_root().join(file)).map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let first_line = text.lines().next().unwrap_or_default();
    let malformed = || format!("its first line must be `# expect: [PATH:]LINE:COL MESSAGE`, not `{first_line}`");
    let rest = first_line.strip_prefix("# expect: ").ok_or_else(malformed)?;
    let (place, message) = rest.split_once(' ').ok_or_else(malformed)?;
    let parts: Vec<&str> = place.split(':').collect();
    let (in_file, line, column) = match parts[..] {
        [line, column] => (file.to_path_buf(), line, column),
        [other, line, column] => (Path::new(CORPUS).join(other), line, column),
        _ => return Err(malformed()),
    };
    if line.parse::<u64>().is_err() || column.parse::<u64>().is_err() || message.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Expectation { place: format!("{}:{line}:{column}", in_file.display()), message: message.to_string() })
}

fn check(file: &Path) -> Result<(), String> {
    let name = file.display();
    let expected = expectation(file).map_err(|e| format!("{name}: {e}"))?;
    let outcome = load(file).map_err(|e| format!("{name}: {e}"))?;
    let stderr = outcome.stderr.trim_end();
    let mut problems = Vec::new();
    match outcome.code {
        Some(3 | 4) => {}
        Some(101) => problems.push("exit code 101: it panicked".to_string()),
        Some(code) => problems.push(format!("exit code {code}, expected 3 (invalid agent) or 4 (broken tool)")),
        None => problems.push("killed by a signal".to_string()),
    }
    if stderr.contains("panicked") {
        problems.push("stderr reports a panic".to_string());
    }
    let located = format!("{}: ", expected.place);
    match stderr.split_once(&located) {
        None => problems.push(format!("stderr does not name `{}`", expected.place)),
        Some((_, message)) if !message.contains(&expected.message) => {
            problems.push(format!("the message does not contain `{}`", expected.message));
        }
        Some(_) => {}
    }
    if stderr.lines().count() != 1 {
        problems.push(format!("stderr has {} lines, expected one", stderr.lines().count()));
    }
    if stderr.chars().count() > MAX_MESSAGE_CHARS {
        problems
            .push(format!("stderr has {} characters, at most {MAX_MESSAGE_CHARS} read well", stderr.chars().count()));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!("{name}: {}\n  stderr: {}", problems.join("; "), shortened(stderr))),
    }
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs the load command on `file` from the repository root, as `common::reagent` does, but
/// killed at `DEADLINE` so that a hang is reported rather than stalling the suite.
fn load(file: &Path) -> Result<Outcome, String> {
    let file = file.to_str().expect("corpus paths are UTF-8");
    let args: Vec<&str> = LOAD_COMMAND.iter().map(|arg| if *arg == "{file}" { file } else { arg }).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_reagent"));
    command.args(&args).current_dir(repo_root()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for variable in UNSET_VARIABLES {
        command.env_remove(variable);
    }
    let mut child = command.spawn().map_err(|e| format!("cannot start reagent: {e}"))?;
    // Read stderr on a thread: a child blocked on a full pipe would look like a hang.
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| format!("cannot wait for reagent: {e}"))? {
            Some(status) => break status,
            None if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("hung: still running after {DEADLINE:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stderr = reader.join().map_err(|_| "the stderr reader failed".to_string())?;
    Ok(Outcome { code: status.code(), stderr })
}

/// Stderr in a failure report, cut so that one runaway message does not hide the others.
fn shortened(text: &str) -> String {
    const SHOWN: usize = 600;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}… ({} characters in all)", &text[..cut], text.chars().count()),
        None => text.to_string(),
    }
}
