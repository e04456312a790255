//! Who may do what: REGISTER/LINK/UNLINK/UNREGISTER need CAP_SYS_ADMIN or
//! CAP_CHECKPOINT_RESTORE of the descriptor's opener (EPERM before the argument is read);
//! VERSION/LIST/INFO/TABLE are open to every user.

use anyhow::{bail, ensure, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::check::{expect_errno, step_timeout, sys};
use crate::device::{AidGuard, Device};
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper};
use crate::proc::{self, Agent};
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
];

/// The privileged commands.
const PRIVILEGED: [(&str, u32); 4] = [
    ("REGISTER", uapi::IOC_REGISTER),
    ("LINK", uapi::IOC_LINK),
    ("UNLINK", uapi::IOC_UNLINK),
    ("UNREGISTER", uapi::IOC_UNREGISTER),
];

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
        expect_eperm_for_any_argument(&dev)
    })?;
    expect_pid_table(&dev, g.aid, &expected, "after the refused requests")?;
    release(target)
}

/// Issue #9 section 1 ("queries"): an AID's table names processes by system PID, so a
/// caller without CAP_SYS_ADMIN/CAP_CHECKPOINT_RESTORE sees only the AIDs registered by
/// its own UID; another user's AID answers ENOENT, as one that does not exist. (Before:
/// every user saw every AID.)
fn user_queries_allowed() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "user-query")?;
    let target = sleeper(&dev, Some(g.aid), 2)?;
    let version = dev.version()?;
    let info = dev.info(g.aid)?;
    ensure!(!dev.pid_table(g.aid)?.is_empty(), "root's TABLE of its AID is empty");
    let name = g.name.clone();
    proc::in_child(step_timeout(), || {
        proc::drop_to_user()?;
        let dev = Device::open()?;
        ensure_eq!(
            dev.version().context("VERSION as uid 1000")?,
            version,
            "VERSION as uid 1000"
        );
        expect_errno(dev.info(info.aid), libc::ENOENT, "INFO by number of root's AID as uid 1000")?;
        expect_errno(
            dev.info_by_name(name.as_bytes()),
            libc::ENOENT,
            "INFO by name of root's AID as uid 1000",
        )?;
        let listed = dev.list().context("LIST as uid 1000")?;
        ensure!(
            listed.iter().all(|i| i.aid != info.aid),
            "LIST as uid 1000 shows root's AID {}: {listed:?}",
            info.aid
        );
        expect_errno(dev.pid_table(info.aid), libc::ENOENT, "TABLE of root's AID as uid 1000")?;
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
