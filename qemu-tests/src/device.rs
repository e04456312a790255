//! Raw access to `/dev/appshot`: one method per command, each returning the `errno` the
//! module answered with, plus the [`AidGuard`] every test uses to clean up what it
//! registered, and unique names.
//!
//! The structures and command numbers come from the `appshot-uapi` crate and are never
//! redefined here; malformed requests are built from them (see `tests/malformed.rs`).

use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use appshot_uapi as uapi;
use uapi::{
    AidInfo, InfoRequest, LinkRequest, ListRequest, NextIdRequest, ReservePidRequest, RegisterRequest, TableEntry,
    TableRequest, UnlinkRequest, UnregisterRequest, VersionRequest,
};

use crate::check::{Errno, SysResult};
use crate::diag;

/// The device node the module creates.
pub const DEVICE: &str = "/dev/appshot";

/// `size_of::<T>()` as the `u32` a request's `size` field holds.
pub fn size_of<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// An open `/dev/appshot`.
pub struct Device {
    fd: OwnedFd,
}

impl Device {
    /// Opens the device read-write (what appshotctl does).
    pub fn open() -> Result<Device> {
        Device::open_raw().with_context(|| format!("open {DEVICE}"))
    }

    /// Opens the device, returning the bare `errno` on failure.
    pub fn open_raw() -> SysResult<Device> {
        // SAFETY: the path is a NUL-terminated constant; open has no other preconditions.
        let fd = unsafe { libc::open(c"/dev/appshot".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        Ok(Device {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor number.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `ioctl(fd, cmd, addr)` with an arbitrary address: NULL, unmapped, a buffer of another
    /// size. The kernel validates the address; whatever it writes must be memory the
    /// caller set aside for it.
    ///
    /// # Safety
    /// `addr` must be 0, an address outside this process's mappings, or point to memory
    /// the kernel may overwrite with up to `ioc_size(cmd)` bytes (and, for LIST/TABLE,
    /// to a request whose `entries` may be overwritten likewise).
    pub unsafe fn ioctl_addr(&self, cmd: u32, addr: usize) -> SysResult<()> {
        // SAFETY: the caller vouches for the memory at `addr` (see above).
        let ret = unsafe { libc::ioctl(self.fd(), cmd as libc::c_ulong, addr as *mut c_void) };
        if ret < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    /// `ioctl(fd, cmd, req)` on a request structure the kernel may overwrite.
    ///
    /// LIST and TABLE requests carry a user pointer (`entries`) the kernel writes to; the
    /// typed [`Device::list`] / [`Device::table`] set it. Tests that pass a foreign pointer
    /// there use [`Device::ioctl_addr`].
    pub fn ioctl<T: Copy>(&self, cmd: u32, req: &mut T) -> SysResult<()> {
        // SAFETY: `req` is exclusively borrowed and the kernel writes at most the size
        // encoded in `cmd`, which for every command is the structure's own size; callers
        // pass LIST/TABLE requests with `capacity` 0 or a valid array (typed methods).
        unsafe { self.ioctl_addr(cmd, req as *mut T as usize) }
    }

    /// APPSHOT_IOC_VERSION.
    pub fn version(&self) -> SysResult<VersionRequest> {
        let mut req = VersionRequest::zeroed();
        req.size = size_of::<VersionRequest>();
        self.ioctl(uapi::IOC_VERSION, &mut req)?;
        Ok(req)
    }

    /// Number of registered AIDs (VERSION's `nr_aids`).
    pub fn nr_aids(&self) -> SysResult<u32> {
        Ok(self.version()?.nr_aids)
    }

    /// A REGISTER request for `name` (raw bytes, no check, at most 64 copied).
    pub fn register_request(name: &[u8]) -> RegisterRequest {
        let mut req = RegisterRequest::zeroed();
        req.size = size_of::<RegisterRequest>();
        req.name = name_field(name);
        req
    }

    /// APPSHOT_IOC_REGISTER of `name`; returns the AID.
    pub fn register(&self, name: &str) -> SysResult<u64> {
        let mut req = Device::register_request(name.as_bytes());
        self.ioctl(uapi::IOC_REGISTER, &mut req)?;
        Ok(req.aid)
    }

    /// APPSHOT_IOC_REGISTER of `name` with a virtual PID range.
    pub fn register_range(&self, name: &str, pid_min: u32, pid_max: u32) -> SysResult<u64> {
        let mut req = Device::register_request(name.as_bytes());
        req.flags = uapi::REGISTER_PID_RANGE;
        req.pid_min = pid_min;
        req.pid_max = pid_max;
        self.ioctl(uapi::IOC_REGISTER, &mut req)?;
        Ok(req.aid)
    }

    /// A LINK request.
    pub fn link_request(aid: u64, pid: i32) -> LinkRequest {
        let mut req = LinkRequest::zeroed();
        req.size = size_of::<LinkRequest>();
        req.aid = aid;
        req.pid = pid;
        req
    }

    /// APPSHOT_IOC_LINK of process `pid` (0: the caller) to `aid`.
    pub fn link(&self, aid: u64, pid: i32) -> SysResult<()> {
        self.ioctl(uapi::IOC_LINK, &mut Device::link_request(aid, pid))
    }

    /// An UNLINK request.
    pub fn unlink_request(pid: i32) -> UnlinkRequest {
        let mut req = UnlinkRequest::zeroed();
        req.size = size_of::<UnlinkRequest>();
        req.pid = pid;
        req
    }

    /// APPSHOT_IOC_UNLINK of process `pid` (0: the caller).
    pub fn unlink(&self, pid: i32) -> SysResult<()> {
        self.ioctl(uapi::IOC_UNLINK, &mut Device::unlink_request(pid))
    }

    /// An UNREGISTER request.
    pub fn unregister_request(aid: u64, flags: u32) -> UnregisterRequest {
        let mut req = UnregisterRequest::zeroed();
        req.size = size_of::<UnregisterRequest>();
        req.flags = flags;
        req.aid = aid;
        req
    }

    /// APPSHOT_IOC_UNREGISTER.
    pub fn unregister(&self, aid: u64, flags: u32) -> SysResult<()> {
        self.ioctl(
            uapi::IOC_UNREGISTER,
            &mut Device::unregister_request(aid, flags),
        )
    }

    /// An INFO request by number (`aid` != 0) or name.
    pub fn info_request(aid: u64, name: &[u8]) -> InfoRequest {
        let mut req = InfoRequest::zeroed();
        req.size = size_of::<InfoRequest>();
        req.aid = aid;
        req.name = name_field(name);
        req
    }

    /// APPSHOT_IOC_INFO by number.
    pub fn info(&self, aid: u64) -> SysResult<AidInfo> {
        let mut req = Device::info_request(aid, b"");
        self.ioctl(uapi::IOC_INFO, &mut req)?;
        Ok(req.info)
    }

    /// APPSHOT_IOC_INFO by name.
    pub fn info_by_name(&self, name: &[u8]) -> SysResult<AidInfo> {
        let mut req = Device::info_request(0, name);
        self.ioctl(uapi::IOC_INFO, &mut req)?;
        Ok(req.info)
    }

    /// APPSHOT_IOC_LIST with `capacity` 0: the number of AIDs.
    pub fn list_count(&self) -> SysResult<u32> {
        let mut req = ListRequest::zeroed();
        req.size = size_of::<ListRequest>();
        self.ioctl(uapi::IOC_LIST, &mut req)?;
        Ok(req.count)
    }

    /// APPSHOT_IOC_LIST into `out` (its length is the capacity); returns `count`.
    pub fn list_into(&self, out: &mut [AidInfo]) -> SysResult<u32> {
        let mut req = ListRequest::zeroed();
        req.size = size_of::<ListRequest>();
        req.entries = out.as_mut_ptr() as u64;
        req.capacity = out.len() as u32;
        // SAFETY: `entries` points to `capacity` writable elements borrowed for the call.
        unsafe { self.ioctl_addr(uapi::IOC_LIST, &mut req as *mut ListRequest as usize)? };
        Ok(req.count)
    }

    /// Every registered AID (LIST, retried while the set grows).
    pub fn list(&self) -> SysResult<Vec<AidInfo>> {
        let mut capacity = self.list_count()? as usize + 4;
        loop {
            let mut out = vec![AidInfo::zeroed(); capacity];
            let count = self.list_into(&mut out)? as usize;
            if count <= capacity {
                out.truncate(count);
                return Ok(out);
            }
            capacity = count + 4;
        }
    }

    /// APPSHOT_IOC_TABLE into `out` (its length is the capacity); returns `count`.
    pub fn table_into(&self, aid: u64, table: u32, out: &mut [TableEntry]) -> SysResult<u32> {
        let mut req = TableRequest::zeroed();
        req.size = size_of::<TableRequest>();
        req.aid = aid;
        req.table = table;
        req.entries = out.as_mut_ptr() as u64;
        req.capacity = out.len() as u32;
        // SAFETY: `entries` points to `capacity` writable elements borrowed for the call.
        unsafe { self.ioctl_addr(uapi::IOC_TABLE, &mut req as *mut TableRequest as usize)? };
        Ok(req.count)
    }

    /// One whole table of `aid` (TABLE, retried while it grows).
    pub fn table(&self, aid: u64, table: u32) -> SysResult<Vec<TableEntry>> {
        let mut capacity = 16;
        loop {
            let mut out = vec![TableEntry::zeroed(); capacity];
            let count = self.table_into(aid, table, &mut out)? as usize;
            if count <= capacity {
                out.truncate(count);
                return Ok(out);
            }
            capacity = count + 16;
        }
    }

    /// The PID table of `aid`.
    pub fn pid_table(&self, aid: u64) -> SysResult<Vec<TableEntry>> {
        self.table(aid, uapi::TABLE_PID)
    }

    /// A NEXT_ID request.
    pub fn next_id_request(aid: u64, table: u32, virtual_id: u32) -> NextIdRequest {
        let mut req = NextIdRequest::zeroed();
        req.size = size_of::<NextIdRequest>();
        req.aid = aid;
        req.table = table;
        req.virtual_id = virtual_id;
        req
    }

    /// APPSHOT_IOC_NEXT_ID: the next SysV object of kind `table` (`uapi::TABLE_SEM`,
    /// `TABLE_SHM`, `TABLE_MSG`) that `aid` binds gets virtual ID `virtual_id`.
    pub fn next_id(&self, aid: u64, table: u32, virtual_id: u32) -> SysResult<()> {
        self.ioctl(
            uapi::IOC_NEXT_ID,
            &mut Device::next_id_request(aid, table, virtual_id),
        )
    }

    /// A RESERVE_PID request.
    pub fn reserve_pid_request(aid: u64, virtual_id: u32, flags: u32) -> ReservePidRequest {
        let mut req = ReservePidRequest::zeroed();
        req.size = size_of::<ReservePidRequest>();
        req.flags = flags;
        req.aid = aid;
        req.virtual_id = virtual_id;
        req
    }

    /// APPSHOT_IOC_RESERVE_PID: reserves virtual PID `virtual_id` of `aid` (flags 0) or
    /// drops the reservation (`uapi::RESERVE_PID_RELEASE`).
    pub fn reserve_pid(&self, aid: u64, virtual_id: u32, flags: u32) -> SysResult<()> {
        self.ioctl(uapi::IOC_RESERVE_PID, &mut Device::reserve_pid_request(aid, virtual_id, flags))
    }
}

/// A 64-byte name field holding `name` (at most 64 bytes copied, NUL-padded, unchecked:
/// tests build invalid names with it on purpose).
pub fn name_field(name: &[u8]) -> [u8; uapi::NAME_LEN] {
    let mut field = [0u8; uapi::NAME_LEN];
    let n = name.len().min(uapi::NAME_LEN);
    field[..n].copy_from_slice(&name[..n]);
    field
}

/// The name in an INFO/LIST record, lossily as text.
pub fn info_name(info: &AidInfo) -> String {
    let len = info
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.name.len());
    String::from_utf8_lossy(&info.name[..len]).into_owned()
}

/// A name no other test (and no other process of this test) uses: `tag.PID.N`.
/// `tag` should be short: the result must stay within 63 bytes.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let name = format!("{tag}.{pid}.{n}");
    debug_assert!(name.len() <= uapi::NAME_MAX, "name {name} too long");
    name
}

/// A registered AID that is unregistered with `APPSHOT_UNREGISTER_FORCE` when dropped, so
/// a test leaves nothing behind even when it fails half-way.
pub struct AidGuard {
    /// The AID number.
    pub aid: u64,
    /// Its name.
    pub name: String,
}

impl AidGuard {
    /// Registers a fresh AID named after `tag` (see [`unique_name`]).
    pub fn new(dev: &Device, tag: &str) -> Result<AidGuard> {
        let name = unique_name(tag);
        let aid = dev
            .register(&name)
            .with_context(|| format!("register {name}"))?;
        Ok(AidGuard { aid, name })
    }

    /// Takes charge of an AID registered by other means (appshotctl, a raw request).
    pub fn adopt(aid: u64, name: &str) -> AidGuard {
        AidGuard {
            aid,
            name: name.to_string(),
        }
    }

    /// Takes charge of the AID registered under `name`, if any, and returns it.
    pub fn adopt_by_name(dev: &Device, name: &str) -> Option<AidGuard> {
        dev.info_by_name(name.as_bytes())
            .ok()
            .map(|info| AidGuard::adopt(info.aid, name))
    }
}

impl Drop for AidGuard {
    fn drop(&mut self) {
        let result =
            Device::open_raw().and_then(|dev| dev.unregister(self.aid, uapi::UNREGISTER_FORCE | uapi::UNREGISTER_DESTROY_IPC));
        match result {
            Ok(()) | Err(Errno(libc::ENOENT)) => {}
            // Without the device (a load/unload test failed) there is nothing left to undo.
            Err(Errno(libc::ENODEV | libc::ENXIO)) => {}
            Err(e) => diag!("cleanup: unregister AID {} ({}): {e}", self.aid, self.name),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn name_fields() {
        let f = name_field(b"abc");
        assert_eq!(&f[..4], b"abc\0");
        let long = [b'x'; 70];
        assert_eq!(name_field(&long), [b'x'; 64]);
        let mut info = AidInfo::zeroed();
        info.name = name_field(b"srv-1");
        assert_eq!(info_name(&info), "srv-1");
    }

    #[test]
    fn unique_names_differ_and_are_valid() {
        let a = unique_name("reg-dup");
        let b = unique_name("reg-dup");
        assert_ne!(a, b);
        assert!(uapi::check_name(a.as_bytes()).is_ok());
    }

    #[test]
    fn request_sizes_match_the_uapi() {
        assert_eq!(
            Device::register_request(b"x").size as usize,
            core::mem::size_of::<RegisterRequest>()
        );
        assert_eq!(uapi::ioc_size(uapi::IOC_INFO), size_of::<InfoRequest>());
        let next = Device::next_id_request(7, uapi::TABLE_SEM, 4242);
        assert_eq!(next.size, size_of::<NextIdRequest>());
        assert_eq!(uapi::ioc_size(uapi::IOC_NEXT_ID), size_of::<NextIdRequest>());
        assert_eq!((next.aid, next.table, next.virtual_id, next.flags), (7, 1, 4242, 0));
    }
}
