//! Reading the guest's serial console: the markers /init prints, the exit status, and
//! kernel splats (docs/guest-contract.md).
//!
//! Splats are looked for only in kernel output: the KMEMLEAK and DMESG blocks, and
//! console lines carrying a printk timestamp (`[   12.345678] ...`). The job's own
//! output is never scanned, so a test named "no KASAN report" is not a splat.

use std::collections::HashSet;

pub const KMEMLEAK_BEGIN: &str = "APPSHOT-KMEMLEAK-BEGIN";
pub const KMEMLEAK_END: &str = "APPSHOT-KMEMLEAK-END";
pub const DMESG_BEGIN: &str = "APPSHOT-DMESG-BEGIN";
pub const DMESG_END: &str = "APPSHOT-DMESG-END";
pub const EXIT_STATUS: &str = "APPSHOT-EXIT-STATUS: ";
pub const INSMOD_FAILED: &str = "APPSHOT-INSMOD-FAILED";

/// What a kernel report looks like (the list in docs/guest-contract.md).
pub const SPLAT_PATTERNS: &[&str] = &[
    "BUG:",
    "WARNING:",
    "Oops",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "INFO: ",
    "KASAN",
    "sleeping function called from invalid context",
    "unreferenced object",
    "blocked for more than",
    "Kernel panic",
    "soft lockup",
    "general protection fault",
    "UBSAN",
    "list_add corruption",
    "list_del corruption",
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Block {
    Kmemleak,
    Dmesg,
}

impl Block {
    fn end(self) -> &'static str {
        match self {
            Block::Kmemleak => KMEMLEAK_END,
            Block::Dmesg => DMESG_END,
        }
    }
}

/// Line-by-line state of one guest run.
#[derive(Default)]
pub struct Console {
    block: Option<Block>,
    seen_output: bool,
    /// Dots of SeaBIOS's "Booting from ROM..." still to come: under load the console
    /// reset can split them, leaving one glued to the guest's first line.
    pending_boot_dots: usize,
    /// `APPSHOT-EXIT-STATUS: n`, once seen.
    pub exit_status: Option<i32>,
    /// /init could not load appshot.ko.
    pub insmod_failed: bool,
    /// Kernel lines that match a splat pattern, each once, in order.
    pub splats: Vec<String>,
    /// The first `Kernel panic` line.
    pub panic: Option<String>,
    seen_splats: HashSet<String>,
}

impl Console {
    /// Takes one console line (cleaned, without its newline) and returns the part to
    /// show live: everything except the marker blocks and firmware noise.
    pub fn line<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        if let Some(block) = self.block {
            if line.trim() == block.end() {
                self.block = None;
            } else {
                self.scan(line);
            }
            return None;
        }
        // A marker may follow output that did not end with a newline.
        for (marker, block) in [
            (KMEMLEAK_BEGIN, Block::Kmemleak),
            (DMESG_BEGIN, Block::Dmesg),
        ] {
            if let Some(pos) = line.find(marker) {
                self.block = Some(block);
                return self.visible_prefix(&line[..pos]);
            }
        }
        if let Some(pos) = line.find(EXIT_STATUS) {
            let shown = self.visible_prefix(&line[..pos]);
            let status = line[pos + EXIT_STATUS.len()..].trim();
            self.exit_status = Some(status.parse().unwrap_or(1));
            return shown;
        }
        if line.trim() == INSMOD_FAILED {
            self.insmod_failed = true;
        }
        if let Some(message) = kernel_message(line) {
            self.scan(message);
        }
        self.visible(line)
    }

    fn visible<'a>(&mut self, text: &'a str) -> Option<&'a str> {
        // After the exit status only the reboot message follows.
        if self.exit_status.is_some() {
            return None;
        }
        // SeaBIOS greets before the kernel starts; nothing of ours comes before it.
        if !self.seen_output {
            if let Some(dots) = text.trim().strip_prefix(BOOT_MESSAGE) {
                self.pending_boot_dots = 3usize.saturating_sub(dots.len());
                return None;
            }
            if text.trim().is_empty() || is_firmware_noise(text) {
                return None;
            }
        }
        let mut text = text;
        while self.pending_boot_dots > 0 {
            self.pending_boot_dots -= 1;
            match text.strip_prefix('.') {
                Some(rest) => text = rest,
                None => self.pending_boot_dots = 0,
            }
        }
        if text.is_empty() && !self.seen_output {
            return None;
        }
        self.seen_output = true;
        Some(text)
    }

    /// Output that preceded a marker on the same line (none when the marker starts it).
    fn visible_prefix<'a>(&mut self, text: &'a str) -> Option<&'a str> {
        if text.is_empty() {
            return None;
        }
        self.visible(text)
    }

    fn scan(&mut self, kernel_line: &str) {
        let kernel_line = kernel_line.trim_end();
        if !is_splat(kernel_line) {
            return;
        }
        if self.panic.is_none() && kernel_line.contains("Kernel panic") {
            self.panic = Some(kernel_line.to_string());
        }
        // The console and the DMESG block carry the same line; report it once.
        if self.seen_splats.insert(kernel_line.to_string()) {
            self.splats.push(kernel_line.to_string());
        }
    }
}

