//! SysV IPC (issue #10) as unmodified programs see it: outside every AID nothing changes
//! while AIDs exist (IDs are the kernel's, util-linux's `ipcmk`, `ipcs` and `ipcrm`
//! agree with the system calls); inside an AID the same programs get the same answers but
//! for IDs and PIDs, keys are private to the AID, no other object is reachable by ID,
//! and an object's binding lives exactly as long as the object.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture, Flavor};
use crate::check::{expect_errno, step_timeout, Errno};
use crate::cmd;
use crate::fixtures::{GO, READY};
use crate::ensure_eq;
use appshot_uapi as uapi;

pub const TESTS: &[Test] = &[
    Test::new(
        "ipc/util_linux_tools_outside_any_aid",
        util_linux_tools_outside_any_aid,
    ).costs(6),
    Test::new("ipc/ipcprobe_outside_any_aid", ipcprobe_outside_any_aid),
    Test::new("ipc/ipcprobe_inside_aid", ipcprobe_inside_aid),
    Test::new("ipc/keys_private_to_each_aid", keys_private_to_each_aid),
    Test::new("ipc/foreign_ids_unreachable", foreign_ids_unreachable),
    Test::new(
        "ipc/objects_leave_the_table_when_removed",
        objects_leave_the_table_when_removed,
    ),
    Test::new("ipc/unregister_with_objects", unregister_with_objects),
    Test::new("ipc/util_linux_tools_inside_aid", util_linux_tools_inside_aid).costs(15),
    Test::new(
        "ipc/producer_consumer_four_processes",
        producer_consumer_four_processes,
    ),
    Test::new("ipc/races_two_aids_and_root", races_two_aids_and_root).costs(13),
    Test::new(
        "ipc/stat_buffer_never_holds_system_values",
        stat_buffer_never_holds_system_values,
    ),
    Test::new("ipc/info_counts_only_the_aid", info_counts_only_the_aid),
    Test::new(
        "ipc/removed_id_never_reaches_its_next_owner",
        removed_id_never_reaches_its_next_owner,
    ),
    Test::new(
        "ipc/next_id_chooses_the_next_virtual_id",
        next_id_chooses_the_next_virtual_id,
    ),
];

/// `ipcprobe` (qemu-tests/c/), static and dynamic glibc builds.
const IPC_PROBES: [&str; 2] = [
    "/usr/libexec/appshot/ipcprobe-static",
    "/usr/libexec/appshot/ipcprobe-dynamic",
];

/// What `ipcprobe` prints natively for every key that is neither an ID nor a PID: the
/// values (and errno values, as -errno) of every command it runs. Inside an AID the
/// same must come out (issue #10).
const IPCPROBE_NATIVE: &[(&str, i64)] = &[
    ("sem_setval", 0),
    ("sem_getval", 7),
    ("sem_setall", 0),
    ("sem_getall", 0),
    ("sem_getall_0", 3),
    ("sem_getall_1", 4),
    ("sem_semop_up", 0),
    ("sem_getval_after_up", 4),
    ("sem_getncnt", 0),
    ("sem_getzcnt", 0),
    ("sem_semop_nowait", -(libc::EAGAIN as i64)),
    ("sem_semtimedop_timeout", -(libc::EAGAIN as i64)),
    ("sem_ipc_stat", 0),
    ("sem_nsems", 2),
    ("sem_ipc_set", 0),
    ("sem_ipc_stat_2", 0),
    ("sem_mode", 0o640),
    ("sem_ipc_info_nonneg", 1),
    ("sem_sem_info_nonneg", 1),
    ("sem_semusz_positive", 1),
    ("sem_stat_finds_it", 1),
    ("sem_bad_id_getval", -(libc::EINVAL as i64)),
    ("sem_bad_semnum", -(libc::EINVAL as i64)),
    ("sem_bad_cmd", -(libc::EINVAL as i64)),
    ("sem_get_too_many", -(libc::EINVAL as i64)),
    ("sem_ipc_rmid", 0),
    ("sem_getval_removed", -(libc::EINVAL as i64)),
    ("sem_semop_removed", -(libc::EINVAL as i64)),
    ("shm_shmat_ok", 1),
    ("shm_ipc_stat", 0),
    ("shm_segsz", 4096),
    ("shm_nattch", 1),
    ("shm_ipc_set", 0),
    ("shm_ipc_stat_2", 0),
    ("shm_mode", 0o640),
    ("shm_lock", 0),
    ("shm_unlock", 0),
    ("shm_ipc_info_nonneg", 1),
    ("shm_shm_info_nonneg", 1),
    ("shm_stat_finds_it", 1),
    ("shm_bad_id_stat", -(libc::EINVAL as i64)),
    ("shm_bad_cmd", -(libc::EINVAL as i64)),
    ("shm_ipc_rmid", 0),
    ("shm_still_readable", 1),
    ("shm_shmdt", 0),
    ("shm_stat_removed", -(libc::EINVAL as i64)),
    ("shm_shmat_removed_ok", 0),
    ("msg_msgsnd", 0),
    ("msg_ipc_stat", 0),
    ("msg_qnum", 1),
    ("msg_copy_0", 64),
    ("msg_copy_1", -(libc::ENOMSG as i64)),
    ("msg_msgrcv", 64),
    ("msg_type", 5),
    ("msg_same_bytes", 1),
    ("msg_ipc_stat_2", 0),
    ("msg_msgrcv_empty", -(libc::ENOMSG as i64)),
    ("msg_ipc_set", 0),
    ("msg_ipc_stat_3", 0),
    ("msg_mode", 0o640),
    ("msg_ipc_info_nonneg", 1),
    ("msg_msg_info_nonneg", 1),
    ("msg_stat_finds_it", 1),
    ("msg_bad_id_stat", -(libc::EINVAL as i64)),
    ("msg_bad_cmd", -(libc::EINVAL as i64)),
    ("msg_bad_size", -(libc::EINVAL as i64)),
    ("msg_ipc_rmid", 0),
    ("msg_msgsnd_removed", -(libc::EINVAL as i64)),
];

/// The kinds of SysV object: `ipcmk` option and argument, the words of its answer,
/// `ipcs`/`ipcrm` option.
struct Kind {
    what: &'static str,
    make: &'static [&'static str],
    answer: &'static str,
    option: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind { what: "semaphore set", make: &["-S", "3"], answer: "Semaphore id:", option: "-s" },
    Kind { what: "shared memory segment", make: &["-M", "4096"], answer: "Shared memory id:", option: "-m" },
    Kind { what: "message queue", make: &["-Q"], answer: "Message queue id:", option: "-q" },
];

/// What the `*ctl(IPC_STAT)` system call says of object `id` of `kind`: 0 or an errno.
fn stat(kind: &Kind, id: i32) -> i32 {
    // SAFETY: each call writes at most its own *_ds structure into a zeroed local.
    let r = unsafe {
        match kind.option {
            "-s" => {
                let mut ds: libc::semid_ds = std::mem::zeroed();
                libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds)
            }
            "-m" => {
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                libc::shmctl(id, libc::IPC_STAT, &mut ds)
            }
            _ => {
                let mut ds: libc::msqid_ds = std::mem::zeroed();
                libc::msgctl(id, libc::IPC_STAT, &mut ds)
            }
        }
    };
    if r < 0 { Errno::last().0 } else { 0 }
}

/// Outside any AID, while an AID exists: `ipcmk` creates each kind of object and prints
/// its ID, which the system call and `ipcs -i` both know; `ipcrm` removes it, after
/// which neither does.
fn util_linux_tools_outside_any_aid() -> Result<()> {
    let _aid = AidFixture::new("ipc-tools", Flavor::Range)?;
    for kind in &KINDS {
        let mut argv = vec!["/usr/bin/ipcmk"];
        argv.extend(kind.make);
        let out = cmd::run(&argv, step_timeout())?.ok()?;
        let id: i32 = out
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(kind.answer))
            .and_then(|rest| rest.trim().parse().ok())
            .with_context(|| format!("`{}` printed no {:?}: {:?}", argv.join(" "), kind.answer, out.stdout))?;
        let r = stat(kind, id);
        if r != 0 {
            bail!("IPC_STAT of the {} {id} that ipcmk made: {}", kind.what, Errno(r));
        }
        let id_text = id.to_string();
        let shown = cmd::run(&["/usr/bin/ipcs", kind.option, "-i", &id_text], step_timeout())?.ok()?;
        if !shown.stdout.contains(&format!("id={id}")) {
            bail!("`ipcs {} -i {id}` does not show the {} {id}: {:?}", kind.option, kind.what, shown.stdout);
        }
        cmd::run(&["/usr/bin/ipcrm", kind.option, &id_text], step_timeout())?.ok()?;
        let r = stat(kind, id);
        if r != libc::EINVAL && r != libc::EIDRM {
            bail!("IPC_STAT of the removed {} {id}: {} (want EINVAL)", kind.what, Errno(r));
        }
        let gone = cmd::run(&["/usr/bin/ipcs", kind.option, "-i", &id_text], step_timeout())?;
        if gone.success() && gone.stdout.contains(&format!("id={id}")) {
            bail!("`ipcs {} -i {id}` still shows the removed {}: {:?}", kind.option, kind.what, gone.stdout);
        }
    }
    Ok(())
}

