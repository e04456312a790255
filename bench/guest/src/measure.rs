//! The timed loops, run in a fresh worker process per measurement: the driver forks
//! the worker, which waits on a pipe until the driver has put it where the
//! configuration wants it (linked to an AID or not), then runs every call's loop and
//! sends `key ns_per_call` lines back over a second pipe.
//!
//! Each loop makes raw system calls (`syscall(2)`, no libc caching) timed with the
//! TSC calibrated against CLOCK_MONOTONIC ([`Clock`]): after a warm-up of a tenth of the calls, the calls run in
//! [`BATCHES`] timed batches, and the measurement is the median batch's ns per call.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{bail, Context as _, Result};

use crate::setup::Prepared;

/// A measurement's calls are timed in this many equal batches; its value is the median
/// batch. The emulated clock runs on while QEMU's vCPU thread waits for a host core
/// (the build machine is shared), which inflates a batch now and then: the median
/// leaves those out where one long loop would average them in.
const BATCHES: u64 = 10;

/// The CPU the worker is pinned to: migrations between the two vCPUs would add noise.
const WORKER_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Getpid,
    Getppid,
    /// `kill(pid, 0)` with the worker's own PID, looked up once before the loop.
    Kill,
    /// `fork()`, the child `_exit(0)`s at once, the parent `waitpid`s for it.
    ForkWait,
    /// `uname(&buf)`: a system call with a user pointer.
    Uname,
    /// getpid through the i386 entry (`int $0x80`, number 20), from this 64-bit process.
    GetpidI386,
    /// `kill(pid, 0)` through the i386 entry (number 37).
    KillI386,
    /// `futex(&word, FUTEX_WAKE_PRIVATE, 1)` with no waiter: the call glibc's mutexes and
    /// condition variables make most, which appshot's `futex` row lets through.
    FutexWake,
    /// `semop` of +1 or -1 (alternately) on a set of one semaphore.
    Semop,
    /// `msgsnd` then `msgrcv` of a 64-byte message (one measured call is the pair).
    MsgSndRcv,
    /// `shmat` then `shmdt` of a 4096-byte segment (one measured call is the pair).
    ShmAtDt,
    /// `semctl(IPC_STAT)` of a set.
    SemctlStat,
}

/// A system call through the i386 entry (`int $0x80`) with up to two arguments.
fn int80(nr: u32, a: u32, b: u32) -> i32 {
    let ret: u32;
    // SAFETY: `int $0x80` enters the kernel's i386 system call path (IA32 emulation);
    // rbx is reserved in Rust asm, so it is saved and restored around the call, and the
    // kernel preserves every other register but eax.
    unsafe {
        core::arch::asm!(
            "xchg {a:r}, rbx",
            "int 0x80",
            "xchg {a:r}, rbx",
            a = inout(reg) u64::from(a) => _,
            inlateout("eax") nr => ret,
            in("ecx") b,
            options(nostack),
        );
    }
    ret as i32
}

/// The calls of the appshot section, in report order (`uname` is the candidates').
pub const MEASURED: [Call; 11] = [
    Call::Getpid,
    Call::Getppid,
    Call::Kill,
    Call::ForkWait,
    Call::GetpidI386,
    Call::KillI386,
    Call::FutexWake,
    Call::Semop,
    Call::MsgSndRcv,
    Call::ShmAtDt,
    Call::SemctlStat,
];

