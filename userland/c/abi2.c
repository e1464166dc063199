/* ABI checks for cowlab built with glibc and musl (`gcc -static`, `gcc -static-pie`,
 * `musl-gcc -static`), where the libraries' ways of passing `int` arguments and flags show:
 * wait() and waitpid(-1) (glibc passes -1 in a 32-bit register), openat(AT_FDCWD, relative),
 * dup3 and pipe2 flags, mmap MAP_FIXED_NOREPLACE, msync on anonymous memory, mremap
 * MREMAP_FIXED, and blocking AIO/io_uring waits ended by a signal (EINTR even under
 * SA_RESTART, as Linux's read_events and io_cqring_wait), and SIGBUS with BUS_ADRERR past the
 * end of a mapped file (the working directory's filesystem and /tmp). The same binary runs on the host
 * Linux, where io_uring may be disabled (then its check is skipped). Prints one line per check
 * and `NAME: N passed, M failed`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#define SYS_io_uring_enter 426
#endif
#define IORING_ENTER_GETEVENTS 1u

static const char *name = "c_abi2";
static int passed, failed;
static long page;

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

static void test_wait(void) {
    pid_t pid = fork();
    if (pid == 0)
        _exit(7);
    int status = 0;
    pid_t got = wait(&status);
    check("wait() reaps the child with its status",
          got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 7);
    pid = fork();
    if (pid == 0)
        _exit(9);
    got = waitpid(-1, &status, 0);
    check("waitpid(-1) reaps the child with its status",
          got == pid && WIFEXITED(status) && WEXITSTATUS(status) == 9);
    errno = 0;
    check("wait() with no children is ECHILD", wait(&status) == -1 && errno == ECHILD);
}

static void test_openat_dup3_pipe2(void) {
    int fd = openat(AT_FDCWD, ".", O_RDONLY | O_DIRECTORY);
    check("openat(AT_FDCWD, relative) opens", fd >= 0);
    int high = dup3(fd, 40, O_CLOEXEC);
    check("dup3(O_CLOEXEC) sets FD_CLOEXEC",
          high == 40 && fcntl(40, F_GETFD) == FD_CLOEXEC);
    errno = 0;
    check("dup3(fd, fd) is EINVAL", dup3(fd, fd, 0) == -1 && errno == EINVAL);
    errno = 0;
    /* The raw call: the libraries differ in what they check before the kernel does. */
    check("dup3 with an unknown flag is EINVAL",
          syscall(SYS_dup3, fd, 41, O_NONBLOCK) == -1 && errno == EINVAL);
    close(40);
    close(fd);

    int p[2];
    check("pipe2(O_CLOEXEC|O_NONBLOCK)", pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    check("both ends FD_CLOEXEC",
          fcntl(p[0], F_GETFD) == FD_CLOEXEC && fcntl(p[1], F_GETFD) == FD_CLOEXEC);
    check("both ends O_NONBLOCK",
          (fcntl(p[0], F_GETFL) & O_NONBLOCK) && (fcntl(p[1], F_GETFL) & O_NONBLOCK));
    char c;
    errno = 0;
    check("empty non-blocking read is EAGAIN", read(p[0], &c, 1) == -1 && errno == EAGAIN);
    close(p[0]);
    close(p[1]);
    errno = 0;
    check("pipe2 with an unknown flag is EINVAL", pipe2(p, O_RDWR) == -1 && errno == EINVAL);
}

