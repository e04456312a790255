// SPDX-License-Identifier: GPL-2.0-only
//! The system calls that carry a PID inside something else: a structure in user memory
//! (capability headers, `sigevent`, `f_owner_ex`, socket credentials), a clock ID (the
//! CPU-time clocks encode a PID), or a file's owner. Their rows are in the table of
//! `syscalls.rs`; the rules are those of that file.
//!
//! Where the kernel reads the PID from the caller's memory, the handler writes the
//! system value there for the duration of the call and the caller's value back after it
//! ([`Call::call_with_user_int`]); where the kernel writes one, the handler rewrites it
//! after the call. Structure layouts differ between the 64-bit and the compat (i386,
//! x32) entries; each handler picks its entry's.

use kernel::bindings;
use kernel::uaccess::UserSlice;

use crate::linux::glue;
use crate::syscalls::{read_user_i32, write_user_i32, Abi, Call, Outcome};
use kernel::prelude::*;

/// fcntl(fd, F_GETLK, flock): when a lock conflicts (`l_type` is not `F_UNLCK`), the
/// kernel writes its holder's PID to `l_pid` at `pid_at` in the caller's structure; it
/// is shown as the holder's virtual PID, 0 for a process outside the AID (as for
/// `SO_PEERCRED`). Without a conflict the kernel leaves `l_pid` as the caller wrote it,
/// and so does this.
fn lock_holder(c: &Call<'_>, pid_at: u64) -> Outcome {
    let ret = c.call(c.args());
    let flock = c.ptr_arg(2);
    if ret == 0 {
        let mut l_type = [0u8; 2];
        let read = UserSlice::new(flock as usize, 2).reader().read_slice(&mut l_type);
        if read.is_ok() && i16::from_ne_bytes(l_type) != F_UNLCK {
            rewrite_user_int(flock.wrapping_add(pid_at), |pid| if pid > 0 { c.shown(pid as u32) as i32 } else { pid });
        }
    }
    Outcome::Return(ret)
}

/// capget/capset(header, data): `header->pid` (an int after the u32 version).
pub(crate) fn capabilities(c: &Call<'_>) -> Outcome {
    let pid_at = c.ptr_arg(0).wrapping_add(4);
    Outcome::Return(c.call_with_user_int(pid_at, c.args(), |pid| {
        if pid > 0 { c.to_system_or_nobody(pid as u32) as i32 } else { pid }
    }))
}

// fcntl commands and socket ioctls that set or get a file's owner.
const F_SETOWN: u32 = bindings::F_SETOWN;
const F_GETOWN: u32 = bindings::F_GETOWN;
const F_SETOWN_EX: u32 = bindings::F_SETOWN_EX;
const F_GETOWN_EX: u32 = bindings::F_GETOWN_EX;
const FIOSETOWN: u32 = bindings::FIOSETOWN;
const SIOCSPGRP: u32 = bindings::SIOCSPGRP;
const FIOGETOWN: u32 = bindings::FIOGETOWN;
const SIOCGPGRP: u32 = bindings::SIOCGPGRP;

// fcntl commands that report the holder of a conflicting POSIX lock, and the lock type
// that says there is none. Not all in the bindings; the glue checks them.
const F_GETLK: u32 = 5;
const F_GETLK64: u32 = 12;
const F_UNLCK: i16 = 2;

/// The `fcntl` rows' pre-filter: the commands [`fcntl`] handles.
pub(crate) fn fcntl_wants(args: &[u64; 6]) -> bool {
    matches!(args[1] as u32, F_GETLK | F_GETLK64 | F_SETOWN | F_GETOWN | F_SETOWN_EX | F_GETOWN_EX)
}

