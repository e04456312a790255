//! Entries leave the PID table when their task is reaped, not before and not later; the
//! AID itself stays registered with empty tables.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::check::{eventually, millis_since, step_timeout};
use crate::device::{AidGuard, Device};
use crate::fixtures::{entries_of, expect_pid_table, pid_entries, release, sleeper, GO, READY};
use crate::proc::{self, Agent, Child};
use crate::{diag, ensure_eq};

pub const TESTS: &[Test] = &[
    Test::new(
        "cleanup/table_empty_after_exit_aid_stays",
        table_empty_after_exit_aid_stays,
    ),
    Test::new(
        "cleanup/thousand_short_lived_processes",
        thousand_short_lived_processes,
    )
    .slow(900),
    Test::new("cleanup/exited_threads_removed", exited_threads_removed),
    Test::new(
        "cleanup/zombie_stays_until_reaped",
        zombie_stays_until_reaped,
    ),
    Test::new(
        "cleanup/exited_leader_stays_while_threads_run",
        exited_leader_stays_while_threads_run,
    ),
    Test::new(
        "cleanup/orphan_stays_linked_until_reaped",
        orphan_stays_linked_until_reaped,
    ),
];

fn table_empty_after_exit_aid_stays() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "exit")?;
    let nr_aids = dev.nr_aids()?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        crate::fixtures::park_threads(2)?;
        let child = proc::fork(|| proc::sleep_forever())?;
        chan.send(child.pid() as i64)?;
        std::mem::forget(child);
        proc::sleep_forever()
    })?;
    let child = agent.recv_step()? as i32;
    let parent = agent.pid();
    proc::wait_for_threads(parent, 3)?;
    let mut expected = entries_of(parent)?;
    expected.push((child, child));
    expect_pid_table(
        &dev,
        g.aid,
        &expected,
        "linked process with 3 threads and a child",
    )?;
    // Kill the parent; its child dies with it (PDEATHSIG) and is ours to reap (subreaper).
    agent.kill()?;
    Child::adopt(child).kill()?;
    expect_pid_table(&dev, g.aid, &[], "after every process was reaped")?;
    let info = dev
        .info_by_name(g.name.as_bytes())
        .context("INFO of the emptied AID")?;
    ensure_eq!(info.aid, g.aid, "the AID is still registered");
    ensure_eq!(
        info.table_sizes,
        [0; uapi::TABLE_COUNT],
        "table sizes of the emptied AID"
    );
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs");
    // And it still works.
    let again = sleeper(&dev, Some(g.aid), 1)?;
    expect_pid_table(
        &dev,
        g.aid,
        &[(again.pid(), again.pid())],
        "a new process linked to the emptied AID",
    )?;
    release(again)
}

fn thousand_short_lived_processes() -> Result<()> {
    const COUNT: i64 = 1000;
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "1000")?;
    let start = Instant::now();
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let mut bad = 0i64;
        for _ in 0..COUNT {
            // SAFETY: the child only calls _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(0) };
            }
            if pid < 0 {
                bail!("fork: {}", crate::check::Errno::last());
            }
            let mut status = 0;
            // SAFETY: waits for the child just created, which can only exit.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                bad += 1;
            }
        }
        chan.send(bad)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let bad = agent.recv(Duration::from_secs(3600))?;
    diag!(
        "{COUNT} fork+exit+wait in a linked process took {} ms",
        millis_since(start)
    );
    if bad != 0 {
        bail!("{bad} of {COUNT} children did not exit with status 0 (killed by the module?)");
    }
    let parent = agent.pid();
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent)],
        "after 1,000 reaped children",
    )?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after the parent was reaped")
}

