// SPDX-License-Identifier: GPL-2.0-only
/*
 * hook_candidates.c: a measurement tool, not part of appshot.
 *
 * Attaches one candidate system-call hook mechanism (module parameter `mode=`) to two
 * system calls at once: getpid (no arguments) and newuname (one user pointer), so that
 * `cargo xtask bench --candidates` can compare their cost against no hook in one boot.
 * Loading the module attaches the hooks, unloading detaches them; nothing else.
 *
 * Modes:
 *   kprobe          empty kprobe pre-handler on __x64_sys_X (kprobe-on-ftrace here)
 *   ftrace-empty    ftrace_ops with SAVE_REGS whose callback does nothing
 *   ftrace-redirect ftrace_ops with SAVE_REGS|IPMODIFY|RECURSION: the callback moves the
 *                   instruction pointer to a replacement, which calls the original again
 *                   (recursion guard: within_module(parent_ip, THIS_MODULE))
 *   direct-empty    register_ftrace_direct trampoline that calls an empty C function and
 *                   returns into the syscall
 *   direct-replace  register_ftrace_direct trampoline that drops the return address into
 *                   the syscall, calls a handler doing the syscall's work and returns to
 *                   the dispatcher with its value (getpid: task_tgid_vnr(current); newuname:
 *                   copies utsname() to the user buffer, see hc_uname())
 *
 * Addresses come from register_kprobe(.symbol_name) (kallsyms_lookup_name is not
 * exported), as docs in ../../docs/BENCHMARKS.md and PLATFORM.md describe. Every mode
 * checks nothing per call: the point is the mechanism's own cost.
 */
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/utsname.h>
#include <asm/ibt.h>
#include <asm/nospec-branch.h>

static char *mode = "direct-empty";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "kprobe | ftrace-empty | ftrace-redirect | direct-empty | direct-replace");

enum hc_mode { HC_KPROBE, HC_FTRACE_EMPTY, HC_FTRACE_REDIRECT, HC_DIRECT_EMPTY, HC_DIRECT_REPLACE };

static const char *const hc_mode_names[] = {
	[HC_KPROBE] = "kprobe",
	[HC_FTRACE_EMPTY] = "ftrace-empty",
	[HC_FTRACE_REDIRECT] = "ftrace-redirect",
	[HC_DIRECT_EMPTY] = "direct-empty",
	[HC_DIRECT_REPLACE] = "direct-replace",
};

static enum hc_mode hc_mode;

typedef long (*hc_syscall_fn)(const struct pt_regs *regs);

/* ---- Handlers ---------------------------------------------------------------------- */

/* The work of getpid, done by the replacing trampoline's handler. */
long hc_getpid(const struct pt_regs *regs);
long hc_getpid(const struct pt_regs *regs)
{
	return task_tgid_vnr(current);
}

/*
 * The work of newuname, done by the replacing trampoline's handler. The kernel takes
 * uts_sem around the copy (only against sethostname); uts_sem is not exported, so this
 * copies without it: fine for a benchmark, racy against a concurrent sethostname.
 * override_release/override_architecture (personality flags) are not applied either.
 */
long hc_uname(const struct pt_regs *regs);
long hc_uname(const struct pt_regs *regs)
{
	struct new_utsname tmp;

	memcpy(&tmp, utsname(), sizeof(tmp));
	if (copy_to_user((struct new_utsname __user *)regs->di, &tmp, sizeof(tmp)))
		return -EFAULT;
	return 0;
}

/* What direct-empty's trampoline calls: nothing, but a real call, as a hook would make. */
void hc_empty(const struct pt_regs *regs);
noinline void hc_empty(const struct pt_regs *regs)
{
	barrier();
}

/* ---- Direct-call trampolines --------------------------------------------------------- */

/* Returns into the traced function; %rdi (its pt_regs argument) kept across the call. */
asm("	.pushsection	.text, \"ax\", @progbits\n"
    "	.type		hc_tramp_empty, @function\n"
    "	.globl		hc_tramp_empty\n"
    "hc_tramp_empty:\n"
    ASM_ENDBR
    "	pushq %rbp\n"
    "	movq %rsp, %rbp\n"
    CALL_DEPTH_ACCOUNT
    "	pushq %rdi\n"
    "	call hc_empty\n"
    "	popq %rdi\n"
    "	leave\n"
    ASM_RET
    "	.size		hc_tramp_empty, .-hc_tramp_empty\n"
    "	.popsection\n");

