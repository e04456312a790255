// SPDX-License-Identifier: GPL-2.0-only
//! `/dev/appshot`: decoding and answering ioctls.
//!
//! Every request is copied in once, validated (size, flags, zero padding and reserved
//! fields), acted on, and copied out once; user memory is touched only through
//! `UserSlice`. The command dispatch is one `match` (see [`Command`]).

use kernel::bindings;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserSlice;

use crate::aid::Aid;
use crate::linux::glue;
use crate::pid::link;
use crate::linux::task::TaskRef;
use crate::aid::registry::{self, Registry};
use crate::uapi::{self, *};

const CAP_SYS_ADMIN: c_int = bindings::CAP_SYS_ADMIN as c_int;
const CAP_CHECKPOINT_RESTORE: c_int = bindings::CAP_CHECKPOINT_RESTORE as c_int;

/// The commands, decoded from an ioctl number.
#[derive(Clone, Copy)]
enum Command {
    Version,
    Register,
    Link,
    Unlink,
    Unregister,
    List,
    Info,
    Table,
    NextId,
    ReservePid,
}

impl Command {
    /// Decodes `cmd`: `ENOTTY` for anything not ours. The size its number carries is
    /// checked by [`with_request`] (structures grow).
    fn decode(cmd: u32) -> Result<Command> {
        if ioc_type(cmd) != IOC_MAGIC || ioc_dir(cmd) != 3 {
            return Err(ENOTTY);
        }
        let (command, number) = match ioc_nr(cmd) {
            0 => (Command::Version, IOC_VERSION),
            1 => (Command::Register, IOC_REGISTER),
            2 => (Command::Link, IOC_LINK),
            3 => (Command::Unlink, IOC_UNLINK),
            4 => (Command::Unregister, IOC_UNREGISTER),
            5 => (Command::List, IOC_LIST),
            6 => (Command::Info, IOC_INFO),
            7 => (Command::Table, IOC_TABLE),
            8 => (Command::NextId, IOC_NEXT_ID),
            9 => (Command::ReservePid, IOC_RESERVE_PID),
            _ => return Err(ENOTTY),
        };
        // Only the size bits may differ from this module's number.
        if cmd & !IOC_SIZE_MASK != number & !IOC_SIZE_MASK {
            return Err(ENOTTY);
        }
        Ok(command)
    }

    /// Whether the command changes state and so needs CAP_SYS_ADMIN or
    /// CAP_CHECKPOINT_RESTORE.
    fn privileged(self) -> bool {
        matches!(
            self,
            Command::Register
                | Command::Link
                | Command::Unlink
                | Command::Unregister
                | Command::NextId
                | Command::ReservePid
        )
    }
}

/// The size bits of an ioctl number (`_IOC_SIZEMASK << _IOC_SIZESHIFT`).
const IOC_SIZE_MASK: u32 = 0x3fff << 16;

/// The largest request a caller may pass: a newer caller's larger structure is accepted
/// when every byte this module does not know is zero, up to one page.
const REQUEST_MAX: usize = 4096;

/// What every request structure shares: the size field, the flags it accepts, its
/// fields that must be zero, and the size of its first version.
trait Request: FromBytes + AsBytes + Sized {
    /// The structure's size in the ABI version that introduced it: an older caller's
    /// smaller structure (at least this long) is zero-extended, as `clone3` and `openat2`
    /// do. Every structure is still at its first version.
    const SIZE_VER0: usize = core::mem::size_of::<Self>();
    const FLAGS: u32;
    fn size(&self) -> u32;
    fn flags(&self) -> u32;
    fn zero_fields_are_zero(&self) -> bool;
}

macro_rules! request {
    ($($ty:ident: flags = $flags:expr, zero = [$($field:ident),*];)*) => {$(
        // SAFETY: a `#[repr(C)]` structure of integers and integer arrays without implicit
        // padding (the uapi layout test proves it): every bit pattern is a valid value.
        unsafe impl FromBytes for $ty {}
        // SAFETY: as above, no padding bytes, so every byte is initialised.
        unsafe impl AsBytes for $ty {}
        impl Request for $ty {
            const FLAGS: u32 = $flags;
            fn size(&self) -> u32 {
                self.size
            }
            fn flags(&self) -> u32 {
                self.flags
            }
            fn zero_fields_are_zero(&self) -> bool {
                true $(&& is_zero(&self.$field))*
            }
        }
    )*};
}

