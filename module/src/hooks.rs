// SPDX-License-Identifier: GPL-2.0-only
//! What the kernel hooks call, and when the hooks are attached.
//!
//! Every hook is an ftrace direct call (the mechanism lives in `glue/appshot_glue.c` and
//! `glue/appshot_trampoline.S`, the choice is explained in docs/design/hooks.md):
//!
//! | kernel function | when | handler |
//! |---|---|---|
//! | `wake_up_new_task(p)` | a new process or thread is about to run for the first time | [`link::on_new_task`] |
//! | `release_task(p)` | a process or thread is reaped, its TID still allocated | [`link::on_release_task`] |
//! | `__x64_sys_*(regs)` | a system call of [`syscalls::SYSCALLS`] from user space | its handler there |
//! | `copy_siginfo_to_user(to, from)` | a siginfo is copied to user space | [`signals::copy_to_user`] |
//! | `signalfd_read_iter(iocb, to)` | a signalfd is read | [`signals::fix_signalfd_records`] |
//!
//! All run in process context with no spinlock held, so handlers may sleep and touch
//! user memory. The hooks are attached while at least one AID is registered (see
//! `Registry::register`/`unregister`): with no AID, a loaded module costs nothing.
//! While attached, a task in no AID pays for the trampoline's fast path (a hash of its
//! address and one load, see `task_index`), unless its slot also holds a linked task; a
//! linked task's `getpid`/`gettid` are answered from its slot's lockless cache
//! ([`TaskIndex::own_ids`]).
//!
//! [`TaskIndex::own_ids`]: crate::task_index::TaskIndex::own_ids

use core::ptr::NonNull;

use kernel::bindings;
use kernel::ffi::{c_char, c_long, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::Ktime;

use crate::aid::Aid;

use crate::glue::{self, ModuleRef};
use crate::link;
use crate::process::Task;
use crate::registry::{self, Registry};
use crate::signals;
use crate::syscalls::{self, Call, Outcome, SYSCALLS};
use crate::task_index::Slot;

/// Sets which functions the hooks will trace (module load). Nothing is attached yet.
pub(crate) fn init() -> Result {
    let mut names: KVec<*const c_char> = KVec::with_capacity(SYSCALLS.len(), GFP_KERNEL)?;
    for syscall in SYSCALLS {
        names.push(syscall.function.as_char_ptr(), GFP_KERNEL)?;
    }
    // SAFETY: `names` holds `len` pointers to NUL-terminated static strings.
    let err = unsafe { glue::appshot_glue_hooks_init(names.as_ptr(), names.len() as u32) };
    if err != 0 {
        return Err(Error::from_errno(err));
    }
    Ok(())
}

/// Kernel functions hooked besides the system calls (the table at the top).
const OTHER_FUNCTIONS: usize = 4;

/// Attaches every hook (the first AID is being registered).
pub(crate) fn attach() -> Result {
    let start = Ktime::ktime_get();
    // SAFETY: `init` set the filters; the caller holds the registry mutex, so attach and
    // detach never run concurrently.
    let err = unsafe { glue::appshot_glue_hooks_attach() };
    if err != 0 {
        return Err(Error::from_errno(err));
    }
    let us = (Ktime::ktime_get() - start).to_ns() / 1000;
    pr_info!("hooks attached ({} system calls, {} other functions) in {} us\n", SYSCALLS.len(), OTHER_FUNCTIONS, us);
    Ok(())
}

/// Detaches every hook (the last AID is gone). Handlers still sleeping hold a module
/// reference; the module's exit waits for the rest.
pub(crate) fn detach() {
    let start = Ktime::ktime_get();
    // SAFETY: as for `attach`.
    unsafe { glue::appshot_glue_hooks_detach() };
    let us = (Ktime::ktime_get() - start).to_ns() / 1000;
    pr_info!("hooks detached in {} us\n", us);
}

/// Module exit: no handler runs or can start once this returns.
pub(crate) fn shutdown() {
    // SAFETY: detaching detached hooks does nothing; quiesce then waits for handlers and
    // trampolines, and the filters are freed last.
    unsafe {
        glue::appshot_glue_hooks_detach();
        glue::appshot_glue_hooks_quiesce();
        glue::appshot_glue_hooks_free();
    }
}

/// Called at the start of `wake_up_new_task(task)`.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_on_new_task(task: *mut bindings::task_struct) {
    let (Some(registry), Some(task)) = (registry::get(), NonNull::new(task)) else {
        return;
    };
    // SAFETY: `wake_up_new_task` is called with a fully created task that its creator
    // holds until the call returns, so it is valid for this handler.
    let child = unsafe { Task::from_raw(task) };
    link::on_new_task(registry, child);
}

/// Called at the start of `release_task(task)`.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_on_release_task(task: *mut bindings::task_struct) {
    let (Some(registry), Some(task)) = (registry::get(), NonNull::new(task)) else {
        return;
    };
    // SAFETY: `release_task` is called on a task whose reference its caller holds until
    // the call returns (it drops it at the very end), so it is valid for this handler.
    let task = unsafe { Task::from_raw(task) };
    link::on_release_task(registry, task);
}