fn exited_threads_removed() -> Result<()> {
    const THREADS: usize = 8;
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "thr-exit")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let mut stops = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..THREADS {
            let (tid_tx, tid_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            handles.push(std::thread::spawn(move || {
                let _ = tid_tx.send(proc::gettid());
                let _ = stop_rx.recv();
            }));
            stops.push(stop_tx);
            // In spawn order: the test knows which TID is the i-th thread.
            chan.send(tid_rx.recv_timeout(step_timeout()).context("thread TID")? as i64)?;
        }
        chan.recv(step_timeout())?;
        // The even-numbered threads exit and are joined; the others keep running.
        let mut running = Vec::new();
        for (i, (stop, handle)) in stops.into_iter().zip(handles).enumerate() {
            if i % 2 == 0 {
                drop(stop);
                let _ = handle.join();
            } else {
                running.push((stop, handle));
            }
        }
        chan.send(READY)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let pid = agent.pid();
    let mut tids = Vec::new();
    for _ in 0..THREADS {
        tids.push(agent.recv_step()? as i32);
    }
    let mut expected: Vec<(i32, i32)> = tids.iter().map(|&t| (t, pid)).collect();
    expected.push((pid, pid));
    expect_pid_table(&dev, g.aid, &expected, "with 8 threads")?;
    agent.send(GO)?;
    agent.expect(READY, "half of the threads joined")?;
    let mut remaining: Vec<(i32, i32)> =
        tids.iter().skip(1).step_by(2).map(|&t| (t, pid)).collect();
    remaining.push((pid, pid));
    remaining.sort_unstable();
    // A joined thread is released a moment after pthread_join returns (the kernel clears
    // the TID before the task is reaped), so poll briefly.
    let mut last = Vec::new();
    eventually(
        crate::check::secs(10),
        "joined threads leave the table",
        || {
            last = pid_entries(&dev, g.aid)?;
            Ok(last == remaining)
        },
    )
    .with_context(|| format!("table {last:?}, expected {remaining:?}"))?;
    expect_pid_table(&dev, g.aid, &remaining, "after half of the threads exited")?;
    ensure_eq!(entries_of(pid)?, remaining, "threads in /proc");
    agent.send(GO)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after the process was reaped")
}

fn zombie_stays_until_reaped() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "zombie")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let mut zombie = proc::fork(|| 0)?;
        chan.send(zombie.pid() as i64)?;
        chan.recv(step_timeout())?;
        zombie.expect_exit(0, step_timeout())?;
        chan.send(READY)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let parent = agent.pid();
    let zombie = agent.recv_step()? as i32;
    proc::wait_for_zombie(zombie)?;
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (zombie, zombie)],
        "with an unreaped zombie child",
    )?;
    agent.send(GO)?;
    agent.expect(READY, "zombie reaped")?;
    // waitpid returns after release_task: the entry must be gone now, no polling.
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent)],
        "right after the zombie was reaped",
    )?;
    release(agent)
}

fn exited_leader_stays_while_threads_run() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "leader")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = chan.send(proc::gettid() as i64);
                let _ = chan.recv(step_timeout());
                // SAFETY: ends the whole process (the leader is already gone).
                unsafe { libc::_exit(0) };
            });
            // Only the main thread exits; the process lives on in its other thread.
            // SAFETY: SYS_exit ends this thread alone; nothing of it is used afterwards.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
        });
        Ok(())
    })?;
    let pid = agent.pid();
    let tid = agent.recv_step()? as i32;
    proc::wait_for_zombie(pid).context("the main thread exited")?;
    expect_pid_table(
        &dev,
        g.aid,
        &[(pid, pid), (tid, pid)],
        "exited leader, running thread",
    )?;
    agent.send(GO)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after the process was reaped")
}

fn orphan_stays_linked_until_reaped() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "orphan")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        // Not a proc::fork child: it must survive its parent.
        // SAFETY: the child only pauses.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            proc::sleep_forever();
        }
        chan.send(pid as i64)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let parent = agent.pid();
    let orphan = agent.recv_step()? as i32;
    if orphan <= 0 {
        bail!("fork failed in the linked process");
    }
    let mut orphan = Child::adopt(orphan);
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (orphan.pid(), orphan.pid())],
        "parent and child",
    )?;
    release(agent)?;
    ensure_eq!(
        proc::ppid_of(orphan.pid()),
        Some(proc::getpid()),
        "the orphan's new parent (this subreaper)"
    );
    expect_pid_table(
        &dev,
        g.aid,
        &[(orphan.pid(), orphan.pid())],
        "the orphan after its parent was reaped",
    )?;
    orphan.kill()?;
    expect_pid_table(&dev, g.aid, &[], "after the orphan was reaped")
}
