//! The built `appshotctl` binary, run without appshot.ko: exit statuses and the exact
//! messages for a missing device, for a device that is not appshot (`/dev/null`, whose
//! ioctls fail with ENOTTY), for usage errors, and for odd input (non-UTF-8 arguments,
//! closed pipes), which must never make it panic.
//!
//! The device path is redirected with the hidden `APPSHOTCTL_DEVICE` variable, so these
//! tests mean the same on a host with or without the module loaded.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Output, Stdio};

const MISSING: &str = "/nonexistent/appshot";

fn appshotctl<I, S>(device: &str, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_appshotctl"))
        .args(args)
        .env("APPSHOTCTL_DEVICE", device)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run appshotctl: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit status, stdout, stderr; and never a panic.
fn run<I, S>(device: &str, args: I) -> (Option<i32>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = appshotctl(device, args);
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    (output.status.code(), stdout(&output), err)
}

/// One invocation of every command that needs the device.
fn device_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["register", "db"],
        vec!["register", "db", "--pid-range", "300-399", "--json"],
        vec!["run", "db", "--", "true"],
        vec!["run", "db", "--create", "--", "true"],
        vec!["link", "db", "1"],
        vec!["unlink", "1"],
        vec!["unregister", "db", "--force"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["show", "db"],
        vec!["show", "db", "--type", "key", "--json"],
    ]
}

#[test]
fn missing_device_means_the_module_is_not_loaded() {
    for args in device_commands() {
        let (code, out, err) = run(MISSING, &args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err,
            "appshotctl: cannot use /nonexistent/appshot: appshot.ko is not loaded (no /nonexistent/appshot)\n",
            "{args:?}"
        );
    }
}

#[test]
fn a_device_that_is_not_appshot_is_refused() {
    for args in device_commands() {
        let (code, out, err) = run("/dev/null", &args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err,
            "appshotctl: cannot use /dev/null: not appshot.ko, or an appshot.ko that speaks another ABI than v1 (ENOTTY)\n",
            "{args:?}"
        );
    }
}

