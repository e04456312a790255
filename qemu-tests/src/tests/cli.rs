//! appshotctl end to end (`/usr/bin/appshotctl`, docs/appshotctl.md), checked against
//! the raw ioctls: its text and JSON output, `run` (links itself, execs CMD, CMD's exit
//! status), and its one-line errors with exit status 1.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::Test;
use crate::check::{expect_errno, step_timeout};
use crate::cmd::{self, Output};
use crate::device::{AidGuard, Device};
use crate::ensure_eq;
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper};
use crate::proc::{self, Status};

pub const TESTS: &[Test] = &[
    Test::new(
        "cli/register_list_show_unregister",
        register_list_show_unregister,
    ),
    Test::new(
        "cli/register_pid_range_and_json",
        register_pid_range_and_json,
    ),
    Test::new("cli/run_links_itself_and_execs", run_links_itself_and_execs),
    Test::new(
        "cli/run_create_twice_reuses_the_aid",
        run_create_twice_reuses_the_aid,
    ),
    Test::new(
        "cli/run_exit_status_is_the_commands",
        run_exit_status_is_the_commands,
    ),
    Test::new("cli/list_json_fields", list_json_fields),
    Test::new("cli/show_json_entries", show_json_entries),
    Test::new(
        "cli/unknown_name_fails_with_one_line",
        unknown_name_fails_with_one_line,
    ),
    Test::new("cli/unregister_busy_then_force", unregister_busy_then_force),
    Test::new("cli/link_and_unlink_pid", link_and_unlink_pid),
];

/// Parses a command's stdout as JSON (one line, per the documentation).
fn json(out: &Output) -> Result<Value> {
    let line = out.argv.join(" ");
    if out.stdout.trim_end().lines().count() != 1 {
        bail!("`{line}` JSON is not one line: {:?}", out.stdout);
    }
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("`{line}` output is not JSON: {:?}", out.stdout))
}

/// `value[key]` as an integer.
fn int(value: &Value, key: &str) -> Result<i64> {
    value
        .get(key)
        .and_then(Value::as_i64)
        .with_context(|| format!("no integer {key:?} in {value}"))
}

/// The record of `aid` in `list --json`.
fn listed(aid: u64) -> Result<Value> {
    let doc = json(&cmd::ctl(&["list", "--json"])?.ok()?)?;
    let aids = doc
        .get("aids")
        .and_then(Value::as_array)
        .with_context(|| format!("no \"aids\" array in {doc}"))?;
    aids.iter()
        .find(|a| a.get("aid").and_then(Value::as_u64) == Some(aid))
        .cloned()
        .with_context(|| format!("AID {aid} not in {doc}"))
}

/// The JSON form of a PID range: `null` or `{"min":A,"max":B}`.
fn range_json(range: Option<(u32, u32)>) -> Value {
    match range {
        None => Value::Null,
        Some((min, max)) => serde_json::json!({ "min": min, "max": max }),
    }
}

/// Checks a `list`/`show` JSON record against what the module says.
fn check_record(
    record: &Value,
    dev: &Device,
    aid: u64,
    name: &str,
    range: Option<(u32, u32)>,
) -> Result<()> {
    let info = dev.info(aid)?;
    ensure_eq!(
        record.get("aid").and_then(Value::as_u64),
        Some(aid),
        "\"aid\""
    );
    ensure_eq!(
        record.get("name").and_then(Value::as_str),
        Some(name),
        "\"name\" of AID {aid}"
    );
    ensure_eq!(
        int(record, "processes")?,
        info.nr_processes as i64,
        "\"processes\" of AID {aid}"
    );
    ensure_eq!(
        int(record, "threads")?,
        info.nr_threads as i64,
        "\"threads\" of AID {aid}"
    );
    ensure_eq!(
        int(record, "owner_uid")?,
        info.owner_uid as i64,
        "\"owner_uid\" of AID {aid}"
    );
    ensure_eq!(
        record.get("pid_range"),
        Some(&range_json(range)),
        "\"pid_range\" of AID {aid}"
    );
    let tables = record
        .get("tables")
        .with_context(|| format!("no \"tables\" in {record}"))?;
    for (i, table) in appshot_uapi::TABLE_NAMES.iter().enumerate() {
        ensure_eq!(
            int(tables, table)?,
            info.table_sizes[i] as i64,
            "\"tables\".{table} of AID {aid}"
        );
    }
    Ok(())
}

