//! Raw-text chat formats: how a conversation becomes the exact prompt a model reads, and how the
//! text a model writes becomes reasoning, tool calls and an answer. Used by backends that exchange
//! raw text (`replay`, a local model driven through reagent's own renderer); backends that return
//! structured tool calls never come here.

pub mod exaone;
mod parse;
pub mod prompt;
mod python_json;
pub mod template;

pub use parse::{ParsedCall, ParsedOutput, UnreadableCall, parse_output};
pub use prompt::{Origin, Prompt};
pub use python_json::to_python_json;
