//! PID virtualization (issue #4): what a process of an AID sees of itself and its family.
//! With a range every ID is a virtual one from the range, never a system ID, and the
//! values agree with each other (fork's return = the child's getpid = what wait4 and
//! SIGCHLD name) and with the module's table; without a range a task keeps its system ID
//! as its virtual one. Processes outside every AID see system IDs, unchanged; nothing
//! outside its AID is reachable from inside by number; nested PID namespaces are refused.
//! Every test runs with a range and without one ([`for_each_flavor`]), but
//! `range_allocation_cyclic`, which needs a small range of its own.

use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, ensure, Context, Result};

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::{step_timeout, Errno};
use crate::ensure_eq;
use crate::fixtures::GO;
use crate::proc;
use crate::virt::{self, expect_in_range, expect_own_id, raw, show};

pub const TESTS: &[Test] = &[
    Test::new("pids/self_ids_virtual", self_ids_virtual),
    Test::new("pids/range_fork_family_consistent", range_fork_family_consistent),
    Test::new("pids/range_allocation_cyclic", range_allocation_cyclic),
    Test::new(
        "pids/range_exec_from_thread_keeps_virtual_pid",
        range_exec_from_thread_keeps_virtual_pid,
    ),
    Test::new("pids/range_group_outlives_leader", range_group_outlives_leader).costs(12),
    Test::new(
        "pids/range_ended_group_reaches_nothing",
        range_ended_group_reaches_nothing,
    ),
    Test::new("pids/clone_settid_virtual", clone_settid_virtual),
    Test::new(
        "pids/parent_group_session_outside_are_zero",
        parent_group_session_outside_are_zero,
    ),
    Test::new("pids/setpgid_setsid_virtual", setpgid_setsid_virtual),
    Test::new("pids/getppid_follows_the_parent", getppid_follows_the_parent),
    Test::new(
        "pids/reaped_pid_never_reaches_its_next_owner",
        reaped_pid_never_reaches_its_next_owner,
    ),
    Test::new(
        "pids/outside_processes_unreachable",
        outside_processes_unreachable,
    ),
    Test::new(
        "pids/outside_sees_system_pids_while_aid_active",
        outside_sees_system_pids_while_aid_active,
    ),
    Test::new(
        "pids/nested_pid_namespace_einval",
        nested_pid_namespace_einval,
    ),
    Test::new("pids/clone3_set_tid_names_a_virtual_pid", clone3_set_tid_names_a_virtual_pid),
    Test::new("pids/reserved_pids_wait_for_set_tid", reserved_pids_wait_for_set_tid),
    Test::new("pids/racing_set_tids_one_wins_one_eexist", racing_set_tids_one_wins_one_eexist).costs(15),
];

/// `getpid()` through the raw system call (what libc does too, since glibc 2.25).
fn sys_getpid() -> i32 {
    // SAFETY: getpid takes no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// The body's own IDs, and a thread's, sent in this order: getpid (libc), getpid (raw),
/// gettid, system PID, the thread's gettid, the thread's getpid, the thread's system TID;
/// then it waits for [`GO`] so the test can read the table while all are alive.
fn report_self(chan: &proc::Channel) -> Result<()> {
    chan.send(proc::getpid() as i64)?;
    chan.send(sys_getpid() as i64)?;
    chan.send(proc::gettid() as i64)?;
    chan.send(virt::system_pid()? as i64)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _ = tx.send((
            proc::gettid(),
            proc::getpid(),
            virt::system_tid().unwrap_or(-1),
        ));
        let _ = go_rx.recv();
    });
    let (tid, pid, system_tid) = rx.recv_timeout(step_timeout()).context("thread")?;
    chan.send(tid as i64)?;
    chan.send(pid as i64)?;
    chan.send(system_tid as i64)?;
    chan.recv(step_timeout())?;
    drop(go_tx);
    let _ = thread.join();
    Ok(())
}

/// Runs [`report_self`] in the AID and checks its values against the table.
fn check_self_ids(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let mut agent = fx.spawn(report_self)?;
    let mut v = Vec::new();
    for _ in 0..7 {
        v.push(agent.recv_step()? as i32);
    }
    let [pid, pid_raw, tid, system, thread_tid, thread_pid, thread_system] = v[..] else {
        unreachable!()
    };
    let map = fx.pid_map()?;
    ensure_eq!(pid_raw, pid, "getpid by syscall vs libc");
    ensure_eq!(tid, pid, "gettid of the main thread vs getpid");
    ensure_eq!(thread_pid, pid, "getpid in a thread");
    map.expect_virtual(pid, system, range, "getpid")?;
    map.expect_virtual(thread_tid, thread_system, range, "gettid in a thread")?;
    if thread_tid == pid {
        bail!("the thread's TID is the process's PID {pid}");
    }
    // The helper was linked while running: it has a virtual ID too.
    let helper = map
        .virtual_of(agent.pid())
        .with_context(|| format!("no entry for the linked helper {}: {:?}", agent.pid(), map.pairs()))?;
    map.expect_virtual(
        helper,
        agent.pid(),
        range,
        "the linked helper's entry",
    )?;
    if range.is_none() {
        ensure_eq!(pid, system, "getpid without a range (its system PID was free)");
        ensure_eq!(thread_tid, thread_system, "gettid without a range");
    }
    agent.send(GO)?;
    agent.finish(step_timeout())
}

fn self_ids_virtual() -> Result<()> {
    for_each_flavor("self", check_self_ids)
}

/// A thread that is not the leader execs: it takes over the process's PID (`de_thread`),
/// so the new program's getpid and gettid must both be the process's virtual PID from
/// before the exec (the task that runs it had another TID until then).
fn range_exec_from_thread_keeps_virtual_pid() -> Result<()> {
    for_each_flavor("execthr", exec_from_thread_keeps_virtual_pid)
}

fn exec_from_thread_keeps_virtual_pid(fx: &AidFixture) -> Result<()> {
    let (out_rx, out_tx) = proc::pipe()?;
    let mut agent = fx.spawn(|chan| {
        let stdout_fd = out_tx.as_raw_fd();
        chan.send(proc::getpid() as i64)?;
        chan.send(virt::system_pid()? as i64)?;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _ = tid_tx.send(proc::gettid());
            // The exec ends every other thread: not before the TID is reported.
            if go_rx.recv().is_err() {
                return 1;
            }
            // SAFETY: dup2 onto stdout (clearing close-on-exec), then exec.
            unsafe { libc::dup2(stdout_fd, 1) };
            proc::exec(&["/usr/libexec/appshot/pidprobe-static", "world"])
        });
        let tid = tid_rx.recv_timeout(step_timeout()).context("thread TID")?;
        chan.send(tid as i64)?;
        go_tx.send(()).context("start the exec")?;
        let status = thread.join();
        bail!("the thread's exec did not happen ({status:?})")
    })?;
    drop(out_tx);
    let pid = agent.recv_step()? as i32;
    let system = agent.recv_step()? as i32;
    let thread_tid = agent.recv_step()? as i32;
    expect_own_id(i64::from(pid), i64::from(system), fx.range(), "getpid before the exec")?;
    expect_in_range(i64::from(thread_tid), fx.range(), "the thread's gettid")?;
    if thread_tid == pid {
        bail!("the thread reported the process's PID {pid} as its TID");
    }
    let mut seen = std::collections::HashMap::new();
    while !seen.contains_key("system_pid") {
        let line = proc::read_line_timeout(out_rx.as_raw_fd(), step_timeout())?;
        if let Some((key, value)) = line.split_once('=') {
            seen.insert(key.to_string(), value.to_string());
        }
    }
    for key in ["pid_libc", "pid_sys", "tid"] {
        let value: i32 = seen[key].parse().with_context(|| format!("{key}={}", seen[key]))?;
        ensure_eq!(value, pid, "{key} of the program the thread exec'd");
    }
    ensure_eq!(
        seen["system_pid"].parse::<i32>()?,
        system,
        "system PID (/proc/self/stat) after the exec"
    );
    // The rest of the output stays in the pipe (small) until the probe has exited.
    agent.finish(step_timeout())
}

