//! Snapshot, restore and clone (issue #11), the CRIU zdtm way: a process of an AID sets
//! up SysV state, the application is captured with `appshotctl snapshot`, and after
//! `appshotctl restore` a process of the restored application checks the state itself:
//! the same virtual IDs and keys, every semaphore value, every byte of every segment,
//! every message in order, while the system IDs behind them are new.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::Test;
use crate::aid_fixture::{AidFixture, Flavor};
use crate::check::{secs, step_timeout, Errno};
use crate::cmd;
use crate::device::{AidGuard, Device};
use crate::ensure_eq;
use crate::proc::{self, Agent, Status};
use appshot_uapi as uapi;

pub const TESTS: &[Test] = &[
    Test::new("snapshot/round_trip_with_kill", round_trip_with_kill),
    Test::new("snapshot/leave_running_is_unseen", leave_running_is_unseen),
    Test::new("snapshot/restored_command_is_the_root", restored_command_is_the_root),
    Test::new("snapshot/clones_side_by_side", clones_side_by_side),
    Test::new("snapshot/inspect_shows_the_state", inspect_shows_the_state),
    Test::new("snapshot/bad_images_create_nothing", bad_images_create_nothing),
    Test::new("snapshot/refusals", refusals),
    Test::new("snapshot/task_that_cannot_stop_fails_cleanly", task_that_cannot_stop_fails_cleanly).costs(9),
    Test::new("snapshot/large_segment_and_full_queue", large_segment_and_full_queue).slow(900).costs(16),
    Test::new("snapshot/mutated_images_leave_nothing", mutated_images_leave_nothing).slow(900).costs(87),
];

/// The key of the keyed semaphore set (private to the AID).
const SEM_KEY: i32 = 0x5eed_0001;
/// The key of the keyed segment.
const SHM_KEY: i32 = 0x5eed_0002;
/// The values of the private semaphore set (7 is the source document's).
const SEM_VALUES: [u16; 5] = [7, 0, 32767, 1, 42];
/// The values of the keyed set.
const KEYED_VALUES: [u16; 2] = [3, 4];
/// Segment size of the ordinary tests.
const SMALL_SHM: usize = 64 * 1024;

/// The virtual IDs of an application's objects: private set, keyed set, segment, queue.
type Ids = [i32; 4];

/// Byte `i` of the segment contents: varied, so a lost or shifted page shows.
fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i >> 20) as u8
}

/// Message `i` of the queue (type 1-3, 0-499 bytes).
fn message(i: usize) -> (i64, Vec<u8>) {
    let size = i * 37 % 500;
    ((i % 3) as i64 + 1, (0..size).map(|j| pattern(i * 1000 + j)).collect())
}

/// As -errno or the value.
fn sys(ret: i64) -> i64 {
    if ret < 0 {
        -(Errno::last().0 as i64)
    } else {
        ret
    }
}