/// `key=value` lines as a map; every value a number.
fn parse(out: &str) -> Result<BTreeMap<String, i64>> {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        let (key, value) = line.split_once('=').with_context(|| format!("line {line:?}"))?;
        let value = value.parse().with_context(|| format!("line {line:?}"))?;
        if map.insert(key.to_string(), value).is_some() {
            bail!("{key} printed twice");
        }
    }
    Ok(map)
}

/// Outside any AID, while an AID exists: every SysV command `ipcprobe` runs gives what
/// the kernel gives natively (the table above), the objects get IDs, and every PID the
/// kernel records (`GETPID`, `shm_cpid`/`shm_lpid`, `msg_lspid`/`msg_lrpid`) is the
/// caller's own.
fn ipcprobe_outside_any_aid() -> Result<()> {
    let _aid = AidFixture::new("ipcprobe", Flavor::Range)?;
    for probe in IPC_PROBES {
        let out = cmd::run(&[probe], step_timeout())?.ok()?;
        check_probe(probe, &out.stdout, None)?;
    }
    Ok(())
}

/// Checks what `probe` printed against [`IPCPROBE_NATIVE`]: every value the same, every
/// recorded PID the probe's own, every ID an ID. `range`: the probe ran in an AID with
/// this PID range, so its PID comes from it.
fn check_probe(probe: &str, out: &str, range: Option<(u32, u32)>) -> Result<()> {
    let seen = parse(out).with_context(|| probe.to_string())?;
    let value = |key: &str| seen.get(key).copied().with_context(|| format!("{probe}: no {key}"));
    for &(key, want) in IPCPROBE_NATIVE {
        ensure_eq!(value(key)?, want, "{probe}: {key}");
    }
    let pid = value("pid")?;
    if range.is_some() {
        crate::virt::expect_in_range(pid, range, "the probe's getpid")?;
    }
    for key in ["sem_getpid_pid", "shm_cpid_pid", "shm_lpid_pid", "msg_lspid_pid", "msg_lrpid_pid"] {
        ensure_eq!(value(key)?, pid, "{probe}: {key} (the caller's PID)");
    }
    for key in ["sem_id", "shm_id", "msg_id"] {
        let id = value(key)?;
        if id < 0 {
            bail!("{probe}: {key} = {id}");
        }
    }
    // Nothing unexpected: every key is one of the above.
    let known = IPCPROBE_NATIVE.len() + 1 + 5 + 3;
    ensure_eq!(seen.len(), known, "{probe}: keys printed ({:?})", seen.keys().collect::<Vec<_>>());
    Ok(())
}

/// issue #10 section 1: every SysV command `ipcprobe` runs gives inside an AID what it
/// gives natively but for IDs and PIDs: its IDs are the AID's virtual ones, every PID
/// the kernel records (GETPID, shm_cpid/shm_lpid, msg_lspid/msg_lrpid) is the probe's
/// virtual PID, and the errno of every bad argument is the native one. Afterwards the
/// AID's tables hold nothing (the probe removed every object).
fn ipcprobe_inside_aid() -> Result<()> {
    for_each_flavor("ipcprobe-in", |fx| {
        let range = fx.range();
        fx.spawn(move |_| {
            for probe in IPC_PROBES {
                let out = cmd::run(&[probe], step_timeout())?.ok()?;
                check_probe(probe, &out.stdout, range).context("in the AID")?;
            }
            Ok(())
        })?
        .finish(step_timeout())?;
        let info = fx.dev.info(fx.aid())?;
        for (table, name) in [(uapi::TABLE_SEM, "semaphore"), (uapi::TABLE_MSG, "message queue")] {
            ensure_eq!(
                info.table_sizes[table as usize],
                0,
                "{name} entries left in the AID after the probes removed every object"
            );
        }
        Ok(())
    })
}

/// `semget(key, 1, flags)`, as a value or -errno.
fn semget(key: i32, flags: i32) -> i64 {
    // SAFETY: semget takes integers only.
    let r = unsafe { libc::semget(key, 1, flags) };
    if r < 0 { -(Errno::last().0 as i64) } else { r as i64 }
}

/// `semctl(id, 0, GETVAL)` or `semctl(id, 0, SETVAL, value)`, as a value or -errno.
fn semval(id: i64, set: Option<i32>) -> i64 {
    // SAFETY: GETVAL/SETVAL take integers only (SETVAL's semun is the int).
    let r = unsafe {
        match set {
            None => libc::semctl(id as i32, 0, libc::GETVAL),
            Some(v) => libc::semctl(id as i32, 0, libc::SETVAL, v),
        }
    };
    if r < 0 { -(Errno::last().0 as i64) } else { r as i64 }
}

/// `semctl(id, 0, IPC_RMID)`, as 0 or -errno.
fn semrm(id: i64) -> i64 {
    // SAFETY: IPC_RMID takes no buffer.
    let r = unsafe { libc::semctl(id as i32, 0, libc::IPC_RMID) };
    if r < 0 { -(Errno::last().0 as i64) } else { 0 }
}

/// A key no test uses elsewhere.
const SHARED_KEY: i32 = 0x4150_5331;

