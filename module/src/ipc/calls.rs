// SPDX-License-Identifier: GPL-2.0-only
//! The SysV IPC system calls of an AID process: where each entry takes its arguments,
//! and what is translated in and out (the rules are in the module documentation).
//!
//! Entries: the x86-64 calls (which x32 reaches too, with the same structures), the
//! i386 direct calls (`semget` 393 ... `msgctl` 402, `semtimedop_time64`) and the i386
//! `ipc(2)` multiplexer, which is the only i386 way to `semop` and the one older
//! programs use for everything. Each handler is generic over the kind
//! ([`IpcKind`]), so a semaphore ID is only ever looked up in the semaphore table.

use kernel::bindings;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

use crate::aid::Aid;
use crate::hooks::Callback;
use crate::ipc::{self, IpcKind};
use crate::linux::glue;
use crate::syscalls::{read_user_i32, Abi, Call, Frame, Outcome};
use crate::table::{kind, EntryReservation};

// uapi/linux/ipc.h, sem.h, shm.h, msg.h (checked against the headers in the glue).
const IPC_PRIVATE: i32 = 0;
const IPC_CREAT: i32 = 0o1000;
const IPC_EXCL: i32 = 0o2000;
const IPC_STAT: i32 = 2;
const IPC_INFO: i32 = 3;
/// The i386 flag that asks for the 64-bit `*id64_ds` layouts (without it: the old ones).
const IPC_64: i32 = 0x100;
const GETPID: i32 = 11;
const SEM_STAT: i32 = 18;
const SEM_INFO: i32 = 19;
const SEM_STAT_ANY: i32 = 20;
const SHM_STAT: i32 = 13;
const SHM_INFO: i32 = 14;
const SHM_STAT_ANY: i32 = 15;
const MSG_STAT: i32 = 11;
const MSG_INFO: i32 = 12;
const MSG_STAT_ANY: i32 = 13;
/// An object's index is its ID modulo this (`ipcid_to_idx`).
const SEQ_MULTIPLIER: u32 = 32768;

// The ipc(2) multiplexer's calls (uapi/linux/ipc.h).
const SEMOP: u32 = 1;
const SEMGET: u32 = 2;
const SEMCTL: u32 = 3;
const SEMTIMEDOP: u32 = 4;
const MSGSND: u32 = 11;
const MSGRCV: u32 = 12;
const MSGGET: u32 = 13;
const MSGCTL: u32 = 14;
const SHMAT: u32 = 21;
const SHMGET: u32 = 23;
const SHMCTL: u32 = 24;

/// Draws of a system key before giving up with `ENOSPC` (each taken one is a 2^-32
/// chance, or an object squatting a random key).
const KEY_DRAWS: usize = 16;

/// What a control command is, for translation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `IPC_INFO`: no object named; the limits, and the highest index in use.
    Info,
    /// `SEM_INFO`, `SHM_INFO`, `MSG_INFO`: also counts of objects and their contents.
    Counts,
    /// `*_STAT`, `*_STAT_ANY`: the argument is an index, the result an ID, the buffer
    /// an object's `*_ds`.
    StatByIndex,
    /// `IPC_STAT`: the buffer is the object's `*_ds`.
    Stat,
    /// What the direct i386 `semctl` and `msgctl` make of a stat command with `IPC_64`
    /// set: they dispatch on the command without the flag but compare it whole inside,
    /// so it is an `IPC_STAT` by ID that returns the ID.
    StatReturningId,
    /// `semctl(GETPID)`: the result is a PID.
    GetPid,
    /// Every other command: only the ID is translated.
    Plain,
}

/// A kind's control commands and `*_ds` layouts.
trait Control: IpcKind {
    /// The class of `cmd` (without `IPC_64`).
    fn class(cmd: i32) -> Class;
    /// Where a `*_ds` of this kind holds PIDs, as (offset, width in bytes), for an entry
    /// of `abi` and, for i386, the 64-bit layout (`IPC_64`) or the old one.
    fn pids(abi: Abi, layout64: bool) -> &'static [(u64, usize)];
    /// Bytes of the `*_ds` the kernel writes for `IPC_STAT` through an entry of `abi`:
    /// the 64-bit layout (`layout64`: `*id64_ds`, `compat_*id64_ds`, asserted in the
    /// glue), or the old i386 one the `ipc(2)` multiplexer writes without `IPC_64`
    /// (`struct compat_*id_ds`, private to ipc/sem.c, shm.c and msg.c: checked by the
    /// guest test `bypass/ipc_i386_entries`, which looks at the byte after each).
    fn ds_size(abi: Abi, layout64: bool) -> usize;
    /// The x86-64 `*ctl` entry and its arguments for stat command `cmd` (`IPC_STAT`, or
    /// by index) of `id` into `buffer`.
    fn stat_call(id: u64, cmd: i32, buffer: u64) -> (Callback, [u64; 6]);
    /// How the kernel builds the i386 `*_ds` (the 64-bit layout or the old one) from
    /// the x86-64 `*id64_ds` (`copy_compat_*id_to_user`), field by field.
    fn compat_fields(layout64: bool) -> &'static [Field];
    /// Rewrites the counts of a `*_INFO` answer at `info` (the caller's buffer, in the
    /// layout of `abi`) to the AID's objects, whose x86-64 `*id64_ds` are `objects`.
    fn show_counts(abi: Abi, info: u64, objects: &[[u8; DS_MAX]]);
}

