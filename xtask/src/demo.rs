//! `cargo xtask demo`: boots the release guest and walks through appshotctl's main
//! commands (demo.sh, embedded here), so a reader sees what appshot does in a minute.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::context::{Context, Flavor};
use crate::initramfs::GuestFile;
use crate::vm;

const DEMO_SCRIPT: &str = include_str!("demo.sh");
const DEMO_PATH: &str = "/usr/libexec/appshot/demo.sh";

pub fn run(ctx: &Context, timeout: Duration) -> Result<ExitCode> {
    let files = vec![GuestFile {
        path: DEMO_PATH,
        contents: DEMO_SCRIPT.to_string(),
        mode: 0o755,
    }];
    let job = format!("exec sh {DEMO_PATH}\n");
    let run = vm::run_job(
        ctx,
        Flavor::Release,
        &job,
        files,
        &[],
        timeout,
        &mut |line| say!("{line}"),
    )?;
    vm::job_exit_code(&run)
}