/// Forks and reaps `n` children that exit at once: more than the AID remembers of reaped
/// processes, so that a translation that still works afterwards comes from the table.
fn churn(n: usize) -> Result<()> {
    for _ in 0..n {
        // SAFETY: the child only `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        if child < 0 {
            return Err(Errno::last()).context("fork");
        }
        let mut status = 0;
        // SAFETY: `child` is our child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(child, &mut status, 0) } != child {
            return Err(Errno::last()).context("waitpid");
        }
    }
    Ok(())
}

/// Forks a leader that starts a session (so also a process group), forks a member that
/// runs `member` in both, and exits; reaps the leader and returns its PID. The caller
/// becomes a subreaper, so the member is its child from then on.
fn session_with_reaped_leader(member: impl FnOnce()) -> Result<i32> {
    proc::become_subreaper();
    // SAFETY: the children only make async-signal-safe calls and `_exit`.
    let leader = unsafe { libc::fork() };
    if leader == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            let pid = libc::fork();
            if pid == 0 {
                member();
                loop {
                    libc::pause();
                }
            }
            libc::_exit(if pid > 0 { 0 } else { 1 });
        }
    }
    if leader < 0 {
        return Err(Errno::last()).context("fork");
    }
    let mut status = 0;
    // SAFETY: `leader` is our child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(leader, &mut status, 0) };
    if reaped != leader || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the leader: waitpid {reaped}, status {status:#x}");
    }
    Ok(leader)
}

/// A session and process group leader L forks a member M and is reaped; then (after many
/// other processes came and went) M still sees L's virtual PID as its group and session,
/// `kill(-L)` reaches M, and the group's table entry stays until M is reaped: the kernel
/// keeps the number while the group lives, and so must the AID.
fn range_group_outlives_leader() -> Result<()> {
    for_each_flavor("orphgrp", group_outlives_leader)
}

fn group_outlives_leader(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let mut agent = fx.spawn(|chan| {
        let (m_rx, m_tx) = proc::pipe()?;
        let (go_rx, go_tx) = proc::pipe()?;
        let (m_fd, go_rx_fd, go_tx_fd) = (m_tx.as_raw_fd(), go_rx.as_raw_fd(), go_tx.as_raw_fd());
        let leader = session_with_reaped_leader(|| {
            // SAFETY: async-signal-safe calls on descriptors this process owns.
            unsafe {
                libc::close(go_tx_fd);
                let mut byte = [0u8];
                libc::read(go_rx_fd, byte.as_mut_ptr().cast(), 1);
                put(
                    m_fd,
                    &[
                        libc::getpid() as i64,
                        libc::getpgrp() as i64,
                        libc::getsid(0) as i64,
                        libc::getpgid(0) as i64,
                    ],
                );
            }
        })?;
        drop((go_rx, m_tx));
        let mut status = 0;
        churn(200)?;
        chan.send(leader as i64)?;
        chan.recv(step_timeout())?; // the test read the table
        proc::write_raw(go_tx_fd, b"g");
        let member = take(m_rx.as_raw_fd(), 4)?;
        // SAFETY: plain kill(2) of a process group.
        let killed = raw(unsafe { libc::kill(-leader, libc::SIGTERM) } as libc::c_long);
        let member_pid = member[0] as i32;
        // SAFETY: `member_pid` was reparented to us; `status` is a valid out-pointer.
        let reaped = unsafe { libc::waitpid(member_pid, &mut status, 0) };
        let signal = if libc::WIFSIGNALED(status) { libc::WTERMSIG(status) } else { -1 };
        for v in member.iter().copied().chain([killed, reaped as i64, signal as i64]) {
            chan.send(v)?;
        }
        chan.recv(step_timeout())?; // the test read the table again
        Ok(())
    })?;
    let leader = agent.recv_step()? as i32;
    expect_in_range(i64::from(leader), range, "the leader's PID")?;
    let map = fx.pid_map()?;
    let system = map
        .system_of(leader)
        .with_context(|| format!("no entry for the reaped leader {leader}: {:?}", map.pairs()))?;
    ensure_eq!(
        map.owner_of(leader),
        Some(0),
        "owner of the reaped leader's entry (group-only)"
    );
    expect_own_id(i64::from(leader), i64::from(system), range, "the reaped leader's virtual PID")?;
    agent.send(GO)?;
    let mut v = Vec::new();
    for _ in 0..7 {
        v.push(agent.recv_step()? as i32);
    }
    let [member, pgrp, sid, pgid, killed, reaped, signal] = v[..] else {
        unreachable!()
    };
    expect_in_range(i64::from(member), range, "the member's PID")?;
    ensure_eq!(pgrp, leader, "the member's getpgrp after its leader was reaped");
    ensure_eq!(sid, leader, "the member's getsid(0) after its leader was reaped");
    ensure_eq!(pgid, leader, "the member's getpgid(0) after its leader was reaped");
    ensure_eq!(killed, 0, "kill(-leader, SIGTERM)");
    ensure_eq!(reaped, member, "waitpid(member)");
    ensure_eq!(signal, libc::SIGTERM, "the member's end");
    let map = fx.pid_map()?;
    if map.system_of(leader).is_some() {
        bail!("the group's entry {leader} outlived its last member: {:?}", map.pairs());
    }
    agent.send(GO)?;
    agent.finish(step_timeout())
}

/// A PID the AID has translated is cached for later calls (docs/design/hooks.md); the
/// cache must forget it with its task. An AID process signals its child (twice: the
/// second from the cache), the child is reaped, and a process outside the AID takes its
/// system PID: the child's virtual PID is then `ESRCH` for `kill` (signal 0 and
/// SIGTERM), and the outside process is untouched.
fn reaped_pid_never_reaches_its_next_owner() -> Result<()> {
    for_each_flavor("pid-reuse", |fx| {
        let mut agent = fx.spawn(|chan| {
            let mut child = proc::fork(|| proc::sleep_forever())?;
            let virtual_pid = child.pid();
            for round in 0..2 {
                // SAFETY: kill with signal 0 only checks the target.
                let r = unsafe { libc::kill(virtual_pid, 0) };
                ensure!(r == 0, "kill({virtual_pid}, 0) of the live child, call {round}: {}", Errno::last());
            }
            chan.send(i64::from(virtual_pid))?;
            chan.recv(step_timeout())?; // the test has read the child's system PID
            child.kill()?;
            chan.send(GO)?;
            chan.recv(step_timeout())?; // an outside process holds the number now
            for signal in [0, libc::SIGTERM] {
                // SAFETY: as above; the number must name nobody of the AID.
                let r = raw(unsafe { libc::kill(virtual_pid, signal) } as libc::c_long);
                chan.send(r)?;
            }
            Ok(())
        })?;
        let virtual_pid = agent.recv_step()? as i32;
        let system = fx.pid_map()?.system_of(virtual_pid).context("no entry for the AID's child")?;
        agent.send(GO)?;
        agent.expect(GO, "the child reaped")?;
        let mut outsider = fork_with_pid(system, || proc::sleep_forever())?;
        agent.send(GO)?;
        let probe = agent.recv_step()?;
        let term = agent.recv_step()?;
        let alive = outsider.try_wait()?.is_none();
        outsider.kill()?;
        agent.finish(step_timeout())?;
        ensure_eq!(alive, true, "the outside process that took the reaped child's PID {system}");
        ensure_eq!(show(probe), show(-(libc::ESRCH as i64)), "kill({virtual_pid}, 0) after the child was reaped");
        ensure_eq!(show(term), show(-(libc::ESRCH as i64)), "kill({virtual_pid}, SIGTERM) after the child was reaped");
        Ok(())
    })
}

/// Asks the kernel to give PID `pid` to the next process it creates
/// (`/proc/sys/kernel/ns_last_pid`, as checkpoint/restore tools do).
fn next_pid_will_be(pid: i32) -> Result<()> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).context("write ns_last_pid")
}

/// Forks a child running `body` that gets system PID `pid` (a few tries, in case
/// another process takes the number first).
fn fork_with_pid(pid: i32, body: impl Fn() -> i32 + Copy) -> Result<proc::Child> {
    for _ in 0..5 {
        next_pid_will_be(pid)?;
        let mut child = proc::fork(body)?;
        if child.pid() == pid {
            return Ok(child);
        }
        child.kill()?;
    }
    bail!("no outside process got PID {pid}")
}

