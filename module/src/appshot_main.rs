// SPDX-License-Identifier: GPL-2.0-only
//! appshot.ko: resource-ID virtualization for Linux applications.
//!
//! An application (a process tree) is registered under an application ID (AID) and from
//! then on is meant to see only virtual resource IDs: process and thread IDs and SysV IPC
//! IDs. This crate holds all of the module's logic; `glue/` holds the thin C the 6.12
//! kernel needs for what has no Rust abstraction yet.
//!
//! Folders, by concept:
//! - `uapi` (`../uapi/appshot_uapi.rs`): the ioctl ABI, shared with userspace.
//! - `device.rs`: `/dev/appshot` ioctl decoding.
//! - `aid/`: one application and its per-type state (`mod.rs`), and the registry of
//!   AIDs with the locking overview (`registry.rs`).
//! - `table.rs`: the dual red-black-tree translation table every resource type uses.
//! - `pid/`: process IDs: the PID table and virtual PID choice (`mod.rs`), linking and
//!   unlinking tasks (`link.rs`), and which AID a task is in (`task_index.rs`, the
//!   hot-path lookup).
//! - `syscalls/`: the table of hooked system calls and the PID translations (`mod.rs`),
//!   and the calls that carry a PID inside a structure, a clock ID or a file owner
//!   (`interfaces.rs`).
//! - `hooks/`: what every hook call means and where it goes (`mod.rs`), `si_pid` of
//!   signals (`signals.rs`), and how hooks are attached (`attach.rs`, a leaf that knows
//!   nothing of AIDs).
//! - `linux/`: the Rust face of the C glue (`glue.rs`) and of tasks (`task.rs`).

use kernel::prelude::*;

mod aid;
mod device;
mod hooks;
mod ipc;
mod linux;
mod pid;
mod syscalls;
mod table;
#[path = "../uapi/appshot_uapi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;

use aid::registry::{self, Registry};

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
        let err = unsafe { linux::glue::appshot_glue_misc_register() };
        if err != 0 {
            hooks::attach::shutdown();
            registry::unpublish();
            return Err(Error::from_errno(err));
        }
        pr_info!(
            "loaded: /dev/appshot, ABI {}, max_entries {}\n",
            uapi::ABI_VERSION,
            linux::glue::max_entries()
        );
        Ok(Appshot { registry })
    }
}

impl Drop for Appshot {
    fn drop(&mut self) {
        // No ioctl can be running: an open /dev/appshot holds a module reference, and so
        // does every AID, so no process is linked either.
        // SAFETY: registered in `init`.
        unsafe { linux::glue::appshot_glue_misc_deregister() };
        // Returns once no hook handler runs or can start.
        hooks::attach::shutdown();
        registry::unpublish();
        pr_info!("unloaded ({} tasks were still linked)\n", self.registry.tasks.linked());
    }
}
