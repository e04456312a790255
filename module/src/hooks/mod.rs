// SPDX-License-Identifier: GPL-2.0-only
//! What the kernel hooks call, and when the hooks are attached.
//!
//! Every hook is an ftrace direct call (the mechanism lives in `glue/appshot_glue.c` and
//! `glue/appshot_trampoline.S`, the choice is explained in docs/design/hooks.md):
//!
//! | kernel function | when | handler |
//! |---|---|---|
//! | `wake_up_new_task(p)` | a new process or thread is about to run for the first time | [`link::on_new_task`] |
//! | `release_task(p)` *(unfiltered)* | a process or thread is reaped, its TID still allocated | [`link::on_release_task`] |
//! | `__x64_sys_*`, `__ia32_sys_*`, `__x64_compat_sys_*`, `__ia32_compat_sys_*` `(regs)` | a system call of [`syscalls::SYSCALLS`] from user space, any ABI | its handler there |
//! | `kernel_clone(args)` | fork, vfork, clone, clone3 (any ABI), with the kernel's final copy of the flags | [`on_kernel_clone`] |
//! | `copy_siginfo_to_user(to, from)` | a siginfo is copied to user space | [`signals::copy_to_user`] |
//! | `signalfd_read_iter(iocb, to)` | a signalfd is read (`read`, `readv`, `preadv`) | [`signals::fix_signalfd_records`] |
//! | `futex_exit_release(tsk)`, `futex_exec_release(tsk)` | a thread exits or execs, before the kernel walks its robust futex lists | [`futex::on_futex_release`] |
//! | `find_get_task_by_vpid(nr)` | the kernel looks a task up by number (in a PI futex operation: the owner named by the futex word) | [`futex::find_pi_owner`] |
//! | `__task_pid_nr_ns(task, type, ns)` *(on demand)* | the kernel takes a task's number (in a PI futex operation under a PID range: the owner TID it writes to or compares with the futex word) | [`futex::pi_owner_tid`] |
//! | `ipc_rmid(ids, ipcp)` *(unfiltered)* | the kernel removes a SysV object, whoever removes it | [`crate::ipc::on_rmid`] |
//! | `sysvipc_sem_proc_show`, `sysvipc_shm_proc_show`, `sysvipc_msg_proc_show` `(m, it)` | a line of `/proc/sysvipc/*` is printed for a reader | [`crate::ipc::proc::show`] |
//! | `ia32_setup_rt_frame(ksig, regs)`, `x32_setup_rt_frame(ksig, regs)` | a signal is delivered to an i386 or x32 `SA_SIGINFO` handler | [`signals::translate_delivery`] |
//!
//! [`HOOKED`] is the one list of these functions: the glue gets their names from it,
//! resolves them and reports where each one's fentry call returns (its *site*), which
//! is how a hook call is told apart ([`Sites`]).
//!
//! All run in process context. All but `find_get_task_by_vpid`, `__task_pid_nr_ns`,
//! `ipc_rmid` and the `/proc/sysvipc` show functions run with no spinlock held, so their
//! handlers may sleep and touch user memory; the futex code calls the first two under
//! its hash-bucket lock, the second one also under a PI mutex's raw `wait_lock` with
//! interrupts off, the IPC code the others under the object's spinlock, and their
//! handlers neither sleep nor allocate. A function marked *unfiltered* is reached
//! through the trampoline without the task filter: every task's call reaches its
//! handler ([`UNFILTERED`]). The hooks are attached while at least one AID is registered (see
//! `Registry::register`/`unregister`): with no AID, a loaded module costs nothing.
//! `__task_pid_nr_ns` is behind every `getpid` of every process, so even the
//! trampoline's fast path would show there: it is attached *on demand*, the first time a
//! task of an AID with a PID range makes a PI futex call, and detached with the rest
//! ([`ON_DEMAND`]).
//! While attached, a task in no AID pays for the trampoline's fast path (a hash of its
//! address and one load, see `task_index`), unless its slot also holds a linked task; a
//! linked task's `getpid`/`gettid` are answered from its slot's lockless cache
//! ([`TaskIndex::own_ids`]).
//!
//! [`TaskIndex::own_ids`]: crate::pid::task_index::TaskIndex::own_ids

pub(crate) mod attach;
pub(crate) mod pin;
pub(crate) mod signals;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use kernel::bindings;
use kernel::ffi::{c_char, c_long, c_ulong, c_void};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

use crate::aid::Aid;
use attach::Group;
use crate::table::{kind, VirtualPid};

use crate::linux::glue::{self, RcuReadLock};
use pin::CallPin;
use crate::pid::{futex, link};
use crate::linux::task::Task;
use crate::aid::registry::{self, Registry};
use crate::syscalls::{self, Call, Frame, Outcome, OwnId, Request, Syscall, SYSCALLS};
use crate::pid::task_index::Slot;

