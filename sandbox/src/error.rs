use std::path::PathBuf;

use serde::Serialize;

/// Why a tool call failed. The first five come from the tool itself (the WIT `error-kind`); the
/// rest are the sandbox stopping a call that broke a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidArguments,
    UnknownTool,
    NotFound,
    Denied,
    Failed,
    /// The call ran past its CPU deadline.
    Timeout,
    /// The call tried to grow its linear memory past the limit.
    Memory,
    /// The guest trapped (a panic, an out-of-bounds access, ...).
    Trap,
    /// The result, or what the tool wrote to stdout/stderr, is over its limit.
    OutputTooLarge,
    /// The tool returned something that is not JSON.
    BadResult,
    /// The call wrote more bytes to files than its limits or its grant allow.
    WriteLimit,
    /// The call created more files or folders than its limits or its grant allow.
    FileLimit,
    /// The call held more host handles (files, streams, HTTP resources) than `max_handles`.
    HandleLimit,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArguments => "invalid_arguments",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Denied => "denied",
            ErrorKind::Failed => "failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::Trap => "trap",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::BadResult => "bad_result",
            ErrorKind::WriteLimit => "write_limit",
            ErrorKind::FileLimit => "file_limit",
            ErrorKind::HandleLimit => "handle_limit",
        }
    }
}

/// A failed call: returned to the agent loop, never a crash of the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ToolError { kind, message: message.into() }
    }
}

/// A component that cannot be used as a tool.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tool component {path} not found")]
    NotFound { path: PathBuf },
    #[error("cannot read tool component {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path} cannot be used as a tool component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Grant { path: PathBuf, reason: String },
    #[error("{path} cannot be linked: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error("{path} does not describe its tools: {reason}")]
    Describe { path: PathBuf, reason: String },
}

/// The sandbox itself could not start (the engine's configuration, or a thread for its ticker).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly sandbox: {0}")]
pub struct StartError(pub String);
