//! Who may do what: REGISTER/LINK/UNLINK/UNREGISTER/NEXT_ID/RESERVE_PID need CAP_SYS_ADMIN or
//! CAP_CHECKPOINT_RESTORE of the descriptor's opener (EPERM before the argument is read),
//! and LINK also needs the caller to be allowed to ptrace the process it links
//! (PTRACE_MODE_ATTACH_REALCREDS); VERSION/LIST/INFO/TABLE are open to every user, but a
//! caller without those capabilities sees only the AIDs its own UID registered.

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;
use serde_json::Value;

use crate::fixtures::next_sem_id;
use super::Test;
use crate::check::{expect_errno, step_timeout, sys, Errno};
use crate::device::{unique_name, AidGuard, Device};
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper, GO, READY};
use crate::proc::{self, Agent, Status};
use crate::{cmd, ensure_eq};

pub const TESTS: &[Test] = &[
    Test::new("privilege/user_register_eperm", user_register_eperm),
    Test::new(
        "privilege/user_link_unlink_unregister_eperm",
        user_link_unlink_unregister_eperm,
    ),
    Test::new("privilege/user_queries_allowed", user_queries_allowed),
    Test::new(
        "privilege/user_cli_register_denied",
        user_cli_register_denied,
    ),
    Test::new(
        "privilege/root_opened_fd_keeps_rights",
        root_opened_fd_keeps_rights,
    ),
    Test::new(
        "privilege/user_opened_fd_has_no_rights",
        user_opened_fd_has_no_rights,
    ),
    Test::new(
        "privilege/capability_decides_not_uid",
        capability_decides_not_uid,
    ),
    Test::new(
        "privilege/cap_holder_link_needs_ptrace_access",
        cap_holder_link_needs_ptrace_access,
    ),
    Test::new(
        "privilege/user_sees_only_own_uids_aids",
        user_sees_only_own_uids_aids,
    ),
];

/// The privileged commands.
const PRIVILEGED: [(&str, u32); 6] = [
    ("REGISTER", uapi::IOC_REGISTER),
    ("LINK", uapi::IOC_LINK),
    ("UNLINK", uapi::IOC_UNLINK),
    ("UNREGISTER", uapi::IOC_UNREGISTER),
    ("NEXT_ID", uapi::IOC_NEXT_ID),
    ("RESERVE_PID", uapi::IOC_RESERVE_PID),
];

/// The virtual PID the RESERVE_PIDs below ask for: above the guest's `pid_max` (32768),
/// so no task has it (a reservation of it shows in the AID's PID table only).
const RESERVED_PID: u32 = 0x2b5d1;

/// The virtual ID the refused NEXT_IDs below ask for (one no ordinary semaphore set gets:
/// its virtual ID is its system ID, and the kernel's index 0x2b5c is never reached here).
const REFUSED_WISH: u32 = 0x2b5c;

/// Fails unless every privileged command through `dev` fails with EPERM whatever its
/// argument: NULL, an unmapped address, garbage.
fn expect_eperm_for_any_argument(dev: &Device) -> Result<()> {
    let mut garbage = [0xa5u8; 256];
    for (name, cmd) in PRIVILEGED {
        // SAFETY: NULL and a never-mapped low address are rejected by the kernel; the
        // garbage buffer is larger than any request and ours to overwrite.
        unsafe {
            expect_errno(
                dev.ioctl_addr(cmd, 0),
                libc::EPERM,
                &format!("{name} with NULL"),
            )?;
            expect_errno(
                dev.ioctl_addr(cmd, 0x1000),
                libc::EPERM,
                &format!("{name} with an unmapped address"),
            )?;
            expect_errno(
                dev.ioctl_addr(cmd, garbage.as_mut_ptr() as usize),
                libc::EPERM,
                &format!("{name} with garbage"),
            )?;
        }
    }
    Ok(())
}