/// issue #10 section 3: a key names an object private to each AID. A process in no AID,
/// and processes of two AIDs (with and without a PID range) all `semget` one key: three
/// sets, each keeping its own value; within an AID the key finds its set again and
/// `IPC_CREAT | IPC_EXCL` is `EEXIST`; a key only an outsider has is `ENOENT` inside an
/// AID without `IPC_CREAT`.
fn keys_private_to_each_aid() -> Result<()> {
    let outside = semget(SHARED_KEY, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
    if outside < 0 {
        bail!("premise: semget({SHARED_KEY:#x}) outside every AID = {}", Errno(-outside as i32));
    }
    let result = (|| -> Result<()> {
        ensure_eq!(semval(outside, Some(11)), 0, "SETVAL outside");
        let only_outside = semget(SHARED_KEY + 1, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
        ensure!(only_outside >= 0, "premise: semget({:#x}) outside = {only_outside}", SHARED_KEY + 1);
        let mut agents = Vec::new();
        let fixtures = [AidFixture::new("keys-a", Flavor::Range)?, AidFixture::new("keys-b", Flavor::NoRange)?];
        for (fx, value) in fixtures.iter().zip([22, 33]) {
            let agent = fx.spawn(move |chan| {
                let id = semget(SHARED_KEY, libc::IPC_CREAT | 0o600);
                ensure!(id >= 0, "semget({SHARED_KEY:#x}, IPC_CREAT) in the AID = {id}");
                ensure_eq!(semval(id, None), 0, "GETVAL of the AID's new set (not the outsider's 11)");
                ensure_eq!(semval(id, Some(value)), 0, "SETVAL in the AID");
                ensure_eq!(semget(SHARED_KEY, 0), id, "semget of the key again, in the AID");
                ensure_eq!(
                    semget(SHARED_KEY, libc::IPC_CREAT | libc::IPC_EXCL | 0o600),
                    -(libc::EEXIST as i64),
                    "semget(IPC_CREAT | IPC_EXCL) of the AID's key"
                );
                ensure_eq!(
                    semget(SHARED_KEY + 1, 0),
                    -(libc::ENOENT as i64),
                    "semget of a key only a process outside the AID has"
                );
                chan.send(READY)?;
                // Both AIDs hold their sets at once; then each checks its value again.
                chan.recv(step_timeout())?;
                ensure_eq!(semval(id, None), value as i64, "GETVAL in the AID after the other AID set its own");
                ensure_eq!(semrm(id), 0, "IPC_RMID in the AID");
                Ok(())
            })?;
            agents.push(agent);
        }
        for agent in &mut agents {
            ensure_eq!(agent.recv_step()?, READY, "an AID's agent");
        }
        for agent in &agents {
            agent.send(GO)?;
        }
        for agent in agents {
            agent.finish(step_timeout())?;
        }
        ensure_eq!(semval(outside, None), 11, "GETVAL outside after both AIDs used the key");
        ensure_eq!(semget(SHARED_KEY, 0), outside, "semget of the key outside, after the AIDs");
        semrm(only_outside);
        Ok(())
    })();
    semrm(outside);
    result
}

/// issue #10 section 1: an AID process reaches only its AID's objects by ID. The system
/// ID of an outsider's set, a set of another AID (by the ID that AID's process sees) and
/// a set the AID removed are all `EINVAL` (as natively for an ID no object has), while
/// the AID's own set works.
fn foreign_ids_unreachable() -> Result<()> {
    let outside = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o666);
    ensure!(outside >= 0, "premise: semget outside = {outside}");
    let result = (|| -> Result<()> {
        ensure_eq!(semval(outside, Some(5)), 0, "SETVAL outside");
        let other = AidFixture::new("foreign-b", Flavor::NoRange)?;
        let mut holder = other.spawn(|chan| {
            let id = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o666);
            ensure!(id >= 0, "semget in the other AID = {id}");
            chan.send(id)?;
            chan.recv(step_timeout())?;
            semrm(id);
            Ok(())
        })?;
        let theirs = holder.recv_step()?;
        for_each_flavor("foreign-a", |fx| {
            fx.spawn(move |_| {
                let own = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
                ensure!(own >= 0, "semget in the AID = {own}");
                ensure_eq!(semval(own, Some(3)), 0, "SETVAL on the AID's own set");
                for (what, id) in [("a set outside every AID", outside), ("another AID's set", theirs)] {
                    if id != own {
                        ensure_eq!(semval(id, None), -(libc::EINVAL as i64), "GETVAL of {what} (ID {id})");
                        ensure_eq!(semval(id, Some(9)), -(libc::EINVAL as i64), "SETVAL of {what} (ID {id})");
                        ensure_eq!(semrm(id), -(libc::EINVAL as i64), "IPC_RMID of {what} (ID {id})");
                    }
                }
                ensure_eq!(semrm(own), 0, "IPC_RMID of the AID's set");
                ensure_eq!(semval(own, None), -(libc::EINVAL as i64), "GETVAL of the removed set");
                Ok(())
            })?
            .finish(step_timeout())
        })?;
        holder.send(GO)?;
        holder.finish(step_timeout())?;
        ensure_eq!(semval(outside, None), 5, "the outsider's value after the AIDs tried it");
        Ok(())
    })();
    semrm(outside);
    result
}

/// The AID's entries of `table` (`uapi::TABLE_SEM`...): (virtual, system) pairs.
fn ipc_entries(fx: &AidFixture, table: u32) -> Result<Vec<(u32, u32)>> {
    let entries = fx.dev.table(fx.aid(), table).with_context(|| format!("TABLE {table} of AID {}", fx.aid()))?;
    Ok(entries.iter().map(|e| (e.virtual_id, e.system_id)).collect())
}

/// issue #10 section 4: objects outlive their creators and leave the AID's table only
/// when the kernel removes them, whoever removes them. A set whose creator has exited
/// stays bound (the creator's ID still reaches it from a new process of the AID); root
/// removing it from outside drops the binding (a new process of the AID gets EINVAL);
/// a segment removed while attached keeps its binding (IPC_STAT and shmat by its ID
/// still work, as natively) until its last detach.
fn objects_leave_the_table_when_removed() -> Result<()> {
    for_each_flavor("ipc-lifetime", |fx| {
        // A set made by a process that then exits.
        let mut maker = fx.spawn(|chan| {
            let id = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
            ensure!(id >= 0, "semget = {id}");
            ensure_eq!(semval(id, Some(8)), 0, "SETVAL");
            chan.send(id)?;
            Ok(())
        })?;
        let virtual_id = maker.recv_step()?;
        maker.finish(step_timeout())?;
        let sems = ipc_entries(fx, uapi::TABLE_SEM)?;
        ensure!(
            sems.len() == 1 && i64::from(sems[0].0) == virtual_id,
            "the AID's semaphore table after its creator exited: {sems:?} (want virtual ID {virtual_id})"
        );
        let system_id = sems[0].1 as i64;
        fx.spawn(move |_| {
            ensure_eq!(semval(virtual_id, None), 8, "GETVAL by the exited creator's ID, from a new process");
            Ok(())
        })?
        .finish(step_timeout())?;
        // Root removes it from outside every AID.
        ensure_eq!(semrm(system_id), 0, "IPC_RMID of the AID's set by its system ID, outside");
        ensure_eq!(ipc_entries(fx, uapi::TABLE_SEM)?, vec![], "the AID's semaphore table after the removal outside");
        fx.spawn(move |_| {
            ensure_eq!(semval(virtual_id, None), -(libc::EINVAL as i64), "GETVAL of the removed set");
            Ok(())
        })?
        .finish(step_timeout())?;
        // A segment removed while attached.
        let mut holder = fx.spawn(|chan| {
            // SAFETY: shmget/shmat/shmctl on a private segment of ours.
            unsafe {
                let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
                ensure!(id >= 0, "shmget: {}", Errno::last());
                let at = libc::shmat(id, std::ptr::null(), 0);
                ensure!(at as isize != -1, "shmat: {}", Errno::last());
                ensure_eq!(libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()), 0, "IPC_RMID while attached");
                chan.send(id as i64)?;
                chan.recv(step_timeout())?;
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                ensure_eq!(libc::shmctl(id, libc::IPC_STAT, &mut ds), 0, "IPC_STAT of the removed, attached segment");
                ensure_eq!(ds.shm_nattch, 1, "its attach count");
                ensure_eq!(libc::shmdt(at), 0, "shmdt");
                ensure_eq!(libc::shmctl(id, libc::IPC_STAT, &mut ds), -1, "IPC_STAT after the last detach");
                ensure_eq!(Errno::last().0, libc::EINVAL, "its errno");
            }
            Ok(())
        })?;
        holder.recv_step()?;
        ensure_eq!(ipc_entries(fx, uapi::TABLE_SHM)?.len(), 1, "shared memory entries while the removed segment is attached");
        holder.send(GO)?;
        holder.finish(step_timeout())?;
        ensure_eq!(ipc_entries(fx, uapi::TABLE_SHM)?, vec![], "the AID's shared memory table after the last detach");
        Ok(())
    })
}

/// issue #10 section 4: UNREGISTER refuses (ENOTEMPTY) while the AID has objects, even
/// with FORCE; with DESTROY_IPC it removes them from the system too. appshotctl says so.
fn unregister_with_objects() -> Result<()> {
    let fx = AidFixture::new("ipc-unreg", Flavor::Range)?;
    fx.spawn(|_| {
        // SAFETY: msgget takes integers only.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        ensure!(id >= 0, "msgget: {}", Errno::last());
        Ok(())
    })?
    .finish(step_timeout())?;
    let msgs = ipc_entries(&fx, uapi::TABLE_MSG)?;
    ensure_eq!(msgs.len(), 1, "message queues of the AID after its process exited");
    let system_id = msgs[0].1 as i32;
    let refused = fx.dev.unregister(fx.aid(), uapi::UNREGISTER_FORCE);
    ensure!(
        refused == Err(Errno(libc::ENOTEMPTY)),
        "UNREGISTER (FORCE) of an AID with a message queue: {refused:?} (want ENOTEMPTY)"
    );
    let out = cmd::run(&["/usr/bin/appshotctl", "unregister", fx.name(), "--force"], step_timeout())?;
    ensure!(
        !out.success() && out.stderr.contains("SysV IPC objects") && out.stderr.contains("--destroy-ipc"),
        "appshotctl unregister of an AID with objects: {out:?}"
    );
    cmd::run(&["/usr/bin/appshotctl", "unregister", fx.name(), "--force", "--destroy-ipc"], step_timeout())?.ok()?;
    // SAFETY: IPC_STAT into a zeroed local.
    let r = unsafe {
        let mut ds: libc::msqid_ds = std::mem::zeroed();
        libc::msgctl(system_id, libc::IPC_STAT, &mut ds)
    };
    ensure!(r == -1 && Errno::last().0 == libc::EINVAL, "the queue after --destroy-ipc: IPC_STAT = {r}");
    ensure!(fx.dev.info(fx.aid()).is_err(), "the AID is still registered");
    Ok(())
}

