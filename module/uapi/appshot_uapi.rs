// SPDX-License-Identifier: GPL-2.0-only
//! The `/dev/appshot` ioctl ABI, defined once.
//!
//! This file is the single source of truth for everything that crosses the user/kernel
//! boundary: command numbers, request structures, flags and limits. It is compiled three
//! ways: into appshot.ko (as the module's `uapi` module), into appshotctl and the guest
//! tests (as the `appshot-uapi` crate), and, with the `c-header` feature, into the text of
//! `appshot.h` for C programs (`cargo xtask header` writes it; a host test fails when the
//! committed header and this file disagree).
//!
//! Conventions every request follows:
//! - Every command is `_IOWR(APPSHOT_IOC_MAGIC, nr, struct ...)`; an unknown command gets
//!   `ENOTTY`, a known number with another size `EINVAL`.
//! - The first field, `size`, is the size of the structure the caller passes; it must equal
//!   the size defined here (`EINVAL` otherwise). It is the version of the structure: a
//!   later ABI that grows a structure keeps accepting the old size.
//! - `flags` bits that are not defined here, and every `pad` and `reserved` field, must be
//!   zero (`EINVAL` otherwise). The module writes them back as zero.
//! - User pointers are `u64`, counts `u32`; all structures have explicit padding, so the
//!   layout is the same for every compiler.
//! - Names are 1 to 63 bytes of printable ASCII without spaces (0x21..=0x7e), NUL-terminated
//!   inside a 64-byte array whose remaining bytes are zero; anything else is `EINVAL`.
//! - Fields marked "Out" are ignored on input.

