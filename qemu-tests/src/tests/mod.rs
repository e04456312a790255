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
    /// About how long it takes in the debug guest, for balancing `--shard` (measured;
    /// only the long ones say).
    pub cost_s: u64,
}

impl Test {
    /// Deadline of an ordinary test: far above what it needs in the debug guest (TCG +
    /// KASAN), so only a hang reaches it.
    pub const DEFAULT_TIMEOUT_S: u64 = 120;

    /// What an ordinary test costs, in seconds of the debug guest.
    pub const DEFAULT_COST_S: u64 = 2;

    /// A test with the default deadline.
    pub const fn new(name: &'static str, run: fn() -> Result<()>) -> Test {
        Test {
            name,
            run,
            timeout_s: Test::DEFAULT_TIMEOUT_S,
            cost_s: Test::DEFAULT_COST_S,
        }
    }

    /// The same test with a longer deadline (the load/unload cycles, 1,000 processes).
    pub const fn slow(self, timeout_s: u64) -> Test {
        Test { timeout_s, ..self }
    }

    /// The same test, known to take about `cost_s` seconds in the debug guest.
    pub const fn costs(self, cost_s: u64) -> Test {
        Test { cost_s, ..self }
    }
}

/// Shard `index` (1-based) of `count` of `tests`, for running the suite in `count` guests
/// at once (`cargo xtask test`): each test goes, longest first, to the shard with the
/// least work so far; each shard keeps the suite's order (module load/unload last).
pub fn shard<'a>(tests: &[&'a Test], index: usize, count: usize) -> Vec<&'a Test> {
    let mut by_cost: Vec<usize> = (0..tests.len()).collect();
    by_cost.sort_by_key(|&i| std::cmp::Reverse(tests[i].cost_s));
    let mut load = vec![0u64; count.max(1)];
    let mut owner = vec![0usize; tests.len()];
    for i in by_cost {
        let lightest = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[lightest] += tests[i].cost_s;
        owner[i] = lightest;
    }
    tests.iter().zip(owner).filter(|&(_, s)| s + 1 == index).map(|(&t, _)| t).collect()
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
    fn shards_split_the_suite_evenly_and_keep_its_order() {
        let all = super::all();
        let shards: Vec<Vec<&super::Test>> = (1..=2).map(|i| super::shard(&all, i, 2)).collect();
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), all.len());
        let position = |t: &super::Test| all.iter().position(|a| a.name == t.name).unwrap();
        for shard in &shards {
            let positions: Vec<usize> = shard.iter().map(|t| position(t)).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "a shard runs out of order");
        }
        let costs: Vec<u64> = shards.iter().map(|s| s.iter().map(|t| t.cost_s).sum()).collect();
        let longest = all.iter().map(|t| t.cost_s).max().unwrap();
        assert!(costs[0].abs_diff(costs[1]) <= longest, "unbalanced shards: {costs:?}");
        assert_eq!(super::shard(&all, 1, 1).len(), all.len());
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
