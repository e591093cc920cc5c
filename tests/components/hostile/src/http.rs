//! A minimal HTTP GET over `wasi:http` that follows redirects itself, as a real client would.

use serde_json::{Value, json};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};

use super::{ToolError, failed};

pub fn get_following_redirects(url: &str) -> Result<Value, ToolError> {
    let mut url = url.to_string();
    for _ in 0..5 {
        let (status, location, body) = get(&url)?;
        match location {
            Some(next) if (300..400).contains(&status) => url = next,
            _ => return Ok(json!({"status": status, "body": body})),
        }
    }
    Err(failed("too many redirects".into()))
}

fn get(url: &str) -> Result<(u16, Option<String>, String), ToolError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| failed(format!("bad url {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let pending = outgoing_handler::handle(request, None).map_err(|e| failed(format!("{e:?}")))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| failed("no response".into()))?
        .map_err(|_| failed("response taken twice".into()))?
        .map_err(|e| failed(format!("request failed: {e:?}")))?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let body = response.consume().map_err(|_| failed("no body".into()))?;
    let stream = body.stream().map_err(|_| failed("no body stream".into()))?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, location, String::from_utf8_lossy(&bytes).into_owned()))
}
