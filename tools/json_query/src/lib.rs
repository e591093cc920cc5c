//! `json_query`: picks values out of a JSON document with a small path language:
//! `$` the document, `.name` or `["name"]` a field, `[3]` an element (`[-1]` the last), `[*]` or
//! `.*` every element or field, `..name` the field at any depth. E.g. `$.items[*].price`.

use reagent_tool::ToolError;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The document: a JSON value, or a string holding JSON.
    document: Value,
    /// The path, e.g. "$.items[*].price" or "$..id".
    path: String,
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Every,
    Descend(String),
}

fn json_query(args: Args) -> Result<Vec<Value>, ToolError> {
    let document = match args.document {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| ToolError::invalid_arguments(format!("`document` is a string that is not JSON: {e}")))?,
        value => value,
    };
    let steps = parse(&args.path).map_err(ToolError::invalid_arguments)?;
    let mut current = vec![&document];
    for step in &steps {
        let mut next = Vec::new();
        for value in current {
            apply(step, value, &mut next);
        }
        current = next;
    }
    Ok(current.into_iter().cloned().collect())
}

fn apply<'a>(step: &Step, value: &'a Value, out: &mut Vec<&'a Value>) {
    match (step, value) {
        (Step::Field(name), Value::Object(map)) => out.extend(map.get(name)),
        (Step::Index(i), Value::Array(items)) => {
            let index = if *i < 0 { items.len() as i64 + i } else { *i };
            out.extend(usize::try_from(index).ok().and_then(|i| items.get(i)));
        }
        (Step::Every, Value::Array(items)) => out.extend(items),
        (Step::Every, Value::Object(map)) => out.extend(map.values()),
        (Step::Descend(name), _) => descend(name, value, out),
        _ => {}
    }
}

fn descend<'a>(name: &str, value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            out.extend(map.get(name));
            map.values().for_each(|v| descend(name, v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| descend(name, v, out)),
        _ => {}
    }
}

fn parse(path: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = path.trim().chars().collect();
    let mut i = usize::from(chars.first() == Some(&'$'));
    let mut steps = Vec::new();
    let name_at = |mut i: usize| {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-') {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    // A path may start with a bare field name: `items[0]` is `$.items[0]`.
    if chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
        let (name, end) = name_at(i);
        steps.push(Step::Field(name));
        i = end;
    }
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                let (name, end) = name_at(i + 2);
                if name.is_empty() {
                    return Err(format!("a field name must follow `..` at character {}", i + 3));
                }
                steps.push(Step::Descend(name));
                i = end;
            }
            '.' if chars.get(i + 1) == Some(&'*') => {
                steps.push(Step::Every);
                i += 2;
            }
            '.' => {
                let (name, end) = name_at(i + 1);
                if name.is_empty() {
                    return Err(format!("a field name must follow `.` at character {}", i + 2));
                }
                steps.push(Step::Field(name));
                i = end;
            }
            '[' => {
                let close = chars[i..].iter().position(|&c| c == ']').map(|p| i + p);
                let Some(close) = close else { return Err(format!("`[` at character {} is never closed", i + 1)) };
                let inside: String = chars[i + 1..close].iter().collect();
                let inside = inside.trim();
                steps.push(if inside == "*" {
                    Step::Every
                } else if let Some(quoted) = inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Step::Field(quoted.to_string())
                } else {
                    Step::Index(
                        inside.parse().map_err(|_| format!("`[{inside}]` is not an index, `*` or a quoted name"))?,
                    )
                });
                i = close + 1;
            }
            c => return Err(format!("unexpected `{c}` at character {}; paths look like $.items[0].name", i + 1)),
        }
    }
    Ok(steps)
}

reagent_tool::export_tools! {
    json_query: Pure => "Picks values out of a JSON document with a path: $ is the document, .name a field, [3] an element ([-1] the last), [*] every element, ..name the field at any depth. Returns the list of matches.",
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(document: Value, path: &str) -> Result<Vec<Value>, ToolError> {
        json_query(Args { document, path: path.into() })
    }

    #[test]
    fn paths() {
        let doc = json!({"items": [{"id": 1, "price": 3.5}, {"id": 2, "price": 4}], "meta": {"id": 9, "a b": true}});
        assert_eq!(query(doc.clone(), "$.items[*].price").unwrap(), [json!(3.5), json!(4)]);
        assert_eq!(query(doc.clone(), "$.items[-1].id").unwrap(), [json!(2)]);
        assert_eq!(query(doc.clone(), "$..id").unwrap(), [json!(1), json!(2), json!(9)]);
        assert_eq!(query(doc.clone(), "$.meta[\"a b\"]").unwrap(), [json!(true)]);
        assert_eq!(query(doc.clone(), "$.missing.x").unwrap(), Vec::<Value>::new());
        assert_eq!(query(json!("{\"a\": [1]}"), "a[0]").unwrap(), [json!(1)]);
    }

    #[test]
    fn bad_paths_say_where() {
        let doc = json!({});
        assert!(query(doc.clone(), "$.items[").unwrap_err().message.contains("never closed"));
        assert!(query(doc.clone(), "$.a[x]").unwrap_err().message.contains("not an index"));
        assert!(query(doc, "$ a").unwrap_err().message.contains("unexpected ` ` at character 2"));
    }
}
