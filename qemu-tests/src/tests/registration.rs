//! REGISTER, INFO, LIST and VERSION: names, AID numbers and PID ranges. INFO by name and
//! number, and a fresh AID's empty tables, are checked with a PID range and without.

use anyhow::{bail, Context, Result};
use appshot_uapi as uapi;

use super::Test;
use crate::aid_fixture::{for_each_flavor, AidFixture};
use crate::check::expect_errno;
use crate::device::{info_name, AidGuard, Device};
use crate::ensure_eq;

pub const TESTS: &[Test] = &[
    Test::new("registration/version_reports_abi", version_reports_abi),
    Test::new(
        "registration/valid_name_returns_aid",
        valid_name_returns_aid,
    ),
    Test::new("registration/empty_name_einval", empty_name_einval),
    Test::new(
        "registration/bytes_after_nul_einval",
        bytes_after_nul_einval,
    ),
    Test::new(
        "registration/unterminated_64_byte_name_einval",
        unterminated_64_byte_name_einval,
    ),
    Test::new("registration/name_of_63_bytes_ok", name_of_63_bytes_ok),
    Test::new(
        "registration/non_printable_byte_einval",
        non_printable_byte_einval,
    ),
    Test::new("registration/space_einval", space_einval),
    Test::new("registration/printable_edges_ok", printable_edges_ok),
    Test::new("registration/duplicate_name_eexist", duplicate_name_eexist),
    Test::new(
        "registration/info_by_name_and_number_agree",
        info_by_name_and_number_agree,
    ),
    Test::new("registration/info_unknown_enoent", info_unknown_enoent),
    Test::new(
        "registration/aids_increase_never_reused",
        aids_increase_never_reused,
    ),
    Test::new("registration/pid_range_reported", pid_range_reported),
    Test::new("registration/bad_pid_range_einval", bad_pid_range_einval),
    Test::new(
        "registration/list_in_aid_order_with_capacity",
        list_in_aid_order_with_capacity,
    ),
    Test::new(
        "registration/table_of_fresh_aid_empty",
        table_of_fresh_aid_empty,
    ),
];

/// Expects REGISTER of the raw name `field` to fail with EINVAL, and nothing registered.
fn expect_name_refused(dev: &Device, field: &[u8], what: &str) -> Result<()> {
    let before = dev.nr_aids()?;
    let mut req = Device::register_request(field);
    let result = dev.ioctl(uapi::IOC_REGISTER, &mut req);
    if result.is_ok() {
        // Do not leak it into later tests.
        let _guard = AidGuard::adopt(req.aid, what);
    }
    expect_errno(result.map(|_| req.aid), libc::EINVAL, what)?;
    ensure_eq!(
        dev.nr_aids()?,
        before,
        "{what}: number of AIDs after the refusal"
    );
    Ok(())
}

fn version_reports_abi() -> Result<()> {
    let dev = Device::open()?;
    let v = dev.version()?;
    ensure_eq!(
        v.size,
        crate::device::size_of::<uapi::VersionRequest>(),
        "size written back"
    );
    ensure_eq!(v.flags, 0, "flags written back");
    ensure_eq!(v.abi_version, uapi::ABI_VERSION, "abi_version");
    ensure_eq!(v.name_max, uapi::NAME_MAX as u32, "name_max");
    ensure_eq!(v.features, uapi::FEATURES, "features");
    ensure_eq!(
        v.entry_limit,
        crate::kmod::max_entries()?,
        "entry_limit vs the max_entries parameter"
    );
    ensure_eq!(v.reserved, [0; 4], "reserved");
    ensure_eq!(v.nr_aids, dev.list_count()?, "nr_aids vs LIST count");
    let g = AidGuard::new(&dev, "ver")?;
    ensure_eq!(dev.nr_aids()?, v.nr_aids + 1, "nr_aids after one REGISTER");
    drop(g);
    ensure_eq!(dev.nr_aids()?, v.nr_aids, "nr_aids after UNREGISTER");
    Ok(())
}

