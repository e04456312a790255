// SPDX-License-Identifier: GPL-2.0-only
//! The translation table of one resource type of one AID: virtual IDs to system IDs and
//! back, as two red-black trees that always agree.
//!
//! Tables live under a spinlock (the AID's), so they never allocate: every insertion
//! consumes an [`EntryReservation`] made beforehand with `GFP_KERNEL`, and every removal
//! hands the freed nodes back as a [`RemovedEntry`] for the caller to drop once the lock
//! is released.
//!
//! A table may have a [`TranslationCache`]: the system-call hot path reads its recent
//! virtual-to-system lookups without taking the lock.

use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation};
use kernel::sync::Arc;

/// The kinds of resource ID, as marker types: an ID carries its kind, so a process ID can
/// never be looked up in another kind's table, nor a virtual ID passed where a system ID
/// is meant; mixing them does not compile.
pub(crate) mod kind {
    /// Process, thread, process-group and session IDs.
    pub(crate) enum Pid {}
    /// SysV semaphore set IDs.
    pub(crate) enum Sem {}
    /// SysV shared memory segment IDs.
    pub(crate) enum Shm {}
    /// SysV message queue IDs.
    pub(crate) enum Msg {}
    /// SysV IPC keys.
    pub(crate) enum Key {}
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub(crate) struct $name<K>(u32, PhantomData<K>);

        impl<K> $name<K> {
            /// The ID whose value is `raw`.
            pub(crate) const fn new(raw: u32) -> Self {
                $name(raw, PhantomData)
            }

            /// Its value, for the kernel, user memory or the ABI.
            pub(crate) const fn raw(self) -> u32 {
                self.0
            }
        }

        // Written out rather than derived: a derive would require `K` to implement them,
        // and the kinds are uninhabited markers.
        impl<K> Clone for $name<K> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<K> Copy for $name<K> {}
        impl<K> PartialEq for $name<K> {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }
        impl<K> Eq for $name<K> {}
        impl<K> PartialOrd for $name<K> {
            fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl<K> Ord for $name<K> {
            fn cmp(&self, other: &Self) -> core::cmp::Ordering {
                self.0.cmp(&other.0)
            }
        }
        impl<K> fmt::Debug for $name<K> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type! {
    /// A virtual ID of kind `K`: the value an application of the AID sees.
    VirtualId
}

id_type! {
    /// A system ID of kind `K`: the value the kernel uses.
    SystemId
}

/// A virtual process (or thread, group, session) ID.
pub(crate) type VirtualPid = VirtualId<kind::Pid>;
/// A system process (or thread, group, session) ID.
pub(crate) type SystemPid = SystemId<kind::Pid>;

/// What the system-side tree stores for one system ID.
pub(crate) struct SystemSide<K> {
    /// The virtual ID bound to this system ID.
    pub(crate) virtual_id: VirtualId<K>,
    /// Table-specific owner: for the PID table, the system thread-group ID.
    pub(crate) owner: u32,
}

/// What the virtual-side tree stores for one virtual ID.
pub(crate) struct VirtualSide<K> {
    /// The system ID bound to this virtual ID.
    pub(crate) system_id: SystemId<K>,
    /// The same owner as the system side's.
    pub(crate) owner: u32,
}

/// One entry as reported to userspace.
pub(crate) struct Entry<K> {
    pub(crate) virtual_id: VirtualId<K>,
    pub(crate) system_id: SystemId<K>,
    pub(crate) owner: u32,
}

// Plain copies whatever the kind (a derive would require the marker kinds to be `Copy`).
macro_rules! copy_impl {
    ($($name:ident),*) => {$(
        impl<K> Clone for $name<K> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<K> Copy for $name<K> {}
    )*};
}
copy_impl!(SystemSide, VirtualSide, Entry);

/// Memory for one entry, allocated before the table's lock is taken.
pub(crate) struct EntryReservation<K> {
    by_virtual: RBTreeNodeReservation<VirtualId<K>, VirtualSide<K>>,
    by_system: RBTreeNodeReservation<SystemId<K>, SystemSide<K>>,
}

impl<K> EntryReservation<K> {
    /// Allocates the two tree nodes of one entry.
    pub(crate) fn new(flags: kernel::alloc::Flags) -> Result<Self> {
        Ok(EntryReservation {
            by_virtual: RBTreeNodeReservation::new(flags)?,
            by_system: RBTreeNodeReservation::new(flags)?,
        })
    }
}

/// The nodes of a removed entry; dropping it frees them (do so outside the lock).
pub(crate) struct RemovedEntry<K> {
    pub(crate) entry: Entry<K>,
    _by_virtual: Option<RBTreeNode<VirtualId<K>, VirtualSide<K>>>,
    _by_system: RBTreeNode<SystemId<K>, SystemSide<K>>,
}

/// Why an insertion was refused (the unused reservation is freed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The virtual ID is bound already.
    VirtualTaken,
    /// The system ID is bound already.
    SystemTaken,
}

/// Slots of a [`TranslationCache`] (a power of two).
const CACHE_SLOTS: usize = 32;

/// Marks a full slot: the high word of a slot is this bit and the virtual ID.
const CACHE_FULL: u64 = 1 << 63;

/// Recent virtual-to-system lookups of one table, read without the table's lock: a
/// translated system call (`semop`, `msgsnd`, `kill`) finds its ID here with two loads,
/// where the lock's round trip and a tree walk cost about 50 instructions.
///
/// A slot holds one (virtual, system) pair in one atomic word, so a reader sees a pair
/// the table held at some moment, never half of one. Only the table writes slots, and
/// only under the lock that protects it: a lookup under the lock fills the slot of the
/// virtual ID it found ([`IdTable::remember`]); every removal, owner change or
/// insertion of an entry clears the slot of its virtual ID before the lock is
/// released, and replacing a whole table clears them all ([`TranslationCache::clear`]).
/// So a pair a reader finds is a binding the table held at the time of the read: the
/// answer a lookup under the lock would have given then. (Either way the ID is used
/// after the lock is released; a removal in between is a race of the caller's own, as
/// natively.)
///
/// Only IDs below 2^31 are cached (every SysV ID and PID is); others always miss.
pub(crate) struct TranslationCache<K> {
    slots: [AtomicU64; CACHE_SLOTS],
    _kind: PhantomData<K>,
}

// SAFETY: the cache holds only atomics; `K` is a marker type that is never stored.
unsafe impl<K> Send for TranslationCache<K> {}
// SAFETY: as for `Send`: every access is an atomic operation.
unsafe impl<K> Sync for TranslationCache<K> {}

impl<K> TranslationCache<K> {
    /// An empty cache.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(TranslationCache { slots: [const { AtomicU64::new(0) }; CACHE_SLOTS], _kind: PhantomData }, GFP_KERNEL)?)
    }

