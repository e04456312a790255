//! Where things live (checkout, cache, outputs), the two kernel flavors, and the few
//! helpers every step uses to run commands the STYLE.md way: print each one first.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use xshell::{Cmd, Shell};

/// The two test kernels. `release` is fast to build and boot; `debug` adds KASAN,
/// lockdep, kmemleak and friends (kernel-config/debug.config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Release,
    Debug,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Release => "release",
            Flavor::Debug => "debug",
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Paths shared by every step, and the shell that runs their commands.
pub struct Context {
    pub sh: Shell,
    /// The checkout (workspace root).
    pub root: PathBuf,
    /// `$APPSHOT_CACHE` or `~/.cache/appshot`: kernel sources and kernel builds.
    pub cache: PathBuf,
}

impl Context {
    pub fn new() -> Result<Context> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask/ has no parent directory")?
            .to_path_buf();
        let cache = match std::env::var_os("APPSHOT_CACHE") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => home_dir()?.join(".cache/appshot"),
        };
        let cache = absolute(&cache)?;
        let sh = Shell::new()?;
        sh.change_dir(&root);
        Ok(Context { sh, root, cache })
    }

    /// `target/` of the workspace (honours CARGO_TARGET_DIR like cargo does).
    pub fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => self.root.join(dir),
            _ => self.root.join("target"),
        }
    }

    /// The cargo that runs us (so the host tests and guest programs use the same toolchain).
    pub fn cargo(&self) -> PathBuf {
        std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| "cargo".into())
    }

    /// `$CARGO_HOME/bin/bindgen`: where `cargo install bindgen-cli` puts it.
    pub fn bindgen(&self) -> Result<PathBuf> {
        let cargo_home = match std::env::var_os("CARGO_HOME") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => home_dir()?.join(".cargo"),
        };
        Ok(cargo_home.join("bin/bindgen"))
    }

    /// Refuses paths inside the checkout: kernel trees never go there.
    pub fn ensure_outside_checkout(&self, path: &Path) -> Result<()> {
        if path.starts_with(&self.root) {
            bail!(
                "{} is inside the checkout {}; point APPSHOT_CACHE elsewhere",
                path.display(),
                self.root.display()
            );
        }
        Ok(())
    }
}

pub fn home_dir() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home)),
        _ => bail!("HOME is not set (set APPSHOT_CACHE instead)"),
    }
}

pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

/// Number of make jobs: one more than the CPUs, as the kernel docs suggest.
pub fn make_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        + 1
}

/// Prints `$ K=V ... cmd` (xshell does not show environment changes) and runs it.
pub fn run_with_env(cmd: Cmd<'_>, env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {}{cmd}", env_prefix(env));
    cmd.envs(env.iter().copied()).quiet().run()?;
    Ok(())
}

/// Prints the command, runs it and returns its trimmed stdout.
pub fn read(cmd: Cmd<'_>) -> Result<String> {
    eprintln!("$ {cmd}");
    Ok(cmd.quiet().read()?)
}

/// Prints the command and turns it into a `std::process::Command`, for the runs that
/// need live pipes (QEMU, cargo test) which xshell does not offer.
pub fn to_command(cmd: Cmd<'_>, env: &[(&str, &str)]) -> Command {
    eprintln!("$ {}{cmd}", env_prefix(env));
    let mut command = Command::from(cmd);
    command.envs(env.iter().copied());
    command
}

fn env_prefix(env: &[(&str, &str)]) -> String {
    env.iter()
        .map(|(key, value)| {
            if value.contains(char::is_whitespace) {
                format!("{key}=\"{value}\" ")
            } else {
                format!("{key}={value} ")
            }
        })
        .collect()
}

/// Takes an exclusive lock on `path` (created if needed), waiting for another xtask
/// that holds it: engineers share a checkout and a cache, and two builds in one
/// directory would trample each other. Released when the returned file is dropped.
pub fn lock(path: &Path, what: &str) -> Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!(
                "xtask: waiting for another xtask to finish {what} ({})",
                path.display()
            );
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    Ok(file)
}

/// `--version` output of a tool, first line, for cache keys.
pub fn tool_version(ctx: &Context, tool: impl AsRef<OsStr>) -> Result<String> {
    let tool = tool.as_ref();
    let out = read(ctx.sh.cmd(tool).arg("--version"))
        .with_context(|| format!("cannot run {} --version", Path::new(tool).display()))?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// Writes `contents` to `path` only when it differs, so make sees no new mtime.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(contents) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}
