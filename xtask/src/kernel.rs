//! The test kernel: Debian's linux-source-6.12 built out of tree from `tinyconfig` plus
//! the fragments in kernel-config/ (base + flavor), with Debian's rustc and LLVM 14.
//!
//! Builds live in the cache, never in the checkout: sources in
//! `<cache>/src/linux-source-6.12-<pkgversion>`, builds in
//! `<cache>/kernel/<flavor>-<key>`, where the key hashes everything that changes the
//! result (source version, fragment settings, compiler versions). A stamp file marks a
//! finished build, so a second call returns at once. The full `make` (not just
//! `modules_prepare`) is required: only it writes the Module.symvers that modpost needs
//! to resolve the `kernel::` symbols of an out-of-tree Rust module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use xshell::cmd;

use crate::context::{self, Context, Flavor};
use crate::deps;

const SOURCE_PACKAGE: &str = "linux-source-6.12";
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The top directory inside the tarball.
const TARBALL_TOP: &str = "linux-source-6.12";
const RUSTC: &str = "/usr/bin/rustc";
const LLVM_SUFFIX: &str = "-14";
const STAMP: &str = ".appshot-xtask-built";
/// "Use this prebuilt kernel build dir" (any flavor): skips unpacking and building.
const KERNEL_DIR_ENV: &str = "APPSHOT_KERNEL_DIR";

/// A finished kernel build: the `O=` directory with bzImage, vmlinux and Module.symvers.
pub struct Kernel {
    pub flavor: Flavor,
    pub build_dir: PathBuf,
    pub bzimage: PathBuf,
}

impl Kernel {
    fn at(flavor: Flavor, build_dir: PathBuf) -> Kernel {
        let bzimage = build_dir.join("arch/x86/boot/bzImage");
        Kernel {
            flavor,
            build_dir,
            bzimage,
        }
    }

    /// The variables every kernel and module `make` gets.
    pub fn make_vars(ctx: &Context) -> Result<Vec<String>> {
        let bindgen = ctx.bindgen()?;
        Ok(vec![
            format!("LLVM={LLVM_SUFFIX}"),
            format!("RUSTC={RUSTC}"),
            format!("BINDGEN={}", bindgen.display()),
            // GNU objcopy instead of llvm-objcopy: Kconfig offers CONFIG_X86_X32_ABI only
            // then (llvm-objcopy cannot convert the x32 vDSO to elf32-x86-64).
            "OBJCOPY=objcopy".to_string(),
        ])
    }
}

/// Returns the kernel of `flavor`, building it first when needed.
pub fn ensure(ctx: &Context, flavor: Flavor) -> Result<Kernel> {
    deps::ensure(ctx)?;
    if let Some(dir) = std::env::var_os(KERNEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return prebuilt(ctx, flavor, &context::absolute(Path::new(&dir))?);
    }
    let version = source_version(ctx)?;
    let fragments = fragments(ctx, flavor)?;
    let key = cache_key(ctx, &version, &fragments)?;
    let build_dir = ctx.cache.join("kernel").join(format!("{flavor}-{key}"));
    ctx.ensure_outside_checkout(&build_dir)?;
    let kernel = Kernel::at(flavor, build_dir);
    let _lock = context::lock(
        &kernel.build_dir.with_extension("lock"),
        &format!("the {flavor} kernel"),
    )?;
    if kernel.build_dir.join(STAMP).exists() && kernel.bzimage.exists() {
        say!("kernel ({flavor}): {} (cached)", kernel.bzimage.display());
        return Ok(kernel);
    }

    let source = unpack(ctx, &version)?;
    let started = Instant::now();
    build(ctx, &source, &kernel, &fragments)?;
    std::fs::write(kernel.build_dir.join(STAMP), format!("{version}\n{key}\n"))
        .context("cannot write the kernel build stamp")?;
    let secs = started.elapsed().as_secs();
    say!(
        "kernel ({flavor}): {} (built in {}m{:02}s)",
        kernel.bzimage.display(),
        secs / 60,
        secs % 60
    );
    Ok(kernel)
}

