//! Processes for tests: fork with a guaranteed reap, helper processes ("agents") that run
//! a closure and talk to the test over pipes, waits that always time out, and what
//! `/proc` says about a process.
//!
//! Rules that keep the suite from hanging or leaking: every [`Child`] is killed and reaped
//! when dropped; every wait has a deadline; a forked child never returns into the caller's
//! code (it `_exit`s), and it dies with its parent (`PR_SET_PDEATHSIG`). Code running in a
//! child forked from a multi-threaded process must stay async-signal-safe: no `println!`
//! (another thread may hold the stdout lock at fork time).

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::check::{step_timeout, sys, Errno};

/// The calling thread's system TID.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The calling process's PID (TGID).
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The name of a signal, for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGALRM => "SIGALRM".into(),
        libc::SIGTERM => "SIGTERM".into(),
        _ => format!("signal {sig}"),
    }
}

/// How a child ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

impl Status {
    /// Decodes a `waitpid` status word (only exits and deaths are waited for).
    pub fn from_raw(raw: i32) -> Status {
        if libc::WIFSIGNALED(raw) {
            Status::Signaled(libc::WTERMSIG(raw))
        } else {
            Status::Exited(libc::WEXITSTATUS(raw))
        }
    }
}

impl Status {
    /// One number for a status, to pass over a [`Channel`]: the exit code, or minus the
    /// signal.
    pub fn code(self) -> i64 {
        match self {
            Status::Exited(c) => c as i64,
            Status::Signaled(s) => -(s as i64),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exited with status {code}"),
            Status::Signaled(sig) => write!(f, "killed by {}", signal_name(*sig)),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `waitpid(pid, WNOHANG)`: `None` while it runs.
fn try_waitpid(pid: i32) -> Result<Option<Status>, Errno> {
    let mut raw = 0;
    // SAFETY: `raw` is a valid out-pointer.
    let ret = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG | libc::__WALL) };
    match ret {
        0 => Ok(None),
        r if r == pid => Ok(Some(Status::from_raw(raw))),
        _ => Err(Errno::last()),
    }
}

/// Waits for `pid` until `deadline`, polling (a blocking wait could never time out).
fn waitpid_until(pid: i32, deadline: Instant) -> Result<Option<Status>, Errno> {
    let mut pause = Duration::from_micros(200);
    loop {
        match try_waitpid(pid) {
            Ok(None) => {}
            Err(Errno(libc::EINTR)) => {}
            other => return other,
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A child process this process must reap; killed (`SIGKILL`) and reaped when dropped.
pub struct Child {
    pid: i32,
    status: Option<Status>,
}

impl Child {
    /// Takes charge of process `pid`, which must be this process's child (a fork, or an
    /// orphan reparented to this subreaper).
    pub fn adopt(pid: i32) -> Child {
        assert!(pid > 0, "Child::adopt({pid})");
        Child { pid, status: None }
    }

    /// The child's PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig` (nothing once reaped: the PID may belong to someone else by then).
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: `pid` > 0 (checked at construction): never a process group or -1.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// Reaps it if it has ended.
    pub fn try_wait(&mut self) -> Result<Option<Status>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = try_waitpid(self.pid).map_err(|e| anyhow!("waitpid({}): {e}", self.pid))?;
        self.status = status;
        Ok(status)
    }

    /// Waits for it to end; after `timeout` it is killed, reaped, and this fails.
    pub fn wait(&mut self, timeout: Duration) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        match waitpid_until(self.pid, Instant::now() + timeout) {
            Ok(Some(status)) => {
                self.status = Some(status);
                Ok(status)
            }
            Ok(None) => {
                let _ = self.kill();
                bail!(
                    "process {} still running after {} ms (killed)",
                    self.pid,
                    timeout.as_millis()
                )
            }
            Err(e) => bail!("waitpid({}): {e}", self.pid),
        }
    }

    /// Waits for it and fails unless it exited with `code`.
    pub fn expect_exit(&mut self, code: i32, timeout: Duration) -> Result<()> {
        let status = self.wait(timeout)?;
        if status != Status::Exited(code) {
            bail!(
                "process {}: expected exit status {code}, {status}",
                self.pid
            );
        }
        Ok(())
    }

    /// Kills it with `SIGKILL` and reaps it.
    pub fn kill(&mut self) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.signal(libc::SIGKILL);
        match waitpid_until(self.pid, Instant::now() + step_timeout()) {
            Ok(Some(status)) => {
                self.status = Some(status);
                Ok(status)
            }
            Ok(None) => bail!(
                "process {} survived SIGKILL for {} ms",
                self.pid,
                step_timeout().as_millis()
            ),
            Err(e) => {
                // ECHILD: someone else reaped it (not ours any more); nothing to wait for.
                self.status = Some(Status::Signaled(libc::SIGKILL));
                bail!("waitpid({}): {e}", self.pid)
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Flushes stdout so a child does not inherit (and later print) buffered text.
fn flush_stdout() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

/// Forks; the child runs `body` and `_exit`s with its return value (101 if it panics).
/// The child dies with its parent thread (`PR_SET_PDEATHSIG`).
///
/// Returns once the child has armed that and checked its parent: a test may LINK the
/// child as soon as `fork` returns, and a linked child's `getppid` names no process
/// outside its AID, so the check must not run after that.
pub fn fork(body: impl FnOnce() -> i32) -> Result<Child> {
    flush_stdout();
    let (ready_rx, ready_tx) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork has no memory-safety preconditions; the child only runs `body` and
    // then `_exit`s, never returning into the caller's frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last()).context("fork");
    }
    if pid == 0 {
        drop(ready_rx);
        // SAFETY: prctl with integer arguments; getppid has no preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                libc::_exit(102);
            }
        }
        write_raw(ready_tx.as_raw_fd(), b"r");
        drop(ready_tx);
        let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: _exit ends the process without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(ready_tx);
    let child = Child::adopt(pid);
    // The byte, or EOF if the child died first (a child the AID refused is killed before
    // it runs). The write end may also live on in a child another thread forked
    // meanwhile, so the wait is bounded rather than relying on EOF alone.
    if wait_readable(ready_rx.as_raw_fd(), Duration::from_secs(30))? {
        let mut byte = [0u8; 1];
        // SAFETY: reads at most one byte into a local.
        unsafe { libc::read(ready_rx.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    }
    Ok(child)
}

/// A pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    sys(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).context("pipe2")?;
    // SAFETY: pipe2 returned two new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `bytes` with bare `write(2)` (async-signal-safe).
pub fn write_raw(fd: RawFd, bytes: &[u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: the pointer and length describe the unwritten rest of `bytes`.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return false;
        }
        done += n as usize;
    }
    true
}

/// Waits until `fd` is readable (data or EOF); false on timeout.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return Err(Errno::last()).context("poll");
        }
        if n > 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Reads exactly `buf.len()` bytes before `timeout`; EOF or timeout fail.
pub fn read_exact_timeout(fd: RawFd, buf: &mut [u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_readable(fd, left)? {
            bail!("no message within {} ms", timeout.as_millis());
        }
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return Err(Errno::last()).context("read");
        }
        if n == 0 {
            bail!("peer closed the pipe");
        }
        done += n as usize;
    }
    Ok(())
}

/// Reads one line (without `\n`) before `timeout`, a byte at a time so nothing after the
/// line is consumed.
pub fn read_line_timeout(fd: RawFd, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        let left = deadline.saturating_duration_since(Instant::now());
        read_exact_timeout(fd, &mut byte, left).with_context(|| {
            format!(
                "reading a line (so far {:?})",
                String::from_utf8_lossy(&line)
            )
        })?;
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
}

/// Whatever is readable on `fd` right now, without blocking (at most 64 KiB).
pub fn read_available(fd: RawFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < 65536 {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; timeout 0.
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 || pfd.revents & libc::POLLIN == 0 {
            break;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    out
}

/// One end of the two pipes between a test and an [`Agent`]: 8-byte messages (atomic on
/// a pipe), sent with bare `write(2)` so a forked child can use them safely.
pub struct Channel {
    rx: OwnedFd,
    tx: OwnedFd,
}

impl Channel {
    /// Sends one value (a PID, a count, an AID, a signal to go on).
    pub fn send(&self, value: i64) -> Result<()> {
        if !write_raw(self.tx.as_raw_fd(), &value.to_ne_bytes()) {
            return Err(Errno::last()).context("send to peer");
        }
        Ok(())
    }

    /// Receives one value, failing after `timeout` or when the peer is gone.
    pub fn recv(&self, timeout: Duration) -> Result<i64> {
        let mut buf = [0u8; 8];
        read_exact_timeout(self.rx.as_raw_fd(), &mut buf, timeout)?;
        Ok(i64::from_ne_bytes(buf))
    }

    /// The receiving descriptor (for `poll`).
    pub fn rx_fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }
}

/// A helper process running a closure that reports with values over a [`Channel`] and
/// ends with `Ok` (exit 0) or an error whose text the test receives.
pub struct Agent {
    child: Child,
    chan: Channel,
    errors: OwnedFd,
}

/// Exit status of an agent whose closure returned an error (its text is in the pipe).
const AGENT_FAILED: i32 = 86;

impl Agent {
    /// Forks an agent running `body`.
    pub fn spawn(body: impl FnOnce(&Channel) -> Result<()>) -> Result<Agent> {
        let (to_child_rx, to_child_tx) = pipe()?;
        let (to_parent_rx, to_parent_tx) = pipe()?;
        let (err_rx, err_tx) = pipe()?;
        let parent_ends = [
            to_child_tx.as_raw_fd(),
            to_parent_rx.as_raw_fd(),
            err_rx.as_raw_fd(),
        ];
        let child = fork(move || {
            for fd in parent_ends {
                // SAFETY: the child's copies of the parent's ends, never used here; their
                // owners live in the parent's memory only.
                unsafe { libc::close(fd) };
            }
            let chan = Channel {
                rx: to_child_rx,
                tx: to_parent_tx,
            };
            match body(&chan) {
                Ok(()) => 0,
                Err(e) => {
                    let text = format!("{e:#}");
                    write_raw(err_tx.as_raw_fd(), text.as_bytes());
                    AGENT_FAILED
                }
            }
        })?;
        Ok(Agent {
            child,
            chan: Channel {
                rx: to_parent_rx,
                tx: to_child_tx,
            },
            errors: err_rx,
        })
    }

    /// The agent's PID.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Sends a value to the agent.
    pub fn send(&self, value: i64) -> Result<()> {
        self.chan
            .send(value)
            .with_context(|| format!("agent {}", self.pid()))
    }

    /// Receives a value from the agent; when the agent ended instead, fails with its error.
    pub fn recv(&mut self, timeout: Duration) -> Result<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            if wait_readable(self.chan.rx_fd(), Duration::from_millis(50))? {
                return self
                    .chan
                    .recv(Duration::from_millis(50))
                    .map_err(|e| self.explain(e));
            }
            if self.child.try_wait()?.is_some() {
                // The agent may have sent and ended between the poll above and this
                // check: what it sent before ending is still in the pipe.
                if wait_readable(self.chan.rx_fd(), Duration::ZERO)? {
                    continue;
                }
                return Err(self.explain(anyhow!("ended before sending")));
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent {}: no message within {} ms",
                    self.pid(),
                    timeout.as_millis()
                );
            }
        }
    }

