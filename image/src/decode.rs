//! Decoding one known record: its version-1 descriptor and its data, into a model value.
//!
//! `read.rs` has already cut the record out of the file (its name, descriptor and data
//! lie within the file and the checksum vouched for them); here each type's descriptor
//! is read (a longer one is accepted, its extra bytes ignored; a shorter one refused),
//! its reserved fields must be zero, and its counts must agree with the data's length
//! before anything is allocated for them. Rules about values (ranges, uniqueness) are not
//! checked here but in `validate.rs`, over the whole image.

use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::error::ImageError;
use crate::layout::*;
use crate::limits::KERNEL_RELEASE_MAX;
use crate::model::*;
use crate::read::{bad_record, Record, RecordPlace};

/// Reads a version-1 descriptor from the start of `bytes`; later bytes (a newer
/// version's additions) are ignored.
fn descriptor<T: FromBytes + KnownLayout + Immutable>(
    record: &Record<'_>,
) -> Result<T, ImageError> {
    match T::read_from_prefix(record.descriptor) {
        Ok((descriptor, _)) => Ok(descriptor),
        Err(_) => Err(bad_record(
            record.place,
            format!(
                "descriptor of {} bytes, version 1 defines {} for this record type",
                record.descriptor.len(),
                size_of::<T>()
            ),
        )),
    }
}

fn require_zero(record: &Record<'_>, what: &str, value: u64) -> Result<(), ImageError> {
    if value != 0 {
        return Err(bad_record(
            record.place,
            format!("{what} is {value:#x}, must be 0"),
        ));
    }
    Ok(())
}

/// `count` elements of `size` bytes each must be exactly the record's data.
fn require_data_len(
    record: &Record<'_>,
    what: &str,
    count: u32,
    size: usize,
) -> Result<(), ImageError> {
    let needed = u64::from(count) * size as u64;
    if needed != record.data.len() as u64 {
        return Err(bad_record(
            record.place,
            format!(
                "{count} {what} take {needed} data bytes, the record has {}",
                record.data.len()
            ),
        ));
    }
    Ok(())
}

/// Takes pieces from the front of a record's data.
struct DataCursor<'a> {
    rest: &'a [u8],
    place: RecordPlace,
}

