// SPDX-License-Identifier: GPL-2.0-only
//! Virtual process IDs: how a new task's virtual TID is chosen, and translation between
//! an AID's virtual PIDs and system PIDs.
//!
//! One PID table per AID holds every linked thread (system TID -> virtual TID, owner =
//! system TGID). A process ID is its main thread's TID, and process groups and sessions
//! are named by their leader's PID, so the same table translates TIDs, PIDs, PGIDs and
//! SIDs.
//!
//! A reaped task leaves the table in `release_task`, before the system call that reaped
//! it (`wait4`, `waitid`) returns its PID. The reaper's wait learns the virtual PID from
//! the release hook's record in the reaper's own task-index entry (`task_index.rs`), so
//! it is exact however many tasks are reaped meanwhile. A `SIGCHLD` about a reaped child
//! may be read later still: for that, the last [`RELEASED`] removed entries of each AID
//! are kept in a small ring, consulted only for a system PID the table no longer has and
//! no live task has taken since.

pub(crate) mod futex;
pub(crate) mod link;
pub(crate) mod task_index;

use crate::linux::glue::PidUses;
use crate::linux::task::Task;
use crate::table::{kind, Entry, EntryReservation, IdTable, InsertError, RemovedEntry, SystemPid, TranslationCache, VirtualPid};
use kernel::sync::Arc;

/// The PID table's entries, removed entries and reservations.
pub(crate) type PidEntry = Entry<kind::Pid>;
pub(crate) type RemovedPid = RemovedEntry<kind::Pid>;
pub(crate) type PidReservation = EntryReservation<kind::Pid>;

/// The largest PID Linux hands out (`PID_MAX_LIMIT - 1` on 64-bit).
pub(crate) const PID_MAX: u32 = 4 * 1024 * 1024 - 1;

/// Owner of a *group-only* entry: the PID of a reaped process that still names the
/// process group or session of other tasks (its leader was the process). The entry keeps
/// the group's virtual ID, as the kernel keeps the number, until the group ends.
pub(crate) const GROUP_ONLY: u32 = crate::uapi::PID_OWNER_GROUP_ONLY;

/// Owner of a *reserved* entry (RESERVE_PID): a virtual PID kept for a restorer, with no
/// task. Its system side is [`RESERVED_BASE`] + the virtual PID, a number no PID reaches
/// (PIDs stay below 2^22), so it never translates a system PID either.
pub(crate) const RESERVED: u32 = crate::uapi::PID_OWNER_RESERVED;
/// See [`RESERVED`].
const RESERVED_BASE: u32 = 1 << 30;

/// Whether the number of a group-only entry still names a group or session without its
/// leader. An entry can outlive its group when the last members left unseen (a member
/// outside the AID, or two members reaped at once); the number may then be free or even
/// another process's, and the entry must translate nothing.
fn group_still_exists(system: u32) -> bool {
    let uses = PidUses::of(system, None);
    !uses.process() && uses.group_or_session()
}

/// Whether an entry of `system` with `owner` translates: every entry but a stale
/// group-only one.
fn translates(system: u32, owner: u32) -> bool {
    owner != RESERVED && (owner != GROUP_ONLY || group_still_exists(system))
}

/// Removed entries remembered per AID for late translations.
pub(crate) const RELEASED: usize = 128;

/// The most recently removed (system, virtual) pairs of one AID.
pub(crate) struct ReleasedRing {
    entries: [(u32, u32); RELEASED],
    next: usize,
}

impl ReleasedRing {
    pub(crate) const fn new() -> Self {
        ReleasedRing { entries: [(0, 0); RELEASED], next: 0 }
    }

    fn push(&mut self, system: u32, virtual_id: u32) {
        self.entries[self.next] = (system, virtual_id);
        self.next = (self.next + 1) % RELEASED;
    }

