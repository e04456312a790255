// SPDX-License-Identifier: GPL-2.0-only
//! Declarations of the C glue (`glue/appshot_glue.c`) for Rust.
//!
//! The glue wraps what Linux 6.12 gives Rust no abstraction for: the misc device, the
//! ftrace direct-call hooks, the module parameter, and C macros or inline functions
//! (`for_each_thread`, `file_ns_capable`, `current_euid`, ...). The prototypes must match
//! `glue/appshot_glue.h`.

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

use crate::linux::task::Task;

// The bindings of `task_struct` and `file` contain empty structures (config-dependent
// members); only pointers to them cross this boundary.
#[allow(improper_ctypes)]
extern "C" {
    pub(crate) fn appshot_glue_misc_register() -> c_int;
    /// `glue/appshot_trampoline.S`: the slot of a task address (see `task_index.rs`).
    pub(crate) fn appshot_task_slot(address: c_ulong) -> c_ulong;
    /// `glue/appshot_trampoline.S`: the number of bits of a slot.
    pub(crate) static appshot_slot_bits: u32;
    pub(crate) fn appshot_glue_misc_deregister();
    pub(crate) fn appshot_glue_hooks_init(
        names: *const *const c_char,
        n: c_uint,
        counts: *const c_uint,
        sites: *mut c_ulong,
    ) -> c_int;
    pub(crate) fn appshot_glue_site_callable(site: c_ulong) -> bool;
    pub(crate) fn appshot_glue_config_ia32_emulation() -> bool;
    pub(crate) fn appshot_glue_config_x32_abi() -> bool;
    pub(crate) fn appshot_glue_inflight_enter();
    pub(crate) fn appshot_glue_inflight_exit();
    pub(crate) fn appshot_glue_clone_args(
        args: *mut c_void,
        flags: *mut u64,
        parent_tid: *mut u64,
        set_tid_size: *mut u32,
        set_tid0: *mut i32,
    );
    pub(crate) fn appshot_glue_clone_args_drop_set_tid(args: *mut c_void);
    pub(crate) fn appshot_glue_checkpoint_restore_capable() -> bool;
    pub(crate) fn appshot_glue_fd_ns_type(fd: c_int) -> c_int;
    pub(crate) fn appshot_glue_attach_facts(task: *mut bindings::task_struct, facts: *mut AttachFacts);
    pub(crate) fn appshot_glue_hooks_free();
    pub(crate) fn appshot_glue_hooks_attach() -> c_int;
    pub(crate) fn appshot_glue_ipc_ids(kind: c_int) -> *const c_void;
    pub(crate) fn appshot_glue_ipc_perm_id(perm: *const c_void) -> c_int;
    pub(crate) fn appshot_glue_call_seq_show(site: c_ulong, m: *mut bindings::seq_file, it: *mut c_void) -> c_int;
    fn appshot_glue_overflow_id(gid: bool) -> c_uint;
    pub(crate) fn appshot_glue_seq_state(
        m: *mut bindings::seq_file,
        buf: *mut *mut c_char,
        count: *mut usize,
        size: *mut usize,
    );
    pub(crate) fn appshot_glue_seq_set_count(m: *mut bindings::seq_file, count: usize);
    pub(crate) fn appshot_glue_hooks_attach_demand() -> c_int;
    pub(crate) fn appshot_glue_hooks_detach();
    pub(crate) fn appshot_glue_hooks_quiesce();
    pub(crate) fn appshot_glue_call_syscall(site: c_ulong, regs: *mut bindings::pt_regs) -> c_long;
    pub(crate) fn appshot_glue_iter_user_segments(iter: *mut bindings::iov_iter, out: *mut c_ulong, max: c_uint) -> c_uint;
    pub(crate) fn appshot_glue_call_read_iter(
        site: c_ulong,
        iocb: *mut bindings::kiocb,
        iter: *mut bindings::iov_iter,
    ) -> c_long;
    pub(crate) fn appshot_glue_module_get();
    pub(crate) fn appshot_glue_module_put();
    pub(crate) fn appshot_glue_call_started_rcu_read_unlock();
    pub(crate) fn appshot_glue_call_ended();
    pub(crate) fn appshot_glue_calls_counted(started: *mut c_ulong, ended: *mut c_ulong);
    pub(crate) fn appshot_glue_max_entries() -> c_uint;
    pub(crate) fn appshot_glue_file_capable(file: *const bindings::file, cap: c_int) -> bool;
    pub(crate) fn appshot_glue_current_euid() -> u32;
    pub(crate) fn appshot_glue_get_task_by_vpid(nr: bindings::pid_t) -> *mut bindings::task_struct;
    pub(crate) fn appshot_glue_collect_threads(
        task: *mut bindings::task_struct,
        out: *mut *mut bindings::task_struct,
        max: c_uint,
    ) -> c_uint;
    pub(crate) fn appshot_glue_kill_task(task: *mut bindings::task_struct);
    pub(crate) fn appshot_glue_task_tid(task: *mut bindings::task_struct) -> bindings::pid_t;
    pub(crate) fn appshot_glue_task_tgid(task: *mut bindings::task_struct) -> bindings::pid_t;
    pub(crate) fn appshot_glue_task_flags(task: *mut bindings::task_struct) -> c_uint;
    pub(crate) fn appshot_glue_task_pgrp(task: *mut bindings::task_struct) -> bindings::pid_t;
    pub(crate) fn appshot_glue_task_session(task: *mut bindings::task_struct) -> bindings::pid_t;
    pub(crate) fn appshot_glue_pid_uses(nr: bindings::pid_t, except: *mut bindings::task_struct) -> c_uint;
    pub(crate) fn appshot_glue_rcu_read_lock();
    pub(crate) fn appshot_glue_rcu_read_unlock();
    pub(crate) fn appshot_glue_current_parent() -> *mut bindings::task_struct;
    /// The current task's `real_parent` as a number, to compare only.
    pub(crate) fn appshot_glue_current_parent_address() -> c_ulong;
    pub(crate) fn appshot_glue_task_parent(task: *mut bindings::task_struct) -> *mut bindings::task_struct;
    pub(crate) fn appshot_glue_collect_processes(
        out: *mut *mut bindings::task_struct,
        parents: *mut u32,
        max: c_uint,
    ) -> c_uint;
    pub(crate) fn appshot_glue_task_pid_ns(task: *mut bindings::task_struct) -> c_int;
    pub(crate) fn appshot_glue_take_set_child_tid(child: *mut bindings::task_struct) -> c_ulong;
    pub(crate) fn appshot_glue_current_robust_lists(native: *mut c_ulong, compat: *mut c_ulong);
    pub(crate) fn appshot_glue_user_cmpxchg_u32(addr: c_ulong, old: u32, new: u32, found: *mut u32) -> c_int;
    pub(crate) fn appshot_glue_write_task_u32(task: *mut bindings::task_struct, addr: c_ulong, value: u32) -> c_int;
    pub(crate) fn appshot_glue_siginfo_fields(
        info: *const bindings::kernel_siginfo,
        signo: *mut c_int,
        code: *mut c_int,
        pid: *mut bindings::pid_t,
    );
    pub(crate) fn appshot_glue_siginfo_copy_out(
        to: *mut c_void,
        from: *const bindings::kernel_siginfo,
        pid: bindings::pid_t,
    ) -> c_int;
    pub(crate) fn appshot_glue_siginfo_set_pid(info: *mut bindings::kernel_siginfo, pid: bindings::pid_t);
    pub(crate) fn appshot_glue_ksignal_info(ksig: *mut c_void) -> *mut bindings::kernel_siginfo;
}

