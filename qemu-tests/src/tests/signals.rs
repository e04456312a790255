//! Signals and waits inside an AID, with a virtual PID range and without one (issue #4),
//! each test in both: every way of
//! sending (kill, tkill, tgkill, sigqueue, rt_tgsigqueueinfo) reaches the process named
//! by its virtual ID, and every way of receiving (SA_SIGINFO handler, sigwaitinfo,
//! sigtimedwait, signalfd) names the sender by its virtual ID; kill's group forms (0,
//! -pgid, -1) stay within the AID; every form of wait4 and waitid returns virtual IDs.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};

use super::pids::{block, wait_signal};
use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::{step_timeout, Errno};
use crate::ensure_eq;
use crate::fixtures::READY;
use crate::proc::{self, Agent};
use crate::virt::{self, expect_in_range, expect_own_id, raw, show};

pub const TESTS: &[Test] = &[
    Test::new(
        "signals/every_sender_every_receiver_si_pid",
        every_sender_every_receiver_si_pid,
    ),
    Test::new(
        "signals/kill_zero_pgid_minus_one_stay_in_aid",
        kill_zero_pgid_minus_one_stay_in_aid,
    ),
    Test::new("signals/wait4_waitid_forms_virtual", wait4_waitid_forms_virtual),
];

/// si_pid seen by the SA_SIGINFO handler (0 until a signal arrives).
static HANDLER_SI_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_si_pid(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    HANDLER_SI_PID.store(unsafe { (*info).si_pid() }, Ordering::SeqCst);
}

const SENDERS: &[&str] = &["kill", "tkill", "tgkill", "sigqueue", "rt_tgsigqueueinfo"];
const RECEIVERS: &[&str] = &["handler", "sigwaitinfo", "sigtimedwait", "signalfd"];

/// Sends SIGUSR1 to `target` (a single-threaded process) the way `how` names.
fn send(how: &str, target: i32) -> i64 {
    // SAFETY: a zeroed siginfo is valid; its fields are plain integers.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = libc::SIGUSR1;
    info.si_code = libc::SI_QUEUE;
    // siginfo's _pid and _uid follow the three ints of the header (x86-64 layout).
    // SAFETY: the siginfo is 128 bytes; offsets 16 and 20 are si_pid and si_uid.
    unsafe {
        let base = &mut info as *mut libc::siginfo_t as *mut u8;
        *(base.add(16) as *mut i32) = libc::getpid();
        *(base.add(20) as *mut u32) = libc::getuid();
    }
    let sig = libc::SIGUSR1;
    // SAFETY: raw signal calls with valid arguments.
    unsafe {
        raw(match how {
            "kill" => libc::syscall(libc::SYS_kill, target, sig),
            "tkill" => libc::syscall(libc::SYS_tkill, target, sig),
            "tgkill" => libc::syscall(libc::SYS_tgkill, target, target, sig),
            "sigqueue" => libc::sigqueue(target, sig, libc::sigval { sival_ptr: std::ptr::null_mut() }) as libc::c_long,
            _ => libc::syscall(libc::SYS_rt_tgsigqueueinfo, target, target, sig, &info),
        })
    }
}

/// Receives one SIGUSR1 (blocked, or pending) the way `how` names; returns its si_pid.
fn receive(how: &str, sfd: i32) -> Result<i32> {
    match how {
        "handler" => {
            HANDLER_SI_PID.store(0, Ordering::SeqCst);
            // SAFETY: waits with only SIGUSR1 unblocked; its handler runs first.
            unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut mask);
                libc::sigdelset(&mut mask, libc::SIGUSR1);
                libc::sigsuspend(&mask);
            }
            Ok(HANDLER_SI_PID.load(Ordering::SeqCst))
        }
        "sigwaitinfo" => {
            // SAFETY: sigset_t is plain bits, initialized by sigemptyset below.
            let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid set and info.
            unsafe {
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                let mut info: libc::siginfo_t = std::mem::zeroed();
                if libc::sigwaitinfo(&set, &mut info) < 0 {
                    return Err(Errno::last()).context("sigwaitinfo");
                }
                Ok(info.si_pid())
            }
        }
        "sigtimedwait" => Ok(wait_signal(&[libc::SIGUSR1])?.1),
        _ => {
            let mut buf = [0u8; 128];
            proc::read_exact_timeout(sfd, &mut buf, step_timeout()).context("read signalfd")?;
            // struct signalfd_siginfo: ssi_signo, ssi_errno, ssi_code, ssi_pid (u32 each).
            Ok(i32::from_ne_bytes(buf[12..16].try_into().unwrap()))
        }
    }
}

