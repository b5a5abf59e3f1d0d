// h5util.c — checkpoint plumbing: errors, rank agreement, chunks, selections, attributes, metadata.
// One-line errors, agreement across ranks, chunk shapes and flat-range selections, attributes,
// and reading a checkpoint's metadata.
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt_internal.h"

// ---------------------------------------------------------------------------
// Context and messages
int ckpt_ctx_init(ckpt_ctx *cx, const char *where) {
    memset(cx, 0, sizeof *cx);
    snprintf(cx->where, sizeof cx->where, "%s", where ? where : "?");
    cx->world = 1;
    int up = 0;
    MPI_Initialized(&up);
    if (!up) {
        ckpt_fail(cx, "checkpoints need MPI: call comm_init() first");
        return -1;
    }
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &cx->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &cx->world));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   // failures become our one-line messages
    return 0;
}

int ckpt_ctx_finish(ckpt_ctx *cx, int rc, char *err, size_t errlen) {
    if (rc < 0 && err && errlen) snprintf(err, errlen, "%s", cx->msg[0] ? cx->msg : "checkpoint error");
    return rc;
}

// snprintf whose truncation is intended (messages are capped at CKPT_ERR_MAX)
static void put(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
}

static void vfail(ckpt_ctx *cx, const char *detail, const char *fmt, va_list ap) {
    if (cx->msg[0]) return;   // the first failure is the one to report
    char what[CKPT_ERR_MAX];
    vsnprintf(what, sizeof what, fmt, ap);
    if (detail)
        put(cx->msg, sizeof cx->msg, "%s: %s (%s)", what, detail, cx->where);
    else
        put(cx->msg, sizeof cx->msg, "%s (%s)", what, cx->where);
}

void ckpt_fail(ckpt_ctx *cx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(cx, NULL, fmt, ap);
    va_end(ap);
}

// H5Ewalk2 callback: walking downward from the API call, the last entry seen is the root cause.
static herr_t innermost(unsigned n, const H5E_error2_t *e, void *out) {
    (void)n;
    if (e->desc && e->desc[0]) snprintf((char *)out, 512, "%s", e->desc);
    return 0;
}

void ckpt_h5_reason(char *out, size_t cap) {
    char reason[512] = "unknown HDF5 error";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, reason);
    H5Eclear2(H5E_DEFAULT);
    snprintf(out, cap, "%s", reason);
}

void ckpt_fail_h5(ckpt_ctx *cx, const char *fmt, ...) {
    char reason[512];
    ckpt_h5_reason(reason, sizeof reason);
    va_list ap;
    va_start(ap, fmt);
    vfail(cx, reason, fmt, ap);
    va_end(ap);
}

void ckpt_fail_sys(ckpt_ctx *cx, int errnum, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(cx, strerror(errnum), fmt, ap);
    va_end(ap);
}

int ckpt_close_agree(ckpt_ctx *cx, hid_t *file, int local_rc) {
    herr_t closed = H5Fclose(*file);   // collective
    *file = H5I_INVALID_HID;
    if (closed < 0) {
        ckpt_fail_h5(cx, "cannot close the checkpoint");
        local_rc = -1;
    }
    return ckpt_agree(cx, local_rc);
}

int ckpt_agree(ckpt_ctx *cx, int local_rc) {
    int mine = local_rc == 0 ? INT_MAX : cx->rank, first = INT_MAX;
    MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    if (first == INT_MAX) return 0;
    if (cx->rank == first && !cx->msg[0]) put(cx->msg, sizeof cx->msg, "checkpoint error (%s)", cx->where);
    MPI_CHECK(MPI_Bcast(cx->msg, (int)sizeof cx->msg, MPI_CHAR, first, MPI_COMM_WORLD));
    cx->msg[sizeof cx->msg - 1] = '\0';
    return -1;
}

