"""A reagent tool written in Python, built with componentize-py against tools/wit.

It implements the same `reagent:tool` contract as the Rust tools: `describe` returns the tools as
JSON, `call` runs one and returns JSON, or raises `Err(ToolError(...))`.
"""

import heapq  # noqa: F401 -- Counter.most_common imports it lazily; componentize-py bundles only what is imported
import json
import re
from collections import Counter

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.tools import CallContext, ErrorKind, ToolError

TOOLS = [
    {
        "name": "word_frequencies",
        "description": "Counts how often each word occurs in a text and returns the most frequent ones.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The text."},
                "top": {"type": "integer", "minimum": 1, "maximum": 100, "description": "How many words (default 5)."},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
        "result": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "count": {"type": "integer"}},
            },
        },
        "effect": "pure",
    }
]


class Tools(exports.Tools):
    def describe(self) -> str:
        return json.dumps(TOOLS)

    def call(self, name: str, arguments: str, context: CallContext) -> str:
        if name != "word_frequencies":
            raise Err(ToolError(ErrorKind.UNKNOWN_TOOL, f"this component has no tool `{name}`"))
        args = json.loads(arguments)
        text = args.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Err(ToolError(ErrorKind.INVALID_ARGUMENTS, "`text` must be a non-empty string"))
        words = re.findall(r"[\w']+", text.lower())
        top = Counter(words).most_common(int(args.get("top", 5)))
        return json.dumps([{"word": word, "count": count} for word, count in top])
