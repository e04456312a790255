// SPDX-License-Identifier: GPL-2.0-only
//! The registry: every registered AID, and the task index that says which AID a task
//! belongs to. One registry exists while the module is loaded; hooks and ioctls reach it
//! through [`get`].
//!
//! # Locking overview
//! 1. `Registry::aids` (mutex): the set of AIDs, names, the next AID number. May sleep and
//!    allocate while held. Taken only by ioctls.
//! 2. `Aid::state` (spinlock, one per AID): that AID's tables and its link state.
//! 3. A task-index bucket (spinlock, `task_index.rs`).
//!
//! The registry mutex is also held while the hooks are attached or detached (first AID
//! registered, last one gone, and the on-demand hooks the first time a feature needs
//! them), which takes ftrace's own locks after it. The only hook handler that takes the
//! registry mutex is the `futex` one, once, holding no other lock
//! ([`Registry::attach_pi_translation`]).
//!
//! Locks are taken in that order and never the other way round; at most one AID lock and
//! one bucket lock are held at a time. Nothing allocates or sleeps under 2 or 3: memory is
//! reserved first and freed nodes are dropped after unlocking.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{new_mutex, new_spinlock, Arc, Mutex, SpinLock};

use crate::aid::{Aid, AidState};
use crate::linux::glue;
use crate::hooks;
use crate::ipc;
use crate::linux::task::Task;
use crate::pid::task_index::TaskIndex;
use crate::uapi::NAME_LEN;

/// The registered AIDs and the next number to hand out.
struct AidSet {
    by_id: RBTree<u64, Arc<Aid>>,
    next_id: u64,
}

/// All of appshot's state.
#[pin_data]
pub(crate) struct Registry {
    /// Registered AIDs. Lock order 1.
    #[pin]
    aids: Mutex<AidSet>,
    /// Task -> AID for every linked task.
    pub(crate) tasks: TaskIndex,
    /// Every SysV object bound in some AID, by system ID and kind, so that its removal
    /// by any process (`ipc_rmid`) finds the AID to drop it from. Lock order: after the
    /// kernel's IPC locks (the `ipc_rmid` hook runs under the object's spinlock), never
    /// held with an AID's lock.
    #[pin]
    pub(crate) ipc_owners: SpinLock<RBTree<(u32, u8), ipc::Owner>>,
    /// Removals of SysV objects seen by the `ipc_rmid` hook, counted before it looks up
    /// the owner index (`ipc::removals`): a binder that reads the same count before its
    /// object existed and after indexing it knows that no removal missed the binding.
    pub(crate) ipc_removals: AtomicU64,
    /// Whether the on-demand hooks are attached (written under `aids`, read without it
    /// as a hint).
    on_demand: AtomicBool,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(core::ptr::null_mut());

/// The live registry, or `None` before module init finished publishing it.
pub(crate) fn get() -> Option<&'static Registry> {
    let ptr = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null pointer was stored by `publish` from the module's pinned box, and
    // is cleared by `unpublish` only after the misc device and the hooks are gone and every
    // hook handler has returned (see `Appshot::drop`), so no caller outlives it.
    unsafe { ptr.as_ref() }
}

/// Makes `registry` reachable from hooks and ioctls.
pub(crate) fn publish(registry: Pin<&Registry>) {
    REGISTRY.store(&*registry as *const Registry as *mut Registry, Ordering::Release);
}

