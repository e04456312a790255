//! The command line: one `Subcommand` enum, every argument parsed into a checked value.
//!
//! Names, PID ranges and table types are validated here by the `values` types, so a usage
//! mistake is a clap error (exit status 2) before the device is opened. Arguments are
//! taken as `OsStr` where they may be anything (names, the command of `run`), so
//! non-UTF-8 input is refused or passed on, never a panic.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use appshot_uapi::TABLE_NAMES;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::values::{AidName, PidRange, TableType};

const ABOUT: &str = "Register applications with appshot.ko, link processes to them, and \
                     inspect their translation tables";

const EXAMPLES: &str = "\
Examples:
  appshotctl register dbserver
  appshotctl run dbserver --create -- /usr/sbin/dbserver --port 5432
  appshotctl list
  appshotctl show dbserver --type pid
  appshotctl unregister dbserver --force
  appshotctl snapshot dbserver -o db.img --kill
  appshotctl restore db.img -- dbserver
  appshotctl inspect db.img

Privileged commands (register, run, link, unlink, unregister, snapshot, restore) need CAP_SYS_ADMIN or
CAP_CHECKPOINT_RESTORE; list and show work for every user, who sees the applications
registered by its own uid (a privileged user sees all).";

/// `appshotctl`'s arguments.
#[derive(Debug, Parser)]
#[command(
    name = "appshotctl",
    about = ABOUT,
    after_help = EXAMPLES,
    override_usage = "appshotctl <COMMAND> [ARGS]\n       appshotctl --version",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print appshotctl's version and, if /dev/appshot opens, the ABI version of appshot.ko
    #[arg(short = 'V', long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a new application (AID) and print its number
    #[command(after_help = "\
Example:
  $ appshotctl register dbserver
  registered dbserver as AID 3
  $ appshotctl register web --pid-range 300-399 --json
  {\"aid\":4,\"name\":\"web\",\"pid_range\":{\"min\":300,\"max\":399}}")]
    Register {
        /// The application's name: 1-63 printable ASCII characters, no spaces
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// Virtual PID range of the application, A-B with 1 <= A <= B < 4194304
        #[arg(long, value_name = "A-B", value_parser = PidRange::parse)]
        pid_range: Option<PidRange>,
        /// Print {"aid":N,"name":...,"pid_range":...} instead of a sentence
        #[arg(long)]
        json: bool,
    },

    /// Run a command as part of an application: link appshotctl itself, then exec CMD
    #[command(after_help = "\
NAME is looked up (and registered first with --create); appshotctl links itself to it
and execs CMD, searching PATH like a shell. CMD and every process and thread it creates
belong to the AID. The exit status is CMD's; 127 if CMD is not found, 126 if it cannot
be executed.

Example:
  appshotctl run dbserver --create -- /usr/sbin/dbserver --port 5432")]
    Run {
        /// The application's name
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// Register NAME if it is not registered yet
        #[arg(long)]
        create: bool,
        /// With --create: the virtual PID range to register NAME with
        #[arg(long, value_name = "A-B", value_parser = PidRange::parse, requires = "create")]
        pid_range: Option<PidRange>,
        /// The command to run, and its arguments (after --)
        #[arg(
            last = true,
            required = true,
            value_name = "CMD",
            value_parser = clap::value_parser!(OsString)
        )]
        command: Vec<OsString>,
    },

    /// Link a running process, its threads and its descendants (and everything they
    /// create) to an application
    #[command(after_help = "\
The caller must be allowed to trace each process (same uid, or CAP_SYS_PTRACE).
All or nothing: on failure nothing stays linked.

Example:
  appshotctl link dbserver 1234")]
    Link {
        /// The application's name
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// The process ID
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
    },

    /// Unlink a process and its descendants (every thread of them) from their application
    #[command(after_help = "\
Refused while the process's parent is in the same application (a process's children
stay in its application): unlink the parent instead.

Example:
  appshotctl unlink 1234")]
    Unlink {
        /// The process ID
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
    },

    /// Delete an application (refused while processes are linked, unless --force, and
    /// while it owns SysV IPC objects, unless --destroy-ipc)
    #[command(after_help = "\
