//! Arbitrary bytes (read as lossy UTF-8) into `reagent::chat_format::parse_output`, checking what
//! must hold for any model output: no panic, no unbounded recursion, every readable call has a
//! name and an object of arguments, every unreadable one says how to write a call and quotes at
//! most `RAW_LIMIT` bytes, reasoning is a piece of the output, and text the parser reads as an
//! answer reads the same way again.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own source files, compiled here as they are in the crate (`parse.rs` reaches
// `python_json.rs` as `super::python_json`, which is this crate's root).
#[path = "../../src/chat_format/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "../../src/chat_format/python_json.rs"]
mod python_json;

use parse::{RAW_LIMIT, parse_output};

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let out = parse_output(&raw);

    for call in &out.calls {
        match call {
            Ok(call) => {
                assert!(!call.name.trim().is_empty(), "a call without a name: {call:?}");
                assert!(call.arguments.is_object(), "arguments that are not an object: {call:?}");
            }
            Err(bad) => {
                assert!(bad.error.contains(r#"write each call as <tool_call>{"name": "TOOL""#), "{bad:?}");
                // Clipped to RAW_LIMIT bytes, plus the note of how much was left out.
                assert!(bad.raw.len() <= RAW_LIMIT + 40, "raw not clipped: {} bytes", bad.raw.len());
            }
        }
    }
    assert!(out.calls.len() <= raw.len(), "more calls than bytes");
    assert_eq!(out.text, out.text.trim(), "text is trimmed");

    if let Some(reasoning) = &out.reasoning {
        assert!(!reasoning.is_empty() && reasoning == reasoning.trim());
        assert!(raw.contains(reasoning.as_str()), "reasoning is a piece of the output");
    }

    let rewritten = raw.contains("<|python_tag|>") || raw.contains("</tool_call>");
    if out.calls.is_empty() && !rewritten {
        assert!(raw.contains(out.text.as_str()), "an answer is a piece of the output");
        if !raw.contains("</think>") && !raw.trim_start().starts_with("<think>") {
            // An answer without reasoning, parsed again, is the same answer.
            let again = parse_output(&out.text);
            assert!(again.calls.is_empty() && again.text == out.text, "{again:?}");
        }
    }
});