/// One object of each kind (semaphore set, segment, queue) made by the test process,
/// outside every AID, removed when dropped: what an AID must not see.
struct OutsideObjects {
    ids: [i64; 3],
}

impl OutsideObjects {
    fn new() -> Result<OutsideObjects> {
        let ids = [
            semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o666),
            // SAFETY: shmget/msgget take integers only.
            unsafe { libc::shmget(libc::IPC_PRIVATE, 4096 * 5, libc::IPC_CREAT | 0o666) } as i64,
            unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o666) } as i64,
        ];
        let objects = OutsideObjects { ids };
        ensure!(ids.iter().all(|&id| id >= 0), "premise: objects outside: {ids:?}");
        Ok(objects)
    }
}

impl Drop for OutsideObjects {
    fn drop(&mut self) {
        semrm(self.ids[0]);
        // SAFETY: IPC_RMID takes no buffer (a failed get left -1: EINVAL).
        unsafe {
            libc::shmctl(self.ids[1] as i32, libc::IPC_RMID, std::ptr::null_mut());
            libc::msgctl(self.ids[2] as i32, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// The IDs `ipcs OPTION` lists (the second column of its object lines, which start with
/// the key in hex).
fn ipcs_ids(option: &str) -> Result<Vec<i64>> {
    let out = cmd::run(&["/usr/bin/ipcs", option], step_timeout())?.ok()?;
    let mut ids = Vec::new();
    for line in out.stdout.lines().filter(|l| l.starts_with("0x")) {
        let id = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("`ipcs {option}` line {line:?}"))?;
        ids.push(id);
    }
    Ok(ids)
}

/// issue #10 section 2: util-linux's `ipcmk`, `ipcs` and `ipcrm`, unmodified, inside an
/// AID: `ipcmk` prints the AID's virtual IDs, `ipcs` (which reads /proc/sysvipc) lists
/// exactly the AID's objects under them (not an object of a process outside the AID,
/// with its PIDs as the AID sees them), `ipcs -i` shows one, and `ipcrm` removes by
/// virtual ID. /proc/sysvipc read inside holds one line per object of the AID.
fn util_linux_tools_inside_aid() -> Result<()> {
    // An object of each kind outside every AID, which the AID must not see.
    let outside = OutsideObjects::new()?;
    let outside = outside.ids;
    let result = for_each_flavor("ipc-tools-in", |fx| {
        let range = fx.range();
        fx.spawn(move |_| {
            for (kind, &outsider) in KINDS.iter().zip(&outside) {
                let mut argv = vec!["/usr/bin/ipcmk"];
                argv.extend(kind.make);
                let out = cmd::run(&argv, step_timeout())?.ok()?;
                let id: i64 = out
                    .stdout
                    .lines()
                    .find_map(|line| line.strip_prefix(kind.answer))
                    .and_then(|rest| rest.trim().parse().ok())
                    .with_context(|| format!("`{}` printed no {:?}: {:?}", argv.join(" "), kind.answer, out.stdout))?;
                ensure_eq!(stat(kind, id as i32), 0, "IPC_STAT in the AID of the {} ipcmk made", kind.what);
                let listed = ipcs_ids(kind.option)?;
                ensure_eq!(listed, vec![id], "`ipcs {}` in the AID (the outsider's is {outsider})", kind.option);
                let file = match kind.option {
                    "-s" => "/proc/sysvipc/sem",
                    "-m" => "/proc/sysvipc/shm",
                    _ => "/proc/sysvipc/msg",
                };
                let proc = std::fs::read_to_string(file).with_context(|| format!("read {file}"))?;
                let lines: Vec<&str> = proc.lines().skip(1).collect();
                ensure!(
                    lines.len() == 1 && lines[0].split_whitespace().nth(1) == Some(id.to_string().as_str()),
                    "{file} in the AID: {proc:?} (want one line, ID {id})"
                );
                let id_text = id.to_string();
                let one = cmd::run(&["/usr/bin/ipcs", kind.option, "-i", &id_text], step_timeout())?.ok()?;
                ensure!(
                    one.stdout.contains(&format!("id={id}")),
                    "`ipcs {} -i {id}` in the AID: {:?}",
                    kind.option,
                    one.stdout
                );
                if kind.option == "-m" {
                    // The creator's PID as the AID sees it (ipcmk, a process of the AID).
                    let cpid: i64 = lines[0].split_whitespace().nth(4).and_then(|s| s.parse().ok()).unwrap_or(-1);
                    crate::virt::expect_in_range(cpid, range, "shm_cpid in /proc/sysvipc/shm")?;
                    ensure!(cpid > 0, "{file}: the creator's PID {cpid}");
                }
                cmd::run(&["/usr/bin/ipcrm", kind.option, &id_text], step_timeout())?.ok()?;
                ensure_eq!(ipcs_ids(kind.option)?, Vec::<i64>::new(), "`ipcs {}` in the AID after ipcrm", kind.option);
            }
            Ok(())
        })?
        .finish(step_timeout())
    });
    result
}

/// `semop(id, [(num, op, flags)...])`, as 0 or -errno.
fn semop(id: i64, ops: &[(u16, i16, i16)]) -> i64 {
    let mut sops: Vec<libc::sembuf> =
        ops.iter().map(|&(sem_num, sem_op, sem_flg)| libc::sembuf { sem_num, sem_op, sem_flg }).collect();
    // SAFETY: `sops` holds `len` valid sembufs.
    let r = unsafe { libc::semop(id as i32, sops.as_mut_ptr(), sops.len()) };
    if r < 0 { -(Errno::last().0 as i64) } else { 0 }
}

/// A message of the producer/consumer test: the sequence number of a record.
#[repr(C)]
struct Note {
    mtype: libc::c_long,
    seq: u32,
    pad: u32,
}

/// Bytes of a [`Note`] after its type.
const NOTE_SIZE: usize = std::mem::size_of::<Note>() - std::mem::size_of::<libc::c_long>();

/// issue #10 section 5: producer/consumer across 4 processes of one AID through a
/// queue, a semaphore set and a segment, all by the virtual IDs the creator got. Two
/// producers take sequence numbers from a counter in the segment (semaphore 1 is its
/// lock), write each record (the number and its complement) at that index of the
/// segment, count it on semaphore 0 and announce it on the queue; two consumers wait on
/// semaphore 0, receive the announcement and check the record. Every record arrives
/// once, intact.
fn producer_consumer_four_processes() -> Result<()> {
    const PER_PRODUCER: u32 = 150;
    for_each_flavor("ipc-prodcons", |fx| {
        fx.spawn(|_| {
            // SAFETY: SysV calls with integers.
            let (sem, shm, msg) = unsafe {
                (
                    libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600) as i64,
                    libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) as i64,
                    libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) as i64,
                )
            };
            ensure!(sem >= 0 && shm >= 0 && msg >= 0, "objects: {sem} {shm} {msg}");
            // SAFETY: SETVAL takes the value as the semun int.
            ensure_eq!(unsafe { libc::semctl(sem as i32, 1, libc::SETVAL, 1 as libc::c_int) }, 0, "SETVAL lock");
            let attach = move || -> Result<*mut u32> {
                // SAFETY: attaches the segment; the records are u32 pairs in it.
                let base = unsafe { libc::shmat(shm as i32, std::ptr::null(), 0) } as *mut u32;
                ensure!(base as isize != -1, "shmat: {}", Errno::last());
                Ok(base)
            };
            let mut producers = Vec::new();
            for _ in 0..2 {
                producers.push(crate::proc::Agent::spawn(move |_| {
                    let base = attach()?;
                    for _ in 0..PER_PRODUCER {
                        ensure_eq!(semop(sem, &[(1, -1, 0)]), 0, "lock the counter");
                        // SAFETY: word 0 is the counter, guarded by semaphore 1.
                        let seq = unsafe {
                            let seq = base.read_volatile();
                            base.write_volatile(seq + 1);
                            seq
                        };
                        ensure_eq!(semop(sem, &[(1, 1, 0)]), 0, "unlock the counter");
                        // SAFETY: record `seq` (words 2 + 2 seq, 3 + 2 seq, inside the page
                        // for seq < 511) is this producer's to write.
                        unsafe {
                            base.add(2 + 2 * seq as usize).write_volatile(seq);
                            base.add(3 + 2 * seq as usize).write_volatile(!seq);
                        }
                        ensure_eq!(semop(sem, &[(0, 1, 0)]), 0, "count the record");
                        let note = Note { mtype: 1, seq, pad: 0 };
                        // SAFETY: `note` is a valid message of NOTE_SIZE bytes after mtype.
                        let r = unsafe { libc::msgsnd(msg as i32, &note as *const Note as *const libc::c_void, NOTE_SIZE, 0) };
                        ensure_eq!(r, 0, "msgsnd");
                    }
                    Ok(())
                })?);
            }
            let mut consumers = Vec::new();
            for _ in 0..2 {
                consumers.push(crate::proc::Agent::spawn(move |chan| {
                    let base = attach()?;
                    let mut seen = 0i64;
                    loop {
                        ensure_eq!(semop(sem, &[(0, -1, 0)]), 0, "wait for a record");
                        let mut note = Note { mtype: 0, seq: 0, pad: 0 };
                        // SAFETY: receives into a local message of NOTE_SIZE bytes.
                        let r = unsafe { libc::msgrcv(msg as i32, &mut note as *mut Note as *mut libc::c_void, NOTE_SIZE, 0, 0) };
                        ensure!(r >= 0, "msgrcv: {}", Errno::last());
                        if note.mtype == 2 {
                            break;
                        }
                        // SAFETY: record `note.seq`, written before its announcement.
                        let (seq, check) = unsafe {
                            (base.add(2 + 2 * note.seq as usize).read_volatile(), base.add(3 + 2 * note.seq as usize).read_volatile())
                        };
                        ensure!(seq == note.seq && check == !note.seq, "record {}: {seq} (check {check:#x})", note.seq);
                        seen += 1;
                    }
                    chan.send(seen)?;
                    Ok(())
                })?);
            }
            for p in producers {
                p.finish(crate::check::secs(120))?;
            }
            for _ in 0..2 {
                let stop = Note { mtype: 2, seq: 0, pad: 0 };
                // SAFETY: as above.
                let r = unsafe { libc::msgsnd(msg as i32, &stop as *const Note as *const libc::c_void, NOTE_SIZE, 0) };
                ensure_eq!(r, 0, "msgsnd stop");
            }
            ensure_eq!(semop(sem, &[(0, 2, 0)]), 0, "count the stops");
            let mut total = 0;
            for mut c in consumers {
                total += c.recv(crate::check::secs(120))?;
                c.finish(step_timeout())?;
            }
            ensure_eq!(total, i64::from(2 * PER_PRODUCER), "records consumed");
            // SAFETY: IPC_RMID takes no buffer.
            unsafe {
                libc::semctl(sem as i32, 0, libc::IPC_RMID);
                libc::shmctl(shm as i32, libc::IPC_RMID, std::ptr::null_mut());
                libc::msgctl(msg as i32, libc::IPC_RMID, std::ptr::null_mut());
            }
            Ok(())
        })?
        .finish(crate::check::secs(300))
    })
}

