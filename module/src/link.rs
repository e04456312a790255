// SPDX-License-Identifier: GPL-2.0-only
//! Linking tasks to AIDs: LINK and UNLINK, and the two hooks that keep links in step with
//! the life of processes and threads.
//!
//! A linked thread has two records, changed together under its AID's lock: an entry in
//! the AID's PID table (system TID -> virtual TID, owner = system TGID) and an entry in
//! the task index (task -> AID).
//!
//! - A new task is linked in `wake_up_new_task`, when its creator is linked: before it
//!   runs its first instruction, so it never runs unvirtualized. If it cannot be linked
//!   (table full, no memory) it is killed before it runs.
//! - A task is unlinked in `release_task`, when it is reaped: its system TID is still
//!   allocated there, so a reaped TID never lingers in a table to collide with a new
//!   task that reuses the number.
//! - LINK and UNLINK work on all threads of a process while it may be creating and
//!   ending threads; they repeat their pass over the thread list until a pass finds
//!   nothing left to do.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::aid::{Aid, AidState};
use crate::glue::{self, PidUses};
use crate::process::{Task, TaskRef};
use crate::registry::Registry;
use crate::table::{Entry, EntryReservation, InsertError, RemovedEntry, SystemId, VirtualId};
use crate::task_index::{IndexReservation, OwnIds, RemovedLink};

/// Passes over a process's threads before LINK or UNLINK gives up chasing new threads.
const MAX_PASSES: usize = 16;

/// Memory for linking one task, reserved before the AID's lock is taken.
struct LinkReservation {
    entry: EntryReservation,
    index: IndexReservation,
}

impl LinkReservation {
    fn new() -> Result<Self> {
        Ok(LinkReservation {
            entry: EntryReservation::new(GFP_KERNEL)?,
            index: IndexReservation::new(GFP_KERNEL)?,
        })
    }
}

/// The records of one unlinked task, freed when dropped (after the lock is released).
struct Unlinked {
    _link: RemovedLink,
    _entry: Option<RemovedEntry>,
}

/// A task [`link_locked`] linked: its virtual TID, and the group-only entry its TID
/// replaced, if any (to drop once the lock is released).
struct NewLink {
    virtual_id: VirtualId,
    evicted: Option<RemovedEntry>,
}

/// Links `task` to `aid` under a newly chosen virtual TID. Caller holds `aid`'s lock
/// (`state`) and has checked the entry limit. On failure nothing changed but that a stale
/// group-only entry of the task's TID is gone (dropped here: freeing table nodes never
/// sleeps, and they hold no reference).
fn link_locked(
    registry: &Registry,
    aid: &Arc<Aid>,
    state: &mut AidState,
    task: Task<'_>,
    reservation: LinkReservation,
) -> Result<NewLink> {
    let tid = task.tid();
    let tgid = task.tgid();
    // A group-only entry of this number outlived its group (the kernel reuses a PID only
    // once nothing holds it): the new task takes the number over.
    let evicted = state.evict_group(tid);
    let virtual_id = state.choose_virtual(tid, aid.pid_range).ok_or(ENOSPC)?;
    let entry = Entry { virtual_id, system_id: SystemId(tid), owner: tgid };
    let virtual_tgid = if tid == tgid { virtual_id.0 } else { state.pid_to_virtual(tgid).unwrap_or(0) };
    let ids = OwnIds { system_tid: tid, virtual_tid: virtual_id.0, virtual_tgid };
    if registry.tasks.insert(task, aid.clone(), ids, reservation.index).is_err() {
        // Linked already, to another AID (a LINK racing with ours).
        return Err(EBUSY);
    }
    match state.pids().insert(reservation.entry, entry) {
        Ok(()) => {
            if tid == tgid {
                state.nr_processes += 1;
            }
            Ok(NewLink { virtual_id, evicted })
        }
        Err(InsertError::VirtualTaken | InsertError::SystemTaken) => {
            // The TID is in the table under another task: the tables and the index
            // disagree. Undo and refuse rather than bind one ID twice.
            let _ = registry.tasks.remove(task, aid);
            pr_warn!("AID {}: TID {} is in the PID table already\n", aid.id, tid);
            Err(EBUSY)
        }
    }
}

