//! Wake-ups for those who follow a run (an SSE stream, a long poll): the seq of its last
//! committed event, per run this process drives. Followers always read the events themselves
//! from the store; a wake-up only says there may be more. Runs driven by another process send
//! none, so followers also look again on a timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::metrics::Metrics;
use crate::runs::Listener;

#[derive(Clone, Default)]
pub(crate) struct Hub {
    runs: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Hub {
    pub(crate) fn subscribe(&self, id: &str) -> watch::Receiver<u64> {
        self.sender(id).subscribe()
    }

    /// What a driven run's committed events go through: metrics, then a wake-up.
    pub(crate) fn listener(&self, id: &str, metrics: Arc<Metrics>) -> Listener {
        let sender = self.sender(id);
        Box::new(move |seq, event| {
            metrics.observe(event);
            sender.send_replace(seq);
        })
    }

    /// The run's driver is done with it: wakes its followers one last time.
    pub(crate) fn ended(&self, id: &str) {
        if let Some(sender) = self.runs.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            sender.send_modify(|_| {});
        }
    }

    fn sender(&self, id: &str) -> watch::Sender<u64> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(id.to_string()).or_insert_with(|| watch::Sender::new(0)).clone()
    }
}
