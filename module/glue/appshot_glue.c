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
#include <linux/sched/task_stack.h>
#include <linux/signal.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/mm.h>
#include <linux/pid_namespace.h>
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
 * Every hook is an ftrace direct call: the hooked function's fentry site calls one of the
 * trampolines in appshot_trampoline.S, which calls an entry below with the function's
 * arguments and either returns into the function or replaces the call (see the .S file).
 * All hooked functions run in process context with no spinlock held, so handlers may
 * sleep and touch user memory.
 *
 * Attach/detach: the filters (which functions) are set once at module load; the hooks are
 * attached when the first AID is registered and detached when the last one goes, so a
 * loaded module with no AID costs nothing (appshot_glue_hooks_attach/_detach, called from
 * Rust under the registry mutex).
 *
 * Unload: a task may be preempted inside a trampoline or a handler, or sleep in a handler.
 * Handlers that may sleep count themselves in appshot_hooks_inflight (task hooks) or hold
 * a module reference (syscall handlers, taken in Rust), so the module cannot go while they
 * run; module exit then waits for RCU-tasks, for the in-flight count, and for RCU-tasks
 * again (the instructions after a handler's last count).
 */
static atomic_t appshot_hooks_inflight = ATOMIC_INIT(0);

/* Trampolines (appshot_trampoline.S) and their entries. */
void appshot_new_task_trampoline(void);
void appshot_release_task_trampoline(void);
void appshot_syscall_trampoline(void);
void appshot_siginfo_trampoline(void);
void appshot_signalfd_trampoline(void);

bool appshot_glue_new_task_entry(unsigned long *args, unsigned long ret_ip, long *out,
				 unsigned long parent_ip);
bool appshot_glue_release_task_entry(unsigned long *args, unsigned long ret_ip, long *out,
				     unsigned long parent_ip);
bool appshot_glue_syscall_entry(unsigned long *args, unsigned long ret_ip, long *out,
				unsigned long parent_ip);
bool appshot_glue_siginfo_entry(unsigned long *args, unsigned long ret_ip, long *out,
				unsigned long parent_ip);
bool appshot_glue_signalfd_entry(unsigned long *args, unsigned long ret_ip, long *out,
				 unsigned long parent_ip);

/* wake_up_new_task(p): observe only. */
bool appshot_glue_new_task_entry(unsigned long *args, unsigned long ret_ip, long *out,
				 unsigned long parent_ip)
{
	atomic_inc(&appshot_hooks_inflight);
	appshot_rust_on_new_task((struct task_struct *)args[0]);
	if (atomic_dec_and_test(&appshot_hooks_inflight))
		wake_up_var(&appshot_hooks_inflight);
	return false;
}

/* release_task(p): observe only. */
bool appshot_glue_release_task_entry(unsigned long *args, unsigned long ret_ip, long *out,
				     unsigned long parent_ip)
{
	atomic_inc(&appshot_hooks_inflight);
	appshot_rust_on_release_task((struct task_struct *)args[0]);
	if (atomic_dec_and_test(&appshot_hooks_inflight))
		wake_up_var(&appshot_hooks_inflight);
	return false;
}

/*
 * __x64_sys_*(regs): a system call. Only calls made from user space are considered: they
 * pass the task's own saved registers. When a handler calls the original system call it
 * passes a copy, so that nested call runs unhooked (the recursion guard).
 */
bool appshot_glue_syscall_entry(unsigned long *args, unsigned long ret_ip, long *out,
				unsigned long parent_ip)
{
	struct pt_regs *regs = (struct pt_regs *)args[0];

	if (regs != task_pt_regs(current))
		return false;
	return appshot_rust_syscall(regs, ret_ip - MCOUNT_INSN_SIZE - ENDBR_INSN_SIZE, out);
}

/* copy_siginfo_to_user(to, from): appshot's own copy (below) calls nothing hooked. */
bool appshot_glue_siginfo_entry(unsigned long *args, unsigned long ret_ip, long *out,
				unsigned long parent_ip)
{
	return appshot_rust_copy_siginfo_to_user((void __user *)args[0],
						 (const kernel_siginfo_t *)args[1], out);
}

/*
 * signalfd_read_iter(iocb, to): the handler calls the original itself (through
 * appshot_glue_call_read_iter); that nested call comes from this module and runs unhooked.
 */
bool appshot_glue_signalfd_entry(unsigned long *args, unsigned long ret_ip, long *out,
				 unsigned long parent_ip)
{
	if (within_module(parent_ip, THIS_MODULE))
		return false;
	return appshot_rust_signalfd_read((struct kiocb *)args[0], (struct iov_iter *)args[1],
					  ret_ip - MCOUNT_INSN_SIZE - ENDBR_INSN_SIZE, out);
}

/* Where a read into a plain user buffer (read(2)) will write, or 0 for other iterators. */
unsigned long appshot_glue_iter_user_start(struct iov_iter *iter)
{
	if (!iter_is_ubuf(iter))
		return 0;
	return (unsigned long)iter->ubuf + iter->iov_offset;
}

long appshot_glue_call_read_iter(unsigned long function, struct kiocb *iocb, struct iov_iter *iter)
{
	ssize_t (*call)(struct kiocb *, struct iov_iter *) = (void *)function;

	if (IS_ENABLED(CONFIG_X86_KERNEL_IBT) && !is_endbr(*(u32 *)function))
		return -ENOSYS;
	return call(iocb, iter);
}

/* Calls a system call's original function (found by its hook) on a copy of the registers. */
long appshot_glue_call_syscall(unsigned long function, struct pt_regs *regs)
{
	long (*call)(const struct pt_regs *) = (void *)function;

	/* An indirect call must land on ENDBR (IBT); system calls start with one. */
	if (IS_ENABLED(CONFIG_X86_KERNEL_IBT) && !is_endbr(*(u32 *)function))
		return -ENOSYS;
	return call(regs);
}

struct appshot_hook_group {
	const char *what;
	unsigned long trampoline;
	struct ftrace_ops ops;
	bool filtered;
	bool attached;
};

enum { APPSHOT_GROUP_NEW_TASK, APPSHOT_GROUP_RELEASE_TASK, APPSHOT_GROUP_SIGINFO,
       APPSHOT_GROUP_SIGNALFD, APPSHOT_GROUP_SYSCALLS, APPSHOT_NR_GROUPS };

/* The declarative table of hooks: which trampoline; the functions are set at load. */
static struct appshot_hook_group appshot_groups[APPSHOT_NR_GROUPS] = {
	[APPSHOT_GROUP_NEW_TASK] = { .what = "wake_up_new_task",
		.trampoline = (unsigned long)appshot_new_task_trampoline },
	[APPSHOT_GROUP_RELEASE_TASK] = { .what = "release_task",
		.trampoline = (unsigned long)appshot_release_task_trampoline },
	[APPSHOT_GROUP_SIGINFO] = { .what = "copy_siginfo_to_user",
		.trampoline = (unsigned long)appshot_siginfo_trampoline },
	[APPSHOT_GROUP_SIGNALFD] = { .what = "signalfd_read_iter",
		.trampoline = (unsigned long)appshot_signalfd_trampoline },
	[APPSHOT_GROUP_SYSCALLS] = { .what = "system calls",
		.trampoline = (unsigned long)appshot_syscall_trampoline },
};

static int appshot_filter_add(struct ftrace_ops *ops, const char *function)
{
	char buf[KSYM_NAME_LEN];
	int err;

	strscpy(buf, function, sizeof(buf));
	err = ftrace_set_filter(ops, buf, strlen(buf), 0);
	if (err)
		pr_err("cannot hook %s: error %d\n", function, err);
	return err;
}

void appshot_glue_hooks_free(void)
{
	int i;

	for (i = 0; i < APPSHOT_NR_GROUPS; i++) {
		if (appshot_groups[i].filtered)
			ftrace_free_filter(&appshot_groups[i].ops);
		appshot_groups[i].filtered = false;
	}
}

int appshot_glue_hooks_init(const char *const *syscalls, unsigned int nr_syscalls)
{
	unsigned int i;
	int err;

	for (i = 0; i < APPSHOT_NR_GROUPS; i++) {
		struct appshot_hook_group *group = &appshot_groups[i];

		memset(&group->ops, 0, sizeof(group->ops));
		group->filtered = true;
		if (i == APPSHOT_GROUP_SYSCALLS)
			continue;
		err = appshot_filter_add(&group->ops, group->what);
		if (err)
			goto fail;
	}
	for (i = 0; i < nr_syscalls; i++) {
		err = appshot_filter_add(&appshot_groups[APPSHOT_GROUP_SYSCALLS].ops, syscalls[i]);
		if (err)
			goto fail;
	}
	return 0;
fail:
	appshot_glue_hooks_free();
	return err;
}

void appshot_glue_hooks_detach(void)
{
	int i;

	for (i = APPSHOT_NR_GROUPS - 1; i >= 0; i--) {
		struct appshot_hook_group *group = &appshot_groups[i];

		if (!group->attached)
			continue;
		/* Keeps the filter for the next attach. */
		unregister_ftrace_direct(&group->ops, group->trampoline, false);
		group->attached = false;
	}
}

int appshot_glue_hooks_attach(void)
{
	int i, err;

	for (i = 0; i < APPSHOT_NR_GROUPS; i++) {
		struct appshot_hook_group *group = &appshot_groups[i];

		err = register_ftrace_direct(&group->ops, group->trampoline);
		if (err) {
			pr_err("cannot attach the %s hook: error %d\n", group->what, err);
			appshot_glue_hooks_detach();
			return err;
		}
		group->attached = true;
	}
	return 0;
}

void appshot_glue_hooks_quiesce(void)
{
	/* Detached already: no new entries. Wait for tasks preempted inside a trampoline, for
	 * handlers that sleep, and once more for the instructions after a handler returns. */
	synchronize_rcu_tasks();
	wait_var_event(&appshot_hooks_inflight, atomic_read(&appshot_hooks_inflight) == 0);
	synchronize_rcu_tasks();
}

bool appshot_glue_module_try_get(void)
{
	return try_module_get(THIS_MODULE);
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

pid_t appshot_glue_current_ppid(void)
{
	pid_t ppid;

	rcu_read_lock();
	ppid = task_tgid_nr(rcu_dereference(current->real_parent));
	rcu_read_unlock();
	return ppid;
}

bool appshot_glue_task_in_init_pid_ns(struct task_struct *task)
{
	return task_active_pid_ns(task) == &init_pid_ns;
}

/* ---- Thread IDs in user memory ------------------------------------------------------- */

unsigned long appshot_glue_take_set_child_tid(struct task_struct *child)
{
	int __user *addr = child->set_child_tid;

	/* The child has not run yet; schedule_tail() would write its TID here. */
	child->set_child_tid = NULL;
	return (unsigned long)addr;
}

int appshot_glue_write_task_u32(struct task_struct *task, unsigned long addr, u32 value)
{
	if (task->mm == current->mm)
		return put_user(value, (u32 __user *)addr);
	if (access_process_vm(task, addr, &value, sizeof(value), FOLL_WRITE) != sizeof(value))
		return -EFAULT;
	return 0;
}

/* ---- siginfo ---------------------------------------------------------------------- */

void appshot_glue_siginfo_fields(const kernel_siginfo_t *info, int *signo, int *code, pid_t *pid)
{
	*signo = info->si_signo;
	*code = info->si_code;
	*pid = info->si_pid;
}

/* copy_siginfo_to_user() with another si_pid: the same copy, of a modified copy. */
int appshot_glue_siginfo_copy_out(void __user *to, const kernel_siginfo_t *from, pid_t pid)
{
	kernel_siginfo_t info = *from;

	info.si_pid = pid;
	if (copy_to_user(to, &info, sizeof(info)))
		return -EFAULT;
	if (clear_user(to + sizeof(info), sizeof(siginfo_t) - sizeof(info)))
		return -EFAULT;
	return 0;
}
