//! Loading and unloading appshot.ko: refused while an AID is registered or a descriptor
//! is open (also with an AID process blocked in wait4), 100 clean load/use/unload cycles
//! (kmemleak, scanned by the guest's /init after the run, catches what they leak), and
//! the module loaded again at the end.
//!
//! A process here never forks while this process holds /dev/appshot open, and helpers
//! close their inherited copy: any descriptor left open would itself block the unload.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::check::{expect_errno, millis_since, step_timeout, Errno};
use crate::device::{AidGuard, Device};
use crate::fixtures::{expect_pid_table, READY};
use crate::kmod::{self, LoadedGuard};
use crate::proc::{self, Agent, Status};
use crate::{cmd, diag, ensure_eq};

pub const TESTS: &[Test] = &[
    Test::new(
        "load_unload/insmod_while_loaded_eexist",
        insmod_while_loaded_eexist,
    ),
    Test::new(
        "load_unload/refcount_tracks_aids_and_descriptors",
        refcount_tracks_aids_and_descriptors,
    ),
    Test::new(
        "load_unload/rmmod_refused_while_aid_registered",
        rmmod_refused_while_aid_registered,
    ),
    Test::new(
        "load_unload/rmmod_refused_while_descriptor_open",
        rmmod_refused_while_descriptor_open,
    ),
    Test::new(
        "load_unload/rmmod_with_process_blocked_in_wait4",
        rmmod_with_process_blocked_in_wait4,
    ),
    Test::new(
        "load_unload/rmmod_while_woken_calls_return",
        rmmod_while_woken_calls_return,
    ),
    Test::new(
        "load_unload/fast_path_call_keeps_a_gone_aids_reference",
        fast_path_call_keeps_a_gone_aids_reference,
    ),
    Test::new(
        "load_unload/hundred_load_use_unload_cycles",
        hundred_load_use_unload_cycles,
    )
    .slow(1800).costs(88),
    Test::new("load_unload/module_loaded_at_end", module_loaded_at_end),
];

/// Fails unless nothing holds the module: no AID registered, reference count 0.
fn expect_idle() -> Result<()> {
    {
        let dev = Device::open()?;
        let n = dev.nr_aids()?;
        if n != 0 {
            bail!("{n} AIDs are registered by someone else; cannot test unloading");
        }
    }
    let refs = kmod::refcnt()?;
    if refs != 0 {
        bail!("appshot.ko has {refs} references with no AID and no descriptor of ours");
    }
    Ok(())
}

/// Fails unless `rmmod` is refused as "in use" and leaves the module working.
fn expect_unload_refused(what: &str) -> Result<()> {
    match kmod::rmmod() {
        Ok(()) => bail!("{what}: the module unloaded"),
        Err(e) if kmod::is_in_use_error(e) => {}
        Err(e) => bail!("{what}: rmmod failed with {e}, expected EBUSY/EAGAIN (in use)"),
    }
    if !kmod::is_loaded() {
        bail!("{what}: module gone after a refused rmmod");
    }
    Device::open()?
        .version()
        .with_context(|| format!("{what}: VERSION after the refused rmmod"))?;
    Ok(())
}

/// An agent that sleeps until told [`crate::fixtures::GO`], holding no /dev/appshot.
fn plain_sleeper() -> Result<Agent> {
    let mut agent = Agent::spawn(|chan| {
        chan.send(READY)?;
        chan.recv(Duration::from_secs(3600))?;
        Ok(())
    })?;
    agent.expect(READY, "sleeper ready")?;
    Ok(agent)
}

fn insmod_while_loaded_eexist() -> Result<()> {
    let _loaded = LoadedGuard;
    kmod::ensure_loaded()?;
    expect_errno(kmod::insmod(), libc::EEXIST, "insmod while loaded")?;
    Device::open()?.version().context("VERSION afterwards")?;
    Ok(())
}

