//! PID virtualization under load and across a module unload attempt (issue #4): 64
//! threads of one AID process calling getpid/gettid/kill/fork/wait4 for 10 seconds while
//! some threads keep exiting and being replaced, with every value checked against the
//! virtual range and the relations between them; and processes of an AID blocked in
//! wait4 while `rmmod appshot` is tried, which must be refused and leave them working.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::Test;
use crate::check::{millis_since, step_timeout};
use crate::device::Device;
use crate::fixtures::GO;
use crate::kmod::{self, LoadedGuard};
use crate::proc;
use crate::virt::{register, spawn_in_aid, PidMap};
use crate::{diag, ensure_eq};

pub const TESTS: &[Test] = &[
    Test::new(
        "pid_stress/threads_getpid_kill_fork_wait_10s",
        threads_getpid_kill_fork_wait_10s,
    )
    .slow(400).costs(90),
    Test::new(
        "pid_stress/rmmod_refused_while_aid_blocked_in_wait4",
        rmmod_refused_while_aid_blocked_in_wait4,
    ),
];

/// 250 virtual IDs: more than the live tasks (64 threads, up to 64 children, the
/// helpers), few enough that allocation wraps around many times in 10 s. A child's exit
/// status carries `getpid() - MIN` (0..=249); 250.. mean it saw something wrong.
const MIN: u32 = 2_000_000;
const MAX: u32 = MIN + 249;
const BAD_PPID: i32 = 250;
const RUN_TIME: Duration = Duration::from_secs(10);
const THREADS: usize = 64;

fn threads_getpid_kill_fork_wait_10s() -> Result<()> {
    let dev = Device::open()?;
    let g = register(&dev, "stress", Some((MIN, MAX)))?;
    let aid = g.aid;
    let mut agent = spawn_in_aid(&dev, aid, |chan| {
        let pid = proc::getpid();
        let in_range = |v: i64| (MIN as i64..=MAX as i64).contains(&v);
        if !in_range(pid as i64) {
            bail!("getpid {pid} before the run is outside {MIN}-{MAX}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let forks = Arc::new(AtomicI64::new(0));
        let calls = Arc::new(AtomicI64::new(0));
        let exits = Arc::new(AtomicI64::new(0));
        let errors = Arc::new(AtomicI64::new(0));
        let first = Arc::new(Mutex::new(None::<String>));
        let fail = {
            let (errors, first) = (errors.clone(), first.clone());
            move |what: String| {
                errors.fetch_add(1, Ordering::Relaxed);
                first.lock().unwrap().get_or_insert(what);
            }
        };
        // One round of a worker: the IDs it sees, signal 0 to itself and the process,
        // and a child forked, checked and reaped.
        let round = {
            let (forks, calls, fail) = (forks.clone(), calls.clone(), fail.clone());
            move |fork: bool| {
                // SAFETY: plain ID queries and signal 0.
                let (p, t, k1, k2) = unsafe {
                    let p = libc::syscall(libc::SYS_getpid) as i32;
                    let t = libc::syscall(libc::SYS_gettid) as i32;
                    (p, t, libc::syscall(libc::SYS_kill, p, 0), libc::syscall(libc::SYS_tgkill, p, t, 0))
                };
                calls.fetch_add(4, Ordering::Relaxed);
                if p != pid || !in_range(t as i64) || k1 != 0 || k2 != 0 {
                    fail(format!("getpid {p} (want {pid}), gettid {t}, kill {k1}, tgkill {k2}"));
                }
                if !fork {
                    return;
                }
                // SAFETY: the child only makes raw system calls and `_exit`s.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    // SAFETY: as above.
                    unsafe {
                        let me = libc::syscall(libc::SYS_getpid) as i32;
                        let code = if libc::syscall(libc::SYS_getppid) as i32 != pid {
                            BAD_PPID
                        } else {
                            me.wrapping_sub(MIN as i32)
                        };
                        libc::_exit(code.clamp(0, 255));
                    }
                }
                if child < 0 {
                    fail(format!("fork: {}", crate::check::Errno::last()));
                    return;
                }
                // SAFETY: signal 0 to our child (alive or a zombie) and reap it.
                let (k, reaped, status) = unsafe {
                    let k = libc::kill(child, 0);
                    let mut status = 0;
                    let r = libc::wait4(child, &mut status, 0, std::ptr::null_mut());
                    (k, r, status)
                };
                forks.fetch_add(1, Ordering::Relaxed);
                let code = libc::WEXITSTATUS(status);
                if !in_range(child as i64) || k != 0 || reaped != child || code != child - MIN as i32 {
                    fail(format!(
                        "fork returned {child}, kill(child, 0) {k}, wait4 {reaped}, the child saw getpid - MIN = {code} (250 = wrong getppid)"
                    ));
                }
            }
        };
        let mut handles = Vec::new();
        for i in 0..THREADS {
            let (stop, round, exits) = (stop.clone(), round.clone(), exits.clone());
            handles.push(std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
                // A quarter of the threads are short-lived: each exits after a few rounds
                // and a new one takes its place.
                while !stop.load(Ordering::Relaxed) {
                    if i % 4 == 3 {
                        let round = round.clone();
                        let _ = std::thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(move || {
                                for _ in 0..3 {
                                    round(false);
                                }
                            })
                            .map(|h| h.join());
                        exits.fetch_add(1, Ordering::Relaxed);
                    } else {
                        round(i % 2 == 0);
                    }
                }
            })?);
        }
        std::thread::sleep(RUN_TIME);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        chan.send(forks.load(Ordering::Relaxed))?;
        chan.send(calls.load(Ordering::Relaxed))?;
        chan.send(exits.load(Ordering::Relaxed))?;
        if let Some(e) = first.lock().unwrap().take() {
            bail!("{} wrong values; first: {e}", errors.load(Ordering::Relaxed));
        }
        Ok(())
    })?;
    // Meanwhile the table, read from outside, holds only virtual IDs of the range.
    let start = Instant::now();
    let mut snapshots = 0;
    while start.elapsed() < RUN_TIME {
        let map = PidMap::read(&dev, aid)?;
        for (v, s) in map.pairs() {
            if !(MIN..=MAX).contains(&v) || v == s {
                bail!("table entry virtual {v} system {s} during the run");
            }
        }
        snapshots += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let forks = agent.recv(RUN_TIME * 20 + step_timeout())?;
    let calls = agent.recv_step()?;
    let exits = agent.recv_step()?;
    diag!(
        "{forks} forks, {calls} ID/signal calls, {exits} short-lived threads, {snapshots} tables in {} ms",
        millis_since(start)
    );
    agent.finish(step_timeout() * 4)?;
    if forks == 0 || calls == 0 || exits == 0 {
        bail!("a role never ran: {forks} forks, {calls} calls, {exits} thread exits");
    }
    ensure_eq!(PidMap::read(&dev, aid)?.pairs(), vec![], "table after the run");
    Ok(())
}

