//! `cargo xtask test`: the host tests, then the guest suite split over fresh guests booted
//! side by side, one per core (two on the build machine; debug kernel by default; each
//! guest's lines are shown as `[K/N] ...`), then the two boots of the cross-boot snapshot
//! test; one summary line for all: `N passed, M failed`.
//!
//! The guest suite speaks TAP (docs/guest-contract.md). Its lines are shown as they
//! arrive and counted here; xtask adds its own TAP lines for what only the host can
//! judge: a clean kernel log, and a suite that really finished.

use std::io::{BufRead as _, BufReader};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use xshell::cmd;

use crate::context::{self, Context, Flavor};
use crate::initramfs::{self, Initramfs};
use crate::vm;

const GUEST_SUITE: &str = "/usr/libexec/appshot/guest-tests";

#[derive(Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
}

pub fn run(ctx: &Context, flavor: Flavor, timeout: Duration) -> Result<ExitCode> {
    say!("==> host tests: cargo test --workspace");
    let host = host_tests(ctx).unwrap_or_else(|err| {
        say!("host tests: {err:#}");
        Counts {
            passed: 0,
            failed: 1,
        }
    });
    say!(
        "==> host tests: {} passed, {} failed",
        host.passed,
        host.failed
    );

    say!("==> guest suite on the {flavor} kernel, in {} guests side by side", shards());
    let guest = guest_tests(ctx, flavor, timeout);
    say!(
        "==> guest suite: {} passed, {} failed",
        guest.passed,
        guest.failed
    );

    let passed = host.passed + guest.passed;
    let failed = host.failed + guest.failed;
    say!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo test --workspace`, streamed; sums its `test result:` lines.
fn host_tests(ctx: &Context) -> Result<Counts> {
    let cargo = ctx.cargo();
    let mut child = context::to_command(cmd!(ctx.sh, "{cargo} test --workspace"), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo test")?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().context("no cargo stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        say!("{line}");
        if let Some((passed, failed)) = parse_test_result(&line) {
            counts.passed += passed;
            counts.failed += failed;
        }
    }
    let status = child.wait()?;
    if !status.success() && counts.failed == 0 {
        say!("host tests: cargo test failed ({status}) without a failing test (build error?)");
        counts.failed += 1;
    }
    Ok(counts)
}

/// `test result: ok. 3 passed; 1 failed; ...` -> (3, 1)
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |what: &str| {
        rest.split(';')
            .filter_map(|part| {
                part.trim()
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .strip_suffix(what)
            })
            .find_map(|n| n.trim().parse::<u64>().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

/// Counts of the TAP lines seen so far, of one guest.
#[derive(Default)]
struct Tap {
    counts: Counts,
    last_number: u64,
    /// Put before every line shown (which guest of several it comes from).
    prefix: String,
}

impl Tap {
    fn line(&mut self, line: &str) {
        let (ok, rest) = if let Some(rest) = line.strip_prefix("not ok") {
            (false, rest)
        } else if let Some(rest) = line.strip_prefix("ok") {
            (true, rest)
        } else {
            return;
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return;
        }
        if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
            self.last_number = self.last_number.max(n);
        } else {
            self.last_number += 1;
        }
        if ok {
            self.counts.passed += 1;
        } else {
            self.counts.failed += 1;
        }
    }

    /// Prints and counts a TAP line of our own.
    fn report(&mut self, ok: bool, name: &str, diagnostics: &[String]) {
        let number = self.last_number + 1;
        let prefix = &self.prefix;
        say!("{prefix}{}ok {number} - {name}", if ok { "" } else { "not " });
        for line in diagnostics {
            say!("{prefix}# {line}");
        }
        self.line(&format!("{}ok {number}", if ok { "" } else { "not " }));
    }
}

/// How many guests the suite is split over (`guest-tests --shard K/N`), booted side by
/// side: TCG runs a guest on one host thread, so one per core (two on the 2-core build
/// machine, which halves the suite's time), at most four (the longest test then
/// dominates, and each guest takes 1 GiB).
fn shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

fn guest_tests(ctx: &Context, flavor: Flavor, timeout: Duration) -> Counts {
    let mut tap = Tap::default();
    let base = match initramfs::ensure(ctx, flavor) {
        Ok(base) => base,
        Err(err) => {
            tap.report(false, "guest suite ran", &[format!("{err:#}")]);
            return tap.counts;
        }
    };
    let shards: Vec<Counts> = std::thread::scope(|scope| {
        let base = &base;
        let count = shards();
        let running: Vec<_> = (1..=count).map(|index| scope.spawn(move || shard(base, index, count, timeout))).collect();
        running.into_iter().map(|shard| shard.join().unwrap_or(Counts { passed: 0, failed: 1 })).collect()
    });
    for counts in shards {
        tap.counts.passed += counts.passed;
        tap.counts.failed += counts.failed;
    }
    cross_boot(ctx, &base, timeout, &mut tap);
    tap.counts
}

/// Part `index` of `count` of the suite in a guest of its own; its lines are shown as
/// `[K/N] ...`.
fn shard(base: &Initramfs, index: usize, count: usize, timeout: Duration) -> Counts {
    let mut tap = Tap { prefix: format!("[{index}/{count}] "), ..Tap::default() };
    // A context of its own: a shell's working directory is per context.
    match Context::new() {
        Ok(ctx) => {
            let job = format!("exec {GUEST_SUITE} --shard {index}/{count}\n");
            let what = format!("guest suite {index}/{count}");
            let log = format!("console-{index}-of-{count}.log");
            boot_and_count(&ctx, base, &job, &[], timeout, &what, &log, &mut tap);
        }
        Err(err) => tap.report(false, "guest suite ran", &[format!("{err:#}")]),
    }
    tap.counts
}

/// Issue #11's cross-boot test: an image written in one boot is restored in a second
/// one, through a host folder shared with both (`vm --share`). Each half is a mode of the
/// guest suite's binary (`--cross-boot save|restore DIR`, qemu-tests/src/tests/snapshot.rs).
fn cross_boot(ctx: &Context, base: &Initramfs, timeout: Duration, tap: &mut Tap) {
    let dir = ctx.target_dir().join("vm").join(format!("share-{}", std::process::id()));
    let prepared = std::fs::remove_dir_all(&dir)
        .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
        .and_then(|()| std::fs::create_dir_all(&dir))
        .map_err(anyhow::Error::from)
        .and_then(|()| vm::share_args(&dir));
    let qemu_args = match prepared {
        Ok(args) => args,
        Err(err) => return tap.report(false, "cross-boot folder", &[format!("{err:#}")]),
    };
    for phase in ["save", "restore"] {
        say!("==> cross-boot test, boot {phase}");
        let job = format!("exec {GUEST_SUITE} --cross-boot {phase} {}\n", vm::SHARE_GUEST_PATH);
        boot_and_count(ctx, base, &job, &qemu_args, timeout, &format!("cross-boot {phase}"), vm::CONSOLE_LOG, tap);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Boots the guest with `job`, counting its TAP lines, then judges what only the host
/// can: a clean kernel log (left in `target/vm/<flavor>/<log>`), and a job that really
/// finished.
#[allow(clippy::too_many_arguments)]
fn boot_and_count(ctx: &Context, base: &Initramfs, job: &str, qemu_args: &[String], timeout: Duration, what: &str, log: &str, tap: &mut Tap) {
    let failed_before = tap.counts.failed;
    let prefix = tap.prefix.clone();
    let run = vm::run_job_on(ctx, base, job, Vec::new(), &[], qemu_args, timeout, log, &mut |line| {
        say!("{prefix}{line}");
        tap.line(line);
    });
    let run = match run {
        Ok(run) => run,
        Err(err) => {
            tap.report(false, &format!("{what} ran"), &[format!("{err:#}")]);
            return;
        }
    };
    let suite_failures = tap.counts.failed - failed_before;
    let mut splats = run.console.splats.clone();
    if !splats.is_empty() {
        splats.push(format!("full console log: {}", run.log.display()));
    }
    tap.report(splats.is_empty(), &format!("{what}: guest kernel log has no splat"), &splats);
    if run.console.insmod_failed {
        tap.report(
            false,
            "appshot.ko loaded at boot",
            &["/init printed APPSHOT-INSMOD-FAILED".into()],
        );
    }
    match run.console.exit_status {
        None => tap.report(
            false,
            &format!("{what} finished"),
            &[run.missing_status_reason()],
        ),
        Some(status) if status != 0 && suite_failures == 0 => tap.report(
            false,
            &format!("{what} exit status"),
            &[format!("exited with {status} without a failing test")],
        ),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_test_results() {
        let line = "test result: FAILED. 12 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_test_result(line), Some((12, 2)));
        assert_eq!(
            parse_test_result("test result: ok. 0 passed; 0 failed; 0 ignored"),
            Some((0, 0))
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn counts_tap_lines() {
        let mut tap = Tap::default();
        for line in [
            "1..3",
            "ok 1 - a",
            "not ok 2 - b # reason",
            "# note",
            "okay",
            "ok 3 - c # SKIP x",
            "    ok 1 - sub",
        ] {
            tap.line(line);
        }
        assert_eq!(
            (tap.counts.passed, tap.counts.failed, tap.last_number),
            (2, 1, 3)
        );
    }
}