/// Generates, for each listed structure, the `#[repr(C)]` Rust type and (with the
/// `c-header` feature) the matching C declaration, so the two can never drift apart.
macro_rules! abi_structs {
    ($(
        $(#[doc = $doc:literal])*
        struct $name:ident => $cname:literal {
            $( $(#[doc = $fdoc:literal])* $field:ident : $ty:ty, )*
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct $name {
                $( $(#[doc = $fdoc])* pub $field: $ty, )*
            }

            impl $name {
                /// The structure with every field zero.
                pub const fn zeroed() -> Self {
                    // SAFETY: every field is an integer or an array of integers (or a
                    // structure made of those), for which the all-zero bit pattern is valid.
                    unsafe { core::mem::zeroed() }
                }
            }

            #[cfg(feature = "c-header")]
            impl crate::c_header::CField for $name {
                fn c_type() -> &'static str {
                    concat!("struct ", $cname)
                }
            }
        )*

        /// Appends the C declaration of every ABI structure to `out`.
        #[cfg(feature = "c-header")]
        pub(crate) fn write_c_structs(out: &mut std::string::String) {
            $(
                crate::c_header::write_struct(
                    out,
                    $cname,
                    &[$($doc),*],
                    core::mem::size_of::<$name>(),
                    &[$(crate::c_header::Field {
                        name: stringify!($field),
                        c_type: <$ty as crate::c_header::CField>::c_type(),
                        c_suffix: <$ty as crate::c_header::CField>::c_suffix(),
                        offset: core::mem::offset_of!($name, $field),
                        docs: &[$($fdoc),*],
                    }),*],
                );
            )*
        }

        /// Offsets and sizes of every field of every ABI structure, for layout tests.
        #[cfg(feature = "c-header")]
        pub fn layouts() -> std::vec::Vec<(&'static str, usize, std::vec::Vec<(&'static str, usize, usize)>)> {
            std::vec![$(
                ($cname, core::mem::size_of::<$name>(), std::vec![$(
                    (stringify!($field), core::mem::offset_of!($name, $field), core::mem::size_of::<$ty>())
                ),*]),
            )*]
        }
    };
}

/// Generates constants together with their C `#define` names.
macro_rules! abi_consts {
    ($( $(#[doc = $doc:literal])* pub const $name:ident : $ty:ty = $value:expr => $cname:literal; )*) => {
        $( $(#[doc = $doc])* pub const $name: $ty = $value; )*

        /// Appends one `#define` per constant to `out`.
        #[cfg(feature = "c-header")]
        pub(crate) fn write_c_consts(out: &mut std::string::String) {
            $( crate::c_header::write_define(out, $cname, &[$($doc),*], $name as u64); )*
        }
    };
}

/// Generates the command numbers together with their C `_IOWR` definitions.
macro_rules! abi_ioctls {
    ($( $(#[doc = $doc:literal])* pub const $name:ident = $nr:literal => $req:ident, $cname:literal; )*) => {
        $( $(#[doc = $doc])* pub const $name: u32 = iowr($nr, core::mem::size_of::<$req>()); )*

        /// Every command number with its name, for dispatch tables and tests.
        pub const IOCTLS: &[(&str, u32)] = &[$(($cname, $name)),*];

        /// Appends one `#define` per command to `out`.
        #[cfg(feature = "c-header")]
        pub(crate) fn write_c_ioctls(out: &mut std::string::String) {
            $( crate::c_header::write_ioctl(out, $cname, &[$($doc),*], $nr, <$req as crate::c_header::CField>::c_type()); )*
        }
    };
}

/// `_IOWR(APPSHOT_IOC_MAGIC, nr, size)` as the kernel encodes it on x86 and arm.
pub const fn iowr(nr: u32, size: usize) -> u32 {
    (3 << 30) | ((size as u32 & 0x3fff) << 16) | (IOC_MAGIC << 8) | (nr & 0xff)
}

/// The number field of a command.
pub const fn ioc_nr(cmd: u32) -> u32 {
    cmd & 0xff
}

/// The type (magic) field of a command.
pub const fn ioc_type(cmd: u32) -> u32 {
    (cmd >> 8) & 0xff
}

/// The size field of a command.
pub const fn ioc_size(cmd: u32) -> u32 {
    (cmd >> 16) & 0x3fff
}

/// The direction field of a command (3 = read and write).
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> 30
}

abi_consts! {
    /// Version of this ABI, reported by APPSHOT_IOC_VERSION.
    pub const ABI_VERSION: u32 = 1 => "APPSHOT_ABI_VERSION";
    /// The ioctl type byte of every appshot command (free in ioctl-number.rst).
    pub const IOC_MAGIC: u32 = 0xA6 => "APPSHOT_IOC_MAGIC";
    /// Size of a name field, including the terminating NUL.
    pub const NAME_LEN: usize = 64 => "APPSHOT_NAME_LEN";
    /// Longest accepted name, in bytes.
    pub const NAME_MAX: usize = 63 => "APPSHOT_NAME_MAX";

    /// Feature bit: per-AID PID tables track every linked process and thread.
    pub const FEATURE_PID_TABLE: u64 = 1 << 0 => "APPSHOT_FEATURE_PID_TABLE";
    /// Feature bit: REGISTER accepts a virtual PID range.
    pub const FEATURE_PID_RANGE: u64 = 1 << 1 => "APPSHOT_FEATURE_PID_RANGE";
    /// Feature bit: processes of an AID see virtual process, thread, group and session
    /// IDs in system calls and signals (docs/syscalls.md).
    pub const FEATURE_PID_VIRTUAL: u64 = 1 << 2 => "APPSHOT_FEATURE_PID_VIRTUAL";
    /// The module translates the SysV IPC IDs and keys of AID processes (semaphore sets,
    /// shared memory segments, message queues; docs/syscalls.md).
    pub const FEATURE_IPC_VIRTUAL: u64 = 1 << 3 => "APPSHOT_FEATURE_IPC_VIRTUAL";
    /// NEXT_ID: a restorer chooses the virtual ID of the next SysV object an AID binds.
    pub const FEATURE_NEXT_ID: u64 = 1 << 4 => "APPSHOT_FEATURE_NEXT_ID";
    /// RESERVE_PID, and `clone3`'s `set_tid` naming virtual PIDs inside an AID.
    pub const FEATURE_RESERVE_PID: u64 = 1 << 5 => "APPSHOT_FEATURE_RESERVE_PID";

    /// REGISTER flag: `pid_min`..=`pid_max` is the AID's virtual PID range.
    pub const REGISTER_PID_RANGE: u32 = 1 << 0 => "APPSHOT_REGISTER_PID_RANGE";
    /// UNREGISTER flag: unlink every process of the AID instead of failing with EBUSY.
    pub const UNREGISTER_FORCE: u32 = 1 << 0 => "APPSHOT_UNREGISTER_FORCE";
    /// UNREGISTER flag: remove the AID's SysV IPC objects (`IPC_RMID`, as the caller)
    /// instead of failing with ENOTEMPTY while it has any.
    pub const UNREGISTER_DESTROY_IPC: u32 = 1 << 1 => "APPSHOT_UNREGISTER_DESTROY_IPC";
    /// `appshot_aid_info.flags`: the AID has a virtual PID range.
    pub const AID_PID_RANGE: u32 = 1 << 0 => "APPSHOT_AID_PID_RANGE";

    /// `appshot_table_entry.owner_id` in the PID table: the entry of a process group or
    /// session ID whose leader has been reaped while other processes are still in it.
    pub const PID_OWNER_GROUP_ONLY: u32 = 0 => "APPSHOT_PID_OWNER_GROUP_ONLY";
    /// `appshot_table_entry.owner_id` in the PID table: a virtual PID reserved by
    /// RESERVE_PID (its `system_id` is 0): no task has it, no new task gets it but
    /// through `clone3`'s `set_tid`.
    pub const PID_OWNER_RESERVED: u32 = 0xffff_ffff => "APPSHOT_PID_OWNER_RESERVED";
    /// RESERVE_PID flag: drop the reservation instead of making it.
    pub const RESERVE_PID_RELEASE: u32 = 1 << 0 => "APPSHOT_RESERVE_PID_RELEASE";

    /// Table type: process and thread IDs.
    pub const TABLE_PID: u32 = 0 => "APPSHOT_TABLE_PID";
    /// Table type: SysV semaphore set IDs.
    pub const TABLE_SEM: u32 = 1 => "APPSHOT_TABLE_SEM";
    /// Table type: SysV shared memory segment IDs.
    pub const TABLE_SHM: u32 = 2 => "APPSHOT_TABLE_SHM";
    /// Table type: SysV message queue IDs.
    pub const TABLE_MSG: u32 = 3 => "APPSHOT_TABLE_MSG";
    /// Table type: SysV IPC keys.
    pub const TABLE_KEY: u32 = 4 => "APPSHOT_TABLE_KEY";
    /// Number of table types; `table_sizes` has one slot per type.
    pub const TABLE_COUNT: usize = 5 => "APPSHOT_TABLE_COUNT";
}

/// Every feature bit this version of the ABI defines.
pub const FEATURES: u64 =
    FEATURE_PID_TABLE | FEATURE_PID_RANGE | FEATURE_PID_VIRTUAL | FEATURE_IPC_VIRTUAL | FEATURE_NEXT_ID | FEATURE_RESERVE_PID;

/// Names of the table types, indexed by type number.
pub const TABLE_NAMES: [&str; TABLE_COUNT] = ["pid", "sem", "shm", "msg", "key"];

abi_structs! {
    /// APPSHOT_IOC_VERSION: what the loaded module speaks. Open to every user.
    struct VersionRequest => "appshot_version" {
        /// In: `sizeof(struct appshot_version)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// Out: APPSHOT_ABI_VERSION of the module.
        abi_version: u32,
        /// Out: longest accepted name (APPSHOT_NAME_MAX).
        name_max: u32,
        /// Out: APPSHOT_FEATURE_* bits the module supports.
        features: u64,
        /// Out: the per-AID table entry limit (module parameter `max_entries`).
        entry_limit: u32,
        /// Out: number of registered AIDs the caller may see (all for a privileged opener).
        nr_aids: u32,
        /// Zero.
        reserved: [u64; 4],
    }

    /// APPSHOT_IOC_REGISTER: create an AID. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
    struct RegisterRequest => "appshot_register" {
        /// In: `sizeof(struct appshot_register)`.
        size: u32,
        /// In: APPSHOT_REGISTER_* bits.
        flags: u32,
        /// In, with APPSHOT_REGISTER_PID_RANGE: first virtual PID (at least 1).
        pid_min: u32,
        /// In, with APPSHOT_REGISTER_PID_RANGE: last virtual PID (at least pid_min, below 2^22).
        pid_max: u32,
        /// Out: the new AID; never reused while the module is loaded.
        aid: u64,
        /// In: the name, NUL-terminated, unique among registered AIDs (EEXIST).
        name: [u8; 64],
        /// Zero.
        reserved: [u64; 4],
    }

    /// APPSHOT_IOC_LINK: attach a process (every thread of it, and everything it creates
    /// from then on) to an AID. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
    struct LinkRequest => "appshot_link" {
        /// In: `sizeof(struct appshot_link)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: the AID.
        aid: u64,
        /// In: the process, as seen by the caller; 0 for the caller itself.
        pid: i32,
        /// Zero.
        pad: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_UNLINK: detach a process (every thread of it) from its AID.
    /// Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
    struct UnlinkRequest => "appshot_unlink" {
        /// In: `sizeof(struct appshot_unlink)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: the process, as seen by the caller; 0 for the caller itself.
        pid: i32,
        /// Zero.
        pad: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_UNREGISTER: delete an AID. EBUSY while processes are linked, unless
    /// APPSHOT_UNREGISTER_FORCE. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
    struct UnregisterRequest => "appshot_unregister" {
        /// In: `sizeof(struct appshot_unregister)`.
        size: u32,
        /// In: APPSHOT_UNREGISTER_* bits.
        flags: u32,
        /// In: the AID.
        aid: u64,
        /// Zero.
        reserved: [u64; 2],
    }

    /// One registered AID, as LIST and INFO report it.
    struct AidInfo => "appshot_aid_info" {
        /// The AID.
        aid: u64,
        /// Its name, NUL-terminated.
        name: [u8; 64],
        /// APPSHOT_AID_* bits.
        flags: u32,
        /// Effective UID (initial user namespace) of the process that registered it.
        owner_uid: u32,
        /// First virtual PID of the range (0 without a range).
        pid_min: u32,
        /// Last virtual PID of the range (0 without a range).
        pid_max: u32,
        /// Linked processes (thread groups).
        nr_processes: u32,
        /// Linked threads, processes included.
        nr_threads: u32,
        /// Entries of each table, indexed by APPSHOT_TABLE_*.
        table_sizes: [u32; 5],
        /// Zero.
        pad: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_INFO: look one AID up by number or name. Open to every user.
    struct InfoRequest => "appshot_info" {
        /// In: `sizeof(struct appshot_info)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: the AID, or 0 to look up `name`.
        aid: u64,
        /// In, when `aid` is 0: the name.
        name: [u8; 64],
        /// Out: what the AID holds now.
        info: AidInfo,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_LIST: every registered AID, in AID order. Open to every user.
    struct ListRequest => "appshot_list" {
        /// In: `sizeof(struct appshot_list)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: user address of an array of `capacity` `struct appshot_aid_info` (may be 0
        /// when `capacity` is 0).
        entries: u64,
        /// In: number of elements the array holds.
        capacity: u32,
        /// Out: number of registered AIDs the caller may see (all for a privileged opener). when it exceeds `capacity`, only `capacity`
        /// were written: grow the array and ask again.
        count: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// One translation: a virtual ID and the system ID behind it.
    struct TableEntry => "appshot_table_entry" {
        /// The ID the application sees.
        virtual_id: u32,
        /// The ID the kernel uses.
        system_id: u32,
        /// PID table: the system thread-group ID the thread belongs to, or
        /// `PID_OWNER_GROUP_ONLY`; 0 elsewhere.
        owner_id: u32,
        /// Zero.
        flags: u32,
    }

    /// APPSHOT_IOC_TABLE: dump one table of one AID, in virtual ID order. Open to every user.
    struct TableRequest => "appshot_table" {
        /// In: `sizeof(struct appshot_table)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: the AID.
        aid: u64,
        /// In: APPSHOT_TABLE_*.
        table: u32,
        /// In: number of elements the `entries` array holds.
        capacity: u32,
        /// In: user address of an array of `capacity` `struct appshot_table_entry`.
        entries: u64,
        /// Out: number of entries in the table; when it exceeds `capacity`, only
        /// `capacity` were written.
        count: u32,
        /// Zero.
        pad: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_NEXT_ID: the virtual ID the next SysV object of one kind that the AID
    /// binds will get (the AID's counterpart of `/proc/sys/kernel/sem_next_id`, for
    /// restoring an application's IDs). The wish is used once, by the next new binding of
    /// that kind; a second request before it replaces it. Needs CAP_SYS_ADMIN or
    /// CAP_CHECKPOINT_RESTORE.
    struct NextIdRequest => "appshot_next_id" {
        /// In: `sizeof(struct appshot_next_id)`.
        size: u32,
        /// In: zero.
        flags: u32,
        /// In: the AID.
        aid: u64,
        /// In: APPSHOT_TABLE_SEM, APPSHOT_TABLE_SHM or APPSHOT_TABLE_MSG (else EINVAL).
        table: u32,
        /// In: the virtual ID, 0 to 2^31-1 (else EINVAL); EEXIST when the AID has bound
        /// it already.
        virtual_id: u32,
        /// Zero.
        reserved: [u64; 2],
    }

    /// APPSHOT_IOC_RESERVE_PID: keep a virtual PID of an AID for a restorer. A reserved
    /// PID is in the AID's PID table (owner APPSHOT_PID_OWNER_RESERVED) without a task:
    /// it translates nothing, no new task of the AID gets it, and a `clone3` with
    /// `set_tid` naming it from inside the AID takes it over. Needs CAP_SYS_ADMIN or
    /// CAP_CHECKPOINT_RESTORE.
    struct ReservePidRequest => "appshot_reserve_pid" {
        /// In: `sizeof(struct appshot_reserve_pid)`.
        size: u32,
        /// In: APPSHOT_RESERVE_PID_* bits.
        flags: u32,
        /// In: the AID.
        aid: u64,
        /// In: the virtual PID: 1 to 4194303, inside the AID's range if it has one
        /// (EINVAL); EEXIST when the AID uses it; with RELEASE, ENOENT unless reserved.
        virtual_id: u32,
        /// Zero.
        pad: u32,
        /// Zero.
        reserved: [u64; 2],
    }
}

abi_ioctls! {
    /// Query the ABI version, features and limits.
    pub const IOC_VERSION = 0 => VersionRequest, "APPSHOT_IOC_VERSION";
    /// Register an AID.
    pub const IOC_REGISTER = 1 => RegisterRequest, "APPSHOT_IOC_REGISTER";
    /// Link a process to an AID.
    pub const IOC_LINK = 2 => LinkRequest, "APPSHOT_IOC_LINK";
    /// Unlink a process from its AID.
    pub const IOC_UNLINK = 3 => UnlinkRequest, "APPSHOT_IOC_UNLINK";
    /// Unregister an AID.
    pub const IOC_UNREGISTER = 4 => UnregisterRequest, "APPSHOT_IOC_UNREGISTER";
    /// List the AIDs.
    pub const IOC_LIST = 5 => ListRequest, "APPSHOT_IOC_LIST";
    /// Look one AID up.
    pub const IOC_INFO = 6 => InfoRequest, "APPSHOT_IOC_INFO";
    /// Dump one table of an AID.
    pub const IOC_TABLE = 7 => TableRequest, "APPSHOT_IOC_TABLE";
    /// Choose the virtual ID of an AID's next SysV object.
    pub const IOC_NEXT_ID = 8 => NextIdRequest, "APPSHOT_IOC_NEXT_ID";
    /// Reserve (or release) a virtual PID of an AID.
    pub const IOC_RESERVE_PID = 9 => ReservePidRequest, "APPSHOT_IOC_RESERVE_PID";
}

/// Why a name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// No bytes before the NUL.
    Empty,
    /// No NUL within the 64 bytes, or more than 63 bytes.
    TooLong,
    /// A byte outside 0x21..=0x7e.
    NotPrintable,
    /// A non-zero byte after the terminating NUL.
    TrailingBytes,
}

/// Checks a name field and returns the name's bytes (without the NUL).
///
/// The same rule runs in the module and in appshotctl, so the tool can explain a refusal
/// before it asks.
pub fn parse_name(field: &[u8; NAME_LEN]) -> Result<&[u8], NameError> {
    let len = match field.iter().position(|&b| b == 0) {
        Some(len) => len,
        None => return Err(NameError::TooLong),
    };
    check_name(&field[..len])?;
    // Bytes after the NUL must be zero: two fields naming the same AID are then equal,
    // and the bytes stay free for a later ABI.
    if field[len..].iter().any(|&b| b != 0) {
        return Err(NameError::TrailingBytes);
    }
    Ok(&field[..len])
}

/// Checks name bytes (without a NUL) against the naming rule.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if !name.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(NameError::NotPrintable);
    }
    Ok(())
}

/// Builds a name field from name bytes, after checking them.
pub fn encode_name(name: &[u8]) -> Result<[u8; NAME_LEN], NameError> {
    check_name(name)?;
    let mut field = [0u8; NAME_LEN];
    field[..name.len()].copy_from_slice(name);
    Ok(field)
}

/// Highest virtual PID a range may reach (the kernel's PID_MAX_LIMIT on 64-bit).
pub const PID_RANGE_LIMIT: u32 = 1 << 22;

/// Checks a virtual PID range.
pub fn check_pid_range(min: u32, max: u32) -> bool {
    min >= 1 && min <= max && max < PID_RANGE_LIMIT
}
