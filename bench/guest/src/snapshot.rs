//! Section `snapshot` of the bench (issue #11): `appshotctl snapshot` and `appshotctl
//! restore` of an application's SysV state, against creating and filling the same
//! objects natively.
//!
//! Two workloads: 1,000 semaphore sets of 4 semaphores (values set with SETALL), and one
//! 64 MiB shared memory segment written whole. Each round measures, per workload:
//! - `native`: a process in no AID creates and fills the objects;
//! - `snapshot`: `appshotctl snapshot` of an application holding them (it runs on);
//! - `restore`: `appshotctl restore` of that image under a new name.
//!
//! The snapshot and restore times are whole `appshotctl` runs (exec, device, image file on
//! tmpfs included). Another AID stays registered throughout, as on a system that uses
//! appshot, so no run pays for attaching or detaching the hooks. Values are printed per
//! set and per MiB.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::measure::Clock;
use crate::setup::{appshotctl, APPSHOTCTL};

/// Semaphore sets of the first workload.
pub const SETS: usize = 1000;
const SEMS_PER_SET: usize = 4;
/// Size of the second workload's segment.
pub const SEGMENT_MIB: usize = 64;

const IMAGE: &str = "/tmp/appshot-bench.img";
const HELD: &str = "bench-snap";
const RESTORED: &str = "bench-restored";
const KEEPER: &str = "bench-keeper";

/// The two workloads.
#[derive(Clone, Copy)]
pub enum Workload {
    Sets,
    Segment,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Sets, Workload::Segment];

    pub fn key(self) -> &'static str {
        match self {
            Workload::Sets => "sets-1000",
            Workload::Segment => "segment-64mib",
        }
    }

    pub fn parse(key: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == key)
    }

    /// What a value is divided by: sets, or MiB.
    fn units(self) -> f64 {
        match self {
            Workload::Sets => SETS as f64,
            Workload::Segment => SEGMENT_MIB as f64,
        }
    }
}

/// An object of a workload: (is a segment, ID).
type Object = (bool, i32);

/// Creates and fills the workload's objects.
fn create(workload: Workload) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    match workload {
        Workload::Sets => {
            for i in 0..SETS {
                // SAFETY: semget takes integers.
                let id = unsafe { libc::semget(libc::IPC_PRIVATE, SEMS_PER_SET as i32, libc::IPC_CREAT | 0o600) };
                if id < 0 {
                    bail!("semget {i}: {}", std::io::Error::last_os_error());
                }
                objects.push((false, id));
                let values = [(i % 32768) as u16, 1, 2, 3];
                // SAFETY: SETALL reads 4 shorts, the set's size.
                if unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) } < 0 {
                    bail!("SETALL: {}", std::io::Error::last_os_error());
                }
            }
        }
        Workload::Segment => {
            let size = SEGMENT_MIB << 20;
            // SAFETY: shmget takes integers.
            let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
            if id < 0 {
                bail!("shmget: {}", std::io::Error::last_os_error());
            }
            objects.push((true, id));
            // SAFETY: attaches the new segment at an address the kernel picks.
            let base = unsafe { libc::shmat(id, std::ptr::null(), 0) } as *mut u8;
            if base as isize == -1 {
                bail!("shmat: {}", std::io::Error::last_os_error());
            }
            // SAFETY: the segment is mapped at `base` for `size` bytes, ours alone.
            let bytes = unsafe { std::slice::from_raw_parts_mut(base, size) };
            for (i, chunk) in bytes.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&(i as u64).to_ne_bytes());
            }
            // SAFETY: detaches what was attached above.
            unsafe { libc::shmdt(base.cast()) };
        }
    }
    Ok(objects)
}

fn remove(objects: &[Object]) {
    for &(segment, id) in objects {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe {
            if segment {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            } else {
                libc::semctl(id, 0, libc::IPC_RMID);
            }
        }
    }
}

/// `appshot-bench --hold WORKLOAD`: creates the objects (in the AID it runs in), says
/// `ready` and waits to be killed.
pub fn hold(workload: Workload) -> Result<()> {
    create(workload)?;
    println!("ready");
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// One round: (row, column, value) samples, values in ns per set or per MiB.
pub fn round(clock: Clock) -> Result<Vec<(&'static str, &'static str, f64)>> {
    let _ = appshotctl(&["unregister", KEEPER, "--force", "--destroy-ipc"]);
    appshotctl(&["register", KEEPER])?;
    let result = (|| {
        let mut samples = Vec::new();
        for workload in Workload::ALL {
            let start = clock.now();
            let objects = create(workload)?;
            let native = clock.since(start);
            remove(&objects);

            let mut held = Command::new(APPSHOTCTL)
                .args(["run", HELD, "--create", "--", "/usr/libexec/appshot/appshot-bench", "--hold", workload.key()])
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start the application")?;
            let mut line = String::new();
            BufReader::new(held.stdout.take().context("no stdout")?).read_line(&mut line)?;
            if line.trim() != "ready" {
                let _ = held.kill();
                bail!("the held application said {line:?}");
            }
            let start = clock.now();
            let snapshot = appshotctl(&["snapshot", HELD, "-o", IMAGE]);
            let snapshot_ns = clock.since(start);
            let _ = held.kill();
            let _ = held.wait();
            appshotctl(&["unregister", HELD, "--force", "--destroy-ipc"])?;
            snapshot?;

            let start = clock.now();
            appshotctl(&["restore", IMAGE, "--as", RESTORED])?;
            let restore_ns = clock.since(start);
            appshotctl(&["unregister", RESTORED, "--force", "--destroy-ipc"])?;
            let _ = std::fs::remove_file(IMAGE);

            let units = workload.units();
            samples.push(("native", workload.key(), native / units));
            samples.push(("snapshot", workload.key(), snapshot_ns / units));
            samples.push(("restore", workload.key(), restore_ns / units));
        }
        Ok(samples)
    })();
    appshotctl(&["unregister", KEEPER, "--force", "--destroy-ipc"])?;
    result
}
