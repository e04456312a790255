// SPDX-License-Identifier: GPL-2.0-only
/*
 * appshot_glue.c: the C side of appshot.ko.
 *
 * Only what Linux 6.12 gives Rust no abstraction for lives here: the misc device, the
 * ftrace direct-call trampolines and their registration, the module parameter, and
 * one-line wrappers around C macros and inline functions. Every decision about AIDs,
 * tables and processes is made in Rust (src/); nothing here looks at appshot state.
 */
#include <linux/atomic.h>
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/ftrace.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/string.h>
#include <linux/uidgid.h>
#include <linux/wait_bit.h>
#include <asm/ibt.h>
#include <asm/nospec-branch.h>

#include "appshot_glue.h"

/* ---- Module parameter ------------------------------------------------------------ */

static unsigned int max_entries = 65536;
module_param(max_entries, uint, 0644);
MODULE_PARM_DESC(max_entries, "Most entries one table of one AID may hold (default 65536)");

unsigned int appshot_glue_max_entries(void)
{
	return READ_ONCE(max_entries);
}

void appshot_glue_module_get(void)
{
	__module_get(THIS_MODULE);
}

void appshot_glue_module_put(void)
{
	module_put(THIS_MODULE);
}

/* ---- /dev/appshot ---------------------------------------------------------------- */

static long appshot_fop_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return appshot_rust_ioctl(file, cmd, arg);
}

static const struct file_operations appshot_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = appshot_fop_ioctl,
	/* Every structure has the same layout for 32-bit callers (u64 pointers, explicit padding). */
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice appshot_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "appshot",
	.fops = &appshot_fops,
	.mode = 0666,
};

int appshot_glue_misc_register(void)
{
	return misc_register(&appshot_misc);
}

void appshot_glue_misc_deregister(void)
{
	misc_deregister(&appshot_misc);
}

/* ---- Hooks ------------------------------------------------------------------------ */

/*
 * Each hook is an ftrace direct call: the traced function's fentry site calls a small
 * trampoline, which calls a C wrapper with the function's first argument and returns
 * into the function. The handler runs in the context of the traced function (both are
 * called in process context with no spinlock held), so it may sleep.
 *
 * Handlers may sleep, so RCU-tasks alone cannot tell when they are done: every wrapper
 * counts itself in appshot_hooks_inflight, and unregistering waits for that count to
 * drop to zero before the module text can go.
 */
static atomic_t appshot_hooks_inflight = ATOMIC_INIT(0);

void appshot_glue_new_task_entry(struct task_struct *task);
void appshot_glue_new_task_entry(struct task_struct *task)
{
	atomic_inc(&appshot_hooks_inflight);
	appshot_rust_on_new_task(task);
	if (atomic_dec_and_test(&appshot_hooks_inflight))
		wake_up_var(&appshot_hooks_inflight);
}

void appshot_glue_release_task_entry(struct task_struct *task);
void appshot_glue_release_task_entry(struct task_struct *task)
{
	atomic_inc(&appshot_hooks_inflight);
	appshot_rust_on_release_task(task);
	if (atomic_dec_and_test(&appshot_hooks_inflight))
		wake_up_var(&appshot_hooks_inflight);
}

/* The trampoline keeps %rdi (the traced function's only argument) across the call. */
#define APPSHOT_TRAMPOLINE(name, entry)					\
	asm("	.pushsection	.text, \"ax\", @progbits\n"			\
	    "	.type		" #name ", @function\n"				\
	    "	.globl		" #name "\n"					\
	    #name ":\n"								\
	    ASM_ENDBR								\
	    "	pushq %rbp\n"							\
	    "	movq %rsp, %rbp\n"						\
	    CALL_DEPTH_ACCOUNT							\
	    "	pushq %rdi\n"							\
	    "	call " #entry "\n"						\
	    "	popq %rdi\n"							\
	    "	leave\n"							\
	    ASM_RET								\
	    "	.size		" #name ", .-" #name "\n"			\
	    "	.popsection\n")

