//! `cargo xtask bench`: system-call costs under appshot.ko (and, with `--candidates`,
//! under the candidate hook mechanisms), measured in one boot of the release guest.
//!
//! The guest side is `appshot-bench` (bench/guest), added to the run's archive with
//! `hook_candidates.ko` (bench/hook-candidates); it prints one `BENCH sample` line per
//! (configuration, call, round). Everything that turns samples into a verdict lives
//! here: medians over rounds, ratios to the baseline row, the targets of issue #4, and
//! the markdown table printed to stdout and written into docs/BENCHMARKS.md. A missed
//! target is reported as `MISSED`, never an error: numbers are measured, not judged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use xshell::cmd;

use crate::context::{self, Context, Flavor};
use crate::initramfs::AddSpec;
use crate::kernel::Kernel;
use crate::{module_build, vm};

const BENCH_GUEST_PATH: &str = "/usr/libexec/appshot/appshot-bench";
const CANDIDATES_GUEST_PATH: &str = "/lib/modules/hook_candidates.ko";
const DOC: &str = "docs/BENCHMARKS.md";

/// Options of `cargo xtask bench` (see main.rs for the help text).
pub struct Options {
    pub rounds: u32,
    pub iters: u64,
    pub fork_iters: u64,
    pub candidates: bool,
    pub only_candidates: bool,
    pub write_doc: bool,
    /// `--only`: the configurations to measure (all when `None`).
    pub only: Option<String>,
    /// QEMU's `-icount`: guest time counts executed instructions, not host time.
    pub icount: bool,
    pub timeout: Duration,
}

/// One row of a report: a configuration's key (as the guest prints it) and its label.
struct Row {
    key: &'static str,
    label: &'static str,
}

/// One column: a call's key and its label.
struct Column {
    key: &'static str,
    label: &'static str,
}

/// "`row`/`column` is at most `limit` times `baseline`/`column`".
struct Target {
    row: &'static str,
    column: &'static str,
    baseline: &'static str,
    limit: f64,
}

/// A report section: which samples it reads, its rows (the first is the baseline
/// of the ratios), columns and targets.
struct Section {
    key: &'static str,
    title: &'static str,
    rows: &'static [Row],
    columns: &'static [Column],
    targets: &'static [Target],
    notes: &'static str,
}

