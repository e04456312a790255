//! The set-up most tests share: an AID, with a virtual PID range or without one (the two
//! flavors), and processes inside it. [`for_each_flavor`] runs a test body once per
//! flavor and reports every flavor that failed.

use anyhow::{bail, Context, Result};

use crate::device::{AidGuard, Device};
use crate::fixtures;
use crate::proc::{Agent, Channel};
use crate::virt::{register, spawn_in_aid, PidMap, RANGE};

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

    /// [`fixtures::expect_pid_table_in`] for this AID (system TIDs and owners).
    pub fn expect_pid_table(&self, expected: &[(i32, i32)], what: &str) -> Result<()> {
        fixtures::expect_pid_table_in(&self.dev, self.aid(), self.range, expected, what)
    }
}

/// Runs `body` once in each flavor, each with a fresh [`AidFixture`] named after `tag`;
/// fails with every flavor's failure (set-up included), each named.
pub fn for_each_flavor(tag: &str, mut body: impl FnMut(&AidFixture) -> Result<()>) -> Result<()> {
    let mut wrong = Vec::new();
    for flavor in Flavor::BOTH {
        let result = AidFixture::new(tag, flavor).and_then(|fx| body(&fx));
        if let Err(e) = result {
            wrong.push(format!("{}: {e:#}", flavor.describe()));
        }
    }
    if !wrong.is_empty() {
        bail!("{}", wrong.join(" || "));
    }
    Ok(())
}
