//! UNREGISTER and UNLINK: EBUSY while processes are linked, FORCE unlinks them (they run
//! on, unlinked), and UNLINK detaches one process (all its threads, not its children).

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::check::{expect_errno, step_timeout};
use crate::device::{AidGuard, Device};
use crate::ensure_eq;
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper, READY};
use crate::proc::{self, Agent, Status};

pub const TESTS: &[Test] = &[
    Test::new("unregister/busy_while_linked", busy_while_linked),
    Test::new(
        "unregister/force_unlinks_and_process_runs_on",
        force_unlinks_and_process_runs_on,
    ),
    Test::new("unregister/empty_aid_ok", empty_aid_ok),
    Test::new("unregister/unknown_aid_enoent", unknown_aid_enoent),
    Test::new(
        "unregister/unlink_removes_all_threads",
        unlink_removes_all_threads,
    ),
    Test::new(
        "unregister/unlink_self_takes_children",
        unlink_self_takes_children,
    ),
];

fn busy_while_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "busy")?;
    let agent = sleeper(&dev, Some(g.aid), 2)?;
    let expected = entries_of(agent.pid())?;
    expect_errno(
        dev.unregister(g.aid, 0),
        libc::EBUSY,
        "UNREGISTER with a linked process",
    )?;
    expect_pid_table(&dev, g.aid, &expected, "after EBUSY (nothing changed)")?;
    release(agent)?;
    dev.unregister(g.aid, 0)
        .context("UNREGISTER once the process was reaped")?;
    expect_errno(dev.info(g.aid), libc::ENOENT, "INFO after UNREGISTER")
}

/// Commands of the agent in [`force_unlinks_and_process_runs_on`].
const PING: i64 = 10;
const FORK: i64 = 11;
const QUIT: i64 = 12;

fn force_unlinks_and_process_runs_on() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "force")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        crate::fixtures::park_threads(1)?;
        chan.send(READY)?;
        loop {
            match chan.recv(step_timeout() * 4)? {
                PING => chan.send(PING)?,
                FORK => {
                    let mut child = proc::fork(|| 5)?;
                    let status = child.wait(step_timeout())?;
                    chan.send(if status == Status::Exited(5) { 0 } else { 1 })?;
                }
                QUIT => return Ok(()),
                other => bail!("unknown command {other}"),
            }
        }
    })?;
    agent.expect(READY, "linked")?;
    let pid = agent.pid();
    proc::wait_for_threads(pid, 2)?;
    expect_pid_table(&dev, g.aid, &entries_of(pid)?, "before UNREGISTER --force")?;
    let nr_aids = dev.nr_aids()?;
    dev.unregister(g.aid, uapi::UNREGISTER_FORCE)
        .context("UNREGISTER with FORCE")?;
    ensure_eq!(dev.nr_aids()?, nr_aids - 1, "number of AIDs");
    expect_errno(dev.info(g.aid), libc::ENOENT, "INFO by number after FORCE")?;
    expect_errno(
        dev.info_by_name(g.name.as_bytes()),
        libc::ENOENT,
        "INFO by name after FORCE",
    )?;
    expect_errno(dev.pid_table(g.aid), libc::ENOENT, "TABLE after FORCE")?;
    // The process runs on, unlinked.
    agent.send(PING)?;
    agent.expect(PING, "reply after FORCE")?;
    agent.send(FORK)?;
    ensure_eq!(
        agent.recv_step()?,
        0,
        "a fork after FORCE runs and exits normally"
    );
    expect_errno(
        dev.unlink(pid),
        libc::ENOENT,
        "UNLINK of the formerly linked process",
    )?;
    // It may join another AID (it is linked to none), and the name is free again.
    let again = AidGuard::adopt(
        dev.register(&g.name)
            .context("register the same name again")?,
        &g.name,
    );
    if again.aid <= g.aid {
        bail!("new AID {} not above the unregistered {}", again.aid, g.aid);
    }
    dev.link(again.aid, pid)
        .context("LINK to a new AID after FORCE")?;
    expect_pid_table(&dev, again.aid, &entries_of(pid)?, "linked to the new AID")?;
    agent.send(QUIT)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, again.aid, &[], "after the process was reaped")
}