const APPSHOT: Section = Section {
    key: "appshot",
    title: "System calls under appshot.ko",
    rows: &[
        Row {
            key: "unloaded",
            label: "module not loaded",
        },
        Row {
            key: "loaded",
            label: "loaded, no AID registered",
        },
        Row {
            key: "other-aid",
            label: "loaded, an AID exists, caller in no AID",
        },
        Row {
            key: "aid",
            label: "caller in an AID without PID range",
        },
        Row {
            key: "aid-range",
            label: "caller in an AID with PID range (1 process)",
        },
        Row {
            key: "aid-1000",
            label: "caller in an AID with PID range (1,000 processes)",
        },
        Row {
            key: "aid-10-sems",
            label: "caller in an AID with PID range owning 10 more semaphore sets",
        },
        Row {
            key: "aid-10000-sems",
            label: "caller in an AID with PID range owning 10,000 more semaphore sets",
        },
    ],
    columns: &[
        Column {
            key: "getpid",
            label: "getpid",
        },
        Column {
            key: "getppid",
            label: "getppid",
        },
        Column {
            key: "kill",
            label: "kill(self, 0)",
        },
        Column {
            key: "fork-wait",
            label: "fork+waitpid",
        },
        Column {
            key: "getpid-i386",
            label: "getpid (int $0x80)",
        },
        Column {
            key: "kill-i386",
            label: "kill (int $0x80)",
        },
        Column {
            key: "futex-wake",
            label: "futex wake (no waiter)",
        },
        Column {
            key: "semop",
            label: "semop",
        },
        Column {
            key: "msgsnd-rcv",
            label: "msgsnd+msgrcv (64 B)",
        },
        Column {
            key: "shmat-dt",
            label: "shmat+shmdt",
        },
        Column {
            key: "semctl-stat",
            label: "semctl IPC_STAT",
        },
    ],
    targets: &[
        Target {
            row: "loaded",
            column: "getpid",
            baseline: "unloaded",
            limit: 1.02,
        },
        Target {
            row: "loaded",
            column: "getppid",
            baseline: "unloaded",
            limit: 1.02,
        },
        Target {
            row: "loaded",
            column: "kill",
            baseline: "unloaded",
            limit: 1.02,
        },
        Target {
            row: "loaded",
            column: "fork-wait",
            baseline: "unloaded",
            limit: 1.02,
        },
        Target {
            row: "other-aid",
            column: "getpid",
            baseline: "unloaded",
            limit: 1.3,
        },
        Target {
            row: "other-aid",
            column: "fork-wait",
            baseline: "unloaded",
            limit: 1.05,
        },
        Target {
            row: "other-aid",
            column: "kill",
            baseline: "unloaded",
            limit: 1.05,
        },
        Target {
            row: "aid",
            column: "getpid",
            baseline: "unloaded",
            limit: 1.5,
        },
        Target {
            row: "aid",
            column: "fork-wait",
            baseline: "unloaded",
            limit: 1.2,
        },
        Target {
            row: "aid-range",
            column: "getpid",
            baseline: "unloaded",
            limit: 1.5,
        },
        Target {
            row: "aid-range",
            column: "fork-wait",
            baseline: "unloaded",
            limit: 1.2,
        },
        Target {
            row: "aid-1000",
            column: "getpid",
            baseline: "aid-range",
            limit: 1.2,
        },
        Target {
            row: "aid-1000",
            column: "getppid",
            baseline: "aid-range",
            limit: 1.2,
        },
        Target {
            row: "aid-1000",
            column: "kill",
            baseline: "aid-range",
            limit: 1.2,
        },
        Target {
            row: "aid-1000",
            column: "fork-wait",
            baseline: "aid-range",
            limit: 1.2,
        },
        // Issue #10: the SysV IPC calls, and the slow path's fixed cost.
        Target { row: "other-aid", column: "semop", baseline: "unloaded", limit: 1.05 },
        Target { row: "other-aid", column: "msgsnd-rcv", baseline: "unloaded", limit: 1.05 },
        Target { row: "other-aid", column: "shmat-dt", baseline: "unloaded", limit: 1.05 },
        Target { row: "other-aid", column: "semctl-stat", baseline: "unloaded", limit: 1.05 },
        Target { row: "aid-range", column: "semop", baseline: "unloaded", limit: 1.3 },
        Target { row: "aid-range", column: "msgsnd-rcv", baseline: "unloaded", limit: 1.3 },
        Target { row: "aid-range", column: "shmat-dt", baseline: "unloaded", limit: 1.3 },
        Target { row: "aid-range", column: "semctl-stat", baseline: "unloaded", limit: 1.3 },
        Target { row: "aid-10000-sems", column: "semop", baseline: "aid-10-sems", limit: 1.5 },
        Target { row: "aid-10000-sems", column: "semctl-stat", baseline: "aid-10-sems", limit: 1.5 },
        Target { row: "aid", column: "getppid", baseline: "unloaded", limit: 1.6 },
        Target { row: "aid", column: "kill", baseline: "unloaded", limit: 1.6 },
    ],
    notes: "Each measurement runs in a fresh worker process, linked (`appshotctl link`) \
before it starts when the configuration puts it in an AID; its fork+waitpid children \
are then in the AID too. kill is `kill(pid, 0)` on the worker's own PID, looked up \
once; every worker gets system PID 20000 (`ns_last_pid`), so that the kernel's lookup \
of that PID walks the same radix tree path in every configuration (from one worker \
PID to another it varied by 34 instructions). \
The 1,000-process AID is the worker, a holder process and the holder's 998 sleeping \
children (linked as children of a linked process); its targets compare it with the \
1-process AID with PID range. The PID range is 5000-9999. The SysV calls run on a \
semaphore set (one semaphore), a queue and a 4096-byte segment the worker makes once \
linked (so they are its AID's); semop alternates +1 and -1, msgsnd+msgrcv and \
shmat+shmdt are one measured call per pair. The semaphore-set configurations have a \
process of the AID make 10 or 10,000 more sets before the worker starts.",
};

