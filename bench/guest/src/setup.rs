//! Putting the guest into a configuration and back: appshot.ko loaded or not, AIDs
//! registered through `appshotctl` (the same path a user takes), and, for the
//! 1,000-process AID, a holder process with 998 sleeping children linked to it.
//!
//! Every configuration is undone completely by [`teardown`] (AIDs unregistered with
//! `--force`, sleepers gone), so the next one starts from "module loaded, no AID".

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::measure::{pipe, reap, wait_byte, write_all};

const APPSHOT_KO: &str = "/lib/modules/appshot.ko";
const CANDIDATES_KO: &str = "/lib/modules/hook_candidates.ko";
pub const APPSHOTCTL: &str = "/usr/bin/appshotctl";
/// The virtual PID range of the range configurations: room for the 1,000 processes.
const PID_RANGE: &str = "5000-9999";
/// Sleeping processes besides the worker and the holder: 1 + 1 + 998 = 1,000 in the AID.
const SLEEPERS: usize = 998;

/// One appshot.ko configuration of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// appshot.ko not loaded.
    Unloaded,
    /// Loaded, no AID registered.
    Loaded,
    /// An AID exists (no process in it); the worker is in none.
    OtherAid,
    /// The worker alone in an AID without PID range.
    Aid,
    /// The worker alone in an AID with a PID range.
    AidRange,
    /// The worker in an AID with a PID range and 999 other processes.
    AidThousand,
    /// The worker in an AID with a PID range that owns 10 semaphore sets besides its own.
    AidTenSems,
    /// The same with 10,000 sets.
    AidTenThousandSems,
}

impl Setup {
    /// The configuration's name in `BENCH sample` lines (xtask's table knows them).
    pub fn key(self) -> &'static str {
        match self {
            Setup::Unloaded => "unloaded",
            Setup::Loaded => "loaded",
            Setup::OtherAid => "other-aid",
            Setup::Aid => "aid",
            Setup::AidRange => "aid-range",
            Setup::AidThousand => "aid-1000",
            Setup::AidTenSems => "aid-10-sems",
            Setup::AidTenThousandSems => "aid-10000-sems",
        }
    }
}

/// A configuration in place: what to undo, and which AID the worker joins.
pub struct Prepared {
    registered: Vec<&'static str>,
    worker_aid: Option<&'static str>,
    holder: Option<Holder>,
}

/// The 1,000-process AID's other processes: a holder and its sleeping children, which
/// exit when `release` (the only write end of their pipe) is closed.
struct Holder {
    pid: libc::pid_t,
    release: OwnedFd,
}

impl Prepared {
    /// Nothing registered, worker in no AID.
    pub fn plain() -> Prepared {
        Prepared {
            registered: Vec::new(),
            worker_aid: None,
            holder: None,
        }
    }

    /// Links the (waiting) worker `pid` to this configuration's AID, if it has one.
    pub fn link(&self, pid: libc::pid_t) -> Result<()> {
        match self.worker_aid {
            Some(name) => appshotctl(&["link", name, &pid.to_string()]),
            None => Ok(()),
        }
    }
}

pub fn prepare(setup: Setup) -> Result<Prepared> {
    let mut prepared = Prepared::plain();
    if setup == Setup::Unloaded {
        ensure_unloaded()?;
        return Ok(prepared);
    }
    ensure_loaded()?;
    let (name, range) = match setup {
        Setup::Unloaded | Setup::Loaded => return Ok(prepared),
        Setup::OtherAid => ("bench-other", false),
        Setup::Aid => ("bench-aid", false),
        Setup::AidRange => ("bench-range", true),
        Setup::AidThousand => ("bench-1000", true),
        Setup::AidTenSems => ("bench-10-sems", true),
        Setup::AidTenThousandSems => ("bench-10000-sems", true),
    };
    if range {
        appshotctl(&["register", name, "--pid-range", PID_RANGE])?;
    } else {
        appshotctl(&["register", name])?;
    }
    prepared.registered.push(name);
    if setup != Setup::OtherAid {
        prepared.worker_aid = Some(name);
    }
    if setup == Setup::AidThousand {
        prepared.holder = Some(spawn_holder(name)?);
    }
    match setup {
        Setup::AidTenSems => make_sets(name, 10)?,
        Setup::AidTenThousandSems => make_sets(name, 10_000)?,
        _ => {}
    }
    Ok(prepared)
}

