//! EXAONE 4.0's chat format, byte for byte as its official template renders it
//! (`shared/reference/exaone4-format.md`).

use serde_json::json;

use super::python_json::to_python_json;
use crate::conversation::{Message, ToolDeclaration};

const END_OF_TURN: &str = "[|endofturn|]\n";
const EMPTY_THINK: &str = "<think>\n\n</think>\n\n";

/// Renders `messages` with `tools` declared, ending with the generation prompt: reasoning on
/// leaves the model inside an open `<think>` block, reasoning off closes it empty.
pub fn render(messages: &[Message], tools: &[ToolDeclaration], thinking: bool) -> String {
    let mut out = String::new();
    let mut rest = messages;
    match messages.first() {
        Some(Message::System { content }) => {
            out.push_str("[|system|]\n");
            out.push_str(content);
            if !tools.is_empty() {
                out.push_str("\n\n");
                push_tool_block(&mut out, tools);
            }
            out.push_str(END_OF_TURN);
            rest = &messages[1..];
        }
        _ if !tools.is_empty() => {
            out.push_str("[|system|]\n");
            push_tool_block(&mut out, tools);
            out.push_str(END_OF_TURN);
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
                out.push_str("[|assistant|]\n");
                // Earlier reasoning is never shown again: every past turn carries an empty block.
                if !content.is_empty() || !tool_calls.is_empty() {
                    out.push_str(EMPTY_THINK);
                }
                out.push_str(content);
                if !content.is_empty() && !tool_calls.is_empty() {
                    out.push('\n');
                }
                let calls: Vec<String> = tool_calls
                    .iter()
                    .map(|call| {
                        format!(
                            "<tool_call>{{\"name\": {}, \"arguments\": {}}}</tool_call>",
                            to_python_json(&call.name),
                            to_python_json(&call.arguments)
                        )
                    })
                    .collect();
                out.push_str(&calls.join("\n"));
                out.push_str(END_OF_TURN);
            }
            Message::Tool { content, .. } => {
                // Consecutive results share one `[|tool|]` turn.
                if !previous_was_tool {
                    out.push_str("[|tool|]\n");
                }
                out.push_str(&format!("<tool_result>{{\"result\": {}}}</tool_result>", to_python_json(content)));
                out.push_str(if next_is_tool { "\n" } else { END_OF_TURN });
            }
        }
        previous_was_tool = matches!(message, Message::Tool { .. });
    }

    out.push_str("[|assistant|]\n");
    out.push_str(if thinking { "<think>\n" } else { EMPTY_THINK });
    out
}

fn push_turn(out: &mut String, header: &str, content: &str) {
    out.push_str(header);
    out.push_str(content);
    out.push_str(END_OF_TURN);
}

fn push_tool_block(out: &mut String, tools: &[ToolDeclaration]) {
    out.push_str("# Available Tools\n");
    out.push_str("You can use none, one, or multiple of the following tools by calling them as functions to help with the user\u{2019}s query.\n");
    out.push_str("Here are the tools available to you in JSON format within <tool> and </tool> tags:\n");
    for tool in tools {
        let declaration = json!({
            "type": "function",
            "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        });
        out.push_str("<tool>");
        out.push_str(&to_python_json(&declaration));
        out.push_str("</tool>\n");
    }
    out.push_str("\nFor each function call you want to make, return a JSON object with function name and arguments within <tool_call> and </tool_call> tags, like:\n");
    out.push_str("<tool_call>{\"name\": function_1_name, \"arguments\": {argument_1_name: argument_1_value, argument_2_name: argument_2_value}}</tool_call>\n");
    out.push_str("<tool_call>{\"name\": function_2_name, \"arguments\": {...}}</tool_call>\n...\n");
    out.push_str("Note that if no argument name is specified for a tool, you can just print the argument value directly, without the argument name or JSON formatting.");
}
