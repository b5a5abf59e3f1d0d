// verify.c — trusting a checkpoint: its structure checked against what its header (or the
// caller's tables) implies before any data is read, then every chunk's checksum and every value.
//
// The checks run in a forked child (contain.c) through HDF5's serial driver: the structure — every
// dataset a hard link into the file, of exactly the expected type and shape, chunked with
// Fletcher32 alone, every chunk written, the tensors' bytes no more than the file holds — so that
// reading costs time in proportion to the bytes really stored; then, for verify, the data, in boxes
// of whole chunks (each chunk read once, whatever its shape), every float finite and every second
// moment >= 0.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_internal.h"

#define VERIFY_BUF_BYTES ((size_t)16 << 20)   // read in boxes of whole chunks of ~16 MiB at most

static const char *const TENSOR_GROUPS[3] = {"/model", "/optim/m", "/optim/v"};

// ---------------------------------------------------------------------------
// Values
void ckpt_bad_value_str(char *out, size_t cap, float x) {
    if (x != x) snprintf(out, cap, "NaN");
    else if (x > 0 && x - x != 0) snprintf(out, cap, "+Inf");
    else if (x < 0 && x - x != 0) snprintf(out, cap, "-Inf");
    else snprintf(out, cap, "negative (%g)", (double)x);
}

// ---------------------------------------------------------------------------
// A dataset's verdict: the first problem found.
static void bad(ckpt_dataset_report *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(ckpt_dataset_report *d, const char *fmt, ...) {
    if (!d->ok) return;
    d->ok = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
    va_end(ap);
}

static void bad_h5(ckpt_dataset_report *d, const char *what) {
    char reason[512];
    ckpt_h5_reason(reason, sizeof reason);
    bad(d, "%s: %s", what, reason);
}

static int is_state(const ckpt_dataset_report *d) { return strncmp(d->name, "/state/", 7) == 0; }
static int is_second_moment(const ckpt_dataset_report *d) { return strncmp(d->name, "/optim/v/", 9) == 0; }

// The datasets a file must hold: /model, /optim/m and /optim/v each the tensors of t (names,
// shapes, order), then /state/rng [world, 4]. Fills rep->d (ok = 1).
static int expected_datasets(ckpt_ctx *cx, const sm_table *t, int world, ckpt_report *rep) {
    CK(t->count > 0 && 3 * t->count + 1 <= CKPT_MAX_DATASETS, "checkpoint: %d tensors is more than a checkpoint holds",
       t->count);
    rep->n_datasets = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < t->count; i++) {
            ckpt_dataset_report *d = &rep->d[rep->n_datasets++];
            memset(d, 0, sizeof *d);
            d->ok = 1;
            snprintf(d->name, sizeof d->name, "%s/%s", TENSOR_GROUPS[k], t->t[i].name);
            d->ndim = t->t[i].ndim;
            d->n_bytes = sizeof(float);
            for (int q = 0; q < d->ndim; q++) {   // saturating: a crafted shape must not wrap around
                d->shape[q] = t->t[i].shape[q];
                d->n_bytes = d->shape[q] && d->n_bytes > UINT64_MAX / d->shape[q] ? UINT64_MAX : d->n_bytes * d->shape[q];
            }
        }
    ckpt_dataset_report *d = &rep->d[rep->n_datasets++];
    memset(d, 0, sizeof *d);
    *d = (ckpt_dataset_report){.name = "/state/rng", .ndim = 2, .shape = {(uint64_t)world, 4},
                               .n_bytes = (uint64_t)world * 4 * sizeof(uint64_t), .ok = 1};
    return 0;
error:
    return -1;
}

// With neither the caller's tables nor a layout: the tensors /model lists, in creation order.
typedef struct {
    sm_table *t;
    ckpt_ctx *cx;
    hsize_t dims[SM_MAX_TENSORS][SM_MAX_DIMS];
    char names[SM_MAX_TENSORS][48];
} model_list;