fn refcount_tracks_aids_and_descriptors() -> Result<()> {
    expect_idle()?;
    let dev = Device::open()?;
    ensure_eq!(kmod::refcnt()?, 1, "references with one open descriptor");
    let a = AidGuard::new(&dev, "ref-a")?;
    let b = AidGuard::new(&dev, "ref-b")?;
    ensure_eq!(
        kmod::refcnt()?,
        3,
        "references with a descriptor and two AIDs"
    );
    drop(dev);
    ensure_eq!(
        kmod::refcnt()?,
        2,
        "references with two AIDs and no descriptor"
    );
    drop(a);
    ensure_eq!(kmod::refcnt()?, 1, "references with one AID");
    drop(b);
    ensure_eq!(kmod::refcnt()?, 0, "references with nothing");
    Ok(())
}

fn rmmod_refused_while_aid_registered() -> Result<()> {
    let _loaded = LoadedGuard;
    expect_idle()?;
    let g = AidGuard::new(&Device::open()?, "rmmod")?;
    expect_unload_refused("rmmod with one AID registered and no descriptor open")?;
    let out = cmd::run(&["/sbin/rmmod", "appshot"], step_timeout())?;
    if out.success() || !kmod::is_loaded() {
        bail!("`rmmod appshot` succeeded with an AID registered");
    }
    drop(g);
    // Nothing holds it now: the busybox tools unload and load it.
    cmd::run(&["/sbin/rmmod", "appshot"], step_timeout())?.ok()?;
    if kmod::is_loaded() {
        bail!("appshot.ko still loaded after `rmmod appshot`");
    }
    expect_errno(
        Device::open_raw().map(|_| ()),
        libc::ENOENT,
        "open /dev/appshot after rmmod",
    )?;
    cmd::run(&["/sbin/insmod", kmod::MODULE_PATH], step_timeout())?.ok()?;
    kmod::wait_for_device()?;
    Device::open()?.version().context("VERSION after insmod")?;
    Ok(())
}

fn rmmod_refused_while_descriptor_open() -> Result<()> {
    let _loaded = LoadedGuard;
    expect_idle()?;
    let dev = Device::open()?;
    expect_unload_refused("rmmod with a descriptor open and no AID")?;
    dev.version()
        .context("VERSION through the descriptor afterwards")?;
    Ok(())
}

/// What the wait4 agent reports: the PID wait4 returned and the child's exit status.
/// An agent that, once told (after the test linked it), forks a child that exits with
/// `child_exit` when released, sends the child's PID (as fork returned it), and waits for
/// it in wait4 while a second thread releases it when the test says so.
fn wait4_agent(child_exit: i32) -> Result<Agent> {
    let agent = Agent::spawn(move |chan| {
        chan.recv(step_timeout())?;
        // Forked after LINK, so the child is in the AID: an AID process can wait only
        // for children it can name.
        let (rx, tx) = proc::pipe()?;
        let read_end = rx.as_raw_fd();
        let child = proc::fork(move || {
            let mut byte = [0u8];
            // SAFETY: blocks until the parent writes (or dies).
            unsafe { libc::read(read_end, byte.as_mut_ptr().cast(), 1) };
            child_exit
        })?;
        chan.send(child.pid() as i64)?;
        // Release the child from another thread when the test says so, while this
        // thread sits in wait4.
        let pid = child.pid();
        std::mem::forget(child);
        std::thread::scope(|s| -> Result<()> {
            s.spawn(|| {
                if chan.recv(Duration::from_secs(600)).is_ok() {
                    proc::write_raw(tx.as_raw_fd(), b"x");
                }
            });
            chan.send(READY)?;
            let mut status = 0;
            // SAFETY: waits for our own child.
            let got = unsafe { libc::wait4(pid, &mut status, 0, std::ptr::null_mut()) };
            chan.send(got as i64)?;
            chan.send(Status::from_raw(status).code())?;
            Ok(())
        })
    })?;
    Ok(agent)
}

