/* A signals test for cowlab, built with `gcc -static -pthread` (glibc), `gcc -static-pie
 * -pthread` and `musl-gcc -static -pthread` by xtask as c_signals_*. Linux's semantics as glibc
 * and musl use them: handlers with siginfo and ucontext, a SIGSEGV handler that fixes the fault
 * with mprotect, SIGBUS past the end of a memfd, SIGILL/SIGFPE/SIGTRAP, nested signals,
 * SA_NODEFER/SA_RESETHAND, sigaltstack and its overflow, EINTR and SA_RESTART on a pipe read,
 * rt_sigtimedwait, sigsuspend, sigpending, sigqueue, SIGCHLD, SIGPIPE, alarm/setitimer,
 * SIGSTOP/SIGCONT with WUNTRACED/WCONTINUED, WCOREDUMP, FPU/SSE state across a handler,
 * pthread_kill and pthread_cancel. Prints one line per check and `NAME: N passed, M failed`
 * (NAME from argv[0]); exits non-zero on failure. Runs unchanged on the host Linux. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static const char *name = "c_signals";
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

static void on(int sig, void (*fn)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void dfl(int sig) { signal(sig, SIG_DFL); }

static long page;
static volatile sig_atomic_t hits;
static siginfo_t last;
static sigjmp_buf jump;

/* 1. SIGSEGV fixed by mprotect, the handler returns and the access completes. */
static char *prot_page;
static void fix_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    hits++;
    last = *si;
    (void)sig;
    mprotect(prot_page, page, PROT_READ | PROT_WRITE);
}

static void test_segv_fix(void) {
    prot_page = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    hits = 0;
    on(SIGSEGV, fix_segv, 0);
    ((volatile char *)prot_page)[100] = 42;
    check("SIGSEGV handler fixes the fault with mprotect and returns", hits == 1 &&
          prot_page[100] == 42);
    check("SIGSEGV siginfo: SEGV_ACCERR at the address",
          last.si_signo == SIGSEGV && last.si_code == SEGV_ACCERR &&
              last.si_addr == prot_page + 100);
    dfl(SIGSEGV);
    munmap(prot_page, page);
}

/* 2. SEGV_MAPERR, SIGBUS past EOF, SIGFPE: siglongjmp out of the handler. */
static void jump_out(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    last = *si;
    hits++;
    siglongjmp(jump, 1);
}

static void test_maperr_bus_fpe(void) {
    char *gone = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(gone, page);
    on(SIGSEGV, jump_out, 0);
    hits = 0;
    if (sigsetjmp(jump, 1) == 0)
        (void)*(volatile char *)gone;
    check("SIGSEGV SEGV_MAPERR on an unmapped address", hits == 1 &&
          last.si_code == SEGV_MAPERR && last.si_addr == gone);
    sigset_t cur;
    sigprocmask(SIG_SETMASK, NULL, &cur);
    check("siglongjmp out of the handler restores the mask", !sigismember(&cur, SIGSEGV));
    dfl(SIGSEGV);

    int fd = memfd_create("sigbus", 0);
    ftruncate(fd, 2 * page);
    char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    m[0] = 1;
    ftruncate(fd, page);
    on(SIGBUS, jump_out, 0);
    hits = 0;
    if (sigsetjmp(jump, 1) == 0)
        m[page + 8] = 1;
    check("SIGBUS BUS_ADRERR past the end of a shrunk memfd",
          hits == 1 && last.si_signo == SIGBUS && last.si_code == BUS_ADRERR &&
              last.si_addr == m + page + 8);
    dfl(SIGBUS);
    munmap(m, 2 * page);
    close(fd);

    on(SIGFPE, jump_out, 0);
    hits = 0;
    volatile int zero = 0, one = 1;
    if (sigsetjmp(jump, 1) == 0)
        one = one / zero;
    check("SIGFPE FPE_INTDIV on a division by zero",
          hits == 1 && last.si_signo == SIGFPE && last.si_code == FPE_INTDIV);
    dfl(SIGFPE);
}

