//! `appshot-guest-tests`: the appshot regression suite, run as root inside the QEMU guest
//! (`/usr/libexec/appshot/guest-tests`, see docs/guest-contract.md).
//!
//! It prints TAP: a plan, `ok N - topic/name` or `not ok N - topic/name # reason` per
//! test, `# ` diagnostics; every test runs even after failures, and the exit status is 0
//! only when all passed. Arguments are name substrings selecting a subset.
//!
//! Layout: `tests/` holds the tests by topic and their registry; `runner.rs` the harness
//! (one process per test, deadlines, cleanup between tests); `tap.rs` the output format;
//! `device.rs` raw ioctls; `proc.rs` processes; `cmd.rs` programs; `kmod.rs` the module;
//! `fixtures.rs` helpers shared by topics; `check.rs` assertions.

mod aid_fixture;
mod check;
mod cmd;
mod device;
mod fixtures;
mod kmod;
mod proc;
mod runner;
mod tap;
mod tests;
mod virt;

const USAGE: &str = "\
usage: appshot-guest-tests [--list] [--shard K/N] [NAME_SUBSTRING...]
       appshot-guest-tests --cross-boot save|restore DIR

Runs the appshot guest suite (as root, with appshot.ko loaded) and prints TAP.
With NAME_SUBSTRING arguments only the tests whose name contains one of them run,
e.g. `appshot-guest-tests registration/ zombie`. --list prints the test names.
--shard K/N runs the K-th of N parts of the selection, balanced by the tests' known
durations, for N guests at once (cargo xtask test runs two).
APPSHOT_TIMEOUT_SCALE=F multiplies every timeout.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    if args.first().map(String::as_str) == Some("--cross-boot") {
        // `--cross-boot save|restore DIR`: one half of the two-boot test (cargo xtask test).
        let (phase, dir) = (args.get(1).cloned().unwrap_or_default(), args.get(2).cloned().unwrap_or_default());
        let name = format!("snapshot/cross_boot_{phase}");
        println!("1..1");
        match tests::snapshot::cross_boot(&phase, std::path::Path::new(&dir)) {
            Ok(()) => println!("ok 1 - {name}"),
            Err(e) => {
                println!("not ok 1 - {name} # {}", format!("{e:#}").replace('\n', " "));
                std::process::exit(1);
            }
        }
        return;
    }
    let list = args.iter().any(|a| a == "--list");
    let mut shard = None;
    let mut filters = Vec::new();
    let mut rest = args.into_iter().filter(|a| a != "--list");
    while let Some(arg) = rest.next() {
        if arg == "--shard" {
            match rest.next().as_deref().and_then(parse_shard) {
                Some(k_of_n) => shard = Some(k_of_n),
                None => {
                    eprintln!("appshot-guest-tests: --shard takes K/N with 1 <= K <= N\n{USAGE}");
                    std::process::exit(2);
                }
            }
        } else {
            filters.push(arg);
        }
    }
    if let Some(bad) = filters.iter().find(|f| f.starts_with('-')) {
        eprintln!("appshot-guest-tests: unknown option {bad}\n{USAGE}");
        std::process::exit(2);
    }
    let mut selected: Vec<&tests::Test> = tests::all()
        .into_iter()
        .filter(|t| tap::selected(t.name, &filters))
        .collect();
    if let Some((index, count)) = shard {
        selected = tests::shard(&selected, index, count);
    }
    if list {
        for t in &selected {
            println!("{}", t.name);
        }
        return;
    }
    if selected.is_empty() {
        println!("1..0");
        diag!("no test name contains any of: {}", filters.join(" "));
        std::process::exit(1);
    }
    let passed = runner::run_all(&selected);
    std::process::exit(if passed { 0 } else { 1 });
}

/// `K/N` with `1 <= K <= N`.
fn parse_shard(text: &str) -> Option<(usize, usize)> {
    let (k, n) = text.split_once('/')?;
    let (k, n) = (k.parse().ok()?, n.parse().ok()?);
    (1..=n).contains(&k).then_some((k, n))
}
