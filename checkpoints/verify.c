// verify.c — checkpoint verification: every chunk's checksum, the datasets' structure.
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

#define VERIFY_BUF_BYTES ((size_t)16 << 20)   // read in boxes of whole chunks of ~16 MiB at most

static const char *const GROUPS[] = {"/model", "/optim/m", "/optim/v", "/state"};
enum { N_GROUPS = 4 };

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

typedef struct {
    ckpt_report *rep;
    ckpt_ctx *cx;
    const char *group;
} list_ctx;

static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    list_ctx *lc = op;
    (void)info;
    H5O_info_t oi;
    if (H5Oget_info_by_name2(g, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
        ckpt_fail_h5(lc->cx, "checkpoint is corrupt: cannot read %s/%s", lc->group, name);
        return -1;
    }
    if (oi.type != H5O_TYPE_DATASET) return 0;
    if (lc->rep->n_datasets == CKPT_MAX_DATASETS) {
        ckpt_fail(lc->cx, "checkpoint holds more than %d datasets", CKPT_MAX_DATASETS);
        return -1;
    }
    ckpt_dataset_report *d = &lc->rep->d[lc->rep->n_datasets++];
    memset(d, 0, sizeof *d);
    d->ok = 1;
    snprintf(d->name, sizeof d->name, "%s/%s", lc->group, name);
    return 0;
}

// The datasets of the format's groups, in creation order (the model's) where it is tracked.
static int list_datasets(ckpt_ctx *cx, hid_t file, ckpt_report *rep) {
    hid_t g = H5I_INVALID_HID;
    for (int k = 0; k < N_GROUPS; k++) {
        CK_H5(g = H5Gopen2(file, GROUPS[k], H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open %s",
              GROUPS[k]);
        list_ctx lc = {rep, cx, GROUPS[k]};
        int first = rep->n_datasets;
        hsize_t idx = 0;
        herr_t it = H5Literate(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, list_cb, &lc);
        if (it < 0 && !cx->msg[0]) {   // creation order not tracked (another writer): by name
            H5Eclear2(H5E_DEFAULT);
            rep->n_datasets = first;
            idx = 0;
            it = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, list_cb, &lc);
        }
        CK_H5(it, "checkpoint is corrupt: cannot list %s", GROUPS[k]);
        H5Gclose(g);
        g = H5I_INVALID_HID;
    }
    return 0;
error:
    if (g >= 0) H5Gclose(g);
    return -1;
}

// Metadata of one dataset (every rank makes the same calls and gets the same answers): shape,
// sizes, chunking, checksum filter, type. Problems become the dataset's verdict.
static void inspect_dataset(hid_t file, ckpt_dataset_report *d, ckpt_shape *s) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset space dcpl type
    hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
    const char *what = "cannot open";
    memset(s, 0, sizeof *s);
    if ((ids[0] = H5Dopen2(file, d->name, H5P_DEFAULT)) < 0) goto h5_error;
    what = "cannot read its shape";
    if ((ids[1] = H5Dget_space(ids[0])) < 0) goto h5_error;
    int ndim = H5Sget_simple_extent_ndims(ids[1]);
    if (ndim < 1 || ndim > SM_MAX_DIMS || H5Sget_simple_extent_dims(ids[1], dims, NULL) != ndim) {
        H5Eclear2(H5E_DEFAULT);
        bad(d, "has %d dimensions, expected 1 to %d", ndim, SM_MAX_DIMS);
        goto done;
    }
    what = "cannot read its type";
    if ((ids[3] = H5Dget_type(ids[0])) < 0) goto h5_error;
    size_t elem = H5Tget_size(ids[3]);
    H5T_class_t cls = H5Tget_class(ids[3]);
    d->ndim = ndim;
    d->n_bytes = elem;
    for (int k = 0; k < ndim; k++) {
        d->shape[k] = dims[k];
        d->n_bytes *= dims[k];
    }
    d->stored_bytes = H5Dget_storage_size(ids[0]);
    int is_state = strncmp(d->name, "/state/", 7) == 0;
    if (!is_state && !(cls == H5T_FLOAT && elem == 4)) bad(d, "is not float32");
    if (is_state && !(cls == H5T_INTEGER && elem == 8)) bad(d, "is not a 64-bit integer");
    what = "cannot read its layout";
    if ((ids[2] = H5Dget_create_plist(ids[0])) < 0) goto h5_error;
    int chunked = H5Pget_layout(ids[2]) == H5D_CHUNKED;
    unsigned flags = 0, conf = 0;
    size_t nelmts = 0;
    int fletcher = chunked && H5Pget_filter_by_id2(ids[2], H5Z_FILTER_FLETCHER32, &flags, &nelmts, NULL, 0, NULL, &conf) >= 0;
    H5Eclear2(H5E_DEFAULT);   // "filter not found" is an answer, not an error
    if (!fletcher) bad(d, "has no Fletcher32 checksum, so it cannot be verified");
    if (chunked && H5Pget_chunk(ids[2], ndim, chunk) != ndim) {
        bad_h5(d, "cannot read its chunking");
        chunked = 0;
    }
    ckpt_shape_init(s, ndim, dims, 1);
    for (int k = 0; k < ndim; k++) s->chunk[k] = chunked ? chunk[k] : dims[k];
    goto done;
