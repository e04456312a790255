// SPDX-License-Identifier: GPL-2.0-only
//! Which AID a task belongs to.
//!
//! Every syscall hook starts by asking whether the calling task is linked, so the common
//! answer, "no", must cost almost nothing: with no task linked anywhere it is one atomic
//! load; otherwise the task pointer hashes to one of 256 buckets, and an empty bucket
//! answers without taking its lock. Only a task in a non-empty bucket takes that bucket's
//! spinlock for a red-black tree lookup.
//!
//! Entries are keyed by `task_struct` address: they are added before a task first runs
//! (or by LINK) and removed in `release_task`, before the task can be freed, so an address
//! in the index always names the live task it was added for.

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation};
use kernel::sync::{new_spinlock, Arc, SpinLock};

use crate::aid::Aid;
use crate::process::Task;

const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// A linked task's own virtual IDs, kept with its index entry so that `getpid` and
/// `gettid` are answered from the one lookup every hook makes anyway.
#[derive(Clone, Copy)]
pub(crate) struct OwnIds {
    /// The system TID `virtual_tid` belongs to. A thread that execs takes over its
    /// leader's TID (`de_thread`); a mismatch then sends `gettid` to the table.
    pub(crate) system_tid: u32,
    pub(crate) virtual_tid: u32,
    /// The process's virtual PID; 0 while unknown (LINK may link a thread before its
    /// leader), then filled in by [`TaskIndex::set_virtual_tgid`].
    pub(crate) virtual_tgid: u32,
}

/// What the index holds for one linked task.
pub(crate) struct Linked {
    aid: Arc<Aid>,
    ids: OwnIds,
    /// A `clone`/`clone3` with `CLONE_PARENT_SETTID` in progress: the user address of its
    /// `parent_tid`, for the new-task hook to write the child's virtual TID to (0: none).
    /// Only the task itself sets and takes it.
    parent_tid: u64,
}

/// Memory for one index entry, allocated before any lock is taken.
pub(crate) type IndexReservation = RBTreeNodeReservation<usize, Linked>;

/// A removed index entry; dropping it frees the node and its AID reference.
pub(crate) type RemovedLink = RBTreeNode<usize, Linked>;

#[pin_data]
struct Bucket {
    /// Linked tasks hashing here, by task address. Lock order 3: after an AID's lock;
    /// no other lock is taken while it is held.
    #[pin]
    tasks: SpinLock<RBTree<usize, Linked>>,
    /// Number of entries in `tasks`, read without the lock to answer "not linked" fast.
    len: AtomicUsize,
}

/// Task address -> AID, for every linked task.
///
/// # Invariants
/// `linked` is the sum of the buckets' `len`, and each `len` is its tree's size (both
/// updated under the bucket's lock).
pub(crate) struct TaskIndex {
    buckets: KVec<Pin<KBox<Bucket>>>,
    linked: AtomicUsize,
}

impl TaskIndex {
    /// An empty index.
    pub(crate) fn new() -> Result<Self> {
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
        Ok(TaskIndex { buckets, linked: AtomicUsize::new(0) })
    }

    fn bucket(&self, task: Task<'_>) -> &Bucket {
        // task_struct addresses are at least cache-line aligned; Fibonacci hashing
        // spreads the remaining bits.
        let hash = (task.key() as u64 >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKET_BITS);
        &self.buckets[hash as usize]
    }

    /// Number of linked tasks in all AIDs.
    pub(crate) fn linked(&self) -> usize {
        self.linked.load(Ordering::Relaxed)
    }

    /// The AID of a task, or `None` when it is not linked. Cheap for unlinked tasks.
    pub(crate) fn lookup(&self, task: Task<'_>) -> Option<Arc<Aid>> {
        if self.linked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let bucket = self.bucket(task);
        if bucket.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        bucket.tasks.lock().get(&task.key()).map(|linked| linked.aid.clone())
    }

    /// The task's own virtual IDs, or `None` when it is not linked: the hot-path test,
    /// with no reference taken.
    pub(crate) fn own_ids(&self, task: Task<'_>) -> Option<OwnIds> {
        if self.linked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let bucket = self.bucket(task);
        if bucket.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        bucket.tasks.lock().get(&task.key()).map(|linked| linked.ids)
    }

    /// Records a linked task's virtual PID once it is known.
    pub(crate) fn set_virtual_tgid(&self, task: Task<'_>, virtual_tgid: u32) {
        if let Some(linked) = self.bucket(task).tasks.lock().get_mut(&task.key()) {
            linked.ids.virtual_tgid = virtual_tgid;
        }
    }

    /// Sets the `CLONE_PARENT_SETTID` address of a linked `task`'s clone in progress
    /// (0 clears it). Only `task` itself calls this.
    pub(crate) fn set_parent_tid(&self, task: Task<'_>, address: u64) {
        if let Some(linked) = self.bucket(task).tasks.lock().get_mut(&task.key()) {
            linked.parent_tid = address;
        }
    }

    /// Takes the address set by [`Self::set_parent_tid`], if any.
    pub(crate) fn take_parent_tid(&self, task: Task<'_>) -> Option<u64> {
        let mut tasks = self.bucket(task).tasks.lock();
        let linked = tasks.get_mut(&task.key())?;
        let address = core::mem::take(&mut linked.parent_tid);
        (address != 0).then_some(address)
    }

    /// Whether `task` is linked to exactly `aid`. Caller holds `aid`'s lock.
    pub(crate) fn is_linked_to(&self, task: Task<'_>, aid: &Aid) -> bool {
        let bucket = self.bucket(task);
        let tasks = bucket.tasks.lock();
        matches!(tasks.get(&task.key()), Some(linked) if core::ptr::eq(&*linked.aid, aid))
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
        let bucket = self.bucket(task);
        let mut tasks = bucket.tasks.lock();
        if tasks.get(&task.key()).is_some() {
            return Err(reservation);
        }
        tasks.insert(reservation.into_node(task.key(), Linked { aid, ids, parent_tid: 0 }));
        // INVARIANT: one entry added, under the bucket lock.
        bucket.len.fetch_add(1, Ordering::Relaxed);
        self.linked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Unlinks `task` if it is linked to `aid`. Caller holds `aid`'s lock and drops the
    /// result after releasing it.
    pub(crate) fn remove(&self, task: Task<'_>, aid: &Aid) -> Option<RemovedLink> {
        let bucket = self.bucket(task);
        let mut tasks = bucket.tasks.lock();
        match tasks.get(&task.key()) {
            Some(linked) if core::ptr::eq(&*linked.aid, aid) => {}
            _ => return None,
        }
        let removed = tasks.remove_node(&task.key());
        // INVARIANT: one entry removed, under the bucket lock.
        bucket.len.fetch_sub(1, Ordering::Relaxed);
        self.linked.fetch_sub(1, Ordering::Relaxed);
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
                if core::ptr::eq(&*current.current().1.aid, aid) {
                    let (next, node) = current.remove_current();
                    drop(node);
                    // INVARIANT: one entry removed, under the bucket lock.
                    bucket.len.fetch_sub(1, Ordering::Relaxed);
                    self.linked.fetch_sub(1, Ordering::Relaxed);
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
