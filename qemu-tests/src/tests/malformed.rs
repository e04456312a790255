//! Malformed requests: wrong sizes (in the structure and in the command number), other
//! directions and numbers, bad pointers, non-zero reserved fields, unknown flags. Each
//! must fail with the documented errno and change nothing; afterwards the module works
//! and no AID is left over.
//!
//! Every command starts from a request that would succeed and have a visible effect (a
//! new AID, a LINK, an UNLINK, an UNREGISTER of the fixture, a NEXT_ID wish, a reserved
//! PID), so a check the module skips shows up as a changed fixture, not only as a wrong
//! errno. (A NEXT_ID wish shows only in the virtual ID of the AID's next SysV object:
//! after each refused NEXT_ID a process of the AID makes a semaphore set, whose ID must
//! not be the wish. A reservation shows in the AID's PID table; every good RESERVE_PID
//! that succeeds is released again.)

use std::mem::offset_of;

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;
use uapi::{
    InfoRequest, LinkRequest, ListRequest, NextIdRequest, RegisterRequest, ReservePidRequest,
    TableRequest, UnlinkRequest, UnregisterRequest, VersionRequest,
};

use crate::fixtures::next_sem_id;
use super::Test;
use crate::check::{expect_errno, SysResult};
use crate::device::{size_of, AidGuard, Device};
use crate::ensure_eq;
use crate::fixtures::{entries_of, expect_pid_table, release, sleeper};
use crate::proc::Agent;

pub const TESTS: &[Test] = &[
    Test::new("malformed/wrong_size_field_einval", wrong_size_field_einval),
    Test::new(
        "malformed/command_size_mismatch_einval",
        command_size_mismatch_einval,
    ),
    Test::new("malformed/wrong_direction_enotty", wrong_direction_enotty),
    Test::new("malformed/unknown_command_enotty", unknown_command_enotty),
    Test::new("malformed/null_argument_efault", null_argument_efault),
    Test::new(
        "malformed/unmapped_argument_efault",
        unmapped_argument_efault,
    ),
    Test::new(
        "malformed/request_straddling_unmapped_page_efault",
        request_straddling_unmapped_page_efault,
    ),
    Test::new(
        "malformed/read_only_argument_efault",
        read_only_argument_efault,
    ),
    Test::new(
        "malformed/bad_entries_pointer_efault",
        bad_entries_pointer_efault,
    ),
    Test::new(
        "malformed/unterminated_name_einval",
        unterminated_name_einval,
    ),
    Test::new(
        "malformed/nonzero_reserved_or_pad_einval",
        nonzero_reserved_or_pad_einval,
    ),
    Test::new(
        "malformed/unknown_flag_bits_einval",
        unknown_flag_bits_einval,
    ),
    Test::new(
        "malformed/bit_flips_leave_module_working",
        bit_flips_leave_module_working,
    ),
    Test::new(
        "malformed/larger_request_zero_tail_ok_else_e2big",
        larger_request_zero_tail_ok_else_e2big,
    ),
];

/// A request as bytes, 8-byte aligned, with room to spare (for commands whose number
/// claims a larger size than the structure).
#[derive(Clone)]
struct Raw {
    words: Vec<u64>,
}

impl Raw {
    const CAPACITY: usize = 1024;

