//! The bytes on disk: magic, record type numbers, and the fixed-layout headers and
//! descriptors as zerocopy structures.
//!
//! Every multi-byte field is little-endian and every structure here has alignment 1
//! (zerocopy's `little_endian` types), so a structure is read from any offset of the file
//! and its size is the sum of its fields: no compiler padding, the same layout in C.
//! `docs/image-format.md` describes each structure with its offsets; the unit tests at the
//! bottom hold the sizes to that document. Reserved fields are written as zero and a
//! version-1 reader refuses them non-zero.

use zerocopy::little_endian::{I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The first 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"APSHTIMG";

/// Size of the file header, and the `header_size` a version-1 image carries.
pub const FILE_HEADER_LEN: usize = 32;

/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 24;

/// Size of the whole end record (header plus [`EndDescriptor`]); the last bytes of a file.
pub const END_RECORD_LEN: usize = RECORD_HEADER_LEN + 4;

/// Record header flag: a reader that does not know the record's type skips it (with a
/// notice) instead of refusing the image.
pub const RECORD_OPTIONAL: u16 = 1 << 0;

/// `AppDescriptor::flags`: `pid_min..=pid_max` is the AID's virtual PID range.
pub const APP_HAS_PID_RANGE: u32 = 1 << 0;

/// Record type numbers.
pub mod record_type {
    /// The application: exactly one, the first record.
    pub const APP: u16 = 0x0001;
    /// One translation table (one per table kind at most).
    pub const TABLE: u16 = 0x0002;
    /// One SysV semaphore set.
    pub const SEM_SET: u16 = 0x0003;
    /// One SysV shared memory segment.
    pub const SHM_SEGMENT: u16 = 0x0004;
    /// One SysV message queue.
    pub const MSG_QUEUE: u16 = 0x0005;
    /// One process.
    pub const PROCESS: u16 = 0x0006;
    /// The trailer: the last record, holding the checksum.
    pub const END: u16 = 0xffff;
}

/// A short name for a record type, for messages: "sem set", or "type 0x1234" when unknown.
pub fn record_type_name(record_type: u16) -> String {
    let known = match record_type {
        record_type::APP => "app",
        record_type::TABLE => "table",
        record_type::SEM_SET => "sem set",
        record_type::SHM_SEGMENT => "shm segment",
        record_type::MSG_QUEUE => "msg queue",
        record_type::PROCESS => "process",
        record_type::END => "end",
        other => return format!("type {other:#06x}"),
    };
    known.to_owned()
}

/// The descriptor size version 1 defines for a known record type (a reader accepts a
/// longer descriptor and ignores the bytes past this size), or `None` for unknown types.
pub fn descriptor_len_v1(record_type: u16) -> Option<usize> {
    Some(match record_type {
        record_type::APP => size_of::<AppDescriptor>(),
        record_type::TABLE => size_of::<TableDescriptor>(),
        record_type::SEM_SET => size_of::<SemSetDescriptor>(),
        record_type::SHM_SEGMENT => size_of::<ShmDescriptor>(),
        record_type::MSG_QUEUE => size_of::<MsgQueueDescriptor>(),
        record_type::PROCESS => size_of::<ProcessDescriptor>(),
        record_type::END => size_of::<EndDescriptor>(),
        _ => return None,
    })
}

/// Implements the zerocopy traits every on-disk structure needs.
macro_rules! on_disk {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }
    };
}

on_disk! {
    /// The file header, at offset 0.
    pub struct FileHeader {
        /// [`MAGIC`].
        pub magic: [u8; 8],
        /// The format version (1).
        pub version: U32,
        /// The size of this header: 32.
        pub header_size: U32,
        /// Zero.
        pub flags: U32,
        /// Number of records after the header, the end record included.
        pub record_count: U32,
        /// Size of the whole file in bytes.
        pub file_size: U64,
    }
}

on_disk! {
    /// The fixed start of every record; the name, descriptor and data follow it.
    pub struct RecordHeader {
        /// A `record_type` number.
        pub record_type: U16,
        /// [`RECORD_OPTIONAL`]; the other bits are zero.
        pub flags: U16,
        /// Bytes of name after this header (at most 255).
        pub name_len: U16,
        /// Zero.
        pub reserved0: U16,
        /// Bytes of descriptor after the name.
        pub descriptor_len: U32,
        /// Zero.
        pub reserved1: U32,
        /// Bytes of data after the descriptor.
        pub data_len: U64,
    }
}

on_disk! {
    /// APP descriptor; the record's name is the application name, its data the kernel
    /// release string.
    pub struct AppDescriptor {
        /// [`APP_HAS_PID_RANGE`]; the other bits are zero.
        pub flags: U32,
        /// Lowest virtual PID of the range, or 0 without a range.
        pub pid_min: U32,
        /// Highest virtual PID of the range, or 0 without a range.
        pub pid_max: U32,
        /// Zero.
        pub reserved: U32,
        /// The AID the snapshot was taken from.
        pub source_aid: U64,
        /// Snapshot time, seconds since the Unix epoch.
        pub created_unix: U64,
    }
}

on_disk! {
    /// TABLE descriptor; the data is `entry_count` [`TableEntryDisk`]s.
    pub struct TableDescriptor {
        /// The table kind (0 pid, 1 sem, 2 shm, 3 msg, 4 key).
        pub kind: U32,
        /// Number of entries.
        pub entry_count: U32,
    }
}

on_disk! {
    /// One table entry.
    pub struct TableEntryDisk {
        /// The ID the application sees.
        pub virtual_id: U32,
        /// The ID the kernel used at snapshot time.
        pub system_id: U32,
        /// PID table: the system thread-group ID (0: group-only entry); 0 elsewhere.
        pub owner_id: U32,
    }
}