/// Most segments a vectored read has (`UIO_MAXIOV`).
const UIO_MAXIOV: usize = bindings::UIO_MAXIOV as usize;

/// The kernel functions hooked besides the system calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KernelHook {
    NewTask,
    ReleaseTask,
    KernelClone,
    CopySiginfo,
    SignalfdRead,
    FutexRelease,
    FindTask,
    PidNr,
    IpcRmid,
    SemProcShow,
    ShmProcShow,
    MsgProcShow,
    Ia32Frame,
    X32Frame,
}

/// Every kernel function hooked besides the system calls, with what it is.
const KERNEL_FUNCTIONS: &[(&CStr, KernelHook)] = &[
    (kernel::c_str!("wake_up_new_task"), KernelHook::NewTask),
    (kernel::c_str!("release_task"), KernelHook::ReleaseTask),
    (kernel::c_str!("kernel_clone"), KernelHook::KernelClone),
    (kernel::c_str!("copy_siginfo_to_user"), KernelHook::CopySiginfo),
    (kernel::c_str!("signalfd_read_iter"), KernelHook::SignalfdRead),
    (kernel::c_str!("futex_exit_release"), KernelHook::FutexRelease),
    (kernel::c_str!("futex_exec_release"), KernelHook::FutexRelease),
    (kernel::c_str!("find_get_task_by_vpid"), KernelHook::FindTask),
    (kernel::c_str!("__task_pid_nr_ns"), KernelHook::PidNr),
    (kernel::c_str!("ipc_rmid"), KernelHook::IpcRmid),
    (kernel::c_str!("sysvipc_sem_proc_show"), KernelHook::SemProcShow),
    (kernel::c_str!("sysvipc_shm_proc_show"), KernelHook::ShmProcShow),
    (kernel::c_str!("sysvipc_msg_proc_show"), KernelHook::MsgProcShow),
    (kernel::c_str!("ia32_setup_rt_frame"), KernelHook::Ia32Frame),
    (kernel::c_str!("x32_setup_rt_frame"), KernelHook::X32Frame),
];

/// The kernel functions attached only when first needed (see the module documentation):
/// the glue puts them in an `ftrace_ops` of their own, [`attach::attach_on_demand`]
/// attaches it.
const ON_DEMAND: &[KernelHook] = &[KernelHook::PidNr];

/// The kernel functions whose every call reaches the handler, whichever task makes it
/// (the glue hooks them through the trampoline without the task filter): a linked task
/// may be reaped, and an AID's object removed, by a task in no AID.
const UNFILTERED: &[KernelHook] = &[KernelHook::ReleaseTask, KernelHook::IpcRmid];

// `Sites::kernel` numbers the kernel functions in a byte.
const _: () = assert!(KERNEL_FUNCTIONS.len() < u8::MAX as usize);

/// Number of hooked functions: [`KERNEL_FUNCTIONS`], then [`SYSCALLS`].
const HOOKED: usize = KERNEL_FUNCTIONS.len() + SYSCALLS.len();

/// One hooked function, by its index in the concatenation of the two tables.
#[derive(Clone, Copy)]
enum Hooked {
    Kernel(KernelHook),
    Syscall(&'static Syscall),
}

impl Hooked {
    fn at(index: usize) -> Option<Hooked> {
        match KERNEL_FUNCTIONS.get(index) {
            Some(&(_, hook)) => Some(Hooked::Kernel(hook)),
            None => SYSCALLS.get(index - KERNEL_FUNCTIONS.len()).map(Hooked::Syscall),
        }
    }

    fn name(index: usize) -> &'static CStr {
        match KERNEL_FUNCTIONS.get(index) {
            Some(&(name, _)) => name,
            None => SYSCALLS[index - KERNEL_FUNCTIONS.len()].function,
        }
    }

    /// Whether this kernel has the function at all: the i386 entries exist only with
    /// IA32 emulation, the x32 ones only with the x32 ABI. Every other one must be found.
    fn present_in_kernel(index: usize) -> bool {
        match Hooked::at(index) {
            Some(Hooked::Syscall(syscall)) => match syscall.abi {
                syscalls::Abi::X64 => true,
                syscalls::Abi::Ia32 => glue::has_ia32_entries(),
                syscalls::Abi::X32Compat => glue::has_x32_entries(),
            },
            Some(Hooked::Kernel(KernelHook::Ia32Frame)) => glue::has_ia32_entries(),
            Some(Hooked::Kernel(KernelHook::X32Frame)) => glue::has_x32_entries(),
            _ => true,
        }
    }

    /// The glue's group of the function: which trampoline its hook goes through.
    fn group(index: usize) -> Group {
        match Hooked::at(index) {
            Some(Hooked::Syscall(_)) | None => Group::Syscall,
            Some(Hooked::Kernel(hook)) if ON_DEMAND.contains(&hook) => Group::OnDemand,
            Some(Hooked::Kernel(hook)) if UNFILTERED.contains(&hook) => Group::Unfiltered,
            Some(Hooked::Kernel(_)) => Group::Kernel,
        }
    }

