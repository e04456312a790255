//! LINK and inheritance: a linked process's threads and descendants, however created
//! (fork, vfork, clone, clone3, threads, exec), are in its AID's PID table with the right
//! owner; LINK of another process takes all its threads and none of its existing children.

use std::ffi::{c_int, c_void, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};

use super::Test;
use crate::check::{expect_errno, step_timeout, Errno};
use crate::device::{AidGuard, Device};
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper, GO, READY};
use crate::proc::{self, Agent, Child};
use crate::{cmd, ensure_eq};

pub const TESTS: &[Test] = &[
    Test::new(
        "inheritance/link_self_table_holds_tid",
        link_self_table_holds_tid,
    ),
    Test::new(
        "inheritance/link_twice_noop_other_aid_ebusy",
        link_twice_noop_other_aid_ebusy,
    ),
    Test::new("inheritance/fork_child_linked", fork_child_linked),
    Test::new("inheritance/vfork_child_linked", vfork_child_linked),
    Test::new(
        "inheritance/clone_without_thread_linked",
        clone_without_thread_linked,
    ),
    Test::new("inheritance/clone3_child_linked", clone3_child_linked),
    Test::new(
        "inheritance/thread_linked_owner_is_tgid",
        thread_linked_owner_is_tgid,
    ),
    Test::new("inheritance/exec_keeps_link", exec_keeps_link),
    Test::new(
        "inheritance/exec_from_thread_keeps_link",
        exec_from_thread_keeps_link,
    ),
    Test::new(
        "inheritance/three_level_tree_linked",
        three_level_tree_linked,
    ),
    Test::new(
        "inheritance/link_other_process_all_threads",
        link_other_process_all_threads,
    ),
    Test::new(
        "inheritance/link_takes_existing_children",
        link_takes_existing_children,
    ),
    Test::new(
        "inheritance/info_counts_match_table",
        info_counts_match_table,
    ),
    Test::new("inheritance/link_errors", link_errors),
];

/// A linked agent that reports the PIDs of helpers it created with `make`, then waits for
/// [`GO`]; `make` returns the helpers as [`Child`]ren so they are killed when it ends.
fn linked_parent(
    dev: &Device,
    aid: u64,
    make: impl FnOnce(&proc::Channel) -> Result<Vec<Child>>,
) -> Result<Agent> {
    // The caller receives the values `make` sent, then READY.
    Agent::spawn(|chan| {
        dev.link(aid, 0).context("LINK self")?;
        let children = make(chan)?;
        chan.send(READY)?;
        chan.recv(std::time::Duration::from_secs(3600))?;
        drop(children);
        Ok(())
    })
}

fn link_self_table_holds_tid() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "self")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        chan.send(proc::gettid() as i64)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let tid = agent.recv_step()? as i32;
    ensure_eq!(tid, agent.pid(), "TID of the single-threaded child");
    expect_pid_table(&dev, g.aid, &[(tid, tid)], "after LINK of itself")?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after the child was reaped")
}

fn link_twice_noop_other_aid_ebusy() -> Result<()> {
    let dev = Device::open()?;
    let a = AidGuard::new(&dev, "twice-a")?;
    let b = AidGuard::new(&dev, "twice-b")?;
    let agent = sleeper(&dev, Some(a.aid), 2)?;
    let expected = entries_of(agent.pid())?;
    dev.link(a.aid, agent.pid())
        .context("LINK again to its own AID")?;
    expect_pid_table(
        &dev,
        a.aid,
        &expected,
        "after a second LINK to the same AID",
    )?;
    expect_errno(
        dev.link(b.aid, agent.pid()),
        libc::EBUSY,
        "LINK to another AID",
    )?;
    expect_pid_table(&dev, b.aid, &[], "the other AID after EBUSY")?;
    expect_pid_table(&dev, a.aid, &expected, "the first AID after EBUSY")?;
    release(agent)
}

