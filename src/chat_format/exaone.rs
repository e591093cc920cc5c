//! EXAONE 4.0's chat format, byte for byte as its official template renders it
//! (`shared/reference/exaone4-format.md`). The prompt keeps the origin of each piece: the
//! format's markers are control tokens to an engine, everything a conversation brings is text.

use serde_json::json;

use super::prompt::Prompt;
use super::python_json::to_python_json;
use crate::conversation::{Message, ToolDeclaration};

const END_OF_TURN: &str = "[|endofturn|]\n";
const EMPTY_THINK: &str = "<think>\n\n</think>\n\n";

/// The prompt's text: see [`render_prompt`].
pub fn render(messages: &[Message], tools: &[ToolDeclaration], thinking: bool) -> String {
    render_prompt(messages, tools, thinking).text()
}

/// Renders `messages` with `tools` declared, ending with the generation prompt: reasoning on
/// leaves the model inside an open `<think>` block, reasoning off closes it empty.
pub fn render_prompt(messages: &[Message], tools: &[ToolDeclaration], thinking: bool) -> Prompt {
    let mut out = Prompt::default();
    let mut rest = messages;
    match messages.first() {
        Some(Message::System { content }) => {
            out.format("[|system|]\n");
            out.outside(content);
            if !tools.is_empty() {
                out.format("\n\n");
                push_tool_block(&mut out, tools);
            }
            out.format(END_OF_TURN);
            rest = &messages[1..];
        }
        _ if !tools.is_empty() => {
            out.format("[|system|]\n");
            push_tool_block(&mut out, tools);
            out.format(END_OF_TURN);
        }
        _ => {}
    }

    let mut previous_was_tool = false;
    for (i, message) in rest.iter().enumerate() {
        let next_is_tool = matches!(rest.get(i + 1), Some(Message::Tool { .. }));
        match message {
            Message::System { content } => push_turn(&mut out, "[|system|]\n", content),
            Message::User { content } => push_turn(&mut out, "[|user|]\n", content),
            Message::Assistant { content, tool_calls } => {
                out.format("[|assistant|]\n");
                // Earlier reasoning is never shown again: every past turn carries an empty block.
                if !content.is_empty() || !tool_calls.is_empty() {
                    out.format(EMPTY_THINK);
                }
                out.outside(content);
                if !content.is_empty() && !tool_calls.is_empty() {
                    out.format("\n");
                }
                for (n, call) in tool_calls.iter().enumerate() {
                    if n > 0 {
                        out.format("\n");
                    }
                    out.format("<tool_call>{\"name\": ");
                    out.outside(&to_python_json(&call.name));
                    out.format(", \"arguments\": ");
                    out.outside(&to_python_json(&call.arguments));
                    out.format("}</tool_call>");
                }
                out.format(END_OF_TURN);
            }
            Message::Tool { content, .. } => {
                // Consecutive results share one `[|tool|]` turn.
                if !previous_was_tool {
                    out.format("[|tool|]\n");
                }
                out.format("<tool_result>{\"result\": ");
                out.outside(&to_python_json(content));
                out.format("}</tool_result>");
                out.format(if next_is_tool { "\n" } else { END_OF_TURN });
            }
        }
        previous_was_tool = matches!(message, Message::Tool { .. });
    }

    out.format("[|assistant|]\n");
    out.format(if thinking { "<think>\n" } else { EMPTY_THINK });
    out
}

fn push_turn(out: &mut Prompt, header: &str, content: &str) {
    out.format(header);
    out.outside(content);
    out.format(END_OF_TURN);
}

fn push_tool_block(out: &mut Prompt, tools: &[ToolDeclaration]) {
    out.format("# Available Tools\n");
    out.format("You can use none, one, or multiple of the following tools by calling them as functions to help with the user\u{2019}s query.\n");
    out.format("Here are the tools available to you in JSON format within <tool> and </tool> tags:\n");
    for tool in tools {
        let declaration = json!({
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        });
        out.format("<tool>");
        // A tool's description is the tool author's text, not the format's.
        out.outside(&to_python_json(&declaration));
        out.format("</tool>\n");
    }
    out.format("\nFor each function call you want to make, return a JSON object with function name and arguments within <tool_call> and </tool_call> tags, like:\n");
    out.format("<tool_call>{\"name\": function_1_name, \"arguments\": {argument_1_name: argument_1_value, argument_2_name: argument_2_value}}</tool_call>\n");
    out.format("<tool_call>{\"name\": function_2_name, \"arguments\": {...}}</tool_call>\n...\n");
    out.format("Note that if no argument name is specified for a tool, you can just print the argument value directly, without the argument name or JSON formatting.");
}