/// Sets up the state, in a process of the AID: returns the virtual IDs. With `fill`,
/// the queue is filled with 64-byte messages to its byte limit (returns how many in the
/// 5th value) instead of the 20 ordinary ones.
fn build_state(shm_size: usize, fill: bool) -> Result<(Ids, usize)> {
    // SAFETY (every block below): SysV calls on buffers that live across the call.
    let sem = unsafe { libc::semget(libc::IPC_PRIVATE, SEM_VALUES.len() as i32, libc::IPC_CREAT | 0o600) };
    let keyed = unsafe { libc::semget(SEM_KEY, KEYED_VALUES.len() as i32, libc::IPC_CREAT | libc::IPC_EXCL | 0o640) };
    let shm = unsafe { libc::shmget(SHM_KEY, shm_size, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    let msg = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    ensure!(sem >= 0 && keyed >= 0 && shm >= 0 && msg >= 0, "create: {sem} {keyed} {shm} {msg}: {}", Errno::last());
    ensure_eq!(unsafe { libc::semctl(sem, 0, libc::SETALL, SEM_VALUES.as_ptr()) }, 0, "SETALL");
    ensure_eq!(unsafe { libc::semctl(keyed, 0, libc::SETALL, KEYED_VALUES.as_ptr()) }, 0, "SETALL keyed");
    // Owned by another user than its creator (root): restored with both.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ensure_eq!(unsafe { libc::semctl(keyed, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) }, 0, "IPC_STAT");
    (ds.sem_perm.uid, ds.sem_perm.gid) = (1000, 1000);
    ensure_eq!(unsafe { libc::semctl(keyed, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) }, 0, "IPC_SET");
    let base = unsafe { libc::shmat(shm, std::ptr::null(), 0) } as *mut u8;
    ensure!(base as isize != -1, "shmat: {}", Errno::last());
    // SAFETY: the segment is mapped at `base` for `shm_size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base, shm_size) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(i);
    }
    unsafe { libc::shmdt(base.cast()) };
    let mut sent = 0;
    if fill {
        loop {
            let (mtype, _) = message(sent);
            let text: Vec<u8> = (0..64).map(|j| pattern(sent * 64 + j)).collect();
            if send(msg, mtype, &text) < 0 {
                ensure_eq!(Errno::last().0, libc::EAGAIN, "msgsnd until full");
                break;
            }
            sent += 1;
        }
    } else {
        for i in 0..20 {
            let (mtype, text) = message(i);
            ensure_eq!(send(msg, mtype, &text), 0, "msgsnd {i}");
            sent += 1;
        }
    }
    Ok(([sem, keyed, shm, msg], sent))
}

fn send(id: i32, mtype: i64, text: &[u8]) -> i64 {
    let mut buffer = mtype.to_ne_bytes().to_vec();
    buffer.extend_from_slice(text);
    // SAFETY: a long type followed by the text.
    sys(unsafe { libc::msgsnd(id, buffer.as_ptr().cast(), text.len(), libc::IPC_NOWAIT) } as i64)
}

/// Checks the state `build_state` made, in a process of the restored application (the
/// queue is emptied as it is read).
fn check_state(ids: Ids, shm_size: usize, fill: Option<usize>) -> Result<()> {
    let [sem, keyed, shm, msg] = ids;
    let mut values = [0u16; SEM_VALUES.len()];
    // SAFETY (every block below): SysV calls on buffers that live across the call.
    ensure_eq!(unsafe { libc::semctl(sem, 0, libc::GETALL, values.as_mut_ptr()) }, 0, "GETALL {sem}: {}", Errno::last());
    ensure_eq!(values, SEM_VALUES, "semaphore values");
    ensure_eq!(unsafe { libc::semget(SEM_KEY, 0, 0) }, keyed, "semget of the set's key");
    let mut keyed_values = [0u16; KEYED_VALUES.len()];
    ensure_eq!(unsafe { libc::semctl(keyed, 0, libc::GETALL, keyed_values.as_mut_ptr()) }, 0, "GETALL keyed");
    ensure_eq!(keyed_values, KEYED_VALUES, "keyed semaphore values");
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ensure_eq!(unsafe { libc::semctl(keyed, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) }, 0, "IPC_STAT");
    ensure_eq!((ds.sem_perm.__key, ds.sem_perm.mode & 0o777), (SEM_KEY, 0o640), "the keyed set's key and mode");
    ensure_eq!(
        (ds.sem_perm.uid, ds.sem_perm.gid, ds.sem_perm.cuid, ds.sem_perm.cgid),
        (1000, 1000, 0, 0),
        "the keyed set's owner and creator"
    );
    ensure_eq!(unsafe { libc::shmget(SHM_KEY, 0, 0) }, shm, "shmget of the segment's key");
    let base = unsafe { libc::shmat(shm, std::ptr::null(), libc::SHM_RDONLY) } as *const u8;
    ensure!(base as isize != -1, "shmat {shm}: {}", Errno::last());
    // SAFETY: mapped for `shm_size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(base, shm_size) };
    let wrong = bytes.iter().enumerate().find(|&(i, &b)| b != pattern(i)).map(|(i, _)| i);
    unsafe { libc::shmdt(base.cast()) };
    ensure!(wrong.is_none(), "segment byte {wrong:?} differs");
    let mut buffer = vec![0u8; 8 + 8192];
    let expected: Vec<(i64, Vec<u8>)> = match fill {
        None => (0..20).map(message).collect(),
        Some(n) => (0..n).map(|i| (message(i).0, (0..64).map(|j| pattern(i * 64 + j)).collect())).collect(),
    };
    for (i, (mtype, text)) in expected.iter().enumerate() {
        let got = sys(unsafe { libc::msgrcv(msg, buffer.as_mut_ptr().cast(), 8192, 0, libc::IPC_NOWAIT) } as i64);
        ensure!(got >= 0, "msgrcv of message {i}: {}", Errno(-got as i32));
        let got_type = i64::from_ne_bytes(buffer[..8].try_into().unwrap_or_default());
        ensure!(got_type == *mtype && &buffer[8..8 + got as usize] == text.as_slice(), "message {i}: type {got_type}, {got} bytes");
    }
    let more = sys(unsafe { libc::msgrcv(msg, buffer.as_mut_ptr().cast(), 8192, 0, libc::IPC_NOWAIT) } as i64);
    ensure_eq!(more, -(libc::ENOMSG as i64), "after the last message");
    Ok(())
}

/// The (virtual, system) pairs of one table.
fn table(dev: &Device, aid: u64, kind: u32) -> Result<Vec<(u32, u32)>> {
    Ok(dev.table(aid, kind).context("TABLE")?.iter().map(|e| (e.virtual_id, e.system_id)).collect())
}

/// The SEM, SHM and MSG tables.
fn ipc_tables(dev: &Device, aid: u64) -> Result<Vec<Vec<(u32, u32)>>> {
    [uapi::TABLE_SEM, uapi::TABLE_SHM, uapi::TABLE_MSG].iter().map(|&k| table(dev, aid, k)).collect()
}

/// Lines of /proc/sysvipc/{sem,shm,msg}: every object on the system.
fn system_objects() -> Result<usize> {
    let mut n = 0;
    for file in ["/proc/sysvipc/sem", "/proc/sysvipc/shm", "/proc/sysvipc/msg"] {
        n += std::fs::read_to_string(file).with_context(|| format!("read {file}"))?.lines().count() - 1;
    }
    Ok(n)
}

/// Starts an application of `tag` with the ordinary state, held alive; returns it with
/// its IDs.
fn start_app(tag: &str, shm_size: usize, fill: bool) -> Result<(AidFixture, Agent, Ids, usize)> {
    let fx = AidFixture::new(tag, Flavor::Range)?;
    let mut app = fx.spawn(move |chan| {
        let (ids, sent) = build_state(shm_size, fill)?;
        for id in ids {
            chan.send(i64::from(id))?;
        }
        chan.send(sent as i64)?;
        // Held here (asleep in a read) until killed or told to end.
        chan.recv(Duration::from_secs(3600))?;
        Ok(())
    })?;
    let timeout = secs(120);
    let mut ids = [0; 4];
    for id in &mut ids {
        *id = app.recv(timeout)? as i32;
    }
    let sent = app.recv(timeout)? as usize;
    Ok((fx, app, ids, sent))
}

/// Runs `check_state` in a process linked to the application `name`.
fn check_restored(dev: &Device, name: &str, ids: Ids, shm_size: usize, fill: Option<usize>) -> Result<()> {
    let info = dev.info_by_name(name.as_bytes()).with_context(|| format!("INFO {name}"))?;
    Agent::spawn(move |_| {
        let dev = Device::open()?;
        dev.link(info.aid, 0).context("LINK self")?;
        check_state(ids, shm_size, fill)
    })?
    .finish(secs(300))
}

/// Issue #11 sections 1, 3, 6: `snapshot --kill` captures the application, kills it and
/// removes it with its objects; unrelated objects are then created; `restore` brings
/// back the same virtual IDs, keys, values, bytes and messages on new system IDs.
fn round_trip_with_kill() -> Result<()> {
    let (fx, mut app, ids, _) = start_app("snap-rt", SMALL_SHM, false)?;
    let name = fx.name().to_string();
    let before = ipc_tables(&fx.dev, fx.aid())?;
    let image = "/tmp/snap-rt.img";
    let out = cmd::ctl(&["snapshot", &name, "-o", image, "--kill"])?.ok()?;
    ensure!(out.stdout.contains("was killed and removed"), "snapshot said {:?}", out.stdout);
    ensure_eq!(app.wait(step_timeout())?, Status::Signaled(libc::SIGKILL), "the application after --kill");
    ensure_eq!(fx.dev.info_by_name(name.as_bytes()).err(), Some(Errno(libc::ENOENT)), "its AID after --kill");
    for (kind, pairs) in before.iter().enumerate() {
        for &(_, system) in pairs {
            // SAFETY: IPC_STAT into a buffer big enough for every kind.
            let mut buf = [0u8; 256];
            let r = sys(unsafe {
                match kind {
                    0 => libc::semctl(system as i32, 0, libc::IPC_STAT, buf.as_mut_ptr()),
                    1 => libc::shmctl(system as i32, libc::IPC_STAT, buf.as_mut_ptr().cast()),
                    _ => libc::msgctl(system as i32, libc::IPC_STAT, buf.as_mut_ptr().cast()),
                }
            } as i64);
            ensure!(r < 0, "object {system} still exists after --kill");
        }
    }
    // Unrelated objects take the freed slots.
    let squatters = Squatters::new(4)?;
    let out = cmd::ctl(&["restore", image])?.ok()?;
    ensure!(out.stdout.contains(&format!("restored '{name}'")), "restore said {:?}", out.stdout);
    let _restored = AidGuard::adopt_by_name(&fx.dev, &name).context("the restored AID")?;
    let info = fx.dev.info_by_name(name.as_bytes())?;
    let after = ipc_tables(&fx.dev, info.aid)?;
    for (kind, (old, new)) in before.iter().zip(&after).enumerate() {
        let virtual_old: Vec<u32> = old.iter().map(|p| p.0).collect();
        let virtual_new: Vec<u32> = new.iter().map(|p| p.0).collect();
        ensure_eq!(virtual_new, virtual_old, "virtual IDs of table {kind}");
        for (o, n) in old.iter().zip(new) {
            ensure!(o.1 != n.1, "table {kind}: virtual {} kept system ID {}", o.0, o.1);
        }
    }
    check_restored(&fx.dev, &name, ids, SMALL_SHM, None)?;
    drop(squatters);
    Ok(())
}

/// Issue #11 section 3: `restore FILE -- CMD` runs CMD as the image's root process, with
/// the root's saved virtual PID (clone3's set_tid, read as virtual), and exits with
/// CMD's status; in both flavors (with a range the restorer's own link would otherwise
/// take that very number).
fn restored_command_is_the_root() -> Result<()> {
    crate::aid_fixture::each_flavor(|flavor| {
        let fx = AidFixture::new("snap-root", flavor)?;
        let mut app = fx.spawn(|chan| {
            chan.send(1)?;
            chan.recv(Duration::from_secs(3600))?;
            Ok(())
        })?;
        app.expect(1, "ready")?;
        let name = fx.name().to_string();
        let image = format!("/tmp/snap-root-{}.img", proc::getpid());
        cmd::ctl(&["snapshot", &name, "-o", &image, "--kill"])?.ok()?;
        drop(app);
        let decoded = appshot_image::read_image(&std::fs::read(&image)?).context("the image")?;
        let root = appshotctl::restore::root_pid(&decoded).context("the image records no root process")?;
        let lowest = decoded.processes.iter().map(|p| p.virtual_pid).min();
        ensure_eq!(Some(root), lowest, "the root (the process LINKed first, the others its descendants)");
        let argv = [cmd::APPSHOTCTL, "restore", image.as_str(), "--", "/bin/sh", "-c", "echo $$; exit 7"];
        let out = cmd::run(&argv, step_timeout())?;
        let _restored = AidGuard::adopt_by_name(&fx.dev, &name);
        ensure_eq!(out.status, Status::Exited(7), "appshotctl's status (the command's); stderr {:?}", out.stderr);
        ensure_eq!(out.stdout.trim(), root.to_string(), "the command's PID as it sees it");
        let _ = std::fs::remove_file(&image);
        Ok(())
    })
}

/// IPC_PRIVATE objects created outside every AID, removed when dropped.
struct Squatters(Vec<(usize, i32)>);

impl Squatters {
    fn new(each: usize) -> Result<Squatters> {
        let mut made = Squatters(Vec::new());
        for _ in 0..each {
            // SAFETY: *get calls take integers.
            let ids = unsafe {
                [
                    libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600),
                    libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600),
                    libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600),
                ]
            };
            for (kind, id) in ids.into_iter().enumerate() {
                ensure!(id >= 0, "squatter: {}", Errno::last());
                made.0.push((kind, id));
            }
        }
        Ok(made)
    }
}

