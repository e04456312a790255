//! The bounds a valid image keeps, in one place.
//!
//! Some are the kernel's own limits (a virtual PID never exceeds `PID_MAX_LIMIT`, a
//! semaphore never exceeds `SEMVMX`); the others are sanity bounds chosen for this format,
//! far above what a real application holds, so that a damaged or hostile image is refused
//! with a clear message instead of being restored. `docs/image-format.md` ("Validation")
//! lists them too.

/// Highest virtual PID (and TID, process group and session ID): the kernel's
/// `PID_MAX_LIMIT` on 64-bit, less one.
pub const PID_MAX: u32 = 4 * 1024 * 1024 - 1;

/// Longest application name, in bytes (the module's `APPSHOT_NAME_MAX`).
pub const APP_NAME_MAX: usize = 63;

/// Longest kernel release string, in bytes (`struct utsname`'s field holds 64 with the NUL).
pub const KERNEL_RELEASE_MAX: usize = 64;

/// Most semaphores in one set (the kernel's `SEMMSL` ceiling).
pub const SEMS_PER_SET_MAX: usize = 32000;

/// Highest semaphore value (the kernel's `SEMVMX`).
pub const SEM_VALUE_MAX: u16 = 32767;

/// Largest shared memory segment: 1 TiB (sanity bound).
pub const SHM_SIZE_MAX: u64 = 1 << 40;

/// Largest single message: 1 MiB (sanity bound; the kernel's `MSGMAX` default is 8 KiB).
pub const MSG_SIZE_MAX: usize = 1 << 20;

/// Most message bytes one queue may hold in an image: 2 GiB (sanity bound).
pub const QUEUE_BYTES_MAX: u64 = 1 << 31;

/// Longest executable path, in bytes (`PATH_MAX`).
pub const EXE_PATH_MAX: usize = 4096;

/// Most bytes of one process's argv, all arguments together: 16 MiB (sanity bound).
pub const CMDLINE_BYTES_MAX: u64 = 1 << 24;

/// Longest record name (label), in bytes.
pub const RECORD_NAME_MAX: usize = 255;
