//! Every way an image is refused: each error class, with the place it names, and the
//! damage (truncation, bit flips) that must never be mistaken for an image.

mod common;

use appshot_image::*;
use common::*;

/// A change that makes a valid image invalid.
type Change = Box<dyn Fn(&mut Image)>;

fn refused(bytes: &[u8]) -> ImageError {
    match read_image(bytes) {
        Ok(image) => panic!("accepted: {image:?}"),
        Err(err) => err,
    }
}

/// The image encoded, without the validation `write_image` would do.
fn encoded_with(change: impl FnOnce(&mut Image)) -> Vec<u8> {
    let mut image = small_image();
    change(&mut image);
    encode(&image)
}

fn record_place(bytes: &[u8], index: usize) -> Place {
    let offset = record_offsets(bytes)[index];
    Place::Record {
        index: index as u32,
        record_type: u16::from_le_bytes([bytes[offset], bytes[offset + 1]]),
        offset: offset as u64,
    }
}

#[test]
fn every_truncation_is_refused() {
    let bytes = encode(&small_image());
    assert!(bytes.len() > 400, "{}", bytes.len());
    for n in 0..bytes.len() {
        let err = refused(&bytes[..n]);
        assert!(
            matches!(err, ImageError::Truncated { .. }),
            "prefix {n}: {err}"
        );
    }
    assert_eq!(
        refused(&bytes[..100]).to_string(),
        format!(
            "image truncated at byte 24 (file header, file_size): {} bytes needed, only 100 there",
            bytes.len()
        )
    );
    assert_eq!(
        refused(&[]).to_string(),
        "image truncated at byte 0: 32 bytes needed, only 0 there"
    );
}

#[test]
fn every_bit_flip_is_refused() {
    let bytes = encode(&small_image());
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let err = refused(&damaged);
        let expected = match bit / 8 {
            0..=7 => matches!(err, ImageError::BadMagic { .. }),
            8..=11 => matches!(err, ImageError::UnsupportedVersion { .. }),
            24..=31 => matches!(
                err,
                ImageError::Truncated { .. }
                    | ImageError::TrailingBytes { .. }
                    | ImageError::BadHeader { .. }
            ),
            _ => matches!(err, ImageError::ChecksumMismatch { .. }),
        };
        assert!(expected, "bit {bit}: {err}");
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = encode(&small_image());
    bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let err = refused(&bytes);
    assert!(matches!(err, ImageError::BadMagic { .. }));
    assert_eq!(
        err.to_string(),
        "not an appshot image: it starts with [7f, 45, 4c, 46, 02, 01, 01, 00] at byte 0, an image starts with \"APSHTIMG\""
    );
    assert!(matches!(refused(b"hi"), ImageError::BadMagic { .. }));
    assert!(
        matches!(refused(b"APS"), ImageError::Truncated { .. }),
        "a prefix of the magic is a truncated image"
    );
}

