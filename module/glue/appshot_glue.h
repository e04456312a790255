/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * appshot_glue.h: the boundary between the C glue and the Rust crate of appshot.ko.
 *
 * "appshot_glue_*" functions are C, called from Rust (src/linux/glue.rs declares them again
 * for Rust). "appshot_rust_*" functions are Rust (#[no_mangle] extern "C"), called from C.
 */
#ifndef APPSHOT_GLUE_H
#define APPSHOT_GLUE_H

#include <linux/types.h>

struct file;
struct iov_iter;
struct kiocb;
struct kernel_siginfo;
struct pt_regs;
struct task_struct;

/* Implemented in Rust. */
long appshot_rust_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
bool appshot_rust_hook(const unsigned long *args, unsigned long site, long *out);
bool appshot_rust_syscall(struct pt_regs *regs, unsigned long site, long *out, unsigned long slot,
			  struct task_struct *current_task);

/* Implemented in appshot_trampoline.S: the task slots of src/pid/task_index.rs. */
unsigned long appshot_task_slot(unsigned long address);
extern const u32 appshot_slot_bits;

/* Misc device /dev/appshot. */
int appshot_glue_misc_register(void);
void appshot_glue_misc_deregister(void);

/* Hooks: filters set at load, attached while an AID exists (see appshot_glue.c). */
int appshot_glue_hooks_init(const char *const *names, unsigned int n, const unsigned int *counts,
			    unsigned long *sites);
bool appshot_glue_site_callable(unsigned long site);
bool appshot_glue_config_ia32_emulation(void);
bool appshot_glue_config_x32_abi(void);
void appshot_glue_inflight_enter(void);
void appshot_glue_inflight_exit(void);
void appshot_glue_hooks_free(void);
int appshot_glue_hooks_attach(void);
const void *appshot_glue_ipc_ids(int kind);
struct kern_ipc_perm;
int appshot_glue_ipc_perm_id(const struct kern_ipc_perm *perm);
struct seq_file;
int appshot_glue_call_seq_show(unsigned long site, struct seq_file *m, void *it);
unsigned int appshot_glue_overflow_id(bool gid);
void appshot_glue_seq_state(struct seq_file *m, char **buf, size_t *count, size_t *size);
void appshot_glue_seq_set_count(struct seq_file *m, size_t count);
int appshot_glue_hooks_attach_demand(void);
void appshot_glue_hooks_detach(void);
void appshot_glue_hooks_quiesce(void);
long appshot_glue_call_syscall(unsigned long site, struct pt_regs *regs);
unsigned int appshot_glue_iter_user_segments(struct iov_iter *iter, unsigned long *out, unsigned int max);
long appshot_glue_call_read_iter(unsigned long site, struct kiocb *iocb, struct iov_iter *iter);
struct kernel_clone_args;
/* appshot_glue_attach_facts(); the same layout as AttachFacts in src/linux/glue.rs. */
struct appshot_attach_facts {
	u32 caller_uid, caller_gid;
	u32 uid, euid, suid, gid, egid, sgid;
	bool same_thread_group, ptrace_cap_over_creds, has_mm, dumpable, ptrace_cap_over_mm;
};
void appshot_glue_attach_facts(struct task_struct *task, struct appshot_attach_facts *facts);
int appshot_glue_fd_ns_type(int fd);
void appshot_glue_clone_args(struct kernel_clone_args *args, u64 *flags, u64 *parent_tid,
			     u32 *set_tid_size, s32 *set_tid0);
void appshot_glue_clone_args_drop_set_tid(struct kernel_clone_args *args);
bool appshot_glue_checkpoint_restore_capable(void);

/* Module reference held by every registered AID. */
void appshot_glue_module_get(void);
void appshot_glue_module_put(void);
void appshot_glue_call_started_rcu_read_unlock(void);
void appshot_glue_call_ended(void);
void appshot_glue_calls_counted(unsigned long *started, unsigned long *ended);

/* Module parameter. */
unsigned int appshot_glue_max_entries(void);

/* Credentials and tasks: one-line wrappers around C macros and inline functions. */
bool appshot_glue_file_capable(const struct file *file, int cap);
u32 appshot_glue_current_euid(void);
struct task_struct *appshot_glue_get_task_by_vpid(pid_t nr);
unsigned int appshot_glue_collect_threads(struct task_struct *task,
					   struct task_struct **out,
					   unsigned int max);
void appshot_glue_kill_task(struct task_struct *task);
pid_t appshot_glue_task_tid(struct task_struct *task);
pid_t appshot_glue_task_tgid(struct task_struct *task);
unsigned int appshot_glue_task_flags(struct task_struct *task);
pid_t appshot_glue_task_pgrp(struct task_struct *task);
pid_t appshot_glue_task_session(struct task_struct *task);
/*
 * What holds PID number nr of the initial namespace: APPSHOT_PID_USE_PID when a task has
 * it as its PID, _PGID / _SID when a task other than `except` (may be NULL) has it as
 * its process group / session. 0 when the number is free.
 */
#define APPSHOT_PID_USE_PID	1u
#define APPSHOT_PID_USE_PGID	2u
#define APPSHOT_PID_USE_SID	4u
unsigned int appshot_glue_pid_uses(pid_t nr, struct task_struct *except);
void appshot_glue_rcu_read_lock(void);
void appshot_glue_rcu_read_unlock(void);
struct task_struct *appshot_glue_current_parent(void);
unsigned long appshot_glue_current_parent_address(void);
struct task_struct *appshot_glue_task_parent(struct task_struct *task);
unsigned int appshot_glue_collect_processes(struct task_struct **out, u32 *parents, unsigned int max);
int appshot_glue_task_pid_ns(struct task_struct *task);

/* Thread IDs the kernel writes to user memory (CLONE_CHILD_SETTID). */
unsigned long appshot_glue_take_set_child_tid(struct task_struct *child);
int appshot_glue_write_task_u32(struct task_struct *task, unsigned long addr, u32 value);

/* Robust futexes: the current task's robust-list heads, and a compare-and-exchange of a
 * futex word in its memory (what the kernel's own exit walk uses). */
void appshot_glue_current_robust_lists(unsigned long *native, unsigned long *compat);
int appshot_glue_user_cmpxchg_u32(unsigned long addr, u32 old, u32 new, u32 *found);

/* siginfo fields, and copy_siginfo_to_user() with another si_pid. */
void appshot_glue_siginfo_fields(const struct kernel_siginfo *info, int *signo, int *code,
				 pid_t *pid);
int appshot_glue_siginfo_copy_out(void __user *to, const struct kernel_siginfo *from, pid_t pid);
void appshot_glue_siginfo_set_pid(struct kernel_siginfo *info, pid_t pid);
struct ksignal;
struct kernel_siginfo *appshot_glue_ksignal_info(struct ksignal *ksig);

#endif /* APPSHOT_GLUE_H */
