//! UNREGISTER and UNLINK: EBUSY while processes are linked, FORCE unlinks them (they run
//! on, unlinked), and UNLINK detaches one process (all its threads, not its children).
//! Every test with an AID runs in an AID with a PID range and in one without.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::aid_fixture::{each_flavor, for_each_flavor, AidFixture, Flavor};
use crate::check::{expect_errno, secs, step_timeout, sys, Errno};
use crate::device::{AidGuard, Device};
use crate::fixtures::{entries_of, expect_pid_table_in, release, sleeper, GO, READY};
use crate::proc::{self, Agent, Channel, Status};
use crate::{diag, ensure_eq};

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
    Test::new(
        "unregister/force_group_only_while_listing",
        force_group_only_while_listing,
    )
    .slow(600).costs(57),
];

fn busy_while_linked() -> Result<()> {
    for_each_flavor("busy", |fx| {
        let (dev, aid) = (&fx.dev, fx.aid());
        let agent = sleeper(dev, Some(aid), 2)?;
        let expected = entries_of(agent.pid())?;
        expect_errno(
            dev.unregister(aid, 0),
            libc::EBUSY,
            "UNREGISTER with a linked process",
        )?;
        fx.expect_pid_table(&expected, "after EBUSY (nothing changed)")?;
        release(agent)?;
        dev.unregister(aid, 0)
            .context("UNREGISTER once the process was reaped")?;
        expect_errno(dev.info(aid), libc::ENOENT, "INFO after UNREGISTER")
    })
}

/// Commands of the agent in [`force_unlinks_and_process_runs_on`].
const PING: i64 = 10;
const FORK: i64 = 11;
const QUIT: i64 = 12;

fn force_unlinks_and_process_runs_on() -> Result<()> {
    for_each_flavor("force", force_unlinks_and_process_runs_on_in)
}

fn force_unlinks_and_process_runs_on_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid, name) = (&fx.dev, fx.aid(), fx.name());
    let mut agent = fx.spawn_linked(|chan| {
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
    fx.expect_pid_table(&entries_of(pid)?, "before UNREGISTER --force")?;
    let nr_aids = dev.nr_aids()?;
    dev.unregister(aid, uapi::UNREGISTER_FORCE)
        .context("UNREGISTER with FORCE")?;
    ensure_eq!(dev.nr_aids()?, nr_aids - 1, "number of AIDs");
    expect_errno(dev.info(aid), libc::ENOENT, "INFO by number after FORCE")?;
    expect_errno(
        dev.info_by_name(name.as_bytes()),
        libc::ENOENT,
        "INFO by name after FORCE",
    )?;
    expect_errno(dev.pid_table(aid), libc::ENOENT, "TABLE after FORCE")?;
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
    let range = fx.range();
    let again = match range {
        Some((min, max)) => dev.register_range(name, min, max),
        None => dev.register(name),
    };
    let again = AidGuard::adopt(again.context("register the same name again")?, name);
    if again.aid <= aid {
        bail!("new AID {} not above the unregistered {}", again.aid, aid);
    }
    dev.link(again.aid, pid)
        .context("LINK to a new AID after FORCE")?;
    expect_pid_table_in(dev, again.aid, range, &entries_of(pid)?, "linked to the new AID")?;
    agent.send(QUIT)?;
    agent.finish(step_timeout())?;
    expect_pid_table_in(dev, again.aid, range, &[], "after the process was reaped")
}

fn empty_aid_ok() -> Result<()> {
    each_flavor(empty_aid_ok_in)
}

fn empty_aid_ok_in(flavor: Flavor) -> Result<()> {
    let nr_aids = Device::open()?.nr_aids()?;
    let fx = AidFixture::new("empty", flavor)?;
    let (dev, aid) = (&fx.dev, fx.aid());
    ensure_eq!(dev.nr_aids()?, nr_aids + 1, "number of AIDs after REGISTER");
    dev.unregister(aid, 0)
        .context("UNREGISTER of an empty AID")?;
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs after UNREGISTER");
    expect_errno(dev.info(aid), libc::ENOENT, "INFO after UNREGISTER")?;
    expect_errno(dev.unregister(aid, 0), libc::ENOENT, "second UNREGISTER")?;
    expect_errno(
        dev.unregister(aid, uapi::UNREGISTER_FORCE),
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
    for_each_flavor("unlink", unlink_removes_all_threads_in)
}

fn unlink_removes_all_threads_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid) = (&fx.dev, fx.aid());
    let linked = sleeper(dev, None, 3)?;
    let other = sleeper(dev, None, 1)?;
    dev.link(aid, linked.pid()).context("LINK")?;
    fx.expect_pid_table(&entries_of(linked.pid())?, "after LINK")?;
    dev.unlink(linked.pid()).context("UNLINK")?;
    fx.expect_pid_table(&[], "after UNLINK")?;
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
    dev.unregister(aid, 0)
        .context("UNREGISTER without FORCE after UNLINK (nothing linked)")?;
    release(linked)?;
    release(other)
}

