// encoder.c — defines encoder_forward and encoder_backward (token + position embedding).
#include "kernels.h"

#include <assert.h>
#include <omp.h>

void encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B, int T, int C) {
    // inp is (B,T) token ids, wte is (Vp,C), wpe is (maxT,C); out is (B,T,C)
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int ix = inp[bt], t = bt % T;
        assert(ix >= 0 && "encoder_forward: negative token id (corrupt batch?)");
        float *o = out + (size_t)bt * C;
        const float *we = wte + (size_t)ix * C, *pe = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T, int C) {
    // dout is (B,T,C), inp is (B,T); dwte (Vp,C) +=, dwpe (maxT,C) +=
    // Each thread owns a slice of channels for all tokens and adds tokens in (b,t) order, so
    // every element's sum has a fixed order whatever the thread count (no atomics needed
    // when two tokens in the batch are the same).
    enum { ALIGN = 16 };   // slices are whole 64-byte lines
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int n_units = (C + ALIGN - 1) / ALIGN;
        int c0 = (int)((long)n_units * id / nt) * ALIGN, c1 = (int)((long)n_units * (id + 1) / nt) * ALIGN;
        if (c1 > C) c1 = C;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                int ix = inp[b * T + t];
                const float *d = dout + ((size_t)b * T + t) * C;
                float *we = dwte + (size_t)ix * C, *pe = dwpe + (size_t)t * C;
                for (int c = c0; c < c1; c++) {
                    we[c] += d[c];
                    pe[c] += d[c];
                }
            }
    }
}
