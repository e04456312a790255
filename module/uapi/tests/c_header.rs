//! The C header is generated from the Rust ABI; these tests keep the committed copy
//! current and prove a C compiler lays the structures out exactly as Rust does.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn committed_header() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("appshot.h")
}

#[test]
fn committed_header_is_current() {
    let committed = std::fs::read_to_string(committed_header()).expect("module/uapi/appshot.h exists");
    assert!(
        committed == appshot_uapi::c_header::header(),
        "module/uapi/appshot.h is stale: run `cargo xtask header`"
    );
}

#[test]
fn c_compiler_agrees_on_every_offset_and_size() {
    let mut program = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"appshot.h\"\nint main(void) {\n");
    let layouts = appshot_uapi::layouts();
    for (name, _, fields) in &layouts {
        writeln!(program, "printf(\"%s %zu\\n\", \"{name}\", sizeof(struct {name}));").unwrap();
        for (field, _, _) in fields {
            writeln!(
                program,
                "printf(\"%s.%s %zu %zu\\n\", \"{name}\", \"{field}\", offsetof(struct {name}, {field}), sizeof(((struct {name} *)0)->{field}));"
            )
            .unwrap();
        }
    }
    program.push_str("return 0; }\n");

    let dir = std::env::temp_dir().join(format!("appshot-uapi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("appshot.h"), appshot_uapi::c_header::header()).unwrap();
    std::fs::write(dir.join("layout.c"), program).unwrap();
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(dir.join("layout"))
        .arg(dir.join("layout.c"))
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success(), "the generated header does not compile");
    let output = Command::new(dir.join("layout")).output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();

    let mut expected = String::new();
    for (name, size, fields) in &layouts {
        writeln!(expected, "{name} {size}").unwrap();
        for (field, offset, fsize) in fields {
            writeln!(expected, "{name}.{field} {offset} {fsize}").unwrap();
        }
    }
    assert_eq!(printed, expected);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_structure_is_padded_to_eight_bytes() {
    for (name, size, fields) in appshot_uapi::layouts() {
        assert_eq!(size % 8, 0, "{name} is {size} bytes");
        let used: usize = fields.iter().map(|f| f.2).sum();
        assert_eq!(used, size, "{name} has implicit padding");
    }
}