    /// The newest virtual PID recorded for `system`.
    fn find(&self, system: u32) -> Option<u32> {
        if system == 0 {
            return None;
        }
        // Newest first: the entries before `next` (pushed last), then those from `next` on.
        let (newer, older) = self.entries.split_at(self.next);
        newer.iter().rev().chain(older.iter().rev()).find(|&&(s, _)| s == system).map(|&(_, v)| v)
    }
}

/// The PID table of one AID and everything that is counted or remembered with it.
///
/// # Invariants
/// `nr_processes` is the number of entries whose system ID is their owner (main
/// threads); `nr_group_only` the number of entries owned by [`GROUP_ONLY`];
/// `nr_reserved` the number owned by [`RESERVED`]; so each is at most `ids.len()`, and
/// their sum too. Every change of `ids` goes through the
/// methods here, which keep the counts.
pub(crate) struct PidTable {
    ids: IdTable<kind::Pid>,
    nr_processes: u32,
    nr_group_only: u32,
    /// Entries owned by [`RESERVED`].
    nr_reserved: u32,
    /// The virtual PID range, if the AID has one.
    range: Option<(u32, u32)>,
    /// With a range: where the search for the next virtual PID starts.
    next_virtual: u32,
    /// The most recently removed entries.
    released: ReleasedRing,
    /// New tasks refused (killed before they ran) and not reaped yet, 0 for a free
    /// place. They are rare (a full table, an exhausted range, no memory); past
    /// [`REFUSED`] outstanding ones, the oldest is forgotten and its wait reports it by
    /// system PID.
    refused: [u32; REFUSED],
}

/// Refused tasks remembered per AID until they are reaped.
const REFUSED: usize = 16;

impl PidTable {
    /// An empty table for an AID with virtual PID range `range`.
    pub(crate) fn new(range: Option<(u32, u32)>, cache: Arc<TranslationCache<kind::Pid>>) -> Self {
        PidTable {
            ids: IdTable::with_cache(cache),
            nr_processes: 0,
            nr_group_only: 0,
            nr_reserved: 0,
            range,
            next_virtual: range.map_or(1, |(min, _)| min),
            released: ReleasedRing::new(),
            refused: [0; REFUSED],
        }
    }

    /// Remembers a new task that was refused, until it is reaped.
    pub(crate) fn remember_refused(&mut self, system: SystemPid) {
        match self.refused.iter().position(|&s| s == 0) {
            Some(at) => self.refused[at] = system.raw(),
            None => {
                // Full: forget the oldest.
                self.refused.rotate_left(1);
                self.refused[REFUSED - 1] = system.raw();
            }
        }
    }

    /// Whether `system` is a refused task being reaped (it is forgotten then).
    pub(crate) fn take_refused(&mut self, system: SystemPid) -> bool {
        match self.refused.iter().position(|&s| s == system.raw() && s != 0) {
            Some(at) => {
                self.refused[at] = 0;
                true
            }
            None => false,
        }
    }

    /// Number of entries (threads and group-only entries).
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Entries whose thread is its process's main thread.
    pub(crate) fn nr_processes(&self) -> u32 {
        self.nr_processes
    }

    /// Entries of linked threads (all but the group-only ones).
    pub(crate) fn nr_threads(&self) -> u32 {
        // Never underflows: `nr_group_only + nr_reserved <= len` (type invariant).
        self.ids.len() as u32 - self.nr_group_only - self.nr_reserved
    }

    /// RESERVE_PID: keeps `virtual_id` (checked with [`Self::virtual_in_range`]) for a
    /// restorer, using memory reserved earlier. `EEXIST` when it is bound already.
    pub(crate) fn reserve(&mut self, reservation: PidReservation, virtual_id: VirtualPid) -> kernel::error::Result {
        let system = SystemPid::new(RESERVED_BASE + virtual_id.raw());
        let entry = PidEntry { virtual_id, system_id: system, owner: RESERVED };
        self.ids.insert(reservation, entry).map_err(|_| kernel::error::code::EEXIST)?;
        // INVARIANT: one more reserved entry.
        self.nr_reserved += 1;
        Ok(())
    }

