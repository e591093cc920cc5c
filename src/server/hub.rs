//! Wake-ups for those who follow a run (an SSE stream, a long poll): the seq of its last
//! committed event, per run this process drives. Followers always read the events themselves
//! from the store; a wake-up only says there may be more. Runs driven by another process send
//! none, so followers also look again on a timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::runs::Listener;

#[derive(Clone, Default)]
pub(crate) struct Hub {
    runs: Arc<Mutex<HashMap<String, Entry>>>,
}

struct Entry {
    sender: watch::Sender<u64>,
    /// Drives of the run in this process (one, or two while a new one starts as the last ends):
    /// the entry stays until the last has `ended`. Without any it lasts while someone follows.
    drivers: u32,
}

impl Hub {
    pub(crate) fn subscribe(&self, id: &str) -> watch::Receiver<u64> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of runs nobody drives here and nobody follows any more go.
        runs.retain(|_, entry| entry.drivers > 0 || entry.sender.receiver_count() > 0);
        entry(&mut runs, id).sender.subscribe()
    }

    /// What a driven run's committed events go through: a wake-up for its followers.
    pub(crate) fn listener(&self, id: &str) -> Listener {
        let sender = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            let entry = entry(&mut runs, id);
            entry.drivers += 1;
            entry.sender.clone()
        };
        Box::new(move |seq, _| {
            sender.send_replace(seq);
        })
    }

    /// A drive of the run is done with it: wakes its followers (one last time, after the last).
    pub(crate) fn ended(&self, id: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = runs.get_mut(id) else { return };
        entry.sender.send_modify(|_| {});
        entry.drivers = entry.drivers.saturating_sub(1);
        if entry.drivers == 0 {
            runs.remove(id);
        }
    }
}

fn entry<'a>(runs: &'a mut HashMap<String, Entry>, id: &str) -> &'a mut Entry {
    runs.entry(id.to_string()).or_insert_with(|| Entry { sender: watch::Sender::new(0), drivers: 0 })
}
