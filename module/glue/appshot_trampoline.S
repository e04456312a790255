/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * appshot_trampoline.S: the ftrace direct-call trampoline of appshot.ko (x86_64).
 *
 * A hooked kernel function's fentry site calls it before the function's first
 * instruction. The trampoline saves the six argument registers in an array on its stack
 * and calls its C entry (appshot_glue_hook_entry):
 *
 *	bool entry(unsigned long args[6], unsigned long ret_ip, long *out,
 *		   unsigned long parent_ip);
 *
 * ret_ip is the return address into the hooked function (just after its fentry call),
 * parent_ip the return address into the hooked function's caller.
 *
 *  - entry returns false: the argument registers are restored and the trampoline returns
 *    into the hooked function, which runs as if nothing happened.
 *  - entry returns true: the call is *replaced*. The trampoline drops the return address
 *    into the hooked function and returns straight to its caller with *out in %rax.
 *
 * The argument registers are restored from the array, which the entry never writes, so
 * whatever the caller passed reaches the hooked function unchanged; %rax, which no
 * hooked function reads on entry, is clobbered.
 *
 * The trampoline is marked STACK_FRAME_NON_STANDARD for objtool: returning to the
 * caller's caller on the replace path is, by design, a "return with modified stack frame".
 */
#include <linux/linkage.h>
#include <linux/objtool.h>
#include <asm/nospec-branch.h>

.macro APPSHOT_TRAMPOLINE name, entry
SYM_FUNC_START(\name)
	pushq	%rbp
	movq	%rsp, %rbp
	CALL_DEPTH_ACCOUNT
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
	movq	16(%rbp), %rcx		/* return address into the hooked function's caller */
	call	\entry
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
	RET				/* to its caller, with the replacement's value in %rax */
SYM_FUNC_END(\name)
STACK_FRAME_NON_STANDARD \name
.endm

APPSHOT_TRAMPOLINE appshot_trampoline, appshot_glue_hook_entry
