//! SysV IPC objects through their system IDs: what `snapshot` reads of them and what
//! `restore` writes into new ones.
//!
//! appshotctl runs in no AID, so the IDs, keys and PIDs here are the kernel's own; turning
//! them into an application's virtual ones is `snapshot.rs`'s work. Every call is one
//! glibc wrapper with its result checked; this file and `device.rs` are the only ones with
//! `unsafe`.
//!
//! Reading leaves no trace the application can see, but one: a segment is attached
//! read-only for its copy, which the kernel records as its last attach and detach
//! (`shm_atime`, `shm_dtime`, `shm_lpid`), as it does for any reader (CRIU's dumps
//! included). Messages are read with `MSG_COPY`, which leaves the queue and its times
//! untouched.

#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;

/// The part of `ipc_perm` a snapshot keeps, in the image's type; here its `key` is the
/// system key (the snapshot turns it into the virtual one).
pub type Perm = appshot_image::IpcPerm;

fn perm_of(perm: &libc::ipc_perm) -> Perm {
    Perm {
        key: perm.__key,
        uid: perm.uid,
        gid: perm.gid,
        cuid: perm.cuid,
        cgid: perm.cgid,
        mode: u32::from(perm.mode),
    }
}

/// `semctl(IPC_STAT)`.
#[derive(Clone, Copy, Debug)]
pub struct SemStat {
    pub perm: Perm,
    pub otime: i64,
    pub ctime: i64,
    pub nsems: usize,
}

/// `shmctl(IPC_STAT)`.
#[derive(Clone, Copy, Debug)]
pub struct ShmStat {
    pub perm: Perm,
    pub size: u64,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
}

/// `msgctl(IPC_STAT)`.
#[derive(Clone, Copy, Debug)]
pub struct MsgStat {
    pub perm: Perm,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
    pub cbytes: u64,
    pub qnum: u64,
    pub qbytes: u64,
    pub lspid: i32,
    pub lrpid: i32,
}

/// The kinds of object, for the calls every kind has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sem,
    Shm,
    Msg,
}

impl Kind {
    /// For messages: "semaphore set", "shared memory segment", "message queue".
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Sem => "semaphore set",
            Kind::Shm => "shared memory segment",
            Kind::Msg => "message queue",
        }
    }
}

/// A wrapper's `-1` as the errno it set.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn sem_stat(id: i32) -> io::Result<SemStat> {
    let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
    // SAFETY: IPC_STAT writes one `semid_ds` (glibc's IPC_64 layout) to the pointer,
    // which is valid for that write.
    check(unsafe { libc::semctl(id, 0, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    let ds = unsafe { ds.assume_init() };
    Ok(SemStat {
        perm: perm_of(&ds.sem_perm),
        otime: ds.sem_otime,
        ctime: ds.sem_ctime,
        nsems: ds.sem_nsems as usize,
    })
}

/// Every semaphore's value (`GETALL`).
pub fn sem_values(id: i32, nsems: usize) -> io::Result<Vec<u16>> {
    let mut values = vec![0u16; nsems];
    // SAFETY: GETALL writes `nsems` shorts (the set's size, just read by IPC_STAT; a set
    // never changes size) to an array of that length.
    check(unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) })?;
    Ok(values)
}

/// The system PID of semaphore `index`'s last operator (`GETPID`).
pub fn sem_last_pid(id: i32, index: usize) -> io::Result<i32> {
    let index = libc::c_int::try_from(index).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: GETPID takes integers only.
    check(unsafe { libc::semctl(id, index, libc::GETPID) })
}

/// Sets every semaphore's value (`SETALL`).
pub fn sem_set_values(id: i32, values: &[u16]) -> io::Result<()> {
    // SAFETY: SETALL reads as many shorts as the set has, which is `values.len()` (the
    // caller created the set with that size).
    check(unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) }).map(drop)
}

