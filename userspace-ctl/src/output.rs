//! What appshotctl prints: aligned tables for people, JSON for scripts.
//!
//! The kernel's structures are first turned into plain views ([`AidView`],
//! [`EntryView`]) whose field names are the JSON field names; they are part of
//! appshotctl's interface (documented in `docs/appshotctl.md`) and stay stable.
//! Rendering only builds strings; [`write_stdout`] writes them, so a closed pipe is
//! handled in one place.

use std::fmt::Write as _;
use std::io::{self, Write as _};

use anyhow::Context as _;
use appshot_uapi::{self as uapi, AidInfo, TableEntry, VersionRequest, TABLE_COUNT};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::values::{PidRange, TableType};

/// One AID, as `list` and `show` report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AidView {
    pub aid: u64,
    pub name: String,
    pub processes: u32,
    pub threads: u32,
    pub pid_range: Option<PidRange>,
    pub owner_uid: u32,
    pub tables: TableSizes,
}

impl From<&AidInfo> for AidView {
    fn from(info: &AidInfo) -> Self {
        let pid_range = (info.flags & uapi::AID_PID_RANGE != 0).then_some(PidRange {
            min: info.pid_min,
            max: info.pid_max,
        });
        Self {
            aid: info.aid,
            name: kernel_name(&info.name),
            processes: info.nr_processes,
            threads: info.nr_threads,
            pid_range,
            owner_uid: info.owner_uid,
            tables: TableSizes(info.table_sizes),
        }
    }
}

/// A name field from the kernel, as text: up to the first NUL (or all 64 bytes), invalid
/// UTF-8 replaced, control characters escaped so they cannot reach the terminal. The
/// module only stores printable ASCII, so this is the name itself unless the module is
/// broken.
pub fn kernel_name(field: &[u8]) -> String {
    let bytes = field.split(|&b| b == 0).next().unwrap_or_default();
    let mut name = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            name.extend(c.escape_default());
        } else {
            name.push(c);
        }
    }
    name
}

/// Entries per table type; serialized as an object keyed by `TABLE_NAMES`, in type order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSizes(pub [u32; TABLE_COUNT]);

impl Serialize for TableSizes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(TABLE_COUNT))?;
        for (table, size) in TableType::all().zip(self.0) {
            map.serialize_entry(table.name(), &size)?;
        }
        map.end()
    }
}

/// One translation of a table, as `show` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EntryView {
    #[serde(rename = "virtual")]
    pub virtual_id: u32,
    #[serde(rename = "system")]
    pub system_id: u32,
    /// PID table: the system thread-group ID (the process); 0 in other tables.
    #[serde(rename = "owner")]
    pub owner_id: u32,
}

impl From<&TableEntry> for EntryView {
    fn from(entry: &TableEntry) -> Self {
        Self {
            virtual_id: entry.virtual_id,
            system_id: entry.system_id,
            owner_id: entry.owner_id,
        }
    }
}

/// `appshotctl list --json`.
#[derive(Serialize)]
struct ListJson<'a> {
    aids: &'a [AidView],
}

/// `appshotctl show --json`: the AID's fields, then the table.
#[derive(Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    aid: &'a AidView,
    table: &'static str,
    entries: &'a [EntryView],
}

/// `appshotctl register --json`.
#[derive(Serialize)]
struct RegisterJson<'a> {
    aid: u64,
    name: &'a str,
    pid_range: Option<PidRange>,
}

/// One line of JSON.
fn json_line(value: &impl Serialize) -> String {
    // Serializing these plain structures to a string cannot fail (no maps with non-string
    // keys, no I/O); should it ever, the output says so instead of panicking.
    let mut line = serde_json::to_string(value)
        .unwrap_or_else(|error| format!("{{\"error\":\"cannot encode JSON: {error}\"}}"));
    line.push('\n');
    line
}

/// Writes to standard output. A reader that went away (`appshotctl list | head -1`) is not
/// an error: the output is simply no longer wanted, as for any Unix filter. (Rust ignores
/// SIGPIPE, so the write fails with EPIPE instead of killing the process.)
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// The feature bits of VERSION, by name.
const FEATURE_NAMES: [(u64, &str); 6] = [
    (uapi::FEATURE_PID_TABLE, "pid-table"),
    (uapi::FEATURE_PID_RANGE, "pid-range"),
    (uapi::FEATURE_PID_VIRTUAL, "pid-virtual"),
    (uapi::FEATURE_IPC_VIRTUAL, "ipc-virtual"),
    (uapi::FEATURE_NEXT_ID, "next-id"),
    (uapi::FEATURE_RESERVE_PID, "reserve-pid"),
];