/// Fails unless `out` failed with status 1 and one line `appshotctl: ...` on stderr
/// that contains every string of `mentions`.
fn expect_one_line_failure(out: &Output, mentions: &[&str]) -> Result<()> {
    let line = out.argv.join(" ");
    if out.status != Status::Exited(1) {
        bail!(
            "`{line}` {}, expected exit status 1; stderr {:?}",
            out.status,
            out.stderr
        );
    }
    let lines: Vec<&str> = out.stderr.lines().collect();
    if lines.len() != 1
        || !lines[0].starts_with("appshotctl: ")
        || !mentions.iter().all(|m| lines[0].contains(m))
    {
        bail!(
            "`{line}`: stderr should be one line `appshotctl: ...` with {mentions:?}, got {:?}",
            out.stderr
        );
    }
    Ok(())
}

/// The whitespace-separated words of the `list` row of `aid`.
fn list_row(aid: u64) -> Result<Vec<String>> {
    let out = cmd::ctl(&["list"])?.ok()?;
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let want = [
        "AID",
        "NAME",
        "PROCS",
        "THREADS",
        "PID-RANGE",
        "PID",
        "SEM",
        "SHM",
        "MSG",
        "KEY",
        "OWNER",
    ];
    ensure_eq!(header, want, "`appshotctl list` header");
    let row = out
        .stdout
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(&aid.to_string()));
    let row = row.with_context(|| {
        format!(
            "`appshotctl list` has no row for AID {aid}: {:?}",
            out.stdout
        )
    })?;
    Ok(row.split_whitespace().map(str::to_string).collect())
}

fn register_list_show_unregister() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli");
    let out = cmd::ctl(&["register", &name]);
    let guard = AidGuard::adopt_by_name(&dev, &name);
    let out = out?.ok()?;
    let g = guard.with_context(|| {
        format!("`appshotctl register {name}` exited 0 but INFO finds no such AID")
    })?;
    ensure_eq!(
        out.stdout,
        format!("registered {name} as AID {}\n", g.aid),
        "`register` output"
    );
    let agent = sleeper(&dev, Some(g.aid), 2)?;
    let pid = agent.pid();
    let tids = proc::threads_of(pid)?;

    let row = list_row(g.aid)?;
    let want: Vec<String> = [g.aid.to_string(), name.clone()]
        .into_iter()
        .chain(["1", "2", "-", "2", "0", "0", "0", "0", "0"].map(String::from))
        .collect();
    ensure_eq!(row, want, "`appshotctl list` row");

    let show = cmd::ctl(&["show", &name])?.ok()?;
    if !show.stdout.contains("pid table, 2 entries:") {
        bail!(
            "`appshotctl show {name}` lacks \"pid table, 2 entries:\": {:?}",
            show.stdout
        );
    }
    for tid in &tids {
        let leader = if *tid == pid { " (leader)" } else { "" };
        let want = format!("{tid} {tid} {pid}{leader}");
        if !show
            .stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want)
        {
            bail!(
                "`appshotctl show {name}` lacks the row {want:?}: {:?}",
                show.stdout
            );
        }
    }
    let sem = cmd::ctl(&["show", &name, "--type", "sem"])?.ok()?;
    if !sem.stdout.contains("sem table: empty") {
        bail!(
            "`show --type sem` of an AID without semaphores: {:?}",
            sem.stdout
        );
    }
    release(agent)?;
    let out = cmd::ctl(&["unregister", &name])?.ok()?;
    ensure_eq!(out.stdout, "", "`unregister` output (silent)");
    expect_errno(
        dev.info(g.aid),
        libc::ENOENT,
        "INFO after `appshotctl unregister`",
    )?;
    let list = cmd::ctl(&["list"])?.ok()?;
    if list.stdout.split_whitespace().any(|w| w == name) {
        bail!("`appshotctl list` still shows {name}: {:?}", list.stdout);
    }
    Ok(())
}

fn register_pid_range_and_json() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli-range");
    let out = cmd::ctl(&["register", &name, "--pid-range", "300-399"]);
    let g = AidGuard::adopt_by_name(&dev, &name);
    let out = out?.ok()?;
    let g = g.context("`register --pid-range` left no AID")?;
    ensure_eq!(
        out.stdout,
        format!(
            "registered {name} as AID {} (virtual PIDs 300-399)\n",
            g.aid
        ),
        "output"
    );
    let info = dev.info(g.aid)?;
    ensure_eq!(
        (info.flags, info.pid_min, info.pid_max),
        (appshot_uapi::AID_PID_RANGE, 300, 399),
        "INFO range"
    );
    ensure_eq!(list_row(g.aid)?[4], "300-399", "PID-RANGE column");

    let name2 = crate::device::unique_name("cli-rjson");
    let out = cmd::ctl(&["register", &name2, "--json"]);
    let g2 = AidGuard::adopt_by_name(&dev, &name2);
    let doc = json(&out?.ok()?)?;
    let g2 = g2.context("`register --json` left no AID")?;
    ensure_eq!(
        doc,
        serde_json::json!({"aid": g2.aid, "name": name2, "pid_range": null}),
        "`register --json`"
    );

    let bad = crate::device::unique_name("cli-rbad");
    let out = cmd::ctl(&["register", &bad, "--pid-range", "0-10"])?;
    let leak = AidGuard::adopt_by_name(&dev, &bad);
    ensure_eq!(
        out.status,
        Status::Exited(2),
        "`register --pid-range 0-10` (usage error)"
    );
    if leak.is_some() {
        bail!("`register --pid-range 0-10` registered {bad}");
    }
    Ok(())
}

