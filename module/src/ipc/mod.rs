// SPDX-License-Identifier: GPL-2.0-only
//! SysV IPC virtualization: semaphore sets, shared memory segments and message queues
//! seen by an AID's processes through virtual IDs, with keys private to the AID.
//!
//! Each AID has one [`IdTable`] per kind (`AidState::sems`, `shms`, `msgs`) and one for
//! keys (`AidState::keys`):
//!
//! - **IDs.** An object an AID process gets (`semget`, `shmget`, `msgget`) is bound to a
//!   virtual ID: its system ID when that value is free in the AID's table of its kind,
//!   else the next free value above it. Every ID an AID process passes is looked up in
//!   that table; one with no binding becomes [`NO_ID`], which the kernel rejects exactly
//!   as a nonexistent ID (`EINVAL`), so an AID process cannot reach another
//!   application's object by number. Processes in no AID see system IDs, as before.
//! - **Keys.** A key other than `IPC_PRIVATE` names an object private to the AID: the
//!   AID's first `*get(key, IPC_CREAT)` binds the key (its *virtual* key) to a random
//!   *system* key that no object of that kind has (created with `IPC_EXCL`, another
//!   draw on `EEXIST`), and every later use of the key in the AID uses the system key.
//!   Two AIDs using one key get two objects, and a process in no AID a third. A key
//!   with no binding and no `IPC_CREAT` is `ENOENT`, as natively. The binding is shared
//!   by the three kinds and lives as long as the AID.
//! - **Out.** What the kernel writes back is shown in the AID's terms: the ID a `*_STAT`
//!   by index returns (an object outside the AID is hidden, `EINVAL` as an unused
//!   index), the key in `ipc_perm` (`IPC_STAT`), the PIDs in `shmid_ds` and `msqid_ds`
//!   and `semctl(GETPID)` (virtual PIDs, 0 outside, [`crate::syscalls`]' rule).
//!
//! The handlers and the argument layouts of every entry are in [`calls`].

pub(crate) mod calls;
pub(crate) mod proc;

use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::ffi::{c_int, c_void};
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

use crate::aid::registry::Registry;
use crate::aid::{Aid, AidState};
use crate::hooks::Callback;
use crate::linux::glue;
use crate::table::{kind, Entry, EntryReservation, IdTable, InsertError, SystemId, TranslationCache, VirtualId};

/// What an unbound virtual ID becomes: an ID no object has (a negative one, rejected
/// with `EINVAL` before any other check that depends on the object).
pub(crate) const NO_ID: i32 = -1;

/// The three kinds of SysV object, and their tables.
pub(crate) trait IpcKind: Sized {
    /// For log lines and messages.
    const NAME: &'static str;
    /// The kernel's number of the kind (`IPC_SEM_IDS`, `IPC_MSG_IDS`, `IPC_SHM_IDS`).
    const IDS: u8;
    /// This kind's table in an AID's state.
    fn table(state: &mut AidState) -> &mut IdTable<Self>;
    /// The lock-free cache of that table.
    fn cache(aid: &Aid) -> &TranslationCache<Self>;
}

impl IpcKind for kind::Sem {
    const NAME: &'static str = "semaphore set";
    const IDS: u8 = 0;
    fn table(state: &mut AidState) -> &mut IdTable<Self> {
        &mut state.sems
    }
    fn cache(aid: &Aid) -> &TranslationCache<Self> {
        &aid.caches.sems
    }
}

impl IpcKind for kind::Shm {
    const NAME: &'static str = "shared memory segment";
    const IDS: u8 = 2;
    fn table(state: &mut AidState) -> &mut IdTable<Self> {
        &mut state.shms
    }
    fn cache(aid: &Aid) -> &TranslationCache<Self> {
        &aid.caches.shms
    }
}

impl IpcKind for kind::Msg {
    const NAME: &'static str = "message queue";
    const IDS: u8 = 1;
    fn table(state: &mut AidState) -> &mut IdTable<Self> {
        &mut state.msgs
    }
    fn cache(aid: &Aid) -> &TranslationCache<Self> {
        &aid.caches.msgs
    }
}

/// The system ID behind `raw`, a virtual ID an AID process passed: [`NO_ID`] when the
/// AID has no such object; a negative value stays as it is (the kernel's own `EINVAL`).
#[inline]
pub(crate) fn to_system<K: IpcKind>(aid: &Aid, raw: i32) -> i32 {
    match cached_system::<K>(aid, raw) {
        Some(system) => system,
        None => to_system_locked::<K>(aid, VirtualId::new(raw as u32)),
    }
}