/// One field of an i386 `*_ds` as the kernel fills it from the x86-64 `*id64_ds`
/// (`copy_compat_*id_to_user`): `width` bytes at `to` from the `from_width` bytes at
/// `from` (an integer, truncated as C assigns it), or their upper half (`high`).
pub(crate) struct Field {
    to: u8,
    width: u8,
    from: u8,
    from_width: u8,
    high: bool,
    /// A UID or GID into 16 bits (`SET_UID`, `SET_GID`): an ID above 65535 becomes the
    /// kernel's overflow ID.
    id16: Option<IdKind>,
}

#[derive(Clone, Copy)]
enum IdKind {
    Uid,
    Gid,
}

impl Field {
    const fn copy(to: u8, width: u8, from: u8, from_width: u8) -> Field {
        Field { to, width, from, from_width, high: false, id16: None }
    }

    /// The upper 32 bits of the 64-bit time at `from`, into 4 bytes at `to`.
    const fn high(to: u8, from: u8) -> Field {
        Field { to, width: 4, from, from_width: 8, high: true, id16: None }
    }

    const fn id16(to: u8, from: u8, kind: IdKind) -> Field {
        Field { to, width: 2, from, from_width: 4, high: false, id16: Some(kind) }
    }
}

/// `ipc_perm` fields of every kind (`to_compat_ipc64_perm`, `to_compat_ipc_perm`), from
/// `ipc64_perm`: key at 0, uid 4, gid 8, cuid 12, cgid 16, mode 20 (32 bits), seq 24.
const PERM64: &[Field] = &[
    Field::copy(0, 4, 0, 4), Field::copy(4, 4, 4, 4), Field::copy(8, 4, 8, 4), Field::copy(12, 4, 12, 4),
    Field::copy(16, 4, 16, 4), Field::copy(20, 2, 20, 4), Field::copy(24, 2, 24, 2),
];
const PERM_OLD: &[Field] = &[
    Field::copy(0, 4, 0, 4), Field::id16(4, 4, IdKind::Uid), Field::id16(6, 8, IdKind::Gid),
    Field::id16(8, 12, IdKind::Uid), Field::id16(10, 16, IdKind::Gid), Field::copy(12, 2, 20, 4),
    Field::copy(14, 2, 24, 2),
];

/// The i386 `*_ds` of kind `K` (the 64-bit layout or the old one) that the kernel would
/// write for the x86-64 `*id64_ds` `ds64`, into `out` (`K::ds_size(Ia32, layout64)`
/// bytes).
fn to_compat<K: Control>(ds64: &[u8], layout64: bool, out: &mut [u8]) {
    out.fill(0);
    let perm = if layout64 { PERM64 } else { PERM_OLD };
    for f in Iterator::chain(perm.iter(), K::compat_fields(layout64)) {
        let (from, to) = (usize::from(f.from), usize::from(f.to));
        let mut bytes = [0u8; 8];
        let (Some(src), Some(dst)) = (ds64.get(from..from + usize::from(f.from_width)), out.get_mut(to..to + usize::from(f.width))) else {
            continue;
        };
        bytes[..src.len()].copy_from_slice(src);
        let mut value = u64::from_ne_bytes(bytes);
        if f.high {
            value >>= 32;
        }
        if let Some(kind) = f.id16 {
            if value & !0xffff != 0 {
                value = u64::from(glue::overflow_id(matches!(kind, IdKind::Gid)));
            }
        }
        dst.copy_from_slice(&value.to_ne_bytes()[..dst.len()]);
    }
}

/// Reads the `N` bytes at `offset` of a `*_ds`.
fn field<const N: usize>(ds: &[u8; DS_MAX], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&ds[offset..offset + N]);
    out
}

/// Writes `value` (its low `width` bytes) at `address` in user memory.
fn write_user_uint(address: u64, value: u64, width: usize) {
    let bytes = value.to_ne_bytes();
    let _ = UserSlice::new(address as usize, width).writer().write_slice(&bytes[..width]);
}

fn common_class(cmd: i32) -> Class {
    match cmd {
        IPC_STAT => Class::Stat,
        IPC_INFO => Class::Info,
        _ => Class::Plain,
    }
}

impl Control for kind::Sem {
    fn class(cmd: i32) -> Class {
        match cmd {
            SEM_STAT | SEM_STAT_ANY => Class::StatByIndex,
            SEM_INFO => Class::Counts,
            GETPID => Class::GetPid,
            _ => common_class(cmd),
        }
    }
    fn pids(_: Abi, _: bool) -> &'static [(u64, usize)] {
        &[]
    }
    fn ds_size(abi: Abi, layout64: bool) -> usize {
        match (abi, layout64) {
            // compat_ipc_perm (16), two old_time32_t, four pointers, sem_nsems; padded.
            (Abi::Ia32, false) => 44,
            (Abi::Ia32, true) => 64,
            _ => 104,
        }
    }
    fn stat_call(id: u64, cmd: i32, buffer: u64) -> (Callback, [u64; 6]) {
        (Callback::Semctl, [id, 0, cmd as u64, buffer, 0, 0])
    }
    fn compat_fields(layout64: bool) -> &'static [Field] {
        // compat_semid64_ds: otime, ctime (low and high halves), nsems; compat_semid_ds:
        // otime, ctime, four pointers (0), a 16-bit nsems. From semid64_ds: otime at 48,
        // ctime at 64, nsems at 80.
        const SEM64: &[Field] = &[
            Field::copy(36, 4, 48, 8), Field::high(40, 48), Field::copy(44, 4, 64, 8), Field::high(48, 64),
            Field::copy(52, 4, 80, 8),
        ];
        const SEM_OLD: &[Field] = &[Field::copy(16, 4, 48, 8), Field::copy(20, 4, 64, 8), Field::copy(40, 2, 80, 8)];
        if layout64 { SEM64 } else { SEM_OLD }
    }
    fn show_counts(_: Abi, info: u64, objects: &[[u8; DS_MAX]]) {
        // struct seminfo (ints): semusz at 28 (sets), semaem at 36 (semaphores); the
        // sets' sem_nsems at 80 of semid64_ds.
        let semaphores: u64 = objects.iter().map(|ds| u64::from_ne_bytes(field(ds, 80))).sum();
        write_user_uint(info + 28, objects.len() as u64, 4);
        write_user_uint(info + 36, semaphores.min(i32::MAX as u64), 4);
    }
}

