//! Spans leave the process in batches, from a thread of their own, so that exporting never holds
//! up a run: a finished span joins a bounded queue (a span that finds it full is dropped and
//! counted), and the thread sends what is queued when a batch is full or the delay has passed.
//! The SDK's batch processor does the same but keeps its count of dropped spans to itself; an
//! operator needs to see it, and the first failed export, on stderr.
//!
//! The queue holds bytes: a span is encoded where it ended, into the open batch's buffer, and the
//! thread sends whole buffers and hands them back for reuse. Nothing a run allocates for a span
//! is freed by another thread, which is what made the SDK's processor and exporter cost a run
//! most of their time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::otlp_http::OtlpHttp;

/// Queue and batch sizes, and how long a span may wait in the queue (the `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
}

/// Encoded spans a batch holds at most, whatever their number: a request well within what
/// collectors accept (the OpenTelemetry Collector's default limit is 20 MiB) when spans carry
/// contents.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Encoded spans the queue holds at most, whatever their number.
const MAX_QUEUE_BYTES: usize = 64 << 20;

impl BatchLimits {
    /// Four times the SDK's defaults (a queue of 8,192 spans, batches of 2,048), unless the
    /// `OTEL_BSP_*` variables say otherwise: a run ends spans at every step, and a request's fixed
    /// cost (waking the export thread, the HTTP exchange, the collector's handling) spread over
    /// 512 spans cost a saturated machine as much again as sending them (the loop benchmark: 0.87
    /// of the steps/s without telemetry with the SDK's sizes, 0.90 with these; README).
    pub fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0).unwrap_or(default)
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 8192) as usize;
        BatchLimits {
            max_queue,
            max_batch: (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 2048) as usize).min(max_queue),
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)),
        }
    }
}

/// What became of the spans handed to the processor.
#[derive(Debug, Default)]
pub struct SpanCounts {
    pub exported: AtomicU64,
    /// Dropped because the queue was full (the collector slow or unreachable).
    pub dropped: AtomicU64,
    /// Lost in exports that failed.
    pub failed: AtomicU64,
}

pub struct BoundedBatch {
    shared: Arc<Shared>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    limits: BatchLimits,
    counts: Arc<SpanCounts>,
    /// `Queue::queued`, readable without the lock: a span that will not find room is dropped
    /// before it is encoded.
    backlog: AtomicUsize,
    /// Said once per process: the collector is likely down for every export after it.
    failure_reported: AtomicBool,
}

/// Spans of one scope, encoded one after another as the `spans` of an OTLP `ScopeSpans`.
struct Batch {
    scope: InstrumentationScope,
    spans: Vec<u8>,
    count: usize,
}

#[derive(Default)]
struct Queue {
    /// The batch spans are added to.
    open: Option<Batch>,
    /// Batches ready to send, oldest first.
    sealed: VecDeque<Batch>,
    /// Spans in `open` and `sealed`.
    queued: usize,
    /// Their encoded bytes.
    queued_bytes: usize,
    /// Buffers of sent batches, for the next ones.
    spare: Vec<Vec<u8>>,
    resource: Option<Resource>,
    /// Flushes asked for, answered once everything queued before them is exported.
    flushes: Vec<mpsc::Sender<()>>,
    closing: bool,
}

impl Queue {
    /// Whether a span of `bytes` fits.
    fn has_room(&self, limits: &BatchLimits, bytes: usize) -> bool {
        !self.closing && self.queued < limits.max_queue && self.queued_bytes + bytes <= MAX_QUEUE_BYTES
    }

    /// Adds an encoded span (`span`, framed as a `ScopeSpans.spans` entry) of `scope`; whether a
    /// batch became ready to send.
    fn add(&mut self, scope: InstrumentationScope, span: &[u8], limits: &BatchLimits) -> bool {
        let mut sealed = false;
        if self.open.as_ref().is_some_and(|open| open.scope != scope || open.spans.len() + span.len() > MAX_BATCH_BYTES)
        {
            self.seal();
            sealed = true;
        }
        let spare = &mut self.spare;
        let open = self.open.get_or_insert_with(|| Batch { scope, spans: spare.pop().unwrap_or_default(), count: 0 });
        open.spans.extend_from_slice(span);
        open.count += 1;
        self.queued += 1;
        self.queued_bytes += span.len();
        if open.count >= limits.max_batch {
            self.seal();
            sealed = true;
        }
        sealed
    }

    fn seal(&mut self) {
        self.sealed.extend(self.open.take());
    }
}