pub fn is_splat(kernel_line: &str) -> bool {
    SPLAT_PATTERNS
        .iter()
        .any(|pattern| kernel_line.contains(pattern))
}

/// The kernel message in a console line: from its printk timestamp `[ 1.234567]` on,
/// wherever it starts (the kernel may print in the middle of a user line).
fn kernel_message(line: &str) -> Option<&str> {
    let mut rest = line;
    let mut offset = 0;
    while let Some(open) = rest.find('[') {
        let candidate = &rest[open + 1..];
        if let Some(close) = candidate.find(']') {
            let stamp = candidate[..close].trim_start();
            if let Some((secs, micros)) = stamp.split_once('.') {
                let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if digits(secs) && digits(micros) {
                    return Some(&line[offset + open..]);
                }
            }
        }
        offset += open + 1;
        rest = &rest[open + 1..];
    }
    None
}

const BOOT_MESSAGE: &str = "Booting from ROM";

fn is_firmware_noise(line: &str) -> bool {
    ["SeaBIOS (version", "iPXE ", "Press Ctrl-B"]
        .iter()
        .any(|prefix| line.trim_start().starts_with(prefix))
}

/// A console line as text: lossy UTF-8, terminal escape sequences (SeaBIOS clears the
/// screen and turns off line wrapping) and other control characters removed.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // Two-byte sequences like ESC c, ESC ( B
                Some('(') | Some(')') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Splits the console byte stream into lines. Besides `\n`, a terminal reset (`ESC c`,
/// printed by SeaBIOS and again when the kernel takes the console over) ends a line:
/// otherwise the first line of the guest sticks to "Booting from ROM..".
#[derive(Default)]
pub struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `on_line` with each complete raw line.
    pub fn feed(&mut self, chunk: &[u8], mut on_line: impl FnMut(&[u8])) {
        for &byte in chunk {
            match byte {
                b'\n' => {
                    on_line(&self.line);
                    self.line.clear();
                }
                b'c' if self.line.last() == Some(&0x1b) => {
                    self.line.pop();
                    if !self.line.is_empty() {
                        on_line(&self.line);
                    }
                    self.line.clear();
                }
                _ => self.line.push(byte),
            }
        }
    }

    /// The unterminated rest, at the end of the stream.
    pub fn finish(&mut self, mut on_line: impl FnMut(&[u8])) {
        if !self.line.is_empty() {
            on_line(&self.line);
            self.line.clear();
        }
    }
}

/// For the interactive console, which is passed through byte by byte: holds back a
/// line only while it could still become the first end-of-run marker, and swallows
/// everything from that marker on (kmemleak and dmesg dumps, the exit status).
pub struct MarkerGate {
    at_line_start: bool,
    held: Vec<u8>,
    closed: bool,
}

impl Default for MarkerGate {
    fn default() -> Self {
        MarkerGate {
            at_line_start: true,
            held: Vec::new(),
            closed: false,
        }
    }
}