/// The agent (a linked parent) reports the PID of the child it created, then waits:
/// the table must hold exactly the two of them, each its own process, and nothing once
/// both are reaped.
fn expect_parent_and_child(dev: &Device, aid: u64, mut agent: Agent, what: &str) -> Result<()> {
    let child = agent.recv_step()? as i32;
    agent.expect(READY, "parent ready")?;
    let parent = agent.pid();
    expect_pid_table(dev, aid, &[(parent, parent), (child, child)], what)?;
    release(agent)?;
    expect_pid_table(dev, aid, &[], "after both were reaped")
}

fn fork_child_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "fork")?;
    let agent = linked_parent(&dev, g.aid, |chan| {
        let child = proc::fork(|| proc::sleep_forever())?;
        chan.send(child.pid() as i64)?;
        Ok(vec![child])
    })?;
    expect_parent_and_child(&dev, g.aid, agent, "after fork")
}

/// Stack for a `clone` child; leaked, since a `CLONE_VM` child may run on it after the
/// caller returns (until it is killed).
fn clone_stack() -> *mut c_void {
    const SIZE: usize = 256 * 1024;
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIZE].into_boxed_slice());
    // SAFETY: one past the end of the allocation, rounded down to 16 bytes (x86-64 ABI).
    let top = unsafe { stack.as_mut_ptr().add(SIZE) } as usize & !15;
    top as *mut c_void
}

/// A `clone` child body that only pauses: raw system calls, no libc state, so it is safe
/// even when it shares the parent's memory.
extern "C" fn clone_pause(_: *mut c_void) -> c_int {
    loop {
        // SAFETY: pause takes no arguments.
        unsafe { libc::syscall(libc::SYS_pause) };
    }
}

/// A `clone` child body that execs the NULL-terminated argv `arg` points to.
extern "C" fn clone_exec(arg: *mut c_void) -> c_int {
    let argv = arg as *const *const libc::c_char;
    // SAFETY: the parent passes a NULL-terminated array of C strings it keeps alive until
    // the exec (CLONE_VFORK suspends it until then).
    unsafe {
        libc::execv(*argv, argv);
        libc::_exit(127)
    }
}

/// `clone(flags | SIGCHLD)` running `body(arg)` on a fresh stack.
fn clone_child(
    flags: c_int,
    body: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
) -> Result<Child> {
    // SAFETY: the stack is fresh and never freed; the bodies above only make raw system
    // calls (or exec), so sharing memory with the parent cannot corrupt its state.
    let pid = unsafe { libc::clone(body, clone_stack(), flags | libc::SIGCHLD, arg) };
    if pid < 0 {
        return Err(Errno::last()).with_context(|| format!("clone({flags:#x})"));
    }
    Ok(Child::adopt(pid))
}

fn vfork_child_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "vfork")?;
    let mut agent = linked_parent(&dev, g.aid, |chan| {
        // What vfork(2) does: CLONE_VM | CLONE_VFORK, the parent waits for the exec.
        let args = [CString::new("/bin/sleep")?, CString::new("1000")?];
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let child = clone_child(
            libc::CLONE_VM | libc::CLONE_VFORK,
            clone_exec,
            argv.as_mut_ptr().cast(),
        )?;
        chan.send(child.pid() as i64)?;
        Ok(vec![child])
    })?;
    let child = agent.recv_step()? as i32;
    agent.expect(READY, "parent ready")?;
    let parent = agent.pid();
    let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
    ensure_eq!(
        comm.trim(),
        "sleep",
        "command of the vfork child after its exec"
    );
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (child, child)],
        "after vfork + exec",
    )?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after both were reaped")
}