/// Unlinks `task` from `aid` if it is linked there. Caller holds `aid`'s lock. With
/// `keep_for_group` (a reaped process leader whose PID names other tasks' process group
/// or session) its PID-table entry stays, as a group-only entry.
fn unlink_locked(
    registry: &Registry,
    aid: &Aid,
    state: &mut AidState,
    task: Task<'_>,
    keep_for_group: bool,
) -> Option<Unlinked> {
    let link = registry.tasks.remove(task, aid)?;
    if keep_for_group && state.keep_for_group(SystemId(task.tid())) {
        state.nr_processes -= 1;
        return Some(Unlinked { _link: link, _entry: None });
    }
    let entry = state.pids().remove_system(SystemId(task.tid()));
    if let Some(removed) = &entry {
        if removed.entry.system_id.0 == removed.entry.owner {
            state.nr_processes -= 1;
        }
        state.remember_released(removed.entry.system_id, removed.entry.virtual_id);
    }
    Some(Unlinked { _link: link, _entry: entry })
}

/// LINK: attaches every thread of `target` to `aid`.
pub(crate) fn link_process(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef) -> Result {
    let task = target.task();
    if task.is_kernel_thread() {
        return Err(EINVAL);
    }
    if !task.in_initial_pid_namespace() {
        // Tables hold initial-namespace PIDs; a process in another PID namespace sees
        // other numbers natively, which appshot does not virtualize.
        return Err(EINVAL);
    }
    if task.is_exiting() {
        return Err(ESRCH);
    }
    let linked_before = match registry.tasks.lookup(task) {
        Some(current) if Arc::ptr_eq(&current, aid) => true,
        Some(_) => return Err(EBUSY),
        None => false,
    };
    let result = link_threads(registry, aid, target);
    if result.is_err() && !linked_before {
        // Leave the process as it was: not linked at all.
        let _ = unlink_threads(registry, aid, target);
    }
    result
}

fn link_threads(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef) -> Result {
    for _ in 0..MAX_PASSES {
        let threads = target.threads()?;
        let mut reservations = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        for _ in 0..threads.len() {
            reservations.push(LinkReservation::new()?, GFP_KERNEL)?;
        }

        // Group-only entries the new links replace, freed after the lock (declared first,
        // so dropped last). At most one per thread: never reallocates.
        let mut evicted: KVec<RemovedEntry> = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        let mut state = aid.state.lock();
        if state.unregistered {
            return Err(ENOENT);
        }
        let wanted = |thread: &TaskRef| {
            let thread = thread.task();
            !thread.is_exiting() && !registry.tasks.is_linked_to(thread, aid)
        };
        let needed = threads.iter().filter(|t| wanted(t)).count();
        if needed == 0 {
            return Ok(());
        }
        if state.pids().len() + needed > glue::max_entries() {
            return Err(ENOSPC);
        }
        for (thread, reservation) in threads.iter().zip(reservations.into_iter()) {
            if wanted(thread) {
                let new = link_locked(registry, aid, &mut state, thread.task(), reservation)?;
                if let Some(entry) = new.evicted {
                    let _ = evicted.push(entry, GFP_NOWAIT);
                }
            }
        }
    }
    // Still new threads after many passes; every thread that exists now was linked by a
    // pass or by the new-task hook (its creator was linked), so the process is linked.
    Ok(())
}

/// UNLINK: detaches every thread of `target` from its AID.
pub(crate) fn unlink_process(registry: &Registry, target: &TaskRef) -> Result {
    let aid = registry.tasks.lookup(target.task()).ok_or(ENOENT)?;
    unlink_threads(registry, &aid, target)
}

