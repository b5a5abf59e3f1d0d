// format.c — the checkpoint's attributes as one table, walked to write, read, check and print them;
// reading a checkpoint's metadata; comparing model configs.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

#define M(field) offsetof(ckpt_meta, field)
#define CAP(field) sizeof(((ckpt_meta *)0)->field)
// In the order they are written (attribute creation order is tracked, so h5py lists them so).
const ckpt_attr CKPT_ATTRS[] = {
    {"/", "format", CKPT_ATTR_STR, M(format), CAP(format), "", 0},
    {"/", "format_version", CKPT_ATTR_I32, M(format_version), 0, "", 0},
    {"/", "step", CKPT_ATTR_I32, M(step), 0, "", 0},
    {"/", "tokens_seen", CKPT_ATTR_U64, M(tokens_seen), 0, "", 0},
    {"/", "world_size", CKPT_ATTR_I32, M(world_size), 0, "", 0},
    {"/", "n_layer", CKPT_ATTR_I32, M(cfg.n_layer), 0, "config", 0},
    {"/", "n_head", CKPT_ATTR_I32, M(cfg.n_head), 0, "config", 0},
    {"/", "n_embd", CKPT_ATTR_I32, M(cfg.n_embd), 0, "config", 0},
    {"/", "max_seq_len", CKPT_ATTR_I32, M(cfg.max_seq_len), 0, "config", 0},
    {"/", "vocab_size", CKPT_ATTR_I32, M(cfg.vocab_size), 0, "config", 0},
    {"/", "padded_vocab_size", CKPT_ATTR_I32, M(cfg.padded_vocab_size), 0, "config", 0},
    {"/", "tokenizer", CKPT_ATTR_STR, M(cfg.tokenizer), CAP(cfg.tokenizer), "config", 0},
    {"/", "parent", CKPT_ATTR_STR, M(parent), CAP(parent), "", 1},
    {"/", "run_options", CKPT_ATTR_STR, M(run_options), CAP(run_options), "run", 1},
    {"/optim", "lr", CKPT_ATTR_F64, M(optim.lr), 0, "optim", 0},
    {"/optim", "min_lr", CKPT_ATTR_F64, M(optim.min_lr), 0, "optim", 0},
    {"/optim", "beta1", CKPT_ATTR_F64, M(optim.beta1), 0, "optim", 0},
    {"/optim", "beta2", CKPT_ATTR_F64, M(optim.beta2), 0, "optim", 0},
    {"/optim", "eps", CKPT_ATTR_F64, M(optim.eps), 0, "optim", 0},
    {"/optim", "weight_decay", CKPT_ATTR_F64, M(optim.weight_decay), 0, "optim", 0},
    {"/optim", "warmup", CKPT_ATTR_I32, M(optim.warmup), 0, "optim", 0},
    {"/optim", "total_steps", CKPT_ATTR_I32, M(optim.total_steps), 0, "optim", 0},
    {"/optim", "schedule_position", CKPT_ATTR_I32, M(optim.schedule_position), 0, "optim", 0},
    {"/state", "data_cursor", CKPT_ATTR_U64, M(data_cursor), 0, "", 0},
};
const int CKPT_N_ATTRS = (int)(sizeof CKPT_ATTRS / sizeof CKPT_ATTRS[0]);
#undef M
#undef CAP

static const void *attr_ptr(const ckpt_attr *a, const ckpt_meta *m) { return (const char *)m + a->offset; }

