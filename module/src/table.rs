// SPDX-License-Identifier: GPL-2.0-only
//! The translation table of one resource type of one AID: virtual IDs to system IDs and
//! back, as two red-black trees that always agree.
//!
//! Tables live under a spinlock (the AID's), so they never allocate: every insertion
//! consumes an [`EntryReservation`] made beforehand with `GFP_KERNEL`, and every removal
//! hands the freed nodes back as a [`RemovedEntry`] for the caller to drop once the lock
//! is released.

use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation};

/// A virtual ID: the value an application of the AID sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct VirtualId(pub(crate) u32);

/// A system ID: the value the kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SystemId(pub(crate) u32);

/// What the system-side tree stores for one system ID.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SystemSide {
    /// The virtual ID bound to this system ID.
    pub(crate) virtual_id: VirtualId,
    /// Table-specific owner: for the PID table, the system thread-group ID.
    pub(crate) owner: u32,
}

/// What the virtual-side tree stores for one virtual ID.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VirtualSide {
    /// The system ID bound to this virtual ID.
    pub(crate) system_id: SystemId,
    /// The same owner as the system side's.
    pub(crate) owner: u32,
}

/// One entry as reported to userspace.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) virtual_id: VirtualId,
    pub(crate) system_id: SystemId,
    pub(crate) owner: u32,
}

/// Memory for one entry, allocated before the table's lock is taken.
pub(crate) struct EntryReservation {
    by_virtual: RBTreeNodeReservation<VirtualId, VirtualSide>,
    by_system: RBTreeNodeReservation<SystemId, SystemSide>,
}

impl EntryReservation {
    /// Allocates the two tree nodes of one entry.
    pub(crate) fn new(flags: kernel::alloc::Flags) -> Result<Self> {
        Ok(EntryReservation {
            by_virtual: RBTreeNodeReservation::new(flags)?,
            by_system: RBTreeNodeReservation::new(flags)?,
        })
    }
}

/// The nodes of a removed entry; dropping it frees them (do so outside the lock).
pub(crate) struct RemovedEntry {
    pub(crate) entry: Entry,
    _by_virtual: Option<RBTreeNode<VirtualId, VirtualSide>>,
    _by_system: RBTreeNode<SystemId, SystemSide>,
}

/// Why an insertion was refused (the unused reservation is freed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The virtual ID is bound already.
    VirtualTaken,
    /// The system ID is bound already.
    SystemTaken,
}

/// A bidirectional translation table.
///
/// # Invariants
/// `by_virtual` and `by_system` hold the same set of (virtual, system, owner) triples:
/// `v -> (s, o)` is in `by_virtual` exactly when `s -> (v, o)` is in `by_system`; `len` is
/// their size.
pub(crate) struct IdTable {
    by_virtual: RBTree<VirtualId, VirtualSide>,
    by_system: RBTree<SystemId, SystemSide>,
    len: usize,
}

impl IdTable {
    /// An empty table.
    pub(crate) fn new() -> Self {
        IdTable { by_virtual: RBTree::new(), by_system: RBTree::new(), len: 0 }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The system ID (and owner) behind a virtual ID.
    pub(crate) fn to_system(&self, virtual_id: VirtualId) -> Option<VirtualSide> {
        self.by_virtual.get(&virtual_id).copied()
    }

    /// The virtual ID (and owner) bound to a system ID.
    pub(crate) fn to_virtual(&self, system_id: SystemId) -> Option<SystemSide> {
        self.by_system.get(&system_id).copied()
    }

    /// The smallest virtual ID in `from..=to` that is not bound, if any. Walks the bound
    /// IDs from `from` in order, so it costs one step per bound ID it skips.
    pub(crate) fn first_free_virtual(&mut self, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        let Some(mut cursor) = self.by_virtual.cursor_lower_bound(&VirtualId(from)) else {
            return Some(from);
        };
        loop {
            // Bound IDs come in increasing order, all >= candidate.
            if cursor.current().0 .0 != candidate {
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
        reservation: EntryReservation,
        entry: Entry,
    ) -> core::result::Result<(), InsertError> {
        if self.to_system(entry.virtual_id).is_some() {
            return Err(InsertError::VirtualTaken);
        }
        if self.to_virtual(entry.system_id).is_some() {
            return Err(InsertError::SystemTaken);
        }
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
    pub(crate) fn set_owner(&mut self, system_id: SystemId, owner: u32) -> bool {
        let Some(side) = self.by_system.get_mut(&system_id) else {
            return false;
        };
        side.owner = owner;
        let virtual_id = side.virtual_id;
        if let Some(virtual_side) = self.by_virtual.get_mut(&virtual_id) {
            virtual_side.owner = owner;
        }
        // INVARIANT: both sides of the entry carry the new owner.
        true
    }

    /// Removes the entry of a system ID.
    pub(crate) fn remove_system(&mut self, system_id: SystemId) -> Option<RemovedEntry> {
        let found = self.by_system.find_mut(&system_id)?;
        let side = *found.get();
        let by_system = found.remove_node();
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
    pub(crate) fn for_each_from(&mut self, from: u32, mut f: impl FnMut(Entry) -> bool) {
        let Some(mut cursor) = self.by_virtual.cursor_lower_bound(&VirtualId(from)) else {
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
    pub(crate) fn for_each(&self, mut f: impl FnMut(Entry) -> bool) {
        for (&virtual_id, side) in self.by_virtual.iter() {
            if !f(Entry { virtual_id, system_id: side.system_id, owner: side.owner }) {
                break;
            }
        }
    }
}