    fn of<T: Copy>(req: &T) -> Raw {
        let mut raw = Raw {
            words: vec![0; Raw::CAPACITY / 8],
        };
        let size = std::mem::size_of::<T>();
        // SAFETY: `req` is `size` readable bytes; `words` has CAPACITY >= size bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                req as *const T as *const u8,
                raw.bytes_mut().as_mut_ptr(),
                size,
            )
        };
        raw
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the vector's u64s viewed as bytes, same lifetime and length in bytes.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.words.len() * 8)
        }
    }

    fn set_u32(&mut self, offset: usize, value: u32) {
        self.bytes_mut()[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn set_u64(&mut self, offset: usize, value: u64) {
        self.bytes_mut()[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }

    fn addr(&mut self) -> usize {
        self.words.as_mut_ptr() as usize
    }
}

/// A field that must be zero: name, offset, size in bytes.
type ZeroField = (&'static str, usize, usize);

/// One command and how to build a request for it that would succeed.
struct Command {
    name: &'static str,
    cmd: u32,
    size: usize,
    /// Flag bits the ABI defines for it.
    known_flags: u32,
    /// Its `pad` and `reserved` fields (inputs that must be zero).
    zero_fields: Vec<ZeroField>,
    /// Offsets of `pid` fields (never fuzzed: a flipped PID could be any process).
    pid_fields: Vec<usize>,
}

/// `reserved: [u64; n]` at `offset`, one entry per element.
fn reserved(offset: usize, n: usize) -> Vec<ZeroField> {
    (0..n).map(|i| ("reserved", offset + 8 * i, 8)).collect()
}

fn commands() -> Vec<Command> {
    vec![
        Command {
            name: "VERSION",
            cmd: uapi::IOC_VERSION,
            size: std::mem::size_of::<VersionRequest>(),
            known_flags: 0,
            zero_fields: reserved(offset_of!(VersionRequest, reserved), 4),
            pid_fields: vec![],
        },
        Command {
            name: "REGISTER",
            cmd: uapi::IOC_REGISTER,
            size: std::mem::size_of::<RegisterRequest>(),
            known_flags: uapi::REGISTER_PID_RANGE,
            zero_fields: reserved(offset_of!(RegisterRequest, reserved), 4),
            pid_fields: vec![],
        },
        Command {
            name: "LINK",
            cmd: uapi::IOC_LINK,
            size: std::mem::size_of::<LinkRequest>(),
            known_flags: 0,
            zero_fields: [
                vec![("pad", offset_of!(LinkRequest, pad), 4)],
                reserved(offset_of!(LinkRequest, reserved), 2),
            ]
            .concat(),
            pid_fields: vec![offset_of!(LinkRequest, pid)],
        },
        Command {
            name: "UNLINK",
            cmd: uapi::IOC_UNLINK,
            size: std::mem::size_of::<UnlinkRequest>(),
            known_flags: 0,
            zero_fields: [
                vec![("pad", offset_of!(UnlinkRequest, pad), 4)],
                reserved(offset_of!(UnlinkRequest, reserved), 2),
            ]
            .concat(),
            pid_fields: vec![offset_of!(UnlinkRequest, pid)],
        },
        Command {
            name: "UNREGISTER",
            cmd: uapi::IOC_UNREGISTER,
            size: std::mem::size_of::<UnregisterRequest>(),
            known_flags: uapi::UNREGISTER_FORCE | uapi::UNREGISTER_DESTROY_IPC,
            zero_fields: reserved(offset_of!(UnregisterRequest, reserved), 2),
            pid_fields: vec![],
        },
        Command {
            name: "LIST",
            cmd: uapi::IOC_LIST,
            size: std::mem::size_of::<ListRequest>(),
            known_flags: 0,
            zero_fields: reserved(offset_of!(ListRequest, reserved), 2),
            pid_fields: vec![],
        },
        Command {
            name: "INFO",
            cmd: uapi::IOC_INFO,
            size: std::mem::size_of::<InfoRequest>(),
            known_flags: 0,
            zero_fields: reserved(offset_of!(InfoRequest, reserved), 2),
            pid_fields: vec![],
        },
        Command {
            name: "TABLE",
            cmd: uapi::IOC_TABLE,
            size: std::mem::size_of::<TableRequest>(),
            known_flags: 0,
            zero_fields: [
                vec![("pad", offset_of!(TableRequest, pad), 4)],
                reserved(offset_of!(TableRequest, reserved), 2),
            ]
            .concat(),
            pid_fields: vec![],
        },
        Command {
            name: "NEXT_ID",
            cmd: uapi::IOC_NEXT_ID,
            size: std::mem::size_of::<NextIdRequest>(),
            known_flags: 0,
            zero_fields: reserved(offset_of!(NextIdRequest, reserved), 2),
            pid_fields: vec![],
        },
        Command {
            name: "RESERVE_PID",
            cmd: uapi::IOC_RESERVE_PID,
            size: std::mem::size_of::<ReservePidRequest>(),
            known_flags: uapi::RESERVE_PID_RELEASE,
            zero_fields: [
                vec![("pad", offset_of!(ReservePidRequest, pad), 4)],
                reserved(offset_of!(ReservePidRequest, reserved), 2),
            ]
            .concat(),
            // A virtual PID, not a process: a flip that makes another valid one reserves
            // it (released again, see `bit_flips_leave_module_working`).
            pid_fields: vec![],
        },
    ]
}

/// The virtual ID the fixture's good NEXT_ID asks for (for the next semaphore set of the
/// AID with a linked process): one that set would not get otherwise (an ordinary set's
/// virtual ID is its system ID, and the kernel's index 0x2a5b is never reached here).
const WISH: u32 = 0x2a5b;

/// Whether `cmd` carries NEXT_ID's type byte and number (any size or direction): a
/// request the module might wrongly run as NEXT_ID, leaving a wish.
fn is_next_id(cmd: u32) -> bool {
    uapi::ioc_type(cmd) == uapi::IOC_MAGIC && uapi::ioc_nr(cmd) == uapi::ioc_nr(uapi::IOC_NEXT_ID)
}

/// The virtual PID the fixture's good RESERVE_PID reserves in the AID with a linked
/// process: above the guest's `pid_max` (32768), so no task of the fixture has it, and
/// the masks `bit_flips_leave_module_working` applies to it never bring it below.
const RESERVED_PID: u32 = 0x2c5d7;

/// Whether `cmd` carries RESERVE_PID's type byte and number (any size or direction): a
/// request the module might wrongly run as RESERVE_PID, leaving a reservation.
fn is_reserve_pid(cmd: u32) -> bool {
    uapi::ioc_type(cmd) == uapi::IOC_MAGIC
        && uapi::ioc_nr(cmd) == uapi::ioc_nr(uapi::IOC_RESERVE_PID)
}

/// What the malformed requests aim at, and the check that none of them changed it.
struct Fixture {
    dev: Device,
    /// An empty AID: the target of LINK, UNREGISTER, INFO.
    empty: AidGuard,
    /// An AID with `linked` in it: the target of UNLINK and TABLE.
    full: AidGuard,
    linked: Agent,
    linked_entries: Vec<(i32, i32)>,
    /// An unlinked process: the target of LINK.
    target: Agent,
    /// AIDs registered before the test (the fixture's included).
    nr_aids: u32,
    /// AIDs registered before the fixture was built.
    nr_aids_before: u32,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let dev = Device::open()?;
        let nr_aids_before = dev.nr_aids()?;
        let empty = AidGuard::new(&dev, "mf-empty")?;
        let full = AidGuard::new(&dev, "mf-full")?;
        let linked = sleeper(&dev, Some(full.aid), 2)?;
        let linked_entries = entries_of(linked.pid())?;
        let target = sleeper(&dev, None, 1)?;
        let nr_aids = dev.nr_aids()?;
        Ok(Fixture {
            dev,
            empty,
            full,
            linked,
            linked_entries,
            target,
            nr_aids,
            nr_aids_before,
        })
    }

    /// A request for `cmd` that would succeed (and change something, for the privileged
    /// ones).
    fn good(&self, cmd: u32) -> Raw {
        match cmd {
            uapi::IOC_VERSION => {
                let mut r = VersionRequest::zeroed();
                r.size = size_of::<VersionRequest>();
                Raw::of(&r)
            }
            uapi::IOC_REGISTER => Raw::of(&Device::register_request(
                crate::device::unique_name("mf-new").as_bytes(),
            )),
            uapi::IOC_LINK => Raw::of(&Device::link_request(self.empty.aid, self.target.pid())),
            uapi::IOC_UNLINK => Raw::of(&Device::unlink_request(self.linked.pid())),
            uapi::IOC_UNREGISTER => Raw::of(&Device::unregister_request(self.empty.aid, 0)),
            uapi::IOC_LIST => {
                let mut r = ListRequest::zeroed();
                r.size = size_of::<ListRequest>();
                Raw::of(&r)
            }
            uapi::IOC_INFO => Raw::of(&Device::info_request(self.empty.aid, b"")),
            uapi::IOC_TABLE => {
                let mut r = TableRequest::zeroed();
                r.size = size_of::<TableRequest>();
                r.aid = self.full.aid;
                r.table = uapi::TABLE_PID;
                Raw::of(&r)
            }
            uapi::IOC_NEXT_ID => Raw::of(&Device::next_id_request(
                self.full.aid,
                uapi::TABLE_SEM,
                WISH,
            )),
            uapi::IOC_RESERVE_PID => {
                Raw::of(&Device::reserve_pid_request(self.full.aid, RESERVED_PID, 0))
            }
            _ => unreachable!("no such command {cmd:#x}"),
        }
    }

    /// Issues `cmd` on the bytes of `raw`.
    fn issue(&self, cmd: u32, raw: &mut Raw) -> SysResult<()> {
        // SAFETY: `raw` holds Raw::CAPACITY writable bytes, more than any size a command
        // number can claim here; its LIST/TABLE requests have capacity 0.
        unsafe { self.dev.ioctl_addr(cmd, raw.addr()) }
    }

    /// Fails unless nothing the fixture holds changed.
    fn verify(&self, what: &str) -> Result<()> {
        let dev = &self.dev;
        let nr_aids = dev.nr_aids().with_context(|| format!("{what}: VERSION"))?;
        if nr_aids != self.nr_aids {
            // Clean up whatever the request registered before failing.
            for info in dev.list()? {
                if crate::device::info_name(&info).starts_with("mf-new.") {
                    let _ = dev.unregister(info.aid, uapi::UNREGISTER_FORCE);
                }
            }
            bail!(
                "{what}: {nr_aids} AIDs registered afterwards, expected {}",
                self.nr_aids
            );
        }
        expect_pid_table(dev, self.empty.aid, &[], what)
            .with_context(|| "the empty AID changed".to_string())?;
        expect_pid_table(dev, self.full.aid, &self.linked_entries, what)
            .with_context(|| "the AID with a linked process changed".to_string())
    }

    /// [`Fixture::verify`], and for a number the module runs as NEXT_ID also that it
    /// left no wish: the AID's next semaphore set does not get [`WISH`]. (For one it runs
    /// as RESERVE_PID a reservation would change a PID table: said first, by name.)
    fn verify_cmd(&self, cmd: u32, what: &str) -> Result<()> {
        if is_reserve_pid(cmd) {
            for aid in [self.empty.aid, self.full.aid] {
                let table = self
                    .dev
                    .pid_table(aid)
                    .with_context(|| format!("{what}: TABLE pid of AID {aid}"))?;
                if let Some(e) = table
                    .iter()
                    .find(|e| e.owner_id == uapi::PID_OWNER_RESERVED)
                {
                    bail!("{what}: the refused RESERVE_PID took effect: AID {aid} holds reservation {e:?}");
                }
            }
        }
        self.verify(what)?;
        if is_next_id(cmd) {
            let id = next_sem_id(&self.dev, self.full.aid)
                .with_context(|| format!("{what}: a semaphore set made after it"))?;
            if id == i64::from(WISH) {
                bail!("{what}: the refused NEXT_ID took effect: the AID's next semaphore set got virtual ID {WISH}");
            }
        }
        Ok(())
    }

    /// Expects the wish of a NEXT_ID that succeeded to be used: the AID's next semaphore
    /// set gets [`WISH`].
    fn expect_wish_used(&self, what: &str) -> Result<()> {
        let id = next_sem_id(&self.dev, self.full.aid)
            .with_context(|| format!("{what}: a semaphore set made after it"))?;
        ensure_eq!(id, i64::from(WISH), "{what}: the virtual ID of the AID's next semaphore set");
        Ok(())
    }

    /// Expects the good RESERVE_PID that succeeded to show in the AID's PID table (virtual
    /// PID [`RESERVED_PID`], system ID 0, owner `PID_OWNER_RESERVED`; INFO counts it in
    /// the table's size, not as a thread), then releases it: the fixture is as before.
    fn expect_reserved_then_release(&self, what: &str) -> Result<()> {
        let (dev, aid) = (&self.dev, self.full.aid);
        let table = dev
            .pid_table(aid)
            .with_context(|| format!("{what}: TABLE pid"))?;
        let reserved: Vec<_> = table
            .iter()
            .filter(|e| e.owner_id == uapi::PID_OWNER_RESERVED)
            .map(|e| (e.virtual_id, e.system_id, e.flags))
            .collect();
        ensure_eq!(
            reserved,
            vec![(RESERVED_PID, 0, 0)],
            "{what}: the reservations in {table:?}"
        );
        let info = dev.info(aid).with_context(|| format!("{what}: INFO"))?;
        let threads = self.linked_entries.len() as u32;
        ensure_eq!(
            (info.nr_threads, info.table_sizes[uapi::TABLE_PID as usize]),
            (threads, threads + 1),
            "{what}: INFO's threads and PID table size"
        );
        dev.reserve_pid(aid, RESERVED_PID, uapi::RESERVE_PID_RELEASE)
            .with_context(|| format!("{what}: RELEASE of the reservation"))?;
        self.verify_cmd(uapi::IOC_RESERVE_PID, &format!("{what}, released"))
    }

    /// Expects `cmd` on `raw` to fail with `errno` and change nothing.
    fn expect(&self, cmd: u32, raw: &mut Raw, errno: i32, what: &str) -> Result<()> {
        expect_errno(self.issue(cmd, raw), errno, what)?;
        self.verify_cmd(cmd, what)
    }

    /// Tears the fixture down and checks the module still works and the AID count is back.
    fn finish(self) -> Result<()> {
        let Fixture {
            dev,
            empty,
            full,
            linked,
            target,
            nr_aids_before,
            ..
        } = self;
        release(linked)?;
        release(target)?;
        drop((empty, full));
        ensure_eq!(
            dev.nr_aids()?,
            nr_aids_before,
            "number of AIDs after the test"
        );
        let g = AidGuard::new(&dev, "mf-after").context("REGISTER after the malformed requests")?;
        let agent = sleeper(&dev, Some(g.aid), 1).context("LINK after the malformed requests")?;
        expect_pid_table(
            &dev,
            g.aid,
            &[(agent.pid(), agent.pid())],
            "a process linked afterwards",
        )?;
        dev.unregister(g.aid, uapi::UNREGISTER_FORCE)
            .context("UNREGISTER --force afterwards")?;
        release(agent)?;
        ensure_eq!(dev.nr_aids()?, nr_aids_before, "number of AIDs at the end");
        Ok(())
    }
}

/// Checks that the fixture's good requests do work (otherwise every "refused" below would
/// prove nothing): issued on throw-away copies of the targets.
fn good_requests_work(fx: &Fixture) -> Result<()> {
    let mut raw = fx.good(uapi::IOC_VERSION);
    fx.issue(uapi::IOC_VERSION, &mut raw)
        .context("a good VERSION")?;
    let mut raw = fx.good(uapi::IOC_INFO);
    fx.issue(uapi::IOC_INFO, &mut raw).context("a good INFO")?;
    let mut raw = fx.good(uapi::IOC_TABLE);
    fx.issue(uapi::IOC_TABLE, &mut raw)
        .context("a good TABLE")?;
    let mut raw = fx.good(uapi::IOC_LIST);
    fx.issue(uapi::IOC_LIST, &mut raw).context("a good LIST")?;
    // NEXT_ID's effect is used up by the probe that shows it (which is what tells a
    // refused NEXT_ID from one that acted).
    let mut raw = fx.good(uapi::IOC_NEXT_ID);
    fx.issue(uapi::IOC_NEXT_ID, &mut raw)
        .context("a good NEXT_ID")?;
    fx.expect_wish_used("a good NEXT_ID")?;
    fx.verify_cmd(uapi::IOC_NEXT_ID, "a good NEXT_ID, its wish used")?;
    // RESERVE_PID's reservation is released once seen.
    let mut raw = fx.good(uapi::IOC_RESERVE_PID);
    fx.issue(uapi::IOC_RESERVE_PID, &mut raw)
        .context("a good RESERVE_PID")?;
    fx.expect_reserved_then_release("a good RESERVE_PID")?;
    Ok(())
}

fn wrong_size_field_einval() -> Result<()> {
    let fx = Fixture::new()?;
    good_requests_work(&fx)?;
    for c in commands() {
        for size in [
            0,
            c.size - 1,
            c.size - 8,
            c.size + 8,
            4096,
            u32::MAX as usize,
        ] {
            let mut raw = fx.good(c.cmd);
            raw.set_u32(0, size as u32);
            fx.expect(
                c.cmd,
                &mut raw,
                libc::EINVAL,
                &format!("{} with size field {size} (struct {})", c.name, c.size),
            )?;
        }
    }
    fx.finish()
}

fn command_size_mismatch_einval() -> Result<()> {
    let fx = Fixture::new()?;
    for c in commands() {
        for size in [0, c.size - 8, c.size + 8, c.size * 2] {
            let cmd = uapi::iowr(uapi::ioc_nr(c.cmd), size);
            let mut raw = fx.good(c.cmd);
            fx.expect(
                cmd,
                &mut raw,
                libc::EINVAL,
                &format!("{} numbered with size {size} (struct {})", c.name, c.size),
            )?;
        }
    }
    fx.finish()
}

/// `_IOC(dir, APPSHOT_IOC_MAGIC, nr, size)` with any direction.
fn ioc(dir: u32, magic: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32 & 0x3fff) << 16) | ((magic & 0xff) << 8) | (nr & 0xff)
}

