// SPDX-License-Identifier: GPL-2.0-only
//! Futex owner TIDs: robust futexes of a thread that exits or execs under a PID range,
//! and PI futex owners, which must be in the caller's AID.
//!
//! ## Robust futexes
//!
//! A robust mutex's futex word holds its owner's TID, written by user space as the
//! owner knows it: in an AID with a range, its virtual TID. When a thread ends, the
//! kernel walks its robust list (`exit_robust_list`, from `futex_exit_release` and
//! `futex_exec_release`) and marks `FUTEX_OWNER_DIED`, waking a waiter, only in the words
//! that hold the thread's TID *as the kernel sees it* (`handle_futex_death`). So just
//! before that walk the hook on those two functions walks the same list, the same way,
//! and rewrites the owner part of each word that holds the thread's virtual TID to its
//! system TID; the kernel's own walk then finds them and does all the rest (marking,
//! waking, the `list_op_pending` cases). Nothing else changes: the thread is dying, and
//! every other writer of such a word keeps its owner part (waiters only add
//! `FUTEX_WAITERS`, with a compare-and-exchange that this one makes retry).
//!
//! The list is user memory the thread wrote: every read and write goes through the
//! user-access helpers and may fail, the walk stops where the kernel's stops (a fault,
//! the head again, [`ROBUST_LIST_LIMIT`] entries), and nothing read is trusted beyond
//! the word it names.
//!
//! ## PI futexes
//!
//! A PI futex word also holds its owner's TID, and here the kernel both reads and
//! writes it: `FUTEX_LOCK_PI`, `FUTEX_TRYLOCK_PI` and the PI requeue look the owner up
//! by the TID in the word (`attach_to_pi_owner`, through `find_get_task_by_vpid`), and
//! the PI code writes and compares TIDs it takes with `task_pid_vnr` (the locker's own
//! TID when it takes a free lock, the new owner's on a hand-over in `FUTEX_UNLOCK_PI`,
//! the owner's when it checks a word against its PI state, the caller's when it checks
//! that an unlocker owns the lock). While a task of an AID is in a PI futex call (the
//! `futex` handler marks it):
//!
//! - the owner lookup ([`find_pi_owner`]) takes the word's TID as a virtual TID of the
//!   caller's AID and finds only tasks of that AID, so a forged word cannot attach a PI
//!   state to a process outside it (boosting its priority, or telling whether it
//!   exists): a number that names none of the AID's tasks is `ESRCH`, as a free number
//!   is natively;
//! - under a PID range, `task_pid_vnr` of a task of the caller's AID gives its virtual
//!   TID ([`pi_owner_tid`], a hook on `__task_pid_nr_ns`), so every TID the kernel
//!   writes to the word or compares with it is the one user space uses. The word never
//!   holds a system TID, and glibc's own compare-and-exchange and ownership checks agree
//!   with the kernel's. That hook is attached on demand (see `hooks/mod.rs`), by the
//!   first PI call in an AID with a range.
//!
//! Translating inside the kernel is what makes this safe: a translation of the word in
//! user memory around each call (tried first) is seen by the other threads between the
//! kernel's steps, and races glibc's unlock (docs/syscalls.md).

use kernel::bindings;
use kernel::ffi::c_ulong;
use kernel::uaccess::UserSlice;

use crate::aid::registry::Registry;
use crate::linux::glue;
use crate::linux::task::{Task, TaskRef};
use crate::pid::task_index::Slot;
use crate::table::{SystemPid, VirtualPid};

// The uapi constants and `robust_list_head` layouts below are not in the bindings;
// glue/appshot_glue.c checks these literals against the kernel's headers.

/// The owner part of a futex word (`FUTEX_TID_MASK`).
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// Most entries the kernel walks (`ROBUST_LIST_LIMIT`), and so this walk.
const ROBUST_LIST_LIMIT: usize = 2048;

