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

pub(crate) mod interfaces;

use core::mem::MaybeUninit;

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::str::CStr;
use kernel::uaccess::UserSlice;

use crate::aid::Aid;
use crate::ipc;
use crate::linux::glue::{self, RcuReadLock};
use crate::linux::task::{Task, TaskRef};
use crate::aid::registry::Registry;
use crate::pid::task_index::{OwnIds, Reaped, Slot};
use crate::table::{SystemPid, VirtualPid};

/// What a handler decided.
pub(crate) enum Outcome {
    /// Run the system call as the caller made it.
    Native,
    /// Return this value (a result or a negative errno) instead.
    Return(i64),
}

/// How a system call entry takes its arguments: which saved registers hold them, and
/// whether the structures it reads and writes in user memory have the 32-bit layout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abi {
    /// `__x64_sys_*`: rdi, rsi, rdx, r10, r8, r9; native structures. x32 calls (with
    /// `__X32_SYSCALL_BIT` in `orig_ax`) reach the same functions for every call here
    /// but the few below.
    X64,
    /// `__x64_compat_sys_*`: the x32-only entries (x86-64 registers, 32-bit structures).
    X32Compat,
    /// `__ia32_sys_*` and `__ia32_compat_sys_*`, reached by `int $0x80` (and by 32-bit
    /// programs): ebx, ecx, edx, esi, edi, ebp; 32-bit structures.
    Ia32,
}

impl Abi {
    /// Whether user structures have the 32-bit (compat) layout.
    pub(crate) fn compat(self) -> bool {
        self != Abi::X64
    }
}

/// A system call's handler.
pub(crate) type Handler = fn(&Call<'_>) -> Outcome;

/// A row's fast path: translates the arguments in the [`Frame`] (which starts with the
/// caller's), with the caller's AID alone; `false` when the row's [`Handler`] must run
/// instead. It runs under the dispatch's RCU read lock, which is what keeps the AID
/// alive, and must not sleep; the dispatch then calls the
/// original itself, holding no reference on the AID (`hooks::pin`). For calls whose
/// translation is all on the way in (an ID or a PID among the arguments): `semop`,
/// `msgsnd`, `kill`, most `*ctl` commands.
pub(crate) type Translate = fn(&Aid, &mut Frame) -> bool;

/// A row's pre-filter: whether the handler may do anything with a call of these
/// arguments ([`args_of`]). `false` lets the call run as made before the dispatch takes
/// a lock or a reference (`hooks/mod.rs`), for rows where most calls are not the
/// handler's business (`futex` WAIT and WAKE, most `ioctl` and `fcntl` commands, clocks
/// other than CPU-time ones). A filter may accept more than its handler handles, never
/// less.
pub(crate) type Wants = fn(&[u64; 6]) -> bool;

/// One hooked system call entry.
pub(crate) struct Syscall {
    /// The kernel function that implements it for `abi`, as ftrace knows it.
    pub(crate) function: &'static CStr,
    pub(crate) abi: Abi,
    /// Whether it returns one of the caller's own IDs (answered from the task index).
    pub(crate) own: OwnId,
    /// The row's pre-filter, if it has one.
    pub(crate) wants: Option<Wants>,
    /// The row's fast path, if it has one; tried before `handler`.
    pub(crate) translate: Option<Translate>,
    pub(crate) handler: Handler,
}

/// The calls that return the caller's own ID.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnId {
    No,
    Pid,
    Tid,
    /// The parent's virtual PID: asked of the task index, which needs no reference on the
    /// AID ([`parent_id`]).
    Ppid,
}

macro_rules! syscalls {
    ($($abi:ident $symbol:ident $([$own:ident])? $(if $wants:path)? => $handler:expr $(; fast $translate:expr)?,)*) => {
        /// Every hooked system call entry, for every ABI a 64-bit kernel offers (the
        /// names are those of arch/x86/entry/syscalls/syscall_{64,32}.tbl).
        pub(crate) const SYSCALLS: &[Syscall] = &[
            $(Syscall {
                function: kernel::c_str!(concat!(syscalls!(@prefix $abi), stringify!($symbol))),
                abi: Abi::$abi,
                own: syscalls!(@own $($own)?),
                wants: syscalls!(@wants $($wants)?),
                translate: syscalls!(@translate $($translate)?),
                handler: $handler,
            },)*
        ];
    };
    (@prefix X64) => { "__x64_" };
    (@prefix X32Compat) => { "__x64_" };
    (@prefix Ia32) => { "__ia32_" };
    (@own) => { OwnId::No };
    (@wants) => { None };
    (@wants $wants:path) => { Some($wants) };
    (@translate) => { None };
    (@translate $translate:expr) => { Some($translate) };
    (@own $own:ident) => { OwnId::$own };
}