fn wrong_direction_enotty() -> Result<()> {
    let fx = Fixture::new()?;
    for c in commands() {
        for (dir, dname) in [(0, "_IO"), (1, "_IOW"), (2, "_IOR")] {
            let cmd = ioc(dir, uapi::IOC_MAGIC, uapi::ioc_nr(c.cmd), c.size);
            let mut raw = fx.good(c.cmd);
            fx.expect(
                cmd,
                &mut raw,
                libc::ENOTTY,
                &format!("{} as {dname}", c.name),
            )?;
        }
    }
    fx.finish()
}

fn unknown_command_enotty() -> Result<()> {
    let fx = Fixture::new()?;
    let version = std::mem::size_of::<VersionRequest>();
    let mut cases: Vec<(u32, String)> = Vec::new();
    // The first numbers after the last command, and two far beyond.
    let first_unknown = uapi::IOCTLS.len() as u32;
    for nr in [first_unknown, first_unknown + 1, 0x7f, 0xff] {
        cases.push((uapi::iowr(nr, version), format!("unknown number {nr:#x}")));
    }
    for magic in [0xa5u32, 0xa7, 0x00, b'T' as u32] {
        for c in commands() {
            cases.push((
                ioc(3, magic, uapi::ioc_nr(c.cmd), c.size),
                format!("{} with type byte {magic:#x}", c.name),
            ));
        }
    }
    cases.push((libc::TCGETS as u32, "TCGETS".to_string()));
    // The numbers above are past the last command only if every command is in
    // `commands()` and the ABI numbers them 0, 1, ...
    for (i, (name, cmd)) in uapi::IOCTLS.iter().enumerate() {
        ensure_eq!(uapi::ioc_nr(*cmd), i as u32, "number of {name}");
        if !commands().iter().any(|c| c.cmd == *cmd) {
            bail!("{name} is missing from this file's commands()");
        }
    }
    for (cmd, what) in cases {
        let mut raw = fx.good(uapi::IOC_VERSION);
        fx.expect(cmd, &mut raw, libc::ENOTTY, &what)?;
    }
    fx.finish()
}

