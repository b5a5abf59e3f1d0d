// gradsync.c — bucketed gradient allreduce / reduce-scatter, overlapped with backward.
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "common.h"

static int cmp_piece(const void *a, const void *b) {
    const comm_piece *x = a, *y = b;
    return x->flat < y->flat ? -1 : x->flat > y->flat;
}

void comm_gradsync_init(comm_gradsync *s, float *grads, size_t n_floats, const comm_segment *segs, int n_segs,
                        double bucket_mb, int zero) {
    memset(s, 0, sizeof *s);
    s->grads = grads;
    s->n_floats = n_floats;
    s->zero = zero;
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s->world));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &s->rank));
    s->slice_len = (n_floats + (size_t)s->world - 1) / (size_t)s->world;
    s->slice_lo = zero ? (size_t)s->rank * s->slice_len : 0;
    s->slice_hi = zero ? s->slice_lo + s->slice_len : n_floats;
    if (s->slice_lo > n_floats) s->slice_lo = n_floats;
    if (s->slice_hi > n_floats) s->slice_hi = n_floats;
    size_t total = 0;
    for (int i = 0; i < n_segs; i++) {
        SM_CHECK(segs[i].offset + segs[i].n <= n_floats, "gradient segment %d beyond the arena", i);
        SM_CHECK(i == 0 || segs[i].group >= segs[i - 1].group, "gradient segments not in ready order at %d", i);
        total += segs[i].n;
    }
    size_t bucket_floats = (size_t)(bucket_mb * 1024.0 * 1024.0 / sizeof(float));
    if (bucket_floats < 1024) bucket_floats = 1024;
    // upper bound on pieces: each segment is cut at most by every bucket end and slice edge
    int max_buckets = (int)(total / bucket_floats) + n_segs + 1;
    int max_pieces = n_segs + max_buckets + (zero ? (n_segs + max_buckets) * s->world : 0) + 1;
    s->pieces = sm_calloc((size_t)max_pieces, sizeof(comm_piece));
    s->buckets = sm_calloc((size_t)max_buckets, sizeof(comm_bucket));

    // Walk the stream in ready order, cutting buckets every bucket_floats. A large segment (a
    // weight matrix) gets buckets of its own, which are then one range of the arena, reduced in
    // place; the small ones (biases, LayerNorm) share buckets through the staging buffer.
    size_t large = bucket_floats / 16;
    int seg = 0;
    size_t seg_pos = 0, stage_pos = 0;
    while (seg < n_segs) {
        comm_bucket *b = &s->buckets[s->n_buckets++];
        b->first_piece = s->n_pieces;
        b->stage_lo = stage_pos;
        size_t left = bucket_floats;
        while (seg < n_segs && left > 0) {
            int seg_large = segs[seg].n >= large;
            if (seg_large && seg_pos == 0 && left < bucket_floats) break;   // starts a bucket
            size_t take = segs[seg].n - seg_pos;
            if (take > left) take = left;
            if (take > 0) {
                // split at ZeRO slice edges so every piece has one owner
                size_t flat = segs[seg].offset + seg_pos, end = flat + take;
                while (flat < end) {
                    size_t edge = zero ? (flat / s->slice_len + 1) * s->slice_len : end;
                    size_t piece_end = edge < end ? edge : end;
                    s->pieces[s->n_pieces++] = (comm_piece){.flat = flat, .n = piece_end - flat};
                    flat = piece_end;
                }
                b->ready_group = segs[seg].group;
            }
            seg_pos += take;
            left -= take;
            if (seg_pos == segs[seg].n) {
                seg++;
                seg_pos = 0;
                if (seg_large) break;   // and ends one
            }
        }
        b->n_pieces = s->n_pieces - b->first_piece;
        // pieces in increasing flat offset: with slices contiguous in rank order, each rank's
        // share of the bucket is then contiguous and in rank order
        qsort(s->pieces + b->first_piece, (size_t)b->n_pieces, sizeof(comm_piece), cmp_piece);
        b->n = 0;
        b->contiguous = 1;
        for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++) {
            s->pieces[p].stage = stage_pos + b->n;
            b->n += s->pieces[p].n;
            if (p > b->first_piece && s->pieces[p].flat != s->pieces[p - 1].flat + s->pieces[p - 1].n) b->contiguous = 0;
        }
        // A bucket that is one range of the arena (a slice of a large tensor such as wte, or
        // neighbouring tensors) is reduced where it lies: no copy in or out, no staging memory
        if (!b->contiguous) stage_pos += b->n;
        SM_CHECK(b->n <= (size_t)INT32_MAX, "bucket of %zu floats exceeds MPI's int count", b->n);
        if (zero) {
            b->recvcounts = sm_calloc((size_t)s->world, sizeof(int));
            b->own_lo = 0;
            for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++) {
                int owner = (int)(s->pieces[p].flat / s->slice_len);
                b->recvcounts[owner] += (int)s->pieces[p].n;
            }
            for (int r = 0; r < s->rank; r++) b->own_lo += (size_t)b->recvcounts[r];
            b->own_n = (size_t)b->recvcounts[s->rank];
        }
    }
    // a single rank reduces nothing: no staging memory
    s->stage = sm_arena((s->world > 1 && stage_pos ? stage_pos : 1) * sizeof(float));
    size_t recv_total = 0;   // each bucket lands in its own part: they can all be in flight
    for (int i = 0; i < s->n_buckets; i++) {
        s->buckets[i].recv_lo = recv_total;
        recv_total += s->buckets[i].own_n;
    }
    if (zero) s->recv = sm_arena((recv_total ? recv_total : 1) * sizeof(float));
    s->requests = sm_calloc((size_t)s->n_buckets, sizeof(MPI_Request));
    s->completed = sm_calloc((size_t)s->n_buckets + 1, sizeof(int));
    s->bucket_total = sm_calloc((size_t)s->n_buckets + 1, sizeof(double));
    if (zero) {
        s->gather_counts = sm_calloc((size_t)s->world, sizeof(int));
        s->gather_displs = sm_calloc((size_t)s->world, sizeof(int));
        for (int r = 0; r < s->world; r++) {
            size_t lo = (size_t)r * s->slice_len, hi = lo + s->slice_len;
            if (lo > n_floats) lo = n_floats;
            if (hi > n_floats) hi = n_floats;
            SM_CHECK(hi <= (size_t)INT32_MAX, "parameter arena of %zu floats exceeds MPI's int displacements", hi);
            s->gather_counts[r] = (int)(hi - lo);
            s->gather_displs[r] = (int)lo;
        }
    }
    comm_gradsync_begin(s);
}

