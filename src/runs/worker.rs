//! The worker loop: take runs from the store's queue and drive them, a bounded number at once,
//! until told to stop. `reagent worker` is this loop alone; `reagent serve` runs it beside the API
//! (unless `--no-worker`). Any number of processes may run it on one store: the store hands each
//! run to one of them (`RunStore::claim_next`), and a run whose worker died goes to another once
//! its lease runs out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reagent_store::{Queue, Run};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use super::Runs;

/// How a process takes work from the queue.
#[derive(Debug, Clone)]
pub struct Worker {
    pub queue: Queue,
    /// Runs driven at once by this process.
    pub concurrency: usize,
    /// How long an idle worker waits before it looks at the queue again.
    pub poll: Duration,
    /// Notified when there may be new work (a run submitted or decided in this process): the
    /// loop looks at once.
    pub wake: Arc<Notify>,
}

impl Worker {
    pub fn new(queue: Queue, concurrency: usize, poll: Duration) -> Self {
        Worker { queue, concurrency, poll, wake: Arc::default() }
    }
}

impl Runs {
    /// Takes runs from the queue as long as fewer than `worker.concurrency` are being driven, and
    /// hands each to `drive` (which drives it to its end or next stop); looks again every
    /// `worker.poll` (or when woken) while the queue is empty. When `stop` turns true it takes no
    /// more, asks the runs it drives to stop at their next turn boundary, and returns once they
    /// have.
    pub async fn work<F, D>(&self, worker: Worker, mut stop: watch::Receiver<bool>, drive: F)
    where
        F: Fn(Run) -> D,
        D: Future<Output = ()> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(worker.concurrency.max(1)));
        // Runs a dead process of this host held are taken at once, within the same bounds; the
        // queue would give them only once their leases ran out.
        let orphaned = self.store.orphaned().await.unwrap_or_else(|error| {
            eprintln!("reagent: cannot look for runs of exited processes: {error}");
            Vec::new()
        });
        for id in orphaned {
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            match self.claim(&id).await {
                Ok(Some(run)) if worker.queue.takes(&run.agent) => spawn_holding(slot, drive(run)),
                // Not an agent of this worker's: back to the queue, for one that has it.
                Ok(Some(run)) => {
                    let _ = self.store.release(&run.id, &self.owner).await;
                }
                _ => {}
            }
        }
        let mut failing = false;
        while !*stop.borrow() {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => break },
                _ = stop.changed() => break,
            };
            match self.claim_next(&worker.queue).await {
                Ok(Some(run)) => {
                    failing = false;
                    spawn_holding(slot, drive(run));
                    continue;
                }
                Ok(None) => failing = false,
                Err(error) => {
                    // Said once per outage, not once per poll.
                    if !failing {
                        eprintln!("reagent: cannot take runs from the queue (retrying): {error}");
                    }
                    failing = true;
                }
            }
            drop(slot);
            tokio::select! {
                _ = tokio::time::sleep(worker.poll) => {}
                _ = worker.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        self.shut_down();
        let _ = slots.acquire_many(u32::try_from(worker.concurrency.max(1)).unwrap_or(u32::MAX)).await;
    }
}

/// Drives a run in the background, holding its slot until the drive is over.
fn spawn_holding(slot: OwnedSemaphorePermit, driven: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        driven.await;
        drop(slot);
    });
}