fn rmmod_with_process_blocked_in_wait4() -> Result<()> {
    let _loaded = LoadedGuard;
    expect_idle()?;
    let mut agent = wait4_agent(42)?;
    let pid = agent.pid();
    let dev = Device::open()?;
    // Without a PID range: the child's virtual PID is its system PID, so the PID wait4
    // returns is the same number before and after the forced UNREGISTER below.
    let g = AidGuard::new(&dev, "wait4")?;
    dev.link(g.aid, pid).context("LINK the waiting process")?;
    agent.send(1)?;
    let child = agent.recv_step()? as i32;
    agent.expect(READY, "about to wait4")?;
    crate::check::eventually(step_timeout(), "the process sleeps in wait4", || {
        Ok(proc::state_of(pid) == Some('S'))
    })?;
    let mut entries = crate::fixtures::entries_of(pid)?;
    ensure_eq!(
        entries.len(),
        2,
        "threads of the waiting process (wait4 + helper)"
    );
    entries.push((child, child));
    entries.sort();
    expect_pid_table(&dev, g.aid, &entries, "the waiting process and its child")?;
    drop(dev);
    expect_unload_refused("rmmod with an AID whose process is blocked in wait4")?;

    // Without the AID, unloading must work with the process still inside wait4.
    Device::open()?
        .unregister(g.aid, uapi::UNREGISTER_FORCE)
        .context("UNREGISTER --force")?;
    drop(g);
    let start = Instant::now();
    let mut unloader = proc::fork(|| match kmod::rmmod() {
        Ok(()) => 0,
        Err(Errno(e)) => e,
    })?;
    std::thread::sleep(Duration::from_millis(300));
    agent.send(1)?; // the child exits with 42; wait4 returns
    let got = agent.recv_step()?;
    let status = agent.recv_step()?;
    ensure_eq!(got, child as i64, "PID returned by wait4 across the unload");
    ensure_eq!(status, 42, "exit status seen by wait4 across the unload");
    match unloader.wait(step_timeout())? {
        Status::Exited(0) => {}
        Status::Exited(e) if kmod::is_in_use_error(Errno(e)) => {
            diag!(
                "rmmod refused ({}) while the process was in wait4; retrying after it returned",
                Errno(e).name()
            );
            kmod::rmmod().context("rmmod after wait4 returned")?;
        }
        other => bail!("rmmod with the process in wait4: {other}"),
    }
    diag!(
        "unload with a process in wait4 took {} ms",
        millis_since(start)
    );
    if kmod::is_loaded() {
        bail!("appshot.ko still loaded");
    }
    agent.finish(step_timeout())?;
    kmod::ensure_loaded()
}

/// In an agent: waits for the test to LINK it, then makes a message queue of its AID.
fn linked_then_queue(chan: &proc::Channel) -> Result<i32> {
    chan.recv(step_timeout())?;
    // SAFETY: msgget takes integers only.
    let queue = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if queue < 0 {
        bail!("msgget in the AID: {}", Errno::last());
    }
    Ok(queue)
}