/// fcntl(fd, cmd, arg) for the owner commands (SIGIO/SIGURG targets) and the lock
/// queries; others run as made.
pub(crate) fn fcntl(c: &Call<'_>) -> Outcome {
    match c.int_arg(1) as u32 {
        // `l_pid` of `struct flock` (x86-64, x32), `compat_flock` (i386 F_GETLK) or the
        // packed `compat_flock64` (i386 F_GETLK64, which only `fcntl64` takes).
        F_GETLK => lock_holder(c, if c.abi == Abi::Ia32 { 12 } else { 24 }),
        F_GETLK64 if c.abi == Abi::Ia32 => lock_holder(c, 20),
        F_SETOWN => {
            let mut args = c.args();
            let owner = c.owner_to_system(c.int_arg(2));
            args[2] = (args[2] & !0xffff_ffff) | u64::from(owner as u32);
            Outcome::Return(c.call(args))
        }
        F_GETOWN => {
            let ret = c.call(c.args());
            // A process group owner is returned as -pgid, which for a group below 4096
            // looks like an errno (F_GETOWN itself fails only for a bad descriptor, before
            // reading the owner). A value in that range is a group when such a group
            // exists: then it is translated, else it is the errno.
            let group = ret < 0 && ret >= -4095 && glue::PidUses::of((-ret) as u32, None).group_or_session();
            Outcome::Return(if ret >= 0 || ret < -4095 || group { i64::from(c.owner_to_virtual(ret as i32)) } else { ret })
        }
        // struct f_owner_ex { int type; pid_t pid; }: the type says thread, process or
        // group; the PID is positive in each case.
        F_SETOWN_EX => {
            let pid_at = c.ptr_arg(2).wrapping_add(4);
            Outcome::Return(c.call_with_user_int(pid_at, c.args(), |pid| c.owner_to_system(pid)))
        }
        F_GETOWN_EX => {
            let ret = c.call(c.args());
            if ret == 0 {
                rewrite_user_int(c.ptr_arg(2).wrapping_add(4), |pid| c.owner_to_virtual(pid));
            }
            Outcome::Return(ret)
        }
        _ => Outcome::Native,
    }
}

/// The socket ioctls with an owner in an `int` the argument points to; `None` for every
/// other request.
/// Whether [`socket_owner_ioctl`] handles `request`.
pub(crate) fn is_socket_owner_ioctl(request: u32) -> bool {
    matches!(request, FIOSETOWN | SIOCSPGRP | FIOGETOWN | SIOCGPGRP)
}

pub(crate) fn socket_owner_ioctl(c: &Call<'_>, request: u32, address: u64) -> Option<Outcome> {
    match request {
        FIOSETOWN | SIOCSPGRP => {
            Some(Outcome::Return(c.call_with_user_int(address, c.args(), |owner| c.owner_to_system(owner))))
        }
        FIOGETOWN | SIOCGPGRP => {
            let ret = c.call(c.args());
            if ret == 0 {
                rewrite_user_int(address, |owner| c.owner_to_virtual(owner));
            }
            Some(Outcome::Return(ret))
        }
        _ => None,
    }
}

/// Rewrites the `int` at `address` with `f` of its value (left alone if unreadable).
pub(crate) fn rewrite_user_int(address: u64, f: impl Fn(i32) -> i32) {
    if let Some(value) = read_user_i32(address) {
        let shown = f(value);
        if shown != value {
            write_user_i32(address, shown);
        }
    }
}

// CPU-time clock IDs: `~pid << 3 | kind`, kind bit 2 = per thread, low bits 3 = a
// file-descriptor clock (no PID). See `include/linux/posix-timers_types.h`.
const CPUCLOCK_FD: i32 = bindings::CLOCKFD as i32;
/// `CPUCLOCK_CLOCK_MASK` (a macro the bindings lack; the glue asserts it).
const CPUCLOCK_MASK: i32 = 3;
/// A PID no process has, for a clock ID that must fail like one of a missing process
/// (`PID_MAX_LIMIT`: every PID is smaller).
const NO_CLOCK_PID: i32 = 4 * 1024 * 1024;

/// A clock ID as the kernel must see it: a CPU-time clock of a process or thread names
/// its virtual PID or TID, which becomes the system one.
fn clock_to_system(c: &Call<'_>, clock: i32) -> i32 {
    if clock >= 0 || clock & CPUCLOCK_MASK == CPUCLOCK_FD {
        return clock;
    }
    let pid = !(clock >> 3);
    if pid <= 0 {
        // 0: the caller's own process or thread, as natively.
        return clock;
    }
    let system = match c.to_system_or_nobody(pid as u32) {
        crate::syscalls::NOBODY => NO_CLOCK_PID,
        system => system as i32,
    };
    ((!system) << 3) | (clock & 7)
}

/// The clock rows' pre-filter: a CPU-time clock ID (negative); the others are never
/// translated ([`clock_to_system`]).
pub(crate) fn clock_wants(args: &[u64; 6]) -> bool {
    (args[0] as u32 as i32) < 0
}

