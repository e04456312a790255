// SPDX-License-Identifier: GPL-2.0-only
//! `appshot-uapi`: the `/dev/appshot` ABI for userspace Rust (appshotctl, the guest tests)
//! and, with the `c-header` feature, the generator of `appshot.h`.
//!
//! The definitions live in `appshot_uapi.rs`, which appshot.ko compiles as well; this
//! crate root only wraps them.
#![no_std]

#[cfg(feature = "c-header")]
extern crate std;

#[path = "appshot_uapi.rs"]
mod abi;
pub use abi::*;

#[cfg(feature = "c-header")]
pub mod c_header;
