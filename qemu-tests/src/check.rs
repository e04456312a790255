//! Assertions for tests: errno values with their names, `ensure_eq!`, expected errors,
//! and polling for conditions the kernel reaches asynchronously.
//!
//! Every helper returns an `anyhow` error whose one-line text becomes the `not ok`
//! reason, so it says what was checked, what was expected and what was seen.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// A failed system call's `errno`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// The result of a raw system call: a value or the `errno` it failed with.
pub type SysResult<T> = Result<T, Errno>;

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The symbolic name (`EINVAL`), or `errno N` for one this suite never expects.
    pub fn name(self) -> String {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOTTY => "ENOTTY",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::ERANGE => "ERANGE",
            libc::EDEADLK => "EDEADLK",
            libc::ENOSYS => "ENOSYS",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EOWNERDEAD => "EOWNERDEAD",
            _ => return format!("errno {}", self.0),
        };
        name.to_string()
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // io::Error's text ends in " (os error N)", which the name already says.
        let text = std::io::Error::from_raw_os_error(self.0).to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        write!(f, "{} ({text})", self.name())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::error::Error for Errno {}

/// Converts a `-1`-on-error return value into a [`SysResult`].
pub fn sys<T: PartialOrd + Default>(ret: T) -> SysResult<T> {
    if ret < T::default() {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Fails unless `result` is the error `want`.
pub fn expect_errno<T: fmt::Debug>(result: SysResult<T>, want: i32, what: &str) -> Result<()> {
    match result {
        Err(e) if e.0 == want => Ok(()),
        Err(e) => bail!("{what}: expected {}, got {}", Errno(want).name(), e.name()),
        Ok(v) => bail!(
            "{what}: expected {}, got success ({v:?})",
            Errno(want).name()
        ),
    }
}

/// `ensure_eq!(actual, expected, "what {}", x)`: fails with both values when they differ.
#[macro_export]
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($what:tt)+) => {{
        let (actual, expected) = (&$actual, &$expected);
        if actual != expected {
            anyhow::bail!("{}: expected {:?}, got {:?}", format!($($what)+), expected, actual);
        }
    }};
}

/// Polls `cond` until it returns `Ok(true)` or `timeout` passes; its last `Ok(false)` is
/// reported with `what`. For states the kernel reaches after the event a test can wait for
/// (a joined thread is released a little after `pthread_join` returns).
pub fn eventually(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not reached within {} ms", timeout.as_millis());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Multiplier for every timeout, from `APPSHOT_TIMEOUT_SCALE` (default 1): raise it on a
/// slower emulator instead of editing the suite.
pub fn timeout_scale() -> f64 {
    std::env::var("APPSHOT_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// `n` seconds, scaled by [`timeout_scale`].
pub fn secs(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 * timeout_scale())
}

/// How long a test waits for one step of a helper process (a fork, an exec, a reply):
/// generous, because the debug guest runs syscalls ~20x slower than hardware.
pub fn step_timeout() -> Duration {
    secs(30)
}

/// Milliseconds since `start`, for `# took X ms` diagnostics.
pub fn millis_since(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn errno_names() {
        assert_eq!(Errno(libc::EINVAL).name(), "EINVAL");
        assert_eq!(Errno(libc::ENOTTY).name(), "ENOTTY");
        assert_eq!(Errno(4000).name(), "errno 4000");
        assert_eq!(Errno(libc::EFAULT).to_string(), "EFAULT (Bad address)");
    }

    #[test]
    fn expect_errno_reports_both_sides() {
        assert!(expect_errno::<()>(Err(Errno(libc::EINVAL)), libc::EINVAL, "x").is_ok());
        let e = expect_errno::<()>(Err(Errno(libc::EFAULT)), libc::EINVAL, "register").unwrap_err();
        assert_eq!(e.to_string(), "register: expected EINVAL, got EFAULT");
        let e = expect_errno(Ok(7u64), libc::EEXIST, "dup").unwrap_err();
        assert_eq!(e.to_string(), "dup: expected EEXIST, got success (7)");
    }

    #[test]
    fn ensure_eq_message() {
        fn f(a: u32) -> Result<()> {
            ensure_eq!(a, 3, "count of {}", "x");
            Ok(())
        }
        assert!(f(3).is_ok());
        assert_eq!(
            f(4).unwrap_err().to_string(),
            "count of x: expected 3, got 4"
        );
    }

    #[test]
    fn eventually_times_out() {
        let mut n = 0;
        assert!(eventually(Duration::from_secs(1), "n", || {
            n += 1;
            Ok(n >= 3)
        })
        .is_ok());
        let e = eventually(Duration::from_millis(20), "never", || Ok(false)).unwrap_err();
        assert!(e.to_string().starts_with("never: not reached within"));
    }
}