/// clock_gettime, clock_getres, clock_settime, clock_adjtime, clock_nanosleep (any
/// time layout): the clock ID is the first argument.
pub(crate) fn clock(c: &Call<'_>) -> Outcome {
    let clock = c.int_arg(0);
    let system = clock_to_system(c, clock);
    if system == clock {
        return Outcome::Native;
    }
    let mut args = c.args();
    args[0] = (args[0] & !0xffff_ffff) | u64::from(system as u32);
    Outcome::Return(c.call(args))
}

const SIGEV_THREAD_ID: i32 = bindings::SIGEV_THREAD_ID as i32;

/// timer_create(clock, sigevent, id): a CPU-time clock, and the thread a
/// `SIGEV_THREAD_ID` signal goes to (glibc's `SIGEV_THREAD` timers use it).
pub(crate) fn timer_create(c: &Call<'_>) -> Outcome {
    let mut args = c.args();
    let clock = c.int_arg(0);
    args[0] = (args[0] & !0xffff_ffff) | u64::from(clock_to_system(c, clock) as u32);
    let event = c.ptr_arg(1);
    // struct sigevent: sigev_value (a pointer-sized union), sigev_signo, sigev_notify,
    // then the thread ID.
    let (notify_at, tid_at) = if c.abi.compat() { (8, 12) } else { (12, 16) };
    let thread_id = event != 0 && read_user_i32(event.wrapping_add(notify_at)) == Some(SIGEV_THREAD_ID);
    if !thread_id {
        return Outcome::Return(c.call(args));
    }
    Outcome::Return(c.call_with_user_int(event.wrapping_add(tid_at), args, |tid| {
        if tid > 0 { c.to_system_or_nobody(tid as u32) as i32 } else { tid }
    }))
}

const SOL_SOCKET: i32 = bindings::SOL_SOCKET as i32;
const SO_PEERCRED: i32 = bindings::SO_PEERCRED as i32;
const SCM_CREDENTIALS: i32 = bindings::SCM_CREDENTIALS as i32;

/// getsockopt(fd, level, name, value, length): `SO_PEERCRED`'s `struct ucred` starts
/// with the peer's PID, shown as its virtual PID (0 outside the AID).
pub(crate) fn getsockopt(c: &Call<'_>) -> Outcome {
    peer_credentials(c, c.int_arg(1), c.int_arg(2), c.ptr_arg(3), c.ptr_arg(4))
}

fn peer_credentials(c: &Call<'_>, level: i32, name: i32, value: u64, length: u64) -> Outcome {
    if level != SOL_SOCKET || name != SO_PEERCRED {
        return Outcome::Native;
    }
    let ret = c.call(c.args());
    if ret == 0 && read_user_i32(length).is_some_and(|len| len >= 4) {
        rewrite_user_int(value, |pid| c.owner_to_virtual(pid));
    }
    Outcome::Return(ret)
}

/// The layout of `struct msghdr`, `struct mmsghdr` and `struct cmsghdr` of an entry.
#[derive(Clone, Copy)]
struct MsgLayout {
    compat: bool,
}

impl MsgLayout {
    fn of(c: &Call<'_>) -> Self {
        MsgLayout { compat: c.abi.compat() }
    }

    /// Size of one `struct mmsghdr`.
    fn mmsghdr_size(self) -> u64 {
        if self.compat { 32 } else { 64 }
    }

    /// `msg_control` and `msg_controllen` of the `msghdr` at `msg`.
    fn control(self, msg: u64) -> Option<(u64, u64)> {
        if self.compat {
            let mut raw = [0u8; 8];
            UserSlice::new(msg.wrapping_add(16) as usize, 8).reader().read_slice(&mut raw).ok()?;
            let word = |i: usize| u64::from(u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]));
            Some((word(0), word(4)))
        } else {
            let mut raw = [0u8; 16];
            UserSlice::new(msg.wrapping_add(32) as usize, 16).reader().read_slice(&mut raw).ok()?;
            let word = |i: usize| u64::from_ne_bytes(raw[i..i + 8].try_into().unwrap_or([0; 8]));
            Some((word(0), word(8)))
        }
    }

    /// Calls `f` with the address of the PID of every `SCM_CREDENTIALS` message in the
    /// control buffer of the `msghdr` at `msg`.
    fn for_each_credentials_pid(self, msg: u64, mut f: impl FnMut(u64)) {
        let Some((control, length)) = self.control(msg) else {
            return;
        };
        let (header, align) = if self.compat { (12u64, 4u64) } else { (16, 8) };
        // A control buffer is small; the bound only keeps a forged length from costing.
        let length = length.min(64 * 1024);
        let mut at = 0u64;
        while at + header <= length {
            let mut raw = [0u8; 16];
            let head = &mut raw[..header as usize];
            if UserSlice::new(control.wrapping_add(at) as usize, head.len()).reader().read_slice(head).is_err() {
                return;
            }
            let (len, level, kind) = if self.compat {
                let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
                (u64::from(word(0)), word(4) as i32, word(8) as i32)
            } else {
                let word = |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
                (u64::from_ne_bytes(raw[..8].try_into().unwrap_or([0; 8])), word(8) as i32, word(12) as i32)
            };
            if len < header {
                return;
            }
            // struct ucred { pid, uid, gid }, right after the (aligned) header.
            if level == SOL_SOCKET && kind == SCM_CREDENTIALS && len >= header + 12 {
                f(control.wrapping_add(at + header));
            }
            at += (len + align - 1) & !(align - 1);
        }
    }
}