    /// [`Agent::recv`] with the default step timeout.
    pub fn recv_step(&mut self) -> Result<i64> {
        self.recv(step_timeout())
    }

    /// Receives a value that must be `want` (a "ready" or "done" marker).
    pub fn expect(&mut self, want: i64, what: &str) -> Result<()> {
        let got = self
            .recv_step()
            .with_context(|| format!("waiting for {what}"))?;
        if got != want {
            bail!("agent {}: {what}: expected {want}, got {got}", self.pid());
        }
        Ok(())
    }

    /// The agent's error (if it reported one) or its exit status, added to `err`.
    fn explain(&mut self, err: anyhow::Error) -> anyhow::Error {
        let text = String::from_utf8_lossy(&read_available(self.errors.as_raw_fd())).into_owned();
        match (text.is_empty(), self.child.try_wait().ok().flatten()) {
            (false, _) => anyhow!("agent {} failed: {text}", self.pid()),
            (true, Some(status)) => anyhow!("agent {} {status} ({err:#})", self.pid()),
            (true, None) => anyhow!("agent {}: {err:#}", self.pid()),
        }
    }

    /// Waits for the agent to end; fails with its error or an unexpected status.
    pub fn finish(mut self, timeout: Duration) -> Result<()> {
        let status = self
            .child
            .wait(timeout)
            .with_context(|| format!("agent {}", self.pid()))?;
        match status {
            Status::Exited(0) => Ok(()),
            _ => Err(self.explain(anyhow!("{status}"))),
        }
    }

