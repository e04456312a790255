/*
 * pidprobe: an ordinary, unmodified C program that reports the process IDs it sees.
 *
 * The guest suite (qemu-tests/src/tests/pidprobe.rs) runs it outside any AID and inside
 * AIDs with and without a virtual PID range, as a static and as a dynamic glibc binary
 * (xtask builds both with clang; /usr/libexec/appshot/pidprobe-{static,dynamic}), and
 * compares what it prints. It uses the libc wrappers the way programs do, plus the raw
 * system calls (syscall(2)) next to them, so a translation that only one path gets
 * shows up.
 *
 *   pidprobe world   the IDs of itself, a forked child, a vfork child and a thread, how
 *                    wait and signals (SIGCHLD, kill, raise, pthread_kill) name them,
 *                    and the system IDs /proc shows (/proc is not virtualized)
 *   pidprobe errno   the errno of PID-taking calls with bad arguments: must be the same
 *                    inside an AID as outside
 *
 * Output: one `key=value` per line, values decimal; `errno` prints `ok` or the errno
 * number. Exit status 0 unless a step could not run at all (then a `fatal=` line).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1, got_usr2, got_chld;
static volatile pid_t usr1_si_pid, usr2_si_pid, chld_si_pid, usr2_tid;

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
	(void)ctx;
	if (sig == SIGUSR1) {
		usr1_si_pid = info->si_pid;
		got_usr1 = 1;
	} else if (sig == SIGUSR2) {
		usr2_si_pid = info->si_pid;
		usr2_tid = (pid_t)syscall(SYS_gettid);
		got_usr2 = 1;
	} else if (sig == SIGCHLD) {
		chld_si_pid = info->si_pid;
		got_chld = 1;
	}
}

static void fatal(const char *what)
{
	printf("fatal=%s: %s\n", what, strerror(errno));
	exit(1);
}

/* Field `n` (1-based) of /proc/<path>/stat: the system IDs, whatever the caller sees. */
static long stat_field(const char *path, int n)
{
	char buf[1024];
	FILE *f = fopen(path, "r");
	size_t len;
	char *p;
	long value = -1;

	if (!f)
		return -1;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = 0;
	p = strrchr(buf, ')');
	if (!p || n < 3)
		return n == 1 ? strtol(buf, NULL, 10) : -1;
	p += 2; /* field 3, the state */
	for (int i = 3; i < n && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (p)
		value = strtol(p, NULL, 10);
	return value;
}

static void wait_for(volatile sig_atomic_t *flag)
{
	sigset_t none;

	sigemptyset(&none);
	for (int i = 0; i < 1000 && !*flag; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		sigset_t mask;

		/* The signals are blocked outside this window, so none is lost. */
		sigemptyset(&mask);
		sigaddset(&mask, SIGUSR1);
		sigaddset(&mask, SIGUSR2);
		sigaddset(&mask, SIGCHLD);
		pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
		nanosleep(&ts, NULL);
		pthread_sigmask(SIG_BLOCK, &mask, NULL);
	}
}

struct thread_report {
	pid_t tid, pid, sys_tid;
	int ready, go;
};

static void *thread_main(void *arg)
{
	struct thread_report *r = arg;
	sigset_t mask;

	r->tid = (pid_t)syscall(SYS_gettid);
	r->pid = getpid();
	r->sys_tid = (pid_t)stat_field("/proc/thread-self/stat", 1);
	__atomic_store_n(&r->ready, 1, __ATOMIC_SEQ_CST);
	/* Take SIGUSR2 here: the main thread keeps it blocked. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
	while (!got_usr2 && !__atomic_load_n(&r->go, __ATOMIC_SEQ_CST))
		usleep(1000);
	return NULL;
}

static int world(void)
{
	struct sigaction sa;
	sigset_t mask;
	int fds[2];
	pid_t child, waited, me = getpid();
	int status;
	long report[4];
	static volatile pid_t vfork_seen;
	pthread_t thread;
	struct thread_report tr = { 0 };

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	printf("pid_libc=%d\n", me);
	printf("pid_sys=%ld\n", syscall(SYS_getpid));
	printf("tid=%ld\n", syscall(SYS_gettid));
	printf("ppid_libc=%d\n", getppid());
	printf("ppid_sys=%ld\n", syscall(SYS_getppid));
	printf("pgrp=%d\n", getpgrp());
	printf("sid=%d\n", getsid(0));
	printf("system_pid=%ld\n", stat_field("/proc/self/stat", 1));
	printf("system_ppid=%ld\n", stat_field("/proc/self/stat", 4));

	/* fork: the child reports what it sees; the parent how fork, SIGCHLD and wait name it. */
	if (pipe(fds) < 0)
		fatal("pipe");
	child = fork();
	if (child < 0)
		fatal("fork");
	if (child == 0) {
		report[0] = getpid();
		report[1] = getppid();
		report[2] = syscall(SYS_getpid);
		report[3] = stat_field("/proc/self/stat", 1);
		if (write(fds[1], report, sizeof(report)) != sizeof(report))
			_exit(2);
		_exit(7);
	}
	close(fds[1]);
	if (read(fds[0], report, sizeof(report)) != sizeof(report))
		fatal("read the child's report");
	close(fds[0]);
	wait_for(&got_chld);
	waited = waitpid(child, &status, 0);
	printf("fork_ret=%d\n", child);
	printf("child_pid=%ld\n", report[0]);
	printf("child_ppid=%ld\n", report[1]);
	printf("child_pid_sys=%ld\n", report[2]);
	printf("child_system_pid=%ld\n", report[3]);
	printf("sigchld_si_pid=%d\n", got_chld ? chld_si_pid : -1);
	printf("waitpid_ret=%d\n", waited);
	printf("waitpid_status=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

	/* vfork: the child shares our memory until it exits. */
	child = vfork();
	if (child < 0)
		fatal("vfork");
	if (child == 0) {
		vfork_seen = (pid_t)syscall(SYS_getpid);
		_exit(0);
	}
	printf("vfork_ret=%d\n", child);
	printf("vfork_child_pid=%d\n", vfork_seen);
	printf("vfork_wait_ret=%d\n", waitpid(child, &status, 0));
	got_chld = 0;

	/* A thread: its TID, and pthread_kill (glibc's cached TID of the thread) reaching it. */
	if (pthread_create(&thread, NULL, thread_main, &tr) != 0)
		fatal("pthread_create");
	while (!__atomic_load_n(&tr.ready, __ATOMIC_SEQ_CST))
		usleep(1000);
	printf("thread_tid=%d\n", tr.tid);
	printf("thread_pid=%d\n", tr.pid);
	printf("thread_system_tid=%d\n", tr.sys_tid);
	printf("pthread_kill=%d\n", pthread_kill(thread, SIGUSR2));
	for (int i = 0; i < 1000 && !got_usr2; i++)
		usleep(1000);
	__atomic_store_n(&tr.go, 1, __ATOMIC_SEQ_CST);
	pthread_join(thread, NULL);
	printf("pthread_kill_tid=%d\n", got_usr2 ? usr2_tid : -1);
	printf("pthread_kill_si_pid=%d\n", got_usr2 ? usr2_si_pid : -1);

	/* raise (tgkill with glibc's cached IDs) and kill of ourselves. */
	printf("raise=%d\n", raise(SIGUSR1));
	wait_for(&got_usr1);
	printf("raise_si_pid=%d\n", got_usr1 ? usr1_si_pid : -1);
	got_usr1 = 0;
	printf("kill_self=%d\n", kill(me, SIGUSR1));
	wait_for(&got_usr1);
	printf("kill_self_si_pid=%d\n", got_usr1 ? usr1_si_pid : -1);
	return 0;
}

/* One line of `errno` mode: the call's errno, or ok. */
static void result(const char *name, long ret)
{
	if (ret < 0)
		printf("%s=%d\n", name, errno);
	else
		printf("%s=ok\n", name);
}

#define BAD_PTR ((void *)8)
/* A PID no process has: above the largest pid_max (4194304). */
#define NOPID 4194303

static int bad_arguments(void)
{
	pid_t me = getpid();
	cpu_set_t set;
	siginfo_t info;
	struct sched_param param = { 0 };
	struct timespec ts;
	struct rlimit lim;
	struct iovec iov = { &lim, sizeof(lim) };
	uint32_t attr[16] = { 0 };

	/* sched_* */
	result("sched_getaffinity_badptr", syscall(SYS_sched_getaffinity, me, sizeof(set), BAD_PTR));
	result("sched_getaffinity_badsize", syscall(SYS_sched_getaffinity, me, 1, &set));
	result("sched_setaffinity_badptr", syscall(SYS_sched_setaffinity, me, sizeof(set), BAD_PTR));
	result("sched_getaffinity_negative", syscall(SYS_sched_getaffinity, -1, sizeof(set), &set));
	result("sched_setscheduler_badpolicy", syscall(SYS_sched_setscheduler, me, 999, &param));
	result("sched_setscheduler_nullparam", syscall(SYS_sched_setscheduler, me, SCHED_OTHER, NULL));
	result("sched_setscheduler_negative", syscall(SYS_sched_setscheduler, -1, SCHED_OTHER, &param));
	result("sched_getscheduler_negative", syscall(SYS_sched_getscheduler, -1));
	result("sched_getparam_null", syscall(SYS_sched_getparam, me, NULL));
	result("sched_setparam_badptr", syscall(SYS_sched_setparam, me, BAD_PTR));
	result("sched_rr_get_interval_null", syscall(SYS_sched_rr_get_interval, me, NULL));
	result("sched_rr_get_interval_negative", syscall(SYS_sched_rr_get_interval, -1, &ts));
	result("sched_setattr_null", syscall(SYS_sched_setattr, me, NULL, 0));
	result("sched_getattr_small", syscall(SYS_sched_getattr, me, attr, 1, 0));
	result("sched_getattr_flags", syscall(SYS_sched_getattr, me, attr, sizeof(attr), 1));
	/* priority */
	result("getpriority_badwhich", syscall(SYS_getpriority, 999, me));
	result("setpriority_badwhich", syscall(SYS_setpriority, 999, me, 0));
	/* wait */
	result("waitid_badidtype", syscall(SYS_waitid, 999, 0, &info, WEXITED, NULL));
	result("waitid_nooptions", syscall(SYS_waitid, P_PID, me, &info, 0, NULL));
	result("waitid_badoptions", syscall(SYS_waitid, P_ALL, 0, &info, 0x80000000, NULL));
	result("wait4_nochild", syscall(SYS_wait4, -1, NULL, WNOHANG, NULL));
	result("wait4_badoptions", syscall(SYS_wait4, -1, NULL, 0x00100000, NULL));
	result("wait4_intmin", syscall(SYS_wait4, INT_MIN, NULL, WNOHANG, NULL));
	/* signals */
	result("kill_badsig", syscall(SYS_kill, me, 999));
	result("kill_negsig", syscall(SYS_kill, me, -1));
	result("kill_intmin", syscall(SYS_kill, INT_MIN, 0));
	result("tkill_zero", syscall(SYS_tkill, 0, SIGUSR1));
	result("tkill_negative", syscall(SYS_tkill, -1, 0));
	result("tkill_badsig", syscall(SYS_tkill, me, 999));
	result("tgkill_zero", syscall(SYS_tgkill, 0, me, 0));
	result("tgkill_negative_tid", syscall(SYS_tgkill, me, -5, 0));
	result("rt_sigqueueinfo_badptr", syscall(SYS_rt_sigqueueinfo, me, SIGUSR1, BAD_PTR));
	result("rt_tgsigqueueinfo_zero_tid", syscall(SYS_rt_tgsigqueueinfo, me, 0, SIGUSR1, &info));
	/* process groups and sessions */
	result("getpgid_negative", syscall(SYS_getpgid, -1));
	result("getsid_negative", syscall(SYS_getsid, -1));
	result("setpgid_negative_pid", syscall(SYS_setpgid, -1, 0));
	result("setpgid_negative_pgid", syscall(SYS_setpgid, 0, -1));
	/* limits, pidfd, ioprio, process_vm, kcmp */
	result("prlimit64_badresource", syscall(SYS_prlimit64, me, 999, NULL, &lim));
	result("prlimit64_badptr", syscall(SYS_prlimit64, me, RLIMIT_NOFILE, NULL, BAD_PTR));
	result("pidfd_open_badflags", syscall(SYS_pidfd_open, me, 999));
	result("pidfd_open_zero", syscall(SYS_pidfd_open, 0, 0));
	result("pidfd_open_negative", syscall(SYS_pidfd_open, -1, 0));
	result("ioprio_get_badwhich", syscall(SYS_ioprio_get, 999, 0));
	result("ioprio_set_badprio", syscall(SYS_ioprio_set, 1, me, 0x7fffffff));
	result("process_vm_readv_badflags", syscall(SYS_process_vm_readv, me, &iov, 1, &iov, 1, 1));
	result("kcmp_badtype", syscall(SYS_kcmp, me, me, 999, 0, 0));
	result("kcmp_negative", syscall(SYS_kcmp, -1, me, 0, 0, 0));
	/*
	 * A PID that exists nowhere (above every pid_max, outside the suite's ranges) with
	 * a bad argument: the kernel checks some arguments before it looks the PID up, so
	 * natively these fail with EINVAL/EFAULT, not ESRCH; an AID must not change that.
	 */
	result("nopid_sched_getaffinity_badsize", syscall(SYS_sched_getaffinity, NOPID, 1, &set));
	result("nopid_sched_setaffinity_badptr", syscall(SYS_sched_setaffinity, NOPID, sizeof(set), BAD_PTR));
	result("nopid_sched_setscheduler_nullparam", syscall(SYS_sched_setscheduler, NOPID, SCHED_OTHER, NULL));
	result("nopid_sched_getparam_null", syscall(SYS_sched_getparam, NOPID, NULL));
	result("nopid_sched_setattr_null", syscall(SYS_sched_setattr, NOPID, NULL, 0));
	result("nopid_sched_getattr_small", syscall(SYS_sched_getattr, NOPID, attr, 1, 0));
	result("nopid_waitid_nooptions", syscall(SYS_waitid, P_PID, NOPID, &info, 0, NULL));
	result("nopid_wait4_badoptions", syscall(SYS_wait4, NOPID, NULL, 0x00100000, NULL));
	result("nopid_pidfd_open_badflags", syscall(SYS_pidfd_open, NOPID, 999));
	result("nopid_rt_sigqueueinfo_badptr", syscall(SYS_rt_sigqueueinfo, NOPID, SIGUSR1, BAD_PTR));
	result("nopid_setpgid_negative_pgid", syscall(SYS_setpgid, NOPID, -1));
	result("nopid_kill", syscall(SYS_kill, NOPID, 0));
	/* and the calls that work on ourselves work */
	result("kill_self_zero", syscall(SYS_kill, me, 0));
	result("getpgid_self", syscall(SYS_getpgid, me));
	result("sched_getaffinity_self", syscall(SYS_sched_getaffinity, me, sizeof(set), &set));
	result("prlimit64_self", syscall(SYS_prlimit64, me, RLIMIT_NOFILE, NULL, &lim));
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && strcmp(argv[1], "world") == 0)
		return world();
	if (argc == 2 && strcmp(argv[1], "errno") == 0)
		return bad_arguments();
	fprintf(stderr, "usage: pidprobe world|errno\n");
	return 2;
}
