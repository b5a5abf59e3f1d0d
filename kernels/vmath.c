// vmath.c — defines sm_expf (the body is sm_expf_inline in kernels_internal.h) and sm_tanhf: float
// exp and tanh that GCC vectorises (omp declare simd).
#include "kernels_internal.h"


#pragma omp declare simd notinbranch
float sm_expf(float x) { return sm_expf_inline(x); }

// Cephes tanhf: an odd polynomial for |x| < 0.625, else 1 - 2/(e^{2|x|} + 1) with the sign of
// x restored (e^{2|x|} = inf gives exactly 1). Error <= ~2 ulp.
#pragma omp declare simd notinbranch
float sm_tanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                    1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (sm_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
}