void comm_gradsync_free(comm_gradsync *s) {
    for (int i = 0; i < s->n_buckets; i++) sm_free(s->buckets[i].recvcounts);
    sm_free(s->pieces);
    sm_free(s->buckets);
    sm_free(s->stage);
    sm_free(s->recv);
    sm_free(s->requests);
    sm_free(s->completed);
    sm_free(s->bucket_total);
    sm_free(s->gather_counts);
    sm_free(s->gather_displs);
    memset(s, 0, sizeof *s);
}

void comm_gradsync_begin(comm_gradsync *s) {
    MPI_Request *req = s->requests;
    for (int i = 0; i < s->n_buckets; i++) {
        s->buckets[i].started = s->buckets[i].done = 0;
        s->bucket_total[i] = 0.0;
        req[i] = MPI_REQUEST_NULL;
    }
    s->next_group = 0;
    s->in_flight = 0;
    s->t_first_start = 0.0;
}

static void finish_bucket(comm_gradsync *s, int i);
static void unpack_bucket(comm_gradsync *s, int i);

static void start_bucket(comm_gradsync *s, int i) {
    comm_bucket *b = &s->buckets[i];
    MPI_Request *req = s->requests;
    b->started = 1;
    if (s->t_first_start == 0.0) s->t_first_start = sm_now_s();
    if (s->world == 1) {   // a single rank: the gradients are already the sum
        req[i] = MPI_REQUEST_NULL;
        finish_bucket(s, i);
        return;
    }
    float *st = s->stage + b->stage_lo;   // the bucket's data, in piece order
    if (b->contiguous) st = s->grads + s->pieces[b->first_piece].flat;
    else
        for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++)
            memcpy(s->stage + s->pieces[p].stage, s->grads + s->pieces[p].flat, s->pieces[p].n * sizeof(float));
    s->in_flight++;
    if (s->zero) {
        MPI_CHECK(MPI_Ireduce_scatter(st, s->recv + b->recv_lo, b->recvcounts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req[i]));
    } else {
        MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, st, (int)b->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req[i]));
    }
}

void comm_gradsync_ready(comm_gradsync *s, int group) {
    SM_CHECK(group == s->next_group, "gradient group %d announced out of order (expected %d)", group, s->next_group);
    s->next_group = group + 1;
    for (int i = 0; i < s->n_buckets; i++) {
        comm_bucket *b = &s->buckets[i];
        if (!b->started && b->ready_group <= group) start_bucket(s, i);
    }
    comm_gradsync_progress(s);
}

