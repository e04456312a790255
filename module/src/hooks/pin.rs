// SPDX-License-Identifier: GPL-2.0-only
//! What keeps the module loaded while a system call runs whose handler holds no
//! reference on its AID.
//!
//! A handler ([`crate::syscalls::Handler`]) holds a reference on the caller's AID for as
//! long as it runs, and the AID object holds a module reference: `rmmod` is refused while
//! the handler sleeps in the original (a `wait4`, a `semop`). A row's fast path
//! ([`crate::syscalls::Translate`]) only rewrites arguments: it borrows the AID under the
//! dispatch's RCU read lock, and the dispatch then calls the original with no reference
//! (a reference costs about 30 instructions, a tenth of what appshot adds to a `semop`).
//! The original still returns into this module's code, so such a call is counted
//! instead ([`CallPin`]), in two per-CPU counters kept by the glue: calls started and
//! calls ended, each only ever incremented.
//!
//! The module reference of an AID whose last `Arc` goes while counted calls are in
//! flight is not dropped but handed to a *drain* ([`put_module`]); the call that ends
//! last drops it. So `rmmod` is refused (`EAGAIN`) until every call that could have
//! seen the AID has returned, as with a handler's reference.
//!
//! Why no call is missed:
//! - A fast-path call is counted before the RCU read section in which it found its AID
//!   ends, and an AID's last reference goes only after its unregistration waited for an
//!   RCU grace period (the registry's reference outlives every link, and every reader of
//!   a link's cache: `Registry::unregister`). So every call of the AID started before
//!   [`put_module`] reads the counters.
//! - The counters are summed ends first, then (after a full barrier) starts. Every end
//!   counted has its start counted, so a call started before the sums and not ended
//!   makes the starts exceed the ends: "nothing in flight" is never said falsely.
//! - The drain is ended by whichever sees, after its own full barrier, both the drain
//!   and equal sums: the handing over (which sets the drain first) or a call's end (which
//!   counts itself first). Of the two, at least one sees the other's write.
//! - After the last module reference goes, module exit waits for RCU-tasks: a task
//!   still running the few instructions between its end of call and its return from the
//!   trampoline is waited for (`appshot_glue_hooks_quiesce`).

use core::sync::atomic::{fence, AtomicBool, Ordering};

use kernel::ffi::c_ulong;

use crate::linux::glue::{self, RcuReadLock};

/// Whether a module reference is held for calls in flight, handed over by an AID that
/// went while some were. At most one is held: a second hand-over while one is held
/// drops its reference, as the drain lasts until no call at all is in flight.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// One system call counted in flight, from its fast path to its return.
pub(crate) struct CallPin(());

impl CallPin {
    /// Counts the current call, then ends `rcu`, the RCU read section in which the
    /// caller found its AID (see the module documentation).
    #[inline]
    pub(crate) fn enter(rcu: RcuReadLock) -> CallPin {
        // SAFETY: the glue function increments a per-CPU counter and calls
        // `rcu_read_unlock` once.
        unsafe { rcu.unlock_with(glue::appshot_glue_call_started_rcu_read_unlock) };
        CallPin(())
    }
}

impl Drop for CallPin {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a per-CPU increment.
        unsafe { glue::appshot_glue_call_ended() };
        // The end before the read of the drain; pairs with the barrier of `put_module`.
        fence(Ordering::SeqCst);
        if DRAINING.load(Ordering::Relaxed) {
            end_drain();
        }
    }
}

/// Whether a counted call may be in flight (see the module documentation).
fn in_flight() -> bool {
    let (mut started, mut ended): (c_ulong, c_ulong) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { glue::appshot_glue_calls_counted(&mut started, &mut ended) };
    started != ended
}

/// Drops the drain's reference when no counted call is in flight.
#[cold]
fn end_drain() {
    if !in_flight() && DRAINING.compare_exchange(true, false, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
        glue::module_put();
    }
}

/// Drops the module reference of an AID object that goes, or hands it to the drain
/// while counted calls are in flight.
pub(crate) fn put_module() {
    // Whatever ended before the AID's last reference went is seen.
    fence(Ordering::SeqCst);
    if in_flight() && !DRAINING.swap(true, Ordering::SeqCst) {
        // This reference is the drain's now. The last call may have ended before the
        // drain was set (and so not looked at it): ended here, then.
        fence(Ordering::SeqCst);
        end_drain();
        return;
    }
    glue::module_put();
}
