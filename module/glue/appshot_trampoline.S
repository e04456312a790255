/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * appshot_trampoline.S: the ftrace direct-call trampoline of appshot.ko (x86_64), and
 * the task-slot hash it shares with Rust.
 *
 * A hooked kernel function's fentry site calls the trampoline before the function's
 * first instruction.
 *
 * There are three trampolines (appshot_glue.c says which functions each one serves): the
 * system calls', the other kernel functions', and the unfiltered one.
 *
 * Fast path. Most calls come from tasks in no AID, and they must cost next to nothing
 * (docs/design/hooks.md). The trampoline hashes the current task's address to its slot
 * and reads appshot_linked_slots[slot], the number of linked tasks in that slot (kept by
 * src/pid/task_index.rs). Zero means the current task is in no AID, and the trampoline
 * returns straight into the hooked function, touching only %rax and %r11 (scratch in
 * the C calling convention, never read by the hooked functions on entry). The functions
 * that must see every task's call (release_task: a linked task may be reaped by a task
 * in no AID; ipc_rmid: an AID's object may be removed by anyone) have a trampoline of
 * their own without the filter, appshot_trampoline_unfiltered.
 *
 * Slow path of a kernel function (appshot_trampoline, appshot_trampoline_unfiltered).
 * The trampoline saves the six argument registers in an array on its stack and calls
 * the Rust entry (src/hooks/mod.rs):
 *
 *	bool appshot_rust_hook(unsigned long args[6], unsigned long site, long *out);
 *
 * site is the return address into the hooked function (just after its fentry call),
 * which names the hooked function.
 *
 *  - it returns false: the argument registers are restored and the trampoline returns
 *    into the hooked function, which runs as if nothing happened.
 *  - it returns true: the call is *replaced*. The trampoline drops the return address
 *    into the hooked function and returns straight to its caller with *out in %rax.
 *
 * The argument registers are restored from the array, which the entry never writes, so
 * whatever the caller passed reaches the hooked function unchanged; %rax and %r11 are
 * clobbered.
 *
 * Slow path of a system call (appshot_trampoline_syscall). A system call entry takes
 * one argument, the pt_regs pointer in %rdi, and it must be the task's own saved
 * registers (see the trampoline); only %rdi is saved, and the Rust entry is called
 * with what it needs in registers:
 *
 *	bool appshot_rust_syscall(struct pt_regs *regs, unsigned long site, long *out,
 *				  unsigned long slot, struct task_struct *task);
 *
 * Pass and replace as above. Every other register the C convention lets a callee
 * clobber is dead at an entry's first instruction (its caller passed one argument).
 *
 * Unwinding. objtool follows the trampoline like any function (it is entered as one, by
 * the fentry call), so stack traces through it (lockdep, KASAN, hung-task reports,
 * /proc/PID/stack) continue into the hooked function and its callers. On the replace
 * path the stack, once the return address into the hooked function is dropped, is that
 * of a function entered from the hooked function's caller: an UNWIND_HINT_FUNC says so,
 * as the kernel's own ftrace_regs_caller does after its tail call.
 */
#include <linux/linkage.h>
#include <asm/asm-offsets.h>
#include <asm/nospec-branch.h>
#include <asm/percpu.h>
#include <asm/unwind_hints.h>

/*
 * Slots: a task_struct address without its cache-line bits, Fibonacci-hashed to
 * APPSHOT_SLOT_BITS bits. The Rust side checks appshot_slot_bits against its own
 * constant at load and computes slots only through appshot_task_slot, so the hash is
 * defined here once.
 */
#define APPSHOT_SLOT_BITS 14

.macro APPSHOT_TASK_SLOT reg, tmp
	shrq	$6, \reg
	movabsq	$0x9e3779b97f4a7c15, \tmp
	imulq	\tmp, \reg
	shrq	$(64 - APPSHOT_SLOT_BITS), \reg
.endm

	.section .rodata
	.balign 4
SYM_DATA(appshot_slot_bits, .long APPSHOT_SLOT_BITS)
	.text