fn user_register_eperm() -> Result<()> {
    let dev = Device::open()?;
    let nr_aids = dev.nr_aids()?;
    let name = crate::device::unique_name("user-reg");
    proc::in_child(step_timeout(), || {
        proc::drop_to_user()?;
        let dev = Device::open().context("open as uid 1000 (mode 0666)")?;
        let result = dev.register(&name);
        expect_errno(result, libc::EPERM, "REGISTER as uid 1000")?;
        let mut req = Device::register_request(b"a b");
        req.size = 3;
        req.flags = !0;
        (req.pid_min, req.pid_max) = (10, 5);
        req.reserved = [!0; 4];
        expect_errno(
            dev.ioctl(uapi::IOC_REGISTER, &mut req),
            libc::EPERM,
            "REGISTER with bad fields as uid 1000",
        )?;
        expect_eperm_for_any_argument(&dev)
    })?;
    if let Some(leak) = AidGuard::adopt_by_name(&dev, &name) {
        bail!("the unprivileged REGISTER created AID {}", leak.aid);
    }
    ensure_eq!(dev.nr_aids()?, nr_aids, "number of AIDs");
    Ok(())
}

fn user_link_unlink_unregister_eperm() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "user-link")?;
    let target = sleeper(&dev, Some(g.aid), 2)?;
    let expected = entries_of(target.pid())?;
    let (aid, pid) = (g.aid, target.pid());
    proc::in_child(step_timeout(), || {
        proc::drop_to_user()?;
        let dev = Device::open()?;
        expect_errno(dev.link(aid, 0), libc::EPERM, "LINK self as uid 1000")?;
        expect_errno(
            dev.link(aid, pid),
            libc::EPERM,
            "LINK of another process as uid 1000",
        )?;
        expect_errno(dev.unlink(pid), libc::EPERM, "UNLINK as uid 1000")?;
        expect_errno(dev.unlink(0), libc::EPERM, "UNLINK self as uid 1000")?;
        expect_errno(
            dev.unregister(aid, 0),
            libc::EPERM,
            "UNREGISTER as uid 1000",
        )?;
        expect_errno(
            dev.unregister(aid, uapi::UNREGISTER_FORCE),
            libc::EPERM,
            "UNREGISTER --force as uid 1000",
        )?;
        expect_errno(
            dev.unregister(u64::MAX, 0),
            libc::EPERM,
            "UNREGISTER of an unknown AID as uid 1000",
        )?;
        expect_errno(
            dev.next_id(aid, uapi::TABLE_SEM, REFUSED_WISH),
            libc::EPERM,
            "NEXT_ID as uid 1000",
        )?;
        expect_errno(
            dev.next_id(u64::MAX, uapi::TABLE_SEM, REFUSED_WISH),
            libc::EPERM,
            "NEXT_ID of an unknown AID as uid 1000",
        )?;
        expect_errno(
            dev.next_id(aid, uapi::TABLE_PID, u32::MAX),
            libc::EPERM,
            "NEXT_ID of an invalid table and ID as uid 1000",
        )?;
        expect_errno(
            dev.reserve_pid(aid, RESERVED_PID, 0),
            libc::EPERM,
            "RESERVE_PID as uid 1000",
        )?;
        expect_errno(
            dev.reserve_pid(aid, RESERVED_PID, uapi::RESERVE_PID_RELEASE),
            libc::EPERM,
            "RESERVE_PID RELEASE as uid 1000",
        )?;
        expect_errno(
            dev.reserve_pid(u64::MAX, RESERVED_PID, 0),
            libc::EPERM,
            "RESERVE_PID of an unknown AID as uid 1000",
        )?;
        expect_errno(
            dev.reserve_pid(aid, 0, !0),
            libc::EPERM,
            "RESERVE_PID of an invalid virtual PID and flags as uid 1000",
        )?;
        expect_eperm_for_any_argument(&dev)
    })?;
    // No refused RESERVE_PID left a reservation: the table is what was linked.
    let table = dev.pid_table(g.aid)?;
    if let Some(e) = table
        .iter()
        .find(|e| e.owner_id == uapi::PID_OWNER_RESERVED)
    {
        bail!("the RESERVE_PID refused to uid 1000 took effect: reservation {e:?}");
    }
    expect_pid_table(&dev, g.aid, &expected, "after the refused requests")?;
    // The refused NEXT_ID left no wish: the AID's next set gets an ordinary ID.
    let id = next_sem_id(&dev, g.aid)?;
    if id == i64::from(REFUSED_WISH) {
        bail!("the NEXT_ID refused to uid 1000 took effect: the AID's next semaphore set got virtual ID {id}");
    }
    release(target)
}