syscalls! {
    // Own IDs: usually answered by `own_id` from the task index; these handlers run
    // when it cannot (virtual PID not recorded yet, TID changed by exec).
    X64 sys_getpid [Pid] => getpid,
    Ia32 sys_getpid [Pid] => getpid,
    X64 sys_gettid [Tid] => |c| Outcome::Return(c.virtual_or_zero(c.task.tid())),
    Ia32 sys_gettid [Tid] => |c| Outcome::Return(c.virtual_or_zero(c.task.tid())),
    X64 sys_getppid [Ppid] => |c| Outcome::Return(parent_id(c.registry, c.aid, c.task, Slot::of(c.task))),
    Ia32 sys_getppid [Ppid] => |c| Outcome::Return(parent_id(c.registry, c.aid, c.task, Slot::of(c.task))),
    X64 sys_set_tid_address => |c| c.call_out(c.args()),
    Ia32 sys_set_tid_address => |c| c.call_out(c.args()),
    // Process groups and sessions.
    X64 sys_getpgid => |c| c.target_then_out(0),
    Ia32 sys_getpgid => |c| c.target_then_out(0),
    X64 sys_getsid => |c| c.target_then_out(0),
    Ia32 sys_getsid => |c| c.target_then_out(0),
    X64 sys_getpgrp => |c| c.call_out(c.args()),
    Ia32 sys_getpgrp => |c| c.call_out(c.args()),
    X64 sys_setsid => |c| c.call_out(c.args()),
    Ia32 sys_setsid => |c| c.call_out(c.args()),
    X64 sys_setpgid => setpgid,
    Ia32 sys_setpgid => setpgid,
    // New processes and threads. CLONE_NEWPID and CLONE_PARENT_SETTID are seen in
    // `kernel_clone` (hooks.rs), where the kernel holds its final copy of the flags.
    X64 sys_fork => |c| c.call_child(c.args()),
    Ia32 sys_fork => |c| c.call_child(c.args()),
    X64 sys_vfork => |c| c.call_child(c.args()),
    Ia32 sys_vfork => |c| c.call_child(c.args()),
    X64 sys_clone => |c| c.call_child(c.args()),
    Ia32 compat_sys_ia32_clone => |c| c.call_child(c.args()),
    X64 sys_clone3 => |c| c.call_child(c.args()),
    Ia32 sys_clone3 => |c| c.call_child(c.args()),
    X64 sys_unshare => unshare,
    Ia32 sys_unshare => unshare,
    X64 sys_setns => setns,
    Ia32 sys_setns => setns,
    // Signals.
    X64 sys_kill => kill; fast kill_args,
    Ia32 sys_kill => kill; fast kill_args,
    X64 sys_tkill => |c| c.targets(&[0]); fast |aid, f| { translate_into(aid, &[0], f); true },
    Ia32 sys_tkill => |c| c.targets(&[0]); fast |aid, f| { translate_into(aid, &[0], f); true },
    X64 sys_tgkill => |c| c.targets(&[0, 1]); fast |aid, f| { translate_into(aid, &[0, 1], f); true },
    Ia32 sys_tgkill => |c| c.targets(&[0, 1]); fast |aid, f| { translate_into(aid, &[0, 1], f); true },
    X64 sys_rt_sigqueueinfo => |c| c.targets(&[0]),
    X32Compat compat_sys_rt_sigqueueinfo => |c| c.targets(&[0]),
    Ia32 compat_sys_rt_sigqueueinfo => |c| c.targets(&[0]),
    X64 sys_rt_tgsigqueueinfo => |c| c.targets(&[0, 1]),
    X32Compat compat_sys_rt_tgsigqueueinfo => |c| c.targets(&[0, 1]),
    Ia32 compat_sys_rt_tgsigqueueinfo => |c| c.targets(&[0, 1]),
    // si_pid of a signal taken by the compat rt_sigtimedwait (src/hooks/signals.rs).
    Ia32 compat_sys_rt_sigtimedwait_time32 => compat_sigtimedwait,
    Ia32 compat_sys_rt_sigtimedwait_time64 => compat_sigtimedwait,
    X32Compat compat_sys_rt_sigtimedwait_time64 => compat_sigtimedwait,
    // Waiting for children.
    X64 sys_wait4 => wait4,
    Ia32 compat_sys_wait4 => wait4,
    Ia32 sys_waitpid => wait4,
    X64 sys_waitid => waitid,
    X32Compat compat_sys_waitid => waitid,
    Ia32 compat_sys_waitid => waitid,
    // Scheduling, priorities, limits: the first argument names a thread (0: the caller).
    X64 sys_sched_setaffinity => |c| c.targets(&[0]),
    Ia32 compat_sys_sched_setaffinity => |c| c.targets(&[0]),
    X64 sys_sched_getaffinity => |c| c.targets(&[0]),
    Ia32 compat_sys_sched_getaffinity => |c| c.targets(&[0]),
    X64 sys_sched_setscheduler => |c| c.targets(&[0]),
    Ia32 sys_sched_setscheduler => |c| c.targets(&[0]),
    X64 sys_sched_getscheduler => |c| c.targets(&[0]),
    Ia32 sys_sched_getscheduler => |c| c.targets(&[0]),
    X64 sys_sched_setparam => |c| c.targets(&[0]),
    Ia32 sys_sched_setparam => |c| c.targets(&[0]),
    X64 sys_sched_getparam => |c| c.targets(&[0]),
    Ia32 sys_sched_getparam => |c| c.targets(&[0]),
    X64 sys_sched_rr_get_interval => |c| c.targets(&[0]),
    Ia32 sys_sched_rr_get_interval => |c| c.targets(&[0]),
    Ia32 sys_sched_rr_get_interval_time32 => |c| c.targets(&[0]),
    X64 sys_sched_setattr => |c| c.targets(&[0]),
    Ia32 sys_sched_setattr => |c| c.targets(&[0]),
    X64 sys_sched_getattr => |c| c.targets(&[0]),
    Ia32 sys_sched_getattr => |c| c.targets(&[0]),
    X64 sys_getpriority => priority,
    Ia32 sys_getpriority => priority,
    X64 sys_setpriority => priority,
    Ia32 sys_setpriority => priority,
    X64 sys_ioprio_set => ioprio,
    Ia32 sys_ioprio_set => ioprio,
    X64 sys_ioprio_get => ioprio,
    Ia32 sys_ioprio_get => ioprio,
    X64 sys_prlimit64 => |c| c.targets(&[0]),
    Ia32 sys_prlimit64 => |c| c.targets(&[0]),
    // Terminals: foreground process group and session (job control).
    X64 sys_ioctl if ioctl_wants => ioctl,
    X32Compat compat_sys_ioctl if ioctl_wants => ioctl,
    Ia32 compat_sys_ioctl if ioctl_wants => ioctl,
    // File owners (SIGIO, SIGURG).
    X64 sys_fcntl if interfaces::fcntl_wants => interfaces::fcntl,
    // i386 `fcntl` (55) and `fcntl64` (221) both run this entry.
    Ia32 compat_sys_fcntl64 if interfaces::fcntl_wants => interfaces::fcntl,
    // Capabilities, robust futex lists and memory of other processes.
    X64 sys_capget => interfaces::capabilities,
    Ia32 sys_capget => interfaces::capabilities,
    X64 sys_capset => interfaces::capabilities,
    Ia32 sys_capset => interfaces::capabilities,
    X64 sys_get_robust_list => |c| c.targets(&[0]),
    X32Compat compat_sys_get_robust_list => |c| c.targets(&[0]),
    Ia32 compat_sys_get_robust_list => |c| c.targets(&[0]),
    X64 sys_migrate_pages => |c| c.targets(&[0]),
    Ia32 sys_migrate_pages => |c| c.targets(&[0]),
    X64 sys_move_pages => |c| c.targets(&[0]),
    Ia32 sys_move_pages => |c| c.targets(&[0]),
    // SysV IPC: IDs and keys of the AID's objects (src/ipc/). i386 `semop` and the old
    // calls exist only through the `ipc` multiplexer.
    X64 sys_semget => ipc::calls::semget,
    Ia32 sys_semget => ipc::calls::semget,
    X64 sys_semop => ipc::calls::semop; fast ipc::calls::semop_args,
    X64 sys_semtimedop => ipc::calls::semop; fast ipc::calls::semop_args,
    Ia32 sys_semtimedop => ipc::calls::semop; fast ipc::calls::semop_args,
    X64 sys_semctl => ipc::calls::semctl; fast ipc::calls::semctl_args,
    Ia32 compat_sys_semctl => ipc::calls::semctl,
    X64 sys_shmget => ipc::calls::shmget,
    Ia32 sys_shmget => ipc::calls::shmget,
    X64 sys_shmat => ipc::calls::shmat; fast ipc::calls::shmat_args,
    Ia32 compat_sys_shmat => ipc::calls::shmat; fast ipc::calls::shmat_args,
    X64 sys_shmctl => ipc::calls::shmctl; fast ipc::calls::shmctl_args,
    Ia32 compat_sys_shmctl => ipc::calls::shmctl,
    X64 sys_msgget => ipc::calls::msgget,
    Ia32 sys_msgget => ipc::calls::msgget,
    X64 sys_msgsnd => ipc::calls::msgop; fast ipc::calls::msgop_args,
    Ia32 compat_sys_msgsnd => ipc::calls::msgop; fast ipc::calls::msgop_args,
    X64 sys_msgrcv => ipc::calls::msgop; fast ipc::calls::msgop_args,
    Ia32 compat_sys_msgrcv => ipc::calls::msgop; fast ipc::calls::msgop_args,
    X64 sys_msgctl => ipc::calls::msgctl; fast ipc::calls::msgctl_args,
    Ia32 compat_sys_msgctl => ipc::calls::msgctl,
    Ia32 compat_sys_ipc => ipc::calls::multiplexer,
    // PI futex owners, named by the TID in the futex word (src/pid/futex.rs).
    X64 sys_futex if interfaces::futex_wants => interfaces::futex,
    Ia32 sys_futex if interfaces::futex_wants => interfaces::futex,
    Ia32 sys_futex_time32 if interfaces::futex_wants => interfaces::futex,
    // CPU-time clocks of a process or thread, and timers that signal a thread.
    X64 sys_clock_gettime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_gettime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_gettime32 if interfaces::clock_wants => interfaces::clock,
    X64 sys_clock_getres if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_getres if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_getres_time32 if interfaces::clock_wants => interfaces::clock,
    X64 sys_clock_settime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_settime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_settime32 if interfaces::clock_wants => interfaces::clock,
    X64 sys_clock_adjtime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_adjtime if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_adjtime32 if interfaces::clock_wants => interfaces::clock,
    X64 sys_clock_nanosleep if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_nanosleep if interfaces::clock_wants => interfaces::clock,
    Ia32 sys_clock_nanosleep_time32 if interfaces::clock_wants => interfaces::clock,
    X64 sys_timer_create => interfaces::timer_create,
    X32Compat compat_sys_timer_create => interfaces::timer_create,
    Ia32 compat_sys_timer_create => interfaces::timer_create,
    // Unix socket credentials: the peer's (SO_PEERCRED) and a message's (SCM_CREDENTIALS).
    X64 sys_getsockopt => interfaces::getsockopt,
    Ia32 sys_getsockopt => interfaces::getsockopt,
    X64 sys_recvmsg => interfaces::recvmsg,
    X32Compat compat_sys_recvmsg => interfaces::recvmsg,
    Ia32 compat_sys_recvmsg => interfaces::recvmsg,
    X64 sys_recvmmsg => interfaces::recvmmsg,
    X32Compat compat_sys_recvmmsg_time64 => interfaces::recvmmsg,
    Ia32 compat_sys_recvmmsg_time64 => interfaces::recvmmsg,
    Ia32 compat_sys_recvmmsg_time32 => interfaces::recvmmsg,
    X64 sys_sendmsg => interfaces::sendmsg,
    X32Compat compat_sys_sendmsg => interfaces::sendmsg,
    Ia32 compat_sys_sendmsg => interfaces::sendmsg,
    X64 sys_sendmmsg => interfaces::sendmmsg,
    X32Compat compat_sys_sendmmsg => interfaces::sendmmsg,
    Ia32 compat_sys_sendmmsg => interfaces::sendmmsg,
    Ia32 compat_sys_socketcall => interfaces::socketcall,
    // Other processes' resources.
    X64 sys_pidfd_open => |c| c.targets(&[0]),
    Ia32 sys_pidfd_open => |c| c.targets(&[0]),
    X64 sys_process_vm_readv => |c| c.targets(&[0]),
    Ia32 sys_process_vm_readv => |c| c.targets(&[0]),
    X64 sys_process_vm_writev => |c| c.targets(&[0]),
    Ia32 sys_process_vm_writev => |c| c.targets(&[0]),
    X64 sys_kcmp => |c| c.targets(&[0, 1]),
    Ia32 sys_kcmp => |c| c.targets(&[0, 1]),
}

