//! `http_fetch`: GET or POST a URL and return the response as text or JSON. Reaches only the
//! hosts the agent grants; redirects are followed (each hop checked by the host again).

use std::collections::BTreeMap;

use reagent_tool::ToolError;
use reagent_tool::http::{Request, send};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DEFAULT_MAX_BYTES: usize = 256 << 10;
const MAX_REDIRECTS: usize = 5;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The http:// or https:// URL.
    url: String,
    /// GET (default) or POST.
    #[serde(default)]
    method: Method,
    /// Request headers, e.g. {"accept": "application/json"}.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// POST body: a string is sent as text, anything else as JSON.
    body: Option<Value>,
    /// The most bytes of the response body to read (default 262144).
    #[schemars(range(min = 1, max = 16777216))]
    max_bytes: Option<usize>,
}

#[derive(Deserialize, JsonSchema, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "UPPERCASE")]
enum Method {
    #[default]
    Get,
    Post,
}

#[derive(Serialize, JsonSchema)]
struct Fetched {
    /// The URL that answered, after redirects.
    url: String,
    status: u16,
    content_type: Option<String>,
    /// The body: parsed JSON when the response is JSON, text otherwise.
    body: Value,
    /// The body was cut at max_bytes.
    truncated: bool,
}

fn http_fetch(args: Args) -> Result<Fetched, ToolError> {
    if args.method == Method::Get && args.body.is_some() {
        return Err(ToolError::invalid_arguments("a GET request has no body: use \"method\": \"POST\""));
    }
    let mut headers: Vec<(String, String)> = args.headers.into_iter().collect();
    let body = args.body.map(|body| match body {
        Value::String(text) => text.into_bytes(),
        json => {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
                headers.push(("content-type".into(), "application/json".into()));
            }
            json.to_string().into_bytes()
        }
    });
    let method = if args.method == Method::Post { "POST" } else { "GET" };
    let mut request = Request { method: method.into(), url: args.url, headers, body };
    let max_bytes = args.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);

    for _ in 0..=MAX_REDIRECTS {
        let response = send(&request, max_bytes)?;
        if let (300..=399, Some(location)) = (response.status, response.header("location")) {
            request.url = resolve(&request.url, location);
            // A redirect after a POST is fetched with GET, as browsers do (303 and most 302s).
            request.method = "GET".into();
            request.body = None;
            continue;
        }
        let content_type = response.header("content-type").map(str::to_string);
        let text = String::from_utf8_lossy(&response.body).into_owned();
        let is_json = content_type.as_deref().is_some_and(|t| t.contains("json"));
        let body = match is_json && !response.truncated {
            true => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            false => Value::String(text),
        };
        return Ok(Fetched {
            url: request.url,
            status: response.status,
            content_type,
            body,
            truncated: response.truncated,
        });
    }
    Err(ToolError::failed(format!("more than {MAX_REDIRECTS} redirects")))
}

/// A `Location` may be absolute or relative to the current URL's origin.
fn resolve(current: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = current.find("://").map_or(0, |i| i + 3);
    let origin = match current[origin_end..].find('/') {
        Some(i) => &current[..origin_end + i],
        None => current,
    };
    match location.starts_with('/') {
        true => format!("{origin}{location}"),
        false => format!("{origin}/{location}"),
    }
}

reagent_tool::export_tools! {
    http_fetch: SideEffect => "Fetches a URL with GET or POST and returns the status, content type and body (JSON parsed, or text). Only hosts the agent grants are reachable.",
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn relative_redirects_resolve_against_the_origin() {
        assert_eq!(resolve("http://a.com/x/y", "/z"), "http://a.com/z");
        assert_eq!(resolve("http://a.com", "z"), "http://a.com/z");
        assert_eq!(resolve("http://a.com/x", "https://b.org/"), "https://b.org/");
    }
}