/// [`to_system`]'s answer when it needs no lock: a negative value as it is, or a
/// binding the translation cache holds. `None`: ask [`to_system`].
#[inline]
pub(crate) fn cached_system<K: IpcKind>(aid: &Aid, raw: i32) -> Option<i32> {
    if raw < 0 {
        return Some(raw);
    }
    K::cache(aid).get(VirtualId::new(raw as u32)).map(|system| system.raw() as i32)
}

/// [`to_system`] when the cache does not have the ID: under the AID's lock, caching
/// what it finds. Out of line, so that a cached translation saves no registers.
#[inline(never)]
fn to_system_locked<K: IpcKind>(aid: &Aid, virtual_id: VirtualId<K>) -> i32 {
    let mut state = aid.state.lock();
    let table = K::table(&mut state);
    match table.to_system(virtual_id) {
        Some(side) => {
            table.remember(virtual_id, side.system_id);
            side.system_id.raw() as i32
        }
        None => NO_ID,
    }
}

/// The virtual ID of an object of the AID, `None` for one outside it.
pub(crate) fn to_virtual<K: IpcKind>(aid: &Aid, system: i32) -> Option<i32> {
    if system < 0 {
        return None;
    }
    let mut state = aid.state.lock();
    K::table(&mut state).to_virtual(SystemId::new(system as u32)).map(|side| side.virtual_id.raw() as i32)
}

/// Who owns a bound object, for its removal by any process ([`on_rmid`]).
pub(crate) struct Owner {
    aid: Arc<Aid>,
    /// The kernel's table of the object's kind in the binder's IPC namespace (what
    /// `ipc_rmid` is called with).
    ids: usize,
}

/// Memory for a binding: its table entry and its [`Owner`] record, allocated before any
/// lock is taken.
pub(crate) struct Binding<K> {
    entry: EntryReservation<K>,
    owner: RBTreeNodeReservation<(u32, u8), Owner>,
}

impl<K> Binding<K> {
    pub(crate) fn new() -> Result<Self> {
        Ok(Binding { entry: EntryReservation::new(GFP_KERNEL)?, owner: RBTreeNodeReservation::new(GFP_KERNEL)? })
    }
}

/// Binds the object `system`, which an AID process has just got, to a virtual ID (its
/// existing one if it is bound already), using `binding`. `ENOSPC` when the table is
/// full (the `max_entries` limit, or no free value).
pub(crate) fn bind<K: IpcKind>(
    registry: &Registry,
    aid: &Arc<Aid>,
    system: i32,
    binding: Binding<K>,
    limit: usize,
) -> Result<i32> {
    let virtual_id = bind_entry::<K>(aid, system, binding.entry, limit)?;
    let Some(virtual_id) = virtual_id.new else { return Ok(virtual_id.id) };
    // SAFETY: the glue reads the current task's IPC namespace, which cannot change
    // under it (only the task itself unshares).
    let ids = unsafe { glue::appshot_glue_ipc_ids(c_int::from(K::IDS)) } as usize;
    let node = binding.owner.into_node((system as u32, K::IDS), Owner { aid: aid.clone(), ids });
    let replaced = registry.ipc_owners.lock().insert(node);
    // An older record of the same number (its removal not seen) is dropped unlocked.
    drop(replaced);
    Ok(virtual_id)
}

/// A binding's virtual ID, and whether it is new.
struct Bound {
    id: i32,
    new: Option<i32>,
}

/// The table part of [`bind`].
fn bind_entry<K: IpcKind>(aid: &Aid, system: i32, reservation: EntryReservation<K>, limit: usize) -> Result<Bound> {
    let system_id = SystemId::<K>::new(system as u32);
    let mut state = aid.state.lock();
    let table = K::table(&mut state);
    if let Some(side) = table.to_virtual(system_id) {
        return Ok(Bound { id: side.virtual_id.raw() as i32, new: None });
    }
    if table.len() >= limit {
        return Err(ENOSPC);
    }
    // A restorer's choice (NEXT_ID) comes first, when it is still free.
    let wished = state.next_ids[usize::from(K::IDS)].take();
    let table = K::table(&mut state);
    let free = |id: u32| table.to_system(VirtualId::new(id)).is_none();
    let chosen = match wished.filter(|&wish| free(wish)) {
        Some(wish) => Some(wish),
        // Else the system value when free, or the next free one after it (wrapping).
        None if free(system as u32) => Some(system as u32),
        None => table
            .first_free_virtual((system as u32).saturating_add(1), i32::MAX as u32)
            .or_else(|| table.first_free_virtual(0, (system as u32).saturating_sub(1))),
    };
    let virtual_id = chosen.ok_or(ENOSPC)?;
    let entry = Entry { virtual_id: VirtualId::new(virtual_id), system_id, owner: 0 };
    match table.insert(reservation, entry) {
        Ok(()) => {
            // A new object is used next (a restore fills it at once): cached now, its
            // first use needs no lock.
            table.remember(VirtualId::new(virtual_id), system_id);
            Ok(Bound { id: virtual_id as i32, new: Some(virtual_id as i32) })
        }
        // Checked above under the same lock.
        Err(InsertError::VirtualTaken | InsertError::SystemTaken) => Err(EEXIST),
    }
}

