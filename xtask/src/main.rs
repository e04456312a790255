//! `cargo xtask`: every build, boot and test step of appshot as one Rust program.
//!
//! Each subcommand runs the earlier steps it needs (deps -> kernel -> module ->
//! initramfs -> vm), so `cargo xtask test` on a fresh machine does everything. Every
//! external command is printed before it runs (`$ make ...`). The guest side of the
//! contract is docs/guest-contract.md; keep the two in step.

/// `println!` that ignores a closed stdout (`cargo xtask test | head`) instead of
/// panicking; xtask's output is for people, losing the rest of it is fine.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod console;
mod context;
mod demo;
mod deps;
mod guest_c;
mod header;
mod initramfs;
mod kernel;
mod module_build;
mod test_cmd;
mod vm;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::context::{Context, Flavor};

/// Build, boot and test appshot.
///
/// Example: `cargo xtask vm -- appshotctl list` boots the release kernel with the
/// module loaded and runs `appshotctl list` inside it.
///
/// Environment: APPSHOT_CACHE (default ~/.cache/appshot) holds the kernel sources and
/// builds; APPSHOT_KERNEL_DIR=<kernel build dir> uses that prebuilt kernel instead of
/// building one (for either flavor).
#[derive(Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the missing build dependencies (apt packages, bindgen-cli).
    Deps,
    /// Build (or reuse) the test kernel: tinyconfig + kernel-config/ fragments.
    Kernel(FlavorArg),
    /// Build appshot.ko against the test kernel, and the static guest programs.
    Module(FlavorArg),
    /// Build the guest initramfs (target/vm/<flavor>/initramfs.cpio).
    Initramfs(FlavorArg),
    /// Boot the test kernel; run CMD in it, or open a shell on the serial console.
    ///
    /// Example: `cargo xtask vm --add ./probe:/usr/bin/probe -- probe --verbose`.
    /// Exits with CMD's status; non-zero when the kernel log shows a splat.
    Vm(VmArgs),
    /// Host tests (cargo test --workspace), then the guest suite on the debug kernel.
    Test(TestArgs),
    /// Boot the release kernel and walk through appshotctl's main commands.
    Demo,
    /// Regenerate module/uapi/appshot.h from the Rust ABI definition.
    Header,
}

#[derive(Args)]
struct FlavorArg {
    /// Use the debug kernel (KASAN, lockdep, kmemleak, ...) instead of release.
    #[arg(long)]
    debug: bool,
}

impl FlavorArg {
    fn flavor(&self) -> Flavor {
        if self.debug {
            Flavor::Debug
        } else {
            Flavor::Release
        }
    }
}

#[derive(Args)]
struct VmArgs {
    #[command(flatten)]
    flavor: FlavorArg,
    /// Kill QEMU and fail after this many seconds (default: 1500 with CMD, none without).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Copy a host file or directory into the guest (default GUEST_PATH: /mnt/<name>).
    #[arg(long, value_name = "HOST_PATH[:GUEST_PATH]")]
    add: Vec<String>,
    /// The command to run in the guest, after `--`.
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

#[derive(Args)]
struct TestArgs {
    /// Run the guest suite on the debug kernel (the default).
    #[arg(long, conflicts_with = "release")]
    debug: bool,
    /// Run the guest suite on the release kernel.
    #[arg(long)]
    release: bool,
}

const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(25 * 60);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context::new()?;
    match cli.command {
        Command::Deps => deps::ensure(&ctx)?,
        Command::Kernel(f) => {
            kernel::ensure(&ctx, f.flavor())?;
        }
        Command::Module(f) => {
            let built = module_build::ensure(&ctx, f.flavor())?;
            say!("module ({}): {}", f.flavor(), built.module_ko.display());
            say!("appshotctl: {}", built.appshotctl.display());
            say!("guest tests: {}", built.guest_tests.display());
            for program in &built.c_programs {
                say!(
                    "{}: {} {}",
                    program.name,
                    program.static_exe.display(),
                    program.dynamic_exe.display()
                );
            }
        }
        Command::Initramfs(f) => {
            let initramfs = initramfs::ensure(&ctx, f.flavor())?;
            say!("initramfs ({}): {}", f.flavor(), initramfs.cpio.display());
        }
        Command::Vm(args) => {
            let flavor = args.flavor.flavor();
            let timeout = args.timeout.map(Duration::from_secs);
            let adds = args
                .add
                .iter()
                .map(|spec| initramfs::AddSpec::parse(spec))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return if args.cmd.is_empty() {
                vm::interactive(&ctx, flavor, &adds, timeout)
            } else {
                vm::run_command(
                    &ctx,
                    flavor,
                    &args.cmd,
                    &adds,
                    timeout.unwrap_or(DEFAULT_JOB_TIMEOUT),
                )
            };
        }
        Command::Test(args) => {
            let flavor = if args.release {
                Flavor::Release
            } else {
                Flavor::Debug
            };
            return test_cmd::run(&ctx, flavor, DEFAULT_JOB_TIMEOUT);
        }
        Command::Demo => return demo::run(&ctx, DEFAULT_JOB_TIMEOUT),
        Command::Header => header::write(&ctx)?,
    }
    Ok(ExitCode::SUCCESS)
}
