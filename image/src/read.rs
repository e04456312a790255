//! The reader: bytes to a validated [`Image`], or a refusal that says where and why.
//!
//! Order of checks, each before the next: magic, version, the header's file size against
//! the input's length, the trailer's CRC-32 over everything before it, the rest of the
//! file header, then the records one by one (structure: lengths, reserved fields, counts
//! against the bytes present; `decode.rs` decodes each known record's descriptor and
//! data), then [`validate_with`] on the result, which names the offending record.
//!
//! Past the magic, the version and the size, nothing is parsed from bytes the checksum
//! has not vouched for; and no buffer is allocated before the bytes that justify it are
//! known to be there: every record length is checked against the bytes left, and every
//! count against its record's data length, first. The reader never panics: lengths are
//! added with checked 64-bit arithmetic before any slice is taken.

use zerocopy::FromBytes;

use crate::decode::{
    parse_app, parse_msg_queue, parse_process, parse_sem_set, parse_shm, parse_table,
};
use crate::error::{ImageError, Place};
use crate::layout::*;
use crate::limits::RECORD_NAME_MAX;
use crate::model::*;
use crate::validate::{validate_with, Item};
use crate::FORMAT_VERSION;

/// Reads an image from its bytes, with full validation (`docs/image-format.md`).
pub fn read_image(bytes: &[u8]) -> Result<Image, ImageError> {
    let header = check_file_header(bytes)?;
    let mut parts = Parts::default();
    let mut offset = FILE_HEADER_LEN;
    let mut index: u32 = 0;
    // The end record takes the last END_RECORD_LEN bytes; the others come before it.
    let end_offset = bytes.len() - END_RECORD_LEN;
    loop {
        let record = next_record(bytes, offset, index, end_offset)?;
        if index == 0 && record.record_type != record_type::APP {
            return Err(ImageError::MissingApp {
                place: record.place.into(),
            });
        }
        if record.record_type == record_type::END {
            check_end(
                &record,
                offset,
                end_offset,
                index,
                header.record_count.get(),
            )?;
            break;
        }
        parts.add(record)?;
        offset += record.len;
        index = index.saturating_add(1);
    }
    parts.finish()
}

/// Checks the file header and the checksum; returns the header.
fn check_file_header(bytes: &[u8]) -> Result<FileHeader, ImageError> {
    let len = bytes.len() as u64;
    let start = &bytes[..bytes.len().min(MAGIC.len())];
    if start != &MAGIC[..start.len()] {
        return Err(ImageError::BadMagic {
            found: start.to_vec(),
        });
    }
    let Ok((header, _)) = FileHeader::read_from_prefix(bytes) else {
        return Err(ImageError::Truncated {
            place: Place::Byte(0),
            needed: FILE_HEADER_LEN as u64,
            available: len,
        });
    };
    if header.version.get() != FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            found: header.version.get(),
            supported: FORMAT_VERSION,
        });
    }
    let file_size = header.file_size.get();
    let smallest =
        (FILE_HEADER_LEN + RECORD_HEADER_LEN + size_of::<AppDescriptor>() + END_RECORD_LEN) as u64;
    if file_size < smallest {
        return Err(ImageError::BadHeader {
            place: Place::Header {
                field: "file_size",
                offset: 24,
            },
            why: format!("file_size {file_size} is below the smallest image ({smallest} bytes)"),
        });
    }
    if file_size > len {
        return Err(ImageError::Truncated {
            place: Place::Header {
                field: "file_size",
                offset: 24,
            },
            needed: file_size,
            available: len,
        });
    }
    if file_size < len {
        return Err(ImageError::TrailingBytes {
            offset: file_size,
            count: len - file_size,
        });
    }
    // From here on the input is at least `smallest` bytes long.
    let (covered, stored) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(ImageError::ChecksumMismatch {
            stored,
            computed,
            covered: covered.len() as u64,
        });
    }
    let bad_header = |field, offset, why| ImageError::BadHeader {
        place: Place::Header { field, offset },
        why,
    };
    if header.header_size.get() != FILE_HEADER_LEN as u32 {
        return Err(bad_header(
            "header_size",
            12,
            format!(
                "header_size is {}, version 1 has 32",
                header.header_size.get()
            ),
        ));
    }
    if header.flags.get() != 0 {
        return Err(bad_header(
            "flags",
            16,
            format!(
                "flags {:#x} are not defined in version 1",
                header.flags.get()
            ),
        ));
    }
    if header.record_count.get() < 2 {
        return Err(bad_header(
            "record_count",
            20,
            format!(
                "record_count {} is below 2 (the app and end records)",
                header.record_count.get()
            ),
        ));
    }
    Ok(header)
}

