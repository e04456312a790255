// SPDX-License-Identifier: GPL-2.0-only
//! An application: one AID, its name, and its translation tables.

pub(crate) mod registry;

use kernel::prelude::*;
use kernel::sync::{new_mutex, new_spinlock, Arc, Mutex, SpinLock};

use crate::linux::glue::ModulePin;
use crate::pid::PidTable;
use crate::table::{kind, IdTable, TranslationCache};
use crate::uapi::{self, AidInfo, NAME_LEN, TABLE_KEY, TABLE_MSG, TABLE_PID, TABLE_SEM, TABLE_SHM};

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
    /// Serializes the SysV `*get` calls of this AID that may bind a new key (`ipc/`), so
    /// that two of its processes creating one key at once get one object, as natively.
    /// Lock order: before `state`; held across the original system call (it sleeps).
    #[pin]
    pub(crate) key_lock: Mutex<()>,
    /// The lock-free caches of the tables the hot path translates with; the tables in
    /// `state` keep them in step, under `state`'s lock.
    pub(crate) caches: Caches,
    /// A reference on this module, for as long as the AID object lives: registered, or
    /// held by a linked task's index entry or by a hook handler running for one of its
    /// tasks (which may sleep, in `wait4` say). So a handler needs no reference of its
    /// own: the `Arc<Aid>` it holds keeps the module loaded. When the object goes while
    /// fast-path calls (which hold no `Arc`) are in flight, the reference is handed to
    /// the last of them instead of being dropped (`hooks::pin`).
    _module: ModulePin,
}

/// What an AID's spinlock protects: one table per resource type, and whether the AID
/// is still registered. UNREGISTER replaces the whole value, so nothing counted with a
/// table can outlive it.
pub(crate) struct AidState {
    /// Set once by UNREGISTER: from then on nothing is linked to this AID.
    pub(crate) unregistered: bool,
    /// Process and thread IDs.
    pub(crate) pids: PidTable,
    /// SysV semaphore sets, shared memory segments, message queues and IPC keys: empty
    /// until IPC virtualization fills them.
    pub(crate) sems: IdTable<kind::Sem>,
    pub(crate) shms: IdTable<kind::Shm>,
    pub(crate) msgs: IdTable<kind::Msg>,
    pub(crate) keys: IdTable<kind::Key>,
    /// The virtual ID the next new binding of each SysV kind gets (NEXT_ID), indexed by
    /// `IpcKind::IDS`; taken by that binding.
    pub(crate) next_ids: [Option<u32>; 3],
}

/// The [`TranslationCache`] of each table that system calls translate IDs with.
pub(crate) struct Caches {
    pub(crate) pids: Arc<TranslationCache<kind::Pid>>,
    pub(crate) sems: Arc<TranslationCache<kind::Sem>>,
    pub(crate) shms: Arc<TranslationCache<kind::Shm>>,
    pub(crate) msgs: Arc<TranslationCache<kind::Msg>>,
}

impl Caches {
    fn new() -> Result<Self> {
        Ok(Caches {
            pids: TranslationCache::new()?,
            sems: TranslationCache::new()?,
            shms: TranslationCache::new()?,
            msgs: TranslationCache::new()?,
        })
    }

    /// Forgets everything; with the AID's state lock held, as its tables are replaced.
    pub(crate) fn clear(&self) {
        self.pids.clear();
        self.sems.clear();
        self.shms.clear();
        self.msgs.clear();
    }
}

impl AidState {
    /// The state of a new AID, or of an unregistered one (`unregistered`), whose tables
    /// keep `caches` in step.
    pub(crate) fn new(pid_range: Option<(u32, u32)>, unregistered: bool, caches: &Caches) -> Self {
        AidState {
            unregistered,
            pids: PidTable::new(pid_range, caches.pids.clone()),
            sems: IdTable::with_cache(caches.sems.clone()),
            shms: IdTable::with_cache(caches.shms.clone()),
            msgs: IdTable::with_cache(caches.msgs.clone()),
            keys: IdTable::new(),
            next_ids: [None; 3],
        }
    }

    /// The size of the table a TABLE request names (`uapi::TABLE_*`).
    pub(crate) fn table_len(&self, kind: u32) -> Option<usize> {
        match kind {
            TABLE_PID => Some(self.pids.len()),
            TABLE_SEM => Some(self.sems.len()),
            TABLE_SHM => Some(self.shms.len()),
            TABLE_MSG => Some(self.msgs.len()),
            TABLE_KEY => Some(self.keys.len()),
            _ => None,
        }
    }

    /// Calls `f` with (virtual, system, owner) of the entries of table `kind` whose
    /// virtual ID is at least `from`, in order, until it returns `false`; returns the
    /// table's size (`None`: no such table). The values leave their kind here: they are
    /// for the TABLE answer.
    pub(crate) fn for_each_from(&mut self, kind: u32, from: u32, mut f: impl FnMut(u32, u32, u32) -> bool) -> Option<usize> {
        fn walk<K>(table: &mut IdTable<K>, from: u32, f: &mut impl FnMut(u32, u32, u32) -> bool) -> usize {
            table.for_each_from(from, |e| f(e.virtual_id.raw(), e.system_id.raw(), e.owner));
            table.len()
        }
        match kind {
            TABLE_PID => {
                self.pids.for_each_from(from, |e| {
                    // A reserved PID has no system PID: shown as 0.
                    let system = if e.owner == uapi::PID_OWNER_RESERVED { 0 } else { e.system_id.raw() };
                    f(e.virtual_id.raw(), system, e.owner)
                });
                Some(self.pids.len())
            }
            TABLE_SEM => Some(walk(&mut self.sems, from, &mut f)),
            TABLE_SHM => Some(walk(&mut self.shms, from, &mut f)),
            TABLE_MSG => Some(walk(&mut self.msgs, from, &mut f)),
            TABLE_KEY => Some(walk(&mut self.keys, from, &mut f)),
            _ => None,
        }
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
        let caches = Caches::new()?;
        let state = AidState::new(pid_range, false, &caches);
        Arc::pin_init(
            pin_init!(Aid {
                id,
                name,
                owner_uid,
                pid_range,
                state <- new_spinlock!(state, "appshot_aid_state"),
                key_lock <- new_mutex!((), "appshot_aid_keys"),
                caches,
                _module: ModulePin::new(),
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
        info.nr_processes = state.pids.nr_processes();
        info.nr_threads = state.pids.nr_threads();
        for (kind, size) in info.table_sizes.iter_mut().enumerate() {
            *size = state.table_len(kind as u32).map_or(0, |len| len as u32);
        }
        info
    }
}
