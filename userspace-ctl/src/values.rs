//! Validated values from the command line: AID names, virtual PID ranges, table types.
//!
//! Each type can only hold what appshot.ko would accept, so a bad argument is refused and
//! explained here, in words, before anything is asked of the device. The rules themselves
//! are not restated: they come from `appshot-uapi` (`check_name`, `check_pid_range`,
//! `TABLE_NAMES`), the same code the module runs; this file only puts them into words.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use appshot_uapi::{self as uapi, NameError, NAME_LEN, PID_RANGE_LIMIT, TABLE_COUNT, TABLE_NAMES};
use serde::Serialize;

/// The naming rule, as the user reads it.
pub const NAME_RULE: &str = "1-63 printable ASCII characters, no spaces";

/// An AID name that passes `appshot_uapi::check_name`.
///
/// # Invariants
/// `field` is `encode_name(text)`, and `text` passes `check_name` (so it is printable
/// ASCII without spaces and can be quoted in a message as is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AidName {
    text: String,
    field: [u8; NAME_LEN],
}

impl AidName {
    /// Checks a raw argument against the naming rule; the error says why it is refused.
    pub fn parse(raw: &OsStr) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        let refusal = |error: NameError| {
            let why = match error {
                NameError::Empty => "it is empty".to_string(),
                NameError::TooLong => format!("it is {} bytes long", bytes.len()),
                NameError::NotPrintable => {
                    "it contains a space or a non-printable or non-ASCII character".to_string()
                }
                // A command-line argument cannot contain a NUL, so nothing can follow one.
                NameError::TrailingBytes => "it contains a NUL byte".to_string(),
            };
            format!("{why} (a name is {NAME_RULE})")
        };
        let field = uapi::encode_name(bytes).map_err(refusal)?;
        // Printable ASCII (just checked), so the conversion is lossless.
        let text = String::from_utf8_lossy(bytes).into_owned();
        Ok(Self { text, field })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The NUL-terminated name field of a request.
    pub fn field(&self) -> [u8; NAME_LEN] {
        self.field
    }
}

impl fmt::Display for AidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A virtual PID range `min..=max`.
///
/// From the command line it always passes `appshot_uapi::check_pid_range`; as reported by
/// the module it is shown as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PidRange {
    /// First virtual PID.
    pub min: u32,
    /// Last virtual PID.
    pub max: u32,
}

impl PidRange {
    /// Parses `A-B` and checks it; the error says what a range must look like.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split_once('-')
            .and_then(|(min, max)| Some((parse_decimal(min)?, parse_decimal(max)?)))
            .filter(|&(min, max)| uapi::check_pid_range(min, max))
            .map(|(min, max)| Self { min, max })
            .ok_or_else(|| {
                format!("expected A-B with 1 <= A <= B < {PID_RANGE_LIMIT}, e.g. 300-399")
            })
    }
}

impl fmt::Display for PidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Plain decimal digits only: no sign, no spaces (which `u32::from_str` would partly allow).
fn parse_decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One of the per-AID translation tables (`APPSHOT_TABLE_*`).
///
/// # Invariants
/// The index is below `TABLE_COUNT`, so it names an entry of `TABLE_NAMES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableType(usize);

impl TableType {
    /// The PID table, shown when no type is asked for.
    pub const PID: Self = Self(uapi::TABLE_PID as usize);
    /// The SysV semaphore set table.
    pub const SEM: Self = Self(uapi::TABLE_SEM as usize);
    /// The SysV shared memory segment table.
    pub const SHM: Self = Self(uapi::TABLE_SHM as usize);
    /// The SysV message queue table.
    pub const MSG: Self = Self(uapi::TABLE_MSG as usize);
    /// The SysV IPC key table, whose IDs read best in hexadecimal.
    pub const KEY: Self = Self(uapi::TABLE_KEY as usize);

    /// Looks a type up by its name in `TABLE_NAMES`.
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE_NAMES.iter().position(|&n| n == name).map(Self)
    }

    /// The table's name (`pid`, `sem`, ...).
    pub fn name(self) -> &'static str {
        TABLE_NAMES[self.0]
    }

    /// The `APPSHOT_TABLE_*` number.
    pub fn number(self) -> u32 {
        // Below TABLE_COUNT (type invariant), which is tiny.
        self.0 as u32
    }

    /// Every table type, in number order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..TABLE_COUNT).map(Self)
    }
}

impl fmt::Display for TableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn name(bytes: &[u8]) -> Result<AidName, String> {
        AidName::parse(&OsString::from_vec(bytes.to_vec()))
    }

    #[test]
    fn names_follow_the_uapi_rule() {
        assert_eq!(
            name(b"dbserver").map(|n| n.to_string()),
            Ok("dbserver".into())
        );
        assert!(name(&[b'a'; 63]).is_ok());
        assert!(name(b"!~").is_ok());
        let field = name(b"db").map(|n| n.field()).unwrap_or([0xff; NAME_LEN]);
        assert_eq!(&field[..3], b"db\0");
    }

    #[test]
    fn bad_names_are_explained() {
        let rule = "(a name is 1-63 printable ASCII characters, no spaces)";
        assert_eq!(name(b""), Err(format!("it is empty {rule}")));
        assert_eq!(
            name(&[b'a'; 64]),
            Err(format!("it is 64 bytes long {rule}"))
        );
        let unprintable =
            format!("it contains a space or a non-printable or non-ASCII character {rule}");
        for bad in [
            &b"db server"[..],
            b"db\tx",
            b"\x7f",
            b"caf\xc3\xa9",
            b"\xff\xfe",
            b"a\0b",
        ] {
            assert_eq!(name(bad), Err(unprintable.clone()), "{bad:?}");
        }
    }

    #[test]
    fn pid_ranges() {
        assert_eq!(PidRange::parse("1-1"), Ok(PidRange { min: 1, max: 1 }));
        assert_eq!(
            PidRange::parse("300-4194303"),
            Ok(PidRange {
                min: 300,
                max: 4_194_303
            })
        );
        let rule = "expected A-B with 1 <= A <= B < 4194304, e.g. 300-399".to_string();
        for bad in [
            "",
            "-",
            "5",
            "5-",
            "-5",
            "a-b",
            "+1-2",
            "1-+2",
            " 1-2",
            "1-2-3",
            "1--2",
            "99999999999-1",
            "0-10",
            "10-9",
            "1-4194304",
        ] {
            assert_eq!(PidRange::parse(bad), Err(rule.clone()), "{bad:?}");
        }
        assert_eq!(PidRange { min: 3, max: 9 }.to_string(), "3-9");
    }

    #[test]
    fn table_types_come_from_the_uapi_names() {
        assert_eq!(TableType::from_name("pid"), Some(TableType::PID));
        assert_eq!(TableType::from_name("key"), Some(TableType::KEY));
        assert_eq!(
            TableType::from_name("shm").map(TableType::number),
            Some(uapi::TABLE_SHM)
        );
        assert_eq!(TableType::from_name("PID"), None);
        let names: Vec<_> = TableType::all().map(TableType::name).collect();
        assert_eq!(names, TABLE_NAMES);
    }
}