/// Issue #9 section 2: UNLINK takes the subtree, so that no AID process has a child
/// outside its AID (before, the children stayed linked under an unlinked parent).
fn unlink_self_takes_children() -> Result<()> {
    for_each_flavor("unlink-self", unlink_self_takes_children_in)
}

fn unlink_self_takes_children_in(fx: &AidFixture) -> Result<()> {
    let dev = &fx.dev;
    let mut agent = fx.spawn_linked(|chan| {
        crate::fixtures::park_threads(1)?;
        let child = proc::fork(|| proc::sleep_forever())?;
        chan.send(child.pid() as i64)?;
        chan.recv(step_timeout())?;
        dev.unlink(0).context("UNLINK self")?;
        let later = proc::fork(|| proc::sleep_forever())?;
        chan.send(later.pid() as i64)?;
        // The first child's system PID, its PID now that this process is in no AID
        // (fork's was a virtual one with a range).
        let now = chan.recv(step_timeout())? as i32;
        std::mem::forget(child);
        kill_and_reap(now).context("the child forked before UNLINK")?;
        drop(later);
        Ok(())
    })?;
    let pid = agent.pid();
    let child = fx.system_of_child(pid, agent.recv_step()? as i32)?;
    proc::wait_for_threads(pid, 2)?;
    let mut expected = entries_of(pid)?;
    expected.push((child, child));
    fx.expect_pid_table(&expected, "linked parent (2 threads) and child")?;
    agent.send(1)?;
    let later = agent.recv_step()? as i32;
    ensure_eq!(
        proc::ppid_of(later),
        Some(pid),
        "parent (/proc) of the child forked after UNLINK (its fork returned a system PID)"
    );
    fx.expect_pid_table(&[], "after the parent unlinked itself")?;
    expect_errno(
        dev.unlink(later),
        libc::ENOENT,
        "UNLINK of a child forked after the parent's UNLINK",
    )?;
    agent.send(i64::from(child))?;
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after all were reaped")
}

/// Kills (SIGKILL) and reaps child `pid` of the calling process; fails unless both work.
fn kill_and_reap(pid: i32) -> Result<()> {
    if pid <= 0 {
        bail!("no PID to kill ({pid})");
    }
    // SAFETY: kill and waitpid of one process (pid > 0), no out pointer.
    let (killed, reaped) = unsafe {
        (
            libc::kill(pid, libc::SIGKILL),
            libc::waitpid(pid, std::ptr::null_mut(), 0),
        )
    };
    if killed != 0 || reaped != pid {
        bail!(
            "kill({pid}) = {killed}, waitpid({pid}) = {reaped} ({})",
            Errno::last()
        );
    }
    Ok(())
}

