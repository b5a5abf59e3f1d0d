// rundir.c — the run directory: checkpoint file names, the one directory scan, and the newest
// checkpoint that verifies.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

void ckpt_path(char *out, size_t cap, const char *run_dir, int step) {
    snprintf(out, cap, "%s/ckpt_%08d.h5", run_dir, step);
}

int ckpt_name_parse(const char *name, int *step) {
    if (strncmp(name, "ckpt_", 5) != 0) return CKPT_NAME_NONE;
    const char *p = name + 5, *q = p;
    long s = 0;
    while (*q >= '0' && *q <= '9') {
        s = s * 10 + (*q - '0');
        if (s > INT_MAX) return CKPT_NAME_NONE;
        q++;
    }
    if (q == p) return CKPT_NAME_NONE;
    int kind = strcmp(q, ".h5") == 0 ? CKPT_NAME_CKPT : strcmp(q, ".h5.tmp") == 0 ? CKPT_NAME_TMP : CKPT_NAME_NONE;
    if (kind != CKPT_NAME_NONE && step) *step = (int)s;
    return kind;
}

static int cmp_entry(const void *a, const void *b) {   // checkpoints newest first, then temporaries
    const ckpt_dir_entry *x = a, *y = b;
    if (x->kind != y->kind) return x->kind - y->kind;
    return (x->step < y->step) - (x->step > y->step);
}

int ckpt_dir_scan(const char *run_dir, ckpt_dir *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    DIR *d = opendir(run_dir);
    if (!d) {
        if (errno == ENOENT) return 0;   // a directory that does not exist holds no checkpoint
        snprintf(err, errlen, "cannot list the run directory: %s", strerror(errno));
        return -1;
    }
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int step = 0, kind = ckpt_name_parse(e->d_name, &step);
        if (kind == CKPT_NAME_NONE) continue;
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            ckpt_dir_entry *grown = sm_malloc(sizeof *grown * (size_t)cap);
            if (out->n) memcpy(grown, out->e, sizeof *grown * (size_t)out->n);
            sm_free(out->e);
            out->e = grown;
        }
        ckpt_dir_entry *x = &out->e[out->n++];
        snprintf(x->name, sizeof x->name, "%s", e->d_name);
        x->step = step;
        x->kind = kind;
        out->n_ckpt += kind == CKPT_NAME_CKPT;
    }
    closedir(d);
    if (out->n) qsort(out->e, (size_t)out->n, sizeof *out->e, cmp_entry);
    return 0;
}

void ckpt_dir_free(ckpt_dir *d) {
    sm_free(d->e);
    memset(d, 0, sizeof *d);
}

int ckpt_find_latest(const char *run_dir, char *path_out, size_t path_len, ckpt_skipped *skipped, int max_skipped,
                     int *n_skipped, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (n_skipped) *n_skipped = 0;
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    int count = 0, local = 0, rc = -1, n_bad = 0, *steps = NULL;
    ckpt_report *rep = NULL;
    char first_reason[CKPT_ERR_MAX] = "";

    // 1. rank 0 lists RUN_DIR, every rank gets the steps, newest first
    ckpt_dir dir = {0};
    char why[CKPT_ERR_MAX];
    if (cx->rank == 0 && ckpt_dir_scan(run_dir, &dir, why, sizeof why) != 0) {
        ckpt_fail(cx, "%s", why);
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    count = dir.n_ckpt;
    comm_bcast_bytes(&count, sizeof count, 0);
    steps = sm_malloc(sizeof(int) * (size_t)(count ? count : 1));
    for (int i = 0; i < count && cx->rank == 0; i++) steps[i] = dir.e[i].step;
    comm_bcast_bytes(steps, sizeof(int) * (size_t)count, 0);
    if (count == 0) {
        rc = CKPT_FIND_NONE;
        goto done;
    }

    // 2. newest first, the first that verifies
    rep = sm_malloc(sizeof *rep);
    for (int i = 0; i < count; i++) {
        char path[4096], why[CKPT_ERR_MAX];
        ckpt_path(path, sizeof path, run_dir, steps[i]);
        if (ckpt_verify(path, rep, why, sizeof why) == 0) {
            if (strlen(path) >= path_len) {
                ckpt_fail(cx, "checkpoint path is longer than %zu bytes", path_len);
                goto done;
            }
            snprintf(path_out, path_len, "%s", path);
            rc = CKPT_FIND_FOUND;
            goto done;
        }
        if (!n_bad++) snprintf(first_reason, sizeof first_reason, "%s", why);
        if (skipped && n_skipped && *n_skipped < max_skipped) {
            ckpt_skipped *s = &skipped[(*n_skipped)++];
            snprintf(s->name, sizeof s->name, "%s", strrchr(path, '/') + 1);
            snprintf(s->reason, sizeof s->reason, "%s", why);
        }
    }
    ckpt_fail(cx, "all %d checkpoints in the run directory are damaged; the newest: %s", count, first_reason);
done:
    ckpt_dir_free(&dir);
    sm_free(rep);
    sm_free(steps);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}
