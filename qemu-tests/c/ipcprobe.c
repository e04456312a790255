// SPDX-License-Identifier: GPL-2.0-only
/*
 * ipcprobe: every SysV IPC call and control command a program uses, on private objects
 * it creates and removes, printed as `key=value` lines (numbers; an error as -errno).
 * Run outside any AID it is the baseline; inside an AID the same lines must come out,
 * but for the values that are IDs or PIDs (keys ending in `_id` or `_pid`, and `pid`).
 *
 * Nothing is left behind: every object is removed, also on the error paths.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
	struct seminfo *__buf;
};

/* A result: the value, or -errno for -1. */
static long r(long ret)
{
	return ret == -1 ? -errno : ret;
}

static void put(const char *key, long value)
{
	printf("%s=%ld\n", key, value);
}

static void semaphores(void)
{
	union semun arg;
	struct semid_ds ds;
	struct seminfo info;
	unsigned short all[2] = { 3, 4 }, got[2] = { 0, 0 };
	struct sembuf up = { .sem_num = 0, .sem_op = 1, .sem_flg = 0 };
	struct sembuf down_nowait = { .sem_num = 1, .sem_op = -9, .sem_flg = IPC_NOWAIT };
	struct sembuf zero_wait = { .sem_num = 0, .sem_op = 0, .sem_flg = 0 };
	struct timespec short_wait = { .tv_sec = 0, .tv_nsec = 1000000 };
	int id = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);

	put("sem_id", r(id));
	if (id < 0)
		return;
	arg.val = 7;
	put("sem_setval", r(semctl(id, 0, SETVAL, arg)));
	put("sem_getval", r(semctl(id, 0, GETVAL)));
	arg.array = all;
	put("sem_setall", r(semctl(id, 0, SETALL, arg)));
	arg.array = got;
	put("sem_getall", r(semctl(id, 0, GETALL, arg)));
	put("sem_getall_0", got[0]);
	put("sem_getall_1", got[1]);
	put("sem_semop_up", r(semop(id, &up, 1)));
	put("sem_getval_after_up", r(semctl(id, 0, GETVAL)));
	put("sem_getpid_pid", r(semctl(id, 0, GETPID)));
	put("sem_getncnt", r(semctl(id, 0, GETNCNT)));
	put("sem_getzcnt", r(semctl(id, 0, GETZCNT)));
	put("sem_semop_nowait", r(semop(id, &down_nowait, 1)));
	put("sem_semtimedop_timeout", r(semtimedop(id, &zero_wait, 1, &short_wait)));
	arg.buf = &ds;
	put("sem_ipc_stat", r(semctl(id, 0, IPC_STAT, arg)));
	put("sem_nsems", ds.sem_nsems);
	ds.sem_perm.mode = 0640;
	put("sem_ipc_set", r(semctl(id, 0, IPC_SET, arg)));
	put("sem_ipc_stat_2", r(semctl(id, 0, IPC_STAT, arg)));
	put("sem_mode", ds.sem_perm.mode & 0777);
	arg.__buf = &info;
	long max_index = r(semctl(0, 0, IPC_INFO, arg));
	put("sem_ipc_info_nonneg", max_index >= 0);
	put("sem_sem_info_nonneg", r(semctl(0, 0, SEM_INFO, arg)) >= 0);
	put("sem_semusz_positive", info.semusz > 0);
	/* SEM_STAT by index: some index up to the highest in use names this set. */
	long found = 0;
	for (long i = 0; max_index >= 0 && i <= max_index; i++) {
		arg.buf = &ds;
		if (semctl((int)i, 0, SEM_STAT, arg) == id)
			found = 1;
	}
	put("sem_stat_finds_it", found);
	/* Bad arguments. */
	put("sem_bad_id_getval", r(semctl(-1, 0, GETVAL)));
	put("sem_bad_semnum", r(semctl(id, 5, GETVAL)));
	put("sem_bad_cmd", r(semctl(id, 0, 12345)));
	put("sem_get_too_many", r(semget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600)));
	put("sem_ipc_rmid", r(semctl(id, 0, IPC_RMID)));
	put("sem_getval_removed", r(semctl(id, 0, GETVAL)));
	put("sem_semop_removed", r(semop(id, &up, 1)));
}

