//! The rules a valid image keeps beyond its byte layout: names, ranges, sizes,
//! uniqueness, and the SysV objects' presence in their translation tables.
//!
//! One function, [`validate_with`], holds every rule; [`Image::validate`] runs it on an
//! in-memory image (the writer does, before writing anything) and the reader runs it on
//! what it parsed, with a `locate` function that turns an element into the record it came
//! from, so a refusal names the record and its byte offset. The rules stop at the image:
//! whether the target kernel can hold these objects is the restore's business.

use std::collections::HashSet;

use crate::error::{ImageError, Place};
use crate::limits::*;
use crate::model::{Image, TableKind};

/// An element of an image, for [`validate_with`]'s `locate` function.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item {
    App,
    Table(usize),
    Sem(usize),
    Shm(usize),
    Msg(usize),
    Process(usize),
}

const PID_ALLOWED: &str = "1..=4194303";
const PID_OR_ZERO_ALLOWED: &str = "0 (none or outside the AID) or 1..=4194303";
const IN_PID_RANGE: &str = "inside the app's virtual PID range";
const SYSV_ID_ALLOWED: &str = "0..=2147483647";

impl Image {
    /// Checks every rule of `docs/image-format.md` ("Validation") and returns the first
    /// violation, naming the element (`sems[2] (virtual id 5)`).
    pub fn validate(&self) -> Result<(), ImageError> {
        validate_with(self, &|item| model_place(self, item))
    }
}

/// Names an element of an in-memory image.
fn model_place(image: &Image, item: Item) -> Place {
    Place::Model(match item {
        Item::App => "the app record".to_owned(),
        Item::Table(i) => format!("tables[{i}] ({} table)", image.tables[i].kind.name()),
        Item::Sem(i) => format!("sems[{i}] (virtual id {})", image.sems[i].virtual_id),
        Item::Shm(i) => format!("shms[{i}] (virtual id {})", image.shms[i].virtual_id),
        Item::Msg(i) => format!("msgs[{i}] (virtual id {})", image.msgs[i].virtual_id),
        Item::Process(i) => format!(
            "processes[{i}] (virtual pid {})",
            image.processes[i].virtual_pid
        ),
    })
}

/// Checks `image`; `locate` says where an offending element is.
pub(crate) fn validate_with(
    image: &Image,
    locate: &dyn Fn(Item) -> Place,
) -> Result<(), ImageError> {
    check_app(image, locate)?;
    let tables = check_tables(image, locate)?;
    check_sems(image, &tables, locate)?;
    check_shms(image, &tables, locate)?;
    check_msgs(image, &tables, locate)?;
    check_processes(image, locate)
}

fn bad(place: Place, why: String) -> ImageError {
    ImageError::BadRecord { place, why }
}

fn out_of_range(what: &'static str, value: i64, allowed: &'static str, place: Place) -> ImageError {
    ImageError::OutOfRange {
        what,
        value,
        allowed,
        place,
    }
}

/// The application name rule, the same as the module's (`appshot_uapi::check_name`).
pub(crate) fn is_valid_app_name(name: &[u8]) -> bool {
    (1..=APP_NAME_MAX).contains(&name.len()) && name.iter().all(|b| (0x21..=0x7e).contains(b))
}

fn in_pid_range(image: &Image, pid: u32) -> bool {
    match image.app.pid_range {
        None => true,
        Some((min, max)) => (min..=max).contains(&pid),
    }
}

fn check_pid_or_zero(
    what: &'static str,
    pid: u32,
    place: impl Fn() -> Place,
) -> Result<(), ImageError> {
    if pid > PID_MAX {
        return Err(out_of_range(what, pid.into(), PID_OR_ZERO_ALLOWED, place()));
    }
    Ok(())
}

