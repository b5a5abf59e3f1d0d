// layout.c — defines the checkpoint file's layout: the chunk geometry of every dataset, rank 0's serial
// HDF5 pass that creates a checkpoint's groups, attributes and datasets with every chunk allocated but no
// tensor data written (the ranks then write the chunks themselves, chunkio.c), and the chunk table read
// back from a file for a load.
//
// Why: HDF5 1.10.8's collective path for filtered datasets writes every chunk twice (first the filtered
// fill value, when it allocates the chunks collectively, then the data: strace shows a 1.5 GB checkpoint
// costing 3 GB of writes) and funnels the data through MPI-IO's two-phase buffers; saves ran at ~0.35x a
// plain write. Here rank 0 lays the file out through a small file driver (below) that performs every
// write HDF5 makes except the raw-data writes of one placeholder buffer: H5Dwrite_chunk() of that
// placeholder gives each chunk its place and size (chunk bytes + 4, Fletcher32 applied: filter mask 0)
// in the chunk index, and nothing else. The file is an ordinary HDF5 file with Fletcher32-filtered
// chunks: h5py and h5dump read and verify it as before.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_internal.h"

// ---------------------------------------------------------------------------
// Chunk geometry (see ckpt_shape_init: leading dimensions 1, one dimension p cut, trailing ones whole).
// p: the last dimension not whole (0 when the chunk is the whole tensor).
int ckpt_cut_dim(const ckpt_shape *s) {
    for (int d = s->ndim - 1; d >= 0; d--)
        if (s->chunk[d] != s->dims[d]) return d;
    return 0;
}

int ckpt_shape_contiguous(const ckpt_shape *s) {
    int p = ckpt_cut_dim(s);
    for (int d = 0; d < s->ndim; d++) {
        if (s->chunk[d] < 1 || s->chunk[d] > (s->dims[d] ? s->dims[d] : 1)) return 0;
        if (d < p && s->chunk[d] != 1) return 0;
        if (d > p && s->chunk[d] != s->dims[d]) return 0;
    }
    return 1;
}

hsize_t ckpt_n_chunks(const ckpt_shape *s) {
    hsize_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= (s->dims[d] + s->chunk[d] - 1) / s->chunk[d];
    return s->n ? n : 0;
}

void ckpt_chunk_at(const ckpt_shape *s, hsize_t k, ckpt_chunk *c) {
    int p = ckpt_cut_dim(s);
    hsize_t inner = 1, full = 1;
    for (int d = p + 1; d < s->ndim; d++) inner *= s->dims[d];
    for (int d = 0; d < s->ndim; d++) full *= s->chunk[d];
    hsize_t cp = s->chunk[p], per_row = (s->dims[p] + cp - 1) / cp, row = k / per_row, b = k % per_row;
    hsize_t rows = s->dims[p] - b * cp < cp ? s->dims[p] - b * cp : cp;
    memset(c, 0, sizeof *c);
    c->start = row * s->dims[p] * inner + b * cp * inner;
    c->n = rows * inner;
    c->full = full;
    c->coord[p] = b * cp;
    for (int d = p - 1; d >= 0; d--) {   // the leading dimensions' indices: row unravelled
        c->coord[d] = row % s->dims[d];
        row /= s->dims[d];
    }
}