/// Called at the start of a hooked system call made from user space by `task`, the
/// current task, with its saved registers, its slot (computed by the trampoline) and the
/// system call's function. Returns `true` with the result in `*out` to replace the call,
/// `false` to let it run.
///
/// This part is the hot path: a task in no AID whose slot also holds a linked task
/// leaves at the count test, a linked task's `getpid` is answered from its slot's cache.
/// Everything else is a tail call to [`syscall`], so this part saves no registers.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_syscall(
    regs: *mut bindings::pt_regs,
    original: c_ulong,
    out: *mut c_long,
    slot: c_ulong,
    task: *mut bindings::task_struct,
) -> bool {
    let Some(registry) = registry::get() else {
        return false;
    };
    let fast_slot = Slot::from_trampoline(slot as usize);
    if !fast_slot.any_linked() {
        return false;
    }
    // SAFETY: the glue passes the current task's saved user registers, valid and not
    // written by anyone else during its own system call.
    let nr = unsafe { (*regs).orig_ax } as u64;
    if nr == syscalls::NR_GETPID {
        if let Some(ids) = registry.tasks.cached_own_ids(task as usize, fast_slot) {
            if ids.virtual_tgid != 0 {
                // SAFETY: `out` points to the trampoline's result slot.
                unsafe { *out = ids.virtual_tgid as c_long };
                return true;
            }
        }
    }
    syscall(registry, regs, original, out, fast_slot, task)
}

/// Every system call of a task whose slot holds a linked task, but the cached `getpid`.
#[inline(never)]
fn syscall(
    registry: &Registry,
    regs: *mut bindings::pt_regs,
    original: c_ulong,
    out: *mut c_long,
    slot: Slot,
    task: *mut bindings::task_struct,
) -> bool {
    let Some(task) = NonNull::new(task) else {
        return false;
    };
    // SAFETY: the glue passes `current`, which stays valid while it runs this call.
    let task = unsafe { Task::from_raw(task) };
    let Some(ids) = registry.tasks.own_ids(task, slot) else {
        return false;
    };
    // SAFETY: as in `appshot_rust_syscall`.
    let regs = unsafe { &*regs };
    let nr = regs.orig_ax as u64;
    if let Some(value) = syscalls::own_id(nr, ids, task) {
        // SAFETY: `out` points to the trampoline's result slot.
        unsafe { *out = value as c_long };
        return true;
    }
    let Some(handler) = syscalls::handler(nr) else {
        return false;
    };
    // The handler may sleep (a blocking wait4): hold the module while it runs.
    let Some(_module) = ModuleRef::try_get() else {
        return false;
    };
    let Some(aid) = registry.tasks.lookup_at(task, slot) else {
        return false;
    };
    let call = Call { regs, original: original as usize, aid: &aid, registry, task };
    match handler(&call) {
        Outcome::Native => false,
        Outcome::Return(value) => {
            // SAFETY: `out` points to the trampoline's result slot.
            unsafe { *out = value as c_long };
            true
        }
    }
}

/// For a hook whose handler may sleep: the calling task's AID, and a module reference
/// for as long as the handler runs. `None` for a task in no AID (cheap: the fast path of
/// [`TaskIndex::own_ids`]) and while the module is being unloaded.
///
/// [`TaskIndex::own_ids`]: crate::task_index::TaskIndex::own_ids
fn current_aid() -> Option<(Arc<Aid>, ModuleRef)> {
    let registry = registry::get()?;
    let task = Task::current();
    registry.tasks.own_ids(task, Slot::of(task))?;
    let module = ModuleRef::try_get()?;
    let aid = registry.tasks.lookup(task)?;
    Some((aid, module))
}

/// Called at the start of `copy_siginfo_to_user(to, from)`.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_copy_siginfo_to_user(
    to: *mut c_void,
    from: *const bindings::kernel_siginfo,
    out: *mut c_long,
) -> bool {
    // Writing user memory may fault and sleep.
    let Some((aid, _module)) = current_aid() else {
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

/// Called at the start of `signalfd_read_iter(iocb, iter)`, with that function's address.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_signalfd_read(
    iocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
    original: c_ulong,
    out: *mut c_long,
) -> bool {
    // A signalfd read blocks until a signal comes.
    let Some((aid, _module)) = current_aid() else {
        return false;
    };
    // SAFETY: `iter` is the hooked function's argument, valid for the call.
    let start = unsafe { glue::appshot_glue_iter_user_start(iter) } as usize;
    if start == 0 {
        // readv() and kernel-internal reads: not translated (docs/syscalls.md).
        return false;
    }
    // SAFETY: `original` is signalfd_read_iter (derived from its fentry site by the glue)
    // and gets the arguments it was called with; the call comes from this module, so its
    // hook lets it through.
    let ret = unsafe { glue::appshot_glue_call_read_iter(original, iocb, iter) };
    if ret > 0 {
        signals::fix_signalfd_records(&aid, start, ret as usize);
    }
    // SAFETY: `out` points to the trampoline's result slot.
    unsafe { *out = ret };
    true
}