/// A PID no process has: above `PID_MAX_LIMIT`, so every PID lookup fails.
pub(crate) const NOBODY: u32 = i32::MAX as u32;

const CLONE_NEWPID: u64 = bindings::CLONE_NEWPID as u64;
// Not in the bindings (asm/ioctls.h, uapi/linux/wait.h are not bound): the glue asserts
// these numbers against the kernel's headers at build time.
const TIOCGPGRP: u32 = 0x540f;
const TIOCSPGRP: u32 = 0x5410;
const TIOCGSID: u32 = 0x5429;
const P_PID: u64 = 1;
const P_PGID: u64 = 2;
const PRIO_PROCESS: u64 = bindings::PRIO_PROCESS as u64;
const PRIO_PGRP: u64 = bindings::PRIO_PGRP as u64;
const IOPRIO_WHO_PROCESS: u64 = bindings::IOPRIO_WHO_PROCESS as u64;
const IOPRIO_WHO_PGRP: u64 = bindings::IOPRIO_WHO_PGRP as u64;
/// `siginfo_t.si_pid`'s offset (after si_signo, si_errno, si_code and padding)...
const SI_PID_OFFSET: u64 = 16;
/// ... and `compat_siginfo_t`'s (no padding after si_code).
const COMPAT_SI_PID_OFFSET: u64 = 12;

