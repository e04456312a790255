//! `appshotctl snapshot`: capture one consistent image of an application.
//!
//! 1. Freeze: every thread of the AID is stopped outside any system call (`quiesce.rs`).
//! 2. Capture, through the device and the kernel's own SysV calls (`sysv.rs`): the AID's
//!    tables, then each object it owns, read by system ID and put in the application's
//!    terms (virtual IDs, keys and PIDs), then each process's IDs, command line and
//!    executable.
//! 3. Either release the application (`--leave-running`, then the image is written), or
//!    write the image first and then kill the application and remove its objects and
//!    its AID (`--kill`): it then exists only in the image, which is complete on disk
//!    before anything is destroyed.
//!
//! The image is written to `FILE.tmp` in FILE's directory, synced, and renamed over
//! FILE, so FILE is never half written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use appshot_image::{
    AppRecord, Image, IpcPerm, Message, MsgQueue, ProcessRecord, SemSet, Semaphore, ShmSegment,
    TableEntry, TableKind, TableRecord,
};
use appshot_uapi::{self as uapi, AidInfo};
use serde::Serialize;

use crate::device::Device;
use crate::progress::Progress;
use crate::quiesce::{self, Frozen};
use crate::sysv::{self, Kind, Perm};
use crate::values::{AidName, TableType};

/// What happens to the application after the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// It runs on (the default).
    LeaveRunning,
    /// Its processes are killed and its objects and AID removed.
    Kill,
}

/// Takes the snapshot of `name` into `output`.
pub fn snapshot(device: &Device, name: &AidName, output: &Path, after: After, json: bool) -> anyhow::Result<String> {
    let info = device.info(name).map_err(|e| anyhow!("{}", crate::errors::why(crate::errors::Operation::Lookup(name), &e)))?;
    // A snapshot taken from inside would stop appshotctl itself. `/proc/self` names the
    // system PID (getpid would answer with a virtual one inside an AID).
    let me: u32 = fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .context("cannot read /proc/self")?;
    let pids = device.table(info.aid, TableType::PID).map_err(|e| anyhow!("cannot read the PID table: {e}"))?;
    if pids.iter().any(|e| e.system_id == me && e.owner_id != 0) {
        bail!("appshotctl runs inside '{name}' itself; take the snapshot from outside the application");
    }
    let started = Instant::now();
    let frozen = Frozen::freeze(device, info.aid, quiesce::TIMEOUT)?;
    let image = capture(device, &info, &frozen)?;
    let frozen_for = started.elapsed();
    let written = match after {
        After::LeaveRunning => {
            frozen.release();
            write_file(&image, output)?
        }
        After::Kill => {
            let written = write_file(&image, output)?;
            kill(device, &info, frozen)?;
            written
        }
    };
    let summary = Summary::of(&image, output, written, frozen_for, after);
    Ok(summary.render(json))
}