    /// Waits for the agent to end and returns how (for agents expected to die).
    pub fn wait(&mut self, timeout: Duration) -> Result<Status> {
        self.child.wait(timeout)
    }

    /// Kills the agent (`SIGKILL`) and reaps it.
    pub fn kill(&mut self) -> Result<Status> {
        self.child.kill()
    }

    /// How the agent ended, if it has (reaping it); `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<Status>> {
        self.child.try_wait()
    }

    /// The error the agent reported before it ended, if any (empty otherwise).
    pub fn error_text(&mut self) -> String {
        String::from_utf8_lossy(&read_available(self.errors.as_raw_fd())).into_owned()
    }
}

/// Runs `body` in a forked child and returns its result (error text included): for
/// checks that must run with other credentials, or linked, without changing this process.
pub fn in_child(timeout: Duration, body: impl FnOnce() -> Result<()>) -> Result<()> {
    Agent::spawn(|_| body())?.finish(timeout)
}

/// Blocks the calling thread forever (until killed); for helper processes.
pub fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// The TIDs of process `pid`, sorted (from `/proc/PID/task`).
pub fn threads_of(pid: i32) -> Result<Vec<i32>> {
    let dir = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let entry = entry.with_context(|| format!("read {dir}"))?;
        if let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

/// The state letter of task `pid` (`R`, `S`, `Z`, ...) from `/proc/PID/stat`; `None`
/// once it is gone.
pub fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything, including ") ": the state follows the last.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// The parent PID of process `pid` from `/proc/PID/stat`.
pub fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every process whose parent is `parent` (scans `/proc`).
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| ppid_of(pid) == Some(parent))
        .collect()
}

