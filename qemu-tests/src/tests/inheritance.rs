//! LINK and inheritance: a linked process's threads and descendants, however created
//! (fork, vfork, clone, clone3, threads, exec), are in its AID's PID table with the right
//! owner; LINK of another process takes all its threads and none of its existing children.
//! Every test runs in an AID with a PID range and in one without: the tables hold system
//! TIDs, so an ID a process of the AID reports is mapped to its system ID first.

use std::ffi::{c_int, c_void, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::{expect_errno, step_timeout, Errno};
use crate::fixtures::{entries_of, release, sleeper, GO, READY};
use crate::proc::{self, Agent, Child};
use crate::virt::{self, expect_own_id};
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
    fx: &AidFixture,
    make: impl FnOnce(&proc::Channel) -> Result<Vec<Child>>,
) -> Result<Agent> {
    // The caller receives the values `make` sent, then READY.
    fx.spawn_linked(|chan| {
        let children = make(chan)?;
        chan.send(READY)?;
        chan.recv(std::time::Duration::from_secs(3600))?;
        drop(children);
        Ok(())
    })
}

fn link_self_table_holds_tid() -> Result<()> {
    for_each_flavor("self", |fx| {
        let mut agent = fx.spawn_linked(|chan| {
            chan.send(proc::gettid() as i64)?;
            chan.send(virt::system_tid()? as i64)?;
            chan.recv(step_timeout())?;
            Ok(())
        })?;
        let tid = agent.recv_step()? as i32;
        let system = agent.recv_step()? as i32;
        expect_own_id(i64::from(tid), i64::from(system), fx.range(), "gettid after LINK")?;
        ensure_eq!(system, agent.pid(), "TID of the single-threaded child");
        fx.expect_pid_table(&[(system, system)], "after LINK of itself")?;
        release(agent)?;
        fx.expect_pid_table(&[], "after the child was reaped")
    })
}

fn link_twice_noop_other_aid_ebusy() -> Result<()> {
    for_each_flavor("twice-a", |a| {
        let dev = &a.dev;
        let b = AidFixture::with_range("twice-b", a.range())?;
        let agent = sleeper(dev, Some(a.aid()), 2)?;
        let expected = entries_of(agent.pid())?;
        dev.link(a.aid(), agent.pid())
            .context("LINK again to its own AID")?;
        a.expect_pid_table(&expected, "after a second LINK to the same AID")?;
        expect_errno(
            dev.link(b.aid(), agent.pid()),
            libc::EBUSY,
            "LINK to another AID",
        )?;
        b.expect_pid_table(&[], "the other AID after EBUSY")?;
        a.expect_pid_table(&expected, "the first AID after EBUSY")?;
        release(agent)
    })
}

/// The agent (a linked parent) reports the PID of the child it created, then waits:
/// the table must hold exactly the two of them, each its own process, and nothing once
/// both are reaped.
fn expect_parent_and_child(fx: &AidFixture, mut agent: Agent, what: &str) -> Result<()> {
    let reported = agent.recv_step()? as i32;
    agent.expect(READY, "parent ready")?;
    let parent = agent.pid();
    let child = fx.system_of_child(parent, reported)?;
    fx.expect_pid_table(&[(parent, parent), (child, child)], what)?;
    release(agent)?;
    fx.expect_pid_table(&[], "after both were reaped")
}

fn fork_child_linked() -> Result<()> {
    for_each_flavor("fork", |fx| {
        let agent = linked_parent(fx, |chan| {
            let child = proc::fork(|| proc::sleep_forever())?;
            chan.send(child.pid() as i64)?;
            Ok(vec![child])
        })?;
        expect_parent_and_child(fx, agent, "after fork")
    })
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
    for_each_flavor("vfork", vfork_child_linked_in)
}

