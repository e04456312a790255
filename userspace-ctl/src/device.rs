//! `/dev/appshot`: opening it and its ten ioctls, each as a typed, safe method.
//!
//! This is the only file of appshotctl with `unsafe`. Every request is built from
//! `T::zeroed()` with `size = size_of::<T>()`, so flags, pads and reserved fields are zero
//! as the ABI demands, and the command number always carries the size of the structure it
//! is passed with (checked at compile time in [`Device::call`]). The structures and
//! numbers come from `appshot-uapi`; nothing of the ABI is restated here.
//!
//! Errors keep the errno and the command; turning them into words for the user is
//! `errors.rs`'s job, because the same errno means different things to different commands.

#![allow(unsafe_code)]

use std::mem::size_of;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use appshot_uapi::{
    self as uapi, AidInfo, InfoRequest, LinkRequest, ListRequest, NextIdRequest, RegisterRequest,
    ReservePidRequest, TableEntry, TableRequest, UnlinkRequest, UnregisterRequest, VersionRequest,
};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{ioctl, Opcode, Updater};
use thiserror::Error;

use crate::values::{AidName, PidRange, TableType};

/// Where appshot.ko's misc device appears.
pub const DEFAULT_PATH: &str = "/dev/appshot";

/// How often LIST or TABLE is retried when the set grows between the size query and the
/// copy. Each retry asks for more than was reported, so only a set that keeps growing
/// fast runs out of attempts.
const MAX_ATTEMPTS: usize = 8;

/// First guess of a LIST or TABLE buffer, in elements; enough for most systems.
const FIRST_CAPACITY: u32 = 64;

/// What went wrong talking to the device.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// `open(2)` failed.
    #[error("cannot open {}: {errno}", path.display())]
    Open { path: PathBuf, errno: Errno },
    /// An ioctl failed; `command` is its `APPSHOT_IOC_*` number.
    #[error("{} failed: {errno}", command_name(*command))]
    Ioctl { command: u32, errno: Errno },
    /// The module speaks another ABI version than appshotctl.
    #[error("appshot.ko speaks ABI v{module}, appshotctl v{}", uapi::ABI_VERSION)]
    AbiMismatch { module: u32 },
    /// LIST or TABLE kept reporting more elements than the buffer held.
    #[error("{} kept growing while it was read", command_name(*command))]
    Unsettled { command: u32 },
    /// No memory for the buffer the module asked for.
    #[error("no memory for {count} entries")]
    NoMemory { count: u32 },
}

impl DeviceError {
    /// The errno the kernel returned, if this is a failed system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Open { errno, .. } | Self::Ioctl { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The `APPSHOT_IOC_*` name of a command number, from the ABI's own list.
pub fn command_name(command: u32) -> &'static str {
    uapi::IOCTLS
        .iter()
        .find(|&&(_, number)| number == command)
        .map_or("an appshot ioctl", |&(name, _)| name)
}

