//! The PID-taking system calls from inside an AID, with a virtual PID range and without
//! one (issue #4):
//! given a process's virtual PID they act on that process, which the test confirms
//! through /proc under its system PID (not virtualized): affinity, nice values (by
//! process and by group), scheduling policy and attributes, resource limits, pidfds,
//! I/O priority, cross-process memory access, kcmp, and the signal-0 probes.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::step_timeout;
use crate::proc;
use crate::virt::{self, expect_own_id, raw, show};

pub const TESTS: &[Test] = &[Test::new(
    "pid_calls/virtual_pid_reaches_the_right_process",
    virtual_pid_reaches_the_right_process,
)];

/// The value of `Key:` in /proc/PID/status.
fn status_field(pid: i32, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// The soft and hard "Max open files" of /proc/PID/limits.
fn nofile_limits(pid: i32) -> Result<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no Max open files line")?;
    let f: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    Ok((f[0].to_string(), f[1].to_string()))
}

/// Whether system call `nr` exists in this kernel (ENOSYS otherwise): ioprio needs
/// CONFIG_BLOCK, process_vm_* CONFIG_CROSS_MEMORY_ATTACH.
fn native_enosys(nr: libc::c_long, args: [libc::c_long; 3]) -> bool {
    // SAFETY: probes with harmless arguments on the calling process.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    r < 0 && crate::check::Errno::last().0 == libc::ENOSYS
}

fn virtual_pid_reaches_the_right_process() -> Result<()> {
    let no_ioprio = native_enosys(libc::SYS_ioprio_get, [1, 0, 0]);
    let no_process_vm = native_enosys(libc::SYS_process_vm_readv, [0, 0, 0]);
    if no_ioprio || no_process_vm {
        crate::diag!(
            "this kernel lacks {}{}: those calls are only checked to answer ENOSYS inside the AID too",
            if no_ioprio { "ioprio_* (CONFIG_BLOCK) " } else { "" },
            if no_process_vm { "process_vm_* (CONFIG_CROSS_MEMORY_ATTACH)" } else { "" }
        );
    }
    for_each_flavor("calls", |fx| reach_the_right_process(fx, no_ioprio, no_process_vm))
}

