//! YAML with positions: every error names `file:line:col`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A place in a file, 1-based as editors count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub fn new(file: &Path, location: serde_saphyr::Location) -> Self {
        Position { file: file.to_path_buf(), line: location.line().max(1), column: location.column().max(1) }
    }

    pub fn start_of(file: &Path) -> Self {
        Position { file: file.to_path_buf(), line: 1, column: 1 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// A problem with an agent file, or with a file it names, at a known place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    pub at: Position,
    pub message: String,
}

impl SpecError {
    pub fn new(at: Position, message: impl Into<String>) -> Self {
        SpecError { at, message: message.into() }
    }
}

/// Reads and deserialises a YAML file. Only plain data comes out of YAML: no tags that construct
/// objects, no includes, no code.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(Position::start_of(path), format!("cannot read the file: {e}")))?;
    parse(path, &text)
}

pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError::new(Position::start_of(path), "the file is empty"));
    }
    serde_saphyr::from_str(text).map_err(|error| {
        let at = error.location().map_or_else(|| Position::start_of(path), |l| Position::new(path, l));
        SpecError::new(at, bare_message(&error))
    })
}

/// serde-saphyr renders a snippet and the position into its message; the position is already in
/// `file:line:col`, so keep one line of words.
fn bare_message(error: &serde_saphyr::Error) -> String {
    let text = error.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default();
    match first.rfind(" at line ") {
        Some(cut) => first[..cut].to_string(),
        None => first.to_string(),
    }
}
