//! How the model's byte buffers and tuples look in `inspect --json`.
//!
//! Segment and message contents can be gigabytes, so JSON carries a summary of them
//! (length, CRC-32, hex of the first bytes) rather than the bytes. Paths and arguments are
//! raw bytes that are almost always text, so they become strings, with invalid UTF-8
//! replaced by U+FFFD. The field names here are part of the `--json` output: keep them
//! stable.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serializer;

/// How many leading bytes a summary shows in hex.
pub(crate) const PREVIEW_BYTES: usize = 32;

/// The CRC-32 `inspect` reports for a byte buffer (the same algorithm as the trailer's).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Lowercase hex of the first [`PREVIEW_BYTES`] bytes.
pub(crate) fn hex_preview(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(PREVIEW_BYTES)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `{"len": N, "crc32": C, "preview_hex": "..."}`.
pub(crate) fn byte_summary<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(3))?;
    map.serialize_entry("len", &bytes.len())?;
    map.serialize_entry("crc32", &crc32(bytes))?;
    map.serialize_entry("preview_hex", &hex_preview(bytes))?;
    map.end()
}

/// The bytes as a string, invalid UTF-8 replaced.
pub(crate) fn lossy_string<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

/// Each byte string as a string, invalid UTF-8 replaced.
pub(crate) fn lossy_strings<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(list.len()))?;
    for bytes in list {
        seq.serialize_element(&String::from_utf8_lossy(bytes))?;
    }
    seq.end()
}

/// `{"min": A, "max": B}` or `null`.
pub(crate) fn pid_range<S: Serializer>(
    range: &Option<(u32, u32)>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match range {
        None => s.serialize_none(),
        Some((min, max)) => {
            let mut map = s.serialize_map(Some(2))?;
            map.serialize_entry("min", min)?;
            map.serialize_entry("max", max)?;
            map.end()
        }
    }
}