static herr_t model_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    model_list *ml = op;
    ckpt_ctx *cx = ml->cx;
    hid_t ds = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    int i = ml->t->count;
    CK(info->type == H5L_TYPE_HARD, "checkpoint fails verification: /model/%s is a link out of the file", name);
    CK(i < SM_MAX_TENSORS && strlen(name) < sizeof ml->names[0], "checkpoint fails verification: /model holds too many "
       "or too long names");
    CK_H5(ds = H5Dopen2(g, name, H5P_DEFAULT), "checkpoint fails verification: cannot open /model/%s", name);
    CK_H5(sp = H5Dget_space(ds), "checkpoint fails verification: cannot read /model/%s", name);
    int nd = H5Sget_simple_extent_ndims(sp);
    CK(nd >= 1 && nd <= SM_MAX_DIMS && H5Sget_simple_extent_dims(sp, ml->dims[i], NULL) == nd,
       "checkpoint fails verification: /model/%s has %d dimensions, expected 1 to %d", name, nd, SM_MAX_DIMS);
    snprintf(ml->names[i], sizeof ml->names[i], "%s", name);
    size_t shape[SM_MAX_DIMS];
    for (int q = 0; q < nd; q++) shape[q] = (size_t)ml->dims[i][q];
    sm_table_add(ml->t, ml->names[i], nd, shape);
    H5Sclose(sp);
    H5Dclose(ds);
    return 0;
error:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    return -1;
}

