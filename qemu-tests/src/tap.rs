//! TAP output: the plan, one result line per test, `# ` diagnostics, and the argv filter.
//!
//! `cargo xtask test` counts the `ok N` / `not ok N` lines this module prints, so nothing
//! else the suite writes to stdout may start with `ok` or `not ok`: diagnostics always go
//! through [`diag_lines`] (or the [`diag!`](crate::diag) macro), which prefixes `# `.

use std::fmt::Write as _;

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed.
    Pass,
    /// The test failed; the reason is one line (see [`one_line`]).
    Fail(String),
}

/// The TAP header lines for `count` tests.
pub fn header(count: usize) -> [String; 2] {
    ["TAP version 13".to_string(), format!("1..{count}")]
}

/// The result line of test number `number` (1-based).
pub fn result_line(number: usize, name: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => format!("ok {number} - {name}"),
        Outcome::Fail(reason) => format!("not ok {number} - {name} # {}", reason_text(reason)),
    }
}

/// A failure reason fit for the part of a result line after `# `: one line, and never
/// a `SKIP` or `TODO` directive (a TAP reader would not count the failure).
fn reason_text(reason: &str) -> String {
    let line = one_line(reason);
    let line = if line.is_empty() {
        "failed".to_string()
    } else {
        line
    };
    let upper = line.to_ascii_uppercase();
    if upper.starts_with("SKIP") || upper.starts_with("TODO") {
        format!("failed: {line}")
    } else {
        line
    }
}

/// Joins the lines of `text` with `; ` and trims it: TAP result lines are single lines.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `text` as diagnostic lines, each starting with `# `.
pub fn diag_lines(text: &str) -> String {
    let mut out = String::new();
    if text.is_empty() {
        out.push_str("#\n");
    }
    for line in text.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    out
}

/// Prints diagnostics and flushes at once, so they come out before the result line the
/// harness prints from another process.
pub fn diag(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(diag_lines(text).as_bytes());
    let _ = out.flush();
}

/// `diag!("took {} ms", n)`: a TAP diagnostic line.
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => { $crate::tap::diag(&format!($($arg)*)) };
}

/// Whether the test `name` is selected by `filters` (argv substrings): every test when
/// there is no filter, otherwise those containing at least one of them.
pub fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn header_has_version_and_plan() {
        assert_eq!(
            header(3),
            ["TAP version 13".to_string(), "1..3".to_string()]
        );
        assert_eq!(header(0)[1], "1..0");
    }

    #[test]
    fn pass_and_fail_lines() {
        assert_eq!(result_line(1, "a/b", &Outcome::Pass), "ok 1 - a/b");
        assert_eq!(
            result_line(
                12,
                "x/y",
                &Outcome::Fail("expected EINVAL, got EFAULT".into())
            ),
            "not ok 12 - x/y # expected EINVAL, got EFAULT"
        );
    }

    #[test]
    fn fail_reason_is_one_line_and_never_a_directive() {
        let line = result_line(2, "t", &Outcome::Fail("first\n  second\n\nthird\n".into()));
        assert_eq!(line, "not ok 2 - t # first; second; third");
        assert_eq!(
            result_line(3, "t", &Outcome::Fail("skip this".into())),
            "not ok 3 - t # failed: skip this"
        );
        assert_eq!(
            result_line(4, "t", &Outcome::Fail("TODO later".into())),
            "not ok 4 - t # failed: TODO later"
        );
        assert_eq!(
            result_line(5, "t", &Outcome::Fail(" \n".into())),
            "not ok 5 - t # failed"
        );
    }

    #[test]
    fn diagnostics_are_prefixed() {
        assert_eq!(diag_lines("took 5 ms"), "# took 5 ms\n");
        assert_eq!(diag_lines("a\n\nok 1 - fake"), "# a\n#\n# ok 1 - fake\n");
        assert_eq!(diag_lines(""), "#\n");
    }

    #[test]
    fn filter_by_substring() {
        let none: Vec<String> = vec![];
        assert!(selected("registration/duplicate_name_eexist", &none));
        let f = vec!["dup".to_string(), "cli/".to_string()];
        assert!(selected("registration/duplicate_name_eexist", &f));
        assert!(selected("cli/list_json", &f));
        assert!(!selected("cleanup/zombie_stays_until_reaped", &f));
    }
}