/// Forks a child that reports its system PID and exits; returns (fork's return, the
/// child's system PID).
fn fork_reporting_system_pid() -> Result<(i32, i32)> {
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    // SAFETY: the child only reads /proc, writes a pipe and `_exit`s.
    let child = unsafe { libc::fork() };
    if child == 0 {
        put(tx_fd, &[virt::system_pid().unwrap_or(-1) as i64]);
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    if child < 0 {
        return Err(Errno::last()).context("fork");
    }
    drop(tx);
    let system = take(rx.as_raw_fd(), 1)?[0] as i32;
    let mut status = 0;
    // SAFETY: `child` is our child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    Ok((child, system))
}

/// The member of a reaped leader's group leaves it by `setsid`, which appshot does not
/// watch for that: the kernel frees the number, but the group's entry stays. The number
/// then goes to a process outside the AID that makes it its own group: the group's old
/// virtual ID must not reach that process. Then the number goes to a new process of the
/// AID: its fork must succeed, taking the number over from the stale entry.
fn range_ended_group_reaches_nothing() -> Result<()> {
    for_each_flavor("endgrp", ended_group_reaches_nothing)
}

fn ended_group_reaches_nothing(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn(|chan| {
        let (m_rx, m_tx) = proc::pipe()?;
        let (go_rx, go_tx) = proc::pipe()?;
        let (m_fd, go_rx_fd, go_tx_fd) = (m_tx.as_raw_fd(), go_rx.as_raw_fd(), go_tx.as_raw_fd());
        let leader = session_with_reaped_leader(|| {
            // SAFETY: async-signal-safe calls on descriptors this process owns.
            unsafe {
                libc::close(go_tx_fd);
                let mut byte = [0u8];
                libc::read(go_rx_fd, byte.as_mut_ptr().cast(), 1);
                let new_session = libc::setsid() as i64;
                put(m_fd, &[libc::getpid() as i64, new_session]);
            }
        })?;
        drop((go_rx, m_tx));
        let mut status = 0;
        // SAFETY: plain kill(2) with signal 0: is the group there?
        let before = raw(unsafe { libc::kill(-leader, 0) } as libc::c_long);
        chan.send(leader as i64)?;
        chan.send(before)?;
        let system = chan.recv(step_timeout())? as i32; // the group's system ID
        proc::write_raw(go_tx_fd, b"g");
        let member = take(m_rx.as_raw_fd(), 2)?;
        // SAFETY: ends the member, reparented to us.
        unsafe { libc::kill(member[0] as i32, libc::SIGKILL) };
        // SAFETY: `status` is a valid out-pointer.
        unsafe { libc::waitpid(member[0] as i32, &mut status, 0) };
        chan.send(member[0])?;
        chan.send(member[1])?;
        chan.recv(step_timeout())?; // an outside process holds the number now
        // SAFETY: as above.
        let after = raw(unsafe { libc::kill(-leader, 0) } as libc::c_long);
        // SAFETY: getpgid has no memory arguments.
        let pgid_after = raw(unsafe { libc::getpgid(leader) } as libc::c_long);
        chan.send(after)?;
        chan.send(pgid_after)?;
        chan.recv(step_timeout())?; // the number is free again
        // A new process of ours gets the number: a few tries, in case another process
        // took it first.
        let mut got = (0, 0);
        for _ in 0..5 {
            next_pid_will_be(system)?;
            got = fork_reporting_system_pid()?;
            if got.1 == system {
                break;
            }
        }
        chan.send(got.0 as i64)?;
        chan.send(got.1 as i64)?;
        Ok(())
    })?;
    let leader = agent.recv_step()? as i32;
    let before = agent.recv_step()?;
    ensure_eq!(before, 0, "kill(-leader, 0) while the member is in the group");
    let system = fx
        .pid_map()?
        .system_of(leader)
        .context("no entry for the reaped leader's group")?;
    agent.send(i64::from(system))?;
    let member = agent.recv_step()?;
    let new_session = agent.recv_step()?;
    ensure_eq!(new_session, member, "the member's setsid()");
    // Give the freed number to a process outside the AID, leading its own group.
    let mut outsider = fork_with_pid(system, || {
        // SAFETY: setsid has no preconditions; the child then waits to be killed.
        unsafe { libc::setsid() };
        proc::sleep_forever()
    })?;
    std::thread::sleep(std::time::Duration::from_millis(100)); // its setsid
    agent.send(GO)?;
    let after = agent.recv_step()?;
    let pgid_after = agent.recv_step()?;
    let alive = outsider.try_wait()?.is_none();
    outsider.kill()?;
    ensure_eq!(alive, true, "the outside process after the AID's kill(-{leader}, 0)");
    ensure_eq!(
        show(after),
        show(-(libc::ESRCH as i64)),
        "kill(-{leader}, 0) when the number is an outside process's group"
    );
    ensure_eq!(
        show(pgid_after),
        show(-(libc::ESRCH as i64)),
        "getpgid({leader}) when the number is an outside process's"
    );
    agent.send(GO)?;
    let fork_ret = agent.recv_step()?;
    let child_system = agent.recv_step()? as i32;
    if fork_ret <= 0 {
        bail!("fork in the AID while a stale group entry holds the number: {}", show(fork_ret));
    }
    ensure_eq!(child_system, system, "the new process's system PID (ns_last_pid)");
    expect_in_range(fork_ret, fx.range(), "the new process's virtual PID")?;
    agent.finish(step_timeout())
}

/// A linked task's `getppid` is answered from its slot's cache after the first call
/// (docs/design/hooks.md): the answer must follow every change of the parent. Asked
/// twice each time (computed, then cached): a parent outside the AID, the same parent
/// once LINKed (a link changed), a linked parent, and the subreaper that adopts the
/// child when that parent exits (the parent changed, no link yet: the exited parent is
/// not reaped), then once it is reaped.
fn getppid_follows_the_parent() -> Result<()> {
    for_each_flavor("ppid-follow", getppid_follows_the_parent_in)
}

/// A child answering its `getppid` on request: forked by the caller, it reads a byte from
/// `ask` (`q` ends it) and writes its `getppid` as an `i64` to `answer`.
///
/// # Safety
/// Called in a process that may fork (the child only makes async-signal-safe calls).
unsafe fn fork_ppid_answerer(ask: i32, answer: i32) -> i32 {
    // SAFETY: the child only reads, writes, asks getppid and `_exit`s.
    unsafe {
        let child = libc::fork();
        if child == 0 {
            loop {
                let mut byte = [0u8];
                if libc::read(ask, byte.as_mut_ptr().cast(), 1) != 1 || byte[0] == b'q' {
                    libc::_exit(0);
                }
                put(answer, &[libc::getppid() as i64]);
            }
        }
        child
    }
}

/// Asks the answerer twice.
fn ask_ppid_twice(ask: i32, answer: i32) -> Result<[i64; 2]> {
    let mut out = [0; 2];
    for slot in out.iter_mut() {
        proc::write_raw(ask, b"a");
        *slot = take(answer, 1)?[0];
    }
    Ok(out)
}

fn getppid_follows_the_parent_in(fx: &AidFixture) -> Result<()> {
    // A parent outside the AID, then LINKed: 0, then its virtual PID.
    let mut agent = proc::Agent::spawn(|chan| {
        let (ask_rx, ask_tx) = proc::pipe()?;
        let (answer_rx, answer_tx) = proc::pipe()?;
        let (ask, answer) = (ask_tx.as_raw_fd(), answer_rx.as_raw_fd());
        // SAFETY: see fork_ppid_answerer.
        let child = unsafe { fork_ppid_answerer(ask_rx.as_raw_fd(), answer_tx.as_raw_fd()) };
        ensure!(child > 0, "fork: {}", Errno::last());
        chan.send(i64::from(child))?;
        chan.recv(step_timeout())?; // the child is linked
        for v in ask_ppid_twice(ask, answer)? {
            chan.send(v)?;
        }
        chan.recv(step_timeout())?; // this process is linked
        for v in ask_ppid_twice(ask, answer)? {
            chan.send(v)?;
        }
        chan.send(i64::from(proc::getpid()))?;
        proc::write_raw(ask, b"q");
        let mut status = 0;
        // SAFETY: reaps our child (any: `child` is its system PID, and this process now
        // names PIDs in the AID's terms).
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        ensure!(reaped > 0, "waitpid of the answerer: {}", Errno::last());
        Ok(())
    })?;
    let child = agent.recv_step()? as i32;
    fx.dev.link(fx.aid(), child).context("LINK the child")?;
    agent.send(GO)?;
    let outside = [agent.recv_step()?, agent.recv_step()?];
    ensure_eq!(outside, [0, 0], "getppid with the parent outside the AID");
    fx.dev.link(fx.aid(), agent.pid()).context("LINK the parent")?;
    agent.send(GO)?;
    let linked = [agent.recv_step()?, agent.recv_step()?];
    let parent = agent.recv_step()?;
    expect_own_id(parent, i64::from(agent.pid()), fx.range(), "the parent's getpid once linked")?;
    ensure_eq!(linked, [parent, parent], "getppid once the parent was LINKed");
    agent.finish(step_timeout())?;

    // A linked parent that exits: its child goes to the subreaper above it.
    let mut agent = fx.spawn_linked(|chan| {
        // SAFETY: prctl with integers.
        ensure!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0, "PR_SET_CHILD_SUBREAPER: {}", Errno::last());
        let (ask_rx, ask_tx) = proc::pipe()?;
        let (answer_rx, answer_tx) = proc::pipe()?;
        let (go_rx, go_tx) = proc::pipe()?;
        let (ask, answer) = (ask_tx.as_raw_fd(), answer_rx.as_raw_fd());
        let (ask_rx_fd, answer_tx_fd, go_rx_fd) = (ask_rx.as_raw_fd(), answer_tx.as_raw_fd(), go_rx.as_raw_fd());
        // SAFETY: the middle process forks the answerer, waits for a byte and `_exit`s:
        // async-signal-safe calls only.
        let middle = unsafe {
            let middle = libc::fork();
            if middle == 0 {
                fork_ppid_answerer(ask_rx_fd, answer_tx_fd);
                let mut byte = [0u8];
                libc::read(go_rx_fd, byte.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
            middle
        };
        ensure!(middle > 0, "fork: {}", Errno::last());
        let before = ask_ppid_twice(ask, answer)?;
        proc::write_raw(go_tx.as_raw_fd(), b"x");
        // The middle process has exited (and its child is ours) but is not reaped yet:
        // no link changed, only the answerer's parent.
        // SAFETY: siginfo_t is plain data; waitid with WNOWAIT leaves the zombie.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::waitid(libc::P_PID, middle as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        ensure!(r == 0, "waitid(WNOWAIT) of the middle process: {}", Errno::last());
        let adopted = ask_ppid_twice(ask, answer)?;
        let mut status = 0;
        // SAFETY: reaps the middle process, our child.
        let reaped = unsafe { libc::waitpid(middle, &mut status, 0) };
        ensure_eq!(reaped, middle, "waitpid of the middle process");
        let after = ask_ppid_twice(ask, answer)?;
        for v in [i64::from(middle), before[0], before[1], i64::from(proc::getpid()), adopted[0], adopted[1], after[0], after[1]] {
            chan.send(v)?;
        }
        proc::write_raw(ask, b"q");
        // SAFETY: reaps the adopted answerer.
        unsafe { libc::waitpid(-1, &mut status, 0) };
        Ok(())
    })?;
    let v: Vec<i64> = (0..8).map(|_| agent.recv_step()).collect::<Result<_>>()?;
    ensure_eq!([v[1], v[2]], [v[0], v[0]], "getppid with the linked parent (its virtual PID as fork returned it)");
    ensure_eq!([v[4], v[5]], [v[3], v[3]], "getppid after the parent exited, before it was reaped: the subreaper's virtual PID");
    ensure_eq!([v[6], v[7]], [v[3], v[3]], "getppid after the parent was reaped");
    agent.finish(step_timeout())
}

/// Writes `values` to a pipe in one write (atomic up to PIPE_BUF).
fn put(fd: i32, values: &[i64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
    proc::write_raw(fd, &bytes);
}

/// Reads `n` values from a pipe.
fn take(fd: i32, n: usize) -> Result<Vec<i64>> {
    let mut buf = vec![0u8; n * 8];
    proc::read_exact_timeout(fd, &mut buf, step_timeout())?;
    Ok(buf
        .chunks(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect())
}


/// Waits for one of `signals` (blocked by the caller) for at most 30 s: (signal, si_pid).
pub fn wait_signal(signals: &[i32]) -> Result<(i32, i32)> {
    let set = proc::sigset(signals);
    let ts = libc::timespec {
        tv_sec: step_timeout().as_secs() as i64,
        tv_nsec: 0,
    };
    // SAFETY: a zeroed siginfo_t is a valid out-buffer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set, info and timeout pointers.
    let sig = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
    if sig < 0 {
        return Err(Errno::last()).context(format!("sigtimedwait for {signals:?}"));
    }
    // SAFETY: the kernel filled a siginfo for a signal that carries a sender.
    Ok((sig, unsafe { info.si_pid() }))
}

/// Blocks `signals` in the calling thread (and so in children forked from it).
pub fn block(signals: &[i32]) {
    let set = proc::sigset(signals);
    // SAFETY: valid set; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

fn range_fork_family_consistent() -> Result<()> {
    for_each_flavor("family", fork_family_consistent)
}

fn fork_family_consistent(fx: &AidFixture) -> Result<()> {
    let mut agent = fx.spawn(|chan| {
        block(&[libc::SIGCHLD, libc::SIGUSR1]);
        // One pipe per reporter, so their reports cannot interleave.
        let (c_rx, c_tx) = proc::pipe()?;
        let (g_rx, g_tx) = proc::pipe()?;
        let (go_rx, go_tx) = proc::pipe()?;
        let (c_fd, g_fd, go_rx_fd, go_tx_fd) = (
            c_tx.as_raw_fd(),
            g_tx.as_raw_fd(),
            go_rx.as_raw_fd(),
            go_tx.as_raw_fd(),
        );
        let me = proc::getpid();
        // SAFETY: the child only makes async-signal-safe calls and `_exit`s.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // The child C: forks G, reports, waits for our SIGUSR1, reaps G, reports.
            // SAFETY: as above; every call is async-signal-safe.
            unsafe {
                let system = virt::system_pid().unwrap_or(-1) as i64;
                let grandchild = libc::fork();
                if grandchild == 0 {
                    libc::close(go_tx_fd);
                    let system = virt::system_pid().unwrap_or(-1) as i64;
                    put(g_fd, &[libc::getpid() as i64, libc::getppid() as i64, system]);
                    let mut byte = [0u8];
                    libc::read(go_rx_fd, byte.as_mut_ptr().cast(), 1);
                    libc::_exit(5);
                }
                libc::close(go_tx_fd);
                put(
                    c_fd,
                    &[libc::getpid() as i64, libc::getppid() as i64, system, grandchild as i64],
                );
                let (sig, si_pid) = wait_signal(&[libc::SIGUSR1]).unwrap_or((-1, -1));
                let mut status = 0;
                let reaped = libc::wait4(grandchild, &mut status, 0, std::ptr::null_mut());
                put(
                    c_fd,
                    &[sig as i64, si_pid as i64, reaped as i64, libc::WEXITSTATUS(status) as i64],
                );
                libc::_exit(3);
            }
        }
        if child < 0 {
            return Err(Errno::last()).context("fork");
        }
        drop((go_rx, c_tx, g_tx));
        let c = take(c_rx.as_raw_fd(), 4)?;
        let gc = take(g_rx.as_raw_fd(), 3)?;
        let mut out = vec![me as i64, virt::system_pid()? as i64, child as i64];
        out.extend(&c);
        out.extend(&gc);
        for v in &out {
            chan.send(*v)?;
        }
        chan.recv(step_timeout())?; // the test read the table
        // SAFETY: `child` is our child's PID as fork returned it.
        let killed = raw(unsafe { libc::kill(child, libc::SIGUSR1) } as libc::c_long);
        drop(go_tx); // G reads EOF and exits
        let second = take(c_rx.as_raw_fd(), 4)?;
        let (sig, sigchld_pid) = wait_signal(&[libc::SIGCHLD])?;
        let mut status = 0;
        // SAFETY: waits for any child of ours; `status` is a valid out-pointer.
        let reaped = unsafe { libc::wait4(-1, &mut status, 0, std::ptr::null_mut()) };
        for v in [killed]
            .into_iter()
            .chain(second)
            .chain([sig as i64, sigchld_pid as i64, reaped as i64, libc::WEXITSTATUS(status) as i64])
        {
            chan.send(v)?;
        }
        Ok(())
    })?;
    let mut v = Vec::new();
    for _ in 0..10 {
        v.push(agent.recv_step()? as i32);
    }
    let [p, p_sys, fork_ret, c, c_ppid, c_sys, c_fork_ret, gc, gc_ppid, gc_sys] = v[..] else {
        unreachable!()
    };
    let map = fx.pid_map()?;
    let range = fx.range();
    map.expect_virtual(p, p_sys, range, "the parent's getpid")?;
    map.expect_virtual(c, c_sys, range, "the child's getpid")?;
    map.expect_virtual(gc, gc_sys, range, "the grandchild's getpid")?;
    ensure_eq!(fork_ret, c, "fork's return in the parent vs the child's getpid");
    ensure_eq!(c_ppid, p, "the child's getppid vs the parent's getpid");
    ensure_eq!(c_fork_ret, gc, "fork's return in the child vs the grandchild's getpid");
    ensure_eq!(gc_ppid, c, "the grandchild's getppid vs the child's getpid");
    agent.send(GO)?;
    let mut w = Vec::new();
    for _ in 0..9 {
        w.push(agent.recv_step()?);
    }
    ensure_eq!(show(w[0]), "0", "kill(child, SIGUSR1) by its virtual PID");
    ensure_eq!(w[1], libc::SIGUSR1 as i64, "signal the child received");
    ensure_eq!(w[2], p as i64, "si_pid of SIGUSR1 in the child (the parent's virtual PID)");
    ensure_eq!(w[3], gc as i64, "wait4(grandchild) in the child");
    ensure_eq!(w[4], 5, "the grandchild's exit status");
    ensure_eq!(w[5], libc::SIGCHLD as i64, "signal the parent received");
    ensure_eq!(w[6], c as i64, "si_pid of SIGCHLD (the child's virtual PID)");
    ensure_eq!(w[7], c as i64, "wait4(-1) in the parent");
    ensure_eq!(w[8], 3, "the child's exit status");
    agent.finish(step_timeout())
}

fn range_allocation_cyclic() -> Result<()> {
    const MIN: u32 = 1_000_100;
    const MAX: u32 = 1_000_104;
    let fx = AidFixture::with_range("cyclic", Some((MIN, MAX)))?;
    let mut agent = fx.spawn(|chan| {
        let me = proc::getpid();
        // SAFETY: getppid has no preconditions.
        let helper = unsafe { libc::getppid() };
        chan.send(helper as i64)?;
        chan.send(me as i64)?;
        for _ in 0..8 {
            let mut child = proc::fork(|| 0)?;
            let pid = child.pid();
            child.expect_exit(0, step_timeout())?;
            chan.send(pid as i64)?;
        }
        Ok(())
    })?;
    let helper = agent.recv_step()?;
    let me = agent.recv_step()?;
    let mut given = Vec::new();
    for _ in 0..8 {
        given.push(agent.recv_step()?);
    }
    agent.finish(step_timeout())?;
    let range = Some((MIN, MAX));
    expect_in_range(helper, range, "the linked helper's virtual PID (getppid)")?;
    expect_in_range(me, range, "the first forked process's virtual PID")?;
    // "Next free value after the last one given", wrapping from MAX to MIN.
    let next_free = |after: i64, used: &[i64]| -> i64 {
        let mut v = after;
        loop {
            v = if v >= MAX as i64 { MIN as i64 } else { v + 1 };
            if !used.contains(&v) {
                return v;
            }
        }
    };
    ensure_eq!(me, next_free(helper, &[helper]), "virtual PID of the first fork after LINK");
    let mut last = me;
    for (i, &pid) in given.iter().enumerate() {
        let want = next_free(last, &[helper, me]);
        ensure_eq!(pid, want, "fork {i}: virtual PID (sequence so far {:?})", &given[..i]);
        last = pid;
    }
    Ok(())
}

/// Where a `clone` child stores its TID, read by the parent.
static CLONED_TID: AtomicI32 = AtomicI32::new(0);
/// Set by the parent to let a thread made with raw `clone` exit.
static CLONED_GO: AtomicI32 = AtomicI32::new(0);

/// A thread made with raw `clone(CLONE_THREAD...)`: raw system calls only.
extern "C" fn clone_thread_body(_: *mut c_void) -> i32 {
    // SAFETY: gettid takes no arguments.
    CLONED_TID.store(unsafe { libc::syscall(libc::SYS_gettid) } as i32, Ordering::SeqCst);
    while CLONED_GO.load(Ordering::SeqCst) == 0 {
        // SAFETY: sched_yield takes no arguments.
        unsafe { libc::syscall(libc::SYS_sched_yield) };
    }
    // SAFETY: ends this thread only (CLONE_CHILD_CLEARTID then clears the parent's word).
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    0
}

fn clone_settid_virtual() -> Result<()> {
    for_each_flavor("settid", clone_settid_virtual_in)
}

fn clone_settid_virtual_in(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let agent = fx.spawn(move |_| {
        // A thread with CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID.
        let ptid = Box::leak(Box::new(AtomicI32::new(0)));
        let ctid = Box::leak(Box::new(AtomicI32::new(0)));
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_SETTID
            | libc::CLONE_CHILD_CLEARTID;
        let stack: &'static mut [u8] = Box::leak(vec![0u8; 256 * 1024].into_boxed_slice());
        let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
        // SAFETY: a fresh leaked stack; the body makes raw system calls only; ptid and
        // ctid are leaked so the kernel may write them at any time.
        let ret = unsafe {
            libc::clone(
                clone_thread_body,
                top as *mut c_void,
                flags,
                std::ptr::null_mut(),
                ptid.as_ptr(),
                std::ptr::null_mut::<c_void>(),
                ctid.as_ptr(),
            )
        };
        if ret < 0 {
            return Err(Errno::last()).context("clone(CLONE_THREAD | ...SETTID)");
        }
        crate::check::eventually(step_timeout(), "the cloned thread runs", || {
            Ok(CLONED_TID.load(Ordering::SeqCst) != 0)
        })?;
        let seen = CLONED_TID.load(Ordering::SeqCst);
        let map = fx.pid_map()?;
        let system = map
            .system_of(ret)
            .with_context(|| format!("no entry for the cloned thread {ret}: {:?}", map.pairs()))?;
        map.expect_virtual(ret, system, range, "clone's return for a thread")?;
        ensure_eq!(seen, ret, "gettid in the cloned thread vs clone's return");
        ensure_eq!(ptid.load(Ordering::SeqCst), ret, "CLONE_PARENT_SETTID value");
        ensure_eq!(ctid.load(Ordering::SeqCst), ret, "CLONE_CHILD_SETTID value");
        let own_threads = proc::threads_of(virt::system_pid()?)?;
        if range.is_some() && own_threads.contains(&ret) {
            bail!("clone's return {ret} is a system TID of this process");
        }
        if range.is_none() && !own_threads.contains(&ret) {
            bail!("clone's return {ret} is not a system TID of this process ({own_threads:?}), without a range");
        }
        CLONED_GO.store(1, Ordering::SeqCst);
        crate::check::eventually(step_timeout(), "CLONE_CHILD_CLEARTID clears the TID", || {
            Ok(ctid.load(Ordering::SeqCst) == 0)
        })?;

        // A process from clone3 with both SETTID flags: the child reports both words.
        let (rx, tx) = proc::pipe()?;
        let mut parent_tid: i32 = 0;
        let mut child_tid: i32 = 0;
        // SAFETY: all-zero is a valid clone_args.
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.flags = (libc::CLONE_PARENT_SETTID | libc::CLONE_CHILD_SETTID) as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        args.parent_tid = &mut parent_tid as *mut i32 as u64;
        args.child_tid = &mut child_tid as *mut i32 as u64;
        let tx_fd = tx.as_raw_fd();
        // SAFETY: clone3 without CLONE_VM copies the address space like fork; the child
        // only makes async-signal-safe calls and `_exit`s.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        if pid == 0 {
            // SAFETY: reading our own copy of child_tid, written by the kernel.
            let written = unsafe { std::ptr::read_volatile(&child_tid) };
            put(tx_fd, &[sys_getpid() as i64, written as i64]);
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return Err(Errno::last()).context("clone3(CLONE_PARENT_SETTID | CLONE_CHILD_SETTID)");
        }
        let report = take(rx.as_raw_fd(), 2)?;
        let mut status = 0;
        // SAFETY: waits for our child.
        let reaped = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        expect_in_range(pid, range, "clone3's return")?;
        ensure_eq!(report[0], pid, "the clone3 child's getpid vs clone3's return");
        ensure_eq!(report[1], pid, "CLONE_CHILD_SETTID value of clone3 (in the child)");
        // SAFETY: the kernel wrote it before clone3 returned.
        let written = unsafe { std::ptr::read_volatile(&parent_tid) };
        ensure_eq!(written as i64, pid, "CLONE_PARENT_SETTID value of clone3");
        ensure_eq!(reaped as i64, pid, "waitpid of the clone3 child");
        Ok(())
    })?;
    agent.finish(step_timeout())
}

fn parent_group_session_outside_are_zero() -> Result<()> {
    for_each_flavor("outer", parent_group_session_outside_are_zero_in)
}

fn parent_group_session_outside_are_zero_in(fx: &AidFixture) -> Result<()> {
    // A process linked while running: its parent (this test), its group (led by this
    // test) and its session (led by the guest's init or shell) are all outside.
    let mut agent = fx.spawn_linked(|chan| {
        // SAFETY: plain ID queries.
        let v = unsafe {
            [
                libc::getppid(),
                libc::syscall(libc::SYS_getppid) as i32,
                libc::getpgrp(),
                libc::getpgid(0),
                libc::getsid(0),
                libc::getpid(),
            ]
        };
        for x in v {
            chan.send(x as i64)?;
        }
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let mut v = Vec::new();
    for _ in 0..6 {
        v.push(agent.recv_step()?);
    }
    ensure_eq!(v[0], 0, "getppid (libc) with the parent outside the AID");
    ensure_eq!(v[1], 0, "getppid (raw) with the parent outside the AID");
    ensure_eq!(v[2], 0, "getpgrp with the group leader outside the AID");
    ensure_eq!(v[3], 0, "getpgid(0) with the group leader outside the AID");
    ensure_eq!(v[4], 0, "getsid(0) with the session leader outside the AID");
    let map = fx.pid_map()?;
    map.expect_virtual(v[5] as i32, agent.pid(), fx.range(), "getpid after LINK")?;
    agent.send(GO)?;
    agent.finish(step_timeout())
}

fn setpgid_setsid_virtual() -> Result<()> {
    for_each_flavor("pgrp", setpgid_setsid_virtual_in)
}

fn setpgid_setsid_virtual_in(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let agent = fx.spawn(move |_| {
        let me = proc::getpid();
        // SAFETY: process group calls on ourselves.
        let r = unsafe { libc::setpgid(0, 0) };
        ensure_eq!(show(raw(r as libc::c_long)), "0", "setpgid(0, 0)");
        // SAFETY: plain queries.
        let (pgrp, pgid) = unsafe { (libc::getpgrp(), libc::getpgid(me)) };
        ensure_eq!(pgrp, me, "getpgrp after setpgid(0, 0)");
        ensure_eq!(pgid, me, "getpgid(getpid()) after setpgid(0, 0)");
        let my_system = virt::system_pid()?;
        ensure_eq!(
            virt::stat_of(my_system, 5)?,
            my_system,
            "process group in /proc (system IDs) after setpgid(0, 0)"
        );
        // A child moved into our group by us, and one that starts its own session.
        let mut member = proc::fork(|| proc::sleep_forever())?;
        // SAFETY: setpgid on our own child.
        let r = unsafe { libc::setpgid(member.pid(), me) };
        ensure_eq!(show(raw(r as libc::c_long)), "0", "setpgid(child, our PID)");
        // SAFETY: plain query.
        ensure_eq!(unsafe { libc::getpgid(member.pid()) }, me, "getpgid(child)");
        let (rx, tx) = proc::pipe()?;
        let tx_fd = tx.as_raw_fd();
        let mut leader = proc::fork(move || {
            // SAFETY: setsid and queries on ourselves.
            unsafe {
                let sid = libc::setsid();
                put(
                    tx_fd,
                    &[sid as i64, libc::getpid() as i64, libc::getsid(0) as i64, libc::getpgrp() as i64],
                );
            }
            proc::sleep_forever()
        })?;
        let v = take(rx.as_raw_fd(), 4)?;
        let d = leader.pid() as i64;
        ensure_eq!(v[0], d, "setsid's return vs fork's return");
        ensure_eq!(v[1], d, "getpid in the new session leader");
        ensure_eq!(v[2], d, "getsid(0) in the new session leader");
        ensure_eq!(v[3], d, "getpgrp in the new session leader");
        // SAFETY: plain queries about our child.
        let (sid, pgid) = unsafe { (libc::getsid(leader.pid()), libc::getpgid(leader.pid())) };
        ensure_eq!(sid as i64, d, "getsid(child) from the parent");
        ensure_eq!(pgid as i64, d, "getpgid(child) from the parent");
        expect_in_range(d, range, "the session leader's PID")?;
        leader.kill()?;
        member.kill()?;
        Ok(())
    })?;
    agent.finish(step_timeout())
}

/// A call on an outside process from inside the AID: its name and result.
type Probe = (&'static str, i64);

/// Makes every PID-taking call on `target` (a live process outside the AID); returns
/// the results.
fn calls_on(target: i32) -> Vec<Probe> {
    // SAFETY: cpu_set_t is plain bits; all zero is the empty set.
    let mut cpu: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut param = libc::sched_param { sched_priority: 0 };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let mut attr = [0u32; 16];
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a zeroed siginfo_t is a valid buffer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut word = 0u64;
    let iov = libc::iovec {
        iov_base: &mut word as *mut u64 as *mut c_void,
        iov_len: 8,
    };
    let me = proc::getpid();
    let cpu_size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: every pointer refers to a live local of the right type and size.
    unsafe {
        vec![
            ("kill", raw(libc::syscall(libc::SYS_kill, target, 0))),
            ("kill -pgid", raw(libc::syscall(libc::SYS_kill, -target, 0))),
            ("tkill", raw(libc::syscall(libc::SYS_tkill, target, 0))),
            ("tgkill", raw(libc::syscall(libc::SYS_tgkill, target, target, 0))),
            ("rt_sigqueueinfo", {
                info.si_signo = 0;
                info.si_code = libc::SI_QUEUE;
                raw(libc::syscall(libc::SYS_rt_sigqueueinfo, target, 0, &info))
            }),
            ("rt_tgsigqueueinfo", raw(libc::syscall(libc::SYS_rt_tgsigqueueinfo, target, target, 0, &info))),
            ("sched_getaffinity", raw(libc::syscall(libc::SYS_sched_getaffinity, target, cpu_size, &mut cpu))),
            ("sched_setaffinity", {
                libc::syscall(libc::SYS_sched_getaffinity, 0, cpu_size, &mut cpu);
                raw(libc::syscall(libc::SYS_sched_setaffinity, target, cpu_size, &cpu))
            }),
            ("sched_getscheduler", raw(libc::syscall(libc::SYS_sched_getscheduler, target))),
            ("sched_setscheduler", raw(libc::syscall(libc::SYS_sched_setscheduler, target, libc::SCHED_OTHER, &param))),
            ("sched_getparam", raw(libc::syscall(libc::SYS_sched_getparam, target, &mut param))),
            ("sched_setparam", raw(libc::syscall(libc::SYS_sched_setparam, target, &param))),
            ("sched_rr_get_interval", raw(libc::syscall(libc::SYS_sched_rr_get_interval, target, &mut ts))),
            ("sched_getattr", raw(libc::syscall(libc::SYS_sched_getattr, target, attr.as_mut_ptr(), 64, 0))),
            ("getpgid", raw(libc::syscall(libc::SYS_getpgid, target))),
            ("getsid", raw(libc::syscall(libc::SYS_getsid, target))),
            ("setpgid", raw(libc::syscall(libc::SYS_setpgid, target, target))),
            ("getpriority process", raw(libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, target))),
            ("getpriority pgrp", raw(libc::syscall(libc::SYS_getpriority, libc::PRIO_PGRP, target))),
            ("setpriority process", raw(libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, target, 0))),
            ("prlimit64", raw(libc::syscall(libc::SYS_prlimit64, target, libc::RLIMIT_NOFILE, 0usize, &mut lim))),
            ("pidfd_open", raw(libc::syscall(libc::SYS_pidfd_open, target, 0))),
            ("ioprio_get", raw(libc::syscall(libc::SYS_ioprio_get, 1, target))),
            ("process_vm_readv", raw(libc::syscall(libc::SYS_process_vm_readv, target, &iov, 1, &iov, 1, 0))),
            ("kcmp", raw(libc::syscall(libc::SYS_kcmp, target, me, 0, 0, 0))),
            ("wait4", raw(libc::syscall(libc::SYS_wait4, target, 0usize, libc::WNOHANG, 0usize))),
            ("waitid P_PID", raw(libc::syscall(libc::SYS_waitid, libc::P_PID, target, &mut info, libc::WEXITED | libc::WNOHANG, 0usize))),
            ("waitid P_PGID", raw(libc::syscall(libc::SYS_waitid, libc::P_PGID, target, &mut info, libc::WEXITED | libc::WNOHANG, 0usize))),
        ]
    }
}

/// What a call on an unreachable PID must answer: ECHILD for the waits, ESRCH for the
/// rest; ENOSYS stays ENOSYS (ioprio and process_vm need options the test kernel lacks).
fn expected_unreachable(name: &str, native_on_self: i64) -> i64 {
    if native_on_self == -(libc::ENOSYS as i64) {
        native_on_self
    } else if name.starts_with("wait") {
        -(libc::ECHILD as i64)
    } else {
        -(libc::ESRCH as i64)
    }
}

/// From inside an AID, every call on this test process (outside, alive, leader of its
/// group) and on PID 1 fails as for a nonexistent process.
fn outside_processes_unreachable() -> Result<()> {
    let outside = proc::getpid();
    // What each call gives natively on an existing process (ENOSYS = not in this kernel).
    let native: Vec<Probe> = calls_on(outside);
    for_each_flavor("outside", |fx| outside_unreachable(fx, outside, native.clone()))
}

fn outside_unreachable(fx: &AidFixture, outside: i32, native: Vec<Probe>) -> Result<()> {
    let agent = fx.spawn(move |_| {
        let mut wrong = Vec::new();
        for target in [outside, 1] {
            for ((name, got), (_, native)) in calls_on(target).into_iter().zip(&native) {
                if target == 1 && name == "kill -pgid" {
                    continue; // kill(-1) is "every process of the AID", tested elsewhere
                }
                let want = expected_unreachable(name, *native);
                if got != want {
                    wrong.push(format!("{name}({target}) = {} (want {})", show(got), show(want)));
                }
            }
        }
        if !wrong.is_empty() {
            bail!("calls on processes outside the AID: {}", wrong.join(", "));
        }
        Ok(())
    })?;
    agent.finish(step_timeout())
}


fn outside_sees_system_pids_while_aid_active() -> Result<()> {
    for_each_flavor("active", outside_sees_system_pids_in)
}

fn outside_sees_system_pids_in(fx: &AidFixture) -> Result<()> {
    let mut inside = fx.spawn(|chan| {
        chan.send(proc::getpid() as i64)?;
        chan.send(virt::system_pid()? as i64)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let inside_virtual = inside.recv_step()? as i32;
    let inside_system = inside.recv_step()? as i32;
    expect_own_id(
        i64::from(inside_virtual),
        i64::from(inside_system),
        fx.range(),
        "the AID's process: getpid vs its system PID",
    )?;
    ensure_eq!(proc::getpid(), virt::system_pid()?, "getpid outside every AID");
    ensure_eq!(sys_getpid(), virt::system_pid()?, "raw getpid outside every AID");
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    ensure_eq!(Some(ppid), proc::ppid_of(proc::getpid()), "getppid outside every AID");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send((proc::gettid(), virt::system_tid().unwrap_or(-1)));
    })
    .join()
    .ok();
    let (tid, system_tid) = rx.recv().context("thread")?;
    ensure_eq!(tid, system_tid, "gettid of a thread outside every AID");
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    let me = proc::getpid();
    let mut child = proc::fork(move || {
        // SAFETY: plain queries.
        let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
        put(tx_fd, &[pid as i64, ppid as i64, virt::system_pid().unwrap_or(-1) as i64]);
        proc::sleep_forever()
    })?;
    let v = take(rx.as_raw_fd(), 3)?;
    ensure_eq!(v[0], child.pid() as i64, "the child's getpid vs fork's return");
    ensure_eq!(v[2], child.pid() as i64, "the child's system PID vs fork's return");
    ensure_eq!(v[1], me as i64, "the child's getppid");
    // SAFETY: signal 0 to our child.
    ensure_eq!(unsafe { libc::kill(child.pid(), 0) }, 0, "kill(child, 0)");
    child.kill()?;
    // The AID's process is reachable from outside by its system PID only.
    // SAFETY: signal 0.
    ensure_eq!(
        show(raw(unsafe { libc::kill(inside.pid(), 0) } as libc::c_long)),
        "0",
        "kill(system PID of the linked helper, 0) from outside"
    );
    // SAFETY: signal 0 (to a number above pid_max with a range).
    let r = raw(unsafe { libc::kill(inside_virtual, 0) } as libc::c_long);
    if fx.range().is_some() {
        ensure_eq!(show(r), "ESRCH", "kill(virtual PID {inside_virtual}, 0) from outside");
    } else {
        ensure_eq!(show(r), "0", "kill(virtual = system PID {inside_virtual}, 0) from outside");
    }
    inside.send(GO)?;
    inside.finish(step_timeout())
}

fn nested_pid_namespace_einval() -> Result<()> {
    // Natively (outside, as root) a new PID namespace is allowed: the refusal is appshot's.
    proc::in_child(step_timeout(), || {
        // SAFETY: unshare on this throwaway child.
        let r = unsafe { libc::unshare(libc::CLONE_NEWPID) };
        ensure_eq!(show(raw(r as libc::c_long)), "0", "unshare(CLONE_NEWPID) outside every AID");
        Ok(())
    })?;
    for_each_flavor("pidns", nested_pid_namespace_einval_in)
}

fn nested_pid_namespace_einval_in(fx: &AidFixture) -> Result<()> {
    let agent = fx.spawn(|_| {
        // SAFETY: unshare and clone variants; a child that is created anyway `_exit`s.
        unsafe {
            let r = raw(libc::unshare(libc::CLONE_NEWPID) as libc::c_long);
            ensure_eq!(show(r), "EINVAL", "unshare(CLONE_NEWPID) in an AID");
            let r = libc::syscall(libc::SYS_clone, libc::CLONE_NEWPID | libc::SIGCHLD, 0, 0, 0, 0);
            if r == 0 {
                libc::_exit(0);
            }
            ensure_eq!(show(raw(r)), "EINVAL", "clone(CLONE_NEWPID) in an AID");
            let mut args: libc::clone_args = std::mem::zeroed();
            args.flags = libc::CLONE_NEWPID as u64;
            args.exit_signal = libc::SIGCHLD as u64;
            let r = libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            );
            if r == 0 {
                libc::_exit(0);
            }
            ensure_eq!(show(raw(r)), "EINVAL", "clone3(CLONE_NEWPID) in an AID");
        }
        // Still a working process of the AID afterwards.
        let mut child = proc::fork(|| 0)?;
        child.expect_exit(0, step_timeout())
    })?;
    agent.finish(step_timeout())
}

/// `clone3` with a one-element `set_tid` array (`size` 2: a second level), as a new
/// process that exits 0 when `getpid()` returns `set_tid[0]`, 1 otherwise: its PID or
/// -errno. The child is reaped.
fn clone3_with_tid(set_tid: i32, size: u64) -> i64 {
    let tids = [set_tid, set_tid];
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    args.set_tid = tids.as_ptr() as u64;
    args.set_tid_size = size;
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack); the child only compares its
    // PID and calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, std::mem::size_of::<libc::clone_args>()) };
    if pid == 0 {
        // SAFETY: getpid and _exit in the child.
        unsafe { libc::_exit(if libc::getpid() == set_tid { 0 } else { 1 }) };
    }
    if pid < 0 {
        return -(Errno::last().0 as i64);
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as i32, &mut status, 0) };
    if status != 0 {
        return -1000 - i64::from(status);
    }
    pid
}

/// Issue #11: `clone3`'s `set_tid` from a process of an AID names a virtual PID (as in
/// a PID namespace): the child gets exactly that virtual PID on any free system PID;
/// `EEXIST` when the AID uses it, `EINVAL` outside the AID's PIDs or for a second
/// level, `EPERM` without CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN, as natively.
fn clone3_set_tid_names_a_virtual_pid() -> Result<()> {
    for_each_flavor("clone3-set-tid", |fx| {
        let range = fx.range();
        let (wanted, outside) = match range {
            Some((_, max)) => (max as i32 - 3, max as i32 + 1),
            None => (3_000_000 + proc::getpid() % 1000, 4_194_304),
        };
        let dev = &fx.dev;
        let aid = fx.aid();
        fx.spawn(move |_| {
            ensure_eq!(clone3_with_tid(wanted, 1), i64::from(wanted), "clone3(set_tid=[{wanted}])");
            let table = dev.pid_table(aid).context("TABLE")?;
            ensure!(!table.iter().any(|e| e.virtual_id == wanted as u32), "the reaped child left its entry: {table:?}");
            ensure_eq!(clone3_with_tid(proc::getpid(), 1), -(libc::EEXIST as i64), "set_tid = own PID");
            ensure_eq!(clone3_with_tid(outside, 1), -(libc::EINVAL as i64), "set_tid = {outside}");
            ensure_eq!(clone3_with_tid(0, 1), -(libc::EINVAL as i64), "set_tid = 0");
            ensure_eq!(clone3_with_tid(wanted, 2), -(libc::EINVAL as i64), "two levels");
            // The same again: the number is free once its holder is reaped.
            ensure_eq!(clone3_with_tid(wanted, 1), i64::from(wanted), "clone3(set_tid=[{wanted}]) again");
            proc::set_effective_caps(&[])?;
            ensure_eq!(clone3_with_tid(wanted, 1), -(libc::EPERM as i64), "set_tid without capabilities");
            Ok(())
        })?
        .finish(step_timeout())
    })
}

/// Issue #11: RESERVE_PID keeps virtual PIDs for a restorer. A reserved PID is in the
/// table (system 0, owner RESERVED) but names no process (`kill` gets ESRCH), no new
/// task gets it, and `clone3`'s `set_tid` from inside the AID takes it over; RELEASE
/// drops it; errors as documented.
fn reserved_pids_wait_for_set_tid() -> Result<()> {
    let fx = AidFixture::new("reserve-pid", crate::aid_fixture::Flavor::Range)?;
    let (min, max) = virt::RANGE;
    let (dev, aid) = (&fx.dev, fx.aid());
    for pid in min..min + 3 {
        dev.reserve_pid(aid, pid, 0).with_context(|| format!("RESERVE_PID {pid}"))?;
    }
    crate::check::expect_errno(dev.reserve_pid(aid, min, 0), libc::EEXIST, "a second reservation")?;
    crate::check::expect_errno(dev.reserve_pid(aid, max + 1, 0), libc::EINVAL, "outside the range")?;
    crate::check::expect_errno(dev.reserve_pid(aid, min + 10, uapi_release()), libc::ENOENT, "RELEASE of a free PID")?;
    let table = dev.pid_table(aid)?;
    ensure_eq!(
        table.iter().filter(|e| e.owner_id == appshot_uapi::PID_OWNER_RESERVED && e.system_id == 0).count(),
        3,
        "reserved entries in {table:?}"
    );
    ensure_eq!(dev.info(aid)?.nr_threads, 0, "threads of an AID with only reservations");
    fx.spawn(move |_| {
        let me = proc::getpid();
        ensure!(!(min as i32..min as i32 + 3).contains(&me), "a new task got reserved PID {me}");
        // SAFETY: kill with signal 0 only checks.
        let r = unsafe { libc::kill(min as i32, 0) };
        ensure_eq!((r, Errno::last().0), (-1, libc::ESRCH), "kill(reserved PID, 0)");
        ensure_eq!(clone3_with_tid(min as i32, 1), i64::from(min), "set_tid = a reserved PID");
        Ok(())
    })?
    .finish(step_timeout())?;
    let table = dev.pid_table(aid)?;
    ensure!(!table.iter().any(|e| e.virtual_id == min), "the reservation taken over by set_tid came back: {table:?}");
    dev.reserve_pid(aid, min + 1, uapi_release()).context("RELEASE")?;
    let table = dev.pid_table(aid)?;
    ensure_eq!(
        table.iter().filter(|e| e.owner_id == appshot_uapi::PID_OWNER_RESERVED).map(|e| e.virtual_id).collect::<Vec<_>>(),
        vec![min + 2],
        "reservations left"
    );
    Ok(())
}

/// `clone3` with `set_tid = [set_tid]` whose child closes its copy of the pipe's write
/// end `release` and waits until the read end `hold` reports end-of-file, then exits 0 if
/// it got `set_tid` as its PID. The child's PID, or `-errno`.
fn clone3_held(set_tid: i32, hold: i32, release: i32) -> i64 {
    let tids = [set_tid];
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    args.set_tid = tids.as_ptr() as u64;
    args.set_tid_size = 1;
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack); the child only reads the
    // pipe, compares its PID and calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, std::mem::size_of::<libc::clone_args>()) };
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: close, read into a local byte, getpid and _exit in the child.
        unsafe {
            libc::close(release);
            while libc::read(hold, (&mut byte as *mut u8).cast(), 1) > 0 {}
            libc::_exit(if libc::getpid() == set_tid { 0 } else { 1 })
        }
    }
    if pid < 0 {
        -(Errno::last().0 as i64)
    } else {
        pid
    }
}