/// The `max_entries` module parameter: the most entries one table of one AID may hold.
pub(crate) fn max_entries() -> usize {
    // SAFETY: the glue function only reads an integer module parameter.
    unsafe { appshot_glue_max_entries() as usize }
}

/// Effective UID of the calling task in the initial user namespace.
pub(crate) fn current_euid() -> u32 {
    // SAFETY: reads the current task's credentials, always valid in process context.
    unsafe { appshot_glue_current_euid() }
}

/// The overflow UID (or, with `gid`, GID) that a 16-bit ID field shows for an ID above
/// 65535 (`/proc/sys/kernel/overflowuid`, `overflowgid`).
pub(crate) fn overflow_id(gid: bool) -> u32 {
    // SAFETY: reads an integer sysctl.
    unsafe { appshot_glue_overflow_id(gid) }
}

/// Takes one reference on this module (held by every registered AID).
pub(crate) fn module_get() {
    // SAFETY: the module is live (we are running its code); `__module_get` cannot fail.
    unsafe { appshot_glue_module_get() }
}

/// Drops a reference taken by [`module_get`].
pub(crate) fn module_put() {
    // SAFETY: callers pair every call with an earlier `module_get`.
    unsafe { appshot_glue_module_put() }
}

/// What holds a PID number (`appshot_glue_pid_uses`, bits as in `appshot_glue.h`).
#[derive(Clone, Copy)]
pub(crate) struct PidUses(c_uint);

