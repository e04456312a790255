//! Deterministic mutation testing of the reader: tens of thousands of damaged variants
//! of valid images, none of which may make it panic, and each of which it either refuses
//! or returns as an image that validates and survives another encode/read.
//!
//! Half of the mutants get their header's file size and trailer CRC fixed up after the
//! damage, so that they reach the record parser and the validation behind the checksum;
//! the others exercise the checks in front of it. A fixed-seed xorshift generator keeps
//! every run identical: a failure names the mutant's number, which reproduces it.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use appshot_image::*;
use common::*;

const MUTANTS: usize = 50_000;

/// xorshift64* (Vigna): small, fast, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Values that tend to break length arithmetic.
fn interesting(rng: &mut Rng, len: usize) -> u64 {
    let len = len as u64;
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => rng.next() % 64,
        3 => u64::from(u16::MAX),
        4 => u64::from(u32::MAX),
        5 => u64::MAX,
        6 => u64::from(u32::MAX) - 1,
        7 => len,
        8 => len.wrapping_sub(1 + rng.next() % 64),
        9 => 0x8000_0000,
        10 => 1 << 40,
        _ => rng.next(),
    }
}

/// A valid image with one of everything, kept small so that mutants parse quickly.
fn bases() -> Vec<Vec<u8>> {
    let mut example = example_image();
    example.shms[0].size = 40;
    example.shms[0].data.truncate(40);
    vec![encode(&small_image()), encode(&example)]
}

/// Adds `delta` to the header's record count.
fn adjust_count(bytes: &mut [u8], delta: i64) {
    if bytes.len() >= 24 {
        let count = i64::from(u32::from_le_bytes(bytes[20..24].try_into().unwrap())) + delta;
        bytes[20..24].copy_from_slice(&(count as u32).to_le_bytes());
    }
}

/// One mutation of `bytes`, which starts as a valid image; returns its name.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, offsets: &[usize]) -> &'static str {
    let len = bytes.len();
    match rng.below(9) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let bit = rng.below(len * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
            }
            "bit flips"
        }
        1 => {
            let at = rng.below(len);
            bytes[at] = rng.next() as u8;
            "byte set"
        }
        2 => {
            bytes.truncate(rng.below(len));
            "truncation"
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, insert);
            "insertion"
        }
        4 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(32)).min(len);
            bytes.drain(at..end);
            "deletion"
        }
        5 | 6 => {
            // A length or count field: in a record header, or in a descriptor (any
            // 4-byte-aligned word of the first 80 bytes after the name).
            let record = offsets[rng.below(offsets.len())];
            let (at, width) = if rng.chance(2) {
                [(record + 4, 2), (record + 8, 4), (record + 16, 8)][rng.below(3)]
            } else {
                let name = usize::from(u16::from_le_bytes([bytes[record + 4], bytes[record + 5]]));
                (record + 24 + name + 4 * rng.below(20), [4, 8][rng.below(2)])
            };
            let value = interesting(rng, len).to_le_bytes();
            if at + width <= len {
                bytes[at..at + width].copy_from_slice(&value[..width]);
            }
            "length field"
        }
        7 => {
            // Repeat a record (not the end record) before another one.
            let i = rng.below(offsets.len() - 1);
            let copy = bytes[offsets[i]..offsets[i + 1]].to_vec();
            let at = offsets[rng.below(offsets.len())];
            bytes.splice(at..at, copy);
            adjust_count(bytes, 1);
            "record repeated"
        }
        _ => {
            // Drop a record (not the end record).
            let i = rng.below(offsets.len() - 1);
            bytes.drain(offsets[i]..offsets[i + 1]);
            adjust_count(bytes, -1);
            "record dropped"
        }
    }
}

/// With `APPSHOT_FUZZ_SEEDS=<dir>`, writes the valid images this test mutates into
/// `<dir>` as a seed corpus for the cargo-fuzz target (docs/image-format.md, "Fuzzing").
#[test]
fn write_fuzz_seeds_when_asked() {
    let Some(dir) = std::env::var_os("APPSHOT_FUZZ_SEEDS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for (n, seed) in bases().iter().enumerate() {
        std::fs::write(
            std::path::Path::new(&dir).join(format!("seed-{n}.img")),
            seed,
        )
        .unwrap();
    }
}

#[test]
fn mutants_never_panic_and_accepted_ones_are_valid() {
    let bases = bases();
    let offsets: Vec<Vec<usize>> = bases.iter().map(|b| record_offsets(b)).collect();
    let mut rng = Rng(0x0a99_5407_2026_1201);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..MUTANTS {
        let which = rng.below(bases.len());
        let mut bytes = bases[which].clone();
        let mut ops = vec![mutate(&mut rng, &mut bytes, &offsets[which])];
        if rng.chance(4) && bytes.len() > 8 {
            // Stacked mutations: offsets may be stale now, which is fine (any bytes do).
            let len = bytes.len();
            let at = rng.below(len);
            bytes[at] ^= 1 << rng.below(8);
            ops.push("bit flip");
        }
        let fixed = rng.chance(2);
        if fixed {
            fix_up(&mut bytes);
        }
        let result = catch_unwind(AssertUnwindSafe(|| read_image(&bytes)));
        let Ok(result) = result else {
            panic!("mutant {n} ({ops:?}, fixed up: {fixed}) made read_image panic; bytes: {bytes:02x?}");
        };
        let outcome = match result {
            Ok(image) => {
                image
                    .validate()
                    .unwrap_or_else(|e| panic!("mutant {n} ({ops:?}) accepted but invalid: {e}"));
                let again = read_image(&encode(&image)).unwrap_or_else(|e| {
                    panic!("mutant {n} ({ops:?}) accepted, its encoding refused: {e}")
                });
                assert_eq!(
                    again,
                    Image {
                        notices: Vec::new(),
                        ..image.clone()
                    },
                    "mutant {n} ({ops:?})"
                );
                "accepted".to_owned()
            }
            Err(err) => kind(&err).to_owned(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let past_checksum: usize = outcomes
        .iter()
        .filter(|(k, _)| {
            ![
                "ChecksumMismatch",
                "Truncated",
                "TrailingBytes",
                "BadMagic",
                "UnsupportedVersion",
            ]
            .contains(&k.as_str())
        })
        .map(|(_, v)| v)
        .sum();
    eprintln!("{MUTANTS} mutants: {outcomes:#?}\npast the checksum: {past_checksum}");
    assert!(
        past_checksum >= MUTANTS / 5,
        "too few mutants reached the record parser: {past_checksum}"
    );
}

fn kind(err: &ImageError) -> &'static str {
    match err {
        ImageError::Truncated { .. } => "Truncated",
        ImageError::BadMagic { .. } => "BadMagic",
        ImageError::UnsupportedVersion { .. } => "UnsupportedVersion",
        ImageError::BadHeader { .. } => "BadHeader",
        ImageError::ChecksumMismatch { .. } => "ChecksumMismatch",
        ImageError::UnknownRequiredRecord { .. } => "UnknownRequiredRecord",
        ImageError::BadRecord { .. } => "BadRecord",
        ImageError::Duplicate { .. } => "Duplicate",
        ImageError::OutOfRange { .. } => "OutOfRange",
        ImageError::TooLarge { .. } => "TooLarge",
        ImageError::MissingFromTable { .. } => "MissingFromTable",
        ImageError::MissingApp { .. } => "MissingApp",
        ImageError::TrailingBytes { .. } => "TrailingBytes",
        ImageError::Io(_) => "Io",
    }
}