fn prebuilt(ctx: &Context, flavor: Flavor, dir: &Path) -> Result<Kernel> {
    let kernel = Kernel::at(flavor, dir.to_path_buf());
    for needed in [&kernel.bzimage, &dir.join("Module.symvers")] {
        if !needed.exists() {
            bail!(
                "{KERNEL_DIR_ENV}={}: {} is missing (a finished kernel build with `make` is needed)",
                dir.display(),
                needed.display()
            );
        }
    }
    // A prebuilt kernel is the user's choice; still say when it lacks what we need.
    if let Ok(config) = std::fs::read_to_string(dir.join(".config")) {
        let dropped = dropped_settings(&fragments(ctx, flavor)?, &config);
        if !dropped.is_empty() {
            eprintln!(
                "warning: {KERNEL_DIR_ENV} kernel lacks settings of the {flavor} fragments: {}",
                dropped.join(", ")
            );
        }
    }
    say!(
        "kernel ({flavor}): {} ({KERNEL_DIR_ENV})",
        kernel.bzimage.display()
    );
    Ok(kernel)
}

fn source_version(ctx: &Context) -> Result<String> {
    let format = "${Version}";
    let version = context::read(cmd!(ctx.sh, "dpkg-query -W -f={format} {SOURCE_PACKAGE}"))
        .with_context(|| format!("{SOURCE_PACKAGE} is not installed (cargo xtask deps)"))?;
    if version.is_empty() || version.contains(['/', ' ']) {
        bail!("unexpected {SOURCE_PACKAGE} version {version:?}");
    }
    Ok(version)
}

/// Unpacks the source tarball once per package version; the rename makes it atomic.
fn unpack(ctx: &Context, version: &str) -> Result<PathBuf> {
    let src_root = ctx.cache.join("src");
    let source = src_root.join(format!("{TARBALL_TOP}-{version}"));
    ctx.ensure_outside_checkout(&source)?;
    let _lock = context::lock(&src_root.join(".unpack.lock"), "unpacking the sources")?;
    if source.join("Makefile").exists() {
        return Ok(source);
    }
    let scratch = src_root.join(format!(".unpack-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    say!("kernel: unpacking {SOURCE_TARBALL} (once per package version)");
    cmd!(ctx.sh, "tar -xf {SOURCE_TARBALL} -C {scratch}").run()?;
    let top = scratch.join(TARBALL_TOP);
    if !top.join("Makefile").exists() {
        bail!("{SOURCE_TARBALL} has no {TARBALL_TOP}/Makefile");
    }
    std::fs::rename(&top, &source)
        .with_context(|| format!("cannot move the sources to {}", source.display()))?;
    std::fs::remove_dir_all(&scratch)?;
    Ok(source)
}

/// One kernel-config fragment: its path and its settings in file order.
pub struct Fragment {
    pub path: PathBuf,
    /// `CONFIG_X` -> `y`, `4`, `"str"`, or `n` for `# CONFIG_X is not set`; later lines win.
    pub settings: BTreeMap<String, String>,
}

fn fragments(ctx: &Context, flavor: Flavor) -> Result<Vec<Fragment>> {
    ["base", flavor.name()]
        .iter()
        .map(|name| {
            let path = ctx
                .root
                .join("kernel-config")
                .join(format!("{name}.config"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Fragment {
                settings: parse_config(&text),
                path,
            })
        })
        .collect()
}

/// Parses `.config` syntax: `CONFIG_X=v` and `# CONFIG_X is not set` (as `n`).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some((name, value)) = line.split_once('=') {
            if name.starts_with("CONFIG_") {
                settings.insert(name.to_string(), value.to_string());
            }
        } else if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.strip_suffix(" is not set"))
        {
            if name.starts_with("CONFIG_") {
                settings.insert(name.to_string(), "n".to_string());
            }
        }
    }
    settings
}

