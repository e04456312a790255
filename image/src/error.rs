//! Why an image was refused, and where.
//!
//! Every refusal names a [`Place`]: a byte offset in the file, a record (its index, type
//! and offset), or, for an in-memory image that [`crate::Image::validate`] refuses, the
//! element (`sems[2] (virtual id 5)`). The messages are what appshotctl prints after
//! `appshotctl: <file>: `, so they are one line and say what was found and what was
//! expected.

use std::fmt;

use crate::layout::record_type_name;

/// Where in an image a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A byte offset in the file, outside any record or before records are known.
    Byte(u64),
    /// A field of the file header.
    Header {
        /// The field's name, as in `docs/image-format.md`.
        field: &'static str,
        /// Its offset.
        offset: u64,
    },
    /// A record of the file.
    Record {
        /// Its index: 0 is the first record after the file header.
        index: u32,
        /// Its type number.
        record_type: u16,
        /// The offset of its record header.
        offset: u64,
    },
    /// An element of an in-memory image, such as `sems[2] (virtual id 5)`.
    Model(String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Byte(offset) => write!(f, "at byte {offset}"),
            Place::Header { field, offset } => write!(f, "at byte {offset} (file header, {field})"),
            Place::Record {
                index,
                record_type,
                offset,
            } => {
                write!(
                    f,
                    "in record {index} ({}) at byte {offset}",
                    record_type_name(*record_type)
                )
            }
            Place::Model(element) => write!(f, "in {element}"),
        }
    }
}

/// Why an image cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file, or a record, ends before the bytes it announces.
    #[error("image truncated {place}: {needed} bytes needed, only {available} there")]
    Truncated {
        /// What announced the bytes.
        place: Place,
        /// How many bytes it announced (from `place` on, or for the whole file).
        needed: u64,
        /// How many there are.
        available: u64,
    },
    /// The file does not start with the magic.
    #[error("not an appshot image: it starts with {found:02x?} at byte 0, an image starts with \"APSHTIMG\"")]
    BadMagic {
        /// The first bytes of the file (at most 8).
        found: Vec<u8>,
    },
    /// The file has another format version.
    #[error(
        "image format version {found} is not supported (this appshotctl reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file header.
        found: u32,
        /// The version this reader reads.
        supported: u32,
    },
    /// A file header field holds a value version 1 does not allow.
    #[error("bad image header {place}: {why}")]
    BadHeader {
        /// The field.
        place: Place,
        /// What is wrong with it.
        why: String,
    },
    /// The trailer's CRC-32 does not match the file's bytes: the file is damaged.
    #[error("image checksum mismatch: the trailer stores CRC-32 {stored:#010x}, bytes 0..{covered} give {computed:#010x} (the file is damaged)")]
    ChecksumMismatch {
        /// The CRC-32 in the trailer (the last 4 bytes).
        stored: u32,
        /// The CRC-32 of the bytes before it.
        computed: u32,
        /// How many bytes the checksum covers (the file size less 4).
        covered: u64,
    },
    /// A record of a type this reader does not know, not marked optional.
    #[error("unknown required record type {record_type:#06x} {place}: this appshotctl cannot restore what it holds (written by a newer appshotctl?)")]
    UnknownRequiredRecord {
        /// The record's type number.
        record_type: u16,
        /// The record.
        place: Place,
    },
    /// A record whose structure is wrong: lengths that disagree, a reserved field that is
    /// not zero, a value of the wrong form.
    #[error("bad record {place}: {why}")]
    BadRecord {
        /// The record.
        place: Place,
        /// What is wrong with it.
        why: String,
    },
    /// Two things that must be unique are not.
    #[error("duplicate {what} {id} {place}")]
    Duplicate {
        /// What is duplicated ("sem set virtual id", "app record"...).
        what: &'static str,
        /// Its value.
        id: String,
        /// The second occurrence.
        place: Place,
    },
    /// A value outside its allowed range.
    #[error("{what} {value} out of range {place} (allowed: {allowed})")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: i64,
        /// The allowed values.
        allowed: &'static str,
        place: Place,
    },
    /// A size above its limit.
    #[error("{what} of {size} bytes too large {place} (limit {limit} bytes)")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        place: Place,
    },
    /// A SysV object whose virtual ID is missing from its translation table.
    #[error("{what} virtual id {id} {place} has no entry in the image's {table} table")]
    MissingFromTable {
        /// The object kind ("sem set"...).
        what: &'static str,
        /// Its virtual ID.
        id: i32,
        /// The table's kind name.
        table: &'static str,
        place: Place,
    },
    /// The first record is not the app record.
    #[error("image has no app record: the first record {place} must be the app record")]
    MissingApp {
        /// The first record.
        place: Place,
    },
    /// Bytes follow the end of the image.
    #[error("{count} bytes follow the end of the image at byte {offset}")]
    TrailingBytes {
        /// Where the image ends (the header's `file_size`).
        offset: u64,
        /// How many bytes follow.
        count: u64,
    },
    /// The writer's output failed.
    #[error("writing the image: {0}")]
    Io(#[from] std::io::Error),
}