    /// Whether `virtual_id` is reserved (RESERVE_PID).
    pub(crate) fn is_reserved(&mut self, virtual_id: VirtualPid) -> bool {
        matches!(self.ids.to_system(virtual_id), Some(side) if side.owner == RESERVED)
    }

    /// Drops the reservation of `virtual_id`, if it has one (the nodes are for the
    /// caller to drop outside the lock).
    pub(crate) fn unreserve(&mut self, virtual_id: VirtualPid) -> Option<RemovedPid> {
        if !self.is_reserved(virtual_id) {
            return None;
        }
        let removed = self.ids.remove_system(SystemPid::new(RESERVED_BASE + virtual_id.raw()))?;
        // INVARIANT: a reserved entry went.
        self.nr_reserved -= 1;
        Some(removed)
    }

    /// [`IdTable::for_each_from`] on the entries (a cursor walk, hence `&mut`).
    pub(crate) fn for_each_from(&mut self, from: u32, f: impl FnMut(PidEntry) -> bool) {
        self.ids.for_each_from(from, f)
    }

    /// Binds a new task's entry, using memory reserved earlier.
    pub(crate) fn insert(&mut self, reservation: PidReservation, entry: PidEntry) -> Result<(), InsertError> {
        self.ids.insert(reservation, entry)?;
        if entry.system_id.raw() == entry.owner {
            // INVARIANT: one more main-thread entry.
            self.nr_processes += 1;
        }
        Ok(())
    }

    /// Removes the entry of a reaped or unlinked thread and remembers it for late
    /// translations. With `keep_for_group` (a process leader whose PID names other
    /// tasks' group or session) the entry stays as a group-only one instead, and `None`
    /// is returned, as when there is no entry.
    pub(crate) fn release(&mut self, system: SystemPid, keep_for_group: bool) -> Option<RemovedPid> {
        let side = self.ids.to_virtual(system)?;
        let main_thread = side.owner == system.raw();
        if keep_for_group && main_thread && self.ids.set_owner(system, GROUP_ONLY) {
            // INVARIANT: one main-thread entry became a group-only one.
            self.nr_processes -= 1;
            self.nr_group_only += 1;
            return None;
        }
        let removed = self.ids.remove_system(system)?;
        // INVARIANT: the counts follow the removed entry's owner.
        if removed.entry.owner == GROUP_ONLY {
            self.nr_group_only -= 1;
        } else if main_thread {
            self.nr_processes -= 1;
        }
        self.released.push(system.raw(), removed.entry.virtual_id.raw());
        Some(removed)
    }

    /// The virtual TID for a new task whose system TID is `system`, or `None` when no
    /// virtual ID is free. Without a range the system value is kept when it is free in
    /// this AID, otherwise the next free value after it; with a range every ID comes
    /// from it, handed out cyclically like the kernel does.
    pub(crate) fn choose_virtual(&mut self, system: SystemPid) -> Option<VirtualPid> {
        let system = system.raw();
        let range = self.range;
        let (min, max, start) = match range {
            None => {
                if self.ids.to_system(VirtualPid::new(system)).is_none() {
                    return Some(VirtualPid::new(system));
                }
                (1, PID_MAX, system.saturating_add(1).min(PID_MAX))
            }
            Some((min, max)) => (min, max, self.next_virtual.clamp(min, max)),
        };
        let chosen = self
            .ids
            .first_free_virtual(start, max)
            .or_else(|| self.ids.first_free_virtual(min, start.saturating_sub(1)))?;
        if range.is_some() {
            self.next_virtual = if chosen == max { min } else { chosen + 1 };
        }
        Some(VirtualPid::new(chosen))
    }

    /// Whether virtual PID `virtual_id` is bound in this AID, by a task or by a group
    /// (`clone3`'s `set_tid` gets `EEXIST` for it, as for a PID in use natively); a
    /// reserved one is not (`set_tid` takes it over).
    pub(crate) fn virtual_taken(&mut self, virtual_id: VirtualPid) -> bool {
        matches!(self.ids.to_system(virtual_id), Some(side) if side.owner != RESERVED)
    }

