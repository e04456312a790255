// SPDX-License-Identifier: GPL-2.0-only
//! Tasks (threads) as appshot sees them: counted references, the few fields it reads, and
//! the threads of a process.
//!
//! Linux 6.12's `kernel::task::Task` exposes neither the thread-group ID nor the task
//! flags; the C glue reads those fields (see `glue/appshot_glue.c` for why not Rust).

use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::ffi::c_uint;
use kernel::prelude::*;

use crate::linux::glue;
use crate::table::SystemPid;

/// A task the caller knows to be alive for `'a`: a hook argument, `current`, or a task
/// a [`TaskRef`] holds.
///
/// # Invariants
/// `ptr` points to a valid `task_struct` for the whole lifetime `'a`.
#[derive(Clone, Copy)]
pub(crate) struct Task<'a> {
    ptr: NonNull<bindings::task_struct>,
    _alive: PhantomData<&'a bindings::task_struct>,
}

impl<'a> Task<'a> {
    /// Wraps a task pointer.
    ///
    /// # Safety
    /// `ptr` must point to a valid `task_struct` that stays valid for `'a`.
    pub(crate) unsafe fn from_raw(ptr: NonNull<bindings::task_struct>) -> Self {
        // INVARIANT: the caller promises validity for `'a`.
        Task { ptr, _alive: PhantomData }
    }

    /// The calling task.
    pub(crate) fn current() -> Task<'static> {
        // SAFETY: `get_current` only reads the per-CPU current pointer.
        let ptr = unsafe { bindings::get_current() };
        // SAFETY: `current` is never NULL in process context, and the current task stays
        // valid while it runs our code; `'static` is sound because callers only use it
        // within the syscall or hook that runs on this task.
        unsafe { Task::from_raw(NonNull::new_unchecked(ptr)) }
    }

    /// The raw pointer, for C calls.
    pub(crate) fn as_ptr(self) -> *mut bindings::task_struct {
        self.ptr.as_ptr()
    }

    /// An identity usable as a map key while the task lives.
    pub(crate) fn key(self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// System (initial namespace) thread ID. `de_thread` may exchange it with another
    /// thread of the group during exec, so it is read once, like `READ_ONCE`.
    pub(crate) fn tid(self) -> SystemPid {
        // SAFETY: the task is valid (type invariant); the glue reads one field.
        SystemPid::new(unsafe { glue::appshot_glue_task_tid(self.ptr.as_ptr()) } as u32)
    }

    /// System thread-group ID (the process ID). Fixed for the task's life.
    pub(crate) fn tgid(self) -> SystemPid {
        // SAFETY: the task is valid (type invariant); the glue reads one field.
        SystemPid::new(unsafe { glue::appshot_glue_task_tgid(self.ptr.as_ptr()) } as u32)
    }

    /// System ID of the task's process group (read under RCU by the glue).
    pub(crate) fn pgrp(self) -> SystemPid {
        // SAFETY: the task is valid (type invariant).
        SystemPid::new(unsafe { glue::appshot_glue_task_pgrp(self.ptr.as_ptr()) } as u32)
    }

    /// System ID of the task's session (read under RCU by the glue).
    pub(crate) fn session(self) -> SystemPid {
        // SAFETY: the task is valid (type invariant).
        SystemPid::new(unsafe { glue::appshot_glue_task_session(self.ptr.as_ptr()) } as u32)
    }

    fn flags(self) -> u32 {
        // SAFETY: the task is valid (type invariant); the glue reads one field.
        unsafe { glue::appshot_glue_task_flags(self.ptr.as_ptr()) }
    }

    /// Whether the task has started to exit (`PF_EXITING`): it will be released soon and
    /// must not be given a new table entry.
    pub(crate) fn is_exiting(self) -> bool {
        self.flags() & bindings::PF_EXITING != 0
    }

    /// Whether this is a kernel thread, which is never linked.
    pub(crate) fn is_kernel_thread(self) -> bool {
        self.flags() & bindings::PF_KTHREAD != 0
    }

    /// Whether the task's PID namespace is the initial one (the numbers tables hold):
    /// `None` once it has been released (its PID detached), when it has none.
    pub(crate) fn in_initial_pid_namespace(self) -> Option<bool> {
        // SAFETY: the task is valid (type invariant); the glue reads its namespace under
        // RCU and compares one pointer.
        match unsafe { glue::appshot_glue_task_pid_ns(self.ptr.as_ptr()) } {
            1 => Some(true),
            0 => Some(false),
            _ => None,
        }
    }

    /// Takes the `CLONE_CHILD_SETTID` address of a new task that has not run yet, so
    /// the kernel does not write the system TID there when it first runs.
    pub(crate) fn take_set_child_tid(self) -> Option<u64> {
        // SAFETY: the task is valid (type invariant); the caller is its creator in
        // `wake_up_new_task`, before it runs, so nothing else touches the field.
        let address = unsafe { glue::appshot_glue_take_set_child_tid(self.ptr.as_ptr()) };
        (address != 0).then_some(address as u64)
    }

    /// Writes a `u32` at a user address of this task's memory (the caller's own memory,
    /// or a new child's before it runs). May sleep.
    pub(crate) fn write_user_u32(self, address: u64, value: u32) -> Result {
        // SAFETY: the task is valid (type invariant); the glue writes through
        // `put_user` or `access_process_vm`, which check the address.
        let err = unsafe { glue::appshot_glue_write_task_u32(self.ptr.as_ptr(), address as _, value) };
        if err == 0 { Ok(()) } else { Err(Error::from_errno(err)) }
    }

    /// Whether the calling task may attach to this one as ptrace's
    /// `PTRACE_MODE_ATTACH_REALCREDS` allows (the rule checkpoint tools follow): it is
    /// the caller's own process, or the caller's real UID and GID equal all of the
    /// task's UIDs and GIDs, or the caller has `CAP_SYS_PTRACE` over the task's
    /// credentials; and then the task is dumpable or the caller has `CAP_SYS_PTRACE` over
    /// its memory. Linux security modules are not asked (their hook is not exported).
    pub(crate) fn caller_may_attach(self) -> bool {
        let mut f = glue::AttachFacts::default();
        // SAFETY: the task is valid (type invariant); the glue fills `f` under the task's
        // lock and RCU.
        unsafe { glue::appshot_glue_attach_facts(self.ptr.as_ptr(), &mut f) };
        if f.same_thread_group {
            return true;
        }
        let ids_match = [f.uid, f.euid, f.suid].iter().all(|&id| id == f.caller_uid)
            && [f.gid, f.egid, f.sgid].iter().all(|&id| id == f.caller_gid);
        if !ids_match && !f.ptrace_cap_over_creds {
            return false;
        }
        !f.has_mm || f.dumpable || f.ptrace_cap_over_mm
    }

    /// Sends `SIGKILL` (used for a new task that cannot be linked, before it first runs).
    pub(crate) fn kill(self) {
        // SAFETY: the task is valid (type invariant); sending a signal takes its own locks.
        unsafe { glue::appshot_glue_kill_task(self.ptr.as_ptr()) }
    }
}

