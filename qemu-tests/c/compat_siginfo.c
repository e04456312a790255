// SPDX-License-Identifier: GPL-2.0-only
/*
 * compat_siginfo: what a 32-bit process (i386, built with -m32) or an x32 process
 * (-mx32) reads as si_pid for a signal it sent itself, in the two places the kernel
 * writes a compat siginfo: the frame of an SA_SIGINFO handler, and rt_sigtimedwait.
 *
 * Freestanding (no libc: the build machine has no i386 or x32 libc), every system call
 * made directly for the ABI it is built for. Prints `key=value` lines, as pidprobe does:
 * pid, handler_signo, handler_si_pid, wait_ret, wait_si_pid, and for i386 also
 * wait32_ret, wait32_si_pid (the time32 rt_sigtimedwait).
 *
 * Natively both si_pid values equal pid (the sender is the process itself); inside an
 * AID pid is the virtual PID, and so must both si_pid values be.
 */

typedef unsigned int u32;
typedef int s32;

#if defined(__i386__)
#define NR_write 4
#define NR_getpid 20
#define NR_kill 37
#define NR_rt_sigreturn 173
#define NR_rt_sigaction 174
#define NR_rt_sigprocmask 175
/* Both i386 forms: rt_sigtimedwait_time64 and the time32 one older programs call. */
#define NR_rt_sigtimedwait 421
#define NR_rt_sigtimedwait_time32 177
#define NR_exit_group 252

static long sys(long nr, long a, long b, long c, long d)
{
	long ret;

	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "0"(nr), "b"(a), "c"(b), "d"(c), "S"(d)
			 : "memory");
	return ret;
}

/* The handler's return: rt_sigreturn through the i386 entry. */
__asm__(".text\n"
	".globl restorer\n"
	"restorer:\n"
	"	movl $173, %eax\n"
	"	int $0x80\n");

#elif defined(__x86_64__) && defined(__ILP32__)
#define X32 0x40000000
#define NR_write (X32 | 1)
#define NR_getpid (X32 | 39)
#define NR_kill (X32 | 62)
#define NR_rt_sigprocmask (X32 | 14)
#define NR_exit_group (X32 | 231)
/* The x32-only numbers (compat layouts). */
#define NR_rt_sigaction (X32 | 512)
#define NR_rt_sigreturn (X32 | 513)
#define NR_rt_sigtimedwait (X32 | 523)

static long sys(long nr, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

__asm__(".text\n"
	".globl restorer\n"
	"restorer:\n"
	"	movl $0x40000201, %eax\n"
	"	syscall\n");

#else
#error "build with -m32 or -mx32"
#endif

#define SIGUSR1 10
#define SIGUSR2 12
#define SIG_BLOCK 0
#define SA_SIGINFO 0x4
#define SA_RESTORER 0x04000000

void restorer(void);

/* The compat siginfo: si_signo, si_errno, si_code, then si_pid at offset 12. */
struct compat_siginfo {
	s32 signo;
	s32 err;
	s32 code;
	s32 pid;
	s32 rest[28];
};

/* The kernel's compat sigaction: handler, flags, restorer, mask (two words). */
struct compat_sigaction {
	u32 handler;
	u32 flags;
	u32 restorer;
	u32 mask[2];
};

static volatile s32 handler_signo = -1;
static volatile s32 handler_pid = -1;

static void on_signal(int sig, struct compat_siginfo *info, void *context)
{
	(void)sig;
	(void)context;
	handler_signo = info->signo;
	handler_pid = info->pid;
}

static unsigned long length(const char *s)
{
	unsigned long n = 0;

	while (s[n])
		n++;
	return n;
}

static void put(const char *s)
{
	sys(NR_write, 1, (long)s, (long)length(s), 0);
}

static void put_num(const char *name, long value)
{
	char buf[24];
	int at = sizeof(buf);
	unsigned long v = value < 0 ? -(unsigned long)value : (unsigned long)value;

	buf[--at] = 0;
	do {
		buf[--at] = '0' + v % 10;
		v /= 10;
	} while (v);
	if (value < 0)
		buf[--at] = '-';
	put(name);
	put(buf + at);
}

int main(void)
{
	struct compat_sigaction act = {
		.handler = (u32)(unsigned long)on_signal,
		.flags = SA_SIGINFO | SA_RESTORER,
		.restorer = (u32)(unsigned long)restorer,
	};
	struct compat_siginfo info;
	u32 set[2] = { 1u << (SIGUSR2 - 1), 0 };
	long pid, ret;

	pid = sys(NR_getpid, 0, 0, 0, 0);
	if (sys(NR_rt_sigaction, SIGUSR1, (long)&act, 0, 8) != 0) {
		put("rt_sigaction failed\n");
		return 1;
	}
	/* Delivered to the handler before kill returns. */
	sys(NR_kill, pid, SIGUSR1, 0, 0);
	/* Blocked, then taken by rt_sigtimedwait. */
	sys(NR_rt_sigprocmask, SIG_BLOCK, (long)set, 0, 8);
	sys(NR_kill, pid, SIGUSR2, 0, 0);
	for (unsigned int i = 0; i < sizeof(info) / 4; i++)
		((s32 *)&info)[i] = -1;
	ret = sys(NR_rt_sigtimedwait, (long)set, (long)&info, 0, 8);
	put_num("pid=", pid);
	put_num("\nhandler_signo=", handler_signo);
	put_num("\nhandler_si_pid=", handler_pid);
	put_num("\nwait_ret=", ret);
	put_num("\nwait_si_pid=", info.pid);
#ifdef NR_rt_sigtimedwait_time32
	sys(NR_kill, pid, SIGUSR2, 0, 0);
	for (unsigned int i = 0; i < sizeof(info) / 4; i++)
		((s32 *)&info)[i] = -1;
	ret = sys(NR_rt_sigtimedwait_time32, (long)set, (long)&info, 0, 8);
	put_num("\nwait32_ret=", ret);
	put_num("\nwait32_si_pid=", info.pid);
#endif
	put("\n");
	return 0;
}

/* Entry: the stack is as the kernel left it; align it for the calls and exit with
 * main's status. */
void _start(void) __attribute__((noreturn, force_align_arg_pointer));
void _start(void)
{
	sys(NR_exit_group, main(), 0, 0, 0);
	for (;;)
		;
}
