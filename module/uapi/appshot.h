/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * appshot.h: the /dev/appshot ioctl ABI for C programs.
 *
 * GENERATED from module/uapi/appshot_uapi.rs by `cargo xtask header`; do not edit.
 * The conventions (size field, zero reserved fields, errno values) are described
 * there and in docs/abi.md.
 */
#ifndef _UAPI_APPSHOT_H
#define _UAPI_APPSHOT_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define APPSHOT_DEVICE "/dev/appshot"

/* Version of this ABI, reported by APPSHOT_IOC_VERSION. */
#define APPSHOT_ABI_VERSION 0x1

/* The ioctl type byte of every appshot command (free in ioctl-number.rst). */
#define APPSHOT_IOC_MAGIC 0xa6

/* Size of a name field, including the terminating NUL. */
#define APPSHOT_NAME_LEN 0x40

/* Longest accepted name, in bytes. */
#define APPSHOT_NAME_MAX 0x3f

/* Feature bit: per-AID PID tables track every linked process and thread. */
#define APPSHOT_FEATURE_PID_TABLE 0x1

/* Feature bit: REGISTER accepts a virtual PID range. */
#define APPSHOT_FEATURE_PID_RANGE 0x2

/* Feature bit: processes of an AID see virtual process, thread, group and session */
/* IDs in system calls and signals (docs/syscalls.md). */
#define APPSHOT_FEATURE_PID_VIRTUAL 0x4

/* The module translates the SysV IPC IDs and keys of AID processes (semaphore sets, */
/* shared memory segments, message queues; docs/syscalls.md). */
#define APPSHOT_FEATURE_IPC_VIRTUAL 0x8

/* NEXT_ID: a restorer chooses the virtual ID of the next SysV object an AID binds. */
#define APPSHOT_FEATURE_NEXT_ID 0x10

/* RESERVE_PID, and `clone3`'s `set_tid` naming virtual PIDs inside an AID. */
#define APPSHOT_FEATURE_RESERVE_PID 0x20

/* REGISTER flag: `pid_min`..=`pid_max` is the AID's virtual PID range. */
#define APPSHOT_REGISTER_PID_RANGE 0x1

/* UNREGISTER flag: unlink every process of the AID instead of failing with EBUSY. */
#define APPSHOT_UNREGISTER_FORCE 0x1

/* UNREGISTER flag: remove the AID's SysV IPC objects (`IPC_RMID`, as the caller) */
/* instead of failing with ENOTEMPTY while it has any. */
#define APPSHOT_UNREGISTER_DESTROY_IPC 0x2

/* `appshot_aid_info.flags`: the AID has a virtual PID range. */
#define APPSHOT_AID_PID_RANGE 0x1

/* `appshot_table_entry.owner_id` in the PID table: the entry of a process group or */
/* session ID whose leader has been reaped while other processes are still in it. */
#define APPSHOT_PID_OWNER_GROUP_ONLY 0x0

/* `appshot_table_entry.owner_id` in the PID table: a virtual PID reserved by */
/* RESERVE_PID (its `system_id` is 0): no task has it, no new task gets it but */
/* through `clone3`'s `set_tid`. */
#define APPSHOT_PID_OWNER_RESERVED 0xffffffff

/* RESERVE_PID flag: drop the reservation instead of making it. */
#define APPSHOT_RESERVE_PID_RELEASE 0x1

/* Table type: process and thread IDs. */
#define APPSHOT_TABLE_PID 0x0

/* Table type: SysV semaphore set IDs. */
#define APPSHOT_TABLE_SEM 0x1

/* Table type: SysV shared memory segment IDs. */
#define APPSHOT_TABLE_SHM 0x2

/* Table type: SysV message queue IDs. */
#define APPSHOT_TABLE_MSG 0x3

/* Table type: SysV IPC keys. */
#define APPSHOT_TABLE_KEY 0x4

/* Number of table types; `table_sizes` has one slot per type. */
#define APPSHOT_TABLE_COUNT 0x5