/// The IDs of every object of the system, from /proc/sysvipc (read outside every AID):
/// (kind index 0 sem, 1 shm, 2 msg; ID).
fn system_objects() -> Result<BTreeSet<(usize, i64)>> {
    let mut all = BTreeSet::new();
    for (kind, file) in ["/proc/sysvipc/sem", "/proc/sysvipc/shm", "/proc/sysvipc/msg"].iter().enumerate() {
        let text = std::fs::read_to_string(file).with_context(|| format!("read {file}"))?;
        for line in text.lines().skip(1) {
            let id = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("{file}: {line:?}"))?;
            all.insert((kind, id));
        }
    }
    Ok(all)
}

/// issue #10 section 5, races: 16 processes (8 in an AID with a PID range, 8 in one
/// without) create, use and remove semaphore sets, segments and queues for 10 seconds,
/// private and under a few keys they share (IPC_CREAT races on one key), while root
/// removes some of the AIDs' objects from outside by their system IDs. Afterwards every
/// AID's table names exactly the objects the AIDs' processes made that still exist, and
/// the kernel log has no splat (checked by the suite).
fn races_two_aids_and_root() -> Result<()> {
    const WORKERS: usize = 8;
    const RUN: Duration = Duration::from_secs(10);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    crate::diag!("seed {seed:#x}");
    let before = system_objects()?;
    let fixtures = [AidFixture::new("ipc-race-a", Flavor::Range)?, AidFixture::new("ipc-race-b", Flavor::NoRange)?];
    let mut agents = Vec::new();
    for (n, fx) in fixtures.iter().enumerate() {
        agents.push(fx.spawn(move |_| {
            let mut workers = Vec::new();
            for w in 0..WORKERS {
                workers.push(crate::proc::Agent::spawn(move |chan| {
                    let mut rng = super::fuzz::Rng::new(seed ^ ((n * WORKERS + w) as u64 + 1));
                    let mut mine: Vec<(usize, i64)> = Vec::new();
                    let deadline = std::time::Instant::now() + RUN;
                    let mut ops = 0i64;
                    while std::time::Instant::now() < deadline {
                        let kind = rng.below(3) as usize;
                        let key = if rng.below(2) == 0 { libc::IPC_PRIVATE } else { 0x5250_0000 + rng.below(4) as i32 };
                        ops += 1;
                        match rng.below(4) {
                            0 => {
                                // SAFETY: SysV get calls take integers only.
                                let id = unsafe {
                                    match kind {
                                        0 => libc::semget(key, 2, libc::IPC_CREAT | 0o600),
                                        1 => libc::shmget(key, 4096, libc::IPC_CREAT | 0o600),
                                        _ => libc::msgget(key, libc::IPC_CREAT | 0o600),
                                    }
                                };
                                if id >= 0 {
                                    mine.push((kind, id as i64));
                                } else {
                                    let e = Errno::last().0;
                                    ensure!(e == libc::ENOSPC || e == libc::EIDRM, "get kind {kind} key {key:#x}: {}", Errno(e));
                                }
                            }
                            1 | 2 if !mine.is_empty() => {
                                let (kind, id) = mine[rng.below(mine.len() as u64) as usize];
                                // SAFETY: calls on an ID (maybe removed meanwhile: EINVAL or
                                // EIDRM), with local buffers.
                                let r = unsafe {
                                    match kind {
                                        0 => {
                                            let mut op = libc::sembuf { sem_num: 0, sem_op: 1, sem_flg: libc::IPC_NOWAIT as i16 };
                                            libc::semop(id as i32, &mut op, 1)
                                        }
                                        1 => {
                                            let at = libc::shmat(id as i32, std::ptr::null(), 0);
                                            if at as isize == -1 { -1 } else { libc::shmdt(at) }
                                        }
                                        _ => {
                                            let mut ds: libc::msqid_ds = std::mem::zeroed();
                                            libc::msgctl(id as i32, libc::IPC_STAT, &mut ds)
                                        }
                                    }
                                };
                                if r < 0 {
                                    let e = Errno::last().0;
                                    ensure!(e == libc::EINVAL || e == libc::EIDRM || e == libc::EAGAIN || e == libc::ERANGE, "use kind {kind} id {id}: {}", Errno(e));
                                }
                            }
                            _ if !mine.is_empty() => {
                                let at = rng.below(mine.len() as u64) as usize;
                                let (kind, id) = mine.swap_remove(at);
                                // SAFETY: IPC_RMID takes no buffer.
                                let r = unsafe {
                                    match kind {
                                        0 => libc::semctl(id as i32, 0, libc::IPC_RMID),
                                        1 => libc::shmctl(id as i32, libc::IPC_RMID, std::ptr::null_mut()),
                                        _ => libc::msgctl(id as i32, libc::IPC_RMID, std::ptr::null_mut()),
                                    }
                                };
                                if r < 0 {
                                    let e = Errno::last().0;
                                    ensure!(e == libc::EINVAL || e == libc::EIDRM, "remove kind {kind} id {id}: {}", Errno(e));
                                }
                            }
                            _ => {}
                        }
                    }
                    chan.send(ops)?;
                    Ok(())
                })?);
            }
            for mut w in workers {
                w.recv(RUN + step_timeout())?;
                w.finish(step_timeout())?;
            }
            Ok(())
        })?);
    }
    // Root, outside: removes some of the AIDs' objects by their system IDs.
    let deadline = std::time::Instant::now() + RUN;
    let mut rng = super::fuzz::Rng::new(seed);
    let mut removed = 0;
    while std::time::Instant::now() < deadline {
        for fx in &fixtures {
            for (table, kind) in [(uapi::TABLE_SEM, 0), (uapi::TABLE_SHM, 1), (uapi::TABLE_MSG, 2)] {
                let entries = ipc_entries(fx, table)?;
                if entries.is_empty() || rng.below(3) != 0 {
                    continue;
                }
                let system = entries[rng.below(entries.len() as u64) as usize].1 as i32;
                // SAFETY: IPC_RMID takes no buffer.
                let r = unsafe {
                    match kind {
                        0 => libc::semctl(system, 0, libc::IPC_RMID),
                        1 => libc::shmctl(system, libc::IPC_RMID, std::ptr::null_mut()),
                        _ => libc::msgctl(system, libc::IPC_RMID, std::ptr::null_mut()),
                    }
                };
                removed += i64::from(r == 0);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for agent in agents {
        agent.finish(RUN + crate::check::secs(60))?;
    }
    // Consistency: the objects made during the test that still exist are exactly the
    // union of the AIDs' tables (by system ID).
    let made: BTreeSet<(usize, i64)> = system_objects()?.difference(&before).copied().collect();
    let mut bound = BTreeSet::new();
    for fx in &fixtures {
        for (table, kind) in [(uapi::TABLE_SEM, 0), (uapi::TABLE_SHM, 1), (uapi::TABLE_MSG, 2)] {
            for (_, system) in ipc_entries(fx, table)? {
                ensure!(bound.insert((kind, i64::from(system))), "system ID {system} of kind {kind} bound twice");
            }
        }
    }
    crate::diag!("{} objects left, {removed} removed by root from outside", made.len());
    ensure_eq!(bound, made, "the AIDs' tables against the objects the kernel has (seed {seed:#x})");
    Ok(())
}

/// issue #10 section 1: the `*_ds` an IPC_STAT writes reaches the caller's buffer once,
/// already translated: a second thread reading the buffer while the first repeats
/// IPC_STAT never sees the system PID of the creator (it sees nothing but the initial
/// value and the virtual PID). A bad buffer is still EFAULT, as natively.
fn stat_buffer_never_holds_system_values() -> Result<()> {
    let fx = AidFixture::new("ipc-stat-race", Flavor::Range)?;
    fx.spawn(|_| {
        let me = crate::proc::getpid();
        // SAFETY: shmget takes integers only.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        ensure!(id >= 0, "shmget: {}", Errno::last());
        // SAFETY: IPC_STAT into a NULL buffer: EFAULT.
        let r = unsafe { libc::shmctl(id, libc::IPC_STAT, std::ptr::null_mut()) };
        ensure!(r == -1 && Errno::last().0 == libc::EFAULT, "IPC_STAT into NULL: {r} ({})", Errno::last());
        // SAFETY: shmid_ds is plain integers; all zero is a valid value.
        let ds = std::sync::Arc::new(std::cell::UnsafeCell::new(unsafe { std::mem::zeroed::<libc::shmid_ds>() }));
        struct Shared(std::sync::Arc<std::cell::UnsafeCell<libc::shmid_ds>>);
        // SAFETY: the reader only reads with volatile loads; a torn value is a finding.
        unsafe impl Send for Shared {}
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (ds, stop) = (Shared(ds.clone()), stop.clone());
            std::thread::spawn(move || {
                let ds = ds;
                let mut seen = BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: a volatile read of a field the other thread's calls write.
                    let cpid = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*ds.0.get()).shm_cpid)) };
                    seen.insert(cpid);
                }
                seen
            })
        };
        for i in 0..2000 {
            // SAFETY: IPC_STAT into the shared buffer.
            let r = unsafe { libc::shmctl(id, libc::IPC_STAT, ds.get()) };
            ensure!(r == 0, "IPC_STAT {i}: {}", Errno::last());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.join().map_err(|_| anyhow::anyhow!("the reader panicked"))?;
        ensure!(
            seen.iter().all(|&pid| pid == 0 || pid == me),
            "shm_cpid values a second thread saw in the buffer: {seen:?} (only 0 and the virtual PID {me} may appear)"
        );
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        Ok(())
    })?
    .finish(crate::check::secs(120))
}

