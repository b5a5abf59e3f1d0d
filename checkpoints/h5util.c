// h5util.c — checkpoint plumbing: errors, rank agreement, chunks, selections, scalar attributes.
// One-line errors, agreement across ranks, chunk shapes and flat-range selections, and typed
// scalar attributes (the format's table of them is in format.c).
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
    cx->mismatch = "incompatible checkpoint";
    cx->expects = "this model expects";
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   // failures become our one-line messages
    return 0;
}

void ckpt_ctx_init_local(ckpt_ctx *cx, const char *where, const char *mismatch, const char *expects) {
    memset(cx, 0, sizeof *cx);
    snprintf(cx->where, sizeof cx->where, "%s", where ? where : "?");
    cx->world = 1;
    cx->mismatch = mismatch;
    cx->expects = expects;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

int ckpt_fail_msg(ckpt_ctx *cx, const char *msg) {
    if (!cx->msg[0]) snprintf(cx->msg, sizeof cx->msg, "%s", msg);
    return -1;
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
// Scalar attributes
static hid_t attr_file_type(ckpt_attr_type type) {
    switch (type) {
    case CKPT_ATTR_I32: return H5T_STD_I32LE;
    case CKPT_ATTR_U64: return H5T_STD_U64LE;
    case CKPT_ATTR_F64: return H5T_IEEE_F64LE;
    default: return H5I_INVALID_HID;
    }
}

static hid_t attr_mem_type(ckpt_attr_type type) {
    switch (type) {
    case CKPT_ATTR_I32: return H5T_NATIVE_INT;
    case CKPT_ATTR_U64: return H5T_NATIVE_UINT64;
    case CKPT_ATTR_F64: return H5T_NATIVE_DOUBLE;
    default: return H5I_INVALID_HID;
    }
}

int ckpt_attr_write(ckpt_ctx *cx, hid_t obj, const char *name, ckpt_attr_type type, const void *val) {
    hid_t ids[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // space, attr, string type
    hid_t ft = attr_file_type(type), mt = attr_mem_type(type);
    const char *str = val;
    int rc = -1;
    if (type == CKPT_ATTR_STR) {
        // variable-length UTF-8: h5py reads it as a str, h5dump prints it plainly
        CK_H5(ids[2] = H5Tcopy(H5T_C_S1), "cannot write attribute '%s'", name);
        CK_H5(H5Tset_size(ids[2], H5T_VARIABLE), "cannot write attribute '%s'", name);
        CK_H5(H5Tset_cset(ids[2], H5T_CSET_UTF8), "cannot write attribute '%s'", name);
        ft = mt = ids[2];
        val = &str;
    }
    CK_H5(ids[0] = H5Screate(H5S_SCALAR), "cannot write attribute '%s'", name);
    CK_H5(ids[1] = H5Acreate2(obj, name, ft, ids[0], H5P_DEFAULT, H5P_DEFAULT), "cannot create attribute '%s'",
          name);
    CK_H5(H5Awrite(ids[1], mt, val), "cannot write attribute '%s'", name);
    rc = 0;
error:
    ckpt_close_all(ids, 3);
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

static int attr_read_str(ckpt_ctx *cx, hid_t a, hid_t t, const char *objname, const char *name, char *out,
                         size_t cap) {
    hid_t mt = H5I_INVALID_HID;
    char *vl = NULL, *fixed = NULL;
    int rc = -1;
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
    return rc;
}

// Integers are read at 64 bits in the file's signedness and range-checked, so a value that does not
// fit (an int64 n_layer of 2^40, a negative uint64) is refused rather than clamped by HDF5.
static int attr_read_int(ckpt_ctx *cx, hid_t a, hid_t t, const char *objname, const char *name,
                         ckpt_attr_type type, void *val) {
    int rc = -1;
    CK(H5Tget_class(t) == H5T_INTEGER, "attribute '%s' of %s has the wrong type (HDF5 class %d, expected %d)", name,
       objname, (int)H5Tget_class(t), (int)H5T_INTEGER);
    H5T_sign_t sign = H5Tget_sign(t);
    CK_H5(sign, "cannot read attribute '%s' of %s", name, objname);
    if (sign == H5T_SGN_NONE) {
        uint64_t u;
        CK_H5(H5Aread(a, H5T_NATIVE_UINT64, &u), "cannot read attribute '%s' of %s", name, objname);
        CK(type == CKPT_ATTR_U64 || u <= INT_MAX, "attribute '%s' of %s is out of range (%llu)", name, objname,
           (unsigned long long)u);
        if (type == CKPT_ATTR_U64) *(uint64_t *)val = u;
        else *(int *)val = (int)u;
    } else {
        int64_t i;
        CK_H5(H5Aread(a, H5T_NATIVE_INT64, &i), "cannot read attribute '%s' of %s", name, objname);
        CK(type == CKPT_ATTR_U64 ? i >= 0 : i >= INT_MIN && i <= INT_MAX, "attribute '%s' of %s is out of range (%lld)",
           name, objname, (long long)i);
        if (type == CKPT_ATTR_U64) *(uint64_t *)val = (uint64_t)i;
        else *(int *)val = (int)i;
    }
    rc = 0;
error:
    return rc;
}

int ckpt_attr_read(ckpt_ctx *cx, hid_t obj, const char *objname, const char *name, ckpt_attr_type type, void *val,
                   size_t cap) {
    hid_t a = attr_open(cx, obj, objname, name), t = H5I_INVALID_HID;
    int rc = -1;
    if (a < 0) return -1;
    CK_H5(t = H5Aget_type(a), "cannot read attribute '%s' of %s", name, objname);
    if (type == CKPT_ATTR_STR) {
        rc = attr_read_str(cx, a, t, objname, name, val, cap);
    } else if (type == CKPT_ATTR_F64) {
        CK(H5Tget_class(t) == H5T_FLOAT, "attribute '%s' of %s has the wrong type (HDF5 class %d, expected %d)", name,
           objname, (int)H5Tget_class(t), (int)H5T_FLOAT);
        CK_H5(H5Aread(a, H5T_NATIVE_DOUBLE, val), "cannot read attribute '%s' of %s", name, objname);
        rc = 0;
    } else {
        rc = attr_read_int(cx, a, t, objname, name, type, val);
    }
error:
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}