fn every_sender_every_receiver_si_pid() -> Result<()> {
    for_each_flavor("sigs", every_sender_every_receiver_in)
}

fn every_sender_every_receiver_in(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let agent = fx.spawn(|_| {
        // The receiver R (this process): SIGUSR1 blocked except in the handler's
        // sigsuspend; the sender S sends one signal per byte it reads.
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = record_si_pid as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        block(&[libc::SIGUSR1, libc::SIGCHLD]);
        let set = {
            // SAFETY: sigset_t is plain bits, initialized by sigemptyset below.
            let mut s: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: initializes the set.
            unsafe {
                libc::sigemptyset(&mut s);
                libc::sigaddset(&mut s, libc::SIGUSR1);
            }
            s
        };
        // SAFETY: a signalfd for the blocked SIGUSR1.
        let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if sfd < 0 {
            return Err(Errno::last()).context("signalfd");
        }
        let me = proc::getpid();
        let (cmd_rx, cmd_tx) = proc::pipe()?;
        let (rep_rx, rep_tx) = proc::pipe()?;
        let (cmd_fd, rep_fd) = (cmd_rx.as_raw_fd(), rep_tx.as_raw_fd());
        let cmd_tx_fd = cmd_tx.as_raw_fd();
        let mut sender = proc::fork(move || {
            // SAFETY: our copy of the command pipe's write end: EOF must come when R closes its own.
            unsafe { libc::close(cmd_tx_fd) };
            let report = [
                proc::getpid() as i64,
                virt::system_pid().unwrap_or(-1) as i64,
            ];
            proc::write_raw(rep_fd, &report.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>());
            let mut byte = [0u8];
            // SAFETY: reads commands until EOF.
            while unsafe { libc::read(cmd_fd, byte.as_mut_ptr().cast(), 1) } == 1 {
                let r = send(SENDERS[byte[0] as usize], me);
                proc::write_raw(rep_fd, &r.to_ne_bytes());
            }
            0
        })?;
        let mut buf = [0u8; 16];
        proc::read_exact_timeout(rep_rx.as_raw_fd(), &mut buf, step_timeout())?;
        let s = i64::from_ne_bytes(buf[..8].try_into().unwrap());
        let s_system = i64::from_ne_bytes(buf[8..].try_into().unwrap());
        expect_own_id(s, s_system, range, "the sender's getpid vs its system PID")?;
        ensure_eq!(s, sender.pid() as i64, "the sender's getpid vs fork's return");
        let mut wrong = Vec::new();
        for (i, how_send) in SENDERS.iter().enumerate() {
            for how_receive in RECEIVERS {
                proc::write_raw(cmd_tx.as_raw_fd(), &[i as u8]);
                let mut r = [0u8; 8];
                proc::read_exact_timeout(rep_rx.as_raw_fd(), &mut r, step_timeout())?;
                let sent = i64::from_ne_bytes(r);
                if sent != 0 {
                    wrong.push(format!("{how_send}(receiver's virtual PID {me}) = {}", show(sent)));
                    continue;
                }
                let si_pid = receive(how_receive, sfd)?;
                if si_pid as i64 != s {
                    wrong.push(format!("{how_send} -> {how_receive}: si_pid {si_pid}, want {s}"));
                }
            }
        }
        drop(cmd_tx);
        sender.expect_exit(0, step_timeout())?;
        // SIGCHLD of the sender, pending since it exited (blocked): names it too.
        let (sig, si_pid) = wait_signal(&[libc::SIGCHLD])?;
        if sig != libc::SIGCHLD || si_pid as i64 != s {
            wrong.push(format!("SIGCHLD: signal {sig}, si_pid {si_pid}, want {s}"));
        }
        if !wrong.is_empty() {
            bail!("{}", wrong.join("; "));
        }
        Ok(())
    })?;
    agent.finish(step_timeout())
}

/// A member process that reports every SIGWINCH it gets within 3 s, twice:
/// `[index, round, si_pid or -errno]` on `fd`.
fn winch_member(index: i64, fd: i32, own_group: bool) -> Result<proc::Child> {
    proc::fork(move || {
        if own_group {
            // SAFETY: a new group for ourselves.
            unsafe { libc::setpgid(0, 0) };
        }
        for round in 0..2 {
            let got = match wait_signal(&[libc::SIGWINCH]) {
                Ok((_, si_pid)) => si_pid as i64,
                Err(_) => -1,
            };
            let msg = [index, round, got];
            proc::write_raw(fd, &msg.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>());
        }
        proc::sleep_forever()
    })
}