fn null_argument_efault() -> Result<()> {
    let fx = Fixture::new()?;
    for c in commands() {
        // SAFETY: NULL is never written.
        expect_errno(
            unsafe { fx.dev.ioctl_addr(c.cmd, 0) },
            libc::EFAULT,
            &format!("{} with NULL", c.name),
        )?;
        fx.verify_cmd(c.cmd, c.name)?;
    }
    fx.finish()
}

/// Anonymous pages, unmapped when dropped.
struct Pages {
    addr: usize,
    len: usize,
}

impl Pages {
    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    fn map(n: usize) -> Result<Pages> {
        let len = n * Pages::page();
        let addr = crate::proc::map_anonymous(len, 0)?;
        Ok(Pages {
            addr: addr as usize,
            len,
        })
    }

    /// Sets the protection of page `index`.
    fn protect(&self, index: usize, prot: i32) -> Result<()> {
        let page = Pages::page();
        // SAFETY: the page lies inside our mapping.
        crate::check::sys(unsafe {
            libc::mprotect((self.addr + index * page) as *mut _, page, prot)
        })
        .context("mprotect")?;
        Ok(())
    }

    /// Copies `raw`'s first `len` bytes to `offset`.
    fn put(&self, offset: usize, raw: &mut Raw, len: usize) {
        assert!(offset + len <= self.len);
        // SAFETY: the destination lies inside our writable mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                raw.bytes_mut().as_ptr(),
                (self.addr + offset) as *mut u8,
                len,
            )
        };
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.addr as *mut _, self.len) };
    }
}