    /// Whether a handler calls the function itself (through an indirect call, which
    /// IBT lets land only on ENDBR).
    fn called_by_handler(self) -> bool {
        matches!(
            self,
            Hooked::Syscall(_)
                | Hooked::Kernel(
                    KernelHook::SignalfdRead
                        | KernelHook::SemProcShow
                        | KernelHook::ShmProcShow
                        | KernelHook::MsgProcShow
                )
        )
    }
}

/// Slots of the site hash: a power of two, at least twice the hooked functions, so a
/// lookup ends after one or two probes.
const SITE_SLOTS: usize = (2 * HOOKED).next_power_of_two();

/// The sites of the hooked functions (the return address of each one's fentry call,
/// which the trampoline sees), in an open-addressed hash to what each one is, so that a
/// hook call finds its function in constant time: a system call's row, or a kernel
/// function (which is also how a handler's nested system call, which passes a copy of
/// the registers, is told from a kernel function in one probe). Written once by
/// [`init`], before the hooks can be attached; read-only afterwards, so relaxed loads see
/// the final values (attaching the hooks orders them before any hook call).
struct Sites {
    /// Site of each slot, 0 for an empty one.
    slots: [AtomicUsize; SITE_SLOTS],
    /// The system call of each slot, null for a kernel function's.
    syscalls: [AtomicPtr<Syscall>; SITE_SLOTS],
    /// For a kernel function's slot, its index in [`KERNEL_FUNCTIONS`] plus one; 0 for a
    /// system call's.
    kernel: [AtomicU8; SITE_SLOTS],
    /// The getpid sites (x86-64 and i386), checked first on the hot path.
    getpid: [AtomicUsize; 2],
    /// The getppid sites, checked next.
    getppid: [AtomicUsize; 2],
}

static SITES: Sites = Sites {
    slots: [const { AtomicUsize::new(0) }; SITE_SLOTS],
    syscalls: [const { AtomicPtr::new(core::ptr::null_mut()) }; SITE_SLOTS],
    kernel: [const { AtomicU8::new(0) }; SITE_SLOTS],
    getpid: [const { AtomicUsize::new(usize::MAX) }; 2],
    getppid: [const { AtomicUsize::new(usize::MAX) }; 2],
};


impl Sites {
    /// The first slot to probe for `site` (Fibonacci hashing).
    fn home(site: usize) -> usize {
        (site as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize >> (usize::BITS - SITE_SLOTS.trailing_zeros())
    }

    /// Records `site` as a system call's or a kernel function's (module load, before
    /// attaching).
    fn insert(&self, site: usize, what: Hooked) {
        let mut slot = Self::home(site);
        while self.slots[slot].load(Ordering::Relaxed) != 0 {
            slot = (slot + 1) % SITE_SLOTS;
        }
        self.slots[slot].store(site, Ordering::Relaxed);
        match what {
            Hooked::Syscall(syscall) => {
                self.syscalls[slot].store(syscall as *const Syscall as *mut Syscall, Ordering::Relaxed);
            }
            Hooked::Kernel(hook) => {
                let at = KERNEL_FUNCTIONS.iter().position(|&(_, h)| h == hook).unwrap_or(0);
                self.kernel[slot].store(at as u8 + 1, Ordering::Relaxed);
            }
        }
    }

    /// The slot of `site`, if it is a hooked function's.
    #[inline]
    fn slot(&self, site: usize) -> Option<usize> {
        let mut slot = Self::home(site);
        loop {
            match self.slots[slot].load(Ordering::Relaxed) {
                0 => return None,
                at if at == site => return Some(slot),
                _ => slot = (slot + 1) % SITE_SLOTS,
            }
        }
    }

    /// The system call whose fentry call returns to `site`.
    #[inline]
    fn syscall(&self, site: usize) -> Option<&'static Syscall> {
        let slot = self.slot(site)?;
        // SAFETY: `insert` stored null or a pointer to an element of the static
        // `SYSCALLS` table.
        unsafe { self.syscalls[slot].load(Ordering::Relaxed).as_ref() }
    }

    /// The kernel function (not a system call) whose fentry call returns to `site`.
    #[inline]
    fn kernel_function(&self, site: usize) -> Option<KernelHook> {
        let slot = self.slot(site)?;
        let at = usize::from(self.kernel[slot].load(Ordering::Relaxed)).checked_sub(1)?;
        Some(KERNEL_FUNCTIONS[at].1)
    }

    #[inline]
    fn is_getpid(&self, site: usize) -> bool {
        Self::is_one_of(&self.getpid, site)
    }

    #[inline]
    fn is_getppid(&self, site: usize) -> bool {
        Self::is_one_of(&self.getppid, site)
    }

