// fpenv.c — defines kernels_flush_denormals: flush-to-zero and denormals-are-zero for the
// calling thread and every thread of the OpenMP pool.
#include "kernels_internal.h"

#ifdef KERNELS_X86
#include <xmmintrin.h>
#endif

// MXCSR bits: FTZ (bit 15) writes 0 for a result below FLT_MIN; DAZ (bit 6) reads a denormal
// operand as 0. Both are per thread; a thread created later copies its creator's register, so
// setting the calling thread first and then each pool thread covers the teams to come.
#define MXCSR_FTZ_DAZ 0x8040u

static int set_this_thread(int on) {
#ifdef KERNELS_X86
    unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | MXCSR_FTZ_DAZ) : (csr & ~MXCSR_FTZ_DAZ));
    return 1;
#else
    (void)on;
    return 0;
#endif
}

int kernels_flush_denormals(int on) {
    int ok = set_this_thread(on);
#pragma omp parallel
    set_this_thread(on);
    return ok;
}

int kernels_denormals_flushed(void) {
#ifdef KERNELS_X86
    return (_mm_getcsr() & MXCSR_FTZ_DAZ) == MXCSR_FTZ_DAZ;
#else
    return 0;
#endif
}
