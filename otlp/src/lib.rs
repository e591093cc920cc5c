//! Spans in OTLP's protobuf (`opentelemetry/proto/trace/v1/trace.proto`), written straight from
//! the OpenTelemetry SDK's `SpanData` into bytes. The OTLP crate converts each span into generated
//! message structs first: a dozen allocations per span, freed again on its export thread. Here a
//! span is encoded once, without allocating, where it ended (`framed_span`), and an export thread
//! only wraps runs of encoded spans in a request (`request`).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// `span` as an entry of `ScopeSpans.spans`: its tag, its length, the `Span` message.
pub fn framed_span(out: &mut Vec<u8>, span: &SpanData) {
    // Room for a two-byte length (128 bytes to 16 KiB), which nearly every span has.
    message_with_room(out, 2, 2, |out| encode_span(out, span));
}

/// An `ExportTraceServiceRequest` under `resource` of one `ScopeSpans`: `scope` and `spans`, a run
/// of `framed_span`s.
pub fn request(resource: &Resource, scope: &InstrumentationScope, spans: &[u8]) -> Vec<u8> {
    // The small parts first, so that the lengths of the two messages around the spans are known
    // before the spans are copied once, into place.
    let mut resource_message = Vec::new();
    message(&mut resource_message, 1, |out| {
        for (key, value) in resource.iter() {
            message(out, 1, |out| key_value(out, key.as_str(), value));
        }
    });
    let mut scope_message = Vec::new();
    message(&mut scope_message, 1, |out| encode_scope(out, scope));
    let mut scope_tail = Vec::new();
    string(&mut scope_tail, 3, scope.schema_url().unwrap_or_default());
    let mut resource_tail = Vec::new();
    string(&mut resource_tail, 3, resource.schema_url().unwrap_or_default());

    let scope_spans = scope_message.len() + spans.len() + scope_tail.len();
    let resource_spans = resource_message.len() + length_of_field(scope_spans) + resource_tail.len();
    let mut out = Vec::with_capacity(length_of_field(resource_spans));
    tag(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    out.extend_from_slice(&resource_message);
    tag(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    out.extend_from_slice(&scope_message);
    out.extend_from_slice(spans);
    out.extend_from_slice(&scope_tail);
    out.extend_from_slice(&resource_tail);
    out
}

/// The size of a length-delimited field of `len` bytes with a one-byte tag.
fn length_of_field(len: usize) -> usize {
    1 + varint_bytes(len as u64).1 + len
}

fn encode_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        key_value_field(out, 3, attribute);
    }
}

fn encode_span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes(out, 1, &context.trace_id().to_bytes());
    bytes(out, 2, &context.span_id().to_bytes());
    string(out, 3, &context.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    uint(out, 6, kind(&span.span_kind));
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    for attribute in &span.attributes {
        key_value_field(out, 9, attribute);
    }
    uint(out, 10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        message(out, 11, |out| {
            fixed64(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            for attribute in &event.attributes {
                key_value_field(out, 3, attribute);
            }
            uint(out, 4, event.dropped_attributes_count.into());
        });
    }
    uint(out, 12, span.events.dropped_count.into());
    for link in span.links.iter() {
        message(out, 13, |out| {
            bytes(out, 1, &link.span_context.trace_id().to_bytes());
            bytes(out, 2, &link.span_context.span_id().to_bytes());
            string(out, 3, &link.span_context.trace_state().header());
            for attribute in &link.attributes {
                key_value_field(out, 4, attribute);
            }
            uint(out, 5, link.dropped_attributes_count.into());
            fixed32(out, 6, flags(&link.span_context, link.span_context.is_remote()));
        });
    }
    uint(out, 14, span.links.dropped_count.into());
    message(out, 15, |out| {
        let (code, description) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        string(out, 2, description);
        uint(out, 3, code);
    });
    fixed32(out, 16, flags(context, span.parent_span_is_remote));
}

/// The trace flags, and whether the parent is remote (`SpanFlags` in the proto).
fn flags(context: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// A `KeyValue` field. Most attributes hold strings or scalars, whose encoded lengths are known
/// before writing: they are written in one pass.
fn key_value_field(out: &mut Vec<u8>, field: u32, attribute: &KeyValue) {
    let key = attribute.key.as_str();
    // The length of the `AnyValue`: its one field.
    let any_value_length = match &attribute.value {
        Value::String(value) => length_of_field(value.as_str().len()),
        Value::Bool(_) => 2,
        Value::I64(value) => 1 + varint_bytes(*value as u64).1,
        Value::F64(_) => 9,
        _ => return message(out, field, |out| key_value(out, key, &attribute.value)),
    };
    let key_length = if key.is_empty() { 0 } else { length_of_field(key.len()) };
    tag(out, field, LEN);
    varint(out, (key_length + length_of_field(any_value_length)) as u64);
    string(out, 1, key);
    tag(out, 2, LEN);
    varint(out, any_value_length as u64);
    any_value(out, &attribute.value);
}

fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, |out| any_value(out, value));
}

