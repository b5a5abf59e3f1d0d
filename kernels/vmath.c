// vmath.c — defines sm_expf and sm_tanhf: float exp and tanh that GCC vectorises (omp declare simd).
#include "kernels.h"

#include <stdint.h>
#include <string.h>

// 2^n for integer n in [-126, 127], from the exponent bits
static inline float pow2i(int32_t n) {
    int32_t bits = (n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// Cephes expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split so n*LN2_HI is exact), a degree-7
// polynomial for e^r, then the scale 2^n applied as 2^(n/2) 2^(n - n/2) so that both factors
// stay normal over the whole clamped range (gradual underflow and overflow to inf come out
// of the final products). Relative error <= ~2 ulp.
#pragma omp declare simd notinbranch
float sm_expf(float x) {
    const float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const float ROUND = 12582912.0f;   // 1.5 * 2^23: adding and subtracting it rounds to an integer
    float xc = x > -104.0f ? x : -104.0f;   // NaN compares false: clamped here (no UB in the
    xc = xc < 88.8f ? xc : 88.8f;            // conversion to int below), restored at the end
    float kf = (xc * LOG2E + ROUND) - ROUND;
    float r = xc - kf * LN2_HI;
    r = r - kf * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t n = (int32_t)kf, n1 = n / 2;
    float y = p * pow2i(n1) * pow2i(n - n1);
    return x != x ? x : y;
}

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