Example:
  appshotctl unregister dbserver --force
  appshotctl unregister dbserver --force --destroy-ipc")]
    Unregister {
        /// The application's name
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// Unlink the application's processes instead of refusing
        #[arg(long)]
        force: bool,
        /// Remove the application's semaphore sets, shared memory segments and message
        /// queues (IPC_RMID, with your permissions) instead of refusing
        #[arg(long)]
        destroy_ipc: bool,
    },

    /// List the registered applications
    #[command(after_help = "\
Example:
  $ appshotctl list
  AID  NAME      PROCS  THREADS  PID-RANGE  PID  SEM  SHM  MSG  KEY  OWNER
    3  dbserver      2        3  -            3    0    0    0    0      0")]
    List {
        /// Print {"aids":[...]} instead of a table
        #[arg(long)]
        json: bool,
    },

    /// Capture an application into an image file: its tables, the values, bytes and
    /// messages of its SysV objects, and its processes' IDs
    #[command(after_help = "\
Every thread of the application is stopped (with ptrace, unseen by its parent) while
its state is read, and runs on afterwards; with --kill it is then killed and removed
with its objects and its name, so that it exists only in the image (which is complete on
disk before anything is removed). A task that does not stop within 5 s fails the
snapshot, naming it, and nothing is left stopped. Needs CAP_SYS_ADMIN or
CAP_CHECKPOINT_RESTORE, and the right to trace every process (CAP_SYS_PTRACE for
another user's).

Example:
  $ appshotctl snapshot dbserver -o db.img
  snapshot of 'dbserver' written to db.img (9046 bytes): 1 process, 1 thread, 1 semaphore set, 1 segment (4096 bytes), 1 queue (3 messages); frozen for 4 ms
  $ appshotctl snapshot dbserver -o db.img --kill")]
    Snapshot {
        /// The application's name
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// The image file to write (replaced atomically)
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Let the application run on after the capture (the default)
        #[arg(long, conflicts_with = "kill")]
        leave_running: bool,
        /// Kill the application after the capture and remove its objects and its AID
        #[arg(long)]
        kill: bool,
        /// Print one JSON object instead of a sentence
        #[arg(long)]
        json: bool,
    },

    /// Recreate an application from an image: new SysV objects with the recorded
    /// virtual IDs, keys, values, bytes and messages; optionally run a command in it
    #[command(after_help = "\
The image is checked whole before anything is created; a bad image is refused with what
is wrong with it. The application is registered under the image's name, or NEWNAME
(restoring one image under several names runs clones side by side); a name in use is
refused. With CMD, appshotctl then execs CMD as a process of the restored application.
All or nothing: on failure everything created is removed. Needs CAP_SYS_ADMIN or
CAP_CHECKPOINT_RESTORE (and CAP_SETUID/CAP_SETGID to recreate objects created by other
users).

Example:
  $ appshotctl restore db.img -- dbserver-check
  $ appshotctl restore db.img --as dbserver2
  restored 'dbserver2' from db.img as AID 7: 1 semaphore set, 1 segment, 1 queue (3 messages)")]
    Restore {
        /// The image file
        file: PathBuf,
        /// Register the application under this name instead of the image's
        #[arg(long = "as", value_name = "NEWNAME", value_parser = AidNameParser)]
        as_name: Option<AidName>,
        /// Print one JSON object instead of a sentence (without CMD)
        #[arg(long)]
        json: bool,
        /// A command to run in the restored application (after --)
        #[arg(last = true, value_name = "CMD", value_parser = clap::value_parser!(OsString))]
        command: Vec<OsString>,
    },

    /// Print an image file's contents
    #[command(after_help = "\
Checks the image as restore does, then prints its header, tables, objects (with
semaphore values, message types and sizes, segment sizes and checksums) and processes.

Example:
  appshotctl inspect db.img
  appshotctl inspect db.img --json")]
    Inspect {
        /// The image file
        file: PathBuf,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },

    /// Show one application and one of its translation tables
    #[command(after_help = "\
Example:
  $ appshotctl show dbserver
  aid:       3
  name:      dbserver
  processes: 2
  threads:   3
  pid range: -
  owner uid: 0
  tables:    pid 3, sem 0, shm 0, msg 0, key 0

  pid table, 3 entries:
  VIRTUAL  SYSTEM  PROCESS
     1200    1200  1200 (leader)
     1201    1201  1200
     1305    1305  1305 (leader)")]
    Show {
        /// The application's name
        #[arg(value_parser = AidNameParser)]
        name: AidName,
        /// The table to show
        #[arg(
            short = 't',
            long = "type",
            value_name = "TYPE",
            default_value = "pid",
            value_parser = table_type_parser()
        )]
        table: TableType,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Parses an AID name from raw argument bytes, so a non-UTF-8 name gets the same
