//! Ways around appshot's translation (issue #9): the same system calls reached with
//! arguments or through entries the module does not look at. A process of an AID must
//! not reach a process outside it by system PID, nor see a system ID, whichever way it
//! asks:
//! - selector arguments (`which`, `idtype`) are C `int`s: the kernel reads only their
//!   low 32 bits, whatever the upper half of the register holds;
//! - a 64-bit process can make i386 system calls (`int $0x80`) and x32 ones
//!   (`syscall` with `__X32_SYSCALL_BIT`), which run other kernel entry points;
//! - `setns` into another PID namespace is the same escape as `unshare(CLONE_NEWPID)`;
//! - `clone3` reads its flags from user memory, which another thread can change between
//!   appshot's check and the kernel's own read.
//!
//! Each test checks what the fixed module must do and says which defect it covers. The
//! outside process a test tries to reach is alive and has a system PID below `pid_max`.
//! Every test runs in an AID with a virtual range above it ([`RANGE`](crate::virt::RANGE)),
//! so the two never coincide, and in one without a range.

use std::arch::asm;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Test;
use crate::aid_fixture::for_each_flavor;
use crate::check::{secs, step_timeout, sys, Errno};
use crate::proc;
use crate::virt::{self, expect_in_range, raw, show};

pub const TESTS: &[Test] = &[
    Test::new("bypass/priority_which_high_bits", priority_which_high_bits),
    Test::new("bypass/waitid_idtype_high_bits", waitid_idtype_high_bits),
    Test::new("bypass/ia32_ids_and_signals", ia32_ids_and_signals),
    Test::new("bypass/ia32_waits", ia32_waits),
    Test::new("bypass/x32_ids_and_signals", x32_ids_and_signals),
    Test::new("bypass/x32_waits", x32_waits),
    Test::new("bypass/fcntl_every_entry", fcntl_every_entry),
    Test::new("bypass/ipc_i386_entries", ipc_i386_entries),
    Test::new("bypass/ipc_i386_stat_buffer_never_system", ipc_i386_stat_buffer_never_system),
    Test::new(
        "bypass/setns_pid_namespace_einval",
        setns_pid_namespace_einval,
    ),
    Test::new("bypass/clone3_newpid_flag_race", clone3_newpid_flag_race).costs(21),
];

/// Set in the upper half of a selector register: the kernel never sees it.
const HIGH: i64 = 1 << 32;

/// `-errno` as [`raw`] gives it.
fn neg(errno: i32) -> i64 {
    -(errno as i64)
}

/// The differences from what the fixed module must answer, reported all at once.
struct Wrong(Vec<String>);

impl Wrong {
    fn new() -> Wrong {
        Wrong(Vec::new())
    }

    /// `what` gave `got`, the fixed module gives `want`.
    fn expect(&mut self, what: impl AsRef<str>, got: i64, want: i64) {
        if got != want {
            self.0.push(format!(
                "{} = {} (want {})",
                what.as_ref(),
                show(got),
                show(want)
            ));
        }
    }

    /// A condition with what was seen.
    fn check(&mut self, what: impl AsRef<str>, ok: bool, seen: impl AsRef<str>) {
        if !ok {
            self.0.push(format!("{}: {}", what.as_ref(), seen.as_ref()));
        }
    }

    fn finish(self, context: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        bail!("{context}: {}", self.0.join("; "))
    }
}

/// Whether system call `nr` exists in this kernel (ENOSYS otherwise): ioprio needs
/// CONFIG_BLOCK, which the test kernel lacks.
fn native_enosys(nr: libc::c_long, args: [libc::c_long; 3]) -> bool {
    // SAFETY: probes with harmless arguments on the calling process.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    r < 0 && Errno::last().0 == libc::ENOSYS
}

/// Forks a sibling that leads its own process group and sleeps; returns it (fork's
/// return is its PID as the caller sees it) and its system PID.
fn sleeping_group_leader() -> Result<(proc::Child, i32)> {
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    let child = proc::fork(move || {
        // SAFETY: a group of its own.
        unsafe { libc::setpgid(0, 0) };
        let system = virt::system_pid().unwrap_or(-1) as i64;
        proc::write_raw(tx_fd, &system.to_ne_bytes());
        proc::sleep_forever()
    })?;
    drop(tx);
    let mut buf = [0u8; 8];
    proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())
        .context("the sibling's system PID")?;
    // SAFETY: setpgid on our child (it may have done it already).
    unsafe { libc::setpgid(child.pid(), child.pid()) };
    Ok((child, i64::from_ne_bytes(buf) as i32))
}

/// Forks a child that exits with `code` at once (leading its own process group with
/// `own_group`) and waits until it is a zombie: (fork's return, its system PID). The
/// caller must be single-threaded (the child reads /proc before it exits).
fn zombie_child(code: i32, own_group: bool) -> Result<(i32, i32)> {
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    // SAFETY: the child writes a pipe and `_exit`s, never returning into our frames.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        if own_group {
            // SAFETY: a group of its own.
            unsafe { libc::setpgid(0, 0) };
        }
        let system = virt::system_pid().unwrap_or(-1) as i64;
        proc::write_raw(tx_fd, &system.to_ne_bytes());
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return Err(Errno::last()).context("fork");
    }
    drop(tx);
    let mut buf = [0u8; 8];
    proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())
        .context("the child's system PID")?;
    let system = i64::from_ne_bytes(buf) as i32;
    proc::wait_for_zombie(system)?;
    Ok((pid, system))
}

/// Waits until system PID `system` is gone (reaped); false if it is still there.
fn reaped(system: i32) -> bool {
    crate::check::eventually(Duration::from_secs(2), "reaped", || {
        Ok(proc::state_of(system).is_none())
    })
    .is_ok()
}

// ---------------------------------------------------------------------------------
// issue #9 section 1: selectors are C ints.