#[test]
fn other_versions_say_which() {
    let mut bytes = encode(&small_image());
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    // The version is checked before the checksum: another version may checksum otherwise.
    let err = refused(&bytes);
    assert!(matches!(
        err,
        ImageError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
    assert_eq!(
        err.to_string(),
        "image format version 2 is not supported (this appshotctl reads version 1)"
    );
    fix_up(&mut bytes);
    assert_eq!(
        refused(&bytes).to_string(),
        "image format version 2 is not supported (this appshotctl reads version 1)"
    );
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(
        refused(&bytes).to_string(),
        "image format version 7 is not supported (this appshotctl reads version 1)"
    );
}

#[test]
fn checksum_mismatch_reports_both_values() {
    let bytes = encode(&small_image());
    let mut damaged = bytes.clone();
    let shm = record_offsets(&bytes)[5];
    damaged[shm + 24 + 5 + 80] ^= 0xff; // the first byte of the segment's data
    let stored = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    let computed = crc32fast::hash(&damaged[..damaged.len() - 4]);
    let err = refused(&damaged);
    assert!(
        matches!(err, ImageError::ChecksumMismatch { stored: s, computed: c, .. } if s == stored && c == computed)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "image checksum mismatch: the trailer stores CRC-32 {stored:#010x}, bytes 0..{} give {computed:#010x} (the file is damaged)",
            bytes.len() - 4
        )
    );
}

#[test]
fn trailing_bytes() {
    let mut bytes = encode(&small_image());
    let len = bytes.len();
    bytes.extend_from_slice(b"junk");
    let err = refused(&bytes);
    assert!(matches!(err, ImageError::TrailingBytes { count: 4, .. }));
    assert_eq!(
        err.to_string(),
        format!("4 bytes follow the end of the image at byte {len}")
    );
    // Counted in the header, the junk leaves the end record short of the file's end.
    fix_up(&mut bytes);
    let err = refused(&bytes);
    assert!(matches!(err, ImageError::BadRecord { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the end record must be the last 28 bytes"),
        "{err}"
    );
}

#[test]
fn unknown_optional_record_is_skipped_with_a_notice() {
    let image = small_image();
    let bytes = encode(&image);
    let at = record_offsets(&bytes)[3];
    let future = record(
        0x7001,
        RECORD_OPTIONAL,
        b"future thing",
        &[1, 2, 3, 4],
        b"payload",
    );
    let read = read_image(&insert_record(&bytes, 3, &future)).unwrap();
    assert_eq!(
        read.notices,
        [format!(
            "skipped optional record of type 0x7001 (47 bytes) at byte {at}, record 3"
        )]
    );
    assert_eq!(
        Image {
            notices: Vec::new(),
            ..read
        },
        image
    );
    // Other flag bits of an unknown optional record do not matter.
    let future = record(0x7001, RECORD_OPTIONAL | 0x8000, b"", &[], &[]);
    assert_eq!(
        read_image(&insert_before_end(&bytes, &future))
            .unwrap()
            .notices
            .len(),
        1
    );
}

#[test]
fn unknown_required_record_is_refused() {
    let bytes = encode(&small_image());
    let future = record(0x7001, 0, b"future thing", &[1, 2, 3, 4], b"payload");
    let with = insert_record(&bytes, 3, &future);
    let err = refused(&with);
    assert!(matches!(
        err,
        ImageError::UnknownRequiredRecord {
            record_type: 0x7001,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "unknown required record type 0x7001 in record 3 (type 0x7001) at byte {}: this appshotctl cannot restore what it holds (written by a newer appshotctl?)",
            record_offsets(&bytes)[3]
        )
    );
}

#[test]
fn longer_descriptors_are_read_shorter_ones_refused() {
    let image = small_image();
    let bytes = encode(&image);
    let sem_at = record_offsets(&bytes)[4];
    let name = &bytes[sem_at + 24..sem_at + 29];
    assert_eq!(name, b"sem 1");
    let descriptor = &bytes[sem_at + 29..sem_at + 29 + 56];
    let data = &bytes[sem_at + 29 + 56..sem_at + 29 + 56 + 8];
    let mut grown = descriptor.to_vec();
    grown.extend_from_slice(&[0xee; 8]);
    let later = replace_record(
        &bytes,
        4,
        &record(record_type::SEM_SET, 0, name, &grown, data),
    );
    assert_eq!(read_image(&later).unwrap(), image);
    let short = replace_record(
        &bytes,
        4,
        &record(record_type::SEM_SET, 0, name, &descriptor[..55], data),
    );
    let err = refused(&short);
    assert!(
        err.to_string()
            .contains("descriptor of 55 bytes, version 1 defines 56"),
        "{err}"
    );
    assert_eq!(
        match err {
            ImageError::BadRecord { place, .. } => place,
            other => panic!("{other}"),
        },
        record_place(&bytes, 4)
    );
}

#[test]
fn known_record_marked_optional_is_read() {
    let image = small_image();
    let bytes = encode(&image);
    let mut marked = bytes.clone();
    let sem_at = record_offsets(&bytes)[4];
    marked[sem_at + 2] = RECORD_OPTIONAL as u8;
    fix_up(&mut marked);
    assert_eq!(read_image(&marked).unwrap(), image);
    marked[sem_at + 2] = 2;
    fix_up(&mut marked);
    assert!(refused(&marked)
        .to_string()
        .contains("record flags 0x2 are not defined"));
}

#[test]
fn duplicates_are_refused_naming_the_record() {
    let bytes = encoded_with(|i| {
        let mut second = i.sems[0].clone();
        second.perm.key = 0;
        i.sems.push(second);
    });
    let err = refused(&bytes);
    assert!(
        matches!(&err, ImageError::Duplicate { what: "sem set virtual id", id, place } if id == "1" && *place == record_place(&bytes, 5))
    );
    assert_eq!(
        err.to_string(),
        format!(
            "duplicate sem set virtual id 1 in record 5 (sem set) at byte {}",
            record_offsets(&bytes)[5]
        )
    );

    let cases: [(&str, Change); 7] = [
        (
            "sem set key",
            Box::new(|i| {
                let mut second = i.sems[0].clone();
                second.virtual_id = 2;
                i.tables[1].entries.push(entry(2, 8, 0));
                i.sems.push(second);
            }),
        ),
        (
            "virtual pid",
            Box::new(|i| i.processes.push(i.processes[0].clone())),
        ),
        (
            "virtual tid",
            Box::new(|i| {
                let mut other = i.processes[0].clone();
                other.virtual_pid = 11;
                other.threads = vec![11, 10];
                i.processes.push(other);
            }),
        ),
        (
            "table of kind",
            Box::new(|i| i.tables.push(i.tables[0].clone())),
        ),
        (
            "pid table virtual id",
            Box::new(|i| i.tables[0].entries.push(entry(10, 99, 99))),
        ),
        (
            "key table virtual key",
            Box::new(|i| i.tables[2].entries.push(entry(9, 1, 0))),
        ),
        (
            "msg queue virtual id",
            Box::new(|i| i.msgs.push(i.msgs[0].clone())),
        ),
    ];
    for (what, change) in cases {
        let err = refused(&encoded_with(change));
        assert!(
            matches!(&err, ImageError::Duplicate { what: w, .. } if *w == what),
            "{what}: {err}"
        );
    }

    // A second app record.
    let bytes = encode(&small_image());
    let app_end = record_offsets(&bytes)[1];
    let app = bytes[32..app_end].to_vec();
    let err = refused(&insert_before_end(&bytes, &app));
    assert!(
        matches!(
            err,
            ImageError::Duplicate {
                what: "app record",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("duplicate app record \"s\" in record 8 (app)"),
        "{err}"
    );
}

#[test]
fn out_of_range_values_are_refused() {
    let cases: Vec<(&str, i64, Change)> = vec![
        (
            "sem set virtual id",
            -1,
            Box::new(|i| i.sems[0].virtual_id = -1),
        ),
        (
            "virtual pid",
            0,
            Box::new(|i| i.processes[0].virtual_pid = 0),
        ),
        (
            "virtual pid",
            4_194_304,
            Box::new(|i| {
                i.processes[0].virtual_pid = 4_194_304;
                i.processes[0].threads = vec![4_194_304];
            }),
        ),
        (
            "virtual tid",
            400,
            Box::new(|i| {
                i.app.pid_range = Some((1, 100));
                i.processes[0].threads.push(400);
            }),
        ),
        (
            "pid table virtual id",
            10,
            Box::new(|i| i.app.pid_range = Some((20, 30))),
        ),
        (
            "virtual pid",
            10,
            Box::new(|i| {
                i.app.pid_range = Some((20, 30));
                i.tables[0].entries.clear();
            }),
        ),
        ("semaphore count", 0, Box::new(|i| i.sems[0].sems.clear())),
        (
            "semaphore count",
            32001,
            Box::new(|i| {
                i.sems[0].sems = vec![
                    Semaphore {
                        value: 0,
                        last_pid: 0
                    };
                    32001
                ]
            }),
        ),
        (
            "semaphore value",
            32768,
            Box::new(|i| i.sems[0].sems[0].value = 32768),
        ),
        (
            "semaphore last_pid",
            4_194_304,
            Box::new(|i| i.sems[0].sems[0].last_pid = 4_194_304),
        ),
        (
            "message type",
            0,
            Box::new(|i| i.msgs[0].messages[0].mtype = 0),
        ),
        (
            "message type",
            -3,
            Box::new(|i| i.msgs[0].messages[0].mtype = -3),
        ),
        (
            "shm segment size",
            0,
            Box::new(|i| {
                i.shms[0].size = 0;
                i.shms[0].data.clear();
            }),
        ),
        (
            "virtual ppid",
            5_000_000,
            Box::new(|i| i.processes[0].virtual_ppid = 5_000_000),
        ),
        (
            "pid table virtual id",
            0,
            Box::new(|i| i.tables[0].entries[0].virtual_id = 0),
        ),
        (
            "sem table virtual id",
            1 << 31,
            Box::new(|i| i.tables[1].entries[0].virtual_id = 1 << 31),
        ),
        (
            "key table virtual key",
            0,
            Box::new(|i| i.tables[2].entries[0].virtual_id = 0),
        ),
    ];
    for (what, value, change) in cases {
        let bytes = encoded_with(change);
        let err = refused(&bytes);
        assert!(
            matches!(&err, ImageError::OutOfRange { what: w, value: v, place: Place::Record { .. }, .. } if *w == what && *v == value),
            "{what} {value}: {err}"
        );
    }
    let err = refused(&encoded_with(|i| i.sems[0].sems[0].value = 40000));
    assert_eq!(
        err.to_string(),
        format!(
            "semaphore value 40000 out of range in record 4 (sem set) at byte {} (allowed: 0..=32767)",
            record_offsets(&encode(&small_image()))[4]
        )
    );
}

#[test]
fn other_rule_violations_are_refused() {
    let bad_record: Vec<(&str, Change)> = vec![
        ("app name", Box::new(|i| i.app.name = "has space".into())),
        ("app name", Box::new(|i| i.app.name = String::new())),
        ("app name", Box::new(|i| i.app.name = "x".repeat(64))),
        (
            "virtual PID range 5-3",
            Box::new(|i| i.app.pid_range = Some((5, 3))),
        ),
        (
            "virtual PID range 0-3",
            Box::new(|i| i.app.pid_range = Some((0, 3))),
        ),
        (
            "virtual PID range 1-4194304",
            Box::new(|i| i.app.pid_range = Some((1, 4_194_304))),
        ),
        ("NUL", Box::new(|i| i.app.kernel_release = "6\0".into())),
        (
            "does not hold the main thread",
            Box::new(|i| i.processes[0].threads = vec![]),
        ),
        (
            "argument 1 contains a NUL",
            Box::new(|i| i.processes[0].cmdline[1] = b"a\0b".to_vec()),
        ),
        (
            "executable path contains a NUL",
            Box::new(|i| i.processes[0].exe = b"/\0".to_vec()),
        ),
        (
            "the segment's size is 4 but the record has 3 data bytes",
            Box::new(|i| i.shms[0].size = 4),
        ),
    ];
    for (why, change) in bad_record {
        let err = refused(&encoded_with(change));
        assert!(
            matches!(err, ImageError::BadRecord { .. }) && err.to_string().contains(why),
            "{why}: {err}"
        );
    }
    let too_large: Vec<(&str, Change)> = vec![
        (
            "kernel release",
            Box::new(|i| i.app.kernel_release = "6".repeat(65)),
        ),
        (
            "message",
            Box::new(|i| i.msgs[0].messages[0].data = vec![0; (1 << 20) + 1]),
        ),
        (
            "executable path",
            Box::new(|i| i.processes[0].exe = vec![b'/'; 4097]),
        ),
        (
            "argument list",
            Box::new(|i| i.processes[0].cmdline = vec![vec![b'a'; 1 << 20]; 17]),
        ),
    ];
    for (what, change) in too_large {
        let err = refused(&encoded_with(change));
        assert!(
            matches!(err, ImageError::TooLarge { what: w, .. } if w == what),
            "{what}: {err}"
        );
    }
}

#[test]
fn sysv_objects_must_be_in_their_table() {
    let bytes = encoded_with(|i| {
        i.sems[0].virtual_id = 3;
    });
    let err = refused(&bytes);
    assert!(
        matches!(
            err,
            ImageError::MissingFromTable {
                what: "sem set",
                id: 3,
                table: "sem",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("sem set virtual id 3 in record 4 (sem set) at byte"),
        "{err}"
    );
    // Without a shm table, segments are not checked against one.
    let image = small_image();
    assert!(image.tables.iter().all(|t| t.kind != TableKind::Shm));
    read_image(&encode(&image)).unwrap();
}

#[test]
fn the_app_record_comes_first() {
    let bytes = encode(&small_image());
    let without_app = replace_record(&bytes, 0, &[]);
    let err = refused(&without_app);
    assert!(matches!(err, ImageError::MissingApp { .. }), "{err}");
    assert_eq!(err.to_string(), "image has no app record: the first record in record 0 (table) at byte 32 must be the app record");
}

#[test]
fn header_fields_are_checked() {
    let bytes = encode(&small_image());
    for (offset, value, text) in [
        (12, 40u32, "header_size is 40, version 1 has 32"),
        (16, 1, "flags 0x1 are not defined in version 1"),
        (20, 1, "record_count 1 is below 2"),
        (20, 99, "record_count is 99 but the file holds 9 records"),
    ] {
        let mut changed = bytes.clone();
        changed[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        fix_up(&mut changed);
        let err = refused(&changed);
        assert!(
            matches!(err, ImageError::BadHeader { .. }) && err.to_string().contains(text),
            "{text}: {err}"
        );
    }
    let mut tiny = bytes.clone();
    tiny[24..32].copy_from_slice(&10u64.to_le_bytes());
    assert!(refused(&tiny)
        .to_string()
        .contains("file_size 10 is below the smallest image (116 bytes)"));
}

#[test]
fn record_structure_is_checked() {
    let bytes = encode(&small_image());
    let offsets = record_offsets(&bytes);
    let end = *offsets.last().unwrap();
    let cases: Vec<(usize, Vec<u8>, &str)> = vec![
        // A reserved field of a record header.
        (
            offsets[1] + 6,
            vec![1],
            "a reserved field of the record header is not zero",
        ),
        // A semaphore's reserved field.
        (
            offsets[4] + 24 + 5 + 56 + 2,
            vec![1],
            "a semaphore's reserved field is 0x1, must be 0",
        ),
        // The table kind.
        (offsets[1] + 24 + 9, vec![9], "unknown table kind 9"),
        // The end record's descriptor length.
        (
            end + 8,
            vec![3],
            "the end record must have flags 0, no name, a 4-byte descriptor and no data",
        ),
        // The app's flags.
        (offsets[0] + 24 + 1, vec![2], "undefined flags"),
        // pid_min without a range.
        (
            offsets[0] + 24 + 1 + 4,
            vec![1],
            "pid_min without a PID range",
        ),
        // A name longer than 255 bytes.
        (
            offsets[0] + 5,
            vec![1],
            "name of 257 bytes, the limit is 255",
        ),
    ];
    for (offset, patch, text) in cases {
        let mut changed = bytes.clone();
        changed[offset..offset + patch.len()].copy_from_slice(&patch);
        fix_up(&mut changed);
        let err = refused(&changed);
        let shown = err.to_string();
        assert!(
            matches!(err, ImageError::BadRecord { .. }) && shown.contains(text),
            "{text}: {shown}"
        );
    }
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    let bytes = encode(&small_image());
    let offsets = record_offsets(&bytes);
    let descriptor = |index: usize| descriptor_offset(&bytes, &offsets, index);
    let cases: Vec<(usize, Vec<u8>, &str)> = vec![
        (
            descriptor(1) + 4,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295 table entries take 51539607540 data bytes",
        ),
        (
            descriptor(4) + 48,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295 semaphores take",
        ),
        (
            descriptor(5) + 32,
            u64::MAX.to_le_bytes().to_vec(),
            "the segment's size is 18446744073709551615",
        ),
        (
            descriptor(6) + 72,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295 messages cannot fit",
        ),
        (
            descriptor(7) + 16,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295 threads",
        ),
        (
            descriptor(7) + 20,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295-byte path",
        ),
        (
            descriptor(7) + 24,
            u32::MAX.to_le_bytes().to_vec(),
            "4294967295 arguments",
        ),
        (
            offsets[5] + 16,
            u64::MAX.to_le_bytes().to_vec(),
            "image truncated in record 5 (shm segment)",
        ),
        (
            offsets[5] + 8,
            u32::MAX.to_le_bytes().to_vec(),
            "image truncated in record 5 (shm segment)",
        ),
        (
            offsets[5] + 4,
            u16::MAX.to_le_bytes().to_vec(),
            "image truncated in record 5 (shm segment)",
        ),
    ];
    for (offset, patch, text) in cases {
        let mut changed = bytes.clone();
        changed[offset..offset + patch.len()].copy_from_slice(&patch);
        fix_up(&mut changed);
        let shown = refused(&changed).to_string();
        assert!(shown.contains(text), "{text}: {shown}");
    }
}