    /// The slot of a virtual ID: its low bits, mixed with the bits above a SysV ID's
    /// index (`id = seq * 32768 + index`), so that consecutive IDs of either kind spread.
    #[inline]
    fn slot(&self, virtual_id: u32) -> &AtomicU64 {
        &self.slots[(virtual_id ^ (virtual_id >> 15)) as usize % CACHE_SLOTS]
    }

    /// The tag a slot holding `virtual_id` has in its high word, `None` for an ID that
    /// is never cached.
    #[inline]
    fn tag(virtual_id: u32) -> Option<u64> {
        (virtual_id < 1 << 31).then(|| CACHE_FULL | (u64::from(virtual_id) << 32))
    }

    /// The system ID behind `virtual_id`, if the cache holds it. Needs no lock.
    #[inline]
    pub(crate) fn get(&self, virtual_id: VirtualId<K>) -> Option<SystemId<K>> {
        let tag = Self::tag(virtual_id.raw())?;
        // Relaxed: the word is read whole; what the caller does with the ID needs no
        // ordering with the table (see the type's documentation).
        let word = self.slot(virtual_id.raw()).load(Ordering::Relaxed);
        (word & !0xffff_ffff == tag).then(|| SystemId::new(word as u32))
    }

    /// Caches a binding the table holds; with the table's lock held.
    fn fill(&self, virtual_id: VirtualId<K>, system_id: SystemId<K>) {
        if let Some(tag) = Self::tag(virtual_id.raw()) {
            self.slot(virtual_id.raw()).store(tag | u64::from(system_id.raw()), Ordering::Relaxed);
        }
    }

