//! The appshot snapshot image: what `appshotctl snapshot` writes and `appshotctl restore`
//! and `appshotctl inspect` read.
//!
//! An image holds one application (AID) as it was at snapshot time: its translation
//! tables, its SysV semaphore sets, shared memory segments and message queues (with their
//! contents), and its processes. This crate owns the in-memory model ([`Image`] and the
//! types it holds), the file format (a file header, then self-describing records, then a
//! trailer with a CRC-32; `docs/image-format.md` is the specification), a streaming writer,
//! a validating reader and the `inspect` renderings. It is plain host code: no kernel
//! access, no `unsafe`.
//!
//! The one rule every entry point keeps: an image that is not valid (see
//! [`Image::validate`] and `docs/image-format.md`, "Validation") is never written by
//! [`write_image`] and never returned by [`read_image`]. The reader never panics and never
//! allocates more than the input's length justifies, whatever the input.
//!
//! # Examples
//!
//! ```
//! use appshot_image::{read_image, write_image, AppRecord, Image};
//!
//! let image = Image {
//!     app: AppRecord {
//!         name: "dbserver".into(),
//!         pid_range: Some((300, 399)),
//!         source_aid: 1,
//!         created_unix: 1_764_556_800,
//!         kernel_release: "6.12.0".into(),
//!     },
//!     tables: vec![],
//!     sems: vec![],
//!     shms: vec![],
//!     msgs: vec![],
//!     processes: vec![],
//!     notices: vec![],
//! };
//! let mut file = Vec::new();
//! write_image(&image, &mut file)?;
//! assert_eq!(read_image(&file)?, image);
//! # Ok::<(), appshot_image::ImageError>(())
//! ```

#![forbid(unsafe_code)]

mod decode;
mod error;
mod inspect;
mod json;
mod layout;
mod limits;
mod model;
mod read;
mod validate;
mod write;

pub use error::{ImageError, Place};
pub use inspect::{inspect_json, inspect_text};
pub use layout::{record_type_name, FILE_HEADER_LEN, MAGIC, RECORD_HEADER_LEN, RECORD_OPTIONAL};
pub use limits::*;
pub use model::{
    AppRecord, Image, IpcPerm, Message, MsgQueue, ProcessRecord, SemSet, Semaphore, ShmSegment,
    TableEntry, TableKind, TableRecord,
};
pub use read::read_image;
pub use write::{encode, fix_checksum, write_image};

/// The format version this crate writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Record type numbers (the `type` field of every record header).
pub mod record_type {
    pub use crate::layout::record_type::*;
}