void appshot_new_task_trampoline(void);
void appshot_release_task_trampoline(void);
APPSHOT_TRAMPOLINE(appshot_new_task_trampoline, appshot_glue_new_task_entry);
APPSHOT_TRAMPOLINE(appshot_release_task_trampoline, appshot_glue_release_task_entry);

struct appshot_hook {
	const char *function;
	unsigned long trampoline;
	struct ftrace_ops ops;
	bool registered;
};

/* The declarative table of hooks: which kernel function, which trampoline. */
static struct appshot_hook appshot_hooks[] = {
	{ .function = "wake_up_new_task", .trampoline = (unsigned long)appshot_new_task_trampoline },
	{ .function = "release_task", .trampoline = (unsigned long)appshot_release_task_trampoline },
};

void appshot_glue_hooks_unregister(void)
{
	int i;

	for (i = ARRAY_SIZE(appshot_hooks) - 1; i >= 0; i--) {
		struct appshot_hook *hook = &appshot_hooks[i];

		if (!hook->registered)
			continue;
		unregister_ftrace_direct(&hook->ops, hook->trampoline, true);
		hook->registered = false;
	}
	/* No new entries now. Wait for tasks preempted inside a trampoline, for handlers
	 * that sleep, and once more for the instructions after a handler returns. */
	synchronize_rcu_tasks();
	wait_var_event(&appshot_hooks_inflight, atomic_read(&appshot_hooks_inflight) == 0);
	synchronize_rcu_tasks();
}

int appshot_glue_hooks_register(void)
{
	char buf[KSYM_NAME_LEN];
	int i, err;

	for (i = 0; i < ARRAY_SIZE(appshot_hooks); i++) {
		struct appshot_hook *hook = &appshot_hooks[i];

		memset(&hook->ops, 0, sizeof(hook->ops));
		strscpy(buf, hook->function, sizeof(buf));
		err = ftrace_set_filter(&hook->ops, buf, strlen(buf), 0);
		if (!err)
			err = register_ftrace_direct(&hook->ops, hook->trampoline);
		if (err) {
			pr_err("cannot hook %s: error %d\n", hook->function, err);
			ftrace_free_filter(&hook->ops);
			appshot_glue_hooks_unregister();
			return err;
		}
		hook->registered = true;
	}
	return 0;
}

/* ---- Credentials and tasks ----------------------------------------------------------- */

bool appshot_glue_file_capable(const struct file *file, int cap)
{
	return file_ns_capable(file, &init_user_ns, cap);
}

u32 appshot_glue_current_euid(void)
{
	return from_kuid_munged(&init_user_ns, current_euid());
}

struct task_struct *appshot_glue_get_task_by_vpid(pid_t nr)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(find_vpid(nr), PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	return task;
}

unsigned int appshot_glue_collect_threads(struct task_struct *task,
					   struct task_struct **out,
					   unsigned int max)
{
	struct task_struct *thread;
	unsigned int n = 0;

	rcu_read_lock();
	for_each_thread(task, thread) {
		if (n < max) {
			get_task_struct(thread);
			out[n] = thread;
		}
		n++;
	}
	rcu_read_unlock();
	return n;
}

void appshot_glue_kill_task(struct task_struct *task)
{
	send_sig_info(SIGKILL, SEND_SIG_PRIV, task);
}

/*
 * task_struct fields, read in C: the generated Rust bindings need not lay task_struct out
 * as the compiler of this kernel did (config-dependent members), so Rust never reads its
 * fields directly.
 */
pid_t appshot_glue_task_tid(struct task_struct *task)
{
	return READ_ONCE(task->pid);
}

pid_t appshot_glue_task_tgid(struct task_struct *task)
{
	return task->tgid;
}

unsigned int appshot_glue_task_flags(struct task_struct *task)
{
	return READ_ONCE(task->flags);
}
