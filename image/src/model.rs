//! The in-memory image: one application and everything a restore needs from it.
//!
//! These types mirror what appshotctl collects at snapshot time and what it recreates at
//! restore time. They say nothing about the file layout (that is `layout.rs`); their
//! rules (ranges, uniqueness, sizes) are checked by [`Image::validate`], which both the
//! writer and the reader apply. Virtual IDs are what the application sees; system IDs are
//! the ones the snapshotted kernel used, kept for information only (a restore gets new
//! ones).
//!
//! Every type derives `serde::Serialize` for `appshotctl inspect --json`; byte buffers
//! serialize as summaries or lossy strings (see `json.rs`), never as whole byte arrays.

use serde::Serialize;

use crate::json;

/// A snapshot of one application.
///
/// # Invariants
/// A value returned by [`crate::read_image`] passes [`Image::validate`]; [`crate::write_image`]
/// refuses one that does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// The application itself.
    pub app: AppRecord,
    /// The translation tables, at most one per [`TableKind`].
    pub tables: Vec<TableRecord>,
    /// The SysV semaphore sets.
    pub sems: Vec<SemSet>,
    /// The SysV shared memory segments.
    pub shms: Vec<ShmSegment>,
    /// The SysV message queues.
    pub msgs: Vec<MsgQueue>,
    /// The processes.
    pub processes: Vec<ProcessRecord>,
    /// Filled by the reader: one line per optional record of unknown type it skipped.
    /// Never written to a file; a writer ignores it.
    pub notices: Vec<String>,
}

/// The application: its name and registration parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppRecord {
    /// The AID's name: 1 to 63 bytes of printable ASCII without spaces (0x21..=0x7e).
    pub name: String,
    /// The virtual PID range `(min, max)`, `1 <= min <= max < 1 << 22`, or `None`.
    #[serde(serialize_with = "json::pid_range")]
    pub pid_range: Option<(u32, u32)>,
    /// The AID the snapshot was taken from (informational).
    pub source_aid: u64,
    /// Snapshot time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// `uname -r` of the snapshotted kernel, at most 64 bytes, no NUL.
    pub kernel_release: String,
}

/// The kinds of translation table an AID keeps (the module's `APPSHOT_TABLE_*` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum TableKind {
    /// Process and thread IDs.
    Pid = 0,
    /// SysV semaphore set IDs.
    Sem = 1,
    /// SysV shared memory segment IDs.
    Shm = 2,
    /// SysV message queue IDs.
    Msg = 3,
    /// SysV IPC keys.
    Key = 4,
}

impl TableKind {
    /// Every kind, in number order.
    pub const ALL: [TableKind; 5] = [
        TableKind::Pid,
        TableKind::Sem,
        TableKind::Shm,
        TableKind::Msg,
        TableKind::Key,
    ];

    /// The kind with this number, if any.
    pub fn from_u32(number: u32) -> Option<TableKind> {
        TableKind::ALL.get(usize::try_from(number).ok()?).copied()
    }

    /// The lowercase name used in labels and messages: "pid", "sem", ...
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Pid => "pid",
            TableKind::Sem => "sem",
            TableKind::Shm => "shm",
            TableKind::Msg => "msg",
            TableKind::Key => "key",
        }
    }
}

/// One translation table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRecord {
    /// Which table.
    pub kind: TableKind,
    /// Its entries, unique by virtual ID.
    pub entries: Vec<TableEntry>,
}

/// One translation: the ID the application sees and the one the kernel used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableEntry {
    /// The virtual ID (a key's bit pattern in the key table).
    pub virtual_id: u32,
    /// The system ID at snapshot time.
    pub system_id: u32,
    /// PID table: the system thread-group ID of the thread (0 for a group-only entry);
    /// 0 in the other tables.
    pub owner_id: u32,
}

/// The `ipc_perm` of a SysV object, with its key virtual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IpcPerm {
    /// The virtual key; 0 is IPC_PRIVATE.
    pub key: i32,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// Creator user ID.
    pub cuid: u32,
    /// Creator group ID.
    pub cgid: u32,
    /// The low 9 bits are the permissions; object flags (`SHM_LOCKED`, `SHM_DEST`...)
    /// may be set above them.
    pub mode: u32,
}

/// A SysV semaphore set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SemSet {
    /// Virtual set ID, 0..=i32::MAX.
    pub virtual_id: i32,
    /// System set ID at snapshot time (informational).
    pub system_id: i32,
    /// Permissions and key.
    pub perm: IpcPerm,
    /// Time of the last semop (seconds since the epoch).
    pub otime: i64,
    /// Time of the last change.
    pub ctime: i64,
    /// The semaphores, 1 to 32000.
    pub sems: Vec<Semaphore>,
}

/// One semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Semaphore {
    /// Value, 0..=32767 (`SEMVMX`).
    pub value: u16,
    /// Virtual PID of the last semop; 0 for none or a process outside the AID.
    pub last_pid: u32,
}

/// A SysV shared memory segment, with its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShmSegment {
    /// Virtual segment ID, 0..=i32::MAX.
    pub virtual_id: i32,
    /// System segment ID at snapshot time (informational).
    pub system_id: i32,
    /// Permissions and key.
    pub perm: IpcPerm,
    /// Size in bytes, 1..=1 TiB.
    pub size: u64,
    /// Time of the last attach.
    pub atime: i64,
    /// Time of the last detach.
    pub dtime: i64,
    /// Time of the last change.
    pub ctime: i64,
    /// Virtual PID of the creator (0: outside).
    pub cpid: u32,
    /// Virtual PID of the last shmat/shmdt (0: outside).
    pub lpid: u32,
    /// Number of attaches at snapshot time.
    pub nattch: u64,
    /// The contents: exactly `size` bytes.
    #[serde(serialize_with = "json::byte_summary")]
    pub data: Vec<u8>,
}

/// A SysV message queue, with its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MsgQueue {
    /// Virtual queue ID, 0..=i32::MAX.
    pub virtual_id: i32,
    /// System queue ID at snapshot time (informational).
    pub system_id: i32,
    /// Permissions and key.
    pub perm: IpcPerm,
    /// The queue's byte limit (`msg_qbytes`).
    pub qbytes: u64,
    /// Time of the last msgsnd.
    pub stime: i64,
    /// Time of the last msgrcv.
    pub rtime: i64,
    /// Time of the last change.
    pub ctime: i64,
    /// Virtual PID of the last msgsnd (0: outside).
    pub lspid: u32,
    /// Virtual PID of the last msgrcv (0: outside).
    pub lrpid: u32,
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Message type, > 0.
    pub mtype: i64,
    /// Message text, at most 1 MiB; may be empty.
    #[serde(serialize_with = "json::byte_summary")]
    pub data: Vec<u8>,
}

/// One process of the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessRecord {
    /// Virtual PID, 1..=PID_MAX.
    pub virtual_pid: u32,
    /// Virtual PID of the parent; 0 when the parent is outside the AID.
    pub virtual_ppid: u32,
    /// Virtual process group ID; 0 when the group is outside the AID.
    pub virtual_pgid: u32,
    /// Virtual session ID; 0 when the session is outside the AID.
    pub virtual_sid: u32,
    /// Virtual TIDs, the main thread (`virtual_pid`) included.
    pub threads: Vec<u32>,
    /// Executable path bytes; may be empty.
    #[serde(serialize_with = "json::lossy_string")]
    pub exe: Vec<u8>,
    /// The arguments, as raw bytes.
    #[serde(serialize_with = "json::lossy_strings")]
    pub cmdline: Vec<Vec<u8>>,
}