const CANDIDATES: Section = Section {
    key: "candidates",
    title: "Candidate system-call hook mechanisms",
    rows: &[
        Row {
            key: "none",
            label: "no hook",
        },
        Row {
            key: "kprobe",
            label: "(a) empty kprobe on __x64_sys_X",
        },
        Row {
            key: "ftrace-empty",
            label: "empty ftrace callback (SAVE_REGS)",
        },
        Row {
            key: "ftrace-redirect",
            label: "(b) ftrace SAVE_REGS+IPMODIFY+RECURSION, redirect calling the original",
        },
        Row {
            key: "direct-empty",
            label: "(c) direct-call trampoline, empty, returns into the function",
        },
        Row {
            key: "direct-replace",
            label: "(d) direct-call trampoline replacing the syscall",
        },
    ],
    columns: &[
        Column {
            key: "getpid",
            label: "getpid",
        },
        Column {
            key: "uname",
            label: "uname(buf)",
        },
    ],
    targets: &[],
    notes: "`bench/hook-candidates/hook_candidates.ko mode=X` hooks `__x64_sys_getpid` and \
`__x64_sys_newuname` with one mechanism; it is loaded before and unloaded after each \
measurement, appshot.ko stays unloaded for this section. (d) computes \
`task_tgid_vnr(current)` for getpid and copies `utsname()` to the user buffer for \
uname (without `uts_sem`, which is not exported, and without the personality overrides).",
};

const SNAPSHOT: Section = Section {
    key: "snapshot",
    title: "Snapshot and restore (issue #11)",
    rows: &[
        Row {
            key: "native",
            label: "create and fill natively (no AID)",
        },
        Row {
            key: "snapshot",
            label: "appshotctl snapshot (application left running)",
        },
        Row {
            key: "restore",
            label: "appshotctl restore",
        },
    ],
    columns: &[
        Column {
            key: "sets-1000",
            label: "1,000 semaphore sets (per set)",
        },
        Column {
            key: "segment-64mib",
            label: "64 MiB segment (per MiB)",
        },
    ],
    targets: &[
        Target {
            row: "restore",
            column: "sets-1000",
            baseline: "native",
            limit: 2.0,
        },
        Target {
            row: "restore",
            column: "segment-64mib",
            baseline: "native",
            limit: 2.0,
        },
    ],
    notes: "Values are per semaphore set (4 semaphores, filled with SETALL) and per MiB of \
segment (written whole). `native` is a process in no AID creating and filling the objects; \
`snapshot` and `restore` are whole `appshotctl` runs (exec, device, the image on tmpfs), \
the snapshot taken of an application holding the same objects, the restore of that image \
under a new name; another AID stays registered throughout. Sets per second are 10^9 / \
(ns per set); MiB/s are 10^9 / (ns per MiB).",
};

/// Samples in ns per call: (section, row, column) -> one value per round.
#[derive(Default, Debug)]
pub struct Samples {
    kernel: Option<String>,
    tsc_mhz: Option<String>,
    values: BTreeMap<(String, String, String), Vec<f64>>,
    done: bool,
}

impl Samples {
    /// Takes one line of the guest's output; true if it was a `BENCH` line.
    pub fn line(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("BENCH ") else {
            return false;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["kernel", release] => self.kernel = Some(release.to_string()),
            ["tsc-mhz", mhz] => self.tsc_mhz = Some(mhz.to_string()),
            ["sample", section, row, column, _round, ns] => {
                if let Ok(ns) = ns.parse::<f64>() {
                    self.values
                        .entry((section.to_string(), row.to_string(), column.to_string()))
                        .or_default()
                        .push(ns);
                }
            }
            ["done"] => self.done = true,
            _ => return false,
        }
        true
    }

