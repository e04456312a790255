//! `appshotctl inspect`: an image as text for people and as JSON for scripts.
//!
//! The text is sections of aligned columns, like `ipcs`: a summary of the application,
//! the notices the reader left, the translation tables (virtual -> system), each SysV
//! object with its fields and contents (semaphore values, message list; a segment's
//! size and CRC-32 rather than its bytes), and the processes. Times are shown in UTC
//! (`-` for 0, which the kernel uses for "never"). The JSON is the model as serialized by
//! serde, with `format_version` added; its field names are the model's and stay stable.

use std::fmt::Write as _;

use crate::json::{crc32, hex_preview};
use crate::model::*;
use crate::FORMAT_VERSION;

/// The image as human-readable text (what `appshotctl inspect` prints).
pub fn inspect_text(image: &Image) -> String {
    let mut out = String::new();
    summary(&mut out, image);
    tables(&mut out, image);
    sem_sets(&mut out, image);
    shm_segments(&mut out, image);
    msg_queues(&mut out, image);
    processes(&mut out, image);
    out
}

/// The image as JSON (what `appshotctl inspect --json` prints): the model's fields plus
/// `format_version`. Segment and message contents appear as
/// `{"len", "crc32", "preview_hex"}`, paths and arguments as (lossy) strings.
pub fn inspect_json(image: &Image) -> serde_json::Value {
    let mut value = serde_json::to_value(image).unwrap_or_else(
        |e| serde_json::json!({ "error": format!("cannot serialize the image: {e}") }),
    );
    if let Some(object) = value.as_object_mut() {
        object.insert("format_version".to_owned(), FORMAT_VERSION.into());
    }
    value
}

fn summary(out: &mut String, image: &Image) {
    let app = &image.app;
    let range = match app.pid_range {
        Some((min, max)) => format!("{min}-{max}"),
        None => "none (virtual PIDs follow system PIDs)".to_owned(),
    };
    let _ = writeln!(out, "appshot image, format version {FORMAT_VERSION}");
    let rows = [
        ("app", app.name.clone()),
        ("source AID", app.source_aid.to_string()),
        (
            "created",
            format!("{} ({})", utc(app.created_unix as i64), app.created_unix),
        ),
        ("kernel", app.kernel_release.clone()),
        ("PID range", range),
        (
            "contents",
            [
                (image.tables.len(), "table", "tables"),
                (image.sems.len(), "semaphore set", "semaphore sets"),
                (
                    image.shms.len(),
                    "shared memory segment",
                    "shared memory segments",
                ),
                (image.msgs.len(), "message queue", "message queues"),
                (image.processes.len(), "process", "processes"),
            ]
            .map(|(n, one, many)| format!("{n} {}", plural(n, one, many)))
            .join(", "),
        ),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "  {:<11} {value}", format!("{label}:"));
    }
    for notice in &image.notices {
        let _ = writeln!(out, "  notice: {notice}");
    }
}

fn tables(out: &mut String, image: &Image) {
    for table in &image.tables {
        let entries = table.entries.len();
        let _ = writeln!(
            out,
            "\n{} table ({entries} {})",
            table.kind.name(),
            plural(entries, "entry", "entries")
        );
        let id = |v: u32| match table.kind {
            TableKind::Key => format!("{v:#010x}"),
            _ => v.to_string(),
        };
        let rows = table.entries.iter().map(|e| match table.kind {
            TableKind::Pid => vec![id(e.virtual_id), id(e.system_id), owner(e.owner_id)],
            _ => vec![id(e.virtual_id), id(e.system_id)],
        });
        let header: &[&str] = match table.kind {
            TableKind::Pid => &["VIRTUAL", "SYSTEM", "OWNER (system TGID)"],
            _ => &["VIRTUAL", "SYSTEM"],
        };
        columns(out, "  ", header, rows);
    }
}

fn owner(owner_id: u32) -> String {
    match owner_id {
        0 => "- (group or session only)".to_owned(),
        tgid => tgid.to_string(),
    }
}

fn sem_sets(out: &mut String, image: &Image) {
    if image.sems.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nsemaphore sets ({})", image.sems.len());
    for set in &image.sems {
        let _ = writeln!(
            out,
            "  sem {} (system {}): {}",
            set.virtual_id,
            set.system_id,
            perm(&set.perm)
        );
        let _ = writeln!(
            out,
            "    nsems {}, otime {}, ctime {}",
            set.sems.len(),
            utc(set.otime),
            utc(set.ctime)
        );
        let rows = set
            .sems
            .iter()
            .enumerate()
            .map(|(n, s)| vec![n.to_string(), s.value.to_string(), pid(s.last_pid)]);
        columns(out, "    ", &["SEMNUM", "VALUE", "LAST PID"], rows);
    }
}