/// issue #9 section 1: the `which` of getpriority/setpriority (and of
/// ioprio_get/ioprio_set) is a C `int`; the kernel reads its low 32 bits. appshot
/// compared the whole 64-bit register with PRIO_PROCESS/PRIO_PGRP, so
/// `(1 << 32) | PRIO_PROCESS` went through untranslated: a system PID reached (and could
/// renice) a process outside the AID, a virtual PID reached nobody. Fixed: the same as
/// the plain selector, ESRCH for the outsider, the sibling's nice for its virtual PID.
fn priority_which_high_bits() -> Result<()> {
    let no_ioprio = native_enosys(libc::SYS_ioprio_get, [1, 0, 0]);
    if no_ioprio {
        crate::diag!(
            "this kernel has no ioprio_get/ioprio_set (ENOSYS natively, no CONFIG_BLOCK): the ioprio part is skipped"
        );
    }
    // The outsider: a process outside every AID, leading its own group, nice 4.
    let (outsider, s) = sleeping_group_leader()?;
    // SAFETY: setpriority with integer arguments, on our child.
    sys(unsafe { libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, s, 4) })
        .context("setpriority(PRIO_PROCESS, outsider, 4)")?;
    let outsider_nice = virt::stat_of(s, 19)?;
    // Premise: natively the kernel ignores the upper half of `which`.
    // SAFETY: getpriority with integer arguments.
    let (plain, high) = unsafe {
        (
            raw(libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, s)),
            raw(libc::syscall(
                libc::SYS_getpriority,
                HIGH | libc::PRIO_PROCESS as i64,
                s,
            )),
        )
    };
    if plain != 20 - outsider_nice as i64 || high != plain {
        bail!(
            "premise: outside every AID getpriority(PRIO_PROCESS, {s}) = {}, with (1 << 32) | PRIO_PROCESS {} (nice {outsider_nice}): the kernel should read an int",
            show(plain),
            show(high)
        );
    }
    let prio = (2 << 13) | 4; // IOPRIO_CLASS_BE, level 4
    let result = for_each_flavor("whichbits", |fx| {
        let agent = fx.spawn(move |_| {
        let (sibling, t) = sleeping_group_leader()?;
        let v = sibling.pid() as i64;
        let s = s as i64;
        let mut wrong = Wrong::new();
        let process = HIGH | libc::PRIO_PROCESS as i64;
        let pgrp = HIGH | libc::PRIO_PGRP as i64;
        // SAFETY (every call below): getpriority/setpriority/ioprio_* take integers.
        let call =
            |nr: libc::c_long, a: i64, b: i64, c: i64| raw(unsafe { libc::syscall(nr, a, b, c) });
        let plain = call(libc::SYS_getpriority, libc::PRIO_PROCESS as i64, s, 0);
        if plain != neg(libc::ESRCH) {
            bail!("getpriority(PRIO_PROCESS, {s}) (outside the AID) = {}: want ESRCH before anything else", show(plain));
        }
        // The outsider, by its system PID: nobody in the AID.
        let r = call(libc::SYS_getpriority, process, s, 0);
        wrong.expect(
            format!("getpriority((1 << 32) | PRIO_PROCESS, {s} outside)"),
            r,
            plain,
        );
        let r = call(libc::SYS_getpriority, pgrp, s, 0);
        wrong.expect(
            format!("getpriority((1 << 32) | PRIO_PGRP, {s} outside)"),
            r,
            neg(libc::ESRCH),
        );
        let r = call(libc::SYS_setpriority, process, s, 11);
        wrong.expect(
            format!("setpriority((1 << 32) | PRIO_PROCESS, {s} outside, 11)"),
            r,
            neg(libc::ESRCH),
        );
        let r = call(libc::SYS_setpriority, pgrp, s, 12);
        wrong.expect(
            format!("setpriority((1 << 32) | PRIO_PGRP, {s} outside, 12)"),
            r,
            neg(libc::ESRCH),
        );
        let nice = virt::stat_of(s as i32, 19)?;
        wrong.check(
            "the outsider's nice (/proc) after those calls",
            nice == outsider_nice,
            format!("{nice}, was {outsider_nice}"),
        );
        // The sibling, by its virtual PID: reached.
        let nice = virt::stat_of(t, 19)?;
        let r = call(libc::SYS_getpriority, process, v, 0);
        wrong.expect(
            format!("getpriority((1 << 32) | PRIO_PROCESS, {v} sibling with nice {nice})"),
            r,
            20 - nice as i64,
        );
        let r = call(libc::SYS_setpriority, process, v, 9);
        wrong.expect(
            format!("setpriority((1 << 32) | PRIO_PROCESS, {v} sibling, 9)"),
            r,
            0,
        );
        let nice = virt::stat_of(t, 19)?;
        wrong.check(
            "the sibling's nice (/proc) after that",
            nice == 9,
            nice.to_string(),
        );
        let r = call(libc::SYS_getpriority, pgrp, v, 0);
        wrong.expect(
            format!("getpriority((1 << 32) | PRIO_PGRP, {v} sibling's group, nice {nice})"),
            r,
            20 - nice as i64,
        );
        let r = call(libc::SYS_setpriority, pgrp, v, 13);
        wrong.expect(
            format!("setpriority((1 << 32) | PRIO_PGRP, {v} sibling's group, 13)"),
            r,
            0,
        );
        let nice = virt::stat_of(t, 19)?;
        wrong.check(
            "the sibling's nice (/proc) after that",
            nice == 13,
            nice.to_string(),
        );
        if !no_ioprio {
            let who = HIGH | 1; // IOPRIO_WHO_PROCESS
            let before = call(libc::SYS_ioprio_get, 1, s, 0);
            wrong.expect(
                format!("ioprio_get(IOPRIO_WHO_PROCESS, {s} outside)"),
                before,
                neg(libc::ESRCH),
            );
            let r = call(libc::SYS_ioprio_get, who, s, 0);
            wrong.expect(
                format!("ioprio_get((1 << 32) | IOPRIO_WHO_PROCESS, {s} outside)"),
                r,
                neg(libc::ESRCH),
            );
            let r = call(libc::SYS_ioprio_set, who, s, prio);
            wrong.expect(
                format!("ioprio_set((1 << 32) | IOPRIO_WHO_PROCESS, {s} outside)"),
                r,
                neg(libc::ESRCH),
            );
            let r = call(libc::SYS_ioprio_set, who, v, prio);
            wrong.expect(
                format!("ioprio_set((1 << 32) | IOPRIO_WHO_PROCESS, {v} sibling)"),
                r,
                0,
            );
            let r = call(libc::SYS_ioprio_get, 1, v, 0);
            wrong.expect(
                format!("ioprio_get(IOPRIO_WHO_PROCESS, {v} sibling) after that"),
                r,
                prio,
            );
            let r = call(libc::SYS_ioprio_get, who, v, 0);
            wrong.expect(
                format!("ioprio_get((1 << 32) | IOPRIO_WHO_PROCESS, {v} sibling)"),
                r,
                prio,
            );
        }
        drop(sibling);
        wrong.finish("selector (1 << 32) | X from inside the AID")
    })?;
        agent.finish(step_timeout())
    });
    let nice = virt::stat_of(s, 19)?;
    drop(outsider);
    result?;
    crate::ensure_eq!(
        nice,
        outsider_nice,
        "the outsider's nice at the end (/proc/{s}/stat)"
    );
    Ok(())
}

/// `waitid(idtype, id, &info, WEXITED | WNOHANG, NULL)`: the result and (si_pid,
/// si_status).
fn waitid_now(idtype: i64, id: i64) -> (i64, i32, i32) {
    // SAFETY: a zeroed siginfo_t is a valid out-buffer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with a valid siginfo pointer and no rusage.
    let r = raw(unsafe {
        libc::syscall(
            libc::SYS_waitid,
            idtype,
            id,
            &mut info as *mut libc::siginfo_t,
            libc::WEXITED | libc::WNOHANG,
            0usize,
        )
    });
    // SAFETY: the kernel filled the siginfo, or it is still zeroed.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    (r, pid, status)
}

/// Reaps zombie children through waitid with `(1 << 32) | P_PID` and
/// `(1 << 32) | P_PGID`. In an AID with a range (`system_names_nobody`), a child's
/// system PID must first name nobody (ECHILD, the child left alone).
fn reap_with_high_idtype(context: &str, system_names_nobody: bool) -> Result<()> {
    let mut wrong = Wrong::new();
    for (idtype, name, code, own_group) in [
        (libc::P_PID, "P_PID", 7, false),
        (libc::P_PGID, "P_PGID", 8, true),
    ] {
        let idtype = HIGH | idtype as i64;
        let (pid, system) = zombie_child(code, own_group)?;
        if system_names_nobody {
            let (r, _, _) = waitid_now(idtype, i64::from(system));
            let what = format!(
                "waitid((1 << 32) | {name}, {system} = the system PID of a zombie child {pid}, WEXITED | WNOHANG)"
            );
            wrong.expect(&what, r, neg(libc::ECHILD));
            wrong.check(
                format!("{what}: the child"),
                proc::state_of(system) == Some('Z'),
                "reaped by its system PID",
            );
            if proc::state_of(system).is_none() {
                continue;
            }
        }
        let (r, si_pid, status) = waitid_now(idtype, i64::from(pid));
        let what = format!(
            "waitid((1 << 32) | {name}, {pid} = a zombie child (system PID {system}), WEXITED | WNOHANG)"
        );
        wrong.expect(&what, r, 0);
        if r == 0 {
            wrong.check(
                format!("{what}: si_pid"),
                si_pid == pid,
                format!("{si_pid}, want {pid}"),
            );
            wrong.check(
                format!("{what}: si_status"),
                status == code,
                format!("{status}, want {code}"),
            );
        }
        wrong.check(
            format!("{what}: the child reaped"),
            reaped(system),
            "still there",
        );
    }
    wrong.finish(context)
}

/// issue #9 section 1: the `idtype` of waitid is a C `int`. appshot compared the whole
/// register with P_PID/P_PGID, so with `(1 << 32) | P_PID` the ID reached the kernel
/// untranslated: a child could not be waited for by its virtual PID (ECHILD) but could
/// by its system PID. Fixed: the virtual PID reaps the child, `si_pid` shows it, and the
/// system PID names nobody (ECHILD).
fn waitid_idtype_high_bits() -> Result<()> {
    // Premise: natively (outside every AID) the kernel reads the int.
    proc::in_child(step_timeout(), || {
        reap_with_high_idtype("outside every AID", false)
    })
    .context("premise")?;
    for_each_flavor("idtype", |fx| {
        let range = fx.range();
        fx.spawn(|_| reap_with_high_idtype("inside the AID", range.is_some()))?
            .finish(step_timeout())
    })
}

// ---------------------------------------------------------------------------------
// issue #9 sections 2 and 3: the i386 and x32 entries of a 64-bit process.