impl Control for kind::Shm {
    fn class(cmd: i32) -> Class {
        match cmd {
            SHM_STAT | SHM_STAT_ANY => Class::StatByIndex,
            SHM_INFO => Class::Counts,
            _ => common_class(cmd),
        }
    }
    fn pids(abi: Abi, layout64: bool) -> &'static [(u64, usize)] {
        // shm_cpid, shm_lpid of shmid64_ds, compat_shmid64_ds, compat_shmid_ds.
        match (abi, layout64) {
            (Abi::Ia32, true) => &[(64, 4), (68, 4)],
            (Abi::Ia32, false) => &[(32, 2), (34, 2)],
            _ => &[(80, 4), (84, 4)],
        }
    }
    fn ds_size(abi: Abi, layout64: bool) -> usize {
        match (abi, layout64) {
            // compat_ipc_perm (16), shm_segsz, three times, two 16-bit PIDs, nattch,
            // unused, two pointers.
            (Abi::Ia32, false) => 48,
            (Abi::Ia32, true) => 84,
            _ => 112,
        }
    }
    fn stat_call(id: u64, cmd: i32, buffer: u64) -> (Callback, [u64; 6]) {
        (Callback::Shmctl, [id, cmd as u64, buffer, 0, 0, 0])
    }
    fn compat_fields(layout64: bool) -> &'static [Field] {
        // From shmid64_ds: segsz at 48, atime 56, dtime 64, ctime 72, cpid 80, lpid 84,
        // nattch 88. The old layout has 16-bit PIDs and nattch.
        const SHM64: &[Field] = &[
            Field::copy(36, 4, 48, 8), Field::copy(40, 4, 56, 8), Field::high(44, 56), Field::copy(48, 4, 64, 8),
            Field::high(52, 64), Field::copy(56, 4, 72, 8), Field::high(60, 72), Field::copy(64, 4, 80, 4),
            Field::copy(68, 4, 84, 4), Field::copy(72, 4, 88, 8),
        ];
        const SHM_OLD: &[Field] = &[
            Field::copy(16, 4, 48, 8), Field::copy(20, 4, 56, 8), Field::copy(24, 4, 64, 8), Field::copy(28, 4, 72, 8),
            Field::copy(32, 2, 80, 4), Field::copy(34, 2, 84, 4), Field::copy(36, 2, 88, 8),
        ];
        if layout64 { SHM64 } else { SHM_OLD }
    }
    fn show_counts(abi: Abi, info: u64, objects: &[[u8; DS_MAX]]) {
        // struct shm_info: used_ids (int) at 0, shm_tot (pages) after it: an unsigned
        // long at 8 natively, a 32-bit one at 4 in the compat layout. shm_segsz is at 48
        // of shmid64_ds. (shm_rss and shm_swp stay the kernel's: not per segment.)
        let pages: u64 = objects.iter().map(|ds| u64::from_ne_bytes(field(ds, 48)).div_ceil(PAGE_SIZE as u64)).sum();
        write_user_uint(info, objects.len() as u64, 4);
        if abi == Abi::Ia32 {
            write_user_uint(info + 4, pages.min(u64::from(u32::MAX)), 4);
        } else {
            write_user_uint(info + 8, pages, 8);
        }
    }
}

impl Control for kind::Msg {
    fn class(cmd: i32) -> Class {
        match cmd {
            MSG_STAT | MSG_STAT_ANY => Class::StatByIndex,
            MSG_INFO => Class::Counts,
            _ => common_class(cmd),
        }
    }
    fn pids(abi: Abi, layout64: bool) -> &'static [(u64, usize)] {
        // msg_lspid, msg_lrpid of msqid64_ds, compat_msqid64_ds, compat_msqid_ds.
        match (abi, layout64) {
            (Abi::Ia32, true) => &[(72, 4), (76, 4)],
            (Abi::Ia32, false) => &[(50, 2), (52, 2)],
            _ => &[(96, 4), (100, 4)],
        }
    }
    fn ds_size(abi: Abi, layout64: bool) -> usize {
        match (abi, layout64) {
            // compat_ipc_perm (16), two pointers, three times, two longs, three 16-bit
            // counts, two 16-bit PIDs; padded.
            (Abi::Ia32, false) => 56,
            (Abi::Ia32, true) => 88,
            _ => 120,
        }
    }
    fn stat_call(id: u64, cmd: i32, buffer: u64) -> (Callback, [u64; 6]) {
        (Callback::Msgctl, [id, cmd as u64, buffer, 0, 0, 0])
    }
    fn compat_fields(layout64: bool) -> &'static [Field] {
        // From msqid64_ds: stime at 48, rtime 56, ctime 64, cbytes 72, qnum 80, qbytes
        // 88, lspid 96, lrpid 100. The old layout's two pointers and two longs stay 0,
        // its counts and PIDs are 16 bits.
        const MSG64: &[Field] = &[
            Field::copy(36, 4, 48, 8), Field::high(40, 48), Field::copy(44, 4, 56, 8), Field::high(48, 56),
            Field::copy(52, 4, 64, 8), Field::high(56, 64), Field::copy(60, 4, 72, 8), Field::copy(64, 4, 80, 8),
            Field::copy(68, 4, 88, 8), Field::copy(72, 4, 96, 4), Field::copy(76, 4, 100, 4),
        ];
        const MSG_OLD: &[Field] = &[
            Field::copy(24, 4, 48, 8), Field::copy(28, 4, 56, 8), Field::copy(32, 4, 64, 8), Field::copy(44, 2, 72, 8),
            Field::copy(46, 2, 80, 8), Field::copy(48, 2, 88, 8), Field::copy(50, 2, 96, 4), Field::copy(52, 2, 100, 4),
        ];
        if layout64 { MSG64 } else { MSG_OLD }
    }
    fn show_counts(_: Abi, info: u64, objects: &[[u8; DS_MAX]]) {
        // struct msginfo (ints): msgpool at 0 (queues), msgmap at 4 (messages), msgtql at
        // 24 (bytes); msg_cbytes at 72 and msg_qnum at 80 of msqid64_ds.
        let messages: u64 = objects.iter().map(|ds| u64::from_ne_bytes(field(ds, 80))).sum();
        let bytes: u64 = objects.iter().map(|ds| u64::from_ne_bytes(field(ds, 72))).sum();
        write_user_uint(info, objects.len() as u64, 4);
        write_user_uint(info + 4, messages.min(i32::MAX as u64), 4);
        write_user_uint(info + 24, bytes.min(i32::MAX as u64), 4);
    }
}