impl Drop for Squatters {
    fn drop(&mut self) {
        for &(kind, id) in &self.0 {
            // SAFETY: IPC_RMID with no buffer.
            unsafe {
                match kind {
                    0 => libc::semctl(id, 0, libc::IPC_RMID),
                    1 => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                    _ => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
                }
            };
        }
    }
}

/// Issue #11 section 1: with `--leave-running` (the default) the application runs on
/// as if nothing happened: a child asleep in `msgrcv` during the freeze gets its message
/// afterwards, and its parent (in the AID) saw no stop; the image counts both processes.
fn leave_running_is_unseen() -> Result<()> {
    let fx = AidFixture::new("snap-live", Flavor::Range)?;
    let mut app = fx.spawn(|chan| {
        // SAFETY: msgget takes integers.
        let q = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        ensure!(q >= 0, "msgget: {}", Errno::last());
        let child = proc::fork(move || {
            let mut buffer = [0u8; 64];
            // SAFETY: a long type and 56 bytes of text fit the buffer.
            let got = unsafe { libc::msgrcv(q, buffer.as_mut_ptr().cast(), 56, 7, 0) };
            if got == 3 && &buffer[8..11] == b"go!" { 0 } else { 1 }
        })?;
        chan.send(1)?;
        chan.recv(secs(120))?;
        // No stop was reported to this parent.
        let mut status = 0;
        // SAFETY: waitpid with a status pointer.
        let r = unsafe { libc::waitpid(child.pid(), &mut status, libc::WUNTRACED | libc::WCONTINUED | libc::WNOHANG) };
        ensure_eq!(r, 0, "waitpid(WUNTRACED|WCONTINUED) after the snapshot (status {status:#x})");
        ensure_eq!(send(q, 7, b"go!"), 0, "msgsnd");
        let mut child = child;
        ensure_eq!(child.wait(secs(60))?, Status::Exited(0), "the child asleep in msgrcv");
        Ok(())
    })?;
    app.expect(1, "ready")?;
    // Let the child reach its msgrcv.
    std::thread::sleep(Duration::from_millis(300));
    let out = cmd::ctl(&["snapshot", fx.name(), "-o", "/tmp/snap-live.img", "--json"])?.ok()?;
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).context("--json output")?;
    ensure_eq!(summary["processes"].as_u64(), Some(3), "processes in {summary}");
    ensure_eq!(summary["killed"].as_bool(), Some(false), "killed in {summary}");
    ensure_eq!(summary["queues"].as_u64(), Some(1), "queues in {summary}");
    app.send(1)?;
    app.finish(secs(120))
}

