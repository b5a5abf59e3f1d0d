// scaling.c — defines the communication model for N nodes (scaling_*): allreduce cost
// formulas (ring, tree), the latency-bandwidth fit t(n) = alpha + n*beta, and the prediction of a
// data-parallel step's time, exposed communication and scaling efficiency from a measured backward
// timeline. Pure arithmetic: no MPI, no timing; `bench comm` feeds it measurements.
#include <math.h>
#include <string.h>

#include "trainer.h"

// Networks to project onto, with where the figures come from. beta is the link's time per byte
// of payload (1 / data rate); alpha the MPI-level latency of one message.
const scaling_net SCALING_PRESETS[SCALING_N_PRESETS] = {
    {"25gbe", 15e-6, 1.0 / 2.94e9, 0.0,
     "25 GbE, kernel TCP (Open MPI btl tcp): data rate 25 Gb/s (IEEE 802.3by, 25.78125 GBd with 64b/66b) "
     "x 94% TCP/IP payload at MTU 1500 = 2.94 GB/s; alpha 15 us, a typical MPI half round trip over a "
     "kernel TCP stack (10-25 us): an assumption, measure yours with `bench comm` across two nodes"},
    {"ib-edr", 1.0e-6, 1.0 / 12.5e9, 0.0,
     "100 Gb/s InfiniBand EDR (RDMA, pml ucx): 4 lanes x 25.78125 Gb/s with 64b/66b = 100 Gb/s = 12.5 GB/s "
     "(ConnectX-5 user manual); alpha 1 us: the adapter's sub-600 ns (ConnectX-5 product brief) plus the "
     "MPI software path"},
    {"ib-hdr", 1.0e-6, 1.0 / 25.0e9, 0.0,
     "200 Gb/s InfiniBand HDR: 4 lanes x 53.125 Gb/s PAM4 with 64b/66b = 200 Gb/s = 25 GB/s; alpha 1 us "
     "as EDR"},
};

const char *scaling_algo_name(scaling_algo a) { return a == SCALING_RING ? "ring" : "tree"; }

static int ceil_log2(int n) {
    int k = 0;
    while ((1 << k) < n) k++;
    return k;
}

double scaling_allreduce_s(scaling_algo algo, int N, double n_bytes, const scaling_net *net) {
    if (N <= 1) return 0.0;
    if (algo == SCALING_RING) {
        // reduce-scatter then allgather around the ring, each in N-1 steps of n/N bytes; the
        // reduce-scatter adds n/N bytes per step (Patarasuk & Yuan 2009; Thakur, Rabenseifner &
        // Gropp 2005, section 4.4)
        double f = (double)(N - 1) / N;
        return 2.0 * (N - 1) * net->alpha_s + 2.0 * f * n_bytes * net->beta_s + f * n_bytes * net->gamma_s;
    }
    // recursive doubling: ceil(log2 N) exchanges of the whole vector, each followed by a sum
    // (Thakur, Rabenseifner & Gropp 2005; a binomial reduce + broadcast costs twice the alpha and
    // beta terms, so this is the tree's best case)
    int k = ceil_log2(N);
    return k * (net->alpha_s + n_bytes * net->beta_s + n_bytes * net->gamma_s);
}

int scaling_fit(const double *n_bytes, const double *t_s, int k, double *alpha_s, double *beta_s) {
    // minimise sum_i ((alpha + beta n_i - t_i) / t_i)^2: relative residuals, so that the 4 KiB
    // points (microseconds) weigh as much as the 32 MiB ones (milliseconds). Normal equations of
    // the weighted least squares with w_i = 1 / t_i^2.
    double sw = 0, swx = 0, swxx = 0, swy = 0, swxy = 0;
    for (int i = 0; i < k; i++) {
        if (!(t_s[i] > 0) || !(n_bytes[i] >= 0)) return -1;
        double w = 1.0 / (t_s[i] * t_s[i]);
        sw += w;
        swx += w * n_bytes[i];
        swxx += w * n_bytes[i] * n_bytes[i];
        swy += w * t_s[i];
        swxy += w * n_bytes[i] * t_s[i];
    }
    double det = sw * swxx - swx * swx;
    if (k < 2 || !(fabs(det) > 1e-12 * sw * swxx)) return -1;   // fewer than two distinct sizes
    *beta_s = (sw * swxy - swx * swy) / det;
    *alpha_s = (swy - *beta_s * swx) / sw;
    return 0;
}