/// A counted reference to a task (`get_task_struct` / `put_task_struct`).
///
/// # Invariants
/// `ptr` is a valid `task_struct` on which this value owns one reference.
pub(crate) struct TaskRef {
    ptr: NonNull<bindings::task_struct>,
}

// SAFETY: a task reference may be dropped on any CPU and from any thread.
unsafe impl Send for TaskRef {}

impl TaskRef {
    /// Takes ownership of a reference the caller holds.
    ///
    /// # Safety
    /// `ptr` must be a valid task on which the caller owns one reference, given up here.
    unsafe fn from_owned(ptr: NonNull<bindings::task_struct>) -> Self {
        // INVARIANT: the caller transfers its reference.
        TaskRef { ptr }
    }

    /// Gives up ownership of the reference, to a caller that takes it over (a hooked
    /// function's result that the kernel will put).
    pub(crate) fn into_raw(self) -> *mut bindings::task_struct {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        ptr
    }

    /// The calling task, referenced.
    pub(crate) fn current() -> Self {
        let task = Task::current();
        // SAFETY: the current task is valid; taking a reference keeps it so.
        unsafe { bindings::get_task_struct(task.as_ptr()) };
        // SAFETY: we took the reference just above.
        unsafe { TaskRef::from_owned(task.ptr) }
    }

    /// The process `nr` in the caller's PID namespace, or `ESRCH`; 0 is the caller.
    pub(crate) fn by_pid(nr: i32) -> Result<Self> {
        if nr == 0 {
            return Ok(TaskRef::current());
        }
        if nr < 0 {
            return Err(ESRCH);
        }
        // SAFETY: the glue looks the PID up under RCU and returns a referenced task or NULL.
        let ptr = unsafe { glue::appshot_glue_get_task_by_vpid(nr) };
        // SAFETY: a non-NULL result carries a reference we now own.
        NonNull::new(ptr).map(|ptr| unsafe { TaskRef::from_owned(ptr) }).ok_or(ESRCH)
    }

    /// Borrows the task for as long as the reference is held.
    pub(crate) fn task(&self) -> Task<'_> {
        // SAFETY: our reference keeps the task valid for the borrow of `self`.
        unsafe { Task::from_raw(self.ptr) }
    }

    /// Every thread of this task's process, referenced.
    pub(crate) fn threads(&self) -> Result<KVec<TaskRef>> {
        let (threads, _) = collect(8, |out, _, max| {
            // SAFETY: `out` has room for `max` pointers; the glue writes at most that many,
            // each with a reference taken, and returns the total number of threads.
            unsafe { glue::appshot_glue_collect_threads(self.ptr.as_ptr(), out, max) }
        })?;
        Ok(threads)
    }
}