/// `int $0x80` from this 64-bit process: i386 system call `nr` with six 32-bit arguments
/// (ebx, ecx, edx, esi, edi, ebp); the result as [`raw`] gives it.
///
/// # Safety
/// As for the system call made; pointer arguments must lie below 4 GiB.
unsafe fn int80(nr: u32, a: [u32; 6]) -> i64 {
    let ret: u64;
    // rbx and rbp cannot be asm operands (LLVM reserves them): the arguments for them
    // travel in r12/r13 and are exchanged in and out around the instruction, so both
    // hold their own values again when the block ends.
    // SAFETY: the caller vouches for the system call; every register the block changes
    // is declared or restored.
    unsafe {
        asm!(
            "xchg r12, rbx",
            "xchg r13, rbp",
            "int 0x80",
            "xchg r13, rbp",
            "xchg r12, rbx",
            inout("r12") u64::from(a[0]) => _,
            inout("r13") u64::from(a[5]) => _,
            inout("rax") u64::from(nr) => ret,
            in("rcx") u64::from(a[1]),
            in("rdx") u64::from(a[2]),
            in("rsi") u64::from(a[3]),
            in("rdi") u64::from(a[4]),
            // Kernels before 4.17 zeroed these on int $0x80.
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    i64::from(ret as u32 as i32)
}

/// `__X32_SYSCALL_BIT`.
const X32_SYSCALL_BIT: u64 = 0x4000_0000;

/// The x32 system call `nr` (without the bit) from this 64-bit process.
///
/// # Safety
/// As for the system call made; compat pointer arguments must lie below 4 GiB.
unsafe fn x32(nr: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the system call; `syscall` clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr | X32_SYSCALL_BIT => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A non-native system call entry of a 64-bit process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// `int $0x80`, the i386 table (`__ia32_sys_*`).
    Ia32,
    /// `syscall` with `__X32_SYSCALL_BIT`, the x32 table.
    X32,
}

/// The calls the tests make through an [`Abi`].
#[derive(Clone, Copy)]
enum Nr {
    Getpid,
    Gettid,
    Getppid,
    Getpgid,
    Getsid,
    Kill,
    Tgkill,
    Getpriority,
    SchedGetscheduler,
    /// i386 `waitid` (compat siginfo), x32 `waitid` (529, compat siginfo).
    Waitid,
    /// i386 `waitpid(pid, status, options)`, x32 `wait4(pid, status, options, NULL)`.
    Wait,
}

impl Abi {
    fn name(self) -> &'static str {
        match self {
            Abi::Ia32 => "int $0x80",
            Abi::X32 => "x32",
        }
    }

    /// The call's number in this ABI's table (arch/x86/entry/syscalls/syscall_{32,64}.tbl).
    fn nr(self, call: Nr) -> u64 {
        match (self, call) {
            (Abi::Ia32, Nr::Getpid) => 20,
            (Abi::Ia32, Nr::Gettid) => 224,
            (Abi::Ia32, Nr::Getppid) => 64,
            (Abi::Ia32, Nr::Getpgid) => 132,
            (Abi::Ia32, Nr::Getsid) => 147,
            (Abi::Ia32, Nr::Kill) => 37,
            (Abi::Ia32, Nr::Tgkill) => 270,
            (Abi::Ia32, Nr::Getpriority) => 96,
            (Abi::Ia32, Nr::SchedGetscheduler) => 157,
            (Abi::Ia32, Nr::Waitid) => 284,
            (Abi::Ia32, Nr::Wait) => 7,
            (Abi::X32, Nr::Getpid) => 39,
            (Abi::X32, Nr::Gettid) => 186,
            (Abi::X32, Nr::Getppid) => 110,
            (Abi::X32, Nr::Getpgid) => 121,
            (Abi::X32, Nr::Getsid) => 124,
            (Abi::X32, Nr::Kill) => 62,
            (Abi::X32, Nr::Tgkill) => 234,
            (Abi::X32, Nr::Getpriority) => 140,
            (Abi::X32, Nr::SchedGetscheduler) => 145,
            (Abi::X32, Nr::Waitid) => 529,
            (Abi::X32, Nr::Wait) => 61,
        }
    }

    /// Makes `call` with `args` (the rest 0) through this entry.
    ///
    /// # Safety
    /// As for the system call; pointers below 4 GiB.
    unsafe fn call(self, call: Nr, args: &[i64]) -> i64 {
        let mut a = [0u64; 6];
        for (slot, &arg) in a.iter_mut().zip(args) {
            *slot = arg as u64;
        }
        // SAFETY: forwarded to the caller.
        unsafe {
            match self {
                Abi::Ia32 => int80(self.nr(call) as u32, a.map(|x| x as u32)),
                Abi::X32 => x32(self.nr(call), a),
            }
        }
    }

    /// Fails unless the entry works here: outside every AID its getpid is the system PID.
    fn expect_available(self) -> Result<()> {
        // SAFETY: getpid through the entry; no arguments.
        let got = unsafe { self.call(Nr::Getpid, &[]) };
        let want = i64::from(proc::getpid());
        if got != want {
            bail!(
                "premise: {} getpid() outside every AID = {} (want {want}): does the kernel have {}?",
                self.name(),
                show(got),
                match self {
                    Abi::Ia32 => "CONFIG_IA32_EMULATION (and no ia32_emulation=0)",
                    Abi::X32 => "CONFIG_X86_X32_ABI (and no syscall.x32=n)",
                }
            );
        }
        Ok(())
    }
}

/// issue #10 section 1 through the i386 `ipc(2)` multiplexer, whose `IPC_STAT` writes the
/// old layout (and whose `SEMCTL` reads the buffer's address from user memory): a second
/// thread watching the buffer never sees a system PID there, only the poison and the
/// virtual PID (16 bits in the old layout). The kernel writes into a scratch area; the
/// caller's buffer is written once, translated.
fn ipc_i386_stat_buffer_never_system() -> Result<()> {
    Abi::Ia32.expect_available()?;
    let fx = crate::aid_fixture::AidFixture::new("ipc-i386-race", crate::aid_fixture::Flavor::Range)?;
    fx.spawn(|_| {
        let page = LowPage::new()?;
        let buf = page.addr() as u32;
        let me = proc::getpid();
        // SAFETY: integers only.
        let shm = unsafe { int80(I386_SHMGET, [0, 4096, (libc::IPC_CREAT | 0o600) as u32, 0, 0, 0]) };
        if shm < 0 {
            bail!("i386 shmget: {}", show(shm));
        }
        let system = virt::system_tid().unwrap_or(-1);
        if system == me {
            bail!("premise: the virtual PID {me} equals the system one");
        }
        page.poison();
        struct Watched(*const u8);
        // SAFETY: the watcher only reads, with volatile loads, a page that outlives it
        // (joined below before the page is dropped).
        unsafe impl Send for Watched {}
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (at, stop) = (Watched(page.0), stop.clone());
            std::thread::spawn(move || {
                let at = at;
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: inside the page; a volatile read of the old layout's shm_cpid.
                    seen.insert(unsafe { at.0.add(32).cast::<u16>().read_volatile() });
                }
                seen
            })
        };
        for i in 0..1000 {
            // SAFETY: IPC_STAT (old layout) into our low page.
            let r = unsafe { int80(I386_IPC, [IPC_SHMCTL, shm as u32, libc::IPC_STAT as u32, 0, buf, 0]) };
            if r != 0 {
                stop.store(true, Ordering::Relaxed);
                let _ = watcher.join();
                bail!("ipc(SHMCTL, IPC_STAT) {i}: {}", show(r));
            }
        }
        stop.store(true, Ordering::Relaxed);
        let seen = watcher.join().map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { int80(I386_SHMCTL, [shm as u32, libc::IPC_RMID as u32, 0, 0, 0, 0]) };
        let allowed = [0xffff, me as u16];
        if !seen.iter().all(|v| allowed.contains(v)) {
            bail!("shm_cpid values a second thread saw: {seen:?} (only 0xffff and {} may appear; system PID {system})", me as u16);
        }
        Ok(())
    })?
    .finish(crate::check::secs(120))
}

/// A page below 4 GiB (`MAP_32BIT`): compat entries take 32-bit pointers.
struct LowPage(*mut u8);

impl LowPage {
    const SIZE: usize = 4096;

    fn new() -> Result<LowPage> {
        let p = proc::map_anonymous(Self::SIZE, libc::MAP_32BIT).context("mmap(MAP_32BIT)")?;
        let page = LowPage(p.cast());
        if page.addr() + Self::SIZE as i64 > 1 << 32 {
            bail!("mmap(MAP_32BIT) gave {:#x}, above 4 GiB", page.addr());
        }
        Ok(page)
    }

    fn addr(&self) -> i64 {
        self.0 as i64
    }

    /// Fills the page with 0xff bytes (-1 ints), so a field the kernel did not write
    /// shows.
    fn poison(&self) {
        // SAFETY: the page is ours and writable.
        unsafe { std::ptr::write_bytes(self.0, 0xff, Self::SIZE) };
    }

    /// Writes `bytes` at `offset`.
    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= Self::SIZE);
        // SAFETY: inside the page, which is ours and writable.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.add(offset), bytes.len()) };
    }

    fn i32_at(&self, offset: usize) -> i32 {
        assert!(offset + 4 <= Self::SIZE);
        // SAFETY: inside the page; the kernel writes it only during our own calls.
        unsafe { self.0.add(offset).cast::<i32>().read_volatile() }
    }
}

impl Drop for LowPage {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once.
        unsafe { libc::munmap(self.0.cast(), Self::SIZE) };
    }
}