fn vfork_child_linked_in(fx: &AidFixture) -> Result<()> {
    let mut agent = linked_parent(fx, |chan| {
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
    let reported = agent.recv_step()? as i32;
    agent.expect(READY, "parent ready")?;
    let parent = agent.pid();
    let child = fx.system_of_child(parent, reported)?;
    let comm = std::fs::read_to_string(format!("/proc/{child}/comm"))
        .with_context(|| format!("command of the vfork child {child}"))?;
    ensure_eq!(
        comm.trim(),
        "sleep",
        "command of the vfork child after its exec"
    );
    fx.expect_pid_table(&[(parent, parent), (child, child)], "after vfork + exec")?;
    release(agent)?;
    fx.expect_pid_table(&[], "after both were reaped")
}

fn clone_without_thread_linked() -> Result<()> {
    for_each_flavor("clone", clone_without_thread_linked_in)
}

fn clone_without_thread_linked_in(fx: &AidFixture) -> Result<()> {
    let mut agent = linked_parent(fx, |chan| {
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
    let plain = fx.system_of_child(parent, plain)?;
    let shared_vm = fx.system_of_child(parent, shared_vm)?;
    fx.expect_pid_table(
        &[(parent, parent), (plain, plain), (shared_vm, shared_vm)],
        "after clone(SIGCHLD) and clone(CLONE_VM|SIGCHLD)",
    )?;
    release(agent)?;
    fx.expect_pid_table(&[], "after all were reaped")
}

fn clone3_child_linked() -> Result<()> {
    for_each_flavor("clone3", clone3_child_linked_in)
}

fn clone3_child_linked_in(fx: &AidFixture) -> Result<()> {
    let agent = linked_parent(fx, |chan| {
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
    expect_parent_and_child(fx, agent, "after clone3")
}

fn thread_linked_owner_is_tgid() -> Result<()> {
    for_each_flavor("thread", |fx| {
        let mut agent = fx.spawn_linked(|chan| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send((proc::gettid(), virt::system_tid().unwrap_or(-1)));
                proc::sleep_forever();
            });
            let (tid, system) = rx.recv_timeout(step_timeout()).context("thread TID")?;
            chan.send(tid as i64)?;
            chan.send(system as i64)?;
            chan.recv(step_timeout())?;
            Ok(())
        })?;
        let seen = agent.recv_step()?;
        let tid = agent.recv_step()? as i32;
        let pid = agent.pid();
        expect_own_id(seen, i64::from(tid), fx.range(), "gettid in the thread")?;
        if tid == pid {
            bail!("thread reported the process's TID");
        }
        fx.expect_pid_table(&[(pid, pid), (tid, pid)], "after a thread was created")?;
        release(agent)?;
        fx.expect_pid_table(&[], "after the process was reaped")
    })
}

fn exec_keeps_link() -> Result<()> {
    for_each_flavor("exec", exec_keeps_link_in)
}

fn exec_keeps_link_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid) = (&fx.dev, fx.aid());
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
    expect_own_id(i64::from(reported), i64::from(sh_pid), fx.range(), "$$ of the exec'd shell")?;
    fx.pid_map()?
        .expect_virtual(reported, sh_pid, fx.range(), "$$ of the exec'd shell")?;
    let bg: i32 = proc::read_line_timeout(out, step_timeout())?
        .trim()
        .parse()?;
    // Once the shell is gone its child is ours to reap (subreaper).
    let mut bg = Child::adopt(fx.system_of_child(sh_pid, bg)?);
    fx.expect_pid_table(
        &[(sh_pid, sh_pid), (bg.pid(), bg.pid())],
        "after exec and a fork by the new program",
    )?;
    drop(sh.stdin.take());
    sh.child.expect_exit(0, step_timeout())?;
    bg.kill()?;
    fx.expect_pid_table(&[], "after the shell and its child were reaped")
}

fn exec_from_thread_keeps_link() -> Result<()> {
    for_each_flavor("exec-thr", exec_from_thread_keeps_link_in)
}

fn exec_from_thread_keeps_link_in(fx: &AidFixture) -> Result<()> {
    let (in_rx, in_tx) = proc::pipe()?;
    let (out_rx, out_tx) = proc::pipe()?;
    let mut agent = fx.spawn_linked(|chan| {
        chan.send(proc::getpid() as i64)?;
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (stdin_fd, stdout_fd) = (in_rx.as_raw_fd(), out_tx.as_raw_fd());
        std::thread::spawn(move || {
            let _ = tid_tx.send((proc::gettid(), virt::system_tid().unwrap_or(-1)));
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
        let (tid, system) = tid_rx.recv_timeout(step_timeout()).context("thread TID")?;
        chan.send(tid as i64)?;
        chan.send(system as i64)?;
        chan.recv(step_timeout())?;
        go_tx.send(()).context("start the exec")?;
        // The exec replaces this thread too (de_thread); if it fails, report.
        std::thread::sleep(step_timeout());
        bail!("the thread's exec did not happen")
    })?;
    drop((in_rx, out_tx));
    let pid = agent.pid();
    let seen_pid = agent.recv_step()?;
    expect_own_id(seen_pid, i64::from(pid), fx.range(), "getpid after LINK")?;
    let seen_tid = agent.recv_step()?;
    let tid = agent.recv_step()? as i32;
    expect_own_id(seen_tid, i64::from(tid), fx.range(), "gettid in the thread")?;
    if tid == pid {
        bail!("thread reported the process's TID");
    }
    fx.expect_pid_table(&[(pid, pid), (tid, pid)], "before the exec")?;
    agent.send(GO)?;
    let reported: i32 = proc::read_line_timeout(out_rx.as_raw_fd(), step_timeout())?
        .trim()
        .parse()?;
    ensure_eq!(
        i64::from(reported),
        seen_pid,
        "$$ after exec from a non-leader thread (it takes the leader's PID)"
    );
    ensure_eq!(proc::threads_of(pid)?, vec![pid], "threads after the exec");
    fx.expect_pid_table(&[(pid, pid)], "after exec from a non-leader thread")?;
    drop::<OwnedFd>(in_tx);
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after the process was reaped")
}

const CHILD: i64 = 1 << 32;
const GRANDCHILD: i64 = 2 << 32;

fn three_level_tree_linked() -> Result<()> {
    for_each_flavor("tree", three_level_tree_linked_in)
}

fn three_level_tree_linked_in(fx: &AidFixture) -> Result<()> {
    let mut agent = linked_parent(fx, |chan| {
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
    let child = fx.system_of_child(parent, child)?;
    let grandchild = fx.system_of_child(child, grandchild)?;
    fx.expect_pid_table(
        &[(parent, parent), (child, child), (grandchild, grandchild)],
        "three generations",
    )?;
    release(agent)?;
    // The grandchild died with its parent (PDEATHSIG) and came back to us to be reaped.
    Child::adopt(grandchild).kill()?;
    fx.expect_pid_table(&[], "after all three were reaped")
}

fn link_other_process_all_threads() -> Result<()> {
    for_each_flavor("other", |fx| {
        let agent = sleeper(&fx.dev, None, 3)?;
        let expected = entries_of(agent.pid())?;
        ensure_eq!(expected.len(), 3, "threads of the sleeping process");
        fx.expect_pid_table(&[], "before LINK")?;
        fx.dev
            .link(fx.aid(), agent.pid())
            .context("LINK of another process")?;
        fx.expect_pid_table(&expected, "after LINK of a 3-thread process by PID")?;
        release(agent)?;
        fx.expect_pid_table(&[], "after it was reaped")
    })
}

/// Issue #9 section 2 ("no status is ever lost"): an AID process's children are always
/// in its AID. LINK takes the children a process already has (before, a child forked
/// before LINK stayed outside and its parent's wait reaped it silently), and UNLINK of
/// a child whose parent stays in the AID is refused.
fn link_takes_existing_children() -> Result<()> {
    for_each_flavor("nochild", link_takes_existing_children_in)
}

fn link_takes_existing_children_in(fx: &AidFixture) -> Result<()> {
    let dev = &fx.dev;
    let mut agent = Agent::spawn(|chan| {
        let before = proc::fork(|| proc::sleep_forever())?;
        chan.send(before.pid() as i64)?;
        chan.recv(step_timeout())?;
        let after = proc::fork(|| proc::sleep_forever())?;
        chan.send(after.pid() as i64)?;
        // The PID `before` has now, which the test reads in the table: fork's was a
        // system PID, which names nobody in an AID with a range.
        let now = chan.recv(step_timeout())? as i32;
        std::mem::forget(before);
        // SAFETY: kill and waitpid of our child, by the PID this process knows it by.
        let (killed, reaped) = unsafe {
            (
                libc::kill(now, libc::SIGKILL),
                libc::waitpid(now, std::ptr::null_mut(), 0),
            )
        };
        if killed != 0 || reaped != now {
            bail!(
                "the child forked before LINK, as {now}: kill {killed}, waitpid {reaped} ({})",
                Errno::last()
            );
        }
        drop(after);
        Ok(())
    })?;
    let parent = agent.pid();
    let old_child = agent.recv_step()? as i32;
    dev.link(fx.aid(), parent).context("LINK of the parent")?;
    fx.expect_pid_table(
        &[(parent, parent), (old_child, old_child)],
        "after LINK of a process with a child",
    )?;
    expect_errno(
        dev.unlink(old_child),
        libc::EBUSY,
        "UNLINK of a child whose parent is in the AID",
    )?;
    agent.send(GO)?;
    let new_child = fx.system_of_child(parent, agent.recv_step()? as i32)?;
    fx.expect_pid_table(
        &[(parent, parent), (old_child, old_child), (new_child, new_child)],
        "after a fork after LINK",
    )?;
    let map = fx.pid_map()?;
    let now = map.virtual_of(old_child).with_context(|| {
        format!("no entry for the child {old_child} forked before LINK: {:?}", map.pairs())
    })?;
    map.expect_virtual(now, old_child, fx.range(), "the child forked before LINK")?;
    agent.send(i64::from(now))?;
    agent.finish(step_timeout())?;
    fx.expect_pid_table(&[], "after all were reaped")
}

fn info_counts_match_table() -> Result<()> {
    for_each_flavor("counts", info_counts_match_table_in)
}

fn info_counts_match_table_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid) = (&fx.dev, fx.aid());
    let two = sleeper(dev, None, 2)?;
    let three = sleeper(dev, None, 3)?;
    dev.link(aid, two.pid())?;
    dev.link(aid, three.pid())?;
    let mut expected = entries_of(two.pid())?;
    expected.extend(entries_of(three.pid())?);
    fx.expect_pid_table(&expected, "two linked processes")?;
    let info = dev.info(aid)?;
    ensure_eq!(
        (info.nr_processes, info.nr_threads),
        (2, 5),
        "INFO processes/threads"
    );
    ensure_eq!(info.table_sizes, [5, 0, 0, 0, 0], "INFO table sizes");
    release(two)?;
    fx.expect_pid_table(&entries_of(three.pid())?, "after one process was reaped")?;
    release(three)?;
    fx.expect_pid_table(&[], "after both were reaped")
}

fn link_errors() -> Result<()> {
    for_each_flavor("linkerr", link_errors_in)
}

fn link_errors_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid) = (&fx.dev, fx.aid());
    let agent = sleeper(dev, None, 1)?;
    expect_errno(
        dev.link(u64::MAX, agent.pid()),
        libc::ENOENT,
        "LINK to an unknown AID",
    )?;
    let mut gone = proc::fork(|| 0)?;
    let gone_pid = gone.pid();
    gone.expect_exit(0, step_timeout())?;
    expect_errno(
        dev.link(aid, gone_pid),
        libc::ESRCH,
        "LINK of a reaped process",
    )?;
    let zombie = proc::fork(|| 0)?;
    proc::wait_for_zombie(zombie.pid())?;
    expect_errno(
        dev.link(aid, zombie.pid()),
        libc::ESRCH,
        "LINK of a zombie",
    )?;
    drop(zombie);
    expect_errno(dev.link(aid, -1), libc::ESRCH, "LINK of PID -1")?;
    let kthreadd = std::fs::read_to_string("/proc/2/comm").context("read /proc/2/comm")?;
    ensure_eq!(kthreadd.trim(), "kthreadd", "PID 2 (expected kthreadd)");
    expect_errno(
        dev.link(aid, 2),
        libc::EINVAL,
        "LINK of a kernel thread (kthreadd)",
    )?;
    fx.expect_pid_table(&[], "after the failed LINKs")?;
    release(agent)
}
