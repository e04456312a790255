//! The guest's root filesystem: an uncompressed newc cpio archive, laid out as
//! docs/guest-contract.md says (busybox, /init, appshot.ko, appshotctl, the guest
//! suite and its C programs, the host's util-linux SysV IPC tools, the host's glibc so
//! dynamic host programs run).
//!
//! A run-specific second archive (the job script and `--add` files) is appended to a
//! copy of the base archive: the kernel unpacks concatenated archives in order, so the
//! base one is built once per flavor and each run only packs its own few files.

use std::fs;
use std::sync::atomic::{AtomicU32, Ordering};
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use xshell::cmd;

use crate::context::{self, Context, Flavor};
use crate::kernel::Kernel;
use crate::module_build;

const INIT_SCRIPT: &str = include_str!("guest_init.sh");
const BUSYBOX: &str = "/bin/busybox";
/// The dynamic loader and the usual glibc libraries; whichever the host has.
const LOADER: &str = "ld-linux-x86-64.so.2";
const GLIBC_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];
const LIB_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"];
/// util-linux's SysV IPC tools (Debian's essential package `util-linux`; glibc only),
/// which the suite runs unmodified: installed in /usr/bin, where busybox has none.
const UTIL_LINUX_IPC: &[&str] = &["/usr/bin/ipcs", "/usr/bin/ipcmk", "/usr/bin/ipcrm"];
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nappshot-user:x:1000:1000:appshot-user:/tmp:/bin/sh\n";
const GROUP: &str = "root:x:0:\nappshot-user:x:1000:\n";
/// Directories /init mounts a filesystem on: files put there are hidden.
const MOUNTED_OVER: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];
const MOUNT_POINTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "tmp",
    "run",
    "root",
    "mnt",
    "etc/appshot",
];

/// A built base initramfs and the kernel it belongs to.
pub struct Initramfs {
    pub kernel: Kernel,
    pub cpio: PathBuf,
}

pub fn ensure(ctx: &Context, flavor: Flavor) -> Result<Initramfs> {
    let built = module_build::ensure(ctx, flavor)?;
    let vm_dir = vm_dir(ctx, flavor);
    // Per process: another xtask may be packing the same flavor right now.
    let staging = vm_dir.join(format!("root-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    for dir in MOUNT_POINTS {
        create_dir(&staging.join(dir))?;
    }
    fs::set_permissions(staging.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::set_permissions(staging.join("tmp"), fs::Permissions::from_mode(0o1777))?;

    install_busybox(ctx, &staging)?;
    install_file(INIT_SCRIPT.as_bytes(), &staging.join("init"), 0o755)?;
    copy_file(
        &built.module_ko,
        &staging.join("lib/modules/appshot.ko"),
        0o644,
    )?;
    copy_file(
        &built.appshotctl,
        &staging.join("usr/bin/appshotctl"),
        0o755,
    )?;
    copy_file(
        &built.guest_tests,
        &staging.join("usr/libexec/appshot/guest-tests"),
        0o755,
    )?;
    for program in &built.c_programs {
        let libexec = staging.join("usr/libexec/appshot");
        for (variant, exe) in &program.builds {
            copy_file(
                exe,
                &libexec.join(format!("{}-{variant}", program.name)),
                0o755,
            )?;
        }
    }
    for tool in UTIL_LINUX_IPC {
        let host = Path::new(tool);
        if !host.exists() {
            bail!("{tool} is missing on this machine (Debian's util-linux package has it)");
        }
        let dst = staging.join(tool.trim_start_matches('/'));
        // Never through a busybox applet link of the same name, if busybox grows one.
        let _ = fs::remove_file(&dst);
        copy_file(host, &dst, 0o755)?;
    }
    install_glibc(&staging)?;
    install_file(PASSWD.as_bytes(), &staging.join("etc/passwd"), 0o644)?;
    install_file(GROUP.as_bytes(), &staging.join("etc/group"), 0o644)?;

    let cpio = vm_dir.join("initramfs.cpio");
    pack(ctx, &staging, &cpio)?;
    fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    Ok(Initramfs {
        kernel: built.kernel,
        cpio,
    })
}

/// A name for one run's files: `<pid>.<n>`, unique among the runs of this process (the
/// test suite boots guests side by side) and telling [`remove_abandoned_runs`] whose
/// they are.
pub fn run_token() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `target/vm/<flavor>`: the initramfs, per-run archives and the last console log.
pub fn vm_dir(ctx: &Context, flavor: Flavor) -> PathBuf {
    ctx.target_dir().join("vm").join(flavor.name())
}

fn install_busybox(ctx: &Context, staging: &Path) -> Result<()> {
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} is missing (apt package busybox-static; cargo xtask deps)");
    }
    copy_file(Path::new(BUSYBOX), &staging.join("bin/busybox"), 0o755)?;
    let applets = context::read(cmd!(ctx.sh, "{BUSYBOX} --list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = staging.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            create_dir(parent)?;
        }
        symlink("/bin/busybox", &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
    }
    Ok(())
}

/// The host's loader and libraries at the paths the host uses, so an `--add`ed dynamic
/// host binary finds them without an ld.so.cache.
fn install_glibc(staging: &Path) -> Result<()> {
    let multiarch = staging.join("lib/x86_64-linux-gnu");
    let mut found_loader = false;
    for name in std::iter::once(&LOADER).chain(GLIBC_LIBS) {
        let Some(host) = LIB_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
        else {
            continue;
        };
        copy_file(&host, &multiarch.join(name), 0o755)?;
        found_loader |= *name == LOADER;
    }
    if !found_loader {
        bail!("the host has no {LOADER} in {}", LIB_DIRS.join(" or "));
    }
    create_dir(&staging.join("lib64"))?;
    symlink(
        format!("/lib/x86_64-linux-gnu/{LOADER}"),
        staging.join("lib64").join(LOADER),
    )?;
    Ok(())
}

/// Packs `staging` into an uncompressed newc archive, every file owned by root.
fn pack(ctx: &Context, staging: &Path, out: &Path) -> Result<()> {
    let mut entries = Vec::new();
    list_tree(staging, Path::new("."), &mut entries)?;
    let list: String = entries
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    let _dir = ctx.sh.push_dir(staging);
    let cmd = cmd!(ctx.sh, "cpio --create --format=newc --owner=0:0 --quiet");
    eprintln!(
        "$ {cmd} < (file list of {}) > {}",
        staging.display(),
        out.display()
    );
    let output = cmd.quiet().stdin(list).output().context("cpio failed")?;
    let partial = out.with_extension(format!("partial-{}", std::process::id()));
    fs::write(&partial, &output.stdout)?;
    fs::rename(&partial, out)?;
    Ok(())
}

/// Every path under `dir`, parents before children, sorted (reproducible archives).
fn list_tree(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = rel.join(&name);
        out.push(rel.clone());
        if path.symlink_metadata()?.is_dir() {
            list_tree(&path, &rel, out)?;
        }
    }
    Ok(())
}