    /// Whether `site` is one of an entry's two sites (x86-64, i386); unrolled, as it runs
    /// on every call of a linked task.
    #[inline]
    fn is_one_of(sites: &[AtomicUsize; 2], site: usize) -> bool {
        sites[0].load(Ordering::Relaxed) == site || sites[1].load(Ordering::Relaxed) == site
    }
}

/// The x86-64 system calls a handler calls itself (an object's existence check, the
/// listing's `IPC_STAT`s, the i386 `*_ds` through the 64-bit layout, `--destroy-ipc`),
/// each found once at load so that a call costs one load, not a search.
#[derive(Clone, Copy)]
pub(crate) enum Callback {
    Semctl,
    Shmctl,
    Msgctl,
}

impl Callback {
    const ALL: [Callback; 3] = [Callback::Semctl, Callback::Shmctl, Callback::Msgctl];

    fn function(self) -> &'static CStr {
        match self {
            Callback::Semctl => kernel::c_str!("__x64_sys_semctl"),
            Callback::Shmctl => kernel::c_str!("__x64_sys_shmctl"),
            Callback::Msgctl => kernel::c_str!("__x64_sys_msgctl"),
        }
    }
}

/// The site of each [`Callback`] (0 until [`init`] finds it), written once before the
/// hooks are attached, read-only afterwards (relaxed loads, as [`SITES`]).
static CALLBACK_SITES: [AtomicUsize; Callback::ALL.len()] = [const { AtomicUsize::new(0) }; Callback::ALL.len()];

/// Calls the hooked system call entry `callback` from kernel code, with `args` in its
/// registers: a copy of registers, so its own hook lets it run unhooked. `None` when the
/// entry is not hooked.
pub(crate) fn call_syscall(callback: Callback, args: [u64; 6]) -> Option<i64> {
    let site = CALLBACK_SITES[callback as usize].load(Ordering::Relaxed);
    if site == 0 {
        return None;
    }
    // SAFETY: pt_regs is plain integers; all zero is a valid value.
    let mut regs: bindings::pt_regs = unsafe { core::mem::zeroed() };
    regs.di = args[0] as usize;
    regs.si = args[1] as usize;
    regs.dx = args[2] as usize;
    regs.r10 = args[3] as usize;
    regs.r8 = args[4] as usize;
    regs.r9 = args[5] as usize;
    // SAFETY: `site` is a hooked system call's, checked callable at load; the entry reads
    // its arguments from `regs`, a valid local.
    Some(unsafe { glue::appshot_glue_call_syscall(site as c_ulong, &mut regs) } as i64)
}

/// Finds every hooked function and sets the hook filter (module load). Nothing is
/// attached yet. Fails, naming the function, when one is missing or cannot be called
/// the way its handler calls it: the module never runs half-hooked.
pub(crate) fn init() -> Result {
    let mut wanted: KVec<usize> = KVec::with_capacity(HOOKED, GFP_KERNEL)?;
    let mut names: KVec<*const c_char> = KVec::with_capacity(HOOKED, GFP_KERNEL)?;
    // In the glue's order of groups.
    let mut counts = [0u32; 4];
    for group in Group::ALL {
        for index in (0..HOOKED).filter(|&i| Hooked::present_in_kernel(i) && Hooked::group(i) == group) {
            wanted.push(index, GFP_KERNEL)?;
            names.push(Hooked::name(index).as_char_ptr(), GFP_KERNEL)?;
            counts[group as usize] += 1;
        }
    }
    let sites = attach::resolve(&names, counts)?;
    let mut pairs: KVec<(usize, u16)> = KVec::with_capacity(wanted.len(), GFP_KERNEL)?;
    for (&index, &site) in wanted.iter().zip(sites.iter()) {
        let hooked = Hooked::at(index).ok_or(EINVAL)?;
        if hooked.called_by_handler() && !attach::callable(site) {
            pr_err!(
                "{} cannot be called back (its first instruction is not ENDBR: FineIBT?); boot with cfi=kcfi or ibt=off to use appshot\n",
                Hooked::name(index).to_str().unwrap_or("?")
            );
            attach::free();
            return Err(EINVAL);
        }
        pairs.push((site as usize, index as u16), GFP_KERNEL)?;
    }
    let (mut getpid, mut getppid) = (0, 0);
    for &(site, index) in pairs.iter() {
        let Some(hooked) = Hooked::at(usize::from(index)) else {
            continue;
        };
        SITES.insert(site, hooked);
        if let Hooked::Syscall(syscall) = hooked {
            if syscall.abi == syscalls::Abi::X64 {
                for callback in Callback::ALL {
                    if syscall.function.as_bytes() == callback.function().as_bytes() {
                        CALLBACK_SITES[callback as usize].store(site, Ordering::Relaxed);
                    }
                }
            }
            if syscall.own == OwnId::Pid && getpid < 2 {
                SITES.getpid[getpid].store(site, Ordering::Relaxed);
                getpid += 1;
            }
            if syscall.own == OwnId::Ppid && getppid < 2 {
                SITES.getppid[getppid].store(site, Ordering::Relaxed);
                getppid += 1;
            }
        }
    }
    Ok(())
}

