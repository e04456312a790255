//! `cargo xtask header`: module/uapi/appshot.h is generated from the Rust ABI
//! definition (appshot-uapi), never edited by hand; a host test fails when it is stale.

use anyhow::Result;

use crate::context::{self, Context};

pub fn write(ctx: &Context) -> Result<()> {
    let path = ctx.root.join("module/uapi/appshot.h");
    let changed = context::write_if_changed(&path, appshot_uapi::c_header::header().as_bytes())?;
    let state = if changed { "written" } else { "unchanged" };
    say!("header: {} ({state})", path.display());
    Ok(())
}