impl<'a> DataCursor<'a> {
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], ImageError> {
        if n > self.rest.len() {
            return Err(bad_record(
                self.place,
                format!(
                    "the data ends inside {}: {n} bytes needed, {} left",
                    what(),
                    self.rest.len()
                ),
            ));
        }
        let (piece, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(piece)
    }

    fn read<T: FromBytes + KnownLayout + Immutable>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<T, ImageError> {
        let piece = self.take(size_of::<T>(), what)?;
        T::read_from_bytes(piece)
            .map_err(|_| bad_record(self.place, "internal size mismatch".to_owned()))
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, ImageError> {
        let piece = self.take(4, what)?;
        Ok(u32::from_le_bytes([piece[0], piece[1], piece[2], piece[3]]))
    }

    /// The data must be used up.
    fn finish(self, after: &str) -> Result<(), ImageError> {
        if !self.rest.is_empty() {
            return Err(bad_record(
                self.place,
                format!("{} data bytes follow {after}", self.rest.len()),
            ));
        }
        Ok(())
    }
}

fn perm(disk: &IpcPermDisk) -> IpcPerm {
    IpcPerm {
        key: disk.key.get(),
        uid: disk.uid.get(),
        gid: disk.gid.get(),
        cuid: disk.cuid.get(),
        cgid: disk.cgid.get(),
        mode: disk.mode.get(),
    }
}

pub(crate) fn parse_app(record: &Record<'_>) -> Result<AppRecord, ImageError> {
    let Ok(name) = String::from_utf8(record.name.to_vec()) else {
        return Err(bad_record(
            record.place,
            "the app name is not printable ASCII".to_owned(),
        ));
    };
    let d: AppDescriptor = descriptor(record)?;
    let flags = d.flags.get();
    require_zero(
        record,
        "the app descriptor's undefined flags",
        u64::from(flags & !APP_HAS_PID_RANGE),
    )?;
    require_zero(
        record,
        "the app descriptor's reserved field",
        d.reserved.get().into(),
    )?;
    let pid_range = if flags & APP_HAS_PID_RANGE != 0 {
        Some((d.pid_min.get(), d.pid_max.get()))
    } else {
        require_zero(
            record,
            "pid_min without a PID range",
            d.pid_min.get().into(),
        )?;
        require_zero(
            record,
            "pid_max without a PID range",
            d.pid_max.get().into(),
        )?;
        None
    };
    if record.data.len() > KERNEL_RELEASE_MAX {
        return Err(ImageError::TooLarge {
            what: "kernel release",
            size: record.data.len() as u64,
            limit: KERNEL_RELEASE_MAX as u64,
            place: record.place.into(),
        });
    }
    let Ok(kernel_release) = String::from_utf8(record.data.to_vec()) else {
        return Err(bad_record(
            record.place,
            "the kernel release is not UTF-8".to_owned(),
        ));
    };
    Ok(AppRecord {
        name,
        pid_range,
        source_aid: d.source_aid.get(),
        created_unix: d.created_unix.get(),
        kernel_release,
    })
}

pub(crate) fn parse_table(record: &Record<'_>) -> Result<TableRecord, ImageError> {
    let d: TableDescriptor = descriptor(record)?;
    let Some(kind) = TableKind::from_u32(d.kind.get()) else {
        return Err(bad_record(
            record.place,
            format!("unknown table kind {}", d.kind.get()),
        ));
    };
    let count = d.entry_count.get();
    require_data_len(record, "table entries", count, size_of::<TableEntryDisk>())?;
    let entries = record
        .data
        .chunks_exact(size_of::<TableEntryDisk>())
        .filter_map(|chunk| TableEntryDisk::read_from_bytes(chunk).ok())
        .map(|e| TableEntry {
            virtual_id: e.virtual_id.get(),
            system_id: e.system_id.get(),
            owner_id: e.owner_id.get(),
        })
        .collect();
    Ok(TableRecord { kind, entries })
}

pub(crate) fn parse_sem_set(record: &Record<'_>) -> Result<SemSet, ImageError> {
    let d: SemSetDescriptor = descriptor(record)?;
    require_zero(
        record,
        "the sem set descriptor's reserved field",
        d.reserved.get().into(),
    )?;
    require_data_len(
        record,
        "semaphores",
        d.nsems.get(),
        size_of::<SemaphoreDisk>(),
    )?;
    let mut sems = Vec::with_capacity(record.data.len() / size_of::<SemaphoreDisk>());
    for chunk in record.data.chunks_exact(size_of::<SemaphoreDisk>()) {
        let Ok(sem) = SemaphoreDisk::read_from_bytes(chunk) else {
            continue;
        };
        require_zero(
            record,
            "a semaphore's reserved field",
            sem.reserved.get().into(),
        )?;
        sems.push(Semaphore {
            value: sem.value.get(),
            last_pid: sem.last_pid.get(),
        });
    }
    Ok(SemSet {
        virtual_id: d.virtual_id.get(),
        system_id: d.system_id.get(),
        perm: perm(&d.perm),
        otime: d.otime.get(),
        ctime: d.ctime.get(),
        sems,
    })
}

pub(crate) fn parse_shm(record: &Record<'_>) -> Result<ShmSegment, ImageError> {
    let d: ShmDescriptor = descriptor(record)?;
    let size = d.size.get();
    if size != record.data.len() as u64 {
        return Err(bad_record(
            record.place,
            format!(
                "the segment's size is {size} but the record has {} data bytes",
                record.data.len()
            ),
        ));
    }
    Ok(ShmSegment {
        virtual_id: d.virtual_id.get(),
        system_id: d.system_id.get(),
        perm: perm(&d.perm),
        size,
        atime: d.atime.get(),
        dtime: d.dtime.get(),
        ctime: d.ctime.get(),
        cpid: d.cpid.get(),
        lpid: d.lpid.get(),
        nattch: d.nattch.get(),
        data: record.data.to_vec(),
    })
}

pub(crate) fn parse_msg_queue(record: &Record<'_>) -> Result<MsgQueue, ImageError> {
    let d: MsgQueueDescriptor = descriptor(record)?;
    require_zero(
        record,
        "the msg queue descriptor's reserved field",
        d.reserved.get().into(),
    )?;
    let count = d.message_count.get();
    let header_len = size_of::<MessageHeaderDisk>();
    if u64::from(count) * header_len as u64 > record.data.len() as u64 {
        return Err(bad_record(
            record.place,
            format!(
                "{count} messages cannot fit in {} data bytes ({header_len} bytes each at least)",
                record.data.len()
            ),
        ));
    }
    let mut cursor = DataCursor {
        rest: record.data,
        place: record.place,
    };
    let mut messages = Vec::with_capacity(count as usize);
    for n in 0..count {
        let header: MessageHeaderDisk = cursor.read(|| format!("the header of message {n}"))?;
        require_zero(
            record,
            "a message header's reserved field",
            header.reserved.get().into(),
        )?;
        let text = cursor.take(header.size.get() as usize, || {
            format!("the text of message {n}")
        })?;
        messages.push(Message {
            mtype: header.mtype.get(),
            data: text.to_vec(),
        });
    }
    cursor.finish("the last message")?;
    Ok(MsgQueue {
        virtual_id: d.virtual_id.get(),
        system_id: d.system_id.get(),
        perm: perm(&d.perm),
        qbytes: d.qbytes.get(),
        stime: d.stime.get(),
        rtime: d.rtime.get(),
        ctime: d.ctime.get(),
        lspid: d.lspid.get(),
        lrpid: d.lrpid.get(),
        messages,
    })
}

pub(crate) fn parse_process(record: &Record<'_>) -> Result<ProcessRecord, ImageError> {
    let d: ProcessDescriptor = descriptor(record)?;
    require_zero(
        record,
        "the process descriptor's reserved field",
        d.reserved.get().into(),
    )?;
    let (thread_count, exe_len, argc) = (d.thread_count.get(), d.exe_len.get(), d.argc.get());
    // Threads, path and one length per argument, before any argument text.
    let least = u64::from(thread_count) * 4 + u64::from(exe_len) + u64::from(argc) * 4;
    if least > record.data.len() as u64 {
        return Err(bad_record(
            record.place,
            format!(
                "{thread_count} threads, a {exe_len}-byte path and {argc} arguments need at least {least} data bytes, the record has {}",
                record.data.len()
            ),
        ));
    }
    let mut cursor = DataCursor {
        rest: record.data,
        place: record.place,
    };
    let mut threads = Vec::with_capacity(thread_count as usize);
    for n in 0..thread_count {
        threads.push(cursor.u32(|| format!("thread {n}"))?);
    }
    let exe = cursor
        .take(exe_len as usize, || "the executable path".to_owned())?
        .to_vec();
    let mut cmdline = Vec::with_capacity(argc as usize);
    for n in 0..argc {
        let len = cursor.u32(|| format!("the length of argument {n}"))?;
        cmdline.push(
            cursor
                .take(len as usize, || format!("argument {n}"))?
                .to_vec(),
        );
    }
    cursor.finish("the last argument")?;
    Ok(ProcessRecord {
        virtual_pid: d.virtual_pid.get(),
        virtual_ppid: d.virtual_ppid.get(),
        virtual_pgid: d.virtual_pgid.get(),
        virtual_sid: d.virtual_sid.get(),
        threads,
        exe,
        cmdline,
    })
}