/// An `AnyValue`: its one field is written even when it holds the default (an empty string, 0,
/// false), which is what tells the value's type.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            tag(out, 2, VARINT);
            varint(out, u64::from(*b));
        }
        Value::I64(i) => {
            tag(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::F64(f) => {
            tag(out, 4, I64);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => string_value(out, s.as_str()),
        Value::Array(array) => message(out, 5, |out| match array {
            Array::Bool(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::Bool(*v)))),
            Array::I64(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::I64(*v)))),
            Array::F64(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::F64(*v)))),
            Array::String(values) => values.iter().for_each(|v| message(out, 1, |out| string_value(out, v.as_str()))),
            other => message(out, 1, |out| string_value(out, &other.to_string())),
        }),
        other => string_value(out, &other.as_str()),
    }
}

fn string_value(out: &mut Vec<u8>, value: &str) {
    tag(out, 1, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

#[inline(always)]
fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field << 3 | u32::from(wire_type)));
}

/// Most varints written (tags, lengths, small counts) fit in a byte.
#[inline(always)]
fn varint(out: &mut Vec<u8>, value: u64) {
    match value {
        0..0x80 => out.push(value as u8),
        _ => long_varint(out, value),
    }
}

fn long_varint(out: &mut Vec<u8>, value: u64) {
    let (bytes, n) = varint_bytes(value);
    out.extend_from_slice(&bytes[..n]);
}

fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    (bytes, n + 1)
}

/// A scalar field; proto3 leaves out a field at its default.
fn uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, I64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        tag(out, field, I32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        tag(out, field, LEN);
        varint(out, value.len() as u64);
        out.extend_from_slice(value);
    }
}

/// A nested message: written in place after room for a one-byte length (most messages are a few
/// dozen bytes long).
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    message_with_room(out, field, 1, write)
}