/// recvmsg(fd, msg, flags): the sender's PID in received `SCM_CREDENTIALS`.
pub(crate) fn recvmsg(c: &Call<'_>) -> Outcome {
    received(c, MsgLayout::of(c), c.ptr_arg(1), None)
}

/// recvmmsg(fd, msgs, vlen, flags, timeout): as [`recvmsg`] for each message received.
pub(crate) fn recvmmsg(c: &Call<'_>) -> Outcome {
    received(c, MsgLayout::of(c), c.ptr_arg(1), Some(()))
}

/// sendmsg(fd, msg, flags).
pub(crate) fn sendmsg(c: &Call<'_>) -> Outcome {
    sent(c, MsgLayout::of(c), c.ptr_arg(1), None)
}

/// sendmmsg(fd, msgs, vlen, flags).
pub(crate) fn sendmmsg(c: &Call<'_>) -> Outcome {
    sent(c, MsgLayout::of(c), c.ptr_arg(1), Some(c.arg(2) as u32 as u64))
}

/// Calls the original, then shows the PIDs of the `SCM_CREDENTIALS` it received as
/// virtual PIDs: in the `msghdr` at `msgs`, or (`many`) in each `mmsghdr` of the array
/// there that the call filled (its result).
fn received(c: &Call<'_>, layout: MsgLayout, msgs: u64, many: Option<()>) -> Outcome {
    let ret = c.call(c.args());
    let filled = match many {
        None if ret >= 0 => 1,
        Some(()) if ret > 0 => ret as u64,
        _ => 0,
    };
    let step = if many.is_some() { layout.mmsghdr_size() } else { 0 };
    for i in 0..filled {
        layout.for_each_credentials_pid(msgs.wrapping_add(i * step), |at| {
            rewrite_user_int(at, |pid| c.owner_to_virtual(pid))
        });
    }
    Outcome::Return(ret)
}

/// Most messages one sendmmsg sends (`UIO_MAXIOV`, the kernel's own bound).
const SENDMMSG_MAX: u64 = 1024;

/// Explicit `SCM_CREDENTIALS` name the sender by its virtual PID, which the kernel
/// checks against the caller and looks up: the system PID is put in the caller's
/// control buffers for the call (the `msghdr` at `msgs`, or the first `count` of the
/// `mmsghdr` array there) and the caller's values back after it.
fn sent(c: &Call<'_>, layout: MsgLayout, msgs: u64, count: Option<u64>) -> Outcome {
    let step = if count.is_some() { layout.mmsghdr_size() } else { 0 };
    let mut swapped: KVec<(u64, i32)> = KVec::new();
    let mut failed = false;
    for i in 0..count.unwrap_or(1).min(SENDMMSG_MAX) {
        layout.for_each_credentials_pid(msgs.wrapping_add(i * step), |at| {
            let Some(pid) = read_user_i32(at).filter(|&pid| pid > 0) else {
                return;
            };
            if failed || swapped.push((at, pid), GFP_KERNEL).is_err() {
                failed = true;
                return;
            }
            write_user_i32(at, c.to_system_or_nobody(pid as u32) as i32);
        });
    }
    let ret = if failed { ENOMEM.to_errno() as i64 } else { c.call(c.args()) };
    for &(at, pid) in swapped.iter() {
        write_user_i32(at, pid);
    }
    Outcome::Return(ret)
}