/// Makes the registry unreachable again (module exit, after hooks and device are gone).
pub(crate) fn unpublish() {
    REGISTRY.store(core::ptr::null_mut(), Ordering::Release);
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let tasks = TaskIndex::new()?;
        Ok(try_pin_init!(Registry {
            aids <- new_mutex!(AidSet { by_id: RBTree::new(), next_id: 1 }, "appshot_registry"),
            tasks,
            ipc_owners <- new_spinlock!(RBTree::new(), "appshot_ipc_owners"),
            ipc_removals: AtomicU64::new(0),
            on_demand: AtomicBool::new(false),
        }? Error))
    }

    /// Registers a new AID. `name` and `pid_range` are validated by the caller.
    pub(crate) fn register(&self, name: [u8; NAME_LEN], pid_range: Option<(u32, u32)>) -> Result<Arc<Aid>> {
        let mut set = self.aids.lock();
        if set.by_id.values().any(|aid| aid.name == name) {
            return Err(EEXIST);
        }
        let id = set.next_id;
        let aid = Aid::new(id, name, glue::current_euid(), pid_range)?;
        let first = set.by_id.iter().next().is_none();
        if first {
            hooks::attach::attach()?;
        }
        if let Err(e) = set.by_id.try_create_and_insert(id, aid.clone(), GFP_KERNEL) {
            if first {
                hooks::attach::detach();
            }
            return Err(e);
        }
        set.next_id += 1;
        let caller = Task::current();
        pr_info!(
            "AID {} '{}' registered by pid {} (uid {})\n",
            id,
            aid.name_str(),
            caller.tgid().raw(),
            aid.owner_uid
        );
        Ok(aid)
    }

    /// Attaches the hook that translates the TIDs of the kernel's PI futex code, if it
    /// is not yet (the first PI futex call in an AID with a PID range; see
    /// `pid/futex.rs`). Called by a hook handler holding no lock; sleeps.
    pub(crate) fn attach_pi_translation(&self) -> Result {
        if self.on_demand.load(Ordering::Acquire) {
            return Ok(());
        }
        let set = self.aids.lock();
        if !self.on_demand.load(Ordering::Relaxed) {
            // An AID's task calls this, so the hooks are attached: the glue checks it.
            hooks::attach::attach_on_demand()?;
            self.on_demand.store(true, Ordering::Release);
        }
        drop(set);
        Ok(())
    }

    /// The AID numbered `id`.
    pub(crate) fn find(&self, id: u64) -> Result<Arc<Aid>> {
        self.aids.lock().by_id.get(&id).cloned().ok_or(ENOENT)
    }

    /// The AID named `name`.
    pub(crate) fn find_by_name(&self, name: &[u8; NAME_LEN]) -> Result<Arc<Aid>> {
        self.aids.lock().by_id.values().find(|aid| aid.name == *name).cloned().ok_or(ENOENT)
    }

    /// Every registered AID, in AID order.
    pub(crate) fn list(&self) -> Result<KVec<Arc<Aid>>> {
        let set = self.aids.lock();
        let mut out = KVec::new();
        for aid in set.by_id.values() {
            out.push(aid.clone(), GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// Unregisters an AID. Without `force`, refuses with `EBUSY` while tasks are linked;
    /// with it, unlinks them (they keep running, unlinked). Without `destroy_ipc`,
    /// refuses with `ENOTEMPTY` while the AID has SysV IPC objects; with it, removes them
    /// first (as the caller). Returns how many threads were unlinked.
    pub(crate) fn unregister(&self, id: u64, force: bool, destroy_ipc: bool) -> Result<usize> {
        let mut set = self.aids.lock();
        let aid = set.by_id.get(&id).cloned().ok_or(ENOENT)?;
        if destroy_ipc {
            // Objects of processes still linked may come back: checked again below.
            let removed = ipc::destroy_all(self, &aid)?;
            if removed > 0 {
                pr_info!("AID {} '{}': {} SysV IPC objects removed\n", id, aid.name_str(), removed);
            }
        }
        // The replacement is made before the lock is taken (building it allocates nothing,
        // but its drop of the old tables frees nodes, which happens after unlocking).
        let empty = AidState::new(aid.pid_range, true, &aid.caches);
        let (unlinked, old) = {
            let mut state = aid.state.lock();
            // Linked threads make it busy; group-only entries do not (a group whose last
            // members left unseen keeps its entry until then, and must not hold the AID).
            if state.pids.nr_threads() > 0 && !force {
                return Err(EBUSY);
            }
            if ipc::objects(&state) > 0 {
                return Err(Error::from_errno(-(kernel::bindings::ENOTEMPTY as i32)));
            }
            let unlinked = self.tasks.remove_all(&aid);
            // Every table and everything counted with it goes at once.
            let old = core::mem::replace(&mut *state, empty);
            aid.caches.clear();
            (unlinked, old)
        };
        // The old tables' nodes are freed here, outside the spinlock.
        drop(old);
        set.by_id.remove(&id);
        if set.by_id.iter().next().is_none() {
            hooks::attach::detach();
            self.on_demand.store(false, Ordering::Release);
        }
        drop(set);
        // The hot path uses the AID that a task-index slot caches without a reference,
        // under an RCU read lock (`TaskIndex::current_link`). Every link and cache of this
        // AID is gone, and nothing links to it any more: once readers that found it
        // before have left their RCU sections, the last references (this one, those of
        // handlers still running) may free it.
        // SAFETY: called from process context (an ioctl) holding no lock.
        unsafe { kernel::bindings::synchronize_rcu() };
        pr_info!("AID {} '{}' unregistered ({} threads unlinked)\n", id, aid.name_str(), unlinked);
        Ok(unlinked)
    }
}
