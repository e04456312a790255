//! Booting the guest in QEMU (TCG only: KVM hangs on the machines we know) and
//! following its serial console until /init reboots.
//!
//! Two ways to run: a job (`vm -- CMD`, `test`, `demo`) streams the console line by
//! line without the kmemleak/dmesg dumps and ends with the job's exit status; the
//! interactive shell passes the console through byte by byte, stdin included. Both
//! scan the kernel log for splats (crate::console) and keep the raw console in
//! `target/vm/<flavor>/console.log`.

use std::fs::{self, File};
use std::io::{IsTerminal as _, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xshell::cmd;

use crate::console::{self, Console, LineSplitter, MarkerGate};
use crate::context::{self, Context, Flavor};
use crate::initramfs::{self, AddSpec, GuestFile, Initramfs};

const QEMU: &str = "qemu-system-x86_64";
const JOB_PATH: &str = "/etc/appshot/job";
/// Quiet console (warnings and worse still show), no reboot loop on panic. The RCU
/// stall threshold is raised because TCG on a busy 2-core host can starve a vCPU for
/// seconds; a real hang still trips it.
const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4 rcupdate.rcu_cpu_stall_timeout=60";
/// The debug kernel also has the soft-lockup detector (20 s by default): same reason.
const DEBUG_CMDLINE: &str = "watchdog_thresh=30";

/// QEMU's deterministic clock (still TCG): one instruction is 1 ns of guest time
/// (shift=0), and an idle guest skips ahead to its next timer instead of waiting in real
/// time (sleep=off). Guest time then counts executed instructions, not host time: a
/// program takes the same guest time from run to run, whatever else runs on the host.
/// The guest needs nothing else: its kernel calibrates the TSC against the (equally
/// virtual) timers at boot, and programs that time with the TSC can calibrate it against
/// CLOCK_MONOTONIC, as appshot-bench does.
const ICOUNT_ARGS: &[&str] = &["-icount", "shift=0,sleep=off"];

/// The QEMU arguments for the guest clock: [`ICOUNT_ARGS`] with `icount` (`vm --icount`,
/// `bench`), none otherwise (guest time follows the host's clock).
pub fn clock_args(icount: bool) -> Vec<String> {
    if icount {
        ICOUNT_ARGS.iter().map(|a| a.to_string()).collect()
    } else {
        Vec::new()
    }
}

/// The 9P mount tag of `--share`; the guest's /init mounts it at [`SHARE_GUEST_PATH`].
pub const SHARE_TAG: &str = "appshot_share";
/// Where the guest sees a shared host folder.
pub const SHARE_GUEST_PATH: &str = "/mnt/share";

/// QEMU arguments that share host folder `dir` read-write with the guest over 9P
/// (virtio-9p-pci; the test kernel has the driver and 9P file system built in). Files
/// the guest writes there belong to the user QEMU runs as (`security_model=none`).
pub fn share_args(dir: &Path) -> Result<Vec<String>> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--share {}: no such folder", dir.display()))?;
    if !dir.is_dir() {
        bail!("--share {}: not a folder", dir.display());
    }
    let path = dir.to_str().context("--share: the path is not UTF-8")?;
    if path.contains(',') {
        // QEMU's option syntax would need the comma doubled; refuse rather than guess.
        bail!("--share {path}: the path contains a comma");
    }
    Ok(vec![
        "-virtfs".to_string(),
        format!("local,path={path},mount_tag={SHARE_TAG},security_model=none,id={SHARE_TAG}"),
    ])
}

/// The outcome of one boot.
pub struct GuestRun {
    pub console: Console,
    pub timed_out: Option<Duration>,
    pub qemu_status: ExitStatus,
    pub qemu_stderr: String,
    pub log: PathBuf,
}

impl GuestRun {
    /// Why there is no `APPSHOT-EXIT-STATUS`, in one line.
    pub fn missing_status_reason(&self) -> String {
        let log = self.log.display();
        if let Some(timeout) = self.timed_out {
            format!(
                "the guest did not finish within {}s; QEMU was killed (console: {log})",
                timeout.as_secs()
            )
        } else if let Some(panic) = &self.console.panic {
            format!(
                "the guest kernel panicked: {} (console: {log})",
                panic.trim()
            )
        } else if !self.qemu_status.success() {
            let last = self
                .qemu_stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!(
                "{QEMU} failed ({}): {} (console: {log})",
                self.qemu_status,
                last.trim()
            )
        } else {
            format!("the guest stopped without printing its exit status (console: {log})")
        }
    }