/// Issue #11 section 3: one image restored under two new names at the same time: both
/// see the same IDs, keys and values, and a change in one is invisible in the other.
fn clones_side_by_side() -> Result<()> {
    let (fx, app, ids, _) = start_app("snap-clone", SMALL_SHM, false)?;
    let image = "/tmp/snap-clone.img";
    cmd::ctl(&["snapshot", fx.name(), "-o", image])?.ok()?;
    drop(app);
    let names = [format!("{}-a", fx.name()), format!("{}-b", fx.name())];
    let running: Vec<_> = names
        .iter()
        .map(|n| {
            let argv = [cmd::APPSHOTCTL, "restore", image, "--as", n.as_str()];
            cmd::spawn(&argv, &cmd::Options::default())
        })
        .collect::<Result<_>>()?;
    let mut guards = Vec::new();
    for (running, name) in running.into_iter().zip(&names) {
        let argv = [cmd::APPSHOTCTL, "restore", image, "--as", name.as_str()];
        cmd::collect(&argv, running, step_timeout())?.ok()?;
        guards.push(AidGuard::adopt_by_name(&fx.dev, name).context("a clone's AID")?);
    }
    // Clone a changes its semaphore 0; clone b still has 7.
    let a = fx.dev.info_by_name(names[0].as_bytes())?.aid;
    let sem = ids[0];
    Agent::spawn(move |_| {
        Device::open()?.link(a, 0)?;
        // SAFETY: SETVAL with an int.
        ensure_eq!(unsafe { libc::semctl(sem, 0, libc::SETVAL, 99 as libc::c_int) }, 0, "SETVAL in clone a");
        Ok(())
    })?
    .finish(step_timeout())?;
    check_restored(&fx.dev, &names[1], ids, SMALL_SHM, None)?;
    let b_tables = ipc_tables(&fx.dev, fx.dev.info_by_name(names[1].as_bytes())?.aid)?;
    let a_tables = ipc_tables(&fx.dev, a)?;
    for (ta, tb) in a_tables.iter().zip(&b_tables) {
        ensure!(ta.iter().zip(tb).all(|(x, y)| x.0 == y.0 && x.1 != y.1), "clone tables: {ta:?} vs {tb:?}");
    }
    Ok(())
}

