//! Races: concurrent REGISTERs, a process whose threads link, unlink, fork and spawn at
//! once, UNREGISTER --force in the middle of forks, two LINKs of one process at once.
//! Afterwards the tables must hold exactly the live tasks. The tests of linked
//! processes run in an AID with a PID range and in one without.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::{eventually, millis_since, step_timeout, Errno};
use crate::device::{info_name, AidGuard, Device};
use crate::fixtures::{release, sleeper, READY};
use crate::proc::{self, Agent};
use crate::{diag, ensure_eq, virt};

pub const TESTS: &[Test] = &[
    Test::new(
        "concurrency/register_32_processes_distinct_aids",
        register_32_processes_distinct_aids,
    ),
    Test::new(
        "concurrency/register_same_name_one_wins",
        register_same_name_one_wins,
    ),
    Test::new(
        "concurrency/threads_link_unlink_fork_table_consistent",
        threads_link_unlink_fork_table_consistent,
    )
    .slow(300).costs(10),
    Test::new(
        "concurrency/force_unregister_while_forking",
        force_unregister_while_forking,
    )
    .slow(300),
    Test::new(
        "concurrency/link_race_two_aids_one_wins",
        link_race_two_aids_one_wins,
    ),
];

/// Blocks until the barrier pipe's write end is closed everywhere (EOF).
fn wait_barrier(rx: &OwnedFd) -> Result<()> {
    if !proc::wait_readable(rx.as_raw_fd(), step_timeout())? {
        bail!("barrier not released");
    }
    Ok(())
}

/// Starts `n` agents that each wait at a barrier, then run `body(i)` and send its value;
/// releases them together and returns the values in agent order.
fn race(n: usize, body: impl Fn(usize) -> i64) -> Result<Vec<i64>> {
    let (rx, tx) = proc::pipe()?;
    let tx_fd = tx.as_raw_fd();
    let mut agents = Vec::new();
    for i in 0..n {
        let body = &body;
        let rx = &rx;
        agents.push(Agent::spawn(move |chan| {
            // SAFETY: this child's copy of the barrier's write end, owned by the parent's
            // memory only: closing it is what lets EOF arrive.
            unsafe { libc::close(tx_fd) };
            chan.send(READY)?;
            wait_barrier(rx)?;
            chan.send(body(i))
        })?);
    }
    for a in &mut agents {
        a.expect(READY, "at the barrier")?;
    }
    drop(tx);
    let mut values = Vec::new();
    for a in &mut agents {
        values.push(a.recv_step()?);
    }
    for a in agents {
        a.finish(step_timeout())?;
    }
    Ok(values)
}

/// REGISTER's result as one value: the AID, or minus the errno.
fn register_value(dev: &Device, name: &str) -> i64 {
    match dev.register(name) {
        Ok(aid) => aid as i64,
        Err(e) => -(e.0 as i64),
    }
}

fn register_32_processes_distinct_aids() -> Result<()> {
    const N: usize = 32;
    let dev = Device::open()?;
    let nr_aids = dev.nr_aids()?;
    let names: Vec<String> = (0..N)
        .map(|i| crate::device::unique_name(&format!("conc{i}")))
        .collect();
    let values = race(N, |i| register_value(&dev, &names[i]))?;
    let mut guards = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        if v > 0 {
            guards.push(AidGuard::adopt(v as u64, &names[i]));
        }
    }
    for (i, &v) in values.iter().enumerate() {
        if v <= 0 {
            bail!(
                "process {i}: REGISTER failed with {}",
                Errno(-v as i32).name()
            );
        }
        ensure_eq!(
            info_name(&dev.info(v as u64)?),
            names[i],
            "name of the AID process {i} got"
        );
    }
    let mut aids: Vec<i64> = values.clone();
    aids.sort_unstable();
    aids.dedup();
    ensure_eq!(aids.len(), N, "distinct AIDs among {values:?}");
    ensure_eq!(dev.nr_aids()?, nr_aids + N as u32, "number of AIDs");
    Ok(())
}

fn register_same_name_one_wins() -> Result<()> {
    const N: usize = 16;
    let dev = Device::open()?;
    let name = crate::device::unique_name("same");
    let values = race(N, |_| register_value(&dev, &name))?;
    let winners: Vec<i64> = values.iter().copied().filter(|&v| v > 0).collect();
    let _guards: Vec<AidGuard> = winners
        .iter()
        .map(|&v| AidGuard::adopt(v as u64, &name))
        .collect();
    ensure_eq!(
        winners.len(),
        1,
        "successful REGISTERs of one name by {N} processes ({values:?})"
    );
    let losers = values
        .iter()
        .filter(|&&v| v == -(libc::EEXIST as i64))
        .count();
    ensure_eq!(losers, N - 1, "EEXIST answers ({values:?})");
    ensure_eq!(
        dev.info_by_name(name.as_bytes())?.aid,
        winners[0] as u64,
        "INFO by the name"
    );
    Ok(())
}

