//! Build dependencies: the Debian packages of docs/PLATFORM (kernel source, Debian's
//! rustc and its core source, LLVM 14, QEMU, busybox-static, ...) and bindgen-cli from
//! crates.io. Checking is cheap (one dpkg-query, one `bindgen --version`), so every
//! step that needs them calls `ensure` first; installing happens only when something
//! is missing.

use std::os::unix::fs::MetadataExt as _;

use anyhow::{bail, Context as _, Result};
use xshell::cmd;

use crate::context::{self, Context};

/// Debian packages the kernel build, the module build and the guest need.
pub const APT_PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "rustc-web",
    "rust-web-src",
    "clang",
    "llvm",
    "lld",
    "libclang-dev",
    // GNU objcopy: the kernel's x32 vDSO (CONFIG_X86_X32_ABI) cannot be made by llvm-objcopy
    "binutils",
    "flex",
    "bison",
    "bc",
    "make",
    "xz-utils",
    "libelf-dev",
    "libssl-dev",
    // static glibc for the crt-static guest programs
    "libc6-dev",
    "cpio",
    "kmod",
    "qemu-system-x86",
    "busybox-static",
];

pub const BINDGEN_VERSION: &str = "0.73.2";

pub fn ensure(ctx: &Context) -> Result<()> {
    let missing = missing_packages(ctx)?;
    let bindgen_ok = bindgen_version(ctx).as_deref() == Some(BINDGEN_VERSION);
    if missing.is_empty() && bindgen_ok {
        say!("deps: all present");
        return Ok(());
    }
    if !missing.is_empty() {
        say!("deps: installing apt packages: {}", missing.join(" "));
        install_packages(ctx, &missing)?;
        let still_missing = missing_packages(ctx)?;
        if !still_missing.is_empty() {
            bail!("apt-get did not install: {}", still_missing.join(" "));
        }
    }
    if !bindgen_ok {
        say!("deps: installing bindgen-cli {BINDGEN_VERSION} with cargo install");
        let cargo = ctx.cargo();
        cmd!(
            ctx.sh,
            "{cargo} install --locked bindgen-cli --version {BINDGEN_VERSION}"
        )
        .run()
        .context("cargo install bindgen-cli failed")?;
        match bindgen_version(ctx) {
            Some(v) if v == BINDGEN_VERSION => {}
            other => bail!(
                "after cargo install, {} reports version {:?}, want {BINDGEN_VERSION}",
                ctx.bindgen()?.display(),
                other.unwrap_or_else(|| "none".into())
            ),
        }
    }
    say!("deps: done");
    Ok(())
}

/// Packages of APT_PACKAGES that dpkg does not report as installed.
fn missing_packages(ctx: &Context) -> Result<Vec<&'static str>> {
    let format = "${Package} ${Status}\n";
    // dpkg-query exits non-zero when a package is unknown; what it prints still counts.
    let cmd = cmd!(ctx.sh, "dpkg-query -W -f={format} {APT_PACKAGES...}");
    eprintln!("$ {cmd}");
    let output = cmd.quiet().ignore_status().ignore_stderr().output()?;
    let listed = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter(|line| line.ends_with(" install ok installed"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !installed.contains(pkg))
        .collect())
}

fn install_packages(ctx: &Context, packages: &[&str]) -> Result<()> {
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    context::run_with_env(apt_get(ctx).arg("update"), &env).context("apt-get update failed")?;
    context::run_with_env(apt_get(ctx).args(["install", "-y"]).args(packages), &env)
        .context("apt-get install failed")?;
    Ok(())
}

/// `apt-get`, through sudo when we are not root.
fn apt_get(ctx: &Context) -> xshell::Cmd<'_> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        cmd!(ctx.sh, "apt-get")
    } else {
        cmd!(ctx.sh, "sudo --preserve-env=DEBIAN_FRONTEND apt-get")
    }
}

/// `bindgen 0.73.2` -> `0.73.2`; None when bindgen is missing or does not run.
fn bindgen_version(ctx: &Context) -> Option<String> {
    let bindgen = ctx.bindgen().ok()?;
    if !bindgen.exists() {
        return None;
    }
    let out = context::read(ctx.sh.cmd(&bindgen).arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_string)
}