/// `appshotctl inspect` prints what the image holds, as text and as JSON.
fn inspect_shows_the_state() -> Result<()> {
    let (fx, app, ids, _) = start_app("snap-inspect", SMALL_SHM, false)?;
    let image = "/tmp/snap-inspect.img";
    cmd::ctl(&["snapshot", fx.name(), "-o", image])?.ok()?;
    drop(app);
    let text = cmd::ctl(&["inspect", image])?.ok()?.stdout;
    ensure!(text.contains(fx.name()), "inspect names the application: {text}");
    let json = cmd::ctl(&["inspect", image, "--json"])?.ok()?.stdout;
    let value: serde_json::Value = serde_json::from_str(json.trim()).context("inspect --json")?;
    let text_all = value.to_string();
    for id in ids {
        ensure!(text_all.contains(&id.to_string()), "inspect --json lacks ID {id}");
    }
    ensure!(text_all.contains("32767"), "inspect --json lacks the semaphore value 32767");
    Ok(())
}

/// Restores `image` expecting a refusal whose message contains `want`; nothing may be
/// left: no AID, no SysV object.
fn expect_refused(image: &str, want: &str, dev: &Device) -> Result<()> {
    let aids = dev.list()?.len();
    let objects = system_objects()?;
    let out = cmd::ctl(&["restore", image, "--as", "snap-refused"])?;
    ensure!(!out.success(), "restore of {image} succeeded");
    ensure!(out.stderr.contains(want), "restore of {image}: {:?} lacks {want:?}", out.stderr);
    if let Some(guard) = AidGuard::adopt_by_name(dev, "snap-refused") {
        drop(guard);
        bail!("restore of {image} left its AID");
    }
    ensure_eq!(dev.list()?.len(), aids, "AIDs after a refused restore");
    ensure_eq!(system_objects()?, objects, "SysV objects after a refused restore");
    Ok(())
}

