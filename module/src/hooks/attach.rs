// SPDX-License-Identifier: GPL-2.0-only
//! How hooks are attached: ftrace direct calls to the trampoline, through the C glue
//! (`glue/appshot_glue.c`, `glue/appshot_trampoline.S`). A leaf: it knows functions by
//! name and by site (the return address of their fentry call), nothing of AIDs or of
//! what a hook call means; the dispatch in `hooks/mod.rs` and the registry call into it.

use kernel::ffi::{c_char, c_ulong};
use kernel::prelude::*;
use kernel::time::Ktime;

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::linux::glue;

/// How many functions the filter holds (for the log line).
static FILTERED: AtomicUsize = AtomicUsize::new(0);

/// The glue's groups of hooked functions, each attached through a trampoline of its own
/// (`glue/appshot_glue.c`), in the order their names are given to [`resolve`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// System calls: task filter, and a handler's own call of the original (on a copy of
    /// the registers) runs unhooked.
    Syscall = 0,
    /// Other kernel functions: task filter.
    Kernel = 1,
    /// Functions whose every call, by any task, reaches the handler.
    Unfiltered = 2,
    /// Attached only by [`attach_on_demand`].
    OnDemand = 3,
}

impl Group {
    pub(crate) const ALL: [Group; 4] = [Group::Syscall, Group::Kernel, Group::Unfiltered, Group::OnDemand];
}

/// Finds the named kernel functions and sets the hook filters to them (module load);
/// nothing is attached yet. `names` holds `counts[g]` names of each [`Group`], in the
/// order of [`Group::ALL`]. Returns each one's site, in order. Fails, naming the function
/// in the kernel log, when one is missing.
pub(crate) fn resolve(names: &[*const c_char], counts: [u32; 4]) -> Result<KVec<c_ulong>> {
    let mut sites: KVec<c_ulong> = KVec::from_elem(0, names.len(), GFP_KERNEL)?;
    // SAFETY: `names` holds `len` pointers to NUL-terminated static strings (the hook
    // tables'); `sites` has room for as many results; `counts` is four counts, which the
    // glue checks add up to `len`.
    let err = unsafe {
        glue::appshot_glue_hooks_init(names.as_ptr(), names.len() as u32, counts.as_ptr(), sites.as_mut_ptr())
    };
    if err != 0 {
        return Err(Error::from_errno(err));
    }
    FILTERED.store(names.len(), Ordering::Relaxed);
    Ok(sites)
}

/// Whether the function of `site` can be called back through an indirect call (it
/// starts with ENDBR, which FineIBT moves).
pub(crate) fn callable(site: c_ulong) -> bool {
    // SAFETY: `site` is the fentry return site of a kernel function `resolve` found.
    unsafe { glue::appshot_glue_site_callable(site) }
}

/// Frees the filter [`resolve`] set (nothing may be attached).
pub(crate) fn free() {
    // SAFETY: nothing is attached; frees the filter `appshot_glue_hooks_init` set.
    unsafe { glue::appshot_glue_hooks_free() };
}

/// Attaches every hook (the first AID is being registered).
pub(crate) fn attach() -> Result {
    let start = Ktime::ktime_get();
    // SAFETY: `resolve` set the filter; the caller holds the registry mutex, so attach and
    // detach never run concurrently.
    let err = unsafe { glue::appshot_glue_hooks_attach() };
    if err != 0 {
        return Err(Error::from_errno(err));
    }
    let us = (Ktime::ktime_get() - start).to_ns() / 1000;
    pr_info!("hooks attached ({} functions) in {} us\n", FILTERED.load(Ordering::Relaxed), us);
    Ok(())
}

/// Attaches the on-demand hooks too, if the others are attached and they are not yet
/// (a feature that needs them is used for the first time). The caller holds the
/// registry mutex, like [`attach`]; detaching detaches them with the rest.
pub(crate) fn attach_on_demand() -> Result {
    let start = Ktime::ktime_get();
    // SAFETY: `resolve` set the filters; the registry mutex orders this with `attach` and
    // `detach`.
    let err = unsafe { glue::appshot_glue_hooks_attach_demand() };
    if err != 0 {
        return Err(Error::from_errno(err));
    }
    let us = (Ktime::ktime_get() - start).to_ns() / 1000;
    pr_info!("on-demand hooks attached in {} us\n", us);
    Ok(())
}

/// Detaches every hook (the last AID is gone). Handlers still sleeping hold a module
/// reference; the module's exit waits for the rest.
pub(crate) fn detach() {
    let start = Ktime::ktime_get();
    // SAFETY: as for `attach`.
    unsafe { glue::appshot_glue_hooks_detach() };
    let us = (Ktime::ktime_get() - start).to_ns() / 1000;
    pr_info!("hooks detached in {} us\n", us);
}

/// Module exit: no handler runs or can start once this returns.
pub(crate) fn shutdown() {
    // SAFETY: detaching detached hooks does nothing; quiesce then waits for handlers and
    // trampolines, and the filters are freed last.
    unsafe {
        glue::appshot_glue_hooks_detach();
        glue::appshot_glue_hooks_quiesce();
    }
    free();
}