impl BoundedBatch {
    /// Starts the export thread, sending to `collector`; `counts` is where it reports.
    pub fn start(collector: OtlpHttp, limits: BatchLimits, counts: Arc<SpanCounts>) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            limits,
            counts,
            backlog: AtomicUsize::new(0),
            failure_reported: AtomicBool::new(false),
        });
        let (finished, done) = mpsc::channel();
        let worker = shared.clone();
        let spawned = std::thread::Builder::new().name("reagent-otlp-spans".into()).spawn(move || {
            worker.export_until_closed(collector);
            let _ = finished.send(());
        });
        if let Err(error) = spawned {
            eprintln!("reagent: telemetry: cannot start the span export thread ({error}); spans are dropped");
            shared.lock().closing = true;
        }
        BoundedBatch { shared, done: Mutex::new(Some(done)) }
    }

    /// Asks the thread to export what is queued (`close`: and then to stop), waiting at most
    /// `timeout`.
    fn ask(&self, timeout: Duration, close: bool) -> OTelSdkResult {
        let (answer, answered) = mpsc::channel();
        {
            let mut queue = self.shared.lock();
            if close {
                queue.closing = true;
            } else {
                queue.flushes.push(answer);
            }
        }
        self.shared.wake.notify_all();
        let waited = if close {
            match self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(done) => done.recv_timeout(timeout).map_err(drop),
                None => Ok(()),
            }
        } else {
            answered.recv_timeout(timeout).map_err(drop)
        };
        waited.map_err(|()| OTelSdkError::Timeout(timeout))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn export_until_closed(&self, collector: OtlpHttp) {
        let mut resource = Resource::builder_empty().build();
        loop {
            let (batch, flushes, new_resource, closing) = self.next_batch();
            resource = new_resource.unwrap_or(resource);
            if let Some(mut batch) = batch {
                let size = batch.count as u64;
                let body = reagent_otlp::request(&resource, &batch.scope, &batch.spans);
                match collector.send(body) {
                    Ok(()) => self.counts.exported.fetch_add(size, Ordering::Relaxed),
                    Err(error) => {
                        if !self.failure_reported.swap(true, Ordering::Relaxed) {
                            eprintln!(
                                "reagent: telemetry: exporting spans failed ({error}); runs go on, and spans are \
                                 dropped while the collector does not answer"
                            );
                        }
                        self.counts.failed.fetch_add(size, Ordering::Relaxed)
                    }
                };
                let mut queue = self.lock();
                queue.queued -= batch.count;
                queue.queued_bytes -= batch.spans.len();
                batch.spans.clear();
                self.backlog.store(queue.queued, Ordering::Relaxed);
                if queue.spare.len() < 2 {
                    queue.spare.push(batch.spans);
                }
            }
            let mut queue = self.lock();
            if queue.queued == 0 {
                drop(queue);
                for flush in flushes {
                    let _ = flush.send(());
                }
                if closing {
                    return;
                }
            } else {
                // Not yet everything before them: they wait for the next batch.
                queue.flushes.extend(flushes);
            }
        }
    }

    /// Waits for a full batch, the delay, a flush or the end, and takes the oldest batch (sealing
    /// the open one if it is all there is).
    #[allow(clippy::type_complexity)]
    fn next_batch(&self) -> (Option<Batch>, Vec<mpsc::Sender<()>>, Option<Resource>, bool) {
        let deadline = Instant::now() + self.limits.delay;
        let mut queue = self.lock();
        while queue.sealed.is_empty() && queue.flushes.is_empty() && !queue.closing && queue.resource.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.wake.wait_timeout(queue, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        if queue.sealed.is_empty() {
            queue.seal();
        }
        (queue.sealed.pop_front(), std::mem::take(&mut queue.flushes), queue.resource.take(), queue.closing)
    }
}

thread_local! {
    /// Where a span is encoded before it joins the queue: one buffer per thread, kept.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl fmt::Debug for BoundedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedBatch").field("limits", &self.shared.limits).finish()
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let limits = &self.shared.limits;
        let dropped = || {
            self.shared.counts.dropped.fetch_add(1, Ordering::Relaxed);
        };
        // Encoded outside the lock, and only when it is likely to find room.
        if self.shared.backlog.load(Ordering::Relaxed) >= limits.max_queue {
            return dropped();
        }
        ENCODED.with_borrow_mut(|encoded| {
            encoded.clear();
            reagent_otlp::framed_span(encoded, &span);
            let mut queue = self.shared.lock();
            if !queue.has_room(limits, encoded.len()) {
                return dropped();
            }
            let sealed = queue.add(span.instrumentation_scope, encoded, limits);
            self.shared.backlog.store(queue.queued, Ordering::Relaxed);
            drop(queue);
            if sealed {
                self.shared.wake.notify_one();
            }
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Duration::from_secs(5), false)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(timeout, true)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Some(resource.clone());
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_queue: usize) -> BatchLimits {
        BatchLimits { max_queue, max_batch: 10, delay: Duration::from_secs(5) }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope::builder("reagent").build()
    }

    #[test]
    fn a_batch_is_sealed_at_its_span_count_or_before_it_would_pass_its_byte_limit() {
        let mut queue = Queue::default();
        for n in 1..=10 {
            assert_eq!(queue.add(scope(), &[0; 8], &limits(100)), n == 10, "span {n}");
        }
        let third = vec![0; MAX_BATCH_BYTES / 3];
        for _ in 0..3 {
            assert!(!queue.add(scope(), &third, &limits(100)));
        }
        assert!(queue.add(scope(), &third, &limits(100)), "a fourth third is more than a batch holds");
        let sealed: Vec<_> = queue.sealed.iter().map(|batch| (batch.count, batch.spans.len())).collect();
        assert_eq!(sealed, [(10, 80), (3, 3 * third.len())]);
        assert_eq!((queue.queued, queue.queued_bytes), (14, 80 + 4 * third.len()));
    }

    #[test]
    fn the_queue_has_no_room_past_its_span_count_or_its_bytes() {
        let mut queue = Queue::default();
        for _ in 0..3 {
            assert!(queue.has_room(&limits(3), 8));
            queue.add(scope(), &[0; 8], &limits(3));
        }
        assert!(!queue.has_room(&limits(3), 8));

        let mut queue = Queue::default();
        let mebibyte = vec![0; 1 << 20];
        while queue.has_room(&limits(1000), mebibyte.len()) {
            queue.add(scope(), &mebibyte, &limits(1000));
        }
        assert_eq!(queue.queued_bytes, MAX_QUEUE_BYTES);
    }
}