fn unmapped_argument_efault() -> Result<()> {
    let fx = Fixture::new()?;
    // An address that was mapped a moment ago.
    let gone = {
        let p = Pages::map(1)?;
        p.addr
    };
    for c in commands() {
        for (addr, what) in [
            (0x1000usize, "0x1000"),
            (gone, "an unmapped page"),
            (0xffff_8000_0000_0000, "a kernel address"),
        ] {
            // SAFETY: none of these addresses is mapped writable in this process.
            let r = unsafe { fx.dev.ioctl_addr(c.cmd, addr) };
            expect_errno(r, libc::EFAULT, &format!("{} with {what}", c.name))?;
            fx.verify_cmd(c.cmd, c.name)?;
        }
    }
    fx.finish()
}

fn request_straddling_unmapped_page_efault() -> Result<()> {
    let fx = Fixture::new()?;
    let pages = Pages::map(2)?;
    pages.protect(1, libc::PROT_NONE)?;
    let page = Pages::page();
    for c in commands() {
        // The request ends 8 bytes into the inaccessible page.
        let offset = page - c.size + 8;
        let mut raw = fx.good(c.cmd);
        pages.put(offset, &mut raw, c.size - 8);
        // SAFETY: the readable part is our mapping; the rest is PROT_NONE.
        let r = unsafe { fx.dev.ioctl_addr(c.cmd, pages.addr + offset) };
        expect_errno(
            r,
            libc::EFAULT,
            &format!("{} straddling into a PROT_NONE page", c.name),
        )?;
        fx.verify_cmd(c.cmd, c.name)?;
    }
    fx.finish()
}

