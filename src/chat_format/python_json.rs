//! Python's view of JSON: writing it as `json.dumps` does (what chat templates' `tojson`
//! renders), and reading the almost-JSON models write when they slip into Python literals or
//! JavaScript habits.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Map, Number, Value};

/// Serialises like Python's `json.dumps(value, ensure_ascii=False)`, which is what chat templates'
/// `tojson` produces: `", "` between items, `": "` after keys, non-ASCII kept, key order as given.
pub fn to_python_json(value: &impl Serialize) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    match value.serialize(&mut serializer) {
        // serde_json writes valid UTF-8 into a Vec, which cannot fail.
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => String::from("null"),
    }
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Nesting deeper than this is refused: the reader recurses, and a model's output can nest
/// brackets without end.
pub const MAX_DEPTH: usize = 128;

/// Why [`read_lenient`] could not read a value.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientError {
    /// Byte offset of the problem.
    pub at: usize,
    pub message: String,
    /// The text ended before the value did (the output was cut off, or closers are missing).
    pub eof: bool,
    /// The closers of the arrays and objects still open where the reading stopped, innermost
    /// first (`"}}"`).
    pub open: String,
}

/// Reads one value at the start of `text` (after whitespace) the way models write JSON when they
/// get it slightly wrong: strict JSON, plus Python literals (`'single quotes'`, `True`, `False`,
/// `None`), trailing commas, unquoted keys, and raw newlines or tabs inside strings. Returns the
/// value and the bytes read; whatever follows is the caller's business. Nothing is guessed: text
/// that does not read as one of these forms is an error.
pub fn read_lenient(text: &str) -> Result<(Value, usize), LenientError> {
    let mut reader = Reader { text, pos: 0, open: Vec::new() };
    let value = reader.value()?;
    Ok((value, reader.pos))
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// The closers of the arrays and objects open at `pos`, outermost first.
    open: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn error(&self, message: impl Into<String>) -> LenientError {
        LenientError {
            at: self.pos,
            message: message.into(),
            eof: self.pos >= self.text.len(),
            open: self.open.iter().rev().map(|&b| char::from(b)).collect(),
        }
    }

    fn value(&mut self) -> Result<Value, LenientError> {
        self.skip_whitespace();
        match self.peek() {
            None => Err(self.error("the text ends where a value should be")),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(quote @ (b'"' | b'\'')) => self.string(quote).map(Value::String),
            Some(b'-' | b'+' | b'.' | b'0'..=b'9') => self.number(),
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let word = self.word();
                match word {
                    "true" | "True" => Ok(Value::Bool(true)),
                    "false" | "False" => Ok(Value::Bool(false)),
                    "null" | "None" => Ok(Value::Null),
                    _ => {
                        self.pos -= word.len();
                        Err(self.error(format!("`{word}` is not a value (a string needs quotes)")))
                    }
                }
            }
            Some(_) => {
                let c = self.text[self.pos..].chars().next().unwrap_or('?');
                Err(self.error(format!("unexpected `{c}` where a value should be")))
            }
        }
    }

    fn enter(&mut self, closer: u8) -> Result<(), LenientError> {
        if self.open.len() >= MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.open.push(closer);
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<Value, LenientError> {
        self.enter(b'}')?;
        let mut object = Map::new();
        loop {
            self.skip_whitespace();
            let key = match self.peek() {
                Some(b'}') => break,
                Some(quote @ (b'"' | b'\'')) => self.string(quote)?,
                Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b'$' => self.word().to_string(),
                None => return Err(self.error("the text ends inside an object")),
                Some(_) => return Err(self.error("expected a key or `}`")),
            };
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error(format!("expected `:` after the key `{key}`")));
            }
            self.pos += 1;
            let value = self.value()?;
            object.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                None => return Err(self.error("the text ends inside an object")),
                Some(_) => return Err(self.error("expected `,` or `}` after a value")),
            }
        }
        self.pos += 1;
        self.open.pop();
        Ok(Value::Object(object))
    }

    fn array(&mut self) -> Result<Value, LenientError> {
        self.enter(b']')?;
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                break;
            }
            items.push(self.value()?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => break,
                None => return Err(self.error("the text ends inside an array")),
                Some(_) => return Err(self.error("expected `,` or `]` after a value")),
            }
        }
        self.pos += 1;
        self.open.pop();
        Ok(Value::Array(items))
    }

    /// A run of ASCII letters, digits, `_`, `$` and `-` (a bare key or a literal).
    fn word(&mut self) -> &'a str {
        let text = self.text;
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-')) {
            self.pos += 1;
        }
        &text[start..self.pos]
    }

    fn string(&mut self, quote: u8) -> Result<String, LenientError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.text[self.pos..].chars().next() else {
                return Err(self.error("the text ends inside a string"));
            };
            self.pos += c.len_utf8();
            match c {
                c if u32::from(c) == u32::from(quote) => return Ok(out),
                '\\' => self.escape(&mut out)?,
                '\n' | '\r' | '\t' => out.push(c),
                c if u32::from(c) < 0x20 => {
                    self.pos -= 1;
                    return Err(self.error(format!(
                        "a control character (U+{:04X}) inside the string that starts at byte {start} must be escaped",
                        u32::from(c)
                    )));
                }
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), LenientError> {
        let Some(c) = self.text[self.pos..].chars().next() else {
            return Err(self.error("the text ends inside a string"));
        };
        self.pos += c.len_utf8();
        match c {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            '0' => out.push('\0'),
            '"' | '\'' | '\\' | '/' => out.push(c),
            '\n' => {} // a Python line continuation
            'x' => {
                let code = self.hex(2)?;
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            'u' => {
                let code = self.hex(4)?;
                let c = if (0xD800..0xDC00).contains(&code) && self.text[self.pos..].starts_with("\\u") {
                    let save = self.pos;
                    self.pos += 2;
                    match self.hex(4) {
                        Ok(low @ 0xDC00..0xE000) => char::from_u32(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)),
                        _ => {
                            self.pos = save;
                            None
                        }
                    }
                } else {
                    char::from_u32(code)
                };
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            // Python keeps an unknown escape as written.
            other => {
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }

    fn hex(&mut self, digits: usize) -> Result<u32, LenientError> {
        let code = self
            .text
            .get(self.pos..self.pos + digits)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.error(format!("an escape needs {digits} hexadecimal digits")))?;
        self.pos += digits;
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, LenientError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E')) {
            self.pos += 1;
        }
        let written = &self.text[start..self.pos];
        let plain = written.strip_prefix('+').unwrap_or(written);
        if let Ok(number) = serde_json::from_str::<Number>(plain) {
            return Ok(Value::Number(number));
        }
        // Python's `.5`, `5.` and `1_000` are not JSON; the float reading covers the first two.
        match plain.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(number) if plain.bytes().any(|b| b.is_ascii_digit()) => Ok(Value::Number(number)),
            _ => {
                self.pos = start;
                Err(self.error(format!("`{written}` is not a number")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{MAX_DEPTH, read_lenient, to_python_json};

    #[test]
    fn matches_python_json_dumps() {
        // json.dumps({"b": [1, 2.5, None], "a": {"é": "x\"y\n"}, "t": True}, ensure_ascii=False)
        let value = json!({"b": [1, 2.5, null], "a": {"é": "x\"y\n"}, "t": true});
        assert_eq!(to_python_json(&value), r#"{"b": [1, 2.5, null], "a": {"é": "x\"y\n"}, "t": true}"#);
        assert_eq!(to_python_json(&json!({})), "{}");
        assert_eq!(to_python_json(&json!([])), "[]");
    }

    #[test]
    fn lenient_reads_strict_json_as_serde_json_does() {
        let text = r#"{"a": [1, -2.5e3, true, false, null], "b": "x\"y\u00e9\ud83e\uddee", "c": {}} tail"#;
        let (value, used) = read_lenient(text).expect("JSON");
        assert_eq!(value, json!({"a": [1, -2.5e3, true, false, null], "b": "x\"yé🧮", "c": {}}));
        assert_eq!(&text[used..], " tail");
    }

    #[test]
    fn lenient_reads_python_literals_and_javascript_habits() {
        let read = |text: &str| read_lenient(text).map(|(value, _)| value);
        assert_eq!(
            read("{'name': 'calc', 'ok': True, 'none': None, 'no': False}"),
            Ok(json!({"name": "calc", "ok": true, "none": null, "no": false}))
        );
        assert_eq!(read(r#"{"a": [1, 2,], "b": {"c": 3,},}"#), Ok(json!({"a": [1, 2], "b": {"c": 3}})));
        assert_eq!(
            read(r#"{name: "calc", arguments: {expression: "1"}}"#),
            Ok(json!({"name": "calc", "arguments": {"expression": "1"}}))
        );
        assert_eq!(read("{'q': 'it\\'s \"x\" \\x41\\n'}"), Ok(json!({"q": "it's \"x\" A\n"})));
        assert_eq!(read("\"two\nlines\""), Ok(json!("two\nlines")));
        assert_eq!(read("[+1, .5]"), Ok(json!([1, 0.5])));
    }

    #[test]
    fn lenient_refuses_what_is_not_a_value() {
        for text in
            ["", "   ", "{'a' 1}", "[1 2]", "{\"a\": undefined}", "\u{201c}x\u{201d}", "-", "{\"a\":\u{0} 1}", "NaN"]
        {
            assert!(read_lenient(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn lenient_says_when_the_text_ends_too_soon_and_what_is_open() {
        let error = read_lenient(r#"{"a": [1, {"b": 2"#).expect_err("cut off");
        assert!(error.eof);
        assert_eq!(error.open, "}]}");
        let in_string = read_lenient(r#"{"a": "cut"#).expect_err("cut off");
        assert!(in_string.eof);
        assert!(!read_lenient(r#"{"a": 1]"#).expect_err("wrong closer").eof);
    }

    #[test]
    fn lenient_refuses_deep_nesting_without_recursing_into_it() {
        let deep = "[".repeat(1_000_000);
        let error = read_lenient(&deep).expect_err("too deep");
        assert!(error.message.contains("nested more than"), "{}", error.message);
        assert_eq!(error.at, MAX_DEPTH);
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read_lenient(&fine).is_ok());
    }
}