/// An open `/dev/appshot`.
///
/// The descriptor is close-on-exec: `appshotctl run` execs its command with the device
/// closed.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Opens the device read-write (it is mode 0666; the module checks capabilities per
    /// command, against the opener's credentials).
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(
            |errno| DeviceError::Open {
                path: path.to_path_buf(),
                errno,
            },
        )?;
        Ok(Self { fd })
    }

    /// Issues one command.
    ///
    /// The command's size field is checked against `T` at compile time, so a request can
    /// never be passed with a number meant for another structure.
    ///
    /// # Safety
    /// `T` must be the request structure of command `CMD`, and every user address inside
    /// `request` must be valid, for the duration of the call, for the reads and writes the
    /// command makes through it (for LIST and TABLE: `capacity` elements at `entries`).
    // `Opcode` is `u32` with rustix's linux_raw backend but `c_ulong` with its libc one.
    #[allow(clippy::unnecessary_cast)]
    unsafe fn call<const CMD: Opcode, T>(&self, request: &mut T) -> Result<(), DeviceError> {
        const {
            assert!(uapi::ioc_size(CMD as u32) as usize == size_of::<T>());
        }
        // SAFETY: `request` is an exclusive borrow of a `T`, valid for reads and writes of
        // `size_of::<T>()` bytes, which is what the command's size field says the module
        // copies in and out (asserted above); the caller promises that `T` is the
        // command's structure and that the addresses inside it are valid.
        unsafe { ioctl(&self.fd, Updater::<CMD, T>::new(request)) }.map_err(|errno| {
            DeviceError::Ioctl {
                command: CMD as u32,
                errno,
            }
        })
    }

    /// APPSHOT_IOC_VERSION: what the module speaks.
    pub fn version(&self) -> Result<VersionRequest, DeviceError> {
        let mut request = VersionRequest::zeroed();
        request.size = size_of::<VersionRequest>() as u32;
        // SAFETY: VersionRequest is IOC_VERSION's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_VERSION as Opcode }, _>(&mut request)? };
        Ok(request)
    }

    /// Asks VERSION and refuses a module that speaks another ABI.
    pub fn check_abi(&self) -> Result<VersionRequest, DeviceError> {
        let version = self.version()?;
        if version.abi_version != uapi::ABI_VERSION {
            return Err(DeviceError::AbiMismatch {
                module: version.abi_version,
            });
        }
        Ok(version)
    }

    /// APPSHOT_IOC_REGISTER: creates an AID and returns its number.
    pub fn register(&self, name: &AidName, range: Option<PidRange>) -> Result<u64, DeviceError> {
        let mut request = RegisterRequest::zeroed();
        request.size = size_of::<RegisterRequest>() as u32;
        request.name = name.field();
        if let Some(range) = range {
            request.flags = uapi::REGISTER_PID_RANGE;
            request.pid_min = range.min;
            request.pid_max = range.max;
        }
        // SAFETY: RegisterRequest is IOC_REGISTER's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_REGISTER as Opcode }, _>(&mut request)? };
        Ok(request.aid)
    }

    /// APPSHOT_IOC_LINK: links process `pid` (0: the caller) to AID `aid`.
    pub fn link(&self, aid: u64, pid: i32) -> Result<(), DeviceError> {
        let mut request = LinkRequest::zeroed();
        request.size = size_of::<LinkRequest>() as u32;
        request.aid = aid;
        request.pid = pid;
        // SAFETY: LinkRequest is IOC_LINK's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_LINK as Opcode }, _>(&mut request) }
    }

    /// APPSHOT_IOC_UNLINK: unlinks process `pid` from its AID.
    pub fn unlink(&self, pid: i32) -> Result<(), DeviceError> {
        let mut request = UnlinkRequest::zeroed();
        request.size = size_of::<UnlinkRequest>() as u32;
        request.pid = pid;
        // SAFETY: UnlinkRequest is IOC_UNLINK's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_UNLINK as Opcode }, _>(&mut request) }
    }

    /// APPSHOT_IOC_UNREGISTER: deletes AID `aid`; `force` unlinks its processes first,
    /// `destroy_ipc` removes its SysV IPC objects first.
    pub fn unregister(&self, aid: u64, force: bool, destroy_ipc: bool) -> Result<(), DeviceError> {
        let mut request = UnregisterRequest::zeroed();
        request.size = size_of::<UnregisterRequest>() as u32;
        request.aid = aid;
        if force {
            request.flags |= uapi::UNREGISTER_FORCE;
        }
        if destroy_ipc {
            request.flags |= uapi::UNREGISTER_DESTROY_IPC;
        }
        // SAFETY: UnregisterRequest is IOC_UNREGISTER's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_UNREGISTER as Opcode }, _>(&mut request) }
    }

    /// APPSHOT_IOC_NEXT_ID: the next SysV object of `table`'s kind that AID `aid` binds
    /// gets virtual ID `virtual_id`.
    pub fn next_id(&self, aid: u64, table: TableType, virtual_id: u32) -> Result<(), DeviceError> {
        let mut request = NextIdRequest::zeroed();
        request.size = size_of::<NextIdRequest>() as u32;
        request.aid = aid;
        request.table = table.number();
        request.virtual_id = virtual_id;
        // SAFETY: NextIdRequest is IOC_NEXT_ID's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_NEXT_ID as Opcode }, _>(&mut request) }
    }

    /// APPSHOT_IOC_RESERVE_PID: reserves virtual PID `virtual_id` of AID `aid` (or, with
    /// `release`, drops its reservation).
    pub fn reserve_pid(&self, aid: u64, virtual_id: u32, release: bool) -> Result<(), DeviceError> {
        let mut request = ReservePidRequest::zeroed();
        request.size = size_of::<ReservePidRequest>() as u32;
        request.aid = aid;
        request.virtual_id = virtual_id;
        if release {
            request.flags = uapi::RESERVE_PID_RELEASE;
        }
        // SAFETY: ReservePidRequest is IOC_RESERVE_PID's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_RESERVE_PID as Opcode }, _>(&mut request) }
    }

    /// APPSHOT_IOC_INFO by name.
    pub fn info(&self, name: &AidName) -> Result<AidInfo, DeviceError> {
        let mut request = InfoRequest::zeroed();
        request.size = size_of::<InfoRequest>() as u32;
        request.name = name.field();
        // SAFETY: InfoRequest is IOC_INFO's structure and holds no user address.
        unsafe { self.call::<{ uapi::IOC_INFO as Opcode }, _>(&mut request)? };
        Ok(request.info)
    }

    /// APPSHOT_IOC_LIST: every registered AID, in AID order.
    pub fn list(&self) -> Result<Vec<AidInfo>, DeviceError> {
        read_growing(uapi::IOC_LIST, AidInfo::zeroed(), |entries, capacity| {
            let mut request = ListRequest::zeroed();
            request.size = size_of::<ListRequest>() as u32;
            request.entries = user_address(entries);
            request.capacity = capacity;
            // SAFETY: ListRequest is IOC_LIST's structure; `entries` points to `capacity`
            // initialized elements of `appshot_aid_info` (see `read_growing`), exclusively
            // borrowed until the call returns, and the module writes at most `capacity`.
            unsafe { self.call::<{ uapi::IOC_LIST as Opcode }, _>(&mut request)? };
            Ok(request.count)
        })
    }

    /// APPSHOT_IOC_TABLE: one table of AID `aid`, in virtual ID order.
    pub fn table(&self, aid: u64, table: TableType) -> Result<Vec<TableEntry>, DeviceError> {
        read_growing(
            uapi::IOC_TABLE,
            TableEntry::zeroed(),
            |entries, capacity| {
                let mut request = TableRequest::zeroed();
                request.size = size_of::<TableRequest>() as u32;
                request.aid = aid;
                request.table = table.number();
                request.entries = user_address(entries);
                request.capacity = capacity;
                // SAFETY: TableRequest is IOC_TABLE's structure; `entries` points to
                // `capacity` initialized elements of `appshot_table_entry` (see
                // `read_growing`), exclusively borrowed until the call returns, and the module
                // writes at most `capacity`.
                unsafe { self.call::<{ uapi::IOC_TABLE as Opcode }, _>(&mut request)? };
                Ok(request.count)
            },
        )
    }
}

