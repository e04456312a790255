//! Building blocks several test topics share: helper processes with a given number of
//! threads (linked or not), and the PID-table check that compares the module's table
//! entry by entry with the TIDs a test knows, together with INFO's counters.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use crate::check::{step_timeout, Errno};
use crate::device::Device;
use crate::proc::{self, Agent};

/// What an agent sends when it is set up.
pub const READY: i64 = 1;
/// What a test sends an agent to let it finish.
pub const GO: i64 = 2;

/// The PID table of `aid` as `(tid, owner tgid)` pairs (system IDs), after checking what
/// every entry must satisfy in an AID without a range (see [`pid_entries_in`]).
pub fn pid_entries(dev: &Device, aid: u64) -> Result<Vec<(i32, i32)>> {
    pid_entries_in(dev, aid, None)
}

/// The PID table of `aid` as `(tid, owner tgid)` pairs (system IDs), after checking what
/// every entry must satisfy: without a `range` (system IDs never collide) virtual ID =
/// system ID; with one, the virtual ID in it and not the system ID; `flags` 0, strictly
/// increasing virtual IDs (TABLE is in virtual ID order), an owner.
pub fn pid_entries_in(
    dev: &Device,
    aid: u64,
    range: Option<(u32, u32)>,
) -> Result<Vec<(i32, i32)>> {
    let table = dev
        .pid_table(aid)
        .with_context(|| format!("TABLE pid of AID {aid}"))?;
    let mut last = 0u32;
    for e in &table {
        match range {
            None if e.virtual_id != e.system_id => {
                bail!("AID {aid}: entry {e:?}: virtual ID differs from system ID")
            }
            Some((min, max))
                if !(min..=max).contains(&e.virtual_id) || e.virtual_id == e.system_id =>
            {
                bail!("AID {aid}: entry {e:?}: virtual ID not in the range {min}-{max}, or the system ID")
            }
            _ => {}
        }
        if e.flags != 0 || e.owner_id == 0 {
            bail!("AID {aid}: entry {e:?}: flags must be 0 and owner set");
        }
        if e.virtual_id <= last {
            bail!("AID {aid}: table not in increasing virtual ID order at {e:?}");
        }
        last = e.virtual_id;
    }
    let mut pairs: Vec<(i32, i32)> = table
        .iter()
        .map(|e| (e.system_id as i32, e.owner_id as i32))
        .collect();
    pairs.sort_unstable();
    Ok(pairs)
}

/// Fails unless the PID table of `aid` (an AID without a range) is exactly `expected`
/// (`(tid, owner)` pairs, any order) and INFO agrees: `nr_threads` and
/// `table_sizes[PID]` = entries, `nr_processes` = distinct owners.
pub fn expect_pid_table(dev: &Device, aid: u64, expected: &[(i32, i32)], what: &str) -> Result<()> {
    expect_pid_table_in(dev, aid, None, expected, what)
}

/// [`expect_pid_table`] for an AID with virtual PID range `range` (or none): `expected`
/// holds system TIDs and owners.
pub fn expect_pid_table_in(
    dev: &Device,
    aid: u64,
    range: Option<(u32, u32)>,
    expected: &[(i32, i32)],
    what: &str,
) -> Result<()> {
    let mut want: Vec<(i32, i32)> = expected.to_vec();
    want.sort_unstable();
    if let Some(bad) = want.iter().find(|&&(tid, owner)| tid <= 0 || owner <= 0) {
        bail!("{what}: expected entry {bad:?} is not a TID and owner (a value was missing)");
    }
    let got = pid_entries_in(dev, aid, range)?;
    if got != want {
        bail!("{what}: PID table of AID {aid} is {got:?}, expected {want:?}");
    }
    expect_counts(dev, aid, &want, what)
}

/// Fails unless INFO's counters match the table `entries`.
pub fn expect_counts(dev: &Device, aid: u64, entries: &[(i32, i32)], what: &str) -> Result<()> {
    let info = dev
        .info(aid)
        .with_context(|| format!("{what}: INFO {aid}"))?;
    let processes = entries.iter().map(|e| e.1).collect::<BTreeSet<_>>().len() as u32;
    let threads = entries.len() as u32;
    if info.nr_threads != threads
        || info.nr_processes != processes
        || info.table_sizes[uapi::TABLE_PID as usize] != threads
    {
        bail!(
            "{what}: INFO of AID {aid} says {} processes, {} threads, PID table {}; the table holds {} processes, {} threads",
            info.nr_processes,
            info.nr_threads,
            info.table_sizes[uapi::TABLE_PID as usize],
            processes,
            threads
        );
    }
    Ok(())
}

/// `(tid, pid)` for every thread of process `pid`, as `/proc` lists them.
pub fn entries_of(pid: i32) -> Result<Vec<(i32, i32)>> {
    Ok(proc::threads_of(pid)?
        .into_iter()
        .map(|tid| (tid, pid))
        .collect())
}

/// Spawns `extra` threads that sleep until the process ends.
pub fn park_threads(extra: usize) -> Result<()> {
    for _ in 0..extra {
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| proc::sleep_forever())
            .context("spawn thread")?;
    }
    Ok(())
}

/// An agent with `threads` threads in all that sleeps until told [`GO`]; linked to `aid`
/// (by itself, LINK pid 0) when `aid` is `Some`. Returns once it is ready, all threads
/// started.
pub fn sleeper(dev: &Device, aid: Option<u64>, threads: usize) -> Result<Agent> {
    let mut agent = Agent::spawn(|chan| {
        if let Some(aid) = aid {
            dev.link(aid, 0)
                .with_context(|| format!("LINK self to AID {aid}"))?;
        }
        park_threads(threads.saturating_sub(1))?;
        chan.send(READY)?;
        chan.recv(Duration::from_secs(3600))?;
        Ok(())
    })?;
    agent.expect(READY, "sleeper ready")?;
    proc::wait_for_threads(agent.pid(), threads.max(1))?;
    Ok(agent)
}

/// Lets a [`sleeper`] (or any agent waiting for [`GO`]) finish and checks it did.
pub fn release(agent: Agent) -> Result<()> {
    agent.send(GO)?;
    agent.finish(step_timeout())
}

/// What the next semaphore set a process of `aid` makes is numbered (it is removed
/// again at once): whether a NEXT_ID wish is pending.
pub fn next_sem_id(dev: &Device, aid: u64) -> Result<i64> {
    let mut agent = crate::virt::spawn_in_aid(dev, aid, |chan| {
        // SAFETY: semget and IPC_RMID take integers only.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            bail!("semget(IPC_PRIVATE) in the AID: {}", Errno::last());
        }
        // SAFETY: as above.
        if unsafe { libc::semctl(id, 0, libc::IPC_RMID) } < 0 {
            bail!("IPC_RMID of set {id} in the AID: {}", Errno::last());
        }
        chan.send(i64::from(id))
    })?;
    let id = agent.recv_step().context("the probe's semget")?;
    agent.finish(step_timeout())?;
    Ok(id)
}
