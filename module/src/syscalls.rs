// SPDX-License-Identifier: GPL-2.0-only
//! The hooked system calls and their translations: the table [`SYSCALLS`] says which
//! call is hooked and what its handler does; docs/syscalls.md is the same table in prose.
//!
//! A handler runs only for a call made from user space by a task linked to an AID (the
//! hook passes every other call through untouched, `hooks.rs`). It either lets the call
//! run natively ([`Outcome::Native`]: it returns into the system call, nothing changed),
//! or computes the result itself ([`Outcome::Return`]), often by calling the original
//! system call on a *copy* of the registers with translated arguments and translating
//! its result. The caller's saved registers are never written, so every register the
//! syscall ABI preserves, and the arguments a restarted call sees again, stay the
//! caller's.
//!
//! Translation rules (PID-namespace semantics):
//! - in: a PID argument > 0 is a virtual PID of the caller's AID. One with no mapping
//!   becomes [`NOBODY`], a PID no process can have, so the original call fails exactly as
//!   it natively fails for a PID that does not exist, after the same argument checks in
//!   the same order (`ESRCH`, `ECHILD` for waits, `EPERM` for setpgid's group, `EINVAL`
//!   for a bad flag checked first). 0 and negative values keep their native meaning
//!   (self, own group, errors), `-pgid` is translated as a group, and `kill(-1)` reaches
//!   the AID's processes only.
//! - out: a system PID is shown as its virtual PID, or 0 when it is outside the AID.

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::uaccess::UserSlice;

use crate::aid::Aid;
use crate::glue::{self, RcuReadLock};
use crate::process::Task;
use crate::registry::Registry;
use crate::task_index::OwnIds;

/// What a handler decided.
pub(crate) enum Outcome {
    /// Run the system call as the caller made it.
    Native,
    /// Return this value (a result or a negative errno) instead.
    Return(i64),
}