    /// Whether `virtual_id` may be a virtual PID of this AID: 1 to [`PID_MAX`], inside
    /// the range when the AID has one.
    pub(crate) fn virtual_in_range(&self, virtual_id: VirtualPid) -> bool {
        let (min, max) = self.range.unwrap_or((1, PID_MAX));
        (min..=max).contains(&virtual_id.raw())
    }

    /// The system PID behind a virtual PID of this AID.
    pub(crate) fn pid_to_system(&mut self, virtual_id: VirtualPid) -> Option<SystemPid> {
        let side = self.ids.to_system(virtual_id)?;
        if side.owner == RESERVED {
            // No task has it: as a PID nobody uses.
            return None;
        }
        if side.owner != GROUP_ONLY {
            // A thread's entry translates for as long as it is in the table; a
            // group-only one depends on the kernel's PIDs ([`translates`]): not cached.
            self.ids.remember(virtual_id, side.system_id);
            return Some(side.system_id);
        }
        group_still_exists(side.system_id.raw()).then_some(side.system_id)
    }

    /// The virtual PID of a system PID: from the table, else from the recently removed
    /// entries. `None` for a process outside this AID.
    pub(crate) fn pid_to_virtual(&mut self, system: SystemPid) -> Option<VirtualPid> {
        match self.ids.to_virtual(system) {
            Some(side) if translates(system.raw(), side.owner) => Some(side.virtual_id),
            // A stale group-only entry: the number is not this AID's any more.
            Some(_) => None,
            // A recently reaped task, unless its number has been reused since (by a
            // task outside the AID, which must not be shown under the old virtual PID).
            None => self
                .released
                .find(system.raw())
                .filter(|_| !PidUses::of(system.raw(), None).process())
                .map(VirtualPid::new),
        }
    }

    /// The virtual PID of a system PID in the table (a task that has not been reaped, or
    /// a group whose leader has).
    pub(crate) fn pid_to_virtual_live(&mut self, system: SystemPid) -> Option<VirtualPid> {
        let side = self.ids.to_virtual(system)?;
        translates(system.raw(), side.owner).then_some(side.virtual_id)
    }

    /// Removes the group-only entry of `system` when no task but `except` (a task being
    /// reaped) is left in that process group or session.
    pub(crate) fn prune_group(&mut self, system: SystemPid, except: Task<'_>) -> Option<RemovedPid> {
        if !self.is_group_only(system) {
            return None;
        }
        let uses = PidUses::of(system.raw(), Some(except));
        if uses.group_or_session() && !uses.process() {
            return None;
        }
        self.remove_group_only(system)
    }

    /// Removes the group-only entry of `system`, if there is one: its number belongs to a
    /// new task now, so the group has ended.
    pub(crate) fn evict_group(&mut self, system: SystemPid) -> Option<RemovedPid> {
        if !self.is_group_only(system) {
            return None;
        }
        self.remove_group_only(system)
    }

    fn is_group_only(&mut self, system: SystemPid) -> bool {
        matches!(self.ids.to_virtual(system), Some(side) if side.owner == GROUP_ONLY)
    }

    fn remove_group_only(&mut self, system: SystemPid) -> Option<RemovedPid> {
        let removed = self.ids.remove_system(system)?;
        // INVARIANT: a group-only entry went.
        self.nr_group_only -= 1;
        Some(removed)
    }

    /// (system, virtual) PIDs of the AID's processes (main threads), as many as fit in
    /// `out`; returns how many were written.
    pub(crate) fn processes(&mut self, out: &mut [(SystemPid, VirtualPid)]) -> usize {
        let mut n = 0;
        self.ids.for_each(|entry| {
            if entry.system_id.raw() == entry.owner {
                if n == out.len() {
                    return false;
                }
                out[n] = (entry.system_id, entry.virtual_id);
                n += 1;
            }
            true
        });
        n
    }
}
