/* dbserver: the demo's application, after the source document's example: a server
 * whose state is a semaphore set (semaphore 0 holds 7), a shared memory segment with
 * data and a message queue with requests, all found by their SysV keys.
 *
 *   dbserver serve   creates them, prints what it holds, says "ready", and waits
 *   dbserver check   finds them by key and prints what they hold (reading the queue)
 *
 * Both print the same lines for the same state, so a reader compares them at a glance.
 * An unmodified program: plain glibc calls, nothing appshot-specific. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

#define SEM_KEY 0x0db5e001
#define SHM_KEY 0x0db5e002
#define MSG_KEY 0x0db5e003
#define SHM_SIZE 4096

static const char *const requests[] = {"SELECT balance", "UPDATE balance += 10", "COMMIT"};

struct request {
	long mtype;
	char text[64];
};

static void fail(const char *what)
{
	fprintf(stderr, "dbserver: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void show(int sem, int shm, int msg, int consume)
{
	unsigned short values[2];
	if (semctl(sem, 0, GETALL, values) < 0)
		fail("semctl GETALL");
	printf("semaphore set %d (key 0x%08x): values %d %d\n", sem, SEM_KEY, values[0], values[1]);
	char *data = shmat(shm, NULL, SHM_RDONLY);
	if (data == (void *)-1)
		fail("shmat");
	printf("segment %d (key 0x%08x): \"%s\"\n", shm, SHM_KEY, data);
	shmdt(data);
	struct msqid_ds ds;
	if (msgctl(msg, IPC_STAT, &ds) < 0)
		fail("msgctl IPC_STAT");
	printf("queue %d (key 0x%08x): %lu requests\n", msg, MSG_KEY, (unsigned long)ds.msg_qnum);
	if (!consume)
		return;
	struct request r;
	ssize_t n;
	while ((n = msgrcv(msg, &r, sizeof(r.text), 0, IPC_NOWAIT)) >= 0)
		printf("  request type %ld: \"%.*s\"\n", r.mtype, (int)n, r.text);
}

int main(int argc, char **argv)
{
	if (argc != 2 || (strcmp(argv[1], "serve") && strcmp(argv[1], "check"))) {
		fprintf(stderr, "usage: dbserver serve|check\n");
		return 2;
	}
	printf("dbserver (pid %d): %s\n", getpid(), argv[1]);
	if (!strcmp(argv[1], "check")) {
		int sem = semget(SEM_KEY, 0, 0), shm = shmget(SHM_KEY, 0, 0), msg = msgget(MSG_KEY, 0);
		if (sem < 0 || shm < 0 || msg < 0)
			fail("looking the objects up by key");
		show(sem, shm, msg, 1);
		return 0;
	}
	int sem = semget(SEM_KEY, 2, IPC_CREAT | IPC_EXCL | 0600);
	int shm = shmget(SHM_KEY, SHM_SIZE, IPC_CREAT | IPC_EXCL | 0600);
	int msg = msgget(MSG_KEY, IPC_CREAT | IPC_EXCL | 0600);
	if (sem < 0 || shm < 0 || msg < 0)
		fail("creating the objects");
	unsigned short values[2] = {7, 3};
	if (semctl(sem, 0, SETALL, values) < 0)
		fail("semctl SETALL");
	char *data = shmat(shm, NULL, 0);
	if (data == (void *)-1)
		fail("shmat");
	snprintf(data, SHM_SIZE, "accounts: alice=100 bob=250 (written by pid %d)", getpid());
	shmdt(data);
	for (unsigned i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
		struct request r = {.mtype = i + 1};
		size_t len = strlen(requests[i]);
		memcpy(r.text, requests[i], len);
		if (msgsnd(msg, &r, len, 0) < 0)
			fail("msgsnd");
	}
	show(sem, shm, msg, 0);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
