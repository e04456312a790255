//! Running programs (appshotctl, busybox applets) with a deadline and captured output.
//!
//! Programs are started with our own fork + exec, which keeps every step between fork and
//! exec (dropping privileges, the process group) in one place the tests can read. Each
//! program runs in its own process group, so a timeout kills whatever it started too.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::check::{step_timeout, Errno};
use crate::proc::{self, Child, Status};

/// Where appshotctl is installed in the guest.
pub const APPSHOTCTL: &str = "/usr/bin/appshotctl";

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub argv: Vec<String>,
    /// How it ended.
    pub status: Status,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Status::Exited(0)
    }

    /// Fails unless it exited with status 0, quoting its stderr.
    pub fn ok(self) -> Result<Output> {
        if !self.success() {
            bail!(
                "`{}` {}; stderr: {:?}",
                self.argv.join(" "),
                self.status,
                self.stderr.trim()
            );
        }
        Ok(self)
    }
}

/// How to start a program.
#[derive(Default)]
pub struct Options<'a> {
    /// Run it as uid/gid 1000 without supplementary groups.
    pub as_user: bool,
    /// Give it a pipe as stdin (returned in [`Running::stdin`]) instead of /dev/null.
    pub stdin_pipe: bool,
    /// Runs in the child just before the exec (async-signal-safe code only); an error
    /// fails the spawn with that errno.
    pub pre_exec: Option<&'a dyn Fn() -> Result<(), Errno>>,
}

/// A started program: the process (leader of its own process group) and its pipes.
pub struct Running {
    /// The process; killed and reaped when dropped.
    pub child: Child,
    /// Its stdin, with [`Options::stdin_pipe`].
    pub stdin: Option<OwnedFd>,
    /// Its stdout.
    pub stdout: OwnedFd,
    /// Its stderr.
    pub stderr: OwnedFd,
}

/// Starts `argv` (`argv[0]` an absolute path).
pub fn spawn(argv: &[&str], options: &Options) -> Result<Running> {
    let line = argv.join(" ");
    let args = argv
        .iter()
        .map(|a| CString::new(*a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (in_rx, in_tx) = proc::pipe()?;
    let (out_rx, out_tx) = proc::pipe()?;
    let (err_rx, err_tx) = proc::pipe()?;
    let (exec_rx, exec_tx) = proc::pipe()?;
    let stdin_fd = if options.stdin_pipe {
        in_rx.as_raw_fd()
    } else {
        -1
    };
    let fds = (
        stdin_fd,
        out_tx.as_raw_fd(),
        err_tx.as_raw_fd(),
        exec_tx.as_raw_fd(),
    );
    let child = proc::fork(|| {
        // Everything here is async-signal-safe: the caller may have other threads.
        let report = |errno: i32| -> i32 {
            proc::write_raw(fds.3, &errno.to_ne_bytes());
            127
        };
        // SAFETY: descriptor and credential calls on this child only; `ptrs` is a
        // NULL-terminated array of C strings built before the fork.
        unsafe {
            libc::setpgid(0, 0);
            let stdin = if fds.0 >= 0 {
                fds.0
            } else {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY)
            };
            if libc::dup2(stdin, 0) < 0 || libc::dup2(fds.1, 1) < 0 || libc::dup2(fds.2, 2) < 0 {
                return report(Errno::last().0);
            }
            if options.as_user
                && (libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(proc::USER_GID) < 0
                    || libc::setuid(proc::USER_UID) < 0)
            {
                return report(Errno::last().0);
            }
            if let Some(hook) = options.pre_exec {
                if let Err(e) = hook() {
                    return report(e.0);
                }
            }
            libc::execv(ptrs[0], ptrs.as_ptr());
            report(Errno::last().0)
        }
    })
    .with_context(|| format!("start `{line}`"))?;
    drop((in_rx, out_tx, err_tx, exec_tx));
    let mut running = Running {
        child,
        stdin: options.stdin_pipe.then_some(in_tx),
        stdout: out_rx,
        stderr: err_rx,
    };
    // The exec pipe closes at the exec (close-on-exec) or carries the errno.
    let mut buf = [0u8; 4];
    let n = read_blocking(exec_rx.as_raw_fd(), &mut buf, step_timeout())?;
    if n == 4 {
        let e = Errno(i32::from_ne_bytes(buf));
        let _ = running.child.wait(step_timeout());
        return Err(anyhow!("start `{line}`: {e}"));
    }
    Ok(running)
}

/// Reads up to `buf.len()` bytes, until EOF or `timeout`; returns how many.
fn read_blocking(fd: RawFd, buf: &mut [u8], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    while done < buf.len() {
        if !proc::wait_readable(fd, deadline.saturating_duration_since(Instant::now()))? {
            bail!("no answer within {} ms", timeout.as_millis());
        }
        // SAFETY: the pointer and length describe the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        match n {
            0 => break,
            n if n < 0 && Errno::last().0 == libc::EINTR => continue,
            n if n < 0 => return Err(Errno::last()).context("read"),
            n => done += n as usize,
        }
    }
    Ok(done)
}