/// One record's header and the three parts of its body.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) record_type: u16,
    pub(crate) flags: u16,
    pub(crate) name: &'a [u8],
    pub(crate) descriptor: &'a [u8],
    pub(crate) data: &'a [u8],
    /// The whole record's size.
    pub(crate) len: usize,
    pub(crate) place: RecordPlace,
}

/// A [`Place::Record`] that is `Copy` (the record's coordinates).
#[derive(Clone, Copy)]
pub(crate) struct RecordPlace {
    pub(crate) index: u32,
    pub(crate) record_type: u16,
    pub(crate) offset: u64,
}

impl From<RecordPlace> for Place {
    fn from(p: RecordPlace) -> Place {
        Place::Record {
            index: p.index,
            record_type: p.record_type,
            offset: p.offset,
        }
    }
}

pub(crate) fn bad_record(place: impl Into<Place>, why: String) -> ImageError {
    ImageError::BadRecord {
        place: place.into(),
        why,
    }
}

/// Cuts the record at `offset` out of `bytes`; it must end by `end_offset` unless it is
/// the end record.
fn next_record(
    bytes: &[u8],
    offset: usize,
    index: u32,
    end_offset: usize,
) -> Result<Record<'_>, ImageError> {
    let rest = &bytes[offset..];
    let Ok((header, body)) = RecordHeader::read_from_prefix(rest) else {
        return Err(ImageError::Truncated {
            place: Place::Byte(offset as u64),
            needed: RECORD_HEADER_LEN as u64,
            available: rest.len() as u64,
        });
    };
    let record_type = header.record_type.get();
    let place = RecordPlace {
        index,
        record_type,
        offset: offset as u64,
    };
    if header.reserved0.get() != 0 || header.reserved1.get() != 0 {
        return Err(bad_record(
            place,
            "a reserved field of the record header is not zero".to_owned(),
        ));
    }
    let name_len = usize::from(header.name_len.get());
    let descriptor_len = u64::from(header.descriptor_len.get());
    let data_len = header.data_len.get();
    let body_len = (name_len as u64)
        .checked_add(descriptor_len)
        .and_then(|n| n.checked_add(data_len));
    // Records other than the end record must leave the end record's bytes alone.
    let room = if record_type == record_type::END {
        rest.len()
    } else {
        end_offset.saturating_sub(offset)
    };
    let available = room.saturating_sub(RECORD_HEADER_LEN) as u64;
    let body_len = match body_len {
        Some(n) if n <= available => n as usize,
        _ => {
            return Err(ImageError::Truncated {
                place: place.into(),
                needed: (RECORD_HEADER_LEN as u64).saturating_add(body_len.unwrap_or(u64::MAX)),
                available: room as u64,
            });
        }
    };
    if name_len > RECORD_NAME_MAX {
        return Err(bad_record(
            place,
            format!("name of {name_len} bytes, the limit is {RECORD_NAME_MAX}"),
        ));
    }
    let (name, after_name) = body.split_at(name_len);
    let (descriptor, after_descriptor) = after_name.split_at(descriptor_len as usize);
    let data = &after_descriptor[..data_len as usize];
    debug_assert_eq!(name.len() + descriptor.len() + data.len(), body_len);
    Ok(Record {
        record_type,
        flags: header.flags.get(),
        name,
        descriptor,
        data,
        len: RECORD_HEADER_LEN + body_len,
        place,
    })
}