void ckpt_bcast(void *buf, size_t n_bytes) {
    char *p = buf;
    while (n_bytes > 0) {
        int chunk = n_bytes > (1u << 30) ? (1 << 30) : (int)n_bytes;
        MPI_CHECK(MPI_Bcast(p, chunk, MPI_BYTE, 0, MPI_COMM_WORLD));
        p += chunk;
        n_bytes -= (size_t)chunk;
    }
}

void ckpt_close_all(hid_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0) continue;
        switch (H5Iget_type(ids[i])) {
        case H5I_FILE: H5Fclose(ids[i]); break;
        case H5I_GROUP: H5Gclose(ids[i]); break;
        case H5I_DATASET: H5Dclose(ids[i]); break;
        case H5I_DATASPACE: H5Sclose(ids[i]); break;
        case H5I_DATATYPE: H5Tclose(ids[i]); break;
        case H5I_ATTR: H5Aclose(ids[i]); break;
        case H5I_GENPROP_LST: H5Pclose(ids[i]); break;
        default: break;
        }
        ids[i] = H5I_INVALID_HID;
    }
}

// ---------------------------------------------------------------------------
// Shapes, chunks and selections
void ckpt_shape_init(ckpt_shape *s, int ndim, const hsize_t *dims, hsize_t chunk_floats) {
    memset(s, 0, sizeof *s);
    s->ndim = ndim;
    s->n = 1;
    for (int d = 0; d < ndim; d++) {
        s->dims[d] = dims[d];
        s->n *= dims[d];
    }
    if (chunk_floats < 1) chunk_floats = 1;
    // trailing dimensions whole while they fit, then one dimension cut, leading ones 1
    hsize_t prod = 1;
    int d = ndim - 1;
    for (; d >= 0; d--) {
        hsize_t dim = dims[d] ? dims[d] : 1;
        if (prod * dim > chunk_floats) break;
        s->chunk[d] = dim;
        prod *= dim;
    }
    if (d >= 0) {
        // blocks of equal size: filtered edge chunks are stored whole, so a ragged last block wastes space
        hsize_t c = chunk_floats / prod ? chunk_floats / prod : 1, blocks = (dims[d] + c - 1) / c;
        s->chunk[d] = (dims[d] + blocks - 1) / blocks;
        for (int k = 0; k < d; k++) s->chunk[k] = 1;
    }
}

// Units are the chunks in flat order: `outer` leading rows, each cut along dimension p into
// per_row blocks of chunk[p] (the last shorter).
static void chunk_units(const ckpt_shape *s, int *p, hsize_t *per_row, hsize_t *inner, hsize_t *units) {
    int pd = 0;
    for (int d = 0; d < s->ndim; d++)
        if (s->chunk[d] != s->dims[d]) {
            pd = d;
            break;
        }
    hsize_t in = 1, outer = 1;
    for (int d = pd + 1; d < s->ndim; d++) in *= s->dims[d];
    for (int d = 0; d < pd; d++) outer *= s->dims[d];
    hsize_t c = s->chunk[pd] ? s->chunk[pd] : 1;
    *p = pd;
    *inner = in;
    *per_row = (s->dims[pd] + c - 1) / c;
    *units = outer * *per_row;
}

static hsize_t unit_start(const ckpt_shape *s, int p, hsize_t per_row, hsize_t inner, hsize_t units, hsize_t k) {
    if (k >= units) return s->n;
    hsize_t rowlen = s->dims[p] * inner;
    return (k / per_row) * rowlen + (k % per_row) * s->chunk[p] * inner;
}

void ckpt_chunk_split(const ckpt_shape *s, int part, int n_parts, hsize_t *lo, hsize_t *hi) {
    int p;
    hsize_t per_row, inner, units;
    chunk_units(s, &p, &per_row, &inner, &units);
    if (s->n == 0 || units == 0) {
        *lo = *hi = 0;
        return;
    }
    hsize_t k0 = units * (hsize_t)part / (hsize_t)n_parts, k1 = units * (hsize_t)(part + 1) / (hsize_t)n_parts;
    *lo = unit_start(s, p, per_row, inner, units, k0);
    *hi = unit_start(s, p, per_row, inner, units, k1);
}

