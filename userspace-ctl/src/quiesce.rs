//! Holding every task of an application still while a snapshot is taken.
//!
//! A forked child of appshotctl, the *freezer*, attaches to every thread of the AID with
//! `PTRACE_SEIZE` and stops it with `PTRACE_INTERRUPT`, as checkpoint tools do. A task
//! stops only on its way back to user space, so once all are stopped none is inside a
//! hooked system call, and none runs. The stop is not a group stop: the application's
//! parent gets no `SIGCHLD`/`CLD_STOPPED`, its `wait` sees nothing, and a system call
//! the interrupt broke (a `msgrcv` asleep, say) restarts by itself when the task resumes.
//! What a task outside the AID may notice meanwhile is the ptrace state in
//! `/proc/PID/status` (`TracerPid`, state `t`).
//!
//! Tasks created while the freezer works are found by listing the AID's PID table again,
//! until a listing holds nothing new (a stopped task creates nothing). A task that does
//! not stop within the timeout (in uninterruptible sleep, say) fails the freeze, naming
//! it.
//!
//! Release is the freezer's exit: the kernel detaches a tracer's tracees when it ends
//! and lets them run on, whatever state they were left in. So the application is never
//! left stopped: not on an error, and not when appshotctl itself is killed (the freezer
//! has `PR_SET_PDEATHSIG` set to `SIGKILL`). A signal that arrived for a stopped task is
//! handed back to it when the freezer detaches.

#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::device::Device;
use crate::values::TableType;

/// How long the tasks get to stop.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// An application held still. Dropping it lets the application run on.
pub struct Frozen {
    freezer: Pid,
    /// Closing it tells the freezer to detach and exit.
    release: Option<OwnedFd>,
    /// The threads stopped, system TID -> system TGID.
    pub threads: BTreeMap<i32, i32>,
}

impl Frozen {
    /// Stops every thread of AID `aid` (system TIDs from its PID table).
    pub fn freeze(device: &Device, aid: u64, timeout: Duration) -> anyhow::Result<Frozen> {
        let (report_read, report_write) = nix::unistd::pipe().context("cannot create a pipe")?;
        let (release_read, release_write) = nix::unistd::pipe().context("cannot create a pipe")?;
        let parent = rustix::process::getpid();
        // SAFETY: appshotctl is single-threaded, so the child may run any code.
        match unsafe { fork() }.context("cannot fork the freezer")? {
            ForkResult::Child => {
                drop((report_read, release_write));
                let code = freezer(device, aid, timeout, parent, report_write, release_read);
                // Not `exit`: the parent's buffers and destructors are not ours to run.
                // SAFETY: `_exit` ends this process at once; nothing is left half done.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop((report_write, release_read));
                let mut frozen = Frozen { freezer: child, release: Some(release_write), threads: BTreeMap::new() };
                let mut report = String::new();
                BufReader::new(File::from(report_read))
                    .read_to_string(&mut report)
                    .context("cannot read the freezer's report")?;
                let mut lines = report.lines();
                match lines.next() {
                    Some("ok") => {
                        for line in lines {
                            let mut ids = line.split(' ').map(str::parse::<i32>);
                            if let (Some(Ok(tid)), Some(Ok(tgid))) = (ids.next(), ids.next()) {
                                frozen.threads.insert(tid, tgid);
                            }
                        }
                        Ok(frozen)
                    }
                    Some(error) => Err(anyhow!("{}", error.trim_start_matches("error: "))),
                    None => Err(anyhow!("the freezer ended without a report")),
                }
            }
        }
    }

    /// Lets the application run on (or, after a SIGKILL, die): the freezer detaches and
    /// exits.
    pub fn release(mut self) {
        self.end();
    }

    fn end(&mut self) {
        drop(self.release.take());
        // The freezer exits once it has read EOF; its exit detaches whatever is left.
        let _ = waitpid(self.freezer, None);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.end();
    }
}

/// The freezer's life: freeze, report, wait for the release, detach. Returns its exit
/// status.
fn freezer(device: &Device, aid: u64, timeout: Duration, parent: rustix::process::Pid, report: OwnedFd, release: OwnedFd) -> i32 {
    // Die with appshotctl: the kernel then detaches everything.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid() != Some(parent) {
        return 1;
    }
    let mut report = File::from(report);
    let mut stopped = Stopped::default();
    let text = match stop_all(device, aid, timeout, &mut stopped) {
        Ok(()) => {
            let mut text = String::from("ok\n");
            for (tid, tgid) in &stopped.threads {
                text.push_str(&format!("{tid} {tgid}\n"));
            }
            text
        }
        Err(error) => format!("error: {error:#}\n"),
    };
    let failed = text.starts_with("error");
    if report.write_all(text.as_bytes()).is_err() || failed {
        return 1;
    }
    drop(report);
    // Wait for the release (EOF, when appshotctl closes its end or dies).
    let mut byte = [0u8; 1];
    let _ = File::from(release).read(&mut byte);
    for &tid in stopped.threads.keys() {
        let signal = stopped.pending.get(&tid).copied();
        let _ = ptrace::detach(Pid::from_raw(tid), signal);
    }
    0
}