/// Registers an AID as uid 1000 holding only CAP_CHECKPOINT_RESTORE (so its `owner_uid`
/// is 1000); the guard unregisters it as root.
fn register_as_user(tag: &str) -> Result<AidGuard> {
    let name = unique_name(tag);
    let mut agent = Agent::spawn(|chan| {
        proc::become_user_with_caps(&[proc::CAP_CHECKPOINT_RESTORE])?;
        let dev = Device::open()?;
        let aid = dev
            .register(&name)
            .with_context(|| format!("REGISTER {name} as uid 1000 with CAP_CHECKPOINT_RESTORE"))?;
        chan.send(aid as i64)
    })?;
    let aid = agent.recv_step()? as u64;
    let guard = AidGuard::adopt(aid, &name);
    agent.finish(step_timeout())?;
    Ok(guard)
}

/// An unprivileged user's queries of its own AID (registered by uid 1000) see what root
/// sees.
fn user_queries_allowed() -> Result<()> {
    let dev = Device::open()?;
    let g = register_as_user("user-query")?;
    let target = sleeper(&dev, Some(g.aid), 2)?;
    let version = dev.version()?;
    let info = dev.info(g.aid)?;
    ensure_eq!(
        info.owner_uid,
        proc::USER_UID,
        "owner_uid of the AID uid 1000 registered"
    );
    let table = dev.pid_table(g.aid)?;
    let name = g.name.clone();
    proc::in_child(step_timeout(), || {
        proc::drop_to_user()?;
        let dev = Device::open()?;
        let mine = dev.version().context("VERSION as uid 1000")?;
        // nr_aids is not compared: it may count only what the caller can see.
        ensure_eq!(
            (
                mine.abi_version,
                mine.name_max,
                mine.features,
                mine.entry_limit
            ),
            (
                version.abi_version,
                version.name_max,
                version.features,
                version.entry_limit
            ),
            "VERSION as uid 1000 (ABI, name_max, features, entry_limit)"
        );
        ensure_eq!(
            dev.info(info.aid).context("INFO as uid 1000")?,
            info,
            "INFO by number as uid 1000"
        );
        ensure_eq!(
            dev.info_by_name(name.as_bytes()).context("INFO by name")?,
            info,
            "INFO by name as uid 1000"
        );
        let listed = dev.list().context("LIST as uid 1000")?;
        ensure_eq!(
            listed.iter().find(|i| i.aid == info.aid),
            Some(&info),
            "LIST record as uid 1000"
        );
        ensure_eq!(
            dev.pid_table(info.aid).context("TABLE as uid 1000")?,
            table,
            "TABLE as uid 1000"
        );
        Ok(())
    })?;
    release(target)
}

fn user_cli_register_denied() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("user-cli");
    let out = cmd::ctl_as_user(&["register", &name])?;
    if let Some(leak) = AidGuard::adopt_by_name(&dev, &name) {
        bail!("`appshotctl register` as uid 1000 created AID {}", leak.aid);
    }
    // docs/appshotctl.md: status 1, one line `appshotctl: cannot register 'NAME':
    // permission denied (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)`.
    ensure_eq!(
        out.status,
        crate::proc::Status::Exited(1),
        "status of `appshotctl register` as uid 1000"
    );
    let want = format!("appshotctl: cannot register '{name}': permission denied");
    if out.stderr.lines().count() != 1 || !out.stderr.starts_with(&want) {
        bail!(
            "stderr of the refused register: {:?}, expected one line starting {want:?}",
            out.stderr
        );
    }
    // The unprivileged queries work through the CLI too.
    cmd::ctl_as_user(&["list"])?.ok()?;
    Ok(())
}