fn clone_without_thread_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "clone")?;
    let mut agent = linked_parent(&dev, g.aid, |chan| {
        // A plain clone (a fork by another name) and a process sharing its memory
        // (CLONE_VM without CLONE_THREAD: its own thread group).
        let plain = clone_child(0, clone_pause, std::ptr::null_mut())?;
        let shared_vm = clone_child(libc::CLONE_VM, clone_pause, std::ptr::null_mut())?;
        chan.send(plain.pid() as i64)?;
        chan.send(shared_vm.pid() as i64)?;
        Ok(vec![plain, shared_vm])
    })?;
    let plain = agent.recv_step()? as i32;
    let shared_vm = agent.recv_step()? as i32;
    agent.expect(READY, "parent ready")?;
    let parent = agent.pid();
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (plain, plain), (shared_vm, shared_vm)],
        "after clone(SIGCHLD) and clone(CLONE_VM|SIGCHLD)",
    )?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after all were reaped")
}

fn clone3_child_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "clone3")?;
    let agent = linked_parent(&dev, g.aid, |chan| {
        // SAFETY: all-zero is a valid clone_args (plain integers).
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.exit_signal = libc::SIGCHLD as u64;
        // SAFETY: clone3 without CLONE_VM copies the address space like fork; the child
        // only makes raw system calls and never returns from this frame.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        if pid == 0 {
            loop {
                // SAFETY: pause takes no arguments.
                unsafe { libc::syscall(libc::SYS_pause) };
            }
        }
        if pid < 0 {
            return Err(Errno::last()).context("clone3");
        }
        let child = Child::adopt(pid as i32);
        chan.send(pid)?;
        Ok(vec![child])
    })?;
    expect_parent_and_child(&dev, g.aid, agent, "after clone3")
}

fn thread_linked_owner_is_tgid() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "thread")?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(proc::gettid());
            proc::sleep_forever();
        });
        let tid = rx.recv_timeout(step_timeout()).context("thread TID")?;
        chan.send(tid as i64)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let tid = agent.recv_step()? as i32;
    let pid = agent.pid();
    if tid == pid {
        bail!("thread reported the process's TID");
    }
    expect_pid_table(
        &dev,
        g.aid,
        &[(pid, pid), (tid, pid)],
        "after a thread was created",
    )?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after the process was reaped")
}

fn exec_keeps_link() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "exec")?;
    let aid = g.aid;
    // The child links itself between fork and exec, as `appshotctl run` does.
    let link_self = || dev.link(aid, 0);
    let options = cmd::Options {
        stdin_pipe: true,
        pre_exec: Some(&link_self),
        ..Default::default()
    };
    // After the exec: print our PID, start a child, print its PID, wait for stdin's end.
    let mut sh = cmd::spawn(
        &[
            "/bin/sh",
            "-c",
            "echo $$; sleep 1000 & echo $!; read x; exit 0",
        ],
        &options,
    )
    .context("start a linked /bin/sh")?;
    let sh_pid = sh.child.pid();
    let out = sh.stdout.as_raw_fd();
    let reported: i32 = proc::read_line_timeout(out, step_timeout())?
        .trim()
        .parse()?;
    ensure_eq!(reported, sh_pid, "$$ of the exec'd shell");
    let bg: i32 = proc::read_line_timeout(out, step_timeout())?
        .trim()
        .parse()?;
    // Once the shell is gone its child is ours to reap (subreaper).
    let mut bg = Child::adopt(bg);
    expect_pid_table(
        &dev,
        aid,
        &[(sh_pid, sh_pid), (bg.pid(), bg.pid())],
        "after exec and a fork by the new program",
    )?;
    drop(sh.stdin.take());
    sh.child.expect_exit(0, step_timeout())?;
    bg.kill()?;
    expect_pid_table(&dev, aid, &[], "after the shell and its child were reaped")
}

