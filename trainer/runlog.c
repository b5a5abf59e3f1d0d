// runlog.c — defines the run log (runlog_*): RUN_DIR/log.jsonl, one JSON event per line,
// written by rank 0; on resume the events after the resumed step are dropped first.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trainer.h"

// The "step" of an event line (n bytes), or -1 when it has none
static long event_step(const char *line, size_t n) {
    const char *p = memmem(line, n, "\"step\":", 7);
    long step = 0;
    if (!p) return -1;
    for (p += 7; p < line + n && *p >= '0' && *p <= '9' && step < 1L << 40; p++) step = step * 10 + (*p - '0');
    return step;
}

// Rewrites the log keeping only the events up to step0 (those after it will be written again).
static int truncate_after(const char *path, int step0, char *err, size_t errlen) {
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT) return 0;   // no log yet
    unsigned char *text;
    size_t n;
    // read without blocking: a FIFO (or anything but a regular file) in its place is refused
    if (data_read_file(path, "the log", (size_t)1 << 36, &text, &n, err, errlen) != 0) return -1;
    size_t len = 0;
    for (size_t at = 0; at < n;) {
        size_t end = at;
        while (end < n && text[end] != '\n') end++;
        if (end < n) end++;   // the line with its newline
        if (event_step((const char *)text + at, end - at) <= step0) {
            memmove(text + len, text + at, end - at);
            len += end - at;
        }
        at = end;
    }
    int rc = sm_write_file_atomic(path, text, len, err, errlen);
    sm_free(text);
    return rc;
}

int runlog_open(runlog *l, const char *run_dir, int step0, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    l->fd = -1;
    snprintf(l->path, sizeof l->path, "%s/log.jsonl", run_dir);
    if (step0 > 0 && truncate_after(l->path, step0, err, errlen) != 0) return -1;
    // O_NONBLOCK: a FIFO in its place must not block the open (refused just below)
    l->fd = open(l->path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | (step0 > 0 ? O_APPEND : O_TRUNC), 0644);
    struct stat st;
    if (l->fd < 0 || fstat(l->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, l->fd < 0 ? "cannot open the log: %s (%s)" : "the log is not a regular file%s (%s)",
                 l->fd < 0 ? strerror(errno) : "", l->path);
        if (l->fd >= 0) close(l->fd);
        l->fd = -1;
        return -1;
    }
    l->size = (uint64_t)st.st_size;
    return 0;
}

void runlog_write(runlog *l, const sm_json *j) {
    if (l->fd < 0) return;
    // one write per event; a short one (a full disk, `ulimit -f`: SIGXFSZ is ignored) is cut back
    // off, so the log only ever holds whole lines
    ssize_t n = write(l->fd, j->buf, j->len);
    if (n != (ssize_t)j->len) {
        int e = n < 0 ? errno : EFBIG;
        if (ftruncate(l->fd, (off_t)l->size) != 0) { /* the error below says what failed first */ }
        sm_fatal(SM_EXIT_RUNTIME, "cannot write the log: %s (%s)", strerror(e), l->path);
    }
    l->size += (uint64_t)n;
}

FILE *runlog_stream(runlog *l) { return l->fd >= 0 ? fdopen(dup(l->fd), "a") : NULL; }

void runlog_close(runlog *l) {
    if (l->fd >= 0 && close(l->fd) != 0)
        sm_fatal(SM_EXIT_RUNTIME, "cannot close the log: %s (%s)", strerror(errno), l->path);
    l->fd = -1;
}