/// Runs `argv` (stdin from /dev/null) and waits at most `timeout`.
pub fn run(argv: &[&str], timeout: Duration) -> Result<Output> {
    run_with(argv, timeout, &Options::default())
}

/// Runs `argv` with `options` and waits at most `timeout` for it to exit.
pub fn run_with(argv: &[&str], timeout: Duration, options: &Options) -> Result<Output> {
    collect(argv, spawn(argv, options)?, timeout)
}

/// Waits at most `timeout` for a started program (`argv`, for messages) and gathers its
/// output.
pub fn collect(argv: &[&str], running: Running, timeout: Duration) -> Result<Output> {
    let line = argv.join(" ");
    let Running {
        mut child,
        stdin,
        stdout,
        stderr,
    } = running;
    drop(stdin);
    let pid = child.pid();

    let (tx, rx) = mpsc::channel();
    for (index, fd) in [stdout, stderr].into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = File::from(fd).read_to_end(&mut text);
            let _ = tx.send((index, text));
        });
    }
    drop(tx);

    let status = child.wait(timeout);
    // Whatever the command left running in its group goes too, so the pipes close.
    // SAFETY: `pid` > 0 is the process group this command leads; never 0 or -1.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let status = status.with_context(|| format!("`{line}` did not finish"))?;

    let mut outputs = [Vec::new(), Vec::new()];
    let read_deadline = Instant::now() + Duration::from_secs(5);
    for _ in 0..2 {
        let left = read_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((index, text)) => outputs[index] = text,
            Err(_) => bail!("`{line}`: its output pipes stayed open after it exited"),
        }
    }
    let [stdout, stderr] = outputs.map(|t| String::from_utf8_lossy(&t).into_owned());
    Ok(Output {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        status,
        stdout,
        stderr,
    })
}

/// Runs `appshotctl ARGS...`.
pub fn ctl(args: &[&str]) -> Result<Output> {
    let mut argv = vec![APPSHOTCTL];
    argv.extend_from_slice(args);
    run(&argv, step_timeout())
}

/// Runs `appshotctl ARGS...` as uid/gid 1000.
pub fn ctl_as_user(args: &[&str]) -> Result<Output> {
    let mut argv = vec![APPSHOTCTL];
    argv.extend_from_slice(args);
    run_with(
        &argv,
        step_timeout(),
        &Options {
            as_user: true,
            ..Options::default()
        },
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn captures_status_and_output() {
        let _lock = crate::proc::fork_lock();
        let out = run(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 7"],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.status, Status::Exited(7));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(out.ok().is_err());
    }

    #[test]
    fn times_out_and_kills_the_group() {
        let _lock = crate::proc::fork_lock();
        let start = Instant::now();
        let e = run(
            &["/bin/sh", "-c", "sleep 30 & sleep 30"],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("did not finish"), "{e:#}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_program_fails_fast() {
        let _lock = crate::proc::fork_lock();
        let e = run(&["/nonexistent/appshotctl"], Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e:#}").contains("ENOENT"), "{e:#}");
    }

    #[test]
    fn hook_and_stdin_pipe() {
        let _lock = crate::proc::fork_lock();
        let refuse = || Err(Errno(libc::EPERM));
        let e = run_with(
            &["/bin/true"],
            Duration::from_secs(5),
            &Options {
                pre_exec: Some(&refuse),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("EPERM"), "{e:#}");
        let mut r = spawn(
            &["/bin/sh", "-c", "read x; echo got $x"],
            &Options {
                stdin_pipe: true,
                ..Default::default()
            },
        )
        .unwrap();
        let stdin = r.stdin.take().unwrap();
        assert!(proc::write_raw(stdin.as_raw_fd(), b"abc\n"));
        let line = proc::read_line_timeout(r.stdout.as_raw_fd(), Duration::from_secs(5)).unwrap();
        assert_eq!(line, "got abc");
        assert_eq!(
            r.child.wait(Duration::from_secs(5)).unwrap(),
            Status::Exited(0)
        );
    }
}
