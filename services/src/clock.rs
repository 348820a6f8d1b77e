//! Wall-clock time, supplied by the caller.
//!
//! Timestamps on records and results (created, started, finished) are wall-clock
//! microseconds since the Unix epoch. Services never read the system clock
//! themselves: the binary passes [`system_clock`], the simulation passes a clock
//! derived from its virtual time, so a simulated run stays reproducible.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns the current wall-clock time in microseconds since the Unix epoch.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The machine's real clock.
pub fn system_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as u64)
    })
}