scaling_net scaling_net_from_fit(const char *name, int N, double alpha_fit_s, double beta_fit_s, double gamma_s) {
    // the fit at N ranks read as the ring: t = 2(N-1) alpha + n (2(N-1)/N beta + (N-1)/N gamma)
    double f = N > 1 ? (double)(N - 1) / N : 1.0;
    scaling_net net = {name, alpha_fit_s / (2.0 * (N > 1 ? N - 1 : 1)), (beta_fit_s - f * gamma_s) / (2.0 * f), gamma_s,
                       "this run's fit of MPI_Iallreduce, read as the ring at its rank count"};
    if (net.alpha_s < 0) net.alpha_s = 0;
    double floor_beta = 0.1 * beta_fit_s / (2.0 * f);   // noise can put the sum's share above the fit's
    if (net.beta_s < floor_beta) net.beta_s = floor_beta;
    return net;
}

int scaling_rounds(scaling_algo algo, int N) {
    if (N <= 1) return 0;
    return algo == SCALING_RING ? 2 * (N - 1) : ceil_log2(N);
}

// The link: one round at a time. A round that may start at `from` takes it when it is free.
typedef struct {
    double free, before, bwd;   // when it is free; its busy time before bwd
} link_state;

static double link_take(link_state *l, double from, double dur) {
    double s = from > l->free ? from : l->free, e = s + dur;
    l->free = e;
    if (s < l->bwd) l->before += (e < l->bwd ? e : l->bwd) - s;
    return e;
}

scaling_prediction scaling_predict(const scaling_step *p, const double *bucket_s, int rounds, double scalars_s) {
    const int n = p->n_buckets;
    if (rounds < 1) rounds = 1;
    double *avail = sm_calloc((size_t)n + 1, sizeof(double)), *end = sm_calloc((size_t)n + 1, sizeof(double));
    int *left = sm_calloc((size_t)n + 1, sizeof(int));
    link_state link = {.free = 0.0, .before = 0.0, .bwd = p->bwd_s};
    double comm = 0.0, bytes = 0.0;
    for (int i = 0; i < n; i++) {
        avail[i] = end[i] = p->ready_s[i];
        left[i] = rounds;
        comm += bucket_s[i];
        bytes += p->bucket_bytes[i];
    }
    // during backward: rounds posted at the calls only
    const double eps = 1e-12;
    for (int k = 0; k < p->n_calls && p->calls_s[k] < p->bwd_s; k++) {
        double at = p->calls_s[k];
        // with c calls a round, its data moves at the (c-1)th call after this one (or in the wait)
        int m = k + (p->calls_per_round > 1 ? p->calls_per_round - 1 : 0);
        double moves = m < p->n_calls && p->calls_s[m] < p->bwd_s ? p->calls_s[m] : p->bwd_s;
        for (int i = 0; i < n; i++)
            if (left[i] > 0 && p->ready_s[i] <= at + eps && avail[i] <= at + eps) {
                end[i] = avail[i] = link_take(&link, moves, bucket_s[i] / rounds);
                left[i]--;
            }
    }
    // the rest without pause: from each bucket's ready time when no calls are given, else after backward
    for (int i = 0; i < n; i++)
        while (left[i] > 0) {
            double from = avail[i];
            if (p->n_calls > 0 && from < p->bwd_s) from = p->bwd_s;
            end[i] = avail[i] = link_take(&link, from, bucket_s[i] / rounds);
            left[i]--;
        }
    // post work on the cores: the buckets ended after backward get it in the wait, as they arrive
    double cpu_free = p->bwd_s, tail_bytes = 0.0, last = p->bwd_s;
    for (int i = 0; i < n; i++) {
        if (end[i] > last) last = end[i];
        if (end[i] > p->bwd_s) {
            tail_bytes += p->bucket_bytes[i];
            cpu_free = (cpu_free > end[i] ? cpu_free : end[i]) + p->post_s * p->bucket_bytes[i];
        }
    }
    double link_wait = last - p->bwd_s;
    double wait_beside = (cpu_free > last ? cpu_free : last) - p->bwd_s, wait_after = link_wait + p->post_s * tail_bytes;
    scaling_prediction r = {.comm_s = comm};
    r.wait_s = (1.0 - p->cpu_share) * wait_beside + p->cpu_share * wait_after;
    // the link's time during backward, as far as it runs on the cores backward uses (a reduction done
    // by the rank's own thread inside MPI calls, a kernel TCP stack), and the post work of the buckets
    // ended during backward, lengthen backward
    r.stretch_s = p->cpu_share * link.before + p->post_s * (bytes - tail_bytes);
    r.alone_s = p->fwd_s + p->bwd_s + p->opt_s + p->post_s * bytes;
    r.step_s = p->fwd_s + p->bwd_s + p->opt_s + r.wait_s + r.stretch_s + scalars_s;
    r.efficiency = r.step_s > 0 ? r.alone_s / r.step_s : 1.0;
    sm_free(avail);
    sm_free(end);
    sm_free(left);
    return r;
}
