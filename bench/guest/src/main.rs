//! `appshot-bench`: the benchmark driver that `cargo xtask bench` runs inside the release
//! guest (`/usr/libexec/appshot/appshot-bench`, see docs/guest-contract.md).
//!
//! In one boot it measures system calls in several configurations of appshot.ko
//! (not loaded, loaded, an AID elsewhere, caller in an AID, ...) and, with
//! `--candidates`, under the candidate hook mechanisms of `hook_candidates.ko`. Every
//! round visits every configuration once, so slow drift of the emulated machine hits
//! all configurations alike. It only measures: medians, ratios and targets are the
//! host's business (xtask/src/bench.rs), which reads these stdout lines:
//!
//! ```text
//! BENCH kernel <uname -r>
//! BENCH tsc-mhz <the TSC rate the loops are timed with>
//! BENCH sample <section> <configuration> <call> <round> <ns per call>
//! BENCH done
//! ```
//!
//! Progress goes to stderr. Layout: `measure.rs` the worker process and its timed loops;
//! `setup.rs` module loading, AIDs (through appshotctl) and the sleeping processes;
//! `snapshot.rs` the snapshot and restore section.

mod measure;
mod setup;
mod snapshot;

use anyhow::{bail, Context as _, Result};

use crate::measure::Call;
use crate::setup::Setup;

const USAGE: &str = "\
usage: appshot-bench [--rounds N] [--iters N] [--fork-iters N] [--tsc-mhz F] [--only KEY,...] [--no-snapshot] [--candidates | --only-candidates]
       appshot-bench --hold sets-1000|segment-64mib

Measures system calls under appshot.ko configurations (and, with --candidates, under
the hook mechanisms of /lib/modules/hook_candidates.ko), interleaved over N rounds,
and prints `BENCH sample ...` lines for cargo xtask bench. Run as root in the guest.
  --rounds N       rounds (default 7)
  --iters N        calls per measurement of getpid-like calls (default 200000)
  --fork-iters N   fork+waitpid pairs per measurement (default 2000)
  --tsc-mhz F      the TSC rate (default: calibrated against CLOCK_MONOTONIC)
  --only KEY,...   only these appshot.ko configurations (unloaded, loaded, other-aid, aid,
                   aid-range, aid-1000, aid-10-sems, aid-10000-sems)
  --no-snapshot    leave out the snapshot/restore section
  --hold W         (internal) create workload W's objects, print ready, wait";

/// The appshot.ko configurations of section `appshot`, in the order of the report.
const CONFIGURATIONS: &[Setup] = &[
    Setup::Unloaded,
    Setup::Loaded,
    Setup::OtherAid,
    Setup::Aid,
    Setup::AidRange,
    Setup::AidThousand,
    Setup::AidTenSems,
    Setup::AidTenThousandSems,
];

/// The modes of section `candidates`: `none` is hook_candidates.ko not loaded.
const CANDIDATES: &[&str] = &[
    "none",
    "kprobe",
    "ftrace-empty",
    "ftrace-redirect",
    "direct-empty",
    "direct-replace",
];