/* APPSHOT_IOC_VERSION: what the loaded module speaks. Open to every user. */
struct appshot_version {
	/* In: `sizeof(struct appshot_version)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* Out: APPSHOT_ABI_VERSION of the module. */
	__u32 abi_version; /* offset 8 */
	/* Out: longest accepted name (APPSHOT_NAME_MAX). */
	__u32 name_max; /* offset 12 */
	/* Out: APPSHOT_FEATURE_* bits the module supports. */
	__u64 features; /* offset 16 */
	/* Out: the per-AID table entry limit (module parameter `max_entries`). */
	__u32 entry_limit; /* offset 24 */
	/* Out: number of registered AIDs the caller may see (all for a privileged opener). */
	__u32 nr_aids; /* offset 28 */
	/* Zero. */
	__u64 reserved[4]; /* offset 32 */
};
_Static_assert(sizeof(struct appshot_version) == 64, "struct appshot_version layout");

/* APPSHOT_IOC_REGISTER: create an AID. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. */
struct appshot_register {
	/* In: `sizeof(struct appshot_register)`. */
	__u32 size; /* offset 0 */
	/* In: APPSHOT_REGISTER_* bits. */
	__u32 flags; /* offset 4 */
	/* In, with APPSHOT_REGISTER_PID_RANGE: first virtual PID (at least 1). */
	__u32 pid_min; /* offset 8 */
	/* In, with APPSHOT_REGISTER_PID_RANGE: last virtual PID (at least pid_min, below 2^22). */
	__u32 pid_max; /* offset 12 */
	/* Out: the new AID; never reused while the module is loaded. */
	__u64 aid; /* offset 16 */
	/* In: the name, NUL-terminated, unique among registered AIDs (EEXIST). */
	__u8 name[64]; /* offset 24 */
	/* Zero. */
	__u64 reserved[4]; /* offset 88 */
};
_Static_assert(sizeof(struct appshot_register) == 120, "struct appshot_register layout");

/* APPSHOT_IOC_LINK: attach a process (every thread of it, and everything it creates */
/* from then on) to an AID. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. */
struct appshot_link {
	/* In: `sizeof(struct appshot_link)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: the AID. */
	__u64 aid; /* offset 8 */
	/* In: the process, as seen by the caller; 0 for the caller itself. */
	__s32 pid; /* offset 16 */
	/* Zero. */
	__u32 pad; /* offset 20 */
	/* Zero. */
	__u64 reserved[2]; /* offset 24 */
};
_Static_assert(sizeof(struct appshot_link) == 40, "struct appshot_link layout");

/* APPSHOT_IOC_UNLINK: detach a process (every thread of it) from its AID. */
/* Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. */
struct appshot_unlink {
	/* In: `sizeof(struct appshot_unlink)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: the process, as seen by the caller; 0 for the caller itself. */
	__s32 pid; /* offset 8 */
	/* Zero. */
	__u32 pad; /* offset 12 */
	/* Zero. */
	__u64 reserved[2]; /* offset 16 */
};
_Static_assert(sizeof(struct appshot_unlink) == 32, "struct appshot_unlink layout");

/* APPSHOT_IOC_UNREGISTER: delete an AID. EBUSY while processes are linked, unless */
/* APPSHOT_UNREGISTER_FORCE. Needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. */
struct appshot_unregister {
	/* In: `sizeof(struct appshot_unregister)`. */
	__u32 size; /* offset 0 */
	/* In: APPSHOT_UNREGISTER_* bits. */
	__u32 flags; /* offset 4 */
	/* In: the AID. */
	__u64 aid; /* offset 8 */
	/* Zero. */
	__u64 reserved[2]; /* offset 16 */
};
_Static_assert(sizeof(struct appshot_unregister) == 32, "struct appshot_unregister layout");