impl PidUses {
    /// What holds system PID `nr`, not counting `except` as a group or session member.
    pub(crate) fn of(nr: u32, except: Option<Task<'_>>) -> PidUses {
        let except = except.map_or(core::ptr::null_mut(), |task| task.as_ptr());
        // SAFETY: the glue looks `nr` up under RCU and only compares `except` (a live
        // task or NULL) with the tasks it finds.
        PidUses(unsafe { appshot_glue_pid_uses(nr as bindings::pid_t, except) })
    }

    /// A task has the number as its PID.
    pub(crate) fn process(self) -> bool {
        self.0 & 1 != 0
    }

    /// A task (other than the excepted one) has it as its process group or session.
    pub(crate) fn group_or_session(self) -> bool {
        self.0 & (2 | 4) != 0
    }
}

/// An RCU read-side critical section (Linux 6.12 has no Rust abstraction for it). Tasks
/// are freed after an RCU grace period, so a task pointer read under it stays valid
/// until the guard is dropped. Nothing may sleep while it is held.
pub(crate) struct RcuReadLock(());

impl RcuReadLock {
    pub(crate) fn new() -> RcuReadLock {
        // SAFETY: `rcu_read_lock` may be called from any context; the guard unlocks.
        unsafe { appshot_glue_rcu_read_lock() };
        RcuReadLock(())
    }

    /// The current task's parent (`real_parent`), valid while the guard is held.
    pub(crate) fn current_parent(&self) -> Task<'_> {
        // SAFETY: reads `current->real_parent` under this guard's read lock.
        let parent = unsafe { appshot_glue_current_parent() };
        // SAFETY: `real_parent` is never NULL (a task's parent is at least init), and
        // RCU keeps the `task_struct` valid for the guard's lifetime, which `'_` is.
        unsafe { Task::from_raw(core::ptr::NonNull::new_unchecked(parent)) }
    }
}