/// Where a control command's buffer is.
#[derive(Clone, Copy)]
enum Buffer {
    /// In argument `i`.
    Arg(usize),
    /// In the 32-bit word argument `i` points to: the `semun` of the multiplexer's
    /// `SEMCTL`, which the kernel reads from there.
    SemunAt(usize),
}

/// A buffer address in the kernel's half: `copy_to_user` refuses it at its range check
/// (`EFAULT`) without touching memory. NULL would fault first, and a user-address fault
/// (the page-fault handler, the exception table, twice) costs several times the call.
const NO_BUFFER: u64 = u64::MAX & !0xfff;

/// Argument `i` replaced by the 32-bit value `value` (the kernel reads an `int`).
fn set_int(args: &mut [u64; 6], i: usize, value: i32) {
    args[i] = (args[i] & !0xffff_ffff) | u64::from(value as u32);
}

/// Whether the kernel still has object `id`: its `IPC_STAT` into [`NO_BUFFER`] fails
/// with `EFAULT` (or `EACCES` without read permission) for an object that exists, and
/// with `EINVAL` or `EIDRM` for one that does not. The kernel answers under the object's
/// lock, as for any `IPC_STAT`, which orders the answer after a removal in progress.
fn exists<K: Control>(id: u64) -> bool {
    let (function, args) = K::stat_call(id, IPC_STAT, NO_BUFFER);
    match crate::hooks::call_syscall(function, args) {
        Some(ret) => ret != -i64::from(bindings::EINVAL) && ret != -i64::from(bindings::EIDRM),
        None => true,
    }
}

/// `*get(key, ..., flags)`: the key as the AID sees it, the object bound to a virtual ID.
fn get<K: Control>(c: &Call<'_>, key_at: usize, flags_at: usize) -> Outcome {
    let limit = glue::max_entries();
    let binding = match ipc::Binding::<K>::new() {
        Ok(binding) => binding,
        Err(e) => return Outcome::Return(e.to_errno().into()),
    };
    let key = c.int_arg(key_at);
    let flags = c.int_arg(flags_at);
    let mut args = c.args();
    let removals = ipc::removals(c.registry);
    let ret = if key == IPC_PRIVATE {
        c.call(args)
    } else {
        // One binding per key, whichever process of the AID gets it first.
        let _keys = c.aid.key_lock.lock();
        match ipc::system_key(c.aid, key) {
            Some(system) => {
                set_int(&mut args, key_at, system);
                c.call(args)
            }
            // As natively for a key no object has.
            None if flags & IPC_CREAT == 0 => -i64::from(bindings::ENOENT),
            None => create_with_new_key(c, key, key_at, flags_at, flags),
        }
    };
    if ret < 0 {
        return Outcome::Return(ret);
    }
    match ipc::bind::<K>(c.registry, c.aid, ret as i32, binding, limit) {
        Ok(virtual_id) => {
            // The object may have been removed between the kernel's answer and the
            // binding (another process of the AID found it by key and removed it, or
            // root by ID): its removal hook then found no binding to drop. The binding
            // is in the owner index now, so a removal from here on drops it; one before
            // is seen here. Only when some removal ran meanwhile (`ipc::removals`) is
            // the kernel asked.
            if ipc::removals(c.registry) != removals && !exists::<K>(ret as u64) {
                ipc::unbind::<K>(c.registry, c.aid, ret as i32);
            }
            Outcome::Return(i64::from(virtual_id))
        }
        Err(e) => {
            pr_warn!(
                "AID {} '{}': no room for another {} (max_entries {}): ENOSPC\n",
                c.aid.id,
                c.aid.name_str(),
                K::NAME,
                limit
            );
            Outcome::Return(e.to_errno().into())
        }
    }
}