static int select_box(hid_t space, const hsize_t *start, const hsize_t *count, int *first) {
    if (H5Sselect_hyperslab(space, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count, NULL) < 0) return -1;
    *first = 0;
    return 0;
}

// Flat range [a, b) of the sub-array spanned by dimensions d.. at the position start[0..d-1].
static int select_rec(hid_t space, const ckpt_shape *s, int d, hsize_t *start, hsize_t a, hsize_t b, int *first) {
    if (a >= b) return 0;
    hsize_t count[SM_MAX_DIMS], st[SM_MAX_DIMS];
    if (d == s->ndim - 1) {
        for (int k = 0; k < s->ndim; k++) {
            st[k] = k < d ? start[k] : a;
            count[k] = k < d ? 1 : b - a;
        }
        return select_box(space, st, count, first);
    }
    hsize_t inner = 1;
    for (int k = d + 1; k < s->ndim; k++) inner *= s->dims[k];
    hsize_t ra = a / inner, rb = b / inner;
    if (a % inner) {   // a partial first row
        start[d] = ra;
        if (ra == rb) return select_rec(space, s, d + 1, start, a % inner, b % inner, first);
        if (select_rec(space, s, d + 1, start, a % inner, inner, first) < 0) return -1;
        ra++;
    }
    if (rb > ra) {   // whole rows
        for (int k = 0; k < s->ndim; k++) {
            st[k] = k < d ? start[k] : k == d ? ra : 0;
            count[k] = k < d ? 1 : k == d ? rb - ra : s->dims[k];
        }
        if (select_box(space, st, count, first) < 0) return -1;
    }
    if (b % inner) {   // a partial last row
        start[d] = rb;
        if (select_rec(space, s, d + 1, start, 0, b % inner, first) < 0) return -1;
    }
    return 0;
}

int ckpt_select_flat(hid_t space, const ckpt_shape *s, hsize_t a, hsize_t b) {
    if (b > s->n) b = s->n;
    if (a >= b) return H5Sselect_none(space) < 0 ? -1 : 0;
    hsize_t start[SM_MAX_DIMS] = {0};
    int first = 1;
    return select_rec(space, s, 0, start, a, b, &first);
}

void ckpt_shape_str(char *out, size_t cap, int ndim, const hsize_t *dims) {
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, d ? ", %llu" : "%llu", (unsigned long long)dims[d]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

hid_t ckpt_fapl_mpio(int writing) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return H5I_INVALID_HID;
    if (H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL) < 0) goto error;
    // Superblock v2 and v2 object headers: all metadata checksummed; readable by HDF5 >= 1.8
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110) < 0) goto error;
    // Collective metadata only when every rank makes the same calls (writing). A reader's
    // ranks read different raw data, and chunk-index lookups must then stay independent.
    if (writing && (H5Pset_all_coll_metadata_ops(fapl, 1) < 0 || H5Pset_coll_metadata_write(fapl, 1) < 0)) goto error;
    return fapl;
error:
    H5Pclose(fapl);
    return H5I_INVALID_HID;
}

// ---------------------------------------------------------------------------
// Attributes
int ckpt_attr_write(ckpt_ctx *cx, hid_t obj, const char *name, hid_t file_type, hid_t mem_type, const void *val) {
    hid_t ids[2] = {H5I_INVALID_HID, H5I_INVALID_HID};   // space, attr
    int rc = -1;
    CK_H5(ids[0] = H5Screate(H5S_SCALAR), "cannot write attribute '%s'", name);
    CK_H5(ids[1] = H5Acreate2(obj, name, file_type, ids[0], H5P_DEFAULT, H5P_DEFAULT), "cannot create attribute '%s'",
          name);
    CK_H5(H5Awrite(ids[1], mem_type, val), "cannot write attribute '%s'", name);
    rc = 0;
error:
    ckpt_close_all(ids, 2);
    return rc;
}

