//! Unmodified programs under PID virtualization (issue #4): `pidprobe` (qemu-tests/c/,
//! a static and a dynamic glibc build) and busybox `sh`, run with `appshotctl run`
//! inside AIDs with and without a virtual PID range, and outside every AID while an AID
//! is active. Inside, what they see must be one consistent virtual world; outside,
//! nothing changes; bad arguments fail with the same errno everywhere.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

use super::Test;
use crate::check::{step_timeout, Errno};
use crate::cmd::{self, APPSHOTCTL};
use crate::device::{unique_name, AidGuard, Device};
use crate::ensure_eq;
use crate::fixtures::GO;
use crate::proc;
use crate::virt::{register, spawn_in_aid, RANGE};

pub const TESTS: &[Test] = &[
    Test::new(
        "programs/pidprobe_outside_sees_system_ids",
        pidprobe_outside_sees_system_ids,
    ),
    Test::new(
        "programs/pidprobe_no_range_world_consistent",
        pidprobe_no_range_world_consistent,
    ),
    Test::new(
        "programs/pidprobe_range_world_virtual",
        pidprobe_range_world_virtual,
    ),
    Test::new(
        "programs/pidprobe_errno_same_inside_and_outside",
        pidprobe_errno_same_inside_and_outside,
    ),
    Test::new(
        "programs/busybox_sh_pids_kill_wait_job_control",
        busybox_sh_pids_kill_wait_job_control,
    ),
    Test::new(
        "programs/compat_si_pid_i386_x32",
        compat_si_pid_i386_x32,
    ),
];

const PROBES: [&str; 2] = [
    "/usr/libexec/appshot/pidprobe-static",
    "/usr/libexec/appshot/pidprobe-dynamic",
];

/// `key=value` lines as a map of numbers (`ok` -> 0 is never needed here).
fn parse(out: &str) -> Result<BTreeMap<String, i64>> {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("line {line:?}"))?;
        if k == "fatal" {
            bail!("pidprobe: {v}");
        }
        map.insert(k.to_string(), v.trim().parse().unwrap_or(i64::MIN));
    }
    Ok(map)
}

/// Runs `argv` and returns its stdout, failing on a non-zero status.
fn stdout_of(argv: &[&str]) -> Result<String> {
    Ok(cmd::run(argv, step_timeout())?.ok()?.stdout)
}

/// Runs `probe MODE` through `appshotctl run NAME --create [--pid-range]`; returns its
/// output and removes the AID.
fn probe_in_aid(probe: &str, mode: &str, range: Option<(u32, u32)>) -> Result<String> {
    let name = unique_name("probe");
    let range_arg = range.map(|(a, b)| format!("{a}-{b}"));
    let mut argv = vec![APPSHOTCTL, "run", &name, "--create"];
    if let Some(r) = &range_arg {
        argv.extend(["--pid-range", r]);
    }
    argv.extend(["--", probe, mode]);
    let out = cmd::run(&argv, step_timeout());
    let dev = Device::open()?;
    let _g = AidGuard::adopt_by_name(&dev, &name);
    Ok(out?.ok()?.stdout)
}

/// The relations every run of `pidprobe world` must show, wherever it runs.
fn check_consistent(w: &BTreeMap<String, i64>, what: &str) -> Result<()> {
    let v = |k: &str| w.get(k).copied().unwrap_or(i64::MIN);
    let pid = v("pid_libc");
    for (key, want) in [
        ("pid_sys", pid),
        ("tid", pid),
        ("ppid_sys", v("ppid_libc")),
        ("child_pid", v("fork_ret")),
        ("child_pid_sys", v("fork_ret")),
        ("child_ppid", pid),
        ("sigchld_si_pid", v("fork_ret")),
        ("waitpid_ret", v("fork_ret")),
        ("waitpid_status", 7),
        ("vfork_child_pid", v("vfork_ret")),
        ("vfork_wait_ret", v("vfork_ret")),
        ("thread_pid", pid),
        ("pthread_kill", 0),
        ("pthread_kill_tid", v("thread_tid")),
        ("pthread_kill_si_pid", pid),
        ("raise", 0),
        ("raise_si_pid", pid),
        ("kill_self", 0),
        ("kill_self_si_pid", pid),
    ] {
        if v(key) != want {
            bail!("{what}: {key}={} but expected {want} (output {w:?})", v(key));
        }
    }
    if v("thread_tid") == pid || v("fork_ret") <= 0 || pid <= 0 {
        bail!("{what}: implausible IDs {w:?}");
    }
    Ok(())
}