    fn get(&self, section: &str, row: &str, column: &str) -> &[f64] {
        self.values
            .get(&(section.into(), row.into(), column.into()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn has_section(&self, section: &str) -> bool {
        self.values.keys().any(|(s, _, _)| s == section)
    }
}

/// The median; the mean of the two middle values for an even count; None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// `value / baseline`, None without a positive baseline.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| value / baseline)
}

/// What the report says about the run besides the numbers.
pub struct RunInfo {
    pub date: String,
    pub kernel: String,
    pub qemu: String,
    pub rounds: u32,
    pub iterations: String,
    /// Whether QEMU ran with -icount (guest time = instructions).
    pub icount: bool,
    pub clock: String,
    pub host_load: String,
    pub duration: Duration,
}

fn format_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// The markdown of one section: run facts, median table with ratios, targets, and the
/// per-round values.
fn render_section(section: &Section, samples: &Samples, info: &RunInfo) -> String {
    let med = |row: &str, column: &str| median(samples.get(section.key, row, column));
    let baseline = section.rows[0].key;
    let mut out = String::new();
    let (title_mode, flag, time_note) = if info.icount {
        (
            "TCG with -icount: instructions",
            "",
            "guest time is instructions executed, 1 instruction = 1 ns: deterministic, \
             independent of host load, a count of work and not a time",
        )
    } else {
        (
            "TCG wall clock",
            " --wall-clock",
            "emulated time that follows the host's clock: it varies with host load, so \
             compare ratios within one run, not nanoseconds across runs",
        )
    };
    let _ = writeln!(out, "## {} ({title_mode})\n", section.title);
    let _ = writeln!(
        out,
        "Measured {} with `cargo xtask bench{}{flag}`: guest kernel `{}`, {} (TCG, 2 vCPUs; \
         {time_note}); \
         {} rounds, each visiting every configuration once (interleaved, rotating start); \
         {}; timed with {}; host load average {}; the run took {}s.\n",
        info.date,
        if section.key == CANDIDATES.key {
            " --candidates"
        } else {
            ""
        },
        info.kernel,
        info.qemu,
        info.rounds,
        info.iterations,
        info.clock,
        info.host_load,
        info.duration.as_secs(),
    );
    let _ = writeln!(
        out,
        "Median ns per call over the rounds, and the ratio to \"{}\".\n",
        section.rows[0].label
    );
    let header: Vec<&str> = std::iter::once("configuration")
        .chain(section.columns.iter().map(|c| c.label))
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|---{}|", "|---:".repeat(section.columns.len()));
    for row in section.rows {
        let cells: Vec<String> = section
            .columns
            .iter()
            .map(|column| match med(row.key, column.key) {
                None => "-".to_string(),
                Some(ns) if row.key == baseline => format_ns(ns),
                Some(ns) => match med(baseline, column.key).and_then(|b| ratio(ns, b)) {
                    Some(r) => format!("{} ({r:.2}x)", format_ns(ns)),
                    None => format_ns(ns),
                },
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", row.label, cells.join(" | "));
    }
    if !section.targets.is_empty() {
        let _ = writeln!(out, "\nTargets (issues #4 and #10):\n");
        let _ = writeln!(out, "| target | measured | |");
        let _ = writeln!(out, "|---|---:|---|");
        for target in section.targets {
            let (row, base) = (
                label_of(section, target.row),
                label_of(section, target.baseline),
            );
            let column = section
                .columns
                .iter()
                .find(|c| c.key == target.column)
                .map_or(target.column, |c| c.label);
            let measured = med(target.row, target.column)
                .zip(med(target.baseline, target.column))
                .and_then(|(v, b)| ratio(v, b));
            let (shown, verdict) = match measured {
                Some(r) if r <= target.limit => (format!("{r:.2}x"), "met"),
                Some(r) => (format!("{r:.2}x"), "MISSED"),
                None => ("-".to_string(), "not measured"),
            };
            let _ = writeln!(
                out,
                "| {column}: \"{row}\" <= {:.2}x \"{base}\" | {shown} | {verdict} |",
                target.limit
            );
        }
    }
    let _ = writeln!(out, "\n{}\n", section.notes);
    let _ = writeln!(
        out,
        "<details><summary>ns per call, every round</summary>\n"
    );
    let _ = writeln!(out, "| configuration | call | rounds |");
    let _ = writeln!(out, "|---|---|---|");
    for row in section.rows {
        for column in section.columns {
            let values = samples.get(section.key, row.key, column.key);
            let shown: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                row.key,
                column.key,
                shown.join(" ")
            );
        }
    }
    let _ = writeln!(out, "\n</details>");
    out
}

/// The document keeps an icount and a wall-clock table of each section side by side.
fn doc_key(section: &Section, icount: bool) -> String {
    if icount {
        section.key.to_string()
    } else {
        format!("{}-wall-clock", section.key)
    }
}

fn label_of(section: &Section, key: &str) -> &'static str {
    section
        .rows
        .iter()
        .find(|r| r.key == key)
        .map_or("?", |r| r.label)
}

const DOC_HEADER: &str = "# Benchmarks\n\n\
Written by `cargo xtask bench` (README.md, \"Benchmarks\"); each section is replaced by \
the run that measured it. The guest runs in QEMU's TCG emulator. By default QEMU runs \
with `-icount`, where guest time counts executed instructions: the numbers are \
deterministic and do not depend on how busy the (shared) host is, but they count work, \
not time (no caches, no pipeline). `--wall-clock` sections are TCG following the host's \
clock: a system call costs several times what it costs on hardware, and values swing \
with host load; only ratios within one run mean something.\n";

fn begin_marker(key: &str) -> String {
    format!("<!-- BEGIN bench:{key} -->")
}

fn end_marker(key: &str) -> String {
    format!("<!-- END bench:{key} -->")
}

/// `doc` with section `key` replaced by `body` (between its markers), or appended.
pub fn replace_section(doc: &str, key: &str, body: &str) -> String {
    let (begin, end) = (begin_marker(key), end_marker(key));
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    let doc = if doc.trim().is_empty() {
        DOC_HEADER
    } else {
        doc
    };
    if let (Some(start), Some(stop)) = (doc.find(&begin), doc.find(&end)) {
        if start < stop {
            return format!("{}{block}{}", &doc[..start], &doc[stop + end.len()..]);
        }
    }
    format!("{}\n\n{block}\n", doc.trim_end())
}

/// Mirrors bench/hook-candidates into target/kbuild/hook-candidates-<flavor> and builds
/// it against `kernel` with the same make variables as appshot.ko.
fn build_hook_candidates(ctx: &Context, kernel: &Kernel) -> Result<PathBuf> {
    let src = ctx.root.join("bench/hook-candidates");
    let dir = ctx
        .target_dir()
        .join("kbuild")
        .join(format!("hook-candidates-{}", kernel.flavor));
    let _lock = context::lock(&dir.with_extension("lock"), "the hook-candidates build")?;
    let mut files = Vec::new();
    module_build::collect_sources(&src, Path::new(""), &mut files)?;
    for rel in &files {
        let contents = std::fs::read(src.join(rel))?;
        context::write_if_changed(&dir.join(rel), &contents)?;
    }
    module_build::kbuild_modules(ctx, kernel, &dir, "hook_candidates.ko")
}

pub fn run(ctx: &Context, opts: &Options) -> Result<ExitCode> {
    let flavor = Flavor::Release;
    let built = module_build::ensure(ctx, flavor)?;
    let bench = module_build::build_static_program(ctx, "bench/guest", "appshot-bench")?;
    let mut adds = vec![AddSpec {
        host: bench,
        guest: BENCH_GUEST_PATH.into(),
    }];
    let candidates = opts.candidates || opts.only_candidates;
    if candidates {
        adds.push(AddSpec {
            host: build_hook_candidates(ctx, &built.kernel)?,
            guest: CANDIDATES_GUEST_PATH.into(),
        });
    }
    let mut args = vec![
        BENCH_GUEST_PATH.to_string(),
        "--rounds".into(),
        opts.rounds.to_string(),
        "--iters".into(),
        opts.iters.to_string(),
        "--fork-iters".into(),
        opts.fork_iters.to_string(),
    ];
    if !opts.icount {
        args.push("--tsc-mhz".into());
        args.push(format!("{:.1}", host_tsc_mhz()));
    }
    if let Some(only) = &opts.only {
        args.push("--only".into());
        args.push(only.clone());
    }
    if opts.only.is_some() {
        // A quick look at some configurations: the snapshot section is left out.
        args.push("--no-snapshot".into());
    }
    if opts.only_candidates {
        args.push("--only-candidates".into());
    } else if opts.candidates {
        args.push("--candidates".into());
    }
    let job = format!("exec {}\n", vm::shell_join(&args));
    let qemu = context::tool_version(ctx, "qemu-system-x86_64")?;
    let load_before = load_average();

    let started = Instant::now();
    let mut samples = Samples::default();
    let qemu_args = vm::clock_args(opts.icount);
    let run = vm::run_job_with_qemu_args(
        ctx,
        flavor,
        &job,
        Vec::new(),
        &adds,
        &qemu_args,
        opts.timeout,
        &mut |line| {
            // The sample lines are for us; the rest (progress, errors) for the reader.
            if !samples.line(line) {
                say!("{line}");
            }
        },
    )?;
    let duration = started.elapsed();
    let splat = run.report_splats();
    let Some(status) = run.console.exit_status else {
        bail!(run.missing_status_reason());
    };
    if status != 0 || !samples.done {
        bail!(
            "the guest bench failed (exit status {status}); console: {}",
            run.log.display()
        );
    }

    let date = context::read(cmd!(ctx.sh, "date +%Y-%m-%d"))?;
    let info = RunInfo {
        date,
        kernel: samples.kernel.clone().unwrap_or_else(|| "?".into()),
        qemu,
        rounds: opts.rounds,
        iterations: format!(
            "{} calls per measurement ({} for fork+waitpid) after a warm-up of a tenth, \
             timed in 10 batches, the measurement being the median batch",
            opts.iters, opts.fork_iters
        ),
        icount: opts.icount,
        clock: if opts.icount {
            format!(
                "the TSC ({} MHz under -icount), calibrated against CLOCK_MONOTONIC (which \
                 advances in 4 ms jiffies in this guest: no usable TSC clocksource under TCG \
                 without ACPI)",
                samples.tsc_mhz.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "the TSC at the host's rate ({} MHz, measured on the host: TCG's TSC is the \
                 host's; the guest's own clock is 4 ms jiffies that lag under host load)",
                samples.tsc_mhz.as_deref().unwrap_or("?")
            )
        },
        host_load: format!("{} before, {} after", load_before, load_average()),
        duration,
    };
    let mut doc = std::fs::read_to_string(ctx.root.join(DOC)).unwrap_or_default();
    for section in [&APPSHOT, &SNAPSHOT, &CANDIDATES] {
        if !samples.has_section(section.key) {
            continue;
        }
        let text = render_section(section, &samples, &info);
        say!("\n{text}");
        doc = replace_section(&doc, &doc_key(section, opts.icount), &text);
    }
    if opts.write_doc && !splat {
        std::fs::write(ctx.root.join(DOC), &doc).with_context(|| format!("cannot write {DOC}"))?;
        say!("bench: wrote {DOC} (run took {}s)", duration.as_secs());
    } else if splat {
        say!("bench: the guest kernel log has a splat; {DOC} left as it was");
    }
    Ok(if splat {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The host's TSC rate in MHz, measured over 300 ms. Plain TCG hands the guest the
/// host's TSC, and the guest cannot calibrate it reliably (its jiffies clock loses
/// ticks when the host is busy).
fn host_tsc_mhz() -> f64 {
    // SAFETY: rdtsc has no preconditions on x86-64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(Duration::from_millis(300));
    let (c1, elapsed) = (tsc(), t0.elapsed());
    (c1 - c0) as f64 / elapsed.as_nanos() as f64 * 1000.0
}

/// The host's 1-minute load average: the cores are shared, and TCG feels it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn ratio_needs_a_positive_baseline() {
        assert_eq!(ratio(300.0, 200.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn parses_bench_lines_only() {
        let mut s = Samples::default();
        assert!(s.line("BENCH kernel 6.12.117"));
        assert!(s.line("BENCH sample appshot loaded getpid 1 250.5"));
        assert!(s.line("BENCH sample appshot loaded getpid 2 260.5"));
        assert!(!s.line("# round 1/7: appshot loaded"));
        assert!(!s.line("BENCHMARK"));
        assert!(!s.done);
        assert!(s.line("BENCH done"));
        assert!(s.done);
        assert_eq!(s.kernel.as_deref(), Some("6.12.117"));
        assert_eq!(s.get("appshot", "loaded", "getpid"), [250.5, 260.5]);
        assert!(s.has_section("appshot"));
        assert!(!s.has_section("candidates"));
    }

    fn info() -> RunInfo {
        RunInfo {
            date: "2026-11-25".into(),
            kernel: "6.12.117".into(),
            qemu: "QEMU emulator version 7.2".into(),
            rounds: 3,
            iterations: "1000 calls".into(),
            icount: true,
            clock: "the TSC".into(),
            host_load: "1.0 before, 1.1 after".into(),
            duration: Duration::from_secs(60),
        }
    }

    #[test]
    fn renders_medians_ratios_and_verdicts() {
        let mut s = Samples::default();
        let mut add = |row: &str, column: &str, values: &[f64]| {
            for (i, v) in values.iter().enumerate() {
                s.line(&format!(
                    "BENCH sample appshot {row} {column} {} {v}",
                    i + 1
                ));
            }
        };
        add("unloaded", "getpid", &[200.0, 210.0, 190.0]);
        add("loaded", "getpid", &[202.0, 300.0, 201.0]); // median 202 -> 1.01x: met
        add("unloaded", "kill", &[100.0, 100.0, 100.0]);
        add("loaded", "kill", &[110.0, 110.0, 110.0]); // 1.10x: MISSED
        add("aid-range", "getpid", &[400.0, 400.0, 400.0]);
        add("aid-1000", "getpid", &[440.0, 440.0, 440.0]); // 1.10x of aid-range: met
        let text = render_section(&APPSHOT, &s, &info());
        assert!(
            text.contains("| module not loaded | 200 ns | - | 100 ns | - |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| loaded, no AID registered | 202 ns (1.01x) | - | 110 ns (1.10x) | - |"
            ),
            "{text}"
        );
        assert!(text.contains(
            "| getpid: \"loaded, no AID registered\" <= 1.02x \"module not loaded\" | 1.01x | met |"
        ));
        assert!(text.contains(
            "| kill(self, 0): \"loaded, no AID registered\" <= 1.02x \"module not loaded\" | 1.10x | MISSED |"
        ));
        assert!(text
            .contains("<= 1.20x \"caller in an AID with PID range (1 process)\" | 1.10x | met |"));
        assert!(text.contains("| fork+waitpid: \"loaded, no AID registered\" <= 1.02x \"module not loaded\" | - | not measured |"));
        assert!(text.contains("| loaded | getpid | 202 300 201 |"));
        assert!(text.contains("3 rounds"));
        assert!(
            text.starts_with("## System calls under appshot.ko (TCG with -icount: instructions)")
        );
        assert!(text.contains("6.12.117"));
    }

    #[test]
    fn formats_large_values_in_microseconds() {
        assert_eq!(format_ns(245.4), "245 ns");
        assert_eq!(format_ns(123_456.0), "123.5 us");
    }

    #[test]
    fn replaces_or_appends_doc_sections() {
        let doc = replace_section("", "appshot", "## A\nold\n");
        assert!(doc.starts_with("# Benchmarks\n"));
        assert!(doc.contains("<!-- BEGIN bench:appshot -->\n## A\nold\n<!-- END bench:appshot -->"));
        let doc = replace_section(&doc, "candidates", "## C\n");
        let doc = replace_section(&doc, "appshot", "## A\nnew\n");
        assert!(!doc.contains("old"));
        assert!(doc.contains("## A\nnew"));
        let (a, c) = (doc.find("## A").unwrap(), doc.find("## C").unwrap());
        assert!(a < c, "sections keep their order:\n{doc}");
        assert_eq!(doc.matches("BEGIN bench:appshot").count(), 1);
    }
}