fn root_opened_fd_keeps_rights() -> Result<()> {
    let root_dev = Device::open()?;
    let name = crate::device::unique_name("fd-rights");
    let mut agent = Agent::spawn(|chan| {
        proc::drop_to_user()?;
        // A descriptor of our own is refused...
        let own = Device::open()?;
        expect_errno(
            own.register(&name),
            libc::EPERM,
            "REGISTER through a descriptor opened as uid 1000",
        )?;
        // ...the one root opened keeps root's rights.
        let aid = root_dev
            .register(&name)
            .context("REGISTER through root's descriptor after setuid(1000)")?;
        chan.send(aid as i64)?;
        root_dev
            .link(aid, 0)
            .context("LINK self through root's descriptor")?;
        root_dev
            .next_id(aid, uapi::TABLE_SHM, 77)
            .context("NEXT_ID through root's descriptor")?;
        // Reserved and released again (the RELEASE succeeds only if the reservation was
        // made), so the table below holds the caller alone.
        root_dev
            .reserve_pid(aid, RESERVED_PID, 0)
            .context("RESERVE_PID through root's descriptor")?;
        root_dev
            .reserve_pid(aid, RESERVED_PID, uapi::RESERVE_PID_RELEASE)
            .context("RESERVE_PID RELEASE through root's descriptor")?;
        chan.send(proc::getpid() as i64)?;
        chan.recv(step_timeout())?;
        root_dev
            .unlink(0)
            .context("UNLINK self through root's descriptor")?;
        root_dev
            .unregister(aid, 0)
            .context("UNREGISTER through root's descriptor")?;
        Ok(())
    })?;
    let aid = agent.recv_step()? as u64;
    let guard = AidGuard::adopt(aid, &name);
    let pid = agent.recv_step()? as i32;
    let info = root_dev.info(guard.aid)?;
    // owner_uid is the effective UID of the process that registered (docs/abi.md).
    ensure_eq!(
        info.owner_uid,
        proc::USER_UID,
        "owner_uid of an AID registered by uid 1000 through root's descriptor"
    );
    expect_pid_table(
        &root_dev,
        guard.aid,
        &[(pid, pid)],
        "linked through root's descriptor",
    )?;
    agent.send(1)?;
    agent.finish(step_timeout())?;
    crate::check::expect_errno(
        root_dev.info(aid),
        libc::ENOENT,
        "INFO after the child's UNREGISTER",
    )
}

fn user_opened_fd_has_no_rights() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("euid-fd");
    proc::in_child(step_timeout(), || {
        // SAFETY: credential changes on this forked, single-threaded child.
        sys(unsafe { libc::seteuid(proc::USER_UID) }).context("seteuid(1000)")?;
        ensure_eq!(
            proc::effective_caps()?,
            0,
            "effective capabilities as euid 1000"
        );
        let weak = Device::open().context("open as euid 1000")?;
        // SAFETY: as above; the saved UID is still 0.
        sys(unsafe { libc::seteuid(0) }).context("seteuid(0)")?;
        if proc::effective_caps()? & (1 << proc::CAP_SYS_ADMIN) == 0 {
            bail!("CAP_SYS_ADMIN not back after seteuid(0)");
        }
        // Now fully privileged, but the descriptor carries its opener's credentials.
        expect_errno(
            weak.register(&name),
            libc::EPERM,
            "REGISTER as root through a descriptor opened as euid 1000",
        )?;
        expect_errno(
            weak.next_id(u64::MAX, uapi::TABLE_SEM, 1),
            libc::EPERM,
            "NEXT_ID as root through a descriptor opened as euid 1000",
        )?;
        expect_errno(
            weak.reserve_pid(u64::MAX, RESERVED_PID, 0),
            libc::EPERM,
            "RESERVE_PID as root through a descriptor opened as euid 1000",
        )?;
        weak.version().context("VERSION through it")?;
        Ok(())
    })?;
    if let Some(leak) = AidGuard::adopt_by_name(&dev, &name) {
        bail!(
            "REGISTER through the weak descriptor created AID {}",
            leak.aid
        );
    }
    Ok(())
}