/// One hooked system call.
pub(crate) struct Syscall {
    /// x86_64 system call number (arch/x86/entry/syscalls/syscall_64.tbl).
    pub(crate) nr: usize,
    /// The kernel function that implements it, as ftrace knows it.
    pub(crate) function: &'static CStr,
    handler: fn(&Call<'_>) -> Outcome,
}

macro_rules! syscalls {
    ($($nr:literal $name:ident => $handler:expr),* $(,)?) => {
        /// Every hooked system call.
        pub(crate) const SYSCALLS: &[Syscall] = &[
            $(Syscall {
                nr: $nr,
                function: kernel::c_str!(concat!("__x64_sys_", stringify!($name))),
                handler: $handler,
            },)*
        ];
    };
}

syscalls! {
    // Own IDs: usually answered by `own_id` from the task index; these handlers run
    // when it cannot (virtual PID not recorded yet, TID changed by exec).
    39 getpid => getpid,
    186 gettid => |c| Outcome::Return(c.virtual_or_zero(c.task.tid())),
    110 getppid => getppid,
    218 set_tid_address => |c| c.call_out(c.args()),
    // Process groups and sessions.
    121 getpgid => |c| c.target_then_out(0),
    124 getsid => |c| c.target_then_out(0),
    111 getpgrp => |c| c.call_out(c.args()),
    112 setsid => |c| c.call_out(c.args()),
    109 setpgid => setpgid,
    // New processes and threads.
    57 fork => |c| c.call_child(c.args()),
    58 vfork => |c| c.call_child(c.args()),
    56 clone => clone,
    435 clone3 => clone3,
    272 unshare => |c| if c.arg(0) & CLONE_NEWPID != 0 { err(EINVAL) } else { Outcome::Native },
    // Signals.
    62 kill => kill,
    200 tkill => |c| c.targets(&[0]),
    234 tgkill => |c| c.targets(&[0, 1]),
    129 rt_sigqueueinfo => |c| c.targets(&[0]),
    297 rt_tgsigqueueinfo => |c| c.targets(&[0, 1]),
    // Waiting for children.
    61 wait4 => wait4,
    247 waitid => waitid,
    // Scheduling, priorities, limits: the first argument names a thread (0: the caller).
    203 sched_setaffinity => |c| c.targets(&[0]),
    204 sched_getaffinity => |c| c.targets(&[0]),
    144 sched_setscheduler => |c| c.targets(&[0]),
    145 sched_getscheduler => |c| c.targets(&[0]),
    142 sched_setparam => |c| c.targets(&[0]),
    143 sched_getparam => |c| c.targets(&[0]),
    148 sched_rr_get_interval => |c| c.targets(&[0]),
    314 sched_setattr => |c| c.targets(&[0]),
    315 sched_getattr => |c| c.targets(&[0]),
    140 getpriority => priority,
    141 setpriority => priority,
    251 ioprio_set => ioprio,
    252 ioprio_get => ioprio,
    302 prlimit64 => |c| c.targets(&[0]),
    // Terminals: foreground process group and session (job control).
    16 ioctl => tty_ioctl,
    // Other processes' resources.
    434 pidfd_open => |c| c.targets(&[0]),
    310 process_vm_readv => |c| c.targets(&[0]),
    311 process_vm_writev => |c| c.targets(&[0]),
    312 kcmp => |c| c.targets(&[0, 1]),
}

/// A PID no process has: above `PID_MAX_LIMIT`, so every PID lookup fails.
const NOBODY: u32 = i32::MAX as u32;

/// The highest system call number + 1 that [`handler`] accepts.
const NR_MAX: usize = 512;

const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_PARENT_SETTID: u64 = 0x0010_0000;
const WNOWAIT: u64 = 0x0100_0000;
const TIOCGPGRP: u32 = 0x540f;
const TIOCSPGRP: u32 = 0x5410;
const TIOCGSID: u32 = 0x5429;
const P_PID: u64 = 1;
const P_PGID: u64 = 2;
const PRIO_PROCESS: u64 = 0;
const PRIO_PGRP: u64 = 1;
const IOPRIO_WHO_PROCESS: u64 = 1;
const IOPRIO_WHO_PGRP: u64 = 2;
/// `siginfo_t.si_pid`'s offset (after si_signo, si_errno, si_code and padding).
const SI_PID_OFFSET: u64 = 16;
/// `struct clone_args` fields read by clone3's handler: flags, pidfd, child_tid, parent_tid.
const CLONE_ARGS_HEAD: usize = 32;
const CLONE_ARGS_SIZE_VER0: u64 = 64;

/// System call number -> 1 + its index in [`SYSCALLS`] (0: not hooked).
static BY_NUMBER: [u8; NR_MAX] = {
    let mut index = [0u8; NR_MAX];
    let mut i = 0;
    while i < SYSCALLS.len() {
        assert!(SYSCALLS[i].nr < NR_MAX && index[SYSCALLS[i].nr] == 0 && i < 255);
        index[SYSCALLS[i].nr] = (i + 1) as u8;
        i += 1;
    }
    index
};

/// The handler of system call `nr`, if it is hooked.
pub(crate) fn handler(nr: u64) -> Option<fn(&Call<'_>) -> Outcome> {
    let slot = *BY_NUMBER.get(usize::try_from(nr).ok()?)?;
    let syscall = SYSCALLS.get(usize::from(slot).checked_sub(1)?)?;
    Some(syscall.handler)
}

pub(crate) const NR_GETPID: u64 = 39;
const NR_GETTID: u64 = 186;

/// `getpid` and `gettid` from the IDs the task index keeps with the caller's entry: no
/// table lookup, no lock but the index bucket's. `None`: ask the handler.
#[inline]
pub(crate) fn own_id(nr: u64, ids: OwnIds, task: Task<'_>) -> Option<i64> {
    match nr {
        NR_GETPID if ids.virtual_tgid != 0 => Some(i64::from(ids.virtual_tgid)),
        NR_GETTID if ids.system_tid == task.tid() => Some(i64::from(ids.virtual_tid)),
        _ => None,
    }
}

fn getpid(c: &Call<'_>) -> Outcome {
    let virtual_tgid = c.virtual_or_zero(c.task.tgid());
    if virtual_tgid > 0 {
        c.registry.tasks.set_virtual_tgid(c.task, virtual_tgid as u32);
    }
    Outcome::Return(virtual_tgid)
}

/// The parent's virtual PID, 0 when it is outside the AID. Asked of the task index (is
/// the parent linked to this AID, and with which IDs), whose cost does not grow with the
/// AID; the PID table only when the parent's own entry does not know its virtual PID yet.
fn getppid(c: &Call<'_>) -> Outcome {
    let (parent_tgid, ids) = {
        let rcu = RcuReadLock::new();
        let parent = rcu.current_parent();
        (parent.tgid(), c.registry.tasks.ids_in(parent, c.aid))
    };
    let virtual_id = match ids {
        None => 0,
        Some(ids) if ids.virtual_tgid != 0 => ids.virtual_tgid,
        Some(_) => c.aid.state.lock().pid_to_virtual_live(parent_tgid).unwrap_or(0),
    };
    Outcome::Return(i64::from(virtual_id))
}

/// One system call made by a linked task.
pub(crate) struct Call<'a> {
    pub(crate) regs: &'a bindings::pt_regs,
    /// The system call's function, to call it again unhooked.
    pub(crate) original: usize,
    pub(crate) aid: &'a Aid,
    pub(crate) registry: &'a Registry,
    pub(crate) task: Task<'a>,
}

