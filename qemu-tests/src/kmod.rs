//! appshot.ko as a kernel module: load and unload it with the bare system calls (so tests
//! see the exact `errno`), its reference count, and the `max_entries` parameter.

use anyhow::{bail, Context, Result};

use crate::check::{sys, Errno, SysResult};
use crate::diag;

/// Where the guest keeps the module.
pub const MODULE_PATH: &str = "/lib/modules/appshot.ko";
/// The module's sysfs directory (present while it is loaded).
pub const SYSFS_DIR: &str = "/sys/module/appshot";
/// The writable entry limit.
pub const MAX_ENTRIES: &str = "/sys/module/appshot/parameters/max_entries";

/// Whether appshot.ko is loaded.
pub fn is_loaded() -> bool {
    std::path::Path::new(SYSFS_DIR).exists()
}

/// `finit_module` of [`MODULE_PATH`] (what `insmod` does).
pub fn insmod() -> SysResult<()> {
    // SAFETY: constant NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/lib/modules/appshot.ko".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is open; the parameter string is an empty NUL-terminated string.
    let ret = unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) };
    let err = Errno::last();
    // SAFETY: we own `fd`.
    unsafe { libc::close(fd) };
    if ret < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

/// `delete_module("appshot", O_NONBLOCK)` (what `rmmod` does).
pub fn rmmod() -> SysResult<()> {
    // SAFETY: constant NUL-terminated name.
    sys(unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            c"appshot".as_ptr(),
            libc::O_NONBLOCK,
        )
    })
    .map(|_| ())
}

/// Whether an unload refusal has the errno the kernel uses for "module in use":
/// `delete_module` answers `EWOULDBLOCK` (= `EAGAIN`) for a held reference; `EBUSY` is
/// what docs/abi.md names, so both count.
pub fn is_in_use_error(e: Errno) -> bool {
    e.0 == libc::EAGAIN || e.0 == libc::EBUSY
}

/// The module's reference count (`/sys/module/appshot/refcnt`).
pub fn refcnt() -> Result<u32> {
    let text = std::fs::read_to_string(format!("{SYSFS_DIR}/refcnt")).context("read refcnt")?;
    text.trim()
        .parse()
        .with_context(|| format!("parse refcnt {text:?}"))
}

/// The current `max_entries`.
pub fn max_entries() -> Result<u32> {
    let text =
        std::fs::read_to_string(MAX_ENTRIES).with_context(|| format!("read {MAX_ENTRIES}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("parse {MAX_ENTRIES}: {text:?}"))
}

/// Sets `max_entries`.
pub fn set_max_entries(value: u32) -> Result<()> {
    std::fs::write(MAX_ENTRIES, format!("{value}\n"))
        .with_context(|| format!("write {value} to {MAX_ENTRIES}"))
}

/// Sets `max_entries` for the life of the guard and restores the old value on drop
/// (also when the test fails; the harness restores it too if the test is killed).
pub struct MaxEntriesGuard {
    old: u32,
}

impl MaxEntriesGuard {
    /// Sets `max_entries` to `value`.
    pub fn set(value: u32) -> Result<MaxEntriesGuard> {
        let old = max_entries()?;
        set_max_entries(value)?;
        let now = max_entries()?;
        if now != value {
            let _ = set_max_entries(old);
            bail!("max_entries reads {now} after writing {value}");
        }
        Ok(MaxEntriesGuard { old })
    }
}

impl Drop for MaxEntriesGuard {
    fn drop(&mut self) {
        if let Err(e) = set_max_entries(self.old) {
            diag!("cleanup: restore max_entries={}: {e:#}", self.old);
        }
    }
}

/// Makes sure the module is loaded when dropped (a load/unload test may fail with the
/// module out).
pub struct LoadedGuard;

impl Drop for LoadedGuard {
    fn drop(&mut self) {
        if let Err(e) = ensure_loaded() {
            diag!("cleanup: {e:#}");
        }
    }
}

/// Loads the module if it is not loaded, and waits for its device node.
pub fn ensure_loaded() -> Result<()> {
    if !is_loaded() {
        insmod().with_context(|| format!("insmod {MODULE_PATH}"))?;
    }
    wait_for_device()
}

/// Waits (briefly) for `/dev/appshot` after a load: devtmpfs creates it as the misc
/// device registers.
pub fn wait_for_device() -> Result<()> {
    crate::check::eventually(crate::check::secs(10), "/dev/appshot appears", || {
        Ok(std::path::Path::new(crate::device::DEVICE).exists())
    })
}
