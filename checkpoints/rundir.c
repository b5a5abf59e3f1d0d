// rundir.c — the run directory: checkpoint file names, the one directory scan, `latest`, the
// lineage of checkpoints (each records its parent) that --resume and --keep follow, and the lock.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

void ckpt_path(char *out, size_t cap, const char *run_dir, int step) {
    snprintf(out, cap, "%s/ckpt_%08d.h5", run_dir, step);
}

void ckpt_name(char *out, size_t cap, int step) { snprintf(out, cap, "ckpt_%08d.h5", step); }

int ckpt_name_parse(const char *name, int *step) {
    size_t len = strlen(name);
    int looks = strncmp(name, "ckpt_", 5) == 0 || (len >= 3 && strcmp(name + len - 3, ".h5") == 0);
    if (!looks) return CKPT_NAME_NONE;
    const char *p = name + 5, *q = p;
    long s = 0;
    while (strncmp(name, "ckpt_", 5) == 0 && *q >= '0' && *q <= '9' && s <= INT_MAX) s = s * 10 + (*q++ - '0');
    int kind = q == p || s > INT_MAX ? CKPT_NAME_OTHER
             : strcmp(q, ".h5") == 0 ? CKPT_NAME_CKPT : strcmp(q, ".h5.tmp") == 0 ? CKPT_NAME_TMP : CKPT_NAME_OTHER;
    if (kind != CKPT_NAME_OTHER) {   // exactly as smallmind writes it: ckpt_%08d.h5
        char canon[CKPT_NAME_MAX];
        ckpt_name(canon, sizeof canon, (int)s);
        if (strncmp(name, canon, strlen(canon)) != 0) kind = CKPT_NAME_OTHER;
    }
    if (kind != CKPT_NAME_OTHER && step) *step = (int)s;
    return kind;
}

