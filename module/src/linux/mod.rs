// SPDX-License-Identifier: GPL-2.0-only
//! The Rust face of the kernel where Linux 6.12 gives Rust no abstraction: the C glue's
//! prototypes and the safe wrappers around them ([`glue`]), and tasks as appshot sees
//! them ([`task`]). Everything else reaches the kernel through these two.

pub(crate) mod glue;
pub(crate) mod task;
