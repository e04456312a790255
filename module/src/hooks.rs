// SPDX-License-Identifier: GPL-2.0-only
//! Entry points the C glue calls from its hooks (ftrace direct calls, see
//! `glue/appshot_glue.c` for how they are attached and detached).
//!
//! | kernel function | when | handler |
//! |---|---|---|
//! | `wake_up_new_task(p)` | a new process or thread is about to run for the first time | [`link::on_new_task`] |
//! | `release_task(p)` | a process or thread is reaped, its TID still allocated | [`link::on_release_task`] |
//!
//! Both run in the context of the traced function: process context, no spinlock held, so
//! the handlers may allocate with `GFP_KERNEL`.

use core::ptr::NonNull;

use kernel::bindings;

use crate::link;
use crate::process::Task;
use crate::registry;

/// Called at the start of `wake_up_new_task(task)`.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_on_new_task(task: *mut bindings::task_struct) {
    let (Some(registry), Some(task)) = (registry::get(), NonNull::new(task)) else {
        return;
    };
    // SAFETY: `wake_up_new_task` is called with a fully created task that its creator
    // holds until the call returns, so it is valid for this handler.
    let child = unsafe { Task::from_raw(task) };
    link::on_new_task(registry, child);
}

/// Called at the start of `release_task(task)`.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_on_release_task(task: *mut bindings::task_struct) {
    let (Some(registry), Some(task)) = (registry::get(), NonNull::new(task)) else {
        return;
    };
    // SAFETY: `release_task` is called on a task whose reference its caller holds until
    // the call returns (it drops it at the very end), so it is valid for this handler.
    let task = unsafe { Task::from_raw(task) };
    link::on_release_task(registry, task);
}