/// Offsets in a compat (i386/x32) siginfo: si_pid after three ints, then si_uid,
/// si_status.
const COMPAT_SI_PID: usize = 12;
const COMPAT_SI_STATUS: usize = 20;

/// IDs, signals, priorities through `abi` from inside an AID with a range: every call
/// must answer what the same call through the 64-bit entry answers (virtualized), which
/// the test checks first to be the PID-namespace answer.
fn abi_ids_and_signals(abi: Abi) -> Result<()> {
    abi.expect_available()?;
    let outside = i64::from(proc::getpid());
    for_each_flavor("abi", |fx| {
        let range = fx.range();
        let agent = fx.spawn(move |_| {
            // Its own session and group: their IDs are then its virtual PID, not 0.
            // SAFETY: setsid has no preconditions (this process leads no group).
            sys(unsafe { libc::setsid() }).context("setsid")?;
            let (sibling, _) = sleeping_group_leader()?;
            let v = i64::from(sibling.pid());
            let s = outside;
            let sys64 = |nr: libc::c_long, a: i64, b: i64, c: i64| {
                // SAFETY: calls with integer arguments only.
                raw(unsafe { libc::syscall(nr, a, b, c) })
            };
            // SAFETY: calls with integer arguments only.
            let alt = |call: Nr, args: &[i64]| unsafe { abi.call(call, args) };
            // The 64-bit entry's answers (virtualized), checked first to be what a PID
            // namespace gives: the other entry must give the same.
            // SAFETY: getppid has no preconditions.
            let ppid = i64::from(unsafe { libc::getppid() });
            let own = [
                ("getpid()", i64::from(proc::getpid())),
                ("gettid()", i64::from(proc::gettid())),
                ("getppid()", ppid),
                ("getpgid(0)", sys64(libc::SYS_getpgid, 0, 0, 0)),
                ("getsid(0)", sys64(libc::SYS_getsid, 0, 0, 0)),
            ];
            let kill_sibling = sys64(libc::SYS_kill, v, 0, 0);
            let kill_outside = sys64(libc::SYS_kill, s, 0, 0);
            let mut premise = Wrong::new();
            for (name, value) in own {
                premise.check(
                    format!("{name} through the 64-bit entry"),
                    expect_in_range(value, range, name).is_ok(),
                    format!("{} is not a virtual ID of the range", show(value)),
                );
            }
            premise.expect(
                format!("kill({v} sibling, 0) through the 64-bit entry"),
                kill_sibling,
                0,
            );
            premise.expect(
                format!("kill({s} outside, 0) through the 64-bit entry"),
                kill_outside,
                neg(libc::ESRCH),
            );
            premise.finish("premise, the 64-bit entry in the AID")?;
            // (what, through `abi`, through the 64-bit entry)
            let prio = libc::PRIO_PROCESS as i64;
            let mut calls: Vec<(String, i64, i64)> = vec![
                ("getpid()".into(), alt(Nr::Getpid, &[]), own[0].1),
                ("gettid()".into(), alt(Nr::Gettid, &[]), own[1].1),
                ("getppid()".into(), alt(Nr::Getppid, &[]), own[2].1),
                ("getpgid(0)".into(), alt(Nr::Getpgid, &[0]), own[3].1),
                ("getsid(0)".into(), alt(Nr::Getsid, &[0]), own[4].1),
                (
                    format!("kill({v} sibling, 0)"),
                    alt(Nr::Kill, &[v, 0]),
                    kill_sibling,
                ),
                (
                    format!("kill({s} outside, 0)"),
                    alt(Nr::Kill, &[s, 0]),
                    kill_outside,
                ),
            ];
            for (name, target) in [("sibling", v), ("outside", s)] {
                calls.extend([
                    (
                        format!("getpgid({target} {name})"),
                        alt(Nr::Getpgid, &[target]),
                        sys64(libc::SYS_getpgid, target, 0, 0),
                    ),
                    (
                        format!("tgkill({target}, {target} {name}, 0)"),
                        alt(Nr::Tgkill, &[target, target, 0]),
                        sys64(libc::SYS_tgkill, target, target, 0),
                    ),
                    (
                        format!("getpriority(PRIO_PROCESS, {target} {name})"),
                        alt(Nr::Getpriority, &[prio, target]),
                        sys64(libc::SYS_getpriority, prio, target, 0),
                    ),
                    (
                        format!("sched_getscheduler({target} {name})"),
                        alt(Nr::SchedGetscheduler, &[target]),
                        sys64(libc::SYS_sched_getscheduler, target, 0, 0),
                    ),
                ]);
            }
            drop(sibling);
            let mut wrong = Wrong::new();
            for (what, got, want) in &calls {
                wrong.expect(format!("{} {what}", abi.name()), *got, *want);
            }
            wrong.finish(&format!(
                "{} from inside the AID (want = the 64-bit entry's answer)",
                abi.name()
            ))
        })?;
        agent.finish(step_timeout())
    })
}

/// Reaps two zombie children through `abi`: `waitid(P_PID, pid, compat siginfo)` and
/// `waitpid`/`wait4(pid)`; each must reap the child fork named, and show it by that PID.
/// Pointers are in a page below 4 GiB.
fn abi_reaps(abi: Abi, context: &str) -> Result<()> {
    let page = LowPage::new()?;
    let mut wrong = Wrong::new();
    // waitid(P_PID, pid, infop, WEXITED | WNOHANG, NULL)
    let (pid, system) = zombie_child(7, false)?;
    page.poison();
    // SAFETY: infop is the low page; no rusage.
    let r = unsafe {
        abi.call(
            Nr::Waitid,
            &[
                libc::P_PID as i64,
                i64::from(pid),
                page.addr(),
                i64::from(libc::WEXITED | libc::WNOHANG),
                0,
            ],
        )
    };
    let what = format!(
        "{} waitid(P_PID, {pid} = a zombie child (system PID {system}))",
        abi.name()
    );
    wrong.expect(&what, r, 0);
    if r == 0 {
        let (si_pid, status) = (page.i32_at(COMPAT_SI_PID), page.i32_at(COMPAT_SI_STATUS));
        wrong.check(
            format!("{what}: compat si_pid"),
            si_pid == pid,
            format!("{si_pid}, want {pid}"),
        );
        wrong.check(
            format!("{what}: compat si_status"),
            status == 7,
            format!("{status}, want 7"),
        );
    }
    wrong.check(
        format!("{what}: the child reaped"),
        reaped(system),
        "still there",
    );
    // waitpid(pid, &status, WNOHANG) / wait4(pid, &status, WNOHANG, NULL)
    let (pid, system) = zombie_child(8, false)?;
    page.poison();
    // SAFETY: the status word is in the low page; no rusage.
    let r = unsafe {
        abi.call(
            Nr::Wait,
            &[i64::from(pid), page.addr(), i64::from(libc::WNOHANG), 0],
        )
    };
    let what = format!(
        "{} {}({pid} = a zombie child (system PID {system}))",
        abi.name(),
        if abi == Abi::Ia32 { "waitpid" } else { "wait4" }
    );
    wrong.expect(&what, r, i64::from(pid));
    if r > 0 {
        let status = page.i32_at(0);
        wrong.check(
            format!("{what}: status"),
            status == 8 << 8,
            format!("{status:#x}, want {:#x}", 8 << 8),
        );
    }
    wrong.check(
        format!("{what}: the child reaped"),
        reaped(system),
        "still there",
    );
    wrong.finish(context)
}

/// Waits for children through `abi`: natively first (so the layout and the pointers are
/// right), then inside an AID with a range and one without.
fn abi_waits(abi: Abi) -> Result<()> {
    abi.expect_available()?;
    proc::in_child(step_timeout(), || abi_reaps(abi, "outside every AID")).context("premise")?;
    for_each_flavor("abiwait", |fx| {
        fx.spawn(|_| abi_reaps(abi, "inside the AID"))?
            .finish(step_timeout())
    })
}

/// issue #9 section 2: `int $0x80` from a 64-bit process runs the i386 table
/// (`__ia32_sys_*`), which appshot did not hook: getpid/gettid/getppid/getpgid/getsid
/// showed system IDs, kill/tgkill/getpriority/sched_getscheduler reached processes
/// outside the AID by system PID and missed the AID's by virtual PID.
fn ia32_ids_and_signals() -> Result<()> {
    abi_ids_and_signals(Abi::Ia32)
}

/// issue #9 section 2: i386 waitid (compat siginfo, si_pid at byte 12) and waitpid
/// through `int $0x80` took virtual PIDs as system ones: a child of the caller could not
/// be reaped by its PID (ECHILD) and si_pid was a system PID.
fn ia32_waits() -> Result<()> {
    abi_waits(Abi::Ia32)
}