fn unlink_threads(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef) -> Result {
    for _ in 0..MAX_PASSES {
        let threads = target.threads()?;
        let mut removed: KVec<Unlinked> = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        {
            let mut state = aid.state.lock();
            for thread in threads.iter() {
                if let Some(unlinked) = unlink_locked(registry, aid, &mut state, thread.task(), false) {
                    // Within the reserved capacity: never allocates.
                    let _ = removed.push(unlinked, GFP_NOWAIT);
                }
            }
        }
        if removed.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Counts refusals so a fork storm against a full table logs a few lines, not millions.
static REFUSED: AtomicU64 = AtomicU64::new(0);

fn refuse_new_task(aid: &Aid, child: Task<'_>, why: &str) {
    child.kill();
    let n = REFUSED.fetch_add(1, Ordering::Relaxed);
    if n < 10 || n % 1000 == 0 {
        pr_warn!(
            "AID {} '{}': new task {} killed before it ran: {} ({} refusals so far)\n",
            aid.id,
            aid.name_str(),
            child.tid(),
            why,
            n + 1
        );
    }
}

/// Hook on `wake_up_new_task`: links `child` if its creator (`current`) is linked.
pub(crate) fn on_new_task(registry: &Registry, child: Task<'_>) {
    let parent = Task::current();
    let Some(aid) = registry.tasks.lookup(parent) else {
        return;
    };
    if child.is_kernel_thread() {
        // A kernel thread started from a linked task's context is still the kernel's.
        return;
    }
    let reservation = match LinkReservation::new() {
        Ok(reservation) => reservation,
        Err(_) => return refuse_new_task(&aid, child, "out of memory"),
    };
    let mut state = aid.state.lock();
    if state.unregistered || !registry.tasks.is_linked_to(parent, &aid) {
        // The creator left the AID after the lookup (UNLINK or forced UNREGISTER): its
        // child is not linked either.
        return;
    }
    if state.pids().len() >= glue::max_entries() {
        drop(state);
        return refuse_new_task(&aid, child, "PID table full (max_entries)");
    }
    let new = match link_locked(registry, &aid, &mut state, child, reservation) {
        Ok(new) => new,
        Err(_) => {
            drop(state);
            return refuse_new_task(&aid, child, "no virtual PID or cannot link");
        }
    };
    drop(state);
    drop(new.evicted);
    write_new_tid(registry, parent, child, new.virtual_id);
}

/// Writes the child's virtual TID where the kernel wrote (`CLONE_PARENT_SETTID`, before
/// `wake_up_new_task`) or would write (`CLONE_CHILD_SETTID`, when the child first runs)
/// its system TID. Both happen before the child runs its first instruction, so neither
/// parent nor child can see the system value there. A failed write is ignored, as the
/// kernel ignores its own.
fn write_new_tid(registry: &Registry, parent: Task<'_>, child: Task<'_>, virtual_id: VirtualId) {
    if let Some(address) = registry.tasks.take_parent_tid(parent) {
        let _ = parent.write_user_u32(address, virtual_id.0);
    }
    if let Some(address) = child.take_set_child_tid() {
        let _ = child.write_user_u32(address, virtual_id.0);
    }
}

/// Hook on `release_task`: unlinks a reaped task.
///
/// Process groups and sessions outlive their leader in the kernel, under its number: a
/// reaped process leader whose PID still names another task's group or session keeps
/// its entry as a group-only one, and the group-only entries of the groups this task was
/// the last one in go.
pub(crate) fn on_release_task(registry: &Registry, task: Task<'_>) {
    let Some(aid) = registry.tasks.lookup(task) else {
        return;
    };
    let tid = task.tid();
    // Only process leaders are members of groups and sessions (threads are not).
    let keep_for_group = tid == task.tgid() && PidUses::of(tid, Some(task)).group_or_session();
    let groups = [task.pgrp(), task.session()];
    let (unlinked, pruned) = {
        let mut state = aid.state.lock();
        let unlinked = unlink_locked(registry, &aid, &mut state, task, keep_for_group);
        let pruned = groups.map(|group| if group == tid { None } else { state.prune_group(group, task) });
        (unlinked, pruned)
    };
    drop((unlinked, pruned));
}