fn exec_from_thread_keeps_link() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "exec-thr")?;
    let (in_rx, in_tx) = proc::pipe()?;
    let (out_rx, out_tx) = proc::pipe()?;
    let mut agent = Agent::spawn(|chan| {
        dev.link(g.aid, 0).context("LINK self")?;
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (stdin_fd, stdout_fd) = (in_rx.as_raw_fd(), out_tx.as_raw_fd());
        std::thread::spawn(move || {
            let _ = tid_tx.send(proc::gettid());
            if go_rx.recv().is_ok() {
                // SAFETY: dup2 onto stdin/stdout (clearing close-on-exec), then exec.
                unsafe {
                    libc::dup2(stdin_fd, 0);
                    libc::dup2(stdout_fd, 1);
                }
                proc::exec(&["/bin/sh", "-c", "echo $$; read x; exit 0"]);
            }
            proc::sleep_forever();
        });
        let tid = tid_rx.recv_timeout(step_timeout()).context("thread TID")?;
        chan.send(tid as i64)?;
        chan.recv(step_timeout())?;
        go_tx.send(()).context("start the exec")?;
        // The exec replaces this thread too (de_thread); if it fails, report.
        std::thread::sleep(step_timeout());
        bail!("the thread's exec did not happen")
    })?;
    drop((in_rx, out_tx));
    let pid = agent.pid();
    let tid = agent.recv_step()? as i32;
    if tid == pid {
        bail!("thread reported the process's TID");
    }
    expect_pid_table(&dev, g.aid, &[(pid, pid), (tid, pid)], "before the exec")?;
    agent.send(GO)?;
    let reported: i32 = proc::read_line_timeout(out_rx.as_raw_fd(), step_timeout())?
        .trim()
        .parse()?;
    ensure_eq!(
        reported,
        pid,
        "$$ after exec from a non-leader thread (it takes the leader's PID)"
    );
    ensure_eq!(proc::threads_of(pid)?, vec![pid], "threads after the exec");
    expect_pid_table(
        &dev,
        g.aid,
        &[(pid, pid)],
        "after exec from a non-leader thread",
    )?;
    drop::<OwnedFd>(in_tx);
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after the process was reaped")
}

fn three_level_tree_linked() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "tree")?;
    const CHILD: i64 = 1 << 32;
    const GRANDCHILD: i64 = 2 << 32;
    let mut agent = linked_parent(&dev, g.aid, |chan| {
        let child = proc::fork(|| {
            let grandchild = match proc::fork(|| proc::sleep_forever()) {
                Ok(c) => c,
                Err(_) => return 1,
            };
            let _ = chan.send(GRANDCHILD | grandchild.pid() as i64);
            std::mem::forget(grandchild);
            proc::sleep_forever()
        })?;
        chan.send(CHILD | child.pid() as i64)?;
        Ok(vec![child])
    })?;
    // The three messages (child, grandchild, ready) come from two processes in any order.
    let (mut child, mut grandchild, mut ready) = (0, 0, false);
    while child == 0 || grandchild == 0 || !ready {
        let v = agent.recv_step()?;
        match v & !0xffff_ffff {
            CHILD => child = v as i32,
            GRANDCHILD => grandchild = v as i32,
            0 if v == READY => ready = true,
            _ => bail!("unexpected message {v:#x}"),
        }
    }
    let parent = agent.pid();
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (child, child), (grandchild, grandchild)],
        "three generations",
    )?;
    release(agent)?;
    // The grandchild died with its parent (PDEATHSIG) and came back to us to be reaped.
    Child::adopt(grandchild).kill()?;
    expect_pid_table(&dev, g.aid, &[], "after all three were reaped")
}

fn link_other_process_all_threads() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "other")?;
    let agent = sleeper(&dev, None, 3)?;
    let expected = entries_of(agent.pid())?;
    ensure_eq!(expected.len(), 3, "threads of the sleeping process");
    expect_pid_table(&dev, g.aid, &[], "before LINK")?;
    dev.link(g.aid, agent.pid())
        .context("LINK of another process")?;
    expect_pid_table(
        &dev,
        g.aid,
        &expected,
        "after LINK of a 3-thread process by PID",
    )?;
    release(agent)?;
    expect_pid_table(&dev, g.aid, &[], "after it was reaped")
}

