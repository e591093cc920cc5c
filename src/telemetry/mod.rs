//! The process's telemetry: OpenTelemetry's SDK set up once from the standard `OTEL_*` variables,
//! exporting OTLP over HTTP/protobuf, and the `Instrumentation` the runs report to. Off unless an
//! OTLP endpoint is set (and `OTEL_SDK_DISABLED` is not `true`); a server also keeps its metrics
//! for its Prometheus `/metrics`. Export happens on threads of its own and never slows or fails a
//! run: spans wait in a bounded queue (`batch`), and the flush at exit is bounded.

mod batch;
mod otlp_http;
mod prometheus;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality, exporter::PushMetricExporter,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};

use crate::agent_loop::{Instrumentation, TELEMETRY_SCOPE};
pub use batch::SpanCounts;
use batch::{BatchLimits, BoundedBatch};
use otlp_http::OtlpHttp;

/// How long the flush at exit may take, all signals together.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// The process's telemetry. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Telemetry(Arc<Providers>);

struct Providers {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
    /// What `/metrics` collects from.
    scrape: Option<Arc<ManualReader>>,
    spans: Arc<SpanCounts>,
    instrumentation: Instrumentation,
}

/// Where the signals go, when a test hands in the SDK's exporters.
pub struct Exporters<S, M> {
    pub spans: Option<S>,
    pub metrics: Option<M>,
    /// Keep the metrics for a Prometheus scrape too.
    pub scrape: bool,
    /// Record message and argument contents on spans.
    pub contents: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

impl Telemetry {
    /// Nothing recorded, nothing exported.
    pub fn off() -> Self {
        Telemetry(Arc::new(Providers {
            traces: None,
            metrics: None,
            scrape: None,
            spans: Arc::default(),
            instrumentation: Instrumentation::off(),
        }))
    }

    /// As the standard variables say: traces and metrics over OTLP/HTTP (protobuf) where
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (or the signal's own `..._TRACES_` / `..._METRICS_ENDPOINT`)
    /// is set and `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` is not `none`; headers,
    /// timeouts, the service name, resource attributes, the sampler and the batch sizes from
    /// theirs. `OTEL_SDK_DISABLED=true` turns all of it off. `scrape`: keep metrics for
    /// `/metrics` whether or not they are exported. Contents are recorded only with
    /// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`.
    ///
    /// Call it outside the async runtime (the exporter's blocking HTTP client has a runtime of
    /// its own).
    pub fn from_env(scrape: bool) -> Result<Self, TelemetryError> {
        let disabled = env_flag("OTEL_SDK_DISABLED");
        let wanted = |signal: &str| {
            let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")]
                .iter()
                .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
            let exporter = std::env::var(format!("OTEL_{signal}_EXPORTER")).unwrap_or_default();
            !disabled && endpoint && exporter.trim() != "none"
        };
        if disabled && !scrape {
            return Ok(Self::off());
        }
        check_protocol()?;
        let spans = Arc::<SpanCounts>::default();
        let traces = match wanted("TRACES") {
            true => Some(
                SdkTracerProvider::builder()
                    .with_resource(resource())
                    .with_span_processor(BoundedBatch::start(
                        OtlpHttp::from_env()?,
                        BatchLimits::from_env(),
                        spans.clone(),
                    ))
                    .build(),
            ),
            false => None,
        };
        let metrics = match wanted("METRICS") {
            true => Some(
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .build()
                    .map_err(|e| TelemetryError(format!("the OTLP metric exporter: {e}")))?,
            ),
            false => None,
        };
        let contents = env_flag("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT");
        Ok(Self::assemble(traces, spans, metrics, scrape, contents))
    }

    /// Spans and metrics to the SDK exporters given (a test's in-memory ones). Spans are
    /// exported as each ends.
    pub fn with<S: SpanExporter + 'static, M: PushMetricExporter>(exporters: Exporters<S, M>) -> Self {
        let Exporters { spans, metrics, scrape, contents } = exporters;
        let traces = spans.map(|exporter| {
            SdkTracerProvider::builder().with_resource(resource()).with_simple_exporter(exporter).build()
        });
        Self::assemble(traces, Arc::default(), metrics, scrape, contents)
    }