impl Call {
    pub fn key(self) -> &'static str {
        match self {
            Call::Getpid => "getpid",
            Call::Getppid => "getppid",
            Call::Kill => "kill",
            Call::ForkWait => "fork-wait",
            Call::Uname => "uname",
            Call::GetpidI386 => "getpid-i386",
            Call::KillI386 => "kill-i386",
            Call::FutexWake => "futex-wake",
            Call::Semop => "semop",
            Call::MsgSndRcv => "msgsnd-rcv",
            Call::ShmAtDt => "shmat-dt",
            Call::SemctlStat => "semctl-stat",
        }
    }

    fn from_key(key: &str) -> Option<Call> {
        MEASURED.into_iter().chain([Call::Uname]).find(|c| c.key() == key)
    }

    /// Runs the call `n` times on the worker's objects; panics (in the worker) if one
    /// fails.
    fn run(self, n: u64, ipc: &IpcObjects) {
        match self {
            Call::Semop => {
                for i in 0..n {
                    let mut op = libc::sembuf { sem_num: 0, sem_op: if i % 2 == 0 { 1 } else { -1 }, sem_flg: 0 };
                    // SAFETY: one valid sembuf on the worker's set.
                    let ret = unsafe { libc::semop(ipc.sem, &mut op, 1) };
                    assert_eq!(ret, 0, "semop failed");
                }
            }
            Call::MsgSndRcv => {
                let mut msg = Message { mtype: 1, text: [7; 64] };
                for _ in 0..n {
                    // SAFETY: `msg` is a message of 64 bytes after its type.
                    unsafe {
                        let ret = libc::msgsnd(ipc.msg, &msg as *const Message as *const libc::c_void, 64, 0);
                        assert_eq!(ret, 0, "msgsnd failed");
                        let got = libc::msgrcv(ipc.msg, &mut msg as *mut Message as *mut libc::c_void, 64, 0, 0);
                        assert_eq!(got, 64, "msgrcv failed");
                    }
                }
            }
            Call::ShmAtDt => {
                for _ in 0..n {
                    // SAFETY: attaches the worker's segment and detaches it at once.
                    unsafe {
                        let at = libc::shmat(ipc.shm, std::ptr::null(), 0);
                        assert!(at as isize != -1, "shmat failed");
                        assert_eq!(libc::shmdt(at), 0, "shmdt failed");
                    }
                }
            }
            Call::SemctlStat => {
                // SAFETY: semid_ds is plain old data.
                let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
                for _ in 0..n {
                    // SAFETY: IPC_STAT into a valid semid_ds.
                    let ret = unsafe { libc::semctl(ipc.sem, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
                    assert_eq!(ret, 0, "semctl IPC_STAT failed");
                }
            }
            Call::Getpid => {
                for _ in 0..n {
                    // SAFETY: getpid takes no arguments and cannot fail.
                    unsafe { libc::syscall(libc::SYS_getpid) };
                }
            }
            Call::Getppid => {
                for _ in 0..n {
                    // SAFETY: getppid takes no arguments and cannot fail.
                    unsafe { libc::syscall(libc::SYS_getppid) };
                }
            }
            Call::Kill => {
                // SAFETY: as above.
                let pid = unsafe { libc::syscall(libc::SYS_getpid) };
                for _ in 0..n {
                    // SAFETY: signal 0 only checks that the process exists.
                    let ret = unsafe { libc::syscall(libc::SYS_kill, pid, 0) };
                    assert_eq!(ret, 0, "kill(self, 0) failed");
                }
            }
            Call::ForkWait => {
                for _ in 0..n {
                    // SAFETY: the worker is single-threaded; the child only calls _exit.
                    let child = unsafe { libc::fork() };
                    if child == 0 {
                        // SAFETY: _exit is async-signal-safe and ends the child at once.
                        unsafe { libc::_exit(0) };
                    }
                    assert!(child > 0, "fork failed");
                    let mut status = 0;
                    // SAFETY: `status` is a valid out-pointer.
                    let got = unsafe { libc::waitpid(child, &mut status, 0) };
                    assert_eq!(got, child, "waitpid failed");
                }
            }
            Call::GetpidI386 => {
                for _ in 0..n {
                    int80(20, 0, 0);
                }
            }
            Call::KillI386 => {
                let pid = int80(20, 0, 0) as u32;
                for _ in 0..n {
                    assert_eq!(int80(37, pid, 0), 0, "i386 kill(self, 0) failed");
                }
            }
            Call::FutexWake => {
                let word = 0u32;
                for _ in 0..n {
                    // SAFETY: FUTEX_WAKE on a valid, aligned word of ours (no waiter).
                    let ret = unsafe {
                        libc::syscall(libc::SYS_futex, &word as *const u32, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1)
                    };
                    assert_eq!(ret, 0, "futex wake failed");
                }
            }
            Call::Uname => {
                // SAFETY: utsname is plain old data; all zeroes is a valid value.
                let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
                for _ in 0..n {
                    // SAFETY: `buf` is a writable utsname the kernel fills.
                    let ret = unsafe { libc::syscall(libc::SYS_uname, &mut buf) };
                    assert_eq!(ret, 0, "uname failed");
                }
            }
        }
    }
}

/// Calls per measurement.
#[derive(Clone, Copy)]
pub struct Iterations {
    /// getpid, getppid, kill, uname.
    pub syscall: u64,
    pub fork: u64,
}

impl Iterations {
    fn of(self, call: Call) -> u64 {
        match call {
            Call::ForkWait => self.fork,
            _ => self.syscall,
        }
    }
}

fn now_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions; user space may execute it (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The clock the loops are timed with: the TSC, in ticks per nanosecond.
///
/// The guest kernel's CLOCK_MONOTONIC advances in 4 ms steps here: under TCG the TSC
/// calibration fails and, without ACPI, there is no HPET or PM timer, so the kernel
/// falls back to refined-jiffies (HZ=250). That is 25% of a 16 ms batch. QEMU's TCG
/// TSC runs at the host's TSC rate, so it is calibrated against CLOCK_MONOTONIC here,
/// from one 4 ms step to another about `span` later: the steps' edges are found to
/// within a few microseconds. A calibration error scales every value alike and leaves
/// the ratios alone. Under host load the guest loses timer ticks and jiffies fall
/// behind (a 38% error was seen), so with plain TCG the host measures its own TSC rate
/// and passes it (`--tsc-mhz`); under -icount both clocks are virtual and agree.
#[derive(Clone, Copy)]
pub struct Clock {
    pub ticks_per_ns: f64,
}

impl Clock {
    pub fn calibrate(span: std::time::Duration) -> Clock {
        let edge = |after: u128| -> (u128, u64) {
            loop {
                let t = now_ns();
                if t > after {
                    return (t, tsc());
                }
            }
        };
        let (t0, c0) = edge(now_ns());
        // The first reading past a point is the first one after a step: an edge too.
        let (t1, c1) = edge(t0 + span.as_nanos());
        Clock {
            ticks_per_ns: (c1 - c0) as f64 / (t1 - t0) as f64,
        }
    }

    fn ns(self, ticks: u64) -> f64 {
        ticks as f64 / self.ticks_per_ns
    }

    /// A reading, for [`Clock::since`].
    pub fn now(self) -> u64 {
        tsc()
    }

    /// Nanoseconds since reading `start`.
    pub fn since(self, start: u64) -> f64 {
        self.ns(tsc().wrapping_sub(start))
    }
}

/// A pipe, both ends close-on-exec (appshotctl, started meanwhile, must not hold them).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Blocks until one byte (or EOF) arrives on `fd`.
pub fn wait_byte(fd: &OwnedFd) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into `byte`.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Writes all of `bytes` to `fd`, ignoring errors (the reader reports what is missing).
pub fn write_all(fd: &OwnedFd, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid buffer of that length.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Waits for `pid`; an error unless it exited with status 0.
pub fn reap(pid: libc::pid_t, what: &str) -> Result<()> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let got = unsafe { libc::waitpid(pid, &mut status, 0) };
    if got != pid {
        bail!("waitpid({what} {pid}): {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{what} {pid} failed (wait status {status:#x})");
    }
    Ok(())
}

/// The system PID every worker gets (through `ns_last_pid`): `kill`'s lookup of the
/// worker's own PID walks the kernel's PID radix tree, whose shape under the number
/// changes its cost (398 to 432 instructions seen across workers), so every
/// configuration is measured on the same number. The fork+waitpid children follow it
/// (below `pid_max`, 32768 here).
const WORKER_PID: libc::pid_t = 20_000;

/// Makes the next new process get system PID `pid` when it is free (the kernel's
/// checkpoint/restore interface; the bench runs as root).
fn next_pid_is(pid: libc::pid_t) -> Result<()> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).context("writing /proc/sys/kernel/ns_last_pid")
}