h5_error:
    bad_h5(d, what);
done:
    ckpt_close_all(ids, 4);
}

// Reads the whole dataset in boxes of whole chunks — leading coordinates fixed, a block along
// the cut dimension p, trailing dimensions whole — each into a buffer of the box's shape, so
// every chunk passes through the checksum filter. The verdict goes into d.
static void read_dataset(hid_t file, ckpt_dataset_report *d, const ckpt_shape *s, hid_t dxpl, char **buf,
                         size_t *buf_cap) {
    hid_t ids[4] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset fspace mspace mtype
    hid_t ftype = H5I_INVALID_HID;
    if (s->n == 0) return;
    if ((ids[0] = H5Dopen2(file, d->name, H5P_DEFAULT)) < 0) goto h5_error;
    if ((ids[1] = H5Dget_space(ids[0])) < 0) goto h5_error;
    if ((ftype = H5Dget_type(ids[0])) < 0) goto h5_error;
    ids[3] = H5Tget_native_type(ftype, H5T_DIR_ASCEND);
    H5Tclose(ftype);
    if (ids[3] < 0) goto h5_error;
    size_t elem = H5Tget_size(ids[3]);
    int p = 0;
    for (int k = 0; k < s->ndim; k++)
        if (s->chunk[k] != s->dims[k]) {
            p = k;
            break;
        }
    hsize_t inner = 1, outer = 1, c = s->chunk[p] ? s->chunk[p] : 1;
    for (int k = p + 1; k < s->ndim; k++) inner *= s->dims[k];
    for (int k = 0; k < p; k++) outer *= s->dims[k];
    hsize_t unit_bytes = c * inner * elem, per_box = unit_bytes ? VERIFY_BUF_BYTES / unit_bytes : 1;
    hsize_t rows = (per_box ? per_box : 1) * c;
    if (rows > s->dims[p]) rows = s->dims[p];
    size_t need = (size_t)(rows * inner * elem);
    if (need > *buf_cap) {
        sm_free(*buf);
        *buf = sm_malloc(need);
        *buf_cap = need;
    }
    for (hsize_t o = 0; o < outer; o++) {
        hsize_t start[SM_MAX_DIMS], count[SM_MAX_DIMS], rest = o;
        for (int k = p - 1; k >= 0; k--) {   // unravel o over the leading dimensions
            start[k] = rest % s->dims[k];
            rest /= s->dims[k];
            count[k] = 1;
        }
        for (int k = p + 1; k < s->ndim; k++) {
            start[k] = 0;
            count[k] = s->dims[k];
        }
        for (hsize_t j = 0; j < s->dims[p]; j += rows) {
            start[p] = j;
            count[p] = s->dims[p] - j < rows ? s->dims[p] - j : rows;
            if (H5Sselect_hyperslab(ids[1], H5S_SELECT_SET, start, NULL, count, NULL) < 0) goto h5_error;
            if (ids[2] >= 0) H5Sclose(ids[2]);
            if ((ids[2] = H5Screate_simple(s->ndim, count, NULL)) < 0) goto h5_error;
            if (H5Dread(ids[0], ids[3], ids[2], ids[1], dxpl, *buf) < 0) goto h5_error;
        }
    }
    ckpt_close_all(ids, 4);
    return;
h5_error:
    bad_h5(d, "cannot be read back");
    ckpt_close_all(ids, 4);
}