pub fn teardown(prepared: Prepared) -> Result<()> {
    if let Some(holder) = prepared.holder {
        drop(holder.release);
        reap(holder.pid, "holder")?;
    }
    for name in prepared.registered {
        appshotctl(&["unregister", name, "--force", "--destroy-ipc"])?;
    }
    Ok(())
}

/// Has a process linked to `aid` make `count` semaphore sets, which stay the AID's
/// after it exits (the lookup-scaling configurations).
fn make_sets(aid: &'static str, count: usize) -> Result<()> {
    let (go_read, go_write) = pipe()?;
    // SAFETY: the driver is single-threaded; the child only makes sets and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(go_write);
        wait_byte(&go_read);
        for _ in 0..count {
            // SAFETY: semget takes integers only.
            if unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) } < 0 {
                // SAFETY: the driver sees the failure in the status.
                unsafe { libc::_exit(1) };
            }
        }
        // SAFETY: ends the child without the driver's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(go_read);
    let linked = appshotctl(&["link", aid, &pid.to_string()]);
    write_all(&go_write, b"g");
    drop(go_write);
    reap(pid, "set maker")?;
    linked
}

/// Forks the holder, links it to `aid`, lets it fork its sleepers (linked on creation,
/// as children of a linked process) and waits until all of them exist.
fn spawn_holder(aid: &'static str) -> Result<Holder> {
    let (go_read, go_write) = pipe()?;
    let (ready_read, ready_write) = pipe()?;
    let (release_read, release_write) = pipe()?;
    // SAFETY: the driver is single-threaded; the child only forks, reads, waits, _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop((go_write, ready_read, release_write));
        wait_byte(&go_read);
        for _ in 0..SLEEPERS {
            // SAFETY: as above; the sleeper only reads and _exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                wait_byte(&release_read);
                // SAFETY: ends the sleeper at once.
                unsafe { libc::_exit(0) };
            }
            if child < 0 {
                // SAFETY: the driver sees the holder fail and no ready byte.
                unsafe { libc::_exit(1) };
            }
        }
        write_all(&ready_write, b"r");
        let mut status = 0;
        // SAFETY: reaps every sleeper; `status` is a valid out-pointer.
        while unsafe { libc::waitpid(-1, &mut status, 0) } > 0 {}
        // SAFETY: ends the holder without the driver's exit handlers.
        unsafe { libc::_exit(0) };
    }
    drop((go_read, ready_write, release_read));
    let linked = appshotctl(&["link", aid, &pid.to_string()]);
    write_all(&go_write, b"g");
    drop(go_write);
    wait_byte(&ready_read);
    let holder = Holder {
        pid,
        release: release_write,
    };
    if let Err(err) = linked {
        drop(holder.release);
        let _ = reap(holder.pid, "holder");
        return Err(err);
    }
    Ok(holder)
}

/// Runs `appshotctl ARGS`; an error with its stderr unless it succeeds.
pub fn appshotctl(args: &[&str]) -> Result<()> {
    run(APPSHOTCTL, args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn is_loaded(module: &str) -> bool {
    Path::new("/sys/module").join(module).exists()
}

/// Loads appshot.ko unless loaded, and waits for /dev/appshot.
pub fn ensure_loaded() -> Result<()> {
    if !is_loaded("appshot") {
        run("insmod", &[APPSHOT_KO])?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new("/dev/appshot").exists() {
        if Instant::now() > deadline {
            bail!("/dev/appshot did not appear after insmod");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Unloads appshot.ko if loaded (no AID may be registered then).
pub fn ensure_unloaded() -> Result<()> {
    if is_loaded("appshot") {
        rmmod("appshot")?;
    }
    Ok(())
}

/// `rmmod`, retried briefly: a just-exited appshotctl may still hold the device.
fn rmmod(module: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match run("rmmod", &[module]) {
            Ok(()) => return Ok(()),
            Err(err) if tries >= 20 => return Err(err),
            Err(_) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Loads hook_candidates.ko with `mode=MODE`.
pub fn insmod_candidates(mode: &str) -> Result<()> {
    run("insmod", &[CANDIDATES_KO, &format!("mode={mode}")])
}

pub fn rmmod_candidates() -> Result<()> {
    rmmod("hook_candidates")
}
