//! Fault injection for the crash tests: with `REAGENT_CRASH_AT=POINT` (or `POINT@N`), the process
//! kills itself with SIGKILL the N-th time it reaches POINT, exactly as a `kill -9` landing there
//! would. The points: `asking` (a model turn asked, not answered), `reply` (a model turn answered,
//! its reply not yet recorded), `call_started` (a call recorded as started, its tool not yet run),
//! `call_finished` (a tool ran, its result not yet recorded), `checkpoint` (before a turn boundary
//! is committed), `resume` (a stored run claimed, before it goes on), `streaming` (`reagent
//! serve` about to send an event on an SSE stream, counted over all streams), `webhook_send` (a
//! due webhook taken from the outbox, not yet sent), `webhook_delivered` (a webhook sent and
//! answered 2xx, not yet recorded as delivered).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub(crate) fn point(name: &str) {
    static AT: OnceLock<Option<(String, u32)>> = OnceLock::new();
    static REACHED: AtomicU32 = AtomicU32::new(0);
    let at = AT.get_or_init(|| {
        let value = std::env::var("REAGENT_CRASH_AT").ok()?;
        let (point, nth) = value.split_once('@').unwrap_or((&value, "1"));
        Some((point.to_string(), nth.parse().unwrap_or(1)))
    });
    let Some((point, nth)) = at else { return };
    if point == name && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        // SAFETY: sends SIGKILL to this process; nothing after it runs.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