int ckpt_attr_write_str(ckpt_ctx *cx, hid_t obj, const char *name, const char *s) {
    hid_t t = H5I_INVALID_HID;
    int rc = -1;
    // variable-length UTF-8: h5py reads it as a str, h5dump prints it plainly
    CK_H5(t = H5Tcopy(H5T_C_S1), "cannot write attribute '%s'", name);
    CK_H5(H5Tset_size(t, H5T_VARIABLE), "cannot write attribute '%s'", name);
    CK_H5(H5Tset_cset(t, H5T_CSET_UTF8), "cannot write attribute '%s'", name);
    rc = ckpt_attr_write(cx, obj, name, t, t, &s);
error:
    if (t >= 0) H5Tclose(t);
    return rc;
}

// Opens a scalar attribute; -1 with a message if it is missing or not a single value.
static hid_t attr_open(ckpt_ctx *cx, hid_t obj, const char *objname, const char *name) {
    hid_t a = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    htri_t ex;
    CK_H5(ex = H5Aexists(obj, name), "cannot read attribute '%s' of %s", name, objname);
    CK(ex > 0, "not a complete smallmind checkpoint: %s has no attribute '%s'", objname, name);
    CK_H5(a = H5Aopen(obj, name, H5P_DEFAULT), "cannot open attribute '%s' of %s", name, objname);
    CK_H5(sp = H5Aget_space(a), "cannot read attribute '%s' of %s", name, objname);
    hssize_t npoints = H5Sget_simple_extent_npoints(sp);
    CK(npoints == 1, "attribute '%s' of %s holds %lld values, expected 1", name, objname, (long long)npoints);
    H5Sclose(sp);
    return a;
error:
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    return H5I_INVALID_HID;
}

