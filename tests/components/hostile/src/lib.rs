//! Every way a tool might try to escape or exhaust the sandbox, one tool each, plus `ok`, a normal
//! call that must still succeed after every attack.

use reagent_tool::ToolError;
use reagent_tool::http::{Request, send};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// One argument type for every attack: each tool reads the fields it needs.
#[derive(Deserialize, JsonSchema, Default)]
struct Args {
    path: Option<String>,
    content: Option<String>,
    url: Option<String>,
    name: Option<String>,
    address: Option<String>,
    mb: Option<usize>,
    count: Option<usize>,
}

type Outcome = Result<Value, ToolError>;

fn ok(_: Args) -> Outcome {
    Ok(json!("fine"))
}

/// A static counter and heap garbage: a reused instance would show them.
fn count(_: Args) -> Outcome {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let garbage = vec![0xAB_u8; 256 << 10];
    std::hint::black_box(&garbage);
    Ok(json!(CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1))
}

fn read(args: Args) -> Outcome {
    Ok(json!(std::fs::read_to_string(args.path.unwrap_or_default())?))
}

fn write(args: Args) -> Outcome {
    std::fs::write(args.path.unwrap_or_default(), args.content.unwrap_or_default())?;
    Ok(json!("written"))
}

/// GET that follows redirects itself, as a real client would.
fn get(args: Args) -> Outcome {
    let mut url = args.url.unwrap_or_default();
    for _ in 0..5 {
        let response = send(&Request { method: "GET".into(), url: url.clone(), headers: vec![], body: None }, 1 << 20)?;
        match (response.status, response.header("location")) {
            (300..=399, Some(location)) => url = location.to_string(),
            _ => return Ok(json!({"status": response.status, "body": String::from_utf8_lossy(&response.body)})),
        }
    }
    Err(ToolError::failed("too many redirects"))
}

fn env(args: Args) -> Outcome {
    std::env::var(args.name.unwrap_or_default()).map(Value::String).map_err(|_| ToolError::not_found("not set"))
}

fn alloc(args: Args) -> Outcome {
    let mut block = vec![0u8; args.mb.unwrap_or_default() << 20];
    block.iter_mut().step_by(4096).for_each(|b| *b = 1);
    Ok(json!(block.iter().step_by(4096).map(|&b| b as usize).sum::<usize>()))
}

fn spin(_: Args) -> Outcome {
    let mut i: u64 = 0;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

fn flood(args: Args) -> Outcome {
    let line = "x".repeat(1023);
    for _ in 0..(args.mb.unwrap_or_default() << 10) {
        println!("{line}");
    }
    Ok(json!("flooded"))
}

fn big(args: Args) -> Outcome {
    Ok(json!("y".repeat(args.mb.unwrap_or_default() << 20)))
}

/// Writes `mb` MiB to the file `path`, 64 KiB at a time: a disk filler.
fn fill(args: Args) -> Outcome {
    use std::io::Write;
    let mut file = std::fs::File::create(args.path.unwrap_or_default())?;
    let chunk = vec![b'z'; 64 << 10];
    for _ in 0..args.mb.unwrap_or_default() * 16 {
        file.write_all(&chunk)?;
    }
    Ok(json!("filled"))
}

/// Creates `count` empty files in the folder `path`.
fn touch(args: Args) -> Outcome {
    let dir = args.path.unwrap_or_default();
    for i in 0..args.count.unwrap_or_default() {
        std::fs::File::create(format!("{dir}/f{i}"))?;
    }
    Ok(json!("created"))
}

/// Opens the file `path` `count` times and keeps every descriptor open.
fn hoard(args: Args) -> Outcome {
    let path = args.path.unwrap_or_default();
    let mut held = Vec::new();
    for _ in 0..args.count.unwrap_or_default() {
        held.push(std::fs::File::open(&path)?);
    }
    Ok(json!(held.len()))
}

fn connect(args: Args) -> Outcome {
    std::net::TcpStream::connect(args.address.unwrap_or_default())?;
    Ok(json!("connected"))
}

reagent_tool::export_tools! {
    ok: Pure => "ok",
    count: Pure => "count",
    read: Pure => "read",
    write: SideEffect => "write",
    get: SideEffect => "get",
    env: Pure => "env",
    alloc: Pure => "alloc",
    spin: Pure => "spin",
    flood: Pure => "flood",
    big: Pure => "big",
    connect: SideEffect => "connect",
    fill: SideEffect => "fill",
    touch: SideEffect => "touch",
    hoard: Pure => "hoard",
}