fn shm_segments(out: &mut String, image: &Image) {
    if image.shms.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nshared memory segments ({})", image.shms.len());
    for seg in &image.shms {
        let _ = writeln!(
            out,
            "  shm {} (system {}): {}",
            seg.virtual_id,
            seg.system_id,
            perm(&seg.perm)
        );
        let _ = writeln!(
            out,
            "    size {}, crc32 {:#010x}, nattch {}, cpid {}, lpid {}",
            seg.size,
            crc32(&seg.data),
            seg.nattch,
            pid(seg.cpid),
            pid(seg.lpid)
        );
        let _ = writeln!(
            out,
            "    atime {}, dtime {}, ctime {}",
            utc(seg.atime),
            utc(seg.dtime),
            utc(seg.ctime)
        );
        let _ = writeln!(out, "    first bytes {}", hex_preview(&seg.data));
    }
}

fn msg_queues(out: &mut String, image: &Image) {
    if image.msgs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nmessage queues ({})", image.msgs.len());
    for queue in &image.msgs {
        let bytes: u64 = queue.messages.iter().map(|m| m.data.len() as u64).sum();
        let count = queue.messages.len();
        let _ = writeln!(
            out,
            "  msg {} (system {}): {}",
            queue.virtual_id,
            queue.system_id,
            perm(&queue.perm)
        );
        let _ = writeln!(
            out,
            "    qbytes {}, {count} {} ({bytes} bytes), lspid {}, lrpid {}",
            queue.qbytes,
            plural(count, "message", "messages"),
            pid(queue.lspid),
            pid(queue.lrpid)
        );
        let _ = writeln!(
            out,
            "    stime {}, rtime {}, ctime {}",
            utc(queue.stime),
            utc(queue.rtime),
            utc(queue.ctime)
        );
        let rows = queue
            .messages
            .iter()
            .enumerate()
            .map(|(n, m)| vec![n.to_string(), m.mtype.to_string(), m.data.len().to_string()]);
        columns(out, "    ", &["#", "TYPE", "SIZE"], rows);
    }
}

fn processes(out: &mut String, image: &Image) {
    if image.processes.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nprocesses ({})", image.processes.len());
    let rows = image.processes.iter().map(|p| {
        let threads: Vec<String> = p.threads.iter().map(u32::to_string).collect();
        let command: Vec<String> = p.cmdline.iter().map(|arg| printable(arg)).collect();
        vec![
            p.virtual_pid.to_string(),
            pid(p.virtual_ppid),
            pid(p.virtual_pgid),
            pid(p.virtual_sid),
            threads.join(","),
            if p.exe.is_empty() {
                "-".to_owned()
            } else {
                printable(&p.exe)
            },
            command.join(" "),
        ]
    });
    columns(
        out,
        "  ",
        &["PID", "PPID", "PGID", "SID", "THREADS", "EXE", "COMMAND"],
        rows,
    );
}

/// An `ipc_perm` on one line.
fn perm(perm: &IpcPerm) -> String {
    let key = match perm.key {
        0 => "IPC_PRIVATE".to_owned(),
        key => format!("{:#010x}", key as u32),
    };
    format!(
        "key {key}, owner {}:{}, creator {}:{}, mode {:04o}",
        perm.uid, perm.gid, perm.cuid, perm.cgid, perm.mode
    )
}

/// A virtual PID field, `-` for 0 (none or outside the AID).
fn pid(pid: u32) -> String {
    match pid {
        0 => "-".to_owned(),
        pid => pid.to_string(),
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Bytes as text on one line: invalid UTF-8 replaced, control characters escaped.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0.
fn utc(seconds: i64) -> String {
    if seconds == 0 {
        return "-".to_owned();
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days`. Valid for every `i64` day that an `i64` of seconds gives.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes rows as left-aligned columns under a header, each line starting with `indent`.
fn columns(
    out: &mut String,
    indent: &str,
    header: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = indent.to_owned();
        for (n, cell) in cells.enumerate() {
            if n > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<width$}", width = widths[n]);
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_556_800), "2025-12-01 02:40:00 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
        // Extremes do not overflow.
        let _ = utc(i64::MAX);
        let _ = utc(i64::MIN);
    }
}
