//! The `max_entries` limit: LINK past it is refused (ENOSPC, nothing linked); a new
//! process or thread past it is killed with SIGKILL before it runs; lowering the limit
//! keeps existing entries.

use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

use super::Test;
use crate::check::{expect_errno, step_timeout};
use crate::device::{AidGuard, Device};
use crate::ensure_eq;
use crate::fixtures::{entries_of, expect_pid_table, park_threads, release, sleeper, READY};
use crate::kmod::MaxEntriesGuard;
use crate::proc::{self, Agent, Child, Status};

pub const TESTS: &[Test] = &[
    Test::new("limits/link_over_limit_enospc", link_over_limit_enospc),
    Test::new(
        "limits/fork_past_limit_refused_eagain",
        fork_past_limit_refused_eagain,
    ),
    Test::new(
        "limits/thread_past_limit_kills_process",
        thread_past_limit_kills_process,
    ),
    Test::new(
        "limits/lowering_keeps_existing_entries",
        lowering_keeps_existing_entries,
    ),
];

/// Raw status word of a `fork()` in a linked process whose child would write to
/// `marker` as its very first act; returns the status and whether the child wrote.
fn fork_with_marker() -> Result<i64> {
    let (rx, tx) = proc::pipe()?;
    // SAFETY: the child only writes one byte and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        proc::write_raw(tx.as_raw_fd(), b"x");
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        let errno = crate::check::Errno::last();
        drop(tx);
        // The refused child was killed before it ran: it never writes the marker.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let ran = !proc::read_available(rx.as_raw_fd()).is_empty();
        return Ok(match (errno.0, ran) {
            (libc::EAGAIN, false) => 1,
            (libc::EAGAIN, true) => 2,
            _ => 3,
        });
    }
    drop(tx);
    let status = Child::adopt(pid).wait(step_timeout())?;
    let ran = !proc::read_available(rx.as_raw_fd()).is_empty();
    Ok(match (status, ran) {
        (Status::Exited(0), true) => 0,
        _ => 3,
    })
}

fn describe(code: i64) -> &'static str {
    match code {
        0 => "ran and exited 0",
        1 => "was refused: fork failed with EAGAIN and no child ran",
        2 => "was refused (EAGAIN) but a child ran",
        _ => "ended some other way",
    }
}

fn link_over_limit_enospc() -> Result<()> {
    let dev = Device::open()?;
    let _limit = MaxEntriesGuard::set(4)?;
    ensure_eq!(
        dev.version()?.entry_limit,
        4,
        "VERSION entry_limit after writing 4"
    );
    let g = AidGuard::new(&dev, "lim-link")?;
    let five = sleeper(&dev, None, 5)?;
    expect_errno(
        dev.link(g.aid, five.pid()),
        libc::ENOSPC,
        "LINK of a 5-thread process with max_entries 4",
    )?;
    expect_pid_table(&dev, g.aid, &[], "after ENOSPC (nothing linked)")?;
    expect_errno(
        dev.unlink(five.pid()),
        libc::ENOENT,
        "UNLINK of the refused process (not linked)",
    )?;
    let four = sleeper(&dev, None, 4)?;
    dev.link(g.aid, four.pid())
        .context("LINK of a 4-thread process (exactly the limit)")?;
    expect_pid_table(&dev, g.aid, &entries_of(four.pid())?, "at the limit")?;
    let one = sleeper(&dev, None, 1)?;
    expect_errno(
        dev.link(g.aid, one.pid()),
        libc::ENOSPC,
        "LINK of one more process at the limit",
    )?;
    // The limit is per AID: another AID still has room.
    let other = AidGuard::new(&dev, "lim-link2")?;
    dev.link(other.aid, one.pid())
        .context("LINK to another AID (its own limit)")?;
    expect_pid_table(&dev, other.aid, &[(one.pid(), one.pid())], "the other AID")?;
    for agent in [five, four, one] {
        release(agent)?;
    }
    Ok(())
}