/* One registered AID, as LIST and INFO report it. */
struct appshot_aid_info {
	/* The AID. */
	__u64 aid; /* offset 0 */
	/* Its name, NUL-terminated. */
	__u8 name[64]; /* offset 8 */
	/* APPSHOT_AID_* bits. */
	__u32 flags; /* offset 72 */
	/* Effective UID (initial user namespace) of the process that registered it. */
	__u32 owner_uid; /* offset 76 */
	/* First virtual PID of the range (0 without a range). */
	__u32 pid_min; /* offset 80 */
	/* Last virtual PID of the range (0 without a range). */
	__u32 pid_max; /* offset 84 */
	/* Linked processes (thread groups). */
	__u32 nr_processes; /* offset 88 */
	/* Linked threads, processes included. */
	__u32 nr_threads; /* offset 92 */
	/* Entries of each table, indexed by APPSHOT_TABLE_*. */
	__u32 table_sizes[5]; /* offset 96 */
	/* Zero. */
	__u32 pad; /* offset 116 */
	/* Zero. */
	__u64 reserved[2]; /* offset 120 */
};
_Static_assert(sizeof(struct appshot_aid_info) == 136, "struct appshot_aid_info layout");

/* APPSHOT_IOC_INFO: look one AID up by number or name. Open to every user. */
struct appshot_info {
	/* In: `sizeof(struct appshot_info)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: the AID, or 0 to look up `name`. */
	__u64 aid; /* offset 8 */
	/* In, when `aid` is 0: the name. */
	__u8 name[64]; /* offset 16 */
	/* Out: what the AID holds now. */
	struct appshot_aid_info info; /* offset 80 */
	/* Zero. */
	__u64 reserved[2]; /* offset 216 */
};
_Static_assert(sizeof(struct appshot_info) == 232, "struct appshot_info layout");

/* APPSHOT_IOC_LIST: every registered AID, in AID order. Open to every user. */
struct appshot_list {
	/* In: `sizeof(struct appshot_list)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: user address of an array of `capacity` `struct appshot_aid_info` (may be 0 */
	/* when `capacity` is 0). */
	__u64 entries; /* offset 8 */
	/* In: number of elements the array holds. */
	__u32 capacity; /* offset 16 */
	/* Out: number of registered AIDs the caller may see (all for a privileged opener). when it exceeds `capacity`, only `capacity` */
	/* were written: grow the array and ask again. */
	__u32 count; /* offset 20 */
	/* Zero. */
	__u64 reserved[2]; /* offset 24 */
};
_Static_assert(sizeof(struct appshot_list) == 40, "struct appshot_list layout");

/* One translation: a virtual ID and the system ID behind it. */
struct appshot_table_entry {
	/* The ID the application sees. */
	__u32 virtual_id; /* offset 0 */
	/* The ID the kernel uses. */
	__u32 system_id; /* offset 4 */
	/* PID table: the system thread-group ID the thread belongs to, or */
	/* `PID_OWNER_GROUP_ONLY`; 0 elsewhere. */
	__u32 owner_id; /* offset 8 */
	/* Zero. */
	__u32 flags; /* offset 12 */
};
_Static_assert(sizeof(struct appshot_table_entry) == 16, "struct appshot_table_entry layout");

/* APPSHOT_IOC_TABLE: dump one table of one AID, in virtual ID order. Open to every user. */
struct appshot_table {
	/* In: `sizeof(struct appshot_table)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: the AID. */
	__u64 aid; /* offset 8 */
	/* In: APPSHOT_TABLE_*. */
	__u32 table; /* offset 16 */
	/* In: number of elements the `entries` array holds. */
	__u32 capacity; /* offset 20 */
	/* In: user address of an array of `capacity` `struct appshot_table_entry`. */
	__u64 entries; /* offset 24 */
	/* Out: number of entries in the table; when it exceeds `capacity`, only */
	/* `capacity` were written. */
	__u32 count; /* offset 32 */
	/* Zero. */
	__u32 pad; /* offset 36 */
	/* Zero. */
	__u64 reserved[2]; /* offset 40 */
};
_Static_assert(sizeof(struct appshot_table) == 56, "struct appshot_table layout");