/// Issue #11 section 5: truncated files, flipped bits, wrong magic or version each fail
/// with their own message and create nothing.
fn bad_images_create_nothing() -> Result<()> {
    let (fx, app, _, _) = start_app("snap-bad", SMALL_SHM, false)?;
    let good = "/tmp/snap-bad.img";
    cmd::ctl(&["snapshot", fx.name(), "-o", good])?.ok()?;
    drop(app);
    let bytes = std::fs::read(good)?;
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "truncated"),
        ("truncated", bytes[..bytes.len() / 2].to_vec(), ""),
        ("flipped", { let mut b = bytes.clone(); b[bytes.len() / 3] ^= 0x10; b }, "checksum"),
        ("magic", { let mut b = bytes.clone(); b[0] ^= 0xff; b }, "magic"),
        ("not-an-image", b"#!/bin/sh\necho hello\n".to_vec(), ""),
    ];
    for (what, data, want) in variants {
        let path = format!("/tmp/snap-bad-{what}.img");
        std::fs::write(&path, &data)?;
        expect_refused(&path, want, &fx.dev).with_context(|| what.to_string())?;
    }
    expect_refused("/tmp/snap-no-such-file.img", "cannot read", &fx.dev)?;
    Ok(())
}

/// A restore over an existing name is refused; snapshot and restore need privilege.
fn refusals() -> Result<()> {
    let (fx, app, _, _) = start_app("snap-refuse", 4096, false)?;
    let image = "/tmp/snap-refuse.img";
    cmd::ctl(&["snapshot", fx.name(), "-o", image])?.ok()?;
    let objects = system_objects()?;
    let out = cmd::ctl(&["restore", image])?;
    ensure!(!out.success() && out.stderr.contains("exists already"), "restore over a running application: {:?}", out.stderr);
    ensure_eq!(system_objects()?, objects, "objects after the refusal");
    // From inside the application itself: refused (the freeze would stop appshotctl).
    let out = cmd::ctl(&["run", fx.name(), "--", cmd::APPSHOTCTL, "snapshot", fx.name(), "-o", "/tmp/snap-self.img"])?;
    ensure!(!out.success() && out.stderr.contains("runs inside"), "a snapshot from inside: {:?}", out.stderr);
    for args in [vec!["snapshot", fx.name(), "-o", "/tmp/snap-user.img"], vec!["restore", image, "--as", "snap-user"]] {
        let out = cmd::ctl_as_user(&args)?;
        ensure!(
            !out.success() && out.stderr.contains("CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE"),
            "{args:?} as a user: {:?}",
            out.stderr
        );
    }
    drop(app);
    Ok(())
}

/// Issue #11 section 1: a task that cannot stop (a `CLONE_VFORK` parent waits in state D
/// for its child) fails the snapshot after the timeout with a message that names it, and
/// every task runs on: the child, asleep in the AID, then ends normally.
fn task_that_cannot_stop_fails_cleanly() -> Result<()> {
    let fx = AidFixture::new("snap-stuck", Flavor::Range)?;
    let mut app = fx.spawn(|chan| {
        chan.send(proc::getpid() as i64)?;
        // CLONE_VFORK without CLONE_VM: the parent waits for the child (killably, in
        // state D) as after vfork, while the child has its own copy of the memory.
        // SAFETY: a fork-like clone (no shared memory, no new stack): the child only
        // sleeps and calls _exit.
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_VFORK | libc::SIGCHLD, 0, 0, 0, 0) } as i32;
        if pid == 0 {
            unsafe {
                libc::sleep(8);
                libc::_exit(0)
            }
        }
        ensure!(pid > 0, "vfork: {}", Errno::last());
        let mut status = 0;
        // SAFETY: waitpid with a status pointer.
        ensure_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid, "waitpid");
        ensure_eq!(status, 0, "the vfork child's status");
        Ok(())
    })?;
    app.recv_step()?;
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let out = cmd::ctl(&["snapshot", fx.name(), "-o", "/tmp/snap-stuck.img"])?;
    ensure!(!out.success(), "the snapshot of a task in uninterruptible sleep succeeded");
    ensure!(
        out.stderr.contains("did not stop within 5 s") && out.stderr.contains("uninterruptible"),
        "message {:?}",
        out.stderr
    );
    ensure!(started.elapsed() < secs(30), "the failure took {:?}", started.elapsed());
    ensure!(!std::path::Path::new("/tmp/snap-stuck.img").exists(), "a failed snapshot left its file");
    // Nothing is left stopped: every task of the AID is back to S/R/D.
    for (tid, _) in fx.pid_entries()? {
        let state = proc::state_of(tid);
        ensure!(!matches!(state, Some('t') | Some('T')), "task {tid} left in state {state:?}");
    }
    app.finish(secs(60))
}

/// Issue #11 section 6: a 64 MiB segment and a queue filled to its limit come back
/// byte for byte and in order.
fn large_segment_and_full_queue() -> Result<()> {
    const BIG: usize = 64 * 1024 * 1024;
    let (fx, app, ids, sent) = start_app("snap-large", BIG, true)?;
    ensure!(sent >= 100, "only {sent} messages filled the queue");
    let name = fx.name().to_string();
    let image = "/tmp/snap-large.img";
    let argv = [cmd::APPSHOTCTL, "snapshot", &name, "-o", image, "--kill"];
    cmd::run(&argv, secs(600))?.ok()?;
    drop(app);
    let argv = [cmd::APPSHOTCTL, "restore", image];
    cmd::run(&argv, secs(600))?.ok()?;
    let _restored = AidGuard::adopt_by_name(&fx.dev, &name).context("the restored AID")?;
    let result = check_restored(&fx.dev, &name, ids, BIG, Some(sent));
    let _ = std::fs::remove_file(image);
    result
}

