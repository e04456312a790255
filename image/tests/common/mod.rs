//! Images and byte surgery shared by the integration tests.
//!
//! The images: [`example_image`] (the one `docs/image-format.md` shows `inspect` output
//! for), [`small_image`] (every record type, small enough to flip each of its bits) and
//! [`rich_image`] (several of everything, a 1 MiB segment, odd argv bytes). The surgery
//! works on encoded images: walk the records, insert one, and fix the header's size and
//! the trailer's CRC afterwards so that the parser behind the checksum gets to see a
//! change.

#![allow(dead_code)]

use appshot_image::*;

pub fn perm(key: i32, mode: u32) -> IpcPerm {
    IpcPerm {
        key,
        uid: 1000,
        gid: 1000,
        cuid: 1000,
        cgid: 100,
        mode,
    }
}

pub fn entry(virtual_id: u32, system_id: u32, owner_id: u32) -> TableEntry {
    TableEntry {
        virtual_id,
        system_id,
        owner_id,
    }
}

/// The image whose `inspect` text the format document shows.
pub fn example_image() -> Image {
    Image {
        app: AppRecord {
            name: "dbserver".into(),
            pid_range: Some((300, 399)),
            source_aid: 3,
            created_unix: 1_764_556_800,
            kernel_release: "6.12.0-appshot".into(),
        },
        tables: vec![
            TableRecord {
                kind: TableKind::Pid,
                entries: vec![
                    entry(300, 4107, 4107),
                    entry(301, 4110, 4107),
                    entry(302, 4112, 4112),
                ],
            },
            TableRecord {
                kind: TableKind::Sem,
                entries: vec![entry(0, 32768, 0)],
            },
            TableRecord {
                kind: TableKind::Shm,
                entries: vec![entry(0, 65538, 0)],
            },
            TableRecord {
                kind: TableKind::Msg,
                entries: vec![entry(0, 98305, 0)],
            },
            TableRecord {
                kind: TableKind::Key,
                entries: vec![entry(0x1234, 0x5e01_0007, 0)],
            },
        ],
        sems: vec![SemSet {
            virtual_id: 0,
            system_id: 32768,
            perm: perm(0x1234, 0o600),
            otime: 1_764_556_790,
            ctime: 1_764_556_700,
            sems: vec![
                Semaphore {
                    value: 1,
                    last_pid: 302,
                },
                Semaphore {
                    value: 0,
                    last_pid: 0,
                },
            ],
        }],
        shms: vec![ShmSegment {
            virtual_id: 0,
            system_id: 65538,
            perm: perm(0, 0o640),
            size: 4096,
            atime: 1_764_556_705,
            dtime: 0,
            ctime: 1_764_556_700,
            cpid: 300,
            lpid: 302,
            nattch: 2,
            data: (0..4096u32).map(|i| (i % 251) as u8).collect(),
        }],
        msgs: vec![MsgQueue {
            virtual_id: 0,
            system_id: 98305,
            perm: perm(0, 0o600),
            qbytes: 16384,
            stime: 1_764_556_780,
            rtime: 0,
            ctime: 1_764_556_700,
            lspid: 302,
            lrpid: 0,
            messages: vec![
                Message {
                    mtype: 1,
                    data: b"hello".to_vec(),
                },
                Message {
                    mtype: 7,
                    data: Vec::new(),
                },
            ],
        }],
        processes: vec![
            ProcessRecord {
                virtual_pid: 300,
                virtual_ppid: 0,
                virtual_pgid: 300,
                virtual_sid: 0,
                threads: vec![300, 301],
                exe: b"/usr/sbin/dbserver".to_vec(),
                cmdline: vec![b"dbserver".to_vec(), b"--port".to_vec(), b"5432".to_vec()],
            },
            ProcessRecord {
                virtual_pid: 302,
                virtual_ppid: 300,
                virtual_pgid: 300,
                virtual_sid: 0,
                threads: vec![302],
                exe: b"/usr/sbin/dbserver".to_vec(),
                cmdline: vec![b"dbserver: worker".to_vec()],
            },
        ],
        notices: Vec::new(),
    }
}