/// Rounds of [`force_group_only_while_listing`].
const GROUP_ROUNDS: usize = 20;
/// AIDs registered before the raced ones, so that LIST copies out records (and faults, see
/// [`list_loop`]) before it reads the raced AID's counters: their records fill the first
/// page of the buffer and part of the second.
const EARLIER_AIDS: usize = 40;
/// What the test sends the loops and the group maker to end them.
const STOP: i64 = 0;

/// Fails unless the counters of an INFO/LIST record can be true: no more threads (or
/// processes) than PID-table entries.
fn check_counters(info: &uapi::AidInfo, what: &str) -> Result<()> {
    let pids = info.table_sizes[uapi::TABLE_PID as usize];
    if info.nr_threads > pids || info.nr_processes > pids {
        bail!(
            "{what} of AID {}: {} processes, {} threads, but {pids} PID-table entries",
            info.aid,
            info.nr_processes,
            info.nr_threads
        );
    }
    Ok(())
}

/// The next value from the test if one is waiting (without blocking).
fn poll_command(chan: &Channel) -> Result<Option<i64>> {
    if proc::wait_readable(chan.rx_fd(), Duration::ZERO)? {
        return Ok(Some(chan.recv(step_timeout())?));
    }
    Ok(None)
}

/// Anonymous memory, unmapped when dropped.
struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// `len` bytes of private anonymous read-write memory.
    fn new(len: usize) -> Result<Mapping> {
        let addr = proc::map_anonymous(len, 0)?;
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows it any more.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// Size of the memory whose protection the LIST loop's second thread keeps changing.
const BUSY_MEMORY: usize = 32 << 20;

/// The LIST loop's buffer, shared by its two threads; [`BufferState`] says who may touch it.
struct ListBuffer {
    mapping: Mapping,
    state: AtomicU8,
}

// SAFETY: the mapping is plain memory; the state decides which thread uses it when.
unsafe impl Sync for ListBuffer {}
// SAFETY: as above.
unsafe impl Send for ListBuffer {}

/// States of a [`ListBuffer`].
struct BufferState;

impl BufferState {
    /// Written by a LIST: the second thread may drop its pages.
    const DIRTY: u8 = 0;
    /// The second thread is dropping its pages.
    const DROPPING: u8 = 1;
    /// Its pages are dropped: the next LIST's copy-out faults.
    const DROPPED: u8 = 2;
    /// A LIST, and the check of its records, use it.
    const IN_USE: u8 = 3;
}

/// The LIST loop's second thread, until `stop`: drops the pages of the buffer whenever
/// the last LIST is done with them, and keeps the address space write-locked most of
/// the time: `mprotect` of a populated 32 MiB region back and forth, each call walking
/// its 8,192 page-table entries under the lock (1.7 ms in the debug guest).
fn lock_address_space(buffer: &ListBuffer, stop: &AtomicBool) -> Result<()> {
    let region = Mapping::new(BUSY_MEMORY)?;
    // SAFETY: the region is ours, writable and `len` bytes long.
    unsafe { std::ptr::write_bytes(region.addr as *mut u8, 1, region.len) };
    while !stop.load(Ordering::SeqCst) {
        if buffer
            .state
            .compare_exchange(
                BufferState::DIRTY,
                BufferState::DROPPING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            let m = &buffer.mapping;
            // SAFETY: drops the pages of our buffer, which no LIST uses now (DROPPING);
            // they read as zeros afterwards.
            sys(unsafe { libc::madvise(m.addr, m.len, libc::MADV_DONTNEED) }).context("madvise")?;
            buffer.state.store(BufferState::DROPPED, Ordering::SeqCst);
        }
        for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
            // SAFETY: changes the protection of our own region, used by nobody else.
            sys(unsafe { libc::mprotect(region.addr, region.len, prot) }).context("mprotect")?;
        }
    }
    Ok(())
}