/// What the freezer holds.
#[derive(Default)]
struct Stopped {
    /// Stopped threads, TID -> TGID.
    threads: BTreeMap<i32, i32>,
    /// Signals that arrived for a stopped thread, handed back on detach.
    pending: BTreeMap<i32, Signal>,
}

/// Seizes and stops every thread of the AID, listing its table until nothing is new.
fn stop_all(device: &Device, aid: u64, timeout: Duration, stopped: &mut Stopped) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    loop {
        let entries = device.table(aid, TableType::PID).map_err(|e| anyhow!("cannot read the PID table: {e}"))?;
        let mut waiting = BTreeMap::new();
        for entry in entries {
            // A group-only or reserved entry has no task behind it.
            if entry.owner_id == appshot_uapi::PID_OWNER_GROUP_ONLY || entry.owner_id == appshot_uapi::PID_OWNER_RESERVED {
                continue;
            }
            let (tid, tgid) = (entry.system_id as i32, entry.owner_id as i32);
            if !seen.insert(tid) {
                continue;
            }
            if is_dead(tid) {
                continue;
            }
            match ptrace::seize(Pid::from_raw(tid), ptrace::Options::empty()) {
                Ok(()) => {}
                // Gone meanwhile, or a zombie now.
                Err(Errno::ESRCH) => continue,
                Err(_) if is_dead(tid) => continue,
                Err(Errno::EPERM) => bail!(
                    "cannot stop {}: it is traced by another process, or you may not trace it (needs CAP_SYS_PTRACE)",
                    describe(tid)
                ),
                Err(errno) => bail!("cannot stop {}: {}", describe(tid), errno.desc()),
            }
            match ptrace::interrupt(Pid::from_raw(tid)) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => bail!("cannot stop {}: {}", describe(tid), errno.desc()),
            }
            waiting.insert(tid, tgid);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        wait_stopped(waiting, deadline, stopped)?;
    }
}

/// Waits until every thread of `waiting` has stopped (or ended).
fn wait_stopped(mut waiting: BTreeMap<i32, i32>, deadline: Instant, stopped: &mut Stopped) -> anyhow::Result<()> {
    while !waiting.is_empty() {
        let flags = WaitPidFlag::__WALL | WaitPidFlag::WNOHANG;
        match waitpid(None, Some(flags)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    let (&tid, _) = waiting.iter().next().unwrap_or((&0, &0));
                    bail!(
                        "{} did not stop within {} s (state: {}); nothing was captured and every task runs on",
                        describe(tid),
                        TIMEOUT.as_secs(),
                        state_text(tid)
                    );
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(WaitStatus::PtraceEvent(pid, _, _)) | Ok(WaitStatus::Stopped(pid, _)) | Ok(WaitStatus::PtraceSyscall(pid))
                if !waiting.contains_key(&pid.as_raw()) && stopped.threads.contains_key(&pid.as_raw()) =>
            {
                // Already counted; nothing to do.
            }
            Ok(WaitStatus::Stopped(pid, signal)) => {
                // A signal arrived before the interrupt: keep it for the detach.
                let tid = pid.as_raw();
                stopped.pending.insert(tid, signal);
                if let Some(tgid) = waiting.remove(&tid) {
                    stopped.threads.insert(tid, tgid);
                }
            }
            Ok(WaitStatus::PtraceEvent(pid, _, _)) | Ok(WaitStatus::PtraceSyscall(pid)) => {
                let tid = pid.as_raw();
                if let Some(tgid) = waiting.remove(&tid) {
                    stopped.threads.insert(tid, tgid);
                }
            }
            Ok(WaitStatus::Exited(pid, _)) | Ok(WaitStatus::Signaled(pid, _, _)) => {
                waiting.remove(&pid.as_raw());
                stopped.threads.remove(&pid.as_raw());
            }
            Ok(_) => {}
            Err(Errno::ECHILD) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(errno) => bail!("waiting for the tasks to stop failed: {}", errno.desc()),
        }
    }
    Ok(())
}

/// Whether a task is a zombie or gone (nothing to stop).
fn is_dead(tid: i32) -> bool {
    matches!(state(tid), None | Some('Z') | Some('X') | Some('x'))
}

/// The state letter of `/proc/TID/stat`.
fn state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // The command may hold anything, parentheses included: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn state_text(tid: i32) -> String {
    match state(tid) {
        Some('D') => "D, uninterruptible sleep".to_string(),
        Some(letter) => letter.to_string(),
        None => "gone".to_string(),
    }
}

/// "process 1234 (dbserver)" or "thread 1235 of process 1234 (dbserver)".
pub fn describe(tid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm")).map(|c| c.trim_end().to_string()).unwrap_or_default();
    let tgid = std::fs::File::open(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|file| {
            BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .find_map(|line| line.strip_prefix("Tgid:").and_then(|v| v.trim().parse::<i32>().ok()))
        })
        .unwrap_or(tid);
    let comm = comm.escape_debug();
    if tgid == tid {
        format!("process {tid} ({comm})")
    } else {
        format!("thread {tid} of process {tgid} ({comm})")
    }
}