int ckpt_geom_init(ckpt_geom *g, const sm_table *params, const sm_table *m, const sm_table *v, hsize_t chunk_floats) {
    static const char *const groups[3] = {"/model", "/optim/m", "/optim/v"};
    memset(g, 0, sizeof *g);
    g->count = params->count;
    for (int k = 0; k < 3; k++) {
        const sm_table *tab = k == 0 ? params : k == 1 ? m : v;
        for (int i = 0; i < params->count; i++) {
            ckpt_dset *d = &g->d[g->n_dsets++];
            d->group = groups[k];
            d->kind = k;
            d->t = tab ? &tab->t[i] : &params->t[i];
            hsize_t dims[SM_MAX_DIMS];
            for (int q = 0; q < d->t->ndim; q++) dims[q] = (hsize_t)d->t->shape[q];
            ckpt_shape_init(&d->s, d->t->ndim, dims, chunk_floats);
            d->first = g->n_chunks;
            d->n_chunks = ckpt_n_chunks(&d->s);
            g->n_chunks += d->n_chunks;
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------
// The layout driver: POSIX I/O on one file, HDF5's sec2 driver reduced to what a writer needs, except
// that a raw-data write whose buffer is the placeholder is not performed (the file keeps a hole there,
// which the ranks fill). Every other write — superblock, object headers, chunk index, global heap of the
// string attributes, the rng table — is performed.
typedef struct {
    const void *placeholder;
} layout_info;

typedef struct {
    H5FD_t pub;   // HDF5's part, first
    int fd;
    haddr_t eoa, eof;
    const void *placeholder;
    unsigned long n_elided;   // placeholder writes not performed (a check that HDF5 passed it through)
} layout_file;

// HDF5's error stack gets the system's reason, so that ckpt_fail_h5() reports it ("No space left...").
#define LAYOUT_FAIL(what)                                                                                  \
    H5Epush2(H5E_DEFAULT, __FILE__, __func__, __LINE__, H5E_ERR_CLS, H5E_VFL, H5E_WRITEERROR, "%s: %s", what, \
             strerror(errno))

static H5FD_t *layout_open(const char *name, unsigned flags, hid_t fapl, haddr_t maxaddr) {
    (void)maxaddr;
    const layout_info *info = H5Pget_driver_info(fapl);
    int o = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
    if (flags & H5F_ACC_TRUNC) o |= O_TRUNC;
    if (flags & H5F_ACC_CREAT) o |= O_CREAT;
    if (flags & H5F_ACC_EXCL) o |= O_EXCL;
    int fd = open(name, o | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        LAYOUT_FAIL("cannot open the checkpoint file");
        if (fd >= 0) close(fd);
        return NULL;
    }
    layout_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return NULL;
    }
    f->fd = fd;
    f->eof = (haddr_t)st.st_size;
    f->placeholder = info ? info->placeholder : NULL;
    return &f->pub;
}

static herr_t layout_close(H5FD_t *file) {
    layout_file *f = (layout_file *)file;
    int rc = close(f->fd);
    free(f);
    if (rc != 0) LAYOUT_FAIL("cannot close the checkpoint file");
    return rc == 0 ? 0 : -1;
}

static herr_t layout_query(const H5FD_t *file, unsigned long *flags) {
    (void)file;
    // sec2's behaviour, without its posix-handle promise
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA;
    return 0;
}

static haddr_t layout_get_eoa(const H5FD_t *file, H5FD_mem_t type) {
    (void)type;
    return ((const layout_file *)file)->eoa;
}

static herr_t layout_set_eoa(H5FD_t *file, H5FD_mem_t type, haddr_t addr) {
    (void)type;
    ((layout_file *)file)->eoa = addr;
    return 0;
}

static haddr_t layout_get_eof(const H5FD_t *file, H5FD_mem_t type) {
    (void)type;
    return ((const layout_file *)file)->eof;
}

static herr_t layout_read(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, void *buf) {
    (void)type, (void)dxpl;
    layout_file *f = (layout_file *)file;
    char *p = buf;
    while (size > 0) {   // past the end of the file: zeros, as sec2 reads them
        ssize_t r = pread(f->fd, p, size, (off_t)addr);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            LAYOUT_FAIL("cannot read the checkpoint file");
            return -1;
        }
        if (r == 0) {
            memset(p, 0, size);
            break;
        }
        p += r, addr += (haddr_t)r, size -= (size_t)r;
    }
    return 0;
}

static herr_t layout_write(H5FD_t *file, H5FD_mem_t type, hid_t dxpl, haddr_t addr, size_t size, const void *buf) {
    (void)dxpl;
    layout_file *f = (layout_file *)file;
    if (type == H5FD_MEM_DRAW && buf == f->placeholder) {   // a chunk's place: the ranks write it
        f->n_elided++;
        return 0;
    }
    const char *p = buf;
    haddr_t end = addr + size;
    while (size > 0) {
        ssize_t w = pwrite(f->fd, p, size, (off_t)addr);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            LAYOUT_FAIL("cannot write the checkpoint file");
            return -1;
        }
        p += w, addr += (haddr_t)w, size -= (size_t)w;
    }
    if (end > f->eof) f->eof = end;
    return 0;
}

// At close (and flush) HDF5 makes the file as long as its address space: the holes left for the chunks
// at its end are in the file.
static herr_t layout_truncate(H5FD_t *file, hid_t dxpl, hbool_t closing) {
    (void)dxpl, (void)closing;
    layout_file *f = (layout_file *)file;
    if (f->eoa == f->eof) return 0;
    if (ftruncate(f->fd, (off_t)f->eoa) != 0) {
        LAYOUT_FAIL("cannot set the checkpoint file's size");
        return -1;
    }
    f->eof = f->eoa;
    return 0;
}

