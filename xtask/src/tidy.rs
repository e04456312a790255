//! Checks that hold documentation to the code it describes (run as host tests).
//!
//! `docs/syscalls.md` is the prose form of the module's table of hooked system calls
//! (`module/src/syscalls/mod.rs`, the `syscalls!` rows). The module is built against the
//! kernel, not on the host, so the table is read here as text.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn read(relative: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read_to_string(root.join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
    }

    /// The name the documentation uses for a table symbol: `compat_sys_wait4` and
    /// `sys_wait4` are `wait4`, `compat_sys_ia32_clone` is `clone`, the i386 time32/64
    /// variants (`clock_gettime32`, `recvmmsg_time64`) and `fcntl64` are the call itself.
    fn call_name(symbol: &str) -> String {
        let name = symbol
            .strip_prefix("compat_sys_")
            .or_else(|| symbol.strip_prefix("sys_"))
            .unwrap_or_else(|| panic!("symbol {symbol:?} without sys_ prefix"));
        let name = name.strip_prefix("ia32_").unwrap_or(name);
        let name = name.strip_suffix("_time32").or_else(|| name.strip_suffix("_time64")).unwrap_or(name);
        match name {
            "fcntl64" => "fcntl",
            "clock_gettime32" => "clock_gettime",
            "clock_settime32" => "clock_settime",
            "clock_adjtime32" => "clock_adjtime",
            other => other,
        }
        .to_string()
    }

    /// The system calls of the `syscalls!` rows (`ABI symbol [own] => handler,`), by
    /// [`call_name`].
    fn hooked_calls(source: &str) -> BTreeSet<String> {
        let start = source.find("syscalls! {").expect("no `syscalls! {` table");
        let table = &source[start..];
        let table = &table[..table.find("\n}").expect("table end")];
        let mut calls = BTreeSet::new();
        for line in table.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            let (Some(abi), Some(symbol)) = (words.next(), words.next()) else { continue };
            if !["X64", "Ia32", "X32Compat"].contains(&abi) {
                continue;
            }
            calls.insert(call_name(symbol));
        }
        calls
    }

    #[test]
    fn every_hooked_call_is_documented() {
        let calls = hooked_calls(&read("module/src/syscalls/mod.rs"));
        assert!(calls.len() > 40, "only {} calls parsed from the table: {calls:?}", calls.len());
        let doc = read("docs/syscalls.md");
        let missing: Vec<&String> = calls
            .iter()
            .filter(|call| {
                let quoted = format!("`{call}");
                !doc.match_indices(&quoted).any(|(at, _)| {
                    let next = doc[at + quoted.len()..].chars().next().unwrap_or(' ');
                    !(next.is_ascii_alphanumeric() || next == '_')
                })
            })
            .collect();
        assert!(missing.is_empty(), "hooked but not in docs/syscalls.md: {missing:?}");
    }

    #[test]
    fn every_i386_entry_of_a_call_is_hooked() {
        // i386 keeps older entries beside the ones x86-64 has, under other names (which
        // `call_name` folds together): each is another way in. (i386 `fcntl` and
        // `fcntl64` share `compat_sys_fcntl64` in 6.12's syscall_32.tbl.)
        let source = read("module/src/syscalls/mod.rs");
        let has = |row: &str| {
            let want: Vec<&str> = row.split_whitespace().collect();
            source.lines().any(|l| l.split_whitespace().take(2).eq(want.iter().copied()))
        };
        for (x64, ia32) in [
            ("X64 sys_fcntl", &["Ia32 compat_sys_fcntl64"][..]),
            ("X64 sys_wait4", &["Ia32 compat_sys_wait4", "Ia32 sys_waitpid"][..]),
            ("X64 sys_getpgrp", &["Ia32 sys_getpgrp"][..]),
        ] {
            assert!(has(x64), "no row {x64:?}");
            for row in ia32 {
                assert!(has(row), "{x64} is hooked but not its i386 entry {row}");
            }
        }
    }

    #[test]
    fn every_abi_of_the_common_calls_is_hooked() {
        // A call hooked at its x86-64 entry but not at its i386 one is a way around
        // translation (`int $0x80`).
        let source = read("module/src/syscalls/mod.rs");
        let rows = |abi: &str| -> BTreeSet<String> {
            source
                .lines()
                .map(str::trim)
                .filter_map(|l| l.strip_prefix(abi).and_then(|r| r.strip_prefix(' ')))
                .filter_map(|r| r.split_whitespace().next())
                .map(call_name)
                .collect()
        };
        let (x64, ia32) = (rows("X64"), rows("Ia32"));
        // i386 has no direct semop: only the ipc multiplexer (checked below) reaches it.
        let missing: Vec<&String> = x64.difference(&ia32).filter(|call| *call != "semop").collect();
        assert!(missing.is_empty(), "hooked for x86-64 only, not for i386: {missing:?}");
        // i386's socketcall multiplexes the socket calls: it must be hooked with them.
        assert!(ia32.contains("socketcall"), "the i386 socketcall multiplexer is not hooked");
        // And ipc the SysV IPC calls.
        assert!(!x64.contains("semget") || ia32.contains("ipc"), "the i386 ipc multiplexer is not hooked");
    }
}