fn err(e: Error) -> Outcome {
    Outcome::Return(e.to_errno() as i64)
}

impl Call<'_> {
    /// The six argument registers, in syscall ABI order.
    fn args(&self) -> [u64; 6] {
        let r = self.regs;
        [r.di, r.si, r.dx, r.r10, r.r8, r.r9].map(|v| v as u64)
    }

    fn arg(&self, i: usize) -> u64 {
        self.args()[i]
    }

    /// A PID argument as the C `pid_t` the system call sees.
    fn pid_arg(&self, i: usize) -> i32 {
        self.arg(i) as u32 as i32
    }

    /// Runs the original system call with `args`, on a copy of the caller's registers.
    fn call(&self, args: [u64; 6]) -> i64 {
        let mut regs = *self.regs;
        regs.di = args[0] as c_ulong;
        regs.si = args[1] as c_ulong;
        regs.dx = args[2] as c_ulong;
        regs.r10 = args[3] as c_ulong;
        regs.r8 = args[4] as c_ulong;
        regs.r9 = args[5] as c_ulong;
        // The copy is not the task's saved registers, so the hook lets this nested call
        // through. `original` is the entry of the system call this hook fired for (the
        // glue derived it from the fentry site).
        // SAFETY: `original` takes a `pt_regs` pointer; the copy lives on our stack.
        unsafe { glue::appshot_glue_call_syscall(self.original as c_ulong, &mut regs) as i64 }
    }

    /// Virtual PID of a system PID, `None` when it is outside the AID.
    fn to_virtual(&self, system: u32) -> Option<u32> {
        self.aid.state.lock().pid_to_virtual(system)
    }

    /// How a system PID that a call returned is shown: its virtual PID, 0 when it is
    /// outside the AID, or unchanged when the caller itself left the AID during the call
    /// (a forced UNREGISTER or an UNLINK while it slept in `wait4`): it sees system IDs
    /// from then on.
    fn virtual_or_zero(&self, system: u32) -> i64 {
        match self.to_virtual(system) {
            Some(virtual_id) => i64::from(virtual_id),
            None if !self.still_linked() => i64::from(system),
            None => 0,
        }
    }

    /// Whether the caller is still linked to the AID its call started in.
    fn still_linked(&self) -> bool {
        let _state = self.aid.state.lock();
        self.registry.tasks.is_linked_to(self.task, self.aid)
    }

    /// System PID behind a virtual PID of the AID.
    fn to_system(&self, virtual_id: u32) -> Option<u32> {
        self.aid.state.lock().pid_to_system(virtual_id)
    }

    /// System PID for a virtual PID > 0 of the AID, [`NOBODY`] when it has no mapping.
    fn to_system_or_nobody(&self, virtual_id: u32) -> u32 {
        self.to_system(virtual_id).unwrap_or(NOBODY)
    }

    /// Translates argument `i` in place if it is a PID > 0.
    fn translate_arg(&self, args: &mut [u64; 6], i: usize) {
        let pid = args[i] as u32 as i32;
        if pid > 0 {
            let system = self.to_system_or_nobody(pid as u32);
            // Keep the upper half as the caller passed it; the kernel reads an int.
            args[i] = (args[i] & !0xffff_ffff) | u64::from(system);
        }
    }

    /// Translates `-pgid` or a PID in argument `i` (other values stay).
    fn translate_pid_or_group(&self, args: &mut [u64; 6], i: usize) {
        let pid = args[i] as u32 as i32;
        if pid < -1 && pid != i32::MIN {
            let system = self.to_system_or_nobody(pid.unsigned_abs()) as i32;
            args[i] = (args[i] & !0xffff_ffff) | u64::from((-system) as u32);
        } else {
            self.translate_arg(args, i);
        }
    }

    /// Translates the PID arguments `which` (those > 0) and calls the original.
    fn targets(&self, which: &[usize]) -> Outcome {
        let mut args = self.args();
        for &i in which {
            self.translate_arg(&mut args, i);
        }
        Outcome::Return(self.call(args))
    }

    /// Calls the original with `args` and shows a positive result as a virtual PID.
    fn call_out(&self, args: [u64; 6]) -> Outcome {
        let ret = self.call(args);
        Outcome::Return(if ret > 0 { self.virtual_or_zero(ret as u32) } else { ret })
    }

    /// Translates PID argument `i`, then like [`Self::call_out`].
    fn target_then_out(&self, i: usize) -> Outcome {
        let mut args = self.args();
        self.translate_arg(&mut args, i);
        self.call_out(args)
    }

    /// Calls a waiting original (`wait4`, `waitid`) until it returns something other
    /// than a child the AID never had: a child that could not be linked was killed
    /// before it ran, and its creator was told its fork failed (see
    /// [`Self::call_child`]), so it is reaped here unseen.
    fn call_wait(&self, args: [u64; 6], reaped: impl Fn(i64) -> Option<u32>) -> i64 {
        loop {
            let ret = self.call(args);
            match reaped(ret) {
                Some(system) if self.to_virtual(system).is_none() && self.still_linked() => continue,
                _ => return ret,
            }
        }
    }

    /// Calls a process-creating original; its positive result is the child's system
    /// TID, linked before the call returned.
    fn call_child(&self, args: [u64; 6]) -> Outcome {
        let ret = self.call(args);
        if ret <= 0 {
            return Outcome::Return(ret);
        }
        // A child that could not be linked was killed before it ran (link.rs); its
        // creator gets the error a failed fork gives rather than a system PID.
        Outcome::Return(match self.to_virtual(ret as u32) {
            Some(virtual_id) => i64::from(virtual_id),
            None if !self.still_linked() => ret,
            None => EAGAIN.to_errno() as i64,
        })
    }
}