/// Issue #11 section 5: thousands of mutated images, each checked and, when it still
/// parses, restored: no kernel splat (the harness checks the log), and nothing left
/// behind (no AID, no SysV object). Most go through appshotctl's own restore code called
/// in this process (which it links and unlinks), so that thousands fit in the suite's
/// time; a hundred go through the `appshotctl restore` command itself.
fn mutated_images_leave_nothing() -> Result<()> {
    let (fx, app, _, _) = start_app("snap-mut", 4096, false)?;
    let good = "/tmp/snap-mut.img";
    // --kill: this process must have no descendant in an AID, or LINK refuses it.
    cmd::ctl(&["snapshot", fx.name(), "-o", good, "--kill"])?.ok()?;
    drop(app);
    let bytes = std::fs::read(good)?;
    let image = appshot_image::read_image(&bytes).context("the good image")?;
    // Another AID stays registered throughout, as on a system that uses appshot: with
    // none, every unregister would detach the hooks and every register attach them.
    let _keeper = AidFixture::new("snap-mut-keeper", Flavor::NoRange)?;
    let aids = fx.dev.list()?.len();
    let objects = system_objects()?;
    let started = Instant::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut mutant = |round: usize| {
        if round % 2 == 0 {
            // Raw bytes, checksum fixed up, so the parser behind it is reached.
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                b[at] ^= 1 << (next() % 8);
            }
            appshot_image::fix_checksum(&mut b);
            b
        } else {
            // A well-formed image with odd values, which reaches the kernel.
            let mut m = image.clone();
            mutate_model(&mut m, &mut next);
            appshot_image::encode(&m)
        }
    };
    let name = "snap-mut-r";
    let aid_name = appshotctl::values::AidName::parse(std::ffi::OsStr::new(name)).map_err(anyhow::Error::msg)?;
    let device = appshotctl::device::Device::open(std::path::Path::new("/dev/appshot")).context("open the device")?;
    const IN_PROCESS: usize = 2000;
    const THROUGH_THE_COMMAND: usize = 100;
    let (mut restored, mut refused, mut unparsed) = (0, 0, 0);
    for round in 0..IN_PROCESS + THROUGH_THE_COMMAND {
        let data = mutant(round);
        let ok = if round < IN_PROCESS {
            match appshot_image::read_image(&data) {
                Err(_) => {
                    unparsed += 1;
                    continue;
                }
                Ok(image) => match appshotctl::restore::restore(&device, &image, &aid_name) {
                    Ok(_) => true,
                    Err(e) => {
                        let text = format!("{e:#}");
                        ensure!(!text.is_empty(), "round {round}: an empty error");
                        if refused < 5 {
                            crate::diag!("round {round}: {text}");
                        }
                        false
                    }
                },
            }
        } else {
            let path = "/tmp/snap-mut-one.img";
            std::fs::write(path, &data)?;
            let out = cmd::ctl(&["restore", path, "--as", name])?;
            ensure!(out.success() || out.stderr.starts_with("appshotctl: "), "round {round}: {:?}", out.stderr);
            out.success()
        };
        if ok {
            restored += 1;
            // Unlinks this process too, when it restored in-process.
            fx.dev.unregister(fx.dev.info_by_name(name.as_bytes())?.aid, uapi::UNREGISTER_FORCE | uapi::UNREGISTER_DESTROY_IPC)?;
        } else {
            refused += 1;
            ensure!(fx.dev.info_by_name(name.as_bytes()).is_err(), "round {round}: a refused restore left its AID");
        }
        ensure_eq!(fx.dev.unlink(0).err(), Some(Errno(libc::ENOENT)), "round {round}: UNLINK of this process (it must be in no AID)");
        if round % 100 == 0 {
            ensure_eq!(system_objects()?, objects, "SysV objects after round {round}");
        }
    }
    ensure_eq!(fx.dev.list()?.len(), aids, "AIDs after the mutants");
    ensure_eq!(system_objects()?, objects, "SysV objects after the mutants");
    crate::diag!(
        "{} mutants in {} s: {unparsed} refused by the reader, {refused} refused by the restore, {restored} restored and removed",
        IN_PROCESS + THROUGH_THE_COMMAND,
        started.elapsed().as_secs()
    );
    ensure!(restored > 0 && refused > 0, "{restored} restored, {refused} refused: the mutants did not reach both paths");
    Ok(())
}