request! {
    VersionRequest: flags = 0, zero = [reserved];
    RegisterRequest: flags = REGISTER_PID_RANGE, zero = [reserved];
    LinkRequest: flags = 0, zero = [pad, reserved];
    UnlinkRequest: flags = 0, zero = [pad, reserved];
    UnregisterRequest: flags = UNREGISTER_FORCE | UNREGISTER_DESTROY_IPC, zero = [reserved];
    ListRequest: flags = 0, zero = [reserved];
    InfoRequest: flags = 0, zero = [reserved];
    TableRequest: flags = 0, zero = [pad, reserved];
    NextIdRequest: flags = 0, zero = [reserved];
    ReservePidRequest: flags = RESERVE_PID_RELEASE, zero = [pad, reserved];
}

// SAFETY: `#[repr(C)]` integers without padding (uapi layout test); any bit pattern is valid.
unsafe impl AsBytes for AidInfo {}
// SAFETY: as above.
unsafe impl FromBytes for AidInfo {}
// SAFETY: `#[repr(C)]` of four u32: no padding; any bit pattern is valid.
unsafe impl AsBytes for uapi::TableEntry {}
// SAFETY: as above.
unsafe impl FromBytes for uapi::TableEntry {}

trait IsZero {
    fn is_zero(&self) -> bool;
}
impl IsZero for u32 {
    fn is_zero(&self) -> bool {
        *self == 0
    }
}
impl<const N: usize> IsZero for [u64; N] {
    fn is_zero(&self) -> bool {
        self.iter().all(|&v| v == 0)
    }
}
fn is_zero<T: IsZero>(value: &T) -> bool {
    value.is_zero()
}

/// Copies a request of `user_size` bytes (the size the ioctl number carries) in,
/// validates its common fields, lets `handle` act on it, and copies it back out. A
/// request shorter than the structure (an older caller's, at least [`Request::SIZE_VER0`]
/// long) is zero-extended; a longer one (a newer caller's) must hold zeroes beyond what
/// this module knows, or it is refused with `E2BIG`. Only the caller's `user_size` bytes
/// are ever written back.
fn with_request<T: Request>(arg: usize, user_size: usize, handle: impl FnOnce(&mut T) -> Result) -> Result {
    let size = core::mem::size_of::<T>();
    if user_size < T::SIZE_VER0 {
        return Err(EINVAL);
    }
    if user_size > REQUEST_MAX {
        return Err(E2BIG);
    }
    let known = user_size.min(size);
    // SAFETY: `T: FromBytes`: every bit pattern, all zeroes included, is a valid `T`.
    let mut request: T = unsafe { core::mem::zeroed() };
    let (mut reader, mut probe) = UserSlice::new(arg, user_size).reader_writer();
    // SAFETY: `request` is `size >= known` bytes of plain data (`FromBytes`), borrowed
    // mutably for the read only.
    let bytes = unsafe { core::slice::from_raw_parts_mut((&mut request as *mut T).cast::<u8>(), known) };
    reader.read_slice(bytes)?;
    let mut tail = [0u8; 64];
    let mut left = user_size - known;
    while left > 0 {
        let n = left.min(tail.len());
        reader.read_slice(&mut tail[..n])?;
        if tail[..n].iter().any(|&b| b != 0) {
            return Err(E2BIG);
        }
        left -= n;
    }
    if request.size() as usize != user_size || request.flags() & !T::FLAGS != 0 || !request.zero_fields_are_zero() {
        return Err(EINVAL);
    }
    let as_bytes = |request: &T| {
        // SAFETY: `request` is `size >= known` initialised bytes (`AsBytes`: no padding).
        unsafe { core::slice::from_raw_parts((request as *const T).cast::<u8>(), known) }
    };
    // Prove the answer can be written back before acting (a read-only argument must not
    // register an AID the caller never learns about): write the request back unchanged.
    probe.write_slice(as_bytes(&request))?;
    handle(&mut request)?;
    UserSlice::new(arg, known).writer().write_slice(as_bytes(&request))
}

fn name_of(field: &[u8; NAME_LEN]) -> Result<[u8; NAME_LEN]> {
    uapi::parse_name(field).map_err(|_| EINVAL)?;
    Ok(*field)
}