fn check_end(
    record: &Record<'_>,
    offset: usize,
    end_offset: usize,
    index: u32,
    record_count: u32,
) -> Result<(), ImageError> {
    if offset != end_offset {
        return Err(bad_record(
            record.place,
            format!("the end record must be the last {END_RECORD_LEN} bytes of the file, which start at byte {end_offset}"),
        ));
    }
    if record.flags != 0
        || !record.name.is_empty()
        || record.descriptor.len() != size_of::<EndDescriptor>()
        || !record.data.is_empty()
    {
        return Err(bad_record(
            record.place,
            "the end record must have flags 0, no name, a 4-byte descriptor and no data".to_owned(),
        ));
    }
    let records = u64::from(index) + 1;
    if records != u64::from(record_count) {
        return Err(ImageError::BadHeader {
            place: Place::Header {
                field: "record_count",
                offset: 20,
            },
            why: format!("record_count is {record_count} but the file holds {records} records"),
        });
    }
    Ok(())
}

/// What the records gave so far, with where each element came from.
#[derive(Default)]
struct Parts {
    app: Option<(AppRecord, Place)>,
    tables: Vec<(TableRecord, Place)>,
    sems: Vec<(SemSet, Place)>,
    shms: Vec<(ShmSegment, Place)>,
    msgs: Vec<(MsgQueue, Place)>,
    processes: Vec<(ProcessRecord, Place)>,
    notices: Vec<String>,
}

impl Parts {
    fn add(&mut self, record: Record<'_>) -> Result<(), ImageError> {
        let known = descriptor_len_v1(record.record_type).is_some();
        if !known {
            if record.flags & RECORD_OPTIONAL == 0 {
                return Err(ImageError::UnknownRequiredRecord {
                    record_type: record.record_type,
                    place: record.place.into(),
                });
            }
            self.notices.push(format!(
                "skipped optional record of type {:#06x} ({} bytes) at byte {}, record {}",
                record.record_type, record.len, record.place.offset, record.place.index
            ));
            return Ok(());
        }
        if record.flags & !RECORD_OPTIONAL != 0 {
            return Err(bad_record(
                record.place,
                format!(
                    "record flags {:#x} are not defined in version 1",
                    record.flags
                ),
            ));
        }
        let place = Place::from(record.place);
        match record.record_type {
            record_type::APP => {
                if self.app.is_some() {
                    let name = String::from_utf8_lossy(record.name);
                    return Err(ImageError::Duplicate {
                        what: "app record",
                        id: format!("{name:?}"),
                        place,
                    });
                }
                self.app = Some((parse_app(&record)?, place));
            }
            record_type::TABLE => self.tables.push((parse_table(&record)?, place)),
            record_type::SEM_SET => self.sems.push((parse_sem_set(&record)?, place)),
            record_type::SHM_SEGMENT => self.shms.push((parse_shm(&record)?, place)),
            record_type::MSG_QUEUE => self.msgs.push((parse_msg_queue(&record)?, place)),
            record_type::PROCESS => self.processes.push((parse_process(&record)?, place)),
            // The end record is handled by the caller; descriptor_len_v1 knows no other type.
            _ => return Err(bad_record(place, "unexpected record type".to_owned())),
        }
        Ok(())
    }

    /// Builds the image and validates it, naming records in refusals.
    fn finish(self) -> Result<Image, ImageError> {
        fn split<T>(parts: Vec<(T, Place)>) -> (Vec<T>, Vec<Place>) {
            parts.into_iter().unzip()
        }
        let Some((app, app_place)) = self.app else {
            return Err(ImageError::MissingApp {
                place: Place::Byte(FILE_HEADER_LEN as u64),
            });
        };
        let (tables, table_places) = split(self.tables);
        let (sems, sem_places) = split(self.sems);
        let (shms, shm_places) = split(self.shms);
        let (msgs, msg_places) = split(self.msgs);
        let (processes, process_places) = split(self.processes);
        let image = Image {
            app,
            tables,
            sems,
            shms,
            msgs,
            processes,
            notices: self.notices,
        };
        let locate = |item: Item| match item {
            Item::App => app_place.clone(),
            Item::Table(i) => table_places[i].clone(),
            Item::Sem(i) => sem_places[i].clone(),
            Item::Shm(i) => shm_places[i].clone(),
            Item::Msg(i) => msg_places[i].clone(),
            Item::Process(i) => process_places[i].clone(),
        };
        validate_with(&image, &locate)?;
        Ok(image)
    }
}