// ---------------------------------------------------------------------------
// Structure
// Group gname exists, is a hard link to a group, and holds exactly `want` links.
static int check_group(ckpt_ctx *cx, hid_t file, const char *gname, int want) {
    H5L_info_t li;
    H5O_info_t oi;
    H5G_info_t gi;
    hid_t g = H5I_INVALID_HID;
    int rc = -1;
    htri_t ex;
    // the parent group first, or HDF5 fails on the missing path
    const char *slash = strrchr(gname, '/');
    if (slash != gname) {
        char parent[64];
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - gname), gname);
        CK_H5(ex = H5Lexists(file, parent, H5P_DEFAULT), "cannot look up %s", parent);
    }
    CK_H5(ex = H5Lexists(file, gname, H5P_DEFAULT), "cannot look up %s", gname);
    CK(ex > 0, "not a complete smallmind checkpoint: no group %s", gname);
    CK_H5(H5Lget_info(file, gname, &li, H5P_DEFAULT), "cannot look up %s", gname);
    CK(li.type == H5L_TYPE_HARD, "checkpoint fails verification: %s is a link, not a group stored in the file", gname);
    CK_H5(H5Oget_info_by_name2(file, gname, &oi, H5O_INFO_BASIC, H5P_DEFAULT), "cannot look up %s", gname);
    CK(oi.type == H5O_TYPE_GROUP, "not a smallmind checkpoint: %s is not a group", gname);
    CK_H5(g = H5Gopen2(file, gname, H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open %s", gname);
    CK_H5(H5Gget_info(g, &gi), "cannot list %s", gname);
    CK(gi.nlinks == (hsize_t)want, "%s: %s holds %llu objects, %s %d", cx->mismatch, gname,
       (unsigned long long)gi.nlinks, cx->expects, want);
    rc = 0;
error:
    if (g >= 0) H5Gclose(g);
    return rc;
}

// One dataset against its expected shape: a hard link to a dataset of the expected type and shape,
// chunked, Fletcher32 its only filter, every chunk stored. *chunk receives its chunk shape.
static void check_dataset(ckpt_ctx *cx, hid_t file, ckpt_dataset_report *d, hsize_t *chunk) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset space dcpl type
    hsize_t dims[H5S_MAX_RANK];
    htri_t ex = H5Lexists(file, d->name, H5P_DEFAULT);
    H5L_info_t li;
    H5O_info_t oi;
    if (ex < 0) {
        bad_h5(d, "cannot be looked up");
        return;
    }
    if (ex == 0) {
        bad(d, "is missing");
        return;
    }
    if (H5Lget_info(file, d->name, &li, H5P_DEFAULT) < 0) {
        bad_h5(d, "cannot be looked up");
        return;
    }
    if (li.type != H5L_TYPE_HARD) {
        bad(d, "is %s link, not a dataset stored in the file", li.type == H5L_TYPE_SOFT ? "a soft" : "an external");
        return;
    }
    if (H5Oget_info_by_name2(file, d->name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
        bad_h5(d, "cannot be looked up");
        return;
    }
    if (oi.type != H5O_TYPE_DATASET) {
        bad(d, "is not a dataset");
        return;
    }
    const char *what = "cannot be opened";
    if ((ids[0] = H5Dopen2(file, d->name, H5P_DEFAULT)) < 0) goto h5_error;
    what = "cannot read its type";
    if ((ids[3] = H5Dget_type(ids[0])) < 0) goto h5_error;
    size_t elem = H5Tget_size(ids[3]);
    H5T_class_t cls = H5Tget_class(ids[3]);
    if (!is_state(d) && !(cls == H5T_FLOAT && elem == 4)) bad(d, "is not float32");
    if (is_state(d) && !(cls == H5T_INTEGER && elem == 8)) bad(d, "is not a 64-bit integer");
    what = "cannot read its shape";
    if ((ids[1] = H5Dget_space(ids[0])) < 0) goto h5_error;
    int ndim = H5Sget_simple_extent_ndims(ids[1]);
    int same = ndim == d->ndim && ndim >= 1 && ndim <= SM_MAX_DIMS && H5Sget_simple_extent_dims(ids[1], dims, NULL) == ndim;
    for (int k = 0; same && k < ndim; k++) same = dims[k] == d->shape[k];
    if (!same) {
        char have[128] = "?", want[128];
        hsize_t w[SM_MAX_DIMS];
        for (int k = 0; k < d->ndim; k++) w[k] = d->shape[k];
        if (ndim >= 1 && ndim <= H5S_MAX_RANK && H5Sget_simple_extent_dims(ids[1], dims, NULL) == ndim)
            ckpt_shape_str(have, sizeof have, ndim, dims);
        ckpt_shape_str(want, sizeof want, d->ndim, w);
        H5Eclear2(H5E_DEFAULT);
        bad(d, "has shape %s, %s %s", have, cx->expects, want);
    }
    what = "cannot read its layout";
    if ((ids[2] = H5Dget_create_plist(ids[0])) < 0) goto h5_error;
    int chunked = H5Pget_layout(ids[2]) == H5D_CHUNKED, nf = chunked ? H5Pget_nfilters(ids[2]) : 0, fletcher = 0;
    for (int f = 0; f < nf; f++) {
        unsigned flags = 0, conf = 0;
        size_t nelmts = 0;
        H5Z_filter_t id = H5Pget_filter2(ids[2], (unsigned)f, &flags, &nelmts, NULL, 0, NULL, &conf);
        if (id == H5Z_FILTER_FLETCHER32) fletcher = 1;
        else if (d->ok) bad(d, "has a filter other than Fletcher32 (HDF5 filter %d): not a checkpoint smallmind wrote", (int)id);
    }
    H5Eclear2(H5E_DEFAULT);
    if (!chunked || !fletcher) bad(d, "has no Fletcher32 checksum, so it cannot be verified");
    if (!d->ok) goto done;
    what = "cannot read its chunking";
    if (H5Pget_chunk(ids[2], ndim, chunk) != ndim) goto h5_error;
    hsize_t n_chunks = 1, stored = 0;
    for (int k = 0; k < ndim; k++) {
        if (chunk[k] < 1) {
            bad(d, "has an invalid chunk shape");
            goto done;
        }
        n_chunks *= (dims[k] + chunk[k] - 1) / chunk[k];
    }
    what = "cannot count its chunks";
    if (H5Dget_num_chunks(ids[0], ids[1], &stored) < 0) goto h5_error;
    d->stored_bytes = H5Dget_storage_size(ids[0]);
    if (stored != n_chunks)
        bad(d, "is not fully written: %llu of its %llu chunks are stored", (unsigned long long)stored,
            (unsigned long long)n_chunks);
    goto done;
h5_error:
    bad_h5(d, what);
done:
    ckpt_close_all(ids, 4);
}

// Reads a dataset in boxes of whole chunks (a box grows from the chunk along the last dimensions
// while it stays under VERIFY_BUF_BYTES), so that each chunk passes through the checksum filter
// exactly once, whatever its shape; checks every value of the float datasets.
static void read_dataset(hid_t file, ckpt_dataset_report *d, const hsize_t *chunk, char **buf, size_t *cap) {
    hid_t ids[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset fspace mspace
    int nd = d->ndim, floats = !is_state(d);
    size_t elem = floats ? sizeof(float) : sizeof(uint64_t);
    hsize_t dims[SM_MAX_DIMS], box[SM_MAX_DIMS], n_box[SM_MAX_DIMS], limit = VERIFY_BUF_BYTES / elem;
    for (int k = 0; k < nd; k++) {
        dims[k] = d->shape[k];
        box[k] = chunk[k] < dims[k] ? chunk[k] : dims[k];
    }
    for (int k = nd - 1; k >= 0; k--) {
        hsize_t others = 1;
        for (int q = 0; q < nd; q++) others *= q == k ? 1 : box[q];
        hsize_t along = limit / others / box[k] * box[k];
        if (along > box[k]) box[k] = along < dims[k] ? along : dims[k];
        if (box[k] < dims[k]) break;
    }
    size_t need = elem;
    hsize_t total = 1;
    for (int k = 0; k < nd; k++) {
        need *= (size_t)box[k];
        n_box[k] = (dims[k] + box[k] - 1) / box[k];
        total *= n_box[k];
    }
    if (need > *cap) {
        sm_free(*buf);
        *buf = sm_malloc(need);
        *cap = need;
    }
    if ((ids[0] = H5Dopen2(file, d->name, H5P_DEFAULT)) < 0) goto h5_error;
    if ((ids[1] = H5Dget_space(ids[0])) < 0) goto h5_error;
    for (hsize_t b = 0; b < total; b++) {
        hsize_t start[SM_MAX_DIMS], count[SM_MAX_DIMS], rest = b, n = 1;
        for (int k = nd - 1; k >= 0; k--) {
            start[k] = rest % n_box[k] * box[k];
            rest /= n_box[k];
            count[k] = dims[k] - start[k] < box[k] ? dims[k] - start[k] : box[k];
            n *= count[k];
        }
        if (H5Sselect_hyperslab(ids[1], H5S_SELECT_SET, start, NULL, count, NULL) < 0) goto h5_error;
        if (ids[2] >= 0) H5Sclose(ids[2]);
        if ((ids[2] = H5Screate_simple(nd, count, NULL)) < 0) goto h5_error;
        if (H5Dread(ids[0], floats ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT64, ids[2], ids[1], H5P_DEFAULT, *buf) < 0)
            goto h5_error;
        if (!floats) continue;
        const float *x = (const float *)(void *)*buf;
        size_t i = sm_first_bad_float(x, (size_t)n, is_second_moment(d));
        if (i == (size_t)n) continue;
        hsize_t at[SM_MAX_DIMS], r = i;
        for (int k = nd - 1; k >= 0; k--) {
            at[k] = start[k] + r % count[k];
            r /= count[k];
        }
        char where[128], what[64];
        ckpt_shape_str(where, sizeof where, nd, at);
        ckpt_bad_value_str(what, sizeof what, x[i]);
        bad(d, "holds a value that is %s at %s", what, where);
        break;
    }
    ckpt_close_all(ids, 3);
    return;
h5_error:
    bad_h5(d, "cannot be read back");
    ckpt_close_all(ids, 3);
}

// ---------------------------------------------------------------------------
// The check, rank-local: what a forked child runs.
typedef struct {
    const char *path;
    const sm_table *expect;   // the tensors a loader's tables hold, or NULL: from layout(header config)
    ckpt_layout_fn layout;    // NULL too: the tensors /model lists (structure only)
    int header_only;
    int part, n_parts;        // read back datasets i % n_parts == part; n_parts 0: structure only
} check_args;

typedef struct {
    int stage;                // 0 passed; 1 the header failed; 2 the structure or the data failed
    char msg[CKPT_ERR_MAX];
    ckpt_report rep;
} check_out;

static void check_file(void *argp, void *outp) {
    const check_args *a = argp;
    check_out *out = outp;
    memset(out, 0, sizeof *out);
    ckpt_report *rep = &out->rep;
    ckpt_ctx c, *cx = &c;
    ckpt_ctx_init_local(cx, a->path, a->expect ? "incompatible checkpoint" : "checkpoint fails verification",
                        a->expect ? "this model expects" : "its header implies");
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    sm_table from_layout, listed;
    model_list *ml = NULL;
    char *buf = NULL;
    size_t cap = 0;
    hsize_t (*chunks)[SM_MAX_DIMS] = NULL;
    out->stage = 1;
    // 1. the header: ours, a version we read, values in range
    if (ckpt_read_meta_local(cx, a->path, &rep->meta, &rep->file_bytes) != 0) goto done;
    rep->meta_ok = 1;
    if (a->header_only) {
        out->stage = 0;
        goto done;
    }
    const sm_table *t = a->expect;
    if (!t && a->layout) {
        char why[CKPT_ERR_MAX];
        if (a->layout(&rep->meta.cfg, &from_layout, why, sizeof why) != 0) {
            ckpt_fail(cx, "checkpoint header is invalid: %s", why);
            goto done;
        }
        t = &from_layout;
    }
    out->stage = 2;
    CK_H5(fapl = H5Pcreate(H5P_FILE_ACCESS), "cannot open the checkpoint");
    CK_H5(H5Pset_file_locking(fapl, 0, 1), "cannot open the checkpoint");
    file = H5Fopen(a->path, H5F_ACC_RDONLY, fapl);
    CK_H5(file, "cannot open the checkpoint");
    if (!t) {   // structure only: /model's own listing
        hid_t g = H5I_INVALID_HID;
        ml = sm_calloc(1, sizeof *ml);
        memset(&listed, 0, sizeof listed);
        ml->t = &listed;
        ml->cx = cx;
        CK_H5(g = H5Gopen2(file, "/model", H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open /model");
        hsize_t idx = 0;
        herr_t it = H5Literate(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, model_cb, ml);
        if (it < 0 && !cx->msg[0]) {   // creation order not tracked (another writer): by name
            H5Eclear2(H5E_DEFAULT);
            listed.count = 0;
            idx = 0;
            it = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, model_cb, ml);
        }
        H5Gclose(g);
        CK_H5(it, "checkpoint is corrupt: cannot list /model");
        CK(listed.count > 0, "checkpoint is incomplete: /model holds no tensors");
        t = &listed;
    }
    // 2. the structure, before any data is read
    if (expected_datasets(cx, t, rep->meta.world_size, rep) != 0) goto error;
    uint64_t implied = 0;
    for (int i = 0; i < rep->n_datasets; i++)
        implied = implied > UINT64_MAX - rep->d[i].n_bytes ? UINT64_MAX : implied + rep->d[i].n_bytes;
    CK(implied <= rep->file_bytes, "%s: its header implies %llu bytes of tensors, the file holds %llu", cx->mismatch,
       (unsigned long long)implied, (unsigned long long)rep->file_bytes);
    const char *groups[6] = {"/model", "/optim", "/optim/m", "/optim/v", "/state", NULL};
    const int counts[5] = {t->count, 2, t->count, t->count, 1};
    for (int k = 0; groups[k]; k++)
        if (check_group(cx, file, groups[k], counts[k]) != 0) goto error;
    chunks = sm_malloc(sizeof *chunks * (size_t)rep->n_datasets);
    for (int i = 0; i < rep->n_datasets; i++) check_dataset(cx, file, &rep->d[i], chunks[i]);
    for (int i = 0; i < rep->n_datasets; i++) rep->n_bad += !rep->d[i].ok;
    // 3. the data: this part's datasets, each chunk once, every value checked
    for (int i = 0; rep->n_bad == 0 && a->n_parts > 0 && i < rep->n_datasets; i++)
        if (i % a->n_parts == a->part) {
            read_dataset(file, &rep->d[i], chunks[i], &buf, &cap);
            rep->n_bad += !rep->d[i].ok;
        }
    for (int i = 0; i < rep->n_datasets; i++)
        if (!rep->d[i].ok) {
            int checksum = strstr(rep->d[i].reason, "Fletcher32 checksum") && !strstr(rep->d[i].reason, "has no");
            ckpt_fail(cx, "%s: %s %s (%d of %d datasets fail verification)",
                      checksum ? "checkpoint is corrupt" : cx->mismatch, rep->d[i].name, rep->d[i].reason, rep->n_bad,
                      rep->n_datasets);
            goto error;
        }
    out->stage = 0;
error:
done:
    if (file >= 0) H5Fclose(file);
    if (fapl >= 0) H5Pclose(fapl);
    sm_free(chunks);
    sm_free(buf);
    sm_free(ml);
    _Static_assert(sizeof out->msg == sizeof cx->msg, "one message size");
    if (out->stage) memcpy(out->msg, cx->msg[0] ? cx->msg : "checkpoint error", cx->msg[0] ? sizeof out->msg : 17);
}

int ckpt_check_local(const char *path, const sm_table *expect, ckpt_layout_fn layout, int header_only, int part,
                     int n_parts, ckpt_check_result *res) {
    check_args a = {.path = path, .expect = expect, .layout = layout, .header_only = header_only, .part = part,
                    .n_parts = n_parts};
    check_out *out = sm_malloc(sizeof *out);
    uint64_t size = 0;
    char why[400];
    int fd = sm_open_regular(path, O_RDONLY, "the checkpoint", &size, why, sizeof why);   // for the time limit
    if (fd >= 0) close(fd);
    if (ckpt_contained(check_file, &a, out, sizeof *out, size, why, sizeof why) != 0) {
        memset(out, 0, sizeof *out);
        out->stage = 1;
        snprintf(out->msg, sizeof out->msg, "checkpoint is damaged: %s (%.500s)", why, path);
    }
    res->stage = out->stage;
    snprintf(res->msg, sizeof res->msg, "%s", out->msg);
    if (res->rep) *res->rep = out->rep;
    sm_free(out);
    return res->stage ? -1 : 0;
}

// ---------------------------------------------------------------------------
// Collective verify: every rank checks the structure and reads its share of the datasets.
int ckpt_verify(const char *path, ckpt_layout_fn layout, ckpt_report *rep_in, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, path) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_report *rep = rep_in ? rep_in : sm_malloc(sizeof *rep);
    ckpt_report *mine = sm_malloc(sizeof *mine);
    ckpt_check_result res = {.rep = mine};
    int rc = -1, n;
    int *first = NULL;
    ckpt_check_local(path, NULL, layout, 0, cx->rank, cx->world, &res);
    // the header and the structure are the same everywhere; a crash may not be
    if (ckpt_agree(cx, res.stage == 1 ? ckpt_fail_msg(cx, res.msg) : 0) != 0) {
        *rep = *mine;   // what this rank found of the header
        goto done;
    }
    *rep = *mine;
    comm_bcast_bytes(rep, sizeof *rep, 0);
    n = rep->n_datasets;
    first = sm_malloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) first[i] = mine->d[i].ok ? INT_MAX : cx->rank;
    if (n) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, first, n, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    rep->n_bad = 0;
    for (int i = 0; i < n; i++) {
        if (first[i] == INT_MAX) {
            rep->d[i].ok = 1;
            rep->d[i].reason[0] = '\0';
            continue;
        }
        if (cx->rank == first[i]) snprintf(rep->d[i].reason, sizeof rep->d[i].reason, "%s", mine->d[i].reason);
        MPI_CHECK(MPI_Bcast(rep->d[i].reason, (int)sizeof rep->d[i].reason, MPI_CHAR, first[i], MPI_COMM_WORLD));
        rep->d[i].ok = 0;
        rep->n_bad++;
    }
    // the verdict: the lowest failing rank's message (a data failure is found by its reader only)
    if (ckpt_agree(cx, res.stage ? ckpt_fail_msg(cx, res.msg) : 0) != 0) goto done;
    rc = 0;
done:
    sm_free(first);
    sm_free(mine);
    if (!rep_in) sm_free(rep);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}