/// The address of a buffer as the ABI's `u64`, or 0 for an empty one (the ABI allows 0
/// when the capacity is 0; an empty `Vec`'s pointer is dangling).
fn user_address<T>(entries: &mut [T]) -> u64 {
    if entries.is_empty() {
        0
    } else {
        entries.as_mut_ptr() as u64
    }
}

/// The LIST/TABLE protocol: ask with a buffer, and when the reported `count` exceeds the
/// buffer, grow it to the count (with some room for growth meanwhile) and ask again.
///
/// `ask(entries, capacity)` issues the command with `entries.len() == capacity` and
/// returns the count the module reported.
fn read_growing<T: Copy>(
    command: u32,
    zero: T,
    mut ask: impl FnMut(&mut [T], u32) -> Result<u32, DeviceError>,
) -> Result<Vec<T>, DeviceError> {
    let mut capacity = FIRST_CAPACITY;
    for _ in 0..MAX_ATTEMPTS {
        let mut entries = Vec::new();
        entries
            .try_reserve_exact(capacity as usize)
            .map_err(|_| DeviceError::NoMemory { count: capacity })?;
        entries.resize(capacity as usize, zero);
        let count = ask(&mut entries, capacity)?;
        if count <= capacity {
            entries.truncate(count as usize);
            return Ok(entries);
        }
        capacity = count.saturating_add(count / 8).saturating_add(1);
    }
    Err(DeviceError::Unsettled { command })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_come_from_the_abi() {
        assert_eq!(command_name(uapi::IOC_VERSION), "APPSHOT_IOC_VERSION");
        assert_eq!(command_name(uapi::IOC_TABLE), "APPSHOT_IOC_TABLE");
        assert_eq!(command_name(0), "an appshot ioctl");
    }

    #[test]
    fn growing_reads_retry_until_the_buffer_fits() {
        // A set of 200 that grows by 100 after the first answer.
        let mut calls = Vec::new();
        let result = read_growing(uapi::IOC_LIST, 0u32, |entries, capacity| {
            assert_eq!(entries.len(), capacity as usize);
            calls.push(capacity);
            let count = if calls.len() == 1 { 200 } else { 300 };
            for (i, slot) in entries.iter_mut().take(count).enumerate() {
                *slot = i as u32;
            }
            Ok(count as u32)
        });
        let entries = result.unwrap_or_default();
        assert_eq!(entries.len(), 300);
        assert_eq!(entries.last(), Some(&299));
        assert_eq!(calls, [64, 226, 338]);
    }

    #[test]
    fn growing_reads_give_up_on_a_set_that_never_fits() {
        let result = read_growing(uapi::IOC_TABLE, 0u8, |_, capacity| Ok(capacity + 1000));
        assert!(
            matches!(result, Err(DeviceError::Unsettled { command }) if command == uapi::IOC_TABLE)
        );
    }

    #[test]
    fn growing_reads_pass_errors_through() {
        let result = read_growing(uapi::IOC_TABLE, 0u8, |_, _| {
            Err(DeviceError::Ioctl {
                command: uapi::IOC_TABLE,
                errno: Errno::NOENT,
            })
        });
        assert_eq!(result.err().and_then(|e| e.errno()), Some(Errno::NOENT));
    }

    #[test]
    fn user_address_of_an_empty_buffer_is_null() {
        assert_eq!(user_address::<u32>(&mut []), 0);
        assert_ne!(user_address(&mut [0u32]), 0);
    }
}