pub fn shm_stat(id: i32) -> io::Result<ShmStat> {
    let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
    // SAFETY: IPC_STAT writes one `shmid_ds` to a pointer valid for that write.
    check(unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    let ds = unsafe { ds.assume_init() };
    Ok(ShmStat {
        perm: perm_of(&ds.shm_perm),
        size: ds.shm_segsz as u64,
        atime: ds.shm_atime,
        dtime: ds.shm_dtime,
        ctime: ds.shm_ctime,
        cpid: ds.shm_cpid,
        lpid: ds.shm_lpid,
        nattch: ds.shm_nattch,
    })
}

/// A segment attached to appshotctl, detached on drop.
struct Attached {
    address: *mut libc::c_void,
    size: usize,
}

impl Attached {
    fn new(id: i32, size: usize, flags: libc::c_int) -> io::Result<Self> {
        // SAFETY: the kernel picks the address (NULL); nothing is mapped over.
        let address = unsafe { libc::shmat(id, std::ptr::null(), flags) };
        if address as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Attached { address, size })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the segment is mapped at `address` for at least `size` bytes (its size
        // from IPC_STAT; a segment never shrinks) until `drop` detaches it. Others may
        // write it meanwhile, which only changes the bytes read.
        unsafe { std::slice::from_raw_parts(self.address.cast::<u8>(), self.size) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, attached read-write by `shm_write`, and borrowed
        // exclusively through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.address.cast::<u8>(), self.size) }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // SAFETY: `address` came from shmat and is detached once, here.
        unsafe { libc::shmdt(self.address) };
    }
}

/// Copies a segment's `size` bytes, `progress(done)` after every chunk.
pub fn shm_read(id: i32, size: u64, mut progress: impl FnMut(u64)) -> io::Result<Vec<u8>> {
    let size = usize::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    let attached = Attached::new(id, size, libc::SHM_RDONLY)?;
    let mut data = Vec::new();
    data.try_reserve_exact(size).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
    for chunk in attached.bytes().chunks(CHUNK) {
        data.extend_from_slice(chunk);
        progress(data.len() as u64);
    }
    Ok(data)
}

/// Writes `data` at the start of a segment, `progress(done)` after every chunk.
pub fn shm_write(id: i32, data: &[u8], mut progress: impl FnMut(u64)) -> io::Result<()> {
    let mut attached = Attached::new(id, data.len(), 0)?;
    let mut done = 0;
    for (to, from) in attached.bytes_mut().chunks_mut(CHUNK).zip(data.chunks(CHUNK)) {
        to.copy_from_slice(from);
        done += from.len() as u64;
        progress(done);
    }
    Ok(())
}

/// Bytes copied between two progress reports.
const CHUNK: usize = 1 << 20;

pub fn msg_stat(id: i32) -> io::Result<MsgStat> {
    let mut ds = MaybeUninit::<libc::msqid_ds>::zeroed();
    // SAFETY: IPC_STAT writes one `msqid_ds` to a pointer valid for that write.
    check(unsafe { libc::msgctl(id, libc::IPC_STAT, ds.as_mut_ptr()) })?;
    // SAFETY: zero-initialised plain data, filled by the kernel.
    let ds = unsafe { ds.assume_init() };
    Ok(MsgStat {
        perm: perm_of(&ds.msg_perm),
        stime: ds.msg_stime,
        rtime: ds.msg_rtime,
        ctime: ds.msg_ctime,
        cbytes: ds.__msg_cbytes,
        qnum: ds.msg_qnum,
        qbytes: ds.msg_qbytes,
        lspid: ds.msg_lspid,
        lrpid: ds.msg_lrpid,
    })
}

/// Every message of a queue, in order, without taking them off it (`MSG_COPY`).
/// `max_size` bounds one message's text (the queue's byte count will do).
pub fn msg_copy_all(id: i32, count: u64, max_size: usize) -> io::Result<Vec<(i64, Vec<u8>)>> {
    let header = std::mem::size_of::<libc::c_long>();
    let mut buffer = vec![0u8; header + max_size];
    let mut messages = Vec::new();
    for index in 0..count {
        let index = libc::c_long::try_from(index).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `buffer` holds a `long` type followed by `max_size` bytes of text, what
        // msgrcv may write with that size. With MSG_COPY the type argument is the index.
        let got = unsafe {
            libc::msgrcv(id, buffer.as_mut_ptr().cast(), max_size, index, libc::MSG_COPY | libc::IPC_NOWAIT)
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let mtype = libc::c_long::from_ne_bytes(buffer[..header].try_into().unwrap_or_default());
        messages.push((mtype, buffer[header..header + got as usize].to_vec()));
    }
    Ok(messages)
}

/// Queues one message (waits for room, as natively; the caller has made room).
pub fn msg_send(id: i32, mtype: i64, text: &[u8]) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(std::mem::size_of::<libc::c_long>() + text.len());
    buffer.extend_from_slice(&mtype.to_ne_bytes());
    buffer.extend_from_slice(text);
    // SAFETY: `buffer` is a `long` type followed by `text.len()` bytes, what msgsnd reads.
    check(unsafe { libc::msgsnd(id, buffer.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) }).map(drop)
}

/// Creates an object (`semget`, `shmget` or `msgget` with `flags`); `size` is the number
/// of semaphores or the segment's size.
pub fn create(kind: Kind, key: i32, size: u64, flags: i32) -> io::Result<i32> {
    let too_big = || io::Error::from_raw_os_error(libc::EINVAL);
    // SAFETY: the *get calls take integers only.
    check(unsafe {
        match kind {
            Kind::Sem => libc::semget(key, libc::c_int::try_from(size).map_err(|_| too_big())?, flags),
            Kind::Shm => libc::shmget(key, usize::try_from(size).map_err(|_| too_big())?, flags),
            Kind::Msg => libc::msgget(key, flags),
        }
    })
}

/// Sets owner, group and mode (`IPC_SET`); for a queue also its byte limit (`qbytes`,
/// raising it above `msgmnb` needs CAP_SYS_RESOURCE).
pub fn set_perm(kind: Kind, id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> io::Result<()> {
    // The mode's permission bits only: the kernel keeps the rest (SHM_LOCKED, SHM_DEST).
    let mode = (mode & 0o777) as libc::c_ushort;
    // SAFETY (each arm): IPC_STAT fills a structure of the command's type, which IPC_SET
    // then reads back; both pointers are valid for that structure.
    unsafe {
        match kind {
            Kind::Sem => {
                let mut ds = MaybeUninit::<libc::semid_ds>::zeroed();
                check(libc::semctl(id, 0, libc::IPC_STAT, ds.as_mut_ptr()))?;
                let mut ds = ds.assume_init();
                (ds.sem_perm.uid, ds.sem_perm.gid, ds.sem_perm.mode) = (uid, gid, mode);
                check(libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds))?;
            }
            Kind::Shm => {
                let mut ds = MaybeUninit::<libc::shmid_ds>::zeroed();
                check(libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()))?;
                let mut ds = ds.assume_init();
                (ds.shm_perm.uid, ds.shm_perm.gid, ds.shm_perm.mode) = (uid, gid, mode);
                check(libc::shmctl(id, libc::IPC_SET, &mut ds))?;
            }
            Kind::Msg => {
                let mut ds = MaybeUninit::<libc::msqid_ds>::zeroed();
                check(libc::msgctl(id, libc::IPC_STAT, ds.as_mut_ptr()))?;
                let mut ds = ds.assume_init();
                (ds.msg_perm.uid, ds.msg_perm.gid, ds.msg_perm.mode) = (uid, gid, mode);
                ds.msg_qbytes = qbytes;
                check(libc::msgctl(id, libc::IPC_SET, &mut ds))?;
            }
        }
    }
    Ok(())
}

/// Only a queue's byte limit (`IPC_SET` keeping owner and mode).
pub fn set_qbytes(id: i32, qbytes: u64) -> io::Result<()> {
    let stat = msg_stat(id)?;
    set_perm(Kind::Msg, id, stat.perm.uid, stat.perm.gid, stat.perm.mode, qbytes)
}

/// `IPC_RMID`.
pub fn remove(kind: Kind, id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no pointer (NULL is passed where one is accepted).
    check(unsafe {
        match kind {
            Kind::Sem => libc::semctl(id, 0, libc::IPC_RMID),
            Kind::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            Kind::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    })
    .map(drop)
}

/// `SHM_LOCK`: keep a segment's pages in memory (needs CAP_IPC_LOCK or RLIMIT_MEMLOCK).
pub fn shm_lock(id: i32) -> io::Result<()> {
    // SAFETY: SHM_LOCK takes no buffer.
    check(unsafe { libc::shmctl(id, libc::SHM_LOCK, std::ptr::null_mut()) }).map(drop)
}
