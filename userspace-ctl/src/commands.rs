//! The commands: each opens the device, asks it, and prints the answer.
//!
//! Every device error is explained with the operation that was attempted
//! (`errors::explain`), so what reaches `main` is already the sentence the user reads.
//! `run` ends in `exec`; it returns only when that fails, with the status a shell would
//! give (127 not found, 126 not executable).

use std::env;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use appshot_uapi as uapi;
use rustix::io::Errno;
use thiserror::Error;

use crate::cli::Command;
use crate::device::{Device, DEFAULT_PATH};
use crate::errors::{errno_text, explain, why, Operation};
use crate::output::{self, AidView, EntryView};
use crate::values::{AidName, PidRange, TableType};
use crate::{launch, restore as restoring, snapshot};

/// Hidden override of the device path, for tests (a missing path, `/dev/null`).
pub const DEVICE_ENV: &str = "APPSHOTCTL_DEVICE";

/// Runs one command.
pub fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register {
            name,
            pid_range,
            json,
        } => register(&name, pid_range, json),
        Command::Run {
            name,
            create,
            pid_range,
            command,
        } => run(&name, create, pid_range, &command),
        Command::Link { name, pid } => link(&name, pid),
        Command::Unlink { pid } => unlink(pid),
        Command::Unregister { name, force, destroy_ipc } => unregister(&name, force, destroy_ipc),
        Command::List { json } => list(json),
        Command::Show { name, table, json } => show(&name, table, json),
        Command::Snapshot { name, output, leave_running: _, kill, json } => {
            let after = if kill { snapshot::After::Kill } else { snapshot::After::LeaveRunning };
            snapshot(&name, &output, after, json)
        }
        Command::Restore { file, as_name, json, command } => restore(&file, as_name, json, &command),
        Command::Inspect { file, json } => inspect(&file, json),
    }
}

/// The device path: `$APPSHOTCTL_DEVICE` if set and not empty, else `/dev/appshot`.
fn device_path() -> PathBuf {
    env::var_os(DEVICE_ENV)
        .filter(|path| !path.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_PATH), PathBuf::from)
}

/// Opens the device and makes sure it speaks our ABI.
fn open_device() -> anyhow::Result<Device> {
    let path = device_path();
    let device = Device::open(&path).map_err(|e| explain(Operation::Open(&path), &e))?;
    device
        .check_abi()
        .map_err(|e| explain(Operation::Open(&path), &e))?;
    Ok(device)
}

/// Looks a name up for `operation` (whose failure the message names) and returns its
/// AID number.
fn lookup(device: &Device, name: &AidName, operation: Operation<'_>) -> anyhow::Result<u64> {
    device
        .info(name)
        .map(|info| info.aid)
        .map_err(|e| explain(operation, &e))
}

fn register(name: &AidName, pid_range: Option<PidRange>, json: bool) -> anyhow::Result<()> {
    let device = open_device()?;
    let aid = device
        .register(name, pid_range)
        .map_err(|e| explain(Operation::Register(name), &e))?;
    output::write_stdout(&output::registered(name.as_str(), aid, pid_range, json))
}

fn run(
    name: &AidName,
    create: bool,
    pid_range: Option<PidRange>,
    command: &[OsString],
) -> anyhow::Result<()> {
    let device = open_device()?;
    let aid = match device.info(name) {
        Ok(info) => info.aid,
        Err(e) if e.errno() == Some(Errno::NOENT) && !create => {
            let why = format!(
                "{} (use --create to register it)",
                why(Operation::Lookup(name), &e)
            );
            return Err(anyhow!(why).context(Operation::Lookup(name).what()));
        }
        Err(e) if e.errno() == Some(Errno::NOENT) => match device.register(name, pid_range) {
            Ok(aid) => aid,
            // Registered by someone else since we looked: use theirs.
            Err(e) if e.errno() == Some(Errno::EXIST) => {
                lookup(&device, name, Operation::Lookup(name))?
            }
            Err(e) => return Err(explain(Operation::Register(name), &e)),
        },
        Err(e) => return Err(explain(Operation::Lookup(name), &e)),
    };
    let me = rustix::process::getpid().as_raw_nonzero().get();
    device
        .link(aid, 0)
        .map_err(|e| explain(Operation::Link(name, me), &e))?;
    // Close-on-exec anyway; dropped now so nothing of it outlives the exec attempt.
    drop(device);
    Err(exec(command).into())
}