/// `getpid`, `gettid` and `getppid` from the IDs the task index keeps with the caller's
/// entry (`aid` its AID): no table lookup, and no lock but the index buckets'. `None`:
/// ask the handler.
#[inline]
pub(crate) fn own_id(own: OwnId, ids: OwnIds, task: Task<'_>, slot: Slot, registry: &Registry, aid: &Aid) -> Option<i64> {
    match own {
        OwnId::No => None,
        OwnId::Pid => ids.virtual_tgid.map(|v| i64::from(v.raw())),
        OwnId::Tid if ids.system_tid == task.tid() => Some(i64::from(ids.virtual_tid.raw())),
        OwnId::Tid => None,
        OwnId::Ppid => Some(parent_id(registry, aid, task, slot)),
    }
}

fn getpid(c: &Call<'_>) -> Outcome {
    let virtual_tgid = c.virtual_or_zero(c.task.tgid());
    if virtual_tgid > 0 {
        c.registry.tasks.set_virtual_tgid(c.task, VirtualPid::new(virtual_tgid as u32));
    }
    Outcome::Return(virtual_tgid)
}

/// `getppid` of `task`, the current task (slot `slot`), linked to `aid`: the parent's
/// virtual PID, 0 when it is outside the AID. Asked of the task index (is the parent
/// linked to this AID, and with which IDs), whose cost does not grow with the AID; the
/// PID table only when the parent's own entry does not know its virtual PID yet. The
/// answer is cached in the task's slot for the next call ([`TaskIndex::cached_parent_id`]).
/// Takes no reference and never sleeps.
///
/// [`TaskIndex::cached_parent_id`]: crate::pid::task_index::TaskIndex::cached_parent_id
#[inline(never)]
pub(crate) fn parent_id(registry: &Registry, aid: &Aid, task: Task<'_>, slot: Slot) -> i64 {
    // Read first: a link that changes while the answer is computed invalidates it.
    let generation = registry.tasks.generation();
    let (parent_address, parent_tgid, ids) = {
        let rcu = RcuReadLock::new();
        let parent = rcu.current_parent();
        (parent.key(), parent.tgid(), registry.tasks.ids_in(parent, aid))
    };
    let virtual_id = match ids {
        None => None,
        Some(OwnIds { virtual_tgid: Some(virtual_tgid), .. }) => Some(virtual_tgid),
        // Not cached: the answer comes from the PID table, not from the index.
        Some(_) => return i64::from(aid.state.lock().pids.pid_to_virtual_live(parent_tgid).map_or(0, VirtualPid::raw)),
    };
    let ppid = virtual_id.map_or(0, VirtualPid::raw);
    registry.tasks.cache_parent_id(task, slot, parent_address, ppid, generation);
    i64::from(ppid)
}

/// One system call made by a linked task, as a [`Translate`] function sees it: its
/// arguments and its AID, which it may use only until it returns (it is borrowed under
/// the dispatch's RCU read lock; such a function must not sleep).
pub(crate) struct Request<'a> {
    pub(crate) regs: &'a bindings::pt_regs,
    /// The six argument registers, read once from `regs` ([`args_of`]).
    pub(crate) args: &'a [u64; 6],
    /// Which registers hold the arguments, and the layout of user structures.
    pub(crate) abi: Abi,
    pub(crate) aid: &'a Aid,
    pub(crate) registry: &'a Registry,
    pub(crate) task: Task<'a>,
}

/// One system call made by a linked task, as a [`Handler`] sees it: a [`Request`]
/// (through `Deref`), the original to call, and a reference on the AID that keeps it
/// (and the module) alive while the handler sleeps.
pub(crate) struct Call<'a> {
    pub(crate) request: Request<'a>,
    /// The system call's function, to call it again unhooked.
    pub(crate) original: usize,
    pub(crate) aid: &'a Arc<Aid>,
}

impl<'a> core::ops::Deref for Call<'a> {
    type Target = Request<'a>;

    fn deref(&self) -> &Request<'a> {
        &self.request
    }
}

pub(crate) fn err(e: Error) -> Outcome {
    Outcome::Return(e.to_errno() as i64)
}

/// The six argument registers of a call through an entry of `abi`, in its order. An
/// i386 entry reads only their low 32 bits (the kernel's `__ia32_sys_*` wrappers
/// truncate them), so they are truncated here too.
#[inline]
pub(crate) fn args_of(regs: &bindings::pt_regs, abi: Abi) -> [u64; 6] {
    let r = regs;
    match abi {
        Abi::X64 | Abi::X32Compat => [r.di as u64, r.si as u64, r.dx as u64, r.r10 as u64, r.r8 as u64, r.r9 as u64],
        Abi::Ia32 => [
            u64::from(r.bx as u32),
            u64::from(r.cx as u32),
            u64::from(r.dx as u32),
            u64::from(r.si as u32),
            u64::from(r.di as u32),
            u64::from(r.bp as u32),
        ],
    }
}

/// The registers a hooked system call's original is called with: the argument
/// registers of its ABI, set from the caller's arguments and rewritten one by one.
///
/// Only the argument registers are written: a system call entry (the kernel's
/// `SYSCALL_DEFINE` and `COMPAT_SYSCALL_DEFINE` wrappers) reads nothing else of the
/// frame it is given; what else it needs of the caller's registers it reads from the
/// task's own frame (`current_pt_regs()`). Copying the whole frame cost about 80
/// instructions of every translated call.
pub(crate) struct Frame {
    regs: MaybeUninit<bindings::pt_regs>,
    abi: Abi,
}

impl Frame {
    /// A frame holding `args` (in `abi`'s order).
    #[inline]
    pub(crate) fn new(abi: Abi, args: &[u64; 6]) -> Frame {
        let mut frame = Frame { regs: MaybeUninit::uninit(), abi };
        let r = frame.regs.as_mut_ptr();
        let [a0, a1, a2, a3, a4, a5] = args.map(|v| v as c_ulong);
        // SAFETY: `r` points to the frame's own memory; fields are written through raw
        // pointers, and only the ones written are ever read (by the original).
        unsafe {
            match abi {
                Abi::X64 | Abi::X32Compat => {
                    (*r).di = a0;
                    (*r).si = a1;
                    (*r).dx = a2;
                    (*r).r10 = a3;
                    (*r).r8 = a4;
                    (*r).r9 = a5;
                }
                Abi::Ia32 => {
                    (*r).bx = a0;
                    (*r).cx = a1;
                    (*r).dx = a2;
                    (*r).si = a3;
                    (*r).di = a4;
                    (*r).bp = a5;
                }
            }
        }
        frame
    }

