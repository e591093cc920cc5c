//! Every way a tool might try to escape or exhaust the sandbox, one tool each, plus `ok`, a normal
//! call that must still succeed after every attack.

wit_bindgen::generate!({ path: "../../../tools/wit", world: "plugin" });

use exports::reagent::tool::tools::{ErrorKind, Guest, ToolError};
use serde_json::{Value, json};

mod http;

const TOOLS: &[&str] = &["ok", "count", "read", "write", "get", "env", "alloc", "spin", "flood", "big", "connect"];

struct Hostile;

impl Guest for Hostile {
    fn describe() -> String {
        let tools: Vec<Value> = TOOLS
            .iter()
            .map(|name| json!({"name": name, "description": name, "parameters": {"type": "object"}, "effect": "side-effect"}))
            .collect();
        Value::Array(tools).to_string()
    }

    fn call(name: String, arguments: String) -> Result<String, ToolError> {
        let args: Value = serde_json::from_str(&arguments).map_err(|e| failed(e.to_string()))?;
        let text = |key: &str| args[key].as_str().unwrap_or_default().to_string();
        let number = |key: &str| args[key].as_u64().unwrap_or_default() as usize;
        let result = match name.as_str() {
            "ok" => json!("fine"),
            // A static counter and heap garbage: a reused instance would show them.
            "count" => {
                static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let garbage = vec![0xAB_u8; 256 << 10];
                std::hint::black_box(&garbage);
                json!(CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
            }
            "read" => json!(std::fs::read_to_string(text("path")).map_err(io_error)?),
            "write" => {
                std::fs::write(text("path"), text("content")).map_err(io_error)?;
                json!("written")
            }
            "get" => http::get_following_redirects(&text("url"))?,
            "env" => json!(std::env::var(text("name")).map_err(|_| error(ErrorKind::NotFound, "not set"))?),
            "alloc" => {
                let mut block = vec![0u8; number("mb") << 20];
                block.iter_mut().step_by(4096).for_each(|b| *b = 1);
                json!(block.iter().step_by(4096).map(|&b| b as usize).sum::<usize>())
            }
            "spin" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "flood" => {
                let line = "x".repeat(1023);
                for _ in 0..(number("mb") << 10) {
                    println!("{line}");
                }
                json!("flooded")
            }
            "big" => json!("y".repeat(number("mb") << 20)),
            "connect" => {
                std::net::TcpStream::connect(text("address")).map_err(io_error)?;
                json!("connected")
            }
            other => return Err(error(ErrorKind::UnknownTool, &format!("no tool {other}"))),
        };
        Ok(result.to_string())
    }
}

fn io_error(e: std::io::Error) -> ToolError {
    let kind = match e.kind() {
        std::io::ErrorKind::PermissionDenied => ErrorKind::Denied,
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Failed,
    };
    ToolError { kind, message: format!("{e} ({:?})", e.kind()) }
}

fn error(kind: ErrorKind, message: &str) -> ToolError {
    ToolError { kind, message: message.to_string() }
}

fn failed(message: String) -> ToolError {
    ToolError { kind: ErrorKind::Failed, message }
}

export!(Hostile);