/// NEXT_ID: the next object of kind `table` (`uapi::TABLE_SEM`, `TABLE_SHM`, `TABLE_MSG`)
/// the AID binds gets virtual ID `virtual_id`. `EINVAL` for another table or an ID
/// outside 0..=2^31-1 (no SysV ID is negative); `EEXIST` when the AID has bound it.
pub(crate) fn set_next_id(aid: &Aid, table: u32, virtual_id: u32) -> Result {
    fn set<K: IpcKind>(state: &mut AidState, virtual_id: u32) -> Result {
        if K::table(state).to_system(VirtualId::new(virtual_id)).is_some() {
            return Err(EEXIST);
        }
        state.next_ids[usize::from(K::IDS)] = Some(virtual_id);
        Ok(())
    }
    if virtual_id > i32::MAX as u32 {
        return Err(EINVAL);
    }
    let mut state = aid.state.lock();
    if state.unregistered {
        return Err(ENOENT);
    }
    match table {
        crate::uapi::TABLE_SEM => set::<kind::Sem>(&mut state, virtual_id),
        crate::uapi::TABLE_SHM => set::<kind::Shm>(&mut state, virtual_id),
        crate::uapi::TABLE_MSG => set::<kind::Msg>(&mut state, virtual_id),
        _ => Err(EINVAL),
    }
}

/// Removes the AID's table entry of `system`; the nodes are freed after unlocking.
fn drop_entry<K: IpcKind>(aid: &Aid, system: u32) {
    let removed = K::table(&mut aid.state.lock()).remove_system(SystemId::new(system));
    drop(removed);
}

/// Forgets the object `system` of the AID (removed). The freed nodes are dropped after
/// unlocking.
pub(crate) fn unbind<K: IpcKind>(registry: &Registry, aid: &Aid, system: i32) {
    drop_entry::<K>(aid, system as u32);
    let owner = {
        let mut owners = registry.ipc_owners.lock();
        match owners.get(&(system as u32, K::IDS)) {
            Some(owner) if core::ptr::eq(&*owner.aid, aid) => owners.remove_node(&(system as u32, K::IDS)),
            _ => None,
        }
    };
    drop(owner);
}

/// Hook on `ipc_rmid(ids, ipcp)`: the kernel removes an IPC object (`IPC_RMID`, the last
/// detach of a removed segment, `ipcrm` by anyone, a namespace's end). The AID that
/// bound it drops it, so that no binding outlives its object and reaches a newer one
/// that reuses the number. Runs in every task (an unfiltered hook), under the object's
/// spinlock: takes the owner index's lock, then the AID's, one at a time; never sleeps
/// or allocates (the freed nodes go with `kfree`, which neither does).
pub(crate) fn on_rmid(registry: &Registry, ids: usize, perm: *mut c_void) {
    // Counted before the lookups ([`removals`]).
    registry.ipc_removals.fetch_add(1, Ordering::SeqCst);
    // SAFETY: `perm` is the object `ipc_rmid` removes, valid for the call.
    let system = unsafe { glue::appshot_glue_ipc_perm_id(perm) } as u32;
    for kind in [kind::Sem::IDS, kind::Msg::IDS, kind::Shm::IDS] {
        let owner = {
            let mut owners = registry.ipc_owners.lock();
            match owners.get(&(system, kind)) {
                Some(owner) if owner.ids == ids => owners.remove_node(&(system, kind)),
                _ => None,
            }
        };
        let Some(owner) = owner else { continue };
        let (_, owner) = owner.to_key_value();
        match kind {
            k if k == kind::Sem::IDS => drop_entry::<kind::Sem>(&owner.aid, system),
            k if k == kind::Msg::IDS => drop_entry::<kind::Msg>(&owner.aid, system),
            _ => drop_entry::<kind::Shm>(&owner.aid, system),
        }
        return;
    }
}