    /// A frame holding the caller's argument registers as they are (an i386 entry
    /// reads only their low halves itself).
    #[inline]
    pub(crate) fn from_regs(regs: &bindings::pt_regs, abi: Abi) -> Frame {
        let mut frame = Frame { regs: MaybeUninit::uninit(), abi };
        let r = frame.regs.as_mut_ptr();
        // SAFETY: as in `new`.
        unsafe {
            match abi {
                Abi::X64 | Abi::X32Compat => {
                    (*r).di = regs.di;
                    (*r).si = regs.si;
                    (*r).dx = regs.dx;
                    (*r).r10 = regs.r10;
                    (*r).r8 = regs.r8;
                    (*r).r9 = regs.r9;
                }
                Abi::Ia32 => {
                    (*r).bx = regs.bx;
                    (*r).cx = regs.cx;
                    (*r).dx = regs.dx;
                    (*r).si = regs.si;
                    (*r).di = regs.di;
                    (*r).bp = regs.bp;
                }
            }
        }
        frame
    }

    /// Argument `i` (`i < 6`) as the frame holds it.
    #[inline]
    fn get(&self, i: usize) -> u64 {
        let r = self.regs.as_ptr();
        // SAFETY: every argument register was written by the constructor.
        let v = unsafe {
            match (self.abi, i) {
                (Abi::Ia32, 0) => (*r).bx,
                (Abi::Ia32, 1) => (*r).cx,
                (Abi::Ia32, 2) => (*r).dx,
                (Abi::Ia32, 3) => (*r).si,
                (Abi::Ia32, 4) => (*r).di,
                (Abi::Ia32, _) => (*r).bp,
                (_, 0) => (*r).di,
                (_, 1) => (*r).si,
                (_, 2) => (*r).dx,
                (_, 3) => (*r).r10,
                (_, 4) => (*r).r8,
                (_, _) => (*r).r9,
            }
        };
        v as u64
    }

    /// `int` argument `i` as the system call reads it (the register's low half).
    #[inline]
    pub(crate) fn int_arg(&self, i: usize) -> i32 {
        self.get(i) as u32 as i32
    }

    /// Sets argument `i` (`i < 6`, in the ABI's order).
    #[inline]
    pub(crate) fn set(&mut self, i: usize, value: u64) {
        let r = self.regs.as_mut_ptr();
        let v = value as c_ulong;
        // SAFETY: as in `new`.
        unsafe {
            match (self.abi, i) {
                (Abi::Ia32, 0) => (*r).bx = v,
                (Abi::Ia32, 1) => (*r).cx = v,
                (Abi::Ia32, 2) => (*r).dx = v,
                (Abi::Ia32, 3) => (*r).si = v,
                (Abi::Ia32, 4) => (*r).di = v,
                (Abi::Ia32, _) => (*r).bp = v,
                (_, 0) => (*r).di = v,
                (_, 1) => (*r).si = v,
                (_, 2) => (*r).dx = v,
                (_, 3) => (*r).r10 = v,
                (_, 4) => (*r).r8 = v,
                (_, _) => (*r).r9 = v,
            }
        }
    }

    /// Sets `int` argument `i` to `value`, keeping the upper half of the register as
    /// it is: the kernel reads an int.
    #[inline]
    pub(crate) fn set_int(&mut self, i: usize, value: i32) {
        self.set(i, (self.get(i) & !0xffff_ffff) | u64::from(value as u32));
    }

    /// Runs the original system call `original` (an entry of the frame's ABI).
    #[inline]
    pub(crate) fn call(&mut self, original: usize) -> i64 {
        // The frame is not the task's saved registers, so the hook (the trampoline's own
        // test) lets this nested call through. `original` is the entry of the system
        // call this hook fired for (the glue derived it from the fentry site).
        // SAFETY: `original` takes a `pt_regs` pointer and reads only the argument
        // registers, all written by `new`; the frame lives on our stack for the call.
        unsafe { glue::appshot_glue_call_syscall(original as c_ulong, self.regs.as_mut_ptr()) as i64 }
    }
}

/// System PID behind a virtual PID of `aid`: from the table's cache, else under the
/// AID's lock.
#[inline]
fn pid_to_system(aid: &Aid, virtual_id: VirtualPid) -> Option<SystemPid> {
    match aid.caches.pids.get(virtual_id) {
        Some(system) => Some(system),
        None => pid_to_system_locked(aid, virtual_id),
    }
}

/// [`pid_to_system`] past the cache (out of line: a cached translation saves no
/// registers).
#[inline(never)]
fn pid_to_system_locked(aid: &Aid, virtual_id: VirtualPid) -> Option<SystemPid> {
    aid.state.lock().pids.pid_to_system(virtual_id)
}

/// The system PID for a PID > 0 a caller of `aid` passed, as the value the kernel
/// gets: [`NOBODY`] when it has no mapping.
#[inline]
fn to_system_or_nobody(aid: &Aid, virtual_id: u32) -> u32 {
    pid_to_system(aid, VirtualPid::new(virtual_id)).map_or(NOBODY, SystemPid::raw)
}

/// A process-or-group value (`pid`, or `-pgid` for a group, 0 unchanged) a caller of
/// `aid` passed, as the kernel must see it.
#[inline]
fn owner_to_system(aid: &Aid, value: i32) -> i32 {
    match value {
        v if v > 0 => to_system_or_nobody(aid, v as u32) as i32,
        v if v < 0 && v != i32::MIN => -(to_system_or_nobody(aid, v.unsigned_abs()) as i32),
        v => v,
    }
}

/// Translates the PID arguments `which` (those > 0) in `frame`.
#[inline]
fn translate_into(aid: &Aid, which: &[usize], frame: &mut Frame) {
    for &i in which {
        let pid = frame.int_arg(i);
        if pid > 0 {
            frame.set_int(i, to_system_or_nobody(aid, pid as u32) as i32);
        }
    }
}