/// The entry of every hook call of a kernel function other than a system call (from
/// the trampolines through the glue): `args` are the hooked function's six argument
/// registers, `site` tells which function it is. Returns `true` with the result in `*out`
/// to replace the call, `false` to let the function run.
///
/// # Safety
/// `args` points to six readable words; `out` points to the trampoline's result slot.
#[no_mangle]
pub(crate) unsafe extern "C" fn appshot_rust_hook(args: *const c_ulong, site: c_ulong, out: *mut c_long) -> bool {
    let Some(registry) = registry::get() else {
        return false;
    };
    let Some(hook) = SITES.kernel_function(site as usize) else {
        return false;
    };
    // SAFETY: as promised by the caller.
    unsafe { kernel_function(registry, hook, args, site as usize, out) }
}

/// The entry of every hooked system call of a task whose slot holds a linked task,
/// called straight from the system calls' trampoline (`appshot_trampoline_syscall`),
/// which has checked that `regs`, the entry's only argument, is the task's own saved
/// user registers (a handler's call of the original, on a copy, never gets here: the
/// recursion guard). `site` tells which entry it is, `slot` is the task's index slot,
/// `task` the current task. Returns `true` with the result in `*out` to replace the
/// call, `false` to let the entry run.
///
/// The hot path: a task in no AID whose slot also holds a linked task leaves in
/// [`syscall`]; a linked task's `getpid` is answered here from its slot's cache, and
/// everything else is a tail call, so this part saves no registers.
///
/// # Safety
/// `regs` is `task_pt_regs(task)`; `out` points to the trampoline's result slot; `task`
/// is `current`.
#[no_mangle]
pub(crate) unsafe extern "C" fn appshot_rust_syscall(
    regs: *mut bindings::pt_regs,
    site: c_ulong,
    out: *mut c_long,
    slot: c_ulong,
    task: *mut bindings::task_struct,
) -> bool {
    let Some(registry) = registry::get() else {
        return false;
    };
    let slot = Slot::from_trampoline(slot as usize);
    if SITES.is_getpid(site as usize) {
        if let Some(ids) = registry.tasks.cached_own_ids(task as usize, slot) {
            if let Some(virtual_tgid) = ids.virtual_tgid {
                // SAFETY: `out` points to the trampoline's result slot.
                unsafe { *out = virtual_tgid.raw() as c_long };
                return true;
            }
        }
    } else if SITES.is_getppid(site as usize) {
        return getppid(regs, site as usize, out, slot, task, registry);
    }
    syscall(regs, site as usize, out, slot, task, registry)
}

/// `getppid` of a task whose slot holds a linked task: from the slot's cache when it
/// still holds, else through [`syscall`] (which fills the cache). Out of line so that
/// [`appshot_rust_syscall`] saves no registers.
#[inline(never)]
fn getppid(
    regs: *mut bindings::pt_regs,
    site: usize,
    out: *mut c_long,
    slot: Slot,
    task: *mut bindings::task_struct,
    registry: &Registry,
) -> bool {
    if let Some(ppid) = registry.tasks.cached_parent_id(task as usize, slot) {
        // SAFETY: `out` points to the trampoline's result slot.
        unsafe { *out = ppid as c_long };
        return true;
    }
    syscall(regs, site, out, slot, task, registry)
}

