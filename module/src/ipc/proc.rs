// SPDX-License-Identifier: GPL-2.0-only
//! `/proc/sysvipc/sem`, `shm` and `msg` as a process of an AID reads them: only the AID's
//! objects, with their virtual IDs, virtual keys and virtual PIDs. util-linux's `ipcs`
//! reads these files (and the system calls only without them), so this is what makes
//! `ipcs` inside an AID list exactly the AID's objects.
//!
//! The kernel prints one line per object with a show function per kind
//! (`sysvipc_sem_proc_show` ...), called through a pointer under the object's lock. Its
//! hook (filtered: only a linked reader reaches it) skips an object outside the AID
//! (nothing printed, as if it did not exist), and for one of the AID's calls the show
//! function itself, then rewrites the line it appended to the `seq_file` buffer: the
//! numbers that are IDs, keys and PIDs are replaced, each right-aligned where it ended
//! before, so the columns stay as the kernel lays them out.

use core::ptr;

use kernel::bindings;
use kernel::ffi::{c_char, c_ulong, c_void};

use crate::aid::registry::Registry;
use crate::aid::Aid;
use crate::ipc::{self, IpcKind};
use crate::linux::glue;
use crate::linux::task::Task;
use crate::table::{kind, SystemPid};

/// Longest line rewritten (the kernel's are about 200 bytes).
const LINE_MAX: usize = 512;

/// Where a kind's line holds PIDs (whitespace-separated field numbers; the key is field
/// 0 and the ID field 1 in every kind).
pub(crate) trait ProcLine: IpcKind {
    const PID_FIELDS: &'static [usize];
}

impl ProcLine for kind::Sem {
    const PID_FIELDS: &'static [usize] = &[];
}

impl ProcLine for kind::Shm {
    // key shmid perms size cpid lpid ...
    const PID_FIELDS: &'static [usize] = &[4, 5];
}

impl ProcLine for kind::Msg {
    // key msqid perms cbytes qnum lspid lrpid ...
    const PID_FIELDS: &'static [usize] = &[5, 6];
}

/// Hook on a `/proc/sysvipc` show function of kind `K`: `Some(result)` replaces the
/// call (the line skipped, or printed and rewritten), `None` lets it run (a reader in no
/// AID, or the handler's own call of it).
///
/// # Safety
/// `m` and `it` are the show function's arguments, valid for the call; `site` is that
/// function's hook site.
pub(crate) unsafe fn show<K: ProcLine>(
    registry: &Registry,
    m: *mut bindings::seq_file,
    it: *mut c_void,
    site: usize,
) -> Option<i32> {
    let task = Task::current();
    let aid = registry.tasks.lookup(task)?;
    if registry.tasks.in_original(task) {
        return None;
    }
    // SAFETY: `it` is the object being shown (caller's promise).
    let system = unsafe { glue::appshot_glue_ipc_perm_id(it) };
    let Some(virtual_id) = ipc::to_virtual::<K>(&aid, system) else {
        // Not the AID's: not there.
        return Some(0);
    };
    let (buf, before, size) = seq_state(m);
    registry.tasks.set_in_original(task, true);
    // SAFETY: the function of `site` is a show function, checked callable at load, and
    // `m`, `it` are its arguments.
    let ret = unsafe { glue::appshot_glue_call_seq_show(site as c_ulong, m, it) };
    registry.tasks.set_in_original(task, false);
    let (_, after, _) = seq_state(m);
    if ret != 0 || after <= before || after >= size || buf.is_null() {
        // An error, or the buffer overflowed (the read retries with a larger one).
        return Some(ret);
    }
    // SAFETY: the show function has just written `before..after` of the buffer, which
    // holds `size` bytes; nothing else writes it during this read.
    let line = unsafe { core::slice::from_raw_parts(buf.add(before) as *const u8, after - before) };
    let mut out = [0u8; LINE_MAX];
    let Some(n) = rewrite::<K>(&aid, line, virtual_id, &mut out) else {
        // A line of an unexpected shape: left out rather than shown with system values.
        // SAFETY: `m` is valid (caller's promise).
        unsafe { glue::appshot_glue_seq_set_count(m, before) };
        return Some(0);
    };
    if before + n >= size {
        // Longer than the room left: the seq_file overflow protocol.
        // SAFETY: as above.
        unsafe { glue::appshot_glue_seq_set_count(m, size) };
        return Some(0);
    }
    // SAFETY: `before + n < size`, inside the buffer; `out` is a local.
    unsafe {
        ptr::copy_nonoverlapping(out.as_ptr(), buf.add(before) as *mut u8, n);
        glue::appshot_glue_seq_set_count(m, before + n);
    }
    Some(0)
}

/// The seq_file's buffer, fill and size.
fn seq_state(m: *mut bindings::seq_file) -> (*mut c_char, usize, usize) {
    let (mut buf, mut count, mut size) = (ptr::null_mut(), 0, 0);
    // SAFETY: `m` is a valid seq_file (the show function's argument); the glue writes
    // the three locals.
    unsafe { glue::appshot_glue_seq_state(m, &mut buf, &mut count, &mut size) };
    (buf, count, size)
}

/// `line` (one object's line, ending in `\n`) with its key, ID and PIDs in the AID's
/// terms, into `out`; its length, or `None` for a line that is not numbers.
fn rewrite<K: ProcLine>(aid: &Aid, line: &[u8], virtual_id: i32, out: &mut [u8; LINE_MAX]) -> Option<usize> {
    let body = line.strip_suffix(b"\n")?;
    let mut len = 0;
    let mut field = 0;
    let mut at = 0;
    while at < body.len() {
        // The next token: where it starts and ends in the original line.
        let start = at + body[at..].iter().position(|&b| b != b' ')?;
        let end = start + body[start..].iter().position(|&b| b == b' ').unwrap_or(body.len() - start);
        let token = &body[start..end];
        let mut number = [0u8; 24];
        let text: &[u8] = match field {
            0 => format(&mut number, i64::from(ipc::virtual_key(aid, parse(token)? as i32))),
            1 => format(&mut number, i64::from(virtual_id)),
            f if K::PID_FIELDS.contains(&f) => format(&mut number, shown_pid(aid, parse(token)?)),
            _ => token,
        };
        // Right-aligned where the original ended, at least one space after the last.
        let gap = if len == 0 { 0 } else { 1 };
        let pad = end.saturating_sub(len + text.len()).max(gap);
        if len + pad + text.len() + 1 > out.len() {
            return None;
        }
        out[len..len + pad].fill(b' ');
        len += pad;
        out[len..len + text.len()].copy_from_slice(text);
        len += text.len();
        field += 1;
        at = end;
    }
    out[len] = b'\n';
    Some(len + 1)
}

/// A system PID as the AID shows it: its virtual PID, 0 outside (and 0 stays 0).
fn shown_pid(aid: &Aid, pid: i64) -> i64 {
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return pid;
    }
    let virtual_pid = aid.state.lock().pids.pid_to_virtual(SystemPid::new(pid as u32));
    virtual_pid.map_or(0, |v| i64::from(v.raw()))
}

/// A decimal integer token.
fn parse(token: &[u8]) -> Option<i64> {
    core::str::from_utf8(token).ok()?.parse().ok()
}

/// `value` in decimal, into `buf`.
fn format(buf: &mut [u8; 24], value: i64) -> &[u8] {
    let mut at = buf.len();
    let negative = value < 0;
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}