/// Reads everything the image holds while the application is frozen.
fn capture(device: &Device, info: &AidInfo, frozen: &Frozen) -> anyhow::Result<Image> {
    let table = |kind: TableType| {
        device.table(info.aid, kind).map_err(|e| anyhow!("cannot read the {kind} table: {e}"))
    };
    let pid_entries = table(TableType::PID)?;
    let key_entries = table(TableType::KEY)?;
    // Reserved PIDs have no system PID (0): they translate nothing.
    let pids = Translator::new(
        pid_entries.iter().filter(|e| e.owner_id != uapi::PID_OWNER_RESERVED).map(|e| (e.system_id, e.virtual_id)),
    );
    let keys: BTreeMap<i32, i32> = key_entries.iter().map(|e| (e.system_id as i32, e.virtual_id as i32)).collect();
    let virtual_key = |key: i32| if key == 0 { 0 } else { keys.get(&key).copied().unwrap_or(0) };
    let perm = |perm: Perm| IpcPerm { key: virtual_key(perm.key), ..perm };

    let mut image = Image {
        app: app_record(info),
        tables: Vec::new(),
        sems: Vec::new(),
        shms: Vec::new(),
        msgs: Vec::new(),
        processes: Vec::new(),
        notices: Vec::new(),
    };
    // Objects removed meanwhile (by a process outside the AID) are left out of the
    // tables as well.
    let mut gone: Vec<(TableType, u32)> = Vec::new();

    for entry in table(TableType::SEM)? {
        let (virtual_id, system) = (entry.virtual_id as i32, entry.system_id as i32);
        let read = || -> io::Result<SemSet> {
            let stat = sysv::sem_stat(system)?;
            let values = sysv::sem_values(system, stat.nsems)?;
            let mut sems = Vec::with_capacity(values.len());
            for (index, value) in values.into_iter().enumerate() {
                let last = sysv::sem_last_pid(system, index)?;
                sems.push(Semaphore { value, last_pid: pids.virtual_of(last) });
            }
            Ok(SemSet { virtual_id, system_id: system, perm: perm(stat.perm), otime: stat.otime, ctime: stat.ctime, sems })
        };
        match read() {
            Ok(set) => image.sems.push(set),
            Err(e) if removed(&e) => gone.push((TableType::SEM, entry.virtual_id)),
            Err(e) => return Err(object_error(Kind::Sem, virtual_id, system, e)),
        }
    }
    for entry in table(TableType::SHM)? {
        let (virtual_id, system) = (entry.virtual_id as i32, entry.system_id as i32);
        let read = || -> io::Result<ShmSegment> {
            let stat = sysv::shm_stat(system)?;
            let mut progress = Progress::new(format!("reading segment {virtual_id}"), stat.size);
            let data = sysv::shm_read(system, stat.size, |done| progress.update(done))?;
            Ok(ShmSegment {
                virtual_id,
                system_id: system,
                perm: perm(stat.perm),
                size: stat.size,
                atime: stat.atime,
                dtime: stat.dtime,
                ctime: stat.ctime,
                cpid: pids.virtual_of(stat.cpid),
                lpid: pids.virtual_of(stat.lpid),
                nattch: stat.nattch,
                data,
            })
        };
        match read() {
            Ok(segment) => image.shms.push(segment),
            Err(e) if removed(&e) => gone.push((TableType::SHM, entry.virtual_id)),
            Err(e) => return Err(object_error(Kind::Shm, virtual_id, system, e)),
        }
    }
    for entry in table(TableType::MSG)? {
        let (virtual_id, system) = (entry.virtual_id as i32, entry.system_id as i32);
        let read = || -> io::Result<MsgQueue> {
            let stat = sysv::msg_stat(system)?;
            // A message is never larger than the bytes queued.
            let max_size = usize::try_from(stat.cbytes.max(1)).unwrap_or(usize::MAX);
            let messages = sysv::msg_copy_all(system, stat.qnum, max_size)?
                .into_iter()
                .map(|(mtype, data)| Message { mtype, data })
                .collect();
            Ok(MsgQueue {
                virtual_id,
                system_id: system,
                perm: perm(stat.perm),
                qbytes: stat.qbytes,
                stime: stat.stime,
                rtime: stat.rtime,
                ctime: stat.ctime,
                lspid: pids.virtual_of(stat.lspid),
                lrpid: pids.virtual_of(stat.lrpid),
                messages,
            })
        };
        match read() {
            Ok(queue) => image.msgs.push(queue),
            Err(e) if removed(&e) => gone.push((TableType::MSG, entry.virtual_id)),
            Err(e) => return Err(object_error(Kind::Msg, virtual_id, system, e)),
        }
    }

    // The virtual IDs captured of each kind (one lookup per table entry).
    let sems: BTreeSet<u32> = image.sems.iter().map(|s| s.virtual_id as u32).collect();
    let shms: BTreeSet<u32> = image.shms.iter().map(|s| s.virtual_id as u32).collect();
    let msgs: BTreeSet<u32> = image.msgs.iter().map(|q| q.virtual_id as u32).collect();
    for kind in TableType::all() {
        let entries = match kind {
            k if k == TableType::PID => pid_entries.clone(),
            k if k == TableType::KEY => key_entries.clone(),
            k => table(k)?,
        };
        let table_kind = table_kind(kind);
        let entries = entries
            .iter()
            .filter(|e| !gone.contains(&(kind, e.virtual_id)))
            // An object bound after the walk above (none can be: every task is stopped)
            // would have no record; keep the table to what was captured.
            .filter(|e| match kind {
                k if k == TableType::SEM => sems.contains(&e.virtual_id),
                k if k == TableType::SHM => shms.contains(&e.virtual_id),
                k if k == TableType::MSG => msgs.contains(&e.virtual_id),
                _ => true,
            })
            .map(|e| TableEntry { virtual_id: e.virtual_id, system_id: e.system_id, owner_id: e.owner_id })
            .collect();
        image.tables.push(TableRecord { kind: table_kind, entries });
    }

    image.processes = processes(&pid_entries, &pids, frozen);
    image.validate().context("the captured state does not make a valid image")?;
    Ok(image)
}