fn version(registry: &Registry, viewer: Viewer, req: &mut VersionRequest) -> Result {
    req.abi_version = ABI_VERSION;
    req.name_max = NAME_MAX as u32;
    req.features = FEATURES;
    req.entry_limit = glue::max_entries().min(u32::MAX as usize) as u32;
    // As LIST counts: the AIDs the caller may see.
    req.nr_aids = registry.list()?.iter().filter(|aid| viewer.sees(aid)).count() as u32;
    Ok(())
}

fn register(registry: &Registry, req: &mut RegisterRequest) -> Result {
    let name = name_of(&req.name)?;
    let range = if req.flags & REGISTER_PID_RANGE != 0 {
        if !uapi::check_pid_range(req.pid_min, req.pid_max) {
            return Err(EINVAL);
        }
        Some((req.pid_min, req.pid_max))
    } else {
        if req.pid_min != 0 || req.pid_max != 0 {
            return Err(EINVAL);
        }
        None
    };
    req.aid = registry.register(name, range)?.id;
    Ok(())
}

fn link(registry: &Registry, req: &mut LinkRequest) -> Result {
    let aid = registry.find(req.aid)?;
    let target = TaskRef::by_pid(req.pid)?;
    if !target.task().caller_may_attach() {
        return Err(EPERM);
    }
    link::link_process(registry, &aid, &target)
}

fn unlink(registry: &Registry, req: &mut UnlinkRequest) -> Result {
    let target = TaskRef::by_pid(req.pid)?;
    link::unlink_process(registry, &target)
}

fn unregister(registry: &Registry, req: &mut UnregisterRequest) -> Result {
    registry.unregister(req.aid, req.flags & UNREGISTER_FORCE != 0, req.flags & UNREGISTER_DESTROY_IPC != 0).map(|_| ())
}

/// Who asks a query: a privileged opener sees every AID, anyone else only the AIDs
/// registered by its own effective UID (an AID's table names processes by system PID).
#[derive(Clone, Copy)]
struct Viewer {
    privileged: bool,
    euid: u32,
}

impl Viewer {
    fn sees(self, aid: &Aid) -> bool {
        self.privileged || aid.owner_uid == self.euid
    }

    /// `aid` if the caller may see it; `ENOENT` (as for an AID that does not exist)
    /// otherwise.
    fn check(self, aid: Arc<Aid>) -> Result<Arc<Aid>> {
        if self.sees(&aid) { Ok(aid) } else { Err(ENOENT) }
    }
}

fn list(registry: &Registry, viewer: Viewer, req: &mut ListRequest) -> Result {
    let aids = registry.list()?;
    let visible = || aids.iter().filter(|aid| viewer.sees(aid));
    let total = visible().count();
    let written = total.min(req.capacity as usize);
    if written > 0 {
        let mut out = UserSlice::new(req.entries as usize, written * core::mem::size_of::<AidInfo>()).writer();
        for aid in visible().take(written) {
            out.write(&aid.info())?;
        }
    }
    req.count = total as u32;
    Ok(())
}

fn info(registry: &Registry, viewer: Viewer, req: &mut InfoRequest) -> Result {
    let aid = if req.aid != 0 {
        registry.find(req.aid)?
    } else {
        registry.find_by_name(&name_of(&req.name)?)?
    };
    let aid = viewer.check(aid)?;
    req.info = aid.info();
    req.aid = aid.id;
    req.name = aid.name;
    Ok(())
}

/// Entries copied per batch: the AID's lock is held for at most this many, and the
/// buffer (16 bytes each) is one page.
const TABLE_BATCH: usize = 256;