void comm_gradsync_progress(comm_gradsync *s) {
    if (s->in_flight == 0) return;
    // Open MPI progresses non-blocking collectives only inside MPI calls; buckets that are
    // complete are finished now, while backward goes on
    int n_done = 0;
    MPI_CHECK(MPI_Testsome(s->n_buckets, s->requests, &n_done, s->completed, MPI_STATUSES_IGNORE));
    for (int k = 0; n_done != MPI_UNDEFINED && k < n_done; k++) finish_bucket(s, s->completed[k]);
}

// Is piece pc of bucket b one of this rank's (zero=1: in its slice)?
static int owned_piece(const comm_gradsync *s, const comm_bucket *b, const comm_piece *pc) {
    size_t at = pc->stage - b->stage_lo;
    return !s->zero || (at >= b->own_lo && at < b->own_lo + b->own_n);
}

// Bucket i's reduction is complete (or there is nothing to reduce): its values go where they
// belong, and the piece function runs over the pieces this rank owns.
static void finish_bucket(comm_gradsync *s, int i) {
    comm_bucket *b = &s->buckets[i];
    b->done = 1;
    if (s->world > 1) {
        s->in_flight--;
        unpack_bucket(s, i);
    }
    if (!s->piece_fn) return;
    double total = 0.0;
    for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++)
        if (owned_piece(s, b, &s->pieces[p])) total += s->piece_fn(s->grads + s->pieces[p].flat, s->pieces[p].n);
    s->bucket_total[i] = total;
}

static void unpack_bucket(comm_gradsync *s, int i) {
    comm_bucket *b = &s->buckets[i];
    if (s->zero) {
        // the received part holds this rank's pieces in stage order
        size_t k = b->recv_lo;
        for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++) {
            const comm_piece *pc = &s->pieces[p];
            if (!owned_piece(s, b, pc)) continue;
            memcpy(s->grads + pc->flat, s->recv + k, pc->n * sizeof(float));
            k += pc->n;
        }
    } else if (!b->contiguous) {   // a contiguous bucket was reduced in place
        for (int p = b->first_piece; p < b->first_piece + b->n_pieces; p++)
            memcpy(s->grads + s->pieces[p].flat, s->stage + s->pieces[p].stage, s->pieces[p].n * sizeof(float));
    }
}

void comm_gradsync_wait(comm_gradsync *s) {
    MPI_Request *req = s->requests;
    s->t_wait_start = sm_now_s();
    if (s->t_first_start == 0.0) s->t_first_start = s->t_wait_start;
    for (int i = 0; i < s->n_buckets; i++)
        if (!s->buckets[i].started) start_bucket(s, i);
    // finish each bucket as it completes, while the others are still in flight
    for (;;) {
        int n_done = 0;
        MPI_CHECK(MPI_Waitsome(s->n_buckets, req, &n_done, s->completed, MPI_STATUSES_IGNORE));
        if (n_done == MPI_UNDEFINED) break;   // no request left active
        for (int k = 0; k < n_done; k++) finish_bucket(s, s->completed[k]);
    }
    for (int i = 0; i < s->n_buckets; i++) SM_CHECK(s->buckets[i].done, "gradient bucket %d never completed", i);
    s->t_end = sm_now_s();
}

void comm_gradsync_set_piece_fn(comm_gradsync *s, double (*fn)(const float *x, size_t n)) { s->piece_fn = fn; }

double comm_gradsync_total(const comm_gradsync *s) {
    double total = 0.0;
    for (int i = 0; i < s->n_buckets; i++) total += s->bucket_total[i];
    return total;
}

comm_gradsync_stats comm_gradsync_figures(const comm_gradsync *s) {
    double wait_ms = (s->t_end - s->t_wait_start) * 1e3, span_ms = (s->t_end - s->t_first_start) * 1e3;
    return (comm_gradsync_stats){
        .n_buckets = s->n_buckets,
        .wait_ms = wait_ms, .span_ms = span_ms, .hidden_frac = span_ms > 0 ? 1.0 - wait_ms / span_ms : 1.0};
}

void comm_gradsync_slice(const comm_gradsync *s, size_t *lo, size_t *hi) {
    *lo = s->slice_lo;
    *hi = s->slice_hi;
}

void comm_allgather_slices_bf16(comm_gradsync *s, uint16_t *params_bf16) {
    if (!s->zero || s->world == 1) return;
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params_bf16, s->gather_counts, s->gather_displs,
                             MPI_UINT16_T, MPI_COMM_WORLD));
}

void comm_allgather_slices(comm_gradsync *s, float *params) {
    if (!s->zero || s->world == 1) return;
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, params, s->gather_counts, s->gather_displs, MPI_FLOAT,
                             MPI_COMM_WORLD));
}