/// The AID's first `*get(key, IPC_CREAT)`: a new object under a random system key no
/// object of this kind has (`IPC_EXCL`), then the key bound. The caller holds
/// `Aid::key_lock`. Returns the call's result.
fn create_with_new_key(c: &Call<'_>, key: i32, key_at: usize, flags_at: usize, flags: i32) -> i64 {
    let reservation = match EntryReservation::<kind::Key>::new(GFP_KERNEL) {
        Ok(reservation) => reservation,
        Err(e) => return e.to_errno().into(),
    };
    let mut args = c.args();
    set_int(&mut args, flags_at, flags | IPC_CREAT | IPC_EXCL);
    for _ in 0..KEY_DRAWS {
        // SAFETY: get_random_u32 has no preconditions.
        let system = unsafe { bindings::get_random_u32() } as i32;
        if system == IPC_PRIVATE || ipc::system_key_taken(c.aid, system) {
            continue;
        }
        set_int(&mut args, key_at, system);
        let ret = c.call(args);
        if ret == -i64::from(bindings::EEXIST) {
            // Some process in no AID (or another AID) has an object under this key.
            continue;
        }
        if ret >= 0 {
            // Neither key is bound: the virtual one was looked up and the system one
            // drawn under `key_lock`.
            let _ = ipc::bind_key(c.aid, key, system, reservation);
        }
        return ret;
    }
    -i64::from(bindings::ENOSPC)
}

/// A call on the object named by argument `id_at` (semop, semtimedop, shmat, msgsnd,
/// msgrcv).
fn uses<K: IpcKind>(c: &Call<'_>, id_at: usize) -> Outcome {
    let mut frame = c.frame();
    uses_into::<K>(c.aid, id_at, &mut frame);
    Outcome::Return(c.call_frame(&mut frame))
}

/// [`uses`]' translation: the object's ID, in `frame`. A cached ID is written here;
/// anything else in [`uses_into_locked`], a tail call (so that the cached case saves no
/// registers).
#[inline]
fn uses_into<K: IpcKind>(aid: &Aid, id_at: usize, frame: &mut Frame) {
    match ipc::cached_system::<K>(aid, frame.int_arg(id_at)) {
        Some(system) => frame.set_int(id_at, system),
        None => uses_into_locked::<K>(aid, id_at, frame),
    }
}

/// [`uses_into`] past the cache.
#[inline(never)]
fn uses_into_locked<K: IpcKind>(aid: &Aid, id_at: usize, frame: &mut Frame) {
    let id = frame.int_arg(id_at);
    frame.set_int(id_at, ipc::to_system::<K>(aid, id));
}

/// Which kind of entry a control command came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A direct `*ctl` system call: the 64-bit `*_ds` layout, the command as given.
    Direct,
    /// The i386 `ipc(2)` multiplexer: `IPC_64` in the command asks for the 64-bit
    /// layout, without it the old one (`compat_ipc_parse_version`).
    Multiplexer,
}

/// `*ctl(id, cmd, buffer)`.
fn ctl<K: Control>(c: &Call<'_>, entry: Entry, id_at: usize, cmd_at: usize, buffer: Buffer) -> Outcome {
    let raw_cmd = c.int_arg(cmd_at);
    let (class, layout64) = match entry {
        Entry::Multiplexer => (K::class(raw_cmd & !IPC_64), raw_cmd & IPC_64 != 0),
        Entry::Direct if c.abi == Abi::Ia32 && raw_cmd & IPC_64 != 0 => match K::class(raw_cmd & !IPC_64) {
            Class::Stat | Class::StatByIndex => (Class::StatReturningId, true),
            // Refused by the kernel, or run with the ID as given: translated.
            _ => (Class::Plain, true),
        },
        Entry::Direct => (K::class(raw_cmd), true),
    };
    let mut args = c.args();
    let id = c.int_arg(id_at);
    match class {
        Class::Info | Class::Counts => {
            let ret = c.call(args);
            if ret < 0 {
                return Outcome::Return(ret);
            }
            return Outcome::Return(info::<K>(c, class, buffer_address(c, buffer)));
        }
        Class::StatByIndex => {
            // The index names an object of the AID only if one of its objects sits there;
            // any other index (an outsider's object, or none) is an unused one.
            match object_at_index::<K>(c, id) {
                Some(_) => {}
                None => return Outcome::Return(-i64::from(bindings::EINVAL)),
            }
        }
        _ => set_int(&mut args, id_at, ipc::to_system::<K>(c.aid, id)),
    }
    let stat = matches!(class, Class::Stat | Class::StatByIndex | Class::StatReturningId);
    let (ret, shown) = match (stat, buffer) {
        // The kernel writes the object's *_ds into a scratch area of the caller's stack;
        // it reaches the caller's buffer once, translated (other threads never see
        // system values there).
        (true, _) => match stat_through_scratch::<K>(c, args, buffer, layout64, X64Stat {
            id_at,
            cmd: if class == Class::StatReturningId { IPC_STAT } else { raw_cmd & !IPC_64 },
            returns_id: class == Class::StatReturningId,
        }) {
            Some(result) => result,
            None => (c.call(args), false),
        },
        _ => (c.call(args), false),
    };
    let show = |c: &Call<'_>| {
        if !shown {
            show_ds::<K>(c, buffer_address(c, buffer), layout64);
        }
    };
    match class {
        Class::StatByIndex if ret >= 0 => match ipc::to_virtual::<K>(c.aid, ret as i32) {
            Some(virtual_id) => {
                show(c);
                Outcome::Return(i64::from(virtual_id))
            }
            // Replaced meanwhile by an object outside the AID: as an unused index.
            None => Outcome::Return(-i64::from(bindings::EINVAL)),
        },
        Class::Stat if ret == 0 => {
            show(c);
            Outcome::Return(ret)
        }
        Class::StatReturningId if ret >= 0 => {
            show(c);
            // The object was found by its translated ID: it is the AID's.
            Outcome::Return(ipc::to_virtual::<K>(c.aid, ret as i32).map_or(-i64::from(bindings::EINVAL), i64::from))
        }
        Class::GetPid if ret > 0 => Outcome::Return(c.shown(ret as u32)),
        _ => Outcome::Return(ret),
    }
}

