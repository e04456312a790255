//! The registry of every test, one file per topic, in the order they run.
//!
//! A test is a plain function returning `anyhow::Result<()>`: it sets up what it needs,
//! checks real values (AIDs, the PID table against the TIDs it created, errno), and
//! cleans up through guards. The harness runs it in its own process (see `runner.rs`).
//! Names are `topic/what_is_checked`; `appshot-guest-tests SUBSTRING...` runs a subset.

use anyhow::Result;

mod bypass;
mod cleanup;
mod cli;
mod concurrency;
mod fuzz;
mod inheritance;
mod interfaces;
mod ipc;
mod lifetimes;
mod limits;
mod load_unload;
mod malformed;
mod pid_calls;
mod pid_stress;
mod pids;
mod signals;
pub mod snapshot;
mod privilege;
mod programs;
mod registration;
mod unregister;

/// One test.
pub struct Test {
    /// `topic/name`, unique; printed in the TAP line.
    pub name: &'static str,
    /// The test.
    pub run: fn() -> Result<()>,
    /// How long it may take before the harness kills it (before `APPSHOT_TIMEOUT_SCALE`).
    pub timeout_s: u64,
}

impl Test {
    /// Deadline of an ordinary test: far above what it needs in the debug guest (TCG +
    /// KASAN), so only a hang reaches it.
    pub const DEFAULT_TIMEOUT_S: u64 = 120;

    /// A test with the default deadline.
    pub const fn new(name: &'static str, run: fn() -> Result<()>) -> Test {
        Test {
            name,
            run,
            timeout_s: Test::DEFAULT_TIMEOUT_S,
        }
    }

    /// The same test with a longer deadline (the load/unload cycles, 1,000 processes).
    pub const fn slow(self, timeout_s: u64) -> Test {
        Test { timeout_s, ..self }
    }
}

/// Every test, in run order. Module load/unload goes last: it reloads appshot.ko.
pub fn all() -> Vec<&'static Test> {
    [
        registration::TESTS,
        inheritance::TESTS,
        cleanup::TESTS,
        unregister::TESTS,
        privilege::TESTS,
        malformed::TESTS,
        limits::TESTS,
        concurrency::TESTS,
        pids::TESTS,
        pid_calls::TESTS,
        bypass::TESTS,
        signals::TESTS,
        interfaces::TESTS,
        programs::TESTS,
        ipc::TESTS,
        snapshot::TESTS,
        pid_stress::TESTS,
        lifetimes::TESTS,
        fuzz::TESTS,
        cli::TESTS,
        load_unload::TESTS,
    ]
    .iter()
    .flat_map(|tests| tests.iter())
    .collect()
}

#[cfg(test)]
mod unit {
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_tap_safe() {
        let all = super::all();
        let mut seen = BTreeSet::new();
        for t in &all {
            assert!(seen.insert(t.name), "duplicate test name {}", t.name);
            assert!(
                t.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '/'),
                "test name {} has characters TAP or filters would trip on",
                t.name
            );
            assert_eq!(
                t.name.matches('/').count(),
                1,
                "{} is not topic/name",
                t.name
            );
            assert!(t.timeout_s > 0);
        }
        assert!(all.len() > 50, "only {} tests registered", all.len());
    }

    #[test]
    fn topics_are_contiguous() {
        let topics: Vec<&str> = super::all()
            .iter()
            .map(|t| t.name.split('/').next().unwrap())
            .collect();
        let mut order: Vec<&str> = topics.clone();
        order.dedup();
        let distinct: BTreeSet<&str> = topics.iter().copied().collect();
        assert_eq!(
            order.len(),
            distinct.len(),
            "a topic's tests are split: {order:?}"
        );
        assert_eq!(order.last(), Some(&"load_unload"));
    }
}