static const H5FD_class_t LAYOUT_DRIVER = {
    .name = "smallmind-layout",
    .maxaddr = (haddr_t)INT64_MAX,
    .fc_degree = H5F_CLOSE_WEAK,
    .fapl_size = sizeof(layout_info),
    .open = layout_open,
    .close = layout_close,
    .query = layout_query,
    .get_eoa = layout_get_eoa,
    .set_eoa = layout_set_eoa,
    .get_eof = layout_get_eof,
    .read = layout_read,
    .write = layout_write,
    .truncate = layout_truncate,
    .fl_map = H5FD_FLMAP_DICHOTOMY,
};

static hid_t layout_driver(void) {
    static hid_t id = H5I_INVALID_HID;   // registered once (rank 0's main thread lays files out)
    if (id < 0 || H5Iis_valid(id) <= 0) id = H5FDregister(&LAYOUT_DRIVER);
    return id;
}

// ---------------------------------------------------------------------------
// Rank 0's pass
static int create_dataset(ckpt_ctx *cx, hid_t group, const ckpt_dset *d, const void *placeholder, ckpt_chunk_loc *locs) {
    hid_t ids[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // space dcpl dset
    const char *name = d->t->name;
    int rc = -1;
    CK_H5(ids[0] = H5Screate_simple(d->s.ndim, d->s.dims, NULL), "cannot create %s/%s", d->group, name);
    CK_H5(ids[1] = H5Pcreate(H5P_DATASET_CREATE), "cannot create %s/%s", d->group, name);
    CK_H5(H5Pset_chunk(ids[1], d->s.ndim, d->s.chunk), "cannot chunk %s/%s", d->group, name);
    CK_H5(H5Pset_fletcher32(ids[1]), "cannot add a checksum to %s/%s", d->group, name);
    CK_H5(H5Pset_fill_time(ids[1], H5D_FILL_TIME_NEVER), "cannot create %s/%s", d->group, name);   // all written
    CK_H5(ids[2] = H5Dcreate2(group, name, H5T_IEEE_F32LE, ids[0], H5P_DEFAULT, ids[1], H5P_DEFAULT),
          "cannot create %s/%s", d->group, name);
    for (hsize_t k = 0; k < d->n_chunks; k++) {
        ckpt_chunk c;
        ckpt_chunk_at(&d->s, k, &c);
        size_t bytes = (size_t)c.full * sizeof(float) + 4;   // stored whole, then Fletcher32's 4 bytes
        CK_H5(H5Dwrite_chunk(ids[2], H5P_DEFAULT, 0, c.coord, bytes, placeholder), "cannot allocate %s/%s",
              d->group, name);
    }
    for (hsize_t k = 0; k < d->n_chunks; k++) {
        ckpt_chunk c;
        ckpt_chunk_at(&d->s, k, &c);
        unsigned mask = 0;
        haddr_t addr = HADDR_UNDEF;
        hsize_t size = 0;
        CK_H5(H5Dget_chunk_info_by_coord(ids[2], c.coord, &mask, &addr, &size), "cannot place %s/%s", d->group, name);
        CK(addr != HADDR_UNDEF && size == (hsize_t)c.full * sizeof(float) + 4 && mask == 0,
           "HDF5 placed chunk %llu of %s/%s unexpectedly", (unsigned long long)k, d->group, name);
        locs[d->first + k] = (ckpt_chunk_loc){.addr = addr, .size = size};
    }
    rc = 0;
error:
    ckpt_close_all(ids, 3);
    return rc;
}

int ckpt_layout_write(ckpt_ctx *cx, const char *path, const ckpt_meta *meta, const uint64_t *rng_rows, int world,
                      const ckpt_geom *g, ckpt_chunk_loc *locs, uint64_t *file_bytes) {
    hid_t fapl = H5I_INVALID_HID, fcpl = H5I_INVALID_HID, gcpl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    hid_t groups[5] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};
    hid_t rng[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // space dcpl dset
    size_t most = 4;
    for (int i = 0; i < g->n_dsets; i++)
        if ((size_t)g->d[i].s.chunk[0] > 0) {
            hsize_t full = 1;
            for (int q = 0; q < g->d[i].s.ndim; q++) full *= g->d[i].s.chunk[q];
            if (full * sizeof(float) + 4 > most) most = (size_t)full * sizeof(float) + 4;
        }
    void *placeholder = sm_calloc(most, 1);   // never written: the driver elides it (zeros if it did not)
    layout_info info = {.placeholder = placeholder};
    int rc = -1;
    CK_H5(fapl = H5Pcreate(H5P_FILE_ACCESS), "cannot create the checkpoint");
    CK_H5(H5Pset_driver(fapl, layout_driver(), &info), "cannot create the checkpoint");
    // Superblock v2 and v2 object headers: all metadata checksummed; readable by HDF5 >= 1.8
    CK_H5(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110), "cannot create the checkpoint");
    // chunks of a page or more start on a page: no page holds two ranks' chunks, and the kernel's copies
    // between the page cache and a (congruent) buffer run at full speed (chunkio.c)
    CK_H5(H5Pset_alignment(fapl, CKPT_ALIGN, CKPT_ALIGN), "cannot create the checkpoint");
    CK_H5(fcpl = H5Pcreate(H5P_FILE_CREATE), "cannot create the checkpoint");
    CK_H5(H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create the checkpoint");
    CK_H5(H5Pset_attr_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create the checkpoint");
    CK_H5(file = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl), "cannot create the checkpoint file");
    CK_H5(gcpl = H5Pcreate(H5P_GROUP_CREATE), "cannot create groups");
    // h5py and inspect list tensors in the model's order
    CK_H5(H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED), "cannot create groups");
    const char *gnames[5] = {"/model", "/optim", "/optim/m", "/optim/v", "/state"};
    for (int i = 0; i < 5; i++)
        CK_H5(groups[i] = H5Gcreate2(file, gnames[i], H5P_DEFAULT, gcpl, H5P_DEFAULT), "cannot create group %s",
              gnames[i]);
    if (ckpt_attrs_write(cx, file, meta) != 0) goto error;
    for (int i = 0; i < g->n_dsets; i++)
        if (create_dataset(cx, groups[g->d[i].kind == 0 ? 0 : g->d[i].kind + 1], &g->d[i], placeholder, locs) != 0)
            goto error;
    // /state/rng: uint64 [world, 4], row r rank r's (gathered: 32 bytes a rank)
    hsize_t dims[2] = {(hsize_t)world, 4};
    CK_H5(rng[0] = H5Screate_simple(2, dims, NULL), "cannot write /state/rng");
    CK_H5(rng[1] = H5Pcreate(H5P_DATASET_CREATE), "cannot write /state/rng");
    CK_H5(H5Pset_chunk(rng[1], 2, dims), "cannot write /state/rng");
    CK_H5(H5Pset_fletcher32(rng[1]), "cannot write /state/rng");
    CK_H5(rng[2] = H5Dcreate2(groups[4], "rng", H5T_STD_U64LE, rng[0], H5P_DEFAULT, rng[1], H5P_DEFAULT),
          "cannot create /state/rng");
    CK_H5(H5Dwrite(rng[2], H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rng_rows), "cannot write /state/rng");
    ckpt_close_all(rng, 3);
    ckpt_close_all(groups, 5);
    herr_t closed = H5Fclose(file);
    file = H5I_INVALID_HID;
    CK_H5(closed, "cannot write the checkpoint's layout");
    struct stat st;
    CK_SYS(stat(path, &st) == 0, "cannot stat the new checkpoint");
    *file_bytes = (uint64_t)st.st_size;
    rc = 0;
error:
    ckpt_close_all(rng, 3);
    ckpt_close_all(groups, 5);
    hid_t rest[4] = {file, gcpl, fcpl, fapl};
    ckpt_close_all(rest, 4);
    sm_free(placeholder);
    return rc;
}