/* unsigned long appshot_task_slot(unsigned long address) */
SYM_FUNC_START(appshot_task_slot)
	movq	%rdi, %rax
	APPSHOT_TASK_SLOT %rax, %rdi
	RET
SYM_FUNC_END(appshot_task_slot)

/*
 * The task filter: jumps to \native when no linked task has the current task's slot
 * (touching only %rax and %r11); otherwise goes on with the slot in %rax.
 */
.macro APPSHOT_SLOT_FILTER native
	movq	PER_CPU_VAR(pcpu_hot + X86_current_task), %rax
	APPSHOT_TASK_SLOT %rax, %r11
	leaq	appshot_linked_slots(%rip), %r11
	cmpl	$0, (%r11, %rax, 4)
	je	\native
.endm

.macro APPSHOT_HOOK_CALL
	pushq	%rbp
	movq	%rsp, %rbp
	pushq	%r9
	pushq	%r8
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	$0			/* *out */
	leaq	8(%rsp), %rdi		/* args[6] */
	movq	8(%rbp), %rsi		/* return address into the hooked function */
	movq	%rsp, %rdx		/* out */
	call	appshot_rust_hook
	testb	%al, %al
	popq	%rax			/* *out; pop and mov leave the flags alone */
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%r8
	popq	%r9
	leave
	jnz	1f
	RET				/* into the hooked function */
1:	addq	$8, %rsp		/* drop the return address into the hooked function */
	UNWIND_HINT_FUNC
	RET				/* to its caller, with the replacement's value in %rax */
.endm

/*
 * The trampoline of the system call entries. After the task filter, one more test: a
 * system call entry gets its user registers, task_pt_regs(current) (the frame just
 * below the top of the task's stack, whose address the CPU's pcpu_hot keeps), as its
 * only argument. A handler that calls the original passes a copy of them with the
 * translated arguments, and that nested call must run unhooked: it returns straight
 * into the entry here, without saving a register or entering Rust (about 50
 * instructions less on every translated call). That test is the recursion guard.
 */
SYM_FUNC_START(appshot_trampoline_syscall)
	CALL_DEPTH_ACCOUNT
	APPSHOT_SLOT_FILTER .Lappshot_syscall_native
	movq	PER_CPU_VAR(pcpu_hot + X86_top_of_stack), %r11
	subq	$PTREGS_SIZE, %r11
	cmpq	%r11, %rdi
	jne	.Lappshot_syscall_native	/* a handler's call of the original */
	pushq	%rbp
	movq	%rsp, %rbp
	pushq	%rdi			/* the entry's argument */
	pushq	$0			/* *out */
					/* %rdi: regs */
	movq	8(%rbp), %rsi		/* site: return address into the entry */
	movq	%rsp, %rdx		/* out */
	movq	%rax, %rcx		/* the current task's slot */
	movq	PER_CPU_VAR(pcpu_hot + X86_current_task), %r8
	call	appshot_rust_syscall
	testb	%al, %al
	popq	%rax			/* *out; pop and mov leave the flags alone */
	popq	%rdi
	leave
	jnz	1f
.Lappshot_syscall_native:
	RET				/* into the system call entry */
1:	addq	$8, %rsp		/* drop the return address into the entry */
	UNWIND_HINT_FUNC
	RET				/* to its caller, with the replacement's value in %rax */
SYM_FUNC_END(appshot_trampoline_syscall)

/* The trampoline of the other filtered kernel functions (and the on-demand ones). */
SYM_FUNC_START(appshot_trampoline)
	CALL_DEPTH_ACCOUNT
	APPSHOT_SLOT_FILTER .Lappshot_native
	APPSHOT_HOOK_CALL
.Lappshot_native:
	RET				/* fast path: into the hooked function */
SYM_FUNC_END(appshot_trampoline)

/*
 * The trampoline of the functions every task's call must reach appshot (ipc_rmid: an
 * object of an AID may be removed by any process): no filter, straight to the slow
 * path.
 */
SYM_FUNC_START(appshot_trampoline_unfiltered)
	CALL_DEPTH_ACCOUNT
	APPSHOT_HOOK_CALL
SYM_FUNC_END(appshot_trampoline_unfiltered)
