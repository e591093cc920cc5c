//! Outgoing HTTP from a tool, over `wasi:http`. The host checks every request against the
//! agent's grants; a refused request comes back as a `denied` error.

use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

use crate::ToolError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was cut at the size limit.
    pub truncated: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request; reads at most `max_body` bytes of the response body.
pub fn send(request: &Request, max_body: usize) -> Result<Response, ToolError> {
    let (scheme, rest) = request
        .url
        .split_once("://")
        .ok_or_else(|| ToolError::invalid_arguments(format!("`{}` is not an http(s) URL", request.url)))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(ToolError::invalid_arguments(format!("scheme `{other}` is not http or https"))),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| ToolError::invalid_arguments(format!("header `{name}`: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| ToolError::invalid_arguments(format!("invalid {what} in `{}`", request.url));
    outgoing.set_method(&method).map_err(|()| invalid("method"))?;
    outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
    outgoing.set_authority(Some(authority)).map_err(|()| invalid("host"))?;
    outgoing.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;

    let body = outgoing.body().map_err(|()| ToolError::failed("no request body"))?;
    if let Some(bytes) = &request.body {
        let stream = body.write().map_err(|()| ToolError::failed("no request body stream"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| ToolError::failed(format!("sending the body: {e:?}")))?;
        }
        drop(stream);
    }
    let pending = outgoing_handler::handle(outgoing, None).map_err(request_error)?;
    OutgoingBody::finish(body, None).map_err(request_error)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| ToolError::failed("no response"))?
        .map_err(|()| ToolError::failed("the response was taken twice"))?
        .map_err(request_error)?;

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| ToolError::failed("no response body"))?;
    let stream = incoming.stream().map_err(|()| ToolError::failed("no response body stream"))?;
    let mut body = Vec::new();
    let mut truncated = false;
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        if body.len() + chunk.len() > max_body {
            body.extend_from_slice(&chunk[..max_body - body.len()]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body, truncated })
}

fn request_error(error: ErrorCode) -> ToolError {
    match error {
        ErrorCode::HttpRequestDenied => ToolError::denied("the request was refused: the host is not granted"),
        ErrorCode::ConnectionRefused => ToolError::failed("connection refused"),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => ToolError::failed("the server timed out"),
        other => ToolError::failed(format!("the request failed: {other:?}")),
    }
}