/// Every system call of a task whose slot holds a linked task, but the cached `getpid`.
///
/// The caller's IDs and AID come from its slot's cache under an RCU read lock (no lock,
/// no reference: [`TaskIndex::current_link`]); own IDs are answered right there. A row's
/// fast path ([`syscalls::Translate`]: `semop`, `msgsnd`, `msgrcv`, `kill`...) rewrites
/// the arguments under that lock and the original is called with no reference, the call
/// counted instead ([`pin`]). Otherwise the handler holds a reference on the AID, which
/// also keeps the module loaded while it sleeps (a blocking `wait4`: `Aid::_module`).
///
/// [`TaskIndex::current_link`]: crate::pid::task_index::TaskIndex::current_link
#[inline(never)]
fn syscall(
    regs: *mut bindings::pt_regs,
    site: usize,
    out: *mut c_long,
    slot: Slot,
    task: *mut bindings::task_struct,
    registry: &Registry,
) -> bool {
    let Some(task) = NonNull::new(task) else {
        return false;
    };
    // SAFETY: the glue passes `current`, which stays valid while it runs this call.
    let task = unsafe { Task::from_raw(task) };
    let Some(syscall) = SITES.syscall(site) else {
        return false;
    };
    // SAFETY: the glue passes the current task's saved user registers, valid and not
    // written by anyone else during its own system call.
    let regs = unsafe { &*regs };
    // A call whose arguments need no translation runs natively, linked task or not.
    if let Some(wants) = syscall.wants {
        if !wants(&syscalls::args_of(regs, syscall.abi)) {
            return false;
        }
    }
    let rcu = RcuReadLock::new();
    let aid = if syscall.own == OwnId::No {
        let Some(aid) = registry.tasks.current_link_aid(task, slot, &rcu) else {
            return false;
        };
        aid
    } else {
        let Some((ids, aid)) = registry.tasks.current_link(task, slot, &rcu) else {
            return false;
        };
        if let Some(value) = syscalls::own_id(syscall.own, ids, task, slot, registry, &aid) {
            // SAFETY: `out` points to the trampoline's result slot.
            unsafe { *out = value as c_long };
            return true;
        }
        aid
    };
    if let Some(translate) = syscall.translate {
        let mut frame = Frame::from_regs(regs, syscall.abi);
        if translate(&aid, &mut frame) {
            // No reference on the AID from here: the call is counted instead (`pin`).
            let _pin = CallPin::enter(rcu);
            let ret = frame.call(site);
            // SAFETY: `out` points to the trampoline's result slot.
            unsafe { *out = ret as c_long };
            return true;
        }
    }
    // The reference outlives the RCU section: the count is not zero while the borrow
    // lives (see `current_link`).
    let aid = Arc::<Aid>::from(aid);
    drop(rcu);
    let args = syscalls::args_of(regs, syscall.abi);
    let request = Request { regs, args: &args, abi: syscall.abi, aid: &aid, registry, task };
    let call = Call { request, original: site, aid: &aid };
    match (syscall.handler)(&call) {
        Outcome::Native => false,
        Outcome::Return(value) => {
            // SAFETY: `out` points to the trampoline's result slot.
            unsafe { *out = value as c_long };
            true
        }
    }
}

/// A hook call whose first argument is not the task's saved registers: one of
/// [`KERNEL_FUNCTIONS`], or a system call a handler makes on a copy of the registers
/// (which runs unhooked).
///
/// # Safety
/// As for [`appshot_rust_hook`].
#[inline(never)]
unsafe fn kernel_function(registry: &Registry, hook: KernelHook, args: *const c_ulong, site: usize, out: *mut c_long) -> bool {
    // SAFETY: six argument words (caller's promise).
    let arg = |i: usize| unsafe { *args.add(i) };
    match hook {
        KernelHook::NewTask | KernelHook::ReleaseTask => {
            let Some(task) = NonNull::new(arg(0) as *mut bindings::task_struct) else {
                return false;
            };
            // `wake_up_new_task` is called with a fully created task that its creator
            // holds until the call returns; `release_task` on a task whose reference its
            // caller holds until the call returns (it drops it at the very end).
            // SAFETY: either way the task is valid for the handler.
            let task = unsafe { Task::from_raw(task) };
            // Counted, so the module's exit waits for a handler that sleeps.
            let _inflight = glue::Inflight::enter();
            if hook == KernelHook::NewTask {
                link::on_new_task(registry, task);
            } else {
                link::on_release_task(registry, task);
            }
            false
        }
        KernelHook::KernelClone => {
            // SAFETY: `kernel_clone`'s argument, valid for the call.
            match unsafe { on_kernel_clone(registry, arg(0) as *mut c_void) } {
                Some(ret) => {
                    // SAFETY: `out` points to the trampoline's result slot.
                    unsafe { *out = ret as c_long };
                    true
                }
                None => false,
            }
        }
        KernelHook::CopySiginfo => {
            // SAFETY: `copy_siginfo_to_user(to, from)`'s arguments; `out` as promised.
            unsafe { copy_siginfo_to_user(arg(0) as *mut c_void, arg(1) as *const bindings::kernel_siginfo, out) }
        }
        KernelHook::FutexRelease => {
            let Some(task) = NonNull::new(arg(0) as *mut bindings::task_struct) else {
                return false;
            };
            // SAFETY: both functions are called by the kernel for a task it holds for the
            // call (the current task, exiting or execing).
            let task = unsafe { Task::from_raw(task) };
            // Touches user memory, may fault and sleep: counted like the task hooks.
            let _inflight = glue::Inflight::enter();
            futex::on_futex_release(registry, task);
            false
        }
        KernelHook::FindTask => match futex::find_pi_owner(registry, arg(0) as u32 as i32) {
            None => false,
            Some(found) => {
                // SAFETY: `out` points to the trampoline's result slot.
                unsafe { *out = found as c_long };
                true
            }
        },
        KernelHook::PidNr => {
            let Some(task) = NonNull::new(arg(0) as *mut bindings::task_struct) else {
                return false;
            };
            // SAFETY: `__task_pid_nr_ns`'s caller keeps the task it asks about alive for
            // the call.
            let task = unsafe { Task::from_raw(task) };
            // `type` is an `enum pid_type`: 32 bits.
            match futex::pi_owner_tid(registry, task, arg(1) as u32, arg(2)) {
                None => false,
                Some(tid) => {
                    // SAFETY: `out` points to the trampoline's result slot.
                    unsafe { *out = tid.raw() as c_long };
                    true
                }
            }
        }
        KernelHook::IpcRmid => {
            // `ipc_rmid(ids, ipcp)`, under the object's spinlock: `ipcp` is valid for the
            // call.
            crate::ipc::on_rmid(registry, arg(0) as usize, arg(1) as *mut c_void);
            false
        }
        KernelHook::SemProcShow | KernelHook::ShmProcShow | KernelHook::MsgProcShow => {
            let (m, it) = (arg(0) as *mut bindings::seq_file, arg(1) as *mut c_void);
            // SAFETY: the show function's arguments, valid for the call (its caller holds
            // the object's lock); `site` is the function's.
            let shown = unsafe {
                match hook {
                    KernelHook::SemProcShow => crate::ipc::proc::show::<kind::Sem>(registry, m, it, site),
                    KernelHook::ShmProcShow => crate::ipc::proc::show::<kind::Shm>(registry, m, it, site),
                    _ => crate::ipc::proc::show::<kind::Msg>(registry, m, it, site),
                }
            };
            match shown {
                None => false,
                Some(ret) => {
                    // SAFETY: `out` points to the trampoline's result slot.
                    unsafe { *out = ret as c_long };
                    true
                }
            }
        }
        KernelHook::Ia32Frame | KernelHook::X32Frame => {
            // The frame is written to the user stack: may fault and sleep.
            let Some(aid) = current_aid() else {
                return false;
            };
            // SAFETY: the hooked function's first argument is the `struct ksignal` of this
            // delivery to the current task, valid for the call.
            let info = unsafe { glue::appshot_glue_ksignal_info(arg(0) as *mut c_void) };
            // SAFETY: that delivery's own siginfo, used only by the current task.
            unsafe { signals::translate_delivery(&aid, info) };
            false
        }
        KernelHook::SignalfdRead => {
            // SAFETY: `signalfd_read_iter(iocb, iter)`'s arguments; `out` as promised.
            unsafe {
                signalfd_read(
                    registry,
                    arg(0) as *mut bindings::kiocb,
                    arg(1) as *mut bindings::iov_iter,
                    site,
                    out,
                )
            }
        }
    }
}