    /// Prints the splat lines, if any, to stderr; true when there were some.
    pub fn report_splats(&self) -> bool {
        if self.console.splats.is_empty() {
            return false;
        }
        eprintln!(
            "vm: the guest kernel log has {} splat line(s):",
            self.console.splats.len()
        );
        for line in &self.console.splats {
            eprintln!("    {line}");
        }
        eprintln!("vm: full console log: {}", self.log.display());
        true
    }
}

/// `vm -- CMD ARGS...`: runs CMD as the job; exits with its status. `qemu_args` are added
/// to QEMU's command line ([`clock_args`]).
pub fn run_command(
    ctx: &Context,
    flavor: Flavor,
    command: &[String],
    adds: &[AddSpec],
    qemu_args: &[String],
    timeout: Duration,
) -> Result<ExitCode> {
    let job = format!("exec {}\n", shell_join(command));
    let run = run_job_with_qemu_args(
        ctx,
        flavor,
        &job,
        Vec::new(),
        adds,
        qemu_args,
        timeout,
        &mut |line| say!("{line}"),
    )?;
    job_exit_code(&run)
}

/// The exit code of a job run: the job's status, or 1 for a splat after a successful
/// job; an error (one line) when the guest never reported a status.
pub fn job_exit_code(run: &GuestRun) -> Result<ExitCode> {
    let splat = run.report_splats();
    let Some(status) = run.console.exit_status else {
        bail!(run.missing_status_reason());
    };
    let code = if status == 0 && splat {
        1
    } else {
        status.clamp(0, 255)
    };
    Ok(ExitCode::from(code as u8))
}