fn read_only_argument_efault() -> Result<()> {
    let fx = Fixture::new()?;
    let pages = Pages::map(1)?;
    // Every command, those that change state included: the module proves it can write
    // the answer back before it acts, so a refused copy-out leaves nothing behind
    // (`fx.verify` checks the AIDs and tables are as they were).
    for (_, cmd) in uapi::IOCTLS.iter().copied() {
        pages.protect(0, libc::PROT_READ | libc::PROT_WRITE)?;
        let mut raw = fx.good(cmd);
        pages.put(0, &mut raw, uapi::ioc_size(cmd) as usize);
        pages.protect(0, libc::PROT_READ)?;
        // SAFETY: the page is read-only: the kernel cannot write it.
        let r = unsafe { fx.dev.ioctl_addr(cmd, pages.addr) };
        let name = uapi::IOCTLS
            .iter()
            .find(|(_, c)| *c == cmd)
            .map_or("?", |(n, _)| n);
        expect_errno(r, libc::EFAULT, &format!("{name} on a read-only page"))?;
        fx.verify_cmd(cmd, name)?;
    }
    fx.finish()
}

fn bad_entries_pointer_efault() -> Result<()> {
    let fx = Fixture::new()?;
    let entry_sizes = [
        (uapi::IOC_LIST, std::mem::size_of::<uapi::AidInfo>()),
        (uapi::IOC_TABLE, std::mem::size_of::<uapi::TableEntry>()),
    ];
    let ro = Pages::map(1)?;
    ro.protect(0, libc::PROT_READ)?;
    let gone = Pages::map(1)?.addr;
    let two = Pages::map(2)?;
    two.protect(1, libc::PROT_NONE)?;
    for (cmd, entry) in entry_sizes {
        let (name, entries_off, capacity_off, count_off) = if cmd == uapi::IOC_LIST {
            (
                "LIST",
                offset_of!(ListRequest, entries),
                offset_of!(ListRequest, capacity),
                offset_of!(ListRequest, count),
            )
        } else {
            (
                "TABLE",
                offset_of!(TableRequest, entries),
                offset_of!(TableRequest, capacity),
                offset_of!(TableRequest, count),
            )
        };
        // Both have at least two records here (two fixture AIDs; two linked threads).
        let straddle = two.addr + Pages::page() - entry;
        for (entries, capacity, what) in [
            (0usize, 4u32, "NULL"),
            (0x1000, 4, "0x1000"),
            (gone, 4, "an unmapped page"),
            (ro.addr, 4, "a read-only page"),
            (
                straddle,
                2,
                "an array whose second element is in a PROT_NONE page",
            ),
        ] {
            let mut raw = fx.good(cmd);
            raw.set_u64(entries_off, entries as u64);
            raw.set_u32(capacity_off, capacity);
            fx.expect(
                cmd,
                &mut raw,
                libc::EFAULT,
                &format!("{name} with entries = {what}, capacity {capacity}"),
            )?;
        }
        // With capacity 0 the pointer is not used: success and the full count.
        let mut raw = fx.good(cmd);
        raw.set_u64(entries_off, 0x1000);
        fx.issue(cmd, &mut raw)
            .with_context(|| format!("{name} with capacity 0 and a bad pointer"))?;
        let count = u32::from_ne_bytes(raw.bytes_mut()[count_off..count_off + 4].try_into()?);
        let want = if cmd == uapi::IOC_LIST {
            fx.nr_aids
        } else {
            fx.linked_entries.len() as u32
        };
        ensure_eq!(count, want, "{name} count with capacity 0");
    }
    fx.finish()
}