/// Issue #9 section 2 ("no status is ever lost"): an AID process's children are always
/// in its AID. LINK takes the children a process already has (before, a child forked
/// before LINK stayed outside and its parent's wait reaped it silently), and UNLINK of
/// a child whose parent stays in the AID is refused.
fn link_takes_existing_children() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "nochild")?;
    let mut agent = Agent::spawn(|chan| {
        let before = proc::fork(|| proc::sleep_forever())?;
        chan.send(before.pid() as i64)?;
        chan.recv(step_timeout())?;
        let after = proc::fork(|| proc::sleep_forever())?;
        chan.send(after.pid() as i64)?;
        chan.recv(step_timeout())?;
        Ok(())
    })?;
    let parent = agent.pid();
    let old_child = agent.recv_step()? as i32;
    dev.link(g.aid, parent).context("LINK of the parent")?;
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (old_child, old_child)],
        "after LINK of a process with a child",
    )?;
    expect_errno(
        dev.unlink(old_child),
        libc::EBUSY,
        "UNLINK of a child whose parent is in the AID",
    )?;
    agent.send(GO)?;
    let new_child = agent.recv_step()? as i32;
    expect_pid_table(
        &dev,
        g.aid,
        &[(parent, parent), (old_child, old_child), (new_child, new_child)],
        "after a fork after LINK",
    )?;
    agent.send(GO)?;
    agent.finish(step_timeout())?;
    expect_pid_table(&dev, g.aid, &[], "after all were reaped")
}

fn info_counts_match_table() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "counts")?;
    let two = sleeper(&dev, None, 2)?;
    let three = sleeper(&dev, None, 3)?;
    dev.link(g.aid, two.pid())?;
    dev.link(g.aid, three.pid())?;
    let mut expected = entries_of(two.pid())?;
    expected.extend(entries_of(three.pid())?);
    expect_pid_table(&dev, g.aid, &expected, "two linked processes")?;
    let info = dev.info(g.aid)?;
    ensure_eq!(
        (info.nr_processes, info.nr_threads),
        (2, 5),
        "INFO processes/threads"
    );
    ensure_eq!(info.table_sizes, [5, 0, 0, 0, 0], "INFO table sizes");
    release(two)?;
    expect_pid_table(
        &dev,
        g.aid,
        &entries_of(three.pid())?,
        "after one process was reaped",
    )?;
    release(three)?;
    expect_pid_table(&dev, g.aid, &[], "after both were reaped")
}

fn link_errors() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "linkerr")?;
    let agent = sleeper(&dev, None, 1)?;
    expect_errno(
        dev.link(u64::MAX, agent.pid()),
        libc::ENOENT,
        "LINK to an unknown AID",
    )?;
    let mut gone = proc::fork(|| 0)?;
    let gone_pid = gone.pid();
    gone.expect_exit(0, step_timeout())?;
    expect_errno(
        dev.link(g.aid, gone_pid),
        libc::ESRCH,
        "LINK of a reaped process",
    )?;
    let zombie = proc::fork(|| 0)?;
    proc::wait_for_zombie(zombie.pid())?;
    expect_errno(
        dev.link(g.aid, zombie.pid()),
        libc::ESRCH,
        "LINK of a zombie",
    )?;
    drop(zombie);
    expect_errno(dev.link(g.aid, -1), libc::ESRCH, "LINK of PID -1")?;
    let kthreadd = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    ensure_eq!(kthreadd.trim(), "kthreadd", "PID 2 (expected kthreadd)");
    expect_errno(
        dev.link(g.aid, 2),
        libc::EINVAL,
        "LINK of a kernel thread (kthreadd)",
    )?;
    expect_pid_table(&dev, g.aid, &[], "after the failed LINKs")?;
    release(agent)
}
