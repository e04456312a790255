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
use crate::linux::glue::{self, PidUses};
use crate::linux::task::{Task, TaskRef};
use crate::aid::registry::Registry;
use crate::pid::{PidEntry, PidReservation, RemovedPid};
use crate::table::{InsertError, SystemPid, VirtualPid};
use crate::pid::task_index::{IndexReservation, OwnIds, Reaped, RemovedLink};

/// Passes over a process's threads before LINK or UNLINK gives up chasing new threads.
const MAX_PASSES: usize = 16;

/// Memory for linking one task, reserved before the AID's lock is taken.
struct LinkReservation {
    entry: PidReservation,
    index: IndexReservation,
}

impl LinkReservation {
    fn new() -> Result<Self> {
        Ok(LinkReservation {
            entry: PidReservation::new(GFP_KERNEL)?,
            index: IndexReservation::new(GFP_KERNEL)?,
        })
    }
}

/// The records of one unlinked task, freed when dropped (after the lock is released).
struct Unlinked {
    _link: RemovedLink,
    _entry: Option<RemovedPid>,
}

/// A task [`link_locked`] linked: its virtual TID, and the group-only entry its TID
/// replaced, if any (to drop once the lock is released).
struct NewLink {
    virtual_id: VirtualPid,
    evicted: Option<RemovedPid>,
    /// The reservation (RESERVE_PID) of a `set_tid` PID, taken over.
    unreserved: Option<RemovedPid>,
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
    wanted: Option<VirtualPid>,
) -> Result<NewLink> {
    let tid = task.tid();
    let tgid = task.tgid();
    // A group-only entry of this number outlived its group (the kernel reuses a PID only
    // once nothing holds it): the new task takes the number over.
    let evicted = state.pids.evict_group(tid);
    let virtual_id = match wanted {
        // `clone3`'s `set_tid`, checked free when the clone began; taken meanwhile by
        // another new task of the AID: the clone fails.
        Some(wanted) if state.pids.virtual_taken(wanted) => return Err(EEXIST),
        Some(wanted) => wanted,
        None => state.pids.choose_virtual(tid).ok_or(ENOSPC)?,
    };
    // A reserved PID is taken over (its entry goes; the new one has the number).
    let unreserved = wanted.and_then(|wanted| state.pids.unreserve(wanted));
    let entry = PidEntry { virtual_id, system_id: tid, owner: tgid.raw() };
    let virtual_tgid = if tid == tgid { Some(virtual_id) } else { state.pids.pid_to_virtual(tgid) };
    let ids = OwnIds { system_tid: tid, virtual_tid: virtual_id, virtual_tgid };
    if registry.tasks.insert(task, aid.clone(), ids, reservation.index).is_err() {
        // Linked already, to another AID (a LINK racing with ours).
        return Err(EBUSY);
    }
    match state.pids.insert(reservation.entry, entry) {
        Ok(()) => Ok(NewLink { virtual_id, evicted, unreserved }),
        Err(InsertError::VirtualTaken | InsertError::SystemTaken) => {
            // The TID is in the table under another task: the tables and the index
            // disagree. Undo and refuse rather than bind one ID twice.
            let _ = registry.tasks.remove(task, aid);
            pr_warn!("AID {}: TID {} is in the PID table already\n", aid.id, tid.raw());
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
    let entry = state.pids.release(task.tid(), keep_for_group);
    Some(Unlinked { _link: link, _entry: entry })
}

/// LINK: attaches `target`'s process, every thread of it, and every process descending
/// from it, to `aid`: an AID process's children are always in its AID, so a wait never
/// reaps a child the AID does not know. The caller must be allowed to attach to each of
/// them as ptrace would ([`Task::caller_may_attach`]). All or nothing: on failure every
/// process this call linked is unlinked again.
pub(crate) fn link_process(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef) -> Result {
    let mut linked: KVec<TaskRef> = KVec::new();
    let result = link_subtree(registry, aid, target, &mut linked);
    if result.is_err() {
        // Leave every process as it was: not linked at all.
        for process in linked.iter() {
            let _ = unlink_threads(registry, aid, process);
        }
    }
    result
}

/// Links `target`'s subtree, in passes until a pass finds no process left to link
/// (processes fork meanwhile; a process linked in a pass has every later child linked
/// by the new-task hook). Processes this call linked are added to `linked`.
fn link_subtree(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef, linked: &mut KVec<TaskRef>) -> Result {
    // Processes this call has dealt with (by process ID), as threads in `link_threads`.
    let mut seen: KVec<SystemPid> = KVec::new();
    for _ in 0..MAX_PASSES {
        let subtree = target.subtree()?;
        let mut found_new = false;
        for process in subtree.iter() {
            let task = process.task();
            if seen.contains(&task.tgid()) {
                continue;
            }
            found_new = true;
            seen.push(task.tgid(), GFP_KERNEL)?;
            if task.is_kernel_thread() {
                return Err(EINVAL);
            }
            match task.in_initial_pid_namespace() {
                Some(true) => {}
                // Tables hold initial-namespace PIDs; a process in another PID namespace
                // sees other numbers natively, which appshot does not virtualize.
                Some(false) => return Err(EINVAL),
                // Released meanwhile: a descendant that is gone; the target, ESRCH.
                None if task.tgid() != target.task().tgid() => continue,
                None => return Err(ESRCH),
            }
            let linked_before = match registry.tasks.lookup(task) {
                Some(current) if Arc::ptr_eq(&current, aid) => true,
                Some(_) => return Err(EBUSY),
                None => false,
            };
            if !task.caller_may_attach() {
                return Err(EPERM);
            }
            if !linked_before {
                linked.push(process.clone_ref(), GFP_KERNEL)?;
            }
            match link_threads(registry, aid, process) {
                Ok(()) => {}
                // A descendant that exits meanwhile is no reason to fail.
                Err(e) if e == ESRCH && task.tgid() != target.task().tgid() => {}
                Err(e) => return Err(e),
            }
        }
        if !found_new {
            return Ok(());
        }
    }
    Err(EAGAIN)
}

/// Links every thread of `target`'s process, in passes until a pass finds none left
/// (threads come and go meanwhile). Succeeds only when every thread is linked:
///
/// - A thread that has started to exit is not linked. The check is repeated after the
///   insertion, which is ordered with the release hook's lookup by the index bucket's
///   lock: a thread whose release the hook has already looked for is seen exiting then,
///   and its entry is undone, so no entry can outlive its task.
/// - A process leader that has exited while other threads run (a zombie leader) is
///   linked all the same, as long as another thread of its process is linked and not
///   exiting once it is: the leader is released only after that thread, so the release
///   hook will see its entry. Its threads' `getpid` needs its entry.
/// - A process whose threads all exit is `ESRCH`; one that keeps creating threads
///   faster than the passes link them is `EAGAIN`.
fn link_threads(registry: &Registry, aid: &Arc<Aid>, target: &TaskRef) -> Result {
    // Threads this call has dealt with: a thread a concurrent UNLINK detached again after
    // this call linked it is not linked twice (that UNLINK came later).
    let mut seen: KVec<usize> = KVec::new();
    for _ in 0..MAX_PASSES {
        let mut threads = target.threads()?;
        // Leader last: whether it may be linked depends on the others.
        let leader_at = threads.iter().position(|t| t.task().tid() == t.task().tgid());
        if let Some(at) = leader_at {
            let last = threads.len() - 1;
            threads.swap(at, last);
        }
        if threads.iter().all(|t| t.task().is_exiting()) {
            // A process that has exited (a zombie), or is exiting.
            return Err(ESRCH);
        }
        let mut reservations = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        for _ in 0..threads.len() {
            reservations.push(LinkReservation::new()?, GFP_KERNEL)?;
        }
        seen.reserve(threads.len(), GFP_KERNEL)?;

        // Records to free after the lock (declared first, so dropped last): group-only
        // entries the new links replace, and links undone. At most one each per thread:
        // never reallocates.
        let mut evicted: KVec<RemovedPid> = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        let mut undone: KVec<Unlinked> = KVec::with_capacity(threads.len(), GFP_KERNEL)?;
        let mut state = aid.state.lock();
        if state.unregistered {
            return Err(ENOENT);
        }
        let is_leader = |thread: Task<'_>| thread.tid() == thread.tgid();
        let wanted = |thread: &TaskRef, seen: &KVec<usize>| {
            let thread = thread.task();
            (is_leader(thread) || !thread.is_exiting())
                && !seen.contains(&thread.key())
                && !registry.tasks.is_linked_to(thread, aid)
        };
        let needed = threads.iter().filter(|t| wanted(t, &seen)).count();
        if needed == 0 {
            return Ok(());
        }
        if state.pids.len() + needed > glue::max_entries() {
            return Err(ENOSPC);
        }
        // Some thread is linked and not exiting: the process is alive in the AID.
        let live_linked = |threads: &KVec<TaskRef>| {
            threads.iter().any(|t| !t.task().is_exiting() && registry.tasks.is_linked_to(t.task(), aid))
        };
        for (thread, reservation) in threads.iter().zip(reservations.into_iter()) {
            if !wanted(thread, &seen) {
                continue;
            }
            let task = thread.task();
            // Within the reserved capacity: never allocates.
            let _ = seen.push(task.key(), GFP_NOWAIT);
            let new = link_locked(registry, aid, &mut state, task, reservation, None)?;
            if let Some(entry) = new.evicted {
                let _ = evicted.push(entry, GFP_NOWAIT);
            }
            // Checked after the insertion (see above).
            let keep = if is_leader(task) { !task.is_exiting() || live_linked(&threads) } else { !task.is_exiting() };
            if !keep {
                if let Some(unlinked) = unlink_locked(registry, aid, &mut state, task, false) {
                    let _ = undone.push(unlinked, GFP_NOWAIT);
                }
            }
        }
    }
    // Threads kept appearing faster than the passes linked them.
    Err(EAGAIN)
}

/// UNLINK: detaches `target`'s process and every process descending from it that is
/// linked to the same AID. Refused with `EBUSY` while `target`'s parent is in that AID:
/// the parent would then have a child outside its AID, whose end its waits could not
/// report.
pub(crate) fn unlink_process(registry: &Registry, target: &TaskRef) -> Result {
    let aid = registry.tasks.lookup(target.task()).ok_or(ENOENT)?;
    if target.parent_linked_to(registry, &aid) {
        return Err(EBUSY);
    }
    for process in target.subtree()?.iter() {
        if registry.tasks.lookup(process.task()).is_some_and(|a| Arc::ptr_eq(&a, &aid)) {
            unlink_threads(registry, &aid, process)?;
        }
    }
    Ok(())
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

/// Kills `child`, which cannot be linked, before it runs; its creator's call fails with
/// `error` (syscalls.rs), and its wait hides the child.
fn refuse_new_task(registry: &Registry, aid: &Aid, child: Task<'_>, why: &str, error: Error) {
    child.kill();
    aid.state.lock().pids.remember_refused(child.tid());
    registry.tasks.set_new_child(Task::current(), child.tid(), Err(error));
    let n = REFUSED.fetch_add(1, Ordering::Relaxed);
    if n < 10 || n % 1000 == 0 {
        pr_warn!(
            "AID {} '{}': new task {} killed before it ran: {} ({} refusals so far)\n",
            aid.id,
            aid.name_str(),
            child.tid().raw(),
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
    // What the creator's clone asked for (`CLONE_PARENT_SETTID`, `set_tid`).
    let (parent_tid, wanted) = registry.tasks.take_clone(parent);
    let reservation = match LinkReservation::new() {
        Ok(reservation) => reservation,
        Err(_) => return refuse_new_task(registry, &aid, child, "out of memory", EAGAIN),
    };
    let mut state = aid.state.lock();
    if state.unregistered || !registry.tasks.is_linked_to(parent, &aid) {
        // The creator left the AID after the lookup (UNLINK or forced UNREGISTER): its
        // child is not linked either.
        return;
    }
    if state.pids.len() >= glue::max_entries() {
        drop(state);
        return refuse_new_task(registry, &aid, child, "PID table full (max_entries)", EAGAIN);
    }
    if registry.tasks.is_linked_to(child, &aid) {
        // A LINK of the creator's process found the new thread on its thread list and
        // linked it first.
        let virtual_id = state.pids.pid_to_virtual_live(child.tid());
        drop(state);
        registry.tasks.set_new_child(parent, child.tid(), virtual_id.ok_or(EAGAIN));
        if let Some(virtual_id) = virtual_id {
            write_new_tid(parent, parent_tid, child, virtual_id);
        }
        return;
    }
    let new = match link_locked(registry, &aid, &mut state, child, reservation, wanted) {
        Ok(new) => new,
        // `clone3`'s `set_tid` named a virtual PID that another new task of the AID took
        // after the check in `kernel_clone`: the error of that check.
        Err(e) if e == EEXIST && wanted.is_some() => {
            drop(state);
            return refuse_new_task(registry, &aid, child, "its set_tid PID was taken meanwhile", EEXIST);
        }
        Err(_) => {
            drop(state);
            return refuse_new_task(registry, &aid, child, "no virtual PID or cannot link", EAGAIN);
        }
    };
    drop(state);
    drop(new.evicted);
    drop(new.unreserved);
    registry.tasks.set_new_child(parent, child.tid(), Ok(new.virtual_id));
    write_new_tid(parent, parent_tid, child, new.virtual_id);
}

/// Writes the child's virtual TID where the kernel wrote (`CLONE_PARENT_SETTID`, before
/// `wake_up_new_task`) or would write (`CLONE_CHILD_SETTID`, when the child first runs)
/// its system TID. Both happen before the child runs its first instruction, so neither
/// parent nor child can see the system value there. A failed write is ignored, as the
/// kernel ignores its own.
fn write_new_tid(parent: Task<'_>, parent_tid: Option<u64>, child: Task<'_>, virtual_id: VirtualPid) {
    if let Some(address) = parent_tid {
        let _ = parent.write_user_u32(address, virtual_id.raw());
    }
    if let Some(address) = child.take_set_child_tid() {
        let _ = child.write_user_u32(address, virtual_id.raw());
    }
}

/// Hook on `release_task`: unlinks a reaped task.
///
/// Process groups and sessions outlive their leader in the kernel, under its number: a
/// reaped process leader whose PID still names another task's group or session keeps
/// its entry as a group-only one, and the group-only entries of the groups this task was
/// the last one in go.
pub(crate) fn on_release_task(registry: &Registry, task: Task<'_>) {
    let reaper = Task::current();
    let reaper_aid = if reaper.key() != task.key() { registry.tasks.lookup(reaper) } else { None };
    let Some(aid) = registry.tasks.lookup(task) else {
        if let Some(reaper_aid) = reaper_aid {
            // A task in no AID reaped by a linked one: one the AID refused, or a child
            // that had exited before LINK took its parent.
            let refused = reaper_aid.state.lock().pids.take_refused(task.tid());
            let what = if refused { Reaped::Refused } else { Reaped::Outside };
            registry.tasks.set_reaped(reaper, Some((task.tid(), what)));
        }
        return;
    };
    let tid = task.tid();
    // Only process leaders are members of groups and sessions (threads are not).
    let keep_for_group = tid == task.tgid() && PidUses::of(tid.raw(), Some(task)).group_or_session();
    let groups = [task.pgrp(), task.session()];
    let (unlinked, pruned, virtual_id) = {
        let mut state = aid.state.lock();
        let virtual_id = state.pids.pid_to_virtual_live(tid);
        let unlinked = unlink_locked(registry, &aid, &mut state, task, keep_for_group);
        let pruned = groups.map(|group| if group == tid { None } else { state.pids.prune_group(group, task) });
        (unlinked, pruned, virtual_id)
    };
    drop((unlinked, pruned));
    if reaper_aid.is_some() {
        let what = virtual_id.map_or(Reaped::Outside, Reaped::Linked);
        registry.tasks.set_reaped(reaper, Some((tid, what)));
    }
}