fn capability_decides_not_uid() -> Result<()> {
    let dev = Device::open()?;
    let mut agent = Agent::spawn(|chan| {
        for (caps, what) in [
            (
                vec![proc::CAP_CHECKPOINT_RESTORE],
                "CAP_CHECKPOINT_RESTORE only",
            ),
            (vec![proc::CAP_SYS_ADMIN], "CAP_SYS_ADMIN only"),
        ] {
            proc::set_effective_caps(&caps)?;
            let dev = Device::open()?;
            let name = crate::device::unique_name("cap");
            let aid = dev
                .register(&name)
                .with_context(|| format!("REGISTER as root with {what}"))?;
            chan.send(aid as i64)?;
            dev.next_id(aid, uapi::TABLE_MSG, 77)
                .with_context(|| format!("NEXT_ID as root with {what}"))?;
            dev.reserve_pid(aid, RESERVED_PID, 0)
                .with_context(|| format!("RESERVE_PID as root with {what}"))?;
            dev.reserve_pid(aid, RESERVED_PID, uapi::RESERVE_PID_RELEASE)
                .with_context(|| format!("RESERVE_PID RELEASE as root with {what}"))?;
            dev.unregister(aid, 0)
                .with_context(|| format!("UNREGISTER as root with {what}"))?;
        }
        proc::set_effective_caps(&[])?;
        let dev = Device::open().context("open as root without capabilities")?;
        expect_errno(
            dev.register(&crate::device::unique_name("nocap")),
            libc::EPERM,
            "REGISTER as uid 0 without capabilities",
        )?;
        expect_errno(
            dev.next_id(u64::MAX, uapi::TABLE_SEM, 1),
            libc::EPERM,
            "NEXT_ID as uid 0 without capabilities",
        )?;
        expect_errno(
            dev.reserve_pid(u64::MAX, RESERVED_PID, 0),
            libc::EPERM,
            "RESERVE_PID as uid 0 without capabilities",
        )?;
        dev.version().context("VERSION without capabilities")?;
        chan.send(0)?;
        Ok(())
    })?;
    // Kept until the child is done: it unregisters them itself.
    let mut guards = Vec::new();
    for _ in 0..2 {
        let aid = agent.recv_step()? as u64;
        guards.push(AidGuard::adopt(aid, "cap"));
    }
    ensure_eq!(agent.recv_step()?, 0, "end marker");
    agent.finish(step_timeout())?;
    for g in &guards {
        expect_errno(
            dev.info(g.aid),
            libc::ENOENT,
            "INFO after the child's UNREGISTER",
        )?;
    }
    Ok(())
}

/// A LINK's result as one value: 0, or minus the errno.
fn result_value(result: crate::check::SysResult<()>) -> i64 {
    match result {
        Ok(()) => 0,
        Err(e) => -(e.0 as i64),
    }
}

/// Whether this process may attach to process `pid` with ptrace (PTRACE_SEIZE, which
/// checks PTRACE_MODE_ATTACH_REALCREDS, what LINK must check): tried from a child that
/// exits at once, which detaches it again; the target is never stopped.
fn may_attach(pid: i32) -> crate::check::SysResult<()> {
    let child = proc::fork(|| {
        // SAFETY: PTRACE_SEIZE with integer arguments; it does not stop the target.
        let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) };
        if r < 0 {
            Errno::last().0
        } else {
            0
        }
    });
    let status = child
        .and_then(|mut c| c.wait(step_timeout()))
        .map_err(|_| Errno(libc::ECHILD))?;
    match status {
        Status::Exited(0) => Ok(()),
        Status::Exited(errno) => Err(Errno(errno)),
        Status::Signaled(_) => Err(Errno(libc::ECHILD)),
    }
}

/// A helper process of uid/gid 1000 without capabilities, dumpable (as after an exec
/// by that user), sleeping until told [`GO`].
fn user_sleeper() -> Result<Agent> {
    let mut agent = Agent::spawn(|chan| {
        proc::drop_to_user()?;
        proc::set_dumpable()?;
        chan.send(READY)?;
        chan.recv(std::time::Duration::from_secs(3600))?;
        Ok(())
    })?;
    agent.expect(READY, "uid-1000 sleeper ready")?;
    Ok(agent)
}