/* APPSHOT_IOC_NEXT_ID: the virtual ID the next SysV object of one kind that the AID */
/* binds will get (the AID's counterpart of `/proc/sys/kernel/sem_next_id`, for */
/* restoring an application's IDs). The wish is used once, by the next new binding of */
/* that kind; a second request before it replaces it. Needs CAP_SYS_ADMIN or */
/* CAP_CHECKPOINT_RESTORE. */
struct appshot_next_id {
	/* In: `sizeof(struct appshot_next_id)`. */
	__u32 size; /* offset 0 */
	/* In: zero. */
	__u32 flags; /* offset 4 */
	/* In: the AID. */
	__u64 aid; /* offset 8 */
	/* In: APPSHOT_TABLE_SEM, APPSHOT_TABLE_SHM or APPSHOT_TABLE_MSG (else EINVAL). */
	__u32 table; /* offset 16 */
	/* In: the virtual ID, 0 to 2^31-1 (else EINVAL); EEXIST when the AID has bound */
	/* it already. */
	__u32 virtual_id; /* offset 20 */
	/* Zero. */
	__u64 reserved[2]; /* offset 24 */
};
_Static_assert(sizeof(struct appshot_next_id) == 40, "struct appshot_next_id layout");

/* APPSHOT_IOC_RESERVE_PID: keep a virtual PID of an AID for a restorer. A reserved */
/* PID is in the AID's PID table (owner APPSHOT_PID_OWNER_RESERVED) without a task: */
/* it translates nothing, no new task of the AID gets it, and a `clone3` with */
/* `set_tid` naming it from inside the AID takes it over. Needs CAP_SYS_ADMIN or */
/* CAP_CHECKPOINT_RESTORE. */
struct appshot_reserve_pid {
	/* In: `sizeof(struct appshot_reserve_pid)`. */
	__u32 size; /* offset 0 */
	/* In: APPSHOT_RESERVE_PID_* bits. */
	__u32 flags; /* offset 4 */
	/* In: the AID. */
	__u64 aid; /* offset 8 */
	/* In: the virtual PID: 1 to 4194303, inside the AID's range if it has one */
	/* (EINVAL); EEXIST when the AID uses it; with RELEASE, ENOENT unless reserved. */
	__u32 virtual_id; /* offset 16 */
	/* Zero. */
	__u32 pad; /* offset 20 */
	/* Zero. */
	__u64 reserved[2]; /* offset 24 */
};
_Static_assert(sizeof(struct appshot_reserve_pid) == 40, "struct appshot_reserve_pid layout");

/* Query the ABI version, features and limits. */
#define APPSHOT_IOC_VERSION _IOWR(APPSHOT_IOC_MAGIC, 0, struct appshot_version)

/* Register an AID. */
#define APPSHOT_IOC_REGISTER _IOWR(APPSHOT_IOC_MAGIC, 1, struct appshot_register)

/* Link a process to an AID. */
#define APPSHOT_IOC_LINK _IOWR(APPSHOT_IOC_MAGIC, 2, struct appshot_link)

/* Unlink a process from its AID. */
#define APPSHOT_IOC_UNLINK _IOWR(APPSHOT_IOC_MAGIC, 3, struct appshot_unlink)

/* Unregister an AID. */
#define APPSHOT_IOC_UNREGISTER _IOWR(APPSHOT_IOC_MAGIC, 4, struct appshot_unregister)

/* List the AIDs. */
#define APPSHOT_IOC_LIST _IOWR(APPSHOT_IOC_MAGIC, 5, struct appshot_list)

/* Look one AID up. */
#define APPSHOT_IOC_INFO _IOWR(APPSHOT_IOC_MAGIC, 6, struct appshot_info)

/* Dump one table of an AID. */
#define APPSHOT_IOC_TABLE _IOWR(APPSHOT_IOC_MAGIC, 7, struct appshot_table)

/* Choose the virtual ID of an AID's next SysV object. */
#define APPSHOT_IOC_NEXT_ID _IOWR(APPSHOT_IOC_MAGIC, 8, struct appshot_next_id)

/* Reserve (or release) a virtual PID of an AID. */
#define APPSHOT_IOC_RESERVE_PID _IOWR(APPSHOT_IOC_MAGIC, 9, struct appshot_reserve_pid)

#endif /* _UAPI_APPSHOT_H */