fn check_app(image: &Image, locate: &dyn Fn(Item) -> Place) -> Result<(), ImageError> {
    let app = &image.app;
    if !is_valid_app_name(app.name.as_bytes()) {
        return Err(bad(
            locate(Item::App),
            format!(
                "app name {:?} is not 1 to 63 printable ASCII bytes without spaces (0x21..=0x7e)",
                app.name
            ),
        ));
    }
    if let Some((min, max)) = app.pid_range {
        if !(1 <= min && min <= max && max <= PID_MAX) {
            return Err(bad(
                locate(Item::App),
                format!("virtual PID range {min}-{max} is not 1 <= min <= max <= {PID_MAX}"),
            ));
        }
    }
    if app.kernel_release.len() > KERNEL_RELEASE_MAX {
        return Err(ImageError::TooLarge {
            what: "kernel release",
            size: app.kernel_release.len() as u64,
            limit: KERNEL_RELEASE_MAX as u64,
            place: locate(Item::App),
        });
    }
    if app.kernel_release.contains('\0') {
        return Err(bad(
            locate(Item::App),
            "the kernel release contains a NUL byte".to_owned(),
        ));
    }
    Ok(())
}

/// The virtual IDs of the SysV tables the image has (`None`: no such table record).
#[derive(Default)]
struct SysvTables {
    sem: Option<HashSet<u32>>,
    shm: Option<HashSet<u32>>,
    msg: Option<HashSet<u32>>,
}

fn check_tables(image: &Image, locate: &dyn Fn(Item) -> Place) -> Result<SysvTables, ImageError> {
    let mut kinds = HashSet::new();
    let mut sysv = SysvTables::default();
    for (i, table) in image.tables.iter().enumerate() {
        let place = || locate(Item::Table(i));
        if !kinds.insert(table.kind) {
            return Err(ImageError::Duplicate {
                what: "table of kind",
                id: table.kind.name().to_owned(),
                place: place(),
            });
        }
        let what = match table.kind {
            TableKind::Pid => "pid table virtual id",
            TableKind::Sem => "sem table virtual id",
            TableKind::Shm => "shm table virtual id",
            TableKind::Msg => "msg table virtual id",
            TableKind::Key => "key table virtual key",
        };
        let mut ids = HashSet::with_capacity(table.entries.len());
        for entry in &table.entries {
            let id = entry.virtual_id;
            match table.kind {
                TableKind::Pid if !(1..=PID_MAX).contains(&id) => {
                    return Err(out_of_range(what, id.into(), PID_ALLOWED, place()));
                }
                TableKind::Pid if !in_pid_range(image, id) => {
                    return Err(out_of_range(what, id.into(), IN_PID_RANGE, place()));
                }
                TableKind::Sem | TableKind::Shm | TableKind::Msg if id > i32::MAX as u32 => {
                    return Err(out_of_range(what, id.into(), SYSV_ID_ALLOWED, place()));
                }
                TableKind::Key if id == 0 => {
                    return Err(out_of_range(
                        what,
                        0,
                        "any key but 0 (IPC_PRIVATE)",
                        place(),
                    ));
                }
                _ => {}
            }
            if !ids.insert(id) {
                let id = match table.kind {
                    TableKind::Key => format!("{id:#010x}"),
                    _ => id.to_string(),
                };
                return Err(ImageError::Duplicate {
                    what,
                    id,
                    place: place(),
                });
            }
        }
        match table.kind {
            TableKind::Sem => sysv.sem = Some(ids),
            TableKind::Shm => sysv.shm = Some(ids),
            TableKind::Msg => sysv.msg = Some(ids),
            TableKind::Pid | TableKind::Key => {}
        }
    }
    Ok(sysv)
}

/// The rules every SysV object shares: its virtual ID's range and uniqueness, its key's
/// uniqueness, its presence in its table.
struct SysvObjects {
    what: &'static str,
    id_what: &'static str,
    key_what: &'static str,
    table_name: &'static str,
    ids: HashSet<i32>,
    keys: HashSet<i32>,
}

impl SysvObjects {
    /// For `count` objects (sized once: growing a set rehashes it).
    fn new(
        what: &'static str,
        id_what: &'static str,
        key_what: &'static str,
        table_name: &'static str,
        count: usize,
    ) -> Self {
        SysvObjects {
            what,
            id_what,
            key_what,
            table_name,
            ids: HashSet::with_capacity(count),
            keys: HashSet::with_capacity(count),
        }
    }

