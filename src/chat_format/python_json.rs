use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::to_python_json;

    #[test]
    fn matches_python_json_dumps() {
        // json.dumps({"b": [1, 2.5, None], "a": {"é": "x\"y\n"}, "t": True}, ensure_ascii=False)
        let value = json!({"b": [1, 2.5, null], "a": {"é": "x\"y\n"}, "t": true});
        assert_eq!(to_python_json(&value), r#"{"b": [1, 2.5, null], "a": {"é": "x\"y\n"}, "t": true}"#);
        assert_eq!(to_python_json(&json!({})), "{}");
        assert_eq!(to_python_json(&json!([])), "[]");
    }
}