/// After a successful `IPC_INFO` or `*_INFO` (which wrote system-wide values to `info`):
/// its result, the highest index in use, becomes the highest of the AID's objects (0
/// without any, as natively), so that an enumeration by index covers them and tells
/// nothing of others; for `*_INFO` the counts become those of the AID's objects, read
/// with `IPC_STAT` of each (their `*id64_ds` through the x86-64 entry, into the scratch
/// area below the caller's stack pointer).
fn info<K: Control>(c: &Call<'_>, class: Class, info: u64) -> i64 {
    let mut ids: KVec<u32> = KVec::new();
    let mut max_index = 0;
    {
        let mut state = c.aid.state.lock();
        K::table(&mut state).for_each(|entry| {
            max_index = max_index.max(entry.system_id.raw() % SEQ_MULTIPLIER);
            true
        });
    }
    if class == Class::Counts && info != 0 {
        // The IDs, copied out of the lock (allocation first, then a bounded copy).
        let len = K::table(&mut c.aid.state.lock()).len();
        if ids.reserve(len, GFP_KERNEL).is_err() {
            return -i64::from(bindings::ENOMEM);
        }
        K::table(&mut c.aid.state.lock()).for_each(|entry| {
            // Within the reserved capacity only: never allocates under the lock.
            ids.len() < ids.capacity() && ids.push(entry.system_id.raw(), GFP_NOWAIT).is_ok()
        });
        let mut objects: KVec<[u8; DS_MAX]> = KVec::new();
        if objects.reserve(ids.len(), GFP_KERNEL).is_err() {
            return -i64::from(bindings::ENOMEM);
        }
        let Some(scratch) = (c.regs.sp as u64).checked_sub(BELOW_SP + DS_MAX as u64).map(|a| a & !63) else {
            return i64::from(max_index);
        };
        for &id in ids.iter() {
            let (function, args) = K::stat_call(u64::from(id), IPC_STAT, scratch);
            if crate::hooks::call_syscall(function, args) != Some(0) {
                // Removed meanwhile: not counted.
                continue;
            }
            let mut ds = [0u8; DS_MAX];
            let size = K::ds_size(Abi::X64, true);
            if UserSlice::new(scratch as usize, size).reader().read_slice(&mut ds[..size]).is_ok() {
                let _ = objects.push(ds, GFP_KERNEL);
            }
        }
        K::show_counts(c.abi, info, &objects);
    }
    i64::from(max_index)
}

/// The system ID of the AID's object at index `index`, if it has one there.
fn object_at_index<K: IpcKind>(c: &Call<'_>, index: i32) -> Option<i32> {
    if index < 0 {
        return None;
    }
    let mut state = c.aid.state.lock();
    let mut found = None;
    K::table(&mut state).for_each(|entry| {
        if entry.system_id.raw() % SEQ_MULTIPLIER == index as u32 {
            found = Some(entry.system_id.raw() as i32);
            return false;
        }
        true
    });
    found
}

/// The user address of a control command's buffer.
fn buffer_address(c: &Call<'_>, buffer: Buffer) -> u64 {
    match buffer {
        Buffer::Arg(i) => c.ptr_arg(i),
        Buffer::SemunAt(i) => read_user_i32(c.ptr_arg(i)).map_or(0, |address| u64::from(address as u32)),
    }
}

/// Largest `*_ds` handled (`msqid64_ds`).
const DS_MAX: usize = 120;
/// Bytes left below the caller's stack pointer before the scratch area: the x86-64 red
/// zone (128) and room to spare.
const BELOW_SP: u64 = 256;

/// A stat command with the kernel's `*_ds` redirected to a scratch area below the
/// caller's stack pointer (memory no other thread uses: the thread is in this call, and
/// the area is below even its red zone), then translated in kernel memory and copied to
/// the caller's buffer in one write. `buffer` says where the call takes the buffer's
/// address: an argument, or (the multiplexer's `SEMCTL`) a word in user memory that an
/// argument points to, read here once, and replaced for the kernel by a word in the
/// scratch area. Returns the call's result and whether the buffer was written; `None`
/// when the scratch area is not usable (the kernel could not write it: the caller's
/// buffer is then used, see [`show_ds`]).
fn stat_through_scratch<K: Control>(c: &Call<'_>, mut args: [u64; 6], buffer: Buffer, layout64: bool, x64: X64Stat) -> Option<(i64, bool)> {
    let size = K::ds_size(c.abi, layout64);
    let sp = c.regs.sp as u64;
    let scratch = sp.checked_sub(BELOW_SP + size as u64)? & !63;
    if c.abi == Abi::Ia32 && scratch > u64::from(u32::MAX) {
        // A compat entry takes 32-bit pointers, and the stack is above 4 GiB: a 64-bit
        // process making an i386 call.
        return stat_through_x64::<K>(c, &args, buffer, layout64, x64);
    }
    let user = match buffer {
        Buffer::Arg(at) => {
            args[at] = scratch;
            c.ptr_arg(at)
        }
        Buffer::SemunAt(at) => {
            // The kernel would read the caller's word once; it reads ours instead, below
            // the `*_ds`.
            let word = scratch.checked_sub(64)?;
            let user = u64::from(read_user_i32(c.ptr_arg(at))? as u32);
            if UserSlice::new(word as usize, 4).writer().write_slice(&(scratch as u32).to_ne_bytes()).is_err() {
                return None;
            }
            args[at] = word;
            user
        }
    };
    let ret = c.call(args);
    if ret == -i64::from(bindings::EFAULT) {
        return None;
    }
    if ret < 0 {
        return Some((ret, true));
    }
    // Not zeroed first (that cost a tenth of the call): only the bytes read are used.
    let mut buf = [core::mem::MaybeUninit::<u8>::uninit(); DS_MAX];
    let buf = buf.get_mut(..size)?;
    if UserSlice::new(scratch as usize, size).reader().read_raw(buf).is_err() {
        return None;
    }
    // SAFETY: `read_raw` succeeded, so it wrote every byte of `buf`; `u8` and
    // `MaybeUninit<u8>` have the same layout.
    let ds = unsafe { &mut *(buf as *mut [core::mem::MaybeUninit<u8>] as *mut [u8]) };
    translate_ds::<K>(c, ds, c.abi, layout64);
    // The one write of the caller's buffer: EFAULT for a bad one, as natively.
    match UserSlice::new(user as usize, size).writer().write_slice(ds) {
        Ok(()) => Some((ret, true)),
        Err(_) => Some((-i64::from(bindings::EFAULT), true)),
    }
}

