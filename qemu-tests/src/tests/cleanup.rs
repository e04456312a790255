//! Entries leave the PID table when their task is reaped, not before and not later; the
//! AID itself stays registered with empty tables. Every test runs in an AID with a PID
//! range and in one without.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::{eventually, millis_since, step_timeout};
use crate::fixtures::{entries_of, release, sleeper, GO, READY};
use crate::proc::{self, Child};
use crate::{diag, ensure_eq, virt};

pub const TESTS: &[Test] = &[
    Test::new(
        "cleanup/table_empty_after_exit_aid_stays",
        table_empty_after_exit_aid_stays,
    ),
    Test::new(
        "cleanup/thousand_short_lived_processes",
        thousand_short_lived_processes,
    )
    .slow(900).costs(47),
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
    for_each_flavor("exit", table_empty_after_exit_aid_stays_in)
}

fn table_empty_after_exit_aid_stays_in(fx: &AidFixture) -> Result<()> {
    let dev = &fx.dev;
    let nr_aids = dev.nr_aids()?;
    let mut agent = fx.spawn_linked(|chan| {
        crate::fixtures::park_threads(2)?;
        let child = proc::fork(|| proc::sleep_forever())?;
        chan.send(child.pid() as i64)?;
        std::mem::forget(child);
        proc::sleep_forever()
    })?;
    let child = agent.recv_step()? as i32;
    let parent = agent.pid();
    let child = fx.system_of_child(parent, child)?;
    proc::wait_for_threads(parent, 3)?;
    let mut expected = entries_of(parent)?;
    expected.push((child, child));
    fx.expect_pid_table(&expected, "linked process with 3 threads and a child")?;
    // Kill the parent; its child dies with it (PDEATHSIG) and is ours to reap (subreaper).
    agent.kill()?;
    Child::adopt(child).kill()?;
    fx.expect_pid_table(&[], "after every process was reaped")?;
    let info = dev
        .info_by_name(fx.name().as_bytes())
        .context("INFO of the emptied AID")?;
    ensure_eq!(info.aid, fx.aid(), "the AID is still registered");
    ensure_eq!(
        info.table_sizes,
        [0; uapi::TABLE_COUNT],
        "table sizes of the emptied AID"
    );
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs");
    // And it still works.
    let again = sleeper(dev, Some(fx.aid()), 1)?;
    fx.expect_pid_table(
        &[(again.pid(), again.pid())],
        "a new process linked to the emptied AID",
    )?;
    release(again)
}

const COUNT: i64 = 1000;

fn thousand_short_lived_processes() -> Result<()> {
    for_each_flavor("1000", thousand_short_lived_processes_in)
}

fn thousand_short_lived_processes_in(fx: &AidFixture) -> Result<()> {
    let start = Instant::now();
    let mut agent = fx.spawn_linked(|chan| {
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
    fx.expect_pid_table(&[(parent, parent)], "after 1,000 reaped children")?;
    release(agent)?;
    fx.expect_pid_table(&[], "after the parent was reaped")
}

const THREADS: usize = 8;

fn exited_threads_removed() -> Result<()> {
    for_each_flavor("thr-exit", exited_threads_removed_in)
}

fn exited_threads_removed_in(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn_linked(|chan| {
        let mut stops = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..THREADS {
            let (tid_tx, tid_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            handles.push(std::thread::spawn(move || {
                let _ = tid_tx.send((proc::gettid(), virt::system_tid().unwrap_or(-1)));
                let _ = stop_rx.recv();
            }));
            stops.push(stop_tx);
            // In spawn order: the test knows which TID is the i-th thread.
            let (tid, system) = tid_rx.recv_timeout(step_timeout()).context("thread TID")?;
            chan.send(tid as i64)?;
            chan.send(system as i64)?;
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
    for i in 0..THREADS {
        let seen = agent.recv_step()?;
        let system = agent.recv_step()? as i32;
        fx.expect_own_id(seen, i64::from(system), &format!("gettid in thread {i}"))?;
        tids.push(system);
    }
    let mut expected: Vec<(i32, i32)> = tids.iter().map(|&t| (t, pid)).collect();
    expected.push((pid, pid));
    fx.expect_pid_table(&expected, "with 8 threads")?;
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
            last = fx.pid_entries()?;
            Ok(last == remaining)
        },
    )
    .with_context(|| format!("table {last:?}, expected {remaining:?}"))?;
    fx.expect_pid_table(&remaining, "after half of the threads exited")?;
    // appshot drops a thread's entry when release_task starts; the kernel unlists it
    // from /proc a moment later in the same call: poll briefly here too.
    let mut listed = Vec::new();
    eventually(crate::check::secs(10), "joined threads leave /proc", || {
        listed = entries_of(pid)?;
        Ok(listed == remaining)
    })
    .with_context(|| format!("threads in /proc {listed:?}, expected {remaining:?}"))?;
    agent.send(GO)?;
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after the process was reaped")
}

fn zombie_stays_until_reaped() -> Result<()> {
    for_each_flavor("zombie", zombie_stays_until_reaped_in)
}

fn zombie_stays_until_reaped_in(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn_linked(|chan| {
        let mut zombie = proc::fork(|| 0)?;
        chan.send(zombie.pid() as i64)?;
        chan.recv(step_timeout())?;
        zombie.expect_exit(0, step_timeout())?;
        chan.send(READY)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let parent = agent.pid();
    let zombie = fx.system_of_child(parent, agent.recv_step()? as i32)?;
    proc::wait_for_zombie(zombie)?;
    fx.expect_pid_table(
        &[(parent, parent), (zombie, zombie)],
        "with an unreaped zombie child",
    )?;
    agent.send(GO)?;
    agent.expect(READY, "zombie reaped")?;
    // waitpid returns after release_task: the entry must be gone now, no polling.
    fx.expect_pid_table(&[(parent, parent)], "right after the zombie was reaped")?;
    release(agent)
}

fn exited_leader_stays_while_threads_run() -> Result<()> {
    for_each_flavor("leader", exited_leader_stays_while_threads_run_in)
}

fn exited_leader_stays_while_threads_run_in(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn_linked(|chan| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = chan.send(proc::gettid() as i64);
                let _ = chan.send(virt::system_tid().unwrap_or(-1) as i64);
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
    let seen = agent.recv_step()?;
    let tid = agent.recv_step()? as i32;
    fx.expect_own_id(seen, i64::from(tid), "gettid in the thread")?;
    proc::wait_for_zombie(pid).context("the main thread exited")?;
    fx.expect_pid_table(&[(pid, pid), (tid, pid)], "exited leader, running thread")?;
    agent.send(GO)?;
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after the process was reaped")
}

fn orphan_stays_linked_until_reaped() -> Result<()> {
    for_each_flavor("orphan", orphan_stays_linked_until_reaped_in)
}

fn orphan_stays_linked_until_reaped_in(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn_linked(|chan| {
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
    let mut orphan = Child::adopt(fx.system_of_child(parent, orphan)?);
    fx.expect_pid_table(
        &[(parent, parent), (orphan.pid(), orphan.pid())],
        "parent and child",
    )?;
    release(agent)?;
    ensure_eq!(
        proc::ppid_of(orphan.pid()),
        Some(proc::getpid()),
        "the orphan's new parent (this subreaper)"
    );
    fx.expect_pid_table(
        &[(orphan.pid(), orphan.pid())],
        "the orphan after its parent was reaped",
    )?;
    orphan.kill()?;
    fx.expect_pid_table(&[], "after the orphan was reaped")
}