impl Request<'_> {
    /// The six argument registers, in the order of the entry's ABI ([`args_of`]).
    #[inline]
    pub(crate) fn args(&self) -> [u64; 6] {
        *self.args
    }

    #[inline]
    pub(crate) fn arg(&self, i: usize) -> u64 {
        self.args[i]
    }

    /// An `int` argument (a PID, a selector such as `which` or `idtype`, flags) as the
    /// system call reads it: the low 32 bits of the register, whatever the upper ones hold.
    pub(crate) fn int_arg(&self, i: usize) -> i32 {
        self.arg(i) as u32 as i32
    }

    /// Virtual PID of a system PID, `None` when it is outside the AID.
    fn to_virtual(&self, system: SystemPid) -> Option<VirtualPid> {
        self.aid.state.lock().pids.pid_to_virtual(system)
    }

    /// How a system PID that a call returned is shown: its virtual PID, 0 when it is
    /// outside the AID, or unchanged when the caller itself left the AID during the call
    /// (a forced UNREGISTER or an UNLINK while it slept in `wait4`): it sees system IDs
    /// from then on.
    pub(crate) fn virtual_or_zero(&self, system: SystemPid) -> i64 {
        match self.to_virtual(system) {
            Some(virtual_id) => i64::from(virtual_id.raw()),
            None if !self.still_linked() => i64::from(system.raw()),
            None => 0,
        }
    }

    /// [`Self::virtual_or_zero`] of a system PID the kernel returned or wrote.
    pub(crate) fn shown(&self, system: u32) -> i64 {
        self.virtual_or_zero(SystemPid::new(system))
    }

    /// How a child's system PID that `fork` or a wait returned is shown: its virtual PID,
    /// or the system PID when the child is in no AID (a concurrent UNLINK and LINK of the
    /// caller's process can leave it so). Never 0, which would tell a parent it is the
    /// child (fork) or that no child changed state (wait).
    fn virtual_or_system(&self, system: SystemPid) -> i64 {
        i64::from(self.to_virtual(system).map_or(system.raw(), VirtualPid::raw))
    }

    /// Whether the caller is still linked to the AID its call started in.
    fn still_linked(&self) -> bool {
        let _state = self.aid.state.lock();
        self.registry.tasks.is_linked_to(self.task, self.aid)
    }

    /// The system PID for a PID > 0 a caller passed (a virtual PID of the AID), as the
    /// value the kernel gets: [`NOBODY`] when it has no mapping.
    pub(crate) fn to_system_or_nobody(&self, virtual_id: u32) -> u32 {
        to_system_or_nobody(self.aid, virtual_id)
    }

    /// Translates argument `i` in place if it is a PID > 0.
    pub(crate) fn translate_arg(&self, args: &mut [u64; 6], i: usize) {
        let pid = args[i] as u32 as i32;
        if pid > 0 {
            let system = self.to_system_or_nobody(pid as u32);
            // Keep the upper half as the caller passed it; the kernel reads an int.
            args[i] = (args[i] & !0xffff_ffff) | u64::from(system);
        }
    }

    /// A wait's PID argument `i` (already translated): a number the AID has no mapping
    /// for that is the system PID of a child of the caller's process in no AID (one
    /// that had exited, a zombie, when LINK took its parent) names that child, as a wait
    /// for any child reports it (by that PID). Waits reach only the caller's own
    /// children, so nothing else becomes reachable.
    fn wait_for_outside_child(&self, args: &mut [u64; 6], i: usize) {
        if args[i] as u32 != NOBODY {
            return;
        }
        let pid = self.arg(i) as u32 as i32;
        if pid <= 0 {
            return;
        }
        let Ok(child) = TaskRef::by_pid(pid) else {
            return;
        };
        let own_child = {
            let rcu = RcuReadLock::new();
            rcu.parent_of(child.task()).tgid() == self.task.tgid()
        };
        if own_child && self.registry.tasks.lookup(child.task()).is_none() {
            args[i] = (args[i] & !0xffff_ffff) | u64::from(pid as u32);
        }
    }

    /// Translates `-pgid` or a PID in argument `i` (other values stay).
    fn translate_pid_or_group(&self, args: &mut [u64; 6], i: usize) {
        let pid = args[i] as u32 as i32;
        // -1 keeps its meaning (every process, or any child): it names no group.
        if pid != -1 {
            args[i] = (args[i] & !0xffff_ffff) | u64::from(self.owner_to_system(pid) as u32);
        }
    }


    /// A pointer argument as the entry reads it: the x32 compat entries take 32-bit
    /// pointers (`compat_uptr_t`); i386 arguments are 32 bits already.
    pub(crate) fn ptr_arg(&self, i: usize) -> u64 {
        if self.abi == Abi::X32Compat { u64::from(self.arg(i) as u32) } else { self.arg(i) }
    }

    /// A process-or-group value (`pid`, or `-pgid` for a group, 0 unchanged) as the kernel
    /// must see it.
    pub(crate) fn owner_to_system(&self, value: i32) -> i32 {
        owner_to_system(self.aid, value)
    }

    /// A process-or-group value the kernel returned, as the caller sees it.
    pub(crate) fn owner_to_virtual(&self, value: i32) -> i32 {
        match value {
            v if v > 0 => self.shown(v as u32) as i32,
            v if v < 0 && v != i32::MIN => -(self.shown(v.unsigned_abs()) as i32),
            v => v,
        }
    }

}

