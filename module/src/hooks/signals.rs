// SPDX-License-Identifier: GPL-2.0-only
//! `si_pid` of signals received by linked tasks.
//!
//! The kernel fills `si_pid` with the sender's system PID (`kill`, `tkill`, `tgkill`) or
//! the child's (`SIGCHLD`). Every way a task reads a queued signal's siginfo from user
//! space except signalfd goes through `copy_siginfo_to_user`: the signal frame of an
//! `SA_SIGINFO` handler, `rt_sigtimedwait` (sigwaitinfo, sigtimedwait), and ptrace's
//! `PTRACE_GETSIGINFO`. appshot replaces that copy for linked readers and writes the
//! virtual PID, or 0 for a sender outside the AID (as a child PID namespace shows a
//! sender from an ancestor one). A signalfd `read` is translated after the original has
//! filled the caller's buffer, or buffers for `readv` ([`fix_signalfd_records`]).
//!
//! The i386 and x32 layouts go through `copy_siginfo_to_user32`, which cannot be
//! called back (it is not exported, and IBT kernels seal functions nobody takes the
//! address of). So the signal frames of i386 and x32 `SA_SIGINFO` handlers are
//! translated one step earlier: the hooks on `ia32_setup_rt_frame` and
//! `x32_setup_rt_frame` rewrite `si_pid` in the kernel's own copy of the signal (the
//! `ksignal` of this one delivery, which nothing else reads) before the frame is built
//! ([`translate_delivery`]); and the compat `rt_sigtimedwait` entries translate the
//! siginfo the original wrote into the caller's buffer ([`fix_compat_user_siginfo`]).
//! `waitid`'s siginfo is written field by field and is translated in its own handler
//! (`syscalls.rs`).
//!
//! Only kernel-made values are translated. A `sigqueue`/`rt_sigqueueinfo` sender
//! (`SI_QUEUE` and other negative codes but `SI_TKILL`) writes `si_pid` itself; that
//! value is passed on as the sender wrote it, as between PID namespaces.

use kernel::bindings;
use kernel::ffi::c_int;
use kernel::uaccess::UserSlice;

use crate::aid::Aid;
use crate::linux::glue;
use crate::table::{SystemPid, VirtualPid};

const SI_USER: i32 = bindings::SI_USER as i32;
const SI_TKILL: i32 = bindings::SI_TKILL;
const SIGCHLD: i32 = bindings::SIGCHLD as i32;

/// Whether `si_pid` of a siginfo with this signal and code is a PID the kernel wrote.
pub(crate) fn kernel_wrote_pid(signo: i32, code: i32) -> bool {
    code == SI_USER || code == SI_TKILL || (signo == SIGCHLD && code > 0 && code < 0x80)
}

/// What a task of `aid` sees as `si_pid` of a signal with this number, code and
/// `si_pid`: `None` when that is the value as it is (not a PID the kernel wrote, or one
/// the same in both ID spaces).
fn shown_pid(aid: &Aid, signo: i32, code: i32, pid: i32) -> Option<i32> {
    if pid <= 0 || !kernel_wrote_pid(signo, code) {
        return None;
    }
    let shown = aid.state.lock().pids.pid_to_virtual(SystemPid::new(pid as u32)).map_or(0, VirtualPid::raw) as i32;
    (shown != pid).then_some(shown)
}

/// Rewrites `si_pid` of `info`, the kernel's copy of a signal being delivered to a task
/// of `aid` (`ia32_setup_rt_frame`, `x32_setup_rt_frame`), before the frame is built.
///
/// # Safety
/// `info` must be the `info` of the `struct ksignal` of a delivery to the current task,
/// which only the current task uses until the hooked function returns.
pub(crate) unsafe fn translate_delivery(aid: &Aid, info: *mut bindings::kernel_siginfo) {
    let (mut signo, mut code, mut pid) = (0, 0, 0);
    // SAFETY: `info` is valid (caller); the glue reads three fields into our locals.
    unsafe { glue::appshot_glue_siginfo_fields(info, &mut signo, &mut code, &mut pid) };
    if let Some(shown) = shown_pid(aid, signo, code, pid) {
        // SAFETY: `info` is valid and this delivery's own (caller).
        unsafe { glue::appshot_glue_siginfo_set_pid(info, shown) };
    }
}