/// Waits until the threads of `pid` number `n` (a helper started its threads).
pub fn wait_for_threads(pid: i32, n: usize) -> Result<Vec<i32>> {
    let mut tids = Vec::new();
    crate::check::eventually(
        step_timeout(),
        &format!("process {pid} has {n} threads"),
        || {
            tids = threads_of(pid)?;
            Ok(tids.len() == n)
        },
    )?;
    Ok(tids)
}

/// Waits until task `pid` is a zombie.
pub fn wait_for_zombie(pid: i32) -> Result<()> {
    crate::check::eventually(
        step_timeout(),
        &format!("process {pid} becomes a zombie"),
        || Ok(state_of(pid) == Some('Z')),
    )
}

/// Waits until the main thread of process `pid` is a zombie (it exited alone) while the
/// process itself goes on.
pub fn wait_for_zombie_thread(pid: i32) -> Result<()> {
    crate::check::eventually(step_timeout(), &format!("main thread of {pid} becomes a zombie"), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().next()).unwrap_or("");
        Ok(state == "Z")
    })
}

/// A signal set holding `signals`.
pub fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set; sigaddset only sets bits.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// `len` bytes of fresh private anonymous read-write memory (`extra_flags`, such as
/// `MAP_32BIT`, added); the caller unmaps it.
pub fn map_anonymous(len: usize, extra_flags: i32) -> Result<*mut libc::c_void> {
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(Errno::last()).context("mmap");
    }
    Ok(addr)
}