/// issue #9 section 3: x32 system calls (`syscall` with `__X32_SYSCALL_BIT` set in rax)
/// from a 64-bit process run the same `__x64_sys_*` functions appshot hooks, but its
/// table lookup used the full number (bit included) and let them run natively: system
/// IDs shown, outsiders reached, the AID's processes missed.
fn x32_ids_and_signals() -> Result<()> {
    abi_ids_and_signals(Abi::X32)
}

/// issue #9 section 3: x32 waitid (529, compat_sys_waitid: compat siginfo) and wait4
/// (61, `__x64_sys_wait4` under the x32 number) ran natively: ECHILD for a child's
/// virtual PID.
fn x32_waits() -> Result<()> {
    abi_waits(Abi::X32)
}

// ---------------------------------------------------------------------------------
// issue #9 section 4: setns.

/// `readlink(path)` as text.
fn link_text(path: &str) -> Result<String> {
    Ok(std::fs::read_link(path)
        .with_context(|| format!("readlink {path}"))?
        .to_string_lossy()
        .into_owned())
}

/// setns into the PID namespace of `member` three ways: its ns file with CLONE_NEWPID,
/// with 0 (any type), and the pidfd `pidfd` with CLONE_NEWPID.
fn setns_three_ways(member: i32, pidfd: RawFd) -> Result<Vec<(String, i64)>> {
    let path = format!("/proc/{member}/ns/pid");
    let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    let fd = ns.as_raw_fd();
    // SAFETY: setns on descriptors this process holds.
    unsafe {
        Ok(vec![
            (
                format!("setns(open({path}), CLONE_NEWPID)"),
                raw(libc::setns(fd, libc::CLONE_NEWPID) as libc::c_long),
            ),
            (
                format!("setns(open({path}), 0)"),
                raw(libc::setns(fd, 0) as libc::c_long),
            ),
            (
                format!("setns(pidfd of {member}, CLONE_NEWPID)"),
                raw(libc::setns(pidfd, libc::CLONE_NEWPID) as libc::c_long),
            ),
        ])
    }
}

/// issue #9 section 4: setns into another PID namespace was not refused inside an AID:
/// its children would then be created in a nested namespace, the escape
/// `unshare(CLONE_NEWPID)` and `clone(CLONE_NEWPID)` are refused for (EINVAL). Fixed:
/// EINVAL for a PID-namespace file (with CLONE_NEWPID or 0) and for a pidfd with
/// CLONE_NEWPID.
fn setns_pid_namespace_einval() -> Result<()> {
    // Outside every AID: a process that unshares CLONE_NEWPID and forks its first child,
    // which lives in the new namespace (as its PID 1) and dies with its parent; the
    // creator reaps it when the test kills it (by pidfd, at the end).
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    let creator = proc::fork(move || {
        // SAFETY: unshare and fork; the grandchild only makes async-signal-safe calls.
        let member = unsafe {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                neg(Errno::last().0)
            } else {
                let child = libc::fork();
                if child == 0 {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    proc::sleep_forever();
                }
                if child > 0 {
                    i64::from(child)
                } else {
                    neg(Errno::last().0)
                }
            }
        };
        proc::write_raw(tx_fd, &member.to_ne_bytes());
        if member > 0 {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            unsafe { libc::waitpid(member as i32, &mut status, 0) };
        }
        proc::sleep_forever()
    })?;
    drop(tx);
    let mut buf = [0u8; 8];
    proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())
        .context("the new namespace's first process")?;
    let member = i64::from_ne_bytes(buf);
    if member <= 0 {
        bail!(
            "premise: unshare(CLONE_NEWPID) then fork outside every AID: {}",
            show(member)
        );
    }
    let member = member as i32;
    let theirs = link_text(&format!("/proc/{member}/ns/pid"))?;
    let ours = link_text("/proc/self/ns/pid")?;
    if theirs == ours {
        bail!("premise: process {member} is in our PID namespace ({ours})");
    }
    // Its pidfd, opened out here (from inside an AID pidfd_open of a system PID is ESRCH,
    // by design) and inherited by the processes below.
    // SAFETY: pidfd_open with integer arguments.
    let pidfd = raw(unsafe { libc::syscall(libc::SYS_pidfd_open, member, 0) });
    if pidfd < 0 {
        bail!("pidfd_open({member}) outside every AID: {}", show(pidfd));
    }
    // SAFETY: a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let pidfd_raw = pidfd.as_raw_fd();
    // Premise: natively (outside every AID, root, in a throwaway process) all succeed.
    proc::in_child(step_timeout(), move || {
        let mut wrong = Wrong::new();
        for (what, r) in setns_three_ways(member, pidfd_raw)? {
            wrong.expect(what, r, 0);
        }
        wrong.finish("premise, outside every AID")
    })?;
    let result = for_each_flavor("setns", |fx| {
        let (theirs, ours) = (&theirs, &ours);
        fx.spawn(move |_| {
            let mut wrong = Wrong::new();
            for (what, r) in setns_three_ways(member, pidfd_raw)? {
                wrong.expect(what, r, neg(libc::EINVAL));
            }
            wrong.finish(&format!("inside the AID, into {theirs} (ours {ours})"))
        })?
        .finish(step_timeout())
    });
    // SAFETY: pidfd_send_signal(SIGKILL) on our pidfd, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            0usize,
            0u32,
        )
    };
    // Its parent reaps it; killed before that, the parent would leave it to the harness.
    reaped(member);
    drop(creator);
    drop(pidfd);
    result
}

// ---------------------------------------------------------------------------------
// issue #9 section 5: clone3's flags change under appshot's feet.

/// Exit status of a clone3 child that is in another PID namespace than its parent.
const ESCAPED: i32 = 42;
/// Exit status of a clone3 child that could not read its namespace.
const UNKNOWN_NS: i32 = 43;
/// `struct clone_args` (version 0, 64 bytes): flags, pidfd, child_tid, parent_tid,
/// exit_signal, stack, stack_size, tls.
type CloneArgs = [AtomicU64; 8];
const CLONE_ARGS_SIZE: usize = 64;
const EXIT_SIGNAL: usize = 4;

/// In a child made by clone3 (copy of one thread of a possibly multi-threaded process:
/// raw system calls only): exits at once, with [`ESCAPED`] when its PID namespace is not
/// `parent_ns`.
///
/// How it tells: `readlink("/proc/self/ns/pid")` names the namespace the task lives in
/// (its active one), and /proc, mounted in the initial namespace, resolves `self` for
/// any task. Its own PID would not do: getpid in an AID answers the virtual PID the
/// module linked the child under, not the 1 the new namespace gives it.
fn exit_reporting_namespace(parent_ns: &[u8]) -> ! {
    let mut buf = [0u8; 64];
    // SAFETY: readlink into a local buffer, then exit_group.
    unsafe {
        let n = libc::syscall(
            libc::SYS_readlink,
            c"/proc/self/ns/pid".as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        );
        let code = if n <= 0 {
            UNKNOWN_NS
        } else if &buf[..n as usize] != parent_ns {
            ESCAPED
        } else {
            0
        };
        libc::syscall(libc::SYS_exit_group, code);
        libc::_exit(code)
    }
}

/// One clone3 with `args`: the child reports its namespace ([`exit_reporting_namespace`])
/// and is reaped. `Ok(Ok(exit status))`, or `Ok(Err(errno))` when clone3 failed.
fn clone3_once(args: &CloneArgs, parent_ns: &[u8]) -> Result<Result<i32, i32>> {
    // SAFETY: clone3 without CLONE_VM: the child is a copy of this thread; it only runs
    // exit_reporting_namespace.
    let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), CLONE_ARGS_SIZE) };
    if r == 0 {
        exit_reporting_namespace(parent_ns);
    }
    if r < 0 {
        return Ok(Err(Errno::last().0));
    }
    let mut status = 0;
    // SAFETY: `r` is our child; `status` is a valid out-pointer.
    let w = unsafe { libc::wait4(r as i32, &mut status, 0, std::ptr::null_mut()) };
    if w != r as i32 {
        return Err(Errno::last()).with_context(|| format!("wait4({r}) = {w}"));
    }
    Ok(Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }))
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid out-buffer.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set and size; pid 0 is the calling thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    // SAFETY: reads bits of an initialized set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (best effort: the race only gets likelier).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed set with one bit; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The race runs until this many children were created (most calls that see
/// CLONE_NEWPID fail at once with EINVAL; a child costs a fork), for at most
/// [`RACE_SECONDS`].
const RACE_CHILDREN: i64 = 300;
const RACE_SECONDS: u64 = 10;
/// Where the race cannot be hit (one CPU, no preemption), at most this many calls.
const RACE_ATTEMPTS_UNWINNABLE: i64 = 3000;
/// Spin iterations the flipper holds each value of the flags for: short, so that flips
/// land inside the window often, and across loop iterations, so that the other CPU (or
/// a TCG vCPU switch) sees both values.
const FLIP_HOLD: u32 = 5;