fn kill_zero_pgid_minus_one_stay_in_aid() -> Result<()> {
    // SIGWINCH is ignored by default: should it leak out of the AID, it harms nobody,
    // and the outside canary and this test (both blocking it) see it pending.
    block(&[libc::SIGWINCH]);
    let mut canary = Agent::spawn(|chan| {
        chan.send(READY)?;
        chan.recv(step_timeout() * 4)?;
        chan.send(winch_pending() as i64)
    })?;
    canary.expect(READY, "canary")?;
    let result = for_each_flavor("killgrp", kill_forms_in);
    canary.send(1)?;
    let pending = canary.recv_step();
    let canary_end = canary.finish(step_timeout());
    result?;
    ensure_eq!(pending?, 0, "SIGWINCH pending in a process outside the AID");
    canary_end?;
    ensure_eq!(winch_pending(), false, "SIGWINCH pending in the test process (outside)");
    Ok(())
}

fn kill_forms_in(fx: &AidFixture) -> Result<()> {
    let agent = fx.spawn(|_| {
        // SAFETY: a new group led by this process.
        unsafe { libc::setpgid(0, 0) };
        let me = proc::getpid() as i64;
        let (rx, tx) = proc::pipe()?;
        let same = winch_member(1, tx.as_raw_fd(), false)?;
        let other = winch_member(2, tx.as_raw_fd(), true)?;
        // SAFETY: also set from here, so the group exists before we signal it.
        unsafe { libc::setpgid(other.pid(), other.pid()) };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let read_one = || -> Result<[i64; 3]> {
            let mut buf = [0u8; 24];
            proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())?;
            let v: Vec<i64> = buf.chunks(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap())).collect();
            Ok([v[0], v[1], v[2]])
        };
        // kill(0): our group, us included; not the member in its own group.
        // SAFETY: signal calls.
        let r = raw(unsafe { libc::kill(0, libc::SIGWINCH) } as libc::c_long);
        ensure_eq!(show(r), "0", "kill(0, SIGWINCH)");
        ensure_eq!(read_one()?, [1, 0, me], "kill(0): the member of our group");
        ensure_eq!(winch_pending(), true, "kill(0): SIGWINCH pending for ourselves");
        wait_signal(&[libc::SIGWINCH])?;
        // kill(-pgid) of the other group, its leader alive.
        // SAFETY: signal call.
        let r = raw(unsafe { libc::kill(-other.pid(), libc::SIGWINCH) } as libc::c_long);
        ensure_eq!(show(r), "0", "kill(-pgid of a group whose leader is alive)");
        ensure_eq!(read_one()?, [2, 0, me], "kill(-pgid): its leader");
        // kill(-1): everyone in the AID but us.
        // SAFETY: signal call.
        let r = raw(unsafe { libc::kill(-1, libc::SIGWINCH) } as libc::c_long);
        ensure_eq!(show(r), "0", "kill(-1, SIGWINCH)");
        let mut got = [read_one()?, read_one()?];
        got.sort();
        ensure_eq!(got, [[1, 1, me], [2, 1, me]], "kill(-1): both members");
        ensure_eq!(winch_pending(), false, "kill(-1): SIGWINCH pending for the caller");
        drop((same, other));
        Ok(())
    })?;
    agent.finish(step_timeout())
}

/// Whether SIGWINCH is pending for the calling thread or its process.
fn winch_pending() -> bool {
    // SAFETY: sigpending fills the set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGWINCH) == 1
    }
}

fn wait4_waitid_forms_virtual() -> Result<()> {
    for_each_flavor("waits", wait4_waitid_forms_in)
}