/// How long the racing threads run.
const RACE_TIME: Duration = Duration::from_secs(3);

/// Counters the racing threads keep.
#[derive(Default)]
struct Counters {
    forks: AtomicI64,
    links: AtomicI64,
    threads: AtomicI64,
    tables: AtomicI64,
    errors: AtomicI64,
    stranded: AtomicI64,
}

fn threads_link_unlink_fork_table_consistent() -> Result<()> {
    for_each_flavor("race", threads_link_unlink_fork_table_consistent_in)
}

fn threads_link_unlink_fork_table_consistent_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid, ranged) = (&fx.dev, fx.aid(), fx.range().is_some());
    let mut agent = fx.spawn_linked(|chan| {
        // The table holds system IDs; getpid is a virtual one while linked with a range.
        let me = virt::system_pid()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
        let mut handles = Vec::new();
        for i in 0..8 {
            let (stop, counters, first_error) =
                (stop.clone(), counters.clone(), first_error.clone());
            let fd = dev.fd();
            handles.push(std::thread::spawn(move || {
                let dev = RawDev(fd);
                let fail = |what: String| {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(what);
                };
                while !stop.load(Ordering::Relaxed) {
                    match i % 4 {
                        0 => {
                            match judge_fork(ranged, fork_exit_wait()) {
                                Ok(false) => {}
                                Ok(true) => {
                                    counters.stranded.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => fail(e),
                            }
                            counters.forks.fetch_add(1, Ordering::Relaxed);
                        }
                        1 => {
                            match dev.unlink() {
                                Ok(()) | Err(Errno(libc::ENOENT)) => {}
                                Err(e) => fail(format!("UNLINK self: {e}")),
                            }
                            if let Err(e) = dev.link(aid) {
                                fail(format!("LINK self: {e}"));
                            }
                            counters.links.fetch_add(1, Ordering::Relaxed);
                        }
                        2 => {
                            let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(|| ()).map(|h| h.join());
                            counters.threads.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            // Every entry is a thread of this process or a forked child.
                            match dev.owners(aid) {
                                Ok(entries) => {
                                    for (tid, owner) in entries {
                                        if owner != me && owner != tid {
                                            fail(format!("entry {tid} owned by {owner}, neither us ({me}) nor itself"));
                                        }
                                    }
                                }
                                Err(e) => fail(format!("TABLE: {e}")),
                            }
                            counters.tables.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        std::thread::sleep(RACE_TIME);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        dev.link(aid, 0).context("final LINK self")?;
        if let Some(e) = first_error.lock().unwrap().take() {
            bail!(
                "{} errors; first: {e}",
                counters.errors.load(Ordering::Relaxed)
            );
        }
        let stranded = counters.stranded.load(Ordering::Relaxed);
        let leftovers = reap_leftovers();
        if leftovers != stranded {
            bail!("{leftovers} children left unreaped, {stranded} of them stranded by an UNLINK or LINK");
        }
        chan.send(stranded)?;
        chan.send(counters.forks.load(Ordering::Relaxed))?;
        chan.send(counters.links.load(Ordering::Relaxed))?;
        chan.send(counters.threads.load(Ordering::Relaxed))?;
        chan.send(counters.tables.load(Ordering::Relaxed))?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    // Meanwhile, from outside: every snapshot is well-formed (pid_entries checks order
    // and the virtual IDs against the range, or virtual = system without one).
    let start = Instant::now();
    let mut snapshots = 0;
    while start.elapsed() < RACE_TIME {
        fx.pid_entries().context("TABLE during the race")?;
        dev.info(aid).context("INFO during the race")?;
        snapshots += 1;
    }
    let stranded = agent.recv(RACE_TIME * 20 + step_timeout())?;
    let forks = agent.recv_step()?;
    let links = agent.recv_step()?;
    let threads = agent.recv_step()?;
    let tables = agent.recv_step()?;
    diag!("{forks} forks ({stranded} stranded), {links} unlink+link, {threads} threads, {tables} inner and {snapshots} outer TABLEs in {} ms", millis_since(start));
    if forks == 0 || links == 0 || threads == 0 {
        bail!("a racing role never ran: {forks} forks, {links} links, {threads} threads");
    }
    let pid = agent.pid();
    // Joined threads are released a moment after pthread_join returns.
    let mut last = Vec::new();
    eventually(
        crate::check::secs(10),
        "only the main thread left in the table",
        || {
            last = fx.pid_entries()?;
            Ok(last == [(pid, pid)])
        },
    )
    .with_context(|| format!("table {last:?}"))?;
    fx.expect_pid_table(&[(pid, pid)], "after the race")?;
    agent.send(1)?;
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after the process was reaped")
}

/// The few requests the racing threads make, on a descriptor number they share (a
/// `Device` is not shared across threads by reference here, to keep the closure 'static).
struct RawDev(i32);

impl RawDev {
    fn ioctl<T>(&self, cmd: u32, req: &mut T) -> Result<(), Errno> {
        // SAFETY: `req` is a request structure of the size `cmd` encodes, borrowed for
        // the call; TABLE requests carry a valid array (see `owners`).
        let r = unsafe { libc::ioctl(self.0, cmd as libc::c_ulong, req as *mut T) };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }

    fn link(&self, aid: u64) -> Result<(), Errno> {
        self.ioctl(uapi::IOC_LINK, &mut Device::link_request(aid, 0))
    }

    fn unlink(&self) -> Result<(), Errno> {
        self.ioctl(uapi::IOC_UNLINK, &mut Device::unlink_request(0))
    }

    /// `(tid, owner)` of the PID table (at most 256 entries read).
    fn owners(&self, aid: u64) -> Result<Vec<(i32, i32)>, Errno> {
        let mut entries = vec![uapi::TableEntry::zeroed(); 256];
        let mut req = uapi::TableRequest::zeroed();
        req.size = crate::device::size_of::<uapi::TableRequest>();
        req.aid = aid;
        req.table = uapi::TABLE_PID;
        req.entries = entries.as_mut_ptr() as u64;
        req.capacity = entries.len() as u32;
        self.ioctl(uapi::IOC_TABLE, &mut req)?;
        entries.truncate(req.count.min(req.capacity) as usize);
        Ok(entries
            .iter()
            .map(|e| (e.system_id as i32, e.owner_id as i32))
            .collect())
    }
}

fn force_unregister_while_forking() -> Result<()> {
    for_each_flavor("force-race", force_unregister_while_forking_in)
}

fn force_unregister_while_forking_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid, ranged) = (&fx.dev, fx.aid(), fx.range().is_some());
    let mut agent = fx.spawn_linked(|chan| {
        let stop = Arc::new(AtomicBool::new(false));
        let forks = Arc::new(AtomicI64::new(0));
        let bad = Arc::new(AtomicI64::new(0));
        let stranded = Arc::new(AtomicI64::new(0));
        let mut handles = Vec::new();
        for _ in 0..4 {
            let (stop, forks, bad, stranded) =
                (stop.clone(), forks.clone(), bad.clone(), stranded.clone());
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match judge_fork(ranged, fork_exit_wait()) {
                        Ok(false) => {}
                        Ok(true) => {
                            stranded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    forks.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        chan.send(READY)?;
        chan.recv(step_timeout())?;
        let at_unregister = forks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let stranded = stranded.load(Ordering::Relaxed);
        let leftovers = reap_leftovers();
        if leftovers != stranded {
            bail!(
                "{leftovers} children left unreaped, {stranded} of them stranded by the UNREGISTER"
            );
        }
        chan.send(at_unregister)?;
        chan.send(forks.load(Ordering::Relaxed))?;
        chan.send(bad.load(Ordering::Relaxed))?;
        chan.send(stranded)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    agent.expect(READY, "forking")?;
    std::thread::sleep(Duration::from_millis(500));
    dev.unregister(aid, uapi::UNREGISTER_FORCE)
        .context("UNREGISTER --force while the process forks")?;
    agent.send(1)?;
    let at_unregister = agent.recv_step()?;
    let total = agent.recv_step()?;
    let bad = agent.recv_step()?;
    let stranded = agent.recv_step()?;
    diag!("{total} forks ({stranded} stranded), {at_unregister} before the forced UNREGISTER");
    if bad != 0 {
        bail!("{bad} of {total} children did not exit normally (killed by the module?)");
    }
    if total <= at_unregister {
        bail!("no fork after the forced UNREGISTER ({total} in all)");
    }
    crate::check::expect_errno(
        dev.info(aid),
        libc::ENOENT,
        "INFO after the forced UNREGISTER",
    )?;
    crate::check::expect_errno(
        dev.unlink(agent.pid()),
        libc::ENOENT,
        "UNLINK of the process afterwards",
    )?;
    agent.send(1)?;
    agent.finish(step_timeout())
}

fn link_race_two_aids_one_wins() -> Result<()> {
    for_each_flavor("race-a", link_race_two_aids_one_wins_in)
}

fn link_race_two_aids_one_wins_in(a: &AidFixture) -> Result<()> {
    const ROUNDS: usize = 50;
    let dev = &a.dev;
    let b = AidFixture::with_range("race-b", a.range())?;
    let target = sleeper(dev, None, 2)?;
    let pid = target.pid();
    let expected = crate::fixtures::entries_of(pid)?;
    let (a_wins, b_wins) = (AtomicI64::new(0), AtomicI64::new(0));
    for round in 0..ROUNDS {
        let barrier = Barrier::new(2);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                barrier.wait();
                dev.link(a.aid(), pid)
            });
            let hb = s.spawn(|| {
                barrier.wait();
                dev.link(b.aid(), pid)
            });
            (ha.join(), hb.join())
        });
        let (ra, rb) = match (ra, rb) {
            (Ok(ra), Ok(rb)) => (ra, rb),
            _ => bail!("a racing thread panicked"),
        };
        let (winner, loser_result) = match (ra, rb) {
            (Ok(()), Err(e)) => {
                a_wins.fetch_add(1, Ordering::Relaxed);
                ((a, &b), e)
            }
            (Err(e), Ok(())) => {
                b_wins.fetch_add(1, Ordering::Relaxed);
                ((&b, a), e)
            }
            other => bail!("round {round}: two LINKs to different AIDs gave {other:?}; expected one success and EBUSY"),
        };
        ensure_eq!(
            loser_result.0,
            libc::EBUSY,
            "round {round}: the losing LINK's errno"
        );
        winner
            .0
            .expect_pid_table(&expected, &format!("round {round}: winner"))?;
        winner
            .1
            .expect_pid_table(&[], &format!("round {round}: loser"))?;
        dev.unlink(pid)
            .with_context(|| format!("round {round}: UNLINK"))?;
    }
    diag!(
        "AID a won {} rounds, b {}",
        a_wins.load(Ordering::Relaxed),
        b_wins.load(Ordering::Relaxed)
    );
    release(target)
}

/// Forks a child that exits at once and waits for it by the PID fork returned: that PID
/// and what waitpid returned with the child's raw wait status, or the errno fork or
/// waitpid failed with (no status, rather than a default one that would read as a normal
/// exit).
///
/// While another thread UNLINKs and LINKs the process (or a forced UNREGISTER unlinks
/// it), the child may change ID spaces between the fork and the wait: with a range,
/// waitpid may return it under another PID, or fail with ECHILD (the virtual PID fork
/// returned names nothing once the process has left the AID). Such a child is
/// *stranded* and left for [`reap_leftovers`]. Without a range the PID is the same in
/// every ID space, and a child in no AID under a linked parent (one that was a zombie
/// when LINK took its parent) is found by its PID: ECHILD there is an error.
fn fork_exit_wait() -> (libc::pid_t, Result<(libc::pid_t, libc::c_int), Errno>) {
    // SAFETY: the child only calls `_exit`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return (pid, Err(Errno::last()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    if reaped <= 0 {
        return (pid, Err(Errno::last()));
    }
    (pid, Ok((reaped, status)))
}

/// How a [`fork_exit_wait`] ended in a race: `Err` with the reason when it is wrong
/// (`ranged`: the AID has a PID range), else whether the child was stranded.
fn judge_fork(
    ranged: bool,
    outcome: (libc::pid_t, Result<(libc::pid_t, libc::c_int), Errno>),
) -> Result<bool, String> {
    match outcome {
        (pid, Ok((reaped, status))) => {
            if !exited_0(status) {
                Err(format!(
                    "forked child {pid} ended with raw status {status:#x}"
                ))
            } else if reaped != pid && !ranged {
                Err(format!("waitpid({pid}) returned {reaped} without a range"))
            } else {
                Ok(false)
            }
        }
        (pid, Err(Errno(libc::ECHILD))) if pid > 0 && ranged => Ok(true),
        (pid, Err(e)) => Err(format!("fork ({pid}) and waitpid: {e}")),
    }
}

/// Whether a raw wait status is `exit(0)`.
fn exited_0(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Reaps every child the calling process has left (children of [`fork_exit_wait`], which
/// exit at once); returns how many there were.
fn reap_leftovers() -> i64 {
    let mut n = 0;
    loop {
        // SAFETY: waits for any child; no status wanted.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
        if r > 0 {
            n += 1;
        } else if Errno::last().0 != libc::EINTR {
            return n;
        }
    }
}