/// Forks a worker, lets `prepared` link it, runs `calls` in it; ns per call for each.
pub fn in_worker(
    calls: &[Call],
    iters: &Iterations,
    clock: Clock,
    prepared: &Prepared,
) -> Result<Vec<(Call, f64)>> {
    let (go_read, go_write) = pipe()?;
    let (result_read, result_write) = pipe()?;
    next_pid_is(WORKER_PID)?;
    // SAFETY: the driver is single-threaded; the child runs only the loops below and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(go_write);
        drop(result_read);
        worker(calls, *iters, clock, &go_read, &result_write);
    }
    if pid != WORKER_PID {
        eprintln!("# note: a worker got PID {pid}, not {WORKER_PID} (taken): its kill may cost a little more or less");
    }
    drop(go_read);
    drop(result_write);
    let linked = prepared.link(pid);
    // Unblock the worker either way; on a link error it measures, and we discard.
    write_all(&go_write, b"g");
    drop(go_write);
    let mut text = String::new();
    // SAFETY: `result_read` is an open descriptor we own; File takes it over.
    let mut file = std::fs::File::from(result_read);
    file.read_to_string(&mut text)
        .context("reading the worker's results")?;
    let reaped = reap(pid, "worker");
    linked?;
    reaped?;
    let mut results = Vec::new();
    for line in text.lines() {
        let (key, ns) = line.split_once(' ').context("malformed worker line")?;
        let call = Call::from_key(key).with_context(|| format!("unknown call {key}"))?;
        results.push((call, ns.parse::<f64>().context("malformed ns")?));
    }
    if results.len() != calls.len() {
        bail!(
            "the worker reported {} of {} calls",
            results.len(),
            calls.len()
        );
    }
    Ok(results)
}