/*
 * Replaces the traced function: drops the return address into it (pushed by the call at
 * its fentry site), so the handler's `ret` path returns to the syscall dispatcher with
 * the handler's %rax. objtool warns "return with modified stack frame"; it loads and runs.
 */
#define HC_REPLACING_TRAMPOLINE(name, handler)					\
	asm("	.pushsection	.text, \"ax\", @progbits\n"			\
	    "	.type		" #name ", @function\n"				\
	    "	.globl		" #name "\n"					\
	    #name ":\n"								\
	    ASM_ENDBR								\
	    "	addq $8, %rsp\n"						\
	    "	pushq %rbp\n"							\
	    "	movq %rsp, %rbp\n"						\
	    "	call " #handler "\n"						\
	    "	leave\n"							\
	    ASM_RET								\
	    "	.size		" #name ", .-" #name "\n"			\
	    "	.popsection\n")

void hc_tramp_empty(void);
void hc_tramp_getpid(void);
void hc_tramp_uname(void);
HC_REPLACING_TRAMPOLINE(hc_tramp_getpid, hc_getpid);
HC_REPLACING_TRAMPOLINE(hc_tramp_uname, hc_uname);

/* ---- ftrace redirect ----------------------------------------------------------------- */

struct hc_hook;
static long hc_redirect_getpid(const struct pt_regs *regs);
static long hc_redirect_uname(const struct pt_regs *regs);

/* The hooked system calls: one table for every mode. */
struct hc_hook {
	const char *symbol;
	unsigned long addr;		/* function start (its ENDBR), from the kprobe trick */
	unsigned long replacing_tramp;	/* direct-replace */
	hc_syscall_fn redirect;		/* ftrace-redirect */
	struct ftrace_ops ops;
	struct kprobe kp;
	bool attached;
};

static struct hc_hook hc_hooks[] = {
	{ .symbol = "__x64_sys_getpid", .replacing_tramp = (unsigned long)hc_tramp_getpid,
	  .redirect = hc_redirect_getpid },
	{ .symbol = "__x64_sys_newuname", .replacing_tramp = (unsigned long)hc_tramp_uname,
	  .redirect = hc_redirect_uname },
};

/*
 * The replacements call the original through its hooked entry: a second ftrace pass,
 * which the callback lets through because parent_ip is in this module. The barrier
 * after the call keeps it from becoming a tail call (a jmp): parent_ip would then be
 * the syscall dispatcher, and the callback would redirect again, forever.
 */
static long hc_call_original(const struct hc_hook *hook, const struct pt_regs *regs)
{
	long ret = ((hc_syscall_fn)hook->addr)(regs);

	barrier();
	return ret;
}

static long hc_redirect_getpid(const struct pt_regs *regs)
{
	return hc_call_original(&hc_hooks[0], regs);
}

static long hc_redirect_uname(const struct pt_regs *regs)
{
	return hc_call_original(&hc_hooks[1], regs);
}

static void hc_ftrace_empty_cb(unsigned long ip, unsigned long parent_ip,
			       struct ftrace_ops *op, struct ftrace_regs *fregs)
{
}

static void hc_ftrace_redirect_cb(unsigned long ip, unsigned long parent_ip,
				  struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	struct hc_hook *hook = container_of(op, struct hc_hook, ops);

	if (within_module(parent_ip, THIS_MODULE))
		return;
	ftrace_regs_set_instruction_pointer(fregs, (unsigned long)hook->redirect);
}

static int hc_kprobe_pre(struct kprobe *kp, struct pt_regs *regs)
{
	return 0;
}

/* ---- Attach / detach ------------------------------------------------------------------- */

static unsigned long hc_lookup(const char *symbol)
{
	struct kprobe kp = { .symbol_name = symbol };
	unsigned long addr;

	if (register_kprobe(&kp) < 0)
		return 0;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	/* With IBT the kprobe sits after the ENDBR; an indirect call must land on it. */
	if (is_endbr(*(u32 *)(addr - ENDBR_INSN_SIZE)))
		addr -= ENDBR_INSN_SIZE;
	return addr;
}