/// How many removals [`on_rmid`] has seen. A binder reads it before the call that makes
/// its object and again after [`bind`]: the same count means that no removal of the
/// object ran its hook before the binding was in the owner index (one that did counted
/// before taking that index's lock, which the binder took after it; and the object did
/// not exist at the first read), so the object's existence needs no check.
pub(crate) fn removals(registry: &Registry) -> u64 {
    registry.ipc_removals.load(Ordering::SeqCst)
}

/// The system key bound to virtual key `key` in the AID, if any.
pub(crate) fn system_key(aid: &Aid, key: i32) -> Option<i32> {
    let state = aid.state.lock();
    state.keys.to_system(VirtualId::new(key as u32)).map(|side| side.system_id.raw() as i32)
}

/// The virtual key of system key `key`: `IPC_PRIVATE` (0) stays 0; a key the AID did not
/// bind (an object of a process in no AID, reached only through a shared ID) is shown
/// as `IPC_PRIVATE` too, naming nothing the AID could use.
pub(crate) fn virtual_key(aid: &Aid, key: i32) -> i32 {
    if key == 0 {
        return 0;
    }
    let state = aid.state.lock();
    state.keys.to_virtual(SystemId::new(key as u32)).map_or(0, |side| side.virtual_id.raw() as i32)
}

/// Whether system key `key` is bound in the AID already (a draw to redo).
pub(crate) fn system_key_taken(aid: &Aid, key: i32) -> bool {
    let state = aid.state.lock();
    state.keys.to_virtual(SystemId::new(key as u32)).is_some()
}

/// Binds virtual key `key` to system key `system` (the caller holds `Aid::key_lock` and
/// found neither bound).
pub(crate) fn bind_key(aid: &Aid, key: i32, system: i32, reservation: EntryReservation<kind::Key>) -> Result {
    let entry = Entry { virtual_id: VirtualId::new(key as u32), system_id: SystemId::new(system as u32), owner: 0 };
    let mut state = aid.state.lock();
    state.keys.insert(reservation, entry).map_err(|_| EEXIST)
}

/// Removes every object of the AID (UNREGISTER with `DESTROY_IPC`): `IPC_RMID` through
/// the kernel's own system calls, as the caller, so permissions are the caller's.
/// Returns how many were removed; the first error (EPERM for one the caller may not
/// remove) stops it.
pub(crate) fn destroy_all(registry: &Registry, aid: &Aid) -> Result<usize> {
    let mut removed = 0;
    removed += destroy_kind::<kind::Sem>(registry, aid, Callback::Semctl, |id| [id, 0, 0, 0, 0, 0])?;
    removed += destroy_kind::<kind::Shm>(registry, aid, Callback::Shmctl, |id| [id, 0, 0, 0, 0, 0])?;
    removed += destroy_kind::<kind::Msg>(registry, aid, Callback::Msgctl, |id| [id, 0, 0, 0, 0, 0])?;
    Ok(removed)
}

/// [`destroy_all`] for one kind: `function(args(id))` is its `IPC_RMID` (command 0).
fn destroy_kind<K: IpcKind>(registry: &Registry, aid: &Aid, function: Callback, args: impl Fn(u64) -> [u64; 6]) -> Result<usize> {
    let mut removed = 0;
    loop {
        // One at a time: the table may change meanwhile, and nothing is held across the
        // call.
        let next = {
            let mut state = aid.state.lock();
            let mut first = None;
            K::table(&mut state).for_each(|entry| {
                first = Some(entry.system_id.raw());
                false
            });
            first
        };
        let Some(system) = next else { return Ok(removed) };
        let ret = crate::hooks::call_syscall(function, args(u64::from(system))).ok_or(ENOENT)?;
        // Gone already (removed by someone else meanwhile) is as good as removed.
        if ret < 0 && ret != -i64::from(kernel::bindings::EINVAL) && ret != -i64::from(kernel::bindings::EIDRM) {
            return Err(Error::from_errno(ret as i32));
        }
        // A segment still attached stays until its last detach; its entry goes now (the
        // AID is going), as every other kind's.
        unbind::<K>(registry, aid, system as i32);
        removed += 1;
    }
}

/// Number of SysV objects the AID has bound.
pub(crate) fn objects(state: &AidState) -> usize {
    state.sems.len() + state.shms.len() + state.msgs.len()
}