/// `--add HOST_PATH[:GUEST_PATH]`: a host file or directory to copy into the guest.
#[derive(Debug)]
pub struct AddSpec {
    pub host: PathBuf,
    pub guest: PathBuf,
}

impl AddSpec {
    pub fn parse(spec: &str) -> Result<AddSpec> {
        let (host, guest) = match spec.split_once(':') {
            Some((host, guest)) => (host, Some(guest)),
            None => (spec, None),
        };
        let host = context::absolute(Path::new(host))?;
        if host.symlink_metadata().is_err() {
            bail!("--add {spec}: {} does not exist", host.display());
        }
        let guest = match guest {
            Some(guest) => PathBuf::from(guest),
            None => {
                let name = host
                    .file_name()
                    .with_context(|| format!("--add {spec}: give a guest path"))?;
                Path::new("/mnt").join(name)
            }
        };
        if !guest.is_absolute()
            || guest
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            || guest == Path::new("/")
        {
            bail!("--add {spec}: the guest path must be absolute, without `..`, not /");
        }
        if let Some(hidden) = MOUNTED_OVER.iter().find(|dir| guest.starts_with(dir)) {
            bail!("--add {spec}: /init mounts over {hidden} at boot; use another path (e.g. /mnt)");
        }
        Ok(AddSpec { host, guest })
    }
}

/// A file the run itself provides (the job script, the demo script).
pub struct GuestFile {
    pub path: &'static str,
    pub contents: String,
    pub mode: u32,
}

/// Builds `<base> + <run archive>` for one run; the caller deletes it afterwards.
pub fn with_run_files(
    ctx: &Context,
    base: &Initramfs,
    files: &[GuestFile],
    adds: &[AddSpec],
) -> Result<PathBuf> {
    remove_abandoned_runs(&vm_dir(ctx, base.kernel.flavor));
    let token = run_token();
    let run_dir = vm_dir(ctx, base.kernel.flavor).join(format!("run-{token}"));
    let staging = run_dir.join("root");
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)?;
    }
    create_dir(&staging)?;
    for file in files {
        install_file(
            file.contents.as_bytes(),
            &staging.join(file.path.trim_start_matches('/')),
            file.mode,
        )?;
    }
    for add in adds {
        let dst = staging.join(add.guest.strip_prefix("/").unwrap_or(&add.guest));
        if let Some(parent) = dst.parent() {
            create_dir(parent)?;
        }
        copy_tree(&add.host, &dst)
            .with_context(|| format!("cannot stage --add {}", add.host.display()))?;
    }
    let extra = run_dir.join("extra.cpio");
    pack(ctx, &staging, &extra)?;
    let mut combined =
        fs::read(&base.cpio).with_context(|| format!("cannot read {}", base.cpio.display()))?;
    combined.extend(fs::read(&extra)?);
    let out = vm_dir(ctx, base.kernel.flavor).join(format!("run-{token}.cpio"));
    fs::write(&out, combined)?;
    fs::remove_dir_all(&run_dir)?;
    Ok(out)
}

/// Removes `run-<pid>*` and `root-<pid>` left by xtask runs that were killed.
fn remove_abandoned_runs(vm_dir: &Path) {
    let Ok(entries) = fs::read_dir(vm_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = ["run-", "root-"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .map(|rest| rest.trim_end_matches(".cpio"))
            .map(|rest| rest.split('.').next().unwrap_or(rest));
        let Some(pid) = pid.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// Copies a file, a symlink or a directory tree, keeping permission bits.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = src.symlink_metadata()?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        fs::create_dir(dst)?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        fs::set_permissions(dst, meta.permissions())?;
    } else if meta.is_file() {
        fs::copy(src, dst)?;
        fs::set_permissions(dst, meta.permissions())?;
    } else {
        bail!(
            "{} is not a regular file, directory or symlink",
            src.display()
        );
    }
    Ok(())
}

/// `mkdir -p` with mode 0755 for every directory it creates, whatever the umask.
fn create_dir(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn install_file(contents: &[u8], dst: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dst.parent() {
        create_dir(parent)?;
    }
    fs::write(dst, contents).with_context(|| format!("cannot write {}", dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy_file(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dst.parent() {
        create_dir(parent)?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}