static int cmp_entry(const void *a, const void *b) {   // checkpoints newest first, then temporaries, others
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
        x->step = kind == CKPT_NAME_OTHER ? 0 : step;
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
        if (ckpt_verify(path, NULL, rep, why, sizeof why) == 0) {
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

int ckpt_newest_name(const char *run_dir, char *name, size_t cap) {
    ckpt_dir dir;
    char why[CKPT_ERR_MAX];
    int found = ckpt_dir_scan(run_dir, &dir, why, sizeof why) == 0 && dir.n_ckpt > 0;
    if (found) snprintf(name, cap, "%s", dir.e[0].name);   // checkpoints come first, newest first
    ckpt_dir_free(&dir);
    return found;
}

// ---------------------------------------------------------------------------
// `latest`
int ckpt_read_latest(const char *run_dir, char *name, size_t cap, char *err, size_t errlen) {
    char path[4200], buf[CKPT_NAME_MAX + 2], why[256];
    snprintf(path, sizeof path, "%s/latest", run_dir);
    name[0] = '\0';
    int fd = sm_open_regular(path, O_RDONLY, "`latest`", NULL, why, sizeof why);   // a FIFO never blocks
    if (fd < 0) {
        snprintf(err, errlen, "%s", why);
        return errno == ENOENT ? CKPT_LATEST_MISSING : -1;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);   // a name and its newline fit with a byte to spare
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read `latest`: %s", strerror(errno));
        return -1;
    }
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n') len--;   // the newline smallmind writes (older files may lack it)
    buf[len] = '\0';
    int step;
    if ((size_t)n == sizeof buf - 1 || len == 0 || memchr(buf, '\0', len) ||
        ckpt_name_parse(buf, &step) != CKPT_NAME_CKPT || len >= cap) {
        snprintf(err, errlen, "`latest` does not hold a checkpoint's file name (ckpt_NNNNNNNN.h5)");
        return -1;
    }
    memcpy(name, buf, len + 1);
    return 0;
}

// ---------------------------------------------------------------------------
// Lineage: every checkpoint of RUN_DIR with its parent, from the headers (read in a contained child)
typedef struct {
    int ok;                      // the header was read
    int has_parent;
    int step;                    // the header's (must match the name's)
    char parent[CKPT_NAME_MAX];
} head_info;

typedef struct {
    const char *run_dir;
    const ckpt_dir *dir;
} heads_args;

static void read_heads(void *argp, void *outp) {
    const heads_args *a = argp;
    head_info *h = outp;
    char path[4400];
    for (int i = 0; i < a->dir->n_ckpt; i++) {
        ckpt_ctx c;
        ckpt_meta m;
        snprintf(path, sizeof path, "%s/%s", a->run_dir, a->dir->e[i].name);
        ckpt_ctx_init_local(&c, path, "", "");
        memset(&h[i], 0, sizeof h[i]);
        if (ckpt_read_meta_local(&c, path, &m, NULL) != 0) continue;
        h[i].ok = m.step == a->dir->e[i].step;
        h[i].has_parent = m.has_parent;
        h[i].step = m.step;
        snprintf(h[i].parent, sizeof h[i].parent, "%s", m.parent);
    }
}

// parent[i]: the index in dir->e of checkpoint i's parent, or -1 (a root, a parent not in RUN_DIR, or
// a header that cannot be read). A file written before the attribute existed continues the next older
// checkpoint. A parent is always older: a crafted file cannot make a cycle.
static int lineage(const char *run_dir, const ckpt_dir *dir, int *parent, char *err, size_t errlen) {
    int n = dir->n_ckpt;
    head_info *h = sm_calloc((size_t)(n ? n : 1), sizeof *h);
    heads_args a = {run_dir, dir};
    char why[512];
    int rc = 0;
    if (n && ckpt_contained(read_heads, &a, h, sizeof *h * (size_t)n, 0, why, sizeof why) != 0) {
        snprintf(err, errlen, "cannot read the checkpoints' headers: %s", why);
        rc = -1;
    }
    for (int i = 0; i < n; i++) {
        parent[i] = -1;
        if (!h[i].ok) continue;
        if (!h[i].has_parent) {
            parent[i] = i + 1 < n ? i + 1 : -1;   // newest first: the next one is the next older
            continue;
        }
        for (int j = i + 1; j < n && h[i].parent[0]; j++)
            if (strcmp(dir->e[j].name, h[i].parent) == 0) parent[i] = j;
    }
    sm_free(h);
    return rc;
}

// 1 when checkpoint i descends from checkpoint j (through parents present in RUN_DIR), i != j
static int descends(const int *parent, int i, int j) {
    for (int k = parent[i]; k >= 0; k = parent[k])
        if (k == j) return 1;
    return 0;
}

static int find_entry(const ckpt_dir *dir, const char *name) {
    for (int i = 0; i < dir->n_ckpt; i++)
        if (strcmp(dir->e[i].name, name) == 0) return i;
    return -1;
}

// A file name for a message: control characters (a name may hold any byte but '/' and NUL) as '?'.
static const char *printable(const char *name, char *out, size_t cap) {
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++) out[i] = (unsigned char)name[i] < 0x20 || name[i] == 0x7f ? '?' : name[i];
    out[i] = '\0';
    return out;
}

