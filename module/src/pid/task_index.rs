// SPDX-License-Identifier: GPL-2.0-only
//! Which AID a task belongs to.
//!
//! Every hooked call asks whether the calling task is linked, so the common answer,
//! "no", must cost almost nothing, and a linked task's own IDs (`getpid`, `gettid`) must
//! come back without a lock:
//!
//! - A task's **slot** is a hash of its `task_struct` address into [`SLOTS`] values,
//!   computed by `appshot_task_slot` (`glue/appshot_trampoline.S`, the one definition,
//!   shared with the trampoline). [`LINKED_SLOTS`] counts the linked tasks of each slot;
//!   the trampoline reads it before anything else and lets every task of an empty slot
//!   through untouched (docs/design/hooks.md).
//! - Entries live in 256 **buckets** (a slot's bucket is its upper bits), each a
//!   red-black tree by task address under a spinlock.
//! - Each slot also **caches** one linked task's own IDs and its AID under a sequence
//!   count, filled by the last linked task of that slot that asked, so the hot path reads
//!   five words and takes no lock; a task whose slot caches another task takes the
//!   bucket's lock.
//!
//! **The cached AID pointer** is used without a reference, under an RCU read lock
//! ([`TaskIndex::current_link`]). That is sound because an AID's memory outlives every
//! reader who found it in a cache: an entry's cache is forgotten (under the bucket lock)
//! before the entry goes; nothing links a task to an unregistered AID; and the registry
//! drops its own reference, the one that outlives every link, only after unregistering
//! has removed every link of the AID and waited for an RCU grace period
//! (`Registry::unregister`). A reader in its RCU section therefore sees an AID whose
//! count is at least one, and may take a reference of its own before it sleeps.
//!
//! Entries are keyed by `task_struct` address: they are added before a task first runs
//! (or by LINK) and removed in `release_task`, before the task can be freed, so an address
//! in the index always names the live task it was added for.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kernel::ffi::c_ulong;
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation};
use kernel::sync::{new_spinlock, Arc, ArcBorrow, SpinLock};

use crate::aid::Aid;
use crate::linux::glue::{self, RcuReadLock};
use crate::linux::task::Task;
use crate::table::{SystemPid, VirtualPid};

/// Bits of a slot; `glue/appshot_trampoline.S` uses the same (checked at load).
pub(crate) const SLOT_BITS: u32 = 14;
const SLOTS: usize = 1 << SLOT_BITS;
const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;
const SLOTS_PER_BUCKET: usize = SLOTS / BUCKETS;

/// Number of linked tasks in each slot, read by the trampoline without a lock. Changed
/// only under the slot's bucket lock, together with the bucket's tree. There is one
/// [`TaskIndex`] per loaded module (the registry's), so this is its own array.
#[export_name = "appshot_linked_slots"]
static LINKED_SLOTS: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// The own IDs of one linked task per slot (see [`CachedIds`]). Written only under the
/// slot's bucket lock.
static CACHED_IDS: [CachedIds; SLOTS] = [const { CachedIds::new() }; SLOTS];

/// A task's slot: `appshot_task_slot` of its address.
#[derive(Clone, Copy)]
pub(crate) struct Slot(usize);

impl Slot {
    /// The slot of `task`.
    pub(crate) fn of(task: Task<'_>) -> Slot {
        Slot::of_key(task.key())
    }

    /// The slot of the task whose address is `key`.
    fn of_key(key: usize) -> Slot {
        // SAFETY: `appshot_task_slot` is a pure function of the number it is given.
        Slot(unsafe { glue::appshot_task_slot(key as c_ulong) } as usize & (SLOTS - 1))
    }

    /// A slot the trampoline computed for the current task (its fifth argument).
    pub(crate) fn from_trampoline(raw: usize) -> Slot {
        Slot(raw & (SLOTS - 1))
    }

    fn bucket(self) -> usize {
        self.0 / SLOTS_PER_BUCKET
    }

