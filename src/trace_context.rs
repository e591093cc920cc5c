//! W3C Trace Context (`traceparent`, `tracestate`): how a trace crosses a process boundary. A run
//! served over HTTP or MCP continues its caller's trace from these; a call to an MCP server passes
//! them on in `_meta`; a resumed run links back to the span its first part ran under.
//!
//! Written out here rather than taken from the SDK's propagator: the loop and the toolboxes speak
//! only the OpenTelemetry API, and the format is one line.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use serde::{Deserialize, Serialize};

/// A trace as it crosses a boundary: a caller's headers (kept with a run it submitted), or what
/// a call passes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeaders {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// A caller's headers, if its `traceparent` is well formed; a malformed one is ignored, as
    /// a receiver should, rather than refused.
    pub fn received(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        parse(traceparent, tracestate)?;
        Some(TraceHeaders { traceparent: traceparent.trim().to_string(), tracestate: tracestate.map(str::to_string) })
    }

    /// The span current in `context`, if there is a valid one to continue.
    pub fn of(context: &Context) -> Option<Self> {
        let span = context.span();
        let span = span.span_context();
        if !span.is_valid() {
            return None;
        }
        let state = span.trace_state().header();
        Some(TraceHeaders { traceparent: traceparent(span), tracestate: (!state.is_empty()).then_some(state) })
    }

    /// The context they name, as a remote parent.
    pub fn parent(&self) -> Context {
        match parse(&self.traceparent, self.tracestate.as_deref()) {
            Some(span) => Context::new().with_remote_span_context(span),
            None => Context::new(),
        }
    }
}

/// `00-TRACE-SPAN-FLAGS`.
pub fn traceparent(span: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", span.trace_id(), span.span_id(), span.trace_flags().to_u8())
}

/// A span context from its `traceparent`: version 00 (or a later one, read as 00 allows), ids
/// not all zeros.
pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let extra = parts.next();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let version_ok = hex(version, 2) && version != "ff" && (version != "00" || extra.is_none());
    if !version_ok || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|id| *id != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|id| *id != SpanId::INVALID)?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let state = tracestate.and_then(|s| TraceState::from_str(s).ok()).unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let span = parse(header, Some("vendor=value")).unwrap();
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(traceparent(&span), header);
        assert_eq!(span.trace_state().header(), "vendor=value");
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(parse(bad, None).is_none(), "{bad}");
        }
        assert!(parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", None).is_some());
    }
}