fn pidprobe_outside_sees_system_ids() -> Result<()> {
    // An AID with a range is active (a process of it alive) the whole time.
    let dev = Device::open()?;
    let g = register(&dev, "probe-active", Some(RANGE))?;
    let inside = spawn_in_aid(&dev, g.aid, |chan| {
        chan.recv(step_timeout() * 4)?;
        Ok(())
    })?;
    for probe in PROBES {
        let w = parse(&stdout_of(&[probe, "world"])?)?;
        check_consistent(&w, probe)?;
        let v = |k: &str| w.get(k).copied().unwrap_or(i64::MIN);
        ensure_eq!(v("pid_libc"), v("system_pid"), "{probe} outside: getpid vs /proc");
        ensure_eq!(v("ppid_libc"), v("system_ppid"), "{probe} outside: getppid vs /proc");
        ensure_eq!(v("fork_ret"), v("child_system_pid"), "{probe} outside: fork's return vs /proc");
        ensure_eq!(v("thread_tid"), v("thread_system_tid"), "{probe} outside: a thread's TID vs /proc");
        ensure_eq!(v("ppid_libc"), proc::getpid() as i64, "{probe} outside: getppid vs its parent");
    }
    inside.send(GO)?;
    inside.finish(step_timeout())
}

fn pidprobe_no_range_world_consistent() -> Result<()> {
    for probe in PROBES {
        let w = parse(&probe_in_aid(probe, "world", None)?)?;
        let what = format!("{probe} in an AID without a range");
        check_consistent(&w, &what)?;
        let v = |k: &str| w.get(k).copied().unwrap_or(i64::MIN);
        // Every system ID was free in the fresh AID: virtual = system.
        ensure_eq!(v("pid_libc"), v("system_pid"), "{what}: getpid vs /proc");
        ensure_eq!(v("fork_ret"), v("child_system_pid"), "{what}: fork's return vs /proc");
        ensure_eq!(v("thread_tid"), v("thread_system_tid"), "{what}: a thread's TID vs /proc");
        ensure_eq!(v("ppid_libc"), 0, "{what}: getppid (its parent, the test, is outside)");
        // cmd::spawn makes it the leader of its own group; its session is led from outside.
        ensure_eq!(v("pgrp"), v("pid_libc"), "{what}: getpgrp (it leads its group)");
        ensure_eq!(v("sid"), 0, "{what}: getsid (session led from outside)");
    }
    Ok(())
}

fn pidprobe_range_world_virtual() -> Result<()> {
    let (min, max) = RANGE;
    for probe in PROBES {
        let w = parse(&probe_in_aid(probe, "world", Some(RANGE))?)?;
        let what = format!("{probe} in an AID with range {min}-{max}");
        check_consistent(&w, &what)?;
        let v = |k: &str| w.get(k).copied().unwrap_or(i64::MIN);
        for key in ["pid_libc", "fork_ret", "vfork_ret", "thread_tid"] {
            if !(min as i64..=max as i64).contains(&v(key)) {
                bail!("{what}: {key}={} is outside the range (output {w:?})", v(key));
            }
        }
        for (seen, system) in [
            ("pid_libc", "system_pid"),
            ("fork_ret", "child_system_pid"),
            ("thread_tid", "thread_system_tid"),
        ] {
            if v(seen) == v(system) {
                bail!("{what}: {seen} is the system ID {}", v(system));
            }
        }
        ensure_eq!(v("ppid_libc"), 0, "{what}: getppid (its parent, the test, is outside)");
        // cmd::spawn makes it the leader of its own group; its session is led from outside.
        ensure_eq!(v("pgrp"), v("pid_libc"), "{what}: getpgrp (it leads its group)");
        ensure_eq!(v("sid"), 0, "{what}: getsid (session led from outside)");
    }
    Ok(())
}

