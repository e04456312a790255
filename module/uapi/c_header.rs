// SPDX-License-Identifier: GPL-2.0-only
//! Renders the ABI definitions as the C header `appshot.h`.
//!
//! The header is generated, never edited: `cargo xtask header` rewrites
//! `module/uapi/appshot.h`, and a test checks the committed copy is current.

use std::fmt::Write;
use std::string::String;

/// How a Rust field type is spelled in C.
pub trait CField {
    /// The C type of the field (or of one element, for arrays).
    fn c_type() -> &'static str;
    /// What follows the field name: `[N]` for arrays, nothing otherwise.
    fn c_suffix() -> String {
        String::new()
    }
}

macro_rules! c_scalar {
    ($($rust:ty => $c:literal),*) => {
        $(impl CField for $rust {
            fn c_type() -> &'static str {
                $c
            }
        })*
    };
}
c_scalar!(u8 => "__u8", u16 => "__u16", u32 => "__u32", u64 => "__u64", i32 => "__s32", i64 => "__s64");

impl<T: CField, const N: usize> CField for [T; N] {
    fn c_type() -> &'static str {
        T::c_type()
    }
    fn c_suffix() -> String {
        std::format!("[{N}]{}", T::c_suffix())
    }
}

/// One field of a structure, as the C renderer needs it.
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) c_type: &'static str,
    pub(crate) c_suffix: String,
    pub(crate) offset: usize,
    pub(crate) docs: &'static [&'static str],
}

fn write_docs(out: &mut String, indent: &str, docs: &[&str]) {
    for line in docs {
        let _ = writeln!(out, "{indent}/*{} */", line.trim_end());
    }
}

pub(crate) fn write_define(out: &mut String, name: &str, docs: &[&str], value: u64) {
    write_docs(out, "", docs);
    let _ = writeln!(out, "#define {name} {value:#x}\n");
}

pub(crate) fn write_ioctl(out: &mut String, name: &str, docs: &[&str], nr: u32, c_type: &str) {
    write_docs(out, "", docs);
    let _ = writeln!(out, "#define {name} _IOWR(APPSHOT_IOC_MAGIC, {nr}, {c_type})\n");
}

pub(crate) fn write_struct(out: &mut String, name: &str, docs: &[&str], size: usize, fields: &[Field]) {
    write_docs(out, "", docs);
    let _ = writeln!(out, "struct {name} {{");
    for field in fields {
        write_docs(out, "\t", field.docs);
        let _ = writeln!(out, "\t{} {}{}; /* offset {} */", field.c_type, field.name, field.c_suffix, field.offset);
    }
    let _ = writeln!(out, "}};\n_Static_assert(sizeof(struct {name}) == {size}, \"struct {name} layout\");\n");
}

/// The whole text of `appshot.h`.
pub fn header() -> String {
    let mut out = String::from(
        "/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */\n\
         /*\n * appshot.h: the /dev/appshot ioctl ABI for C programs.\n *\n\
         \x20* GENERATED from module/uapi/appshot_uapi.rs by `cargo xtask header`; do not edit.\n\
         \x20* The conventions (size field, zero reserved fields, errno values) are described\n\
         \x20* there and in docs/abi.md.\n */\n\
         #ifndef _UAPI_APPSHOT_H\n#define _UAPI_APPSHOT_H\n\n\
         #include <linux/ioctl.h>\n#include <linux/types.h>\n\n\
         #define APPSHOT_DEVICE \"/dev/appshot\"\n\n",
    );
    crate::abi::write_c_consts(&mut out);
    crate::abi::write_c_structs(&mut out);
    crate::abi::write_c_ioctls(&mut out);
    out.push_str("#endif /* _UAPI_APPSHOT_H */\n");
    out
}