/// LIST as fast as it goes, checking every record, until [`STOP`]; sends the number of
/// calls.
///
/// LIST takes its snapshot of the AIDs under the registry lock, then reads each AID's
/// counters as it copies the records out: a forced UNREGISTER must land in that stretch.
/// The guest has one CPU and a kernel without preemption, so it can only land there
/// while LIST sleeps. So a second thread drops the records' pages after each LIST and
/// keeps the address space write-locked (`mprotect`): the next copy-out faults and waits
/// for that lock, asleep in the ioctl; the test watches for that moment (see
/// [`asleep_in_ioctl`]) and unregisters then.
fn list_loop(dev: &Device, chan: &Channel) -> Result<()> {
    let capacity = 2 * EARLIER_AIDS + 64;
    let buffer = Arc::new(ListBuffer {
        mapping: Mapping::new(capacity * core::mem::size_of::<uapi::AidInfo>())?,
        state: AtomicU8::new(BufferState::DIRTY),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let locker = {
        let (buffer, stop) = (buffer.clone(), stop.clone());
        std::thread::spawn(move || lock_address_space(&buffer, &stop))
    };
    let mut calls = 0i64;
    let result = (|| -> Result<()> {
        loop {
            if poll_command(chan)? == Some(STOP) {
                return Ok(());
            }
            loop {
                let state = buffer.state.load(Ordering::SeqCst);
                if state != BufferState::DROPPING
                    && buffer
                        .state
                        .compare_exchange(
                            state,
                            BufferState::IN_USE,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        )
                        .is_ok()
                {
                    break;
                }
                std::thread::yield_now();
            }
            // SAFETY: the mapping holds `capacity` records, all-zero (a valid AidInfo)
            // when dropped, and this thread alone uses it while IN_USE.
            let records: &mut [uapi::AidInfo] =
                unsafe { std::slice::from_raw_parts_mut(buffer.mapping.addr.cast(), capacity) };
            let count = dev.list_into(records).map_err(|e| anyhow!("LIST: {e}"))? as usize;
            for info in &records[..count.min(capacity)] {
                check_counters(info, "LIST")?;
            }
            buffer.state.store(BufferState::DIRTY, Ordering::SeqCst);
            calls += 1;
        }
    })();
    stop.store(true, Ordering::SeqCst);
    match locker.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("the mprotect thread")),
        Err(_) => bail!("the mprotect thread panicked"),
    }
    result?;
    chan.send(calls)
}

/// INFO of the AID the test names last, as fast as it goes (at nice 19), until [`STOP`];
/// sends the number of calls.
fn info_loop(dev: &Device, chan: &Channel) -> Result<()> {
    // At the lowest priority: on the guest's one CPU it would otherwise take the time
    // the LIST loop and the test need to meet (see `list_loop`).
    // SAFETY: setpriority on this process only.
    sys(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) }).context("setpriority")?;
    let mut aid = 0u64;
    let mut calls = 0i64;
    loop {
        let command = if aid == 0 {
            Some(chan.recv(secs(600))?)
        } else {
            poll_command(chan)?
        };
        match command {
            Some(STOP) => return chan.send(calls),
            Some(next) => aid = next as u64,
            None => {}
        }
        match dev.info(aid) {
            Ok(info) => check_counters(&info, "INFO")?,
            Err(Errno(libc::ENOENT)) => {}
            Err(e) => bail!("INFO of AID {aid}: {e}"),
        }
        calls += 1;
    }
}