fn run_links_itself_and_execs() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli-run");
    // `; true` keeps the shell from exec'ing its last command: appshotctl runs as its child.
    let script = format!("echo $$; {} show {name} --json; true", cmd::APPSHOTCTL);
    let argv = [
        cmd::APPSHOTCTL,
        "run",
        &name,
        "--create",
        "--",
        "/bin/sh",
        "-c",
        &script,
    ];
    let running = cmd::spawn(&argv, &cmd::Options::default())?;
    let run_pid = running.child.pid();
    let out = cmd::collect(&argv, running, step_timeout());
    let g = AidGuard::adopt_by_name(&dev, &name);
    let out = out?.ok()?;
    let g = g.context("`run --create` left no AID")?;
    let (first, rest) = out.stdout.split_once('\n').context("no output")?;
    let sh: i32 = first
        .trim()
        .parse()
        .with_context(|| format!("first line {first:?}"))?;
    ensure_eq!(
        sh,
        run_pid,
        "the shell's PID (appshotctl execs CMD in its own process)"
    );
    let doc: Value =
        serde_json::from_str(rest).with_context(|| format!("inner show output {rest:?}"))?;
    let got = json_pid_entries(&doc)?;
    // Exactly the shell and its child, the inner appshotctl (single-threaded processes).
    let child = got.iter().map(|e| e.0).find(|&p| p != sh).unwrap_or(0);
    let mut want = vec![(sh, sh), (child, child)];
    want.sort_unstable();
    if child == 0 || got != want {
        bail!("table seen from inside `run`: {got:?}; expected the shell {sh} and one child of it");
    }
    // Everything has exited: the AID stays, empty.
    expect_pid_table(&dev, g.aid, &[], "after `appshotctl run` returned")
}

fn run_create_twice_reuses_the_aid() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli-twice");
    let first = cmd::ctl(&["run", &name, "--create", "--", "/bin/true"]);
    let g = AidGuard::adopt_by_name(&dev, &name);
    first?.ok()?;
    let g = g.context("the first `run --create` left no AID")?;
    let nr_aids = dev.nr_aids()?;
    cmd::ctl(&["run", &name, "--create", "--", "/bin/true"])?.ok()?;
    ensure_eq!(
        dev.info_by_name(name.as_bytes())?.aid,
        g.aid,
        "AID after the second `run --create`"
    );
    ensure_eq!(
        dev.nr_aids()?,
        nr_aids,
        "number of AIDs after the second `run --create`"
    );
    cmd::ctl(&["run", &name, "--", "/bin/true"])?
        .ok()
        .context("run without --create on an existing AID")?;
    let missing = crate::device::unique_name("cli-none");
    let out = cmd::ctl(&["run", &missing, "--", "/bin/true"])?;
    let leak = AidGuard::adopt_by_name(&dev, &missing);
    expect_one_line_failure(&out, &[&format!("cannot look up '{missing}'"), "--create"])?;
    if leak.is_some() {
        bail!("`run` without --create registered {missing}");
    }
    Ok(())
}

fn run_exit_status_is_the_commands() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli-exit");
    let out = cmd::ctl(&["run", &name, "--create", "--", "/bin/sh", "-c", "exit 7"]);
    let _g = AidGuard::adopt_by_name(&dev, &name);
    ensure_eq!(
        out?.status,
        Status::Exited(7),
        "status of `run -- sh -c 'exit 7'`"
    );
    for (argv, status) in [
        (vec!["/bin/false"], Status::Exited(1)),
        (vec!["/bin/true"], Status::Exited(0)),
        (
            vec!["/bin/sh", "-c", "kill -9 $$"],
            Status::Signaled(libc::SIGKILL),
        ),
        (vec!["/nonexistent/cmd"], Status::Exited(127)),
        (vec!["/tmp"], Status::Exited(126)),
    ] {
        let mut args = vec!["run", name.as_str(), "--"];
        args.extend(&argv);
        let out = cmd::ctl(&args)?;
        ensure_eq!(
            out.status,
            status,
            "status of `appshotctl run -- {}`",
            argv.join(" ")
        );
    }
    Ok(())
}