int ckpt_attr_read(ckpt_ctx *cx, hid_t obj, const char *objname, const char *name, hid_t mem_type, void *val) {
    hid_t a = attr_open(cx, obj, objname, name), t = H5I_INVALID_HID;
    int rc = -1;
    if (a < 0) return -1;
    CK_H5(t = H5Aget_type(a), "cannot read attribute '%s' of %s", name, objname);
    H5T_class_t want = H5Tget_class(mem_type), have = H5Tget_class(t);
    CK(have == want, "attribute '%s' of %s has the wrong type (HDF5 class %d, expected %d)", name, objname, (int)have,
       (int)want);
    CK_H5(H5Aread(a, mem_type, val), "cannot read attribute '%s' of %s", name, objname);
    rc = 0;
error:
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

int ckpt_attr_read_str(ckpt_ctx *cx, hid_t obj, const char *objname, const char *name, char *out, size_t cap) {
    hid_t a = attr_open(cx, obj, objname, name), t = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    char *vl = NULL, *fixed = NULL;
    int rc = -1;
    if (a < 0) return -1;
    CK_H5(t = H5Aget_type(a), "cannot read attribute '%s' of %s", name, objname);
    CK(H5Tget_class(t) == H5T_STRING, "attribute '%s' of %s is not a string", name, objname);
    htri_t var = H5Tis_variable_str(t);
    CK_H5(var, "cannot read attribute '%s' of %s", name, objname);
    CK_H5(mt = H5Tcopy(H5T_C_S1), "cannot read attribute '%s' of %s", name, objname);
    // HDF5 converts no string between character sets: read in the file's
    CK_H5(H5Tset_cset(mt, H5Tget_cset(t)), "cannot read attribute '%s' of %s", name, objname);
    if (var) {
        CK_H5(H5Tset_size(mt, H5T_VARIABLE), "cannot read attribute '%s' of %s", name, objname);
        CK_H5(H5Aread(a, mt, &vl), "cannot read attribute '%s' of %s", name, objname);
        CK(vl != NULL, "attribute '%s' of %s is a null string", name, objname);
        CK(strlen(vl) < cap, "attribute '%s' of %s is too long (%zu bytes)", name, objname, strlen(vl));
        snprintf(out, cap, "%s", vl);
    } else {
        size_t n = H5Tget_size(t);
        CK(n > 0 && n < 4096, "attribute '%s' of %s has a bad string size %zu", name, objname, n);
        CK_H5(H5Tset_size(mt, n), "cannot read attribute '%s' of %s", name, objname);
        fixed = sm_calloc(n + 1, 1);
        CK_H5(H5Aread(a, mt, fixed), "cannot read attribute '%s' of %s", name, objname);
        CK(strlen(fixed) < cap, "attribute '%s' of %s is too long (%zu bytes)", name, objname, strlen(fixed));
        snprintf(out, cap, "%s", fixed);
    }
    rc = 0;
error:
    if (vl) H5free_memory(vl);
    sm_free(fixed);
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

// ---------------------------------------------------------------------------
// Metadata
static int read_meta_attrs(ckpt_ctx *cx, hid_t file, ckpt_meta *meta) {
    hid_t g = H5I_INVALID_HID;
    int rc = -1, version = 0;
    char format[128] = "";
    htri_t ex;
    memset(meta, 0, sizeof *meta);
    CK_H5(ex = H5Aexists(file, "format"), "cannot read the attributes of /");
    CK(ex > 0, "not a smallmind checkpoint: an HDF5 file without the 'format' attribute at /");
    if (ckpt_attr_read_str(cx, file, "/", "format", format, sizeof format) != 0) goto error;
    CK(strcmp(format, CKPT_FORMAT_NAME) == 0, "not a smallmind checkpoint: format is '%s', expected '%s'", format,
       CKPT_FORMAT_NAME);
    if (ckpt_attr_read(cx, file, "/", "format_version", H5T_NATIVE_INT, &version) != 0) goto error;
    CK(version <= CKPT_FORMAT_VERSION, "checkpoint format_version %d is newer than this smallmind reads (%d)", version,
       CKPT_FORMAT_VERSION);
    CK(version >= 1, "checkpoint has an invalid format_version %d", version);

    sm_model_config *c = &meta->cfg;
    struct { const char *name; hid_t type; void *p; } root[] = {
        {"step", H5T_NATIVE_INT, &meta->step},
        {"tokens_seen", H5T_NATIVE_UINT64, &meta->tokens_seen},
        {"world_size", H5T_NATIVE_INT, &meta->world_size},
        {"n_layer", H5T_NATIVE_INT, &c->n_layer},
        {"n_head", H5T_NATIVE_INT, &c->n_head},
        {"n_embd", H5T_NATIVE_INT, &c->n_embd},
        {"max_seq_len", H5T_NATIVE_INT, &c->max_seq_len},
        {"vocab_size", H5T_NATIVE_INT, &c->vocab_size},
        {"padded_vocab_size", H5T_NATIVE_INT, &c->padded_vocab_size},
    };
    for (size_t i = 0; i < sizeof root / sizeof root[0]; i++)
        if (ckpt_attr_read(cx, file, "/", root[i].name, root[i].type, root[i].p) != 0) goto error;
    if (ckpt_attr_read_str(cx, file, "/", "tokenizer", c->tokenizer, sizeof c->tokenizer) != 0) goto error;
    CK(meta->step >= 0 && meta->world_size >= 1, "checkpoint metadata is invalid: step %d, world_size %d", meta->step,
       meta->world_size);

    CK_H5(g = H5Gopen2(file, "/optim", H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open /optim");
    ckpt_optim *o = &meta->optim;
    struct { const char *name; hid_t type; void *p; } optim[] = {
        {"lr", H5T_NATIVE_DOUBLE, &o->lr},
        {"min_lr", H5T_NATIVE_DOUBLE, &o->min_lr},
        {"beta1", H5T_NATIVE_DOUBLE, &o->beta1},
        {"beta2", H5T_NATIVE_DOUBLE, &o->beta2},
        {"eps", H5T_NATIVE_DOUBLE, &o->eps},
        {"weight_decay", H5T_NATIVE_DOUBLE, &o->weight_decay},
        {"warmup", H5T_NATIVE_INT, &o->warmup},
        {"total_steps", H5T_NATIVE_INT, &o->total_steps},
    };
    for (size_t i = 0; i < sizeof optim / sizeof optim[0]; i++)
        if (ckpt_attr_read(cx, g, "/optim", optim[i].name, optim[i].type, optim[i].p) != 0) goto error;
    H5Gclose(g);
    CK_H5(g = H5Gopen2(file, "/state", H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open /state");
    if (ckpt_attr_read(cx, g, "/state", "data_cursor", H5T_NATIVE_UINT64, &meta->data_cursor) != 0) goto error;
    rc = 0;
error:
    if (g >= 0) H5Gclose(g);
    return rc;
}

int ckpt_read_meta_local(ckpt_ctx *cx, const char *path, ckpt_meta *meta, uint64_t *file_bytes) {
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    int rc = -1;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            ckpt_fail(cx, "checkpoint not found");
        else
            ckpt_fail_sys(cx, errno, "cannot access the checkpoint");
        goto error;
    }
    CK(S_ISREG(st.st_mode), "checkpoint is not a regular file");
    CK(st.st_size > 0, "checkpoint is empty (0 bytes): not a smallmind checkpoint");
    if (file_bytes) *file_bytes = (uint64_t)st.st_size;
    htri_t is_h5;
    CK_H5(is_h5 = H5Fis_hdf5(path), "cannot read the checkpoint");
    CK(is_h5 > 0, "not an HDF5 file (no HDF5 signature): not a smallmind checkpoint");
    CK_H5(fapl = H5Pcreate(H5P_FILE_ACCESS), "cannot open the checkpoint");
    // a read-only look needs no lock (and some parallel filesystems refuse flock)
    CK_H5(H5Pset_file_locking(fapl, 0, 1), "cannot open the checkpoint");
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (file < 0) {
        char reason[512];
        ckpt_h5_reason(reason, sizeof reason);
        if (strstr(reason, "truncated"))
            ckpt_fail(cx, "checkpoint is truncated (%s, %lld bytes on disk)", reason, (long long)st.st_size);
        else
            ckpt_fail(cx, "cannot open the checkpoint: %s", reason);
        goto error;
    }
    if (read_meta_attrs(cx, file, meta) != 0) goto error;
    rc = 0;
error:
    if (file >= 0) H5Fclose(file);
    if (fapl >= 0) H5Pclose(fapl);
    return rc;
}

int ckpt_read_meta(const char *path, ckpt_meta *meta, char *err, size_t errlen) {
    ckpt_ctx c, *cx = &c;
    if (ckpt_ctx_init(cx, path) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_meta m;
    memset(&m, 0, sizeof m);
    int rc = cx->rank == 0 ? ckpt_read_meta_local(cx, path, &m, NULL) : 0;
    if (ckpt_agree(cx, rc) != 0) return ckpt_ctx_finish(cx, -1, err, errlen);
    ckpt_bcast(&m, sizeof m);
    *meta = m;
    return 0;
}

int ckpt_config_check(const sm_model_config *f, const sm_model_config *r, const char *path, char *err,
                      size_t errlen) {
    struct { const char *name; int file, run; } v[] = {
        {"n_layer", f->n_layer, r->n_layer},          {"n_head", f->n_head, r->n_head},
        {"n_embd", f->n_embd, r->n_embd},             {"max_seq_len", f->max_seq_len, r->max_seq_len},
        {"vocab_size", f->vocab_size, r->vocab_size}, {"padded_vocab_size", f->padded_vocab_size, r->padded_vocab_size},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i].file != v[i].run) {
            if (err && errlen)
                snprintf(err, errlen, "incompatible checkpoint: model config differs, checkpoint has %s=%d, this run %s=%d (%s)",
                         v[i].name, v[i].file, v[i].name, v[i].run, path);
            return -1;
        }
    if (strcmp(f->tokenizer, r->tokenizer) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "incompatible checkpoint: tokenizer differs, checkpoint has '%s', this run '%s' (%s)",
                     f->tokenizer, r->tokenizer, path);
        return -1;
    }
    return 0;
}