fn valid_name_returns_aid() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("reg-ok");
    let mut req = Device::register_request(name.as_bytes());
    dev.ioctl(uapi::IOC_REGISTER, &mut req)
        .with_context(|| format!("register {name}"))?;
    let g = AidGuard::adopt(req.aid, &name);
    if g.aid == 0 {
        bail!("REGISTER returned AID 0");
    }
    ensure_eq!(req.reserved, [0; 4], "reserved written back");
    let info = dev.info(g.aid)?;
    ensure_eq!(info.aid, g.aid, "INFO aid");
    ensure_eq!(info_name(&info), name, "INFO name");
    ensure_eq!(info.flags, 0, "INFO flags (no PID range)");
    ensure_eq!(info.owner_uid, 0, "INFO owner_uid");
    ensure_eq!((info.pid_min, info.pid_max), (0, 0), "INFO PID range");
    ensure_eq!((info.nr_processes, info.nr_threads), (0, 0), "INFO counts");
    ensure_eq!(info.table_sizes, [0; uapi::TABLE_COUNT], "INFO table sizes");
    ensure_eq!((info.pad, info.reserved), (0, [0; 2]), "INFO pad/reserved");
    let listed = dev
        .list()?
        .into_iter()
        .filter(|i| i.aid == g.aid)
        .collect::<Vec<_>>();
    ensure_eq!(listed, vec![info], "LIST record of the new AID");
    Ok(())
}

fn empty_name_einval() -> Result<()> {
    let dev = Device::open()?;
    expect_name_refused(&dev, b"", "empty name")?;
    // A name field whose first byte is NUL but which has bytes after it is still empty.
    expect_name_refused(&dev, b"\0abc", "NUL then bytes")
}

/// "abc\0junk" must not register "abc": the bytes after the NUL must be zero, so two
/// fields naming the same AID are always equal.
fn bytes_after_nul_einval() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("nul");
    let mut field = name.clone().into_bytes();
    field.push(0);
    field.extend_from_slice(b"junk");
    expect_name_refused(&dev, &field, "name followed by NUL and junk")?;
    ensure_eq!(
        dev.info_by_name(name.as_bytes())
            .map(|i| i.aid)
            .err()
            .map(|e| e.0),
        Some(libc::ENOENT),
        "INFO of the part before the NUL (must not have been registered)"
    );
    Ok(())
}

fn unterminated_64_byte_name_einval() -> Result<()> {
    let dev = Device::open()?;
    let mut name = crate::device::unique_name("unterm").into_bytes();
    name.resize(uapi::NAME_LEN, b'x');
    expect_name_refused(&dev, &name, "64 bytes, no NUL")?;
    ensure_eq!(
        dev.info_by_name(&name[..63])
            .map(|i| i.aid)
            .err()
            .map(|e| e.0),
        Some(libc::ENOENT),
        "INFO of the 63-byte prefix (must not have been registered truncated)"
    );
    Ok(())
}

fn name_of_63_bytes_ok() -> Result<()> {
    let dev = Device::open()?;
    let mut name = crate::device::unique_name("n63").into_bytes();
    name.resize(uapi::NAME_MAX, b'y');
    let name = String::from_utf8(name)?;
    let g = AidGuard::adopt(
        dev.register(&name).context("register a 63-byte name")?,
        &name,
    );
    let info = dev.info(g.aid)?;
    ensure_eq!(info_name(&info), name, "INFO name");
    ensure_eq!(info.name[63], 0, "NUL in the last byte");
    ensure_eq!(
        dev.info_by_name(name.as_bytes())?.aid,
        g.aid,
        "INFO by the 63-byte name"
    );
    Ok(())
}

fn non_printable_byte_einval() -> Result<()> {
    let dev = Device::open()?;
    for byte in [0x01u8, 0x09, 0x0a, 0x1f, 0x7f, 0x80, 0xff] {
        let mut name = crate::device::unique_name("np").into_bytes();
        name.insert(1, byte);
        expect_name_refused(&dev, &name, &format!("name with byte {byte:#04x}"))?;
    }
    Ok(())
}

fn space_einval() -> Result<()> {
    let dev = Device::open()?;
    let name = crate::device::unique_name("sp");
    expect_name_refused(&dev, format!("a {name}").as_bytes(), "space inside")?;
    expect_name_refused(&dev, format!(" {name}").as_bytes(), "leading space")?;
    expect_name_refused(&dev, format!("{name} ").as_bytes(), "trailing space")
}

fn printable_edges_ok() -> Result<()> {
    let dev = Device::open()?;
    // 0x21 and 0x7e are the first and last accepted bytes.
    let name = format!("!{}~", crate::device::unique_name("edge"));
    let g = AidGuard::adopt(
        dev.register(&name)
            .with_context(|| format!("register {name:?}"))?,
        &name,
    );
    ensure_eq!(info_name(&dev.info(g.aid)?), name, "INFO name");
    Ok(())
}

