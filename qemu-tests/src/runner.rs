//! The harness: runs each test in its own forked process with a deadline, prints its TAP
//! line, and puts back whatever a test left behind so the next one starts clean.
//!
//! Isolation by process is what makes the suite safe to keep going after a failure: a
//! test that links itself, panics (release builds abort) or hangs takes only its own
//! process down. The harness is a child subreaper, so everything a test forked comes back
//! to it and is killed and reaped. Between tests it compares the AID list, the module's
//! presence and `max_entries` with what they were before the test and restores them; a
//! passing test that left something behind fails (its guard did not do its job).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use appshot_uapi as uapi;

use crate::check::{millis_since, timeout_scale, Errno};
use crate::device::{info_name, Device, DEVICE};
use crate::proc::{self, Status};
use crate::tap::{self, Outcome};
use crate::tests::Test;
use crate::{diag, kmod};

/// A test taking at least this long gets a `# took` line (the debug guest is slow; this
/// shows where the time goes).
const SLOW_TEST: Duration = Duration::from_secs(5);

/// Runs `tests` in order and prints TAP; true when every one passed.
pub fn run_all(tests: &[&Test]) -> bool {
    for line in tap::header(tests.len()) {
        println!("{line}");
    }
    proc::become_subreaper();
    preflight();
    let start = Instant::now();
    let mut failed = Vec::new();
    for (index, test) in tests.iter().enumerate() {
        let before = Snapshot::take();
        let started = Instant::now();
        let mut outcome = run_one(test);
        if started.elapsed() >= SLOW_TEST {
            diag!("{} took {} ms", test.name, millis_since(started));
        }
        let problems = restore(&before);
        if !problems.is_empty() {
            diag!(
                "harness cleanup after {}: {}",
                test.name,
                problems.join("; ")
            );
            if outcome == Outcome::Pass {
                outcome = Outcome::Fail(format!("left state behind: {}", problems.join("; ")));
            }
        }
        if outcome != Outcome::Pass {
            failed.push(test.name);
        }
        println!("{}", tap::result_line(index + 1, test.name, &outcome));
        let _ = std::io::stdout().flush();
    }
    diag!(
        "{} passed, {} failed, took {} ms",
        tests.len() - failed.len(),
        failed.len(),
        millis_since(start)
    );
    if !failed.is_empty() {
        diag!("failed: {}", failed.join(" "));
    }
    failed.is_empty()
}

/// Says up front what the run will find, so a missing device is one clear line rather
/// than a puzzle spread over every failure.
fn preflight() {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    diag!(
        "kernel {}, uid {uid}, timeout scale {}",
        release.trim(),
        timeout_scale()
    );
    if uid != 0 {
        diag!("not running as root: privileged tests will fail");
    }
    match Device::open_raw() {
        Ok(dev) => match dev.version() {
            Ok(v) => diag!(
                "{DEVICE}: ABI {}, features {:#x}, entry limit {}, {} AIDs registered",
                v.abi_version,
                v.features,
                v.entry_limit,
                v.nr_aids
            ),
            Err(e) => diag!("{DEVICE}: VERSION failed: {e}"),
        },
        Err(e) => diag!(
            "{DEVICE}: {e}: appshot.ko is not loaded (module loaded: {}); every test will fail",
            kmod::is_loaded()
        ),
    }
}

/// What a test must leave as it found it.
struct Snapshot {
    loaded: bool,
    max_entries: Option<u32>,
    aids: Option<BTreeSet<u64>>,
}

impl Snapshot {
    fn take() -> Snapshot {
        Snapshot {
            loaded: kmod::is_loaded(),
            max_entries: kmod::max_entries().ok(),
            aids: registered_aids().map(|list| list.into_iter().map(|(aid, _)| aid).collect()),
        }
    }
}

/// Every registered AID with its name, or `None` without a working device. The device is
/// opened and closed again: an open descriptor would keep the module from unloading.
fn registered_aids() -> Option<Vec<(u64, String)>> {
    let dev = Device::open_raw().ok()?;
    let list = dev.list().ok()?;
    Some(
        list.iter()
            .map(|info| (info.aid, info_name(info)))
            .collect(),
    )
}

/// Puts the module, `max_entries` and the AID set back as `before` had them; returns
/// what had to be repaired.
fn restore(before: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    if before.loaded && !kmod::is_loaded() {
        match kmod::ensure_loaded() {
            Ok(()) => problems.push("appshot.ko was left unloaded (reloaded)".to_string()),
            Err(e) => problems.push(format!(
                "appshot.ko was left unloaded and reloading failed: {e:#}"
            )),
        }
    }
    if let Some(old) = before.max_entries {
        match kmod::max_entries() {
            Ok(now) if now != old => {
                let _ = kmod::set_max_entries(old);
                problems.push(format!("max_entries was left at {now} (restored {old})"));
            }
            _ => {}
        }
    }
    if let (Some(old), Some(now)) = (&before.aids, registered_aids()) {
        for (aid, name) in now.into_iter().filter(|(aid, _)| !old.contains(aid)) {
            let result = Device::open_raw()
                .and_then(|d| d.unregister(aid, uapi::UNREGISTER_FORCE | uapi::UNREGISTER_DESTROY_IPC));
            match result {
                Ok(()) => problems.push(format!(
                    "AID {aid} ({name}) was left registered (unregistered)"
                )),
                Err(e) => problems.push(format!(
                    "AID {aid} ({name}) was left registered and unregister failed: {e}"
                )),
            }
        }
    }
    problems
}