/// `SHM_INFO` (uapi/linux/shm.h; not in the libc crate).
const SHM_INFO: i32 = 14;

/// issue #10 section 2: SEM_INFO, MSG_INFO and SHM_INFO inside an AID count only its
/// objects (sets and semaphores; queues, messages and bytes; segments and pages), and
/// the highest index they return makes an enumeration by *_STAT find exactly the AID's
/// objects, while a process outside has objects of each kind too.
fn info_counts_only_the_aid() -> Result<()> {
    let _outside = OutsideObjects::new()?;
    let result = for_each_flavor("ipc-info", |fx| {
        fx.spawn(|_| {
            // SAFETY: SysV calls with integers and local buffers of the right types.
            unsafe {
                let sets = [libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600), libc::semget(libc::IPC_PRIVATE, 3, libc::IPC_CREAT | 0o600)];
                let shm = libc::shmget(libc::IPC_PRIVATE, 8192, libc::IPC_CREAT | 0o600);
                let msg = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
                ensure!(sets[0] >= 0 && sets[1] >= 0 && shm >= 0 && msg >= 0, "objects: {sets:?} {shm} {msg}");
                let note = [1i64, 0, 0];
                for _ in 0..2 {
                    ensure_eq!(libc::msgsnd(msg, note.as_ptr().cast(), 10, 0), 0, "msgsnd");
                }
                let mut seminfo: libc::seminfo = std::mem::zeroed();
                let max = libc::semctl(0, 0, libc::SEM_INFO, &mut seminfo as *mut libc::seminfo);
                ensure!(max >= 0, "SEM_INFO: {}", Errno::last());
                ensure_eq!((seminfo.semusz, seminfo.semaem), (2, 5), "SEM_INFO (sets, semaphores) in the AID");
                let mut found = Vec::new();
                for i in 0..=max {
                    let mut ds: libc::semid_ds = std::mem::zeroed();
                    let id = libc::semctl(i, 0, libc::SEM_STAT, &mut ds as *mut libc::semid_ds);
                    if id >= 0 {
                        found.push(id);
                    }
                }
                found.sort();
                let mut want = sets.to_vec();
                want.sort();
                ensure_eq!(found, want, "SEM_STAT over the indexes 0..={max} SEM_INFO gives");
                let mut msginfo: libc::msginfo = std::mem::zeroed();
                ensure!(libc::msgctl(0, libc::MSG_INFO, (&mut msginfo as *mut libc::msginfo).cast()) >= 0, "MSG_INFO: {}", Errno::last());
                ensure_eq!((msginfo.msgpool, msginfo.msgmap, msginfo.msgtql), (1, 2, 20), "MSG_INFO (queues, messages, bytes) in the AID");
                // struct shm_info: int used_ids; unsigned long shm_tot, ...
                let mut shminfo = [0u64; 8];
                ensure!(libc::shmctl(0, SHM_INFO, shminfo.as_mut_ptr().cast()) >= 0, "SHM_INFO: {}", Errno::last());
                ensure_eq!((shminfo[0] as u32, shminfo[1]), (1, 2), "SHM_INFO (segments, pages) in the AID");
                libc::semctl(sets[0], 0, libc::IPC_RMID);
                libc::semctl(sets[1], 0, libc::IPC_RMID);
                libc::shmctl(shm, libc::IPC_RMID, std::ptr::null_mut());
                libc::msgctl(msg, libc::IPC_RMID, std::ptr::null_mut());
            }
            Ok(())
        })?
        .finish(step_timeout())
    });
    result
}

