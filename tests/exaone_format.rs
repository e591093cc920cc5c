//! The EXAONE 4.0 rendering, byte for byte against a string checked by hand against the official
//! chat template (shared/reference/exaone4-format.md).

use reagent::chat_format::exaone::render;
use reagent::conversation::{Message, ToolCall, ToolDeclaration};
use serde_json::json;

fn tools() -> Vec<ToolDeclaration> {
    vec![
        ToolDeclaration {
            name: "calc".into(),
            description: "Evaluates an arithmetic expression.".into(),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
        },
        ToolDeclaration {
            name: "get_weather".into(),
            description: "Gets the current weather in a city.".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        },
    ]
}

fn conversation() -> Vec<Message> {
    vec![
        Message::System { content: "You are a helpful assistant.".into() },
        Message::User { content: "What is 2+3, and what is the weather in Seoul?".into() },
        Message::Assistant {
            content: "Let me check both.".into(),
            tool_calls: vec![
                ToolCall { id: "call_1".into(), name: "calc".into(), arguments: json!({"expression": "2+3"}) },
                ToolCall { id: "call_2".into(), name: "get_weather".into(), arguments: json!({"city": "Seoul"}) },
            ],
        },
        Message::Tool { call_id: "call_1".into(), content: json!(5) },
        Message::Tool { call_id: "call_2".into(), content: json!("Sunny, 21°C") },
    ]
}

const EXPECTED_BEFORE_GENERATION_PROMPT: &str = concat!(
    "[|system|]\n",
    "You are a helpful assistant.\n",
    "\n",
    "# Available Tools\n",
    "You can use none, one, or multiple of the following tools by calling them as functions to help with the user\u{2019}s query.\n",
    "Here are the tools available to you in JSON format within <tool> and </tool> tags:\n",
    "<tool>{\"type\": \"function\", \"function\": {\"name\": \"calc\", \"description\": \"Evaluates an arithmetic expression.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"expression\": {\"type\": \"string\"}}, \"required\": [\"expression\"]}}}</tool>\n",
    "<tool>{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Gets the current weather in a city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}</tool>\n",
    "\n",
    "For each function call you want to make, return a JSON object with function name and arguments within <tool_call> and </tool_call> tags, like:\n",
    "<tool_call>{\"name\": function_1_name, \"arguments\": {argument_1_name: argument_1_value, argument_2_name: argument_2_value}}</tool_call>\n",
    "<tool_call>{\"name\": function_2_name, \"arguments\": {...}}</tool_call>\n",
    "...\n",
    "Note that if no argument name is specified for a tool, you can just print the argument value directly, without the argument name or JSON formatting.[|endofturn|]\n",
    "[|user|]\n",
    "What is 2+3, and what is the weather in Seoul?[|endofturn|]\n",
    "[|assistant|]\n",
    "<think>\n",
    "\n",
    "</think>\n",
    "\n",
    "Let me check both.\n",
    "<tool_call>{\"name\": \"calc\", \"arguments\": {\"expression\": \"2+3\"}}</tool_call>\n",
    "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Seoul\"}}</tool_call>[|endofturn|]\n",
    "[|tool|]\n",
    "<tool_result>{\"result\": 5}</tool_result>\n",
    "<tool_result>{\"result\": \"Sunny, 21°C\"}</tool_result>[|endofturn|]\n",
);

#[test]
fn conversation_with_tools_calls_and_results_renders_byte_for_byte() {
    let expected = format!("{EXPECTED_BEFORE_GENERATION_PROMPT}[|assistant|]\n<think>\n\n</think>\n\n");
    assert_eq!(render(&conversation(), &tools(), false), expected);
}

#[test]
fn reasoning_on_leaves_the_think_block_open() {
    let expected = format!("{EXPECTED_BEFORE_GENERATION_PROMPT}[|assistant|]\n<think>\n");
    assert_eq!(render(&conversation(), &tools(), true), expected);
}

#[test]
fn without_a_system_prompt_the_tools_get_a_system_turn_of_their_own() {
    let messages = vec![Message::User { content: "hi".into() }];
    let rendered = render(&messages, &tools()[..1], false);
    assert!(rendered.starts_with("[|system|]\n# Available Tools\n"), "{rendered}");
    assert!(
        rendered
            .ends_with("formatting.[|endofturn|]\n[|user|]\nhi[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n")
    );
    assert_eq!(render(&messages, &[], false), "[|user|]\nhi[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n");
}

#[test]
fn earlier_answers_carry_an_empty_think_block() {
    let messages = vec![
        Message::User { content: "a".into() },
        Message::Assistant { content: "b".into(), tool_calls: vec![] },
        Message::User { content: "c".into() },
    ];
    assert_eq!(
        render(&messages, &[], true),
        "[|user|]\na[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\nb[|endofturn|]\n[|user|]\nc[|endofturn|]\n[|assistant|]\n<think>\n"
    );
}
