//! `output.schema`: the final answer must be JSON that the schema accepts. Models wrap JSON in
//! prose and code fences, so the JSON is found first; what the schema rejects goes back to the
//! model once, quoting the validator's exact errors.

use serde_json::Value;

use super::{MAX_QUOTED, clipped};

pub(super) struct OutputCheck {
    validator: jsonschema::Validator,
}

impl OutputCheck {
    pub(super) fn new(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema).map(|validator| OutputCheck { validator }).map_err(|e| e.to_string())
    }

    /// The answer as the JSON value the schema accepts, or what is wrong with it, one problem a line.
    pub(super) fn check(&self, answer: &str) -> Result<Value, Vec<String>> {
        let value = match find_json(answer) {
            Some(value) => value,
            // A schema that takes a plain string takes an answer that is not JSON at all.
            None if self.validator.is_valid(&Value::String(answer.to_string())) => {
                return Ok(Value::String(answer.to_string()));
            }
            None => return Err(vec!["the answer is not JSON: reply with the JSON value only".into()]),
        };
        let problems: Vec<String> = self
            .validator
            .iter_errors(&value)
            .map(|e| match e.instance_path().to_string() {
                path if path.is_empty() => e.to_string(),
                path => format!("at {path}: {e}"),
            })
            .collect();
        if problems.is_empty() { Ok(value) } else { Err(problems) }
    }
}

/// What the model is told about the answer, after its instructions.
pub(super) fn instructions_note(schema: &Value) -> String {
    format!("Your final answer must be a JSON value that this JSON Schema accepts, and nothing else:\n{schema}")
}

/// What the model is told when its answer does not fit; each problem clipped, as it may quote
/// the whole answer.
pub(super) fn repair_request(problems: &[String]) -> String {
    let problems: Vec<String> = problems.iter().map(|p| clipped(p, MAX_QUOTED)).collect();
    format!(
        "Your answer does not match the required output schema:\n- {}\nReply with the corrected JSON only.",
        problems.join("\n- ")
    )
}

/// The JSON in an answer: all of it, the inside of a code fence, or the span from the first `{`
/// or `[` to the last matching bracket.
fn find_json(answer: &str) -> Option<Value> {
    let text = answer.trim();
    let parse = |s: &str| serde_json::from_str::<Value>(s.trim()).ok();
    if let Some(value) = parse(text) {
        return Some(value);
    }
    if let Some((_, after)) = text.split_once("```") {
        let body = after.split_once('\n').map_or(after, |(_, rest)| rest);
        if let Some(value) = body.split_once("```").and_then(|(inside, _)| parse(inside)) {
            return Some(value);
        }
    }
    let (open, close) = match (text.find('{'), text.find('[')) {
        (Some(brace), Some(bracket)) if bracket < brace => ('[', ']'),
        (Some(_), _) => ('{', '}'),
        (None, Some(_)) => ('[', ']'),
        (None, None) => return None,
    };
    let start = text.find(open)?;
    let end = text.rfind(close)?;
    (start < end).then(|| parse(&text[start..=end])).flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn person() -> OutputCheck {
        OutputCheck::new(&json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }))
        .unwrap()
    }

    #[test]
    fn json_is_found_inside_prose_and_fences() {
        let expected = json!({"name": "Ada", "age": 36});
        for answer in [
            r#"{"name": "Ada", "age": 36}"#,
            "```json\n{\"name\": \"Ada\", \"age\": 36}\n```",
            "Here it is: {\"name\": \"Ada\", \"age\": 36}. Anything else?",
        ] {
            assert_eq!(person().check(answer), Ok(expected.clone()), "{answer}");
        }
    }

    #[test]
    fn the_validators_errors_say_where() {
        let problems = person().check(r#"{"name": "Ada", "age": "36"}"#).unwrap_err();
        assert_eq!(problems, vec![r#"at /age: "36" is not of type "integer""#]);
        let problems = person().check(r#"{"name": "Ada"}"#).unwrap_err();
        assert_eq!(problems, vec![r#""age" is a required property"#]);
        assert!(person().check("no idea").is_err());
    }

    #[test]
    fn a_string_schema_takes_plain_text() {
        let check = OutputCheck::new(&json!({"type": "string"})).unwrap();
        assert_eq!(check.check("plain words"), Ok(json!("plain words")));
    }
}