/// A nested message written in place after `room` bytes kept for its length; a length that needs
/// another number of bytes moves the message once, to fit.
fn message_with_room(out: &mut Vec<u8>, field: u32, room: usize, write: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let start = out.len();
    out.resize(start + room, 0);
    write(out);
    let body = start + room;
    let (length, n) = varint_bytes((out.len() - body) as u64);
    match n.cmp(&room) {
        std::cmp::Ordering::Equal => {}
        std::cmp::Ordering::Greater => {
            out.splice(body..body, std::iter::repeat_n(0, n - room));
        }
        std::cmp::Ordering::Less => drop(out.drain(start + n..body)),
    }
    out[start..start + n].copy_from_slice(&length[..n]);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, KeyValue, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span as ProtoSpan};
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("reagent")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.37.0")
            .with_attributes([KeyValue::new("scope.flag", true)])
            .build()
    }

    /// A span with a value of every kind, events, a link and an error status.
    fn span(n: u8, remote_parent: bool) -> SpanData {
        let context = |trace: u8, span: u8, remote: bool| {
            let state = TraceState::from_key_value([("vendor", "x")]).expect("a trace state");
            SpanContext::new(
                TraceId::from_bytes([trace; 16]),
                SpanId::from_bytes([span; 8]),
                TraceFlags::SAMPLED,
                remote,
                state,
            )
        };
        let start = UNIX_EPOCH + Duration::from_nanos(1_764_547_200_123_456_789);
        SpanData {
            span_context: context(7, n, false),
            parent_span_id: SpanId::from_bytes([9; 8]),
            parent_span_is_remote: remote_parent,
            span_kind: SpanKind::Client,
            name: Cow::Owned(format!("chat model-{n}")),
            start_time: start,
            end_time: start + Duration::from_millis(1500),
            attributes: vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("empty", ""),
                KeyValue::new("gen_ai.usage.input_tokens", 1234_i64),
                KeyValue::new("negative", -5_i64),
                KeyValue::new("zero", 0_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("reagent.thinking", false),
                KeyValue::new("long", "é".repeat(300)),
                KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    opentelemetry::Value::Array(Array::String(vec![StringValue::from("stop"), StringValue::from("")])),
                ),
                KeyValue::new("bools", opentelemetry::Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", opentelemetry::Value::Array(Array::I64(vec![1, -1, 0]))),
                KeyValue::new("floats", opentelemetry::Value::Array(Array::F64(vec![0.5, 0.0]))),
            ],
            dropped_attributes_count: 2,
            events: {
                let mut events = SpanEvents::default();
                events.events = vec![
                    Event::new("reagent.budget_spent", start, vec![KeyValue::new("reagent.step", 3_i64)], 1),
                    Event::new("empty", start, vec![], 0),
                ];
                events.dropped_count = 1;
                events
            },
            links: {
                let mut links = SpanLinks::default();
                links.links = vec![Link::new(context(8, 1, true), vec![KeyValue::new("why", "resumed")], 0)];
                links
            },
            status: Status::error("model_failed"),
            instrumentation_scope: scope(),
        }
    }

    #[test]
    fn a_span_decodes_to_what_the_otlp_crate_makes_of_it() {
        for remote_parent in [false, true] {
            assert_decodes_as_the_otlp_crate_converts(span(1, remote_parent));
        }
    }

    fn assert_decodes_as_the_otlp_crate_converts(data: SpanData) {
        let mut framed = Vec::new();
        framed_span(&mut framed, &data);
        let decoded = ScopeSpans::decode(framed.as_slice()).expect("a ScopeSpans entry");
        assert_eq!(decoded.spans, vec![ProtoSpan::from(data)]);
    }

    #[test]
    fn a_root_span_with_nothing_set_decodes_to_what_the_otlp_crate_makes_of_it() {
        let mut data = span(2, false);
        data.parent_span_id = SpanId::INVALID;
        data.span_context = SpanContext::new(
            TraceId::from_bytes([3; 16]),
            SpanId::from_bytes([4; 8]),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        (data.attributes, data.dropped_attributes_count, data.status) = (vec![], 0, Status::Unset);
        (data.events, data.links) = (SpanEvents::default(), SpanLinks::default());
        assert_decodes_as_the_otlp_crate_converts(data);
    }

    /// Lengths that take more bytes than the encoder keeps for them: a nested message of 128 bytes
    /// or more, a span of 16 KiB or more.
    #[test]
    fn long_messages_and_long_spans_decode_to_what_the_otlp_crate_makes_of_them() {
        for strings in [20, 2000] {
            let mut data = span(5, false);
            let array = Array::String((0..strings).map(|i| StringValue::from(format!("value-{i}"))).collect());
            data.attributes.push(KeyValue::new("many", opentelemetry::Value::Array(array)));
            assert_decodes_as_the_otlp_crate_converts(data);
        }
    }

    #[test]
    fn a_request_decodes_to_what_the_otlp_crate_sends() {
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "reagent"), KeyValue::new("service.instance", 3_i64)])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.36.0")
            .build();
        let spans: Vec<SpanData> = (1..=3).map(|n| span(n, false)).collect();
        let mut framed = Vec::new();
        for span in &spans {
            framed_span(&mut framed, span);
        }
        let decoded = ExportTraceServiceRequest::decode(request(&resource, &scope(), &framed).as_slice())
            .expect("an ExportTraceServiceRequest");
        let expected = group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(&resource));
        assert_eq!(decoded.resource_spans, expected);
    }
}