/// issue #9: LINK checked only the opener's capability, not whether the caller may
/// ptrace the process it links, so uid 1000 holding CAP_CHECKPOINT_RESTORE could link a
/// root process (and from then on decide the PIDs it sees). LINK must also pass
/// ptrace_may_access(target, PTRACE_MODE_ATTACH_REALCREDS): EPERM for a root process,
/// nothing linked; a process of the caller's own UID links.
fn cap_holder_link_needs_ptrace_access() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "ptrace-link")?;
    let root_target = sleeper(&dev, None, 1)?;
    let user_target = user_sleeper()?;
    let (aid, root_pid, user_pid) = (g.aid, root_target.pid(), user_target.pid());
    let mut agent = Agent::spawn(|chan| {
        proc::become_user_with_caps(&[proc::CAP_CHECKPOINT_RESTORE])?;
        // The setup gives the answers LINK must give: ptrace attach makes the same check.
        expect_errno(
            may_attach(root_pid),
            libc::EPERM,
            "setup: PTRACE_SEIZE of root's process as uid 1000",
        )?;
        may_attach(user_pid).context("setup: PTRACE_SEIZE of the uid-1000 process as uid 1000")?;
        let dev = Device::open()?;
        chan.send(result_value(dev.link(aid, root_pid)))?;
        chan.recv(step_timeout())?;
        dev.link(aid, user_pid).with_context(|| {
            format!("LINK of process {user_pid} (uid 1000, dumpable) by uid 1000 with CAP_CHECKPOINT_RESTORE")
        })?;
        chan.send(READY)
    })?;
    let first = agent.recv_step()?;
    let table = crate::fixtures::pid_entries(&dev, aid)?;
    if first != -(libc::EPERM as i64) {
        bail!(
            "LINK of root's process {root_pid} by uid 1000 holding only CAP_CHECKPOINT_RESTORE: expected EPERM, got {} (PID table now {table:?})",
            if first == 0 { "success".to_string() } else { Errno(-first as i32).name() }
        );
    }
    expect_pid_table(&dev, aid, &[], "after the refused LINK of root's process")?;
    expect_errno(
        dev.unlink(root_pid),
        libc::ENOENT,
        "UNLINK of root's process after the refused LINK (it must not be linked)",
    )?;
    agent.send(GO)?;
    agent.expect(READY, "LINK of a uid-1000 process")?;
    agent.finish(step_timeout())?;
    expect_pid_table(
        &dev,
        aid,
        &entries_of(user_pid)?,
        "after uid 1000 linked a process of its own",
    )?;
    release(root_target)?;
    release(user_target)
}

/// `appshotctl ARGS` as uid 1000 (no capabilities); its stdout as JSON.
fn user_ctl_json(args: &[&str]) -> Result<Value> {
    let out = cmd::ctl_as_user(args)?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`appshotctl {}` output is not JSON: {:?}",
            args.join(" "),
            out.stdout
        )
    })
}