    /// Forgets `virtual_id`'s binding; with the table's lock held.
    fn forget(&self, virtual_id: VirtualId<K>) {
        let slot = self.slot(virtual_id.raw());
        if Self::tag(virtual_id.raw()).is_some_and(|tag| slot.load(Ordering::Relaxed) & !0xffff_ffff == tag) {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Forgets every binding; with the lock of the table being replaced held.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// A bidirectional translation table.
///
/// # Invariants
/// `by_virtual` and `by_system` hold the same set of (virtual, system, owner) triples:
/// `v -> (s, o)` is in `by_virtual` exactly when `s -> (v, o)` is in `by_system`; `len` is
/// their size. Every pair in `cache` is in `by_virtual`.
pub(crate) struct IdTable<K> {
    by_virtual: RBTree<VirtualId<K>, VirtualSide<K>>,
    by_system: RBTree<SystemId<K>, SystemSide<K>>,
    len: usize,
    cache: Option<Arc<TranslationCache<K>>>,
}

impl<K> IdTable<K> {
    /// An empty table.
    pub(crate) fn new() -> Self {
        IdTable { by_virtual: RBTree::new(), by_system: RBTree::new(), len: 0, cache: None }
    }

    /// An empty table that keeps `cache` (empty, or cleared under the lock of the table
    /// this one replaces) in step with it.
    pub(crate) fn with_cache(cache: Arc<TranslationCache<K>>) -> Self {
        IdTable { cache: Some(cache), ..Self::new() }
    }

    /// Caches `virtual_id`'s binding, which [`Self::to_system`] has just returned under
    /// the same lock, for lock-free readers of the table's cache.
    pub(crate) fn remember(&self, virtual_id: VirtualId<K>, system_id: SystemId<K>) {
        if let Some(cache) = &self.cache {
            // INVARIANT: the caller found this pair in the table, under its lock.
            cache.fill(virtual_id, system_id);
        }
    }

    fn forget(&self, virtual_id: VirtualId<K>) {
        if let Some(cache) = &self.cache {
            cache.forget(virtual_id);
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The system ID (and owner) behind a virtual ID.
    pub(crate) fn to_system(&self, virtual_id: VirtualId<K>) -> Option<VirtualSide<K>> {
        self.by_virtual.get(&virtual_id).copied()
    }

    /// The virtual ID (and owner) bound to a system ID.
    pub(crate) fn to_virtual(&self, system_id: SystemId<K>) -> Option<SystemSide<K>> {
        self.by_system.get(&system_id).copied()
    }

    /// The smallest virtual ID in `from..=to` that is not bound, if any. Walks the bound
    /// IDs from `from` in order, so it costs one step per bound ID it skips.
    pub(crate) fn first_free_virtual(&mut self, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        let Some(mut cursor) = self.by_virtual.cursor_lower_bound(&VirtualId::new(from)) else {
            return Some(from);
        };
        loop {
            // Bound IDs come in increasing order, all >= candidate.
            if cursor.current().0.raw() != candidate {
                return Some(candidate);
            }
            if candidate == to {
                return None;
            }
            candidate += 1;
            match cursor.move_next() {
                Some(next) => cursor = next,
                None => return Some(candidate),
            }
        }
    }

    /// Binds `virtual_id` to `system_id`, using memory reserved earlier.
    pub(crate) fn insert(
        &mut self,
        reservation: EntryReservation<K>,
        entry: Entry<K>,
    ) -> core::result::Result<(), InsertError> {
        if self.to_system(entry.virtual_id).is_some() {
            return Err(InsertError::VirtualTaken);
        }
        if self.to_virtual(entry.system_id).is_some() {
            return Err(InsertError::SystemTaken);
        }
        // Nothing can be cached for an unbound ID; cleared all the same, so that the
        // cache's invariant does not rest on every removal path alone.
        self.forget(entry.virtual_id);
        let side = SystemSide { virtual_id: entry.virtual_id, owner: entry.owner };
        let virtual_side = VirtualSide { system_id: entry.system_id, owner: entry.owner };
        // Neither key is present (checked above), so neither insertion replaces a node.
        let replaced_v = self.by_virtual.insert(reservation.by_virtual.into_node(entry.virtual_id, virtual_side));
        let replaced_s = self.by_system.insert(reservation.by_system.into_node(entry.system_id, side));
        debug_assert!(replaced_v.is_none() && replaced_s.is_none());
        // INVARIANT: both trees gained the same pair.
        self.len += 1;
        Ok(())
    }

    /// Changes the owner of a system ID's entry; `false` when there is none.
    pub(crate) fn set_owner(&mut self, system_id: SystemId<K>, owner: u32) -> bool {
        let Some(side) = self.by_system.get_mut(&system_id) else {
            return false;
        };
        side.owner = owner;
        let virtual_id = side.virtual_id;
        // A reader decides from the owner whether a binding translates.
        self.forget(virtual_id);
        if let Some(virtual_side) = self.by_virtual.get_mut(&virtual_id) {
            virtual_side.owner = owner;
        }
        // INVARIANT: both sides of the entry carry the new owner.
        true
    }

    /// Removes the entry of a system ID.
    pub(crate) fn remove_system(&mut self, system_id: SystemId<K>) -> Option<RemovedEntry<K>> {
        let found = self.by_system.find_mut(&system_id)?;
        let side = *found.get();
        let by_system = found.remove_node();
        // INVARIANT: the cache no longer holds the pair.
        self.forget(side.virtual_id);
        let by_virtual = self.by_virtual.remove_node(&side.virtual_id);
        debug_assert!(by_virtual.is_some());
        // INVARIANT: the pair left both trees.
        self.len -= 1;
        Some(RemovedEntry {
            entry: Entry { virtual_id: side.virtual_id, system_id, owner: side.owner },
            _by_virtual: by_virtual,
            _by_system: by_system,
        })
    }

    /// Calls `f` on every entry whose virtual ID is at least `from`, in virtual ID order,
    /// until it returns `false`.
    pub(crate) fn for_each_from(&mut self, from: u32, mut f: impl FnMut(Entry<K>) -> bool) {
        let Some(mut cursor) = self.by_virtual.cursor_lower_bound(&VirtualId::new(from)) else {
            return;
        };
        loop {
            let (&virtual_id, side) = cursor.current();
            if !f(Entry { virtual_id, system_id: side.system_id, owner: side.owner }) {
                return;
            }
            match cursor.move_next() {
                Some(next) => cursor = next,
                None => return,
            }
        }
    }

    /// Calls `f` on every entry in virtual ID order until it returns `false`.
    pub(crate) fn for_each(&self, mut f: impl FnMut(Entry<K>) -> bool) {
        for (&virtual_id, side) in self.by_virtual.iter() {
            if !f(Entry { virtual_id, system_id: side.system_id, owner: side.owner }) {
                break;
            }
        }
    }
}