/// One of every record type, as small as possible (a few hundred bytes).
pub fn small_image() -> Image {
    Image {
        app: AppRecord {
            name: "s".into(),
            pid_range: None,
            source_aid: 1,
            created_unix: 2,
            kernel_release: "6".into(),
        },
        tables: vec![
            TableRecord {
                kind: TableKind::Pid,
                entries: vec![entry(10, 10, 10)],
            },
            TableRecord {
                kind: TableKind::Sem,
                entries: vec![entry(1, 5, 0)],
            },
            TableRecord {
                kind: TableKind::Key,
                entries: vec![entry(9, 9, 0)],
            },
        ],
        sems: vec![SemSet {
            virtual_id: 1,
            system_id: 5,
            perm: perm(9, 0o600),
            otime: 0,
            ctime: 3,
            sems: vec![Semaphore {
                value: 2,
                last_pid: 10,
            }],
        }],
        shms: vec![ShmSegment {
            virtual_id: 0,
            system_id: 6,
            perm: perm(0, 0o600),
            size: 3,
            atime: 0,
            dtime: 0,
            ctime: 3,
            cpid: 10,
            lpid: 0,
            nattch: 0,
            data: vec![1, 2, 3],
        }],
        msgs: vec![MsgQueue {
            virtual_id: 0,
            system_id: 7,
            perm: perm(0, 0o600),
            qbytes: 16,
            stime: 0,
            rtime: 0,
            ctime: 3,
            lspid: 0,
            lrpid: 0,
            messages: vec![
                Message {
                    mtype: 1,
                    data: b"hi".to_vec(),
                },
                Message {
                    mtype: 2,
                    data: vec![],
                },
            ],
        }],
        processes: vec![ProcessRecord {
            virtual_pid: 10,
            virtual_ppid: 0,
            virtual_pgid: 10,
            virtual_sid: 0,
            threads: vec![10],
            exe: b"/x".to_vec(),
            cmdline: vec![b"x".to_vec(), vec![]],
        }],
        notices: Vec::new(),
    }
}

/// Several of everything: sets of several sizes, a 1 MiB segment, queues with messages
/// (an empty one among them), processes with many threads and non-UTF-8 argv.
pub fn rich_image() -> Image {
    let mut image = example_image();
    image.app.pid_range = Some((1000, 60_000));
    let pids: Vec<u32> = (1000..1040).collect();
    image.tables = vec![
        TableRecord {
            kind: TableKind::Pid,
            entries: pids
                .iter()
                .map(|&p| entry(p, p + 50_000, p + 50_000))
                .collect(),
        },
        TableRecord {
            kind: TableKind::Sem,
            entries: (0..4).map(|i| entry(i, 1000 + i, 0)).collect(),
        },
        TableRecord {
            kind: TableKind::Shm,
            entries: (0..3).map(|i| entry(i * 32768, 2000 + i, 0)).collect(),
        },
        TableRecord {
            kind: TableKind::Msg,
            entries: (0..3).map(|i| entry(i, 3000 + i, 0)).collect(),
        },
        TableRecord {
            kind: TableKind::Key,
            entries: vec![
                entry(0x10, 0x7000_0010, 0),
                entry(0xffff_fffe, 0x7000_0011, 0),
            ],
        },
    ];
    image.sems = (0..4)
        .map(|i| SemSet {
            virtual_id: i,
            system_id: 1000 + i,
            perm: perm(if i == 0 { 0x10 } else { 0 }, 0o660),
            otime: 1_764_556_000 + i64::from(i),
            ctime: 1_764_555_000,
            sems: (0..(1 + i as usize * 100))
                .map(|n| Semaphore {
                    value: (n % 32768) as u16,
                    last_pid: if n % 3 == 0 {
                        0
                    } else {
                        1000 + (n as u32 % 40)
                    },
                })
                .collect(),
        })
        .collect();
    image.sems[3].sems.push(Semaphore {
        value: 32767,
        last_pid: 0,
    });
    image.shms = (0..3)
        .map(|i| {
            let size: u64 = match i {
                0 => 1 << 20,
                1 => 1,
                _ => 4095,
            };
            ShmSegment {
                virtual_id: i * 32768,
                system_id: 2000 + i,
                perm: perm(
                    if i == 1 { -2 } else { 0 },
                    0o600 | (0o1000 * (i as u32 % 2)),
                ),
                size,
                atime: -5,
                dtime: i64::MAX,
                ctime: i64::MIN,
                cpid: 1000,
                lpid: 0,
                nattch: u64::MAX,
                data: (0..size)
                    .map(|b| (b * 7 + u64::from(i as u32)) as u8)
                    .collect(),
            }
        })
        .collect();
    image.msgs = (0..3)
        .map(|i| MsgQueue {
            virtual_id: i,
            system_id: 3000 + i,
            perm: perm(0, 0o622),
            qbytes: 1 << 20,
            stime: 1,
            rtime: 2,
            ctime: 3,
            lspid: 1001,
            lrpid: 1002,
            messages: match i {
                0 => Vec::new(),
                1 => vec![Message {
                    mtype: 1,
                    data: Vec::new(),
                }],
                _ => (0..50)
                    .map(|n| Message {
                        mtype: i64::MAX - n,
                        data: vec![n as u8; n as usize * 37],
                    })
                    .collect(),
            },
        })
        .collect();
    image.processes = (0..10)
        .map(|n| {
            let pid = 1000 + n * 4;
            ProcessRecord {
                virtual_pid: pid,
                virtual_ppid: if n == 0 { 0 } else { 1000 },
                virtual_pgid: 1000,
                virtual_sid: if n % 2 == 0 { 0 } else { 1000 },
                threads: (pid..pid + 4).rev().collect(),
                exe: if n == 3 {
                    Vec::new()
                } else {
                    b"/opt/app/bin/\xff\xfeserver".to_vec()
                },
                cmdline: vec![
                    b"server".to_vec(),
                    vec![0xc3, 0x28, b'\n', 0x80],
                    Vec::new(),
                    vec![b'a'; 300],
                ],
            }
        })
        .collect();
    image
}