// /model, /optim/m and /optim/v hold the same tensors with the same shapes; /state/rng exists.
static int check_structure(ckpt_ctx *cx, const ckpt_report *rep) {
    int n_model = 0, n_moment[2] = {0, 0}, rng = 0;
    for (int i = 0; i < rep->n_datasets; i++) {
        const ckpt_dataset_report *d = &rep->d[i];
        if (strcmp(d->name, "/state/rng") == 0) rng = 1;
        if (strncmp(d->name, "/optim/m/", 9) == 0) n_moment[0]++;
        if (strncmp(d->name, "/optim/v/", 9) == 0) n_moment[1]++;
        if (strncmp(d->name, "/model/", 7) != 0) continue;
        n_model++;
        for (int k = 0; k < 2; k++) {
            char want[96];
            snprintf(want, sizeof want, "/optim/%c/%s", k ? 'v' : 'm', d->name + 7);
            const ckpt_dataset_report *o = NULL;
            for (int j = 0; j < rep->n_datasets && !o; j++)
                if (strcmp(rep->d[j].name, want) == 0) o = &rep->d[j];
            CK(o, "checkpoint is incomplete: %s has no moment %s", d->name, want);
            int same = o->ndim == d->ndim;
            for (int q = 0; same && q < d->ndim; q++) same = o->shape[q] == d->shape[q];
            CK(same, "checkpoint is inconsistent: %s and %s differ in shape", d->name, want);
        }
    }
    CK(n_model > 0, "checkpoint is incomplete: /model holds no tensors");
    CK(n_moment[0] == n_model && n_moment[1] == n_model,
       "checkpoint is inconsistent: %d tensors in /model, %d in /optim/m, %d in /optim/v", n_model, n_moment[0],
       n_moment[1]);
    CK(rng, "checkpoint is incomplete: no /state/rng");
    return 0;
error:
    return -1;
}

int ckpt_verify(const char *path, ckpt_report *rep_in, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, path) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_report *rep = rep_in ? rep_in : sm_malloc(sizeof *rep);
    memset(rep, 0, sizeof *rep);
    hid_t fapl = H5I_INVALID_HID, dxpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    ckpt_shape *shapes = NULL;
    int *ok = NULL;
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = -1, local;

    // 1. ours, a version we read (rank 0 reads the metadata)
    local = cx->rank == 0 ? ckpt_read_meta_local(cx, path, &rep->meta, &rep->file_bytes) : 0;
    if (ckpt_agree(cx, local) != 0) goto done;
    comm_bcast_bytes(&rep->meta, sizeof rep->meta, 0);
    comm_bcast_bytes(&rep->file_bytes, sizeof rep->file_bytes, 0);
    rep->meta_ok = 1;

    // 2. every rank opens the file and lists the datasets (the same answers everywhere)
    local = -1;
    CK_H5(fapl = ckpt_fapl_mpio(0), "cannot set up MPI-IO for the checkpoint");
    CK_H5(dxpl = H5Pcreate(H5P_DATASET_XFER), "cannot read the checkpoint");
    CK_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_INDEPENDENT), "cannot read the checkpoint");
    local = 0;
error:
    if (ckpt_agree(cx, local) != 0) goto done;
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);   // collective
    local = 0;
    if (file < 0) {
        ckpt_fail_h5(cx, "cannot open the checkpoint");
        local = -1;
    }
    if (ckpt_agree(cx, local) != 0) goto done;
    if (ckpt_agree(cx, list_datasets(cx, file, rep)) != 0) goto done;

    // 3. metadata of every dataset everywhere; dataset i read back by rank i % world
    int n = rep->n_datasets;
    shapes = sm_malloc(sizeof *shapes * (size_t)(n ? n : 1));
    ok = sm_malloc(sizeof *ok * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        inspect_dataset(file, &rep->d[i], &shapes[i]);
        if (rep->d[i].ok && i % cx->world == cx->rank) read_dataset(file, &rep->d[i], &shapes[i], dxpl, &buf, &buf_cap);
        ok[i] = rep->d[i].ok;
    }
    if (n) MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, ok, n, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    for (int i = 0; i < n; i++) {
        if (ok[i]) continue;
        MPI_CHECK(MPI_Bcast(rep->d[i].reason, (int)sizeof rep->d[i].reason, MPI_CHAR, i % cx->world, MPI_COMM_WORLD));
        rep->d[i].ok = 0;
        rep->n_bad++;
    }
    local = 0;
    if (ckpt_close_agree(cx, &file, local) != 0) goto done;

    // 4. the verdict
    for (int i = 0; i < n; i++)
        if (!rep->d[i].ok) {
            int checksum = strstr(rep->d[i].reason, "Fletcher32 checksum") && !strstr(rep->d[i].reason, "has no");
            ckpt_fail(cx, "checkpoint %s: %s %s (%d of %d datasets fail verification)",
                      checksum ? "is corrupt" : "fails verification", rep->d[i].name, rep->d[i].reason, rep->n_bad, n);
            goto done;   // same on every rank: no agreement needed
        }
    if (check_structure(cx, rep) != 0) goto done;
    rc = 0;
done:
    if (file >= 0) H5Fclose(file);
    if (dxpl >= 0) H5Pclose(dxpl);
    if (fapl >= 0) H5Pclose(fapl);
    sm_free(buf);
    sm_free(ok);
    sm_free(shapes);
    if (!rep_in) sm_free(rep);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}