/// The key of a kernel build: first 16 hex digits of a sha256 over the source package
/// version, the fragments' settings (not their comments: rewording a comment must not
/// cost a rebuild) and the versions of the compilers that build it.
fn cache_key(ctx: &Context, version: &str, fragments: &[Fragment]) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{SOURCE_PACKAGE} {version}\n"));
    for fragment in fragments {
        let name = fragment
            .path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        hasher.update(format!("fragment {name}\n"));
        for (key, value) in &fragment.settings {
            hasher.update(format!("{key}={value}\n"));
        }
    }
    for tool in [
        PathBuf::from(RUSTC),
        ctx.bindgen()?,
        PathBuf::from(format!("clang{LLVM_SUFFIX}")),
        PathBuf::from("objcopy"),
    ] {
        hasher.update(context::tool_version(ctx, &tool)?);
        hasher.update("\n");
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn build(ctx: &Context, source: &Path, kernel: &Kernel, fragments: &[Fragment]) -> Result<()> {
    let out = &kernel.build_dir;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let vars = &Kernel::make_vars(ctx)?;
    let make = || cmd!(ctx.sh, "make -C {source} O={out} {vars...}");
    say!(
        "kernel ({}): configuring in {}",
        kernel.flavor,
        out.display()
    );
    make().arg("tinyconfig").run()?;
    let merge = source.join("scripts/kconfig/merge_config.sh");
    let config = out.join(".config");
    let fragment_paths: Vec<&Path> = fragments.iter().map(|f| f.path.as_path()).collect();
    {
        // merge_config.sh writes temporary files into the current directory.
        let _dir = ctx.sh.push_dir(out);
        cmd!(ctx.sh, "{merge} -m -O {out} {config} {fragment_paths...}").run()?;
    }
    make().arg("olddefconfig").run()?;

    let final_config = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let dropped = dropped_settings(fragments, &final_config);
    if !dropped.is_empty() {
        bail!(
            "kconfig dropped settings the fragments ask for (a dependency is missing?): {}",
            dropped.join(", ")
        );
    }

    let jobs = format!("-j{}", context::make_jobs());
    say!("kernel ({}): building (several minutes)", kernel.flavor);
    make().arg(jobs).run().context("kernel build failed")?;
    for needed in [&kernel.bzimage, &out.join("Module.symvers")] {
        if !needed.exists() {
            bail!("kernel build finished without {}", needed.display());
        }
    }
    Ok(())
}

/// Settings of the fragments that the final .config does not have, as
/// `CONFIG_X=y (got n)`. A `=y` that olddefconfig turned off is the classic case: a
/// dependency is missing from the fragment.
pub fn dropped_settings(fragments: &[Fragment], final_config: &str) -> Vec<String> {
    let actual = parse_config(final_config);
    let mut wanted = BTreeMap::new();
    for fragment in fragments {
        wanted.extend(fragment.settings.iter());
    }
    wanted
        .into_iter()
        .filter_map(|(name, value)| {
            let got = actual.get(name).map(String::as_str).unwrap_or("n");
            (got != value).then(|| format!("{name}={value} (got {got})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_and_unset_lines() {
        let settings =
            parse_config("# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=4\nCONFIG_A=m\n");
        assert_eq!(settings.get("CONFIG_A").map(String::as_str), Some("m"));
        assert_eq!(settings.get("CONFIG_B").map(String::as_str), Some("n"));
        assert_eq!(settings.get("CONFIG_C").map(String::as_str), Some("4"));
        assert_eq!(settings.len(), 3);
    }

    #[test]
    fn reports_dropped_settings() {
        let fragment = Fragment {
            path: "base.config".into(),
            settings: parse_config("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=60\n"),
        };
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_D=120\n";
        assert_eq!(
            dropped_settings(&[fragment], config),
            ["CONFIG_B=y (got n)", "CONFIG_D=60 (got 120)"]
        );
    }
}