/// Why `run` could not exec its command, with the exit status a shell would use.
#[derive(Debug, Error)]
#[error("cannot run '{program}': {why}")]
pub struct ExecError {
    program: String,
    why: String,
    /// 127 when the command was not found, 126 when it was found but not executable.
    pub exit_code: u8,
}

/// Replaces appshotctl with `command` (execvp: searched in `PATH` unless it contains a
/// `/`); returns only if that fails.
pub(crate) fn exec(command: &[OsString]) -> ExecError {
    let (program, args) = match command.split_first() {
        Some(split) => split,
        None => (&OsString::new(), &[][..]),
    };
    let error = std::process::Command::new(program).args(args).exec();
    exec_error(program, &error)
}

fn exec_error(program: &OsStr, error: &io::Error) -> ExecError {
    let exit_code = if error.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let why = match error.raw_os_error() {
        Some(raw) => errno_text(Errno::from_raw_os_error(raw)),
        None => error.to_string(),
    };
    ExecError {
        program: program.to_string_lossy().escape_debug().to_string(),
        why,
        exit_code,
    }
}

fn link(name: &AidName, pid: i32) -> anyhow::Result<()> {
    let device = open_device()?;
    let aid = lookup(&device, name, Operation::Link(name, pid))?;
    device
        .link(aid, pid)
        .map_err(|e| explain(Operation::Link(name, pid), &e))
}

fn unlink(pid: i32) -> anyhow::Result<()> {
    let device = open_device()?;
    device
        .unlink(pid)
        .map_err(|e| explain(Operation::Unlink(pid), &e))
}

fn unregister(name: &AidName, force: bool, destroy_ipc: bool) -> anyhow::Result<()> {
    let device = open_device()?;
    let aid = lookup(&device, name, Operation::Unregister(name))?;
    device
        .unregister(aid, force, destroy_ipc)
        .map_err(|e| explain(Operation::Unregister(name), &e))
}

fn list(json: bool) -> anyhow::Result<()> {
    let device = open_device()?;
    let aids = device
        .list()
        .map_err(|e| explain(Operation::List, &e))?
        .iter()
        .map(AidView::from)
        .collect::<Vec<_>>();
    output::write_stdout(&output::list(&aids, json))
}

fn show(name: &AidName, table: TableType, json: bool) -> anyhow::Result<()> {
    let device = open_device()?;
    let info = device
        .info(name)
        .map_err(|e| explain(Operation::Show(name, table), &e))?;
    let entries = device
        .table(info.aid, table)
        .map_err(|e| explain(Operation::Show(name, table), &e))?
        .iter()
        .map(EntryView::from)
        .collect::<Vec<_>>();
    output::write_stdout(&output::show(&AidView::from(&info), table, &entries, json))
}

fn snapshot(name: &AidName, output: &Path, after: snapshot::After, json: bool) -> anyhow::Result<()> {
    let what = || format!("cannot snapshot '{name}'");
    snapshot::check_privilege().with_context(what)?;
    let device = open_device()?;
    let text = snapshot::snapshot(&device, name, output, after, json).with_context(what)?;
    output::write_stdout(&text)
}