fn duplicate_name_eexist() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "dup")?;
    let before = dev.nr_aids()?;
    let again = dev.register(&g.name);
    if let Ok(aid) = again {
        let _leak = AidGuard::adopt(aid, &g.name);
    }
    expect_errno(again, libc::EEXIST, "second REGISTER of the same name")?;
    ensure_eq!(dev.nr_aids()?, before, "number of AIDs after EEXIST");
    // Once unregistered, the name is free again, under a new number.
    let old = g.aid;
    let name = g.name.clone();
    drop(g);
    let g = AidGuard::adopt(
        dev.register(&name).context("register the freed name")?,
        &name,
    );
    if g.aid <= old {
        bail!(
            "re-registered name got AID {}, not above the old {old}",
            g.aid
        );
    }
    Ok(())
}

fn info_by_name_and_number_agree() -> Result<()> {
    for_each_flavor("info", |g| {
        let dev = &g.dev;
        let other = AidGuard::new(dev, "info-other")?;
        let by_number = dev.info(g.aid())?;
        let by_name = dev.info_by_name(g.name().as_bytes())?;
        ensure_eq!(by_name, by_number, "INFO by name vs by number");
        ensure_eq!(by_name.aid, g.aid(), "INFO by name: aid");
        ensure_eq!(
            dev.info_by_name(other.name.as_bytes())?.aid,
            other.aid,
            "INFO by the other name"
        );
        let mut req = Device::info_request(g.aid(), b"");
        dev.ioctl(uapi::IOC_INFO, &mut req)
            .context("INFO by number")?;
        ensure_eq!(req.reserved, [0; 2], "reserved written back");
        Ok(())
    })
}

fn info_unknown_enoent() -> Result<()> {
    let dev = Device::open()?;
    let g = AidGuard::new(&dev, "unk")?;
    expect_errno(dev.info(u64::MAX), libc::ENOENT, "INFO of AID 2^64-1")?;
    expect_errno(
        dev.info(g.aid + 1_000_000),
        libc::ENOENT,
        "INFO of an AID never handed out",
    )?;
    let missing = crate::device::unique_name("missing");
    expect_errno(
        dev.info_by_name(missing.as_bytes()),
        libc::ENOENT,
        "INFO of an unknown name",
    )?;
    expect_errno(
        dev.info_by_name(b""),
        libc::EINVAL,
        "INFO aid 0 with an empty name",
    )?;
    expect_errno(
        dev.info_by_name(b"a b"),
        libc::EINVAL,
        "INFO aid 0 with a space in the name",
    )?;
    expect_errno(
        dev.info_by_name(&[b'z'; 64]),
        libc::EINVAL,
        "INFO aid 0 with an unterminated name",
    )?;
    let aid = g.aid;
    drop(g);
    expect_errno(dev.info(aid), libc::ENOENT, "INFO after UNREGISTER")
}

fn aids_increase_never_reused() -> Result<()> {
    let dev = Device::open()?;
    let a = AidGuard::new(&dev, "seq-a")?;
    let b = AidGuard::new(&dev, "seq-b")?;
    let c = AidGuard::new(&dev, "seq-c")?;
    if !(a.aid < b.aid && b.aid < c.aid) {
        bail!(
            "AIDs not strictly increasing: {} {} {}",
            a.aid,
            b.aid,
            c.aid
        );
    }
    let highest = c.aid;
    // Freeing the highest (and a middle) number must not make either available again.
    drop(c);
    drop(b);
    let d = AidGuard::new(&dev, "seq-d")?;
    if d.aid <= highest {
        bail!(
            "AID {} handed out after {highest} was unregistered: reused or decreasing",
            d.aid
        );
    }
    let e = AidGuard::new(&dev, "seq-e")?;
    if e.aid <= d.aid {
        bail!("AID {} after {}: not increasing", e.aid, d.aid);
    }
    ensure_eq!(dev.info(a.aid)?.aid, a.aid, "the first AID is untouched");
    Ok(())
}