/// The `appshot.ko` line of `appshotctl --version`.
pub fn module_version(version: &VersionRequest) -> String {
    let mut features: Vec<String> = FEATURE_NAMES
        .iter()
        .filter(|&&(bit, _)| version.features & bit != 0)
        .map(|&(_, name)| name.to_string())
        .collect();
    let unknown = version.features & !FEATURE_NAMES.iter().fold(0, |all, &(bit, _)| all | bit);
    if unknown != 0 {
        features.push(format!("{unknown:#x}"));
    }
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(" ")
    };
    let mismatch = if version.abi_version == uapi::ABI_VERSION {
        String::new()
    } else {
        format!(
            " (incompatible: appshotctl speaks ABI v{})",
            uapi::ABI_VERSION
        )
    };
    format!(
        "appshot.ko ABI v{}{mismatch}, max_entries {}, {} AIDs registered, features: {features}\n",
        version.abi_version, version.entry_limit, version.nr_aids
    )
}

/// The line `register` prints.
pub fn registered(name: &str, aid: u64, pid_range: Option<PidRange>, json: bool) -> String {
    if json {
        return json_line(&RegisterJson {
            aid,
            name,
            pid_range,
        });
    }
    match pid_range {
        Some(range) => format!("registered {name} as AID {aid} (virtual PIDs {range})\n"),
        None => format!("registered {name} as AID {aid}\n"),
    }
}

/// `list`: one row per AID.
pub fn list(aids: &[AidView], json: bool) -> String {
    if json {
        return json_line(&ListJson { aids });
    }
    let mut headers = vec![
        Column::right("AID"),
        Column::left("NAME"),
        Column::right("PROCS"),
        Column::right("THREADS"),
        Column::left("PID-RANGE"),
    ];
    let table_headers: Vec<String> = TableType::all()
        .map(|t| t.name().to_ascii_uppercase())
        .collect();
    headers.extend(table_headers.iter().map(|h| Column::right(h)));
    headers.push(Column::right("OWNER"));
    let rows = aids
        .iter()
        .map(|aid| {
            let mut row = vec![
                aid.aid.to_string(),
                aid.name.clone(),
                aid.processes.to_string(),
                aid.threads.to_string(),
                range_text(aid.pid_range),
            ];
            row.extend(aid.tables.0.iter().map(u32::to_string));
            row.push(aid.owner_uid.to_string());
            row
        })
        .collect::<Vec<_>>();
    render_table(&headers, &rows)
}

/// `show`: the AID's summary, then one of its tables.
pub fn show(aid: &AidView, table: TableType, entries: &[EntryView], json: bool) -> String {
    if json {
        return json_line(&ShowJson {
            aid,
            table: table.name(),
            entries,
        });
    }
    let sizes = TableType::all()
        .zip(aid.tables.0)
        .map(|(t, size)| format!("{t} {size}"))
        .collect::<Vec<_>>()
        .join(", ");
    let summary = [
        ("aid", aid.aid.to_string()),
        ("name", aid.name.clone()),
        ("processes", aid.processes.to_string()),
        ("threads", aid.threads.to_string()),
        ("pid range", range_text(aid.pid_range)),
        ("owner uid", aid.owner_uid.to_string()),
        ("tables", sizes),
    ];
    let mut out = String::new();
    for (key, value) in summary {
        let _ = writeln!(out, "{:<11}{value}", format!("{key}:"));
    }
    let _ = writeln!(out);
    let count = entries.len();
    let plural = if count == 1 { "entry" } else { "entries" };
    if count == 0 {
        let _ = writeln!(out, "{table} table: empty");
        return out;
    }
    let _ = writeln!(out, "{table} table, {count} {plural}:");
    out.push_str(&entry_table(table, entries));
    out
}