impl MarkerGate {
    /// Returns the bytes of `chunk` to show.
    pub fn pass(&mut self, chunk: &[u8]) -> Vec<u8> {
        let marker = KMEMLEAK_BEGIN.as_bytes();
        let mut out = Vec::with_capacity(chunk.len());
        for &byte in chunk {
            if self.closed {
                break;
            }
            if self.at_line_start {
                self.held.push(byte);
                if self.held == marker {
                    self.closed = true;
                    self.held.clear();
                } else if !marker.starts_with(&self.held) {
                    out.append(&mut self.held);
                    self.at_line_start = byte == b'\n' || byte == b'\r';
                }
            } else {
                out.push(byte);
                if byte == b'\n' || byte == b'\r' {
                    self.at_line_start = true;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(console: &mut Console, text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| console.line(l).map(str::to_string))
            .collect()
    }

    #[test]
    fn hides_blocks_and_reads_exit_status() {
        let mut console = Console::default();
        let shown = feed(
            &mut console,
            "SeaBIOS (version 1.16)\n\nhello\n\nAPPSHOT-KMEMLEAK-BEGIN\nAPPSHOT-KMEMLEAK-END\n\
             APPSHOT-DMESG-BEGIN\n[    0.1] Linux version\nAPPSHOT-DMESG-END\nAPPSHOT-EXIT-STATUS: 3\n",
        );
        assert_eq!(shown, ["hello", ""]);
        assert_eq!(console.exit_status, Some(3));
        assert_eq!(console.line("[    2.0] reboot: Restarting system"), None);
        assert!(console.splats.is_empty());
    }

    #[test]
    fn finds_splats_in_kernel_lines_only() {
        let mut console = Console::default();
        feed(
            &mut console,
            "ok 1 - no KASAN report\n# WARNING: user text\n\
             [    3.000001] BUG: KASAN: slab-out-of-bounds in foo\n\
             APPSHOT-KMEMLEAK-BEGIN\nunreferenced object 0xffff888 (size 64):\nAPPSHOT-KMEMLEAK-END\n\
             APPSHOT-DMESG-BEGIN\n[    3.000001] BUG: KASAN: slab-out-of-bounds in foo\nAPPSHOT-DMESG-END\n",
        );
        assert_eq!(
            console.splats,
            [
                "[    3.000001] BUG: KASAN: slab-out-of-bounds in foo",
                "unreferenced object 0xffff888 (size 64):"
            ]
        );
    }

    #[test]
    fn boot_dots_split_by_the_console_reset() {
        let mut console = Console::default();
        let shown = feed(&mut console, "Booting from ROM..\n.B\n.hidden\n");
        assert_eq!(shown, ["B", ".hidden"]);
        let mut console = Console::default();
        assert_eq!(
            feed(&mut console, "Booting from ROM...\n.\n..\n"),
            [".", ".."]
        );
    }

    #[test]
    fn marker_after_unterminated_output() {
        let mut console = Console::default();
        let shown = feed(
            &mut console,
            "partialAPPSHOT-KMEMLEAK-BEGIN\nleak\nAPPSHOT-KMEMLEAK-END\n",
        );
        assert_eq!(shown, ["partial"]);
    }

    #[test]
    fn kernel_message_inside_user_line() {
        assert_eq!(
            kernel_message("abc[   12.5] WARNING: x"),
            Some("[   12.5] WARNING: x")
        );
        assert_eq!(kernel_message("[x] WARNING: y"), None);
        assert_eq!(kernel_message("ok 1 - [1.2.3]"), None);
    }

    #[test]
    fn terminal_reset_ends_a_line() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.feed(b"Booting from ROM..\x1bc\x1b[2J/mnt/sub:\r\nto", |l| {
            lines.push(clean_line(l))
        });
        splitter.feed(b"tal\r\n\x1bcend", |l| lines.push(clean_line(l)));
        splitter.finish(|l| lines.push(clean_line(l)));
        assert_eq!(lines, ["Booting from ROM..", "/mnt/sub:", "total", "end"]);
    }

    #[test]
    fn cleans_escape_sequences() {
        assert_eq!(
            clean_line(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r"),
            "SeaBIOS"
        );
    }

    #[test]
    fn gate_swallows_from_marker_on() {
        let mut gate = MarkerGate::default();
        let mut shown = gate.pass(b"~ # exit\r\nAPP");
        shown.extend(gate.pass(b"LE\r\nAPPSHOT-KMEMLEAK-BEGIN\r\nsecret\r\n"));
        assert_eq!(shown, b"~ # exit\r\nAPPLE\r\n");
    }
}