static int hc_attach(struct hc_hook *hook)
{
	int err;

	memset(&hook->ops, 0, sizeof(hook->ops));
	memset(&hook->kp, 0, sizeof(hook->kp));
	switch (hc_mode) {
	case HC_KPROBE:
		hook->kp.symbol_name = hook->symbol;
		hook->kp.pre_handler = hc_kprobe_pre;
		return register_kprobe(&hook->kp);
	case HC_FTRACE_EMPTY:
	case HC_FTRACE_REDIRECT:
		hook->ops.func = hc_mode == HC_FTRACE_EMPTY ? hc_ftrace_empty_cb : hc_ftrace_redirect_cb;
		hook->ops.flags = FTRACE_OPS_FL_SAVE_REGS;
		if (hc_mode == HC_FTRACE_REDIRECT)
			hook->ops.flags |= FTRACE_OPS_FL_IPMODIFY | FTRACE_OPS_FL_RECURSION;
		err = ftrace_set_filter_ip(&hook->ops, hook->addr, 0, 0);
		if (!err)
			err = register_ftrace_function(&hook->ops);
		if (err)
			ftrace_free_filter(&hook->ops);
		return err;
	case HC_DIRECT_EMPTY:
	case HC_DIRECT_REPLACE:
		err = ftrace_set_filter_ip(&hook->ops, hook->addr, 0, 0);
		if (!err)
			err = register_ftrace_direct(&hook->ops, hc_mode == HC_DIRECT_EMPTY ?
						     (unsigned long)hc_tramp_empty :
						     hook->replacing_tramp);
		if (err)
			ftrace_free_filter(&hook->ops);
		return err;
	}
	return -EINVAL;
}

static void hc_detach(struct hc_hook *hook)
{
	switch (hc_mode) {
	case HC_KPROBE:
		unregister_kprobe(&hook->kp);
		break;
	case HC_FTRACE_EMPTY:
	case HC_FTRACE_REDIRECT:
		unregister_ftrace_function(&hook->ops);
		ftrace_free_filter(&hook->ops);
		break;
	case HC_DIRECT_EMPTY:
		unregister_ftrace_direct(&hook->ops, (unsigned long)hc_tramp_empty, true);
		break;
	case HC_DIRECT_REPLACE:
		unregister_ftrace_direct(&hook->ops, hook->replacing_tramp, true);
		break;
	}
}

static void hc_detach_all(void)
{
	int i;

	for (i = ARRAY_SIZE(hc_hooks) - 1; i >= 0; i--) {
		if (hc_hooks[i].attached)
			hc_detach(&hc_hooks[i]);
		hc_hooks[i].attached = false;
	}
	/*
	 * Tasks preempted in a trampoline or callback. A handler that sleeps (hc_uname may
	 * fault) is not covered by RCU-tasks; the bench unloads only after its worker
	 * processes have exited, so no call is in flight then.
	 */
	synchronize_rcu_tasks();
}

static int __init hc_init(void)
{
	int i, err;

	for (i = 0; i < ARRAY_SIZE(hc_mode_names); i++)
		if (sysfs_streq(mode, hc_mode_names[i]))
			break;
	if (i == ARRAY_SIZE(hc_mode_names)) {
		pr_err("hook_candidates: unknown mode=%s\n", mode);
		return -EINVAL;
	}
	hc_mode = i;

	for (i = 0; i < ARRAY_SIZE(hc_hooks); i++) {
		struct hc_hook *hook = &hc_hooks[i];

		hook->addr = hc_lookup(hook->symbol);
		if (!hook->addr) {
			pr_err("hook_candidates: cannot find %s\n", hook->symbol);
			hc_detach_all();
			return -ENOENT;
		}
		err = hc_attach(hook);
		if (err) {
			pr_err("hook_candidates: mode %s on %s: error %d\n", mode, hook->symbol, err);
			hc_detach_all();
			return err;
		}
		hook->attached = true;
	}
	return 0;
}

static void __exit hc_exit(void)
{
	hc_detach_all();
}

module_init(hc_init);
module_exit(hc_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("appshot bench: candidate system-call hook mechanisms (measurement tool)");