/// Compare-and-exchange attempts on one word before leaving it to the kernel: other
/// threads setting `FUTEX_WAITERS` make one fail now and then, never for long.
const CMPXCHG_TRIES: usize = 64;

/// The layout of a robust-list head in user memory: the native one, or the compat one
/// of i386 (and x32) tasks, with 32-bit pointers and offset.
#[derive(Clone, Copy)]
enum Layout {
    Native,
    Compat,
}

impl Layout {
    /// Bytes of a pointer (and of the `futex_offset` long).
    fn word(self) -> usize {
        match self {
            Layout::Native => 8,
            Layout::Compat => 4,
        }
    }

    /// Reads one pointer-sized word at `address`: a pointer zero-extended, or the
    /// offset sign-extended.
    fn read(self, address: u64, signed: bool) -> Option<u64> {
        let mut raw = [0u8; 8];
        let n = self.word();
        UserSlice::new(address as usize, n).reader().read_slice(&mut raw[..n]).ok()?;
        Some(match self {
            Layout::Native => u64::from_ne_bytes(raw),
            Layout::Compat => {
                let value = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
                if signed { value as i32 as i64 as u64 } else { u64::from(value) }
            }
        })
    }

    /// The futex word of the list entry at `entry`, `offset` bytes on, computed as the
    /// kernel does (in 32 bits for the compat layout).
    fn futex_address(self, entry: u64, offset: u64) -> u64 {
        match self {
            Layout::Native => entry.wrapping_add(offset),
            Layout::Compat => u64::from((entry as u32).wrapping_add(offset as u32)),
        }
    }
}

/// Hook on `futex_exit_release(task)` and `futex_exec_release(task)`, which the kernel
/// calls for the current task before walking its robust lists.
pub(crate) fn on_futex_release(registry: &Registry, task: Task<'_>) {
    let current = Task::current();
    if task.key() != current.key() {
        return;
    }
    let Some(ids) = registry.tasks.own_ids(current, Slot::of(current)) else {
        return;
    };
    let system_tid = current.tid();
    let virtual_tid = if ids.system_tid == system_tid {
        ids.virtual_tid
    } else {
        // A thread that exec'd took over its leader's TID: ask the table.
        let Some(aid) = registry.tasks.lookup(current) else {
            return;
        };
        let Some(virtual_tid) = aid.state.lock().pids.pid_to_virtual_live(system_tid) else {
            return;
        };
        virtual_tid
    };
    if virtual_tid.raw() == system_tid.raw() {
        // Without a range (or where the two agree) the kernel already finds them.
        return;
    }
    let (mut native, mut compat): (c_ulong, c_ulong) = (0, 0);
    // SAFETY: two out-pointers to locals; the glue reads the current task's own fields.
    unsafe { glue::appshot_glue_current_robust_lists(&mut native, &mut compat) };
    if native != 0 {
        own_words(Layout::Native, native as u64, virtual_tid, system_tid);
    }
    if compat != 0 {
        own_words(Layout::Compat, compat as u64, virtual_tid, system_tid);
    }
}

/// Walks the robust list whose head is at `head` as `exit_robust_list` will, and gives
/// each listed word owned by `virtual_tid` to `system_tid`.
fn own_words(layout: Layout, head: u64, virtual_tid: VirtualPid, system_tid: SystemPid) {
    let word = layout.word() as u64;
    // struct robust_list_head { list.next; futex_offset; list_op_pending; }
    let Some(first) = layout.read(head, false) else { return };
    let Some(offset) = layout.read(head.wrapping_add(word), true) else { return };
    let Some(pending) = layout.read(head.wrapping_add(2 * word), false) else { return };
    // Bit 0 of a list pointer marks a PI futex; the word's address is the same either way.
    let pending = pending & !1;
    let mut entry = first & !1;
    let mut left = ROBUST_LIST_LIMIT;
    while entry != head {
        let next = layout.read(entry, false);
        if entry != pending && !own_word(layout.futex_address(entry, offset), virtual_tid, system_tid) {
            // Where the kernel's walk gives up too.
            return;
        }
        let Some(next) = next else { break };
        entry = next & !1;
        left -= 1;
        if left == 0 {
            break;
        }
    }
    if pending != 0 {
        own_word(layout.futex_address(pending, offset), virtual_tid, system_tid);
    }
}