/* 3. SIGILL and SIGTRAP: the handler moves RIP in the ucontext past ud2. */
static void skip_ud2(int sig, siginfo_t *si, void *ucp) {
    ucontext_t *uc = ucp;
    (void)sig;
    last = *si;
    hits++;
    uc->uc_mcontext.gregs[REG_RIP] += 2;
}

static void count_trap(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    last = *si;
    hits++;
}

static void test_ill_trap(void) {
    on(SIGILL, skip_ud2, 0);
    hits = 0;
    void *at;
    __asm__ volatile("lea 1f(%%rip), %0\n1: ud2" : "=r"(at));
    check("SIGILL ILL_ILLOPN at the ud2, skipped through uc_mcontext RIP",
          hits == 1 && last.si_code == ILL_ILLOPN && last.si_addr == at);
    dfl(SIGILL);
    on(SIGTRAP, count_trap, 0);
    hits = 0;
    __asm__ volatile("int3");
    check("SIGTRAP from int3, execution continues after it",
          hits == 1 && last.si_signo == SIGTRAP && last.si_code == SI_KERNEL);
    dfl(SIGTRAP);
}

/* 4. Nested signals, the mask during a handler, SA_NODEFER, SA_RESETHAND. */
static char order[32];
static volatile int order_len;
static void nest2(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    order[order_len++] = 'b';
}
static void nest1(int sig, siginfo_t *si, void *uc) {
    (void)si;
    (void)uc;
    order[order_len++] = 'a';
    if (order_len == 1) {
        raise(sig);     /* blocked while its handler runs: delivered after */
        raise(SIGUSR2); /* nested now */
    }
    order[order_len++] = 'A';
}

static volatile int depth, max_depth;
static void recurse(int sig, siginfo_t *si, void *uc) {
    (void)si;
    (void)uc;
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    if (depth < 3)
        raise(sig);
    depth--;
}

static void test_nested(void) {
    on(SIGUSR1, nest1, 0);
    on(SIGUSR2, nest2, 0);
    raise(SIGUSR1);
    order[order_len] = 0;
    check("nested handlers run in order, the own signal deferred (abAaA)",
          strcmp(order, "abAaA") == 0);
    if (strcmp(order, "abAaA") != 0)
        printf("%s: order %s\n", name, order);
    on(SIGUSR1, recurse, SA_NODEFER);
    depth = max_depth = 0;
    raise(SIGUSR1);
    check("SA_NODEFER: the handler interrupts itself (depth 3)", max_depth == 3);
    on(SIGUSR1, count_trap, SA_RESETHAND);
    hits = 0;
    raise(SIGUSR1);
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    check("SA_RESETHAND: one delivery, then SIG_DFL", hits == 1 && now.sa_handler == SIG_DFL);
    dfl(SIGUSR2);
}

/* 5. sigaltstack: the handler runs on it, reports SS_ONSTACK, cannot change it. */
static char *alt_base;
static size_t alt_size;
static volatile int on_alt, alt_flags, alt_change;
static void alt_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    char local;
    on_alt = &local > alt_base && &local < alt_base + alt_size;
    stack_t cur, other = {.ss_sp = alt_base, .ss_size = alt_size, .ss_flags = 0};
    sigaltstack(NULL, &cur);
    alt_flags = cur.ss_flags;
    alt_change = sigaltstack(&other, NULL) == -1 && errno == EPERM;
}