/// What the race saw, in the order the agent sends it.
const RACE_FIELDS: [&str; 7] = [
    "attempts",
    "children in our namespace",
    "refused with EINVAL",
    "children in a new PID namespace",
    "other errors",
    "last other errno",
    "children with another status",
];

/// issue #9 section 5: appshot read clone3's `struct clone_args` once from user memory
/// to check `flags` for CLONE_NEWPID, then the kernel read it again in
/// `copy_clone_args_from_user`: another thread that sets CLONE_NEWPID between the two
/// reads gets a child in a new PID namespace past the check. Fixed: however the flags
/// change, a clone3 from an AID either refuses CLONE_NEWPID with EINVAL or creates a
/// child in the caller's namespace.
///
/// A race: one thread calls clone3 (flags 0, exit_signal SIGCHLD) in a loop while
/// another, on the other CPU, keeps flipping CLONE_NEWPID in the same structure; every
/// child reports its PID namespace and is reaped. It stops at the first escaped child,
/// after [`RACE_CHILDREN`] children or [`RACE_SECONDS`]. On today's module it fails only
/// when a flip lands in the window between the two reads (microseconds), so it may
/// pass by chance; it cannot fail at all on a guest with one CPU and a non-preemptible
/// kernel (the test kernel's PREEMPT_NONE, and the guest boots one CPU: no ACPI, and the
/// MP table lists only the boot CPU), where nothing runs between the two reads: there it
/// passes on today's module and only checks that every clone3 is either EINVAL or a child
/// in our namespace. After the fix it must always pass.
fn clone3_newpid_flag_race() -> Result<()> {
    let parent_ns = link_text("/proc/self/ns/pid")?;
    // Premise (outside every AID, in a throwaway process): the kernel lets root create a
    // child in a new PID namespace with clone3, and the child tells which it is in.
    let ns = parent_ns.clone();
    proc::in_child(step_timeout(), move || {
        let args: CloneArgs = Default::default();
        args[EXIT_SIGNAL].store(libc::SIGCHLD as u64, Ordering::Relaxed);
        let same = clone3_once(&args, ns.as_bytes())?;
        args[0].store(libc::CLONE_NEWPID as u64, Ordering::Relaxed);
        let new = clone3_once(&args, ns.as_bytes())?;
        if same != Ok(0) || new != Ok(ESCAPED) {
            bail!(
                "premise: clone3 outside every AID: flags 0 gave {same:?}, CLONE_NEWPID {new:?} (want Ok(0), Ok({ESCAPED}): child exit status)"
            );
        }
        Ok(())
    })?;
    let cpus = allowed_cpus();
    let preemptible = std::fs::read_to_string("/proc/sys/kernel/version")
        .map(|v| v.contains("PREEMPT"))
        .unwrap_or(false);
    let unwinnable = cpus.len() < 2 && !preemptible;
    if unwinnable {
        crate::diag!(
            "{} CPU and a kernel without preemption: nothing runs between appshot's read of the flags and the kernel's, so the race cannot be hit here (it needs 2 CPUs); only the outcome of each clone3 is checked",
            cpus.len()
        );
    }
    for_each_flavor("clone3race", |fx| {
        clone3_race_in(fx, &parent_ns, &cpus, unwinnable)
    })
}

/// The race of [`clone3_newpid_flag_race`] in `fx`'s AID.
fn clone3_race_in(
    fx: &crate::aid_fixture::AidFixture,
    parent_ns: &str,
    cpus: &[usize],
    unwinnable: bool,
) -> Result<()> {
    let ns = parent_ns.to_string();
    let cpus = cpus.to_vec();
    let mut agent = fx.spawn(move |chan| {
        let args: &'static CloneArgs = Box::leak(Box::default());
        args[EXIT_SIGNAL].store(libc::SIGCHLD as u64, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        if cpus.len() >= 2 {
            pin_to(cpus[0]);
        }
        let flipper = {
            let stop = stop.clone();
            let cpu = cpus.get(1).copied();
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(cpu);
                }
                let mut flips = 0u64;
                'flip: loop {
                    for value in [libc::CLONE_NEWPID as u64, 0] {
                        args[0].store(value, Ordering::Relaxed);
                        flips += 1;
                        for _ in 0..FLIP_HOLD {
                            if stop.load(Ordering::Relaxed) {
                                break 'flip;
                            }
                            std::hint::spin_loop();
                        }
                    }
                }
                args[0].store(0, Ordering::Relaxed);
                flips
            })
        };
        let mut tally = [0i64; RACE_FIELDS.len()];
        let start = Instant::now();
        let budget = secs(RACE_SECONDS);
        let mut failure = None;
        let max_attempts = if unwinnable {
            RACE_ATTEMPTS_UNWINNABLE
        } else {
            i64::MAX
        };
        let children = |t: &[i64]| t[1] + t[3] + t[6];
        while children(&tally) < RACE_CHILDREN
            && tally[0] < max_attempts
            && tally[3] == 0
            && start.elapsed() < budget
        {
            tally[0] += 1;
            match clone3_once(args, ns.as_bytes()) {
                Ok(Ok(0)) => tally[1] += 1,
                Ok(Err(libc::EINVAL)) => tally[2] += 1,
                Ok(Ok(ESCAPED)) => tally[3] += 1,
                Ok(Err(errno)) => {
                    tally[4] += 1;
                    tally[5] = i64::from(errno);
                }
                Ok(Ok(_)) => tally[6] += 1,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap_or(0);
        if let Some(e) = failure {
            return Err(e);
        }
        for v in tally {
            chan.send(v)?;
        }
        chan.send(flips as i64)?;
        chan.send(start.elapsed().as_millis() as i64)
    })?;
    let mut tally = Vec::new();
    for _ in 0..RACE_FIELDS.len() + 2 {
        tally.push(agent.recv_step()?);
    }
    agent.finish(step_timeout())?;
    let text: Vec<String> = RACE_FIELDS
        .iter()
        .zip(&tally)
        .map(|(name, v)| format!("{name} {v}"))
        .collect();
    let (flips, ms) = (tally[RACE_FIELDS.len()], tally[RACE_FIELDS.len() + 1]);
    crate::diag!("clone3 race: {} ({flips} flips, {ms} ms)", text.join(", "));
    if tally[3] != 0 || tally[4] != 0 || tally[6] != 0 {
        bail!(
            "clone3 with CLONE_NEWPID flipped in its flags from inside the AID (want only children in our namespace or EINVAL): {}",
            text.join(", ")
        );
    }
    if tally[2] == 0 {
        crate::diag!("no clone3 saw CLONE_NEWPID: the flipper did not run alongside, the race was not exercised");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// fcntl at every entry: the lock holder in F_GETLK, and the file owner.

/// A fresh memfd, write-locked whole (a POSIX lock of the calling process) when `lock`.
fn lock_file(lock: bool) -> Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is a new descriptor.
    let fd =
        sys(unsafe { libc::memfd_create(c"appshot-lock".as_ptr(), 0) }).context("memfd_create")?;
    // SAFETY: a descriptor we own from here on.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    if lock {
        // SAFETY: an all-zero flock is a valid one; F_SETLK reads it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        // SAFETY: F_SETLK on our descriptor with a valid flock.
        sys(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) }).context("F_SETLK")?;
    }
    Ok(file)
}

/// One way to call fcntl from this 64-bit process.
#[derive(Clone, Copy)]
enum FcntlEntry {
    X64,
    /// i386 `fcntl` (55; `compat_sys_fcntl64` too on 6.12).
    Ia32Fcntl,
    /// i386 `fcntl64` (221, `compat_sys_fcntl64`).
    Ia32Fcntl64,
    /// x32 `fcntl` (72, `__x64_sys_fcntl` with the x32 bit).
    X32,
}

impl FcntlEntry {
    const ALL: [FcntlEntry; 4] = [
        FcntlEntry::X64,
        FcntlEntry::Ia32Fcntl,
        FcntlEntry::Ia32Fcntl64,
        FcntlEntry::X32,
    ];