fn worker(calls: &[Call], iters: Iterations, clock: Clock, go: &OwnedFd, out: &OwnedFd) -> ! {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(WORKER_CPU, &mut set);
        // Best effort: with one CPU this fails and nothing is lost.
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    wait_byte(go);
    // Made after the link, so that they are the AID's in an AID configuration.
    let ipc = IpcObjects::make();
    let mut report = String::new();
    for &call in calls {
        let n = iters.of(call);
        let batch = (n / BATCHES).max(1);
        call.run(batch, &ipc);
        let mut per_call: Vec<f64> = (0..BATCHES)
            .map(|_| {
                let start = tsc();
                call.run(batch, &ipc);
                clock.ns(tsc() - start) / batch as f64
            })
            .collect();
        per_call.sort_by(f64::total_cmp);
        let median = (per_call[(BATCHES as usize - 1) / 2] + per_call[BATCHES as usize / 2]) / 2.0;
        report.push_str(&format!("{} {median:.3}\n", call.key()));
    }
    ipc.remove();
    write_all(out, report.as_bytes());
    // SAFETY: ends the worker without running the driver's exit handlers.
    unsafe { libc::_exit(0) }
}

/// A message of [`Call::MsgSndRcv`].
#[repr(C)]
struct Message {
    mtype: libc::c_long,
    text: [u8; 64],
}

/// The SysV objects the IPC calls run on, made by the worker.
pub struct IpcObjects {
    sem: i32,
    msg: i32,
    shm: i32,
}

impl IpcObjects {
    fn make() -> IpcObjects {
        // SAFETY: SysV get calls take integers only.
        let objects = unsafe {
            IpcObjects {
                sem: libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600),
                msg: libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600),
                shm: libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600),
            }
        };
        assert!(objects.sem >= 0 && objects.msg >= 0 && objects.shm >= 0, "SysV objects");
        objects
    }

    fn remove(self) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe {
            libc::semctl(self.sem, 0, libc::IPC_RMID);
            libc::msgctl(self.msg, libc::IPC_RMID, std::ptr::null_mut::<libc::msqid_ds>());
            libc::shmctl(self.shm, libc::IPC_RMID, std::ptr::null_mut::<libc::shmid_ds>());
        }
    }
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> Result<String> {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid out-pointer.
    if unsafe { libc::uname(&mut buf) } != 0 {
        bail!("uname: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates release.
    let release = unsafe { std::ffi::CStr::from_ptr(buf.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}
