//! appshot.ko and the programs that go into the guest.
//!
//! Kbuild builds an out-of-tree module in the directory it is given (`M=`), so the
//! sources are mirrored into `target/kbuild/<flavor>/` and built there: the checkout
//! stays free of `.o` files and each flavor keeps its own objects. Only changed files
//! are copied (unchanged ones keep their mtime), so make rebuilds incrementally.
//! The guest programs are static glibc binaries (`+crt-static`), built with
//! `--target` so the flag stays off build scripts and proc macros. The suite's C programs
//! (guest_c.rs) are built here too, static and dynamic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _, Result};
use xshell::cmd;

use crate::context::{self, Context, Flavor};
use crate::guest_c::{self, CProgram};
use crate::kernel::{self, Kernel};

/// Records which files the mirror holds, to delete ones removed from the checkout.
const SOURCES_MANIFEST: &str = ".xtask-sources";
/// Records which kernel the objects were built against; another kernel means a clean build.
const KERNEL_STAMP: &str = ".xtask-kernel";
const USERSPACE_TARGET: &str = "x86_64-unknown-linux-gnu";
const GUEST_TESTS_BIN: &str = "appshot-guest-tests";

pub struct Built {
    pub kernel: Kernel,
    pub module_ko: PathBuf,
    pub appshotctl: PathBuf,
    pub guest_tests: PathBuf,
    /// The suite's C programs (`qemu-tests/c/`), static and dynamic.
    pub c_programs: Vec<CProgram>,
}

pub fn ensure(ctx: &Context, flavor: Flavor) -> Result<Built> {
    let kernel = kernel::ensure(ctx, flavor)?;
    let module_ko = build_module(ctx, &kernel)?;
    let (appshotctl, guest_tests) = build_guest_programs(ctx)?;
    let c_programs = guest_c::build(ctx)?;
    Ok(Built {
        kernel,
        module_ko,
        appshotctl,
        guest_tests,
        c_programs,
    })
}

fn build_module(ctx: &Context, kernel: &Kernel) -> Result<PathBuf> {
    let dir = ctx.target_dir().join("kbuild").join(kernel.flavor.name());
    let _lock = context::lock(&dir.with_extension("lock"), "the module build")?;
    let kernel_id = kernel_identity(kernel)?;
    let stamp = dir.join(KERNEL_STAMP);
    if dir.exists() && std::fs::read_to_string(&stamp).ok().as_deref() != Some(kernel_id.as_str()) {
        say!(
            "module ({}): kernel changed, starting from a clean {}",
            kernel.flavor,
            dir.display()
        );
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    sync_sources(&ctx.root, &dir)?;
    std::fs::write(&stamp, &kernel_id)?;

    kbuild_modules(ctx, kernel, &dir, "module/appshot.ko")
}

/// Runs kbuild's `modules` target for the out-of-tree tree in `dir` against `kernel`;
/// returns `dir/ko`, the module it must produce.
pub fn kbuild_modules(ctx: &Context, kernel: &Kernel, dir: &Path, ko: &str) -> Result<PathBuf> {
    let build_dir = &kernel.build_dir;
    let vars = Kernel::make_vars(ctx)?;
    let jobs = format!("-j{}", context::make_jobs());
    cmd!(
        ctx.sh,
        "make -C {build_dir} M={dir} {vars...} {jobs} modules"
    )
    .run()
    .with_context(|| format!("building {ko} failed"))?;
    let ko = dir.join(ko);
    if !ko.exists() {
        bail!("the build did not produce {}", ko.display());
    }
    Ok(ko)
}

/// Path and Module.symvers size and mtime of the kernel build.
fn kernel_identity(kernel: &Kernel) -> Result<String> {
    let symvers = kernel.build_dir.join("Module.symvers");
    let meta = std::fs::metadata(&symvers)
        .with_context(|| format!("cannot stat {}", symvers.display()))?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Ok(format!(
        "{}\n{}\n{mtime}\n",
        kernel.build_dir.display(),
        meta.len()
    ))
}

/// Mirrors `Kbuild` and `module/` into `dir`, copying only changed files and deleting
/// files that were mirrored before but are gone from the checkout.
fn sync_sources(root: &Path, dir: &Path) -> Result<()> {
    let mut files = vec![PathBuf::from("Kbuild")];
    collect_sources(&root.join("module"), Path::new("module"), &mut files)?;
    for rel in &files {
        let src = root.join(rel);
        let contents =
            std::fs::read(&src).with_context(|| format!("cannot read {}", src.display()))?;
        let dst = dir.join(rel);
        if context::write_if_changed(&dst, &contents)? {
            let mode = std::fs::metadata(&src)?.permissions();
            std::fs::set_permissions(&dst, mode)?;
        }
    }
    let manifest = dir.join(SOURCES_MANIFEST);
    let now: BTreeSet<String> = files.iter().map(|p| p.display().to_string()).collect();
    if let Ok(before) = std::fs::read_to_string(&manifest) {
        for gone in before.lines().filter(|rel| !now.contains(*rel)) {
            let _ = std::fs::remove_file(dir.join(gone));
        }
    }
    let listing: String = now.iter().map(|rel| format!("{rel}\n")).collect();
    std::fs::write(&manifest, listing)?;
    Ok(())
}

/// Source files under `dir` (relative paths under `rel`), skipping build outputs.
pub fn collect_sources(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if name != "target" && name != ".tmp_versions" {
                collect_sources(&entry.path(), &rel.join(&*name), out)?;
            }
        } else if (kind.is_file() || kind.is_symlink()) && !is_build_output(&name) {
            out.push(rel.join(&*name));
        }
    }
    Ok(())
}