/// The compat siginfo layout (i386 and x32): `si_signo`, `si_errno`, `si_code`, then
/// `si_pid` at offset 12 (the glue asserts it).
const COMPAT_SI_PID_OFFSET: u64 = 12;

/// Rewrites `si_pid` of the compat siginfo a compat `rt_sigtimedwait` just wrote at user
/// address `at` for a task of `aid`. Another thread of the caller reading that buffer
/// before this write sees the system PID (as for `waitid`'s `si_pid`).
pub(crate) fn fix_compat_user_siginfo(aid: &Aid, at: u64) {
    let mut head = [0u8; 16];
    if UserSlice::new(at as usize, head.len()).reader().read_slice(&mut head).is_err() {
        return;
    }
    let field = |i: usize| i32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if let Some(shown) = shown_pid(aid, field(0), field(8), field(COMPAT_SI_PID_OFFSET as usize)) {
        let at = at.wrapping_add(COMPAT_SI_PID_OFFSET) as usize;
        let _ = UserSlice::new(at, 4).writer().write_slice(&shown.to_ne_bytes());
    }
}

/// Copies `from` to user memory at `to` for a task of `aid`, like `copy_siginfo_to_user`,
/// with `si_pid` translated. Returns `None` when the native copy is right as it is.
///
/// # Safety
/// `from` must point to a valid `kernel_siginfo` for the duration of the call.
pub(crate) unsafe fn copy_to_user(aid: &Aid, to: *mut kernel::ffi::c_void, from: *const bindings::kernel_siginfo) -> Option<c_int> {
    let (mut signo, mut code, mut pid) = (0, 0, 0);
    // SAFETY: `from` is valid (caller); the glue reads three fields into our locals.
    unsafe { glue::appshot_glue_siginfo_fields(from, &mut signo, &mut code, &mut pid) };
    let shown = shown_pid(aid, signo, code, pid)?;
    // SAFETY: `from` is valid (caller); the glue copies it, changes si_pid and writes the
    // copy with copy_to_user/clear_user, which check `to`.
    Some(unsafe { glue::appshot_glue_siginfo_copy_out(to, from, shown) })
}

/// `struct signalfd_siginfo`: 128 bytes, `ssi_signo`, `ssi_errno`, `ssi_code`, `ssi_pid`
/// first (not in the bindings; the glue asserts the layout).
const SIGNALFD_RECORD: usize = 128;
const SSI_PID_OFFSET: usize = 12;

/// Where a read wrote in user memory: (address, length) segments in order, as the read's
/// iterator had them (one for `read`, several for `readv`).
pub(crate) type Segments = [(usize, usize)];

/// Copies `buf.len()` bytes between the read's logical offset `at` and `buf`, across
/// segments. `false` when a byte lies outside them or its memory faults.
fn logical_copy(segments: &Segments, mut at: usize, buf: &mut [u8], write: bool) -> bool {
    let mut done = 0;
    for &(base, len) in segments {
        if done == buf.len() {
            break;
        }
        if at >= len {
            at -= len;
            continue;
        }
        let n = (len - at).min(buf.len() - done);
        let user = UserSlice::new(base.wrapping_add(at), n);
        let ok = if write {
            user.writer().write_slice(&buf[done..done + n]).is_ok()
        } else {
            user.reader().read_slice(&mut buf[done..done + n]).is_ok()
        };
        if !ok {
            return false;
        }
        done += n;
        at = 0;
    }
    done == buf.len()
}

/// Rewrites `ssi_pid` of the `len` bytes of signalfd records a read just wrote into
/// `segments`. A record the caller made unreadable in the meantime is left alone.
pub(crate) fn fix_signalfd_records(aid: &Aid, segments: &Segments, len: usize) {
    for record in (0..len / SIGNALFD_RECORD).map(|i| i * SIGNALFD_RECORD) {
        let mut head = [0u8; 16];
        if !logical_copy(segments, record, &mut head, false) {
            continue;
        }
        let field = |i: usize| i32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let Some(shown) = shown_pid(aid, field(0), field(8), field(SSI_PID_OFFSET)) else {
            continue;
        };
        logical_copy(segments, record + SSI_PID_OFFSET, &mut shown.to_ne_bytes(), true);
    }
}