fn unterminated_name_einval() -> Result<()> {
    let fx = Fixture::new()?;
    let mut name = crate::device::unique_name("mf-unterm").into_bytes();
    name.resize(uapi::NAME_LEN, b'q');
    let mut raw = Raw::of(&Device::register_request(&name));
    fx.expect(
        uapi::IOC_REGISTER,
        &mut raw,
        libc::EINVAL,
        "REGISTER with 64 bytes and no NUL",
    )?;
    let mut raw = Raw::of(&Device::info_request(0, &name));
    fx.expect(
        uapi::IOC_INFO,
        &mut raw,
        libc::EINVAL,
        "INFO by a name with 64 bytes and no NUL",
    )?;
    fx.finish()
}

fn nonzero_reserved_or_pad_einval() -> Result<()> {
    let fx = Fixture::new()?;
    for c in commands() {
        for (field, offset, len) in &c.zero_fields {
            let values: &[u64] = if *len == 8 {
                &[1, 1 << 63]
            } else {
                &[1, 1 << 31]
            };
            for &value in values {
                let mut raw = fx.good(c.cmd);
                if *len == 8 {
                    raw.set_u64(*offset, value);
                } else {
                    raw.set_u32(*offset, value as u32);
                }
                fx.expect(
                    c.cmd,
                    &mut raw,
                    libc::EINVAL,
                    &format!("{} with {field}@{offset} = {value:#x}", c.name),
                )?;
            }
        }
    }
    fx.finish()
}

fn unknown_flag_bits_einval() -> Result<()> {
    let fx = Fixture::new()?;
    for c in commands() {
        for bit in 0..32 {
            let flag = 1u32 << bit;
            if c.known_flags & flag != 0 {
                continue;
            }
            let mut raw = fx.good(c.cmd);
            raw.set_u32(4, flag);
            fx.expect(
                c.cmd,
                &mut raw,
                libc::EINVAL,
                &format!("{} with unknown flag {flag:#x}", c.name),
            )?;
        }
        let mut raw = fx.good(c.cmd);
        raw.set_u32(4, !c.known_flags);
        fx.expect(
            c.cmd,
            &mut raw,
            libc::EINVAL,
            &format!("{} with every unknown flag", c.name),
        )?;
    }
    fx.finish()
}

fn bit_flips_leave_module_working() -> Result<()> {
    let fx = Fixture::new()?;
    let before: Vec<u64> = fx.dev.list()?.iter().map(|i| i.aid).collect();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    // UNREGISTER last: a flip that turns it into a valid request (FORCE) removes the
    // fixture's empty AID, and every later good request aimed at it would only see ENOENT.
    let mut order = commands();
    order.sort_by_key(|c| c.cmd == uapi::IOC_UNREGISTER);
    for c in order {
        for offset in 0..c.size {
            if c.pid_fields.iter().any(|&p| (p..p + 4).contains(&offset)) {
                continue;
            }
            for mask in [0x01u8, 0x80, 0xff] {
                let mut raw = fx.good(c.cmd);
                raw.bytes_mut()[offset] ^= mask;
                let result = fx.issue(c.cmd, &mut raw);
                let key = match result {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.name(),
                };
                *outcomes.entry(format!("{}:{key}", c.name)).or_default() += 1;
                // A flip may yield a valid request (another name, FORCE): undo its effect
                // so the next one starts from the fixture again.
                if result.is_ok() && c.cmd == uapi::IOC_REGISTER {
                    for info in fx.dev.list()? {
                        if !before.contains(&info.aid) {
                            let _ = fx.dev.unregister(info.aid, uapi::UNREGISTER_FORCE);
                        }
                    }
                }
                if result.is_ok() && c.cmd == uapi::IOC_RESERVE_PID {
                    // The answer is the request: the AID and virtual PID it reserved (a
                    // flip to RELEASE cannot succeed: nothing stays reserved).
                    let b = raw.bytes_mut();
                    let at = offset_of!(ReservePidRequest, aid);
                    let aid = u64::from_ne_bytes(b[at..at + 8].try_into()?);
                    let at = offset_of!(ReservePidRequest, virtual_id);
                    let virtual_id = u32::from_ne_bytes(b[at..at + 4].try_into()?);
                    fx.dev
                        .reserve_pid(aid, virtual_id, uapi::RESERVE_PID_RELEASE)
                        .with_context(|| {
                            format!("RELEASE of virtual PID {virtual_id} of AID {aid}, which a flipped RESERVE_PID reserved")
                        })?;
                }
            }
        }
    }
    crate::diag!("outcomes: {outcomes:?}");
    // What a flipped UNREGISTER/UNLINK/LINK may have done to the fixture is fine; the
    // module must simply still work and hold nothing extra.
    let Fixture {
        dev,
        empty,
        full,
        linked,
        target,
        nr_aids_before,
        ..
    } = fx;
    for info in dev.list()? {
        if !before.contains(&info.aid) {
            bail!(
                "AID {} ({}) appeared and was not cleaned up",
                info.aid,
                crate::device::info_name(&info)
            );
        }
    }
    drop((empty, full));
    release(linked)?;
    release(target)?;
    ensure_eq!(
        dev.nr_aids()?,
        nr_aids_before,
        "number of AIDs after the flips"
    );
    let g = AidGuard::new(&dev, "mf-flip-after")?;
    let agent = sleeper(&dev, Some(g.aid), 1)?;
    expect_pid_table(
        &dev,
        g.aid,
        &[(agent.pid(), agent.pid())],
        "a process linked after the flips",
    )?;
    release(agent)
}