impl Call<'_> {
    /// Runs the original system call with `args`, on a frame of its own.
    pub(crate) fn call(&self, args: [u64; 6]) -> i64 {
        Frame::new(self.abi, &args).call(self.original)
    }

    /// A frame of the caller's arguments, to rewrite some and [`Self::call_frame`].
    pub(crate) fn frame(&self) -> Frame {
        Frame::from_regs(self.regs, self.abi)
    }

    /// Runs the original system call on `frame`.
    pub(crate) fn call_frame(&self, frame: &mut Frame) -> i64 {
        frame.call(self.original)
    }

    /// Runs the original with `args` while the `int` at `address` in the caller's memory,
    /// a PID the kernel reads from there, holds `translate` of the caller's value; the
    /// caller's value is written back after the call. (Another thread of the caller
    /// reading that word during the call sees the system value.) An unreadable address
    /// is left for the kernel to fault on.
    pub(crate) fn call_with_user_int(&self, address: u64, args: [u64; 6], translate: impl Fn(i32) -> i32) -> i64 {
        let Some(wanted) = read_user_i32(address) else {
            return self.call(args);
        };
        let system = translate(wanted);
        if system == wanted {
            return self.call(args);
        }
        write_user_i32(address, system);
        let ret = self.call(args);
        write_user_i32(address, wanted);
        ret
    }

    /// Translates the PID arguments `which` (those > 0) and calls the original.
    pub(crate) fn targets(&self, which: &[usize]) -> Outcome {
        let mut frame = self.frame();
        translate_into(self.aid, which, &mut frame);
        Outcome::Return(self.call_frame(&mut frame))
    }

    /// Calls the original with `args` and shows a positive result as a virtual PID.
    fn call_out(&self, args: [u64; 6]) -> Outcome {
        let ret = self.call(args);
        Outcome::Return(if ret > 0 { self.shown(ret as u32) } else { ret })
    }

    /// Translates PID argument `i`, then like [`Self::call_out`].
    fn target_then_out(&self, i: usize) -> Outcome {
        let mut args = self.args();
        self.translate_arg(&mut args, i);
        self.call_out(args)
    }

    /// Calls a waiting original (`wait4`, `waitid`) until it returns something other
    /// than a child in no AID: a child that could not be linked was killed before it
    /// ran, and its creator was told its fork failed (see [`Self::call_child`]), so it is
    /// reaped here unseen. `reported` gives the system PID a result reports. Returns the
    /// result and, when it reports a child, how the caller sees it: the virtual PID the
    /// release hook recorded for a reaped child (its entry is gone by now), else the
    /// table's; 0 for a task outside the AID.
    fn call_wait(&self, args: [u64; 6], reported: impl Fn(i64) -> Option<u32>) -> (i64, Option<i64>) {
        loop {
            self.registry.tasks.set_reaped(self.task, None);
            let ret = self.call(args);
            // Whatever the result says (waitid without infop says only 0).
            let reaped = self.registry.tasks.take_reaped(self.task);
            if matches!(reaped, Some((_, Reaped::Refused))) && self.still_linked() {
                continue;
            }
            let shown = reported(ret).map(SystemPid::new).map(|system| match reaped {
                Some((child, Reaped::Linked(virtual_id))) if child == system => i64::from(virtual_id.raw()),
                // A child in no AID (it had exited before LINK took this process): its
                // system PID, never 0 (which would say no child changed state).
                Some((child, Reaped::Outside)) if child == system => i64::from(system.raw()),
                // Not reaped (WNOWAIT, a stop or a continue), or the caller left the AID.
                _ => self.virtual_or_system(system),
            });
            return (ret, shown);
        }
    }

    /// Calls a process-creating original; its positive result is the child's system
    /// TID, linked before the call returned.
    fn call_child(&self, args: [u64; 6]) -> Outcome {
        let ret = self.call(args);
        if ret <= 0 {
            return Outcome::Return(ret);
        }
        // The new-task hook recorded the child, which may have exited and been reaped
        // already. A child that could not be linked was killed before it ran
        // (link.rs); its creator gets the error a failed fork gives (EAGAIN; EEXIST for
        // a `set_tid` PID taken meanwhile), not a system PID.
        let child = SystemPid::new(ret as u32);
        Outcome::Return(match self.registry.tasks.take_new_child(self.task, child) {
            Some(Err(error)) => error.to_errno() as i64,
            Some(Ok(virtual_id)) => i64::from(virtual_id.raw()),
            None => self.virtual_or_system(child),
        })
    }
}

fn setpgid(c: &Call<'_>) -> Outcome {
    // A group with no mapping becomes NOBODY: setpgid's EPERM for a missing group.
    c.targets(&[0, 1])
}

/// unshare(flags): a new PID namespace would give the caller's children PIDs that no
/// table holds. `flags` is an `unsigned long`.
fn unshare(c: &Call<'_>) -> Outcome {
    if c.arg(0) & CLONE_NEWPID != 0 {
        return err(EINVAL);
    }
    Outcome::Native
}

/// setns(fd, nstype): entering another PID namespace is refused like `unshare`. With
/// `nstype` 0 the namespace type is the file's (a namespace file, or a pidfd, whose 0
/// the kernel refuses itself).
fn setns(c: &Call<'_>) -> Outcome {
    let nstype = c.int_arg(1) as u32 as u64;
    let refused = nstype & CLONE_NEWPID != 0 || (nstype == 0 && glue::fd_is_pid_namespace(c.int_arg(0)));
    if refused {
        return err(EINVAL);
    }
    Outcome::Native
}

fn kill(c: &Call<'_>) -> Outcome {
    let mut frame = c.frame();
    if kill_args(c.aid, &mut frame) {
        Outcome::Return(c.call_frame(&mut frame))
    } else {
        kill_all(c)
    }
}

/// [`kill`]'s fast path: the process or group translated; `false` for `kill(-1, sig)`,
/// which signals the AID's processes one by one ([`kill_all`]).
fn kill_args(aid: &Aid, frame: &mut Frame) -> bool {
    let pid = frame.int_arg(0);
    if pid > 0 {
        if let Some(system) = aid.caches.pids.get(VirtualPid::new(pid as u32)) {
            // A cached process, written here: the general case below is a tail call,
            // so that this one saves no registers.
            frame.set_int(0, system.raw() as i32);
            return true;
        }
    }
    kill_args_uncached(aid, frame)
}

/// [`kill_args`] but for a cached process.
#[inline(never)]
fn kill_args_uncached(aid: &Aid, frame: &mut Frame) -> bool {
    let pid = frame.int_arg(0);
    if pid == -1 {
        return false;
    }
    frame.set_int(0, owner_to_system(aid, pid));
    true
}

/// Passes of [`kill_all`] over processes created while it signals.
const KILL_ALL_PASSES: usize = 8;