static void shared_memory(void)
{
	struct shmid_ds ds;
	struct shm_info info;
	int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	char *at;

	put("shm_id", r(id));
	if (id < 0)
		return;
	at = shmat(id, NULL, 0);
	put("shm_shmat_ok", at != (void *)-1);
	if (at != (void *)-1)
		strcpy(at, "appshot");
	put("shm_ipc_stat", r(shmctl(id, IPC_STAT, &ds)));
	put("shm_segsz", (long)ds.shm_segsz);
	put("shm_nattch", (long)ds.shm_nattch);
	put("shm_cpid_pid", ds.shm_cpid);
	put("shm_lpid_pid", ds.shm_lpid);
	ds.shm_perm.mode = 0640;
	put("shm_ipc_set", r(shmctl(id, IPC_SET, &ds)));
	put("shm_ipc_stat_2", r(shmctl(id, IPC_STAT, &ds)));
	put("shm_mode", ds.shm_perm.mode & 0777);
	put("shm_lock", r(shmctl(id, SHM_LOCK, NULL)));
	put("shm_unlock", r(shmctl(id, SHM_UNLOCK, NULL)));
	long max_index = r(shmctl(0, IPC_INFO, (struct shmid_ds *)&info));
	put("shm_ipc_info_nonneg", max_index >= 0);
	put("shm_shm_info_nonneg", r(shmctl(0, SHM_INFO, (struct shmid_ds *)&info)) >= 0);
	long found = 0;
	for (long i = 0; max_index >= 0 && i <= max_index; i++)
		if (shmctl((int)i, SHM_STAT, &ds) == id)
			found = 1;
	put("shm_stat_finds_it", found);
	put("shm_bad_id_stat", r(shmctl(-1, IPC_STAT, &ds)));
	put("shm_bad_cmd", r(shmctl(id, 12345, &ds)));
	put("shm_ipc_rmid", r(shmctl(id, IPC_RMID, NULL)));
	/* Removed, but attached: it stays until the last detach, as natively. */
	put("shm_still_readable", at != (void *)-1 && strcmp(at, "appshot") == 0);
	put("shm_shmdt", at != (void *)-1 ? r(shmdt(at)) : -1);
	put("shm_stat_removed", r(shmctl(id, IPC_STAT, &ds)));
	put("shm_shmat_removed_ok", shmat(id, NULL, 0) != (void *)-1);
}

struct message {
	long mtype;
	char mtext[64];
};

static void message_queues(void)
{
	struct msqid_ds ds;
	struct msginfo info;
	struct message out = { .mtype = 5 }, in;
	int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);

	put("msg_id", r(id));
	if (id < 0)
		return;
	memset(out.mtext, 'a', sizeof(out.mtext));
	put("msg_msgsnd", r(msgsnd(id, &out, sizeof(out.mtext), 0)));
	put("msg_ipc_stat", r(msgctl(id, IPC_STAT, &ds)));
	put("msg_qnum", (long)ds.msg_qnum);
	put("msg_lspid_pid", ds.msg_lspid);
	put("msg_copy_0", r(msgrcv(id, &in, sizeof(in.mtext), 0, IPC_NOWAIT | MSG_COPY)));
	put("msg_copy_1", r(msgrcv(id, &in, sizeof(in.mtext), 1, IPC_NOWAIT | MSG_COPY)));
	put("msg_msgrcv", r(msgrcv(id, &in, sizeof(in.mtext), 5, 0)));
	put("msg_type", in.mtype);
	put("msg_same_bytes", memcmp(in.mtext, out.mtext, sizeof(in.mtext)) == 0);
	put("msg_ipc_stat_2", r(msgctl(id, IPC_STAT, &ds)));
	put("msg_lrpid_pid", ds.msg_lrpid);
	put("msg_msgrcv_empty", r(msgrcv(id, &in, sizeof(in.mtext), 0, IPC_NOWAIT)));
	ds.msg_perm.mode = 0640;
	put("msg_ipc_set", r(msgctl(id, IPC_SET, &ds)));
	put("msg_ipc_stat_3", r(msgctl(id, IPC_STAT, &ds)));
	put("msg_mode", ds.msg_perm.mode & 0777);
	long max_index = r(msgctl(0, IPC_INFO, (struct msqid_ds *)&info));
	put("msg_ipc_info_nonneg", max_index >= 0);
	put("msg_msg_info_nonneg", r(msgctl(0, MSG_INFO, (struct msqid_ds *)&info)) >= 0);
	long found = 0;
	for (long i = 0; max_index >= 0 && i <= max_index; i++)
		if (msgctl((int)i, MSG_STAT, &ds) == id)
			found = 1;
	put("msg_stat_finds_it", found);
	put("msg_bad_id_stat", r(msgctl(-1, IPC_STAT, &ds)));
	put("msg_bad_cmd", r(msgctl(id, 12345, &ds)));
	put("msg_bad_size", r(msgsnd(id, &out, (size_t)-1 >> 1, IPC_NOWAIT)));
	put("msg_ipc_rmid", r(msgctl(id, IPC_RMID, NULL)));
	put("msg_msgsnd_removed", r(msgsnd(id, &out, sizeof(out.mtext), IPC_NOWAIT)));
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	put("pid", getpid());
	semaphores();
	shared_memory();
	message_queues();
	return 0;
}