// ---------------------------------------------------------------------------
// A load's chunk table, read by rank 0 (after the forked check passed the same calls)
int ckpt_layout_read(ckpt_ctx *cx, const char *path, ckpt_geom *g, ckpt_chunk_loc **locs_out, uint64_t file_bytes,
                     uint64_t *rng_rows, int rng_world, int *contiguous) {
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    hid_t ids[3] = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID};   // dset space dcpl
    hid_t dsets[3 * SM_MAX_TENSORS];
    for (int i = 0; i < 3 * SM_MAX_TENSORS; i++) dsets[i] = H5I_INVALID_HID;
    ckpt_chunk_loc *locs = NULL;
    int rc = -1;
    *contiguous = 1;
    *locs_out = NULL;
    CK_H5(fapl = H5Pcreate(H5P_FILE_ACCESS), "cannot open the checkpoint");
    CK_H5(H5Pset_file_locking(fapl, 0, 1), "cannot open the checkpoint");
    CK_H5(file = H5Fopen(path, H5F_ACC_RDONLY, fapl), "cannot open the checkpoint");
    // 1. the chunk shapes, and the chunks' numbering
    g->n_chunks = 0;
    for (int i = 0; i < g->n_dsets; i++) {
        ckpt_dset *d = &g->d[i];
        char name[128];
        snprintf(name, sizeof name, "%s/%s", d->group, d->t->name);
        CK_H5(dsets[i] = H5Dopen2(file, name, H5P_DEFAULT), "cannot open %s", name);
        CK_H5(ids[2] = H5Dget_create_plist(dsets[i]), "cannot read %s", name);
        hsize_t chunk[H5S_MAX_RANK];
        CK(H5Pget_layout(ids[2]) == H5D_CHUNKED && H5Pget_chunk(ids[2], d->s.ndim, chunk) == d->s.ndim,
           "checkpoint is corrupt: %s is not chunked as verified", name);
        H5Pclose(ids[2]);
        ids[2] = H5I_INVALID_HID;
        for (int q = 0; q < d->s.ndim; q++) d->s.chunk[q] = chunk[q] ? chunk[q] : 1;
        d->first = g->n_chunks;
        d->n_chunks = ckpt_n_chunks(&d->s);
        g->n_chunks += d->n_chunks;
        if (!ckpt_shape_contiguous(&d->s)) *contiguous = 0;   // another writer's chunking: HDF5 reads it
    }
    // a table larger than the file (chunks of a few bytes): HDF5 reads it too
    if (g->n_chunks > file_bytes / sizeof(ckpt_chunk_loc)) *contiguous = 0;
    // 2. every chunk's place: stored whole (data, padding, checksum) within the file
    if (*contiguous) {
        locs = sm_malloc(sizeof *locs * (size_t)(g->n_chunks ? g->n_chunks : 1));
        for (int i = 0; i < g->n_dsets; i++) {
            const ckpt_dset *d = &g->d[i];
            for (hsize_t k = 0; k < d->n_chunks; k++) {
                ckpt_chunk c;
                ckpt_chunk_at(&d->s, k, &c);
                unsigned mask = 0;
                haddr_t addr = HADDR_UNDEF;
                hsize_t size = 0;
                CK_H5(H5Dget_chunk_info_by_coord(dsets[i], c.coord, &mask, &addr, &size),
                      "checkpoint is corrupt: cannot look up chunk %llu of %s/%s", (unsigned long long)k, d->group,
                      d->t->name);
                CK(addr != HADDR_UNDEF && mask == 0 && size == (hsize_t)c.full * sizeof(float) + 4 &&
                       addr <= file_bytes && size <= file_bytes - addr,
                   "checkpoint is corrupt: chunk %llu of %s/%s is not stored whole within the file",
                   (unsigned long long)k, d->group, d->t->name);
                locs[d->first + k] = (ckpt_chunk_loc){.addr = addr, .size = size};
            }
        }
    }
    // 3. /state/rng: every rank's row (read through HDF5's filter: verified)
    CK_H5(ids[0] = H5Dopen2(file, "/state/rng", H5P_DEFAULT), "cannot open /state/rng");
    CK_H5(ids[1] = H5Dget_space(ids[0]), "cannot read /state/rng");
    hsize_t dims[2] = {0, 0};
    CK(H5Sget_simple_extent_ndims(ids[1]) == 2 && H5Sget_simple_extent_dims(ids[1], dims, NULL) == 2 && dims[1] == 4 &&
           dims[0] == (hsize_t)rng_world,
       "/state/rng is not a [world_size, 4] table");
    CK_H5(H5Dread(ids[0], H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rng_rows),
          "checkpoint is corrupt: cannot read /state/rng");
    rc = 0;
error:
    ckpt_close_all(ids, 3);
    ckpt_close_all(dsets, 3 * SM_MAX_TENSORS);
    if (file >= 0) H5Fclose(file);
    if (fapl >= 0) H5Pclose(fapl);
    if (rc == 0) *locs_out = locs;
    else sm_free(locs);
    return rc;
}
