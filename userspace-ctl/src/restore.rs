//! `appshotctl restore`: bring an application back from an image, under its own name or
//! a new one (several restores of one image side by side are clones).
//!
//! The image is read and validated whole in appshotctl before anything is asked of the
//! kernel (`appshot-image`); a bad image is refused with what is wrong with it and
//! creates nothing. Then:
//!
//! 1. REGISTER the AID (refused if the name is taken: a restore never merges into a
//!    running application).
//! 2. appshotctl LINKs itself to it and creates every object as a process of the
//!    application would: for each one, NEXT_ID names the virtual ID it must get, and
//!    `semget`/`shmget`/`msgget` with the object's virtual key creates it, so appshot
//!    binds the ID and a fresh private system key exactly as for the original. The
//!    object is created with the recorded creator's effective UID and GID (so `cuid` and
//!    `cgid` come back), then filled (values, bytes, messages in order) and given the
//!    recorded owner and mode.
//! 3. With a command, appshotctl execs it, still linked: it runs as a process of the
//!    restored application. Without one, appshotctl unlinks itself.
//!
//! Any failure removes the AID with every object already created (UNREGISTER with
//! FORCE and DESTROY_IPC), and the message names the object that failed.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use appshot_image::{Image, IpcPerm};
use nix::unistd::{getegid, geteuid, setegid, seteuid, Gid, Uid};
use rustix::io::Errno;
use serde::Serialize;

use crate::device::Device;
use crate::errors::{why, Operation};
use crate::progress::Progress;
use crate::snapshot::count;
use crate::sysv::{self, Kind};
use crate::values::{AidName, PidRange, TableType};

/// Reads and checks an image file.
pub fn load(file: &Path) -> anyhow::Result<Image> {
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let image = appshot_image::read_image(&bytes).map_err(|e| anyhow!("{} is not a usable image: {e}", file.display()))?;
    for notice in &image.notices {
        eprintln!("appshotctl: {}: {notice}", file.display());
    }
    Ok(image)
}

/// What a restore made.
#[derive(Serialize)]
pub struct Restored {
    pub name: String,
    pub aid: u64,
    pub semaphore_sets: usize,
    pub segments: usize,
    pub queues: usize,
    pub messages: usize,
}

impl Restored {
    pub fn render(&self, file: &Path, json: bool) -> String {
        if json {
            return serde_json::to_string(self).map(|s| s + "\n").unwrap_or_default();
        }
        format!(
            "restored '{}' from {} as AID {}: {}, {}, {} ({})\n",
            self.name,
            file.display(),
            self.aid,
            count(self.semaphore_sets, "semaphore set", "semaphore sets"),
            count(self.segments, "segment", "segments"),
            count(self.queues, "queue", "queues"),
            count(self.messages, "message", "messages")
        )
    }
}

/// Restores `image` as `name`. On success appshotctl is linked to the new AID (the
/// caller execs the command, or unlinks).
pub fn restore(device: &Device, image: &Image, name: &AidName) -> anyhow::Result<Restored> {
    let range = image.app.pid_range.map(|(min, max)| PidRange { min, max });
    let aid = device.register(name, range).map_err(|e| match e.errno() {
        Some(Errno::EXIST) => anyhow!("an application named '{name}' exists already (a restore never replaces one; use --as NEWNAME)"),
        _ => anyhow!("{}", why(Operation::Register(name), &e)),
    })?;
    let restored = (|| -> anyhow::Result<Restored> {
        reserve_pids(device, aid, image)?;
        let me = rustix::process::getpid().as_raw_nonzero().get();
        device.link(aid, 0).map_err(|e| anyhow!("{}", why(Operation::Link(name, me), &e)).context("cannot link appshotctl to it"))?;
        create_all(device, aid, image)?;
        Ok(Restored {
            name: name.as_str().to_string(),
            aid,
            semaphore_sets: image.sems.len(),
            segments: image.shms.len(),
            queues: image.msgs.len(),
            messages: image.msgs.iter().map(|q| q.messages.len()).sum(),
        })
    })();
    if restored.is_err() {
        undo(device, aid);
    }
    restored
}