/// How [`stat_through_x64`] makes an i386 stat command through the x86-64 entry.
#[derive(Clone, Copy)]
struct X64Stat {
    /// The argument that holds the object's (system) ID or index.
    id_at: usize,
    /// The command for the x86-64 entry (without `IPC_64`).
    cmd: i32,
    /// Whether the i386 call returns the object's ID (`IPC_STAT | IPC_64` through a
    /// direct compat entry) where the x86-64 `IPC_STAT` returns 0.
    returns_id: bool,
}

/// [`stat_through_scratch`] for an i386 call whose stack pointer is above 4 GiB (a
/// 64-bit process using `int $0x80`), where no scratch area is within reach of the
/// compat entry's 32-bit pointers: the same command goes through the x86-64 entry into
/// the scratch area, and the i386 layout the caller asked for is built from the
/// `*id64_ds` here, field by field as the kernel builds it ([`to_compat`]), then
/// written to the caller's buffer once.
fn stat_through_x64<K: Control>(c: &Call<'_>, args: &[u64; 6], buffer: Buffer, layout64: bool, x64: X64Stat) -> Option<(i64, bool)> {
    let size64 = K::ds_size(Abi::X64, true);
    let scratch = (c.regs.sp as u64).checked_sub(BELOW_SP + size64 as u64)? & !63;
    let id = u64::from(args[x64.id_at] as u32);
    // Read once (for the multiplexer's SEMCTL, the caller's semun word).
    let user = buffer_address(c, buffer);
    let (function, x64_args) = K::stat_call(id, x64.cmd, scratch);
    let ret = crate::hooks::call_syscall(function, x64_args)?;
    if ret == -i64::from(bindings::EFAULT) {
        return None;
    }
    if ret < 0 {
        return Some((ret, true));
    }
    let mut ds64 = [0u8; DS_MAX];
    UserSlice::new(scratch as usize, size64).reader().read_slice(&mut ds64[..size64]).ok()?;
    translate_ds::<K>(c, &mut ds64[..size64], Abi::X64, true);
    let size = K::ds_size(Abi::Ia32, layout64);
    let mut out = [0u8; DS_MAX];
    to_compat::<K>(&ds64[..size64], layout64, &mut out[..size]);
    let ret = if x64.returns_id { i64::from(id as u32 as i32) } else { ret };
    // The one write of the caller's buffer: EFAULT for a bad one, as natively.
    match UserSlice::new(user as usize, size).writer().write_slice(&out[..size]) {
        Ok(()) => Some((ret, true)),
        Err(_) => Some((-i64::from(bindings::EFAULT), true)),
    }
}

/// Translates a `*_ds` in kernel memory: the key of its `ipc_perm` (first in every
/// layout) and the PIDs.
fn translate_ds<K: Control>(c: &Call<'_>, ds: &mut [u8], abi: Abi, layout64: bool) {
    if let Some(key) = ds.get(0..4) {
        let key = i32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
        ds[0..4].copy_from_slice(&ipc::virtual_key(c.aid, key).to_ne_bytes());
    }
    for &(offset, width) in K::pids(abi, layout64) {
        let offset = offset as usize;
        let Some(field) = ds.get_mut(offset..offset + width) else { continue };
        if width == 4 {
            let pid = i32::from_ne_bytes([field[0], field[1], field[2], field[3]]);
            if pid > 0 {
                field.copy_from_slice(&(c.shown(pid as u32) as i32).to_ne_bytes());
            }
        } else {
            // The old i386 layouts keep 16 bits of a PID, as the kernel truncates it.
            let pid = u16::from_ne_bytes([field[0], field[1]]);
            if pid > 0 {
                field.copy_from_slice(&(c.shown(u32::from(pid)) as u16).to_ne_bytes());
            }
        }
    }
}

