//! The set-up most tests share: an AID, with a virtual PID range or without one (the two
//! flavors), and processes inside it. [`for_each_flavor`] runs a test body once per
//! flavor and reports every flavor that failed.

use anyhow::{bail, Context, Result};

use crate::device::{AidGuard, Device};
use crate::fixtures;
use crate::proc::{self, Agent, Channel};
use crate::virt::{self, register, spawn_in_aid, PidMap, RANGE};

/// Whether the AID has a virtual PID range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Virtual PIDs from [`RANGE`], never a system ID.
    Range,
    /// No range: a task's virtual ID is its system ID.
    NoRange,
}

impl Flavor {
    /// Both flavors, in the order [`for_each_flavor`] runs them.
    pub const BOTH: [Flavor; 2] = [Flavor::Range, Flavor::NoRange];

    /// The range REGISTER is given.
    pub fn range(self) -> Option<(u32, u32)> {
        match self {
            Flavor::Range => Some(RANGE),
            Flavor::NoRange => None,
        }
    }

    /// For messages.
    pub fn describe(self) -> &'static str {
        match self {
            Flavor::Range => "in an AID with a PID range",
            Flavor::NoRange => "in an AID without a range",
        }
    }
}

/// An open device and a registered AID, unregistered (FORCE) when dropped.
pub struct AidFixture {
    guard: AidGuard,
    range: Option<(u32, u32)>,
    /// The device the AID was registered through.
    pub dev: Device,
}

impl AidFixture {
    /// Opens the device and registers an AID named after `tag`, of `flavor`.
    pub fn new(tag: &str, flavor: Flavor) -> Result<AidFixture> {
        AidFixture::with_range(tag, flavor.range())
    }

    /// Like [`AidFixture::new`] with a range of the test's own (`None`: no range).
    pub fn with_range(tag: &str, range: Option<(u32, u32)>) -> Result<AidFixture> {
        let dev = Device::open()?;
        let guard = register(&dev, tag, range)?;
        Ok(AidFixture { guard, range, dev })
    }

    /// The AID.
    pub fn aid(&self) -> u64 {
        self.guard.aid
    }

    /// Its registered name.
    pub fn name(&self) -> &str {
        &self.guard.name
    }

    /// [`fixtures::pid_entries_in`] for this AID: `(system tid, owner)` pairs, sorted.
    pub fn pid_entries(&self) -> Result<Vec<(i32, i32)>> {
        fixtures::pid_entries_in(&self.dev, self.aid(), self.range)
    }

    /// Its virtual PID range, if it has one.
    pub fn range(&self) -> Option<(u32, u32)> {
        self.range
    }

    /// Runs `body` in a process created inside the AID ([`spawn_in_aid`]).
    pub fn spawn(&self, body: impl FnOnce(&Channel) -> Result<()>) -> Result<Agent> {
        spawn_in_aid(&self.dev, self.aid(), body)
    }

    /// Runs `body` in a helper that LINKs itself (pid 0) first: a process linked while
    /// running, whose parent is this test (outside the AID).
    pub fn spawn_linked(&self, body: impl FnOnce(&Channel) -> Result<()>) -> Result<Agent> {
        let (dev, aid) = (&self.dev, self.aid());
        Agent::spawn(move |chan| {
            dev.link(aid, 0).context("LINK self")?;
            body(chan)
        })
    }

    /// The AID's PID table.
    pub fn pid_map(&self) -> Result<PidMap> {
        PidMap::read(&self.dev, self.aid())
    }

    /// [`virt::expect_own_id`] with this AID's range: `seen` (an ID a process of the AID
    /// saw) against `system` (the system ID it names).
    pub fn expect_own_id(&self, seen: i64, system: i64, what: &str) -> Result<()> {
        virt::expect_own_id(seen, system, self.range, what)
    }

    /// The system PID of the process `reported` names: the PID its creator (a process of
    /// the AID) saw, a virtual one with a range. Fails unless that process is a child of
    /// `parent` (system PID) in /proc and `reported` agrees with the range (and, with one,
    /// the table maps it to that process).
    pub fn system_of_child(&self, parent: i32, reported: i32) -> Result<i32> {
        let system = match self.range {
            None => reported,
            Some(_) => {
                let map = self.pid_map()?;
                map.system_of(reported).with_context(|| {
                    format!(
                        "no table entry for the reported PID {reported}: {:?}",
                        map.pairs()
                    )
                })?
            }
        };
        self.expect_own_id(i64::from(reported), i64::from(system), "a child's PID")?;
        let ppid = proc::ppid_of(system);
        if ppid != Some(parent) {
            bail!("process {system} (reported as {reported}): parent {ppid:?} in /proc, expected {parent}");
        }
        Ok(system)
    }

    /// [`fixtures::expect_pid_table_in`] for this AID (system TIDs and owners).
    pub fn expect_pid_table(&self, expected: &[(i32, i32)], what: &str) -> Result<()> {
        fixtures::expect_pid_table_in(&self.dev, self.aid(), self.range, expected, what)
    }
}

/// Runs `body` once in each flavor, each with a fresh [`AidFixture`] named after `tag`;
/// fails with every flavor's failure (set-up included), each named.
pub fn for_each_flavor(tag: &str, mut body: impl FnMut(&AidFixture) -> Result<()>) -> Result<()> {
    each_flavor(|flavor| body(&AidFixture::new(tag, flavor)?))
}

/// Runs `body` once per flavor, for tests that register their AIDs themselves (several,
/// or after a measurement); fails with every flavor's failure, each named.
pub fn each_flavor(mut body: impl FnMut(Flavor) -> Result<()>) -> Result<()> {
    let mut wrong = Vec::new();
    for flavor in Flavor::BOTH {
        if let Err(e) = body(flavor) {
            wrong.push(format!("{}: {e:#}", flavor.describe()));
        }
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join(" || "));
    }
    Ok(())
}