/// Boots `flavor` with `job` as /etc/appshot/job plus `files` and `adds`, calling
/// `on_line` with every console line the user should see.
pub fn run_job(
    ctx: &Context,
    flavor: Flavor,
    job: &str,
    files: Vec<GuestFile>,
    adds: &[AddSpec],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<GuestRun> {
    run_job_with_qemu_args(ctx, flavor, job, files, adds, &[], timeout, on_line)
}

/// [`run_job`] with extra QEMU arguments ([`clock_args`]).
#[allow(clippy::too_many_arguments)]
pub fn run_job_with_qemu_args(
    ctx: &Context,
    flavor: Flavor,
    job: &str,
    files: Vec<GuestFile>,
    adds: &[AddSpec],
    qemu_args: &[String],
    timeout: Duration,
    on_line: &mut dyn FnMut(&str),
) -> Result<GuestRun> {
    let base = initramfs::ensure(ctx, flavor)?;
    run_job_on(ctx, &base, job, files, adds, qemu_args, timeout, CONSOLE_LOG, on_line)
}

/// The console log's name in `target/vm/<flavor>` when a run is not given another.
pub const CONSOLE_LOG: &str = "console.log";

/// [`run_job_with_qemu_args`] on an initramfs built already ([`initramfs::ensure`]),
/// leaving its console log as `log_name`: guests booted side by side (each with a
/// `Context` of its own) need different ones.
#[allow(clippy::too_many_arguments)]
pub fn run_job_on(
    ctx: &Context,
    base: &Initramfs,
    job: &str,
    mut files: Vec<GuestFile>,
    adds: &[AddSpec],
    qemu_args: &[String],
    timeout: Duration,
    log_name: &str,
    on_line: &mut dyn FnMut(&str),
) -> Result<GuestRun> {
    files.push(GuestFile {
        path: JOB_PATH,
        contents: job.to_string(),
        mode: 0o644,
    });
    let cpio = initramfs::with_run_files(ctx, base, &files, adds)?;
    let run = boot(
        ctx,
        base,
        &cpio,
        Mode::Job(on_line),
        qemu_args,
        Some(timeout),
        log_name,
    );
    let _ = fs::remove_file(&cpio);
    run
}

/// `vm` without CMD: a shell on the serial console, QEMU run with `qemu_args`.
pub fn interactive(
    ctx: &Context,
    flavor: Flavor,
    adds: &[AddSpec],
    qemu_args: &[String],
    timeout: Option<Duration>,
) -> Result<ExitCode> {
    let base = initramfs::ensure(ctx, flavor)?;
    let cpio = if adds.is_empty() {
        base.cpio.clone()
    } else {
        initramfs::with_run_files(ctx, &base, &[], adds)?
    };
    eprintln!("vm: shell on the guest console; `exit` ends the run, Ctrl-A x kills QEMU");
    let run = boot(ctx, &base, &cpio, Mode::Interactive, qemu_args, timeout, CONSOLE_LOG);
    if cpio != base.cpio {
        let _ = fs::remove_file(&cpio);
    }
    job_exit_code(&run?)
}

enum Mode<'a> {
    Job(&'a mut dyn FnMut(&str)),
    Interactive,
}

fn boot(
    ctx: &Context,
    base: &Initramfs,
    cpio: &Path,
    mut mode: Mode<'_>,
    qemu_args: &[String],
    timeout: Option<Duration>,
    log_name: &str,
) -> Result<GuestRun> {
    let bzimage = &base.kernel.bzimage;
    if !bzimage.exists() {
        bail!(
            "kernel image {} is missing (cargo xtask kernel)",
            bzimage.display()
        );
    }
    let interactive = matches!(mode, Mode::Interactive);
    let cmdline = match base.kernel.flavor {
        Flavor::Release => KERNEL_CMDLINE.to_string(),
        Flavor::Debug => format!("{KERNEL_CMDLINE} {DEBUG_CMDLINE}"),
    };
    // Two sockets of one core: the test kernel has no ACPI, and the firmware's MP table
    // lists one CPU per socket, so `-smp 2` alone boots a single CPU (and no race test
    // can race). One TCG thread for both: with a thread per vCPU (MTTCG), QEMU 7.2 let
    // one vCPU execute the int3 of a kernel text patch (ftrace attaching hooks) after
    // the patch had finished, and the guest oopsed in code that was already correct.
    let qemu = cmd!(
        ctx.sh,
        "{QEMU} -m 1024 -smp 2,sockets=2,cores=1,threads=1 -accel tcg,thread=single -nographic -no-reboot -nic none -kernel {bzimage} -initrd {cpio} -append {cmdline} {qemu_args...}"
    );
    let mut child = context::to_command(qemu, &[])
        .stdin(if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("cannot start {QEMU} (apt package qemu-system-x86; cargo xtask deps)")
        })?;

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut stdout = child.stdout.take().context("no QEMU stdout")?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().context("no QEMU stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    // Written under a name of our own, renamed at the end: runs may overlap.
    let log_path = initramfs::vm_dir(ctx, base.kernel.flavor).join(log_name);
    let partial_log = log_path.with_extension(format!("log.{}", initramfs::run_token()));
    let mut log = File::create(&partial_log)
        .with_context(|| format!("cannot create {}", partial_log.display()))?;
    let mut console = Console::default();
    let mut gate = MarkerGate::default();
    let mut splitter = LineSplitter::default();
    let handle_line = |raw: &[u8], console: &mut Console, mode: &mut Mode<'_>| {
        let text = console::clean_line(raw);
        let shown = console.line(&text);
        if let (Mode::Job(on_line), Some(shown)) = (mode, shown) {
            on_line(shown);
        }
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = None;
    loop {
        let chunk = match deadline {
            Some(deadline) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                timed_out = timeout;
                break;
            }
        };
        let _ = log.write_all(&chunk);
        if interactive {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&gate.pass(&chunk));
            let _ = out.flush();
        }
        splitter.feed(&chunk, |raw| handle_line(raw, &mut console, &mut mode));
    }
    splitter.finish(|raw| handle_line(raw, &mut console, &mut mode));
    drop(log);
    let _ = fs::rename(&partial_log, &log_path);
    let qemu_status = child.wait().context("waiting for QEMU")?;
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    if interactive && std::io::stdout().is_terminal() {
        // SeaBIOS turned line wrapping off; give the terminal back as it was.
        print!("\x1b[?7h");
        let _ = std::io::stdout().flush();
    }
    // A one-line complaint ends up in the error message; show longer ones in full.
    let stderr_lines = qemu_stderr.lines().filter(|l| !l.trim().is_empty()).count();
    if stderr_lines > 1 && (!qemu_status.success() || timed_out.is_some()) {
        eprint!("{qemu_stderr}");
    }
    Ok(GuestRun {
        console,
        timed_out,
        qemu_status,
        qemu_stderr,
        log: log_path,
    })
}

/// Joins arguments into one `sh` command line, quoting where needed.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_clock_args() {
        assert_eq!(clock_args(true), ["-icount", "shift=0,sleep=off"]);
        assert!(clock_args(false).is_empty());
    }

    #[test]
    fn quotes_for_sh() {
        let args = ["/bin/sh", "-c", "echo hi; exit 3", "it's", ""].map(String::from);
        assert_eq!(
            shell_join(&args),
            r"/bin/sh -c 'echo hi; exit 3' 'it'\''s' ''"
        );
    }
}
