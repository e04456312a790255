//! The writer: an [`Image`] to the bytes of `docs/image-format.md`, streamed.
//!
//! The file header carries the file's size, so the writer first lists the records and
//! adds up their sizes (from the model, without encoding anything), then writes each
//! record through a [`Sink`] that computes the CRC-32 as the bytes pass. Small pieces are
//! gathered in a 64 KiB buffer; a large slice (a segment's contents, a big message) goes to
//! the output in one `write_all` straight from the model, never copied again. Record
//! order: app, tables, semaphore sets, segments, queues, processes (each in model order),
//! end.

use std::io::{self, Write};

use zerocopy::little_endian::{I32, I64, U16, U32, U64};
use zerocopy::IntoBytes;

use crate::error::ImageError;
use crate::layout::*;
use crate::limits::RECORD_NAME_MAX;
use crate::model::*;
use crate::FORMAT_VERSION;

/// Writes `image` to `out` after checking it with [`Image::validate`]: an invalid image is
/// refused before the first byte is written. The CRC-32 is computed while writing; the
/// image's byte buffers are written from where they are, not copied. `image.notices` is
/// not written.
pub fn write_image(image: &Image, out: &mut impl Write) -> Result<(), ImageError> {
    image.validate()?;
    write_unchecked(image, out)?;
    Ok(())
}

/// Encodes `image` into a new buffer, without validating it: for tests and in-memory
/// round trips. An invalid image gives bytes that [`crate::read_image`] refuses; anything
/// stored goes through [`write_image`].
pub fn encode(image: &Image) -> Vec<u8> {
    let records = records_of(image);
    let size = file_size(&records);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // Writing into a Vec cannot fail.
    let _ = write_records(&records, size, &mut bytes);
    bytes
}

/// Rewrites the trailer's CRC-32 (the last 4 bytes) to match the bytes before it; does
/// nothing to an input shorter than 4 bytes. For tests that damage an image on purpose
/// and want the damage to reach the parser behind the checksum; it fixes nothing else
/// (not the header's `file_size`, not the record structure).
pub fn fix_checksum(bytes: &mut [u8]) {
    let Some(covered) = bytes.len().checked_sub(4) else {
        return;
    };
    let crc = crc32fast::hash(&bytes[..covered]);
    bytes[covered..].copy_from_slice(U32::new(crc).as_bytes());
}

fn write_unchecked(image: &Image, out: &mut impl Write) -> io::Result<()> {
    let records = records_of(image);
    write_records(&records, file_size(&records), out)
}

/// How many small bytes the sink gathers before writing them out.
const SINK_BUFFER: usize = 64 * 1024;

