//! `docs/image-format.md` against the code: the `inspect` example is what `inspect_text`
//! prints, the hex dump of the smallest image is what the writer writes, and the limits
//! the format shares with the module's ABI are the module's.

mod common;

use appshot_image::*;
use common::*;

fn format_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/image-format.md");
    std::fs::read_to_string(path).expect("docs/image-format.md")
}

/// The fenced block that follows `<!-- marker -->` in the document.
fn block_after(doc: &str, marker: &str) -> String {
    let start = doc
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("no {marker} marker"));
    let rest = &doc[start..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

/// The image of the document's worked example.
fn smallest_image() -> Image {
    Image {
        app: AppRecord {
            name: "demo".into(),
            pid_range: Some((300, 399)),
            source_aid: 3,
            created_unix: 1_764_556_800,
            kernel_release: "6.12.0".into(),
        },
        tables: vec![],
        sems: vec![],
        shms: vec![],
        msgs: vec![],
        processes: vec![],
        notices: vec![],
    }
}

/// `xxd`-style lines: offset, 16 bytes in hex pairs.
fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(n, line)| {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:08x}: {}\n", n * 16, hex.join(" "))
        })
        .collect()
}

#[test]
fn inspect_example_is_current() {
    let expected = inspect_text(&example_image());
    assert_eq!(
        block_after(&format_doc(), "inspect-example"),
        expected,
        "update docs/image-format.md:\n{expected}"
    );
}

#[test]
fn smallest_image_dump_is_current() {
    let bytes = encode(&smallest_image());
    let expected = hex_dump(&bytes);
    assert_eq!(
        block_after(&format_doc(), "smallest-image-hex"),
        expected,
        "update docs/image-format.md:\n{expected}"
    );
    assert_eq!(read_image(&bytes).unwrap(), smallest_image());
}

#[test]
fn limits_agree_with_the_module_abi() {
    assert_eq!(PID_MAX, appshot_uapi::PID_RANGE_LIMIT - 1);
    assert_eq!(APP_NAME_MAX, appshot_uapi::NAME_MAX);
    for kind in TableKind::ALL {
        let abi = match kind {
            TableKind::Pid => appshot_uapi::TABLE_PID,
            TableKind::Sem => appshot_uapi::TABLE_SEM,
            TableKind::Shm => appshot_uapi::TABLE_SHM,
            TableKind::Msg => appshot_uapi::TABLE_MSG,
            TableKind::Key => appshot_uapi::TABLE_KEY,
        };
        assert_eq!(kind as u32, abi, "{kind:?}");
        assert_eq!(TableKind::from_u32(abi), Some(kind));
    }
    assert_eq!(TableKind::ALL.len(), appshot_uapi::TABLE_COUNT);
    // The name rule is the module's.
    let mut image = smallest_image();
    for name in [
        "a",
        "db-server_1",
        "~!",
        "with space",
        "",
        "tab\t",
        "é",
        &"x".repeat(63),
        &"x".repeat(64),
    ] {
        image.app.name = name.to_owned();
        assert_eq!(
            image.validate().is_ok(),
            appshot_uapi::check_name(name.as_bytes()).is_ok(),
            "{name:?}"
        );
    }
    // So is the PID range rule.
    for (min, max) in [
        (1, 1),
        (0, 5),
        (5, 4),
        (1, PID_MAX),
        (1, PID_MAX + 1),
        (300, 399),
    ] {
        image.app.pid_range = Some((min, max));
        image.app.name = "a".into();
        assert_eq!(
            image.validate().is_ok(),
            appshot_uapi::check_pid_range(min, max),
            "{min}-{max}"
        );
    }
}