fn setpgid(c: &Call<'_>) -> Outcome {
    // A group with no mapping becomes NOBODY: setpgid's EPERM for a missing group.
    c.targets(&[0, 1])
}

/// clone/clone3 with `CLONE_PARENT_SETTID`: the new-task hook writes the virtual TID.
fn clone_child(c: &Call<'_>, flags: u64, parent_tid: u64) -> Outcome {
    if flags & CLONE_NEWPID != 0 {
        return err(EINVAL);
    }
    let settid = flags & CLONE_PARENT_SETTID != 0 && parent_tid != 0;
    if settid {
        c.registry.tasks.set_parent_tid(c.task, parent_tid);
    }
    let outcome = c.call_child(c.args());
    if settid {
        c.registry.tasks.set_parent_tid(c.task, 0);
    }
    outcome
}

fn clone(c: &Call<'_>) -> Outcome {
    // clone(flags, newsp, parent_tid, child_tid, tls) on x86_64.
    clone_child(c, c.arg(0), c.arg(2))
}

fn clone3(c: &Call<'_>) -> Outcome {
    let (uargs, size) = (c.arg(0), c.arg(1));
    if size < CLONE_ARGS_SIZE_VER0 {
        // The original refuses it.
        return Outcome::Native;
    }
    let mut head = [0u8; CLONE_ARGS_HEAD];
    if UserSlice::new(uargs as usize, CLONE_ARGS_HEAD).reader().read_slice(&mut head).is_err() {
        return Outcome::Native;
    }
    let field = |i: usize| u64::from_ne_bytes(head[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    clone_child(c, field(0), field(3))
}

fn kill(c: &Call<'_>) -> Outcome {
    if c.pid_arg(0) == -1 {
        return kill_all(c);
    }
    let mut args = c.args();
    c.translate_pid_or_group(&mut args, 0);
    Outcome::Return(c.call(args))
}

/// kill(-1, sig): every process of the AID except the caller and virtual PID 1, with the
/// kernel's rule for the result (ESRCH when none was tried, else the last error other
/// than EPERM, else 0).
fn kill_all(c: &Call<'_>) -> Outcome {
    let capacity = c.aid.state.lock().nr_processes as usize;
    let Ok(mut targets) = KVec::from_elem((0u32, 0u32), capacity, GFP_KERNEL) else {
        return err(ENOMEM);
    };
    let n = c.aid.state.lock().processes(&mut targets);
    let me = c.task.tgid();
    let (mut count, mut result) = (0, 0i64);
    for &(system, virtual_id) in targets[..n].iter() {
        if system == me || virtual_id == 1 {
            continue;
        }
        let mut args = c.args();
        args[0] = u64::from(system);
        let ret = c.call(args);
        count += 1;
        if ret != EPERM.to_errno() as i64 {
            result = ret;
        }
    }
    if count == 0 {
        return err(ESRCH);
    }
    Outcome::Return(result)
}

fn wait4(c: &Call<'_>) -> Outcome {
    let mut args = c.args();
    c.translate_pid_or_group(&mut args, 0);
    let ret = c.call_wait(args, |ret| (ret > 0).then_some(ret as u32));
    Outcome::Return(if ret > 0 { c.virtual_or_zero(ret as u32) } else { ret })
}

fn waitid(c: &Call<'_>) -> Outcome {
    let mut args = c.args();
    if args[0] == P_PID || args[0] == P_PGID {
        c.translate_arg(&mut args, 1);
    }
    let infop = args[2];
    let si_pid = (infop != 0).then(|| (infop + SI_PID_OFFSET) as usize);
    let read_si_pid = |at: usize| {
        let mut raw = [0u8; 4];
        UserSlice::new(at, 4).reader().read_slice(&mut raw).ok().map(|()| u32::from_ne_bytes(raw))
    };
    // Without infop a waitid that reaped a refused child cannot be told from one that
    // reaped nothing with WNOHANG; such a child is then left for the next wait.
    let reaps = args[3] & WNOWAIT == 0;
    let ret = c.call_wait(args, |ret| match (ret, si_pid) {
        (0, Some(at)) if reaps => read_si_pid(at).filter(|&pid| pid != 0),
        _ => None,
    });
    if let (0, Some(at)) = (ret, si_pid) {
        // The kernel wrote si_pid (a system PID, or 0 when nothing was waited for).
        if let Some(system) = read_si_pid(at).filter(|&pid| pid != 0) {
            let shown = c.virtual_or_zero(system) as u32;
            let _ = UserSlice::new(at, 4).writer().write_slice(&shown.to_ne_bytes());
        }
    }
    Outcome::Return(ret)
}

fn priority(c: &Call<'_>) -> Outcome {
    match c.arg(0) {
        PRIO_PROCESS | PRIO_PGRP => c.targets(&[1]),
        _ => Outcome::Native,
    }
}

fn ioprio(c: &Call<'_>) -> Outcome {
    match c.arg(0) {
        IOPRIO_WHO_PROCESS | IOPRIO_WHO_PGRP => c.targets(&[1]),
        _ => Outcome::Native,
    }
}

fn read_user_i32(address: u64) -> Option<i32> {
    let mut raw = [0u8; 4];
    UserSlice::new(address as usize, 4).reader().read_slice(&mut raw).ok()?;
    Some(i32::from_ne_bytes(raw))
}

fn write_user_i32(address: u64, value: i32) {
    // A failed write leaves what the kernel wrote; the caller unmapped its own buffer.
    let _ = UserSlice::new(address as usize, 4).writer().write_slice(&value.to_ne_bytes());
}

/// ioctl: only the terminal requests that carry a process group or session ID.
fn tty_ioctl(c: &Call<'_>) -> Outcome {
    let address = c.arg(2);
    match c.arg(1) as u32 {
        TIOCGPGRP | TIOCGSID => {
            let ret = c.call(c.args());
            if ret == 0 {
                if let Some(system) = read_user_i32(address).filter(|&pid| pid > 0) {
                    write_user_i32(address, c.virtual_or_zero(system as u32) as i32);
                }
            }
            Outcome::Return(ret)
        }
        TIOCSPGRP => {
            // The kernel reads the group from the caller's buffer: put the system ID there
            // for the call and the caller's value back after it.
            let Some(wanted) = read_user_i32(address).filter(|&pid| pid > 0) else {
                return Outcome::Native;
            };
            write_user_i32(address, c.to_system_or_nobody(wanted as u32) as i32);
            let ret = c.call(c.args());
            write_user_i32(address, wanted);
            Outcome::Return(ret)
        }
        _ => Outcome::Native,
    }
}