void ckpt_attr_format(const ckpt_attr *a, const ckpt_meta *m, int json, char *out, size_t cap) {
    const void *p = attr_ptr(a, m);
    switch (a->type) {
    case CKPT_ATTR_I32: snprintf(out, cap, "%d", *(const int *)p); break;
    case CKPT_ATTR_U64: snprintf(out, cap, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case CKPT_ATTR_F64: {
        double x = *(const double *)p;
        if (json && !isfinite(x)) snprintf(out, cap, "null");   // JSON has no NaN or Inf
        else snprintf(out, cap, json ? "%.17g" : "%g", x);
        break;
    }
    case CKPT_ATTR_STR: {
        const char *s = p;
        size_t n = 0;
        if (!json) {
            snprintf(out, cap, "%s", s[0] ? s : "\"\"");
            break;
        }
        for (; *s && n + 8 < cap; s++) {   // quoted, with " \ and control characters escaped
            unsigned char ch = (unsigned char)*s;
            if (n == 0) out[n++] = '"';
            if (ch == '"' || ch == '\\') n += (size_t)snprintf(out + n, cap - n, "\\%c", ch);
            else if (ch < 0x20) n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
            else out[n++] = (char)ch;
        }
        if (n == 0) out[n++] = '"';
        snprintf(out + n, cap - n, "\"");
        break;
    }
    }
}

// ---------------------------------------------------------------------------
// Writing: every rank makes the same calls with rank 0's values (collective metadata).
int ckpt_attrs_write(ckpt_ctx *cx, hid_t file, const ckpt_meta *meta) {
    hid_t g = H5I_INVALID_HID;
    const char *open_group = NULL;
    int rc = -1;
    for (int i = 0; i < CKPT_N_ATTRS; i++) {
        const ckpt_attr *a = &CKPT_ATTRS[i];
        if (!open_group || strcmp(open_group, a->group) != 0) {
            if (g >= 0) H5Gclose(g);
            CK_H5(g = H5Gopen2(file, a->group, H5P_DEFAULT), "cannot open group %s", a->group);
            open_group = a->group;
        }
        if (ckpt_attr_write(cx, g, a->name, a->type, attr_ptr(a, meta)) != 0) goto error;
    }
    rc = 0;
error:
    if (g >= 0) H5Gclose(g);
    return rc;
}

// ---------------------------------------------------------------------------
// Reading, with the checks a reader must make before trusting the values.
static int check_attr(ckpt_ctx *cx, const ckpt_attr *a, const ckpt_meta *m) {
    if (a->offset == offsetof(ckpt_meta, format))
        CK(strcmp(m->format, CKPT_FORMAT_NAME) == 0, "not a smallmind checkpoint: format is '%s', expected '%s'",
           m->format, CKPT_FORMAT_NAME);
    if (a->offset == offsetof(ckpt_meta, format_version)) {
        CK(m->format_version <= CKPT_FORMAT_VERSION, "checkpoint format_version %d is newer than this smallmind reads (%d)",
           m->format_version, CKPT_FORMAT_VERSION);
        CK(m->format_version >= 1, "checkpoint has an invalid format_version %d", m->format_version);
    }
    if (a->offset == offsetof(ckpt_meta, world_size))
        CK(m->step >= 0 && m->world_size >= 1, "checkpoint metadata is invalid: step %d, world_size %d", m->step,
           m->world_size);
    if (a->type == CKPT_ATTR_F64) {
        double x = *(const double *)attr_ptr(a, m);
        CK(isfinite(x), "checkpoint metadata is invalid: %s %s is %g", a->group, a->name, x);
    }
    if (a->offset == offsetof(ckpt_meta, parent)) {
        int step = 0;
        CK(!m->parent[0] || ckpt_name_parse(m->parent, &step) == CKPT_NAME_CKPT,
           "checkpoint metadata is invalid: parent '%s' is not a checkpoint's file name", m->parent);
    }
    if (a->offset == offsetof(ckpt_meta, optim.schedule_position))
        CK(m->optim.schedule_position == m->step, "checkpoint metadata is invalid: schedule_position %d, step %d",
           m->optim.schedule_position, m->step);
    return 0;
error:
    return -1;
}

static int read_meta_attrs(ckpt_ctx *cx, hid_t file, ckpt_meta *meta) {
    hid_t g = H5I_INVALID_HID;
    const char *open_group = NULL;
    int rc = -1;
    htri_t ex;
    memset(meta, 0, sizeof *meta);
    CK_H5(ex = H5Aexists(file, "format"), "cannot read the attributes of /");
    CK(ex > 0, "not a smallmind checkpoint: an HDF5 file without the 'format' attribute at /");
    for (int i = 0; i < CKPT_N_ATTRS; i++) {
        const ckpt_attr *a = &CKPT_ATTRS[i];
        if (!open_group || strcmp(open_group, a->group) != 0) {
            if (g >= 0) H5Gclose(g);
            CK_H5(g = H5Gopen2(file, a->group, H5P_DEFAULT), "not a complete smallmind checkpoint: cannot open %s",
                  a->group);
            open_group = a->group;
        }
        if (a->optional) {
            CK_H5(ex = H5Aexists(g, a->name), "cannot read the attributes of %s", a->group);
            if (a->offset == offsetof(ckpt_meta, parent)) meta->has_parent = ex > 0;
            if (!ex) continue;
        }
        if (ckpt_attr_read(cx, g, a->group, a->name, a->type, (char *)meta + a->offset, a->cap) != 0) goto error;
        if (check_attr(cx, a, meta) != 0) goto error;
    }
    rc = 0;
error:
    if (g >= 0) H5Gclose(g);
    return rc;
}

int ckpt_read_meta_local(ckpt_ctx *cx, const char *path, ckpt_meta *meta, uint64_t *file_bytes) {
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    int rc = -1;
    uint64_t size = 0;
    char why[512];
    // opened without blocking and checked to be a regular file before HDF5 opens it by name
    int fd = sm_open_regular(path, O_RDONLY, "the checkpoint", &size, why, sizeof why);
    if (fd < 0) {
        struct stat st;
        if (stat(path, &st) != 0 && errno == ENOENT)
            ckpt_fail(cx, "checkpoint not found");
        else
            ckpt_fail(cx, "%s", why);
        goto error;
    }
    close(fd);
    CK(size > 0, "checkpoint is empty (0 bytes): not a smallmind checkpoint");
    if (file_bytes) *file_bytes = size;
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
            ckpt_fail(cx, "checkpoint is truncated (%s, %llu bytes on disk)", reason, (unsigned long long)size);
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
    ckpt_report *rep = sm_calloc(1, sizeof *rep);
    ckpt_check_result res = {.rep = rep};
    int rc = cx->rank == 0 ? ckpt_check_local(path, NULL, NULL, 1, 0, 0, &res) : 0;
    if (ckpt_agree(cx, rc ? ckpt_fail_msg(cx, res.msg) : 0) == 0) {
        comm_bcast_bytes(&rep->meta, sizeof rep->meta, 0);
        *meta = rep->meta;
        rc = 0;
    } else {
        rc = -1;
    }
    sm_free(rep);
    return ckpt_ctx_finish(cx, rc, err, errlen);
}

int ckpt_config_check(const sm_model_config *f, const sm_model_config *r, const char *path, char *err,
                      size_t errlen) {
    // the config's rows of the attribute table, compared as stored
    ckpt_meta mf, mr;
    memset(&mf, 0, sizeof mf);
    memset(&mr, 0, sizeof mr);
    mf.cfg = *f;
    mr.cfg = *r;
    for (int i = 0; i < CKPT_N_ATTRS; i++) {
        const ckpt_attr *a = &CKPT_ATTRS[i];
        if (strcmp(a->section, "config") != 0) continue;
        char have[64], want[64];
        ckpt_attr_format(a, &mf, 0, have, sizeof have);
        ckpt_attr_format(a, &mr, 0, want, sizeof want);
        if (strcmp(have, want) == 0) continue;
        if (err && errlen) {
            if (a->type == CKPT_ATTR_STR)
                snprintf(err, errlen, "incompatible checkpoint: %s differs, checkpoint has '%s', this run '%s' (%s)",
                         a->name, have, want, path);
            else
                snprintf(err, errlen,
                         "incompatible checkpoint: model config differs, checkpoint has %s=%s, this run %s=%s (%s)",
                         a->name, have, a->name, want, path);
        }
        return -1;
    }
    return 0;
}