/// Reserves every virtual PID of the image's PID table in the new AID (RESERVE_PID):
/// no task of the restored application, appshotctl included, gets one of them, and a
/// restorer of its processes takes them with `clone3`'s `set_tid` (as `restore -- CMD`
/// does for the root).
fn reserve_pids(device: &Device, aid: u64, image: &Image) -> anyhow::Result<()> {
    let pids: std::collections::BTreeSet<u32> = image
        .tables
        .iter()
        .filter(|t| t.kind == appshot_image::TableKind::Pid)
        .flat_map(|t| t.entries.iter().map(|e| e.virtual_id))
        .chain(image.processes.iter().flat_map(|p| p.threads.iter().copied()))
        .collect();
    for pid in pids {
        device.reserve_pid(aid, pid, false).map_err(|e| anyhow!("cannot reserve virtual PID {pid}: {e}"))?;
    }
    Ok(())
}

/// The virtual PID of the image's root process: the lowest of those whose parent was
/// outside the application. `None` when the image records no process.
pub fn root_pid(image: &Image) -> Option<u32> {
    let pids: std::collections::BTreeSet<u32> = image.processes.iter().map(|p| p.virtual_pid).collect();
    image.processes.iter().filter(|p| !pids.contains(&p.virtual_ppid)).map(|p| p.virtual_pid).min()
}

/// Removes a half-restored application: its objects, its AID (appshotctl is unlinked
/// with it).
pub fn undo(device: &Device, aid: u64) {
    if let Err(e) = device.unregister(aid, true, true) {
        eprintln!("appshotctl: could not remove the half-restored application (AID {aid}): {e}");
    }
}

fn create_all(device: &Device, aid: u64, image: &Image) -> anyhow::Result<()> {
    let me = Creator { euid: geteuid(), egid: getegid() };
    let make = |kind, virtual_id, perm, size| create(device, aid, me, kind, virtual_id, perm, size);
    for set in &image.sems {
        let what = || format!("cannot restore semaphore set {}", set.virtual_id);
        let id = make(Kind::Sem, set.virtual_id, &set.perm, set.sems.len() as u64).with_context(what)?;
        let values: Vec<u16> = set.sems.iter().map(|s| s.value).collect();
        sysv::sem_set_values(id, &values).context("SETALL failed").with_context(what)?;
        if owner_differs(&set.perm) {
            sysv::set_perm(Kind::Sem, id, set.perm.uid, set.perm.gid, set.perm.mode, 0)
                .context("IPC_SET failed")
                .with_context(what)?;
        }
    }
    for segment in &image.shms {
        let what = || format!("cannot restore shared memory segment {}", segment.virtual_id);
        let id = make(Kind::Shm, segment.virtual_id, &segment.perm, segment.size).with_context(what)?;
        let mut progress = Progress::new(format!("writing segment {}", segment.virtual_id), segment.size);
        sysv::shm_write(id, &segment.data, |done| progress.update(done)).context("cannot write its bytes").with_context(what)?;
        if owner_differs(&segment.perm) {
            sysv::set_perm(Kind::Shm, id, segment.perm.uid, segment.perm.gid, segment.perm.mode, 0)
                .context("IPC_SET failed")
                .with_context(what)?;
        }
        if segment.perm.mode & SHM_LOCKED != 0 {
            sysv::shm_lock(id).context("SHM_LOCK failed").with_context(what)?;
        }
    }
    for queue in &image.msgs {
        let what = || format!("cannot restore message queue {}", queue.virtual_id);
        let id = make(Kind::Msg, queue.virtual_id, &queue.perm, 0).with_context(what)?;
        // Room for every message even if the limit was lowered below them, then the
        // recorded limit.
        let total: u64 = queue.messages.iter().map(|m| m.data.len() as u64).sum();
        let msgmax = fs::read_to_string("/proc/sys/kernel/msgmax").ok().and_then(|t| t.trim().parse::<u64>().ok());
        sysv::set_perm(Kind::Msg, id, queue.perm.uid, queue.perm.gid, queue.perm.mode, queue.qbytes.max(total))
            .context("IPC_SET failed")
            .with_context(what)?;
        for (index, message) in queue.messages.iter().enumerate() {
            if let Some(msgmax) = msgmax.filter(|&max| message.data.len() as u64 > max) {
                bail!(
                    "{}: message {index} holds {} bytes, more than this system's msgmax ({msgmax}; see /proc/sys/kernel/msgmax)",
                    what(),
                    message.data.len()
                );
            }
            sysv::msg_send(id, message.mtype, &message.data)
                .with_context(|| format!("cannot queue message {index}"))
                .with_context(what)?;
        }
        if total > queue.qbytes {
            sysv::set_qbytes(id, queue.qbytes).context("IPC_SET failed").with_context(what)?;
        }
    }
    Ok(())
}

