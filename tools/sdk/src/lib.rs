//! `reagent-tool`: write reagent tools as plain functions.
//!
//! A tool is `fn(Args) -> Result<Output, ToolError>` where `Args` derives `Deserialize` and
//! `JsonSchema`, and `Output` derives `Serialize` and `JsonSchema`. [`export_tools!`] turns a list
//! of them into a WebAssembly component implementing the `reagent:tool` contract: the JSON Schemas
//! of the arguments and result are derived from the types (doc comments become descriptions),
//! and arguments are parsed for you. See `tools/README.md`.
//!
//! ```
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Args {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! fn greet(args: Args) -> Result<String, reagent_tool::ToolError> {
//!     Ok(format!("Hello, {}!", args.name))
//! }
//!
//! reagent_tool::export_tools! {
//!     greet: Pure => "Greets someone by name.",
//! }
//!
//! // What the host sees: the exports of the `reagent:tool` contract.
//! use reagent_tool::bindings::exports::reagent::tool::tools::{CallContext, Guest};
//! let context = CallContext { idempotency_key: "run_1/call_1_1".into() };
//! assert_eq!(ReagentTools::call("greet".into(), r#"{"name": "Ada"}"#.into(), context).unwrap(), r#""Hello, Ada!""#);
//! assert!(ReagentTools::describe().contains(r#""required":["name"]"#));
//! ```

pub mod http;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "reagent_tool::bindings",
    });
}

pub use schemars::JsonSchema;

use bindings::exports::reagent::tool::tools as wit;

/// What calling a tool does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No effect: the same arguments always give the same result.
    Pure,
    /// Calling twice does what calling once does.
    Idempotent,
    /// Changes something outside the tool.
    SideEffect,
}

/// A failed call, reported to the model with its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
}

pub use wit::ErrorKind;

impl ToolError {
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        ToolError { kind: ErrorKind::InvalidArguments, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ToolError { kind: ErrorKind::NotFound, message: message.into() }
    }
    pub fn denied(message: impl Into<String>) -> Self {
        ToolError { kind: ErrorKind::Denied, message: message.into() }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        ToolError { kind: ErrorKind::Failed, message: message.into() }
    }
}

/// I/O errors map to the kinds the model can act on: a missing file, a refused capability.
impl From<std::io::Error> for ToolError {
    fn from(error: std::io::Error) -> Self {
        let message = error.to_string();
        match error.kind() {
            std::io::ErrorKind::NotFound => ToolError::not_found(message),
            std::io::ErrorKind::PermissionDenied => ToolError::denied(message),
            _ => ToolError::failed(message),
        }
    }
}

/// The description of one tool, as `describe` returns it. Used by [`export_tools!`].
#[doc(hidden)]
pub fn describe_tool<A: JsonSchema, R: JsonSchema>(
    name: &str,
    description: &str,
    effect: Effect,
    _tool: fn(A) -> Result<R, ToolError>,
) -> Value {
    let effect = match effect {
        Effect::Pure => "pure",
        Effect::Idempotent => "idempotent",
        Effect::SideEffect => "side-effect",
    };
    json!({
        "name": name,
        "description": description,
        "parameters": schema_of::<A>(),
        "result": schema_of::<R>(),
        "effect": effect,
    })
}

fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    // The meta-schema URI and the Rust type's name mean nothing to a model: keep prompts short.
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    readable_order(schema)
}

/// Puts the keys a reader looks for first (`type`, `description`, `properties`, `required`),
/// at every level: the schema is shown to the model as written.
fn readable_order(value: Value) -> Value {
    const FIRST: [&str; 4] = ["type", "description", "properties", "required"];
    match value {
        Value::Object(mut map) => {
            let mut ordered = serde_json::Map::new();
            for key in FIRST {
                if let Some(value) = map.remove(key) {
                    ordered.insert(key.to_string(), readable_order(value));
                }
            }
            for (key, value) in map {
                ordered.insert(key, readable_order(value));
            }
            Value::Object(ordered)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(readable_order).collect()),
        other => other,
    }
}

#[doc(hidden)]
pub fn describe_all(tools: Vec<Value>) -> String {
    Value::Array(tools).to_string()
}

std::thread_local! {
    /// The context of the call running now (a component instance runs one call).
    static CONTEXT: std::cell::RefCell<Option<wit::CallContext>> = const { std::cell::RefCell::new(None) };
}

/// The idempotency key of the call running now: the same on every attempt of this call (a retry
/// after a crash, a person's "retry" of a call in doubt), different for every other call. A tool
/// with side effects passes it to the APIs it calls that deduplicate (e.g. as an
/// `Idempotency-Key` header), so that an attempt after a crash does not do the thing twice.
/// Empty outside a call.
pub fn idempotency_key() -> String {
    CONTEXT.with(|context| context.borrow().as_ref().map(|c| c.idempotency_key.clone()).unwrap_or_default())
}

/// Parses the arguments, runs the tool, serialises its result. Used by [`export_tools!`].
#[doc(hidden)]
pub fn run_tool<A: DeserializeOwned, R: Serialize>(
    arguments: &str,
    context: wit::CallContext,
    tool: fn(A) -> Result<R, ToolError>,
) -> Result<String, wit::ToolError> {
    CONTEXT.with(|current| *current.borrow_mut() = Some(context));
    let to_wit = |e: ToolError| wit::ToolError { kind: e.kind, message: e.message };
    let arguments: A =
        serde_json::from_str(arguments).map_err(|e| to_wit(ToolError::invalid_arguments(e.to_string())))?;
    let result = tool(arguments).map_err(to_wit)?;
    serde_json::to_string(&result).map_err(|e| to_wit(ToolError::failed(format!("cannot serialise the result: {e}"))))
}

#[doc(hidden)]
pub fn unknown_tool(name: &str, known: &[&str]) -> wit::ToolError {
    wit::ToolError {
        kind: ErrorKind::UnknownTool,
        message: format!("this component has no tool `{name}`; it provides: {}", known.join(", ")),
    }
}

/// Exports functions as the tools of this component:
/// `export_tools! { name: Effect => "description", ... }`, where each `name` is a function
/// `fn(Args) -> Result<Output, ToolError>` in scope and `Effect` is `Pure`, `Idempotent` or
/// `SideEffect`.
#[macro_export]
macro_rules! export_tools {
    ($($tool:ident : $effect:ident => $description:expr),+ $(,)?) => {
        struct ReagentTools;

        impl $crate::bindings::exports::reagent::tool::tools::Guest for ReagentTools {
            fn describe() -> ::std::string::String {
                $crate::describe_all(::std::vec![$(
                    $crate::describe_tool(stringify!($tool), $description, $crate::Effect::$effect, $tool)
                ),+])
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
                context: $crate::bindings::exports::reagent::tool::tools::CallContext,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::exports::reagent::tool::tools::ToolError,
            > {
                match name.as_str() {
                    $(stringify!($tool) => $crate::run_tool(&arguments, context, $tool),)+
                    other => ::std::result::Result::Err($crate::unknown_tool(other, &[$(stringify!($tool)),+])),
                }
            }
        }

        $crate::bindings::__export_plugin!(ReagentTools with_types_in $crate::bindings);
    };
}