    fn name(self) -> &'static str {
        match self {
            FcntlEntry::X64 => "fcntl",
            FcntlEntry::Ia32Fcntl => "int $0x80 fcntl",
            FcntlEntry::Ia32Fcntl64 => "int $0x80 fcntl64",
            FcntlEntry::X32 => "x32 fcntl",
        }
    }

    /// fcntl(fd, cmd, arg) through this entry.
    ///
    /// # Safety
    /// As for fcntl; a pointer `arg` below 4 GiB.
    unsafe fn call(self, fd: RawFd, cmd: i32, arg: i64) -> i64 {
        let a = [fd as u64, cmd as u64, arg as u64, 0, 0, 0];
        // SAFETY: forwarded to the caller.
        unsafe {
            match self {
                FcntlEntry::X64 => raw(libc::syscall(libc::SYS_fcntl, fd, cmd, arg)),
                FcntlEntry::Ia32Fcntl => int80(55, a.map(|x| x as u32)),
                FcntlEntry::Ia32Fcntl64 => int80(221, a.map(|x| x as u32)),
                FcntlEntry::X32 => x32(72, a),
            }
        }
    }

    /// The lock queries this entry takes: (command, name, offset of `l_pid`), and the
    /// offsets of `l_start` and `l_len` with their width.
    fn getlk(self) -> Vec<(i32, &'static str, usize, [(usize, usize); 2])> {
        // struct flock (x86-64, x32); compat_flock; packed compat_flock64.
        let native = (libc::F_GETLK, "F_GETLK", 24, [(8, 8), (16, 8)]);
        let compat = (libc::F_GETLK, "F_GETLK", 12, [(4, 4), (8, 4)]);
        let compat64 = (12, "F_GETLK64", 20, [(4, 8), (12, 8)]);
        match self {
            FcntlEntry::X64 | FcntlEntry::X32 => vec![native],
            FcntlEntry::Ia32Fcntl => vec![compat],
            FcntlEntry::Ia32Fcntl64 => vec![compat, compat64],
        }
    }
}

/// Defect (found in this review): no entry translated `l_pid`, the holder of a
/// conflicting POSIX lock that `F_GETLK` reports, so an AID process saw the system PIDs
/// of its own siblings and of processes outside. Now every entry (x86-64, i386 `fcntl`
/// and `fcntl64`, x32) gives the sibling's virtual PID and 0 for the outsider, and leaves
/// `l_pid` alone when no lock conflicts, as natively. The owner commands are checked
/// through every entry too (set through it, read through it and the 64-bit one).
fn fcntl_every_entry() -> Result<()> {
    Abi::Ia32.expect_available()?;
    Abi::X32.expect_available()?;
    // Locked by the test process, outside the AID.
    let outside_file = lock_file(true)?;
    let outside_fd = outside_file.as_raw_fd();
    // Natively (the layouts and the kernel's answers): the holder's PID everywhere.
    let me = proc::getpid();
    proc::Agent::spawn(move |_| {
        fcntl_checks(outside_fd, me).context("natively, outside every AID")
    })?
    .finish(step_timeout())?;
    for_each_flavor("fcntl", |fx| {
        fx.spawn(move |_| fcntl_checks(outside_fd, 0))?
            .finish(step_timeout())
    })
}

/// The checks of [`fcntl_every_entry`] in the calling process: `outside_fd` is locked by
/// a process outside, which F_GETLK must report as `outsider_seen`.
fn fcntl_checks(outside_fd: RawFd, outsider_seen: i32) -> Result<()> {
    let sib_file = lock_file(false)?;
    let sib_fd = sib_file.as_raw_fd();
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    let sibling = proc::fork(move || {
        // SAFETY: an all-zero flock is valid; F_SETLK on an inherited descriptor.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        let r = unsafe { libc::fcntl(sib_fd, libc::F_SETLK, &fl) };
        proc::write_raw(tx_fd, &(r as i64).to_ne_bytes());
        proc::sleep_forever()
    })?;
    drop(tx);
    let mut buf = [0u8; 8];
    proc::read_exact_timeout(rx.as_raw_fd(), &mut buf, step_timeout())
        .context("the sibling's lock")?;
    if i64::from_ne_bytes(buf) != 0 {
        bail!("premise: the sibling's F_SETLK failed");
    }
    let v = sibling.pid();
    let free_file = lock_file(false)?;
    let (pipe_r, _pipe_w) = proc::pipe()?;
    let page = LowPage::new()?;
    let mut w = Wrong::new();
    const UNTOUCHED: i32 = 0x7777;
    for entry in FcntlEntry::ALL {
        for (cmd, cmd_name, pid_at, [(start, start_len), (len, len_len)]) in entry.getlk() {
            for (what, fd, want_type, want_pid) in [
                ("the sibling's lock", sib_fd, libc::F_WRLCK, v),
                (
                    "the outsider's lock",
                    outside_fd,
                    libc::F_WRLCK,
                    outsider_seen,
                ),
                ("no lock", free_file.as_raw_fd(), libc::F_UNLCK, UNTOUCHED),
            ] {
                page.poison();
                page.write(0, &(libc::F_WRLCK as i16).to_ne_bytes());
                page.write(2, &0i16.to_ne_bytes());
                page.write(start, &vec![0u8; start_len]);
                page.write(len, &vec![0u8; len_len]);
                page.write(pid_at, &UNTOUCHED.to_ne_bytes());
                // SAFETY: the lock query on our descriptor and low page.
                let r = unsafe { entry.call(fd, cmd, page.addr()) };
                let l_type = page.i32_at(0) as i16 as i32;
                let l_pid = page.i32_at(pid_at);
                w.check(
                    format!("{} {cmd_name} on {what}", entry.name()),
                    r == 0 && l_type == want_type && l_pid == want_pid,
                    format!(
                        "{}, l_type {l_type}, l_pid {l_pid} (want 0, {want_type}, {want_pid})",
                        show(r)
                    ),
                );
            }
        }
        // The owner: set through the entry, read back through it and the 64-bit one.
        let r_fd = pipe_r.as_raw_fd();
        // SAFETY: F_SETOWN/F_GETOWN on our pipe, integer arguments.
        let (set, got, got64) = unsafe {
            (
                entry.call(r_fd, libc::F_SETOWN, i64::from(v)),
                entry.call(r_fd, libc::F_GETOWN, 0),
                FcntlEntry::X64.call(r_fd, libc::F_GETOWN, 0),
            )
        };
        w.check(
            format!(
                "{} F_SETOWN({v} sibling), then F_GETOWN through it and through fcntl",
                entry.name()
            ),
            set == 0 && got == i64::from(v) && got64 == i64::from(v),
            format!(
                "{}, {}, {} (want 0, {v}, {v})",
                show(set),
                show(got),
                show(got64)
            ),
        );
    }
    drop(sibling);
    w.finish("fcntl")
}

// ---------------------------------------------------------------------------------
// issue #10: SysV IPC through the i386 entries.

/// i386 system call numbers of the SysV IPC calls used below.
const I386_IPC: u32 = 117;
const I386_SEMGET: u32 = 393;
const I386_SEMCTL: u32 = 394;
const I386_SHMGET: u32 = 395;
const I386_SHMCTL: u32 = 396;
const I386_MSGCTL: u32 = 402;
/// The `ipc(2)` calls and the i386 `IPC_64` flag (uapi/linux/ipc.h).
const IPC_SEMOP: u32 = 1;
const IPC_SEMCTL: u32 = 3;
const IPC_MSGSND: u32 = 11;
const IPC_MSGGET: u32 = 13;
const IPC_MSGCTL: u32 = 14;
const IPC_SHMCTL: u32 = 24;
const IPC_64: u32 = 0x100;