fn empty_aid_ok() -> Result<()> {
    let dev = Device::open()?;
    let nr_aids = dev.nr_aids()?;
    let g = AidGuard::new(&dev, "empty")?;
    ensure_eq!(dev.nr_aids()?, nr_aids + 1, "number of AIDs after REGISTER");
    dev.unregister(g.aid, 0)
        .context("UNREGISTER of an empty AID")?;
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs after UNREGISTER");
    expect_errno(dev.info(g.aid), libc::ENOENT, "INFO after UNREGISTER")?;
    expect_errno(dev.unregister(g.aid, 0), libc::ENOENT, "second UNREGISTER")?;
    expect_errno(
        dev.unregister(g.aid, uapi::UNREGISTER_FORCE),
        libc::ENOENT,
        "second UNREGISTER with FORCE",
    )
}

fn unknown_aid_enoent() -> Result<()> {
    let dev = Device::open()?;
    let nr_aids = dev.nr_aids()?;
    expect_errno(
        dev.unregister(u64::MAX, 0),
        libc::ENOENT,
        "UNREGISTER of 2^64-1",
    )?;
    expect_errno(dev.unregister(0, 0), libc::ENOENT, "UNREGISTER of AID 0")?;
    expect_errno(
        dev.unregister(u64::MAX, uapi::UNREGISTER_FORCE),
        libc::ENOENT,
        "UNREGISTER --force of 2^64-1",
    )?;
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs");
    Ok(())
}

fn unlink_removes_all_threads() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "unlink")?;
    let linked = sleeper(&dev, None, 3)?;
    let other = sleeper(&dev, None, 1)?;
    dev.link(g.aid, linked.pid()).context("LINK")?;
    expect_pid_table(&dev, g.aid, &entries_of(linked.pid())?, "after LINK")?;
    dev.unlink(linked.pid()).context("UNLINK")?;
    expect_pid_table(&dev, g.aid, &[], "after UNLINK")?;
    expect_errno(dev.unlink(linked.pid()), libc::ENOENT, "second UNLINK")?;
    expect_errno(
        dev.unlink(other.pid()),
        libc::ENOENT,
        "UNLINK of a process never linked",
    )?;
    let mut gone = proc::fork(|| 0)?;
    let gone_pid = gone.pid();
    gone.expect_exit(0, step_timeout())?;
    expect_errno(
        dev.unlink(gone_pid),
        libc::ESRCH,
        "UNLINK of a reaped process",
    )?;
    dev.unregister(g.aid, 0)
        .context("UNREGISTER without FORCE after UNLINK (nothing linked)")?;
    release(linked)?;
    release(other)
}

/// Issue #9 section 2: UNLINK takes the subtree, so that no AID process has a child
/// outside its AID (before, the children stayed linked under an unlinked parent).
fn unlink_self_takes_children() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "unlink-self")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        crate::fixtures::park_threads(1)?;
        let child = proc::fork(|| proc::sleep_forever())?;
        chan.send(child.pid() as i64)?;
        chan.recv(step_timeout())?;
        dev.unlink(0).context("UNLINK self")?;
        let later = proc::fork(|| proc::sleep_forever())?;
        chan.send(later.pid() as i64)?;
        chan.recv(step_timeout())?;
        drop((child, later));
        Ok(())
    })?;
    let pid = agent.pid();
    let child = agent.recv_step()? as i32;
    proc::wait_for_threads(pid, 2)?;
    let mut expected = entries_of(pid)?;
    expected.push((child, child));
    expect_pid_table(
        &dev,
        g.aid,
        &expected,
        "linked parent (2 threads) and child",
    )?;
    agent.send(1)?;
    let later = agent.recv_step()? as i32;
    expect_pid_table(
        &dev,
        g.aid,
        &[],
        "after the parent unlinked itself",
    )?;
    expect_errno(
        dev.unlink(later),
        libc::ENOENT,
        "UNLINK of a child forked after the parent's UNLINK",
    )?;
    agent.send(1)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after all were reaped")
}