/// The image's name for a table type.
fn table_kind(kind: TableType) -> TableKind {
    match kind.number() {
        uapi::TABLE_PID => TableKind::Pid,
        uapi::TABLE_SEM => TableKind::Sem,
        uapi::TABLE_SHM => TableKind::Shm,
        uapi::TABLE_MSG => TableKind::Msg,
        _ => TableKind::Key,
    }
}

/// Whether an object's call failed because it is gone (removed since the table was read).
fn removed(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIDRM))
}

fn object_error(kind: Kind, virtual_id: i32, system: i32, error: io::Error) -> anyhow::Error {
    anyhow!("cannot read {} {virtual_id} (system ID {system}): {error}", kind.noun())
}

fn app_record(info: &AidInfo) -> AppRecord {
    let name = crate::output::kernel_name(&info.name);
    let pid_range = (info.flags & uapi::AID_PID_RANGE != 0).then_some((info.pid_min, info.pid_max));
    let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let kernel_release = rustix::system::uname().release().to_string_lossy().chars().take(64).collect();
    AppRecord { name, pid_range, source_aid: info.aid, created_unix, kernel_release }
}

/// System PIDs to the application's virtual ones.
struct Translator(BTreeMap<u32, u32>);

impl Translator {
    fn new(pairs: impl Iterator<Item = (u32, u32)>) -> Self {
        Translator(pairs.collect())
    }

    /// The virtual PID of a system PID; 0 for one outside the AID (what the application
    /// itself is shown).
    fn virtual_of(&self, system: i32) -> u32 {
        u32::try_from(system).ok().and_then(|s| self.0.get(&s).copied()).unwrap_or(0)
    }
}