    fn assemble<M: PushMetricExporter>(
        traces: Option<SdkTracerProvider>,
        spans: Arc<SpanCounts>,
        metrics: Option<M>,
        scrape: bool,
        contents: bool,
    ) -> Self {
        let resource = resource();
        let scrape = scrape.then(|| Arc::new(ManualReader::builder().build()));
        let metrics = (metrics.is_some() || scrape.is_some()).then(|| {
            let mut builder = SdkMeterProvider::builder().with_resource(resource);
            if let Some(exporter) = metrics {
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            if let Some(scrape) = &scrape {
                builder = builder.with_reader(Scrape(scrape.clone()));
            }
            builder.build()
        });
        let tracer = tracer_of(traces.as_ref());
        let meter = match &metrics {
            Some(provider) => provider.meter(TELEMETRY_SCOPE),
            None => opentelemetry::metrics::NoopMeterProvider::new().meter(TELEMETRY_SCOPE),
        };
        let instrumentation = Instrumentation::new(tracer, &meter, contents);
        Telemetry(Arc::new(Providers { traces, metrics, scrape, spans, instrumentation }))
    }

    /// What the process's runs report to.
    pub fn instrumentation(&self) -> Instrumentation {
        self.0.instrumentation.clone()
    }

    /// A tracer for spans outside runs (an MCP server's `tools/call`); a no-op one when traces
    /// are off.
    pub fn tracer(&self) -> BoxedTracer {
        tracer_of(self.0.traces.as_ref())
    }

    /// Whether spans are exported.
    pub fn traces(&self) -> bool {
        self.0.traces.is_some()
    }

    /// The metrics in Prometheus' text format, when kept for a scrape.
    pub fn prometheus(&self) -> Option<String> {
        let scrape = self.0.scrape.as_ref()?;
        let mut metrics = ResourceMetrics::default();
        scrape.collect(&mut metrics).ok()?;
        Some(prometheus::render(&metrics))
    }

    /// What became of the spans so far.
    pub fn span_counts(&self) -> &SpanCounts {
        &self.0.spans
    }

    /// Exports what is queued now, waiting for it.
    pub fn flush(&self) {
        if let Some(traces) = &self.0.traces {
            let _ = traces.force_flush();
        }
        if let Some(metrics) = &self.0.metrics {
            let _ = metrics.force_flush();
        }
    }

    /// Exports what is left, waiting at most `within` (half for spans, half for metrics), and
    /// says on stderr what was lost, if anything.
    pub fn shutdown(&self, within: Duration) {
        if let Some(traces) = &self.0.traces {
            let _ = traces.shutdown_with_timeout(within / 2);
        }
        if let Some(metrics) = &self.0.metrics {
            let _ = metrics.shutdown_with_timeout(within / 2);
        }
        let counts = &self.0.spans;
        let (dropped, failed) = (counts.dropped.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed));
        if dropped + failed > 0 {
            eprintln!(
                "reagent: telemetry: {} span(s) not exported ({dropped} dropped with the queue full, {failed} in \
                 failed exports)",
                dropped + failed
            );
        }
    }
}

fn tracer_of(traces: Option<&SdkTracerProvider>) -> BoxedTracer {
    match traces {
        Some(provider) => BoxedTracer::new(Box::new(provider.tracer(TELEMETRY_SCOPE))),
        None => BoxedTracer::new(Box::new(opentelemetry::trace::noop::NoopTracer::new())),
    }
}

/// `service.name` is `reagent` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder =
        Resource::builder().with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    match named {
        true => builder.build(),
        false => builder.with_service_name("reagent").build(),
    }
}

/// reagent exports OTLP over HTTP with protobuf only: another protocol asked for is an error
/// that says so, rather than exports a collector would refuse.
fn check_protocol() -> Result<(), TelemetryError> {
    for name in
        ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]
    {
        match std::env::var(name) {
            Ok(protocol) if !protocol.trim().is_empty() && protocol.trim() != "http/protobuf" => {
                return Err(TelemetryError(format!(
                    "{name}={protocol}: reagent exports OTLP over http/protobuf only (point it at the collector's \
                     HTTP port, 4318 by default, and unset {name} or set it to http/protobuf)"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The manual reader, shared between the meter provider and `/metrics`.
#[derive(Debug)]
struct Scrape(Arc<ManualReader>);

impl MetricReader for Scrape {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, metrics: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(metrics)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}