    /// Whether any linked task has this slot (a task of an empty slot is in no AID).
    #[inline]
    pub(crate) fn any_linked(self) -> bool {
        self.linked().load(Ordering::Relaxed) != 0
    }

    fn linked(self) -> &'static AtomicU32 {
        &LINKED_SLOTS[self.0]
    }

    fn cached(self) -> &'static CachedIds {
        &CACHED_IDS[self.0]
    }
}

/// Refuses to load a module whose trampoline and Rust disagree on the slot size.
pub(crate) fn check_slot_bits() -> Result {
    // SAFETY: `appshot_slot_bits` is a constant in the trampoline's read-only data.
    let bits = unsafe { glue::appshot_slot_bits };
    if bits != SLOT_BITS {
        pr_err!("trampoline slot bits {} != {}: inconsistent build\n", bits, SLOT_BITS);
        return Err(EINVAL);
    }
    Ok(())
}

/// A linked task's own virtual IDs, kept with its index entry so that `getpid` and
/// `gettid` are answered from the one lookup every hook makes anyway.
#[derive(Clone, Copy)]
pub(crate) struct OwnIds {
    /// The system TID `virtual_tid` belongs to. A thread that execs takes over its
    /// leader's TID (`de_thread`); a mismatch then sends `gettid` to the table.
    pub(crate) system_tid: SystemPid,
    pub(crate) virtual_tid: VirtualPid,
    /// The process's virtual PID; 0 while unknown (LINK may link a thread before its
    /// leader), then filled in by [`TaskIndex::set_virtual_tgid`].
    pub(crate) virtual_tgid: Option<VirtualPid>,
}

impl OwnIds {
    const NONE: OwnIds = OwnIds { system_tid: SystemPid::new(0), virtual_tid: VirtualPid::new(0), virtual_tgid: None };
}

/// One slot's cached [`OwnIds`], read locklessly (a sequence count, like the kernel's
/// `seqcount_t`) and written only under the slot's bucket lock.
struct CachedIds {
    /// Even while the fields are stable, odd while a writer changes them.
    seq: AtomicU32,
    /// Address of the task the IDs are of; 0 when the slot caches nothing.
    task: AtomicUsize,
    /// `virtual_tid << 32 | virtual_tgid`.
    ids: AtomicU64,
    system_tid: AtomicU32,
    /// The task's AID (see the module documentation for why it may be used), written
    /// with `task` and read only when `task` matches under a stable count. The lifetime
    /// is not `'static`: [`TaskIndex::current_link`] hands it out for the duration of an
    /// RCU read lock only. (Kept as a borrow, not a pointer to the contents, so that
    /// taking a reference needs no `container_of` arithmetic on the hot path.)
    aid: UnsafeCell<MaybeUninit<ArcBorrow<'static, Aid>>>,
    /// The task's `getppid` answer, for as long as its parent is the task at address
    /// `parent` (0: none cached) and no link changed anywhere since the index's
    /// generation was `generation` ([`TaskIndex::cached_parent_id`]).
    parent: AtomicUsize,
    ppid: AtomicU32,
    generation: AtomicU64,
}

// SAFETY: every field but `aid` is atomic; `aid` is written only under the slot's bucket
// lock, inside the sequence count's odd window, and read only through `read`, which uses
// the value only when the count shows no write overlapped.
unsafe impl Sync for CachedIds {}