/// Offsets of the records of an encoded image (the end record included).
pub fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = FILE_HEADER_LEN;
    while offset + RECORD_HEADER_LEN <= bytes.len() {
        offsets.push(offset);
        let h = &bytes[offset..offset + RECORD_HEADER_LEN];
        let name = u16::from_le_bytes([h[4], h[5]]) as usize;
        let desc = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
        let data = u64::from_le_bytes(h[16..24].try_into().unwrap()) as usize;
        offset += RECORD_HEADER_LEN + name + desc + data;
    }
    offsets
}

/// Makes the header's file size and the trailer's CRC agree with the bytes again.
pub fn fix_up(bytes: &mut [u8]) {
    if bytes.len() >= FILE_HEADER_LEN {
        let len = bytes.len() as u64;
        bytes[24..32].copy_from_slice(&len.to_le_bytes());
    }
    fix_checksum(bytes);
}

/// A record's bytes.
pub fn record(
    record_type: u16,
    flags: u16,
    name: &[u8],
    descriptor: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&record_type.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&(descriptor.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(descriptor);
    bytes.extend_from_slice(data);
    bytes
}

/// Inserts `record` before the record at `index` of an encoded image, counts it in the
/// header and fixes the size and CRC.
pub fn insert_record(bytes: &[u8], index: usize, record: &[u8]) -> Vec<u8> {
    let at = record_offsets(bytes)[index];
    let mut out = Vec::with_capacity(bytes.len() + record.len());
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(record);
    out.extend_from_slice(&bytes[at..]);
    let count = u32::from_le_bytes(out[20..24].try_into().unwrap()) + 1;
    out[20..24].copy_from_slice(&count.to_le_bytes());
    fix_up(&mut out);
    out
}

/// Replaces the record at `index` of an encoded image (fixing count, size and CRC).
pub fn replace_record(bytes: &[u8], index: usize, record: &[u8]) -> Vec<u8> {
    let offsets = record_offsets(bytes);
    let mut out = Vec::new();
    out.extend_from_slice(&bytes[..offsets[index]]);
    out.extend_from_slice(record);
    out.extend_from_slice(&bytes[offsets[index + 1]..]);
    fix_up(&mut out);
    out
}

/// Inserts before the end record.
pub fn insert_before_end(bytes: &[u8], record: &[u8]) -> Vec<u8> {
    let last = record_offsets(bytes).len() - 1;
    insert_record(bytes, last, record)
}

/// Where the descriptor of record `index` starts: after its 24-byte header and its name
/// (the name's length is the u16 at offset 4 of the header).
pub fn descriptor_offset(bytes: &[u8], offsets: &[usize], index: usize) -> usize {
    let at = offsets[index];
    at + 24 + u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize
}