static void test_altstack(void) {
    alt_size = 64 * 1024;
    alt_base = mmap(NULL, alt_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_t ss = {.ss_sp = alt_base, .ss_size = alt_size, .ss_flags = 0}, old;
    check("sigaltstack installs", sigaltstack(&ss, &old) == 0 && (old.ss_flags & SS_DISABLE));
    stack_t tiny = {.ss_sp = alt_base, .ss_size = 1024, .ss_flags = 0};
    check("sigaltstack below MINSIGSTKSZ: ENOMEM", sigaltstack(&tiny, NULL) == -1 && errno == ENOMEM);
    on(SIGUSR1, alt_handler, SA_ONSTACK);
    raise(SIGUSR1);
    check("SA_ONSTACK handler runs on the alternate stack", on_alt);
    check("sigaltstack in the handler: SS_ONSTACK, changing it EPERM",
          (alt_flags & SS_ONSTACK) && alt_change);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    dfl(SIGUSR1);
}

/* Overflow of the alternate stack: nested frames no longer fit (a guard page below it). */
static void overflow_handler(int sig, siginfo_t *si, void *uc) {
    (void)si;
    (void)uc;
    volatile char pad[512];
    pad[0] = 1;
    raise(sig);
    (void)pad[1];
}

static void test_altstack_overflow(void) {
    pid_t pid = fork();
    if (pid == 0) {
        char *m = mmap(NULL, 5 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        mprotect(m, page, PROT_NONE);
        stack_t ss = {.ss_sp = m + page, .ss_size = 4 * page, .ss_flags = 0};
        sigaltstack(&ss, NULL);
        on(SIGUSR1, overflow_handler, SA_ONSTACK | SA_NODEFER);
        raise(SIGUSR1);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    check("a handler overflowing its alternate stack gets SIGSEGV",
          WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
}

/* 6. A pipe read interrupted: EINTR without SA_RESTART, restarted with it. */
static int rpipe[2];
static void alarm_note(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    hits++;
}
static void alarm_feed(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    hits++;
    write(rpipe[1], "x", 1);
}

/* Every `ms` until disarmed: a one-shot timer that expired before the read blocked (the
 * task descheduled for 50 ms between the two calls: a loaded host, two vCPUs) left the read
 * blocked forever, on Linux as on cowlab; the next expiry now interrupts it. */
static void arm_ms(int ms) {
    struct itimerval it = {.it_value = {.tv_sec = 0, .tv_usec = ms * 1000},
                           .it_interval = {.tv_sec = 0, .tv_usec = ms * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(void) {
    struct itimerval it;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
}

static void test_read_interrupt(void) {
    pipe(rpipe);
    char c;
    on(SIGALRM, alarm_note, 0);
    hits = 0;
    arm_ms(50);
    ssize_t n = read(rpipe[0], &c, 1);
    int e = errno;
    disarm();
    check("setitimer's SIGALRM interrupts a pipe read: EINTR", n == -1 && e == EINTR &&
          hits >= 1);
    on(SIGALRM, alarm_feed, SA_RESTART);
    hits = 0;
    arm_ms(50);
    n = read(rpipe[0], &c, 1);
    disarm();
    check("with SA_RESTART the read restarts and gets the handler's byte",
          n == 1 && c == 'x' && hits >= 1);
    dfl(SIGALRM);
    close(rpipe[0]);
    close(rpipe[1]);

    struct itimerval it = {.it_value = {.tv_sec = 10}}, got;
    setitimer(ITIMER_REAL, &it, NULL);
    getitimer(ITIMER_REAL, &got);
    check("getitimer: the time left, at most the value set",
          got.it_value.tv_sec <= 10 && (got.it_value.tv_sec >= 9));
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
    check("alarm returns the seconds left of the old one", alarm(5) == 0 && alarm(0) == 5);
    on(SIGALRM, alarm_note, 0);
    hits = 0;
    alarm(1);
    pause();
    check("alarm(1) delivers SIGALRM, ending pause with EINTR", hits == 1 && errno == EINTR);
    dfl(SIGALRM);
}

/* 7. sigtimedwait, sigpending, sigqueue, sigsuspend, kill's siginfo. */
static void test_wait_for_signals(void) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGRTMIN + 1);
    sigprocmask(SIG_BLOCK, &set, &old);
    raise(SIGUSR1);
    sigset_t pend;
    sigpending(&pend);
    check("sigpending shows the blocked SIGUSR1", sigismember(&pend, SIGUSR1));
    siginfo_t si;
    int s = sigtimedwait(&set, &si, NULL);
    /* raise is tgkill (SI_TKILL) in musl, rt_tgsigqueueinfo with SI_USER in recent glibc. */
    check("sigtimedwait takes it: from raise, our pid",
          s == SIGUSR1 && (si.si_code == SI_TKILL || si.si_code == SI_USER) &&
              si.si_pid == getpid());
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGRTMIN + 1, v);
    sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 43});
    s = sigtimedwait(&set, &si, NULL);
    int first = si.si_value.sival_int;
    int s2 = sigtimedwait(&set, &si, NULL);
    check("real-time signals queue with their values (SI_QUEUE 42 then 43)",
          s == SIGRTMIN + 1 && s2 == s && first == 42 && si.si_value.sival_int == 43 &&
              si.si_code == SI_QUEUE);
    /* Queued real-time signals are bounded (RLIMIT_SIGPENDING on Linux): EAGAIN, not a
     * kernel out of memory, and every accepted one can be taken back. */
    int accepted = 0;
    while (accepted < 1 << 20 && sigqueue(getpid(), SIGRTMIN + 1, v) == 0)
        accepted++;
    int refused = errno == EAGAIN;
    struct timespec zero = {0, 0};
    int drained = 0;
    while (sigtimedwait(&set, &si, &zero) == SIGRTMIN + 1)
        drained++;
    check("queueing real-time signals ends with EAGAIN, all taken back",
          refused && accepted > 0 && drained == accepted);
    struct timespec ts = {0, 20 * 1000 * 1000};
    s = sigtimedwait(&set, &si, &ts);
    check("sigtimedwait with nothing pending: EAGAIN at the timeout", s == -1 && errno == EAGAIN);

    on(SIGUSR1, count_trap, 0);
    hits = 0;
    kill(getpid(), SIGUSR1);
    check("a blocked kill stays pending", hits == 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    check("unblocking delivers it with SI_USER and our pid",
          hits == 1 && last.si_code == SI_USER && last.si_pid == getpid());

    sigprocmask(SIG_BLOCK, &set, NULL);
    hits = 0;
    pid_t pid = fork();
    if (pid == 0) {
        kill(getppid(), SIGUSR1);
        _exit(0);
    }
    sigset_t none;
    sigemptyset(&none);
    int r = sigsuspend(&none);
    int e = errno;
    sigset_t after;
    sigprocmask(SIG_SETMASK, NULL, &after);
    check("sigsuspend returns EINTR after the handler, the mask restored",
          r == -1 && e == EINTR && hits == 1 && sigismember(&after, SIGUSR1) &&
              last.si_pid == pid);
    waitpid(pid, NULL, 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    dfl(SIGUSR1);
}

/* 8. SIGCHLD, SIGPIPE. */
static void test_chld_pipe(void) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    on(SIGCHLD, count_trap, 0);
    hits = 0;
    pid_t pid = fork();
    if (pid == 0)
        _exit(7);
    sigset_t none;
    sigemptyset(&none);
    while (hits == 0)
        sigsuspend(&none);
    check("SIGCHLD on child exit: CLD_EXITED, its pid and status",
          last.si_signo == SIGCHLD && last.si_code == CLD_EXITED && last.si_pid == pid &&
              last.si_status == 7);
    waitpid(pid, NULL, 0);
    sigprocmask(SIG_SETMASK, &old, NULL);
    dfl(SIGCHLD);

    int p[2];
    pipe(p);
    close(p[0]);
    on(SIGPIPE, count_trap, 0);
    hits = 0;
    ssize_t n = write(p[1], "x", 1);
    check("write to a pipe without reader: EPIPE and SIGPIPE",
          n == -1 && errno == EPIPE && hits == 1 && last.si_signo == SIGPIPE);
    dfl(SIGPIPE);
    pid = fork();
    if (pid == 0) {
        write(p[1], "x", 1);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    check("SIGPIPE's default action kills", WIFSIGNALED(status) && WTERMSIG(status) == SIGPIPE &&
          !WCOREDUMP(status));
    close(p[1]);
}

/* 9. Stop and continue, core dumps, faults without a handler. */
static void *count_forever(void *arg) {
    volatile long *counter = arg;
    for (;;)
        (*counter)++;
    return NULL;
}

static void test_job_control_and_core(void) {
    pid_t pid = fork();
    if (pid == 0) {
        /* Its own process group, whose parent (we) is in another group of the session: Linux
         * discards SIGTSTP sent to an orphaned process group (as the test's own group is when
         * a harness in the background started it), and the SIGTSTP check below would wait
         * forever. cowlab has process groups (it does not discard signals to orphaned ones). */
        setpgid(0, 0);
        for (;;)
            pause();
    }
    setpgid(pid, pid);
    int status = 0;
    kill(pid, SIGSTOP);
    pid_t w = waitpid(pid, &status, WUNTRACED);
    check("SIGSTOP: waitpid WUNTRACED reports it stopped",
          w == pid && WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP);
    kill(pid, SIGCONT);
    w = waitpid(pid, &status, WCONTINUED);
    check("SIGCONT: waitpid WCONTINUED reports it continued", w == pid && WIFCONTINUED(status));
    kill(pid, SIGTSTP);
    w = waitpid(pid, &status, WUNTRACED);
    check("SIGTSTP stops it too", w == pid && WIFSTOPPED(status) && WSTOPSIG(status) == SIGTSTP);
    kill(pid, SIGTERM);
    kill(pid, SIGCONT);
    w = waitpid(pid, &status, 0);
    check("SIGTERM after SIGCONT ends it", w == pid && WIFSIGNALED(status) &&
          WTERMSIG(status) == SIGTERM);

    /* Every thread of a stopped process stops. */
    volatile long *counter = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                  -1, 0);
    pid = fork();
    if (pid == 0) {
        pthread_t t;
        pthread_create(&t, NULL, count_forever, (void *)counter);
        for (;;)
            pause();
    }
    while (*counter == 0)
        usleep(1000);
    kill(pid, SIGSTOP);
    w = waitpid(pid, &status, WUNTRACED);
    long c1 = *counter;
    usleep(100000);
    long c2 = *counter;
    kill(pid, SIGCONT);
    /* Up to 10 s for the thread to run again: 100 ms was too short for a vCPU of a loaded
     * host (the property is that it runs again, not how soon). */
    long c3 = c2;
    for (int i = 0; i < 1000 && c3 == c2; i++) {
        usleep(10000);
        c3 = *counter;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    check("a stopped process's other thread stops too, and runs again after SIGCONT",
          w == pid && c1 == c2 && c3 > c2);
    if (!(w == pid && c1 == c2 && c3 > c2))
        printf("%s: waitpid %d (child %d), counter %ld then %ld stopped, %ld continued\n", name,
               (int)w, (int)pid, c1, c2, c3);
    munmap((void *)counter, page);

    pid = fork();
    if (pid == 0) {
        struct rlimit rl = {0, RLIM_INFINITY};
        setrlimit(RLIMIT_CORE, &rl);
        *(volatile int *)8 = 1;
        _exit(0);
    }
    waitpid(pid, &status, 0);
    check("SIGSEGV without a handler kills; RLIMIT_CORE 0: no WCOREDUMP",
          WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV && !WCOREDUMP(status));

    /* The core file (the host writes one; cowlab does not) goes to a fresh directory. */
    char dir[] = "/tmp/sigcoreXXXXXX";
    int made = mkdtemp(dir) != NULL;
    if (!made)
        strcpy(dir, "/tmp");
    pid = fork();
    if (pid == 0) {
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        setrlimit(RLIMIT_CORE, &rl);
        chdir(dir);
        abort();
    }
    waitpid(pid, &status, 0);
    check("abort with RLIMIT_CORE unlimited: SIGABRT and WCOREDUMP",
          WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && WCOREDUMP(status));
    if (made) {
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char path[300];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        if (d)
            closedir(d);
        rmdir(dir);
    } else {
        unlink("/tmp/core");
    }

    /* A handler that returns without fixing the fault sees it again; blocked kills. */
    int p[2];
    pipe(p);
    pid = fork();
    if (pid == 0) {
        close(p[0]);
        rpipe[1] = p[1];
        on(SIGSEGV, alarm_feed, 0);
        hits = 0;
        *(volatile int *)16 = 1;
        _exit(0);
    }
    close(p[1]);
    /* The child loops through the handler until it is killed below. */
    char buf[3];
    ssize_t got = 0;
    while (got < 3) {
        ssize_t n = read(p[0], buf + got, 3 - got);
        if (n <= 0)
            break;
        got += n;
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    check("a handler that does not fix the fault re-faults", got == 3 &&
          WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    close(p[0]);

    pid = fork();
    if (pid == 0) {
        on(SIGSEGV, count_trap, 0);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGSEGV);
        sigprocmask(SIG_BLOCK, &set, NULL);
        *(volatile int *)24 = 1;
        _exit(0);
    }
    waitpid(pid, &status, 0);
    check("a fault with its signal blocked kills", WIFSIGNALED(status) &&
          WTERMSIG(status) == SIGSEGV);
}

/* 10. FPU/SSE state survives a handler that clobbers it. */
static void clobber_fpu(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    unsigned mx = 0x7f80; /* round toward zero... a different MXCSR */
    __asm__ volatile("pxor %%xmm8, %%xmm8\n\tpcmpeqd %%xmm0, %%xmm0\n\tldmxcsr %0" ::"m"(mx)
                     : "xmm0", "xmm8");
    hits++;
}

static void test_fpu(void) {
    on(SIGUSR1, clobber_fpu, 0);
    hits = 0;
    uint64_t val = 0x1122334455667788ull, out = 0;
    unsigned mx_before, mx_after;
    long nr = SYS_tgkill;
    long pid = getpid(), tid = syscall(SYS_gettid);
    __asm__ volatile("stmxcsr %[mb]\n\t"
                     "movq %[v], %%xmm8\n\t"
                     "syscall\n\t"
                     "movq %%xmm8, %[o]\n\t"
                     "stmxcsr %[ma]"
                     : [o] "=r"(out), "+a"(nr), [mb] "=m"(mx_before), [ma] "=m"(mx_after)
                     : [v] "r"(val), "D"(pid), "S"(tid), "d"((long)SIGUSR1)
                     : "rcx", "r11", "memory", "xmm8");
    check("xmm8 and MXCSR survive a handler that clobbers them",
          hits == 1 && out == val && mx_before == mx_after);
    dfl(SIGUSR1);
}

/* 11. pthread_kill and pthread_cancel. */
static volatile long handled_tid;
static volatile int thread_ready;
static void note_tid(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    handled_tid = syscall(SYS_gettid);
}
static volatile long worker_tid;
static void *spin_worker(void *arg) {
    (void)arg;
    worker_tid = syscall(SYS_gettid);
    thread_ready = 1;
    while (handled_tid == 0)
        sched_yield();
    return NULL;
}

static int cancel_pipe[2];
static volatile int cleaned;
static void cleanup(void *arg) {
    (void)arg;
    cleaned = 1;
}
static void *blocked_reader(void *arg) {
    (void)arg;
    char c;
    pthread_cleanup_push(cleanup, NULL);
    thread_ready = 1;
    read(cancel_pipe[0], &c, 1);
    pthread_cleanup_pop(0);
    return (void *)1;
}

static void test_threads(void) {
    on(SIGUSR1, note_tid, 0);
    pthread_t t;
    thread_ready = 0;
    pthread_create(&t, NULL, spin_worker, NULL);
    while (!thread_ready)
        sched_yield();
    pthread_kill(t, SIGUSR1);
    pthread_join(t, NULL);
    check("pthread_kill runs the handler in the target thread", handled_tid == worker_tid);
    dfl(SIGUSR1);

    pipe(cancel_pipe);
    thread_ready = 0;
    pthread_create(&t, NULL, blocked_reader, NULL);
    while (!thread_ready)
        sched_yield();
    usleep(20000);
    pthread_cancel(t);
    void *ret = NULL;
    pthread_join(t, &ret);
    check("pthread_cancel ends a thread blocked in read (a cancellation point)",
          ret == PTHREAD_CANCELED && cleaned);
    close(cancel_pipe[0]);
    close(cancel_pipe[1]);
}

/* 12. Bad frames for rt_sigreturn: the process dies with SIGSEGV, the kernel survives. */
static void scribble(int sig, siginfo_t *si, void *p) {
    ucontext_t *uc = p;
    (void)sig;
    (void)si;
    signal(SIGUSR1, SIG_DFL);
    uc->uc_mcontext.gregs[REG_EFL] = -1;
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)0x8000000000000000ull;
    uc->uc_mcontext.gregs[REG_CSGSFS] = -1;
    if (uc->uc_mcontext.fpregs)
        memset(uc->uc_mcontext.fpregs, 0xff, 512);
}
static void bad_fpstate(int sig, siginfo_t *si, void *p) {
    ucontext_t *uc = p;
    (void)sig;
    (void)si;
    uc->uc_mcontext.fpregs = (void *)0xdead0000;
}
static void kernel_rip(int sig, siginfo_t *si, void *p) {
    ucontext_t *uc = p;
    (void)sig;
    (void)si;
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)0xffffffff80000000ull;
}

static void test_bad_frames(void) {
    static const char *what[] = {
        "rt_sigreturn with a stack pointer at an unmapped page: SIGSEGV",
        "a handler scribbling RFLAGS, CS and RIP (non-canonical) and the FPU area: SIGSEGV",
        "a handler pointing fpstate at unmapped memory: SIGSEGV",
        "a handler returning to a kernel address: SIGSEGV",
        "an alternate stack in the kernel half: SIGSEGV at delivery",
    };
    void (*handlers[])(int, siginfo_t *, void *) = {NULL, scribble, bad_fpstate, kernel_rip,
                                                    bad_fpstate};
    for (int i = 0; i < 5; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            if (i == 0)
                __asm__ volatile("mov $0x1000, %%rsp\n\tmov $15, %%eax\n\tsyscall" ::: "memory");
            if (i == 4) {
                stack_t ss = {.ss_sp = (void *)0xffffffff00000000ull, .ss_size = 1 << 20};
                sigaltstack(&ss, NULL);
            }
            on(SIGUSR1, handlers[i], i == 4 ? SA_ONSTACK : 0);
            raise(SIGUSR1);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        check(what[i], WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    }
}

/* 13. Bad arguments. */
static void test_errors(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    check("sigaction(SIGKILL): EINVAL", sigaction(SIGKILL, &sa, NULL) == -1 && errno == EINVAL);
    check("sigaction(65): EINVAL", syscall(SYS_rt_sigaction, 65, NULL, NULL, 8) == -1 &&
          errno == EINVAL);
    check("rt_sigprocmask with a bad size: EINVAL",
          syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, NULL, 4) == -1 && errno == EINVAL);
    check("kill with signal 65: EINVAL", kill(getpid(), 65) == -1 && errno == EINVAL);
    check("kill(pid, 0) of ourselves: 0", kill(getpid(), 0) == 0);
    check("tgkill of another process's tid: ESRCH",
          syscall(SYS_tgkill, getpid(), 1, 0) == -1 && errno == ESRCH);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    check("an ignored signal does nothing", 1);
    dfl(SIGUSR2);
}

int main(int argc, char **argv) {
    if (argc > 0) {
        const char *slash = strrchr(argv[0], '/');
        name = slash ? slash + 1 : argv[0];
    }
    page = sysconf(_SC_PAGESIZE);
    test_segv_fix();
    test_maperr_bus_fpe();
    test_ill_trap();
    test_nested();
    test_altstack();
    test_altstack_overflow();
    test_read_interrupt();
    test_wait_for_signals();
    test_chld_pipe();
    test_job_control_and_core();
    test_fpu();
    test_threads();
    test_bad_frames();
    test_errors();
    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed != 0;
}