/// Issue #11: two threads of an AID's process ask `clone3` for the same virtual PID at
/// once, round after round, the children alive until both calls returned. One gets the
/// PID, the other `EEXIST`, as in a PID namespace, also when both passed the check at
/// the start of the clone and the second loses at the binding (not `EAGAIN`).
fn racing_set_tids_one_wins_one_eexist() -> Result<()> {
    const ROUNDS: i32 = 100;
    let fx = AidFixture::new("set-tid-race", crate::aid_fixture::Flavor::Range)?;
    // From the top of the range down: the AID's other new tasks (the racing threads) get
    // theirs from the bottom up.
    let (_, max) = virt::RANGE;
    fx.spawn(move |_| {
        for round in 0..ROUNDS {
            let wanted = max as i32 - round;
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two descriptors.
            ensure_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe2");
            let (hold, release) = (fds[0], fds[1]);
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<i64> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            clone3_held(wanted, hold, release)
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap_or(-1)).collect()
            });
            // SAFETY: closing our descriptors lets the children finish.
            unsafe {
                libc::close(fds[1]);
                libc::close(fds[0]);
            }
            for &pid in results.iter().filter(|&&r| r > 0) {
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid as i32, &mut status, 0) };
                ensure_eq!(status, 0, "round {round}: the child did not get virtual PID {wanted}");
            }
            let mut sorted = results.clone();
            sorted.sort_unstable();
            ensure_eq!(sorted, vec![-(libc::EEXIST as i64), i64::from(wanted)], "round {round}: results of two clone3(set_tid=[{wanted}])");
        }
        Ok(())
    })?
    .finish(step_timeout())
}

fn uapi_release() -> u32 {
    appshot_uapi::RESERVE_PID_RELEASE
}