/// kill(-1, sig): every process of the AID except the caller and virtual PID 1, with the
/// kernel's rule for the result (ESRCH when none was tried, else the last error other
/// than EPERM, else 0).
///
/// The kernel signals under `tasklist_lock`, so a fork cannot complete during the call
/// (one under way fails once its parent has the signal: the kernel checks under the
/// parent's signal lock before it attaches the child). Here the list is taken first and
/// signalled after, so a child that a listed process created before it got the signal
/// would escape, the more so as a new child enters the AID's table only when it is
/// woken, after the kernel attached it. So each round also signals, from the kernel's
/// own list of processes, every child of a process signalled so far, and rounds go on
/// until one signals nobody new. (A process created during the call is signalled even
/// where the kernel would have had its parent's fork restart after a signal the parent
/// handles.)
#[inline(never)]
fn kill_all(c: &Call<'_>) -> Outcome {
    let me = c.task.tgid();
    let mut signalled: KVec<SystemPid> = KVec::new();
    let (mut count, mut result) = (0, 0i64);
    let mut signal = |system: SystemPid, signalled: &mut KVec<SystemPid>| -> Result {
        signalled.push(system, GFP_KERNEL)?;
        let mut args = c.args();
        args[0] = u64::from(system.raw());
        let ret = c.call(args);
        count += 1;
        if ret != EPERM.to_errno() as i64 {
            result = ret;
        }
        Ok(())
    };
    for _ in 0..KILL_ALL_PASSES {
        let before = signalled.len();
        let capacity = c.aid.state.lock().pids.nr_processes() as usize;
        let Ok(mut targets) = KVec::from_elem((SystemPid::new(0), VirtualPid::new(0)), capacity, GFP_KERNEL) else {
            return err(ENOMEM);
        };
        let n = c.aid.state.lock().pids.processes(&mut targets);
        for &(system, virtual_id) in targets[..n].iter() {
            if system == me || virtual_id.raw() == 1 || signalled.contains(&system) {
                continue;
            }
            if signal(system, &mut signalled).is_err() {
                return err(ENOMEM);
            }
        }
        // Children the kernel has attached that the table may not hold yet.
        let Ok((processes, parents)) = crate::linux::task::all_processes() else {
            return err(ENOMEM);
        };
        for (process, &parent) in processes.iter().zip(parents.iter()) {
            let system = process.task().tgid();
            if signalled.contains(&SystemPid::new(parent)) && system != me && !signalled.contains(&system) {
                if signal(system, &mut signalled).is_err() {
                    return err(ENOMEM);
                }
            }
        }
        if signalled.len() == before {
            break;
        }
    }
    if count == 0 {
        return err(ESRCH);
    }
    Outcome::Return(result)
}

/// `rt_sigtimedwait(set, info, timeout, size)` of the i386 and x32 entries: the siginfo
/// goes out through `copy_siginfo_to_user32`, which no hook can replace; its `si_pid`
/// is translated in the caller's buffer after the call.
fn compat_sigtimedwait(c: &Call<'_>) -> Outcome {
    let ret = c.call(c.args());
    let info = c.ptr_arg(1);
    if ret > 0 && info != 0 {
        crate::hooks::signals::fix_compat_user_siginfo(c.aid, info);
    }
    Outcome::Return(ret)
}

fn wait4(c: &Call<'_>) -> Outcome {
    let mut args = c.args();
    c.translate_pid_or_group(&mut args, 0);
    c.wait_for_outside_child(&mut args, 0);
    let (ret, shown) = c.call_wait(args, |ret| (ret > 0).then_some(ret as u32));
    Outcome::Return(shown.unwrap_or(ret))
}

fn waitid(c: &Call<'_>) -> Outcome {
    let mut args = c.args();
    // `idtype` is an int: compare the 32 bits the kernel reads.
    let idtype = u64::from(c.int_arg(0) as u32);
    if idtype == P_PID || idtype == P_PGID {
        c.translate_arg(&mut args, 1);
    }
    if idtype == P_PID {
        c.wait_for_outside_child(&mut args, 1);
    }
    let infop = args[2];
    let offset = if c.abi.compat() { COMPAT_SI_PID_OFFSET } else { SI_PID_OFFSET };
    let si_pid = (infop != 0).then(|| infop.wrapping_add(offset) as usize);
    let read_si_pid = |at: usize| {
        let mut raw = [0u8; 4];
        UserSlice::new(at, 4).reader().read_slice(&mut raw).ok().map(|()| u32::from_ne_bytes(raw))
    };
    // The kernel wrote si_pid: a system PID, or 0 when nothing was waited for (WNOHANG).
    let (ret, shown) = c.call_wait(args, |ret| match (ret, si_pid) {
        (0, Some(at)) => read_si_pid(at).filter(|&pid| pid != 0),
        _ => None,
    });
    if let (Some(at), Some(shown)) = (si_pid, shown) {
        let _ = UserSlice::new(at, 4).writer().write_slice(&(shown as u32).to_ne_bytes());
    }
    Outcome::Return(ret)
}

/// get/setpriority(which, who): `which` is an int.
fn priority(c: &Call<'_>) -> Outcome {
    match u64::from(c.int_arg(0) as u32) {
        PRIO_PROCESS | PRIO_PGRP => c.targets(&[1]),
        _ => Outcome::Native,
    }
}

/// ioprio_get/set(which, who): `which` is an int.
fn ioprio(c: &Call<'_>) -> Outcome {
    match u64::from(c.int_arg(0) as u32) {
        IOPRIO_WHO_PROCESS | IOPRIO_WHO_PGRP => c.targets(&[1]),
        _ => Outcome::Native,
    }
}

pub(crate) fn read_user_i32(address: u64) -> Option<i32> {
    let mut raw = [0u8; 4];
    UserSlice::new(address as usize, 4).reader().read_slice(&mut raw).ok()?;
    Some(i32::from_ne_bytes(raw))
}

pub(crate) fn write_user_i32(address: u64, value: i32) {
    // A failed write leaves what the kernel wrote; the caller unmapped its own buffer.
    let _ = UserSlice::new(address as usize, 4).writer().write_slice(&value.to_ne_bytes());
}

/// The `ioctl` row's pre-filter: the requests [`ioctl`] handles.
fn ioctl_wants(args: &[u64; 6]) -> bool {
    matches!(args[1] as u32, TIOCGPGRP | TIOCGSID | TIOCSPGRP) || interfaces::is_socket_owner_ioctl(args[1] as u32)
}

/// ioctl: the terminal requests that carry a process group or session ID, and the
/// socket requests that carry an owner; every other request runs as made.
fn ioctl(c: &Call<'_>) -> Outcome {
    // The compat entries take the argument as a 32-bit `compat_ulong_t`.
    let address = if c.abi.compat() { u64::from(c.arg(2) as u32) } else { c.arg(2) };
    let request = c.arg(1) as u32;
    match request {
        TIOCGPGRP | TIOCGSID => {
            let ret = c.call(c.args());
            if ret == 0 {
                interfaces::rewrite_user_int(address, |pid| if pid > 0 { c.shown(pid as u32) as i32 } else { pid });
            }
            Outcome::Return(ret)
        }
        // The kernel reads the group from the caller's buffer.
        TIOCSPGRP => Outcome::Return(c.call_with_user_int(address, c.args(), |pgrp| {
            if pgrp > 0 { c.to_system_or_nobody(pgrp as u32) as i32 } else { pgrp }
        })),
        _ => interfaces::socket_owner_ioctl(c, request, address).unwrap_or(Outcome::Native),
    }
}