fn pidprobe_errno_same_inside_and_outside() -> Result<()> {
    for probe in PROBES {
        let native = stdout_of(&[probe, "errno"])?;
        if !native.contains("kill_badsig=22") || !native.contains("kill_self_zero=ok") {
            bail!("{probe} errno outside every AID looks wrong: {native:?}");
        }
        for range in [None, Some(RANGE)] {
            let inside = probe_in_aid(probe, "errno", range)?;
            if inside != native {
                let diff: Vec<String> = native
                    .lines()
                    .zip(inside.lines())
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("{a} outside, {b} inside"))
                    .collect();
                bail!(
                    "{probe} errno in an AID (range {range:?}) differs from outside: {} (line counts {} / {})",
                    diff.join(", "),
                    native.lines().count(),
                    inside.lines().count()
                );
            }
        }
    }
    Ok(())
}

/// Opens a pseudo-terminal: (master, slave path).
fn open_pty() -> Result<(OwnedFd, CString)> {
    // SAFETY: plain pty calls; ptsname's buffer is copied at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(Errno::last()).context("posix_openpt");
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::grantpt(master.as_raw_fd()) < 0 || libc::unlockpt(master.as_raw_fd()) < 0 {
            return Err(Errno::last()).context("grantpt/unlockpt");
        }
        let name = libc::ptsname(master.as_raw_fd());
        if name.is_null() {
            return Err(Errno::last()).context("ptsname");
        }
        Ok((master, std::ffi::CStr::from_ptr(name).to_owned()))
    }
}

/// The busybox job: its own PID (and the system one, read by the shell itself from
/// /proc), a background job killed and waited for, a job-control group (a subshell
/// leading a `sleep`) killed with `kill -TERM -PGID` while its leader is alive, a child
/// shell's $PPID and $$.
const SH_SCRIPT: &str = r#"set -m
echo self=$$
read -r line < /proc/self/stat; echo self_sys=${line%% *}
sleep 100 & bg=$!; echo bg=$bg
kill $bg; wait $bg; echo bg_status=$?
(sleep 100; true) & grp=$!; echo grp=$grp
sleep 1
kill -0 $grp && echo leader_alive=1
kill -TERM -$grp; echo kill_grp=$?
wait $grp; echo grp_status=$?
sh -c 'echo child_ppid=$PPID; echo child_self=$$'
echo done=1
"#;

