//! PID virtualization (issue #4) as the tests see it: AIDs with a virtual PID range,
//! processes started inside an AID, the module's translation table, and the system IDs
//! `/proc` shows (it is not virtualized, so a process inside an AID can read its own
//! system ID there and the test can hold every value against the table).
//!
//! The ranges used here lie above the guest's `pid_max` (32768 by default), so a
//! virtual ID can never equal a system ID by chance: "virtual != system" is a real check.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use crate::check::secs;
use crate::device::{unique_name, AidGuard, Device};
use crate::proc::{self, Agent, Channel};

/// The virtual PID range most tests give their AID.
pub const RANGE: (u32, u32) = (1_000_000, 1_000_999);

/// How long a body run inside an AID may take before its helper gives up.
pub fn body_timeout() -> Duration {
    secs(600)
}

/// Registers an AID named after `tag`, with the virtual PID range `range` if given.
pub fn register(dev: &Device, tag: &str, range: Option<(u32, u32)>) -> Result<AidGuard> {
    let name = unique_name(tag);
    let aid = match range {
        Some((min, max)) => dev.register_range(&name, min, max),
        None => dev.register(&name),
    }
    .with_context(|| format!("register {name} (range {range:?})"))?;
    Ok(AidGuard::adopt(aid, &name))
}

/// Runs `body` in a process created inside `aid`: a helper links itself and forks, and the
/// child, which starts its life in the AID (its virtual ID assigned at fork, glibc's cached
/// TID written by the kernel), runs `body`. Values `body` sends reach the test; its error
/// text too. The helper is the child's parent, in the AID; the helper's parent (the test)
/// is not.
pub fn spawn_in_aid(
    dev: &Device,
    aid: u64,
    body: impl FnOnce(&Channel) -> Result<()>,
) -> Result<Agent> {
    Agent::spawn(|chan| {
        dev.link(aid, 0).context("LINK self")?;
        proc::in_child(body_timeout(), || body(chan)).context("in the AID")
    })
}

/// Field `n` (1-based) of a `/proc/.../stat` file, after the command name.
fn stat_field(path: &str, n: usize) -> Result<i32> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    if n == 1 {
        return stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: {stat:?}"));
    }
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    rest.split_whitespace()
        .nth(n - 3)
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path}: field {n} of {stat:?}"))
}

/// The calling process's system PID, from `/proc/self/stat`.
pub fn system_pid() -> Result<i32> {
    stat_field("/proc/self/stat", 1)
}

/// The calling thread's system TID, from `/proc/thread-self/stat`.
pub fn system_tid() -> Result<i32> {
    stat_field("/proc/thread-self/stat", 1)
}

/// Field `n` of `/proc/PID/stat` (system PID): 5 the process group, 6 the session,
/// 19 the nice value, 41 the scheduling policy.
pub fn stat_of(pid: i32, n: usize) -> Result<i32> {
    stat_field(&format!("/proc/{pid}/stat"), n)
}

/// The PID table of an AID: virtual ID -> (system ID, system owner TGID).
pub struct PidMap {
    entries: Vec<uapi::TableEntry>,
}

impl PidMap {
    /// Reads the table of `aid`.
    pub fn read(dev: &Device, aid: u64) -> Result<PidMap> {
        let entries = dev
            .pid_table(aid)
            .with_context(|| format!("TABLE pid of AID {aid}"))?;
        Ok(PidMap { entries })
    }

    /// The system ID behind virtual ID `v`.
    pub fn system_of(&self, v: i32) -> Option<i32> {
        self.entries
            .iter()
            .find(|e| e.virtual_id as i32 == v)
            .map(|e| e.system_id as i32)
    }

    /// The owner (system TGID, 0 for a group-only entry) of virtual ID `v`.
    pub fn owner_of(&self, v: i32) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.virtual_id as i32 == v)
            .map(|e| e.owner_id)
    }

    /// The virtual ID of system ID `s`.
    pub fn virtual_of(&self, s: i32) -> Option<i32> {
        self.entries
            .iter()
            .find(|e| e.system_id as i32 == s)
            .map(|e| e.virtual_id as i32)
    }

    /// Fails unless `seen` (what a process of the AID saw for `what`) is the virtual ID
    /// of system ID `system`: in the table under that system ID, inside `range` when
    /// there is one (so, for the ranges of this module, not a system ID).
    pub fn expect_virtual(
        &self,
        seen: i32,
        system: i32,
        range: Option<(u32, u32)>,
        what: &str,
    ) -> Result<()> {
        let mapped = self.virtual_of(system);
        if mapped != Some(seen) {
            bail!(
                "{what}: the process saw {seen}; its system ID is {system}, which the table maps to {mapped:?} (table {:?})",
                self.pairs()
            );
        }
        if let Some((min, max)) = range {
            if !(min as i32..=max as i32).contains(&seen) {
                bail!("{what}: {seen} is outside the AID's range {min}-{max}");
            }
            if seen == system {
                bail!("{what}: {seen} is the system ID");
            }
        }
        Ok(())
    }

    /// `(virtual, system)` pairs, for messages.
    pub fn pairs(&self) -> Vec<(u32, u32)> {
        self.entries
            .iter()
            .map(|e| (e.virtual_id, e.system_id))
            .collect()
    }
}

/// Fails unless `v` lies in `range` (when there is one).
pub fn expect_in_range(v: i64, range: Option<(u32, u32)>, what: &str) -> Result<()> {
    if let Some((min, max)) = range {
        if v < min as i64 || v > max as i64 {
            bail!("{what}: {v} is outside the AID's virtual range {min}-{max}");
        }
    }
    Ok(())
}

/// Fails unless `seen` (an ID a process of the AID saw) and `system` (the system ID it
/// reported from `/proc`) are both real IDs (a missing one, reported as 0 or -1, fails)
/// and agree with the AID's `range`: in the range and not the system ID with one, the
/// system ID without one.
pub fn expect_own_id(seen: i64, system: i64, range: Option<(u32, u32)>, what: &str) -> Result<()> {
    if seen <= 0 || system <= 0 {
        bail!("{what}: seen {seen}, system ID {system}: a value is missing");
    }
    match range {
        Some(_) => {
            expect_in_range(seen, range, what)?;
            if seen == system {
                bail!("{what}: {seen} is the system ID");
            }
        }
        None if seen != system => {
            bail!("{what}: {seen}, but the system ID is {system} (an AID without a range)")
        }
        None => {}
    }
    Ok(())
}

/// A raw system call's result: the value, or minus the errno.
pub fn raw(ret: libc::c_long) -> i64 {
    if ret < 0 {
        -(crate::check::Errno::last().0 as i64)
    } else {
        ret as i64
    }
}

/// Text for a value from [`raw`].
pub fn show(v: i64) -> String {
    if v < 0 {
        crate::check::Errno(-v as i32).name()
    } else {
        v.to_string()
    }
}
