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
#include <linux/capability.h>
#include <linux/compat.h>
#include <linux/posix-timers.h>
#include <linux/signalfd.h>
#include <linux/socket.h>
#include <linux/tty.h>
#include <linux/wait.h>
#include <net/compat.h>
#include <uapi/linux/signalfd.h>
#include <uapi/linux/wait.h>
#include <linux/sched/coredump.h>
#include <linux/sched/mm.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/magic.h>
#include <linux/ns_common.h>
#include <linux/proc_ns.h>
#include <linux/ftrace.h>
#include <linux/futex.h>
#include <linux/ipc.h>
#include <linux/seq_file.h>
#include <linux/ipc_namespace.h>
/* The private header of ipc/ for its table numbers (IPC_SEM_IDS ...), checked below. */
#include <../ipc/util.h>
#include <linux/nsproxy.h>
#include <linux/msg.h>
#include <linux/sem.h>
#include <linux/shm.h>
#include <uapi/linux/shm.h>
#include <linux/kprobes.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
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
#include <asm/futex.h>
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

/*
 * System calls that a handler's fast path let run with no reference on their AID, counted
 * per CPU: one counter of starts and one of ends, each only ever incremented (src/hooks/
 * pin.rs has the protocol that keeps the module loaded while such a call sleeps).
 */
static DEFINE_PER_CPU(unsigned long, appshot_calls_started);
static DEFINE_PER_CPU(unsigned long, appshot_calls_ended);

/* Counts a call in flight, then leaves the RCU read section it was found in. */
void appshot_glue_call_started_rcu_read_unlock(void)
{
	this_cpu_inc(appshot_calls_started);
	rcu_read_unlock();
}

void appshot_glue_call_ended(void)
{
	this_cpu_inc(appshot_calls_ended);
}