fn busybox_sh_pids_kill_wait_job_control() -> Result<()> {
    let (min, max) = RANGE;
    let name = unique_name("bbsh");
    let range = format!("{min}-{max}");
    let (master, slave) = open_pty()?;
    let argv: Vec<CString> = [
        APPSHOTCTL, "run", &name, "--create", "--pid-range", &range, "--", "/bin/sh", "-c",
        SH_SCRIPT,
    ]
    .iter()
    .map(|a| CString::new(*a))
    .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // A new session whose controlling terminal is the pty: what job control needs.
    let mut shell = proc::fork(|| {
        // SAFETY: async-signal-safe calls on this child, then exec.
        unsafe {
            libc::setsid();
            let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                return 120;
            }
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            libc::execv(ptrs[0], ptrs.as_ptr());
            127
        }
    })?;
    let mut lines = Vec::new();
    let mut values = BTreeMap::new();
    let result = (|| -> Result<()> {
        while !values.contains_key("done") {
            let line = proc::read_line_timeout(master.as_raw_fd(), step_timeout())
                .with_context(|| format!("shell output so far {lines:?}"))?;
            let line = line.trim_end_matches('\r').to_string();
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.to_string(), v.parse::<i64>().unwrap_or(i64::MIN));
            }
            lines.push(line);
        }
        Ok(())
    })();
    let dev = Device::open()?;
    let _g = AidGuard::adopt_by_name(&dev, &name);
    let status = shell.wait(step_timeout());
    result?;
    ensure_eq!(status?, proc::Status::Exited(0), "the shell's exit ({lines:?})");
    let v = |k: &str| values.get(k).copied().unwrap_or(i64::MIN);
    let in_range = |k: &str| (min as i64..=max as i64).contains(&v(k));
    for key in ["self", "bg", "grp", "child_self", "child_ppid"] {
        if !in_range(key) {
            bail!("busybox sh in an AID: {key}={} is not a virtual PID of the range ({lines:?})", v(key));
        }
    }
    if v("self") == v("self_sys") {
        bail!("busybox sh: $$ is its system PID ({lines:?})");
    }
    ensure_eq!(v("bg_status"), 128 + 15, "`wait $!` after `kill $!` ({lines:?})");
    ensure_eq!(v("leader_alive"), 1, "`kill -0` of the job's leader ({lines:?})");
    ensure_eq!(v("kill_grp"), 0, "`kill -TERM -PGID` of the job ({lines:?})");
    ensure_eq!(v("grp_status"), 128 + 15, "`wait` for the killed job ({lines:?})");
    ensure_eq!(v("child_ppid"), v("self"), "$PPID of a child shell ({lines:?})");
    Ok(())
}

/// The i386 and x32 builds of `compat_siginfo` (qemu-tests/c/): freestanding programs
/// that signal themselves and read `si_pid` in their `SA_SIGINFO` handler's frame and
/// from `rt_sigtimedwait`, both written in the compat layout.
const COMPAT_PROBES: [&str; 2] = [
    "/usr/libexec/appshot/compat_siginfo-i386",
    "/usr/libexec/appshot/compat_siginfo-x32",
];

/// Defect: `si_pid` reached i386 and x32 processes untranslated, as the system PID: their
/// signal frames and the compat `rt_sigtimedwait` write the siginfo through
/// `copy_siginfo_to_user32`, which appshot did not see. A process that signals itself
/// must read its own (virtual) PID there, as natively; outside any AID, its system PID.
fn compat_si_pid_i386_x32() -> Result<()> {
    for probe in COMPAT_PROBES {
        let runs = [
            ("outside any AID", stdout_of(&[probe])?),
            ("in an AID with a PID range", probe_in_aid(probe, "", Some(RANGE))?),
            ("in an AID without a range", probe_in_aid(probe, "", None)?),
        ];
        for (setting, out) in runs {
            let w = parse(&out).with_context(|| format!("{probe} {setting}"))?;
            let v = |k: &str| w.get(k).copied().with_context(|| format!("{probe} {setting}: no {k} in {out:?}"));
            let pid = v("pid")?;
            ensure_eq!(v("handler_signo")?, i64::from(libc::SIGUSR1), "{probe} {setting}: handler_signo");
            ensure_eq!(v("handler_si_pid")?, pid, "{probe} {setting}: si_pid in the handler's frame (its own PID)");
            ensure_eq!(v("wait_ret")?, i64::from(libc::SIGUSR2), "{probe} {setting}: rt_sigtimedwait");
            ensure_eq!(v("wait_si_pid")?, pid, "{probe} {setting}: si_pid from rt_sigtimedwait (its own PID)");
            if probe.ends_with("-i386") {
                ensure_eq!(v("wait32_ret")?, i64::from(libc::SIGUSR2), "{probe} {setting}: rt_sigtimedwait_time32");
                ensure_eq!(v("wait32_si_pid")?, pid, "{probe} {setting}: si_pid from rt_sigtimedwait_time32 (its own PID)");
            }
            if setting.contains("PID range") {
                crate::virt::expect_in_range(pid, Some(RANGE), &format!("{probe} {setting}: getpid"))?;
            }
        }
    }
    Ok(())
}