/// Exit status of a test process whose test returned an error (its text is in the pipe).
const TEST_FAILED: i32 = 1;

/// Runs one test in a forked process and waits for it within its deadline.
fn run_one(test: &Test) -> Outcome {
    let start = Instant::now();
    let (rx, tx) = match proc::pipe() {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("harness: {e:#}")),
    };
    let run = test.run;
    let read_end = rx.as_raw_fd();
    let child = proc::fork(move || {
        // SAFETY: the child's copy of the read end, which only the harness uses.
        unsafe { libc::close(read_end) };
        // SAFETY: setpgid on ourselves; the group lets the harness kill what the test left.
        unsafe { libc::setpgid(0, 0) };
        proc::become_subreaper();
        let message = match run() {
            Ok(()) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        let _ = std::io::stdout().flush();
        match message {
            None => 0,
            Some(text) => {
                let text: String = text.chars().take(4000).collect();
                proc::write_raw(tx.as_raw_fd(), text.as_bytes());
                TEST_FAILED
            }
        }
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(format!("harness: {e:#}")),
    };
    let pid = child.pid();
    let timeout = Duration::from_secs_f64(test.timeout_s as f64 * timeout_scale());
    let waited = child.wait(timeout);
    // Kill what is left of the test's process group, then reap every orphan that came
    // back to us (subreaper), in the group or not.
    // SAFETY: `pid` > 0 is the test's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let leftovers = reap_leftovers();
    if leftovers > 0 {
        diag!(
            "harness: killed and reaped {leftovers} leftover process(es) of {}",
            test.name
        );
    }
    let message = String::from_utf8_lossy(&proc::read_available(rx.as_raw_fd())).into_owned();
    match waited {
        Ok(Status::Exited(0)) => Outcome::Pass,
        Ok(Status::Exited(TEST_FAILED)) if !message.is_empty() => Outcome::Fail(message),
        Ok(status) => Outcome::Fail(format!(
            "test process {status}{}",
            if status == Status::Signaled(libc::SIGABRT) {
                " (a panic?)"
            } else {
                ""
            }
        )),
        Err(_) => Outcome::Fail(format!(
            "timed out after {} ms (killed)",
            millis_since(start)
        )),
    }
}

/// Kills and reaps every remaining child of the harness; returns how many there were.
fn reap_leftovers() -> usize {
    let me = proc::getpid();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reaped = 0;
    loop {
        for pid in proc::children_of(me) {
            if pid > 0 {
                // SAFETY: `pid` > 0 is a child of ours found in /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mut raw = 0;
        // SAFETY: `raw` is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
        if r > 0 {
            reaped += 1;
            continue;
        }
        if r < 0 && Errno::last().0 == libc::ECHILD {
            return reaped;
        }
        if Instant::now() >= deadline {
            diag!("harness: children still running after 10 s of SIGKILL");
            return reaped;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use anyhow::bail;

    fn passes() -> anyhow::Result<()> {
        Ok(())
    }

    fn fails() -> anyhow::Result<()> {
        bail!("expected EINVAL, got EFAULT")
    }

    fn hangs() -> anyhow::Result<()> {
        proc::sleep_forever()
    }

    fn leaves_a_child() -> anyhow::Result<()> {
        let child = proc::fork(|| proc::sleep_forever())?;
        std::mem::forget(child);
        Ok(())
    }

    fn exits_oddly() -> anyhow::Result<()> {
        // SAFETY: ends this test process at once.
        unsafe { libc::_exit(3) }
    }

    fn test(run: fn() -> anyhow::Result<()>, timeout_s: u64) -> Test {
        Test::new("unit/x", run).slow(timeout_s)
    }

    #[test]
    fn outcomes() {
        let _lock = proc::fork_lock();
        proc::become_subreaper();
        assert_eq!(run_one(&test(passes, 10)), Outcome::Pass);
        assert_eq!(
            run_one(&test(fails, 10)),
            Outcome::Fail("expected EINVAL, got EFAULT".into())
        );
        assert_eq!(
            run_one(&test(exits_oddly, 10)),
            Outcome::Fail("test process exited with status 3".into())
        );
        let start = Instant::now();
        match run_one(&test(hangs, 1)) {
            Outcome::Fail(m) => assert!(m.starts_with("timed out after"), "{m}"),
            Outcome::Pass => panic!("a hanging test passed"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(run_one(&test(leaves_a_child, 10)), Outcome::Pass);
        assert!(
            proc::children_of(proc::getpid()).is_empty(),
            "leftover not reaped"
        );
    }
}
