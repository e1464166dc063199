/* A C threads test for cowlab, built with `gcc -static -pthread` (glibc), `gcc -static-pie
 * -pthread` and `musl-gcc -static -pthread` by xtask: pthread_create/join with return values,
 * threads sharing memory and descriptors, a mutex-protected counter under contention, a
 * condition variable hand-off (producer/consumer), pthread_exit, detached threads, exit()
 * from a thread ending the process, and abort() (tgkill/tkill) ending it with SIGABRT. Prints one line per check and `NAME: N passed,
 * N failed` (NAME from argv[0]); exits non-zero on failure. Runs unchanged on the host Linux. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *name = "c";
static int passed, failed;

static void check(const char *what, int ok) {
    if (ok) {
        passed++;
        printf("%s: ok %s\n", name, what);
    } else {
        failed++;
        printf("%s: FAIL %s (errno %d)\n", name, what, errno);
    }
    fflush(stdout);
}

static long gettid_raw(void) { return syscall(SYS_gettid); }

/* identity and sharing */
static int shared_value;
static long thread_tid, thread_pid;
static int thread_pipe[2] = {-1, -1};

static void *identity(void *arg) {
    thread_tid = gettid_raw();
    thread_pid = getpid();
    shared_value = *(int *)arg;
    if (pipe(thread_pipe) != 0) thread_pipe[0] = thread_pipe[1] = -1;
    return (void *)(long)(shared_value + 1);
}

/* a mutex under contention */
#define THREADS 4
#define ROUNDS 20000
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *add(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        long v = counter;
        /* a window in which an unprotected increment would lose updates to preemption */
        for (volatile int k = 0; k < 10; k++) {
        }
        counter = v + 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

/* a condition variable: a one-slot queue */
#define ITEMS 200
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static int slot, full;

static void *producer(void *arg) {
    (void)arg;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&qlock);
        while (full) pthread_cond_wait(&not_full, &qlock);
        slot = i;
        full = 1;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&qlock);
    }
    return NULL;
}

static void *exits_early(void *arg) {
    (void)arg;
    pthread_exit((void *)42L);
    return NULL;
}

static volatile int detached_ran;
static void *detached(void *arg) {
    (void)arg;
    detached_ran = 1;
    return NULL;
}

static void *calls_exit(void *arg) {
    (void)arg;
    exit(6);
}

static void *sleeps(void *arg) {
    (void)arg;
    for (;;) sleep(1);
    return NULL;
}

int main(int argc, char **argv) {
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    name = slash ? slash + 1 : argv[0];

    pthread_t th;
    int value = 41;
    void *ret = NULL;
    check("pthread_create", pthread_create(&th, NULL, identity, &value) == 0);
    check("pthread_join", pthread_join(th, &ret) == 0);
    check("the thread's return value", (long)ret == 42);
    check("memory is shared", shared_value == 41);
    check("the thread has its own tid", thread_tid > 0 && thread_tid != gettid_raw());
    check("the thread's getpid is the process's", thread_pid == getpid());
    char buf[4] = {0};
    check("descriptors are shared",
          thread_pipe[1] >= 0 && write(thread_pipe[1], "abc", 3) == 3 && read(thread_pipe[0], buf, 3) == 3 &&
              strcmp(buf, "abc") == 0);

    pthread_t adders[THREADS];
    int created = 0;
    for (int i = 0; i < THREADS; i++) created += pthread_create(&adders[i], NULL, add, NULL) == 0;
    for (int i = 0; i < THREADS; i++) pthread_join(adders[i], NULL);
    check("four threads created", created == THREADS);
    check("mutex: no increment lost", counter == (long)THREADS * ROUNDS);

    pthread_t prod;
    check("producer created", pthread_create(&prod, NULL, producer, NULL) == 0);
    int in_order = 1;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&qlock);
        while (!full) pthread_cond_wait(&not_empty, &qlock);
        in_order &= slot == i;
        full = 0;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&qlock);
    }
    pthread_join(prod, NULL);
    check("condition variable: every item, in order", in_order);

    check("pthread_exit", pthread_create(&th, NULL, exits_early, NULL) == 0 && pthread_join(th, &ret) == 0 &&
                              (long)ret == 42);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    check("detached thread created", pthread_create(&th, &attr, detached, NULL) == 0);
    for (int i = 0; i < 1000 && !detached_ran; i++) usleep(1000);
    check("detached thread ran", detached_ran);

    pid_t pid = fork();
    if (pid == 0) {
        pthread_t a, b;
        pthread_create(&a, NULL, sleeps, NULL);
        pthread_create(&b, NULL, calls_exit, NULL);
        pthread_join(a, NULL);
        _exit(1);
    }
    int status = 0;
    check("waitpid", waitpid(pid, &status, 0) == pid);
    check("exit() in a thread ends every thread with its status", WIFEXITED(status) && WEXITSTATUS(status) == 6);

    /* abort() raises SIGABRT through tgkill (glibc) or tkill (musl) */
    pid = fork();
    if (pid == 0) abort();
    check("waitpid", waitpid(pid, &status, 0) == pid);
    check("abort() ends the process with SIGABRT", WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);

    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed != 0;
}
