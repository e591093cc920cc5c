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
    runs: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    sender: watch::Sender<u64>,
    /// This process drives the run: the entry stays until `ended`. Otherwise it lasts while
    /// someone follows.
    driven: bool,
}

impl Hub {
    pub(crate) fn subscribe(&self, id: &str) -> watch::Receiver<u64> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of runs nobody drives here and nobody follows any more go.
        runs.retain(|_, entry| entry.driven || entry.sender.receiver_count() > 0);
        let entry =
            runs.entry(id.to_string()).or_insert_with(|| Entry { sender: watch::Sender::new(0), driven: false });
        entry.sender.subscribe()
    }

    /// What a driven run's committed events go through: metrics, then a wake-up.
    pub(crate) fn listener(&self, id: &str, metrics: Arc<Metrics>) -> Listener {
        let sender = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let entry =
                runs.entry(id.to_string()).or_insert_with(|| Entry { sender: watch::Sender::new(0), driven: true });
            entry.driven = true;
            entry.sender.clone()
        };
        Box::new(move |seq, event| {
            metrics.observe(event);
            sender.send_replace(seq);
        })
    }

    /// The run's driver is done with it: wakes its followers one last time.
    pub(crate) fn ended(&self, id: &str) {
        if let Some(entry) = self.runs.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            entry.sender.send_modify(|_| {});
        }
    }
}