fn list_json_fields() -> Result<()> {
    let dev = Device::open()?;
    let ranged_name = crate::device::unique_name("cli-json-r");
    let ranged = AidGuard::adopt(dev.register_range(&ranged_name, 100, 199)?, &ranged_name);
    let busy = AidGuard::new(&dev, "cli-json")?;
    let agent = sleeper(&dev, Some(busy.aid), 3)?;
    check_record(
        &listed(ranged.aid)?,
        &dev,
        ranged.aid,
        &ranged.name,
        Some((100, 199)),
    )?;
    let record = listed(busy.aid)?;
    check_record(&record, &dev, busy.aid, &busy.name, None)?;
    ensure_eq!(
        (int(&record, "processes")?, int(&record, "threads")?),
        (1, 3),
        "processes/threads of a 3-thread process"
    );
    ensure_eq!(int(&record["tables"], "pid")?, 3, "tables.pid");
    release(agent)
}

fn show_json_entries() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "cli-show")?;
    let agent = sleeper(&dev, Some(g.aid), 3)?;
    let doc = json(&cmd::ctl(&["show", &g.name, "--json"])?.ok()?)?;
    check_record(&doc, &dev, g.aid, &g.name, None)?;
    ensure_eq!(
        doc.get("table").and_then(Value::as_str),
        Some("pid"),
        "\"table\""
    );
    let got = json_pid_entries(&doc)?;
    ensure_eq!(
        got,
        entries_of(agent.pid())?,
        "entries of `show --json` (in virtual ID order)"
    );
    let doc = json(&cmd::ctl(&["show", &g.name, "--type", "msg", "--json"])?.ok()?)?;
    ensure_eq!(
        doc.get("table").and_then(Value::as_str),
        Some("msg"),
        "\"table\" with --type msg"
    );
    ensure_eq!(
        doc.get("entries"),
        Some(&Value::Array(vec![])),
        "msg entries"
    );
    release(agent)
}

fn unknown_name_fails_with_one_line() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("cli-nope");
    let why = format!("no AID named '{name}'");
    let pid = proc::getpid().to_string();
    for args in [
        vec!["show", name.as_str()],
        vec!["unregister", name.as_str()],
        vec!["unregister", name.as_str(), "--force"],
        vec!["link", name.as_str(), pid.as_str()],
    ] {
        expect_one_line_failure(&cmd::ctl(&args)?, &[&why])?;
    }
    expect_errno(
        dev.info_by_name(name.as_bytes()),
        libc::ENOENT,
        "INFO of the unknown name afterwards",
    )
}

fn unregister_busy_then_force() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "cli-busy")?;
    let agent = sleeper(&dev, Some(g.aid), 1)?;
    let out = cmd::ctl(&["unregister", &g.name])?;
    expect_one_line_failure(
        &out,
        &[&format!("cannot unregister '{}'", g.name), "--force"],
    )?;
    ensure_eq!(
        dev.info(g.aid)?.nr_processes,
        1,
        "processes after the refused unregister"
    );
    cmd::ctl(&["unregister", &g.name, "--force"])?.ok()?;
    expect_errno(
        dev.info(g.aid),
        libc::ENOENT,
        "INFO after `unregister --force`",
    )?;
    // The process runs on, unlinked.
    expect_errno(
        dev.unlink(agent.pid()),
        libc::ENOENT,
        "UNLINK of the process afterwards",
    )?;
    release(agent)
}

fn link_and_unlink_pid() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "cli-link")?;
    let agent = sleeper(&dev, None, 3)?;
    let pid = agent.pid().to_string();
    let out = cmd::ctl(&["link", &g.name, &pid])?.ok()?;
    ensure_eq!(out.stdout, "", "`link` output (silent)");
    expect_pid_table(
        &dev,
        g.aid,
        &entries_of(agent.pid())?,
        "after `appshotctl link NAME PID`",
    )?;
    cmd::ctl(&["unlink", &pid])?.ok()?;
    expect_pid_table(&dev, g.aid, &[], "after `appshotctl unlink PID`")?;
    let out = cmd::ctl(&["unlink", &pid])?;
    expect_one_line_failure(&out, &[&format!("process {pid} is not linked to any AID")])?;
    release(agent)
}

/// The `entries` of `show --json` for the pid table, as (system, owner) pairs, after
/// checking that every virtual ID equals its system ID (true for these AIDs without a range).
fn json_pid_entries(doc: &Value) -> Result<Vec<(i32, i32)>> {
    let entries = doc
        .get("entries")
        .and_then(Value::as_array)
        .with_context(|| format!("no entries in {doc}"))?;
    let mut got = Vec::new();
    for e in entries {
        ensure_eq!(
            int(e, "virtual")?,
            int(e, "system")?,
            "virtual vs system ID of {e}"
        );
        got.push((int(e, "system")? as i32, int(e, "owner")? as i32));
    }
    Ok(got)
}