/// The rows of one table: IPC keys in hexadecimal (as `ipcs` shows them), IDs in decimal;
/// the PID table adds the process each thread belongs to and marks the process's main
/// thread (thread-group leader).
fn entry_table(table: TableType, entries: &[EntryView]) -> String {
    let id = |value: u32| {
        if table == TableType::KEY {
            format!("{value:#010x}")
        } else {
            value.to_string()
        }
    };
    let mut headers = vec![Column::right("VIRTUAL"), Column::right("SYSTEM")];
    if table == TableType::PID {
        headers.push(Column::left("PROCESS"));
    }
    let rows = entries
        .iter()
        .map(|entry| {
            let mut row = vec![id(entry.virtual_id), id(entry.system_id)];
            if table == TableType::PID {
                row.push(if entry.owner_id == uapi::PID_OWNER_GROUP_ONLY {
                    "- (group/session of a reaped leader)".to_string()
                } else if entry.owner_id == uapi::PID_OWNER_RESERVED {
                    "- (reserved)".to_string()
                } else if entry.system_id == entry.owner_id {
                    format!("{} (leader)", entry.owner_id)
                } else {
                    entry.owner_id.to_string()
                });
            }
            row
        })
        .collect::<Vec<_>>();
    render_table(&headers, &rows)
}

/// `-` or `A-B`.
fn range_text(range: Option<PidRange>) -> String {
    range.map_or_else(|| "-".to_string(), |r| r.to_string())
}

/// A column heading and how its cells line up.
struct Column<'a> {
    title: &'a str,
    right: bool,
}

impl<'a> Column<'a> {
    fn left(title: &'a str) -> Self {
        Self {
            title,
            right: false,
        }
    }

    fn right(title: &'a str) -> Self {
        Self { title, right: true }
    }
}