impl CachedIds {
    const fn new() -> Self {
        CachedIds {
            seq: AtomicU32::new(0),
            task: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
            system_tid: AtomicU32::new(0),
            aid: UnsafeCell::new(MaybeUninit::uninit()),
            parent: AtomicUsize::new(0),
            ppid: AtomicU32::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// What `fields` reads of the slot, if the slot caches `task` and no writer got in
    /// the way: the reader's side of the sequence count, for every cached answer.
    /// `fields` makes plain (relaxed or volatile) reads only; its result is returned
    /// only when the count was even before and unchanged after them.
    #[inline(always)]
    fn read_consistent<T>(&self, task: usize, fields: impl FnOnce(&Self) -> T) -> Option<T> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 != 0 || self.task.load(Ordering::Relaxed) != task {
            return None;
        }
        let value = fields(self);
        // Orders the reads above before the second read of `seq` (smp_rmb).
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then_some(value)
    }

    /// The cached `getppid` answer of `task`: (parent address, answer, generation), read
    /// without a lock; `None` when the slot caches another task or a writer got in the way.
    #[inline]
    fn read_parent(&self, task: usize) -> Option<(usize, u32, u64)> {
        self.read_consistent(task, |s| {
            (s.parent.load(Ordering::Relaxed), s.ppid.load(Ordering::Relaxed), s.generation.load(Ordering::Relaxed))
        })
    }

    /// Caches `task`'s `getppid` answer, if the slot caches `task`. Caller holds the
    /// slot's bucket lock, which makes it the only writer.
    fn write_parent(&self, task: usize, parent: usize, ppid: u32, generation: u64) {
        if self.task.load(Ordering::Relaxed) != task {
            return;
        }
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.parent.store(parent, Ordering::Relaxed);
        self.ppid.store(ppid, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// An aligned pointer-sized read (one instruction, never torn) of the cached AID.
    #[inline(always)]
    fn aid_field(&self) -> MaybeUninit<ArcBorrow<'static, Aid>> {
        // SAFETY: a field only the bucket lock's holder writes; what is read is used only
        // if the sequence count shows no writer got in the way (`read_consistent`).
        unsafe { core::ptr::read_volatile(self.aid.get()) }
    }

    /// [`Self::read`] of the AID alone (a call that needs no own ID reads nothing else).
    #[inline]
    fn read_aid(&self, task: usize) -> Option<ArcBorrow<'static, Aid>> {
        let aid = self.read_consistent(task, Self::aid_field)?;
        // SAFETY: as in `read`.
        Some(unsafe { aid.assume_init() })
    }

    /// The cached IDs and AID if they are `task`'s, read without a lock; `None` when the
    /// slot caches another task or a writer got in the way.
    #[inline]
    fn read(&self, task: usize) -> Option<(OwnIds, ArcBorrow<'static, Aid>)> {
        let (ids, system_tid, aid) = self.read_consistent(task, |s| {
            (s.ids.load(Ordering::Relaxed), s.system_tid.load(Ordering::Relaxed), s.aid_field())
        })?;
        let ids = OwnIds {
            system_tid: SystemPid::new(system_tid),
            virtual_tid: VirtualPid::new((ids >> 32) as u32),
            virtual_tgid: Some(VirtualPid::new(ids as u32)).filter(|v| v.raw() != 0),
        };
        // SAFETY: the count was even and unchanged and `task` matched, so the last writer
        // wrote `aid` together with `task` (`write` with a task writes both).
        Some((ids, unsafe { aid.assume_init() }))
    }

    /// Caches `task`'s IDs and AID (`task` 0 and no AID: nothing). Caller holds the slot's
    /// bucket lock, which makes it the only writer.
    fn write(&self, task: usize, ids: OwnIds, aid: Option<ArcBorrow<'static, Aid>>) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd count before the field stores (smp_wmb).
        fence(Ordering::Release);
        self.task.store(task, Ordering::Relaxed);
        let virtual_tgid = ids.virtual_tgid.map_or(0, VirtualPid::raw);
        self.ids.store(u64::from(ids.virtual_tid.raw()) << 32 | u64::from(virtual_tgid), Ordering::Relaxed);
        self.system_tid.store(ids.system_tid.raw(), Ordering::Relaxed);
        if let Some(aid) = aid {
            // SAFETY: the bucket lock makes this the only writer; readers use the value
            // only under a count that this write makes odd first.
            unsafe { core::ptr::write_volatile(self.aid.get(), MaybeUninit::new(aid)) };
        }
        self.parent.store(0, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Empties the slot if it caches `task`. Caller holds the slot's bucket lock.
    fn forget(&self, task: usize) {
        if self.task.load(Ordering::Relaxed) == task {
            self.write(0, OwnIds::NONE, None);
        }
    }
}

/// What a reaped task was, for the wait that reaped it.
#[derive(Clone, Copy)]
pub(crate) enum Reaped {
    /// A task of the AID, with its virtual PID.
    Linked(VirtualPid),
    /// A new task that could not be linked and was killed before it ran: its creator's
    /// fork failed, so its wait must not report it.
    Refused,
    /// A task in no AID (a child that had exited before LINK took its parent).
    Outside,
}

/// What the index holds for one linked task.
pub(crate) struct Linked {
    aid: Arc<Aid>,
    ids: OwnIds,
    /// A `clone`/`clone3` with `CLONE_PARENT_SETTID` in progress: the user address of its
    /// `parent_tid`, for the new-task hook to write the child's virtual TID to (0: none).
    /// Only the task itself sets and takes it.
    parent_tid: u64,
    /// A `clone3` with `set_tid` in progress: the virtual TID its new task must get (0:
    /// none). Set by the `kernel_clone` hook, taken by the new-task hook; only the task
    /// itself sets and takes it.
    wanted_tid: u32,
    /// A hook handler of this task is calling the hooked function itself (signalfd): its
    /// hook lets that call through. Only the task itself sets and reads it.
    in_original: bool,
    /// This task is in a PI futex operation, whose lookups of the owner by the TID in
    /// the futex word may find only tasks of its AID. Only the task itself sets and
    /// reads it.
    in_pi_futex: bool,
    /// The last task this task created: its system TID and virtual TID, or the error
    /// its creator gets when it was refused (killed before it ran). Set by the new-task
    /// hook, which runs on this task, and taken by its fork/clone handler: the child's
    /// virtual TID is known even when the child has already exited and been reaped.
    new_child: Option<(SystemPid, Result<VirtualPid>)>,
    /// The last task this task reaped, and what it was. Set by the release hook, which
    /// runs on this task inside its wait, and taken by its wait handler: the reaped
    /// child's virtual PID is known after its entry is gone, however many other tasks are
    /// reaped meanwhile.
    reaped: Option<(SystemPid, Reaped)>,
}

/// Memory for one index entry, allocated before any lock is taken.
pub(crate) type IndexReservation = RBTreeNodeReservation<usize, Linked>;

/// A removed index entry; dropping it frees the node and its AID reference.
pub(crate) type RemovedLink = RBTreeNode<usize, Linked>;

#[pin_data]
struct Bucket {
    /// Linked tasks of this bucket's slots, by task address. Lock order 3: after an AID's
    /// lock, and after the kernel's futex locks (the `find_get_task_by_vpid` hook under a
    /// hash-bucket lock, the `__task_pid_nr_ns` hook also under a PI mutex's raw
    /// `wait_lock`, which only a kernel without PREEMPT_RT allows: the module refuses to
    /// build for one); no other lock is taken while it is held. Also serializes the writers of
    /// this bucket's slots in [`LINKED_SLOTS`] and [`CACHED_IDS`].
    #[pin]
    tasks: SpinLock<RBTree<usize, Linked>>,
    /// Number of entries in `tasks`, read without the lock to skip empty buckets.
    len: AtomicUsize,
}

/// Task address -> AID, for every linked task.
///
/// # Invariants
/// `linked` is the sum of the buckets' `len`; each `len` is its tree's size; each
/// [`LINKED_SLOTS`] count is the number of entries of its slot; a slot's [`CACHED_IDS`],
/// when not empty, are those of an entry of that slot (all updated under the bucket's
/// lock).
pub(crate) struct TaskIndex {
    buckets: KVec<Pin<KBox<Bucket>>>,
    linked: AtomicUsize,
    /// Number of tasks in a PI futex operation ([`Self::enter_pi_futex`]), read without a
    /// lock so that the `__task_pid_nr_ns` hook leaves at once while it is 0.
    pi_callers: AtomicUsize,
    /// Incremented after every change of an entry's AID or IDs (a task linked,
    /// unlinked, its virtual PID learned), under the entry's bucket lock: a cached
    /// `getppid` answer is good only while it has not moved.
    generation: AtomicU64,
}

impl TaskIndex {
    /// An empty index.
    pub(crate) fn new() -> Result<Self> {
        check_slot_bits()?;
        let mut buckets = KVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        for _ in 0..BUCKETS {
            let bucket = KBox::pin_init(
                pin_init!(Bucket {
                    tasks <- new_spinlock!(RBTree::new(), "appshot_task_bucket"),
                    len: AtomicUsize::new(0),
                }),
                GFP_KERNEL,
            )?;
            buckets.push(bucket, GFP_KERNEL)?;
        }
        Ok(TaskIndex {
            buckets,
            linked: AtomicUsize::new(0),
            pi_callers: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        })
    }

    fn bucket(&self, slot: Slot) -> &Bucket {
        &self.buckets[slot.bucket()]
    }

    /// Number of linked tasks in all AIDs.
    pub(crate) fn linked(&self) -> usize {
        self.linked.load(Ordering::Relaxed)
    }

    /// Runs `f` on `task`'s entry (its slot is `slot`) under its bucket's lock; `None`
    /// when it is not linked, answered without the lock when its slot holds no linked task.
    fn with_entry<R>(&self, task: Task<'_>, slot: Slot, f: impl FnOnce(&mut Linked) -> R) -> Option<R> {
        if !slot.any_linked() {
            return None;
        }
        self.bucket(slot).tasks.lock().get_mut(&task.key()).map(f)
    }

    /// The AID of a task, or `None` when it is not linked. Cheap for unlinked tasks.
    pub(crate) fn lookup(&self, task: Task<'_>) -> Option<Arc<Aid>> {
        self.with_entry(task, Slot::of(task), |linked| linked.aid.clone())
    }

    /// A reference on the AID of `task`, the current task (slot `slot`): from its slot's
    /// cache ([`Self::current_link`]), taking no lock when the slot caches it.
    pub(crate) fn current_aid(&self, task: Task<'_>, slot: Slot) -> Option<Arc<Aid>> {
        let rcu = RcuReadLock::new();
        self.current_link(task, slot, &rcu).map(|(_, aid)| Arc::from(aid))
    }

    /// The own virtual IDs of `task`, the current task, whose slot is `slot`; `None` when
    /// it is not linked. The hot path: no lock and no reference taken when the slot
    /// caches `task`, which it then does for its next call.
    #[inline]
    pub(crate) fn own_ids(&self, task: Task<'_>, slot: Slot) -> Option<OwnIds> {
        if !slot.any_linked() {
            return None;
        }
        match slot.cached().read(task.key()) {
            Some((ids, _)) => Some(ids),
            None => self.cache_locked(task, slot).map(|(ids, _)| ids),
        }
    }

    /// The own IDs of the task at address `task` if its slot caches them; `None` says
    /// nothing (ask [`Self::own_ids`]).
    #[inline]
    pub(crate) fn cached_own_ids(&self, task: usize, slot: Slot) -> Option<OwnIds> {
        slot.cached().read(task).map(|(ids, _)| ids)
    }

    /// The own IDs and the AID of `task`, the current task, whose slot is `slot`; `None`
    /// when it is not linked. The AID is borrowed for as long as the RCU read lock `rcu`
    /// is held (see the module documentation): no lock and no reference are taken when
    /// the slot caches `task`.
    #[inline]
    pub(crate) fn current_link<'r>(&self, task: Task<'_>, slot: Slot, _rcu: &'r RcuReadLock) -> Option<(OwnIds, ArcBorrow<'r, Aid>)> {
        if !slot.any_linked() {
            return None;
        }
        // `aid` was cached from a link's `Arc<Aid>` that was still in the index when the
        // cache was read (the sequence count says so; the locked path reads the entry
        // itself); under `_rcu` the registry's own reference keeps the AID alive until
        // the guard is dropped (module documentation), so the borrow, shortened to `'r`,
        // is of a live `Arc`.
        match slot.cached().read(task.key()) {
            Some(cached) => Some(cached),
            None => self.cache_locked(task, slot),
        }
    }

    /// [`Self::current_link`] of the AID alone.
    #[inline]
    pub(crate) fn current_link_aid<'r>(&self, task: Task<'_>, slot: Slot, _rcu: &'r RcuReadLock) -> Option<ArcBorrow<'r, Aid>> {
        if !slot.any_linked() {
            return None;
        }
        // As in `current_link`.
        match slot.cached().read_aid(task.key()) {
            Some(aid) => Some(aid),
            None => self.cache_locked(task, slot).map(|(_, aid)| aid),
        }
    }

    /// The own IDs and AID of `task` when the slot caches another task: from the tree,
    /// and cached (under the bucket lock, which makes this the slot's only writer).
    #[cold]
    fn cache_locked(&self, task: Task<'_>, slot: Slot) -> Option<(OwnIds, ArcBorrow<'static, Aid>)> {
        self.with_entry(task, slot, |linked| {
            // SAFETY: only the lifetime changes. The borrow is handed out only under an
            // RCU read lock, during which the AID lives (module documentation).
            let aid = unsafe { core::mem::transmute::<ArcBorrow<'_, Aid>, ArcBorrow<'static, Aid>>(linked.aid.as_arc_borrow()) };
            slot.cached().write(task.key(), linked.ids, Some(aid));
            (linked.ids, aid)
        })
    }

    /// Notes a change of an entry (caller holds its bucket lock, after the change).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation to pass to [`Self::cache_parent_id`], read before the answer is
    /// computed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current task's (address `task`, slot `slot`) cached `getppid` answer, if its
    /// parent is still the one it was computed for and no link changed since: no lock,
    /// no reference. `None` says nothing.
    #[inline]
    pub(crate) fn cached_parent_id(&self, task: usize, slot: Slot) -> Option<u32> {
        let (parent, ppid, generation) = slot.cached().read_parent(task)?;
        if parent == 0 || generation != self.generation.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: reads the current task's `real_parent` pointer as a number.
        (parent == unsafe { glue::appshot_glue_current_parent_address() } as usize).then_some(ppid)
    }

    /// Caches `ppid` as the `getppid` answer of `task`, the current task, computed for
    /// its parent at address `parent` after the index's [`Self::generation`] was
    /// `generation`.
    pub(crate) fn cache_parent_id(&self, task: Task<'_>, slot: Slot, parent: usize, ppid: u32, generation: u64) {
        let _tasks = self.bucket(slot).tasks.lock();
        slot.cached().write_parent(task.key(), parent, ppid, generation);
    }

    /// The own IDs of `task` if it is linked to `aid` (any task the caller keeps alive,
    /// such as a parent under RCU). A lock is taken only when its slot holds a linked task.
    pub(crate) fn ids_in(&self, task: Task<'_>, aid: &Aid) -> Option<OwnIds> {
        self.with_entry(task, Slot::of(task), |linked| core::ptr::eq(&*linked.aid, aid).then_some(linked.ids))
            .flatten()
    }

    /// Records a linked task's virtual PID once it is known.
    pub(crate) fn set_virtual_tgid(&self, task: Task<'_>, virtual_tgid: VirtualPid) {
        let slot = Slot::of(task);
        self.with_entry(task, slot, |linked| {
            linked.ids.virtual_tgid = Some(virtual_tgid);
            slot.cached().forget(task.key());
            self.changed();
        });
    }

    /// Records what a linked `task`'s clone in progress asks of its new task: the
    /// `CLONE_PARENT_SETTID` address (0: none) and the virtual TID of `clone3`'s `set_tid`
    /// (0: none), in one lookup of the index. Only `task` itself calls this.
    pub(crate) fn set_clone(&self, task: Task<'_>, parent_tid: u64, wanted_tid: u32) {
        self.with_entry(task, Slot::of(task), |linked| {
            linked.parent_tid = parent_tid;
            linked.wanted_tid = wanted_tid;
        });
    }

    /// Takes what [`Self::set_clone`] recorded, in one lookup: the `CLONE_PARENT_SETTID`
    /// address and the `set_tid` virtual TID, each if any.
    pub(crate) fn take_clone(&self, task: Task<'_>) -> (Option<u64>, Option<VirtualPid>) {
        let taken = self.with_entry(task, Slot::of(task), |linked| {
            (core::mem::take(&mut linked.parent_tid), core::mem::take(&mut linked.wanted_tid))
        });
        let (address, wanted) = taken.unwrap_or((0, 0));
        ((address != 0).then_some(address), (wanted != 0).then(|| VirtualPid::new(wanted)))
    }

    /// Marks (or unmarks) `task`, the current task, as calling a hooked function from its
    /// own hook handler. Only `task` itself calls this.
    pub(crate) fn set_in_original(&self, task: Task<'_>, value: bool) {
        self.with_entry(task, Slot::of(task), |linked| linked.in_original = value);
    }

    /// Whether `task`'s hook handler is calling the hooked function (see
    /// [`Self::set_in_original`]).
    pub(crate) fn in_original(&self, task: Task<'_>) -> bool {
        self.with_entry(task, Slot::of(task), |linked| linked.in_original).unwrap_or(false)
    }

    /// Marks `task`, the current task, as being in a PI futex operation until
    /// [`Self::leave_pi_futex`]. Only `task` itself calls these two, in pairs.
    pub(crate) fn enter_pi_futex(&self, task: Task<'_>) {
        self.pi_callers.fetch_add(1, Ordering::Relaxed);
        self.with_entry(task, Slot::of(task), |linked| linked.in_pi_futex = true);
    }

    /// Ends [`Self::enter_pi_futex`] (also for a task unlinked meanwhile).
    pub(crate) fn leave_pi_futex(&self, task: Task<'_>) {
        self.with_entry(task, Slot::of(task), |linked| linked.in_pi_futex = false);
        self.pi_callers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether any task may be in a PI futex operation (no lock; a task that has just
    /// entered one is seen by its own later calls).
    pub(crate) fn any_pi_caller(&self) -> bool {
        self.pi_callers.load(Ordering::Relaxed) != 0
    }

    /// The AID of `task` if it is in a PI futex operation (see [`Self::enter_pi_futex`]).
    pub(crate) fn pi_caller_aid(&self, task: Task<'_>) -> Option<Arc<Aid>> {
        self.with_entry(task, Slot::of(task), |linked| linked.in_pi_futex.then(|| linked.aid.clone())).flatten()
    }

    /// Records the task that `task`, the current task, has just created (see
    /// `Linked::new_child`).
    pub(crate) fn set_new_child(&self, task: Task<'_>, system: SystemPid, virtual_id: Result<VirtualPid>) {
        self.with_entry(task, Slot::of(task), |linked| linked.new_child = Some((system, virtual_id)));
    }

    /// Takes the record of [`Self::set_new_child`] if it is about system TID `system`:
    /// `Some(Err(e))` for a refused child.
    pub(crate) fn take_new_child(&self, task: Task<'_>, system: SystemPid) -> Option<Result<VirtualPid>> {
        let (child, virtual_id) = self.with_entry(task, Slot::of(task), |linked| linked.new_child.take())??;
        (child == system).then_some(virtual_id)
    }

    /// Records the task that `task`, the current task, has just reaped (see
    /// `Linked::reaped`); `None` clears the record.
    pub(crate) fn set_reaped(&self, task: Task<'_>, reaped: Option<(SystemPid, Reaped)>) {
        self.with_entry(task, Slot::of(task), |linked| linked.reaped = reaped);
    }

    /// Takes the record of [`Self::set_reaped`].
    pub(crate) fn take_reaped(&self, task: Task<'_>) -> Option<(SystemPid, Reaped)> {
        self.with_entry(task, Slot::of(task), |linked| linked.reaped.take()).flatten()
    }

    /// Whether `task` is linked to exactly `aid`. Caller holds `aid`'s lock.
    pub(crate) fn is_linked_to(&self, task: Task<'_>, aid: &Aid) -> bool {
        self.with_entry(task, Slot::of(task), |linked| core::ptr::eq(&*linked.aid, aid)).unwrap_or(false)
    }

    /// Links `task` to `aid`. Caller holds `aid`'s lock. Fails, returning the reservation,
    /// when the task is linked already (to any AID).
    pub(crate) fn insert(
        &self,
        task: Task<'_>,
        aid: Arc<Aid>,
        ids: OwnIds,
        reservation: IndexReservation,
    ) -> core::result::Result<(), IndexReservation> {
        let slot = Slot::of(task);
        let bucket = self.bucket(slot);
        let mut tasks = bucket.tasks.lock();
        if tasks.get(&task.key()).is_some() {
            return Err(reservation);
        }
        tasks.insert(reservation.into_node(task.key(), Linked { aid, ids, parent_tid: 0, wanted_tid: 0, in_original: false, in_pi_futex: false, new_child: None, reaped: None }));
        // INVARIANT: one entry added, under the bucket lock. A new task's first hooked
        // call comes after the scheduler has run it (full barriers), LINK's caller links
        // itself in program order: the count is seen by the task's next call.
        slot.linked().fetch_add(1, Ordering::Relaxed);
        bucket.len.fetch_add(1, Ordering::Relaxed);
        self.linked.fetch_add(1, Ordering::Relaxed);
        self.changed();
        Ok(())
    }

    /// Unlinks `task` if it is linked to `aid`. Caller holds `aid`'s lock and drops the
    /// result after releasing it.
    pub(crate) fn remove(&self, task: Task<'_>, aid: &Aid) -> Option<RemovedLink> {
        let slot = Slot::of(task);
        let bucket = self.bucket(slot);
        let mut tasks = bucket.tasks.lock();
        match tasks.get(&task.key()) {
            Some(linked) if core::ptr::eq(&*linked.aid, aid) => {}
            _ => return None,
        }
        let removed = tasks.remove_node(&task.key());
        // INVARIANT: one entry removed, under the bucket lock.
        slot.cached().forget(task.key());
        slot.linked().fetch_sub(1, Ordering::Relaxed);
        bucket.len.fetch_sub(1, Ordering::Relaxed);
        self.linked.fetch_sub(1, Ordering::Relaxed);
        self.changed();
        removed
    }

    /// Unlinks every task of `aid`; returns how many. Caller holds `aid`'s lock. The AID
    /// references dropped here are never the last (the caller holds one).
    pub(crate) fn remove_all(&self, aid: &Aid) -> usize {
        let mut removed = 0;
        for bucket in self.buckets.iter() {
            if bucket.len.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut tasks = bucket.tasks.lock();
            let mut cursor = tasks.cursor_front();
            while let Some(current) = cursor {
                let (&key, linked) = current.current();
                if core::ptr::eq(&*linked.aid, aid) {
                    let (next, node) = current.remove_current();
                    drop(node);
                    let slot = Slot::of_key(key);
                    // INVARIANT: one entry removed, under the bucket lock.
                    slot.cached().forget(key);
                    slot.linked().fetch_sub(1, Ordering::Relaxed);
                    bucket.len.fetch_sub(1, Ordering::Relaxed);
                    self.linked.fetch_sub(1, Ordering::Relaxed);
                    self.changed();
                    removed += 1;
                    cursor = next;
                } else {
                    cursor = current.move_next();
                }
            }
        }
        removed
    }
}