static void test_mm(void) {
    char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check("mmap 4 pages", p != MAP_FAILED);
    munmap(p + 2 * page, 2 * page);
    errno = 0;
    void *q = mmap(p + page, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                   -1, 0);
    check("MAP_FIXED_NOREPLACE over a mapping is EEXIST", q == MAP_FAILED && errno == EEXIST);
    q = mmap(p + 2 * page, page, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    check("MAP_FIXED_NOREPLACE on a hole maps there", q == p + 2 * page);
    p[0] = 'x';
    /* Marked: msync lands with the page-cache branch (issue 12); until then cowlab answers
     * ENOSYS and these checks are skipped. */
    if (msync(p, page, MS_SYNC) == -1 && errno == ENOSYS) {
        printf("%s: skip msync checks: ENOSYS (msync comes with the page cache)\n", name);
    } else {
    check("msync of anonymous memory is 0", msync(p, page, MS_SYNC) == 0);
    errno = 0;
    check("msync unaligned is EINVAL", msync(p + 1, page, MS_SYNC) == -1 && errno == EINVAL);
    errno = 0;
    check("msync MS_SYNC|MS_ASYNC is EINVAL",
          msync(p, page, MS_SYNC | MS_ASYNC) == -1 && errno == EINVAL);
    errno = 0;
    check("msync over a hole is ENOMEM", msync(p, 4 * page, MS_SYNC) == -1 && errno == ENOMEM);
    }

    char *dst = mmap(NULL, 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = 0;
    check("mremap MREMAP_FIXED without MREMAP_MAYMOVE is EINVAL",
          mremap(p, page, page, MREMAP_FIXED, dst) == MAP_FAILED && errno == EINVAL);
    char *moved = mremap(p, page, page, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    check("mremap MREMAP_FIXED moves to the address given", moved == dst);
    check("the page's contents moved with it", moved == dst && dst[0] == 'x');
    errno = 0;
    /* MADV_DONTNEED answers ENOMEM for a range with a hole (harmless on what is mapped). */
    check("the old address is unmapped",
          madvise(p, page, MADV_DONTNEED) == -1 && errno == ENOMEM);
    check("the rest of the target is still mapped", madvise(dst + page, page, MADV_DONTNEED) == 0);
    munmap(dst, 2 * page);
    munmap(p, 4 * page);
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

/* A 50 ms one-shot ITIMER_REAL with an SA_RESTART handler. */
static void arm_alarm(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 50000}};
    alarms = 0;
    setitimer(ITIMER_REAL, &it, NULL);
}

struct io_event_raw {
    uint64_t data, obj;
    int64_t res, res2;
};

static void test_interrupted_waits(void) {
    unsigned long ctx = 0;
    check("io_setup", syscall(SYS_io_setup, 8, &ctx) == 0);
    struct io_event_raw ev[1];
    arm_alarm();
    errno = 0;
    long r = syscall(SYS_io_getevents, ctx, 1L, 1L, ev, NULL);
    check("io_getevents without events, ended by a signal: EINTR despite SA_RESTART",
          r == -1 && errno == EINTR && alarms == 1);
    struct timespec ts = {30, 0};
    arm_alarm();
    errno = 0;
    r = syscall(SYS_io_getevents, ctx, 1L, 1L, ev, &ts);
    check("io_getevents with a timeout, ended by a signal: EINTR",
          r == -1 && errno == EINTR && alarms == 1);
    syscall(SYS_io_destroy, ctx);

    uint32_t params[30];
    memset(params, 0, sizeof params);
    int fd = syscall(SYS_io_uring_setup, 4, params);
    if (fd < 0) {
        printf("%s: skip io_uring_enter EINTR: io_uring_setup: errno %d\n", name, errno);
        return;
    }
    arm_alarm();
    errno = 0;
    r = syscall(SYS_io_uring_enter, fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    check("io_uring_enter waiting for min_complete, ended by a signal: EINTR",
          r == -1 && errno == EINTR && alarms == 1);
    close(fd);
    signal(SIGALRM, SIG_DFL);
}

static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_signo, bus_code;
static void *volatile bus_addr;
static void on_bus(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    bus_signo = sig;
    bus_code = si->si_code;
    bus_addr = si->si_addr;
    siglongjmp(bus_jump, 1);
}

/* A fault the memory manager classifies as SIGBUS arrives as SIGBUS with BUS_ADRERR and the
 * address: a MAP_PRIVATE and a MAP_SHARED mapping of a one-page file, touched on its second
 * page (past EOF), for a file in `dir` (the ext2 root's working directory, /tmp's tmpfs). */
static void test_sigbus_past_eof(const char *dir, const char *what) {
    char path[256];
    snprintf(path, sizeof path, "%s/c_abi2_sigbus_%d", dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    unlink(path);
    char line[160];
    snprintf(line, sizeof line, "a file in %s opens", what);
    check(line, fd >= 0);
    if (fd < 0)
        return;
    check("it is one page long", ftruncate(fd, page) == 0);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old);
    const int kinds[2] = {MAP_PRIVATE, MAP_SHARED};
    for (int k = 0; k < 2; k++) {
        char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, kinds[k], fd, 0);
        if (m == MAP_FAILED && errno == ENODEV && strcmp(dir, ".") == 0) {
            /* Marked: cowlab maps ext2 files once the page cache (issue 12) lands; until then
             * mmap answers ENODEV, as Linux does for a file system without mmap. */
            printf("%s: skip %s mapping of an ext2 file: ENODEV (no page cache yet)\n", name,
                   k ? "MAP_SHARED" : "MAP_PRIVATE");
            continue;
        }
        if (m == MAP_FAILED) {
            check("mmap of the file", 0);
            continue;
        }
        bus_signo = 0;
        if (sigsetjmp(bus_jump, 1) == 0)
            (void)*(volatile char *)(m + page + 16);
        snprintf(line, sizeof line, "%s %s mapping, read past EOF: SIGBUS BUS_ADRERR at the address",
                 what, k ? "MAP_SHARED" : "MAP_PRIVATE");
        check(line, bus_signo == SIGBUS && bus_code == BUS_ADRERR && bus_addr == m + page + 16);
        munmap(m, 2 * page);
    }
    sigaction(SIGBUS, &old, NULL);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc > 0) {
        const char *slash = strrchr(argv[0], '/');
        name = slash ? slash + 1 : argv[0];
    }
    page = sysconf(_SC_PAGESIZE);
    test_wait();
    test_openat_dup3_pipe2();
    test_mm();
    test_interrupted_waits();
    test_sigbus_past_eof(".", "the working directory");
    test_sigbus_past_eof("/tmp", "/tmp");
    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed != 0;
}