/// Forks a leader that starts a session (so a process group) and forks a member, which
/// stays in both; the leader exits and is reaped here. Returns (leader, the member's
/// system PID, which it reports itself); the caller must be a subreaper, so the member is
/// its child from then on.
fn group_with_reaped_leader() -> Result<(i32, i32)> {
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    // SAFETY: the children make only async-signal-safe calls and `_exit` or pause.
    let leader = unsafe { libc::fork() };
    if leader == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            let member = libc::fork();
            if member == 0 {
                // A child of a single-threaded process: reading /proc is safe here.
                let system = crate::virt::system_pid().unwrap_or(-1) as i64;
                proc::write_raw(tx_fd, &system.to_ne_bytes());
                loop {
                    libc::pause();
                }
            }
            libc::_exit(if member > 0 { 0 } else { 1 });
        }
    }
    if leader < 0 {
        return Err(Errno::last()).context("fork");
    }
    drop(tx);
    let mut status = 0;
    // SAFETY: `leader` is our child; `status` is a valid out-pointer.
    let reaped = unsafe { libc::waitpid(leader, &mut status, 0) };
    if reaped != leader || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("the group leader: waitpid {reaped}, status {status:#x}");
    }
    let mut buf = [0u8; 8];
    proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())
        .context("the member's PID")?;
    Ok((leader, i64::from_ne_bytes(buf) as i32))
}

/// For every AID the test sends: links itself to it, makes a group-only entry (a group
/// whose leader is reaped while a member lives) and sends the leader's PID; at [`GO`]
/// (the AID is gone) kills and reaps the member and sends [`READY`].
fn group_maker(dev: &Device, chan: &Channel) -> Result<()> {
    proc::become_subreaper();
    loop {
        let aid = chan.recv(secs(600))?;
        if aid == STOP {
            return Ok(());
        }
        dev.link(aid as u64, 0)
            .with_context(|| format!("LINK self to AID {aid}"))?;
        let (leader, member) = group_with_reaped_leader()?;
        chan.send(leader as i64)?;
        if chan.recv(step_timeout())? != GO {
            bail!("expected GO");
        }
        // The AID is gone (forced UNREGISTER): this process is in no AID, so the
        // member's system PID names it (reparented to us, a subreaper).
        kill_and_reap(member).context("the group's member")?;
        chan.send(READY)?;
    }
}

/// Whether the main thread of process `pid` sleeps inside an ioctl (`/proc/PID/syscall`
/// names the call only for a task that is not runnable): for the LIST loop, its copy-out
/// waiting for the address space (the registry lock, the only other place LIST could
/// sleep, is never held across a sleep).
fn asleep_in_ioctl(pid: i32) -> bool {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    syscall.split_whitespace().next() == Some(libc::SYS_ioctl.to_string().as_str())
}

/// Waits (at most `timeout`) until [`asleep_in_ioctl`]; false on timeout or once the
/// process's main thread is gone. It polls without sleeping: LIST sleeps for at most one
/// `mprotect` of the second thread, under the guest's 4 ms timer tick, and the second
/// thread does not run while this polls.
fn wait_asleep_in_ioctl(pid: i32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut polls = 0u32;
    while std::time::Instant::now() < deadline {
        if asleep_in_ioctl(pid) {
            return true;
        }
        polls += 1;
        if polls.is_multiple_of(64) && proc::state_of(pid) == Some('Z') {
            return false;
        }
    }
    false
}

/// Fails when a loop ended early: killed, ended with an error of its own, or its main
/// thread gone (a kernel oops in an ioctl ends the calling thread; the LIST loop's
/// second thread would keep the process alive).
fn expect_running(agent: &mut Agent, what: &str, round: usize) -> Result<()> {
    let oops = "a kernel oops in its ioctl ends the thread so; see the kernel log";
    if let Some(status) = agent.try_wait()? {
        let text = agent.error_text();
        if text.is_empty() {
            bail!("round {round}: the {what} loop {status} ({oops}?)");
        }
        bail!("round {round}: the {what} loop {status}: {text}");
    }
    if proc::state_of(agent.pid()) == Some('Z') {
        bail!("round {round}: the {what} loop's main thread died in the kernel ({oops})");
    }
    Ok(())
}

