//! The C programs of the guest suite (`qemu-tests/c/`): unmodified programs the suite runs
//! inside and outside AIDs, built twice with clang, as a static and as a dynamic glibc
//! binary, because the two reach the kernel through different code (the static one
//! carries its own copy of libc; the dynamic one uses the host glibc copied into the
//! initramfs).
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

/// One C program, linked both ways.
pub struct CProgram {
    pub name: &'static str,
    pub static_exe: PathBuf,
    pub dynamic_exe: PathBuf,
}

/// The programs in `qemu-tests/c/`, each `NAME.c` on its own.
const PROGRAMS: &[&str] = &["pidprobe"];

/// Builds every program into `target/guest-c/`: `NAME-static` and `NAME-dynamic`.
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
            static_exe,
            dynamic_exe,
        });
    }
    Ok(built)
}