/// Each live process of the AID: IDs, threads, command line, executable.
fn processes(pid_entries: &[uapi::TableEntry], pids: &Translator, frozen: &Frozen) -> Vec<ProcessRecord> {
    let mut records = Vec::new();
    for entry in pid_entries.iter().filter(|e| e.owner_id != 0 && e.owner_id == e.system_id) {
        let tgid = entry.system_id as i32;
        if !frozen.threads.values().any(|&t| t == tgid) {
            // A zombie, or gone: nothing of it runs any more.
            continue;
        }
        let Some((ppid, pgid, sid)) = stat_ids(tgid) else { continue };
        let threads = pid_entries.iter().filter(|e| e.owner_id == entry.system_id).map(|e| e.virtual_id).collect();
        let cmdline = fs::read(format!("/proc/{tgid}/cmdline"))
            .map(|bytes| bytes.split(|&b| b == 0).filter(|a| !a.is_empty()).map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        let exe = fs::read_link(format!("/proc/{tgid}/exe")).map(|p| p.as_os_str().as_bytes().to_vec()).unwrap_or_default();
        records.push(ProcessRecord {
            virtual_pid: entry.virtual_id,
            virtual_ppid: pids.virtual_of(ppid),
            virtual_pgid: pids.virtual_of(pgid),
            virtual_sid: pids.virtual_of(sid),
            threads,
            exe,
            cmdline,
        });
    }
    records
}

/// Parent, process group and session of a process (system IDs), from `/proc/PID/stat`.
fn stat_ids(pid: i32) -> Option<(i32, i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command (which may hold anything, ')' included): state ppid pgrp session.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(1);
    let mut next = || fields.next()?.parse::<i32>().ok();
    Some((next()?, next()?, next()?))
}

/// Writes the image next to `output`, syncs it and renames it into place; returns its
/// size.
fn write_file(image: &Image, output: &Path) -> anyhow::Result<u64> {
    let temporary = temporary_path(output);
    let result = (|| -> anyhow::Result<u64> {
        let file = File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        appshot_image::write_image(image, &mut writer).with_context(|| format!("cannot write {}", temporary.display()))?;
        let file = writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", temporary.display()))?;
        file.sync_all().with_context(|| format!("cannot write {}", temporary.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        fs::rename(&temporary, output).with_context(|| format!("cannot rename {} to {}", temporary.display(), output.display()))?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

fn temporary_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    output.with_file_name(name)
}

/// `--kill`: SIGKILL every process while it is still stopped, let the kernel deliver it,
/// then remove the AID with its objects.
fn kill(device: &Device, info: &AidInfo, frozen: Frozen) -> anyhow::Result<()> {
    let processes: std::collections::BTreeSet<i32> = frozen.threads.values().copied().collect();
    for &pid in &processes {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    frozen.release();
    // The processes die at once; their parents reap them when they will. UNREGISTER
    // with FORCE unlinks what is left (zombies not yet reaped).
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    device
        .unregister(info.aid, true, true)
        .map_err(|e| anyhow!("the image is written, but removing the application failed: {e}"))
}

/// Whether a process still runs (not a zombie, not gone).
fn is_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

/// What `snapshot` prints.
#[derive(Serialize)]
struct Summary {
    name: String,
    file: String,
    bytes: u64,
    processes: usize,
    threads: usize,
    semaphore_sets: usize,
    segments: usize,
    segment_bytes: u64,
    queues: usize,
    messages: usize,
    frozen_ms: u128,
    killed: bool,
}

impl Summary {
    fn of(image: &Image, output: &Path, bytes: u64, frozen: Duration, after: After) -> Self {
        Summary {
            name: image.app.name.clone(),
            file: output.display().to_string(),
            bytes,
            processes: image.processes.len(),
            threads: image.processes.iter().map(|p| p.threads.len()).sum(),
            semaphore_sets: image.sems.len(),
            segments: image.shms.len(),
            segment_bytes: image.shms.iter().map(|s| s.size).sum(),
            queues: image.msgs.len(),
            messages: image.msgs.iter().map(|q| q.messages.len()).sum(),
            frozen_ms: frozen.as_millis(),
            killed: after == After::Kill,
        }
    }

    fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string(self).map(|s| s + "\n").unwrap_or_default();
        }
        let mut text = format!(
            "snapshot of '{}' written to {} ({} bytes): {}, {}, {}, {} ({} bytes), {} ({}); frozen for {} ms\n",
            self.name,
            self.file,
            self.bytes,
            count(self.processes, "process", "processes"),
            count(self.threads, "thread", "threads"),
            count(self.semaphore_sets, "semaphore set", "semaphore sets"),
            count(self.segments, "segment", "segments"),
            self.segment_bytes,
            count(self.queues, "queue", "queues"),
            count(self.messages, "message", "messages"),
            self.frozen_ms
        );
        if self.killed {
            text.push_str(&format!("'{}' was killed and removed; it exists only in {}\n", self.name, self.file));
        }
        text
    }
}

/// "1 queue", "3 queues".
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Refuses a caller without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE: snapshot and
/// restore are checkpoint operations. (The kernel checks the rest itself: ptrace rights
/// over every task, and read permission on every object.)
pub fn check_privilege() -> anyhow::Result<()> {
    let caps = rustix::thread::capabilities(None).context("cannot read appshotctl's capabilities")?;
    let wanted = rustix::thread::CapabilitySet::SYS_ADMIN | rustix::thread::CapabilitySet::CHECKPOINT_RESTORE;
    if caps.effective.intersects(wanted) {
        Ok(())
    } else {
        bail!("{}", crate::errors::NEEDS_PRIVILEGE)
    }
}