on_disk! {
    /// The `ipc_perm` part of the SysV object descriptors.
    pub struct IpcPermDisk {
        /// Virtual key; 0 is IPC_PRIVATE.
        pub key: I32,
        /// Owner user ID.
        pub uid: U32,
        /// Owner group ID.
        pub gid: U32,
        /// Creator user ID.
        pub cuid: U32,
        /// Creator group ID.
        pub cgid: U32,
        /// Mode: permission bits and object flags.
        pub mode: U32,
    }
}

on_disk! {
    /// SEM_SET descriptor; the data is `nsems` [`SemaphoreDisk`]s.
    pub struct SemSetDescriptor {
        /// Virtual set ID.
        pub virtual_id: I32,
        /// System set ID at snapshot time (informational).
        pub system_id: I32,
        /// Permissions and key.
        pub perm: IpcPermDisk,
        /// Time of the last semop.
        pub otime: I64,
        /// Time of the last change.
        pub ctime: I64,
        /// Number of semaphores.
        pub nsems: U32,
        /// Zero.
        pub reserved: U32,
    }
}

on_disk! {
    /// One semaphore of a set.
    pub struct SemaphoreDisk {
        /// Value, 0..=32767.
        pub value: U16,
        /// Zero.
        pub reserved: U16,
        /// Virtual PID of the last semop, 0 for none or outside the AID.
        pub last_pid: U32,
    }
}

on_disk! {
    /// SHM_SEGMENT descriptor; the data is the segment's `size` bytes.
    pub struct ShmDescriptor {
        /// Virtual segment ID.
        pub virtual_id: I32,
        /// System segment ID at snapshot time (informational).
        pub system_id: I32,
        /// Permissions and key.
        pub perm: IpcPermDisk,
        /// Segment size in bytes.
        pub size: U64,
        /// Time of the last attach.
        pub atime: I64,
        /// Time of the last detach.
        pub dtime: I64,
        /// Time of the last change.
        pub ctime: I64,
        /// Virtual PID of the creator.
        pub cpid: U32,
        /// Virtual PID of the last shmat/shmdt.
        pub lpid: U32,
        /// Number of attaches at snapshot time.
        pub nattch: U64,
    }
}

on_disk! {
    /// MSG_QUEUE descriptor; the data is `message_count` messages, each a
    /// [`MessageHeaderDisk`] and its bytes.
    pub struct MsgQueueDescriptor {
        /// Virtual queue ID.
        pub virtual_id: I32,
        /// System queue ID at snapshot time (informational).
        pub system_id: I32,
        /// Permissions and key.
        pub perm: IpcPermDisk,
        /// The queue's byte limit.
        pub qbytes: U64,
        /// Time of the last msgsnd.
        pub stime: I64,
        /// Time of the last msgrcv.
        pub rtime: I64,
        /// Time of the last change.
        pub ctime: I64,
        /// Virtual PID of the last msgsnd.
        pub lspid: U32,
        /// Virtual PID of the last msgrcv.
        pub lrpid: U32,
        /// Number of messages.
        pub message_count: U32,
        /// Zero.
        pub reserved: U32,
    }
}

on_disk! {
    /// The fixed part of one message in a MSG_QUEUE record's data.
    pub struct MessageHeaderDisk {
        /// Message type, > 0.
        pub mtype: I64,
        /// Bytes of message text that follow.
        pub size: U32,
        /// Zero.
        pub reserved: U32,
    }
}

on_disk! {
    /// PROCESS descriptor; the data is `thread_count` TIDs (u32 each), `exe_len` bytes of
    /// executable path, then `argc` arguments, each a u32 length and its bytes.
    pub struct ProcessDescriptor {
        /// Virtual PID.
        pub virtual_pid: U32,
        /// Virtual PID of the parent, 0 when it is outside the AID.
        pub virtual_ppid: U32,
        /// Virtual process group ID, 0 when outside.
        pub virtual_pgid: U32,
        /// Virtual session ID, 0 when outside.
        pub virtual_sid: U32,
        /// Number of threads (the main thread included).
        pub thread_count: U32,
        /// Bytes of executable path.
        pub exe_len: U32,
        /// Number of arguments.
        pub argc: U32,
        /// Zero.
        pub reserved: U32,
    }
}

on_disk! {
    /// END descriptor: the last 4 bytes of the file.
    pub struct EndDescriptor {
        /// CRC-32 (IEEE 802.3, as zlib's `crc32`) of every byte of the file before this
        /// field.
        pub crc32: U32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes `docs/image-format.md` gives.
    #[test]
    fn sizes_match_the_specification() {
        assert_eq!(size_of::<FileHeader>(), FILE_HEADER_LEN);
        assert_eq!(size_of::<RecordHeader>(), RECORD_HEADER_LEN);
        assert_eq!(size_of::<AppDescriptor>(), 32);
        assert_eq!(size_of::<TableDescriptor>(), 8);
        assert_eq!(size_of::<TableEntryDisk>(), 12);
        assert_eq!(size_of::<IpcPermDisk>(), 24);
        assert_eq!(size_of::<SemSetDescriptor>(), 56);
        assert_eq!(size_of::<SemaphoreDisk>(), 8);
        assert_eq!(size_of::<ShmDescriptor>(), 80);
        assert_eq!(size_of::<MsgQueueDescriptor>(), 80);
        assert_eq!(size_of::<MessageHeaderDisk>(), 16);
        assert_eq!(size_of::<ProcessDescriptor>(), 32);
        assert_eq!(size_of::<EndDescriptor>(), 4);
        assert_eq!(END_RECORD_LEN, 28);
    }
}