fn pid_range_reported() -> Result<()> {
    let dev = Device::open()?;
    for (min, max) in [(300u32, 4_194_303u32), (1, 1), (1000, 1999)] {
        let name = crate::device::unique_name("range");
        let aid = dev
            .register_range(&name, min, max)
            .with_context(|| format!("register with range {min}-{max}"))?;
        let g = AidGuard::adopt(aid, &name);
        let info = dev.info(g.aid)?;
        ensure_eq!(
            info.flags,
            uapi::AID_PID_RANGE,
            "INFO flags for range {min}-{max}"
        );
        ensure_eq!((info.pid_min, info.pid_max), (min, max), "INFO range");
        let listed = dev
            .list()?
            .into_iter()
            .find(|i| i.aid == g.aid)
            .context("AID missing from LIST")?;
        ensure_eq!(
            (listed.flags, listed.pid_min, listed.pid_max),
            (uapi::AID_PID_RANGE, min, max),
            "LIST range"
        );
    }
    Ok(())
}

fn bad_pid_range_einval() -> Result<()> {
    let dev = Device::open()?;
    let before = dev.nr_aids()?;
    for (min, max) in [
        (0u32, 5u32),
        (0, 0),
        (10, 5),
        (1, 4_194_304),
        (4_194_304, 4_194_304),
        (5, u32::MAX),
    ] {
        let name = crate::device::unique_name("badrange");
        let result = dev.register_range(&name, min, max);
        if let Ok(aid) = result {
            let _leak = AidGuard::adopt(aid, &name);
        }
        expect_errno(result, libc::EINVAL, &format!("PID range {min}-{max}"))?;
        expect_errno(
            dev.info_by_name(name.as_bytes()),
            libc::ENOENT,
            "INFO of the refused name",
        )?;
    }
    ensure_eq!(dev.nr_aids()?, before, "number of AIDs after the refusals");
    Ok(())
}

fn list_in_aid_order_with_capacity() -> Result<()> {
    let dev = Device::open()?;
    let guards = [
        AidGuard::new(&dev, "list-a")?,
        AidGuard::new(&dev, "list-b")?,
        AidGuard::new(&dev, "list-c")?,
    ];
    let count = dev.list_count()?;
    ensure_eq!(count, dev.nr_aids()?, "LIST count vs VERSION nr_aids");
    let all = dev.list()?;
    ensure_eq!(all.len() as u32, count, "LIST records");
    if !all.windows(2).all(|w| w[0].aid < w[1].aid) {
        bail!(
            "LIST not in AID order: {:?}",
            all.iter().map(|i| i.aid).collect::<Vec<_>>()
        );
    }
    for g in &guards {
        let info = all
            .iter()
            .find(|i| i.aid == g.aid)
            .with_context(|| format!("AID {} missing from LIST", g.aid))?;
        ensure_eq!(info_name(info), g.name, "LIST name of AID {}", g.aid);
    }
    // Capacity 1: one record written, the full count reported, the rest untouched.
    let mut sentinel = uapi::AidInfo::zeroed();
    sentinel.aid = 0xdead_beef;
    let mut two = [sentinel; 2];
    let n = dev.list_into(&mut two[..1])?;
    ensure_eq!(n, count, "count with capacity 1");
    ensure_eq!(two[0].aid, all[0].aid, "first record with capacity 1");
    ensure_eq!(two[1], sentinel, "element past the capacity");
    Ok(())
}

fn table_of_fresh_aid_empty() -> Result<()> {
    for_each_flavor("tbl", table_of_fresh_aid_empty_in)
}

fn table_of_fresh_aid_empty_in(fx: &AidFixture) -> Result<()> {
    let (dev, aid) = (&fx.dev, fx.aid());
    for table in 0..uapi::TABLE_COUNT as u32 {
        ensure_eq!(
            dev.table(aid, table)?.len(),
            0,
            "table {} of a new AID",
            uapi::TABLE_NAMES[table as usize]
        );
    }
    let mut entries = [uapi::TableEntry::zeroed(); 1];
    expect_errno(
        dev.table_into(aid, uapi::TABLE_COUNT as u32, &mut entries),
        libc::EINVAL,
        "TABLE type 5",
    )?;
    expect_errno(
        dev.table_into(aid, u32::MAX, &mut entries),
        libc::EINVAL,
        "TABLE type 2^32-1",
    )?;
    expect_errno(
        dev.table_into(u64::MAX, uapi::TABLE_PID, &mut entries),
        libc::ENOENT,
        "TABLE of an unknown AID",
    )
}
