//! The C programs of the guest suite (`qemu-tests/c/`): unmodified programs the suite runs
//! inside and outside AIDs (and `dbserver`, the demo's application), built twice with clang, as a static and as a dynamic glibc
//! binary, because the two reach the kernel through different code (the static one
//! carries its own copy of libc; the dynamic one uses the host glibc copied into the
//! initramfs). The compat programs are freestanding (no libc: there is no i386 or x32
//! libc to link) and built for the two other ABIs of a 64-bit kernel, i386 (`-m32`) and
//! x32 (`-mx32`).
//!
//! clang comes from the apt package `clang` (LLVM 14, also the kernel's compiler) and the
//! static libc from `libc6-dev`; both are in deps::APT_PACKAGES. A build takes well under
//! a second, so the programs are simply rebuilt every time.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use xshell::cmd;

use crate::context::Context;

/// The compiler: the same LLVM 14 the kernel is built with.
const CC: &str = "clang-14";
const CFLAGS: &[&str] = &["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"];

/// One C program and its builds: (variant, executable), installed in the guest as
/// `/usr/libexec/appshot/NAME-VARIANT`.
pub struct CProgram {
    pub name: &'static str,
    pub builds: Vec<(&'static str, PathBuf)>,
}

/// The programs in `qemu-tests/c/` linked against glibc, each `NAME.c` on its own.
const PROGRAMS: &[&str] = &["pidprobe", "ipcprobe", "dbserver"];

/// The freestanding programs in `qemu-tests/c/`, built for i386 and x32.
const COMPAT_PROGRAMS: &[&str] = &["compat_siginfo"];
const COMPAT_CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-stack-protector",
    "-fno-pic",
];
const COMPAT_ABIS: &[(&str, &str)] = &[("i386", "-m32"), ("x32", "-mx32")];

/// Builds every program into `target/guest-c/`.
pub fn build(ctx: &Context) -> Result<Vec<CProgram>> {
    let out_dir = ctx.target_dir().join("guest-c");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut built = Vec::new();
    for &name in PROGRAMS {
        let src = ctx.root.join("qemu-tests/c").join(format!("{name}.c"));
        let static_exe = out_dir.join(format!("{name}-static"));
        let dynamic_exe = out_dir.join(format!("{name}-dynamic"));
        cmd!(ctx.sh, "{CC} {CFLAGS...} -static -o {static_exe} {src}")
            .run()
            .with_context(|| format!("building {name} (static) failed; is libc6-dev installed?"))?;
        cmd!(ctx.sh, "{CC} {CFLAGS...} -o {dynamic_exe} {src}")
            .run()
            .with_context(|| format!("building {name} (dynamic) failed"))?;
        built.push(CProgram {
            name,
            builds: vec![("static", static_exe), ("dynamic", dynamic_exe)],
        });
    }
    for &name in COMPAT_PROGRAMS {
        let src = ctx.root.join("qemu-tests/c").join(format!("{name}.c"));
        let mut builds = Vec::new();
        for &(abi, flag) in COMPAT_ABIS {
            let exe = out_dir.join(format!("{name}-{abi}"));
            cmd!(ctx.sh, "{CC} {flag} {COMPAT_CFLAGS...} -o {exe} {src}")
                .run()
                .with_context(|| format!("building {name} ({abi}) failed"))?;
            builds.push((abi, exe));
        }
        built.push(CProgram { name, builds });
    }
    Ok(built)
}
