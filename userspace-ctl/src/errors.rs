//! What went wrong, in words.
//!
//! The same errno means different things to different commands (ENOENT is "no such AID"
//! from INFO but "not linked" from UNLINK, and "appshot.ko is not loaded" from `open`), so
//! a [`DeviceError`] is explained together with the [`Operation`] that was attempted. The
//! result is an error whose context is *what failed* and whose cause is *why*, printed by
//! `main` as `appshotctl: <what failed>: <why>`. The errno meanings follow `docs/abi.md`.

use std::io;
use std::path::Path;

use anyhow::anyhow;
use appshot_uapi as uapi;
use rustix::io::Errno;

use crate::device::DeviceError;
use crate::values::{AidName, TableType};

/// Why a privileged command was refused.
pub const NEEDS_PRIVILEGE: &str =
    "permission denied (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)";

/// What appshotctl was doing when the device said no.
#[derive(Clone, Copy, Debug)]
pub enum Operation<'a> {
    /// Opening the device and checking its ABI version.
    Open(&'a Path),
    /// REGISTER of a name.
    Register(&'a AidName),
    /// INFO by name.
    Lookup(&'a AidName),
    /// LINK of a process (0: appshotctl itself, shown by its real PID) to a named AID.
    Link(&'a AidName, i32),
    /// UNLINK of a process.
    Unlink(i32),
    /// UNREGISTER of a named AID.
    Unregister(&'a AidName),
    /// LIST.
    List,
    /// INFO and TABLE of a named AID, for `show`.
    Show(&'a AidName, TableType),
}

impl Operation<'_> {
    /// The "what failed" half of the message.
    pub fn what(&self) -> String {
        match self {
            Self::Open(path) => format!("cannot use {}", path.display()),
            Self::Register(name) => format!("cannot register '{name}'"),
            Self::Lookup(name) => format!("cannot look up '{name}'"),
            Self::Link(name, pid) => format!("cannot link process {pid} to '{name}'"),
            Self::Unlink(pid) => format!("cannot unlink process {pid}"),
            Self::Unregister(name) => format!("cannot unregister '{name}'"),
            Self::List => "cannot list the AIDs".to_string(),
            Self::Show(name, table) => format!("cannot show the {table} table of '{name}'"),
        }
    }

    /// The AID name the operation is about, if any.
    fn name(&self) -> Option<&AidName> {
        match *self {
            Self::Register(name)
            | Self::Lookup(name)
            | Self::Link(name, _)
            | Self::Unregister(name)
            | Self::Show(name, _) => Some(name),
            Self::Open(_) | Self::Unlink(_) | Self::List => None,
        }
    }
}

/// Turns a device error into `<what failed>: <why>` for `operation`.
pub fn explain(operation: Operation<'_>, error: &DeviceError) -> anyhow::Error {
    anyhow!(why(operation, error)).context(operation.what())
}

/// The "why" half of the message.
pub fn why(operation: Operation<'_>, error: &DeviceError) -> String {
    match error {
        DeviceError::Open { path, errno } => why_open(path, *errno),
        DeviceError::Ioctl { errno, .. } => why_ioctl(operation, *errno),
        DeviceError::AbiMismatch { .. } => error.to_string(),
        DeviceError::Unsettled { .. } => format!("{error}; try again"),
        DeviceError::NoMemory { .. } => format!("out of memory ({error})"),
    }
}

fn why_open(path: &Path, errno: Errno) -> String {
    let path = path.display();
    match errno {
        Errno::NOENT => format!("appshot.ko is not loaded (no {path})"),
        Errno::NXIO | Errno::NODEV => format!("appshot.ko is not loaded ({path} has no driver)"),
        Errno::ACCESS => {
            format!("permission denied ({path} should be mode 0666, as appshot.ko creates it)")
        }
        _ => errno_text(errno),
    }
}

fn why_ioctl(operation: Operation<'_>, errno: Errno) -> String {
    use Operation::*;
    let no_such_aid = || match operation.name() {
        Some(name) => format!("no AID named '{name}'"),
        None => "no such AID".to_string(),
    };
    match (errno, operation) {
        (Errno::PERM, Link(_, pid)) => format!(
            "{NEEDS_PRIVILEGE}, or the caller may not trace process {pid} or one of its descendants (ptrace's attach rule: same uid, or CAP_SYS_PTRACE)"
        ),
        (Errno::PERM, _) => NEEDS_PRIVILEGE.to_string(),
        (Errno::NOTTY, _) => format!(
            "not appshot.ko, or an appshot.ko that speaks another ABI than v{} (ENOTTY)",
            uapi::ABI_VERSION
        ),
        (Errno::NOMEM, _) => "the kernel is out of memory (nothing was changed)".to_string(),
        (Errno::EXIST, Register(name)) => format!("an AID named '{name}' already exists"),
        (Errno::NOENT, Unlink(pid)) => format!("process {pid} is not linked to any AID"),
        (Errno::NOENT, Lookup(_) | Link(..) | Unregister(_) | Show(..)) => no_such_aid(),
        (Errno::SRCH, Link(_, pid) | Unlink(pid)) => format!("no process {pid}"),
        (Errno::BUSY, Unregister(_)) => "processes are still linked (use --force)".to_string(),
        (Errno::NOTEMPTY, Unregister(name)) => format!(
            "it still owns SysV IPC objects (see `appshotctl show {name} --type sem|shm|msg`; use --destroy-ipc to remove them)"
        ),
        (Errno::BUSY, Link(_, pid)) => {
            format!("process {pid}, or one of its descendants, is linked to another AID")
        }
        (Errno::BUSY, Unlink(pid)) => format!(
            "the parent of process {pid} is in the same AID (a process's children stay in its AID; unlink the parent)"
        ),
        (Errno::AGAIN, Link(_, pid)) => {
            format!("process {pid} kept creating threads or processes faster than they could be linked; nothing was linked (try again)")
        }
        (Errno::NOSPC, Link(..)) => "the AID's table is full (max_entries)".to_string(),
        (Errno::INVAL, Link(_, pid)) => format!(
            "process {pid}, or one of its descendants, is a kernel thread or in another PID namespace"
        ),
        (Errno::INVAL, Open(_)) => format!(
            "not appshot.ko, or an appshot.ko that speaks another ABI than v{} (EINVAL)",
            uapi::ABI_VERSION
        ),
        (Errno::INVAL, _) => format!(
            "appshot.ko refused the request as invalid (EINVAL); does it speak ABI v{}?",
            uapi::ABI_VERSION
        ),
        _ => errno_text(errno),
    }
}

/// `strerror` text with the errno's name, e.g. "Device or resource busy (EBUSY)".
pub fn errno_text(errno: Errno) -> String {
    let raw = errno.raw_os_error();
    let text = io::Error::from_raw_os_error(raw).to_string();
    let text = text
        .strip_suffix(&format!(" (os error {raw})"))
        .unwrap_or(&text);
    match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {raw})"),
    }
}

/// The symbolic name of the errnos the device, `open` and `exec` return.
fn errno_name(errno: Errno) -> Option<&'static str> {
    Some(match errno {
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::SRCH => "ESRCH",
        Errno::INTR => "EINTR",
        Errno::IO => "EIO",
        Errno::NXIO => "ENXIO",
        Errno::TOOBIG => "E2BIG",
        Errno::NOEXEC => "ENOEXEC",
        Errno::BADF => "EBADF",
        Errno::NOMEM => "ENOMEM",
        Errno::ACCESS => "EACCES",
        Errno::FAULT => "EFAULT",
        Errno::BUSY => "EBUSY",
        Errno::EXIST => "EEXIST",
        Errno::NODEV => "ENODEV",
        Errno::NOTDIR => "ENOTDIR",
        Errno::ISDIR => "EISDIR",
        Errno::INVAL => "EINVAL",
        Errno::NFILE => "ENFILE",
        Errno::MFILE => "EMFILE",
        Errno::NOTTY => "ENOTTY",
        Errno::TXTBSY => "ETXTBSY",
        Errno::NOSPC => "ENOSPC",
        Errno::ROFS => "EROFS",
        Errno::NAMETOOLONG => "ENAMETOOLONG",
        Errno::LOOP => "ELOOP",
        Errno::NOSYS => "ENOSYS",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn name(text: &str) -> AidName {
        AidName::parse(OsStr::new(text)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ioctl(command: u32, errno: Errno) -> DeviceError {
        DeviceError::Ioctl { command, errno }
    }

    /// The message `main` prints, without the `appshotctl: ` prefix.
    fn message(operation: Operation<'_>, error: DeviceError) -> String {
        format!("{:#}", explain(operation, &error))
    }

    #[test]
    fn open_errors() {
        let path = Path::new("/dev/appshot");
        let open = |errno| DeviceError::Open {
            path: path.into(),
            errno,
        };
        assert_eq!(
            message(Operation::Open(path), open(Errno::NOENT)),
            "cannot use /dev/appshot: appshot.ko is not loaded (no /dev/appshot)"
        );
        assert_eq!(
            message(Operation::Open(path), open(Errno::NXIO)),
            "cannot use /dev/appshot: appshot.ko is not loaded (/dev/appshot has no driver)"
        );
        assert_eq!(
            message(Operation::Open(path), open(Errno::ACCESS)),
            "cannot use /dev/appshot: permission denied (/dev/appshot should be mode 0666, as appshot.ko creates it)"
        );
        assert_eq!(
            message(Operation::Open(path), open(Errno::MFILE)),
            "cannot use /dev/appshot: Too many open files (EMFILE)"
        );
    }

    #[test]
    fn abi_errors() {
        let path = Path::new("/dev/null");
        assert_eq!(
            message(Operation::Open(path), ioctl(uapi::IOC_VERSION, Errno::NOTTY)),
            "cannot use /dev/null: not appshot.ko, or an appshot.ko that speaks another ABI than v1 (ENOTTY)"
        );
        assert_eq!(
            message(
                Operation::Open(path),
                DeviceError::AbiMismatch { module: 7 }
            ),
            "cannot use /dev/null: appshot.ko speaks ABI v7, appshotctl v1"
        );
    }

    #[test]
    fn errors_by_command() {
        let db = name("db");
        let cases: &[(Operation<'_>, u32, Errno, &str)] = &[
            (
                Operation::Register(&db),
                uapi::IOC_REGISTER,
                Errno::PERM,
                "cannot register 'db': permission denied (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)",
            ),
            (
                Operation::Register(&db),
                uapi::IOC_REGISTER,
                Errno::EXIST,
                "cannot register 'db': an AID named 'db' already exists",
            ),
            (
                Operation::Lookup(&db),
                uapi::IOC_INFO,
                Errno::NOENT,
                "cannot look up 'db': no AID named 'db'",
            ),
            (
                Operation::Link(&db, 42),
                uapi::IOC_LINK,
                Errno::SRCH,
                "cannot link process 42 to 'db': no process 42",
            ),
            (
                Operation::Link(&db, 42),
                uapi::IOC_LINK,
                Errno::BUSY,
                "cannot link process 42 to 'db': process 42, or one of its descendants, is linked to another AID",
            ),
            (
                Operation::Link(&db, 42),
                uapi::IOC_LINK,
                Errno::PERM,
                "cannot link process 42 to 'db': permission denied (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE), or the caller may not trace process 42 or one of its descendants (ptrace's attach rule: same uid, or CAP_SYS_PTRACE)",
            ),
            (
                Operation::Unlink(42),
                uapi::IOC_UNLINK,
                Errno::BUSY,
                "cannot unlink process 42: the parent of process 42 is in the same AID (a process's children stay in its AID; unlink the parent)",
            ),
            (
                Operation::Link(&db, 42),
                uapi::IOC_LINK,
                Errno::NOSPC,
                "cannot link process 42 to 'db': the AID's table is full (max_entries)",
            ),
            (
                Operation::Link(&db, 2),
                uapi::IOC_LINK,
                Errno::INVAL,
                "cannot link process 2 to 'db': process 2, or one of its descendants, is a kernel thread or in another PID namespace",
            ),
            (
                Operation::Link(&db, 42),
                uapi::IOC_LINK,
                Errno::NOENT,
                "cannot link process 42 to 'db': no AID named 'db'",
            ),
            (
                Operation::Unlink(42),
                uapi::IOC_UNLINK,
                Errno::NOENT,
                "cannot unlink process 42: process 42 is not linked to any AID",
            ),
            (
                Operation::Unlink(42),
                uapi::IOC_UNLINK,
                Errno::SRCH,
                "cannot unlink process 42: no process 42",
            ),
            (
                Operation::Unregister(&db),
                uapi::IOC_UNREGISTER,
                Errno::BUSY,
                "cannot unregister 'db': processes are still linked (use --force)",
            ),
            (
                Operation::Unregister(&db),
                uapi::IOC_UNREGISTER,
                Errno::NOENT,
                "cannot unregister 'db': no AID named 'db'",
            ),
            (
                Operation::Show(&db, TableType::KEY),
                uapi::IOC_TABLE,
                Errno::NOENT,
                "cannot show the key table of 'db': no AID named 'db'",
            ),
            (
                Operation::List,
                uapi::IOC_LIST,
                Errno::NOMEM,
                "cannot list the AIDs: the kernel is out of memory (nothing was changed)",
            ),
            (
                Operation::List,
                uapi::IOC_LIST,
                Errno::FAULT,
                "cannot list the AIDs: Bad address (EFAULT)",
            ),
            (
                Operation::List,
                uapi::IOC_LIST,
                Errno::INVAL,
                "cannot list the AIDs: appshot.ko refused the request as invalid (EINVAL); does it speak ABI v1?",
            ),
        ];
        for &(operation, command, errno, expected) in cases {
            assert_eq!(message(operation, ioctl(command, errno)), expected);
        }
    }

    #[test]
    fn errno_text_names_the_errno() {
        assert_eq!(errno_text(Errno::BUSY), "Device or resource busy (EBUSY)");
        assert_eq!(
            errno_text(Errno::from_raw_os_error(4095)),
            "Unknown error 4095 (errno 4095)"
        );
    }
}