/// Rewrites the owner part of the futex word at `address` from `virtual_tid` to
/// `system_tid`, keeping its other bits, if it holds `virtual_tid`. `false` where the
/// kernel's walk stops: a misaligned or unreadable word.
fn own_word(address: u64, virtual_tid: VirtualPid, system_tid: SystemPid) -> bool {
    if address % 4 != 0 {
        return false;
    }
    let Some(mut value) = crate::syscalls::read_user_i32(address).map(|v| v as u32) else {
        return false;
    };
    for _ in 0..CMPXCHG_TRIES {
        if value & FUTEX_TID_MASK != virtual_tid.raw() {
            break;
        }
        let new = (value & !FUTEX_TID_MASK) | system_tid.raw();
        let mut found = 0u32;
        // SAFETY: the glue's compare-and-exchange checks the user address and writes the
        // value it found into our local.
        if unsafe { glue::appshot_glue_user_cmpxchg_u32(address as c_ulong, value, new, &mut found) } != 0 {
            // Read-only: the kernel's mark fails there too.
            break;
        }
        if found == value {
            break;
        }
        value = found;
    }
    true
}

/// Hook on `find_get_task_by_vpid(nr)`: while the current task is in a PI futex
/// operation, the kernel's lookup of the owner named by a futex word, `nr` taken as a
/// virtual TID of the caller's AID and limited to its tasks. `Some(task)` replaces the
/// call's result (a referenced task, or null for "no such task"); `None` lets the lookup
/// run as it is (a caller in no AID, or not in a PI futex operation).
///
/// Called under the futex hash-bucket spinlock: takes only the AID's lock and the task
/// index's bucket locks, one at a time (lock order: after every kernel lock), never
/// sleeps or allocates.
pub(crate) fn find_pi_owner(registry: &Registry, nr: i32) -> Option<*mut bindings::task_struct> {
    let current = Task::current();
    let aid = registry.tasks.pi_caller_aid(current)?;
    if nr <= 0 {
        return Some(core::ptr::null_mut());
    }
    let system = match aid.pid_range {
        None => SystemPid::new(nr as u32),
        Some(_) => match aid.state.lock().pids.pid_to_system(VirtualPid::new(nr as u32)) {
            Some(system) => system,
            None => return Some(core::ptr::null_mut()),
        },
    };
    match TaskRef::by_pid(system.raw() as i32) {
        Ok(task) if registry.tasks.is_linked_to(task.task(), &aid) => Some(task.into_raw()),
        _ => Some(core::ptr::null_mut()),
    }
}

/// Hook on `__task_pid_nr_ns(task, type, ns)`: while the current task is in a PI futex
/// operation in an AID with a PID range, `task_pid_vnr(task)` (type `PIDTYPE_PID`, no
/// namespace) of a task of the same AID is its virtual TID. `None` lets the call run
/// (every other call, and a task outside the caller's AID).
///
/// Called from anywhere a linked task asks for a number, in the PI code under the
/// futex hash-bucket lock and a PI mutex's raw `wait_lock` with interrupts off: leaves
/// at once unless some task is in a PI futex operation, then takes only task-index
/// bucket locks, one at a time; never sleeps or allocates.
pub(crate) fn pi_owner_tid(registry: &Registry, task: Task<'_>, pid_type: u32, ns: c_ulong) -> Option<VirtualPid> {
    if pid_type != bindings::pid_type_PIDTYPE_PID || ns != 0 || !registry.tasks.any_pi_caller() {
        return None;
    }
    let aid = registry.tasks.pi_caller_aid(Task::current())?;
    aid.pid_range?;
    registry.tasks.ids_in(task, &aid).map(|ids| ids.virtual_tid)
}