fn fork_past_limit_refused_eagain() -> Result<()> {
    let dev = Device::open()?;
    let _limit = MaxEntriesGuard::set(4)?;
    let g = AidGuard::new(&dev, "lim-fork")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let mut children = Vec::new();
        for _ in 0..3 {
            let child = proc::fork(|| proc::sleep_forever())?;
            chan.send(child.pid() as i64)?;
            children.push(child);
        }
        chan.recv(step_timeout())?;
        chan.send(fork_with_marker()?)?;
        chan.recv(step_timeout())?;
        // One sleeping child gone: there is room for one again.
        children.pop().map(|mut c| c.kill()).transpose()?;
        chan.send(fork_with_marker()?)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let parent = agent.pid();
    let mut expected = vec![(parent, parent)];
    for _ in 0..3 {
        let c = agent.recv_step()? as i32;
        expected.push((c, c));
    }
    expect_pid_table(&dev, g.aid, &expected, "4 entries, the limit")?;
    agent.send(1)?;
    let code = agent.recv_step()?;
    if code != 1 {
        bail!(
            "fork past the limit: the child {}; expected fork to fail with EAGAIN and no child to run",
            describe(code)
        );
    }
    expect_pid_table(&dev, g.aid, &expected, "after the killed fork")?;
    agent.send(1)?;
    let code = agent.recv_step()?;
    if code != 0 {
        bail!(
            "fork with room again: the child {}; expected a normal run",
            describe(code)
        );
    }
    expected.pop();
    expect_pid_table(
        &dev,
        g.aid,
        &expected,
        "after one child was reaped and a new one came and went",
    )?;
    agent.send(1)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after all were reaped")
}

fn thread_past_limit_kills_process() -> Result<()> {
    let dev = Device::open()?;
    let _limit = MaxEntriesGuard::set(2)?;
    let g = AidGuard::new(&dev, "lim-thr")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        park_threads(1)?;
        chan.send(READY)?;
        chan.recv(step_timeout())?;
        // The third entry: this thread is killed, and with it the whole process.
        park_threads(1)?;
        std::thread::sleep(step_timeout());
        bail!("still alive after creating a thread past the limit")
    })?;
    agent.expect(READY, "linked with 2 threads")?;
    let pid = agent.pid();
    expect_pid_table(&dev, g.aid, &entries_of(pid)?, "2 threads, the limit")?;
    agent.send(1)?;
    let status = agent.wait(step_timeout())?;
    ensure_eq!(
        status,
        Status::Signaled(libc::SIGKILL),
        "the process that created a thread past the limit"
    );
    expect_pid_table(&dev, g.aid, &[], "after it was reaped")
}

fn lowering_keeps_existing_entries() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "lim-lower")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        park_threads(2)?;
        chan.send(READY)?;
        for _ in 0..2 {
            chan.recv(step_timeout())?;
            chan.send(fork_with_marker()?)?;
        }
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    agent.expect(READY, "linked with 3 threads")?;
    let pid = agent.pid();
    proc::wait_for_threads(pid, 3)?;
    let expected = entries_of(pid)?;
    {
        let _limit = MaxEntriesGuard::set(2)?;
        expect_pid_table(
            &dev,
            g.aid,
            &expected,
            "3 entries after lowering max_entries to 2",
        )?;
        agent.send(1)?;
        let code = agent.recv_step()?;
        if code != 1 {
            bail!(
                "fork over the lowered limit: the child {}; expected fork to fail with EAGAIN and no child to run",
                describe(code)
            );
        }
        expect_pid_table(&dev, g.aid, &expected, "after the refused fork")?;
    }
    agent.send(1)?;
    let code = agent.recv_step()?;
    if code != 0 {
        bail!(
            "fork after the limit was restored: the child {}",
            describe(code)
        );
    }
    agent.send(1)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after the process was reaped")
}
