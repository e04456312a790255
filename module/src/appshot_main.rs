// SPDX-License-Identifier: GPL-2.0-only
//! appshot.ko: resource-ID virtualization for Linux applications.
//!
//! An application (a process tree) is registered under an application ID (AID) and from
//! then on is meant to see only virtual resource IDs: process and thread IDs and SysV IPC
//! IDs. This crate holds all of the module's logic; `glue/` holds the thin C the 6.12
//! kernel needs for what has no Rust abstraction yet.
//!
//! Files, by concept:
//! - `uapi` (`../uapi/appshot_uapi.rs`): the ioctl ABI, shared with userspace.
//! - `device`: `/dev/appshot` ioctl decoding.
//! - `registry`: the set of AIDs and the global state; the locking overview.
//! - `aid`: one application and its tables.
//! - `table`: the dual red-black-tree translation table.
//! - `task_index`: which AID a task belongs to (the hot-path lookup).
//! - `link`: linking and unlinking processes and threads.
//! - `pid`: virtual PID allocation and translation.
//! - `hooks`: what the kernel hooks call, and when they are attached.
//! - `syscalls`: the hooked system calls and their translations.
//! - `interfaces`: the calls that carry a PID inside a structure, a clock ID or a file
//!   owner.
//! - `signals`: `si_pid` of received signals.
//! - `process`: task references and task fields.
//! - `glue`: the C glue's prototypes.

use kernel::prelude::*;

mod aid;
mod device;
mod glue;
mod hooks;
mod interfaces;
mod link;
mod pid;
mod process;
mod registry;
mod signals;
mod syscalls;
mod table;
mod task_index;
#[path = "../uapi/appshot_uapi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

use registry::Registry;

module! {
    type: Appshot,
    name: "appshot",
    author: "appshot developers",
    description: "Resource-ID virtualization and snapshot/restore for applications",
    license: "GPL",
}

/// The loaded module.
struct Appshot {
    registry: Pin<KBox<Registry>>,
}

impl kernel::Module for Appshot {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let registry = KBox::pin_init(Registry::new()?, GFP_KERNEL)?;
        registry::publish(registry.as_ref());

        // Filters only: the hooks are attached when the first AID is registered.
        if let Err(e) = hooks::init() {
            registry::unpublish();
            return Err(e);
        }
        // SAFETY: the device's ioctls use the published registry.
        let err = unsafe { glue::appshot_glue_misc_register() };
        if err != 0 {
            hooks::shutdown();
            registry::unpublish();
            return Err(Error::from_errno(err));
        }
        pr_info!(
            "loaded: /dev/appshot, ABI {}, max_entries {}\n",
            uapi::ABI_VERSION,
            glue::max_entries()
        );
        Ok(Appshot { registry })
    }
}

impl Drop for Appshot {
    fn drop(&mut self) {
        // No ioctl can be running: an open /dev/appshot holds a module reference, and so
        // does every AID, so no process is linked either.
        // SAFETY: registered in `init`.
        unsafe { glue::appshot_glue_misc_deregister() };
        // Returns once no hook handler runs or can start.
        hooks::shutdown();
        registry::unpublish();
        pr_info!("unloaded ({} tasks were still linked)\n", self.registry.tasks.linked());
    }
}