/// Rewrites the `*_ds` the kernel has written at `address` in the AID's terms (a call the
/// scratch area could not serve: a stack pointer too low to leave room below it, or
/// above 4 GiB for an i386 entry): read once, translated, written once. Another thread
/// of the caller reading the buffer meanwhile can see system values.
fn show_ds<K: Control>(c: &Call<'_>, address: u64, layout64: bool) {
    if address == 0 {
        return;
    }
    let size = K::ds_size(c.abi, layout64);
    let mut ds = [0u8; DS_MAX];
    if UserSlice::new(address as usize, size).reader().read_slice(&mut ds[..size]).is_err() {
        return;
    }
    translate_ds::<K>(c, &mut ds[..size], c.abi, layout64);
    let _ = UserSlice::new(address as usize, size).writer().write_slice(&ds[..size]);
}

// ---- The entries ---------------------------------------------------------------------

/// semget(key, nsems, semflg).
pub(crate) fn semget(c: &Call<'_>) -> Outcome {
    get::<kind::Sem>(c, 0, 2)
}

/// semop(semid, sops, nsops), semtimedop(semid, sops, nsops, timeout).
pub(crate) fn semop(c: &Call<'_>) -> Outcome {
    uses::<kind::Sem>(c, 0)
}

/// [`semop`]'s fast path.
pub(crate) fn semop_args(aid: &Aid, frame: &mut Frame) -> bool {
    uses_into::<kind::Sem>(aid, 0, frame);
    true
}

/// semctl(semid, semnum, cmd, arg): the buffer is the `semun` value itself.
pub(crate) fn semctl(c: &Call<'_>) -> Outcome {
    ctl::<kind::Sem>(c, Entry::Direct, 0, 2, Buffer::Arg(3))
}

/// [`semctl`]'s fast path, for the commands that only name the set (`Class::Plain`:
/// `GETVAL`, `SETALL`, `IPC_RMID`, ...); the others run the handler.
pub(crate) fn semctl_args(aid: &Aid, frame: &mut Frame) -> bool {
    ctl_args::<kind::Sem>(aid, frame, 0, 2)
}

/// The fast path of a direct `*ctl` entry (the command as given, no `IPC_64` to decode):
/// a command that takes the ID in and returns nothing to translate needs only the
/// ID.
#[inline]
fn ctl_args<K: Control>(aid: &Aid, frame: &mut Frame, id_at: usize, cmd_at: usize) -> bool {
    if K::class(frame.int_arg(cmd_at)) != Class::Plain {
        return false;
    }
    uses_into::<K>(aid, id_at, frame);
    true
}

/// shmget(key, size, shmflg).
pub(crate) fn shmget(c: &Call<'_>) -> Outcome {
    get::<kind::Shm>(c, 0, 2)
}

/// shmat(shmid, shmaddr, shmflg).
pub(crate) fn shmat(c: &Call<'_>) -> Outcome {
    uses::<kind::Shm>(c, 0)
}

/// [`shmat`]'s fast path.
pub(crate) fn shmat_args(aid: &Aid, frame: &mut Frame) -> bool {
    uses_into::<kind::Shm>(aid, 0, frame);
    true
}

/// shmctl(shmid, cmd, buf).
pub(crate) fn shmctl(c: &Call<'_>) -> Outcome {
    ctl::<kind::Shm>(c, Entry::Direct, 0, 1, Buffer::Arg(2))
}

/// [`shmctl`]'s fast path, as [`semctl_args`].
pub(crate) fn shmctl_args(aid: &Aid, frame: &mut Frame) -> bool {
    ctl_args::<kind::Shm>(aid, frame, 0, 1)
}

/// msgget(key, msgflg).
pub(crate) fn msgget(c: &Call<'_>) -> Outcome {
    get::<kind::Msg>(c, 0, 1)
}

/// msgsnd(msqid, msgp, msgsz, msgflg), msgrcv(msqid, msgp, msgsz, msgtyp, msgflg).
pub(crate) fn msgop(c: &Call<'_>) -> Outcome {
    uses::<kind::Msg>(c, 0)
}

/// [`msgop`]'s fast path.
pub(crate) fn msgop_args(aid: &Aid, frame: &mut Frame) -> bool {
    uses_into::<kind::Msg>(aid, 0, frame);
    true
}

/// msgctl(msqid, cmd, buf).
pub(crate) fn msgctl(c: &Call<'_>) -> Outcome {
    ctl::<kind::Msg>(c, Entry::Direct, 0, 1, Buffer::Arg(2))
}

/// [`msgctl`]'s fast path, as [`semctl_args`].
pub(crate) fn msgctl_args(aid: &Aid, frame: &mut Frame) -> bool {
    ctl_args::<kind::Msg>(aid, frame, 0, 1)
}

/// i386 ipc(call, first, second, third, ptr, fifth): the call's number in the low 16
/// bits (a version above), then each call's own arguments (`compat_sys_ipc`).
pub(crate) fn multiplexer(c: &Call<'_>) -> Outcome {
    match c.arg(0) as u32 & 0xffff {
        SEMOP | SEMTIMEDOP => uses::<kind::Sem>(c, 1),
        SEMGET => get::<kind::Sem>(c, 1, 3),
        SEMCTL => ctl::<kind::Sem>(c, Entry::Multiplexer, 1, 3, Buffer::SemunAt(4)),
        MSGSND | MSGRCV => uses::<kind::Msg>(c, 1),
        MSGGET => get::<kind::Msg>(c, 1, 2),
        MSGCTL => ctl::<kind::Msg>(c, Entry::Multiplexer, 1, 2, Buffer::Arg(4)),
        SHMAT => uses::<kind::Shm>(c, 1),
        SHMGET => get::<kind::Shm>(c, 1, 3),
        SHMCTL => ctl::<kind::Shm>(c, Entry::Multiplexer, 1, 2, Buffer::Arg(4)),
        // SHMDT names no object; unknown calls fail natively.
        _ => Outcome::Native,
    }
}