fn restore(file: &Path, as_name: Option<AidName>, json: bool, command: &[OsString]) -> anyhow::Result<()> {
    let what = || format!("cannot restore {}", file.display());
    snapshot::check_privilege().with_context(what)?;
    let image = restoring::load(file).with_context(what)?;
    let name = match as_name {
        Some(name) => name,
        None => AidName::parse(OsStr::new(&image.app.name)).map_err(|e| anyhow!("{e}")).with_context(what)?,
    };
    let device = open_device()?;
    let restored = restoring::restore(&device, &image, &name).with_context(what)?;
    if command.is_empty() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        device.unlink(0).map_err(|e| explain(Operation::Unlink(me), &e)).with_context(what)?;
        return output::write_stdout(&restored.render(file, json));
    }
    let Some(root) = restoring::root_pid(&image) else {
        // No process recorded: the command runs as `run` runs it.
        let error = exec(command);
        // The command could not start: the restore is undone, as any other failure.
        restoring::undo(&device, restored.aid);
        return Err(error.into());
    };
    // The command becomes the recorded root process, under its virtual PID; appshotctl
    // leaves the application first (it has no descendants yet) and waits for it.
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let status = device
        .unlink(0)
        .map_err(|e| explain(Operation::Unlink(me), &e))
        .and_then(|()| launch::run_as(&device, restored.aid, root, command));
    match status {
        Ok(status) => std::process::exit(i32::from(status)),
        Err(error) => {
            restoring::undo(&device, restored.aid);
            Err(error.context(what()))
        }
    }
}

fn inspect(file: &Path, json: bool) -> anyhow::Result<()> {
    let image = restoring::load(file).with_context(|| format!("cannot inspect {}", file.display()))?;
    let text = if json {
        serde_json::to_string(&appshot_image::inspect_json(&image)).map(|s| s + "\n")?
    } else {
        appshot_image::inspect_text(&image)
    };
    output::write_stdout(&text)
}

/// `appshotctl --version`: the tool, and the module if the device opens. Never fails
/// because of the module: a missing module is not an error here.
pub fn version() -> anyhow::Result<()> {
    let mut text = format!(
        "appshotctl {} (ABI v{})\n",
        env!("CARGO_PKG_VERSION"),
        uapi::ABI_VERSION
    );
    let path = device_path();
    if let Ok(device) = Device::open(&path) {
        match device.version() {
            Ok(version) => text.push_str(&output::module_version(&version)),
            Err(e) => text.push_str(&format!(
                "appshot.ko: {} does not answer {}: {}\n",
                path.display(),
                crate::device::command_name(uapi::IOC_VERSION),
                e.errno().map_or_else(|| e.to_string(), errno_text)
            )),
        }
    }
    output::write_stdout(&text).context("cannot print the version")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn exec_code(command: &[&str]) -> (u8, String) {
        let command: Vec<OsString> = command.iter().map(OsString::from).collect();
        let error = exec(&command);
        (error.exit_code, error.to_string())
    }

    #[test]
    fn exec_of_a_missing_command_is_127() {
        assert_eq!(
            exec_code(&["/nonexistent/appshotctl-test"]),
            (
                127,
                "cannot run '/nonexistent/appshotctl-test': No such file or directory (ENOENT)"
                    .into()
            )
        );
        // Searched in PATH.
        assert_eq!(exec_code(&["appshotctl-test-no-such-command"]).0, 127);
        assert_eq!(exec_code(&[]).0, 127);
    }

    #[test]
    fn exec_of_a_non_executable_is_126() {
        let dir = env::temp_dir().join(format!("appshotctl-exec-test-{}", std::process::id()));
        let file = dir.join("not-executable");
        let written = fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&file, "#!/bin/sh\nexit 0\n"))
            .and_then(|()| fs::set_permissions(&file, fs::Permissions::from_mode(0o644)));
        assert!(written.is_ok(), "{written:?}");
        let file_text = file.to_string_lossy().into_owned();
        let dir_text = dir.to_string_lossy().into_owned();
        let file_result = exec_code(&[&file_text]);
        let dir_result = exec_code(&[&dir_text]);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(
            file_result,
            (
                126,
                format!("cannot run '{file_text}': Permission denied (EACCES)")
            )
        );
        assert_eq!(dir_result.0, 126);
    }

    #[test]
    fn exec_errors_show_odd_program_names_safely() {
        let error = exec_error(
            OsStr::new("a\u{1b}b"),
            &io::Error::from_raw_os_error(Errno::NOENT.raw_os_error()),
        );
        assert_eq!(
            error.to_string(),
            "cannot run 'a\\u{1b}b': No such file or directory (ENOENT)"
        );
    }
}
