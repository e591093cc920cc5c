//! Where spans go: a collector's OTLP/HTTP endpoint, as the standard variables name it, headers
//! and timeout included, one POST of protobuf per batch. (Metrics go through the OTLP crate's own
//! exporter, which reads the same variables.)

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::TelemetryError;

/// A collector's traces endpoint, and how to speak to it.
pub struct OtlpHttp {
    client: Client,
    endpoint: String,
}

impl OtlpHttp {
    /// From `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`/v1/traces` added), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` (`name=value,…`, values
    /// URL-encoded) and `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (milliseconds, 10 s by default).
    /// Call it outside the async runtime: the blocking client has a runtime of its own.
    pub fn from_env() -> Result<Self, TelemetryError> {
        let endpoint = match (variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), variable("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            (Some(endpoint), _) => checked("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)?,
            (None, Some(base)) => {
                format!("{}/v1/traces", checked("OTEL_EXPORTER_OTLP_ENDPOINT", base)?.trim_end_matches('/'))
            }
            (None, None) => "http://localhost:4318/v1/traces".to_string(),
        };
        let headers = match variable("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(headers) => parse_headers("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &headers)?,
            None => match variable("OTEL_EXPORTER_OTLP_HEADERS") {
                Some(headers) => parse_headers("OTEL_EXPORTER_OTLP_HEADERS", &headers)?,
                None => HeaderMap::new(),
            },
        };
        let timeout = ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
            .into_iter()
            .find_map(|name| variable(name)?.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        for name in ["OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"] {
            if let Some(compression) = variable(name).filter(|c| !c.trim().eq_ignore_ascii_case("none")) {
                return Err(TelemetryError(format!(
                    "{name}={compression}: reagent sends OTLP uncompressed (unset {name} or set it to none)"
                )));
            }
        }
        let client = Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .user_agent(concat!("reagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TelemetryError(format!("the OTLP/HTTP client: {e}")))?;
        Ok(OtlpHttp { client, endpoint })
    }

    /// Sends one request's protobuf; an error says why the collector did not take it.
    pub fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .map_err(|e| format!("POST {}: {e}", self.endpoint))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(format!("POST {}: the collector answered {status}", self.endpoint)),
        }
    }
}

fn variable(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

fn checked(name: &str, endpoint: String) -> Result<String, TelemetryError> {
    match reqwest::Url::parse(endpoint.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(endpoint.trim().to_string()),
        _ => Err(TelemetryError(format!(
            "{name}={endpoint}: not an http(s) URL (e.g. http://localhost:4318, a collector's OTLP/HTTP port)"
        ))),
    }
}

/// `name=value,name=value`, values URL-encoded (W3C baggage's format, as the spec asks).
fn parse_headers(name: &str, list: &str) -> Result<HeaderMap, TelemetryError> {
    let mut headers = HeaderMap::new();
    for pair in list.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let bad = |why: &str| TelemetryError(format!("{name}: `{pair}` {why} (the format is name=value,name=value)"));
        let (key, value) = pair.split_once('=').ok_or_else(|| bad("has no `=`"))?;
        let value = percent_decode(value.trim()).ok_or_else(|| bad("has a malformed %-escape"))?;
        let key = HeaderName::from_bytes(key.trim().as_bytes()).map_err(|_| bad("is not a valid header name"))?;
        let value = HeaderValue::from_str(&value).map_err(|_| bad("is not a valid header value"))?;
        headers.insert(key, value);
    }
    Ok(headers)
}

fn percent_decode(value: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}
