//! Spots a model calling the same tool with the same arguments over and over, which small models
//! do when a result does not say what they hoped. The `REPEAT_LIMIT`th identical call is refused
//! with an explanation; one more stops the run.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::ToolCall;

/// Identical calls allowed before the model is told to stop repeating itself.
pub const REPEAT_LIMIT: u32 = 3;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RepeatGuard {
    seen: HashMap<String, u32>,
}

pub(super) enum Verdict {
    Run,
    /// Refuse this call and say why.
    Refuse(String),
    /// The model was told and repeated the call anyway.
    Stop,
}

impl RepeatGuard {
    pub(super) fn check(&mut self, call: &ToolCall) -> Verdict {
        let key = format!("{}\u{0}{}", call.name, canonical(&call.arguments));
        let count = self.seen.entry(key).or_insert(0);
        *count += 1;
        match *count {
            n if n < REPEAT_LIMIT => Verdict::Run,
            n if n == REPEAT_LIMIT => Verdict::Refuse(format!(
                "`{}` was already called {} times with these same arguments and its result will not change: \
                 use the results you have, call it differently, or answer",
                call.name,
                n - 1
            )),
            _ => Verdict::Stop,
        }
    }
}

/// The same arguments in any key order are the same call.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}