/// `execv(path, argv)` in a forked child; returns only on failure (with 127 to `_exit`).
pub fn exec(argv: &[&str]) -> i32 {
    let Ok(args) = argv
        .iter()
        .map(|a| CString::new(*a))
        .collect::<Result<Vec<_>, _>>()
    else {
        return 127;
    };
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: `ptrs` is a NULL-terminated array of NUL-terminated strings that outlive
    // the call (execv only returns on failure).
    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
    127
}

/// Makes this process a child subreaper: orphans of its descendants come back to it, so
/// it can reap them and nothing lingers as a zombie under init.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
}

/// The effective capability set of the calling thread (`capget`, 64 bits).
pub fn effective_caps() -> Result<u64> {
    let (_, data) = capget()?;
    Ok(data[0].effective as u64 | (data[1].effective as u64) << 32)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<(CapHeader, [CapData; 2])> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a v3 header and two data structures, as capget expects.
    sys(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })
        .context("capget")?;
    Ok((header, data))
}

/// Sets the calling thread's effective capabilities to exactly `caps` (bit numbers),
/// leaving the permitted set alone so they can be raised again.
pub fn set_effective_caps(caps: &[u32]) -> Result<()> {
    let (mut header, mut data) = capget()?;
    header.pid = 0;
    data[0].effective = 0;
    data[1].effective = 0;
    for &cap in caps {
        data[(cap / 32) as usize].effective |= 1 << (cap % 32);
    }
    // SAFETY: a v3 header and two data structures, as capset expects.
    sys(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).context("capset")?;
    Ok(())
}

/// Sets the calling thread's effective and permitted capabilities to exactly `effective`
/// and `permitted` (bit numbers; `effective` must be within `permitted`, and `permitted`
/// within what the thread holds) and clears the inheritable set.
pub fn set_caps(effective: &[u32], permitted: &[u32]) -> Result<()> {
    let (mut header, _) = capget()?;
    header.pid = 0;
    let mut data = [CapData::default(); 2];
    for &cap in effective {
        data[(cap / 32) as usize].effective |= 1 << (cap % 32);
    }
    for &cap in permitted {
        data[(cap / 32) as usize].permitted |= 1 << (cap % 32);
    }
    // SAFETY: a v3 header and two data structures, as capset expects.
    sys(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).context("capset")?;
    Ok(())
}

/// The permitted capability set of the calling thread (`capget`, 64 bits).
pub fn permitted_caps() -> Result<u64> {
    let (_, data) = capget()?;
    Ok(data[0].permitted as u64 | (data[1].permitted as u64) << 32)
}

/// Capability bit numbers as a 64-bit mask.
pub fn cap_mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |mask, &cap| mask | 1 << cap)
}

/// Drops this (forked, single-threaded) process to uid/gid 1000 with no supplementary
/// groups, like [`drop_to_user`], but keeps exactly `caps` (bit numbers) in its effective
/// and permitted sets (`PR_SET_KEEPCAPS` across the `setuid`, then `capset`), and checks
/// the result.
pub fn become_user_with_caps(caps: &[u32]) -> Result<()> {
    // SAFETY: prctl with integer arguments.
    sys(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) })
        .context("prctl(PR_SET_KEEPCAPS)")?;
    // SAFETY: plain credential syscalls on the calling process.
    unsafe {
        sys(libc::setgroups(0, std::ptr::null())).context("setgroups")?;
        sys(libc::setgid(USER_GID)).context("setgid")?;
        sys(libc::setuid(USER_UID)).context("setuid")?;
    }
    set_caps(caps, caps)?;
    // SAFETY: getuid/geteuid have no preconditions.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid != USER_UID || euid != USER_UID {
        bail!("still uid {uid} euid {euid} after setuid");
    }
    let (effective, permitted) = (effective_caps()?, permitted_caps()?);
    if effective != cap_mask(caps) || permitted != cap_mask(caps) {
        bail!(
            "capabilities as uid {USER_UID}: effective {effective:#x}, permitted {permitted:#x}; wanted {:#x}",
            cap_mask(caps)
        );
    }
    Ok(())
}

