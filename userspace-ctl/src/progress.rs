//! Progress lines on stderr for copies that take a while.
//!
//! Nothing is printed for work done within a second; after that, one line at most every
//! half second, and one when the work is done, so scripts that capture stderr get a few
//! lines rather than a flood.

use std::io::Write as _;
use std::time::{Duration, Instant};

const QUIET_FOR: Duration = Duration::from_secs(1);
const EVERY: Duration = Duration::from_millis(500);

/// A copy of `total` bytes described by `what` ("reading segment 5193").
pub struct Progress {
    what: String,
    total: u64,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(what: String, total: u64) -> Self {
        Progress { what, total, start: Instant::now(), last: None }
    }

    /// `done` bytes of the total are copied.
    pub fn update(&mut self, done: u64) {
        let now = Instant::now();
        if now.duration_since(self.start) < QUIET_FOR {
            return;
        }
        let finished = done >= self.total;
        if !finished && self.last.is_some_and(|last| now.duration_since(last) < EVERY) {
            return;
        }
        self.last = Some(now);
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        // stderr may be closed: progress is never worth failing for.
        let _ = writeln!(
            std::io::stderr().lock(),
            "appshotctl: {}: {:.1} of {:.1} MiB ({:.0}%)",
            self.what,
            mib(done),
            mib(self.total),
            if self.total == 0 { 100.0 } else { done as f64 * 100.0 / self.total as f64 }
        );
    }
}
