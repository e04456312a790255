//! Images survive write then read unchanged, the writer streams, and it refuses to write
//! what the reader would refuse.

mod common;

use std::io::{self, Write};

use appshot_image::*;
use common::*;

#[test]
fn rich_image_round_trips() {
    let image = rich_image();
    image.validate().unwrap();
    let mut file = Vec::new();
    write_image(&image, &mut file).unwrap();
    assert_eq!(
        file,
        encode(&image),
        "write_image and encode give the same bytes"
    );
    let back = read_image(&file).unwrap();
    assert_eq!(back, image);
    assert!(back.notices.is_empty());
}

#[test]
fn small_and_example_images_round_trip() {
    for image in [small_image(), example_image()] {
        assert_eq!(read_image(&encode(&image)).unwrap(), image);
    }
}

#[test]
fn minimal_image_is_app_and_end() {
    let mut image = small_image();
    image.tables.clear();
    image.sems.clear();
    image.shms.clear();
    image.msgs.clear();
    image.processes.clear();
    image.app.kernel_release.clear();
    let bytes = encode(&image);
    // Header, app record (name "s", 32-byte descriptor, no data), end record.
    assert_eq!(bytes.len(), 32 + 24 + 1 + 32 + 28);
    assert_eq!(&bytes[..8], b"APSHTIMG");
    assert_eq!(read_image(&bytes).unwrap(), image);
}

#[test]
fn records_are_written_in_model_order() {
    let bytes = encode(&rich_image());
    let types: Vec<u16> = record_offsets(&bytes)
        .iter()
        .map(|&o| u16::from_le_bytes([bytes[o], bytes[o + 1]]))
        .collect();
    let mut expected = vec![record_type::APP];
    expected.extend([record_type::TABLE; 5]);
    expected.extend([record_type::SEM_SET; 4]);
    expected.extend([record_type::SHM_SEGMENT; 3]);
    expected.extend([record_type::MSG_QUEUE; 3]);
    expected.extend([record_type::PROCESS; 10]);
    expected.push(record_type::END);
    assert_eq!(types, expected);
}

#[test]
fn notices_are_not_written() {
    let mut image = small_image();
    image.notices.push("skipped something".into());
    let back = read_image(&encode(&image)).unwrap();
    assert!(back.notices.is_empty());
}

/// Records the size of every write it is given.
#[derive(Default)]
struct WriteSizes {
    sizes: Vec<usize>,
    bytes: Vec<u8>,
}

impl Write for WriteSizes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sizes.push(buf.len());
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn large_segment_is_written_in_one_piece_from_the_model() {
    let image = rich_image();
    let mut sink = WriteSizes::default();
    write_image(&image, &mut sink).unwrap();
    // The 1 MiB segment reaches the output as one write (not copied through a buffer);
    // everything else goes out in buffered pieces of at most 64 KiB.
    assert!(
        sink.sizes.contains(&(1 << 20)),
        "write sizes: {:?}",
        sink.sizes
    );
    assert!(sink.sizes.iter().all(|&n| n == 1 << 20 || n <= 64 * 1024));
    assert_eq!(sink.bytes, encode(&image));
}

struct FailingWriter;

impl Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_reported() {
    let err = write_image(&small_image(), &mut FailingWriter).unwrap_err();
    assert!(matches!(err, ImageError::Io(_)), "{err}");
    assert_eq!(err.to_string(), "writing the image: disk full");
}

#[test]
fn invalid_images_are_not_written() {
    let mut image = small_image();
    image.sems[0].sems[0].value = 40000;
    let mut sink = WriteSizes::default();
    let err = write_image(&image, &mut sink).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::OutOfRange {
                what: "semaphore value",
                value: 40000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "semaphore value 40000 out of range in sems[0] (virtual id 1) (allowed: 0..=32767)"
    );
    assert!(sink.bytes.is_empty(), "nothing was written");
}

#[test]
fn json_summarizes_bytes() {
    let json = inspect_json(&example_image());
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["app"]["name"], "dbserver");
    assert_eq!(
        json["app"]["pid_range"],
        serde_json::json!({"min": 300, "max": 399})
    );
    assert_eq!(json["tables"][0]["kind"], "pid");
    let data = &json["shms"][0]["data"];
    assert_eq!(data["len"], 4096);
    assert_eq!(
        data["crc32"],
        crc32fast::hash(&example_image().shms[0].data)
    );
    assert_eq!(data["preview_hex"].as_str().unwrap().len(), 64);
    assert_eq!(
        json["msgs"][0]["messages"][1]["data"],
        serde_json::json!({"len": 0, "crc32": 0, "preview_hex": ""})
    );
    assert_eq!(
        json["processes"][0]["cmdline"],
        serde_json::json!(["dbserver", "--port", "5432"])
    );
    let rich = inspect_json(&rich_image());
    assert_eq!(
        rich["processes"][0]["exe"],
        "/opt/app/bin/\u{fffd}\u{fffd}server"
    );
    let mut no_range = example_image();
    no_range.app.pid_range = None;
    assert!(inspect_json(&no_range)["app"]["pid_range"].is_null());
}

#[test]
fn inspect_text_shows_every_object() {
    let text = inspect_text(&rich_image());
    assert!(text.contains("4 semaphore sets"));
    assert!(text.contains("size 1048576, crc32 0x"));
    assert!(
        text.contains("\\n"),
        "control characters in argv are escaped"
    );
    for section in [
        "pid table",
        "key table",
        "semaphore sets (4)",
        "shared memory segments (3)",
        "message queues (3)",
        "processes (10)",
    ] {
        assert!(text.contains(section), "{section} in\n{text}");
    }
}