    fn check(
        &mut self,
        virtual_id: i32,
        key: i32,
        table: Option<&HashSet<u32>>,
        place: Place,
    ) -> Result<(), ImageError> {
        if virtual_id < 0 {
            return Err(out_of_range(
                self.id_what,
                virtual_id.into(),
                SYSV_ID_ALLOWED,
                place,
            ));
        }
        if !self.ids.insert(virtual_id) {
            return Err(ImageError::Duplicate {
                what: self.id_what,
                id: virtual_id.to_string(),
                place,
            });
        }
        if key != 0 && !self.keys.insert(key) {
            return Err(ImageError::Duplicate {
                what: self.key_what,
                id: format!("{key:#010x}"),
                place,
            });
        }
        if let Some(table) = table {
            if !table.contains(&(virtual_id as u32)) {
                return Err(ImageError::MissingFromTable {
                    what: self.what,
                    id: virtual_id,
                    table: self.table_name,
                    place,
                });
            }
        }
        Ok(())
    }
}

/// Owner and creator IDs: `(uid_t)-1` names no user (the set*id calls read it as "no
/// change"), so no object can have it.
fn check_perm(perm: &crate::model::IpcPerm, place: Place) -> Result<(), ImageError> {
    for (what, id) in [("uid", perm.uid), ("gid", perm.gid), ("cuid", perm.cuid), ("cgid", perm.cgid)] {
        if id == u32::MAX {
            return Err(out_of_range(what, i64::from(id), "0..=4294967294", place));
        }
    }
    Ok(())
}

fn check_sems(
    image: &Image,
    tables: &SysvTables,
    locate: &dyn Fn(Item) -> Place,
) -> Result<(), ImageError> {
    let mut objects = SysvObjects::new("sem set", "sem set virtual id", "sem set key", "sem", image.sems.len());
    for (i, set) in image.sems.iter().enumerate() {
        let place = || locate(Item::Sem(i));
        objects.check(set.virtual_id, set.perm.key, tables.sem.as_ref(), place())?;
        check_perm(&set.perm, place())?;
        if !(1..=SEMS_PER_SET_MAX).contains(&set.sems.len()) {
            return Err(out_of_range(
                "semaphore count",
                set.sems.len() as i64,
                "1..=32000",
                place(),
            ));
        }
        for sem in &set.sems {
            if sem.value > SEM_VALUE_MAX {
                return Err(out_of_range(
                    "semaphore value",
                    sem.value.into(),
                    "0..=32767",
                    place(),
                ));
            }
            check_pid_or_zero("semaphore last_pid", sem.last_pid, place)?;
        }
    }
    Ok(())
}

fn check_shms(
    image: &Image,
    tables: &SysvTables,
    locate: &dyn Fn(Item) -> Place,
) -> Result<(), ImageError> {
    let mut objects = SysvObjects::new(
        "shm segment",
        "shm segment virtual id",
        "shm segment key",
        "shm",
        image.shms.len(),
    );
    for (i, seg) in image.shms.iter().enumerate() {
        let place = || locate(Item::Shm(i));
        objects.check(seg.virtual_id, seg.perm.key, tables.shm.as_ref(), place())?;
        check_perm(&seg.perm, place())?;
        if seg.size == 0 {
            return Err(out_of_range(
                "shm segment size",
                0,
                "1..=1099511627776",
                place(),
            ));
        }
        if seg.size > SHM_SIZE_MAX {
            return Err(ImageError::TooLarge {
                what: "shm segment",
                size: seg.size,
                limit: SHM_SIZE_MAX,
                place: place(),
            });
        }
        if seg.data.len() as u64 != seg.size {
            return Err(bad(
                place(),
                format!(
                    "the segment holds {} data bytes but its size is {}",
                    seg.data.len(),
                    seg.size
                ),
            ));
        }
        check_pid_or_zero("shm segment cpid", seg.cpid, place)?;
        check_pid_or_zero("shm segment lpid", seg.lpid, place)?;
    }
    Ok(())
}

