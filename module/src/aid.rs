// SPDX-License-Identifier: GPL-2.0-only
//! An application: one AID, its name, and its translation tables.

use kernel::prelude::*;
use kernel::sync::{new_spinlock, Arc, SpinLock};

use crate::pid::ReleasedRing;
use crate::table::IdTable;
use crate::uapi::{self, AidInfo, NAME_LEN, TABLE_COUNT, TABLE_PID};

/// A registered application.
///
/// # Invariants
/// `name` passes [`uapi::parse_name`]; `pid_range`, when set, passes
/// [`uapi::check_pid_range`].
#[pin_data]
pub(crate) struct Aid {
    /// The AID number; never reused while the module is loaded.
    pub(crate) id: u64,
    /// The name, NUL-terminated (unique among registered AIDs).
    pub(crate) name: [u8; NAME_LEN],
    /// Effective UID of the registering process (initial user namespace).
    pub(crate) owner_uid: u32,
    /// Virtual PID range, if one was given.
    pub(crate) pid_range: Option<(u32, u32)>,
    /// Tables and link state. Lock order 2: taken after the registry's mutex, before any
    /// task-index bucket. Never held while allocating or sleeping.
    #[pin]
    pub(crate) state: SpinLock<AidState>,
}

/// What an AID's spinlock protects.
pub(crate) struct AidState {
    /// Set once by UNREGISTER: from then on nothing is linked to this AID.
    pub(crate) unregistered: bool,
    /// One table per resource type, indexed by `uapi::TABLE_*`.
    pub(crate) tables: [IdTable; TABLE_COUNT],
    /// PID-table entries whose thread is its process's main thread (TID == TGID).
    pub(crate) nr_processes: u32,
    /// PID-table entries kept for a process group or session (`pid::GROUP_ONLY`).
    pub(crate) nr_group_only: u32,
    /// With a PID range: where the search for the next virtual PID starts.
    pub(crate) next_virtual: u32,
    /// The PID table's most recently removed entries (`pid.rs`).
    pub(crate) released: ReleasedRing,
}

impl AidState {
    /// The PID table: system TID -> virtual TID, owner = system TGID.
    pub(crate) fn pids(&mut self) -> &mut IdTable {
        &mut self.tables[TABLE_PID as usize]
    }
}

impl Aid {
    /// Allocates a new AID (not yet registered).
    pub(crate) fn new(
        id: u64,
        name: [u8; NAME_LEN],
        owner_uid: u32,
        pid_range: Option<(u32, u32)>,
    ) -> Result<Arc<Aid>> {
        Arc::pin_init(
            pin_init!(Aid {
                id,
                name,
                owner_uid,
                pid_range,
                state <- new_spinlock!(
                    AidState {
                        unregistered: false,
                        tables: [IdTable::new(), IdTable::new(), IdTable::new(), IdTable::new(), IdTable::new()],
                        nr_processes: 0,
                        nr_group_only: 0,
                        next_virtual: pid_range.map_or(1, |(min, _)| min),
                        released: ReleasedRing::new(),
                    },
                    "appshot_aid_state"
                ),
            }),
            GFP_KERNEL,
        )
    }

    /// The name without its NUL, for log lines.
    pub(crate) fn name_str(&self) -> &str {
        let bytes = uapi::parse_name(&self.name).unwrap_or(b"?");
        // Names are printable ASCII (type invariant), hence UTF-8.
        core::str::from_utf8(bytes).unwrap_or("?")
    }

    /// What LIST and INFO report.
    pub(crate) fn info(&self) -> AidInfo {
        let mut info = AidInfo::zeroed();
        info.aid = self.id;
        info.name = self.name;
        info.owner_uid = self.owner_uid;
        if let Some((min, max)) = self.pid_range {
            info.flags |= uapi::AID_PID_RANGE;
            info.pid_min = min;
            info.pid_max = max;
        }
        let state = self.state.lock();
        info.nr_processes = state.nr_processes;
        info.nr_threads = state.tables[TABLE_PID as usize].len() as u32 - state.nr_group_only;
        for (size, table) in info.table_sizes.iter_mut().zip(state.tables.iter()) {
            *size = table.len() as u32;
        }
        info
    }
}