/// explanation as any other unprintable one.
#[derive(Clone, Copy, Debug)]
struct AidNameParser;

impl TypedValueParser for AidNameParser {
    type Value = AidName;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<AidName, clap::Error> {
        AidName::parse(value).map_err(|why| {
            let shown = value.to_string_lossy();
            let message = format!("invalid AID name '{}': {why}", shown.escape_debug());
            // `format` adds the usage and the --help hint, as clap's own errors have.
            clap::Error::raw(ErrorKind::ValueValidation, message).format(&mut cmd.clone())
        })
    }
}

/// `--type`: one of `TABLE_NAMES`.
fn table_type_parser() -> impl TypedValueParser<Value = TableType> {
    PossibleValuesParser::new(TABLE_NAMES)
        .try_map(|name| TableType::from_name(&name).ok_or("unknown table type"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::os::unix::ffi::OsStringExt;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("appshotctl").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Option<Command> {
        parse(args).ok().and_then(|cli| cli.command)
    }

    fn error(args: &[&str]) -> String {
        parse(args).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn register() {
        match command(&["register", "dbserver"]) {
            Some(Command::Register {
                name,
                pid_range: None,
                json: false,
            }) => assert_eq!(name.as_str(), "dbserver"),
            other => panic!("{other:?}"),
        }
        match command(&["register", "web", "--pid-range", "300-399", "--json"]) {
            Some(Command::Register {
                pid_range: Some(range),
                json: true,
                ..
            }) => assert_eq!((range.min, range.max), (300, 399)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_names_are_usage_errors() {
        let long = "x".repeat(64);
        for bad in [
            "",
            "db server",
            "db\tserver",
            "caf\u{e9}",
            "\u{1b}[31m",
            long.as_str(),
        ] {
            let result = parse(&["register", bad]);
            let kind = result.as_ref().err().map(clap::Error::kind);
            assert_eq!(kind, Some(ErrorKind::ValueValidation), "{bad:?}");
            assert_eq!(result.err().map(|e| e.exit_code()), Some(2));
        }
        assert!(error(&["register", ""]).contains(
            "invalid AID name '': it is empty (a name is 1-63 printable ASCII characters, no spaces)"
        ));
        assert!(error(&["register", &long]).contains("it is 64 bytes long"));
        assert!(error(&["register", "db server"])
            .contains("invalid AID name 'db server': it contains a space"));
        // Control characters are escaped, not sent to the terminal.
        assert!(error(&["register", "\u{1b}[31m"]).contains("invalid AID name '\\u{1b}[31m'"));
        assert!(command(&["register", &"x".repeat(63)]).is_some());
    }

    #[test]
    fn non_utf8_names_are_usage_errors() {
        let args = [
            OsString::from("appshotctl"),
            OsString::from("show"),
            OsString::from_vec(b"db\xff".to_vec()),
        ];
        let err = Cli::try_parse_from(args).err();
        assert_eq!(
            err.as_ref().map(|e| e.kind()),
            Some(ErrorKind::ValueValidation)
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("invalid AID name 'db\u{fffd}': it contains a space or a non-printable"),
            "{text}"
        );
    }

    #[test]
    fn pid_ranges() {
        for bad in ["0-5", "5-4", "1-4194304", "x", "1-", "-1", "1 - 2"] {
            let err = error(&["register", "db", &format!("--pid-range={bad}")]);
            assert!(
                err.contains("expected A-B with 1 <= A <= B < 4194304, e.g. 300-399"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn run() {
        match command(&["run", "db", "--create", "--", "ls", "-l", "--", "/"]) {
            Some(Command::Run {
                name,
                create: true,
                pid_range: None,
                command,
            }) => {
                assert_eq!(name.as_str(), "db");
                assert_eq!(command, ["ls", "-l", "--", "/"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            command(&["run", "db", "--", "true"]),
            Some(Command::Run { create: false, .. })
        ));
        let with_range = command(&["run", "db", "--create", "--pid-range", "2-9", "--", "true"]);
        assert!(matches!(
            with_range,
            Some(Command::Run {
                pid_range: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn run_needs_a_command_after_the_double_dash() {
        for args in [
            &["run", "db"][..],
            &["run", "db", "--"],
            &["run", "db", "--create", "--"],
        ] {
            let kind = parse(args).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::MissingRequiredArgument), "{args:?}");
        }
        // The command must follow `--`.
        assert!(parse(&["run", "db", "ls"]).is_err());
        // --pid-range only means something when registering.
        let kind = parse(&["run", "db", "--pid-range", "2-9", "--", "true"])
            .err()
            .map(|e| e.kind());
        assert_eq!(kind, Some(ErrorKind::MissingRequiredArgument));
    }

    #[test]
    fn run_passes_non_utf8_arguments_on() {
        let args = ["appshotctl", "run", "db", "--", "printf"]
            .into_iter()
            .map(OsString::from)
            .chain([OsString::from_vec(b"\xff\xfe".to_vec())]);
        match Cli::try_parse_from(args).ok().and_then(|cli| cli.command) {
            Some(Command::Run { command, .. }) => {
                assert_eq!(command[1], OsString::from_vec(b"\xff\xfe".to_vec()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn link_unlink_unregister() {
        assert!(matches!(
            command(&["link", "db", "1234"]),
            Some(Command::Link { pid: 1234, .. })
        ));
        assert!(matches!(
            command(&["unlink", "1"]),
            Some(Command::Unlink { pid: 1 })
        ));
        for bad in ["0", "-5", "x", "99999999999", ""] {
            assert!(parse(&["unlink", bad]).is_err(), "{bad:?}");
            assert!(parse(&["link", "db", bad]).is_err(), "{bad:?}");
        }
        assert!(parse(&["link", "db"]).is_err());
        assert!(matches!(
            command(&["unregister", "db"]),
            Some(Command::Unregister { force: false, destroy_ipc: false, .. })
        ));
        assert!(matches!(
            command(&["unregister", "db", "--force"]),
            Some(Command::Unregister { force: true, .. })
        ));
    }

    #[test]
    fn list_and_show() {
        assert!(matches!(
            command(&["list"]),
            Some(Command::List { json: false })
        ));
        assert!(matches!(
            command(&["list", "--json"]),
            Some(Command::List { json: true })
        ));
        match command(&["show", "db"]) {
            Some(Command::Show {
                table, json: false, ..
            }) => assert_eq!(table, TableType::PID),
            other => panic!("{other:?}"),
        }
        for name in TABLE_NAMES {
            match command(&["show", "db", "--type", name, "--json"]) {
                Some(Command::Show {
                    table, json: true, ..
                }) => assert_eq!(table.name(), name),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            command(&["show", "db", "-t", "key"]),
            Some(Command::Show {
                table: TableType::KEY,
                ..
            })
        ));
        let err = parse(&["show", "db", "--type", "fd"]).err();
        assert_eq!(
            err.as_ref().map(|e| e.kind()),
            Some(ErrorKind::InvalidValue)
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("[possible values: pid, sem, shm, msg, key]"),
            "{text}"
        );
    }

    #[test]
    fn version_and_no_arguments() {
        let cli = parse(&["--version"]).ok();
        assert!(matches!(
            cli,
            Some(Cli {
                version: true,
                command: None
            })
        ));
        assert!(matches!(
            parse(&["-V"]).ok(),
            Some(Cli { version: true, .. })
        ));
        assert!(parse(&["--version", "list"]).is_err());
        let kind = parse(&[]).err().map(|e| e.kind());
        assert_eq!(
            kind,
            Some(ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand)
        );
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn every_command_has_an_example() {
        let mut cli = Cli::command();
        for sub in cli.get_subcommands_mut() {
            let help = sub.render_help().to_string();
            assert!(help.contains("Example:"), "{}", sub.get_name());
            assert!(
                help.contains(&format!("appshotctl {}", sub.get_name())),
                "{}",
                sub.get_name()
            );
        }
    }
}