/// Makes the calling process dumpable again (`PR_SET_DUMPABLE` 1): a `setuid` clears the
/// flag, and a process that is not dumpable may be ptraced (and so linked, issue #9) only
/// with `CAP_SYS_PTRACE`.
pub fn set_dumpable() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    sys(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0) })
        .context("prctl(PR_SET_DUMPABLE, 1)")?;
    Ok(())
}

/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_CHECKPOINT_RESTORE`.
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// The unprivileged user of the guest (`appshot-user` in `/etc/passwd`).
pub const USER_UID: u32 = 1000;
/// Its group.
pub const USER_GID: u32 = 1000;

/// Drops this (forked) process to uid/gid 1000 with no supplementary groups and checks
/// that every capability is gone.
pub fn drop_to_user() -> Result<()> {
    // SAFETY: plain credential syscalls on the calling process.
    unsafe {
        sys(libc::setgroups(0, std::ptr::null())).context("setgroups")?;
        sys(libc::setgid(USER_GID)).context("setgid")?;
        sys(libc::setuid(USER_UID)).context("setuid")?;
    }
    // SAFETY: getuid/geteuid have no preconditions.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid != USER_UID || euid != USER_UID {
        bail!("still uid {uid} euid {euid} after setuid");
    }
    let caps = effective_caps()?;
    if caps != 0 {
        bail!("effective capabilities {caps:#x} left after setuid");
    }
    Ok(())
}

/// Unit tests that fork take this: the harness's leftover reaper kills and reaps every
/// child of the process, which must not hit another test's children.
#[cfg(test)]
static TEST_FORK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serializes the unit tests that fork (see [`TEST_FORK_LOCK`]).
#[cfg(test)]
pub fn fork_lock() -> std::sync::MutexGuard<'static, ()> {
    TEST_FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn fork_and_wait() {
        let _lock = fork_lock();
        let mut c = fork(|| 7).unwrap();
        assert_eq!(c.wait(Duration::from_secs(10)).unwrap(), Status::Exited(7));
        let mut c = fork(|| sleep_forever()).unwrap();
        assert!(c.wait(Duration::from_millis(50)).is_err());
        assert_eq!(c.try_wait().unwrap(), Some(Status::Signaled(libc::SIGKILL)));
    }

    #[test]
    fn agent_round_trip_and_error() {
        let _lock = fork_lock();
        let mut a = Agent::spawn(|ch| {
            let v = ch.recv(Duration::from_secs(5))?;
            ch.send(v * 2)
        })
        .unwrap();
        a.send(21).unwrap();
        assert_eq!(a.recv(Duration::from_secs(5)).unwrap(), 42);
        a.finish(Duration::from_secs(5)).unwrap();

        let mut a = Agent::spawn(|_| bail!("boom {}", 3)).unwrap();
        let e = a.recv(Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e:#}").contains("boom 3"), "{e:#}");
        let e = in_child(Duration::from_secs(5), || bail!("inner")).unwrap_err();
        assert!(format!("{e:#}").contains("inner"), "{e:#}");
    }

    #[test]
    fn proc_parsing() {
        let _lock = fork_lock();
        let sleeping = fork(|| sleep_forever()).unwrap();
        crate::check::eventually(Duration::from_secs(5), "S", || {
            Ok(state_of(sleeping.pid()) == Some('S'))
        })
        .unwrap();
        let zombie = fork(|| 0).unwrap();
        wait_for_zombie(zombie.pid()).unwrap();
        assert_eq!(ppid_of(zombie.pid()), Some(getpid()));
        assert!(children_of(getpid()).contains(&zombie.pid()));
        // SAFETY: getppid has no preconditions.
        assert_eq!(ppid_of(getpid()), Some(unsafe { libc::getppid() }));
        assert!(threads_of(getpid()).unwrap().contains(&gettid()));
    }
}