/// issue #9: LIST, INFO and TABLE showed every AID to every user: its name, its
/// processes and their PIDs. A caller without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE
/// must see only the AIDs registered by its own UID (owner_uid): LIST returns and counts
/// only those, INFO and TABLE of another UID's AID fail with ENOENT, as for an AID that
/// does not exist. A privileged caller, whatever its UID, still sees every AID.
fn user_sees_only_own_uids_aids() -> Result<()> {
    let dev = Device::open()?;
    let r = AidGuard::new(&dev, "root-aid")?;
    let target = sleeper(&dev, Some(r.aid), 1)?;
    ensure_eq!(
        dev.pid_table(r.aid)?.len(),
        1,
        "entries of root's AID (one linked process)"
    );
    let u = register_as_user("user-aid")?;
    let (r_aid, u_aid) = (r.aid, u.aid);
    let (r_name, u_name) = (r.name.clone(), u.name.clone());

    // Privileged (uid 1000 with CAP_CHECKPOINT_RESTORE): every AID.
    proc::in_child(step_timeout(), || {
        proc::become_user_with_caps(&[proc::CAP_CHECKPOINT_RESTORE])?;
        let dev = Device::open()?;
        let listed = dev.list().context("LIST")?;
        for aid in [r_aid, u_aid] {
            if !listed.iter().any(|i| i.aid == aid) {
                bail!("LIST as uid 1000 with CAP_CHECKPOINT_RESTORE lacks AID {aid}");
            }
        }
        dev.info(r_aid)
            .context("INFO of root's AID as uid 1000 with CAP_CHECKPOINT_RESTORE")?;
        ensure_eq!(
            dev.pid_table(r_aid)
                .context("TABLE of root's AID as uid 1000 with CAP_CHECKPOINT_RESTORE")?
                .len(),
            1,
            "entries of root's AID seen by uid 1000 with CAP_CHECKPOINT_RESTORE"
        );
        Ok(())
    })
    .context("a privileged uid-1000 caller")?;

    // Unprivileged (uid 1000, no capabilities): only uid 1000's AIDs.
    proc::in_child(step_timeout(), || {
        proc::drop_to_user()?;
        let dev = Device::open()?;
        let listed = dev.list().context("LIST as uid 1000")?;
        let aids: Vec<(u64, u32)> = listed.iter().map(|i| (i.aid, i.owner_uid)).collect();
        if listed.iter().any(|i| i.aid == r_aid) {
            bail!("LIST as uid 1000 without capabilities shows root's AID {r_aid} (listed (aid, owner_uid): {aids:?})");
        }
        if let Some(other) = listed.iter().find(|i| i.owner_uid != proc::USER_UID) {
            bail!("LIST as uid 1000 without capabilities shows AID {} of uid {} (listed: {aids:?})", other.aid, other.owner_uid);
        }
        if !listed.iter().any(|i| i.aid == u_aid) {
            bail!("LIST as uid 1000 lacks its own AID {u_aid} (listed: {aids:?})");
        }
        ensure_eq!(
            dev.list_count().context("LIST with capacity 0")? as usize,
            listed.len(),
            "LIST count as uid 1000 (only its own AIDs)"
        );
        expect_errno(dev.info(r_aid), libc::ENOENT, "INFO of root's AID by number as uid 1000")?;
        expect_errno(
            dev.info_by_name(r_name.as_bytes()),
            libc::ENOENT,
            "INFO of root's AID by name as uid 1000",
        )?;
        expect_errno(dev.pid_table(r_aid), libc::ENOENT, "TABLE of root's AID as uid 1000")?;
        for table in 0..uapi::TABLE_COUNT as u32 {
            expect_errno(
                dev.table(r_aid, table),
                libc::ENOENT,
                &format!("TABLE {table} of root's AID as uid 1000"),
            )?;
        }
        ensure_eq!(dev.info(u_aid).context("INFO of its own AID")?.aid, u_aid, "INFO of its own AID");
        dev.info_by_name(u_name.as_bytes()).context("INFO of its own AID by name")?;
        dev.pid_table(u_aid).context("TABLE of its own AID")?;
        Ok(())
    })
    .context("an unprivileged uid-1000 caller")?;

    // The CLI as uid 1000 shows the same.
    let doc = user_ctl_json(&["list", "--json"])?;
    let listed: Vec<u64> = doc
        .get("aids")
        .and_then(Value::as_array)
        .with_context(|| format!("no \"aids\" array in {doc}"))?
        .iter()
        .filter_map(|a| a.get("aid").and_then(Value::as_u64))
        .collect();
    if listed.contains(&r_aid) || !listed.contains(&u_aid) {
        bail!("`appshotctl list --json` as uid 1000 lists AIDs {listed:?}: expected its own {u_aid} and not root's {r_aid}");
    }
    let out = cmd::ctl_as_user(&["show", &r_name])?;
    let why = format!("no AID named '{r_name}'");
    if out.status != Status::Exited(1)
        || out.stderr.lines().count() != 1
        || !out.stderr.contains(&why)
    {
        bail!(
            "`appshotctl show {r_name}` (root's AID) as uid 1000: {}, stderr {:?}; expected status 1 and one line with {why:?}",
            out.status,
            out.stderr
        );
    }
    cmd::ctl_as_user(&["show", &u_name])?.ok()?;

    // Root still sees both.
    let all: Vec<(u64, u32)> = dev.list()?.iter().map(|i| (i.aid, i.owner_uid)).collect();
    for want in [(r_aid, 0), (u_aid, proc::USER_UID)] {
        if !all.contains(&want) {
            bail!("LIST as root lacks (aid, owner_uid) {want:?}: {all:?}");
        }
    }
    drop(u);
    release(target)
}