static void note(ckpt_resume *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(ckpt_resume *r, const char *fmt, ...) {
    if (r->n_notes == CKPT_MAX_NOTES) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->n_notes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

int ckpt_plan_resume(ckpt_ctx *cx, const char *run_dir, const char *mode, ckpt_resume *r, ckpt_resume_plan *p,
                     const ckpt_meta *path_meta) {
    ckpt_dir dir = {0};
    char why[CKPT_ERR_MAX], latest[CKPT_NAME_MAX];
    int *parent = NULL, rc = -1;
    if (ckpt_dir_scan(run_dir, &dir, why, sizeof why) != 0) {
        ckpt_fail(cx, "%s", why);
        goto done;
    }
    char shown[256];
    for (int i = dir.n_ckpt; i < dir.n; i++)
        if (dir.e[i].kind == CKPT_NAME_OTHER)
            note(r, "ignoring %s/%s: not a name smallmind gives a checkpoint (ckpt_NNNNNNNN.h5)", run_dir,
                 printable(dir.e[i].name, shown, sizeof shown));
    p->order = sm_malloc(sizeof(int) * (size_t)(dir.n_ckpt + 1));
    p->moved = sm_malloc(sizeof(int) * (size_t)(dir.n_ckpt + 1));
    if (strcmp(mode, "none") == 0) {
        CK(dir.n_ckpt == 0, "--resume none but the run directory holds checkpoints: use --resume auto or another "
           "--run-dir");
        rc = 0;
        goto done;
    }
    parent = sm_malloc(sizeof(int) * (size_t)(dir.n_ckpt + 1));
    if (lineage(run_dir, &dir, parent, why, sizeof why) != 0) note(r, "%s", why);
    if (strcmp(mode, "auto") != 0) {   // PATH: every checkpoint newer than it is set aside
        for (int i = 0; i < dir.n_ckpt; i++)
            if (dir.e[i].step > path_meta->step) p->moved[p->n_moved++] = dir.e[i].step;
        rc = 0;
        goto done;
    }
    // auto: what `latest` names, after the newer checkpoints that descend from it, then its ancestors;
    // the rest of RUN_DIR, newest first, only when none of those verifies (or `latest` is missing)
    int l = -1, lrc = ckpt_read_latest(run_dir, latest, sizeof latest, why, sizeof why);
    if (lrc == 0 && (l = find_entry(&dir, latest)) < 0 && dir.n_ckpt)
        note(r, "`latest` names %s, which is not in the run directory: taking the newest checkpoint that verifies",
             latest);   // a checkpoint name: printable
    else if (lrc < 0 && lrc != CKPT_LATEST_MISSING && dir.n_ckpt)
        note(r, "ignoring %s/latest: %s; taking the newest checkpoint that verifies", run_dir, why);
    char *tried = sm_calloc((size_t)(dir.n_ckpt + 1), 1);
    for (int i = 0; l >= 0 && i < l; i++)
        if (descends(parent, i, l)) p->order[p->n_order++] = dir.e[i].step, tried[i] = 1;
    if (l >= 0) p->order[p->n_order++] = dir.e[l].step, tried[l] = 1;
    for (int k = l >= 0 ? parent[l] : -1; k >= 0; k = parent[k])   // then its ancestors, nearest first
        if (!tried[k]) p->order[p->n_order++] = dir.e[k].step, tried[k] = 1;
    for (int i = 0; i < dir.n_ckpt; i++)
        if (!tried[i]) p->order[p->n_order++] = dir.e[i].step;
    sm_free(tried);
    rc = 0;
error:
done:
    sm_free(parent);
    ckpt_dir_free(&dir);
    return rc;
}

static int same_dir(const char *path, const char *run_dir) {
    char d[4096], a[PATH_MAX], b[PATH_MAX];
    snprintf(d, sizeof d, "%s", path);
    char *slash = strrchr(d, '/');
    if (slash) *slash = '\0';
    else snprintf(d, sizeof d, ".");
    if (slash == d) snprintf(d, sizeof d, "/");
    return realpath(d, a) && realpath(run_dir, b) && strcmp(a, b) == 0;
}

int ckpt_resolve_resume(const char *run_dir, const char *mode, ckpt_layout_fn layout, ckpt_resume *r, char *err,
                        size_t errlen) {
    ckpt_ctx c, *cx = &c;
    memset(r, 0, sizeof *r);
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_resume_plan p = {0};
    ckpt_meta pm;
    memset(&pm, 0, sizeof pm);
    int rc = -1, is_path = strcmp(mode, "auto") != 0 && strcmp(mode, "none") != 0;
    ckpt_report *rep = NULL;
    if (is_path) {   // the file must be a checkpoint we can read: its step says what is newer
        if (ckpt_read_meta(mode, &pm, err, errlen) != 0) return -1;
        const char *base = strrchr(mode, '/') ? strrchr(mode, '/') + 1 : mode;
        int step;
        if (ckpt_name_parse(base, &step) == CKPT_NAME_CKPT) snprintf(r->parent, sizeof r->parent, "%s", base);
        snprintf(r->path, sizeof r->path, "%s", mode);
        r->path_in_run_dir = same_dir(mode, run_dir);
    }
    int local = cx->rank == 0 ? ckpt_plan_resume(cx, run_dir, mode, r, &p, &pm) : 0;
    if (ckpt_agree(cx, local) != 0) goto done;
    comm_bcast_bytes(&r->n_notes, sizeof r->n_notes, 0);
    comm_bcast_bytes(r->notes, sizeof r->notes[0] * (size_t)r->n_notes, 0);
    comm_bcast_bytes(&p.n_order, sizeof p.n_order, 0);
    comm_bcast_bytes(&p.n_moved, sizeof p.n_moved, 0);
    if (cx->rank != 0) {
        p.order = sm_malloc(sizeof(int) * (size_t)(p.n_order + 1));
        p.moved = sm_malloc(sizeof(int) * (size_t)(p.n_moved + 1));
    }
    comm_bcast_bytes(p.order, sizeof(int) * (size_t)p.n_order, 0);
    comm_bcast_bytes(p.moved, sizeof(int) * (size_t)p.n_moved, 0);
    if (is_path) {
        r->n_abandoned = p.n_moved;
        r->abandoned = p.moved;
        p.moved = NULL;
        rc = 0;
        goto done;
    }
    // auto: the first candidate that verifies
    rep = sm_malloc(sizeof *rep);
    char first_reason[CKPT_ERR_MAX] = "";
    for (int i = 0; i < p.n_order; i++) {
        char path[4096], why[CKPT_ERR_MAX];
        ckpt_path(path, sizeof path, run_dir, p.order[i]);
        if (ckpt_verify(path, layout, rep, why, sizeof why) == 0) {
            snprintf(r->path, sizeof r->path, "%s", path);
            ckpt_name(r->parent, sizeof r->parent, p.order[i]);
            r->path_in_run_dir = 1;
            rc = 0;
            goto done;
        }
        if (!first_reason[0]) snprintf(first_reason, sizeof first_reason, "%s", why);
        note(r, "skipping damaged checkpoint %s: %s", strrchr(path, '/') + 1, why);
    }
    if (p.n_order == 0) {   // no checkpoint at all: a fresh start
        rc = 0;
        goto done;
    }
    ckpt_fail(cx, "all %d checkpoints in the run directory are damaged; the first tried: %s", p.n_order, first_reason);
done:
    sm_free(rep);
    sm_free(p.order);
    sm_free(p.moved);
    if (rc != 0) ckpt_resume_free(r);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}

void ckpt_resume_free(ckpt_resume *r) {
    sm_free(r->abandoned);
    r->abandoned = NULL;
    r->n_abandoned = 0;
}

// Renames from into dir/name, or name.1, name.2, ... when taken: nothing is ever overwritten.
static int move_aside(const char *from, const char *dir, const char *name, char *to, size_t cap) {
    for (int k = 0; k < 1000; k++) {
        if (k == 0) snprintf(to, cap, "%s/%s", dir, name);
        else snprintf(to, cap, "%s/%s.%d", dir, name, k);
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
        if (errno == EINVAL || errno == ENOSYS) {   // a filesystem without RENAME_NOREPLACE
            if (link(from, to) == 0) return unlink(from);
            if (errno == EPERM) return rename(from, to);   // no hard links either: the name was free a moment ago
        }
        if (errno != EEXIST) return -1;
    }
    errno = EEXIST;
    return -1;
}

int ckpt_adopt_resume(const char *run_dir, const ckpt_resume *r, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    int local = 0;
    if (cx->rank == 0 && r->n_abandoned > 0) {
        char dir[4200], from[4300], to[4400], name[CKPT_NAME_MAX];
        snprintf(dir, sizeof dir, "%s/abandoned", run_dir);
        CK_SYS(mkdir(dir, 0755) == 0 || errno == EEXIST, "cannot create %s for the abandoned branch", dir);
        for (int i = 0; i < r->n_abandoned; i++) {
            ckpt_name(name, sizeof name, r->abandoned[i]);
            snprintf(from, sizeof from, "%s/%s", run_dir, name);
            CK_SYS(move_aside(from, dir, name, to, sizeof to) == 0 || errno == ENOENT,
                   "cannot move %s of the abandoned branch to %s", name, dir);
        }
        CK_SYS(ckpt_sync_dir(dir) == 0 && ckpt_sync_dir(run_dir) == 0, "cannot fsync %s", dir);
    }
    if (cx->rank == 0 && r->path_in_run_dir && r->parent[0]) {   // a crash before the first save resumes here again
        char latest[4200], line[CKPT_NAME_MAX + 2], why[CKPT_ERR_MAX];
        snprintf(latest, sizeof latest, "%s/latest", run_dir);
        int len = snprintf(line, sizeof line, "%s\n", r->parent);
        CK(sm_write_file_atomic(latest, line, (size_t)len, why, sizeof why) == 0, "%s", why);
    }
error:
    if (cx->msg[0]) local = -1;
    return ckpt_ctx_finish(cx, ckpt_agree(cx, local), err, errlen);
}

// ---------------------------------------------------------------------------
// After a commit (rank 0): stale temporaries of crashed saves go; with keep > 0 so do the checkpoints
// beyond the newest `keep` along the new checkpoint's lineage (it counts; files off the lineage, newer
// ones included, are left alone). Failures here do not undo the commit: they are warnings.
void ckpt_prune(const char *run_dir, int new_step, int keep) {
    ckpt_dir dir;
    char path[4400], why[CKPT_ERR_MAX];
    if (ckpt_dir_scan(run_dir, &dir, why, sizeof why) != 0) {
        sm_warn("cannot remove old checkpoints: %s (%s)", why, run_dir);
        return;
    }
    int *parent = sm_malloc(sizeof(int) * (size_t)(dir.n_ckpt + 1)), self = -1;
    char name[CKPT_NAME_MAX];
    ckpt_name(name, sizeof name, new_step);
    if (keep > 0 && (self = find_entry(&dir, name)) >= 0 && lineage(run_dir, &dir, parent, why, sizeof why) != 0) {
        sm_warn("cannot remove old checkpoints: %s (%s)", why, run_dir);
        self = -1;
    }
    int kept = 1;
    for (int k = self >= 0 ? parent[self] : -1; k >= 0; k = parent[k]) {
        if (++kept <= keep) continue;
        snprintf(path, sizeof path, "%s/%s", run_dir, dir.e[k].name);
        if (unlink(path) != 0 && errno != ENOENT) sm_warn("cannot remove old checkpoint %s: %s", path, strerror(errno));
    }
    for (int i = dir.n_ckpt; i < dir.n; i++) {
        snprintf(path, sizeof path, "%s/%s", run_dir, dir.e[i].name);
        if (dir.e[i].kind == CKPT_NAME_TMP && unlink(path) != 0 && errno != ENOENT)
            sm_warn("cannot remove %s: %s", path, strerror(errno));
    }
    sm_free(parent);
    ckpt_dir_free(&dir);
}

// ---------------------------------------------------------------------------
// The run directory's lock
int ckpt_lock_run_dir(const char *run_dir, ckpt_lock *lock, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    lock->fd = -1;
    if (ckpt_ctx_init(cx, run_dir) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    int local = 0;
    if (cx->rank == 0) {
        char path[4200], why[256], holder[256] = "";
        snprintf(path, sizeof path, "%s/.lock", run_dir);
        int fd = sm_open_regular(path, O_RDWR | O_CREAT, "the run directory's lock file", NULL, why, sizeof why);
        CK(fd >= 0, "%s", why);
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            if (e == EWOULDBLOCK) {
                ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
                holder[n > 0 ? n : 0] = '\0';
                holder[strcspn(holder, "\n")] = '\0';
                close(fd);
                CK(0, "the run directory is in use by another trainer (%s): wait for it to end, or use another "
                   "--run-dir", holder[0] ? holder : "pid and host unknown");
            }
            // a filesystem without locks (some parallel filesystems): run, but say so
            sm_warn("cannot lock the run directory (%s): %s; nothing stops a second trainer from using it",
                    strerror(e), run_dir);
            close(fd);
        } else {
            char host[256] = "?", line[400];
            gethostname(host, sizeof host - 1);
            int len = snprintf(line, sizeof line, "pid %d on host %s\n", (int)getpid(), host);
            if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
                sm_warn("cannot write the holder into %s: %s", path, strerror(errno));
            lock->fd = fd;   // held until the process ends (the kernel releases it, also after a crash)
        }
    }
error:
    if (cx->msg[0]) local = -1;
    return ckpt_ctx_finish(cx, ckpt_agree(cx, local), err, errlen);
}

void ckpt_unlock_run_dir(ckpt_lock *lock) {
    if (lock->fd >= 0) close(lock->fd);
    lock->fd = -1;
}