/// issue #9: a forced UNREGISTER emptied the tables but kept the count of group-only PID
/// entries (groups whose leader was reaped while members live), so a LIST or INFO that
/// had found the AID just before computed nr_threads = 0 - nr_group_only: an overflow
/// (a Rust panic, so a kernel oops, with overflow checks; a nonsense count without).
///
/// Here, in each of 20 rounds, an AID with a group-only entry is force-unregistered while
/// one process LISTs (every AID) and another INFOs it as fast as they can; every record
/// they get must have no more threads or processes than PID-table entries, and neither
/// may die. The UNREGISTER is timed to land while a LIST sleeps between its snapshot and
/// the raced AID (see [`list_loop`]; after 5 s without that moment it goes ahead anyway),
/// which makes the old module oops in the first round. All 20 rounds run in each flavor.
fn force_group_only_while_listing() -> Result<()> {
    each_flavor(force_group_only_while_listing_in)
}

fn force_group_only_while_listing_in(flavor: Flavor) -> Result<()> {
    let dev = Device::open()?;
    let mut earlier = Vec::new();
    for _ in 0..EARLIER_AIDS {
        earlier.push(AidGuard::new(&dev, "grp-pad")?);
    }
    let mut lister = Agent::spawn(|chan| list_loop(&dev, chan))?;
    let mut informer = Agent::spawn(|chan| info_loop(&dev, chan))?;
    let mut maker = Agent::spawn(|chan| group_maker(&dev, chan))?;
    let mut aligned = 0;
    for round in 0..GROUP_ROUNDS {
        let fx = AidFixture::new("grp-race", flavor)?;
        let aid = fx.aid();
        informer.send(aid as i64)?;
        maker.send(aid as i64)?;
        // The leader's PID as the maker (in the AID) saw it: the virtual one.
        let leader = maker
            .recv_step()
            .with_context(|| format!("round {round}: the group maker"))?
            as i32;
        let table = dev.pid_table(aid)?;
        if !table.iter().any(|e| {
            e.virtual_id as i32 == leader
                && e.owner_id == uapi::PID_OWNER_GROUP_ONLY
                && (flavor == Flavor::Range) == (e.virtual_id != e.system_id)
        }) {
            bail!("round {round}: no group-only entry for the reaped leader {leader}: {table:?}");
        }
        let info = dev.info(aid)?;
        ensure_eq!(
            (info.nr_threads, info.table_sizes[uapi::TABLE_PID as usize]),
            (table.len() as u32 - 1, table.len() as u32),
            "round {round}: INFO's threads and PID entries (one group-only entry)"
        );
        if wait_asleep_in_ioctl(lister.pid(), secs(5)) {
            aligned += 1;
        }
        dev.unregister(aid, uapi::UNREGISTER_FORCE)
            .with_context(|| format!("round {round}: UNREGISTER --force"))?;
        maker.send(GO)?;
        maker.expect(READY, "member reaped")?;
        expect_running(&mut lister, "LIST", round)?;
        expect_running(&mut informer, "INFO", round)?;
    }
    // Give a LIST that is still between the registry and the last AID time to finish.
    std::thread::sleep(Duration::from_millis(200));
    expect_running(&mut lister, "LIST", GROUP_ROUNDS)?;
    expect_running(&mut informer, "INFO", GROUP_ROUNDS)?;
    let mut calls = Vec::new();
    for (agent, what) in [(&mut lister, "LIST"), (&mut informer, "INFO")] {
        agent.send(STOP)?;
        calls.push(
            agent
                .recv_step()
                .with_context(|| format!("the {what} loop"))?,
        );
    }
    maker.send(STOP)?;
    diag!(
        "{GROUP_ROUNDS} forced UNREGISTERs of AIDs with a group-only entry ({aligned} while a LIST slept in its copy-out) during {} LISTs and {} INFOs",
        calls[0],
        calls[1]
    );
    for agent in [lister, informer, maker] {
        agent.finish(step_timeout())?;
    }
    drop(earlier);
    Ok(())
}