/// Whether an object's owner differs from its creator: the create call set the creator
/// (as owner too) and the mode, so only then is an `IPC_SET` needed.
fn owner_differs(perm: &IpcPerm) -> bool {
    (perm.uid, perm.gid) != (perm.cuid, perm.cgid)
}

/// `SHM_LOCKED` in a segment's mode.
const SHM_LOCKED: u32 = 0o2000;

/// appshotctl's own effective IDs, read once per restore.
#[derive(Clone, Copy)]
struct Creator {
    euid: Uid,
    egid: Gid,
}

/// Creates one object with virtual ID `virtual_id` and returns that ID (which, as
/// appshotctl is linked, is what the kernel answers with).
fn create(device: &Device, aid: u64, me: Creator, kind: Kind, virtual_id: i32, perm: &IpcPerm, size: u64) -> anyhow::Result<i32> {
    let table = match kind {
        Kind::Sem => TableType::SEM,
        Kind::Shm => TableType::SHM,
        Kind::Msg => TableType::MSG,
    };
    device.next_id(aid, table, virtual_id as u32).map_err(|e| anyhow!("NEXT_ID refused {virtual_id}: {e}"))?;
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (perm.mode & 0o777) as i32;
    let id = as_creator(perm, me, || sysv::create(kind, perm.key, size, flags))?.map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) if kind == Kind::Shm => {
            anyhow!("shmget of {size} bytes failed: {e} (above this system's shmmax or shmall?)")
        }
        Some(libc::ENOSPC) => anyhow!("{e} (a system-wide limit: semmni, shmmni, msgmni or the AID's max_entries)"),
        _ => anyhow!("creating it failed: {e}"),
    })?;
    if id != virtual_id {
        // Only possible if another process of the new application bound it meanwhile.
        let _ = sysv::remove(kind, id);
        bail!("it got virtual ID {id} instead of {virtual_id}");
    }
    Ok(id)
}

/// Runs `create` with the recorded creator's effective UID and GID (the kernel records
/// them as `cuid`/`cgid`), then returns to appshotctl's own (`me`).
fn as_creator(perm: &IpcPerm, me: Creator, create: impl FnOnce() -> io::Result<i32>) -> anyhow::Result<io::Result<i32>> {
    let Creator { euid, egid } = me;
    let (cuid, cgid) = (Uid::from_raw(perm.cuid), Gid::from_raw(perm.cgid));
    if (cuid, cgid) == (euid, egid) {
        return Ok(create());
    }
    let refused = |e: nix::errno::Errno| {
        let hint = if e == nix::errno::Errno::EPERM {
            " (restoring objects created by another user needs CAP_SETUID and CAP_SETGID)"
        } else {
            ""
        };
        anyhow!("cannot act as its creator (uid {}, gid {}): {}{hint}", perm.cuid, perm.cgid, e.desc())
    };
    setegid(cgid).map_err(refused)?;
    if let Err(e) = seteuid(cuid) {
        let _ = setegid(egid);
        return Err(refused(e));
    }
    let result = create();
    // Back to our own IDs: the saved set-user-ID kept them.
    seteuid(euid).context("cannot return to appshotctl's own uid")?;
    setegid(egid).context("cannot return to appshotctl's own gid")?;
    Ok(result)
}
