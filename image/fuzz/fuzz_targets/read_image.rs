//! Fuzz target: `read_image` on arbitrary bytes must not panic, and whatever it accepts
//! must validate and survive an encode/read round trip unchanged (notices aside: they
//! describe the input's skipped records, which are not re-encoded).
//!
//! A fuzzer cannot forge a CRC-32, so each input is also read a second time with its
//! header's `file_size` and its trailer's CRC set to match it: that copy reaches the
//! record parser and the validation behind the checksum.
//!
//! Run from `image/`: `RUSTC_BOOTSTRAP=1 cargo fuzz run read_image` (docs/image-format.md,
//! "Fuzzing").

#![no_main]

use appshot_image::{encode, read_image, Image, FILE_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(image) = read_image(bytes) {
        image.validate().expect("an accepted image validates");
        let again = read_image(&encode(&image)).expect("an accepted image re-encodes readably");
        assert_eq!(
            again,
            Image {
                notices: Vec::new(),
                ..image
            }
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= FILE_HEADER_LEN + 4 {
        let mut fixed = data.to_vec();
        let len = fixed.len();
        fixed[24..32].copy_from_slice(&(len as u64).to_le_bytes());
        let crc = crc32fast::hash(&fixed[..len - 4]);
        fixed[len - 4..].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