/// A set's ID the AID has translated is cached for later calls (docs/design/hooks.md);
/// the cache must forget it with the set. An AID process uses its set (SETVAL, then
/// semop: the later translations come from the cache); the set is removed, by root
/// from outside or by the AID process itself; then a process outside the AID gets a new
/// set with the very same system ID (`/proc/sys/kernel/sem_next_id`, as checkpoint tools
/// use it). Every use of the old virtual ID is then `EINVAL`, and the new set keeps its
/// value.
fn removed_id_never_reaches_its_next_owner() -> Result<()> {
    for remover in ["root, from outside", "the AID process"] {
        for_each_flavor("ipc-reuse", |fx| {
            let by_root = remover.starts_with("root");
            let mut agent = fx.spawn(move |chan| {
                let id = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
                ensure!(id >= 0, "semget in the AID = {id}");
                ensure_eq!(semval(id, Some(1)), 0, "SETVAL of the AID's set");
                ensure_eq!(semop(id, &[(0, 1, libc::IPC_NOWAIT as i16)]), 0, "semop on the AID's set");
                ensure_eq!(semval(id, None), 2, "GETVAL of the AID's set");
                chan.send(id)?;
                chan.recv(step_timeout())?; // the test knows the set's system ID
                if !by_root {
                    ensure_eq!(semrm(id), 0, "IPC_RMID by the AID process");
                }
                chan.send(READY)?;
                chan.recv(step_timeout())?; // the number is an outsider's set now
                chan.send(semval(id, None))?;
                chan.send(semval(id, Some(9)))?;
                chan.send(semop(id, &[(0, 1, libc::IPC_NOWAIT as i16)]))?;
                Ok(())
            })?;
            let id = agent.recv_step()?;
            let (_, system) = ipc_entries(fx, uapi::TABLE_SEM)?
                .into_iter()
                .find(|&(v, _)| i64::from(v) == id)
                .with_context(|| format!("no binding for the AID's set {id}"))?;
            agent.send(GO)?;
            if by_root {
                ensure_eq!(semrm(i64::from(system)), 0, "IPC_RMID by root of system ID {system}");
            }
            agent.expect(READY, "the set removed")?;
            ensure!(ipc_entries(fx, uapi::TABLE_SEM)?.is_empty(), "the AID's table after the removal");
            std::fs::write("/proc/sys/kernel/sem_next_id", format!("{system}")).context("write sem_next_id")?;
            let outsider = semget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o666);
            let result = (|| -> Result<()> {
                ensure_eq!(outsider, i64::from(system), "the outsider's new set ID (sem_next_id)");
                ensure_eq!(semval(outsider, Some(5)), 0, "SETVAL outside");
                agent.send(GO)?;
                let got = agent.recv_step()?;
                let set = agent.recv_step()?;
                let op = agent.recv_step()?;
                let einval = -(libc::EINVAL as i64);
                ensure_eq!(got, einval, "GETVAL of the removed set's ID ({remover} removed it)");
                ensure_eq!(set, einval, "SETVAL of the removed set's ID ({remover} removed it)");
                ensure_eq!(op, einval, "semop on the removed set's ID ({remover} removed it)");
                ensure_eq!(semval(outsider, None), 5, "the outsider's set after the AID used the old ID");
                Ok(())
            })();
            if outsider >= 0 {
                semrm(outsider);
            }
            result?;
            agent.finish(step_timeout())
        })?;
    }
    Ok(())
}

/// A key no other test uses (the NEXT_ID test's keyed set).
const NEXT_ID_KEY: i32 = 0x4e58_4944;

/// A new object of the kind of `table` (`uapi::TABLE_SEM`, `TABLE_SHM`, `TABLE_MSG`),
/// private: its ID, or -errno.
fn make(table: u32) -> i64 {
    // SAFETY: the *get calls take integers only.
    let r = unsafe {
        match table {
            uapi::TABLE_SEM => libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600),
            uapi::TABLE_SHM => libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600),
            _ => libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600),
        }
    };
    if r < 0 { -(Errno::last().0 as i64) } else { r as i64 }
}

/// Runs `body` in a new process of the AID and returns the values it computed.
fn values_in_aid(fx: &AidFixture, body: impl FnOnce() -> Result<Vec<i64>>) -> Result<Vec<i64>> {
    let mut agent = fx.spawn(move |chan| {
        let values = body()?;
        chan.send(values.len() as i64)?;
        for v in values {
            chan.send(v)?;
        }
        Ok(())
    })?;
    let n = agent.recv_step()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(agent.recv_step()?);
    }
    agent.finish(step_timeout())?;
    Ok(out)
}

/// The system ID the AID's `table` binds virtual ID `virtual_id` to, failing when it is
/// not bound or the kernel has no such object.
fn bound_system(fx: &AidFixture, table: u32, virtual_id: i64) -> Result<i64> {
    let entries = ipc_entries(fx, table)?;
    let system = entries
        .iter()
        .find(|&&(v, _)| i64::from(v) == virtual_id)
        .map(|&(_, s)| i64::from(s))
        .with_context(|| format!("table {table}: no binding of virtual ID {virtual_id}: {entries:?}"))?;
    let kind = &KINDS[table as usize - 1];
    let r = stat(kind, system as i32);
    ensure!(r == 0, "IPC_STAT outside of the {} {system} bound to {virtual_id}: {}", kind.what, Errno(r));
    Ok(system)
}

/// Fails unless `virtual_id` (of `table`) got the ordinary choice: the object's system
/// ID (no other binding of the AID has it here).
fn expect_ordinary(fx: &AidFixture, table: u32, virtual_id: i64, what: &str) -> Result<()> {
    ensure!(virtual_id >= 0, "{what}: the *get failed: {}", Errno(-virtual_id as i32));
    let system = bound_system(fx, table, virtual_id).with_context(|| what.to_string())?;
    ensure_eq!(virtual_id, system, "{what}: an ordinary virtual ID (the system ID)");
    Ok(())
}