// socketcall(call, args) numbers (i386 only), see include/uapi/linux/net.h.
const SYS_GETSOCKOPT: i32 = bindings::SYS_GETSOCKOPT as i32;
const SYS_SENDMSG: i32 = bindings::SYS_SENDMSG as i32;
const SYS_RECVMSG: i32 = bindings::SYS_RECVMSG as i32;
const SYS_RECVMMSG: i32 = bindings::SYS_RECVMMSG as i32;
const SYS_SENDMMSG: i32 = bindings::SYS_SENDMMSG as i32;

/// The i386 socketcall(call, args) multiplexer: the calls above, with their arguments
/// read from the caller's array of 32-bit words; the original (socketcall) runs with the
/// caller's own arguments. The kernel reads that array again: a caller that changes it
/// meanwhile only misleads the translation of its own messages.
pub(crate) fn socketcall(c: &Call<'_>) -> Outcome {
    let call = c.int_arg(0);
    let words = match call {
        SYS_GETSOCKOPT | SYS_RECVMMSG => 5,
        SYS_SENDMMSG => 4,
        SYS_SENDMSG | SYS_RECVMSG => 3,
        _ => return Outcome::Native,
    };
    let mut raw = [0u8; 20];
    if UserSlice::new(c.ptr_arg(1) as usize, words * 4).reader().read_slice(&mut raw[..words * 4]).is_err() {
        return Outcome::Native;
    }
    let word = |i: usize| u32::from_ne_bytes([raw[i * 4], raw[i * 4 + 1], raw[i * 4 + 2], raw[i * 4 + 3]]);
    let layout = MsgLayout { compat: true };
    match call {
        SYS_GETSOCKOPT => {
            peer_credentials(c, word(1) as i32, word(2) as i32, u64::from(word(3)), u64::from(word(4)))
        }
        SYS_RECVMSG => received(c, layout, u64::from(word(1)), None),
        SYS_RECVMMSG => received(c, layout, u64::from(word(1)), Some(())),
        SYS_SENDMSG => sent(c, layout, u64::from(word(1)), None),
        _ => sent(c, layout, u64::from(word(1)), Some(u64::from(word(2)))),
    }
}

/// The `futex` rows' pre-filter: the PI operations, the only ones [`futex`] handles.
pub(crate) fn futex_wants(args: &[u64; 6]) -> bool {
    // The command part of `op` (FUTEX_CMD_MASK): without FUTEX_PRIVATE_FLAG and
    // FUTEX_CLOCK_REALTIME.
    const FUTEX_CMD_MASK: i32 = !(128 | 256);
    const FUTEX_LOCK_PI: i32 = 6;
    const FUTEX_UNLOCK_PI: i32 = 7;
    const FUTEX_TRYLOCK_PI: i32 = 8;
    const FUTEX_WAIT_REQUEUE_PI: i32 = 11;
    const FUTEX_CMP_REQUEUE_PI: i32 = 12;
    const FUTEX_LOCK_PI2: i32 = 13;
    matches!(
        args[1] as u32 as i32 & FUTEX_CMD_MASK,
        FUTEX_LOCK_PI
            | FUTEX_LOCK_PI2
            | FUTEX_TRYLOCK_PI
            | FUTEX_UNLOCK_PI
            | FUTEX_WAIT_REQUEUE_PI
            | FUTEX_CMP_REQUEUE_PI
    )
}

/// `futex(uaddr, op, ...)`: a PI operation runs with the caller marked, so that the
/// kernel's lookup of the lock's owner finds only tasks of its AID and, under a PID
/// range, the TIDs the kernel's PI code writes and compares are virtual
/// ([`crate::pid::futex`]); every other operation runs untouched.
/// Runs only for the PI commands: the rows' pre-filter ([`futex_wants`]) let the call in.
pub(crate) fn futex(c: &Call<'_>) -> Outcome {
    if c.aid.pid_range.is_some() {
        match c.registry.attach_pi_translation() {
            Ok(()) => {}
            // The last AID went meanwhile (a forced UNREGISTER): the caller is in none.
            Err(e) if e == ENOENT => return Outcome::Native,
            // Without the translation the kernel would write system TIDs to the word.
            Err(e) => return Outcome::Return(e.to_errno().into()),
        }
    }
    c.registry.tasks.enter_pi_futex(c.task);
    let ret = c.call(c.args());
    c.registry.tasks.leave_pi_futex(c.task);
    Outcome::Return(ret)
}