/// issue #10 section 1: every i386 way to the SysV calls is translated like the x86-64
/// one: the direct calls (semget 393, semctl 394, shmget 395, shmctl 396, msgctl 402:
/// the 64-bit layouts; semctl with IPC_64 set returns the ID) and the `ipc(2)`
/// multiplexer (SEMOP, SEMCTL, SHMCTL in the old layout, MSGGET, MSGSND). An ID from one entry works in the other; the PIDs in `shmid_ds`, `msqid_ds`
/// and GETPID are virtual in both i386 layouts; SEM_STAT by index finds the set under
/// its virtual ID; SHM_INFO's compat layout counts only the AID's segment; an ID outside
/// the AID is EINVAL.
fn ipc_i386_entries() -> Result<()> {
    Abi::Ia32.expect_available()?;
    // SAFETY: semget and shmget take integers only.
    let (outside, outside_shm) = unsafe {
        (
            libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o666),
            libc::shmget(libc::IPC_PRIVATE, 3 * 4096, libc::IPC_CREAT | 0o666),
        )
    };
    if outside < 0 || outside_shm < 0 {
        bail!("premise: semget/shmget outside: {}", Errno::last());
    }
    let result = for_each_flavor("ipc-i386", |fx| {
        fx.spawn(move |_| {
            let page = LowPage::new()?;
            let buf = page.addr() as u32;
            let me = i64::from(proc::getpid());
            let mut w = Wrong::new();
            let sys = |nr: u32, a: [u32; 6]| {
                // SAFETY: SysV calls with integers and pointers into our low page.
                unsafe { int80(nr, a) }
            };
            let x64_getval = |id: i64| {
                // SAFETY: GETVAL takes integers only.
                raw(unsafe { libc::semctl(id as i32, 0, libc::GETVAL) } as libc::c_long)
            };
            // Semaphores: semget (393), semop through ipc(SEMOP), semctl (394 and SEMCTL).
            let sem = sys(I386_SEMGET, [0, 1, (libc::IPC_CREAT | 0o600) as u32, 0, 0, 0]);
            if sem < 0 {
                bail!("i386 semget: {}", show(sem));
            }
            w.expect("x86-64 GETVAL of the set i386 semget made", x64_getval(sem), 0);
            // struct sembuf { u16 num; i16 op; i16 flg; }: +1 on semaphore 0.
            page.poison();
            page.write(0, &[0, 0, 1, 0, 0, 0]);
            let r = sys(I386_IPC, [IPC_SEMOP, sem as u32, 1, 0, buf, 0]);
            w.expect("ipc(SEMOP, +1)", r, 0);
            w.expect("x86-64 GETVAL after ipc(SEMOP)", x64_getval(sem), 1);
            w.expect("i386 semctl GETVAL", sys(I386_SEMCTL, [sem as u32, 0, libc::GETVAL as u32, 0, 0, 0]), 1);
            w.expect("i386 semctl GETPID", sys(I386_SEMCTL, [sem as u32, 0, libc::GETPID as u32, 0, 0, 0]), me);
            // ipc(SEMCTL) reads its semun from the word `ptr` points to.
            page.write(0, &0u32.to_ne_bytes());
            w.expect("ipc(SEMCTL, GETPID)", sys(I386_IPC, [IPC_SEMCTL, sem as u32, 0, libc::GETPID as u32, buf, 0]), me);
            w.expect(
                "i386 semctl GETVAL of a set outside the AID",
                sys(I386_SEMCTL, [outside as u32, 0, libc::GETVAL as u32, 0, 0, 0]),
                if outside as i64 == sem { 1 } else { neg(libc::EINVAL) },
            );
            // ipc(SEMCTL, SEM_STAT | IPC_64) by index: some index up to IPC_INFO's answer
            // is ours. (The semun word at the page's start points to the rest of it.)
            let stat = |index: u32, cmd: u32| {
                page.write(0, &(buf + 64).to_ne_bytes());
                sys(I386_IPC, [IPC_SEMCTL, index, 0, cmd | IPC_64, buf, 0])
            };
            let max = stat(0, libc::IPC_INFO as u32);
            let found = (0..=max.max(0)).any(|i| stat(i as u32, 18) == sem);
            w.check("ipc(SEMCTL, SEM_STAT) by index finds the set's virtual ID", found, format!("not among indexes 0..={max}"));
            // ipc(SEMCTL, IPC_STAT) in both layouts, the buffer named by the semun word:
            // the set's key (IPC_PRIVATE: 0), and exactly the layout's bytes written (the
            // old one is 44: its last word holds sem_nsems, 1, and padding).
            for (cmd, size, what) in [(libc::IPC_STAT as u32, 44, "old layout"), (libc::IPC_STAT as u32 | IPC_64, 64, "IPC_64")] {
                page.poison();
                page.write(0, &(buf + 64).to_ne_bytes());
                let r = sys(I386_IPC, [IPC_SEMCTL, sem as u32, 0, cmd, buf, 0]);
                w.check(
                    &format!("ipc(SEMCTL, IPC_STAT), {what}: key, {size} bytes written"),
                    r == 0 && page.i32_at(64) == 0 && page.i32_at(64 + size - 4) != -1 && page.i32_at(64 + size) == -1,
                    format!(
                        "{}, key {}, words at {} and {}: {} {} (want 0, 0, not -1, -1)",
                        show(r),
                        page.i32_at(64),
                        size - 4,
                        size,
                        page.i32_at(64 + size - 4),
                        page.i32_at(64 + size)
                    ),
                );
            }
            // The direct semctl with IPC_64 and IPC_STAT returns the ID: the virtual one.
            w.expect(
                "i386 semctl(IPC_STAT | IPC_64) (returns the ID)",
                sys(I386_SEMCTL, [sem as u32, 0, libc::IPC_STAT as u32 | IPC_64, buf + 64, 0, 0]),
                sem,
            );
            // Shared memory: shmget (395), shmctl IPC_STAT (396) in both layouts.
            let shm = sys(I386_SHMGET, [0, 4096, (libc::IPC_CREAT | 0o600) as u32, 0, 0, 0]);
            if shm < 0 {
                bail!("i386 shmget: {}", show(shm));
            }
            page.poison();
            let r = sys(I386_SHMCTL, [shm as u32, libc::IPC_STAT as u32, buf, 0, 0, 0]);
            w.check(
                "i386 shmctl(IPC_STAT) (64-bit layout): key, shm_cpid",
                r == 0 && page.i32_at(0) == 0 && i64::from(page.i32_at(64)) == me,
                format!("{}, key {}, cpid {} (want 0, 0, {me})", show(r), page.i32_at(0), page.i32_at(64)),
            );
            page.poison();
            let r = sys(I386_IPC, [IPC_SHMCTL, shm as u32, libc::IPC_STAT as u32, 0, buf, 0]);
            let cpid16 = page.i32_at(32) & 0xffff;
            w.check(
                "ipc(SHMCTL, IPC_STAT), old layout: shm_cpid (16 bits), 48 bytes written",
                r == 0 && i64::from(cpid16) == me & 0xffff && page.i32_at(44) != -1 && page.i32_at(48) == -1,
                format!(
                    "{}, cpid {cpid16}, words at 44 and 48: {} {} (want 0, {}, not -1, -1)",
                    show(r),
                    page.i32_at(44),
                    page.i32_at(48),
                    me & 0xffff
                ),
            );
            // SHM_INFO in the compat layout (int used_ids, then 32-bit shm_tot): the AID's
            // one segment of one page (a segment outside the AID exists too).
            page.poison();
            let r = sys(I386_SHMCTL, [0, 14, buf, 0, 0, 0]);
            w.check(
                "i386 shmctl(SHM_INFO), compat layout: used_ids, shm_tot",
                r >= 0 && page.i32_at(0) == 1 && page.i32_at(4) == 1,
                format!("{}, used_ids {}, shm_tot {} (want >= 0, 1, 1)", show(r), page.i32_at(0), page.i32_at(4)),
            );
            w.expect("i386 shmctl(IPC_RMID)", sys(I386_SHMCTL, [shm as u32, libc::IPC_RMID as u32, 0, 0, 0, 0]), 0);
            // Message queues: ipc(MSGGET), ipc(MSGSND), msgctl (402).
            let msg = sys(I386_IPC, [IPC_MSGGET, 0, (libc::IPC_CREAT | 0o600) as u32, 0, 0, 0]);
            if msg < 0 {
                bail!("ipc(MSGGET): {}", show(msg));
            }
            // struct msgbuf { i32 mtype; char mtext[4]; } in the i386 layout.
            page.poison();
            page.write(0, &1i32.to_ne_bytes());
            w.expect("ipc(MSGSND)", sys(I386_IPC, [IPC_MSGSND, msg as u32, 4, 0, buf, 0]), 0);
            page.poison();
            let r = sys(I386_MSGCTL, [msg as u32, libc::IPC_STAT as u32, buf, 0, 0, 0]);
            w.check(
                "i386 msgctl(IPC_STAT) (64-bit layout): msg_lspid",
                r == 0 && i64::from(page.i32_at(72)) == me,
                format!("{}, lspid {} (want 0, {me})", show(r), page.i32_at(72)),
            );
            // The old layout: 16-bit msg_lspid at 50, 56 bytes in all.
            page.poison();
            let r = sys(I386_IPC, [IPC_MSGCTL, msg as u32, libc::IPC_STAT as u32, 0, buf, 0]);
            let lspid16 = (page.i32_at(48) >> 16) & 0xffff;
            w.check(
                "ipc(MSGCTL, IPC_STAT), old layout: msg_lspid (16 bits), 56 bytes written",
                r == 0 && i64::from(lspid16) == me & 0xffff && page.i32_at(56) == -1,
                format!("{}, lspid {lspid16}, word at 56: {} (want 0, {}, -1)", show(r), page.i32_at(56), me & 0xffff),
            );
            w.expect("i386 msgctl(IPC_RMID)", sys(I386_MSGCTL, [msg as u32, libc::IPC_RMID as u32, 0, 0, 0, 0]), 0);
            w.expect("i386 semctl(IPC_RMID)", sys(I386_SEMCTL, [sem as u32, 0, libc::IPC_RMID as u32, 0, 0, 0]), 0);
            w.finish("i386 SysV IPC in the AID")
        })?
        .finish(step_timeout())
    });
    // SAFETY: IPC_RMID takes no buffer.
    unsafe {
        libc::semctl(outside, 0, libc::IPC_RMID);
        libc::shmctl(outside_shm, libc::IPC_RMID, std::ptr::null_mut());
    }
    result
}