/// Processes blocked in `msgrcv`, a call whose fast path holds no reference on its AID
/// (docs/design/hooks.md, `hooks/pin.rs`), are woken by the removal of their queue as
/// their AID goes (`UNREGISTER` with `--force --destroy-ipc`); `rmmod` is tried at once
/// and again until it works. Each woken call returns through the module's code, which
/// must still be there (the drain, or module exit's wait for RCU-tasks, which counts a
/// woken task that has not run yet as still inside): every call reports `EIDRM` and the
/// kernel log stays clean. (The drain alone is checked by
/// `fast_path_call_keeps_a_gone_aids_reference`.)
fn rmmod_while_woken_calls_return() -> Result<()> {
    const SLEEPERS: usize = 24;
    let _loaded = LoadedGuard;
    expect_idle()?;
    let mut agent = Agent::spawn(|chan| {
        let queue = linked_then_queue(chan)?;
        let (rx, tx) = proc::pipe()?;
        let report = tx.as_raw_fd();
        let mut sleepers = Vec::new();
        for _ in 0..SLEEPERS {
            sleepers.push(proc::fork(move || {
                let mut buf = [0u8; 64];
                // SAFETY: receives into a local buffer; blocks until the queue goes.
                let r = unsafe { libc::msgrcv(queue, buf.as_mut_ptr().cast(), 56, 0, 0) };
                let errno = if r < 0 { Errno::last().0 } else { 0 };
                proc::write_raw(report, &errno.to_ne_bytes());
                0
            })?);
        }
        drop(tx);
        for sleeper in &sleepers {
            chan.send(i64::from(sleeper.pid()))?;
        }
        let mut results = Vec::new();
        for _ in 0..SLEEPERS {
            let mut bytes = [0u8; 4];
            proc::read_exact_timeout(rx.as_raw_fd(), &mut bytes, Duration::from_secs(120))?;
            results.push(i32::from_ne_bytes(bytes));
        }
        for mut sleeper in sleepers {
            sleeper.wait(step_timeout())?;
        }
        let eidrm = results.iter().filter(|&&e| e == libc::EIDRM).count();
        if eidrm != SLEEPERS {
            bail!("msgrcv results when the queue went: {results:?} (all EIDRM expected)");
        }
        Ok(())
    })?;
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "woken-calls")?;
    dev.link(g.aid, agent.pid()).context("LINK the agent")?;
    agent.send(1)?;
    let mut pids = Vec::new();
    for _ in 0..SLEEPERS {
        pids.push(agent.recv_step()? as i32);
    }
    crate::check::eventually(step_timeout(), "every sleeper blocks in msgrcv", || {
        Ok(pids.iter().all(|&pid| proc::state_of(pid) == Some('S')))
    })?;
    dev.unregister(g.aid, uapi::UNREGISTER_FORCE | uapi::UNREGISTER_DESTROY_IPC)
        .context("UNREGISTER --force --destroy-ipc")?;
    drop(dev);
    drop(g);
    let start = Instant::now();
    let mut refused = 0;
    loop {
        match kmod::rmmod() {
            Ok(()) => break,
            Err(e) if kmod::is_in_use_error(e) && start.elapsed() < step_timeout() => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => bail!("rmmod while the woken calls return: {e}"),
        }
    }
    diag!("rmmod refused {refused} times, then unloaded after {} ms", millis_since(start));
    agent.finish(step_timeout())?;
    if kmod::is_loaded() {
        bail!("appshot.ko still loaded");
    }
    kmod::ensure_loaded()
}

