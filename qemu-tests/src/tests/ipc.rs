//! SysV IPC (issue #10) as unmodified programs see it. IPC virtualization is not in the
//! module yet: these tests hold what must not change for processes outside every AID
//! while AIDs exist (their IDs are the kernel's, and util-linux's `ipcmk`, `ipcs` and
//! `ipcrm` agree with the system calls about them), and they are the baseline the AID
//! runs of issue #10 will be compared with.

use anyhow::{bail, Context, Result};

use super::Test;
use crate::aid_fixture::{AidFixture, Flavor};
use crate::check::{step_timeout, Errno};
use crate::cmd;

pub const TESTS: &[Test] = &[Test::new(
    "ipc/util_linux_tools_outside_any_aid",
    util_linux_tools_outside_any_aid,
)];

/// The kinds of SysV object: `ipcmk` option and argument, the words of its answer,
/// `ipcs`/`ipcrm` option.
struct Kind {
    what: &'static str,
    make: &'static [&'static str],
    answer: &'static str,
    option: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind { what: "semaphore set", make: &["-S", "3"], answer: "Semaphore id:", option: "-s" },
    Kind { what: "shared memory segment", make: &["-M", "4096"], answer: "Shared memory id:", option: "-m" },
    Kind { what: "message queue", make: &["-Q"], answer: "Message queue id:", option: "-q" },
];

/// What the `*ctl(IPC_STAT)` system call says of object `id` of `kind`: 0 or an errno.
fn stat(kind: &Kind, id: i32) -> i32 {
    // SAFETY: each call writes at most its own *_ds structure into a zeroed local.
    let r = unsafe {
        match kind.option {
            "-s" => {
                let mut ds: libc::semid_ds = std::mem::zeroed();
                libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds)
            }
            "-m" => {
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                libc::shmctl(id, libc::IPC_STAT, &mut ds)
            }
            _ => {
                let mut ds: libc::msqid_ds = std::mem::zeroed();
                libc::msgctl(id, libc::IPC_STAT, &mut ds)
            }
        }
    };
    if r < 0 { Errno::last().0 } else { 0 }
}

/// Outside any AID, while an AID exists: `ipcmk` creates each kind of object and prints
/// its ID, which the system call and `ipcs -i` both know; `ipcrm` removes it, after
/// which neither does.
fn util_linux_tools_outside_any_aid() -> Result<()> {
    let _aid = AidFixture::new("ipc-tools", Flavor::Range)?;
    for kind in &KINDS {
        let mut argv = vec!["/usr/bin/ipcmk"];
        argv.extend(kind.make);
        let out = cmd::run(&argv, step_timeout())?.ok()?;
        let id: i32 = out
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(kind.answer))
            .and_then(|rest| rest.trim().parse().ok())
            .with_context(|| format!("`{}` printed no {:?}: {:?}", argv.join(" "), kind.answer, out.stdout))?;
        let r = stat(kind, id);
        if r != 0 {
            bail!("IPC_STAT of the {} {id} that ipcmk made: {}", kind.what, Errno(r));
        }
        let id_text = id.to_string();
        let shown = cmd::run(&["/usr/bin/ipcs", kind.option, "-i", &id_text], step_timeout())?.ok()?;
        if !shown.stdout.contains(&format!("id={id}")) {
            bail!("`ipcs {} -i {id}` does not show the {} {id}: {:?}", kind.option, kind.what, shown.stdout);
        }
        cmd::run(&["/usr/bin/ipcrm", kind.option, &id_text], step_timeout())?.ok()?;
        let r = stat(kind, id);
        if r != libc::EINVAL && r != libc::EIDRM {
            bail!("IPC_STAT of the removed {} {id}: {} (want EINVAL)", kind.what, Errno(r));
        }
        let gone = cmd::run(&["/usr/bin/ipcs", kind.option, "-i", &id_text], step_timeout())?;
        if gone.success() && gone.stdout.contains(&format!("id={id}")) {
            bail!("`ipcs {} -i {id}` still shows the removed {}: {:?}", kind.option, kind.what, gone.stdout);
        }
    }
    Ok(())
}
