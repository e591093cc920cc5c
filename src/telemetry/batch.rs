//! Spans leave the process in batches, from a thread of their own, so that exporting never holds
//! up a run: a finished span joins a bounded queue (a span that finds it full is dropped and
//! counted), and the thread exports what is queued when a batch is full or the delay has passed.
//! The SDK's batch processor does the same but keeps its count of dropped spans to itself; an
//! operator needs to see it, and the first failed export, on stderr.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Queue and batch sizes, and how long a span may wait in the queue (the `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_queue: usize,
    pub max_batch: usize,
    pub delay: Duration,
}

impl BatchLimits {
    /// The SDK's defaults, unless the `OTEL_BSP_*` variables say otherwise.
    pub fn from_env() -> Self {
        let number = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0).unwrap_or(default)
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize;
        BatchLimits {
            max_queue,
            max_batch: (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize).min(max_queue),
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
    /// Said once per process: the collector is likely down for every export after it.
    failure_reported: AtomicBool,
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<SpanData>,
    resource: Option<Resource>,
    /// Flushes asked for, answered once everything queued before them is exported.
    flushes: Vec<mpsc::Sender<()>>,
    closing: bool,
}

impl BoundedBatch {
    /// Starts the export thread; `counts` is where it reports.
    pub fn start<E: SpanExporter + 'static>(exporter: E, limits: BatchLimits, counts: Arc<SpanCounts>) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            limits,
            counts,
            failure_reported: AtomicBool::new(false),
        });
        let (finished, done) = mpsc::channel();
        let worker = shared.clone();
        let spawned = std::thread::Builder::new().name("reagent-otlp-spans".into()).spawn(move || {
            worker.export_until_closed(exporter);
            let _ = finished.send(());
        });
        if let Err(error) = spawned {
            eprintln!("reagent: telemetry: cannot start the span export thread ({error}); spans are dropped");
            shared.queue.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        }
        BoundedBatch { shared, done: Mutex::new(Some(done)) }
    }

    /// Asks the thread to export what is queued (`close`: and then to stop), waiting at most
    /// `timeout`.
    fn ask(&self, timeout: Duration, close: bool) -> OTelSdkResult {
        let (answer, answered) = mpsc::channel();
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
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
    fn export_until_closed<E: SpanExporter>(&self, mut exporter: E) {
        loop {
            let (batch, flushes, resource, closing) = self.next_batch();
            if let Some(resource) = resource {
                exporter.set_resource(&resource);
            }
            if !batch.is_empty() {
                let size = batch.len() as u64;
                match futures::executor::block_on(exporter.export(batch)) {
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
            }
            let drained = self.queue.lock().unwrap_or_else(|e| e.into_inner()).spans.is_empty();
            if drained {
                for flush in flushes {
                    let _ = flush.send(());
                }
                if closing {
                    let _ = exporter.shutdown();
                    return;
                }
            } else {
                // Not yet everything before them: they wait for the next batch.
                self.queue.lock().unwrap_or_else(|e| e.into_inner()).flushes.extend(flushes);
            }
        }
    }

    /// Waits for a full batch, the delay, a flush or the end, and takes what is queued (up to a
    /// batch).
    fn next_batch(&self) -> (Vec<SpanData>, Vec<mpsc::Sender<()>>, Option<Resource>, bool) {
        let deadline = Instant::now() + self.limits.delay;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while queue.spans.len() < self.limits.max_batch
            && queue.flushes.is_empty()
            && !queue.closing
            && queue.resource.is_none()
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self.wake.wait_timeout(queue, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        let take = queue.spans.len().min(self.limits.max_batch);
        let batch = queue.spans.drain(..take).collect();
        (batch, std::mem::take(&mut queue.flushes), queue.resource.take(), queue.closing)
    }
}

impl fmt::Debug for BoundedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedBatch").field("limits", &self.shared.limits).finish()
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.closing || queue.spans.len() >= self.shared.limits.max_queue {
            self.shared.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.spans.push_back(span);
        let full = queue.spans.len() >= self.shared.limits.max_batch;
        drop(queue);
        if full {
            self.shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Duration::from_secs(5), false)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(timeout, true)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).resource = Some(resource.clone());
        self.shared.wake.notify_one();
    }
}
