/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * appshot_glue.h: the boundary between the C glue and the Rust crate of appshot.ko.
 *
 * "appshot_glue_*" functions are C, called from Rust (src/glue.rs declares them again
 * for Rust). "appshot_rust_*" functions are Rust (#[no_mangle] extern "C"), called from C.
 */
#ifndef APPSHOT_GLUE_H
#define APPSHOT_GLUE_H

#include <linux/types.h>

struct file;
struct task_struct;

/* Implemented in Rust. */
long appshot_rust_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
void appshot_rust_on_new_task(struct task_struct *task);
void appshot_rust_on_release_task(struct task_struct *task);

/* Misc device /dev/appshot. */
int appshot_glue_misc_register(void);
void appshot_glue_misc_deregister(void);

/* Hooks on wake_up_new_task() and release_task(). */
int appshot_glue_hooks_register(void);
void appshot_glue_hooks_unregister(void);

/* Module reference held by every registered AID. */
void appshot_glue_module_get(void);
void appshot_glue_module_put(void);

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

#endif /* APPSHOT_GLUE_H */