/* The sums of the ends, then (after a full barrier) of the starts. */
void appshot_glue_calls_counted(unsigned long *started, unsigned long *ended)
{
	unsigned long s = 0, e = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		e += per_cpu(appshot_calls_ended, cpu);
	smp_mb();
	for_each_possible_cpu(cpu)
		s += per_cpu(appshot_calls_started, cpu);
	*started = s;
	*ended = e;
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
 * The futex PI hooks (src/pid/futex.rs) take appshot's spinlock_t locks under the
 * kernel's raw pi_mutex.wait_lock, which only a kernel without PREEMPT_RT allows.
 */
#ifdef CONFIG_PREEMPT_RT
#error "appshot does not support PREEMPT_RT kernels"
#endif

/*
 * Every hook is an ftrace direct call: the fentry site of each hooked function calls
 * one of the trampolines of appshot_trampoline.S, which calls Rust
 * (appshot_rust_syscall() for a system call, appshot_rust_hook() for another function)
 * and either returns into the function or replaces the call. A few ftrace_ops (one per trampoline, below) hold every hooked function, so
 * attaching and detaching are a few ftrace updates. Which functions are hooked, and what each hook call means, is decided in
 * Rust (src/hooks/mod.rs): the glue resolves the names it is given and passes every hook
 * call on with its *site* (the return address of the fentry call), which names the
 * function. All hooked functions run in process context; src/hooks/mod.rs says which
 * ones run with a spinlock held.
 *
 * Attach/detach: the filters and the sites are set once at module load; the ops are
 * registered when the first AID is registered and unregistered when the last one goes,
 * so a loaded module with no AID costs nothing (called from Rust under the registry
 * mutex).
 *
 * Unload: a task may be preempted inside the trampoline or a handler, or sleep in a
 * handler. Handlers that may sleep count themselves in appshot_hooks_inflight (task
 * hooks) or hold their task's AID object (system calls, siginfo, signalfd), which holds a
 * module reference for as long as it lives (src/aid/mod.rs), so the module cannot go
 * while they sleep; a system call whose fast path holds no AID reference is counted in
 * appshot_calls_started/ended, and an AID object that goes while such calls are in
 * flight hands its module reference to the last of them (src/hooks/pin.rs). Module exit
 * then waits for RCU-tasks, for the in-flight count, and for RCU-tasks again (the
 * instructions after a handler's last count or reference).
 */
static atomic_t appshot_hooks_inflight = ATOMIC_INIT(0);

/*
 * The groups of hooked functions, in the order of the names given to
 * appshot_glue_hooks_init, each an ftrace_ops with its own trampoline
 * (appshot_trampoline.S; src/hooks/mod.rs says which function is in which group):
 *
 *  - system calls: through appshot_trampoline_syscall, with the task filter and the
 *    test that lets a handler's own call of the original (on a copy of the registers)
 *    run unhooked;
 *  - other kernel functions: through appshot_trampoline, with the task filter;
 *  - unfiltered: through appshot_trampoline_unfiltered, for the functions whose every
 *    call appshot must see;
 *  - on demand: through appshot_trampoline, attached only once a feature needs them,
 *    because they sit on functions so hot that even the trampoline's fast path would
 *    show in every process.
 *
 * The first three are attached with the first AID and detached with the last; every
 * group must have functions (an ftrace_ops with an empty filter would trace them all).
 */
void appshot_trampoline(void);
void appshot_trampoline_syscall(void);
void appshot_trampoline_unfiltered(void);

enum appshot_group {
	APPSHOT_GROUP_SYSCALL,
	APPSHOT_GROUP_KERNEL,
	APPSHOT_GROUP_UNFILTERED,
	APPSHOT_GROUP_DEMAND,
	APPSHOT_GROUPS
};

struct appshot_hook_group {
	struct ftrace_ops ops;
	void (*trampoline)(void);
	bool filtered;
	bool attached;
};

static struct appshot_hook_group appshot_groups[APPSHOT_GROUPS] = {
	[APPSHOT_GROUP_SYSCALL] = { .trampoline = appshot_trampoline_syscall },
	[APPSHOT_GROUP_KERNEL] = { .trampoline = appshot_trampoline },
	[APPSHOT_GROUP_UNFILTERED] = { .trampoline = appshot_trampoline_unfiltered },
	[APPSHOT_GROUP_DEMAND] = { .trampoline = appshot_trampoline },
};

void appshot_glue_inflight_enter(void)
{
	atomic_inc(&appshot_hooks_inflight);
}

void appshot_glue_inflight_exit(void)
{
	if (atomic_dec_and_test(&appshot_hooks_inflight))
		wake_up_var(&appshot_hooks_inflight);
}

/* The start of the function whose fentry call returns to `site`. */
static unsigned long appshot_site_function(unsigned long site)
{
	return site - MCOUNT_INSN_SIZE - ENDBR_INSN_SIZE;
}

/* Whether the function of `site` may be called indirectly: with IBT it must start with
 * ENDBR, which FineIBT moves (and objtool seals in functions whose address is never taken). */
bool appshot_glue_site_callable(unsigned long site)
{
	return !IS_ENABLED(CONFIG_X86_KERNEL_IBT) || is_endbr(*(u32 *)appshot_site_function(site));
}

bool appshot_glue_config_ia32_emulation(void)
{
	return IS_ENABLED(CONFIG_IA32_EMULATION);
}

bool appshot_glue_config_x32_abi(void)
{
	return IS_ENABLED(CONFIG_X86_X32_ABI);
}

/*
 * Where a read through `iter` will write in user memory: up to `max` (address, length)
 * segments, in order, from the iterator's current position; returns how many there are
 * (0 for an iterator over kernel memory, such as a kernel-internal read).
 */
unsigned int appshot_glue_iter_user_segments(struct iov_iter *iter, unsigned long *out, unsigned int max)
{
	unsigned long i;

	if (iter_is_ubuf(iter)) {
		if (max >= 1) {
			out[0] = (unsigned long)iter->ubuf + iter->iov_offset;
			out[1] = iter->count;
		}
		return 1;
	}
	if (!iter_is_iovec(iter))
		return 0;
	for (i = 0; i < iter->nr_segs && i < max; i++) {
		size_t skip = i == 0 ? iter->iov_offset : 0;

		out[2 * i] = (unsigned long)iter->__iov[i].iov_base + skip;
		out[2 * i + 1] = iter->__iov[i].iov_len - skip;
	}
	return iter->nr_segs;
}

/* Calls the function of `site` (checked callable at load). */
long appshot_glue_call_read_iter(unsigned long site, struct kiocb *iocb, struct iov_iter *iter)
{
	ssize_t (*call)(struct kiocb *, struct iov_iter *) = (void *)appshot_site_function(site);

	return call(iocb, iter);
}

/* Calls a system call's entry (found by its hook, checked callable at load) on a copy of
 * the registers. */
long appshot_glue_call_syscall(unsigned long site, struct pt_regs *regs)
{
	long (*call)(const struct pt_regs *) = (void *)appshot_site_function(site);

	return call(regs);
}

/*
 * The sites of the named functions, resolved with disabled kprobes (which look the name
 * up and arm nothing), registered and unregistered as one batch. A kprobe on a
 * function's first byte moves past ENDBR: its address is the fentry call.
 */
static int appshot_resolve(const char *const *names, unsigned long *fentry, unsigned int n)
{
	struct kprobe *probes;
	struct kprobe **batch;
	unsigned int i;
	int err;

	probes = kcalloc(n, sizeof(*probes), GFP_KERNEL);
	batch = kcalloc(n, sizeof(*batch), GFP_KERNEL);
	err = -ENOMEM;
	if (!probes || !batch)
		goto out;
	for (i = 0; i < n; i++) {
		probes[i].symbol_name = names[i];
		probes[i].flags = KPROBE_FLAG_DISABLED;
		batch[i] = &probes[i];
	}
	err = register_kprobes(batch, n);
	if (err) {
		/* Name the culprit: retry one by one (error path only). */
		for (i = 0; i < n; i++) {
			struct kprobe probe = { .symbol_name = names[i], .flags = KPROBE_FLAG_DISABLED };

			if (register_kprobe(&probe)) {
				pr_err("cannot find %s to hook it: error %d\n", names[i], err);
				break;
			}
			unregister_kprobe(&probe);
		}
		goto out;
	}
	for (i = 0; i < n; i++)
		fentry[i] = (unsigned long)probes[i].addr;
	unregister_kprobes(batch, n);
out:
	kfree(batch);
	kfree(probes);
	return err;
}

void appshot_glue_hooks_free(void)
{
	int g;

	for (g = 0; g < APPSHOT_GROUPS; g++) {
		if (appshot_groups[g].filtered)
			ftrace_free_filter(&appshot_groups[g].ops);
		appshot_groups[g].filtered = false;
	}
}

/* Resolves the n names (counts[g] of each group, in group order) into sites and sets
 * each group's filter. */
int appshot_glue_hooks_init(const char *const *names, unsigned int n, const unsigned int *counts,
			    unsigned long *sites)
{
	unsigned int i, first = 0;
	int g, err;

	for (g = 0; g < APPSHOT_GROUPS; g++) {
		if (counts[g] == 0 || counts[g] > n - first)
			return -EINVAL;
		first += counts[g];
	}
	if (first != n)
		return -EINVAL;
	err = appshot_resolve(names, sites, n);
	if (err)
		return err;
	/* One filter update per group (by name, each would scan every ftrace record). */
	first = 0;
	for (g = 0; g < APPSHOT_GROUPS && !err; g++) {
		struct appshot_hook_group *group = &appshot_groups[g];

		memset(&group->ops, 0, sizeof(group->ops));
		err = ftrace_set_filter_ips(&group->ops, sites + first, counts[g], 0, 0);
		group->filtered = !err;
		first += counts[g];
	}
	if (err) {
		pr_err("cannot set the hook filter: error %d\n", err);
		appshot_glue_hooks_free();
		return err;
	}
	for (i = 0; i < n; i++)
		sites[i] += MCOUNT_INSN_SIZE;
	return 0;
}

static int appshot_group_attach(enum appshot_group g)
{
	struct appshot_hook_group *group = &appshot_groups[g];
	int err;

	if (group->attached || !group->filtered)
		return group->attached ? 0 : -ENOENT;
	err = register_ftrace_direct(&group->ops, (unsigned long)group->trampoline);
	group->attached = !err;
	return err;
}

static void appshot_group_detach(enum appshot_group g)
{
	struct appshot_hook_group *group = &appshot_groups[g];

	/* Keeps the filter for the next attach. */
	if (group->attached)
		unregister_ftrace_direct(&group->ops, (unsigned long)group->trampoline, false);
	group->attached = false;
}

void appshot_glue_hooks_detach(void)
{
	int g;

	for (g = APPSHOT_GROUPS - 1; g >= 0; g--)
		appshot_group_detach(g);
}

/* Attaches the on-demand hooks; only while the others are (called under the same mutex). */
int appshot_glue_hooks_attach_demand(void)
{
	int err;

	if (!appshot_groups[APPSHOT_GROUP_SYSCALL].attached)
		return -ENOENT;
	err = appshot_group_attach(APPSHOT_GROUP_DEMAND);
	if (err)
		pr_err("cannot attach the on-demand hooks: error %d\n", err);
	return err;
}

/* Attaches every group but the on-demand one, all or none. */
int appshot_glue_hooks_attach(void)
{
	int g, err = 0;

	for (g = 0; g < APPSHOT_GROUP_DEMAND && !err; g++)
		err = appshot_group_attach(g);
	if (err) {
		pr_err("cannot attach the hooks: error %d\n", err);
		appshot_glue_hooks_detach();
	}
	return err;
}

void appshot_glue_hooks_quiesce(void)
{
	/* Detached already: no new entries. Wait for tasks preempted inside the trampoline,
	 * for handlers that sleep, and once more for the instructions after a handler. */
	synchronize_rcu_tasks();
	wait_var_event(&appshot_hooks_inflight, atomic_read(&appshot_hooks_inflight) == 0);
	synchronize_rcu_tasks();
}

/* ---- SysV IPC (src/ipc/) ------------------------------------------------------------- */

/* The current task's table of IPC objects of `kind` (IPC_SEM_IDS, IPC_MSG_IDS,
 * IPC_SHM_IDS): what ipc_rmid() names the kind by. */
const void *appshot_glue_ipc_ids(int kind)
{
	struct ipc_namespace *ns = current->nsproxy->ipc_ns;

	return kind >= 0 && kind < 3 ? &ns->ids[kind] : NULL;
}

/* Calls a /proc/sysvipc show function (found by its hook, checked callable at load). */
int appshot_glue_call_seq_show(unsigned long site, struct seq_file *m, void *it)
{
	int (*call)(struct seq_file *, void *) = (void *)appshot_site_function(site);

	return call(m, it);
}

/* The overflow UID (or GID) that a 16-bit field shows for a larger one (SET_UID). */
unsigned int appshot_glue_overflow_id(bool gid)
{
	return gid ? overflowgid : overflowuid;
}

/* A seq_file's buffer, its fill and its size. */
void appshot_glue_seq_state(struct seq_file *m, char **buf, size_t *count, size_t *size)
{
	*buf = m->buf;
	*count = m->count;
	*size = m->size;
}

/* Sets a seq_file's fill (`count` == size: overflow, the read retries with a larger
 * buffer). */
void appshot_glue_seq_set_count(struct seq_file *m, size_t count)
{
	m->count = min(count, m->size);
}

/* The ID of an IPC object. */
int appshot_glue_ipc_perm_id(const struct kern_ipc_perm *perm)
{
	return READ_ONCE(perm->id);
}

static_assert(IPC_SEM_IDS == 0 && IPC_MSG_IDS == 1 && IPC_SHM_IDS == 2);

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

pid_t appshot_glue_task_pgrp(struct task_struct *task)
{
	return task_pgrp_nr_ns(task, &init_pid_ns);
}

pid_t appshot_glue_task_session(struct task_struct *task)
{
	return task_session_nr_ns(task, &init_pid_ns);
}

unsigned int appshot_glue_pid_uses(pid_t nr, struct task_struct *except)
{
	unsigned int uses = 0;
	struct task_struct *task;
	struct pid *pid;

	rcu_read_lock();
	pid = find_pid_ns(nr, &init_pid_ns);
	if (pid) {
		if (pid_has_task(pid, PIDTYPE_PID))
			uses |= APPSHOT_PID_USE_PID;
		hlist_for_each_entry_rcu(task, &pid->tasks[PIDTYPE_PGID], pid_links[PIDTYPE_PGID]) {
			if (task != except) {
				uses |= APPSHOT_PID_USE_PGID;
				break;
			}
		}
		hlist_for_each_entry_rcu(task, &pid->tasks[PIDTYPE_SID], pid_links[PIDTYPE_SID]) {
			if (task != except) {
				uses |= APPSHOT_PID_USE_SID;
				break;
			}
		}
	}
	rcu_read_unlock();
	return uses;
}

unsigned int appshot_glue_task_flags(struct task_struct *task)
{
	return READ_ONCE(task->flags);
}

void appshot_glue_rcu_read_lock(void)
{
	rcu_read_lock();
}

void appshot_glue_rcu_read_unlock(void)
{
	rcu_read_unlock();
}

/* The address of the current task's parent, to compare only (not dereferenced: no RCU
 * read lock needed). */
unsigned long appshot_glue_current_parent_address(void)
{
	return (unsigned long)READ_ONCE(current->real_parent);
}

/* Caller holds rcu_read_lock(), which keeps the parent's task_struct allocated. */
struct task_struct *appshot_glue_current_parent(void)
{
	return rcu_dereference(current->real_parent);
}

/* Caller holds rcu_read_lock(), which keeps the parent's task_struct allocated. */
struct task_struct *appshot_glue_task_parent(struct task_struct *task)
{
	return rcu_dereference(task->real_parent);
}

/* Every process (thread group leader), referenced, with its parent's PID; returns how
 * many there are (only the first `max` are written). */
unsigned int appshot_glue_collect_processes(struct task_struct **out, u32 *parents, unsigned int max)
{
	struct task_struct *p;
	unsigned int n = 0;

	rcu_read_lock();
	for_each_process(p) {
		if (n < max) {
			get_task_struct(p);
			out[n] = p;
			parents[n] = task_tgid_nr(rcu_dereference(p->real_parent));
		}
		n++;
	}
	rcu_read_unlock();
	return n;
}

/* 1: the task's PID namespace is the initial one, 0: another, -1: none (it has been
 * released and its PID detached). */
int appshot_glue_task_pid_ns(struct task_struct *task)
{
	struct pid_namespace *ns;
	int ret;

	rcu_read_lock();
	ns = task_active_pid_ns(task);
	ret = !ns ? -1 : ns == &init_pid_ns;
	rcu_read_unlock();
	return ret;
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

/* ---- Robust futexes ----------------------------------------------------------------- */

void appshot_glue_current_robust_lists(unsigned long *native, unsigned long *compat)
{
	*native = (unsigned long)current->robust_list;
#ifdef CONFIG_COMPAT
	*compat = (unsigned long)current->compat_robust_list;
#else
	*compat = 0;
#endif
}

/*
 * One atomic compare-and-exchange of a u32 in the current task's memory, faulting the page
 * in if needed (the caller may sleep): 0 with the value found in *found (the exchange
 * happened when it equals old), or -EFAULT.
 */
int appshot_glue_user_cmpxchg_u32(unsigned long addr, u32 old, u32 new, u32 *found)
{
	u32 __user *uaddr = (u32 __user *)addr;

	might_fault();
	return futex_atomic_cmpxchg_inatomic(found, uaddr, old, new);
}

/*
 * What ptrace's PTRACE_MODE_ATTACH_REALCREDS rule looks at, for the current task wanting
 * to attach to `task` (the rule itself is in Rust, src/linux/task.rs). Read under the
 * task's lock and RCU as ptrace_may_access() does; the capabilities are checked without
 * an audit record (the decision may not need them).
 */
void appshot_glue_attach_facts(struct task_struct *task, struct appshot_attach_facts *facts)
{
	const struct cred *caller = current_cred(), *tcred;
	struct mm_struct *mm;

	memset(facts, 0, sizeof(*facts));
	task_lock(task);
	facts->same_thread_group = same_thread_group(task, current);
	facts->caller_uid = from_kuid_munged(&init_user_ns, caller->uid);
	facts->caller_gid = from_kgid_munged(&init_user_ns, caller->gid);
	rcu_read_lock();
	tcred = __task_cred(task);
	facts->uid = from_kuid_munged(&init_user_ns, tcred->uid);
	facts->euid = from_kuid_munged(&init_user_ns, tcred->euid);
	facts->suid = from_kuid_munged(&init_user_ns, tcred->suid);
	facts->gid = from_kgid_munged(&init_user_ns, tcred->gid);
	facts->egid = from_kgid_munged(&init_user_ns, tcred->egid);
	facts->sgid = from_kgid_munged(&init_user_ns, tcred->sgid);
	facts->ptrace_cap_over_creds = ns_capable_noaudit(tcred->user_ns, CAP_SYS_PTRACE);
	rcu_read_unlock();
	/* Dumpability is read after the credentials (pairs with commit_creds()). */
	smp_rmb();
	mm = task->mm;
	facts->has_mm = mm != NULL;
	if (mm) {
		facts->dumpable = get_dumpable(mm) == SUID_DUMP_USER;
		facts->ptrace_cap_over_mm = ns_capable_noaudit(mm->user_ns, CAP_SYS_PTRACE);
	}
	task_unlock(task);
}

/* ---- Namespaces and clone arguments ------------------------------------------------ */

/* The namespace type (CLONE_NEW*) of descriptor `fd` if it is a namespace file, else 0. */
int appshot_glue_fd_ns_type(int fd)
{
	struct fd f = fdget(fd);
	struct inode *inode;
	int type = 0;

	if (!fd_file(f))
		return 0;
	inode = file_inode(fd_file(f));
	if (inode->i_sb->s_magic == NSFS_MAGIC)
		type = ((struct ns_common *)inode->i_private)->ops->type;
	fdput(f);
	return type;
}

/* The flags and CLONE_PARENT_SETTID address of kernel_clone()'s arguments. */
void appshot_glue_clone_args(struct kernel_clone_args *args, u64 *flags, u64 *parent_tid,
			     u32 *set_tid_size, s32 *set_tid0)
{
	*flags = args->flags;
	*parent_tid = (unsigned long)args->parent_tid;
	*set_tid_size = args->set_tid_size;
	/* clone3 copied the array into the kernel (kargs.set_tid); [0] is the innermost. */
	*set_tid0 = args->set_tid_size ? args->set_tid[0] : 0;
}

void appshot_glue_clone_args_drop_set_tid(struct kernel_clone_args *args)
{
	args->set_tid_size = 0;
}

bool appshot_glue_checkpoint_restore_capable(void)
{
	return checkpoint_restore_ns_capable(task_active_pid_ns(current)->user_ns);
}

/* ---- siginfo ---------------------------------------------------------------------- */

void appshot_glue_siginfo_fields(const kernel_siginfo_t *info, int *signo, int *code, pid_t *pid)
{
	*signo = info->si_signo;
	*code = info->si_code;
	*pid = info->si_pid;
}

void appshot_glue_siginfo_set_pid(kernel_siginfo_t *info, pid_t pid)
{
	info->si_pid = pid;
}

kernel_siginfo_t *appshot_glue_ksignal_info(struct ksignal *ksig)
{
	return &ksig->info;
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

/* ---- Layouts and constants the Rust side relies on ---------------------------------- */

/*
 * Rust reads these fields through the bindings, or uses these numbers where the bindings
 * have no constant (macros bindgen cannot evaluate, structures it does not see): the
 * same literals are in src/linux/glue.rs (pt_regs), src/syscalls/ and src/hooks/, and
 * this file fails to build when the kernel's headers say otherwise.
 */
static_assert(offsetof(struct pt_regs, bp) == 32 && offsetof(struct pt_regs, bx) == 40);
static_assert(offsetof(struct pt_regs, r10) == 56 && offsetof(struct pt_regs, r9) == 64);
static_assert(offsetof(struct pt_regs, r8) == 72 && offsetof(struct pt_regs, cx) == 88);
static_assert(offsetof(struct pt_regs, dx) == 96 && offsetof(struct pt_regs, si) == 104);
static_assert(offsetof(struct pt_regs, di) == 112 && offsetof(struct pt_regs, orig_ax) == 120);
static_assert(sizeof(struct pt_regs) == 168);
/* src/syscalls/mod.rs */
static_assert(TIOCGPGRP == 0x540f && TIOCSPGRP == 0x5410 && TIOCGSID == 0x5429);
static_assert(P_PID == 1 && P_PGID == 2);
static_assert(F_GETLK == 5 && F_GETLK64 == 12 && F_UNLCK == 2);
/* SysV IPC (src/ipc/calls.rs). */
static_assert(IPC_PRIVATE == 0 && IPC_CREAT == 01000 && IPC_EXCL == 02000 && IPC_64 == 0x100);
static_assert(IPC_RMID == 0 && IPC_STAT == 2 && IPC_INFO == 3);
static_assert(GETPID == 11 && SEM_STAT == 18 && SEM_INFO == 19 && SEM_STAT_ANY == 20);
static_assert(SHM_STAT == 13 && SHM_INFO == 14 && SHM_STAT_ANY == 15);
static_assert(MSG_STAT == 11 && MSG_INFO == 12 && MSG_STAT_ANY == 13);
static_assert(SEMOP == 1 && SEMGET == 2 && SEMCTL == 3 && SEMTIMEDOP == 4);
static_assert(MSGSND == 11 && MSGRCV == 12 && MSGGET == 13 && MSGCTL == 14);
static_assert(SHMAT == 21 && SHMGET == 23 && SHMCTL == 24);
static_assert(offsetof(struct ipc64_perm, key) == 0);
static_assert(sizeof(struct semid64_ds) == 104 && sizeof(struct shmid64_ds) == 112);
static_assert(sizeof(struct msqid64_ds) == 120);
static_assert(offsetof(struct shmid64_ds, shm_cpid) == 80 && offsetof(struct shmid64_ds, shm_lpid) == 84);
static_assert(offsetof(struct msqid64_ds, msg_lspid) == 96 && offsetof(struct msqid64_ds, msg_lrpid) == 100);
#ifdef CONFIG_COMPAT
static_assert(offsetof(struct compat_ipc64_perm, key) == 0);
static_assert(sizeof(struct compat_semid64_ds) == 64 && sizeof(struct compat_shmid64_ds) == 84);
static_assert(sizeof(struct compat_msqid64_ds) == 88);
static_assert(offsetof(struct compat_shmid64_ds, shm_cpid) == 64);
static_assert(offsetof(struct compat_shmid64_ds, shm_lpid) == 68);
static_assert(offsetof(struct compat_msqid64_ds, msg_lspid) == 72);
static_assert(offsetof(struct compat_msqid64_ds, msg_lrpid) == 76);
#endif
static_assert(offsetof(struct flock, l_pid) == 24);
#ifdef CONFIG_COMPAT
static_assert(offsetof(struct compat_flock, l_pid) == 12);
static_assert(offsetof(struct compat_flock64, l_pid) == 20);
#endif
static_assert(offsetof(siginfo_t, si_pid) == 16);
#ifdef CONFIG_COMPAT
static_assert(offsetof(struct compat_siginfo, _sifields._kill._pid) == 12);
#endif
/* src/pid/mod.rs: PID_MAX */
static_assert(PID_MAX_LIMIT == 4 * 1024 * 1024);
/* src/hooks/signals.rs */
static_assert(sizeof(struct signalfd_siginfo) == 128);
static_assert(offsetof(struct signalfd_siginfo, ssi_pid) == 12);
static_assert(offsetof(struct signalfd_siginfo, ssi_code) == 8);
/* src/pid/futex.rs */
static_assert(FUTEX_TID_MASK == 0x3fffffff && ROBUST_LIST_LIMIT == 2048);
/* src/syscalls/interfaces.rs: futex() */
static_assert(FUTEX_CMD_MASK == ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME));
static_assert(FUTEX_PRIVATE_FLAG == 128 && FUTEX_CLOCK_REALTIME == 256);
static_assert(FUTEX_LOCK_PI == 6 && FUTEX_TRYLOCK_PI == 8);
static_assert(FUTEX_CMP_REQUEUE_PI == 12 && FUTEX_LOCK_PI2 == 13);
static_assert(offsetof(struct robust_list_head, futex_offset) == 8);
static_assert(offsetof(struct robust_list_head, list_op_pending) == 16);
#ifdef CONFIG_COMPAT
static_assert(offsetof(struct compat_robust_list_head, futex_offset) == 4);
static_assert(offsetof(struct compat_robust_list_head, list_op_pending) == 8);
#endif
/* src/syscalls/interfaces.rs */
static_assert(offsetof(struct __user_cap_header_struct, pid) == 4);
static_assert(offsetof(struct f_owner_ex, pid) == 4);
static_assert(offsetof(sigevent_t, sigev_notify) == 12);
static_assert(offsetof(sigevent_t, sigev_notify_thread_id) == 16);
static_assert(offsetof(struct ucred, pid) == 0);
static_assert(offsetof(struct user_msghdr, msg_control) == 32);
static_assert(offsetof(struct user_msghdr, msg_controllen) == 40);
static_assert(sizeof(struct mmsghdr) == 64 && sizeof(struct cmsghdr) == 16);
static_assert(CPUCLOCK_CLOCK_MASK == 3 && CLOCKFD == 3);
#ifdef CONFIG_COMPAT
static_assert(offsetof(struct compat_sigevent, sigev_notify) == 8);
static_assert(offsetof(struct compat_sigevent, _sigev_un._tid) == 12);
static_assert(offsetof(struct compat_msghdr, msg_control) == 16);
static_assert(offsetof(struct compat_msghdr, msg_controllen) == 20);
static_assert(sizeof(struct compat_mmsghdr) == 32 && sizeof(struct compat_cmsghdr) == 12);
#endif