struct Options {
    rounds: u32,
    iters: u64,
    fork_iters: u64,
    appshot: bool,
    snapshot: bool,
    candidates: bool,
    /// The TSC rate as the host measured it (QEMU's TCG TSC is the host's).
    tsc_mhz: Option<f64>,
    /// The configurations measured (all of [`CONFIGURATIONS`] unless `--only`).
    configurations: Vec<Setup>,
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        rounds: 7,
        iters: 200_000,
        fork_iters: 2_000,
        appshot: true,
        snapshot: true,
        candidates: false,
        tsc_mhz: None,
        configurations: CONFIGURATIONS.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> Result<u64> {
            let value = args
                .next()
                .with_context(|| format!("{what} needs a value"))?;
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{what} {value}: expected a positive integer"),
            }
        };
        match arg.as_str() {
            "--rounds" => opts.rounds = number("--rounds")? as u32,
            "--iters" => opts.iters = number("--iters")?,
            "--fork-iters" => opts.fork_iters = number("--fork-iters")?,
            "--candidates" => opts.candidates = true,
            "--no-snapshot" => opts.snapshot = false,
            "--hold" => {
                let key = args.next().context("--hold needs a workload")?;
                let workload = snapshot::Workload::parse(&key).with_context(|| format!("--hold: no workload {key:?}"))?;
                snapshot::hold(workload)?;
            }
            "--tsc-mhz" => {
                let value = args.next().context("--tsc-mhz needs a value")?;
                match value.parse::<f64>() {
                    Ok(mhz) if mhz > 0.0 => opts.tsc_mhz = Some(mhz),
                    _ => bail!("--tsc-mhz {value}: expected a positive number"),
                }
            }
            "--only" => {
                let value = args.next().context("--only needs a list of configurations")?;
                opts.configurations = value
                    .split(',')
                    .map(|key| {
                        CONFIGURATIONS
                            .iter()
                            .copied()
                            .find(|setup| setup.key() == key)
                            .with_context(|| format!("--only: no configuration {key:?}"))
                    })
                    .collect::<Result<_>>()?;
            }
            "--only-candidates" => {
                opts.candidates = true;
                opts.appshot = false;
                opts.snapshot = false;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(opts)
}

fn main() {
    if let Err(err) = run() {
        eprintln!("appshot-bench: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let opts = parse_args()?;
    println!("BENCH kernel {}", measure::kernel_release()?);
    // /init loaded appshot.ko; make sure it is there (and its device) before round 1.
    setup::ensure_loaded()?;
    let clock = match opts.tsc_mhz {
        Some(mhz) => measure::Clock {
            ticks_per_ns: mhz / 1000.0,
        },
        None => measure::Clock::calibrate(std::time::Duration::from_secs(2)),
    };
    println!("BENCH tsc-mhz {:.1}", clock.ticks_per_ns * 1000.0);
    if opts.appshot {
        let calls = measure::MEASURED;
        for round in 1..=opts.rounds {
            let configurations = &opts.configurations;
            for i in 0..configurations.len() {
                // Rotate the starting configuration so none always runs first.
                let setup = configurations[(i + round as usize - 1) % configurations.len()];
                eprintln!("# round {round}/{}: appshot {}", opts.rounds, setup.key());
                let prepared = setup::prepare(setup)?;
                let results = measure::in_worker(&calls, &opts.iters_for(), clock, &prepared)?;
                setup::teardown(prepared)?;
                for (call, ns) in results {
                    println!(
                        "BENCH sample appshot {} {} {round} {ns:.1}",
                        setup.key(),
                        call.key()
                    );
                }
            }
        }
    }
    if opts.snapshot {
        for round in 1..=opts.rounds {
            eprintln!("# round {round}/{}: snapshot and restore", opts.rounds);
            for (row, column, ns) in snapshot::round(clock)? {
                println!("BENCH sample snapshot {row} {column} {round} {ns:.1}");
            }
        }
    }
    if opts.candidates {
        // appshot.ko stays out: its own hooks must not share the functions measured.
        setup::ensure_unloaded()?;
        let calls = [Call::Getpid, Call::Uname];
        for round in 1..=opts.rounds {
            for i in 0..CANDIDATES.len() {
                let mode = CANDIDATES[(i + round as usize - 1) % CANDIDATES.len()];
                eprintln!("# round {round}/{}: candidate {mode}", opts.rounds);
                if mode != "none" {
                    setup::insmod_candidates(mode)?;
                }
                let results =
                    measure::in_worker(&calls, &opts.iters_for(), clock, &setup::Prepared::plain());
                if mode != "none" {
                    setup::rmmod_candidates()?;
                }
                for (call, ns) in results? {
                    println!(
                        "BENCH sample candidates {mode} {} {round} {ns:.1}",
                        call.key()
                    );
                }
            }
        }
    }
    setup::ensure_loaded()?;
    println!("BENCH done");
    Ok(())
}

impl Options {
    fn iters_for(&self) -> measure::Iterations {
        measure::Iterations {
            syscall: self.iters,
            fork: self.fork_iters,
        }
    }
}
