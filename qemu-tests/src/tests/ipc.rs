//! SysV IPC (issue #10) as unmodified programs see it. IPC virtualization is not in the
//! module yet: these tests hold what must not change for processes outside every AID
//! while AIDs exist (their IDs are the kernel's, and util-linux's `ipcmk`, `ipcs` and
//! `ipcrm` agree with the system calls about them), and they are the baseline the AID
//! runs of issue #10 will be compared with.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::Test;
use crate::aid_fixture::{AidFixture, Flavor};
use crate::check::{step_timeout, Errno};
use crate::cmd;
use crate::ensure_eq;

pub const TESTS: &[Test] = &[
    Test::new(
        "ipc/util_linux_tools_outside_any_aid",
        util_linux_tools_outside_any_aid,
    ),
    Test::new("ipc/ipcprobe_outside_any_aid", ipcprobe_outside_any_aid),
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
        let seen = parse(&out.stdout).with_context(|| probe.to_string())?;
        let value = |key: &str| seen.get(key).copied().with_context(|| format!("{probe}: no {key}"));
        for &(key, want) in IPCPROBE_NATIVE {
            ensure_eq!(value(key)?, want, "{probe}: {key}");
        }
        let pid = value("pid")?;
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
    }
    Ok(())
}