/// NEXT_ID (`appshotctl restore`'s counterpart of `/proc/sys/kernel/sem_next_id`): the
/// next new binding of one kind in the AID gets the virtual ID a privileged caller
/// chose, once; the next one an ordinary ID. A second NEXT_ID before it is used replaces
/// the first; a keyed create uses it too (and the key finds the object), a keyed get of
/// an object the AID has bound already does not; the three kinds are separate (the same
/// number may be bound in each), and 0 and 2^31-1 are IDs like any other. Refused: an ID
/// the AID has bound (`EEXIST`), another table, an ID over 2^31-1 (`EINVAL`), an AID that
/// does not exist or is unregistered (`ENOENT`), an opener without CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE (`EPERM`); a refused request neither sets nor drops a wish.
fn next_id_chooses_the_next_virtual_id() -> Result<()> {
    let (sem, shm, msg) = (uapi::TABLE_SEM, uapi::TABLE_SHM, uapi::TABLE_MSG);
    for_each_flavor("ipc-next-id", |fx| {
        let (dev, aid) = (&fx.dev, fx.aid());

        // The wish, once; then the ordinary choice.
        dev.next_id(aid, sem, 4242).context("NEXT_ID(sem, 4242)")?;
        let ids = values_in_aid(fx, || Ok(vec![make(sem), make(sem)]))?;
        ensure_eq!(ids[0], 4242, "the first semaphore set after NEXT_ID(sem, 4242)");
        let wished_system = bound_system(fx, sem, 4242)?;
        expect_ordinary(fx, sem, ids[1], "the second set (the wish is used once)")?;
        ensure_eq!(ipc_entries(fx, sem)?.len(), 2, "semaphore entries");
        // The wished ID reaches its set (and only the AID sees it so).
        ensure_eq!(values_in_aid(fx, || Ok(vec![semval(4242, Some(31))]))?, vec![0], "SETVAL of set 4242 in the AID");
        ensure_eq!(semval(wished_system, None), 31, "GETVAL outside by the system ID bound to 4242");

        // Refusals, with no wish pending: they leave none.
        let refusals = |what: &str| -> Result<()> {
            expect_errno(dev.next_id(aid, sem, 4242), libc::EEXIST, &format!("{what}: NEXT_ID of the bound set 4242"))?;
            expect_errno(dev.next_id(aid, sem, ids[1] as u32), libc::EEXIST, &format!("{what}: NEXT_ID of the bound set {}", ids[1]))?;
            for table in [uapi::TABLE_PID, uapi::TABLE_KEY, uapi::TABLE_COUNT as u32, u32::MAX] {
                expect_errno(dev.next_id(aid, table, 5001), libc::EINVAL, &format!("{what}: NEXT_ID of table {table}"))?;
            }
            for id in [0x8000_0000u32, u32::MAX] {
                for table in [sem, shm, msg] {
                    expect_errno(dev.next_id(aid, table, id), libc::EINVAL, &format!("{what}: NEXT_ID(table {table}, {id:#x})"))?;
                }
            }
            expect_errno(dev.next_id(u64::MAX, sem, 5002), libc::ENOENT, &format!("{what}: NEXT_ID of an unknown AID"))?;
            expect_errno(dev.next_id(0, sem, 5002), libc::ENOENT, &format!("{what}: NEXT_ID of AID 0"))?;
            Ok(())
        };
        refusals("no wish pending")?;
        let gone = crate::device::AidGuard::new(dev, "ipc-next-gone")?;
        dev.unregister(gone.aid, 0).context("UNREGISTER")?;
        expect_errno(dev.next_id(gone.aid, sem, 5003), libc::ENOENT, "NEXT_ID of an unregistered AID")?;
        drop(gone);
        let ids2 = values_in_aid(fx, || Ok(vec![make(sem), make(shm), make(msg)]))?;
        for (table, id) in [sem, shm, msg].into_iter().zip(&ids2) {
            expect_ordinary(fx, table, *id, &format!("table {table}: the object after the refused NEXT_IDs"))?;
        }
        // ... and with a wish pending: they neither replace nor drop it.
        dev.next_id(aid, sem, 5000).context("NEXT_ID(sem, 5000)")?;
        refusals("a wish pending")?;
        ensure_eq!(values_in_aid(fx, || Ok(vec![make(sem)]))?, vec![5000], "the set after NEXT_ID(sem, 5000) and the refusals");
        bound_system(fx, sem, 5000)?;

        // A second NEXT_ID replaces the first.
        dev.next_id(aid, sem, 6000).context("NEXT_ID(sem, 6000)")?;
        dev.next_id(aid, sem, 6001).context("NEXT_ID(sem, 6001)")?;
        let ids = values_in_aid(fx, || Ok(vec![make(sem), make(sem)]))?;
        ensure_eq!(ids[0], 6001, "the set after NEXT_ID 6000 then 6001");
        expect_ordinary(fx, sem, ids[1], "the next set after the replaced wish")?;
        ensure!(
            ipc_entries(fx, sem)?.iter().all(|&(v, _)| v != 6000),
            "virtual ID 6000 bound after its wish was replaced: {:?}",
            ipc_entries(fx, sem)?
        );

        // A keyed create uses the wish; the key finds the object by it.
        dev.next_id(aid, sem, 7000).context("NEXT_ID(sem, 7000)")?;
        let keyed = values_in_aid(fx, || {
            Ok(vec![
                semget(NEXT_ID_KEY, libc::IPC_CREAT | 0o600),
                semget(NEXT_ID_KEY, 0),
                semget(NEXT_ID_KEY, libc::IPC_CREAT | libc::IPC_EXCL | 0o600),
            ])
        })?;
        ensure_eq!(
            keyed,
            vec![7000, 7000, -(libc::EEXIST as i64)],
            "semget(key, IPC_CREAT), semget(key, 0), semget(key, IPC_CREAT | IPC_EXCL) after NEXT_ID(sem, 7000)"
        );
        bound_system(fx, sem, 7000)?;
        ensure_eq!(ipc_entries(fx, uapi::TABLE_KEY)?.len(), 1, "key entries of the AID");
        // A get of the bound key is no new binding: the wish waits for the next one.
        dev.next_id(aid, sem, 7100).context("NEXT_ID(sem, 7100)")?;
        let again = values_in_aid(fx, || {
            Ok(vec![semget(NEXT_ID_KEY, 0), semget(NEXT_ID_KEY, libc::IPC_CREAT | 0o600), make(sem)])
        })?;
        ensure_eq!(
            again,
            vec![7000, 7000, 7100],
            "semget(key, 0), semget(key, IPC_CREAT) of the keyed set, then a new set, after NEXT_ID(sem, 7100)"
        );

        // Shared memory and message queues, each kind with its own wish; the same
        // number in another kind is free.
        dev.next_id(aid, shm, 4242).context("NEXT_ID(shm, 4242): 4242 is a set's, not a segment's")?;
        dev.next_id(aid, msg, 4243).context("NEXT_ID(msg, 4243)")?;
        dev.next_id(aid, sem, 8000).context("NEXT_ID(sem, 8000)")?;
        let mixed = values_in_aid(fx, || Ok(vec![make(msg), make(shm), make(shm), make(msg), make(sem)]))?;
        ensure_eq!(
            (mixed[0], mixed[1], mixed[4]),
            (4243, 4242, 8000),
            "the first queue, segment and set after NEXT_ID(msg 4243, shm 4242, sem 8000) (got {mixed:?})"
        );
        bound_system(fx, msg, 4243)?;
        bound_system(fx, shm, 4242)?;
        expect_ordinary(fx, shm, mixed[2], "the second segment")?;
        expect_ordinary(fx, msg, mixed[3], "the second queue")?;
        expect_errno(dev.next_id(aid, shm, 4242), libc::EEXIST, "NEXT_ID of the bound segment 4242")?;
        expect_errno(dev.next_id(aid, msg, 4243), libc::EEXIST, "NEXT_ID of the bound queue 4243")?;

        // The ends of the ID space: 0 and 2^31-1 work as IDs. (In an AID of its own:
        // here an ordinary object may have system ID 0, so virtual ID 0 may be bound.)
        let ends_fx = AidFixture::with_range("ipc-next-ends", fx.range())?;
        ends_fx.dev.next_id(ends_fx.aid(), msg, 0).context("NEXT_ID(msg, 0)")?;
        ends_fx.dev.next_id(ends_fx.aid(), shm, i32::MAX as u32).context("NEXT_ID(shm, 2^31-1)")?;
        let ends = values_in_aid(&ends_fx, || {
            let q = make(msg);
            let seg = make(shm);
            let note = [9i64, 0];
            // SAFETY: msgsnd/msgrcv of a 8-byte body from/to local buffers; shmat/shmdt
            // of the new segment.
            let (sent, got, attached) = unsafe {
                let sent = libc::msgsnd(q as i32, note.as_ptr().cast(), 8, libc::IPC_NOWAIT);
                let mut back = [0i64; 2];
                let got = libc::msgrcv(q as i32, back.as_mut_ptr().cast(), 8, 9, libc::IPC_NOWAIT);
                let at = libc::shmat(seg as i32, std::ptr::null(), 0);
                let attached = if at as isize == -1 {
                    -(Errno::last().0 as i64)
                } else {
                    libc::shmdt(at);
                    1
                };
                (sent as i64, got as i64, attached)
            };
            Ok(vec![q, seg, sent, got, attached])
        })?;
        ensure_eq!(
            ends,
            vec![0, i64::from(i32::MAX), 0, 8, 1],
            "queue 0 and segment 2^31-1: IDs, msgsnd, msgrcv, shmat"
        );
        bound_system(&ends_fx, msg, 0)?;
        bound_system(&ends_fx, shm, i64::from(i32::MAX))?;
        drop(ends_fx);

        // Who may: not an opener without the capabilities; one with
        // CAP_CHECKPOINT_RESTORE only, of another UID, may.
        crate::proc::in_child(step_timeout(), || {
            crate::proc::drop_to_user()?;
            let dev = crate::device::Device::open()?;
            expect_errno(dev.next_id(aid, sem, 9000), libc::EPERM, "NEXT_ID as uid 1000 without capabilities")
        })?;
        let after = values_in_aid(fx, || Ok(vec![make(sem)]))?;
        expect_ordinary(fx, sem, after[0], "the set after the refused unprivileged NEXT_ID")?;
        crate::proc::in_child(step_timeout(), || {
            crate::proc::become_user_with_caps(&[crate::proc::CAP_CHECKPOINT_RESTORE])?;
            let dev = crate::device::Device::open()?;
            dev.next_id(aid, sem, 9001).context("NEXT_ID as uid 1000 with CAP_CHECKPOINT_RESTORE")
        })?;
        ensure_eq!(values_in_aid(fx, || Ok(vec![make(sem)]))?, vec![9001], "the set after NEXT_ID(sem, 9001) by uid 1000 with CAP_CHECKPOINT_RESTORE");
        Ok(())
    })
}