/// The drain of `hooks/pin.rs`, seen through the module's reference count: a call
/// whose fast path holds no AID reference (`msgrcv`) is in flight (asleep) in AID A
/// when AID B goes. B's module reference must then be kept (the sleeper might be one of
/// B's, for all the module can tell) until no such call is in flight: the count stays
/// up after B's UNREGISTER and drops when root sends the message that ends the
/// `msgrcv` (by its system ID, from outside).
fn fast_path_call_keeps_a_gone_aids_reference() -> Result<()> {
    expect_idle()?;
    let mut agent = Agent::spawn(|chan| {
        let queue = linked_then_queue(chan)?;
        chan.send(i64::from(queue))?;
        let mut buf = [0u8; 64];
        // SAFETY: receives into a local buffer; blocks until root sends.
        let r = unsafe { libc::msgrcv(queue, buf.as_mut_ptr().cast(), 56, 0, 0) };
        chan.send(if r < 0 { -i64::from(Errno::last().0) } else { r as i64 })?;
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::msgctl(queue, libc::IPC_RMID, std::ptr::null_mut()) };
        Ok(())
    })?;
    let dev = Device::open()?;
    let a = AidGuard::new(&dev, "drain-a")?;
    dev.link(a.aid, agent.pid()).context("LINK the agent")?;
    agent.send(1)?;
    let queue = agent.recv_step()?;
    crate::check::eventually(step_timeout(), "the agent sleeps in msgrcv", || {
        Ok(proc::state_of(agent.pid()) == Some('S'))
    })?;
    let system = dev
        .table(a.aid, uapi::TABLE_MSG)?
        .iter()
        .find(|e| i64::from(e.virtual_id) == queue)
        .map(|e| e.system_id)
        .context("no binding for the agent's queue")?;
    // The descriptor, A, and B.
    let b = AidGuard::new(&dev, "drain-b")?;
    ensure_eq!(kmod::refcnt()?, 3, "references with a descriptor and two AIDs");
    dev.unregister(b.aid, 0).context("UNREGISTER B")?;
    drop(b);
    ensure_eq!(kmod::refcnt()?, 3, "references once B went while a fast-path call sleeps (kept for it)");
    let message: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, b'h', b'i', 0, 0, 0, 0, 0, 0];
    // SAFETY: sends 8 bytes of text after the type, from a local buffer.
    let sent = unsafe { libc::msgsnd(system as i32, message.as_ptr().cast(), 8, 0) };
    ensure!(sent == 0, "msgsnd by root to system ID {system}: {}", Errno::last());
    ensure_eq!(agent.recv_step()?, 8, "the agent's msgrcv");
    crate::check::eventually(step_timeout(), "the kept reference dropped", || Ok(kmod::refcnt()? == 2))?;
    agent.finish(step_timeout())?;
    Ok(())
}

fn hundred_load_use_unload_cycles() -> Result<()> {
    const CYCLES: usize = 100;
    let _loaded = LoadedGuard;
    expect_idle()?;
    let start = Instant::now();
    kmod::rmmod().context("initial rmmod")?;
    for cycle in 0..CYCLES {
        let step = |what: &str| format!("cycle {cycle}: {what}");
        if kmod::is_loaded() {
            bail!("{}", step("module loaded before insmod"));
        }
        kmod::insmod().with_context(|| step("insmod"))?;
        kmod::wait_for_device().with_context(|| step("device node"))?;
        let mut sleeper = plain_sleeper().with_context(|| step("sleeper"))?;
        {
            let dev = Device::open().with_context(|| step("open"))?;
            ensure_eq!(dev.nr_aids()?, 0, "{}", step("AIDs after a fresh load"));
            let name = format!("cycle{cycle}");
            let aid = dev.register(&name).with_context(|| step("REGISTER"))?;
            dev.link(aid, sleeper.pid()).with_context(|| step("LINK"))?;
            expect_pid_table(&dev, aid, &[(sleeper.pid(), sleeper.pid())], &step("table"))?;
            dev.unregister(aid, uapi::UNREGISTER_FORCE)
                .with_context(|| step("UNREGISTER --force"))?;
        }
        // Half the time the (now unlinked) process outlives the module.
        if cycle % 2 == 0 {
            sleeper.kill()?;
        }
        kmod::rmmod().map_err(|e| anyhow::anyhow!("{}: {e}", step("rmmod")))?;
        sleeper.kill()?;
        if cycle % 25 == 24 {
            diag!("{} cycles in {} ms", cycle + 1, millis_since(start));
        }
    }
    kmod::ensure_loaded()?;
    diag!(
        "{CYCLES} load/register/link/unregister/unload cycles took {} ms",
        millis_since(start)
    );
    Device::open()?
        .version()
        .context("VERSION after the cycles")?;
    Ok(())
}

fn module_loaded_at_end() -> Result<()> {
    kmod::ensure_loaded()?;
    let dev = Device::open()?;
    let v = dev.version()?;
    ensure_eq!(v.abi_version, uapi::ABI_VERSION, "ABI version");
    ensure_eq!(
        v.entry_limit,
        kmod::max_entries()?,
        "entry limit vs max_entries"
    );
    let g = AidGuard::new(&dev, "end")?;
    ensure_eq!(dev.info(g.aid)?.aid, g.aid, "INFO of a new AID");
    Ok(())
}