/// `kernel_clone(args)` from a linked task (fork, vfork, clone, clone3 of any ABI): the
/// kernel's own copy of the flags, which no other thread can change any more. A new PID
/// namespace is refused; a `CLONE_PARENT_SETTID` address is remembered for the new-task
/// hook, which writes the virtual TID there. `Some(errno)` replaces the call.
///
/// # Safety
/// `args` is `kernel_clone`'s `struct kernel_clone_args *`, valid for the call.
unsafe fn on_kernel_clone(registry: &Registry, args: *mut c_void) -> Option<i64> {
    let task = Task::current();
    registry.tasks.own_ids(task, Slot::of(task))?;
    let (mut flags, mut parent_tid, mut set_tid_size, mut set_tid) = (0u64, 0u64, 0u32, 0i32);
    // SAFETY: `args` is valid (caller); the glue reads four fields (the first `set_tid`
    // element from the kernel's own copy of the array) into our locals.
    unsafe { glue::appshot_glue_clone_args(args, &mut flags, &mut parent_tid, &mut set_tid_size, &mut set_tid) };
    if flags & u64::from(bindings::CLONE_NEWPID) != 0 {
        return Some(EINVAL.to_errno() as i64);
    }
    let mut wanted = 0;
    if set_tid_size > 0 {
        match wanted_tid(registry, task, set_tid_size, set_tid) {
            Ok(virtual_id) => wanted = virtual_id,
            Err(error) => return Some(error.to_errno() as i64),
        }
        // The kernel picks any free system PID; the new-task hook binds `wanted` to it.
        // SAFETY: `args` is valid (caller) and this clone's own, not yet used.
        unsafe { glue::appshot_glue_clone_args_drop_set_tid(args) };
    }
    let settid = flags & u64::from(bindings::CLONE_PARENT_SETTID) != 0;
    registry.tasks.set_clone(task, if settid { parent_tid } else { 0 }, wanted);
    None
}