fn check_msgs(
    image: &Image,
    tables: &SysvTables,
    locate: &dyn Fn(Item) -> Place,
) -> Result<(), ImageError> {
    let mut objects = SysvObjects::new("msg queue", "msg queue virtual id", "msg queue key", "msg", image.msgs.len());
    for (i, queue) in image.msgs.iter().enumerate() {
        let place = || locate(Item::Msg(i));
        objects.check(
            queue.virtual_id,
            queue.perm.key,
            tables.msg.as_ref(),
            place(),
        )?;
        check_perm(&queue.perm, place())?;
        let mut total: u64 = 0;
        for message in &queue.messages {
            if message.mtype <= 0 {
                return Err(out_of_range(
                    "message type",
                    message.mtype,
                    "1..=9223372036854775807",
                    place(),
                ));
            }
            if message.data.len() > MSG_SIZE_MAX {
                return Err(ImageError::TooLarge {
                    what: "message",
                    size: message.data.len() as u64,
                    limit: MSG_SIZE_MAX as u64,
                    place: place(),
                });
            }
            total += message.data.len() as u64;
        }
        if total > QUEUE_BYTES_MAX {
            return Err(ImageError::TooLarge {
                what: "queue's messages",
                size: total,
                limit: QUEUE_BYTES_MAX,
                place: place(),
            });
        }
        check_pid_or_zero("msg queue lspid", queue.lspid, place)?;
        check_pid_or_zero("msg queue lrpid", queue.lrpid, place)?;
    }
    Ok(())
}

fn check_processes(image: &Image, locate: &dyn Fn(Item) -> Place) -> Result<(), ImageError> {
    // PIDs first, so that a repeated process is reported as such rather than as a
    // repeated TID (a process's PID is its main thread's TID).
    let mut pids = HashSet::with_capacity(image.processes.len());
    for (i, process) in image.processes.iter().enumerate() {
        let pid = process.virtual_pid;
        if !(1..=PID_MAX).contains(&pid) {
            return Err(out_of_range(
                "virtual pid",
                pid.into(),
                PID_ALLOWED,
                locate(Item::Process(i)),
            ));
        }
        if !in_pid_range(image, pid) {
            return Err(out_of_range(
                "virtual pid",
                pid.into(),
                IN_PID_RANGE,
                locate(Item::Process(i)),
            ));
        }
        if !pids.insert(pid) {
            return Err(ImageError::Duplicate {
                what: "virtual pid",
                id: pid.to_string(),
                place: locate(Item::Process(i)),
            });
        }
    }
    let mut tids = HashSet::new();
    for (i, process) in image.processes.iter().enumerate() {
        let place = || locate(Item::Process(i));
        check_pid_or_zero("virtual ppid", process.virtual_ppid, place)?;
        check_pid_or_zero("virtual pgid", process.virtual_pgid, place)?;
        check_pid_or_zero("virtual sid", process.virtual_sid, place)?;
        if !process.threads.contains(&process.virtual_pid) {
            return Err(bad(
                place(),
                format!(
                    "the thread list does not hold the main thread (virtual tid {})",
                    process.virtual_pid
                ),
            ));
        }
        for &tid in &process.threads {
            if !(1..=PID_MAX).contains(&tid) {
                return Err(out_of_range(
                    "virtual tid",
                    tid.into(),
                    PID_ALLOWED,
                    place(),
                ));
            }
            if !in_pid_range(image, tid) {
                return Err(out_of_range(
                    "virtual tid",
                    tid.into(),
                    IN_PID_RANGE,
                    place(),
                ));
            }
            if !tids.insert(tid) {
                return Err(ImageError::Duplicate {
                    what: "virtual tid",
                    id: tid.to_string(),
                    place: place(),
                });
            }
        }
        if process.exe.len() > EXE_PATH_MAX {
            return Err(ImageError::TooLarge {
                what: "executable path",
                size: process.exe.len() as u64,
                limit: EXE_PATH_MAX as u64,
                place: place(),
            });
        }
        if process.exe.contains(&0) {
            return Err(bad(
                place(),
                "the executable path contains a NUL byte".to_owned(),
            ));
        }
        let argv_bytes: u64 = process.cmdline.iter().map(|arg| arg.len() as u64).sum();
        if argv_bytes > CMDLINE_BYTES_MAX {
            return Err(ImageError::TooLarge {
                what: "argument list",
                size: argv_bytes,
                limit: CMDLINE_BYTES_MAX,
                place: place(),
            });
        }
        if let Some(n) = process.cmdline.iter().position(|arg| arg.contains(&0)) {
            return Err(bad(place(), format!("argument {n} contains a NUL byte")));
        }
    }
    Ok(())
}