fn wait4_waitid_forms_in(fx: &AidFixture) -> Result<()> {
    let range = fx.range();
    let agent = fx.spawn(|_| {
        // SAFETY: a group of our own, so wait4(0) and P_PGID 0 mean it.
        unsafe { libc::setpgid(0, 0) };
        let mut wrong = Vec::new();
        // (form, child in its own group?)
        let forms: &[(&str, bool)] = &[
            ("wait4(pid)", false),
            ("wait4(0)", false),
            ("wait4(-1)", false),
            ("wait4(-pgid)", true),
            ("waitid(P_PID)", false),
            ("waitid(P_PGID, pgid)", true),
            ("waitid(P_PGID, 0)", false),
            ("waitid(P_ALL)", false),
            ("waitid(P_PID, WNOWAIT) then wait4(pid)", false),
        ];
        for (i, &(form, own_group)) in forms.iter().enumerate() {
            let code = 10 + i as i32;
            let (go_rx, go_tx) = proc::pipe()?;
            let (go, go_w) = (go_rx.as_raw_fd(), go_tx.as_raw_fd());
            // SAFETY: the child only makes async-signal-safe calls and `_exit`s.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: as above; closing our copy of the write end lets EOF arrive.
                unsafe {
                    libc::close(go_w);
                    if own_group {
                        libc::setpgid(0, 0);
                    }
                    let mut b = [0u8];
                    libc::read(go, b.as_mut_ptr().cast(), 1);
                    libc::_exit(code);
                }
            }
            if child < 0 {
                return Err(Errno::last()).context("fork");
            }
            if own_group {
                // SAFETY: on our child, before it exits.
                unsafe { libc::setpgid(child, child) };
            }
            // Nothing has exited yet: WNOHANG answers 0.
            // SAFETY: valid out pointer.
            let early = unsafe { libc::wait4(child, std::ptr::null_mut(), libc::WNOHANG, std::ptr::null_mut()) };
            if early != 0 {
                wrong.push(format!("{form}: wait4(WNOHANG) before the exit = {}", show(raw(early as libc::c_long))));
            }
            drop((go_rx, go_tx));
            let mut status = 0;
            // SAFETY: a zeroed siginfo is a valid out buffer.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let idinfo = |info: &libc::siginfo_t| -> (i64, i64) {
                // SAFETY: waitid filled a SIGCHLD siginfo.
                unsafe { (info.si_pid() as i64, info.si_status() as i64) }
            };
            // SAFETY: valid out pointers throughout.
            let (ret, got_code) = unsafe {
                match form {
                    "wait4(pid)" => (libc::wait4(child, &mut status, 0, std::ptr::null_mut()) as i64, -1),
                    "wait4(0)" => (libc::wait4(0, &mut status, 0, std::ptr::null_mut()) as i64, -1),
                    "wait4(-1)" => (libc::wait4(-1, &mut status, 0, std::ptr::null_mut()) as i64, -1),
                    "wait4(-pgid)" => (libc::wait4(-child, &mut status, 0, std::ptr::null_mut()) as i64, -1),
                    "waitid(P_PID)" => {
                        let r = libc::waitid(libc::P_PID, child as u32, &mut info, libc::WEXITED);
                        if r < 0 { (raw(-1), -1) } else { idinfo(&info) }
                    }
                    "waitid(P_PGID, pgid)" => {
                        let r = libc::waitid(libc::P_PGID, child as u32, &mut info, libc::WEXITED);
                        if r < 0 { (raw(-1), -1) } else { idinfo(&info) }
                    }
                    "waitid(P_PGID, 0)" => {
                        let r = libc::waitid(libc::P_PGID, 0, &mut info, libc::WEXITED);
                        if r < 0 { (raw(-1), -1) } else { idinfo(&info) }
                    }
                    "waitid(P_ALL)" => {
                        let r = libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED);
                        if r < 0 { (raw(-1), -1) } else { idinfo(&info) }
                    }
                    _ => {
                        let r = libc::waitid(libc::P_PID, child as u32, &mut info, libc::WEXITED | libc::WNOWAIT);
                        let (peek, _) = if r < 0 { (raw(-1), -1) } else { idinfo(&info) };
                        if peek != child as i64 {
                            wrong.push(format!("{form}: WNOWAIT si_pid {}", show(peek)));
                        }
                        (libc::wait4(child, &mut status, 0, std::ptr::null_mut()) as i64, -1)
                    }
                }
            };
            let got_code = if got_code < 0 { libc::WEXITSTATUS(status) as i64 } else { got_code };
            if ret != child as i64 || got_code != code as i64 {
                wrong.push(format!(
                    "{form}: returned {} status {got_code}, want child {child} status {code}",
                    show(ret)
                ));
            }
            if let Err(e) = expect_in_range(child as i64, range, form) {
                wrong.push(e.to_string());
            }
        }
        // Nothing left: ECHILD, as natively.
        // SAFETY: no out pointers.
        let r = raw(unsafe { libc::wait4(-1, std::ptr::null_mut(), libc::WNOHANG, std::ptr::null_mut()) } as libc::c_long);
        if r != -(libc::ECHILD as i64) {
            wrong.push(format!("wait4(-1) with no child left = {}", show(r)));
        }
        if !wrong.is_empty() {
            bail!("{}", wrong.join("; "));
        }
        Ok(())
    })?;
    agent.finish(step_timeout())
}