/// `clone3`'s `set_tid` from a task of an AID names a **virtual** PID, as `set_tid`
/// inside a PID namespace names that namespace's PIDs: checked here as `alloc_pid`
/// checks it natively, in its order (`EINVAL` for a size other than one level or a
/// number outside the AID's PIDs, `EPERM` without `CAP_CHECKPOINT_RESTORE` or
/// `CAP_SYS_ADMIN` over the caller's PID namespace, `EEXIST` for a virtual PID the AID
/// uses). Returns the virtual PID for the new task.
fn wanted_tid(registry: &Registry, task: Task<'_>, size: u32, set_tid: i32) -> Result<u32> {
    let aid = registry.tasks.lookup(task).ok_or(ESRCH)?;
    if size != 1 || set_tid < 1 {
        return Err(EINVAL);
    }
    let virtual_id = VirtualPid::new(set_tid as u32);
    if !aid.state.lock().pids.virtual_in_range(virtual_id) {
        return Err(EINVAL);
    }
    // SAFETY: reads the current task's credentials and PID namespace.
    if !unsafe { glue::appshot_glue_checkpoint_restore_capable() } {
        return Err(EPERM);
    }
    if aid.state.lock().pids.virtual_taken(virtual_id) {
        return Err(EEXIST);
    }
    Ok(virtual_id.raw())
}

/// For a hook whose handler may sleep: the calling task's AID, which keeps the module
/// loaded for as long as the handler holds it. `None` for a task in no AID (cheap: the
/// slot's cache, as for a system call, [`TaskIndex::current_aid`]).
///
/// [`TaskIndex::current_aid`]: crate::pid::task_index::TaskIndex::current_aid
fn current_aid() -> Option<Arc<Aid>> {
    let registry = registry::get()?;
    let task = Task::current();
    registry.tasks.current_aid(task, Slot::of(task))
}

/// `copy_siginfo_to_user(to, from)`.
///
/// # Safety
/// `from` is a valid siginfo for the call; `out` the trampoline's result slot.
unsafe fn copy_siginfo_to_user(to: *mut c_void, from: *const bindings::kernel_siginfo, out: *mut c_long) -> bool {
    // Writing user memory may fault and sleep.
    let Some(aid) = current_aid() else {
        return false;
    };
    // SAFETY: `from` is the hooked function's argument, valid for the call.
    match unsafe { signals::copy_to_user(&aid, to, from) } {
        None => false,
        Some(ret) => {
            // SAFETY: `out` points to the trampoline's result slot.
            unsafe { *out = ret as c_long };
            true
        }
    }
}

/// `signalfd_read_iter(iocb, iter)`: calls the original, then translates the records it
/// wrote. The original's own hook call is recognised by a per-task marker (set while
/// this handler calls it), not by the caller's address, which tracers rewrite.
///
/// # Safety
/// `iocb` and `iter` are the hooked function's arguments; `out` the result slot.
unsafe fn signalfd_read(
    registry: &Registry,
    iocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
    site: usize,
    out: *mut c_long,
) -> bool {
    let task = Task::current();
    // A signalfd read blocks until a signal comes.
    let Some(aid) = current_aid() else {
        return false;
    };
    if registry.tasks.in_original(task) {
        return false;
    }
    // Where the read will write: one segment for read(2), several for readv(2). Taken
    // before the call, which advances the iterator: first into a small array, and into
    // one as large as needed (at most UIO_MAXIOV segments) only for a longer readv.
    let mut small = [0 as c_ulong; 2 * 8];
    // SAFETY: `iter` is the hooked function's argument, valid for the call; `small` has
    // room for 8 (address, length) pairs.
    let n = unsafe { glue::appshot_glue_iter_user_segments(iter, small.as_mut_ptr(), 8) } as usize;
    if n == 0 || n > UIO_MAXIOV {
        // A kernel-internal read: nothing of the caller's to translate.
        return false;
    }
    let mut large: KVec<c_ulong>;
    let raw: &[c_ulong] = if n <= 8 {
        &small
    } else {
        large = match KVec::from_elem(0, 2 * n, GFP_KERNEL) {
            Ok(large) => large,
            Err(_) => return false,
        };
        // SAFETY: as above, with room for `n` pairs.
        if unsafe { glue::appshot_glue_iter_user_segments(iter, large.as_mut_ptr(), n as u32) } as usize != n {
            return false;
        }
        &large
    };
    let mut segments: KVec<(usize, usize)> = match KVec::with_capacity(n, GFP_KERNEL) {
        Ok(segments) => segments,
        Err(_) => return false,
    };
    for i in 0..n {
        // Within the reserved capacity: never allocates.
        let _ = segments.push((raw[2 * i] as usize, raw[2 * i + 1] as usize), GFP_NOWAIT);
    }
    registry.tasks.set_in_original(task, true);
    // SAFETY: `site` is signalfd_read_iter's (found by the glue, checked callable at
    // load) and gets the arguments it was called with; the marker set above makes its
    // hook let this call through.
    let ret = unsafe { glue::appshot_glue_call_read_iter(site as c_ulong, iocb, iter) };
    registry.tasks.set_in_original(task, false);
    if ret > 0 {
        signals::fix_signalfd_records(&aid, &segments, ret as usize);
    }
    // SAFETY: `out` points to the trampoline's result slot.
    unsafe { *out = ret };
    true
}