/// Kbuild's outputs (the .gitignore list), in case someone built in the checkout.
fn is_build_output(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[".o", ".ko", ".mod", ".mod.c", ".cmd", ".d", ".rmeta", ".a"];
    SUFFIXES.iter().any(|s| name.ends_with(s))
        || matches!(name, "Module.symvers" | "modules.order")
        || name.starts_with(".tmp")
}

/// Builds appshotctl and the guest suite static; returns their paths as cargo reports them.
fn build_guest_programs(ctx: &Context) -> Result<(PathBuf, PathBuf)> {
    let cargo = ctx.cargo();
    let cmd = cmd!(
        ctx.sh,
        "{cargo} build --release --target {USERSPACE_TARGET} -p appshotctl -p qemu-tests --message-format=json-render-diagnostics"
    );
    let executables = cargo_static_build(cmd, "the guest programs (appshotctl, qemu-tests)")?;
    let pick = |package_dir: &str, preferred: &str| -> Result<PathBuf> {
        let manifest = ctx.root.join(package_dir).join("Cargo.toml");
        let candidates: Vec<&(PathBuf, String, PathBuf)> = executables
            .iter()
            .filter(|(m, _, _)| *m == manifest)
            .collect();
        if let Some((_, _, exe)) = candidates.iter().find(|(_, name, _)| name == preferred) {
            return Ok(exe.clone());
        }
        match candidates.as_slice() {
            [(_, _, exe)] => Ok(exe.clone()),
            [] => bail!("cargo built no binary from {}", manifest.display()),
            _ => bail!(
                "{} has several binaries and none is named {preferred}",
                manifest.display()
            ),
        }
    };
    let appshotctl = pick("userspace-ctl", "appshotctl")?;
    let guest_tests = pick("qemu-tests", GUEST_TESTS_BIN)?;
    Ok((appshotctl, guest_tests))
}

/// Builds binary `bin` of the workspace package in `package_dir` static, like the guest
/// programs (for programs only some runs add to the guest: the bench driver).
pub fn build_static_program(ctx: &Context, package_dir: &str, bin: &str) -> Result<PathBuf> {
    let cargo = ctx.cargo();
    let manifest = ctx.root.join(package_dir).join("Cargo.toml");
    let cmd = cmd!(
        ctx.sh,
        "{cargo} build --release --target {USERSPACE_TARGET} --manifest-path {manifest} --bin {bin} --message-format=json-render-diagnostics"
    );
    cargo_static_build(cmd, &format!("{bin} ({package_dir})"))?
        .into_iter()
        .find(|(m, name, _)| *m == manifest && name == bin)
        .map(|(_, _, exe)| exe)
        .with_context(|| format!("cargo built no binary {bin} from {}", manifest.display()))
}

/// Runs a `cargo build --message-format=json-render-diagnostics` command with static
/// linking; returns the binaries it reports (see [`executables`]).
fn cargo_static_build(cmd: xshell::Cmd<'_>, what: &str) -> Result<Vec<(PathBuf, String, PathBuf)>> {
    let env = [("RUSTFLAGS", "-C target-feature=+crt-static")];
    // stdout carries the JSON messages (to find the binaries); progress and rendered
    // diagnostics go to stderr, which stays on the terminal.
    let output = context::to_command(cmd, &env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building {what} failed");
    }
    Ok(executables(&String::from_utf8_lossy(&output.stdout)))
}

/// (manifest path, bin target name, executable) of every binary in cargo's JSON output.
fn executables(json_lines: &str) -> Vec<(PathBuf, String, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            let exe = msg["executable"].as_str()?;
            let manifest = msg["manifest_path"].as_str()?;
            let name = msg["target"]["name"].as_str()?;
            Some((
                PathBuf::from(manifest),
                name.to_string(),
                PathBuf::from(exe),
            ))
        })
        .collect()
}