/// Changes one value of a decoded image to something odd but encodable.
fn mutate_model(m: &mut appshot_image::Image, next: &mut impl FnMut() -> u64) {
    let odd = |n: u64| -> i64 {
        match n % 6 {
            0 => 0,
            1 => -1,
            2 => i32::MAX as i64,
            3 => 1 << 15,
            4 => (n >> 8) as i32 as i64,
            _ => 7,
        }
    };
    let v = odd(next());
    match next() % 10 {
        0 => if let Some(s) = m.sems.first_mut() { s.virtual_id = v as i32 },
        1 => if let Some(s) = m.sems.first_mut() { s.perm.key = v as i32 },
        2 => if let Some(s) = m.sems.first_mut() { if let Some(x) = s.sems.first_mut() { x.value = v as u16 } },
        3 => if let Some(s) = m.shms.first_mut() { s.perm.mode = v as u32 },
        4 => if let Some(s) = m.shms.first_mut() { s.perm.cuid = v as u32 },
        5 => if let Some(q) = m.msgs.first_mut() { q.qbytes = v as u64 },
        6 => if let Some(q) = m.msgs.first_mut() { if let Some(x) = q.messages.first_mut() { x.mtype = v } },
        7 => if let Some(q) = m.msgs.first_mut() { q.virtual_id = v as i32 },
        8 => m.app.pid_range = Some((1, (v as u32).max(1))),
        _ => if let Some(t) = m.tables.iter_mut().find(|t| !t.entries.is_empty()) { t.entries[0].virtual_id = v as u32 },
    }
}

/// The two halves of the cross-boot test (issue #11 section 4), each run in its own boot
/// by `cargo xtask test` with a host folder shared at `dir` (`--share`): `save` starts
/// an application, records what it sees and snapshots it with `--kill` into `dir`;
/// `restore`, in the next boot, first creates unrelated objects so the system IDs
/// differ, then restores the image and checks that the application sees the same
/// virtual IDs, keys, values, bytes and messages (on other system IDs) and that the
/// restored command is the root under its virtual PID.
pub fn cross_boot(phase: &str, dir: &std::path::Path) -> Result<()> {
    let image = dir.join("cross-boot.img");
    let seen = dir.join("cross-boot.ids");
    let name = "cross-boot";
    match phase {
        "save" => {
            let (fx, app, ids, _) = start_app(name, SMALL_SHM, false)?;
            let text: Vec<String> = ids.iter().map(i32::to_string).collect();
            std::fs::write(&seen, text.join(" ")).with_context(|| format!("write {}", seen.display()))?;
            let image_text = image.to_string_lossy().into_owned();
            cmd::ctl(&["snapshot", fx.name(), "-o", &image_text, "--kill"])?.ok()?;
            drop(app);
            ensure!(image.exists(), "{} was not written", image.display());
            Ok(())
        }
        "restore" => {
            let text = std::fs::read_to_string(&seen).with_context(|| format!("read {}", seen.display()))?;
            let ids: Vec<i32> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>().context("the IDs file")?;
            let ids: Ids = ids.try_into().map_err(|v| anyhow::anyhow!("the IDs file holds {v:?}"))?;
            let decoded = appshot_image::read_image(&std::fs::read(&image)?).context("the image")?;
            let _squatters = Squatters::new(3)?;
            let image_text = image.to_string_lossy().into_owned();
            let root = appshotctl::restore::root_pid(&decoded).context("no root process in the image")?;
            let saved_name = decoded.app.name.clone();
            let argv = [cmd::APPSHOTCTL, "restore", image_text.as_str(), "--", "/bin/sh", "-c", "echo $$"];
            let out = cmd::run(&argv, step_timeout())?.ok()?;
            let dev = Device::open()?;
            let _restored = AidGuard::adopt_by_name(&dev, &saved_name).context("the restored AID")?;
            ensure_eq!(out.stdout.trim(), root.to_string(), "the restored command's PID");
            let aid = dev.info_by_name(saved_name.as_bytes())?.aid;
            let now = ipc_tables(&dev, aid)?;
            let then: Vec<Vec<(u32, u32)>> = vec![
                decoded.sems.iter().map(|o| (o.virtual_id as u32, o.system_id as u32)).collect(),
                decoded.shms.iter().map(|o| (o.virtual_id as u32, o.system_id as u32)).collect(),
                decoded.msgs.iter().map(|o| (o.virtual_id as u32, o.system_id as u32)).collect(),
            ];
            for (kind, (then, now)) in then.iter().zip(&now).enumerate() {
                ensure_eq!(now.iter().map(|p| p.0).collect::<Vec<_>>(), then.iter().map(|p| p.0).collect::<Vec<_>>(), "virtual IDs of kind {kind}");
                ensure!(then.iter().zip(now).all(|(t, n)| t.1 != n.1), "kind {kind}: a system ID is the same in both boots: {then:?} / {now:?}");
            }
            check_restored(&dev, &saved_name, ids, SMALL_SHM, None)
        }
        _ => bail!("unknown cross-boot phase {phase:?}"),
    }
}
