// contain.c — reading an untrusted file in a forked child, so that a crash or a hang inside
// libhdf5 (1.10.8 has known crashes on crafted files: see the README's reliability section) ends
// the child, not the trainer, and reads as "damaged".
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_internal.h"

// How long a contained reading may take: generous for slow filesystems (30 s, plus 1 s for every
// 10 MB of the file: 180 s for GPT-2 124M's 1.5 GB); SMALLMIND_CKPT_CHECK_TIMEOUT (seconds) overrides
// it. libhdf5 1.10.8 loops forever on some crafted files (README: reliability).
static double timeout_for(uint64_t file_bytes) {
    const char *env = getenv("SMALLMIND_CKPT_CHECK_TIMEOUT");
    if (env && atof(env) > 0) return atof(env);
    return 30.0 + (double)file_bytes / 10e6;
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int ckpt_contained(void (*fn)(void *arg, void *out), void *arg, void *out, size_t n_bytes, uint64_t file_bytes,
                   char *why, size_t cap) {
    const char *no_fork = getenv("SMALLMIND_CKPT_NO_FORK");   // debugging, and the fuzzers' in-process mode
    if (no_fork && no_fork[0] == '1') {
        fn(arg, out);
        return 0;
    }
    int fds[2];
    if (pipe(fds) != 0) {
        snprintf(why, cap, "cannot create a pipe to check it in a child process: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);   // nothing buffered is written twice
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, cap, "cannot fork a child process to check it: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {   // the child: no MPI call, no OpenMP, no exit handlers
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   // never outlives the trainer (nor holds its run-directory lock)
        signal(SIGPIPE, SIG_IGN);
        fn(arg, out);
        _exit(write_all(fds[1], out, n_bytes) == 0 ? 0 : 3);
    }
    close(fds[1]);
    double deadline = sm_now_s() + timeout_for(file_bytes);
    size_t got = 0;
    int timed_out = 0;
    while (got < n_bytes) {
        double left = deadline - sm_now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, left > 1000 ? 1000000 : (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t k = read(fds[0], (char *)out + got, n_bytes - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;   // the child ended early
        got += (size_t)k;
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == n_bytes && WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (timed_out)
        snprintf(why, cap, "reading it did not finish within %.0f s (SMALLMIND_CKPT_CHECK_TIMEOUT)", timeout_for(file_bytes));
    else if (WIFSIGNALED(status))
        snprintf(why, cap, "the HDF5 library crashed reading it (%s in the checking process)", strsignal(WTERMSIG(status)));
    else
        snprintf(why, cap, "the process checking it failed (exit status %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return -1;
}