/// Calls `fill(tasks, extras, max)`, a glue collector that writes at most `max`
/// referenced tasks (and one `u32` about each) and returns how many there are in all,
/// with room for `capacity`, and again with more room until all fit; returns the tasks,
/// owned, and their `u32`s.
fn collect(
    mut capacity: usize,
    fill: impl Fn(*mut *mut bindings::task_struct, *mut u32, c_uint) -> c_uint,
) -> Result<(KVec<TaskRef>, KVec<u32>)> {
    loop {
        let mut raw: KVec<*mut bindings::task_struct> = KVec::with_capacity(capacity, GFP_KERNEL)?;
        let mut extras: KVec<u32> = KVec::from_elem(0, capacity, GFP_KERNEL)?;
        let mut tasks = KVec::with_capacity(capacity, GFP_KERNEL)?;
        let total = fill(raw.as_mut_ptr(), extras.as_mut_ptr(), capacity as c_uint) as usize;
        // SAFETY: the glue initialised the first `min(total, capacity)` elements.
        unsafe { raw.set_len(total.min(capacity)) };
        for &ptr in raw.iter() {
            // SAFETY: every written pointer is a valid task with a reference we own.
            let task = unsafe { TaskRef::from_owned(NonNull::new_unchecked(ptr)) };
            // Never allocates (the capacity is reserved); on failure the value is dropped,
            // which releases its reference.
            let _ = tasks.push(task, GFP_NOWAIT);
        }
        if total <= capacity {
            // SAFETY: shrinking to the collected length; u32 has nothing to drop.
            unsafe { extras.set_len(total) };
            return Ok((tasks, extras));
        }
        // More than room: `tasks` drops its references; ask again.
        capacity = total + 16;
    }
}

impl TaskRef {
    /// Another reference to the same task.
    pub(crate) fn clone_ref(&self) -> TaskRef {
        // SAFETY: our reference keeps the task valid; taking one more keeps it so.
        unsafe { bindings::get_task_struct(self.ptr.as_ptr()) };
        // SAFETY: we took the reference just above.
        unsafe { TaskRef::from_owned(self.ptr) }
    }

    /// This task's process (its thread group leader) and every process descending from
    /// it, referenced, parents before children. A snapshot: processes fork and exit
    /// meanwhile.
    pub(crate) fn subtree(&self) -> Result<KVec<TaskRef>> {
        let (processes, parents) = all_processes()?;
        let root = self.task().tgid();
        let mut inside: KVec<SystemPid> = KVec::with_capacity(processes.len(), GFP_KERNEL)?;
        let mut order: KVec<usize> = KVec::with_capacity(processes.len(), GFP_KERNEL)?;
        if let Some(at) = processes.iter().position(|p| p.task().tgid() == root) {
            inside.push(root, GFP_KERNEL)?;
            order.push(at, GFP_KERNEL)?;
        }
        // Breadth first: each round adds the children of the processes added before.
        let mut checked = 0;
        while checked < inside.len() {
            let parent = inside[checked];
            checked += 1;
            for (i, process) in processes.iter().enumerate() {
                let tgid = process.task().tgid();
                if parents[i] == parent.raw() && tgid != parent && !inside.contains(&tgid) {
                    inside.push(tgid, GFP_KERNEL)?;
                    order.push(i, GFP_KERNEL)?;
                }
            }
        }
        let mut out = KVec::with_capacity(order.len(), GFP_KERNEL)?;
        for &i in order.iter() {
            out.push(processes[i].clone_ref(), GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// Whether this task's parent process is linked to `aid`.
    pub(crate) fn parent_linked_to(&self, registry: &crate::aid::registry::Registry, aid: &crate::aid::Aid) -> bool {
        let rcu = glue::RcuReadLock::new();
        let parent = rcu.parent_of(self.task());
        registry.tasks.ids_in(parent, aid).is_some()
    }
}

/// Every process (thread group leader) of the system, referenced, with its parent's
/// process ID.
pub(crate) fn all_processes() -> Result<(KVec<TaskRef>, KVec<u32>)> {
    collect(256, |out, parents, max| {
        // SAFETY: `out` and `parents` have room for `max` entries; the glue writes at most
        // that many, each task with a reference taken, and returns the total count.
        unsafe { glue::appshot_glue_collect_processes(out, parents, max) }
    })
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: the type invariant says we own one reference on a valid task.
        unsafe { bindings::put_task_struct(self.ptr.as_ptr()) };
    }
}