fn reach_the_right_process(fx: &AidFixture, no_ioprio: bool, no_process_vm: bool) -> Result<()> {
    let range = fx.range();
    let agent = fx.spawn(move |_| {
        // The target T: its own group, reports (virtual, system), then sleeps. Its
        // memory holds MAGIC at the same address as ours (a fork's copy).
        let magic: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0x5eed_0001)));
        let magic_addr = magic.as_ptr() as usize;
        let (rx, tx) = proc::pipe()?;
        let tx_fd = tx.as_raw_fd();
        let mut target = proc::fork(move || {
            // SAFETY: a group of our own.
            unsafe { libc::setpgid(0, 0) };
            magic.store(0x5eed_0002, Ordering::SeqCst);
            let v = [proc::getpid() as i64, virt::system_pid().unwrap_or(-1) as i64];
            proc::write_raw(tx_fd, &v.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>());
            proc::sleep_forever()
        })?;
        let mut buf = [0u8; 16];
        proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())?;
        let v = i64::from_ne_bytes(buf[..8].try_into().unwrap()) as i32;
        let s = i64::from_ne_bytes(buf[8..].try_into().unwrap()) as i32;
        // SAFETY: setpgid on our child (it may have done it already).
        unsafe { libc::setpgid(v, v) };
        if v != target.pid() {
            bail!("target: fork returned {}, it sees {v}, system {s}", target.pid());
        }
        expect_own_id(i64::from(v), i64::from(s), range, "the target's getpid vs its system PID")?;
        let me = proc::getpid();
        let mut wrong: Vec<String> = Vec::new();
        let mut check = |what: &str, ok: bool, detail: String| {
            if !ok {
                wrong.push(format!("{what}: {detail}"));
            }
        };
        let cpu_size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: every pointer below refers to a live local of the right type.
        unsafe {
            // Signal-0 probes.
            let mut info: libc::siginfo_t = std::mem::zeroed();
            info.si_code = libc::SI_QUEUE;
            for (what, r) in [
                ("kill(v, 0)", raw(libc::syscall(libc::SYS_kill, v, 0))),
                ("kill(-v, 0)", raw(libc::syscall(libc::SYS_kill, -v, 0))),
                ("tkill(v, 0)", raw(libc::syscall(libc::SYS_tkill, v, 0))),
                ("tgkill(v, v, 0)", raw(libc::syscall(libc::SYS_tgkill, v, v, 0))),
                ("rt_sigqueueinfo(v, 0)", raw(libc::syscall(libc::SYS_rt_sigqueueinfo, v, 0, &info))),
                ("rt_tgsigqueueinfo(v, v, 0)", raw(libc::syscall(libc::SYS_rt_tgsigqueueinfo, v, v, 0, &info))),
            ] {
                check(what, r == 0, show(r));
            }
            // Process group and session.
            let r = raw(libc::syscall(libc::SYS_getpgid, v));
            check("getpgid(v)", r == v as i64, show(r));
            let r = raw(libc::syscall(libc::SYS_getsid, v));
            check("getsid(v) (session led outside the AID)", r == 0, show(r));
            // Affinity: CPU 0 only.
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut one);
            let r = raw(libc::syscall(libc::SYS_sched_setaffinity, v, cpu_size, &one));
            check("sched_setaffinity(v, {0})", r == 0, show(r));
            let allowed = status_field(s, "Cpus_allowed_list:")?;
            check("Cpus_allowed_list of the target after sched_setaffinity", allowed == "0", allowed);
            let mut got: libc::cpu_set_t = std::mem::zeroed();
            let r = raw(libc::syscall(libc::SYS_sched_getaffinity, v, cpu_size, &mut got));
            check(
                "sched_getaffinity(v)",
                r > 0 && libc::CPU_ISSET(0, &got) && libc::CPU_COUNT(&got) == 1,
                format!("{} with {} CPUs", show(r), libc::CPU_COUNT(&got)),
            );
            // Nice value by process, then by group.
            let r = raw(libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, v, 3));
            check("setpriority(PRIO_PROCESS, v, 3)", r == 0, show(r));
            let nice = virt::stat_of(s, 19)?;
            check("nice of the target", nice == 3, nice.to_string());
            let r = raw(libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, v));
            check("getpriority(PRIO_PROCESS, v) (raw: 20 - nice)", r == 17, show(r));
            let r = raw(libc::syscall(libc::SYS_setpriority, libc::PRIO_PGRP, v, 5));
            check("setpriority(PRIO_PGRP, v, 5)", r == 0, show(r));
            let nice = virt::stat_of(s, 19)?;
            check("nice of the group leader", nice == 5, nice.to_string());
            let r = raw(libc::syscall(libc::SYS_getpriority, libc::PRIO_PGRP, v));
            check("getpriority(PRIO_PGRP, v)", r == 15, show(r));
            // Policy and parameters.
            let param = libc::sched_param { sched_priority: 0 };
            let r = raw(libc::syscall(libc::SYS_sched_setscheduler, v, libc::SCHED_BATCH, &param));
            check("sched_setscheduler(v, SCHED_BATCH)", r == 0, show(r));
            let policy = virt::stat_of(s, 41)?;
            check("policy of the target", policy == libc::SCHED_BATCH, policy.to_string());
            let r = raw(libc::syscall(libc::SYS_sched_getscheduler, v));
            check("sched_getscheduler(v)", r == libc::SCHED_BATCH as i64, show(r));
            let r = raw(libc::syscall(libc::SYS_sched_setparam, v, &param));
            check("sched_setparam(v)", r == 0, show(r));
            let mut p = libc::sched_param { sched_priority: -1 };
            let r = raw(libc::syscall(libc::SYS_sched_getparam, v, &mut p));
            check("sched_getparam(v)", r == 0 && p.sched_priority == 0, format!("{} prio {}", show(r), p.sched_priority));
            let mut ts = libc::timespec { tv_sec: -1, tv_nsec: 0 };
            let r = raw(libc::syscall(libc::SYS_sched_rr_get_interval, v, &mut ts));
            check("sched_rr_get_interval(v)", r == 0 && ts.tv_sec >= 0, show(r));
            // sched_attr: size, policy, flags (u64), nice, priority, ...
            let mut attr = [0u32; 14];
            attr[0] = 56;
            attr[1] = libc::SCHED_OTHER as u32;
            attr[4] = 7;
            let r = raw(libc::syscall(libc::SYS_sched_setattr, v, attr.as_ptr(), 0));
            check("sched_setattr(v, SCHED_OTHER nice 7)", r == 0, show(r));
            let nice = virt::stat_of(s, 19)?;
            check("nice after sched_setattr", nice == 7, nice.to_string());
            let mut out = [0u32; 14];
            let r = raw(libc::syscall(libc::SYS_sched_getattr, v, out.as_mut_ptr(), 56, 0));
            check("sched_getattr(v)", r == 0 && out[4] == 7 && out[1] == 0, format!("{} {:?}", show(r), &out[..6]));
            // Resource limits.
            let new = libc::rlimit { rlim_cur: 100, rlim_max: 200 };
            let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            let r = raw(libc::syscall(libc::SYS_prlimit64, v, libc::RLIMIT_NOFILE, &new, &mut old));
            check("prlimit64(v, set)", r == 0, show(r));
            let limits = nofile_limits(s)?;
            check("the target's open-file limits", limits == ("100".into(), "200".into()), format!("{limits:?}"));
            let r = raw(libc::syscall(libc::SYS_prlimit64, v, libc::RLIMIT_NOFILE, 0usize, &mut old));
            check("prlimit64(v, get)", r == 0 && old.rlim_cur == 100 && old.rlim_max == 200, show(r));
            // pidfd: fdinfo names the process by its system PID (/proc is not virtualized).
            let r = raw(libc::syscall(libc::SYS_pidfd_open, v, 0));
            check("pidfd_open(v)", r >= 0, show(r));
            if r >= 0 {
                let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{r}"))?;
                let pid = fdinfo.lines().find_map(|l| l.strip_prefix("Pid:")).map(str::trim).unwrap_or("");
                check("the pidfd's process", pid == s.to_string(), format!("Pid: {pid}, want {s}"));
                libc::close(r as i32);
            }
            // I/O priority (IOPRIO_WHO_PROCESS = 1, IOPRIO_WHO_PGRP = 2).
            let prio = (2 << 13) | 4; // best effort, level 4
            let r = raw(libc::syscall(libc::SYS_ioprio_set, 1, v, prio));
            let r2 = raw(libc::syscall(libc::SYS_ioprio_get, 1, v));
            let r3 = raw(libc::syscall(libc::SYS_ioprio_get, 2, v));
            if no_ioprio {
                let all = [r, r2, r3];
                check("ioprio_* (ENOSYS natively)", all.iter().all(|&x| x == -(libc::ENOSYS as i64)), format!("{all:?}"));
            } else {
                check("ioprio_set(PROCESS, v)", r == 0, show(r));
                check("ioprio_get(PROCESS, v)", r2 == prio, show(r2));
                check("ioprio_get(PGRP, v)", r3 == prio, show(r3));
            }
            // Cross-process memory: read the target's MAGIC, write it, read it back.
            let mut word_cell = 0u64;
            let word_ptr = &mut word_cell as *mut u64;
            let local = libc::iovec { iov_base: word_ptr as *mut libc::c_void, iov_len: 8 };
            let remote = libc::iovec { iov_base: magic_addr as *mut libc::c_void, iov_len: 8 };
            let r = raw(libc::syscall(libc::SYS_process_vm_readv, v, &local, 1, &remote, 1, 0));
            if no_process_vm {
                check("process_vm_readv (ENOSYS natively)", r == -(libc::ENOSYS as i64), show(r));
                let r = raw(libc::syscall(libc::SYS_process_vm_writev, v, &local, 1, &remote, 1, 0));
                check("process_vm_writev (ENOSYS natively)", r == -(libc::ENOSYS as i64), show(r));
            } else {
                let word = word_ptr.read_volatile();
                check("process_vm_readv(v)", r == 8 && word == 0x5eed_0002, format!("{} {word:#x}", show(r)));
                word_ptr.write_volatile(0x5eed_0003);
                let r = raw(libc::syscall(libc::SYS_process_vm_writev, v, &local, 1, &remote, 1, 0));
                check("process_vm_writev(v)", r == 8, show(r));
                word_ptr.write_volatile(0);
                let r = raw(libc::syscall(libc::SYS_process_vm_readv, v, &local, 1, &remote, 1, 0));
                let word = word_ptr.read_volatile();
                check("process_vm_readv after the write", r == 8 && word == 0x5eed_0003, format!("{word:#x}"));
            }
            // kcmp (KCMP_FILE = 0, KCMP_VM = 1): same stdin file, different memory.
            let r = raw(libc::syscall(libc::SYS_kcmp, v, me, 0, 0, 0));
            check("kcmp(v, me, KCMP_FILE, 0, 0) (inherited stdin)", r == 0, show(r));
            let r = raw(libc::syscall(libc::SYS_kcmp, v, v, 1, 0, 0));
            check("kcmp(v, v, KCMP_VM)", r == 0, show(r));
            let r = raw(libc::syscall(libc::SYS_kcmp, v, me, 1, 0, 0));
            check("kcmp(v, me, KCMP_VM) (a fork's own memory)", r > 0, show(r));
        }
        target.kill()?;
        if !wrong.is_empty() {
            bail!("{}", wrong.join("; "));
        }
        Ok(())
    })?;
    agent.finish(step_timeout())
}
