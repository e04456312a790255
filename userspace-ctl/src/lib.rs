//! `appshotctl`: the command-line tool for appshot.ko, as a library: `main.rs` is the
//! binary; the guest suite calls the restore path directly (thousands of mutated images
//! through the kernel without an exec each).
//!
//! It registers applications (AIDs), links processes to them, runs commands inside them,
//! shows their translation tables, and snapshots and restores them, through the
//! `/dev/appshot` ioctls of the `appshot-uapi` crate and the image format of the
//! `appshot-image` crate. The command line is `cli.rs`; checked argument values,
//! `values.rs`; the device and its ioctls, `device.rs`; errno meanings per command,
//! `errors.rs`; the commands, `commands.rs`; tables and JSON, `output.rs`. Snapshots:
//! `snapshot.rs` (capture), `quiesce.rs` (holding the application still), `sysv.rs`
//! (SysV objects by system ID), `restore.rs`, `launch.rs` (the restored root process),
//! `progress.rs`. Only `device.rs`, `sysv.rs`, `quiesce.rs` and `launch.rs` (`fork`,
//! `clone3`) have `unsafe` code.
//!
//! Exit status: 0 on success, 1 when a command fails (one line on stderr,
//! `appshotctl: <what failed>: <why>`), 2 for usage errors (clap's), and for `run` the
//! command's own status, or 126/127 when it cannot be executed. User input never
//! panics the tool.

#![deny(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod device;
pub mod errors;
pub mod launch;
pub mod output;
pub mod progress;
pub mod quiesce;
pub mod restore;
pub mod snapshot;
pub mod sysv;
pub mod values;