/// Columns two spaces apart, each as wide as its widest cell; numbers right-aligned; no
/// trailing spaces.
fn render_table(columns: &[Column<'_>], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let titles = columns
        .iter()
        .map(|c| c.title.to_string())
        .collect::<Vec<_>>();
    for row in std::iter::once(&titles).chain(rows) {
        let mut line = String::new();
        for ((column, width), cell) in columns.iter().zip(&widths).zip(row) {
            if !line.is_empty() {
                line.push_str("  ");
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if column.right {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(aid: u64, name: &[u8], processes: u32, threads: u32) -> AidInfo {
        let mut info = AidInfo::zeroed();
        info.aid = aid;
        info.name[..name.len()].copy_from_slice(name);
        info.nr_processes = processes;
        info.nr_threads = threads;
        info.table_sizes[uapi::TABLE_PID as usize] = threads;
        info
    }

    fn sample() -> Vec<AidView> {
        let db = info(1, b"dbserver", 2, 3);
        let mut web = info(12, b"web", 0, 0);
        web.flags = uapi::AID_PID_RANGE;
        web.pid_min = 300;
        web.pid_max = 399;
        web.owner_uid = 1000;
        web.table_sizes = [0, 1, 22, 0, 4];
        vec![AidView::from(&db), AidView::from(&web)]
    }

    fn pid_entries() -> Vec<EntryView> {
        [(100, 100, 100), (101, 101, 100), (4000, 4000, 4000)]
            .into_iter()
            .map(|(virtual_id, system_id, owner_id)| EntryView {
                virtual_id,
                system_id,
                owner_id,
            })
            .collect()
    }

    #[test]
    fn list_table() {
        assert_eq!(
            list(&sample(), false),
            "\
AID  NAME      PROCS  THREADS  PID-RANGE  PID  SEM  SHM  MSG  KEY  OWNER
  1  dbserver      2        3  -            3    0    0    0    0      0
 12  web           0        0  300-399      0    1   22    0    4   1000
"
        );
        assert_eq!(
            list(&[], false),
            "AID  NAME  PROCS  THREADS  PID-RANGE  PID  SEM  SHM  MSG  KEY  OWNER\n"
        );
    }

    #[test]
    fn list_json() {
        assert_eq!(
            list(&sample()[..1], true),
            r#"{"aids":[{"aid":1,"name":"dbserver","processes":2,"threads":3,"pid_range":null,"owner_uid":0,"tables":{"pid":3,"sem":0,"shm":0,"msg":0,"key":0}}]}"#
                .to_string()
                + "\n"
        );
        assert_eq!(list(&[], true), "{\"aids\":[]}\n");
        let web = &sample()[1..];
        assert!(list(web, true).contains(r#""pid_range":{"min":300,"max":399}"#));
    }

    #[test]
    fn show_pid_table() {
        let aids = sample();
        assert_eq!(
            show(&aids[0], TableType::PID, &pid_entries(), false),
            "\
aid:       1
name:      dbserver
processes: 2
threads:   3
pid range: -
owner uid: 0
tables:    pid 3, sem 0, shm 0, msg 0, key 0

pid table, 3 entries:
VIRTUAL  SYSTEM  PROCESS
    100     100  100 (leader)
    101     101  100
   4000    4000  4000 (leader)
"
        );
    }

    #[test]
    fn show_group_only_entry() {
        let aids = sample();
        let entries = [
            EntryView { virtual_id: 4100, system_id: 61, owner_id: uapi::PID_OWNER_GROUP_ONLY },
            EntryView { virtual_id: 4101, system_id: 0, owner_id: uapi::PID_OWNER_RESERVED },
        ];
        let text = show(&aids[0], TableType::PID, &entries, false);
        assert!(
            text.ends_with("   4100      61  - (group/session of a reaped leader)\n   4101       0  - (reserved)\n"),
            "{text}"
        );
        let json = show(&aids[0], TableType::PID, &entries, true);
        assert!(json.contains(r#"{"virtual":4100,"system":61,"owner":0}"#), "{json}");
    }

    #[test]
    fn show_other_tables() {
        let aids = sample();
        let keys = [EntryView {
            virtual_id: 0x1234,
            system_id: 0xdead_beef,
            owner_id: 0,
        }];
        let out = show(&aids[1], TableType::KEY, &keys, false);
        assert!(out.contains("pid range: 300-399\n"), "{out}");
        assert!(
            out.ends_with("key table, 1 entry:\n   VIRTUAL      SYSTEM\n0x00001234  0xdeadbeef\n"),
            "{out}"
        );
        let sem = TableType::from_name("sem").unwrap_or(TableType::PID);
        assert!(show(&aids[1], sem, &[], false).ends_with("\nsem table: empty\n"));
    }

    #[test]
    fn show_json() {
        let aids = sample();
        assert_eq!(
            show(&aids[0], TableType::PID, &pid_entries()[..2], true),
            r#"{"aid":1,"name":"dbserver","processes":2,"threads":3,"pid_range":null,"owner_uid":0,"tables":{"pid":3,"sem":0,"shm":0,"msg":0,"key":0},"table":"pid","entries":[{"virtual":100,"system":100,"owner":100},{"virtual":101,"system":101,"owner":100}]}"#
                .to_string()
                + "\n"
        );
    }

    #[test]
    fn register_line() {
        assert_eq!(registered("db", 3, None, false), "registered db as AID 3\n");
        assert_eq!(
            registered("db", 3, Some(PidRange { min: 5, max: 9 }), false),
            "registered db as AID 3 (virtual PIDs 5-9)\n"
        );
        assert_eq!(
            registered("db", 3, None, true),
            "{\"aid\":3,\"name\":\"db\",\"pid_range\":null}\n"
        );
    }

    #[test]
    fn module_version_line() {
        let mut version = VersionRequest::zeroed();
        version.abi_version = uapi::ABI_VERSION;
        version.features = uapi::FEATURES;
        version.entry_limit = 65536;
        version.nr_aids = 2;
        assert_eq!(
            module_version(&version),
            "appshot.ko ABI v1, max_entries 65536, 2 AIDs registered, features: pid-table pid-range pid-virtual ipc-virtual next-id reserve-pid\n"
        );
        version.abi_version = 9;
        version.features = 1 << 7;
        assert_eq!(
            module_version(&version),
            "appshot.ko ABI v9 (incompatible: appshotctl speaks ABI v1), max_entries 65536, 2 AIDs registered, features: 0x80\n"
        );
    }

    #[test]
    fn odd_kernel_names_are_printed_safely() {
        assert_eq!(kernel_name(b"db\0junk"), "db");
        assert_eq!(kernel_name(&[b'x'; 64]), "x".repeat(64));
        assert_eq!(kernel_name(b"caf\xc3\xa9\xff\0"), "caf\u{e9}\u{fffd}");
        assert_eq!(kernel_name(b"a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        let mut raw = info(5, b"", 0, 0);
        raw.name = [0xff; 64];
        let view = AidView::from(&raw);
        assert_eq!(view.name.chars().count(), 64);
        assert!(list(std::slice::from_ref(&view), false).contains('\u{fffd}'));
        assert!(list(&[view], true).contains("\u{fffd}"));
    }
}
