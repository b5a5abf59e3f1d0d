// runlog.c — defines the run log (runlog_*): RUN_DIR/log.jsonl, one JSON event per line,
// written by rank 0; on resume the events after the resumed step are dropped first.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

// The "step" of an event line, or -1 when it has none
static long event_step(const char *line) {
    const char *p = strstr(line, "\"step\":");
    return p ? strtol(p + 7, NULL, 10) : -1;
}

// Rewrites the log keeping only the events up to step0 (those after it will be written again).
static int truncate_after(const char *path, int step0, char *err, size_t errlen) {
    FILE *in = fopen(path, "r");
    if (!in) return 0;   // no log yet
    size_t cap = 1 << 16, len = 0;
    char *keep = sm_malloc(cap), line[4096];
    while (fgets(line, sizeof line, in)) {
        if (event_step(line) > step0) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            char *bigger = sm_malloc(cap * 2);
            memcpy(bigger, keep, len);
            sm_free(keep);
            keep = bigger;
            cap *= 2;
        }
        memcpy(keep + len, line, n);
        len += n;
    }
    fclose(in);
    int rc = sm_write_file_atomic(path, keep, len, err, errlen);
    sm_free(keep);
    return rc;
}

int runlog_open(runlog *l, const char *run_dir, int step0, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    snprintf(l->path, sizeof l->path, "%s/log.jsonl", run_dir);
    if (step0 > 0 && truncate_after(l->path, step0, err, errlen) != 0) return -1;
    l->f = fopen(l->path, step0 > 0 ? "a" : "w");
    if (!l->f) {
        snprintf(err, errlen, "cannot open log: %s (%s)", strerror(errno), l->path);
        return -1;
    }
    return 0;
}

void runlog_write(runlog *l, const sm_json *j) {
    if (!l->f) return;
    if (fputs(j->buf, l->f) == EOF || fflush(l->f) != 0)
        sm_fatal(SM_EXIT_RUNTIME, "cannot write the log: %s (%s)", strerror(errno), l->path);
}

void runlog_close(runlog *l) {
    if (l->f && fclose(l->f) != 0) sm_fatal(SM_EXIT_RUNTIME, "cannot close the log: %s (%s)", strerror(errno), l->path);
    l->f = NULL;
}
