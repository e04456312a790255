//! `appshotctl restore FILE -- CMD`: starting CMD as the restored application's root
//! process, under the virtual PID that process had.
//!
//! The kernel's own interface names the PID: `clone3` with `set_tid`, which appshot.ko
//! reads as a virtual PID for a caller inside an AID. The shape is `run`'s: CMD's parent
//! is appshotctl, outside the application, and appshotctl's exit status is CMD's.
//!
//! 1. appshotctl, unlinked by then, forks a helper, which LINKs itself to the AID. It
//!    cannot get the root's virtual PID: the restore reserved it, with every PID of the
//!    image.
//! 2. The helper calls `clone3(CLONE_PARENT, set_tid = [root])`: the new process,
//!    appshotctl's child, takes the reserved PID over and execs CMD; the helper exits.
//! 3. appshotctl waits for CMD and exits with its status (128 + N when killed by signal
//!    N, as shells report it).

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{Read as _, Write as _};

use anyhow::{anyhow, bail, Context as _};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};

use crate::device::Device;

/// Runs `command` in AID `aid` as virtual PID `root`; returns its exit status.
pub fn run_as(device: &Device, aid: u64, root: u32, command: &[OsString]) -> anyhow::Result<u8> {
    // Close-on-exec: the parent reads to EOF, which comes when the helper (or the root it
    // made) has exec'd or exited.
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: appshotctl is single-threaded, so the child may run any code.
    let helper_pid = match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(report_read);
            let mut report = std::fs::File::from(report_write);
            let code = match helper(device, aid, root, command, &mut report) {
                Ok(()) => 0,
                Err(error) => {
                    let _ = report.write_all(format!("error: {error:#}\n").as_bytes());
                    1
                }
            };
            // SAFETY: `_exit` ends the helper at once, running nothing of the parent's.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(report_write);
    let mut report = String::new();
    let _ = std::fs::File::from(report_read).read_to_string(&mut report);
    if let Some((_, error)) = report.split_once("error: ") {
        let _ = waitpid(helper_pid, None);
        bail!("{}", error.trim_end());
    }
    // The helper made the root, another child of ours, and left.
    loop {
        let (pid, status) = match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code as u8),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128u8.wrapping_add(signal as u8)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => bail!("waiting for the restored command failed: {}", errno.desc()),
        };
        if pid != helper_pid {
            return Ok(status);
        }
    }
}

/// The helper: LINK itself, then create the root and say so on `report`.
fn helper(device: &Device, aid: u64, root: u32, command: &[OsString], report: &mut std::fs::File) -> anyhow::Result<()> {
    device.link(aid, 0).map_err(|e| anyhow!("cannot link the launcher to the restored application: {e}"))?;
    // SAFETY: clone_args is plain data.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    let tids = [root as libc::pid_t];
    args.flags = libc::CLONE_PARENT as u64;
    args.set_tid = tids.as_ptr() as u64;
    args.set_tid_size = 1;
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack): the child has its own copy
    // of this single-threaded process and only execs (or says why not and exits).
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const libc::clone_args, std::mem::size_of::<libc::clone_args>()) };
    if pid == 0 {
        let error = crate::commands::exec(command);
        // appshotctl gets the status (127 not found, 126 not executable); the reason goes
        // to stderr, as `run` gives them.
        let _ = writeln!(std::io::stderr(), "appshotctl: {error}");
        // SAFETY: ends the child that could not exec.
        unsafe { libc::_exit(i32::from(error.exit_code)) }
    }
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        let why = match error.raw_os_error() {
            Some(libc::EEXIST) => "the application uses that PID already".to_string(),
            Some(libc::EPERM) => "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN".to_string(),
            _ => error.to_string(),
        };
        bail!("cannot start the command as virtual PID {root}: {why}");
    }
    report.write_all(b"child\n").context("cannot report")?;
    Ok(())
}
