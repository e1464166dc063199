/* A C test program for cowlab, built with `gcc -static` (glibc), `gcc -static-pie` and
 * `musl-gcc -static` by xtask: fork, pipes, mmap, COW isolation, wait statuses, and tmpfile()
 * and mkstemp() in /tmp through a real libc. Prints one line per check and `NAME: N passed, N failed` (NAME from argv[0]), and
 * exits non-zero on failure. Runs unchanged on the host Linux. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

int main(int argc, char **argv) {
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    name = slash ? slash + 1 : argv[0];

    /* malloc (brk or mmap underneath) */
    char *heap = malloc(100000);
    check("malloc 100000 bytes", heap != NULL);
    memset(heap, 'x', 100000);
    check("heap memory is usable", heap[99999] == 'x');
    free(heap);

    /* mmap + COW across fork */
    size_t len = 8 * 4096;
    unsigned char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check("mmap anonymous", map != MAP_FAILED);
    for (size_t i = 0; i < len; i += 4096) map[i] = 1;

    int fds[2];
    check("pipe", pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        for (size_t i = 0; i < len; i += 4096) map[i] = 2;
        char msg[64];
        int n = snprintf(msg, sizeof msg, "child sees %d", map[0]);
        if (write(fds[1], msg, (size_t)n) != n) _exit(3);
        _exit(42);
    }
    check("fork", pid > 0);
    close(fds[1]);
    char buf[64] = {0};
    ssize_t got = 0, n;
    while ((n = read(fds[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0) got += n;
    check("read the child's message through the pipe", got > 0 && strcmp(buf, "child sees 2") == 0);
    check("EOF after the child exits", n == 0);
    int status = 0;
    check("waitpid", waitpid(pid, &status, 0) == pid);
    check("child exited with 42", WIFEXITED(status) && WEXITSTATUS(status) == 42);
    int intact = 1;
    for (size_t i = 0; i < len; i += 4096) intact &= map[i] == 1;
    check("parent's pages untouched by the child's writes (COW)", intact);

    /* mprotect: a child writing a read-only page dies of SIGSEGV */
    check("mprotect read-only", mprotect(map, 4096, PROT_READ) == 0);
    pid = fork();
    if (pid == 0) {
        map[0] = 9;
        _exit(0);
    }
    waitpid(pid, &status, 0);
    check("write to a read-only page: SIGSEGV", WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    check("munmap", munmap(map, len) == 0);

    /* tmpfile() (glibc: O_TMPFILE on /tmp; musl: a created and unlinked name) and mkstemp() */
    FILE *tf = tmpfile();
    check("tmpfile", tf != NULL);
    if (tf) {
        check("fputs to the tmpfile", fputs("temporary data\n", tf) >= 0);
        rewind(tf);
        char line[64] = {0};
        check("read the tmpfile back",
              fgets(line, sizeof line, tf) && strcmp(line, "temporary data\n") == 0);
        fclose(tf);
    }
    char tmpl[] = "/tmp/c_test_XXXXXX";
    int mfd = mkstemp(tmpl);
    check("mkstemp", mfd >= 0);
    check("mkstemp replaced the X's", strstr(tmpl, "XXXXXX") == NULL);
    check("write to the mkstemp file", write(mfd, "0123456789", 10) == 10);
    struct stat st;
    check("fstat: regular, mode 0600, size 10",
          fstat(mfd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0600 &&
              st.st_size == 10);
    int again = open(tmpl, O_RDONLY);
    char ten[11] = {0};
    check("reopen by name and read", again >= 0 && read(again, ten, 10) == 10 &&
                                          strcmp(ten, "0123456789") == 0);
    close(again);
    check("unlink the mkstemp file", unlink(tmpl) == 0);
    check("the name is gone", access(tmpl, F_OK) == -1 && errno == ENOENT);
    check("fstat after unlink: nlink 0", fstat(mfd, &st) == 0 && st.st_nlink == 0);
    close(mfd);

    /* errors come back as errno */
    check("close(-1) is EBADF", close(-1) == -1 && errno == EBADF);
    check("waitpid without children is ECHILD", waitpid(-1, &status, 0) == -1 && errno == ECHILD);

    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed != 0;
}