#[test]
fn version_without_the_module() {
    let expected = format!("appshotctl {} (ABI v1)\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        assert_eq!(
            run(MISSING, [flag]),
            (Some(0), expected.clone(), String::new())
        );
    }
    let (code, out, err) = run("/dev/null", ["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(err, "");
    assert_eq!(
        out,
        format!(
            "{expected}appshot.ko: /dev/null does not answer APPSHOT_IOC_VERSION: Inappropriate ioctl for device (ENOTTY)\n"
        )
    );
}

#[test]
fn usage_errors_exit_2() {
    let long = "x".repeat(64);
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["register"],
        vec!["register", ""],
        vec!["register", &long],
        vec!["register", "db server"],
        vec!["register", "db\u{7}"],
        vec!["register", "caf\u{e9}"],
        vec!["register", "db", "--pid-range", "0-1"],
        vec!["register", "db", "--pid-range", "5-4"],
        vec!["register", "db", "--pid-range", "1-4194304"],
        vec!["register", "db", "--pid-range", "abc"],
        vec!["run", "db"],
        vec!["run", "db", "--"],
        vec!["run", "db", "true"],
        vec!["run", "db", "--pid-range", "1-2", "--", "true"],
        vec!["link", "db"],
        vec!["link", "db", "0"],
        vec!["link", "db", "-3"],
        vec!["link", "db", "pid"],
        vec!["unlink", "0"],
        vec!["unregister"],
        vec!["show", "db", "--type", "fd"],
        vec!["show", "db", "--type", "PID"],
        vec!["list", "extra"],
        vec!["--version", "list"],
    ];
    for args in cases {
        // A working device path: usage errors must be caught before it is opened.
        let (code, out, err) = run("/dev/null", &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(
            err.starts_with("error: ") || args.is_empty(),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn usage_error_messages() {
    let (_, _, err) = run(MISSING, ["register", "db server"]);
    assert!(err.starts_with(
        "error: invalid AID name 'db server': it contains a space or a non-printable or non-ASCII character (a name is 1-63 printable ASCII characters, no spaces)\n"
    ), "{err}");
    let (_, _, err) = run(MISSING, ["register", ""]);
    assert!(
        err.starts_with("error: invalid AID name '': it is empty (a name is 1-63"),
        "{err}"
    );
    let (_, _, err) = run(MISSING, ["register", &"y".repeat(64)]);
    assert!(err.contains("it is 64 bytes long"), "{err}");
    let (_, _, err) = run(MISSING, ["register", "db", "--pid-range", "9-3"]);
    assert!(err.starts_with(
        "error: invalid value '9-3' for '--pid-range <A-B>': expected A-B with 1 <= A <= B < 4194304, e.g. 300-399\n"
    ), "{err}");
    let (_, _, err) = run(MISSING, ["run", "db", "--create", "--"]);
    assert!(
        err.contains("required arguments were not provided") && err.contains("<CMD>"),
        "{err}"
    );
    let (_, _, err) = run(MISSING, ["show", "db", "--type", "fd"]);
    assert!(
        err.contains("[possible values: pid, sem, shm, msg, key]"),
        "{err}"
    );
}

#[test]
fn non_utf8_arguments_never_panic() {
    let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
    let usage: Vec<Vec<OsString>> = vec![
        vec![bytes(b"register"), bytes(b"db\xff")],
        vec![bytes(b"show"), bytes(b"\xc3\x28")],
        vec![bytes(b"\xff\xfe")],
        vec![bytes(b"link"), bytes(b"db"), bytes(b"1\xff")],
        vec![
            bytes(b"register"),
            bytes(b"db"),
            bytes(b"--pid-range"),
            bytes(b"1-\xff"),
        ],
        vec![
            bytes(b"show"),
            bytes(b"db"),
            bytes(b"--type"),
            bytes(b"p\xffd"),
        ],
        vec![bytes(b"list"), bytes(b"--js\xffon")],
    ];
    for args in usage {
        let (code, out, err) = run(MISSING, &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let (_, _, err) = run(MISSING, [bytes(b"register"), bytes(b"db\xff")]);
    assert!(
        err.starts_with("error: invalid AID name 'db\u{fffd}': it contains a space"),
        "{err}"
    );
    // The command of `run` may be any bytes; here the device check stops it first.
    let (code, _, err) = run(
        "/dev/null",
        [
            bytes(b"run"),
            bytes(b"db"),
            bytes(b"--"),
            bytes(b"\xff"),
            bytes(b"\xfe"),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.starts_with("appshotctl: cannot use /dev/null"), "{err}");
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        "register",
        "run",
        "link",
        "unlink",
        "unregister",
        "list",
        "show",
    ] {
        let (code, out, err) = run(MISSING, [command, "--help"]);
        assert_eq!(code, Some(0), "{command}: {err}");
        assert!(out.contains("Example:"), "{command}: {out}");
        assert!(
            out.contains(&format!("appshotctl {command}")),
            "{command}: {out}"
        );
    }
    let (code, out, _) = run(MISSING, ["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Examples:"));
}

/// `appshotctl ... | head -0`: the reader is gone before appshotctl writes.
fn with_closed_stdout(device: &str, args: &[&str]) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_appshotctl"))
        .args(args)
        .env("APPSHOTCTL_DEVICE", device)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run appshotctl: {e}"));
    drop(child.stdout.take());
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for appshotctl: {e}"));
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    output.status.code()
}

#[test]
fn closed_pipes_do_not_panic() {
    assert_eq!(with_closed_stdout(MISSING, &["--version"]), Some(0));
    assert_eq!(with_closed_stdout("/dev/null", &["--version"]), Some(0));
    assert_eq!(with_closed_stdout(MISSING, &["--help"]), Some(0));
    assert_eq!(with_closed_stdout(MISSING, &["list", "--help"]), Some(0));

    // stderr closed too: the error message is lost, the status is not.
    let mut child = Command::new(env!("CARGO_BIN_EXE_appshotctl"))
        .arg("list")
        .env("APPSHOTCTL_DEVICE", MISSING)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run appshotctl: {e}"));
    drop(child.stderr.take());
    let status = child.wait().map(|s| s.code());
    assert_eq!(status.ok().flatten(), Some(1));
}

/// A small image file in the test's temporary directory.
fn image_file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("appshotctl-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("app.img");
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn small_image() -> Vec<u8> {
    use appshot_image::*;
    let image = Image {
        app: AppRecord {
            name: "dbserver".into(),
            pid_range: Some((300, 399)),
            source_aid: 3,
            created_unix: 1_764_556_800,
            kernel_release: "6.12.117".into(),
        },
        tables: vec![TableRecord { kind: TableKind::Sem, entries: vec![TableEntry { virtual_id: 5193, system_id: 65539, owner_id: 0 }] }],
        sems: vec![SemSet {
            virtual_id: 5193,
            system_id: 65539,
            perm: IpcPerm { key: 0x1234, uid: 0, gid: 0, cuid: 0, cgid: 0, mode: 0o600 },
            otime: 0,
            ctime: 1_764_556_800,
            sems: vec![Semaphore { value: 7, last_pid: 300 }],
        }],
        shms: vec![],
        msgs: vec![],
        processes: vec![],
        notices: vec![],
    };
    let mut bytes = Vec::new();
    write_image(&image, &mut bytes).unwrap_or_else(|e| panic!("{e}"));
    bytes
}

#[test]
fn inspect_prints_an_image_without_the_device() {
    let path = image_file("inspect", &small_image());
    let (code, out, err) = run(MISSING, [OsStr::new("inspect"), path.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("dbserver") && out.contains("5193"), "{out}");
    let (code, out, err) = run(MISSING, [OsStr::new("inspect"), path.as_os_str(), OsStr::new("--json")]);
    assert_eq!(code, Some(0), "{err}");
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(value["app"]["name"], "dbserver", "{value}");
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
}

#[test]
fn inspect_refuses_bad_images_with_what_is_wrong() {
    let good = small_image();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 4;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() - 10].to_vec(), "is not a usable image"),
        ("flipped", flipped, "checksum"),
        ("magic", b"not an image at all, certainly not".to_vec(), "magic"),
        ("empty", Vec::new(), "is not a usable image"),
    ];
    for (tag, bytes, want) in cases {
        let path = image_file(tag, &bytes);
        let (code, out, err) = run(MISSING, [OsStr::new("inspect"), path.as_os_str()]);
        assert_eq!(code, Some(1), "{tag}: {out}");
        assert!(err.starts_with(&format!("appshotctl: cannot inspect {}: ", path.display())), "{tag}: {err}");
        assert!(err.contains(want), "{tag}: {err}");
        assert_eq!(err.lines().count(), 1, "{tag}: {err}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));
    }
    let (code, _, err) = run(MISSING, ["inspect", "/nonexistent/app.img"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot read /nonexistent/app.img: No such file or directory"), "{err}");
}