/// Issue #9 section 4: structures grow. A newer caller's larger request (number and
/// `size` field both saying so) is accepted when every byte beyond the structure this
/// module knows is zero, and answered exactly like the structure-sized one, with nothing
/// written past what the module knows; a non-zero byte there is `E2BIG` (the caller
/// asks for something this module does not have); a size beyond a page is `E2BIG`; a
/// size below the structure's first version is `EINVAL` (`wrong_size_field_einval`,
/// `command_size_mismatch_einval`). (Before: any size but the structure's was `EINVAL`.)
fn larger_request_zero_tail_ok_else_e2big() -> Result<()> {
    let fx = Fixture::new()?;
    // NEXT_ID acts (it leaves a wish, which the AID's next semaphore set uses up): each
    // accepted one is checked by that set's virtual ID; each refused one must leave none.
    // So does RESERVE_PID: each accepted reservation is checked in the table and
    // released.
    let acted = |cmd: u32, what: &str| -> Result<()> {
        if cmd == uapi::IOC_NEXT_ID {
            fx.expect_wish_used(what)?;
        }
        if cmd == uapi::IOC_RESERVE_PID {
            fx.expect_reserved_then_release(what)?;
        }
        Ok(())
    };
    for cmd in [
        uapi::IOC_VERSION,
        uapi::IOC_INFO,
        uapi::IOC_LIST,
        uapi::IOC_TABLE,
        uapi::IOC_NEXT_ID,
        uapi::IOC_RESERVE_PID,
    ] {
        let size = uapi::ioc_size(cmd) as usize;
        let name = commands().into_iter().find(|c| c.cmd == cmd).map_or("?", |c| c.name);
        let mut exact = fx.good(cmd);
        fx.issue(cmd, &mut exact).with_context(|| format!("{name} with its own size"))?;
        acted(cmd, &format!("{name} with its own size"))?;
        for extra in [8, 64, 200] {
            let bigger = uapi::iowr(uapi::ioc_nr(cmd), size + extra);
            let mut raw = fx.good(cmd);
            raw.set_u32(0, (size + extra) as u32);
            // A marker after the zero tail: the module must not write there.
            raw.set_u64(size + extra, 0x5a5a_5a5a_5a5a_5a5a);
            fx.issue(bigger, &mut raw)
                .with_context(|| format!("{name} {extra} bytes larger, zero tail"))?;
            acted(cmd, &format!("{name} {extra} bytes larger, zero tail"))?;
            let answer = raw.bytes_mut()[4..size].to_vec();
            let want = exact.bytes_mut()[4..size].to_vec();
            ensure_eq!(answer, want, "{name} {extra} bytes larger: the answer");
            let untouched = raw.bytes_mut()[size..size + extra].iter().all(|&b| b == 0)
                && raw.bytes_mut()[size + extra..size + extra + 8] == [0x5a; 8];
            ensure_eq!(untouched, true, "{name} {extra} bytes larger: nothing written past the structure");
            let mut raw = fx.good(cmd);
            raw.set_u32(0, (size + extra) as u32);
            raw.bytes_mut()[size + extra - 1] = 1;
            fx.expect(bigger, &mut raw, libc::E2BIG, &format!("{name} {extra} bytes larger, non-zero tail"))?;
        }
        let mut raw = fx.good(cmd);
        raw.set_u32(0, 5000);
        fx.expect(uapi::iowr(uapi::ioc_nr(cmd), 5000), &mut raw, libc::E2BIG, &format!("{name} of 5000 bytes"))?;
    }
    fx.finish()
}