impl RcuReadLock {
    /// `task`'s parent (`real_parent`), valid while the guard is held.
    pub(crate) fn parent_of(&self, task: Task<'_>) -> Task<'_> {
        // SAFETY: reads `task->real_parent` under this guard's read lock; `task` is valid.
        let parent = unsafe { appshot_glue_task_parent(task.as_ptr()) };
        // SAFETY: `real_parent` is never NULL, and RCU keeps it valid for the guard's
        // lifetime, which `'_` is.
        unsafe { Task::from_raw(core::ptr::NonNull::new_unchecked(parent)) }
    }
}

impl RcuReadLock {
    /// Ends the read section having run `glue_call` instead of `rcu_read_unlock`.
    ///
    /// # Safety
    /// `glue_call` calls `rcu_read_unlock` once.
    pub(crate) unsafe fn unlock_with(self, glue_call: unsafe extern "C" fn()) {
        core::mem::forget(self);
        // SAFETY: it ends the read section this guard held (caller's promise).
        unsafe { glue_call() };
    }
}

impl Drop for RcuReadLock {
    fn drop(&mut self) {
        // SAFETY: pairs with the `rcu_read_lock` of `new`.
        unsafe { appshot_glue_rcu_read_unlock() };
    }
}

/// A reference on this module, taken while it is live (from its own running code) and
/// dropped with the value: what keeps the module loaded while an AID object exists
/// (see "Unload" in `glue/appshot_glue.c`).
pub(crate) struct ModulePin(());

impl ModulePin {
    pub(crate) fn new() -> ModulePin {
        module_get();
        ModulePin(())
    }
}

impl Drop for ModulePin {
    fn drop(&mut self) {
        // Kept while system calls that hold no reference may still be in flight.
        crate::hooks::pin::put_module();
    }
}

/// Whether the kernel was built with the i386 system call entries (IA32 emulation).
pub(crate) fn has_ia32_entries() -> bool {
    // SAFETY: reads a build-time constant.
    unsafe { appshot_glue_config_ia32_emulation() }
}

/// Whether the kernel was built with the x32 system call entries.
pub(crate) fn has_x32_entries() -> bool {
    // SAFETY: reads a build-time constant.
    unsafe { appshot_glue_config_x32_abi() }
}

/// Whether descriptor `fd` of the current task is a PID namespace file (`/proc/*/ns/pid`
/// and `pid_for_children`).
pub(crate) fn fd_is_pid_namespace(fd: c_int) -> bool {
    // SAFETY: the glue looks the descriptor up in the current task's table (fdget) and
    // only reads the namespace type of a namespace file.
    unsafe { appshot_glue_fd_ns_type(fd) as u32 == bindings::CLONE_NEWPID }
}

/// A running task hook handler, counted so that module exit waits for it (it may sleep).
pub(crate) struct Inflight(());

impl Inflight {
    pub(crate) fn enter() -> Inflight {
        // SAFETY: an atomic increment.
        unsafe { appshot_glue_inflight_enter() };
        Inflight(())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        // SAFETY: pairs with the increment of `enter`.
        unsafe { appshot_glue_inflight_exit() };
    }
}

/// What ptrace's attach rule looks at (`struct appshot_attach_facts` in
/// `glue/appshot_glue.h`): the caller's real IDs, the target's IDs (initial user
/// namespace), and the capabilities and dumpability that can override a mismatch.
#[repr(C)]
#[derive(Default)]
pub(crate) struct AttachFacts {
    pub(crate) caller_uid: u32,
    pub(crate) caller_gid: u32,
    pub(crate) uid: u32,
    pub(crate) euid: u32,
    pub(crate) suid: u32,
    pub(crate) gid: u32,
    pub(crate) egid: u32,
    pub(crate) sgid: u32,
    pub(crate) same_thread_group: bool,
    pub(crate) ptrace_cap_over_creds: bool,
    pub(crate) has_mm: bool,
    pub(crate) dumpable: bool,
    pub(crate) ptrace_cap_over_mm: bool,
}

/// The `pt_regs` fields Rust reads through the bindings, at the offsets the C compiler
/// gives them: `glue/appshot_glue.c` asserts the same numbers with `offsetof`, so a
/// layout on which bindgen and the C compiler disagree fails the build on one side.
/// (They do disagree on `task_struct`, which is why Rust never reads it: an empty
/// `struct sched_statistics` declared `____cacheline_aligned` keeps its 64-byte alignment
/// in C but loses it in the bindings, so every field from `stats` to the next aligned
/// member, `pid` and `tgid` among them, sits 16 bytes early in Rust.)
const _: () = {
    use core::mem::offset_of;
    use kernel::bindings::pt_regs;
    assert!(offset_of!(pt_regs, bp) == 32);
    assert!(offset_of!(pt_regs, bx) == 40);
    assert!(offset_of!(pt_regs, r10) == 56);
    assert!(offset_of!(pt_regs, r9) == 64);
    assert!(offset_of!(pt_regs, r8) == 72);
    assert!(offset_of!(pt_regs, cx) == 88);
    assert!(offset_of!(pt_regs, dx) == 96);
    assert!(offset_of!(pt_regs, si) == 104);
    assert!(offset_of!(pt_regs, di) == 112);
    assert!(offset_of!(pt_regs, orig_ax) == 120);
    assert!(core::mem::size_of::<pt_regs>() == 168);
};