fn table(registry: &Registry, viewer: Viewer, req: &mut TableRequest) -> Result {
    let kind = req.table;
    if kind as usize >= TABLE_COUNT {
        return Err(EINVAL);
    }
    let aid = viewer.check(registry.find(req.aid)?)?;
    let capacity = req.capacity as usize;
    let mut batch: KVec<uapi::TableEntry> = KVec::with_capacity(TABLE_BATCH.min(capacity), GFP_KERNEL)?;
    let entry_size = core::mem::size_of::<uapi::TableEntry>();
    let (mut written, mut from) = (0usize, 0u32);
    loop {
        // SAFETY: shrinking to zero; `TableEntry` is plain data with nothing to drop.
        unsafe { batch.set_len(0) };
        let room = TABLE_BATCH.min(capacity - written);
        let more = {
            let mut more = false;
            let total = aid.state.lock().for_each_from(kind, from, |virtual_id, system_id, owner| {
                if batch.len() == room {
                    more = true;
                    return false;
                }
                let mut out = uapi::TableEntry::zeroed();
                out.virtual_id = virtual_id;
                out.system_id = system_id;
                out.owner_id = owner;
                // Within the reserved capacity: never allocates.
                batch.push(out, GFP_NOWAIT).is_ok()
            }).ok_or(EINVAL)?;
            req.count = total as u32;
            more
        };
        if !batch.is_empty() {
            let at = (req.entries as usize).wrapping_add(written * entry_size);
            let mut out = UserSlice::new(at, batch.len() * entry_size).writer();
            for entry in batch.iter() {
                out.write(entry)?;
            }
            written += batch.len();
        }
        match batch.last() {
            // The table is walked in virtual ID order; the next batch starts after this
            // one (entries added or removed meanwhile may or may not be seen, as in a
            // directory read).
            Some(last) if more && written < capacity && last.virtual_id < u32::MAX => from = last.virtual_id + 1,
            _ => break,
        }
    }
    Ok(())
}

fn next_id(registry: &Registry, req: &mut NextIdRequest) -> Result {
    // The request's own fields first, as TABLE does: EINVAL before ENOENT.
    if !matches!(req.table, TABLE_SEM | TABLE_SHM | TABLE_MSG) || req.virtual_id > i32::MAX as u32 {
        return Err(EINVAL);
    }
    let aid = registry.find(req.aid)?;
    crate::ipc::set_next_id(&aid, req.table, req.virtual_id)
}

fn reserve_pid(registry: &Registry, req: &mut ReservePidRequest) -> Result {
    let virtual_id = crate::table::VirtualPid::new(req.virtual_id);
    let aid = registry.find(req.aid)?;
    if req.flags & RESERVE_PID_RELEASE != 0 {
        let removed = aid.state.lock().pids.unreserve(virtual_id).ok_or(ENOENT)?;
        drop(removed);
        return Ok(());
    }
    // Allocated before the AID's lock is taken.
    let reservation = crate::pid::PidReservation::new(GFP_KERNEL)?;
    let mut state = aid.state.lock();
    if state.unregistered {
        return Err(ENOENT);
    }
    if !state.pids.virtual_in_range(virtual_id) {
        return Err(EINVAL);
    }
    if state.pids.len() >= glue::max_entries() {
        return Err(ENOSPC);
    }
    state.pids.reserve(reservation, virtual_id)
}

fn privileged(file: *mut bindings::file) -> bool {
    // SAFETY: `file` is the open file the ioctl arrived on, valid for the whole call;
    // `file_ns_capable` checks the credentials it was opened with.
    unsafe {
        glue::appshot_glue_file_capable(file, CAP_SYS_ADMIN)
            || glue::appshot_glue_file_capable(file, CAP_CHECKPOINT_RESTORE)
    }
}

fn ioctl(file: *mut bindings::file, cmd: u32, arg: usize) -> Result {
    let command = Command::decode(cmd)?;
    let user_size = ioc_size(cmd) as usize;
    let viewer = Viewer { privileged: privileged(file), euid: glue::current_euid() };
    if command.privileged() && !viewer.privileged {
        return Err(EPERM);
    }
    let registry = registry::get().ok_or(ENODEV)?;
    match command {
        Command::Version => with_request(arg, user_size, |req| version(registry, viewer, req)),
        Command::Register => with_request(arg, user_size, |req| register(registry, req)),
        Command::Link => with_request(arg, user_size, |req| link(registry, req)),
        Command::Unlink => with_request(arg, user_size, |req| unlink(registry, req)),
        Command::Unregister => with_request(arg, user_size, |req| unregister(registry, req)),
        Command::List => with_request(arg, user_size, |req| list(registry, viewer, req)),
        Command::Info => with_request(arg, user_size, |req| info(registry, viewer, req)),
        Command::Table => with_request(arg, user_size, |req| table(registry, viewer, req)),
        Command::NextId => with_request(arg, user_size, |req| next_id(registry, req)),
        Command::ReservePid => with_request(arg, user_size, |req| reserve_pid(registry, req)),
    }
}

/// The misc device's `unlocked_ioctl`, reached through the C glue.
#[no_mangle]
pub(crate) extern "C" fn appshot_rust_ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    match ioctl(file, cmd, arg as usize) {
        Ok(()) => 0,
        Err(error) => error.to_errno() as c_long,
    }
}