fn rmmod_refused_while_aid_blocked_in_wait4() -> Result<()> {
    let _loaded = LoadedGuard;
    let range = Some((MIN, MAX));
    let dev = Device::open()?;
    let g = register(&dev, "rmmod-wait", range)?;
    // A process of the AID with two children: one thread waits in wait4(-1), another in
    // wait4(child 2), both blocked until the test lets the children go.
    let mut agent = spawn_in_aid(&dev, g.aid, |chan| {
        let (go_rx, go_tx) = proc::pipe()?;
        let (go, go_w) = (go_rx.as_raw_fd(), go_tx.as_raw_fd());
        let mut kids = Vec::new();
        for code in [21, 22] {
            // SAFETY: the child only blocks in read and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let mut b = [0u8];
                // SAFETY: as above.
                unsafe {
                    libc::close(go_w);
                    libc::read(go, b.as_mut_ptr().cast(), 1);
                    libc::_exit(code);
                }
            }
            kids.push(pid);
        }
        drop(go_rx);
        let second = kids[1];
        let waiter = std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waits for our child.
            let r = unsafe { libc::wait4(second, &mut status, 0, std::ptr::null_mut()) };
            (r, libc::WEXITSTATUS(status))
        });
        chan.send(kids[0] as i64)?;
        chan.send(kids[1] as i64)?;
        chan.recv(Duration::from_secs(600))?;
        drop(go_tx); // both children exit
        let mut status = 0;
        // SAFETY: waits for any child; the second is the thread's.
        let r = unsafe { libc::wait4(kids[0], &mut status, 0, std::ptr::null_mut()) };
        let (r2, code2) = waiter.join().map_err(|_| anyhow::anyhow!("waiter panicked"))?;
        chan.send(r as i64)?;
        chan.send(libc::WEXITSTATUS(status) as i64)?;
        chan.send(r2 as i64)?;
        chan.send(code2 as i64)?;
        // Still working afterwards: a new child.
        let mut c = proc::fork(|| 0)?;
        c.expect_exit(0, step_timeout())?;
        chan.send(c.pid() as i64)?;
        Ok(())
    })?;
    let first = agent.recv_step()?;
    let second = agent.recv_step()?;
    drop(dev);
    // Let the threads reach wait4 before the unload attempt.
    std::thread::sleep(Duration::from_millis(500));
    for attempt in 0..3 {
        match kmod::rmmod() {
            Ok(()) => bail!("attempt {attempt}: appshot.ko unloaded while an AID with processes blocked in wait4 is registered"),
            Err(e) if kmod::is_in_use_error(e) => {}
            Err(e) => bail!("attempt {attempt}: rmmod failed with {e}, expected EBUSY/EAGAIN"),
        }
    }
    if !kmod::is_loaded() {
        bail!("module gone after refused unloads");
    }
    agent.send(GO)?;
    let r1 = agent.recv_step()?;
    let c1 = agent.recv_step()?;
    let r2 = agent.recv_step()?;
    let c2 = agent.recv_step()?;
    let later = agent.recv_step()?;
    ensure_eq!((r1, c1), (first, 21), "wait4(first child) after the refused unloads");
    ensure_eq!((r2, c2), (second, 22), "wait4(second child) in a thread after the refused unloads");
    crate::virt::expect_in_range(later, range, "a child forked afterwards")?;
    agent.finish(step_timeout())
}