/// The output, with a CRC-32 of every byte put through it.
struct Sink<'w, W: Write> {
    out: &'w mut W,
    buffer: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl<'w, W: Write> Sink<'w, W> {
    fn new(out: &'w mut W) -> Self {
        Sink {
            out,
            buffer: Vec::with_capacity(SINK_BUFFER),
            crc: crc32fast::Hasher::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        if self.buffer.len() + bytes.len() > SINK_BUFFER {
            self.flush_buffer()?;
        }
        if bytes.len() >= SINK_BUFFER {
            self.out.write_all(bytes)
        } else {
            self.buffer.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Writes the CRC-32 of everything put so far (not itself hashed) and flushes.
    fn finish_with_crc(mut self) -> io::Result<()> {
        let crc = self.crc.clone().finalize();
        self.buffer.extend_from_slice(U32::new(crc).as_bytes());
        self.flush_buffer()?;
        self.out.flush()
    }
}

/// One record to write, borrowing its model element.
enum Rec<'a> {
    App(&'a AppRecord),
    Table(&'a TableRecord),
    Sem(&'a SemSet),
    Shm(&'a ShmSegment),
    Msg(&'a MsgQueue),
    Process(&'a ProcessRecord),
}

fn records_of(image: &Image) -> Vec<Rec<'_>> {
    let mut records = vec![Rec::App(&image.app)];
    records.extend(image.tables.iter().map(Rec::Table));
    records.extend(image.sems.iter().map(Rec::Sem));
    records.extend(image.shms.iter().map(Rec::Shm));
    records.extend(image.msgs.iter().map(Rec::Msg));
    records.extend(image.processes.iter().map(Rec::Process));
    records
}

fn file_size(records: &[Rec<'_>]) -> u64 {
    let body: u64 = records.iter().map(Rec::len).sum();
    FILE_HEADER_LEN as u64 + body + END_RECORD_LEN as u64
}

fn write_records(records: &[Rec<'_>], file_size: u64, out: &mut impl Write) -> io::Result<()> {
    let mut sink = Sink::new(out);
    let header = FileHeader {
        magic: MAGIC,
        version: U32::new(FORMAT_VERSION),
        header_size: U32::new(FILE_HEADER_LEN as u32),
        flags: U32::new(0),
        record_count: U32::new(count32(records.len() + 1)),
        file_size: U64::new(file_size),
    };
    sink.put(header.as_bytes())?;
    for record in records {
        let name = record.name();
        let descriptor = record.descriptor();
        sink.put(
            record_header(
                record.record_type(),
                name.len(),
                descriptor.len(),
                record.data_len(),
            )
            .as_bytes(),
        )?;
        sink.put(&name)?;
        sink.put(&descriptor)?;
        record.write_data(&mut sink)?;
    }
    sink.put(record_header(record_type::END, 0, size_of::<EndDescriptor>(), 0).as_bytes())?;
    sink.finish_with_crc()
}

fn record_header(
    record_type: u16,
    name_len: usize,
    descriptor_len: usize,
    data_len: u64,
) -> RecordHeader {
    RecordHeader {
        record_type: U16::new(record_type),
        flags: U16::new(0),
        // Names are clipped to RECORD_NAME_MAX and descriptors are a few dozen bytes.
        name_len: U16::new(name_len as u16),
        reserved0: U16::new(0),
        descriptor_len: U32::new(descriptor_len as u32),
        reserved1: U32::new(0),
        data_len: U64::new(data_len),
    }
}

/// A count as the format stores it. Counts above `u32::MAX` exist only in images that
/// [`Image::validate`] refuses; for [`encode`] they are clipped (with the elements written
/// clipped alike), so the file stays self-consistent.
fn count32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `bytes` clipped to what a u32 length can describe (see [`count32`]).
fn clip32(bytes: &[u8]) -> &[u8] {
    &bytes[..count32(bytes.len()) as usize]
}

fn perm_disk(perm: &IpcPerm) -> IpcPermDisk {
    IpcPermDisk {
        key: I32::new(perm.key),
        uid: U32::new(perm.uid),
        gid: U32::new(perm.gid),
        cuid: U32::new(perm.cuid),
        cgid: U32::new(perm.cgid),
        mode: U32::new(perm.mode),
    }
}

impl Rec<'_> {
    fn record_type(&self) -> u16 {
        match self {
            Rec::App(_) => record_type::APP,
            Rec::Table(_) => record_type::TABLE,
            Rec::Sem(_) => record_type::SEM_SET,
            Rec::Shm(_) => record_type::SHM_SEGMENT,
            Rec::Msg(_) => record_type::MSG_QUEUE,
            Rec::Process(_) => record_type::PROCESS,
        }
    }

    /// The record's name: the app name for the app record, a label for the others.
    fn name(&self) -> Vec<u8> {
        let mut name = match self {
            Rec::App(app) => app.name.as_bytes().to_vec(),
            Rec::Table(table) => format!("{} table", table.kind.name()).into_bytes(),
            Rec::Sem(set) => format!("sem {}", set.virtual_id).into_bytes(),
            Rec::Shm(seg) => format!("shm {}", seg.virtual_id).into_bytes(),
            Rec::Msg(queue) => format!("msg {}", queue.virtual_id).into_bytes(),
            Rec::Process(process) => format!("process {}", process.virtual_pid).into_bytes(),
        };
        name.truncate(RECORD_NAME_MAX);
        name
    }

    fn descriptor(&self) -> Vec<u8> {
        match self {
            Rec::App(app) => {
                let (flags, (pid_min, pid_max)) = match app.pid_range {
                    Some(range) => (APP_HAS_PID_RANGE, range),
                    None => (0, (0, 0)),
                };
                AppDescriptor {
                    flags: U32::new(flags),
                    pid_min: U32::new(pid_min),
                    pid_max: U32::new(pid_max),
                    reserved: U32::new(0),
                    source_aid: U64::new(app.source_aid),
                    created_unix: U64::new(app.created_unix),
                }
                .as_bytes()
                .to_vec()
            }
            Rec::Table(table) => TableDescriptor {
                kind: U32::new(table.kind as u32),
                entry_count: U32::new(count32(table.entries.len())),
            }
            .as_bytes()
            .to_vec(),
            Rec::Sem(set) => SemSetDescriptor {
                virtual_id: I32::new(set.virtual_id),
                system_id: I32::new(set.system_id),
                perm: perm_disk(&set.perm),
                otime: I64::new(set.otime),
                ctime: I64::new(set.ctime),
                nsems: U32::new(count32(set.sems.len())),
                reserved: U32::new(0),
            }
            .as_bytes()
            .to_vec(),
            Rec::Shm(seg) => ShmDescriptor {
                virtual_id: I32::new(seg.virtual_id),
                system_id: I32::new(seg.system_id),
                perm: perm_disk(&seg.perm),
                size: U64::new(seg.size),
                atime: I64::new(seg.atime),
                dtime: I64::new(seg.dtime),
                ctime: I64::new(seg.ctime),
                cpid: U32::new(seg.cpid),
                lpid: U32::new(seg.lpid),
                nattch: U64::new(seg.nattch),
            }
            .as_bytes()
            .to_vec(),
            Rec::Msg(queue) => MsgQueueDescriptor {
                virtual_id: I32::new(queue.virtual_id),
                system_id: I32::new(queue.system_id),
                perm: perm_disk(&queue.perm),
                qbytes: U64::new(queue.qbytes),
                stime: I64::new(queue.stime),
                rtime: I64::new(queue.rtime),
                ctime: I64::new(queue.ctime),
                lspid: U32::new(queue.lspid),
                lrpid: U32::new(queue.lrpid),
                message_count: U32::new(count32(queue.messages.len())),
                reserved: U32::new(0),
            }
            .as_bytes()
            .to_vec(),
            Rec::Process(process) => ProcessDescriptor {
                virtual_pid: U32::new(process.virtual_pid),
                virtual_ppid: U32::new(process.virtual_ppid),
                virtual_pgid: U32::new(process.virtual_pgid),
                virtual_sid: U32::new(process.virtual_sid),
                thread_count: U32::new(count32(process.threads.len())),
                exe_len: U32::new(count32(process.exe.len())),
                argc: U32::new(count32(process.cmdline.len())),
                reserved: U32::new(0),
            }
            .as_bytes()
            .to_vec(),
        }
    }

    fn data_len(&self) -> u64 {
        match self {
            Rec::App(app) => app.kernel_release.len() as u64,
            Rec::Table(table) => {
                u64::from(count32(table.entries.len())) * size_of::<TableEntryDisk>() as u64
            }
            Rec::Sem(set) => u64::from(count32(set.sems.len())) * size_of::<SemaphoreDisk>() as u64,
            Rec::Shm(seg) => seg.data.len() as u64,
            Rec::Msg(queue) => queue
                .messages
                .iter()
                .take(count32(queue.messages.len()) as usize)
                .map(|m| (size_of::<MessageHeaderDisk>() + clip32(&m.data).len()) as u64)
                .sum(),
            Rec::Process(process) => {
                let threads = u64::from(count32(process.threads.len())) * 4;
                let args: u64 = process
                    .cmdline
                    .iter()
                    .take(count32(process.cmdline.len()) as usize)
                    .map(|arg| 4 + clip32(arg).len() as u64)
                    .sum();
                threads + clip32(&process.exe).len() as u64 + args
            }
        }
    }

    fn write_data<W: Write>(&self, sink: &mut Sink<'_, W>) -> io::Result<()> {
        match self {
            Rec::App(app) => sink.put(app.kernel_release.as_bytes()),
            Rec::Table(table) => {
                for entry in table
                    .entries
                    .iter()
                    .take(count32(table.entries.len()) as usize)
                {
                    let disk = TableEntryDisk {
                        virtual_id: U32::new(entry.virtual_id),
                        system_id: U32::new(entry.system_id),
                        owner_id: U32::new(entry.owner_id),
                    };
                    sink.put(disk.as_bytes())?;
                }
                Ok(())
            }
            Rec::Sem(set) => {
                for sem in set.sems.iter().take(count32(set.sems.len()) as usize) {
                    let disk = SemaphoreDisk {
                        value: U16::new(sem.value),
                        reserved: U16::new(0),
                        last_pid: U32::new(sem.last_pid),
                    };
                    sink.put(disk.as_bytes())?;
                }
                Ok(())
            }
            Rec::Shm(seg) => sink.put(&seg.data),
            Rec::Msg(queue) => {
                for message in queue
                    .messages
                    .iter()
                    .take(count32(queue.messages.len()) as usize)
                {
                    let text = clip32(&message.data);
                    let header = MessageHeaderDisk {
                        mtype: I64::new(message.mtype),
                        size: U32::new(text.len() as u32),
                        reserved: U32::new(0),
                    };
                    sink.put(header.as_bytes())?;
                    sink.put(text)?;
                }
                Ok(())
            }
            Rec::Process(process) => {
                for &tid in process
                    .threads
                    .iter()
                    .take(count32(process.threads.len()) as usize)
                {
                    sink.put(U32::new(tid).as_bytes())?;
                }
                sink.put(clip32(&process.exe))?;
                for arg in process
                    .cmdline
                    .iter()
                    .take(count32(process.cmdline.len()) as usize)
                {
                    let arg = clip32(arg);
                    sink.put(U32::new(arg.len() as u32).as_bytes())?;
                    sink.put(arg)?;
                }
                Ok(())
            }
        }
    }

    /// The record's whole size: header, name, descriptor, data.
    fn len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.name().len() + self.descriptor().len()) as u64 + self.data_len()
    }
}
